// Simulation in virtual time (Config::simulate): virtual workers and memory nodes from a machine
// file, task costs from it, deterministic makespans, transfers on the links, and clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
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

// A wait for a task behind an acquisition this thread holds is refused in a simulation as in a
// real run (the simulation looked for ever for a way on).
TEST(Simulation, WaitsBehindAnAcquisitionThisThreadHoldsAreRefused) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet host_only = named("host_only");
  Runtime rt(simulated(machine));
  std::vector<double> x_data(4, 1.0), y_data(4, 1.0);
  DataHandle x = rt.register_vector(x_data.data(), x_data.size());
  DataHandle y = rt.register_vector(y_data.data(), y_data.size());
  hetflow::Acquisition held = rt.acquire(x, hetflow::AccessMode::W);
  auto behind = rt.insert(host_only, {.data = {RW(x), RW(y)}});
  EXPECT_THROW(behind.get(), hetflow::Error);
  EXPECT_THROW(behind.then([] {}).get(), hetflow::Error);
  EXPECT_THROW(hetflow::when_all(behind).get(), hetflow::Error);
  EXPECT_THROW(static_cast<void>(rt.acquire(y, hetflow::AccessMode::R)), hetflow::InvalidArgument);
  EXPECT_THROW(rt.wait_all(), hetflow::Error);
  EXPECT_FALSE(behind.wait_for(std::chrono::milliseconds(50)));
  held.release();
  EXPECT_NO_THROW(behind.get());
}

// A void callable the machine gives no cost takes no time on a CPU worker: when_all and then
// work without cost entries of their own (they were refused as codelets without a cost).
TEST(Simulation, CallablesWithoutACostTakeNoTime) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet host_only = named("host_only");
  Runtime rt(simulated(machine));
  auto first = rt.insert(host_only);
  auto second = rt.insert(host_only);
  auto both = hetflow::when_all({first, second});
  auto after = both.then([] {});
  auto plain = rt.submit(hetflow::TaskOptions{.after = {after}, .name = "bookkeeping"}, [] {});
  plain.get();
  EXPECT_NEAR(rt.elapsed(), 0.002, 1e-9);  // the two codelets side by side, nothing after them
}

// On a machine without CPU workers they take no time on a device: when_all, then and plain
// callables were refused ("no worker can run task 'when_all': it runs on cpu").
TEST(Simulation, CallablesWithoutACostRunOnAMachineWithoutCpus) {
  for (const char* json : {R"({"cpus": 0, "gpus": 1, "codelets": {"work": {"cuda": 0.001}}})",
                           R"({"cpus": 0, "opencl": 1, "codelets": {"work": {"opencl": 0.001}}})"}) {
    MachineFile machine(json);
    Codelet work;
    work.name = "work";
    work.cuda = [](TaskContext&) {};
    work.opencl = work.cuda;
    Runtime rt(simulated(machine));
    auto first = rt.insert(work);
    auto second = rt.insert(work);
    auto after = hetflow::when_all({first, second}).then([] {});
    rt.submit(hetflow::TaskOptions{.after = {after}, .name = "bookkeeping"}, [] {}).get();
    EXPECT_NEAR(rt.elapsed(), 0.002, 1e-9) << json;  // the two codelets one after the other
  }
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

TEST(Simulation, TasksForWorkerProcessesAreRefusedSayingSo) {
  MachineFile machine(kTwoCpusOneGpu);
  Runtime rt(simulated(machine));
  try {
    rt.submit(hetflow::TaskOptions{.name = "in_a_process", .where = Arch::process}, [] {});
    FAIL() << "expected InvalidArgument";
  } catch (const hetflow::InvalidArgument& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("'in_a_process'"), std::string::npos) << what;
    EXPECT_NE(what.find("tasks for worker processes are not simulated"), std::string::npos) << what;
  }
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

// Config::check reads the machine description as a Runtime would, without starting one, and
// names where the file came from.
TEST(Simulation, ConfigCheckReadsTheMachineFile) {
  MachineFile good(kTwoCpusOneGpu);
  EXPECT_NO_THROW(simulated(good).check());
  MachineFile bad(R"({"cpus": -1})");
  try {
    simulated(bad).check();
    FAIL() << "expected InvalidArgument";
  } catch (const hetflow::InvalidArgument& error) {
    const std::string what = error.what();
    EXPECT_EQ(what.rfind("Config::simulate='" + bad.path() + "': ", 0), 0u) << what;
    EXPECT_NE(what.find("cpus"), std::string::npos) << what;
  }
  hetflow::test::ScopedEnv missing("HETFLOW_SIMULATE", "/nonexistent/machine.json");
  try {
    Config{}.check();
    FAIL() << "expected InvalidArgument";
  } catch (const hetflow::InvalidArgument& error) {
    EXPECT_EQ(std::string(error.what()).rfind("HETFLOW_SIMULATE='/nonexistent/machine.json': ", 0), 0u) << error.what();
  }
}

// As on a real device: a task whose data cannot all be on the device at once fails saying so
// (the simulation ran it).
TEST(Simulation, ATaskWhoseDataCannotFitOnTheDeviceFails) {
  MachineFile machine(R"({"cpus": 1, "gpus": 1, "gpu_memory": "4K", "codelets": {"work": {"cuda": 0.001}}})");
  Runtime rt(simulated(machine));
  std::vector<double> a(384), b(384);  // 3 KiB each: each fits, both do not
  DataHandle ha = rt.register_vector(a.data(), a.size());
  DataHandle hb = rt.register_vector(b.data(), b.size());
  const Codelet work = named("work");  // a codelet outlives its tasks
  try {
    rt.insert(work, {.data = {RW(ha), RW(hb)}}).get();
    ADD_FAILURE() << "the simulation ran a task whose data do not fit on the device";
  } catch (const hetflow::Error& error) {
    EXPECT_NE(std::string(error.what()).find("bytes of data at once"), std::string::npos) << error.what();
  }
}

// Costs of 1e308 s overflowed virtual time to inf, then NaN: they are refused, and a task whose
// cost for its size is beyond what a simulation counts in fails saying so.
TEST(Simulation, CostsTooLongToSimulateAreRefused) {
  for (const char* json : {R"({"cpus": 1, "codelets": {"work": {"cpu": 1e308}}})",
                           R"({"cpus": 1, "codelets": {"work": {"cpu": {"a": 1e300, "b": 300}}}})"}) {
    MachineFile machine(json);
    EXPECT_THROW(Runtime rt(simulated(machine)), hetflow::InvalidArgument) << json;
  }
  MachineFile steep(R"({"cpus": 2, "codelets": {"work": {"cpu": {"a": 1e9, "b": 4}}, "host_only": {"cpu": 1}}})");
  Runtime rt(simulated(steep));
  std::vector<double> data(1 << 16, 1.0);
  DataHandle x = rt.register_vector(data.data(), data.size());
  const Codelet work = named("work");  // a codelet outlives its tasks
  const Codelet host_only = named("host_only");
  try {
    rt.insert(work, {.data = {RW(x)}}).get();
    ADD_FAILURE() << "a task of 1e28 s was simulated";
  } catch (const hetflow::Error& error) {
    EXPECT_NE(std::string(error.what()).find("more than"), std::string::npos) << error.what();
  }
  rt.insert(host_only, {}).get();
  EXPECT_TRUE(std::isfinite(rt.elapsed()));
}

// Two simulated devices of a kind (GPUs, then OpenCL devices), a memory limit on the first too
// small for the tasks' data: every task runs on the second, under every scheduler (with no CPU
// worker, one handed to the first would fail there), and none fails. Where neither device can
// hold the data, the task fails saying so.
TEST(Simulation, ATaskTooLargeForOneDeviceRunsOnTheOtherOfItsKindUnderEveryScheduler) {
  const std::pair<const char*, Arch> kinds[] = {
      {R"({"cpus": 0, "gpus": 2, "link": {"bandwidth_gbs": 1.0, "latency_us": 0},
           "codelets": {"work": {"cuda": 0.001}}})",
       Arch::cuda},
      {R"({"cpus": 0, "opencl": 2, "link": {"bandwidth_gbs": 1.0, "latency_us": 0},
           "codelets": {"work": {"opencl": 0.001}}})",
       Arch::opencl}};
  for (const auto& [json, arch] : kinds) {
    MachineFile machine(json);
    for (const auto& scheduler : hetflow::ext::schedulers()) {
      const std::string name = scheduler.name + " on " + std::string(hetflow::arch_name(arch));
      Codelet work = named("work");
      work.opencl = work.cpu;
      Config config = simulated(machine, scheduler.name.c_str());
      config.memory_limits = {{1, 1024}};
      Runtime rt(config);
      std::vector<std::vector<double>> data(16, std::vector<double>(512));  // 4 KiB each
      std::vector<DataHandle> handles;
      std::vector<hetflow::Future<void>> tasks;
      for (auto& vector : data) handles.push_back(rt.register_vector(vector.data(), vector.size()));
      for (int round = 0; round < 2; ++round) {
        for (auto& handle : handles) tasks.push_back(rt.insert(work, {.data = {RW(handle)}}));
      }
      for (auto& task : tasks) EXPECT_NO_THROW(task.get()) << name;
      // 32 tasks of 1 ms, one after the other on the one device that can hold their data.
      EXPECT_GE(rt.elapsed(), 0.032) << name;
      for (auto& handle : handles) rt.unregister(handle);
    }
    for (const auto& scheduler : hetflow::ext::schedulers()) {
      const std::string name = scheduler.name + " on " + std::string(hetflow::arch_name(arch));
      Codelet work = named("work");
      work.opencl = work.cpu;
      Config config = simulated(machine, scheduler.name.c_str());
      config.memory_limits = {{1, 1024}, {2, 2048}};
      Runtime rt(config);
      std::vector<double> large(512);
      DataHandle handle = rt.register_vector(large.data(), large.size(), "large");
      try {
        rt.insert(work, {.data = {R(handle)}}).get();
        ADD_FAILURE() << name << ": a task whose data no device can hold ran";
      } catch (const hetflow::Error& error) {
        EXPECT_NE(std::string(error.what()).find("does not fit on memory node"), std::string::npos)
            << name << ": " << error.what();
      }
      rt.unregister(handle);
    }
  }
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

const char* kOneCpuOneOpencl(bool copy_engine) {
  return copy_engine ? R"({
  "cpus": 1, "opencl": 1,
  "link": {"bandwidth_gbs": 1.0, "latency_us": 0},
  "codelets": {"work": {"cpu": 0.010, "opencl": 0.001}, "long": {"opencl": 0.005}, "host_only": {"cpu": 0.002}}
})"
                     : R"({
  "cpus": 1, "opencl": 1, "opencl_copy_engine": false,
  "link": {"bandwidth_gbs": 1.0, "latency_us": 0},
  "codelets": {"work": {"cpu": 0.010, "opencl": 0.001}, "long": {"opencl": 0.005}, "host_only": {"cpu": 0.002}}
})";
}

Codelet for_opencl(const char* name) {
  Codelet codelet = named(name);
  codelet.opencl = codelet.cpu;
  return codelet;
}

TEST(Simulation, OpenclDevicesAreWorkersWithTheirOwnNodes) {
  MachineFile machine(R"({"cpus": 1, "gpus": 1, "opencl": 2, "codelets": {"work": {"opencl": 0.001}}})");
  Runtime rt(simulated(machine));
  ASSERT_EQ(rt.worker_count(), 4u);
  EXPECT_EQ(rt.workers()[1].arch, Arch::cuda);
  EXPECT_EQ(rt.workers()[2].arch, Arch::opencl);
  EXPECT_EQ(rt.workers()[3].arch, Arch::opencl);
  EXPECT_EQ(rt.workers()[3].memory_node, 3u);
  EXPECT_EQ(rt.memory_nodes(), (std::vector<std::string>{"host", "cuda0", "opencl0", "opencl1"}));
  const Codelet work = for_opencl("work");
  for (int i = 0; i < 4; ++i) rt.insert(work);
  rt.wait_all();
  EXPECT_NEAR(rt.elapsed(), 0.002, 1e-9);  // two rounds of 1 ms on the two OpenCL devices
}

// A device whose compute units make its copies (an OpenCL device on the CPU) uploads the data of
// the task it looks ahead to only once its kernel is over; one with a copy engine overlaps them.
TEST(Simulation, DeviceWithoutCopyEngineCopiesBetweenKernels) {
  for (const bool copy_engine : {true, false}) {
    MachineFile machine(kOneCpuOneOpencl(copy_engine));
    const Codelet work = for_opencl("work");
    Runtime rt(simulated(machine, "eager"));
    std::vector<double> first(125'000);  // 1 MB each: 1 ms on the 1 GB/s link
    std::vector<double> second(125'000);
    rt.insert(work, {.data = {R(rt.register_vector(first.data(), first.size()))}, .where = Arch::opencl});
    rt.insert(work, {.data = {R(rt.register_vector(second.data(), second.size()))}, .where = Arch::opencl});
    rt.wait_all();
    // upload, work, (upload during the work with an engine,) upload, work
    EXPECT_NEAR(rt.elapsed(), copy_engine ? 0.003 : 0.004, 1e-9) << "copy engine " << copy_engine;
  }
}

// Without a copy engine, a CPU task that needs what a device computed waits for the kernel the
// device runs before its copy home can start. A device worker that took its next task ahead
// starts it as soon as its task ends, before the CPU worker it woke asks for the data.
TEST(Simulation, CopyHomeWaitsForTheKernelOfADeviceWithoutCopyEngine) {
  for (const bool copy_engine : {true, false}) {
    MachineFile machine(kOneCpuOneOpencl(copy_engine));
    const Codelet work = for_opencl("work");
    const Codelet long_work = for_opencl("long");
    const Codelet host_only = named("host_only");
    Runtime rt(simulated(machine, "eager"));
    std::vector<double> x(125'000);  // 1 MB: 1 ms on the link
    std::vector<double> y(125'000);
    DataHandle x_handle = rt.register_vector(x.data(), x.size());
    DataHandle y_handle = rt.register_vector(y.data(), y.size());
    rt.insert(work, {.data = {RW(x_handle)}, .where = Arch::opencl});
    rt.insert(long_work, {.data = {RW(y_handle)}, .where = Arch::opencl});
    auto home = rt.insert(host_only, {.data = {R(x_handle)}, .where = Arch::cpu});
    rt.wait_all();
    // x up 0-1 ms, work 1-2 ms. With an engine: y up 1-2, long 2-7, x home 2-3, host_only 3-5.
    // Without: y up 2-3 (after work), long 3-8, x home 8-9, host_only 9-11.
    EXPECT_NEAR(rt.elapsed(), copy_engine ? 0.007 : 0.011, 1e-9) << "copy engine " << copy_engine;
  }
}

// A task that only reads data does not wait for a copy of it to another node (as on threads):
// here the upload the OpenCL device starts for the task it looks ahead to, queued behind its
// long kernel.
TEST(Simulation, ReaderDoesNotWaitForACopyToAnotherNode) {
  MachineFile machine(kOneCpuOneOpencl(false));
  const Codelet work = for_opencl("work");
  const Codelet long_work = for_opencl("long");
  const Codelet host_only = named("host_only");
  Runtime rt(simulated(machine, "eager"));
  std::vector<double> x(125'000);  // 1 MB: 1 ms on the link
  std::vector<double> y(125'000);
  std::vector<double> z(1);
  DataHandle x_handle = rt.register_vector(x.data(), x.size());
  DataHandle y_handle = rt.register_vector(y.data(), y.size());
  DataHandle z_handle = rt.register_vector(z.data(), z.size());
  rt.insert(long_work, {.data = {RW(y_handle)}, .where = Arch::opencl});
  rt.insert(work, {.data = {R(x_handle)}, .where = Arch::opencl});
  rt.insert(host_only, {.data = {RW(z_handle)}, .where = Arch::cpu});
  auto reader = rt.insert(host_only, {.data = {R(x_handle), RW(z_handle)}, .where = Arch::cpu});
  rt.wait_all();
  // y up 0-1 ms, long 1-6, x up 6-7 (looked ahead to at 1), work 7-8. The CPU runs its first
  // task 0-2 and the reader of x 2-4, not after x's upload.
  EXPECT_NEAR(rt.elapsed(), 0.008, 1e-9);
}

// "link": "stored" takes each device's link, each way, from the bus model of the node's name
// that a real run stored under HETFLOW_HOME.
TEST(Simulation, StoredLinkComesFromTheBusModel) {
  const auto home = std::filesystem::temp_directory_path() / ("hetflow-sim-bus-" + std::to_string(::getpid()));
  std::filesystem::create_directories(home / "bus");
  std::ofstream(home / "bus" / "opencl0.txt")
      << "hetflow-bus 1\nnode opencl0\nhost_to_node 2e9 0\nnode_to_host 1e9 0.001\n";
  hetflow::test::ScopedEnv env("HETFLOW_HOME", home.string());
  {
    MachineFile machine(R"({"cpus": 1, "opencl": 1, "link": "stored", "codelets": {"work": {"opencl": 0.001},
                            "host_only": {"cpu": 0.002}}})");
    const Codelet work = for_opencl("work");
    const Codelet host_only = named("host_only");
    Runtime rt(simulated(machine));
    std::vector<double> data(250'000);  // 2 MB
    DataHandle x = rt.register_vector(data.data(), data.size());
    rt.insert(work, {.data = {RW(x)}, .where = Arch::opencl});
    rt.insert(host_only, {.data = {R(x)}, .where = Arch::cpu});
    rt.wait_all();
    // up at 2 GB/s: 1 ms; work 1 ms; home at 1 GB/s after 1 ms of latency: 3 ms; host_only 2 ms.
    EXPECT_NEAR(rt.elapsed(), 0.007, 1e-9);
  }
  std::filesystem::remove(home / "bus" / "opencl0.txt");
  MachineFile machine(R"({"cpus": 1, "opencl": 1, "link": "stored"})");
  try {
    Runtime rt(simulated(machine));
    FAIL() << "expected InvalidArgument";
  } catch (const hetflow::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("stored bus model"), std::string::npos) << error.what();
  }
  std::filesystem::remove_all(home);
}

TEST(Simulation, EnvironmentVariableSelectsIt) {
  MachineFile machine(kTwoCpusOneGpu);
  hetflow::test::ScopedEnv env("HETFLOW_SIMULATE", machine.path());
  Runtime rt;
  EXPECT_EQ(rt.worker_count(), 3u);
  EXPECT_EQ(rt.config().simulate, machine.path());
}

}  // namespace

// Data a device wrote goes home when it is unregistered (at shutdown, the final write-back) or
// acquired on the host: the copy takes virtual time, and the makespan counts it (it ended at
// the last kernel, as if the result were home then).
TEST(Simulation, TheFinalWriteBackCountsInTheMakespan) {
  MachineFile machine(kTwoCpusOneGpu);
  const Codelet work = named("work");
  std::vector<double> data(125'000);  // 1 MB: 1 ms on the 1 GB/s link
  {
    Runtime rt(simulated(machine));
    DataHandle x = rt.register_vector(data.data(), data.size());
    rt.insert(work, {.data = {RW(x)}, .where = Arch::cuda});
    rt.wait_all();
    EXPECT_NEAR(rt.elapsed(), 0.002, 1e-9);  // 1 ms up, 1 ms of work
    rt.unregister(x);
    EXPECT_NEAR(rt.elapsed(), 0.003, 1e-9);  // and 1 ms home
  }
  {
    Runtime rt(simulated(machine));
    DataHandle x = rt.register_vector(data.data(), data.size());
    rt.insert(work, {.data = {RW(x)}, .where = Arch::cuda});
    rt.wait_all();
    {
      hetflow::Acquisition held = rt.acquire(x, hetflow::AccessMode::R);
      EXPECT_NEAR(rt.elapsed(), 0.003, 1e-9);
    }
    // A task after the acquisition starts once the data is home, not back in time.
    const Codelet host_only = named("host_only");
    rt.insert(host_only, {.data = {RW(x)}, .where = Arch::cpu});
    rt.wait_all();
    EXPECT_NEAR(rt.elapsed(), 0.005, 1e-9);
  }
  {
    testing::internal::CaptureStderr();
    {
      Runtime rt(simulated(machine));
      DataHandle x = rt.register_vector(data.data(), data.size());
      rt.insert(work, {.data = {RW(x)}, .where = Arch::cuda});
    }  // shutdown: waits, writes x back, reports
    const std::string report = testing::internal::GetCapturedStderr();
    EXPECT_NE(report.find("makespan 0.003000 s"), std::string::npos) << report;
  }
}
