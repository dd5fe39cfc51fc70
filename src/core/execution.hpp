#pragma once
// How the workers run the tasks the engine hands them. The engine owns the life of a task (ready,
// started, ended); an execution owns the workers: it adds them, and the memory nodes they compute
// in, then runs tasks on them. Threads run bodies (ThreadedExecution, in core); a simulation
// advances virtual time on the threads that wait (src/sim). Only the Runtime facade chooses one.
//
// The engine calls an execution a few times in a runtime's life, and on waits and cost questions
// in a simulation: never once per task on the threaded path, where the calls stay direct.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "hetflow/arch.hpp"
#include "hetflow/codelet.hpp"

namespace hetflow::detail {

class BusModel;
class IdleWorkers;
class Engine;
struct TaskCore;
struct WorkerState;

class Execution {
 public:
  Execution() = default;
  virtual ~Execution() = default;
  Execution(const Execution&) = delete;
  Execution& operator=(const Execution&) = delete;

  /// Adds the workers, and the memory nodes they compute in, to the engine being built.
  virtual void add_workers(Engine& engine) = 0;
  /// Sets what a copy between two of the engine's memory nodes (named `node_names`, host first)
  /// is expected to cost.
  virtual void model_bus(BusModel& bus, const std::vector<std::string>& node_names) = 0;
  /// The engine is complete (scheduler, recorder): tasks may run from now on.
  virtual void start(Engine& engine) = 0;
  /// Ends the workers; no work is left.
  virtual void stop() = 0;
  /// Ends the workers that are free, within a short grace; leaves those stuck in a task running,
  /// detached. Returns how many were left.
  virtual unsigned stop_free_workers() = 0;
  /// The runtime has shut down at `end` seconds (its clock) with the scheduler named.
  virtual void report(const std::string& scheduler_name, double end) const = 0;

  /// The clock of a simulation, in virtual seconds; nullptr when tasks run in real time.
  [[nodiscard]] virtual const std::atomic<double>* virtual_clock() const noexcept { return nullptr; }
  /// Where workers that found nothing to do sleep, one per architecture (kArchCount), for the
  /// engine to wake one when it makes a task ready; nullptr when no worker sleeps.
  [[nodiscard]] virtual IdleWorkers* idle_workers() noexcept { return nullptr; }

  // Asked only under a virtual clock, where the execution, not the models, knows what tasks cost.
  /// What `task` costs on `arch`, if anything says.
  [[nodiscard]] virtual std::optional<double> cost(TaskCore& task, Arch arch) const = 0;
  /// The architectures `codelet` (or a plain task called `name`) has a cost on; throws if none.
  [[nodiscard]] virtual ArchMask costed_archs(const Codelet* codelet, const std::string& name) const = 0;
  /// Runs tasks for a thread that waits until `reached()`, while it can (until the deadline, if any).
  virtual void progress_while_waiting(const std::function<bool()>& reached,
                                      const std::chrono::steady_clock::time_point* deadline) = 0;
  enum class Lending {
    lent,            // the wait is over, and the worker back
    not_lendable,    // a driver's worker, a simulation, a runtime stopping, or no spares at all
    no_thread_left,  // Config::spare_threads are all in use, or the system has no thread to give
  };
  /// For the thread running `worker`'s task, about to wait: runs `block` (which returns once the
  /// wait is over) with the worker lent to another thread meanwhile, and takes it back before
  /// returning, or, if the thread running it does not hand it back soon, returns without it
  /// (SeatlessTask: the calling thread is then no worker's until rejoin). Where the worker cannot
  /// be lent, says why without calling `block`.
  virtual Lending lend_worker_while(WorkerState& /*worker*/, const std::function<void()>& /*block*/) {
    return Lending::not_lendable;
  }
  /// After a task's body returned (or threw) on the calling thread: if it went on without
  /// `worker`, waits for the worker back and becomes its thread again.
  virtual void rejoin(WorkerState& /*worker*/) {}
};

/// Worker threads running task bodies: one per CPU worker, one per driver worker.
std::unique_ptr<Execution> make_threaded_execution();
/// Virtual time on the machine `machine_file` describes (src/sim).
std::unique_ptr<Execution> make_simulated_execution(std::string machine_file);

}  // namespace hetflow::detail
