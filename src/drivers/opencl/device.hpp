#pragma once
// Finding OpenCL devices and holding what each worker's device needs: a context, the queue
// kernels go to and the queue copies go to.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "drivers/opencl/cl_handle.hpp"
#include "hetflow/opencl.hpp"

namespace hetflow::opencl::detail {

/// The device types HETFLOW_OPENCL_DEVICES names ("gpu", "cpu,accelerator", "all").
/// Throws InvalidArgument naming the variable for anything else.
[[nodiscard]] cl_device_type parse_device_types(std::string_view text);

struct DeviceId {
  cl_platform_id platform = nullptr;
  cl_device_id device = nullptr;
};

/// The available devices of the given types, platform by platform, at most `max_devices`
/// (0: all). No platform at all is not an error: the list is empty.
[[nodiscard]] std::vector<DeviceId> find_devices(cl_device_type types, unsigned max_devices);

/// One device opened for a worker. Shared by the worker's state and its memory node, which the
/// engine may keep a little longer than the driver.
class DeviceResources {
 public:
  explicit DeviceResources(DeviceId id);
  ~DeviceResources();
  DeviceResources(const DeviceResources&) = delete;
  DeviceResources& operator=(const DeviceResources&) = delete;

  /// What implementations see (raw handles into the objects owned here).
  [[nodiscard]] const Device& view() const noexcept { return view_; }
  [[nodiscard]] cl_context context() const noexcept { return context_.get(); }
  [[nodiscard]] cl_device_id device() const noexcept { return view_.device; }
  [[nodiscard]] cl_command_queue compute_queue() const noexcept { return compute_queue_.get(); }
  [[nodiscard]] cl_command_queue transfer_queue() const noexcept { return transfer_queue_.get(); }
  [[nodiscard]] const std::string& name() const noexcept { return view_.name; }
  [[nodiscard]] std::size_t global_memory() const noexcept { return global_memory_; }
  [[nodiscard]] std::size_t max_allocation() const noexcept { return max_allocation_; }

 private:
  // Declared before the queues so that it is released after them.
  OwnedContext context_;
  OwnedQueue compute_queue_;
  OwnedQueue transfer_queue_;
  Device view_;
  std::size_t global_memory_ = 0;
  std::size_t max_allocation_ = 0;
};

}  // namespace hetflow::opencl::detail
