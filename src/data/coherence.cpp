#include "data/coherence.hpp"

#include <mutex>

#include "hetflow/access.hpp"

#include "core/runtime_impl.hpp"
#include "data/memory_node.hpp"
#include "data/node_memory.hpp"

namespace hetflow::detail {
namespace {

// Everything below runs with the handle's coherence mutex held.

void wait_pending(HandleImpl& handle, unsigned node) {
  Replica& replica = handle.replicas[node];
  if (!replica.pending) return;
  std::shared_ptr<ext::Transfer> transfer = std::move(replica.pending);
  transfer->wait();
  handle.runtime->record_transfer(kHostNode, node, handle.layout.span_bytes(), replica.pending_since,
                                  handle.runtime->now());
}

void wait_all_pending(HandleImpl& handle) {
  for (unsigned node = 1; node < handle.replicas.size(); ++node) wait_pending(handle, node);
}

void copy_home(HandleImpl& handle, unsigned from) {
  Replica& source = handle.replicas[from];
  wait_pending(handle, from);
  const std::size_t bytes = handle.layout.span_bytes();
  const double start = handle.runtime->now();
  handle.runtime->node_memory(from).device().copy_to_host(handle.host_ptr(), source.ptr, bytes);
  handle.runtime->record_transfer(from, kHostNode, bytes, start, handle.runtime->now());
}

// Brings the latest version into host RAM when the host replica is invalid.
void make_host_valid(HandleImpl& handle) {
  Replica& host = handle.replicas[kHostNode];
  if (host.state != ReplicaState::invalid) return;
  for (unsigned other = 1; other < handle.replicas.size(); ++other) {
    if (handle.replicas[other].state != ReplicaState::invalid) {
      copy_home(handle, other);
      for (Replica& replica : handle.replicas) {
        if (replica.state == ReplicaState::owner) replica.state = ReplicaState::shared;
      }
      host.state = ReplicaState::shared;
      return;
    }
  }
}

// `hint`: a prefetch, which neither waits for room nor copies between devices. Returns false
// when it gave up.
// `needs_data` false: the access overwrites everything (W), so only the buffer is needed.
bool start_fetch(HandleImpl& handle, unsigned node, bool needs_data, bool hint = false) {
  Replica& local = handle.replicas[node];
  if (node == kHostNode) {
    if (needs_data) make_host_valid(handle);
    return true;
  }
  NodeMemory& memory = handle.runtime->node_memory(node);
  const std::size_t bytes = handle.layout.span_bytes();
  if (hint && handle.replicas[kHostNode].state == ReplicaState::invalid) return false;
  if (local.ptr == nullptr) local.ptr = memory.allocate(handle, bytes, /*may_wait=*/!hint);
  if (local.ptr == nullptr) return false;
  memory.touch(handle);
  if (local.state != ReplicaState::invalid || local.pending || !needs_data) return true;
  make_host_valid(handle);
  local.pending_since = handle.runtime->now();
  std::unique_ptr<ext::Transfer> transfer = memory.device().copy_from_host(local.ptr, handle.host_ptr(), bytes);
  if (transfer) {
    local.pending = std::move(transfer);
  } else {
    handle.runtime->record_transfer(kHostNode, node, bytes, local.pending_since, handle.runtime->now());
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
  if (handle.replicas[node].state != ReplicaState::invalid) return;
  try {
    start_fetch(handle, node, /*needs_data=*/true, /*hint=*/true);
  } catch (const std::exception&) {
    // A failed hint costs nothing: the task fetches (and reports) when it runs.
  }
}

bool valid_on(HandleImpl& handle, unsigned node) {
  if (handle.replicas.size() == 1) return true;
  std::lock_guard guard(handle.coherence_mutex);
  return handle.replicas[node].state != ReplicaState::invalid;
}

void drop_device_replicas(HandleImpl& handle) noexcept {
  if (handle.replicas.size() == 1) return;
  std::lock_guard guard(handle.coherence_mutex);
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
      handle.runtime->node_memory(node).release(handle, replica.ptr, handle.layout.span_bytes());
    }
    replica.ptr = nullptr;
    replica.state = ReplicaState::invalid;
  }
}

}  // namespace hetflow::detail
