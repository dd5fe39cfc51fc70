#pragma once
// What the MPI module (_hetflow_mpi) and the main extension hand each other, as capsules: the
// engine a context is made over, the handles of distributed arrays, and the router through
// which the main extension submits tasks over them owner-computes. The MPI module is separate
// so that `import hetflow` does not load the MPI library; both sides link the same libhetflow.
#include <Python.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "hetflow/data.hpp"
#include "hetflow/runtime.hpp"

namespace hetflow::python {

/// The MPI side of submitting a task over distributed data.
class Router {
 public:
  virtual ~Router() = default;
  [[nodiscard]] virtual int rank() const = 0;
  /// The rank the task runs on (hetflow::mpi::kEveryRank: every rank); `rank` places it there
  /// instead of on the owner of its data. `options` name only distributed data.
  [[nodiscard]] virtual int executor(const TaskOptions& options, std::optional<int> rank) const = 0;
  /// Updates the protocol's state and posts the transfers the task needs; it runs here when
  /// executor() says this rank or every rank. Called by every rank, in the same order.
  virtual void route(const TaskOptions& options, std::optional<int> rank, std::string_view label) = 0;
};

inline constexpr const char* kEngineCapsule = "hetflow.engine";
inline constexpr const char* kDataHandleCapsule = "hetflow.data_handle";
inline constexpr const char* kRouterCapsule = "hetflow.router";

template <class T>
PyObject* owning_capsule(T value, const char* name) {
  auto* owned = new T(std::move(value));
  PyObject* capsule = PyCapsule_New(
      owned, name, [](PyObject* self) { delete static_cast<T*>(PyCapsule_GetPointer(self, PyCapsule_GetName(self))); });
  if (capsule == nullptr) delete owned;
  return capsule;
}

template <class T>
T& from_capsule(PyObject* capsule, const char* name) {
  auto* value = static_cast<T*>(PyCapsule_GetPointer(capsule, name));
  if (value == nullptr) throw std::invalid_argument(std::string("hetflow: not a ") + name + " capsule");
  return *value;
}

}  // namespace hetflow::python
