// dm ("deque model"): each ready task goes to the worker where it is expected to finish first,
// from its codelet's performance model and the work already queued there (model_based.hpp).
// Data transfers are not counted.
#include "sched/model_based.hpp"

namespace hetflow::detail {
namespace {

class DequeModelScheduler final : public ModelBasedScheduler {
 public:
  DequeModelScheduler() : ModelBasedScheduler(ModelPolicy{}) {}
};

}  // namespace
}  // namespace hetflow::detail

HETFLOW_REGISTER_SCHEDULER(dm, "performance models: each task to the worker expected to finish it first",
                           hetflow::detail::DequeModelScheduler);
