// random: each task goes to the queue of a worker picked at random among those that can run it;
// a worker whose queue is empty takes from the others, so no task waits behind a busy worker.
#include <memory>
#include <mutex>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "sched/random_victim.hpp"
#include "sched/task_fifo.hpp"

namespace hetflow::detail {
namespace {

class RandomScheduler final : public ext::Scheduler {
 public:
  void init(std::span<const ext::WorkerInfo> workers, ext::SchedulerContext& /*context*/) override {
    workers_.assign(workers.begin(), workers.end());
    queues_ = std::vector<TaskFifo>(workers.size());
  }

  void push(ext::SchedTask* task, int /*from_worker*/) override {
    std::uint32_t pick;
    {
      std::lock_guard guard(random_mutex_);
      pick = random_.below(static_cast<std::uint32_t>(workers_.size()));
    }
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      const auto& candidate = workers_[(pick + i) % workers_.size()];
      if (task->where.contains(candidate.arch)) {
        queues_[candidate.id].push(task);
        return;
      }
    }
    queues_[pick].push(task);  // unreachable: the engine only submits runnable tasks
  }

  ext::SchedTask* pop(unsigned worker) override {
    const Arch arch = workers_[worker].arch;
    for (std::size_t i = 0; i < queues_.size(); ++i) {
      if (ext::SchedTask* task = queues_[(worker + i) % queues_.size()].pop(arch)) return task;
    }
    return nullptr;
  }

 private:
  std::vector<ext::WorkerInfo> workers_;
  std::vector<TaskFifo> queues_;
  std::mutex random_mutex_;
  FastRandom random_{42};
};

}  // namespace
}  // namespace hetflow::detail

HETFLOW_REGISTER_SCHEDULER(random, "each task to a random worker's queue; idle workers take from others",
                           hetflow::detail::RandomScheduler);
