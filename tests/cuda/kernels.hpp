#pragma once
// Kernels for the CUDA driver suite, compiled by nvcc (kernels.cu) and launched from plain C++.
// The launchers do not check for launch errors: reporting them is the driver's job.
#include <cuda_runtime_api.h>

#include <cstddef>

namespace hetflow::test {

/// x[i] *= factor, for i < n.
void launch_scale(cudaStream_t stream, double* x, std::size_t n, double factor);
/// y[i] += a * x[i], for i < n.
void launch_axpy(cudaStream_t stream, std::size_t n, double a, const double* x, double* y);
/// A launch no GPU accepts (more threads per block than the hardware limit of 1024).
void launch_invalid(cudaStream_t stream, double* x);

}  // namespace hetflow::test
