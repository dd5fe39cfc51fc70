// Ranks on one machine split its CPUs: each process restricts itself to its slice before its
// runtime starts, so that the runtime's defaults (one worker per CPU it may use, pinned within
// them) give each rank its own cores.
#include <sched.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/mpi.hpp"

namespace hetflow::mpi {

unsigned share_node(const Transport& transport) {
  cpu_set_t usable;
  CPU_ZERO(&usable);
  if (sched_getaffinity(0, sizeof usable, &usable) != 0) {
    throw Error(std::string("hetflow::mpi::share_node: sched_getaffinity failed: ") + std::strerror(errno));
  }
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &usable)) cpus.push_back(cpu);
  }
  const auto ranks = static_cast<std::size_t>(transport.local_ranks());
  const auto rank = static_cast<std::size_t>(transport.local_rank());
  if (ranks <= 1 || cpus.empty()) return static_cast<unsigned>(cpus.size());

  cpu_set_t share;
  CPU_ZERO(&share);
  unsigned count = 0;
  if (cpus.size() >= ranks) {
    for (std::size_t i = rank * cpus.size() / ranks; i < (rank + 1) * cpus.size() / ranks; ++i) {
      CPU_SET(cpus[i], &share);
      ++count;
    }
  } else {  // more ranks than CPUs: they take turns on them, one each
    CPU_SET(cpus[rank % cpus.size()], &share);
    count = 1;
  }
  if (sched_setaffinity(0, sizeof share, &share) != 0) {
    throw Error(std::string("hetflow::mpi::share_node: sched_setaffinity failed: ") + std::strerror(errno));
  }
  return count;
}

}  // namespace hetflow::mpi
