#pragma once
// A GPU's memory as an engine memory node, with an upload and a download stream of its own so
// that copies overlap with the kernels of the GPU's worker.
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "drivers/cuda/cuda_handle.hpp"
#include "hetflow/ext/memory_node.hpp"

namespace hetflow::cuda::detail {

/// Page-locked host buffers, shared by all the GPUs of a driver: a range can be registered with
/// CUDA only once per process, and cudaHostRegisterPortable makes it page-locked for every GPU.
/// Counted, because each GPU's node is told about the same buffer.
class HostPins {
 public:
  /// Page-locks [host, host + bytes) unless it is already; a range that cannot be locked is
  /// left pageable.
  void add(int device, void* host, std::size_t bytes);
  /// Unlocks `host` once no node holds it any more.
  void remove(int device, void* host) noexcept;

 private:
  std::mutex mutex_;
  std::map<void*, unsigned> pins_;  // registered start -> how many nodes hold it
};

/// One GPU's memory.
class DeviceMemory final : public ext::MemoryNode {
 public:
  DeviceMemory(int device, std::size_t pin_threshold, std::shared_ptr<HostPins> pins);
  ~DeviceMemory() override;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;

  [[nodiscard]] std::string name() const override { return "cuda" + std::to_string(device_); }
  [[nodiscard]] std::size_t capacity() const noexcept override { return capacity_; }
  [[nodiscard]] void* allocate(std::size_t bytes) override;
  void free(void* buffer, std::size_t bytes) noexcept override;
  [[nodiscard]] std::unique_ptr<ext::Transfer> copy_from_host(void* buffer, const void* host,
                                                              std::size_t bytes) override;
  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override;
  void host_buffer_added(void* host, std::size_t bytes) override;
  void host_buffer_removed(void* host, std::size_t bytes) noexcept override;

 private:
  const int device_;
  const std::size_t pin_threshold_;
  const std::shared_ptr<HostPins> pins_;
  std::size_t capacity_ = 0;
  Stream upload_;
  Stream download_;
};

}  // namespace hetflow::cuda::detail
