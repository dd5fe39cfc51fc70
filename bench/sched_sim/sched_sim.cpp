// hetflow-bench sched-sim: every scheduler on a tiled Cholesky factorisation, simulated on a
// machine described by a file (bench/sched_sim/*.json; HETFLOW_SIMULATE's engine, virtual
// time), next to lower bounds on any schedule's makespan and an offline plan.
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
#include "default_machine.hpp"
#include "hetflow/hetflow.hpp"
#include "sched_sim/machine.hpp"

namespace hetflow::bench {
namespace {

constexpr std::size_t kTile = 960;

// The Cholesky task graph: each task's kernel, tiles and predecessors, in submission order.
struct GraphTask {
  Kernel kernel = Kernel::potrf;
  std::vector<std::size_t> reads;  // tiles, numbered i + j * tiles
  std::size_t written = 0;
  std::vector<std::size_t> after;  // earlier tasks it depends on
  int priority = 0;
};

// The right-looking algorithm. A task's priority is its upward rank: the longest expected path
// from its start to the end of the graph, each task at its mean cost over the architectures
// (in microseconds), so that the critical path goes first.
std::vector<GraphTask> cholesky_graph(const SchedSimMachine& machine, std::size_t tiles) {
  std::vector<GraphTask> tasks;
  std::vector<std::size_t> last_writer(tiles * tiles, static_cast<std::size_t>(-1));
  const auto at = [tiles](std::size_t i, std::size_t j) { return i + j * tiles; };
  const auto add = [&](Kernel kernel, std::vector<std::size_t> reads, std::size_t written) {
    GraphTask task{kernel, std::move(reads), written, {}, 0};
    for (std::size_t tile : task.reads) {
      if (last_writer[tile] != static_cast<std::size_t>(-1)) task.after.push_back(last_writer[tile]);
    }
    if (last_writer[written] != static_cast<std::size_t>(-1)) task.after.push_back(last_writer[written]);
    last_writer[written] = tasks.size();
    tasks.push_back(std::move(task));
  };
  for (std::size_t k = 0; k < tiles; ++k) {
    add(Kernel::potrf, {}, at(k, k));
    for (std::size_t i = k + 1; i < tiles; ++i) add(Kernel::trsm, {at(k, k)}, at(i, k));
    for (std::size_t i = k + 1; i < tiles; ++i) {
      add(Kernel::syrk, {at(i, k)}, at(i, i));
      for (std::size_t j = k + 1; j < i; ++j) add(Kernel::gemm, {at(i, k), at(j, k)}, at(i, j));
    }
  }
  std::vector<double> rank(tasks.size(), 0);
  for (std::size_t t = tasks.size(); t-- > 0;) {
    const KernelCost& cost = machine.cost(tasks[t].kernel);
    rank[t] += (cost.cpu + cost.cuda) / 2;
    for (std::size_t before : tasks[t].after) rank[before] = std::max(rank[before], rank[t]);
    tasks[t].priority = static_cast<int>(rank[t] * 1e6);
  }
  return tasks;
}

// Tasks counted per kernel, in the order of Kernel.
using KernelCounts = std::array<double, kKernelNames.size()>;

class Bounds {
 public:
  explicit Bounds(const SchedSimMachine& machine) : machine_(machine) {}

  [[nodiscard]] double fastest(const GraphTask& task) const {
    const KernelCost& cost = machine_.cost(task.kernel);
    return machine_.gpus == 0 ? cost.cpu : machine_.cpus == 0 ? cost.cuda : std::min(cost.cpu, cost.cuda);
  }

  // The least time in which all workers can do the counted tasks, each task split at will
  // between the two kinds of workers: the best split gives the GPUs the kernels they speed up
  // most (a fractional knapsack), found by bisection on the time.
  [[nodiscard]] double work_bound(const KernelCounts& counts) const {
    const auto& costs = machine_.costs;
    std::array<std::size_t, kKernelNames.size()> by_gain{};
    std::iota(by_gain.begin(), by_gain.end(), std::size_t{0});
    std::sort(by_gain.begin(), by_gain.end(), [&costs](std::size_t a, std::size_t b) {
      return costs[a].cpu / costs[a].cuda > costs[b].cpu / costs[b].cuda;
    });
    auto feasible = [&](double makespan) {
      double gpu_time = machine_.gpus * makespan;
      double cpu_time = machine_.cpus * makespan;
      for (std::size_t k : by_gain) {
        const double on_gpu = std::min(counts[k], gpu_time / costs[k].cuda);
        gpu_time -= on_gpu * costs[k].cuda;
        cpu_time -= (counts[k] - on_gpu) * costs[k].cpu;
      }
      return cpu_time >= 0;
    };
    double low = 0;
    double high = 0;
    for (std::size_t k = 0; k < counts.size(); ++k) high += counts[k] * std::max(costs[k].cpu, costs[k].cuda);
    for (int round = 0; round < 100; ++round) {
      const double middle = (low + high) / 2;
      (feasible(middle) ? high : low) = middle;
    }
    return high;
  }

 private:
  const SchedSimMachine& machine_;
};

struct LowerBounds {
  // max(critical path, work): the longest chain of tasks each on its fastest architecture, and
  // all the work divided among all workers in the best proportions.
  double simple = 0;
  // A tighter one: a task can start no sooner than the chain before it allows (its head) and
  // must leave time for the chain after it (its tail), so the tasks whose head is at least h and
  // tail at least t all run within [h, makespan - t]: makespan >= h + t + their work bound.
  double windowed = 0;
};

LowerBounds lower_bounds(const SchedSimMachine& machine, const std::vector<GraphTask>& tasks) {
  const Bounds bounds_of(machine);
  std::vector<double> head(tasks.size(), 0);
  std::vector<double> tail(tasks.size(), 0);
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    for (std::size_t before : tasks[t].after) {
      head[t] = std::max(head[t], head[before] + bounds_of.fastest(tasks[before]));
    }
  }
  for (std::size_t t = tasks.size(); t-- > 0;) {
    for (std::size_t before : tasks[t].after) {
      tail[before] = std::max(tail[before], tail[t] + bounds_of.fastest(tasks[t]));
    }
  }
  double critical_path = 0;
  KernelCounts all{};
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    critical_path = std::max(critical_path, head[t] + bounds_of.fastest(tasks[t]) + tail[t]);
    ++all[static_cast<unsigned>(tasks[t].kernel)];
  }
  LowerBounds bounds;
  bounds.simple = std::max(critical_path, bounds_of.work_bound(all));
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
      ++window[static_cast<unsigned>(tasks[t].kernel)];
      const bool last_of_its_tail = i + 1 == by_tail.size() || tail[by_tail[i + 1]] < tail[t];
      if (last_of_its_tail) bounds.windowed = std::max(bounds.windowed, from + tail[t] + bounds_of.work_bound(window));
    }
  }
  return bounds;
}

// A plan made with the whole graph and every cost known in advance, data transfers left out
// (HEFT: tasks by decreasing upward rank, each to the worker that would finish it first): not a
// bound, but what a strong offline list scheduler reaches, to measure the online ones against.
double offline_plan(const SchedSimMachine& machine, const std::vector<GraphTask>& tasks) {
  std::vector<std::size_t> order(tasks.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&tasks](std::size_t a, std::size_t b) { return tasks[a].priority > tasks[b].priority; });
  constexpr double kNever = 1e300;
  std::vector<double> cpu_free(std::max(machine.cpus, 1U), machine.cpus == 0 ? kNever : 0.0);
  std::vector<double> gpu_free(std::max(machine.gpus, 1U), machine.gpus == 0 ? kNever : 0.0);
  std::vector<double> finish(tasks.size(), 0);
  for (std::size_t t : order) {  // by rank is a topological order: a task outranks its successors
    double ready = 0;
    for (std::size_t before : tasks[t].after) ready = std::max(ready, finish[before]);
    const KernelCost& cost = machine.cost(tasks[t].kernel);
    const auto cpu = std::min_element(cpu_free.begin(), cpu_free.end());
    const auto gpu = std::min_element(gpu_free.begin(), gpu_free.end());
    const double on_cpu = std::max(*cpu, ready) + cost.cpu;
    const double on_gpu = std::max(*gpu, ready) + cost.cuda;
    finish[t] = std::min(on_cpu, on_gpu);
    *(on_gpu < on_cpu ? gpu : cpu) = finish[t];
  }
  return *std::max_element(finish.begin(), finish.end());
}

template <typename Element>
double simulate(const std::string& scheduler, const std::string& machine_file, const SchedSimMachine& machine,
                std::size_t tiles) {
  std::array<Codelet, kKernelNames.size()> codelets;
  for (std::size_t k = 0; k < kKernelNames.size(); ++k) {
    codelets[k].name = std::string(kKernelNames[k]);
    codelets[k].cpu = [](TaskContext&) {};  // never run: the machine gives the time
    codelets[k].cuda = [](TaskContext&) {};
  }
  Config config;
  config.scheduler = scheduler;
  config.simulate = machine_file;
  Runtime rt(config);
  // Nothing reads or writes the tiles in a simulation: they all name one buffer.
  static std::vector<Element> shared_tile(kTile * kTile);
  std::vector<DataHandle> handles(tiles * tiles);
  for (std::size_t j = 0; j < tiles; ++j) {
    for (std::size_t i = j; i < tiles; ++i) {
      handles[i + j * tiles] = rt.register_matrix(shared_tile.data(), kTile, kTile, kTile);
    }
  }
  std::vector<Future<void>> tasks;
  for (const GraphTask& task : cholesky_graph(machine, tiles)) {
    std::vector<DataAccess> data;
    for (std::size_t tile : task.reads) data.push_back(R(handles[tile]));
    data.push_back(RW(handles[task.written]));
    tasks.push_back(
        rt.insert(codelets[static_cast<unsigned>(task.kernel)], {.data_list = data, .priority = task.priority}));
  }
  rt.wait_all();
  for (const Future<void>& task : tasks) task.get();  // a failed task would make the makespan meaningless
  const double makespan = rt.elapsed();
  rt.shutdown();
  return makespan;
}

}  // namespace

int run_sched_sim(const SchedSimOptions& options) {
  const bool single = options.precision == "single";
  if (!single && options.precision != "double") throw InvalidArgument("unknown precision '" + options.precision + "'");
  const std::size_t tile_bytes = kTile * kTile * (single ? sizeof(float) : sizeof(double));
  SchedSimMachine machine = options.machine.empty()
                                ? SchedSimMachine::parse(kDefaultMachineJson, kDefaultMachineName, tile_bytes)
                                : SchedSimMachine::load(options.machine, tile_bytes);
  if (options.bandwidth_gbs) machine.bandwidth_gbs = *options.bandwidth_gbs;
  const std::string machine_name = options.machine.empty() ? std::string(kDefaultMachineName)
                                                           : std::filesystem::path(options.machine).filename().string();

  const std::filesystem::path machine_file =
      std::filesystem::temp_directory_path() / ("hetflow-sched-sim-" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream out(machine_file);
    out << machine.to_json();
  }
  std::fprintf(stderr,
               "sched-sim: Cholesky of %zu x %zu tiles of %zu x %zu %ss on %s: %u CPU cores + %u GPUs linked at "
               "%g GB/s\n",
               options.tiles, options.tiles, kTile, kTile, single ? "float" : "double", machine_name.c_str(),
               machine.cpus, machine.gpus, machine.bandwidth_gbs);
  try {
    std::map<std::string, double> makespans;
    for (const char* scheduler : {"eager", "prio", "ws", "random", "dm", "dmda", "dmdas"}) {
      makespans[scheduler] = single ? simulate<float>(scheduler, machine_file.string(), machine, options.tiles)
                                    : simulate<double>(scheduler, machine_file.string(), machine, options.tiles);
      std::printf("%s makespan_s %.6f\n", scheduler, makespans[scheduler]);
      std::fflush(stdout);
    }
    const std::vector<GraphTask> graph = cholesky_graph(machine, options.tiles);
    const LowerBounds bounds = lower_bounds(machine, graph);
    const double bound = bounds.simple;
    const double plan = offline_plan(machine, graph);
    std::printf("lower_bound makespan_s %.6f\n", bound);
    std::printf("offline_plan makespan_s %.6f\n", plan);
    std::fflush(stdout);
    std::fprintf(stderr, "sched-sim: dmdas / lower bound %.2f, eager / dmda %.2f, eager / dmdas %.2f\n",
                 makespans["dmdas"] / bound, makespans["eager"] / makespans["dmda"],
                 makespans["eager"] / makespans["dmdas"]);
    std::fprintf(stderr,
                 "sched-sim: a tighter lower bound (each task within its head and tail chains) %.6f s: no schedule is "
                 "more than %.2f x better than eager\n",
                 bounds.windowed, makespans["eager"] / bounds.windowed);
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
