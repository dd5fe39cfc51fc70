#include "platform/sized_thread.hpp"

#include <exception>
#include <memory>
#include <system_error>
#include <utility>

namespace hetflow::detail {
namespace {

void* run_body(void* raw) {
  // Not noexcept: a thread Python ends (pthread_exit, at interpreter exit) unwinds through here.
  const std::unique_ptr<std::function<void()>> body(static_cast<std::function<void()>*>(raw));
  (*body)();
  return nullptr;
}

void check(int code, const char* what) {
  if (code != 0) throw std::system_error(code, std::generic_category(), what);
}

struct ThreadAttributes {
  ThreadAttributes() { check(pthread_attr_init(&value), "pthread_attr_init"); }
  ~ThreadAttributes() { pthread_attr_destroy(&value); }
  ThreadAttributes(const ThreadAttributes&) = delete;
  ThreadAttributes& operator=(const ThreadAttributes&) = delete;
  pthread_attr_t value{};
};

}  // namespace

SizedThread::SizedThread(std::size_t stack_bytes, std::function<void()> body) {
  ThreadAttributes attributes;
  if (stack_bytes != 0) check(pthread_attr_setstacksize(&attributes.value, stack_bytes), "pthread_attr_setstacksize");
  auto owned = std::make_unique<std::function<void()>>(std::move(body));
  pthread_t handle{};
  check(pthread_create(&handle, &attributes.value, run_body, owned.get()), "pthread_create");
  owned.release();  // the thread's now
  handle_ = handle;
}

SizedThread::SizedThread(SizedThread&& other) noexcept : handle_(std::exchange(other.handle_, std::nullopt)) {}

SizedThread& SizedThread::operator=(SizedThread&& other) noexcept {
  if (this != &other) {
    if (joinable()) std::terminate();
    handle_ = std::exchange(other.handle_, std::nullopt);
  }
  return *this;
}

SizedThread::~SizedThread() {
  if (joinable()) std::terminate();
}

void SizedThread::join() {
  if (!handle_) throw std::system_error(std::make_error_code(std::errc::invalid_argument), "SizedThread::join");
  check(pthread_join(*handle_, nullptr), "pthread_join");
  handle_.reset();
}

void SizedThread::detach() {
  if (!handle_) throw std::system_error(std::make_error_code(std::errc::invalid_argument), "SizedThread::detach");
  check(pthread_detach(*handle_), "pthread_detach");
  handle_.reset();
}

}  // namespace hetflow::detail
