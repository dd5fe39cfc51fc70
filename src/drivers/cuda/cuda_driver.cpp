// The CUDA driver: a worker thread per GPU with its own compute stream, and each GPU's memory as
// a memory node with an upload and a download stream of its own.
//
// The CUDA runtime keeps a "current device" per host thread. Memory nodes are called from many
// threads (a GPU's worker fetching data another GPU wrote, the application acquiring data), so
// every node call makes its device current for its own duration and then puts back the caller's:
// a worker thread must find its own device current when its next kernel launches.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "hetflow/cuda.hpp"
#include "hetflow/error.hpp"

namespace hetflow::cuda {
namespace {

std::string describe(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")";
}

/// Throws hetflow::Error for a failed runtime call. The call also left its error as the thread's
/// "last error"; that is cleared, so that it is not taken later for a failed kernel launch.
void check(cudaError_t status, std::string_view what) {
  if (status == cudaSuccess) return;
  static_cast<void>(cudaGetLastError());
  throw Error("hetflow::cuda: " + std::string(what) + " failed: " + describe(status));
}

/// Makes `device` current on this thread for the life of the object, then restores the
/// previous one. Never throws by itself: callers that need the device check status().
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) noexcept {
    status_ = cudaGetDevice(&previous_);
    if (status_ == cudaSuccess && previous_ != device) {
      status_ = cudaSetDevice(device);
      restore_ = status_ == cudaSuccess;
    }
    if (status_ != cudaSuccess) static_cast<void>(cudaGetLastError());
  }
  ~ScopedDevice() {
    if (restore_) static_cast<void>(cudaSetDevice(previous_));
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

  [[nodiscard]] cudaError_t status() const noexcept { return status_; }
  void check_ok(int device) const {
    if (status_ != cudaSuccess) {
      throw Error("hetflow::cuda: cannot use GPU " + std::to_string(device) + ": " + describe(status_));
    }
  }

 private:
  int previous_ = 0;
  cudaError_t status_ = cudaSuccess;
  bool restore_ = false;
};

// RAII owners of CUDA objects. Destruction ignores errors: at process exit the runtime may be
// unloading, and there is nothing left to do about a failed release anyway.
struct StreamDeleter {
  void operator()(CUstream_st* stream) const noexcept { static_cast<void>(cudaStreamDestroy(stream)); }
};
using Stream = std::unique_ptr<CUstream_st, StreamDeleter>;

struct EventDeleter {
  void operator()(CUevent_st* event) const noexcept { static_cast<void>(cudaEventDestroy(event)); }
};
using Event = std::unique_ptr<CUevent_st, EventDeleter>;

struct BlasDeleter {
  void operator()(cublasContext* handle) const noexcept { static_cast<void>(cublasDestroy(handle)); }
};
using BlasHandle = std::unique_ptr<cublasContext, BlasDeleter>;

struct SolverDeleter {
  void operator()(cusolverDnContext* handle) const noexcept { static_cast<void>(cusolverDnDestroy(handle)); }
};
using SolverHandle = std::unique_ptr<cusolverDnContext, SolverDeleter>;

static_assert(std::is_same_v<cudaStream_t, CUstream_st*> && std::is_same_v<cudaEvent_t, CUevent_st*> &&
              std::is_same_v<cublasHandle_t, cublasContext*> && std::is_same_v<cusolverDnHandle_t, cusolverDnContext*>);

/// A stream that does not wait for the legacy default stream, so that code elsewhere in the
/// process using stream 0 does not serialise with the runtime's work.
Stream make_stream() {
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return Stream(stream);
}

Event make_event() {
  cudaEvent_t event = nullptr;
  check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return Event(event);
}

/// Page-locked host buffers, shared by all the GPUs of a driver: a range can be registered with
/// CUDA only once per process, and cudaHostRegisterPortable makes it page-locked for every GPU.
/// Counted, because each GPU's node is told about the same buffer.
class HostPins {
 public:
  void add(int device, void* host, std::size_t bytes) {
    std::lock_guard guard(mutex_);
    auto found = pins_.find(host);
    if (found != pins_.end()) {
      ++found->second;
      return;
    }
    ScopedDevice on(device);
    if (on.status() != cudaSuccess) return;
    if (cudaHostRegister(host, bytes, cudaHostRegisterPortable) != cudaSuccess) {
      // Already page-locked by its owner, overlapping a locked neighbour (tiles of one matrix
      // share pages), or read-only memory: copies still work, from pageable memory.
      static_cast<void>(cudaGetLastError());
      return;
    }
    pins_.emplace(host, 1);
  }

  void remove(int device, void* host) noexcept {
    std::lock_guard guard(mutex_);
    auto found = pins_.find(host);
    if (found == pins_.end()) return;
    if (--found->second > 0) return;
    pins_.erase(found);
    ScopedDevice on(device);
    if (cudaHostUnregister(host) != cudaSuccess) static_cast<void>(cudaGetLastError());
  }

 private:
  std::mutex mutex_;
  std::map<void*, unsigned> pins_;  // registered start -> how many nodes hold it
};

/// An upload: an event recorded on the upload stream right after the copy.
class Upload final : public ext::Transfer {
 public:
  Upload(Event event, int device) : event_(std::move(event)), device_(device) {}

  void wait() override {
    const cudaError_t status = cudaEventSynchronize(event_.get());
    check(status, "copy to GPU " + std::to_string(device_));
  }

  // A failed copy counts as done: wait() then reports the failure.
  [[nodiscard]] bool done() override {
    const cudaError_t status = cudaEventQuery(event_.get());
    if (status == cudaErrorNotReady) return false;
    return true;
  }

 private:
  Event event_;
  int device_;
};

/// One GPU's memory.
class DeviceMemory final : public ext::MemoryNode {
 public:
  DeviceMemory(int device, std::size_t pin_threshold, std::shared_ptr<HostPins> pins)
      : device_(device), pin_threshold_(pin_threshold), pins_(std::move(pins)) {
    ScopedDevice on(device_);
    on.check_ok(device_);
    upload_ = make_stream();
    download_ = make_stream();
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    // What other processes and this process's contexts hold already is not ours to fill; the
    // margin leaves room for library workspaces (cuBLAS, cuSOLVER) and for the scratch memory
    // implementations allocate themselves, which cannot make the engine evict anything.
    const std::size_t margin = std::max<std::size_t>(std::size_t{512} << 20, total_bytes / 20);
    capacity_ = free_bytes > margin ? free_bytes - margin : 0;
  }

  ~DeviceMemory() override {
    ScopedDevice on(device_);
    upload_.reset();
    download_.reset();
  }

  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;

  [[nodiscard]] std::string name() const override { return "cuda" + std::to_string(device_); }
  [[nodiscard]] std::size_t capacity() const noexcept override { return capacity_; }

  [[nodiscard]] void* allocate(std::size_t bytes) override {
    ScopedDevice on(device_);
    on.check_ok(device_);
    void* buffer = nullptr;
    // cudaMalloc gives nullptr for 0 bytes, which would read as "full".
    const cudaError_t status = cudaMalloc(&buffer, std::max<std::size_t>(bytes, 1));
    if (status == cudaErrorMemoryAllocation) {
      static_cast<void>(cudaGetLastError());
      return nullptr;
    }
    check(status, "cudaMalloc of " + std::to_string(bytes) + " bytes on GPU " + std::to_string(device_));
    return buffer;
  }

  void free(void* buffer, std::size_t /*bytes*/) noexcept override {
    ScopedDevice on(device_);
    if (cudaFree(buffer) != cudaSuccess) static_cast<void>(cudaGetLastError());
  }

  [[nodiscard]] std::unique_ptr<ext::Transfer> copy_from_host(void* buffer, const void* host,
                                                              std::size_t bytes) override {
    ScopedDevice on(device_);
    on.check_ok(device_);
    Event event = make_event();
    check(cudaMemcpyAsync(buffer, host, bytes, cudaMemcpyHostToDevice, upload_.get()),
          "cudaMemcpyAsync to GPU " + std::to_string(device_));
    check(cudaEventRecord(event.get(), upload_.get()), "cudaEventRecord");
    return std::make_unique<Upload>(std::move(event), device_);
  }

  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override {
    ScopedDevice on(device_);
    on.check_ok(device_);
    check(cudaMemcpyAsync(host, buffer, bytes, cudaMemcpyDeviceToHost, download_.get()),
          "cudaMemcpyAsync from GPU " + std::to_string(device_));
    check(cudaStreamSynchronize(download_.get()), "copy from GPU " + std::to_string(device_));
  }

  void host_buffer_added(void* host, std::size_t bytes) override {
    if (host != nullptr && bytes >= pin_threshold_) pins_->add(device_, host, bytes);
  }

  void host_buffer_removed(void* host, std::size_t bytes) noexcept override {
    if (host != nullptr && bytes >= pin_threshold_) pins_->remove(device_, host);
  }

 private:
  const int device_;
  const std::size_t pin_threshold_;
  const std::shared_ptr<HostPins> pins_;
  std::size_t capacity_ = 0;
  Stream upload_;
  Stream download_;
};

/// What a worker keeps between tasks; reached by implementations through driver_state().
struct WorkerContext {
  // Tells this driver's state from another driver's behind TaskContext::driver_state().
  static constexpr std::uint64_t kTag = 0x6865'7466'6375'6461;  // "hetfcuda"
  std::uint64_t tag = kTag;
  int device = 0;
  Stream compute;
  BlasHandle blas;
  SolverHandle solver;
  double setup_seconds = 0;  // creating handles inside the task now running
  // Why start_worker could not set the worker up: its tasks then fail with this, instead of the
  // whole process ending on an exception in a worker thread.
  std::string failure;
};

/// Counts the time until it goes out of scope as setup of the worker's current task.
class SetupTimer {
 public:
  explicit SetupTimer(WorkerContext& worker) : worker_(worker), started_(std::chrono::steady_clock::now()) {}
  ~SetupTimer() {
    worker_.setup_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }
  SetupTimer(const SetupTimer&) = delete;
  SetupTimer& operator=(const SetupTimer&) = delete;

 private:
  WorkerContext& worker_;
  std::chrono::steady_clock::time_point started_;
};

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
                  cuda::describe(launch));
    }
    if (run != cudaSuccess) {
      throw Error("hetflow::cuda: the task's work on GPU " + std::to_string(worker.device) +
                  " failed: " + cuda::describe(run));
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

}  // namespace

unsigned device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return 0;
  }
  return count > 0 ? static_cast<unsigned>(count) : 0;
}

std::shared_ptr<ext::Driver> make_driver(DriverOptions options) {
  // Read first, so that a bad value is reported on machines without a GPU too.
  const unsigned limit = options.max_devices != 0 ? options.max_devices
                                                  : device_limit_from_environment(std::numeric_limits<unsigned>::max());
  const unsigned count = std::min(device_count(), limit);
  std::vector<int> devices;
  for (unsigned i = 0; i < count; ++i) devices.push_back(static_cast<int>(i));
  return std::make_shared<CudaDriver>(std::move(devices), options.pin_threshold);
}

int device(const TaskContext& context) { return worker_of(context, "device").device; }

cudaStream_t stream(const TaskContext& context) { return worker_of(context, "stream").compute.get(); }

cublasHandle_t cublas(const TaskContext& context) {
  WorkerContext& worker = worker_of(context, "cublas");
  if (!worker.blas) {
    const SetupTimer timer(worker);
    cublasHandle_t handle = nullptr;
    const cublasStatus_t created = cublasCreate(&handle);
    if (created != CUBLAS_STATUS_SUCCESS) {
      throw Error(std::string("hetflow::cuda::cublas: cublasCreate failed: ") + cublasGetStatusString(created));
    }
    BlasHandle owned(handle);
    const cublasStatus_t bound = cublasSetStream(handle, worker.compute.get());
    if (bound != CUBLAS_STATUS_SUCCESS) {
      throw Error(std::string("hetflow::cuda::cublas: cublasSetStream failed: ") + cublasGetStatusString(bound));
    }
    worker.blas = std::move(owned);
  }
  return worker.blas.get();
}

cusolverDnHandle_t cusolver(const TaskContext& context) {
  WorkerContext& worker = worker_of(context, "cusolver");
  if (!worker.solver) {
    const SetupTimer timer(worker);
    cusolverDnHandle_t handle = nullptr;
    const cusolverStatus_t created = cusolverDnCreate(&handle);
    if (created != CUSOLVER_STATUS_SUCCESS) {
      throw Error("hetflow::cuda::cusolver: cusolverDnCreate failed with status " +
                  std::to_string(static_cast<int>(created)));
    }
    SolverHandle owned(handle);
    const cusolverStatus_t bound = cusolverDnSetStream(handle, worker.compute.get());
    if (bound != CUSOLVER_STATUS_SUCCESS) {
      throw Error("hetflow::cuda::cusolver: cusolverDnSetStream failed with status " +
                  std::to_string(static_cast<int>(bound)));
    }
    worker.solver = std::move(owned);
  }
  return worker.solver.get();
}

}  // namespace hetflow::cuda
