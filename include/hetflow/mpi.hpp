#pragma once
// hetflow across processes (MPI ranks): SPMD and owner-computes. Every rank runs the same program,
// registers the same data with an owner rank and submits the same tasks in the same order; a
// task runs on the rank that owns the data it writes, and hetflow moves the data it reads there.
//
//   hetflow::Runtime rt;
//   hetflow::mpi::Context mpi(rt, hetflow::mpi::world());        // MPI started if it was not
//   std::vector<double> tile(b * b);                              // on every rank (used where needed)
//   auto a = mpi.register_data(tile.data(), hetflow::DataLayout::vector(b * b, sizeof(double)),
//                              /*owner=*/ i % mpi.size(), /*tag=*/ i);
//   mpi.insert(update, {.data = {hetflow::RW(a), hetflow::R(x)}});  // runs on a's owner
//   mpi.wait_all();                                               // every rank: all work done
//
// The protocol only depends on what every rank submits, so each rank knows, without asking,
// which rank holds the latest version of each piece of data: a copy received once is reused by
// later readers on that rank until a task writes the data. See docs/mpi.md.
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "hetflow/access.hpp"
#include "hetflow/codelet.hpp"
#include "hetflow/data.hpp"
#include "hetflow/export.hpp"
#include "hetflow/future.hpp"
#include "hetflow/runtime.hpp"

namespace hetflow::mpi {

/// Messages between the ranks of one program: point-to-point byte transfers and a barrier, all
/// non-blocking. `done` callbacks run on the transport's own thread and must not block.
class HETFLOW_API Transport {
 public:
  virtual ~Transport() = default;
  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int size() const = 0;
  /// The largest tag a message may carry (MPI_TAG_UB for MPI).
  [[nodiscard]] virtual int max_tag() const = 0;
  /// Starts sending `bytes` bytes at `data` to `peer`; `done` is called once the buffer may be
  /// reused. Messages between two ranks with one tag arrive in the order they were sent.
  virtual void send(int peer, int tag, const void* data, std::size_t bytes, std::function<void()> done) = 0;
  /// Starts receiving `bytes` bytes from `peer` into `data`; `done` is called once they are there.
  virtual void receive(int peer, int tag, void* data, std::size_t bytes, std::function<void()> done) = 0;
  /// A barrier that does not block: `done` is called once every rank has entered it.
  virtual void barrier(std::function<void()> done) = 0;
  /// For ranks that gave up on the messages between them: cancels every receive not complete
  /// (its `done` is never called, and its buffer is not written once `done` here runs), and stops
  /// waiting for the sends and barriers not complete when the transport ends (their `done` may
  /// still come).
  /// Once every rank has cancelled, no send buffer is read any more, unless a receive posted
  /// afterwards (by a new Context over the same transport) takes the send. Returns false,
  /// without calling `done`, when the transport cannot cancel (the default).
  virtual bool cancel_pending(std::function<void()> done) {
    static_cast<void>(done);
    return false;
  }
  /// The ranks that run on this machine, and this rank's place among them; 0 of 1 for
  /// transports whose ranks share no machine with other processes.
  [[nodiscard]] virtual int local_rank() const { return 0; }
  [[nodiscard]] virtual int local_ranks() const { return 1; }
};

/// When several ranks of `transport` run on this machine, restricts this process to its share
/// of the CPUs it may use (the local rank i of k gets the i-th of k slices of that set, at least
/// one CPU each) and of its devices: GPUs i, i + k, ... of those the NVIDIA driver shows
/// (through CUDA_VISIBLE_DEVICES, unless the launcher or the user set it), OpenCL devices the
/// same way (through HETFLOW_OPENCL_SHARE, unless set); one shared device each when there are
/// fewer than ranks. A Runtime made afterwards, with its defaults, then runs one worker per CPU
/// of that share and drives those devices only: ranks do not compete for cores or devices.
/// Returns the CPUs of the share. Call it before creating the Runtime (and before anything
/// starts CUDA).
///
///     auto transport = hetflow::mpi::world();
///     hetflow::mpi::share_node(*transport);
///     hetflow::Runtime rt;                        // its workers on this rank's cores
///     hetflow::mpi::Context mpi(rt, transport);
HETFLOW_API unsigned share_node(const Transport& transport);

/// The ranks of MPI_COMM_WORLD (over a duplicate of it). MPI is initialised (thread level
/// MULTIPLE) if the program has not done it, and then finalised at exit; a program that
/// initialised MPI itself keeps it, and finalises it once its contexts are destroyed. One thread
/// of the transport makes every MPI call; it polls while messages are in flight and sleeps when
/// there are none. Throws hetflow::Error when MPI cannot give thread level MULTIPLE or
/// SERIALIZED.
[[nodiscard]] HETFLOW_API std::shared_ptr<Transport> world();

/// The ranks of a communicator the program made (`communicator` points to its MPI_Comm: `&comm`
/// in C or C++, `MPI._addressof(comm)` with mpi4py), over a duplicate of it, with world()'s
/// thread and rules; MPI is used as the program set it up, which finalises it. Every rank of
/// the communicator calls it.
[[nodiscard]] HETFLOW_API std::shared_ptr<Transport> over_communicator(const void* communicator);

/// Ends every rank of the program (MPI_Abort over MPI_COMM_WORLD, with `code`): for a rank that
/// cannot go on, so that the others do not wait for it for ever. Initialises MPI if needed.
[[noreturn]] HETFLOW_API void abort_all(int code);

/// `ranks` transports that connect threads of this process as if they were ranks (for tests:
/// the protocol without mpirun). Transport i is rank i.
[[nodiscard]] HETFLOW_API std::vector<std::shared_ptr<Transport>> loopback(int ranks);

/// The owner of data of which every rank has its own copy (Context::register_data): it is never
/// sent, and a task whose data are all of this kind runs on every rank, each on its own copy.
inline constexpr int kEveryRank = -1;

/// Where a task runs, when not on the owner of the first data it writes.
struct Placement {
  int rank = -1;                 ///< this rank, if >= 0
  const DataHandle* owner_of{};  ///< else the owner of this handle, if set (not kEveryRank's)
};

/// A task to submit on this rank, from Context::route: its options, whose data_list is `data`
/// (so it moves, but does not copy).
struct LocalTask {
  LocalTask() = default;
  LocalTask(LocalTask&&) noexcept = default;  // the data's buffer moves with them
  LocalTask& operator=(LocalTask&&) noexcept = default;
  LocalTask(const LocalTask&) = delete;
  LocalTask& operator=(const LocalTask&) = delete;
  ~LocalTask() = default;

  std::vector<DataAccess> data;
  TaskOptions options;
};

/// Messages and bytes sent to one peer.
struct PeerStats {
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
};

/// One rank's side of a distributed program over a Runtime and a Transport. Every call that
/// registers data, submits tasks or flushes must be made by every rank, in the same order (from
/// one thread of each rank); made from inside a task, they throw hetflow::Error.
class HETFLOW_API Context {
 public:
  Context(Runtime& runtime, std::shared_ptr<Transport> transport);
  /// Unregisters the data registered with it from the runtime (Runtime::unregister: after the
  /// tasks using them), so that a next context may register the same buffers.
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  [[nodiscard]] int rank() const noexcept;
  [[nodiscard]] int size() const noexcept;

  /// Registers data owned by `owner` (a rank, or kEveryRank), messages about it carrying `tag`
  /// (unique per handle, below Transport::max_tag() - 1: hetflow keeps the two largest;
  /// allocate_tags() hands out ranges). On the owner `ptr` is the data; elsewhere it is where a
  /// copy is received when one is needed, or nullptr to let hetflow reserve the memory, which
  /// the system then gives only once a copy lands there. Data every rank owns needs `ptr` on
  /// every rank. Layouts must be contiguous (a vector, or a matrix with ld == nx). Memory that
  /// data still registered with the runtime hold is refused (Runtime::register_data): a buffer
  /// freed before the context ends is unregistered first (Runtime::unregister, every rank).
  DataHandle register_data(void* ptr, const DataLayout& layout, int owner, int tag, std::string name = {});
  /// `count` consecutive tags no other allocate_tags() call returns; the first one.
  int allocate_tags(int count);

  /// Submits the codelet where it runs (see Placement; by default the owner of the first data it
  /// writes; a task that writes nothing runs where the fewest bytes it reads must be sent, the
  /// owner of the first data it reads on a tie; one that only reduces, on the owner of the first
  /// data it reduces into; one whose data every rank owns, on every rank), and the transfers
  /// that bring it the data it reads.
  /// The future is that of the task on the rank that runs it; on the others it is empty
  /// (valid() is false).
  Future<void> insert(const Codelet& codelet, const TaskOptions& options, Placement placement = {});
  /// The same, with an argument the implementation reads with `context.arg<A>()`.
  template <class A>
  requires(!std::same_as<std::decay_t<A>, Placement>) Future<void> insert(const Codelet& codelet,
                                                                          const TaskOptions& options, A&& arg,
                                                                          Placement placement = {}) {
    std::optional<LocalTask> local = route(options, placement, codelet.name);
    if (!local) return Future<void>{};
    return runtime().insert(codelet, local->options, std::forward<A>(arg));
  }

  /// The rank a task with these options runs on (as insert decides), or kEveryRank.
  [[nodiscard]] int executor(const TaskOptions& options, Placement placement = {}) const;
  /// The protocol's side of submitting a task, for code that submits it to the Runtime itself
  /// (a language binding, say): the transfers it needs are posted and the state updated as
  /// insert does; when it runs on this rank the result holds the options to submit it with (its
  /// data as this rank holds them), else it is empty. `label` names it in the submission check.
  std::optional<LocalTask> route(const TaskOptions& options, Placement placement = {}, std::string_view label = "task");

  /// How tasks that name `handle` Redux contribute to it: each rank other than the owner that
  /// runs some gathers them in its own copy of the data (out of date from the first contribution
  /// on anyway), which `init` (one access, W) first sets to a neutral value; at the next other
  /// access to `handle` (or flush, get_on, broadcast, migrate, wait_all) each such copy is sent
  /// to the owner, where `combine` (RW(into), R(contribution)) adds it in. Contributions on the
  /// owner go straight into the data. The codelets must outlive the context. The first call for
  /// a handle takes a free tag for the contributions, as allocate_tags(1) would.
  void set_reduction(const DataHandle& handle, const Codelet& init, const Codelet& combine);

  /// The rank that holds the latest version of `handle` (the owner, or the last rank that
  /// wrote it).
  [[nodiscard]] int holder(const DataHandle& handle) const;
  /// The owner of `handle` now.
  [[nodiscard]] int owner(const DataHandle& handle) const;
  /// Brings the latest version of `handle` to `rank` (a transfer, if it does not hold it): there,
  /// tasks and acquisitions submitted after see it (`Runtime::acquire` reads it on the host).
  void get_on(const DataHandle& handle, int rank);
  /// get_on for every rank, through a tree: each rank that has the latest version sends it on,
  /// so that the holder sends log2(size()) copies rather than size() - 1.
  void broadcast(const DataHandle& handle);
  /// get_on(handle, rank) for each of `handles`.
  void gather(const std::vector<DataHandle>& handles, int rank);
  /// Makes `rank` the owner of `handle`, bringing it the latest version: the tasks that write
  /// `handle` run there from now on.
  void migrate(const DataHandle& handle, int rank);
  /// Drops the copies of `handle` received for reading (every rank but the holder's): the next
  /// reader elsewhere receives it again. flush_all() does it for every handle.
  void flush(const DataHandle& handle);
  void flush_all();

  /// Waits, on every rank, until every task and transfer submitted on every rank is done.
  /// The ranks meet in a barrier that does not block the transport's thread.
  ///
  /// With HETFLOW_MPI_CHECK=1 the ranks first compare what they submitted since the last
  /// wait_all (a hash per task, and per call every rank makes that submits none: get_on,
  /// broadcast, gather, migrate, flush, flush_all, set_reduction) and, if it differs, every rank
  /// throws hetflow::Error naming the first task that differs instead of waiting for transfers
  /// that will never match: the ranks first give up on the transfers between them (the tasks
  /// that read what never came fail) and wait for their other tasks; the context's calls then throw (docs/mpi.md). When
  /// nothing moves for HETFLOW_MPI_WATCHDOG seconds (default 60; 0: never; at most a year), the transfers still
  /// pending are printed on stderr, once per stall; so is a wait that long for the other ranks to
  /// call wait_all. A rank whose context ended (without this call, or after fewer of them) is
  /// not waited for: once the local work is done, this throws hetflow::Error naming it and the
  /// transfers with it that never happened. With HETFLOW_MPI_CHECK the ranks still there compare
  /// their work all the same (unless rank 0's context ended). Called by a second thread of the
  /// rank while one is in it (and not interrupted), it throws hetflow::Error.
  void wait_all();
  /// With HETFLOW_MPI_CHECK=1, what wait_all does first, now, without waiting for the work: the
  /// ranks compare what they submitted since the last comparison and, if it differs, every rank
  /// throws as wait_all does. A call every rank makes (for a rank that then waits for data, as
  /// hetflow.mpi's gather does on its root, so that a rank alone in it is told rather than left
  /// waiting); without the check it does nothing.
  void check_submissions();
  /// Makes the wait_all calls in progress on other threads throw hetflow::Error (interrupted),
  /// within a fraction of a second: a program interrupted while one waits (Ctrl-C) can end the
  /// context once the call has returned. Calls made afterwards wait as usual.
  void interrupt_wait_all() noexcept;

  /// Its destruction waits for the transfers in flight (HETFLOW_MPI_WATCHDOG seconds on, it says
  /// which), tells the other ranks that this one sends and receives nothing more (their
  /// transfers with it that can no longer happen fail, and their wait_all says so), then waits
  /// for them to end their contexts too, so that no message is left on the transport. Called
  /// before the destruction, this leaves that wait out: for a process that exits (nothing
  /// communicates after it). A context destroyed while an exception unwinds leaves it out too.
  /// It also waits at most `patience` for the transfers in flight: past it, it says which on
  /// stderr, tells the other ranks all the same, and cancels them.
  void ending_with_process(std::chrono::duration<double> patience = std::chrono::seconds(30)) noexcept;

  /// Messages and bytes this rank sent to each peer (indexed by rank). With HETFLOW_MPI_STATS=1
  /// each rank prints them on stderr when its context is destroyed.
  [[nodiscard]] std::vector<PeerStats> sent() const;

 private:
  [[nodiscard]] Runtime& runtime() const noexcept;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hetflow::mpi
