#pragma once
// A device's global memory as an engine memory node: buffers are cl_mem objects, copies go
// through the device's transfer queue.
#include <cstddef>
#include <memory>
#include <string>

#include "drivers/opencl/device.hpp"
#include "hetflow/ext/memory_node.hpp"

namespace hetflow::opencl::detail {

class DeviceMemory final : public ext::MemoryNode {
 public:
  DeviceMemory(std::shared_ptr<const DeviceResources> device, unsigned index);

  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] std::size_t capacity() const noexcept override { return capacity_; }
  [[nodiscard]] std::size_t max_buffer_bytes() const noexcept override;
  [[nodiscard]] void* allocate(std::size_t bytes) override;
  void free(void* buffer, std::size_t bytes) noexcept override;
  [[nodiscard]] std::unique_ptr<ext::Transfer> copy_from_host(void* buffer, const void* host,
                                                              std::size_t bytes) override;
  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override;

 private:
  std::shared_ptr<const DeviceResources> device_;
  std::string name_;
  std::size_t capacity_ = 0;
};

}  // namespace hetflow::opencl::detail
