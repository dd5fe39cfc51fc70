#pragma once
// A locked FIFO of scheduler tasks linked through SchedTask::sched_next, for the central and
// per-worker queues of the simpler schedulers.
#include <atomic>
#include <mutex>

#include "hetflow/ext/scheduler.hpp"

namespace hetflow::detail {

class TaskFifo {
 public:
  void push(ext::SchedTask* task) {
    task->sched_next = nullptr;
    std::lock_guard guard(mutex_);
    if (tail_ != nullptr) {
      tail_->sched_next = task;
    } else {
      head_ = task;
    }
    tail_ = task;
    size_.fetch_add(1, std::memory_order_release);
  }

  /// Queued behind the tasks of higher or equal priority (submission order among equals), ahead
  /// of those of lower priority.
  void push_by_priority(ext::SchedTask* task) {
    const auto stays_ahead = [task](const ext::SchedTask* queued) {
      return queued->priority > task->priority ||
             (queued->priority == task->priority && queued->sequence < task->sequence);
    };
    std::lock_guard guard(mutex_);
    ext::SchedTask* previous = nullptr;
    ext::SchedTask** link = &head_;
    while (*link != nullptr && stays_ahead(*link)) {
      previous = *link;
      link = &previous->sched_next;
    }
    task->sched_next = *link;
    *link = task;
    if (previous == tail_) tail_ = task;
    size_.fetch_add(1, std::memory_order_release);
  }

  [[nodiscard]] bool empty() const noexcept { return size_.load(std::memory_order_acquire) == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }

  /// The oldest task that `arch` may run, or nullptr.
  ext::SchedTask* pop(Arch arch) {
    if (size_.load(std::memory_order_acquire) == 0) return nullptr;
    std::lock_guard guard(mutex_);
    ext::SchedTask* previous = nullptr;
    for (ext::SchedTask* task = head_; task != nullptr; previous = task, task = task->sched_next) {
      if (!task->where.contains(arch)) continue;
      (previous != nullptr ? previous->sched_next : head_) = task->sched_next;
      if (tail_ == task) tail_ = previous;
      size_.fetch_sub(1, std::memory_order_relaxed);
      return task;
    }
    return nullptr;
  }

 private:
  std::mutex mutex_;
  ext::SchedTask* head_ = nullptr;
  ext::SchedTask* tail_ = nullptr;
  std::atomic<std::size_t> size_{0};
};

}  // namespace hetflow::detail
