#pragma once
// Where idle workers of one architecture sleep, and how submissions wake them.
//
// A worker looking for work counts itself in `searching`; a push wakes a sleeper only when no
// worker is searching, and a searcher that finds a task wakes a peer if it was the last searcher,
// so a burst of submissions wakes workers one at a time instead of one syscall per task.
// The sleep itself is an eventcount: prepare (announce), re-check the queues, commit (sleep on
// the epoch) or cancel, so a push between the re-check and the sleep is never missed.
#include <atomic>
#include <cstdint>

#include "util/futex.hpp"

namespace hetflow::detail {

class IdleWorkers {
 public:
  void begin_search() noexcept { searching_.fetch_add(1, std::memory_order_seq_cst); }
  /// Returns true if this was the last searcher.
  bool end_search() noexcept { return searching_.fetch_sub(1, std::memory_order_seq_cst) == 1; }

  /// Announces the intent to sleep; the caller then re-checks for work and either commits or cancels.
  std::uint32_t prepare_wait() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return epoch_.load(std::memory_order_seq_cst);
  }
  void cancel_wait() noexcept { waiters_.fetch_sub(1, std::memory_order_seq_cst); }
  void commit_wait(std::uint32_t epoch) noexcept {
    futex_wait(epoch_, epoch);
    waiters_.fetch_sub(1, std::memory_order_seq_cst);
  }

  /// Whether a worker is looking for work or asleep (a snapshot).
  [[nodiscard]] bool any_idle() const noexcept {
    return searching_.load(std::memory_order_relaxed) > 0 || waiters_.load(std::memory_order_relaxed) > 0;
  }

  /// Called after making work available.
  void notify_one() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (searching_.load(std::memory_order_seq_cst) > 0) return;
    if (waiters_.load(std::memory_order_seq_cst) == 0) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(epoch_, 1);
  }
  void notify_all() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(epoch_);
  }

 private:
  alignas(64) std::atomic<std::uint32_t> epoch_{0};
  alignas(64) std::atomic<std::uint32_t> waiters_{0};
  alignas(64) std::atomic<std::uint32_t> searching_{0};
};

}  // namespace hetflow::detail
