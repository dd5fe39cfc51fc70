#pragma once
// What a device module (_hetflow_cuda, _hetflow_opencl) hands the main extension, as capsules:
// the driver a runtime adds, how a task on that driver's workers is described to Python, and
// how the time an implementation spent preparing (building a program) is left out of its model.
// The device modules are separate extensions so that `import hetflow` does not load the vendor
// libraries (cuBLAS alone takes most of a second); both sides link the same libhetflow.
#include <Python.h>

#include <cstdint>
#include <memory>
#include <stdexcept>

#include "hetflow/codelet.hpp"
#include "hetflow/ext/driver.hpp"

namespace hetflow::python {

/// A new reference to what the Python layer passes the implementation's runner for this task,
/// or nullptr with a Python error set. Called with the GIL held, on the device's worker.
using DescribeTask = PyObject* (*)(const TaskContext& context);

/// Tells the driver that the running implementation spent `seconds` on one-off preparation.
using NoteSetup = void (*)(const TaskContext& context, double seconds);

inline constexpr const char* kDriverCapsule = "hetflow.driver";
inline constexpr const char* kDescribeCapsule = "hetflow.describe_task";
inline constexpr const char* kNoteSetupCapsule = "hetflow.note_setup";

inline PyObject* driver_capsule(std::shared_ptr<ext::Driver> driver) {
  auto* owned = new std::shared_ptr<ext::Driver>(std::move(driver));
  PyObject* capsule = PyCapsule_New(owned, kDriverCapsule, [](PyObject* self) {
    delete static_cast<std::shared_ptr<ext::Driver>*>(PyCapsule_GetPointer(self, kDriverCapsule));
  });
  if (capsule == nullptr) delete owned;
  return capsule;
}

inline PyObject* describe_capsule(DescribeTask describe) {
  return PyCapsule_New(reinterpret_cast<void*>(describe), kDescribeCapsule, nullptr);
}

inline PyObject* note_setup_capsule(NoteSetup note) {
  return PyCapsule_New(reinterpret_cast<void*>(note), kNoteSetupCapsule, nullptr);
}

inline std::shared_ptr<ext::Driver> driver_from_capsule(PyObject* capsule) {
  auto* driver = static_cast<std::shared_ptr<ext::Driver>*>(PyCapsule_GetPointer(capsule, kDriverCapsule));
  if (driver == nullptr) throw std::invalid_argument("hetflow: not a device driver capsule");
  return *driver;
}

inline DescribeTask describe_from_capsule(PyObject* capsule) {
  void* pointer = PyCapsule_GetPointer(capsule, kDescribeCapsule);
  if (pointer == nullptr) throw std::invalid_argument("hetflow: not a task description capsule");
  return reinterpret_cast<DescribeTask>(pointer);
}

inline NoteSetup note_setup_from_capsule(PyObject* capsule) {
  void* pointer = PyCapsule_GetPointer(capsule, kNoteSetupCapsule);
  if (pointer == nullptr) throw std::invalid_argument("hetflow: not a setup time capsule");
  return reinterpret_cast<NoteSetup>(pointer);
}

/// ((address, bytes), ...) of the task's buffers on the worker's memory node: device pointers
/// for CUDA, cl_mem handles for OpenCL.
inline PyObject* buffer_tuple(const TaskContext& context) {
  const std::size_t count = context.buffer_count();
  PyObject* buffers = PyTuple_New(static_cast<Py_ssize_t>(count));
  if (buffers == nullptr) return nullptr;
  for (std::size_t i = 0; i < count; ++i) {
    const DataView view = context.buffer(i);
    PyObject* entry = Py_BuildValue("(Kn)", static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(view.ptr)),
                                    static_cast<Py_ssize_t>(view.layout.payload_bytes()));
    if (entry == nullptr) {
      Py_DECREF(buffers);
      return nullptr;
    }
    PyTuple_SET_ITEM(buffers, static_cast<Py_ssize_t>(i), entry);
  }
  return buffers;
}

}  // namespace hetflow::python
