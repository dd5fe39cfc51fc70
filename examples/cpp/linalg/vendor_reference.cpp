#include "vendor_reference.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "cuda_check.hpp"
#include "internal.hpp"

namespace linalg {
namespace {

template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t count) {
    cuda::check(cudaMalloc(reinterpret_cast<void**>(&data_), sizeof(T) * count), "cudaMalloc");
  }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  [[nodiscard]] T* get() const noexcept { return data_; }

 private:
  T* data_ = nullptr;
};

class Stream {
 public:
  Stream() { cuda::check(cudaStreamCreate(&stream_), "cudaStreamCreate"); }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  [[nodiscard]] cudaStream_t get() const noexcept { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Seconds between two events around what `enqueue` puts on the stream.
class EventTimer {
 public:
  EventTimer() {
    cuda::check(cudaEventCreate(&start_), "cudaEventCreate");
    cuda::check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  template <class F>
  double time(cudaStream_t stream, F&& enqueue) {
    cuda::check(cudaEventRecord(start_, stream), "cudaEventRecord");
    std::forward<F>(enqueue)();
    cuda::check(cudaEventRecord(stop_, stream), "cudaEventRecord");
    cuda::check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float milliseconds = 0;
    cuda::check(cudaEventElapsedTime(&milliseconds, start_, stop_), "cudaEventElapsedTime");
    return milliseconds * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

class Cublas {
 public:
  explicit Cublas(cudaStream_t stream) {
    cuda::check(cublasCreate(&handle_), "cublasCreate");
    cuda::check(cublasSetStream(handle_, stream), "cublasSetStream");
  }
  ~Cublas() { cublasDestroy(handle_); }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
  [[nodiscard]] cublasHandle_t get() const noexcept { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

class Cusolver {
 public:
  explicit Cusolver(cudaStream_t stream) {
    cuda::check(cusolverDnCreate(&handle_), "cusolverDnCreate");
    cuda::check(cusolverDnSetStream(handle_, stream), "cusolverDnSetStream");
  }
  ~Cusolver() { cusolverDnDestroy(handle_); }
  Cusolver(const Cusolver&) = delete;
  Cusolver& operator=(const Cusolver&) = delete;
  [[nodiscard]] cusolverDnHandle_t get() const noexcept { return handle_; }

 private:
  cusolverDnHandle_t handle_ = nullptr;
};

// The CUDA runtime's own message ("CUDA driver version is insufficient...") says little about
// what to do on a machine without a GPU.
void require_gpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    throw hetflow::Error("the vendor library comparison needs a GPU, and the CUDA runtime reports none");
  }
}

}  // namespace

double cublas_dgemm_seconds(std::size_t n, const double* a, const double* b, double* c, unsigned repeat) {
  const int order = detail::blas_int(n, "matrix size");
  const std::size_t bytes = n * n * sizeof(double);
  require_gpu();
  cuda::check(cudaSetDevice(0), "cudaSetDevice");
  Stream stream;
  Cublas cublas(stream.get());
  DeviceArray<double> da(n * n), db(n * n), dc(n * n);
  cuda::check(cudaMemcpy(da.get(), a, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(A)");
  cuda::check(cudaMemcpy(db.get(), b, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(B)");
  const double one = 1.0, zero = 0.0;
  const auto dgemm = [&] {
    cuda::check(cublasDgemm(cublas.get(), CUBLAS_OP_N, CUBLAS_OP_N, order, order, order, &one, da.get(), order,
                            db.get(), order, &zero, dc.get(), order),
                "cublasDgemm");
  };
  EventTimer timer;
  timer.time(stream.get(), dgemm);  // warm-up: library initialisation and kernel loading
  double best = std::numeric_limits<double>::infinity();
  for (unsigned r = 0; r < std::max(repeat, 1u); ++r) best = std::min(best, timer.time(stream.get(), dgemm));
  if (c != nullptr) cuda::check(cudaMemcpy(c, dc.get(), bytes, cudaMemcpyDeviceToHost), "cudaMemcpy(C)");
  return best;
}

double cusolver_dpotrf_seconds(std::size_t n, const double* a, unsigned repeat, int& info) {
  const int order = detail::blas_int(n, "matrix size");
  const std::size_t bytes = n * n * sizeof(double);
  require_gpu();
  cuda::check(cudaSetDevice(0), "cudaSetDevice");
  Stream stream;
  Cusolver cusolver(stream.get());
  DeviceArray<double> da(n * n);
  DeviceArray<int> dinfo(1);
  int lwork = 0;
  cuda::check(cusolverDnDpotrf_bufferSize(cusolver.get(), CUBLAS_FILL_MODE_LOWER, order, da.get(), order, &lwork),
              "cusolverDnDpotrf_bufferSize");
  DeviceArray<double> work(static_cast<std::size_t>(std::max(lwork, 1)));
  EventTimer timer;
  double best = std::numeric_limits<double>::infinity();
  // The factorisation works in place, so every run (the warm-up first) starts from a new copy.
  for (unsigned r = 0; r <= std::max(repeat, 1u); ++r) {
    cuda::check(cudaMemcpyAsync(da.get(), a, bytes, cudaMemcpyHostToDevice, stream.get()), "cudaMemcpy(A)");
    const double seconds = timer.time(stream.get(), [&] {
      cuda::check(cusolverDnDpotrf(cusolver.get(), CUBLAS_FILL_MODE_LOWER, order, da.get(), order, work.get(), lwork,
                                   dinfo.get()),
                  "cusolverDnDpotrf");
    });
    if (r > 0) best = std::min(best, seconds);
  }
  cuda::check(cudaMemcpy(&info, dinfo.get(), sizeof info, cudaMemcpyDeviceToHost), "cudaMemcpy(info)");
  return best;
}

}  // namespace linalg
