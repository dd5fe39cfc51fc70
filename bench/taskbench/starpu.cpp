// Task Bench on StarPU, as its own Task Bench version maps it: one vector handle per point and
// output generation, tasks inserted step by step with starpu_task_insert, the task's own buffer
// STARPU_RW and those it reads STARPU_R (a data-mode array, since the count varies), and
// StarPU's sequential consistency inferring the dependencies. Handles are registered before the
// timer starts. STARPU_NCPU, STARPU_SCHED and the other STARPU_* variables apply.
#include <starpu.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "core.hpp"

namespace {

struct PointTask {
  const taskbench::TaskGraph* graph;
  long step;
  long point;
};

void run_point(void* buffers[], void* cl_arg) {
  PointTask task{};
  starpu_codelet_unpack_args(cl_arg, &task);
  const unsigned count = STARPU_TASK_GET_NBUFFERS(starpu_task_get_current());
  thread_local std::vector<const std::byte*> inputs;
  inputs.clear();
  for (unsigned k = 1; k < count; ++k) {
    inputs.push_back(reinterpret_cast<const std::byte*>(STARPU_VECTOR_GET_PTR(buffers[k])));
  }
  task.graph->execute(task.step, task.point, reinterpret_cast<std::byte*>(STARPU_VECTOR_GET_PTR(buffers[0])), inputs);
}

/// Set field by field, so that a StarPU whose descriptor has more fields still builds without
/// -Wmissing-field-initializers.
starpu_data_descr descriptor(starpu_data_handle_t handle, starpu_data_access_mode mode) {
  starpu_data_descr result{};
  result.handle = handle;
  result.mode = mode;
  return result;
}

/// starpu_init and starpu_shutdown, paired.
class Session {
 public:
  Session() {
    const int status = starpu_init(nullptr);
    if (status != 0) throw std::runtime_error("starpu_init failed: " + std::to_string(status));
  }
  ~Session() { starpu_shutdown(); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

int run(int argc, char** argv) {
  taskbench::App app(argc, argv);
  app.display("starpu");

  const Session session;
  starpu_codelet codelet;
  starpu_codelet_init(&codelet);
  codelet.cpu_funcs[0] = run_point;
  codelet.nbuffers = STARPU_VARIABLE_NBUFFERS;
  codelet.name = "point";

  std::vector<std::vector<starpu_data_handle_t>> handles(app.graphs.size());
  for (const taskbench::TaskGraph& g : app.graphs) {
    auto& mine = handles[static_cast<std::size_t>(g.index)];
    mine.resize(static_cast<std::size_t>(g.fields * g.width));
    for (long field = 0; field < g.fields; ++field) {
      for (long point = 0; point < g.width; ++point) {
        starpu_vector_data_register(&mine[static_cast<std::size_t>(field * g.width + point)], STARPU_MAIN_RAM,
                                    reinterpret_cast<std::uintptr_t>(g.buffer(field, point)),
                                    static_cast<std::uint32_t>(g.output_bytes), 1);
      }
    }
  }

  std::vector<long> deps;
  std::vector<starpu_data_descr> descriptors;
  const auto start = taskbench::Clock::now();
  for (long t = 0; t < app.max_steps(); ++t) {
    for (const taskbench::TaskGraph& g : app.graphs) {
      if (t >= g.steps) continue;
      const auto& mine = handles[static_cast<std::size_t>(g.index)];
      const auto handle = [&](long step, long point) {
        return mine[static_cast<std::size_t>((step % g.fields) * g.width + point)];
      };
      for (long point = g.offset_at(t); point < g.offset_at(t) + g.width_at(t); ++point) {
        g.dependencies(t, point, deps);
        descriptors.clear();
        descriptors.push_back(descriptor(handle(t, point), STARPU_RW));
        for (long d : deps) descriptors.push_back(descriptor(handle(t - 1, d), STARPU_R));
        PointTask task{&g, t, point};
        const int status =
            starpu_task_insert(&codelet, STARPU_DATA_MODE_ARRAY, descriptors.data(),
                               static_cast<int>(descriptors.size()), STARPU_VALUE, &task, sizeof(task), 0);
        if (status != 0) throw std::runtime_error("starpu_task_insert failed: " + std::to_string(status));
      }
    }
  }
  starpu_task_wait_for_all();
  const double elapsed = taskbench::seconds_since(start);

  for (auto& mine : handles) {
    for (starpu_data_handle_t handle : mine) starpu_data_unregister(handle);
  }
  return app.report(elapsed);
}

}  // namespace

int main(int argc, char** argv) { return taskbench::guarded_main(argc, argv, run); }
