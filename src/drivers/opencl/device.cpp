#include "drivers/opencl/device.hpp"

#include <algorithm>
#include <cctype>

#include "hetflow/error.hpp"

namespace hetflow::opencl::detail {
namespace {

constexpr std::string_view kDevicesVariable = "HETFLOW_OPENCL_DEVICES";
// What the ICD loader answers when no platform is installed (cl_khr_icd); the headers define
// its name only in cl_ext.h.
constexpr cl_int kPlatformNotFound = -1001;

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())) != 0) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())) != 0) text.remove_suffix(1);
  return text;
}

std::string device_string(cl_device_id device, cl_device_info what, const char* label) {
  std::size_t size = 0;
  check(clGetDeviceInfo(device, what, 0, nullptr, &size), std::string("clGetDeviceInfo(") + label + ")");
  std::string text(size, '\0');
  check(clGetDeviceInfo(device, what, size, text.data(), nullptr), std::string("clGetDeviceInfo(") + label + ")");
  while (!text.empty() && text.back() == '\0') text.pop_back();
  return text;
}

template <class T>
T device_value(cl_device_id device, cl_device_info what, const char* label) {
  T value{};
  check(clGetDeviceInfo(device, what, sizeof(value), &value, nullptr), std::string("clGetDeviceInfo(") + label + ")");
  return value;
}

}  // namespace

cl_device_type parse_device_types(std::string_view text) {
  const std::string_view usage = "use gpu, accelerator, cpu, all, or a comma-separated list such as gpu,cpu";
  cl_device_type types = 0;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view item = trim(text.substr(start, comma - start));
    if (item == "gpu") {
      types |= CL_DEVICE_TYPE_GPU;
    } else if (item == "accelerator") {
      types |= CL_DEVICE_TYPE_ACCELERATOR;
    } else if (item == "cpu") {
      types |= CL_DEVICE_TYPE_CPU;
    } else if (item == "all") {
      types |= CL_DEVICE_TYPE_ALL;
    } else {
      const std::string what =
          item.empty() ? std::string("an empty item") : "unknown device type '" + std::string(item) + "'";
      throw InvalidArgument(std::string(kDevicesVariable) + "='" + std::string(text) + "': " + what + " (" +
                            std::string(usage) + ")");
    }
    start = comma + 1;
  }
  return types;
}

std::vector<DeviceId> find_devices(cl_device_type types, unsigned max_devices) {
  cl_uint platform_count = 0;
  const cl_int listed = clGetPlatformIDs(0, nullptr, &platform_count);
  if (listed == kPlatformNotFound || (listed == CL_SUCCESS && platform_count == 0)) return {};
  check(listed, "clGetPlatformIDs");
  std::vector<cl_platform_id> platforms(platform_count);
  check(clGetPlatformIDs(platform_count, platforms.data(), nullptr), "clGetPlatformIDs");

  std::vector<DeviceId> found;
  for (cl_platform_id platform : platforms) {
    cl_uint device_count = 0;
    // A platform without devices of these types says CL_DEVICE_NOT_FOUND; one that cannot list
    // its devices at all (a broken vendor driver) is left out rather than hiding the others.
    if (clGetDeviceIDs(platform, types, 0, nullptr, &device_count) != CL_SUCCESS || device_count == 0) continue;
    std::vector<cl_device_id> devices(device_count);
    if (clGetDeviceIDs(platform, types, device_count, devices.data(), nullptr) != CL_SUCCESS) continue;
    for (cl_device_id device : devices) {
      cl_bool available = CL_FALSE;
      if (clGetDeviceInfo(device, CL_DEVICE_AVAILABLE, sizeof(available), &available, nullptr) != CL_SUCCESS ||
          available != CL_TRUE) {
        continue;
      }
      found.push_back({platform, device});
      if (max_devices != 0 && found.size() == max_devices) return found;
    }
  }
  return found;
}

DeviceResources::DeviceResources(DeviceId id) {
  view_.platform = id.platform;
  view_.device = id.device;
  view_.name = device_string(id.device, CL_DEVICE_NAME, "CL_DEVICE_NAME");
  view_.type = device_value<cl_device_type>(id.device, CL_DEVICE_TYPE, "CL_DEVICE_TYPE");
  global_memory_ = static_cast<std::size_t>(
      device_value<cl_ulong>(id.device, CL_DEVICE_GLOBAL_MEM_SIZE, "CL_DEVICE_GLOBAL_MEM_SIZE"));
  max_allocation_ = static_cast<std::size_t>(
      device_value<cl_ulong>(id.device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, "CL_DEVICE_MAX_MEM_ALLOC_SIZE"));

  const std::string where = " for device '" + view_.name + "'";
  const cl_context_properties properties[] = {CL_CONTEXT_PLATFORM, reinterpret_cast<cl_context_properties>(id.platform),
                                              0};
  cl_int status = CL_SUCCESS;
  context_.reset(clCreateContext(properties, 1, &id.device, nullptr, nullptr, &status));
  check(status, "clCreateContext" + where);
  // Two in-order queues: copies for the next task need not wait behind the kernels of this one.
  compute_queue_.reset(clCreateCommandQueue(context_.get(), id.device, 0, &status));
  check(status, "clCreateCommandQueue (compute)" + where);
  transfer_queue_.reset(clCreateCommandQueue(context_.get(), id.device, 0, &status));
  check(status, "clCreateCommandQueue (transfer)" + where);
  view_.context = context_.get();
  view_.queue = compute_queue_.get();
}

DeviceResources::~DeviceResources() {
  // Let queued work end before its queues and context go; errors have no one to go to here.
  if (compute_queue_) clFinish(compute_queue_.get());
  if (transfer_queue_) clFinish(transfer_queue_.get());
}

}  // namespace hetflow::opencl::detail
