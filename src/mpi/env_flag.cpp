#include "mpi/env_flag.hpp"

#include <cstdlib>
#include <string>
#include <string_view>

#include "hetflow/error.hpp"

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

}  // namespace hetflow::mpi
