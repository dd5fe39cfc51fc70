#pragma once
// What bench/main.cpp dispatches to: one entry point per subcommand, with its parsed flags.
#include <cstddef>
#include <optional>
#include <string>

namespace hetflow::bench {

struct OverheadOptions {
  /// Tasks per timed workload (independent, chain, fanout).
  std::size_t tasks = 100'000;
  /// Timed runs per workload; the median is printed.
  std::size_t repeat = 3;
  /// Tasks held pending behind a blocked task to measure memory per pending task.
  std::size_t pending = 1'000'000;
};

/// Prints `hetflow <workload>_ns_per_task <v>` lines and `hetflow pending_bytes_per_task <v>`.
int run_overhead(const OverheadOptions& options);

struct SchedSimOptions {
  /// Tiles per side of the simulated Cholesky factorisation.
  std::size_t tiles = 16;
  /// The machine description to simulate (bench/sched_sim/*.json); empty: the built-in one,
  /// bench/sched_sim/legacy.json.
  std::string machine;
  /// "double" or "single": the tiles' elements, which sizes the data the simulated copies move.
  std::string precision = "double";
  /// Replaces the machine's host <-> GPU link bandwidth, in GB/s.
  std::optional<double> bandwidth_gbs;
  /// Simulates this many copies of the machine joined by a network, running the distributed
  /// Cholesky of examples/cpp/mpi_cholesky.cpp (docs/simulation.md, "Several nodes").
  std::optional<unsigned> nodes;
  /// The network between the nodes: each node's link, in Gb/s (bits), and a message's latency.
  double network_gbps = 100;
  double network_latency_us = 1.5;
};

/// Prints `<scheduler> makespan_s <v>` per scheduler, `lower_bound makespan_s <v>` and
/// `offline_plan makespan_s <v>`; the ratios the scheduling targets are stated in go to stderr.
/// With `nodes`: `<scheduler> makespan_s <v>` and `<scheduler> gflops <v>` per scheduler,
/// `network transfers <n>`, `network bytes <n>` and `lower_bound makespan_s <v>`.
int run_sched_sim(const SchedSimOptions& options);

}  // namespace hetflow::bench
