// The CUDA driver: a worker thread per GPU with its own compute stream, and each GPU's memory as
// a memory node (drivers/cuda/device_memory.hpp).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "drivers/cuda/device.hpp"
#include "drivers/cuda/device_memory.hpp"
#include "drivers/cuda/errors.hpp"
#include "drivers/cuda/worker.hpp"
#include "hetflow/cuda.hpp"
#include "hetflow/error.hpp"

namespace hetflow::cuda {
namespace detail {
namespace {

class CudaDriver final : public ext::Driver {
 public:
  CudaDriver(std::vector<int> devices, std::size_t pin_threshold)
      : devices_(std::move(devices)), pin_threshold_(pin_threshold), pins_(std::make_shared<HostPins>()) {
    nodes_.resize(devices_.size());
    for (int device : devices_) {
      auto worker = std::make_unique<WorkerContext>();
      worker->device = device;
      workers_.push_back(std::move(worker));
    }
  }

  [[nodiscard]] std::string_view name() const override { return "cuda"; }
  [[nodiscard]] Arch arch() const override { return Arch::cuda; }
  [[nodiscard]] unsigned worker_count() const override { return static_cast<unsigned>(devices_.size()); }

  // Made on first request rather than with the driver, so that a driver never used in a runtime
  // creates no CUDA context.
  [[nodiscard]] std::shared_ptr<ext::MemoryNode> memory_node(unsigned index) override {
    std::lock_guard guard(mutex_);
    auto& node = nodes_.at(index);
    if (!node) node = std::make_shared<DeviceMemory>(devices_[index], pin_threshold_, pins_);
    return node;
  }

  void start_worker(unsigned index) override {
    WorkerContext& worker = *workers_.at(index);
    worker.failure.clear();
    try {
      check(cudaSetDevice(worker.device), "cudaSetDevice(" + std::to_string(worker.device) + ")");
      worker.compute = make_stream();
    } catch (const Error& error) {
      worker.failure = error.what();
    }
  }

  [[nodiscard]] double take_setup_seconds(unsigned index) override {
    return std::exchange(workers_.at(index)->setup_seconds, 0.0);
  }

  void finish_task(unsigned index) override {
    WorkerContext& worker = *workers_[index];
    if (!worker.failure.empty()) throw Error(worker.failure);
    // A launch error (bad configuration, no kernel image for this GPU) is only reported by
    // cudaGetLastError; it belongs to the task that just ran on this thread.
    // cudaErrorNotReady is no launch error: some queries (an upload's done()) may leave it.
    cudaError_t launch = cudaGetLastError();
    if (launch == cudaErrorNotReady) launch = cudaSuccess;
    // Drained even after a failed launch, so that nothing of this task runs into the next one.
    const cudaError_t run = cudaStreamSynchronize(worker.compute.get());
    if (run != cudaSuccess) static_cast<void>(cudaGetLastError());
    if (launch != cudaSuccess) {
      throw Error("hetflow::cuda: a kernel launch failed on GPU " + std::to_string(worker.device) + ": " +
                  describe(launch));
    }
    if (run != cudaSuccess) {
      throw Error("hetflow::cuda: the task's work on GPU " + std::to_string(worker.device) +
                  " failed: " + describe(run));
    }
  }

  void stop_worker(unsigned index) override {
    WorkerContext& worker = *workers_.at(index);
    if (worker.compute) static_cast<void>(cudaStreamSynchronize(worker.compute.get()));
    // The handles are bound to the stream: they go first.
    worker.solver.reset();
    worker.blas.reset();
    worker.compute.reset();
    static_cast<void>(cudaGetLastError());
  }

  [[nodiscard]] void* worker_state(unsigned index) override { return workers_.at(index).get(); }

 private:
  const std::vector<int> devices_;
  const std::size_t pin_threshold_;
  const std::shared_ptr<HostPins> pins_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<ext::MemoryNode>> nodes_;
  std::vector<std::unique_ptr<WorkerContext>> workers_;
};

/// HETFLOW_NCUDA as a count, or `fallback` when it is unset or empty.
unsigned device_limit_from_environment(unsigned fallback) {
  const char* text = std::getenv("HETFLOW_NCUDA");
  if (text == nullptr || *text == '\0') return fallback;
  constexpr unsigned long kMax = 4096;
  char* end = nullptr;
  errno = 0;
  const unsigned long value = std::strtoul(text, &end, 10);
  const bool digits_only = *text >= '0' && *text <= '9' && *end == '\0';
  if (!digits_only || errno == ERANGE || value > kMax) {
    throw InvalidArgument(std::string("HETFLOW_NCUDA='") + text + "' is not a whole number from 0 to " +
                          std::to_string(kMax));
  }
  return static_cast<unsigned>(value);
}

}  // namespace

WorkerContext& worker_of(const TaskContext& context, std::string_view what) {
  const auto where = [&] {
    const char* task = context.task_name();
    return std::string("hetflow::cuda::") + std::string(what) + ": task '" + (task != nullptr ? task : "?") + "'";
  };
  if (context.arch() != Arch::cuda) {
    throw Error(where() + " runs on a " + std::string(arch_name(context.arch())) +
                " worker; only CUDA implementations have a GPU");
  }
  auto* worker = static_cast<WorkerContext*>(context.driver_state());
  if (worker == nullptr || worker->tag != WorkerContext::kTag) {
    throw Error(where() + " runs on a CUDA worker that hetflow::cuda::make_driver did not make");
  }
  if (!worker->failure.empty()) throw Error(worker->failure);
  return *worker;
}

}  // namespace detail

std::shared_ptr<ext::Driver> make_driver(DriverOptions options) {
  // Read first, so that a bad value is reported on machines without a GPU too.
  const unsigned limit = options.max_devices != 0
                             ? options.max_devices
                             : detail::device_limit_from_environment(std::numeric_limits<unsigned>::max());
  const unsigned count = std::min(device_count(), limit);
  std::vector<int> devices;
  for (unsigned i = 0; i < count; ++i) devices.push_back(static_cast<int>(i));
  return std::make_shared<detail::CudaDriver>(std::move(devices), options.pin_threshold);
}

int device(const TaskContext& context) { return detail::worker_of(context, "device").device; }

cudaStream_t stream(const TaskContext& context) { return detail::worker_of(context, "stream").compute.get(); }

void add_setup_seconds(const TaskContext& context, double seconds) {
  detail::worker_of(context, "add_setup_seconds").setup_seconds += seconds;
}

}  // namespace hetflow::cuda
