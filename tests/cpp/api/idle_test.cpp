// Idle workers sleep: a runtime with nothing to do uses close to no CPU time. A behaviour check
// (workers must not spin while idle), with a generous bound.
#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// CPU time the process uses over about one second of wall time, as a fraction of one core.
double cpu_share_over_one_second() {
  const auto wall0 = std::chrono::steady_clock::now();
  const double cpu0 = process_cpu_seconds();
  std::this_thread::sleep_for(1s);
  const double cpu1 = process_cpu_seconds();
  const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - wall0;
  return (cpu1 - cpu0) / wall.count();
}

unsigned worker_count() { return std::max(4u, std::thread::hardware_concurrency()); }

TEST(Idle, IdleWorkersUseNoCpu) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = worker_count()});
  // Warm up: every worker has run tasks and gone through its search loop.
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 2000; ++i) (void)rt.submit([] {});
    rt.wait_all();
  }
  std::this_thread::sleep_for(100ms);
  const double share = cpu_share_over_one_second();
  EXPECT_LT(share, 0.05) << rt.worker_count() << " idle workers used " << share * 100 << "% of a core";
}

TEST(Idle, BlockedTaskAndWaitingApplicationUseNoCpu) {
  hetflow::Runtime rt(hetflow::Config{.ncpus = worker_count()});
  hetflow::test::Gate gate;
  hetflow::test::Signal started;
  auto blocked = rt.submit([&] {
    started.raise();
    gate.wait();
  });
  auto dependent = rt.submit(hetflow::TaskOptions{.after = {blocked}}, [] { return 1; });
  started.wait();
  std::this_thread::sleep_for(100ms);
  // The application waits on a future meanwhile, from another thread.
  std::thread waiter([&] { EXPECT_EQ(dependent.get(), 1); });
  const double share = cpu_share_over_one_second();
  gate.open();
  waiter.join();
  EXPECT_LT(share, 0.05) << "a runtime waiting on a blocked task used " << share * 100 << "% of a core";
}

// Tasks submitted together, as many as there are workers, all start at once: a worker woken for
// one of them wakes another while tasks are left. (A woken worker took its task without passing
// the wake-up on: 2 to 5 of 6 such tasks started, the others waiting for one to end.)
TEST(Idle, AsManyTasksAsWorkersAllStartAtOnce) {
  constexpr unsigned kWorkers = 6;
  hetflow::Runtime rt(hetflow::Config{.ncpus = kWorkers});
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(round);
    std::atomic<unsigned> started{0};
    std::vector<hetflow::Future<unsigned>> tasks;
    for (unsigned i = 0; i < kWorkers; ++i) {
      tasks.push_back(rt.submit([&started] {
        started.fetch_add(1);
        const auto patience = std::chrono::steady_clock::now() + 5s;
        while (started.load() < kWorkers && std::chrono::steady_clock::now() < patience) {
          std::this_thread::sleep_for(100us);
        }
        return started.load();
      }));
    }
    for (auto& task : tasks) EXPECT_EQ(task.get(), kWorkers);
    std::this_thread::sleep_for(20ms);  // the workers go back to sleep
  }
}

}  // namespace
