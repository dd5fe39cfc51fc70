#pragma once
// A small JSON reader for the files hetflow reads (machine descriptions, traces in tests) and the
// string quoting its writers share. Not a general-purpose library: values are copied into a
// tree, and the whole text must fit in memory.
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace hetflow::detail {

/// Where a value starts in its text: 1-based line and column (the column counts bytes).
struct JsonPosition {
  std::size_t line = 1;
  std::size_t column = 1;
};

class JsonValue {
 public:
  enum class Kind { null, boolean, number, string, array, object };
  using Array = std::vector<JsonValue>;
  /// Members in document order (keys are unique: the parser rejects repeated keys).
  using Object = std::vector<std::pair<std::string, JsonValue>>;

  JsonValue() = default;  // null
  explicit JsonValue(bool value, JsonPosition position = {}) : value_(value), position_(position) {}
  explicit JsonValue(double value, JsonPosition position = {}) : value_(value), position_(position) {}
  explicit JsonValue(std::string value, JsonPosition position = {}) : value_(std::move(value)), position_(position) {}
  explicit JsonValue(Array value, JsonPosition position = {}) : value_(std::move(value)), position_(position) {}
  explicit JsonValue(Object value, JsonPosition position = {}) : value_(std::move(value)), position_(position) {}
  static JsonValue null(JsonPosition position) {
    JsonValue value;
    value.position_ = position;
    return value;
  }

  [[nodiscard]] Kind kind() const noexcept { return static_cast<Kind>(value_.index()); }
  [[nodiscard]] JsonPosition position() const noexcept { return position_; }
  [[nodiscard]] bool is_null() const noexcept { return kind() == Kind::null; }
  [[nodiscard]] bool is_bool() const noexcept { return kind() == Kind::boolean; }
  [[nodiscard]] bool is_number() const noexcept { return kind() == Kind::number; }
  [[nodiscard]] bool is_string() const noexcept { return kind() == Kind::string; }
  [[nodiscard]] bool is_array() const noexcept { return kind() == Kind::array; }
  [[nodiscard]] bool is_object() const noexcept { return kind() == Kind::object; }

  /// The value as that kind; InvalidArgument (with the value's line:column) if it is another.
  [[nodiscard]] bool as_bool() const;
  [[nodiscard]] double as_number() const;
  [[nodiscard]] const std::string& as_string() const;
  [[nodiscard]] const Array& as_array() const;
  [[nodiscard]] const Object& as_object() const;

  /// The member called `key`, or nullptr when there is none or this is not an object.
  [[nodiscard]] const JsonValue* find(std::string_view key) const noexcept;
  /// The member called `key`; InvalidArgument if this is not an object or has no such member.
  [[nodiscard]] const JsonValue& at(std::string_view key) const;
  /// Element `index` of an array; InvalidArgument if this is not an array or is too short.
  [[nodiscard]] const JsonValue& at(std::size_t index) const;

 private:
  // The alternatives are in the order of Kind, so that kind() is the variant's index.
  std::variant<std::monostate, bool, double, std::string, Array, Object> value_;
  JsonPosition position_;
};

/// "null", "a boolean", "a number", "a string", "an array" or "an object", for messages.
[[nodiscard]] std::string_view json_kind_name(JsonValue::Kind kind) noexcept;

struct JsonOptions {
  /// Accept // line and /* block */ comments where whitespace may go (hand-written files).
  bool comments = false;
};

/// Parses one JSON value (RFC 8259), surrounded by optional whitespace. A malformed text throws
/// InvalidArgument "<origin>:<line>:<column>: <what is wrong>". Nesting deeper than 256 levels
/// is refused rather than risking the stack.
[[nodiscard]] JsonValue parse_json(std::string_view text, std::string_view origin = "JSON", JsonOptions options = {});

/// `text` as a JSON string literal, quotes included: quotes, backslashes and control characters
/// are escaped, and bytes that are not valid UTF-8 become U+FFFD, so any text gives valid JSON.
[[nodiscard]] std::string json_quote(std::string_view text);
/// Appends json_quote(text) to `out`.
void append_json_quoted(std::string& out, std::string_view text);

}  // namespace hetflow::detail
