#pragma once
// Messages among the kernels of one offload launch (send / recv / barrier), relayed by the host:
// each kernel's worker thread answers its child's requests from here. A failing kernel fails
// its launch, and a kernel that ends fails the receives and barriers that only it could have
// satisfied, so that no peer waits forever for it; nor do kernels that all wait for each other
// (a receive from its own core with nothing sent, two cores receiving from each other first).
// A kernel whose other threads may still send polls instead of waiting, and is not counted as
// waiting meanwhile.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>

namespace hetflow::python {

class MessageHub {
 public:
  /// Starts a launch of `size` kernels.
  void open(std::uint64_t launch, std::uint32_t size);
  void send(std::uint64_t launch, std::uint32_t from, std::uint32_t to, std::string payload);
  // `poll`: a kernel with threads that may still send (other than the one asking) polls instead
  // of waiting: its core does not count as waiting, and a poll answers at once.
  /// The next message from `from` to `to`; nullopt with the reason in `failure` if the launch
  /// failed first, or if the kernel of `from` ended without sending it; polled, nullopt with an
  /// empty `failure` when none has come yet.
  std::optional<std::string> receive(std::uint64_t launch, std::uint32_t to, std::uint32_t from, std::string& failure,
                                     bool poll = false);
  /// `core` reaches the launch's barrier: true once all kernels of the launch have reached it;
  /// false (with the reason) if the launch failed or one of its kernels ended without reaching
  /// it; polled, nullopt when the barrier is not met yet, whose `generation` it then gives, to
  /// wait for with await_barrier.
  std::optional<bool> barrier(std::uint64_t launch, std::uint32_t core, std::string& failure, bool poll = false,
                              std::uint64_t* generation = nullptr);
  /// After a polled barrier: whether barrier `generation`, which `core` reached, is met (true),
  /// failed (false, with the reason), or, polled, not met yet (nullopt).
  std::optional<bool> await_barrier(std::uint64_t launch, std::uint32_t core, std::uint64_t generation,
                                    std::string& failure, bool poll);
  void fail(std::uint64_t launch, const std::string& reason);
  /// The kernel of `core` is done; the launch is forgotten when all are.
  void kernel_done(std::uint64_t launch, std::uint32_t core);
  /// `unsent` kernels of the launch were never submitted (its submission failed part way, or
  /// before its first kernel): the launch fails, and is forgotten once those sent are done.
  void abandon(std::uint64_t launch, std::uint32_t unsent);
  /// The launches not forgotten yet (for tests and diagnostics).
  std::size_t open_launches();

 private:
  struct Launch {
    std::uint32_t size = 0;
    std::uint32_t running = 0;
    std::uint32_t arrived = 0;
    std::uint64_t generation = 0;
    std::optional<std::string> failure;
    std::set<std::uint32_t> ended;                                                     // cores whose kernel is done
    std::map<std::pair<std::uint32_t, std::uint32_t>, std::deque<std::string>> boxes;  // (to, from)
    struct Wait {
      std::optional<std::uint32_t> from;  // a receive from that core; none: the barrier
      std::uint64_t generation = 0;       // the barrier's, when it began to wait
    };
    std::map<std::uint32_t, Wait> waiting;  // by core: what its kernel waits for
  };
  Launch& launch_of(std::uint64_t launch);
  /// Registers `core`'s wait; if every kernel still to end now waits for what none of them can
  /// give any more, fails the launch (saying so) and returns false.
  bool wait_may_end(Launch& state, std::uint32_t core, Launch::Wait wait);
  /// Whether barrier `generation`, which `core` reached, is met (see await_barrier), under `guard`.
  std::optional<bool> awaited_barrier(Launch& state, std::unique_lock<std::mutex>& guard, std::uint32_t core,
                                      std::uint64_t generation, std::string& failure, bool poll);
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, Launch> launches_;
};

}  // namespace hetflow::python
