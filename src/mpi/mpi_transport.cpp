// The MPI transport (mpi/mpi_transport.hpp): MPI started or adopted once per process, and one
// progress thread per transport that posts the queued requests, polls them and runs their
// `done` callbacks.
#include "mpi/mpi_transport.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hetflow/error.hpp"
#include "mpi/env_flag.hpp"

namespace hetflow::mpi {
namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(std::max(length, 0)));
}

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    default: return "an unknown MPI thread level";
  }
}

void check_setup(int code, const char* call) {
  if (code != MPI_SUCCESS) throw Error(std::string("hetflow::mpi: ") + call + " failed: " + mpi_error_text(code));
}

// The progress engines of the process that use MPI, counted so that MPI is finalised after the
// last one. Shared with the engines: one still running after the exit-time clean-up gave up on
// it keeps it alive.
struct MpiUsers {
  std::mutex mutex;
  std::condition_variable changed;
  int running = 0;   // engines not yet destroyed
  int stopping = 0;  // of those, the ones asked to stop
};

// MPI for the whole process, set up on first use: initialised here with MPI_THREAD_MULTIPLE
// (and then finalised at exit), or the program's, adopted (the program finalises it). A
// function-local static made while the first transport is constructed, so that world()'s
// transport, completed after it, is destroyed before it at exit.
class MpiProcess {
 public:
  static MpiProcess& instance() {
    static MpiProcess process;
    // Registered after the object, so called before its destructor: the exit status, which a
    // destructor cannot see.
    static const bool watching_exit = ::on_exit(note_exit_status, nullptr) == 0;
    (void)watching_exit;
    return process;
  }

  // What every engine holds; throws hetflow::Error when MPI cannot be used (the refusal stays:
  // MPI cannot be initialised twice, nor its thread level changed).
  [[nodiscard]] std::shared_ptr<MpiUsers> users() const {
    if (!refusal_.empty()) throw Error(refusal_);
    return users_;
  }

  MpiProcess(const MpiProcess&) = delete;
  MpiProcess& operator=(const MpiProcess&) = delete;

 private:
  // Engines asked to stop (a transport destroyed from its own callback) end within their
  // shutdown wait; this waits for them a little longer.
  static constexpr std::chrono::seconds exit_wait{15};

  MpiProcess() {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized != 0) {
      refusal_ = "hetflow::mpi: MPI has already been finalised in this process";
      return;
    }
    int provided = MPI_THREAD_SINGLE;
    if (initialized == 0) {
      const int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      if (code != MPI_SUCCESS) {
        refusal_ = "hetflow::mpi: MPI_Init_thread failed: " + mpi_error_text(code);
        return;
      }
      initialised_here_ = true;
      if (provided < MPI_THREAD_SERIALIZED) {
        refusal_ = std::string("hetflow::mpi: this MPI library gives only ") + thread_level_name(provided) +
                   " (asked for MPI_THREAD_MULTIPLE); hetflow makes its MPI calls from a thread of its own and "
                   "needs MPI_THREAD_SERIALIZED at least: use an MPI built with thread support";
      }
      return;
    }
    if (MPI_Query_thread(&provided) != MPI_SUCCESS) provided = MPI_THREAD_SINGLE;
    if (provided < MPI_THREAD_SERIALIZED) {
      refusal_ = std::string("hetflow::mpi: MPI was initialised with ") + thread_level_name(provided) +
                 "; hetflow makes its MPI calls from a thread of its own and needs MPI_THREAD_SERIALIZED at least "
                 "(MPI_THREAD_MULTIPLE if the program calls MPI itself while hetflow communicates): initialise MPI "
                 "with MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided)";
    }
  }

  ~MpiProcess() {
    // A forked child inherits this object but not MPI, nor the transports' threads: it leaves
    // MPI to the process that started it.
    if (!initialised_here_ || ::getpid() != owner_pid_) return;
    if (const int status = exit_status_.load(); status != 0) {
      // MPI_Finalize waits for the other ranks, which may be waiting for this one (sys.exit(3)
      // halfway through a program): unfinalised, the launcher sees a failed rank and ends the job.
      std::fprintf(stderr,
                   "hetflow::mpi: this rank exits with status %d; MPI is left unfinalised, so that the "
                   "launcher ends every rank\n",
                   status);
      return;
    }
    {
      std::unique_lock lock(users_->mutex);
      users_->changed.wait_for(lock, exit_wait,
                               [this] { return users_->running == 0 || users_->running > users_->stopping; });
      if (users_->running > 0) {
        std::fprintf(stderr, "hetflow::mpi: %d MPI transports still in use at exit; MPI is left unfinalised\n",
                     users_->running);
        return;
      }
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized == 0) MPI_Finalize();
  }

  static void note_exit_status(int status, void* /*unused*/) { exit_status_.store(status); }

  static inline std::atomic<int> exit_status_{0};
  bool initialised_here_ = false;
  pid_t owner_pid_ = ::getpid();
  std::string refusal_;
  std::shared_ptr<MpiUsers> users_ = std::make_shared<MpiUsers>();
};

}  // namespace

// One request of the program, queued for the progress thread.
struct Operation {
  enum class Kind : std::uint8_t { send, receive, barrier, cancel };
  Kind kind = Kind::barrier;
  int peer = -1;
  int tag = 0;
  const std::byte* send_data = nullptr;
  std::byte* receive_data = nullptr;
  std::size_t bytes = 0;
  std::function<void()> done;
};

class ProgressEngine {
 public:
  /// `own_tags_from`: the least of the tags hetflow keeps for itself (Transport::max_tag()).
  ProgressEngine(std::shared_ptr<MpiUsers> users, MPI_Comm comm, MpiTransportOptions options, int own_tags_from)
      : users_(std::move(users)), comm_(comm), options_(options), own_tags_from_(own_tags_from) {
    std::lock_guard guard(users_->mutex);
    ++users_->running;
  }

  ~ProgressEngine() {
    // A program that initialised MPI may have finalised it already; the duplicate went with it.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized == 0) MPI_Comm_free(&comm_);
    {
      std::lock_guard guard(users_->mutex);
      --users_->running;
      if (stop_requested_) --users_->stopping;
    }
    users_->changed.notify_all();
  }
  ProgressEngine(const ProgressEngine&) = delete;
  ProgressEngine& operator=(const ProgressEngine&) = delete;

  void enqueue(Operation operation) {
    {
      std::lock_guard guard(mutex_);
      queued_.push_back(std::move(operation));
    }
    wakeup_.notify_one();
  }

  // Called once, by the transport's destructor.
  void request_stop() {
    {
      std::lock_guard guard(users_->mutex);
      stop_requested_ = true;
      ++users_->stopping;
    }
    users_->changed.notify_all();
    {
      std::lock_guard guard(mutex_);
      stopping_ = true;
    }
    wakeup_.notify_one();
  }

  // The progress thread. Exits once stopping and nothing is queued or in flight, or once the
  // shutdown wait has passed (then abandons what is left).
  void run() {
    std::vector<Operation> batch;
    std::vector<std::function<void()>> finished;
    std::optional<Clock::time_point> stop_deadline;
    Clock::time_point last_progress = Clock::now();
    auto sleep = shortest_sleep;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        if (queued_.empty() && in_flight_ == 0) {
          if (stopping_) return;
          wakeup_.wait(lock, [this] { return !queued_.empty() || stopping_; });
          continue;
        }
        batch.assign(std::make_move_iterator(queued_.begin()), std::make_move_iterator(queued_.end()));
        queued_.clear();
        if (stopping_ && !stop_deadline) stop_deadline = Clock::now() + options_.shutdown_wait;
      }
      if (mpi_finalized_with_only_orphans(batch.size())) return;
      bool progressed = !batch.empty();
      for (Operation& operation : batch) {
        if (operation.kind == Operation::Kind::cancel) {
          cancel_in_flight();
          finished.push_back(std::move(operation.done));
        } else {
          post(std::move(operation));
        }
      }
      batch.clear();
      progressed = poll(finished) || progressed;
      for (auto& done : finished) {
        if (done) done();
      }
      finished.clear();
      if (stop_deadline && in_flight_ > 0 && in_flight_ == orphaned_) {
        let_go_of_requests();
        return;
      }
      if (stop_deadline && in_flight_ > 0 && Clock::now() >= *stop_deadline) {
        abandon();
        return;
      }

      // Poll at once while things move; then spin, yield, and sleep with growing waits, so that
      // ranks sharing cores with their workers leave them the processor while messages travel.
      // A new request ends a sleep at once. MPI moves a long message between processes in
      // pieces, each needing a poll on both sides (through shared memory without single-copy, or
      // TCP), so while one is in flight the waits stay short, for about as long as it takes to
      // move at a modest rate: a long receive posted well before its sender is ready costs
      // frequent polls only for that time.
      const auto now = Clock::now();
      if (progressed) {
        last_progress = now;
        sleep = shortest_sleep;
        continue;
      }
      const auto idle = now - last_progress;
      if (idle < spin_for) continue;
      if (idle < yield_for) {
        std::this_thread::yield();
        continue;
      }
      const auto long_messages_moving = std::max(
          min_long_message_window, std::chrono::microseconds(long_bytes_in_flight_ / long_message_bytes_per_us));
      const auto longest =
          long_bytes_in_flight_ > 0 && idle < long_messages_moving ? longest_sleep_moving_long_messages : longest_sleep;
      std::unique_lock lock(mutex_);
      wakeup_.wait_for(lock, std::min(sleep, longest), [this] { return !queued_.empty(); });
      sleep = std::min(sleep * 2, longest_sleep);
    }
  }

 private:
  static constexpr std::chrono::microseconds spin_for{20};
  static constexpr std::chrono::microseconds yield_for{200};
  static constexpr std::chrono::microseconds shortest_sleep{8};
  static constexpr std::chrono::microseconds longest_sleep{1000};
  static constexpr std::chrono::microseconds longest_sleep_moving_long_messages{50};
  // Longer than MPI sends at once (Open MPI's shared-memory eager limit is 4 KiB, its pieces
  // 32 KiB).
  static constexpr std::size_t long_message_bytes = 64 * 1024;
  static constexpr std::size_t long_message_bytes_per_us = 256;  // 256 MB/s
  static constexpr std::chrono::microseconds min_long_message_window{5000};

  // An operation in flight: its MPI requests (several for a message split in chunks) and what
  // to call when they are all complete.
  struct Flight {
    Operation::Kind kind = Operation::Kind::barrier;
    int peer = -1;
    int tag = 0;
    std::size_t bytes = 0;
    std::size_t requests_left = 0;
    bool orphaned = false;  // a send or barrier left in flight by cancel_pending: stopping does not wait for it
    std::function<void()> done;
    [[nodiscard]] bool long_message() const { return kind != Operation::Kind::barrier && bytes >= long_message_bytes; }
  };

  // What a message of the wrong size means in a hetflow program. The check compares the tasks
  // in wait_all: a transfer of the wrong size may come first.
  static const char* disagreement() {
    bool checking = false;
    try {
      checking = env_flag("HETFLOW_MPI_CHECK");
    } catch (const InvalidArgument&) {  // refused when the context was made; the program stops here anyway
    }
    return checking ? " (the ranks disagree on the message: did they register this data with different sizes, or "
                      "submit different work? HETFLOW_MPI_CHECK compares the tasks in wait_all, which this "
                      "transfer came before)"
                    : " (the ranks disagree on the message: did they register this data with different sizes, or "
                      "submit different work? HETFLOW_MPI_CHECK=1 finds the first task that differs)";
  }

  // One MPI request in flight: its flight and, for a receive, the bytes the chunk must bring.
  struct RequestInfo {
    std::size_t flight = 0;
    int expected_count = 0;
  };

  std::string describe(const Flight& flight) const {
    switch (flight.kind) {
      case Operation::Kind::send:
        return "send of " + std::to_string(flight.bytes) + " bytes to rank " + std::to_string(flight.peer) +
               " with tag " + std::to_string(flight.tag);
      case Operation::Kind::receive:
        return "receive of " + std::to_string(flight.bytes) + " bytes from rank " + std::to_string(flight.peer) +
               " with tag " + std::to_string(flight.tag);
      case Operation::Kind::barrier: return "barrier";
      case Operation::Kind::cancel: return "cancellation";
    }
    return "operation";
  }

  // The program finalized MPI with transfers still to make: any MPI call now is an error (a
  // crash inside MPI, or its own abort without a word on why); said plainly instead. True when
  // only sends given up on are left: the thread then stops without another MPI call.
  [[nodiscard]] bool mpi_finalized_with_only_orphans(std::size_t queued) const {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized == 0) return false;
    if (queued == 0 && in_flight_ == orphaned_) return true;
    // A context keeps a receive of hetflow's own posted while it lives (the other ranks' farewells).
    std::size_t own_receives = 0;
    for (const Flight& flight : flights_) {
      own_receives += flight.requests_left > 0 && !flight.orphaned && flight.kind == Operation::Kind::receive &&
                      flight.tag >= own_tags_from_;
    }
    if (queued == 0 && in_flight_ - orphaned_ == own_receives) {
      std::fprintf(stderr,
                   "hetflow::mpi: the program finalized MPI (MPI_Finalize) while a hetflow::mpi::Context of rank %d "
                   "was still alive (its work was done): end every Context before MPI_Finalize (in C++ destroy it, "
                   "in Python call hetflow.shutdown())\n",
                   rank());
    } else {
      std::fprintf(stderr,
                   "hetflow::mpi: the program finalized MPI (MPI_Finalize) while rank %d had %zu transfers queued or "
                   "in flight; wait for them first (Context::wait_all, hetflow.mpi.wait_all), and end every Context "
                   "before MPI_Finalize (in C++ destroy it, in Python call hetflow.shutdown())\n",
                   rank(), queued + in_flight_ - own_receives);
    }
    std::fflush(stderr);
    std::abort();
  }

  // An MPI call of the progress thread failed: the ranks can no longer agree on what was sent,
  // and there is no caller to throw to, so the program stops with a message.
  [[noreturn]] void fail(const std::string& what, int code) const {
    int error_class = MPI_SUCCESS;
    MPI_Error_class(code, &error_class);
    std::fprintf(stderr, "hetflow::mpi: %s: %s%s\n", what.c_str(), mpi_error_text(code).c_str(),
                 error_class == MPI_ERR_TRUNCATE ? disagreement() : "");
    std::fflush(stderr);
    MPI_Abort(comm_, 1);
    std::abort();
  }

  // cancel_pending: the receives in flight are cancelled and waited for (a wait that MPI makes
  // local once a request is cancelled), none of their callbacks called; the sends and barriers
  // (which MPI cannot cancel) stay in flight as orphans.
  void cancel_in_flight() {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      const std::size_t index = request_info_[i].flight;
      Flight& flight = flights_[index];
      if (flight.kind == Operation::Kind::receive) {
        MPI_Cancel(&requests_[i]);
        MPI_Wait(&requests_[i], MPI_STATUS_IGNORE);
        if (--flight.requests_left == 0) retire(index);
        continue;
      }
      if ((flight.kind == Operation::Kind::send || flight.kind == Operation::Kind::barrier) && !flight.orphaned) {
        flight.orphaned = true;
        ++orphaned_;
      }
      requests_[kept] = requests_[i];
      request_info_[kept] = request_info_[i];
      ++kept;
    }
    requests_.resize(kept);
    request_info_.resize(kept);
  }

  // A flight whose requests are all complete: its slot is free again.
  void retire(std::size_t index) {
    Flight& flight = flights_[index];
    flight.done = nullptr;
    free_flights_.push_back(index);
    --in_flight_;
    if (flight.orphaned) --orphaned_;
    if (flight.long_message()) long_bytes_in_flight_ -= flight.bytes;
  }

  std::size_t new_flight(Flight flight) {
    ++in_flight_;
    if (flight.long_message()) long_bytes_in_flight_ += flight.bytes;
    if (!free_flights_.empty()) {
      std::size_t index = free_flights_.back();
      free_flights_.pop_back();
      flights_[index] = std::move(flight);
      return index;
    }
    flights_.push_back(std::move(flight));
    return flights_.size() - 1;
  }

  void post(Operation operation) {
    Flight flight{.kind = operation.kind,
                  .peer = operation.peer,
                  .tag = operation.tag,
                  .bytes = operation.bytes,
                  .requests_left = 0,
                  .done = std::move(operation.done)};
    if (operation.kind == Operation::Kind::barrier) {
      flight.requests_left = 1;
      std::size_t index = new_flight(std::move(flight));
      MPI_Request request = MPI_REQUEST_NULL;
      int code = MPI_Ibarrier(comm_, &request);
      if (code != MPI_SUCCESS) fail("MPI_Ibarrier", code);
      requests_.push_back(request);
      request_info_.push_back({.flight = index, .expected_count = 0});
      return;
    }
    // A zero-byte message is still one message, and each chunk of a long one is one more.
    const std::size_t chunk = options_.chunk_bytes;
    const std::size_t chunks = operation.bytes == 0 ? 1 : (operation.bytes + chunk - 1) / chunk;
    flight.requests_left = chunks;
    std::size_t index = new_flight(std::move(flight));
    for (std::size_t i = 0; i < chunks; ++i) {
      const std::size_t offset = i * chunk;
      const int count = static_cast<int>(std::min(chunk, operation.bytes - offset));
      MPI_Request request = MPI_REQUEST_NULL;
      int code = MPI_SUCCESS;
      if (operation.kind == Operation::Kind::send) {
        const std::byte* data = operation.send_data == nullptr ? nullptr : operation.send_data + offset;
        code = MPI_Isend(data, count, MPI_BYTE, operation.peer, operation.tag, comm_, &request);
      } else {
        std::byte* data = operation.receive_data == nullptr ? nullptr : operation.receive_data + offset;
        code = MPI_Irecv(data, count, MPI_BYTE, operation.peer, operation.tag, comm_, &request);
      }
      if (code != MPI_SUCCESS) fail(describe(flights_[index]), code);
      requests_.push_back(request);
      request_info_.push_back({.flight = index, .expected_count = count});
    }
  }

  // Tests the requests in flight; moves the `done` callbacks of the completed operations to
  // `finished`. True if any request completed.
  bool poll(std::vector<std::function<void()>>& finished) {
    if (requests_.empty()) return false;
    const int count = static_cast<int>(requests_.size());
    indices_.resize(requests_.size());
    statuses_.resize(requests_.size());
    int completed = 0;
    int code = MPI_Testsome(count, requests_.data(), &completed, indices_.data(), statuses_.data());
    if (code != MPI_SUCCESS && code != MPI_ERR_IN_STATUS) fail("MPI_Testsome", code);
    if (completed == MPI_UNDEFINED || completed == 0) return false;

    for (int k = 0; k < completed; ++k) {
      const auto position = static_cast<std::size_t>(indices_[static_cast<std::size_t>(k)]);
      const MPI_Status& status = statuses_[static_cast<std::size_t>(k)];
      const RequestInfo info = request_info_[position];
      Flight& flight = flights_[info.flight];
      if (code == MPI_ERR_IN_STATUS && status.MPI_ERROR != MPI_SUCCESS) fail(describe(flight), status.MPI_ERROR);
      if (flight.kind == Operation::Kind::receive) {
        int received = 0;
        MPI_Get_count(&status, MPI_BYTE, &received);
        if (received != info.expected_count) {
          std::fprintf(stderr, "hetflow::mpi: %s: a message of %d bytes arrived where %d were expected%s\n",
                       describe(flight).c_str(), received, info.expected_count, disagreement());
          std::fflush(stderr);
          MPI_Abort(comm_, 1);
          std::abort();
        }
      }
      if (--flight.requests_left == 0) {
        finished.push_back(std::move(flight.done));
        retire(info.flight);
      }
    }
    // Completed requests were set to MPI_REQUEST_NULL: drop them, keeping the others in order.
    std::size_t kept = 0;
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      if (requests_[i] == MPI_REQUEST_NULL) continue;
      requests_[kept] = requests_[i];
      request_info_[kept] = request_info_[i];
      ++kept;
    }
    requests_.resize(kept);
    request_info_.resize(kept);
    return true;
  }

  // The shutdown wait has passed with requests still in flight: receives are cancelled, sends
  // left to MPI (their buffers must outlive it), barriers left as they are (MPI forbids freeing
  // them); none of their callbacks is called.
  void abandon() {
    std::string what;
    std::size_t listed = 0;
    for (std::size_t i = 0; i < flights_.size(); ++i) {
      const Flight& flight = flights_[i];
      if (flight.requests_left == 0) continue;
      if (listed++ < 5) what += (what.empty() ? "" : "; ") + describe(flight);
    }
    std::fprintf(stderr,
                 "hetflow::mpi: the transport of rank %d stopped with %zu operations unfinished after %lld ms (%s%s)\n",
                 rank(), in_flight_, static_cast<long long>(options_.shutdown_wait.count()), what.c_str(),
                 listed > 5 ? "; ..." : "");
    std::fflush(stderr);
    let_go_of_requests();
  }

  void let_go_of_requests() {
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      switch (flights_[request_info_[i].flight].kind) {
        case Operation::Kind::receive:
          MPI_Cancel(&requests_[i]);
          MPI_Request_free(&requests_[i]);
          break;
        case Operation::Kind::send: MPI_Request_free(&requests_[i]); break;
        case Operation::Kind::barrier:
        case Operation::Kind::cancel: break;
      }
    }
    requests_.clear();
    request_info_.clear();
  }

  [[nodiscard]] int rank() const {
    int rank = -1;
    MPI_Comm_rank(comm_, &rank);
    return rank;
  }

  std::shared_ptr<MpiUsers> users_;
  bool stop_requested_ = false;  // guarded by users_->mutex
  MPI_Comm comm_;
  MpiTransportOptions options_;

  std::mutex mutex_;
  std::condition_variable wakeup_;
  std::deque<Operation> queued_;  // guarded by mutex_
  bool stopping_ = false;         // guarded by mutex_

  // The progress thread's own.
  std::vector<Flight> flights_;
  std::vector<std::size_t> free_flights_;
  int own_tags_from_;
  std::size_t in_flight_ = 0;
  std::size_t orphaned_ = 0;  // of in_flight_, sends and barriers cancel_pending gave up on
  std::size_t long_bytes_in_flight_ = 0;
  std::vector<MPI_Request> requests_;
  std::vector<RequestInfo> request_info_;
  std::vector<int> indices_;
  std::vector<MPI_Status> statuses_;
};

MpiTransport::MpiTransport(MPI_Comm comm, MpiTransportOptions options) {
  if (options.chunk_bytes == 0 || options.chunk_bytes > static_cast<std::size_t>(INT_MAX)) {
    throw InvalidArgument("hetflow::mpi: the chunk size must be between 1 and INT_MAX bytes");
  }
  auto users = MpiProcess::instance().users();
  // MPI_TAG_UB is an attribute of MPI_COMM_WORLD, the same for every communicator.
  int* tag_upper_bound = nullptr;
  int found = 0;
  check_setup(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_upper_bound, &found), "MPI_Comm_get_attr(MPI_TAG_UB)");
  max_tag_ = found != 0 && tag_upper_bound != nullptr ? *tag_upper_bound : 32767;  // the least MPI allows
  MPI_Comm duplicate = MPI_COMM_NULL;
  check_setup(MPI_Comm_dup(comm, &duplicate), "MPI_Comm_dup");
  engine_ = std::make_shared<ProgressEngine>(std::move(users), duplicate, options, max_tag_ - 1);
  // Errors come back as codes, so that the transport can say which message failed.
  check_setup(MPI_Comm_set_errhandler(duplicate, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_setup(MPI_Comm_rank(duplicate, &rank_), "MPI_Comm_rank");
  check_setup(MPI_Comm_size(duplicate, &size_), "MPI_Comm_size");
  // The ranks sharing this machine's memory: those that share its cores.
  MPI_Comm local = MPI_COMM_NULL;
  check_setup(MPI_Comm_split_type(duplicate, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
              "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
  check_setup(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank (machine)");
  check_setup(MPI_Comm_size(local, &local_ranks_), "MPI_Comm_size (machine)");
  check_setup(MPI_Comm_free(&local), "MPI_Comm_free (machine)");
  thread_ = std::thread([engine = engine_] { engine->run(); });
}

MpiTransport::~MpiTransport() {
  if (::getpid() != created_in_) {
    // A forked child inherits the transport but neither its thread nor MPI, which are the
    // parent's: it lets go of both without touching them.
    static_cast<void>(new std::thread(std::move(thread_)));
    static_cast<void>(new std::shared_ptr<ProgressEngine>(std::move(engine_)));
    return;
  }
  engine_->request_stop();
  if (thread_.get_id() == std::this_thread::get_id()) {
    // Destroyed from one of its own callbacks: the thread drains and ends by itself.
    thread_.detach();
  } else {
    thread_.join();
  }
}

void MpiTransport::check_message(const char* call, int peer, int tag, const void* data, std::size_t bytes) const {
  if (peer < 0 || peer >= size_) {
    throw InvalidArgument(std::string("hetflow::mpi: ") + call + ": rank " + std::to_string(peer) +
                          " is not one of the " + std::to_string(size_) + " ranks");
  }
  if (tag < 0 || tag > max_tag_) {
    throw InvalidArgument(std::string("hetflow::mpi: ") + call + ": tag " + std::to_string(tag) + " is outside 0.." +
                          std::to_string(max_tag_));
  }
  if (data == nullptr && bytes > 0) {
    throw InvalidArgument(std::string("hetflow::mpi: ") + call + ": no buffer for " + std::to_string(bytes) + " bytes");
  }
}

void MpiTransport::send(int peer, int tag, const void* data, std::size_t bytes, std::function<void()> done) {
  check_message("send", peer, tag, data, bytes);
  engine_->enqueue({.kind = Operation::Kind::send,
                    .peer = peer,
                    .tag = tag,
                    .send_data = static_cast<const std::byte*>(data),
                    .receive_data = nullptr,
                    .bytes = bytes,
                    .done = std::move(done)});
}

void MpiTransport::receive(int peer, int tag, void* data, std::size_t bytes, std::function<void()> done) {
  check_message("receive", peer, tag, data, bytes);
  engine_->enqueue({.kind = Operation::Kind::receive,
                    .peer = peer,
                    .tag = tag,
                    .send_data = nullptr,
                    .receive_data = static_cast<std::byte*>(data),
                    .bytes = bytes,
                    .done = std::move(done)});
}

// An operation that moves no data (a barrier, a cancellation).
Operation without_data(Operation::Kind kind, std::function<void()> done) {
  Operation operation;
  operation.kind = kind;
  operation.done = std::move(done);
  return operation;
}

bool MpiTransport::cancel_pending(std::function<void()> done) {
  engine_->enqueue(without_data(Operation::Kind::cancel, std::move(done)));
  return true;
}

void MpiTransport::barrier(std::function<void()> done) {
  engine_->enqueue(without_data(Operation::Kind::barrier, std::move(done)));
}

}  // namespace detail

std::shared_ptr<Transport> world() {
  // Process-wide: every caller shares one duplicate of MPI_COMM_WORLD, kept until exit. Its
  // construction sets up MpiProcess first, so at exit it is destroyed before MPI is finalised.
  // A construction that throws is tried again by the next call.
  static const std::shared_ptr<Transport> instance = std::make_shared<detail::MpiTransport>(MPI_COMM_WORLD);
  return instance;
}

void abort_all(int code) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized == 0) MPI_Init(nullptr, nullptr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; if it did, this process ends all the same
}

std::shared_ptr<Transport> over_communicator(const void* communicator) {
  if (communicator == nullptr) throw InvalidArgument("hetflow::mpi::over_communicator: no communicator");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized == 0) {
    throw InvalidArgument("hetflow::mpi::over_communicator: MPI is not initialised, so no communicator exists yet");
  }
  const MPI_Comm comm = *static_cast<const MPI_Comm*>(communicator);
  if (comm == MPI_COMM_NULL)
    throw InvalidArgument("hetflow::mpi::over_communicator: the communicator is MPI_COMM_NULL");
  int inter = 0;
  if (MPI_Comm_test_inter(comm, &inter) == MPI_SUCCESS && inter != 0) {
    throw InvalidArgument(
        "hetflow::mpi::over_communicator: this is an intercommunicator (two groups); hetflow's ranks form one "
        "group: pass an intracommunicator (MPI_Intercomm_merge makes one of it)");
  }
  return std::make_shared<detail::MpiTransport>(comm);
}

}  // namespace hetflow::mpi
