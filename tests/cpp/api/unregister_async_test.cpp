// Runtime::unregister_async: returns at once while tasks still use the handle, refuses new tasks
// on it right away, and lets the handle go once the tasks already using it are done, with their
// data left in the user's buffer (also when the application drops its DataHandle first; ASan
// builds check that nothing is used after it is freed, or leaked).
#include <gtest/gtest.h>

#include <chrono>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

using hetflow::test::expect_invalid_argument;

namespace {

using hetflow::Config;
using hetflow::DataHandle;
using hetflow::InvalidArgument;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskContext;
using hetflow::TaskOptions;
using hetflow::test::Gate;
using hetflow::test::Signal;

// Writes 3 * i into element i, once the gate opens.
auto gated_writer(Gate& gate, Signal& started) {
  return [&gate, &started](TaskContext& ctx) {
    started.raise();
    gate.wait();
    auto* values = ctx.buffer(0).as<int>();
    for (std::size_t i = 0; i < ctx.buffer(0).elements(); ++i) values[i] = 3 * static_cast<int>(i);
  };
}

long sum_of(TaskContext& ctx) {
  const auto* values = ctx.buffer(0).as<int>();
  return std::accumulate(values, values + ctx.buffer(0).elements(), 0L);
}

long expected_sum(std::size_t n) { return 3L * static_cast<long>(n * (n - 1) / 2); }

TEST(UnregisterAsync, ReturnsWhileATaskUsesTheHandle) {
  Runtime rt(Config{.ncpus = 2});
  constexpr std::size_t n = 1000;
  std::vector<int> data(n, -1);
  DataHandle handle = rt.register_vector(data.data(), n, "samples");
  Gate gate;
  Signal started;
  auto writer = rt.submit(TaskOptions{.data = {RW(handle)}}, gated_writer(gate, started));
  auto reader = rt.submit(TaskOptions{.data = {R(handle)}}, sum_of);
  started.wait();

  rt.unregister_async(handle);  // returns although the writer is blocked
  EXPECT_FALSE(writer.ready());
  EXPECT_FALSE(reader.ready());
  EXPECT_FALSE(handle.registered());
  expect_invalid_argument([&] { (void)rt.submit(TaskOptions{.data = {R(handle)}}, sum_of); },
                          {"'samples'", "unregistered"});
  expect_invalid_argument([&] { (void)rt.acquire(handle, hetflow::AccessMode::R); }, {"'samples'", "unregistered"});
  rt.unregister_async(handle);  // again: nothing more to do

  gate.open();
  rt.unregister(handle);  // the waiting kind waits for the unregistration under way to end
  EXPECT_TRUE(writer.ready());
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(data[i], 3 * static_cast<int>(i)) << "element " << i;
  rt.wait_all();
  EXPECT_EQ(reader.get(), expected_sum(n));
}

TEST(UnregisterAsync, HandleDroppedBeforeItsTasksFinish) {
  Runtime rt(Config{.ncpus = 2});
  constexpr std::size_t n = 4096;
  std::vector<int> data(n, -1);
  Gate gate;
  Signal started;
  hetflow::Future<long> reader;
  {
    DataHandle handle = rt.register_vector(data.data(), n, "short-lived");
    (void)rt.submit(TaskOptions{.data = {RW(handle)}}, gated_writer(gate, started));
    reader = rt.submit(TaskOptions{.data = {R(handle)}}, sum_of);
    started.wait();
    rt.unregister_async(handle);
  }  // the application's last reference to the handle goes here
  // Other data keeps working meanwhile.
  int other = 1;
  DataHandle other_handle = rt.register_variable(other, "other");
  rt.submit(TaskOptions{.data = {RW(other_handle)}}, [](TaskContext& ctx) { *ctx.buffer(0).as<int>() += 1; }).get();
  gate.open();
  rt.wait_all();
  EXPECT_EQ(reader.get(), expected_sum(n));
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(data[i], 3 * static_cast<int>(i)) << "element " << i;
  rt.unregister(other_handle);
  EXPECT_EQ(other, 2);
}

TEST(UnregisterAsync, UnusedHandleGoesAtOnce) {
  Runtime rt(Config{.ncpus = 2});
  std::vector<int> a(10, 1), b(10, 2), c(10, 3);
  DataHandle ha = rt.register_vector(a.data(), a.size(), "a");
  DataHandle hb = rt.register_vector(b.data(), b.size(), "b");
  DataHandle hc = rt.register_vector(c.data(), c.size(), "c");
  rt.unregister_async(hb);
  EXPECT_FALSE(hb.registered());
  EXPECT_EQ(b, std::vector<int>(10, 2));
  // The handles registered around it still work.
  auto twice = [](TaskContext& ctx) {
    for (std::size_t i = 0; i < ctx.buffer(0).elements(); ++i) ctx.buffer(0).as<int>()[i] *= 2;
  };
  rt.submit(TaskOptions{.data = {RW(ha)}}, twice).get();
  rt.submit(TaskOptions{.data = {RW(hc)}}, twice).get();
  rt.unregister_async(hc);
  rt.unregister(ha);
  rt.wait_all();
  EXPECT_EQ(a, std::vector<int>(10, 2));
  EXPECT_EQ(c, std::vector<int>(10, 6));
}

TEST(UnregisterAsync, AfterAFailedTaskTheHandleStillGoes) {
  Runtime rt(Config{.ncpus = 2});
  std::vector<int> data(16, 5);
  Gate gate;
  Signal started;
  {
    DataHandle handle = rt.register_vector(data.data(), data.size(), "failing");
    auto failing = rt.submit(TaskOptions{.data = {RW(handle)}}, [&](TaskContext& ctx) {
      started.raise();
      gate.wait();
      ctx.buffer(0).as<int>()[0] = 6;
      throw std::runtime_error("writer failed");
    });
    auto dependent = rt.submit(TaskOptions{.data = {R(handle)}}, sum_of);
    started.wait();
    rt.unregister_async(handle);
    gate.open();
    EXPECT_THROW(failing.get(), std::runtime_error);
    EXPECT_THROW((void)dependent.get(), hetflow::DependencyError);
  }
  rt.wait_all();
  EXPECT_EQ(data[0], 6);  // what the task wrote before it failed stays
  EXPECT_EQ(data[1], 5);
  rt.shutdown();
}

}  // namespace

// Runtime::accesses_if_at_rest: what lets a cache of handles unregister those left unused without
// changing what a later task sees. A finished task may tell its successors a moment after its
// future is ready.
bool at_rest(const Runtime& rt, const DataHandle& handle) { return rt.accesses_if_at_rest(handle).has_value(); }

bool comes_to_rest(const Runtime& rt, const DataHandle& handle) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!at_rest(rt, handle)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(DataAtRest, NotWhileATaskOrAnAcquisitionUsesIt) {
  Runtime rt(Config{.ncpus = 2});
  constexpr std::size_t n = 64;
  std::vector<int> data(n, -1);
  DataHandle handle = rt.register_vector(data.data(), n, "samples");
  EXPECT_EQ(rt.accesses_if_at_rest(handle), 0U);

  Gate gate;
  Signal started;
  auto writer = rt.submit(TaskOptions{.data = {RW(handle)}}, gated_writer(gate, started));
  auto reader = rt.submit(TaskOptions{.data = {R(handle)}}, sum_of);
  started.wait();
  EXPECT_FALSE(at_rest(rt, handle));
  gate.open();
  writer.get();
  EXPECT_EQ(reader.get(), expected_sum(n));
  EXPECT_TRUE(comes_to_rest(rt, handle));
  EXPECT_EQ(rt.accesses_if_at_rest(handle), 2U);

  {
    hetflow::Acquisition held = rt.acquire(handle, hetflow::AccessMode::R);
    EXPECT_FALSE(at_rest(rt, handle));
  }
  EXPECT_EQ(rt.accesses_if_at_rest(handle), 3U);
  rt.unregister(handle);
  EXPECT_FALSE(at_rest(rt, handle));
}

TEST(DataAtRest, NotWhileItsLastWriterFailed) {
  Runtime rt(Config{.ncpus = 1});
  std::vector<int> data(8, 0);
  DataHandle handle = rt.register_vector(data.data(), data.size(), "samples");
  auto failed =
      rt.submit(TaskOptions{.data = {RW(handle)}}, [](TaskContext&) { throw std::runtime_error("on purpose"); });
  EXPECT_THROW(failed.get(), std::runtime_error);
  auto reader = rt.submit(TaskOptions{.data = {R(handle)}}, sum_of);
  EXPECT_THROW((void)reader.get(), hetflow::DependencyError);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the reader, done, tells no one
  EXPECT_FALSE(at_rest(rt, handle));

  auto rewriter = rt.submit(TaskOptions{.data = {hetflow::W(handle)}}, [](TaskContext&) {});
  rewriter.get();
  EXPECT_TRUE(comes_to_rest(rt, handle));
}
