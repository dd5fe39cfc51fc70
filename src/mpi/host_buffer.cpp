#include "mpi/host_buffer.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "hetflow/error.hpp"

namespace hetflow::mpi {

namespace {
// Below this the heap is as good: a few pages at most.
constexpr std::size_t kMappedFrom = std::size_t{64} << 10;
}  // namespace

HostBuffer::HostBuffer(std::size_t bytes) : bytes_(std::max<std::size_t>(bytes, 1)) {
  if (bytes_ >= kMappedFrom) {
    void* mapped = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped == MAP_FAILED) {
      throw Error("hetflow::mpi: cannot reserve " + std::to_string(bytes_) +
                  " bytes for a copy: " + std::strerror(errno));
    }
    data_ = mapped;
    mapped_ = true;
    return;
  }
  data_ = ::operator new(bytes_);
}

HostBuffer::~HostBuffer() { release(); }

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      mapped_(std::exchange(other.mapped_, false)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    mapped_ = std::exchange(other.mapped_, false);
  }
  return *this;
}

void HostBuffer::release() noexcept {
  if (data_ == nullptr) return;
  if (mapped_) {
    ::munmap(data_, bytes_);
  } else {
    ::operator delete(data_);
  }
  data_ = nullptr;
}

}  // namespace hetflow::mpi
