// The Task Bench core behind a C ABI, for programs in other languages (taskbench.py loads it
// with ctypes): they parse the flags, learn the graph and run its points through the same code
// as the C++ programs, so that the patterns, kernels, checks and report are the very same.
// ctypes releases the GIL during each call, so the kernels run in parallel with Python threads.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "core.hpp"

#define TASKBENCH_C_API extern "C" __attribute__((visibility("default")))

namespace {

const taskbench::TaskGraph& graph_of(const void* graph) { return *static_cast<const taskbench::TaskGraph*>(graph); }

}  // namespace

/// Parses the flags (argv[0] is the program's name) and allocates the graphs' buffers. A bad flag
/// prints the reason and exits with status 2, -h prints the help and exits 0, as in the programs.
TASKBENCH_C_API void* taskbench_app_create(int argc, char** argv) {
  try {
    return new taskbench::App(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return nullptr;
  }
}

TASKBENCH_C_API void taskbench_app_destroy(void* app) { delete static_cast<taskbench::App*>(app); }

TASKBENCH_C_API long taskbench_graph_count(const void* app) {
  return static_cast<long>(static_cast<const taskbench::App*>(app)->graphs.size());
}

TASKBENCH_C_API const void* taskbench_graph(const void* app, long index) {
  return &static_cast<const taskbench::App*>(app)->graphs.at(static_cast<std::size_t>(index));
}

TASKBENCH_C_API void taskbench_display(const void* app, const char* system) {
  static_cast<const taskbench::App*>(app)->display(system);
}

/// Checks the final outputs, prints the report and returns the exit status (0, or 1 on failure).
TASKBENCH_C_API int taskbench_report(const void* app, double elapsed_seconds) {
  return static_cast<const taskbench::App*>(app)->report(elapsed_seconds);
}

TASKBENCH_C_API long taskbench_steps(const void* graph) { return graph_of(graph).steps; }
TASKBENCH_C_API long taskbench_width(const void* graph) { return graph_of(graph).width; }
TASKBENCH_C_API long taskbench_fields(const void* graph) { return graph_of(graph).fields; }
TASKBENCH_C_API long taskbench_output_bytes(const void* graph) {
  return static_cast<long>(graph_of(graph).output_bytes);
}
TASKBENCH_C_API long taskbench_offset_at(const void* graph, long step) { return graph_of(graph).offset_at(step); }
TASKBENCH_C_API long taskbench_width_at(const void* graph, long step) { return graph_of(graph).width_at(step); }

/// The address of the output buffer of `point` in generation `field`.
TASKBENCH_C_API void* taskbench_buffer(const void* graph, long field, long point) {
  return graph_of(graph).buffer(field, point);
}

/// The dependencies of every point of `step` (offset_at(step) ... + width_at(step) - 1), packed:
/// `counts[k]` of them for its k-th point, one after the other in `points`, which has room for
/// `capacity`. Returns how many there are in all; when that is more than `capacity`, nothing
/// past it was written and the caller asks again with more room.
TASKBENCH_C_API long taskbench_step_dependencies(const void* graph, long step, long* counts, long* points,
                                                 long capacity) {
  const taskbench::TaskGraph& g = graph_of(graph);
  std::vector<long> deps;
  long total = 0;
  for (long k = 0; k < g.width_at(step); ++k) {
    g.dependencies(step, g.offset_at(step) + k, deps);
    counts[k] = static_cast<long>(deps.size());
    for (long d : deps) {
      if (total < capacity) points[total] = d;
      ++total;
    }
  }
  return total;
}

/// Runs point (step, point) on the graph's own buffers: its output, and as inputs the outputs of
/// step - 1 it depends on. For tasks that were handed exactly those buffers.
TASKBENCH_C_API void taskbench_execute_in_place(const void* graph, long step, long point) {
  graph_of(graph).execute_in_place(step, point);
}

/// Runs point (step, point) on the buffers given: `inputs` in the order of its dependencies. For
/// tasks that run on copies (in another process).
TASKBENCH_C_API void taskbench_execute(const void* graph, long step, long point, void* output,
                                       const void* const* inputs, long input_count) {
  const auto* first = reinterpret_cast<const std::byte* const*>(inputs);
  graph_of(graph).execute(step, point, static_cast<std::byte*>(output),
                          std::span<const std::byte* const>(first, static_cast<std::size_t>(input_count)));
}

/// How many checks failed in this process so far; the messages of the first of them.
TASKBENCH_C_API long taskbench_failure_count() { return taskbench::failure_count(); }

/// Copies failure message `index` (of those kept) into `text` (NUL-terminated, cut to `capacity`);
/// returns its full length, or -1 when no such message was kept.
TASKBENCH_C_API long taskbench_failure_message(long index, char* text, long capacity) {
  const std::vector<std::string> messages = taskbench::failure_messages();
  if (index < 0 || static_cast<std::size_t>(index) >= messages.size()) return -1;
  const std::string& message = messages[static_cast<std::size_t>(index)];
  if (capacity > 0) {
    const std::size_t length = std::min(message.size(), static_cast<std::size_t>(capacity - 1));
    message.copy(text, length);
    text[length] = '\0';
  }
  return static_cast<long>(message.size());
}

/// Records a failure found outside this process (by a task run in a worker process): the report
/// counts it and shows it like those found here.
TASKBENCH_C_API void taskbench_record_failure(const char* message) {
  try {
    taskbench::record_failure(message);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory recording: %s\n", message);
  }
}
