// What futures call into: waiting, outcomes, cancellation, completion callbacks; when_all and
// when_any.
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/dependencies.hpp"
#include "core/engine.hpp"
#include "core/task_pool.hpp"
#include "core/task_state.hpp"
#include "core/threaded_execution.hpp"
#include "core/wait_cycles.hpp"
#include "hetflow/runtime.hpp"
#include "util/unnested.hpp"

namespace hetflow::detail {

void retain(TaskCore* task) noexcept { task->refs.fetch_add(1, std::memory_order_relaxed); }

void release(TaskCore* task) noexcept {
  if (task->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) recycle_task(task);
}

void retain_future(TaskCore* task) noexcept {
  task->future_refs.fetch_add(1, std::memory_order_relaxed);
  retain(task);
}

void release_future(TaskCore* task) noexcept {
  // Sequentially consistent, as is the end of the task, which looks at the count after making
  // the task done (Engine::conclude): one of the two sees the other.
  if ((task->future_refs.fetch_sub(1, std::memory_order_seq_cst) & ~TaskCore::kResultGone) == 1) {
    drop_result_nobody_reads(task);
  }
  release(task);
}

namespace {

// What shutdown_until gave up on ends once anybody looks at it, polling included, as it does for
// a wait: only the tasks waited for when it gave up were ended then.
TaskStatus status_ending_what_was_given_up(const TaskCore* task) noexcept {
  const TaskStatus now = task->status();
  if (is_final(now)) return now;
  Engine* engine = task->runtime;
  if (!engine->gave_up() || engine->forked()) return now;
  engine->give_up_on(const_cast<TaskCore*>(task));  // NOLINT(cppcoreguidelines-pro-type-const-cast)
  return task->status();
}

}  // namespace

TaskStatus status(const TaskCore* task) noexcept { return status_ending_what_was_given_up(task); }

bool is_finished(const TaskCore* task) noexcept { return is_final(status_ending_what_was_given_up(task)); }

bool finished_after_abort(const TaskCore* task) noexcept {
  return (task->state.load(std::memory_order_acquire) & TaskCore::kAfterAbortBit) != 0;
}

namespace {

constexpr auto kFinished = [](TaskStatus s) { return is_final(s); };
// Whether a wait until `Reached` holds is a wait for the task's end.
template <class Reached>
constexpr bool kForTheEnd = std::is_same_v<Reached, std::remove_cvref_t<decltype(kFinished)>>;

// A task that waits for a task that waits for it (reads what it writes, say) would wait for
// ever: refused, with what would have hung. `innermost`: the tasks the calling thread runs.
void refuse_wait_for_successor(const RunningFrame* innermost, TaskCore* awaited, std::size_t budget) {
  for (const RunningFrame* frame = innermost; frame != nullptr; frame = frame->outer) {
    if (frame->task == awaited) {
      const std::string waiter = innermost->task->display_name();
      throw Error(frame == innermost
                      ? "hetflow: task '" + waiter + "' waits for itself: the wait would never end"
                      : "hetflow: task '" + waiter + "' waits for task '" + awaited->display_name() +
                            "', which waits below it on this thread (it runs there while that task waits) and "
                            "cannot go on before it ends: the wait would never end; wait for it outside '" +
                            awaited->display_name() + "'");
    }
    if (!waits_for(awaited, frame->task, budget)) continue;
    const std::string waiter = frame->task->display_name();
    throw Error("hetflow: task '" + std::string(innermost->task->display_name()) + "' waits for task '" +
                awaited->display_name() + "', which cannot start before task '" + waiter +
                "' ends (it takes the result of '" + waiter + "', accesses data that '" + waiter +
                "' accesses, or waits for a task that does): the wait would never end; wait for it outside '" + waiter +
                "'");
  }
}

// A thread that waits for a task that cannot start before the thread releases an acquisition it
// holds (the task reads what it acquired to write, say) would wait for ever: refused.
// Throws Error, saying `why(its name)`, if the calling thread holds an acquisition for which
// `blocks(token)` is true.
template <class Why>
void refuse_if_holding(Engine& engine, const std::function<bool(TaskCore*)>& blocks, Why why) {
  TaskCore* holding = engine.held_acquisition_that(thread_number(), blocks);
  if (holding == nullptr) return;
  const std::string message = why(std::string(holding->display_name()));
  release(holding);
  throw Error(message);
}

void refuse_wait_behind_own_acquisition(TaskCore* awaited, std::size_t budget) {
  refuse_if_holding(
      *awaited->runtime, [awaited, budget](TaskCore* token) { return waits_for(awaited, token, budget); },
      [awaited](const std::string& held) {
        return "hetflow: waiting for task '" + std::string(awaited->display_name()) +
               "', which cannot start before this thread releases what it holds (" + held +
               "): the wait would never end; release it first";
      });
}

// when_any's result ends when any of its inputs does: a wait for it never ends only if a wait
// for each input would not. Its inputs are noted here until one of them ends.
std::mutex& any_of_mutex() {
  static std::mutex instance;
  return instance;
}
std::unordered_map<const TaskCore*, std::vector<TaskCore*>>& any_of_inputs() {
  static std::unordered_map<const TaskCore*, std::vector<TaskCore*>> instance;
  return instance;
}

// The inputs of `task`, each retained, if it is when_any's result and none has ended; else none.
std::vector<TaskCore*> retained_inputs(const TaskCore* task) {
  std::lock_guard guard(any_of_mutex());
  const auto found = any_of_inputs().find(task);
  if (found == any_of_inputs().end()) return {};
  for (TaskCore* input : found->second) retain(input);
  return found->second;
}

}  // namespace

std::vector<TaskCore*> when_any_inputs(const TaskCore* task) { return retained_inputs(task); }

namespace {

// Throws Error if a wait for `awaited` on this thread would never end: the task cannot start
// before a task this thread runs ends, or before the thread releases what it acquired.
// `frames`: the tasks the calling thread runs; `budget`: the tasks looked at, at most.
void refuse_wait_that_never_ends(TaskCore* awaited, const RunningFrame* frames, std::size_t budget) {
  std::vector<TaskCore*> held = retained_inputs(awaited);  // a reference on each, dropped on return
  if (held.empty()) {
    refuse_wait_for_successor(frames, awaited, budget);
    refuse_wait_behind_own_acquisition(awaited, budget);
    return;
  }
  struct ReleaseInputs {
    std::vector<TaskCore*>& inputs;
    ~ReleaseInputs() {
      for (TaskCore* input : inputs) release(input);
    }
  } release_inputs{held};
  const std::size_t count = held.size();
  // Its inputs, theirs if they are when_any's too, and so on, in order, each once: it ends if
  // any of them does. Looked at one after the other, not one call inside another: a when_any of
  // a when_any of... 100,000 deep (`first = when_any(first, next)` in a loop) overflowed the
  // stack, and one over the same future twice at each level took 2^depth steps.
  std::vector<TaskCore*> to_visit(held.rbegin(), held.rend());
  std::unordered_set<const TaskCore*> seen(held.begin(), held.end());
  std::string first_refusal;
  while (!to_visit.empty()) {
    TaskCore* input = to_visit.back();
    to_visit.pop_back();
    if (is_final(input->status())) return;
    const std::vector<TaskCore*> inner = retained_inputs(input);
    if (inner.empty()) {
      try {
        refuse_wait_for_successor(frames, input, budget);
        refuse_wait_behind_own_acquisition(input, budget);
        return;  // this one may end, and the result with it
      } catch (const Error& refusal) {
        if (first_refusal.empty()) first_refusal = refusal.what();
      }
      continue;
    }
    held.insert(held.end(), inner.begin(), inner.end());
    for (auto it = inner.rbegin(); it != inner.rend(); ++it) {
      if (seen.insert(*it).second) to_visit.push_back(*it);
    }
  }
  throw Error("hetflow: waiting for the result of when_any would never end: none of its " + std::to_string(count) +
              " futures can end (the first: " + first_refusal + ")");
}

void refuse_wait_that_never_ends(TaskCore* awaited) {
  refuse_wait_that_never_ends(awaited, tasks_on_this_thread(awaited->runtime), kDeadlockSearchBudget);
}

// A wait that has lasted this long without a deadline is checked again, over many more tasks:
// the check when it began looks at kDeadlockSearchBudget tasks, so that each wait stays cheap,
// and a wait that would never end behind more of them hung without a word.
constexpr auto kCheckAgainAfter = std::chrono::seconds(1);
constexpr std::size_t kThoroughSearchBudget = 250'000;

// block_until without a deadline, the wait refused after kCheckAgainAfter if it can never end.
// `frames`: the tasks of the waiting thread (while it lends its worker, the worker's are not).
template <class Reached>
void block_checking_again(TaskCore* task, Reached reached, const RunningFrame* frames) {
  const auto check_at = std::chrono::steady_clock::now() + kCheckAgainAfter;
  if (block_until(task, reached, &check_at)) return;
  refuse_wait_that_never_ends(task, frames, kThoroughSearchBudget);
  static_cast<void>(block_until(task, reached, nullptr));
}

// The same with an optional deadline (none: checked again).
template <class Reached>
void block_until_or_checked(TaskCore* task, Reached reached, const std::chrono::steady_clock::time_point* deadline,
                            const RunningFrame* frames) {
  if (deadline == nullptr) {
    block_checking_again(task, reached, frames);
  } else {
    static_cast<void>(block_until(task, reached, deadline));
  }
}

// block_checking_again on a thread whose tasks (`frames`, if any) hold no worker: they went on
// without it (SeatlessTask). Waiting for the task's end, they are known meanwhile as blocked in
// a wait (BlockedWait), as a worker's are, so that a wait closing a cycle through them fails too.
template <class Reached>
void block_without_worker(TaskCore* task, Reached reached, const RunningFrame* frames) {
  std::optional<BlockedWait> blocked;
  if (frames != nullptr && kForTheEnd<Reached>) blocked.emplace(frames, task);
  block_checking_again(task, reached, frames);
}

// A task that waits inside its body must not keep its worker idle: the task waited for may be
// queued behind it, on the only worker. It runs on its own stack the task it waits for, taken
// from whichever queue holds it (may_claim), and, from its worker's queues, the tasks it
// submitted and what the task waited for needs (one it waits for), kMostNestedOnAStack levels
// deep at most; otherwise it lends its worker to a spare thread and blocks. Running unrelated
// tasks on top of the waiting one, as a worker that cannot be lent does (help_while), hangs when
// one of them waits for a task that needs the one below it to end.
// With a deadline it runs nothing on its stack, where a task could outlast the deadline, or wait
// for what the waiting task does once its wait has timed out: it lends its worker, and stops
// once the deadline has passed (the spare it takes the worker back from may overrun it by the
// rest of a task). Only when no spare thread is left does it run tasks on its stack (what it
// waits for first), past the deadline if need be. A wait with a deadline is not refused:
// it ends as it says (false).
// Each wait that runs a task on the same stack takes some of it, which overflowed (a segfault at
// about 12,000 levels in C++, far fewer under a sanitizer): with less than this left of the
// thread's stack, a waiting task lends its worker, and one that cannot refuses the wait.
constexpr std::size_t kStackKeptForTasks = std::size_t{1} << 20;

// The lowest address of the calling thread's stack (it grows down), 0 if unknown.
std::uintptr_t stack_floor() noexcept {
  thread_local const std::uintptr_t floor = [] {
    pthread_attr_t attributes;
    if (pthread_getattr_np(pthread_self(), &attributes) != 0) return std::uintptr_t{0};
    void* low = nullptr;
    std::size_t size = 0;
    const int found = pthread_attr_getstack(&attributes, &low, &size);
    pthread_attr_destroy(&attributes);
    return found == 0 ? reinterpret_cast<std::uintptr_t>(low) : std::uintptr_t{0};
  }();
  return floor;
}

// How many tasks run on the worker's thread, one above the other (the innermost waits, if more).
std::size_t nesting(const WorkerState& worker) {
  std::size_t depth = 0;
  for (const RunningFrame* frame = worker.running; frame != nullptr; frame = frame->outer) ++depth;
  return depth;
}

// Whether less than kStackKeptForTasks is left of the calling thread's stack.
bool stack_short() {
  const std::uintptr_t floor = stack_floor();
  const char here = 0;
  const auto position = reinterpret_cast<std::uintptr_t>(&here);
  return floor != 0 && position - floor <= kStackKeptForTasks;
}

void refuse_nesting_too_deep(const WorkerState& worker) {
  if (worker.running == nullptr || !stack_short()) return;
  throw Error("hetflow: task '" + std::string(worker.running->task->display_name()) + "' waits inside " +
              std::to_string(nesting(worker) - 1) +
              " tasks that wait on this worker, each running the next on the thread's stack, which is nearly used "
              "up; wait for fewer levels inside tasks, or outside them");
}

// How many tasks a waiting thread runs on its own stack, one above the other, for the tasks it
// waits for; deeper, it lends its worker instead. A level of Python tasks takes about three of
// the thread's 1,000 Python frames. A recursive fork-join (fib(20), 21,891 Python tasks on two
// workers) took 1.3 to 1.9 times as long as on one stack when it lent past 8 levels, 1.0 to 1.2
// times past 32.
constexpr std::size_t kMostNestedOnAStack = 32;

// Whether the task running on the worker, waiting, may run another on its stack.
bool may_nest(const WorkerState& worker) {
  return worker.running != nullptr && nesting(worker) < kMostNestedOnAStack && !stack_short();
}

// Whether a task waiting on `worker` may take `awaited` from another queue, or from behind
// other tasks, to run it on its stack (Engine::claim). Under a scheduler with one queue (eager,
// dm...), a recursive fork-join would otherwise leave its children to spare threads until the
// width of the recursion waited at once. Only a task that may run on this worker's architecture
// alone: where a faster one may run it, the scheduler's choice stands. Tried after the worker's
// own next task (take_for_awaited), which leaves no entry behind in a queue.
bool may_claim(const Engine& engine, const WorkerState& worker, TaskCore* awaited) {
  if (awaited->status() != TaskStatus::ready || awaited->where != ArchMask(worker.info.arch)) return false;
  const std::int32_t pinned = std::atomic_ref<std::int32_t>(awaited->pinned_worker).load();
  return (pinned < 0 || pinned == static_cast<std::int32_t>(worker.info.id)) && may_run_nested(engine, awaited, worker);
}

// The worker's next task if the waiting task may run it on its stack: one it submitted itself
// (a fork-join parent runs its children), or, for a task of this runtime (`awaited`, else
// nullptr), that task or one it waits for. Any other is given back to the worker, to run next;
// nullptr then. None of these needs the waiting task to end first, unless it waits for it: a
// wait for a task below on the stack is refused (refuse_wait_for_successor).
TaskCore* take_for_awaited(Engine& engine, WorkerState& worker, TaskCore* awaited) {
  auto* task = static_cast<TaskCore*>(engine.next_task(worker));
  if (task == nullptr) return nullptr;
  const bool its_child =
      task->parent_sequence == worker.running->task->sequence + 1 && task->runtime == worker.running->task->runtime;
  const bool needed = awaited != nullptr && (task == awaited || waits_for(awaited, task, kDeadlockSearchBudget));
  if ((its_child || needed) && may_run_nested(engine, task, worker)) return task;
  worker.deferred = task;
  return nullptr;
}

[[noreturn]] void refuse_wait_without_thread(const WorkerState& worker, TaskCore* awaited) {
  const std::string waiter =
      worker.running != nullptr ? "task '" + std::string(worker.running->task->display_name()) + "'" : "a worker";
  throw Error("hetflow: " + waiter + " waits for task '" + awaited->display_name() +
              "', but every thread that may stand in for a worker whose task waits (" +
              std::to_string(*worker.runtime->config.spare_threads) +
              ", Config::spare_threads or HETFLOW_SPARE_THREADS) is in use, or the system gave no more: raise that "
              "limit, or give what it waits for as a dependency of the task (TaskOptions::after, data, a future passed "
              "as an argument) rather than waiting inside it");
}

template <class Reached>
bool worker_waits_for(TaskCore* task, Reached reached, const std::chrono::steady_clock::time_point* deadline) {
  WorkerState* worker = current_worker();
  if (worker == nullptr) return false;
  if (deadline == nullptr && !reached(task->status())) refuse_wait_that_never_ends(task);
  Engine& engine = *worker->runtime;
  // Another runtime's task may wait for a task of this one: this worker goes on running them.
  TaskCore* own = worker->runtime == task->runtime ? task : nullptr;
  const auto done = [&] {
    return reached(task->status()) || (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline);
  };
  // A task set aside for the worker to run next would wait for the rest of this task's run,
  // where no other worker may take it (this task may even wait for it, unseen): it goes back,
  // however the wait ends (a refusal throws).
  struct GiveBackSetAside {
    Engine& engine;
    WorkerState& worker;
    bool set_aside = false;
    ~GiveBackSetAside() {
      if (!set_aside || worker.deferred == nullptr) return;
      try {
        engine.push_ready(worker.deferred);
        worker.deferred = nullptr;
      } catch (...) {  // no room to queue it: it stays this worker's next task
      }
    }
  } give_back{engine, *worker};
  // Runs on this thread, if it may, the task waited for or one it waits for: false if none.
  const auto run_what_it_waits_for = [&] {
    if (!may_nest(*worker)) return false;
    if (TaskCore* next = take_for_awaited(engine, *worker, own)) {
      run_nested(engine, next, *worker);
      return true;
    }
    give_back.set_aside = give_back.set_aside || worker->deferred != nullptr;
    if (own != nullptr && may_claim(engine, *worker, own) && engine.claim(own)) {
      run_nested(engine, own, *worker, /*claimed=*/true);
      return true;
    }
    return false;
  };
  while (!done()) {
    if (deadline == nullptr && run_what_it_waits_for()) continue;
    std::optional<BlockedWait> blocked;  // a wait for the task's start (an acquisition's) ends before the task does
    if (deadline == nullptr && worker->running != nullptr && kForTheEnd<Reached>)
      blocked.emplace(worker->running, task);
    const RunningFrame* frames = worker->running;
    const Execution::Lending lending = engine.lend_worker_while(*worker, [&] {
      block_until_or_checked(task, reached, deadline, frames);
      blocked.reset();
    });
    blocked.reset();
    if (lending == Execution::Lending::lent && current_worker() != worker) {
      // It went on without the worker (SeatlessTask): what the worker holds is not its own now.
      give_back.set_aside = false;
      if (done()) return true;
      if (deadline == nullptr) {
        block_without_worker(task, reached, frames);
      } else {
        static_cast<void>(block_until(task, reached, deadline));
      }
      return true;
    }
    switch (lending) {
      case Execution::Lending::lent: break;
      case Execution::Lending::not_lendable:
        refuse_nesting_too_deep(*worker);
        help_while(engine, *worker, done, own);
        break;
      case Execution::Lending::no_thread_left:
        // Running unrelated tasks on top of this one could hang; a wait with a deadline cannot.
        if (deadline == nullptr) refuse_wait_without_thread(*worker, task);
        // It runs what it waits for itself, else other queued tasks, until its deadline (a
        // task run then may end it later): idle until the deadline, waits made again and again
        // (in slices, to stay interruptible) on every worker held them all, and nothing ran.
        if (run_what_it_waits_for()) break;
        if (may_nest(*worker)) {
          help_while(engine, *worker, done, own);
        } else {
          static_cast<void>(block_until(task, reached, deadline));
        }
        break;
    }
  }
  return true;
}

}  // namespace

void check_wait_can_end(TaskCore* task) {
  if (is_final(task->status())) return;
  refuse_wait_that_never_ends(task);
}

void check_wait_all_can_end(Runtime& runtime) {
  refuse_if_holding(
      runtime.impl(), [](TaskCore* token) { return some_task_waits_for(token, kDeadlockSearchBudget); },
      [](const std::string& held) {
        return "hetflow: waiting for every task would never end: tasks submitted wait for what this thread holds (" +
               held + "); release it first";
      });
}

void wait(TaskCore* task) {
  if (is_final(task->status())) return;
  task->runtime->check_not_forked("hetflow::Future::wait");
  if (task->runtime->gave_up()) {
    task->runtime->give_up_on(task);  // what shutdown_until gave up on ends now for its waiters
    if (is_final(task->status())) return;
  }
  if (task->runtime->simulating()) {
    check_wait_can_end(task);  // the simulation would look for ever for a way on
    task->runtime->simulate_while_waiting([task] { return is_final(task->status()); });
  }
  if (worker_waits_for(task, kFinished, nullptr)) return;
  refuse_wait_that_never_ends(task);
  block_without_worker(task, kFinished, tasks_on_this_thread(task->runtime));
}

bool wait_until(TaskCore* task, std::chrono::steady_clock::time_point deadline) {
  if (is_final(task->status())) return true;
  task->runtime->check_not_forked("hetflow::Future::wait_until");
  if (task->runtime->gave_up()) {
    task->runtime->give_up_on(task);
    if (is_final(task->status())) return true;
  }
  if (task->runtime->simulating()) {
    task->runtime->simulate_while_waiting([task] { return is_final(task->status()); }, &deadline);
  }
  if (worker_waits_for(task, kFinished, &deadline)) return is_final(task->status());
  return block_until(task, kFinished, &deadline);
}

void wait_until_started(TaskCore* task) {
  const auto started = [](TaskStatus s) { return s != TaskStatus::pending; };
  if (task->runtime->simulating() && !started(task->status())) {
    check_wait_can_end(task);
    task->runtime->simulate_while_waiting([&] { return started(task->status()); });
  }
  if (worker_waits_for(task, started, nullptr)) return;
  if (!started(task->status())) refuse_wait_that_never_ends(task);
  block_checking_again(task, started, tasks_on_this_thread(task->runtime));
}

void complete_manual(TaskCore* task, std::exception_ptr error) noexcept {
  task->runtime->conclude_manual(task, std::move(error));
}

void rethrow_if_failed(const TaskCore* task) {
  switch (task->status()) {
    case TaskStatus::failed: std::rethrow_exception(task->error);
    case TaskStatus::cancelled: std::rethrow_exception(cancelled_error(task));
    default: return;
  }
}

std::exception_ptr cancelled_error(const TaskCore* task) noexcept {
  const bool given_up = (task->state.load(std::memory_order_acquire) & TaskCore::kGivenUpBit) != 0;
  return std::make_exception_ptr(
      CancelledError(std::string("task '") + task->display_name() + "' was cancelled" +
                     (given_up ? ": the runtime's shutdown gave up on it before it started" : "")));
}

std::exception_ptr error_of(const TaskCore* task) noexcept {
  switch (task->status()) {
    case TaskStatus::failed: return task->error;
    case TaskStatus::cancelled: return cancelled_error(task);
    default: return nullptr;
  }
}

void add_completion_callback(TaskCore* task, CompletionCallback* callback) noexcept {
  {
    std::lock_guard guard(task->lock);
    if (!task->released) {
      auto link = reinterpret_cast<std::uintptr_t>(callback) | TaskCore::kCallbackLink;
      task->successors.add(link);
      return;
    }
  }
  callback->fn(callback, task);
}

void* result_storage(TaskCore* task) noexcept { return task->storage(); }

bool only_reference(const TaskCore* task) noexcept { return task->refs.load(std::memory_order_acquire) == 1; }

bool cancel(TaskCore* task) noexcept {
  if (is_final(task->status())) return false;  // its runtime may be gone
  if (task->runtime->forked()) return false;   // the task is the parent's (see Runtime)
  // A pending task's dependents hear of it when its own dependencies end: told earlier, one
  // that only waits for it for order could overtake a task it waits for through it.
  if (transition(task, TaskStatus::pending, TaskStatus::cancelled)) {
    task->runtime->uncount_pinned(task);
    return true;
  }
  if (!transition(task, TaskStatus::ready, TaskStatus::cancelled)) return false;
  task->runtime->cancel_queued(task);
  return true;
}

Runtime& owner(const TaskCore* task) {
  if (!Engine::alive(task->runtime)) {
    throw ShutdownError(std::string("hetflow: the Runtime that ran task '") + task->display_name() +
                        "' has been destroyed: its future still gives its value, but no task can follow it there");
  }
  return task->runtime->facade;
}

const char* name_of(const TaskCore* task) noexcept { return task->display_name(); }

}  // namespace hetflow::detail

namespace hetflow {

using detail::TaskCore;

Future<void> when_all(std::vector<FutureBase> futures) {
  if (futures.empty()) throw InvalidArgument("when_all: needs at least one future");
  for (const auto& f : futures) {
    if (!f.valid()) throw InvalidArgument("when_all: an empty future");
  }
  Runtime& runtime = detail::owner(futures.front().core());
  return runtime.submit(TaskOptions{.after = std::move(futures), .name = "when_all"}, [] {});
}

namespace {

// The results of when_any that this thread is to end, while it ends another, if it does. Ending
// one tells its successors, among them a when_any over it: `first = when_any(first, next)` in a
// loop ended each result inside the one before, and 100,000 of them overflowed the stack. They
// wait, in order, for the outermost instead (the engine's reference keeps each until it ends).
thread_local detail::Unnested<TaskCore*, detail::UnnestedOrder::fifo> tl_any_results;

void complete_any_result(TaskCore* result) noexcept {
  tl_any_results.run(result, [](TaskCore* next) noexcept { detail::complete_manual(next); });
}

// The first input to finish writes its index and opens the gate the result task waits for.
struct WhenAnyState {
  struct Link : detail::CompletionCallback {
    WhenAnyState* state = nullptr;
    std::size_t index = 0;
  };
  explicit WhenAnyState(std::size_t n) : links(n), outstanding(n) {}
  std::vector<Link> links;
  std::atomic<bool> decided{false};
  std::atomic<std::size_t> outstanding;
  // Ended by the first input to end, with its index as the value: no worker needs to be free
  // for it (a task would wait for one).
  TaskCore* result = nullptr;

  static void on_finished(detail::CompletionCallback* self, TaskCore* /*finished*/) noexcept {
    auto* link = static_cast<Link*>(self);
    WhenAnyState* state = link->state;
    if (!state->decided.exchange(true, std::memory_order_acq_rel)) {
      {
        std::lock_guard guard(detail::any_of_mutex());
        detail::any_of_inputs().erase(state->result);
      }
      *static_cast<std::size_t*>(detail::result_storage(state->result)) = link->index;
      complete_any_result(state->result);
    }
    if (state->outstanding.fetch_sub(1, std::memory_order_acq_rel) == 1) delete state;
  }
};

}  // namespace

Future<std::size_t> when_any(std::vector<FutureBase> futures) {
  if (futures.empty()) throw InvalidArgument("when_any: needs at least one future");
  for (const auto& f : futures) {
    if (!f.valid()) throw InvalidArgument("when_any: an empty future");
  }
  Runtime& runtime = detail::owner(futures.front().core());
  runtime.impl().check_not_forked("hetflow::when_any");
  auto* state = new WhenAnyState(futures.size());
  state->result = runtime.impl().submit_manual("when_any", nullptr, AccessMode::R, 2);
  // Started: it cannot be cancelled, as it ends when its inputs do.
  transition(state->result, TaskStatus::ready, TaskStatus::running);
  Future<std::size_t> result(FutureBase::adopt(state->result));
  {
    std::vector<TaskCore*> inputs;
    for (const auto& f : futures) inputs.push_back(f.core());
    std::lock_guard guard(detail::any_of_mutex());
    detail::any_of_inputs().emplace(state->result, std::move(inputs));
  }
  for (std::size_t i = 0; i < futures.size(); ++i) {
    WhenAnyState::Link& link = state->links[i];
    link.fn = &WhenAnyState::on_finished;
    link.state = state;
    link.index = i;
    detail::add_completion_callback(futures[i].core(), &link);
  }
  return result;
}

}  // namespace hetflow
