#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "hetflow/access.hpp"
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

/// Which thread runs a worker's tasks: one at a time. The thread of a task that waits for a future
/// lends the worker to a spare thread and blocks; once its wait is over it asks for the worker
/// back, and the thread running it hands it back between two tasks (ThreadedExecution).
struct WorkerSeat {
  std::mutex mutex;
  std::condition_variable handed_back;
  bool held = true;     // a thread runs the worker (false once the last one has left it at the end)
  unsigned handed = 0;  // handed back to threads asking for it, not taken yet
  // Threads whose wait is over, asking for the worker back; read between tasks without the lock.
  std::atomic<unsigned> asking{0};
};

struct WorkerState {
  Engine* runtime = nullptr;
  ext::WorkerInfo info;
  ext::Driver* driver = nullptr;  // nullptr for the built-in CPU workers
  unsigned driver_index = 0;
  int pin_cpu = -1;
  WorkerSeat seat;
  // Tasks run together with the one being executed (TaskContext::take_companions); nullptr
  // once finished.
  std::vector<TaskCore*> companions;
  // With a trace or statistics, where the running batch's next slice begins (its lead's start,
  // then the end of its own part and of each companion), and when the lead's own part ended
  // (negative: not said: the whole body).
  double batch_mark = 0;
  double own_part_end = -1;
  // A task taken while looking for companions that was not one: it runs next.
  TaskCore* deferred = nullptr;
  // Seconds, accumulated over the worker's life, spent running tasks nested in a task that waited
  // for a future (help_while): a task's model learns its time less what this grew by meanwhile.
  double nested_seconds = 0;
  // The tasks whose bodies this worker's thread runs, innermost first (more than one while it
  // helps during a wait). A thread that lends the worker keeps its own, and its companions.
  const RunningFrame* running = nullptr;
};

/// The worker the calling thread is, or nullptr for application threads.
WorkerState* current_worker() noexcept;
/// The calling thread becomes `worker`'s (nullptr: no worker's any more).
void set_current_worker(WorkerState* worker) noexcept;

/// A task whose wait lent its worker to a spare thread goes on without the worker once the wait
/// is over, if the spare's task does not end soon (it may wait for what this task does next):
/// its thread keeps what it left on the worker, the spare goes on serving the worker, and the
/// thread takes it back when its body returns (ThreadedExecution::rejoin). Meanwhile the thread
/// waits and submits as an application thread does, but is still inside the task for the checks
/// below.
struct SeatlessTask {
  WorkerState* worker = nullptr;
  const RunningFrame* running = nullptr;
  std::vector<TaskCore*> companions;
  double nested_seconds = 0;
};
/// The calling thread's, or nullptr.
SeatlessTask* seatless_task() noexcept;
void set_seatless_task(SeatlessTask* task) noexcept;

/// The tasks whose bodies the calling thread runs for `runtime`, innermost first (on a worker,
/// or going on without one); nullptr if none.
const RunningFrame* tasks_on_this_thread(const Engine* runtime) noexcept;
/// Whether the calling thread runs a task of `runtime` (on a worker, or going on without one).
bool inside_task_of(const Engine* runtime) noexcept;

/// Whether the calling thread runs a task of `runtime` that declared access to `handle` (or
/// waits for a task it runs meanwhile that does): acquiring the handle would wait for that task.
/// With `mode`: only an access that one with `mode` would wait for (conflict) counts.
bool running_task_uses(const Engine* runtime, const HandleImpl* handle,
                       std::optional<AccessMode> mode = std::nullopt) noexcept;

}  // namespace hetflow::detail
