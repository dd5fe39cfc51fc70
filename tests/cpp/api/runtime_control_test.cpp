// The Runtime's controls for language bindings and supervisors: cancelling what has not started,
// counting unfinished tasks, a shutdown that gives up at a deadline, and asking whether the
// calling thread is a worker (and whether its task uses a handle).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hetflow::CancelledError;
using hetflow::Config;
using hetflow::DataHandle;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskOptions;
using hetflow::test::Gate;
using hetflow::test::Signal;

TEST(RuntimeControl, CancelPendingCancelsQueuedTasksAndLetsRunningOnesFinish) {
  Runtime rt(Config{.ncpus = 1});
  Gate gate;
  Signal started;
  std::atomic<int> ran{0};
  auto running = rt.submit([&] {
    started.raise();
    gate.wait();
    return 7;
  });
  started.wait();
  auto queued = rt.submit([&ran] { ran.fetch_add(1); });
  rt.cancel_pending();
  gate.open();
  EXPECT_EQ(running.get(), 7);
  EXPECT_THROW(queued.get(), CancelledError);
  EXPECT_EQ(ran.load(), 0);
  rt.shutdown();
}

TEST(RuntimeControl, UnfinishedTasksCountsWhatWaitAllWaitsFor) {
  Runtime rt(Config{.ncpus = 1});
  EXPECT_EQ(rt.unfinished_tasks(), 0U);
  Gate gate;
  auto first = rt.submit([&gate] { gate.wait(); });
  auto second = rt.submit(TaskOptions{.after = {first}}, [] {});
  auto third = rt.submit(TaskOptions{.after = {second}}, [] {});
  EXPECT_EQ(rt.unfinished_tasks(), 3U);
  gate.open();
  rt.wait_all();
  EXPECT_EQ(rt.unfinished_tasks(), 0U);
}

TEST(RuntimeControl, OnWorkerThreadIsTrueOnlyInsideThisRuntimesTasks) {
  Runtime rt(Config{.ncpus = 2});
  Runtime other(Config{.ncpus = 1});
  EXPECT_FALSE(rt.on_worker_thread());
  EXPECT_TRUE(rt.submit([&rt] { return rt.on_worker_thread(); }).get());
  EXPECT_FALSE(other.submit([&rt] { return rt.on_worker_thread(); }).get());
}

TEST(RuntimeControl, CurrentTaskUsesSeesTheRunningTasksOwnAccesses) {
  Runtime rt(Config{.ncpus = 1});
  std::vector<double> x(4, 1.0);
  std::vector<double> y(4, 2.0);
  DataHandle hx = rt.register_vector(x.data(), x.size(), "x");
  DataHandle hy = rt.register_vector(y.data(), y.size(), "y");
  auto uses = rt.submit(TaskOptions{.data = {RW(hx)}}, [&] {
    return std::vector<bool>{rt.current_task_uses(hx), rt.current_task_uses(hy), rt.current_task_uses(DataHandle{})};
  });
  EXPECT_EQ(uses.get(), (std::vector<bool>{true, false, false}));
  EXPECT_FALSE(rt.current_task_uses(hx));  // not a worker
}

TEST(RuntimeControl, ShutdownUntilReturnsZeroWhenTheWorkEndsInTime) {
  Runtime rt(Config{.ncpus = 2});
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) rt.submit([&ran] { ran.fetch_add(1); });
  EXPECT_EQ(rt.shutdown_until(std::chrono::steady_clock::now() + 10s), 0U);
  EXPECT_EQ(ran.load(), 10);
  EXPECT_TRUE(rt.is_shut_down());
}

TEST(RuntimeControl, ShutdownUntilLeavesAWorkerStuckInATaskRunning) {
  // Leaked on purpose, as the method asks: the worker left running still uses it.
  auto* rt = new Runtime(Config{.ncpus = 2});
  Gate gate;
  Signal started;
  std::atomic<bool> finished{false};
  auto stuck = rt->submit([&] {
    started.raise();
    gate.wait();
    finished.store(true);
  });
  started.wait();
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_EQ(rt->shutdown_until(begin + 100ms), 1U);
  EXPECT_GE(std::chrono::steady_clock::now() - begin, 100ms);
  EXPECT_TRUE(rt->is_shut_down());
  EXPECT_FALSE(finished.load());
  gate.open();  // the worker finishes its task and leaves
  stuck.wait();
  EXPECT_TRUE(finished.load());
}

TEST(RuntimeControlDeathTest, ARuntimeDestroyedInsideItsOwnTaskSaysSo) {
  // It ended in std::terminate naming a shutdown() the program never called.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto* rt = new Runtime(Config{.ncpus = 1});
        rt->submit([rt] { delete rt; }).wait();
      },
      "a Runtime was destroyed inside one of its own tasks");
}

TEST(RuntimeControl, ShutdownUntilCancelsWhatHadNotStartedWhenTheTimeIsUp) {
  // The tasks queued behind the stuck one ran once it returned, after shutdown_until had
  // given up on them: writing data the program may have freed by then.
  auto* rt = new Runtime(Config{.ncpus = 1});  // leaked on purpose, as above
  Gate gate;
  Signal started;
  int value = 0;
  DataHandle handle = rt->register_variable(value);
  auto stuck = rt->submit([&] {
    started.raise();
    gate.wait();
  });
  std::vector<hetflow::Future<void>> queued;
  for (int i = 0; i < 5; ++i) {
    queued.push_back(rt->submit(TaskOptions{.data = {RW(handle)}}, [&value] { ++value; }));
  }
  started.wait();
  EXPECT_EQ(rt->shutdown_until(std::chrono::steady_clock::now() + 100ms), 1U);
  gate.open();
  stuck.wait();
  EXPECT_THROW(queued[0].get(), CancelledError);
  for (std::size_t i = 1; i < queued.size(); ++i) EXPECT_THROW(queued[i].get(), hetflow::DependencyError);
  EXPECT_EQ(value, 0);
}

}  // namespace
