#pragma once
// The driver contract: a driver brings one kind of worker (a GPU, an OpenCL device, a Python
// interpreter process...). Each worker is a host thread that runs the engine's worker loop; the
// driver prepares that thread and keeps per-worker state that implementations reach through
// TaskContext::driver_state(). A driver for a device with its own memory gives each worker a
// memory node (ext/memory_node.hpp); the engine then moves data there before each task.
#include <memory>
#include <string_view>

#include "hetflow/arch.hpp"
#include "hetflow/export.hpp"
#include "hetflow/ext/memory_node.hpp"

namespace hetflow::ext {

class HETFLOW_API Driver {
 public:
  virtual ~Driver() = default;
  [[nodiscard]] virtual std::string_view name() const = 0;
  [[nodiscard]] virtual Arch arch() const = 0;
  [[nodiscard]] virtual unsigned worker_count() const = 0;
  /// The memory node worker `index` computes in, or nullptr for host RAM. Called once per worker
  /// when the runtime starts; workers that return the same node share it.
  [[nodiscard]] virtual std::shared_ptr<MemoryNode> memory_node(unsigned /*index*/) { return nullptr; }
  /// On the worker's own thread, before its first task.
  virtual void start_worker(unsigned /*index*/) {}
  /// On the worker's own thread, after an implementation returned and before the task counts
  /// as done: wait here for what the implementation queued (kernels on a stream). Throwing
  /// fails the task.
  virtual void finish_task(unsigned /*index*/) {}
  /// On the worker's own thread, after an implementation returned or threw (before finish_task),
  /// and before a task waiting for a future runs another task on the worker: how many seconds
  /// went to one-off preparation (building a program, creating a library handle) since the last
  /// call, then forgotten. The performance model does not learn them: the next run of the task
  /// will not pay them.
  [[nodiscard]] virtual double take_setup_seconds(unsigned /*index*/) { return 0; }
  /// On the worker's own thread, when it runs out of tasks (before it looks for more or sleeps):
  /// the place to give back what it held on to between tasks (a lock, an interpreter).
  virtual void worker_idle(unsigned /*index*/) {}
  /// On the worker's own thread, after its last task.
  virtual void stop_worker(unsigned /*index*/) {}
  [[nodiscard]] virtual void* worker_state(unsigned /*index*/) { return nullptr; }
  /// On the worker's own thread: whether the task running there is in the middle of an exchange
  /// that another task run meanwhile on this worker (while it waits for a future) would break
  /// into (a process worker's request sent, its reply not read yet). Such a task is not run then.
  [[nodiscard]] virtual bool mid_exchange(unsigned /*index*/) const { return false; }
  /// Whether another thread may run worker `index`'s tasks while the task on the worker's thread
  /// waits for a future: the waiting thread then blocks, a spare thread stands in for it, and it
  /// takes the worker back between two of the spare's tasks once its wait is over. Only for
  /// drivers that keep no state on the worker's thread; worker_idle is then called on each thread
  /// that leaves the worker, and stop_worker on each that leaves it at the end.
  [[nodiscard]] virtual bool spare_threads_may_run(unsigned /*index*/) const { return false; }
  /// Called from any thread when the runtime gives up on its work (Runtime::abort): stop what
  /// the workers run if that is possible.
  virtual void abort() {}
};

}  // namespace hetflow::ext
