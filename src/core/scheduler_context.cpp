#include "core/scheduler_context.hpp"

#include "core/runtime_impl.hpp"
#include "data/coherence.hpp"
#include "data/memory_node.hpp"

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
    HandleImpl& handle = *accesses[i].handle;
    if (!reads(accesses[i].mode) || valid_on(handle, node)) continue;
    const std::size_t bytes = handle.layout.span_bytes();
    // Through the host when the latest version is on another device.
    if (node != kHostNode) seconds += runtime_.expected_copy(kHostNode, node, bytes);
    if (!valid_on(handle, kHostNode)) seconds += runtime_.expected_copy(node == kHostNode ? 1U : node, kHostNode, bytes);
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

}  // namespace hetflow::detail
