#include "data/registered_memory.hpp"

#include <algorithm>
#include <array>
#include <iterator>
#include <sstream>

#include "data/handle.hpp"
#include "hetflow/error.hpp"

namespace hetflow::detail {

namespace {

// A layout as contiguous runs of `run_bytes`, placed by up to kMaxDims - 1 outer dimensions: the
// inner dimensions that only lengthen the run are merged into it, and an outer dimension that
// only continues the one before is merged into that one.
struct Runs {
  struct Outer {
    std::size_t count;
    std::size_t stride_bytes;
  };
  std::size_t run_bytes = 0;
  std::size_t total = 0;  // 0: no element
  std::size_t outer_count = 0;
  std::array<Outer, DataLayout::kMaxDims> outer{};
};

Runs runs_of(const DataLayout& layout) {
  Runs runs;
  if (layout.element_count() == 0) return runs;
  std::size_t contiguous = layout.nx();
  std::size_t d = 1;
  for (; d < layout.ndim && layout.strides[d] == contiguous; ++d) contiguous *= layout.dims[d];
  runs.run_bytes = contiguous * layout.elem_size;
  runs.total = 1;
  for (; d < layout.ndim; ++d) {
    const std::size_t stride_bytes = layout.strides[d] * layout.elem_size;
    runs.total *= layout.dims[d];
    if (runs.outer_count > 0) {
      Runs::Outer& last = runs.outer[runs.outer_count - 1];
      if (stride_bytes == last.stride_bytes * last.count) {
        last.count *= layout.dims[d];
        continue;
      }
    }
    runs.outer[runs.outer_count++] = {layout.dims[d], stride_bytes};
  }
  return runs;
}

// Calls visit(first, end) for each run, in address order.
template <class Visit>
void for_each_run(std::uintptr_t base, const Runs& runs, Visit&& visit) {
  std::array<std::size_t, DataLayout::kMaxDims> index{};
  for (std::size_t n = 0; n < runs.total; ++n) {
    std::uintptr_t first = base;
    for (std::size_t k = 0; k < runs.outer_count; ++k) first += index[k] * runs.outer[k].stride_bytes;
    visit(first, first + runs.run_bytes);
    for (std::size_t k = 0; k < runs.outer_count && ++index[k] == runs.outer[k].count; ++k) index[k] = 0;
  }
}

[[nodiscard]] bool recorded(const Runs& runs) noexcept {
  return runs.total > 0 && runs.total <= RegisteredMemory::kMaxRuns;
}

template <class RunMap>
void erase_runs(RunMap& recorded_runs, std::uintptr_t base, const Runs& runs, const HandleImpl& handle) noexcept {
  for_each_run(base, runs, [&](std::uintptr_t first, std::uintptr_t) {
    auto found = recorded_runs.find(first);
    if (found != recorded_runs.end() && found->second.owner == &handle) recorded_runs.erase(found);
  });
}

}  // namespace

void RegisteredMemory::add(HandleImpl& handle, const std::string& where) {
  const Runs runs = runs_of(handle.layout);
  if (!recorded(runs)) return;
  const auto base = reinterpret_cast<std::uintptr_t>(handle.host_ptr());
  std::lock_guard guard(mutex_);
  for_each_run(base, runs, [&](std::uintptr_t first, std::uintptr_t end) {
    auto after = runs_.upper_bound(first);
    auto met = runs_.end();
    if (after != runs_.begin() && std::prev(after)->second.end > first) {
      met = std::prev(after);
    } else if (after != runs_.end() && after->first < end) {
      met = after;
    }
    if (met == runs_.end()) return;
    const HandleImpl& holder = *met->second.owner;
    std::ostringstream why;
    why << where << ": " << handle.display_name() << " takes bytes that " << holder.display_name() << ", "
        << (holder.registered.load(std::memory_order_acquire) ? "registered already"
                                                              : "being unregistered (its tasks not all done)")
        << ", holds (from " << reinterpret_cast<const void*>(std::max(first, met->first))
        << " on): tasks on the two would not be ordered with each other. Register the memory once, or "
           "unregister the other first (unregister waits for its tasks)";
    throw InvalidArgument(why.str());
  });
  try {
    for_each_run(base, runs, [&](std::uintptr_t first, std::uintptr_t end) {
      runs_.emplace(first, Run{end, &handle});
    });
  } catch (...) {
    erase_runs(runs_, base, runs, handle);
    throw;
  }
  handle.memory_recorded = true;
}

void RegisteredMemory::remove(const HandleImpl& handle) noexcept {
  if (!handle.memory_recorded) return;
  const Runs runs = runs_of(handle.layout);
  std::lock_guard guard(mutex_);
  erase_runs(runs_, reinterpret_cast<std::uintptr_t>(handle.host_ptr()), runs, handle);
}

}  // namespace hetflow::detail
