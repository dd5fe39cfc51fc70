#include "codelets.hpp"

#include "finalizing.hpp"
#include "gil_session.hpp"
#include "python_errors.hpp"
#include "task_result.hpp"

namespace hetflow::python {

Arch implementation_arch(const std::string& name) {
  for (Arch arch : {Arch::cpu, Arch::cuda, Arch::opencl}) {
    if (name == arch_name(arch)) return arch;
  }
  throw InvalidArgument("hetflow: no Python codelet implementation for '" + name + "'");
}

PyObject* call_or_throw(PyObject* callable, PyObject* args, PyObject* freeze) {
  PyObject* value = args == nullptr ? PyObject_CallNoArgs(callable) : PyObject_Call(callable, args, nullptr);
  if (value != nullptr) return value;
  throw_python_error(freeze);
}

PyObject* call_task_or_throw(PyObject* callable, PyObject* args, PyObject* kwargs, PyObject* freeze) {
  // A contextvars context of its own: what a task sets there (a ContextVar, decimal's precision)
  // reached the next tasks of its thread while the thread kept the GIL, and a task that thread
  // ran while this one waited, whose result then depended on where it ran.
  PyObject* context = PyContext_New();
  if (context == nullptr || PyContext_Enter(context) != 0) {
    Py_XDECREF(context);
    throw_python_error(freeze);
  }
  PyObject* value = args == nullptr ? PyObject_CallNoArgs(callable) : PyObject_Call(callable, args, kwargs);
  PyContext_Exit(context);
  Py_DECREF(context);
  if (value == nullptr) throw_python_error(freeze);
  if (!PyCoro_CheckExact(value)) return value;
  // Rare: the error (and the coroutine closed, so that it does not warn) comes from Python.
  PyObject* errors = PyImport_ImportModule("hetflow._errors");
  PyObject* error =
      errors == nullptr ? nullptr : PyObject_CallMethod(errors, "returned_coroutine", "OO", callable, value);
  Py_XDECREF(errors);
  Py_DECREF(value);
  if (error != nullptr) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error)), error);
    Py_DECREF(error);
  }
  throw_python_error(freeze);
}

void throw_python_error(PyObject* freeze) {
  PyObject* exception = fetch_exception();
  if (PyObject* frozen = PyObject_CallOneArg(freeze, exception)) {
    Py_DECREF(frozen);
  } else {
    PyErr_Clear();
  }
  std::string what = describe_python_exception(exception);
  throw PythonError(std::move(what), PyRef::steal(exception));
}

std::size_t CodeletTable::add(const std::string& name, const std::vector<std::string>& archs,
                              const std::optional<std::string>& model) {
  Codelet codelet;
  codelet.name = name;
  for (const std::string& arch_text : archs) {
    const Arch arch = implementation_arch(arch_text);
    Codelet::Implementation implementation = [this, arch](TaskContext& context) { run(context, arch); };
    switch (arch) {
      case Arch::cpu: codelet.cpu = std::move(implementation); break;
      case Arch::cuda: codelet.cuda = std::move(implementation); break;
      case Arch::opencl: codelet.opencl = std::move(implementation); break;
      case Arch::process: break;
    }
  }
  if (model) codelet.model = PerfModelRegistry::instance().get(*model);
  std::lock_guard lock(mutex_);
  codelets_.push_back(std::move(codelet));
  return codelets_.size() - 1;
}

const Codelet& CodeletTable::get(std::size_t id) const {
  std::lock_guard lock(mutex_);
  if (id >= codelets_.size()) throw InvalidArgument("hetflow: unknown codelet");
  return codelets_[id];
}

namespace {

// The GIL for one implementation's call. CPU workers keep it for the Python tasks that follow
// (a GIL session); a device worker gives it back at once, as it goes on to wait for its queue.
class ImplementationGil {
 public:
  explicit ImplementationGil(Arch arch) {
    if (arch == Arch::cpu) {
      session_.emplace();
    } else {
      state_ = ensure_gil();
    }
  }
  ~ImplementationGil() {
    if (!session_) PyGILState_Release(state_);
  }
  ImplementationGil(const ImplementationGil&) = delete;
  ImplementationGil& operator=(const ImplementationGil&) = delete;

 private:
  std::optional<GilSession::Guard> session_;
  PyGILState_STATE state_{};
};

}  // namespace

void CodeletTable::run(TaskContext& context, Arch arch) const {
  PyObject* runner = context.arg<PyRef>().get();
  ImplementationGil gil(arch);
  const DescribeTask describe = describe_[static_cast<unsigned>(arch)];
  PyObject* info = Py_None;
  if (describe != nullptr) {
    info = describe(context);
  } else {
    Py_INCREF(info);
  }
  if (info == nullptr) {
    PyObject* exception = fetch_exception();
    std::string what = describe_python_exception(exception);
    throw PythonError(std::move(what), PyRef::steal(exception));
  }
  PyObject* args = Py_BuildValue("(sN)", std::string(arch_name(arch)).c_str(), info);
  if (args == nullptr)
    throw PythonError("hetflow: could not build a codelet's arguments", PyRef::steal(fetch_exception()));
  PyRef args_ref = PyRef::steal(args);
  // The runner returns the seconds the implementation spent building what it keeps.
  PyRef setup = PyRef::steal(call_or_throw(runner, args, freeze_));
  const double setup_seconds = PyFloat_Check(setup.get()) ? PyFloat_AsDouble(setup.get()) : 0.0;
  const NoteSetup note_setup = note_setup_[static_cast<unsigned>(arch)];
  if (setup_seconds > 0 && note_setup != nullptr) note_setup(context, setup_seconds);
}

}  // namespace hetflow::python
