#pragma once
// One vendor library call on the whole matrix, timed alone: what the tiled versions are measured
// against on a GPU. Only in builds with CUDA (HETFLOW_EXAMPLE_WITH_CUDA).
#include <cstddef>

namespace linalg {

/// C = A * B with one cublasDgemm on GPU 0 (n x n, column-major, ld = n). The matrices are
/// copied to the GPU first and C back after; only the call is timed (CUDA events), once after a
/// warm-up call, best of `repeat`. Returns seconds.
[[nodiscard]] double cublas_dgemm_seconds(std::size_t n, const double* a, const double* b, double* c, unsigned repeat);

/// A = L * L^T (lower) with one cusolverDnDpotrf on GPU 0, timed like cublas_dgemm_seconds
/// (the factorised matrix is not copied back). `info` gets cuSOLVER's info. Returns seconds.
[[nodiscard]] double cusolver_dpotrf_seconds(std::size_t n, const double* a, unsigned repeat, int& info);

}  // namespace linalg
