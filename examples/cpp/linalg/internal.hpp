#pragma once
// What the per-architecture implementations share: the shapes of the tile operations, checked
// once from the task's buffers, and the error for a tile that is not positive definite.
#include <cstddef>
#include <string_view>

#include "linalg.hpp"

namespace linalg::detail {

/// A size or leading dimension as the int BLAS interfaces take; throws if it does not fit.
[[nodiscard]] int blas_int(std::size_t value, const char* what);

/// A buffer's matrix as BLAS sees it.
struct Matrix {
  int rows = 0;
  int cols = 0;
  int ld = 0;
};
[[nodiscard]] Matrix matrix_of(const hetflow::DataView& view, const char* what);

/// C (m x n) = alpha op(A) (m x k) op(B) (k x n) + beta C.
struct GemmShape {
  Matrix a, b, c;
  int m = 0, n = 0, k = 0;
};
[[nodiscard]] GemmShape gemm_shape(const hetflow::TaskContext& context, const GemmArgs& args);

/// C (n x n) = alpha A (n x k) A^T + beta C.
struct SyrkShape {
  Matrix a, c;
  int n = 0, k = 0;
};
[[nodiscard]] SyrkShape syrk_shape(const hetflow::TaskContext& context);

/// B (m x n) = B L^-T, L n x n.
struct TrsmShape {
  Matrix l, b;
  int m = 0, n = 0;
};
[[nodiscard]] TrsmShape trsm_shape(const hetflow::TaskContext& context);

/// A (n x n).
[[nodiscard]] Matrix potrf_shape(const hetflow::TaskContext& context);

/// Throws hetflow::Error naming the tile, the implementation and LAPACK's info (the order of
/// the leading minor that is not positive, counted within the tile).
[[noreturn]] void throw_not_positive_definite(const PotrfArgs& args, long info, std::string_view implementation);

#ifdef HETFLOW_EXAMPLE_WITH_OPENCL
[[nodiscard]] hetflow::Codelet::Implementation opencl_implementation(Kernel kernel);
void prepare_opencl(hetflow::Runtime& runtime);
#endif
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
[[nodiscard]] hetflow::Codelet::Implementation cuda_implementation(Kernel kernel);
#endif

}  // namespace linalg::detail
