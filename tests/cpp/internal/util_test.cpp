// The text helpers shared by the model files and the trace writer: numbers written there must
// read back exactly, and lines must split the same way whatever the spacing or line endings.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "util/device_share.hpp"
#include "util/number_format.hpp"
#include "util/text_fields.hpp"

namespace {

using hetflow::detail::append_number;
using hetflow::detail::format_fixed;
using hetflow::detail::format_number;
using hetflow::detail::parse_number;
using hetflow::detail::split_fields;
using hetflow::detail::take_line;

template <class T>
std::string decimal(T value) {
  std::string out;
  append_number(out, value);
  return out;
}

TEST(NumberFormat, IntegersInDecimal) {
  EXPECT_EQ(decimal(std::uint64_t{0}), "0");
  EXPECT_EQ(decimal(std::numeric_limits<std::uint64_t>::max()), "18446744073709551615");
  EXPECT_EQ(decimal(std::numeric_limits<std::int64_t>::min()), "-9223372036854775808");
  EXPECT_EQ(decimal(42u), "42");
  // Appended after what is there already.
  std::string out = format_number(0.5);
  out += ' ';
  append_number(out, std::size_t{7});
  EXPECT_EQ(out, "0.5 7");
}

TEST(NumberFormat, DoublesShortestAndExact) {
  EXPECT_EQ(format_number(0.5), "0.5");
  EXPECT_EQ(format_number(1e-7), "1e-07");
  EXPECT_EQ(format_number(12.0), "12");
  EXPECT_EQ(format_number(-0.25), "-0.25");
  EXPECT_EQ(format_number(std::numeric_limits<double>::infinity()), "inf");
  for (double value : {0.1, 1.0 / 3.0, 6.02214076e23, 5e-324, std::numeric_limits<double>::max(), 123456.789e-3}) {
    const std::string text = format_number(value);
    const auto back = parse_number<double>(text);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(*back, value) << text;
  }
  std::string out = "x ";
  append_number(out, 2.5);
  EXPECT_EQ(out, "x 2.5");
}

TEST(NumberFormat, FixedDecimals) {
  EXPECT_EQ(format_fixed(0.5, 6), "0.500000");
  EXPECT_EQ(format_fixed(12.345, 1), "12.3");
  EXPECT_EQ(format_fixed(99.96, 1), "100.0");
  EXPECT_EQ(format_fixed(-1.0 / 3.0, 2), "-0.33");
  EXPECT_EQ(format_fixed(2.5, 0), "2");  // to nearest, ties to even, as printf
  EXPECT_EQ(format_fixed(7.0, -3), "7");
  // The largest double in full: 309 digits, then the decimals.
  const std::string largest = format_fixed(std::numeric_limits<double>::max(), 6);
  EXPECT_EQ(largest.size(), 309u + 1 + 6);
  EXPECT_EQ(largest.substr(0, 5), "17976");
  EXPECT_EQ(format_fixed(-std::numeric_limits<double>::max(), 2).size(), 1u + 309 + 1 + 2);
}

TEST(TextFields, TakeLineHandlesEveryEnding) {
  std::string_view text = "first\r\nsecond\n\nlast";
  EXPECT_EQ(take_line(text), "first");
  EXPECT_EQ(take_line(text), "second");
  EXPECT_EQ(take_line(text), "");
  EXPECT_EQ(take_line(text), "last");
  EXPECT_TRUE(text.empty());

  std::string_view ends_with_newline = "only\n";
  EXPECT_EQ(take_line(ends_with_newline), "only");
  EXPECT_TRUE(ends_with_newline.empty());
}

TEST(TextFields, SplitOnSpacesAndTabs) {
  using Fields = std::vector<std::string_view>;
  EXPECT_EQ(split_fields("cpu 1024  3\t0.5"), (Fields{"cpu", "1024", "3", "0.5"}));
  EXPECT_EQ(split_fields("  \t leading and trailing \t "), (Fields{"leading", "and", "trailing"}));
  EXPECT_TRUE(split_fields("").empty());
  EXPECT_TRUE(split_fields(" \t ").empty());
}

TEST(TextFields, ParseNumberTakesTheWholeTextOnly) {
  EXPECT_EQ(parse_number<std::uint64_t>("1024"), 1024u);
  EXPECT_EQ(parse_number<int>("-3"), -3);
  EXPECT_EQ(parse_number<double>("2.5e-3"), 2.5e-3);
  EXPECT_FALSE(parse_number<std::uint64_t>("").has_value());
  EXPECT_FALSE(parse_number<std::uint64_t>("12x").has_value());
  EXPECT_FALSE(parse_number<std::uint64_t>(" 12").has_value());
  EXPECT_FALSE(parse_number<std::uint64_t>("+12").has_value());
  EXPECT_FALSE(parse_number<std::uint64_t>("-1").has_value());
  EXPECT_FALSE(parse_number<std::uint64_t>("18446744073709551616").has_value());
  EXPECT_FALSE(parse_number<double>("1e999").has_value());
  // A view into a longer text: only the view's characters count.
  const std::string_view line = "12345";
  EXPECT_EQ(parse_number<int>(line.substr(0, 2)), 12);
}

// Ranks of a machine deal its devices round-robin; with fewer devices than ranks, each rank
// gets one, shared.
TEST(DeviceShare, DevicesAreDealtRoundRobinAndSharedWhenTooFew) {
  using hetflow::detail::dealt_share;
  using Share = std::vector<std::size_t>;
  EXPECT_EQ(dealt_share(8, 1, 3), (Share{1, 4, 7}));
  EXPECT_EQ(dealt_share(8, 2, 3), (Share{2, 5}));
  EXPECT_EQ(dealt_share(4, 0, 1), (Share{0, 1, 2, 3}));
  EXPECT_EQ(dealt_share(2, 3, 4), (Share{1}));
  EXPECT_EQ(dealt_share(1, 2, 4), (Share{0}));
  EXPECT_TRUE(dealt_share(0, 0, 2).empty());
}

}  // namespace
