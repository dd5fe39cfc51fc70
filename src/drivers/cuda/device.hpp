#pragma once
// Using one GPU from any thread, and the per-GPU objects the driver creates on it.
//
// The CUDA runtime keeps a "current device" per host thread. Memory nodes are called from many
// threads (a GPU's worker fetching data another GPU wrote, the application acquiring data), so
// every node call makes its device current for its own duration and then puts back the caller's:
// a worker thread must find its own device current when its next kernel launches.
#include "drivers/cuda/cuda_handle.hpp"
#include "hetflow/cuda.hpp"

namespace hetflow::cuda::detail {

/// Makes `device` current on this thread for the life of the object, then restores the
/// previous one. Never throws by itself: callers that need the device check status().
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) noexcept;
  ~ScopedDevice();
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

  [[nodiscard]] cudaError_t status() const noexcept { return status_; }
  /// Throws hetflow::Error naming `device` when it could not be made current.
  void check_ok(int device) const;

 private:
  int previous_ = 0;
  cudaError_t status_ = cudaSuccess;
  bool restore_ = false;
};

/// A stream on the current device that does not wait for the legacy default stream, so that
/// code elsewhere in the process using stream 0 does not serialise with the runtime's work.
[[nodiscard]] Stream make_stream();

/// An event on the current device, without timing (cheaper to record and to wait for).
[[nodiscard]] Event make_event();

}  // namespace hetflow::cuda::detail
