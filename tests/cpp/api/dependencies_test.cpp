// Dependencies inferred from data accesses in submission order (read after write, write after
// read, write after write), explicit ones, and how failures travel along them.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hetflow::AccessMode;
using hetflow::Config;
using hetflow::DependencyError;
using hetflow::Future;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskOptions;
using hetflow::TaskStatus;
using hetflow::W;

TEST(Dependencies, ReadAfterWrite) {
  Runtime rt;
  for (int round = 0; round < 50; ++round) {
    int x = 0;
    auto h = rt.register_variable(x);
    (void)rt.submit(TaskOptions{.data = {W(h)}}, [&x, round] {
      if (round % 10 == 0) std::this_thread::sleep_for(1ms);
      x = round + 1;
    });
    auto reader = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
    EXPECT_EQ(reader.get(), round + 1);
    rt.unregister(h);
  }
}

TEST(Dependencies, WriteAfterRead) {
  Runtime rt;
  for (int round = 0; round < 50; ++round) {
    int x = 1;
    auto h = rt.register_variable(x);
    std::vector<Future<int>> readers;
    for (int i = 0; i < 3; ++i) {
      readers.push_back(rt.submit(TaskOptions{.data = {R(h)}}, [&x, round] {
        if (round % 10 == 0) std::this_thread::sleep_for(1ms);
        return x;
      }));
    }
    (void)rt.submit(TaskOptions{.data = {W(h)}}, [&x] { x = 2; });
    for (auto& r : readers) EXPECT_EQ(r.get(), 1);
    rt.unregister(h);
    EXPECT_EQ(x, 2);
  }
}

TEST(Dependencies, WriteAfterWrite) {
  Runtime rt;
  for (int round = 0; round < 50; ++round) {
    std::vector<int> log;  // written only by the tasks that write x, so ordered by x
    int x = 0;
    auto hx = rt.register_variable(x);
    for (int i = 1; i <= 5; ++i) {
      (void)rt.submit(TaskOptions{.data = {W(hx)}}, [&x, &log, i, round] {
        if ((i + round) % 7 == 0) std::this_thread::sleep_for(500us);
        log.push_back(i);
        x = i;
      });
    }
    rt.unregister(hx);
    EXPECT_EQ(x, 5);
    EXPECT_EQ(log, (std::vector<int>{1, 2, 3, 4, 5}));
  }
}

TEST(Dependencies, ReadersRunConcurrently) {
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  auto h = rt.register_variable(x);
  // Each reader waits until both have started: they only finish if they run at the same time.
  std::atomic<int> started{0};
  auto reader = [&started] {
    started.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (started.load() < 2) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  };
  auto a = rt.submit(TaskOptions{.data = {R(h)}}, reader);
  auto b = rt.submit(TaskOptions{.data = {R(h)}}, reader);
  EXPECT_TRUE(a.get());
  EXPECT_TRUE(b.get());
}

TEST(Dependencies, ChainOfReadWrites) {
  Runtime rt;
  std::uint64_t x = 1;
  auto h = rt.register_variable(x);
  const int n = static_cast<int>(hetflow::test::scaled(2000, 200));
  std::uint64_t expected = 1;
  for (int i = 0; i < n; ++i) {
    (void)rt.submit(TaskOptions{.data = {RW(h)}},
                    [&x, i] { x = x * 6364136223846793005ull + static_cast<unsigned>(i); });
    expected = expected * 6364136223846793005ull + static_cast<unsigned>(i);
  }
  EXPECT_EQ(*rt.acquire(h, AccessMode::R).as<std::uint64_t>(), expected);
}

TEST(Dependencies, TwoHandlesInterleaved) {
  // a += b; b += a; ... with reads and writes crossing between the two handles.
  Runtime rt;
  long a = 1, b = 1;
  auto ha = rt.register_variable(a);
  auto hb = rt.register_variable(b);
  long ea = 1, eb = 1;
  for (int i = 0; i < 40; ++i) {
    if (i % 2 == 0) {
      (void)rt.submit(TaskOptions{.data = {RW(ha), R(hb)}}, [&a, &b] { a += b; });
      ea += eb;
    } else {
      (void)rt.submit(TaskOptions{.data = {R(ha), RW(hb)}}, [&a, &b] { b += a; });
      eb += ea;
    }
  }
  rt.wait_all();
  EXPECT_EQ(a, ea);
  EXPECT_EQ(b, eb);
}

TEST(Dependencies, ExplicitAfter) {
  Runtime rt;
  std::vector<int> order;
  std::vector<Future<void>> chain;
  for (int i = 0; i < 200; ++i) {
    TaskOptions options;
    if (!chain.empty()) options.after = {chain.back()};
    chain.push_back(rt.submit(options, [&order, i] { order.push_back(i); }));
  }
  chain.back().get();
  ASSERT_EQ(order.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[i], i);

  // Fan-in: one task after several.
  std::atomic<int> count{0};
  std::vector<hetflow::FutureBase> parts;
  for (int i = 0; i < 8; ++i) {
    parts.push_back(rt.submit([&count] {
      std::this_thread::sleep_for(200us);
      count.fetch_add(1);
    }));
  }
  auto joined = rt.submit(TaskOptions{.after = parts}, [&count] { return count.load(); });
  EXPECT_EQ(joined.get(), 8);
}

TEST(Dependencies, ExplicitAfterOnFinishedTask) {
  Runtime rt;
  auto first = rt.submit([] { return 1; });
  first.wait();
  auto second = rt.submit(TaskOptions{.after = {first}}, [] { return 2; });
  EXPECT_EQ(second.get(), 2);
}

TEST(Dependencies, SameHandleTwiceDoesNotDeadlock) {
  Runtime rt;
  int x = 1;
  auto h = rt.register_variable(x);
  (void)rt.submit(TaskOptions{.data = {W(h)}}, [&x] {
    std::this_thread::sleep_for(1ms);
    x = 2;
  });
  // Read and written by one task: it waits for the earlier writer and later tasks wait for it.
  auto both = rt.submit(TaskOptions{.data = {R(h), W(h)}}, [&x] {
    x = x * 10;
    return x;
  });
  auto again = rt.submit(TaskOptions{.data = {RW(h), RW(h), R(h)}}, [&x] { return x += 1; });
  auto reader = rt.submit(TaskOptions{.data = {R(h), R(h)}}, [&x] { return x; });
  EXPECT_TRUE(reader.wait_for(60s));
  EXPECT_EQ(both.get(), 20);
  EXPECT_EQ(again.get(), 21);
  EXPECT_EQ(reader.get(), 21);
}

TEST(Dependencies, SameHandleTwiceKeepsBufferPositions) {
  Runtime rt;
  int x = 3;
  int y = 4;
  auto hx = rt.register_variable(x, "x");
  auto hy = rt.register_variable(y, "y");
  hetflow::Codelet codelet{.name = "positions", .cpu = [](hetflow::TaskContext& ctx) {
                             if (ctx.buffer_count() != 3) throw std::runtime_error("wrong buffer count");
                             // buffer(i) is the i-th handle named, repeated ones included.
                             int* first = ctx.buffer(0).as<int>();
                             int* second = ctx.buffer(1).as<int>();
                             int* third = ctx.buffer(2).as<int>();
                             if (first != third) throw std::runtime_error("buffers 0 and 2 differ");
                             *second = *first * 100 + *second;
                           }};
  EXPECT_NO_THROW(rt.insert(codelet, {.data = {R(hx), RW(hy), W(hx)}}).get());
  EXPECT_EQ(*rt.acquire(hy, AccessMode::R).as<int>(), 304);
}

TEST(Dependencies, ManyHandlesEachNamedTwice) {
  // More handles than are merged pairwise: each named as R, then (in reverse order) as W.
  Runtime rt;
  constexpr std::size_t kHandles = 300;
  std::vector<long> values(kHandles, 0);
  std::vector<hetflow::DataHandle> handles;
  for (auto& value : values) handles.push_back(rt.register_variable(value));
  for (std::size_t k = 0; k < kHandles; ++k) {
    (void)rt.submit(TaskOptions{.data = {W(handles[k])}}, [k](hetflow::TaskContext& ctx) {
      std::this_thread::sleep_for(k % 50 == 0 ? 2ms : 0ms);
      *ctx.buffer(0).as<long>() = static_cast<long>(k);
    });
  }
  std::vector<hetflow::DataAccess> twice;
  for (const auto& handle : handles) twice.push_back(R(handle));
  for (auto it = handles.rbegin(); it != handles.rend(); ++it) twice.push_back(W(*it));
  auto both = rt.submit(TaskOptions{.data_list = twice}, [](hetflow::TaskContext& ctx) {
    const std::size_t n = ctx.buffer_count() / 2;
    for (std::size_t k = 0; k < n; ++k) {
      if (ctx.buffer(k).ptr != ctx.buffer(2 * n - 1 - k).ptr) throw std::runtime_error("buffer positions");
      // It waited for the writers above (read), and readers below wait for it (write).
      if (*ctx.buffer(k).as<long>() != static_cast<long>(k)) throw std::runtime_error("ran before a writer");
      *ctx.buffer(k).as<long>() += 1000;
    }
  });
  std::vector<hetflow::Future<long>> readers;
  for (const auto& handle : handles) {
    readers.push_back(rt.submit(TaskOptions{.data = {R(handle)}},
                                [](hetflow::TaskContext& ctx) { return *ctx.buffer(0).as<long>(); }));
  }
  EXPECT_NO_THROW(both.get());
  for (std::size_t k = 0; k < kHandles; ++k) EXPECT_EQ(readers[k].get(), static_cast<long>(k) + 1000) << k;
}

TEST(Dependencies, DataListBuiltAtRunTime) {
  Runtime rt;
  std::vector<long> values(10, 1);
  std::vector<hetflow::DataHandle> handles;
  for (auto& v : values) handles.push_back(rt.register_variable(v));
  long total = 0;
  auto htotal = rt.register_variable(total, "total");
  // Each round: every value doubles, then one task sums them all (read through a run-time list).
  for (int round = 0; round < 20; ++round) {
    for (auto& h : handles) {
      (void)rt.submit(TaskOptions{.data = {RW(h)}}, [](hetflow::TaskContext& ctx) { *ctx.buffer(0).as<long>() *= 2; });
    }
    std::vector<hetflow::DataAccess> reads;
    for (auto& h : handles) reads.push_back(R(h));
    (void)rt.submit(TaskOptions{.data = {RW(htotal)}, .data_list = reads}, [](hetflow::TaskContext& ctx) {
      long sum = 0;
      for (std::size_t i = 1; i < ctx.buffer_count(); ++i) sum += *ctx.buffer(i).as<long>();
      *ctx.buffer(0).as<long>() += sum;
    });
  }
  long expected = 0;
  for (int round = 1; round <= 20; ++round) expected += 10L << round;
  EXPECT_EQ(*rt.acquire(htotal, AccessMode::R).as<long>(), expected);
}

TEST(Dependencies, SameHandleInDataAndDataList) {
  Runtime rt;
  int x = 2;
  auto h = rt.register_variable(x, "x");
  const std::vector<hetflow::DataAccess> again{W(h)};
  auto f = rt.submit(TaskOptions{.data = {R(h)}, .data_list = again}, [](hetflow::TaskContext& ctx) {
    if (ctx.buffer_count() != 2 || ctx.buffer(0).ptr != ctx.buffer(1).ptr) throw std::runtime_error("buffers");
    *ctx.buffer(1).as<int>() = *ctx.buffer(0).as<int>() * 3;
  });
  auto reader = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
  EXPECT_NO_THROW(f.get());
  EXPECT_EQ(reader.get(), 6);
}

TEST(Dependencies, FailureTravelsAlongData) {
  Runtime rt;
  int x = 0;
  int y = 0;
  auto hx = rt.register_variable(x, "x");
  auto hy = rt.register_variable(y, "y");
  auto bad = rt.submit(TaskOptions{.data = {W(hx)}, .name = "bad writer"}, [] { throw std::logic_error("oops"); });
  auto raw = rt.submit(TaskOptions{.data = {R(hx), W(hy)}, .name = "raw"}, [] {});
  auto raw_of_raw = rt.submit(TaskOptions{.data = {RW(hy)}, .name = "raw of raw"}, [] {});
  auto unrelated = rt.submit(TaskOptions{.name = "unrelated"}, [] { return 1; });
  for (hetflow::FutureBase* f : std::initializer_list<hetflow::FutureBase*>{&raw, &raw_of_raw}) {
    f->wait();
    ASSERT_EQ(f->status(), TaskStatus::failed) << f->name();
    try {
      std::rethrow_exception(f->error());
    } catch (const DependencyError& e) {
      EXPECT_EQ(e.root_task(), "bad writer");
      EXPECT_THROW(std::rethrow_exception(e.root_cause()), std::logic_error);
    }
  }
  EXPECT_THROW(bad.get(), std::logic_error);
  EXPECT_EQ(unrelated.get(), 1);
}

// Tasks on several handles submitted from two threads at once: each handle orders them, and
// those orders must agree (else two tasks each wait for the other and wait_all never returns).
// Each task writes one handle and reads the two next, rotating, so consecutive tasks of the two
// threads share handles in both directions.
TEST(Dependencies, TasksOnSeveralHandlesFromTwoThreadsNeverWaitForEachOther) {
  for (int rep = 0; rep < 20; ++rep) {
    Runtime rt(Config{.ncpus = 4});
    std::vector<long> values(3, 0);
    std::vector<hetflow::DataHandle> handles;
    for (long& v : values) handles.push_back(rt.register_variable(v));
    std::atomic<long> runs{0};
    const auto submit_many = [&](int seed) {
      for (int k = 0; k < 300; ++k) {
        const std::vector<hetflow::DataAccess> accesses{RW(handles[(seed + k) % 3]), R(handles[(seed + k + 1) % 3]),
                                                        R(handles[(seed + k + 2) % 3])};
        rt.submit(TaskOptions{.data_list = accesses}, [&runs] { ++runs; });
      }
    };
    std::thread first(submit_many, 1);
    std::thread second(submit_many, 2);
    first.join();
    second.join();
    rt.wait_all();  // hung before the fix
    EXPECT_EQ(runs.load(), 600);
  }
}

// Part accesses (PartR, PartW: through a view inside the handle's data) do not wait for each
// other; whole accesses wait for them and they for whole ones, except reads for reads.
namespace part_accesses {

// A task that returns whether `count` such tasks were running at once within 30 s.
auto meeting(std::atomic<int>& started, int count) {
  return [&started, count] {
    started.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (started.load() < count) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  };
}

TEST(Dependencies, PartAccessesRunTogetherAndPartReadsWithWholeReads) {
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  auto h = rt.register_variable(x);
  for (const auto& [first, second] :
       {std::pair{AccessMode::PartW, AccessMode::PartW}, std::pair{AccessMode::PartR, AccessMode::PartW},
        std::pair{AccessMode::PartW, AccessMode::PartR}, std::pair{AccessMode::R, AccessMode::PartR},
        std::pair{AccessMode::PartR, AccessMode::R}}) {
    SCOPED_TRACE(std::string(hetflow::access_mode_name(first)) + " then " +
                 std::string(hetflow::access_mode_name(second)));
    std::atomic<int> started{0};
    auto a = rt.submit(TaskOptions{.data = {{h, first}}}, meeting(started, 2));
    auto b = rt.submit(TaskOptions{.data = {{h, second}}}, meeting(started, 2));
    EXPECT_TRUE(a.get());
    EXPECT_TRUE(b.get());
  }
}

// Each task notes when it starts and ends on one clock; `later` must start after `earlier` ends.
struct Span {
  int start = -1;
  int end = -1;
};

TEST(Dependencies, WholeAccessesAndPartAccessesWaitForEachOther) {
  Runtime rt(Config{.ncpus = 4});
  for (int round = 0; round < 20; ++round) {
    int x = 0;
    auto h = rt.register_variable(x);
    std::atomic<int> clock{0};
    std::vector<Span> spans(9);
    const std::vector<AccessMode> modes{AccessMode::W, AccessMode::PartW, AccessMode::PartW,
                                        AccessMode::R, AccessMode::PartW, AccessMode::PartR,
                                        AccessMode::W, AccessMode::PartR, AccessMode::RW};
    for (std::size_t i = 0; i < modes.size(); ++i) {
      (void)rt.submit(TaskOptions{.data = {{h, modes[i]}}}, [&clock, &spans, i, round] {
        spans[i].start = clock.fetch_add(1);
        if ((i + static_cast<std::size_t>(round)) % 3 == 0) std::this_thread::sleep_for(1ms);
        spans[i].end = clock.fetch_add(1);
      });
    }
    rt.unregister(h);
    // W -> both part writes -> R -> part write -> W (after the part read too) -> part read -> RW
    for (const auto& [earlier, later] : std::vector<std::pair<int, int>>{
             {0, 1}, {0, 2}, {1, 3}, {2, 3}, {3, 4}, {0, 5}, {4, 6}, {5, 6}, {6, 7}, {7, 8}}) {
      EXPECT_LT(spans[earlier].end, spans[later].start) << "task " << later << " did not wait for " << earlier;
    }
  }
}

TEST(Dependencies, APartAccessNamedWithAWholeOneIsWhole) {
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  auto h = rt.register_variable(x);
  std::atomic<int> clock{0};
  Span part;
  Span both;
  (void)rt.submit(TaskOptions{.data = {hetflow::PartW(h)}}, [&] {
    part.start = clock.fetch_add(1);
    std::this_thread::sleep_for(20ms);
    part.end = clock.fetch_add(1);
  });
  (void)rt.submit(TaskOptions{.data = {hetflow::PartW(h), R(h)}}, [&] {
    both.start = clock.fetch_add(1);
    both.end = clock.fetch_add(1);
  });
  rt.wait_all();
  EXPECT_LT(part.end, both.start);
}

TEST(Dependencies, FailuresTravelFromPartWritesToWholeReadsOnly) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x, "x");
  const auto expect_failed_by = [](hetflow::FutureBase& future, const std::string& root) {
    future.wait();
    ASSERT_EQ(future.status(), TaskStatus::failed) << future.name();
    try {
      std::rethrow_exception(future.error());
    } catch (const DependencyError& e) {
      EXPECT_EQ(e.root_task(), root);
    }
  };
  auto bad_part =
      rt.submit(TaskOptions{.data = {hetflow::PartW(h)}, .name = "bad part"}, [] { throw std::logic_error("part"); });
  auto part_read = rt.submit(TaskOptions{.data = {hetflow::PartR(h)}}, [] { return 1; });
  auto whole_read = rt.submit(TaskOptions{.data = {R(h)}, .name = "whole read"}, [] { return 2; });
  EXPECT_EQ(part_read.get(), 1);
  expect_failed_by(whole_read, "bad part");
  auto rewrite = rt.submit(TaskOptions{.data = {W(h)}}, [&x] { x = 5; });
  auto read_again = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
  EXPECT_EQ(read_again.get(), 5);

  auto bad_whole = rt.submit(TaskOptions{.data = {W(h)}, .name = "bad whole"}, [] { throw std::logic_error("whole"); });
  auto part_write = rt.submit(TaskOptions{.data = {hetflow::PartW(h)}, .name = "part write"}, [] {});
  auto part_read_after = rt.submit(TaskOptions{.data = {hetflow::PartR(h)}}, [] {});
  expect_failed_by(part_write, "bad whole");
  expect_failed_by(part_read_after, "bad whole");
  EXPECT_THROW(bad_part.get(), std::logic_error);
  EXPECT_NO_THROW(rewrite.get());
}

TEST(Dependencies, PartModesAreForTasksOnly) {
  EXPECT_EQ(hetflow::parse_access_mode("part-r"), AccessMode::PartR);
  EXPECT_EQ(hetflow::parse_access_mode("PART-W"), AccessMode::PartW);
  EXPECT_EQ(hetflow::access_mode_name(AccessMode::PartW), "PART-W");
  EXPECT_TRUE(hetflow::partial(AccessMode::PartR));
  EXPECT_FALSE(hetflow::partial(AccessMode::Redux));
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x);
  EXPECT_THROW((void)rt.acquire(h, AccessMode::PartR), hetflow::InvalidArgument);
  EXPECT_THROW((void)rt.acquire(h, AccessMode::PartW), hetflow::InvalidArgument);
  EXPECT_THROW((void)rt.submit(TaskOptions{.data = {{h, static_cast<AccessMode>(8)}}}, [] {}),
               hetflow::InvalidArgument);
  EXPECT_FALSE(hetflow::conflict(AccessMode::PartW, AccessMode::PartW));
  EXPECT_FALSE(hetflow::conflict(AccessMode::PartR, AccessMode::R));
  EXPECT_TRUE(hetflow::conflict(AccessMode::PartW, AccessMode::R));
  EXPECT_TRUE(hetflow::conflict(AccessMode::R, AccessMode::PartW));
  // What an acquisition inside a part access would wait for: only a whole access, or a read by one.
  auto seen = rt.submit(TaskOptions{.data = {hetflow::PartW(h)}}, [&rt, h] {
    return std::vector<bool>{rt.current_task_uses(h, AccessMode::PartW), rt.current_task_uses(h, AccessMode::R),
                             rt.current_task_uses(h)};
  });
  EXPECT_EQ(seen.get(), (std::vector<bool>{false, true, true}));
}

TEST(Dependencies, ForgettingAFailureLetsLaterReadersRead) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x, "x");
  auto bad = rt.submit(TaskOptions{.data = {RW(h)}, .name = "bad"}, [] { throw std::logic_error("bad"); });
  EXPECT_THROW(bad.get(), std::logic_error);
  rt.forget_failure(h);
  EXPECT_NO_THROW(rt.submit(TaskOptions{.data = {R(h)}}, [] {}).get());
}

}  // namespace part_accesses

}  // namespace
