#pragma once
// hetflow.Codelet from Python: one engine codelet per Python codelet, each implementation a call
// of the task's runner (a Python callable, the task's argument) with the architecture's name and
// what the device module says about the task (None on a CPU worker); the runner returns the
// seconds the implementation spent on one-off preparation, which the model does not learn.
#include <Python.h>

#include <array>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "device_module.hpp"
#include "hetflow/hetflow.hpp"
#include "py_ref.hpp"

namespace hetflow::python {

/// The kind of worker named "cpu", "cuda" or "opencl"; throws InvalidArgument for other names.
Arch implementation_arch(const std::string& name);

/// Runs a Python task's callable and turns a Python exception into a PythonError (its
/// traceback frozen to text by `freeze`, so that the frames are not kept).
PyObject* call_or_throw(PyObject* callable, PyObject* args, PyObject* freeze);

/// A thread task's call, `callable(*args, **kwargs)` (no arguments when `args` is null; `kwargs`
/// may be null), as call_or_throw; a coroutine it returns fails the task with TypeError
/// (hetflow._errors.returned_coroutine), as an ``async def`` function is refused at submission,
/// instead of coming back unawaited.
PyObject* call_task_or_throw(PyObject* callable, PyObject* args, PyObject* kwargs, PyObject* freeze);

/// Throws the Python exception set (taken from the interpreter) as a PythonError, its traceback
/// frozen to text by `freeze`.
[[noreturn]] void throw_python_error(PyObject* freeze);

class CodeletTable {
 public:
  /// `freeze` lives as long as the table's owner.
  explicit CodeletTable(PyObject* freeze) : freeze_(freeze) {}

  void add_device(Arch arch, DescribeTask describe, NoteSetup note_setup) {
    describe_[static_cast<unsigned>(arch)] = describe;
    note_setup_[static_cast<unsigned>(arch)] = note_setup;
  }

  /// A new engine codelet with an implementation for each of `archs` ("cpu", "cuda",
  /// "opencl"); its model, when given, is the performance model of that symbol. Returns its id.
  std::size_t add(const std::string& name, const std::vector<std::string>& archs,
                  const std::optional<std::string>& model);
  [[nodiscard]] const Codelet& get(std::size_t id) const;

 private:
  void run(TaskContext& context, Arch arch) const;

  PyObject* freeze_;
  std::array<DescribeTask, kArchCount> describe_{};
  std::array<NoteSetup, kArchCount> note_setup_{};
  mutable std::mutex mutex_;
  std::deque<Codelet> codelets_;  // a deque: tasks hold pointers to its elements
};

}  // namespace hetflow::python
