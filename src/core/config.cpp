#include <cctype>
#include <cstdlib>
#include <string>

#include "drivers/cpu/topology.hpp"
#include "hetflow/config.hpp"
#include "hetflow/error.hpp"

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
  throw InvalidArgument(std::string(variable) + "='" + text + "' is not a boolean (use 1 or 0)");
}

constexpr unsigned kMaxWorkers = 4096;

}  // namespace

Config Config::resolved() const {
  Config out = *this;
  if (!out.ncpus) {
    auto text = env("HETFLOW_NCPUS");
    out.ncpus = text ? parse_unsigned(*text, "HETFLOW_NCPUS", 0, kMaxWorkers) : detail::available_cpu_count();
  } else if (*out.ncpus > kMaxWorkers) {
    throw InvalidArgument("Config::ncpus=" + std::to_string(*out.ncpus) + " is more than " +
                          std::to_string(kMaxWorkers));
  }
  if (!out.scheduler) out.scheduler = env("HETFLOW_SCHED").value_or("ws");
  if (!out.pin_workers) {
    auto text = env("HETFLOW_PIN");
    out.pin_workers = text ? parse_bool(*text, "HETFLOW_PIN") : false;
  }
  if (!out.spin_us) {
    auto text = env("HETFLOW_SPIN_US");
    out.spin_us = text ? parse_unsigned(*text, "HETFLOW_SPIN_US", 0, 1'000'000) : 50;
  }
  return out;
}

}  // namespace hetflow
