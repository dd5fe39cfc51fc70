#include "platform/topology.hpp"

#include <pthread.h>
#include <sched.h>

#include <thread>

#ifdef HETFLOW_HAVE_HWLOC
#include <hwloc.h>
#endif

namespace hetflow::detail {
namespace {

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  return cpus;
}

}  // namespace

unsigned available_cpu_count() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return static_cast<unsigned>(count);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? hw : 1;
}

std::vector<int> pinning_order(unsigned count) {
  std::vector<int> allowed = allowed_cpus();
  std::vector<int> order;
#ifdef HETFLOW_HAVE_HWLOC
  hwloc_topology_t topology;
  if (hwloc_topology_init(&topology) == 0) {
    if (hwloc_topology_load(topology) == 0) {
      // The first hardware thread of every core, then the second of every core, ...
      int cores = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_CORE);
      for (unsigned depth = 0; order.size() < allowed.size(); ++depth) {
        bool any = false;
        for (int c = 0; c < cores; ++c) {
          hwloc_obj_t core = hwloc_get_obj_by_type(topology, HWLOC_OBJ_CORE, static_cast<unsigned>(c));
          hwloc_obj_t pu = hwloc_get_obj_inside_cpuset_by_type(topology, core->cpuset, HWLOC_OBJ_PU, depth);
          if (pu == nullptr) continue;
          any = true;
          int id = static_cast<int>(pu->os_index);
          for (int cpu : allowed) {
            if (cpu == id) order.push_back(id);
          }
        }
        if (!any) break;
      }
    }
    hwloc_topology_destroy(topology);
  }
#endif
  if (order.empty()) order = allowed;
  if (order.size() > count) order.resize(count);
  return order;
}

void pin_current_thread(int cpu) noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

}  // namespace hetflow::detail
