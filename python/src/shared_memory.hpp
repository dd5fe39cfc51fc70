#pragma once
// Shared memory for numpy arrays that worker processes use without copies. A segment is a
// memfd mapped in the host; a worker maps the same memory through /proc/<host pid>/fd/<fd>, so
// no name is ever left behind in /dev/shm, whatever happens to the processes.
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace hetflow::python {

struct Segment {
  std::uint64_t id = 0;
  int fd = -1;
  std::byte* base = nullptr;
  std::size_t size = 0;

  /// "id fd pid offset nbytes": how a worker finds `nbytes` at `offset` of this segment.
  [[nodiscard]] std::string locate(std::size_t offset, std::size_t nbytes) const;
};

Segment create_segment(std::size_t size);
void destroy_segment(const Segment& segment) noexcept;

/// The segments behind the arrays of hetflow.empty / zeros / array, found by address.
class SegmentRegistry {
 public:
  static SegmentRegistry& instance();
  Segment allocate(std::size_t size);
  void free(const std::byte* base) noexcept;
  /// The segment holding [address, address + nbytes), if any.
  std::optional<Segment> find(std::uintptr_t address, std::size_t nbytes);

 private:
  std::mutex mutex_;
  std::map<std::uintptr_t, Segment> by_base_;
};

/// A buffer the calling worker thread reuses for the arrays it copies in and out for a worker
/// process; grown (replaced) when too small. Valid until the next call with a larger size.
const Segment& scratch_segment(std::size_t slot, std::size_t size);

}  // namespace hetflow::python
