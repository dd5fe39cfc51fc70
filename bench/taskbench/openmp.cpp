// Task Bench on OpenMP tasks: one thread of a parallel region creates the tasks step by step,
// each with depend(out:) on its own output buffer and depend(in:) on those of the points it
// reads (an OpenMP 5.0 iterator, since the count varies); the region's closing barrier waits for
// them. OMP_NUM_THREADS and the other OMP_* variables apply.
#include <omp.h>

#include <cstdio>
#include <exception>
#include <vector>

#include "core.hpp"

namespace {

int run(int argc, char** argv) {
  taskbench::App app(argc, argv);
  app.display("openmp");

  // Starts the thread team before the timer, as the other runtimes start their workers.
#pragma omp parallel
  {}

  const auto start = taskbench::Clock::now();
#pragma omp parallel
#pragma omp single
  {
    std::vector<long> deps;
    std::vector<std::byte*> reads;
    for (long t = 0; t < app.max_steps(); ++t) {
      for (const taskbench::TaskGraph& g : app.graphs) {
        if (t >= g.steps) continue;
        const taskbench::TaskGraph* graph = &g;
        for (long point = g.offset_at(t); point < g.offset_at(t) + g.width_at(t); ++point) {
          g.dependencies(t, point, deps);
          reads.clear();
          for (long d : deps) reads.push_back(g.output_of(t - 1, d));
          // Used only in the depend clauses, where GCC does not see the use.
          [[maybe_unused]] std::byte* const* in = reads.data();
          const long count = static_cast<long>(reads.size());
          [[maybe_unused]] std::byte* out = g.output_of(t, point);
#pragma omp task firstprivate(graph, t, point) depend(out : out[0]) depend(iterator(k = 0 : count), in : in[k][0])
          graph->execute_in_place(t, point);
        }
      }
    }
  }
  const double elapsed = taskbench::seconds_since(start);
  return app.report(elapsed);
}

}  // namespace

int main(int argc, char** argv) { return taskbench::guarded_main(argc, argv, run); }
