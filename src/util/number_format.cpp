#include "util/number_format.hpp"

#include <algorithm>
#include <cstddef>

namespace hetflow::detail {

void append_number(std::string& out, double value) {
  char buffer[32];  // the shortest round-trip form of a double needs at most 24 characters
  auto [ptr, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, ec == std::errc() ? ptr : buffer);
}

std::string format_number(double value) {
  std::string out;
  append_number(out, value);
  return out;
}

std::string format_fixed(double value, int decimals) {
  decimals = std::max(decimals, 0);
  // Room for the largest finite double written out in full: a sign, 309 digits and the point.
  constexpr std::size_t kIntegerPart = 311;
  std::string out(kIntegerPart + static_cast<std::size_t>(decimals), '\0');
  auto [ptr, ec] = std::to_chars(out.data(), out.data() + out.size(), value, std::chars_format::fixed, decimals);
  out.resize(ec == std::errc() ? static_cast<std::size_t>(ptr - out.data()) : 0);
  return out;
}

}  // namespace hetflow::detail
