// The cuBLAS and cuSOLVER handles of a CUDA worker: made inside the first task that asks (the
// time counted as that task's setup, not its work), bound to the worker's compute stream.
#include <chrono>
#include <string>

#include "drivers/cuda/worker.hpp"
#include "hetflow/cuda.hpp"
#include "hetflow/error.hpp"

namespace hetflow::cuda {
namespace {

/// Counts the time until it goes out of scope as setup of the worker's current task.
class SetupTimer {
 public:
  explicit SetupTimer(detail::WorkerContext& worker) : worker_(worker), started_(std::chrono::steady_clock::now()) {}
  ~SetupTimer() {
    worker_.setup_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }
  SetupTimer(const SetupTimer&) = delete;
  SetupTimer& operator=(const SetupTimer&) = delete;

 private:
  detail::WorkerContext& worker_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace

cublasHandle_t cublas(const TaskContext& context) {
  detail::WorkerContext& worker = detail::worker_of(context, "cublas");
  if (!worker.blas) {
    const SetupTimer timer(worker);
    cublasHandle_t handle = nullptr;
    const cublasStatus_t created = cublasCreate(&handle);
    if (created != CUBLAS_STATUS_SUCCESS) {
      throw Error(std::string("hetflow::cuda::cublas: cublasCreate failed: ") + cublasGetStatusString(created));
    }
    detail::BlasHandle owned(handle);
    const cublasStatus_t bound = cublasSetStream(handle, worker.compute.get());
    if (bound != CUBLAS_STATUS_SUCCESS) {
      throw Error(std::string("hetflow::cuda::cublas: cublasSetStream failed: ") + cublasGetStatusString(bound));
    }
    worker.blas = std::move(owned);
  }
  return worker.blas.get();
}

cusolverDnHandle_t cusolver(const TaskContext& context) {
  detail::WorkerContext& worker = detail::worker_of(context, "cusolver");
  if (!worker.solver) {
    const SetupTimer timer(worker);
    cusolverDnHandle_t handle = nullptr;
    const cusolverStatus_t created = cusolverDnCreate(&handle);
    if (created != CUSOLVER_STATUS_SUCCESS) {
      throw Error("hetflow::cuda::cusolver: cusolverDnCreate failed with status " +
                  std::to_string(static_cast<int>(created)));
    }
    detail::SolverHandle owned(handle);
    const cusolverStatus_t bound = cusolverDnSetStream(handle, worker.compute.get());
    if (bound != CUSOLVER_STATUS_SUCCESS) {
      throw Error("hetflow::cuda::cusolver: cusolverDnSetStream failed with status " +
                  std::to_string(static_cast<int>(bound)));
    }
    worker.solver = std::move(owned);
  }
  return worker.solver.get();
}

}  // namespace hetflow::cuda
