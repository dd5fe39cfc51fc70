#pragma once
// Dependencies between tasks: explicit ones, and those inferred from data accesses in
// submission order (read after write, write after read, write after write).
#include "core/task.hpp"
#include "data/handle.hpp"

namespace hetflow::detail {

/// `task` (being submitted, its pending count held up by the submitter) waits for `predecessor`.
/// If the predecessor already finished with a failure, the failure is recorded on `task`.
void add_dependency(TaskCore* task, TaskCore* predecessor);

/// Records `task`'s access to `handle` and makes it wait for the conflicting earlier accesses.
void track_access(TaskCore* task, HandleImpl& handle, AccessMode mode);

/// The error a dependent of the failed (or cancelled) `task` gets: a DependencyError naming the
/// original failure.
std::exception_ptr dependency_error_for(TaskCore* task);

}  // namespace hetflow::detail
