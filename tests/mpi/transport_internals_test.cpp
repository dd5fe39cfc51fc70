// The MPI transport's own class (src/mpi/mpi_transport.hpp), built into this test with settings
// the public world() does not expose: messages split in small chunks, as those over INT_MAX
// bytes are, and a short wait at destruction.
#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "hetflow/mpi.hpp"
#include "mpi/mpi_transport.hpp"
#include "mpi_test_support.hpp"

namespace {

using hetflow::mpi::detail::MpiTransport;
using hetflow::test::Completions;
using hetflow::test::first_mismatch;
using hetflow::test::ring_messages;

// Messages of several sizes around the chunk size, one tag, around a ring: each arrives whole and
// in its place, the chunks of one never mixed with those of the next.
TEST(MpiTransportChunks, LongMessagesGoInChunksAndKeepTheirOrder) {
  MpiTransport transport(MPI_COMM_WORLD, {.chunk_bytes = 1000});
  const int rank = transport.rank();
  const int size = transport.size();
  const int next = (rank + 1) % size;
  const int previous = (rank + size - 1) % size;
  const std::vector<std::size_t> sizes = {1001, 5, 250'000, 0, 1000, 999, 2000, 64'001};
  constexpr int tag = 7;

  auto [outgoing, incoming] = ring_messages(rank, sizes);
  Completions sent;
  Completions received;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    transport.send(next, tag, outgoing[i].data(), sizes[i], sent.callback());
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    transport.receive(previous, tag, incoming[i].data(), sizes[i], received.callback());
  }
  sent.wait(sizes.size(), "the chunked sends");
  received.wait(sizes.size(), "the chunked receives");
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(first_mismatch(incoming[i], previous, i), -1) << "message " << i << " of " << sizes[i] << " bytes";
  }
  hetflow::test::barrier(transport);
}

TEST(MpiTransportChunks, ChunksMustFitAnMpiCount) {
  EXPECT_THROW(MpiTransport(MPI_COMM_WORLD, {.chunk_bytes = 0}), hetflow::InvalidArgument);
  EXPECT_THROW(MpiTransport(MPI_COMM_WORLD, {.chunk_bytes = std::size_t{1} << 31}), hetflow::InvalidArgument);
}

// A receive that no rank answers does not hold the destructor past its wait: the transport
// gives up on it, and its callback never runs.
TEST(MpiTransportShutdown, DestructionGivesUpOnUnansweredRequests) {
  auto called = std::make_shared<std::atomic<bool>>(false);
  std::uint64_t never_sent = 0;
  {
    MpiTransport transport(MPI_COMM_WORLD, {.shutdown_wait = std::chrono::milliseconds(200)});
    transport.receive(transport.rank(), 9, &never_sent, sizeof never_sent, [called] { *called = true; });
  }
  EXPECT_FALSE(*called);
  hetflow::test::barrier(*hetflow::mpi::world());
}

// The last owner may drop the transport inside one of its callbacks, on the transport's thread.
TEST(MpiTransportShutdown, ATransportMayBeDroppedFromItsOwnCallback) {
  auto transport = std::make_shared<MpiTransport>(MPI_COMM_WORLD);
  auto holder = std::make_shared<std::shared_ptr<MpiTransport>>(transport);
  // The callback waits until the test has let go (and is out of barrier()), so that it drops
  // the last reference. A test-only wait: callbacks must not block.
  std::atomic<bool> released{false};
  Completions dropped;
  transport->barrier([holder, &released, callback = dropped.callback()] {
    while (!released.load()) std::this_thread::yield();
    holder->reset();
    callback();
  });
  transport.reset();
  released.store(true);
  dropped.wait(1, "the barrier whose callback drops the transport");
  hetflow::test::barrier(*hetflow::mpi::world());
}

}  // namespace
