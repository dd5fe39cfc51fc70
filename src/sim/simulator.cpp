#include "sim/simulator.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <new>
#include <thread>
#include <utility>

#include "core/engine.hpp"
#include "core/task_state.hpp"
#include "core/threaded_execution.hpp"
#include "data/coherence.hpp"
#include "hetflow/error.hpp"
#include "hetflow/perfmodel.hpp"
#include "trace/recorder.hpp"

namespace hetflow::detail {

void* SimulatedMemory::allocate(std::size_t /*bytes*/) {
  // Distinct, never dereferenced addresses: task bodies do not run in a simulation.
  return ::operator new(1);
}

void SimulatedMemory::free(void* buffer, std::size_t /*bytes*/) noexcept { ::operator delete(buffer); }

double SimulatedMemory::book_link(unsigned from, unsigned to, std::size_t bytes, double earliest) {
  std::lock_guard guard(mutex_);
  double& free = copies_use_compute_ ? device_free_ : to == kHostNode ? to_host_free_ : to_device_free_;
  const double start = std::max(earliest, free);
  free = start + (to == kHostNode ? links_.to_host : links_.to_device).seconds(bytes);
  if (simulator_.recorder != nullptr) simulator_.recorder->transfer(from, to, bytes, start, free);
  return free;
}

double SimulatedMemory::book_kernel(double ready, double seconds) {
  if (!copies_use_compute_) return ready;
  std::lock_guard guard(mutex_);
  const double start = std::max(ready, device_free_);
  device_free_ = start + seconds;
  return start;
}

std::unique_ptr<ext::Transfer> SimulatedMemory::copy_from_host(void* /*buffer*/, const void* /*host*/,
                                                               std::size_t bytes) {
  // After the synchronous copies the task being started made already: a tile that only another
  // device holds comes home from there first.
  const double now =
      std::max(simulator_.clock.load(std::memory_order_acquire) + simulator_.transfer_time, simulator_.copies_from);
  return std::make_unique<SimulatedTransfer>(simulator_, book_link(kHostNode, node_, bytes, now));
}

namespace {

// The simulator whose virtual time this thread is advancing (simulate_until), if any.
thread_local const Simulator* t_simulating = nullptr;

}  // namespace

void Simulator::application_waited_until(double end) {
  double seen = application_until.load(std::memory_order_acquire);
  while (seen < end && !application_until.compare_exchange_weak(seen, end, std::memory_order_acq_rel)) {
  }
  // Never blocks: the thread simulating may wait for a lock this thread holds (a handle's).
  std::unique_lock lock(mutex, std::try_to_lock);
  if (lock.owns_lock()) catch_up();
}

void Simulator::catch_up() {
  const double until = application_until.load(std::memory_order_acquire);
  if (!(until > clock.load(std::memory_order_acquire))) return;
  for (const Running& run : running) {
    if (run.task != nullptr && run.end < until) return;  // that end comes first
  }
  clock.store(until, std::memory_order_release);
}

void SimulatedMemory::copy_to_host(void* /*host*/, const void* /*buffer*/, std::size_t bytes) {
  if (t_simulating != &simulator_) {
    // An application thread's (an acquisition on the host, an unregistration at shutdown: the
    // final write-back), which waits for it: the makespan ended at the last kernel without it.
    const double ready = simulator_.clock.load(std::memory_order_acquire);
    simulator_.application_waited_until(book_link(node_, kHostNode, bytes, ready));
    return;
  }
  // Made by the simulating thread for the task it starts (a write-back, a copy home).
  const double ready = simulator_.clock.load(std::memory_order_acquire) + simulator_.transfer_time;
  simulator_.transfer_time =
      book_link(node_, kHostNode, bytes, ready) - simulator_.clock.load(std::memory_order_acquire);
}

std::unique_ptr<ext::Transfer> SimulatedMemory::start_copy_to_host(void* /*host*/, const void* /*buffer*/,
                                                                   std::size_t bytes) {
  const double now = std::max(simulator_.clock.load(std::memory_order_acquire), simulator_.copies_from);
  return std::make_unique<SimulatedTransfer>(simulator_, book_link(node_, kHostNode, bytes, now));
}

std::unique_ptr<ext::Transfer> SimulatedMemory::copy_from_host_after(void* /*buffer*/, std::size_t bytes,
                                                                     std::shared_ptr<StagedCopy> source) {
  double earliest = std::max(simulator_.clock.load(std::memory_order_acquire), simulator_.copies_from);
  const auto* leg = dynamic_cast<const SimulatedTransfer*>(source->copy());
  if (leg != nullptr) earliest = std::max(earliest, leg->end());
  return std::make_unique<SimulatedTransfer>(simulator_, book_link(kHostNode, node_, bytes, earliest));
}

bool SimulatedTransfer::done() { return simulator_.clock.load(std::memory_order_acquire) >= end_; }

Simulator::Simulator(MachineSpec machine_spec, std::string machine_origin)
    : machine(std::move(machine_spec)), origin(std::move(machine_origin)) {
  // Where a real run keeps its bus model (ThreadedExecution::model_bus), for "link": "stored".
  const std::filesystem::path home = PerfModelRegistry::instance().directory().parent_path();
  const std::vector<std::string> names = machine.device_node_names();
  for (unsigned device = 0; device < names.size(); ++device) {
    const bool gpu = device < machine.gpus;
    device_memory.push_back(std::make_shared<SimulatedMemory>(
        *this, device + 1, names[device], gpu ? machine.gpu_memory : machine.opencl_memory,
        machine.device_links(names[device], home, origin), !gpu && !machine.opencl_copy_engine));
  }
}

namespace {

std::string cost_name(const TaskCore& task) {
  if (task.codelet != nullptr && !task.codelet->name.empty()) return task.codelet->name;
  return task.display_name();
}

}  // namespace

std::unique_ptr<Execution> make_simulated_execution(std::string machine_file) {
  return std::make_unique<SimulatedExecution>(std::move(machine_file));
}

void SimulatedExecution::add_workers(Engine& engine) {
  engine_ = &engine;
  simulator_ = std::make_unique<Simulator>(MachineSpec::load(machine_file_), machine_file_);
  const MachineSpec& machine = simulator_->machine;
  for (unsigned cpu = 0; cpu < machine.cpus; ++cpu) engine.add_worker(Arch::cpu, kHostNode);
  for (unsigned device = 0; device < simulator_->device_memory.size(); ++device) {
    const unsigned node = engine.add_memory_node(simulator_->device_memory[device]);
    engine.add_worker(device < machine.gpus ? Arch::cuda : Arch::opencl, node);
  }
  simulator_->running.resize(engine.workers().size());
}

void SimulatedExecution::model_bus(BusModel& bus, const std::vector<std::string>& node_names) {
  for (unsigned node = 1; node < node_names.size(); ++node) {
    const MachineSpec::DeviceLinks& links = simulator_->device_memory[node - 1]->links();
    bus.set(kHostNode, node, links.to_device.bandwidth_bytes_per_s, links.to_device.latency_s);
    bus.set(node, kHostNode, links.to_host.bandwidth_bytes_per_s, links.to_host.latency_s);
  }
}

void SimulatedExecution::start(Engine& engine) { simulator_->recorder = engine.recorder(); }

void SimulatedExecution::stop() {
  if (simulator_ == nullptr) return;  // the machine file was refused
  std::lock_guard guard(simulator_->mutex);
  simulator_->catch_up();
}

void SimulatedExecution::report(const std::string& scheduler_name, double end) const {
  const std::string& machine = simulator_->machine.name.empty() ? simulator_->origin : simulator_->machine.name;
  std::fprintf(stderr, "hetflow: simulated %zu tasks on %s with %s: makespan %.6f s\n", simulator_->tasks_run,
               machine.c_str(), scheduler_name.c_str(), end);
}

std::optional<double> SimulatedExecution::cost(TaskCore& task, Arch arch) const {
  // What the schedulers weigh stays finite: a task too long to simulate fails when it starts.
  std::optional<double> seconds = unbounded_cost(task, arch);
  if (seconds && !(*seconds <= kLongestTask)) seconds = kLongestTask;
  return seconds;
}

std::optional<double> SimulatedExecution::unbounded_cost(TaskCore& task, Arch arch) const {
  const std::size_t bytes = footprint(&task);
  if (auto seconds = simulator_->machine.cost(cost_name(task), arch, bytes)) return seconds;
  if (task.codelet == nullptr) return 0.0;  // a plain callable the machine gives no cost: bookkeeping
  if (!simulator_->machine.use_stored_models) return std::nullopt;
  const auto* model = dynamic_cast<const PerfModel*>(task.codelet->model.get());
  return model != nullptr ? model->expected(arch, bytes) : std::nullopt;
}

ArchMask SimulatedExecution::costed_archs(const Codelet* codelet, const std::string& name) const {
  // The name cost_name() gives the task once submitted.
  const std::string key = codelet != nullptr && !codelet->name.empty() ? codelet->name : (name.empty() ? "task" : name);
  ArchMask archs;
  for (Arch arch : {Arch::cpu, Arch::cuda, Arch::opencl}) {
    const bool costed = simulator_->machine.costs.count(key) != 0 && simulator_->machine.costs.at(key).count(arch) != 0;
    const bool modelled = simulator_->machine.use_stored_models && codelet != nullptr && codelet->model != nullptr;
    if (costed || modelled) archs = archs | arch;
  }
  if (archs.empty() && codelet == nullptr) {
    // when_all, when_any, bookkeeping: no time on a CPU worker, or, on a machine without one, on
    // a device (its body never runs), rather than refused for want of a worker.
    const MachineSpec& machine = simulator_->machine;
    if (machine.cpus > 0) return ArchMask(Arch::cpu);
    ArchMask devices;
    if (machine.gpus > 0) devices = devices | Arch::cuda;
    if (machine.opencl > 0) devices = devices | Arch::opencl;
    return devices;
  }
  if (archs.empty()) {
    throw InvalidArgument(
        "simulation: " + simulator_->origin + " gives no cost for codelet '" + key +
        "' (add it under \"codelets\", or use \"models\": \"stored\" with a codelet that has a model)");
  }
  return archs;
}

void SimulatedExecution::start_task(WorkerState& worker) {
  auto* task = static_cast<TaskCore*>(engine_->next_task(worker));
  if (task == nullptr || !engine_->begin(task)) return;
  const unsigned node = worker.info.memory_node;
  simulator_->transfer_time = 0;       // synchronous copies the coherence makes below add to it
  double data_ready = engine_->now();  // when the last asynchronous copy the task needs lands
  try {
    if (node != kHostNode) check_fits(*engine_, task, node, nullptr);  // as a real worker does
    AccessRecord* accesses = task->accesses();
    for (std::size_t i = 0; i < task->access_count; ++i) {
      HandleImpl& handle = *accesses[i].handle;
      fetch(handle, node, reads(accesses[i].mode));
      struct Unpin {
        HandleImpl& handle;
        unsigned node;
        ~Unpin() { unpin(handle, node); }
      } unpin_after{handle, node};
      if (handle.replicas.size() > 1) {
        // What complete_fetch waits for on threads: the copy to this node, and for a writer
        // every copy in flight (they read or fill buffers it is about to make stale).
        const bool writer = writes(accesses[i].mode);
        std::lock_guard guard(handle.coherence_mutex);
        for (unsigned replica = 0; replica < handle.replicas.size(); ++replica) {
          if (!writer && replica != node) continue;
          const auto* copy = dynamic_cast<const SimulatedTransfer*>(handle.replicas[replica].pending.get());
          if (copy != nullptr) data_ready = std::max(data_ready, copy->end());
        }
      }
      complete_fetch(handle, node, accesses[i].mode);
    }
    const std::optional<double> seconds = unbounded_cost(*task, worker.info.arch);
    if (!seconds) {
      throw Error("simulation: no cost for task '" + std::string(task->display_name()) + "' on " +
                  std::string(arch_name(worker.info.arch)));
    }
    if (!(*seconds <= kLongestTask)) {
      throw Error("simulation: task '" + std::string(task->display_name()) + "' would take " +
                  std::to_string(*seconds) + " s on " + std::string(arch_name(worker.info.arch)) + " (its cost for " +
                  std::to_string(footprint(task)) + " bytes), more than the " + std::to_string(kLongestTask) +
                  " s a simulation counts in");
    }
    double start = std::max(engine_->now() + simulator_->transfer_time, data_ready);
    simulator_->transfer_time = 0;  // what the copies started from here on wait for is copies_from
    if (node != kHostNode) start = simulator_->device_memory[node - 1]->book_kernel(start, *seconds);
    simulator_->running[worker.info.id] = {task, start, start + *seconds};
    if (node != kHostNode) {
      // As a device worker does once its task's data is there (run_body): it takes its next task
      // and starts that one's copies while this one runs.
      simulator_->copies_from = start;
      engine_->look_ahead(worker);
      simulator_->copies_from = 0;
      simulator_->transfer_time = 0;
    }
  } catch (...) {
    simulator_->transfer_time = 0;
    task->ops->destroy_body(task->storage());
    engine_->conclude(task, std::current_exception());
  }
}

void SimulatedExecution::complete_task(unsigned worker) {
  const Simulator::Running run = std::exchange(simulator_->running[worker], {});
  TaskCore* task = run.task;
  simulator_->clock.store(run.end, std::memory_order_release);
  simulator_->transfer_time = 0;  // no task is being started: a copy made now starts now
  ++simulator_->tasks_run;
  if (simulator_->recorder != nullptr) {
    simulator_->recorder->task(worker, task->display_name(), footprint(task), run.start, run.end);
  }
  const bool has_result = task->ops->destroy_result != nullptr;
  task->ops->destroy_body(task->storage());
  task->ops = nullptr;
  engine_->conclude(task, has_result
                              ? std::make_exception_ptr(Error(std::string("simulation: task '") + task->display_name() +
                                                              "' has no result: task bodies are not run"))
                              : nullptr);
}

void SimulatedExecution::simulate_until(const std::function<bool()>& reached) {
  std::lock_guard guard(simulator_->mutex);
  struct Simulating {
    const Simulator* previous;
    ~Simulating() { t_simulating = previous; }
  } simulating{std::exchange(t_simulating, simulator_.get())};
  const auto& workers = engine_->workers();
  int ended = -1;  // the worker whose task ended last
  for (;;) {
    simulator_->catch_up();  // tasks the application submitted after a copy it waited for start after it
    if (reached()) return;
    // The idle workers pop in worker order, the one whose task just ended last: as on threads,
    // where that worker first pushes the dependents its task released, each push waking an idle
    // worker that takes the task at once, and looks for its next task after the last push. A
    // device worker that took its next task ahead (look-ahead) has nothing to look for: it
    // starts that task first, and its kernel is queued before the copies of those it woke.
    // Again while some worker started a task: a pop may hand a task to a worker already asked.
    std::vector<std::size_t>& order = simulator_->pop_order;
    order.clear();
    const bool ended_goes_first = ended >= 0 && workers[static_cast<std::size_t>(ended)]->deferred != nullptr;
    if (ended_goes_first) order.push_back(static_cast<std::size_t>(ended));
    for (std::size_t index = 0; index < workers.size(); ++index) {
      if (static_cast<int>(index) != ended) order.push_back(index);
    }
    if (ended >= 0 && !ended_goes_first) order.push_back(static_cast<std::size_t>(ended));
    for (bool started = true; started;) {
      started = false;
      for (std::size_t index : order) {
        WorkerState& worker = *workers[index];
        if (simulator_->running[worker.info.id].task != nullptr) continue;
        start_task(worker);
        started = started || simulator_->running[worker.info.id].task != nullptr;
      }
      // A worker whose node cannot hold a task it popped passes it on to another one
      // (Engine::next_task), which may have been asked already.
      for (std::size_t index = 0; index < workers.size() && !started; ++index) {
        started =
            simulator_->running[index].task == nullptr && engine_->has_pinned_queued(static_cast<unsigned>(index));
      }
    }
    // The next event: the earliest end, the lowest worker number among equals.
    int next = -1;
    for (unsigned w = 0; w < simulator_->running.size(); ++w) {
      const auto& run = simulator_->running[w];
      if (run.task != nullptr && (next < 0 || run.end < simulator_->running[static_cast<unsigned>(next)].end)) {
        next = static_cast<int>(w);
      }
    }
    if (next < 0) return;  // nothing can run until another thread acts (a release, a submission)
    complete_task(static_cast<unsigned>(next));
    ended = next;
  }
}

void SimulatedExecution::progress_while_waiting(const std::function<bool()>& reached,
                                                const std::chrono::steady_clock::time_point* deadline) {
  for (;;) {
    simulate_until(reached);
    if (reached()) return;
    if (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline) return;
    // Blocked on the application (an acquisition held by another thread): look again shortly.
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

}  // namespace hetflow::detail
