// hetflow-bench sched-sim: every scheduler on a tiled Cholesky factorisation, simulated on a
// machine described by a file (bench/sched_sim/*.json; HETFLOW_SIMULATE's engine, virtual
// time), next to lower bounds on any schedule's makespan and an offline plan; with --nodes, the
// distributed factorisation of examples/cpp/mpi_cholesky.cpp on copies of the machine joined by
// a network, next to a lower bound.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

#include "bench.hpp"
#include "default_machine.hpp"
#include "hetflow/ext/scheduler.hpp"
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
  }
  // A priority is an int: the rank in microseconds, or in coarser units where the longest rank
  // would not fit in one (a task may cost up to 1e9 s), so that a task never ranks below a
  // successor (the offline plan takes the tasks by priority as a topological order).
  const double longest = *std::max_element(rank.begin(), rank.end());
  const double per_second = std::min(1e6, 2e9 / longest);
  for (std::size_t t = 0; t < tasks.size(); ++t) tasks[t].priority = static_cast<int>(rank[t] * per_second);
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

// A tile's handle. Nothing reads or writes the tiles in a simulation: they all name one buffer,
// registered as overlapping data (register_data refuses a buffer another handle holds).
template <typename Element>
DataHandle register_shared_tile(Runtime& rt) {
  static std::vector<Element> shared_tile(kTile * kTile);
  return rt.register_overlapping_data(shared_tile.data(), DataLayout::matrix(kTile, kTile, kTile, sizeof(Element)));
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
  std::vector<DataHandle> handles(tiles * tiles);
  for (std::size_t j = 0; j < tiles; ++j) {
    for (std::size_t i = j; i < tiles; ++i) {
      handles[i + j * tiles] = register_shared_tile<Element>(rt);
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

// ---- Several nodes: the distributed Cholesky of examples/cpp/mpi_cholesky.cpp ----

// P x Q nodes, P * Q = nodes, as square as can be with P >= Q: mpi_cholesky's grid of ranks,
// on which tile (i, j) belongs to node (i % P) * Q + (j % Q).
struct NodeGrid {
  unsigned rows = 1;
  unsigned cols = 1;

  explicit NodeGrid(unsigned nodes) {
    cols = static_cast<unsigned>(std::sqrt(static_cast<double>(nodes)));
    while (cols > 1 && nodes % cols != 0) --cols;
    cols = std::max(cols, 1U);
    rows = nodes / cols;
  }
  [[nodiscard]] unsigned owner(std::size_t tile, std::size_t tiles) const {
    const std::size_t i = tile % tiles;
    const std::size_t j = tile / tiles;
    return static_cast<unsigned>(i % rows) * cols + static_cast<unsigned>(j % cols);
  }
};

constexpr std::size_t kNone = static_cast<std::size_t>(-1);

// A tile's trip to a node that reads it: one per version of the tile (each write makes a new
// one) and reading node, as hetflow::mpi sends a tile once and the copy serves until the owner
// writes the tile again.
struct Transfer {
  std::size_t tile = 0;
  std::size_t producer = kNone;  // the task that wrote this version; kNone: the initial one
  unsigned from = 0;
  unsigned to = 0;
};

// Owner-computes: each task on the node that owns the tile it writes.
struct Distribution {
  std::vector<unsigned> node;  // per task
  // Per task, per tile it reads (in the order of GraphTask::reads): the transfer whose copy it
  // reads, or kNone for a tile of its own node.
  std::vector<std::vector<std::size_t>> copies;
  std::vector<Transfer> transfers;
  std::vector<std::size_t> sends_by_node;
};

Distribution distribute(const std::vector<GraphTask>& tasks, std::size_t tiles, const NodeGrid& grid, unsigned nodes) {
  Distribution plan;
  plan.sends_by_node.assign(nodes, 0);
  std::vector<std::size_t> last_writer(tiles * tiles, kNone);
  std::map<std::tuple<std::size_t, std::size_t, unsigned>, std::size_t> sent;  // (tile, version, node)
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    const unsigned node = grid.owner(tasks[t].written, tiles);
    plan.node.push_back(node);
    std::vector<std::size_t> copies;
    for (std::size_t tile : tasks[t].reads) {
      const unsigned owner = grid.owner(tile, tiles);
      if (owner == node) {
        copies.push_back(kNone);
        continue;
      }
      const auto [at, added] = sent.try_emplace({tile, last_writer[tile], node}, plan.transfers.size());
      if (added) {
        plan.transfers.push_back({tile, last_writer[tile], owner, node});
        ++plan.sends_by_node[owner];
      }
      copies.push_back(at->second);
    }
    plan.copies.push_back(std::move(copies));
    last_writer[tasks[t].written] = t;
  }
  return plan;
}

// Floating-point operations of a task on b x b tiles (LAPACK's counts, leading terms).
double flops(Kernel kernel) {
  const double b = kTile;
  switch (kernel) {
    case Kernel::potrf: return b * b * b / 3;
    case Kernel::trsm: return b * b * b;
    case Kernel::syrk: return b * b * b;
    case Kernel::gemm: return 2 * b * b * b;
  }
  return 0;
}

struct ClusterBounds {
  // The longest chain of tasks each on its fastest architecture, with a tile's trip over the
  // network (latency + bytes / bandwidth) on each edge between tasks of different nodes.
  double critical_path = 0;
  // The busiest node's own tasks divided among its workers in the best proportions.
  double node_work = 0;
  // The busiest network card's sends one after the other, from the earliest a first one can start.
  double node_sends = 0;
  [[nodiscard]] double bound() const { return std::max({critical_path, node_work, node_sends}); }
};

ClusterBounds cluster_bounds(const SchedSimMachine& machine, const std::vector<GraphTask>& tasks,
                             const Distribution& plan, unsigned nodes, double send_seconds) {
  const Bounds bounds_of(machine);
  const auto edge = [&](std::size_t before, std::size_t after) {
    return plan.node[before] == plan.node[after] ? 0.0 : send_seconds;
  };
  std::vector<double> head(tasks.size(), 0);
  std::vector<double> tail(tasks.size(), 0);
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    for (std::size_t before : tasks[t].after) {
      head[t] = std::max(head[t], head[before] + bounds_of.fastest(tasks[before]) + edge(before, t));
    }
  }
  for (std::size_t t = tasks.size(); t-- > 0;) {
    for (std::size_t before : tasks[t].after) {
      tail[before] = std::max(tail[before], edge(before, t) + bounds_of.fastest(tasks[t]) + tail[t]);
    }
  }
  ClusterBounds bounds;
  std::vector<KernelCounts> counts(nodes, KernelCounts{});
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    bounds.critical_path = std::max(bounds.critical_path, head[t] + bounds_of.fastest(tasks[t]) + tail[t]);
    ++counts[plan.node[t]][static_cast<unsigned>(tasks[t].kernel)];
  }
  for (const KernelCounts& node_counts : counts)
    bounds.node_work = std::max(bounds.node_work, bounds_of.work_bound(node_counts));
  std::vector<double> first_send(nodes, std::numeric_limits<double>::infinity());
  for (const Transfer& transfer : plan.transfers) {
    const double ready =
        transfer.producer == kNone ? 0.0 : head[transfer.producer] + bounds_of.fastest(tasks[transfer.producer]);
    first_send[transfer.from] = std::min(first_send[transfer.from], ready);
  }
  for (unsigned node = 0; node < nodes; ++node) {
    if (plan.sends_by_node[node] == 0) continue;
    bounds.node_sends =
        std::max(bounds.node_sends, first_send[node] + static_cast<double>(plan.sends_by_node[node]) * send_seconds);
  }
  return bounds;
}

// Which node each task belongs to, by submission number (SchedTask::sequence): filled as the
// tasks are submitted, read as they become ready.
struct ClusterLayout {
  unsigned nodes = 1;
  unsigned cpus = 0;  // per node
  unsigned gpus = 0;
  std::vector<std::size_t> node_of_task;  // kNone: a send, pinned to a network card
  bool misrouted = false;                 // a task reached the scheduler that the layout does not place
};

// A scheduler's view of one node: its memory nodes numbered from 0 (host) as on a single
// machine, mapped to the whole simulated cluster's.
class NodeContext final : public ext::SchedulerContext {
 public:
  explicit NodeContext(ext::SchedulerContext& cluster) : cluster_(cluster) {}

  std::vector<unsigned> memory_nodes{0};  // local number -> the cluster's

  [[nodiscard]] double now() const noexcept override { return cluster_.now(); }
  [[nodiscard]] bool has_model(const ext::SchedTask& task) const override { return cluster_.has_model(task); }
  [[nodiscard]] std::optional<double> expected_duration(const ext::SchedTask& task, Arch arch) const override {
    return cluster_.expected_duration(task, arch);
  }
  [[nodiscard]] double expected_transfer(const ext::SchedTask& task, unsigned node) const override {
    return cluster_.expected_transfer(task, memory_nodes.at(node));
  }
  void prefetch(const ext::SchedTask& task, unsigned node) override { cluster_.prefetch(task, memory_nodes.at(node)); }
  void wake(Arch arch) override { cluster_.wake(arch); }

 private:
  ext::SchedulerContext& cluster_;
};

// Owner-computes on a cluster: one scheduler of the chosen kind per node, which sees that node's
// CPU cores and GPUs alone (numbered as on a single machine) and places that node's tasks. The
// network cards take no part: their sends are pinned to them.
class PerNodeScheduler final : public ext::Scheduler {
 public:
  PerNodeScheduler(const std::string& kind, std::shared_ptr<ClusterLayout> layout) : layout_(std::move(layout)) {
    for (unsigned node = 0; node < layout_->nodes; ++node) nodes_.push_back({ext::make_scheduler(kind), nullptr, {}});
  }

  void init(std::span<const ext::WorkerInfo> workers, ext::SchedulerContext& context) override {
    unsigned cpus = 0;
    unsigned gpus = 0;
    for (const ext::WorkerInfo& worker : workers) {
      std::size_t node = kNone;
      if (worker.arch == Arch::cpu && layout_->cpus > 0) node = cpus++ / layout_->cpus;
      if (worker.arch == Arch::cuda && layout_->gpus > 0) node = gpus++ / layout_->gpus;
      if (node_of_worker_.size() <= worker.id) {
        node_of_worker_.resize(worker.id + 1, kNone);
        local_id_.resize(worker.id + 1, 0);
      }
      if (node == kNone || node >= nodes_.size()) continue;  // a network card
      Node& own = nodes_[node];
      if (!own.context) own.context = std::make_unique<NodeContext>(context);
      ext::WorkerInfo local = worker;
      local.id = static_cast<unsigned>(own.workers.size());
      if (worker.arch != Arch::cpu) {
        local.memory_node = static_cast<unsigned>(own.context->memory_nodes.size());
        own.context->memory_nodes.push_back(worker.memory_node);
      }
      own.workers.push_back(local);
      node_of_worker_[worker.id] = node;
      local_id_[worker.id] = local.id;
    }
    for (Node& node : nodes_) {
      if (!node.context) node.context = std::make_unique<NodeContext>(context);
      node.scheduler->init(node.workers, *node.context);
    }
  }

  void push(ext::SchedTask* task, int from_worker) override {
    std::size_t node = task->sequence < layout_->node_of_task.size() ? layout_->node_of_task[task->sequence] : kNone;
    if (node == kNone) {
      layout_->misrouted = true;
      node = 0;
    }
    int local_from = ext::kExternalThread;
    if (from_worker >= 0 && static_cast<std::size_t>(from_worker) < node_of_worker_.size() &&
        node_of_worker_[static_cast<std::size_t>(from_worker)] == node) {
      local_from = static_cast<int>(local_id_[static_cast<std::size_t>(from_worker)]);
    }
    nodes_[node].scheduler->push(task, local_from);
  }

  ext::SchedTask* pop(unsigned worker) override {
    const std::size_t node = worker < node_of_worker_.size() ? node_of_worker_[worker] : kNone;
    return node == kNone ? nullptr : nodes_[node].scheduler->pop(local_id_[worker]);
  }

  ext::SchedTask* pop_ahead(unsigned worker) override {
    const std::size_t node = worker < node_of_worker_.size() ? node_of_worker_[worker] : kNone;
    return node == kNone ? nullptr : nodes_[node].scheduler->pop_ahead(local_id_[worker]);
  }

 private:
  struct Node {
    std::unique_ptr<ext::Scheduler> scheduler;
    std::unique_ptr<NodeContext> context;
    std::vector<ext::WorkerInfo> workers;
  };
  std::shared_ptr<ClusterLayout> layout_;
  std::vector<Node> nodes_;
  std::vector<std::size_t> node_of_worker_;  // by worker id; kNone: a network card
  std::vector<unsigned> local_id_;
};

// The distributed factorisation simulated on `nodes` copies of the machine: each node's tasks
// placed by `scheduler` among its own workers, and each transfer a "send" task pinned to the
// sending node's network card that reads the tile there (after the tile's writer, bringing it
// from a GPU to host memory first) and takes the network's time; the tasks that read the copy
// wait for that send and read a handle of their own node, registered in host memory.
template <typename Element>
double simulate_cluster(const std::string& scheduler, const std::string& machine_file, const SchedSimMachine& machine,
                        std::size_t tiles, unsigned nodes, const std::vector<GraphTask>& graph,
                        const Distribution& plan) {
  auto layout = std::make_shared<ClusterLayout>();
  layout->nodes = nodes;
  layout->cpus = machine.cpus;
  layout->gpus = machine.gpus;
  const std::string per_node = "per-node-" + scheduler;
  ext::register_scheduler(per_node, "sched-sim: " + scheduler + " within each simulated node",
                          [scheduler, layout] { return std::make_unique<PerNodeScheduler>(scheduler, layout); });

  std::array<Codelet, kKernelNames.size()> codelets;
  for (std::size_t k = 0; k < kKernelNames.size(); ++k) {
    codelets[k].name = std::string(kKernelNames[k]);
    codelets[k].cpu = [](TaskContext&) {};  // never run: the machine gives the time
    codelets[k].cuda = [](TaskContext&) {};
  }
  Codelet send;
  send.name = std::string(kSendName);
  send.opencl = [](TaskContext&) {};

  Config config;
  config.scheduler = per_node;
  config.simulate = machine_file;
  Runtime rt(config);
  std::vector<int> card;  // by node: its network card, the node-th OpenCL worker
  for (const ext::WorkerInfo& worker : rt.workers()) {
    if (worker.arch == Arch::opencl) card.push_back(static_cast<int>(worker.id));
  }
  if (card.size() != nodes) throw Error("sched-sim: the simulated cluster lacks a network card per node");

  std::vector<DataHandle> handles(tiles * tiles);
  for (std::size_t j = 0; j < tiles; ++j) {
    for (std::size_t i = j; i < tiles; ++i) {
      handles[i + j * tiles] = register_shared_tile<Element>(rt);
    }
  }
  std::vector<DataHandle> copies(plan.transfers.size());
  for (DataHandle& copy : copies) copy = register_shared_tile<Element>(rt);

  std::vector<Future<void>> sends(plan.transfers.size());
  std::vector<Future<void>> tasks;
  for (std::size_t t = 0; t < graph.size(); ++t) {
    const GraphTask& task = graph[t];
    std::vector<DataAccess> data;
    std::vector<FutureBase> after;
    for (std::size_t r = 0; r < task.reads.size(); ++r) {
      const std::size_t copy = plan.copies[t][r];
      if (copy == kNone) {
        data.push_back(R(handles[task.reads[r]]));
        continue;
      }
      const Transfer& transfer = plan.transfers[copy];
      if (!sends[copy].valid()) {
        layout->node_of_task.push_back(kNone);
        sends[copy] = rt.insert(send, {.data = {R(handles[transfer.tile])}, .worker = card[transfer.from]});
      }
      data.push_back(R(copies[copy]));
      after.emplace_back(sends[copy]);
    }
    data.push_back(RW(handles[task.written]));
    layout->node_of_task.push_back(plan.node[t]);
    tasks.push_back(rt.insert(codelets[static_cast<unsigned>(task.kernel)],
                              {.data_list = data, .after = std::move(after), .priority = task.priority}));
  }
  rt.wait_all();
  for (const Future<void>& task : tasks) task.get();
  for (const Future<void>& transfer : sends) transfer.get();
  const double makespan = rt.elapsed();
  rt.shutdown();
  if (layout->misrouted) throw Error("sched-sim: a task reached the per-node scheduler without a node");
  return makespan;
}

// The machine description sched-sim gives the simulator (the user's, with its flags applied),
// which reads machine descriptions from files. An anonymous file in memory (memfd), reached
// through /proc/self/fd: no path in a shared directory, where another user could plant a link
// to a file of theirs or of ours to overwrite, and nothing left behind however the process
// ends, killed included.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& text) : fd_(::memfd_create("hetflow-sched-sim machine", MFD_CLOEXEC)) {
    if (fd_ < 0) throw Error(cannot_make(errno));
    for (std::size_t written = 0; written < text.size();) {
      const ssize_t wrote = ::write(fd_, text.data() + written, text.size() - written);
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote <= 0) {
        const int error = wrote < 0 ? errno : EIO;
        ::close(fd_);
        throw Error(cannot_make(error));
      }
      written += static_cast<std::size_t>(wrote);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  ~ScratchFile() { ::close(fd_); }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  static std::string cannot_make(int error) {
    return std::string("cannot make the machine description for the simulator: ") + std::strerror(error);
  }
  int fd_;
  std::string path_;
};

// What the simulator is given, named after what the user gave.
std::string simulated_machine_name(const std::string& machine_name) {
  return "machine " + machine_name + " (with sched-sim's flags applied)";
}

// Rethrows the exception being handled, the scratch file's path in its text replaced by what the
// user gave: the simulator names the file it read, which the user never wrote.
[[noreturn]] void rethrow_naming_the_machine(const ScratchFile& scratch, const std::string& machine_name) {
  try {
    throw;
  } catch (const std::exception& error) {
    std::string text = error.what();
    const std::string path = scratch.path();
    const std::string named = simulated_machine_name(machine_name);
    for (auto at = text.find(path); at != std::string::npos; at = text.find(path, at + named.size())) {
      text.replace(at, path.size(), named);
    }
    throw Error(text);
  }
}

int run_cluster(const SchedSimOptions& options, const SchedSimMachine& machine, const std::string& machine_name,
                bool single, std::size_t tile_bytes) {
  const unsigned nodes = *options.nodes;
  constexpr unsigned kMaxWorkers = 4096;  // the simulator's limit
  const std::size_t workers = static_cast<std::size_t>(machine.cpus + machine.gpus + 1) * nodes;
  if (workers > kMaxWorkers) {
    throw InvalidArgument("--nodes: " + std::to_string(nodes) + " nodes of " + machine_name + " make " +
                          std::to_string(workers) + " workers with their network cards, more than the simulator's " +
                          std::to_string(kMaxWorkers));
  }
  const double send_seconds =
      options.network_latency_us * 1e-6 + static_cast<double>(tile_bytes) * 8 / (options.network_gbps * 1e9);
  const ScratchFile machine_file(machine.cluster_json(simulated_machine_name(machine_name), nodes, send_seconds));
  const NodeGrid grid(nodes);
  const std::vector<GraphTask> graph = cholesky_graph(machine, options.tiles);
  const Distribution plan = distribute(graph, options.tiles, grid, nodes);
  double total_flops = 0;
  for (const GraphTask& task : graph) total_flops += flops(task.kernel);

  std::fprintf(stderr,
               "sched-sim: Cholesky of %zu x %zu tiles of %zu x %zu %ss on %u nodes (a %u x %u grid, tiles 2-D "
               "block-cyclic) of %s: %u CPU cores + %u GPUs linked at %g GB/s each, joined by a network of %g Gb/s "
               "and %g us per node: %.6f s a tile\n",
               options.tiles, options.tiles, kTile, kTile, single ? "float" : "double", nodes, grid.rows, grid.cols,
               machine_name.c_str(), machine.cpus, machine.gpus, machine.bandwidth_gbs, options.network_gbps,
               options.network_latency_us, send_seconds);
  std::map<std::string, double> makespans;
  for (const char* scheduler : {"eager", "prio", "ws", "random", "dm", "dmda", "dmdas"}) {
    try {
      makespans[scheduler] =
          single ? simulate_cluster<float>(scheduler, machine_file.path(), machine, options.tiles, nodes, graph, plan)
                 : simulate_cluster<double>(scheduler, machine_file.path(), machine, options.tiles, nodes, graph, plan);
    } catch (...) {
      rethrow_naming_the_machine(machine_file, machine_name);
    }
    std::printf("%s makespan_s %.6f\n", scheduler, makespans[scheduler]);
    std::printf("%s gflops %.1f\n", scheduler, total_flops / makespans[scheduler] / 1e9);
    std::fflush(stdout);
  }
  const ClusterBounds bounds = cluster_bounds(machine, graph, plan, nodes, send_seconds);
  std::printf("network transfers %zu\n", plan.transfers.size());
  std::printf("network bytes %zu\n", plan.transfers.size() * tile_bytes);
  std::printf("lower_bound makespan_s %.6f\n", bounds.bound());
  std::fflush(stdout);
  std::fprintf(stderr,
               "sched-sim: lower bound = max(critical path with the network's time on each edge between nodes "
               "%.6f s, busiest node's work %.6f s, busiest network card's sends %.6f s); dmdas / lower bound %.2f, "
               "%.1f GFLOP/s at the bound\n",
               bounds.critical_path, bounds.node_work, bounds.node_sends, makespans["dmdas"] / bounds.bound(),
               total_flops / bounds.bound() / 1e9);
  return 0;
}

/// Every scheduler runs in turn: a HETFLOW_TRACE without %s would keep only the last one's trace.
void refuse_one_trace_for_every_scheduler() {
  const char* trace = std::getenv("HETFLOW_TRACE");
  if (trace == nullptr || *trace == '\0') return;
  const std::string_view path(trace);
  for (std::size_t i = 0; i + 1 < path.size(); ++i) {
    if (path[i] != '%') continue;
    if (path[i + 1] == 's') return;
    ++i;  // %% and the other escapes
  }
  throw InvalidArgument("HETFLOW_TRACE='" + std::string(path) +
                        "' would hold the last scheduler's trace only: sched-sim runs each in turn; put %s in the "
                        "path for a trace per scheduler (e.g. trace.%s.json)");
}

}  // namespace

int run_sched_sim(const SchedSimOptions& options) {
  refuse_one_trace_for_every_scheduler();
  const bool single = options.precision == "single";
  if (!single && options.precision != "double") throw InvalidArgument("unknown precision '" + options.precision + "'");
  const std::size_t tile_bytes = kTile * kTile * (single ? sizeof(float) : sizeof(double));
  SchedSimMachine machine = options.machine.empty()
                                ? SchedSimMachine::parse(kDefaultMachineJson, kDefaultMachineName, tile_bytes)
                                : SchedSimMachine::load(options.machine, tile_bytes);
  if (options.bandwidth_gbs) machine.bandwidth_gbs = *options.bandwidth_gbs;
  const std::string machine_name = options.machine.empty() ? std::string(kDefaultMachineName)
                                                           : std::filesystem::path(options.machine).filename().string();
  if (options.nodes) return run_cluster(options, machine, machine_name, single, tile_bytes);

  const ScratchFile machine_file(machine.to_json(simulated_machine_name(machine_name)));
  std::fprintf(stderr,
               "sched-sim: Cholesky of %zu x %zu tiles of %zu x %zu %ss on %s: %u CPU cores + %u GPUs linked at "
               "%g GB/s\n",
               options.tiles, options.tiles, kTile, kTile, single ? "float" : "double", machine_name.c_str(),
               machine.cpus, machine.gpus, machine.bandwidth_gbs);
  {
    std::map<std::string, double> makespans;
    for (const char* scheduler : {"eager", "prio", "ws", "random", "dm", "dmda", "dmdas"}) {
      try {
        makespans[scheduler] = single ? simulate<float>(scheduler, machine_file.path(), machine, options.tiles)
                                      : simulate<double>(scheduler, machine_file.path(), machine, options.tiles);
      } catch (...) {
        rethrow_naming_the_machine(machine_file, machine_name);
      }
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
  }
  return 0;
}

}  // namespace hetflow::bench
