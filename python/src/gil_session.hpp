#pragma once
// Python tasks on the engine's CPU workers. A worker that runs a Python task keeps the GIL for
// the Python tasks that follow and gives it back when it runs out of work, so a stream of small
// tasks costs one GIL hand-over per burst instead of one per task.
#include <Python.h>

#include <cstdint>
#include <exception>

#include "hetflow/ext/driver.hpp"

namespace hetflow::python {

class GilSession {
 public:
  /// Makes sure the calling worker holds the GIL until `end()` (or, when called while an outer
  /// task on this thread has let the GIL go to wait, until the returned guard ends).
  /// A task run so, while an outer task waits, does not see the outer task's running asyncio
  /// event loop (the loop is the thread's: asyncio.run in the task would refuse to start).
  /// A task that forks: the child ends as the guard does, when the task's function returns
  /// (status 0) or raises (status 1), as such a child of a plain script ends. Back in the
  /// worker's loop, which has no runtime in the child, it waited for ever (and so did a parent
  /// waiting for it).
  class Guard {
   public:
    Guard();
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    std::uint64_t forks_ = forks_so_far();        // see ~Guard
    int unwinding_ = std::uncaught_exceptions();  // raised: unwinding one more
    bool nested_ = false;
    PyGILState_STATE nested_state_{};
    PyObject* outer_loop_ = nullptr;  // set aside while this task runs
  };
  /// Gives the GIL back if this thread kept it.
  static void end() noexcept;

 private:
  /// How many forks this process descends through (counted by a child handler).
  [[nodiscard]] static std::uint64_t forks_so_far() noexcept;
};

/// The CPU workers of a Python runtime: plain CPU workers that end their GIL session when idle.
class PythonThreadDriver final : public ext::Driver {
 public:
  explicit PythonThreadDriver(unsigned count) : count_(count) {}
  [[nodiscard]] std::string_view name() const override { return "python-thread"; }
  [[nodiscard]] Arch arch() const override { return Arch::cpu; }
  [[nodiscard]] unsigned worker_count() const override { return count_; }
  void worker_idle(unsigned /*index*/) override { GilSession::end(); }
  void stop_worker(unsigned /*index*/) override { GilSession::end(); }
  [[nodiscard]] bool spare_threads_may_run(unsigned /*index*/) const override { return true; }

 private:
  unsigned count_;
};

}  // namespace hetflow::python
