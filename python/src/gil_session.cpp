#include "gil_session.hpp"

#include <pthread.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "finalizing.hpp"

namespace hetflow::python {
namespace {

// Ends this process, a child that a thread task forked, as the task's function returned or (as
// `raised`) raised: as such a child of a plain script ends (hetflow._errors.end_forked_child).
// A raise that reaches here was not seen where the engine keeps the task's exception (the
// traceback printed there): the task that forked ran on the stack of another one that waits.
[[noreturn]] void end_forked_child(bool raised) noexcept {
  if (PyObject* errors = PyImport_ImportModule("hetflow._errors")) {
    PyObject* exception =
        raised ? PyObject_CallFunction(PyExc_RuntimeError, "s", "the task that forked this process raised") : Py_None;
    if (exception != nullptr) PyObject_CallMethod(errors, "end_forked_child", "O", exception);  // os._exit
  }
  PyErr_Clear();
  std::fflush(nullptr);
  std::_Exit(raised ? 1 : 0);
}

thread_local bool session_open = false;
thread_local PyGILState_STATE session_state{};

// The thread states of engine threads that ended, deleted by the next session to begin (which
// holds the GIL: clearing a state runs Python code).
struct EndedThreadStates {
  std::mutex mutex;
  std::vector<PyThreadState*> states;

  static EndedThreadStates& ended_thread_states() {
    static EndedThreadStates ended;
    return ended;
  }
};

// Counts the forks this process descends through: a guard that sees it change was made before
// its thread forked, so this is the child, and the task that forked has returned or raised.
std::atomic<std::uint64_t> fork_count{0};

// In a forked child: one fork more, and the ended threads' states forgotten (Python deleted
// every other thread's state), their lock made anew (a thread not there may have held it).
const bool handles_forks = ::pthread_atfork(nullptr, nullptr, [] {
                             fork_count.fetch_add(1, std::memory_order_relaxed);
                             EndedThreadStates& ended = EndedThreadStates::ended_thread_states();
                             std::construct_at(&ended.mutex);
                             ended.states.clear();
                           }) == 0;

// A worker thread keeps one Python thread state from its first session to its end, as a Python
// thread does: what its tasks keep in a threading.local (a per-thread cache, what an executor's
// initializer set up) stays theirs from one session to the next. One PyGILState_Ensure more than
// the sessions release keeps the state when a session gives the GIL back.
class KeptThreadState {
 public:
  KeptThreadState() = default;
  KeptThreadState(const KeptThreadState&) = delete;
  KeptThreadState& operator=(const KeptThreadState&) = delete;
  ~KeptThreadState() {
    if (state_ == nullptr || !Py_IsInitialized() || interpreter_finalizing()) return;  // finalizing deletes it
    auto& ended = EndedThreadStates::ended_thread_states();
    std::lock_guard lock(ended.mutex);
    ended.states.push_back(state_);
  }
  /// With the GIL held by a new session of this thread.
  void keep() {
    if (state_ != nullptr) return;
    static_cast<void>(PyGILState_Ensure());  // never released: the state outlives the session
    state_ = PyThreadState_Get();
  }

 private:
  PyThreadState* state_ = nullptr;
};

thread_local KeptThreadState kept_thread_state;

void delete_ended_thread_states() {
  std::vector<PyThreadState*> states;
  {
    auto& ended = EndedThreadStates::ended_thread_states();
    std::lock_guard lock(ended.mutex);
    states.swap(ended.states);
  }
  for (PyThreadState* state : states) {
    PyThreadState_Clear(state);
    PyThreadState_Delete(state);
  }
}

// Makes `loop` (nullptr: none) the thread's running asyncio event loop; returns the one before
// (a new reference, nullptr if none). Nothing to do where asyncio was never imported.
PyObject* set_running_loop(PyObject* loop) {
  PyObject* events = PyDict_GetItemString(PyImport_GetModuleDict(), "asyncio.events");  // borrowed
  if (events == nullptr) return nullptr;
  Py_INCREF(events);
  PyObject* before = PyObject_CallMethod(events, "_get_running_loop", nullptr);
  if (before != nullptr && (before != Py_None || loop != nullptr)) {
    if (PyObject* done = PyObject_CallMethod(events, "_set_running_loop", "O", loop != nullptr ? loop : Py_None)) {
      Py_DECREF(done);
    }
  }
  PyErr_Clear();
  Py_DECREF(events);
  if (before == Py_None) Py_CLEAR(before);
  return before;
}

// What threading.Thread does as a thread starts: the hooks of threading.settrace() and
// threading.setprofile() (coverage.py's, a profiler's) apply to the tasks this thread runs too.
// A session's thread state is new, so each session applies them again.
void apply_threading_hooks() {
  PyObject* threading = PyDict_GetItemString(PyImport_GetModuleDict(), "threading");  // borrowed
  if (threading == nullptr) return;
  for (const auto& [getter, setter] : {std::pair{"gettrace", "settrace"}, std::pair{"getprofile", "setprofile"}}) {
    PyObject* hook = PyObject_CallMethod(threading, getter, nullptr);
    if (hook != nullptr && hook != Py_None) {
      if (PyObject* done = PySys_GetObject(setter) != nullptr
                               ? PyObject_CallFunctionObjArgs(PySys_GetObject(setter), hook, nullptr)
                               : nullptr) {
        Py_DECREF(done);
      }
    }
    Py_XDECREF(hook);
    PyErr_Clear();
  }
}

}  // namespace

GilSession::Guard::Guard() {
  if (PyGILState_Check()) return;  // this worker's session already holds it
  if (!session_open) {
    session_state = ensure_gil();
    session_open = true;
    kept_thread_state.keep();
    delete_ended_thread_states();
    apply_threading_hooks();
    return;
  }
  // The session is open but an outer task on this thread released the GIL to wait (and this
  // worker runs other tasks meanwhile): take it for this task only.
  nested_ = true;
  nested_state_ = ensure_gil();
  outer_loop_ = set_running_loop(nullptr);
}

std::uint64_t GilSession::forks_so_far() noexcept {
  static_cast<void>(handles_forks);
  return fork_count.load(std::memory_order_relaxed);
}

GilSession::Guard::~Guard() {
  // With the GIL held: the task's own, or the session's (a fork in the task keeps it).
  if (forks_so_far() != forks_) end_forked_child(std::uncaught_exceptions() > unwinding_);
  if (!nested_) return;
  if (outer_loop_ != nullptr) Py_XDECREF(set_running_loop(outer_loop_));
  Py_XDECREF(outer_loop_);
  PyGILState_Release(nested_state_);
}

void GilSession::end() noexcept {
  if (!session_open) return;
  if (Py_IsInitialized() && PyGILState_Check() == 0) {
    // An outer task on this thread let the GIL go to wait, and a task run on its stack meanwhile
    // ended here (a body that went on without the worker, taking it back: rejoin): the thread
    // holds nothing to give back, and the session stays the outer task's, which takes the GIL
    // back as its wait ends. Releasing it now was a fatal error ("PyGILState_Release: thread
    // state ... must be current when releasing").
    return;
  }
  session_open = false;
  if (!Py_IsInitialized()) return;
  auto release = [] {  // clears the thread's state: may run Python code, which may let go of the GIL
    PyGILState_Release(session_state);
    return true;
  };
  unless_python_ends_the_thread(release);
}

}  // namespace hetflow::python
