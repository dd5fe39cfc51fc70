#include "gil_session.hpp"

#include "finalizing.hpp"

namespace hetflow::python {
namespace {

thread_local bool session_open = false;
thread_local PyGILState_STATE session_state{};

}  // namespace

GilSession::Guard::Guard() {
  if (PyGILState_Check()) return;  // this worker's session already holds it
  if (!session_open) {
    session_state = ensure_gil();
    session_open = true;
    return;
  }
  // The session is open but an outer task on this thread released the GIL to wait (and this
  // worker runs other tasks meanwhile): take it for this task only.
  nested_ = true;
  nested_state_ = ensure_gil();
}

GilSession::Guard::~Guard() {
  if (nested_) PyGILState_Release(nested_state_);
}

void GilSession::end() noexcept {
  if (!session_open) return;
  session_open = false;
  if (!Py_IsInitialized()) return;
  auto release = [] {  // clears the thread's state: may run Python code, which may let go of the GIL
    PyGILState_Release(session_state);
    return true;
  };
  unless_python_ends_the_thread(release);
}

}  // namespace hetflow::python
