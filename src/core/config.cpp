#include "hetflow/config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <system_error>

#include "hetflow/error.hpp"
#include "hetflow/ext/driver.hpp"
#include "perfmodel/storage.hpp"
#include "platform/topology.hpp"
#include "sim/machine.hpp"

namespace hetflow {
namespace {

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

unsigned parse_unsigned(const std::string& text, const char* variable, unsigned min, unsigned max) {
  std::size_t used = 0;
  unsigned long value = 0;
  try {
    value = std::stoul(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const bool digits_only = !text.empty() && std::isdigit(static_cast<unsigned char>(text[0])) != 0;
  if (used != text.size() || !digits_only || value < min || value > max) {
    throw InvalidArgument(std::string(variable) + "='" + text + "' is not a whole number from " + std::to_string(min) +
                          " to " + std::to_string(max));
  }
  return static_cast<unsigned>(value);
}

bool parse_bool(const std::string& text, const char* variable) {
  if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
  if (text == "0" || text == "false" || text == "no" || text == "off") return false;
  throw InvalidArgument(std::string(variable) + "='" + text +
                        "' is not a boolean (1, true, yes, on or 0, false, no, off)");
}

constexpr unsigned kMaxWorkers = 4096;

std::size_t parse_bytes(std::string_view text, const std::string& what) {
  const std::string digits(text);
  std::size_t used = 0;
  while (used < digits.size() && std::isdigit(static_cast<unsigned char>(digits[used])) != 0) ++used;
  if (used == 0) {
    throw InvalidArgument(what + ": '" + digits + "' is not a size in bytes (e.g. 65536, 64K, 512M, 2G)");
  }
  const std::string suffix = digits.substr(used);
  std::size_t scale = 1;
  if (suffix == "K" || suffix == "KiB")
    scale = std::size_t{1} << 10;
  else if (suffix == "M" || suffix == "MiB")
    scale = std::size_t{1} << 20;
  else if (suffix == "G" || suffix == "GiB")
    scale = std::size_t{1} << 30;
  else if (!suffix.empty())
    throw InvalidArgument(what + ": unknown size suffix '" + suffix + "' (use K, M or G)");
  // Unchecked, a size past the range wrapped around to a small one (or to 0).
  constexpr std::size_t kMostBytes = std::numeric_limits<std::size_t>::max();
  std::size_t value = 0;
  const std::from_chars_result parsed = std::from_chars(digits.data(), digits.data() + used, value);
  if (parsed.ec == std::errc::result_out_of_range || value > kMostBytes / scale) {
    throw InvalidArgument(what + ": '" + digits + "' is too large (more than " + std::to_string(kMostBytes) +
                          " bytes)");
  }
  return value * scale;
}

std::map<unsigned, std::size_t> parse_memory_limits(const std::string& text) {
  std::map<unsigned, std::size_t> limits;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    const std::size_t colon = item.find(':');
    if (colon == std::string::npos) {
      throw InvalidArgument("HETFLOW_MEMORY_LIMITS='" + text + "': each item is NODE:BYTES, e.g. 1:64M");
    }
    const unsigned node = parse_unsigned(item.substr(0, colon), "HETFLOW_MEMORY_LIMITS node", 1, kMaxWorkers);
    const std::size_t bytes = parse_bytes(std::string_view(item).substr(colon + 1), "HETFLOW_MEMORY_LIMITS");
    if (bytes == 0) {
      throw InvalidArgument("HETFLOW_MEMORY_LIMITS='" + text + "': node " + std::to_string(node) +
                            " is given 0 bytes (leave it out for no limit)");
    }
    if (!limits.emplace(node, bytes).second) {
      throw InvalidArgument("HETFLOW_MEMORY_LIMITS='" + text + "': node " + std::to_string(node) +
                            " is given a limit twice");
    }
    start = comma + 1;
  }
  return limits;
}

// Work stealing is the fastest on host threads but keeps tasks on the architecture they were
// submitted for; with devices, the choice between them is the scheduler's main job.
std::string default_scheduler(const Config& config) {
  if (config.simulate && !config.simulate->empty()) return "dmdas";
  for (const auto& driver : config.drivers) {
    if (driver && driver->worker_count() > 0 && (driver->arch() == Arch::cuda || driver->arch() == Arch::opencl)) {
      return "dmdas";
    }
  }
  return "ws";
}

}  // namespace

Config Config::resolved() const {
  Config out = *this;
  if (!out.ncpus) {
    auto text = env("HETFLOW_NCPUS");
    if (text) {
      // 0 is no default: a runtime without CPU workers is asked for in code (Config::ncpus).
      try {
        out.ncpus = parse_unsigned(*text, "HETFLOW_NCPUS", 1, kMaxWorkers);
      } catch (const InvalidArgument&) {
        throw InvalidArgument("HETFLOW_NCPUS must be a positive whole number, not '" + *text + "' (at most " +
                              std::to_string(kMaxWorkers) + "; unset, one worker per CPU this process may use)");
      }
    } else {
      out.ncpus = detail::available_cpu_count();
    }
  } else if (*out.ncpus > kMaxWorkers) {
    throw InvalidArgument("Config::ncpus=" + std::to_string(*out.ncpus) + " is more than " +
                          std::to_string(kMaxWorkers));
  }
  if (!out.pin_workers) {
    auto text = env("HETFLOW_PIN");
    out.pin_workers = text ? parse_bool(*text, "HETFLOW_PIN") : false;
  }
  constexpr unsigned kMostSpinUs = 10'000'000;
  if (!out.spin_us) {
    auto text = env("HETFLOW_SPIN_US");
    out.spin_us = text ? parse_unsigned(*text, "HETFLOW_SPIN_US", 0, kMostSpinUs) : 50;
  } else if (*out.spin_us > kMostSpinUs) {
    throw InvalidArgument("Config::spin_us=" + std::to_string(*out.spin_us) + " is more than " +
                          std::to_string(kMostSpinUs) + " (10 s)");
  }
  constexpr unsigned kMostSpareThreads = 65536;
  if (!out.spare_threads) {
    auto text = env("HETFLOW_SPARE_THREADS");
    out.spare_threads = text ? parse_unsigned(*text, "HETFLOW_SPARE_THREADS", 0, kMostSpareThreads) : 4096;
  } else if (*out.spare_threads > kMostSpareThreads) {
    throw InvalidArgument("Config::spare_threads=" + std::to_string(*out.spare_threads) + " is more than " +
                          std::to_string(kMostSpareThreads));
  }
  constexpr std::size_t kLeastStack = std::size_t{64} << 10;
  constexpr std::size_t kMostStack = std::size_t{16} << 30;
  if (!out.worker_stack_bytes) {
    auto text = env("HETFLOW_WORKER_STACK");
    out.worker_stack_bytes = text ? parse_bytes(*text, "HETFLOW_WORKER_STACK") : 0;
  }
  if (*out.worker_stack_bytes != 0 && (*out.worker_stack_bytes < kLeastStack || *out.worker_stack_bytes > kMostStack)) {
    throw InvalidArgument("Config::worker_stack_bytes=" + std::to_string(*out.worker_stack_bytes) +
                          " (or HETFLOW_WORKER_STACK) is outside 64 KiB to 16 GiB; 0 means the system's default");
  }
  if (!out.trace_path) out.trace_path = env("HETFLOW_TRACE").value_or("");
  if (!out.stats) {
    auto text = env("HETFLOW_STATS");
    out.stats = text ? parse_bool(*text, "HETFLOW_STATS") : false;
  }
  if (!out.simulate) out.simulate = env("HETFLOW_SIMULATE").value_or("");
  // After `simulate`, which it depends on.
  if (!out.scheduler) out.scheduler = env("HETFLOW_SCHED").value_or(default_scheduler(out));
  if (out.memory_limits.empty()) {
    if (auto text = env("HETFLOW_MEMORY_LIMITS")) out.memory_limits = parse_memory_limits(*text);
  }
  if (out.memory_limits.count(0) != 0) {
    throw InvalidArgument("Config::memory_limits: node 0 is host RAM, which cannot be limited");
  }
  for (const auto& [node, bytes] : out.memory_limits) {
    if (bytes == 0) {
      throw InvalidArgument("Config::memory_limits: node " + std::to_string(node) +
                            " is given 0 bytes (leave it out for no limit)");
    }
  }
  return out;
}

void Config::check() const {
  const Config full = resolved();
  // Read as each performance model is made: a malformed value fails every task that has one.
  static_cast<void>(detail::default_calibration_samples());
  if (full.simulate->empty()) return;
  try {
    static_cast<void>(detail::MachineSpec::load(*full.simulate));
  } catch (const InvalidArgument& error) {
    throw InvalidArgument(std::string(simulate ? "Config::simulate" : "HETFLOW_SIMULATE") + "='" + *full.simulate +
                          "': " + error.what());
  }
}

}  // namespace hetflow
