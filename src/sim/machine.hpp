#pragma once
// The machine a simulation runs on (Config::simulate, HETFLOW_SIMULATE=machine.json): how many
// virtual workers of each kind, the GPUs' memory and link, and what each codelet costs. The
// file format is specified in docs/simulation.md, "Machine description".
#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "hetflow/arch.hpp"

namespace hetflow::detail {

struct MachineSpec {
  /// Virtual CPU workers, all on memory node 0 (host RAM).
  unsigned cpus = 0;
  /// Virtual CUDA workers, each with a memory node of its own (nodes 1..gpus).
  unsigned gpus = 0;
  /// Bytes of each GPU's memory node; 0: unlimited.
  std::size_t gpu_memory = 0;
  /// The link between host RAM and each GPU (a GPU-to-GPU copy goes through the host: two hops).
  double bandwidth_bytes_per_s = 12e9;
  double latency_s = 10e-6;

  /// Seconds for one task whose data add up to n bytes: a * n^b + c (a constant is a = b = 0).
  struct Cost {
    double a = 0;
    double b = 0;
    double c = 0;
    [[nodiscard]] double operator()(std::size_t bytes) const;
  };
  /// Per codelet name, per architecture (Arch::cpu or Arch::cuda only).
  std::map<std::string, std::map<Arch, Cost>> costs;
  /// "models": "stored": a (codelet, architecture) missing from `costs` takes its time from the
  /// codelet's stored performance model. Otherwise ("costs") such a pair cannot run.
  bool use_stored_models = false;

  /// The cost in seconds of `codelet` on `arch` for `bytes` of data, if `costs` has it.
  /// nullopt: the pair is not listed (then the codelet cannot run on `arch` unless
  /// use_stored_models).
  [[nodiscard]] std::optional<double> cost(const std::string& codelet, Arch arch, std::size_t bytes) const;

  /// Reads a machine description (JSON; // and /* */ comments allowed). `origin` names the text
  /// in messages. Throws InvalidArgument "<origin>: <key path>: <what is wrong>", e.g.
  /// "machine.json: codelets.gemm.gpu: unknown architecture 'gpu' (use cpu or cuda)", or
  /// "<origin>:<line>:<column>: ..." for text that is not JSON.
  [[nodiscard]] static MachineSpec parse(std::string_view json, std::string_view origin);
  /// Reads the file; InvalidArgument naming it if it cannot be read or is not a valid description.
  [[nodiscard]] static MachineSpec load(const std::filesystem::path& file);
};

}  // namespace hetflow::detail
