#pragma once
// Dependencies between tasks: explicit ones, and those inferred from data accesses in
// submission order (read after write, write after read, write after write).
#include <cstdint>
#include <optional>
#include <vector>

#include "core/task.hpp"
#include "data/handle.hpp"

namespace hetflow::detail {

/// What an edge carries besides order. A data edge (reading what the predecessor wrote, an
/// explicit `after`) fails the successor when the predecessor fails or is cancelled; an
/// ordering edge (anything after a reader, a write-only access after a writer) only delays it.
enum class EdgeKind : unsigned char { data, ordering };

/// `task` (being submitted, its pending count held up by the submitter) waits for `predecessor`.
/// If the predecessor already finished with a failure and the edge is a data edge, the failure
/// is recorded on `task`.
void add_dependency(TaskCore* task, TaskCore* predecessor, EdgeKind kind = EdgeKind::data);

/// Records `task`'s access to `handle` and makes it wait for the conflicting earlier accesses.
void track_access(TaskCore* task, HandleImpl& handle, AccessMode mode);

/// What failure_read_by leaves on the token: nothing (the token itself does not fail), or the
/// failure as it was (an acquisition that reads and writes, which fails with it when released).
enum class TokenFailure : unsigned char { take, keep };

/// The failure of the writer whose output the started acquisition `token` reads (its data
/// edge): nullptr when that writer succeeded, or when the acquisition does not read. Read under
/// the token's lock, with the token's own failure taken off or kept (`on_token`) in the same go.
std::exception_ptr failure_read_by(TaskCore* token, TokenFailure on_token = TokenFailure::take);
/// The program takes the data as they are (Runtime::acquire): a failed writer that is still
/// the handle's last one is forgotten, so that the tasks submitted from now on read a new
/// version rather than fail.
void forgive_failed_writer(HandleImpl& handle);
/// HandleImpl::accesses, if no task or acquisition uses `handle` or is being submitted on it and
/// its last writer, if any, succeeded (letting it go now changes nothing any task sees).
std::optional<std::uint64_t> accesses_if_at_rest(HandleImpl& handle);

/// Tasks looked at, at most, to tell whether a wait inside a task would never end.
inline constexpr std::size_t kDeadlockSearchBudget = 2000;

/// Appends the tasks that cannot start before `task` ends, directly (its successors, not its
/// completion callbacks). The same conditions as waits_for.
void append_successors(TaskCore* task, std::vector<TaskCore*>& successors);
/// Whether `later` cannot start before `earlier` ends: it is among the tasks that wait for
/// `earlier`, directly or through others. `earlier` must not have finished (its successors then
/// cannot have either, so every task looked at is alive). Looks at `budget` tasks at most and
/// answers false beyond.
bool waits_for(TaskCore* later, TaskCore* earlier, std::size_t budget);
/// Whether a task (not an acquisition or another manual task) waits for `earlier`, directly or
/// through others: what wait_all waits for. The same conditions as waits_for.
bool some_task_waits_for(TaskCore* earlier, std::size_t budget);

/// The error a dependent of the failed (or cancelled) `task` gets: a DependencyError naming the
/// original failure.
std::exception_ptr dependency_error_for(TaskCore* task);

}  // namespace hetflow::detail
