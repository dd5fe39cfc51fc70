#pragma once
// The engine shared by the model-driven schedulers dm, dmda and dmdas (HEFT-like list
// scheduling). Each ready task goes, when it is pushed, to the queue of the worker where it is
// expected to complete first; the policy says what "expected" takes into account.
//
// Estimates, per worker (all in seconds on SchedulerContext::now()'s clock):
//   running_end  when the task the worker popped last is expected to end;
//   queued_work  the sum of what was charged for the tasks in its queue;
//   free time    max(now, running_end) + queued_work.
// A task's charge is its expected duration on the worker's architecture, plus, for dmda and
// dmdas, the expected time to bring its data to the worker's memory node (the worker fetches
// the data itself before running, so the transfer occupies it). When a worker pops a task,
// running_end becomes now + that task's charge (for a worker that looks ahead, pop_ahead, which
// only dm serves: its current task's expected end + that charge): a task that ended early or
// late therefore corrects the estimate at the next pop, and an idle worker (a pop, not a
// pop_ahead, that finds nothing) has running_end reset to now.
//
// Where a task goes (details in model_based.cpp):
//   - model known on every eligible architecture: the least expected completion
//     start + charge, where start is the free time (dmdas: only the queued work of equal or
//     higher priority, since the task is queued ahead of the rest);
//   - model present but not calibrated for some eligible architecture: the least-loaded worker
//     of such an architecture (calibration spreading, so every architecture gets samples);
//   - no model at all: the least expected completion with a nominal duration (a load balancer).
//
// Idle workers and wrong estimates: a worker whose own queue is empty takes the first task of
// the most loaded peer of the same architecture (same memory node first): within one
// architecture the durations are the same, so taking a peer's task only helps. It also keeps
// the engine's wake-ups sufficient: the engine wakes one worker per architecture, not the
// chosen one. Failing that, it looks at the heads of the queues of architectures slower than
// its own for the task, for a task it would finish (data transfer included) before that task's
// expected completion where it waits, and takes the one that gains the most: the tail of a
// graph, where slow workers hold tasks a fast one could run, is where list scheduling loses most.
//
// The choice made at push is checked again when the worker takes the task from its queue
// (possibly long after, and ahead of time when it looks ahead): if a worker of an architecture
// faster on the task is now expected to finish it sooner, by more than the tie tolerance, the
// task moves to that worker's queue (and a worker of its kind is woken). The tail of a graph
// is where this counts: a slow device would otherwise start a task the fast one is about to be
// free for, and everything after it would wait.
//
// Copies and the link (dmda, dmdas): a node's link makes the copies asked for one after
// another, so the scheduler keeps, per node, when the prefetches it asked for are expected to
// have landed (link_free_), and each prefetched task notes when its data is expected there.
// A worker whose first queued task still waits for its data
// takes instead a task behind it whose data was asked for and that it expects to finish before
// then (take_soonest): a higher-priority task queued later jumps ahead in the queue, but not on
// the link, and the worker would otherwise sit idle with the other task's data already there.
//
// A worker of another architecture stays idle even when the chosen one runs late: the late
// worker's estimate is corrected at its next pop (and an idle worker's at its first empty pop),
// so later tasks go where workers are actually free. Every queued task is eventually run by its
// worker or a peer, so nothing starves.
//
// A task that waits for a future runs other tasks meanwhile, through nested pops on the same
// worker; each of those restarts running_end, so the waiting task's remaining time is not
// counted until the worker pops again after it.
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "util/adaptive_mutex.hpp"

namespace hetflow::detail {

/// What distinguishes dm, dmda and dmdas.
struct ModelPolicy {
  /// Count the expected data transfer to the worker's node in the completion time (dmda, dmdas).
  bool count_transfers = false;
  /// Ask the engine to start moving the data to the chosen node (not host) ahead of the task;
  /// a worker's look-ahead (pop_ahead) is then declined, since it would move nothing sooner.
  bool prefetch = false;
  /// With `prefetch`: only for the tasks among the first this many of their worker's queue, when
  /// they are queued or when the queue moves up. A node's link makes its copies one after another:
  /// the data of tasks queued far behind would hold up that of the tasks about to run.
  std::size_t prefetch_window = 2;
  /// Order each worker's queue by priority (higher first), then submission order (dmdas);
  /// otherwise each queue is first in, first out.
  bool by_priority = false;
  /// Completions whose time from now differs by at most this fraction count as equal. Among
  /// equal ones the choice goes to the fewest queued tasks, then the lowest worker id, or first
  /// to the least expected transfer when `prefer_local_data` is set.
  double tie_tolerance = 1e-9;
  bool prefer_local_data = false;
  /// Weighs up the completion on an architecture that speeds the task up (against the slowest
  /// eligible one) less than the most it has sped up any task: + weight * duration * (best
  /// speedup / this speedup - 1), but never more than the task's time on the slowest eligible
  /// architecture minus its time here. Keeps a GPU for the kernels it gains most on (dmdas); the
  /// slowest architecture for a task is never weighed up; 0 turns it off.
  double affinity_weight = 0;
};

class ModelBasedScheduler : public ext::Scheduler {
 public:
  explicit ModelBasedScheduler(ModelPolicy policy);
  ~ModelBasedScheduler() override;
  ModelBasedScheduler(const ModelBasedScheduler&) = delete;
  ModelBasedScheduler& operator=(const ModelBasedScheduler&) = delete;

  void init(std::span<const ext::WorkerInfo> workers, ext::SchedulerContext& context) override;
  void push(ext::SchedTask* task, int from_worker) override;
  ext::SchedTask* pop(unsigned worker) override;
  ext::SchedTask* pop_ahead(unsigned worker) override;

  /// For tests and diagnostics: the tasks in `worker`'s own queue, in the order it takes them.
  [[nodiscard]] std::vector<ext::SchedTask*> queued_tasks(unsigned worker) const;
  /// For tests and diagnostics: when `worker` is expected to be free, seen at time `now`.
  [[nodiscard]] double expected_free(unsigned worker, double now) const;

 private:
  // A queued task and what was charged for it, so that taking it off subtracts exactly what
  // was added even if the model has learned more since.
  struct Entry {
    int rank = 0;             // the priority under by_priority, else 0
    std::uint64_t order = 0;  // the submission sequence under by_priority, else the arrival
    std::uint64_t arrival = 0;
    ext::SchedTask* task = nullptr;
    double charge = 0;
    // When its data is expected on the worker's node, set when its prefetch is first asked for
    // (negative: not asked for yet); not part of the order.
    mutable double data_ready = -1;
  };
  struct EntryOrder {
    bool operator()(const Entry& a, const Entry& b) const noexcept {
      if (a.rank != b.rank) return a.rank > b.rank;
      if (a.order != b.order) return a.order < b.order;
      return a.arrival < b.arrival;
    }
  };
  struct PriorityWork {
    double work = 0;
    std::size_t tasks = 0;
  };
  struct Slot;
  struct Estimates;
  struct Choice {
    Slot* slot = nullptr;
    double charge = 0;
    std::optional<double> known_duration;  // the model's duration on the chosen architecture
  };

  /// Fills `out`, reusing its storage: the push and pop paths keep one per thread, so that a
  /// warm scheduler does not allocate per task.
  void estimate(const ext::SchedTask& task, Estimates& out) const;
  [[nodiscard]] Choice choose(const ext::SchedTask& task, const Estimates& estimates, double now) const;
  [[nodiscard]] Slot* pick(std::span<Slot* const> candidates, std::span<const double> completions,
                           std::span<const double> transfers, double now) const;
  [[nodiscard]] double free_time(const Slot& slot, double now) const;
  [[nodiscard]] double start_time(const Slot& slot, int priority, double now) const;
  [[nodiscard]] double nominal_duration() const;
  /// What the policy's affinity weight adds to a completion on `arch` (model_based.hpp, ModelPolicy).
  [[nodiscard]] double affinity_penalty(unsigned arch, double duration, double slowest) const;
  /// How long the task's data transfer delays it on `slot` when the worker would start it at
  /// `start` (0 when the policy ignores transfers).
  [[nodiscard]] double transfer_delay(const Slot& slot, const Estimates& estimates, double start, double now) const;
  /// Moves `entry`, just taken from `self`'s queue, to a worker of a faster architecture expected
  /// to finish it sooner, if there is one; returns whether it did.
  [[nodiscard]] bool hand_over(Slot& self, const Entry& entry, bool ahead);
  /// Queues the task on `target`, starting to move its data to `target`'s node when the policy
  /// prefetches and it is queued within the prefetch window.
  void enqueue(Slot& target, const Entry& entry);
  /// Whether the policy prefetches to `slot`'s node (a device's).
  [[nodiscard]] bool prefetches(const Slot& slot) const;
  void prefetch_for(const Slot& slot, const ext::SchedTask& task);
  /// prefetch_for, noting when the entry's data is expected on the node the first time.
  void prefetch_entry(const Slot& slot, const Entry& entry);
  /// Takes the first task of `slot`'s own queue, or, while its data is still on its way, a task
  /// behind it whose data was asked for and that is expected to be done before that data lands.
  [[nodiscard]] bool take_soonest(Slot& slot, Entry& out);
  /// Prefetches the data of the tasks within the prefetch window of `slot`'s queue (those whose
  /// data is on its way already cost a look).
  void prefetch_window_of(Slot& slot);
  void charge(Slot& slot, const Entry& entry, std::optional<double> known_duration);
  void discharge(Slot& slot, const Entry& entry);
  [[nodiscard]] bool take_first(Slot& slot, Arch arch, Entry& out);
  /// Whether `slot`'s memory node can ever hold the task's data (SchedulerContext::can_hold).
  [[nodiscard]] bool holds(const Slot& slot, const ext::SchedTask& task) const;
  [[nodiscard]] Slot* steal(Slot& thief, Entry& out);
  /// A task queued for a worker of another architecture that this idle one is expected to
  /// finish sooner than it would be finished there; `charge` is what it costs here.
  [[nodiscard]] Slot* rescue(Slot& thief, bool ahead, Entry& out, double& charge);
  /// pop and pop_ahead.
  [[nodiscard]] ext::SchedTask* take(unsigned worker, bool ahead);
  /// When the worker can start a task it takes now: now, or after its current task when it
  /// looks ahead.
  [[nodiscard]] double free_from(const Slot& slot, bool ahead, double now) const;

  const ModelPolicy policy_;
  ext::SchedulerContext* context_ = nullptr;
  std::vector<std::unique_ptr<Slot>> slots_;  // in the order init gave the workers
  std::vector<Slot*> by_id_;                  // worker id -> its slot (nullptr for gaps)
  std::array<bool, kArchCount> arch_has_workers_{};
  std::vector<std::array<bool, kArchCount>> node_archs_;  // per memory node, the architectures computing there
  bool several_archs_ = false;                            // workers of more than one architecture
  unsigned node_count_ = 0;

  // The choice and all the accounting fields of the slots. Never held together with a slot's
  // queue lock: push charges then enqueues, pop dequeues then discharges.
  mutable AdaptiveMutex accounting_mutex_;
  // choose()'s working lists, kept between pushes so that they do not allocate.
  mutable std::vector<Slot*> candidates_;
  mutable std::vector<double> completions_;
  mutable std::vector<double> transfers_;
  mutable std::vector<double> delays_;
  std::uint64_t next_arrival_ = 0;
  double known_duration_sum_ = 0;  // of the known durations charged so far (for nominal_duration)
  std::uint64_t known_duration_count_ = 0;
  // Per memory node, when the copies asked for so far are expected to have landed: a node's
  // link makes its copies one after another. Under link_mutex_, a leaf lock.
  mutable AdaptiveMutex link_mutex_;
  std::vector<double> link_free_;
  std::vector<ext::SchedTask*> unrunnable_;                // tasks no worker can run (the engine prevents it)
  mutable std::array<double, kArchCount> best_speedup_{};  // per architecture, for affinity_weight
};

}  // namespace hetflow::detail
