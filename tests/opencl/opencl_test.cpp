// The OpenCL driver: device selection, its memory node on its own, kernels and the program cache,
// codelets with CPU and OpenCL implementations (vectors, matrices with padding), data crossing
// between host and device within one graph, eviction under a memory limit, and misuse.
//
// The tests that need a device skip when there is none, unless HETFLOW_REQUIRE_OPENCL=1 (set by
// CTest, with HETFLOW_OPENCL_DEVICES=all so that a CPU device such as PoCL's counts): then they fail.
#include "hetflow/opencl.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/ext/scheduler.hpp"
#include "hetflow/hetflow.hpp"
#include "hetflow/perfmodel.hpp"
#include "test_support.hpp"

namespace {

namespace cl = hetflow::opencl;
using hetflow::AccessMode;
using hetflow::Arch;
using hetflow::Codelet;
using hetflow::Config;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskContext;
using hetflow::W;
using hetflow::test::ScopedEnv;

// ---- kernels and their CPU twins ---------------------------------------------------------------

constexpr const char* kVectorSource = R"CLC(
__kernel void axpy(float alpha, __global const float* x, __global float* y, uint n) {
  size_t i = get_global_id(0);
  if (i < n) y[i] = alpha * x[i] + y[i];
}
__kernel void affine(__global float* x, float a, float b, uint n) {
  size_t i = get_global_id(0);
  if (i < n) x[i] = a * x[i] + b;
}
)CLC";

// b(i, j) = alpha * a(i, j) + i + 100 j, column-major with leading dimensions.
constexpr const char* kMatrixSource = R"CLC(
__kernel void shift_scale(__global const float* a, uint lda, __global float* b, uint ldb,
                          uint nx, uint ny, float alpha) {
  size_t i = get_global_id(0);
  size_t j = get_global_id(1);
  if (i < nx && j < ny) b[j * ldb + i] = alpha * a[j * lda + i] + (float)i + 100.0f * (float)j;
}
)CLC";

cl_uint as_cl_uint(std::size_t n) { return static_cast<cl_uint>(n); }

void enqueue(const TaskContext& context, cl_kernel kernel, std::vector<std::size_t> global) {
  cl::check(clEnqueueNDRangeKernel(cl::device(context).queue, kernel, static_cast<cl_uint>(global.size()), nullptr,
                                   global.data(), nullptr, 0, nullptr, nullptr),
            "clEnqueueNDRangeKernel");
}

/// y += alpha x over buffers 0 (x, read) and 1 (y, read-write); the argument is alpha.
Codelet make_axpy(std::atomic<int>& opencl_runs) {
  return Codelet{
      .name = "axpy",
      .cpu =
          [](TaskContext& context) {
            const float alpha = context.arg<float>();
            const float* x = context.buffer(0).as<float>();
            float* y = context.buffer(1).as<float>();
            for (std::size_t i = 0; i < context.buffer(1).nx(); ++i) y[i] = alpha * x[i] + y[i];
          },
      .opencl =
          [&opencl_runs](TaskContext& context) {
            opencl_runs.fetch_add(1);
            const std::size_t n = context.buffer(1).nx();
            cl_kernel k = cl::kernel(context, kVectorSource, "axpy");
            cl::set_args(k, context.arg<float>(), cl::buffer(context, 0), cl::buffer(context, 1), as_cl_uint(n));
            enqueue(context, k, {n});
          },
  };
}

struct Affine {
  float a;
  float b;
};

/// x = a x + b over buffer 0.
Codelet make_affine(std::atomic<int>& opencl_runs) {
  return Codelet{
      .name = "affine",
      .cpu =
          [](TaskContext& context) {
            const Affine& p = context.arg<Affine>();
            float* x = context.buffer(0).as<float>();
            for (std::size_t i = 0; i < context.buffer(0).nx(); ++i) x[i] = p.a * x[i] + p.b;
          },
      .opencl =
          [&opencl_runs](TaskContext& context) {
            opencl_runs.fetch_add(1);
            const Affine& p = context.arg<Affine>();
            const std::size_t n = context.buffer(0).nx();
            cl_kernel k = cl::kernel(context, kVectorSource, "affine");
            cl::set_args(k, cl::buffer(context, 0), p.a, p.b, as_cl_uint(n));
            enqueue(context, k, {n});
          },
  };
}

/// Buffer 1 (matrix, written) from buffer 0 (matrix, read); the argument is alpha.
Codelet make_shift_scale(std::atomic<int>& opencl_runs) {
  return Codelet{
      .name = "shift_scale",
      .cpu =
          [](TaskContext& context) {
            const float alpha = context.arg<float>();
            const hetflow::DataView a = context.buffer(0);
            const hetflow::DataView b = context.buffer(1);
            for (std::size_t j = 0; j < b.ny(); ++j) {
              for (std::size_t i = 0; i < b.nx(); ++i) {
                b.as<float>()[j * b.ld() + i] =
                    alpha * a.as<float>()[j * a.ld() + i] + static_cast<float>(i) + 100.0f * static_cast<float>(j);
              }
            }
          },
      .opencl =
          [&opencl_runs](TaskContext& context) {
            opencl_runs.fetch_add(1);
            const hetflow::DataView a = context.buffer(0);
            const hetflow::DataView b = context.buffer(1);
            cl_kernel k = cl::kernel(context, kMatrixSource, "shift_scale");
            cl::set_args(k, cl::buffer(context, 0), as_cl_uint(a.ld()), cl::buffer(context, 1), as_cl_uint(b.ld()),
                         as_cl_uint(b.nx()), as_cl_uint(b.ny()), context.arg<float>());
            enqueue(context, k, {b.nx(), b.ny()});
          },
  };
}

// ---- fixture -------------------------------------------------------------------------------------

bool opencl_required() {
  const char* value = std::getenv("HETFLOW_REQUIRE_OPENCL");
  return value != nullptr && std::string(value) == "1";
}

/// One OpenCL device (the first of the types HETFLOW_OPENCL_DEVICES names), so that its memory
/// node is node 1, plus two CPU workers.
class OpenCL : public ::testing::Test {
 protected:
  void SetUp() override {
    driver_ = cl::make_driver({.max_devices = 1});
    if (driver_->worker_count() > 0) return;
    if (opencl_required()) {
      FAIL() << "no OpenCL device found, and HETFLOW_REQUIRE_OPENCL=1 says there must be one (install "
                "pocl-opencl-icd for a CPU device; HETFLOW_OPENCL_DEVICES="
             << (std::getenv("HETFLOW_OPENCL_DEVICES") != nullptr ? std::getenv("HETFLOW_OPENCL_DEVICES") : "(unset)")
             << ")";
    }
    GTEST_SKIP() << "no OpenCL device of the chosen types (HETFLOW_OPENCL_DEVICES=all also counts CPU devices)";
  }

  [[nodiscard]] Config config() const { return Config{.ncpus = 2, .drivers = {driver_}}; }

  std::shared_ptr<hetflow::ext::Driver> driver_;
};

// ---- helpers independent of devices --------------------------------------------------------------

TEST(OpenCLErrors, NamesStatusCodes) {
  EXPECT_EQ(cl::error_name(CL_SUCCESS), "CL_SUCCESS");
  EXPECT_EQ(cl::error_name(CL_INVALID_VALUE), "CL_INVALID_VALUE");
  EXPECT_EQ(cl::error_name(CL_MEM_OBJECT_ALLOCATION_FAILURE), "CL_MEM_OBJECT_ALLOCATION_FAILURE");
  EXPECT_EQ(cl::error_name(-1001), "CL_PLATFORM_NOT_FOUND_KHR");
  EXPECT_EQ(cl::error_name(-12345), "unknown OpenCL error -12345");
}

TEST(OpenCLErrors, CheckThrowsWithWhatAndName) {
  EXPECT_NO_THROW(cl::check(CL_SUCCESS, "clFinish"));
  try {
    cl::check(CL_OUT_OF_RESOURCES, "clFinish on device 'x'");
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    EXPECT_STREQ(e.what(), "hetflow::opencl: clFinish on device 'x' failed: CL_OUT_OF_RESOURCES");
  }
}

TEST(OpenCLDeviceSelection, MalformedEnvironmentNamesTheVariable) {
  for (const char* bad : {"bogus", "gpu,bogus", "gpu,", "GPU"}) {
    ScopedEnv env("HETFLOW_OPENCL_DEVICES", bad);
    hetflow::test::expect_invalid_argument([] { (void)cl::make_driver(); },
                                           {"HETFLOW_OPENCL_DEVICES", std::string("'") + bad + "'"});
  }
}

TEST(OpenCLDeviceSelection, CodeWinsOverTheEnvironment) {
  ScopedEnv env("HETFLOW_OPENCL_DEVICES", "bogus");
  EXPECT_NO_THROW((void)cl::make_driver({.device_types = CL_DEVICE_TYPE_ALL, .device_types_set = true}));
}

TEST(OpenCLDeviceSelection, EmptyTypesAreRefused) {
  hetflow::test::expect_invalid_argument([] { (void)cl::make_driver({.device_types = 0, .device_types_set = true}); },
                                         {"device_types"});
}

TEST(OpenCLDeviceSelection, ListsAndMaxDevices) {
  ScopedEnv env("HETFLOW_OPENCL_DEVICES", " gpu , accelerator,cpu ");
  auto listed = cl::make_driver();
  auto all = cl::make_driver({.device_types = CL_DEVICE_TYPE_ALL, .device_types_set = true});
  // Every device is one of the three types, so the list finds them all.
  EXPECT_EQ(listed->worker_count(), all->worker_count());
  EXPECT_EQ(all->name(), "opencl");
  EXPECT_EQ(all->arch(), Arch::opencl);
  auto one = cl::make_driver({.device_types = CL_DEVICE_TYPE_ALL, .device_types_set = true, .max_devices = 1});
  EXPECT_EQ(one->worker_count(), std::min(1u, all->worker_count()));
}

// The ranks of a machine (HETFLOW_OPENCL_SHARE, set by hetflow::mpi::share_node) take their
// share of its devices: every device dealt once between them, or one each, shared, when there
// are fewer devices than ranks.
TEST(OpenCLDeviceSelection, ProcessesSharingTheMachineTakeTheirShare) {
  const auto everything = cl::DriverOptions{.device_types = CL_DEVICE_TYPE_ALL, .device_types_set = true};
  const unsigned all = cl::make_driver(everything)->worker_count();
  unsigned dealt = 0;
  for (const char* share : {"0/2", "1/2"}) {
    ScopedEnv env("HETFLOW_OPENCL_SHARE", share);
    const unsigned mine = cl::make_driver(everything)->worker_count();
    EXPECT_EQ(mine, all == 0 ? 0u : all < 2 ? 1u : (all + (share[0] == '0' ? 1 : 0)) / 2) << share;
    dealt += mine;
  }
  if (all >= 2) {
    EXPECT_EQ(dealt, all);
  }
  for (const char* bad : {"2/2", "1/0", "a/2", "1", "1/2x", "-1/2"}) {
    ScopedEnv env("HETFLOW_OPENCL_SHARE", bad);
    hetflow::test::expect_invalid_argument([] { (void)cl::make_driver(); },
                                           {"HETFLOW_OPENCL_SHARE", std::string("'") + bad + "'"});
  }
}

// ---- the driver and its memory node, without an engine ------------------------------------------

TEST_F(OpenCL, DriverGivesEachWorkerOneMemoryNodeAndState) {
  auto node = driver_->memory_node(0);
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(driver_->memory_node(0), node) << "the engine tells nodes apart by pointer";
  EXPECT_EQ(node->name(), "opencl0");
  EXPECT_GT(node->capacity(), 0u);
  EXPECT_NE(driver_->worker_state(0), nullptr);
  EXPECT_NO_THROW(driver_->finish_task(0));
  EXPECT_THROW((void)driver_->memory_node(1), hetflow::InvalidArgument);
}

TEST_F(OpenCL, MemoryNodeCopiesBothWays) {
  auto node = driver_->memory_node(0);
  std::vector<int> source(10000);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<int>(i * 7 + 3);
  const std::size_t bytes = source.size() * sizeof(int);
  void* buffer = node->allocate(bytes);
  ASSERT_NE(buffer, nullptr);
  auto transfer = node->copy_from_host(buffer, source.data(), bytes);
  ASSERT_NE(transfer, nullptr);
  transfer->wait();
  EXPECT_TRUE(transfer->done());
  std::vector<int> back(source.size(), -1);
  node->copy_to_host(back.data(), buffer, bytes);
  EXPECT_EQ(back, source);
  node->free(buffer, bytes);

  // Empty buffers exist (a kernel may still take them) and copying nothing completes at once.
  void* empty = node->allocate(0);
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(node->copy_from_host(empty, source.data(), 0), nullptr);
  node->free(empty, 0);
}

TEST_F(OpenCL, MemoryNodeRefusesBuffersLargerThanTheDeviceAllows) {
  auto node = driver_->memory_node(0);
  try {
    (void)node->allocate(std::size_t{1} << 62);
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    EXPECT_NE(std::string(e.what()).find("CL_DEVICE_MAX_MEM_ALLOC_SIZE"), std::string::npos) << e.what();
  }
}

// A buffer larger than CL_DEVICE_MAX_MEM_ALLOC_SIZE, though the device's memory would hold it: a
// task that may also run on the host runs there under every scheduler (eager handed some to the
// device, where they failed), and only one forced onto the device fails, saying why. The buffer
// is reserved, never touched: neither implementation reads it.
TEST_F(OpenCL, ATaskWithABufferLargerThanTheDeviceAllocatesRunsOnTheHost) {
  const std::size_t bytes = driver_->memory_node(0)->max_buffer_bytes() + 4096;
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(memory, MAP_FAILED);
  std::atomic<int> cpu_runs{0};
  std::atomic<int> opencl_runs{0};
  const Codelet peek{.name = "peek",
                     .cpu = [&cpu_runs](TaskContext&) { cpu_runs.fetch_add(1); },
                     .opencl = [&opencl_runs](TaskContext&) { opencl_runs.fetch_add(1); }};
  for (const auto& scheduler : hetflow::ext::schedulers()) {
    Config c = config();
    c.scheduler = scheduler.name;
    Runtime rt(c);
    auto large = rt.register_vector(static_cast<float*>(memory), bytes / sizeof(float), "large");
    for (int i = 0; i < 10; ++i) EXPECT_NO_THROW(rt.insert(peek, {.data = {R(large)}}).get()) << scheduler.name;
    auto forced = rt.insert(peek, {.data = {R(large)}, .where = Arch::opencl});
    try {
      forced.get();
      ADD_FAILURE() << scheduler.name << ": expected hetflow::Error";
    } catch (const hetflow::Error& e) {
      EXPECT_NE(std::string(e.what()).find("CL_DEVICE_MAX_MEM_ALLOC_SIZE"), std::string::npos) << e.what();
    }
    rt.unregister(large);
  }
  munmap(memory, bytes);
  EXPECT_EQ(opencl_runs.load(), 0);
  EXPECT_EQ(cpu_runs.load(), static_cast<int>(10 * hetflow::ext::schedulers().size()));
}

// ---- codelets ------------------------------------------------------------------------------------

TEST_F(OpenCL, VectorCodeletAgreesWithItsCpuImplementation) {
  std::atomic<int> opencl_runs{0};
  const Codelet axpy = make_axpy(opencl_runs);
  const std::size_t n = 100'003;  // not a multiple of any work-group size
  std::vector<float> x(n);
  std::vector<float> y_cpu(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i % 1000) * 0.25f;
    y_cpu[i] = static_cast<float>(i % 17) - 8.0f;
  }
  std::vector<float> y_opencl = y_cpu;
  const std::vector<float> y_before = y_cpu;
  {
    Runtime rt(config());
    auto hx = rt.register_vector(x.data(), n, "x");
    auto hy_cpu = rt.register_vector(y_cpu.data(), n, "y cpu");
    auto hy_opencl = rt.register_vector(y_opencl.data(), n, "y opencl");
    auto on_cpu = rt.insert(axpy, {.data = {R(hx), RW(hy_cpu)}, .where = Arch::cpu}, 3.0f);
    auto on_opencl = rt.insert(axpy, {.data = {R(hx), RW(hy_opencl)}, .where = Arch::opencl}, 3.0f);
    on_cpu.get();
    on_opencl.get();
    rt.unregister(hy_cpu);
    rt.unregister(hy_opencl);
  }
  EXPECT_EQ(opencl_runs.load(), 1);
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_NEAR(y_opencl[i], y_cpu[i], 1e-4f) << "at " << i;
    ASSERT_NEAR(y_cpu[i], 3.0f * x[i] + y_before[i], 1e-4f) << "at " << i;
  }
}

TEST_F(OpenCL, MatrixCodeletHonoursLeadingDimensions) {
  std::atomic<int> opencl_runs{0};
  const Codelet shift_scale = make_shift_scale(opencl_runs);
  const std::size_t nx = 37, ny = 23, lda = 41, ldb = 40;
  std::vector<float> a(lda * ny, -7.0f);
  for (std::size_t j = 0; j < ny; ++j) {
    for (std::size_t i = 0; i < nx; ++i) a[j * lda + i] = static_cast<float>((i * 3 + j * 5) % 11);
  }
  std::vector<float> b_cpu(ldb * ny, -9.0f);
  std::vector<float> b_opencl(ldb * ny, -9.0f);
  {
    Runtime rt(config());
    auto ha = rt.register_matrix(a.data(), nx, ny, lda, "a");
    auto hb_cpu = rt.register_matrix(b_cpu.data(), nx, ny, ldb, "b cpu");
    auto hb_opencl = rt.register_matrix(b_opencl.data(), nx, ny, ldb, "b opencl");
    rt.insert(shift_scale, {.data = {R(ha), RW(hb_cpu)}, .where = Arch::cpu}, 2.0f);
    rt.insert(shift_scale, {.data = {R(ha), RW(hb_opencl)}, .where = Arch::opencl}, 2.0f);
    rt.wait_all();
    rt.unregister(hb_cpu);
    rt.unregister(hb_opencl);
  }
  EXPECT_EQ(opencl_runs.load(), 1);
  for (std::size_t j = 0; j < ny; ++j) {
    for (std::size_t i = 0; i < nx; ++i) {
      const std::size_t at = j * ldb + i;
      const float expected = 2.0f * a[j * lda + i] + static_cast<float>(i) + 100.0f * static_cast<float>(j);
      ASSERT_EQ(b_cpu[at], expected) << "CPU at (" << i << ", " << j << ")";
      ASSERT_EQ(b_opencl[at], b_cpu[at]) << "OpenCL at (" << i << ", " << j << ")";
    }
  }
}

// What lies between a matrix's columns is not the matrix's: padding, or often the rest of a
// larger matrix that the registered one is a tile of. A task on the device must leave it as it
// is, even when the task only writes (so nothing was copied to the device first) and even when
// the host changed it meanwhile.
TEST_F(OpenCL, MatrixTilesLeaveWhatIsBetweenTheirColumnsAlone) {
  std::atomic<int> opencl_runs{0};
  const Codelet shift_scale = make_shift_scale(opencl_runs);
  const Codelet negate{.name = "negate", .cpu = [](TaskContext& context) {
                         const hetflow::DataView m = context.buffer(0);
                         for (std::size_t j = 0; j < m.ny(); ++j) {
                           for (std::size_t i = 0; i < m.nx(); ++i) m.as<float>()[j * m.ld() + i] *= -1.0f;
                         }
                       }};
  // One 2n x n column-major matrix, cut into its top and bottom halves: two tiles of n x n with
  // ld = 2n, each lying between the other's columns.
  const std::size_t n = 16, ld = 2 * n;
  std::vector<float> whole(ld * n);
  for (std::size_t k = 0; k < whole.size(); ++k) whole[k] = static_cast<float>(k % 13);
  const std::vector<float> before = whole;
  std::vector<float> source(n * n, 1.0f);
  {
    Runtime rt(config());
    auto hsource = rt.register_matrix(source.data(), n, n, n, "source");
    auto top = rt.register_matrix(whole.data(), n, n, ld, "top");
    auto bottom = rt.register_matrix(whole.data() + n, n, n, ld, "bottom");
    rt.insert(shift_scale, {.data = {R(hsource), W(top)}, .where = Arch::opencl}, 2.0f);  // stays on the device
    rt.insert(negate, {.data = {RW(bottom)}, .where = Arch::cpu});
    rt.wait_all();
    rt.unregister(bottom);
    rt.unregister(top);  // brings the top home: the bottom must keep its new values
  }
  EXPECT_EQ(opencl_runs.load(), 1);
  for (std::size_t j = 0; j < n; ++j) {
    for (std::size_t i = 0; i < ld; ++i) {
      const float expected =
          i < n ? 2.0f + static_cast<float>(i) + 100.0f * static_cast<float>(j) : -before[j * ld + i];
      ASSERT_EQ(whole[j * ld + i], expected) << (i < n ? "top" : "bottom") << " tile at row " << i << ", column " << j;
    }
  }
}

TEST_F(OpenCL, DataCrossesBetweenHostAndDeviceInOneGraph) {
  std::atomic<int> opencl_runs{0};
  const Codelet affine = make_affine(opencl_runs);
  const std::size_t n = 4096;
  std::vector<float> x(n, -1.0f);
  double sum = 0;
  Runtime rt(config());
  auto hx = rt.register_vector(x.data(), n, "x");
  auto hsum = rt.register_variable(sum, "sum");
  // All submitted at once: the order comes from the data alone.
  const Codelet fill{.name = "fill", .cpu = [](TaskContext& context) {
                       float* v = context.buffer(0).as<float>();
                       for (std::size_t i = 0; i < context.buffer(0).nx(); ++i) v[i] = static_cast<float>(i);
                     }};
  const Codelet add_up{.name = "add up", .cpu = [](TaskContext& context) {
                         const float* v = context.buffer(0).as<float>();
                         double total = 0;
                         for (std::size_t i = 0; i < context.buffer(0).nx(); ++i) total += v[i];
                         *context.buffer(1).as<double>() = total;
                       }};
  rt.insert(fill, {.data = {W(hx)}, .where = Arch::cpu});
  rt.insert(affine, {.data = {RW(hx)}, .where = Arch::opencl}, Affine{2.0f, 1.0f});  // 2i + 1
  rt.insert(add_up, {.data = {R(hx), W(hsum)}, .where = Arch::cpu});
  rt.insert(affine, {.data = {RW(hx)}, .where = Arch::opencl}, Affine{2.0f, 1.0f});  // 4i + 3, left on the device
  {
    hetflow::Acquisition view = rt.acquire(hx, AccessMode::R);
    const float* v = view.as<float>();
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(v[i], 4.0f * static_cast<float>(i) + 3.0f) << "at " << i;
  }
  {
    hetflow::Acquisition total = rt.acquire(hsum, AccessMode::R);
    const double expected = static_cast<double>(n) * static_cast<double>(n);  // sum of 2i + 1 for i < n
    EXPECT_EQ(*total.as<double>(), expected);
  }
  // A last device write, then unregister brings it home.
  rt.insert(affine, {.data = {RW(hx)}, .where = Arch::opencl}, Affine{1.0f, -3.0f});  // 4i
  rt.unregister(hx);
  EXPECT_EQ(opencl_runs.load(), 3);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(x[i], 4.0f * static_cast<float>(i)) << "at " << i;
}

// Parts of one vector written at once: the first half on the device, the second on the CPU, and
// the second half read on the device while the CPU writes the first. A device holds a copy of
// the whole vector, so a task that may run there takes its part accesses as whole ones: the
// device's half was lost (the last writer's copy won), and a device copy fetched while the CPU
// wrote its part counted as the latest (a later whole read there saw the old values).
TEST_F(OpenCL, PartAccessesOfATaskThatMayRunOnADeviceAreWholeOnes) {
  constexpr const char* kRangeSource = R"CLC(
__kernel void set_range(__global float* x, float value, uint first, uint end) {
  size_t i = first + get_global_id(0);
  if (i < end) x[i] = value;
}
)CLC";
  struct Range {
    float value;
    cl_uint first;
    cl_uint end;
    bool slowly = false;  // on the CPU: the device's tasks meanwhile run at the same time
  };
  const Codelet set_range{
      .name = "set_range",
      .cpu =
          [](TaskContext& context) {
            const Range& range = context.arg<Range>();
            if (range.slowly) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            float* x = context.buffer(0).as<float>();
            for (cl_uint i = range.first; i < range.end; ++i) x[i] = range.value;
          },
      .opencl =
          [kRangeSource](TaskContext& context) {
            const Range& range = context.arg<Range>();
            if (range.end <= range.first) return;  // a reader of its part
            cl_kernel k = cl::kernel(context, kRangeSource, "set_range");
            cl::set_args(k, cl::buffer(context, 0), range.value, range.first, range.end);
            enqueue(context, k, {range.end - range.first});
          },
  };
  std::atomic<int> opencl_runs{0};
  const Codelet affine = make_affine(opencl_runs);
  constexpr cl_uint n = 64;
  for (int round = 0; round < 3; ++round) {
    std::vector<float> x(n, 0.0f);
    std::vector<float> y(n, 0.0f);
    Runtime rt(config());
    auto hx = rt.register_vector(x.data(), n, "x");
    auto hy = rt.register_vector(y.data(), n, "y");
    rt.insert(set_range, {.data = {hetflow::PartW(hx)}, .where = Arch::cpu}, Range{2.0f, n / 2, n, true});
    rt.insert(set_range, {.data = {hetflow::PartW(hx)}, .where = Arch::opencl}, Range{1.0f, 0, n / 2});
    rt.insert(set_range, {.data = {hetflow::PartW(hy)}, .where = Arch::cpu}, Range{7.0f, n / 2, n, true});
    rt.insert(set_range, {.data = {hetflow::PartR(hy)}, .where = Arch::opencl}, Range{0.0f, 0, 0});
    rt.insert(affine, {.data = {RW(hy)}, .where = Arch::opencl}, Affine{1.0f, 0.0f});
    rt.unregister(hx);
    rt.unregister(hy);
    ASSERT_EQ(x[0], 1.0f) << "round " << round << ": the device's half";
    ASSERT_EQ(x[n - 1], 2.0f) << "round " << round << ": the CPU's half";
    ASSERT_EQ(y[n - 1], 7.0f) << "round " << round << ": the device's copy of y";
  }
}

// ---- programs ------------------------------------------------------------------------------------

struct KernelRequest {
  const char* source;
  const char* name;
  const char* options;
  cl_kernel* out;
};

const Codelet kKernelProbe{.name = "kernel probe", .opencl = [](TaskContext& context) {
                             const KernelRequest& request = context.arg<KernelRequest>();
                             *request.out = cl::kernel(context, request.source, request.name, request.options);
                           }};

TEST_F(OpenCL, ProgramCacheHandsOutTheSameKernel) {
  Runtime rt(config());
  cl_kernel first = nullptr, again = nullptr, sibling = nullptr, other_options = nullptr;
  rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kVectorSource, "axpy", "", &first}).get();
  rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kVectorSource, "axpy", "", &again}).get();
  rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kVectorSource, "affine", "", &sibling}).get();
  rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kVectorSource, "axpy", "-DUNUSED=1", &other_options})
      .get();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(again, first);
  EXPECT_NE(sibling, first);
  EXPECT_NE(other_options, first) << "other build options are another program";

  // The cached kernel is a live one of the worker's device.
  char name[64] = {};
  ASSERT_EQ(clGetKernelInfo(first, CL_KERNEL_FUNCTION_NAME, sizeof(name) - 1, name, nullptr), CL_SUCCESS);
  EXPECT_STREQ(name, "axpy");
}

TEST_F(OpenCL, BuildErrorCarriesTheBuildLog) {
  Runtime rt(config());
  cl_kernel k = nullptr;
  constexpr const char* kBroken = "__kernel void broken(__global float* x) { x[0] = no_such_identifier_xq; }";
  auto f = rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kBroken, "broken", "", &k});
  try {
    f.get();
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'broken'"), std::string::npos) << message;
    EXPECT_NE(message.find("CL_BUILD_PROGRAM_FAILURE"), std::string::npos) << message;
    // Only the compiler's log mentions the identifier.
    EXPECT_NE(message.find("no_such_identifier_xq"), std::string::npos) << message;
  }
  EXPECT_EQ(k, nullptr);
}

// Build options no earlier build in this process (nor a compiler's cache on disk) has seen.
std::string fresh_build_options() {
  static std::atomic<unsigned> counter{0};
  return "-DHETFLOW_TEST_NONCE=" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "_" +
         std::to_string(counter++);
}

TEST_F(OpenCL, PreparedProgramServesTheKernelsOfItsSource) {
  Runtime rt(config());
  const std::string options = fresh_build_options();
  cl::prepare_program(rt, kVectorSource, options);
  cl_kernel k = nullptr;
  rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kVectorSource, "axpy", options.c_str(), &k}).get();
  ASSERT_NE(k, nullptr);
  cl_program program = nullptr;
  ASSERT_EQ(clGetKernelInfo(k, CL_KERNEL_PROGRAM, sizeof(program), &program, nullptr), CL_SUCCESS);
  cl_device_id device = nullptr;
  ASSERT_EQ(clGetProgramInfo(program, CL_PROGRAM_DEVICES, sizeof(device), &device, nullptr), CL_SUCCESS);
  std::string built_with(options.size() + 64, '\0');
  std::size_t length = 0;
  ASSERT_EQ(
      clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_OPTIONS, built_with.size(), built_with.data(), &length),
      CL_SUCCESS);
  built_with.resize(length > 0 ? length - 1 : 0);
  EXPECT_NE(built_with.find(options), std::string::npos) << built_with;
}

TEST_F(OpenCL, PrepareProgramReportsABuildFailureWithItsLog) {
  Runtime rt(config());
  constexpr const char* kBroken = "__kernel void broken(__global float* x) { x[0] = prepared_but_undeclared; }";
  try {
    cl::prepare_program(rt, kBroken);
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("CL_BUILD_PROGRAM_FAILURE"), std::string::npos) << message;
    EXPECT_NE(message.find("prepared_but_undeclared"), std::string::npos) << message;
  }
  // The runtime goes on: later work is not affected by the failed build.
  cl_kernel k = nullptr;
  rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kVectorSource, "axpy", "", &k}).get();
  EXPECT_NE(k, nullptr);
}

TEST(OpenCLPrepare, WithoutOpenCLWorkersDoesNothing) {
  Runtime rt(Config{.ncpus = 1});
  EXPECT_NO_THROW(cl::prepare_program(rt, "this is not OpenCL C"));
}

TEST_F(OpenCL, BuildTimeIsNotLearnedByThePerformanceModel) {
  auto model = std::make_shared<hetflow::PerfModel>("opencl-build-probe");
  struct Probe {
    std::string options;
    double kernel_call_seconds = 0;
  };
  Codelet probe{.name = "build probe",
                .opencl =
                    [](TaskContext& context) {
                      auto* request = context.arg<Probe*>();
                      const auto started = std::chrono::steady_clock::now();
                      static_cast<void>(cl::kernel(context, kVectorSource, "axpy", request->options));
                      request->kernel_call_seconds =
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
                    },
                .model = model};
  Probe first{fresh_build_options()};
  {
    Runtime rt(config());
    rt.insert(probe, {.where = Arch::opencl}, &first).get();
  }
  const auto entries = model->entries();
  ASSERT_EQ(entries.size(), 1U);
  EXPECT_EQ(entries[0].count, 1U);
  // The kernel() call built the program; what the model learned is the task without the build.
  EXPECT_LT(entries[0].max, first.kernel_call_seconds);
}

TEST_F(OpenCL, UnknownKernelNameIsNamed) {
  Runtime rt(config());
  cl_kernel k = nullptr;
  auto f = rt.insert(kKernelProbe, {.where = Arch::opencl}, KernelRequest{kVectorSource, "saxpy", "", &k});
  try {
    f.get();
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("no kernel named 'saxpy'"), std::string::npos) << message;
    EXPECT_NE(message.find("axpy"), std::string::npos) << "the kernels it has: " << message;
  }
}

TEST_F(OpenCL, WrongArgumentSizeNamesTheArgument) {
  Runtime rt(config());
  const Codelet wrong{.name = "wrong argument", .opencl = [](TaskContext& context) {
                        cl_kernel k = cl::kernel(context, kVectorSource, "axpy");
                        const double alpha = 2.0;  // the kernel's alpha is a float
                        cl::set_arg(k, 0, sizeof(alpha), &alpha);
                      }};
  try {
    rt.insert(wrong, {.where = Arch::opencl}).get();
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    EXPECT_NE(std::string(e.what()).find("argument 0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'axpy'"), std::string::npos) << e.what();
  }
}

TEST_F(OpenCL, LocalMemoryArguments) {
  constexpr const char* kReverse = R"CLC(
__kernel void reverse_groups(__global const float* in, __global float* out, __local float* scratch) {
  size_t lid = get_local_id(0);
  size_t size = get_local_size(0);
  scratch[lid] = in[get_global_id(0)];
  barrier(CLK_LOCAL_MEM_FENCE);
  out[get_global_id(0)] = scratch[size - 1 - lid];
}
)CLC";
  constexpr std::size_t kGroup = 8;
  const Codelet reverse{
      .name = "reverse groups", .opencl = [&](TaskContext& context) {
        cl_kernel k = cl::kernel(context, kReverse, "reverse_groups");
        cl::set_args(k, cl::buffer(context, 0), cl::buffer(context, 1), cl::LocalMemory{kGroup * sizeof(float)});
        std::size_t global = context.buffer(0).nx();
        std::size_t local = kGroup;
        cl::check(
            clEnqueueNDRangeKernel(cl::device(context).queue, k, 1, nullptr, &global, &local, 0, nullptr, nullptr),
            "clEnqueueNDRangeKernel");
      }};
  std::vector<float> in(4 * kGroup);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
  std::vector<float> out(in.size(), -1.0f);
  {
    Runtime rt(config());
    auto hin = rt.register_vector(in.data(), in.size(), "in");
    auto hout = rt.register_vector(out.data(), out.size(), "out");
    rt.insert(reverse, {.data = {R(hin), W(hout)}, .where = Arch::opencl}).get();
    rt.unregister(hout);
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::size_t group_start = i / kGroup * kGroup;
    ASSERT_EQ(out[i], in[group_start + (kGroup - 1 - (i - group_start))]) << "at " << i;
  }
}

// ---- memory pressure -----------------------------------------------------------------------------

/// A memory node that counts what the engine does with the one it wraps.
class CountingMemory final : public hetflow::ext::MemoryNode {
 public:
  explicit CountingMemory(std::shared_ptr<hetflow::ext::MemoryNode> inner) : inner_(std::move(inner)) {}
  [[nodiscard]] std::string name() const override { return inner_->name(); }
  [[nodiscard]] std::size_t capacity() const noexcept override { return inner_->capacity(); }
  [[nodiscard]] void* allocate(std::size_t bytes) override {
    void* buffer = inner_->allocate(bytes);
    if (buffer != nullptr) {
      std::lock_guard lock(mutex_);
      ++allocations_;
      live_ += bytes;
      peak_ = std::max(peak_, live_);
    }
    return buffer;
  }
  void free(void* buffer, std::size_t bytes) noexcept override {
    {
      std::lock_guard lock(mutex_);
      ++frees_;
      live_ -= bytes;
    }
    inner_->free(buffer, bytes);
  }
  [[nodiscard]] std::unique_ptr<hetflow::ext::Transfer> copy_from_host(void* buffer, const void* host,
                                                                       std::size_t bytes) override {
    return inner_->copy_from_host(buffer, host, bytes);
  }
  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override {
    {
      std::lock_guard lock(mutex_);
      ++copies_to_host_;
    }
    inner_->copy_to_host(host, buffer, bytes);
  }

  struct Counts {
    std::size_t allocations, frees, copies_to_host, peak_bytes;
  };
  [[nodiscard]] Counts counts() const {
    std::lock_guard lock(mutex_);
    return {allocations_, frees_, copies_to_host_, peak_};
  }

 private:
  std::shared_ptr<hetflow::ext::MemoryNode> inner_;
  mutable std::mutex mutex_;
  std::size_t allocations_ = 0, frees_ = 0, copies_to_host_ = 0, live_ = 0, peak_ = 0;
};

/// The OpenCL driver with its memory node wrapped in a CountingMemory.
class CountingDriver final : public hetflow::ext::Driver {
 public:
  explicit CountingDriver(std::shared_ptr<hetflow::ext::Driver> inner)
      : inner_(std::move(inner)), memory_(std::make_shared<CountingMemory>(inner_->memory_node(0))) {}
  [[nodiscard]] std::string_view name() const override { return inner_->name(); }
  [[nodiscard]] Arch arch() const override { return inner_->arch(); }
  [[nodiscard]] unsigned worker_count() const override { return 1; }
  [[nodiscard]] std::shared_ptr<hetflow::ext::MemoryNode> memory_node(unsigned /*index*/) override { return memory_; }
  void start_worker(unsigned index) override { inner_->start_worker(index); }
  void finish_task(unsigned index) override { inner_->finish_task(index); }
  void worker_idle(unsigned index) override { inner_->worker_idle(index); }
  void stop_worker(unsigned index) override { inner_->stop_worker(index); }
  [[nodiscard]] void* worker_state(unsigned index) override { return inner_->worker_state(index); }
  [[nodiscard]] const CountingMemory& memory() const { return *memory_; }

 private:
  std::shared_ptr<hetflow::ext::Driver> inner_;
  std::shared_ptr<CountingMemory> memory_;
};

TEST_F(OpenCL, EvictionUnderAMemoryLimitKeepsResultsRight) {
  std::atomic<int> opencl_runs{0};
  const Codelet axpy = make_axpy(opencl_runs);
  const std::size_t vectors = 16, n = 4096, rounds = 3;
  const std::size_t bytes = n * sizeof(float);
  const std::size_t limit = 4 * bytes;  // a task needs 2 buffers; all of them need 16
  auto counting = std::make_shared<CountingDriver>(driver_);

  std::vector<std::vector<float>> data(vectors, std::vector<float>(n));
  for (std::size_t v = 0; v < vectors; ++v) {
    for (std::size_t i = 0; i < n; ++i) data[v][i] = static_cast<float>((v + i) % 5);
  }
  std::vector<std::vector<float>> expected = data;
  // x_v += 2 x_(v+1), round after round, in submission order (on the host, the same in sequence).
  for (std::size_t r = 0; r < rounds; ++r) {
    for (std::size_t v = 0; v < vectors; ++v) {
      const auto& x = expected[(v + 1) % vectors];
      for (std::size_t i = 0; i < n; ++i) expected[v][i] = 2.0f * x[i] + expected[v][i];
    }
  }

  Runtime rt(Config{.ncpus = 1, .memory_limits = {{1, limit}}, .drivers = {counting}});
  std::vector<hetflow::DataHandle> handles;
  for (std::size_t v = 0; v < vectors; ++v) handles.push_back(rt.register_vector(data[v].data(), n));
  for (std::size_t r = 0; r < rounds; ++r) {
    for (std::size_t v = 0; v < vectors; ++v) {
      rt.insert(axpy, {.data = {R(handles[(v + 1) % vectors]), RW(handles[v])}, .where = Arch::opencl}, 2.0f);
    }
  }
  rt.wait_all();
  const CountingMemory::Counts during = counting->memory().counts();
  for (auto& handle : handles) rt.unregister(handle);

  EXPECT_EQ(opencl_runs.load(), static_cast<int>(rounds * vectors));
  EXPECT_LE(during.peak_bytes, limit) << "the engine kept more than the limit on the device";
  EXPECT_GT(during.frees, 0u) << "nothing was evicted: the limit did not bite";
  EXPECT_GT(during.copies_to_host, 0u) << "evicted results were never written back";
  for (std::size_t v = 0; v < vectors; ++v) {
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(data[v][i], expected[v][i]) << "vector " << v << " at " << i;
  }
}

// ---- waits inside device tasks under a memory limit ----------------------------------------------

// A device task that waits for a future runs other tasks of its worker meanwhile; one whose data
// cannot fit beside what the waiting task holds (until it ends) used to wait for room for ever.
struct NestedUnderALimit {
  static constexpr std::size_t kFloats = 6000;  // 24,000 bytes: two fit in the limit, three do not
  static constexpr std::size_t kLimit = 64 * 1024;
  std::vector<float> a = std::vector<float>(kFloats), b = std::vector<float>(kFloats), c = std::vector<float>(kFloats);
};

TEST_F(OpenCL, ATaskThatCannotFitBesideAWaitingTaskRunsOnceTheWaitIsOver) {
  NestedUnderALimit data;
  Runtime rt(Config{.ncpus = 1, .memory_limits = {{1, NestedUnderALimit::kLimit}}, .drivers = {driver_}});
  std::atomic<bool> waiter_done{false};
  std::atomic<bool> ran_after_the_wait{false};
  const Codelet waiter{.name = "waiter", .opencl = [&](TaskContext&) {
                         rt.submit([] { std::this_thread::sleep_for(std::chrono::milliseconds(200)); }).get();
                         waiter_done = true;
                       }};
  const Codelet both{.name = "both", .opencl = [&](TaskContext&) { ran_after_the_wait = waiter_done.load(); }};
  auto ha = rt.register_vector(data.a.data(), data.a.size());
  auto hb = rt.register_vector(data.b.data(), data.b.size());
  auto hc = rt.register_vector(data.c.data(), data.c.size());
  auto first = rt.insert(waiter, {.data = {RW(ha)}, .where = Arch::opencl});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the waiter waits by now
  auto second = rt.insert(both, {.data = {RW(hb), RW(hc)}, .where = Arch::opencl});
  ASSERT_TRUE(first.wait_for(std::chrono::seconds(60)));
  ASSERT_TRUE(second.wait_for(std::chrono::seconds(60)));
  EXPECT_NO_THROW(first.get());
  EXPECT_NO_THROW(second.get());
  EXPECT_TRUE(ran_after_the_wait.load());
  rt.wait_all();
}

TEST_F(OpenCL, AWaitedTaskThatCannotFitBesideItsWaiterFailsSayingWhy) {
  NestedUnderALimit data;
  Runtime rt(Config{.ncpus = 1, .memory_limits = {{1, NestedUnderALimit::kLimit}}, .drivers = {driver_}});
  auto ha = rt.register_vector(data.a.data(), data.a.size());
  auto hb = rt.register_vector(data.b.data(), data.b.size());
  auto hc = rt.register_vector(data.c.data(), data.c.size());
  const Codelet both{.name = "both", .opencl = [](TaskContext&) {}};
  std::string told;
  const Codelet waiter{.name = "waiter", .opencl = [&](TaskContext&) {
                         try {
                           rt.insert(both, {.data = {RW(hb), RW(hc)}, .where = Arch::opencl}).get();
                         } catch (const hetflow::Error& error) {
                           told = error.what();
                         }
                       }};
  auto first = rt.insert(waiter, {.data = {RW(ha)}, .where = Arch::opencl});
  ASSERT_TRUE(first.wait_for(std::chrono::seconds(60))) << "the wait inside the task never ended";
  first.get();
  EXPECT_NE(told.find("could never fit"), std::string::npos) << told;
}

// ---- misuse --------------------------------------------------------------------------------------

TEST_F(OpenCL, DeviceAndKernelOutsideAnOpenCLWorkerThrow) {
  Runtime rt(config());
  const Codelet misplaced{.name = "misplaced", .cpu = [](TaskContext& context) { (void)cl::device(context); }};
  try {
    rt.insert(misplaced, {.where = Arch::cpu}).get();
    ADD_FAILURE() << "expected hetflow::Error";
  } catch (const hetflow::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("hetflow::opencl::device"), std::string::npos) << message;
    EXPECT_NE(message.find("'misplaced'"), std::string::npos) << message;
    EXPECT_NE(message.find("not an OpenCL one"), std::string::npos) << message;
  }
  const Codelet misplaced_kernel{.name = "misplaced kernel",
                                 .cpu = [](TaskContext& context) { (void)cl::kernel(context, kVectorSource, "axpy"); }};
  EXPECT_THROW(rt.insert(misplaced_kernel, {.where = Arch::cpu}).get(), hetflow::Error);
}

}  // namespace
