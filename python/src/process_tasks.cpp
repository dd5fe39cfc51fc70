#include "process_tasks.hpp"

#include <nanobind/nanobind.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <new>
#include <optional>

#include "finalizing.hpp"
#include "hetflow/detail/body.hpp"
#include "protocol.hpp"
#include "python_errors.hpp"

namespace nb = nanobind;

namespace hetflow::python {
namespace {

constexpr std::size_t kMaxBatch = 32;
// A batch holds the calls expected to take this long together: short calls share a round
// trip, long ones (or ones never measured) go alone, so the workers share them.
constexpr double kBatchSeconds = 0.002;
// Requests in flight stay below a pipe's capacity, so the host never blocks writing while the
// child blocks writing a reply the host is not reading yet.
constexpr std::size_t kMaxBatchBytes = 32 * 1024;

// Once a task's replies are in (or it failed), the scratch segments its arrays were copied
// into are trimmed: a large array passed once is not kept copied for the worker's lifetime.
struct ScratchTrim {
  ScratchTrim() = default;
  ScratchTrim(const ScratchTrim&) = delete;
  ScratchTrim& operator=(const ScratchTrim&) = delete;
  ~ScratchTrim() { trim_scratch(); }
};

// Copies the elements of `array` (and no byte between them) from `from` to `to`, both laid out
// like the view's span: element 0 at `first`. Runs of adjacent elements go in one memcpy; a
// contiguous view is a single one.
void copy_elements(std::byte* to, const std::byte* from, const ArrayArgument& array) {
  struct Dim {
    std::ptrdiff_t extent;
    std::ptrdiff_t stride;
  };
  std::vector<Dim> dims;
  std::ptrdiff_t offset = static_cast<std::ptrdiff_t>(array.first);
  for (std::size_t k = 0; k < array.shape.size(); ++k) {
    const std::ptrdiff_t extent = array.shape[k];
    std::ptrdiff_t stride = array.strides[k];
    if (extent <= 0) return;                   // no elements
    if (extent == 1 || stride == 0) continue;  // the same addresses either way
    if (stride < 0) {                          // the same set of addresses, walked upwards
      offset += (extent - 1) * stride;
      stride = -stride;
    }
    dims.push_back({extent, stride});
  }
  std::sort(dims.begin(), dims.end(), [](const Dim& a, const Dim& b) { return a.stride > b.stride; });
  std::vector<Dim> merged;
  for (const Dim& dim : dims) {
    if (!merged.empty() && merged.back().stride == dim.extent * dim.stride) {
      merged.back() = {merged.back().extent * dim.extent, dim.stride};
    } else {
      merged.push_back(dim);
    }
  }
  const auto itemsize = static_cast<std::ptrdiff_t>(array.itemsize);
  std::ptrdiff_t run = itemsize;
  if (!merged.empty() && merged.back().stride == itemsize) {
    run = merged.back().extent * itemsize;
    merged.pop_back();
  }
  std::ptrdiff_t reach = offset + run;
  for (const Dim& dim : merged) reach += (dim.extent - 1) * dim.stride;
  if (offset < 0 || reach > static_cast<std::ptrdiff_t>(array.nbytes)) {
    throw Error("hetflow: an array's layout lies outside its span");
  }
  std::vector<std::ptrdiff_t> index(merged.size(), 0);
  for (;;) {
    std::memcpy(to + offset, from + offset, static_cast<std::size_t>(run));
    std::size_t k = merged.size();
    for (; k > 0; --k) {
      Dim& dim = merged[k - 1];
      offset += dim.stride;
      if (++index[k - 1] < dim.extent) break;
      offset -= dim.extent * dim.stride;
      index[k - 1] = 0;
    }
    if (k == 0) return;
  }
}

// Where the worker process finds each array: in the array's own shared segment (no copy), or
// in a scratch segment of this worker that the array is copied into (and, if written, back).
// `copies[i]` is the scratch segment array i was copied into (base == nullptr: not copied).
std::string locate_arrays(const std::vector<ArrayArgument>& arrays, std::vector<Segment>& copies,
                          std::size_t first_slot) {
  std::string table;
  copies.assign(arrays.size(), Segment{});
  for (std::size_t i = 0; i < arrays.size(); ++i) {
    const ArrayArgument& array = arrays[i];
    if (auto segment = SegmentRegistry::instance().find(array.address, array.nbytes)) {
      table += segment->locate(array.address - reinterpret_cast<std::uintptr_t>(segment->base), array.nbytes);
    } else {
      const Segment& scratch = scratch_segment(first_slot + i, array.nbytes);
      copy_elements(scratch.base, reinterpret_cast<const std::byte*>(array.address), array);
      copies[i] = scratch;
      table += scratch.locate(0, array.nbytes);
    }
    table += '\n';
  }
  return table;
}

// The copies the task kept a reference to (their indices, from the child's reply) are not
// reused for later tasks' arrays, which would change them under it.
void retire_kept_copies(std::string_view kept, const std::vector<Segment>& copies) {
  while (!kept.empty()) {
    std::size_t index = 0;
    const auto [end, error] = std::from_chars(kept.data(), kept.data() + kept.size(), index);
    if (error != std::errc{}) return;
    if (index < copies.size() && copies[index].base != nullptr) retire_scratch(copies[index]);
    kept.remove_prefix(std::min(kept.size(), static_cast<std::size_t>(end - kept.data()) + 1));  // and the space
  }
}

// The task's result from the child's reply (arrays written are copied back), or its error.
// `worker_seconds`, if given, gets the time the child reported it spent on the task (0 if none).
TaskResult take_reply(ProcessChannel& channel, const ProcessCall& call, const std::vector<Segment>& copies,
                      ProcessMessage reply, double* worker_seconds = nullptr) {
  if (reply.kind == message::kResult && reply.parts.size() >= 2) {
    if (worker_seconds != nullptr) {
      *worker_seconds = 0;
      if (reply.parts.size() >= 3 && reply.parts[2].size() == sizeof(double)) {
        std::memcpy(worker_seconds, reply.parts[2].data(), sizeof(double));
      }
    }
    for (std::size_t i = 0; i < call.arrays.size(); ++i) {
      if (copies[i].base != nullptr && call.arrays[i].writes) {
        copy_elements(reinterpret_cast<std::byte*>(call.arrays[i].address), copies[i].base, call.arrays[i]);
      }
    }
    if (reply.parts.size() >= 4) retire_kept_copies(reply.parts[3], copies);
    TaskResult result;
    result.pickled = std::move(reply.parts[1]);
    result.is_pickled = true;
    return result;
  }
  if (reply.kind == message::kError && reply.parts.size() >= 5) {
    if (reply.parts.size() >= 6) retire_kept_copies(reply.parts[5], copies);
    std::string what = reply.parts[2] + ": " + reply.parts[3];
    throw RemoteError(std::move(what), std::move(reply.parts));
  }
  throw Error("hetflow: process worker " + std::to_string(channel.index()) + " sent an unexpected reply");
}

}  // namespace

std::size_t FunctionRegistry::add(const std::string& key, std::string_view code) {
  std::lock_guard guard(mutex_);
  auto [it, added] = ids_.emplace(key, functions_.size());
  if (added) {
    auto entry = std::make_shared<FunctionCode>();
    entry->key = key;
    entry->bytes.assign(code);
    functions_.push_back(std::move(entry));
  }
  return it->second;
}

std::shared_ptr<const FunctionCode> FunctionRegistry::get(std::size_t id) const {
  std::lock_guard guard(mutex_);
  if (id >= functions_.size()) throw InvalidArgument("hetflow: unknown function id");
  return functions_[id];
}

// The lead task and the companions the engine hands over are sent as a window of requests,
// and their replies read in order. A child that dies fails the task it was running; the ones
// sent after it are sent again to its replacement.
TaskResult ProcessTaskHost::run_batch(TaskContext& context, ProcessCall& lead) {
  using Stored = detail::Bound<BatchedBody>;
  const ScratchTrim trim;
  auto* channel = static_cast<ProcessChannel*>(context.driver_state());
  std::size_t companions = 0;
  double expected = lead.function->recent_seconds.load(std::memory_order_relaxed);
  while (expected >= 0 && expected < kBatchSeconds && companions + 1 < kMaxBatch && context.take_companions(1) == 1) {
    const double next = static_cast<Stored*>(context.companion_storage(companions))
                            ->fn.call.function->recent_seconds.load(std::memory_order_relaxed);
    ++companions;
    expected = next < 0 ? kBatchSeconds : expected + next;  // an unmeasured one closes the batch
  }

  struct Item {
    ProcessCall* call;
    std::ptrdiff_t companion;  // -1: the lead
    std::vector<Segment> copies;
    std::size_t bytes = 0;
    bool sent = false;
    std::chrono::steady_clock::time_point sent_at{};
  };
  std::vector<Item> items;
  items.push_back({&lead, -1, {}});
  for (std::size_t i = 0; i < companions; ++i) {
    items.push_back({&static_cast<Stored*>(context.companion_storage(i))->fn.call, static_cast<std::ptrdiff_t>(i), {}});
  }

  std::optional<TaskResult> lead_result;
  std::exception_ptr lead_error;
  auto settle = [&](Item& item, std::optional<TaskResult> result, std::exception_ptr error) {
    if (item.companion < 0) {
      lead_result = std::move(result);
      lead_error = std::move(error);
      if (companions > 0) context.own_part_done();
      return;
    }
    void* storage = context.companion_storage(static_cast<std::size_t>(item.companion));
    static_cast<Stored*>(storage)->~Stored();
    if (result) ::new (storage) TaskResult(std::move(*result));
    context.finish_companion(static_cast<std::size_t>(item.companion), std::move(error));
  };

  std::size_t next_reply = 0;
  std::size_t slot = 0;  // scratch segments: each array in flight needs its own
  auto previous_reply = std::chrono::steady_clock::now();
  while (next_reply < items.size()) {
    // Send what fits in the window.
    std::size_t in_flight = 0;
    for (std::size_t k = next_reply; k < items.size() && items[k].sent; ++k) in_flight += items[k].bytes;
    for (std::size_t k = next_reply; k < items.size(); ++k) {
      Item& item = items[k];
      if (item.sent) continue;
      if (k > next_reply && in_flight >= kMaxBatchBytes) break;
      try {
        const std::string table = locate_arrays(item.call->arrays, item.copies, slot);
        slot += item.call->arrays.size();
        std::vector<std::string> inputs = pickled_inputs(*item.call);
        char id[8];
        std::vector<std::string_view> parts = run_message(*channel, *item.call, table, inputs, id);
        for (auto part : parts) item.bytes += part.size() + 8;
        channel->send(message::kRun, parts);  // a dead child shows when its reply is read
        item.sent = true;
        item.sent_at = std::chrono::steady_clock::now();
        in_flight += item.bytes;
      } catch (...) {
        if (k != next_reply) break;  // settle it when its turn comes
        settle(item, std::nullopt, std::current_exception());
        ++next_reply;
      }
    }
    if (next_reply >= items.size() || !items[next_reply].sent) continue;
    Item& item = items[next_reply];
    try {
      ProcessMessage reply = channel->receive();
      double worker_seconds = 0;
      TaskResult result = take_reply(*channel, *item.call, item.copies, std::move(reply), &worker_seconds);
      const auto now = std::chrono::steady_clock::now();
      // The child's own time: replies read late would make the host's guess too long for one
      // task and too short for the next.
      const std::chrono::duration<double> guessed = now - std::max(item.sent_at, previous_reply);
      const double took = worker_seconds > 0 ? worker_seconds : guessed.count();
      item.call->function->measured(took);
      if (item.call->model) item.call->model->record(Arch::process, item.call->size, took);
      previous_reply = now;
      settle(item, std::move(result), nullptr);
    } catch (const WorkerCrashedError&) {
      settle(item, std::nullopt, std::current_exception());
      for (std::size_t k = next_reply + 1; k < items.size(); ++k) items[k].sent = false;  // lost with the child
      slot = 0;
    } catch (...) {
      settle(item, std::nullopt, std::current_exception());
    }
    ++next_reply;
  }
  if (lead_error) std::rethrow_exception(lead_error);
  return std::move(*lead_result);
}

TaskResult ProcessTaskHost::run_alone(TaskContext& context, const ProcessCall& call,
                                      const ProcessRequestHandler& on_request) {
  auto* channel = static_cast<ProcessChannel*>(context.driver_state());
  const ScratchTrim trim;
  std::vector<Segment> copies;
  const std::string table = locate_arrays(call.arrays, copies, 0);
  std::vector<std::string> inputs = pickled_inputs(call);
  char id[8];
  ProcessMessage reply = channel->call(message::kRun, run_message(*channel, call, table, inputs, id), on_request);
  return take_reply(*channel, call, copies, std::move(reply));
}

// The value of a finished input, pickled for a worker process.
std::string ProcessTaskHost::pickled_input(const TaskFuture& input) {
  const TaskResult& result = input.get();
  if (result.is_pickled) return result.pickled;
  GilHeld gil;
  PyObject* value = result.object ? result.object.get() : Py_None;
  PyObject* data = PyObject_CallOneArg(dumps_.get(), value);
  if (data == nullptr) {
    PyObject* exception = fetch_exception();
    std::string what = "cannot send the result of '" + std::string(input.name()) +
                       "' to a process worker: " + describe_python_exception(exception);
    throw PythonError(std::move(what), PyRef::steal(exception));
  }
  std::string out(PyBytes_AsString(data), static_cast<std::size_t>(PyBytes_Size(data)));
  Py_DECREF(data);
  return out;
}

std::vector<std::string> ProcessTaskHost::pickled_inputs(const ProcessCall& call) {
  std::vector<std::string> out;
  out.reserve(call.inputs.size());
  for (const auto& input : call.inputs) out.push_back(pickled_input(input));
  return out;
}

// The parts of a RUN message; they point into `call`, `table`, `inputs` and `id`.
std::vector<std::string_view> ProcessTaskHost::run_message(ProcessChannel& channel, const ProcessCall& call,
                                                           const std::string& table,
                                                           const std::vector<std::string>& inputs, char (&id)[8]) {
  channel.prepare();  // an idle child that died is replaced before `knows` is asked
  const std::uint64_t task_id = next_task_id_++;
  for (int i = 0; i < 8; ++i) id[i] = static_cast<char>((task_id >> (8 * i)) & 0xff);
  const FunctionCode& function = *call.function;
  const bool first_time = !channel.knows(function.key);
  if (first_time) channel.remember(function.key);  // forgotten if the child is replaced
  std::vector<std::string_view> parts{std::string_view(id, 8), function.key,
                                      first_time ? std::string_view(function.bytes) : std::string_view(), call.call,
                                      table};
  for (const auto& bytes : inputs) parts.emplace_back(bytes);
  return parts;
}

}  // namespace hetflow::python
