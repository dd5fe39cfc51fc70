// The scheduler registry: the built-in schedulers, and schedulers an application registers and
// selects by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using hetflow::Config;
using hetflow::Runtime;
using hetflow::ext::SchedTask;
using hetflow::ext::SchedulerContext;
using hetflow::ext::WorkerInfo;

std::atomic<int> lifo_pushes{0};
std::atomic<int> lifo_instances{0};

// A test scheduler: one locked stack, newest task first.
class LifoScheduler final : public hetflow::ext::Scheduler {
 public:
  LifoScheduler() { lifo_instances.fetch_add(1); }
  void init(std::span<const WorkerInfo> workers, SchedulerContext& /*context*/) override {
    workers_.assign(workers.begin(), workers.end());
  }
  void push(SchedTask* task, int /*from_worker*/) override {
    lifo_pushes.fetch_add(1);
    std::lock_guard guard(mutex_);
    tasks_.push_back(task);
  }
  SchedTask* pop(unsigned worker) override {
    std::lock_guard guard(mutex_);
    for (auto it = tasks_.rbegin(); it != tasks_.rend(); ++it) {
      if ((*it)->where.contains(workers_.at(worker).arch)) {
        SchedTask* task = *it;
        tasks_.erase(std::next(it).base());
        return task;
      }
    }
    return nullptr;
  }

 private:
  std::vector<WorkerInfo> workers_;
  std::mutex mutex_;
  std::deque<SchedTask*> tasks_;
};

}  // namespace

HETFLOW_REGISTER_SCHEDULER(test_lifo, "test: one locked stack", LifoScheduler);

namespace {

bool listed(const std::string& name) {
  auto all = hetflow::ext::schedulers();
  return std::any_of(all.begin(), all.end(), [&](const auto& entry) { return entry.name == name; });
}

TEST(Registry, ListsTheBuiltInSchedulers) {
  auto all = hetflow::ext::schedulers();
  for (const char* name : {"eager", "prio", "ws", "random"}) {
    auto it = std::find_if(all.begin(), all.end(), [&](const auto& entry) { return entry.name == name; });
    ASSERT_NE(it, all.end()) << name << " is not listed";
    EXPECT_FALSE(it->description.empty()) << name;
  }
  for (const char* name : {"eager", "prio", "ws", "random"}) EXPECT_NE(hetflow::ext::make_scheduler(name), nullptr);
}

TEST(Registry, UnknownNameThrowsAndListsKnownOnes) {
  try {
    (void)hetflow::ext::make_scheduler("nonexistent");
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const hetflow::InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("nonexistent"), std::string::npos) << what;
    EXPECT_NE(what.find("eager"), std::string::npos) << what;
    EXPECT_NE(what.find("test_lifo"), std::string::npos) << what;
  }
  EXPECT_THROW(hetflow::ext::register_scheduler("", "no name", [] { return hetflow::ext::make_scheduler("ws"); }),
               hetflow::InvalidArgument);
  EXPECT_THROW(hetflow::ext::register_scheduler("no_factory", "none", nullptr), hetflow::InvalidArgument);
  EXPECT_FALSE(listed("no_factory"));
}

TEST(Registry, MacroRegisteredSchedulerRunsTasks) {
  ASSERT_TRUE(listed("test_lifo"));
  const int pushes_before = lifo_pushes.load();
  const int instances_before = lifo_instances.load();
  {
    Runtime rt(Config{.ncpus = 2, .scheduler = "test_lifo"});
    EXPECT_EQ(rt.scheduler_name(), "test_lifo");
    EXPECT_EQ(lifo_instances.load(), instances_before + 1);
    int x = 0;
    auto h = rt.register_variable(x);
    std::vector<hetflow::Future<int>> futures;
    for (int i = 0; i < 100; ++i) futures.push_back(rt.submit([i] { return i * 2; }));
    for (int i = 0; i < 50; ++i) (void)rt.submit(hetflow::TaskOptions{.data = {hetflow::RW(h)}}, [&x] { ++x; });
    for (int i = 0; i < 100; ++i) EXPECT_EQ(futures[i].get(), i * 2);
    rt.wait_all();
    EXPECT_EQ(x, 50);
  }
  EXPECT_GE(lifo_pushes.load() - pushes_before, 150);
}

TEST(Registry, SelectedThroughTheEnvironment) {
  hetflow::test::ScopedEnv sched("HETFLOW_SCHED", "test_lifo");
  const int pushes_before = lifo_pushes.load();
  Runtime rt(Config{.ncpus = 1});
  EXPECT_EQ(rt.scheduler_name(), "test_lifo");
  EXPECT_EQ(rt.submit([] { return 3; }).get(), 3);
  EXPECT_GE(lifo_pushes.load() - pushes_before, 1);
}

TEST(Registry, RegisteredAtRunTime) {
  static std::atomic<int> made{0};
  static std::atomic<int> pushed{0};
  // Wraps a built-in scheduler, counting what goes through it.
  class Counting final : public hetflow::ext::Scheduler {
   public:
    Counting() : inner_(hetflow::ext::make_scheduler("eager")) { made.fetch_add(1); }
    void init(std::span<const WorkerInfo> workers, SchedulerContext& context) override {
      inner_->init(workers, context);
    }
    void push(SchedTask* task, int from) override {
      pushed.fetch_add(1);
      inner_->push(task, from);
    }
    SchedTask* pop(unsigned worker) override { return inner_->pop(worker); }

   private:
    std::unique_ptr<hetflow::ext::Scheduler> inner_;
  };
  hetflow::ext::register_scheduler("test_counting", "test: counts pushes",
                                   [] { return std::unique_ptr<hetflow::ext::Scheduler>(new Counting()); });
  auto all = hetflow::ext::schedulers();
  auto it = std::find_if(all.begin(), all.end(), [](const auto& e) { return e.name == "test_counting"; });
  ASSERT_NE(it, all.end());
  EXPECT_EQ(it->description, "test: counts pushes");

  Runtime rt(Config{.ncpus = 2, .scheduler = "test_counting"});
  EXPECT_EQ(made.load(), 1);
  std::atomic<int> ran{0};
  for (int i = 0; i < 64; ++i) (void)rt.submit([&ran] { ran.fetch_add(1); });
  rt.wait_all();
  EXPECT_EQ(ran.load(), 64);
  EXPECT_EQ(pushed.load(), 64);
}

}  // namespace
