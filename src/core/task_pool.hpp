#pragma once
// Task records, and their access lists up to a few, come from pools (util/block_pool.hpp), so
// steady-state submission never reaches the general allocator.
#include "core/task.hpp"

namespace hetflow::detail {

inline constexpr std::size_t kHeapBodyAlign = 64;

/// A body that does not fit inline lives on the heap: the record's inline storage then holds
/// where, and with which alignment it was allocated (kHeapBodyAlign at least).
struct HeapBody {
  void* storage;
  std::size_t align;
};
static_assert(sizeof(HeapBody) <= TaskCore::kInlineStorage);

TaskCore* allocate_task();
/// Resets the record (destroys its result, name, error...) and returns it to the pool, once its
/// last reference is dropped; a claimed task's record stays until its queue entry is dropped too.
void recycle_task(TaskCore* task) noexcept;
/// Destroys a done task's result once no Future of it is left (TaskCore::future_refs), once.
void drop_result_nobody_reads(TaskCore* task) noexcept;
/// A claimed task's queue entry was taken (Engine::begin): returns the record to the pool if its
/// last reference is gone already.
void drop_claimed_entry(TaskCore* task) noexcept;
/// Makes room for `count` access records (TaskCore::accesses()) in a new task.
void allocate_accesses(TaskCore* task, std::size_t count);

}  // namespace hetflow::detail
