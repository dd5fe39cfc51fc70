#pragma once
// Tasks run by threads: one per worker, each taking tasks from the engine (its pinned ones, then
// the scheduler's), spinning a while when there are none, then sleeping until one is made ready.
// A worker waiting inside a task for a future runs other tasks meanwhile (help_while).
#include <array>
#include <atomic>
#include <chrono>
#include <thread>

#include "core/engine.hpp"
#include "core/execution.hpp"
#include "core/idle_workers.hpp"
#include "core/worker.hpp"

namespace hetflow::detail {

class ThreadedExecution final : public Execution {
 public:
  void add_workers(Engine& engine) override;
  void model_bus(BusModel& bus, std::size_t node_count) override;
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

 private:
  void worker_loop(WorkerState& worker);
  /// Spins (then yields) for a task until the spin time is over; nullptr if none came.
  ext::SchedTask* find_task(WorkerState& worker);

  Engine* engine_ = nullptr;
  std::array<IdleWorkers, kArchCount> idle_;
  std::chrono::nanoseconds spin_{};
  std::atomic<bool> stopping_{false};
};

/// Runs the task on `worker` (this thread): starts it, makes its data valid on the worker's node,
/// runs its body and its companions, and ends it.
void execute(Engine& engine, TaskCore* task, WorkerState& worker);

/// The one-off setup `worker`'s driver reported since it was last asked (0 for CPU workers).
[[nodiscard]] inline double take_setup_seconds(WorkerState& worker) {
  return worker.driver != nullptr ? worker.driver->take_setup_seconds(worker.driver_index) : 0.0;
}

/// Runs queued tasks on `worker` while waiting for `done()`; their time, and the setup the
/// waiting task reported before them, is counted in `worker.nested_seconds` (see execute).
template <class Done>
void help_while(Engine& engine, WorkerState& worker, Done done) {
  while (!done()) {
    if (ext::SchedTask* task = engine.next_task(worker)) {
      const double nested_before = worker.nested_seconds;
      const double waiting_task_setup = take_setup_seconds(worker);
      const double started = engine.now();
      execute(engine, static_cast<TaskCore*>(task), worker);
      // Set, not added: what the nested task's own waits counted is inside its duration.
      worker.nested_seconds = nested_before + waiting_task_setup + (engine.now() - started);
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace hetflow::detail
