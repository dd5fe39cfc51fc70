// The shared engine of dm, dmda and dmdas; the overview is in model_based.hpp.
//
// Choices left open by the idea of HEFT, and what this implementation does:
//   - A push gathers its estimates (model, transfers, clock) before taking the accounting lock,
//     so the engine's model lookups never run under it; the choice and the charge are one
//     critical section, so concurrent pushes see each other's charges.
//   - Calibration spreading: when the task's codelet has a model that cannot yet tell the
//     duration on some eligible architecture, the task goes to the least-loaded worker (the
//     earliest free time, then the fewest queued tasks, then the lowest id) among the workers
//     of such architectures. It is charged the mean of its known durations on the other
//     architectures, or the nominal duration when none is known.
//   - The nominal duration (for tasks without a model, and uncalibrated ones with nothing
//     known) is the mean of every known duration charged so far, 0 before there is one. With
//     0, all workers look equally free and the fewest-queued-tasks tie-break spreads the tasks
//     round-robin, so a model-less workload is still balanced by queue length.
//   - dmdas estimates a task's start from the queued work of equal or higher priority only: the
//     task is queued ahead of the rest. Queued tasks of the same priority are all counted as
//     ahead of it (they usually are: they were submitted earlier).
//   - Non-finite or negative estimates from the context are treated as unknown durations and
//     as free transfers, so one bad number cannot poison a worker's accounting for good.
#include "sched/model_based.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory_resource>
#include <set>

namespace hetflow::detail {

struct ModelBasedScheduler::Slot {
  ext::WorkerInfo info;
  // Peers of the same architecture: those on the same memory node first, so that a thief
  // prefers tasks whose data was sent (or prefetched) where it already is.
  std::vector<Slot*> peers;
  std::size_t same_node_peers = 0;

  // The queue, under queue_mutex, its nodes recycled by its own pool. `queued` mirrors its size
  // so that empty queues are skipped without taking the lock (pop is called in a spin loop by
  // idle workers).
  AdaptiveMutex queue_mutex;
  std::pmr::unsynchronized_pool_resource queue_memory;
  std::pmr::set<Entry, EntryOrder> queue{&queue_memory};
  std::atomic<std::size_t> queued{0};

  // Accounting, under the scheduler's accounting_mutex_.
  double running_end = 0;
  double queued_work = 0;
  std::size_t queued_tasks = 0;
  std::pmr::unsynchronized_pool_resource accounting_memory;
  std::pmr::map<int, PriorityWork, std::greater<>> work_by_priority{&accounting_memory};  // by_priority only

  // Touched by the worker itself only: whether its running_end was already reset for the
  // current stretch of empty pops (so a spinning worker takes the accounting lock once).
  bool idle_noted = false;
  // When it may next look at other architectures' queues (rescue): not on every empty pop of a
  // spinning worker, which would take their locks and the models' in a tight loop.
  double next_rescue = 0;
};

struct ModelBasedScheduler::Estimates {
  bool has_model = false;
  std::array<bool, kArchCount> eligible{};  // in task.where and some worker has it
  std::array<std::optional<double>, kArchCount> duration{};
  std::vector<double> transfer;  // by memory node; empty when the policy ignores transfers
};

namespace {

std::optional<double> usable_duration(std::optional<double> seconds) {
  if (!seconds || !std::isfinite(*seconds) || *seconds < 0) return std::nullopt;
  return seconds;
}

double usable_transfer(double seconds) { return std::isfinite(seconds) && seconds > 0 ? seconds : 0.0; }

}  // namespace

ModelBasedScheduler::ModelBasedScheduler(ModelPolicy policy) : policy_(policy) {}

ModelBasedScheduler::~ModelBasedScheduler() = default;

void ModelBasedScheduler::init(std::span<const ext::WorkerInfo> workers, ext::SchedulerContext& context) {
  context_ = &context;
  for (const ext::WorkerInfo& info : workers) {
    auto slot = std::make_unique<Slot>();
    slot->info = info;
    several_archs_ = several_archs_ || (!slots_.empty() && info.arch != slots_.front()->info.arch);
    arch_has_workers_[static_cast<unsigned>(info.arch)] = true;
    node_count_ = std::max(node_count_, info.memory_node + 1);
    if (node_archs_.size() < node_count_) node_archs_.resize(node_count_);
    node_archs_[info.memory_node][static_cast<unsigned>(info.arch)] = true;
    if (by_id_.size() <= info.id) by_id_.resize(info.id + 1, nullptr);
    by_id_[info.id] = slot.get();
    slots_.push_back(std::move(slot));
  }
  const std::size_t n = slots_.size();
  for (std::size_t i = 0; i < n; ++i) {
    Slot& self = *slots_[i];
    std::vector<Slot*> same_node;
    std::vector<Slot*> other_node;
    // Starting after oneself, so that thieves with equal choices do not all pick the same victim.
    for (std::size_t k = 1; k < n; ++k) {
      Slot* peer = slots_[(i + k) % n].get();
      if (peer->info.arch != self.info.arch) continue;
      (peer->info.memory_node == self.info.memory_node ? same_node : other_node).push_back(peer);
    }
    self.same_node_peers = same_node.size();
    self.peers = std::move(same_node);
    self.peers.insert(self.peers.end(), other_node.begin(), other_node.end());
  }
  link_free_.assign(node_count_, 0.0);
}

void ModelBasedScheduler::estimate(const ext::SchedTask& task, Estimates& estimates) const {
  estimates.duration = {};
  for (unsigned a = 0; a < kArchCount; ++a) {
    estimates.eligible[a] = arch_has_workers_[a] && task.where.contains(static_cast<Arch>(a));
  }
  estimates.has_model = context_->has_model(task);
  if (estimates.has_model) {
    for (unsigned a = 0; a < kArchCount; ++a) {
      if (estimates.eligible[a]) {
        estimates.duration[a] = usable_duration(context_->expected_duration(task, static_cast<Arch>(a)));
      }
    }
  }
  estimates.transfer.clear();
  if (policy_.count_transfers || policy_.prefer_local_data) {
    estimates.transfer.resize(node_count_, 0.0);
    for (unsigned node = 0; node < node_count_; ++node) {
      for (unsigned a = 0; a < kArchCount; ++a) {
        if (node_archs_[node][a] && estimates.eligible[a]) {
          estimates.transfer[node] = usable_transfer(context_->expected_transfer(task, node));
          break;
        }
      }
    }
  }
}

double ModelBasedScheduler::free_time(const Slot& slot, double now) const {
  return std::max(now, slot.running_end) + std::max(0.0, slot.queued_work);
}

double ModelBasedScheduler::start_time(const Slot& slot, int priority, double now) const {
  if (!policy_.by_priority) return free_time(slot, now);
  double ahead = 0;
  for (const auto& [level, work] : slot.work_by_priority) {
    if (level < priority) break;  // ordered from the highest priority down
    ahead += work.work;
  }
  return std::max(now, slot.running_end) + std::max(0.0, ahead);
}

double ModelBasedScheduler::transfer_delay(const Slot& slot, const Estimates& estimates, double start,
                                           double now) const {
  if (!policy_.count_transfers || estimates.transfer.empty()) return 0.0;
  const double transfer = estimates.transfer[slot.info.memory_node];
  // With a prefetch, the copy starts now and overlaps the work queued before the task: it
  // delays the task only if it lands after the worker would be free. Without, the worker
  // makes the copy itself when it takes the task.
  return policy_.prefetch ? std::max(0.0, now + transfer - start) : transfer;
}

double ModelBasedScheduler::affinity_penalty(unsigned arch, double duration, double slowest) const {
  if (policy_.affinity_weight <= 0 || duration <= 0) return 0.0;
  const double speedup = slowest / duration;
  if (speedup <= 1) return 0.0;
  const double worth = policy_.affinity_weight * duration * std::max(0.0, best_speedup_[arch] / speedup - 1);
  // At most what the task gains here over the slowest architecture: keeping this one for other
  // kernels may even the two out, never make the task wait longer than it would take there. So
  // affinity alone sends a task to a slower architecture only if that one can start it sooner.
  // Without the bound, a GPU hundreds of times faster than a core on GEMM would look too dear,
  // even idle, for a POTRF it runs ten times faster than a core.
  return std::min(worth, slowest - duration);
}

double ModelBasedScheduler::nominal_duration() const {
  return known_duration_count_ == 0 ? 0.0 : known_duration_sum_ / static_cast<double>(known_duration_count_);
}

ModelBasedScheduler::Slot* ModelBasedScheduler::pick(std::span<Slot* const> candidates,
                                                     std::span<const double> completions,
                                                     std::span<const double> transfers, double now) const {
  // Compared as time from now: a relative tolerance on absolute clock values would grow with
  // the machine's uptime.
  double best = std::numeric_limits<double>::infinity();
  for (double completion : completions) best = std::min(best, completion - now);
  const double limit = best + policy_.tie_tolerance * std::abs(best) + 1e-12;
  Slot* chosen = nullptr;
  double chosen_transfer = 0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (!(completions[i] - now <= limit)) continue;
    Slot* slot = candidates[i];
    const double transfer = policy_.prefer_local_data && !transfers.empty() ? transfers[i] : 0.0;
    if (chosen != nullptr) {
      if (transfer > chosen_transfer) continue;
      if (transfer == chosen_transfer) {
        if (slot->queued_tasks > chosen->queued_tasks) continue;
        if (slot->queued_tasks == chosen->queued_tasks && slot->info.id > chosen->info.id) continue;
      }
    }
    chosen = slot;
    chosen_transfer = transfer;
  }
  // Only when every completion was NaN, which the sanitised estimates rule out.
  return chosen != nullptr ? chosen : candidates.front();
}

ModelBasedScheduler::Choice ModelBasedScheduler::choose(const ext::SchedTask& task, const Estimates& estimates,
                                                        double now) const {
  std::vector<Slot*>& candidates = candidates_;
  candidates.clear();
  for (const auto& slot : slots_) {
    if (estimates.eligible[static_cast<unsigned>(slot->info.arch)]) candidates.push_back(slot.get());
  }
  if (candidates.empty()) return {};
  // A worker whose memory node can never hold the task's data would fail it: left out while
  // another candidate can run it (when none can, the task fails saying why wherever it goes).
  const auto cannot_hold = [&](const Slot* slot) { return !holds(*slot, task); };
  const auto keep_those_that_hold = [&] {
    if (std::any_of(candidates.begin(), candidates.end(), cannot_hold) &&
        !std::all_of(candidates.begin(), candidates.end(), cannot_hold)) {
      std::erase_if(candidates, cannot_hold);
    }
  };
  keep_those_that_hold();

  auto transfer_to = [&](const Slot& slot) {
    return estimates.transfer.empty() ? 0.0 : estimates.transfer[slot.info.memory_node];
  };
  auto counted_transfer = [&](const Slot& slot) { return policy_.count_transfers ? transfer_to(slot) : 0.0; };

  double known_sum = 0;
  unsigned known_count = 0;
  bool some_unknown = false;
  if (estimates.has_model) {
    for (unsigned a = 0; a < kArchCount; ++a) {
      if (!estimates.eligible[a]) continue;
      if (estimates.duration[a]) {
        known_sum += *estimates.duration[a];
        ++known_count;
      } else {
        some_unknown = true;
      }
    }
  }

  std::vector<double>& completions = completions_;
  std::vector<double>& transfers = transfers_;
  completions.clear();
  transfers.clear();
  if (estimates.has_model && some_unknown) {
    // Calibration spreading: only workers whose architecture still needs samples.
    std::erase_if(candidates, [&](const Slot* slot) {
      return estimates.duration[static_cast<unsigned>(slot->info.arch)].has_value();
    });
    keep_those_that_hold();
    for (const Slot* slot : candidates) {
      completions.push_back(free_time(*slot, now));
      transfers.push_back(transfer_to(*slot));
    }
    Slot* chosen = pick(candidates, completions, transfers, now);
    const double duration = known_count > 0 ? known_sum / known_count : nominal_duration();
    return {chosen, duration + counted_transfer(*chosen), std::nullopt};
  }

  const double nominal = nominal_duration();
  auto delay = [&](const Slot& slot, double start) { return transfer_delay(slot, estimates, start, now); };
  // Affinity: an architecture that speeds this task up less than it speeds up the best-suited
  // tasks is better kept for those; its completion is weighed up by what its time is worth.
  // The slowest architecture for the task gains nothing on it and is not weighed up.
  double slowest = 0;
  if (estimates.has_model) {
    for (unsigned a = 0; a < kArchCount; ++a) {
      if (estimates.eligible[a] && estimates.duration[a]) slowest = std::max(slowest, *estimates.duration[a]);
    }
  }
  std::vector<double>& delays = delays_;
  delays.clear();
  for (const Slot* slot : candidates) {
    const auto arch_index = static_cast<unsigned>(slot->info.arch);
    const auto& known = estimates.duration[arch_index];
    const double duration = estimates.has_model ? *known : nominal;
    const double start = start_time(*slot, task.priority, now);
    delays.push_back(delay(*slot, start));
    double penalty = 0;
    if (policy_.affinity_weight > 0 && estimates.has_model && duration > 0) {
      double& best_speedup = best_speedup_[arch_index];  // guarded by accounting_mutex_, held by push
      best_speedup = std::max(best_speedup, slowest / duration);
      penalty = affinity_penalty(arch_index, duration, slowest);
    }
    completions.push_back(start + delays.back() + duration + penalty);
    transfers.push_back(transfer_to(*slot));
  }
  Slot* chosen = pick(candidates, completions, transfers, now);
  const auto index =
      static_cast<std::size_t>(std::find(candidates.begin(), candidates.end(), chosen) - candidates.begin());
  const auto arch = static_cast<unsigned>(chosen->info.arch);
  const double duration = estimates.has_model ? *estimates.duration[arch] : nominal;
  return {chosen, duration + delays[index], estimates.has_model ? estimates.duration[arch] : std::nullopt};
}

void ModelBasedScheduler::charge(Slot& slot, const Entry& entry, std::optional<double> known_duration) {
  slot.queued_work += entry.charge;
  ++slot.queued_tasks;
  if (policy_.by_priority) {
    PriorityWork& level = slot.work_by_priority[entry.rank];
    level.work += entry.charge;
    ++level.tasks;
  }
  if (known_duration) {
    known_duration_sum_ += *known_duration;
    ++known_duration_count_;
  }
}

void ModelBasedScheduler::discharge(Slot& slot, const Entry& entry) {
  slot.queued_work -= entry.charge;
  // Exactly zero once the queue is empty, so rounding errors cannot accumulate.
  if (--slot.queued_tasks == 0) slot.queued_work = 0;
  if (policy_.by_priority) {
    auto level = slot.work_by_priority.find(entry.rank);
    if (level != slot.work_by_priority.end()) {
      level->second.work -= entry.charge;
      if (--level->second.tasks == 0) slot.work_by_priority.erase(level);
    }
  }
}

void ModelBasedScheduler::push(ext::SchedTask* task, int /*from_worker*/) {
  thread_local Estimates estimates;
  estimate(*task, estimates);
  const double now = context_->now();
  Slot* target = nullptr;
  Entry entry;
  {
    std::lock_guard guard(accounting_mutex_);
    const Choice choice = choose(*task, estimates, now);
    if (choice.slot == nullptr) {
      // No worker can run it; the engine refuses such tasks before they get here. Kept rather
      // than handed to a worker that cannot run it.
      unrunnable_.push_back(task);
      return;
    }
    const std::uint64_t arrival = next_arrival_++;
    entry = Entry{.rank = policy_.by_priority ? task->priority : 0,
                  .order = policy_.by_priority ? task->sequence : arrival,
                  .arrival = arrival,
                  .task = task,
                  .charge = choice.charge};
    charge(*choice.slot, entry, choice.known_duration);
    target = choice.slot;
  }
  enqueue(*target, entry);
}

void ModelBasedScheduler::prefetch_for(const Slot& slot, const ext::SchedTask& task) {
  try {
    context_->prefetch(task, slot.info.memory_node);
  } catch (...) {
    // Prefetching is only a head start: the worker fetches the data itself before running.
  }
}

void ModelBasedScheduler::prefetch_entry(const Slot& slot, const Entry& entry) {
  if (entry.data_ready < 0) {
    // The node's link makes the copies asked for one after another: these land after those
    // asked for before them. Estimated before the prefetch: once started, they count as made.
    const double transfer = usable_transfer(context_->expected_transfer(*entry.task, slot.info.memory_node));
    const double now = context_->now();
    std::lock_guard guard(link_mutex_);
    double& free = link_free_[slot.info.memory_node];
    entry.data_ready = transfer > 0 ? (free = std::max(now, free) + transfer) : now;
  }
  prefetch_for(slot, *entry.task);
}

bool ModelBasedScheduler::holds(const Slot& slot, const ext::SchedTask& task) const {
  return slot.info.memory_node == 0 || context_->can_hold(task, slot.info.memory_node);
}

bool ModelBasedScheduler::prefetches(const Slot& slot) const { return policy_.prefetch && slot.info.memory_node != 0; }

void ModelBasedScheduler::enqueue(Slot& target, const Entry& entry) {
  if (prefetches(target)) {
    std::size_t ahead = 0;
    {
      std::lock_guard guard(target.queue_mutex);
      for (auto it = target.queue.begin();
           it != target.queue.end() && ahead < policy_.prefetch_window && EntryOrder{}(*it, entry); ++it) {
        ++ahead;
      }
    }
    // Before the task is queued: once queued it may run, finish and be recycled at any moment.
    if (ahead < policy_.prefetch_window) prefetch_entry(target, entry);
  }
  std::lock_guard guard(target.queue_mutex);
  target.queue.insert(entry);
  target.queued.fetch_add(1, std::memory_order_release);
}

void ModelBasedScheduler::prefetch_window_of(Slot& slot) {
  if (!prefetches(slot) || slot.queued.load(std::memory_order_acquire) == 0) return;
  // Under the queue's lock, which keeps the tasks queued (and alive); a prefetch never waits.
  std::lock_guard guard(slot.queue_mutex);
  std::size_t looked = 0;
  for (auto it = slot.queue.begin(); it != slot.queue.end() && looked < policy_.prefetch_window; ++it, ++looked) {
    prefetch_entry(slot, *it);
  }
}

namespace {

// The first task of a slot's queue that can run on `arch` (every queued one can; the check is a
// safety net). Under the queue's lock.
template <class Slot>
auto first_runnable(Slot& slot, Arch arch) {
  return std::find_if(slot.queue.begin(), slot.queue.end(),
                      [arch](const auto& entry) { return entry.task->where.contains(arch); });
}

template <class Slot, class Entry>
void take_out(Slot& slot, typename decltype(Slot::queue)::iterator it, Entry& out) {
  out = *it;
  slot.queue.erase(it);
  slot.queued.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace

bool ModelBasedScheduler::take_first(Slot& slot, Arch arch, Entry& out) {
  if (slot.queued.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard guard(slot.queue_mutex);
  const auto first = first_runnable(slot, arch);
  if (first == slot.queue.end()) return false;
  take_out(slot, first, out);
  return true;
}

bool ModelBasedScheduler::take_soonest(Slot& slot, Entry& out) {
  if (!prefetches(slot)) return take_first(slot, slot.info.arch, out);
  if (slot.queued.load(std::memory_order_acquire) == 0) return false;
  // A task of higher priority queued after a task whose data was asked for earlier goes ahead
  // of it in the queue, but its data lands after: the link copies in the order asked. Rather
  // than wait for that data, the worker takes the first task behind it whose data was asked for
  // (each was within the prefetch window at some point) that it expects to have done before the
  // first one's data lands: that delays nothing queued ahead of it. Bounded: a pop stays short.
  constexpr std::size_t kLookedAt = 16;
  const double now = context_->now();
  std::lock_guard guard(slot.queue_mutex);
  const auto first = first_runnable(slot, slot.info.arch);
  if (first == slot.queue.end()) return false;
  auto chosen = first;
  const double first_ready = std::max(now, first->data_ready);
  std::size_t looked = 0;
  for (auto it = std::next(first); first_ready > now && it != slot.queue.end() && looked < kLookedAt; ++it, ++looked) {
    if (it->data_ready < 0 || !it->task->where.contains(slot.info.arch)) continue;
    const std::optional<double> duration = usable_duration(context_->expected_duration(*it->task, slot.info.arch));
    if (duration && std::max(now, it->data_ready) + *duration < first_ready) {
      chosen = it;
      break;
    }
  }
  take_out(slot, chosen, out);
  return true;
}

ModelBasedScheduler::Slot* ModelBasedScheduler::steal(Slot& thief, Entry& out) {
  const std::span<Slot* const> peers(thief.peers);
  const std::span<Slot* const> tiers[] = {peers.first(thief.same_node_peers), peers.subspan(thief.same_node_peers)};
  for (std::span<Slot* const> tier : tiers) {
    // Each failed take means another worker emptied that queue meanwhile; bounded retries.
    for (std::size_t attempt = 0; attempt < tier.size(); ++attempt) {
      Slot* victim = nullptr;
      std::size_t most = 0;
      for (Slot* peer : tier) {
        const std::size_t queued = peer->queued.load(std::memory_order_relaxed);
        if (queued > most) {
          most = queued;
          victim = peer;
        }
      }
      if (victim == nullptr) break;
      // A task the thief's node cannot hold is taken all the same: the engine passes it on to a
      // worker that can, waking them all (the push woke one worker of the kind, maybe this one:
      // left in the queue, it would wait for its own worker's next pop, asleep).
      if (take_first(*victim, thief.info.arch, out)) return victim;
    }
  }
  return nullptr;
}

namespace {

// How long an idle worker waits before it looks at other architectures' queues again.
constexpr double kRescueInterval = 200e-6;

}  // namespace

ModelBasedScheduler::Slot* ModelBasedScheduler::rescue(Slot& thief, bool ahead, Entry& out, double& charge) {
  // Bounded: an idle worker looks at the head of each queue, where waiting costs the most.
  constexpr std::size_t kLookedAt = 16;
  const double now = context_->now();
  double thief_free;
  {
    std::lock_guard guard(accounting_mutex_);
    thief_free = free_from(thief, ahead, now);
  }
  Slot* best_slot = nullptr;
  Entry best;
  double best_gain = 0;
  double best_charge = 0;
  for (const auto& victim : slots_) {
    if (victim->info.arch == thief.info.arch || victim->queued.load(std::memory_order_acquire) == 0) continue;
    double victim_done;  // when the victim would end the tasks looked at so far
    {
      std::lock_guard guard(accounting_mutex_);
      victim_done = std::max(now, victim->running_end);
    }
    std::lock_guard guard(victim->queue_mutex);
    std::size_t looked = 0;
    for (auto it = victim->queue.begin(); it != victim->queue.end() && looked < kLookedAt; ++it, ++looked) {
      const double starts_there = victim_done;
      victim_done += it->charge;  // its expected completion there
      if (!it->task->where.contains(thief.info.arch) || !holds(thief, *it->task)) continue;
      const std::optional<double> here = context_->expected_duration(*it->task, thief.info.arch);
      const std::optional<double> there = context_->expected_duration(*it->task, victim->info.arch);
      if (!here || !there) continue;
      const double transfer =
          policy_.count_transfers ? context_->expected_transfer(*it->task, thief.info.memory_node) : 0.0;
      const double done_here = thief_free + transfer + *here;
      // A slower architecture takes a task only if it would be done before the task would even
      // start where it waits: winning on paper by a long queue's length is not enough, since
      // the estimates of a long queue drift and the task's dependents wait for the slow worker.
      if (*here > *there && done_here > starts_there) continue;
      const double gain = victim_done - done_here;
      if (gain > best_gain) {
        best_gain = gain;
        best = *it;
        best_slot = victim.get();
        best_charge = transfer + *here;
      }
    }
  }
  if (best_slot == nullptr) return nullptr;
  std::lock_guard guard(best_slot->queue_mutex);
  auto it = best_slot->queue.find(best);
  if (it == best_slot->queue.end() || it->task != best.task) return nullptr;  // taken meanwhile
  out = *it;
  best_slot->queue.erase(it);
  best_slot->queued.fetch_sub(1, std::memory_order_relaxed);
  charge = best_charge;
  return best_slot;
}

bool ModelBasedScheduler::hand_over(Slot& self, const Entry& entry, bool ahead) {
  if (!several_archs_) return false;  // no model lookups on the pop path of a CPU-only runtime
  thread_local Estimates estimates;
  estimate(*entry.task, estimates);
  if (!estimates.has_model) return false;
  const std::optional<double> here = estimates.duration[static_cast<unsigned>(self.info.arch)];
  if (!here) return false;
  double slowest = 0;
  for (unsigned a = 0; a < kArchCount; ++a) {
    if (estimates.eligible[a] && estimates.duration[a]) slowest = std::max(slowest, *estimates.duration[a]);
  }
  const double now = context_->now();
  Slot* target = nullptr;
  Entry moved = entry;
  {
    std::lock_guard guard(accounting_mutex_);
    const double free = free_from(self, ahead, now);
    const double mine = free + transfer_delay(self, estimates, free, now) + *here - now +
                        affinity_penalty(static_cast<unsigned>(self.info.arch), *here, slowest);
    double best = mine * (1 - policy_.tie_tolerance);  // beyond the estimates' precision only
    for (const auto& slot : slots_) {
      const auto arch = static_cast<unsigned>(slot->info.arch);
      if (slot->info.arch == self.info.arch || !estimates.eligible[arch] || !holds(*slot, *entry.task)) continue;
      const std::optional<double> duration = estimates.duration[arch];
      if (!duration || *duration >= *here) continue;  // only to a faster architecture
      const double start = start_time(*slot, entry.task->priority, now);
      const double charge = transfer_delay(*slot, estimates, start, now) + *duration;
      const double done = start + charge - now + affinity_penalty(arch, *duration, slowest);
      if (done < best) {
        best = done;
        target = slot.get();
        moved.charge = charge;
      }
    }
    if (target == nullptr) return false;
    discharge(self, entry);
    moved.arrival = next_arrival_++;
    moved.data_ready = -1;  // its data is to go to another node now
    if (!policy_.by_priority) moved.order = moved.arrival;
    charge(*target, moved, std::nullopt);  // its duration was counted in the nominal one already
  }
  enqueue(*target, moved);
  context_->wake(target->info.arch);
  return true;
}

ext::SchedTask* ModelBasedScheduler::pop(unsigned worker) { return take(worker, false); }

ext::SchedTask* ModelBasedScheduler::pop_ahead(unsigned worker) {
  // The data of the first queued tasks is already on its way (prefetch window): taking the next task
  // early would only take it out of reach of a peer that frees up first, and of the hand-over.
  if (policy_.prefetch) return nullptr;
  return take(worker, true);
}

double ModelBasedScheduler::free_from(const Slot& slot, bool ahead, double now) const {
  return ahead ? std::max(now, slot.running_end) : now;
}

ext::SchedTask* ModelBasedScheduler::take(unsigned worker, bool ahead) {
  Slot* self = worker < by_id_.size() ? by_id_[worker] : nullptr;
  if (self == nullptr) return nullptr;
  Entry entry;
  Slot* source = nullptr;
  // Placed when it became ready, a task may have a faster worker free sooner by now (the queues
  // went faster than estimated): it is handed over rather than run late on a slow one.
  constexpr unsigned kMostHandOvers = 16;  // per pop, so that a pop stays short
  for (unsigned handed = 0; take_soonest(*self, entry);) {
    if (handed < kMostHandOvers && hand_over(*self, entry, ahead)) {
      ++handed;
      continue;
    }
    source = self;
    break;
  }
  if (source == nullptr) source = steal(*self, entry);
  double rescued_charge = -1;
  if (source == nullptr) {
    const double now = context_->now();
    if (now >= self->next_rescue) {
      source = rescue(*self, ahead, entry, rescued_charge);
      if (source == nullptr) self->next_rescue = now + kRescueInterval;
    }
  }
  if (source == nullptr) {
    if (!ahead && !self->idle_noted) {
      // Nothing runs on this worker now: whatever it ran ended, early or not.
      const double now = context_->now();
      std::lock_guard guard(accounting_mutex_);
      self->running_end = now;
      self->idle_noted = true;
    }
    return nullptr;
  }
  self->idle_noted = false;
  // The queue moved up: the data of the tasks now within its first few is to be on its way.
  prefetch_window_of(*source);
  const double now = context_->now();
  std::lock_guard guard(accounting_mutex_);
  discharge(*source, entry);
  self->running_end = free_from(*self, ahead, now) + (rescued_charge >= 0 ? rescued_charge : entry.charge);
  return entry.task;
}

std::vector<ext::SchedTask*> ModelBasedScheduler::queued_tasks(unsigned worker) const {
  std::vector<ext::SchedTask*> tasks;
  Slot* slot = worker < by_id_.size() ? by_id_[worker] : nullptr;
  if (slot == nullptr) return tasks;
  std::lock_guard guard(slot->queue_mutex);
  for (const Entry& entry : slot->queue) tasks.push_back(entry.task);
  return tasks;
}

double ModelBasedScheduler::expected_free(unsigned worker, double now) const {
  Slot* slot = worker < by_id_.size() ? by_id_[worker] : nullptr;
  if (slot == nullptr) return now;
  std::lock_guard guard(accounting_mutex_);
  return free_time(*slot, now);
}

}  // namespace hetflow::detail
