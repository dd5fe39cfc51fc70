// dmda ("deque model, data aware"): dm with the expected time to move the task's data to each
// worker's memory node added to its completion time; the data is prefetched to the chosen
// device node (model_based.hpp).
#include "sched/model_based.hpp"

namespace hetflow::detail {
namespace {

class DataAwareScheduler final : public ModelBasedScheduler {
 public:
  DataAwareScheduler() : ModelBasedScheduler(ModelPolicy{.count_transfers = true, .prefetch = true}) {}
};

}  // namespace
}  // namespace hetflow::detail

HETFLOW_REGISTER_SCHEDULER(dmda,
                           "performance models and data transfers: each task to the worker expected to finish it first",
                           hetflow::detail::DataAwareScheduler);
