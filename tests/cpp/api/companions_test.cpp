// Batches (TaskContext::take_companions): a body takes the ready tasks of its own body type
// queued behind it on its worker, completes them itself (their storage holds a
// detail::Bound<F>, which it replaces by the result) and the engine finishes them as it is told:
// with a value, with an exception, or with an error naming the batch when the body leaves one
// unfinished. A task of another body type met on the way runs next; cancelled tasks are never
// handed over; a task the worker runs while a lead waits has a batch of its own. One worker, so
// that the tasks queued behind a running one wait for it.
#include <gtest/gtest.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using hetflow::CancelledError;
using hetflow::Config;
using hetflow::DependencyError;
using hetflow::Future;
using hetflow::Runtime;
using hetflow::TaskContext;
using hetflow::TaskOptions;
using hetflow::detail::Bound;
using hetflow::test::Gate;
using hetflow::test::Signal;

// A failure type of the test's own, to check that a companion fails with exactly what it is given.
struct BatchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What the tasks of one test share. Written only by the single worker; read by the test after
// it waited for the tasks.
struct Scene {
  Gate gate;
  Signal started;
  std::vector<std::size_t> taken;  // per lead run: how many companions it took
  std::vector<std::string> log;    // bodies that ran, in order, and the companions they took
};

// The body of companion `i` of the running task, as Runtime::submit stored it.
template <class F>
F& companion_body(TaskContext& ctx, std::size_t i) {
  return static_cast<Bound<F>*>(ctx.companion_storage(i))->fn;
}

// Completes companion `i` with `result`: destroys its body and leaves the result in its place.
template <class F, class R>
void complete(TaskContext& ctx, std::size_t i, R result) {
  void* storage = ctx.companion_storage(i);
  static_cast<Bound<F>*>(storage)->~Bound<F>();
  ::new (storage) R(std::move(result));
  ctx.finish_companion(i, nullptr);
}

// Fails companion `i` with `error`: destroys its body and finishes it with the exception.
template <class F>
void fail(TaskContext& ctx, std::size_t i, std::exception_ptr error) {
  static_cast<Bound<F>*>(ctx.companion_storage(i))->~Bound<F>();
  ctx.finish_companion(i, std::move(error));
}

// Squares its value, and those of the companions it takes (two at first, then the rest: indices
// continue across calls). Only the first task submitted waits at the gate.
struct Square {
  int value;
  Scene* scene;
  std::shared_ptr<int> tracker;  // counts live bodies

  int operator()(TaskContext& ctx) const {
    if (value == 0) {
      scene->started.raise();
      scene->gate.wait();
    }
    std::size_t taken = ctx.take_companions(0);
    taken += ctx.take_companions(2);
    taken += ctx.take_companions(100);
    scene->taken.push_back(taken);
    for (std::size_t i = 0; i < taken; ++i) {
      scene->log.push_back(ctx.companion_name(i));
      const int v = companion_body<Square>(ctx, i).value;
      complete<Square>(ctx, i, v * v);
    }
    return value * value;
  }
};

TEST(Companions, TakenCompanionsGetTheResultsTheBodyLeaves) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto tracker = std::make_shared<int>(0);
  std::vector<Future<int>> futures;
  futures.push_back(rt.submit(TaskOptions{.name = "lead"}, Square{0, &scene, tracker}));
  scene.started.wait();
  for (int v = 1; v <= 6; ++v) {
    futures.push_back(rt.submit(TaskOptions{.name = "square " + std::to_string(v)}, Square{v, &scene, tracker}));
  }
  scene.gate.open();
  for (int v = 0; v <= 6; ++v) EXPECT_EQ(futures[static_cast<std::size_t>(v)].get(), v * v);
  rt.wait_all();

  // The lead took every task queued behind it, and ran alone.
  EXPECT_EQ(scene.taken, (std::vector<std::size_t>{6}));
  std::vector<std::string> names = scene.log;
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"square 1", "square 2", "square 3", "square 4", "square 5", "square 6"}));
  EXPECT_EQ(tracker.use_count(), 1) << "a body was not destroyed";
}

// Fails the companion whose value is 2 with a BatchError; returns 10 * value for the others.
struct FailTwo {
  int value;
  Scene* scene;

  int operator()(TaskContext& ctx) const {
    if (value == 0) {
      scene->started.raise();
      scene->gate.wait();
    }
    const std::size_t taken = ctx.take_companions(100);
    scene->taken.push_back(taken);
    for (std::size_t i = 0; i < taken; ++i) {
      const int v = companion_body<FailTwo>(ctx, i).value;
      if (v == 2) {
        fail<FailTwo>(ctx, i, std::make_exception_ptr(BatchError("companion 2 failed")));
      } else {
        complete<FailTwo>(ctx, i, 10 * v);
      }
    }
    return 10 * value;
  }
};

TEST(Companions, ACompanionFailsWithTheExceptionItIsGiven) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto lead = rt.submit(FailTwo{0, &scene});
  scene.started.wait();
  std::vector<Future<int>> futures;
  for (int v = 1; v <= 3; ++v) futures.push_back(rt.submit(FailTwo{v, &scene}));
  auto after_failed = rt.submit(TaskOptions{.after = {futures[1]}, .name = "after 2"}, [] { return 1; });
  auto after_ok = rt.submit(TaskOptions{.after = {futures[0], futures[2]}}, [] { return 2; });
  scene.gate.open();

  EXPECT_EQ(lead.get(), 0);
  EXPECT_EQ(futures[0].get(), 10);
  EXPECT_EQ(futures[2].get(), 30);
  try {
    (void)futures[1].get();
    ADD_FAILURE() << "the failed companion succeeded";
  } catch (const BatchError& e) {
    EXPECT_STREQ(e.what(), "companion 2 failed");
  }
  try {
    (void)after_failed.get();
    ADD_FAILURE() << "a dependent of the failed companion ran";
  } catch (const DependencyError& e) {
    EXPECT_THROW(std::rethrow_exception(e.root_cause()), BatchError);
  }
  EXPECT_EQ(after_ok.get(), 2);
  rt.wait_all();
  ASSERT_FALSE(scene.taken.empty());
  EXPECT_EQ(scene.taken.front(), 3u);
}

// Finishes only the companions with an even value and leaves the others; the lead whose value
// is negative throws after taking its companions.
struct Forgetful {
  int value;
  Scene* scene;
  std::shared_ptr<int> tracker;

  int operator()(TaskContext& ctx) const {
    if (value <= 0) {
      scene->started.raise();
      scene->gate.wait();
    }
    const std::size_t taken = ctx.take_companions(100);
    scene->taken.push_back(taken);
    if (value < 0) throw BatchError("the lead gave up");
    for (std::size_t i = 0; i < taken; ++i) {
      const int v = companion_body<Forgetful>(ctx, i).value;
      if (v % 2 == 0) complete<Forgetful>(ctx, i, v);
    }
    return value;
  }
};

// Expects `future` to fail with a hetflow::Error naming the batch of `lead`.
void expect_left_in_batch(const Future<int>& future, const std::string& lead) {
  try {
    (void)future.get();
    ADD_FAILURE() << "a companion left unfinished succeeded";
  } catch (const hetflow::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("batch"), std::string::npos) << message;
    EXPECT_NE(message.find("'" + lead + "'"), std::string::npos) << message;
  }
}

TEST(Companions, ACompanionLeftUnfinishedFailsNamingTheBatch) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto tracker = std::make_shared<int>(0);
  auto lead = rt.submit(TaskOptions{.name = "forgetful lead"}, Forgetful{0, &scene, tracker});
  scene.started.wait();
  std::vector<Future<int>> futures;
  for (int v = 1; v <= 4; ++v) futures.push_back(rt.submit(Forgetful{v, &scene, tracker}));
  auto dependent = rt.submit(TaskOptions{.after = {futures[0]}}, [] { return 1; });
  scene.gate.open();

  EXPECT_EQ(lead.get(), 0);
  expect_left_in_batch(futures[0], "forgetful lead");
  EXPECT_EQ(futures[1].get(), 2);
  expect_left_in_batch(futures[2], "forgetful lead");
  EXPECT_EQ(futures[3].get(), 4);
  EXPECT_THROW((void)dependent.get(), DependencyError);
  rt.wait_all();
  ASSERT_FALSE(scene.taken.empty());
  EXPECT_EQ(scene.taken.front(), 4u);
  EXPECT_EQ(tracker.use_count(), 1) << "the body of a companion left unfinished was not destroyed";
}

TEST(Companions, ALeadThatThrowsFailsItsUnfinishedCompanions) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto tracker = std::make_shared<int>(0);
  auto lead = rt.submit(TaskOptions{.name = "thrower"}, Forgetful{-1, &scene, tracker});
  scene.started.wait();
  std::vector<Future<int>> futures;
  for (int v = 1; v <= 3; ++v) futures.push_back(rt.submit(Forgetful{2 * v, &scene, tracker}));
  scene.gate.open();

  EXPECT_THROW((void)lead.get(), BatchError);
  for (auto& f : futures) expect_left_in_batch(f, "thrower");
  rt.wait_all();
  EXPECT_EQ(tracker.use_count(), 1);
}

// Takes companions and notes its own run and the companions it took.
struct Named {
  std::string name;
  Scene* scene;

  std::string operator()(TaskContext& ctx) const {
    if (name == "lead") {
      scene->started.raise();
      scene->gate.wait();
    }
    scene->log.push_back("ran " + name);
    const std::size_t taken = ctx.take_companions(100);
    scene->taken.push_back(taken);
    for (std::size_t i = 0; i < taken; ++i) {
      std::string companion = companion_body<Named>(ctx, i).name;
      scene->log.push_back("took " + companion);
      complete<Named>(ctx, i, companion + " done");
    }
    return name + " done";
  }
};

TEST(Companions, ATaskOfAnotherKindMetOnTheWayRunsNext) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto lead = rt.submit(Named{"lead", &scene});
  scene.started.wait();
  std::vector<Future<std::string>> named;
  for (const char* name : {"a", "b"}) named.push_back(rt.submit(Named{name, &scene}));
  auto other = rt.submit([&scene](TaskContext& ctx) {
    scene.log.push_back("ran other");
    return ctx.worker_id();
  });
  for (const char* name : {"c", "d"}) named.push_back(rt.submit(Named{name, &scene}));
  scene.gate.open();

  EXPECT_EQ(lead.get(), "lead done");
  EXPECT_EQ(other.get(), 0u);
  EXPECT_EQ(named[0].get(), "a done");
  EXPECT_EQ(named[1].get(), "b done");
  EXPECT_EQ(named[2].get(), "c done");
  EXPECT_EQ(named[3].get(), "d done");
  rt.wait_all();

  // The lead took companions until it met the other task, which ran right after it; the tasks
  // not taken then ran (and batched) as usual.
  const std::vector<std::string>& log = scene.log;
  ASSERT_GE(log.size(), 2u);
  EXPECT_EQ(log.front(), "ran lead");
  const auto other_at = std::find(log.begin(), log.end(), "ran other");
  ASSERT_NE(other_at, log.end());
  for (auto it = log.begin() + 1; it != other_at; ++it) {
    EXPECT_EQ(it->rfind("took ", 0), 0u) << "'" << *it << "' came between the lead and the task it deferred";
  }
  ASSERT_FALSE(scene.taken.empty());
  EXPECT_LT(scene.taken.front(), 4u);
  std::size_t ran_or_taken = 0;
  for (const auto& entry : log) ran_or_taken += entry != "ran other" ? 1 : 0;
  EXPECT_EQ(ran_or_taken, 5u) << "each task of the kind runs or is taken exactly once";
}

// A batch of its own for a task run while a lead waits (see below): takes the other helper.
struct Helper {
  int value;

  int operator()(TaskContext& ctx) const {
    const std::size_t taken = ctx.take_companions(100);
    for (std::size_t i = 0; i < taken; ++i) {
      // Its companions are numbered from 0, apart from those of the lead it runs under.
      if (std::string(ctx.companion_name(i)).rfind("helper", 0) != 0) {
        throw std::logic_error(std::string("companion ") + std::to_string(i) + " of a helper is '" +
                               ctx.companion_name(i) + "'");
      }
      const int v = companion_body<Helper>(ctx, i).value;
      complete<Helper>(ctx, i, v + 1000);
    }
    return value + 1000;
  }
};

// Takes its companions, then waits for two helper tasks it submits (the worker runs them
// meanwhile), then completes its companions.
struct Patient {
  int value;
  Scene* scene;
  Runtime* runtime;

  int operator()(TaskContext& ctx) const {
    if (value == 0) {
      scene->started.raise();
      scene->gate.wait();
    }
    const std::size_t taken = ctx.take_companions(100);
    scene->taken.push_back(taken);
    if (value == 0) {
      auto first = runtime->submit(TaskOptions{.name = "helper 1"}, Helper{1});
      auto second = runtime->submit(TaskOptions{.name = "helper 2"}, Helper{2});
      scene->log.push_back(std::to_string(first.get()) + " " + std::to_string(second.get()));
    }
    for (std::size_t i = 0; i < taken; ++i) {
      const int v = companion_body<Patient>(ctx, i).value;
      complete<Patient>(ctx, i, 3 * v);
    }
    return 3 * value;
  }
};

TEST(Companions, ALeadThatWaitsKeepsItsCompanions) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto lead = rt.submit(TaskOptions{.name = "patient lead"}, Patient{0, &scene, &rt});
  scene.started.wait();
  std::vector<Future<int>> futures;
  for (int v = 1; v <= 3; ++v) futures.push_back(rt.submit(Patient{v, &scene, &rt}));
  scene.gate.open();

  EXPECT_EQ(lead.get(), 0);
  for (int v = 1; v <= 3; ++v) EXPECT_EQ(futures[static_cast<std::size_t>(v - 1)].get(), 3 * v);
  rt.wait_all();
  EXPECT_EQ(scene.taken.front(), 3u);
  EXPECT_EQ(scene.log, (std::vector<std::string>{"1001 1002"}));
}

TEST(Companions, CancelledTasksAreNotHandedOver) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto tracker = std::make_shared<int>(0);
  auto lead = rt.submit(TaskOptions{.name = "lead"}, Square{0, &scene, tracker});
  scene.started.wait();
  std::vector<Future<int>> futures;
  for (int v = 1; v <= 6; ++v) {
    futures.push_back(rt.submit(TaskOptions{.name = "square " + std::to_string(v)}, Square{v, &scene, tracker}));
  }
  EXPECT_TRUE(futures[1].cancel());  // square 2
  EXPECT_TRUE(futures[4].cancel());  // square 5
  scene.gate.open();

  EXPECT_EQ(lead.get(), 0);
  for (int v = 1; v <= 6; ++v) {
    auto& f = futures[static_cast<std::size_t>(v - 1)];
    if (v == 2 || v == 5) {
      EXPECT_THROW((void)f.get(), CancelledError);
    } else {
      EXPECT_EQ(f.get(), v * v);
    }
  }
  rt.wait_all();
  EXPECT_EQ(scene.taken, (std::vector<std::size_t>{4}));
  std::vector<std::string> names = scene.log;
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"square 1", "square 3", "square 4", "square 6"}));
  EXPECT_EQ(tracker.use_count(), 1);
}

TEST(Companions, NoneAreHandedOverAfterAbort) {
  Runtime rt(Config{.ncpus = 1});
  Scene scene;
  auto tracker = std::make_shared<int>(0);
  auto lead = rt.submit(Square{0, &scene, tracker});
  scene.started.wait();
  std::vector<Future<int>> futures;
  for (int v = 1; v <= 3; ++v) futures.push_back(rt.submit(Square{v, &scene, tracker}));
  rt.abort();
  scene.gate.open();

  EXPECT_EQ(lead.get(), 0);  // it had started: it finishes
  for (auto& f : futures) EXPECT_THROW((void)f.get(), CancelledError);
  rt.shutdown();
  EXPECT_EQ(scene.taken, (std::vector<std::size_t>{0}));
  EXPECT_EQ(tracker.use_count(), 1);
}

}  // namespace
