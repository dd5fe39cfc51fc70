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
  bool scratch = false;  // a worker thread's copy buffer (scratch_segment), freed at its discretion

  /// "id fd pid offset nbytes[ scratch]": how a worker finds `nbytes` at `offset` of this segment.
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
/// process; grown (replaced) when too small. Valid until the next call with a larger size, or
/// the next trim_scratch.
const Segment& scratch_segment(std::size_t slot, std::size_t size);

/// What the calling thread's scratch segments may keep between tasks: each at most
/// kScratchKeptSegmentBytes, all together at most kScratchKeptBytes. Worker processes keep
/// their mappings of scratch segments within the same bounds (hetflow/_arrays.py).
inline constexpr std::size_t kScratchKeptSegmentBytes = std::size_t{4} << 20;
inline constexpr std::size_t kScratchKeptBytes = std::size_t{16} << 20;

/// Frees the calling thread's scratch segments beyond those bounds; called once the replies of
/// the tasks using them are in, so that one large array does not stay copied for ever.
void trim_scratch() noexcept;

/// Lets the calling thread's scratch segment `segment` go without reusing it: the worker process
/// that mapped it keeps its mapping, and the arrays over it their values.
void retire_scratch(const Segment& segment) noexcept;

/// The bytes of all threads' scratch segments (for tests and diagnostics).
std::size_t scratch_bytes() noexcept;

}  // namespace hetflow::python
