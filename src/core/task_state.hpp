#pragma once
// Moving a task through its states, and blocking until it gets somewhere.
#include <chrono>
#include <vector>

#include "core/task.hpp"
#include "util/futex.hpp"

namespace hetflow::detail {

/// Moves the task from `from` to `to` (with `marks`: kClaimedBit) and wakes the threads waiting
/// on it; returns false (and changes nothing) if it was not in `from` (it was cancelled meanwhile).
inline bool transition(TaskCore* task, TaskStatus from, TaskStatus to, std::uint32_t marks = 0) noexcept {
  std::uint32_t old = task->state.load(std::memory_order_relaxed);
  do {
    if (static_cast<TaskStatus>(old & TaskCore::kStatusMask) != from) return false;
  } while (!task->state.compare_exchange_weak(old, static_cast<std::uint32_t>(to) | marks, std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
  if (old & TaskCore::kWaitersBit) futex_wake_all(task->state);
  return true;
}

/// `marks`: bits kept with the final status (kAfterAbortBit). The claim bits stay as they are.
inline void set_final(TaskCore* task, TaskStatus to, std::uint32_t marks = 0) noexcept {
  std::uint32_t old = task->state.load(std::memory_order_relaxed);
  while (!task->state.compare_exchange_weak(old, static_cast<std::uint32_t>(to) | marks | (old & TaskCore::kClaimBits),
                                            std::memory_order_acq_rel, std::memory_order_relaxed)) {
  }
  if (old & TaskCore::kWaitersBit) futex_wake_all(task->state);
}

/// set_final for the thread that ran the task, unless the shutdown gave up on it meanwhile
/// (kGivenUpBit: its end is published already); returns false, changing nothing, then.
inline bool publish_outcome(TaskCore* task, TaskStatus to, std::uint32_t marks = 0) noexcept {
  std::uint32_t old = task->state.load(std::memory_order_relaxed);
  do {
    if (old & TaskCore::kGivenUpBit) return false;
  } while (!task->state.compare_exchange_weak(old,
                                              static_cast<std::uint32_t>(to) | marks | (old & TaskCore::kClaimBits),
                                              std::memory_order_acq_rel, std::memory_order_relaxed));
  if (old & TaskCore::kWaitersBit) futex_wake_all(task->state);
  return true;
}

/// While it lives, the calling thread is blocked waiting for `task`: a shutdown that gives up on
/// the work (Engine::shutdown_until) ends the task, which ends the wait; where the shutdown gave
/// up already, the task is ended here. Only while blocked: waits are found by this list alone.
struct WaitingFor {
  explicit WaitingFor(TaskCore* waited) noexcept;
  ~WaitingFor();
  WaitingFor(const WaitingFor&) = delete;
  WaitingFor& operator=(const WaitingFor&) = delete;

  TaskCore* task;
  bool listed = false;
  WaitingFor* prev = nullptr;
  WaitingFor* next = nullptr;
};

/// Blocks until `reached(status)` holds or the deadline passes; returns whether it holds.
template <class Reached>
bool block_until(TaskCore* task, Reached reached, const std::chrono::steady_clock::time_point* deadline) {
  for (;;) {
    std::uint32_t word = task->state.load(std::memory_order_acquire);
    if (reached(static_cast<TaskStatus>(word & TaskCore::kStatusMask))) return true;
    if (!(word & TaskCore::kWaitersBit)) {
      if (!task->state.compare_exchange_weak(word, word | TaskCore::kWaitersBit, std::memory_order_acq_rel)) continue;
      word |= TaskCore::kWaitersBit;
    }
    const WaitingFor noted(task);  // the word changes if a shutdown gives up on the task: no wakeup lost
    if (!futex_wait(task->state, word, deadline)) {
      return reached(task->status());
    }
  }
}

/// Blocks until a manual task (an acquisition) has its dependencies satisfied.
void wait_until_started(TaskCore* task);
/// The inputs of `task`, each retained, if it is when_any's result and none of them has ended;
/// else none.
std::vector<TaskCore*> when_any_inputs(const TaskCore* task);
/// The error of a cancelled task's future: why it was cancelled, when the shutdown gave up on it.
std::exception_ptr cancelled_error(const TaskCore* task) noexcept;
/// Finishes a manual task: the application is done with the data (which it did not produce,
/// when `error` is given: the task fails with it).
void complete_manual(TaskCore* task, std::exception_ptr error = nullptr) noexcept;

}  // namespace hetflow::detail
