#pragma once
// Failed CUDA, cuBLAS and cuSOLVER calls as hetflow::Error, naming the call.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <hetflow/error.hpp>
#include <string>

namespace linalg::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw hetflow::Error(std::string("linalg CUDA: ") + what + " failed: " + cudaGetErrorString(status));
  }
}

inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw hetflow::Error(std::string("linalg CUDA: ") + what + " failed: " + cublasGetStatusString(status));
  }
}

inline void check(cusolverStatus_t status, const char* what) {
  if (status != CUSOLVER_STATUS_SUCCESS) {
    throw hetflow::Error(std::string("linalg CUDA: ") + what + " failed: cusolver status " +
                         std::to_string(static_cast<int>(status)));
  }
}

}  // namespace linalg::cuda
