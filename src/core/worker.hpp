#pragma once
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "hetflow/ext/driver.hpp"
#include "hetflow/ext/scheduler.hpp"

namespace hetflow::detail {

class Engine;
struct HandleImpl;
struct TaskCore;

/// A task whose body a worker runs; `outer` is the one that was waiting (help_while) when this
/// one started on the same thread, or nullptr.
struct RunningFrame {
  TaskCore* task = nullptr;
  const RunningFrame* outer = nullptr;
};

struct WorkerState {
  Engine* runtime = nullptr;
  ext::WorkerInfo info;
  ext::Driver* driver = nullptr;  // nullptr for the built-in CPU workers
  unsigned driver_index = 0;
  int pin_cpu = -1;
  std::thread thread;
  // Tasks run together with the one being executed (TaskContext::take_companions); nullptr
  // once finished.
  std::vector<TaskCore*> companions;
  // A task taken while looking for companions that was not one: it runs next.
  TaskCore* deferred = nullptr;
  // Seconds, accumulated over the worker's life, spent running tasks nested in a task that waited
  // for a future (help_while): a task's model learns its time less what this grew by meanwhile.
  double nested_seconds = 0;
  // The tasks whose bodies this worker runs, innermost first (more than one while it helps
  // during a wait).
  const RunningFrame* running = nullptr;
  // Set as the worker's thread leaves its loop: ThreadedExecution::stop_free_workers joins only these.
  std::atomic<bool> exited{false};
};

/// The worker the calling thread is, or nullptr for application threads.
WorkerState* current_worker() noexcept;
/// The calling thread becomes `worker`'s (nullptr: no worker's any more).
void set_current_worker(WorkerState* worker) noexcept;

/// Whether the calling thread runs a task of `runtime` that declared access to `handle` (or
/// waits for a task it runs meanwhile that does): acquiring the handle would wait for that task.
bool running_task_uses(const Engine* runtime, const HandleImpl* handle) noexcept;

}  // namespace hetflow::detail
