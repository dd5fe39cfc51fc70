// Registered data: layouts of variables, vectors, matrices and blocks; host access through
// acquire/release; unregistration; and the errors for unusable handles and access modes.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <future>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hetflow::AccessMode;
using hetflow::Acquisition;
using hetflow::Config;
using hetflow::DataLayout;
using hetflow::InvalidArgument;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskOptions;
using hetflow::W;

constexpr auto kPatience = std::chrono::seconds(60);
// How long the tests look for a task that must stay held back (it never runs early unless the
// engine is wrong; a longer wait only makes the check stronger).
constexpr auto kHeldBack = 30ms;

TEST(Data, VariableLayout) {
  Runtime rt;
  double x = 1.5;
  auto h = rt.register_variable(x, "x");
  ASSERT_TRUE(h);
  EXPECT_TRUE(h.registered());
  EXPECT_EQ(h.name(), "x");
  EXPECT_EQ(h.host_ptr(), &x);
  const DataLayout& layout = h.layout();
  EXPECT_EQ(layout.kind, DataLayout::Kind::variable);
  EXPECT_EQ(layout.elem_size, sizeof(double));
  EXPECT_EQ(layout.ndim, 0u);
  EXPECT_EQ(layout.element_count(), 1u);
  EXPECT_EQ(layout.payload_bytes(), sizeof(double));
  EXPECT_EQ(layout.span_bytes(), sizeof(double));
  EXPECT_EQ(layout.nx(), 1u);
  EXPECT_EQ(layout.ny(), 1u);
}

TEST(Data, VectorLayout) {
  Runtime rt;
  std::vector<float> v(37);
  auto h = rt.register_vector(v.data(), v.size(), "v");
  const DataLayout& layout = h.layout();
  EXPECT_EQ(layout.kind, DataLayout::Kind::vector);
  EXPECT_EQ(layout.ndim, 1u);
  EXPECT_EQ(layout.nx(), 37u);
  EXPECT_EQ(layout.ny(), 1u);
  EXPECT_EQ(layout.element_count(), 37u);
  EXPECT_EQ(layout.payload_bytes(), 37 * sizeof(float));
  EXPECT_EQ(layout.span_bytes(), 37 * sizeof(float));
  EXPECT_EQ(h.host_ptr(), v.data());
}

TEST(Data, MatrixLayout) {
  Runtime rt;
  std::vector<double> m(5 * 4);
  auto h = rt.register_matrix(m.data(), 3, 4, 5, "m");  // 3 rows used of a leading dimension 5
  const DataLayout& layout = h.layout();
  EXPECT_EQ(layout.kind, DataLayout::Kind::matrix);
  EXPECT_EQ(layout.ndim, 2u);
  EXPECT_EQ(layout.nx(), 3u);
  EXPECT_EQ(layout.ny(), 4u);
  EXPECT_EQ(layout.ld(), 5u);
  EXPECT_EQ(layout.element_count(), 12u);
  EXPECT_EQ(layout.payload_bytes(), 12 * sizeof(double));
  EXPECT_EQ(layout.span_bytes(), (2 + 3 * 5 + 1) * sizeof(double));  // padding of the last column excluded

  EXPECT_THROW((void)rt.register_matrix(m.data(), 6, 2, 5), InvalidArgument);  // ld < nx
}

TEST(Data, BlockLayout) {
  Runtime rt;
  std::vector<int> b(2 * 20);
  const std::array<std::size_t, 3> dims{4, 3, 2};
  const std::array<std::size_t, 3> strides{1, 5, 20};
  auto h = rt.register_block(b.data(), std::span<const std::size_t>(dims), std::span<const std::size_t>(strides), "b");
  const DataLayout& layout = h.layout();
  EXPECT_EQ(layout.kind, DataLayout::Kind::block);
  EXPECT_EQ(layout.ndim, 3u);
  EXPECT_EQ(layout.nx(), 4u);
  EXPECT_EQ(layout.ny(), 3u);
  EXPECT_EQ(layout.nz(), 2u);
  EXPECT_EQ(layout.ld(), 5u);
  EXPECT_EQ(layout.strides[2], 20u);
  EXPECT_EQ(layout.element_count(), 24u);
  EXPECT_EQ(layout.span_bytes(), (3 + 2 * 5 + 1 * 20 + 1) * sizeof(int));
}

TEST(Data, BadLayoutsThrow) {
  Runtime rt;
  std::vector<int> b(100);
  const std::array<std::size_t, 2> dims{4, 3};
  const std::array<std::size_t, 2> not_contiguous{2, 8};
  const std::array<std::size_t, 2> overlapping{1, 3};
  const std::array<std::size_t, 1> short_strides{1};
  EXPECT_THROW((void)rt.register_block(b.data(), std::span<const std::size_t>(dims),
                                       std::span<const std::size_t>(not_contiguous)),
               InvalidArgument);
  EXPECT_THROW(
      (void)rt.register_block(b.data(), std::span<const std::size_t>(dims), std::span<const std::size_t>(overlapping)),
      InvalidArgument);
  EXPECT_THROW((void)rt.register_block(b.data(), std::span<const std::size_t>(dims),
                                       std::span<const std::size_t>(short_strides)),
               InvalidArgument);
  const std::size_t five_dims[5] = {1, 1, 1, 1, 1};
  EXPECT_THROW((void)DataLayout::block(5, five_dims, five_dims, 4), InvalidArgument);
  EXPECT_THROW((void)DataLayout::block(0, five_dims, five_dims, 4), InvalidArgument);

  try {
    (void)rt.register_data(nullptr, DataLayout::variable(4), "nothing");
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("nothing"), std::string::npos) << e.what();
  }
  int x = 0;
  EXPECT_THROW((void)rt.register_data(&x, DataLayout::variable(0)), InvalidArgument);

  // Sizes beyond what size_t counts (they wrapped to 0 bytes), and layouts set by hand that the
  // factories would refuse.
  constexpr std::size_t kHuge = std::numeric_limits<std::size_t>::max() / 4 + 1;
  EXPECT_THROW((void)DataLayout::vector(kHuge, 8), InvalidArgument);
  EXPECT_THROW((void)DataLayout::matrix(1ULL << 33, 1ULL << 33, 1ULL << 33, 8), InvalidArgument);
  // Their messages name the call the application made, not the block it is built as.
  hetflow::test::expect_invalid_argument([] { (void)DataLayout::vector(kHuge, 8); }, {"DataLayout::vector:"});
  hetflow::test::expect_invalid_argument([] { (void)DataLayout::matrix(1ULL << 33, 1ULL << 33, 1ULL << 33, 8); },
                                         {"DataLayout::matrix:"});
  hetflow::test::expect_invalid_argument([&] { (void)rt.register_vector(b.data(), static_cast<std::size_t>(-1)); },
                                         {"DataLayout::vector:"});
  DataLayout nine_dims = DataLayout::vector(4, sizeof(int));
  nine_dims.ndim = 9;
  DataLayout small_ld = DataLayout::matrix(4, 2, 4, sizeof(int));
  small_ld.strides[1] = 1;
  DataLayout strided = DataLayout::vector(4, sizeof(int));
  strided.strides[0] = 3;
  DataLayout wrapped = DataLayout::vector(4, sizeof(int));
  wrapped.dims[0] = kHuge;
  for (const DataLayout& layout : {nine_dims, small_ld, strided, wrapped}) {
    EXPECT_THROW((void)rt.register_data(b.data(), layout), InvalidArgument);
  }
}

TEST(Data, BytesOfRegisteredDataAreRefusedToOtherData) {
  // Two handles over the same bytes would not order their tasks: a writer through one raced
  // the tasks of the other, silently.
  Runtime rt(Config{.ncpus = 2});
  std::vector<std::int64_t> v(100, 1);
  auto whole = rt.register_vector(v.data(), v.size(), "whole");
  auto doubled = rt.submit(TaskOptions{.data = {RW(whole)}}, [&v] {
    for (auto& x : v) x *= 2;
  });
  hetflow::test::expect_invalid_argument([&] { (void)rt.register_vector(v.data() + 50, 10, "part"); },
                                         {"register_data", "'part'", "'whole'", "registered already"});
  EXPECT_THROW((void)rt.register_vector(v.data(), v.size()), InvalidArgument);
  EXPECT_THROW((void)rt.register_variable(v.back()), InvalidArgument);
  EXPECT_THROW((void)rt.register_matrix(v.data() + 90, 1, 2, 20), InvalidArgument);  // its last column only
  doubled.get();                                                                     // the refusals left the task alone
  EXPECT_EQ(v[0], 2);
  EXPECT_EQ(v[99], 2);

  // Once let go, the bytes are free again; neighbours never shared any.
  rt.unregister(whole);
  auto low = rt.register_vector(v.data(), 50, "low");
  auto high = rt.register_vector(v.data() + 50, 50, "high");
  rt.unregister(low);
  rt.unregister(high);

  // The callers that order overlapping data themselves may register them.
  auto first = rt.register_overlapping_data(v.data(), DataLayout::vector(100, sizeof(std::int64_t)));
  auto second = rt.register_overlapping_data(v.data() + 10, DataLayout::vector(10, sizeof(std::int64_t)));
  rt.unregister(first);
  rt.unregister(second);
}

TEST(Data, InterleavedTilesOfOneMatrixAreNotOverlaps) {
  // Tiles of a column-major matrix share no byte although their spans cross (ld > nx): each is
  // checked by its runs, not by its span.
  Runtime rt(Config{.ncpus = 1});
  constexpr std::size_t n = 8;
  constexpr std::size_t b = 4;
  std::vector<double> m(n * n);
  std::vector<hetflow::DataHandle> tiles;
  for (std::size_t j = 0; j < n; j += b) {
    for (std::size_t i = 0; i < n; i += b) tiles.push_back(rt.register_matrix(m.data() + j * n + i, b, b, n));
  }
  // A tile across four of them is refused; so is one column of another tile's.
  EXPECT_THROW((void)rt.register_matrix(m.data() + 2 * n + 2, b, b, n), InvalidArgument);
  EXPECT_THROW((void)rt.register_vector(m.data() + 5 * n + 4, b), InvalidArgument);
  for (const hetflow::DataHandle& tile : tiles) rt.unregister(tile);

  // The even and the odd columns as two blocks (stride 2 columns) interleave without sharing.
  const std::array<std::size_t, 2> dims{n, n / 2};
  const std::array<std::size_t, 2> strides{1, 2 * n};
  auto even = rt.register_block(m.data(), std::span<const std::size_t>(dims), std::span<const std::size_t>(strides));
  auto odd = rt.register_block(m.data() + n, std::span<const std::size_t>(dims), std::span<const std::size_t>(strides));
  // A column-major layout of rows (one element each, every n) meets both.
  EXPECT_THROW((void)rt.register_matrix(m.data() + 3, 1, n, n), InvalidArgument);
  rt.unregister(even);
  EXPECT_THROW((void)rt.register_matrix(m.data() + 3, 1, n, n), InvalidArgument);
  rt.unregister(odd);
  rt.unregister(rt.register_matrix(m.data() + 3, 1, n, n));
}

TEST(Data, BytesOfDataBeingUnregisteredAreRefusedUntilItsTasksEnd) {
  Runtime rt(Config{.ncpus = 1});
  std::int64_t x = 0;
  auto h = rt.register_variable(x, "x");
  std::promise<void> gate;
  auto running = rt.submit(TaskOptions{.data = {RW(h)}}, [&x, opened = gate.get_future().share()] {
    opened.wait();
    x = 7;
  });
  rt.unregister_async(h);
  hetflow::test::expect_invalid_argument([&] { (void)rt.register_variable(x, "again"); },
                                         {"'again'", "'x'", "being unregistered"});
  gate.set_value();
  running.get();
  rt.unregister(h);  // waits until it is let go
  auto again = rt.register_variable(x, "again");
  EXPECT_EQ(x, 7);
  rt.unregister(again);
}

TEST(Data, AnEmptyVectorRegistersWithItsNullPointer) {
  // An empty std::vector's data() is null; it was refused as a null pointer.
  Runtime rt(Config{.ncpus = 1});
  std::vector<double> none;
  auto handle = rt.register_vector(none.data(), none.size(), "none");
  std::size_t seen = 99;
  rt.submit(TaskOptions{.data = {RW(handle)}}, [&] { seen = handle.layout().element_count(); }).get();
  EXPECT_EQ(seen, 0u);
  rt.unregister(handle);
  EXPECT_THROW((void)rt.register_vector(static_cast<double*>(nullptr), 1), InvalidArgument);
}

TEST(Data, EmptyHandle) {
  hetflow::DataHandle empty;
  EXPECT_FALSE(empty);
  EXPECT_FALSE(empty.registered());
  EXPECT_THROW((void)empty.layout(), InvalidArgument);
  EXPECT_THROW((void)empty.name(), InvalidArgument);
  Runtime rt;
  EXPECT_THROW((void)rt.submit(TaskOptions{.data = {R(empty)}}, [] {}), InvalidArgument);
  EXPECT_THROW((void)rt.acquire(empty, AccessMode::R), InvalidArgument);
  EXPECT_THROW(rt.unregister(empty), InvalidArgument);
  EXPECT_THROW(rt.release(empty), InvalidArgument);
}

TEST(Data, AcquireWaitsForEarlierWriters) {
  Runtime rt;
  std::int64_t x = 0;
  auto h = rt.register_variable(x);
  for (int round = 1; round <= 20; ++round) {
    (void)rt.submit(TaskOptions{.data = {RW(h)}}, [&x, round] {
      if (round % 5 == 0) std::this_thread::sleep_for(1ms);
      x = x * 3 + round;
    });
    std::int64_t expected = 0;
    for (int i = 1; i <= round; ++i) expected = expected * 3 + i;
    Acquisition a = rt.acquire(h, AccessMode::R);
    ASSERT_TRUE(a.active());
    EXPECT_EQ(a.data(), &x);
    EXPECT_EQ(*a.as<std::int64_t>(), expected);
  }
}

TEST(Data, AcquireHoldsBackLaterWriters) {
  Runtime rt;
  int x = 1;
  auto h = rt.register_variable(x);
  Acquisition a = rt.acquire(h, AccessMode::RW);
  auto writer = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { x = x * 10; });
  EXPECT_FALSE(writer.wait_for(kHeldBack));
  EXPECT_EQ(writer.status(), hetflow::TaskStatus::pending);
  *a.as<int>() = 5;  // the application writes while it holds the data
  a.release();
  EXPECT_FALSE(a.active());
  EXPECT_EQ(a.data(), nullptr);
  a.release();  // a second release does nothing
  writer.get();
  Acquisition after = rt.acquire(h, AccessMode::R);
  EXPECT_EQ(*after.as<int>(), 50);
}

TEST(Data, ReadAcquisitionHoldsBackWritersButNotReaders) {
  Runtime rt;
  int x = 4;
  auto h = rt.register_variable(x);
  std::optional<Acquisition> a(rt.acquire(h, AccessMode::R));
  auto reader = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
  EXPECT_TRUE(reader.wait_for(kPatience));  // readers share the data with the application
  EXPECT_EQ(reader.get(), 4);
  auto writer = rt.submit(TaskOptions{.data = {W(h)}}, [&x] { x = 8; });
  EXPECT_FALSE(writer.wait_for(kHeldBack));
  EXPECT_EQ(*a->as<int>(), 4);
  a.reset();  // RAII release
  writer.get();
  EXPECT_EQ(*rt.acquire(h, AccessMode::R).as<int>(), 8);
}

// An acquisition this thread holds that a new one would wait for could never be released:
// refused, naming both; two reads share the data; another thread simply waits.
TEST(Data, AcquiringWhatThisThreadHoldsInAConflictingModeIsRefused) {
  Runtime rt;
  int x = 4;
  auto h = rt.register_variable(x, "x");
  for (auto [held_mode, new_mode] : {std::pair{AccessMode::R, AccessMode::RW}, std::pair{AccessMode::RW, AccessMode::R},
                                     std::pair{AccessMode::W, AccessMode::W}}) {
    Acquisition held = rt.acquire(h, held_mode);
    try {
      (void)rt.acquire(h, new_mode);
      ADD_FAILURE() << "expected InvalidArgument";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("this thread holds an acquisition"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
    }
  }
  Acquisition first = rt.acquire(h, AccessMode::R);
  EXPECT_EQ(*rt.acquire(h, AccessMode::R).as<int>(), 4);
  std::thread other([&] { *rt.acquire(h, AccessMode::RW).as<int>() = 6; });  // waits for the release
  std::this_thread::sleep_for(kHeldBack);
  EXPECT_EQ(x, 4);
  first.release();
  other.join();
  EXPECT_EQ(*rt.acquire(h, AccessMode::R).as<int>(), 6);
}

// A thread waiting, without a deadline, for a task that cannot start before the thread releases
// what it holds (directly or through another task) would wait for ever: refused, naming both.
// A wait with a deadline ends at it, and another thread's wait is a wait.
TEST(Data, WaitingForATaskBehindAnAcquisitionThisThreadHoldsIsRefused) {
  Runtime rt;
  int x = 4;
  int y = 0;
  auto hx = rt.register_variable(x, "x");
  auto hy = rt.register_variable(y, "y");
  Acquisition held = rt.acquire(hx, AccessMode::W);
  auto reader = rt.submit(TaskOptions{.data = {R(hx), W(hy)}, .name = "reader"}, [&] { y = x; });
  auto after = rt.submit(TaskOptions{.data = {R(hy)}, .name = "after"}, [&] { return y; });
  auto unrelated = rt.submit(TaskOptions{.name = "unrelated"}, [] { return 1; });
  EXPECT_EQ(unrelated.get(), 1);
  for (auto* future : {static_cast<hetflow::FutureBase*>(&reader), static_cast<hetflow::FutureBase*>(&after)}) {
    try {
      future->wait();
      ADD_FAILURE() << "expected hetflow::Error";
    } catch (const hetflow::Error& e) {
      EXPECT_NE(std::string(e.what()).find("releases what it holds (acquire 'x')"), std::string::npos) << e.what();
    }
  }
  try {
    rt.wait_all();
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    EXPECT_NE(std::string(e.what()).find("waiting for every task would never end"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(after.wait_for(kHeldBack));
  EXPECT_FALSE(rt.wait_all_until(std::chrono::steady_clock::now() + kHeldBack));
  std::thread other([&] { EXPECT_EQ(after.get(), 7); });  // waits for the release
  *held.as<int>() = 7;
  std::this_thread::sleep_for(kHeldBack);
  held.release();
  other.join();
  rt.wait_all();
  EXPECT_EQ(y, 7);

  // Moved to another thread that releases it, an acquisition is nobody's: waiting here is a wait.
  Acquisition moved = rt.acquire(hx, AccessMode::W);
  auto later = rt.submit(TaskOptions{.data = {R(hx)}}, [&x] { return x; });
  std::thread releaser([acquisition = std::move(moved)]() mutable {
    std::this_thread::sleep_for(kHeldBack);
    *acquisition.as<int>() = 9;
    acquisition.release();
  });
  EXPECT_EQ(later.get(), 9);
  releaser.join();
}

// The same through a task: held R, then a task writing, then a new acquisition on this thread
// that waits for that task. Refused; the refused acquisition holds nothing back afterwards.
TEST(Data, AcquiringBehindATaskThatWaitsForWhatThisThreadHoldsIsRefused) {
  Runtime rt;
  int x = 1;
  auto h = rt.register_variable(x, "x");
  for (AccessMode mode : {AccessMode::R, AccessMode::W}) {
    Acquisition held = rt.acquire(h, AccessMode::R);  // not moved: this thread's
    auto increment = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { ++x; });
    EXPECT_THROW((void)rt.acquire(h, mode), InvalidArgument);
    held.release();
    increment.get();
    auto reader = rt.submit(TaskOptions{.data = {R(h)}}, [&x] { return x; });
    EXPECT_TRUE(reader.wait_for(kPatience));
    EXPECT_EQ(reader.get(), mode == AccessMode::R ? 2 : 3);  // the refused W changed nothing
  }
  EXPECT_EQ(*rt.acquire(h, AccessMode::RW).as<int>(), 3);
}

// Unregistering what the calling task uses, or what this thread holds, would wait for ever:
// refused, and the handle stays usable.
TEST(Data, UnregisteringWhatThisThreadUsesIsRefused) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x, "x");
  auto inside = rt.submit(TaskOptions{.data = {R(h)}}, [&rt, h] { rt.unregister(h); });
  EXPECT_THROW(inside.get(), InvalidArgument);
  {
    Acquisition held = rt.acquire(h, AccessMode::R);
    EXPECT_THROW(rt.unregister(h), InvalidArgument);
  }
  EXPECT_TRUE(h.registered());
  rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { ++x; }).get();
  rt.unregister(h);
  EXPECT_EQ(x, 1);
}

// A handle already being let go (unregister_async, or an unregister refused because it would
// wait, through a task, for what this thread holds): unregistering it again from this thread is
// refused the same way rather than waiting for ever, and the handle goes once it is released.
TEST(Data, UnregisteringAgainBehindWhatThisThreadHoldsIsRefused) {
  for (const bool first_async : {false, true}) {
    SCOPED_TRACE(first_async ? "after unregister_async" : "after a refused unregister");
    Runtime rt;
    int a = 0;
    int x = 0;
    auto ha = rt.register_variable(a, "a");
    auto hx = rt.register_variable(x, "x");
    Acquisition held = rt.acquire(ha, AccessMode::RW);
    auto writer = rt.submit(TaskOptions{.data = {R(ha), RW(hx)}}, [&x] { x = 7; });
    if (first_async) {
      rt.unregister_async(hx);
    } else {
      EXPECT_THROW(rt.unregister(hx), InvalidArgument);
    }
    EXPECT_THROW(rt.unregister(hx), InvalidArgument);
    held.release();
    writer.get();
    rt.unregister(hx);  // waits for the letting go
    EXPECT_EQ(x, 7);
    EXPECT_FALSE(hx.registered());
  }
}

TEST(Data, AcquisitionMovesAndReleasesOnce) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x);
  Acquisition a = rt.acquire(h, AccessMode::W);
  Acquisition b = std::move(a);
  EXPECT_FALSE(a.active());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_TRUE(b.active());
  Acquisition c;
  EXPECT_FALSE(c.active());
  c = std::move(b);
  EXPECT_TRUE(c.active());
  auto writer = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { x += 1; });
  EXPECT_FALSE(writer.wait_for(kHeldBack));
  c = Acquisition();  // releases the held data
  writer.get();
  EXPECT_EQ(x, 1);
}

TEST(Data, RuntimeReleaseWithoutAcquisitionObject) {
  Runtime rt;
  int x = 2;
  auto h = rt.register_variable(x, "x");
  Acquisition a = rt.acquire(h, AccessMode::RW);
  auto writer = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { x *= 7; });
  EXPECT_FALSE(writer.wait_for(kHeldBack));
  rt.release(h);
  EXPECT_FALSE(a.active());
  writer.get();
  EXPECT_EQ(x, 14);
  try {
    rt.release(h);
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
  }
  a.release();  // already released through the runtime: nothing more happens
  EXPECT_EQ(x, 14);
}

TEST(Data, StaleAcquisitionDoesNotReleaseAnotherOne) {
  // After Runtime::release, the Acquisition object that still exists must not touch the
  // record the runtime reuses for the next acquisition.
  Runtime rt;
  int x = 0;
  int y = 0;
  auto hx = rt.register_variable(x, "x");
  auto hy = rt.register_variable(y, "y");
  Acquisition ax = rt.acquire(hx, AccessMode::RW);
  rt.release(hx);
  // A later writer of x: the runtime no longer needs the record of the acquisition of x.
  rt.submit(TaskOptions{.data = {W(hx)}}, [&x] { x = 5; }).get();
  Acquisition ay = rt.acquire(hy, AccessMode::RW);
  ax.release();
  auto writer = rt.submit(TaskOptions{.data = {W(hy)}}, [&y] { y = 1; });
  EXPECT_FALSE(writer.wait_for(kHeldBack)) << "y was released by the stale acquisition of x";
  EXPECT_EQ(y, 0);
  EXPECT_NO_THROW(rt.release(hy));  // still held
  writer.get();
  EXPECT_EQ(y, 1);
}

TEST(Data, AcquisitionOutlivesItsHandle) {
  Runtime rt;
  int x = 1;
  std::optional<Acquisition> a;
  {
    auto h = rt.register_variable(x, "short-lived");
    a.emplace(rt.acquire(h, AccessMode::RW));
    *a->as<int>() = 2;
    rt.release(h);
    rt.unregister(h);
  }  // the last reference to the handle is gone
  EXPECT_FALSE(a->active());
  a.reset();  // must not touch the handle (ASan checks)
  EXPECT_EQ(x, 2);
}

TEST(Data, AcquireAfterFailedWriterStillGivesData) {
  Runtime rt;
  int x = 3;
  auto h = rt.register_variable(x);
  auto failing = rt.submit(TaskOptions{.data = {RW(h)}}, [] { throw std::runtime_error("writer failed"); });
  Acquisition a = rt.acquire(h, AccessMode::RW);
  EXPECT_TRUE(failing.ready());
  EXPECT_EQ(*a.as<int>(), 3);
  *a.as<int>() = 4;
  a.release();
  // The failure does not outlive the acquisition: later tasks run.
  auto next = rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return ++x; });
  EXPECT_EQ(next.get(), 5);
}

TEST(Data, UnregisterWaitsAndLeavesDataValid) {
  Runtime rt;
  std::vector<long> v(64, 1);
  auto h = rt.register_vector(v.data(), v.size(), "v");
  for (int i = 0; i < 50; ++i) {
    (void)rt.submit(TaskOptions{.data = {RW(h)}}, [&v, i] {
      if (i % 10 == 0) std::this_thread::sleep_for(200us);
      for (auto& e : v) e = e * 2 + i;
    });
  }
  rt.unregister(h);
  long expected = 1;
  for (int i = 0; i < 50; ++i) expected = expected * 2 + i;
  for (long e : v) EXPECT_EQ(e, expected);
  EXPECT_FALSE(h.registered());
  EXPECT_EQ(h.host_ptr(), v.data());
  EXPECT_EQ(h.layout().nx(), 64u);
  EXPECT_EQ(h.name(), "v");
  rt.unregister(h);  // twice: nothing to do
}

TEST(Data, UnregisteredHandleIsRejected) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x, "gone");
  rt.unregister(h);
  for (auto attempt :
       {+[](Runtime&r, const hetflow::DataHandle&d) { (void)r.acquire(d, AccessMode::R); },
        +[](Runtime&r, const hetflow::DataHandle&d) { (void)r.submit(TaskOptions{.data = {RW(d)}}, [] {}); },
        +[](Runtime&r, const hetflow::DataHandle&d) {
          static const hetflow::Codelet codelet{.name = "c", .cpu = [](hetflow::TaskContext&) {}};
          (void)r.insert(codelet, {.data = {R(d)}});
        }}) {
    try {
      attempt(rt, h);
      ADD_FAILURE() << "expected InvalidArgument";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("gone"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("unregistered"), std::string::npos) << e.what();
    }
  }
  // The same buffer can be registered again.
  auto again = rt.register_variable(x, "again");
  EXPECT_EQ(rt.submit(TaskOptions{.data = {RW(again)}}, [&x] { return ++x; }).get(), 1);
}

TEST(Data, NoTaskAcceptedDuringAnUnregisterRunsAfterIt) {
  // A task checked against the handle before unregister began, but put in the graph after its
  // token, ran once unregister had returned (the application frees its buffer then).
  Runtime rt(Config{.ncpus = 2u});
  const int rounds = static_cast<int>(hetflow::test::scaled(200, 20));
  int late = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<long> buffer(8, 0);
    auto handle = rt.register_vector(buffer.data(), buffer.size());
    std::atomic<bool> unregistered{false};
    std::atomic<int> ran_after{0};
    const hetflow::Codelet touch{.name = "touch", .cpu = [&](hetflow::TaskContext& context) {
                                   if (unregistered.load()) ran_after.fetch_add(1);
                                   context.buffer(0).as<long>()[0] += 1;
                                 }};
    std::thread submitter([&] {
      try {
        for (;;) (void)rt.insert(touch, {.data = {RW(handle)}});
      } catch (const InvalidArgument&) {
        // the handle is unregistered: the loop ends
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(50 * (round % 20)));
    rt.unregister(handle);
    unregistered.store(true);
    submitter.join();
    rt.wait_all();
    late += ran_after.load();
  }
  EXPECT_EQ(late, 0) << "task bodies ran on a buffer after unregister() returned";
}

TEST(Data, HandleOfAnotherRuntimeIsRejected) {
  Runtime a;
  Runtime b;
  int x = 0;
  auto h = a.register_variable(x, "mine");
  EXPECT_THROW((void)b.submit(TaskOptions{.data = {R(h)}}, [] {}), InvalidArgument);
  EXPECT_THROW((void)b.acquire(h, AccessMode::R), InvalidArgument);
  EXPECT_THROW(b.unregister(h), InvalidArgument);
  EXPECT_TRUE(h.registered());
  // Nor does b release a's acquisition of it.
  auto held = a.acquire(h, AccessMode::RW);
  EXPECT_THROW(b.release(h), InvalidArgument);
  EXPECT_TRUE(held.active());
  a.release(h);
  EXPECT_FALSE(held.active());
}

TEST(Data, BadAccessModeThrows) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x);
  for (auto bad : {static_cast<AccessMode>(6), static_cast<AccessMode>(0), static_cast<AccessMode>(4)}) {
    try {
      (void)rt.submit(TaskOptions{.data = {{h, bad}}}, [] {});
      ADD_FAILURE() << "expected InvalidArgument";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(static_cast<int>(bad))), std::string::npos) << e.what();
    }
    EXPECT_THROW((void)rt.acquire(h, bad), InvalidArgument);
  }
  // Nothing was left half-submitted: the handle is free.
  EXPECT_EQ(rt.submit(TaskOptions{.data = {RW(h)}}, [&x] { return ++x; }).get(), 1);
}

// Tasks with many accesses: their records outgrow the task's inline ones and the pooled lists
// (more than 8), and past 65535 the task is refused, saying so.
TEST(Data, ManyAccessesInOneTask) {
  Runtime rt(Config{.ncpus = 2});
  std::vector<int> values(300, 1);
  std::vector<hetflow::DataHandle> handles;
  for (int& v : values) handles.push_back(rt.register_variable(v));
  for (std::size_t count : {3u, 5u, 8u, 9u, 300u}) {
    SCOPED_TRACE(count);
    std::vector<hetflow::DataAccess> accesses;
    for (std::size_t i = 0; i < count; ++i) accesses.push_back(i == 0 ? RW(handles[0]) : R(handles[i]));
    auto sum = rt.submit(TaskOptions{.data_list = accesses}, [&values, count] {
      int total = 0;
      for (std::size_t i = 1; i < count; ++i) total += values[i];
      values[0] = total;
      return total;
    });
    EXPECT_EQ(sum.get(), static_cast<int>(count) - 1);
  }
  const std::vector<hetflow::DataAccess> too_many(65536, R(handles[1]));
  try {
    (void)rt.submit(TaskOptions{.data_list = too_many}, [] {});
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("names 65536 data accesses; a task may name at most 65535"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(rt.submit(TaskOptions{.data = {RW(handles[1])}}, [&values] { return ++values[1]; }).get(), 2);
}

// On one runtime contributions are tasks that read and write the data, one after the other: none
// is lost, and a reader after them sees their sum.
TEST(Data, ReduxContributionsRunOneAfterTheOther) {
  Runtime rt(Config{.ncpus = 4});
  long sum = 0;
  auto h = rt.register_variable(sum, "sum");
  for (int i = 1; i <= 200; ++i) {
    rt.submit(TaskOptions{.data = {hetflow::Redux(h)}}, [&sum, i] {
      const long before = sum;
      std::this_thread::yield();
      sum = before + i;
    });
  }
  long seen = 0;
  rt.submit(TaskOptions{.data = {R(h)}}, [&] { seen = sum; });
  rt.wait_all();
  EXPECT_EQ(seen, 200 * 201 / 2);
  EXPECT_THROW((void)rt.acquire(h, AccessMode::Redux), InvalidArgument);
}

TEST(Data, AccessModeNames) {
  EXPECT_EQ(hetflow::parse_access_mode("r"), AccessMode::R);
  EXPECT_EQ(hetflow::parse_access_mode("W"), AccessMode::W);
  EXPECT_EQ(hetflow::parse_access_mode("rw"), AccessMode::RW);
  EXPECT_EQ(hetflow::access_mode_name(AccessMode::RW), "RW");
  EXPECT_EQ(hetflow::parse_access_mode("redux"), AccessMode::Redux);
  EXPECT_EQ(hetflow::access_mode_name(AccessMode::Redux), "REDUX");
  try {
    (void)hetflow::parse_access_mode("RX");
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("RX"), std::string::npos);
  }
  EXPECT_TRUE(hetflow::reads(AccessMode::RW));
  EXPECT_TRUE(hetflow::writes(AccessMode::RW));
  EXPECT_FALSE(hetflow::writes(AccessMode::R));
  EXPECT_FALSE(hetflow::reads(AccessMode::W));
}

TEST(Data, ShutdownUnregistersEverything) {
  std::vector<int> values(8, 0);
  std::vector<hetflow::DataHandle> handles;
  {
    Runtime rt;
    for (auto& v : values) handles.push_back(rt.register_variable(v));
    for (int round = 0; round < 10; ++round) {
      for (std::size_t i = 0; i < values.size(); ++i) {
        (void)rt.submit(TaskOptions{.data = {RW(handles[i])}}, [&values, i] { values[i] += 1; });
      }
    }
  }
  for (int v : values) EXPECT_EQ(v, 10);
  for (const auto& h : handles) EXPECT_FALSE(h.registered());
}

// A runtime destroyed while this thread holds acquisitions would wait for them for ever: they
// are released (the task behind one sees what the program wrote), and the acquisition objects,
// released after the runtime is gone, do nothing. One held by another thread is waited for.
TEST(Data, ShutdownReleasesTheAcquisitionsThisThreadHolds) {
  int x = 1;
  int y = 0;
  int w = 0;
  std::optional<Acquisition> held;
  std::thread other;
  {
    Runtime rt;
    auto hx = rt.register_variable(x, "x");
    auto hy = rt.register_variable(y, "y");
    auto hw = rt.register_variable(w, "w");
    held.emplace(rt.acquire(hx, AccessMode::W));
    (void)rt.submit(TaskOptions{.data = {R(hx), W(hy)}}, [&] { y = x; });
    *held->as<int>() = 5;
    std::atomic<bool> acquired{false};
    other = std::thread([&rt, &acquired, hw] {
      Acquisition mine = rt.acquire(hw, AccessMode::RW);
      acquired = true;
      std::this_thread::sleep_for(kHeldBack);
      *mine.as<int>() = 6;
    });
    while (!acquired) std::this_thread::yield();
  }
  other.join();
  EXPECT_EQ(y, 5);
  EXPECT_EQ(w, 6);
  EXPECT_FALSE(held->active());
  held.reset();
}

// An acquisition moved away from the thread that made it, with no task after it, is nobody's
// to release at shutdown: the destructor waits for it. It did so for ever without a word (the
// shutdown's unregistration waited, not wait_all); it says so on stderr, as with tasks after it.
TEST(Data, ShutdownWaitingForAnAcquisitionNobodyReleasesSaysSo) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::fflush(stderr);
  const int saved_stderr = ::dup(STDERR_FILENO);
  ASSERT_GE(saved_stderr, 0);
  ASSERT_EQ(::dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
  ::close(fds[1]);
  int x = 1;
  Acquisition kept;
  auto rt = std::make_unique<Runtime>(Config{.ncpus = 2});
  auto hx = rt->register_variable(x, "x");
  std::thread([&] { kept = rt->acquire(hx, AccessMode::RW); }).join();
  *kept.as<int>() = 5;
  std::thread destroyer([&rt] { rt.reset(); });
  std::string said;
  pollfd readable{.fd = fds[0], .events = POLLIN, .revents = 0};
  while (said.find("acquire 'x'") == std::string::npos &&
         ::poll(&readable, 1, static_cast<int>(std::chrono::milliseconds(kPatience).count())) == 1) {
    char chunk[512];
    const ssize_t got = ::read(fds[0], chunk, sizeof chunk);
    if (got <= 0) break;
    said.append(chunk, static_cast<std::size_t>(got));
  }
  kept.release();  // lets the destructor go on
  destroyer.join();
  std::fflush(stderr);
  ::dup2(saved_stderr, STDERR_FILENO);
  ::close(saved_stderr);
  ::close(fds[0]);
  EXPECT_NE(said.find("acquisitions still held"), std::string::npos) << said;
  EXPECT_NE(said.find("acquire 'x'"), std::string::npos) << said;
  EXPECT_EQ(x, 5);
}

}  // namespace
