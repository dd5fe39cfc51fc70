#include "core/task_pool.hpp"

#include <pthread.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace hetflow::detail {
namespace {

constexpr std::size_t kBatch = 128;
constexpr std::size_t kSlab = 256;

// A free list threaded through SchedTask::sched_next.
struct FreeList {
  TaskCore* head = nullptr;
  std::size_t size = 0;

  void push(TaskCore* task) noexcept {
    task->sched_next = head;
    head = task;
    ++size;
  }
  TaskCore* pop() noexcept {
    TaskCore* task = head;
    head = static_cast<TaskCore*>(task->sched_next);
    --size;
    return task;
  }
};

class GlobalPool {
 public:
  void give(FreeList batch) {
    std::lock_guard guard(mutex_);
    batches_.push_back(batch);
  }
  bool take(FreeList& into) {
    std::lock_guard guard(mutex_);
    if (batches_.empty()) return false;
    into = batches_.back();
    batches_.pop_back();
    return true;
  }
  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }
  // Slabs are never returned: records are reused for the life of the process.
  FreeList grow() {
    auto* slab = static_cast<TaskCore*>(::operator new (sizeof(TaskCore) * kSlab, std::align_val_t{alignof(TaskCore)}));
    FreeList list;
    for (std::size_t i = 0; i < kSlab; ++i) list.push(::new (&slab[i]) TaskCore());
    std::lock_guard guard(mutex_);
    slabs_.push_back(slab);
    return list;
  }

 private:
  std::mutex mutex_;
  std::vector<FreeList> batches_;
  std::vector<TaskCore*> slabs_;
};

GlobalPool& global_pool() {
  static auto* pool = [] {
    auto* created = new GlobalPool();  // outlives every thread's cache
    // A fork while another thread holds the lock would leave it held for ever in the child,
    // where a new runtime allocates tasks.
    ::pthread_atfork([] { global_pool().lock(); }, [] { global_pool().unlock(); }, [] { global_pool().unlock(); });
    return created;
  }();
  return *pool;
}

struct ThreadCache {
  FreeList list;
  ~ThreadCache() {
    if (list.size > 0) global_pool().give(list);
  }
};

thread_local ThreadCache cache;

}  // namespace

TaskCore* allocate_task() {
  FreeList& list = cache.list;
  if (list.head == nullptr && !global_pool().take(list)) list = global_pool().grow();
  TaskCore* task = list.pop();
  // The next record was most likely last written by a worker: start fetching it now.
  if (list.head != nullptr) __builtin_prefetch(list.head, 1);
  return task;
}

void recycle_task(TaskCore* task) noexcept {
  if (task->status() == TaskStatus::done && task->ops != nullptr && task->ops->destroy_result != nullptr) {
    task->ops->destroy_result(task->storage());
  }
  if (task->flags & TaskCore::kHeapStorage) {
    ::operator delete (*reinterpret_cast<void**>(task->inline_storage), std::align_val_t{kHeapBodyAlign});
  }
  if (task->flags & TaskCore::kHeapAccesses) delete[] task->heap_accesses;
  if (task->flags & TaskCore::kCallsBack) {  // a callback never called: its task never started
    std::launder(reinterpret_cast<ManualCallback*>(task->inline_storage))->~ManualCallback();
  }
  delete task->more_successors;
  task->more_successors = nullptr;
  task->first_successor = 0;
  task->error = nullptr;
  task->name.reset();
  task->codelet = nullptr;
  task->ops = nullptr;
  task->runtime = nullptr;
  task->flags = 0;
  task->released = false;
  task->access_count = 0;
  task->pinned_worker = -1;
  task->state.store(static_cast<std::uint32_t>(TaskStatus::pending), std::memory_order_relaxed);

  FreeList& list = cache.list;
  list.push(task);
  if (list.size >= 2 * kBatch) {
    FreeList batch;
    while (batch.size < kBatch) batch.push(list.pop());
    global_pool().give(batch);
  }
}

}  // namespace hetflow::detail
