// overhead, TBB side: the workloads of hetflow.cpp that oneTBB has an equivalent for, printed as
// `tbb <workload>_ns_per_task <v>`, the median of REPEAT runs.
//
//   independent  N empty tasks run in one tbb::task_group from the main thread, then wait()
//   chain        N flow-graph continue_nodes in a line, built and then run by one message
//                (TBB has no inferred data dependencies: a graph built ahead of time is its
//                nearest equivalent; the time covers building and running, per node)
//
// Usage: tbb [TASKS [REPEAT]]  (defaults 100000 and 3).
// Build: g++ -O2 -std=c++17 tbb.cpp -o tbb -ltbb
#include <tbb/flow_graph.h>
#include <tbb/task_group.h>
#include <tbb/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using Node = tbb::flow::continue_node<tbb::flow::continue_msg>;

double ns_per_task(Clock::time_point start, Clock::time_point end, long tasks) {
  return std::chrono::duration<double, std::nano>(end - start).count() / static_cast<double>(tasks);
}

double independent(long tasks) {
  const auto start = Clock::now();
  tbb::task_group group;
  for (long i = 0; i < tasks; ++i) group.run([] {});
  group.wait();
  return ns_per_task(start, Clock::now(), tasks);
}

double chain(long tasks) {
  tbb::flow::graph graph;  // declared first: the nodes must go before their graph
  std::vector<std::unique_ptr<Node>> nodes;
  nodes.reserve(static_cast<std::size_t>(tasks));
  const auto start = Clock::now();
  for (long i = 0; i < tasks; ++i) {
    nodes.push_back(std::make_unique<Node>(graph, [](tbb::flow::continue_msg) {}));
    if (i > 0) tbb::flow::make_edge(*nodes[nodes.size() - 2], *nodes.back());
  }
  nodes.front()->try_put(tbb::flow::continue_msg());
  graph.wait_for_all();
  return ns_per_task(start, Clock::now(), tasks);
}

double median(std::vector<double> runs) {
  std::sort(runs.begin(), runs.end());
  const std::size_t middle = runs.size() / 2;
  return runs.size() % 2 == 1 ? runs[middle] : (runs[middle - 1] + runs[middle]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  const long tasks = argc > 1 ? std::atol(argv[1]) : 100000;
  const int repeat = argc > 2 ? std::atoi(argv[2]) : 3;
  if (argc > 3 || tasks < 1 || repeat < 1) {
    std::fprintf(stderr, "usage: %s [TASKS [REPEAT]]  (both at least 1)\n", argv[0]);
    return 2;
  }
  std::fprintf(stderr, "# tbb %d.%d: %d threads; %ld tasks, median of %d runs\n", TBB_VERSION_MAJOR, TBB_VERSION_MINOR,
               tbb::this_task_arena::max_concurrency(), tasks, repeat);

  struct Workload {
    const char* metric;
    double (*run)(long);
  };
  for (const Workload& workload :
       {Workload{"independent_ns_per_task", independent}, Workload{"chain_ns_per_task", chain}}) {
    std::vector<double> runs;
    std::string shown;
    for (int r = 0; r < repeat; ++r) {
      runs.push_back(workload.run(tasks));
      shown += ' ';
      shown += std::to_string(std::lround(runs.back()));
    }
    std::fprintf(stderr, "# %s runs:%s\n", workload.metric, shown.c_str());
    std::printf("tbb %s %.0f\n", workload.metric, median(runs));
    std::fflush(stdout);
  }
  return 0;
}
