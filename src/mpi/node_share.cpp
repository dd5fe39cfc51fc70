// Ranks on one machine split its CPUs and GPUs: each process restricts itself to its share
// before its runtime starts, so that the runtime's defaults (one worker per CPU it may use,
// pinned within them; every GPU CUDA shows) give each rank its own cores and devices.
#include <dirent.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/mpi.hpp"

namespace hetflow::mpi {

namespace {

// The GPUs this process may use, as CUDA names them: CUDA_VISIBLE_DEVICES's list when it is
// set, else one index per GPU the NVIDIA driver shows; none without one.
std::vector<std::string> visible_gpus() {
  std::vector<std::string> gpus;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
    std::string list = visible;
    for (std::size_t start = 0; start <= list.size();) {
      const std::size_t comma = std::min(list.find(',', start), list.size());
      if (comma > start) gpus.push_back(list.substr(start, comma - start));
      start = comma + 1;
    }
    return gpus;
  }
  if (DIR* driver = opendir("/proc/driver/nvidia/gpus")) {
    int count = 0;
    while (const dirent* entry = readdir(driver)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(driver);
    for (int gpu = 0; gpu < count; ++gpu) gpus.push_back(std::to_string(gpu));
  }
  return gpus;
}

// Local rank `rank` of `ranks` keeps GPUs rank, rank + ranks, ... (GPU rank % n when there are
// fewer GPUs than ranks), through CUDA_VISIBLE_DEVICES, which CUDA reads when it starts.
void share_gpus(std::size_t rank, std::size_t ranks) {
  const std::vector<std::string> gpus = visible_gpus();
  if (gpus.empty()) return;
  std::string share;
  for (std::size_t gpu = rank % gpus.size(); gpu < gpus.size(); gpu += ranks) {
    if (!share.empty()) share += ',';
    share += gpus[gpu];
    if (gpus.size() < ranks) break;
  }
  setenv("CUDA_VISIBLE_DEVICES", share.c_str(), 1);
}

}  // namespace

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
  if (ranks <= 1) return static_cast<unsigned>(cpus.size());
  share_gpus(rank, ranks);
  if (cpus.empty()) return 0;

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
