#pragma once
// Threads that want the GIL back while the interpreter finalizes. Python 3.11 to 3.13 end such a
// thread with pthread_exit, whose unwinding through C++ frames that catch everything (the
// engine's, nanobind's) aborts the process ("terminate called without an active exception",
// after a second Ctrl-C at exit, say); here they wait for the process to end instead, as Python
// 3.14 itself makes them.
#include <Python.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace hetflow::python {

[[nodiscard]] inline bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

/// Never returns once the interpreter finalizes, on any thread but the main one (which
/// finalizes it, and may take the GIL back meanwhile): the process is about to end.
inline void park_if_finalizing() noexcept {
  if (gettid() == getpid()) return;
  while (interpreter_finalizing()) std::this_thread::sleep_for(std::chrono::hours(1));
}

/// PyGILState_Ensure, for threads of the engine.
[[nodiscard]] inline PyGILState_STATE ensure_gil() noexcept {
  if (PyGILState_Check() == 0) park_if_finalizing();
  return PyGILState_Ensure();
}

/// The GIL held by a thread of the engine for a scope.
class GilHeld {
 public:
  GilHeld() noexcept : state_(ensure_gil()) {}
  ~GilHeld() { PyGILState_Release(state_); }
  GilHeld(const GilHeld&) = delete;
  GilHeld& operator=(const GilHeld&) = delete;

 private:
  PyGILState_STATE state_;
};

/// The GIL let go for a blocking call made from Python, and taken back at the end.
class GilReleased {
 public:
  GilReleased() noexcept : state_(PyEval_SaveThread()) {}
  ~GilReleased() {
    park_if_finalizing();
    PyEval_RestoreThread(state_);
  }
  GilReleased(const GilReleased&) = delete;
  GilReleased& operator=(const GilReleased&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace hetflow::python
