#include "core/threaded_execution.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <system_error>
#include <vector>

#include "core/task_state.hpp"
#include "data/coherence.hpp"
#include "hetflow/error.hpp"
#include "hetflow/perfmodel.hpp"
#include "perfmodel/bus.hpp"
#include "perfmodel/storage.hpp"
#include "platform/topology.hpp"
#include "trace/recorder.hpp"
#include "util/cpu_relax.hpp"

namespace hetflow::detail {
namespace {

// A model that cannot record a run (a hook that throws) does not undo the task's result; it is
// said once per process.
void record_run(PerfModelHook& model, TaskCore* task, Arch arch, double seconds) {
  std::string failure;
  try {
    model.record(arch, footprint(task), seconds);
    return;
  } catch (const abi::__forced_unwind&) {
    throw;
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "an exception that is not a std::exception";
  }
  static std::atomic<bool> warned{false};
  if (warned.exchange(true)) return;
  warn(std::string("the performance model of '") + task->display_name() + "' could not record a run (" + failure +
       "); the task's result stands (said once)");
}

/// Whether `task` names `handle`.
bool names(TaskCore* task, const HandleImpl* handle) {
  const AccessRecord* accesses = task->accesses();
  return std::any_of(accesses, accesses + task->access_count,
                     [&](const AccessRecord& r) { return r.handle == handle; });
}

/// The bytes on the worker's node held by the tasks waiting on this worker below `task` (the
/// ones it helps while they wait): they stay there until `task` ends. Each handle once, and none
/// that `task` names itself.
std::size_t held_below(TaskCore* task, const RunningFrame* waiting) {
  std::size_t bytes = 0;
  for (const RunningFrame* frame = waiting; frame != nullptr; frame = frame->outer) {
    const AccessRecord* accesses = frame->task->accesses();
    for (std::size_t i = 0; i < frame->task->access_count; ++i) {
      const HandleImpl* handle = accesses[i].handle;
      if (accesses[i].repeat || names(task, handle)) continue;
      bool counted = false;
      for (const RunningFrame* inner = waiting; inner != frame && !counted; inner = inner->outer) {
        counted = names(inner->task, handle);
      }
      if (!counted) bytes += handle->layout.span_bytes();
    }
  }
  return bytes;
}

/// What `task` needs on a node against what the node has: its data (each handle once), the
/// node's limit (0: none), and what the tasks waiting below it on this worker hold there.
struct Room {
  std::size_t bytes = 0;
  std::size_t limit = 0;
  std::size_t held = 0;
  [[nodiscard]] bool enough() const { return limit == 0 || (bytes <= limit && held <= limit - bytes); }
};

Room room_for(const Engine& engine, TaskCore* task, unsigned node, const RunningFrame* waiting) {
  Room room{.limit = engine.node_memory(node).limit()};
  if (room.limit == 0) return room;
  room.bytes = data_bytes(task);
  if (room.bytes <= room.limit) room.held = held_below(task, waiting);
  return room;
}

/// Makes the task's data valid on the worker's node and runs its body there.
void run_body(Engine& engine, TaskCore* task, WorkerState& worker, TaskContext& context) {
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
  if (worker.running->outer != nullptr && worker.driver != nullptr &&
      worker.driver->mid_exchange(worker.driver_index)) {
    throw Error("hetflow: task '" + std::string(task->display_name()) + "' would run on worker " +
                std::to_string(worker.info.id) + " while task '" + worker.running->outer->task->display_name() +
                "', which waits there for it, is in the middle of an exchange with that worker's driver (a " +
                "process worker's reply still to read: they would take each other's replies); wait for it before " +
                "sending, or outside the task");
  }
  if (engine.node_count() > 1) {
    if (node != kHostNode) check_fits(engine, task, node, worker.running->outer);
    // Every copy starts before the first is waited for, so that they overlap each other.
    for (; fetched < task->access_count; ++fetched)
      fetch(*accesses[fetched].handle, node, reads(accesses[fetched].mode));
    for (std::size_t i = 0; i < task->access_count; ++i) complete_fetch(*accesses[i].handle, node, accesses[i].mode);
    if (node != kHostNode) engine.look_ahead(worker);
  }
  PerfModelHook* model = task->codelet != nullptr ? task->codelet->model.get() : nullptr;
  Recorder* recorder = engine.recorder();
  const bool timed = model != nullptr || recorder != nullptr;
  const double start = timed ? engine.now() : 0;
  const double nested_at_start = worker.nested_seconds;
  worker.batch_mark = start;
  worker.own_part_end = -1;
  try {
    // A body that went on without the worker after a wait (SeatlessTask) takes it back here,
    // however it ends: what follows is the worker's.
    struct Rejoin {
      Engine& engine;
      WorkerState& worker;
      ~Rejoin() { engine.rejoin(worker); }
    } rejoin{engine, worker};
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
    // The worker was busy all the same: the trace and the statistics show the failed run (a
    // batch's lead, its own part: its companions show theirs).
    if (recorder != nullptr) {
      const double end = worker.own_part_end >= 0 ? worker.own_part_end : engine.now();
      recorder->task(worker.info.id, task->display_name(), footprint(task), start, end);
    }
    throw;
  }
  const double setup = take_setup_seconds(worker);
  if (worker.driver != nullptr) worker.driver->finish_task(worker.driver_index);
  if (!timed) return;
  const double end = engine.now();
  const double not_its_own = setup + (worker.nested_seconds - nested_at_start);
  if (model != nullptr) record_run(*model, task, worker.info.arch, std::max(0.0, end - start - not_its_own));
  // A batch's lead shows its own part; its companions' slices follow it (Engine::finish_companion).
  const double own_end = worker.own_part_end >= 0 ? worker.own_part_end : end;
  if (recorder != nullptr) recorder->task(worker.info.id, task->display_name(), footprint(task), start, own_end);
}

}  // namespace

std::unique_ptr<Execution> make_threaded_execution() { return std::make_unique<ThreadedExecution>(); }

void check_fits(const Engine& engine, TaskCore* task, unsigned node, const RunningFrame* waiting) {
  const Room room = room_for(engine, task, node, waiting);
  if (room.enough()) return;
  const std::string where = "memory node " + std::to_string(node) + " (" + engine.node_name(node) +
                            "), which holds at most " + std::to_string(room.limit) + " bytes";
  AccessRecord* accesses = task->accesses();
  for (std::size_t i = 0; i < task->access_count; ++i) {
    const HandleImpl& handle = *accesses[i].handle;
    if (handle.layout.span_bytes() > room.limit) {
      throw Error("hetflow: data " + handle.display_name() + " (" + std::to_string(handle.layout.span_bytes()) +
                  " bytes) does not fit on " + where);
    }
  }
  const std::string needs =
      "hetflow: task '" + std::string(task->display_name()) + "' needs " + std::to_string(room.bytes) + " bytes";
  // Its buffers must all be there at once: no eviction can make room.
  if (room.bytes > room.limit) throw Error(needs + " of data at once on " + where);
  // Nor can the tasks waiting below it on this thread release theirs before it ends.
  throw Error(needs + " of data at once on " + where +
              ", of which tasks waiting inside themselves on this worker (it runs while they wait) hold " +
              std::to_string(room.held) +
              " until it ends: it could never fit; raise the memory limit, or wait for it outside a task");
}

ArchMask archs_with_room(const Engine& engine, TaskCore* task, ArchMask where) {
  if (engine.node_count() == 1) return where;
  ArchMask fitting;
  for (const auto& worker : engine.worker_infos()) {
    if (!where.contains(worker.arch) || fitting.contains(worker.arch)) continue;
    if (engine.can_hold(task, worker.memory_node)) fitting = fitting | worker.arch;
  }
  return fitting.empty() ? where : fitting;
}

bool may_run_nested(const Engine& engine, TaskCore* task, const WorkerState& worker) {
  if (worker.driver != nullptr && worker.driver->mid_exchange(worker.driver_index)) return false;
  const unsigned node = worker.info.memory_node;
  return node == kHostNode || engine.node_count() == 1 || room_for(engine, task, node, worker.running).enough();
}

void execute(Engine& engine, TaskCore* task, WorkerState& worker) {
  if (engine.begin(task)) run_started(engine, task, worker);
}

void run_started(Engine& engine, TaskCore* task, WorkerState& worker) {
  // A task run while a lead waits (help_while) has its own batch: the lead's companions are set
  // aside, so that this task neither numbers its companions after them nor fails them when it ends.
  std::vector<TaskCore*> waiting_lead_companions;
  if (!worker.companions.empty()) waiting_lead_companions.swap(worker.companions);
  TaskContext context(task, &worker);
  const RunningFrame frame{task, worker.running};
  struct Running {
    WorkerState& worker;
    const RunningFrame* outer;
    ~Running() { worker.running = outer; }
  } running{worker, std::exchange(worker.running, &frame)};
  std::exception_ptr error;
  try {
    run_body(engine, task, worker, context);
  } catch (const abi::__forced_unwind&) {
    throw;  // the thread is being ended (pthread_exit: Python ends threads that outlive it)
  } catch (...) {
    error = std::current_exception();
  }
  if (!worker.companions.empty()) {
    for (std::size_t i = 0; i < worker.companions.size(); ++i) {
      TaskCore* companion = worker.companions[i];
      if (companion == nullptr) continue;
      companion->ops->destroy_body(companion->storage());
      companion->ops = nullptr;
      engine.finish_companion(
          worker, i,
          std::make_exception_ptr(Error(std::string("hetflow: the batch of '") + task->display_name() +
                                        "' this task was sent with did not complete it")));
    }
    worker.companions.clear();
  }
  if (!waiting_lead_companions.empty()) worker.companions.swap(waiting_lead_companions);
  engine.conclude(task, std::move(error));
}

void ThreadedExecution::add_workers(Engine& engine) {
  const Config& config = engine.config;
  const std::vector<int> cpus = *config.pin_workers ? pinning_order(*config.ncpus) : std::vector<int>{};
  for (unsigned i = 0; i < *config.ncpus; ++i) {
    engine.add_worker(Arch::cpu, kHostNode).pin_cpu = cpus.empty() ? -1 : cpus[i % cpus.size()];
  }
  for (const auto& driver : config.drivers) {
    if (!driver) throw InvalidArgument("Config::drivers holds an empty driver");
    for (unsigned i = 0; i < driver->worker_count(); ++i) {
      std::shared_ptr<ext::MemoryNode> memory = driver->memory_node(i);
      const unsigned node = memory ? engine.add_memory_node(std::move(memory)) : kHostNode;
      WorkerState& worker = engine.add_worker(driver->arch(), node);
      worker.driver = driver.get();
      worker.driver_index = i;
    }
  }
}

void ThreadedExecution::model_bus(BusModel& bus, const std::vector<std::string>& node_names) {
  if (node_names.size() > 1) bus.calibrate(PerfModelRegistry::instance().directory().parent_path(), node_names);
}

void ThreadedExecution::start(Engine& engine) {
  engine_ = &engine;
  spin_ = std::chrono::microseconds(*engine.config.spin_us);
  most_threads_ = engine.workers().size() + *engine.config.spare_threads;
  for (const auto& worker : engine.workers()) {
    WorkerThread& thread = threads_.emplace_back();
    try {
      thread.thread = SizedThread(*engine.config.worker_stack_bytes, [this, &thread, w = worker.get()] {
        if (w->driver != nullptr) w->driver->start_worker(w->driver_index);
        thread_main(thread, w);
      });
    } catch (const std::system_error& e) {
      // Out of threads or address space (ulimit -u, ulimit -v): the threads already started
      // stop, and the runtime is not made, rather than end the program (std::terminate) as the
      // engine unwinds with their threads still running.
      threads_.pop_back();
      stop();
      const std::size_t made = threads_.size();
      threads_.clear();
      throw Error("hetflow: cannot start the thread of worker " + std::to_string(made) + " (of " +
                  std::to_string(engine.workers().size()) + "): " + e.code().message() +
                  "; the process may have reached its limit on threads or memory (ulimit -u, ulimit -v, "
                  "ulimit -s: RLIMIT_NPROC, RLIMIT_AS, RLIMIT_STACK); start fewer workers (ncpus, nprocs) "
                  "or raise the limit");
    }
  }
}

void ThreadedExecution::wake_parked() {
  std::lock_guard lock(threads_mutex_);
  for (WorkerThread* thread : parked_) thread->wake.notify_one();
  parked_or_stopping_.notify_all();
}

void ThreadedExecution::stop() {
  stopping_.store(true, std::memory_order_release);
  for (auto& idle : idle_) idle.notify_all();
  wake_parked();
  // No thread is added once stopping_ is set (hand_over checks it under threads_mutex_).
  for (WorkerThread& thread : threads_) {
    if (thread.thread.joinable()) thread.thread.join();
  }
}

unsigned ThreadedExecution::stop_free_workers() {
  // Free threads see `stopping_` and leave; one still in a task cannot be stopped.
  stopping_.store(true, std::memory_order_release);
  for (auto& idle : idle_) idle.notify_all();
  wake_parked();
  const auto grace = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  unsigned left = 0;
  for (WorkerThread& thread : threads_) {
    while (!thread.exited.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!thread.thread.joinable()) continue;
    if (thread.exited.load(std::memory_order_acquire)) {
      thread.thread.join();
    } else {
      thread.thread.detach();
      ++left;
    }
  }
  return left;
}

namespace {

// The worker gets back what the waiting task's thread kept of it while it was lent.
void give_back_what_it_left(SeatlessTask& left) {
  WorkerState& worker = *left.worker;
  worker.companions.swap(left.companions);
  worker.running = left.running;
  worker.nested_seconds = left.nested_seconds;
}

bool may_be_lent(const WorkerState& worker) {
  return worker.driver == nullptr || worker.driver->spare_threads_may_run(worker.driver_index);
}

// The CPU this thread was pinned to, -1 for none.
thread_local int tl_pinned_cpu = -1;

}  // namespace

Execution::Lending ThreadedExecution::lend_worker_while(WorkerState& worker, const std::function<void()>& block) {
  if (!may_be_lent(worker) || *engine_->config.spare_threads == 0 || stopping_.load(std::memory_order_acquire)) {
    return Lending::not_lendable;
  }
  // What belongs to the task running on this thread stays with it; the next thread starts bare.
  auto left = std::make_unique<SeatlessTask>();
  left->worker = &worker;
  left->companions.swap(worker.companions);
  left->running = std::exchange(worker.running, nullptr);
  left->nested_seconds = worker.nested_seconds;
  if (const Lending lending = hand_over(worker); lending != Lending::lent) {
    give_back_what_it_left(*left);
    return lending;
  }
  try {
    block();
  } catch (...) {
    take_back(worker, std::nullopt);
    give_back_what_it_left(*left);
    throw;
  }
  // The thread running the worker hands it back between two tasks; if its task goes on (it may
  // wait for what this one does next: a lock it holds), this one goes on without the worker.
  if (take_back(worker, kSeatPatience)) {
    give_back_what_it_left(*left);
  } else {
    set_current_worker(nullptr);
    set_seatless_task(left.release());
  }
  return Lending::lent;
}

void ThreadedExecution::rejoin(WorkerState& worker) {
  SeatlessTask* left = seatless_task();
  if (left == nullptr || left->worker != &worker) return;
  // What this thread held on to for the worker's tasks (the GIL) may be what the task of the
  // thread running the worker needs to end.
  if (worker.driver != nullptr) worker.driver->worker_idle(worker.driver_index);
  take_back(worker, std::nullopt);
  const std::unique_ptr<SeatlessTask> owned(left);
  set_seatless_task(nullptr);
  give_back_what_it_left(*left);
  set_current_worker(&worker);
}

Execution::Lending ThreadedExecution::hand_over(WorkerState& worker) {
  // A thread asking for the worker back gets it first, unless a task is waiting to run on it
  // (deferred): a spare runs that one first. Handed between tasks that each wait in turn (event
  // loops waiting in slices), the worker ran none of the queued tasks they waited for.
  if (worker.deferred == nullptr && hand_back(worker)) return Lending::lent;
  std::unique_lock lock(threads_mutex_);
  // At the limit, a thread that has just handed a worker back and is on its way to park is as
  // good as parked: the wait would otherwise fail, or block to its deadline with the worker idle.
  parked_or_stopping_.wait(lock, [&] {
    return !parked_.empty() || parking_ == 0 || threads_.size() < most_threads_ ||
           stopping_.load(std::memory_order_acquire);
  });
  if (stopping_.load(std::memory_order_acquire)) return Lending::not_lendable;
  if (!parked_.empty()) {
    WorkerThread* spare = parked_.back();
    parked_.pop_back();
    spare->lent = &worker;
    spare->wake.notify_one();
    return Lending::lent;
  }
  if (threads_.size() >= most_threads_) return Lending::no_thread_left;
  WorkerThread& spare = threads_.emplace_back();
  try {
    spare.thread =
        SizedThread(*engine_->config.worker_stack_bytes, [this, &spare, w = &worker] { thread_main(spare, w); });
  } catch (const std::system_error&) {
    threads_.pop_back();
    return Lending::no_thread_left;
  }
  return Lending::lent;
}

bool ThreadedExecution::hand_back(WorkerState& worker) {
  WorkerSeat& seat = worker.seat;
  std::lock_guard lock(seat.mutex);
  if (seat.asking.load(std::memory_order_relaxed) == 0) return false;
  seat.asking.fetch_sub(1, std::memory_order_relaxed);
  ++seat.handed;
  seat.handed_back.notify_all();
  return true;
}

bool ThreadedExecution::take_back(WorkerState& worker, std::optional<std::chrono::milliseconds> patience) {
  WorkerSeat& seat = worker.seat;
  std::unique_lock lock(seat.mutex);
  if (!seat.held) {  // every thread left it as the runtime stopped: this task still ends on it
    seat.held = true;
    return true;
  }
  seat.asking.fetch_add(1, std::memory_order_release);
  lock.unlock();
  idle_[static_cast<unsigned>(worker.info.arch)].notify_all();  // the thread running it may sleep
  lock.lock();
  const auto handed = [&] { return seat.handed > 0; };
  if (!patience) {
    seat.handed_back.wait(lock, handed);
  } else if (!seat.handed_back.wait_for(lock, *patience, handed)) {
    // Not asking any more: the thread running the worker goes on serving it (the tasks this one
    // waits for next may need it) until this one asks again.
    seat.asking.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  --seat.handed;
  return true;
}

WorkerState* ThreadedExecution::park(WorkerThread& self) {
  std::unique_lock lock(threads_mutex_);
  parked_.push_back(&self);
  --parking_;
  parked_or_stopping_.notify_all();
  self.wake.wait(lock, [&] { return self.lent != nullptr || stopping_.load(std::memory_order_acquire); });
  if (self.lent == nullptr) {
    std::erase(parked_, &self);
    return nullptr;
  }
  return std::exchange(self.lent, nullptr);
}

void ThreadedExecution::thread_main(WorkerThread& self, WorkerState* worker) {
  while (worker != nullptr) {
    set_current_worker(worker);
    if (worker->pin_cpu >= 0 && worker->pin_cpu != tl_pinned_cpu) {
      pin_current_thread(worker->pin_cpu);
      tl_pinned_cpu = worker->pin_cpu;
    }
    const Left left = worker_loop(*worker);
    set_current_worker(nullptr);
    if (left == Left::stopping) break;
    worker = park(self);
  }
  self.exited.store(true, std::memory_order_release);
}

ext::SchedTask* ThreadedExecution::find_task(WorkerState& worker) {
  const auto deadline = std::chrono::steady_clock::now() + spin_;
  const auto yield_after = std::chrono::steady_clock::now() + spin_ / 4;
  for (unsigned round = 0;; ++round) {
    if (ext::SchedTask* task = engine_->next_task(worker)) return task;
    if ((round & 15u) == 15u) {
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline || stopping_.load(std::memory_order_acquire) ||
          worker.seat.asking.load(std::memory_order_relaxed) > 0) {
        return nullptr;
      }
      if (now >= yield_after) std::this_thread::yield();
    }
    for (int i = 0; i < 16; ++i) cpu_relax();
  }
}

ThreadedExecution::Left ThreadedExecution::worker_loop(WorkerState& worker) {
  Engine& engine = *engine_;
  IdleWorkers& idle = idle_[static_cast<unsigned>(worker.info.arch)];
  // Only the thread running the worker hands it back, so one that sees a thread asking will.
  // What it held on to between tasks (the GIL) goes first, for the asking thread to take.
  // False when the asking thread gave up meanwhile (take_back's patience ran out): nobody took
  // the worker, so this thread goes on serving it rather than leave it without a thread.
  const auto hand_back_and_leave = [this, &worker] {
    if (worker.driver != nullptr) worker.driver->worker_idle(worker.driver_index);
    {
      std::lock_guard lock(threads_mutex_);
      ++parking_;  // before the hand-back: the thread taking the worker may lend it at once
    }
    if (hand_back(worker)) return true;
    std::lock_guard lock(threads_mutex_);
    --parking_;
    parked_or_stopping_.notify_all();
    return false;
  };
  // Woken from its sleep, a worker searches as the others do: one that finds a task while others
  // sleep wakes one of them too. Taking its task without it, the woken worker left the other
  // tasks pushed meanwhile (whose pushes woke nobody while it searched) to sleeping workers.
  bool woken = false;
  for (;;) {
    // A thread whose wait is over takes the worker back between two tasks (not with a task
    // taken already: it runs next on this worker, which that thread's task may also defer to).
    if (worker.seat.asking.load(std::memory_order_acquire) > 0 && worker.deferred == nullptr && hand_back_and_leave()) {
      return Left::handed_back;
    }
    if (!std::exchange(woken, false)) {
      if (ext::SchedTask* task = engine.next_task(worker)) {
        execute(engine, static_cast<TaskCore*>(task), worker);
        continue;
      }
    }
    if (worker.driver != nullptr) worker.driver->worker_idle(worker.driver_index);
    idle.begin_search();
    if (ext::SchedTask* task = find_task(worker)) {
      if (idle.end_search()) idle.notify_one();  // the last searcher found work: maybe there is more
      execute(engine, static_cast<TaskCore*>(task), worker);
      continue;
    }
    std::uint32_t epoch = idle.prepare_wait();
    idle.end_search();
    if (ext::SchedTask* task = engine.next_task(worker)) {
      idle.cancel_wait();
      idle.notify_one();
      execute(engine, static_cast<TaskCore*>(task), worker);
      continue;
    }
    if (worker.seat.asking.load(std::memory_order_acquire) > 0) {
      idle.cancel_wait();
      continue;
    }
    if (stopping_.load(std::memory_order_acquire)) {
      idle.cancel_wait();
      break;
    }
    idle.commit_wait(epoch);
    woken = true;
  }
  // The last thread to leave the worker stops it; one whose wait ends later still finishes its
  // task on it (take_back).
  for (;;) {
    bool asked = false;
    {
      std::lock_guard lock(worker.seat.mutex);
      asked = worker.seat.asking.load(std::memory_order_relaxed) > 0;
      worker.seat.held = asked;
    }
    if (!asked) break;
    if (hand_back_and_leave()) return Left::handed_back;
  }
  if (worker.driver != nullptr) worker.driver->stop_worker(worker.driver_index);
  return Left::stopping;
}

}  // namespace hetflow::detail
