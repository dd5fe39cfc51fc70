// A tiled matrix product C = A * B over registered tiles. Each task multiplies one tile of A by
// one of B into one of C; hetflow infers the order (each C tile accumulates its products one
// after another) and runs independent tiles in parallel, on whatever workers (CPU cores, OpenCL
// devices, GPUs) the scheduler picks among those allowed. Prints what ran where and checks the
// result.
//
//   tiled_gemm [--n N] [--tile B] [--opencl] [--cuda] [--where cpu|opencl|cuda|any] [--check]
//              [--repeat R] [--cublas] ...           (--help lists all)
//   tiled_gemm [N] [B]                                (the older form)
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "linalg/example_support.hpp"
#include "linalg/linalg.hpp"
#include "linalg/tiled_matrix.hpp"
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
#include "linalg/vendor_reference.hpp"
#endif

namespace {

using linalg::GemmArgs;
using linalg::Transpose;

// C(i, j) = sum over k of A(i, k) B(k, j): the first product overwrites C (beta = 0, so the
// tile is only written and need not be fetched), the others accumulate. Products of earlier k
// go first: they are what the chains of each C tile wait for.
std::vector<hetflow::Future<void>> submit_gemm(hetflow::Runtime& rt, const linalg::Codelets& codelets,
                                               const linalg::TileHandles& a, const linalg::TileHandles& b,
                                               const linalg::TileHandles& c, std::size_t tiles,
                                               hetflow::ArchMask where) {
  std::vector<hetflow::Future<void>> futures;
  futures.reserve(tiles * tiles * tiles);
  for (std::size_t k = 0; k < tiles; ++k) {
    const hetflow::AccessMode c_mode = k == 0 ? hetflow::AccessMode::W : hetflow::AccessMode::RW;
    for (std::size_t j = 0; j < tiles; ++j) {
      for (std::size_t i = 0; i < tiles; ++i) {
        futures.push_back(rt.insert(
            codelets.gemm,
            {.data = {hetflow::R(a(i, k)), hetflow::R(b(k, j)), hetflow::DataAccess{c(i, j), c_mode}},
             .priority = static_cast<int>(tiles - k),
             .where = where},
            GemmArgs{.transa = Transpose::no, .transb = Transpose::no, .alpha = 1.0, .beta = k == 0 ? 0.0 : 1.0}));
      }
    }
  }
  return futures;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int run(int argc, char** argv) {
  const linalg::ExampleOptions options =
      linalg::parse_options(argc, argv,
                            {.program = "tiled_gemm",
                             .summary = "Tiled matrix product C = A B of random matrices over hetflow tiles.",
                             .default_n = 1024,
                             .default_tile = 128,
                             .vendor_flag = "--cublas",
                             .vendor_help = "also time one cublasDgemm on the whole matrices (GPU 0)",
                             .has_indefinite = false});
  const std::size_t n = options.n;
  const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);

  const std::vector<double> a_input = linalg::random_matrix(n, 1);
  const std::vector<double> b_input = linalg::random_matrix(n, 2);

  // Declared before the runtime: the tile memory and the codelets must outlive every task.
  linalg::TiledMatrix a_tiles(n, options.tile, options.layout);
  linalg::TiledMatrix b_tiles(n, options.tile, options.layout);
  linalg::TiledMatrix c_tiles(n, options.tile, options.layout);
  a_tiles.copy_from(a_input.data(), n);
  b_tiles.copy_from(b_input.data(), n);
  linalg::TaskCounter counter;
  const linalg::Codelets codelets(&counter);
  linalg::set_host_blas_threads(1);  // one BLAS thread per tile task; hetflow supplies the parallelism

  hetflow::Runtime rt(linalg::make_config(options));
  if (!linalg::describe_runtime(rt, options)) return linalg::kNoWorkerExitStatus;
  linalg::prepare_devices(rt);
  counter.reset(rt.worker_count());
  const std::size_t tiles = a_tiles.tile_count();
  std::printf(
      "tiled_gemm: C = A B, n = %zu, tiles of %zu (%zu x %zu, layout %s): %zu tile products per run, %u run%s\n", n,
      options.tile, tiles, tiles, std::string(linalg::layout_name(options.layout)).c_str(), tiles * tiles * tiles,
      options.repeat, options.repeat == 1 ? "" : "s");

  std::vector<double> seconds;
  {
    linalg::TileHandles a(rt, a_tiles, "A"), b(rt, b_tiles, "B"), c(rt, c_tiles, "C");
    for (unsigned attempt = 0; attempt < options.repeat; ++attempt) {
      // Later runs find A and B where earlier ones left them (on a device, say), as an
      // application that keeps its data registered would.
      const auto start = std::chrono::steady_clock::now();
      const std::vector<hetflow::Future<void>> futures = submit_gemm(rt, codelets, a, b, c, tiles, options.where);
      rt.wait_all();
      seconds.push_back(seconds_since(start));
      if (!linalg::report_failures(futures, "tiled_gemm")) return 1;
    }
    c.unregister(rt);  // brings C home
    b.unregister(rt);
    a.unregister(rt);
  }
  linalg::print_times(seconds, flops);
  std::printf("tasks per worker%s:\n", options.repeat > 1 ? " (all runs)" : "");
  counter.print(rt, stdout);

  int status = 0;
  if (options.check) {
    std::vector<double> reference(n * n);
    linalg::set_host_blas_threads(linalg::host_cpu_count());
    const auto start = std::chrono::steady_clock::now();
    const int order = static_cast<int>(n);
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, order, order, order, 1.0, a_input.data(), order,
                b_input.data(), order, 0.0, reference.data(), order);
    const double host_seconds = seconds_since(start);
    double largest = 0, worst = 0;
    for (std::size_t j = 0; j < n; ++j) {
      for (std::size_t i = 0; i < n; ++i) {
        largest = std::max(largest, std::abs(reference[j * n + i]));
        worst = std::max(worst, std::abs(reference[j * n + i] - c_tiles.at(i, j)));
      }
    }
    const double relative = worst / largest;
    // Rounding differs with the summation order (tiles, FMA, vector widths) by a few n * eps.
    const double tolerance = 1e-15 * static_cast<double>(n) + 1e-14;
    std::printf("host cblas_dgemm (%d threads): %.4f s, %.2f GFLOP/s\n", linalg::host_cpu_count(), host_seconds,
                flops / host_seconds * 1e-9);
    std::printf("check against cblas_dgemm: max |C - C_blas| / max |C_blas| = %.3e (tolerance %.1e): %s\n", relative,
                tolerance, relative <= tolerance ? "OK" : "FAILED");
    if (!(relative <= tolerance)) status = 1;
  } else {
    // A quick look without a second full product: 64 entries computed directly.
    double worst = 0;
    for (std::size_t s = 0; s < 64; ++s) {
      const std::size_t row = (s * 131) % n, col = (s * 71) % n;
      double expected = 0;
      for (std::size_t k = 0; k < n; ++k) expected += a_input[k * n + row] * b_input[col * n + k];
      worst = std::max(worst, std::abs(expected - c_tiles.at(row, col)));
    }
    const bool ok = worst <= 1e-12 * static_cast<double>(n);
    std::printf("largest error on 64 sampled entries: %.2e: %s (--check compares every entry with cblas_dgemm)\n",
                worst, ok ? "OK" : "FAILED");
    if (!ok) status = 1;
  }

#ifdef HETFLOW_EXAMPLE_WITH_CUDA
  if (options.vendor) {
    std::vector<double> c_vendor(n * n);
    const double vendor =
        linalg::cublas_dgemm_seconds(n, a_input.data(), b_input.data(), c_vendor.data(), options.repeat);
    const double tiled = *std::min_element(seconds.begin(), seconds.end());
    std::printf(
        "cublasDgemm (one call, whole matrices on GPU 0): %.4f s, %.2f GFLOP/s; hetflow tiled (best): "
        "%.2f GFLOP/s = %.1f%% of it\n",
        vendor, flops / vendor * 1e-9, flops / tiled * 1e-9, 100.0 * vendor / tiled);
  }
#endif
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: %s\n", "tiled_gemm", error.what());
    return 1;
  }
}
