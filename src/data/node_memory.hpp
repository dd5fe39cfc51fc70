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
  mutable std::mutex mutex_;
  std::size_t used_ = 0;                      // bytes allocated from the node, cached ones included
  std::multimap<std::size_t, void*> cached_;  // freed buffers by size
  std::list<HandleImpl*> lru_;                // handles with a buffer here, least recent first
};

}  // namespace hetflow::detail
