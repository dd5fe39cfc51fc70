#include "core/scheduler_context.hpp"

#include "core/engine.hpp"
#include "data/coherence.hpp"

namespace hetflow::detail {
namespace {

TaskCore& core(const ext::SchedTask& task) { return const_cast<TaskCore&>(static_cast<const TaskCore&>(task)); }

}  // namespace

double EngineSchedulerContext::now() const noexcept { return runtime_.now(); }

bool EngineSchedulerContext::has_model(const ext::SchedTask& task) const { return runtime_.has_model(core(task)); }

std::optional<double> EngineSchedulerContext::expected_duration(const ext::SchedTask& task, Arch arch) const {
  return runtime_.expected_duration(core(task), arch);
}

double EngineSchedulerContext::expected_transfer(const ext::SchedTask& task, unsigned node) const {
  TaskCore& t = core(task);
  double seconds = 0;
  AccessRecord* accesses = t.accesses();
  for (std::size_t i = 0; i < t.access_count; ++i) {
    if (!reads(accesses[i].mode)) continue;
    HandleImpl& handle = *accesses[i].handle;
    seconds += runtime_.expected_copy(valid_source(handle, node), node, handle.layout.span_bytes());
  }
  return seconds;
}

void EngineSchedulerContext::prefetch(const ext::SchedTask& task, unsigned node) {
  TaskCore& t = core(task);
  AccessRecord* accesses = t.accesses();
  for (std::size_t i = 0; i < t.access_count; ++i) {
    if (reads(accesses[i].mode)) detail::prefetch(*accesses[i].handle, node);
  }
}

void EngineSchedulerContext::wake(Arch arch) { runtime_.wake_one(arch); }

bool EngineSchedulerContext::can_hold(const ext::SchedTask& task, unsigned node) const {
  return node >= runtime_.node_count() || runtime_.can_hold(&core(task), node);
}

}  // namespace hetflow::detail
