// Status codes as names, and the checks that turn failed OpenCL calls into hetflow::Error.
#include <array>
#include <string>
#include <utility>

#include "hetflow/error.hpp"
#include "hetflow/opencl.hpp"

namespace hetflow::opencl {
namespace {

struct NamedCode {
  cl_int code;
  const char* name;
};

// Codes from OpenCL 2.0 onwards and from extensions are spelled as numbers: the headers define
// their names only when a newer CL_TARGET_OPENCL_VERSION is chosen, but a newer platform can
// still return them.
constexpr std::array kCodes{
    NamedCode{CL_SUCCESS, "CL_SUCCESS"},
    NamedCode{CL_DEVICE_NOT_FOUND, "CL_DEVICE_NOT_FOUND"},
    NamedCode{CL_DEVICE_NOT_AVAILABLE, "CL_DEVICE_NOT_AVAILABLE"},
    NamedCode{CL_COMPILER_NOT_AVAILABLE, "CL_COMPILER_NOT_AVAILABLE"},
    NamedCode{CL_MEM_OBJECT_ALLOCATION_FAILURE, "CL_MEM_OBJECT_ALLOCATION_FAILURE"},
    NamedCode{CL_OUT_OF_RESOURCES, "CL_OUT_OF_RESOURCES"},
    NamedCode{CL_OUT_OF_HOST_MEMORY, "CL_OUT_OF_HOST_MEMORY"},
    NamedCode{CL_PROFILING_INFO_NOT_AVAILABLE, "CL_PROFILING_INFO_NOT_AVAILABLE"},
    NamedCode{CL_MEM_COPY_OVERLAP, "CL_MEM_COPY_OVERLAP"},
    NamedCode{CL_IMAGE_FORMAT_MISMATCH, "CL_IMAGE_FORMAT_MISMATCH"},
    NamedCode{CL_IMAGE_FORMAT_NOT_SUPPORTED, "CL_IMAGE_FORMAT_NOT_SUPPORTED"},
    NamedCode{CL_BUILD_PROGRAM_FAILURE, "CL_BUILD_PROGRAM_FAILURE"},
    NamedCode{CL_MAP_FAILURE, "CL_MAP_FAILURE"},
    NamedCode{CL_MISALIGNED_SUB_BUFFER_OFFSET, "CL_MISALIGNED_SUB_BUFFER_OFFSET"},
    NamedCode{CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST, "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST"},
    NamedCode{CL_COMPILE_PROGRAM_FAILURE, "CL_COMPILE_PROGRAM_FAILURE"},
    NamedCode{CL_LINKER_NOT_AVAILABLE, "CL_LINKER_NOT_AVAILABLE"},
    NamedCode{CL_LINK_PROGRAM_FAILURE, "CL_LINK_PROGRAM_FAILURE"},
    NamedCode{CL_DEVICE_PARTITION_FAILED, "CL_DEVICE_PARTITION_FAILED"},
    NamedCode{CL_KERNEL_ARG_INFO_NOT_AVAILABLE, "CL_KERNEL_ARG_INFO_NOT_AVAILABLE"},
    NamedCode{CL_INVALID_VALUE, "CL_INVALID_VALUE"},
    NamedCode{CL_INVALID_DEVICE_TYPE, "CL_INVALID_DEVICE_TYPE"},
    NamedCode{CL_INVALID_PLATFORM, "CL_INVALID_PLATFORM"},
    NamedCode{CL_INVALID_DEVICE, "CL_INVALID_DEVICE"},
    NamedCode{CL_INVALID_CONTEXT, "CL_INVALID_CONTEXT"},
    NamedCode{CL_INVALID_QUEUE_PROPERTIES, "CL_INVALID_QUEUE_PROPERTIES"},
    NamedCode{CL_INVALID_COMMAND_QUEUE, "CL_INVALID_COMMAND_QUEUE"},
    NamedCode{CL_INVALID_HOST_PTR, "CL_INVALID_HOST_PTR"},
    NamedCode{CL_INVALID_MEM_OBJECT, "CL_INVALID_MEM_OBJECT"},
    NamedCode{CL_INVALID_IMAGE_FORMAT_DESCRIPTOR, "CL_INVALID_IMAGE_FORMAT_DESCRIPTOR"},
    NamedCode{CL_INVALID_IMAGE_SIZE, "CL_INVALID_IMAGE_SIZE"},
    NamedCode{CL_INVALID_SAMPLER, "CL_INVALID_SAMPLER"},
    NamedCode{CL_INVALID_BINARY, "CL_INVALID_BINARY"},
    NamedCode{CL_INVALID_BUILD_OPTIONS, "CL_INVALID_BUILD_OPTIONS"},
    NamedCode{CL_INVALID_PROGRAM, "CL_INVALID_PROGRAM"},
    NamedCode{CL_INVALID_PROGRAM_EXECUTABLE, "CL_INVALID_PROGRAM_EXECUTABLE"},
    NamedCode{CL_INVALID_KERNEL_NAME, "CL_INVALID_KERNEL_NAME"},
    NamedCode{CL_INVALID_KERNEL_DEFINITION, "CL_INVALID_KERNEL_DEFINITION"},
    NamedCode{CL_INVALID_KERNEL, "CL_INVALID_KERNEL"},
    NamedCode{CL_INVALID_ARG_INDEX, "CL_INVALID_ARG_INDEX"},
    NamedCode{CL_INVALID_ARG_VALUE, "CL_INVALID_ARG_VALUE"},
    NamedCode{CL_INVALID_ARG_SIZE, "CL_INVALID_ARG_SIZE"},
    NamedCode{CL_INVALID_KERNEL_ARGS, "CL_INVALID_KERNEL_ARGS"},
    NamedCode{CL_INVALID_WORK_DIMENSION, "CL_INVALID_WORK_DIMENSION"},
    NamedCode{CL_INVALID_WORK_GROUP_SIZE, "CL_INVALID_WORK_GROUP_SIZE"},
    NamedCode{CL_INVALID_WORK_ITEM_SIZE, "CL_INVALID_WORK_ITEM_SIZE"},
    NamedCode{CL_INVALID_GLOBAL_OFFSET, "CL_INVALID_GLOBAL_OFFSET"},
    NamedCode{CL_INVALID_EVENT_WAIT_LIST, "CL_INVALID_EVENT_WAIT_LIST"},
    NamedCode{CL_INVALID_EVENT, "CL_INVALID_EVENT"},
    NamedCode{CL_INVALID_OPERATION, "CL_INVALID_OPERATION"},
    NamedCode{CL_INVALID_GL_OBJECT, "CL_INVALID_GL_OBJECT"},
    NamedCode{CL_INVALID_BUFFER_SIZE, "CL_INVALID_BUFFER_SIZE"},
    NamedCode{CL_INVALID_MIP_LEVEL, "CL_INVALID_MIP_LEVEL"},
    NamedCode{CL_INVALID_GLOBAL_WORK_SIZE, "CL_INVALID_GLOBAL_WORK_SIZE"},
    NamedCode{CL_INVALID_PROPERTY, "CL_INVALID_PROPERTY"},
    NamedCode{CL_INVALID_IMAGE_DESCRIPTOR, "CL_INVALID_IMAGE_DESCRIPTOR"},
    NamedCode{CL_INVALID_COMPILER_OPTIONS, "CL_INVALID_COMPILER_OPTIONS"},
    NamedCode{CL_INVALID_LINKER_OPTIONS, "CL_INVALID_LINKER_OPTIONS"},
    NamedCode{CL_INVALID_DEVICE_PARTITION_COUNT, "CL_INVALID_DEVICE_PARTITION_COUNT"},
    NamedCode{-69, "CL_INVALID_PIPE_SIZE"},
    NamedCode{-70, "CL_INVALID_DEVICE_QUEUE"},
    NamedCode{-71, "CL_INVALID_SPEC_ID"},
    NamedCode{-72, "CL_MAX_SIZE_RESTRICTION_EXCEEDED"},
    NamedCode{-1001, "CL_PLATFORM_NOT_FOUND_KHR"},
};

}  // namespace

std::string error_name(cl_int code) {
  for (const NamedCode& known : kCodes) {
    if (known.code == code) return known.name;
  }
  return "unknown OpenCL error " + std::to_string(code);
}

void check(cl_int code, std::string_view what) {
  if (code != CL_SUCCESS) throw Error("hetflow::opencl: " + std::string(what) + " failed: " + error_name(code));
}

void set_arg(cl_kernel kernel, cl_uint index, std::size_t size, const void* value) {
  const cl_int status = clSetKernelArg(kernel, index, size, value);
  if (status == CL_SUCCESS) return;
  std::string message =
      "hetflow::opencl: setting argument " + std::to_string(index) + " (" + std::to_string(size) + " bytes) of kernel";
  char name[256] = {};
  if (clGetKernelInfo(kernel, CL_KERNEL_FUNCTION_NAME, sizeof(name) - 1, name, nullptr) == CL_SUCCESS) {
    message += " '" + std::string(name) + "'";
  }
  message += " failed: " + error_name(status);
  if (status == CL_INVALID_ARG_SIZE) message += " (does the C++ type match the kernel's parameter type?)";
  if (status == CL_INVALID_ARG_INDEX) message += " (the kernel has fewer parameters)";
  throw Error(message);
}

}  // namespace hetflow::opencl
