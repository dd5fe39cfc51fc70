// Reading machine descriptions. Every check names the file and the key path of the value it
// rejects, since these files are written by hand.
#include "sim/machine.hpp"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <system_error>

#include "hetflow/error.hpp"
#include "perfmodel/bus.hpp"
#include "util/atomic_file.hpp"
#include "util/json.hpp"

namespace hetflow::detail {
namespace {

constexpr unsigned kMaxWorkers = 4096;  // as Config::ncpus
// The most a cost's seconds (c, the factor a) and its exponent (b) may be: beyond, virtual time
// would overflow to inf, then NaN.
constexpr double kMaxCostSeconds = 1e9;
constexpr double kMaxCostExponent = 4;
// A link from 1 kB/s to 1 EB/s, with at most a second of latency: beyond, the figure is a typo.
// The bounds of the stored bus models, which "link": "stored" reads.
constexpr double kMinBandwidthGbs = kMinBusBandwidth / 1e9;
constexpr double kMaxBandwidthGbs = kMaxBusBandwidth / 1e9;
constexpr double kMaxLatencyUs = kMaxBusLatency * 1e6;
constexpr std::size_t kMaxMachineFileBytes = std::size_t{16} << 20;

std::string join_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

class SpecReader {
 public:
  explicit SpecReader(std::string_view origin) : origin_(origin) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw InvalidArgument(origin_ + ": " + (path.empty() ? "" : path + ": ") + what);
  }

  /// Rejects members of `object` not among `known`, so that a misspelt key is not ignored.
  void only_keys(const JsonValue& object, const std::string& path,
                 std::initializer_list<std::string_view> known) const {
    for (const auto& [key, value] : object.as_object()) {
      bool found = false;
      for (std::string_view name : known) found = found || name == key;
      if (found) continue;
      std::string list;
      for (std::string_view name : known) list += (list.empty() ? "" : ", ") + std::string(name);
      fail(join_path(path, key), "unknown key (known keys here: " + list + ")");
    }
  }

  const JsonValue& object(const JsonValue& value, const std::string& path) const {
    if (!value.is_object()) fail(path, "expected an object, got " + std::string(json_kind_name(value.kind())));
    return value;
  }

  double number(const JsonValue& value, const std::string& path) const {
    if (!value.is_number()) fail(path, "expected a number, got " + std::string(json_kind_name(value.kind())));
    return value.as_number();
  }

  unsigned worker_count(const JsonValue& value, const std::string& path) const {
    const double x = number(value, path);
    if (x < 0 || x != std::floor(x) || x > kMaxWorkers) {
      fail(path, "expected a whole number from 0 to " + std::to_string(kMaxWorkers) + ", not " + shown(x));
    }
    return static_cast<unsigned>(x);
  }

  /// A number of bytes, or a string: a whole number with an optional K, M or G suffix (binary,
  /// as HETFLOW_MEMORY_LIMITS; KiB, MiB and GiB are read the same).
  std::size_t bytes(const JsonValue& value, const std::string& path) const {
    constexpr double kMaxBytes = static_cast<double>(std::numeric_limits<std::size_t>::max());
    if (value.is_number()) {
      const double x = value.as_number();
      if (x <= 0 || x != std::floor(x) || x >= kMaxBytes) {
        fail(path, "expected a whole number of bytes more than 0, not " + shown(x));
      }
      return static_cast<std::size_t>(x);
    }
    if (!value.is_string()) {
      fail(path, "expected a size in bytes (a number, or a string such as \"16G\"), got " +
                     std::string(json_kind_name(value.kind())));
    }
    const std::string& text = value.as_string();
    auto bad = [&](const std::string& why) {
      fail(path, "'" + text + "' " + why + " (a whole number with an optional K, M or G suffix, e.g. \"16G\")");
    };
    std::size_t digits = 0;
    std::size_t count = 0;
    bool overflow = false;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
      const auto digit = static_cast<std::size_t>(text[digits] - '0');
      overflow = overflow || count > (std::numeric_limits<std::size_t>::max() - digit) / 10;
      count = count * 10 + digit;
      ++digits;
    }
    if (digits == 0) bad("is not a size in bytes");
    const std::string_view suffix = std::string_view(text).substr(digits);
    std::size_t scale = 1;
    if (suffix == "K" || suffix == "KiB") {
      scale = std::size_t{1} << 10;
    } else if (suffix == "M" || suffix == "MiB") {
      scale = std::size_t{1} << 20;
    } else if (suffix == "G" || suffix == "GiB") {
      scale = std::size_t{1} << 30;
    } else if (!suffix.empty()) {
      bad("has an unknown suffix");
    }
    if (overflow || count > std::numeric_limits<std::size_t>::max() / scale) bad("is too large");
    if (count == 0) bad("must be more than 0 (leave " + path + " out for unlimited memory)");
    return count * scale;
  }

  MachineSpec::Cost cost(const JsonValue& value, const std::string& path) const {
    if (value.is_number()) return {.a = 0, .b = 0, .c = at_most(value, path, kMaxCostSeconds)};
    if (!value.is_object()) {
      fail(path, "expected seconds (a number) or {\"a\": ..., \"b\": ..., \"c\": ...} for a * n^b + c, got " +
                     std::string(json_kind_name(value.kind())));
    }
    only_keys(value, path, {"a", "b", "c"});
    MachineSpec::Cost cost;
    if (const auto* a = value.find("a")) cost.a = at_most(*a, join_path(path, "a"), kMaxCostSeconds);
    if (const auto* b = value.find("b")) cost.b = at_most(*b, join_path(path, "b"), kMaxCostExponent);
    if (const auto* c = value.find("c")) cost.c = at_most(*c, join_path(path, "c"), kMaxCostSeconds);
    return cost;
  }

  double at_most(const JsonValue& value, const std::string& path, double most) const {
    return between(value, path, 0, most);
  }

  double between(const JsonValue& value, const std::string& path, double least, double most) const {
    const double x = number(value, path);
    if (!(x >= least && x <= most)) {
      fail(path, "must be from " + shown(least) + " to " + shown(most) + ", not " + shown(x));
    }
    return x;
  }

  static std::string shown(double x) {
    std::ostringstream out;
    out << x;
    return out.str();
  }

 private:
  std::string origin_;
};

}  // namespace

double MachineSpec::Link::seconds(std::size_t bytes) const {
  return latency_s + static_cast<double>(bytes) / bandwidth_bytes_per_s;
}

double MachineSpec::Cost::operator()(std::size_t bytes) const {
  // With a = 0 the size plays no part (and a huge n^b cannot turn 0 * inf into NaN).
  if (a == 0) return c;
  return a * std::pow(static_cast<double>(bytes), b) + c;
}

std::optional<double> MachineSpec::cost(const std::string& codelet, Arch arch, std::size_t bytes) const {
  const auto per_codelet = costs.find(codelet);
  if (per_codelet == costs.end()) return std::nullopt;
  const auto per_arch = per_codelet->second.find(arch);
  if (per_arch == per_codelet->second.end()) return std::nullopt;
  return per_arch->second(bytes);
}

MachineSpec MachineSpec::parse(std::string_view json, std::string_view origin) {
  const SpecReader reader(origin);
  const JsonValue root = parse_json(json, origin, {.comments = true});
  if (!root.is_object()) {
    reader.fail("", "a machine description is a JSON object, not " + std::string(json_kind_name(root.kind())));
  }
  reader.only_keys(root, "",
                   {"name", "cpus", "gpus", "gpu_memory", "opencl", "opencl_memory", "opencl_copy_engine", "link",
                    "codelets", "models"});

  MachineSpec spec;
  if (const auto* name = root.find("name")) {
    if (!name->is_string() || name->as_string().empty()) {
      reader.fail("name",
                  "expected a string that names the machine, got " +
                      (name->is_string() ? std::string("an empty one") : std::string(json_kind_name(name->kind()))));
    }
    spec.name = name->as_string();
  }
  const JsonValue* cpus = root.find("cpus");
  if (cpus == nullptr) reader.fail("cpus", "missing: the number of virtual CPU workers is required");
  spec.cpus = reader.worker_count(*cpus, "cpus");
  if (const auto* gpus = root.find("gpus")) spec.gpus = reader.worker_count(*gpus, "gpus");
  if (const auto* opencl = root.find("opencl")) spec.opencl = reader.worker_count(*opencl, "opencl");
  if (spec.cpus + spec.gpus + spec.opencl == 0) {
    reader.fail("cpus", "the machine has no workers (cpus, gpus and opencl are all 0)");
  }
  if (spec.cpus + spec.gpus + spec.opencl > kMaxWorkers) {
    reader.fail("cpus", "the machine has " + std::to_string(spec.cpus + spec.gpus + spec.opencl) +
                            " workers in all (cpus + gpus + opencl), more than " + std::to_string(kMaxWorkers));
  }
  if (const auto* memory = root.find("gpu_memory")) spec.gpu_memory = reader.bytes(*memory, "gpu_memory");
  if (const auto* memory = root.find("opencl_memory")) spec.opencl_memory = reader.bytes(*memory, "opencl_memory");
  if (const auto* engine = root.find("opencl_copy_engine")) {
    if (!engine->is_bool()) {
      reader.fail("opencl_copy_engine", "expected true or false, got " + std::string(json_kind_name(engine->kind())));
    }
    spec.opencl_copy_engine = engine->as_bool();
  }

  if (const auto* link = root.find("link")) {
    if (link->is_string()) {
      if (link->as_string() != "stored") {
        reader.fail("link", "expected \"stored\" or {\"bandwidth_gbs\": ..., \"latency_us\": ...}, got '" +
                                link->as_string() + "'");
      }
      spec.use_stored_links = true;
    } else {
      if (!link->is_object()) {
        reader.fail("link", "expected \"stored\" or {\"bandwidth_gbs\": ..., \"latency_us\": ...}, got " +
                                std::string(json_kind_name(link->kind())));
      }
      reader.only_keys(*link, "link", {"bandwidth_gbs", "latency_us"});
      if (const auto* bandwidth = link->find("bandwidth_gbs")) {
        spec.link.bandwidth_bytes_per_s =
            reader.between(*bandwidth, "link.bandwidth_gbs", kMinBandwidthGbs, kMaxBandwidthGbs) * 1e9;
      }
      if (const auto* latency = link->find("latency_us")) {
        spec.link.latency_s = reader.between(*latency, "link.latency_us", 0, kMaxLatencyUs) * 1e-6;
      }
    }
  }

  if (const auto* codelets = root.find("codelets")) {
    reader.object(*codelets, "codelets");
    for (const auto& [name, per_arch] : codelets->as_object()) {
      const std::string path = join_path("codelets", name);
      if (name.empty()) reader.fail("codelets", "a codelet name is empty");
      reader.object(per_arch, path);
      auto& entry = spec.costs[name];
      for (const auto& [arch_text, cost] : per_arch.as_object()) {
        const std::string arch_path = join_path(path, arch_text);
        Arch arch = Arch::cpu;
        if (arch_text == "cpu") {
          arch = Arch::cpu;
        } else if (arch_text == "cuda") {
          arch = Arch::cuda;
        } else if (arch_text == "opencl") {
          arch = Arch::opencl;
        } else if (arch_text == "process") {
          reader.fail(arch_path, "architecture 'process' cannot be simulated (use cpu, cuda or opencl)");
        } else {
          reader.fail(arch_path, "unknown architecture '" + arch_text + "' (use cpu, cuda or opencl)");
        }
        entry[arch] = reader.cost(cost, arch_path);
      }
    }
  }

  if (const auto* models = root.find("models")) {
    if (!models->is_string() || (models->as_string() != "costs" && models->as_string() != "stored")) {
      const std::string got =
          models->is_string() ? "'" + models->as_string() + "'" : std::string(json_kind_name(models->kind()));
      reader.fail("models", "expected \"costs\" or \"stored\", got " + got);
    }
    spec.use_stored_models = models->as_string() == "stored";
  }
  return spec;
}

std::vector<std::string> MachineSpec::device_node_names() const {
  std::vector<std::string> names;
  for (unsigned gpu = 0; gpu < gpus; ++gpu) names.push_back("cuda" + std::to_string(gpu));
  for (unsigned device = 0; device < opencl; ++device) names.push_back("opencl" + std::to_string(device));
  return names;
}

MachineSpec::DeviceLinks MachineSpec::device_links(const std::string& node_name, const std::filesystem::path& home,
                                                   std::string_view origin) const {
  if (!use_stored_links) return {.to_device = link, .to_host = link};
  const std::filesystem::path file = home / "bus" / bus_file_name(node_name);
  const std::string what = std::string(origin) + ": link: \"stored\" takes the link of memory node '" + node_name +
                           "' from its stored bus model '" + file.string() + "', ";
  const std::string measure = " (a run of the program on the real device, with the same HETFLOW_HOME, measures it)";
  const FileRead read = read_regular_file(file);
  if (read.status == FileRead::Status::missing) throw InvalidArgument(what + "which does not exist" + measure);
  if (read.status == FileRead::Status::refused) {
    throw InvalidArgument(what + "which cannot be read: " + read.reason + measure);
  }
  BusFileContents contents;
  const std::string problem = parse_bus_text(read.text, node_name, contents);
  if (!problem.empty()) throw InvalidArgument(what + "which is damaged: " + problem + measure);
  return {.to_device = {.bandwidth_bytes_per_s = contents.host_to_node.bandwidth,
                        .latency_s = contents.host_to_node.latency},
          .to_host = {.bandwidth_bytes_per_s = contents.node_to_host.bandwidth,
                      .latency_s = contents.node_to_host.latency}};
}

MachineSpec MachineSpec::load(const std::filesystem::path& file) {
  const FileRead read = read_regular_file(file, kMaxMachineFileBytes);
  if (read.status == FileRead::Status::missing) {
    throw InvalidArgument("machine description '" + file.string() + "' cannot be read: No such file or directory");
  }
  if (read.status == FileRead::Status::refused) {
    throw InvalidArgument("machine description '" + file.string() + "' cannot be read: " + read.reason);
  }
  return parse(read.text, file.string());
}

}  // namespace hetflow::detail
