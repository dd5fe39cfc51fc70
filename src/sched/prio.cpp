// prio: one central queue ordered by priority (highest first), then by submission order.
#include <algorithm>
#include <array>
#include <mutex>
#include <vector>

#include "hetflow/ext/scheduler.hpp"

namespace hetflow::detail {
namespace {

class PriorityScheduler final : public ext::Scheduler {
 public:
  void init(std::span<const ext::WorkerInfo> workers, ext::SchedulerContext& /*context*/) override {
    workers_.assign(workers.begin(), workers.end());
  }

  void push(ext::SchedTask* task, int /*from_worker*/) override {
    std::lock_guard guard(mutex_);
    auto& heap = heaps_[task->where.bits()];
    heap.push_back(task);
    std::push_heap(heap.begin(), heap.end(), later);
  }

  ext::SchedTask* pop(unsigned worker) override {
    const Arch arch = workers_[worker].arch;
    std::lock_guard guard(mutex_);
    std::vector<ext::SchedTask*>* best = nullptr;
    // Tasks are kept per set of architectures, so each heap's top is runnable or not as a whole.
    for (std::uint32_t mask = 0; mask < heaps_.size(); ++mask) {
      auto& heap = heaps_[mask];
      if (heap.empty() || !ArchMask::from_bits(mask).contains(arch)) continue;
      if (best == nullptr || later(best->front(), heap.front())) best = &heap;
    }
    if (best == nullptr) return nullptr;
    std::pop_heap(best->begin(), best->end(), later);
    ext::SchedTask* task = best->back();
    best->pop_back();
    return task;
  }

 private:
  static bool later(const ext::SchedTask* a, const ext::SchedTask* b) {
    if (a->priority != b->priority) return a->priority < b->priority;
    return a->sequence > b->sequence;
  }
  std::vector<ext::WorkerInfo> workers_;
  std::mutex mutex_;
  std::array<std::vector<ext::SchedTask*>, 1u << kArchCount> heaps_;
};

}  // namespace
}  // namespace hetflow::detail

HETFLOW_REGISTER_SCHEDULER(prio, "one central queue by priority, then submission order",
                           hetflow::detail::PriorityScheduler);
