#pragma once
// hetflow::mpi::Transport over MPI: a duplicate of a communicator, driven by one progress thread
// that makes every MPI call of the transport. send(), receive() and barrier() only queue a
// request for that thread, so no thread of the program ever blocks inside MPI on hetflow's
// behalf.
//
// Thread level. The progress thread is not the thread that initialised MPI, so MPI must give at
// least MPI_THREAD_SERIALIZED. hetflow asks for MPI_THREAD_MULTIPLE when it initialises MPI; a
// program that initialised MPI itself may have chosen SERIALIZED, which is enough for hetflow's
// own calls (one thread makes them all) but then the program must make no MPI calls of its own
// while the transport communicates (SERIALIZED forbids two threads inside MPI at once). A
// program that calls MPI itself alongside hetflow needs MULTIPLE. SINGLE and FUNNELED are
// refused with hetflow::Error.
//
// The `done` callbacks run on the progress thread, in the order their requests complete; one
// that throws ends the program (std::terminate), as there is no caller to report to. An MPI call
// that fails on the progress thread (a message longer or shorter than its receive, a peer gone)
// ends every rank with MPI_Abort, after saying which message failed.
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>

#include "hetflow/mpi.hpp"

namespace hetflow::mpi::detail {

class ProgressEngine;

struct MpiTransportOptions {
  /// MPI counts are ints: a message longer than this goes as consecutive MPI messages of at most
  /// this many bytes, with the same tag (MPI keeps their order). At most INT_MAX.
  std::size_t chunk_bytes = std::size_t{1} << 30;
  /// How long the destructor waits for the requests in flight before abandoning them (and saying
  /// so on stderr).
  std::chrono::milliseconds shutdown_wait{10'000};
};

class MpiTransport final : public Transport {
 public:
  /// Initialises MPI or adopts the program's (see above), then duplicates `comm`: collective,
  /// every rank of `comm` constructs its transport. Throws hetflow::Error when MPI cannot be used.
  explicit MpiTransport(MPI_Comm comm, MpiTransportOptions options = {});
  /// Waits for the requests in flight (at most options.shutdown_wait), then stops the thread.
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] int size() const override { return size_; }
  [[nodiscard]] int max_tag() const override { return max_tag_; }
  [[nodiscard]] int local_rank() const override { return local_rank_; }
  [[nodiscard]] int local_ranks() const override { return local_ranks_; }
  void send(int peer, int tag, const void* data, std::size_t bytes, std::function<void()> done) override;
  void receive(int peer, int tag, void* data, std::size_t bytes, std::function<void()> done) override;
  void barrier(std::function<void()> done) override;
  bool cancel_pending(std::function<void()> done) override;

 private:
  void check_message(const char* call, int peer, int tag, const void* data, std::size_t bytes) const;

  int rank_ = 0;
  int size_ = 0;
  int max_tag_ = 0;
  int local_rank_ = 0;
  int local_ranks_ = 1;
  // Shared with the progress thread, which keeps it alive if the transport is destroyed from
  // one of its own `done` callbacks (the thread is then detached and ends after draining).
  std::shared_ptr<ProgressEngine> engine_;
  std::thread thread_;
  pid_t created_in_ = ::getpid();  // a forked child destroys it without touching MPI
};

}  // namespace hetflow::mpi::detail
