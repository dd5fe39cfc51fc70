#pragma once
// The memory-node contract: a place data can live (a GPU's memory, an OpenCL device's global
// memory). Host RAM is node 0 and is the engine's own; a driver brings one node per device
// (Driver::memory_node). The engine decides what lives where (MSI replicas per node), caches
// buffers per node, evicts least-recently-used replicas when a node is full and writes dirty
// ones back first; a node only allocates, frees and copies.
//
// Buffers are opaque to the engine: `void*` holds whatever the device calls a buffer (a device
// pointer, a cl_mem). Implementations receive it through TaskContext::buffer(i).ptr.
#include <cstddef>
#include <memory>
#include <string>

#include "hetflow/export.hpp"

namespace hetflow::ext {

/// An asynchronous copy in flight.
class HETFLOW_API Transfer {
 public:
  virtual ~Transfer() = default;
  /// Blocks until the copy has completed; throws hetflow::Error if it failed.
  virtual void wait() = 0;
  /// Whether the copy has completed (never blocks).
  [[nodiscard]] virtual bool done() = 0;
};

class HETFLOW_API MemoryNode {
 public:
  virtual ~MemoryNode() = default;
  /// For traces and statistics, e.g. "cuda0", "opencl0".
  [[nodiscard]] virtual std::string name() const = 0;
  /// Bytes the node can hold for the engine; 0 when unknown (allocate then says when it is full).
  [[nodiscard]] virtual std::size_t capacity() const noexcept { return 0; }
  /// Bytes of the largest single buffer the node can allocate (OpenCL's
  /// CL_DEVICE_MAX_MEM_ALLOC_SIZE); 0 when no bound applies but the capacity. A task with a
  /// larger buffer is run elsewhere when it may be, as one whose data exceed the capacity.
  [[nodiscard]] virtual std::size_t max_buffer_bytes() const noexcept { return 0; }
  /// A buffer of `bytes` on the node, or nullptr when the node has no room for it (the engine
  /// then evicts replicas and tries again). Throws hetflow::Error for any other failure.
  [[nodiscard]] virtual void* allocate(std::size_t bytes) = 0;
  virtual void free(void* buffer, std::size_t bytes) noexcept = 0;
  /// Starts copying `bytes` from host memory at `host` into `buffer`. `host` is neither read
  /// after the transfer completes nor written by the engine before it does. Returns nullptr when
  /// the copy has already completed.
  [[nodiscard]] virtual std::unique_ptr<Transfer> copy_from_host(void* buffer, const void* host, std::size_t bytes) = 0;
  /// Copies `bytes` from `buffer` into host memory at `host`; returns once they are there.
  virtual void copy_to_host(void* host, const void* buffer, std::size_t bytes) = 0;
  /// A host buffer that transfers will use from now on (a registered handle's data), and the end
  /// of that. A node may pin large ones (page-lock them) where that makes transfers faster.
  virtual void host_buffer_added(void* /*host*/, std::size_t /*bytes*/) {}
  virtual void host_buffer_removed(void* /*host*/, std::size_t /*bytes*/) noexcept {}
};

}  // namespace hetflow::ext
