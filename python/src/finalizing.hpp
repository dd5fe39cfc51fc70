#pragma once
// Threads that want the GIL back while the interpreter finalizes. Python 3.11 to 3.13 end such a
// thread with pthread_exit, whose unwinding through C++ frames that catch everything (the
// engine's, nanobind's) or may not throw (a destructor's) aborts the process ("terminate called
// without an active exception"); here they wait for the process to end instead, as Python 3.14
// itself makes them.
//
// Checking that the interpreter is not finalizing before taking the GIL leaves a window: a
// thread that checked, and waits for the GIL, is ended if finalization starts meanwhile. So the
// taking goes through a gate that hetflow's exit handler, the last thing Python runs before it
// finalizes (but for handlers registered before hetflow was imported), closes: from then on
// threads wait at the gate, and the handler lets go of the GIL until the threads already past
// it hold the GIL and have let go of it again. A gate closed for long while the interpreter is
// still not finalizing (an exit handler of the program that still needs hetflow's threads)
// opens again for good.
#include <Python.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
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

struct GilGate {
  std::atomic<int> passing{0};  // threads past the gate that do not hold the GIL yet
  std::atomic<bool> closed{false};
};

/// This extension module's gate (each module has its own; the exit handler closes them all).
/// In a forked child the threads past the gate are gone: none is counted there.
inline GilGate& gil_gate() noexcept {
  static GilGate gate;
  static const bool forgets_in_child = [] {
    return ::pthread_atfork(nullptr, nullptr, [] { gate.passing.store(0); }) == 0;
  }();
  static_cast<void>(forgets_in_child);
  return gate;
}

/// Waits while the gate is closed: for ever once the interpreter finalizes (the process is about
/// to end), else for a few seconds before opening it again.
inline void wait_at_closed_gate(GilGate& gate) noexcept {
  constexpr auto kReopenAfter = std::chrono::seconds(5);
  const auto since = std::chrono::steady_clock::now();
  while (gate.closed.load()) {
    if (!interpreter_finalizing() && std::chrono::steady_clock::now() - since > kReopenAfter) {
      gate.closed.store(false);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

[[noreturn]] inline void wait_for_the_process_to_end() noexcept {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

/// Runs `call`, which may take the GIL or run Python code (that may let go of the GIL and take it
/// back); if Python ends the thread meanwhile, the thread waits for the process to end instead.
template <class Call>
inline auto unless_python_ends_the_thread(Call& call) noexcept {
  try {
    return call();
  } catch (const __cxxabiv1::__forced_unwind&) {
    wait_for_the_process_to_end();
  }
}

/// Runs `take` (which returns holding the GIL) through the gate; the main thread, which
/// finalizes the interpreter and may take the GIL back meanwhile, goes straight through.
template <class Take>
inline auto through_gil_gate(Take take) noexcept {
  if (gettid() == getpid()) return take();
  GilGate& gate = gil_gate();
  for (;;) {
    gate.passing.fetch_add(1);
    if (!gate.closed.load() && !interpreter_finalizing()) {
      auto taken = unless_python_ends_the_thread(take);
      gate.passing.fetch_sub(1);
      return taken;
    }
    gate.passing.fetch_sub(1);
    wait_at_closed_gate(gate);
    if (interpreter_finalizing()) wait_for_the_process_to_end();
  }
}

/// Closes this module's gate (with the GIL held, from the exit handler) and lets go of the GIL
/// until the threads past it have taken it, for at most `patience`.
inline void close_gil_gate(std::chrono::milliseconds patience) noexcept {
  GilGate& gate = gil_gate();
  gate.closed.store(true);
  if (gate.passing.load() == 0) return;
  PyThreadState* state = PyEval_SaveThread();
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (gate.passing.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  PyEval_RestoreThread(state);
}

/// PyGILState_Ensure, for threads of the engine.
[[nodiscard]] inline PyGILState_STATE ensure_gil() noexcept {
  if (PyGILState_Check() != 0) return PyGILState_Ensure();
  return through_gil_gate([] { return PyGILState_Ensure(); });
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
    through_gil_gate([this] {
      PyEval_RestoreThread(state_);
      return true;
    });
  }
  GilReleased(const GilReleased&) = delete;
  GilReleased& operator=(const GilReleased&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace hetflow::python
