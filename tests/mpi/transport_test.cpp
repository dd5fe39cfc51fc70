// hetflow::mpi::world() under mpirun: the MPI transport against MPI itself. Every rank runs
// every test; each test uses tags of its own, so that a failure on one rank cannot feed another
// test's messages.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/mpi.hpp"
#include "mpi_test_support.hpp"

namespace {

using hetflow::test::Completions;
using hetflow::test::first_mismatch;
using hetflow::test::pattern;
using hetflow::test::ring_messages;
namespace mpi = hetflow::mpi;

TEST(MpiTransport, WorldIsOneTransportOverTheRanksOfMpi) {
  auto first = mpi::world();
  auto second = mpi::world();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first.get(), second.get());

  int rank = -1;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(first->rank(), rank);
  EXPECT_EQ(first->size(), size);

  int* tag_upper_bound = nullptr;
  int found = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_upper_bound, &found);
  ASSERT_NE(found, 0);
  EXPECT_EQ(first->max_tag(), *tag_upper_bound);
  EXPECT_GE(first->max_tag(), 32767);

  // hetflow initialised MPI, asking for MULTIPLE; the program may call MPI alongside it.
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  EXPECT_EQ(provided, MPI_THREAD_MULTIPLE);
}

TEST(MpiTransport, RefusesPeersTagsAndBuffersItCannotUse) {
  auto transport = mpi::world();
  std::array<std::uint8_t, 4> buffer{};
  const int size = transport->size();
  EXPECT_THROW(transport->send(size, 0, buffer.data(), buffer.size(), {}), hetflow::InvalidArgument);
  EXPECT_THROW(transport->send(-1, 0, buffer.data(), buffer.size(), {}), hetflow::InvalidArgument);
  EXPECT_THROW(transport->receive(size, 0, buffer.data(), buffer.size(), {}), hetflow::InvalidArgument);
  EXPECT_THROW(transport->send(0, -1, buffer.data(), buffer.size(), {}), hetflow::InvalidArgument);
  if (transport->max_tag() < std::numeric_limits<int>::max()) {
    EXPECT_THROW(transport->receive(0, transport->max_tag() + 1, buffer.data(), buffer.size(), {}),
                 hetflow::InvalidArgument);
  }
  EXPECT_THROW(transport->send(0, 0, nullptr, 4, {}), hetflow::InvalidArgument);
  EXPECT_THROW(transport->receive(0, 0, nullptr, 4, {}), hetflow::InvalidArgument);
  hetflow::test::barrier(*transport);
}

// Each rank sends messages of several sizes to the next rank and receives the previous rank's.
TEST(MpiTransport, RingCarriesMessagesOfSeveralSizes) {
  auto transport = mpi::world();
  const int rank = transport->rank();
  const int size = transport->size();
  const int next = (rank + 1) % size;
  const int previous = (rank + size - 1) % size;
  const std::vector<std::size_t> sizes = {0, 1, 13, 4096, 65537, std::size_t{1} << 20};
  constexpr int tags = 100;

  auto [outgoing, incoming] = ring_messages(rank, sizes);
  Completions sent;
  Completions received;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const int tag = tags + static_cast<int>(i);
    // Empty messages go with no buffer at all.
    transport->receive(previous, tag, sizes[i] == 0 ? nullptr : incoming[i].data(), sizes[i], received.callback());
    transport->send(next, tag, sizes[i] == 0 ? nullptr : outgoing[i].data(), sizes[i], sent.callback());
  }
  sent.wait(sizes.size(), "the ring's sends");
  received.wait(sizes.size(), "the ring's receives");
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(first_mismatch(incoming[i], previous, i), -1) << "message " << i << " of " << sizes[i] << " bytes";
  }
  hetflow::test::barrier(*transport);
}

// Between two ranks, messages with one tag are received in the order they were sent, whatever
// their sizes (short ones go eagerly, long ones by rendezvous).
TEST(MpiTransport, MessagesWithOneTagArriveInOrder) {
  auto transport = mpi::world();
  const int rank = transport->rank();
  const int partner = rank ^ 1;
  constexpr int tag = 200;
  constexpr std::size_t messages = 1500;
  if (partner < transport->size()) {
    auto bytes_of = [](std::size_t message) -> std::size_t {
      return message % 50 == 0 ? 100'000 + message : 8 + message % 64;
    };
    std::vector<std::vector<std::uint8_t>> outgoing(messages);
    std::vector<std::vector<std::uint8_t>> incoming(messages);
    for (std::size_t m = 0; m < messages; ++m) {
      outgoing[m] = pattern(rank, m, bytes_of(m));
      std::memcpy(outgoing[m].data(), &m, sizeof m);  // the sequence number first
      incoming[m].assign(bytes_of(m), 0);
    }
    Completions sent;
    Completions received;
    // Receives posted before and after the matching sends.
    for (std::size_t m = 0; m < messages / 2; ++m) {
      transport->receive(partner, tag, incoming[m].data(), incoming[m].size(), received.callback());
    }
    for (std::size_t m = 0; m < messages; ++m) {
      transport->send(partner, tag, outgoing[m].data(), outgoing[m].size(), sent.callback());
    }
    for (std::size_t m = messages / 2; m < messages; ++m) {
      transport->receive(partner, tag, incoming[m].data(), incoming[m].size(), received.callback());
    }
    sent.wait(messages, "the ordered sends");
    received.wait(messages, "the ordered receives");
    std::size_t out_of_order = 0;
    std::size_t corrupted = 0;
    for (std::size_t m = 0; m < messages; ++m) {
      std::size_t sequence = 0;
      std::memcpy(&sequence, incoming[m].data(), sizeof sequence);
      if (sequence != m) ++out_of_order;
      auto expected = pattern(partner, m, incoming[m].size());
      std::memcpy(expected.data(), &m, sizeof m);
      if (incoming[m] != expected) ++corrupted;
    }
    EXPECT_EQ(out_of_order, 0U);
    EXPECT_EQ(corrupted, 0U);
  }
  hetflow::test::barrier(*transport);
}

// Several threads of every rank send to and receive from every rank (itself included) at once;
// thread t uses tag base + t, so each of its streams keeps its order.
TEST(MpiTransport, ThreadsSendAndReceiveConcurrently) {
  auto transport = mpi::world();
  const int rank = transport->rank();
  const int size = transport->size();
  constexpr int threads = 4;
  constexpr std::size_t per_peer = 100;
  constexpr int tags = 300;
  struct Header {
    std::int32_t sender;
    std::int32_t thread;
    std::uint64_t sequence;
  };
  auto bytes_of = [](std::size_t sequence) { return sizeof(Header) + (sequence * 37) % 4096; };

  std::vector<std::size_t> failures(threads, 0);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::vector<std::vector<std::uint8_t>> outgoing;
      std::vector<std::vector<std::uint8_t>> incoming;
      outgoing.reserve(per_peer * static_cast<std::size_t>(size));
      incoming.reserve(per_peer * static_cast<std::size_t>(size));
      Completions sent;
      Completions received;
      for (std::size_t sequence = 0; sequence < per_peer; ++sequence) {
        for (int peer = 0; peer < size; ++peer) {
          auto& in = incoming.emplace_back(bytes_of(sequence), std::uint8_t{0});
          transport->receive(peer, tags + t, in.data(), in.size(), received.callback());
          auto& out = outgoing.emplace_back(bytes_of(sequence), static_cast<std::uint8_t>(sequence));
          const Header header{rank, t, sequence};
          std::memcpy(out.data(), &header, sizeof header);
          transport->send(peer, tags + t, out.data(), out.size(), sent.callback());
        }
      }
      const std::size_t total = per_peer * static_cast<std::size_t>(size);
      sent.wait(total, "a thread's sends");
      received.wait(total, "a thread's receives");
      for (std::size_t i = 0; i < total; ++i) {
        const auto sequence = i / static_cast<std::size_t>(size);
        const auto peer = static_cast<int>(i % static_cast<std::size_t>(size));
        Header header{};
        std::memcpy(&header, incoming[i].data(), sizeof header);
        const bool body_ok =
            std::all_of(incoming[i].begin() + sizeof header, incoming[i].end(),
                        [&](std::uint8_t byte) { return byte == static_cast<std::uint8_t>(sequence); });
        if (header.sender != peer || header.thread != t || header.sequence != sequence || !body_ok) {
          ++failures[static_cast<std::size_t>(t)];
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  for (int t = 0; t < threads; ++t) EXPECT_EQ(failures[static_cast<std::size_t>(t)], 0U) << "thread " << t;
  hetflow::test::barrier(*transport);
}

// No rank leaves a barrier before the last one enters it. The ranks share one machine, hence
// one clock: the last rank enters late and tells the others when it did.
TEST(MpiTransport, BarrierCompletesOnceEveryRankEnteredIt) {
  auto transport = mpi::world();
  const int rank = transport->rank();
  const int size = transport->size();
  const int last = size - 1;
  constexpr int tag = 400;
  auto now = [] {
    return static_cast<std::int64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
  };

  std::int64_t entered = 0;
  std::int64_t left = 0;
  Completions done;
  if (rank == last) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    entered = now();
  }
  transport->barrier([&, callback = done.callback()] {
    left = now();
    callback();
  });
  done.wait(1, "the barrier");

  Completions messages;
  std::vector<std::int64_t> entries(static_cast<std::size_t>(size), 0);
  if (rank == last) {
    for (int peer = 0; peer < size; ++peer) {
      transport->send(peer, tag, &entered, sizeof entered, messages.callback());
    }
  }
  std::int64_t last_entered = 0;
  transport->receive(last, tag, &last_entered, sizeof last_entered, messages.callback());
  messages.wait(rank == last ? static_cast<std::size_t>(size) + 1 : 1, "the entry time of the last rank");
  EXPECT_GE(left, last_entered) << "rank " << rank << " left the barrier " << (last_entered - left)
                                << " ns before rank " << last << " entered it";

  // Many barriers in flight at once all complete.
  constexpr std::size_t barriers = 50;
  Completions many;
  for (std::size_t i = 0; i < barriers; ++i) transport->barrier(many.callback());
  many.wait(barriers, "50 barriers");
}

// Ranks that give up on their messages (a context after a divergence): a receive nobody sends
// to is cancelled and never completes, and a send nobody receives no longer holds the
// transport's end (it waited the whole shutdown wait, then said it stopped with work unfinished).
TEST(MpiTransport, CancelledReceivesNeverCompleteAndSendsLetGoOfDoNotHoldTheEnd) {
  MPI_Comm comm = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &comm), MPI_SUCCESS);
  auto transport = mpi::over_communicator(&comm);
  const int rank = transport->rank();
  const int size = transport->size();
  constexpr int tag = 500;
  std::vector<std::uint8_t> outgoing(std::size_t{1} << 20, 1);  // past the eager limit
  std::vector<std::uint8_t> incoming(std::size_t{1} << 20, 0);
  std::atomic<int> completed{0};
  transport->receive((rank + size - 1) % size, tag, incoming.data(), incoming.size(), [&completed] { ++completed; });
  transport->send((rank + 1) % size, tag + 1, outgoing.data(), outgoing.size(), [&completed] { ++completed; });
  Completions cancelled;
  ASSERT_TRUE(transport->cancel_pending(cancelled.callback()));
  cancelled.wait(1, "the cancellation");
  Completions met;
  transport->barrier(met.callback());
  met.wait(1, "the barrier after the cancellation");
  EXPECT_EQ(completed.load(), 0);
  EXPECT_EQ(std::count(incoming.begin(), incoming.end(), 0), static_cast<std::ptrdiff_t>(incoming.size()));
  testing::internal::CaptureStderr();
  transport.reset();
  const std::string said = testing::internal::GetCapturedStderr();
  EXPECT_EQ(said.find("unfinished"), std::string::npos) << said;
  EXPECT_EQ(completed.load(), 0);
  MPI_Comm_free(&comm);
}

}  // namespace
