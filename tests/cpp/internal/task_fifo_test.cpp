// The locked task queue of the simpler schedulers and of the engine's per-worker queues: oldest
// first, or by priority for the tasks passed between workers.
#include "sched/task_fifo.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace {

using hetflow::Arch;
using hetflow::ArchMask;
using hetflow::detail::TaskFifo;
using hetflow::ext::SchedTask;

std::vector<std::uint64_t> drain(TaskFifo& fifo, Arch arch) {
  std::vector<std::uint64_t> order;
  while (SchedTask* task = fifo.pop(arch)) order.push_back(task->sequence);
  return order;
}

TEST(TaskFifo, ByPriorityGoesAheadOfLowerPriorityAndBehindItsEqualsInSubmissionOrder) {
  // sequence: submission order; pushed out of order, as tasks are passed on between workers.
  std::array<SchedTask, 6> tasks;
  const std::array<int, 6> priorities{0, 0, 5, 0, 5, -1};
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].sequence = i;
    tasks[i].priority = priorities[i];
    tasks[i].where = ArchMask::all();
  }
  TaskFifo fifo;
  for (std::size_t i : {3, 0, 5, 4, 1, 2}) fifo.push_by_priority(&tasks[i]);
  EXPECT_EQ(fifo.size(), tasks.size());
  EXPECT_EQ(drain(fifo, Arch::cpu), (std::vector<std::uint64_t>{2, 4, 0, 1, 3, 5}));
  EXPECT_TRUE(fifo.empty());

  // The tail stays right: a plain push after an insertion at the end lands last.
  fifo.push_by_priority(&tasks[0]);
  fifo.push_by_priority(&tasks[5]);
  fifo.push(&tasks[2]);
  EXPECT_EQ(drain(fifo, Arch::cpu), (std::vector<std::uint64_t>{0, 5, 2}));
}

TEST(TaskFifo, PopTakesTheFirstTaskTheArchitectureMayRun) {
  std::array<SchedTask, 3> tasks;
  for (std::size_t i = 0; i < tasks.size(); ++i) tasks[i].sequence = i;
  tasks[0].where = Arch::opencl;
  tasks[1].where = Arch::cpu;
  tasks[2].where = ArchMask::all();
  TaskFifo fifo;
  for (SchedTask& task : tasks) fifo.push(&task);
  EXPECT_EQ(drain(fifo, Arch::cpu), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(drain(fifo, Arch::opencl), (std::vector<std::uint64_t>{0}));
}

}  // namespace
