#pragma once
// What the data layer asks of whoever owns the memory nodes (the engine): the clock, the log of
// transfers, and the nodes themselves. An interface, so that the data layer depends on nothing
// above it and other kinds of memory nodes can be added behind it.
//
// Memory nodes are numbered: host RAM is node 0 (the users' own buffers), then each device
// node follows (see ext/memory_node.hpp for a device's memory, NodeMemory for its buffers).
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace hetflow::detail {

inline constexpr unsigned kHostNode = 0;

/// How many times the application has waited for tasks (Runtime::note_application_waited);
/// process-wide, as the application's arrays may be any runtime's.
inline std::atomic<std::uint64_t> application_waits{0};

class NodeMemory;

class DataContext {
 public:
  /// Seconds since the runtime started (virtual seconds under simulation).
  [[nodiscard]] virtual double now() const noexcept = 0;
  /// A copy of `bytes` from node `from` to node `to` took place from `start` to `end` (now() seconds).
  virtual void record_transfer(unsigned from, unsigned to, std::size_t bytes, double start, double end) = 0;
  /// Memory nodes, host RAM included.
  [[nodiscard]] virtual std::size_t node_count() const noexcept = 0;
  /// A device node (node >= 1).
  [[nodiscard]] virtual NodeMemory& node_memory(unsigned node) const noexcept = 0;
  /// Whether time is virtual: then nothing runs beside the thread that advances it, so waiting
  /// for another task to free memory or to land a copy could never end.
  [[nodiscard]] virtual bool simulating() const noexcept = 0;

 protected:
  DataContext() = default;
  ~DataContext() = default;
  DataContext(const DataContext&) = default;
  DataContext& operator=(const DataContext&) = default;
};

}  // namespace hetflow::detail
