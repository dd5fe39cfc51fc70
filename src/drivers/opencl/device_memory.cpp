// Copies and kernels are on different in-order queues of one context, and nothing orders the two
// queues on the device. Correctness comes from the engine's protocol instead:
// - a copy to the device: the engine waits for its Transfer before the task's implementation
//   runs, so any kernel enqueued afterwards on the compute queue sees the data;
// - a copy to the host (a result read back, or a dirty replica written back before eviction):
//   the kernels that wrote the buffer were finished by Driver::finish_task (clFinish on the
//   compute queue) before the task counted as done, and only then can the engine want its data.
// Commands that have completed are visible to every queue of the context.
#include "drivers/opencl/device_memory.hpp"

#include <utility>

#include "hetflow/error.hpp"

namespace hetflow::opencl::detail {
namespace {

// Buffers are created lazily by many implementations: clCreateBuffer succeeds and the memory is
// only claimed at first use, where running out is an error rather than a nullptr the engine can
// act on. Keeping the engine a tenth below the reported size leaves room for that, for the
// programs' own memory, and for other users of the device.
std::size_t usable_capacity(std::size_t global_memory) { return global_memory - global_memory / 10; }

class EventTransfer final : public ext::Transfer {
 public:
  /// `what`: "copy to device 'x'" or "copy from device 'x'", for errors.
  EventTransfer(OwnedEvent event, std::string what) : event_(std::move(event)), what_(std::move(what)) {}

  void wait() override {
    const cl_event event = event_.get();
    const cl_int waited = clWaitForEvents(1, &event);
    const cl_int status = execution_status();
    if (waited != CL_SUCCESS || status < 0) {
      // A failed command reports its error as a negative execution status.
      const cl_int reason = status < 0 ? status : waited;
      throw Error("hetflow::opencl: " + what_ + " failed: " + error_name(reason));
    }
  }

  bool done() override {
    const cl_int status = execution_status();
    // A failed copy (or one whose state cannot be read) is done too: wait() reports why.
    return status == CL_COMPLETE || status < 0;
  }

 private:
  cl_int execution_status() const noexcept {
    cl_int status = CL_COMPLETE;
    const cl_int queried =
        clGetEventInfo(event_.get(), CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(status), &status, nullptr);
    return queried == CL_SUCCESS ? status : queried;
  }

  OwnedEvent event_;
  std::string what_;
};

}  // namespace

DeviceMemory::DeviceMemory(std::shared_ptr<const DeviceResources> device, unsigned index)
    : device_(std::move(device)),
      name_("opencl" + std::to_string(index)),
      capacity_(usable_capacity(device_->global_memory())) {}

std::size_t DeviceMemory::max_buffer_bytes() const noexcept { return device_->max_allocation(); }

void* DeviceMemory::allocate(std::size_t bytes) {
  if (bytes > device_->max_allocation()) {
    // Evicting other replicas would not help: the device refuses any single buffer this large.
    throw Error("hetflow::opencl: a buffer of " + std::to_string(bytes) + " bytes is larger than device '" +
                device_->name() + "' allows for one buffer (CL_DEVICE_MAX_MEM_ALLOC_SIZE = " +
                std::to_string(device_->max_allocation()) + " bytes)");
  }
  // OpenCL has no empty buffers; a one-byte one still gives kernels a valid argument.
  const std::size_t size = bytes == 0 ? 1 : bytes;
  cl_int status = CL_SUCCESS;
  cl_mem buffer = clCreateBuffer(device_->context(), CL_MEM_READ_WRITE, size, nullptr, &status);
  if (status == CL_MEM_OBJECT_ALLOCATION_FAILURE || status == CL_OUT_OF_RESOURCES || status == CL_OUT_OF_HOST_MEMORY) {
    return nullptr;  // full: the engine evicts and tries again
  }
  check(status, "clCreateBuffer(" + std::to_string(bytes) + " bytes) on device '" + device_->name() + "'");
  return buffer;
}

void DeviceMemory::free(void* buffer, std::size_t /*bytes*/) noexcept {
  // OpenCL keeps the object alive until the commands that use it have completed.
  if (buffer != nullptr) clReleaseMemObject(static_cast<cl_mem>(buffer));
}

std::unique_ptr<ext::Transfer> DeviceMemory::copy_from_host(void* buffer, const void* host, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  cl_event event = nullptr;
  check(clEnqueueWriteBuffer(device_->transfer_queue(), static_cast<cl_mem>(buffer), CL_FALSE, 0, bytes, host, 0,
                             nullptr, &event),
        "clEnqueueWriteBuffer(" + std::to_string(bytes) + " bytes) to device '" + device_->name() + "'");
  OwnedEvent owned(event);
  // Without a flush, some implementations hold the copy back until someone waits for it, and it
  // would not overlap with the kernels already running.
  check(clFlush(device_->transfer_queue()), "clFlush of the transfer queue of device '" + device_->name() + "'");
  return std::make_unique<EventTransfer>(std::move(owned), "copy to device '" + device_->name() + "'");
}

void DeviceMemory::copy_to_host(void* host, const void* buffer, std::size_t bytes) {
  if (bytes == 0) return;
  // The engine hands buffers back as const void*; reading through a cl_mem does not modify it.
  cl_mem source = static_cast<cl_mem>(const_cast<void*>(buffer));
  // Waited for through its own event: a blocking read waits, in some implementations (PoCL), for
  // the whole transfer queue to empty, copies to the device that other threads enqueue behind it
  // meanwhile included (and, with one thread doing copies and kernels, the kernel those wait for).
  cl_event event = nullptr;
  check(clEnqueueReadBuffer(device_->transfer_queue(), source, CL_FALSE, 0, bytes, host, 0, nullptr, &event),
        "clEnqueueReadBuffer(" + std::to_string(bytes) + " bytes) from device '" + device_->name() + "'");
  EventTransfer read(OwnedEvent(event), "copy from device '" + device_->name() + "'");
  const cl_int flushed = clFlush(device_->transfer_queue());
  read.wait();  // even if the flush failed: the read may still land in `host`
  check(flushed, "clFlush of the transfer queue of device '" + device_->name() + "'");
}

}  // namespace hetflow::opencl::detail
