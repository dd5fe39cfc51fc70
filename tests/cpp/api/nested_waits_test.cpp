// Waiting inside a task, on every wait path (wait_for, wait_until, get, when_all, then,
// acquire), lets the worker run other tasks meanwhile: a task may wait for a task queued behind it
// even on one worker. A wait with a deadline still returns false once the deadline has passed.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hetflow::AccessMode;
using hetflow::Config;
using hetflow::Future;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskOptions;
using hetflow::W;
using hetflow::test::Gate;
using Clock = std::chrono::steady_clock;

// Long enough that a correct engine never reaches it: it only keeps a broken one from hanging.
constexpr auto kPatience = 30s;

TEST(NestedWaits, WaitForATaskSubmittedFromInside) {
  Runtime rt(Config{.ncpus = 1});
  auto outer = rt.submit([&rt] {
    auto inner = rt.submit([] { return 20; });
    auto other = rt.submit([] { return 22; });
    const bool in_time = inner.wait_for(kPatience) && other.wait_until(Clock::now() + kPatience);
    return in_time ? inner.get() + other.get() : -1;
  });
  EXPECT_EQ(outer.get(), 42);
}

// Tasks that each wait for the next one they submit, on one worker. A waiting task runs the one
// it waits for on its own stack a few levels deep, then lends its worker to a spare thread: a deep
// nesting works. Each level takes 64 KiB of the stack besides the engine's frames.
long nest(Runtime& rt, long levels) {
  if (levels == 0) return 0;
  volatile char stack_use[64 * 1024];
  stack_use[0] = static_cast<char>(levels);
  return rt.submit([&rt, levels] { return nest(rt, levels - 1); }).get() + 1 + (stack_use[0] - stack_use[0]);
}

TEST(NestedWaits, DeepNestingGoesOnOnSpareThreads) {
  Runtime rt(Config{.ncpus = 1});
  EXPECT_EQ(rt.submit([&rt] { return nest(rt, 1000); }).get(), 1000);
}

// Without spare threads every level runs on the same stack, which overflowed (a segfault past
// about 12,000 levels): a wait with too little of the stack left fails, and with it the chain,
// saying why. The stack runs short within about a hundred levels, in any build.
TEST(NestedWaits, NestingTooDeepForTheStackFailsSayingWhyWithoutSpareThreads) {
  Runtime rt(Config{.ncpus = 1, .spare_threads = 0});
  EXPECT_EQ(rt.submit([&rt] { return nest(rt, 40); }).get(), 40);
  try {
    static_cast<void>(rt.submit([&rt] { return nest(rt, 1000); }).get());
    ADD_FAILURE() << "1,000 nested waits of 64 KiB each on one worker's stack went through";
  } catch (const hetflow::Error& error) {
    EXPECT_NE(std::string(error.what()).find("waits inside"), std::string::npos) << error.what();
  }
}

long fib(Runtime& rt, long n) {
  if (n < 2) return n;
  auto smaller = rt.submit([&rt, n] { return fib(rt, n - 2); });
  auto larger = rt.submit([&rt, n] { return fib(rt, n - 1); });
  return larger.get() + smaller.get();
}

// A recursive fork-join (8,361 tasks) under every scheduler, with few spare threads: a waiting
// task takes the one it waits for from whichever queue holds it and runs it on its stack. It
// used to run only the tasks it popped itself: under a scheduler with one queue (all but ws) the
// oldest went to spare threads, as many as the recursion was wide (about 4,000 for fib(19)),
// and a wait failed once all 64 were in use.
TEST(NestedWaits, RecursiveForkJoinUnderEverySchedulerWaitsOnFewThreads) {
  for (const char* scheduler : {"ws", "eager", "prio", "random", "dm", "dmda", "dmdas"}) {
    Runtime rt(Config{.ncpus = 2, .scheduler = scheduler, .spare_threads = 64});
    EXPECT_EQ(rt.submit([&rt] { return fib(rt, 18); }).get(), 2584) << scheduler;
  }
}

// A task waiting for one queued behind another task runs it on its stack (it takes it from the
// queue, leaving the queue's entry to whoever reaches it): the result is freed once the future
// is dropped, not when a worker gets to the entry. Here the other worker is busy throughout and
// the entries stay queued, behind a task set aside: each child's result lived until then.
TEST(NestedWaits, AResultTakenAheadOfItsQueueIsFreedWithItsFuture) {
  Runtime rt(Config{.ncpus = 2, .scheduler = "eager"});
  static std::atomic<int> alive{0};
  struct Counted {
    Counted() { ++alive; }
    ~Counted() { --alive; }
    Counted(const Counted&) = delete;
    Counted& operator=(const Counted&) = delete;
  };
  hetflow::test::Signal busy;
  Gate release;
  auto blocker = rt.submit([&] {
    busy.raise();
    release.wait();
  });
  busy.wait_for_count(1);
  Gate go;
  auto parent = rt.submit([&] {
    go.wait();
    int most_alive = 0;
    for (int i = 0; i < 100; ++i) {
      auto child = rt.submit([] { return std::make_shared<Counted>(); });
      if (child.get() == nullptr) return -1;
      child = {};
      most_alive = std::max(most_alive, alive.load());
    }
    return most_alive;
  });
  (void)rt.submit([] {});  // queued ahead of the children: the parent sets it aside
  go.open();
  ASSERT_TRUE(parent.wait_for(kPatience));
  EXPECT_EQ(parent.get(), 0);
  release.open();
  rt.wait_all();
}

// A waiting task that set a queued task aside (not its own, not needed) and then ran the one it
// waits for gives the set-aside task back: kept for its worker, it waited for the rest of the
// waiting task's run while another worker was idle, and for ever if the waiting task then
// waited for it in a way hetflow does not see.
TEST(NestedWaits, ATaskSetAsideDuringAWaitGoesBackToTheOtherWorkers) {
  Runtime rt(Config{.ncpus = 2, .scheduler = "eager"});
  hetflow::test::Signal busy;
  Gate release_other;
  auto blocker = rt.submit([&] {
    busy.raise();
    release_other.wait();
  });
  busy.wait_for_count(1);
  Gate go;
  std::atomic<bool> unrelated_ran{false};
  auto parent = rt.submit([&] {
    go.wait();
    auto child = rt.submit([] { return 1; });
    if (child.get() != 1) return false;
    release_other.open();  // the other worker is free: the set-aside task may run there
    const auto until = Clock::now() + kPatience;
    while (!unrelated_ran.load() && Clock::now() < until) std::this_thread::yield();
    return unrelated_ran.load();
  });
  (void)rt.submit([&] { unrelated_ran = true; });  // queued ahead of the child
  go.open();
  ASSERT_TRUE(parent.wait_for(2 * kPatience));
  EXPECT_TRUE(parent.get());
  rt.wait_all();
}

// The same when the wait ends in a refusal: A pops Y and sets it aside, then its wait for B, which
// waits for A, is refused as a cycle. Y stayed hidden while A went on, though B's worker (on a
// spare thread) was free once Z ended. Whichever of A and B is refused, Y must run while A goes on.
TEST(NestedWaits, ATaskSetAsideGoesBackWhenTheWaitIsRefused) {
  Runtime rt(Config{.ncpus = 2, .scheduler = "eager"});
  std::atomic<bool> b_waits{false};
  std::atomic<bool> y_queued{false};
  std::atomic<bool> y_ran{false};
  auto b = std::make_shared<Future<void>>();
  auto a = rt.submit(TaskOptions{.name = "A", .worker = 0}, [&, b] {
    while (!b_waits.load() || !y_queued.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // B blocked in its wait by then
    try {
      b->get();
    } catch (const hetflow::Error&) {  // the cycle: A's wait, or B's
    }
    const auto until = Clock::now() + kPatience;
    while (!y_ran.load() && Clock::now() < until) std::this_thread::yield();
    return y_ran.load();
  });
  *b = rt.submit(TaskOptions{.name = "B", .worker = 1}, [&b_waits, a] {
    b_waits = true;
    try {
      static_cast<void>(a.get());  // without a deadline: a wait with one is not part of a cycle
    } catch (const hetflow::Error&) {
    }
  });
  while (!b_waits.load()) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // B's worker went to a spare thread: Z keeps it busy while A sets Y aside.
  (void)rt.submit(TaskOptions{.name = "Z"}, [] { std::this_thread::sleep_for(std::chrono::milliseconds(400)); });
  (void)rt.submit(TaskOptions{.name = "Y"}, [&y_ran] { y_ran = true; });
  y_queued = true;
  ASSERT_TRUE(a.wait_for(2 * kPatience));
  EXPECT_TRUE(a.get());
  rt.wait_all();
}

// One spare thread is enough for one task waiting at a time. A thread that had just handed the
// worker back, and was not parked yet, did not count: a wait with a deadline found no thread and
// blocked to its deadline with the worker idle (most rounds, in 5 runs of 6).
TEST(NestedWaits, OneSpareThreadServesWaitsOneAfterAnother) {
  Runtime rt(Config{.ncpus = 1, .spare_threads = 1});
  for (int round = 0; round < 40; ++round) {
    auto waiter = rt.submit([&rt] {
      for (int wait = 0; wait < 2; ++wait) {
        auto child = rt.submit([] {
          std::this_thread::sleep_for(std::chrono::microseconds(10));
          return 1;
        });
        if (!child.wait_for(std::chrono::seconds(5))) return false;
      }
      return true;
    });
    ASSERT_TRUE(waiter.wait_for(kPatience)) << round;
    ASSERT_TRUE(waiter.get()) << "round " << round << ": a wait found no thread to stand in for its worker";
  }
}

// A wait with a deadline runs nothing on the waiting task's stack, where a task would hold the
// wait past its deadline however long it ran: the worker goes to a spare thread meanwhile.
TEST(NestedWaits, AWaitWithADeadlineRunsNothingOnItsThread) {
  for (const char* scheduler : {"ws", "eager", "dmdas"}) {
    Runtime rt(Config{.ncpus = 1, .scheduler = scheduler});
    auto parent = rt.submit([&rt] {
      auto child = rt.submit([] { return std::this_thread::get_id(); });
      return child.wait_for(kPatience) && child.get() != std::this_thread::get_id();
    });
    ASSERT_TRUE(parent.wait_for(kPatience)) << scheduler;
    EXPECT_TRUE(parent.get()) << scheduler;
  }
}

// Waits with a deadline made again and again (in slices, as a Python wait that stays interruptible
// waits) while no spare thread was left idled their worker to each deadline: with every thread in
// such a wait, nothing ran for ever. With no thread left, a wait runs tasks itself.
TEST(NestedWaits, WaitsInSlicesBeyondTheSpareThreadsRunTheTasksThemselves) {
  Runtime rt(Config{.ncpus = 1, .spare_threads = 1});
  const auto wait_in_slices = [](Future<int>& future) {
    for (int slice = 0; slice < 200; ++slice) {
      if (future.wait_for(50ms)) return future.get();
    }
    return -1000;  // ten seconds: it hung
  };
  const auto middle = [&rt, wait_in_slices] {
    std::vector<Future<int>> leaves;
    for (int j = 0; j < 3; ++j) {
      leaves.push_back(rt.submit([j] {
        std::this_thread::sleep_for(1ms);
        return j;
      }));
    }
    int sum = 0;
    for (auto& leaf : leaves) sum += wait_in_slices(leaf);
    return sum;
  };
  std::vector<Future<int>> tops;
  for (int i = 0; i < 4; ++i) {
    tops.push_back(rt.submit([&rt, middle, wait_in_slices] {
      std::vector<Future<int>> middles;
      for (int j = 0; j < 3; ++j) middles.push_back(rt.submit(middle));
      int sum = 0;
      for (auto& m : middles) sum += wait_in_slices(m);
      return sum;
    }));
  }
  for (auto& top : tops) {
    ASSERT_TRUE(top.wait_for(kPatience));
    EXPECT_EQ(top.get(), 9);
  }
}

// A task waits, holding a lock, for a slow task on the other worker; meanwhile the spare thread
// standing in for its worker starts a task that needs the lock. Once its wait is over the
// waiting task goes on without its worker (the spare's task will not end before it releases
// the lock) and takes the worker back when it returns. It waited for the spare's task for ever;
// here that task gives up on the lock after a while, saying whether it got it.
TEST(NestedWaits, AWaitOverGoesOnWhileTheSparesTaskWaitsForIt) {
  for (const bool with_deadline : {false, true}) {
    SCOPED_TRACE(with_deadline);
    Runtime rt(Config{.ncpus = 2, .scheduler = "eager"});
    std::mutex lock;
    Gate slow_started;
    auto slow = rt.submit([&slow_started] {
      slow_started.open();
      std::this_thread::sleep_for(300ms);
      return 1;
    });
    slow_started.wait();
    std::atomic<bool> holding{false};
    auto waiter = rt.submit([&] {
      const std::lock_guard held(lock);
      holding = true;
      if (with_deadline) return slow.wait_for(kPatience) ? slow.get() : -1;
      return slow.get();
    });
    while (!holding) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(50ms);  // the waiter has lent its worker
    auto needs_lock = rt.submit([&lock] {
      // Polled rather than timed_mutex::try_lock_for, which ThreadSanitizer does not follow.
      const auto give_up = Clock::now() + 10s;
      while (!lock.try_lock()) {
        if (Clock::now() > give_up) return false;
        std::this_thread::sleep_for(1ms);
      }
      lock.unlock();
      return true;
    });
    ASSERT_TRUE(needs_lock.wait_for(kPatience));
    EXPECT_TRUE(needs_lock.get());
    ASSERT_TRUE(waiter.wait_for(kPatience));
    EXPECT_EQ(waiter.get(), 1);
  }
}

// On one worker, a task polls each child in turn with a short deadline: after its first wait it
// goes on without its worker (the spare runs the child), and the spare must go on serving the
// worker for the next children. It handed the worker back and parked, and the next child never
// ran (the task, polling as an application thread, could not run it).
TEST(NestedWaits, ATaskPollingChildrenAfterGoingOnWithoutItsWorkerGetsThemRun) {
  Runtime rt(Config{.ncpus = 1});
  auto parent = rt.submit([&rt] {
    int total = 0;
    for (int i = 1; i <= 3; ++i) {
      auto child = rt.submit([i] {
        std::this_thread::sleep_for(60ms);
        return i;
      });
      const auto give_up = Clock::now() + kPatience;
      while (!child.wait_for(5ms) && Clock::now() < give_up) {
      }
      if (!child.wait_for(0ms)) return -1;
      total += child.get();
    }
    return total;
  });
  ASSERT_TRUE(parent.wait_for(kPatience));
  EXPECT_EQ(parent.get(), 6);
}

// Task i waits inside its body for task i - 1, which nothing tells the engine: every task may
// start before the one it waits for, here all of them (the first waits at a gate). Run on top of
// each other, waiting tasks hung (a task above waiting for one below it, on another worker),
// under every scheduler but eager and ws; each now waits on a thread of its own.
TEST(NestedWaits, ChainOfTasksEachWaitingForThePreviousOne) {
  Runtime rt(Config{.ncpus = 2});
  constexpr long kLength = 300;
  Gate gate;
  std::vector<Future<long>> chain{rt.submit([&gate] {
    gate.wait();
    return 0L;
  })};
  for (long i = 1; i < kLength; ++i) {
    chain.push_back(rt.submit([previous = chain.back()] { return previous.get() + 1; }));
  }
  gate.open();
  ASSERT_TRUE(chain.back().wait_for(kPatience));
  EXPECT_EQ(chain.back().get(), kLength - 1);
}

// Tasks pinned to two workers, each waiting for the last one on the other worker (hung from
// three round trips).
TEST(NestedWaits, PinnedTasksWaitingForEachOtherInTurn) {
  Runtime rt(Config{.ncpus = 2});
  constexpr long kRounds = 100;
  std::vector<Future<long>> on_0{rt.submit(TaskOptions{.worker = 0}, [] { return 0L; })};
  std::vector<Future<long>> on_1{rt.submit(TaskOptions{.worker = 1}, [f = on_0.back()] { return f.get() + 1; })};
  for (long i = 1; i < kRounds; ++i) {
    on_0.push_back(rt.submit(TaskOptions{.worker = 0}, [f = on_1.back()] { return f.get() + 1; }));
    on_1.push_back(rt.submit(TaskOptions{.worker = 1}, [f = on_0.back()] { return f.get() + 1; }));
  }
  ASSERT_TRUE(on_1.back().wait_for(kPatience));
  EXPECT_EQ(on_1.back().get(), 2 * kRounds - 1);
}

// The same across two runtimes of one worker each (hung from four round trips).
TEST(NestedWaits, TwoRuntimesTasksWaitingForEachOtherInTurn) {
  Runtime a(Config{.ncpus = 1});
  Runtime b(Config{.ncpus = 1});
  constexpr long kRounds = 100;
  std::vector<Future<long>> on_a{a.submit([] { return 0L; })};
  std::vector<Future<long>> on_b{b.submit([f = on_a.back()] { return f.get() + 1; })};
  for (long i = 1; i < kRounds; ++i) {
    on_a.push_back(a.submit([f = on_b.back()] { return f.get() + 1; }));
    on_b.push_back(b.submit([f = on_a.back()] { return f.get() + 1; }));
  }
  ASSERT_TRUE(on_b.back().wait_for(kPatience));
  EXPECT_EQ(on_b.back().get(), 2 * kRounds - 1);
}

// Once every spare thread stands in for a waiting task, one more wait without a deadline fails
// saying so, rather than run unrelated tasks on top of it (which could hang); a wait with a
// deadline waits until it. The tasks already waiting, and the runtime, go on.
TEST(NestedWaits, WaitsBeyondTheSpareThreadsFailSayingWhy) {
  for (bool with_deadline : {false, true}) {
    SCOPED_TRACE(with_deadline);
    Runtime rt(Config{.ncpus = 2, .spare_threads = 2});
    Gate gate;
    auto first = rt.submit(TaskOptions{.worker = 0}, [&gate] {
      gate.wait();
      return 1;
    });
    // Worker 1's thread and the two spares each take one waiting task: the last two find no
    // thread left.
    std::vector<Future<int>> waiting;
    for (int i = 0; i < 4; ++i) {
      waiting.push_back(rt.submit(TaskOptions{.worker = 1}, [first, with_deadline] {
        if (with_deadline) return first.wait_for(100ms) ? first.get() : 0;
        return first.get();
      }));
    }
    if (with_deadline) {
      for (auto& w : waiting) EXPECT_EQ(w.get(), 0);  // `first` waits at the gate all along
      gate.open();
    } else {
      ASSERT_TRUE(waiting[3].wait_for(kPatience));
      EXPECT_FALSE(waiting[1].ready());
      gate.open();
      for (int i = 0; i < 4; ++i) {
        if (i < 2) {
          EXPECT_EQ(waiting[i].get(), 1);
          continue;
        }
        try {
          static_cast<void>(waiting[i].get());
          ADD_FAILURE() << "waiting task " << i << " found a thread";
        } catch (const hetflow::Error& error) {
          EXPECT_NE(std::string(error.what()).find("Config::spare_threads"), std::string::npos) << error.what();
        }
      }
    }
    EXPECT_EQ(rt.submit([] { return 5; }).get(), 5);
  }
}

// A task waiting for itself, or for the task below it on its thread (its parent, which runs it on
// top while waiting for it), could never go on: refused, saying which.
TEST(NestedWaits, WaitingForItselfOrTheTaskBelowIsRefused) {
  Runtime rt(Config{.ncpus = 1});
  Gate submitted;
  auto self = std::make_shared<Future<std::string>>();
  *self = rt.submit(TaskOptions{.name = "narcissus"}, [&submitted, self]() -> std::string {
    submitted.wait();
    try {
      self->wait();
    } catch (const hetflow::Error& e) {
      return e.what();
    }
    return "";
  });
  submitted.open();
  EXPECT_NE(self->get().find("task 'narcissus' waits for itself"), std::string::npos) << self->get();

  Gate parent_submitted;
  auto parent = std::make_shared<Future<std::string>>();
  *parent = rt.submit(TaskOptions{.name = "parent"}, [&rt, &parent_submitted, parent]() -> std::string {
    parent_submitted.wait();
    auto child = rt.submit(TaskOptions{.name = "child"}, [parent]() -> std::string {
      try {
        parent->wait();
      } catch (const hetflow::Error& e) {
        return e.what();
      }
      return "";
    });
    return child.get();
  });
  parent_submitted.open();
  const std::string refusal = parent->get();
  EXPECT_NE(refusal.find("task 'child' waits for task 'parent', which waits below it on this thread"),
            std::string::npos)
      << refusal;
}

// A task resumes from its wait with what it had: it still runs on a worker of its runtime, and
// still uses its data, while the task that ran on its worker meanwhile did not.
TEST(NestedWaits, AWaitingTaskResumesAsItWas) {
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  auto h = rt.register_variable(x, "x");
  Gate release_blocker;
  auto blocker = rt.submit(TaskOptions{.worker = 1}, [&release_blocker] {
    release_blocker.wait();
    return 2;
  });
  Gate waiting;
  auto waiter = rt.submit(TaskOptions{.data = {RW(h)}, .worker = 0}, [&] {
    waiting.open();
    const int got = blocker.get();
    x = got;
    return rt.on_worker_thread() && rt.current_task_uses(h);
  });
  waiting.wait();
  // Runs on worker 0, lent while `waiter` waits.
  auto meanwhile = rt.submit(TaskOptions{.worker = 0}, [&] {
    const bool uses = rt.current_task_uses(h);
    release_blocker.open();
    return uses;
  });
  ASSERT_TRUE(meanwhile.wait_for(kPatience));
  EXPECT_FALSE(meanwhile.get());
  ASSERT_TRUE(waiter.wait_for(kPatience));
  EXPECT_TRUE(waiter.get());
  EXPECT_EQ(x, 2);
}

// The awaited task was queued before the waiting one started and sits behind it.
TEST(NestedWaits, WaitForATaskQueuedBehind) {
  for (bool until : {false, true}) {
    SCOPED_TRACE(until);
    Runtime rt(Config{.ncpus = 1});
    Gate gate;
    auto behind = std::make_shared<Future<int>>();
    auto outer = rt.submit([&gate, behind, until] {
      gate.wait();
      const bool in_time = until ? behind->wait_until(Clock::now() + kPatience) : behind->wait_for(kPatience);
      return in_time ? behind->get() : -1;
    });
    *behind = rt.submit([] { return 7; });
    gate.open();
    EXPECT_EQ(outer.get(), 7);
  }
}

// The awaited task depends on a write queued behind the waiting task.
TEST(NestedWaits, WaitForATaskWhoseInputIsQueuedBehind) {
  Runtime rt(Config{.ncpus = 1});
  int x = 0;
  auto h = rt.register_variable(x, "x");
  Gate gate;
  auto reader = std::make_shared<Future<int>>();
  auto outer = rt.submit([&gate, reader] {
    gate.wait();
    return reader->wait_for(kPatience) ? reader->get() : -1;
  });
  (void)rt.submit(TaskOptions{.data = {W(h)}}, [&x] { x = 5; });
  *reader = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x + 1; });
  gate.open();
  EXPECT_EQ(outer.get(), 6);
}

// Nothing can run the awaited task until the application releases its acquisition: the wait
// gives up at its deadline instead of helping for ever.
TEST(NestedWaits, DeadlineRespectedWhenTheAwaitedTaskIsBlocked) {
  for (unsigned ncpus : {1u, 2u}) {
    SCOPED_TRACE(ncpus);
    Runtime rt(Config{.ncpus = ncpus});
    int x = 0;
    auto h = rt.register_variable(x, "x");
    auto acquisition = rt.acquire(h, AccessMode::RW);
    auto blocked = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return ++x; });
    auto outer = rt.submit([blocked] {
      const bool past = blocked.wait_until(Clock::now() - 1s);
      const bool soon = blocked.wait_for(10ms);
      return past || soon;
    });
    EXPECT_FALSE(outer.get());
    EXPECT_FALSE(blocked.ready());
    acquisition.release();
    EXPECT_EQ(blocked.get(), 1);
  }
}

// get() on when_all and on a continuation, from inside a task on one worker.
TEST(NestedWaits, WhenAllAndThenInsideATask) {
  Runtime rt(Config{.ncpus = 1});
  auto outer = rt.submit([&rt] {
    auto a = rt.submit([] { return 1; });
    auto b = rt.submit([] { return 2; });
    auto all = hetflow::when_all(a, b);
    if (!all.wait_for(kPatience)) return -1;
    auto doubled = b.then([](int v) { return v * 10; });
    auto any = hetflow::when_any(std::vector<hetflow::FutureBase>{a, doubled});
    (void)any.get();
    return a.get() + doubled.get();
  });
  EXPECT_EQ(outer.get(), 21);
}

// An acquisition from inside a task runs the writer it waits for, queued behind the task.
TEST(NestedWaits, AcquireInsideATaskRunsTheWriterItWaitsFor) {
  Runtime rt(Config{.ncpus = 1});
  int x = 0;
  auto h = rt.register_variable(x, "x");
  Gate gate;
  auto outer = rt.submit([&rt, &gate, h] {
    gate.wait();
    auto acquisition = rt.acquire(h, AccessMode::R);
    return *acquisition.as<int>();
  });
  (void)rt.submit(TaskOptions{.data = {W(h)}}, [&x] { x = 9; });
  gate.open();
  EXPECT_EQ(outer.get(), 9);
}

// A task that acquires data it declared itself would wait for itself: refused, not a hang.
TEST(NestedWaits, AcquiringTheTasksOwnDataIsRefused) {
  Runtime rt(Config{.ncpus = 1});
  int x = 0;
  int y = 0;
  auto hx = rt.register_variable(x, "x");
  auto hy = rt.register_variable(y, "y");
  auto task = rt.submit(TaskOptions{.data = {RW(hx)}}, [&rt, hx, hy] {
    EXPECT_THROW(static_cast<void>(rt.acquire(hx, AccessMode::R)), hetflow::InvalidArgument);
    auto other = rt.acquire(hy, AccessMode::RW);  // data the task does not use is fine
    *other.as<int>() = 5;
  });
  ASSERT_TRUE(task.wait_for(kPatience));
  task.get();
  EXPECT_EQ(y, 5);
}

// A task that waits for a task needing its own data (directly, or through a task that does)
// would wait for ever: a wait without a deadline (wait, get, when_all...) is refused at once,
// naming both tasks; one with a deadline ends at it (false), as it says. The task waited for
// runs once the waiting task has ended.
TEST(NestedWaits, WaitingForATaskThatWaitsForTheWaiterIsRefused) {
  for (int path = 0; path < 4; ++path) {
    SCOPED_TRACE(path);
    Runtime rt(Config{.ncpus = 2});
    int x = 0;
    int y = 0;
    auto hx = rt.register_variable(x, "x");
    auto hy = rt.register_variable(y, "y");
    std::string refusal;
    bool timed_out = false;
    auto child = std::make_shared<Future<int>>();
    auto parent = rt.submit(TaskOptions{.data = {RW(hx)}, .name = "parent"}, [&, child, path] {
      x = 3;
      // The child reads y after a writer of y that reads x: it waits for the parent through it.
      (void)rt.submit(TaskOptions{.data = {R(hx), W(hy)}}, [&] { y = x * 2; });
      *child = rt.submit(TaskOptions{.data = {R(hy)}, .name = "child"}, [&] { return y + 1; });
      try {
        switch (path) {
          case 0: child->wait(); break;
          case 1: timed_out = !child->wait_for(std::chrono::milliseconds(50)); break;
          case 2: timed_out = !child->wait_until(Clock::now() + std::chrono::milliseconds(50)); break;
          default: (void)hetflow::when_all(*child).get(); break;
        }
      } catch (const hetflow::Error& e) {
        refusal = e.what();
      }
    });
    ASSERT_TRUE(parent.wait_for(kPatience));
    parent.get();
    if (path == 1 || path == 2) {
      EXPECT_TRUE(timed_out);
      EXPECT_EQ(refusal, "");
    } else {
      const std::string awaited = path == 3 ? "when_all" : "child";
      EXPECT_NE(refusal.find("task 'parent' waits for task '" + awaited + "'"), std::string::npos) << refusal;
      EXPECT_NE(refusal.find("would never end"), std::string::npos) << refusal;
    }
    EXPECT_EQ(child->get(), 7);
  }
}

// The check as a wait begins looks at a few thousand tasks; one that would never end behind
// more of them is refused once it has lasted a while, after a search over many more (it hung),
// on a worker's thread and on the program's (an acquisition held).
TEST(NestedWaits, AWaitThatNeverEndsBehindThousandsOfTasksIsRefusedAfterAWhile) {
  constexpr int kChain = 5000;
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  auto hx = rt.register_variable(x, "x");
  std::string refusal;
  auto parent = rt.submit(TaskOptions{.data = {RW(hx)}, .name = "parent"}, [&] {
    Future<void> last;
    for (int i = 0; i < kChain; ++i) last = rt.submit(TaskOptions{.data = {RW(hx)}, .name = "link"}, [&x] { ++x; });
    try {
      last.wait();  // the first link waits for the parent
    } catch (const hetflow::Error& e) {
      refusal = e.what();
    }
  });
  ASSERT_TRUE(parent.wait_for(kPatience));
  parent.get();
  EXPECT_NE(refusal.find("task 'parent' waits for task 'link', which cannot start before task 'parent' ends"),
            std::string::npos)
      << refusal;
  rt.wait_all();
  EXPECT_EQ(x, kChain);

  {
    auto held = rt.acquire(hx, AccessMode::RW);
    Future<void> last;
    for (int i = 0; i < kChain; ++i) last = rt.submit(TaskOptions{.data = {RW(hx)}, .name = "link"}, [&x] { ++x; });
    try {
      last.wait();
      ADD_FAILURE() << "a wait behind the thread's own acquisition returned";
    } catch (const hetflow::Error& e) {
      EXPECT_NE(std::string(e.what()).find("which cannot start before this thread releases what it holds"),
                std::string::npos)
          << e.what();
    }
  }
  rt.wait_all();
  EXPECT_EQ(x, 2 * kChain);
}

// when_any's result ends when one of its futures does: a wait for it is refused when none can
// end (each waits for the waiter), and goes on when one can.
TEST(NestedWaits, WaitingForWhenAnyOfTasksThatCannotEndIsRefused) {
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  auto hx = rt.register_variable(x, "x");
  std::string refusal;
  std::size_t first = 99;
  auto outer = rt.submit(TaskOptions{.data = {RW(hx)}, .name = "outer"}, [&] {
    auto blocked = rt.submit(TaskOptions{.data = {RW(hx)}, .name = "blocked"}, [&] { ++x; });
    try {
      (void)hetflow::when_any(blocked).get();
    } catch (const hetflow::Error& e) {
      refusal = e.what();
    }
    auto free = rt.submit([] { return 1; });
    first = hetflow::when_any(blocked, free).get();
  });
  ASSERT_TRUE(outer.wait_for(kPatience));
  outer.get();
  EXPECT_NE(refusal.find("waiting for the result of when_any would never end"), std::string::npos) << refusal;
  EXPECT_NE(refusal.find("task 'outer' waits for task 'blocked'"), std::string::npos) << refusal;
  EXPECT_EQ(first, 1U);

  // The same from the program, behind what it holds.
  Future<void> writer;
  {
    auto held = rt.acquire(hx, AccessMode::RW);
    writer = rt.submit(TaskOptions{.data = {RW(hx)}, .name = "writer"}, [&] { ++x; });
    try {
      (void)hetflow::when_any(writer).get();
      ADD_FAILURE() << "the wait behind the program's own acquisition went on";
    } catch (const hetflow::Error& e) {
      EXPECT_NE(std::string(e.what()).find("release it first"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(hetflow::when_any(writer).get(), 0U);
  rt.unregister(hx);
  EXPECT_EQ(x, 2);
}

// The same from a task run while an outer task waits: the outer task holds its data too.
TEST(NestedWaits, WaitingForATaskThatWaitsForAnOuterWaiterIsRefused) {
  Runtime rt(Config{.ncpus = 1});
  int x = 0;
  auto hx = rt.register_variable(x, "x");
  std::string refusal;
  auto reader = std::make_shared<Future<int>>();
  auto outer = rt.submit(TaskOptions{.data = {W(hx)}, .name = "outer"}, [&, reader] {
    x = 4;
    *reader = rt.submit(TaskOptions{.data = {R(hx)}, .name = "reader"}, [&] { return x; });
    auto inner = rt.submit(TaskOptions{.name = "inner"}, [&, reader] {
      try {
        reader->wait();
      } catch (const hetflow::Error& e) {
        refusal = e.what();
      }
    });
    inner.get();  // one worker: this worker runs it while it waits
  });
  ASSERT_TRUE(outer.wait_for(kPatience));
  outer.get();
  EXPECT_NE(refusal.find("task 'inner' waits for task 'reader', which cannot start before task 'outer' ends"),
            std::string::npos)
      << refusal;
  EXPECT_EQ(reader->get(), 4);
}

// Three levels of tasks that each wait with a deadline for a child, on one and two workers.
TEST(NestedWaits, NestedWaitsWithDeadlines) {
  for (unsigned ncpus : {1u, 2u}) {
    SCOPED_TRACE(ncpus);
    Runtime rt(Config{.ncpus = ncpus});
    struct Level {
      static int run(Runtime& rt, int depth) {
        if (depth == 0) return 1;
        auto child = rt.submit([&rt, depth] { return run(rt, depth - 1); });
        return child.wait_for(kPatience) ? child.get() + 1 : -100;
      }
    };
    std::vector<Future<int>> top;
    for (int i = 0; i < 20; ++i) top.push_back(rt.submit([&rt] { return Level::run(rt, 3); }));
    for (auto& f : top) EXPECT_EQ(f.get(), 4);
  }
}

// Whether the future failed with an error saying that its wait, or one it waited on, closed a
// cycle of waits.
bool failed_on_a_wait_cycle(const Future<int>& future) {
  try {
    static_cast<void>(future.get());
  } catch (const hetflow::Error& error) {
    const std::string text = error.what();
    return text.find("which waits for task") != std::string::npos &&
           text.find("the waits would never end") != std::string::npos;
  }
  return false;
}

// Two tasks on two workers, each waiting inside its body for the other: the one that blocks
// last would close the cycle, and its wait fails saying so (both hung), failing the other's too.
TEST(NestedWaits, TasksWaitingForEachOtherOnTwoThreadsFailSayingWhy) {
  Runtime rt(Config{.ncpus = 2});
  hetflow::test::Signal started;
  Gate go;
  Future<int> first;
  Future<int> second;
  const auto wait_for = [&](const Future<int>& other) {
    started.raise();
    go.wait();
    return other.get() + 1;
  };
  first = rt.submit(TaskOptions{.name = "first", .worker = 0}, [&] { return wait_for(second); });
  second = rt.submit(TaskOptions{.name = "second", .worker = 1}, [&] { return wait_for(first); });
  started.wait_for_count(2);
  go.open();
  ASSERT_TRUE(first.wait_for(kPatience));
  ASSERT_TRUE(second.wait_for(kPatience));
  EXPECT_TRUE(failed_on_a_wait_cycle(first));
  EXPECT_TRUE(failed_on_a_wait_cycle(second));
}

// Two tasks on two workers, each writing its own variable, each waiting inside its body for a
// child that reads the other's: each child waits for the other parent through its data, so the
// parent that blocks last would close the cycle. Its wait fails saying so (both hung), and the
// other's child, reading what the failed parent wrote, fails too.
TEST(NestedWaits, ACycleOfWaitsThroughDataOnTwoThreadsFailsSayingWhy) {
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  int y = 0;
  auto hx = rt.register_variable(x, "x");
  auto hy = rt.register_variable(y, "y");
  hetflow::test::Signal started;
  Gate go;
  const auto parent = [&](int& mine, hetflow::DataHandle& others, int& other_value, const char* child_name) {
    mine = 1;
    started.raise();
    go.wait();
    auto child =
        rt.submit(TaskOptions{.data = {R(others)}, .name = child_name}, [&other_value] { return other_value; });
    return child.get() + 1;
  };
  auto first = rt.submit(TaskOptions{.data = {W(hx)}, .name = "first", .worker = 0},
                         [&] { return parent(x, hy, y, "first's child"); });
  auto second = rt.submit(TaskOptions{.data = {W(hy)}, .name = "second", .worker = 1},
                          [&] { return parent(y, hx, x, "second's child"); });
  started.wait_for_count(2);
  go.open();
  ASSERT_TRUE(first.wait_for(kPatience));
  ASSERT_TRUE(second.wait_for(kPatience));
  EXPECT_TRUE(failed_on_a_wait_cycle(first) || failed_on_a_wait_cycle(second));
  EXPECT_THROW(first.get(), hetflow::Error);
  EXPECT_THROW(second.get(), hetflow::Error);
  rt.unregister(hx);
  rt.unregister(hy);
}

// On one worker, p polls a slow child with a short deadline and so goes on without its worker
// (the spare runs the child); then q, run by the spare, waits for p, and p for q. Waits of a
// task without its worker were not known as blocked: whichever came second hung.
TEST(NestedWaits, ACycleThroughATaskThatWentOnWithoutItsWorkerFailsSayingWhy) {
  Runtime rt(Config{.ncpus = 1});
  Gate p_known;
  Future<int> p;
  auto q = std::make_shared<Future<int>>();
  p = rt.submit(TaskOptions{.name = "p"}, [&, q] {
    auto slow = rt.submit([] {
      std::this_thread::sleep_for(100ms);
      return 1;
    });
    while (!slow.wait_for(5ms)) {
    }
    *q = rt.submit(TaskOptions{.name = "q"}, [&] {
      p_known.wait();
      return p.get() + 1;
    });
    std::this_thread::sleep_for(100ms);  // q waits for p by now, most likely (either order fails)
    return q->get() + slow.get();
  });
  p_known.open();
  ASSERT_TRUE(p.wait_for(kPatience));
  ASSERT_TRUE(q->wait_for(kPatience));
  EXPECT_TRUE(failed_on_a_wait_cycle(p) || failed_on_a_wait_cycle(*q));
  EXPECT_THROW(p.get(), hetflow::Error);
  EXPECT_THROW(q->get(), hetflow::Error);
}

// Three tasks of two runtimes: x (on A) waits for y (on B), which waits for z (on A, on the
// spare thread x lends A's only worker to), which waits for x.
TEST(NestedWaits, AWaitCycleAcrossRuntimesFailsSayingWhy) {
  Runtime a(Config{.ncpus = 1});
  Runtime b(Config{.ncpus = 1});
  Gate go;
  Future<int> x;
  Future<int> y;
  Future<int> z;
  x = a.submit(TaskOptions{.name = "x"}, [&] {
    go.wait();
    return y.get() + 1;
  });
  y = b.submit(TaskOptions{.name = "y"}, [&] {
    go.wait();
    return z.get() + 1;
  });
  z = a.submit(TaskOptions{.name = "z"}, [&] { return x.get() + 1; });
  go.open();
  for (const Future<int>* future : {&x, &y, &z}) {
    ASSERT_TRUE(future->wait_for(kPatience));
    EXPECT_TRUE(failed_on_a_wait_cycle(*future));
  }
}

// A task of runtime A waiting for a task of runtime B runs A's tasks meanwhile: B's task may
// wait for one of A's (one worker each: it waited for ever).
TEST(NestedWaits, WaitingForAnotherRuntimesTaskRunsThisRuntimesTasks) {
  Runtime a(Config{.ncpus = 1});
  Runtime b(Config{.ncpus = 1});
  Gate a_waits;
  Gate b_may_wait;
  Future<int> later_on_a;
  auto on_b = b.submit([&b_may_wait, &later_on_a] {
    b_may_wait.wait();
    return later_on_a.wait_for(kPatience) ? later_on_a.get() + 1 : -1;
  });
  auto on_a = a.submit([&a_waits, &on_b] {
    a_waits.open();
    return on_b.wait_for(kPatience) ? on_b.get() + 1 : -1;
  });
  a_waits.wait();                            // on_a holds A's only worker
  later_on_a = a.submit([] { return 40; });  // queued on A
  b_may_wait.open();
  ASSERT_TRUE(on_a.wait_for(kPatience));
  EXPECT_EQ(on_a.get(), 42);
}

}  // namespace
