#pragma once
// The engine's side of one device memory node: the bytes it may use, a cache of freed buffers
// for reuse, and the least-recently-used order of the handles that have a buffer there, from
// which replicas are evicted (dirty ones written back to host RAM first) when the node is full.
#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "hetflow/ext/memory_node.hpp"

namespace hetflow::detail {

class DataContext;
class HandleImpl;

/// A copy of a device's buffer into host memory of its own (a staging buffer, never the user's),
/// which copies to other devices follow (ChainedCopies): one per version of the data, however
/// many devices it goes to.
class StagedCopy final : public ext::Transfer {
 public:
  /// `bytes` of staging; the copy into it (nullptr: none yet, or landed already) is set once.
  explicit StagedCopy(std::size_t bytes) : staging_(std::make_unique_for_overwrite<std::byte[]>(bytes)) {}
  void set_copy(std::unique_ptr<ext::Transfer> copy) noexcept { copy_ = std::move(copy); }
  [[nodiscard]] std::byte* staging() const noexcept { return staging_.get(); }
  /// The copy into staging() while in flight (what the device node returned), else nullptr.
  [[nodiscard]] ext::Transfer* copy() const noexcept { return copy_.get(); }
  void wait() override {
    if (copy_) copy_->wait();
  }
  [[nodiscard]] bool done() override { return !copy_ || copy_->done(); }

 private:
  std::unique_ptr<std::byte[]> staging_;
  std::unique_ptr<ext::Transfer> copy_;
};

/// What a device memory node may offer beyond ext::MemoryNode: a copy from another device's
/// buffer through host memory that nobody waits for, so that data only another device holds
/// can be prefetched (device -> host -> device) ahead of the task that reads it, as data in
/// host RAM is. The simulator's nodes offer it; the CUDA and OpenCL drivers' nodes do not (yet):
/// such data then moves when the task that reads it is started, through copy_to_host.
class ChainedCopies {
 public:
  /// Starts copying `bytes` from `buffer` on this node into host memory at `host`; nullptr when
  /// the copy has completed already. `host` stays alive and untouched until it completes.
  [[nodiscard]] virtual std::unique_ptr<ext::Transfer> start_copy_to_host(void* host, const void* buffer,
                                                                          std::size_t bytes) = 0;
  /// Starts copying `bytes` from `source`'s staging buffer into `buffer` on this node once
  /// `source`'s copy (made by start_copy_to_host of another node) has landed, without waiting
  /// for it. The transfer returned keeps `source` until it no longer needs it, and completes
  /// after both copies.
  [[nodiscard]] virtual std::unique_ptr<ext::Transfer> copy_from_host_after(void* buffer, std::size_t bytes,
                                                                            std::shared_ptr<StagedCopy> source) = 0;

 protected:
  ChainedCopies() = default;
  ~ChainedCopies() = default;
  ChainedCopies(const ChainedCopies&) = default;
  ChainedCopies& operator=(const ChainedCopies&) = default;
};

class NodeMemory {
 public:
  /// `limit` 0: the node's own capacity (or, when it reports none, whatever allocate gives).
  NodeMemory(DataContext& context, unsigned index, std::shared_ptr<ext::MemoryNode> node, std::size_t limit);
  ~NodeMemory();
  NodeMemory(const NodeMemory&) = delete;
  NodeMemory& operator=(const NodeMemory&) = delete;

  [[nodiscard]] ext::MemoryNode& device() noexcept { return *node_; }
  [[nodiscard]] unsigned index() const noexcept { return index_; }
  [[nodiscard]] std::size_t limit() const noexcept { return limit_; }
  /// The largest single buffer the node allocates (MemoryNode::max_buffer_bytes); 0: no bound.
  [[nodiscard]] std::size_t max_buffer() const noexcept { return max_buffer_; }
  [[nodiscard]] std::size_t used() const;

  /// A buffer for `handle`'s replica on this node, reusing a cached one or evicting the least
  /// recently used replicas (never `handle`'s, never pinned ones) until there is room. Called with
  /// handle's coherence mutex held. Throws hetflow::Error when the data can never fit, or when
  /// everything that could make room stays in use. With `may_wait` false, gives nullptr instead
  /// of waiting for pinned replicas to be released.
  void* allocate(HandleImpl& handle, std::size_t bytes, bool may_wait);
  /// Marks `handle`'s replica here as just used (it holds a buffer here).
  void touch(HandleImpl& handle);
  /// The handle's buffer here goes back to the cache; called with its coherence mutex held.
  void release(HandleImpl& handle, void* buffer, std::size_t bytes) noexcept;

 private:
  bool evict_one(HandleImpl& requester);
  void free_cached() noexcept;

  DataContext& context_;
  const unsigned index_;
  const std::shared_ptr<ext::MemoryNode> node_;
  const std::size_t limit_;
  const std::size_t max_buffer_;
  mutable std::mutex mutex_;
  std::size_t used_ = 0;                      // bytes allocated from the node, cached ones included
  std::multimap<std::size_t, void*> cached_;  // freed buffers by size
  std::list<HandleImpl*> lru_;                // handles with a buffer here, least recent first
};

}  // namespace hetflow::detail
