#pragma once
// Tasks blocked inside their bodies waiting for other tasks, across threads and runtimes: a wait
// that would close a cycle of them never ends, and is refused instead.
#include "core/worker.hpp"

namespace hetflow::detail {

struct TaskCore;

/// While it lives, the tasks running on the calling thread (`running`, innermost first) are known
/// to be blocked: the innermost waits for `awaited`, each outer one for the one above it. Throws
/// Error, naming the tasks, if `awaited` cannot end before one of them does: through tasks
/// blocked so on other threads and tasks that access data after others, in any mix.
/// Only for waits without a deadline (one with a deadline ends anyway).
class BlockedWait {
 public:
  BlockedWait(const RunningFrame* running, TaskCore* awaited);
  ~BlockedWait();
  BlockedWait(const BlockedWait&) = delete;
  BlockedWait& operator=(const BlockedWait&) = delete;

 private:
  const RunningFrame* running_;
  TaskCore* awaited_;
};

}  // namespace hetflow::detail
