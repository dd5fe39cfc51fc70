// overhead: what hetflow costs per task when the tasks do nothing, on the workloads StarPU and
// TBB are measured on beside this file (starpu.c, tbb.cpp; compare.sh runs all three):
//
//   independent  N empty codelet tasks, no data, submitted from the main thread, then wait_all
//   chain        N tasks each RW on one registered variable: a serial dependency chain
//   fanout       N tasks each RW on its own variable (registered before the timer starts)
//   nested_wait  N/5 tasks submitted from the main thread, each submitting 4 children and waiting
//                for them one by one inside its body (the time is per task, children included)
//   pending      resident bytes per task held pending behind a task that blocks
//
// The default scheduler is used (HETFLOW_SCHED and the other HETFLOW_* variables still apply).
// Timings are the median of --repeat runs, each in ns per task from submitting the first task
// to wait_all returning.
#include "hetflow/hetflow.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench.hpp"

namespace hetflow::bench {
namespace {

using Clock = std::chrono::steady_clock;

const Codelet& noop() {
  static const Codelet codelet{.name = "noop", .cpu = [](TaskContext&) {}};
  return codelet;
}

double ns_per_task(Clock::time_point start, Clock::time_point end, std::size_t tasks) {
  return std::chrono::duration<double, std::nano>(end - start).count() / static_cast<double>(tasks);
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

/// The process's resident set, from /proc/self/statm (its second field, in pages).
long resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size_pages = 0;
  long resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) throw std::runtime_error("cannot read /proc/self/statm");
  return resident_pages * sysconf(_SC_PAGESIZE);
}

double independent(Runtime& runtime, std::size_t tasks) {
  const Codelet& codelet = noop();
  const auto start = Clock::now();
  for (std::size_t i = 0; i < tasks; ++i) runtime.insert(codelet);
  runtime.wait_all();
  return ns_per_task(start, Clock::now(), tasks);
}

double chain(Runtime& runtime, std::size_t tasks) {
  const Codelet& codelet = noop();
  int value = 0;
  const DataHandle handle = runtime.register_variable(value, "chain");
  const auto start = Clock::now();
  for (std::size_t i = 0; i < tasks; ++i) runtime.insert(codelet, {.data = {RW(handle)}});
  runtime.wait_all();
  const auto end = Clock::now();
  runtime.unregister(handle);
  return ns_per_task(start, end, tasks);
}

double fanout(Runtime& runtime, std::size_t tasks) {
  const Codelet& codelet = noop();
  std::vector<int> values(tasks);
  std::vector<DataHandle> handles;
  handles.reserve(tasks);
  for (int& value : values) handles.push_back(runtime.register_variable(value));
  const auto start = Clock::now();
  for (const DataHandle& handle : handles) runtime.insert(codelet, {.data = {RW(handle)}});
  runtime.wait_all();
  const auto end = Clock::now();
  for (const DataHandle& handle : handles) runtime.unregister(handle);
  return ns_per_task(start, end, tasks);
}

double nested_wait(Runtime& runtime, std::size_t tasks) {
  constexpr std::size_t kChildren = 4;
  const std::size_t parents = std::max<std::size_t>(1, tasks / (kChildren + 1));
  const auto start = Clock::now();
  for (std::size_t i = 0; i < parents; ++i) {
    static_cast<void>(runtime.submit([&runtime] {
      std::array<Future<int>, kChildren> children;
      for (std::size_t c = 0; c < kChildren; ++c) children[c] = runtime.submit([c] { return static_cast<int>(c); });
      int sum = 0;
      for (auto& child : children) sum += child.get();
      return sum;
    }));
  }
  runtime.wait_all();
  return ns_per_task(start, Clock::now(), parents * (kChildren + 1));
}

/// Submits a task that blocks until released, then `tasks` tasks that depend on it (each RW on
/// its variable, so they form a chain behind it), and returns the growth of the resident set
/// over those submissions per task. Run it before anything else: task records are pooled and
/// reused, so records left over from earlier workloads would hide part of the cost.
double pending_bytes_per_task(Runtime& runtime, std::size_t tasks) {
  const Codelet& codelet = noop();
  int value = 0;
  const DataHandle handle = runtime.register_variable(value, "pending");
  std::atomic<bool> released{false};
  const Future<void> blocker = runtime.submit(TaskOptions{.data = {RW(handle)}, .name = "blocker"},
                                              [&released] { released.wait(false, std::memory_order_acquire); });
  // Released however this ends (a submission that runs out of memory throws): the blocker must
  // not outlive `released`, nor leave the runtime's destructor waiting for it.
  struct Release {
    Runtime& runtime;
    std::atomic<bool>& released;
    ~Release() {
      released.store(true, std::memory_order_release);
      released.notify_all();
      try {
        runtime.wait_all();
      } catch (...) {  // out of memory still: the runtime's destructor waits for the rest
      }
    }
  };

  long before = 0;
  long after = 0;
  {
    const Release release{runtime, released};
    before = resident_bytes();
    for (std::size_t i = 0; i < tasks; ++i) runtime.insert(codelet, {.data = {RW(handle)}});
    after = resident_bytes();
    if (blocker.ready()) throw std::logic_error("the blocking task finished before it was released");
  }
  runtime.unregister(handle);
  return static_cast<double>(after - before) / static_cast<double>(tasks);
}

void print(const char* metric, double value) {
  std::printf("hetflow %s %.0f\n", metric, value);
  std::fflush(stdout);
}

}  // namespace

int run_overhead(const OverheadOptions& options) {
  // A simulation runs no task bodies and takes no real time per task: the figures would be the
  // simulator's, printed as the runtime's.
  if (const char* simulate = std::getenv("HETFLOW_SIMULATE"); simulate != nullptr && *simulate != '\0') {
    throw InvalidArgument("HETFLOW_SIMULATE='" + std::string(simulate) +
                          "': overhead measures the real runtime's cost per task, which a simulation does not "
                          "have (it runs no task bodies); unset HETFLOW_SIMULATE");
  }
  Runtime runtime;
  std::fprintf(stderr,
               "# hetflow %s: scheduler %s, %u workers, spin %u us, %u spare threads; %zu tasks, median of %zu runs\n",
               HETFLOW_VERSION_STRING, runtime.scheduler_name().c_str(), runtime.worker_count(),
               *runtime.config().spin_us, *runtime.config().spare_threads, options.tasks, options.repeat);

  const double pending = pending_bytes_per_task(runtime, options.pending);

  struct Workload {
    const char* metric;
    double (*run)(Runtime&, std::size_t);
  };
  for (const Workload& workload :
       {Workload{"independent_ns_per_task", &independent}, Workload{"chain_ns_per_task", &chain},
        Workload{"fanout_ns_per_task", &fanout}, Workload{"nested_wait_ns_per_task", &nested_wait}}) {
    std::vector<double> runs;
    std::string shown;
    for (std::size_t r = 0; r < options.repeat; ++r) {
      runs.push_back(workload.run(runtime, options.tasks));
      shown += ' ';
      shown += std::to_string(static_cast<long>(runs.back() + 0.5));
    }
    std::fprintf(stderr, "# %s runs:%s\n", workload.metric, shown.c_str());
    print(workload.metric, median(runs));
  }
  std::fprintf(stderr, "# pending_bytes_per_task over %zu pending tasks\n", options.pending);
  print("pending_bytes_per_task", pending);
  return 0;
}

}  // namespace hetflow::bench
