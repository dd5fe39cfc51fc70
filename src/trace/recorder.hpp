#pragma once
// What the engine records while it runs, for Config::trace_path (a Chrome trace) and
// Config::stats (a summary on stderr at shutdown). Times are seconds on the engine's clock:
// since the runtime started, or virtual seconds under simulation.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/ext/scheduler.hpp"

namespace hetflow::detail {

class Recorder {
 public:
  /// `trace_path` empty: no trace file. `stats` false: no summary (with neither, every call is
  /// a no-op). `node_names[i]` names memory node i. InvalidArgument if two workers share an id
  /// or a worker's memory node has no name. In `trace_path`, %r is the MPI rank, %p the process
  /// id, %s `scheduler` and %% a %.
  Recorder(std::string trace_path, bool stats, std::vector<ext::WorkerInfo> workers,
           std::vector<std::string> node_names, const std::string& scheduler = "");
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  /// One task run on `worker` from `start` to `end`; `bytes` is the size of the data it named.
  /// Called by that worker's thread (or the simulator's), concurrently with other workers. A
  /// worker's tasks come in the order they end (a task run while another waits comes before
  /// it), which the busy time of the statistics relies on. InvalidArgument for a worker id not
  /// given to the constructor. Ignored after finish().
  void task(unsigned worker, std::string_view name, std::size_t bytes, double start, double end);
  /// One copy from memory node `from` to node `to`. Called from any thread. InvalidArgument for
  /// a node without a name. Ignored after finish().
  void transfer(unsigned from, unsigned to, std::size_t bytes, double start, double end);
  /// One message exchanged with another process (an MPI rank) on the track `track` ("to rank 1")
  /// of the trace's "messages" process, named after what it carries. Called from any thread.
  /// Recorded only with a trace, and not after finish().
  void message(std::string_view track, std::string_view name, std::size_t bytes, double start, double end);
  /// Writes the trace and prints the statistics (the first call only); `end` is when the run
  /// ended. Never throws: a trace that cannot be written is reported on stderr.
  void finish(double end) noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace hetflow::detail
