#include "drivers/opencl/program_cache.hpp"

#include <chrono>
#include <utility>

#include "drivers/opencl/device.hpp"
#include "hetflow/error.hpp"

namespace hetflow::opencl::detail {
namespace {

std::string build_log(cl_program program, cl_device_id device) {
  std::size_t size = 0;
  if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size) != CL_SUCCESS) {
    return "(the build log could not be read)";
  }
  std::string log(size, '\0');
  if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr) != CL_SUCCESS) {
    return "(the build log could not be read)";
  }
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log.empty() ? "(the build log is empty)" : log;
}

std::string kernel_names(cl_program program) {
  std::size_t size = 0;
  if (clGetProgramInfo(program, CL_PROGRAM_KERNEL_NAMES, 0, nullptr, &size) != CL_SUCCESS) return {};
  std::string names(size, '\0');
  if (clGetProgramInfo(program, CL_PROGRAM_KERNEL_NAMES, size, names.data(), nullptr) != CL_SUCCESS) return {};
  while (!names.empty() && names.back() == '\0') names.pop_back();
  for (char& c : names) {
    if (c == ';') c = ',';
  }
  return names;
}

}  // namespace

cl_kernel ProgramCache::kernel(std::string_view source, std::string_view name, std::string_view options) {
  if (name.empty()) throw InvalidArgument("hetflow::opencl::kernel: the kernel name is empty");
  Program& program = find_or_build(source, options, name);
  auto& kernels = program.kernels;
  auto found = kernels.find(name);
  if (found == kernels.end()) {
    OwnedKernel created = create_kernel(program.program.get(), name);
    found = kernels.emplace(std::string(name), std::move(created)).first;
  }
  return found->second.get();
}

cl_program ProgramCache::program(std::string_view source, std::string_view options) {
  return find_or_build(source, options, {}).program.get();
}

ProgramCache::Program& ProgramCache::find_or_build(std::string_view source, std::string_view options,
                                                   std::string_view for_kernel) {
  if (source.empty()) {
    throw InvalidArgument(for_kernel.empty() ? std::string("hetflow::opencl: the program source is empty")
                                             : "hetflow::opencl::kernel: the source of kernel '" +
                                                   std::string(for_kernel) + "' is empty");
  }
  auto program = programs_.find(KeyView{source, options});
  if (program == programs_.end()) {
    // Built before it goes into the cache, so a program that fails is tried again next time
    // rather than remembered broken.
    const auto started = std::chrono::steady_clock::now();
    OwnedProgram built = build(source, for_kernel, options);
    build_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    program = programs_.emplace(Key{std::string(source), std::string(options)}, Program{std::move(built), {}}).first;
  }
  return program->second;
}

OwnedProgram ProgramCache::build(std::string_view source, std::string_view for_kernel, std::string_view options) const {
  const std::string what =
      for_kernel.empty() ? std::string("the program") : "the program of kernel '" + std::string(for_kernel) + "'";
  const char* text = source.data();
  const std::size_t length = source.size();
  cl_int status = CL_SUCCESS;
  OwnedProgram program(clCreateProgramWithSource(device_.context(), 1, &text, &length, &status));
  check(status, "clCreateProgramWithSource for " + what);

  const std::string options_text(options);  // OpenCL wants it terminated
  const cl_device_id device = device_.device();
  status = clBuildProgram(program.get(), 1, &device, options_text.c_str(), nullptr, nullptr);
  if (status != CL_SUCCESS) {
    std::string message =
        "hetflow::opencl: " + what + " does not build for device '" + device_.name() + "' (" + error_name(status) + ")";
    if (!options_text.empty()) message += " with options '" + options_text + "'";
    message += "; build log:\n" + build_log(program.get(), device);
    throw Error(message);
  }
  return program;
}

OwnedKernel ProgramCache::create_kernel(cl_program program, std::string_view name) const {
  const std::string name_text(name);
  cl_int status = CL_SUCCESS;
  OwnedKernel kernel(clCreateKernel(program, name_text.c_str(), &status));
  if (status == CL_INVALID_KERNEL_NAME) {
    const std::string available = kernel_names(program);
    throw Error("hetflow::opencl: the program has no kernel named '" + name_text + "'" +
                (available.empty() ? std::string() : " (it has: " + available + ")"));
  }
  check(status, "clCreateKernel('" + name_text + "') on device '" + device_.name() + "'");
  return kernel;
}

}  // namespace hetflow::opencl::detail
