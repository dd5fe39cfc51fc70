// How failures travel along data: only reading what a failed (or cancelled) writer should have
// produced fails a task. A failed reader leaves the data as it was; a write-only access, or an
// acquisition, starts a new version; explicit `after` futures fail their successor as before.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using hetflow::AccessMode;
using hetflow::Acquisition;
using hetflow::CancelledError;
using hetflow::Config;
using hetflow::DependencyError;
using hetflow::FutureBase;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskOptions;
using hetflow::TaskStatus;
using hetflow::W;
using hetflow::test::Gate;

// The name of the task the DependencyError that `f` failed with names as the original failure.
std::string root_of(const FutureBase& f) {
  f.wait();
  if (f.status() != TaskStatus::failed) return "(not failed: " + std::to_string(static_cast<int>(f.status())) + ")";
  try {
    std::rethrow_exception(f.error());
  } catch (const DependencyError& e) {
    return e.root_task();
  } catch (...) {
    return "(another error: " + hetflow::describe(f.error()) + ")";
  }
}

// A failed reader does not change the data: the writer after it waits for it, then runs, and
// the readers after that writer read what it wrote; however many readers came between (200
// passes the point where finished readers are dropped from the handle).
TEST(FailureRules, FailedReaderDoesNotFailLaterWriter) {
  for (int readers : {3, 200}) {
    SCOPED_TRACE(readers);
    Runtime rt;
    int x = 0;
    auto h = rt.register_variable(x, "x");
    Gate gate;
    auto bad = rt.submit(TaskOptions{.data = {R(h)}, .name = "bad reader"}, [&gate] {
      gate.wait();
      throw std::runtime_error("r");
    });
    for (int i = 0; i < readers; ++i) (void)rt.submit(TaskOptions{.data = {R(h)}}, [] {});
    auto writer = rt.submit(TaskOptions{.data = {W(h)}, .name = "writer"}, [&x] { x = 1; });
    auto after_writer = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
    EXPECT_FALSE(writer.ready());  // it waits for the failing reader (order)
    gate.open();
    EXPECT_THROW(bad.get(), std::runtime_error);
    EXPECT_NO_THROW(writer.get());
    EXPECT_EQ(after_writer.get(), 1);

    // Read-write after failed readers: same.
    auto bad2 = rt.submit(TaskOptions{.data = {R(h)}, .name = "bad reader 2"}, [] { throw std::runtime_error("r2"); });
    bad2.wait();
    auto rw = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return ++x; });
    EXPECT_EQ(rw.get(), 2);
  }
}

// A cancelled reader does not fail the writer after it either.
TEST(FailureRules, CancelledReaderDoesNotFailLaterWriter) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x, "x");
  Gate gate;
  auto first = rt.submit(TaskOptions{.data = {W(h)}}, [&gate, &x] {
    gate.wait();
    x = 1;
  });
  auto reader = rt.submit(TaskOptions{.data = {R(h)}, .name = "reader"}, [&x] { return x; });
  ASSERT_TRUE(reader.cancel());
  auto writer = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return x += 10; });
  gate.open();
  EXPECT_THROW((void)reader.get(), CancelledError);
  EXPECT_EQ(writer.get(), 11);
}

// A failed writer fails what reads its output (R and RW), directly or after readers, and a
// writer that failed that way passes the original failure on to its own readers.
TEST(FailureRules, FailedWriterFailsItsReaders) {
  for (AccessMode failing_mode : {AccessMode::W, AccessMode::RW}) {
    SCOPED_TRACE(hetflow::access_mode_name(failing_mode));
    Runtime rt;
    int x = 0;
    int y = 0;
    auto hx = rt.register_variable(x, "x");
    auto hy = rt.register_variable(y, "y");
    auto bad =
        rt.submit(TaskOptions{.data = {{hx, failing_mode}}, .name = "bad writer"}, [] { throw std::logic_error("w"); });
    auto reader = rt.submit(TaskOptions{.data = {R(hx)}}, [] {});
    auto rw_after_reader = rt.submit(TaskOptions{.data = {RW(hx)}}, [] {});
    auto rw_after_rw = rt.submit(TaskOptions{.data = {RW(hx)}}, [] {});
    // Fails through x, so it is a failed writer of y.
    auto passes_on = rt.submit(TaskOptions{.data = {R(hx), W(hy)}, .name = "passes on"}, [] {});
    auto reads_y = rt.submit(TaskOptions{.data = {R(hy)}}, [] {});
    auto rw_y = rt.submit(TaskOptions{.data = {RW(hy)}}, [] {});
    EXPECT_THROW(bad.get(), std::logic_error);
    for (const FutureBase* f :
         {static_cast<const FutureBase*>(&reader), static_cast<const FutureBase*>(&rw_after_reader),
          static_cast<const FutureBase*>(&rw_after_rw), static_cast<const FutureBase*>(&passes_on),
          static_cast<const FutureBase*>(&reads_y), static_cast<const FutureBase*>(&rw_y)}) {
      EXPECT_EQ(root_of(*f), "bad writer");
    }
    // Submitted after the failure was known: the same.
    EXPECT_EQ(root_of(rt.submit(TaskOptions{.data = {R(hx)}}, [] {})), "bad writer");
  }
}

// A cancelled writer fails its readers too: what they were to read was never written.
TEST(FailureRules, CancelledWriterFailsItsReaders) {
  Runtime rt;
  int x = 0;
  auto hx = rt.register_variable(x, "x");
  Gate gate;
  auto first = rt.submit(TaskOptions{.data = {RW(hx)}}, [&gate] { gate.wait(); });
  auto cancelled = rt.submit(TaskOptions{.data = {W(hx)}, .name = "cancelled writer"}, [&x] { x = 5; });
  ASSERT_TRUE(cancelled.cancel());
  auto reader = rt.submit(TaskOptions{.data = {R(hx)}}, [] {});
  gate.open();
  EXPECT_EQ(root_of(reader), "cancelled writer");
  try {
    reader.get();
  } catch (const DependencyError& e) {
    EXPECT_THROW(std::rethrow_exception(e.root_cause()), CancelledError);
  }
}

// A write-only access after a failed writer waits for it, does not fail, and the tasks after it
// see a good version; also with failed readers of the failed version between.
TEST(FailureRules, WriteOnlyAccessStartsANewVersion) {
  for (bool readers_between : {false, true}) {
    SCOPED_TRACE(readers_between);
    Runtime rt;
    int x = 0;
    auto h = rt.register_variable(x, "x");
    Gate gate;
    auto bad = rt.submit(TaskOptions{.data = {RW(h)}, .name = "bad writer"}, [&gate] {
      gate.wait();
      throw std::logic_error("w");
    });
    std::vector<hetflow::Future<void>> readers;
    if (readers_between) {
      for (int i = 0; i < 3; ++i) readers.push_back(rt.submit(TaskOptions{.data = {R(h)}}, [] {}));
    }
    auto fresh = rt.submit(TaskOptions{.data = {W(h)}, .name = "fresh"}, [&x] { x = 7; });
    auto reader = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
    auto rw = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return x *= 2; });
    EXPECT_FALSE(fresh.ready());  // ordered after the failing writer
    gate.open();
    EXPECT_THROW(bad.get(), std::logic_error);
    for (auto& r : readers) EXPECT_EQ(root_of(r), "bad writer");
    EXPECT_NO_THROW(fresh.get());
    EXPECT_EQ(reader.get(), 7);
    EXPECT_EQ(rw.get(), 14);
  }
}

// An acquisition, in any mode, gets the data after a failed writer, and the tasks submitted
// after it read a good version.
TEST(FailureRules, AcquisitionStartsANewVersion) {
  for (AccessMode mode : {AccessMode::R, AccessMode::W, AccessMode::RW}) {
    SCOPED_TRACE(hetflow::access_mode_name(mode));
    Runtime rt;
    int x = 3;
    auto h = rt.register_variable(x, "x");
    auto bad = rt.submit(TaskOptions{.data = {RW(h)}, .name = "bad writer"}, [] { throw std::logic_error("w"); });
    {
      Acquisition a = rt.acquire(h, mode);
      EXPECT_TRUE(bad.ready());
      EXPECT_EQ(*a.as<int>(), 3);
    }
    auto reader = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
    auto rw = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return ++x; });
    EXPECT_EQ(reader.get(), 3);
    EXPECT_EQ(rw.get(), 4);
  }
}

// Explicit `after` futures keep their rule: a failed predecessor fails its successor, also a
// failed reader.
TEST(FailureRules, ExplicitAfterStillFails) {
  Runtime rt(Config{.ncpus = 2});
  int x = 0;
  auto h = rt.register_variable(x, "x");
  auto bad = rt.submit(TaskOptions{.data = {R(h)}, .name = "bad reader"}, [] { throw std::runtime_error("r"); });
  auto pending_after = rt.submit(TaskOptions{.after = {bad}}, [] {});
  EXPECT_EQ(root_of(pending_after), "bad reader");
  auto late_after = rt.submit(TaskOptions{.after = {bad}}, [] {});
  EXPECT_EQ(root_of(late_after), "bad reader");
  // The data itself is fine.
  EXPECT_EQ(rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return ++x; }).get(), 1);
}

// A long run of failing readers, each followed by a writer: no failure outlives its own task.
TEST(FailureRules, RepeatedReaderFailuresDoNotAccumulate) {
  Runtime rt(Config{.ncpus = 1});
  int x = 0;
  auto h = rt.register_variable(x, "x");
  std::vector<hetflow::Future<int>> writers;
  for (int i = 0; i < 50; ++i) {
    (void)rt.submit(TaskOptions{.data = {R(h)}}, [] { throw std::runtime_error("r"); });
    writers.push_back(rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return ++x; }));
  }
  for (int i = 0; i < 50; ++i) EXPECT_EQ(writers[static_cast<std::size_t>(i)].get(), i + 1);
}

}  // namespace
