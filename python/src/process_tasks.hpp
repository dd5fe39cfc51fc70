#pragma once
// The host side of process tasks: the functions workers receive once, the arrays a task passes
// (found in shared memory, or copied through a scratch segment and back), the RUN messages and
// their replies, and the batching of short calls into one window of requests.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "hetflow/process.hpp"
#include "py_ref.hpp"
#include "shared_memory.hpp"
#include "task_result.hpp"

namespace hetflow::python {

using TaskFuture = Future<TaskResult>;

/// A function process tasks call, as its pickled code.
struct FunctionCode {
  std::string key;
  std::string bytes;
  // How long a call takes in a worker lately (seconds, moving average; negative: not measured
  // yet): decides how many calls go to a worker together.
  mutable std::atomic<double> recent_seconds{-1.0};

  void measured(double seconds) const noexcept {
    const double before = recent_seconds.load(std::memory_order_relaxed);
    recent_seconds.store(before < 0 ? seconds : 0.8 * before + 0.2 * seconds, std::memory_order_relaxed);
  }
};

/// The functions of process tasks, by id: a worker is sent a function's code once.
class FunctionRegistry {
 public:
  /// Keeps a function's code; returns the id tasks name it by (the same for the same key).
  std::size_t add(const std::string& key, std::string_view code);
  /// The function of `id`; InvalidArgument for an id `add` never returned.
  [[nodiscard]] std::shared_ptr<const FunctionCode> get(std::size_t id) const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<const FunctionCode>> functions_;
  std::unordered_map<std::string, std::size_t> ids_;
};

/// An array a process task uses: where it is, how the task uses it, and the array object,
/// kept alive until the task is done. A view copied into a scratch segment keeps its offsets
/// there; only its own elements travel, so that tasks on disjoint views of one plain array (every
/// other element, column blocks) never copy back over each other's results.
struct ArrayArgument {
  std::uintptr_t address = 0;  // the lowest byte of the view
  std::size_t nbytes = 0;      // the bytes between its lowest and highest element, inclusive
  bool writes = false;         // the task's own access writes it: copied back after the task
  std::size_t first = 0;       // element 0, in bytes from `address`
  std::vector<std::ptrdiff_t> shape;
  std::vector<std::ptrdiff_t> strides;  // in bytes, as numpy has them (negative ones too)
  std::size_t itemsize = 0;
  PyRef array;
};

/// What a process task sends: the function, the pickled call, its inputs and its arrays.
struct ProcessCall {
  std::shared_ptr<const FunctionCode> function;
  std::string call;
  std::vector<TaskFuture> inputs;
  std::vector<ArrayArgument> arrays;
  std::shared_ptr<PerfModel> model;
  std::size_t size = 0;
};

/// Runs process tasks on the calling worker's child process.
class ProcessTaskHost {
 public:
  /// `dumps` pickles the result of a task run in this interpreter for a process task that
  /// takes it as an input.
  explicit ProcessTaskHost(PyRef dumps) : dumps_(std::move(dumps)) {}

  /// Runs `lead` together with the companions the engine hands over (ordinary process tasks
  /// ready at the same time), their requests sent as one window.
  TaskResult run_batch(TaskContext& context, ProcessCall& lead);
  /// Runs `call` alone, passing the requests the child makes meanwhile to `on_request`.
  TaskResult run_alone(TaskContext& context, const ProcessCall& call, const ProcessRequestHandler& on_request);

 private:
  std::string pickled_input(const TaskFuture& input);
  std::vector<std::string> pickled_inputs(const ProcessCall& call);
  std::vector<std::string_view> run_message(ProcessChannel& channel, const ProcessCall& call, const std::string& table,
                                            const std::vector<std::string>& inputs, char (&id)[8]);

  PyRef dumps_;
  std::atomic<std::uint64_t> next_task_id_{1};
};

/// The body of an ordinary process task: sent together with the ready tasks like it.
struct BatchedBody {
  ProcessTaskHost* host;
  ProcessCall call;
  TaskResult operator()(TaskContext& context) { return host->run_batch(context, call); }
};

}  // namespace hetflow::python
