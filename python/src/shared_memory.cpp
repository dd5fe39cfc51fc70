#include "shared_memory.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
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
std::atomic<std::size_t> scratch_total{0};

// Each shared array holds a descriptor for as long as it lives: running out of them is the
// likely failure with many arrays, and the message says what to change.
std::string describe_error(int error) {
  std::string text = std::strerror(error);
  if (error == EMFILE || error == ENFILE) {
    rlimit limit{};
    text += error == EMFILE ? ": this process ran out of file descriptors" : ": the system ran out of file descriptors";
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
      text += " (limit " + std::to_string(limit.rlim_cur) + ")";
    }
    text +=
        "; every shared array (hetflow.empty, zeros, array) holds one while it lives: raise the limit "
        "(ulimit -n, or resource.setrlimit(resource.RLIMIT_NOFILE, ...)) or keep fewer shared arrays alive";
  }
  return text;
}

}  // namespace

std::string Segment::locate(std::size_t offset, std::size_t nbytes) const {
  return std::to_string(id) + " " + std::to_string(fd) + " " + std::to_string(::getpid()) + " " +
         std::to_string(offset) + " " + std::to_string(nbytes) + (scratch ? " scratch" : "");
}

Segment create_segment(std::size_t size) {
  Segment segment;
  segment.size = size == 0 ? 1 : size;
  segment.fd = ::memfd_create("hetflow", MFD_CLOEXEC);
  if (segment.fd < 0) {
    throw Error("hetflow: cannot create shared memory of " + std::to_string(size) + " bytes: " + describe_error(errno));
  }
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

namespace {

struct Scratch {
  std::vector<Segment> segments;  // by slot; base == nullptr: none
  ~Scratch() {
    for (auto& segment : segments) release(segment);
  }
  static void release(Segment& segment) noexcept {
    if (segment.base == nullptr) return;
    scratch_total.fetch_sub(segment.size, std::memory_order_relaxed);
    destroy_segment(segment);
    segment = Segment{};
  }
};

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

const Segment& scratch_segment(std::size_t slot, std::size_t size) {
  Scratch& scratch = thread_scratch();
  if (scratch.segments.size() <= slot) scratch.segments.resize(slot + 1);
  Segment& segment = scratch.segments[slot];
  if (segment.size < size || segment.base == nullptr) {
    Scratch::release(segment);
    segment = create_segment(std::max(size, std::size_t{1} << 16));
    segment.scratch = true;
    scratch_total.fetch_add(segment.size, std::memory_order_relaxed);
  }
  return segment;
}

void trim_scratch() noexcept {
  Scratch& scratch = thread_scratch();
  std::size_t kept = 0;
  for (auto& segment : scratch.segments) {
    if (segment.base == nullptr) continue;
    if (segment.size <= kScratchKeptSegmentBytes && kept + segment.size <= kScratchKeptBytes) {
      kept += segment.size;
    } else {
      Scratch::release(segment);
    }
  }
  while (!scratch.segments.empty() && scratch.segments.back().base == nullptr) scratch.segments.pop_back();
}

void retire_scratch(const Segment& segment) noexcept {
  for (auto& held : thread_scratch().segments) {
    if (held.base == segment.base) Scratch::release(held);
  }
}

std::size_t scratch_bytes() noexcept { return scratch_total.load(std::memory_order_relaxed); }

}  // namespace hetflow::python
