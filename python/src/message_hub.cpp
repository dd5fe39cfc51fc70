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

std::optional<std::string> MessageHub::receive(std::uint64_t launch, std::uint32_t to, std::uint32_t from,
                                               std::string& failure) {
  std::unique_lock guard(mutex_);
  Launch& state = launch_of(launch);
  auto& box = state.boxes[{to, from}];
  changed_.wait(guard, [&] { return !box.empty() || state.failure.has_value(); });
  if (!box.empty()) {
    std::string payload = std::move(box.front());
    box.pop_front();
    return payload;
  }
  failure = *state.failure;
  return std::nullopt;
}

bool MessageHub::barrier(std::uint64_t launch, std::string& failure) {
  std::unique_lock guard(mutex_);
  Launch& state = launch_of(launch);
  const std::uint64_t generation = state.generation;
  if (++state.arrived == state.size) {
    state.arrived = 0;
    ++state.generation;
    changed_.notify_all();
    return true;
  }
  changed_.wait(guard, [&] { return state.generation != generation || state.failure.has_value(); });
  if (state.generation != generation) return true;
  failure = *state.failure;
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

void MessageHub::kernel_done(std::uint64_t launch) {
  std::lock_guard guard(mutex_);
  auto it = launches_.find(launch);
  if (it != launches_.end() && it->second.running > 0 && --it->second.running == 0) launches_.erase(it);
}

}  // namespace hetflow::python
