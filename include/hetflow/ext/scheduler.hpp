#pragma once
// The scheduler contract. A scheduler decides where and when ready tasks run; it never decides
// what is correct (dependencies and coherence are the engine's). A new scheduler is one file:
//
//   class Mine final : public hetflow::ext::Scheduler { ... };
//   HETFLOW_REGISTER_SCHEDULER(mine, "what it does", Mine);
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/arch.hpp"
#include "hetflow/export.hpp"

namespace hetflow::ext {

/// The part of a task a scheduler sees. `sched_next` is an intrusive link the scheduler may use
/// while it holds the task (between push and pop).
struct SchedTask {
  SchedTask* sched_next = nullptr;
  int priority = 0;
  ArchMask where;              // architectures the task may run on
  std::uint64_t sequence = 0;  // submission order
};

struct WorkerInfo {
  unsigned id = 0;
  Arch arch = Arch::cpu;
  unsigned memory_node = 0;
};

/// What the engine tells a scheduler about tasks, data and time (ext/scheduler.hpp users: the
/// model-driven schedulers). All calls are thread-safe and cheap enough to make on every push.
class HETFLOW_API SchedulerContext {
 public:
  virtual ~SchedulerContext() = default;
  /// Seconds on the runtime's clock: real time, or virtual time under simulation.
  [[nodiscard]] virtual double now() const noexcept = 0;
  /// Whether the task's codelet has a performance model.
  [[nodiscard]] virtual bool has_model(const SchedTask& task) const = 0;
  /// The expected run time in seconds of the task on `arch`, from its codelet's model for the
  /// task's data sizes; nullopt while the model cannot tell yet (not calibrated) or has none.
  [[nodiscard]] virtual std::optional<double> expected_duration(const SchedTask& task, Arch arch) const = 0;
  /// Expected seconds to make the task's data valid on memory node `node` (0 when it all is
  /// there already), from the measured bandwidth and latency between nodes.
  [[nodiscard]] virtual double expected_transfer(const SchedTask& task, unsigned node) const = 0;
  /// Starts moving the task's data to `node` ahead of need (never blocks, never required).
  virtual void prefetch(const SchedTask& task, unsigned node) = 0;
  /// Wakes an idle worker of `arch`, if one sleeps: call it after making a task available to
  /// workers of `arch` other than through push (a pop that hands a task to another worker's
  /// queue). Push wakes workers itself.
  virtual void wake(Arch arch) = 0;
  /// Whether memory node `node` can ever hold all the task's data at once (its memory limit:
  /// the device's capacity, Config::memory_limits, HETFLOW_MEMORY_LIMITS). A worker computing in
  /// a node that cannot would fail the task; where another worker of its architectures can run
  /// it, the engine does not let that worker run it (a task such a worker pops goes to one whose
  /// node can hold it), so a scheduler that skips those workers only saves the detour. True when
  /// no limit is set.
  [[nodiscard]] virtual bool can_hold(const SchedTask& /*task*/, unsigned /*node*/) const { return true; }
};

/// `from_worker` in push: the task was pushed by a thread that is not one of the workers.
inline constexpr int kExternalThread = -1;

class HETFLOW_API Scheduler {
 public:
  virtual ~Scheduler() = default;
  /// Called once, before any push, with every worker of the runtime. `context` outlives the
  /// scheduler.
  virtual void init(std::span<const WorkerInfo> workers, SchedulerContext& context) = 0;
  /// Takes a ready task. Called from any thread, concurrently. A task waiting inside its body
  /// for this one may run it before any worker pops it (on the waiting task's worker, when the
  /// task may run on that architecture only); the worker that pops it then drops it and pops
  /// again, so the scheduler still sees one pop per push.
  virtual void push(SchedTask* task, int from_worker) = 0;
  /// Gives a task `worker` can run (its arch is in task->where), or nullptr. Called by that
  /// worker only, concurrently with other workers' pops and any pushes.
  virtual SchedTask* pop(unsigned worker) = 0;
  /// Like pop, by a worker that still runs a task and prepares its next one (starts moving its
  /// data): the task given starts when the current one ends. nullptr declines (a scheduler that
  /// already moves each task's data when it places it gains nothing by committing early).
  virtual SchedTask* pop_ahead(unsigned worker) { return pop(worker); }
};

using SchedulerFactory = std::function<std::unique_ptr<Scheduler>()>;

/// Makes a scheduler available by name to Config::scheduler and HETFLOW_SCHED.
HETFLOW_API void register_scheduler(std::string name, std::string description, SchedulerFactory factory);
[[nodiscard]] HETFLOW_API std::unique_ptr<Scheduler> make_scheduler(std::string_view name);

struct SchedulerEntry {
  std::string name;
  std::string description;
};
[[nodiscard]] HETFLOW_API std::vector<SchedulerEntry> schedulers();

struct SchedulerRegistration {
  SchedulerRegistration(std::string name, std::string description, SchedulerFactory factory) {
    register_scheduler(std::move(name), std::move(description), std::move(factory));
  }
};

}  // namespace hetflow::ext

#define HETFLOW_REGISTER_SCHEDULER(NAME, DESCRIPTION, TYPE)                                   \
  static const ::hetflow::ext::SchedulerRegistration hetflow_scheduler_##NAME {               \
#NAME, DESCRIPTION, [] { return std::unique_ptr<::hetflow::ext::Scheduler>(new TYPE()); } \
  }
