// Runtime::acquire_then: host access handed to a callback once the data are ready, released
// later from any thread, ordered with tasks like a blocking acquisition.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using hetflow::AccessMode;
using hetflow::Acquisition;

// An acquisition handed over to another thread, which releases it when told to.
class Holder {
 public:
  void take(Acquisition acquisition) {
    std::lock_guard lock(mutex_);
    held_ = std::move(acquisition);
    changed_.notify_all();
  }
  void wait_until_held() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return held_.has_value(); });
  }
  void release() {
    std::lock_guard lock(mutex_);
    held_->release();
  }
  int* data() {
    std::lock_guard lock(mutex_);
    return held_->as<int>();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Acquisition> held_;
};

TEST(AcquireThen, CalledAtOnceOnTheCallerWhenNothingConflicts) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int value = 7;
  auto handle = rt.register_variable(value);
  std::thread::id called_on;
  int seen = 0;
  rt.acquire_then(handle, AccessMode::R, [&](Acquisition acquisition) {
    called_on = std::this_thread::get_id();
    seen = *acquisition.as<int>();
  });
  EXPECT_EQ(called_on, std::this_thread::get_id());
  EXPECT_EQ(seen, 7);
  rt.submit({.data = {hetflow::RW(handle)}}, [&] { value += 1; }).get();  // released: not held back
  EXPECT_EQ(value, 8);
}

TEST(AcquireThen, WaitsForEarlierWritersAndHoldsLaterTasksUntilReleased) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int value = 0;
  auto handle = rt.register_variable(value);
  std::atomic<bool> writer_may_finish{false};
  rt.submit({.data = {hetflow::W(handle)}}, [&] {
    while (!writer_may_finish.load()) std::this_thread::yield();
    value = 41;
  });
  Holder holder;
  std::atomic<bool> called{false};
  rt.acquire_then(handle, AccessMode::RW, [&](Acquisition acquisition) {
    called = true;
    holder.take(std::move(acquisition));
  });
  EXPECT_FALSE(called.load());  // the writer has not finished
  auto later = rt.submit({.data = {hetflow::R(handle)}}, [&] { return value; });
  writer_may_finish = true;
  holder.wait_until_held();
  EXPECT_EQ(*holder.data(), 41);
  *holder.data() = 42;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(later.ready());  // held back by the acquisition
  std::thread releaser([&] { holder.release(); });
  EXPECT_EQ(later.get(), 42);
  releaser.join();
}

TEST(AcquireThen, AWriteThroughTheAcquisitionIsSeenByLaterReaders) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  std::vector<int> data(64, 1);
  auto handle = rt.register_vector(data.data(), data.size());
  rt.submit({.data = {hetflow::RW(handle)}}, [&] {
    for (int& x : data) x *= 3;
  });
  rt.acquire_then(handle, AccessMode::RW, [](Acquisition acquisition) {
    for (int i = 0; i < 64; ++i) acquisition.as<int>()[i] += i;
  });  // released when the callback returns without keeping it
  auto sum = rt.submit({.data = {hetflow::R(handle)}}, [&] {
    int total = 0;
    for (int x : data) total += x;
    return total;
  });
  EXPECT_EQ(sum.get(), 64 * 3 + 63 * 64 / 2);
}

TEST(AcquireThen, ACallbackThatThrowsReleasesTheData) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int value = 0;
  auto handle = rt.register_variable(value);
  rt.submit({.data = {hetflow::W(handle)}}, [&] { value = 5; });
  rt.acquire_then(handle, AccessMode::RW,
                  [](Acquisition /*acquisition*/) { throw std::runtime_error("refused by the callback"); });
  EXPECT_EQ(rt.submit({.data = {hetflow::R(handle)}}, [&] { return value; }).get(), 5);
}

TEST(AcquireThen, TheAcquisitionNamesTheFailureOfTheLastWriter) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int value = 0;
  auto handle = rt.register_variable(value);
  rt.submit({.data = {hetflow::W(handle)}}, [] { throw std::runtime_error("writer broke"); });
  std::exception_ptr seen;
  rt.acquire_then(handle, AccessMode::R, [&](Acquisition acquisition) { seen = acquisition.failure(); });
  rt.wait_all();
  ASSERT_TRUE(seen);
  EXPECT_THROW(std::rethrow_exception(seen), std::runtime_error);
  // Handed on as they were (a send, say): the failure stays with the data for later readers.
  EXPECT_THROW(rt.submit({.data = {hetflow::R(handle)}}, [] {}).get(), hetflow::DependencyError);
}

// Read and written through acquire_then (RW), data a failed writer left are still not a
// new version: the readers after fail as well. Written only (W), they are one.
TEST(AcquireThen, ARewriteOfAFailedWritersDataIsNotANewVersion) {
  for (AccessMode mode : {AccessMode::RW, AccessMode::W}) {
    SCOPED_TRACE(std::string(hetflow::access_mode_name(mode)));
    hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
    int value = 0;
    auto handle = rt.register_variable(value);
    rt.submit({.data = {hetflow::W(handle)}}, [] { throw std::runtime_error("writer broke"); });
    std::exception_ptr seen;
    rt.acquire_then(handle, mode, [&](Acquisition acquisition) {
      seen = acquisition.failure();
      *acquisition.as<int>() += 1;
    });
    auto reader = rt.submit({.data = {hetflow::R(handle)}}, [&] { return value; });
    rt.wait_all();
    if (mode == AccessMode::W) {
      EXPECT_EQ(reader.get(), 1);
      continue;
    }
    ASSERT_TRUE(seen);
    try {
      (void)reader.get();
      ADD_FAILURE() << "the reader after the acquisition ran";
    } catch (const hetflow::DependencyError& error) {
      EXPECT_THROW(std::rethrow_exception(error.root_cause()), std::runtime_error);
    }
  }
}

// Acquisitions in a row, each released in its callback: releasing one starts the next. Each
// started inside the one before, on the stack of the thread that released the first, which
// 100,000 of them overflowed. Released here on a thread with a small stack (256 KiB).
TEST(AcquireThen, ManyInARowReleasedInTheirCallbacksDoNotNestOnTheStack) {
  constexpr long kCount = 20000;
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  long value = 0;
  auto handle = rt.register_variable(value);
  std::atomic<bool> acquired{false};
  std::atomic<bool> release{false};
  hetflow::test::SmallStackThread holder([&rt, handle, &acquired, &release] {
    Acquisition held = rt.acquire(handle, AccessMode::RW);
    acquired = true;
    while (!release) std::this_thread::yield();
    held.release();  // starts the acquisitions after it, on this thread
  });
  while (!acquired) std::this_thread::yield();
  for (long i = 0; i < kCount; ++i) {
    rt.acquire_then(handle, AccessMode::RW, [](Acquisition acquisition) { ++*acquisition.as<long>(); });
  }
  release = true;
  holder.join();
  rt.wait_all();
  EXPECT_EQ(rt.acquire(handle, AccessMode::R).as<long>()[0], kCount);
}

// The failure an acquisition reports is that of the writer before it, even when a later writer,
// submitted after the acquisition, is the data's last writer by the time it starts.
TEST(AcquireThen, TheFailureReportedIsThatOfTheWriterBeforeTheAcquisition) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int value = 0;
  auto handle = rt.register_variable(value);
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  rt.submit({.data = {hetflow::W(handle)}}, [opened] {
    opened.wait();
    throw std::runtime_error("writer broke");
  });
  std::exception_ptr seen;
  rt.acquire_then(handle, AccessMode::R, [&](Acquisition acquisition) { seen = acquisition.failure(); });
  auto rewrite = rt.submit({.data = {hetflow::W(handle)}}, [&] { value = 7; });
  gate.set_value();
  rt.wait_all();
  ASSERT_TRUE(seen);
  EXPECT_THROW(std::rethrow_exception(seen), std::runtime_error);
  EXPECT_NO_THROW(rewrite.get());  // a write-only access makes a new version
  EXPECT_EQ(rt.submit({.data = {hetflow::R(handle)}}, [&] { return value; }).get(), 7);
}

// Runtime::acquire is the program taking the data as they are: a new version for later readers.
TEST(AcquireThen, AnAcquireTakesTheDataAsANewVersion) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int value = 0;
  auto handle = rt.register_variable(value);
  rt.submit({.data = {hetflow::W(handle)}}, [] { throw std::runtime_error("writer broke"); });
  {
    Acquisition held = rt.acquire(handle, AccessMode::R);
    ASSERT_TRUE(held.failure());
    EXPECT_THROW(std::rethrow_exception(held.failure()), std::runtime_error);
  }
  EXPECT_NO_THROW(rt.submit({.data = {hetflow::R(handle)}}, [] {}).get());
}

TEST(AcquireThen, ReleasingAsFailedFailsTheLaterReaders) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int value = 0;
  auto handle = rt.register_variable(value);
  rt.acquire_then(handle, AccessMode::W, [](Acquisition acquisition) {
    acquisition.release_failed(std::make_exception_ptr(hetflow::Error("the message never came")));
  });
  auto reader = rt.submit({.data = {hetflow::R(handle)}}, [] {});
  try {
    reader.get();
    FAIL() << "the reader ran on data that were not produced";
  } catch (const hetflow::DependencyError& error) {
    EXPECT_NE(std::string(error.what()).find("the message never came"), std::string::npos) << error.what();
  }
  auto writer = rt.submit({.data = {hetflow::W(handle)}}, [&] { value = 3; });  // a new version
  EXPECT_NO_THROW(writer.get());
  EXPECT_EQ(rt.submit({.data = {hetflow::R(handle)}}, [&] { return value; }).get(), 3);
  Acquisition none;
  EXPECT_NO_THROW(none.release_failed(nullptr));  // nothing held: nothing to do
}

TEST(AcquireThen, BadCallsAreRefused) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 1});
  int value = 0;
  auto handle = rt.register_variable(value);
  EXPECT_THROW(rt.acquire_then(handle, AccessMode::R, {}), hetflow::InvalidArgument);
  EXPECT_THROW(rt.acquire_then(hetflow::DataHandle{}, AccessMode::R, [](Acquisition) {}), hetflow::InvalidArgument);
}

// Transfers in flight over many handles: each round's acquisitions are released by another
// thread in any order while tasks keep submitting; every task sees every earlier update.
TEST(AcquireThen, ManyAcquisitionsReleasedElsewhereKeepTheOrderOfUpdates) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 4});
  constexpr int kHandles = 8, kRounds = 200;
  std::vector<long> values(kHandles, 0);
  std::vector<hetflow::DataHandle> handles;
  for (long& value : values) handles.push_back(rt.register_variable(value));
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<Acquisition> pending;
  bool done = false;
  std::thread releaser([&] {
    std::unique_lock lock(mutex);
    for (;;) {
      changed.wait(lock, [&] { return done || !pending.empty(); });
      if (pending.empty() && done) return;
      Acquisition acquisition = std::move(pending.back());
      pending.pop_back();
      lock.unlock();
      *acquisition.as<long>() += 1000;  // the "received" update
      acquisition.release();
      lock.lock();
    }
  });
  for (int round = 0; round < kRounds; ++round) {
    for (int h = 0; h < kHandles; ++h) {
      rt.submit({.data = {hetflow::RW(handles[h])}}, [&values, h] { values[h] += 1; });
      rt.acquire_then(handles[h], AccessMode::RW, [&](Acquisition acquisition) {
        std::lock_guard lock(mutex);
        pending.push_back(std::move(acquisition));
        changed.notify_one();
      });
    }
  }
  std::vector<hetflow::Future<long>> last;
  for (int h = 0; h < kHandles; ++h) {
    last.push_back(rt.submit({.data = {hetflow::R(handles[h])}}, [&values, h] { return values[h]; }));
  }
  for (int h = 0; h < kHandles; ++h) EXPECT_EQ(last[h].get(), kRounds * 1001L);
  {
    std::lock_guard lock(mutex);
    done = true;
    changed.notify_one();
  }
  releaser.join();
}

}  // namespace
