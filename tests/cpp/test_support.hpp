#pragma once
// Helpers shared by the test suites: environment overrides, size scaling, a gate tasks can
// block on.
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "hetflow/error.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HETFLOW_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HETFLOW_TEST_SANITIZED 1
#endif
#endif
#ifndef HETFLOW_TEST_SANITIZED
#define HETFLOW_TEST_SANITIZED 0
#endif

namespace hetflow::test {

/// Sets (or, with nullopt, unsets) an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

/// The factor applied to the sizes of the heavy tests: HETFLOW_TEST_SCALE if set, else 0.1 in
/// sanitizer builds and 1 otherwise.
inline double test_scale() {
  if (const char* text = std::getenv("HETFLOW_TEST_SCALE")) {
    char* end = nullptr;
    double value = std::strtod(text, &end);
    if (end != text && value > 0) return value;
  }
  return HETFLOW_TEST_SANITIZED ? 0.1 : 1.0;
}

inline std::size_t scaled(std::size_t n, std::size_t at_least = 1) {
  auto value = static_cast<std::size_t>(static_cast<double>(n) * test_scale());
  return value < at_least ? at_least : value;
}

/// The scheduler the suite runs under (CTest sets HETFLOW_SCHED), "ws" by default.
inline std::string scheduler_under_test() {
  const char* name = std::getenv("HETFLOW_SCHED");
  return (name != nullptr && *name != '\0') ? name : "ws";
}

/// A one-shot gate: tasks block in wait() until the test opens it.
class Gate {
 public:
  void open() noexcept {
    open_.store(true, std::memory_order_release);
    open_.notify_all();
  }
  void wait() const noexcept {
    while (!open_.load(std::memory_order_acquire)) open_.wait(false, std::memory_order_acquire);
  }
  [[nodiscard]] bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }

 private:
  std::atomic<bool> open_{false};
};

/// A counter a task bumps to say it has started (the test waits for it before going on).
class Signal {
 public:
  void raise() noexcept {
    count_.fetch_add(1, std::memory_order_release);
    count_.notify_all();
  }
  void wait_for_count(int n) const noexcept {
    for (int seen = count_.load(std::memory_order_acquire); seen < n; seen = count_.load(std::memory_order_acquire)) {
      count_.wait(seen, std::memory_order_acquire);
    }
  }
  void wait() const noexcept { wait_for_count(1); }

 private:
  std::atomic<int> count_{0};
};

/// A thread with a small stack (256 KiB unless told), for the tests that check a long chain is not
/// worked through in nested calls, which would overflow it (std::thread cannot set the size).
/// join(), or the destructor, waits for it; as with std::thread, an exception `fn` lets out ends
/// the process.
class SmallStackThread {
 public:
  static constexpr std::size_t kDefaultStackBytes = std::size_t{256} << 10;

  explicit SmallStackThread(std::function<void()> fn, std::size_t stack_bytes = kDefaultStackBytes)
      : fn_(std::move(fn)) {
    pthread_attr_t attributes;
    if (int error = pthread_attr_init(&attributes); error != 0) fail(error, "pthread_attr_init");
    int error = pthread_attr_setstacksize(&attributes, stack_bytes);
    if (error == 0) error = pthread_create(&thread_, &attributes, &SmallStackThread::body, this);
    pthread_attr_destroy(&attributes);
    if (error != 0) fail(error, "pthread_attr_setstacksize or pthread_create");
    joinable_ = true;
  }
  ~SmallStackThread() {
    if (joinable_) pthread_join(thread_, nullptr);
  }
  SmallStackThread(const SmallStackThread&) = delete;
  SmallStackThread& operator=(const SmallStackThread&) = delete;

  void join() {
    if (!joinable_) return;
    joinable_ = false;
    if (int error = pthread_join(thread_, nullptr); error != 0) fail(error, "pthread_join");
  }

 private:
  static void* body(void* self) noexcept {
    static_cast<SmallStackThread*>(self)->fn_();
    return nullptr;
  }
  [[noreturn]] static void fail(int error, const char* what) {
    throw std::system_error(error, std::generic_category(), what);
  }

  std::function<void()> fn_;
  pthread_t thread_{};
  bool joinable_ = false;
};

/// Runs `fn` on a thread with a small stack (see SmallStackThread) and waits for it.
inline void run_on_small_stack(std::function<void()> fn) { SmallStackThread(std::move(fn)).join(); }

/// Expects `fn` to throw hetflow::InvalidArgument whose message contains every one of `needles`.
template <class Fn>
void expect_invalid_argument(Fn fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected hetflow::InvalidArgument";
  } catch (const hetflow::InvalidArgument& e) {
    for (const auto& needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "message '" << e.what() << "' does not contain '" << needle << "'";
    }
  }
}

}  // namespace hetflow::test
