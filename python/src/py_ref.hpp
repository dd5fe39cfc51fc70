#pragma once
// A strong reference to a Python object that may be dropped on any thread (engine workers
// recycle tasks): it takes the GIL to let go, and does nothing once the interpreter is gone.
#include <Python.h>

#include <utility>

#include "finalizing.hpp"

namespace hetflow::python {

class PyRef {
 public:
  PyRef() = default;
  /// Takes over a new reference.
  static PyRef steal(PyObject* object) noexcept {
    PyRef ref;
    ref.object_ = object;
    return ref;
  }
  /// Adds a reference; the caller holds the GIL.
  static PyRef borrow(PyObject* object) noexcept {
    Py_XINCREF(object);
    return steal(object);
  }
  PyRef(PyRef&& other) noexcept : object_(std::exchange(other.object_, nullptr)) {}
  PyRef& operator=(PyRef&& other) noexcept {
    if (this != &other) {
      reset();
      object_ = std::exchange(other.object_, nullptr);
    }
    return *this;
  }
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() { reset(); }

  void reset() noexcept {
    PyObject* object = std::exchange(object_, nullptr);
    if (object == nullptr || !Py_IsInitialized()) return;
    PyGILState_STATE state = ensure_gil();
    auto drop = [object] {  // may run Python code (a __del__), which may let go of the GIL
      Py_DECREF(object);
      return true;
    };
    unless_python_ends_the_thread(drop);
    PyGILState_Release(state);
  }
  [[nodiscard]] PyObject* get() const noexcept { return object_; }
  /// A new reference for the caller (who holds the GIL).
  [[nodiscard]] PyObject* new_reference() const noexcept {
    Py_XINCREF(object_);
    return object_;
  }
  explicit operator bool() const noexcept { return object_ != nullptr; }

 private:
  PyObject* object_ = nullptr;
};

}  // namespace hetflow::python
