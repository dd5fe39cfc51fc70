// The CUDA driver: kernels and cuBLAS/cuSOLVER on CUDA workers, data moving between host and
// GPU memory, eviction under a memory limit, and the driver's behaviour where there is no GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "hetflow/cuda.hpp"
#include "hetflow/runtime.hpp"
#include "kernels.hpp"
#include "test_support.hpp"

namespace {

using hetflow::AccessMode;
using hetflow::Arch;
using hetflow::Codelet;
using hetflow::Config;
using hetflow::DataHandle;
using hetflow::Runtime;
using hetflow::TaskContext;
using hetflow::test::ScopedEnv;

std::string no_gpu_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  static_cast<void>(cudaGetLastError());
  if (status != cudaSuccess) return std::string("no CUDA GPU (cudaGetDeviceCount: ") + cudaGetErrorString(status) + ")";
  return "no CUDA GPU (cudaGetDeviceCount: " + std::to_string(count) + " devices)";
}

/// Tests that need a GPU: skipped, with the reason, where there is none.
class CudaGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (hetflow::cuda::device_count() == 0) GTEST_SKIP() << no_gpu_reason();
  }
};

/// Whether `ptr` is memory of GPU `device` (what a CUDA implementation must receive).
bool is_device_memory(const void* ptr, int device) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice && attributes.device == device;
}

/// Failures seen inside implementations, which run on worker threads; checked by the test after.
struct Observations {
  std::atomic<int> cpu_runs{0};
  std::atomic<int> cuda_runs{0};
  std::atomic<int> bad_pointers{0};
};

/// x *= factor (the task's argument), on either architecture.
Codelet scale_codelet(Observations& seen) {
  Codelet codelet;
  codelet.name = "scale";
  codelet.cpu = [&seen](TaskContext& context) {
    seen.cpu_runs.fetch_add(1);
    const auto x = context.buffer(0);
    const double factor = context.arg<double>();
    for (std::size_t i = 0; i < x.elements(); ++i) x.as<double>()[i] *= factor;
  };
  codelet.cuda = [&seen](TaskContext& context) {
    seen.cuda_runs.fetch_add(1);
    const auto x = context.buffer(0);
    if (!is_device_memory(x.ptr, hetflow::cuda::device(context))) seen.bad_pointers.fetch_add(1);
    hetflow::test::launch_scale(hetflow::cuda::stream(context), x.as<double>(), x.elements(), context.arg<double>());
  };
  return codelet;
}

/// y += a * x (a is the task's argument), on either architecture.
Codelet axpy_codelet(Observations& seen) {
  Codelet codelet;
  codelet.name = "axpy";
  codelet.cpu = [&seen](TaskContext& context) {
    seen.cpu_runs.fetch_add(1);
    const auto x = context.buffer(0);
    const auto y = context.buffer(1);
    const double a = context.arg<double>();
    for (std::size_t i = 0; i < x.elements(); ++i) y.as<double>()[i] += a * x.as<double>()[i];
  };
  codelet.cuda = [&seen](TaskContext& context) {
    seen.cuda_runs.fetch_add(1);
    const auto x = context.buffer(0);
    const auto y = context.buffer(1);
    const int device = hetflow::cuda::device(context);
    if (!is_device_memory(x.ptr, device) || !is_device_memory(y.ptr, device)) seen.bad_pointers.fetch_add(1);
    hetflow::test::launch_axpy(hetflow::cuda::stream(context), x.elements(), context.arg<double>(), x.as<double>(),
                               y.as<double>());
  };
  return codelet;
}

// --- With a GPU --------------------------------------------------------------------------------

TEST_F(CudaGpu, VectorCodeletGivesTheSameResultsOnCpuAndGpu) {
  // Odd-sized and above the page-locking threshold, so that both kinds of host buffers are used.
  const std::size_t n = (std::size_t{1} << 20) + 3;
  std::vector<double> x_cpu(n), y_cpu(n), x_gpu(n), y_gpu(n);
  for (std::size_t i = 0; i < n; ++i) {
    x_cpu[i] = x_gpu[i] = 0.5 * static_cast<double>(i) - 7.0;
    y_cpu[i] = y_gpu[i] = static_cast<double>(i % 97);
  }
  Observations seen;
  const Codelet scale = scale_codelet(seen);
  const Codelet axpy = axpy_codelet(seen);
  {
    Runtime rt(Config{.ncpus = 2, .drivers = {hetflow::cuda::make_driver()}});
    DataHandle xc = rt.register_vector(x_cpu.data(), n);
    DataHandle yc = rt.register_vector(y_cpu.data(), n);
    DataHandle xg = rt.register_vector(x_gpu.data(), n);
    DataHandle yg = rt.register_vector(y_gpu.data(), n);
    rt.insert(scale, {.data = {RW(xc)}, .where = Arch::cpu}, 3.0);
    rt.insert(axpy, {.data = {R(xc), RW(yc)}, .where = Arch::cpu}, 2.0);
    rt.insert(scale, {.data = {RW(xg)}, .where = Arch::cuda}, 3.0);
    rt.insert(axpy, {.data = {R(xg), RW(yg)}, .where = Arch::cuda}, 2.0);
    rt.wait_all();
  }
  EXPECT_EQ(seen.cpu_runs.load(), 2);
  EXPECT_EQ(seen.cuda_runs.load(), 2);
  EXPECT_EQ(seen.bad_pointers.load(), 0) << "a CUDA implementation got a buffer that is not GPU memory";
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = 3.0 * (0.5 * static_cast<double>(i) - 7.0);
    const double y = static_cast<double>(i % 97) + 2.0 * x;
    if (x_gpu[i] != x_cpu[i] || x_gpu[i] != x || std::abs(y_gpu[i] - y_cpu[i]) > 1e-12 * std::abs(y) ||
        std::abs(y_cpu[i] - y) > 1e-12 * std::abs(y)) {
      if (++mismatches <= 5)
        ADD_FAILURE() << "at " << i << ": cpu " << y_cpu[i] << ", gpu " << y_gpu[i] << ", want " << y;
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST_F(CudaGpu, CublasDgemmOnAMatrixTileMatchesACpuLoop) {
  // C's tile (rows 5..52, columns 3..42 of a 70-row matrix) = A * B + 0.5 * tile.
  const int m = 48, n = 40, k = 32, ldc = 70, cols = 50, row0 = 5, col0 = 3;
  std::vector<double> a(static_cast<std::size_t>(m) * k), b(static_cast<std::size_t>(k) * n);
  std::vector<double> c(static_cast<std::size_t>(ldc) * cols);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = std::sin(static_cast<double>(i));
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::cos(static_cast<double>(i) * 0.7);
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = static_cast<double>(i) * 0.01;
  std::vector<double> want = c;
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double sum = 0;
      for (int p = 0; p < k; ++p)
        sum += a[static_cast<std::size_t>(i + p * m)] * b[static_cast<std::size_t>(p + j * k)];
      double& cij = want[static_cast<std::size_t>((row0 + i) + (col0 + j) * ldc)];
      cij = sum + 0.5 * cij;
    }
  }

  std::atomic<int> bound_to_stream{0};
  Codelet gemm;
  gemm.name = "dgemm";
  gemm.cuda = [&](TaskContext& context) {
    const auto av = context.buffer(0);
    const auto bv = context.buffer(1);
    const auto cv = context.buffer(2);
    cublasHandle_t handle = hetflow::cuda::cublas(context);
    cudaStream_t on = nullptr;
    if (cublasGetStream(handle, &on) == CUBLAS_STATUS_SUCCESS && on == hetflow::cuda::stream(context)) {
      bound_to_stream.fetch_add(1);
    }
    const double alpha = 1.0, beta = 0.5;
    const cublasStatus_t status =
        cublasDgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cv.nx()), static_cast<int>(cv.ny()),
                    static_cast<int>(av.ny()), &alpha, av.as<double>(), static_cast<int>(av.ld()), bv.as<double>(),
                    static_cast<int>(bv.ld()), &beta, cv.as<double>(), static_cast<int>(cv.ld()));
    if (status != CUBLAS_STATUS_SUCCESS)
      throw hetflow::Error(std::string("cublasDgemm: ") + cublasGetStatusString(status));
  };
  {
    Runtime rt(Config{.ncpus = 1, .drivers = {hetflow::cuda::make_driver()}});
    DataHandle ha = rt.register_matrix(a.data(), m, k, m);
    DataHandle hb = rt.register_matrix(b.data(), k, n, k);
    DataHandle hc = rt.register_matrix(c.data() + row0 + col0 * ldc, m, n, ldc);
    rt.insert(gemm, {.data = {R(ha), R(hb), RW(hc)}}).get();
    rt.unregister(hc);
  }
  EXPECT_EQ(bound_to_stream.load(), 1) << "the cuBLAS handle is not bound to the task's stream";
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (std::abs(c[i] - want[i]) > 1e-12 * std::max(1.0, std::abs(want[i]))) {
      if (++mismatches <= 5)
        ADD_FAILURE() << "element " << i << " (row " << i % ldc << ", column " << i / ldc << "): " << c[i] << ", want "
                      << want[i];
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST_F(CudaGpu, NeighbouringTileWrittenOnTheHostSurvivesTheGpuTileComingBack) {
  // Two tiles of one column-major matrix interleave in memory: each column holds the top tile's
  // rows, then the bottom tile's. The GPU scales the top tile while a CPU task writes the bottom
  // one; bringing the top tile back must not put old values into the bottom tile's rows.
  const std::size_t rows = 64, cols = 32, half = rows / 2;
  std::vector<double> matrix(rows * cols, 1.0);
  Observations seen;
  const Codelet scale = scale_codelet(seen);
  Codelet fill;
  fill.name = "fill";
  fill.cpu = [](TaskContext& context) {
    const auto tile = context.buffer(0);
    for (std::size_t j = 0; j < tile.ny(); ++j) {
      for (std::size_t i = 0; i < tile.nx(); ++i) tile.as<double>()[i + j * tile.ld()] = 7.0;
    }
  };
  Codelet scale_tile;
  scale_tile.name = "scale tile";
  scale_tile.cuda = [](TaskContext& context) {
    const auto tile = context.buffer(0);
    for (std::size_t j = 0; j < tile.ny(); ++j) {
      hetflow::test::launch_scale(hetflow::cuda::stream(context), tile.as<double>() + j * tile.ld(), tile.nx(), 3.0);
    }
  };
  {
    Runtime rt(Config{.ncpus = 1, .drivers = {hetflow::cuda::make_driver()}});
    DataHandle top = rt.register_matrix(matrix.data(), half, cols, rows);
    DataHandle bottom = rt.register_matrix(matrix.data() + half, half, cols, rows);
    auto on_gpu = rt.insert(scale_tile, {.data = {RW(top)}, .where = Arch::cuda});
    // After the GPU task, hence after the top tile's upload: the GPU's copy of the bottom rows
    // is the old one.
    auto on_cpu = rt.insert(fill, {.data = {W(bottom)}, .after = {on_gpu}, .where = Arch::cpu});
    on_gpu.get();
    on_cpu.get();
    rt.unregister(top);
    rt.unregister(bottom);
  }
  for (std::size_t j = 0; j < cols; ++j) {
    for (std::size_t i = 0; i < rows; ++i) {
      ASSERT_EQ(matrix[i + j * rows], i < half ? 3.0 : 7.0) << "row " << i << ", column " << j;
    }
  }
}

TEST_F(CudaGpu, DataCrossesBetweenCpuAndGpuInOneGraph) {
  const std::size_t n = 100'003;
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<double>(i);
  std::vector<double> want = x;
  Observations seen;
  const Codelet scale = scale_codelet(seen);
  std::atomic<int> cpu_saw_host_buffer{0};
  Codelet add_one;
  add_one.name = "add one";
  add_one.cpu = [&](TaskContext& context) {
    const auto v = context.buffer(0);
    if (v.ptr == x.data()) cpu_saw_host_buffer.fetch_add(1);
    for (std::size_t i = 0; i < v.elements(); ++i) v.as<double>()[i] += 1.0;
  };
  const int rounds = 8;
  {
    Runtime rt(Config{.ncpus = 2, .drivers = {hetflow::cuda::make_driver()}});
    DataHandle h = rt.register_vector(x.data(), n);
    for (int round = 0; round < rounds; ++round) {
      rt.insert(add_one, {.data = {RW(h)}, .where = Arch::cpu});
      rt.insert(scale, {.data = {RW(h)}, .where = Arch::cuda}, 2.0);
      // A reader in between: the host must see the GPU's result, not the host buffer's old one.
      if (round == rounds / 2) {
        auto acquisition = rt.acquire(h, AccessMode::R);
        for (std::size_t i = 0; i < n; i += n / 7) {
          double expected = static_cast<double>(i);
          for (int r = 0; r <= round; ++r) expected = (expected + 1.0) * 2.0;
          EXPECT_EQ(acquisition.as<double>()[i], expected) << "after round " << round << ", element " << i;
        }
      }
    }
    rt.unregister(h);
  }
  for (int round = 0; round < rounds; ++round) {
    for (double& v : want) v = (v + 1.0) * 2.0;
  }
  EXPECT_EQ(cpu_saw_host_buffer.load(), rounds) << "CPU implementations should get the user's buffer";
  EXPECT_EQ(seen.cuda_runs.load(), rounds);
  EXPECT_EQ(seen.bad_pointers.load(), 0);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(x[i], want[i]) << "element " << i;
}

TEST_F(CudaGpu, MemoryLimitSmallerThanTheDataEvictsAndKeepsResultsRight) {
  // Eight 2 MiB vectors through a GPU allowed three of them: each task needs two, so replicas,
  // most of them dirty, must keep leaving and coming back.
  const std::size_t n = std::size_t{1} << 18, vectors = 8, rounds = 3;
  const std::size_t bytes = n * sizeof(double);
  std::vector<std::vector<double>> data(vectors, std::vector<double>(n));
  for (std::size_t v = 0; v < vectors; ++v) {
    for (std::size_t i = 0; i < n; ++i) data[v][i] = static_cast<double>((v + 1) * 1000 + i % 1000);
  }
  auto want = data;
  for (std::size_t round = 0; round < rounds; ++round) {
    for (std::size_t v = 0; v < vectors; ++v) {
      const auto& from = want[v];
      auto& to = want[(v + 1) % vectors];
      for (std::size_t i = 0; i < n; ++i) to[i] += 0.5 * from[i];
    }
  }
  Observations seen;
  const Codelet axpy = axpy_codelet(seen);
  {
    Runtime rt(Config{
        .ncpus = 1, .memory_limits = {{1, 3 * bytes}}, .drivers = {hetflow::cuda::make_driver({.max_devices = 1})}});
    std::vector<DataHandle> handles;
    for (auto& v : data) handles.push_back(rt.register_vector(v.data(), n));
    for (std::size_t round = 0; round < rounds; ++round) {
      for (std::size_t v = 0; v < vectors; ++v) {
        rt.insert(axpy, {.data = {R(handles[v]), RW(handles[(v + 1) % vectors])}, .where = Arch::cuda}, 0.5);
      }
    }
    rt.wait_all();
    for (auto& h : handles) rt.unregister(h);
  }
  EXPECT_EQ(seen.cuda_runs.load(), static_cast<int>(rounds * vectors));
  EXPECT_EQ(seen.bad_pointers.load(), 0);
  for (std::size_t v = 0; v < vectors; ++v) {
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(data[v][i], want[v][i]) << "vector " << v << ", element " << i;
  }
}

TEST_F(CudaGpu, CusolverCholeskyOnTheTaskStream) {
  const int n = 6;
  std::vector<double> a(static_cast<std::size_t>(n * n));
  // Symmetric and diagonally dominant, hence positive definite.
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < n; ++i) a[static_cast<std::size_t>(i + j * n)] = i == j ? 10.0 + i : 1.0 / (1.0 + i + j);
  }
  std::vector<double> l(a.size(), 0.0);  // the CPU's Cholesky factor
  for (int j = 0; j < n; ++j) {
    double d = a[static_cast<std::size_t>(j + j * n)];
    for (int p = 0; p < j; ++p) d -= l[static_cast<std::size_t>(j + p * n)] * l[static_cast<std::size_t>(j + p * n)];
    l[static_cast<std::size_t>(j + j * n)] = std::sqrt(d);
    for (int i = j + 1; i < n; ++i) {
      double s = a[static_cast<std::size_t>(i + j * n)];
      for (int p = 0; p < j; ++p) s -= l[static_cast<std::size_t>(i + p * n)] * l[static_cast<std::size_t>(j + p * n)];
      l[static_cast<std::size_t>(i + j * n)] = s / l[static_cast<std::size_t>(j + j * n)];
    }
  }
  int info = -1;
  Codelet potrf;
  potrf.name = "potrf";
  potrf.cuda = [](TaskContext& context) {
    const auto av = context.buffer(0);
    int* device_info = context.buffer(1).as<int>();
    cusolverDnHandle_t handle = hetflow::cuda::cusolver(context);
    cudaStream_t stream = hetflow::cuda::stream(context);
    const int order = static_cast<int>(av.nx());
    const int lda = static_cast<int>(av.ld());
    int lwork = 0;
    if (cusolverDnDpotrf_bufferSize(handle, CUBLAS_FILL_MODE_LOWER, order, av.as<double>(), lda, &lwork) !=
        CUSOLVER_STATUS_SUCCESS) {
      throw hetflow::Error("cusolverDnDpotrf_bufferSize failed");
    }
    void* work = nullptr;
    if (cudaMallocAsync(&work, static_cast<std::size_t>(std::max(lwork, 1)) * sizeof(double), stream) != cudaSuccess) {
      throw hetflow::Error("cudaMallocAsync failed");
    }
    const cusolverStatus_t status = cusolverDnDpotrf(handle, CUBLAS_FILL_MODE_LOWER, order, av.as<double>(), lda,
                                                     static_cast<double*>(work), lwork, device_info);
    static_cast<void>(cudaFreeAsync(work, stream));
    if (status != CUSOLVER_STATUS_SUCCESS) throw hetflow::Error("cusolverDnDpotrf failed");
  };
  {
    Runtime rt(Config{.ncpus = 1, .drivers = {hetflow::cuda::make_driver()}});
    DataHandle ha = rt.register_matrix(a.data(), n, n, n);
    DataHandle hinfo = rt.register_variable(info);
    rt.insert(potrf, {.data = {RW(ha), W(hinfo)}}).get();
  }
  EXPECT_EQ(info, 0);
  for (int j = 0; j < n; ++j) {
    for (int i = j; i < n; ++i) {
      const auto at = static_cast<std::size_t>(i + j * n);
      EXPECT_NEAR(a[at], l[at], 1e-12) << "L(" << i << ", " << j << ")";
    }
  }
}

TEST_F(CudaGpu, KernelThatFailsToLaunchFailsItsTaskOnly) {
  std::vector<double> x(1000, 1.0);
  std::vector<double> scratch(1000, 1.0);
  Observations seen;
  const Codelet scale = scale_codelet(seen);
  Codelet broken;
  broken.name = "broken";
  broken.cuda = [](TaskContext& context) {
    hetflow::test::launch_invalid(hetflow::cuda::stream(context), context.buffer(0).as<double>());
  };
  // One GPU, so both tasks run on the same worker; separate data, so the second task does not
  // fail through its dependency on the first.
  Runtime rt(Config{.ncpus = 1, .drivers = {hetflow::cuda::make_driver({.max_devices = 1})}});
  DataHandle h = rt.register_vector(x.data(), x.size());
  DataHandle junk = rt.register_vector(scratch.data(), scratch.size());
  auto failed = rt.insert(broken, {.data = {RW(junk)}});
  try {
    failed.get();
    ADD_FAILURE() << "a task whose kernel could not launch succeeded";
  } catch (const hetflow::Error& error) {
    EXPECT_NE(std::string(error.what()).find("launch"), std::string::npos) << error.what();
  }
  // The worker goes on: the next task on it neither fails nor inherits the error.
  rt.insert(scale, {.data = {RW(h)}, .where = Arch::cuda}, 4.0).get();
  rt.unregister(h);
  EXPECT_EQ(x[0], 4.0);
  EXPECT_EQ(x[999], 4.0);
}

TEST_F(CudaGpu, WorkerKnowsItsDeviceAndStream) {
  std::atomic<int> checked{0};
  Codelet probe;
  probe.name = "probe";
  probe.cuda = [&](TaskContext& context) {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) return;
    cudaStream_t stream = hetflow::cuda::stream(context);
    if (current == hetflow::cuda::device(context) && stream != nullptr && stream == hetflow::cuda::stream(context)) {
      checked.fetch_add(1);
    }
  };
  const unsigned gpus = hetflow::cuda::device_count();
  {
    Runtime rt(Config{.ncpus = 1, .drivers = {hetflow::cuda::make_driver()}});
    std::vector<hetflow::Future<void>> runs;
    for (const auto& worker : rt.workers()) {
      if (worker.arch == Arch::cuda) runs.push_back(rt.insert(probe, {.worker = static_cast<int>(worker.id)}));
    }
    EXPECT_EQ(runs.size(), gpus);
    for (auto& run : runs) run.get();
  }
  EXPECT_EQ(checked.load(), static_cast<int>(gpus));
}

// --- Without a GPU too -------------------------------------------------------------------------

TEST(CudaDriver, HasOneWorkerPerGpu) {
  ScopedEnv unset("HETFLOW_NCUDA", std::nullopt);
  const auto driver = hetflow::cuda::make_driver();
  EXPECT_EQ(driver->name(), "cuda");
  EXPECT_EQ(driver->arch(), Arch::cuda);
  EXPECT_EQ(driver->worker_count(), hetflow::cuda::device_count());
  if (hetflow::cuda::device_count() == 0) {
    EXPECT_EQ(driver->worker_count(), 0u) << "no GPU, yet workers";
  }
}

TEST(CudaDriver, EnvironmentLimitsTheGpus) {
  {
    ScopedEnv none("HETFLOW_NCUDA", "0");
    EXPECT_EQ(hetflow::cuda::make_driver()->worker_count(), 0u);
  }
  {
    ScopedEnv one("HETFLOW_NCUDA", "1");
    EXPECT_EQ(hetflow::cuda::make_driver()->worker_count(), std::min(1u, hetflow::cuda::device_count()));
  }
  for (const char* bad : {"abc", "-1", "2x", " 1", "99999999999999999999"}) {
    ScopedEnv broken("HETFLOW_NCUDA", bad);
    hetflow::test::expect_invalid_argument([] { static_cast<void>(hetflow::cuda::make_driver()); },
                                           {"HETFLOW_NCUDA", bad});
  }
  // A count chosen in code wins: the environment is not even read.
  ScopedEnv broken("HETFLOW_NCUDA", "abc");
  EXPECT_EQ(hetflow::cuda::make_driver({.max_devices = 1})->worker_count(),
            std::min(1u, hetflow::cuda::device_count()));
}

TEST(CudaDriver, AccessorsThrowOutsideCudaWorkers) {
  std::atomic<int> refused{0};
  std::atomic<int> named_cpu{0};
  Codelet codelet;
  codelet.name = "on the host";
  codelet.cpu = [&](TaskContext& context) {
    const auto expect_refusal = [&](auto call) {
      try {
        call();
      } catch (const hetflow::Error& error) {
        refused.fetch_add(1);
        if (std::string(error.what()).find("cpu") != std::string::npos) named_cpu.fetch_add(1);
      }
    };
    expect_refusal([&] { static_cast<void>(hetflow::cuda::device(context)); });
    expect_refusal([&] { static_cast<void>(hetflow::cuda::stream(context)); });
    expect_refusal([&] { static_cast<void>(hetflow::cuda::cublas(context)); });
    expect_refusal([&] { static_cast<void>(hetflow::cuda::cusolver(context)); });
  };
  Runtime rt(Config{.ncpus = 1, .drivers = {hetflow::cuda::make_driver()}});
  rt.insert(codelet, {.where = Arch::cpu}).get();
  EXPECT_EQ(refused.load(), 4);
  EXPECT_EQ(named_cpu.load(), 4) << "the message should say where the task ran";
  // A plain callable runs on a host thread too: the failure reaches its future.
  auto f = rt.submit([](TaskContext& context) { return hetflow::cuda::stream(context); });
  EXPECT_THROW(f.get(), hetflow::Error);
}

TEST(CudaDriver, RuntimeWithTheDriverRunsHostWork) {
  // Without a GPU the driver adds no worker, and the runtime works as a CPU-only one.
  Runtime rt(Config{.ncpus = 1, .drivers = {hetflow::cuda::make_driver()}});
  const auto cuda_workers = std::count_if(rt.workers().begin(), rt.workers().end(),
                                          [](const auto& worker) { return worker.arch == Arch::cuda; });
  EXPECT_EQ(static_cast<unsigned>(cuda_workers), hetflow::cuda::device_count());
  EXPECT_EQ(rt.submit([](int a) { return a + 1; }, 41).get(), 42);
}

}  // namespace
