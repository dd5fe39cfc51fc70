#pragma once
// What a Python task leaves behind: a Python object (thread executor) or pickled bytes
// (process executor), and the C++ exceptions that carry Python failures through the engine.
#include <string>
#include <vector>

#include "hetflow/error.hpp"
#include "py_ref.hpp"

namespace hetflow::python {

struct TaskResult {
  PyRef object;         // set by tasks that ran in this interpreter
  std::string pickled;  // set by tasks that ran in a worker process
  bool is_pickled = false;
};

/// A Python exception raised by a task run in this interpreter.
class PythonError : public Error {
 public:
  PythonError(std::string what, PyRef exception) : Error(std::move(what)), exception_(std::move(exception)) {}
  [[nodiscard]] PyObject* exception() const noexcept { return exception_.get(); }

 private:
  PyRef exception_;
};

/// A Python exception raised by a task in a worker process: the parts of its ERROR message.
class RemoteError : public Error {
 public:
  RemoteError(std::string what, std::vector<std::string> parts) : Error(std::move(what)), parts_(std::move(parts)) {}
  [[nodiscard]] const std::vector<std::string>& parts() const noexcept { return parts_; }

 private:
  std::vector<std::string> parts_;
};

}  // namespace hetflow::python
