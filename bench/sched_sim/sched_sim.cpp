// hetflow-bench sched-sim: every scheduler on a tiled Cholesky factorisation, simulated on a
// machine of 8 CPU cores and 2 GPUs (HETFLOW_SIMULATE's engine, virtual time), next to a lower
// bound on any schedule's makespan.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "bench.hpp"
#include "hetflow/hetflow.hpp"

namespace hetflow::bench {
namespace {

// Seconds per task on a 960 x 960 double tile (7.0 MiB): a core runs DGEMM (2 b^3 flops) at
// 40 GFLOP/s, a GPU ten times faster; SYRK and TRSM (b^3) gain 6x and 4x on a GPU, and a tile's
// POTRF (b^3 / 3), too small to fill a GPU, runs at 30 GFLOP/s on a core and half that on a GPU.
struct KernelCost {
  const char* name;
  double cpu;
  double cuda;
};
constexpr KernelCost kCosts[] = {
    {"potrf", 9.83e-3, 19.66e-3},
    {"trsm", 22.12e-3, 5.53e-3},
    {"syrk", 22.12e-3, 3.69e-3},
    {"gemm", 44.24e-3, 4.424e-3},
};
constexpr unsigned kCpus = 8;
constexpr unsigned kGpus = 2;
constexpr std::size_t kTile = 960;
constexpr double kLatencyUs = 10.0;

std::string machine_json(std::size_t bandwidth_gbs) {
  std::string json = "{\n  \"cpus\": " + std::to_string(kCpus) + ",\n  \"gpus\": " + std::to_string(kGpus) +
                     ",\n  \"link\": {\"bandwidth_gbs\": " + std::to_string(bandwidth_gbs) +
                     ", \"latency_us\": " + std::to_string(kLatencyUs) + "},\n  \"codelets\": {\n";
  for (std::size_t i = 0; i < std::size(kCosts); ++i) {
    json += "    \"" + std::string(kCosts[i].name) + "\": {\"cpu\": " + std::to_string(kCosts[i].cpu) +
            ", \"cuda\": " + std::to_string(kCosts[i].cuda) + "}" + (i + 1 < std::size(kCosts) ? ",\n" : "\n");
  }
  return json + "  }\n}\n";
}

const KernelCost& cost_of(const std::string& name) {
  for (const KernelCost& cost : kCosts) {
    if (name == cost.name) return cost;
  }
  throw Error("sched-sim: no cost for " + name);
}

// The Cholesky task graph: each task's kernel, tiles and predecessors, in submission order.
struct GraphTask {
  std::string kernel;
  std::vector<std::size_t> reads;  // tiles, numbered i + j * tiles
  std::size_t written = 0;
  std::vector<std::size_t> after;  // earlier tasks it depends on
  int priority = 0;
};

// The right-looking algorithm. A task's priority is its upward rank: the longest expected path
// from its start to the end of the graph, each task at its mean cost over the architectures
// (in microseconds), so that the critical path goes first.
std::vector<GraphTask> cholesky_graph(std::size_t tiles) {
  std::vector<GraphTask> tasks;
  std::vector<std::size_t> last_writer(tiles * tiles, static_cast<std::size_t>(-1));
  const auto at = [tiles](std::size_t i, std::size_t j) { return i + j * tiles; };
  const auto add = [&](const char* kernel, std::vector<std::size_t> reads, std::size_t written) {
    GraphTask task{kernel, std::move(reads), written, {}, 0};
    for (std::size_t tile : task.reads) {
      if (last_writer[tile] != static_cast<std::size_t>(-1)) task.after.push_back(last_writer[tile]);
    }
    if (last_writer[written] != static_cast<std::size_t>(-1)) task.after.push_back(last_writer[written]);
    last_writer[written] = tasks.size();
    tasks.push_back(std::move(task));
  };
  for (std::size_t k = 0; k < tiles; ++k) {
    add("potrf", {}, at(k, k));
    for (std::size_t i = k + 1; i < tiles; ++i) add("trsm", {at(k, k)}, at(i, k));
    for (std::size_t i = k + 1; i < tiles; ++i) {
      add("syrk", {at(i, k)}, at(i, i));
      for (std::size_t j = k + 1; j < i; ++j) add("gemm", {at(i, k), at(j, k)}, at(i, j));
    }
  }
  std::vector<double> rank(tasks.size(), 0);
  for (std::size_t t = tasks.size(); t-- > 0;) {
    const KernelCost& cost = cost_of(tasks[t].kernel);
    rank[t] += (cost.cpu + cost.cuda) / 2;
    for (std::size_t before : tasks[t].after) rank[before] = std::max(rank[before], rank[t]);
    tasks[t].priority = static_cast<int>(rank[t] * 1e6);
  }
  return tasks;
}

double fastest(const GraphTask& task) {
  const KernelCost& cost = cost_of(task.kernel);
  return std::min(cost.cpu, cost.cuda);
}

std::size_t kernel_index(const std::string& name) { return static_cast<std::size_t>(&cost_of(name) - kCosts); }

// Tasks counted per kernel, in the order of kCosts.
using KernelCounts = std::array<double, std::size(kCosts)>;

// The least time in which all workers can do the counted tasks, each task split at will between
// the two kinds of workers: the best split gives the GPUs the kernels they speed up most (a
// fractional knapsack), found by bisection on the time.
double work_bound(const KernelCounts& counts) {
  std::array<std::size_t, std::size(kCosts)> by_gain{};
  std::iota(by_gain.begin(), by_gain.end(), std::size_t{0});
  std::sort(by_gain.begin(), by_gain.end(), [](std::size_t a, std::size_t b) {
    return kCosts[a].cpu / kCosts[a].cuda > kCosts[b].cpu / kCosts[b].cuda;
  });
  auto feasible = [&](double makespan) {
    double gpu_time = kGpus * makespan;
    double cpu_time = kCpus * makespan;
    for (std::size_t k : by_gain) {
      const double on_gpu = std::min(counts[k], gpu_time / kCosts[k].cuda);
      gpu_time -= on_gpu * kCosts[k].cuda;
      cpu_time -= (counts[k] - on_gpu) * kCosts[k].cpu;
    }
    return cpu_time >= 0;
  };
  double low = 0;
  double high = 0;
  for (std::size_t k = 0; k < counts.size(); ++k) high += counts[k] * kCosts[k].cpu;
  for (int round = 0; round < 100; ++round) {
    const double middle = (low + high) / 2;
    (feasible(middle) ? high : low) = middle;
  }
  return high;
}

struct Bounds {
  // max(critical path, work): the longest chain of tasks each on its fastest architecture, and
  // all the work divided among all workers in the best proportions.
  double simple = 0;
  // A tighter one: a task can start no sooner than the chain before it allows (its head) and
  // must leave time for the chain after it (its tail), so the tasks whose head is at least h and
  // tail at least t all run within [h, makespan - t]: makespan >= h + t + their work bound.
  double windowed = 0;
};

Bounds lower_bounds(const std::vector<GraphTask>& tasks) {
  std::vector<double> head(tasks.size(), 0);
  std::vector<double> tail(tasks.size(), 0);
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    for (std::size_t before : tasks[t].after) head[t] = std::max(head[t], head[before] + fastest(tasks[before]));
  }
  for (std::size_t t = tasks.size(); t-- > 0;) {
    for (std::size_t before : tasks[t].after) tail[before] = std::max(tail[before], tail[t] + fastest(tasks[t]));
  }
  double critical_path = 0;
  KernelCounts all{};
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    critical_path = std::max(critical_path, head[t] + fastest(tasks[t]) + tail[t]);
    ++all[kernel_index(tasks[t].kernel)];
  }
  Bounds bounds;
  bounds.simple = std::max(critical_path, work_bound(all));
  bounds.windowed = bounds.simple;
  // For each head h, the tasks from h on, by decreasing tail: a window grows by one task at a
  // time as the tail t it asks for shrinks.
  std::vector<double> heads = head;
  std::sort(heads.begin(), heads.end());
  heads.erase(std::unique(heads.begin(), heads.end()), heads.end());
  std::vector<std::size_t> by_tail(tasks.size());
  std::iota(by_tail.begin(), by_tail.end(), std::size_t{0});
  std::sort(by_tail.begin(), by_tail.end(), [&tail](std::size_t a, std::size_t b) { return tail[a] > tail[b]; });
  for (double from : heads) {
    KernelCounts window{};
    for (std::size_t i = 0; i < by_tail.size(); ++i) {
      const std::size_t t = by_tail[i];
      if (head[t] < from) continue;
      ++window[kernel_index(tasks[t].kernel)];
      const bool last_of_its_tail = i + 1 == by_tail.size() || tail[by_tail[i + 1]] < tail[t];
      if (last_of_its_tail) bounds.windowed = std::max(bounds.windowed, from + tail[t] + work_bound(window));
    }
  }
  return bounds;
}

// A plan made with the whole graph and every cost known in advance, data transfers left out
// (HEFT: tasks by decreasing upward rank, each to the worker that would finish it first): not a
// bound, but what a strong offline list scheduler reaches, to measure the online ones against.
double offline_plan(const std::vector<GraphTask>& tasks) {
  std::vector<std::size_t> order(tasks.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&tasks](std::size_t a, std::size_t b) { return tasks[a].priority > tasks[b].priority; });
  std::vector<double> cpu_free(kCpus, 0);
  std::vector<double> gpu_free(kGpus, 0);
  std::vector<double> finish(tasks.size(), 0);
  for (std::size_t t : order) {  // by rank is a topological order: a task outranks its successors
    double ready = 0;
    for (std::size_t before : tasks[t].after) ready = std::max(ready, finish[before]);
    const KernelCost& cost = cost_of(tasks[t].kernel);
    const auto cpu = std::min_element(cpu_free.begin(), cpu_free.end());
    const auto gpu = std::min_element(gpu_free.begin(), gpu_free.end());
    const double on_cpu = std::max(*cpu, ready) + cost.cpu;
    const double on_gpu = std::max(*gpu, ready) + cost.cuda;
    finish[t] = std::min(on_cpu, on_gpu);
    *(on_gpu < on_cpu ? gpu : cpu) = finish[t];
  }
  return *std::max_element(finish.begin(), finish.end());
}

double simulate(const std::string& scheduler, const std::string& machine_file, std::size_t tiles) {
  std::map<std::string, Codelet> codelets;
  for (const KernelCost& cost : kCosts) {
    Codelet codelet;
    codelet.name = cost.name;
    codelet.cpu = [](TaskContext&) {};  // never run: the machine gives the time
    codelet.cuda = [](TaskContext&) {};
    codelets[cost.name] = codelet;
  }
  Config config;
  config.scheduler = scheduler;
  config.simulate = machine_file;
  Runtime rt(config);
  // Nothing reads or writes the tiles in a simulation: they all name one buffer.
  static std::vector<double> shared_tile(kTile * kTile);
  std::vector<DataHandle> handles(tiles * tiles);
  for (std::size_t j = 0; j < tiles; ++j) {
    for (std::size_t i = j; i < tiles; ++i) {
      handles[i + j * tiles] = rt.register_matrix(shared_tile.data(), kTile, kTile, kTile);
    }
  }
  std::vector<Future<void>> tasks;
  for (const GraphTask& task : cholesky_graph(tiles)) {
    std::vector<DataAccess> data;
    for (std::size_t tile : task.reads) data.push_back(R(handles[tile]));
    data.push_back(RW(handles[task.written]));
    tasks.push_back(rt.insert(codelets.at(task.kernel), {.data_list = data, .priority = task.priority}));
  }
  rt.wait_all();
  for (const Future<void>& task : tasks) task.get();  // a failed task would make the makespan meaningless
  const double makespan = rt.elapsed();
  rt.shutdown();
  return makespan;
}

}  // namespace

int run_sched_sim(const SchedSimOptions& options) {
  const std::filesystem::path machine_file =
      std::filesystem::temp_directory_path() / ("hetflow-sched-sim-" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream out(machine_file);
    out << machine_json(options.bandwidth_gbs);
  }
  std::fprintf(stderr,
               "sched-sim: Cholesky of %zu x %zu tiles of %zu doubles on %u CPU cores + %u GPUs linked at %zu GB/s\n",
               options.tiles, options.tiles, kTile, kCpus, kGpus, options.bandwidth_gbs);
  try {
    std::map<std::string, double> makespans;
    for (const char* scheduler : {"eager", "prio", "ws", "random", "dm", "dmda", "dmdas"}) {
      makespans[scheduler] = simulate(scheduler, machine_file.string(), options.tiles);
      std::printf("%s makespan_s %.6f\n", scheduler, makespans[scheduler]);
      std::fflush(stdout);
    }
    const std::vector<GraphTask> graph = cholesky_graph(options.tiles);
    const Bounds bounds = lower_bounds(graph);
    const double bound = bounds.simple;
    std::printf("lower_bound makespan_s %.6f\n", bound);
    std::fflush(stdout);
    std::fprintf(stderr, "sched-sim: dmdas / lower bound %.2f, eager / dmda %.2f, eager / dmdas %.2f\n",
                 makespans["dmdas"] / bound, makespans["eager"] / makespans["dmda"],
                 makespans["eager"] / makespans["dmdas"]);
    std::fprintf(stderr,
                 "sched-sim: a tighter lower bound (each task within its head and tail chains) %.6f s: no schedule is "
                 "more than %.2f x better than eager\n",
                 bounds.windowed, makespans["eager"] / bounds.windowed);
    const double plan = offline_plan(graph);
    std::fprintf(stderr, "sched-sim: offline HEFT plan without transfers %.6f s, dmdas / that plan %.2f\n", plan,
                 makespans["dmdas"] / plan);
  } catch (...) {
    std::filesystem::remove(machine_file);
    throw;
  }
  std::filesystem::remove(machine_file);
  return 0;
}

}  // namespace hetflow::bench
