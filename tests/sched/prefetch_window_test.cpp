// The model-driven schedulers that prefetch (dmda, dmdas) start moving a task's data only while
// the task is among the first of its worker's queue (ModelPolicy::prefetch_window): a node's
// link makes its copies one after another, so the data of tasks queued far behind would hold
// up that of the tasks about to run. Driven directly with a fake SchedulerContext.
#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "sched/model_based.hpp"

namespace {

using hetflow::Arch;
using hetflow::kArchCount;
using hetflow::detail::ModelBasedScheduler;
using hetflow::ext::SchedTask;
using hetflow::ext::WorkerInfo;

struct FakeTask : SchedTask {
  int id = 0;
};

// Every task takes 1 s on a GPU and 0.5 s to bring its data to node 1.
class FakeContext final : public hetflow::ext::SchedulerContext {
 public:
  [[nodiscard]] double now() const noexcept override { return 0; }
  [[nodiscard]] bool has_model(const SchedTask& /*task*/) const override { return true; }
  [[nodiscard]] std::optional<double> expected_duration(const SchedTask& /*task*/, Arch arch) const override {
    return arch == Arch::cuda ? std::optional<double>(1.0) : std::nullopt;
  }
  [[nodiscard]] double expected_transfer(const SchedTask& /*task*/, unsigned node) const override {
    return node == 1 ? 0.5 : 0.0;
  }
  void prefetch(const SchedTask& task, unsigned node) override {
    EXPECT_EQ(node, 1u);
    prefetched.insert(static_cast<const FakeTask&>(task).id);
  }
  void wake(Arch /*arch*/) override {}

  std::set<int> prefetched;
};

struct Rig {
  explicit Rig(const std::string& name) {
    owner = hetflow::ext::make_scheduler(name);
    scheduler = dynamic_cast<ModelBasedScheduler*>(owner.get());
    if (scheduler == nullptr) throw std::runtime_error(name + " is not a model-based scheduler");
    scheduler->init(workers, context);
  }
  FakeTask& push(int priority) {
    tasks.push_back(std::make_unique<FakeTask>());
    FakeTask& task = *tasks.back();
    task.id = static_cast<int>(tasks.size()) - 1;
    task.sequence = tasks.size() - 1;
    task.where = Arch::cuda;
    task.priority = priority;
    scheduler->push(&task, -1);
    return task;
  }
  int pop() {
    SchedTask* task = scheduler->pop(0);
    return task == nullptr ? -1 : static_cast<FakeTask*>(task)->id;
  }

  std::vector<WorkerInfo> workers{{0, Arch::cuda, 1}};
  FakeContext context;
  std::unique_ptr<hetflow::ext::Scheduler> owner;
  ModelBasedScheduler* scheduler = nullptr;
  std::vector<std::unique_ptr<FakeTask>> tasks;
};

class PrefetchingSchedulers : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(PrefetchWindow, PrefetchingSchedulers, ::testing::Values("dmda", "dmdas"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) { return param_info.param; });

TEST_P(PrefetchingSchedulers, OnlyTheFirstQueuedTasksDataMovesAndTheRestFollowsAsTheQueueMovesUp) {
  Rig rig(GetParam());
  for (int i = 0; i < 5; ++i) rig.push(0);
  EXPECT_EQ(rig.context.prefetched, (std::set<int>{0, 1}));
  EXPECT_EQ(rig.pop(), 0);
  EXPECT_EQ(rig.context.prefetched, (std::set<int>{0, 1, 2}));
  EXPECT_EQ(rig.pop(), 1);
  EXPECT_EQ(rig.pop(), 2);
  EXPECT_EQ(rig.context.prefetched, (std::set<int>{0, 1, 2, 3, 4}));
}

TEST(PrefetchWindow, DmdasPrefetchesAnUrgentTaskQueuedAheadOfTheRest) {
  Rig rig("dmdas");
  for (int i = 0; i < 4; ++i) rig.push(0);
  rig.push(10);  // queued first
  EXPECT_EQ(rig.context.prefetched, (std::set<int>{0, 1, 4}));
  EXPECT_EQ(rig.pop(), 4);
  EXPECT_EQ(rig.context.prefetched, (std::set<int>{0, 1, 4}));  // 0 and 1 are the first two again
}

TEST(PrefetchWindow, DmdasRunsATaskWhoseDataLandsFirstWhileTheFirstTasksDataIsOnItsWay) {
  Rig rig("dmdas");
  rig.push(0);   // its data lands at 0.5
  rig.push(10);  // ahead of 0, prefetched after it: at 1.0
  rig.push(20);  // at 1.5
  rig.push(30);  // at 2.0
  EXPECT_EQ(rig.context.prefetched, (std::set<int>{0, 1, 2, 3}));
  // 0 runs from 0.5 to 1.5, before 3's data lands: it delays nothing ahead of it. 1 and 2 would
  // end at 2.0 and 2.5, not before.
  EXPECT_EQ(rig.pop(), 0);
  EXPECT_EQ(rig.pop(), 3);
  EXPECT_EQ(rig.pop(), 2);
  EXPECT_EQ(rig.pop(), 1);
}

TEST(PrefetchWindow, DmdaAppendsAnUrgentTaskAfterTheRest) {
  Rig rig("dmda");
  for (int i = 0; i < 4; ++i) rig.push(0);
  rig.push(10);  // first in, first out: priorities do not count
  EXPECT_EQ(rig.context.prefetched, (std::set<int>{0, 1}));
}

}  // namespace
