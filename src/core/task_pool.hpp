#pragma once
// Task records come from a pool: each thread keeps a free list, and full lists move between
// threads in batches (tasks are typically made by the submitting thread and freed by workers),
// so steady-state submission never reaches the general allocator.
#include "core/task.hpp"

namespace hetflow::detail {

inline constexpr std::size_t kHeapBodyAlign = 64;

TaskCore* allocate_task();
/// Resets the record (destroys its result, name, error...) and returns it to the pool.
void recycle_task(TaskCore* task) noexcept;

}  // namespace hetflow::detail
