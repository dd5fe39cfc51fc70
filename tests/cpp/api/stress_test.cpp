// Stress: random task graphs over shared variables (at least 100,000 tasks in a normal build),
// checked exactly against a sequential run of the same tasks on plain memory.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "random_dag.hpp"
#include "test_support.hpp"

namespace {

using hetflow::AccessMode;
using hetflow::Acquisition;
using hetflow::DataHandle;
using hetflow::FutureBase;
using hetflow::Runtime;
using hetflow::test::DagTask;

constexpr std::size_t kHandles = 64;
constexpr std::size_t kRounds = 10;

std::size_t count_mismatches(const std::vector<std::uint64_t>& got, const std::vector<std::uint64_t>& want,
                             std::size_t* first) {
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i] && mismatches++ == 0) *first = i;
  }
  return mismatches;
}

TEST(Stress, RandomDagMatchesSequentialRun) {
  const std::size_t total = hetflow::test::scaled(100'000, 2'000);
  if (hetflow::test::test_scale() >= 1.0) {
    ASSERT_GE(total, 100'000u);
  }
  const std::size_t per_round = total / kRounds;

  std::vector<std::uint64_t> values(kHandles);
  std::vector<std::uint64_t> model(kHandles);
  std::mt19937_64 rng(20240601);
  std::vector<DagTask> dag;
  std::vector<std::uint64_t> digests;
  std::vector<std::uint64_t> expected;
  const hetflow::Codelet codelet = hetflow::test::dag_codelet(dag, digests);
  Runtime rt;  // after the data its tasks use: on an early return, it waits for them first
  std::vector<DataHandle> handles;
  for (std::size_t i = 0; i < kHandles; ++i) {
    values[i] = model[i] = i + 1;
    handles.push_back(rt.register_variable(values[i], hetflow::test::numbered("v", i)));
  }

  std::size_t submitted = 0;

  for (std::size_t round = 0; round < kRounds; ++round) {
    dag = hetflow::test::random_dag(rng, per_round, kHandles);
    digests.assign(per_round, 0);
    expected.assign(per_round, 0);
    std::vector<FutureBase> recent(8);  // for explicit dependencies, which add order but change nothing
    for (std::size_t i = 0; i < per_round; ++i) {
      const DagTask& t = dag[i];
      std::vector<FutureBase> after;
      if (i % 16 == 5) {
        const FutureBase& earlier = recent[rng() % recent.size()];
        if (earlier.valid()) after.push_back(earlier);
      }
      auto f = hetflow::test::insert_dag_task(rt, codelet, t, handles, std::move(after));
      if (i % 4 == 0) recent[(i / 4) % recent.size()] = f;
      expected[i] = hetflow::test::apply_sequentially(t, model);
      ++submitted;
      // Now and then, look at one variable from the host while the graph runs: the acquisition
      // sees exactly the tasks submitted before it.
      if (i % (per_round / 4 + 1) == per_round / 8) {
        const std::size_t h = rng() % kHandles;
        Acquisition a = rt.acquire(handles[h], AccessMode::R);
        ASSERT_EQ(*a.as<std::uint64_t>(), model[h]) << "variable " << h << " in round " << round << " after task " << i;
      }
    }
    rt.wait_all();
    std::size_t first = 0;
    const std::size_t wrong = count_mismatches(digests, expected, &first);
    ASSERT_EQ(wrong, 0u) << "round " << round << ": " << wrong
                         << " tasks saw other data than in the sequential run; first: task " << first;
    for (std::size_t h = 0; h < kHandles; ++h)
      ASSERT_EQ(values[h], model[h]) << "variable " << h << " after round " << round;
  }
  for (const auto& h : handles) rt.unregister(h);
  EXPECT_EQ(values, model);
  EXPECT_EQ(submitted, per_round * kRounds);
}

TEST(Stress, IndependentTasksFromSeveralThreads) {
  const std::size_t per_thread = hetflow::test::scaled(20'000, 1'000);
  Runtime rt;
  std::vector<std::thread> threads;
  std::vector<std::uint64_t> slots(3 * per_thread, 0);
  for (std::size_t t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < per_thread; ++i) {
        std::uint64_t* slot = &slots[t * per_thread + i];
        (void)rt.submit([slot, i] { *slot = i * i; });
      }
    });
  }
  for (auto& thread : threads) thread.join();
  rt.wait_all();
  for (std::size_t t = 0; t < 3; ++t) {
    for (std::size_t i = 0; i < per_thread; ++i) ASSERT_EQ(slots[t * per_thread + i], i * i);
  }
}

}  // namespace
