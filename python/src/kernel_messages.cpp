#include "kernel_messages.hpp"

#include <exception>
#include <string>
#include <utility>

#include "protocol.hpp"

namespace hetflow::python {

std::optional<ProcessMessage> answer_kernel_request(MessageHub& hub, const ProcessMessage& request,
                                                    std::uint64_t launch, std::uint32_t core) {
  // Parts: the launch the kernel believes it is in, then the request's own.
  if (request.parts.empty() || request.parts[0] != std::to_string(launch)) {
    return ProcessMessage{message::kFailed, {"a request for another launch"}};
  }
  auto number = [&](std::size_t i) { return static_cast<std::uint32_t>(std::stoul(request.parts.at(i))); };
  std::string failure;
  switch (request.kind) {
    case message::kSend: hub.send(launch, core, number(1), request.parts.at(2)); return std::nullopt;
    case message::kReceive:
      if (auto payload = hub.receive(launch, core, number(1), failure)) {
        return ProcessMessage{message::kValue, {std::move(*payload)}};
      }
      return ProcessMessage{message::kFailed, {failure}};
    case message::kBarrier:
      if (hub.barrier(launch, core, failure)) return ProcessMessage{message::kValue, {}};
      return ProcessMessage{message::kFailed, {failure}};
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
