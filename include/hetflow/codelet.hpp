#pragma once
#include <array>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <typeinfo>

#include "hetflow/arch.hpp"
#include "hetflow/data.hpp"
#include "hetflow/error.hpp"
#include "hetflow/export.hpp"

namespace hetflow {

namespace detail {
struct TaskCore;
struct WorkerState;
}  // namespace detail

/// What an implementation sees while it runs: its buffers on the worker's memory node, its
/// argument, and where it runs.
struct Codelet;

class HETFLOW_API TaskContext {
 public:
  TaskContext(detail::TaskCore* task, detail::WorkerState* worker) noexcept : task_(task), worker_(worker) {}

  [[nodiscard]] std::size_t buffer_count() const noexcept;
  /// The i-th registered buffer the task names, in the order given at submission.
  [[nodiscard]] DataView buffer(std::size_t index) const;
  [[nodiscard]] unsigned worker_id() const noexcept;
  [[nodiscard]] Arch arch() const noexcept;
  [[nodiscard]] unsigned memory_node() const noexcept;
  [[nodiscard]] const char* task_name() const noexcept;
  /// State a driver keeps for this worker (a device context, a process channel...).
  [[nodiscard]] void* driver_state() const noexcept;
  /// The codelet being run, or nullptr for a plain callable.
  [[nodiscard]] const Codelet* codelet() const noexcept;

  /// For drivers that send work in batches (one message for many tasks). Takes up to `max`
  /// more tasks of the same kind as this one (the same body type) that this worker could run
  /// right now, marks them running, and returns how many it took (it may be called again for
  /// more; indices continue). Each must then be completed
  /// with finish_companion(i, error); a companion not finished when this task's body returns
  /// fails. companion_storage(i) is its body (Bound<F> for Runtime::submit(fn) tasks, see
  /// detail/body.hpp), which the caller destroys, leaving the result there on success.
  std::size_t take_companions(std::size_t max);
  [[nodiscard]] void* companion_storage(std::size_t index) const;
  [[nodiscard]] const char* companion_name(std::size_t index) const;
  void finish_companion(std::size_t index, std::exception_ptr error);
  /// Says that this task's own part of its batch is done (its result came first): the trace
  /// and the statistics give it the time so far, and each companion the time from the end of
  /// what came before it to its finish_companion. Unsaid, the task has the whole body's time.
  void own_part_done() noexcept;

  /// The argument given to Runtime::insert; throws InvalidArgument if T is not its type.
  template <class T>
  [[nodiscard]] T& arg() const {
    return *static_cast<T*>(arg_storage(typeid(T)));
  }

 private:
  void* arg_storage(const std::type_info& type) const;
  detail::TaskCore* task_;
  detail::WorkerState* worker_;
};

/// Per-task hook for performance models: called with the measured time of each run, after the
/// task's body succeeded. An exception from `record` does not fail the task: it is reported on
/// stderr (once per process).
class HETFLOW_API PerfModelHook {
 public:
  virtual ~PerfModelHook() = default;
  virtual void record(Arch arch, std::size_t footprint, double seconds) = 0;
};

/// A named function with one implementation per architecture, run over registered data.
/// A codelet must outlive the tasks inserted with it.
struct Codelet {
  using Implementation = std::function<void(TaskContext&)>;

  std::string name{};
  Implementation cpu{};
  Implementation cuda{};
  Implementation opencl{};
  Implementation process{};
  std::shared_ptr<PerfModelHook> model{};

  [[nodiscard]] const Implementation& implementation(Arch arch) const noexcept {
    switch (arch) {
      case Arch::cpu: return cpu;
      case Arch::cuda: return cuda;
      case Arch::opencl: return opencl;
      case Arch::process: return process;
    }
    return cpu;
  }
  /// The architectures this codelet has an implementation for.
  [[nodiscard]] ArchMask archs() const noexcept {
    ArchMask mask;
    for (Arch arch : {Arch::cpu, Arch::cuda, Arch::opencl, Arch::process}) {
      if (implementation(arch)) mask = mask | arch;
    }
    return mask;
  }
};

}  // namespace hetflow
