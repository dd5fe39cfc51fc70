#pragma once
// Virtual-time execution (Config::simulate): the real engine and scheduler run over the virtual
// workers and memory nodes of a MachineSpec, on the threads that wait for results, one event at
// a time, so that a run is deterministic. Task bodies are not run: a task takes what the
// machine says its codelet costs on the worker's architecture, plus the time to move its data.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/execution.hpp"
#include "data/node_memory.hpp"
#include "hetflow/ext/memory_node.hpp"
#include "sim/machine.hpp"

namespace hetflow::detail {

struct TaskCore;
class Recorder;
struct Simulator;
struct WorkerState;

/// A copy in virtual time: it ends at `end` seconds.
class SimulatedTransfer final : public ext::Transfer {
 public:
  SimulatedTransfer(const Simulator& simulator, double end) : simulator_(simulator), end_(end) {}
  void wait() override {}  // the simulator starts the task that needs it at `end` at the earliest
  [[nodiscard]] bool done() override;
  [[nodiscard]] double end() const noexcept { return end_; }

 private:
  const Simulator& simulator_;
  const double end_;
};

/// A device's memory in a simulation (a GPU's, an OpenCL device's): it counts bytes, and its
/// copies take virtual time on the device's link, one after another in each direction (a PCIe
/// link is full duplex): asynchronous ones end later (SimulatedTransfer), synchronous ones delay
/// the task being started. A device without a copy engine (`copies_use_compute`) does one thing
/// at a time, a copy either way or a kernel, in the order they come.
class SimulatedMemory final : public ext::MemoryNode, public ChainedCopies {
 public:
  SimulatedMemory(Simulator& simulator, unsigned node, std::string name, std::size_t capacity,
                  MachineSpec::DeviceLinks links, bool copies_use_compute)
      : simulator_(simulator),
        node_(node),
        name_(std::move(name)),
        capacity_(capacity),
        links_(links),
        copies_use_compute_(copies_use_compute) {}
  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] std::size_t capacity() const noexcept override { return capacity_; }
  [[nodiscard]] void* allocate(std::size_t bytes) override;
  void free(void* buffer, std::size_t bytes) noexcept override;
  [[nodiscard]] std::unique_ptr<ext::Transfer> copy_from_host(void* buffer, const void* host,
                                                              std::size_t bytes) override;
  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override;
  [[nodiscard]] std::unique_ptr<ext::Transfer> start_copy_to_host(void* host, const void* buffer,
                                                                  std::size_t bytes) override;
  [[nodiscard]] std::unique_ptr<ext::Transfer> copy_from_host_after(void* buffer, std::size_t bytes,
                                                                    std::shared_ptr<StagedCopy> source) override;
  [[nodiscard]] const MachineSpec::DeviceLinks& links() const noexcept { return links_; }
  /// Books the device for a kernel whose data is there at `ready` and that takes `seconds`;
  /// returns its start: `ready`, or later on a device whose compute units are still making the
  /// copies booked before it.
  double book_kernel(double ready, double seconds);

 private:
  /// Books the link for a copy that may start at `earliest`; returns its end.
  double book_link(unsigned from, unsigned to, std::size_t bytes, double earliest);

  Simulator& simulator_;
  const unsigned node_;
  const std::string name_;
  const std::size_t capacity_;
  const MachineSpec::DeviceLinks links_;
  const bool copies_use_compute_;
  std::mutex mutex_;
  double to_device_free_ = 0;  // when the link finishes the copies booked so far, each way
  double to_host_free_ = 0;
  double device_free_ = 0;  // copies_use_compute_: when the copies and kernels booked so far end
};

struct Simulator {
  Simulator(MachineSpec machine_spec, std::string origin);

  const MachineSpec machine;
  const std::string origin;  // the machine file, for messages
  // The GPUs' nodes then the OpenCL devices': device_memory[i] is memory node i + 1.
  std::vector<std::shared_ptr<SimulatedMemory>> device_memory;
  Recorder* recorder = nullptr;

  struct Running {
    TaskCore* task = nullptr;
    double start = 0;
    double end = 0;
  };
  std::mutex mutex;                    // one thread advances virtual time at a time
  std::vector<Running> running;        // per worker
  std::vector<std::size_t> pop_order;  // the workers in the order they pop, after each event
  std::atomic<double> clock{0};        // seconds of virtual time
  double transfer_time = 0;            // synchronous copies made for the task being started, so far
  double copies_from = 0;              // asynchronous copies start no earlier (a device worker's look-ahead)
  std::size_t tasks_run = 0;
  // The end of the synchronous copies home that application threads made (an acquisition on the
  // host, an unregistration: the final write-back): those threads waited for them, so virtual
  // time reaches their end once no task ends before it.
  std::atomic<double> application_until{0};

  /// A copy an application thread waited for ends at `end`: virtual time moves on to it now if
  /// no thread is simulating, else at that thread's next event (catch_up).
  void application_waited_until(double end);
  /// With `mutex` held: virtual time moves to application_until when no running task ends before.
  void catch_up();
};

/// The workers and memory nodes of the machine `machine_file` describes, run in virtual time by
/// the threads that wait for results (progress_while_waiting).
class SimulatedExecution final : public Execution {
 public:
  explicit SimulatedExecution(std::string machine_file) : machine_file_(std::move(machine_file)) {}
  void add_workers(Engine& engine) override;
  void model_bus(BusModel& bus, const std::vector<std::string>& node_names) override;
  void start(Engine& engine) override;
  /// Virtual time reaches the end of the copies the application waited for (the final write-back).
  void stop() override;
  unsigned stop_free_workers() override { return 0; }  // no threads of its own
  void report(const std::string& scheduler_name, double end) const override;
  [[nodiscard]] const std::atomic<double>* virtual_clock() const noexcept override { return &simulator_->clock; }
  /// The longest task a simulation runs: virtual time stays finite (costs of 1e308 s overflowed
  /// it to inf, then NaN).
  static constexpr double kLongestTask = 1e9;
  /// At most kLongestTask.
  [[nodiscard]] std::optional<double> cost(TaskCore& task, Arch arch) const override;
  [[nodiscard]] ArchMask costed_archs(const Codelet* codelet, const std::string& name) const override;
  void progress_while_waiting(const std::function<bool()>& reached,
                              const std::chrono::steady_clock::time_point* deadline) override;

 private:
  /// The task's cost from the machine file or its model, however long.
  [[nodiscard]] std::optional<double> unbounded_cost(TaskCore& task, Arch arch) const;
  /// Advances virtual time until `reached()` or until nothing can run without the application.
  void simulate_until(const std::function<bool()>& reached);
  /// Gives the idle `worker` its next task, if there is one, starting at the earliest virtual time it can.
  void start_task(WorkerState& worker);
  /// Ends the task `worker` runs: virtual time moves to its end.
  void complete_task(unsigned worker);

  const std::string machine_file_;
  Engine* engine_ = nullptr;
  // Made with the workers: the machine file is read after the engine made its scheduler.
  std::unique_ptr<Simulator> simulator_;
};

}  // namespace hetflow::detail
