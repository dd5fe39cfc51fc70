#include "message_hub.hpp"

namespace hetflow::python {

MessageHub::Launch& MessageHub::launch_of(std::uint64_t launch) { return launches_[launch]; }

void MessageHub::open(std::uint64_t launch, std::uint32_t size) {
  std::lock_guard guard(mutex_);
  Launch& state = launch_of(launch);
  state.size = size;
  state.running = size;
}

void MessageHub::send(std::uint64_t launch, std::uint32_t from, std::uint32_t to, std::string payload) {
  {
    std::lock_guard guard(mutex_);
    launch_of(launch).boxes[{to, from}].push_back(std::move(payload));
  }
  changed_.notify_all();
}

bool MessageHub::wait_may_end(Launch& state, std::uint32_t core, Launch::Wait wait) {
  state.waiting[core] = wait;
  if (state.failure || state.waiting.size() < state.running) return true;  // a kernel still runs (or starts)
  for (const auto& [waiter, what] : state.waiting) {
    if (what.from ? !state.boxes[{waiter, *what.from}].empty() || state.ended.count(*what.from) != 0
                  : what.generation != state.generation) {
      return true;  // woken already
    }
  }
  std::string waits;
  for (const auto& [waiter, what] : state.waiting) {
    waits += (waits.empty() ? "" : ", ") + std::string("core ") + std::to_string(waiter) +
             (what.from ? " in recv(" + std::to_string(*what.from) + ")" : std::string(" at the barrier"));
  }
  state.failure =
      "every kernel still running waits for a message or a barrier that none of them sends or reaches (" + waits + ")";
  changed_.notify_all();
  return false;
}

std::optional<std::string> MessageHub::receive(std::uint64_t launch, std::uint32_t to, std::uint32_t from,
                                               std::string& failure, bool poll) {
  std::unique_lock guard(mutex_);
  Launch& state = launch_of(launch);
  auto& box = state.boxes[{to, from}];
  if (box.empty() && !state.failure && state.ended.count(from) == 0 && poll) return std::nullopt;
  if (box.empty() && from == to && !state.failure) {
    failure = "recv(" + std::to_string(from) + ") on core " + std::to_string(to) +
              " waits for a message from its own core that was not sent first: it would wait for ever";
    return std::nullopt;
  }
  if (box.empty() && wait_may_end(state, to, {.from = from})) {
    changed_.wait(guard, [&] { return !box.empty() || state.failure.has_value() || state.ended.count(from) != 0; });
  }
  state.waiting.erase(to);
  if (!box.empty()) {
    std::string payload = std::move(box.front());
    box.pop_front();
    return payload;
  }
  if (state.failure) {
    failure = *state.failure;
  } else {
    failure = "core " + std::to_string(from) + "'s kernel ended without sending the message core " +
              std::to_string(to) + " waits for (recv(" + std::to_string(from) + ") on core " + std::to_string(to) +
              " has no matching send)";
  }
  return std::nullopt;
}

namespace {

std::string ended_before_barrier(const std::set<std::uint32_t>& ended) {
  return "core " + std::to_string(*ended.begin()) + "'s kernel ended without reaching the barrier";
}

}  // namespace

std::optional<bool> MessageHub::barrier(std::uint64_t launch, std::uint32_t core, std::string& failure, bool poll,
                                        std::uint64_t* generation) {
  std::unique_lock guard(mutex_);
  Launch& state = launch_of(launch);
  // A kernel that has ended never reaches this barrier: it cannot complete.
  if (state.failure || !state.ended.empty()) {
    failure = state.failure ? *state.failure : ended_before_barrier(state.ended);
    return false;
  }
  const std::uint64_t reached = state.generation;
  if (++state.arrived == state.size) {
    state.arrived = 0;
    ++state.generation;
    changed_.notify_all();
    return true;
  }
  if (generation != nullptr) *generation = reached;
  return awaited_barrier(state, guard, core, reached, failure, poll);
}

std::optional<bool> MessageHub::await_barrier(std::uint64_t launch, std::uint32_t core, std::uint64_t generation,
                                              std::string& failure, bool poll) {
  std::unique_lock guard(mutex_);
  return awaited_barrier(launch_of(launch), guard, core, generation, failure, poll);
}

std::optional<bool> MessageHub::awaited_barrier(Launch& state, std::unique_lock<std::mutex>& guard, std::uint32_t core,
                                                std::uint64_t generation, std::string& failure, bool poll) {
  const auto decided = [&] {
    return state.generation != generation || state.failure.has_value() || !state.ended.empty();
  };
  if (!decided()) {
    if (poll) return std::nullopt;
    if (wait_may_end(state, core, {.from = std::nullopt, .generation = generation})) changed_.wait(guard, decided);
    state.waiting.erase(core);
  }
  if (state.generation != generation) return true;
  failure = state.failure ? *state.failure : ended_before_barrier(state.ended);
  return false;
}

void MessageHub::fail(std::uint64_t launch, const std::string& reason) {
  {
    std::lock_guard guard(mutex_);
    Launch& state = launch_of(launch);
    if (!state.failure) state.failure = reason;
  }
  changed_.notify_all();
}

void MessageHub::kernel_done(std::uint64_t launch, std::uint32_t core) {
  {
    std::lock_guard guard(mutex_);
    auto it = launches_.find(launch);
    if (it == launches_.end()) return;
    it->second.ended.insert(core);
    if (it->second.running > 0 && --it->second.running == 0) launches_.erase(it);
  }
  changed_.notify_all();
}

void MessageHub::abandon(std::uint64_t launch, std::uint32_t unsent) {
  {
    std::lock_guard guard(mutex_);
    auto it = launches_.find(launch);
    if (it == launches_.end()) return;
    Launch& state = it->second;
    if (!state.failure) state.failure = "the launch failed before all of its kernels were sent";
    state.running = unsent < state.running ? state.running - unsent : 0;
    if (state.running == 0) launches_.erase(it);
  }
  changed_.notify_all();
}

std::size_t MessageHub::open_launches() {
  std::lock_guard guard(mutex_);
  return launches_.size();
}

}  // namespace hetflow::python
