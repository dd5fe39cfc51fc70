#include "core/wait_cycles.hpp"

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/task.hpp"
#include "hetflow/error.hpp"

namespace hetflow::detail {
namespace {

// Each task blocked in a wait, and the task it waits for. A task is here only while its thread
// is blocked, before the task ends, so a chain through it is a wait that has not ended; one
// that ends later removes itself first.
struct Blocked {
  std::mutex mutex;
  std::unordered_map<const TaskCore*, const TaskCore*> awaits;
};

Blocked& blocked() {
  static Blocked* instance = new Blocked;  // never destroyed: waits may block while the process exits
  return *instance;
}

std::string describe_cycle(const std::vector<const TaskCore*>& chain) {
  std::string text = "hetflow: task '" + std::string(chain.front()->display_name()) + "'";
  for (std::size_t i = 1; i < chain.size(); ++i) {
    text += (i == 1 ? " waits for task '" : ", which waits for task '") + std::string(chain[i]->display_name()) + "'";
  }
  return text +
         " (each inside its body, on another thread, or below it on the same one): the waits would never end; "
         "give what a task needs as a dependency (TaskOptions::after, data, a future passed as an argument) rather "
         "than waiting for it inside the task";
}

}  // namespace

BlockedWait::BlockedWait(const RunningFrame* running, const TaskCore* awaited) : running_(running) {
  const auto runs_here = [running](const TaskCore* task) {
    for (const RunningFrame* frame = running; frame != nullptr; frame = frame->outer) {
      if (frame->task == task) return true;
    }
    return false;
  };
  Blocked& all = blocked();
  std::lock_guard lock(all.mutex);
  std::vector<const TaskCore*> chain{running->task};
  for (const TaskCore* next = awaited; next != nullptr && chain.size() <= all.awaits.size() + 1;) {
    chain.push_back(next);
    if (runs_here(next)) throw Error(describe_cycle(chain));
    const auto found = all.awaits.find(next);
    next = found != all.awaits.end() ? found->second : nullptr;
  }
  const TaskCore* above = awaited;
  for (const RunningFrame* frame = running; frame != nullptr; frame = frame->outer) {
    all.awaits[frame->task] = above;
    above = frame->task;
  }
}

BlockedWait::~BlockedWait() {
  Blocked& all = blocked();
  std::lock_guard lock(all.mutex);
  for (const RunningFrame* frame = running_; frame != nullptr; frame = frame->outer) all.awaits.erase(frame->task);
}

}  // namespace hetflow::detail
