#include "sim/simulator.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <new>
#include <thread>

#include "core/runtime_impl.hpp"
#include "core/task_state.hpp"
#include "data/coherence.hpp"
#include "data/memory_node.hpp"
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
  double& free = to == kHostNode ? to_host_free_ : to_device_free_;
  const double start = std::max(earliest, free);
  free = start + simulator_.machine.latency_s + static_cast<double>(bytes) / simulator_.machine.bandwidth_bytes_per_s;
  if (simulator_.recorder != nullptr) simulator_.recorder->transfer(from, to, bytes, start, free);
  return free;
}

std::unique_ptr<ext::Transfer> SimulatedMemory::copy_from_host(void* /*buffer*/, const void* /*host*/,
                                                               std::size_t bytes) {
  const double now = std::max(simulator_.clock.load(std::memory_order_acquire), simulator_.copies_from);
  return std::make_unique<SimulatedTransfer>(simulator_, book_link(kHostNode, node_, bytes, now));
}

void SimulatedMemory::copy_to_host(void* /*host*/, const void* /*buffer*/, std::size_t bytes) {
  // Made by the simulating thread for the task it starts (a write-back, a copy home).
  const double ready = simulator_.clock.load(std::memory_order_acquire) + simulator_.transfer_time;
  simulator_.transfer_time =
      book_link(node_, kHostNode, bytes, ready) - simulator_.clock.load(std::memory_order_acquire);
}

bool SimulatedTransfer::done() { return simulator_.clock.load(std::memory_order_acquire) >= end_; }

Simulator::Simulator(MachineSpec machine_spec, std::string machine_origin)
    : machine(std::move(machine_spec)), origin(std::move(machine_origin)) {
  for (unsigned gpu = 0; gpu < machine.gpus; ++gpu) {
    gpu_memory.push_back(
        std::make_shared<SimulatedMemory>(*this, gpu + 1, "cuda" + std::to_string(gpu), machine.gpu_memory));
  }
}

namespace {

std::string cost_name(const TaskCore& task) {
  if (task.codelet != nullptr && !task.codelet->name.empty()) return task.codelet->name;
  return task.display_name();
}

}  // namespace

std::optional<double> RuntimeImpl::simulated_cost(TaskCore& task, Arch arch) const {
  const std::size_t bytes = footprint(&task);
  if (auto seconds = simulator_->machine.cost(cost_name(task), arch, bytes)) return seconds;
  if (!simulator_->machine.use_stored_models || task.codelet == nullptr) return std::nullopt;
  const auto* model = dynamic_cast<const PerfModel*>(task.codelet->model.get());
  return model != nullptr ? model->expected(arch, bytes) : std::nullopt;
}

ArchMask RuntimeImpl::simulated_archs(const Codelet* codelet, const std::string& name) const {
  // The name cost_name() gives the task once submitted.
  const std::string key = codelet != nullptr && !codelet->name.empty() ? codelet->name : (name.empty() ? "task" : name);
  ArchMask archs;
  for (Arch arch : {Arch::cpu, Arch::cuda}) {
    const bool costed = simulator_->machine.costs.count(key) != 0 && simulator_->machine.costs.at(key).count(arch) != 0;
    const bool modelled = simulator_->machine.use_stored_models && codelet != nullptr && codelet->model != nullptr;
    if (costed || modelled) archs = archs | arch;
  }
  if (archs.empty()) {
    throw InvalidArgument(
        "simulation: " + simulator_->origin + " gives no cost for codelet '" + key +
        "' (add it under \"codelets\", or use \"models\": \"stored\" with a codelet that has a model)");
  }
  return archs;
}

void RuntimeImpl::start_simulated(WorkerState& worker) {
  auto* task = static_cast<TaskCore*>(next_task(worker));
  if (task == nullptr) return;
  if (aborting_.load(std::memory_order_acquire)) transition(task, TaskStatus::ready, TaskStatus::cancelled);
  if (!transition(task, TaskStatus::ready, TaskStatus::running)) {
    finish(task);
    return;
  }
  const unsigned node = worker.info.memory_node;
  simulator_->transfer_time = 0;  // synchronous copies the coherence makes below add to it
  double data_ready = now();      // when the last asynchronous copy the task needs lands
  try {
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
        std::lock_guard guard(handle.coherence_mutex);
        for (const Replica& replica : handle.replicas) {
          if (const auto* copy = dynamic_cast<const SimulatedTransfer*>(replica.pending.get())) {
            data_ready = std::max(data_ready, copy->end());
          }
        }
      }
      complete_fetch(handle, node, accesses[i].mode);
    }
    const std::optional<double> cost = simulated_cost(*task, worker.info.arch);
    if (!cost) {
      throw Error("simulation: no cost for task '" + std::string(task->display_name()) + "' on " +
                  std::string(arch_name(worker.info.arch)));
    }
    const double start = std::max(now() + simulator_->transfer_time, data_ready);
    simulator_->running[worker.info.id] = {task, start, start + *cost};
    if (node != kHostNode) {
      // As a device worker does once its task's data is there (run_body): it takes its next task
      // and starts that one's copies while this one runs.
      simulator_->copies_from = start;
      look_ahead(worker);
      simulator_->copies_from = 0;
    }
  } catch (...) {
    task->error = std::current_exception();
    task->ops->destroy_body(task->storage());
    task->ops = nullptr;
    uncount_pinned(task);
    set_final(task, TaskStatus::failed);
    finish(task);
  }
}

void RuntimeImpl::complete_simulated(unsigned worker) {
  const Simulator::Running run = std::exchange(simulator_->running[worker], {});
  TaskCore* task = run.task;
  simulator_->clock.store(run.end, std::memory_order_release);
  ++simulator_->tasks_run;
  if (recorder_) recorder_->task(worker, task->display_name(), footprint(task), run.start, run.end);
  const bool has_result = task->ops->destroy_result != nullptr;
  task->ops->destroy_body(task->storage());
  task->ops = nullptr;
  uncount_pinned(task);
  if (has_result) {
    task->error = std::make_exception_ptr(
        Error(std::string("simulation: task '") + task->display_name() + "' has no result: task bodies are not run"));
    set_final(task, TaskStatus::failed);
  } else {
    set_final(task, TaskStatus::done);
  }
  finish(task);
}

void RuntimeImpl::simulate_until(const std::function<bool()>& reached) {
  std::lock_guard guard(simulator_->mutex);
  for (;;) {
    if (reached()) return;
    // Again while some worker started a task: a pop may hand a task to a worker already asked.
    for (bool started = true; started;) {
      started = false;
      for (auto& worker : workers_) {
        if (simulator_->running[worker->info.id].task != nullptr) continue;
        start_simulated(*worker);
        started = started || simulator_->running[worker->info.id].task != nullptr;
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
    complete_simulated(static_cast<unsigned>(next));
  }
}

void RuntimeImpl::simulate_while_waiting(const std::function<bool()>& reached,
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
