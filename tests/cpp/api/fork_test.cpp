// A Runtime in a forked child: its worker threads exist only in the parent, so the child's copy
// refuses work with a clear error instead of accepting tasks that never run, and destroying it
// does not hang. A new Runtime in the child works.
#include <gtest/gtest.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hetflow::Config;
using hetflow::Runtime;
using hetflow::TaskOptions;
using hetflow::test::Gate;

// Runs `child` in a forked child and returns its exit status (-1 if it had to be killed: hung).
template <class Child>
int run_in_child(Child child) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child());
  EXPECT_GT(pid, 0);
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (std::chrono::steady_clock::now() > give_up) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(1ms);
  }
}

// Whether `fn` throws hetflow::Error saying that a forked child cannot use the runtime, and
// naming the process that started it.
template <class Fn>
bool refuses_in_child(Fn fn, pid_t parent) {
  try {
    fn();
  } catch (const hetflow::Error& e) {
    const std::string text = e.what();
    const bool clear = text.find("started in process " + std::to_string(parent)) != std::string::npos &&
                       text.find("a forked child cannot use it") != std::string::npos &&
                       text.find("create a new Runtime") != std::string::npos;
    if (!clear) std::fprintf(stderr, "unclear message: %s\n", e.what());
    return clear;
  }
  return false;
}

TEST(Fork, ChildCannotUseTheParentsRuntime) {
  auto rt = std::make_unique<Runtime>(Config{.ncpus = 2});
  ASSERT_EQ(rt->submit([] { return 1; }).get(), 1);  // the workers are up
  int x = 0;
  auto h = rt->register_variable(x, "x");
  Gate gate;
  auto unfinished = rt->submit(TaskOptions{.data = {hetflow::RW(h)}}, [&gate] { gate.wait(); });
  const pid_t parent = ::getpid();

  const int status = run_in_child([&]() -> int {
    if (!refuses_in_child([&] { (void)rt->submit([] { return 2; }); }, parent)) return 10;
    static const hetflow::Codelet codelet{.name = "c", .cpu = [](hetflow::TaskContext&) {}};
    if (!refuses_in_child([&] { (void)rt->insert(codelet); }, parent)) {
      return 11;
    }
    if (!refuses_in_child([&] { unfinished.wait(); }, parent)) return 12;
    if (!refuses_in_child([&] { (void)unfinished.wait_for(1s); }, parent)) return 13;
    if (!refuses_in_child([&] { rt->wait_all(); }, parent)) return 14;
    if (!refuses_in_child([&] { (void)rt->acquire(h, hetflow::AccessMode::R); }, parent)) return 15;
    if (!refuses_in_child([&] { (void)rt->register_variable(x); }, parent)) return 16;
    if (!refuses_in_child([&] { (void)hetflow::when_any(std::vector<hetflow::FutureBase>{unfinished}); }, parent)) {
      return 17;
    }
    rt->shutdown();  // nothing to stop here: returns at once
    rt.reset();      // must not hang
    Runtime fresh(Config{.ncpus = 1});
    return fresh.submit([] { return 42; }).get() == 42 ? 0 : 20;
  });
  EXPECT_EQ(status, 0) << "10-17: a call did not refuse clearly, 20: a new runtime did not work, -1: hung";

  gate.open();
  unfinished.get();
  EXPECT_EQ(rt->submit([] { return 3; }).get(), 3);  // the parent's runtime is unaffected
}

TEST(Fork, ChildDestroysTheRuntimeWithoutHanging) {
  for (bool busy : {false, true}) {
    SCOPED_TRACE(busy);
    auto rt = std::make_unique<Runtime>(Config{.ncpus = 2});
    Gate gate;
    hetflow::Future<void> running;
    if (busy) running = rt->submit([&gate] { gate.wait(); });
    const int status = run_in_child([&]() -> int {
      rt.reset();
      return 0;
    });
    EXPECT_EQ(status, 0) << "-1: the child hung";
    gate.open();
    if (busy) running.get();
  }
}

}  // namespace
