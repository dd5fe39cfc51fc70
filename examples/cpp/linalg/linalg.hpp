#pragma once
// Double-precision tile kernels for the linear algebra examples, as hetflow codelets with one
// implementation per architecture this build has: cpu (OpenBLAS + LAPACKE) always, opencl (our
// own OpenCL C kernels) when hetflow::opencl is built, cuda (cuBLAS + cuSOLVER) when
// hetflow::cuda is built. Each codelet carries a performance model ("linalg.<name>") so the
// model-driven schedulers learn what a tile costs where.
//
// Tiles are column-major with a leading dimension (DataView::ld()), so a tile may be a block of a
// larger matrix as well as a buffer of its own.
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <hetflow/hetflow.hpp>
#include <memory>
#include <string_view>

namespace linalg {

enum class Transpose : unsigned char { no, yes };

/// The argument of the "gemm" codelet: C = alpha * op(A) * op(B) + beta * C, over the buffers
/// (A: R, B: R, C: RW, or W when beta is 0: C is then not read).
/// Cholesky's update is {no, yes, -1, 1}; the tiled product's is {no, no, 1, 0 or 1}.
struct GemmArgs {
  Transpose transa = Transpose::no;
  Transpose transb = Transpose::no;
  double alpha = 1.0;
  double beta = 1.0;
};

/// The argument of the "syrk" codelet: C = alpha * A * A^T + beta * C on the lower triangle of C
/// only (the upper one is left as it is), over (A: R, C: RW).
struct SyrkArgs {
  double alpha = -1.0;
  double beta = 1.0;
};

/// The "trsm" codelet takes no argument: B = B * L^-T with L lower triangular (not unit), over
/// (L: R, B: RW) — the panel solve of a right-looking Cholesky factorisation.

/// The argument of the "potrf" codelet (A = L * L^T in place, lower triangle, over A: RW): where
/// the tile sits, so that a failure names it.
struct PotrfArgs {
  std::size_t tile = 0;    ///< index of the diagonal tile
  std::size_t offset = 0;  ///< row (and column) of the matrix where the tile starts
};

enum class Kernel : unsigned char { gemm, syrk, trsm, potrf };
inline constexpr std::size_t kKernelCount = 4;
inline constexpr std::array<Kernel, kKernelCount> kKernels{Kernel::gemm, Kernel::syrk, Kernel::trsm, Kernel::potrf};
/// "gemm", "syrk", "trsm", "potrf": the codelet names (the scheduler simulation looks costs up
/// by these names).
[[nodiscard]] std::string_view kernel_name(Kernel kernel) noexcept;

/// Counts the tile tasks each worker ran, per kernel, so that the examples can show where tasks
/// went. Counting is one relaxed atomic increment per task.
class TaskCounter {
 public:
  /// Sizes the table for `workers` workers and clears it; call before submitting.
  void reset(unsigned workers);
  void count(unsigned worker, Kernel kernel) noexcept;
  [[nodiscard]] std::uint64_t get(unsigned worker, Kernel kernel) const noexcept;
  /// One line per worker that ran something: its id, architecture and count per kernel.
  void print(const hetflow::Runtime& runtime, std::FILE* out) const;

 private:
  unsigned workers_ = 0;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
};

/// The four tile codelets. They must outlive the tasks inserted with them (declare them before
/// the Runtime). Tasks are counted in `counter` when one is given.
class Codelets {
 public:
  explicit Codelets(TaskCounter* counter = nullptr);
  Codelets(const Codelets&) = delete;
  Codelets& operator=(const Codelets&) = delete;

  hetflow::Codelet gemm;
  hetflow::Codelet syrk;
  hetflow::Codelet trsm;
  hetflow::Codelet potrf;
};

/// Builds the OpenCL kernels for every OpenCL worker of `runtime` now (nothing without one), so
/// that the first tasks there do not wait for the compiler. Throws hetflow::Error with the build
/// log when they do not build.
void prepare_devices(hetflow::Runtime& runtime);

/// Whether this build has the OpenCL / CUDA implementations (and drivers).
[[nodiscard]] bool built_with_opencl() noexcept;
[[nodiscard]] bool built_with_cuda() noexcept;

/// Threads the host BLAS (OpenBLAS) may use per call. Tile tasks want 1: hetflow already runs
/// one task per core, and a multithreaded BLAS inside each would oversubscribe the cores. A
/// reference computation on the whole matrix wants them all. No-ops without OpenBLAS.
void set_host_blas_threads(int threads) noexcept;
/// The number of CPUs this process may run on.
[[nodiscard]] int host_cpu_count() noexcept;

}  // namespace linalg
