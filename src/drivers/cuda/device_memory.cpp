#include "drivers/cuda/device_memory.hpp"

#include <algorithm>
#include <utility>

#include "drivers/cuda/device.hpp"
#include "drivers/cuda/errors.hpp"

namespace hetflow::cuda::detail {
namespace {

/// An upload: an event recorded on the upload stream right after the copy.
class Upload final : public ext::Transfer {
 public:
  Upload(Event event, int device) : event_(std::move(event)), device_(device) {}

  void wait() override {
    const cudaError_t status = cudaEventSynchronize(event_.get());
    check(status, "copy to GPU " + std::to_string(device_));
  }

  // A failed copy counts as done: wait() then reports the failure.
  [[nodiscard]] bool done() override {
    const cudaError_t status = cudaEventQuery(event_.get());
    if (status == cudaErrorNotReady) return false;
    return true;
  }

 private:
  Event event_;
  int device_;
};

}  // namespace

void HostPins::add(int device, void* host, std::size_t bytes) {
  std::lock_guard guard(mutex_);
  auto found = pins_.find(host);
  if (found != pins_.end()) {
    ++found->second;
    return;
  }
  ScopedDevice on(device);
  if (on.status() != cudaSuccess) return;
  if (cudaHostRegister(host, bytes, cudaHostRegisterPortable) != cudaSuccess) {
    // Already page-locked by its owner, overlapping a locked neighbour (tiles of one matrix
    // share pages), or read-only memory: copies still work, from pageable memory.
    static_cast<void>(cudaGetLastError());
    return;
  }
  pins_.emplace(host, 1);
}

void HostPins::remove(int device, void* host) noexcept {
  std::lock_guard guard(mutex_);
  auto found = pins_.find(host);
  if (found == pins_.end()) return;
  if (--found->second > 0) return;
  pins_.erase(found);
  ScopedDevice on(device);
  if (cudaHostUnregister(host) != cudaSuccess) static_cast<void>(cudaGetLastError());
}

DeviceMemory::DeviceMemory(int device, std::size_t pin_threshold, std::shared_ptr<HostPins> pins)
    : device_(device), pin_threshold_(pin_threshold), pins_(std::move(pins)) {
  ScopedDevice on(device_);
  on.check_ok(device_);
  upload_ = make_stream();
  download_ = make_stream();
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  // What other processes and this process's contexts hold already is not ours to fill; the
  // margin leaves room for library workspaces (cuBLAS, cuSOLVER) and for the scratch memory
  // implementations allocate themselves, which cannot make the engine evict anything.
  const std::size_t margin = std::max<std::size_t>(std::size_t{512} << 20, total_bytes / 20);
  capacity_ = free_bytes > margin ? free_bytes - margin : 0;
}

DeviceMemory::~DeviceMemory() {
  ScopedDevice on(device_);
  upload_.reset();
  download_.reset();
}

void* DeviceMemory::allocate(std::size_t bytes) {
  ScopedDevice on(device_);
  on.check_ok(device_);
  void* buffer = nullptr;
  // cudaMalloc gives nullptr for 0 bytes, which would read as "full".
  const cudaError_t status = cudaMalloc(&buffer, std::max<std::size_t>(bytes, 1));
  if (status == cudaErrorMemoryAllocation) {
    static_cast<void>(cudaGetLastError());
    return nullptr;
  }
  check(status, "cudaMalloc of " + std::to_string(bytes) + " bytes on GPU " + std::to_string(device_));
  return buffer;
}

void DeviceMemory::free(void* buffer, std::size_t /*bytes*/) noexcept {
  ScopedDevice on(device_);
  if (cudaFree(buffer) != cudaSuccess) static_cast<void>(cudaGetLastError());
}

std::unique_ptr<ext::Transfer> DeviceMemory::copy_from_host(void* buffer, const void* host, std::size_t bytes) {
  ScopedDevice on(device_);
  on.check_ok(device_);
  Event event = make_event();
  check(cudaMemcpyAsync(buffer, host, bytes, cudaMemcpyHostToDevice, upload_.get()),
        "cudaMemcpyAsync to GPU " + std::to_string(device_));
  check(cudaEventRecord(event.get(), upload_.get()), "cudaEventRecord");
  return std::make_unique<Upload>(std::move(event), device_);
}

void DeviceMemory::copy_to_host(void* host, const void* buffer, std::size_t bytes) {
  ScopedDevice on(device_);
  on.check_ok(device_);
  // Waits for this copy only: the download stream is shared, and a synchronisation of the
  // stream would wait for the copies other threads queue behind this one too.
  Event event = make_event();
  check(cudaMemcpyAsync(host, buffer, bytes, cudaMemcpyDeviceToHost, download_.get()),
        "cudaMemcpyAsync from GPU " + std::to_string(device_));
  check(cudaEventRecord(event.get(), download_.get()), "cudaEventRecord");
  check(cudaEventSynchronize(event.get()), "copy from GPU " + std::to_string(device_));
}

void DeviceMemory::host_buffer_added(void* host, std::size_t bytes) {
  if (host != nullptr && bytes >= pin_threshold_) pins_->add(device_, host, bytes);
}

void DeviceMemory::host_buffer_removed(void* host, std::size_t bytes) noexcept {
  if (host != nullptr && bytes >= pin_threshold_) pins_->remove(device_, host);
}

}  // namespace hetflow::cuda::detail
