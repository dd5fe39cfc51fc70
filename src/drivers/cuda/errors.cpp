#include "drivers/cuda/errors.hpp"

#include "hetflow/error.hpp"

namespace hetflow::cuda::detail {

std::string describe(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")";
}

void check(cudaError_t status, std::string_view what) {
  if (status == cudaSuccess) return;
  static_cast<void>(cudaGetLastError());
  throw Error("hetflow::cuda: " + std::string(what) + " failed: " + describe(status));
}

}  // namespace hetflow::cuda::detail
