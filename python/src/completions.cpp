#include "completions.hpp"

#include <chrono>

#include "hetflow/detail/task_api.hpp"

namespace hetflow::python {

struct CompletionQueue::Watch : detail::CompletionCallback {
  CompletionQueue* queue = nullptr;
  PyRef target;
  static void fire(detail::CompletionCallback* self, detail::TaskCore* /*task*/) noexcept {
    auto* watch = static_cast<Watch*>(self);
    watch->queue->post(std::move(watch->target));
    delete watch;
  }
};

void CompletionQueue::watch(const FutureBase& task, PyObject* target) {
  if (!task.valid()) {  // a task that runs on another MPI rank: finished here
    post(PyRef::borrow(target));
    return;
  }
  auto* watch = new Watch();
  watch->fn = &Watch::fire;
  watch->queue = this;
  watch->target = PyRef::borrow(target);
  detail::add_completion_callback(task.core(), watch);
}

void CompletionQueue::post(PyRef target) {
  {
    std::lock_guard guard(mutex_);
    finished_.push_back(std::move(target));
  }
  ready_.notify_one();
}

std::vector<PyRef> CompletionQueue::drain(int timeout_ms) {
  std::unique_lock guard(mutex_);
  ready_.wait_for(guard, std::chrono::milliseconds(timeout_ms), [this] { return closed_ || !finished_.empty(); });
  return std::exchange(finished_, {});
}

void CompletionQueue::close() {
  {
    std::lock_guard guard(mutex_);
    closed_ = true;
  }
  ready_.notify_all();
}

}  // namespace hetflow::python
