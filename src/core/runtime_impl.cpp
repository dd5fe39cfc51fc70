#include "core/runtime_impl.hpp"

#include <cxxabi.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/dependencies.hpp"
#include "core/task_pool.hpp"
#include "core/task_state.hpp"
#include "data/coherence.hpp"
#include "drivers/cpu/topology.hpp"
#include "hetflow/error.hpp"
#include "hetflow/future.hpp"
#include "hetflow/perfmodel.hpp"

namespace hetflow::detail {
namespace {

thread_local WorkerState* tl_worker = nullptr;

// Counts the forks this process descends through (a child handler adds one), so that telling a
// forked child from the process that started a runtime costs one load, not a system call.
std::atomic<std::uint64_t> fork_generation{0};

std::uint64_t watch_forks() {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  static_cast<void>(registered);
  return fork_generation.load(std::memory_order_relaxed);
}

}  // namespace

WorkerState* current_worker() noexcept { return tl_worker; }

bool running_task_uses(const RuntimeImpl* runtime, const HandleImpl* handle) noexcept {
  const WorkerState* worker = tl_worker;
  if (worker == nullptr || worker->runtime != runtime || worker->running == nullptr) return false;
  TaskCore* task = worker->running;
  const AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) {
    if (accesses[i].handle == handle) return true;
  }
  return false;
}

std::size_t footprint(TaskCore* task) noexcept {
  std::size_t bytes = 0;
  AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) bytes += accesses[i].handle->layout.payload_bytes();
  return bytes;
}

RuntimeImpl::RuntimeImpl(Runtime& runtime_facade, Config resolved_config)
    : facade(runtime_facade),
      config(std::move(resolved_config)),
      owner_pid_(static_cast<long>(::getpid())),
      fork_generation_(watch_forks()) {
  node_memory_.push_back(nullptr);
  scheduler_name_ = *config.scheduler;
  scheduler_ = ext::make_scheduler(scheduler_name_);
  spin_ = std::chrono::microseconds(*config.spin_us);

  if (!config.simulate->empty()) {
    add_simulated_workers();
  } else {
    const std::vector<int> cpus = *config.pin_workers ? pinning_order(*config.ncpus) : std::vector<int>{};
    for (unsigned i = 0; i < *config.ncpus; ++i) {
      auto worker = std::make_unique<WorkerState>();
      worker->runtime = this;
      worker->info = {static_cast<unsigned>(workers_.size()), Arch::cpu, kHostNode};
      worker->pin_cpu = cpus.empty() ? -1 : cpus[i % cpus.size()];
      workers_.push_back(std::move(worker));
    }
    for (const auto& driver : config.drivers) {
      if (!driver) throw InvalidArgument("Config::drivers holds an empty driver");
      add_workers(*driver);
    }
  }
  for (const auto& [node, bytes] : config.memory_limits) {
    if (node >= node_count()) {
      throw InvalidArgument("Config::memory_limits names memory node " + std::to_string(node) + " but there are " +
                            std::to_string(node_count()) + " (0 is host RAM)");
    }
  }
  if (workers_.empty()) throw InvalidArgument("hetflow::Runtime: no workers (ncpus is 0 and no driver adds any)");
  for (const auto& worker : workers_) {
    worker_infos_.push_back(worker->info);
    pinned_.push_back(std::make_unique<Pinned>());
  }
  std::vector<ext::MemoryNode*> devices{nullptr};
  for (std::size_t node = 1; node < node_memory_.size(); ++node) devices.push_back(&node_memory_[node]->device());
  bus_ = std::make_unique<BusModel>(std::move(devices));
  if (simulator_) {
    for (unsigned node = 1; node < node_count(); ++node) {
      bus_->set(kHostNode, node, simulator_->machine.bandwidth_bytes_per_s, simulator_->machine.latency_s);
      bus_->set(node, kHostNode, simulator_->machine.bandwidth_bytes_per_s, simulator_->machine.latency_s);
    }
  } else if (node_count() > 1) {
    bus_->calibrate(PerfModelRegistry::instance().directory().parent_path());
  }
  if (!config.trace_path->empty() || *config.stats) {
    recorder_ = std::make_unique<Recorder>(*config.trace_path, *config.stats, worker_infos_, node_names_);
    if (simulator_) simulator_->recorder = recorder_.get();
  }
  scheduler_->init(worker_infos_, scheduler_context_);
  if (!simulating()) start_workers();
}

void RuntimeImpl::add_simulated_workers() {
  simulator_ = std::make_unique<Simulator>(MachineSpec::load(*config.simulate), *config.simulate);
  const MachineSpec& machine = simulator_->machine;
  for (unsigned i = 0; i < machine.cpus + machine.gpus; ++i) {
    auto worker = std::make_unique<WorkerState>();
    worker->runtime = this;
    worker->info = {i, Arch::cpu, kHostNode};
    if (i >= machine.cpus) {
      const unsigned gpu = i - machine.cpus;
      const unsigned node = static_cast<unsigned>(node_names_.size());
      auto limit = config.memory_limits.find(node);
      node_names_.push_back(simulator_->gpu_memory[gpu]->name());
      node_memory_.push_back(std::make_unique<NodeMemory>(*this, node, simulator_->gpu_memory[gpu],
                                                          limit != config.memory_limits.end() ? limit->second : 0));
      worker->info = {i, Arch::cuda, node};
    }
    workers_.push_back(std::move(worker));
  }
  simulator_->running.resize(workers_.size());
}

void RuntimeImpl::add_workers(ext::Driver& driver) {
  for (unsigned i = 0; i < driver.worker_count(); ++i) {
    auto worker = std::make_unique<WorkerState>();
    worker->runtime = this;
    unsigned node = kHostNode;
    if (std::shared_ptr<ext::MemoryNode> memory = driver.memory_node(i)) {
      auto known = std::find_if(node_memory_.begin() + 1, node_memory_.end(),
                                [&](const auto& existing) { return &existing->device() == memory.get(); });
      node = static_cast<unsigned>(known - node_memory_.begin());
      if (known == node_memory_.end()) {
        auto limit = config.memory_limits.find(node);
        node_names_.push_back(memory->name());
        node_memory_.push_back(std::make_unique<NodeMemory>(*this, node, std::move(memory),
                                                            limit != config.memory_limits.end() ? limit->second : 0));
      }
    }
    worker->info = {static_cast<unsigned>(workers_.size()), driver.arch(), node};
    worker->driver = &driver;
    worker->driver_index = i;
    workers_.push_back(std::move(worker));
  }
}

double RuntimeImpl::now() const noexcept {
  if (simulator_) return simulator_->clock.load(std::memory_order_acquire);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

void RuntimeImpl::record_transfer(unsigned from, unsigned to, std::size_t bytes, double start, double end) {
  if (simulator_) return;  // simulated copies book their own virtual time (SimulatedMemory)
  if (recorder_) recorder_->transfer(from, to, bytes, start, end);
}

bool RuntimeImpl::has_model(TaskCore& task) const noexcept {
  if (simulator_) return true;  // the machine's costs, or stored models
  return task.codelet != nullptr && task.codelet->model != nullptr;
}

std::optional<double> RuntimeImpl::expected_duration(TaskCore& task, Arch arch) const {
  if (simulator_) return simulated_cost(task, arch);
  if (!has_model(task)) return std::nullopt;
  const auto* model = dynamic_cast<const PerfModel*>(task.codelet->model.get());
  if (model == nullptr) return std::nullopt;
  return model->expected(arch, footprint(&task));
}

double RuntimeImpl::expected_copy(unsigned from, unsigned to, std::size_t bytes) const noexcept {
  return bus_->expected(from, to, bytes);
}

void RuntimeImpl::submit_prefetch(HandleImpl& handle, unsigned node) {
  TaskCore* token = allocate_task();
  token->runtime = this;
  token->ops = &kNoBody;
  token->flags = TaskCore::kManual | TaskCore::kPrefetches;
  token->priority = static_cast<int>(node);  // a manual task is never scheduled: the field is free
  token->refs.store(1, std::memory_order_relaxed);
  token->pending.store(1, std::memory_order_relaxed);
  token->inline_accesses[0] = {&handle, AccessMode::R};
  token->access_count = 1;
  submit(token, {});
}

RuntimeImpl::~RuntimeImpl() { shutdown(); }

void RuntimeImpl::start_workers() {
  for (auto& worker : workers_) {
    worker->thread = std::thread([this, w = worker.get()] { worker_loop(*w); });
  }
}

bool RuntimeImpl::forked() const noexcept {
  return fork_generation.load(std::memory_order_relaxed) != fork_generation_;
}

void RuntimeImpl::check_not_forked(const char* where) const {
  if (!forked()) return;
  throw Error(std::string(where) + ": this runtime was started in process " + std::to_string(owner_pid_) +
              "; a forked child cannot use it; create a new Runtime");
}

bool RuntimeImpl::accepting_from_this_thread() const noexcept {
  if (stopped_.load(std::memory_order_acquire)) return false;
  if (!shutting_down_.load(std::memory_order_acquire)) return true;
  // While shutting down, tasks may still add work to the graph being drained.
  return tl_worker != nullptr && tl_worker->runtime == this;
}

void RuntimeImpl::submit(TaskCore* task, const std::vector<FutureBase>& after) {
  if (!(task->flags & TaskCore::kManual)) outstanding_.fetch_add(1, std::memory_order_relaxed);
  count_pinned(task);
  AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) {
    // A handle named twice is tracked once: its records all carry the union of its modes.
    const auto same = [&](const AccessRecord& r) { return r.handle == accesses[i].handle; };
    if (std::none_of(accesses, accesses + i, same)) track_access(task, *accesses[i].handle, accesses[i].mode);
  }
  for (const FutureBase& predecessor : after) add_dependency(task, predecessor.core());
  if (task->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) make_ready(task);
}

void RuntimeImpl::make_ready(TaskCore* task) {
  if (task->flags & TaskCore::kManual) {
    // Read before the transition: once started, the owner may complete and recycle the token.
    const bool unregisters = (task->flags & TaskCore::kUnregisters) != 0;
    const bool prefetches = (task->flags & TaskCore::kPrefetches) != 0;
    task->error = nullptr;  // the application gets its data even after a failed writer
    transition(task, TaskStatus::pending, TaskStatus::ready);
    if (unregisters) complete_unregistration(task);
    if (prefetches) {
      detail::prefetch(*task->inline_accesses[0].handle, static_cast<unsigned>(task->priority));
      complete_manual(task);
    }
    return;
  }
  if (task->error) {
    transition(task, TaskStatus::pending, TaskStatus::failed);  // a task cancelled meanwhile stays cancelled
    finish(task);
    return;
  }
  if (!transition(task, TaskStatus::pending, TaskStatus::ready)) {
    finish(task);  // cancelled while it waited
    return;
  }
  push_ready(task);
}

void RuntimeImpl::push_ready(TaskCore* task) {
  if (task->pinned_worker >= 0) {
    // Only that worker may take it: wake all of its kind, since wake-ups are not addressed.
    const auto target = static_cast<unsigned>(task->pinned_worker);
    pinned_[target]->queue.push(task);
    idle_[static_cast<unsigned>(worker_infos_[target].arch)].notify_all();
    return;
  }
  WorkerState* worker = tl_worker;
  int from = (worker != nullptr && worker->runtime == this) ? static_cast<int>(worker->info.id) : ext::kExternalThread;
  const ArchMask where = task->where;  // once pushed, the task may run and be recycled at any time
  scheduler_->push(task, from);
  for (unsigned arch = 0; arch < kArchCount; ++arch) {
    if (where.contains(static_cast<Arch>(arch))) idle_[arch].notify_one();
  }
}

void RuntimeImpl::execute(TaskCore* task, WorkerState& worker) {
  if (aborting_.load(std::memory_order_acquire)) transition(task, TaskStatus::ready, TaskStatus::cancelled);
  if (!transition(task, TaskStatus::ready, TaskStatus::running)) {
    finish(task);  // cancelled after it was queued
    return;
  }
  // A task run while a lead waits (help_while) has its own batch: the lead's companions are set
  // aside, so that this task neither numbers its companions after them nor fails them when it ends.
  std::vector<TaskCore*> waiting_lead_companions;
  if (!worker.companions.empty()) waiting_lead_companions.swap(worker.companions);
  TaskContext context(task, &worker);
  struct Running {
    WorkerState& worker;
    TaskCore* outer;
    ~Running() { worker.running = outer; }
  } running{worker, std::exchange(worker.running, task)};
  try {
    run_body(task, worker, context);
    uncount_pinned(task);
    set_final(task, TaskStatus::done);
  } catch (const abi::__forced_unwind&) {
    throw;  // the thread is being ended (pthread_exit: Python ends threads that outlive it)
  } catch (...) {
    task->error = std::current_exception();
    uncount_pinned(task);
    set_final(task, TaskStatus::failed);
  }
  task->ops = task->status() == TaskStatus::done ? task->ops : nullptr;  // body consumed; keep result ops
  if (!worker.companions.empty()) {
    for (std::size_t i = 0; i < worker.companions.size(); ++i) {
      TaskCore* companion = worker.companions[i];
      if (companion == nullptr) continue;
      companion->ops->destroy_body(companion->storage());
      companion->ops = nullptr;
      finish_companion(worker, i,
                       std::make_exception_ptr(Error(std::string("hetflow: the batch of '") + task->display_name() +
                                                     "' this task was sent with did not complete it")));
    }
    worker.companions.clear();
  }
  if (!waiting_lead_companions.empty()) worker.companions.swap(waiting_lead_companions);
  finish(task);
}

void RuntimeImpl::run_body(TaskCore* task, WorkerState& worker, TaskContext& context) {
  const unsigned node = worker.info.memory_node;
  AccessRecord* accesses = task->accesses();
  std::size_t fetched = 0;
  struct Unpin {
    AccessRecord* accesses;
    std::size_t& count;
    unsigned node;
    ~Unpin() {
      for (std::size_t i = 0; i < count; ++i) unpin(*accesses[i].handle, node);
    }
  } unpin_at_exit{accesses, fetched, node};
  if (node_count() > 1) {
    if (node != kHostNode) check_fits(task, node);
    // Every copy starts before the first is waited for, so that they overlap each other.
    for (; fetched < task->access_count; ++fetched)
      fetch(*accesses[fetched].handle, node, reads(accesses[fetched].mode));
    for (std::size_t i = 0; i < task->access_count; ++i) complete_fetch(*accesses[i].handle, node, accesses[i].mode);
    if (node != kHostNode) look_ahead(worker);
  }
  PerfModelHook* model = task->codelet != nullptr ? task->codelet->model.get() : nullptr;
  const bool timed = model != nullptr || recorder_;
  const double start = timed ? now() : 0;
  const double nested_at_start = worker.nested_seconds;
  try {
    task->ops->run(task->storage(), context);
  } catch (...) {
    // What the implementation queued before it threw must end before its buffers move.
    if (worker.driver != nullptr) {
      try {
        static_cast<void>(take_setup_seconds(worker));
        worker.driver->finish_task(worker.driver_index);
      } catch (...) {
        // The implementation's own error is the one to report.
      }
    }
    throw;
  }
  const double setup = take_setup_seconds(worker);
  if (worker.driver != nullptr) worker.driver->finish_task(worker.driver_index);
  if (!timed) return;
  const double end = now();
  const double not_its_own = setup + (worker.nested_seconds - nested_at_start);
  if (model != nullptr) model->record(worker.info.arch, footprint(task), std::max(0.0, end - start - not_its_own));
  if (recorder_) recorder_->task(worker.info.id, task->display_name(), footprint(task), start, end);
}

double RuntimeImpl::take_setup_seconds(WorkerState& worker) {
  return worker.driver != nullptr ? worker.driver->take_setup_seconds(worker.driver_index) : 0.0;
}

void RuntimeImpl::check_fits(TaskCore* task, unsigned node) const {
  const std::size_t limit = node_memory(node).limit();
  if (limit == 0) return;
  const std::string where = "memory node " + std::to_string(node) + " (" + node_name(node) + "), which holds at most " +
                            std::to_string(limit) + " bytes";
  std::size_t bytes = 0;
  AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) {
    const HandleImpl& handle = *accesses[i].handle;
    const auto same = [&](const AccessRecord& r) { return r.handle == accesses[i].handle; };
    if (std::any_of(accesses, accesses + i, same)) continue;
    const std::size_t span = handle.layout.span_bytes();
    if (span > limit) {
      throw Error("hetflow: data '" + handle.name + "' (" + std::to_string(span) + " bytes) does not fit on " + where);
    }
    bytes += span;
  }
  if (bytes > limit) {
    // Its buffers must all be there at once: no eviction can make room.
    throw Error("hetflow: task '" + std::string(task->display_name()) + "' needs " + std::to_string(bytes) +
                " bytes of data at once on " + where);
  }
}

void RuntimeImpl::look_ahead(WorkerState& worker) {
  if (worker.deferred == nullptr) worker.deferred = static_cast<TaskCore*>(next_task(worker, true));
  if (worker.deferred == nullptr) return;
  AccessRecord* accesses = worker.deferred->accesses();
  for (std::size_t i = 0; i < worker.deferred->access_count; ++i) {
    if (reads(accesses[i].mode)) detail::prefetch(*accesses[i].handle, worker.info.memory_node);
  }
}

std::size_t RuntimeImpl::take_companions(WorkerState& worker, const TaskCore* lead, std::size_t max) {
  std::size_t taken = 0;
  while (taken < max && worker.deferred == nullptr && !aborting_.load(std::memory_order_acquire)) {
    auto* task = static_cast<TaskCore*>(next_task(worker));
    if (task == nullptr) break;
    if (task->ops != lead->ops || task->codelet != lead->codelet) {
      worker.deferred = task;  // not of the kind: it runs after this batch
      break;
    }
    if (!transition(task, TaskStatus::ready, TaskStatus::running)) {
      finish(task);  // cancelled after it was queued
      continue;
    }
    if (node_count() > 1) {
      AccessRecord* accesses = task->accesses();
      for (std::size_t i = 0; i < task->access_count; ++i) {
        prepare_replica(*accesses[i].handle, worker.info.memory_node, accesses[i].mode);
      }
    }
    worker.companions.push_back(task);
    ++taken;
  }
  return taken;
}

void RuntimeImpl::finish_companion(WorkerState& worker, std::size_t index, std::exception_ptr error) noexcept {
  TaskCore* task = std::exchange(worker.companions[index], nullptr);
  if (task == nullptr) return;
  uncount_pinned(task);
  if (error) {
    task->error = std::move(error);
    task->ops = nullptr;  // its body is gone; nothing to destroy later
    set_final(task, TaskStatus::failed);
  } else {
    set_final(task, TaskStatus::done);
  }
  finish(task);
}

void RuntimeImpl::finish(TaskCore* task) noexcept {
  // Dependents that fail without running are finished here too, iteratively.
  std::vector<TaskCore*> newly_final;
  finish_one(task, newly_final);
  while (!newly_final.empty()) {
    TaskCore* next = newly_final.back();
    newly_final.pop_back();
    finish_one(next, newly_final);
  }
}

void RuntimeImpl::finish_one(TaskCore* task, std::vector<TaskCore*>& newly_final) noexcept {
  const TaskStatus outcome = task->status();
  if (outcome != TaskStatus::done && task->ops != nullptr) {
    task->ops->destroy_body(task->storage());  // never ran
    task->ops = nullptr;
  }
  std::uintptr_t first;
  std::vector<std::uintptr_t>* more;
  {
    std::lock_guard guard(task->lock);
    task->released = true;
    first = std::exchange(task->first_successor, 0);
    more = std::exchange(task->more_successors, nullptr);
  }
  // Made once, for the first successor that reads what this task failed to produce.
  std::exception_ptr failure;

  auto notify = [&](std::uintptr_t link) {
    if (link & TaskCore::kCallbackLink) {
      auto* callback = reinterpret_cast<CompletionCallback*>(link & ~TaskCore::kLinkTags);
      callback->fn(callback, task);
      return;
    }
    auto* successor = reinterpret_cast<TaskCore*>(link & ~TaskCore::kLinkTags);
    if (outcome != TaskStatus::done && !(link & TaskCore::kOrderingLink)) {
      if (!failure) failure = dependency_error_for(task);
      std::lock_guard guard(successor->lock);
      if (!successor->error) successor->error = failure;
    }
    if (successor->pending.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (successor->error && !(successor->flags & TaskCore::kManual)) {
      // Not set_final: a task the application cancelled while it waited stays cancelled.
      transition(successor, TaskStatus::pending, TaskStatus::failed);
      newly_final.push_back(successor);
    } else if (!(successor->flags & TaskCore::kManual) &&
               !transition(successor, TaskStatus::pending, TaskStatus::ready)) {
      newly_final.push_back(successor);  // cancelled while it waited
    } else if (successor->flags & TaskCore::kManual) {
      make_ready(successor);
    } else {
      push_ready(successor);
    }
  };
  if (first != 0) notify(first);
  if (more != nullptr) {
    for (std::uintptr_t link : *more) notify(link);
    delete more;
  }

  uncount_pinned(task);  // if no outcome above did
  if (!(task->flags & TaskCore::kManual)) {
    if (outstanding_.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
        all_done_waiters_.load(std::memory_order_seq_cst) > 0) {
      all_done_epoch_.fetch_add(1, std::memory_order_seq_cst);
      futex_wake_all(all_done_epoch_);
    }
  }
  release(task);
}

bool RuntimeImpl::wait_all(const std::chrono::steady_clock::time_point* deadline) {
  if (tl_worker != nullptr && tl_worker->runtime == this) {
    throw Error("hetflow: wait_all() called from inside a task would wait for that task itself");
  }
  if (simulator_) {
    simulate_while_waiting([this] { return outstanding_.load(std::memory_order_seq_cst) == 0; }, deadline);
  }
  while (outstanding_.load(std::memory_order_seq_cst) != 0) {
    all_done_waiters_.fetch_add(1, std::memory_order_seq_cst);
    std::uint32_t epoch = all_done_epoch_.load(std::memory_order_seq_cst);
    bool in_time = true;
    if (outstanding_.load(std::memory_order_seq_cst) != 0) in_time = futex_wait(all_done_epoch_, epoch, deadline);
    all_done_waiters_.fetch_sub(1, std::memory_order_seq_cst);
    if (!in_time) return outstanding_.load(std::memory_order_seq_cst) == 0;
  }
  return true;
}

ext::SchedTask* RuntimeImpl::next_task(WorkerState& worker, bool ahead) {
  if (worker.deferred != nullptr) return std::exchange(worker.deferred, nullptr);
  if (ext::SchedTask* task = pinned_[worker.info.id]->queue.pop(worker.info.arch)) return task;
  return ahead ? scheduler_->pop_ahead(worker.info.id) : scheduler_->pop(worker.info.id);
}

ext::SchedTask* RuntimeImpl::find_task(WorkerState& worker) {
  const auto deadline = std::chrono::steady_clock::now() + spin_;
  const auto yield_after = std::chrono::steady_clock::now() + spin_ / 4;
  for (unsigned round = 0;; ++round) {
    if (ext::SchedTask* task = next_task(worker)) return task;
    if ((round & 15u) == 15u) {
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return nullptr;
      if (now >= yield_after) std::this_thread::yield();
    }
    for (int i = 0; i < 16; ++i) cpu_relax();
  }
}

void RuntimeImpl::worker_loop(WorkerState& worker) {
  tl_worker = &worker;
  if (worker.pin_cpu >= 0) pin_current_thread(worker.pin_cpu);
  if (worker.driver != nullptr) worker.driver->start_worker(worker.driver_index);
  IdleWorkers& idle = idle_[static_cast<unsigned>(worker.info.arch)];
  for (;;) {
    if (ext::SchedTask* task = next_task(worker)) {
      execute(static_cast<TaskCore*>(task), worker);
      continue;
    }
    if (worker.driver != nullptr) worker.driver->worker_idle(worker.driver_index);
    idle.begin_search();
    if (ext::SchedTask* task = find_task(worker)) {
      if (idle.end_search()) idle.notify_one();  // the last searcher found work: maybe there is more
      execute(static_cast<TaskCore*>(task), worker);
      continue;
    }
    std::uint32_t epoch = idle.prepare_wait();
    idle.end_search();
    if (ext::SchedTask* task = next_task(worker)) {
      idle.cancel_wait();
      idle.notify_one();
      execute(static_cast<TaskCore*>(task), worker);
      continue;
    }
    if (stopping_.load(std::memory_order_acquire)) {
      idle.cancel_wait();
      break;
    }
    idle.commit_wait(epoch);
  }
  if (worker.driver != nullptr) worker.driver->stop_worker(worker.driver_index);
  tl_worker = nullptr;
  worker.exited.store(true, std::memory_order_release);
}

void RuntimeImpl::abort() {
  aborting_.store(true, std::memory_order_release);
  for (const auto& driver : config.drivers) driver->abort();
}

void RuntimeImpl::shutdown() {
  if (tl_worker != nullptr && tl_worker->runtime == this) {
    throw Error("hetflow: shutdown() called from inside a task would wait for that task itself");
  }
  std::lock_guard guard(shutdown_mutex_);
  if (stopped_.load(std::memory_order_acquire)) return;
  shutting_down_.store(true, std::memory_order_release);
  wait_all();
  std::vector<std::shared_ptr<HandleImpl>> handles;
  {
    std::lock_guard registry_guard(registry_mutex_);
    handles = registry_;
  }
  for (auto& handle : handles) unregister(*handle);
  stopping_.store(true, std::memory_order_release);
  for (auto& idle : idle_) idle.notify_all();
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) worker->thread.join();
  }
  PerfModelRegistry::instance().save_all();
  if (recorder_) recorder_->finish(now());
  if (simulator_) {
    std::fprintf(stderr, "hetflow: simulated %zu tasks on %s with %s: makespan %.6f s\n", simulator_->tasks_run,
                 simulator_->origin.c_str(), scheduler_name_.c_str(), now());
  }
  stopped_.store(true, std::memory_order_release);
}

unsigned RuntimeImpl::shutdown_until(std::chrono::steady_clock::time_point deadline) {
  if (tl_worker != nullptr && tl_worker->runtime == this) {
    throw Error("hetflow: shutdown() called from inside a task would wait for that task itself");
  }
  {
    std::lock_guard guard(shutdown_mutex_);
    if (stopped_.load(std::memory_order_acquire)) return 0;
    shutting_down_.store(true, std::memory_order_release);
    if (!wait_all(&deadline)) {
      // Free workers see `stopping_` and leave; a worker still in a task cannot be stopped.
      stopping_.store(true, std::memory_order_release);
      for (auto& idle : idle_) idle.notify_all();
      const auto grace = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
      unsigned left = 0;
      for (auto& worker : workers_) {
        while (!worker->exited.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < grace) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (!worker->thread.joinable()) continue;
        if (worker->exited.load(std::memory_order_acquire)) {
          worker->thread.join();
        } else {
          worker->thread.detach();
          ++left;
        }
      }
      PerfModelRegistry::instance().save_all();
      stopped_.store(true, std::memory_order_release);
      return left;
    }
  }
  shutdown();
  return 0;
}

std::shared_ptr<HandleImpl> RuntimeImpl::register_data(void* ptr, const DataLayout& layout, std::string name) {
  auto handle = std::make_shared<HandleImpl>(*this, ptr, layout, std::move(name));
  for (unsigned node = 1; node < node_count(); ++node)
    node_memory(node).device().host_buffer_added(ptr, layout.span_bytes());
  std::lock_guard guard(registry_mutex_);
  handle->registry_index = registry_.size();
  registry_.push_back(handle);
  return handle;
}

}  // namespace hetflow::detail
