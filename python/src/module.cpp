// The _hetflow extension's bindings: the engine, seen from Python. The Python package
// (python/hetflow) builds the public API on top of it. What process tasks send and receive is in
// process_tasks.cpp, offload kernels' messages in kernel_messages.cpp.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codelets.hpp"
#include "completions.hpp"
#include "device_module.hpp"
#include "finalizing.hpp"
#include "gil_session.hpp"
#include "hetflow/hetflow.hpp"
#include "hetflow/mpi.hpp"
#include "hetflow/process.hpp"
#include "kernel_messages.hpp"
#include "message_hub.hpp"
#include "mpi_router.hpp"
#include "perfmodel_bindings.hpp"
#include "process_tasks.hpp"
#include "protocol.hpp"
#include "python_errors.hpp"
#include "shared_memory.hpp"
#include "task_result.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hetflow::python {
namespace {

constexpr auto kSignalCheckPeriod = std::chrono::milliseconds(50);

// Whether the calling thread is Python's main thread, the one its signal handlers run on.
//
// Not a function-local static initialized by the Python call: its initialization would hold
// the static's guard while Python code runs, and Python lets go of the GIL in the middle of any
// code; a second thread then taken into this function first waited for the guard with the GIL
// in hand, and the first for the GIL inside the guard, for ever (threads that made their first
// waits at once). Each caller holds the GIL; a race only looks the same value up twice.
bool on_main_thread() {
  static std::atomic<unsigned long> main_ident{0};
  unsigned long ident = main_ident.load(std::memory_order_relaxed);
  if (ident == 0) {
    ident = nb::cast<unsigned long>(nb::module_::import_("threading").attr("main_thread")().attr("ident"));
    main_ident.store(ident, std::memory_order_relaxed);
  }
  return PyThread_get_thread_ident() == ident;
}

// Blocks without the GIL until `ready()` or the timeout, checking for Ctrl-C every 50 ms on the
// main thread. Other threads wait in one piece: a task that waits lends its worker to another
// thread until its wait ends, which each piece would take back.
template <class WaitUntil>
bool interruptible_wait(std::optional<double> timeout, WaitUntil wait_until) {
  if (timeout && std::isnan(*timeout)) throw nb::value_error("hetflow: a timeout of NaN seconds");
  // Saturated: a timeout past what the clock counts (inf, 1e10 s) never passes (it overflowed
  // into the past, and the wait gave up at once).
  const auto deadline = timeout ? hetflow::detail::deadline_after(std::chrono::duration<double>(*timeout))
                                : std::chrono::steady_clock::time_point::max();
  const bool checks_signals = on_main_thread();
  for (;;) {
    auto slice_end =
        checks_signals ? std::min(deadline, std::chrono::steady_clock::now() + kSignalCheckPeriod) : deadline;
    bool done;
    {
      GilReleased release;
      done = wait_until(slice_end);
    }
    if (done) return true;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

nb::bytes as_bytes(const std::string& text) { return nb::bytes(text.data(), text.size()); }

unsigned default_cpus() {
  Config probe;
  return *probe.resolved().ncpus;
}

/// A submitted task, from Python: a plain task, whose result the engine keeps, or a codelet
/// task, whose runner keeps the implementation's return value (its `value` attribute).
class TaskRef {
 public:
  explicit TaskRef(TaskFuture future) : base_(future), typed_(std::move(future)) {}
  TaskRef(FutureBase future, PyRef runner) : base_(std::move(future)), runner_(std::move(runner)) {}

  /// A task over distributed arrays that runs on another MPI rank: finished here, its value there.
  static TaskRef elsewhere(int rank, std::string name) {
    TaskRef task{TaskFuture{}};
    task.rank_ = rank;
    task.name_ = std::move(name);
    return task;
  }

  /// The MPI rank that runs the task (hetflow::mpi::kEveryRank: every rank), if it was
  /// submitted over distributed arrays.
  [[nodiscard]] std::optional<int> rank() const noexcept { return rank_; }
  void set_rank(std::optional<int> rank) noexcept { rank_ = rank; }

  [[nodiscard]] bool done() const { return !base_.valid() || base_.ready(); }
  /// Raises RuntimeError inside a task that this one waits for (see detail::check_wait_can_end).
  void check_wait_can_end() const {
    if (base_.valid()) hetflow::detail::check_wait_can_end(base_.core());
  }
  /// Finished only after its runtime gave up on the work (see detail::finished_after_abort).
  [[nodiscard]] bool finished_after_abort() const {
    return base_.valid() && hetflow::detail::finished_after_abort(base_.core());
  }
  [[nodiscard]] std::string status() const {
    if (!base_.valid()) return "done";
    switch (base_.status()) {
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
    if (done()) return true;
    if (!timeout && !on_main_thread()) {
      GilReleased release;
      base_.wait();  // refused, rather than hang, where it could never end
      return true;
    }
    // Waited for in slices (for Ctrl-C), each with a deadline, which the engine never refuses.
    if (!timeout) check_wait_can_end();
    return interruptible_wait(timeout, [this](auto until) { return base_.wait_until(until); });
  }
  bool cancel() { return base_.valid() && base_.cancel(); }
  [[nodiscard]] std::string name() const { return base_.valid() ? base_.name() : name_; }

  /// The outcome of a finished task, as a tuple the Python layer turns into a value or an error:
  /// ("object", obj) | ("pickled", bytes) | ("python_error", exc) | ("remote_error", [bytes...]) |
  /// ("dependency_error", root_task_name, root_outcome) | ("cancelled", message) |
  /// ("crashed", message) | ("error", type_name, message)
  [[nodiscard]] nb::tuple outcome() const {
    if (!base_.valid()) return nb::make_tuple("elsewhere", rank_.value_or(-1), name_);
    if (!base_.ready()) throw nb::value_error("hetflow: the task has not finished");
    if (base_.status() == TaskStatus::done) {
      if (runner_) return nb::make_tuple("object", nb::borrow(runner_.get()).attr("value"));
      if (!typed_.valid()) return nb::make_tuple("object", nb::none());  // a runner the collector took
      const TaskResult& result = typed_.get();
      if (result.is_pickled) return nb::make_tuple("pickled", as_bytes(result.pickled));
      return nb::make_tuple("object", nb::borrow(result.object ? result.object.get() : Py_None));
    }
    return describe(base_.error());
  }

  [[nodiscard]] const FutureBase& future() const noexcept { return base_; }
  /// The codelet runner this task keeps (for the garbage collector), and letting go of it.
  [[nodiscard]] PyObject* runner() const noexcept { return runner_.get(); }
  void drop_runner() noexcept { runner_.reset(); }
  /// The future with the engine-kept result that a process task receives as an argument.
  [[nodiscard]] const TaskFuture& result_future() const {
    if (!typed_.valid()) {
      throw nb::type_error(
          "hetflow: a codelet task's future cannot be an argument of a process task; pass the arrays it wrote");
    }
    return typed_;
  }

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
  FutureBase base_;
  TaskFuture typed_;
  PyRef runner_;
  std::optional<int> rank_;
  std::string name_;  // of a task that runs elsewhere
};

/// A numpy array's buffer, registered with the engine for dependency tracking.
class ArrayHandle {
 public:
  explicit ArrayHandle(DataHandle handle, bool distributed = false)
      : handle_(std::move(handle)), distributed_(distributed) {}
  [[nodiscard]] const DataHandle& handle() const noexcept { return handle_; }
  [[nodiscard]] bool registered() const noexcept { return handle_.registered(); }
  /// Registered with hetflow.mpi: tasks over it run owner-computes.
  [[nodiscard]] bool distributed() const noexcept { return distributed_; }

 private:
  DataHandle handle_;
  bool distributed_ = false;
};

/// Host access to an array, from PyRuntime::acquire.
/// Held by pointer: moving an Acquisition would make it nobody's, and a Python acquisition stays
/// its asking thread's (Runtime::acquire).
class PyAcquisition {
 public:
  explicit PyAcquisition(std::unique_ptr<Acquisition> acquisition) : acquisition_(std::move(acquisition)) {}
  void release() {
    GilReleased release;
    acquisition_->release();
  }
  [[nodiscard]] bool active() const noexcept { return acquisition_->active(); }
  /// None, or how the task that last wrote the data failed (as TaskRef::outcome describes it).
  [[nodiscard]] nb::object failure() const {
    const std::exception_ptr& error = acquisition_->failure();
    return error ? nb::object(TaskRef::describe(error)) : nb::none();
  }

 private:
  std::unique_ptr<Acquisition> acquisition_;
};

// handle, engine mode, copied back, lowest address, bytes spanned, element 0's offset, shape,
// strides, item size, the array.
using ArraySpec = std::tuple<const ArrayHandle*, std::string, bool, std::uintptr_t, std::size_t, std::size_t,
                             std::vector<std::ptrdiff_t>, std::vector<std::ptrdiff_t>, std::size_t, nb::handle>;
using AccessSpec = std::pair<const ArrayHandle*, std::string>;
// "cuda" or "opencl", and the driver, task description and setup time capsules of a device module.
using DeviceSpec = std::tuple<std::string, nb::object, nb::object, nb::object>;

/// What submit_call recognizes: hetflow's access marks and numpy arrays (once numpy is loaded).
struct CallTypes {
  PyObject* access = nullptr;   // hetflow._arrays.Access
  PyObject* ndarray = nullptr;  // numpy.ndarray
  PyObject* value_name = nullptr;
  PyObject* mode_name = nullptr;
  PyObject* shape_name = nullptr;
  PyObject* strides_name = nullptr;
  PyObject* flags_name = nullptr;
  PyObject* writeable_name = nullptr;
  PyObject* dtype_name = nullptr;
  PyObject* fields_name = nullptr;
  PyObject* subdtype_name = nullptr;
  PyObject* overlaps_name = nullptr;
  PyObject* handle_name = nullptr;
};

/// Kept for the life of the process (one interpreter); numpy's array type is looked up until
/// numpy is loaded (an import of it still running has no ndarray yet: looked up again later).
const CallTypes& call_types() {
  // Constant-initialized (no guard) and filled in under the GIL: a guarded initializer that
  // imports a module runs Python code inside the guard, which deadlocks as on_main_thread's
  // did. Threads racing here each fill in a copy; the first one done is kept.
  static CallTypes types;
  if (types.value_name == nullptr) {
    CallTypes made;
    made.value_name = PyUnicode_InternFromString("value");
    made.mode_name = PyUnicode_InternFromString("mode");
    made.shape_name = PyUnicode_InternFromString("shape");
    made.strides_name = PyUnicode_InternFromString("strides");
    made.flags_name = PyUnicode_InternFromString("flags");
    made.writeable_name = PyUnicode_InternFromString("writeable");
    made.dtype_name = PyUnicode_InternFromString("dtype");
    made.fields_name = PyUnicode_InternFromString("fields");
    made.subdtype_name = PyUnicode_InternFromString("subdtype");
    made.overlaps_name = PyUnicode_InternFromString("overlaps");
    made.handle_name = PyUnicode_InternFromString("handle");
    if (PyObject* arrays = PyImport_ImportModule("hetflow._arrays")) {
      made.access = PyObject_GetAttrString(arrays, "Access");
      Py_DECREF(arrays);
    }
    PyErr_Clear();
    if (types.value_name == nullptr) {
      types = made;  // no Python code runs meanwhile: no other thread sees a part of it
    } else {
      for (PyObject* mine : {made.access, made.value_name, made.mode_name, made.shape_name, made.strides_name,
                             made.flags_name, made.writeable_name, made.dtype_name, made.fields_name,
                             made.subdtype_name, made.overlaps_name, made.handle_name}) {
        Py_XDECREF(mine);
      }
    }
  }
  if (types.ndarray == nullptr) {
    PyObject* name = PyUnicode_InternFromString("numpy");
    PyObject* numpy = name == nullptr ? nullptr : PyImport_GetModule(name);
    Py_XDECREF(name);
    if (numpy != nullptr) {
      PyObject* ndarray = PyObject_GetAttrString(numpy, "ndarray");
      if (ndarray != nullptr && PyType_Check(ndarray)) {
        types.ndarray = ndarray;
      } else {
        Py_XDECREF(ndarray);
      }
      Py_DECREF(numpy);
    }
    PyErr_Clear();
  }
  return types;
}

/// The values that the package's all_plain takes (_serialize._PLAIN), subclasses excluded.
bool is_plain(PyObject* value) {
  return value == Py_None || PyLong_CheckExact(value) || PyFloat_CheckExact(value) || PyUnicode_CheckExact(value) ||
         PyBytes_CheckExact(value) || PyBool_Check(value) || PyComplex_CheckExact(value);
}

/// The mode bits of "R", "W", "RW" or "REDUX" (hetflow._data._MODE_BITS); 0 for other text.
unsigned mode_bits(PyObject* mode) {
  if (PyUnicode_CompareWithASCIIString(mode, "R") == 0) return 1;
  if (PyUnicode_CompareWithASCIIString(mode, "W") == 0) return 2;
  if (PyUnicode_CompareWithASCIIString(mode, "RW") == 0) return 3;
  if (PyUnicode_CompareWithASCIIString(mode, "REDUX") == 0) return 7;
  return 0;
}

/// Whether `object.name` is None (false where the attribute is missing).
bool attribute_is_none(PyObject* object, PyObject* name) {
  PyObject* value = PyObject_GetAttr(object, name);
  if (value == nullptr) {
    PyErr_Clear();
    return false;
  }
  const bool none = value == Py_None;
  Py_DECREF(value);
  return none;
}

/// Whether `object.name` equals `expected` (false where the attribute is missing).
bool attribute_equals(PyObject* object, PyObject* name, PyObject* expected) {
  PyObject* value = PyObject_GetAttr(object, name);
  if (value == nullptr) {
    PyErr_Clear();
    return false;
  }
  const int equal = PyObject_RichCompareBool(value, expected, Py_EQ);
  Py_DECREF(value);
  if (equal < 0) PyErr_Clear();
  return equal == 1;
}

/// The handle (an ArrayHandle) of `array`'s view when HandleRegistry.view would find it in its
/// cache `recent` (and take `bits`), the view overlaps no other and a write-only mark stays
/// write-only (HandleRegistry.accesses); an invalid object otherwise.
nb::object known_view(PyObject* array, unsigned bits, PyObject* recent) {
  if (recent == nullptr || !PyDict_CheckExact(recent)) return {};
  const CallTypes& types = call_types();
  if (bits != 1) {  // refused on a read-only array (by the Python path, which says so)
    PyObject* flags = PyObject_GetAttr(array, types.flags_name);
    PyObject* writeable = flags == nullptr ? nullptr : PyObject_GetAttr(flags, types.writeable_name);
    Py_XDECREF(flags);
    const int yes = writeable == nullptr ? -1 : PyObject_IsTrue(writeable);
    Py_XDECREF(writeable);
    if (yes != 1) {
      PyErr_Clear();
      return {};
    }
  }
  if (bits == 2) {  // W on items with bytes no field covers counts as RW: the Python path decides
    PyObject* dtype = PyObject_GetAttr(array, types.dtype_name);
    if (dtype == nullptr) {
      PyErr_Clear();
      return {};
    }
    const bool simple = attribute_is_none(dtype, types.fields_name) && attribute_is_none(dtype, types.subdtype_name);
    Py_DECREF(dtype);
    if (!simple) return {};
  }
  nb::object key = nb::steal(PyLong_FromVoidPtr(array));
  if (!key.is_valid()) throw nb::python_error();
  PyObject* found = PyDict_GetItemWithError(recent, key.ptr());  // borrowed
  if (found == nullptr) {
    PyErr_Clear();
    return {};
  }
  nb::object entry = nb::borrow(found);
  if (!PyTuple_CheckExact(entry.ptr()) || PyTuple_GET_SIZE(entry.ptr()) != 4) return {};
  nb::object referent = nb::steal(PyObject_CallNoArgs(PyTuple_GET_ITEM(entry.ptr(), 0)));
  if (!referent.is_valid()) {
    PyErr_Clear();
    return {};
  }
  if (referent.ptr() != array || !attribute_equals(array, types.shape_name, PyTuple_GET_ITEM(entry.ptr(), 1)) ||
      !attribute_equals(array, types.strides_name, PyTuple_GET_ITEM(entry.ptr(), 2))) {
    return {};
  }
  PyObject* view = PyTuple_GET_ITEM(entry.ptr(), 3);
  nb::object overlaps = nb::steal(PyObject_GetAttr(view, types.overlaps_name));
  if (!overlaps.is_valid() || !PyDict_CheckExact(overlaps.ptr()) || PyDict_Size(overlaps.ptr()) != 0) {
    PyErr_Clear();
    return {};
  }
  nb::object handle = nb::steal(PyObject_GetAttr(view, types.handle_name));
  if (!handle.is_valid()) {
    PyErr_Clear();
    return {};
  }
  if (!nb::isinstance<ArrayHandle>(handle) || !nb::inst_ready(handle)) return {};
  return handle;
}

/// One engine with CPU workers (thread executor) and process workers (process executor).
class PyRuntime {
 public:
  PyRuntime(std::optional<unsigned> ncpus, std::optional<std::string> scheduler, unsigned nprocs,
            std::vector<std::string> worker_command, std::vector<std::string> worker_environment,
            std::optional<unsigned> spin_us, nb::callable dumps, nb::callable freeze, std::optional<std::string> trace,
            std::optional<bool> stats, const std::vector<DeviceSpec>& devices,
            std::map<unsigned, std::size_t> memory_limits, bool lazy_processes,
            std::optional<std::size_t> worker_stack_bytes)
      : freeze_(PyRef::borrow(freeze.ptr())), codelets_(freeze_.get()), process_tasks_(PyRef::borrow(dumps.ptr())) {
    Config config;
    // The CPU workers come from the Python thread driver (GIL sessions), not the built-in one.
    config.ncpus = 0;
    cpu_workers_ = ncpus.value_or(0) > 0 ? *ncpus : default_cpus();
    config.drivers.push_back(std::make_shared<PythonThreadDriver>(cpu_workers_));
    config.scheduler = std::move(scheduler);
    config.spin_us = spin_us;
    config.worker_stack_bytes = worker_stack_bytes;
    config.trace_path = std::move(trace);
    config.stats = stats;
    config.memory_limits = std::move(memory_limits);  // empty: HETFLOW_MEMORY_LIMITS, else none
    if (nprocs > 0) {
      config.drivers.push_back(make_process_driver({.command = std::move(worker_command),
                                                    .environment = std::move(worker_environment),
                                                    .count = nprocs,
                                                    .shutdown_kind = message::kShutdown,
                                                    .lazy_start = lazy_processes}));
    }
    for (const auto& [arch_text, driver, describe, note_setup] : devices) {
      config.drivers.push_back(driver_from_capsule(driver.ptr()));
      codelets_.add_device(implementation_arch(arch_text), describe_from_capsule(describe.ptr()),
                           note_setup_from_capsule(note_setup.ptr()));
    }
    GilReleased release;  // process workers start (and import Python) meanwhile, unless lazy
    runtime_ = std::make_unique<Runtime>(std::move(config));
  }

  /// An engine codelet for a hetflow.Codelet: its id for submit_codelet.
  std::size_t register_codelet(const std::string& name, const std::vector<std::string>& archs,
                               const std::optional<std::string>& perfmodel) {
    return codelets_.add(name, archs, perfmodel);
  }

  /// A codelet task: the implementation for the worker it lands on calls `runner(arch, info)`.
  TaskRef submit_codelet(std::size_t codelet_id, nb::callable runner, const std::vector<const TaskRef*>& deps,
                         const std::vector<AccessSpec>& accesses, const std::string& name, int priority,
                         const std::vector<std::string>& where) {
    const Codelet& codelet = codelets_.get(codelet_id);
    const std::optional<int> rank = route(accesses, deps, std::nullopt, name, {}, priority);
    if (runs_elsewhere(rank)) return TaskRef::elsewhere(*rank, name);
    TaskOptions options = options_for(deps, name, priority);
    ArchMask mask;
    for (const std::string& arch_text : where) mask = mask | implementation_arch(arch_text);
    options.where = mask;
    std::vector<DataAccess> data = data_accesses(accesses);
    options.data_list = data;
    PyRef task_runner = PyRef::borrow(runner.ptr());
    FutureBase future = runtime().insert(codelet, options, PyRef::borrow(runner.ptr()));
    submitted_.fetch_add(1, std::memory_order_relaxed);
    TaskRef task(std::move(future), std::move(task_runner));
    task.set_rank(rank);
    return task;
  }

  ~PyRuntime() { shutdown(); }

  /// `initializer()` runs before each thread task (with the GIL): hetflow.Executor's, which runs
  /// the user's initializer once in each thread, as ThreadPoolExecutor does, and raises its error
  /// again for the later tasks of a thread where it failed.
  void set_thread_initializer(nb::callable initializer) { thread_initializer_ = PyRef::borrow(initializer.ptr()); }

  /// A thread task calling `fn(*args, **kwargs)` (`fn()` when `args` is None); a coroutine it
  /// returns fails it with TypeError (call_task_or_throw).
  TaskRef submit_thread(nb::callable fn, const std::vector<const TaskRef*>& deps,
                        const std::vector<AccessSpec>& accesses, const std::string& name, int priority,
                        const std::optional<std::string>& perfmodel, std::size_t size, std::optional<int> on,
                        const std::string& label, std::optional<nb::tuple> args, std::optional<nb::dict> kwargs) {
    const std::optional<int> rank = route(accesses, deps, on, name, label, priority);
    if (runs_elsewhere(rank)) return TaskRef::elsewhere(*rank, name);
    TaskOptions options = options_for(deps, name, priority);
    options.where = Arch::cpu;
    std::vector<DataAccess> data = data_accesses(accesses);
    options.data_list = data;
    PyRef call_args = args ? PyRef::borrow(args->ptr()) : PyRef();
    PyRef call_kwargs = kwargs && PyDict_Size(kwargs->ptr()) > 0 ? PyRef::borrow(kwargs->ptr()) : PyRef();
    auto body = [this, fn = PyRef::borrow(fn.ptr()), call_args = std::move(call_args),
                 call_kwargs = std::move(call_kwargs), model = model_for(perfmodel), size]() -> TaskResult {
      GilSession::Guard gil;
      initialize_this_thread();
      const auto start = std::chrono::steady_clock::now();
      PyObject* value = call_task_or_throw(fn.get(), call_args.get(), call_kwargs.get(), freeze_.get());
      if (model) record(*model, Arch::cpu, size, start);
      TaskResult result;
      result.object = PyRef::steal(value);
      return result;
    };
    TaskRef task(runtime().submit(options, std::move(body)));
    submitted_.fetch_add(1, std::memory_order_relaxed);
    task.set_rank(rank);
    return task;
  }

  /// The common thread task, all in one call: `fn(*args)` where each argument is a plain value
  /// (an exact int, float, str, bytes, bool, complex or None), a numpy array (read) or an access
  /// mark (hetflow.R/W/RW/REDUX) on one, whose view the handle registry met before (`recent`,
  /// its cache: id(array) -> (weak reference, shape, strides, View)) and which overlaps no other
  /// view. The task gets the arrays themselves (marks unwrapped) and the engine the accesses, as
  /// Runtime._arrays_and_plain and HandleRegistry.accesses would give them. None, with nothing
  /// submitted, for anything else (another argument, a view not met or overlapping others, an
  /// array a mark would refuse or turn into RW, hetflow.mpi's routing): the Python path then
  /// handles the task as before.
  std::optional<TaskRef> submit_call(nb::handle fn, nb::handle args, nb::handle recent, const std::string& name,
                                     int priority) {
    if (router_ || !PyTuple_CheckExact(args.ptr()) || !PyCallable_Check(fn.ptr())) return std::nullopt;
    const Py_ssize_t count = PyTuple_GET_SIZE(args.ptr());
    struct Merged {
      const ArrayHandle* handle;
      unsigned bits;
      nb::object owner;  // the Python object of the handle, kept while the task is made
    };
    std::vector<Merged> merged;
    PyRef call_args;  // a new tuple once a mark is met (the marks unwrapped), else `args` itself
    for (Py_ssize_t i = 0; i < count; ++i) {
      PyObject* value = PyTuple_GET_ITEM(args.ptr(), i);
      if (is_plain(value)) continue;
      PyObject* array = value;
      unsigned bits = 1;  // R
      const CallTypes& types = call_types();
      if (types.access != nullptr && Py_TYPE(value) == reinterpret_cast<PyTypeObject*>(types.access)) {
        nb::object marked = nb::steal(PyObject_GetAttr(value, types.value_name));
        nb::object mode = nb::steal(PyObject_GetAttr(value, types.mode_name));
        if (!marked.is_valid() || !mode.is_valid() || !PyUnicode_Check(mode.ptr())) {
          PyErr_Clear();
          return std::nullopt;
        }
        bits = mode_bits(mode.ptr());
        if (bits == 0) return std::nullopt;
        array = marked.ptr();  // the mark holds it meanwhile
        if (!call_args) {
          call_args = PyRef::steal(PyTuple_New(count));
          if (!call_args) throw nb::python_error();
          for (Py_ssize_t j = 0; j < count; ++j) {
            PyObject* item = PyTuple_GET_ITEM(args.ptr(), j);
            Py_INCREF(item);
            PyTuple_SET_ITEM(call_args.get(), j, item);
          }
        }
        Py_INCREF(array);
        PyObject* old = PyTuple_GET_ITEM(call_args.get(), i);
        PyTuple_SET_ITEM(call_args.get(), i, array);
        Py_DECREF(old);  // the mark: the tuple `args` still holds it
      }
      if (types.ndarray == nullptr || Py_TYPE(array) != reinterpret_cast<PyTypeObject*>(types.ndarray)) {
        return std::nullopt;
      }
      nb::object owner = known_view(array, bits, recent.ptr());
      if (!owner.is_valid()) return std::nullopt;
      const ArrayHandle* handle = nb::inst_ptr<ArrayHandle>(owner);
      auto same = std::find_if(merged.begin(), merged.end(), [handle](const Merged& m) { return m.handle == handle; });
      if (same == merged.end()) {
        merged.push_back({handle, bits, std::move(owner)});
      } else {
        same->bits |= bits;
      }
    }
    TaskOptions options = options_for({}, name, priority);
    options.where = Arch::cpu;
    std::vector<DataAccess> data;
    data.reserve(merged.size());
    for (const Merged& m : merged) data.push_back({m.handle->handle(), static_cast<AccessMode>(m.bits)});
    options.data_list = data;
    if (!call_args) call_args = PyRef::borrow(args.ptr());
    auto body = [this, fn = PyRef::borrow(fn.ptr()), call_args = std::move(call_args)]() -> TaskResult {
      GilSession::Guard gil;
      initialize_this_thread();
      TaskResult result;
      result.object = PyRef::steal(call_task_or_throw(fn.get(), call_args.get(), nullptr, freeze_.get()));
      return result;
    };
    TaskRef task(runtime().submit(options, std::move(body)));
    submitted_.fetch_add(1, std::memory_order_relaxed);
    return task;
  }

  /// Keeps a function's code; returns the id tasks name it by (the same for the same key).
  std::size_t register_function(const std::string& key, nb::bytes code) {
    return functions_.add(key, std::string_view(code.c_str(), code.size()));
  }

  TaskRef submit_process(std::size_t function_id, nb::bytes call, const std::vector<const TaskRef*>& deps,
                         const std::vector<ArraySpec>& arrays, const std::string& name, int priority, int worker,
                         std::uint64_t launch, const std::optional<std::string>& perfmodel, std::size_t size,
                         const std::vector<AccessSpec>& order, std::optional<int> on, const std::string& label) {
    std::vector<AccessSpec> all_accesses = order;
    for (const auto& spec : arrays) all_accesses.emplace_back(std::get<0>(spec), std::get<1>(spec));
    const std::optional<int> rank = route(all_accesses, deps, on, name, label, priority);
    if (runs_elsewhere(rank)) return TaskRef::elsewhere(*rank, name);
    std::shared_ptr<const FunctionCode> function = functions_.get(function_id);
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
    for (const TaskRef* dep : deps) process_call.inputs.push_back(dep->result_future());
    submitted_.fetch_add(1, std::memory_order_relaxed);
    if (launch == 0) {
      TaskRef task(runtime().submit(options, BatchedBody{&process_tasks_, std::move(process_call)}));
      task.set_rank(rank);
      return task;
    }
    // Process workers follow the CPU workers; a kernel is pinned to its core's worker.
    const auto core = static_cast<std::uint32_t>(worker - static_cast<int>(cpu_workers_));
    return TaskRef(runtime().submit(options, KernelBody{&process_tasks_, &hub_, std::move(process_call), launch,
                                                        std::make_shared<KernelEnd>(hub_, launch, core)}));
  }

  /// `host_writable`: the program may write the array directly between its waits (so device
  /// copies made before its last wait are not trusted); false for read-only numpy arrays.
  ArrayHandle register_array(std::uintptr_t address, std::size_t nbytes, const std::string& name, bool host_writable) {
    if (address == 0) throw nb::value_error("hetflow: cannot register an array without data");
    ArrayHandle array(
        runtime().register_overlapping_data(reinterpret_cast<void*>(address), DataLayout::vector(nbytes, 1), name));
    if (host_writable) runtime().watch_host_writes(array.handle());
    return array;
  }

  void watch_host_writes(const ArrayHandle& array) { runtime().watch_host_writes(array.handle()); }

  void unregister_async(const ArrayHandle& handle) {
    if (runtime_ && !runtime_->is_shut_down()) runtime_->unregister_async(handle.handle());
  }

  /// The array is being destroyed: its handle goes without any copy into its memory.
  void discard(const ArrayHandle& handle) {
    if (runtime_ && !runtime_->is_shut_down()) runtime_->discard(handle.handle());
  }

  /// On `holder`'s behalf if given (thread_number() of the thread that asked: this may be a
  /// helper thread that keeps the asking one interruptible).
  PyAcquisition acquire(const ArrayHandle& handle, const std::string& mode, std::optional<std::uint64_t> holder) {
    AccessMode access = parse_access_mode(mode);
    Runtime& rt = runtime();
    GilReleased release;
    struct ActingFor {
      std::uint64_t previous;
      ~ActingFor() { hetflow::detail::act_for_thread(previous); }
    } acting{hetflow::detail::act_for_thread(holder.value_or(0))};
    // Built in place from the prvalue: not moved (see PyAcquisition).
    return PyAcquisition(std::unique_ptr<Acquisition>(new Acquisition(rt.acquire(handle.handle(), access))));
  }

  void open_launch(std::uint64_t launch, std::uint32_t size) { hub_.open(launch, size); }
  void abandon_launch(std::uint64_t launch, std::uint32_t unsent) { hub_.abandon(launch, unsent); }
  std::size_t open_launches() { return hub_.open_launches(); }

  std::size_t pinned_load(unsigned worker) { return runtime().pinned_load(worker); }

  void watch(const TaskRef& task, nb::handle target) { completions_.watch(task.future(), target.ptr()); }

  // -- MPI (hetflow.mpi) ---------------------------------------------------------------------
  /// The engine, for the MPI module's context (valid while this runtime is).
  nb::object engine_capsule() {
    PyObject* capsule = PyCapsule_New(&runtime(), kEngineCapsule, nullptr);
    if (capsule == nullptr) throw nb::python_error();
    return nb::steal(capsule);
  }

  /// Routes tasks over distributed arrays through the MPI module's router (None: no more).
  void set_router(nb::handle capsule) {
    router_ = capsule.is_none() ? nullptr : from_capsule<std::shared_ptr<Router>>(capsule.ptr(), kRouterCapsule);
  }

  /// The handle of an array the MPI module registered.
  static ArrayHandle adopt_distributed(nb::handle capsule) {
    return ArrayHandle(from_capsule<DataHandle>(capsule.ptr(), kDataHandleCapsule), /*distributed=*/true);
  }

  nb::list drain_completions(int timeout_ms) {
    std::vector<PyRef> finished;
    {
      GilReleased release;
      finished = completions_.drain(timeout_ms);
    }
    nb::list out;
    for (auto& target : finished) out.append(nb::steal(target.new_reference()));
    return out;
  }

  bool wait_all(std::optional<double> timeout) {
    Runtime& rt = runtime();
    // Waited for in slices (for Ctrl-C), each with a deadline, which the engine never refuses.
    if (!timeout) check_wait_all_can_end();
    bool finished = false;
    interruptible_wait(timeout, [&rt, &finished](auto until) {
      finished = rt.wait_all_until(until);
      // It returns false before its deadline only once shutdown gave up on the work: over.
      return finished || std::chrono::steady_clock::now() < until;
    });
    return finished;
  }

  /// Throws, rather than let a wait without a deadline hang, where wait_all could never end.
  void check_wait_all_can_end() { hetflow::detail::check_wait_all_can_end(runtime()); }

  void abort() {
    if (runtime_ && !runtime_->is_shut_down()) runtime_->abort();
  }

  /// Tasks not started yet are cancelled instead of run; running ones go on.
  void cancel_pending() {
    if (runtime_ && !runtime_->is_shut_down()) runtime_->cancel_pending();
  }

  /// Lets go of the engine without stopping or destroying it: in a forked child, where its
  /// threads do not exist (stopping it would wait for ever) and its locks may be held for good.
  void forget() {
    static_cast<void>(runtime_.release());
    nb::set_leak_warnings(false);
  }

  /// Submitted tasks not finished yet.
  [[nodiscard]] std::int64_t outstanding() const {
    return runtime_ && !runtime_->is_shut_down() ? static_cast<std::int64_t>(runtime_->unfinished_tasks()) : 0;
  }

  /// Tasks submitted from Python that have finished (or been cancelled): grows while work
  /// progresses, even when each finished task submits the next.
  [[nodiscard]] std::uint64_t finished() const {
    const auto submitted = static_cast<std::int64_t>(submitted_.load(std::memory_order_relaxed));
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, submitted - outstanding()));
  }

  /// Whether the calling thread is one of this runtime's workers (a thread task runs there).
  [[nodiscard]] bool inside_task() const { return runtime_ && runtime_->on_worker_thread(); }

  /// Holds the GIL throughout: HandleRegistry counts on no Python thread moving meanwhile.
  [[nodiscard]] std::optional<std::uint64_t> accesses_if_at_rest(const ArrayHandle& handle) const {
    if (!runtime_ || runtime_->is_shut_down()) return std::nullopt;
    return runtime_->accesses_if_at_rest(handle.handle());
  }

  /// Whether the task the calling thread runs declared access to one of the handles of
  /// `accesses` ([(handle, mode)]) that an access in that mode would wait for.
  [[nodiscard]] bool running_task_conflicts(
      const std::vector<std::pair<const ArrayHandle*, std::string>>& accesses) const {
    if (!runtime_) return false;
    for (const auto& [handle, mode] : accesses) {
      if (runtime_->current_task_uses(handle->handle(), parse_access_mode(mode))) return true;
    }
    return false;
  }

  /// The program took the array's data as they are (inside an acquired one): see forget_failure.
  void forget_failure(const ArrayHandle& handle) {
    if (runtime_ && !runtime_->is_shut_down() && handle.registered()) runtime_->forget_failure(handle.handle());
  }

  /// Shuts down, waiting for the work at most `timeout` seconds; workers still in a task then
  /// are left running (a thread task cannot be stopped), and so is the engine they use, which
  /// is let go of without being destroyed. Returns how many workers were left.
  unsigned shutdown_within(double timeout) {
    if (!runtime_) return 0;
    unsigned left = 0;
    {
      GilReleased release;
      left = runtime_->shutdown_until(hetflow::detail::deadline_after(std::chrono::duration<double>(timeout)));
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
      GilReleased release;
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
  void initialize_this_thread() {
    if (!thread_initializer_) return;
    PyObject* done = PyObject_CallNoArgs(thread_initializer_.get());
    if (done == nullptr) throw_python_error(freeze_.get());
    Py_DECREF(done);
  }

  Runtime& runtime() {
    if (!runtime_) throw std::runtime_error("hetflow: the runtime has been shut down");
    return *runtime_;
  }

  /// With hetflow.mpi: where a task runs, for a task over distributed arrays or placed on a
  /// rank (`on`), after the transfers it needs are posted; nullopt for an ordinary task (on
  /// every rank, each on its own). Everything is checked before anything is posted, the same
  /// way on every rank, so that a refused task leaves the ranks in step. `label`: what the
  /// submission check (HETFLOW_MPI_CHECK) compares of the task's function; its name if empty.
  /// `priority`: compared between the ranks by the submission check, as the rest of the task.
  std::optional<int> route(const std::vector<AccessSpec>& specs, const std::vector<const TaskRef*>& deps,
                           std::optional<int> on, const std::string& name, const std::string& label, int priority) {
    if (!router_) {
      if (on) throw nb::value_error("hetflow: on= places a task on an MPI rank: call hetflow.mpi.init() first");
      return std::nullopt;
    }
    std::vector<DataAccess> distributed;
    bool writes_plain = false;
    for (const auto& [handle, mode] : specs) {
      const AccessMode access = parse_access_mode(mode);
      if (handle->distributed()) {
        distributed.push_back({handle->handle(), access});
      } else if (writes(access)) {
        writes_plain = true;
      }
    }
    std::optional<int> rank;
    TaskOptions options;
    options.data_list = distributed;
    options.name = name;
    options.priority = priority;
    if (!distributed.empty() || on) {
      if (runtime().on_worker_thread()) {
        throw nb::value_error(
            ("hetflow.mpi: task '" + name +
             "' uses distributed arrays but is submitted from inside a task, which runs on one rank only; "
             "every rank's program must submit it")
                .c_str());
      }
      rank = router_->executor(options, on);
      if (writes_plain && *rank != mpi::kEveryRank) {
        throw nb::value_error(("hetflow.mpi: task '" + name + "' runs on rank " + std::to_string(*rank) +
                               " only, but writes an array that is not distributed, which would then differ "
                               "between ranks; register it with hetflow.mpi.register(array, owner) "
                               "(owner=hetflow.mpi.EVERY_RANK to give each rank its own)")
                                  .c_str());
      }
    }
    const int runs_on = rank.value_or(mpi::kEveryRank);
    for (const TaskRef* dep : deps) {
      const std::optional<int> dep_rank = dep->rank();
      if (dep_rank && *dep_rank != mpi::kEveryRank && *dep_rank != runs_on) {
        throw nb::value_error(
            ("hetflow.mpi: task '" + name + "' runs on " +
             (runs_on == mpi::kEveryRank ? std::string("every rank") : "rank " + std::to_string(runs_on)) +
             " and takes the value of task '" + dep->name() + "', which ran on rank " + std::to_string(*dep_rank) +
             " only; values reach other ranks through distributed arrays")
                .c_str());
      }
    }
    if (rank) router_->route(options, on, label.empty() ? name : label);
    return rank;
  }

  [[nodiscard]] bool runs_elsewhere(std::optional<int> rank) const {
    return rank && *rank != mpi::kEveryRank && *rank != router_->rank();
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
    for (const TaskRef* dep : deps) {
      if (dep->future().valid()) options.after.push_back(dep->future());
    }
    options.name = name;
    options.priority = priority;
    return options;
  }

  std::unique_ptr<Runtime> runtime_;
  std::shared_ptr<Router> router_;  // with hetflow.mpi
  PyRef freeze_;                    // keeps a task's traceback as text and drops its frames
  PyRef thread_initializer_;        // set_thread_initializer's
  CodeletTable codelets_;
  CompletionQueue completions_;
  MessageHub hub_;
  FunctionRegistry functions_;
  ProcessTaskHost process_tasks_;
  std::atomic<std::uint64_t> submitted_{0};
  unsigned cpu_workers_ = 0;
};

// A codelet task's runner may refer back to its future (through the implementation's globals,
// say): these let the garbage collector see that reference and break such cycles.
int task_ref_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!nb::inst_ready(self)) return 0;
  Py_VISIT(nb::inst_ptr<TaskRef>(self)->runner());
  return 0;
}

int task_ref_clear(PyObject* self) {
  if (nb::inst_ready(self)) nb::inst_ptr<TaskRef>(self)->drop_runner();
  return 0;
}

PyType_Slot task_ref_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(task_ref_traverse)},
                                {Py_tp_clear, reinterpret_cast<void*>(task_ref_clear)},
                                {0, nullptr}};

}  // namespace
}  // namespace hetflow::python

NB_MODULE(_hetflow, m) {
  using namespace hetflow::python;
  m.doc() = "The hetflow engine; use the hetflow package, not this module.";
  bind_perfmodel(m);

  nb::class_<TaskRef>(m, "TaskRef", nb::type_slots(task_ref_slots))
      .def("done", &TaskRef::done)
      .def("rank", &TaskRef::rank)
      .def("status", &TaskRef::status)
      .def("finished_after_abort", &TaskRef::finished_after_abort)
      .def("check_wait_can_end", &TaskRef::check_wait_can_end)
      .def("wait", &TaskRef::wait, "timeout"_a = nb::none())
      .def("cancel", &TaskRef::cancel)
      .def("name", &TaskRef::name)
      .def("outcome", &TaskRef::outcome);

  nb::class_<ArrayHandle>(m, "ArrayHandle").def("registered", &ArrayHandle::registered);
  nb::class_<PyAcquisition>(m, "Acquisition")
      .def("release", &PyAcquisition::release)
      .def("active", &PyAcquisition::active)
      .def("failure", &PyAcquisition::failure);

  nb::class_<PyRuntime>(m, "Runtime")
      .def(nb::init<std::optional<unsigned>, std::optional<std::string>, unsigned, std::vector<std::string>,
                    std::vector<std::string>, std::optional<unsigned>, nb::callable, nb::callable,
                    std::optional<std::string>, std::optional<bool>, const std::vector<DeviceSpec>&,
                    std::map<unsigned, std::size_t>, bool, std::optional<std::size_t>>(),
           "ncpus"_a.none(), "scheduler"_a.none(), "nprocs"_a, "worker_command"_a, "worker_environment"_a,
           "spin_us"_a.none(), "dumps"_a, "freeze"_a, "trace"_a.none() = nb::none(), "stats"_a.none() = nb::none(),
           "devices"_a = std::vector<DeviceSpec>{}, "memory_limits"_a = std::map<unsigned, std::size_t>{},
           "lazy_processes"_a = false, "worker_stack_bytes"_a.none() = nb::none())
      .def("register_codelet", &PyRuntime::register_codelet, "name"_a, "archs"_a, "perfmodel"_a.none())
      .def("submit_codelet", &PyRuntime::submit_codelet, "codelet"_a, "runner"_a, "deps"_a, "accesses"_a, "name"_a,
           "priority"_a, "where"_a)
      .def("set_thread_initializer", &PyRuntime::set_thread_initializer, "initializer"_a)
      .def("submit_thread", &PyRuntime::submit_thread, "fn"_a, "deps"_a, "accesses"_a, "name"_a, "priority"_a,
           "perfmodel"_a = nb::none(), "size"_a = 0, "on"_a = nb::none(), "label"_a = "", "args"_a = nb::none(),
           "kwargs"_a = nb::none())
      .def("submit_call", &PyRuntime::submit_call, "fn"_a, "args"_a, "recent"_a.none(), "name"_a, "priority"_a)
      .def("register_function", &PyRuntime::register_function, "key"_a, "code"_a)
      .def("submit_process", &PyRuntime::submit_process, "function_id"_a, "call"_a, "deps"_a, "arrays"_a, "name"_a,
           "priority"_a, "worker"_a = -1, "launch"_a = 0, "perfmodel"_a = nb::none(), "size"_a = 0,
           "order"_a = std::vector<AccessSpec>{}, "on"_a = nb::none(), "label"_a = "")
      .def("open_launch", &PyRuntime::open_launch, "launch"_a, "size"_a)
      .def("abandon_launch", &PyRuntime::abandon_launch, "launch"_a, "unsent"_a)
      .def("open_launches", &PyRuntime::open_launches)
      .def("pinned_load", &PyRuntime::pinned_load, "worker"_a)
      .def("register_array", &PyRuntime::register_array, "address"_a, "nbytes"_a, "name"_a, "host_writable"_a)
      .def("watch_host_writes", &PyRuntime::watch_host_writes, "array"_a)
      .def("unregister_async", &PyRuntime::unregister_async, "handle"_a)
      .def("discard", &PyRuntime::discard, "handle"_a)
      .def("accesses_if_at_rest", &PyRuntime::accesses_if_at_rest, "handle"_a)
      .def("acquire", &PyRuntime::acquire, "handle"_a, "mode"_a, "holder"_a = nb::none())
      .def("watch", &PyRuntime::watch, "task"_a, "target"_a)
      .def("engine_capsule", &PyRuntime::engine_capsule)
      .def("set_router", &PyRuntime::set_router, "router"_a.none())
      .def_static("adopt_distributed", &PyRuntime::adopt_distributed, "handle"_a)
      .def("drain_completions", &PyRuntime::drain_completions, "timeout_ms"_a)
      .def("wait_all", &PyRuntime::wait_all, "timeout"_a = nb::none())
      .def("check_wait_all_can_end", &PyRuntime::check_wait_all_can_end)
      .def("shutdown", &PyRuntime::shutdown)
      .def("abort", &PyRuntime::abort)
      .def("cancel_pending", &PyRuntime::cancel_pending)
      .def("inside_task", &PyRuntime::inside_task)
      .def("running_task_conflicts", &PyRuntime::running_task_conflicts, "accesses"_a)
      .def("forget_failure", &PyRuntime::forget_failure, "handle"_a)
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

  m.def(
      "message_kinds",
      [] {
        nb::dict kinds;
        for (const auto& kind : message::kKinds) kinds[nb::str(kind.name.data(), kind.name.size())] = kind.value;
        return kinds;
      },
      "The kinds of the messages between the host and its worker processes, by name.");

  m.def("note_application_waited", &hetflow::Runtime::note_application_waited,
        "The program has seen tasks end and may now write its arrays directly: device copies made "
        "before are copied again from host memory before their next use (read-only arrays excepted).");

  m.def(
      "close_gil_gate",
      [](double patience_s) {
        hetflow::python::close_gil_gate(std::chrono::milliseconds(static_cast<long>(patience_s * 1000)));
      },
      "patience_s"_a,
      "At exit, after hetflow's last work: threads of this module that want the GIL back wait for the "
      "process to end from now on (finalizing Python would end them through C++ frames); waits up to "
      "patience_s for those already on their way to it.");

  m.def(
      "check_environment", [] { hetflow::Config{}.check(); },
      "Reads the engine's HETFLOW_* variables (and HETFLOW_SIMULATE's machine description) as a runtime "
      "would; ValueError naming a bad one.");

  m.def(
      "expect_objects_at_exit", [] { nb::set_leak_warnings(false); },
      "At exit: hetflow's objects still referenced then (a future in a global, whose exception's "
      "class refers to the module that holds the future) are reclaimed with the process, unreported.");

  m.def(
      "open_gil_gate", [] { hetflow::python::gil_gate().closed.store(false); },
      "hetflow is used again after its exit handler (by a later one): its threads take the GIL as before.");

  m.def("thread_number", &hetflow::detail::thread_number,
        "A number for the calling thread, never given to another one: acquisitions are held by it.");

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
