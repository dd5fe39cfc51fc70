#pragma once
// The process driver: workers that each drive one child process (a Python interpreter, say)
// over a pair of pipes, the way a GPU driver thread drives a GPU. Implementations of the
// `process` architecture reach their worker's channel with
// `static_cast<hetflow::ProcessChannel*>(context.driver_state())`.
//
// Messages on the pipes: a 16-byte header (magic "HFW1", kind, part count, 0 — little-endian
// uint32s), then each part as a little-endian uint64 length and its bytes. The child sends
// kind 3 (ready) once when it starts.
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/export.hpp"
#include "hetflow/ext/driver.hpp"

namespace hetflow {

/// The child process of a process worker died while running a task. The worker starts a new one.
class HETFLOW_API WorkerCrashedError : public Error {
 public:
  using Error::Error;
};

struct ProcessMessage {
  std::uint32_t kind = 0;
  std::vector<std::string> parts{};
};

inline constexpr std::uint32_t kProcessReady = 3;
/// Replies have kinds below this; the child may send messages of other kinds while it works
/// (requests to its host, answered through a call's handler).
inline constexpr std::uint32_t kProcessFirstRequest = 4;

/// Answers a request a child makes while it runs a task; the returned message, if any, is
/// written back to the child.
using ProcessRequestHandler = std::function<std::optional<ProcessMessage>(const ProcessMessage&)>;

/// One worker's connection to its child process. Used only by that worker's thread.
class HETFLOW_API ProcessChannel {
 public:
  virtual ~ProcessChannel() = default;
  /// Sends a message and returns the child's reply, passing the requests it makes meanwhile to
  /// `on_request`. If the child dies first, reaps it, starts a new one and throws
  /// WorkerCrashedError saying how it died.
  virtual ProcessMessage call(std::uint32_t kind, const std::vector<std::string_view>& parts,
                              const ProcessRequestHandler& on_request = {}) = 0;
  /// The two halves of `call`, for sending several messages before reading the replies (in
  /// order). Messages of any size may be sent so: replies that come while `send` waits for room
  /// in the pipe are kept for `receive`. `send` returns false if the child is gone: `receive`
  /// then reports how it ended (WorkerCrashedError, after starting a new child).
  virtual bool send(std::uint32_t kind, const std::vector<std::string_view>& parts) = 0;
  virtual ProcessMessage receive(const ProcessRequestHandler& on_request = {}) = 0;
  /// Replaces a child that died while it had no work (killed while idle, say), or starts one if
  /// none runs (throws Error if it cannot), so that a task is not failed by a death it did not
  /// see. Call it before building a message that depends on `knows`: a child replaced later
  /// knows nothing. (`send` replaces such a child itself only while nothing is remembered.)
  virtual void prepare() {}
  /// The running child's pid; -1 while none runs (not started yet, see
  /// ProcessWorkersConfig::lazy_start, or reaped and not replaced yet).
  [[nodiscard]] virtual pid_t pid() const noexcept = 0;
  [[nodiscard]] virtual unsigned index() const noexcept = 0;
  /// Per-child memory of what was already sent (function code, say); cleared on restart.
  [[nodiscard]] virtual bool knows(const std::string& key) const = 0;
  virtual void remember(const std::string& key) = 0;
};

struct ProcessWorkersConfig {
  /// The child's command; the driver appends the file descriptors it reads from and writes to.
  std::vector<std::string> command{};
  /// Added to the child's environment ("NAME=value"); HETFLOW_WORKER_ID (the worker's index) and
  /// HETFLOW_WORKER_START (1 for the worker's first child, 2 for the one that replaces it...) are
  /// set too. The rest is the host's environment as make_process_driver was called, for every
  /// child (one started late or replacing another too).
  std::vector<std::string> environment{};
  unsigned count = 0;
  /// Message kind that asks a child to exit (sent at shutdown); 0 to just close its pipe.
  std::uint32_t shutdown_kind = 0;
  /// Seconds a child has to say it is ready once started; one that does not is ended, and the
  /// task that needed it fails saying so (0: no limit).
  double start_timeout_s = 120;
  /// Seconds a child has to exit once asked (shutdown_kind, then its pipe closed) when the
  /// runtime stops; one still there is killed (SIGKILL), so that stopping never waits on it.
  double stop_timeout_s = 5;
  /// false (the default): each worker starts its child as the runtime starts, and a task finds
  /// it ready. true: a worker starts its child only when its first task needs it (that task's
  /// ProcessChannel::prepare, send or call, on the worker's thread), so that a runtime whose
  /// process workers get no work starts no process; a worker that never gets a task never starts
  /// one, and stopping it is immediate. The first task on each worker waits for the start; one
  /// that cannot start fails that task with the reason (as a failed start at start-up fails the
  /// worker's first task), and the next task tries again. ProcessChannel::pid() is -1 until then.
  bool lazy_start = false;
};

/// A driver of `count` process workers (architecture `process`), for Config::drivers.
HETFLOW_API std::shared_ptr<ext::Driver> make_process_driver(ProcessWorkersConfig config);

}  // namespace hetflow
