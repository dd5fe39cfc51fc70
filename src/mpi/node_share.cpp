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
#include "util/device_share.hpp"

namespace hetflow::mpi {

namespace {

// How many GPUs the NVIDIA driver shows on this machine (none without one).
std::size_t machine_gpus() {
  std::size_t count = 0;
  if (DIR* driver = opendir("/proc/driver/nvidia/gpus")) {
    while (const dirent* entry = readdir(driver)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(driver);
  }
  return count;
}

// Local rank `rank` of `ranks` keeps its share of the machine's GPUs (detail::dealt_share)
// through CUDA_VISIBLE_DEVICES, which CUDA reads when it starts, and of the OpenCL devices
// through HETFLOW_OPENCL_SHARE, which hetflow's OpenCL driver reads. Either already set (by the
// launcher, which may have given each rank its own GPUs, or by the user) is left as it is.
void share_devices(std::size_t rank, std::size_t ranks) {
  if (std::getenv("CUDA_VISIBLE_DEVICES") == nullptr) {
    std::string share;
    for (std::size_t gpu : detail::dealt_share(machine_gpus(), rank, ranks)) {
      if (!share.empty()) share += ',';
      share += std::to_string(gpu);
    }
    if (!share.empty()) setenv("CUDA_VISIBLE_DEVICES", share.c_str(), 1);
  }
  const std::string opencl_share = std::to_string(rank) + "/" + std::to_string(ranks);
  setenv("HETFLOW_OPENCL_SHARE", opencl_share.c_str(), /*overwrite=*/0);
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
  share_devices(rank, ranks);
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
