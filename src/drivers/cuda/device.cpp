#include "drivers/cuda/device.hpp"

#include <string>

#include "drivers/cuda/errors.hpp"
#include "hetflow/error.hpp"

namespace hetflow::cuda {
namespace detail {

ScopedDevice::ScopedDevice(int device) noexcept {
  status_ = cudaGetDevice(&previous_);
  if (status_ == cudaSuccess && previous_ != device) {
    status_ = cudaSetDevice(device);
    restore_ = status_ == cudaSuccess;
  }
  if (status_ != cudaSuccess) static_cast<void>(cudaGetLastError());
}

ScopedDevice::~ScopedDevice() {
  if (restore_) static_cast<void>(cudaSetDevice(previous_));
}

void ScopedDevice::check_ok(int device) const {
  if (status_ != cudaSuccess) {
    throw Error("hetflow::cuda: cannot use GPU " + std::to_string(device) + ": " + describe(status_));
  }
}

Stream make_stream() {
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return Stream(stream);
}

Event make_event() {
  cudaEvent_t event = nullptr;
  check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return Event(event);
}

}  // namespace detail

unsigned device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return 0;
  }
  return count > 0 ? static_cast<unsigned>(count) : 0;
}

}  // namespace hetflow::cuda
