// Under mpirun: ranks on one machine split the CPUs they may use, and a runtime made afterwards
// has one worker per CPU of its rank's share.
#include <gtest/gtest.h>
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "hetflow/mpi.hpp"

namespace {

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

TEST(ShareNode, RanksOnOneMachineTakeDisjointSlicesAndTheRuntimeFollows) {
  auto transport = hetflow::mpi::world();
  ASSERT_EQ(transport->local_ranks(), transport->size());  // mpirun on this one machine
  const std::vector<int> before = allowed_cpus();
  const unsigned share = hetflow::mpi::share_node(*transport);
  const std::vector<int> after = allowed_cpus();
  EXPECT_EQ(after.size(), share);
  EXPECT_GE(share, 1u);
  for (int cpu : after) EXPECT_NE(std::find(before.begin(), before.end(), cpu), before.end());
  const auto ranks = static_cast<std::size_t>(transport->size());
  if (before.size() >= ranks) {
    EXPECT_GE(share, before.size() / ranks);
    EXPECT_LE(share, (before.size() + ranks - 1) / ranks);
    // No CPU in two ranks' shares: gather every rank's first and last CPU (slices are runs).
    const int bounds[2] = {after.front(), after.back()};
    std::vector<int> all(2 * ranks);
    ASSERT_EQ(MPI_Allgather(bounds, 2, MPI_INT, all.data(), 2, MPI_INT, MPI_COMM_WORLD), MPI_SUCCESS);
    for (std::size_t a = 0; a < ranks; ++a) {
      for (std::size_t b = a + 1; b < ranks; ++b) {
        EXPECT_TRUE(all[2 * a + 1] < all[2 * b] || all[2 * b + 1] < all[2 * a]) << "ranks " << a << " and " << b;
      }
    }
  } else {
    EXPECT_EQ(share, 1u);
  }
  hetflow::Runtime rt;
  EXPECT_EQ(rt.worker_count(), share);
}

// Devices: each rank is told its share of the OpenCL devices (HETFLOW_OPENCL_SHARE, which the
// OpenCL driver reads); a CUDA_VISIBLE_DEVICES the launcher set, perhaps per rank, is kept.
TEST(ShareNode, RanksOnOneMachineAreGivenTheirShareOfTheDevices) {
  auto transport = hetflow::mpi::world();
  unsetenv("HETFLOW_OPENCL_SHARE");
  setenv("CUDA_VISIBLE_DEVICES", "3,5", 1);
  static_cast<void>(hetflow::mpi::share_node(*transport));
  const char* opencl = std::getenv("HETFLOW_OPENCL_SHARE");
  ASSERT_NE(opencl, nullptr);
  EXPECT_EQ(std::string(opencl),
            std::to_string(transport->local_rank()) + "/" + std::to_string(transport->local_ranks()));
  EXPECT_EQ(std::string(std::getenv("CUDA_VISIBLE_DEVICES")), "3,5");
}

}  // namespace
