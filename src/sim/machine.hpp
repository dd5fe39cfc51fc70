#pragma once
// The machine a simulation runs on (Config::simulate, HETFLOW_SIMULATE=machine.json): how many
// virtual workers of each kind, the devices' memory and links, and what each codelet costs. The
// file format is specified in docs/simulation.md, "Machine description".
#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/arch.hpp"

namespace hetflow::detail {

struct MachineSpec {
  /// What the simulation's report calls the machine ("name"); empty: the file it was read from.
  std::string name;
  /// Virtual CPU workers, all on memory node 0 (host RAM).
  unsigned cpus = 0;
  /// Virtual CUDA workers, each with a memory node of its own (nodes 1..gpus).
  unsigned gpus = 0;
  /// Bytes of each GPU's memory node; 0: unlimited.
  std::size_t gpu_memory = 0;
  /// Virtual OpenCL workers, each with a memory node of its own (after the GPUs' nodes).
  unsigned opencl = 0;
  /// Bytes of each OpenCL device's memory node; 0: unlimited.
  std::size_t opencl_memory = 0;
  /// Whether the OpenCL devices copy data with an engine of their own, alongside their kernels
  /// (a GPU's DMA engines). false: their compute units make the copies (an OpenCL device on the
  /// host's CPU cores, such as PoCL's), so a copy to or from one waits for the kernel it runs,
  /// and a kernel for the copies queued before it.
  bool opencl_copy_engine = true;

  /// One direction of the link between host RAM and a device's memory node.
  struct Link {
    double bandwidth_bytes_per_s = 12e9;
    double latency_s = 10e-6;
    /// Seconds to copy `bytes` over it.
    [[nodiscard]] double seconds(std::size_t bytes) const;
  };
  /// The link between host RAM and each device, the same both ways (a device-to-device copy goes
  /// through the host: two hops).
  Link link;
  /// "link": "stored": each device's link is the bus model a real run measured and stored for
  /// the memory node of that name, each direction its own (device_links).
  bool use_stored_links = false;

  /// Seconds for one task whose data add up to n bytes: a * n^b + c (a constant is a = b = 0).
  struct Cost {
    double a = 0;
    double b = 0;
    double c = 0;
    [[nodiscard]] double operator()(std::size_t bytes) const;
  };
  /// Per codelet name, per architecture (Arch::cpu, Arch::cuda or Arch::opencl).
  std::map<std::string, std::map<Arch, Cost>> costs;
  /// "models": "stored": a (codelet, architecture) missing from `costs` takes its time from the
  /// codelet's stored performance model. Otherwise ("costs") such a pair cannot run.
  bool use_stored_models = false;

  /// The cost in seconds of `codelet` on `arch` for `bytes` of data, if `costs` has it.
  /// nullopt: the pair is not listed (then the codelet cannot run on `arch` unless
  /// use_stored_models).
  [[nodiscard]] std::optional<double> cost(const std::string& codelet, Arch arch, std::size_t bytes) const;

  /// The names of the device memory nodes, in node order from node 1: "cuda0".. then "opencl0"..,
  /// the names the CUDA and OpenCL drivers give theirs (and so the names of their stored links).
  [[nodiscard]] std::vector<std::string> device_node_names() const;

  /// Both directions of the link of one device memory node.
  struct DeviceLinks {
    Link to_device;
    Link to_host;
  };
  /// The links of the device memory node `node_name`: `link` both ways, or with
  /// use_stored_links, those of "<home>/bus/<node file name>" (the bus model a real run stores
  /// under HETFLOW_HOME, docs/perfmodels.md). Throws InvalidArgument naming `origin`, the node
  /// and the file when that file is missing or damaged.
  [[nodiscard]] DeviceLinks device_links(const std::string& node_name, const std::filesystem::path& home,
                                         std::string_view origin) const;

  /// Reads a machine description (JSON; // and /* */ comments allowed). `origin` names the text
  /// in messages. Throws InvalidArgument "<origin>: <key path>: <what is wrong>", e.g.
  /// "machine.json: codelets.gemm.gpu: unknown architecture 'gpu' (use cpu, cuda or opencl)", or
  /// "<origin>:<line>:<column>: ..." for text that is not JSON.
  [[nodiscard]] static MachineSpec parse(std::string_view json, std::string_view origin);
  /// Reads the file; InvalidArgument naming it if it cannot be read or is not a valid description.
  [[nodiscard]] static MachineSpec load(const std::filesystem::path& file);
};

}  // namespace hetflow::detail
