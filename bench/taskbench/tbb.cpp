// Task Bench on a oneTBB flow graph: one continue_node per task. TBB infers no dependencies from
// data, so the edges are worked out here, in submission order, from the buffers each task reads
// and writes (read after write, and write after read or write when generations are reused), as
// the other runtimes infer them. A flow graph runs only once built: the timer covers building
// it (the equivalent of submitting) and running it. TBB uses all the CPUs it may run on.
#include <tbb/flow_graph.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <exception>
#include <vector>

#include "core.hpp"

namespace {

using Node = tbb::flow::continue_node<tbb::flow::continue_msg>;

/// Who last wrote a buffer and who read it since; indices into the node list, -1 for none.
struct BufferUse {
  long writer = -1;
  std::vector<long> readers;
};

int run(int argc, char** argv) {
  taskbench::App app(argc, argv);
  app.display("tbb");

  const auto start = taskbench::Clock::now();
  tbb::flow::graph flow;
  std::deque<Node> nodes;
  std::vector<long> roots;
  std::vector<std::vector<BufferUse>> uses(app.graphs.size());
  for (const taskbench::TaskGraph& g : app.graphs) {
    uses[static_cast<std::size_t>(g.index)].resize(static_cast<std::size_t>(g.fields * g.width));
  }

  std::vector<long> deps;
  std::vector<long> before;
  for (long t = 0; t < app.max_steps(); ++t) {
    for (const taskbench::TaskGraph& g : app.graphs) {
      if (t >= g.steps) continue;
      auto& mine = uses[static_cast<std::size_t>(g.index)];
      const auto use = [&](long step, long point) -> BufferUse& {
        return mine[static_cast<std::size_t>((step % g.fields) * g.width + point)];
      };
      const taskbench::TaskGraph* graph = &g;
      for (long point = g.offset_at(t); point < g.offset_at(t) + g.width_at(t); ++point) {
        const long self = static_cast<long>(nodes.size());
        nodes.emplace_back(flow,
                           [graph, t, point](const tbb::flow::continue_msg&) { graph->execute_in_place(t, point); });

        g.dependencies(t, point, deps);
        before.clear();
        for (long d : deps) {
          BufferUse& input = use(t - 1, d);
          if (input.writer >= 0) before.push_back(input.writer);
          input.readers.push_back(self);
        }
        BufferUse& output = use(t, point);
        if (output.readers.empty()) {
          if (output.writer >= 0) before.push_back(output.writer);
        } else {
          before.insert(before.end(), output.readers.begin(), output.readers.end());
        }
        output.writer = self;
        output.readers.clear();

        std::sort(before.begin(), before.end());
        before.erase(std::unique(before.begin(), before.end()), before.end());
        for (long p : before) tbb::flow::make_edge(nodes[static_cast<std::size_t>(p)], nodes.back());
        if (before.empty()) roots.push_back(self);
      }
    }
  }
  for (long root : roots) nodes[static_cast<std::size_t>(root)].try_put(tbb::flow::continue_msg());
  flow.wait_for_all();
  const double elapsed = taskbench::seconds_since(start);
  return app.report(elapsed);
}

}  // namespace

int main(int argc, char** argv) { return taskbench::guarded_main(argc, argv, run); }
