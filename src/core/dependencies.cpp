#include "core/dependencies.hpp"

#include <mutex>

#include "hetflow/error.hpp"

namespace hetflow::detail {

void add_dependency(TaskCore* task, TaskCore* predecessor) {
  if (predecessor == task) return;
  std::unique_lock guard(predecessor->lock);
  if (predecessor->released) {
    guard.unlock();
    if (predecessor->status() != TaskStatus::done) {
      std::exception_ptr error = dependency_error_for(predecessor);
      std::lock_guard task_guard(task->lock);
      if (!task->error) task->error = std::move(error);
    }
    return;
  }
  auto link = reinterpret_cast<std::uintptr_t>(task);
  if (predecessor->first_successor == 0) {
    predecessor->first_successor = link;
  } else {
    if (predecessor->more_successors == nullptr) predecessor->more_successors = new std::vector<std::uintptr_t>();
    predecessor->more_successors->push_back(link);
  }
  task->pending.fetch_add(1, std::memory_order_relaxed);
}

namespace {

constexpr std::size_t kReaderPruneThreshold = 64;

// Drops the readers that succeeded. Those that failed or were cancelled stay: the next writer
// depends on them and must fail too, however many readers came between.
void prune_finished_readers(HandleImpl& handle) {
  std::erase_if(handle.readers, [](TaskCore* reader) {
    if (reader->status() != TaskStatus::done) return false;
    release(reader);
    return true;
  });
}

}  // namespace

void track_access(TaskCore* task, HandleImpl& handle, AccessMode mode) {
  std::lock_guard guard(handle.dep_lock);
  if (!writes(mode)) {
    if (handle.last_writer != nullptr) add_dependency(task, handle.last_writer);
    if (handle.readers.size() >= kReaderPruneThreshold) prune_finished_readers(handle);
    retain(task);
    handle.readers.push_back(task);
    return;
  }
  if (!handle.readers.empty()) {
    // The readers themselves waited for the last writer.
    for (TaskCore* reader : handle.readers) {
      add_dependency(task, reader);
      release(reader);
    }
    handle.readers.clear();
  } else if (handle.last_writer != nullptr) {
    add_dependency(task, handle.last_writer);
  }
  retain(task);
  if (handle.last_writer != nullptr) release(handle.last_writer);
  handle.last_writer = task;
}

std::exception_ptr dependency_error_for(TaskCore* task) {
  if (task->status() == TaskStatus::cancelled) {
    return std::make_exception_ptr(DependencyError(
        task->display_name(),
        std::make_exception_ptr(CancelledError(std::string("task '") + task->display_name() + "' was cancelled"))));
  }
  try {
    std::rethrow_exception(task->error);
  } catch (const DependencyError&) {
    return task->error;  // already names the original failure
  } catch (...) {
    return std::make_exception_ptr(DependencyError(task->display_name(), task->error));
  }
}

}  // namespace hetflow::detail
