#pragma once
#include <chrono>
#include <cstddef>
#include <exception>
#include <type_traits>
#include <utility>
#include <vector>

#include "hetflow/detail/task_api.hpp"
#include "hetflow/error.hpp"
#include "hetflow/export.hpp"

namespace hetflow {

namespace detail {
/// Now plus `timeout`, saturated: a timeout longer than the clock can count (seconds::max(), say)
/// never passes, and one of zero or less (or NaN) has passed already.
template <class Rep, class Period>
[[nodiscard]] std::chrono::steady_clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point now = Clock::now();
  if (!(timeout > timeout.zero())) return now;  // NaN too
  if (std::chrono::duration<double>(timeout) >= std::chrono::duration<double>(Clock::time_point::max() - now)) {
    return Clock::time_point::max();
  }
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}
}  // namespace detail

using TaskStatus = detail::TaskStatus;

/// The untyped part of a Future: readiness, waiting, cancellation. Copies share the task.
class FutureBase {
 public:
  FutureBase() noexcept = default;
  FutureBase(const FutureBase& other) noexcept : core_(other.core_) {
    if (core_ != nullptr) detail::retain_future(core_);
  }
  FutureBase(FutureBase&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  FutureBase& operator=(FutureBase other) noexcept {
    std::swap(core_, other.core_);
    return *this;
  }
  ~FutureBase() {
    if (core_ != nullptr) detail::release_future(core_);
  }

  [[nodiscard]] bool valid() const noexcept { return core_ != nullptr; }
  /// True once the task has succeeded, failed or been cancelled.
  [[nodiscard]] bool ready() const { return detail::is_finished(checked()); }
  [[nodiscard]] TaskStatus status() const { return detail::status(checked()); }
  /// Blocks until ready. Called from inside a task, the worker runs other tasks meanwhile (on this
  /// thread those the task submitted or waits for, others on a spare thread). Throws
  /// hetflow::Error rather than waiting for ever when the task waits for the calling task or for an
  /// acquisition the calling thread holds (directly or through other tasks), or when the wait
  /// would close a cycle of tasks waiting inside their bodies.
  void wait() const { detail::wait(checked()); }
  /// Called from inside a task, the worker goes to a spare thread meanwhile (nothing runs on this
  /// thread's stack), and the wait may end after the deadline by the rest of that thread's task.
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return detail::wait_until(checked(), detail::deadline_after(timeout));
  }
  [[nodiscard]] bool wait_until(std::chrono::steady_clock::time_point deadline) const {
    return detail::wait_until(checked(), deadline);
  }
  /// Cancels a task that has not started; returns false if it already started or finished.
  bool cancel() { return detail::cancel(checked()); }
  /// The failure, once ready; nullptr if the task succeeded or is not finished.
  [[nodiscard]] std::exception_ptr error() const noexcept { return core_ ? detail::error_of(core_) : nullptr; }
  [[nodiscard]] const char* name() const { return detail::name_of(checked()); }

  /// Adopts a reference the engine handed out (the task's first Future: see TaskCore::future_refs).
  static FutureBase adopt(detail::TaskCore* core) noexcept {
    FutureBase f;
    f.core_ = core;
    return f;
  }
  [[nodiscard]] detail::TaskCore* core() const noexcept { return core_; }

 protected:
  detail::TaskCore* checked() const {
    if (core_ == nullptr) throw Error("hetflow::Future: this future is empty (default-constructed or moved from)");
    return core_;
  }
  void wait_and_rethrow() const {
    detail::wait(checked());
    detail::rethrow_if_failed(core_);
  }

 private:
  detail::TaskCore* core_ = nullptr;
};

/// The eventual result of a task. `get()` waits and returns the value or rethrows the failure.
template <class T>
class Future : public FutureBase {
 public:
  using value_type = T;
  Future() noexcept = default;
  explicit Future(FutureBase base) noexcept : FutureBase(std::move(base)) {}

  const T& get() const& {
    wait_and_rethrow();
    return *static_cast<const T*>(detail::result_storage(core()));
  }
  /// The value, moved out when this future is the task's only one; copied while other copies
  /// of it (or `then` and `when_all` tasks over it) may still read it, if T can be copied. A
  /// value that cannot be copied is moved out all the same: a `then` continuation or another
  /// copy reading it afterwards sees what the move left (read it through `get()` on an lvalue).
  T get() && {
    wait_and_rethrow();
    T& value = *static_cast<T*>(detail::result_storage(core()));
    if constexpr (std::is_copy_constructible_v<T>) {
      if (!detail::only_reference(core())) return value;
    }
    return std::move(value);
  }

  /// Submits `fn(value)` to run after this task; it fails with DependencyError if this one fails.
  template <class F>
  auto then(F&& fn) const;
};

template <>
class Future<void> : public FutureBase {
 public:
  using value_type = void;
  Future() noexcept = default;
  explicit Future(FutureBase base) noexcept : FutureBase(std::move(base)) {}

  void get() const { wait_and_rethrow(); }

  template <class F>
  auto then(F&& fn) const;
};

/// Ready when every future is ready; fails with DependencyError if one of them fails.
template <class T>
auto when_all(const std::vector<Future<T>>& futures);
HETFLOW_API Future<void> when_all(std::vector<FutureBase> futures);
template <class... F>
Future<void> when_all(const F&... futures) {
  return when_all(std::vector<FutureBase>{FutureBase(futures)...});
}

/// Ready when the first of the futures is ready (succeeded, failed or cancelled), at once,
/// whether a worker is free or not; its value is that future's index. It starts at once, so it
/// cannot be cancelled. Needs at least one future.
HETFLOW_API Future<std::size_t> when_any(std::vector<FutureBase> futures);
template <class T>
Future<std::size_t> when_any(const std::vector<Future<T>>& futures) {
  return when_any(std::vector<FutureBase>(futures.begin(), futures.end()));
}
template <class... F>
Future<std::size_t> when_any(const F&... futures) {
  return when_any(std::vector<FutureBase>{FutureBase(futures)...});
}

}  // namespace hetflow
