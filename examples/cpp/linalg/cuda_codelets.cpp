// The CUDA implementations: cuBLAS and cuSOLVER on the worker's stream (the handles the hetflow
// CUDA driver binds to it), so the driver's wait for the stream covers them.
#include <hetflow/cuda.hpp>
#include <map>
#include <string>

#include "cuda_check.hpp"
#include "internal.hpp"

namespace linalg::detail {
namespace {

cublasOperation_t cublas_operation(Transpose t) noexcept { return t == Transpose::no ? CUBLAS_OP_N : CUBLAS_OP_T; }

// The driver's handle may have been left in device pointer mode by someone else's codelet; ours
// pass alpha and beta from the host.
cublasHandle_t host_pointer_handle(const hetflow::TaskContext& context) {
  cublasHandle_t handle = hetflow::cuda::cublas(context);
  cuda::check(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
  return handle;
}

void cuda_gemm(hetflow::TaskContext& context) {
  const auto& args = context.arg<GemmArgs>();
  const GemmShape s = gemm_shape(context, args);
  cuda::check(
      cublasDgemm(host_pointer_handle(context), cublas_operation(args.transa), cublas_operation(args.transb), s.m, s.n,
                  s.k, &args.alpha, context.buffer(0).as<const double>(), s.a.ld, context.buffer(1).as<const double>(),
                  s.b.ld, &args.beta, context.buffer(2).as<double>(), s.c.ld),
      "cublasDgemm");
}

void cuda_syrk(hetflow::TaskContext& context) {
  const auto& args = context.arg<SyrkArgs>();
  const SyrkShape s = syrk_shape(context);
  cuda::check(
      cublasDsyrk(host_pointer_handle(context), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, s.n, s.k, &args.alpha,
                  context.buffer(0).as<const double>(), s.a.ld, &args.beta, context.buffer(1).as<double>(), s.c.ld),
      "cublasDsyrk");
}

void cuda_trsm(hetflow::TaskContext& context) {
  const TrsmShape s = trsm_shape(context);
  const double one = 1.0;
  cuda::check(cublasDtrsm(host_pointer_handle(context), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T,
                          CUBLAS_DIAG_NON_UNIT, s.m, s.n, &one, context.buffer(0).as<const double>(), s.l.ld,
                          context.buffer(1).as<double>(), s.b.ld),
              "cublasDtrsm");
}

// cuSOLVER's scratch space and info word, kept per worker thread and GPU (a CUDA worker drives
// one GPU from one thread), grown when a larger tile needs more; freed when the worker ends.
class PotrfWorkspace {
 public:
  explicit PotrfWorkspace(int device) : device_(device) {}
  PotrfWorkspace(const PotrfWorkspace&) = delete;
  PotrfWorkspace& operator=(const PotrfWorkspace&) = delete;
  ~PotrfWorkspace() {
    // Nothing to report to at thread exit: a failure here only leaks until the process ends.
    if (cudaSetDevice(device_) != cudaSuccess) return;
    cudaFree(work_);
    cudaFree(info_);
  }

  double* work(int elements) {
    if (elements > capacity_) {
      cuda::check(cudaFree(work_), "cudaFree");
      work_ = nullptr;
      capacity_ = 0;
      cuda::check(cudaMalloc(reinterpret_cast<void**>(&work_), sizeof(double) * static_cast<std::size_t>(elements)),
                  "cudaMalloc(potrf workspace)");
      capacity_ = elements;
    }
    return work_;
  }
  int* info() {
    if (info_ == nullptr) cuda::check(cudaMalloc(reinterpret_cast<void**>(&info_), sizeof(int)), "cudaMalloc(info)");
    return info_;
  }

 private:
  int device_;
  double* work_ = nullptr;
  int capacity_ = 0;
  int* info_ = nullptr;
};

PotrfWorkspace& potrf_workspace(int device) {
  thread_local std::map<int, PotrfWorkspace> workspaces;
  return workspaces.try_emplace(device, device).first->second;
}

void cuda_potrf(hetflow::TaskContext& context) {
  const auto& args = context.arg<PotrfArgs>();
  const Matrix a = potrf_shape(context);
  cusolverDnHandle_t handle = hetflow::cuda::cusolver(context);
  double* tile = context.buffer(0).as<double>();
  int lwork = 0;
  cuda::check(cusolverDnDpotrf_bufferSize(handle, CUBLAS_FILL_MODE_LOWER, a.rows, tile, a.ld, &lwork),
              "cusolverDnDpotrf_bufferSize");
  PotrfWorkspace& workspace = potrf_workspace(hetflow::cuda::device(context));
  int* device_info = workspace.info();
  cuda::check(
      cusolverDnDpotrf(handle, CUBLAS_FILL_MODE_LOWER, a.rows, tile, a.ld, workspace.work(lwork), lwork, device_info),
      "cusolverDnDpotrf");
  // The info word is needed now, to fail this task rather than a later one; the driver would
  // wait for the stream after this anyway, so the wait costs nothing extra.
  const cudaStream_t stream = hetflow::cuda::stream(context);
  int info = 0;
  cuda::check(cudaMemcpyAsync(&info, device_info, sizeof info, cudaMemcpyDeviceToHost, stream),
              "cudaMemcpyAsync(info)");
  cuda::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (info != 0) throw_not_positive_definite(args, info, "cuda");
}

}  // namespace

hetflow::Codelet::Implementation cuda_implementation(Kernel kernel) {
  switch (kernel) {
    case Kernel::gemm: return cuda_gemm;
    case Kernel::syrk: return cuda_syrk;
    case Kernel::trsm: return cuda_trsm;
    case Kernel::potrf: return cuda_potrf;
  }
  return {};
}

}  // namespace linalg::detail
