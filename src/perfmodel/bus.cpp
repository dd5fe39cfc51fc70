// The bus model: measuring, storing and answering transfer times between memory nodes. The
// file format is specified in docs/perfmodels.md, "Bus model".
#include "perfmodel/bus.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>

#include "hetflow/error.hpp"
#include "perfmodel/storage.hpp"
#include "util/number_format.hpp"
#include "util/text_fields.hpp"

namespace hetflow::detail {
namespace {

constexpr std::string_view kBusMagic = "hetflow-bus";
constexpr std::string_view kHostToNode = "host_to_node";
constexpr std::string_view kNodeToHost = "node_to_host";

// Repetitions: enough for a stable median / minimum, few enough that a first run on a machine
// stays well under a second per device.
constexpr int kLatencyRepetitions = 9;
constexpr int kBandwidthRepetitions = 3;
// The smallest buffer worth timing for bandwidth; below it, latency dominates the copy.
constexpr std::size_t kSmallestBandwidthBytes = std::size_t{64} << 10;

std::optional<double> parse_double(std::string_view text) {
  const std::optional<double> value = parse_number<double>(text);
  if (!value || !std::isfinite(*value)) return std::nullopt;
  return value;
}

bool valid_link(double bandwidth, double latency) {
  return std::isfinite(bandwidth) && bandwidth > 0 && std::isfinite(latency) && latency >= 0;
}

// What a file may hold, and a measurement may give, to be saved and read back.
bool plausible_link(double bandwidth, double latency) {
  return bandwidth >= kMinBusBandwidth && bandwidth <= kMaxBusBandwidth && latency >= 0 && latency <= kMaxBusLatency;
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A buffer on a device node, freed when it goes.
class DeviceBuffer {
 public:
  DeviceBuffer(ext::MemoryNode& node, std::size_t bytes) : node_(node), bytes_(bytes), ptr_(node.allocate(bytes)) {}
  ~DeviceBuffer() {
    if (ptr_ != nullptr) node_.free(ptr_, bytes_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  [[nodiscard]] void* get() const noexcept { return ptr_; }

 private:
  ext::MemoryNode& node_;
  std::size_t bytes_;
  void* ptr_;
};

// A host buffer announced to the node as the engine announces registered data, so that a node
// that pins large buffers is measured as it will be used.
class HostBuffer {
 public:
  HostBuffer(ext::MemoryNode& node, std::size_t bytes) : node_(node), bytes_(bytes), data_(new std::byte[bytes]) {
    // Touched before timing, so the first copy does not pay for page faults.
    std::memset(data_.get(), 0x5a, bytes_);
    node_.host_buffer_added(data_.get(), bytes_);
  }
  ~HostBuffer() { node_.host_buffer_removed(data_.get(), bytes_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  [[nodiscard]] std::byte* get() const noexcept { return data_.get(); }

 private:
  ext::MemoryNode& node_;
  std::size_t bytes_;
  std::unique_ptr<std::byte[]> data_;
};

double time_to_node(ext::MemoryNode& node, void* device, const void* host, std::size_t bytes) {
  const auto start = Clock::now();
  if (auto transfer = node.copy_from_host(device, host, bytes)) transfer->wait();
  return seconds_since(start);
}

double time_to_host(ext::MemoryNode& node, void* host, const void* device, std::size_t bytes) {
  const auto start = Clock::now();
  node.copy_to_host(host, device, bytes);
  return seconds_since(start);
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

struct Measured {
  BusLink host_to_node;
  BusLink node_to_host;
};

Measured measure(ext::MemoryNode& node) {
  Measured result;
  {
    DeviceBuffer device(node, BusModel::kLatencyBytes);
    if (device.get() == nullptr) throw Error("no room for " + std::to_string(BusModel::kLatencyBytes) + " bytes");
    HostBuffer host(node, BusModel::kLatencyBytes);
    // The first copies pay for lazy initialisation (contexts, streams); not counted.
    (void)time_to_node(node, device.get(), host.get(), BusModel::kLatencyBytes);
    (void)time_to_host(node, host.get(), device.get(), BusModel::kLatencyBytes);
    std::vector<double> to_node;
    std::vector<double> to_host;
    for (int i = 0; i < kLatencyRepetitions; ++i) {
      to_node.push_back(time_to_node(node, device.get(), host.get(), BusModel::kLatencyBytes));
      to_host.push_back(time_to_host(node, host.get(), device.get(), BusModel::kLatencyBytes));
    }
    result.host_to_node.latency = median(std::move(to_node));
    result.node_to_host.latency = median(std::move(to_host));
  }

  std::size_t bytes = BusModel::kBandwidthBytes;
  if (const std::size_t capacity = node.capacity(); capacity > 0) bytes = std::min(bytes, capacity / 2);
  std::unique_ptr<DeviceBuffer> device;
  for (; bytes >= kSmallestBandwidthBytes; bytes /= 2) {
    device = std::make_unique<DeviceBuffer>(node, bytes);
    if (device->get() != nullptr) break;
  }
  if (bytes < kSmallestBandwidthBytes || device == nullptr || device->get() == nullptr) {
    throw Error("no room for a " + std::to_string(kSmallestBandwidthBytes) + "-byte buffer");
  }
  HostBuffer host(node, bytes);
  (void)time_to_node(node, device->get(), host.get(), bytes);
  (void)time_to_host(node, host.get(), device->get(), bytes);
  double fastest_to_node = std::numeric_limits<double>::infinity();
  double fastest_to_host = std::numeric_limits<double>::infinity();
  // The fastest run is the one least disturbed by the rest of the machine.
  for (int i = 0; i < kBandwidthRepetitions; ++i) {
    fastest_to_node = std::min(fastest_to_node, time_to_node(node, device->get(), host.get(), bytes));
    fastest_to_host = std::min(fastest_to_host, time_to_host(node, host.get(), device->get(), bytes));
  }
  // The bandwidth such that latency + bytes / bandwidth gives back the measured time; when
  // noise makes the copy look no slower than the latency, the plain rate.
  auto bandwidth = [&](double seconds, double latency) {
    const double streaming = seconds > latency ? seconds - latency : seconds;
    return static_cast<double>(bytes) / std::max(streaming, static_cast<double>(bytes) / kMaxBusBandwidth);
  };
  result.host_to_node.bandwidth = bandwidth(fastest_to_node, result.host_to_node.latency);
  result.node_to_host.bandwidth = bandwidth(fastest_to_host, result.node_to_host.latency);
  result.host_to_node.known = result.node_to_host.known = true;
  if (!plausible_link(result.host_to_node.bandwidth, result.host_to_node.latency) ||
      !plausible_link(result.node_to_host.bandwidth, result.node_to_host.latency)) {
    throw Error("the timings are not usable");
  }
  return result;
}

// The file's text, or nullopt when it does not exist; throws Error when it cannot be read, or
// is not a regular file of reasonable size.
std::optional<std::string> read_text(const std::filesystem::path& file) {
  FileRead read = read_regular_file(file);
  if (read.status == FileRead::Status::missing) return std::nullopt;
  if (read.status == FileRead::Status::refused) throw Error(read.reason);
  return std::move(read.text);
}

}  // namespace

std::string parse_bus_text(std::string_view text, std::string_view node, BusFileContents& out) {
  text = without_byte_order_mark(text);  // a hand-edited file's
  bool have_header = false;
  bool have_node = false;
  bool have_to_node = false;
  bool have_to_host = false;
  std::size_t line_number = 0;
  auto at = [&](const std::string& reason) { return "line " + std::to_string(line_number) + ": " + reason; };
  while (!text.empty()) {
    ++line_number;
    const auto fields = split_fields(take_line(text));
    if (!have_header) {
      if (fields.size() != 2 || fields[0] != kBusMagic) {
        return at("not a hetflow bus model (expected '" + std::string(kBusMagic) + " " +
                  std::to_string(kBusFormatVersion) + "')");
      }
      if (fields[1] != std::to_string(kBusFormatVersion)) {
        return at("format version '" + std::string(fields[1]) + "' is not " + std::to_string(kBusFormatVersion));
      }
      have_header = true;
      continue;
    }
    if (fields.empty() || fields[0].front() == '#') continue;
    if (!have_node) {
      if (fields.size() != 2 || fields[0] != "node") return at("expected 'node <name>'");
      if (fields[1] != node) {
        return at("the file is for node '" + std::string(fields[1]) + "', not '" + std::string(node) + "'");
      }
      out.node = std::string(fields[1]);
      have_node = true;
      continue;
    }
    const bool to_node = fields[0] == kHostToNode;
    if (!to_node && fields[0] != kNodeToHost) {
      return at("unknown direction '" + std::string(fields[0]) + "' (expected " + std::string(kHostToNode) + " or " +
                std::string(kNodeToHost) + ")");
    }
    if (fields.size() != 3) return at("expected '<direction> <bandwidth> <latency>'");
    bool& seen = to_node ? have_to_node : have_to_host;
    if (seen) return at("a second '" + std::string(fields[0]) + "' line");
    const auto bandwidth = parse_double(fields[1]);
    const auto latency = parse_double(fields[2]);
    if (!bandwidth || !latency || !plausible_link(*bandwidth, *latency)) {
      return at("bad bandwidth or latency (bytes per second from " + format_number(kMinBusBandwidth) + " to " +
                format_number(kMaxBusBandwidth) + ", seconds from 0 to " + format_number(kMaxBusLatency) + ")");
    }
    (to_node ? out.host_to_node : out.node_to_host) = BusLink{*bandwidth, *latency, true};
    seen = true;
  }
  if (!have_header) return "empty file";
  if (!have_node) return "no 'node' line";
  if (!have_to_node) return "no '" + std::string(kHostToNode) + "' line";
  if (!have_to_host) return "no '" + std::string(kNodeToHost) + "' line";
  return {};
}

std::string format_bus(const BusFileContents& contents) {
  std::string out;
  out += kBusMagic;
  out += ' ';
  out += std::to_string(kBusFormatVersion);
  out += "\nnode ";
  out += contents.node;
  out += "\n# direction bandwidth(bytes/s) latency(s) (see docs/perfmodels.md, Bus model)\n";
  for (const auto& [name, link] :
       {std::pair{kHostToNode, contents.host_to_node}, std::pair{kNodeToHost, contents.node_to_host}}) {
    out += name;
    out += ' ';
    append_number(out, link.bandwidth);
    out += ' ';
    append_number(out, link.latency);
    out += '\n';
  }
  return out;
}

std::string bus_file_name(std::string_view node) {
  std::string name;
  for (char ch : node) {
    const auto c = static_cast<unsigned char>(ch);
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.' || c == '+' || c == '@';
    name += ok ? ch : '_';
  }
  if (name.empty() || name.front() == '.') name.insert(name.begin(), '_');
  return name + ".txt";
}

BusModel::BusModel(std::vector<ext::MemoryNode*> nodes)
    : nodes_(std::move(nodes)), links_(nodes_.size() * nodes_.size()) {}

BusModel::~BusModel() = default;

const BusModel::Link* BusModel::find(unsigned from, unsigned to) const noexcept {
  const std::size_t n = nodes_.size();
  if (from >= n || to >= n) return nullptr;
  return &links_[from * n + to];
}

void BusModel::store(unsigned from, unsigned to, const BusLink& value) noexcept {
  Link& link = links_[from * nodes_.size() + to];  // callers check the range
  link.bandwidth.store(value.bandwidth, std::memory_order_relaxed);
  link.latency.store(value.latency, std::memory_order_relaxed);
  link.known.store(true, std::memory_order_release);
}

void BusModel::set(unsigned from, unsigned to, double bandwidth_bytes_per_s, double latency_s) {
  if (from >= nodes_.size() || to >= nodes_.size()) {
    throw InvalidArgument("BusModel::set: node " + std::to_string(std::max(from, to)) + " out of range (" +
                          std::to_string(nodes_.size()) + " nodes)");
  }
  if (!valid_link(bandwidth_bytes_per_s, latency_s)) {
    throw InvalidArgument("BusModel::set: the bandwidth must be finite and > 0, the latency finite and >= 0");
  }
  store(from, to, {bandwidth_bytes_per_s, latency_s, true});
}

BusLink BusModel::link(unsigned from, unsigned to) const noexcept {
  const Link* found = find(from, to);
  if (found == nullptr || !found->known.load(std::memory_order_acquire)) {
    return {kDefaultBandwidth, kDefaultLatency, false};
  }
  return {found->bandwidth.load(std::memory_order_relaxed), found->latency.load(std::memory_order_relaxed), true};
}

double BusModel::leg(unsigned from, unsigned to, std::size_t bytes) const noexcept {
  const BusLink l = link(from, to);
  return l.latency + static_cast<double>(bytes) / l.bandwidth;
}

double BusModel::expected(unsigned from, unsigned to, std::size_t bytes) const noexcept {
  if (from == to || bytes == 0) return 0;
  if (from == 0 || to == 0) return leg(from, to, bytes);
  if (link(from, to).known) return leg(from, to, bytes);
  // Device to device without a known direct link: staged through host memory.
  return leg(from, 0, bytes) + leg(0, to, bytes);
}

void BusModel::calibrate(const std::filesystem::path& directory) {
  std::vector<std::string> names;
  for (ext::MemoryNode* node : nodes_) names.push_back(node != nullptr ? node->name() : std::string());
  calibrate(directory, names);
}

void BusModel::calibrate(const std::filesystem::path& directory, const std::vector<std::string>& names) {
  for (unsigned index = 1; index < nodes_.size() && index < names.size(); ++index) {
    ext::MemoryNode* node = nodes_[index];
    if (node == nullptr) continue;
    const std::string& name = names[index];
    const std::filesystem::path file = directory / "bus" / bus_file_name(name);

    std::string damage;
    try {
      if (auto text = read_text(file)) {
        BusFileContents contents;
        damage = parse_bus_text(*text, name, contents);
        if (damage.empty()) {
          store(0, index, contents.host_to_node);
          store(index, 0, contents.node_to_host);
          continue;
        }
      }
    } catch (const std::exception& e) {
      damage = e.what();
    }
    if (!damage.empty()) warn("ignoring damaged bus model " + file.string() + ": " + damage + "; measuring again");

    Measured measured;
    try {
      measured = measure(*node);
    } catch (const std::exception& e) {
      warn("cannot measure the transfers to memory node " + std::to_string(index) + " (" + name + "): " + e.what() +
           "; assuming " + format_number(kDefaultBandwidth / 1e9) + " GB/s and " +
           format_number(kDefaultLatency * 1e6) + " us");
      continue;
    }
    store(0, index, measured.host_to_node);
    store(index, 0, measured.node_to_host);
    try {
      create_owned_directories(file.parent_path());
      write_file_atomically(file, format_bus({name, measured.host_to_node, measured.node_to_host}));
    } catch (const std::exception& e) {
      warn("cannot save the bus model of " + name + " (it will be measured again next time): " + e.what());
    }
  }
}

}  // namespace hetflow::detail
