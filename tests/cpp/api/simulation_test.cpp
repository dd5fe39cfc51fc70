// Simulation in virtual time (Config::simulate): virtual workers and memory nodes from a machine
// file, task costs from it, deterministic makespans, transfers on the links, and clear errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using hetflow::Arch;
using hetflow::Codelet;
using hetflow::Config;
using hetflow::DataHandle;
using hetflow::Runtime;
using hetflow::TaskContext;

class MachineFile {
 public:
  explicit MachineFile(const std::string& json)
      : path_(std::filesystem::temp_directory_path() /
              ("hetflow-sim-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++) + ".json")) {
    std::ofstream(path_) << json;
  }
  ~MachineFile() { std::filesystem::remove(path_); }
  [[nodiscard]] std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

const char* kTwoCpusOneGpu = R"({
  "cpus": 2, "gpus": 1,
  "link": {"bandwidth_gbs": 1.0, "latency_us": 0},
  "codelets": {"work": {"cpu": 0.010, "cuda": 0.001}, "host_only": {"cpu": 0.002}}
})";

Config simulated(const MachineFile& machine, const char* scheduler = nullptr) {
  Config config;
  config.simulate = machine.path();
  if (scheduler != nullptr) config.scheduler = scheduler;
  return config;
}

Codelet named(const char* name, std::atomic<int>* runs = nullptr) {
  Codelet codelet;
  codelet.name = name;
  codelet.cpu = [runs](TaskContext&) {
    if (runs != nullptr) runs->fetch_add(1);
  };
  codelet.cuda = codelet.cpu;
  return codelet;
}

TEST(Simulation, WorkersAndNodesComeFromTheMachine) {
  MachineFile machine(kTwoCpusOneGpu);
  Runtime rt(simulated(machine));
  ASSERT_EQ(rt.worker_count(), 3u);
  EXPECT_EQ(rt.workers()[0].arch, Arch::cpu);
  EXPECT_EQ(rt.workers()[2].arch, Arch::cuda);
  EXPECT_EQ(rt.workers()[2].memory_node, 1u);
  EXPECT_EQ(rt.memory_nodes(), (std::vector<std::string>{"host", "cuda0"}));
  EXPECT_EQ(rt.elapsed(), 0.0);
}

TEST(Simulation, BodiesDoNotRunAndTimeIsVirtual) {
  MachineFile machine(kTwoCpusOneGpu);
  std::atomic<int> runs{0};
  const Codelet host_only = named("host_only", &runs);
  Runtime rt(simulated(machine));
  // A chain of 100 tasks of 2 ms on the CPU: 0.2 virtual seconds, whatever the real time.
  std::vector<double> data(1);
  DataHandle x = rt.register_vector(data.data(), 1);
  for (int i = 0; i < 100; ++i) rt.insert(host_only, {.data = {RW(x)}, .where = Arch::cpu});
  rt.wait_all();
  EXPECT_EQ(runs.load(), 0);
  EXPECT_NEAR(rt.elapsed(), 0.200, 1e-9);
}

TEST(Simulation, IndependentTasksSpreadOverTheVirtualWorkers) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet host_only = named("host_only");
  Runtime rt(simulated(machine));
  for (int i = 0; i < 10; ++i) rt.insert(host_only);
  rt.wait_all();
  EXPECT_NEAR(rt.elapsed(), 0.010, 1e-9);  // five rounds of 2 ms on two CPUs
}

TEST(Simulation, TransfersTakeLinkTimeBeforeTheGpuTask) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet work = named("work");
  Runtime rt(simulated(machine));
  std::vector<double> data(125'000);  // 1 MB: 1 ms on a 1 GB/s link
  DataHandle x = rt.register_vector(data.data(), data.size());
  rt.insert(work, {.data = {R(x)}, .where = Arch::cuda});
  rt.wait_all();
  EXPECT_NEAR(rt.elapsed(), 0.002, 1e-9);  // 1 ms to move the data, 1 ms to compute
  rt.insert(work, {.data = {R(x)}, .where = Arch::cuda});
  rt.wait_all();
  EXPECT_NEAR(rt.elapsed(), 0.003, 1e-9);  // the copy is still valid on the GPU
}

// A GPU worker takes its next task while the current one runs and starts that one's copy: in
// virtual time as on a device, the second upload overlaps the first task.
TEST(Simulation, GpuWorkerLooksAheadInVirtualTime) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet work = named("work");
  Runtime rt(simulated(machine, "eager"));  // one that serves look-ahead (dmda, dmdas prefetch instead)
  std::vector<double> first(125'000);       // 1 MB each: 1 ms on the 1 GB/s link
  std::vector<double> second(125'000);
  rt.insert(work, {.data = {R(rt.register_vector(first.data(), first.size()))}, .where = Arch::cuda});
  rt.insert(work, {.data = {R(rt.register_vector(second.data(), second.size()))}, .where = Arch::cuda});
  rt.wait_all();
  EXPECT_NEAR(rt.elapsed(), 0.003, 1e-9);  // 1 ms upload, then 2 x 1 ms of work, not 4 ms
}

double cholesky_like_makespan(const MachineFile& machine, const char* scheduler) {
  const Codelet work = named("work");
  const Codelet host_only = named("host_only");
  Runtime rt(simulated(machine, scheduler));
  std::vector<std::vector<double>> data(6, std::vector<double>(1000));
  std::vector<DataHandle> handles;
  for (auto& vector : data) handles.push_back(rt.register_vector(vector.data(), vector.size()));
  for (int round = 0; round < 20; ++round) {
    for (std::size_t i = 0; i < handles.size(); ++i) {
      rt.insert(i % 2 == 0 ? work : host_only, {.data = {R(handles[(i + 1) % handles.size()]), RW(handles[i])}});
    }
  }
  rt.wait_all();
  return rt.elapsed();
}

TEST(Simulation, IsDeterministic) {
  MachineFile machine(kTwoCpusOneGpu);
  for (const char* scheduler : {"eager", "dmda", "dmdas"}) {
    const double first = cholesky_like_makespan(machine, scheduler);
    EXPECT_GT(first, 0.0);
    for (int run = 0; run < 3; ++run) EXPECT_EQ(cholesky_like_makespan(machine, scheduler), first) << scheduler;
  }
}

TEST(Simulation, FuturesAcquisitionsAndCallbacksWork) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet host_only = named("host_only");
  Runtime rt(simulated(machine));
  std::vector<double> data(4, 1.0);
  DataHandle x = rt.register_vector(data.data(), data.size());
  auto first = rt.insert(host_only, {.data = {RW(x)}});
  auto second = rt.insert(host_only, {.data = {RW(x)}});
  second.get();
  EXPECT_TRUE(first.ready());
  EXPECT_NEAR(rt.elapsed(), 0.004, 1e-9);
  {
    hetflow::Acquisition held = rt.acquire(x, hetflow::AccessMode::R);
    EXPECT_EQ(held.as<double>()[0], 1.0);  // bodies did not run
  }
  auto later = rt.insert(host_only, {.data = {RW(x)}});
  EXPECT_TRUE(later.wait_for(std::chrono::seconds(10)));
}

TEST(Simulation, TasksWithResultsFailClearly) {
  MachineFile machine(R"({"cpus": 1, "codelets": {"task": {"cpu": 0.001}}})");
  Runtime rt(simulated(machine));
  auto value = rt.submit([] { return 42; });
  EXPECT_THROW(
      {
        try {
          (void)value.get();
        } catch (const hetflow::Error& error) {
          EXPECT_NE(std::string(error.what()).find("no result"), std::string::npos) << error.what();
          throw;
        }
      },
      hetflow::Error);
}

TEST(Simulation, CodeletWithoutCostIsRefused) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet unknown = named("unknown");
  Runtime rt(simulated(machine));
  try {
    rt.insert(unknown);
    FAIL() << "expected InvalidArgument";
  } catch (const hetflow::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("'unknown'"), std::string::npos) << error.what();
  }
  // A codelet with a cost on the CPU only never goes to the GPU.
  const Codelet host_only = named("host_only");
  EXPECT_THROW(rt.insert(host_only, {.where = Arch::cuda}), hetflow::InvalidArgument);
}

TEST(Simulation, MissingOrBadMachineFilesAreReported) {
  Config config;
  config.simulate = "/nonexistent/machine.json";
  try {
    Runtime rt(config);
    FAIL() << "expected InvalidArgument";
  } catch (const hetflow::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent/machine.json"), std::string::npos) << error.what();
  }
  MachineFile bad(R"({"cpus": -1})");
  EXPECT_THROW(Runtime rt(simulated(bad)), hetflow::InvalidArgument);
}

TEST(Simulation, GpuMemoryLimitEvictsInVirtualTime) {
  MachineFile machine(R"({"cpus": 0, "gpus": 1, "gpu_memory": "3K",
                          "link": {"bandwidth_gbs": 1.0, "latency_us": 0},
                          "codelets": {"work": {"cuda": 0.001}}})");
  const Codelet work = named("work");
  Runtime rt(simulated(machine));
  std::vector<std::vector<double>> data(8, std::vector<double>(125));  // 1000 bytes each
  std::vector<DataHandle> handles;
  for (auto& vector : data) handles.push_back(rt.register_vector(vector.data(), vector.size()));
  std::vector<hetflow::Future<void>> tasks;
  for (int round = 0; round < 2; ++round) {
    for (auto& handle : handles) tasks.push_back(rt.insert(work, {.data = {RW(handle)}}));
  }
  rt.wait_all();
  for (auto& task : tasks) EXPECT_NO_THROW(task.get());  // evictions made room for every vector
  // 16 tasks of 1 ms, the first after its vector's upload (1 us); later uploads may overlap the
  // task before (the worker looks ahead, or the scheduler prefetches), and the write-backs of
  // evicted vectors go the other way on the full-duplex link (schedulers that prefetch may
  // evict a vector they bring back later: a few more copies).
  EXPECT_GE(rt.elapsed(), 0.016 + 1e-6 - 1e-12);
  EXPECT_LT(rt.elapsed(), 0.017);
}

TEST(Simulation, EnvironmentVariableSelectsIt) {
  MachineFile machine(kTwoCpusOneGpu);
  hetflow::test::ScopedEnv env("HETFLOW_SIMULATE", machine.path());
  Runtime rt;
  EXPECT_EQ(rt.worker_count(), 3u);
  EXPECT_EQ(rt.config().simulate, machine.path());
}

}  // namespace
