// Pinned tasks (TaskOptions::worker): they run on their worker and nowhere else, in the order
// they became ready, wait for that worker even while the others are idle, are counted by
// Runtime::pinned_load until they finish, and pins that cannot work are refused with a message
// that says why.
#include <gtest/gtest.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/ext/driver.hpp"
#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

using hetflow::test::expect_invalid_argument;

namespace {

using hetflow::Config;
using hetflow::Future;
using hetflow::InvalidArgument;
using hetflow::Runtime;
using hetflow::TaskContext;
using hetflow::TaskOptions;
using hetflow::test::Gate;
using hetflow::test::Signal;

// Adds one worker of an architecture a plain callable cannot run on (no device behind it: its
// thread runs codelets' cuda implementations on the host).
class HostCudaDriver final : public hetflow::ext::Driver {
 public:
  [[nodiscard]] std::string_view name() const override { return "host-cuda"; }
  [[nodiscard]] hetflow::Arch arch() const override { return hetflow::Arch::cuda; }
  [[nodiscard]] unsigned worker_count() const override { return 1; }
};

// The order in which tasks ran, written by the tasks (read by the test after wait_all).
class RunLog {
 public:
  void add(int id) {
    std::lock_guard guard(mutex_);
    ids_.push_back(id);
  }
  std::vector<int> ids() {
    std::lock_guard guard(mutex_);
    return ids_;
  }

 private:
  std::mutex mutex_;
  std::vector<int> ids_;
};

TEST(Pinning, TasksRunOnTheirWorker) {
  Runtime rt(Config{.ncpus = 3});
  std::vector<std::vector<Future<unsigned>>> futures(rt.worker_count());
  for (int round = 0; round < 50; ++round) {
    for (unsigned w = 0; w < rt.worker_count(); ++w) {
      futures[w].push_back(
          rt.submit(TaskOptions{.worker = static_cast<int>(w)}, [](TaskContext& ctx) { return ctx.worker_id(); }));
    }
  }
  for (unsigned w = 0; w < rt.worker_count(); ++w) {
    for (auto& f : futures[w]) EXPECT_EQ(f.get(), w);
  }
}

TEST(Pinning, RunInTheOrderTheyBecameReady) {
  Runtime rt(Config{.ncpus = 2});
  RunLog log;
  Gate busy_gate;
  Gate predecessor_gate;
  Signal busy_started;
  // Worker 1 is held busy while its queue fills.
  auto busy = rt.submit(TaskOptions{.worker = 1}, [&] {
    busy_started.raise();
    busy_gate.wait();
  });
  busy_started.wait();
  // Submitted first, but ready last: it waits for a task on worker 0.
  auto predecessor = rt.submit(TaskOptions{.worker = 0}, [&] { predecessor_gate.wait(); });
  std::vector<Future<unsigned>> pinned;
  pinned.push_back(rt.submit(TaskOptions{.after = {predecessor}, .worker = 1}, [&log](TaskContext& ctx) {
    log.add(100);
    return ctx.worker_id();
  }));
  for (int i = 0; i < 20; ++i) {
    pinned.push_back(rt.submit(TaskOptions{.worker = 1}, [&log, i](TaskContext& ctx) {
      log.add(i);
      return ctx.worker_id();
    }));
  }
  predecessor_gate.open();
  // Worker 0 finishes `predecessor` (making the dependent ready) before it runs this marker.
  rt.submit(TaskOptions{.worker = 0}, [] {}).get();
  EXPECT_EQ(rt.pinned_load(1), 22u);
  busy_gate.open();
  rt.wait_all();

  std::vector<int> expected;
  for (int i = 0; i < 20; ++i) expected.push_back(i);
  expected.push_back(100);
  EXPECT_EQ(log.ids(), expected);
  for (auto& f : pinned) EXPECT_EQ(f.get(), 1u);
}

TEST(Pinning, PinnedLoadCountsUnfinishedTasks) {
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  Gate predecessor_gate;
  Signal started;
  EXPECT_EQ(rt.pinned_load(0), 0u);
  EXPECT_EQ(rt.pinned_load(1), 0u);
  auto running = rt.submit(TaskOptions{.worker = 1}, [&] {
    started.raise();
    gate.wait();
  });
  started.wait();
  EXPECT_EQ(rt.pinned_load(1), 1u);  // running

  auto queued = rt.submit(TaskOptions{.worker = 1}, [] { return 1; });
  auto failing = rt.submit(TaskOptions{.worker = 1}, []() -> int { throw std::runtime_error("pinned failure"); });
  auto after_failing = rt.submit(TaskOptions{.after = {failing}, .worker = 1}, [] { return 4; });
  auto cancelled = rt.submit(TaskOptions{.worker = 1}, [] { return 2; });
  auto predecessor = rt.submit([&predecessor_gate] { predecessor_gate.wait(); });
  auto waiting = rt.submit(TaskOptions{.after = {predecessor}, .worker = 1}, [] { return 3; });  // not ready yet
  auto cancelled_waiting = rt.submit(TaskOptions{.after = {predecessor}, .worker = 1}, [] { return 5; });
  EXPECT_EQ(rt.pinned_load(1), 7u);
  // Cancelled tasks no longer count, though they are still in the worker's queue, or wait for
  // their predecessor.
  EXPECT_TRUE(cancelled.cancel());
  EXPECT_TRUE(cancelled_waiting.cancel());
  EXPECT_EQ(rt.pinned_load(1), 5u);
  EXPECT_EQ(rt.pinned_load(0), 0u);  // unpinned tasks are not counted

  gate.open();
  EXPECT_EQ(queued.get(), 1);
  EXPECT_THROW((void)failing.get(), std::runtime_error);
  EXPECT_THROW((void)after_failing.get(), hetflow::DependencyError);  // finished without running
  EXPECT_THROW((void)cancelled.get(), hetflow::CancelledError);
  EXPECT_THROW((void)cancelled_waiting.get(), hetflow::CancelledError);
  predecessor_gate.open();
  EXPECT_EQ(waiting.get(), 3);
  rt.wait_all();
  EXPECT_EQ(rt.pinned_load(1), 0u);
  EXPECT_EQ(rt.pinned_load(0), 0u);
  expect_invalid_argument([&] { (void)rt.pinned_load(2); }, {"pinned_load", "no worker 2"});
}

TEST(Pinning, PinnedLoadDropsBeforeTheOutcomeIsSeen) {
  Runtime rt(Config{.ncpus = 2});
  const int rounds = static_cast<int>(hetflow::test::scaled(500, 50));
  for (int i = 0; i < rounds; ++i) {
    // Once get() has returned, a pinned task that ran (and succeeded or failed) no longer counts.
    EXPECT_EQ(rt.submit(TaskOptions{.worker = 1}, [i] { return i; }).get(), i);
    ASSERT_EQ(rt.pinned_load(1), 0u) << "round " << i << ": a task whose result was read still counts";
    auto failing = rt.submit(TaskOptions{.worker = 0}, []() -> int { throw std::runtime_error("pinned failure"); });
    EXPECT_THROW((void)failing.get(), std::runtime_error);
    ASSERT_EQ(rt.pinned_load(0), 0u) << "round " << i << ": a task whose failure was read still counts";
  }
}

TEST(Pinning, WaitsForItsBusyWorkerWhileOthersIdle) {
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  Signal started;
  auto busy = rt.submit(TaskOptions{.worker = 1}, [&] {
    started.raise();
    gate.wait();
  });
  started.wait();
  auto pinned = rt.submit(TaskOptions{.worker = 1}, [](TaskContext& ctx) { return ctx.worker_id(); });
  // Worker 0 is free and runs everything else meanwhile; it never takes the pinned task.
  for (int round = 0; round < 20; ++round) {
    std::vector<Future<unsigned>> others;
    for (int i = 0; i < 10; ++i) others.push_back(rt.submit([](TaskContext& ctx) { return ctx.worker_id(); }));
    for (auto& f : others) EXPECT_EQ(f.get(), 0u);
    ASSERT_FALSE(pinned.ready());
    EXPECT_EQ(pinned.status(), hetflow::TaskStatus::ready);
  }
  EXPECT_EQ(rt.pinned_load(1), 2u);
  gate.open();
  EXPECT_EQ(pinned.get(), 1u);
  busy.get();
}

TEST(Pinning, InvalidPinsAreRefused) {
  Runtime rt(Config{.ncpus = 2, .drivers = {std::make_shared<HostCudaDriver>()}});
  ASSERT_EQ(rt.worker_count(), 3u);
  ASSERT_EQ(rt.workers()[2].arch, hetflow::Arch::cuda);

  expect_invalid_argument([&] { (void)rt.submit(TaskOptions{.name = "far", .worker = 3}, [] {}); },
                          {"'far'", "pinned to worker 3", "0 to 2"});
  expect_invalid_argument([&] { (void)rt.submit(TaskOptions{.worker = -2}, [] {}); }, {"pinned to worker -2"});
  // Worker 2 is a cuda worker: a plain callable runs on host threads only.
  expect_invalid_argument([&] { (void)rt.submit(TaskOptions{.name = "host code", .worker = 2}, [] {}); },
                          {"'host code'", "pinned to worker 2", "cuda", "cannot run it", "cpu"});
  // A codelet without a cuda implementation cannot go there either.
  hetflow::Codelet cpu_only{.name = "cpu only", .cpu = [](TaskContext&) {}};
  expect_invalid_argument([&] { (void)rt.insert(cpu_only, TaskOptions{.worker = 2}); },
                          {"'cpu only'", "pinned to worker 2", "cannot run it"});
  // Nor can a CPU worker run a task restricted to cuda.
  hetflow::Codelet both{.name = "both", .cpu = [](TaskContext&) {}, .cuda = [](TaskContext&) {}};
  expect_invalid_argument([&] { (void)rt.insert(both, TaskOptions{.where = hetflow::Arch::cuda, .worker = 0}); },
                          {"'both'", "pinned to worker 0", "cpu", "cannot run it"});

  // Nothing was left behind by the refusals, and a valid pin to the cuda worker runs there.
  EXPECT_EQ(rt.pinned_load(0), 0u);
  EXPECT_EQ(rt.pinned_load(2), 0u);
  std::vector<unsigned> seen;
  hetflow::Codelet where{.name = "where",
                         .cpu = [&seen](TaskContext& ctx) { seen.push_back(ctx.worker_id()); },
                         .cuda = [&seen](TaskContext& ctx) { seen.push_back(100 + ctx.worker_id()); }};
  rt.insert(where, TaskOptions{.worker = 2}).get();
  rt.insert(where, TaskOptions{.worker = 1}).get();
  EXPECT_EQ(seen, (std::vector<unsigned>{102, 1}));
  rt.wait_all();
}

}  // namespace
