// ws: work stealing. Each worker owns a Chase-Lev deque (LIFO for itself, FIFO for thieves);
// each application thread that submits gets its own deque that workers steal from, so a
// submission is a few stores and never takes a lock. Workers only exchange tasks with workers
// of the same architecture.
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "sched/chase_lev_deque.hpp"
#include "sched/random_victim.hpp"
#include "sched/task_fifo.hpp"

namespace hetflow::detail {
namespace {

using Deque = ChaseLevDeque<ext::SchedTask*>;

std::atomic<std::uint64_t> next_instance{1};

class WorkStealingScheduler final : public ext::Scheduler {
 public:
  void init(std::span<const ext::WorkerInfo> workers, ext::SchedulerContext& /*context*/) override {
    for (const auto& info : workers) {
      auto slot = std::make_unique<Worker>(info.id);
      slot->arch = info.arch;
      workers_.push_back(std::move(slot));
      peers_[static_cast<unsigned>(info.arch)].push_back(info.id);
    }
  }

  void push(ext::SchedTask* task, int from_worker) override {
    if (from_worker >= 0) {
      Worker& self = *workers_[static_cast<unsigned>(from_worker)];
      if (task->where.contains(self.arch)) {
        self.deque.push(task);
        return;
      }
    }
    Arch arch = target_arch(task->where);
    if (Deque* deque = submission_deque(arch)) {
      deque->push(task);
    } else {
      overflow_[static_cast<unsigned>(arch)].push(task);
    }
  }

  ext::SchedTask* pop(unsigned worker) override {
    Worker& self = *workers_[worker];
    if (ext::SchedTask* task = self.deque.pop()) return task;
    const unsigned arch = static_cast<unsigned>(self.arch);

    Submissions& submissions = submissions_[arch];
    const unsigned count = submissions.count.load(std::memory_order_acquire);
    for (unsigned i = 0; i < count; ++i) {
      Deque* deque = submissions.deques[(i + worker) % count].load(std::memory_order_acquire);
      if (deque == nullptr) continue;
      while (!deque->looks_empty()) {
        if (ext::SchedTask* task = deque->steal()) return task;
      }
    }
    if (ext::SchedTask* task = overflow_[arch].pop(self.arch)) return task;

    const auto& peers = peers_[arch];
    const auto n = static_cast<std::uint32_t>(peers.size());
    if (n > 1) {
      const std::uint32_t start = self.random.below(n);
      for (std::uint32_t i = 0; i < n; ++i) {
        unsigned victim = peers[(start + i) % n];
        if (victim == worker) continue;
        Deque& deque = workers_[victim]->deque;
        while (!deque.looks_empty()) {
          if (ext::SchedTask* task = deque.steal()) return task;
        }
      }
    }
    return nullptr;
  }

 private:
  static constexpr unsigned kMaxSubmitters = 64;

  struct alignas(64) Worker {
    explicit Worker(unsigned id) : random(id + 1) {}
    Deque deque;
    Arch arch = Arch::cpu;
    FastRandom random;
  };

  struct Submissions {
    std::array<std::atomic<Deque*>, kMaxSubmitters> deques{};
    std::atomic<unsigned> count{0};
  };

  Arch target_arch(ArchMask where) const {
    for (unsigned a = 0; a < kArchCount; ++a) {
      if (where.contains(static_cast<Arch>(a)) && !peers_[a].empty()) return static_cast<Arch>(a);
    }
    return Arch::cpu;
  }

  // The calling thread's own submission deque for `arch`, made on first use; nullptr once
  // kMaxSubmitters threads have one (later threads share a locked queue).
  Deque* submission_deque(Arch arch) {
    struct Cache {
      std::uint64_t instance = 0;
      std::array<Deque*, kArchCount> deques{};
    };
    thread_local Cache cache;
    if (cache.instance != instance_) cache = Cache{instance_, {}};
    Deque*& deque = cache.deques[static_cast<unsigned>(arch)];
    if (deque == nullptr) {
      std::lock_guard guard(register_mutex_);
      Submissions& submissions = submissions_[static_cast<unsigned>(arch)];
      unsigned slot = submissions.count.load(std::memory_order_relaxed);
      if (slot == kMaxSubmitters) return nullptr;
      owned_.push_back(std::make_unique<Deque>());
      deque = owned_.back().get();
      submissions.deques[slot].store(deque, std::memory_order_release);
      submissions.count.store(slot + 1, std::memory_order_release);
    }
    return deque;
  }

  const std::uint64_t instance_ = next_instance.fetch_add(1);
  std::vector<std::unique_ptr<Worker>> workers_;
  std::array<std::vector<unsigned>, kArchCount> peers_;
  std::array<Submissions, kArchCount> submissions_;
  std::array<TaskFifo, kArchCount> overflow_;
  std::mutex register_mutex_;
  std::vector<std::unique_ptr<Deque>> owned_;
};

}  // namespace
}  // namespace hetflow::detail

HETFLOW_REGISTER_SCHEDULER(ws, "work stealing: a deque per worker and per submitting thread (default)",
                           hetflow::detail::WorkStealingScheduler);
