#pragma once
// MSI coherence of a handle's replicas across memory nodes. Host RAM (node 0) holds the user's
// buffer; device replicas get buffers on first use (NodeMemory). Reads fetch the latest version
// to the reader's node only when the local replica is invalid; writes leave the writer's replica
// the only valid one. Device copies start asynchronously (fetch) and are waited for when the
// task is about to run (complete_fetch), so that copies for the next task overlap the current.
#include <memory>

#include "data/handle.hpp"
#include "hetflow/access.hpp"

namespace hetflow::detail {

/// Starts making the replica on `node` valid and pins it (no eviction) until unpin(). Never waits
/// for a device copy to complete. Called for ready tasks only, whose accesses cannot conflict
/// with running tasks. `needs_data` false (write-only access): only the buffer is needed.
void fetch(HandleImpl& handle, unsigned node, bool needs_data);
/// Waits for the replica's copy and, for a write, makes it the only valid one. Returns the
/// buffer. The replica must have been fetched (and stay pinned).
void* complete_fetch(HandleImpl& handle, unsigned node, AccessMode mode);
void unpin(HandleImpl& handle, unsigned node) noexcept;
/// fetch + complete_fetch + unpin: for host-side accesses outside tasks (acquire, unregister).
void* prepare_replica(HandleImpl& handle, unsigned node, AccessMode mode);
/// Starts bringing a valid copy to `node` ahead of need, unless one is there or on its way. From
/// a copy only another device holds, only where both devices chain copies (ChainedCopies in
/// node_memory.hpp): the task that reads it then gets it through host RAM when it starts.
void prefetch(HandleImpl& handle, unsigned node);
/// A node holding a valid copy (or one on its way): `node` itself if it does, else host RAM if
/// it does, else the lowest such device node.
[[nodiscard]] unsigned valid_source(HandleImpl& handle, unsigned node);
/// Copies the replica on device node `from` into the user's buffer (only the data's own bytes,
/// never the gaps between the rows of a tile), unless that buffer is gone (host_gone). Called
/// with the coherence mutex held.
void copy_home(HandleImpl& handle, unsigned from);
/// Gives the handle's device buffers back to their nodes (at unregistration, the latest version
/// being home already).
void drop_device_replicas(HandleImpl& handle) noexcept;

}  // namespace hetflow::detail
