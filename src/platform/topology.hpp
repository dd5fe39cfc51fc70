#pragma once
// How many CPUs this process may use, and where to pin workers.
#include <vector>

namespace hetflow::detail {

/// The CPUs this process may run on (its affinity mask, so containers and taskset are respected).
unsigned available_cpu_count() noexcept;
/// CPU ids to pin `count` workers to: one per core first (with hwloc), then the other hardware threads.
std::vector<int> pinning_order(unsigned count);
/// Binds the calling thread to one CPU; failures are ignored (pinning is a hint).
void pin_current_thread(int cpu) noexcept;

}  // namespace hetflow::detail
