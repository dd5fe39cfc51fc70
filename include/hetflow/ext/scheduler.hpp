#pragma once
// The scheduler contract. A scheduler decides where and when ready tasks run; it never decides
// what is correct (dependencies and coherence are the engine's). A new scheduler is one file:
//
//   class Mine final : public hetflow::ext::Scheduler { ... };
//   HETFLOW_REGISTER_SCHEDULER(mine, "what it does", Mine);
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/arch.hpp"

namespace hetflow::ext {

/// The part of a task a scheduler sees. `sched_next` is an intrusive link the scheduler may use
/// while it holds the task (between push and pop).
struct SchedTask {
  SchedTask* sched_next = nullptr;
  int priority = 0;
  ArchMask where;           // architectures the task may run on
  std::uint64_t sequence = 0;  // submission order
};

struct WorkerInfo {
  unsigned id = 0;
  Arch arch = Arch::cpu;
  unsigned memory_node = 0;
};

/// `from_worker` in push: the task was pushed by a thread that is not one of the workers.
inline constexpr int kExternalThread = -1;

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  /// Called once, before any push, with every worker of the runtime.
  virtual void init(std::span<const WorkerInfo> workers) = 0;
  /// Takes a ready task. Called from any thread, concurrently.
  virtual void push(SchedTask* task, int from_worker) = 0;
  /// Gives a task `worker` can run (its arch is in task->where), or nullptr. Called by that
  /// worker only, concurrently with other workers' pops and any pushes.
  virtual SchedTask* pop(unsigned worker) = 0;
};

using SchedulerFactory = std::function<std::unique_ptr<Scheduler>()>;

/// Makes a scheduler available by name to Config::scheduler and HETFLOW_SCHED.
void register_scheduler(std::string name, std::string description, SchedulerFactory factory);
[[nodiscard]] std::unique_ptr<Scheduler> make_scheduler(std::string_view name);

struct SchedulerEntry {
  std::string name;
  std::string description;
};
[[nodiscard]] std::vector<SchedulerEntry> schedulers();

struct SchedulerRegistration {
  SchedulerRegistration(std::string name, std::string description, SchedulerFactory factory) {
    register_scheduler(std::move(name), std::move(description), std::move(factory));
  }
};

}  // namespace hetflow::ext

#define HETFLOW_REGISTER_SCHEDULER(NAME, DESCRIPTION, TYPE)                     \
  static const ::hetflow::ext::SchedulerRegistration hetflow_scheduler_##NAME{ \
      #NAME, DESCRIPTION, [] { return std::unique_ptr<::hetflow::ext::Scheduler>(new TYPE()); }}
