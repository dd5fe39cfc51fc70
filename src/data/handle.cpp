#include "data/handle.hpp"

#include "hetflow/detail/task_api.hpp"
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

HandleImpl::HandleImpl(DataContext& owner, void* host_ptr, const DataLayout& data_layout, std::string data_name)
    : context(&owner), layout(data_layout), name(std::move(data_name)), replicas(owner.node_count()) {
  replicas[kHostNode].state = ReplicaState::owner;
  replicas[kHostNode].ptr = host_ptr;
}

HandleImpl::~HandleImpl() {
  forget_tasks();  // device buffers went back to their nodes at unregistration
}

void HandleImpl::forget_tasks() noexcept {
  std::lock_guard guard(dep_lock);
  if (last_writer != nullptr) release(last_writer);
  last_writer = nullptr;
  for (std::vector<TaskCore*>* tasks : {&readers, &part_readers, &part_writers}) {
    for (TaskCore* task : *tasks) release(task);
    tasks->clear();
  }
}

}  // namespace hetflow::detail
