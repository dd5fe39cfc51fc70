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

void append_successors(TaskCore* task, std::vector<TaskCore*>& successors) {
  std::lock_guard guard(task->lock);
  task->successors.for_each([&](std::uintptr_t link) {
    if (!(link & TaskCore::kCallbackLink))
      successors.push_back(reinterpret_cast<TaskCore*>(link & ~TaskCore::kLinkTags));
  });
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
    append_successors(task, successors);
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

bool finished_and_told(TaskCore* task) {
  if (!is_final(task->status())) return false;
  std::lock_guard guard(task->lock);
  return task->released;
}

constexpr std::size_t kPruneThreshold = 64;

// What a finished task left for the accesses after it: a reader leaves the data as it found it,
// whatever its outcome; a part writer that failed leaves its failure to the next whole read.
enum class Outcomes : unsigned char { forgotten, failures_kept };

// Drops the finished tasks that later accesses need not wait for. The next pruning waits until
// those left have doubled, so that many still pending (behind a writer, say) cost a scan now and
// then, not one per new access.
void prune_finished(std::vector<TaskCore*>& tasks, std::size_t& prune_at, Outcomes outcomes) {
  std::erase_if(tasks, [outcomes](TaskCore* task) {
    if (!finished_and_told(task)) return false;
    if (outcomes == Outcomes::failures_kept && task->status() != TaskStatus::done) return false;
    release(task);
    return true;
  });
  prune_at = std::max(kPruneThreshold, 2 * tasks.size());
}

void remember(std::vector<TaskCore*>& tasks, std::size_t& prune_at, TaskCore* task,
              Outcomes outcomes = Outcomes::forgotten) {
  if (tasks.size() >= prune_at) prune_finished(tasks, prune_at, outcomes);
  retain(task);
  tasks.push_back(task);
}

// `task` comes after every task of `tasks`, which it replaces.
void wait_for_all(TaskCore* task, std::vector<TaskCore*>& tasks, std::size_t& prune_at, EdgeKind kind) {
  for (TaskCore* earlier : tasks) {
    add_dependency(task, earlier, kind);
    release(earlier);
  }
  tasks.clear();
  prune_at = kPruneThreshold;
}

// A part access waits for the last whole write and, if it writes, for the whole reads since
// (which stay: the next whole write waits for them too); it does not wait for other part accesses.
void track_part_access(TaskCore* task, HandleImpl& handle, AccessMode mode) {
  // A part write takes the last writer's outcome too: the data it leaves as they were are that
  // writer's, and the next whole read reads them through this one.
  if (handle.last_writer != nullptr) add_dependency(task, handle.last_writer, EdgeKind::data);
  if (!writes(mode)) {
    remember(handle.part_readers, handle.prune_part_readers_at, task);
    return;
  }
  if (handle.readers.size() >= handle.prune_readers_at) {
    prune_finished(handle.readers, handle.prune_readers_at, Outcomes::forgotten);
  }
  for (TaskCore* reader : handle.readers) add_dependency(task, reader, EdgeKind::ordering);
  remember(handle.part_writers, handle.prune_part_writers_at, task, Outcomes::failures_kept);
}

}  // namespace

// Only reading an unsuccessful writer's output fails a task (a data edge). Every other conflict
// is an ordering edge: after a failed or cancelled reader the data is as it was, and a write-only
// access makes a new version whatever came before.
void track_access(TaskCore* task, HandleImpl& handle, AccessMode mode) {
  std::lock_guard guard(handle.dep_lock);
  ++handle.accesses;
  if (partial(mode)) {
    track_part_access(task, handle, mode);
    return;
  }
  if (!writes(mode)) {
    if (handle.last_writer != nullptr) add_dependency(task, handle.last_writer, EdgeKind::data);
    if (handle.part_writers.size() >= handle.prune_part_writers_at) {
      prune_finished(handle.part_writers, handle.prune_part_writers_at, Outcomes::failures_kept);
    }
    for (TaskCore* part_writer : handle.part_writers) add_dependency(task, part_writer, EdgeKind::data);
    remember(handle.readers, handle.prune_readers_at, task);
    return;
  }
  // The others since the last writer waited for it themselves; a read-write access still takes
  // the last writer's outcome (the edge is free once that writer has finished well).
  const bool after_others = !handle.readers.empty() || !handle.part_readers.empty() || !handle.part_writers.empty();
  const EdgeKind on_writers = reads(mode) ? EdgeKind::data : EdgeKind::ordering;
  wait_for_all(task, handle.readers, handle.prune_readers_at, EdgeKind::ordering);
  wait_for_all(task, handle.part_readers, handle.prune_part_readers_at, EdgeKind::ordering);
  wait_for_all(task, handle.part_writers, handle.prune_part_writers_at, on_writers);
  if (handle.last_writer != nullptr && (reads(mode) || !after_others)) {
    add_dependency(task, handle.last_writer, on_writers);
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

namespace {

// A failed writer has run (its successors may still be being told); one cancelled while it still
// waits has not finished until it has told them: it stays the one to read after.
bool failed_for_good(TaskCore* writer) {
  const TaskStatus outcome = writer->status();
  return outcome == TaskStatus::failed || (outcome == TaskStatus::cancelled && finished_and_told(writer));
}

}  // namespace

void forgive_failed_writer(HandleImpl& handle) {
  std::lock_guard guard(handle.dep_lock);
  std::erase_if(handle.part_writers, [](TaskCore* part_writer) {
    if (!failed_for_good(part_writer) && !finished_and_told(part_writer)) return false;
    release(part_writer);
    return true;
  });
  TaskCore* writer = handle.last_writer;
  if (writer == nullptr || !failed_for_good(writer)) return;
  handle.last_writer = nullptr;
  release(writer);
}

std::optional<std::uint64_t> accesses_if_at_rest(HandleImpl& handle) {
  if (!handle.registered.load(std::memory_order_acquire) || handle.submitting.load(std::memory_order_acquire) != 0) {
    return std::nullopt;
  }
  std::lock_guard guard(handle.dep_lock);
  const auto done_and_told = [](TaskCore* task) {
    return finished_and_told(task) && task->status() == TaskStatus::done;
  };
  if (!handle.acquisitions.empty() || !std::ranges::all_of(handle.readers, finished_and_told) ||
      !std::ranges::all_of(handle.part_readers, finished_and_told) ||
      !std::ranges::all_of(handle.part_writers, done_and_told)) {
    return std::nullopt;
  }
  if (handle.last_writer != nullptr && !done_and_told(handle.last_writer)) return std::nullopt;
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
