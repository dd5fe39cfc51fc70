// Futures: get/wait/wait_for/status, continuations, when_all/when_any, failures and their
// propagation, cancellation, and waiting inside tasks.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
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
using hetflow::FutureBase;
using hetflow::Runtime;
using hetflow::TaskOptions;
using hetflow::TaskStatus;
using hetflow::test::Gate;
using hetflow::test::Signal;

// A failure type of the application's own, to check that get() rethrows the original type.
struct AppError : std::runtime_error {
  AppError(int c, const std::string& what) : std::runtime_error(what), code(c) {}
  int code;
};

// How long a correct engine may take at most before a test gives up waiting (never reached
// unless something hangs).
constexpr auto kPatience = 60s;

TEST(Futures, GetReturnsValue) {
  Runtime rt;
  auto f = rt.submit([] { return 6 * 7; });
  EXPECT_TRUE(f.valid());
  EXPECT_EQ(f.get(), 42);
  EXPECT_EQ(f.get(), 42);  // get() on an lvalue can be repeated
  EXPECT_TRUE(f.ready());
  EXPECT_EQ(f.status(), TaskStatus::done);
  EXPECT_EQ(f.error(), nullptr);
}

TEST(Futures, MoveOnlyAndLargeResults) {
  Runtime rt;
  auto owned = rt.submit([] { return std::make_unique<int>(11); });
  std::unique_ptr<int> value = std::move(owned).get();
  ASSERT_NE(value, nullptr);
  EXPECT_EQ(*value, 11);

  auto big = rt.submit([] { return std::vector<int>(10000, 3); });
  auto text = rt.submit([] { return std::string(1000, 'x'); });
  EXPECT_EQ(big.get().size(), 10000u);
  EXPECT_EQ(big.get()[9999], 3);
  EXPECT_EQ(text.get(), std::string(1000, 'x'));

  struct Wide {
    double v[16];
  };
  auto wide = rt.submit([] {
    Wide w{};
    for (int i = 0; i < 16; ++i) w.v[i] = i * 0.5;
    return w;
  });
  EXPECT_EQ(wide.get().v[15], 7.5);
}

TEST(Futures, CapturedStateIsDestroyed) {
  auto tracker = std::make_shared<int>(1);
  {
    Runtime rt;
    auto f = rt.submit([tracker] { return *tracker + 1; });
    EXPECT_EQ(f.get(), 2);
    rt.wait_all();
  }
  EXPECT_EQ(tracker.use_count(), 1);
}

TEST(Futures, EmptyFutureThrows) {
  Future<int> empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_THROW((void)empty.get(), hetflow::Error);
  EXPECT_THROW(empty.wait(), hetflow::Error);
  EXPECT_THROW((void)empty.ready(), hetflow::Error);
  EXPECT_EQ(empty.error(), nullptr);

  Runtime rt;
  auto f = rt.submit([] { return 1; });
  Future<int> moved = std::move(f);
  EXPECT_FALSE(f.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(moved.get(), 1);
}

// A worker would call a null pointer (a crash) or an empty std::function: refused at submission.
TEST(Futures, AnEmptyFunctionIsRefusedAtSubmission) {
  Runtime rt(hetflow::Config{.ncpus = 1});
  int (*null_function)(int) = nullptr;
  EXPECT_THROW(rt.submit(null_function, 1), hetflow::InvalidArgument);
  struct Counter {
    int count() const { return 1; }
  };
  int (Counter::*null_member)() const = nullptr;
  EXPECT_THROW(rt.submit(null_member, Counter{}), hetflow::InvalidArgument);
  EXPECT_THROW(rt.submit(std::function<int()>{}), hetflow::InvalidArgument);
  auto first = rt.submit([] { return 2; });
  int (*null_continuation)(int) = nullptr;
  EXPECT_THROW(first.then(null_continuation), hetflow::InvalidArgument);
  try {
    rt.submit(null_function, 1);
  } catch (const hetflow::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("Runtime::submit: the function is empty"), std::string::npos)
        << error.what();
  }
  EXPECT_EQ(first.get(), 2);  // nothing else was lost
  EXPECT_EQ(rt.submit(std::function<int()>([] { return 3; })).get(), 3);
}

TEST(Futures, MovingTheValueOutLeavesItToTheOtherCopies) {
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  auto first = rt.submit([] { return std::string("hello"); });
  auto later = rt.submit([&gate] {
    gate.wait();
    return std::string("world");
  });
  auto both = hetflow::when_all(std::vector<Future<std::string>>{first, later});
  auto size = first.then([](const std::string& text) { return text.size(); });
  Future<std::string> copy = first;
  EXPECT_EQ(std::move(first).get(), "hello");  // others still hold the task: copied, not moved
  gate.open();
  EXPECT_EQ(both.get(), (std::vector<std::string>{"hello", "world"}));
  EXPECT_EQ(size.get(), 5u);
  EXPECT_EQ(copy.get(), "hello");
  EXPECT_EQ(std::move(copy).get(), "hello");
}

TEST(Futures, ContinuingAFutureWhoseRuntimeIsGoneIsRefused) {
  Future<int> orphan;
  {
    Runtime rt(Config{.ncpus = 1});
    orphan = rt.submit([] { return 3; });
  }
  EXPECT_EQ(orphan.get(), 3);  // the value stays
  EXPECT_THROW((void)orphan.then([](int value) { return value; }), hetflow::ShutdownError);
  EXPECT_THROW((void)hetflow::when_all(orphan), hetflow::ShutdownError);
  EXPECT_THROW((void)hetflow::when_any(orphan), hetflow::ShutdownError);
  EXPECT_FALSE(orphan.cancel());  // finished: its runtime is not looked at
}

// A result holding the future of the task before it, and so on: dropping the last future
// frees the whole chain. It went one nested call per task, and overflowed the stack.
struct Link {
  int depth = 0;
  Future<Link> previous;
};

TEST(Futures, AChainOfResultsHoldingFuturesIsFreedWithoutDeepRecursion) {
  constexpr int kLength = 20000;
  Runtime rt(Config{.ncpus = 2});
  auto last = std::make_unique<Future<Link>>(rt.submit([] { return Link{}; }));
  for (int i = 1; i < kLength; ++i) {
    Future<Link> previous = *last;
    *last = rt.submit(TaskOptions{.after = {previous}}, [previous] {
      return Link{previous.get().depth + 1, previous};
    });
  }
  EXPECT_EQ(last->get().depth, kLength - 1);
  rt.wait_all();
  // Dropped on a thread with a small stack (256 KiB): 20,000 nested frees need several MiB.
  hetflow::test::run_on_small_stack([&last] { last.reset(); });
}

TEST(Futures, CopiesShareTheTask) {
  Runtime rt;
  Gate gate;
  auto f = rt.submit(TaskOptions{.name = "shared"}, [&gate] {
    gate.wait();
    return 5;
  });
  Future<int> copy = f;
  FutureBase base = copy;
  EXPECT_STREQ(base.name(), "shared");
  gate.open();
  EXPECT_EQ(copy.get(), 5);
  EXPECT_TRUE(f.ready());
  EXPECT_TRUE(base.ready());
}

TEST(Futures, WaitForTimesOutThenSucceeds) {
  Runtime rt;
  Gate gate;
  Signal started;
  auto f = rt.submit([&] {
    started.raise();
    gate.wait();
    return 3;
  });
  started.wait();
  EXPECT_FALSE(f.ready());
  EXPECT_EQ(f.status(), TaskStatus::running);
  const auto before = std::chrono::steady_clock::now();
  EXPECT_FALSE(f.wait_for(20ms));
  EXPECT_GE(std::chrono::steady_clock::now() - before, 20ms);
  EXPECT_FALSE(f.wait_until(std::chrono::steady_clock::now() + 5ms));
  EXPECT_FALSE(f.ready());
  EXPECT_EQ(f.error(), nullptr);
  gate.open();
  EXPECT_TRUE(f.wait_for(kPatience));
  EXPECT_TRUE(f.ready());
  EXPECT_EQ(f.status(), TaskStatus::done);
  EXPECT_TRUE(f.wait_for(0ms));  // already ready: true without waiting
  EXPECT_EQ(f.get(), 3);
}

TEST(Futures, WaitBlocksUntilDone) {
  Runtime rt;
  std::atomic<bool> finished{false};
  auto f = rt.submit([&finished] {
    std::this_thread::sleep_for(10ms);
    finished.store(true);
  });
  f.wait();
  EXPECT_TRUE(finished.load());
  EXPECT_TRUE(f.ready());
  EXPECT_NO_THROW(f.get());
}

TEST(Futures, PendingStatusBehindAPredecessor) {
  Runtime rt;
  Gate gate;
  auto first = rt.submit([&gate] { gate.wait(); });
  auto second = rt.submit(TaskOptions{.after = {first}}, [] { return 2; });
  EXPECT_EQ(second.status(), TaskStatus::pending);
  EXPECT_FALSE(second.ready());
  gate.open();
  EXPECT_EQ(second.get(), 2);
  EXPECT_EQ(first.status(), TaskStatus::done);
}

TEST(Futures, ManyThreadsWaitOnTheSameFuture) {
  Runtime rt;
  Gate gate;
  auto f = rt.submit([&gate] {
    gate.wait();
    return 17;
  });
  std::atomic<int> sum{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) waiters.emplace_back([&] { sum.fetch_add(f.get()); });
  std::this_thread::sleep_for(5ms);
  gate.open();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(sum.load(), 4 * 17);
}

TEST(Futures, SubmissionFromManyThreads) {
  Runtime rt;
  const int per_thread = static_cast<int>(hetflow::test::scaled(2000, 100));
  std::vector<std::thread> threads;
  std::vector<long long> sums(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<Future<int>> futures;
      futures.reserve(per_thread);
      for (int i = 0; i < per_thread; ++i) futures.push_back(rt.submit([i, t] { return i + t; }));
      for (auto& f : futures) sums[t] += f.get();
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < 4; ++t) {
    const long long n = per_thread;
    EXPECT_EQ(sums[t], n * (n - 1) / 2 + n * t);
  }
}

TEST(Futures, ExceptionRethrownWithOriginalType) {
  Runtime rt;
  auto f = rt.submit([]() -> int { throw AppError(7, "seven"); });
  try {
    (void)f.get();
    ADD_FAILURE() << "expected AppError";
  } catch (const AppError& e) {
    EXPECT_EQ(e.code, 7);
    EXPECT_STREQ(e.what(), "seven");
  }
  EXPECT_EQ(f.status(), TaskStatus::failed);
  EXPECT_TRUE(f.ready());
  ASSERT_NE(f.error(), nullptr);
  EXPECT_THROW(std::rethrow_exception(f.error()), AppError);
  // Again: the same failure each time.
  EXPECT_THROW((void)f.get(), AppError);

  auto not_std = rt.submit([] { throw 42; });
  try {
    not_std.get();
    ADD_FAILURE() << "expected an int";
  } catch (int value) {
    EXPECT_EQ(value, 42);
  }
}

TEST(Futures, DependentsFailWithDependencyError) {
  Runtime rt;
  auto root = rt.submit(TaskOptions{.name = "the root"}, []() -> int { throw AppError(3, "root broke"); });
  auto child = rt.submit(TaskOptions{.after = {root}, .name = "child"}, [] { return 1; });
  auto grandchild = rt.submit(TaskOptions{.after = {child}, .name = "grandchild"}, [] { return 2; });
  for (FutureBase* f : std::initializer_list<FutureBase*>{&child, &grandchild}) {
    f->wait();
    EXPECT_EQ(f->status(), TaskStatus::failed);
    try {
      std::rethrow_exception(f->error());
    } catch (const DependencyError& e) {
      EXPECT_EQ(e.root_task(), "the root");
      const std::string what = e.what();
      EXPECT_NE(what.find("the root"), std::string::npos) << what;
      EXPECT_NE(what.find("root broke"), std::string::npos) << what;
      EXPECT_THROW(std::rethrow_exception(e.root_cause()), AppError);
    }
  }
  EXPECT_THROW((void)grandchild.get(), DependencyError);
  EXPECT_THROW((void)root.get(), AppError);
}

TEST(Futures, DependencyOnAlreadyFailedTask) {
  Runtime rt;
  auto root = rt.submit(TaskOptions{.name = "early"}, [] { throw std::runtime_error("early failure"); });
  root.wait();
  std::atomic<bool> ran{false};
  auto late = rt.submit(TaskOptions{.after = {root}}, [&ran] { ran = true; });
  try {
    late.get();
    ADD_FAILURE() << "expected DependencyError";
  } catch (const DependencyError& e) {
    EXPECT_EQ(e.root_task(), "early");
    EXPECT_NE(std::string(e.what()).find("early failure"), std::string::npos);
  }
  EXPECT_FALSE(ran.load());
}

TEST(Futures, ThenChainsValues) {
  Runtime rt;
  auto f = rt.submit([] { return 20; }).then([](int v) { return v + 1; }).then([](int v) { return v * 2; });
  EXPECT_EQ(f.get(), 42);
  auto s = rt.submit([] { return std::string("a"); }).then([](const std::string& v) { return v + "b"; });
  EXPECT_EQ(s.get(), "ab");

  std::atomic<int> order{0};
  auto v = rt.submit([&order] { order = 1; }).then([&order] { return order.load() * 10; });
  EXPECT_EQ(v.get(), 10);
}

TEST(Futures, ThenOnFailureGivesDependencyError) {
  Runtime rt;
  std::atomic<bool> ran{false};
  auto f = rt.submit(TaskOptions{.name = "parse"}, []() -> int { throw AppError(1, "bad input"); }).then([&ran](int v) {
    ran = true;
    return v;
  });
  try {
    (void)f.get();
    ADD_FAILURE() << "expected DependencyError";
  } catch (const DependencyError& e) {
    EXPECT_EQ(e.root_task(), "parse");
    EXPECT_THROW(std::rethrow_exception(e.root_cause()), AppError);
  }
  EXPECT_FALSE(ran.load());
}

TEST(Futures, WhenAllVector) {
  Runtime rt;
  std::vector<Future<int>> futures;
  for (int i = 0; i < 50; ++i) {
    futures.push_back(rt.submit([i] {
      if (i % 7 == 0) std::this_thread::sleep_for(100us);
      return i * i;
    }));
  }
  auto all = hetflow::when_all(futures);
  std::vector<int> values = all.get();
  ASSERT_EQ(values.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(values[i], i * i);

  std::atomic<int> count{0};
  std::vector<Future<void>> voids;
  for (int i = 0; i < 20; ++i) voids.push_back(rt.submit([&count] { count.fetch_add(1); }));
  hetflow::when_all(voids).get();
  EXPECT_EQ(count.load(), 20);

  EXPECT_THROW((void)hetflow::when_all(std::vector<Future<int>>{}), hetflow::InvalidArgument);
  EXPECT_THROW((void)hetflow::when_all(std::vector<FutureBase>{}), hetflow::InvalidArgument);
  // An empty future among typed ones, first or not, is refused as in the untyped form (first,
  // it crashed: the runtime was looked up through it).
  EXPECT_THROW((void)hetflow::when_all(std::vector<Future<int>>{Future<int>{}, futures[0]}), hetflow::InvalidArgument);
  EXPECT_THROW((void)hetflow::when_all(std::vector<Future<int>>{futures[0], Future<int>{}}), hetflow::InvalidArgument);
}

TEST(Futures, WhenAllVariadic) {
  Runtime rt;
  std::atomic<int> sum{0};
  auto a = rt.submit([&sum] {
    std::this_thread::sleep_for(2ms);
    sum += 1;
    return 1;
  });
  auto b = rt.submit([&sum] { sum += 10; });
  auto c = rt.submit([&sum] {
    sum += 100;
    return std::string("c");
  });
  auto all = hetflow::when_all(a, b, c);
  all.get();
  EXPECT_EQ(sum.load(), 111);
  EXPECT_TRUE(a.ready());
  EXPECT_TRUE(b.ready());
  EXPECT_TRUE(c.ready());
}

TEST(Futures, WhenAllFailsIfOneFails) {
  Runtime rt;
  auto good = rt.submit([] { return 1; });
  auto bad = rt.submit(TaskOptions{.name = "bad one"}, []() -> int { throw AppError(2, "nope"); });
  try {
    (void)hetflow::when_all(std::vector<Future<int>>{good, bad}).get();
    ADD_FAILURE() << "expected DependencyError";
  } catch (const DependencyError& e) {
    EXPECT_EQ(e.root_task(), "bad one");
  }
  EXPECT_THROW(hetflow::when_all(good, bad).get(), DependencyError);
}

TEST(Futures, WhenAnyGivesFirstReady) {
  // Two workers: `slow` holds one until the gate opens, and `fast` needs the other (with the
  // default, one worker where the process may use one CPU, `fast` never ran and this hung).
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  auto slow = rt.submit([&gate] {
    gate.wait();
    return 1;
  });
  auto fast = rt.submit([] { return 2; });
  auto any = hetflow::when_any(slow, fast);
  EXPECT_EQ(any.get(), 1u);
  EXPECT_FALSE(slow.ready());
  gate.open();
  EXPECT_EQ(slow.get(), 1);

  // Inputs that are already finished: one of them wins at once.
  auto done = hetflow::when_any(std::vector<FutureBase>{slow, fast});
  EXPECT_LT(done.get(), 2u);

  EXPECT_THROW((void)hetflow::when_any(std::vector<FutureBase>{}), hetflow::InvalidArgument);

  // A vector of typed futures, as when_all takes (it did not compile: the variadic form took it).
  std::vector<hetflow::Future<void>> chores{rt.submit([] {}), rt.submit([] {})};
  EXPECT_LT(hetflow::when_any(chores).get(), 2u);
  const std::vector<hetflow::Future<int>> numbers{slow, fast};
  EXPECT_LT(hetflow::when_any(numbers).get(), 2u);
  EXPECT_THROW((void)hetflow::when_any(std::vector<hetflow::Future<int>>{}), hetflow::InvalidArgument);
}

TEST(Futures, WhenAnyIsReadyWhileTheOnlyWorkerIsBusy) {
  // Its value came from a task, which waited for the worker: here, until the gate opened, which
  // only the value lets happen (another runtime's task waited for it the same way, and hung).
  Runtime rt(Config{.ncpus = 1u});
  auto done = rt.submit([] { return 2; });
  done.wait();
  Gate gate;
  Signal busy;
  auto occupying = rt.submit([&] {
    busy.raise();
    gate.wait();
    return 1;
  });
  busy.wait();
  auto any = hetflow::when_any(occupying, done);
  EXPECT_TRUE(any.wait_for(std::chrono::seconds(30)));
  EXPECT_EQ(any.get(), 1u);
  EXPECT_FALSE(any.cancel());  // started with its inputs
  gate.open();
  EXPECT_EQ(occupying.get(), 1);
}

TEST(Futures, WhenAnyCountsAFailureAsReady) {
  Runtime rt(Config{.ncpus = 2});  // `slow` holds one worker until the gate opens
  Gate gate;
  auto slow = rt.submit([&gate] { gate.wait(); });
  auto failing = rt.submit([] { throw AppError(4, "quick failure"); });
  auto any = hetflow::when_any(slow, failing);
  EXPECT_EQ(any.get(), 1u);
  gate.open();
  slow.get();
}

// `first = when_any(first)` in a loop: a wait for the last checks whether it can end through
// every level, and the first input ending ends every level. Both went one nested call per level
// and overflowed the stack.
TEST(Futures, ADeepChainOfWhenAnyIsWaitedForAndEndsWithoutDeepRecursion) {
  const std::size_t depth = hetflow::test::scaled(200000);
  Runtime rt(Config{.ncpus = 2});
  Gate gate;
  auto head = rt.submit([&gate] {
    gate.wait();
    return 1;
  });
  FutureBase last = head;
  for (std::size_t i = 0; i < depth; ++i) last = hetflow::when_any(std::vector<FutureBase>{last});
  std::thread waiter([&last] { EXPECT_EQ(Future<std::size_t>(last).get(), 0u); });
  gate.open();
  waiter.join();
  EXPECT_EQ(head.get(), 1);
}

TEST(Futures, WhenAnyManyRounds) {
  Runtime rt;
  for (int round = 0; round < 200; ++round) {
    std::vector<FutureBase> inputs;
    for (int i = 0; i < 4; ++i) inputs.push_back(rt.submit([i] { return i; }));
    std::size_t winner = hetflow::when_any(inputs).get();
    ASSERT_LT(winner, 4u);
    EXPECT_TRUE(inputs[winner].ready());
  }
}

TEST(Futures, CancelQueuedTask) {
  // One worker, busy with a blocker: the victim is queued but cannot start.
  Runtime rt(Config{.ncpus = 1});
  Gate gate;
  Signal started;
  int x = 0;
  auto handle = rt.register_variable(x, "x");
  auto blocker = rt.submit([&] {
    started.raise();
    gate.wait();
  });
  started.wait();
  std::atomic<bool> ran{false};
  auto victim = rt.submit(TaskOptions{.data = {hetflow::W(handle)}, .name = "victim"}, [&ran] { ran = true; });
  auto after = rt.submit(TaskOptions{.after = {victim}, .name = "after victim"}, [] { return 1; });
  auto reader = rt.submit(TaskOptions{.data = {hetflow::R(handle)}, .name = "reads x"}, [] { return 2; });
  EXPECT_TRUE(victim.cancel());
  EXPECT_FALSE(victim.cancel());  // once
  EXPECT_EQ(victim.status(), TaskStatus::cancelled);
  EXPECT_TRUE(victim.ready());
  try {
    victim.get();
    ADD_FAILURE() << "expected CancelledError";
  } catch (const CancelledError& e) {
    EXPECT_NE(std::string(e.what()).find("victim"), std::string::npos) << e.what();
  }
  // Told at once, while the worker is still busy: its dependents fail, and its data is free.
  for (FutureBase* f : std::initializer_list<FutureBase*>{&after, &reader}) {
    ASSERT_TRUE(f->wait_for(std::chrono::seconds(30)));
    EXPECT_EQ(f->status(), TaskStatus::failed);
    try {
      std::rethrow_exception(f->error());
    } catch (const DependencyError& e) {
      EXPECT_EQ(e.root_task(), "victim");
      EXPECT_THROW(std::rethrow_exception(e.root_cause()), CancelledError);
    }
  }
  {
    auto acquired = rt.acquire(handle, hetflow::AccessMode::RW);
    *acquired.as<int>() = 5;
  }
  EXPECT_EQ(blocker.status(), TaskStatus::running);
  gate.open();
  blocker.get();
  EXPECT_FALSE(ran.load());
  rt.wait_all();
  EXPECT_EQ(victim.status(), TaskStatus::cancelled);
  EXPECT_EQ(x, 5);
}

TEST(Futures, CancelPendingTask) {
  Runtime rt;
  Gate gate;
  auto blocker = rt.submit([&gate] { gate.wait(); });
  std::atomic<bool> ran{false};
  auto victim = rt.submit(TaskOptions{.after = {blocker}, .name = "pending victim"}, [&ran] { ran = true; });
  auto dependent = rt.submit(TaskOptions{.after = {victim}}, [&ran] { ran = true; });
  EXPECT_EQ(victim.status(), TaskStatus::pending);
  EXPECT_TRUE(victim.cancel());
  EXPECT_THROW(victim.get(), CancelledError);
  gate.open();
  EXPECT_THROW(dependent.get(), DependencyError);
  EXPECT_FALSE(ran.load());
  EXPECT_EQ(victim.status(), TaskStatus::cancelled);
}

TEST(Futures, CancelledTaskStaysCancelledWhenItsPredecessorFails) {
  Runtime rt;
  Gate gate;
  auto failing = rt.submit(TaskOptions{.name = "fails later"}, [&gate] {
    gate.wait();
    throw AppError(9, "late failure");
  });
  auto victim = rt.submit(TaskOptions{.after = {failing}, .name = "cancelled one"}, [] {});
  auto dependent = rt.submit(TaskOptions{.after = {victim}}, [] {});
  ASSERT_TRUE(victim.cancel());
  EXPECT_THROW(victim.get(), CancelledError);
  gate.open();
  EXPECT_THROW(dependent.get(), DependencyError);
  rt.wait_all();
  // A finished task's outcome never changes.
  EXPECT_EQ(victim.status(), TaskStatus::cancelled);
  EXPECT_THROW(victim.get(), CancelledError);
}

TEST(Futures, CancelRunningOrFinishedTaskFails) {
  Runtime rt;
  Gate gate;
  Signal started;
  auto running = rt.submit([&] {
    started.raise();
    gate.wait();
    return 1;
  });
  started.wait();
  EXPECT_FALSE(running.cancel());
  gate.open();
  EXPECT_EQ(running.get(), 1);
  EXPECT_FALSE(running.cancel());
  EXPECT_EQ(running.status(), TaskStatus::done);
}

TEST(Futures, WaitInsideTaskWithOneWorker) {
  Runtime rt(Config{.ncpus = 1});
  auto outer = rt.submit([&rt] {
    auto inner = rt.submit([] { return 20; });
    auto other = rt.submit([] { return 22; });
    return inner.get() + other.get();
  });
  EXPECT_EQ(outer.get(), 42);

  // Waiting on a task that depends on data the waiting task's siblings write.
  long long acc = 0;
  auto handle = rt.register_variable(acc);
  auto chain = rt.submit([&rt, handle] {
    std::vector<Future<void>> steps;
    for (int i = 1; i <= 10; ++i) {
      steps.push_back(rt.submit(TaskOptions{.data = {hetflow::RW(handle)}},
                                [handle, i] { *static_cast<long long*>(handle.host_ptr()) += i; }));
    }
    steps.back().wait();
    return *static_cast<long long*>(handle.host_ptr());
  });
  EXPECT_EQ(chain.get(), 55);
}

int fib(Runtime& rt, int n) {
  if (n < 2) return n;
  auto a = rt.submit([&rt, n] { return fib(rt, n - 1); });
  auto b = rt.submit([&rt, n] { return fib(rt, n - 2); });
  return a.get() + b.get();
}

TEST(Futures, RecursiveWaitsDoNotDeadlock) {
  for (unsigned ncpus : {1u, 2u}) {
    Runtime rt(Config{.ncpus = ncpus});
    auto f = rt.submit([&rt] { return fib(rt, 12); });
    EXPECT_EQ(f.get(), 144);
  }
}

TEST(Futures, WaitInsideTaskOnFailedTaskRethrows) {
  Runtime rt(Config{.ncpus = 1});
  auto outer = rt.submit([&rt] {
    auto inner = rt.submit([]() -> int { throw AppError(5, "inner"); });
    try {
      (void)inner.get();
    } catch (const AppError& e) {
      return e.code;
    }
    return 0;
  });
  EXPECT_EQ(outer.get(), 5);
}

}  // namespace

namespace {

struct alignas(256) OverAligned {
  double value = 0;
};

bool aligned(const void* address, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(address) % alignment == 0;
}

// A task's callable, its result and a codelet's argument live in the task's storage, which must
// honour their alignment however large.
TEST(Futures, OverAlignedCallablesResultsAndArgumentsKeepTheirAlignment) {
  Runtime rt(hetflow::Config{.ncpus = 2});
  const hetflow::Codelet check_argument{.name = "check argument", .cpu = [](hetflow::TaskContext& context) {
                                          if (!aligned(&context.arg<OverAligned>(), alignof(OverAligned))) {
                                            throw std::runtime_error("misaligned argument");
                                          }
                                        }};
  for (int i = 0; i < 50; ++i) {
    OverAligned captured{static_cast<double>(i)};
    auto result = rt.submit([captured] {
      if (!aligned(&captured, alignof(OverAligned))) throw std::runtime_error("misaligned callable");
      return OverAligned{captured.value + 1};
    });
    EXPECT_EQ(result.get().value, i + 1.0);
    EXPECT_NO_THROW(rt.insert(check_argument, {}, OverAligned{static_cast<double>(i)}).get());
  }
}

// The data's handle holds its last writer (and readers) until the next access: a result that
// lived as long as the task record stayed as long as the data's registration did, and one that
// refers to the data (a Python task returning its array) kept the data alive for ever.
TEST(Futures, AResultGoesWithItsLastFutureWhileTheDataStillHoldTheTask) {
  Runtime rt(Config{.ncpus = 2});
  std::vector<double> x(4, 1.0);
  auto hx = rt.register_vector(x.data(), x.size(), "x");
  auto first = std::make_shared<int>(1);
  std::weak_ptr<int> first_result = first;
  {
    auto future = rt.submit(TaskOptions{.data = {hetflow::RW(hx)}},
                            [result = std::move(first)]() mutable { return std::move(result); });
    future.wait();
    auto copy = future;  // a second future: the result stays while either is left
    future = {};
    EXPECT_FALSE(first_result.expired());
  }
  // Dropped by whichever comes last, the last future or the worker concluding the task (which
  // looks at the futures left once it has published the outcome): then a moment later, there.
  const auto give_up = std::chrono::steady_clock::now() + kPatience;
  while (!first_result.expired() && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(first_result.expired());

  // Dropped before the task ends: the result goes as it ends.
  Gate gate;
  auto second = std::make_shared<int>(2);
  std::weak_ptr<int> second_result = second;
  (void)rt.submit(TaskOptions{.data = {hetflow::R(hx)}}, [&gate, result = std::move(second)]() mutable {
    gate.wait();
    return std::move(result);
  });
  gate.open();
  rt.wait_all();
  EXPECT_TRUE(second_result.expired());

  // A continuation reads the value it was given after the first future is gone.
  auto third = rt.submit(TaskOptions{.data = {hetflow::RW(hx)}}, [] { return std::make_shared<int>(3); });
  auto doubled = third.then([](const std::shared_ptr<int>& value) { return *value * 2; });
  third = {};
  EXPECT_EQ(doubled.get(), 6);
  rt.unregister(hx);
}

}  // namespace
