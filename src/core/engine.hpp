#pragma once
// The engine: the life of a task, from submission through its dependencies and the ready queues
// to its one end (conclude, then finish). Which workers run tasks, and how, is an Execution's
// (execution.hpp); the data layer sees the engine only as its DataContext.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/driver_claims.hpp"
#include "core/execution.hpp"
#include "core/idle_workers.hpp"
#include "core/scheduler_context.hpp"
#include "core/task.hpp"
#include "core/task_pool.hpp"
#include "core/task_state.hpp"
#include "core/worker.hpp"
#include "data/data_context.hpp"
#include "data/handle.hpp"
#include "data/node_memory.hpp"
#include "data/registered_memory.hpp"
#include "hetflow/config.hpp"
#include "hetflow/ext/scheduler.hpp"
#include "hetflow/future.hpp"
#include "perfmodel/bus.hpp"
#include "sched/task_fifo.hpp"
#include "trace/recorder.hpp"

namespace hetflow {
class Runtime;
}

namespace hetflow::detail {

/// The size a task's performance is modelled by: the bytes of the data it names.
std::size_t footprint(TaskCore* task) noexcept;
/// The bytes of `task`'s data, each handle once: what it needs on a memory node at once.
std::size_t data_bytes(TaskCore* task) noexcept;
/// The largest of the buffers a task's data take on a device node.
std::size_t largest_buffer_bytes(TaskCore* task) noexcept;

class Engine final : public DataContext {
 public:
  /// Tasks run as `execution` has its workers run them.
  Engine(Runtime& facade, Config config, std::unique_ptr<Execution> execution);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  Runtime& facade;
  const Config config;

  /// Whether `engine` is a constructed engine not yet destroyed (futures outlive their engine).
  [[nodiscard]] static bool alive(const Engine* engine);

  // Task lifecycle
  /// Counts a task about to be submitted (not a manual one) in what wait_all waits for; false,
  /// counting nothing, when this thread may not submit any more (shutdown: the task would be lost).
  [[nodiscard]] bool admit_task() noexcept;
  /// Submits a task: admitted first unless manual.
  void submit(TaskCore* task, const std::vector<FutureBase>& after);
  void make_ready(TaskCore* task);
  /// make_ready for a manual task: calls it back, or completes it, as its kind says.
  void start_manual(TaskCore* task);
  /// The worker's next task: one pinned to it first, else the scheduler's choice.
  /// `ahead`: the worker still runs a task and takes its next one early (look_ahead).
  /// A task the scheduler gives a worker whose memory node can never hold the task's data goes
  /// to a worker whose node can (send_where_it_fits), and the worker asks again.
  ext::SchedTask* next_task(WorkerState& worker, bool ahead = false) {
    if (worker.deferred != nullptr) return std::exchange(worker.deferred, nullptr);
    for (;;) {
      if (ext::SchedTask* task = pinned_[worker.info.id]->queue.pop(worker.info.arch)) return task;
      if (ext::SchedTask* task = pinned_[worker.info.id]->passed.pop(worker.info.arch)) return task;
      ext::SchedTask* task = ahead ? scheduler_->pop_ahead(worker.info.id) : scheduler_->pop(worker.info.id);
      if (task == nullptr) return nullptr;
      count_ready(task->where, -1);
      if (worker.info.memory_node == kHostNode || !send_where_it_fits(worker, static_cast<TaskCore*>(task))) {
        return task;
      }
    }
  }
  /// Whether memory node `node` can ever hold all of `task`'s data at once (its limit, if any,
  /// and the largest buffer it allocates, if it has such a bound).
  [[nodiscard]] bool can_hold(TaskCore* task, unsigned node) const noexcept {
    if (node == kHostNode) return true;
    const NodeMemory& memory = node_memory(node);
    return (memory.limit() == 0 || data_bytes(task) <= memory.limit()) &&
           (memory.max_buffer() == 0 || largest_buffer_bytes(task) <= memory.max_buffer());
  }
  /// Whether an idle worker has a task pinned to it waiting (a simulated execution looks again).
  [[nodiscard]] bool has_pinned_queued(unsigned worker) const noexcept {
    return !pinned_[worker]->queue.empty() || !pinned_[worker]->passed.empty();
  }
  /// Starts a task a worker took. False if it was cancelled meanwhile or the runtime aborts: then
  /// it is finished here, cancelled. False too for the queue's entry of a task claimed meanwhile
  /// (claim): the entry is dropped.
  bool begin(TaskCore* task) noexcept {
    if (aborting_.load(std::memory_order_acquire)) transition(task, TaskStatus::ready, TaskStatus::cancelled);
    if (transition(task, TaskStatus::ready, TaskStatus::running)) return true;
    if (task->state.load(std::memory_order_acquire) & TaskCore::kClaimedBit) {
      drop_claimed_entry(task);
    } else {
      finish(task);
    }
    return false;
  }
  /// Starts a queued task for a task that waits for it, to run on the waiting task's thread
  /// (run_started) ahead of the scheduler's turn. Its queue's entry stays, and whoever takes it
  /// from the queue drops it (begin): no scheduler needs to find it. Only a task with no data and
  /// no codelet (schedulers look at those of the tasks they hold, and the entry may outlive both).
  /// False, changing nothing, if it is not queued or the runtime aborts.
  bool claim(TaskCore* task) noexcept {
    if (task->access_count != 0 || task->codelet != nullptr || (task->flags & TaskCore::kManual) ||
        aborting_.load(std::memory_order_acquire)) {
      return false;
    }
    return transition(task, TaskStatus::ready, TaskStatus::running, TaskCore::kClaimedBit);
  }
  /// Starts moving the data of the task this worker runs next while the current one runs.
  void look_ahead(WorkerState& worker);
  std::size_t take_companions(WorkerState& worker, const TaskCore* lead, std::size_t max);
  void finish_companion(WorkerState& worker, std::size_t index, std::exception_ptr error) noexcept;
  /// The running batch's lead finished its own part: for the trace and the statistics.
  void own_part_done(WorkerState& worker) noexcept;
  /// The one way a task that started ends: publishes its outcome (done, or failed with `error`, its
  /// body gone), then finishes it.
  void conclude(TaskCore* task, std::exception_ptr error) noexcept;
  /// conclude for a manual task (complete_manual), which its owner may end from any thread: the
  /// destructor waits for such a call to return.
  void conclude_manual(TaskCore* task, std::exception_ptr error) noexcept;
  /// The task's outcome is set: tell its dependents, count it done, drop the engine's reference.
  void finish(TaskCore* task) noexcept;
  /// A task cancelled while queued: its dependents, callbacks and waiting acquisitions are told
  /// now rather than when a worker takes it from the queue (which then finishes it).
  void cancel_queued(TaskCore* task) noexcept;

  /// Submits a task that is never scheduled: once its dependencies are met it is "started", and
  /// it finishes when its owner calls complete_manual (acquisitions, gates). Not counted by wait_all.
  TaskCore* submit_manual(std::string name, HandleImpl* handle, AccessMode mode, std::uint32_t refs,
                          ManualCallback on_start = {});

  /// The application holds the started acquisition `token` on thread `holder` (thread_number();
  /// 0: nobody's in particular, acquire_then's), until note_released.
  void note_acquired(TaskCore* token, std::uint64_t holder);
  void note_released(TaskCore* token) noexcept;
  /// The acquisition object moved: whoever holds it now may release it, so no thread's waits
  /// are refused on its account any more.
  void disown(TaskCore* token) noexcept;
  /// Releases the acquisitions thread `maker` made and that are still held, moved since or not
  /// (a shutdown on that thread would wait for them for ever): the tasks behind them go on with
  /// the data as the program left them.
  void release_made_by(std::uint64_t maker) noexcept;
  /// An acquisition thread `holder` holds for which `blocks(token)` is true, retained (the caller
  /// releases it), or nullptr. None is released meanwhile: the tasks after one stay pending.
  [[nodiscard]] TaskCore* held_acquisition_that(std::uint64_t holder,
                                                const std::function<bool(TaskCore*)>& blocks) const;

  /// The owner of the manual task `token` gives up waiting for it to start (the wait was
  /// refused): `flag` (kAbandoned, kUnregisters) makes it end, or unregister, as it starts.
  /// False if it has started already: the owner then ends it itself.
  [[nodiscard]] bool give_up_on_start(TaskCore* token, std::uint8_t flag) noexcept;

  /// Returns false if the deadline passed first, or at once once shutdown_until gave up on the
  /// work.
  bool wait_all(const std::chrono::steady_clock::time_point* deadline = nullptr);
  void shutdown();
  /// From now on, tasks that have not started are cancelled instead of run, and drivers stop
  /// what they are running where they can (process workers are ended).
  void abort();
  /// From now on, tasks that have not started are cancelled instead of run; running ones go on.
  void cancel_pending() noexcept { aborting_.store(true, std::memory_order_release); }
  /// cancel_pending at the program's word: the tasks waiting for one it cancels have not started
  /// either, and are cancelled too, not failed because of it (unlike after abort() or a shutdown
  /// that gives up).
  void cancel_pending_and_dependents() noexcept {
    dependents_cancelled_.store(true, std::memory_order_release);
    cancel_pending();
  }
  /// shutdown() for a runtime that may have workers stuck in tasks that never return: waits
  /// for the work until `deadline`, stops the workers that are free by then (they end their
  /// drivers' workers: process workers are reaped) and leaves the others running, detached.
  /// Then it gives up on the work left: every wait for it ends (give_up_on each task waited
  /// for, now or later; wait_all returns false). Returns how many threads were left; if any, this
  /// object must never be destroyed (they use it).
  unsigned shutdown_until(std::chrono::steady_clock::time_point deadline);
  /// Whether shutdown_until gave up on the work left.
  [[nodiscard]] bool gave_up() const noexcept { return gave_up_.load(std::memory_order_acquire); }
  /// After shutdown_until gave up: ends `task` now for whoever waits for it, if it has not ended.
  /// A task that had not started is cancelled; one still running (in a thread left detached)
  /// fails with CancelledError, and its body's own end, if it comes, changes nothing. Either way
  /// it counts as finished and its dependents are told at once (they fail with DependencyError).
  /// when_any's result ends with its inputs, given up on; other manual tasks (acquisitions) are
  /// left to their owners.
  void give_up_on(TaskCore* task) noexcept;
  /// Submitted tasks not finished yet (what wait_all waits for).
  [[nodiscard]] std::int64_t outstanding() const noexcept { return outstanding_.load(std::memory_order_acquire); }
  [[nodiscard]] bool accepting_from_this_thread() const noexcept;
  /// Whether this is a forked child of the process that started the runtime: its worker
  /// threads do not exist here, so nothing submitted would ever run.
  [[nodiscard]] bool forked() const noexcept;
  /// Throws hetflow::Error, saying so, in a forked child (see forked()).
  void check_not_forked(const char* where) const;
  [[nodiscard]] bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }
  /// shutdown() has begun (it unregisters every handle before it is done).
  [[nodiscard]] bool shutting_down() const noexcept { return shutting_down_.load(std::memory_order_acquire); }

  // Workers (the execution adds them while the engine is built)
  /// Adds memory node `memory` (once: a node added before keeps its number); returns its number.
  unsigned add_memory_node(std::shared_ptr<ext::MemoryNode> memory);
  /// Adds a worker of `arch` computing in memory node `node`; it is numbered in the order added.
  WorkerState& add_worker(Arch arch, unsigned node);
  [[nodiscard]] const std::vector<std::unique_ptr<WorkerState>>& workers() const noexcept { return workers_; }

  // Data
  /// `where` names the caller whose errors a buffer overlapping other data's gets; empty: the
  /// caller orders the tasks of overlapping data itself, and the buffer is not checked.
  std::shared_ptr<HandleImpl> register_data(void* ptr, const DataLayout& layout, std::string name,
                                            const std::string& where);
  /// Waits for the tasks using the handle, then unregisters it.
  void unregister(HandleImpl& handle);
  /// Unregisters the handle once the tasks using it are done, without waiting for them.
  void unregister_async(HandleImpl& handle);
  /// Memory nodes: 0 is host RAM, then one per distinct node the drivers' workers compute in.
  [[nodiscard]] std::size_t node_count() const noexcept override { return node_names_.size(); }
  [[nodiscard]] const std::string& node_name(unsigned node) const { return node_names_[node]; }
  /// A device node (node >= 1).
  [[nodiscard]] NodeMemory& node_memory(unsigned node) const noexcept override { return *node_memory_[node]; }
  /// Starts bringing the handle's latest version to device node `node` once the tasks submitted
  /// before that write it are done (Runtime::prefetch).
  void submit_prefetch(HandleImpl& handle, unsigned node);
  /// Wakes an idle worker of `arch`, if one sleeps (a scheduler moved a task to its kind).
  void wake_one(Arch arch) noexcept {
    if (idle_ != nullptr) idle_[static_cast<unsigned>(arch)].notify_one();
  }

  // Clock, statistics and models
  /// Seconds since the runtime started (virtual seconds under simulation).
  [[nodiscard]] double now() const noexcept override;
  void record_transfer(unsigned from, unsigned to, std::size_t bytes, double start, double end) override;
  [[nodiscard]] bool has_model(TaskCore& task) const noexcept;
  [[nodiscard]] std::optional<double> expected_duration(TaskCore& task, Arch arch) const;
  /// Expected seconds to copy `bytes` from node `from` to node `to`.
  [[nodiscard]] double expected_copy(unsigned from, unsigned to, std::size_t bytes) const noexcept;
  /// Where tasks' times go (HETFLOW_TRACE, HETFLOW_STATS); nullptr when nowhere.
  [[nodiscard]] Recorder* recorder() const noexcept { return recorder_.get(); }

  // Simulation: the execution keeps a virtual clock
  [[nodiscard]] bool simulating() const noexcept override { return clock_ != nullptr; }
  /// The architectures the machine gives `codelet` (or a plain task called `name`) a cost on.
  [[nodiscard]] ArchMask simulated_archs(const Codelet* codelet, const std::string& name) const {
    return execution_->costed_archs(codelet, name);
  }
  /// Advances virtual time until `reached()` or until the application must act; then, while
  /// waiting on the application, looks again now and then (until the deadline, if any).
  void simulate_while_waiting(const std::function<bool()>& reached,
                              const std::chrono::steady_clock::time_point* deadline = nullptr) {
    execution_->progress_while_waiting(reached, deadline);
  }
  /// See Execution::lend_worker_while.
  Execution::Lending lend_worker_while(WorkerState& worker, const std::function<void()>& block) {
    return execution_->lend_worker_while(worker, block);
  }
  /// See Execution::rejoin.
  void rejoin(WorkerState& worker) { execution_->rejoin(worker); }

  [[nodiscard]] const std::vector<ext::WorkerInfo>& worker_infos() const noexcept { return worker_infos_; }
  /// Unfinished tasks pinned to `worker` (queued or running).
  [[nodiscard]] std::size_t pinned_load(unsigned worker) const noexcept {
    return pinned_[worker]->load.load(std::memory_order_acquire);
  }
  void count_pinned(TaskCore* task) noexcept {
    if (task->pinned_worker >= 0) pinned_[static_cast<unsigned>(task->pinned_worker)]->load.fetch_add(1);
  }
  /// Takes the task out of its worker's count, once: before its outcome is published (so that
  /// whoever sees the outcome sees the lower count), or at the latest when it is finished. A
  /// task cancelled in its queue is taken out by the canceller while the worker may take it.
  void uncount_pinned(TaskCore* task) noexcept {
    const std::int32_t worker = std::atomic_ref<std::int32_t>(task->pinned_worker).exchange(-1);
    if (worker >= 0) pinned_[static_cast<unsigned>(worker)]->load.fetch_sub(1);
  }
  [[nodiscard]] const std::string& scheduler_name() const noexcept { return scheduler_name_; }
  std::uint64_t next_sequence() noexcept { return sequence_.fetch_add(1, std::memory_order_relaxed); }

  /// Queues a ready task (pinned: to its worker), and wakes a worker that may run it. Also gives
  /// back a task a worker took (next_task) but will not run soon.
  void push_ready(TaskCore* task);

 private:
  /// Ready tasks in the scheduler that workers of each kind may take, kept for all kinds but CPU
  /// threads (whose path is the hottest and which do not batch): take_companions leaves one for
  /// each other worker of its kind.
  void count_ready(ArchMask where, std::int64_t change) noexcept {
    if (where == ArchMask(Arch::cpu)) return;
    for (unsigned arch = 1; arch < kArchCount; ++arch) {
      if (where.contains(static_cast<Arch>(arch))) ready_for_[arch].fetch_add(change, std::memory_order_relaxed);
    }
  }
  std::array<std::atomic<std::int64_t>, kArchCount> ready_for_{};
  /// A task the scheduler gave `worker`, whose memory node cannot hold its data at once, queued
  /// for a worker whose node can instead (one of the same architecture first, then the fewest
  /// queued for it); false, doing nothing, if its node can or none can (it then runs on `worker`
  /// and fails saying why, check_fits).
  bool send_where_it_fits(const WorkerState& worker, TaskCore* task);
  void count_task_done() noexcept;
  void finish_one(TaskCore* task, std::vector<TaskCore*>& newly_final) noexcept;
  /// finish_one for each task of `newly_final`, and for those their ends make final in turn.
  void finish_all(std::vector<TaskCore*>& newly_final) noexcept;
  /// Once per task (the first caller): marks it released and notifies its successor links.
  void tell_successors(TaskCore* task, std::vector<TaskCore*>& newly_final) noexcept;
  void complete_unregistration(TaskCore* token) noexcept;

  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  const long owner_pid_;                 // the process that started the runtime
  const std::uint64_t fork_generation_;  // how many forks this process descends through, then
  const DriverClaims driver_claims_;     // released once the workers are gone
  // Declared first, destroyed last: what it added (workers, memory nodes) may refer to it.
  const std::unique_ptr<Execution> execution_;
  const std::atomic<double>* clock_ = nullptr;  // the execution's virtual clock, if it keeps one
  IdleWorkers* idle_ = nullptr;                 // the execution's sleeping workers, per arch, if any
  std::vector<std::string> node_names_{"host"};
  std::vector<std::unique_ptr<NodeMemory>> node_memory_;  // [0] empty: host RAM is the users' buffers
  std::unique_ptr<Recorder> recorder_;
  std::unique_ptr<BusModel> bus_;
  EngineSchedulerContext scheduler_context_{*this};
  std::vector<ext::WorkerInfo> worker_infos_;
  std::vector<std::unique_ptr<WorkerState>> workers_;
  std::string scheduler_name_;
  std::unique_ptr<ext::Scheduler> scheduler_;
  struct Pinned {
    TaskFifo queue;
    // Tasks passed on to this worker by one whose node cannot hold them (send_where_it_fits), by
    // priority: a worker popping a central queue passes on every large task it meets at once.
    TaskFifo passed;
    std::atomic<std::size_t> load{0};
  };
  std::vector<std::unique_ptr<Pinned>> pinned_;

  alignas(64) std::atomic<std::int64_t> outstanding_{0};
  alignas(64) std::atomic<std::uint32_t> all_done_epoch_{0};
  std::atomic<std::uint32_t> all_done_waiters_{0};
  alignas(64) std::atomic<std::uint64_t> sequence_{0};
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> aborting_{false};
  std::atomic<bool> aborted_{false};               // abort(), not cancel_pending(): the work was given up
  std::atomic<bool> dependents_cancelled_{false};  // cancel_pending_and_dependents()
  std::atomic<bool> gave_up_{false};               // shutdown_until passed its deadline (see give_up_on)
  /// give_up_on for a running task: false if it was not running (any more).
  bool abandon_running(TaskCore* task, std::uint32_t marks) noexcept;
  /// The bits a task ended by the give-up keeps with its final status.
  [[nodiscard]] std::uint32_t given_up_marks() const noexcept {
    return TaskCore::kGivenUpBit | (aborted_.load(std::memory_order_acquire) ? TaskCore::kAfterAbortBit : 0);
  }
  /// Ends the waits for the work left when shutdown_until gives up: wait_all's, and those blocked
  /// for a task of this engine (WaitingFor), whose tasks it ends (give_up_on).
  void give_up_waits();
  static std::mutex& live_engines_mutex();
  static std::unordered_set<const Engine*>& live_engines();
  std::atomic<bool> stopped_{false};
  std::mutex shutdown_mutex_;
  /// wait_all() for shutdown, saying on stderr after a while which acquisitions, still held, the
  /// tasks wait for (one moved away from the thread that made it is nobody's to release here).
  void wait_all_saying_why_it_lasts();
  /// Before shutdown unregisters `handles`: waits for the acquisitions of them still held, which
  /// unregistering waits for, saying so on stderr after a while as wait_all_saying_why_it_lasts.
  void wait_for_acquisitions_saying_why(const std::vector<std::shared_ptr<HandleImpl>>& handles);

  struct Held {
    TaskCore* token;
    std::uint64_t holder;  // 0 once the acquisition object moved (disown)
    std::uint64_t maker;   // the thread that acquired: its shutdown releases it
  };
  mutable std::mutex held_mutex_;
  std::vector<Held> held_;
  std::atomic<std::size_t> held_count_{0};      // held_.size(), read without the lock
  std::atomic<unsigned> concluding_manual_{0};  // conclude_manual calls under way

  std::mutex registry_mutex_;
  std::vector<std::shared_ptr<HandleImpl>> registry_;
  // Taken by submissions that track two handles or more (Engine::submit), so that such tasks
  // submitted from different threads take the same order on every handle they share.
  std::mutex multi_handle_submission_mutex_;
  RegisteredMemory registered_memory_;
};

}  // namespace hetflow::detail
