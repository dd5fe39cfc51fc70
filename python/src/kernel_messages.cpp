#include "kernel_messages.hpp"

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "protocol.hpp"

namespace hetflow::python {

std::optional<ProcessMessage> answer_kernel_request(MessageHub& hub, const ProcessMessage& request,
                                                    std::uint64_t launch, std::uint32_t core) {
  // Parts: the launch the kernel believes it is in, then the request's own.
  if (request.parts.empty() || request.parts[0] != std::to_string(launch)) {
    return ProcessMessage{message::kFailed, {"a request for another launch"}};
  }
  auto number = [&](std::size_t i) { return static_cast<std::uint32_t>(std::stoul(request.parts.at(i))); };
  // A receive's or a barrier's last parts: "poll" (answered at once, kNotYet if it must wait), or
  // "wait" or "poll" then the generation of a barrier the kernel reached polling.
  const auto word = [&](std::size_t i) { return request.parts.size() > i ? request.parts[i] : std::string(); };
  std::string failure;
  const auto answer = [&failure](const std::optional<bool>& outcome, std::vector<std::string> not_yet) {
    if (!outcome) return ProcessMessage{message::kNotYet, std::move(not_yet)};
    if (*outcome) return ProcessMessage{message::kValue, {}};
    return ProcessMessage{message::kFailed, {failure}};
  };
  switch (request.kind) {
    case message::kSend: hub.send(launch, core, number(1), request.parts.at(2)); return std::nullopt;
    case message::kReceive:
      if (auto payload = hub.receive(launch, core, number(1), failure, word(2) == "poll")) {
        return ProcessMessage{message::kValue, {std::move(*payload)}};
      }
      if (failure.empty()) return ProcessMessage{message::kNotYet, {}};
      return ProcessMessage{message::kFailed, {failure}};
    case message::kBarrier: {
      if (request.parts.size() > 2) {
        const std::uint64_t generation = std::stoull(request.parts[2]);
        return answer(hub.await_barrier(launch, core, generation, failure, word(1) == "poll"), {request.parts[2]});
      }
      std::uint64_t generation = 0;
      const auto outcome = hub.barrier(launch, core, failure, word(1) == "poll", &generation);
      return answer(outcome, {std::to_string(generation)});
    }
    default: return ProcessMessage{message::kFailed, {"unknown request " + std::to_string(request.kind)}};
  }
}

TaskResult KernelBody::operator()(TaskContext& context) {
  auto* channel = static_cast<ProcessChannel*>(context.driver_state());
  const std::shared_ptr<KernelEnd> done = std::move(end);  // reported as this call returns
  const std::uint32_t core = channel->index();
  try {
    return host->run_alone(context, call, [this, core](const ProcessMessage& request) {
      return answer_kernel_request(*hub, request, launch, core);
    });
  } catch (const std::exception& e) {
    hub->fail(launch, "core " + std::to_string(core) + " failed: " + e.what());
    throw;
  }
}

}  // namespace hetflow::python
