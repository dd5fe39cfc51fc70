// The model-driven schedulers (dm, dmda, dmdas) driven directly: a fake SchedulerContext gives
// the clock, each task's expected durations per architecture and transfer times per node, so
// that every choice can be worked out by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "sched/model_based.hpp"

namespace {

using hetflow::Arch;
using hetflow::ArchMask;
using hetflow::kArchCount;
using hetflow::detail::ModelBasedScheduler;
using hetflow::ext::SchedTask;
using hetflow::ext::WorkerInfo;

struct FakeTask : SchedTask {
  int id = 0;
  bool model = true;
  std::array<std::optional<double>, kArchCount> duration{};
  std::map<unsigned, double> transfer;  // by node; 0 when absent
};

class FakeContext final : public hetflow::ext::SchedulerContext {
 public:
  [[nodiscard]] double now() const noexcept override { return clock_.load(std::memory_order_relaxed); }
  void set_now(double seconds) { clock_.store(seconds, std::memory_order_relaxed); }

  [[nodiscard]] bool has_model(const SchedTask& task) const override { return fake(task).model; }
  [[nodiscard]] std::optional<double> expected_duration(const SchedTask& task, Arch arch) const override {
    return fake(task).duration[static_cast<unsigned>(arch)];
  }
  [[nodiscard]] double expected_transfer(const SchedTask& task, unsigned node) const override {
    const auto& transfers = fake(task).transfer;
    auto it = transfers.find(node);
    return it == transfers.end() ? 0.0 : it->second;
  }
  void prefetch(const SchedTask& task, unsigned node) override {
    std::lock_guard guard(mutex_);
    prefetches_.emplace_back(fake(task).id, node);
  }
  void wake(Arch arch) override { wakes_[static_cast<unsigned>(arch)].fetch_add(1); }
  [[nodiscard]] unsigned wakes(Arch arch) const { return wakes_[static_cast<unsigned>(arch)].load(); }
  [[nodiscard]] std::vector<std::pair<int, unsigned>> prefetches() const {
    std::lock_guard guard(mutex_);
    return prefetches_;
  }

 private:
  static const FakeTask& fake(const SchedTask& task) { return static_cast<const FakeTask&>(task); }
  std::atomic<double> clock_{0};
  mutable std::mutex mutex_;
  std::vector<std::pair<int, unsigned>> prefetches_;
  std::array<std::atomic<unsigned>, kArchCount> wakes_{};
};

constexpr unsigned kCpu = static_cast<unsigned>(Arch::cpu);
constexpr unsigned kCuda = static_cast<unsigned>(Arch::cuda);

// Two CPU workers on host memory and one CUDA worker on node 1.
std::vector<WorkerInfo> two_cpus_one_gpu() { return {{0, Arch::cpu, 0}, {1, Arch::cpu, 0}, {2, Arch::cuda, 1}}; }

struct Rig {
  Rig(const std::string& name, std::vector<WorkerInfo> worker_list) : workers(std::move(worker_list)) {
    owner = hetflow::ext::make_scheduler(name);
    scheduler = dynamic_cast<ModelBasedScheduler*>(owner.get());
    if (scheduler == nullptr) throw std::runtime_error(name + " is not a model-based scheduler");
    scheduler->init(workers, context);
  }

  // Tasks live in a deque-like store so that pointers stay valid.
  FakeTask& task(ArchMask where, std::optional<double> cpu, std::optional<double> cuda, int priority = 0) {
    tasks.push_back(std::make_unique<FakeTask>());
    FakeTask& t = *tasks.back();
    t.id = static_cast<int>(tasks.size()) - 1;
    t.sequence = tasks.size() - 1;
    t.where = where;
    t.priority = priority;
    t.duration[kCpu] = cpu;
    t.duration[kCuda] = cuda;
    return t;
  }

  // The ids of the tasks in a worker's queue, in pop order.
  std::vector<int> queue_of(unsigned worker) const {
    std::vector<int> ids;
    for (SchedTask* t : scheduler->queued_tasks(worker)) ids.push_back(static_cast<FakeTask*>(t)->id);
    return ids;
  }

  // Which worker's queue holds the task (-1: none).
  int owner_of(const FakeTask& t) const {
    for (const WorkerInfo& w : workers) {
      for (SchedTask* queued : scheduler->queued_tasks(w.id)) {
        if (queued == &t) return static_cast<int>(w.id);
      }
    }
    return -1;
  }

  std::vector<WorkerInfo> workers;
  FakeContext context;
  std::unique_ptr<hetflow::ext::Scheduler> owner;
  ModelBasedScheduler* scheduler = nullptr;
  std::vector<std::unique_ptr<FakeTask>> tasks;
};

class AllModelSchedulers : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(ModelSched, AllModelSchedulers, ::testing::Values("dm", "dmda", "dmdas"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) { return param_info.param; });

TEST_P(AllModelSchedulers, IsRegisteredWithADescription) {
  const auto all = hetflow::ext::schedulers();
  auto found = std::find_if(all.begin(), all.end(), [&](const auto& entry) { return entry.name == GetParam(); });
  ASSERT_NE(found, all.end());
  EXPECT_FALSE(found->description.empty());
}

// A GEMM-like task 10x faster on the GPU goes there until its queue makes a CPU finish as early.
TEST_P(AllModelSchedulers, FastGpuTakesTasksUntilItsQueueMakesACpuEarlier) {
  Rig s(GetParam(), two_cpus_one_gpu());
  for (int i = 0; i < 12; ++i) s.scheduler->push(&s.task(Arch::cpu | Arch::cuda, 10.0, 1.0), -1);
  // GPU completions 1..9 beat the CPUs' 10; the 10th task ties (10 against 10) and goes to the
  // idle CPU with fewer queued tasks; then the other CPU; then the GPU again (10 < 20).
  EXPECT_EQ(s.queue_of(2), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 11}));
  EXPECT_EQ(s.queue_of(0), (std::vector<int>{9}));
  EXPECT_EQ(s.queue_of(1), (std::vector<int>{10}));
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(2, 0), 10.0);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 0), 10.0);
}

TEST_P(AllModelSchedulers, NeverQueuesATaskOnAWorkerThatCannotRunIt) {
  Rig s(GetParam(), two_cpus_one_gpu());
  // The GPU is far faster, but these tasks have no GPU implementation.
  for (int i = 0; i < 5; ++i) s.scheduler->push(&s.task(Arch::cpu, 100.0, 0.001), -1);
  EXPECT_TRUE(s.queue_of(2).empty());
  // And these have only a GPU one, however loaded the GPU gets.
  for (int i = 0; i < 5; ++i) s.scheduler->push(&s.task(Arch::cuda, 0.001, 100.0), -1);
  EXPECT_EQ(s.queue_of(2).size(), 5u);
  EXPECT_EQ(s.queue_of(0).size() + s.queue_of(1).size(), 5u);
  // The GPU worker never gets a CPU-only task, not even by taking from a CPU's queue.
  for (int i = 0; i < 5; ++i) {
    SchedTask* t = s.scheduler->pop(2);
    ASSERT_NE(t, nullptr);
    EXPECT_TRUE(t->where.contains(Arch::cuda));
  }
  EXPECT_EQ(s.scheduler->pop(2), nullptr);
  EXPECT_EQ(s.queue_of(0).size() + s.queue_of(1).size(), 5u);
}

TEST_P(AllModelSchedulers, RandomMixPopsEveryTaskOnceToACapableWorker) {
  Rig s(GetParam(), two_cpus_one_gpu());
  std::mt19937 random(7);
  std::uniform_real_distribution<double> seconds(0.001, 1.0);
  const ArchMask masks[] = {Arch::cpu, Arch::cuda, Arch::cpu | Arch::cuda};
  std::set<SchedTask*> pushed;
  for (int i = 0; i < 300; ++i) {
    FakeTask& t = s.task(masks[random() % 3], seconds(random), seconds(random), static_cast<int>(random() % 4));
    t.model = random() % 5 != 0;
    if (random() % 7 == 0) t.duration[kCuda].reset();  // not calibrated on the GPU yet
    t.transfer[1] = seconds(random) / 10;
    s.scheduler->push(&t, i % 2 == 0 ? -1 : 0);
    pushed.insert(&t);
  }
  std::set<SchedTask*> popped;
  for (bool any = true; any;) {
    any = false;
    for (const WorkerInfo& w : s.workers) {
      s.context.set_now(s.context.now() + 0.01);
      if (SchedTask* t = s.scheduler->pop(w.id)) {
        any = true;
        EXPECT_TRUE(t->where.contains(w.arch)) << "worker " << w.id;
        EXPECT_TRUE(popped.insert(t).second) << "popped twice";
      }
    }
  }
  EXPECT_EQ(popped, pushed);
}

TEST_P(AllModelSchedulers, ATaskNoWorkerCanRunIsKeptAndNeverHandedOut) {
  Rig s(GetParam(), two_cpus_one_gpu());
  s.scheduler->push(&s.task(Arch::opencl, 1.0, 1.0), -1);
  for (const WorkerInfo& w : s.workers) EXPECT_EQ(s.scheduler->pop(w.id), nullptr);
  EXPECT_EQ(s.scheduler->pop(99), nullptr);  // not a worker
}

// The first tasks whose model cannot tell yet go to the architectures that lack samples.
TEST_P(AllModelSchedulers, UncalibratedTasksAreSpreadOverEveryArchitecture) {
  Rig s(GetParam(), two_cpus_one_gpu());
  // Known on the CPU (and slow there), unknown on the GPU: to the GPU, however loaded.
  for (int i = 0; i < 3; ++i) s.scheduler->push(&s.task(Arch::cpu | Arch::cuda, 0.5, std::nullopt), -1);
  EXPECT_EQ(s.queue_of(2), (std::vector<int>{0, 1, 2}));
  // Known on the GPU only: to the CPUs, the least loaded first.
  for (int i = 0; i < 4; ++i) s.scheduler->push(&s.task(Arch::cpu | Arch::cuda, std::nullopt, 0.001), -1);
  EXPECT_EQ(s.queue_of(0), (std::vector<int>{3, 5}));
  EXPECT_EQ(s.queue_of(1), (std::vector<int>{4, 6}));
  EXPECT_EQ(s.queue_of(2), (std::vector<int>{0, 1, 2}));
}

TEST_P(AllModelSchedulers, TasksUnknownEverywhereReachEveryWorker) {
  Rig s(GetParam(), two_cpus_one_gpu());
  for (int i = 0; i < 6; ++i) s.scheduler->push(&s.task(Arch::cpu | Arch::cuda, std::nullopt, std::nullopt), -1);
  for (const WorkerInfo& w : s.workers) EXPECT_EQ(s.queue_of(w.id).size(), 2u) << "worker " << w.id;
}

// Without a model the scheduler balances load: tasks count as the mean known duration.
TEST_P(AllModelSchedulers, TasksWithoutAModelAreBalanced) {
  Rig s(GetParam(), two_cpus_one_gpu());
  for (int i = 0; i < 6; ++i) {
    FakeTask& t = s.task(Arch::cpu | Arch::cuda, std::nullopt, std::nullopt);
    t.model = false;
    s.scheduler->push(&t, -1);
  }
  for (const WorkerInfo& w : s.workers) EXPECT_EQ(s.queue_of(w.id).size(), 2u) << "worker " << w.id;

  Rig busy(GetParam(), two_cpus_one_gpu());
  busy.scheduler->push(&busy.task(Arch::cpu, 5.0, std::nullopt), -1);  // worker 0 busy for 5 s
  ASSERT_EQ(busy.queue_of(0), (std::vector<int>{0}));
  FakeTask& unmodelled = busy.task(Arch::cpu, std::nullopt, std::nullopt);
  unmodelled.model = false;
  busy.scheduler->push(&unmodelled, -1);
  EXPECT_EQ(busy.owner_of(unmodelled), 1);
  // Counted with the nominal duration (the mean known duration, 5 s).
  EXPECT_DOUBLE_EQ(busy.scheduler->expected_free(1, 0), 5.0);
}

// A worker's estimate follows what actually happens: each pop restarts it from the clock.
TEST_P(AllModelSchedulers, PopsCorrectTheExpectedFreeTime) {
  Rig s(GetParam(), {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
  for (int i = 0; i < 3; ++i) s.scheduler->push(&s.task(Arch::cpu, 2.0, std::nullopt), -1);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 0), 6.0);
  s.context.set_now(1.0);  // starts late
  ASSERT_NE(s.scheduler->pop(0), nullptr);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 1.0), 1.0 + 2.0 + 4.0);
  s.context.set_now(1.5);  // the first ended early
  ASSERT_NE(s.scheduler->pop(0), nullptr);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 1.5), 1.5 + 2.0 + 2.0);
  s.context.set_now(10.0);  // the second ended late
  ASSERT_NE(s.scheduler->pop(0), nullptr);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 10.0), 12.0);
  s.context.set_now(11.0);  // the last ended early and the worker found nothing more
  EXPECT_EQ(s.scheduler->pop(0), nullptr);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 11.0), 11.0);

  // The corrected estimate drives the next choice: a task 2 s on the CPU, 2.5 s on the GPU.
  s.context.set_now(11.0);
  FakeTask& next = s.task(Arch::cpu | Arch::cuda, 2.0, 2.5);
  s.scheduler->push(&next, -1);
  EXPECT_EQ(s.owner_of(next), 0);
}

// dmda and dmdas send each task's data where they place it when they place it: a worker that
// would look ahead is refused, and the task stays queued, within reach of its peers.
TEST(ModelSched, DataAwareSchedulersDeclineToLookAhead) {
  for (const std::string name : {"dmda", "dmdas"}) {
    Rig s(name, {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
    for (int i = 0; i < 2; ++i) s.scheduler->push(&s.task(Arch::cpu, 2.0, std::nullopt), -1);
    ASSERT_NE(s.scheduler->pop(0), nullptr) << name;
    EXPECT_EQ(s.scheduler->pop_ahead(0), nullptr) << name;
    EXPECT_EQ(s.queue_of(0).size(), 1U) << name;
    EXPECT_NE(s.scheduler->pop(0), nullptr) << name;
  }
}

// A worker that looks ahead (dm: the others decline) takes its next task while the current one
// runs: that task starts when the current one ends, and an empty look finds the worker busy
// still, not idle.
TEST(ModelSched, LookingAheadCountsTheTaskStillRunning) {
  Rig s("dm", {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
  for (int i = 0; i < 2; ++i) s.scheduler->push(&s.task(Arch::cpu, 2.0, std::nullopt), -1);
  ASSERT_NE(s.scheduler->pop(0), nullptr);
  s.context.set_now(0.5);
  ASSERT_NE(s.scheduler->pop_ahead(0), nullptr);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 0.5), 4.0);
  s.context.set_now(1.0);
  EXPECT_EQ(s.scheduler->pop_ahead(0), nullptr);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 1.0), 4.0);
  EXPECT_EQ(s.scheduler->pop(0), nullptr);  // now it is idle
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 1.0), 1.0);
}

// Looking ahead, a slow worker counts the task it still runs: a task it would start only after
// that goes to a faster worker that will be done sooner, though not sooner than the slow one
// could have been had it been free now.
TEST(ModelSched, LookingAheadHandsOverWhatTheCurrentTaskWouldDelay) {
  Rig s("dm", {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
  s.scheduler->push(&s.task(Arch::cpu, 25.0, std::nullopt), -1);
  ASSERT_NE(s.scheduler->pop(0), nullptr);  // the CPU is expected busy until 25
  s.scheduler->push(&s.task(Arch::cpu, 12.0, std::nullopt), -1);
  s.scheduler->push(&s.task(Arch::cuda, std::nullopt, 10.0), -1);
  ASSERT_NE(s.scheduler->pop(1), nullptr);                      // the GPU is busy until 10
  FakeTask& small = s.task(Arch::cpu | Arch::cuda, 1.0, 10.0);  // 10x faster on the CPU
  s.scheduler->push(&small, -1);
  ASSERT_EQ(s.owner_of(small), 1) << "GPU done at 20, CPU at 38";

  s.context.set_now(1.0);
  ASSERT_NE(s.scheduler->pop(0), nullptr);  // the first CPU task ended early: busy until 13
  s.context.set_now(1.5);
  // The GPU would be done at 20 (10 if it were free now), the CPU at 14.
  EXPECT_EQ(s.scheduler->pop_ahead(1), nullptr);
  EXPECT_EQ(s.owner_of(small), 0);
}

// A task placed on a slow worker while the fast one looked busy is handed to the fast one when
// the slow one comes to take it and the fast one will be free sooner after all.
TEST_P(AllModelSchedulers, PopHandsATaskToAFasterWorkerThatFreedUp) {
  Rig s(GetParam(), {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
  s.scheduler->push(&s.task(Arch::cpu, 20.0, std::nullopt), -1);
  ASSERT_NE(s.scheduler->pop(0), nullptr);  // the CPU worker is busy until 20
  s.scheduler->push(&s.task(Arch::cpu, 1.0, std::nullopt), -1);
  FakeTask& small = s.task(Arch::cpu | Arch::cuda, 1.0, 10.0);  // 10x faster on the CPU
  s.scheduler->push(&small, -1);
  ASSERT_EQ(s.owner_of(small), 1) << "the GPU finishes it at 10, the CPU at 22";

  s.context.set_now(2.0);  // the first CPU task ended early: the CPU will be free at 3
  ASSERT_NE(s.scheduler->pop(0), nullptr);
  EXPECT_EQ(s.scheduler->pop(1), nullptr) << "handed over, not run 10 s on the GPU";
  EXPECT_EQ(s.owner_of(small), 0);
  EXPECT_GE(s.context.wakes(Arch::cpu), 1U) << "a sleeping CPU worker must hear of it";
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(1, 2.0), 2.0) << "the GPU is charged nothing for it";
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 2.0), 4.0);
  s.context.set_now(3.0);
  EXPECT_EQ(s.scheduler->pop(0), &small);
}

TEST_P(AllModelSchedulers, PopKeepsATaskWhenNoFasterWorkerIsFreeSooner) {
  Rig s(GetParam(), {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
  s.scheduler->push(&s.task(Arch::cpu, 20.0, std::nullopt), -1);
  ASSERT_NE(s.scheduler->pop(0), nullptr);
  s.scheduler->push(&s.task(Arch::cpu, 20.0, std::nullopt), -1);
  FakeTask& small = s.task(Arch::cpu | Arch::cuda, 1.0, 10.0);
  s.scheduler->push(&small, -1);
  ASSERT_EQ(s.owner_of(small), 1);

  s.context.set_now(2.0);
  ASSERT_NE(s.scheduler->pop(0), nullptr);  // busy until 22 now
  EXPECT_EQ(s.scheduler->pop(1), &small);
  EXPECT_EQ(s.context.wakes(Arch::cpu), 0U);
}

// A worker with nothing queued takes from a peer of its architecture rather than idle while
// estimates were wrong; the accounting follows the task.
TEST_P(AllModelSchedulers, IdleWorkerTakesFromAPeerOfItsArchitectureOnly) {
  Rig s(GetParam(), two_cpus_one_gpu());
  for (int i = 0; i < 4; ++i) s.scheduler->push(&s.task(Arch::cpu, 1.0, std::nullopt), -1);
  ASSERT_EQ(s.queue_of(0), (std::vector<int>{0, 2}));
  ASSERT_EQ(s.queue_of(1), (std::vector<int>{1, 3}));
  EXPECT_EQ(s.scheduler->pop(2), nullptr);  // the GPU worker takes no CPU task
  std::vector<SchedTask*> taken;
  for (int i = 0; i < 4; ++i) {
    SchedTask* t = s.scheduler->pop(1);
    ASSERT_NE(t, nullptr) << "pop " << i;
    taken.push_back(t);
  }
  EXPECT_EQ(s.scheduler->pop(1), nullptr);
  EXPECT_TRUE(s.queue_of(0).empty());
  // Worker 0's queue was emptied by its peer: nothing is charged to it any more.
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 0), 0.0);
  EXPECT_EQ(std::set<SchedTask*>(taken.begin(), taken.end()).size(), 4u);
}

// Concurrent pushes from several threads and pops from every worker: each task comes out
// exactly once, on a worker that can run it.
TEST_P(AllModelSchedulers, ConcurrentPushAndPopLoseAndDuplicateNothing) {
  Rig s(GetParam(), {{0, Arch::cpu, 0}, {1, Arch::cpu, 0}, {2, Arch::cuda, 1}, {3, Arch::cuda, 2}});
  constexpr int kProducers = 3;
  constexpr int kPerProducer = 2000;
  constexpr int kTotal = kProducers * kPerProducer;
  std::mt19937 random(11);
  std::uniform_real_distribution<double> seconds(1e-6, 1e-3);
  const ArchMask masks[] = {Arch::cpu, Arch::cuda, Arch::cpu | Arch::cuda};
  for (int i = 0; i < kTotal; ++i) {
    FakeTask& t = s.task(masks[random() % 3], seconds(random), seconds(random), static_cast<int>(random() % 3));
    t.model = random() % 4 != 0;
    if (random() % 5 == 0) t.duration[kCpu].reset();
    t.transfer[1] = seconds(random);
    t.transfer[2] = seconds(random);
  }
  std::vector<std::atomic<int>> times_popped(kTotal);
  std::atomic<int> popped{0};
  std::atomic<bool> wrong_worker{false};

  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = p; i < kTotal; i += kProducers) {
        s.context.set_now(static_cast<double>(i) * 1e-5);
        s.scheduler->push(s.tasks[static_cast<std::size_t>(i)].get(), p == 0 ? 0 : -1);
      }
    });
  }
  for (const WorkerInfo& w : s.workers) {
    threads.emplace_back([&, w] {
      while (popped.load() < kTotal) {
        SchedTask* t = s.scheduler->pop(w.id);
        if (t == nullptr) {
          std::this_thread::yield();
          continue;
        }
        if (!t->where.contains(w.arch)) wrong_worker = true;
        times_popped[static_cast<std::size_t>(static_cast<FakeTask*>(t)->id)].fetch_add(1);
        popped.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_FALSE(wrong_worker.load());
  EXPECT_EQ(popped.load(), kTotal);
  for (int i = 0; i < kTotal; ++i) EXPECT_EQ(times_popped[static_cast<std::size_t>(i)].load(), 1) << "task " << i;
  for (const WorkerInfo& w : s.workers) {
    EXPECT_EQ(s.scheduler->pop(w.id), nullptr);
    EXPECT_DOUBLE_EQ(s.scheduler->expected_free(w.id, 1e9), 1e9) << "nothing left charged to " << w.id;
  }
}

// The data's location matters to dmda and dmdas but not to dm.
TEST(ModelSched, TransferCostFlipsTheChoiceForDmdaButNotDm) {
  const std::vector<WorkerInfo> workers = {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}};
  for (const std::string name : {"dm", "dmda", "dmdas"}) {
    Rig s(name, workers);
    FakeTask& t = s.task(Arch::cpu | Arch::cuda, 2.0, 1.0);
    t.transfer[1] = 5.0;  // the data is in host memory
    s.scheduler->push(&t, -1);
    EXPECT_EQ(s.owner_of(t), name == "dm" ? 1 : 0) << name;
    if (name != "dm") {
      EXPECT_DOUBLE_EQ(s.scheduler->expected_free(0, 0), 2.0) << name;
    }
  }
}

TEST(ModelSched, TransferTimeIsChargedToTheWorker) {
  Rig s("dmda", {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
  FakeTask& t = s.task(Arch::cpu | Arch::cuda, 10.0, 1.0);
  t.transfer[1] = 2.0;
  s.scheduler->push(&t, -1);
  ASSERT_EQ(s.owner_of(t), 1);
  EXPECT_DOUBLE_EQ(s.scheduler->expected_free(1, 0), 3.0);
}

TEST(ModelSched, DataAwareSchedulersPrefetchToTheChosenDeviceOnly) {
  const std::vector<WorkerInfo> workers = {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}};
  for (const std::string name : {"dm", "dmda", "dmdas"}) {
    Rig s(name, workers);
    FakeTask& to_gpu = s.task(Arch::cpu | Arch::cuda, 10.0, 1.0);
    to_gpu.transfer[1] = 2.0;
    s.scheduler->push(&to_gpu, -1);
    FakeTask& to_cpu = s.task(Arch::cpu, 1.0, std::nullopt);
    s.scheduler->push(&to_cpu, -1);
    const auto expected =
        name == "dm" ? std::vector<std::pair<int, unsigned>>{} : std::vector<std::pair<int, unsigned>>{{0, 1u}};
    EXPECT_EQ(s.context.prefetches(), expected) << name;
  }
}

TEST(ModelSched, DmdasPopsHigherPriorityFirstAndDmKeepsArrivalOrder) {
  for (const std::string name : {"dm", "dmdas"}) {
    Rig s(name, {{0, Arch::cpu, 0}});
    for (int priority : {0, 5, 1, 5, -2}) s.scheduler->push(&s.task(Arch::cpu, 1.0, std::nullopt, priority), -1);
    std::vector<int> order;
    while (SchedTask* t = s.scheduler->pop(0)) order.push_back(static_cast<FakeTask*>(t)->id);
    const std::vector<int> expected = name == "dm" ? std::vector<int>{0, 1, 2, 3, 4} : std::vector<int>{1, 3, 2, 0, 4};
    EXPECT_EQ(order, expected) << name;
  }
}

// Submission order breaks ties of priority, even when tasks become ready out of order.
TEST(ModelSched, DmdasBreaksPriorityTiesBySubmissionOrder) {
  Rig s("dmdas", {{0, Arch::cpu, 0}});
  FakeTask& late = s.task(Arch::cpu, 1.0, std::nullopt, 3);
  FakeTask& early = s.task(Arch::cpu, 1.0, std::nullopt, 3);
  late.sequence = 20;
  early.sequence = 10;
  s.scheduler->push(&late, -1);
  s.scheduler->push(&early, -1);
  EXPECT_EQ(s.scheduler->pop(0), &early);
  EXPECT_EQ(s.scheduler->pop(0), &late);
}

// A high-priority task jumps ahead of a loaded queue: dmdas sees it start at once there, and
// still counts it in the worker's load for the tasks after it.
TEST(ModelSched, DmdasCountsOnlyTheWorkAheadOfAHighPriorityTask) {
  for (const std::string name : {"dmda", "dmdas"}) {
    Rig s(name, {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
    for (int i = 0; i < 9; ++i) s.scheduler->push(&s.task(Arch::cpu | Arch::cuda, 10.0, 1.0), -1);
    ASSERT_EQ(s.queue_of(1).size(), 9u) << name;
    FakeTask& urgent = s.task(Arch::cpu | Arch::cuda, 10.0, 1.0, 10);
    s.scheduler->push(&urgent, -1);
    if (name == "dmda") {
      EXPECT_EQ(s.owner_of(urgent), 0) << "behind 9 s of GPU work, the CPU ties at 10 s and is idle";
      continue;
    }
    EXPECT_EQ(s.queue_of(1).front(), urgent.id);
    EXPECT_DOUBLE_EQ(s.scheduler->expected_free(1, 0), 10.0);
    // A normal task now sees the GPU busy until 10 s: the CPU (10 s) ties and is idle.
    FakeTask& normal = s.task(Arch::cpu | Arch::cuda, 10.0, 1.0);
    s.scheduler->push(&normal, -1);
    EXPECT_EQ(s.owner_of(normal), 0);
  }
}

// dmdas keeps a GPU for the kernels it speeds up most, but weighing a completion up by affinity
// adds at most what the task gains there over the slowest architecture: affinity alone sends a
// task to the slower one only when that one would start it sooner.
TEST(ModelSched, DmdasAffinityNeverOutweighsTheTasksOwnGain) {
  Rig s("dmdas", {{0, Arch::cpu, 0}, {1, Arch::cuda, 1}});
  // A kernel the GPU runs 100 x faster than a core sets the best speedup.
  FakeTask& gemm = s.task(Arch::cpu | Arch::cuda, 100.0, 1.0);
  s.scheduler->push(&gemm, -1);
  ASSERT_EQ(s.owner_of(gemm), 1);
  ASSERT_EQ(s.scheduler->pop(1), &gemm);  // expected to end at 1 s
  s.context.set_now(2.0);
  // 4 x faster on the GPU, its data there: its GPU time, worth 1 x (100 / 4 - 1) = 24 s to
  // GEMMs, weighs at most 4 - 1 = 3 s, so the GPU (2 + 1 + 3 = 6 s) beats the core, which
  // starts as soon but needs a copy first (2 + 0.5 + 4 = 6.5 s).
  FakeTask& first = s.task(Arch::cpu | Arch::cuda, 4.0, 1.0, 10);
  first.transfer[0] = 0.5;
  s.scheduler->push(&first, -1);
  EXPECT_EQ(s.owner_of(first), 1);
  ASSERT_EQ(s.scheduler->pop(1), &first);  // the GPU is busy until 3 s
  // The same task again: the GPU would start it 1 s later than the core (3 + 1 + 3 = 7 s), and
  // the core takes it, although the GPU would finish it first without the weighing (4 s).
  FakeTask& second = s.task(Arch::cpu | Arch::cuda, 4.0, 1.0, 10);
  second.transfer[0] = 0.5;
  s.scheduler->push(&second, -1);
  EXPECT_EQ(s.owner_of(second), 0);
}

// Two GPUs: when the completions are within 1%, dmdas keeps the task where its data is.
TEST(ModelSched, DmdasBreaksNearTiesTowardTheDataAndDmdaDoesNot) {
  const std::vector<WorkerInfo> workers = {{0, Arch::cuda, 1}, {1, Arch::cuda, 2}};
  for (const std::string name : {"dmda", "dmdas"}) {
    Rig s(name, workers);
    FakeTask& filler = s.task(Arch::cuda, std::nullopt, 0.005);
    filler.transfer[1] = 1.0;  // keeps it off node 1
    s.scheduler->push(&filler, -1);
    ASSERT_EQ(s.owner_of(filler), 1) << name;
    FakeTask& t = s.task(Arch::cuda, std::nullopt, 1.0);
    t.transfer[1] = 0.004;  // node 1 completes at 1.004, node 2 (holding the data) at 1.005
    s.scheduler->push(&t, -1);
    EXPECT_EQ(s.owner_of(t), name == "dmdas" ? 1 : 0) << name;
  }
}

// The clock of a long-running machine does not widen dmdas's tie tolerance.
TEST(ModelSched, DmdasTieToleranceIsRelativeToTimeFromNow) {
  Rig s("dmdas", {{0, Arch::cuda, 1}, {1, Arch::cuda, 2}});
  s.context.set_now(1e6);
  FakeTask& filler = s.task(Arch::cuda, std::nullopt, 0.5);
  filler.transfer[1] = 10.0;
  s.scheduler->push(&filler, -1);
  ASSERT_EQ(s.owner_of(filler), 1);
  // Node 2 holds the data but completes in 1.5 s, node 1 in 1.1 s: not a tie, although both
  // completions are within 1% of the clock's value.
  FakeTask& t = s.task(Arch::cuda, std::nullopt, 1.0);
  t.transfer[1] = 0.1;
  s.scheduler->push(&t, -1);
  EXPECT_EQ(s.owner_of(t), 0);
}

}  // namespace
