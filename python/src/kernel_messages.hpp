#pragma once
// Offload kernels on process workers: each kernel of a launch runs alone on its core's worker,
// whose thread answers the kernel's send / receive / barrier requests from the launch's
// MessageHub while the kernel runs.
#include <cstdint>
#include <memory>
#include <optional>

#include "hetflow/hetflow.hpp"
#include "hetflow/process.hpp"
#include "message_hub.hpp"
#include "process_tasks.hpp"
#include "task_result.hpp"

namespace hetflow::python {

/// Tells the launch's hub that a kernel is over, however it ends: run, failed, or never run
/// (cancelled, or failed by a dependency), so that its peers stop waiting for messages from it.
/// Held by the kernel's body, which the engine destroys once the kernel is over.
struct KernelEnd {
  KernelEnd(MessageHub& launch_hub, std::uint64_t launch_id, std::uint32_t kernel_core)
      : hub(launch_hub), launch(launch_id), core(kernel_core) {}
  KernelEnd(const KernelEnd&) = delete;
  KernelEnd& operator=(const KernelEnd&) = delete;
  ~KernelEnd() { hub.kernel_done(launch, core); }
  MessageHub& hub;
  std::uint64_t launch;
  std::uint32_t core;
};

/// Answers a request of the kernel of `core` in `launch`: nothing for a send, the value or the
/// failure for a receive or a barrier.
std::optional<ProcessMessage> answer_kernel_request(MessageHub& hub, const ProcessMessage& request,
                                                    std::uint64_t launch, std::uint32_t core);

/// The body of a kernel of an offload launch: it runs alone, answering its requests; if it
/// fails, so does its launch, so that its peers do not wait for it.
struct KernelBody {
  ProcessTaskHost* host;
  MessageHub* hub;
  ProcessCall call;
  std::uint64_t launch;
  std::shared_ptr<KernelEnd> end;
  TaskResult operator()(TaskContext& context);
};

}  // namespace hetflow::python
