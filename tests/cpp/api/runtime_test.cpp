// Runtime lifecycle and configuration: environment variables, code over environment, bad
// values, shutdown, and the destructor waiting for submitted work.
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/ext/driver.hpp"
#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using hetflow::Config;
using hetflow::InvalidArgument;
using hetflow::Runtime;
using hetflow::test::expect_invalid_argument;
using hetflow::test::ScopedEnv;

TEST(Config, NcpusFromEnvironment) {
  ScopedEnv ncpus("HETFLOW_NCPUS", "3");
  Runtime rt;
  EXPECT_EQ(rt.worker_count(), 3u);
  EXPECT_EQ(rt.workers().size(), 3u);
  ASSERT_TRUE(rt.config().ncpus.has_value());
  EXPECT_EQ(*rt.config().ncpus, 3u);
  for (unsigned i = 0; i < rt.worker_count(); ++i) {
    EXPECT_EQ(rt.workers()[i].id, i);
    EXPECT_EQ(rt.workers()[i].arch, hetflow::Arch::cpu);
  }
}

TEST(Config, SchedulerFromEnvironment) {
  for (const char* name : {"eager", "prio", "ws", "random"}) {
    ScopedEnv sched("HETFLOW_SCHED", name);
    Runtime rt(Config{.ncpus = 1});
    EXPECT_EQ(rt.scheduler_name(), name);
    EXPECT_EQ(rt.submit([] { return 5; }).get(), 5);
  }
}

TEST(Config, DefaultsWithoutEnvironment) {
  ScopedEnv sched("HETFLOW_SCHED", std::nullopt);
  ScopedEnv ncpus("HETFLOW_NCPUS", std::nullopt);
  ScopedEnv pin("HETFLOW_PIN", std::nullopt);
  ScopedEnv spin("HETFLOW_SPIN_US", std::nullopt);
  Config resolved = Config{}.resolved();
  EXPECT_EQ(resolved.scheduler, "ws");
  ASSERT_TRUE(resolved.ncpus.has_value());
  EXPECT_GE(*resolved.ncpus, 1u);
  EXPECT_EQ(resolved.pin_workers, false);
  EXPECT_EQ(resolved.spin_us, 50u);
  Runtime rt;
  EXPECT_EQ(rt.scheduler_name(), "ws");
  EXPECT_EQ(rt.worker_count(), *resolved.ncpus);
}

// A driver of device workers with no device behind them: only its architecture counts here.
class DeviceArchDriver final : public hetflow::ext::Driver {
 public:
  DeviceArchDriver(hetflow::Arch arch, unsigned workers) : arch_(arch), workers_(workers) {}
  [[nodiscard]] std::string_view name() const override { return "device-arch"; }
  [[nodiscard]] hetflow::Arch arch() const override { return arch_; }
  [[nodiscard]] unsigned worker_count() const override { return workers_; }

 private:
  hetflow::Arch arch_;
  unsigned workers_;
};

TEST(Config, DefaultSchedulerIsModelDrivenWithDevices) {
  ScopedEnv sched("HETFLOW_SCHED", std::nullopt);
  ScopedEnv simulate("HETFLOW_SIMULATE", std::nullopt);
  using hetflow::Arch;
  auto with = [](Arch arch, unsigned workers) {
    return Config{.drivers = {std::make_shared<DeviceArchDriver>(arch, workers)}}.resolved().scheduler;
  };
  EXPECT_EQ(with(Arch::cuda, 1), "dmdas");
  EXPECT_EQ(with(Arch::opencl, 2), "dmdas");
  EXPECT_EQ(with(Arch::opencl, 0), "ws") << "a driver that found no device adds no device worker";
  EXPECT_EQ(with(Arch::process, 2), "ws") << "process workers are host threads";
  EXPECT_EQ(Config{.simulate = "machine.json"}.resolved().scheduler, "dmdas");
  // Chosen in code or in the environment, the scheduler stays.
  EXPECT_EQ((Config{.scheduler = "eager", .drivers = {std::make_shared<DeviceArchDriver>(Arch::cuda, 1)}}
                 .resolved()
                 .scheduler),
            "eager");
  ScopedEnv chosen("HETFLOW_SCHED", "prio");
  EXPECT_EQ(with(Arch::cuda, 1), "prio");
}

TEST(Config, CodeWinsOverEnvironment) {
  ScopedEnv ncpus("HETFLOW_NCPUS", "3");
  ScopedEnv sched("HETFLOW_SCHED", "prio");
  ScopedEnv pin("HETFLOW_PIN", "1");
  ScopedEnv spin("HETFLOW_SPIN_US", "7");
  Runtime rt(Config{.ncpus = 2, .scheduler = "eager", .pin_workers = false, .spin_us = 0});
  EXPECT_EQ(rt.worker_count(), 2u);
  EXPECT_EQ(rt.scheduler_name(), "eager");
  EXPECT_EQ(rt.config().pin_workers, false);
  EXPECT_EQ(rt.config().spin_us, 0u);
  EXPECT_EQ(rt.submit([] { return 1; }).get(), 1);

  // Fields left empty still come from the environment.
  Config partly = Config{.ncpus = 1}.resolved();
  EXPECT_EQ(partly.ncpus, 1u);
  EXPECT_EQ(partly.scheduler, "prio");
  EXPECT_EQ(partly.pin_workers, true);
  EXPECT_EQ(partly.spin_us, 7u);
}

TEST(Config, PinnedWorkersRunTasks) {
  Runtime rt(Config{.ncpus = 2, .pin_workers = true});
  EXPECT_EQ(rt.submit([] { return 3; }).get(), 3);
}

TEST(Config, BadNcpusInEnvironmentThrows) {
  for (const char* bad : {"abc", "-1", "3x", "", "99999999999", "5000"}) {
    ScopedEnv ncpus("HETFLOW_NCPUS", bad);
    if (*bad == '\0') {
      // An empty variable counts as unset.
      EXPECT_NO_THROW((void)Config{}.resolved());
      continue;
    }
    SCOPED_TRACE(bad);
    expect_invalid_argument([] { (void)Config{}.resolved(); }, {"HETFLOW_NCPUS", bad});
    expect_invalid_argument([] { Runtime rt; }, {"HETFLOW_NCPUS", bad});
  }
}

TEST(Config, BadBooleanAndSpinInEnvironmentThrow) {
  {
    ScopedEnv pin("HETFLOW_PIN", "maybe");
    expect_invalid_argument([] { Runtime rt; }, {"HETFLOW_PIN", "maybe"});
  }
  {
    ScopedEnv spin("HETFLOW_SPIN_US", "fast");
    expect_invalid_argument([] { Runtime rt; }, {"HETFLOW_SPIN_US", "fast"});
  }
  {
    // The documented range, as Config::spin_us and the Python init take it: up to 10 s.
    ScopedEnv spin("HETFLOW_SPIN_US", "10000000");
    EXPECT_EQ(Config{}.resolved().spin_us, 10'000'000u);
  }
  {
    ScopedEnv spin("HETFLOW_SPIN_US", "10000001");
    expect_invalid_argument([] { Runtime rt; }, {"HETFLOW_SPIN_US", "10000001"});
  }
  expect_invalid_argument([] { Runtime rt(Config{.spin_us = 10'000'001}); }, {"Config::spin_us=10000001"});
}

// Workers polling for work (a long spin_us) leave at once when the runtime stops: destroying
// an idle runtime took the whole spin time.
TEST(Config, ALongSpinDoesNotDelayTheShutdown) {
  const auto start = std::chrono::steady_clock::now();
  {
    Runtime rt(Config{.ncpus = 2, .spin_us = 10'000'000});
    EXPECT_EQ(rt.submit([] { return 1; }).get(), 1);
  }
  // Not a speed check: a worker that went on polling would hold the destructor for the 10 s.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));
}

TEST(Config, UnknownSchedulerThrows) {
  {
    ScopedEnv sched("HETFLOW_SCHED", "no_such_sched");
    expect_invalid_argument([] { Runtime rt; }, {"no_such_sched", "ws"});
  }
  expect_invalid_argument([] { Runtime rt(Config{.scheduler = "bogus-name"}); }, {"bogus-name"});
}

TEST(Config, ZeroOrTooManyWorkersThrow) {
  expect_invalid_argument([] { Runtime rt(Config{.ncpus = 0}); }, {"no workers"});
  expect_invalid_argument([] { Runtime rt(Config{.ncpus = 100000}); }, {"100000"});
  // In the environment, 0 is a mistake, not a request for no CPU workers.
  ScopedEnv ncpus("HETFLOW_NCPUS", "0");
  expect_invalid_argument([] { (void)Config{}.resolved(); },
                          {"HETFLOW_NCPUS must be a positive whole number, not '0'"});
  expect_invalid_argument([] { Runtime rt; }, {"HETFLOW_NCPUS must be a positive whole number, not '0'"});
}

TEST(Runtime, SubmitReturnsResults) {
  Runtime rt(Config{.ncpus = 2});
  auto sum = rt.submit([](int a, int b) { return a + b; }, 40, 2);
  auto text = rt.submit([](const std::string& s) { return s + "!"; }, std::string("hello"));
  EXPECT_EQ(sum.get(), 42);
  EXPECT_EQ(text.get(), "hello!");
}

TEST(Runtime, SubmitAfterShutdownThrows) {
  Runtime rt(Config{.ncpus = 2});
  EXPECT_FALSE(rt.is_shut_down());
  EXPECT_EQ(rt.submit([] { return 1; }).get(), 1);
  rt.shutdown();
  EXPECT_TRUE(rt.is_shut_down());
  rt.shutdown();  // idempotent
  try {
    (void)rt.submit(hetflow::TaskOptions{.name = "late task"}, [] {});
    ADD_FAILURE() << "expected ShutdownError";
  } catch (const hetflow::ShutdownError& e) {
    EXPECT_NE(std::string(e.what()).find("late task"), std::string::npos) << e.what();
  }
  hetflow::Codelet codelet{.name = "late codelet", .cpu = [](hetflow::TaskContext&) {}};
  EXPECT_THROW((void)rt.insert(codelet), hetflow::ShutdownError);
  int x = 0;
  EXPECT_THROW((void)rt.register_variable(x), hetflow::ShutdownError);
}

TEST(Runtime, ShutdownWaitsForSubmittedWork) {
  Runtime rt(Config{.ncpus = 2});
  std::atomic<int> done{0};
  for (int i = 0; i < 50; ++i) {
    (void)rt.submit([&done] {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      done.fetch_add(1);
    });
  }
  rt.shutdown();
  EXPECT_EQ(done.load(), 50);
}

TEST(Runtime, DestructorWaitsForSubmittedWork) {
  std::atomic<int> done{0};
  std::atomic<int> nested{0};
  {
    Runtime rt(Config{.ncpus = 2});
    for (int i = 0; i < 20; ++i) {
      (void)rt.submit([&done, &nested, &rt] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        // Work submitted by tasks while the runtime drains is waited for too.
        (void)rt.submit([&nested] {
          std::this_thread::sleep_for(std::chrono::microseconds(500));
          nested.fetch_add(1);
        });
        done.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(done.load(), 20);
  EXPECT_EQ(nested.load(), 20);
}

// Threads submitting while the runtime shuts down: a submission either throws ShutdownError or
// gives a task that runs (one accepted just as the shutdown began was left queued for ever).
TEST(Runtime, SubmissionsRacingShutdownRunOrAreRefused) {
  for (int round = 0; round < 30; ++round) {
    std::atomic<long> accepted{0};
    std::atomic<long> ran{0};
    std::vector<std::vector<hetflow::Future<void>>> futures(3);
    {
      Runtime rt(Config{.ncpus = 2});
      std::atomic<bool> stop{false};
      std::vector<std::thread> submitters;
      for (auto& mine : futures) {
        submitters.emplace_back([&] {
          while (!stop) {
            try {
              mine.push_back(rt.submit([&ran] { ++ran; }));
              ++accepted;
            } catch (const hetflow::ShutdownError&) {
              std::this_thread::yield();
            }
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      rt.shutdown();
      stop = true;
      for (auto& submitter : submitters) submitter.join();
      for (const auto& mine : futures) {
        for (const auto& future : mine) ASSERT_TRUE(future.ready()) << "round " << round;
      }
    }
    EXPECT_EQ(ran.load(), accepted.load()) << "round " << round;
  }
}

// Acquisitions racing a shutdown either hold the data or are refused with ShutdownError (they
// said the handle had been unregistered, as shutdown unregisters every handle).
TEST(Runtime, AcquisitionsRacingShutdownAreRefusedAsSuch) {
  for (int round = 0; round < 10; ++round) {
    std::atomic<long> misnamed{0};
    Runtime rt(Config{.ncpus = 2});
    std::vector<int> values(4, 0);
    std::vector<hetflow::DataHandle> handles;
    for (int& value : values) handles.push_back(rt.register_variable(value));
    std::atomic<bool> stop{false};
    std::vector<std::thread> acquirers;
    for (std::size_t t = 0; t < 3; ++t) {
      acquirers.emplace_back([&, t] {
        while (!stop) {
          try {
            static_cast<void>(rt.acquire(handles[t], hetflow::AccessMode::R));
          } catch (const hetflow::ShutdownError&) {
            std::this_thread::yield();
          } catch (const hetflow::InvalidArgument&) {
            ++misnamed;
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    rt.shutdown();
    stop = true;
    for (auto& acquirer : acquirers) acquirer.join();
    EXPECT_EQ(misnamed.load(), 0) << "round " << round;
  }
}

TEST(Runtime, WaitAllWaitsForEverything) {
  Runtime rt(Config{.ncpus = 2});
  std::atomic<int> done{0};
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 100; ++i) (void)rt.submit([&done] { done.fetch_add(1); });
    rt.wait_all();
    EXPECT_EQ(done.load(), 100 * (round + 1));
  }
  rt.wait_all();  // nothing outstanding: returns at once
}

TEST(Runtime, WaitAllUntilADeadline) {
  Runtime rt(Config{.ncpus = 2});
  hetflow::test::Gate gate;
  auto blocked = rt.submit([&gate] { gate.wait(); });
  EXPECT_FALSE(rt.wait_all_until(std::chrono::steady_clock::now() + std::chrono::milliseconds(20)));
  EXPECT_FALSE(blocked.ready());
  gate.open();
  EXPECT_TRUE(rt.wait_all_until(std::chrono::steady_clock::now() + std::chrono::seconds(60)));
  EXPECT_TRUE(blocked.ready());
  EXPECT_TRUE(rt.wait_all_until(std::chrono::steady_clock::now()));  // nothing left: true at once
}

TEST(Runtime, WaitAllOrShutdownInsideATaskFails) {
  Runtime rt(Config{.ncpus = 2});
  auto waits = rt.submit([&rt] { rt.wait_all(); });
  EXPECT_THROW(waits.get(), hetflow::Error);
  auto stops = rt.submit([&rt] { rt.shutdown(); });
  EXPECT_THROW(stops.get(), hetflow::Error);
  EXPECT_FALSE(rt.is_shut_down());
  EXPECT_EQ(rt.submit([] { return 9; }).get(), 9);
}

TEST(Runtime, TasksRunOnWorkerThreads) {
  Runtime rt(Config{.ncpus = 2});
  const auto main_id = std::this_thread::get_id();
  std::vector<hetflow::Future<bool>> futures;
  for (int i = 0; i < 100; ++i)
    futures.push_back(rt.submit([main_id] { return std::this_thread::get_id() != main_id; }));
  for (auto& f : futures) EXPECT_TRUE(f.get());
}

TEST(Runtime, SeveralRuntimesSideBySide) {
  Runtime a(Config{.ncpus = 1});
  Runtime b(Config{.ncpus = 2, .scheduler = "eager"});
  std::vector<hetflow::Future<int>> fa, fb;
  for (int i = 0; i < 200; ++i) {
    fa.push_back(a.submit([i] { return i; }));
    fb.push_back(b.submit([i] { return 2 * i; }));
  }
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(fa[i].get(), i);
    EXPECT_EQ(fb[i].get(), 2 * i);
  }
  // A future of one runtime cannot order a task of another.
  EXPECT_THROW((void)b.submit(hetflow::TaskOptions{.after = {fa[0]}}, [] {}), InvalidArgument);
}

TEST(Runtime, ManyRuntimesCreatedAndDestroyed) {
  for (int i = 0; i < 20; ++i) {
    Runtime rt(Config{.ncpus = 2});
    EXPECT_EQ(rt.submit([i] { return i * i; }).get(), i * i);
  }
}

}  // namespace

// The threads that run tasks get the stack asked for (deep recursion in a task overflowed the
// system's default); a size outside the range is refused, naming it.
TEST(Config, WorkerThreadsGetTheStackSizeAskedFor) {
  ScopedEnv stack("HETFLOW_WORKER_STACK", std::nullopt);
  const auto stack_of_a_task = [](Runtime& rt) {
    return rt
        .submit([] {
          pthread_attr_t attributes;
          std::size_t bytes = 0;
          if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
            pthread_attr_getstacksize(&attributes, &bytes);
            pthread_attr_destroy(&attributes);
          }
          return bytes;
        })
        .get();
  };
  constexpr std::size_t kAsked = std::size_t{96} << 20;
  {
    Runtime rt(Config{.ncpus = 1, .worker_stack_bytes = kAsked});
    EXPECT_GE(stack_of_a_task(rt), kAsked);
  }
  {
    ScopedEnv from_environment("HETFLOW_WORKER_STACK", "80M");
    EXPECT_EQ(Config{}.resolved().worker_stack_bytes, std::size_t{80} << 20);
    Runtime rt(Config{.ncpus = 1});
    EXPECT_GE(stack_of_a_task(rt), std::size_t{80} << 20);
  }
  expect_invalid_argument([] { (void)Config{.worker_stack_bytes = 1000}.resolved(); }, {"worker_stack_bytes=1000"});
  ScopedEnv bad("HETFLOW_WORKER_STACK", "lots");
  expect_invalid_argument([] { (void)Config{}.resolved(); }, {"HETFLOW_WORKER_STACK", "lots"});
}
