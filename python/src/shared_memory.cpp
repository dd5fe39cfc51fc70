#include "shared_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "hetflow/error.hpp"

namespace hetflow::python {
namespace {

std::atomic<std::uint64_t> next_segment_id{1};

}  // namespace

std::string Segment::locate(std::size_t offset, std::size_t nbytes) const {
  return std::to_string(id) + " " + std::to_string(fd) + " " + std::to_string(::getpid()) + " " +
         std::to_string(offset) + " " + std::to_string(nbytes);
}

Segment create_segment(std::size_t size) {
  Segment segment;
  segment.size = size == 0 ? 1 : size;
  segment.fd = ::memfd_create("hetflow", MFD_CLOEXEC);
  if (segment.fd < 0) throw Error(std::string("hetflow: memfd_create: ") + std::strerror(errno));
  if (::ftruncate(segment.fd, static_cast<off_t>(segment.size)) != 0) {
    int error = errno;
    ::close(segment.fd);
    throw Error("hetflow: cannot size shared memory of " + std::to_string(size) + " bytes: " + std::strerror(error));
  }
  void* base = ::mmap(nullptr, segment.size, PROT_READ | PROT_WRITE, MAP_SHARED, segment.fd, 0);
  if (base == MAP_FAILED) {
    int error = errno;
    ::close(segment.fd);
    throw Error("hetflow: cannot map shared memory of " + std::to_string(size) + " bytes: " + std::strerror(error));
  }
  segment.base = static_cast<std::byte*>(base);
  segment.id = next_segment_id.fetch_add(1);
  return segment;
}

void destroy_segment(const Segment& segment) noexcept {
  if (segment.base != nullptr) ::munmap(segment.base, segment.size);
  if (segment.fd >= 0) ::close(segment.fd);
}

SegmentRegistry& SegmentRegistry::instance() {
  static auto* registry = new SegmentRegistry();  // arrays may outlive static destruction
  return *registry;
}

Segment SegmentRegistry::allocate(std::size_t size) {
  Segment segment = create_segment(size);
  std::lock_guard guard(mutex_);
  by_base_[reinterpret_cast<std::uintptr_t>(segment.base)] = segment;
  return segment;
}

void SegmentRegistry::free(const std::byte* base) noexcept {
  Segment segment;
  {
    std::lock_guard guard(mutex_);
    auto it = by_base_.find(reinterpret_cast<std::uintptr_t>(base));
    if (it == by_base_.end()) return;
    segment = it->second;
    by_base_.erase(it);
  }
  destroy_segment(segment);
}

std::optional<Segment> SegmentRegistry::find(std::uintptr_t address, std::size_t nbytes) {
  std::lock_guard guard(mutex_);
  auto it = by_base_.upper_bound(address);
  if (it == by_base_.begin()) return std::nullopt;
  --it;
  const Segment& segment = it->second;
  if (address + nbytes <= it->first + segment.size) return segment;
  return std::nullopt;
}

const Segment& scratch_segment(std::size_t slot, std::size_t size) {
  struct Scratch {
    std::vector<Segment> segments;
    ~Scratch() {
      for (const auto& segment : segments) destroy_segment(segment);
    }
  };
  thread_local Scratch scratch;
  if (scratch.segments.size() <= slot) scratch.segments.resize(slot + 1);
  Segment& segment = scratch.segments[slot];
  if (segment.size < size || segment.base == nullptr) {
    destroy_segment(segment);
    segment = create_segment(std::max(size, std::size_t{1} << 16));
  }
  return segment;
}

}  // namespace hetflow::python
