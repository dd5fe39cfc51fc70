#pragma once
// CUDA runtime status codes as text, and the check that turns a failed call into hetflow::Error.
#include <string>
#include <string_view>

#include "hetflow/cuda.hpp"

namespace hetflow::cuda::detail {

/// "cudaErrorMemoryAllocation (out of memory)".
[[nodiscard]] std::string describe(cudaError_t status);

/// Throws hetflow::Error for a failed runtime call. The call also left its error as the thread's
/// "last error"; that is cleared, so that it is not taken later for a failed kernel launch.
void check(cudaError_t status, std::string_view what);

}  // namespace hetflow::cuda::detail
