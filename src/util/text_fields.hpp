#pragma once
// Reading line-oriented text files whose lines are whitespace-separated fields (performance and
// bus models).
#include <charconv>
#include <optional>
#include <string_view>
#include <system_error>
#include <vector>

namespace hetflow::detail {

/// Takes the first line off `text` (without its "\n" or "\r\n") and returns it.
[[nodiscard]] std::string_view take_line(std::string_view& text);

/// The fields of `line`, separated by spaces and tabs; empty for a blank line.
[[nodiscard]] std::vector<std::string_view> split_fields(std::string_view line);

/// The whole of `text` as a number, or nullopt (also for leading or trailing characters, a
/// leading '+', or a value out of T's range).
template <class T>
[[nodiscard]] std::optional<T> parse_number(std::string_view text) {
  T value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

}  // namespace hetflow::detail
