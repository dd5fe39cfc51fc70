#include "mpi/env_flag.hpp"

#include <cmath>
#include <cstdlib>
#include <string>
#include <string_view>

#include "hetflow/error.hpp"
#include "util/text_fields.hpp"

namespace hetflow::mpi {

bool env_flag(const char* variable) {
  const char* text = std::getenv(variable);
  if (text == nullptr || *text == '\0') return false;
  const std::string_view value(text);
  if (value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value == "0" || value == "false" || value == "no" || value == "off") return false;
  throw InvalidArgument(std::string(variable) + "='" + text +
                        "' is not a boolean (1, true, yes, on or 0, false, no, off)");
}

std::optional<double> env_seconds(const char* variable, double most, const std::string& expected) {
  const char* text = std::getenv(variable);
  if (text == nullptr || *text == '\0') return std::nullopt;
  const std::string_view value(text);
  // A leading digit or point leaves out signs, spaces, "inf" and "nan", which from_chars takes.
  const bool starts_as_a_number = (value.front() >= '0' && value.front() <= '9') || value.front() == '.';
  const std::optional<double> seconds = detail::parse_number<double>(value);
  if (!starts_as_a_number || !seconds || !std::isfinite(*seconds) || *seconds > most) {
    throw InvalidArgument(std::string(variable) + "='" + text + "': " + expected);
  }
  return seconds;
}

}  // namespace hetflow::mpi
