#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hetflow/export.hpp"

namespace hetflow {

namespace ext {
class Driver;
}

/// How a Runtime is set up. Fields left empty come from the environment, then from defaults:
/// code wins over the environment, the environment over defaults.
///
/// | field         | environment        | default                                          |
/// |---------------|--------------------|--------------------------------------------------|
/// | ncpus         | HETFLOW_NCPUS      | the number of CPUs this process may run on       |
/// | scheduler     | HETFLOW_SCHED      | "ws"; "dmdas" with CUDA/OpenCL workers or simulate |
/// | pin_workers   | HETFLOW_PIN (0/1)  | false                                            |
/// | spin_us       | HETFLOW_SPIN_US    | 50: how long an idle worker polls before sleeping |
/// | trace_path    | HETFLOW_TRACE      | none: where to write a Chrome trace at shutdown   |
/// | stats         | HETFLOW_STATS (0/1)| false: print worker and transfer statistics at shutdown |
/// | simulate      | HETFLOW_SIMULATE   | none: a machine description (JSON) to simulate    |
/// | memory_limits | HETFLOW_MEMORY_LIMITS | none: bytes per memory node, "1:64M,2:1G"     |
/// | spare_threads | HETFLOW_SPARE_THREADS | 4096: threads that may stand in for workers whose task waits |
/// | worker_stack_bytes | HETFLOW_WORKER_STACK | 0: the system's default stack for the threads that run CPU tasks |
struct HETFLOW_API Config {
  std::optional<unsigned> ncpus;
  std::optional<std::string> scheduler;
  std::optional<bool> pin_workers;
  std::optional<unsigned> spin_us;
  /// A Chrome trace (JSON, opens in Perfetto) written there at shutdown; empty: none.
  std::optional<std::string> trace_path;
  /// Print per-worker and per-transfer statistics on stderr at shutdown.
  std::optional<bool> stats;
  /// Run in virtual time over the machine described in this JSON file (docs/simulation.md):
  /// workers and memory nodes are virtual, task bodies are not run.
  std::optional<std::string> simulate;
  /// The most bytes the engine keeps on each listed memory node (node 0, host RAM, cannot be
  /// limited). Beyond it, least-recently-used replicas are evicted.
  std::map<unsigned, std::size_t> memory_limits;
  /// The most threads, beyond one per worker, that run a worker's tasks while the task on its
  /// own thread waits for a future (0 to 65536). Once they are all in use, such a wait fails
  /// (a wait with a deadline waits without one). 0: a waiting worker runs other tasks on top of
  /// the waiting one, on its stack, which hangs if one of them waits for a task that needs the
  /// one below to end.
  std::optional<unsigned> spare_threads;
  /// The stack size of the threads that run CPU tasks (the workers' and the spare ones): 0 for
  /// the system's default (the stack limit, usually 8 MiB), else 64 KiB to 16 GiB. Deep
  /// recursion in tasks needs more (Python's hetflow.init takes threading.stack_size()).
  std::optional<std::size_t> worker_stack_bytes;
  /// Extra kinds of workers (each driver brings its own), beside the CPU workers. A driver object
  /// serves one live runtime, once: InvalidArgument for one listed twice or still serving another.
  std::vector<std::shared_ptr<ext::Driver>> drivers;

  /// The configuration with every empty field filled from the environment and defaults.
  /// Throws InvalidArgument for malformed environment values.
  [[nodiscard]] Config resolved() const;
  /// resolved(), HETFLOW_CALIBRATE, then the machine description named by `simulate`, if any,
  /// read and checked as a Runtime would read it: InvalidArgument naming what is wrong. Starts
  /// nothing.
  void check() const;
};

}  // namespace hetflow
