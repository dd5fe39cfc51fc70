// Checks the checks: runs a graph serially through the core, once in a correct order (which must
// pass) and once with each step's tasks run before the step they depend on (which must fail with
// a clear message). Takes the same flags as the runtimes' programs; prints one line per case and
// exits non-zero when a case does not turn out as expected.
#include <cstdio>
#include <exception>

#include "core.hpp"

namespace {

void run_in_order(const taskbench::App& app) {
  for (long t = 0; t < app.max_steps(); ++t) {
    for (const taskbench::TaskGraph& g : app.graphs) {
      if (t >= g.steps) continue;
      for (long p = g.offset_at(t); p < g.offset_at(t) + g.width_at(t); ++p) g.execute_in_place(t, p);
    }
  }
}

/// Runs the last step first: its tasks read buffers that no task has written yet.
void run_last_step_first(const taskbench::App& app) {
  for (const taskbench::TaskGraph& g : app.graphs) {
    const long last = g.steps - 1;
    for (long p = g.offset_at(last); p < g.offset_at(last) + g.width_at(last); ++p) g.execute_in_place(last, p);
    for (long t = 0; t < last; ++t) {
      for (long p = g.offset_at(t); p < g.offset_at(t) + g.width_at(t); ++p) g.execute_in_place(t, p);
    }
  }
}

int run(int argc, char** argv, bool wrong_order) {
  const taskbench::App app(argc, argv);
  app.display("core, serial");
  if (wrong_order) {
    run_last_step_first(app);
  } else {
    run_in_order(app);
  }
  return app.report(1.0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    // The failures are process-wide, so each case runs in its own process: the first argument
    // says which.
    if (argc < 2) {
      std::fprintf(stderr, "usage: %s in-order|last-step-first [TASK BENCH FLAGS]\n", argv[0]);
      return 2;
    }
    const std::string_view mode = argv[1];
    argv[1] = argv[0];
    if (mode == "in-order") return run(argc - 1, argv + 1, false);
    if (mode == "last-step-first") return run(argc - 1, argv + 1, true);
    std::fprintf(stderr, "unknown case '%s'\n", argv[1]);
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}
