#pragma once
// CUDA workers: one per GPU, each with the GPU's memory as a memory node. Link hetflow::cuda
// (built when the CUDA toolkit is found) and add the driver to the runtime:
//
//   hetflow::Runtime rt(hetflow::Config{.drivers = {hetflow::cuda::make_driver()}});
//
// A CUDA implementation launches on stream(context) (cuBLAS and cuSOLVER handles bound to it
// come from cublas() and cusolver()); the driver waits for that stream before the task counts
// as done. Copies to and from the GPU run on their own streams and overlap with kernels.
// Registered data arrive as device pointers: context.buffer(i).as<double>().
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <memory>

#include "hetflow/codelet.hpp"
#include "hetflow/ext/driver.hpp"

namespace hetflow::cuda {

struct DriverOptions {
  /// At most this many GPUs (0: all). HETFLOW_NCUDA overrides the default, not a value set here.
  unsigned max_devices = 0;
};

/// The GPUs the CUDA runtime reports (0 when there is none, or no driver).
[[nodiscard]] unsigned device_count() noexcept;

/// A driver with one worker per GPU (none when there is no GPU).
[[nodiscard]] std::shared_ptr<ext::Driver> make_driver(DriverOptions options = {});

/// The GPU of the worker running `context`'s task; throws hetflow::Error outside a CUDA worker.
[[nodiscard]] int device(const TaskContext& context);
/// The stream the task's kernels go to.
[[nodiscard]] cudaStream_t stream(const TaskContext& context);
/// A cuBLAS handle of the worker, bound to stream(context).
[[nodiscard]] cublasHandle_t cublas(const TaskContext& context);
/// A cuSOLVER dense handle of the worker, bound to stream(context).
[[nodiscard]] cusolverDnHandle_t cusolver(const TaskContext& context);

}  // namespace hetflow::cuda
