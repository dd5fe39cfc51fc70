// Runtime::abort(): the tasks that have not started when it is called are cancelled (their
// dependents fail with DependencyError), the running ones finish, and shutdown then returns
// without running the backlog.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hetflow::CancelledError;
using hetflow::Config;
using hetflow::DependencyError;
using hetflow::Future;
using hetflow::Runtime;
using hetflow::TaskOptions;
using hetflow::test::Gate;
using hetflow::test::Signal;

TEST(Abort, TasksNotStartedAreCancelled) {
  Runtime rt(Config{.ncpus = 1});
  Gate gate;
  Signal started;
  std::atomic<int> ran{0};
  auto before = rt.submit([] { return 1; });
  ASSERT_EQ(before.get(), 1);
  auto running = rt.submit(TaskOptions{.name = "running"}, [&] {
    started.raise();
    gate.wait();
    return 7;
  });
  started.wait();
  auto queued = rt.submit(TaskOptions{.name = "queued"}, [&ran] { return ran.fetch_add(1); });
  auto also_queued = rt.submit([&ran] { ran.fetch_add(1); });
  auto after_queued = rt.submit(TaskOptions{.after = {queued}, .name = "after queued"}, [&ran] { ran.fetch_add(1); });
  auto after_running = rt.submit(TaskOptions{.after = {running}}, [&ran] { return ran.fetch_add(1); });

  rt.abort();
  gate.open();
  EXPECT_EQ(running.get(), 7);  // it had started: it finishes, and its result stands
  // ... marked as having ended after the work was given up (the Python layer cancels it).
  EXPECT_TRUE(hetflow::detail::finished_after_abort(running.core()));
  EXPECT_FALSE(hetflow::detail::finished_after_abort(before.core()));
  try {
    (void)queued.get();
    ADD_FAILURE() << "a queued task ran after abort";
  } catch (const CancelledError& e) {
    EXPECT_NE(std::string(e.what()).find("'queued'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(also_queued.get(), CancelledError);
  // Waiting for a task that had not finished when abort was called: not started, so cancelled.
  EXPECT_THROW((void)after_running.get(), CancelledError);
  try {
    after_queued.get();
    ADD_FAILURE() << "a dependent of a cancelled task ran";
  } catch (const DependencyError& e) {
    EXPECT_EQ(e.root_task(), "queued");
    EXPECT_THROW(std::rethrow_exception(e.root_cause()), CancelledError);
  }
  rt.shutdown();
  EXPECT_TRUE(rt.is_shut_down());
  EXPECT_EQ(ran.load(), 0);
}

TEST(Abort, ShutdownSkipsTheBacklog) {
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  Signal started;
  std::atomic<int> ran{0};
  std::vector<Future<void>> busy;
  for (int i = 0; i < 2; ++i) {  // both workers busy
    busy.push_back(rt.submit([&] {
      started.raise();
      gate.wait();
    }));
  }
  started.wait_for_count(2);
  // A backlog that would take many seconds to run.
  std::vector<Future<void>> backlog;
  for (int i = 0; i < 1000; ++i) {
    backlog.push_back(rt.submit([&ran] {
      ran.fetch_add(1);
      std::this_thread::sleep_for(10ms);
    }));
    if (i % 10 == 0) backlog.push_back(rt.submit(TaskOptions{.after = {backlog.back()}}, [&ran] { ran.fetch_add(1); }));
  }
  rt.abort();
  gate.open();
  rt.shutdown();
  EXPECT_EQ(ran.load(), 0);
  for (auto& f : busy) EXPECT_NO_THROW(f.get());
  for (auto& f : backlog) {
    ASSERT_TRUE(f.ready());
    EXPECT_NE(f.error(), nullptr);
  }
  EXPECT_THROW((void)rt.submit([] {}), hetflow::ShutdownError);
}

TEST(Abort, PinnedTasksAreCancelledToo) {
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  Signal started;
  auto running = rt.submit(TaskOptions{.worker = 1}, [&] {
    started.raise();
    gate.wait();
  });
  started.wait();
  auto pinned = rt.submit(TaskOptions{.worker = 1}, [] { return 1; });
  rt.abort();
  gate.open();
  running.get();
  EXPECT_THROW((void)pinned.get(), CancelledError);
  rt.wait_all();
  EXPECT_EQ(rt.pinned_load(1), 0u);
}

TEST(Abort, IdleRuntimeAbortsAndShutsDown) {
  Runtime rt(Config{.ncpus = 2});
  EXPECT_EQ(rt.submit([] { return 1; }).get(), 1);
  rt.abort();
  rt.abort();  // again: nothing more happens
  rt.shutdown();
  EXPECT_TRUE(rt.is_shut_down());
}

}  // namespace
