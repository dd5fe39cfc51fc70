// dmdas ("deque model, data aware, sorted"): dmda whose per-worker queues are ordered by
// priority (higher first), then submission order. A task's expected start counts only the
// queued work it does not jump ahead of, completions within 10% of the best one go to the
// worker needing the least data transfer, and an architecture is weighed by how much it gains
// on the task compared with the tasks it gains most on (model_based.hpp).
#include "sched/model_based.hpp"

namespace hetflow::detail {
namespace {

// Within this fraction, completions are too close to call given how rough the estimates are
// (and what they leave out: bringing the results back, a device busy with its own copies),
// and keeping the data where it is saves bus bandwidth for everyone else.
constexpr double kTieTolerance = 0.1;

class SortedDataAwareScheduler final : public ModelBasedScheduler {
 public:
  SortedDataAwareScheduler()
      : ModelBasedScheduler(ModelPolicy{.count_transfers = true,
                                        .prefetch = true,
                                        .by_priority = true,
                                        .tie_tolerance = kTieTolerance,
                                        .prefer_local_data = true,
                                        .affinity_weight = 1.0}) {}
};

}  // namespace
}  // namespace hetflow::detail

HETFLOW_REGISTER_SCHEDULER(dmdas, "dmda with per-worker queues ordered by priority",
                           hetflow::detail::SortedDataAwareScheduler);
