// Runtime::wait_all_until: false while work is still pending when the deadline passes (a task
// blocked at a gate, its dependents, a task held back by an acquisition), true once it is done;
// several threads may wait at once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hetflow::Config;
using hetflow::Runtime;
using hetflow::TaskOptions;
using hetflow::test::Gate;
using Clock = std::chrono::steady_clock;

// Long enough that a correct engine never reaches it.
constexpr auto kPatience = 60s;

TEST(WaitDeadline, FalseWhileAGatedTaskBlocksTrueAfter) {
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  auto blocked = rt.submit([&gate] {
    gate.wait();
    return 1;
  });
  auto dependent = rt.submit(TaskOptions{.after = {blocked}}, [] { return 2; });
  EXPECT_FALSE(rt.wait_all_until(Clock::now() - 1s));  // already passed
  EXPECT_FALSE(rt.wait_all_until(Clock::now()));
  EXPECT_FALSE(rt.wait_all_until(Clock::now() + 20ms));
  EXPECT_FALSE(blocked.ready());
  EXPECT_FALSE(dependent.ready());

  gate.open();
  EXPECT_TRUE(rt.wait_all_until(Clock::now() + kPatience));
  EXPECT_TRUE(blocked.ready());
  EXPECT_TRUE(dependent.ready());  // the dependents of the gated task are waited for too
  EXPECT_EQ(dependent.get(), 2);
  EXPECT_TRUE(rt.wait_all_until(Clock::now() - 1s));  // nothing left: true even past the deadline

  // From inside a task it would wait for that task itself.
  auto inside = rt.submit([&rt] { return rt.wait_all_until(Clock::now() + 10ms); });
  EXPECT_THROW((void)inside.get(), hetflow::Error);
}

TEST(WaitDeadline, SeveralThreadsWaitAtOnce) {
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  auto blocked = rt.submit([&gate] { gate.wait(); });
  std::atomic<int> released_early{0};
  std::atomic<int> succeeded{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      const bool done = rt.wait_all_until(Clock::now() + kPatience);
      if (!gate.is_open()) released_early.fetch_add(1);
      if (done && blocked.ready()) succeeded.fetch_add(1);
    });
  }
  // One with a short deadline gives up meanwhile, and the others keep waiting.
  EXPECT_FALSE(rt.wait_all_until(Clock::now() + 20ms));
  gate.open();
  for (auto& waiter : waiters) waiter.join();
  EXPECT_EQ(released_early.load(), 0);
  EXPECT_EQ(succeeded.load(), 3);
}

TEST(WaitDeadline, TaskHeldBackByAnAcquisition) {
  Runtime rt(Config{.ncpus = 2});
  int value = 1;
  auto handle = rt.register_variable(value, "value");
  auto acquisition = rt.acquire(handle, hetflow::AccessMode::RW);
  auto writer = rt.submit(TaskOptions{.data = {hetflow::RW(handle)}},
                          [](hetflow::TaskContext& ctx) { *ctx.buffer(0).as<int>() *= 10; });
  *acquisition.as<int>() = 4;
  EXPECT_FALSE(rt.wait_all_until(Clock::now() + 20ms));
  EXPECT_FALSE(writer.ready());
  acquisition.release();
  EXPECT_TRUE(rt.wait_all_until(Clock::now() + kPatience));
  EXPECT_TRUE(writer.ready());
  rt.unregister(handle);
  EXPECT_EQ(value, 40);
}

// Deadlines at the ends of the clock: one long past returns at once (it waited for the work),
// and a timeout longer than the clock can count waits for the task (it returned false at once).
TEST(WaitDeadline, DeadlinesAtTheEndsOfTheClock) {
  Runtime rt(Config{.ncpus = 1});
  Gate gate;
  auto task = rt.submit([&gate] { gate.wait(); });
  EXPECT_FALSE(task.wait_until(Clock::time_point::min()));
  EXPECT_FALSE(rt.wait_all_until(Clock::time_point::min()));
  EXPECT_FALSE(task.wait_for(-1s));
  std::thread opener([&gate] {
    std::this_thread::sleep_for(50ms);
    gate.open();
  });
  EXPECT_TRUE(task.wait_for(std::chrono::seconds::max()));
  opener.join();
  EXPECT_TRUE(task.wait_for(std::chrono::hours(24 * 365 * 1000)));
  EXPECT_TRUE(rt.wait_all_until(Clock::time_point::max()));
}

}  // namespace
