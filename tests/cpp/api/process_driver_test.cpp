// The process driver (hetflow::make_process_driver): tasks on process workers talk to their
// child over its channel (call, send/receive, requests answered by a handler); a child that
// dies fails its task with WorkerCrashedError and is replaced; a command that cannot start
// fails tasks with a clear error; Runtime::abort() ends a stuck child. The child is
// process_child.cpp, whose path CMake passes as HETFLOW_TEST_PROCESS_CHILD.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

#ifndef HETFLOW_TEST_PROCESS_CHILD
#error "HETFLOW_TEST_PROCESS_CHILD (the path of the test child program) is not defined"
#endif

namespace {

using namespace std::chrono_literals;
using hetflow::Arch;
using hetflow::Config;
using hetflow::ProcessChannel;
using hetflow::ProcessMessage;
using hetflow::Runtime;
using hetflow::TaskContext;
using hetflow::TaskOptions;
using hetflow::WorkerCrashedError;
using Parts = std::vector<std::string>;

constexpr const char* kChild = HETFLOW_TEST_PROCESS_CHILD;

// One CPU worker (id 0) and `count` process workers (ids 1...) running `command`.
Config with_process_workers(unsigned count = 1, std::vector<std::string> command = {kChild},
                            std::vector<std::string> environment = {}) {
  return Config{
      .ncpus = 1,
      .drivers = {hetflow::make_process_driver(
          {.command = std::move(command), .environment = std::move(environment), .count = count, .shutdown_kind = 2})}};
}

TaskOptions on_process() { return TaskOptions{.where = Arch::process}; }

ProcessChannel& channel_of(TaskContext& ctx) {
  auto* channel = static_cast<ProcessChannel*>(ctx.driver_state());
  if (channel == nullptr) throw std::logic_error("task ran on a worker without a process channel");
  return *channel;
}

// Expects `fn` to throw E whose message contains every one of `needles`.
template <class E, class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception";
  } catch (const E& e) {
    for (const auto& needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "message '" << e.what() << "' does not contain '" << needle << "'";
    }
  }
}

// Expects a process task that calls its child to fail with a hetflow::Error saying each of `needles`.
void expect_process_task_fails(Runtime& rt, std::initializer_list<std::string> needles) {
  auto f = rt.submit(on_process(), [](TaskContext& ctx) { return channel_of(ctx).call(1, {"x"}).parts; });
  expect_error<hetflow::Error>([&] { (void)f.get(); }, needles);
}

TEST(Process, CallRoundTrips) {
  Runtime rt(with_process_workers(1, {kChild}, {"HETFLOW_TEST_GREETING=hello"}));
  ASSERT_EQ(rt.worker_count(), 2u);
  EXPECT_EQ(rt.workers()[1].arch, Arch::process);

  std::string binary("a\0b\xff", 4);
  std::string large(200 * 1024, 'x');  // more than a pipe holds at once
  auto echoed = rt.submit(on_process(), [&](TaskContext& ctx) {
    EXPECT_EQ(ctx.arch(), Arch::process);
    ProcessMessage reply = channel_of(ctx).call(1, {"hello", "", binary, large});
    EXPECT_EQ(reply.kind, 1u);
    return reply.parts;
  });
  EXPECT_EQ(echoed.get(), (Parts{"hello", "", binary, large}));

  // The channel is the child's: same pid, its own worker index, the configured environment.
  auto facts = rt.submit(on_process(), [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    EXPECT_EQ(channel.index(), 0u);
    return Parts{std::to_string(channel.pid()), channel.call(1, {"pid"}).parts.at(0),
                 channel.call(1, {"env", "HETFLOW_WORKER_ID"}).parts.at(0),
                 channel.call(1, {"env", "HETFLOW_TEST_GREETING"}).parts.at(0)};
  });
  const Parts got = facts.get();
  EXPECT_EQ(got[1], got[0]);
  EXPECT_EQ(got[2], "0");
  EXPECT_EQ(got[3], "hello");

  // A CPU worker has no channel.
  EXPECT_EQ(rt.submit(TaskOptions{.where = Arch::cpu}, [](TaskContext& ctx) { return ctx.driver_state(); }).get(),
            nullptr);
}

TEST(Process, SendSeveralThenReceiveTheRepliesInOrder) {
  Runtime rt(with_process_workers());
  auto replies = rt.submit(on_process(), [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    const Parts words{"one", "two", "three", "four", "five"};
    for (const auto& word : words) {
      if (!channel.send(1, {word, "#" + word})) throw std::runtime_error("send failed");
    }
    Parts got;
    for (std::size_t i = 0; i < words.size(); ++i) {
      ProcessMessage reply = channel.receive();
      EXPECT_EQ(reply.kind, 1u);
      EXPECT_EQ(reply.parts.size(), 2u);
      got.push_back(reply.parts.at(0));
    }
    return got;
  });
  EXPECT_EQ(replies.get(), (Parts{"one", "two", "three", "four", "five"}));
}

TEST(Process, SendingSeveralLargeMessagesBeforeReadingTheRepliesDoesNotDeadlock) {
  // The child echoes each message before it reads the next: with both pipes full, it waited to
  // write its reply while the host waited to write the next message.
  Runtime rt(with_process_workers());
  constexpr int kMessages = 8;
  constexpr std::size_t kBytes = 200 * 1024;
  auto replies = rt.submit(on_process(), [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    for (int i = 0; i < kMessages; ++i) EXPECT_TRUE(channel.send(1, {std::string(kBytes, static_cast<char>('a' + i))}));
    Parts got;
    for (int i = 0; i < kMessages; ++i) got.push_back(channel.receive().parts.at(0));
    return got;
  });
  const Parts got = replies.get();
  ASSERT_EQ(got.size(), std::size_t{kMessages});
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(got[i], std::string(kBytes, static_cast<char>('a' + i))) << i;
}

TEST(Process, CrashFailsTheTaskAndTheChildIsReplaced) {
  Runtime rt(with_process_workers());
  auto first_pid = rt.submit(on_process(), [](TaskContext& ctx) { return channel_of(ctx).pid(); }).get();
  ASSERT_GT(first_pid, 0);

  auto crashed = rt.submit(on_process(), [](TaskContext& ctx) { return channel_of(ctx).call(1, {"crash"}).parts; });
  expect_error<WorkerCrashedError>([&] { (void)crashed.get(); }, {"exited with status 3", std::to_string(first_pid)});
  auto dependent = rt.submit(TaskOptions{.after = {crashed}}, [] { return 1; });
  EXPECT_THROW((void)dependent.get(), hetflow::DependencyError);

  // The next task on that worker talks to a new child.
  auto after = rt.submit(on_process(), [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    return Parts{std::to_string(channel.pid()), channel.call(1, {"pid"}).parts.at(0),
                 channel.call(1, {"still", "here"}).parts.at(1)};
  });
  const Parts got = after.get();
  EXPECT_NE(got[0], std::to_string(first_pid));
  EXPECT_EQ(got[1], got[0]);
  EXPECT_EQ(got[2], "here");
}

TEST(Process, CrashAfterPipelinedSendsIsReported) {
  Runtime rt(with_process_workers());
  auto outcome = rt.submit(on_process(), [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    channel.send(1, {"before"});
    channel.send(1, {"crash"});
    channel.send(1, {"never answered"});  // may find the pipe closed: that is allowed
    Parts got{channel.receive().parts.at(0)};
    try {
      (void)channel.receive();
      got.push_back("no crash reported");
    } catch (const WorkerCrashedError& e) {
      got.push_back(e.what());
    }
    got.push_back(channel.call(1, {"after"}).parts.at(0));
    return got;
  });
  const Parts got = outcome.get();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], "before");
  EXPECT_NE(got[1].find("exited with status 3"), std::string::npos) << got[1];
  EXPECT_EQ(got[2], "after");
}

TEST(Process, AChildThatDiesWhileAProcessItStartedHoldsItsPipesIsNoticed) {
  // The pipes never close while the orphan lives, and the orphan reads nothing: the large
  // message fills the pipe to the dead child, and the reply never comes.
  const std::string pid_file = testing::TempDir() + "hetflow-orphan-" + std::to_string(::getpid());
  Runtime rt(with_process_workers());
  auto outcome = rt.submit(on_process(), [&](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    channel.send(1, {"orphan", pid_file});
    static_cast<void>(channel.send(1, {std::string(std::size_t{1} << 20, 'x')}));
    try {
      (void)channel.receive();
      return std::string("no crash reported");
    } catch (const WorkerCrashedError& e) {
      return std::string(e.what());
    }
  });
  const std::string got = outcome.get();
  if (FILE* file = std::fopen(pid_file.c_str(), "r")) {
    int orphan = 0;
    if (std::fscanf(file, "%d", &orphan) == 1 && orphan > 0) ::kill(orphan, SIGKILL);
    std::fclose(file);
    std::remove(pid_file.c_str());
  }
  EXPECT_NE(got.find("exited with status 5"), std::string::npos) << got;
}

TEST(Process, RequestsAreAnsweredThroughTheHandler) {
  Runtime rt(with_process_workers());
  auto answered = rt.submit(on_process(), [](TaskContext& ctx) {
    std::vector<ProcessMessage> seen;
    auto handler = [&seen](const ProcessMessage& request) -> std::optional<ProcessMessage> {
      seen.push_back(request);
      return ProcessMessage{6, {"answer to " + request.parts.at(0), std::to_string(request.parts.size())}};
    };
    ProcessMessage reply = channel_of(ctx).call(1, {"ask", "the question", "more"}, handler);
    EXPECT_EQ(reply.kind, 1u);
    EXPECT_EQ(seen.size(), 1u);
    if (!seen.empty()) {
      EXPECT_EQ(seen[0].kind, 4u);
      EXPECT_EQ(seen[0].parts, (Parts{"the question", "more"}));
    }
    // The same through send/receive, and an ordinary call afterwards still lines up.
    channel_of(ctx).send(1, {"ask", "again"});
    Parts got = reply.parts;
    got.push_back(channel_of(ctx).receive(handler).parts.at(0));
    got.push_back(channel_of(ctx).call(1, {"plain"}).parts.at(0));
    EXPECT_EQ(seen.size(), 2u);
    return got;
  });
  EXPECT_EQ(answered.get(), (Parts{"answer to the question", "2", "answer to again", "plain"}));
}

TEST(Process, BadCommandFailsTasksWithAClearError) {
  const std::string missing = "/nonexistent/hetflow-test-child";
  {
    Runtime rt(with_process_workers(1, {missing}));
    for (int i = 0; i < 2; ++i) {  // every task says why, and the runtime carries on
      expect_process_task_fails(rt, {"cannot start process worker", missing});
    }
    EXPECT_EQ(rt.submit(TaskOptions{.where = Arch::cpu}, [] { return 3; }).get(), 3);
  }
  {
    // Starts, but exits before saying it is ready.
    Runtime rt(with_process_workers(1, {kChild, "--exit-before-ready"}));
    expect_process_task_fails(rt, {"did not start", "exited with status 7"});
  }
  {
    // Starts and never says it is ready (it waited for it for ever): ended at the time limit.
    Runtime rt(Config{.ncpus = 1,
                      .drivers = {hetflow::make_process_driver(
                          {.command = {"/bin/sleep", "1000"}, .count = 1, .start_timeout_s = 2})}});
    expect_process_task_fails(rt, {"did not say it was ready within 2 s", "was ended"});
    // The next tasks fail at once, saying when it was tried ("s ago"), rather than each wait
    // as long again, until as long has passed.
    for (int i = 0; i < 3; ++i) {
      expect_process_task_fails(rt, {"did not say it was ready", "s ago"});
    }
  }
  EXPECT_THROW((void)hetflow::make_process_driver({}), hetflow::InvalidArgument);
}

// A child that ignores the request to exit, its pipe closing and SIGTERM held the runtime's end
// (and shutdown_until's) for ever: it is killed once stop_timeout_s has passed.
TEST(Process, StoppingDoesNotWaitForEverForAChildThatWillNotExit) {
  std::atomic<bool> ended{false};
  std::thread stopper([&ended] {
    {
      Runtime rt(Config{.ncpus = 1,
                        .drivers = {hetflow::make_process_driver(
                            {.command = {kChild, "--deaf"}, .count = 1, .shutdown_kind = 2, .stop_timeout_s = 0.2})}});
      EXPECT_EQ(rt.submit(TaskOptions{.where = Arch::cpu}, [] { return 1; }).get(), 1);
    }
    ended = true;
  });
  for (int i = 0; i < 3000 && !ended; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!ended) {
    stopper.detach();
    FAIL() << "the runtime still waits for its process worker to exit after 30 s";
  }
  stopper.join();
  EXPECT_THROW((void)hetflow::make_process_driver({.command = {kChild}, .stop_timeout_s = -1}),
               hetflow::InvalidArgument);
}

// The host allocated whatever length a reply announced before reading it: 1e11 bytes failed the
// task with bad_alloc (less would take the host's memory for bytes that never came).
TEST(Process, AReplyAnnouncingMoreThanItSendsIsACrashNotAnAllocation) {
  Runtime rt(with_process_workers());
  auto f = rt.submit(on_process(), [](TaskContext& ctx) {
    return channel_of(ctx).call(1, {"claim", "100000000000"}).parts;
  });
  expect_error<hetflow::WorkerCrashedError>([&] { (void)f.get(); }, {"exited with status 0"});
  auto again = rt.submit(on_process(), [](TaskContext& ctx) { return channel_of(ctx).call(1, {"echo"}).parts; });
  EXPECT_EQ(again.get(), std::vector<std::string>{"echo"});
}

// A process task that waits between sending a request and reading its reply: a task run on its
// worker meanwhile used the same channel, and the two took each other's replies. Such a task is
// set aside until the wait is over; when the wait is for that very task, it fails saying why.
TEST(Process, ATaskWaitingMidExchangeKeepsItsWorkersRepliesToItself) {
  Runtime rt(with_process_workers());
  const auto on_worker_1 = TaskOptions{.worker = 1};
  const auto exchange = [](TaskContext& ctx, const char* text) { return channel_of(ctx).call(1, {text}).parts; };
  hetflow::Future<std::vector<std::string>> inner;
  auto outer = rt.submit(on_worker_1, [&](TaskContext& ctx) {
    channel_of(ctx).send(1, {"outer"});
    inner = rt.submit(on_worker_1, [&exchange](TaskContext& c) { return exchange(c, "inner"); });
    rt.submit(TaskOptions{.where = Arch::cpu}, [] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }).get();  // the inner task is set aside meanwhile
    return channel_of(ctx).receive().parts;
  });
  EXPECT_EQ(outer.get(), std::vector<std::string>{"outer"});
  EXPECT_EQ(inner.get(), std::vector<std::string>{"inner"});

  hetflow::Future<std::vector<std::string>> awaited;
  auto waiting = rt.submit(on_worker_1, [&](TaskContext& ctx) {
    channel_of(ctx).send(1, {"waiting"});
    awaited = rt.submit(on_worker_1, [&exchange](TaskContext& c) { return exchange(c, "awaited"); });
    awaited.wait();
    return channel_of(ctx).receive().parts;
  });
  EXPECT_EQ(waiting.get(), std::vector<std::string>{"waiting"});
  expect_error<hetflow::Error>([&] { (void)awaited.get(); }, {"in the middle of an exchange"});
}

TEST(Process, AbortEndsAStuckChild) {
  Runtime rt(with_process_workers());
  hetflow::test::Signal started;
  auto stuck = rt.submit(on_process(), [&started](TaskContext& ctx) {
    started.raise();
    return channel_of(ctx).call(1, {"hang"}).parts;
  });
  auto queued = rt.submit(on_process(), [](TaskContext& ctx) { return channel_of(ctx).call(1, {"x"}).parts; });
  started.wait();
  std::this_thread::sleep_for(20ms);  // most likely the child has the message by now (either way it must end)
  rt.abort();
  expect_error<WorkerCrashedError>([&] { (void)stuck.get(); }, {"gave up"});
  EXPECT_THROW((void)queued.get(), hetflow::CancelledError);
  rt.shutdown();
  EXPECT_TRUE(rt.is_shut_down());
}

// A forked child has the parent's runtime without its workers: aborting it there (cleaning up
// on an error, say) did what abort does in the parent, and ended the parent's worker processes,
// failing the task that was using one. It does nothing there, as shutdown does.
TEST(Process, AbortInAForkedChildLeavesTheParentsWorkersAlone) {
  Runtime rt(with_process_workers());
  hetflow::test::Signal started;
  hetflow::test::Gate forked;
  auto task = rt.submit(on_process(), [&](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    const std::string before = channel.call(1, {"pid"}).parts.at(0);
    started.raise();
    forked.wait();
    return before == channel.call(1, {"pid"}).parts.at(0);
  });
  auto queued = rt.submit(on_process(), [] { return 1; });
  started.wait();
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    rt.abort();
    rt.cancel_pending();
    const bool cancelled = queued.cancel();
    ::_exit(cancelled ? 1 : 0);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  forked.open();
  EXPECT_TRUE(task.get());  // the same child process, still there
  EXPECT_EQ(queued.get(), 1);
}

TEST(Process, PinnedToEachProcessWorker) {
  Runtime rt(with_process_workers(2));
  ASSERT_EQ(rt.worker_count(), 3u);
  auto ask = [&rt](int worker) {
    return rt.submit(TaskOptions{.where = Arch::process, .worker = worker}, [](TaskContext& ctx) {
      ProcessChannel& channel = channel_of(ctx);
      return Parts{std::to_string(ctx.worker_id()), std::to_string(channel.index()),
                   channel.call(1, {"pid"}).parts.at(0)};
    });
  };
  const Parts one = ask(1).get();
  const Parts two = ask(2).get();
  EXPECT_EQ(one[0], "1");
  EXPECT_EQ(one[1], "0");
  EXPECT_EQ(two[0], "2");
  EXPECT_EQ(two[1], "1");
  EXPECT_NE(one[2], two[2]);  // a child each
}

// Waits until the child has exited, without reaping it (the driver does).
void await_exit(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return;  // reaped
    if (info.si_pid == pid) return;
    std::this_thread::sleep_for(5ms);
  }
  FAIL() << "child " << pid << " did not exit";
}

TEST(Process, AChildThatDiedIdleIsReplacedBeforeItGetsWork) {
  Runtime rt(with_process_workers());
  auto pid_of = [&rt] {
    return rt.submit(on_process(), [](TaskContext& ctx) { return channel_of(ctx).call(1, {"pid"}).parts.at(0); }).get();
  };
  const std::string first = pid_of();
  ::kill(std::stoi(first), SIGKILL);
  await_exit(std::stoi(first));
  const std::string second = pid_of();  // not a WorkerCrashedError: the dead child had no work
  EXPECT_NE(second, first);

  // What the dead child was sent is not assumed of its replacement once prepare() has run.
  rt.submit(on_process(), [](TaskContext& ctx) { channel_of(ctx).remember("function"); }).get();
  ::kill(std::stoi(second), SIGKILL);
  await_exit(std::stoi(second));
  auto after = rt.submit(on_process(), [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    channel.prepare();
    return Parts{channel.knows("function") ? "knows" : "new", channel.call(1, {"pid"}).parts.at(0)};
  });
  const Parts got = after.get();
  EXPECT_EQ(got[0], "new");
  EXPECT_NE(got[1], second);
}

TEST(Process, ChildrenStartWhateverDescriptorsTheHostHasOpen) {
  // The pipes land on every descriptor around 100 (where the child's ends once were fixed).
  for (int target = 94; target < 104; ++target) {
    std::vector<int> opened;
    while (opened.empty() || opened.back() < target - 1) opened.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    {
      Runtime rt(with_process_workers(2));
      for (int i = 0; i < 2; ++i) {
        auto echoed = rt.submit(TaskOptions{.where = Arch::process, .worker = 1 + i},
                                [](TaskContext& ctx) { return channel_of(ctx).call(1, {"ok"}).parts.at(0); });
        EXPECT_EQ(echoed.get(), "ok") << "descriptors open up to " << target;
      }
    }
    for (int fd : opened) ::close(fd);
  }
}

// What a /proc file holds: empty, or cut short, when its process ends meanwhile (a read then
// fails with ESRCH, which a std::ifstream read through istreambuf_iterator throws).
std::string read_proc_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string text;
  char buffer[512];
  for (ssize_t got = 0; (got = ::read(fd, buffer, sizeof buffer)) > 0;)
    text.append(buffer, static_cast<std::size_t>(got));
  ::close(fd);
  return text;
}

// This process's children that have not exited (from /proc/<pid>/stat: state, then parent).
std::vector<pid_t> live_children() {
  std::vector<pid_t> found;
  std::error_code skipped;  // a process ending as the listing goes
  for (const auto& entry : std::filesystem::directory_iterator("/proc", skipped)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string text = read_proc_file(entry.path() / "stat");
    const auto closing = text.rfind(')');
    if (closing == std::string::npos) continue;  // it ended meanwhile
    std::istringstream fields(text.substr(closing + 1));
    std::string state;
    pid_t parent = 0;
    if (fields >> state >> parent && parent == ::getpid() && state != "Z") found.push_back(std::stoi(name));
  }
  return found;
}

Config with_lazy_process_workers(unsigned count, std::vector<std::string> command = {kChild},
                                 std::vector<std::string> environment = {}) {
  return Config{.ncpus = 1,
                .drivers = {hetflow::make_process_driver({.command = std::move(command),
                                                          .environment = std::move(environment),
                                                          .count = count,
                                                          .shutdown_kind = 2,
                                                          .lazy_start = true})}};
}

TEST(Process, LazyStartStartsEachChildWhenItsWorkerFirstNeedsIt) {
  ASSERT_TRUE(live_children().empty());
  Runtime rt(with_lazy_process_workers(2, {kChild}, {"HETFLOW_TEST_GREETING=hello"}));
  ASSERT_EQ(rt.worker_count(), 3u);  // counted, though not started
  EXPECT_EQ(rt.submit(TaskOptions{.where = Arch::cpu}, [] { return 1; }).get(), 1);
  std::this_thread::sleep_for(200ms);  // a child started with the runtime would show by now
  EXPECT_TRUE(live_children().empty());

  // The first task on worker 1 (process worker 0) starts its child: pid() is -1 until then.
  auto first = rt.submit(TaskOptions{.where = Arch::process, .worker = 1}, [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    const pid_t before = channel.pid();
    return Parts{std::to_string(before), channel.call(1, {"pid"}).parts.at(0),
                 channel.call(1, {"env", "HETFLOW_WORKER_ID"}).parts.at(0),
                 channel.call(1, {"env", "HETFLOW_TEST_GREETING"}).parts.at(0)};
  });
  const Parts got = first.get();
  EXPECT_EQ(got[0], "-1");
  EXPECT_EQ(got[2], "0");
  EXPECT_EQ(got[3], "hello");
  EXPECT_EQ(live_children(), std::vector<pid_t>{std::stoi(got[1])});  // the other worker's is not started

  // prepare() alone starts one too (as before building a message that depends on `knows`).
  auto second = rt.submit(TaskOptions{.where = Arch::process, .worker = 2}, [](TaskContext& ctx) {
    ProcessChannel& channel = channel_of(ctx);
    channel.prepare();
    return channel.pid();
  });
  EXPECT_GT(second.get(), 0);
  EXPECT_EQ(live_children().size(), 2u);
}

TEST(Process, LazyStartOfABadCommandFailsTheTaskThatNeededIt) {
  const std::string missing = "/nonexistent/hetflow-test-child";
  const auto started = std::chrono::steady_clock::now();
  {
    Runtime rt(with_lazy_process_workers(2, {missing}));
    EXPECT_EQ(rt.submit(TaskOptions{.where = Arch::cpu}, [] { return 3; }).get(), 3);
    for (int i = 0; i < 2; ++i) {  // every task says why, and the runtime carries on
      expect_process_task_fails(rt, {"cannot start process worker", missing});
    }
    EXPECT_EQ(rt.submit(TaskOptions{.where = Arch::cpu}, [] { return 4; }).get(), 4);
  }
  {
    // Starts, but exits before saying it is ready.
    Runtime rt(with_lazy_process_workers(1, {kChild, "--exit-before-ready"}));
    expect_process_task_fails(rt, {"did not start", "exited with status 7"});
  }
  {
    // Never needed: stopping has nothing to wait for.
    Runtime rt(with_lazy_process_workers(4));
    EXPECT_EQ(rt.submit(TaskOptions{.where = Arch::cpu}, [] { return 5; }).get(), 5);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, 30s);
  EXPECT_TRUE(live_children().empty());
}

// Children get the host's environment as the driver was made, whenever they start: one started
// late (lazily, or replacing a dead one) does not read `environ` while the host may change it.
TEST(Process, ChildrenGetTheEnvironmentTheDriverWasMadeWith) {
  ::setenv("HETFLOW_TEST_SNAPSHOT", "before", 1);
  Config config = with_lazy_process_workers(1);
  ::setenv("HETFLOW_TEST_SNAPSHOT", "after", 1);
  Runtime rt(std::move(config));
  auto seen = rt.submit(on_process(), [](TaskContext& ctx) {
    return channel_of(ctx).call(1, {"env", "HETFLOW_TEST_SNAPSHOT"}).parts.at(0);
  });
  EXPECT_EQ(seen.get(), "before");
  ::unsetenv("HETFLOW_TEST_SNAPSHOT");
}

}  // namespace
