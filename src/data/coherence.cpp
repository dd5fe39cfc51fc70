#include "data/coherence.hpp"

#include <array>
#include <cstddef>
#include <cstring>
#include <mutex>

#include "data/data_context.hpp"
#include "data/node_memory.hpp"
#include "hetflow/access.hpp"

namespace hetflow::detail {
namespace {

// A layout with gaps between its runs (a tile of a larger matrix) shares those gaps with other
// data, maybe other handles: device buffers hold the whole span, but only the runs may be
// written into the user's memory, and reading the gaps could race with a neighbour's writer.
// Such copies go through a staging buffer in host RAM.
[[nodiscard]] bool has_gaps(const DataLayout& layout) noexcept { return layout.payload_bytes() != layout.span_bytes(); }

template <class Copy>
void for_each_run(const DataLayout& layout, Copy copy) {
  const std::size_t run = layout.nx() * layout.elem_size;
  std::array<std::size_t, DataLayout::kMaxDims> index{};
  const std::size_t runs = layout.nx() == 0 ? 0 : layout.element_count() / layout.nx();
  for (std::size_t r = 0; r < runs; ++r) {
    std::size_t offset = 0;
    for (std::size_t d = 1; d < layout.ndim; ++d) offset += index[d] * layout.strides[d];
    copy(offset * layout.elem_size, run);
    for (std::size_t d = 1; d < layout.ndim; ++d) {
      if (++index[d] < layout.dims[d]) break;
      index[d] = 0;
    }
  }
}

/// An asynchronous copy from a staging buffer, which it keeps alive until the copy is done.
class StagedTransfer final : public ext::Transfer {
 public:
  StagedTransfer(std::unique_ptr<ext::Transfer> copy, std::unique_ptr<std::byte[]> staging)
      : copy_(std::move(copy)), staging_(std::move(staging)) {}
  void wait() override { copy_->wait(); }
  bool done() override { return copy_->done(); }

 private:
  std::unique_ptr<ext::Transfer> copy_;
  std::unique_ptr<std::byte[]> staging_;
};

std::unique_ptr<ext::Transfer> copy_from_host(HandleImpl& handle, ext::MemoryNode& node, void* buffer) {
  const DataLayout& layout = handle.layout;
  if (!has_gaps(layout)) return node.copy_from_host(buffer, handle.host_ptr(), layout.span_bytes());
  auto staging = std::make_unique<std::byte[]>(layout.span_bytes());
  const auto* host = static_cast<const std::byte*>(handle.host_ptr());
  for_each_run(layout,
               [&](std::size_t offset, std::size_t bytes) { std::memcpy(&staging[offset], host + offset, bytes); });
  std::unique_ptr<ext::Transfer> copy = node.copy_from_host(buffer, staging.get(), layout.span_bytes());
  if (!copy) return nullptr;
  return std::make_unique<StagedTransfer>(std::move(copy), std::move(staging));
}

void copy_to_host(HandleImpl& handle, ext::MemoryNode& node, const void* buffer) {
  const DataLayout& layout = handle.layout;
  if (!has_gaps(layout)) {
    node.copy_to_host(handle.host_ptr(), buffer, layout.span_bytes());
    return;
  }
  auto staging = std::make_unique<std::byte[]>(layout.span_bytes());
  node.copy_to_host(staging.get(), buffer, layout.span_bytes());
  auto* host = static_cast<std::byte*>(handle.host_ptr());
  for_each_run(layout,
               [&](std::size_t offset, std::size_t bytes) { std::memcpy(host + offset, &staging[offset], bytes); });
}

// Everything below runs with the handle's coherence mutex held.

// The copy of the owner's version that chained prefetches start from (start_chained_prefetch)
// is out of date, or no longer needed: host RAM has the version, or a write makes a new one.
void drop_staged_copy(HandleImpl& handle) {
  Replica& host = handle.replicas[kHostNode];
  if (!host.pending) return;
  std::shared_ptr<ext::Transfer> staged = std::move(host.pending);
  staged->wait();  // it reads the owner's buffer, which may change or go once it is dropped
}

void wait_pending(HandleImpl& handle, unsigned node) {
  Replica& replica = handle.replicas[node];
  if (!replica.pending) return;
  std::shared_ptr<ext::Transfer> transfer = std::move(replica.pending);
  transfer->wait();
  handle.context->record_transfer(kHostNode, node, handle.layout.span_bytes(), replica.pending_since,
                                  handle.context->now());
}

void wait_all_pending(HandleImpl& handle) {
  for (unsigned node = 1; node < handle.replicas.size(); ++node) wait_pending(handle, node);
  drop_staged_copy(handle);
}

// A device replica of data the application writes directly in host RAM once it has waited
// (host_writes_watched) is trusted while host RAM is valid only if it matched host RAM after
// the application's latest wait; otherwise it is dropped and copied again. That holds for a
// replica whose copy is still in flight too: a prefetch made for a task that then ran on another
// worker is never collected, and the application may have waited and written host RAM since.
// Without `may_wait` (a prefetch, which never waits) such a copy is left to the task's own fetch.
void distrust_if_host_may_differ(HandleImpl& handle, unsigned node, bool may_wait) {
  Replica& local = handle.replicas[node];
  if (local.state == ReplicaState::invalid || !handle.host_writes_watched.load(std::memory_order_relaxed) ||
      handle.replicas[kHostNode].state == ReplicaState::invalid ||
      local.matched_host_at == application_waits.load(std::memory_order_relaxed)) {
    return;
  }
  if (local.pending) {
    if (!may_wait) return;
    wait_pending(handle, node);  // it still writes the buffer: it lands before a new copy does
  }
  local.state = ReplicaState::invalid;
}

}  // namespace

void copy_home(HandleImpl& handle, unsigned from) {
  Replica& source = handle.replicas[from];
  wait_pending(handle, from);
  if (handle.host_gone.load(std::memory_order_acquire)) return;  // its buffer is being freed (discard)
  const double start = handle.context->now();
  copy_to_host(handle, handle.context->node_memory(from).device(), source.ptr);
  handle.context->record_transfer(from, kHostNode, handle.layout.payload_bytes(), start, handle.context->now());
  drop_staged_copy(handle);
}

namespace {

// Brings the latest version into host RAM when the host replica is invalid: from the owner, whose
// copy is there already, rather than from a replica that a prefetch may still be filling.
void make_host_valid(HandleImpl& handle) {
  Replica& host = handle.replicas[kHostNode];
  if (host.state != ReplicaState::invalid) return;
  unsigned from = kHostNode;
  for (unsigned other = 1; other < handle.replicas.size(); ++other) {
    const ReplicaState state = handle.replicas[other].state;
    if (state == ReplicaState::owner) {
      from = other;
      break;
    }
    if (state == ReplicaState::shared && from == kHostNode) from = other;
  }
  if (from == kHostNode) return;  // unreachable: some replica is always valid
  copy_home(handle, from);
  const std::uint64_t waits = application_waits.load(std::memory_order_relaxed);
  for (Replica& replica : handle.replicas) {
    if (replica.state == ReplicaState::owner) replica.state = ReplicaState::shared;
    replica.matched_host_at = waits;
  }
  host.state = ReplicaState::shared;
}

// A prefetch to device `node` of data whose latest version only another device holds (host RAM
// invalid): a device -> host -> device chain that nobody waits for, where both nodes can make
// one (ChainedCopies); otherwise it gives up (returns false), and the copy is made, through
// copy_to_host, when the task that reads the data starts. The source stays the owner (host RAM
// lacks its version), so that nothing is lost when either replica is evicted: reads replicate,
// only a write makes a replica the only valid one. The new replica is shared, valid once its
// `pending` copy lands. The copy to host memory goes to a staging buffer, never to the user's,
// and is made once per version: the host replica's `pending` keeps it (a StagedCopy) for the
// chains to other devices, until host RAM gets the version or a write makes a new one.
bool start_chained_prefetch(HandleImpl& handle, unsigned node) {
  unsigned from = kHostNode;
  for (unsigned other = 1; other < handle.replicas.size(); ++other) {
    if (other != node && handle.replicas[other].state == ReplicaState::owner) from = other;
  }
  if (from == kHostNode) return false;
  Replica& source = handle.replicas[from];
  Replica& local = handle.replicas[node];
  if (source.pending || local.pending) return false;  // neither happens while host RAM is invalid
  NodeMemory& target_memory = handle.context->node_memory(node);
  auto* source_copies = dynamic_cast<ChainedCopies*>(&handle.context->node_memory(from).device());
  auto* target_copies = dynamic_cast<ChainedCopies*>(&target_memory.device());
  if (source_copies == nullptr || target_copies == nullptr) return false;
  const std::size_t bytes = handle.layout.span_bytes();
  if (local.ptr == nullptr) local.ptr = target_memory.allocate(handle, bytes, /*may_wait=*/false);
  if (local.ptr == nullptr) return false;
  target_memory.touch(handle);
  Replica& host = handle.replicas[kHostNode];
  auto staged = std::dynamic_pointer_cast<StagedCopy>(host.pending);
  if (!staged) {
    staged = std::make_shared<StagedCopy>(bytes);  // the whole span, gaps included
    staged->set_copy(source_copies->start_copy_to_host(staged->staging(), source.ptr, bytes));
    host.pending = staged;
  }
  local.pending_since = handle.context->now();
  local.pending = target_copies->copy_from_host_after(local.ptr, bytes, std::move(staged));
  local.state = ReplicaState::shared;
  return true;
}

// `hint`: a prefetch, which neither waits for room nor copies between devices other than by a
// chain nobody waits for (start_chained_prefetch). Returns false when it gave up.
// `needs_data` false: the access overwrites everything (W), so only the buffer is needed.
bool start_fetch(HandleImpl& handle, unsigned node, bool needs_data, bool hint = false) {
  Replica& local = handle.replicas[node];
  if (node == kHostNode) {
    if (needs_data) make_host_valid(handle);
    return true;
  }
  NodeMemory& memory = handle.context->node_memory(node);
  const std::size_t bytes = handle.layout.span_bytes();
  if (hint && handle.replicas[kHostNode].state == ReplicaState::invalid) return start_chained_prefetch(handle, node);
  if (local.ptr == nullptr) local.ptr = memory.allocate(handle, bytes, /*may_wait=*/!hint);
  if (local.ptr == nullptr) return false;
  memory.touch(handle);
  if (needs_data) distrust_if_host_may_differ(handle, node, /*may_wait=*/!hint);
  if (local.state != ReplicaState::invalid || local.pending || !needs_data) return true;
  make_host_valid(handle);
  local.matched_host_at = application_waits.load(std::memory_order_relaxed);
  local.pending_since = handle.context->now();
  std::unique_ptr<ext::Transfer> transfer = copy_from_host(handle, memory.device(), local.ptr);
  if (transfer) {
    local.pending = std::move(transfer);
  } else {
    handle.context->record_transfer(kHostNode, node, bytes, local.pending_since, handle.context->now());
  }
  // Valid as far as coherence goes: whoever uses it waits for `pending` first.
  for (Replica& replica : handle.replicas) {
    if (replica.state == ReplicaState::owner) replica.state = ReplicaState::shared;
  }
  local.state = ReplicaState::shared;
  return true;
}

}  // namespace

void fetch(HandleImpl& handle, unsigned node, bool needs_data) {
  if (handle.replicas.size() == 1) return;  // one copy: always coherent
  std::lock_guard guard(handle.coherence_mutex);
  ++handle.replicas[node].pins;
  try {
    start_fetch(handle, node, needs_data);
  } catch (...) {
    --handle.replicas[node].pins;
    throw;
  }
}

void* complete_fetch(HandleImpl& handle, unsigned node, AccessMode mode) {
  if (handle.replicas.size() == 1) return handle.replicas[kHostNode].ptr;
  std::lock_guard guard(handle.coherence_mutex);
  Replica& local = handle.replicas[node];
  const bool writes = hetflow::writes(mode);
  // A writer that ran in between (on another node) may have invalidated what the fetch started.
  if (local.state == ReplicaState::invalid && reads(mode)) start_fetch(handle, node, true);
  if (writes) {
    // Copies in flight read or fill buffers about to become stale: let them land first.
    wait_all_pending(handle);
    for (Replica& replica : handle.replicas) replica.state = ReplicaState::invalid;
    local.state = ReplicaState::owner;
  } else {
    wait_pending(handle, node);
  }
  return local.ptr;
}

void unpin(HandleImpl& handle, unsigned node) noexcept {
  if (handle.replicas.size() == 1) return;
  std::lock_guard guard(handle.coherence_mutex);
  --handle.replicas[node].pins;
}

void* prepare_replica(HandleImpl& handle, unsigned node, AccessMode mode) {
  fetch(handle, node, reads(mode));
  try {
    void* ptr = complete_fetch(handle, node, mode);
    unpin(handle, node);
    return ptr;
  } catch (...) {
    unpin(handle, node);
    throw;
  }
}

void prefetch(HandleImpl& handle, unsigned node) {
  if (handle.replicas.size() == 1 || node == kHostNode) return;
  std::unique_lock guard(handle.coherence_mutex, std::try_to_lock);
  if (!guard.owns_lock()) return;  // busy: a hint is not worth waiting for
  distrust_if_host_may_differ(handle, node, /*may_wait=*/false);
  if (handle.replicas[node].state != ReplicaState::invalid) return;
  try {
    start_fetch(handle, node, /*needs_data=*/true, /*hint=*/true);
  } catch (const std::exception&) {
    // A failed hint costs nothing: the task fetches (and reports) when it runs.
  }
}

unsigned valid_source(HandleImpl& handle, unsigned node) {
  if (handle.replicas.size() == 1) return node;
  std::lock_guard guard(handle.coherence_mutex);
  if (handle.replicas[node].state != ReplicaState::invalid) return node;
  for (unsigned other = 0; other < handle.replicas.size(); ++other) {
    if (handle.replicas[other].state != ReplicaState::invalid) return other;
  }
  return kHostNode;  // unreachable: some replica is always valid
}

void drop_device_replicas(HandleImpl& handle) noexcept {
  if (handle.replicas.size() == 1) return;
  std::lock_guard guard(handle.coherence_mutex);
  try {
    drop_staged_copy(handle);
  } catch (...) {
    // Its staging buffer goes either way.
  }
  for (unsigned node = 1; node < handle.replicas.size(); ++node) {
    Replica& replica = handle.replicas[node];
    if (replica.pending) {
      try {
        replica.pending->wait();
      } catch (...) {
        // The buffer is dropped either way.
      }
      replica.pending.reset();
    }
    if (replica.ptr != nullptr) {
      handle.context->node_memory(node).release(handle, replica.ptr, handle.layout.span_bytes());
    }
    replica.ptr = nullptr;
    replica.state = ReplicaState::invalid;
  }
}

}  // namespace hetflow::detail
