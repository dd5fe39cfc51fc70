#include <algorithm>

#include "kernels.hpp"

namespace hetflow::test {
namespace {

constexpr unsigned kThreads = 256;

// Grid-stride loops: any n works with a bounded grid.
__global__ void scale_kernel(double* x, std::size_t n, double factor) {
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    x[i] *= factor;
  }
}

__global__ void axpy_kernel(std::size_t n, double a, const double* x, double* y) {
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    y[i] += a * x[i];
  }
}

unsigned blocks_for(std::size_t n) {
  return static_cast<unsigned>(std::min<std::size_t>((n + kThreads - 1) / kThreads, 4096));
}

}  // namespace

void launch_scale(cudaStream_t stream, double* x, std::size_t n, double factor) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, factor);
}

void launch_axpy(cudaStream_t stream, std::size_t n, double a, const double* x, double* y) {
  if (n == 0) return;
  axpy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, a, x, y);
}

void launch_invalid(cudaStream_t stream, double* x) { scale_kernel<<<1, 4096, 0, stream>>>(x, 1, 1.0); }

}  // namespace hetflow::test
