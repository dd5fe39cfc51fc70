#pragma once
// OpenCL workers: one per OpenCL device, each with its device's global memory as a memory node.
// Link hetflow::opencl (built when an OpenCL SDK is found) and add the driver to the runtime:
//
//   hetflow::Runtime rt(hetflow::Config{.drivers = {hetflow::opencl::make_driver()}});
//
// An OpenCL implementation enqueues on device(context).queue; the driver waits for that queue
// before the task counts as done. Registered data arrive as cl_mem (see buffer()). Copies to and
// from the device go through a queue of their own, so they overlap with kernels.
//
//   void scale_opencl(hetflow::TaskContext& context) {
//     namespace cl = hetflow::opencl;
//     cl_kernel k = cl::kernel(context, kScaleSource, "scale");
//     cl::set_args(k, cl::buffer(context, 0), 2.0f, static_cast<cl_uint>(context.buffer(0).nx()));
//     size_t global = context.buffer(0).nx();
//     cl::check(clEnqueueNDRangeKernel(cl::device(context).queue, k, 1, nullptr, &global, nullptr, 0, nullptr,
//                                      nullptr), "clEnqueueNDRangeKernel");
//   }
//
// docs/opencl.md has the details.
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "hetflow/codelet.hpp"
#include "hetflow/export.hpp"
#include "hetflow/ext/driver.hpp"

namespace hetflow {
class Runtime;
}

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

/// A driver with one worker per matching device (none when no platform or device matches), in
/// the order the platforms and their devices are listed. Throws InvalidArgument when
/// HETFLOW_OPENCL_DEVICES is consulted and malformed, hetflow::Error when a device's context or
/// queues cannot be created. A driver serves one Runtime at a time, once (its workers' program
/// caches are not shared between threads): a second live runtime given it, or a Config listing
/// it twice, is refused with InvalidArgument.
[[nodiscard]] HETFLOW_API std::shared_ptr<ext::Driver> make_driver(DriverOptions options = {});

/// What an OpenCL implementation works with: its worker's device.
struct Device {
  cl_platform_id platform = nullptr;
  cl_device_id device = nullptr;
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;  ///< in order; the driver waits for it after each task
  cl_device_type type = 0;
  std::string name;
};

/// The device of the worker running `context`'s task. Throws hetflow::Error outside an OpenCL
/// worker.
[[nodiscard]] HETFLOW_API const Device& device(const TaskContext& context);

/// The kernel `name` from OpenCL C `source`, built for the worker's device the first time and
/// cached per (device, source, options); the cache owns the kernel. Throws hetflow::Error with
/// the build log when the program does not build, or when it has no such kernel.
///
/// A worker runs one task at a time, but a task that waits on a future runs other tasks
/// meanwhile: set a kernel's arguments and enqueue it without waiting in between. The kernel is
/// the device's one for every task and keeps the argument values the last task set: set every
/// argument in each task (set_args), or a forgotten one is another task's buffer.
[[nodiscard]] HETFLOW_API cl_kernel kernel(const TaskContext& context, std::string_view source, std::string_view name,
                                           std::string_view build_options = {});

/// Builds the program of `source` with `build_options` now, for the device of every OpenCL
/// worker of `rt` (a task pinned to each), into the cache that kernel() reads. The first tasks
/// then do not wait for the compiler, and a program that does not build is reported before any
/// work depends on it: throws hetflow::Error with the build log, after every build has ended.
///
///     hetflow::opencl::prepare_program(rt, kSource);  // before submitting the tasks
HETFLOW_API void prepare_program(Runtime& rt, std::string_view source, std::string_view build_options = {});

/// Seconds the running implementation spent on one-off preparation of its own (a program it
/// built and keeps, through other OpenCL bindings): the performance model does not learn them,
/// as it does not learn the builds of kernel(). Throws hetflow::Error outside an OpenCL worker.
HETFLOW_API void add_setup_seconds(const TaskContext& context, double seconds);
/// The i-th registered buffer of the task, as the cl_mem it is on the worker's device.
[[nodiscard]] inline cl_mem buffer(const TaskContext& context, std::size_t index) {
  return static_cast<cl_mem>(context.buffer(index).ptr);
}

/// The name of an OpenCL status code ("CL_OUT_OF_RESOURCES"), or "unknown OpenCL error <code>".
[[nodiscard]] HETFLOW_API std::string error_name(cl_int code);

/// Throws hetflow::Error "hetflow::opencl: <what> failed: <error name>" unless `code` is
/// CL_SUCCESS.
HETFLOW_API void check(cl_int code, std::string_view what);

/// A `__local` kernel argument of `bytes` bytes (for set_args).
struct LocalMemory {
  std::size_t bytes = 0;
};

/// Sets one kernel argument (clSetKernelArg), throwing hetflow::Error naming the argument's index.
HETFLOW_API void set_arg(cl_kernel kernel, cl_uint index, std::size_t size, const void* value);

/// Sets a kernel's arguments in order: cl_mem, scalars, plain structs, LocalMemory. Each C++ type
/// must be the kernel parameter's (cl_float for float, cl_uint for uint): values are copied as
/// bytes, not converted.
template <class... Args>
void set_args(cl_kernel kernel, const Args&... args) {
  static_assert((std::is_trivially_copyable_v<Args> && ...), "OpenCL kernel arguments are copied bytewise");
  cl_uint index = 0;
  auto set_one = [&](const auto& arg) {
    if constexpr (std::is_same_v<std::decay_t<decltype(arg)>, LocalMemory>) {
      set_arg(kernel, index++, arg.bytes, nullptr);
    } else {
      set_arg(kernel, index++, sizeof(arg), &arg);
    }
  };
  (set_one(args), ...);
}

}  // namespace hetflow::opencl
