#pragma once
// The bus model: the bandwidth and latency of copies between host RAM (node 0) and each device
// memory node, measured once per node and kept in "<directory>/bus/<node name>.txt" (format in
// docs/perfmodels.md, "Bus model"), so that later processes start with the numbers at once.
// The model-driven schedulers ask it how long a task's data takes to reach a node.
#include <atomic>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/ext/memory_node.hpp"

namespace hetflow::detail {

inline constexpr int kBusFormatVersion = 1;

/// The links a bus file may give, as for a machine description's `link` (src/sim/machine.cpp):
/// from 1 kB/s to 1 EB/s, with at most a second of latency. Beyond, the figure is damage, and
/// the transfer times made from it overflow (a simulated makespan of NaN).
inline constexpr double kMinBusBandwidth = 1e3;  // bytes per second
inline constexpr double kMaxBusBandwidth = 1e18;
inline constexpr double kMaxBusLatency = 1;  // seconds

/// One direction between two nodes.
struct BusLink {
  double bandwidth = 0;  ///< bytes per second, > 0
  double latency = 0;    ///< seconds, >= 0
  bool known = false;    ///< measured, loaded or set; false: the defaults apply
};

/// The parsed content of one bus file.
struct BusFileContents {
  std::string node;
  BusLink host_to_node;
  BusLink node_to_host;
};

/// Parses a bus file's text; returns the reason it is bad (a link outside the bounds above
/// among them), or "" when `out` is filled. `node` is the name the file must be for.
[[nodiscard]] std::string parse_bus_text(std::string_view text, std::string_view node, BusFileContents& out);
[[nodiscard]] std::string format_bus(const BusFileContents& contents);
/// The file name for a node: its name, with anything but letters, digits and `_ - . + @`
/// replaced by '_' (and a leading '.' too), then ".txt".
[[nodiscard]] std::string bus_file_name(std::string_view node);

/// Transfer estimates between memory nodes. Reads (`expected`, `link`) are thread-safe at any
/// time, also while `set` runs on another thread (each number is read whole; a reader may see
/// a link's new bandwidth with its old latency for that moment). `calibrate` is meant to run
/// once, before the estimates are used.
class BusModel {
 public:
  /// For links never measured, loaded or set: a PCIe-3-like guess.
  static constexpr double kDefaultBandwidth = 10e9;  // bytes per second
  static constexpr double kDefaultLatency = 10e-6;   // seconds
  /// What the measurement copies (see calibrate).
  static constexpr std::size_t kLatencyBytes = 8;
  static constexpr std::size_t kBandwidthBytes = std::size_t{8} << 20;

  /// `nodes[i]` is memory node i; entry 0 (host RAM) may be nullptr, as may nodes without a
  /// device (they keep the defaults). The nodes must outlive calibrate().
  explicit BusModel(std::vector<ext::MemoryNode*> nodes);
  ~BusModel();
  BusModel(const BusModel&) = delete;
  BusModel& operator=(const BusModel&) = delete;

  /// For each device node (named `names[node]`, unique): loads "<directory>/bus/<name>.txt" if
  /// present and valid; otherwise measures host->node and node->host (latency: the median of
  /// 8-byte copies; bandwidth: from the fastest of a few 8 MiB copies, smaller when the node has
  /// no room) and saves the file atomically. A damaged file is reported on stderr and replaced by a new measurement; a
  /// node that fails to measure (or a file that cannot be written) is reported and keeps the defaults (or the measured
  /// numbers). Never throws for those.
  void calibrate(const std::filesystem::path& directory, const std::vector<std::string>& names);
  /// calibrate with the names the nodes give themselves.
  void calibrate(const std::filesystem::path& directory);

  /// Sets one direction (the simulator describes its machine this way). A link between two
  /// device nodes set here is used directly instead of going through the host. Throws
  /// InvalidArgument for a node out of range, a bandwidth that is not finite and > 0, or a
  /// latency that is not finite and >= 0.
  void set(unsigned from, unsigned to, double bandwidth_bytes_per_s, double latency_s);

  /// Expected seconds to copy `bytes` from node `from` to node `to`: latency + bytes / bandwidth.
  /// 0 for the same node or for 0 bytes. Between two devices, the link set between them if any,
  /// else the sum of both legs through the host. Unknown links and nodes out of range use the
  /// defaults.
  [[nodiscard]] double expected(unsigned from, unsigned to, std::size_t bytes) const noexcept;
  /// The direct link from -> to as known now (defaults with known = false when never set).
  [[nodiscard]] BusLink link(unsigned from, unsigned to) const noexcept;
  [[nodiscard]] std::size_t node_count() const noexcept { return nodes_.size(); }

 private:
  struct Link {
    std::atomic<double> bandwidth{kDefaultBandwidth};
    std::atomic<double> latency{kDefaultLatency};
    std::atomic<bool> known{false};
  };
  [[nodiscard]] const Link* find(unsigned from, unsigned to) const noexcept;
  void store(unsigned from, unsigned to, const BusLink& value) noexcept;
  [[nodiscard]] double leg(unsigned from, unsigned to, std::size_t bytes) const noexcept;

  std::vector<ext::MemoryNode*> nodes_;
  std::vector<Link> links_;  // nodes² directed links, row = from
};

}  // namespace hetflow::detail
