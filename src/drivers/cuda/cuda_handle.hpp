#pragma once
// Owners of CUDA objects. Destruction ignores errors: at process exit the runtime may be
// unloading, and there is nothing left to do about a failed release anyway.
#include <memory>
#include <type_traits>

#include "hetflow/cuda.hpp"

namespace hetflow::cuda::detail {

struct StreamDeleter {
  void operator()(CUstream_st* stream) const noexcept { static_cast<void>(cudaStreamDestroy(stream)); }
};
using Stream = std::unique_ptr<CUstream_st, StreamDeleter>;

struct EventDeleter {
  void operator()(CUevent_st* event) const noexcept { static_cast<void>(cudaEventDestroy(event)); }
};
using Event = std::unique_ptr<CUevent_st, EventDeleter>;

struct BlasDeleter {
  void operator()(cublasContext* handle) const noexcept { static_cast<void>(cublasDestroy(handle)); }
};
using BlasHandle = std::unique_ptr<cublasContext, BlasDeleter>;

struct SolverDeleter {
  void operator()(cusolverDnContext* handle) const noexcept { static_cast<void>(cusolverDnDestroy(handle)); }
};
using SolverHandle = std::unique_ptr<cusolverDnContext, SolverDeleter>;

static_assert(std::is_same_v<cudaStream_t, CUstream_st*> && std::is_same_v<cudaEvent_t, CUevent_st*> &&
              std::is_same_v<cublasHandle_t, cublasContext*> && std::is_same_v<cusolverDnHandle_t, cusolverDnContext*>);

}  // namespace hetflow::cuda::detail
