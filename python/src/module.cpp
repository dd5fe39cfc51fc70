// The _hetflow extension: the engine, seen from Python. The Python package (python/hetflow)
// builds the public API on top of it.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "completions.hpp"
#include "core/runtime_impl.hpp"
#include "core/worker.hpp"
#include "gil_session.hpp"
#include "hetflow/detail/body.hpp"
#include "hetflow/hetflow.hpp"
#include "hetflow/process.hpp"
#include "message_hub.hpp"
#include "perfmodel_bindings.hpp"
#include "shared_memory.hpp"
#include "task_result.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hetflow::python {
namespace {

constexpr std::uint32_t kRun = 1;
constexpr std::uint32_t kShutdown = 2;
constexpr std::uint32_t kReplyResult = 1;
constexpr std::uint32_t kReplyError = 2;
// Requests of offload kernels to their host, and the answers.
constexpr std::uint32_t kRequestSend = 4;
constexpr std::uint32_t kRequestReceive = 5;
constexpr std::uint32_t kAnswerValue = 6;
constexpr std::uint32_t kAnswerFailed = 7;
constexpr std::uint32_t kRequestBarrier = 8;
constexpr auto kSignalCheckPeriod = std::chrono::milliseconds(50);

using TaskFuture = Future<TaskResult>;

// Blocks without the GIL until `ready()` or the timeout, checking for Ctrl-C every 50 ms.
template <class WaitUntil>
bool interruptible_wait(std::optional<double> timeout, WaitUntil wait_until) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = timeout ? start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                              std::chrono::duration<double>(*timeout))
                                : std::chrono::steady_clock::time_point::max();
  for (;;) {
    auto slice_end = std::min(deadline, std::chrono::steady_clock::now() + kSignalCheckPeriod);
    bool done;
    {
      nb::gil_scoped_release release;
      done = wait_until(slice_end);
    }
    if (done) return true;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

// The exception being raised (with its traceback attached), taken off the error indicator.
PyObject* fetch_exception() {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* traceback = nullptr;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  if (traceback != nullptr && value != nullptr) PyException_SetTraceback(value, traceback);
  Py_XDECREF(type);
  Py_XDECREF(traceback);
  return value;
}

std::string describe_python_exception(PyObject* exception) {
  std::string text = Py_TYPE(exception)->tp_name;
  if (PyObject* message = PyObject_Str(exception)) {
    const char* utf8 = PyUnicode_AsUTF8(message);
    if (utf8 != nullptr && *utf8 != '\0') text += std::string(": ") + utf8;
    Py_DECREF(message);
  }
  PyErr_Clear();
  return text;
}

nb::bytes as_bytes(const std::string& text) { return nb::bytes(text.data(), text.size()); }

unsigned default_cpus() {
  Config probe;
  return *probe.resolved().ncpus;
}

/// A submitted task, from Python.
class TaskRef {
 public:
  explicit TaskRef(TaskFuture future) : future_(std::move(future)) {}

  [[nodiscard]] bool done() const { return future_.ready(); }
  [[nodiscard]] std::string status() const {
    switch (future_.status()) {
      case TaskStatus::pending: return "pending";
      case TaskStatus::ready: return "ready";
      case TaskStatus::running: return "running";
      case TaskStatus::done: return "done";
      case TaskStatus::failed: return "failed";
      case TaskStatus::cancelled: return "cancelled";
    }
    return "unknown";
  }
  bool wait(std::optional<double> timeout) const {
    if (future_.ready()) return true;
    return interruptible_wait(timeout, [this](auto until) { return future_.wait_until(until); });
  }
  bool cancel() { return future_.cancel(); }
  [[nodiscard]] std::string name() const { return future_.name(); }

  /// The outcome of a finished task, as a tuple the Python layer turns into a value or an error:
  /// ("object", obj) | ("pickled", bytes) | ("python_error", exc) | ("remote_error", [bytes...]) |
  /// ("dependency_error", root_task_name, root_outcome) | ("cancelled", message) |
  /// ("crashed", message) | ("error", type_name, message)
  [[nodiscard]] nb::tuple outcome() const {
    if (!future_.ready()) throw nb::value_error("hetflow: the task has not finished");
    if (future_.status() == TaskStatus::done) {
      const TaskResult& result = future_.get();
      if (result.is_pickled) return nb::make_tuple("pickled", as_bytes(result.pickled));
      return nb::make_tuple("object", nb::borrow(result.object ? result.object.get() : Py_None));
    }
    return describe(future_.error());
  }

  [[nodiscard]] const TaskFuture& future() const noexcept { return future_; }

  static nb::tuple describe(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const PythonError& e) {
      return nb::make_tuple("python_error", nb::borrow(e.exception()));
    } catch (const RemoteError& e) {
      nb::list parts;
      for (const auto& part : e.parts()) parts.append(as_bytes(part));
      return nb::make_tuple("remote_error", parts);
    } catch (const DependencyError& e) {
      return nb::make_tuple("dependency_error", e.root_task(), describe(e.root_cause()));
    } catch (const CancelledError& e) {
      return nb::make_tuple("cancelled", std::string(e.what()));
    } catch (const WorkerCrashedError& e) {
      return nb::make_tuple("crashed", std::string(e.what()));
    } catch (const std::exception& e) {
      return nb::make_tuple("error", std::string(typeid(e).name()), std::string(e.what()));
    } catch (...) {
      return nb::make_tuple("error", std::string("unknown"), std::string("an unknown C++ exception"));
    }
  }

 private:
  TaskFuture future_;
};

/// A numpy array's buffer, registered with the engine for dependency tracking.
class ArrayHandle {
 public:
  explicit ArrayHandle(DataHandle handle) : handle_(std::move(handle)) {}
  [[nodiscard]] const DataHandle& handle() const noexcept { return handle_; }
  [[nodiscard]] bool registered() const noexcept { return handle_.registered(); }

 private:
  DataHandle handle_;
};

/// Host access to an array, from PyRuntime::acquire.
class PyAcquisition {
 public:
  explicit PyAcquisition(Acquisition acquisition) : acquisition_(std::move(acquisition)) {}
  void release() {
    nb::gil_scoped_release release;
    acquisition_.release();
  }
  [[nodiscard]] bool active() const noexcept { return acquisition_.active(); }

 private:
  Acquisition acquisition_;
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

// handle, engine mode, copied back, lowest address, bytes spanned, element 0's offset, shape,
// strides, item size, the array.
using ArraySpec = std::tuple<const ArrayHandle*, std::string, bool, std::uintptr_t, std::size_t, std::size_t,
                             std::vector<std::ptrdiff_t>, std::vector<std::ptrdiff_t>, std::size_t, nb::handle>;
using AccessSpec = std::pair<const ArrayHandle*, std::string>;

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

/// One engine with CPU workers (thread executor) and process workers (process executor).
class PyRuntime {
 public:
  PyRuntime(std::optional<unsigned> ncpus, std::optional<std::string> scheduler, unsigned nprocs,
            std::vector<std::string> worker_command, std::vector<std::string> worker_environment,
            std::optional<unsigned> spin_us, nb::callable dumps, nb::callable freeze, std::optional<std::string> trace,
            std::optional<bool> stats)
      : dumps_(PyRef::borrow(dumps.ptr())), freeze_(PyRef::borrow(freeze.ptr())) {
    Config config;
    // The CPU workers come from the Python thread driver (GIL sessions), not the built-in one.
    config.ncpus = 0;
    cpu_workers_ = ncpus.value_or(0) > 0 ? *ncpus : default_cpus();
    config.drivers.push_back(std::make_shared<PythonThreadDriver>(cpu_workers_));
    config.scheduler = std::move(scheduler);
    config.spin_us = spin_us;
    config.trace_path = std::move(trace);
    config.stats = stats;
    if (nprocs > 0) {
      config.drivers.push_back(make_process_driver({.command = std::move(worker_command),
                                                    .environment = std::move(worker_environment),
                                                    .count = nprocs,
                                                    .shutdown_kind = kShutdown}));
    }
    nb::gil_scoped_release release;  // process workers start (and import Python) meanwhile
    runtime_ = std::make_unique<Runtime>(std::move(config));
  }

  ~PyRuntime() { shutdown(); }

  TaskRef submit_thread(nb::callable fn, const std::vector<const TaskRef*>& deps,
                        const std::vector<AccessSpec>& accesses, const std::string& name, int priority,
                        const std::optional<std::string>& perfmodel, std::size_t size) {
    TaskOptions options = options_for(deps, name, priority);
    options.where = Arch::cpu;
    std::vector<DataAccess> data = data_accesses(accesses);
    options.data_list = data;
    auto body = [this, fn = PyRef::borrow(fn.ptr()), model = model_for(perfmodel), size]() -> TaskResult {
      GilSession::Guard gil;
      const auto start = std::chrono::steady_clock::now();
      PyObject* value = PyObject_CallNoArgs(fn.get());
      if (model && value != nullptr) record(*model, Arch::cpu, size, start);
      if (value == nullptr) {
        PyObject* exception = fetch_exception();
        if (PyObject* frozen = PyObject_CallOneArg(freeze_.get(), exception)) {
          Py_DECREF(frozen);
        } else {
          PyErr_Clear();
        }
        std::string what = describe_python_exception(exception);
        throw PythonError(std::move(what), PyRef::steal(exception));
      }
      TaskResult result;
      result.object = PyRef::steal(value);
      return result;
    };
    TaskRef task(runtime().submit(options, std::move(body)));
    submitted_.fetch_add(1, std::memory_order_relaxed);
    return task;
  }

  /// Keeps a function's code; returns the id tasks name it by (the same for the same key).
  std::size_t register_function(const std::string& key, nb::bytes code) {
    std::lock_guard guard(functions_mutex_);
    auto [it, added] = function_ids_.emplace(key, functions_.size());
    if (added) {
      auto entry = std::make_shared<FunctionCode>();
      entry->key = key;
      entry->bytes.assign(code.c_str(), code.size());
      functions_.push_back(std::move(entry));
    }
    return it->second;
  }

  TaskRef submit_process(std::size_t function_id, nb::bytes call, const std::vector<const TaskRef*>& deps,
                         const std::vector<ArraySpec>& arrays, const std::string& name, int priority, int worker,
                         std::uint64_t launch, const std::optional<std::string>& perfmodel, std::size_t size,
                         const std::vector<AccessSpec>& order) {
    std::shared_ptr<const FunctionCode> function;
    {
      std::lock_guard guard(functions_mutex_);
      if (function_id >= functions_.size()) throw nb::value_error("hetflow: unknown function id");
      function = functions_[function_id];
    }
    TaskOptions options = options_for(deps, name, priority);
    options.where = Arch::process;
    options.worker = worker;
    std::vector<AccessSpec> access_specs = order;  // overlapping views: for ordering only
    std::vector<ArrayArgument> array_arguments;
    for (const auto& [handle, mode, copy_back, address, nbytes, first, shape, strides, itemsize, array] : arrays) {
      if (shape.size() != strides.size() || first >= std::max<std::size_t>(nbytes, 1)) {
        throw nb::value_error("hetflow: inconsistent array description");
      }
      access_specs.emplace_back(handle, mode);
      array_arguments.push_back(
          {address, nbytes, copy_back, first, shape, strides, itemsize, PyRef::borrow(array.ptr())});
    }
    std::vector<DataAccess> data = data_accesses(access_specs);
    options.data_list = data;
    ProcessCall process_call{
        function, std::string(call.c_str(), call.size()), {}, std::move(array_arguments), model_for(perfmodel), size};
    process_call.inputs.reserve(deps.size());
    for (const TaskRef* dep : deps) process_call.inputs.push_back(dep->future());
    submitted_.fetch_add(1, std::memory_order_relaxed);
    if (launch == 0) return TaskRef(runtime().submit(options, BatchedBody{this, std::move(process_call)}));
    // Process workers follow the CPU workers; a kernel is pinned to its core's worker.
    const auto core = static_cast<std::uint32_t>(worker - static_cast<int>(cpu_workers_));
    return TaskRef(runtime().submit(
        options, KernelBody{this, std::move(process_call), launch, std::make_shared<KernelEnd>(hub_, launch, core)}));
  }

  ArrayHandle register_array(std::uintptr_t address, std::size_t nbytes, const std::string& name) {
    if (address == 0) throw nb::value_error("hetflow: cannot register an array without data");
    return ArrayHandle(runtime().register_data(reinterpret_cast<void*>(address), DataLayout::vector(nbytes, 1), name));
  }

  void unregister_async(const ArrayHandle& handle) {
    if (runtime_ && !runtime_->is_shut_down()) runtime_->unregister_async(handle.handle());
  }

  PyAcquisition acquire(const ArrayHandle& handle, const std::string& mode) {
    AccessMode access = parse_access_mode(mode);
    Runtime& rt = runtime();
    nb::gil_scoped_release release;
    return PyAcquisition(rt.acquire(handle.handle(), access));
  }

  void open_launch(std::uint64_t launch, std::uint32_t size) { hub_.open(launch, size); }

  std::size_t pinned_load(unsigned worker) { return runtime().pinned_load(worker); }

  void watch(const TaskRef& task, nb::handle target) { completions_.watch(task.future(), target.ptr()); }

  nb::list drain_completions(int timeout_ms) {
    std::vector<PyRef> finished;
    {
      nb::gil_scoped_release release;
      finished = completions_.drain(timeout_ms);
    }
    nb::list out;
    for (auto& target : finished) out.append(nb::steal(target.new_reference()));
    return out;
  }

  bool wait_all(std::optional<double> timeout) {
    Runtime& rt = runtime();
    return interruptible_wait(timeout, [&rt](auto until) { return rt.wait_all_until(until); });
  }

  void abort() {
    if (runtime_ && !runtime_->is_shut_down()) runtime_->abort();
  }

  /// Tasks not started yet are cancelled instead of run; running ones go on.
  void cancel_pending() {
    if (runtime_ && !runtime_->is_shut_down()) runtime_->impl().cancel_pending();
  }

  /// Lets go of the engine without stopping or destroying it: in a forked child, where its
  /// threads do not exist (stopping it would wait for ever) and its locks may be held for good.
  void forget() {
    static_cast<void>(runtime_.release());
    nb::set_leak_warnings(false);
  }

  /// Submitted tasks not finished yet.
  [[nodiscard]] std::int64_t outstanding() const {
    return runtime_ && !runtime_->is_shut_down() ? runtime_->impl().outstanding() : 0;
  }

  /// Tasks submitted from Python that have finished (or been cancelled): grows while work
  /// progresses, even when each finished task submits the next.
  [[nodiscard]] std::uint64_t finished() const {
    const auto submitted = static_cast<std::int64_t>(submitted_.load(std::memory_order_relaxed));
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, submitted - outstanding()));
  }

  /// Whether the calling thread is one of this runtime's workers (a thread task runs there).
  [[nodiscard]] bool inside_task() const {
    const detail::WorkerState* worker = detail::current_worker();
    return worker != nullptr && runtime_ && worker->runtime == &runtime_->impl();
  }

  /// Whether the task the calling thread runs declared access to one of `handles`: acquiring
  /// them there would wait for that very task.
  [[nodiscard]] bool running_task_uses(const std::vector<const ArrayHandle*>& handles) const {
    if (!runtime_) return false;
    for (const ArrayHandle* handle : handles) {
      if (detail::running_task_uses(&runtime_->impl(), handle->handle().impl())) return true;
    }
    return false;
  }

  /// Shuts down, waiting for the work at most `timeout` seconds; workers still in a task then
  /// are left running (a thread task cannot be stopped), and so is the engine they use, which
  /// is let go of without being destroyed. Returns how many workers were left.
  unsigned shutdown_within(double timeout) {
    if (!runtime_) return 0;
    unsigned left = 0;
    {
      nb::gil_scoped_release release;
      left = runtime_->impl().shutdown_until(std::chrono::steady_clock::now() +
                                             std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                 std::chrono::duration<double>(std::max(timeout, 0.0))));
    }
    if (left > 0) {
      static_cast<void>(runtime_.release());  // still used by the workers left running
      nb::set_leak_warnings(false);           // the Python objects they hold are kept on purpose
    } else {
      shutdown();
    }
    completions_.close();
    return left;
  }

  void shutdown() {
    if (!runtime_) return;
    {
      nb::gil_scoped_release release;
      runtime_->shutdown();
    }
    completions_.close();
  }

  [[nodiscard]] bool is_shut_down() const { return !runtime_ || runtime_->is_shut_down(); }
  [[nodiscard]] nb::list workers() {
    nb::list out;
    for (const auto& info : runtime().workers()) {
      out.append(nb::make_tuple(info.id, std::string(arch_name(info.arch)), info.memory_node));
    }
    return out;
  }
  [[nodiscard]] std::string scheduler_name() { return runtime().scheduler_name(); }

 private:
  Runtime& runtime() {
    if (!runtime_) throw std::runtime_error("hetflow: the runtime has been shut down");
    return *runtime_;
  }

  static std::shared_ptr<PerfModel> model_for(const std::optional<std::string>& symbol) {
    if (!symbol) return nullptr;
    return PerfModelRegistry::instance().get(*symbol);  // checks the symbol: InvalidArgument -> ValueError
  }

  static void record(PerfModel& model, Arch arch, std::size_t size, std::chrono::steady_clock::time_point start) {
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    model.record(arch, size, took.count());
  }

  static std::vector<DataAccess> data_accesses(const std::vector<AccessSpec>& specs) {
    std::vector<DataAccess> data;
    data.reserve(specs.size());
    for (const auto& [handle, mode] : specs) data.push_back({handle->handle(), parse_access_mode(mode)});
    return data;
  }

  static TaskOptions options_for(const std::vector<const TaskRef*>& deps, const std::string& name, int priority) {
    TaskOptions options;
    options.after.reserve(deps.size());
    for (const TaskRef* dep : deps) options.after.push_back(dep->future());
    options.name = name;
    options.priority = priority;
    return options;
  }

  // The value of a finished input, pickled for a worker process.
  std::string pickled_input(const TaskFuture& input) {
    const TaskResult& result = input.get();
    if (result.is_pickled) return result.pickled;
    nb::gil_scoped_acquire gil;
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

  // Copies the elements of `array` (and no byte between them) from `from` to `to`, both laid out
  // like the view's span: element 0 at `first`. Runs of adjacent elements go in one memcpy; a
  // contiguous view is a single one.
  static void copy_elements(std::byte* to, const std::byte* from, const ArrayArgument& array) {
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
  static std::string locate_arrays(const std::vector<ArrayArgument>& arrays, std::vector<Segment>& copies,
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

  // What a process task sends: the function, the pickled call, its inputs and its arrays.
  struct ProcessCall {
    std::shared_ptr<const FunctionCode> function;
    std::string call;
    std::vector<TaskFuture> inputs;
    std::vector<ArrayArgument> arrays;
    std::shared_ptr<PerfModel> model;
    std::size_t size = 0;
  };

  // An ordinary process task: sent together with the ready tasks like it (run_batch).
  struct BatchedBody {
    PyRuntime* runtime;
    ProcessCall call;
    TaskResult operator()(TaskContext& context) { return runtime->run_batch(context, call); }
  };

  // Once a task's replies are in (or it failed), the scratch segments its arrays were copied
  // into are trimmed: a large array passed once is not kept copied for the worker's lifetime.
  struct ScratchTrim {
    ScratchTrim() = default;
    ScratchTrim(const ScratchTrim&) = delete;
    ScratchTrim& operator=(const ScratchTrim&) = delete;
    ~ScratchTrim() { trim_scratch(); }
  };

  // A kernel of an offload launch: alone, answering its messages; its peers must not wait for
  // it if it fails.
  // Tells the launch's hub that a kernel is over, however it ends: run, failed, or never run
  // (cancelled, or failed by a dependency), so that its peers stop waiting for messages from it.
  // Held by the kernel's body, which the engine destroys once the kernel is over.
  struct KernelEnd {
    KernelEnd(MessageHub& hub, std::uint64_t launch, std::uint32_t core) : hub(hub), launch(launch), core(core) {}
    KernelEnd(const KernelEnd&) = delete;
    KernelEnd& operator=(const KernelEnd&) = delete;
    ~KernelEnd() { hub.kernel_done(launch, core); }
    MessageHub& hub;
    std::uint64_t launch;
    std::uint32_t core;
  };

  struct KernelBody {
    PyRuntime* runtime;
    ProcessCall call;
    std::uint64_t launch;
    std::shared_ptr<KernelEnd> end;
    TaskResult operator()(TaskContext& context) {
      auto* channel = static_cast<ProcessChannel*>(context.driver_state());
      const std::shared_ptr<KernelEnd> done = std::move(end);  // reported as this call returns
      const ScratchTrim trim;
      try {
        ProcessRequestHandler on_request = [this, core = channel->index()](const ProcessMessage& request) {
          return runtime->answer_kernel(request, launch, core);
        };
        std::vector<Segment> copies;
        const std::string table = locate_arrays(call.arrays, copies, 0);
        std::vector<std::string> inputs = runtime->pickled_inputs(call);
        char id[8];
        ProcessMessage reply = channel->call(kRun, runtime->run_message(*channel, call, table, inputs, id), on_request);
        return runtime->take_reply(*channel, call, copies, std::move(reply));
      } catch (const std::exception& e) {
        runtime->hub_.fail(launch, "core " + std::to_string(channel->index()) + " failed: " + e.what());
        throw;
      }
    }
  };

  static constexpr std::size_t kMaxBatch = 32;
  // A batch holds the calls expected to take this long together: short calls share a round
  // trip, long ones (or ones never measured) go alone, so the workers share them.
  static constexpr double kBatchSeconds = 0.002;
  // Requests in flight stay below a pipe's capacity, so the host never blocks writing while the
  // child blocks writing a reply the host is not reading yet.
  static constexpr std::size_t kMaxBatchBytes = 32 * 1024;

  // The lead task and the companions the engine hands over are sent as a window of requests,
  // and their replies read in order. A child that dies fails the task it was running; the ones
  // sent after it are sent again to its replacement.
  TaskResult run_batch(TaskContext& context, ProcessCall& lead) {
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
      items.push_back(
          {&static_cast<Stored*>(context.companion_storage(i))->fn.call, static_cast<std::ptrdiff_t>(i), {}});
    }

    std::optional<TaskResult> lead_result;
    std::exception_ptr lead_error;
    auto settle = [&](Item& item, std::optional<TaskResult> result, std::exception_ptr error) {
      if (item.companion < 0) {
        lead_result = std::move(result);
        lead_error = std::move(error);
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
          channel->send(kRun, parts);  // a dead child shows when its reply is read
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
        TaskResult result = take_reply(*channel, *item.call, item.copies, std::move(reply));
        const auto now = std::chrono::steady_clock::now();
        const std::chrono::duration<double> took = now - std::max(item.sent_at, previous_reply);
        item.call->function->measured(took.count());
        if (item.call->model) item.call->model->record(Arch::process, item.call->size, took.count());
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

  // Answers an offload kernel's send / receive / barrier.
  std::optional<ProcessMessage> answer_kernel(const ProcessMessage& request, std::uint64_t launch, std::uint32_t core) {
    // Parts: the launch the kernel believes it is in, then the request's own.
    if (request.parts.empty() || request.parts[0] != std::to_string(launch)) {
      return ProcessMessage{kAnswerFailed, {"a request for another launch"}};
    }
    auto number = [&](std::size_t i) { return static_cast<std::uint32_t>(std::stoul(request.parts.at(i))); };
    std::string failure;
    switch (request.kind) {
      case kRequestSend: hub_.send(launch, core, number(1), request.parts.at(2)); return std::nullopt;
      case kRequestReceive:
        if (auto payload = hub_.receive(launch, core, number(1), failure)) {
          return ProcessMessage{kAnswerValue, {std::move(*payload)}};
        }
        return ProcessMessage{kAnswerFailed, {failure}};
      case kRequestBarrier:
        if (hub_.barrier(launch, failure)) return ProcessMessage{kAnswerValue, {}};
        return ProcessMessage{kAnswerFailed, {failure}};
      default: return ProcessMessage{kAnswerFailed, {"unknown request " + std::to_string(request.kind)}};
    }
  }

  std::vector<std::string> pickled_inputs(const ProcessCall& call) {
    std::vector<std::string> out;
    out.reserve(call.inputs.size());
    for (const auto& input : call.inputs) out.push_back(pickled_input(input));
    return out;
  }

  // The parts of a RUN message; they point into `call`, `table`, `inputs` and `id`.
  std::vector<std::string_view> run_message(ProcessChannel& channel, const ProcessCall& call, const std::string& table,
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

  // The task's result from the child's reply (arrays written are copied back), or its error.
  static TaskResult take_reply(ProcessChannel& channel, const ProcessCall& call, const std::vector<Segment>& copies,
                               ProcessMessage reply) {
    if (reply.kind == kReplyResult && reply.parts.size() >= 2) {
      for (std::size_t i = 0; i < call.arrays.size(); ++i) {
        if (copies[i].base != nullptr && call.arrays[i].writes) {
          copy_elements(reinterpret_cast<std::byte*>(call.arrays[i].address), copies[i].base, call.arrays[i]);
        }
      }
      TaskResult result;
      result.pickled = std::move(reply.parts[1]);
      result.is_pickled = true;
      return result;
    }
    if (reply.kind == kReplyError && reply.parts.size() >= 5) {
      std::string what = reply.parts[2] + ": " + reply.parts[3];
      throw RemoteError(std::move(what), std::move(reply.parts));
    }
    throw Error("hetflow: process worker " + std::to_string(channel.index()) + " sent an unexpected reply");
  }

  std::unique_ptr<Runtime> runtime_;
  PyRef dumps_;
  PyRef freeze_;  // keeps a task's traceback as text and drops its frames
  CompletionQueue completions_;
  MessageHub hub_;
  std::mutex functions_mutex_;
  std::vector<std::shared_ptr<const FunctionCode>> functions_;
  std::unordered_map<std::string, std::size_t> function_ids_;
  std::atomic<std::uint64_t> next_task_id_{1};
  std::atomic<std::uint64_t> submitted_{0};
  unsigned cpu_workers_ = 0;
};

}  // namespace
}  // namespace hetflow::python

NB_MODULE(_hetflow, m) {
  using namespace hetflow::python;
  m.doc() = "The hetflow engine; use the hetflow package, not this module.";
  bind_perfmodel(m);

  nb::class_<TaskRef>(m, "TaskRef")
      .def("done", &TaskRef::done)
      .def("status", &TaskRef::status)
      .def("wait", &TaskRef::wait, "timeout"_a = nb::none())
      .def("cancel", &TaskRef::cancel)
      .def("name", &TaskRef::name)
      .def("outcome", &TaskRef::outcome);

  nb::class_<ArrayHandle>(m, "ArrayHandle").def("registered", &ArrayHandle::registered);
  nb::class_<PyAcquisition>(m, "Acquisition")
      .def("release", &PyAcquisition::release)
      .def("active", &PyAcquisition::active);

  nb::class_<PyRuntime>(m, "Runtime")
      .def(nb::init<std::optional<unsigned>, std::optional<std::string>, unsigned, std::vector<std::string>,
                    std::vector<std::string>, std::optional<unsigned>, nb::callable, nb::callable,
                    std::optional<std::string>, std::optional<bool>>(),
           "ncpus"_a.none(), "scheduler"_a.none(), "nprocs"_a, "worker_command"_a, "worker_environment"_a,
           "spin_us"_a.none(), "dumps"_a, "freeze"_a, "trace"_a.none() = nb::none(), "stats"_a.none() = nb::none())
      .def("submit_thread", &PyRuntime::submit_thread, "fn"_a, "deps"_a, "accesses"_a, "name"_a, "priority"_a,
           "perfmodel"_a = nb::none(), "size"_a = 0)
      .def("register_function", &PyRuntime::register_function, "key"_a, "code"_a)
      .def("submit_process", &PyRuntime::submit_process, "function_id"_a, "call"_a, "deps"_a, "arrays"_a, "name"_a,
           "priority"_a, "worker"_a = -1, "launch"_a = 0, "perfmodel"_a = nb::none(), "size"_a = 0,
           "order"_a = std::vector<AccessSpec>{})
      .def("open_launch", &PyRuntime::open_launch, "launch"_a, "size"_a)
      .def("pinned_load", &PyRuntime::pinned_load, "worker"_a)
      .def("register_array", &PyRuntime::register_array, "address"_a, "nbytes"_a, "name"_a)
      .def("unregister_async", &PyRuntime::unregister_async, "handle"_a)
      .def("acquire", &PyRuntime::acquire, "handle"_a, "mode"_a)
      .def("watch", &PyRuntime::watch, "task"_a, "target"_a)
      .def("drain_completions", &PyRuntime::drain_completions, "timeout_ms"_a)
      .def("wait_all", &PyRuntime::wait_all, "timeout"_a = nb::none())
      .def("shutdown", &PyRuntime::shutdown)
      .def("abort", &PyRuntime::abort)
      .def("cancel_pending", &PyRuntime::cancel_pending)
      .def("inside_task", &PyRuntime::inside_task)
      .def("running_task_uses", &PyRuntime::running_task_uses, "handles"_a)
      .def("outstanding", &PyRuntime::outstanding)
      .def("finished", &PyRuntime::finished)
      .def("forget", &PyRuntime::forget)
      .def("shutdown_within", &PyRuntime::shutdown_within, "timeout"_a)
      .def("is_shut_down", &PyRuntime::is_shut_down)
      .def("workers", &PyRuntime::workers)
      .def("scheduler_name", &PyRuntime::scheduler_name);

  m.def(
      "shared_bytes",
      [](std::size_t nbytes) {
        Segment segment = SegmentRegistry::instance().allocate(nbytes);
        nb::capsule owner(segment.base,
                          [](void* base) noexcept { SegmentRegistry::instance().free(static_cast<std::byte*>(base)); });
        return nb::ndarray<nb::numpy, std::uint8_t, nb::ndim<1>>(segment.base, {nbytes}, owner);
      },
      "nbytes"_a, "A uint8 numpy array of nbytes in memory that worker processes share.");

  m.def(
      "locate_shared",
      [](std::uintptr_t address, std::size_t nbytes) -> std::optional<std::string> {
        auto segment = SegmentRegistry::instance().find(address, nbytes);
        if (!segment) return std::nullopt;
        return segment->locate(address - reinterpret_cast<std::uintptr_t>(segment->base), nbytes);
      },
      "address"_a, "nbytes"_a,
      "Where a worker process finds [address, address + nbytes) of a shared array (\"id fd pid offset "
      "nbytes\"), or None when that memory is not in a shared segment.");

  m.def("scratch_bytes", &scratch_bytes,
        "Bytes of the scratch shared memory that plain arrays are copied into for worker processes.");

  m.def("schedulers", [] {
    std::vector<std::string> names;
    for (const auto& entry : hetflow::ext::schedulers()) names.push_back(entry.name);
    return names;
  });

  // Engine errors reach Python with the right type and their message.
  nb::register_exception_translator([](const std::exception_ptr& error, void*) {
    try {
      std::rethrow_exception(error);
    } catch (const hetflow::ShutdownError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const hetflow::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}
