#include "core/task_pool.hpp"

#include <memory>
#include <new>
#include <vector>

#include "util/block_pool.hpp"
#include "util/unnested.hpp"

namespace hetflow::detail {
namespace {

using TaskBlocks = BlockPool<sizeof(TaskCore), alignof(TaskCore)>;
// Access lists a little longer than a task's inline ones (a stencil's neighbours, say).
constexpr std::size_t kPooledAccesses = 8;
using AccessBlocks = BlockPool<sizeof(AccessRecord) * kPooledAccesses, alignof(AccessRecord)>;

}  // namespace

TaskCore* allocate_task() { return ::new (TaskBlocks::allocate()) TaskCore(); }

namespace {

// What the record holds for its task (its result, body, error), beside what a scheduler, or a
// worker that took a claimed task's entry (Engine::claim) before it was claimed, may still read.
void release_contents(TaskCore* task) noexcept {
  if (task->status() == TaskStatus::done && task->ops != nullptr && task->ops->destroy_result != nullptr &&
      !(task->future_refs.load(std::memory_order_acquire) & TaskCore::kResultGone)) {
    task->ops->destroy_result(task->storage());
  }
  if (task->flags & TaskCore::kHeapStorage) {
    const auto* heap = reinterpret_cast<const HeapBody*>(task->inline_storage);
    ::operator delete (heap->storage, std::align_val_t{heap->align});
  }
  if (task->flags & TaskCore::kHeapAccesses) {
    if (task->access_count <= kPooledAccesses) {
      AccessBlocks::recycle(task->heap_accesses);
    } else {
      delete[] task->heap_accesses;
    }
  }
  if (task->flags & TaskCore::kCallsBack) {  // a callback never called: its task never started
    std::launder(reinterpret_cast<ManualCallback*>(task->inline_storage))->~ManualCallback();
  }
  task->error = nullptr;
}

void return_to_pool(TaskCore* task) noexcept {
  task->~TaskCore();
  TaskBlocks::recycle(task);
}

}  // namespace

namespace {

// A queued task tagged so (drop_result_nobody_reads) loses its result only, then the reference
// that kept its record meanwhile.
constexpr std::uintptr_t kDropResultTag = 1;

void recycle_one(TaskCore* queued) noexcept {
  const auto bits = reinterpret_cast<std::uintptr_t>(queued);
  if (bits & kDropResultTag) {
    TaskCore* task = reinterpret_cast<TaskCore*>(bits & ~kDropResultTag);
    task->ops->destroy_result(task->storage());
    release(task);
    return;
  }
  TaskCore* task = queued;
  release_contents(task);
  if (!(task->state.load(std::memory_order_acquire) & TaskCore::kClaimedBit) ||
      (task->state.fetch_or(TaskCore::kContentsGoneBit, std::memory_order_acq_rel) & TaskCore::kEntryDroppedBit)) {
    return_to_pool(task);
  }
}

// The tasks whose last reference went while this thread was recycling another, if it is. A
// task's result or body may hold the futures of other tasks (a result that holds the future of
// the task before it, and so on): recycled inside one another, a chain of 100,000 took as many
// nested calls and overflowed the stack. They wait for the outermost call instead.
thread_local Unnested<TaskCore*, UnnestedOrder::lifo> tl_to_recycle;

}  // namespace

void recycle_task(TaskCore* task) noexcept { tl_to_recycle.run(task, recycle_one); }

void drop_result_nobody_reads(TaskCore* task) noexcept {
  if ((task->state.load(std::memory_order_seq_cst) & TaskCore::kStatusMask) !=
      static_cast<std::uint32_t>(TaskStatus::done))
    return;
  const BodyOps* ops = std::atomic_ref(task->ops).load(std::memory_order_relaxed);
  if (ops == nullptr || ops->destroy_result == nullptr) return;
  if (task->future_refs.fetch_or(TaskCore::kResultGone, std::memory_order_acq_rel) & TaskCore::kResultGone) return;
  // A result may hold the last futures of other tasks, whose results hold more: dropped inside
  // one another, a chain of them would take as many nested calls (see tl_to_recycle).
  retain(task);
  tl_to_recycle.run(reinterpret_cast<TaskCore*>(reinterpret_cast<std::uintptr_t>(task) | kDropResultTag), recycle_one);
}

void drop_claimed_entry(TaskCore* task) noexcept {
  if (task->state.fetch_or(TaskCore::kEntryDroppedBit, std::memory_order_acq_rel) & TaskCore::kContentsGoneBit) {
    return_to_pool(task);
  }
}

void allocate_accesses(TaskCore* task, std::size_t count) {
  task->access_count = static_cast<std::uint16_t>(count);
  if (count <= TaskCore::kInlineAccesses) return;
  if (count <= kPooledAccesses) {
    task->heap_accesses = static_cast<AccessRecord*>(AccessBlocks::allocate());
    std::uninitialized_default_construct_n(task->heap_accesses, count);
  } else {
    task->heap_accesses = new AccessRecord[count];
  }
  task->flags |= TaskCore::kHeapAccesses;
}

}  // namespace hetflow::detail
