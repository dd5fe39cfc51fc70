#pragma once
// The engine entry points that the public templates (Future, Runtime::submit) are built on.
// Not for direct use.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <typeinfo>

#include "hetflow/export.hpp"

namespace hetflow {
class Runtime;
class TaskContext;
}  // namespace hetflow

namespace hetflow::detail {

struct TaskCore;

/// How the engine runs, and cleans up after, the type-erased body a task carries in its storage.
struct BodyOps {
  /// Runs the body. On normal return the storage holds the result (when `destroy_result` is set).
  /// The body is destroyed by `run` in every case, also when it throws.
  void (*run)(void* storage, TaskContext& context);
  /// Destroys a body that will never run (cancelled task, failed dependency).
  void (*destroy_body)(void* storage) noexcept;
  /// Destroys the result; nullptr for tasks without one.
  void (*destroy_result)(void* storage) noexcept;
  /// The type of the argument a codelet task carries, for TaskContext::arg<T>(); nullptr if none.
  const std::type_info* arg_type;
};

enum class TaskStatus : unsigned char { pending, ready, running, done, failed, cancelled };

HETFLOW_API void retain(TaskCore* task) noexcept;
HETFLOW_API void release(TaskCore* task) noexcept;
/// retain and release for a Future: once a finished task's last Future is gone, its result is
/// destroyed, even while the engine still holds the task (as its data's last writer, say).
HETFLOW_API void retain_future(TaskCore* task) noexcept;
HETFLOW_API void release_future(TaskCore* task) noexcept;
[[nodiscard]] HETFLOW_API TaskStatus status(const TaskCore* task) noexcept;
[[nodiscard]] HETFLOW_API bool is_finished(const TaskCore* task) noexcept;
/// Whether the task ended after its runtime gave up on the work (Runtime::abort): it was still
/// running then (the Python layer counts it as cancelled, whatever it gave later).
[[nodiscard]] HETFLOW_API bool finished_after_abort(const TaskCore* task) noexcept;
HETFLOW_API void wait(TaskCore* task);
/// Throws hetflow::Error if the calling thread runs a task of `task`'s runtime, or holds an
/// acquisition, that `task` waits for (directly or through other tasks): waiting for it without
/// a deadline would never end.
HETFLOW_API void check_wait_can_end(TaskCore* task);
/// Throws hetflow::Error if the calling thread holds an acquisition that a submitted task waits
/// for: Runtime::wait_all would never end.
HETFLOW_API void check_wait_all_can_end(Runtime& runtime);
/// A number for the calling thread, never given to another one (a std::thread::id is reused once
/// its thread has ended): acquisitions are held by it.
[[nodiscard]] HETFLOW_API std::uint64_t thread_number() noexcept;
/// From now on the calling thread counts as thread `number` (thread_number() gives it; 0: as
/// itself again), for a binding that waits on a helper thread (to stay interruptible) and acquires
/// for its caller. Returns what it counted as before.
HETFLOW_API std::uint64_t act_for_thread(std::uint64_t number) noexcept;
[[nodiscard]] HETFLOW_API bool wait_until(TaskCore* task, std::chrono::steady_clock::time_point deadline);
/// Rethrows the task's failure (its own exception, a DependencyError or a CancelledError).
HETFLOW_API void rethrow_if_failed(const TaskCore* task);
[[nodiscard]] HETFLOW_API std::exception_ptr error_of(const TaskCore* task) noexcept;
[[nodiscard]] HETFLOW_API void* result_storage(TaskCore* task) noexcept;
/// Whether the caller's reference is the task's only one (no copy of its future elsewhere).
[[nodiscard]] HETFLOW_API bool only_reference(const TaskCore* task) noexcept;
HETFLOW_API bool cancel(TaskCore* task) noexcept;
/// The Runtime the task belongs to; ShutdownError once that Runtime has been destroyed.
[[nodiscard]] HETFLOW_API Runtime& owner(const TaskCore* task);
[[nodiscard]] HETFLOW_API const char* name_of(const TaskCore* task) noexcept;

/// Someone to tell when a task finishes, besides its dependent tasks (when_any, language
/// bindings that report completions to their own event loop).
struct CompletionCallback {
  /// Called once, on the thread that finishes the task (or the one adding the callback, if the
  /// task has finished already): it must neither throw nor block.
  void (*fn)(CompletionCallback* self, TaskCore* finished) = nullptr;
};
/// Calls `callback->fn` when the task finishes (at once if it has); the callback must live
/// until then.
HETFLOW_API void add_completion_callback(TaskCore* task, CompletionCallback* callback) noexcept;

}  // namespace hetflow::detail
