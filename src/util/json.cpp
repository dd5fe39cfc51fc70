// The JSON reader: a recursive-descent parser over the text that keeps the line and column of
// every value, so that the files' readers can point at the value they reject.
#include "util/json.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>
#include <system_error>
#include <unordered_set>

#include "hetflow/error.hpp"

namespace hetflow::detail {
namespace {

std::string position_text(JsonPosition position) {
  return std::to_string(position.line) + ":" + std::to_string(position.column);
}

[[noreturn]] void wrong_kind(const JsonValue& value, JsonValue::Kind wanted) {
  throw InvalidArgument("JSON value at " + position_text(value.position()) + " is " +
                        std::string(json_kind_name(value.kind())) + ", not " + std::string(json_kind_name(wanted)));
}

void append_utf8(std::string& out, std::uint32_t code_point) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

// The power of ten of a valid JSON number's first significant digit (2 for 345, -3 for 0.00345,
// 7 for 3.45e7), saturated; the number must not be zero.
long decimal_order(std::string_view literal) noexcept {
  const std::size_t exponent_at = std::min(literal.find_first_of("eE"), literal.size());
  const std::string_view mantissa = literal.substr(0, exponent_at);
  const std::size_t point = std::min(mantissa.find('.'), mantissa.size());
  const std::size_t first_significant = mantissa.find_first_of("123456789");
  long order = first_significant < point ? static_cast<long>(point - first_significant) - 1
                                         : -static_cast<long>(first_significant - point);
  long exponent = 0;
  if (exponent_at < literal.size()) {
    std::string_view digits = literal.substr(exponent_at + 1);
    const bool negative = digits.front() == '-';
    if (digits.front() == '+' || digits.front() == '-') digits.remove_prefix(1);
    constexpr long kSaturated = 1'000'000'000;
    for (char c : digits) exponent = std::min(kSaturated, exponent * 10 + (c - '0'));
    if (negative) exponent = -exponent;
  }
  return order + exponent;
}

class Parser {
 public:
  Parser(std::string_view text, std::string_view origin, JsonOptions options)
      : text_(text), origin_(origin), options_(options) {}

  JsonValue parse_document() {
    skip_space();
    JsonValue value = parse_value(0);
    skip_space();
    if (!at_end()) fail("unexpected " + describe_here() + " after the value");
    return value;
  }

 private:
  static constexpr std::size_t kMaxDepth = 256;

  [[nodiscard]] bool at_end() const noexcept { return pos_ >= text_.size(); }
  [[nodiscard]] char peek() const noexcept { return at_end() ? '\0' : text_[pos_]; }
  [[nodiscard]] JsonPosition here() const noexcept { return {line_, pos_ - line_start_ + 1}; }

  // Lines and columns are tracked as the parser moves, so every position costs nothing extra.
  void advance() noexcept {
    if (text_[pos_] == '\n') {
      ++line_;
      line_start_ = pos_ + 1;
    }
    ++pos_;
  }

  [[noreturn]] void fail_at(JsonPosition position, const std::string& what) const {
    throw InvalidArgument(std::string(origin_) + ":" + position_text(position) + ": " + what);
  }
  [[noreturn]] void fail(const std::string& what) const { fail_at(here(), what); }

  [[nodiscard]] std::string describe_here() const {
    if (at_end()) return "end of text";
    const auto c = static_cast<unsigned char>(peek());
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    return "byte " + std::to_string(c);
  }

  void skip_space() {
    while (!at_end()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else if (c == '/' && options_.comments) {
        skip_comment();
      } else {
        return;
      }
    }
  }

  void skip_comment() {
    const JsonPosition start = here();
    advance();  // the first '/'
    if (peek() == '/') {
      while (!at_end() && peek() != '\n') advance();
    } else if (peek() == '*') {
      advance();
      while (true) {
        if (at_end()) fail_at(start, "comment not closed by */");
        if (peek() == '*' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '/') {
          advance();
          advance();
          return;
        }
        advance();
      }
    } else {
      fail_at(start, "unexpected '/' (comments are // or /* */)");
    }
  }

  void expect_word(std::string_view word) {
    const JsonPosition start = here();
    if (text_.substr(pos_, word.size()) != word) fail_at(start, "expected '" + std::string(word) + "'");
    for (std::size_t i = 0; i < word.size(); ++i) advance();
  }

  JsonValue parse_value(std::size_t depth) {
    const JsonPosition start = here();
    switch (peek()) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': return JsonValue(parse_string(), start);
      case 't': expect_word("true"); return JsonValue(true, start);
      case 'f': expect_word("false"); return JsonValue(false, start);
      case 'n': expect_word("null"); return JsonValue::null(start);
      default: break;
    }
    if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parse_number();
    fail(at_end() ? "expected a value, found the end of the text" : "expected a value, found " + describe_here());
  }

  void enter(std::size_t depth) const {
    if (depth >= kMaxDepth) fail("values nested more than " + std::to_string(kMaxDepth) + " levels deep");
  }

  JsonValue parse_object(std::size_t depth) {
    enter(depth);
    const JsonPosition start = here();
    advance();  // '{'
    JsonValue::Object members;
    std::unordered_set<std::string> seen_keys;  // filled only for large objects
    skip_space();
    if (peek() == '}') {
      advance();
      return JsonValue(std::move(members), start);
    }
    while (true) {
      skip_space();
      const JsonPosition key_position = here();
      if (peek() != '"') fail("expected a key in quotes, found " + describe_here());
      std::string key = parse_string();
      if (!is_new_key(members, seen_keys, key)) {
        fail_at(key_position, "key \"" + key + "\" appears twice in this object");
      }
      skip_space();
      if (peek() != ':') fail("expected ':' after the key, found " + describe_here());
      advance();
      skip_space();
      JsonValue value = parse_value(depth + 1);
      members.emplace_back(std::move(key), std::move(value));
      skip_space();
      if (peek() == ',') {
        advance();
        continue;
      }
      if (peek() == '}') {
        advance();
        return JsonValue(std::move(members), start);
      }
      fail("expected ',' or '}' in the object opened at " + position_text(start) + ", found " + describe_here());
    }
  }

  // Small objects (the usual case) are searched in place; large ones keep a set of their keys
  // so that reading one stays linear.
  static bool is_new_key(const JsonValue::Object& members, std::unordered_set<std::string>& seen,
                         const std::string& key) {
    constexpr std::size_t kLinearSearchLimit = 16;
    if (members.size() < kLinearSearchLimit) {
      for (const auto& member : members) {
        if (member.first == key) return false;
      }
      return true;
    }
    if (seen.empty()) {
      for (const auto& member : members) seen.insert(member.first);
    }
    return seen.insert(key).second;
  }

  JsonValue parse_array(std::size_t depth) {
    enter(depth);
    const JsonPosition start = here();
    advance();  // '['
    JsonValue::Array elements;
    skip_space();
    if (peek() == ']') {
      advance();
      return JsonValue(std::move(elements), start);
    }
    while (true) {
      skip_space();
      elements.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        advance();
        continue;
      }
      if (peek() == ']') {
        advance();
        return JsonValue(std::move(elements), start);
      }
      fail("expected ',' or ']' in the array opened at " + position_text(start) + ", found " + describe_here());
    }
  }

  JsonValue parse_number() {
    const JsonPosition start = here();
    const std::size_t first = pos_;
    auto digits = [&] {
      std::size_t count = 0;
      while (peek() >= '0' && peek() <= '9') {
        advance();
        ++count;
      }
      return count;
    };
    if (peek() == '-') advance();
    if (peek() == '0') {
      advance();
      if (peek() >= '0' && peek() <= '9') fail_at(start, "numbers must not have leading zeros");
    } else if (digits() == 0) {
      fail("expected a digit, found " + describe_here());
    }
    if (peek() == '.') {
      advance();
      if (digits() == 0) fail("expected a digit after '.', found " + describe_here());
    }
    if (peek() == 'e' || peek() == 'E') {
      advance();
      if (peek() == '+' || peek() == '-') advance();
      if (digits() == 0) fail("expected a digit in the exponent, found " + describe_here());
    }
    const std::string_view literal = text_.substr(first, pos_ - first);
    double value = 0;
    const auto [end, error] = std::from_chars(literal.data(), literal.data() + literal.size(), value);
    if (error == std::errc::result_out_of_range) {
      // Too small to represent reads as 0, as other readers do; too large is an error.
      if (decimal_order(literal) >= 0) fail_at(start, "number " + std::string(literal) + " is too large");
      value = literal.front() == '-' ? -0.0 : 0.0;
    } else if (error != std::errc() || end != literal.data() + literal.size()) {
      fail_at(start, "malformed number " + std::string(literal));
    }
    return JsonValue(value, start);
  }

  std::uint32_t parse_hex4() {
    std::uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = peek();
      std::uint32_t digit = 0;
      if (c >= '0' && c <= '9') {
        digit = static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        digit = static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        digit = static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        fail("expected 4 hexadecimal digits after \\u, found " + describe_here());
      }
      value = value * 16 + digit;
      advance();
    }
    return value;
  }

  std::string parse_string() {
    const JsonPosition start = here();
    advance();  // the opening quote
    std::string out;
    while (true) {
      if (at_end()) fail_at(start, "string not closed by '\"'");
      const char c = peek();
      if (c == '"') {
        advance();
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        fail(c == '\n' ? "string not closed before the end of the line"
                       : "control character (byte " + std::to_string(static_cast<unsigned char>(c)) +
                             ") in a string: write it as an escape");
      }
      if (c != '\\') {
        // Plain bytes up to the next quote, escape or control character go in one piece
        // (no newline among them, so the column bookkeeping is a plain move).
        std::size_t run_end = pos_;
        while (run_end < text_.size() && text_[run_end] != '"' && text_[run_end] != '\\' &&
               static_cast<unsigned char>(text_[run_end]) >= 0x20) {
          ++run_end;
        }
        out.append(text_.substr(pos_, run_end - pos_));
        pos_ = run_end;
        continue;
      }
      const JsonPosition escape_position = here();
      advance();
      if (at_end()) fail_at(start, "string not closed by '\"'");
      const char e = peek();
      advance();
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': append_utf8(out, parse_unicode_escape(escape_position)); break;
        default:
          fail_at(escape_position,
                  std::string("unknown escape \\") + e + " (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
      }
    }
  }

  // After "\u": a code point, from one escape or from a surrogate pair of two.
  std::uint32_t parse_unicode_escape(JsonPosition escape_position) {
    const std::uint32_t first = parse_hex4();
    if (first >= 0xDC00 && first <= 0xDFFF) fail_at(escape_position, "\\u escape is a lone low surrogate");
    if (first < 0xD800 || first > 0xDBFF) return first;
    if (text_.substr(pos_, 2) != "\\u") {
      fail_at(escape_position, "\\u escape is a high surrogate not followed by a low surrogate escape");
    }
    advance();
    advance();
    const std::uint32_t second = parse_hex4();
    if (second < 0xDC00 || second > 0xDFFF) {
      fail_at(escape_position, "\\u escape is a high surrogate not followed by a low surrogate escape");
    }
    return 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
  }

  std::string_view text_;
  std::string_view origin_;
  JsonOptions options_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
  std::size_t line_start_ = 0;
};

// The length of the valid UTF-8 sequence at the start of `text`, or 0 if it is not one
// (overlong forms, surrogates and code points past U+10FFFF are not valid).
std::size_t utf8_sequence_length(std::string_view text) noexcept {
  const auto lead = static_cast<unsigned char>(text[0]);
  std::size_t length = 0;
  std::uint32_t min = 0;
  std::uint32_t code_point = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    min = 0x80;
    code_point = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    min = 0x800;
    code_point = lead & 0x0Fu;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    min = 0x10000;
    code_point = lead & 0x07u;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    const auto next = static_cast<unsigned char>(text[i]);
    if ((next & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (next & 0x3Fu);
  }
  if (code_point < min || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) return 0;
  return length;
}

}  // namespace

std::string_view json_kind_name(JsonValue::Kind kind) noexcept {
  switch (kind) {
    case JsonValue::Kind::null: return "null";
    case JsonValue::Kind::boolean: return "a boolean";
    case JsonValue::Kind::number: return "a number";
    case JsonValue::Kind::string: return "a string";
    case JsonValue::Kind::array: return "an array";
    case JsonValue::Kind::object: return "an object";
  }
  return "unknown";
}

bool JsonValue::as_bool() const {
  if (!is_bool()) wrong_kind(*this, Kind::boolean);
  return std::get<bool>(value_);
}

double JsonValue::as_number() const {
  if (!is_number()) wrong_kind(*this, Kind::number);
  return std::get<double>(value_);
}

const std::string& JsonValue::as_string() const {
  if (!is_string()) wrong_kind(*this, Kind::string);
  return std::get<std::string>(value_);
}

const JsonValue::Array& JsonValue::as_array() const {
  if (!is_array()) wrong_kind(*this, Kind::array);
  return std::get<Array>(value_);
}

const JsonValue::Object& JsonValue::as_object() const {
  if (!is_object()) wrong_kind(*this, Kind::object);
  return std::get<Object>(value_);
}

const JsonValue* JsonValue::find(std::string_view key) const noexcept {
  const auto* members = std::get_if<Object>(&value_);
  if (members == nullptr) return nullptr;
  for (const auto& member : *members) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

const JsonValue& JsonValue::at(std::string_view key) const {
  const Object& members = as_object();
  for (const auto& member : members) {
    if (member.first == key) return member.second;
  }
  throw InvalidArgument("JSON object at " + position_text(position_) + " has no key \"" + std::string(key) + "\"");
}

const JsonValue& JsonValue::at(std::size_t index) const {
  const Array& elements = as_array();
  if (index >= elements.size()) {
    throw InvalidArgument("JSON array at " + position_text(position_) + " has " + std::to_string(elements.size()) +
                          " elements, no element " + std::to_string(index));
  }
  return elements[index];
}

JsonValue parse_json(std::string_view text, std::string_view origin, JsonOptions options) {
  return Parser(text, origin, options).parse_document();
}

void append_json_quoted(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const std::size_t length = utf8_sequence_length(text.substr(i));
      if (length == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD: readers reject JSON that is not UTF-8
        ++i;
      } else {
        out.append(text.substr(i, length));
        i += length;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_json_quoted(out, text);
  return out;
}

}  // namespace hetflow::detail
