#include "core/engine.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <new>
#include <string>
#include <thread>

#include "core/dependencies.hpp"
#include "core/task_pool.hpp"
#include "core/task_state.hpp"
#include "data/coherence.hpp"
#include "hetflow/error.hpp"
#include "hetflow/future.hpp"
#include "hetflow/perfmodel.hpp"
#include "util/unnested.hpp"

namespace hetflow::detail {
namespace {

thread_local WorkerState* tl_worker = nullptr;

// Two drivers may name their devices alike ("opencl0" from each of two OpenCL platforms); the
// trace, the statistics and the bus models tell nodes apart by name.
std::string unique_node_name(const std::vector<std::string>& names, const std::string& name) {
  auto taken = [&](const std::string& candidate) {
    return std::find(names.begin(), names.end(), candidate) != names.end();
  };
  if (!taken(name)) return name;
  for (unsigned copy = 2;; ++copy) {
    std::string candidate = name + "#" + std::to_string(copy);
    if (!taken(candidate)) return candidate;
  }
}

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

void set_current_worker(WorkerState* worker) noexcept { tl_worker = worker; }

namespace {
thread_local SeatlessTask* tl_seatless = nullptr;
// A callback of acquire_then runs on the worker that ended the tasks before it, as part of its
// task: a program calling from one would not know it is inside a task.
Error waits_for_own_task(std::string_view call) {
  return Error("hetflow: " + std::string(call) +
               " called from inside a task (or an acquire_then callback, which runs on the worker that ended the "
               "tasks before it) would wait for that task itself");
}

}  // namespace

SeatlessTask* seatless_task() noexcept { return tl_seatless; }

void set_seatless_task(SeatlessTask* task) noexcept { tl_seatless = task; }

const RunningFrame* tasks_on_this_thread(const Engine* runtime) noexcept {
  if (tl_worker != nullptr && tl_worker->runtime == runtime) return tl_worker->running;
  if (tl_seatless != nullptr && tl_seatless->worker->runtime == runtime) return tl_seatless->running;
  return nullptr;
}

bool inside_task_of(const Engine* runtime) noexcept {
  return (tl_worker != nullptr && tl_worker->runtime == runtime) ||
         (tl_seatless != nullptr && tl_seatless->worker->runtime == runtime);
}

bool running_task_uses(const Engine* runtime, const HandleImpl* handle, std::optional<AccessMode> mode) noexcept {
  for (const RunningFrame* frame = tasks_on_this_thread(runtime); frame != nullptr; frame = frame->outer) {
    const AccessRecord* accesses = frame->task->accesses();
    for (std::size_t i = 0; i < frame->task->access_count; ++i) {
      if (accesses[i].handle == handle && (!mode || conflict(accesses[i].mode, *mode))) return true;
    }
  }
  return false;
}

std::size_t footprint(TaskCore* task) noexcept {
  std::size_t bytes = 0;
  AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) bytes += accesses[i].handle->layout.payload_bytes();
  return bytes;
}

std::size_t data_bytes(TaskCore* task) noexcept {
  std::size_t bytes = 0;
  AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) {
    if (!accesses[i].repeat) bytes += accesses[i].handle->layout.span_bytes();
  }
  return bytes;
}

std::size_t largest_buffer_bytes(TaskCore* task) noexcept {
  std::size_t bytes = 0;
  AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) bytes = std::max(bytes, accesses[i].handle->layout.span_bytes());
  return bytes;
}

Engine::Engine(Runtime& runtime_facade, Config resolved_config, std::unique_ptr<Execution> execution)
    : facade(runtime_facade),
      config(std::move(resolved_config)),
      owner_pid_(static_cast<long>(::getpid())),
      fork_generation_(watch_forks()),
      driver_claims_(config.drivers),
      execution_(std::move(execution)) {
  node_memory_.push_back(nullptr);
  scheduler_name_ = *config.scheduler;
  scheduler_ = ext::make_scheduler(scheduler_name_);
  execution_->add_workers(*this);
  clock_ = execution_->virtual_clock();
  idle_ = execution_->idle_workers();
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
  execution_->model_bus(*bus_, node_names_);
  if (!config.trace_path->empty() || *config.stats) {
    recorder_ =
        std::make_unique<Recorder>(*config.trace_path, *config.stats, worker_infos_, node_names_, scheduler_name_);
  }
  scheduler_->init(worker_infos_, scheduler_context_);
  execution_->start(*this);
  std::lock_guard guard(live_engines_mutex());
  live_engines().insert(this);
}

std::mutex& Engine::live_engines_mutex() {
  static auto* mutex = new std::mutex;  // never destroyed: engines may end during static destruction
  return *mutex;
}

std::unordered_set<const Engine*>& Engine::live_engines() {
  static auto* engines = new std::unordered_set<const Engine*>;
  return *engines;
}

bool Engine::alive(const Engine* engine) {
  std::lock_guard guard(live_engines_mutex());
  return live_engines().contains(engine);
}

unsigned Engine::add_memory_node(std::shared_ptr<ext::MemoryNode> memory) {
  auto known = std::find_if(node_memory_.begin() + 1, node_memory_.end(),
                            [&](const auto& existing) { return &existing->device() == memory.get(); });
  const auto node = static_cast<unsigned>(known - node_memory_.begin());
  if (known == node_memory_.end()) {
    auto limit = config.memory_limits.find(node);
    node_names_.push_back(unique_node_name(node_names_, memory->name()));
    node_memory_.push_back(std::make_unique<NodeMemory>(*this, node, std::move(memory),
                                                        limit != config.memory_limits.end() ? limit->second : 0));
  }
  return node;
}

WorkerState& Engine::add_worker(Arch arch, unsigned node) {
  auto worker = std::make_unique<WorkerState>();
  worker->runtime = this;
  worker->info = {static_cast<unsigned>(workers_.size()), arch, node};
  workers_.push_back(std::move(worker));
  return *workers_.back();
}

double Engine::now() const noexcept {
  if (clock_ != nullptr) return clock_->load(std::memory_order_acquire);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

void Engine::record_transfer(unsigned from, unsigned to, std::size_t bytes, double start, double end) {
  if (simulating()) return;  // simulated copies book their own virtual time (SimulatedMemory)
  if (recorder_) recorder_->transfer(from, to, bytes, start, end);
}

bool Engine::has_model(TaskCore& task) const noexcept {
  if (simulating()) return true;  // the machine's costs, or stored models
  return task.codelet != nullptr && task.codelet->model != nullptr;
}

std::optional<double> Engine::expected_duration(TaskCore& task, Arch arch) const {
  if (simulating()) return execution_->cost(task, arch);
  if (!has_model(task)) return std::nullopt;
  const auto* model = dynamic_cast<const PerfModel*>(task.codelet->model.get());
  if (model == nullptr) return std::nullopt;
  return model->expected(arch, footprint(&task));
}

double Engine::expected_copy(unsigned from, unsigned to, std::size_t bytes) const noexcept {
  return bus_->expected(from, to, bytes);
}

void Engine::submit_prefetch(HandleImpl& handle, unsigned node) {
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

void Engine::conclude_manual(TaskCore* task, std::exception_ptr error) noexcept {
  concluding_manual_.fetch_add(1, std::memory_order_acq_rel);
  conclude(task, std::move(error));
  concluding_manual_.fetch_sub(1, std::memory_order_acq_rel);  // its last touch of the engine
}

bool Engine::give_up_on_start(TaskCore* token, std::uint8_t flag) noexcept {
  std::lock_guard guard(token->lock);
  if (token->status() != TaskStatus::pending) return false;
  token->flags |= flag;
  return true;
}

Engine::~Engine() {
  shutdown();
  // An application thread may still be inside conclude for an acquisition it released, after
  // the tasks waiting for it (shutdown's) were told.
  while (concluding_manual_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  std::lock_guard guard(live_engines_mutex());
  live_engines().erase(this);
}

bool Engine::forked() const noexcept { return fork_generation.load(std::memory_order_relaxed) != fork_generation_; }

void Engine::check_not_forked(const char* where) const {
  if (!forked()) return;
  throw Error(std::string(where) + ": this runtime was started in process " + std::to_string(owner_pid_) +
              "; a forked child cannot use it; create a new Runtime");
}

bool Engine::accepting_from_this_thread() const noexcept {
  if (stopped_.load(std::memory_order_seq_cst)) return false;
  if (!shutting_down_.load(std::memory_order_seq_cst)) return true;
  // While shutting down, tasks may still add work to the graph being drained.
  return inside_task_of(this);
}

bool Engine::admit_task() noexcept {
  // Counted before shutting_down_ is read, as shutdown sets it before wait_all reads the count
  // (both sequentially consistent): either shutdown waits for this task, or it is refused here.
  outstanding_.fetch_add(1, std::memory_order_seq_cst);
  if (accepting_from_this_thread()) return true;
  count_task_done();
  return false;
}

void Engine::count_task_done() noexcept {
  if (outstanding_.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
      all_done_waiters_.load(std::memory_order_seq_cst) > 0) {
    all_done_epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(all_done_epoch_);
  }
}

void Engine::submit(TaskCore* task, const std::vector<FutureBase>& after) {
  count_pinned(task);
  AccessRecord* accesses = task->accesses();
  std::size_t handles = 0;
  for (std::size_t i = 0; i < task->access_count; ++i) handles += accesses[i].repeat ? 0 : 1;
  {
    // Each handle orders its tasks under its own lock. Two tasks tracked at the same time from
    // two threads could otherwise each come first on one of the handles they share, each then
    // waiting for the other for ever; tasks of one handle cannot close such a cycle.
    std::unique_lock<std::mutex> in_order;
    if (handles > 1) in_order = std::unique_lock(multi_handle_submission_mutex_);
    for (std::size_t i = 0; i < task->access_count; ++i) {
      // A handle named twice is tracked once: its records all carry the union of its modes.
      if (!accesses[i].repeat) track_access(task, *accesses[i].handle, accesses[i].mode);
    }
  }
  for (const FutureBase& predecessor : after) add_dependency(task, predecessor.core());
  if (task->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) make_ready(task);
}

namespace {

// The manual tasks (acquisitions, unregistrations...) that became ready on this thread while it
// was starting another, if it is. Starting one calls back (acquire_then) or completes it, which
// makes the next one on the data ready: 100,000 acquire_then in a row, each released in its
// callback, started each inside the one before, and overflowed the stack. They wait, in order,
// for the outermost start instead.
thread_local Unnested<TaskCore*, UnnestedOrder::fifo> tl_manual_starts;

}  // namespace

void Engine::make_ready(TaskCore* task) {
  if (task->flags & TaskCore::kManual) {
    // The outermost start throws, if it does, before it makes others ready (acquire_then's copy
    // home); the ones after it end the process if they throw, as inside its completion
    // (noexcept) before.
    tl_manual_starts.run(task, [](TaskCore* next) { next->runtime->start_manual(next); });
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

void Engine::start_manual(TaskCore* task) {
  {
    ManualCallback on_start;
    if (task->flags & TaskCore::kCallsBack) {
      auto* stored = std::launder(reinterpret_cast<ManualCallback*>(task->inline_storage));
      on_start = std::move(*stored);
      stored->~ManualCallback();
      task->flags &= static_cast<std::uint8_t>(~TaskCore::kCallsBack);
    }
    bool unregisters = false;
    bool prefetches = false;
    bool abandoned = false;
    {
      // Read before the transition (once started, the owner may complete and recycle the token),
      // and with it: an owner giving up on the token sets its flags under this lock.
      std::lock_guard guard(task->lock);
      unregisters = (task->flags & TaskCore::kUnregisters) != 0;
      prefetches = (task->flags & TaskCore::kPrefetches) != 0;
      abandoned = (task->flags & TaskCore::kAbandoned) != 0;
      // The application gets its data even after a failed writer (the token does not fail): an
      // acquisition takes that writer's error for itself (failure_read_by); other tokens drop it.
      if (unregisters || prefetches || task->access_count != 1) task->error = nullptr;
      transition(task, TaskStatus::pending, TaskStatus::ready);
    }
    if (on_start) on_start(task);
    if (unregisters) complete_unregistration(task);
    if (prefetches) {
      detail::prefetch(*task->inline_accesses[0].handle, static_cast<unsigned>(task->priority));
      complete_manual(task);
    }
    if (abandoned) complete_manual(task);
  }
}

void Engine::push_ready(TaskCore* task) {
  if (gave_up_.load(std::memory_order_acquire)) {
    // The shutdown gave up on the work (cancel_pending first): no worker may be left to take it,
    // so it is taken, and cancelled, here.
    static_cast<void>(begin(task));
    return;
  }
  // Cancelled meanwhile, it may have been taken out of its worker's count (-1): the scheduler
  // then queues it, and whoever takes it finishes it.
  if (const std::int32_t pinned = std::atomic_ref<std::int32_t>(task->pinned_worker).load(); pinned >= 0) {
    // Only that worker may take it: wake all of its kind, since wake-ups are not addressed.
    const auto target = static_cast<unsigned>(pinned);
    pinned_[target]->queue.push(task);
    if (idle_ != nullptr) idle_[static_cast<unsigned>(worker_infos_[target].arch)].notify_all();
    return;
  }
  WorkerState* worker = tl_worker;
  int from = (worker != nullptr && worker->runtime == this) ? static_cast<int>(worker->info.id) : ext::kExternalThread;
  const ArchMask where = task->where;  // once pushed, the task may run and be recycled at any time
  count_ready(where, 1);
  scheduler_->push(task, from);
  if (idle_ == nullptr) return;
  for (unsigned arch = 0; arch < kArchCount; ++arch) {
    if (where.contains(static_cast<Arch>(arch))) idle_[arch].notify_one();
  }
}

bool Engine::send_where_it_fits(const WorkerState& worker, TaskCore* task) {
  if (can_hold(task, worker.info.memory_node)) return false;
  const WorkerState* target = nullptr;
  bool target_other_arch = true;
  std::size_t target_queued = 0;
  for (const auto& other : workers_) {
    if (other.get() == &worker || !task->where.contains(other->info.arch)) continue;
    if (!can_hold(task, other->info.memory_node)) continue;
    const bool other_arch = other->info.arch != worker.info.arch;
    const std::size_t queued = pinned_[other->info.id]->queue.size() + pinned_[other->info.id]->passed.size();
    if (target != nullptr &&
        (other_arch > target_other_arch || (other_arch == target_other_arch && queued >= target_queued))) {
      continue;
    }
    target = other.get();
    target_other_arch = other_arch;
    target_queued = queued;
  }
  if (target == nullptr) return false;
  // Queued as a pinned task is (not pinned for good: given back, push_ready hands it to the
  // scheduler again). Wake-ups are not addressed: all of its kind are woken.
  pinned_[target->info.id]->passed.push_by_priority(task);
  if (idle_ != nullptr) idle_[static_cast<unsigned>(target->info.arch)].notify_all();
  return true;
}

void Engine::look_ahead(WorkerState& worker) {
  if (worker.deferred == nullptr) worker.deferred = static_cast<TaskCore*>(next_task(worker, true));
  if (worker.deferred == nullptr) return;
  AccessRecord* accesses = worker.deferred->accesses();
  for (std::size_t i = 0; i < worker.deferred->access_count; ++i) {
    if (reads(accesses[i].mode)) detail::prefetch(*accesses[i].handle, worker.info.memory_node);
  }
}

std::size_t Engine::take_companions(WorkerState& worker, const TaskCore* lead, std::size_t max) {
  // Companions run one after the other on this worker: a task another worker of this kind could
  // start is left to it (one ready task per other worker, and none while one is idle), so that
  // tasks that could run side by side (and may wait for each other) are never serialized.
  const unsigned arch = static_cast<unsigned>(worker.info.arch);
  IdleWorkers* idle = idle_ != nullptr ? &idle_[arch] : nullptr;
  const auto peers = static_cast<std::int64_t>(
      std::count_if(worker_infos_.begin(), worker_infos_.end(),
                    [&](const ext::WorkerInfo& info) { return info.arch == worker.info.arch; }) -
      1);
  std::size_t taken = 0;
  while (taken < max && worker.deferred == nullptr && !aborting_.load(std::memory_order_acquire) &&
         (idle == nullptr || !idle->any_idle())) {
    if (pinned_[worker.info.id]->queue.empty() && pinned_[worker.info.id]->passed.empty() && arch != 0 &&
        ready_for_[arch].load(std::memory_order_relaxed) <= peers) {
      break;
    }
    auto* task = static_cast<TaskCore*>(next_task(worker));
    if (task == nullptr) break;
    // Read as the thread running it, were it claimed meanwhile, may write it (conclude).
    if (std::atomic_ref(task->ops).load(std::memory_order_relaxed) != lead->ops || task->codelet != lead->codelet) {
      worker.deferred = task;  // not of the kind: it runs after this batch
      break;
    }
    if (!begin(task)) continue;  // cancelled, or claimed, after it was queued
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

void Engine::finish_companion(WorkerState& worker, std::size_t index, std::exception_ptr error) noexcept {
  TaskCore* task = std::exchange(worker.companions[index], nullptr);
  if (task == nullptr) return;
  if (recorder_ != nullptr) {  // from the end of what the batch did before it
    const double end = now();
    recorder_->task(worker.info.id, task->display_name(), footprint(task), std::min(worker.batch_mark, end), end);
    worker.batch_mark = end;
  }
  conclude(task, std::move(error));
}

void Engine::own_part_done(WorkerState& worker) noexcept {
  if (recorder_ == nullptr) return;
  worker.own_part_end = worker.batch_mark = std::max(worker.batch_mark, now());
}

void Engine::conclude(TaskCore* task, std::exception_ptr error) noexcept {
  uncount_pinned(task);
  const std::uint32_t marks = aborted_.load(std::memory_order_acquire) ? TaskCore::kAfterAbortBit : 0;
  bool published = false;
  if (error) {
    // Under the lock that give_up_on takes to write its own error in the task.
    std::lock_guard guard(task->lock);
    if (!(task->state.load(std::memory_order_acquire) & TaskCore::kGivenUpBit)) {
      task->error = std::move(error);
      // Its body is gone; no result to destroy later.
      std::atomic_ref(task->ops).store(nullptr, std::memory_order_relaxed);
      published = publish_outcome(task, TaskStatus::failed, marks);
    }
  } else {
    // The result, if any, stays for the futures (ops destroy it), unless none is left.
    published = publish_outcome(task, TaskStatus::done, marks);
    if (published) {
      std::atomic_thread_fence(std::memory_order_seq_cst);  // see release_future
      if ((task->future_refs.load(std::memory_order_seq_cst) & ~TaskCore::kResultGone) == 0) {
        drop_result_nobody_reads(task);
      }
    }
  }
  if (!published) {
    // The shutdown gave up on it while it ran (give_up_on): its waiters and dependents were told
    // then. What the body left (its result) is nobody's.
    if (!error && task->ops != nullptr && task->ops->destroy_result != nullptr)
      task->ops->destroy_result(task->storage());
    std::atomic_ref(task->ops).store(nullptr, std::memory_order_relaxed);
  }
  finish(task);
}

void Engine::finish(TaskCore* task) noexcept {
  std::vector<TaskCore*> newly_final;
  finish_one(task, newly_final);
  finish_all(newly_final);
}

void Engine::finish_all(std::vector<TaskCore*>& newly_final) noexcept {
  // Dependents that fail without running are finished here too, iteratively.
  while (!newly_final.empty()) {
    TaskCore* next = newly_final.back();
    newly_final.pop_back();
    finish_one(next, newly_final);
  }
}

void Engine::finish_one(TaskCore* task, std::vector<TaskCore*>& newly_final) noexcept {
  if (task->status() != TaskStatus::done && task->ops != nullptr) {
    task->ops->destroy_body(task->storage());  // never ran
    task->ops = nullptr;
  }
  tell_successors(task, newly_final);
  uncount_pinned(task);  // if no outcome above did
  // One ended by the give-up was counted then (give_up_on).
  if (!(task->flags & TaskCore::kManual) && !(task->state.load(std::memory_order_acquire) & TaskCore::kToldEarlyBit)) {
    count_task_done();
  }
  release(task);
}

void Engine::cancel_queued(TaskCore* task) noexcept {
  uncount_pinned(task);
  std::vector<TaskCore*> newly_final;
  tell_successors(task, newly_final);
  finish_all(newly_final);
}

void Engine::tell_successors(TaskCore* task, std::vector<TaskCore*>& newly_final) noexcept {
  const TaskStatus outcome = task->status();
  SuccessorLinks successors;
  {
    std::lock_guard guard(task->lock);
    if (task->released) return;  // told already: a queued task cancelled (cancel_queued)
    task->released = true;
    successors = task->successors.take();
  }
  // Made once, for the first successor that reads what this task failed to produce.
  std::exception_ptr failure;
  // The program cancels what has not started (cancel_pending_and_dependents): its successors too.
  const bool cancelled_with_the_rest =
      outcome == TaskStatus::cancelled && dependents_cancelled_.load(std::memory_order_acquire);

  auto notify = [&](std::uintptr_t link) {
    if (link & TaskCore::kCallbackLink) {
      auto* callback = reinterpret_cast<CompletionCallback*>(link & ~TaskCore::kLinkTags);
      callback->fn(callback, task);
      return;
    }
    auto* successor = reinterpret_cast<TaskCore*>(link & ~TaskCore::kLinkTags);
    const bool cancelled_too = cancelled_with_the_rest && !(successor->flags & TaskCore::kManual);
    if (outcome != TaskStatus::done && !(link & TaskCore::kOrderingLink) && !cancelled_too) {
      if (!failure) failure = dependency_error_for(task);
      std::lock_guard guard(successor->lock);
      if (!successor->error) successor->error = failure;
    }
    if (successor->pending.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (successor->error && !(successor->flags & TaskCore::kManual)) {
      // Not set_final: a task the application cancelled while it waited stays cancelled.
      transition(successor, TaskStatus::pending, TaskStatus::failed);
      newly_final.push_back(successor);
    } else if (!(successor->flags & TaskCore::kManual) && gave_up_.load(std::memory_order_acquire)) {
      // The shutdown gave up on the work: no worker may be left to run it.
      transition(successor, TaskStatus::pending, TaskStatus::cancelled, given_up_marks());
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
  successors.for_each(notify);
}

void Engine::note_acquired(TaskCore* token, std::uint64_t holder) {
  std::lock_guard guard(held_mutex_);
  held_.push_back({token, holder, holder});
  held_count_.store(held_.size(), std::memory_order_release);
}

void Engine::note_released(TaskCore* token) noexcept {
  std::lock_guard guard(held_mutex_);
  std::erase_if(held_, [token](const Held& held) { return held.token == token; });
  held_count_.store(held_.size(), std::memory_order_release);
}

void Engine::release_made_by(std::uint64_t maker) noexcept {
  std::vector<TaskCore*> tokens;
  {
    std::lock_guard guard(held_mutex_);
    std::erase_if(held_, [&](const Held& held) {
      if (held.maker != maker) return false;
      tokens.push_back(held.token);
      return true;
    });
    held_count_.store(held_.size(), std::memory_order_release);
  }
  for (TaskCore* token : tokens) {
    HandleImpl& handle = *token->inline_accesses[0].handle;
    bool held = false;
    {
      std::lock_guard guard(handle.dep_lock);
      held = std::erase_if(handle.acquisitions,
                           [token](const auto& acquisition) { return acquisition.token == token; }) > 0;
    }
    if (held) complete_manual(token);  // unless released meanwhile (moved to another thread)
  }
}

void Engine::disown(TaskCore* token) noexcept {
  {
    std::lock_guard guard(held_mutex_);
    for (Held& held : held_) {
      if (held.token == token) held.holder = 0;
    }
  }
  HandleImpl& handle = *token->inline_accesses[0].handle;
  std::lock_guard guard(handle.dep_lock);
  for (auto& held : handle.acquisitions) {
    if (held.token == token) held.holder = 0;
  }
}

TaskCore* Engine::held_acquisition_that(std::uint64_t holder, const std::function<bool(TaskCore*)>& blocks) const {
  if (held_count_.load(std::memory_order_acquire) == 0) return nullptr;
  std::lock_guard guard(held_mutex_);  // note_released waits: the tokens stay unfinished
  for (const Held& held : held_) {
    if (held.holder != holder || !blocks(held.token)) continue;
    retain(held.token);
    return held.token;
  }
  return nullptr;
}

bool Engine::wait_all(const std::chrono::steady_clock::time_point* deadline) {
  if (inside_task_of(this)) {
    throw waits_for_own_task("wait_all() (or wait_all_until)");
  }
  if (simulating()) {
    simulate_while_waiting([this] { return outstanding_.load(std::memory_order_seq_cst) == 0; }, deadline);
  }
  // Once shutdown_until has given up on the work, nothing is left to wait for (give_up_waits):
  // the wait ends, saying that the work did not finish.
  const auto finished = [this] {
    return outstanding_.load(std::memory_order_seq_cst) == 0 && !gave_up_.load(std::memory_order_seq_cst);
  };
  const auto over = [this] {
    return outstanding_.load(std::memory_order_seq_cst) == 0 || gave_up_.load(std::memory_order_seq_cst);
  };
  while (!over()) {
    all_done_waiters_.fetch_add(1, std::memory_order_seq_cst);
    std::uint32_t epoch = all_done_epoch_.load(std::memory_order_seq_cst);
    bool in_time = true;
    if (!over()) in_time = futex_wait(all_done_epoch_, epoch, deadline);
    all_done_waiters_.fetch_sub(1, std::memory_order_seq_cst);
    if (!in_time) return finished();
  }
  return finished();
}

void Engine::wait_all_saying_why_it_lasts() {
  const auto patience = std::chrono::seconds(10);
  const auto deadline = std::chrono::steady_clock::now() + patience;
  if (wait_all(&deadline)) return;
  // An acquisition moved away from the thread that made it (to the one destroying the runtime,
  // say) is nobody's to release here: the tasks after it would wait for ever, without a word.
  std::string held;
  {
    std::lock_guard guard(held_mutex_);
    for (const Held& acquisition : held_) {
      held += std::string(held.empty() ? "" : ", ") + acquisition.token->display_name();
    }
  }
  if (!held.empty()) {
    std::fputs(("hetflow: the runtime's shutdown has waited " + std::to_string(patience.count()) + " s for " +
                std::to_string(outstanding()) + " unfinished tasks; acquisitions still held, which the tasks after " +
                "them wait for: " + held + " (release them before the runtime is destroyed)\n")
                   .c_str(),
               stderr);
  }
  wait_all();
}

void Engine::wait_for_acquisitions_saying_why(const std::vector<std::shared_ptr<HandleImpl>>& handles) {
  // With no task after it, an acquisition nobody here may release (moved away from the thread
  // that made it, or made by a thread gone since) held the shutdown in unregister for ever
  // without a word: wait_all had nothing to wait for.
  const auto held = [&handles] {
    std::string names;
    for (const auto& handle : handles) {
      std::lock_guard guard(handle->dep_lock);
      for (const auto& acquisition : handle->acquisitions) {
        names += std::string(names.empty() ? "" : ", ") + acquisition.token->display_name();
      }
    }
    return names;
  };
  const auto patience = std::chrono::seconds(10);
  const auto deadline = std::chrono::steady_clock::now() + patience;
  for (std::string names = held(); !names.empty(); names = held()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fputs(("hetflow: the runtime's shutdown has waited " + std::to_string(patience.count()) +
                  " s for acquisitions still held, which it unregisters the data of: " + names +
                  " (release them before the runtime is destroyed)\n")
                     .c_str(),
                 stderr);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Engine::abort() {
  aborted_.store(true, std::memory_order_release);
  aborting_.store(true, std::memory_order_release);
  for (const auto& driver : config.drivers) driver->abort();
}

void Engine::shutdown() {
  if (inside_task_of(this)) {
    throw waits_for_own_task("shutdown()");
  }
  std::lock_guard guard(shutdown_mutex_);
  if (stopped_.load(std::memory_order_acquire)) return;
  shutting_down_.store(true, std::memory_order_seq_cst);
  release_made_by(thread_number());
  wait_all_saying_why_it_lasts();
  std::vector<std::shared_ptr<HandleImpl>> handles;
  {
    std::lock_guard registry_guard(registry_mutex_);
    handles = registry_;
  }
  wait_for_acquisitions_saying_why(handles);
  for (auto& handle : handles) unregister(*handle);
  execution_->stop();
  PerfModelRegistry::instance().save_all();
  if (recorder_) recorder_->finish(now());
  execution_->report(scheduler_name_, now());
  stopped_.store(true, std::memory_order_release);
}

unsigned Engine::shutdown_until(std::chrono::steady_clock::time_point deadline) {
  if (inside_task_of(this)) {
    throw waits_for_own_task("shutdown()");
  }
  {
    std::lock_guard guard(shutdown_mutex_);
    if (stopped_.load(std::memory_order_acquire)) return 0;
    shutting_down_.store(true, std::memory_order_seq_cst);
    release_made_by(thread_number());
    if (!wait_all(&deadline)) {
      cancel_pending();  // given up on: what has not started must not run after this returns
      const unsigned left = execution_->stop_free_workers();
      PerfModelRegistry::instance().save_all();
      // The trace and the statistics as they stand: this engine may never be destroyed (its
      // workers left in a task use it), and the tasks still running are not waited for.
      if (recorder_) recorder_->finish(now());
      execution_->report(scheduler_name_, now());
      stopped_.store(true, std::memory_order_release);
      give_up_waits();  // nobody waits for ever for what will never run, or never end
      return left;
    }
  }
  shutdown();
  return 0;
}

namespace {

// The threads blocked waiting for a task (WaitingFor), across runtimes: a shutdown that gives up
// on its work ends the tasks its waits are for. Touched only by a thread about to block and
// when it wakes, never on a task's way through the engine. Never destroyed: a wait may outlive
// static destruction.
std::mutex& waits_mutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}
WaitingFor* waits_head = nullptr;  // waits_mutex()

}  // namespace

WaitingFor::WaitingFor(TaskCore* waited) noexcept : task(waited) {
  Engine* engine = nullptr;
  {
    std::lock_guard guard(waits_mutex());
    // Ended meanwhile, its engine may be gone already (the wait then returns at once); not
    // ended, its engine still waits for it, or was left by a shutdown that gave up.
    if (is_final(waited->status())) return;
    engine = waited->runtime;
    // Read under the lock that give_up_waits sets it under: either the wait is listed before
    // the shutdown gives up (and ended then), or it sees that it gave up (and ends it here).
    if (!engine->gave_up()) {
      next = waits_head;
      if (next != nullptr) next->prev = this;
      waits_head = this;
      listed = true;
      return;
    }
  }
  engine->give_up_on(waited);
}

WaitingFor::~WaitingFor() {
  if (!listed) return;
  std::lock_guard guard(waits_mutex());  // not the engine's: it may be gone once the wait ended
  (prev != nullptr ? prev->next : waits_head) = next;
  if (next != nullptr) next->prev = prev;
}

void Engine::give_up_waits() {
  std::vector<TaskCore*> waited;
  {
    std::lock_guard guard(waits_mutex());
    gave_up_.store(true, std::memory_order_seq_cst);
    for (const WaitingFor* wait = waits_head; wait != nullptr; wait = wait->next) {
      if (wait->task->runtime != this) continue;
      retain(wait->task);  // the waiter's future may go as soon as its wait ends
      waited.push_back(wait->task);
    }
  }
  // wait_all looks at gave_up_ (set above) whenever it wakes.
  all_done_epoch_.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(all_done_epoch_);
  // Running tasks first: their dependents then fail saying what they depended on, rather than
  // being cancelled for want of a worker.
  std::stable_partition(waited.begin(), waited.end(),
                        [](const TaskCore* task) { return task->status() == TaskStatus::running; });
  for (TaskCore* task : waited) {
    give_up_on(task);
    release(task);
  }
}

void Engine::give_up_on(TaskCore* task) noexcept {
  if (task->flags & TaskCore::kManual) {
    // when_any's result ends with the first of its inputs to end; other manual tasks (an
    // acquisition, say) are their owners' to end.
    std::vector<TaskCore*> inputs;
    try {
      inputs = when_any_inputs(task);
    } catch (...) {  // NOLINT(bugprone-empty-catch): no room to list them: the wait goes on
    }
    for (TaskCore* input : inputs) {
      if (input->runtime == this) give_up_on(input);
      release(input);
    }
    return;
  }
  const std::uint32_t marks = given_up_marks() | TaskCore::kToldEarlyBit;
  for (;;) {
    const TaskStatus status = task->status();
    if (is_final(status)) return;  // ended already, by whoever ended it
    // Not started: cancelled. Its queue's entry, if any, stays; a thread that takes it finishes
    // it (begin), as for a task the application cancelled.
    if (status == TaskStatus::running ? abandon_running(task, marks)
                                      : transition(task, status, TaskStatus::cancelled, marks)) {
      break;
    }
  }
  count_task_done();
  cancel_queued(task);  // its dependents are told now
}

bool Engine::abandon_running(TaskCore* task, std::uint32_t marks) noexcept {
  std::exception_ptr error;
  try {
    error = std::make_exception_ptr(CancelledError(
        "hetflow: task '" + std::string(task->display_name()) +
        "' did not finish: the runtime's shutdown gave up on it while it ran (its body may still be running, "
        "detached)"));
  } catch (...) {
    error = std::current_exception();
  }
  // Against conclude's error path, which writes the task's error under this lock too.
  std::lock_guard guard(task->lock);
  std::uint32_t old = task->state.load(std::memory_order_relaxed);
  do {
    if (static_cast<TaskStatus>(old & TaskCore::kStatusMask) != TaskStatus::running) return false;
    // Marked first, still running: from now on the thread that runs it publishes nothing.
  } while (!task->state.compare_exchange_weak(old, old | TaskCore::kGivenUpBit, std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
  task->error = std::move(error);
  set_final(task, TaskStatus::failed, marks);
  return true;
}

std::shared_ptr<HandleImpl> Engine::register_data(void* ptr, const DataLayout& layout, std::string name,
                                                  const std::string& where) {
  auto handle = std::make_shared<HandleImpl>(*this, ptr, layout, std::move(name));
  if (!where.empty()) registered_memory_.add(*handle, where);
  for (unsigned node = 1; node < node_count(); ++node)
    node_memory(node).device().host_buffer_added(ptr, layout.span_bytes());
  std::lock_guard guard(registry_mutex_);
  handle->registry_index = registry_.size();
  registry_.push_back(handle);
  return handle;
}

}  // namespace hetflow::detail
