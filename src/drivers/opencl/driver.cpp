// The OpenCL driver: one worker per device, each with its device's memory as a memory node and
// a cache of the programs built for it.
#include <charconv>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "drivers/opencl/device.hpp"
#include "drivers/opencl/device_memory.hpp"
#include "drivers/opencl/program_cache.hpp"
#include "hetflow/error.hpp"
#include "hetflow/opencl.hpp"
#include "hetflow/runtime.hpp"
#include "util/device_share.hpp"

namespace hetflow::opencl {
namespace detail {
namespace {

/// What TaskContext::driver_state() points to on an OpenCL worker.
struct WorkerState {
  WorkerState(std::shared_ptr<DeviceResources> resources, unsigned index)
      : device(std::move(resources)), memory(std::make_shared<DeviceMemory>(device, index)), programs(*device) {}

  std::shared_ptr<DeviceResources> device;
  std::shared_ptr<DeviceMemory> memory;
  ProgramCache programs;  // refers to *device, which outlives it
};

class OpenCLDriver final : public ext::Driver {
 public:
  explicit OpenCLDriver(const std::vector<DeviceId>& devices) {
    workers_.reserve(devices.size());
    for (const DeviceId& id : devices) {
      const auto index = static_cast<unsigned>(workers_.size());
      workers_.push_back(std::make_unique<WorkerState>(std::make_shared<DeviceResources>(id), index));
    }
  }

  [[nodiscard]] std::string_view name() const override { return "opencl"; }
  [[nodiscard]] Arch arch() const override { return Arch::opencl; }
  [[nodiscard]] unsigned worker_count() const override { return static_cast<unsigned>(workers_.size()); }
  [[nodiscard]] std::shared_ptr<ext::MemoryNode> memory_node(unsigned index) override { return worker(index).memory; }
  [[nodiscard]] void* worker_state(unsigned index) override { return &worker(index); }
  [[nodiscard]] double take_setup_seconds(unsigned index) override {
    return worker(index).programs.take_build_seconds();
  }

  void finish_task(unsigned index) override {
    const DeviceResources& device = *worker(index).device;
    check(clFinish(device.compute_queue()), "clFinish after a task on device '" + device.name() + "'");
  }

 private:
  WorkerState& worker(unsigned index) const {
    if (index >= workers_.size()) {
      throw InvalidArgument("hetflow::opencl: worker " + std::to_string(index) + " asked of a driver with " +
                            std::to_string(workers_.size()) + " workers");
    }
    return *workers_[index];
  }

  std::vector<std::unique_ptr<WorkerState>> workers_;
};

WorkerState& worker_of(const TaskContext& context, const char* caller) {
  if (context.arch() != Arch::opencl) {
    throw Error(std::string("hetflow::opencl::") + caller + ": task '" + context.task_name() + "' runs on a " +
                std::string(arch_name(context.arch())) + " worker, not an OpenCL one");
  }
  // Only this driver makes workers of the opencl architecture.
  auto* state = static_cast<WorkerState*>(context.driver_state());
  if (state == nullptr) {
    throw Error(std::string("hetflow::opencl::") + caller + ": task '" + context.task_name() +
                "' runs on a worker without OpenCL state");
  }
  return *state;
}

cl_device_type chosen_device_types(const DriverOptions& options) {
  if (!options.device_types_set) {
    const char* text = std::getenv("HETFLOW_OPENCL_DEVICES");
    if (text != nullptr && *text != '\0') return parse_device_types(text);
  }
  return options.device_types;
}

// HETFLOW_OPENCL_SHARE="i/k": this process is the i-th of k sharing the machine's devices (the
// MPI ranks of a node; hetflow::mpi::share_node sets it) and takes its share of those found.
std::vector<DeviceId> shared_out(std::vector<DeviceId> found) {
  const char* text = std::getenv("HETFLOW_OPENCL_SHARE");
  if (text == nullptr || *text == '\0') return found;
  const std::string_view share_text(text);
  const char* end = share_text.data() + share_text.size();
  unsigned part = 0;
  unsigned parts = 0;
  const auto [slash, part_error] = std::from_chars(share_text.data(), end, part);
  const auto [last, parts_error] = slash != end && *slash == '/'
                                       ? std::from_chars(slash + 1, end, parts)
                                       : std::from_chars_result{slash, std::errc::invalid_argument};
  if (part_error != std::errc{} || parts_error != std::errc{} || last != end || parts == 0 || part >= parts) {
    throw InvalidArgument(std::string("HETFLOW_OPENCL_SHARE='") + text +
                          "': give i/k, this process's place among the k that share the devices (0 <= i < k)");
  }
  std::vector<DeviceId> share;
  for (std::size_t index : hetflow::detail::dealt_share(found.size(), part, parts)) share.push_back(found[index]);
  return share;
}

}  // namespace
}  // namespace detail

std::shared_ptr<ext::Driver> make_driver(DriverOptions options) {
  const cl_device_type types = detail::chosen_device_types(options);
  if (types == 0) throw InvalidArgument("hetflow::opencl::make_driver: DriverOptions::device_types is empty");
  std::vector<detail::DeviceId> devices = detail::shared_out(detail::find_devices(types, 0));
  if (options.max_devices != 0 && devices.size() > options.max_devices) devices.resize(options.max_devices);
  return std::make_shared<detail::OpenCLDriver>(devices);
}

const Device& device(const TaskContext& context) { return detail::worker_of(context, "device").device->view(); }

void add_setup_seconds(const TaskContext& context, double seconds) {
  detail::worker_of(context, "add_setup_seconds").programs.add_build_seconds(seconds);
}

cl_kernel kernel(const TaskContext& context, std::string_view source, std::string_view name,
                 std::string_view build_options) {
  return detail::worker_of(context, "kernel").programs.kernel(source, name, build_options);
}

void prepare_program(Runtime& rt, std::string_view source, std::string_view build_options) {
  struct Request {
    std::string_view source;
    std::string_view options;
  };
  static const Codelet builder{
      .name = "opencl program build", .opencl = [](TaskContext& context) {
        const Request& request = context.arg<Request>();
        static_cast<void>(
            detail::worker_of(context, "prepare_program").programs.program(request.source, request.options));
      }};
  std::vector<Future<void>> builds;
  for (const ext::WorkerInfo& worker : rt.workers()) {
    if (worker.arch != Arch::opencl) continue;
    builds.push_back(rt.insert(builder, {.where = Arch::opencl, .worker = static_cast<int>(worker.id)},
                               Request{source, build_options}));
  }
  // Every build reads `source`: all must end before this returns, failed or not.
  for (const Future<void>& build : builds) build.wait();
  for (const Future<void>& build : builds) build.get();
}

}  // namespace hetflow::opencl
