// eager: one central FIFO; any idle worker takes the oldest task it can run.
#include "hetflow/ext/scheduler.hpp"
#include "sched/task_fifo.hpp"

namespace hetflow::detail {
namespace {

class EagerScheduler final : public ext::Scheduler {
 public:
  void init(std::span<const ext::WorkerInfo> workers, ext::SchedulerContext& /*context*/) override {
    workers_.assign(workers.begin(), workers.end());
  }
  void push(ext::SchedTask* task, int /*from_worker*/) override { queue_.push(task); }
  ext::SchedTask* pop(unsigned worker) override { return queue_.pop(workers_[worker].arch); }

 private:
  std::vector<ext::WorkerInfo> workers_;
  TaskFifo queue_;
};

}  // namespace
}  // namespace hetflow::detail

HETFLOW_REGISTER_SCHEDULER(eager, "one central FIFO queue", hetflow::detail::EagerScheduler);
