#pragma once
// What a CUDA worker keeps between tasks, reached by implementations through the task's
// context (TaskContext::driver_state()).
#include <cstdint>
#include <string>
#include <string_view>

#include "drivers/cuda/cuda_handle.hpp"
#include "hetflow/codelet.hpp"

namespace hetflow::cuda::detail {

struct WorkerContext {
  // Tells this driver's state from another driver's behind TaskContext::driver_state().
  static constexpr std::uint64_t kTag = 0x6865'7466'6375'6461;  // "hetfcuda"
  std::uint64_t tag = kTag;
  int device = 0;
  Stream compute;
  BlasHandle blas;
  SolverHandle solver;
  double setup_seconds = 0;  // creating handles inside the task now running
  // Why start_worker could not set the worker up: its tasks then fail with this, instead of the
  // whole process ending on an exception in a worker thread.
  std::string failure;
};

/// The state of the CUDA worker running `context`'s task. Throws hetflow::Error, naming the
/// task and `what` (the function asking), outside a CUDA worker of this driver, or when the
/// worker could not be set up.
[[nodiscard]] WorkerContext& worker_of(const TaskContext& context, std::string_view what);

}  // namespace hetflow::cuda::detail
