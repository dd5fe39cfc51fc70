// Task Bench on hetflow: one registered buffer per point and output generation; a task writes
// (W) its own buffer and reads (R) those of the points it depends on, and the runtime infers the
// dependencies from those modes. Buffers are registered before the timer starts and the tasks
// are submitted step by step from the main thread. HETFLOW_NCPUS, HETFLOW_SCHED and the other
// HETFLOW_* variables apply.
#include "hetflow/hetflow.hpp"

#include <cstdio>
#include <exception>
#include <vector>

#include "core.hpp"

namespace {

struct PointTask {
  const taskbench::TaskGraph* graph;
  long step;
  long point;
};

void run_point(hetflow::TaskContext& context) {
  const auto& task = context.arg<PointTask>();
  thread_local std::vector<const std::byte*> inputs;
  inputs.clear();
  for (std::size_t k = 1; k < context.buffer_count(); ++k) inputs.push_back(context.buffer(k).as<const std::byte>());
  task.graph->execute(task.step, task.point, context.buffer(0).as<std::byte>(), inputs);
}

int run(int argc, char** argv) {
  taskbench::App app(argc, argv);
  app.display("hetflow");

  hetflow::Runtime runtime;
  const hetflow::Codelet codelet{.name = "point", .cpu = run_point};

  std::vector<std::vector<hetflow::DataHandle>> handles(app.graphs.size());
  for (const taskbench::TaskGraph& g : app.graphs) {
    auto& mine = handles[static_cast<std::size_t>(g.index)];
    mine.reserve(static_cast<std::size_t>(g.fields * g.width));
    for (long field = 0; field < g.fields; ++field) {
      for (long point = 0; point < g.width; ++point) {
        mine.push_back(runtime.register_vector(g.buffer(field, point), g.output_bytes));
      }
    }
  }

  std::vector<long> deps;
  std::vector<hetflow::DataAccess> accesses;
  const auto start = taskbench::Clock::now();
  for (long t = 0; t < app.max_steps(); ++t) {
    for (const taskbench::TaskGraph& g : app.graphs) {
      if (t >= g.steps) continue;
      const auto& mine = handles[static_cast<std::size_t>(g.index)];
      const auto handle = [&](long step, long point) -> const hetflow::DataHandle& {
        return mine[static_cast<std::size_t>((step % g.fields) * g.width + point)];
      };
      for (long point = g.offset_at(t); point < g.offset_at(t) + g.width_at(t); ++point) {
        g.dependencies(t, point, deps);
        accesses.clear();
        accesses.push_back(hetflow::W(handle(t, point)));
        for (long d : deps) accesses.push_back(hetflow::R(handle(t - 1, d)));
        runtime.insert(codelet, {.data_list = accesses}, PointTask{&g, t, point});
      }
    }
  }
  runtime.wait_all();
  const double elapsed = taskbench::seconds_since(start);

  for (const auto& mine : handles) {
    for (const hetflow::DataHandle& handle : mine) runtime.unregister(handle);
  }
  return app.report(elapsed);
}

}  // namespace

int main(int argc, char** argv) { return taskbench::guarded_main(argc, argv, run); }
