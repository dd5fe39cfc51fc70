#include "data/handle.hpp"

#include "core/runtime_impl.hpp"
#include "core/task.hpp"
#include "hetflow/error.hpp"

namespace hetflow {

const DataLayout& DataHandle::layout() const {
  if (!impl_) throw InvalidArgument("DataHandle: empty handle");
  return impl_->layout;
}
const std::string& DataHandle::name() const {
  if (!impl_) throw InvalidArgument("DataHandle: empty handle");
  return impl_->name;
}
void* DataHandle::host_ptr() const {
  if (!impl_) throw InvalidArgument("DataHandle: empty handle");
  return impl_->host_ptr();
}
bool DataHandle::registered() const noexcept { return impl_ && impl_->registered.load(std::memory_order_acquire); }

}  // namespace hetflow

namespace hetflow::detail {

HandleImpl::HandleImpl(RuntimeImpl& rt, void* host_ptr, const DataLayout& data_layout, std::string data_name)
    : runtime(&rt), layout(data_layout), name(std::move(data_name)), replicas(rt.memory_nodes().size()) {
  replicas[kHostNode] = {ReplicaState::owner, host_ptr};
}

HandleImpl::~HandleImpl() {
  forget_tasks();
  for (std::size_t node = 1; node < replicas.size(); ++node) {
    if (replicas[node].ptr != nullptr) runtime->memory_nodes()[node]->free(replicas[node].ptr);
  }
}

void HandleImpl::forget_tasks() noexcept {
  std::lock_guard guard(dep_lock);
  if (last_writer != nullptr) release(last_writer);
  last_writer = nullptr;
  for (TaskCore* reader : readers) release(reader);
  readers.clear();
}

void* prepare_replica(HandleImpl& handle, unsigned node, bool writes) {
  auto& nodes = handle.runtime->memory_nodes();
  if (nodes.size() == 1) return handle.replicas[kHostNode].ptr;  // one copy: always coherent

  std::lock_guard guard(handle.coherence_mutex);
  Replica& local = handle.replicas[node];
  const std::size_t bytes = handle.layout.span_bytes();
  if (local.state == ReplicaState::invalid) {
    if (local.ptr == nullptr) local.ptr = nodes[node]->allocate(bytes);
    // Bring the latest version through the host: first to host RAM if it lives elsewhere.
    Replica& host = handle.replicas[kHostNode];
    if (host.state == ReplicaState::invalid) {
      for (std::size_t other = 1; other < handle.replicas.size(); ++other) {
        if (handle.replicas[other].state != ReplicaState::invalid) {
          nodes[other]->copy_out(host.ptr, handle.replicas[other].ptr, bytes);
          host.state = ReplicaState::shared;
          break;
        }
      }
    }
    if (node != kHostNode) nodes[node]->copy_in(local.ptr, host.ptr, bytes);
    for (Replica& replica : handle.replicas) {
      if (replica.state == ReplicaState::owner) replica.state = ReplicaState::shared;
    }
    local.state = ReplicaState::shared;
  }
  if (writes) {
    for (Replica& replica : handle.replicas) replica.state = ReplicaState::invalid;
    local.state = ReplicaState::owner;
  }
  return local.ptr;
}

}  // namespace hetflow::detail
