#pragma once
// CUDA workers: one per GPU, each with the GPU's memory as a memory node. Link hetflow::cuda
// (built when the CUDA toolkit is found) and add the driver to the runtime:
//
//   hetflow::Runtime rt(hetflow::Config{.drivers = {hetflow::cuda::make_driver()}});
//
// A CUDA implementation launches on stream(context) (cuBLAS and cuSOLVER handles bound to it
// come from cublas() and cusolver()); the driver waits for that stream before the task counts
// as done, and a kernel that failed to launch fails the task. Copies to and from the GPU run on
// their own streams and overlap with kernels. Registered data arrive as device pointers:
// context.buffer(i).as<double>(). See docs/cuda.md.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstddef>
#include <memory>

#include "hetflow/codelet.hpp"
#include "hetflow/export.hpp"
#include "hetflow/ext/driver.hpp"

namespace hetflow::cuda {

struct DriverOptions {
  /// At most this many GPUs (0: all). HETFLOW_NCUDA overrides the default, not a value set here
  /// (HETFLOW_NCUDA=0 leaves the GPUs unused).
  unsigned max_devices = 0;
  /// Registered host buffers of at least this many bytes are page-locked while registered, as
  /// copies from and to page-locked memory run about twice as fast. Page-locking costs time at
  /// registration (about a millisecond per 10 MB); a buffer that cannot be locked (one that
  /// overlaps a locked one, say) is simply copied from pageable memory. SIZE_MAX: never.
  std::size_t pin_threshold = std::size_t{1} << 20;
};

/// The GPUs the CUDA runtime reports (0 when there is none, or no driver).
[[nodiscard]] HETFLOW_API unsigned device_count() noexcept;

/// A driver with one worker per GPU (none when there is no GPU). Throws InvalidArgument when
/// HETFLOW_NCUDA is not a whole number. A driver serves one runtime at a time, once (refused
/// otherwise, as every driver).
[[nodiscard]] HETFLOW_API std::shared_ptr<ext::Driver> make_driver(DriverOptions options = {});

/// The GPU of the worker running `context`'s task; throws hetflow::Error outside a CUDA worker.
[[nodiscard]] HETFLOW_API int device(const TaskContext& context);
/// The stream the task's kernels go to.
[[nodiscard]] HETFLOW_API cudaStream_t stream(const TaskContext& context);
/// Seconds the running implementation spent on one-off preparation of its own (compiling a
/// kernel it keeps, say): the performance model does not learn them. Throws hetflow::Error
/// outside a CUDA worker.
HETFLOW_API void add_setup_seconds(const TaskContext& context, double seconds);
/// A cuBLAS handle of the worker, bound to stream(context); made on first use.
[[nodiscard]] HETFLOW_API cublasHandle_t cublas(const TaskContext& context);
/// A cuSOLVER dense handle of the worker, bound to stream(context); made on first use.
[[nodiscard]] HETFLOW_API cusolverDnHandle_t cusolver(const TaskContext& context);

}  // namespace hetflow::cuda
