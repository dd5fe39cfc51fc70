#pragma once
// The driver contract: a driver brings one kind of worker (a GPU, an OpenCL device, a Python
// interpreter process...). Each worker is a host thread that runs the engine's worker loop; the
// driver prepares that thread and keeps per-worker state that implementations reach through
// TaskContext::driver_state().
#include <string_view>

#include "hetflow/arch.hpp"

namespace hetflow::ext {

class Driver {
 public:
  virtual ~Driver() = default;
  [[nodiscard]] virtual std::string_view name() const = 0;
  [[nodiscard]] virtual Arch arch() const = 0;
  [[nodiscard]] virtual unsigned worker_count() const = 0;
  /// On the worker's own thread, before its first task.
  virtual void start_worker(unsigned /*index*/) {}
  /// On the worker's own thread, when it runs out of tasks (before it looks for more or sleeps):
  /// the place to give back what it held on to between tasks (a lock, an interpreter).
  virtual void worker_idle(unsigned /*index*/) {}
  /// On the worker's own thread, after its last task.
  virtual void stop_worker(unsigned /*index*/) {}
  [[nodiscard]] virtual void* worker_state(unsigned /*index*/) { return nullptr; }
  /// Called from any thread when the runtime gives up on its work (Runtime::abort): stop what
  /// the workers run if that is possible.
  virtual void abort() {}
};

}  // namespace hetflow::ext
