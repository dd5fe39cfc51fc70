// What task bodies call into: TaskContext (their buffers, worker, companions, argument), and
// running a codelet's implementation for the worker's architecture.
#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "core/engine.hpp"
#include "hetflow/runtime.hpp"

namespace hetflow::detail {

void run_codelet(TaskContext& context) {
  const Codelet& codelet = *context.codelet();
  const auto& implementation = codelet.implementation(context.arch());
  implementation(context);
}

}  // namespace hetflow::detail

namespace hetflow {

using detail::TaskCore;

std::size_t TaskContext::buffer_count() const noexcept { return task_->access_count; }

DataView TaskContext::buffer(std::size_t index) const {
  if (index >= task_->access_count) {
    throw InvalidArgument("TaskContext::buffer: index " + std::to_string(index) + " but task '" +
                          task_->display_name() + "' has " + std::to_string(task_->access_count) + " buffers");
  }
  detail::HandleImpl& handle = *task_->accesses()[index].handle;
  return {handle.replicas[worker_->info.memory_node].ptr, handle.layout};
}

unsigned TaskContext::worker_id() const noexcept { return worker_->info.id; }
Arch TaskContext::arch() const noexcept { return worker_->info.arch; }
unsigned TaskContext::memory_node() const noexcept { return worker_->info.memory_node; }
const char* TaskContext::task_name() const noexcept { return task_->display_name(); }
const Codelet* TaskContext::codelet() const noexcept { return task_->codelet; }

std::size_t TaskContext::take_companions(std::size_t max) {
  return task_->runtime->take_companions(*worker_, task_, max);
}

namespace {

detail::TaskCore* unfinished_companion(const detail::WorkerState& worker, std::size_t index, const char* where) {
  if (index >= worker.companions.size() || worker.companions[index] == nullptr) {
    throw InvalidArgument(std::string(where) + ": no unfinished companion " + std::to_string(index));
  }
  return worker.companions[index];
}

}  // namespace

void* TaskContext::companion_storage(std::size_t index) const {
  return unfinished_companion(*worker_, index, "TaskContext::companion_storage")->storage();
}

const char* TaskContext::companion_name(std::size_t index) const {
  return unfinished_companion(*worker_, index, "TaskContext::companion_name")->display_name();
}

void TaskContext::finish_companion(std::size_t index, std::exception_ptr error) {
  unfinished_companion(*worker_, index, "TaskContext::finish_companion");
  task_->runtime->finish_companion(*worker_, index, std::move(error));
}

void TaskContext::own_part_done() noexcept { task_->runtime->own_part_done(*worker_); }

void* TaskContext::driver_state() const noexcept {
  return worker_->driver != nullptr ? worker_->driver->worker_state(worker_->driver_index) : nullptr;
}

namespace {

// A type's name as written in C++ ("double", not the mangled "d").
std::string readable(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(abi::__cxa_demangle(type.name(), nullptr, nullptr, &status),
                                                   &std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(type.name());
}

}  // namespace

void* TaskContext::arg_storage(const std::type_info& type) const {
  const std::type_info* stored = task_->ops != nullptr ? task_->ops->arg_type : nullptr;
  if (stored == nullptr) {
    throw InvalidArgument(std::string("TaskContext::arg: task '") + task_->display_name() + "' carries no argument");
  }
  if (*stored != type) {
    throw InvalidArgument(std::string("TaskContext::arg: task '") + task_->display_name() + "' carries a " +
                          readable(*stored) + ", not a " + readable(type));
  }
  return task_->storage();
}

}  // namespace hetflow
