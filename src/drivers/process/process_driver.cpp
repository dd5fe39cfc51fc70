// Process workers: each worker thread owns one child process and talks to it over two pipes.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "drivers/process/wire.hpp"
#include "hetflow/process.hpp"

extern char** environ;

namespace hetflow::detail {
namespace {

// Whether `fd` has something to read (or its writer closed it) within `seconds` (0: no limit).
bool readable_within(int fd, double seconds) {
  if (seconds <= 0) return true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) return false;
    pollfd watched{fd, POLLIN, 0};
    const int rc = ::poll(&watched, 1, static_cast<int>(std::min<long long>(left.count() + 1, 1 << 30)));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return true;  // the read that follows reports what went wrong
  }
}

// Seconds for a message: "120", "0.5".
std::string seconds_text(double seconds) {
  std::string text = std::to_string(seconds);
  text.erase(text.find_last_not_of('0') + 1);
  if (text.back() == '.') text.pop_back();
  return text;
}

// Where the child finds its pipes: the two lowest descriptors above stdio that are neither
// pipe end moved there. A target that is a source would make its dup2 a no-op that keeps the
// close-on-exec flag, or overwrite the other end before that end is moved.
std::pair<int, int> child_descriptors(int read_source, int write_source) {
  int targets[2];
  int found = 0;
  for (int fd = 3; found < 2; ++fd) {
    if (fd != read_source && fd != write_source) targets[found++] = fd;
  }
  return {targets[0], targets[1]};
}

// What to say when a system call fails; running out of descriptors gets the limit and a remedy,
// since the call that hits it is rarely the one that used them up.
std::string describe_error(int error) {
  std::string text = std::strerror(error);
  if (error == EMFILE || error == ENFILE) {
    rlimit limit{};
    const bool known = ::getrlimit(RLIMIT_NOFILE, &limit) == 0;
    text += error == EMFILE ? ": this process ran out of file descriptors" : ": the system ran out of file descriptors";
    if (known && limit.rlim_cur != RLIM_INFINITY) text += " (limit " + std::to_string(limit.rlim_cur) + ", ulimit -n)";
    text += "; raise the limit (ulimit -n), or keep fewer files, sockets and shared arrays open at once";
  }
  return text;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (name != nullptr ? std::string(" (SIG") + name + ")" : "");
  }
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "stopped";
}

class Child final : public ProcessChannel {
 public:
  Child(const ProcessWorkersConfig& config, const std::vector<std::string>& host_environment, unsigned index)
      : config_(config), host_environment_(host_environment), index_(index) {}
  ~Child() override { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // A child killed while it starts (the OOM killer, an operator) is replaced: the task it was
  // started for never ran. One that dies that way every time is a worker that cannot start.
  void start() {
    constexpr int kAttempts = 3;
    for (int attempt = 1;; ++attempt) {
      std::optional<std::string> died = start_once();
      if (!died) return;
      if (attempt == kAttempts || aborted_.load(std::memory_order_acquire)) {
        throw Error("hetflow: process worker " + std::to_string(index_) + " (" + config_.command[0] +
                    ") did not start: " + *died + (attempt > 1 ? " (" + std::to_string(attempt) + " times)" : ""));
      }
    }
  }

  // Starts the child; how it ended if it died before saying it was ready. Throws when it cannot
  // be started, or did not say anything in time.
  std::optional<std::string> start_once() {
    int to_child[2];
    int from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0) {
      throw Error("hetflow: cannot create the pipes of process worker " + std::to_string(index_) + ": " +
                  describe_error(errno));
    }
    if (::pipe2(from_child, O_CLOEXEC) != 0) {
      const int error = errno;
      ::close(to_child[0]);
      ::close(to_child[1]);
      throw Error("hetflow: cannot create the pipes of process worker " + std::to_string(index_) + ": " +
                  describe_error(error));
    }
    const auto [child_read_fd, child_write_fd] = child_descriptors(to_child[0], from_child[1]);
    std::vector<std::string> argv_storage = config_.command;
    argv_storage.push_back(std::to_string(child_read_fd));
    argv_storage.push_back(std::to_string(child_write_fd));
    std::vector<char*> argv;
    for (auto& arg : argv_storage) argv.push_back(arg.data());
    argv.push_back(nullptr);

    std::vector<std::string> overrides = config_.environment;
    overrides.push_back("HETFLOW_WORKER_ID=" + std::to_string(index_));
    overrides.push_back("HETFLOW_WORKER_START=" + std::to_string(++starts_));
    overrides.push_back("HETFLOW_HOST_PID=" + std::to_string(::getpid()));  // the child ends itself with its host
    auto name_of = [](const std::string& entry) { return entry.substr(0, entry.find('=')); };
    std::vector<std::string> env_storage;
    for (const std::string& entry : host_environment_) {
      bool replaced = std::any_of(overrides.begin(), overrides.end(),
                                  [&](const std::string& o) { return name_of(o) == name_of(entry); });
      if (!replaced) env_storage.push_back(entry);
    }
    env_storage.insert(env_storage.end(), overrides.begin(), overrides.end());
    std::vector<char*> envp;
    for (auto& entry : env_storage) envp.push_back(entry.data());
    envp.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], child_read_fd);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], child_write_fd);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    // Its own process group: a Ctrl-C at the terminal interrupts the host, not the workers.
    posix_spawnattr_setpgroup(&attributes, 0);
    // A worker runs its tasks' programs (subprocess) as a fresh interpreter would: SIGCHLD ignored
    // by the host (its own child management) would make every wait in the worker fail with
    // ECHILD, and `subprocess.run(...).returncode` read 0 whatever the program returned.
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGCHLD);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid = 0;
    int rc = ::posix_spawnp(&pid, argv[0], &actions, &attributes, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    ::close(to_child[0]);
    ::close(from_child[1]);
    if (rc != 0) {
      ::close(to_child[1]);
      ::close(from_child[0]);
      throw Error("hetflow: cannot start process worker '" + config_.command[0] + "': " + describe_error(rc));
    }
    pid_ = pid;
    exit_status_.reset();
    in_flight_ = 0;
    running_pid_.store(pid, std::memory_order_release);
    if (aborted_.load(std::memory_order_acquire)) kill_group(pid);
    to_child_ = to_child[1];
    from_child_ = from_child[0];
    // Writes wait with an eye on the child rather than block for ever on a full pipe that a
    // process it started holds open after it died.
    ::fcntl(to_child_, F_SETFL, ::fcntl(to_child_, F_GETFL) | O_NONBLOCK);
    reader_.emplace(from_child_, child_ended());
    known_.clear();

    if (!readable_within(from_child_, config_.start_timeout_s)) {
      ::kill(pid_, SIGKILL);
      std::string how = reap();
      late_start_ = LateStart{std::chrono::steady_clock::now(),
                              "hetflow: process worker " + std::to_string(index_) + " (" + config_.command[0] +
                                  ") did not say it was ready within " + seconds_text(config_.start_timeout_s) +
                                  " s (ProcessWorkersConfig::start_timeout_s; an initializer that does not return "
                                  "keeps it from being ready), and was ended: " +
                                  how};
      throw Error(late_start_->message);
    }
    late_start_.reset();
    auto ready = reader_->read();
    if (!ready || ready->kind != kProcessReady) return reap();
    return std::nullopt;
  }

  void stop() noexcept {
    if (pid_ <= 0) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(config_.stop_timeout_s);
    if (config_.shutdown_kind != 0) {
      auto ended_or_late = [this, deadline] { return has_exited() || std::chrono::steady_clock::now() >= deadline; };
      write_message(to_child_, config_.shutdown_kind, {}, ended_or_late, &*reader_);
    }
    // Its pipe closed too, a child that keeps running (it ignores both, or a fork of the host
    // holds the pipe open) is ended rather than waited for.
    ::close(to_child_);
    to_child_ = -1;
    while (!has_exited() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!has_exited()) ::kill(pid_, SIGKILL);
    reap();
  }

  ProcessMessage call(std::uint32_t kind, const std::vector<std::string_view>& parts,
                      const ProcessRequestHandler& on_request) override {
    send(kind, parts);
    return receive(on_request);
  }

  bool send(std::uint32_t kind, const std::vector<std::string_view>& parts) override {
    if (aborted_.load(std::memory_order_acquire)) {
      throw WorkerCrashedError("process worker " + std::to_string(index_) +
                               " was ended: the runtime gave up on its work");
    }
    // A child that died while idle is replaced here only if the message cannot assume anything
    // the dead child knew (see prepare). With replies outstanding, its death is reported by
    // `receive`, to the task it was running.
    if (pid_ > 0 && in_flight_ == 0 && known_.empty() && has_exited()) reap();
    start_if_stopped();
    ++in_flight_;
    return write_message(to_child_, kind, parts, child_ended(), &*reader_);
  }

  ProcessMessage receive(const ProcessRequestHandler& on_request) override {
    std::optional<ProcessMessage> reply;
    if (pid_ > 0) {
      try {
        while ((reply = reader_->read()) && reply->kind >= kProcessFirstRequest) {
          if (!on_request) {
            throw Error("hetflow: process worker sent a request nobody answers (kind " + std::to_string(reply->kind) +
                        ")");
          }
          std::optional<ProcessMessage> answer = on_request(*reply);
          if (!answer) continue;
          std::vector<std::string_view> answer_parts(answer->parts.begin(), answer->parts.end());
          if (!write_message(to_child_, answer->kind, answer_parts, child_ended(), &*reader_)) {
            reply.reset();
            break;
          }
        }
      } catch (...) {
        // The conversation is out of step (an unanswered request, a garbled message): end the
        // child, so that the next task starts with a fresh one rather than a stale reply.
        ::kill(pid_, SIGKILL);
        reap();
        throw;
      }
    }
    if (reply) {
      if (in_flight_ > 0) --in_flight_;
      return std::move(*reply);
    }
    const pid_t dead = pid_;
    std::string how = reap();
    if (aborted_.load(std::memory_order_acquire)) {
      throw WorkerCrashedError("process worker " + std::to_string(index_) + " (pid " + std::to_string(dead) +
                               ") was ended: the runtime gave up on its work");
    }
    std::string message = "process worker " + std::to_string(index_) + " (pid " + std::to_string(dead) + ") " + how +
                          " while running this task; a new worker process replaces it";
    try {
      start();
    } catch (const std::exception& e) {
      message += std::string(" (restart failed: ") + e.what() + ")";
    }
    throw WorkerCrashedError(message);
  }

  /// The worker's first start failed (with `error`, for its first task to report rather than
  /// wait for another start that would likely fail the same way).
  void failed_to_start(std::exception_ptr error) noexcept { start_failure_ = std::move(error); }

  void prepare() override {
    if (aborted_.load(std::memory_order_acquire)) return;  // send says so
    // Only the task a child was running may fail with it: one that died idle is replaced first.
    if (pid_ > 0 && in_flight_ == 0 && has_exited()) reap();
    start_if_stopped();
  }

  /// Ends the child at once (from any thread), with the processes its tasks started and left
  /// in its process group (`subprocess.run` inside a task): they are given up with it, and the
  /// child's own process group keeps a terminal's Ctrl-C from reaching them. It is not restarted.
  void kill_now() noexcept {
    aborted_.store(true, std::memory_order_release);
    const pid_t pid = running_pid_.load(std::memory_order_acquire);
    if (pid > 0) kill_group(pid);
  }

  [[nodiscard]] pid_t pid() const noexcept override { return pid_; }
  /// Replies still to read: a task using the channel now would take them.
  [[nodiscard]] bool awaiting_replies() const noexcept { return pid_ > 0 && in_flight_ > 0; }
  [[nodiscard]] unsigned index() const noexcept override { return index_; }
  [[nodiscard]] bool knows(const std::string& key) const override { return known_.count(key) != 0; }
  void remember(const std::string& key) override { known_.insert(key); }

 private:
  // Whether the child has ended (it is then a zombie, its status kept for `reap`).
  void start_if_stopped() {
    if (pid_ > 0) return;
    if (start_failure_) std::rethrow_exception(std::exchange(start_failure_, nullptr));
    if (late_start_) {
      // Each task would wait the whole timeout again, one after the other: for as long again,
      // the tasks that need this worker fail at once, saying why.
      const std::chrono::duration<double> since = std::chrono::steady_clock::now() - late_start_->when;
      if (since.count() < config_.start_timeout_s) {
        throw Error(late_start_->message + " (" + seconds_text(std::floor(since.count())) +
                    " s ago; it is started again once as long has passed)");
      }
    }
    start();
  }

  // The child leads a process group of its own (POSIX_SPAWN_SETPGROUP): SIGKILL to the group,
  // or to the child alone if a task moved it out of the group.
  static void kill_group(pid_t pid) noexcept {
    if (::getpgid(pid) != pid || ::kill(-pid, SIGKILL) != 0) ::kill(pid, SIGKILL);
  }

  PeerEnded child_ended() {
    return [this] { return has_exited(); };
  }

  bool has_exited() noexcept {
    if (exit_status_) return true;
    int status = 0;
    pid_t result;
    do {
      result = ::waitpid(pid_, &status, WNOHANG);
    } while (result < 0 && errno == EINTR);
    if (result < 0 && errno == ECHILD) {
      // Ended, and reaped by someone else: the host ignores SIGCHLD (the kernel reaps its
      // children), or a SIGCHLD handler of its own waited for any child. Its status is lost.
      exit_status_ = kStatusUnknown;
      return true;
    }
    if (result != pid_) return false;
    exit_status_ = status;
    return true;
  }

  // Closes the pipes and waits for the child; returns how it ended.
  std::string reap() noexcept {
    if (pid_ <= 0) return "was not running";  // waitpid(-1) would reap any child of the host
    if (to_child_ >= 0) ::close(to_child_);
    if (from_child_ >= 0) ::close(from_child_);
    to_child_ = from_child_ = -1;
    int status = exit_status_.value_or(0);
    pid_t result = pid_;
    while (!exit_status_ && (result = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    if (result < 0 || status == kStatusUnknown) {
      status = kStatusUnknown;
      result = -1;
    }
    exit_status_.reset();
    in_flight_ = 0;
    known_.clear();  // a replacement knows nothing
    pid_ = -1;
    running_pid_.store(-1, std::memory_order_release);
    return result < 0 ? std::string(
                            "ended (its exit status is unknown: this process ignores SIGCHLD, or another "
                            "part of it reaped the child)")
                      : describe_exit(status);
  }

  // exit_status_ of a child that someone else reaped: no status waitpid gives (it would say
  // "killed by signal 126", and there is no such signal).
  static constexpr int kStatusUnknown = 0x7e7e;
  const ProcessWorkersConfig& config_;
  const std::vector<std::string>& host_environment_;  // the driver's copy of the host's
  unsigned index_;
  pid_t pid_ = -1;
  std::atomic<pid_t> running_pid_{-1};  // pid_, for kill_now from other threads
  std::atomic<bool> aborted_{false};
  std::optional<int> exit_status_;  // set once waitpid has reaped the child
  std::size_t in_flight_ = 0;       // requests sent whose replies have not been read
  int to_child_ = -1;
  int from_child_ = -1;
  std::optional<MessageReader> reader_;
  std::set<std::string> known_;
  std::exception_ptr start_failure_;
  struct LateStart {
    std::chrono::steady_clock::time_point when;
    std::string message;
  };
  std::optional<LateStart> late_start_;  // the last start, if it timed out
  unsigned starts_ = 0;                  // children started so far
};

class ProcessDriver final : public ext::Driver {
 public:
  explicit ProcessDriver(ProcessWorkersConfig config) : config_(std::move(config)) {
    if (config_.command.empty()) throw InvalidArgument("process workers: the command is empty");
    for (const auto& [seconds, name] :
         {std::pair{config_.start_timeout_s, "start_timeout_s"}, std::pair{config_.stop_timeout_s, "stop_timeout_s"}}) {
      if (!(seconds >= 0 && seconds <= 1e9)) {
        throw InvalidArgument(std::string("process workers: ProcessWorkersConfig::") + name + " is " +
                              std::to_string(seconds) + "; give seconds from 0 to 1e9");
      }
    }
    // The host's environment as the driver is made: a child started later (lazy_start, or one
    // replacing a dead child) gets the same one, and no worker thread reads `environ` while the
    // host may change it (setenv is not safe beside a reader).
    for (char** e = environ; *e != nullptr; ++e) host_environment_.emplace_back(*e);
    for (unsigned i = 0; i < config_.count; ++i) {
      children_.push_back(std::make_unique<Child>(config_, host_environment_, i));
    }
  }
  [[nodiscard]] std::string_view name() const override { return "process"; }
  [[nodiscard]] Arch arch() const override { return Arch::process; }
  [[nodiscard]] unsigned worker_count() const override { return config_.count; }

  void start_worker(unsigned index) override {
    // A write to a dead child must fail with EPIPE, not kill the host.
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    if (config_.lazy_start) return;  // the worker's first task starts it (Child::prepare, send)
    try {
      children_[index]->start();
    } catch (...) {
      // Left stopped: its first task fails with the reason, the next ones try again.
      children_[index]->failed_to_start(std::current_exception());
    }
  }
  void stop_worker(unsigned index) override { children_[index]->stop(); }
  [[nodiscard]] bool mid_exchange(unsigned index) const override { return children_[index]->awaiting_replies(); }
  void abort() override {
    for (auto& child : children_) child->kill_now();
  }
  [[nodiscard]] void* worker_state(unsigned index) override {
    return static_cast<ProcessChannel*>(children_[index].get());
  }

 private:
  ProcessWorkersConfig config_;
  std::vector<std::string> host_environment_;
  std::vector<std::unique_ptr<Child>> children_;
};

}  // namespace
}  // namespace hetflow::detail

namespace hetflow {

std::shared_ptr<ext::Driver> make_process_driver(ProcessWorkersConfig config) {
  return std::make_shared<detail::ProcessDriver>(std::move(config));
}

}  // namespace hetflow
