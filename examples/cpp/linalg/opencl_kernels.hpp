#pragma once
// The OpenCL C tile kernels and the host code that launches them. Only OpenCL itself is needed
// here, not the hetflow driver: a launch gets its queue and a way to obtain built kernels, so the
// same code runs under the driver (opencl_codelets.cpp) and in a plain OpenCL program.
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include <functional>
#include <string>
#include <string_view>

#include "linalg.hpp"

namespace linalg::opencl {

/// The program source: kernels linalg_gemm, linalg_trsm_rlt and linalg_potrf_lower.
[[nodiscard]] std::string_view source() noexcept;

/// The build options of the gemm kernel's first choice (a device whose work-groups are too small
/// for it gets another, built when first needed).
[[nodiscard]] std::string preferred_gemm_options();

/// Where a launch goes: a device, its in-order queue, and the kernel `name` of source() built
/// with `options` (cached by whoever provides it).
struct Target {
  cl_device_id device = nullptr;
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;
  std::function<cl_kernel(std::string_view name, std::string_view options)> kernel;
};

/// A matrix in a device buffer, column-major, starting `offset` elements into the buffer.
struct Matrix {
  cl_mem mem = nullptr;
  int rows = 0;
  int cols = 0;
  int ld = 0;
  cl_ulong offset = 0;

  /// The part from element (row, col) on.
  [[nodiscard]] Matrix block(int row, int col) const noexcept {
    return {mem, rows - row, cols - col, ld,
            offset + static_cast<cl_ulong>(col) * static_cast<cl_ulong>(ld) + static_cast<cl_ulong>(row)};
  }
};

/// Width of the column panels the triangular kernels (trsm, potrf) work on; the rest of their
/// work goes to the gemm kernel.
inline constexpr int kPanel = 64;

/// Throws hetflow::Error unless the device does double precision (cl_khr_fp64); remembered per
/// device.
void require_double(cl_device_id device);

/// C (m x n) = alpha op(A) op(B) + beta C; with `lower_only`, only C's lower triangle is written
/// (that is syrk, with B = A and transb = yes). With beta == 0, C is not read.
void gemm(const Target& target, Transpose transa, Transpose transb, int m, int n, int k, double alpha, const Matrix& a,
          const Matrix& b, double beta, const Matrix& c, bool lower_only);

/// B (m x n) = B L^-T with L (n x n) lower triangular, not unit. Blocked: panels of kPanel
/// columns solved one work-item per row, the updates between them by the gemm kernel.
void trsm_right_lower_transposed(const Target& target, int m, int n, const Matrix& l, const Matrix& b);

/// Cholesky factorisation of an n x n tile in place (lower triangle); returns LAPACK's info: 0,
/// or the order of the first leading minor that is not positive. Blocked: diagonal blocks of
/// kPanel by one work-group each, the panels below by the trsm kernel, the trailing updates by
/// the gemm kernel. Waits for the kernels.
[[nodiscard]] int potrf_lower(const Target& target, int n, const Matrix& a);

/// "CL_OUT_OF_RESOURCES (-5)"-style text for error messages.
[[nodiscard]] std::string status_text(cl_int status);

}  // namespace linalg::opencl
