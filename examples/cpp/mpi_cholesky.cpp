// Tiled Cholesky factorisation A = L * L^T across MPI ranks, over hetflow::mpi: the right-looking
// algorithm of cholesky.cpp, its tiles (those of the lower triangle, each a contiguous
// column-major buffer) spread over a P x Q grid of ranks, block-cyclically: tile (i, j) belongs
// to rank (i % P) * Q + (j % Q). Every rank submits every task; each runs on the rank owning
// the tile it writes, and hetflow sends it the tiles it reads. Each rank generates only the
// tiles it owns.
//
//   mpirun -np 4 mpi_cholesky [--n N] [--tile B] [--precision single|double] [--repeat R] [--check]
//                             [--ncpus N] [--cusolver] ...     (--help lists all)
//
// In double precision (the default) the tasks run the tile codelets of linalg/ on any
// architecture; in single precision (--precision single) the tiles are floats and the tasks
// run this file's float kernels (OpenBLAS, LAPACKE) on CPU workers only.
//
// Rank 0 prints the times, and the bytes and messages all ranks sent. With --check it gathers
// L (one read task per tile placed on rank 0) and compares it with LAPACKE_dpotrf (spotrf) of
// the whole matrix; every rank exits 1 when the check or a task fails.
#include <cblas.h>
#include <lapacke.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <hetflow/mpi.hpp>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "linalg/example_support.hpp"
#include "linalg/internal.hpp"
#include "linalg/linalg.hpp"
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
#include "linalg/vendor_reference.hpp"
#endif

namespace {

using hetflow::R;
using hetflow::RW;
using linalg::GemmArgs;
using linalg::PotrfArgs;
using linalg::SyrkArgs;
using linalg::Transpose;

constexpr std::uint64_t kSeed = 42;  // cholesky.cpp's matrix

enum class Precision : unsigned char { single, double_ };

const char* precision_name(Precision precision) { return precision == Precision::single ? "single" : "double"; }

template <class Real>
constexpr const char* potrf_name() {
  return std::is_same_v<Real, float> ? "LAPACKE_spotrf" : "LAPACKE_dpotrf";
}

// The tile kernels in single precision, CPU only: linalg's codelets (and their arguments) with
// float tiles. Their models are their own ("linalg.sgemm", ...): a float tile costs less.
float* float_tile(const hetflow::DataView& view, const char* what) {
  if (view.layout.kind != hetflow::DataLayout::Kind::matrix || view.layout.elem_size != sizeof(float)) {
    throw hetflow::InvalidArgument(std::string("linalg ") + what + " must be a registered matrix of floats");
  }
  return view.as<float>();
}

int ld_of(const hetflow::DataView& view) { return linalg::detail::blas_int(view.ld(), "a leading dimension"); }
int rows_of(const hetflow::DataView& view) { return linalg::detail::blas_int(view.nx(), "a tile's rows"); }
int cols_of(const hetflow::DataView& view) { return linalg::detail::blas_int(view.ny(), "a tile's columns"); }

CBLAS_TRANSPOSE cblas_transpose(Transpose transpose) { return transpose == Transpose::no ? CblasNoTrans : CblasTrans; }

void cpu_sgemm(hetflow::TaskContext& context) {
  const auto& args = context.arg<GemmArgs>();
  const hetflow::DataView a = context.buffer(0), b = context.buffer(1), c = context.buffer(2);
  const int k = args.transa == Transpose::no ? cols_of(a) : rows_of(a);
  cblas_sgemm(CblasColMajor, cblas_transpose(args.transa), cblas_transpose(args.transb), rows_of(c), cols_of(c), k,
              static_cast<float>(args.alpha), float_tile(a, "sgemm A"), ld_of(a), float_tile(b, "sgemm B"), ld_of(b),
              static_cast<float>(args.beta), float_tile(c, "sgemm C"), ld_of(c));
}

void cpu_ssyrk(hetflow::TaskContext& context) {
  const auto& args = context.arg<SyrkArgs>();
  const hetflow::DataView a = context.buffer(0), c = context.buffer(1);
  cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, rows_of(c), cols_of(a), static_cast<float>(args.alpha),
              float_tile(a, "ssyrk A"), ld_of(a), static_cast<float>(args.beta), float_tile(c, "ssyrk C"), ld_of(c));
}

void cpu_strsm(hetflow::TaskContext& context) {
  const hetflow::DataView l = context.buffer(0), b = context.buffer(1);
  cblas_strsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, rows_of(b), cols_of(b), 1.0F,
              float_tile(l, "strsm L"), ld_of(l), float_tile(b, "strsm B"), ld_of(b));
}

void cpu_spotrf(hetflow::TaskContext& context) {
  const auto& args = context.arg<PotrfArgs>();
  const hetflow::DataView a = context.buffer(0);
  const lapack_int info = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'L', rows_of(a), float_tile(a, "spotrf A"), ld_of(a));
  if (info != 0) linalg::detail::throw_not_positive_definite(args, info, "cpu");
}

hetflow::Codelet single_codelet(const char* name, hetflow::Codelet::Implementation cpu) {
  return hetflow::Codelet{.name = name,
                          .cpu = std::move(cpu),
                          .model = hetflow::PerfModelRegistry::instance().get(std::string("linalg.") + name)};
}

// The members linalg::Codelets has, for the same submission code.
struct SingleCodelets {
  hetflow::Codelet gemm = single_codelet("sgemm", cpu_sgemm);
  hetflow::Codelet syrk = single_codelet("ssyrk", cpu_ssyrk);
  hetflow::Codelet trsm = single_codelet("strsm", cpu_strsm);
  hetflow::Codelet potrf = single_codelet("spotrf", cpu_spotrf);
};

template <class Real>
using CodeletsOf = std::conditional_t<std::is_same_v<Real, float>, SingleCodelets, linalg::Codelets>;

// P x Q ranks, P * Q = ranks, as square as can be with P >= Q (P = ranks, Q = 1 for a prime).
struct ProcessGrid {
  int rows = 1;
  int cols = 1;

  explicit ProcessGrid(int ranks) {
    cols = static_cast<int>(std::sqrt(static_cast<double>(ranks)));
    while (cols > 1 && ranks % cols != 0) --cols;
    cols = std::max(cols, 1);
    rows = ranks / cols;
  }
  [[nodiscard]] int owner(std::size_t i, std::size_t j) const {
    return static_cast<int>(i % static_cast<std::size_t>(rows)) * cols +
           static_cast<int>(j % static_cast<std::size_t>(cols));
  }
};

std::string tile_name(std::size_t i, std::size_t j) {
  std::string name = "A";
  name += std::to_string(i);
  name += ',';
  name += std::to_string(j);
  return name;
}

// The tiles of the lower triangle, of Real (float or double), registered with the context on
// every rank: the owner's buffer on the owner, hetflow's memory for received copies elsewhere.
// The tiles' buffers are `owned`, which the program declares before its runtime and context:
// as the context ends it unregisters the tiles, bringing each one's latest version home into its
// buffer (from a device, say), so the buffers must outlive it.
template <class Real>
class DistributedTiles {
 public:
  DistributedTiles(hetflow::mpi::Context& mpi, const ProcessGrid& grid, std::size_t n, std::size_t tile,
                   std::vector<std::vector<Real>>& owned)
      : n_(n), tile_(tile), tiles_((n + tile - 1) / tile), owned_(owned) {
    const int first_tag = mpi.allocate_tags(static_cast<int>(tiles_ * (tiles_ + 1) / 2));
    handles_.resize(tiles_ * tiles_);
    owned_.resize(tiles_ * tiles_);
    int tag = first_tag;
    for (std::size_t j = 0; j < tiles_; ++j) {
      for (std::size_t i = j; i < tiles_; ++i) {
        const int owner = grid.owner(i, j);
        Real* data = nullptr;
        if (owner == mpi.rank()) {
          owned_[index(i, j)].resize(extent(i) * extent(j));
          data = owned_[index(i, j)].data();
        }
        handles_[index(i, j)] =
            mpi.register_data(data, hetflow::DataLayout::matrix(extent(i), extent(j), extent(i), sizeof(Real)), owner,
                              tag++, tile_name(i, j));
      }
    }
  }

  [[nodiscard]] std::size_t count() const noexcept { return tiles_; }
  [[nodiscard]] std::size_t extent(std::size_t index) const noexcept { return std::min(tile_, n_ - index * tile_); }
  [[nodiscard]] std::size_t start(std::size_t index) const noexcept { return index * tile_; }
  [[nodiscard]] const hetflow::DataHandle& operator()(std::size_t i, std::size_t j) const {
    return handles_[index(i, j)];
  }
  [[nodiscard]] bool owns(std::size_t i, std::size_t j) const noexcept { return !owned_[index(i, j)].empty(); }
  [[nodiscard]] std::size_t owned_count() const noexcept {
    return static_cast<std::size_t>(
        std::count_if(owned_.begin(), owned_.end(), [](const std::vector<Real>& tile) { return !tile.empty(); }));
  }

  // Writes the input matrix into the tiles this rank owns, through host acquisitions (the
  // latest copy of a tile may be on a device); call when no task is pending. In single
  // precision the values are the double ones rounded.
  void fill(hetflow::Runtime& rt, bool indefinite) {
    std::vector<double> values;
    for (std::size_t j = 0; j < tiles_; ++j) {
      for (std::size_t i = j; i < tiles_; ++i) {
        if (!owns(i, j)) continue;
        hetflow::Acquisition tile = rt.acquire(handles_[index(i, j)], hetflow::AccessMode::W);
        Real* const elements = tile.as<Real>();
        if constexpr (std::is_same_v<Real, double>) {
          linalg::fill_random_spd_block(elements, extent(i), n_, kSeed, start(i), start(j), extent(i), extent(j));
        } else {
          values.resize(extent(i) * extent(j));
          linalg::fill_random_spd_block(values.data(), extent(i), n_, kSeed, start(i), start(j), extent(i), extent(j));
          std::transform(values.begin(), values.end(), elements, [](double value) { return static_cast<Real>(value); });
        }
        // A negative pivot half-way down, as cholesky --indefinite makes.
        const std::size_t middle = n_ / 2;
        if (indefinite && i == j && middle / tile_ == i) {
          const std::size_t offset = middle - start(i);
          elements[offset * extent(i) + offset] = -1;
        }
      }
    }
  }

 private:
  [[nodiscard]] std::size_t index(std::size_t i, std::size_t j) const noexcept { return j * tiles_ + i; }

  std::size_t n_;
  std::size_t tile_;
  std::size_t tiles_;
  std::vector<hetflow::DataHandle> handles_;  // column by column; the upper triangle's are empty
  std::vector<std::vector<Real>>& owned_;     // the buffers of this rank's tiles
};

std::string task_name(const char* kernel, std::size_t i, std::size_t j, std::size_t k) {
  return std::string(kernel) + " " + std::to_string(i) + "," + std::to_string(j) + " k" + std::to_string(k);
}

// Higher for earlier steps and, within a step, for the tiles nearest the next panel: the
// critical path runs through potrf(k), trsm(k + 1, k), syrk(k + 1, k), potrf(k + 1).
int priority_of(std::size_t tiles, std::size_t i, std::size_t j, std::size_t k) {
  return static_cast<int>(2 * (tiles - k) - (i - k) - (j - k));
}

// Submits the right-looking factorisation on every rank; returns the futures of the tasks that
// run on this one.
template <class Real>
std::vector<hetflow::Future<void>> submit_cholesky(hetflow::mpi::Context& mpi, const CodeletsOf<Real>& codelets,
                                                   const DistributedTiles<Real>& a, hetflow::ArchMask where) {
  const std::size_t tiles = a.count();
  std::vector<hetflow::Future<void>> futures;
  const auto keep = [&](hetflow::Future<void> future) {
    if (future.valid()) futures.push_back(std::move(future));
  };
  for (std::size_t k = 0; k < tiles; ++k) {
    keep(mpi.insert(codelets.potrf,
                    {.data = {RW(a(k, k))},
                     .priority = priority_of(tiles, k, k, k),
                     .name = task_name("potrf", k, k, k),
                     .where = where},
                    linalg::PotrfArgs{.tile = k, .offset = a.start(k)}));
    for (std::size_t i = k + 1; i < tiles; ++i) {
      keep(mpi.insert(codelets.trsm, {.data = {R(a(k, k)), RW(a(i, k))},
                                      .priority = priority_of(tiles, i, k, k),
                                      .name = task_name("trsm", i, k, k),
                                      .where = where}));
    }
    for (std::size_t i = k + 1; i < tiles; ++i) {
      keep(mpi.insert(codelets.syrk,
                      {.data = {R(a(i, k)), RW(a(i, i))},
                       .priority = priority_of(tiles, i, i, k),
                       .name = task_name("syrk", i, i, k),
                       .where = where},
                      linalg::SyrkArgs{.alpha = -1.0, .beta = 1.0}));
      for (std::size_t j = k + 1; j < i; ++j) {
        keep(mpi.insert(codelets.gemm,
                        {.data = {R(a(i, k)), R(a(j, k)), RW(a(i, j))},
                         .priority = priority_of(tiles, i, j, k),
                         .name = task_name("gemm", i, j, k),
                         .where = where},
                        GemmArgs{.transa = Transpose::no, .transb = Transpose::yes, .alpha = -1.0, .beta = 1.0}));
      }
    }
  }
  return futures;
}

// Where a gathered tile goes in rank 0's copy of the whole (column-major, n x n) matrix.
template <class Real>
struct GatherArgs {
  Real* matrix;
  std::size_t n;
  std::size_t row;
  std::size_t col;
};

template <class Real>
void copy_tile_into_matrix(hetflow::TaskContext& context) {
  const auto& args = context.arg<GatherArgs<Real>>();
  const hetflow::DataView tile = context.buffer(0);
  const Real* from = tile.as<const Real>();
  for (std::size_t c = 0; c < tile.ny(); ++c) {
    std::copy_n(from + c * tile.ld(), tile.nx(), args.matrix + (args.col + c) * args.n + args.row);
  }
}

// Rank 0's copy of L (the lower triangle; what is above it is left as it was), one read task
// per tile placed on rank 0.
template <class Real>
void gather_factor(hetflow::mpi::Context& mpi, const hetflow::Codelet& gather, const DistributedTiles<Real>& a,
                   std::vector<Real>& matrix, std::size_t n) {
  for (std::size_t j = 0; j < a.count(); ++j) {
    for (std::size_t i = j; i < a.count(); ++i) {
      mpi.insert(gather, {.data = {R(a(i, j))}, .where = hetflow::Arch::cpu},
                 GatherArgs<Real>{.matrix = matrix.data(), .n = n, .row = a.start(i), .col = a.start(j)},
                 hetflow::mpi::Placement{.rank = 0});
    }
  }
  mpi.wait_all();
}

// Factors the whole matrix (in Real) with LAPACKE_dpotrf or LAPACKE_spotrf on this rank (all
// its CPUs) and prints the time; the factor lands in `reference`.
template <class Real>
void factor_on_host(std::vector<Real>& reference, std::size_t n) {
  const std::vector<double> input = linalg::random_spd_matrix(n, kSeed);
  reference.assign(input.begin(), input.end());
  linalg::set_host_blas_threads(linalg::host_cpu_count());
  const auto start = std::chrono::steady_clock::now();
  lapack_int info = 0;
  if constexpr (std::is_same_v<Real, float>) {
    info =
        LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', static_cast<lapack_int>(n), reference.data(), static_cast<lapack_int>(n));
  } else {
    info =
        LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', static_cast<lapack_int>(n), reference.data(), static_cast<lapack_int>(n));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  linalg::set_host_blas_threads(1);
  if (info != 0) {
    throw hetflow::Error(std::string(potrf_name<Real>()) + " on rank 0 failed too (info " + std::to_string(info) + ")");
  }
  std::printf("rank 0 %s of the whole matrix (%d threads): %.4f s, %s\n", potrf_name<Real>(), linalg::host_cpu_count(),
              seconds,
              linalg::rate_text(static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / 3.0, seconds)
                  .c_str());
}

// Compares rank 0's gathered L with LAPACKE_dpotrf (spotrf) of the whole matrix; prints and
// returns whether it passes.
template <class Real>
bool check_factor(const std::vector<Real>& factor, std::size_t n) {
  std::vector<Real> reference;
  factor_on_host(reference, n);
  double largest = 0, worst = 0;
  for (std::size_t j = 0; j < n; ++j) {
    for (std::size_t i = j; i < n; ++i) {
      const double expected = reference[j * n + i];
      largest = std::max(largest, std::abs(expected));
      worst = std::max(worst, std::abs(expected - static_cast<double>(factor[j * n + i])));
    }
  }
  const double relative = worst / largest;
  // As in cholesky.cpp: a small multiple of n * epsilon whatever the order of the operations
  // (in double 1e-14 n + 1e-13, about 45 (n + 10) epsilon), for Real's epsilon.
  const double epsilon = std::numeric_limits<Real>::epsilon();
  const double tolerance =
      (1e-14 * static_cast<double>(n) + 1e-13) * (epsilon / std::numeric_limits<double>::epsilon());
  std::printf("check against %s: max |L - L_lapack| / max |L_lapack| = %.3e (tolerance %.1e): %s\n", potrf_name<Real>(),
              relative, tolerance, relative <= tolerance ? "OK" : "FAILED");
  return relative <= tolerance;
}

// Sums over the ranks, on rank 0 (elsewhere: this rank's values).
std::uint64_t sum_on_rank_0(std::uint64_t value) {
  std::uint64_t total = 0;
  MPI_Reduce(&value, &total, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
  return total;
}

// Whether every rank passes `ok`.
bool all_ranks(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

template <class Real>
int run(const linalg::ExampleOptions& options) {
  const std::size_t n = options.n;
  const double flops = static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / 3.0;
  const Precision precision = std::is_same_v<Real, float> ? Precision::single : Precision::double_;

  // Declared before the runtime: the codelets must outlive every task, and the tiles' buffers
  // the context, which brings the tiles' latest versions home into them as it ends.
  std::vector<std::vector<Real>> tile_buffers;
  const CodeletsOf<Real> codelets;
  const hetflow::Codelet gather{.name = "gather_tile", .cpu = copy_tile_into_matrix<Real>};
  linalg::set_host_blas_threads(1);  // one BLAS thread per tile task; hetflow supplies the parallelism

  hetflow::Runtime rt(linalg::make_config(options));
  hetflow::mpi::Context mpi(rt, hetflow::mpi::world());
  const int rank = mpi.rank();
  const ProcessGrid grid(mpi.size());

  // Every rank has the same workers; rank 0 says what they are.
  int runnable = 0;
  if (rank == 0) runnable = linalg::describe_runtime(rt, options) ? 1 : 0;
  MPI_Bcast(&runnable, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (runnable == 0) return linalg::kNoWorkerExitStatus;
  if (rt.config().simulate.value_or("").empty()) linalg::prepare_devices(rt);

  DistributedTiles<Real> a(mpi, grid, n, options.tile, tile_buffers);
  if (rank == 0) {
    std::printf(
        "mpi_cholesky: n = %zu, tiles of %zu (%zu x %zu), %s precision, %d ranks in a %d x %d grid (block-cyclic), "
        "%u run%s\n",
        n, options.tile, a.count(), a.count(), precision_name(precision), mpi.size(), grid.rows, grid.cols,
        options.repeat, options.repeat == 1 ? "" : "s");
  }

  const std::string program = "mpi_cholesky (rank " + std::to_string(rank) + ")";
  std::vector<double> seconds;
  std::uint64_t tasks_here = 0;
  bool tasks_ok = true;
  for (unsigned attempt = 0; attempt < options.repeat; ++attempt) {
    // The factorisation works in place: every run starts again from the input, and the copies
    // other ranks received of the last run's tiles are dropped.
    a.fill(rt, options.indefinite);
    mpi.flush_all();
    mpi.wait_all();  // nothing pending: the ranks meet, and start the clock together
    const auto start = std::chrono::steady_clock::now();
    const std::vector<hetflow::Future<void>> futures = submit_cholesky<Real>(mpi, codelets, a, options.where);
    mpi.wait_all();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    tasks_here += futures.size();
    tasks_ok = linalg::report_failures(futures, program.c_str()) && tasks_ok;
  }

  // What the factorisations sent (before the gathering of --check adds its own).
  std::uint64_t bytes_here = 0, messages_here = 0;
  for (const hetflow::mpi::PeerStats& peer : mpi.sent()) {
    bytes_here += peer.bytes;
    messages_here += peer.messages;
  }
  const std::uint64_t bytes = sum_on_rank_0(bytes_here);
  const std::uint64_t messages = sum_on_rank_0(messages_here);
  std::vector<std::uint64_t> tasks_per_rank(static_cast<std::size_t>(mpi.size()));
  MPI_Gather(&tasks_here, 1, MPI_UINT64_T, tasks_per_rank.data(), 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  if (!all_ranks(tasks_ok)) {
    if (rank == 0) std::fprintf(stderr, "mpi_cholesky: tasks failed (each rank printed its own above)\n");
    return 1;
  }

  if (rank == 0) {
    linalg::print_times(seconds, flops);
    if (seconds.size() > 1) {
      std::printf("times (s):");
      for (double run_seconds : seconds) std::printf(" %.6f", run_seconds);
      std::printf("\n");
    }
    std::printf("sent by all ranks: %llu bytes in %llu messages (%.0f bytes, %.0f messages per run)\n",
                static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(messages),
                static_cast<double>(bytes) / static_cast<double>(options.repeat),
                static_cast<double>(messages) / static_cast<double>(options.repeat));
    std::printf("tasks per rank%s:", options.repeat > 1 ? " (all runs)" : "");
    for (int r = 0; r < mpi.size(); ++r) {
      std::printf(" %d: %llu", r, static_cast<unsigned long long>(tasks_per_rank[static_cast<std::size_t>(r)]));
    }
    std::printf(" (rank 0 owns %zu tiles)\n", a.owned_count());
  }

  int status = 0;
  if (options.check) {
    std::vector<Real> factor(rank == 0 ? n * n : 0);
    gather_factor(mpi, gather, a, factor, n);
    if (rank == 0 && !check_factor(factor, n)) status = 1;
    MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  }
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
  if (std::is_same_v<Real, double> && options.vendor && rank == 0) {
    int info = 0;
    const std::vector<double> input = linalg::random_spd_matrix(n, kSeed);
    const double vendor = linalg::cusolver_dpotrf_seconds(n, input.data(), options.repeat, info);
    if (info != 0) std::fprintf(stderr, "mpi_cholesky: cusolverDnDpotrf reports info %d\n", info);
    const double tiled = *std::min_element(seconds.begin(), seconds.end());
    std::printf(
        "cusolverDnDpotrf (one call, whole matrix on rank 0's GPU 0): %.4f s, %s; hetflow across ranks (best): %s\n",
        vendor, linalg::rate_text(flops, vendor).c_str(), linalg::rate_text(flops, tiled).c_str());
  }
#endif
  return status;
}

// Takes --precision P out of the arguments (parse_options reads the others); exits 2 on a mistake.
Precision take_precision(std::vector<char*>& arguments) {
  Precision precision = Precision::double_;
  for (std::size_t i = 1; i < arguments.size();) {
    if (std::string_view(arguments[i]) != "--precision") {
      ++i;
      continue;
    }
    if (i + 1 == arguments.size()) {
      std::fprintf(stderr, "mpi_cholesky: --precision needs a value: single or double\n");
      std::exit(2);
    }
    const std::string_view value = arguments[i + 1];
    if (value == "single") {
      precision = Precision::single;
    } else if (value == "double") {
      precision = Precision::double_;
    } else {
      std::fprintf(stderr, "mpi_cholesky: --precision takes single or double, not '%s' (--help lists the options)\n",
                   std::string(value).c_str());
      std::exit(2);
    }
    arguments.erase(arguments.begin() + static_cast<std::ptrdiff_t>(i),
                    arguments.begin() + static_cast<std::ptrdiff_t>(i + 2));
  }
  return precision;
}

}  // namespace

int main(int argc, char** argv) {
  // Parsed before MPI starts: --help and mistakes exit at once.
  std::vector<char*> arguments(argv, argv + argc);
  const Precision precision = take_precision(arguments);
  linalg::ExampleOptions options = linalg::parse_options(
      static_cast<int>(arguments.size()), arguments.data(),
      {.program = "mpi_cholesky",
       .summary = "Tiled Cholesky factorisation A = L L^T of a random SPD matrix across MPI ranks (hetflow::mpi); "
                  "run under mpirun.\n\n"
                  "  --precision P  double (default) or single: the tiles' elements. In single precision the tasks\n"
                  "                 run float OpenBLAS/LAPACKE kernels on CPU workers only (no OpenCL or CUDA\n"
                  "                 kernels, no --cusolver); the other options are listed below.",
       .default_n = 2048,
       .default_tile = 256,
       .vendor_flag = "--cusolver",
       .vendor_help = "also time one cusolverDnDpotrf of the whole matrix on rank 0 (its GPU 0)",
       .has_indefinite = true,
       .has_full_layout = false});
  if (precision == Precision::single && (!options.where.contains(hetflow::Arch::cpu) || options.vendor)) {
    std::fprintf(stderr, "mpi_cholesky: --precision single runs on CPU workers only (--where cpu or any, no %s)\n",
                 "--cusolver");
    return 2;
  }
  // The program calls MPI itself (the totals, the check's verdict) beside hetflow's own thread.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  if (provided < MPI_THREAD_MULTIPLE) {
    std::fprintf(stderr, "mpi_cholesky: this MPI does not provide MPI_THREAD_MULTIPLE\n");
    MPI_Finalize();
    return 1;
  }
  int status = 0;
  try {
    status = precision == Precision::single ? run<float>(options) : run<double>(options);
  } catch (const std::exception& error) {
    // The other ranks would wait for this one forever.
    std::fprintf(stderr, "mpi_cholesky: %s\n", error.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
