#pragma once
// A thread whose stack size is chosen (std::thread takes the system's default), so that the
// threads that run tasks honour what the program asked for (Config::worker_stack_bytes, which
// Python's threading.stack_size() sets): deep recursion there overflowed a default stack.
#include <pthread.h>

#include <cstddef>
#include <functional>
#include <optional>

namespace hetflow::detail {

class SizedThread {
 public:
  SizedThread() = default;
  /// Starts `body` on a new thread with a stack of `stack_bytes` (0: the system's default).
  /// Throws std::system_error when the thread cannot be made, as std::thread does.
  SizedThread(std::size_t stack_bytes, std::function<void()> body);
  SizedThread(SizedThread&& other) noexcept;
  SizedThread& operator=(SizedThread&& other) noexcept;
  SizedThread(const SizedThread&) = delete;
  SizedThread& operator=(const SizedThread&) = delete;
  /// As std::thread's: the program ends (std::terminate) if it was neither joined nor detached.
  ~SizedThread();

  [[nodiscard]] bool joinable() const noexcept { return handle_.has_value(); }
  void join();
  void detach();

 private:
  std::optional<pthread_t> handle_;
};

}  // namespace hetflow::detail
