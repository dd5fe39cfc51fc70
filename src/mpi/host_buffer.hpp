#pragma once
// Memory hetflow allocates for copies of distributed data on ranks that gave no buffer. Large
// buffers are mapped and left untouched, so the system gives a rank the pages only when a copy
// is first written there: a rank that never needs the data uses no memory for it.
#include <cstddef>

namespace hetflow::mpi {

class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(std::size_t bytes);
  ~HostBuffer();
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  [[nodiscard]] void* data() const noexcept { return data_; }

 private:
  void release() noexcept;

  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  bool mapped_ = false;
};

}  // namespace hetflow::mpi
