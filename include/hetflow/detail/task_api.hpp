#pragma once
// The engine entry points that the public templates (Future, Runtime::submit) are built on.
// Not for direct use.
#include <chrono>
#include <cstddef>
#include <exception>
#include <typeinfo>

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

void retain(TaskCore* task) noexcept;
void release(TaskCore* task) noexcept;
[[nodiscard]] TaskStatus status(const TaskCore* task) noexcept;
[[nodiscard]] bool is_finished(const TaskCore* task) noexcept;
void wait(TaskCore* task);
[[nodiscard]] bool wait_until(TaskCore* task, std::chrono::steady_clock::time_point deadline);
/// Rethrows the task's failure (its own exception, a DependencyError or a CancelledError).
void rethrow_if_failed(const TaskCore* task);
[[nodiscard]] std::exception_ptr error_of(const TaskCore* task) noexcept;
[[nodiscard]] void* result_storage(TaskCore* task) noexcept;
bool cancel(TaskCore* task) noexcept;
[[nodiscard]] Runtime& owner(const TaskCore* task) noexcept;
[[nodiscard]] const char* name_of(const TaskCore* task) noexcept;

}  // namespace hetflow::detail
