// The owner-computes protocol, built twice: over the loopback transport (ranks are threads of
// this process, each with its own Runtime, all running the same program), and, with
// HETFLOW_CONTEXT_TEST_OVER_MPI, under mpirun over MPI (each test on a communicator of the first
// ranks it needs; the others wait for it).
#include <gtest/gtest.h>
#include <unistd.h>
#ifdef HETFLOW_CONTEXT_TEST_OVER_MPI
#include <mpi.h>
#endif

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "hetflow/mpi.hpp"

namespace {

using hetflow::AccessMode;
using hetflow::Codelet;
using hetflow::DataLayout;
using hetflow::TaskContext;
namespace mpi = hetflow::mpi;

hetflow::Config default_config(int /*rank*/) { return hetflow::Config{.ncpus = 2}; }

#ifdef HETFLOW_CONTEXT_TEST_OVER_MPI
int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// Whether this process sees what rank `rank` prints or writes: under mpirun, only its own.
bool sees_rank(int rank) { return world_rank() == rank; }

using RankProgram = std::function<void(hetflow::Runtime&, const std::shared_ptr<mpi::Transport>&)>;

// Runs `program(runtime, transport)` on the first `ranks` processes (skips the test when there
// are fewer), each with a runtime configured by `configure(rank)`; every process waits for them.
void spmd_over_transport(int ranks, const RankProgram& program,
                         const std::function<hetflow::Config(int)>& configure = default_config) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < ranks) GTEST_SKIP() << "needs " << ranks << " ranks, mpirun gave " << size;
  MPI_Comm group = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, world_rank() < ranks ? 0 : MPI_UNDEFINED, world_rank(), &group),
            MPI_SUCCESS);
  std::exception_ptr error;
  if (group != MPI_COMM_NULL) {
    try {
      hetflow::Runtime rt(configure(world_rank()));
      program(rt, mpi::over_communicator(&group));
    } catch (...) {
      error = std::current_exception();
    }
    MPI_Comm_free(&group);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (error) std::rethrow_exception(error);
}
#else
bool sees_rank(int /*rank*/) { return true; }

using RankProgram = std::function<void(hetflow::Runtime&, const std::shared_ptr<mpi::Transport>&)>;

// Runs `program(runtime, transport)` on `ranks` threads, each a rank with its own runtime
// (configured by `configure(rank)`).
void spmd_over_transport(int ranks, const RankProgram& program,
                         const std::function<hetflow::Config(int)>& configure = default_config) {
  auto transports = mpi::loopback(ranks);
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(ranks));
  for (int rank = 0; rank < ranks; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        hetflow::Runtime rt(configure(rank));
        program(rt, transports[static_cast<std::size_t>(rank)]);
      } catch (...) {
        errors[static_cast<std::size_t>(rank)] = std::current_exception();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}
#endif

// Runs `program(context)` on `ranks` ranks (spmd_over_transport).
void spmd(int ranks, const std::function<void(mpi::Context&)>& program,
          const std::function<hetflow::Config(int)>& configure = default_config) {
  spmd_over_transport(
      ranks,
      [&program](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
        mpi::Context context(rt, transport);
        program(context);
      },
      configure);
}

DataLayout doubles(std::size_t n) { return DataLayout::vector(n, sizeof(double)); }

// y += x, elementwise; records the rank it ran on in the first element of `ran_on` when given.
const Codelet kAdd{.name = "add", .cpu = [](TaskContext& context) {
                     const auto y = context.buffer(0);
                     const auto x = context.buffer(1);
                     for (std::size_t i = 0; i < y.elements(); ++i) y.as<double>()[i] += x.as<double>()[i];
                   }};
const Codelet kScale{.name = "scale", .cpu = [](TaskContext& context) {
                       const auto x = context.buffer(0);
                       for (std::size_t i = 0; i < x.elements(); ++i) x.as<double>()[i] *= context.arg<double>();
                     }};

TEST(MpiContext, ATaskRunsOnTheOwnerOfWhatItWritesAndGetsWhatItReads) {
  spmd(3, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> y(100, 0.0), x(100, 0.0);
    if (me == 1) std::iota(x.begin(), x.end(), 0.0);  // the owner's data
    auto hy = context.register_data(y.data(), doubles(100), /*owner=*/2, /*tag=*/1);
    auto hx = context.register_data(x.data(), doubles(100), /*owner=*/1, /*tag=*/2);
    auto future = context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
    EXPECT_EQ(future.valid(), me == 2);
    context.wait_all();
    if (me == 2) {
      for (int i = 0; i < 100; ++i) ASSERT_EQ(y[static_cast<std::size_t>(i)], i);
    }
    if (me == 0) {
      EXPECT_EQ(y[5], 0.0);  // rank 0 took no part
    }
    EXPECT_EQ(context.holder(hy), 2);
    const auto sent = context.sent();
    // x went from its owner to y's: a header (8 bytes) and the data.
    EXPECT_EQ(sent[2].messages, me == 1 ? 2u : 0u);
    EXPECT_EQ(sent[2].bytes, me == 1 ? 808u : 0u);
  });
}

// A handle named twice keeps its two buffers, numbered as given, as in Runtime::insert (the
// second went missing: buffer 2 was out of range, or the task read the wrong data).
TEST(MpiContext, AHandleNamedTwiceKeepsItsBuffersInTheOrderGiven) {
  static const Codelet sum_of_the_rest{.name = "sum of the rest", .cpu = [](TaskContext& context) {
                                         auto out = context.buffer(0).as<double>();
                                         out[0] = 0;
                                         for (std::size_t b = 1; b < context.buffer_count(); ++b)
                                           out[0] += context.buffer(b).as<const double>()[0];
                                       }};
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(1, context.rank() == 0 ? 3.0 : 0.0), y(1, 0.0);
    auto hx = context.register_data(x.data(), doubles(1), 0, 1);
    auto hy = context.register_data(y.data(), doubles(1), 1, 2);
    context.insert(sum_of_the_rest, {.data = {hetflow::W(hy), hetflow::R(hx), hetflow::R(hx)}});
    context.wait_all();
    if (context.rank() == 1) {
      EXPECT_EQ(y[0], 6.0);
    }
  });
}

// Two Contexts over one transport would take each other's messages: the second is refused
// while the first lives.
TEST(MpiContext, ATransportServesOneContextAtATime) {
  auto transports = mpi::loopback(1);
  hetflow::Runtime rt(default_config(0));
  {
    mpi::Context first(rt, transports[0]);
    EXPECT_THROW(mpi::Context(rt, transports[0]), hetflow::InvalidArgument);
  }
  mpi::Context again(rt, transports[0]);
  EXPECT_EQ(again.size(), 1);
}

TEST(MpiContext, ACopyIsReusedByLaterReadersUntilItsDataIsWritten) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(10, me == 0 ? 1.0 : 0.0), y0(10, 0.0), y1(10, 0.0), y2(10, 0.0);
    auto hx = context.register_data(x.data(), doubles(10), 0, 0);
    auto hy0 = context.register_data(y0.data(), doubles(10), 1, 1);
    auto hy1 = context.register_data(y1.data(), doubles(10), 1, 2);
    auto hy2 = context.register_data(y2.data(), doubles(10), 1, 3);
    context.insert(kAdd, {.data = {hetflow::RW(hy0), hetflow::R(hx)}});  // x: 0 -> 1
    context.insert(kAdd, {.data = {hetflow::RW(hy1), hetflow::R(hx)}});  // cached on 1
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 3.0);            // x written on 0
    context.insert(kAdd, {.data = {hetflow::RW(hy2), hetflow::R(hx)}});  // sent again
    context.wait_all();
    if (me == 1) {
      EXPECT_EQ(y0[3], 1.0);
      EXPECT_EQ(y1[3], 1.0);
      EXPECT_EQ(y2[3], 3.0);
    }
    EXPECT_EQ(context.sent()[1].messages, me == 0 ? 4u : 0u);  // two transfers
  });
}

TEST(MpiContext, DataWrittenAwayFromItsOwnerIsFetchedFromWhereItWasWritten) {
  spmd(3, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(8, me == 0 ? 2.0 : 0.0), y(8, 0.0);
    auto hx = context.register_data(x.data(), doubles(8), 0, 10);
    auto hy = context.register_data(y.data(), doubles(8), 2, 11);
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 5.0, mpi::Placement{.rank = 1});  // x: 0 -> 1, now 10 on 1
    EXPECT_EQ(context.holder(hx), 1);
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});  // runs on 2, x from 1
    context.wait_all();
    if (me == 2) {
      EXPECT_EQ(y[0], 10.0);
    }
    EXPECT_EQ(context.sent()[2].messages, me == 1 ? 2u : 0u);
    if (me == 0) {
      EXPECT_EQ(x[0], 2.0);  // the owner's copy is out of date until it reads it
    }
  });
}

TEST(MpiContext, PlacementOnTheOwnerOfAnotherHandle) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> a(4, 1.0), b(4, 0.0);
    auto ha = context.register_data(a.data(), doubles(4), 0, 0);
    auto hb = context.register_data(b.data(), doubles(4), 1, 1);
    auto future = context.insert(kScale, {.data = {hetflow::RW(ha)}}, 2.0, mpi::Placement{.owner_of = &hb});
    EXPECT_EQ(future.valid(), me == 1);
    context.wait_all();
    EXPECT_EQ(context.holder(ha), 1);
  });
}

// Placed on the owner of data every rank owns, a task went to rank -1: its transfers were sent
// there, and its contributions written before an array (a crash). It runs where the rule puts it.
TEST(MpiContext, PlacementOnDataEveryRankOwnsFollowsTheRule) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> everywhere(4, 1.0), a(4, 1.0), b(4, 2.0);
    auto he = context.register_data(everywhere.data(), doubles(4), mpi::kEveryRank, 0);
    auto ha = context.register_data(a.data(), doubles(4), 0, 1);
    auto hb = context.register_data(b.data(), doubles(4), 1, 2);
    EXPECT_EQ(context.executor({.data = {hetflow::RW(ha), hetflow::R(hb)}}, mpi::Placement{.owner_of = &he}), 0);
    auto future = context.insert(kAdd, {.data = {hetflow::RW(ha), hetflow::R(hb)}}, mpi::Placement{.owner_of = &he});
    EXPECT_EQ(future.valid(), me == 0);
    context.wait_all();
    EXPECT_EQ(context.holder(ha), 0);
    if (me == 0) {
      EXPECT_EQ(a, std::vector<double>(4, 3.0));
    }
  });
}

// Empty data needs no buffer (an empty std::vector's data() is null): refused on its owner only,
// it left the ranks out of step.
TEST(MpiContext, EmptyDataNeedsNoBufferOnAnyRank) {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> none;
    auto empty = context.register_data(none.data(), doubles(0), 0, 0);
    auto everywhere = context.register_data(none.data(), doubles(0), mpi::kEveryRank, 1);
    EXPECT_TRUE(empty.registered());
    EXPECT_TRUE(everywhere.registered());
    context.wait_all();
  });
}

// wait_all while this rank holds an acquisition one of its tasks needs waited for ever (as
// Runtime::wait_all refuses to): it throws there, and the next one, once released, ends. (The
// acquisition is not moved: a moved one may be released by another thread, and is no refusal.)
TEST(MpiContext, WaitAllBehindAnAcquisitionHeldHereThrows) {
  spmd_over_transport(2, [](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
    mpi::Context context(rt, transport);
    const int me = context.rank();
    std::vector<double> a(4, 1.0);
    auto ha = context.register_data(a.data(), doubles(4), 0, 0);
    auto held = me == 0 ? rt.acquire(ha, hetflow::AccessMode::W) : hetflow::Acquisition{};
    context.insert(kScale, {.data = {hetflow::RW(ha)}}, 2.0);
    if (me == 0) {
      EXPECT_THROW(context.wait_all(), hetflow::Error);
      held.release();
    }
    context.wait_all();
    if (me == 0) {
      EXPECT_EQ(a, std::vector<double>(4, 2.0));
    }
  });
}

// Data every rank unregistered from its runtime: a task or a transfer naming it is refused
// alike on every rank before anything moves (its transfer used to fail in the runtime, after
// being counted, and the context then waited for it for ever), and the ranks go on together.
TEST(MpiContext, DataUnregisteredFromTheRuntimeIsRefusedOnEveryRank) {
  spmd_over_transport(2, [](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
    mpi::Context context(rt, transport);
    const int me = context.rank();
    std::vector<double> x(4, 1.0), y(4, me == 1 ? 2.0 : 0.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 0, "x");
    auto hy = context.register_data(y.data(), doubles(4), 1, 1, "y");
    rt.unregister(hx);
    try {
      context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
      ADD_FAILURE() << "a task naming unregistered data was submitted";
    } catch (const hetflow::InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find("'x' was unregistered"), std::string::npos) << error.what();
    }
    EXPECT_THROW(context.get_on(hx, 1), hetflow::InvalidArgument);
    EXPECT_THROW(context.broadcast(hx), hetflow::InvalidArgument);
    context.insert(kScale, {.data = {hetflow::RW(hy)}}, 2.0);
    context.get_on(hy, 0);
    context.wait_all();
    EXPECT_EQ(y, std::vector<double>(4, 4.0));
  });
}

TEST(MpiContext, FlushMakesTheNextReaderReceiveAgain) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(4, me == 0 ? 1.0 : 0.0), y(4, 0.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 0);
    auto hy = context.register_data(y.data(), doubles(4), 1, 1);
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
    context.flush(hx);
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
    context.wait_all();
    if (me == 1) {
      EXPECT_EQ(y[0], 2.0);
    }
    EXPECT_EQ(context.sent()[1].messages, me == 0 ? 4u : 0u);  // two transfers
  });
}

TEST(MpiContext, NonOwnersMayLeaveTheBufferToHetflow) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(16, 4.0), y(16, 1.0);
    auto hx = context.register_data(me == 0 ? x.data() : nullptr, doubles(16), 0, 0);
    auto hy = context.register_data(me == 1 ? y.data() : nullptr, doubles(16), 1, 1);
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
    context.wait_all();
    if (me == 1) {
      EXPECT_EQ(y[15], 5.0);
    }
  });
}

// A 1-D stencil over blocks spread round-robin: each step, block i becomes the mean of its
// neighbours' previous values (ping-pong buffers), checked against the same computation here.
TEST(MpiContext, ADistributedStencilGivesTheSequentialResult) {
  constexpr int kBlocks = 6, kSteps = 12;
  constexpr std::size_t kWidth = 32;
  std::vector<std::vector<double>> expected(2 * kBlocks, std::vector<double>(kWidth));
  for (int b = 0; b < kBlocks; ++b) {
    for (std::size_t i = 0; i < kWidth; ++i)
      expected[static_cast<std::size_t>(b)][i] = b * 100.0 + static_cast<double>(i);
  }
  const auto step_index = [](int step, int block) { return static_cast<std::size_t>((step % 2) * kBlocks + block); };
  for (int step = 0; step < kSteps; ++step) {
    for (int b = 0; b < kBlocks; ++b) {
      auto& out = expected[step_index(step + 1, b)];
      const auto& left = expected[step_index(step, (b + kBlocks - 1) % kBlocks)];
      const auto& self = expected[step_index(step, b)];
      const auto& right = expected[step_index(step, (b + 1) % kBlocks)];
      for (std::size_t i = 0; i < kWidth; ++i) out[i] = (left[i] + self[i] + right[i]) / 3.0;
    }
  }
  static const Codelet mean{.name = "mean", .cpu = [](TaskContext& context) {
                              auto out = context.buffer(0).as<double>();
                              for (std::size_t i = 0; i < kWidth; ++i) {
                                out[i] = (context.buffer(1).as<double>()[i] + context.buffer(2).as<double>()[i] +
                                          context.buffer(3).as<double>()[i]) /
                                         3.0;
                              }
                            }};
  spmd(3, [&](mpi::Context& context) {
    const int me = context.rank();
    std::vector<std::vector<double>> blocks(2 * kBlocks, std::vector<double>(kWidth, 0.0));
    std::vector<hetflow::DataHandle> handles;
    for (int half = 0; half < 2; ++half) {
      for (int b = 0; b < kBlocks; ++b) {
        const int owner = b % context.size();
        auto& block = blocks[static_cast<std::size_t>(half * kBlocks + b)];
        if (half == 0 && owner == me) {
          for (std::size_t i = 0; i < kWidth; ++i) block[i] = b * 100.0 + static_cast<double>(i);
        }
        handles.push_back(context.register_data(block.data(), doubles(kWidth), owner, half * kBlocks + b));
      }
    }
    for (int step = 0; step < kSteps; ++step) {
      for (int b = 0; b < kBlocks; ++b) {
        context.insert(mean, {.data = {hetflow::W(handles[step_index(step + 1, b)]),
                                       hetflow::R(handles[step_index(step, (b + kBlocks - 1) % kBlocks)]),
                                       hetflow::R(handles[step_index(step, b)]),
                                       hetflow::R(handles[step_index(step, (b + 1) % kBlocks)])}});
      }
    }
    context.wait_all();
    for (int b = 0; b < kBlocks; ++b) {
      if (b % context.size() != me) continue;
      const auto& got = blocks[step_index(kSteps, b)];
      for (std::size_t i = 0; i < kWidth; ++i) ASSERT_DOUBLE_EQ(got[i], expected[step_index(kSteps, b)][i]);
    }
  });
}

TEST(MpiContext, ATaskThatFailsFailsItsReadersOnOtherRanksWithTheCause) {
  static const Codelet broken{.name = "broken", .cpu = [](TaskContext&) { throw std::runtime_error("bad pivot"); }};
  spmd(3, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(4, 1.0), y(4, 0.0), z(4, 0.0), w(4, 1.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 0);
    auto hy = context.register_data(y.data(), doubles(4), 1, 1);
    auto hz = context.register_data(z.data(), doubles(4), 2, 2);
    auto hw = context.register_data(w.data(), doubles(4), 0, 3);
    auto failing = context.insert(broken, {.data = {hetflow::RW(hx)}});
    auto reader = context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});  // on 1
    auto next = context.insert(kAdd, {.data = {hetflow::RW(hz), hetflow::R(hy)}});    // on 2, through y
    auto fine = context.insert(kAdd, {.data = {hetflow::RW(hz), hetflow::R(hw)}});    // on 2, after it
    context.wait_all();
    if (me == 0) {
      EXPECT_THROW(failing.get(), std::runtime_error);
    }
    if (me == 1) {
      try {
        reader.get();
        ADD_FAILURE() << "the reader ran on data whose writer failed";
      } catch (const hetflow::DependencyError& error) {
        const std::string what = error.what();
        EXPECT_NE(what.find("rank 0"), std::string::npos) << what;
        EXPECT_NE(what.find("bad pivot"), std::string::npos) << what;
      }
    }
    if (me == 2) {
      EXPECT_THROW(next.get(), hetflow::DependencyError);
      EXPECT_THROW(fine.get(), hetflow::DependencyError);  // z's version failed with `next`
    }
  });
}

TEST(MpiContext, AnMpiFlagThatIsNotABooleanIsRefused) {
  for (const char* flag : {"HETFLOW_MPI_CHECK", "HETFLOW_MPI_STATS"}) {
    setenv(flag, "maybe", 1);  // was taken for "off": a divergent program went unchecked
    try {
      spmd(2, [](mpi::Context&) { ADD_FAILURE() << "the context was made"; });
      if (sees_rank(0) || sees_rank(1))
        ADD_FAILURE() << flag << "=maybe was accepted";  // under mpirun, ranks 2, 3 sit out
    } catch (const hetflow::InvalidArgument& error) {
      EXPECT_EQ(std::string(error.what()),
                std::string(flag) + "='maybe' is not a boolean (1, true, yes, on or 0, false, no, off)");
    }
    unsetenv(flag);
  }
}

// inf or 1e300 seconds made the watchdog speak at once (its waits overflowed nanoseconds); a
// sign or spaces were taken as the other HETFLOW_* variables do not take them.
TEST(MpiContext, AWatchdogThatIsNotSecondsUpToAYearIsRefused) {
  for (const char* bad : {"inf", "1e300", "1e18", "31536001", "nan", "-1", "+5", " 5", "5 ", "0x10", "soon"}) {
    setenv("HETFLOW_MPI_WATCHDOG", bad, 1);
    try {
      spmd(2, [](mpi::Context&) { ADD_FAILURE() << "the context was made"; });
      if (sees_rank(0) || sees_rank(1)) ADD_FAILURE() << "HETFLOW_MPI_WATCHDOG=" << bad << " was accepted";
    } catch (const hetflow::InvalidArgument& error) {
      EXPECT_EQ(std::string(error.what()),
                "HETFLOW_MPI_WATCHDOG='" + std::string(bad) +
                    "': give the seconds without progress after which pending transfers are shown, from 0 (never) "
                    "to 31536000 (a year)");
    }
  }
  for (const char* good : {"", "0", "31536000", "0.5", "2.5e3"}) {  // empty: unset, as for the others
    setenv("HETFLOW_MPI_WATCHDOG", good, 1);
    spmd(2, [](mpi::Context& context) { context.wait_all(); });
  }
  unsetenv("HETFLOW_MPI_WATCHDOG");
}

TEST(MpiContext, RanksThatSubmitDifferentWorkAreToldWhereWithTheCheck) {
  setenv("HETFLOW_MPI_CHECK", "yes", 1);  // any of the engine's words for on
  spmd(3, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 7);
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    context.wait_all();  // the same so far
    // Rank 2 submits another codelet over the same data: the transfers still match, the check
    // does not.
    static const Codelet odd{.name = "odd", .cpu = kScale.cpu};
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    context.insert(context.rank() == 2 ? odd : kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    try {
      context.wait_all();
      ADD_FAILURE() << "rank " << context.rank() << ": the divergence went unnoticed";
    } catch (const hetflow::Error& error) {
      const std::string what = error.what();
      EXPECT_NE(what.find("task 2"), std::string::npos) << what;
      if (context.rank() == 2) {
        EXPECT_NE(what.find("'odd'"), std::string::npos) << what;
      }
    }
  });
  unsetenv("HETFLOW_MPI_CHECK");
}

// After a divergence the transfers that will never match are given up on every rank: the tasks
// that need them fail, the others have finished when wait_all throws (a program that unwinds
// frees their buffers), the context refuses more work, and the runtime ends (it waited for ever
// for the tasks behind the receives, and unwinding corrupted the heap under the running tasks).
TEST(MpiContext, AfterADivergenceNothingWaitsForTransfersThatWillNeverCome) {
  setenv("HETFLOW_MPI_CHECK", "1", 1);
  static const Codelet slow_fill{.name = "slow fill", .cpu = [](TaskContext& context) {
                                   std::this_thread::sleep_for(std::chrono::milliseconds(300));
                                   const auto z = context.buffer(0);
                                   for (std::size_t i = 0; i < z.elements(); ++i) z.as<double>()[i] = 7.0;
                                 }};
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    const int other = 1 - me;
    constexpr std::size_t kBig = std::size_t{1} << 17;  // 1 MiB: past any eager limit
    std::vector<double> mine(kBig, 1.0 + me), theirs(kBig, 0.0), x(kBig, 1.0), z(4, 0.0);
    auto h_mine = context.register_data(mine.data(), doubles(kBig), me, 10 + me, "mine");
    auto h_theirs = context.register_data(theirs.data(), doubles(kBig), other, 10 + other, "theirs");
    // Registered in the same order on both ranks, as the protocol needs.
    auto h0 = me == 0 ? h_mine : h_theirs;
    auto h1 = me == 0 ? h_theirs : h_mine;
    auto hx = context.register_data(x.data(), doubles(kBig), 0, 20, "x");
    auto hz = context.register_data(z.data(), doubles(4), me, 30 + me, "z");
    static_cast<void>(h1);
    // Each rank believes the other must send it its big array (a receive that never matches),
    // and rank 0 sends x to rank 1 for a task rank 1 never submitted (a send that never matches).
    auto reader = context.insert(kAdd, {.data = {hetflow::RW(h_mine), hetflow::R(h_theirs)}});
    if (me == 0) context.insert(kAdd, {.data = {hetflow::RW(h1), hetflow::R(hx)}});
    auto filler = context.insert(slow_fill, {.data = {hetflow::W(hz)}});
    try {
      context.wait_all();
      ADD_FAILURE() << "rank " << me << ": the divergence went unnoticed";
    } catch (const hetflow::Error& error) {
      EXPECT_NE(std::string(error.what()).find("did not submit the same work"), std::string::npos) << error.what();
    }
    // The local task has finished, the one waiting for the other's array failed saying why.
    EXPECT_TRUE(filler.wait_for(std::chrono::seconds(0)));
    EXPECT_EQ(z[0], 7.0);
    ASSERT_TRUE(reader.valid());
    EXPECT_TRUE(reader.wait_for(std::chrono::seconds(0)));
    try {
      reader.get();
      ADD_FAILURE() << "rank " << me << ": the task ran without the data it reads";
    } catch (const hetflow::DependencyError& error) {
      EXPECT_NE(std::string(error.what()).find("never came from rank " + std::to_string(other)), std::string::npos)
          << error.what();
    }
    EXPECT_EQ(mine[0], 1.0 + me);  // untouched
    EXPECT_THROW(context.wait_all(), hetflow::Error);
    EXPECT_THROW(context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0), hetflow::Error);
    static_cast<void>(h0);
  });
  unsetenv("HETFLOW_MPI_CHECK");
}

// The same bytes registered as a 4 x 2 matrix on one rank and 2 x 4 on the other would arrive
// transposed: the check tells.
TEST(MpiContext, DataOfOtherShapesOnOtherRanksAreToldWithTheCheck) {
  setenv("HETFLOW_MPI_CHECK", "1", 1);
  spmd(2, [](mpi::Context& context) {
    std::vector<double> m(8, 1.0);
    const bool wide = context.rank() == 1;
    auto hm = context.register_data(m.data(), DataLayout::matrix(wide ? 4 : 2, wide ? 2 : 4, wide ? 4 : 2, 8), 0, 3);
    context.insert(kScale, {.data = {hetflow::RW(hm)}}, 2.0);
    EXPECT_THROW(context.wait_all(), hetflow::Error);
  });
  unsetenv("HETFLOW_MPI_CHECK");
}

TEST(MpiContext, TheWatchdogShowsTheTransfersThatDoNotMove) {
  setenv("HETFLOW_MPI_WATCHDOG", "0.5", 1);
  testing::internal::CaptureStderr();
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 3.0), y(4, 0.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    auto hy = context.register_data(y.data(), doubles(4), 1, 2, "y");
    if (context.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // late
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
    context.wait_all();
    if (context.rank() == 1) {
      EXPECT_EQ(y[0], 3.0);
    }
  });
  const std::string printed = testing::internal::GetCapturedStderr();
  unsetenv("HETFLOW_MPI_WATCHDOG");
  if (sees_rank(1)) {
    EXPECT_NE(printed.find("watchdog: rank 1"), std::string::npos) << printed;
    EXPECT_NE(printed.find("receive 'x'"), std::string::npos) << printed;
  }
}

// Rank 1 comes to wait_all 1.5 s late (it might never): what the watchdog (after 0.5 s) printed.
std::string printed_while_a_rank_is_late_for_wait_all() {
  setenv("HETFLOW_MPI_WATCHDOG", "0.5", 1);
  testing::internal::CaptureStderr();
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 3.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    if (context.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    context.wait_all();
  });
  std::string printed = testing::internal::GetCapturedStderr();
  unsetenv("HETFLOW_MPI_WATCHDOG");
  return printed;
}

// The others, their work done, say that they wait for the late one there.
TEST(MpiContext, TheWatchdogSpeaksWhenARankIsLateForWaitAll) {
  const std::string printed = printed_while_a_rank_is_late_for_wait_all();
  if (sees_rank(0)) {
    EXPECT_NE(printed.find("watchdog: rank 0: its work is done"), std::string::npos) << printed;
  }
  EXPECT_EQ(printed.find("watchdog: rank 1: its work is done"), std::string::npos) << printed;
}

// The same with HETFLOW_MPI_CHECK: the ranks compare their work first, and the one waiting for
// the late one to do so said nothing (for ever, if that one never came).
TEST(MpiContext, TheWatchdogSpeaksWhenARankIsLateToCompareItsWork) {
  setenv("HETFLOW_MPI_CHECK", "1", 1);
  const std::string printed = printed_while_a_rank_is_late_for_wait_all();
  unsetenv("HETFLOW_MPI_CHECK");
  if (sees_rank(0)) {
    EXPECT_NE(printed.find("watchdog: rank 0: it has waited"), std::string::npos) << printed;
    EXPECT_NE(printed.find("to compare the work they submitted"), std::string::npos) << printed;
  }
  EXPECT_EQ(printed.find("watchdog: rank 1: it has waited"), std::string::npos) << printed;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// wait_all on a thread of its own; `error` gets what it throws.
std::thread wait_all_on_a_thread(mpi::Context& context, std::string& error) {
  return std::thread([&context, &error] {
    try {
      context.wait_all();
    } catch (const hetflow::Error& thrown) {
      error = thrown.what();
    }
  });
}

// A context ending without wait_all waits for its transfers in flight: the watchdog says which.
TEST(MpiContext, TheWatchdogShowsTheTransfersAnEndingContextWaitsFor) {
  setenv("HETFLOW_MPI_WATCHDOG", "0.5", 1);
  testing::internal::CaptureStderr();
  spmd(2, [](mpi::Context& context) {
    // The task outlives the context (only its transfers are waited for): so do its buffers.
    static std::array<std::vector<double>, 2> xs{std::vector<double>(4, 3.0), std::vector<double>(4, 3.0)};
    static std::array<std::vector<double>, 2> ys{std::vector<double>(4, 0.0), std::vector<double>(4, 0.0)};
    const auto rank = static_cast<std::size_t>(context.rank());
    auto hx = context.register_data(xs[rank].data(), doubles(4), 0, 1, "x");
    auto hy = context.register_data(ys[rank].data(), doubles(4), 1, 2, "y");
    if (rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // late
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});            // rank 1 receives x
  });
  const std::string printed = testing::internal::GetCapturedStderr();
  unsetenv("HETFLOW_MPI_WATCHDOG");
  if (sees_rank(1)) {
    EXPECT_TRUE(contains(printed,
                         "watchdog: rank 1: its context ends, and it has waited for 0.5 s for the transfers "
                         "still in flight:\n  receive 'x'"))
        << printed;
  }
}

// A wait_all interrupted from another thread (Ctrl-C in Python) throws; called again, it waits
// for the barrier the first one posted, not a second one the other ranks never post.
TEST(MpiContext, AnInterruptedWaitAllThrowsAndTheNextOneEndsWithTheOthers) {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    if (context.rank() == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // late for wait_all
      context.wait_all();
      return;
    }
    std::string interrupted;
    std::thread waiting = wait_all_on_a_thread(context, interrupted);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // in the barrier by now
    context.interrupt_wait_all();
    waiting.join();
    EXPECT_TRUE(contains(interrupted, "wait_all: interrupted")) << interrupted;
    context.wait_all();
    EXPECT_EQ(x[0], 2.0);
  });
}

// wait_all from two threads of one rank at once would cross their comparisons with the other
// ranks': the second is refused and the first goes on; a retry just after an interruption waits
// for the interrupted call to leave instead.
TEST(MpiContext, ASecondThreadInWaitAllIsRefusedUnlessTheFirstWasInterrupted) {
  spmd_over_transport(2, [](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
    mpi::Context context(rt, transport);
    std::vector<double> x(4, 1.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    if (context.rank() == 1) {
      context.wait_all();
      context.wait_all();
      return;
    }
    std::atomic<bool> release{false};
    const auto held_until_released = [&release] {
      while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    };
    auto held = rt.submit(hetflow::TaskOptions{}, held_until_released);
    std::array<std::string, 2> refusals;
    const auto wait_all_from = [&](std::size_t which) {
      try {
        context.wait_all();
      } catch (const hetflow::Error& error) {
        refusals.at(which) = error.what();
        release.store(true);  // the other one is in wait_all: let it end
      }
    };
    std::thread first(wait_all_from, 0);
    std::thread second(wait_all_from, 1);
    first.join();
    second.join();
    held.get();
    const bool first_refused = !refusals[0].empty();
    EXPECT_NE(first_refused, !refusals[1].empty()) << refusals[0] << " / " << refusals[1];
    EXPECT_TRUE(contains(refusals[first_refused ? 0 : 1], "another thread of this rank is in wait_all"))
        << refusals[0] << " / " << refusals[1];
    EXPECT_EQ(x[0], 2.0);

    release.store(false);
    auto held_again = rt.submit(hetflow::TaskOptions{}, held_until_released);
    std::string interrupted;
    std::thread waiting = wait_all_on_a_thread(context, interrupted);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // in wait_all by now
    context.interrupt_wait_all();
    std::thread releasing([&release] {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      release.store(true);
    });
    context.wait_all();  // while the interrupted one may still be leaving
    waiting.join();
    releasing.join();
    held_again.get();
    EXPECT_TRUE(contains(interrupted, "wait_all: interrupted")) << interrupted;
  });
}

// A rank whose context ends without wait_all (it returned early) is told of, instead of waited
// for: the data it never sent fail their readers, and wait_all throws naming it.
TEST(MpiContext, ARankWhoseContextEndsEarlyIsToldOfInsteadOfWaitedFor) {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0), y(4, 2.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    auto hy = context.register_data(y.data(), doubles(4), 1, 2, "y");
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    if (context.rank() == 1) return;
    auto reader = context.insert(kAdd, {.data = {hetflow::RW(hx), hetflow::R(hy)}});  // y never comes
    try {
      context.wait_all();
      ADD_FAILURE() << "wait_all returned although rank 1 never called it";
    } catch (const hetflow::Error& error) {
      EXPECT_TRUE(contains(error.what(), "rank 1 ended (its context was destroyed) after 0 wait_all calls"))
          << error.what();
      EXPECT_TRUE(contains(error.what(), "'y' never came from rank 1")) << error.what();
    }
    try {
      reader.get();
      ADD_FAILURE() << "the task ran without the data it reads";
    } catch (const hetflow::DependencyError& error) {
      EXPECT_TRUE(contains(error.what(), "whose context ended without sending it")) << error.what();
    }
    EXPECT_EQ(x[0], 2.0);
    EXPECT_THROW(context.wait_all(), hetflow::Error);  // rank 1 is still not there
  });
}

// Rank 0 sends x to rank 1, for a task rank 1 never submits before its context ends.
TEST(MpiContext, DataARankNeverTookBeforeItsContextEndedAreToldOf) {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0), y(4, 2.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    auto hy = context.register_data(y.data(), doubles(4), 1, 2, "y");
    if (context.rank() == 1) return;
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});  // on rank 1
    try {
      context.wait_all();
      ADD_FAILURE() << "wait_all returned although rank 1 never called it";
    } catch (const hetflow::Error& error) {
      // Whether the send was posted before rank 1's farewell came or after.
      EXPECT_TRUE(contains(error.what(), "rank 1 ended (its context was destroyed) without receiving all the data") ||
                  contains(error.what(), "'x' was not sent to rank 1: its context had ended"))
          << error.what();
    }
  });
}

#ifndef HETFLOW_CONTEXT_TEST_OVER_MPI
// Each rank waits for data the other never sends (they submitted different work); rank 1 ends
// its context as its process would, and past its patience still tells rank 0, whose wait_all
// would otherwise never end. Not over MPI: a rank ending with its process does not wait for
// the others' farewells, which would reach the next test's context (tests/python/test_mpi.py
// runs this with processes that exit).
TEST(MpiContext, ARankEndingWithTransfersInFlightTellsTheOthers) {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0), y(4, 2.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    auto hy = context.register_data(y.data(), doubles(4), 1, 2, "y");
    if (context.rank() == 1) {
      context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});  // x never comes
      context.ending_with_process(std::chrono::milliseconds(200));
      return;
    }
    context.insert(kAdd, {.data = {hetflow::RW(hx), hetflow::R(hy)}});  // y never comes
    try {
      context.wait_all();
      ADD_FAILURE() << "wait_all returned although y never came";
    } catch (const hetflow::Error& error) {
      EXPECT_TRUE(contains(error.what(), "'y' never came from rank 1, whose context ended")) << error.what();
    }
  });
}
#endif

// One rank calls wait_all once more than the other, which then ends its context: told, with and
// without the submission check (which compares the ranks' work first).
// Every rank: x registered on rank 0, scaled there, and a first wait_all.
void scale_x_and_wait(mpi::Context& context, std::vector<double>& x) {
  auto hx = context.register_data(x.data(), doubles(x.size()), 0, 1, "x");
  context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
  context.wait_all();
}

void one_wait_all_too_many() {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0);
    scale_x_and_wait(context, x);
    if (context.rank() == 1) return;
    try {
      context.wait_all();
      ADD_FAILURE() << "the second wait_all returned although rank 1 called it once";
    } catch (const hetflow::Error& error) {
      EXPECT_TRUE(contains(error.what(), "after 1 wait_all calls, and this is this rank's call 2")) << error.what();
    }
  });
}
TEST(MpiContext, AWaitAllTheOtherRanksNeverCallIsToldOf) { one_wait_all_too_many(); }
TEST(MpiContext, AWaitAllTheOtherRanksNeverCallIsToldOfWithTheCheck) {
  setenv("HETFLOW_MPI_CHECK", "1", 1);
  one_wait_all_too_many();
  unsetenv("HETFLOW_MPI_CHECK");
}

#ifndef HETFLOW_CONTEXT_TEST_OVER_MPI
// A rank that fails (an exception unwinds it) does not wait for the others to end their
// contexts: they may be blocked where no farewell reaches them. Here rank 0 ends its context
// only once rank 1's is gone (or after 10 s: rank 1 waited for it). Ranks as threads: they
// share the flag.
TEST(MpiContext, ARankThatFailsDoesNotWaitForTheOthersToEnd) {
  std::atomic<bool> failed_rank_gone{false};
  std::atomic<bool> rank_0_saw_it{false};
  EXPECT_THROW(spmd_over_transport(2,
                                   [&](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
                                     if (transport->rank() == 1) {
                                       try {
                                         mpi::Context context(rt, transport);
                                         throw std::runtime_error("rank 1 fails");
                                       } catch (...) {
                                         failed_rank_gone = true;
                                         throw;
                                       }
                                     }
                                     mpi::Context context(rt, transport);
                                     const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
                                     while (!failed_rank_gone && std::chrono::steady_clock::now() < give_up) {
                                       std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                     }
                                     rank_0_saw_it = failed_rank_gone.load();
                                   }),
               std::runtime_error);
  EXPECT_TRUE(rank_0_saw_it);
}
#endif

// With three ranks, rank 2 leaves after the first wait_all; the second fails on ranks 0 and 1,
// and rank 0 then ends too. Rank 1's next wait_all names rank 2 as the one that left, and rank
// 0 as one whose own wait_all failed (not as one that returned early).
TEST(MpiContext, ARankWhoseOwnWaitAllFailedIsNotTakenForOneThatLeft) {
  spmd(3, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0);
    scale_x_and_wait(context, x);
    if (context.rank() == 2) return;
    EXPECT_THROW(context.wait_all(), hetflow::Error);
    if (context.rank() == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 0's farewell comes
    try {
      context.wait_all();
      ADD_FAILURE() << "wait_all returned with two ranks gone";
    } catch (const hetflow::Error& error) {
      const std::string text = error.what();
      EXPECT_TRUE(contains(text,
                           "rank 2 ended (its context was destroyed) after 1 wait_all calls, and this is this "
                           "rank's call 3"))
          << text;
      EXPECT_TRUE(contains(text, "rank 0 ended (its context was destroyed) after its own wait_all call 2 failed"))
          << text;
      EXPECT_FALSE(contains(text, "rank 0 ended (its context was destroyed) after 2 wait_all calls")) << text;
    }
  });
}

// The farewells of a context are not taken for those of the next one over the same transport.
TEST(MpiContext, ContextsOneAfterTheOtherOverOneTransport) {
  spmd_over_transport(2, [](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
    std::vector<double> x(4, 1.0), y(4, 0.0);
    for (int round = 0; round < 3; ++round) {
      mpi::Context context(rt, transport);
      auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
      auto hy = context.register_data(y.data(), doubles(4), 1, 2, "y");
      // Rank 1 takes its time, so that rank 0's context of this round ends first.
      if (context.rank() == 1 && round == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
      context.wait_all();
      if (context.rank() == 1) {
        EXPECT_EQ(y[0], round + 1.0);
      }
    }
  });
}

// A barrier rank 0 posted in wait_all just before rank 1's farewell came is left unmet (MPI cannot
// cancel it): it met rank 1's first barrier of the next context over the transport, whose
// wait_all then returned before rank 0 had done its work, and rank 0's own barrier was left
// without a partner for ever. The ranks now post as many barriers before their contexts end.
TEST(MpiContext, ABarrierLeftUnmetByARankThatEndedEarlyIsNotMetByTheNextContext) {
  spmd_over_transport(2, [](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
    {
      mpi::Context context(rt, transport);
      if (context.rank() == 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 0 is in the barrier by now
      } else {
        EXPECT_THROW(context.wait_all(), hetflow::Error);  // rank 1's context ended
      }
    }
    mpi::Context context(rt, transport);
    std::vector<double> x(4, 1.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    if (context.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    const auto start = std::chrono::steady_clock::now();
    context.wait_all();
    if (context.rank() == 1) {
      EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500))
          << "rank 1's wait_all returned before rank 0 came to it";
    }
  });
}

// With the check, the ranks still there compare their work when one's context has ended: they
// were not compared at all, and rank 0 then waited for y, which rank 1 never sends, for as long
// as rank 1 lived, and was told only that rank 2 had ended.
TEST(MpiContext, TheRanksStillThereCompareTheirWorkWhenOneHasEnded) {
  setenv("HETFLOW_MPI_CHECK", "1", 1);
  spmd(3, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0), y(4, 2.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    auto hy = context.register_data(y.data(), doubles(4), 1, 2, "y");
    if (context.rank() == 2) return;
    hetflow::Future<void> extra;
    if (context.rank() == 0) extra = context.insert(kAdd, {.data = {hetflow::RW(hx), hetflow::R(hy)}});
    try {
      context.wait_all();
      ADD_FAILURE() << "rank " << context.rank() << ": the divergence went unnoticed";
    } catch (const hetflow::Error& error) {
      EXPECT_TRUE(contains(error.what(), "did not submit the same work")) << error.what();
    }
    if (context.rank() == 0) {
      EXPECT_THROW(extra.get(), hetflow::DependencyError);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // rank 1 lives on
    }
  });
  unsetenv("HETFLOW_MPI_CHECK");
}

// A call every rank makes that submits no task, made by one rank only, left that rank's table of
// where the data are apart from the others' (here rank 0 sent x again, to a rank that took its
// copy for valid: a message nobody received, which a later receive of x would have taken). With
// the check, the next wait_all names it on every rank.
TEST(MpiContext, ACallOnlyOneRankMakesIsToldWithTheCheck) {
  setenv("HETFLOW_MPI_CHECK", "1", 1);
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0), y(4, 0.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    auto hy = context.register_data(y.data(), doubles(4), 1, 2, "y");
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});  // x sent to rank 1
    context.wait_all();
    if (context.rank() == 0) context.flush(hx);
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
    try {
      context.wait_all();
      ADD_FAILURE() << "rank " << context.rank() << ": a flush on rank 0 only went unnoticed";
    } catch (const hetflow::Error& error) {
      const std::string what = error.what();
      EXPECT_TRUE(contains(what, "did not submit the same work")) << what;
      if (context.rank() == 0) {
        EXPECT_TRUE(contains(what, "call 1 (flush of 'x' (tag 1)) here")) << what;
      }
    }
  });
  unsetenv("HETFLOW_MPI_CHECK");
}

TEST(MpiContext, MigratedDataIsWrittenOnItsNewOwner) {
  spmd(3, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(8, me == 0 ? 2.0 : 0.0);
    auto hx = context.register_data(x.data(), doubles(8), 0, 0);
    context.migrate(hx, 2);
    EXPECT_EQ(context.owner(hx), 2);
    auto future = context.insert(kScale, {.data = {hetflow::RW(hx)}}, 3.0);  // now on rank 2
    EXPECT_EQ(future.valid(), me == 2);
    context.wait_all();
    if (me == 2) {
      EXPECT_EQ(x[7], 6.0);
    }
    EXPECT_EQ(context.sent()[2].messages, me == 0 ? 2u : 0u);  // one transfer, by the migration
  });
}

TEST(MpiContext, GetOnBringsTheLatestVersionToARank) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(8, me == 0 ? 1.0 : 0.0);
    auto hx = context.register_data(x.data(), doubles(8), 0, 0);
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 5.0);  // on rank 0
    context.get_on(hx, 1);
    context.get_on(hx, 1);  // already there: nothing more is sent
    context.wait_all();
    EXPECT_EQ(x[0], 5.0);  // on both ranks
    EXPECT_EQ(context.sent()[1].messages, me == 0 ? 2u : 0u);
    EXPECT_THROW(context.get_on(hx, 2), hetflow::InvalidArgument);
    EXPECT_THROW(context.migrate(hx, -1), hetflow::InvalidArgument);
  });
}

TEST(MpiContext, StatisticsArePrintedWhenAskedFor) {
  setenv("HETFLOW_MPI_STATS", "1", 1);
  testing::internal::CaptureStderr();
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 1.0), y(4, 0.0);
    auto hx = context.register_data(x.data(), doubles(4), 1, 0);
    auto hy = context.register_data(y.data(), doubles(4), 0, 1);
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});  // x: 1 -> 0
    context.wait_all();
  });
  const std::string printed = testing::internal::GetCapturedStderr();
  unsetenv("HETFLOW_MPI_STATS");
  if (sees_rank(1)) {
    EXPECT_NE(printed.find("rank 1 sent 2 messages, 40 bytes to rank 0"), std::string::npos) << printed;
  }
  if (sees_rank(0)) {
    EXPECT_NE(printed.find("rank 0 sent nothing"), std::string::npos) << printed;
  }
}

TEST(MpiContext, BadRegistrationsAndInsertsAreRefused) {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 0.0);
    EXPECT_THROW(context.register_data(x.data(), doubles(4), 2, 0), hetflow::InvalidArgument);
    EXPECT_THROW(context.register_data(x.data(), doubles(4), 0, -1), hetflow::InvalidArgument);
    EXPECT_THROW(context.register_data(x.data(), DataLayout::matrix(2, 2, 3, sizeof(double)), 0, 0),
                 hetflow::InvalidArgument);
    auto hx = context.register_data(x.data(), doubles(4), 0, 0);
    std::vector<double> z(4, 0.0);
    EXPECT_THROW(context.register_data(z.data(), doubles(4), 1, 0), hetflow::InvalidArgument);  // tag taken
    EXPECT_THROW(context.insert(kScale, {.data = {hetflow::RW(hx)}}, mpi::Placement{.rank = 5}),
                 hetflow::InvalidArgument);
    hetflow::Runtime other(hetflow::Config{.ncpus = 1});
    auto stranger = other.register_vector(z.data(), z.size());
    EXPECT_THROW(context.insert(kScale, {.data = {hetflow::RW(stranger)}}), hetflow::InvalidArgument);
    const int first = context.allocate_tags(10);
    EXPECT_GE(first, 1);  // tag 0 is taken
    EXPECT_GE(context.allocate_tags(5), first + 10);
    context.wait_all();
  });
}

// Reductions: y = sum of x_i over blocks spread on every rank; each rank adds its blocks into a
// buffer of its own, which reaches the owner of y once, when y is next read.
const Codelet kZero{.name = "zero", .cpu = [](TaskContext& context) {
                      const auto x = context.buffer(0);
                      for (std::size_t i = 0; i < x.elements(); ++i) x.as<double>()[i] = 0.0;
                    }};
const Codelet kAccumulate{.name = "accumulate", .cpu = kAdd.cpu};  // RW(into), R(from)

// A reduction takes a free tag of its own (set_reduction): the data registered later under it
// are told what has it.
TEST(MpiContext, ATagTakenSaysWhatHasIt) {
  spmd(2, [](mpi::Context& context) {
    std::vector<double> x(4, 0.0), z(4, 0.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 0, "x");
    context.set_reduction(hx, kZero, kAccumulate);
    const auto refusal_of_tag = [&](int tag) {
      try {
        (void)context.register_data(z.data(), doubles(4), 1, tag, "z");
      } catch (const hetflow::InvalidArgument& error) {
        return std::string(error.what());
      }
      return std::string("(registered)");
    };
    EXPECT_NE(refusal_of_tag(0).find("already used by 'x'"), std::string::npos) << refusal_of_tag(0);
    EXPECT_NE(refusal_of_tag(1).find("already used by the reduction of 'x'"), std::string::npos) << refusal_of_tag(1);
    context.wait_all();
  });
}

TEST(MpiContext, ReduxContributionsFromEveryRankAreCombinedOnTheOwnerAtTheNextRead) {
  spmd(3, [](mpi::Context& context) {
    const int me = context.rank();
    constexpr int kBlocks = 9;
    std::vector<std::vector<double>> blocks(kBlocks, std::vector<double>(4, 0.0));
    std::vector<hetflow::DataHandle> handles;
    for (int b = 0; b < kBlocks; ++b) {
      if (b % 3 == me)
        std::fill(blocks[static_cast<std::size_t>(b)].begin(), blocks[static_cast<std::size_t>(b)].end(), b + 1.0);
      handles.push_back(context.register_data(blocks[static_cast<std::size_t>(b)].data(), doubles(4), b % 3, b));
    }
    std::vector<double> sum(4, me == 1 ? 100.0 : 0.0), seen(4, 0.0);
    auto hsum = context.register_data(sum.data(), doubles(4), /*owner=*/1, 20, "sum");
    auto hseen = context.register_data(seen.data(), doubles(4), /*owner=*/2, 21, "seen");
    context.set_reduction(hsum, kZero, kAccumulate);
    for (int b = 0; b < kBlocks; ++b) {
      auto future =
          context.insert(kAdd, {.data = {hetflow::Redux(hsum), hetflow::R(handles[static_cast<std::size_t>(b)])}});
      EXPECT_EQ(future.valid(), b % 3 == me);  // on the block's owner: no block moves
    }
    EXPECT_EQ(context.holder(hsum), 1);
    context.insert(kAdd, {.data = {hetflow::RW(hseen), hetflow::R(hsum)}});  // on 2: reads the total
    context.wait_all();
    const double total = 100.0 + 45.0;
    if (me == 1) {
      EXPECT_EQ(sum[0], total);
    }
    if (me == 2) {
      EXPECT_EQ(seen[3], total);
    }
    // Ranks 0 and 2 each sent their contributions once (header and data); rank 1 sent the total
    // to rank 2.
    const auto sent = context.sent();
    EXPECT_EQ(sent[1].messages, me == 1 ? 0u : 2u);
    EXPECT_EQ(sent[2].messages, me == 1 ? 2u : 0u);
  });
}

TEST(MpiContext, ReductionsRepeatAndWaitAllCombinesTheLastOne) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> one(2, 1.0), total(2, 0.0), snapshot(2, 0.0);
    auto hone = context.register_data(one.data(), doubles(2), mpi::kEveryRank, 0, "one");
    auto htotal = context.register_data(total.data(), doubles(2), 0, 1, "total");
    auto hsnapshot = context.register_data(snapshot.data(), doubles(2), 0, 2, "snapshot");
    context.set_reduction(htotal, kZero, kAccumulate);
    for (int round = 0; round < 3; ++round) {
      for (int rank = 0; rank < 2; ++rank) {
        for (int i = 0; i < 5; ++i) {
          context.insert(kAdd, {.data = {hetflow::Redux(htotal), hetflow::R(hone)}}, mpi::Placement{.rank = rank});
        }
      }
      if (round == 1) context.insert(kAdd, {.data = {hetflow::W(hsnapshot), hetflow::R(htotal)}});  // after 2 rounds
    }
    context.wait_all();
    if (me == 0) {
      EXPECT_EQ(snapshot[1], 20.0);  // W then add: the snapshot saw 2 rounds of 10 contributions
      EXPECT_EQ(total[0], 30.0);
    }
    // Rank 1's contributions went once before the snapshot's read and once at wait_all.
    EXPECT_EQ(context.sent()[0].messages, me == 1 ? 4u : 0u);
  });
}

TEST(MpiContext, AFailedContributionFailsTheReadersOfTheResult) {
  static const Codelet broken{.name = "broken", .cpu = [](TaskContext&) { throw std::runtime_error("NaN seen"); }};
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> total(2, 0.0), out(2, 0.0);
    auto htotal = context.register_data(total.data(), doubles(2), 0, 0, "total");
    auto hout = context.register_data(out.data(), doubles(2), 0, 1, "out");
    context.set_reduction(htotal, kZero, kAccumulate);
    context.insert(broken, {.data = {hetflow::Redux(htotal)}}, mpi::Placement{.rank = 1});
    auto reader = context.insert(kAdd, {.data = {hetflow::RW(hout), hetflow::R(htotal)}});
    context.wait_all();
    if (me == 0) {
      try {
        reader.get();
        ADD_FAILURE() << "the reader ran on a sum with a failed contribution";
      } catch (const hetflow::DependencyError& error) {
        const std::string what = error.what();
        EXPECT_NE(what.find("rank 1"), std::string::npos) << what;
        EXPECT_NE(what.find("NaN seen"), std::string::npos) << what;
      }
    }
  });
}

// A context left the runtime's handles registered as it ended, over the memory it had reserved
// (a copy where the program gave no buffer, contributions received) and then freed, and over the
// program's buffers: the next context over the runtime had the runtime refuse that memory ("takes
// bytes that ... holds") where the system handed it out again, or where the program registered
// its buffers again. Large buffers are mapped, and the system maps the same places again.
TEST(MpiContext, ContextsOneAfterTheOtherOverOneRuntimeLetGoOfTheirData) {
  constexpr std::size_t kCount = 1 << 14;  // 128 KiB
  // Per rank, outliving its runtime.
  std::vector<std::vector<double>> totals(2, std::vector<double>(kCount)), ones(2, std::vector<double>(kCount, 1.0));
  spmd_over_transport(2, [&](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
    const int me = transport->rank();
    std::vector<double>& total = totals[static_cast<std::size_t>(me)];
    std::vector<double>& one = ones[static_cast<std::size_t>(me)];
    for (int round = 0; round < 4; ++round) {
      std::fill(total.begin(), total.end(), 0.0);
      hetflow::DataHandle htotal;
      {
        mpi::Context context(rt, transport);
        // Rank 1 leaves its copy to hetflow; rank 0 receives rank 1's contributions in memory of hetflow's.
        htotal = context.register_data(me == 0 ? total.data() : nullptr, doubles(kCount), 0, 1, "total");
        auto hone = context.register_data(one.data(), doubles(kCount), mpi::kEveryRank, 2, "one");
        context.set_reduction(htotal, kZero, kAccumulate);
        for (int rank = 0; rank < 2; ++rank) {
          context.insert(kAdd, {.data = {hetflow::Redux(htotal), hetflow::R(hone)}}, mpi::Placement{.rank = rank});
        }
        context.wait_all();
        EXPECT_TRUE(htotal.registered());
      }
      EXPECT_FALSE(htotal.registered()) << "round " << round;
      if (me == 0) {
        EXPECT_EQ(total[kCount - 1], 2.0) << "round " << round;
      }
    }
  });
}

// A call every rank makes, made from inside a task, is made by one rank only: the comparison of
// the ranks' work it started ran beside the main thread's on the same tags (a wrong count then
// threw on the transport's thread and ended the process), and the others left the ranks' tables
// apart. It is refused, and the ranks go on in step.
TEST(MpiContext, CallsEveryRankMakesAreRefusedInsideATask) {
  spmd_over_transport(2, [](hetflow::Runtime& rt, const std::shared_ptr<mpi::Transport>& transport) {
    mpi::Context context(rt, transport);
    std::vector<double> x(4, 1.0);
    auto hx = context.register_data(x.data(), doubles(4), 0, 1, "x");
    std::vector<std::string> refusals;
    rt.submit(hetflow::TaskOptions{}, [&] {
        const auto refused = [&refusals](const std::function<void()>& call) {
          try {
            call();
            refusals.emplace_back("accepted");
          } catch (const hetflow::Error& error) {
            refusals.emplace_back(error.what());
          }
        };
        refused([&] { context.wait_all(); });
        refused([&] { context.flush_all(); });
        refused([&] { (void)context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0); });
        refused([&] { (void)context.allocate_tags(1); });
      }).get();
    ASSERT_EQ(refusals.size(), 4u);
    for (const std::string& refusal : refusals) {
      EXPECT_NE(refusal.find("inside a task"), std::string::npos) << refusal;
    }
    (void)context.insert(kScale, {.data = {hetflow::RW(hx)}}, 2.0);
    context.wait_all();
    if (context.rank() == 0) {
      EXPECT_EQ(x[0], 2.0);
    }
  });
}

TEST(MpiContext, ReduxWithoutAReductionOrAPartAccessIsRefusedAndTheRefusedTaskChangesNothing) {
  spmd(2, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(2, me == 0 ? 3.0 : 0.0), y(2, 0.0);
    auto hx = context.register_data(x.data(), doubles(2), 0, 0, "x");
    auto hy = context.register_data(y.data(), doubles(2), 1, 1, "y");
    try {
      context.insert(kAdd, {.data = {hetflow::Redux(hy), hetflow::R(hx)}});
      ADD_FAILURE() << "Redux without a reduction was accepted";
    } catch (const hetflow::InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find("set_reduction"), std::string::npos) << error.what();
    }
    try {
      context.insert(kAdd, {.data = {hetflow::PartW(hy), hetflow::R(hx)}});
      ADD_FAILURE() << "a part access to distributed data was accepted";
    } catch (const hetflow::InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find("PART-W"), std::string::npos) << error.what();
    }
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
    context.wait_all();
    if (me == 1) {
      EXPECT_EQ(y[0], 3.0);
    }
    EXPECT_EQ(context.sent()[1].messages, me == 0 ? 2u : 0u);  // one transfer: the refused task sent nothing
  });
}

TEST(MpiContext, DataEveryRankOwnsIsNeverSentAndItsTasksRunEverywhere) {
  spmd(3, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> mine(4, 0.0), y(4, 0.0);
    auto hmine = context.register_data(mine.data(), doubles(4), mpi::kEveryRank, 0, "mine");
    auto hy = context.register_data(y.data(), doubles(4), 2, 1, "y");
    static const Codelet fill_rank{.name = "fill_rank", .cpu = [](TaskContext& task) {
                                     const auto x = task.buffer(0);
                                     for (std::size_t i = 0; i < x.elements(); ++i)
                                       x.as<double>()[i] = task.arg<double>();
                                   }};
    auto everywhere = context.insert(fill_rank, {.data = {hetflow::W(hmine)}}, static_cast<double>(me + 1));
    EXPECT_TRUE(everywhere.valid());  // runs on every rank, each on its own copy
    EXPECT_EQ(context.executor({.data = {hetflow::W(hmine)}}), mpi::kEveryRank);
    EXPECT_EQ(context.holder(hmine), mpi::kEveryRank);
    context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hmine)}});  // on 2, with 2's own copy
    context.wait_all();
    EXPECT_EQ(mine[0], me + 1.0);
    if (me == 2) {
      EXPECT_EQ(y[0], 3.0);
    }
    for (const auto& peer : context.sent()) EXPECT_EQ(peer.messages, 0u);
    EXPECT_THROW(context.migrate(hmine, 1), hetflow::InvalidArgument);
    EXPECT_THROW(context.set_reduction(hmine, kZero, kAccumulate), hetflow::InvalidArgument);
    EXPECT_THROW(context.register_data(nullptr, doubles(4), mpi::kEveryRank, 5), hetflow::InvalidArgument);
  });
}

TEST(MpiContext, ATaskThatWritesNothingRunsWhereTheLeastDataMustMove) {
  static const Codelet total{.name = "total", .cpu = [](TaskContext&) {}};
  spmd(3, [](mpi::Context& context) {
    std::vector<double> small(2, 1.0), big(1000, 1.0), other(1000, 1.0);
    auto hsmall = context.register_data(small.data(), doubles(2), 0, 0, "small");
    auto hbig = context.register_data(big.data(), doubles(1000), 1, 1, "big");
    auto hother = context.register_data(other.data(), doubles(1000), 2, 2, "other");
    // Reads small (rank 0) and big (rank 1): rank 1 receives 16 bytes, rank 0 would receive 8000.
    EXPECT_EQ(context.executor({.data = {hetflow::R(hsmall), hetflow::R(hbig)}}), 1);
    // A tie (big on 1, other on 2): the owner of the first data read.
    EXPECT_EQ(context.executor({.data = {hetflow::R(hother), hetflow::R(hbig)}}), 2);
    // Copies count: once rank 0 holds big too, it needs nothing sent.
    context.get_on(hbig, 0);
    EXPECT_EQ(context.executor({.data = {hetflow::R(hsmall), hetflow::R(hbig)}}), 0);
    auto future = context.insert(total, {.data = {hetflow::R(hsmall), hetflow::R(hbig)}});
    EXPECT_EQ(future.valid(), context.rank() == 0);
    context.wait_all();
    EXPECT_EQ(context.sent()[0].messages, context.rank() == 1 ? 2u : 0u);  // only get_on's transfer
  });
}

TEST(MpiContext, BroadcastSendsThroughATreeAndEveryRankGetsTheLatestVersion) {
  spmd(4, [](mpi::Context& context) {
    const int me = context.rank();
    std::vector<double> x(4, me == 2 ? 7.0 : 0.0);
    auto hx = context.register_data(x.data(), doubles(4), 2, 0, "x");
    context.insert(kScale, {.data = {hetflow::RW(hx)}}, 3.0);  // on 2: 21
    context.broadcast(hx);
    context.broadcast(hx);  // every rank has it: nothing more
    context.wait_all();
    EXPECT_EQ(x[3], 21.0) << "rank " << me;
    std::uint64_t copies = 0;
    for (const auto& peer : context.sent()) copies += peer.messages / 2;
    // Rounds of 1 then 2 sends (2 -> 0; 0 -> 1, 2 -> 3): the owner sends 2 copies, not 3.
    EXPECT_EQ(copies, me == 2 ? 2u : me == 0 ? 1u : 0u) << "rank " << me;
  });
}

TEST(MpiContext, TransfersBetweenRanksAreInTheTrace) {
  const std::string directory = testing::TempDir();
  const auto trace_of = [&](int rank) { return directory + "/mpi_trace_" + std::to_string(rank) + ".json"; };
  spmd(
      2,
      [](mpi::Context& context) {
        std::vector<double> x(16, 1.0), y(16, 0.0);
        auto hx = context.register_data(x.data(), doubles(16), 0, 0, "x");
        auto hy = context.register_data(y.data(), doubles(16), 1, 1, "y");
        context.insert(kAdd, {.data = {hetflow::RW(hy), hetflow::R(hx)}});
        context.wait_all();
      },
      [&](int rank) { return hetflow::Config{.ncpus = 1, .trace_path = trace_of(rank)}; });
  const auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  if (sees_rank(0)) {
    const std::string sender = read(trace_of(0));
    EXPECT_NE(sender.find("\"messages\""), std::string::npos) << sender;
    EXPECT_NE(sender.find("\"to rank 1\""), std::string::npos) << sender;
    std::remove(trace_of(0).c_str());
  }
  if (sees_rank(1)) {
    const std::string receiver = read(trace_of(1));
    EXPECT_NE(receiver.find("\"from rank 0\""), std::string::npos) << receiver;
    EXPECT_NE(receiver.find("\"name\":\"x\""), std::string::npos) << receiver;
    std::remove(trace_of(1).c_str());
  }
}

long resident_kib() {
  std::FILE* status = std::fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (status != nullptr) {
    if (std::fscanf(status, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(status);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

TEST(MpiContext, RanksThatNeverNeedDataUseNoMemoryForIt) {
  constexpr std::size_t kDoubles = std::size_t{64} << 20;  // 512 MiB a handle
  std::vector<double> small(4, 2.0);
  const long before = resident_kib();
  std::atomic<long> largest_growth{0};
  spmd(2, [&](mpi::Context& context) {
    const int me = context.rank();
    // Only rank 0 owns data; the other rank leaves the buffers to hetflow.
    std::vector<hetflow::DataHandle> big;
    std::vector<std::unique_ptr<double[]>> owned;
    for (int i = 0; i < 3; ++i) {
      if (me == 0) owned.push_back(std::unique_ptr<double[]>(new double[kDoubles]));  // not touched
      big.push_back(context.register_data(me == 0 ? owned.back().get() : nullptr, doubles(kDoubles), 0, i));
    }
    auto hsmall = context.register_data(me == 0 ? small.data() : nullptr, doubles(4), 0, 10, "small");
    context.get_on(hsmall, 1);  // a small copy lands on rank 1: memory given where it is written
    context.wait_all();
    long growth = resident_kib() - before;
    long seen = largest_growth.load();
    while (growth > seen && !largest_growth.compare_exchange_weak(seen, growth)) {
    }
  });
  // Two ranks' views of 1.5 GiB of data: only the owner's, untouched, exists.
  EXPECT_LT(largest_growth.load(), 256L << 10) << "KiB";
}

}  // namespace
