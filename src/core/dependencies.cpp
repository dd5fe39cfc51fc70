#include "core/dependencies.hpp"

#include <algorithm>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/task_state.hpp"
#include "hetflow/error.hpp"

namespace hetflow::detail {

void add_dependency(TaskCore* task, TaskCore* predecessor, EdgeKind kind) {
  if (predecessor == task) return;
  std::unique_lock guard(predecessor->lock);
  if (predecessor->released) {
    guard.unlock();
    if (kind == EdgeKind::data && predecessor->status() != TaskStatus::done) {
      std::exception_ptr error = dependency_error_for(predecessor);
      std::lock_guard task_guard(task->lock);
      if (!task->error) task->error = std::move(error);
    }
    return;
  }
  auto link = reinterpret_cast<std::uintptr_t>(task);
  if (kind == EdgeKind::ordering) link |= TaskCore::kOrderingLink;
  predecessor->successors.add(link);
  task->pending.fetch_add(1, std::memory_order_relaxed);
}

namespace {

// Whether a task for which `found` holds waits for `earlier`, directly or through others.
template <class Found>
bool reaches(TaskCore* earlier, Found found, std::size_t budget) {
  std::vector<TaskCore*> to_visit{earlier};
  std::unordered_set<TaskCore*> seen{earlier};
  std::vector<TaskCore*> successors;
  while (!to_visit.empty()) {
    TaskCore* task = to_visit.back();
    to_visit.pop_back();
    successors.clear();
    {
      std::lock_guard guard(task->lock);
      task->successors.for_each([&](std::uintptr_t link) {
        if (!(link & TaskCore::kCallbackLink))
          successors.push_back(reinterpret_cast<TaskCore*>(link & ~TaskCore::kLinkTags));
      });
    }
    for (TaskCore* successor : successors) {
      if (found(successor)) return true;
      if (!seen.insert(successor).second) continue;
      if (seen.size() > budget) return false;
      to_visit.push_back(successor);
    }
  }
  return false;
}

}  // namespace

bool waits_for(TaskCore* later, TaskCore* earlier, std::size_t budget) {
  return reaches(
      earlier, [later](const TaskCore* task) { return task == later; }, budget);
}

bool some_task_waits_for(TaskCore* earlier, std::size_t budget) {
  return reaches(
      earlier,
      [](TaskCore* task) {
        std::lock_guard guard(task->lock);  // its owner may be setting other flags (give_up_on_start)
        return !(task->flags & TaskCore::kManual);
      },
      budget);
}

namespace {

constexpr std::size_t kReaderPruneThreshold = 64;

// Drops the readers that have finished, whatever their outcome: a reader leaves the data as it
// found it, so the next writer has nothing to wait for or to inherit from them. The next pruning
// waits until the readers left have doubled, so that many readers still pending (behind a
// writer, say) cost a scan now and then, not one per new reader.
void prune_finished_readers(HandleImpl& handle) {
  std::erase_if(handle.readers, [](TaskCore* reader) {
    if (!is_final(reader->status())) return false;
    release(reader);
    return true;
  });
  handle.prune_readers_at = std::max(kReaderPruneThreshold, 2 * handle.readers.size());
}

}  // namespace

// Only reading an unsuccessful writer's output fails a task (a data edge). Every other conflict
// is an ordering edge: after a failed or cancelled reader the data is as it was, and a write-only
// access makes a new version whatever came before.
void track_access(TaskCore* task, HandleImpl& handle, AccessMode mode) {
  std::lock_guard guard(handle.dep_lock);
  ++handle.accesses;
  if (!writes(mode)) {
    if (handle.last_writer != nullptr) add_dependency(task, handle.last_writer, EdgeKind::data);
    if (handle.readers.size() >= handle.prune_readers_at) prune_finished_readers(handle);
    retain(task);
    handle.readers.push_back(task);
    return;
  }
  if (!handle.readers.empty()) {
    // The readers themselves waited for the last writer; a read-write access still takes the
    // last writer's outcome (the edge is free once that writer has finished well).
    for (TaskCore* reader : handle.readers) {
      add_dependency(task, reader, EdgeKind::ordering);
      release(reader);
    }
    handle.readers.clear();
    handle.prune_readers_at = kReaderPruneThreshold;
    if (reads(mode) && handle.last_writer != nullptr) add_dependency(task, handle.last_writer, EdgeKind::data);
  } else if (handle.last_writer != nullptr) {
    add_dependency(task, handle.last_writer, reads(mode) ? EdgeKind::data : EdgeKind::ordering);
  }
  retain(task);
  if (handle.last_writer != nullptr) release(handle.last_writer);
  handle.last_writer = task;
}

std::exception_ptr failure_read_by(TaskCore* token, TokenFailure on_token) {
  std::exception_ptr error;
  {
    std::lock_guard guard(token->lock);
    // Taken off, the token itself does not fail.
    error = on_token == TokenFailure::keep ? token->error : std::exchange(token->error, nullptr);
  }
  if (!error) return nullptr;
  try {
    std::rethrow_exception(error);
  } catch (const DependencyError& dependency) {
    if (dependency.root_cause()) return dependency.root_cause();
  } catch (...) {  // NOLINT(bugprone-empty-catch): not wrapped: the writer's own error
  }
  return error;
}

void forgive_failed_writer(HandleImpl& handle) {
  std::lock_guard guard(handle.dep_lock);
  TaskCore* writer = handle.last_writer;
  if (writer == nullptr) return;
  const TaskStatus outcome = writer->status();
  if (outcome != TaskStatus::failed && outcome != TaskStatus::cancelled) return;
  {
    // A writer cancelled while it still waits has not finished: it stays the one to read after.
    std::lock_guard writer_guard(writer->lock);
    if (!writer->released) return;
  }
  handle.last_writer = nullptr;
  release(writer);
}

namespace {

bool finished_and_told(TaskCore* task) {
  if (!is_final(task->status())) return false;
  std::lock_guard guard(task->lock);
  return task->released;
}

}  // namespace

std::optional<std::uint64_t> accesses_if_at_rest(HandleImpl& handle) {
  if (!handle.registered.load(std::memory_order_acquire) || handle.submitting.load(std::memory_order_acquire) != 0) {
    return std::nullopt;
  }
  std::lock_guard guard(handle.dep_lock);
  if (!handle.acquisitions.empty() || !std::ranges::all_of(handle.readers, finished_and_told)) return std::nullopt;
  if (handle.last_writer != nullptr &&
      (!finished_and_told(handle.last_writer) || handle.last_writer->status() != TaskStatus::done)) {
    return std::nullopt;
  }
  return handle.accesses;
}

std::exception_ptr dependency_error_for(TaskCore* task) {
  if (task->status() == TaskStatus::cancelled) {
    return std::make_exception_ptr(DependencyError(task->display_name(), cancelled_error(task)));
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
