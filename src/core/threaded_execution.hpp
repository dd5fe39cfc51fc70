#pragma once
// Tasks run by threads: one per worker, each taking tasks from the engine (its pinned ones, then
// the scheduler's), spinning a while when there are none, then sleeping until one is made ready.
// A task that waits for a future inside its body runs the tasks it submitted and what the awaited
// task needs on its own stack, else lends its worker to a spare thread and blocks until the wait
// is over (see futures.cpp); where no spare may stand in, the worker runs other tasks meanwhile
// (help_while).
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/dependencies.hpp"
#include "core/engine.hpp"
#include "core/execution.hpp"
#include "core/idle_workers.hpp"
#include "core/worker.hpp"
#include "platform/sized_thread.hpp"

namespace hetflow::detail {

class ThreadedExecution final : public Execution {
 public:
  void add_workers(Engine& engine) override;
  void model_bus(BusModel& bus, const std::vector<std::string>& node_names) override;
  void start(Engine& engine) override;
  void stop() override;
  unsigned stop_free_workers() override;
  void report(const std::string& /*scheduler_name*/, double /*end*/) const override {}
  [[nodiscard]] IdleWorkers* idle_workers() noexcept override { return idle_.data(); }
  [[nodiscard]] std::optional<double> cost(TaskCore& /*task*/, Arch /*arch*/) const override { return std::nullopt; }
  [[nodiscard]] ArchMask costed_archs(const Codelet* /*codelet*/, const std::string& /*name*/) const override {
    return ArchMask::all();
  }
  void progress_while_waiting(const std::function<bool()>& /*reached*/,
                              const std::chrono::steady_clock::time_point* /*deadline*/) override {}
  Lending lend_worker_while(WorkerState& worker, const std::function<void()>& block) override;
  void rejoin(WorkerState& worker) override;

 private:
  /// A thread that runs workers' tasks: first its own worker's, later any worker lent to it.
  struct WorkerThread {
    SizedThread thread;
    std::atomic<bool> exited{false};
    WorkerState* lent = nullptr;  // the worker it is to run next (threads_mutex_)
    std::condition_variable wake;
  };
  enum class Left { stopping, handed_back };

  void thread_main(WorkerThread& self, WorkerState* worker);
  /// Runs the worker's tasks until the runtime stops or a thread asks for the worker back.
  Left worker_loop(WorkerState& worker);
  /// Spins (then yields) for a task until the spin time is over; nullptr if none came.
  ext::SchedTask* find_task(WorkerState& worker);
  /// Gives the worker to a thread whose wait is over (asking), or to a parked or new spare
  /// thread.
  Lending hand_over(WorkerState& worker);
  /// Hands the worker back to a thread asking for it; false if none asks.
  static bool hand_back(WorkerState& worker);
  /// Asks for the worker back and waits for it, at most `patience`: false then, no longer asking
  /// (the thread running the worker goes on serving it).
  bool take_back(WorkerState& worker, std::optional<std::chrono::milliseconds> patience);
  // How long a thread whose wait is over waits for its worker back before it goes on without it:
  // long enough for a spare's short task to end (the task then goes on as the worker's, running
  // what it waits for next on its stack), short enough not to matter when the spare's task lasts.
  static constexpr std::chrono::milliseconds kSeatPatience{20};
  /// Waits, parked, for a worker to run; nullptr once the runtime stops.
  WorkerState* park(WorkerThread& self);
  void wake_parked();

  Engine* engine_ = nullptr;
  std::array<IdleWorkers, kArchCount> idle_;
  std::chrono::nanoseconds spin_{};
  std::atomic<bool> stopping_{false};
  std::mutex threads_mutex_;
  std::deque<WorkerThread> threads_;  // one per worker, then the spares
  std::vector<WorkerThread*> parked_;
  // Threads that have left a worker (Left::handed_back) and are not parked yet (threads_mutex_).
  std::size_t parking_ = 0;
  std::condition_variable parked_or_stopping_;
  std::size_t most_threads_ = 0;
};

/// Runs the task on `worker` (this thread): starts it, makes its data valid on the worker's node,
/// runs its body and its companions, and ends it.
void execute(Engine& engine, TaskCore* task, WorkerState& worker);
/// execute for a task started already (Engine::claim).
void run_started(Engine& engine, TaskCore* task, WorkerState& worker);

/// The one-off setup `worker`'s driver reported since it was last asked (0 for CPU workers).
[[nodiscard]] inline double take_setup_seconds(WorkerState& worker) {
  return worker.driver != nullptr ? worker.driver->take_setup_seconds(worker.driver_index) : 0.0;
}

/// Throws if the task's data, all on `node` at once, cannot fit there beside what the tasks
/// waiting below it on this worker (`waiting`, nullptr for none) hold.
void check_fits(const Engine& engine, TaskCore* task, unsigned node, const RunningFrame* waiting);

/// The architectures of `where` with a worker whose memory node can hold all the task's data at
/// once; all of `where` when none can (the task then fails saying why, check_fits). A scheduler
/// that hands a task to any worker of its architectures (eager) would otherwise give it to a
/// device too small for it, where it fails although another worker could run it. Within an
/// architecture, a worker whose node cannot hold it passes it on to one whose node can
/// (Engine::next_task).
[[nodiscard]] ArchMask archs_with_room(const Engine& engine, TaskCore* task, ArchMask where);

/// Whether `task` may run on `worker` above the tasks waiting there: its data fit on the node
/// beside what they hold (they keep it until it ends), and the one waiting is not in the middle
/// of an exchange with the worker's driver (Driver::mid_exchange).
[[nodiscard]] bool may_run_nested(const Engine& engine, TaskCore* task, const WorkerState& worker);

/// Runs `task` on `worker` above the task waiting there (`claimed`: started already, by
/// Engine::claim); its time, and the setup the waiting task reported before it, is counted in
/// `worker.nested_seconds` (see execute).
inline void run_nested(Engine& engine, TaskCore* task, WorkerState& worker, bool claimed = false) {
  const double nested_before = worker.nested_seconds;
  const double waiting_task_setup = take_setup_seconds(worker);
  const double started = engine.now();
  if (claimed) {
    run_started(engine, task, worker);
  } else {
    execute(engine, task, worker);
  }
  // Set, not added: what the nested task's own waits counted is inside its duration.
  worker.nested_seconds = nested_before + waiting_task_setup + (engine.now() - started);
}

/// Runs queued tasks on `worker` while waiting for `done()` (for `awaited`, when it is a task of
/// this engine). A task that may not run above the waiting ones (may_run_nested) is set aside
/// until the wait ends (it runs next), unless `awaited` waits for it: then it runs and fails
/// saying why, rather than nobody ever running it.
template <class Done>
void help_while(Engine& engine, WorkerState& worker, Done done, TaskCore* awaited = nullptr) {
  TaskCore* set_aside = nullptr;
  while (!done()) {
    if (ext::SchedTask* next = engine.next_task(worker)) {
      auto* task = static_cast<TaskCore*>(next);
      if (task == set_aside ||
          (!may_run_nested(engine, task, worker) &&
           !(awaited != nullptr && (awaited == task || waits_for(awaited, task, kDeadlockSearchBudget))))) {
        set_aside = task;
        worker.deferred = task;  // next_task gives it back first: it runs once the wait is over
        std::this_thread::yield();
        continue;
      }
      run_nested(engine, task, worker);
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace hetflow::detail
