#include "core/wait_cycles.hpp"

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dependencies.hpp"
#include "core/task.hpp"
#include "core/task_state.hpp"
#include "hetflow/error.hpp"

namespace hetflow::detail {
namespace {

// Each task blocked in a wait, by the task it waits for (an outer task on the thread, by the
// one above it). A task is here only while its thread is blocked, before the task ends, so a
// chain through it is a wait that has not ended; one that ends later removes itself first.
struct Blocked {
  std::mutex mutex;
  std::unordered_multimap<TaskCore*, TaskCore*> waiters;
};

// Calls visit(awaited, waiter) for each task `running` runs, innermost first, and the task it
// waits for.
template <class Visit>
void for_each_wait(const RunningFrame* running, TaskCore* awaited, Visit visit) {
  for (const RunningFrame* frame = running; frame != nullptr; frame = frame->outer) {
    visit(awaited, frame->task);
    awaited = frame->task;
  }
}

Blocked& blocked() {
  static Blocked* instance = new Blocked;  // never destroyed: waits may block while the process exits
  return *instance;
}

std::string describe_cycle(const std::vector<TaskCore*>& chain) {
  std::string text = "hetflow: task '" + std::string(chain.front()->display_name()) + "'";
  for (std::size_t i = 1; i < chain.size(); ++i) {
    text += (i == 1 ? " waits for task '" : ", which waits for task '") + std::string(chain[i]->display_name()) + "'";
  }
  return text +
         " (each inside its body, on another thread, or below it on the same one, or because it takes its result "
         "or accesses data after it): the waits would never end; give what a task needs as a dependency "
         "(TaskOptions::after, data, a future passed as an argument) rather than waiting for it inside the task";
}

// The tasks, from `awaited` to one that `running` runs, each of which cannot end before the next
// does: a task cannot end before the task it is blocked waiting for (`waiters`), nor start before
// the tasks whose data it accesses after them. Empty if there is none among the first
// kDeadlockSearchBudget tasks looked at. Searched forward, from the running tasks to the tasks
// that wait for them, as the dependencies are kept; finished tasks hold nothing back.
std::vector<TaskCore*> chain_back_to(const std::unordered_multimap<TaskCore*, TaskCore*>& waiters,
                                     const RunningFrame* running, TaskCore* awaited) {
  std::unordered_map<TaskCore*, TaskCore*> reached_from;  // each task reached, and the one before it
  std::vector<TaskCore*> to_visit;
  for (const RunningFrame* frame = running; frame != nullptr; frame = frame->outer) {
    reached_from.emplace(frame->task, nullptr);
    to_visit.push_back(frame->task);
  }
  std::vector<TaskCore*> next;
  while (!to_visit.empty() && !reached_from.contains(awaited)) {
    TaskCore* task = to_visit.back();
    to_visit.pop_back();
    next.clear();
    append_successors(task, next);
    const auto [first, last] = waiters.equal_range(task);
    for (auto it = first; it != last; ++it) next.push_back(it->second);
    for (TaskCore* later : next) {
      if (is_final(later->status()) || !reached_from.emplace(later, task).second) continue;
      if (reached_from.size() > kDeadlockSearchBudget) return {};
      to_visit.push_back(later);
    }
  }
  std::vector<TaskCore*> chain;
  if (!reached_from.contains(awaited)) return chain;
  for (TaskCore* task = awaited; task != nullptr; task = reached_from.at(task)) chain.push_back(task);
  return chain;
}

}  // namespace

BlockedWait::BlockedWait(const RunningFrame* running, TaskCore* awaited) : running_(running), awaited_(awaited) {
  Blocked& all = blocked();
  std::lock_guard lock(all.mutex);
  std::vector<TaskCore*> chain = chain_back_to(all.waiters, running, awaited);
  if (!chain.empty()) {
    chain.insert(chain.begin(), running->task);
    throw Error(describe_cycle(chain));
  }
  for_each_wait(running, awaited, [&](TaskCore* above, TaskCore* waiter) { all.waiters.emplace(above, waiter); });
}

BlockedWait::~BlockedWait() {
  Blocked& all = blocked();
  std::lock_guard lock(all.mutex);
  for_each_wait(running_, awaited_, [&](TaskCore* above, TaskCore* waiter) {
    const auto [first, last] = all.waiters.equal_range(above);
    const auto found = std::find_if(first, last, [waiter](const auto& entry) { return entry.second == waiter; });
    if (found != last) all.waiters.erase(found);
  });
}

}  // namespace hetflow::detail
