#pragma once
// Owning wrappers for OpenCL objects: each releases its object once, when it goes away.
#include <utility>

#include "hetflow/opencl.hpp"

namespace hetflow::opencl::detail {

template <class Handle, cl_int(CL_API_CALL* Release)(Handle)>
class Owned {
 public:
  Owned() noexcept = default;
  /// Takes over a reference the caller holds (what clCreate* returned).
  explicit Owned(Handle handle) noexcept : handle_(handle) {}
  ~Owned() { reset(); }
  Owned(Owned&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) reset(std::exchange(other.handle_, nullptr));
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;

  [[nodiscard]] Handle get() const noexcept { return handle_; }
  [[nodiscard]] explicit operator bool() const noexcept { return handle_ != nullptr; }
  void reset(Handle handle = nullptr) noexcept {
    if (handle_ != nullptr) Release(handle_);  // nothing useful to do if releasing fails
    handle_ = handle;
  }

 private:
  Handle handle_ = nullptr;
};

using OwnedContext = Owned<cl_context, clReleaseContext>;
using OwnedQueue = Owned<cl_command_queue, clReleaseCommandQueue>;
using OwnedBuffer = Owned<cl_mem, clReleaseMemObject>;
using OwnedProgram = Owned<cl_program, clReleaseProgram>;
using OwnedKernel = Owned<cl_kernel, clReleaseKernel>;
using OwnedEvent = Owned<cl_event, clReleaseEvent>;

}  // namespace hetflow::opencl::detail
