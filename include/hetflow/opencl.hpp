#pragma once
// OpenCL workers: one per OpenCL device, each with its device's global memory as a memory node.
// Link hetflow::opencl and add the driver to the runtime:
//
//   hetflow::Runtime rt(hetflow::Config{.drivers = {hetflow::opencl::make_driver()}});
//
// An OpenCL implementation enqueues on device(context).queue; the driver waits for that queue
// before the task counts as done. Registered data arrive as cl_mem (see buffer()).
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "hetflow/codelet.hpp"
#include "hetflow/ext/driver.hpp"

namespace hetflow::opencl {

struct DriverOptions {
  /// The device types to use. CPU devices are left out by default: they would compete for the
  /// cores the CPU workers use. HETFLOW_OPENCL_DEVICES (gpu, accelerator, cpu, all, or a
  /// comma-separated list) overrides the default, not a value set here.
  cl_device_type device_types = CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR;
  bool device_types_set = false;  ///< true: device_types was chosen in code (the environment is ignored)
  /// At most this many devices (0: all that match).
  unsigned max_devices = 0;
};

/// A driver with one worker per matching device (none when no platform or device matches).
[[nodiscard]] std::shared_ptr<ext::Driver> make_driver(DriverOptions options = {});

/// What an OpenCL implementation works with: its worker's device.
struct Device {
  cl_platform_id platform = nullptr;
  cl_device_id device = nullptr;
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;  ///< in order; the driver waits for it after each task
  std::string name;
};

/// The device of the worker running `context`'s task. Throws hetflow::Error outside an OpenCL
/// worker.
[[nodiscard]] const Device& device(const TaskContext& context);

/// The kernel `name` from OpenCL C `source`, built for the worker's device the first time and
/// cached per (device, source, options). Throws hetflow::Error with the build log when the
/// program does not build, or when it has no such kernel.
[[nodiscard]] cl_kernel kernel(const TaskContext& context, std::string_view source, std::string_view name,
                               std::string_view build_options = {});

/// The i-th registered buffer of the task, as the cl_mem it is on the worker's device.
[[nodiscard]] inline cl_mem buffer(const TaskContext& context, std::size_t index) {
  return static_cast<cl_mem>(context.buffer(index).ptr);
}

}  // namespace hetflow::opencl
