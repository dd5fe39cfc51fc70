// Data on device memory nodes: coherence between host RAM and a device node, the per-node
// buffer cache, LRU eviction with write-back under a memory limit, prefetch, and failures. The
// device is simulated in host memory by a test driver whose copies run on another thread, so
// that everything here runs without an accelerator.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

using hetflow::AccessMode;
using hetflow::Arch;
using hetflow::Codelet;
using hetflow::Config;
using hetflow::DataHandle;
using hetflow::Runtime;
using hetflow::TaskContext;

class AsyncCopy final : public hetflow::ext::Transfer {
 public:
  explicit AsyncCopy(std::future<void> copy) : copy_(std::move(copy)) {}
  void wait() override { copy_.get(); }
  bool done() override { return copy_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }

 private:
  std::future<void> copy_;
};

// Host memory posing as a device's: buffers are distinct from the user's, copies are counted.
class FakeDeviceMemory final : public hetflow::ext::MemoryNode {
 public:
  std::string name() const override { return "fake0"; }
  std::size_t max_buffer_bytes() const noexcept override { return max_buffer; }
  void* allocate(std::size_t bytes) override {
    // As OpenCL's CL_DEVICE_MAX_MEM_ALLOC_SIZE: evicting would not help.
    if (max_buffer != 0 && bytes > max_buffer) throw hetflow::Error("fake0: a buffer larger than the device allows");
    std::lock_guard guard(mutex_);
    live_bytes += bytes;
    peak_bytes = std::max(peak_bytes, live_bytes);
    ++allocations;
    void* buffer = ::operator new(bytes);
    live.insert(buffer);
    return buffer;
  }
  void free(void* buffer, std::size_t bytes) noexcept override {
    std::lock_guard guard(mutex_);
    live_bytes -= bytes;
    live.erase(buffer);
    ::operator delete(buffer);
  }
  std::unique_ptr<hetflow::ext::Transfer> copy_from_host(void* buffer, const void* host, std::size_t bytes) override {
    copies_in.fetch_add(1);
    return std::make_unique<AsyncCopy>(std::async(std::launch::async, [=, this] {
      std::memcpy(buffer, host, bytes);
      copies_landed.fetch_add(1);
    }));
  }
  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override {
    copies_out.fetch_add(1);
    std::memcpy(host, buffer, bytes);
  }
  bool owns(const void* buffer) {
    std::lock_guard guard(mutex_);
    return live.count(const_cast<void*>(buffer)) != 0;
  }

  std::atomic<int> copies_in{0};
  std::atomic<int> copies_landed{0};
  std::atomic<int> copies_out{0};
  std::size_t max_buffer = 0;  // the largest buffer allocate gives (0: any)
  std::size_t live_bytes = 0;
  std::size_t peak_bytes = 0;
  int allocations = 0;

 private:
  std::mutex mutex_;
  std::set<void*> live;
};

class FakeDeviceDriver final : public hetflow::ext::Driver {
 public:
  std::string_view name() const override { return "fake"; }
  Arch arch() const override { return Arch::opencl; }
  unsigned worker_count() const override { return 1; }
  std::shared_ptr<hetflow::ext::MemoryNode> memory_node(unsigned) override { return memory; }
  void finish_task(unsigned) override { finished.fetch_add(1); }

  std::shared_ptr<FakeDeviceMemory> memory = std::make_shared<FakeDeviceMemory>();
  std::atomic<int> finished{0};
};

struct Device {
  std::shared_ptr<FakeDeviceDriver> driver = std::make_shared<FakeDeviceDriver>();
  FakeDeviceMemory& memory() const { return *driver->memory; }
};

Config with_device(const Device& device, unsigned ncpus = 2, std::map<unsigned, std::size_t> limits = {}) {
  Config config;
  config.ncpus = ncpus;
  config.drivers = {device.driver};
  config.memory_limits = std::move(limits);
  return config;
}

// x[i] += 1 on the host or on the device, checking that the buffer it gets is the right one.
Codelet increment(const Device& device) {
  Codelet codelet;
  codelet.name = "increment";
  auto body = [&memory = device.memory()](TaskContext& context) {
    const bool on_device = context.arch() == Arch::opencl;
    if (memory.owns(context.buffer(0).ptr) != on_device) throw hetflow::Error("buffer from the wrong node");
    auto* x = context.buffer(0).as<int>();
    for (std::size_t i = 0; i < context.buffer(0).elements(); ++i) x[i] += 1;
  };
  codelet.cpu = body;
  codelet.opencl = body;
  return codelet;
}

TEST(DeviceMemory, NodesAreListedAndWorkersComputeInTheirs) {
  Device device;
  Runtime rt(with_device(device));
  EXPECT_EQ(rt.memory_nodes(), (std::vector<std::string>{"host", "fake0"}));
  ASSERT_EQ(rt.worker_count(), 3u);
  EXPECT_EQ(rt.workers()[0].memory_node, 0u);
  EXPECT_EQ(rt.workers()[2].memory_node, 1u);
  EXPECT_EQ(rt.workers()[2].arch, Arch::opencl);
}

TEST(DeviceMemory, NodesOfDriversThatNameTheirDevicesAlikeGetNamesOfTheirOwn) {
  Device first;
  Device second;
  Config config = with_device(first);
  config.drivers.push_back(second.driver);
  Runtime rt(config);
  EXPECT_EQ(rt.memory_nodes(), (std::vector<std::string>{"host", "fake0", "fake0#2"}));
}

TEST(DeviceMemory, DataCrossesBetweenHostAndDeviceInOneGraph) {
  Device device;
  const Codelet inc = increment(device);
  std::vector<int> data(1000, 0);
  {
    Runtime rt(with_device(device));
    DataHandle x = rt.register_vector(data.data(), data.size(), "x");
    for (int round = 0; round < 5; ++round) {
      rt.insert(inc, {.data = {RW(x)}, .where = Arch::cpu});
      rt.insert(inc, {.data = {RW(x)}, .where = Arch::opencl});
    }
    rt.unregister(x);
    EXPECT_EQ(data, std::vector<int>(1000, 10));
  }
  // Every device task needed the host's latest version, and every host task the device's.
  EXPECT_EQ(device.memory().copies_in.load(), 5);
  EXPECT_EQ(device.memory().copies_out.load(), 5);
  EXPECT_EQ(device.driver->finished.load(), 5);
}

// Adds the elements of its read-only buffer to `total`, on the device only.
Codelet summing_on_the_device(std::atomic<long>& total) {
  Codelet sum;
  sum.name = "sum";
  sum.opencl = [&total](TaskContext& context) {
    const int* x = context.buffer(0).as<const int>();
    total.fetch_add(std::accumulate(x, x + context.buffer(0).elements(), 0L));
  };
  return sum;
}

TEST(DeviceMemory, ValidReplicaIsNotCopiedAgain) {
  Device device;
  std::atomic<long> total{0};
  const Codelet sum = summing_on_the_device(total);
  std::vector<int> data(256);
  std::iota(data.begin(), data.end(), 0);
  Runtime rt(with_device(device));
  DataHandle x = rt.register_vector(data.data(), data.size());
  for (int i = 0; i < 20; ++i) rt.insert(sum, {.data = {R(x)}});
  rt.wait_all();
  EXPECT_EQ(total.load(), 20L * (255 * 256 / 2));
  EXPECT_EQ(device.memory().copies_in.load(), 1);
  EXPECT_EQ(device.memory().copies_out.load(), 0);  // the host's copy stayed valid
}

// Data the application writes directly between its waits (watch_host_writes): a device copy that
// matched host RAM before the latest note_application_waited is made again; other data keeps it.
TEST(DeviceMemory, WatchedDataIsCopiedAgainAfterTheApplicationWaited) {
  Device device;
  std::atomic<long> total{0};
  const Codelet sum = summing_on_the_device(total);
  std::vector<int> watched(100, 1);
  std::vector<int> trusted(100, 1);
  Runtime rt(with_device(device));
  DataHandle w = rt.register_vector(watched.data(), watched.size());
  DataHandle t = rt.register_vector(trusted.data(), trusted.size());
  rt.watch_host_writes(w);
  rt.insert(sum, {.data = {R(w)}});
  rt.insert(sum, {.data = {R(t)}});
  rt.wait_all();
  EXPECT_EQ(device.memory().copies_in.load(), 2);
  Runtime::note_application_waited();
  std::fill(watched.begin(), watched.end(), 5);  // written directly, as Python programs do
  total = 0;
  rt.insert(sum, {.data = {R(w)}});
  rt.insert(sum, {.data = {R(t)}});
  rt.insert(sum, {.data = {R(w)}});  // no wait in between: the new copy stands
  rt.wait_all();
  EXPECT_EQ(total.load(), 500L + 100L + 500L);
  EXPECT_EQ(device.memory().copies_in.load(), 3);
}

// A prefetch whose task ran elsewhere (or never came) is still in flight, or landed uncollected,
// when the application waits and writes host RAM: the next device task gets the new data.
TEST(DeviceMemory, AnUncollectedPrefetchIsNotTrustedAfterTheApplicationWaited) {
  Device device;
  std::atomic<long> total{0};
  const Codelet sum = summing_on_the_device(total);
  std::vector<int> data(100, 1);
  Runtime rt(with_device(device));
  DataHandle h = rt.register_vector(data.data(), data.size());
  rt.watch_host_writes(h);
  rt.prefetch(h, 1);
  rt.wait_all();
  while (device.memory().copies_landed.load() == 0) std::this_thread::yield();  // landed, never collected
  Runtime::note_application_waited();
  std::fill(data.begin(), data.end(), 5);
  rt.insert(sum, {.data = {R(h)}});
  rt.wait_all();
  EXPECT_EQ(total.load(), 500L);
  EXPECT_EQ(device.memory().copies_in.load(), 2);
}

// A buffer about to be freed (a Python array being destroyed): the device's newer version of it,
// written by a task still running, must never land in it.
TEST(DeviceMemory, ADiscardedHandlesDeviceVersionNeverLandsInItsBuffer) {
  Device device;
  const Codelet inc = increment(device);
  std::vector<int> data(64, 1);
  Runtime rt(with_device(device));
  DataHandle x = rt.register_vector(data.data(), data.size());
  hetflow::test::Gate gate;
  rt.submit({.data = {RW(x)}, .where = Arch::cpu}, [&gate] { gate.wait(); });  // holds the next one back
  rt.insert(inc, {.data = {RW(x)}, .where = Arch::opencl});
  rt.discard(x);
  std::fill(data.begin(), data.end(), -7);  // "freed": another owner's bytes now
  gate.open();
  rt.wait_all();
  EXPECT_FALSE(x.registered());
  EXPECT_EQ(data, std::vector<int>(64, -7));
  EXPECT_EQ(device.memory().copies_out.load(), 0);
}

TEST(DeviceMemory, AcquireBringsTheDevicesVersionHome) {
  Device device;
  const Codelet inc = increment(device);
  std::vector<int> data(64, 1);
  Runtime rt(with_device(device));
  DataHandle x = rt.register_vector(data.data(), data.size());
  rt.insert(inc, {.data = {RW(x)}, .where = Arch::opencl});
  {
    hetflow::Acquisition held = rt.acquire(x, AccessMode::R);
    EXPECT_EQ(held.as<int>()[0], 2);
  }
  EXPECT_EQ(device.memory().copies_out.load(), 1);
  // A write on the host invalidates the device's copy: the next device task fetches again.
  {
    hetflow::Acquisition held = rt.acquire(x, AccessMode::RW);
    held.as<int>()[0] = 100;
  }
  rt.insert(inc, {.data = {RW(x)}, .where = Arch::opencl});
  rt.unregister(x);
  EXPECT_EQ(data[0], 101);
  EXPECT_EQ(data[1], 3);
  EXPECT_EQ(device.memory().copies_in.load(), 2);
}

TEST(DeviceMemory, WriteOnlyAccessNeedsNoCopy) {
  Device device;
  Codelet fill;
  fill.name = "fill";
  fill.opencl = [](TaskContext& context) {
    auto* x = context.buffer(0).as<int>();
    std::fill(x, x + context.buffer(0).elements(), 7);
  };
  std::vector<int> data(128, 0);
  Runtime rt(with_device(device));
  DataHandle x = rt.register_vector(data.data(), data.size());
  rt.insert(fill, {.data = {W(x)}});
  rt.unregister(x);
  EXPECT_EQ(data, std::vector<int>(128, 7));
  EXPECT_EQ(device.memory().copies_in.load(), 0);
  EXPECT_EQ(device.memory().copies_out.load(), 1);
}

TEST(DeviceMemory, LimitEvictsLeastRecentlyUsedAndWritesDirtyDataBack) {
  Device device;
  const Codelet inc = increment(device);
  constexpr std::size_t kVectors = 12;
  constexpr std::size_t kElements = 1024;
  constexpr std::size_t kBytes = kElements * sizeof(int);
  std::vector<std::vector<int>> data(kVectors, std::vector<int>(kElements, 0));
  {
    // Room for three vectors on the device, twelve in use.
    Runtime rt(with_device(device, 2, {{1, 3 * kBytes}}));
    std::vector<DataHandle> handles;
    for (auto& vector : data) handles.push_back(rt.register_vector(vector.data(), kElements));
    for (int round = 0; round < 3; ++round) {
      for (auto& handle : handles) rt.insert(inc, {.data = {RW(handle)}, .where = Arch::opencl});
    }
    rt.wait_all();
    EXPECT_LE(device.memory().peak_bytes, 3 * kBytes);
    // The dirty replicas that were evicted went home before their buffers were freed.
    EXPECT_GT(device.memory().copies_out.load(), 0);
  }
  for (const auto& vector : data) EXPECT_EQ(vector, std::vector<int>(kElements, 3));
  EXPECT_EQ(device.memory().live_bytes, 0u);  // everything freed at shutdown
}

TEST(DeviceMemory, BuffersAreReusedAfterUnregistration) {
  Device device;
  const Codelet inc = increment(device);
  std::vector<int> data(512, 0);
  Runtime rt(with_device(device));
  for (int i = 0; i < 10; ++i) {
    DataHandle x = rt.register_vector(data.data(), data.size());
    rt.insert(inc, {.data = {RW(x)}, .where = Arch::opencl});
    rt.unregister(x);
  }
  EXPECT_EQ(data[0], 10);
  EXPECT_EQ(device.memory().allocations, 1);
}

TEST(DeviceMemory, TaskDataLargerThanTheNodeFailsClearly) {
  Device device;
  const Codelet inc = increment(device);
  std::vector<int> small(16, 0);
  std::vector<int> large(4096, 0);
  Runtime rt(with_device(device, 1, {{1, 1024}}));
  DataHandle too_big = rt.register_vector(large.data(), large.size(), "large");
  auto failed = rt.insert(inc, {.data = {RW(too_big)}, .where = Arch::opencl});
  try {
    failed.get();
    FAIL() << "expected an error";
  } catch (const hetflow::Error& error) {
    EXPECT_NE(std::string(error.what()).find("'large'"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("does not fit"), std::string::npos) << error.what();
  }
  // The runtime goes on: other data still runs there.
  DataHandle fits = rt.register_vector(small.data(), small.size());
  rt.insert(inc, {.data = {RW(fits)}, .where = Arch::opencl}).get();
  rt.unregister(fits);
  EXPECT_EQ(small[0], 1);
}

TEST(DeviceMemory, TaskWhoseDataTogetherExceedTheNodeFailsAtOnce) {
  Device device;
  Codelet add;
  add.name = "add";
  add.opencl = [](TaskContext&) {};
  std::vector<int> a(200), b(200);  // 800 bytes each: each fits in 1024, both do not
  Runtime rt(with_device(device, 1, {{1, 1024}}));
  DataHandle ha = rt.register_vector(a.data(), a.size(), "a");
  DataHandle hb = rt.register_vector(b.data(), b.size(), "b");
  try {
    rt.insert(add, {.data = {R(ha), RW(hb)}}).get();
    FAIL() << "expected an error";
  } catch (const hetflow::Error& error) {
    // Said at once, not after waiting for room that could never come.
    EXPECT_NE(std::string(error.what()).find("1600 bytes of data at once"), std::string::npos) << error.what();
  }
}

// A task that may also run on the host is not handed to a device too small for its data, under
// any scheduler (eager gives its tasks to whichever worker of their architectures asks).
TEST(DeviceMemory, ATaskTooLargeForTheDeviceRunsOnTheHostUnderEveryScheduler) {
  for (const char* scheduler : {"eager", "prio", "random", "ws", "dm", "dmda", "dmdas"}) {
    Device device;
    const Codelet inc = increment(device);
    std::vector<int> large(4096, 0);  // 16 KiB
    Config config = with_device(device, 1, {{1, 1024}});
    config.scheduler = scheduler;
    Runtime rt(config);
    DataHandle handle = rt.register_vector(large.data(), large.size(), "large");
    for (int i = 0; i < 20; ++i) {
      EXPECT_NO_THROW(rt.insert(inc, {.data = {RW(handle)}}).get()) << scheduler;
    }
    rt.unregister(handle);
    EXPECT_EQ(large[0], 20) << scheduler;
    EXPECT_EQ(device.memory().allocations, 0) << scheduler;
  }
}

// The same for a device that allocates no buffer as large as the task's (OpenCL's
// CL_DEVICE_MAX_MEM_ALLOC_SIZE) though its memory would hold it: the task runs on the host
// rather than failing on the device; forced there, it fails saying why.
TEST(DeviceMemory, ATaskWithABufferLargerThanTheDeviceAllocatesRunsOnTheHostUnderEveryScheduler) {
  for (const auto& scheduler : hetflow::ext::schedulers()) {
    const std::string name = scheduler.name;
    Device device;
    device.memory().max_buffer = 1024;
    const Codelet inc = increment(device);
    std::vector<int> large(4096, 0);  // 16 KiB
    std::vector<int> small(16, 0);
    Config config = with_device(device, 1);
    config.scheduler = name;
    Runtime rt(config);
    DataHandle handle = rt.register_vector(large.data(), large.size(), "large");
    DataHandle fits = rt.register_vector(small.data(), small.size(), "small");
    for (int i = 0; i < 20; ++i) {
      EXPECT_NO_THROW(rt.insert(inc, {.data = {RW(handle)}}).get()) << name;
      EXPECT_NO_THROW(rt.insert(inc, {.data = {RW(fits), R(handle)}}).get()) << name;
    }
    rt.insert(inc, {.data = {RW(fits)}, .where = Arch::opencl}).get();  // small data still go there
    auto forced = rt.insert(inc, {.data = {RW(handle)}, .where = Arch::opencl});
    try {
      forced.get();
      ADD_FAILURE() << name << ": expected an error";
    } catch (const hetflow::Error& error) {
      EXPECT_NE(std::string(error.what()).find("larger than the device allows"), std::string::npos) << error.what();
    }
    rt.forget_failure(handle);
    rt.unregister(handle);
    rt.unregister(fits);
    EXPECT_EQ(large[0], 20) << name;
    EXPECT_EQ(small[0], 21) << name;
  }
}

// Two devices of one kind, a memory limit on the first too small for the tasks' data: every
// task runs on the second, under every scheduler, whichever worker of that kind the scheduler
// would hand it to (a central queue's, a stolen one, a model's choice). Tasks that fit go on
// running on both.
TEST(DeviceMemory, ATaskTooLargeForOneDeviceRunsOnAnotherOfItsKindUnderEveryScheduler) {
  for (const auto& scheduler : hetflow::ext::schedulers()) {
    const std::string name = scheduler.name;
    Device small;
    Device roomy;
    // x[i] += 1 on a device, counting the tasks each device ran from its buffer.
    std::atomic<int> on_small{0};
    std::atomic<int> on_roomy{0};
    std::atomic<int> elsewhere{0};
    Codelet inc;
    inc.name = "increment_on_a_device";
    inc.opencl = [&](TaskContext& context) {
      const void* buffer = context.buffer(0).ptr;
      (small.memory().owns(buffer) ? on_small : roomy.memory().owns(buffer) ? on_roomy : elsewhere).fetch_add(1);
      for (std::size_t b = 0; b < context.buffer_count(); ++b) {
        auto* x = context.buffer(b).as<int>();
        for (std::size_t i = 0; i < context.buffer(b).elements(); ++i) x[i] += 1;
      }
    };
    Config config;
    config.ncpus = 1;
    config.drivers = {small.driver, roomy.driver};
    config.memory_limits = {{1, 1024}};
    config.scheduler = name;
    Runtime rt(config);
    ASSERT_EQ(rt.worker_count(), 3u) << name;
    ASSERT_EQ(rt.workers()[1].memory_node, 1u) << name;
    ASSERT_EQ(rt.workers()[2].memory_node, 2u) << name;
    constexpr int kLarge = 24;
    constexpr int kPairs = 8;
    constexpr int kSmall = 24;
    std::vector<std::vector<int>> large(kLarge, std::vector<int>(1024, 0));      // 4 KiB each: never on node 1
    std::vector<std::vector<int>> halves(2 * kPairs, std::vector<int>(200, 0));  // 800 bytes each, 1600 a pair
    std::vector<std::vector<int>> tiny(kSmall, std::vector<int>(16, 0));         // fit anywhere
    std::vector<DataHandle> handles;
    std::vector<hetflow::Future<void>> tasks;
    for (int round = 0; round < 2; ++round) {  // submitted at once, so that both workers are asked
      for (int i = 0; i < kLarge; ++i) {
        if (round == 0) handles.push_back(rt.register_vector(large[i].data(), large[i].size()));
        tasks.push_back(rt.insert(inc, {.data = {RW(handles[i])}, .where = Arch::opencl}));
      }
    }
    for (int i = 0; i < kPairs; ++i) {  // each half fits on node 1, both at once do not
      DataHandle a = rt.register_vector(halves[2 * i].data(), halves[2 * i].size());
      DataHandle b = rt.register_vector(halves[2 * i + 1].data(), halves[2 * i + 1].size());
      tasks.push_back(rt.insert(inc, {.data = {RW(a), RW(b)}, .where = Arch::opencl}));
      handles.push_back(a);
      handles.push_back(b);
    }
    for (auto& vector : tiny) {
      handles.push_back(rt.register_vector(vector.data(), vector.size()));
      tasks.push_back(rt.insert(inc, {.data = {RW(handles.back())}, .where = Arch::opencl}));
    }
    for (auto& task : tasks) EXPECT_NO_THROW(task.get()) << name;
    for (auto& handle : handles) rt.unregister(handle);
    for (const auto& vector : large) EXPECT_EQ(vector, std::vector<int>(vector.size(), 2)) << name;
    for (const auto& vector : halves) EXPECT_EQ(vector, std::vector<int>(vector.size(), 1)) << name;
    for (const auto& vector : tiny) EXPECT_EQ(vector, std::vector<int>(vector.size(), 1)) << name;
    // The large tasks and the pairs ran on the roomy device only: nothing of theirs went to node 1.
    EXPECT_GE(on_roomy.load(), 2 * kLarge + kPairs) << name;
    EXPECT_EQ(on_small.load() + on_roomy.load(), 2 * kLarge + kPairs + kSmall) << name;
    EXPECT_EQ(elsewhere.load(), 0) << name;
    EXPECT_LE(small.memory().peak_bytes, 1024u) << name;
  }
}

// Where no device of the task's kinds can ever hold its data, the task still fails saying so,
// under every scheduler (nothing waits for a device that could).
TEST(DeviceMemory, ATaskTooLargeForEveryDeviceOfItsKindFailsClearlyUnderEveryScheduler) {
  for (const auto& scheduler : hetflow::ext::schedulers()) {
    const std::string name = scheduler.name;
    Device first;
    Device second;
    Codelet inc;
    inc.name = "increment_on_a_device";
    inc.opencl = [](TaskContext&) {};
    Config config;
    config.ncpus = 1;
    config.drivers = {first.driver, second.driver};
    config.memory_limits = {{1, 1024}, {2, 2048}};
    config.scheduler = name;
    Runtime rt(config);
    std::vector<int> large(1024, 0);  // 4 KiB
    DataHandle handle = rt.register_vector(large.data(), large.size(), "large");
    std::vector<hetflow::Future<void>> tasks;
    for (int i = 0; i < 4; ++i) tasks.push_back(rt.insert(inc, {.data = {R(handle)}, .where = Arch::opencl}));
    for (auto& task : tasks) {
      try {
        task.get();
        ADD_FAILURE() << name << ": a task whose data no device can hold ran";
      } catch (const hetflow::Error& error) {
        EXPECT_NE(std::string(error.what()).find("'large'"), std::string::npos) << name << ": " << error.what();
        EXPECT_NE(std::string(error.what()).find("does not fit on memory node"), std::string::npos)
            << name << ": " << error.what();
      }
    }
    rt.unregister(handle);
    EXPECT_EQ(first.memory().allocations + second.memory().allocations, 0) << name;
  }
}

TEST(DeviceMemory, PrefetchMovesDataAheadOfTheTask) {
  Device device;
  const Codelet inc = increment(device);
  std::vector<int> data(256, 5);
  Runtime rt(with_device(device));
  DataHandle x = rt.register_vector(data.data(), data.size());
  rt.insert(inc, {.data = {RW(x)}, .where = Arch::cpu});
  rt.prefetch(x, 1);  // after the host task that writes it
  rt.wait_all();
  EXPECT_EQ(device.memory().copies_in.load(), 1);
  rt.insert(inc, {.data = {RW(x)}, .where = Arch::opencl});
  rt.unregister(x);
  EXPECT_EQ(device.memory().copies_in.load(), 1);  // the task found it in place
  EXPECT_EQ(data[0], 7);
  EXPECT_THROW(rt.prefetch(x, 1), hetflow::InvalidArgument);  // unregistered
}

TEST(DeviceMemory, BadNodeNumbersAreRefused) {
  Device device;
  std::vector<int> data(4);
  Runtime rt(with_device(device));
  DataHandle x = rt.register_vector(data.data(), data.size());
  EXPECT_THROW(rt.prefetch(x, 2), hetflow::InvalidArgument);
  Config config = with_device(device, 1, {{5, 1024}});
  EXPECT_THROW(Runtime bad(config), hetflow::InvalidArgument);
}

TEST(DeviceMemory, TilesOfOneMatrixDoNotOverwriteEachOther) {
  Device device;
  const Codelet inc = increment(device);
  // A 4 x 2 column-major matrix cut into a top and a bottom 2 x 2 tile: their rows interleave.
  std::vector<int> matrix(8, 0);
  Runtime rt(with_device(device));
  DataHandle top = rt.register_matrix(matrix.data(), 2, 2, 4, "top");
  DataHandle bottom = rt.register_matrix(matrix.data() + 2, 2, 2, 4, "bottom");
  Codelet matrix_inc;
  matrix_inc.name = "matrix_inc";
  auto body = [](TaskContext& context) {
    const hetflow::DataView tile = context.buffer(0);
    for (std::size_t col = 0; col < tile.ny(); ++col) {
      for (std::size_t row = 0; row < tile.nx(); ++row) tile.as<int>()[col * tile.ld() + row] += 1;
    }
  };
  matrix_inc.cpu = body;
  matrix_inc.opencl = body;
  rt.insert(matrix_inc, {.data = {RW(top)}, .where = Arch::opencl});
  rt.insert(matrix_inc, {.data = {RW(bottom)}, .where = Arch::opencl});
  rt.wait_all();
  rt.insert(matrix_inc, {.data = {RW(bottom)}, .where = Arch::cpu}).get();  // bottom home, written there
  rt.unregister(top);  // top home: must not bring the device's stale bottom rows along
  rt.unregister(bottom);
  EXPECT_EQ(matrix, (std::vector<int>{1, 1, 2, 2, 1, 1, 2, 2}));
}

TEST(DeviceMemory, LimitsComeFromTheEnvironmentWhenCodeSetsNone) {
  {
    hetflow::test::ScopedEnv env("HETFLOW_MEMORY_LIMITS", "1:64M,2:1G");
    const Config config = Config{}.resolved();
    EXPECT_EQ(config.memory_limits, (std::map<unsigned, std::size_t>{{1, 64u << 20}, {2, std::size_t{1} << 30}}));
    Config in_code;
    in_code.memory_limits = {{1, 4096}};
    EXPECT_EQ(in_code.resolved().memory_limits, (std::map<unsigned, std::size_t>{{1, 4096}}));
    in_code.memory_limits = {{1, 0}};
    EXPECT_THROW((void)in_code.resolved(), hetflow::InvalidArgument);
  }
  // A limit of 0 bytes, or two for one node, were taken (0 as no limit, the last of two).
  for (const char* bad : {"1:lots", "1:64X", "64M", "0:1M", ":1M", "1:0", "1:1K,1:2K"}) {
    hetflow::test::ScopedEnv env("HETFLOW_MEMORY_LIMITS", bad);
    try {
      (void)Config{}.resolved();
      ADD_FAILURE() << "accepted " << bad;
    } catch (const hetflow::InvalidArgument& error) {
      const std::string what = error.what();
      EXPECT_TRUE(what.find("HETFLOW_MEMORY_LIMITS") != std::string::npos || what.find("node 0") != std::string::npos)
          << what;
    }
  }
}

// Sizes past what a size_t holds wrapped around: to 1024 bytes, or to 0 ("given 0 bytes").
TEST(DeviceMemory, LimitsTooLargeForASizeAreRefused) {
  for (const char* bad :
       {"1:18014398509481985K", "1:17179869184G", "1:99999999999999999999999", "1:18446744073709551616"}) {
    hetflow::test::ScopedEnv env("HETFLOW_MEMORY_LIMITS", bad);
    try {
      (void)Config{}.resolved();
      ADD_FAILURE() << "accepted " << bad;
    } catch (const hetflow::InvalidArgument& error) {
      const std::string value = std::string(bad).substr(2);
      EXPECT_EQ(std::string(error.what()), "HETFLOW_MEMORY_LIMITS: '" + value + "' is too large (more than " +
                                               std::to_string(std::numeric_limits<std::size_t>::max()) + " bytes)");
    }
  }
  hetflow::test::ScopedEnv largest("HETFLOW_MEMORY_LIMITS", "1:17179869183G");
  EXPECT_EQ(Config{}.resolved().memory_limits.at(1), std::size_t{17179869183} << 30);
}

TEST(DeviceMemory, ManyTasksOnBothSidesStayCoherent) {
  Device device;
  const Codelet inc = increment(device);
  const int rounds = static_cast<int>(hetflow::test::scaled(200));
  std::vector<std::vector<int>> data(8, std::vector<int>(256, 0));
  {
    Runtime rt(with_device(device, 2, {{1, 3 * 256 * sizeof(int)}}));
    std::vector<DataHandle> handles;
    for (auto& vector : data) handles.push_back(rt.register_vector(vector.data(), vector.size()));
    for (int round = 0; round < rounds; ++round) {
      for (auto& handle : handles) rt.insert(inc, {.data = {RW(handle)}});
    }
  }
  for (const auto& vector : data) EXPECT_EQ(vector, std::vector<int>(256, rounds));
}

}  // namespace
