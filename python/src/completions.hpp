#pragma once
// Python futures that asked to hear about completion (callbacks, concurrent.futures.wait,
// asyncio) are queued here by the engine's workers, without the GIL, and handed to the
// dispatcher thread in batches, so the GIL is taken once per batch rather than once per task.
#include <Python.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "hetflow/future.hpp"
#include "py_ref.hpp"

namespace hetflow::python {

class CompletionQueue {
 public:
  /// Queues `target` (a reference is taken; the caller holds the GIL) once `task` finishes (at
  /// once for an empty future: a task that runs on another MPI rank).
  void watch(const FutureBase& task, PyObject* target);
  /// Waits (without the GIL) up to `timeout_ms` for finished tasks; returns their targets.
  std::vector<PyRef> drain(int timeout_ms);
  void close();

 private:
  struct Watch;
  void post(PyRef target);
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<PyRef> finished_;
  bool closed_ = false;
};

}  // namespace hetflow::python
