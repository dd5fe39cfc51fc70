// Reading sched-sim's machine descriptions with the engine's JSON reader.
#include "sched_sim/machine.hpp"

#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <sstream>

#include "hetflow/error.hpp"
#include "util/atomic_file.hpp"
#include "util/json.hpp"

namespace hetflow::bench {
namespace {

using detail::JsonValue;

constexpr std::size_t kMaxMachineFileBytes = std::size_t{1} << 20;
// The figures a description may give (as the simulator's own reader bounds them): a task takes
// from a nanosecond to 30 years; a link moves from 1 kB/s to 1 EB/s with at most a second of latency.
constexpr double kMinTaskSeconds = 1e-9;
constexpr double kMaxTaskSeconds = 1e9;
constexpr double kMinBandwidthGbs = 1e-6;
constexpr double kMaxBandwidthGbs = 1e9;
constexpr double kMaxLatencyUs = 1e6;

class Reader {
 public:
  explicit Reader(std::string_view origin) : origin_(origin) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw InvalidArgument(origin_ + ": " + (path.empty() ? "" : path + ": ") + what);
  }

  void only_keys(const JsonValue& object, const std::string& path,
                 std::initializer_list<std::string_view> known) const {
    for (const auto& [key, value] : object.as_object()) {
      bool found = false;
      for (std::string_view name : known) found = found || name == key;
      if (found) continue;
      std::string list;
      for (std::string_view name : known) list += (list.empty() ? "" : ", ") + std::string(name);
      fail(join(path, key),
           "not used by sched-sim, which simulates CPU cores and CUDA GPUs with the costs listed "
           "(keys it reads here: " +
               list + ")");
    }
  }

  const JsonValue& member(const JsonValue& object, const std::string& path, std::string_view key) const {
    const JsonValue* value = object.find(key);
    if (value == nullptr) fail(join(path, key), "missing: sched-sim needs it");
    return *value;
  }

  void expect_object(const JsonValue& value, const std::string& path) const {
    if (!value.is_object()) fail(path, "expected an object, got " + std::string(detail::json_kind_name(value.kind())));
  }

  double non_negative(const JsonValue& value, const std::string& path) const {
    if (!value.is_number()) fail(path, "expected a number, got " + std::string(detail::json_kind_name(value.kind())));
    if (!(value.as_number() >= 0)) fail(path, "must be 0 or more, not " + shown(value.as_number()));
    return value.as_number();
  }

  double between(const JsonValue& value, const std::string& path, double least, double most) const {
    const double x = non_negative(value, path);
    if (!(x >= least && x <= most)) {
      fail(path, "must be from " + shown(least) + " to " + shown(most) + ", not " + shown(x));
    }
    return x;
  }

  double positive(const JsonValue& value, const std::string& path) const {
    const double x = non_negative(value, path);
    if (x == 0) fail(path, "must be more than 0");
    return x;
  }

  unsigned count(const JsonValue& value, const std::string& path) const {
    const double x = non_negative(value, path);
    if (x != std::floor(x) || x > 4096) fail(path, "expected a whole number from 0 to 4096, not " + shown(x));
    return static_cast<unsigned>(x);
  }

  /// Seconds, or {"a", "b", "c"} for a * n^b + c with n the bytes of the task's data.
  double seconds(const JsonValue& value, const std::string& path, std::size_t bytes) const {
    if (value.is_number()) return non_negative(value, path);
    if (!value.is_object()) {
      fail(path, "expected seconds (a number) or {\"a\": ..., \"b\": ..., \"c\": ...}, got " +
                     std::string(detail::json_kind_name(value.kind())));
    }
    only_keys(value, path, {"a", "b", "c"});
    auto part = [&](std::string_view key) {
      const JsonValue* x = value.find(key);
      return x == nullptr ? 0.0 : non_negative(*x, join(path, key));
    };
    const double a = part("a");
    return (a == 0 ? 0.0 : a * std::pow(static_cast<double>(bytes), part("b"))) + part("c");
  }

  static std::string join(const std::string& parent, std::string_view key) {
    return parent.empty() ? std::string(key) : parent + "." + std::string(key);
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

SchedSimMachine SchedSimMachine::parse(std::string_view json, std::string_view origin, std::size_t tile_bytes) {
  const Reader reader(origin);
  const JsonValue root = detail::parse_json(json, origin, {.comments = true});
  if (!root.is_object()) reader.fail("", "a machine description is a JSON object");
  reader.only_keys(root, "", {"cpus", "gpus", "gpu_memory", "link", "codelets"});

  SchedSimMachine machine;
  machine.cpus = reader.count(reader.member(root, "", "cpus"), "cpus");
  if (const JsonValue* gpus = root.find("gpus")) machine.gpus = reader.count(*gpus, "gpus");
  if (machine.cpus + machine.gpus == 0) reader.fail("cpus", "the machine has no workers (cpus and gpus are both 0)");
  if (const JsonValue* memory = root.find("gpu_memory")) {
    // The simulator checks the value; sched-sim only passes it on.
    if (memory->is_string()) {
      machine.gpu_memory_json = detail::json_quote(memory->as_string());
    } else {
      char text[64];
      std::snprintf(text, sizeof text, "%.17g", reader.positive(*memory, "gpu_memory"));
      machine.gpu_memory_json = text;
    }
  }
  if (const JsonValue* link = root.find("link")) {
    if (link->is_string() && link->as_string() == "stored") {
      reader.fail("link",
                  "\"stored\" is not used by sched-sim, whose bounds and plan need the link's figures: give "
                  "{\"bandwidth_gbs\": ..., \"latency_us\": ...}");
    }
    reader.expect_object(*link, "link");
    reader.only_keys(*link, "link", {"bandwidth_gbs", "latency_us"});
    if (const JsonValue* x = link->find("bandwidth_gbs"))
      machine.bandwidth_gbs = reader.between(*x, "link.bandwidth_gbs", kMinBandwidthGbs, kMaxBandwidthGbs);
    if (const JsonValue* x = link->find("latency_us")) {
      machine.latency_us = reader.between(*x, "link.latency_us", 0, kMaxLatencyUs);
    }
  }

  const JsonValue& codelets = reader.member(root, "", "codelets");
  reader.expect_object(codelets, "codelets");
  reader.only_keys(codelets, "codelets", {"potrf", "trsm", "syrk", "gemm"});
  for (std::size_t k = 0; k < kKernelNames.size(); ++k) {
    const std::string path = Reader::join("codelets", kKernelNames[k]);
    const JsonValue& per_arch = reader.member(codelets, "codelets", kKernelNames[k]);
    reader.expect_object(per_arch, path);
    reader.only_keys(per_arch, path, {"cpu", "cuda"});
    const std::size_t bytes = kKernelTiles[k] * tile_bytes;
    machine.costs[k].cpu = reader.seconds(reader.member(per_arch, path, "cpu"), Reader::join(path, "cpu"), bytes);
    machine.costs[k].cuda = reader.seconds(reader.member(per_arch, path, "cuda"), Reader::join(path, "cuda"), bytes);
    for (const double cost : {machine.costs[k].cpu, machine.costs[k].cuda}) {
      if (!(cost >= kMinTaskSeconds && cost <= kMaxTaskSeconds)) {
        reader.fail(path, "a task must take from " + Reader::shown(kMinTaskSeconds) + " to " +
                              Reader::shown(kMaxTaskSeconds) + " seconds on each architecture, not " +
                              Reader::shown(cost));
      }
    }
  }
  return machine;
}

SchedSimMachine SchedSimMachine::load(const std::string& file, std::size_t tile_bytes) {
  const detail::FileRead read = detail::read_regular_file(file, kMaxMachineFileBytes);
  if (read.status != detail::FileRead::Status::loaded) {
    throw InvalidArgument(
        "machine description '" + file + "' cannot be read: " +
        (read.status == detail::FileRead::Status::missing ? "No such file or directory" : read.reason));
  }
  return parse(read.text, file, tile_bytes);
}

std::string SchedSimMachine::to_json(std::string_view name) const { return description(name, 1, std::nullopt); }

std::string SchedSimMachine::cluster_json(std::string_view name, unsigned nodes, double send_seconds) const {
  return description(name, nodes, send_seconds);
}

std::string SchedSimMachine::description(std::string_view name, unsigned nodes,
                                         std::optional<double> send_seconds) const {
  std::string json = "{\n  \"name\": " + detail::json_quote(name) + ",\n";
  char line[256];
  std::snprintf(line, sizeof line, "  \"cpus\": %u,\n  \"gpus\": %u,\n", cpus * nodes, gpus * nodes);
  json += line;
  if (send_seconds) {
    std::snprintf(line, sizeof line, "  \"opencl\": %u,\n", nodes);
    json += line;
  }
  if (gpu_memory_json) json += "  \"gpu_memory\": " + *gpu_memory_json + ",\n";
  std::snprintf(line, sizeof line,
                "  \"link\": {\"bandwidth_gbs\": %.17g, \"latency_us\": %.17g},\n  \"codelets\": {\n", bandwidth_gbs,
                latency_us);
  json += line;
  for (std::size_t k = 0; k < kKernelNames.size(); ++k) {
    std::snprintf(line, sizeof line, "    \"%s\": {\"cpu\": %.17g, \"cuda\": %.17g}%s\n", kKernelNames[k].data(),
                  costs[k].cpu, costs[k].cuda, k + 1 < kKernelNames.size() || send_seconds.has_value() ? "," : "");
    json += line;
  }
  if (send_seconds) {
    std::snprintf(line, sizeof line, "    \"%s\": {\"opencl\": %.17g}\n", kSendName.data(), *send_seconds);
    json += line;
  }
  return json + "  }\n}\n";
}

}  // namespace hetflow::bench
