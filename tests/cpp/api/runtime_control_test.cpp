// The Runtime's controls for language bindings and supervisors: cancelling what has not started,
// counting unfinished tasks, a shutdown that gives up at a deadline, and asking whether the
// calling thread is a worker (and whether its task uses a handle).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
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

// Behind a queued task, its dependents have not started either: cancelled as it is, not failed
// because it was (a DependencyError, for tasks that never ran). After abort() they fail.
TEST(RuntimeControl, CancelPendingCancelsTheDependentsOfQueuedTasksToo) {
  for (const bool abort : {false, true}) {
    SCOPED_TRACE(abort);
    Runtime rt(Config{.ncpus = 1});
    Gate gate;
    Signal started;
    auto running = rt.submit([&] {
      started.raise();
      gate.wait();
    });
    started.wait();
    int x = 0;
    DataHandle hx = rt.register_variable(x, "x");
    auto queued = rt.submit(TaskOptions{.data = {RW(hx)}}, [&x] { return ++x; });
    auto dependent = rt.submit(TaskOptions{.after = {queued}}, [] { return 2; });
    auto by_data = rt.submit(TaskOptions{.data = {RW(hx)}}, [&x] { return ++x; });
    if (abort) {
      rt.abort();
    } else {
      rt.cancel_pending();
    }
    gate.open();
    running.get();
    EXPECT_THROW(queued.get(), CancelledError);
    EXPECT_EQ(x, 0);
    if (abort) {
      EXPECT_THROW(by_data.get(), hetflow::DependencyError);
    } else {
      EXPECT_THROW(dependent.get(), CancelledError);
      EXPECT_THROW(by_data.get(), CancelledError);
    }
    rt.shutdown();
  }
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
  EXPECT_THROW(stuck.get(), CancelledError);  // given up on: its future does not wait for the body
  gate.open();                                // the worker finishes its task and leaves
  while (!finished.load()) std::this_thread::sleep_for(1ms);
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
  std::atomic<bool> returned{false};
  int value = 0;
  DataHandle handle = rt->register_variable(value);
  auto stuck = rt->submit([&] {
    started.raise();
    gate.wait();
    returned.store(true);
  });
  std::vector<hetflow::Future<void>> queued;
  for (int i = 0; i < 5; ++i) {
    queued.push_back(rt->submit(TaskOptions{.data = {RW(handle)}}, [&value] { ++value; }));
  }
  started.wait();
  EXPECT_EQ(rt->shutdown_until(std::chrono::steady_clock::now() + 100ms), 1U);
  gate.open();
  while (!returned.load()) std::this_thread::sleep_for(1ms);  // the worker now takes the queued ones
  EXPECT_THROW(queued[0].get(), CancelledError);
  for (std::size_t i = 1; i < queued.size(); ++i) {
    // Told that the one before was cancelled, or, read before that news came, ended by the
    // reading itself (what the shutdown gave up on ends once anybody looks at it).
    try {
      queued[i].get();
      ADD_FAILURE() << "queued task " << i << " ran";
    } catch (const hetflow::DependencyError&) {
    } catch (const CancelledError& e) {
      EXPECT_NE(std::string(e.what()).find("gave up on it before it started"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(value, 0);
}

// What a task left stuck by shutdown_until shares with the test: on the heap, since its thread
// outlives the test (the test lets it go at its end, and waits until its body has returned).
struct StuckTask {
  Gate gate;
  Signal started;
  std::atomic<bool> returned{false};
  std::weak_ptr<int> result;  // what the body returned, once it has
};

hetflow::Future<std::shared_ptr<int>> submit_stuck(Runtime& rt, const std::shared_ptr<StuckTask>& stuck) {
  auto future = rt.submit(TaskOptions{.name = "stuck"}, [stuck] {
    stuck->started.raise();
    stuck->gate.wait();
    auto result = std::make_shared<int>(7);
    stuck->result = result;
    stuck->returned.store(true);
    return result;
  });
  stuck->started.wait();
  return future;
}

// The error a future raises, as text ("" if none).
template <class F>
std::string error_text(const F& future) {
  try {
    future.get();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(RuntimeControl, ShutdownUntilEndsTheWaitsForWhatItGaveUpOn) {
  // A thread waiting for a task queued behind a worker stuck in its task, for that task itself,
  // or for all the work, waited for ever once shutdown_until had given up on them.
  auto* rt = new Runtime(Config{.ncpus = 1});  // leaked on purpose: the stuck worker still uses it
  auto stuck_state = std::make_shared<StuckTask>();
  auto stuck = submit_stuck(*rt, stuck_state);
  auto queued = rt->submit(TaskOptions{.name = "queued"}, [] { return 1; });  // behind the stuck worker
  auto dependent = rt->submit(TaskOptions{.after = {stuck}, .name = "dependent"}, [] { return 2; });
  auto joined = hetflow::when_all(std::vector<hetflow::Future<int>>{queued, dependent});

  std::atomic<int> woken{0};
  std::string queued_error;
  std::string stuck_error;
  std::string joined_error;
  std::thread on_queued([&] {
    queued_error = error_text(queued);
    woken.fetch_add(1);
  });
  std::thread on_stuck([&] {
    stuck_error = error_text(stuck);
    woken.fetch_add(1);
  });
  std::thread on_joined([&] {
    joined_error = error_text(joined);
    woken.fetch_add(1);
  });
  std::atomic<bool> all_cancelled{false};
  std::thread on_all([&] {
    try {
      rt->wait_all();
    } catch (const CancelledError&) {
      all_cancelled.store(true);
    }
    woken.fetch_add(1);
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(woken.load(), 0);

  EXPECT_EQ(rt->shutdown_until(std::chrono::steady_clock::now() + 100ms), 1U);
  on_queued.join();
  on_stuck.join();
  on_joined.join();
  on_all.join();
  EXPECT_EQ(woken.load(), 4);
  EXPECT_TRUE(all_cancelled.load());  // the work did not finish
  EXPECT_FALSE(stuck_state->returned.load());

  EXPECT_THROW(queued.get(), CancelledError);
  EXPECT_NE(queued_error.find("the runtime's shutdown gave up on it before it started"), std::string::npos)
      << queued_error;
  EXPECT_THROW(stuck.get(), CancelledError);
  EXPECT_NE(stuck_error.find("gave up on it while it ran"), std::string::npos) << stuck_error;
  EXPECT_THROW(dependent.get(), hetflow::DependencyError);  // what it depends on failed
  EXPECT_FALSE(joined_error.empty());
  EXPECT_THROW(joined.get(), hetflow::Error);
  const auto asked = std::chrono::steady_clock::now();
  EXPECT_THROW(rt->wait_all(), CancelledError);  // at once: nothing is left to wait for
  EXPECT_FALSE(rt->wait_all_until(std::chrono::steady_clock::now() + 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 5s);

  // The stuck body ends later: its end changes nothing, and what it returned is let go.
  stuck_state->gate.open();
  while (!stuck_state->returned.load()) std::this_thread::sleep_for(1ms);
  const auto patience = std::chrono::steady_clock::now() + 10s;
  while (!stuck_state->result.expired() && std::chrono::steady_clock::now() < patience) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(stuck_state->result.expired());
  EXPECT_EQ(error_text(stuck), stuck_error);
  EXPECT_THROW(queued.get(), CancelledError);
  EXPECT_THROW(dependent.get(), hetflow::DependencyError);
  while (rt->unfinished_tasks() != 0 && std::chrono::steady_clock::now() < patience) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(rt->unfinished_tasks(), 0U);
}

TEST(RuntimeControl, ATaskEndingAsShutdownUntilGivesUpEndsOnce) {
  // The body returns about when the shutdown gives up on it: its future gets one outcome, its
  // value or CancelledError, and keeps it.
  for (int round = 0; round < 30; ++round) {
    auto* rt = new Runtime(Config{.ncpus = 1});
    auto stuck_state = std::make_shared<StuckTask>();
    auto stuck = submit_stuck(*rt, stuck_state);
    std::string first;
    std::thread waiter([&] {
      try {
        first = std::to_string(*stuck.get());
      } catch (const CancelledError& e) {
        first = e.what();
      }
    });
    const auto deadline = std::chrono::steady_clock::now() + 20ms;
    std::thread releaser([&] {
      std::this_thread::sleep_until(deadline + std::chrono::microseconds(100 * (round % 10)) - 500us);
      stuck_state->gate.open();
    });
    const unsigned left = rt->shutdown_until(deadline);
    waiter.join();
    releaser.join();
    while (!stuck_state->returned.load()) std::this_thread::sleep_for(1ms);
    EXPECT_TRUE(first == "7" || first.find("gave up on it while it ran") != std::string::npos) << first;
    std::string again;
    try {
      again = std::to_string(*stuck.get());
    } catch (const CancelledError& e) {
      again = e.what();
    }
    EXPECT_EQ(again, first);
    if (left == 0) delete rt;  // else leaked on purpose, as above
  }
}

TEST(RuntimeControl, WhatShutdownUntilGaveUpOnReadsEndedWhenPolled) {
  // Nobody waited for these when the shutdown gave up: polling saw them pending for ever.
  auto* rt = new Runtime(Config{.ncpus = 1});  // leaked on purpose, as above
  auto stuck_state = std::make_shared<StuckTask>();
  auto stuck = submit_stuck(*rt, stuck_state);
  auto queued = rt->submit([] { return 1; });
  auto after_queued = rt->submit(TaskOptions{.after = {queued}}, [] {});
  EXPECT_FALSE(queued.ready());
  EXPECT_EQ(rt->shutdown_until(std::chrono::steady_clock::now() + 50ms), 1U);
  EXPECT_EQ(queued.status(), hetflow::TaskStatus::cancelled);
  EXPECT_TRUE(after_queued.ready());
  EXPECT_THROW(after_queued.get(), hetflow::DependencyError);  // what it depends on did not run
  EXPECT_TRUE(stuck.ready());
  EXPECT_EQ(stuck.status(), hetflow::TaskStatus::failed);
  EXPECT_THROW(stuck.get(), CancelledError);
  EXPECT_THROW(queued.get(), CancelledError);
  stuck_state->gate.open();
  while (!stuck_state->returned.load()) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(stuck.status(), hetflow::TaskStatus::failed);  // its late end changes nothing
}

TEST(RuntimeControl, AWaitBeganAfterShutdownUntilGaveUpEndsAtOnce) {
  auto* rt = new Runtime(Config{.ncpus = 1});  // leaked on purpose, as above
  auto stuck_state = std::make_shared<StuckTask>();
  auto stuck = submit_stuck(*rt, stuck_state);
  auto queued = rt->submit([] {});
  auto after_queued = rt->submit(TaskOptions{.after = {queued}}, [] {});
  auto any = hetflow::when_any(std::vector<hetflow::FutureBase>{queued, after_queued});
  EXPECT_EQ(rt->shutdown_until(std::chrono::steady_clock::now() + 50ms), 1U);
  EXPECT_TRUE(any.wait_for(10s));  // its inputs are given up on, and it ends with the first
  EXPECT_THROW(rt->wait_all(), CancelledError);
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_TRUE(stuck.wait_for(10s));  // given up on: it ends at once
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 5s);
  EXPECT_THROW(stuck.get(), CancelledError);
  EXPECT_THROW(queued.get(), CancelledError);
  EXPECT_THROW(after_queued.get(), hetflow::DependencyError);
  stuck_state->gate.open();
  while (!stuck_state->returned.load()) std::this_thread::sleep_for(1ms);
  EXPECT_THROW(stuck.get(), CancelledError);
}

}  // namespace
