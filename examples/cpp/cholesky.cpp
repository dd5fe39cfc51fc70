// Tiled Cholesky factorisation A = L * L^T of a symmetric positive definite matrix, over the
// registered tiles of its lower triangle. Each step k factors the diagonal tile (potrf), solves
// the panel below it (trsm) and updates the trailing matrix (syrk on diagonal tiles, gemm off
// it); hetflow infers the dependencies from the tiles each task reads and writes, and runs every
// task on whatever worker (CPU, OpenCL device, GPU) the scheduler picks among those allowed.
//
//   cholesky [--n N] [--tile B] [--opencl] [--cuda] [--where cpu|opencl|cuda|any] [--check]
//            [--repeat R] [--cusolver] ...           (--help lists all)
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
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

// The tasks of the right-looking factorisation, in submission order: potrf(k), the trsm(i, k),
// then for each i the syrk(i, k) and the gemm(i, j, k). Calls visit(kernel, i, j, k).
template <class Visit>
void for_each_task(std::size_t tiles, Visit&& visit) {
  for (std::size_t k = 0; k < tiles; ++k) {
    visit(linalg::Kernel::potrf, k, k, k);
    for (std::size_t i = k + 1; i < tiles; ++i) visit(linalg::Kernel::trsm, i, k, k);
    for (std::size_t i = k + 1; i < tiles; ++i) {
      visit(linalg::Kernel::syrk, i, i, k);
      for (std::size_t j = k + 1; j < i; ++j) visit(linalg::Kernel::gemm, i, j, k);
    }
  }
}

// Each task's priority, in submission order: its upward rank, the longest chain of work from its
// start to the end of the factorisation, in units of b^3 / 3 flops (potrf 1, trsm 3, syrk 3,
// gemm 6). The longest chains go first (late in the graph, the trailing updates of the last
// tiles as much as the panel), and the tasks with most slack fill the gaps: on a slow device
// too, where finishing late does not delay the end.
std::vector<int> upward_ranks(std::size_t tiles) {
  struct Node {
    int weight;
    std::vector<std::size_t> before;  // the tasks that last wrote its tiles
  };
  std::vector<Node> nodes;
  std::vector<std::size_t> last_writer(tiles * tiles, SIZE_MAX);
  for_each_task(tiles, [&](linalg::Kernel kernel, std::size_t i, std::size_t j, std::size_t k) {
    Node node{kernel == linalg::Kernel::potrf ? 1 : kernel == linalg::Kernel::gemm ? 6 : 3, {}};
    std::vector<std::size_t> tiles_used{i + j * tiles};  // the one it writes
    if (kernel != linalg::Kernel::potrf) tiles_used.push_back(i + k * tiles);
    if (kernel == linalg::Kernel::trsm) tiles_used.push_back(k + k * tiles);
    if (kernel == linalg::Kernel::gemm) tiles_used.push_back(j + k * tiles);
    for (std::size_t tile : tiles_used) {
      if (last_writer[tile] != SIZE_MAX) node.before.push_back(last_writer[tile]);
    }
    last_writer[i + j * tiles] = nodes.size();
    nodes.push_back(std::move(node));
  });
  std::vector<int> rank(nodes.size(), 0);
  for (std::size_t t = nodes.size(); t-- > 0;) {
    rank[t] += nodes[t].weight;
    for (std::size_t before : nodes[t].before) rank[before] = std::max(rank[before], rank[t]);
  }
  return rank;
}

std::string tile_name(const char* kernel, std::size_t i, std::size_t j, std::size_t k) {
  return std::string(kernel) + " " + std::to_string(i) + "," + std::to_string(j) + " k" + std::to_string(k);
}

// Submits the right-looking tiled factorisation of the lower triangle; returns every task's
// future (to find out which failed, if any).
std::vector<hetflow::Future<void>> submit_cholesky(hetflow::Runtime& rt, const linalg::Codelets& codelets,
                                                   const linalg::TileHandles& a, const linalg::TiledMatrix& matrix,
                                                   hetflow::ArchMask where) {
  using hetflow::R;
  using hetflow::RW;
  const std::size_t tiles = matrix.tile_count();
  const std::vector<int> priorities = upward_ranks(tiles);
  std::vector<hetflow::Future<void>> futures;
  for_each_task(tiles, [&](linalg::Kernel kernel, std::size_t i, std::size_t j, std::size_t k) {
    const int priority = priorities[futures.size()];
    switch (kernel) {
      case linalg::Kernel::potrf:
        futures.push_back(rt.insert(
            codelets.potrf,
            {.data = {RW(a(k, k))}, .priority = priority, .name = tile_name("potrf", k, k, k), .where = where},
            linalg::PotrfArgs{.tile = k, .offset = matrix.start(k)}));
        break;
      case linalg::Kernel::trsm:
        futures.push_back(rt.insert(codelets.trsm, {.data = {R(a(k, k)), RW(a(i, k))},
                                                    .priority = priority,
                                                    .name = tile_name("trsm", i, k, k),
                                                    .where = where}));
        break;
      case linalg::Kernel::syrk:
        futures.push_back(rt.insert(codelets.syrk,
                                    {.data = {R(a(i, k)), RW(a(i, i))},
                                     .priority = priority,
                                     .name = tile_name("syrk", i, i, k),
                                     .where = where},
                                    linalg::SyrkArgs{.alpha = -1.0, .beta = 1.0}));
        break;
      case linalg::Kernel::gemm:
        futures.push_back(
            rt.insert(codelets.gemm,
                      {.data = {R(a(i, k)), R(a(j, k)), RW(a(i, j))},
                       .priority = priority,
                       .name = tile_name("gemm", i, j, k),
                       .where = where},
                      GemmArgs{.transa = Transpose::no, .transb = Transpose::yes, .alpha = -1.0, .beta = 1.0}));
        break;
    }
  });
  return futures;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int run(int argc, char** argv) {
  const linalg::ExampleOptions options = linalg::parse_options(
      argc, argv,
      {.program = "cholesky",
       .summary = "Tiled Cholesky factorisation A = L L^T of a random SPD matrix over hetflow tiles.",
       .default_n = 1024,
       .default_tile = 128,
       .vendor_flag = "--cusolver",
       .vendor_help = "also time one cusolverDnDpotrf on the whole matrix (GPU 0)",
       .has_indefinite = true});
  const std::size_t n = options.n;
  const double flops = static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / 3.0;

  std::vector<double> input = linalg::random_spd_matrix(n, 42);
  if (options.indefinite) input[(n / 2) * n + n / 2] = -1.0;  // a negative pivot half-way down

  // Declared before the runtime: the tile memory and the codelets must outlive every task.
  linalg::TiledMatrix matrix(n, options.tile, options.layout);
  linalg::TaskCounter counter;
  const linalg::Codelets codelets(&counter);
  linalg::set_host_blas_threads(1);  // one BLAS thread per tile task; hetflow supplies the parallelism

  hetflow::Runtime rt(linalg::make_config(options));
  if (!linalg::describe_runtime(rt, options)) return linalg::kNoWorkerExitStatus;
  // A simulation (HETFLOW_SIMULATE) runs no task body: there are no device programs to build.
  const bool simulated = !rt.config().simulate.value_or("").empty();
  if (!simulated) linalg::prepare_devices(rt);
  counter.reset(rt.worker_count());
  std::printf("cholesky: n = %zu, tiles of %zu (%zu x %zu, layout %s), %u run%s\n", n, options.tile,
              matrix.tile_count(), matrix.tile_count(), std::string(linalg::layout_name(options.layout)).c_str(),
              options.repeat, options.repeat == 1 ? "" : "s");

  std::vector<double> seconds;
  for (unsigned attempt = 0; attempt < options.repeat; ++attempt) {
    // The factorisation works in place: every run starts again from the input.
    matrix.copy_from(input.data(), n);
    linalg::TileHandles a(rt, matrix, "A", linalg::Part::lower);
    // The runtime's clock: virtual seconds in a simulation.
    const double start = rt.elapsed();
    const std::vector<hetflow::Future<void>> futures = submit_cholesky(rt, codelets, a, matrix, options.where);
    rt.wait_all();
    seconds.push_back(rt.elapsed() - start);
    a.unregister(rt);  // brings the factor home
    if (!linalg::report_failures(futures, "cholesky")) return 1;
  }
  linalg::print_times(seconds, flops);
  if (seconds.size() > 1) {
    std::printf("times (s):");
    for (double run_seconds : seconds) std::printf(" %.6f", run_seconds);
    std::printf("\n");
  }
  std::printf("tasks per worker%s:\n", options.repeat > 1 ? " (all runs)" : "");
  counter.print(rt, stdout);

  int status = 0;
  if (options.check) {
    std::vector<double> reference = input;
    linalg::set_host_blas_threads(linalg::host_cpu_count());
    const auto start = std::chrono::steady_clock::now();
    const lapack_int info =
        LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', static_cast<lapack_int>(n), reference.data(), static_cast<lapack_int>(n));
    const double host_seconds = seconds_since(start);
    if (info != 0) {
      std::fprintf(stderr, "cholesky: LAPACKE_dpotrf on the host failed too (info %d)\n", static_cast<int>(info));
      return 1;
    }
    double largest = 0, worst = 0;
    for (std::size_t j = 0; j < n; ++j) {
      for (std::size_t i = j; i < n; ++i) {
        largest = std::max(largest, std::abs(reference[j * n + i]));
        worst = std::max(worst, std::abs(reference[j * n + i] - matrix.at(i, j)));
      }
    }
    const double relative = worst / largest;
    // Cholesky is backward stable: the factors of a well-conditioned matrix agree to a small
    // multiple of n * epsilon whatever the order of the operations.
    const double tolerance = 1e-14 * static_cast<double>(n) + 1e-13;
    std::printf("host LAPACKE_dpotrf (%d threads): %.4f s, %.2f GFLOP/s\n", linalg::host_cpu_count(), host_seconds,
                flops / host_seconds * 1e-9);
    std::printf("check against LAPACKE_dpotrf: max |L - L_lapack| / max |L_lapack| = %.3e (tolerance %.1e): %s\n",
                relative, tolerance, relative <= tolerance ? "OK" : "FAILED");
    if (!(relative <= tolerance)) status = 1;
  }

#ifdef HETFLOW_EXAMPLE_WITH_CUDA
  if (options.vendor) {
    int info = 0;
    const double vendor = linalg::cusolver_dpotrf_seconds(n, input.data(), options.repeat, info);
    if (info != 0) std::fprintf(stderr, "cholesky: cusolverDnDpotrf reports info %d\n", info);
    const double tiled = *std::min_element(seconds.begin(), seconds.end());
    std::printf(
        "cusolverDnDpotrf (one call, whole matrix on GPU 0): %.4f s, %.2f GFLOP/s; hetflow tiled (best): "
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
    std::fprintf(stderr, "%s: %s\n", "cholesky", error.what());
    return 1;
  }
}
