// Failure injection: random task graphs where some tasks throw and some are cancelled. The test
// replays the graph in submission order and works out which tasks read (R or RW) a version of a
// variable that a failed or cancelled task was to write, and checks that exactly those fail
// with DependencyError naming one of their failed ancestors, that the failing ones fail with
// their own exception, and that all the others run, and run right. A failed or cancelled reader
// leaves the variable as it was; a write-only access starts a new version.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "random_dag.hpp"
#include "test_support.hpp"

namespace {

using hetflow::CancelledError;
using hetflow::DataHandle;
using hetflow::DependencyError;
using hetflow::Future;
using hetflow::Runtime;
using hetflow::TaskStatus;
using hetflow::test::DagTask;
using hetflow::test::InjectedFailure;

constexpr std::size_t kHandles = 64;
constexpr std::size_t kTasksPerRound = 300;
constexpr double kFailureRate = 1.0 / 250;
constexpr unsigned kCancelEvery = 97;  // a cancellation attempt right after submitting every 97th task

enum class Outcome { done, own_failure, dependency_failure, cancelled };

struct Expectation {
  Outcome outcome = Outcome::done;
  std::vector<std::uint32_t> roots;  // for a dependency failure: the failed tasks it may name
};

// Works out each task's outcome from the graph, the injected failures, and which cancellations
// took effect.
std::vector<Expectation> expected_outcomes(const std::vector<DagTask>& dag, const std::vector<bool>& cancelled) {
  std::vector<Expectation> out(dag.size());
  // The task whose output each variable holds (-1: the initial value); readers do not change it.
  std::vector<int> version_of(kHandles, -1);
  for (const DagTask& t : dag) {
    Expectation& e = out[t.id];
    bool tainted = false;
    for (std::size_t k = 0; k < t.count; ++k) {
      const int writer = version_of[t.handles[k]];
      if (!hetflow::reads(t.modes[k]) || writer < 0) continue;
      const Expectation& we = out[static_cast<std::size_t>(writer)];
      if (we.outcome == Outcome::done) continue;
      tainted = true;
      if (we.outcome == Outcome::dependency_failure) {
        e.roots.insert(e.roots.end(), we.roots.begin(), we.roots.end());
      } else {
        e.roots.push_back(static_cast<std::uint32_t>(writer));  // it failed or was cancelled itself
      }
    }
    for (std::size_t k = 0; k < t.count; ++k) {
      if (hetflow::writes(t.modes[k])) version_of[t.handles[k]] = static_cast<int>(t.id);
    }
    std::sort(e.roots.begin(), e.roots.end());
    e.roots.erase(std::unique(e.roots.begin(), e.roots.end()), e.roots.end());
    if (cancelled[t.id]) {
      e.outcome = Outcome::cancelled;
    } else if (tainted) {
      e.outcome = Outcome::dependency_failure;
    } else if (t.throws) {
      e.outcome = Outcome::own_failure;
    }
    if (e.outcome != Outcome::dependency_failure) e.roots.clear();
  }
  return out;
}

std::uint32_t task_id_from_name(const std::string& name) {
  if (name.size() < 2 || name[0] != 't') return UINT32_MAX;
  return static_cast<std::uint32_t>(std::stoul(name.substr(1)));
}

TEST(FailureInjection, ExactlyTheDependentsOfFailuresFail) {
  const std::size_t rounds = hetflow::test::scaled(60, 6);
  std::mt19937_64 rng(77);
  std::size_t counts[4] = {0, 0, 0, 0};

  Runtime rt;
  for (std::size_t round = 0; round < rounds; ++round) {
    SCOPED_TRACE(hetflow::test::numbered("round ", round));
    // Fresh variables each round, so that each round starts from known values.
    std::vector<std::uint64_t> values(kHandles);
    std::vector<std::uint64_t> model(kHandles);
    std::vector<DataHandle> handles;
    for (std::size_t i = 0; i < kHandles; ++i) {
      values[i] = model[i] = 1000 + i;
      handles.push_back(rt.register_variable(values[i]));
    }
    const std::vector<DagTask> dag = hetflow::test::random_dag(rng, kTasksPerRound, kHandles, kFailureRate);
    std::vector<std::uint64_t> digests(dag.size(), 0);
    const hetflow::Codelet codelet = hetflow::test::dag_codelet(dag, digests);

    std::vector<Future<void>> futures;
    std::vector<bool> cancelled(dag.size(), false);
    for (const DagTask& t : dag) {
      futures.push_back(
          hetflow::test::insert_dag_task(rt, codelet, t, handles, {}, hetflow::test::numbered("t", t.id)));
      if (t.id % kCancelEvery == kCancelEvery - 1) cancelled[t.id] = futures.back().cancel();
    }
    rt.wait_all();

    const std::vector<Expectation> expected = expected_outcomes(dag, cancelled);
    for (const DagTask& t : dag) {
      const Expectation& e = expected[t.id];
      const Future<void>& f = futures[t.id];
      ++counts[static_cast<int>(e.outcome)];
      ASSERT_TRUE(f.ready()) << "t" << t.id;
      switch (e.outcome) {
        case Outcome::done:
          ASSERT_EQ(f.status(), TaskStatus::done) << "t" << t.id << ": " << hetflow::describe(f.error());
          ASSERT_EQ(digests[t.id], hetflow::test::apply_sequentially(t, model)) << "t" << t.id;
          break;
        case Outcome::cancelled:
          ASSERT_EQ(f.status(), TaskStatus::cancelled) << "t" << t.id;
          ASSERT_THROW(f.get(), CancelledError) << "t" << t.id;
          break;
        case Outcome::own_failure:
          ASSERT_EQ(f.status(), TaskStatus::failed) << "t" << t.id;
          try {
            f.get();
          } catch (const InjectedFailure& failure) {
            ASSERT_EQ(failure.id, t.id);
            break;
          } catch (...) {
          }
          FAIL() << "t" << t.id << " should fail with its own exception, got " << hetflow::describe(f.error());
        case Outcome::dependency_failure: {
          ASSERT_EQ(f.status(), TaskStatus::failed) << "t" << t.id;
          try {
            f.get();
          } catch (const DependencyError& error) {
            const std::uint32_t root = task_id_from_name(error.root_task());
            ASSERT_TRUE(std::binary_search(e.roots.begin(), e.roots.end(), root))
                << "t" << t.id << " names " << error.root_task() << ", not one of its failed ancestors";
            ASSERT_NE(std::string(error.what()).find(error.root_task()), std::string::npos);
            if (cancelled[root]) {
              ASSERT_THROW(std::rethrow_exception(error.root_cause()), CancelledError);
            } else {
              try {
                std::rethrow_exception(error.root_cause());
              } catch (const InjectedFailure& cause) {
                ASSERT_EQ(cause.id, root);
              }
            }
            break;
          } catch (...) {
          }
          FAIL() << "t" << t.id << " should fail with DependencyError, got " << hetflow::describe(f.error());
        }
      }
    }
    // The variables hold what the tasks that ran made of them.
    for (auto& h : handles) rt.unregister(h);
    EXPECT_EQ(values, model);
  }
  std::printf("tasks: %zu succeeded, %zu failed, %zu failed by dependency, %zu cancelled\n", counts[0], counts[1],
              counts[2], counts[3]);
  EXPECT_GT(counts[static_cast<int>(Outcome::done)], 0u);
  EXPECT_GT(counts[static_cast<int>(Outcome::own_failure)], 0u);
  EXPECT_GT(counts[static_cast<int>(Outcome::dependency_failure)], 0u);
}

}  // namespace
