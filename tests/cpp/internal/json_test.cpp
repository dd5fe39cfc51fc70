// The internal JSON reader: every kind of value, escapes, positions in errors, and the quoting
// the trace writer relies on (what it writes must read back unchanged).
#include "util/json.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "hetflow/error.hpp"

namespace {

using hetflow::InvalidArgument;
using hetflow::detail::json_quote;
using hetflow::detail::JsonOptions;
using hetflow::detail::JsonValue;
using hetflow::detail::parse_json;

// The message of the InvalidArgument that parsing `text` throws ("" if it parses).
std::string parse_error(std::string_view text, JsonOptions options = {}) {
  try {
    (void)parse_json(text, "doc.json", options);
  } catch (const InvalidArgument& error) {
    return error.what();
  }
  return "";
}

TEST(Json, ReadsEveryKindOfValue) {
  const JsonValue doc = parse_json(R"( {"n": -12.5e1, "t": true, "f": false, "z": null,
      "s": "text", "a": [1, [2], {}], "o": {"k": "v"}} )");
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.as_object().size(), 7u);
  EXPECT_DOUBLE_EQ(doc.at("n").as_number(), -125.0);
  EXPECT_TRUE(doc.at("t").as_bool());
  EXPECT_FALSE(doc.at("f").as_bool());
  EXPECT_TRUE(doc.at("z").is_null());
  EXPECT_EQ(doc.at("s").as_string(), "text");
  const auto& array = doc.at("a").as_array();
  ASSERT_EQ(array.size(), 3u);
  EXPECT_DOUBLE_EQ(array[0].as_number(), 1.0);
  EXPECT_DOUBLE_EQ(array[1].at(0).as_number(), 2.0);
  EXPECT_TRUE(array[2].as_object().empty());
  EXPECT_EQ(doc.at("o").at("k").as_string(), "v");
  EXPECT_EQ(doc.find("missing"), nullptr);
  EXPECT_EQ(doc.at("s").find("k"), nullptr);  // not an object: no members
}

TEST(Json, KeepsMembersInDocumentOrder) {
  const JsonValue doc = parse_json(R"({"b": 1, "a": 2, "c": 3})");
  const auto& members = doc.as_object();
  ASSERT_EQ(members.size(), 3u);
  EXPECT_EQ(members[0].first, "b");
  EXPECT_EQ(members[1].first, "a");
  EXPECT_EQ(members[2].first, "c");
}

TEST(Json, ReadsScalarsAtTheTopLevel) {
  EXPECT_DOUBLE_EQ(parse_json("  0 ").as_number(), 0.0);
  EXPECT_DOUBLE_EQ(parse_json("1E+2").as_number(), 100.0);
  EXPECT_DOUBLE_EQ(parse_json("0.25").as_number(), 0.25);
  EXPECT_DOUBLE_EQ(parse_json("9007199254740993").as_number(), 9007199254740992.0);
  EXPECT_EQ(parse_json("\"x\"").as_string(), "x");
  EXPECT_TRUE(parse_json("null").is_null());
}

TEST(Json, DecodesEscapes) {
  EXPECT_EQ(parse_json(R"("a\"b\\c\/d\be\ff\ng\rh\ti")").as_string(), "a\"b\\c/d\be\ff\ng\rh\ti");
  EXPECT_EQ(parse_json(R"("\u0041\u00e9\u20AC")").as_string(), "A\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(parse_json(R"("\ud83d\ude00")").as_string(), "\xF0\x9F\x98\x80");  // a surrogate pair
  EXPECT_EQ(parse_json(R"("\u0000")").as_string(), std::string(1, '\0'));
  EXPECT_EQ(parse_json("\"caf\xC3\xA9\"").as_string(), "caf\xC3\xA9");  // raw UTF-8 passes through
}

TEST(Json, UnderflowReadsAsZeroAndOverflowIsAnError) {
  EXPECT_EQ(parse_json("1e-400").as_number(), 0.0);
  EXPECT_EQ(parse_json("0.0000001e-400").as_number(), 0.0);
  EXPECT_NE(parse_error("1e400").find("too large"), std::string::npos);
  EXPECT_NE(parse_error("-123e308").find("too large"), std::string::npos);
}

TEST(Json, ErrorsCarryOriginLineAndColumn) {
  EXPECT_EQ(parse_error("{\n  \"a\": 1,\n  \"b\": tru\n}"), "doc.json:3:8: expected 'true'");
  EXPECT_EQ(parse_error("[1, 2"), "doc.json:1:6: expected ',' or ']' in the array opened at 1:1, found end of text");
  EXPECT_EQ(parse_error("{\"a\" 1}"), "doc.json:1:6: expected ':' after the key, found '1'");
  EXPECT_EQ(parse_error("{\"a\": 1, \"a\": 2}"), "doc.json:1:10: key \"a\" appears twice in this object");
  EXPECT_EQ(parse_error("{a: 1}"), "doc.json:1:2: expected a key in quotes, found 'a'");
  EXPECT_EQ(parse_error("[1,]"), "doc.json:1:4: expected a value, found ']'");
  EXPECT_EQ(parse_error(""), "doc.json:1:1: expected a value, found the end of the text");
  EXPECT_EQ(parse_error("1 2"), "doc.json:1:3: unexpected '2' after the value");
  EXPECT_EQ(parse_error("\n\n  \"abc"), "doc.json:3:3: string not closed by '\"'");
}

TEST(Json, RejectsWhatTheGrammarForbids) {
  for (const char* text : {"01",
                           "-",
                           "1.",
                           ".5",
                           "1e",
                           "+1",
                           "NaN",
                           "Infinity",
                           "[1 2]",
                           "{\"a\":1,}",
                           "'x'",
                           "\"tab\there\"",
                           "\"\\x\"",
                           "\"\\u12\"",
                           "\"\\ud800\"",
                           "\"\\udc00\"",
                           "\"\\ud800\\u0041\"",
                           "truth",
                           "nul",
                           "[",
                           "{",
                           "// comment\n1"}) {
    EXPECT_NE(parse_error(text), "") << text;
  }
  EXPECT_NE(parse_error("\"\\q\"").find("unknown escape \\q"), std::string::npos);
  EXPECT_NE(parse_error("01").find("leading zeros"), std::string::npos);
}

TEST(Json, CommentsOnlyWhenAllowed) {
  const std::string text = "// machine\n{ /* block\n comment */ \"cpus\": 4 // trailing\n}";
  EXPECT_NE(parse_error(text), "");
  const JsonValue doc = parse_json(text, "doc.json", {.comments = true});
  EXPECT_DOUBLE_EQ(doc.at("cpus").as_number(), 4.0);
  EXPECT_EQ(parse_error("{} /* open", {.comments = true}), "doc.json:1:4: comment not closed by */");
  EXPECT_EQ(parse_error("{} / x", {.comments = true}), "doc.json:1:4: unexpected '/' (comments are // or /* */)");
}

TEST(Json, RefusesDeepNestingInsteadOfOverflowingTheStack) {
  const std::string deep(100000, '[');
  EXPECT_NE(parse_error(deep).find("nested more than 256 levels"), std::string::npos);
  const std::string fine = std::string(200, '[') + std::string(200, ']');
  EXPECT_NO_THROW((void)parse_json(fine));
}

TEST(Json, WrongKindAccessNamesThePosition) {
  const JsonValue doc = parse_json("{\n \"a\": \"text\"}");
  try {
    (void)doc.at("a").as_number();
    FAIL() << "as_number on a string did not throw";
  } catch (const InvalidArgument& error) {
    EXPECT_STREQ(error.what(), "JSON value at 2:7 is a string, not a number");
  }
  EXPECT_THROW((void)doc.at("b"), InvalidArgument);
  EXPECT_THROW((void)doc.at(std::size_t{0}), InvalidArgument);
  EXPECT_THROW((void)parse_json("[1]").at(std::size_t{1}), InvalidArgument);
}

TEST(Json, LargeObjectsStillDetectRepeatedKeys) {
  std::string text = "{";
  for (int i = 0; i < 100; ++i) text += "\"k" + std::to_string(i) + "\": " + std::to_string(i) + ",";
  std::string unique = text;
  unique.back() = '}';
  EXPECT_EQ(parse_json(unique).as_object().size(), 100u);
  text += "\"k42\": 0}";
  EXPECT_NE(parse_error(text).find("key \"k42\" appears twice"), std::string::npos);
}

TEST(Json, QuotingEscapesAndRoundTrips) {
  EXPECT_EQ(json_quote("plain"), "\"plain\"");
  EXPECT_EQ(json_quote("a\"b\\c\n\t"), R"("a\"b\\c\n\t")");
  EXPECT_EQ(json_quote(std::string("\x01\x1f\x7f", 3)), R"("\u0001\u001f\u007f")");
  const std::string tricky = std::string("name \"q\" \\ \n\r\t\b\f \x01 caf\xC3\xA9 \xF0\x9F\x98\x80 ") + '\0' + "end";
  EXPECT_EQ(parse_json(json_quote(tricky)).as_string(), tricky);
}

TEST(Json, QuotingReplacesInvalidUtf8) {
  // A stray continuation byte, a truncated sequence, an overlong '/', an encoded surrogate.
  EXPECT_EQ(json_quote("a\x80z"), "\"a\xEF\xBF\xBDz\"");
  EXPECT_EQ(json_quote("a\xC3"), "\"a\xEF\xBF\xBD\"");
  EXPECT_EQ(json_quote("\xC0\xAF"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
  EXPECT_EQ(json_quote("\xED\xA0\x80"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
  EXPECT_EQ(json_quote("\xF4\x90\x80\x80"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");  // > U+10FFFF
}

}  // namespace
