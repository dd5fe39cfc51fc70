#pragma once
// Numbers as text for the files and reports hetflow writes. Independent of the C locale, so a
// program that sets one (a decimal comma, say) still writes files that read back.
#include <charconv>
#include <concepts>
#include <string>

namespace hetflow::detail {

/// Appends `value` in decimal ("42", "-7").
template <std::integral T>
void append_number(std::string& out, T value) {
  char buffer[24];  // the longest 64-bit integer, with its sign
  auto [ptr, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, ec == std::errc() ? ptr : buffer);
}

/// Appends the shortest text that reads back as exactly `value` ("0.5", "1e-07", "inf").
void append_number(std::string& out, double value);

/// The shortest text that reads back as exactly `value`.
[[nodiscard]] std::string format_number(double value);

/// `value` with `decimals` digits after the point ("0.500000" for 6), rounded to nearest.
/// A negative `decimals` counts as 0.
[[nodiscard]] std::string format_fixed(double value, int decimals);

}  // namespace hetflow::detail
