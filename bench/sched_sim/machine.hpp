#pragma once
// The machine sched-sim simulates, read from a machine description (docs/simulation.md,
// "Machine description"): the simulator runs the file, and sched-sim needs the same figures
// for its lower bounds and its offline plan. sched-sim accepts the part of the format that
// those can follow: CPU cores and CUDA GPUs, one link, and a cost on both for each of the
// Cholesky's four kernels.
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace hetflow::bench {

/// The kernels of the tiled Cholesky, in the order of SchedSimMachine::costs.
enum class Kernel : unsigned { potrf, trsm, syrk, gemm };
inline constexpr std::array<std::string_view, 4> kKernelNames{"potrf", "trsm", "syrk", "gemm"};
/// How many tiles a task of each kernel names (its data, for costs that depend on the size).
inline constexpr std::array<std::size_t, 4> kKernelTiles{1, 2, 2, 3};
/// The codelet of a tile's trip from one node to another, on a cluster of machines.
inline constexpr std::string_view kSendName = "send";

struct KernelCost {
  double cpu = 0;   // seconds on one CPU core
  double cuda = 0;  // seconds on one GPU
};

struct SchedSimMachine {
  unsigned cpus = 0;
  unsigned gpus = 0;
  /// The file's gpu_memory, as written (a number or a quoted size), or nothing for unlimited.
  std::optional<std::string> gpu_memory_json;
  double bandwidth_gbs = 12;
  double latency_us = 10;
  /// Seconds per task, by Kernel, for the tile size the machine was read for.
  std::array<KernelCost, 4> costs{};

  [[nodiscard]] const KernelCost& cost(Kernel kernel) const { return costs[static_cast<unsigned>(kernel)]; }

  /// Reads a description; `origin` names it in messages and `tile_bytes` sizes the tasks' data
  /// for costs written as a * n^b + c. Throws InvalidArgument "<origin>: <key>: <what is wrong>".
  [[nodiscard]] static SchedSimMachine parse(std::string_view json, std::string_view origin, std::size_t tile_bytes);
  /// Reads the file; InvalidArgument naming it if it cannot be read or is not usable here.
  [[nodiscard]] static SchedSimMachine load(const std::string& file, std::size_t tile_bytes);

  /// The description the simulator runs: these figures, each cost a constant; `name` is what
  /// the simulation's report calls it.
  [[nodiscard]] std::string to_json(std::string_view name) const;
  /// `nodes` copies of this machine as one description: their cores and GPUs, and one OpenCL
  /// device per node that stands for its network card, which runs only the codelet "send", in
  /// `send_seconds` (docs/simulation.md, "Several nodes").
  [[nodiscard]] std::string cluster_json(std::string_view name, unsigned nodes, double send_seconds) const;

 private:
  [[nodiscard]] std::string description(std::string_view name, unsigned nodes,
                                        std::optional<double> send_seconds) const;
};

}  // namespace hetflow::bench
