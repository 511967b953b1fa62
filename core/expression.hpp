#pragma once
// The expression language of a step's `when:` and `gate:` conditions, e.g.
// `steps.evaluate.metrics.accuracy >= params.min_accuracy and params.deploy`,
// `always()`, `accuracy >= previous.accuracy`.
//
//   or         := and ( ('or' | '||') and )*
//   and        := not ( ('and' | '&&') not )*
//   not        := ('not' | '!') not | comparison
//   comparison := sum ( ('==' | '!=' | '<' | '<=' | '>' | '>=') sum )?
//   sum        := product ( ('+' | '-') product )*
//   product    := unary ( ('*' | '/' | '%') unary )*
//   unary      := '-' unary | primary
//   primary    := number | string | 'true' | 'false' | 'null'
//               | reference | name '(' [ or ( ',' or )* ] ')' | '(' or ')'
//   reference  := name ( '.' segment | '[' string ']' )*
//
// Numbers are decimal: 3, 0.9, 1e-3 (not .5). Strings take single or double
// quotes and the escapes \\ \' \" \n \t. `and or not true false null` are
// reserved: they cannot start a reference (they may follow a dot). Binary
// operators are left-associative; comparisons do not chain (`a < b < c` is an
// error). `not` binds looser than comparisons: `not a == b` is
// `not (a == b)`, and so is `!a == b`.
//
// A reference is one token, written without spaces (except inside its
// brackets). Its first name is [A-Za-z_][A-Za-z0-9_]*; a name after a dot is
// [A-Za-z_][A-Za-z0-9_]* and may go on with '-' joined on both sides to name
// characters: in `steps.pre-process.status` the '-' is part of the name, in
// `steps.a.x-1` too (the name "x-1"); in `a-b`, `a.x - 1` and `a.x -1` it is
// a minus. Any other name is written as an index, `metrics["val/loss"]`.
//
// Values are null, booleans, numbers (double) and strings. Arithmetic takes
// numbers (and `+` two strings, which it concatenates); `%` is fmod; a
// division or `%` by zero is an error; null in arithmetic gives null.
// Comparisons take two numbers, two strings (bytewise order), or a string and
// a number when the string, less surrounding blanks, is a decimal number
// ("42", step outputs are text), which then compare as numbers; `==` and `!=`
// also take two booleans. Any other pair is an error, and any comparison with
// null gives null. `and`, `or` and `not` take booleans and null, with
// three-valued logic (null is "unknown"), evaluated left to right and
// short-circuited: `false and X` and `true or X` do not evaluate X.
//
// min(a, b, ...), max(a, b, ...) and abs(x) are built in (numbers; any null
// argument gives null); any other call goes to the caller's CallResolver.
//
// Errors carry a byte range in the expression text; at the end of the text
// the range is {text.size(), 1}.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace kiln::core {

/// An integer type other than bool: ExprValue(3) is the number 3.
template <typename T>
concept ExprInteger = std::is_integral_v<T> && !std::is_same_v<T, bool>;

/// A value an expression computes or a reference resolves to.
struct ExprValue {
  std::variant<std::monostate, bool, double, std::string> v;

  /// Null.
  ExprValue() = default;
  ExprValue(bool value) : v(value) {}
  ExprValue(double value) : v(value) {}
  template <ExprInteger Int>
  ExprValue(Int value) : v(static_cast<double>(value)) {}
  ExprValue(std::string value) : v(std::move(value)) {}
  ExprValue(std::string_view value) : v(std::string(value)) {}
  ExprValue(const char* value) : v(std::string(value)) {}

  bool is_null() const { return std::holds_alternative<std::monostate>(v); }
  bool is_bool() const { return std::holds_alternative<bool>(v); }
  bool is_number() const { return std::holds_alternative<double>(v); }
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  /// The held value; the type must match.
  bool as_bool() const { return std::get<bool>(v); }
  double as_number() const { return std::get<double>(v); }
  const std::string& as_string() const { return std::get<std::string>(v); }

  /// Same type and value (so NaN != NaN, and 1 != "1").
  friend bool operator==(const ExprValue&, const ExprValue&) = default;
};

/// null, true, 0.9, 3 (integral numbers without ".0"), 1e+21, nan, inf, and
/// strings in single quotes with \\ \' \n \t escaped: a literal that reads
/// back as the same value. Numbers are the shortest text that round-trips
/// (-0 shows as 0).
std::string to_display(const ExprValue& value);

/// "null", "boolean", "number" or "string".
std::string_view type_name(const ExprValue& value);

/// A parse or evaluation error: what and where.
struct ExprError {
  /// Byte range in the expression text; length >= 1. At the end of the text,
  /// offset == text.size().
  std::size_t offset = 0;
  std::size_t length = 1;
  /// Lower-case start, no trailing period.
  std::string message;
};

/// One occurrence of a reference in the text.
struct ExprReference {
  /// The names, e.g. {"steps", "train", "metrics", "val/loss"}.
  std::vector<std::string> path;
  /// Byte range of the whole reference in the expression text.
  std::size_t offset = 0;
  std::size_t length = 0;

  /// Canonical text: dotted names, and ["..."] for a name that cannot be
  /// dotted, e.g. steps.train.metrics["val/loss"] (steps["a"] is steps.a).
  std::string text() const;
};

/// One call of a function that is not built in.
struct ExprCall {
  std::string name;
  /// Byte range of the function's name in the expression text.
  std::size_t offset = 0;
  std::size_t length = 0;
  /// Number of arguments.
  std::size_t arity = 0;
};

/// A parsed expression: cheap to copy (the parse is shared and immutable).
class Expression {
public:
  /// Resolves a reference to its value, or returns an error message that
  /// evaluate() places at the reference.
  using Resolver = std::function<std::variant<ExprValue, std::string>(const ExprReference&)>;
  /// Computes a call that is not built in from its evaluated arguments, or
  /// returns an error message (e.g. "unknown function 'alwys'; did you mean
  /// 'always'?") that evaluate() places at the call's name.
  using CallResolver =
      std::function<std::variant<ExprValue, std::string>(const ExprCall&, const std::vector<ExprValue>&)>;
  /// A reference's canonical text and its value.
  using Seen = std::vector<std::pair<std::string, ExprValue>>;

  /// Deeper nesting (parentheses, calls, prefix operators) is a parse error.
  static constexpr int k_max_nesting = 100;

  /// An empty expression: text() is "", it refers to nothing and evaluates
  /// to null.
  Expression() = default;

  /// Parses `text`; the first error stops the parse. `first_column` is the
  /// column of the text's first character in its source, for the messages
  /// that name another column ("expected ')' to close '(' at column 5").
  static std::variant<Expression, ExprError> parse(std::string_view text, std::size_t first_column = 1);

  const std::string& text() const;
  bool empty() const { return m_impl == nullptr; }

  /// Every reference and every call (not min/max/abs) in text order, one
  /// entry per occurrence: for checks before any evaluation (undefined
  /// params, unknown steps, which status functions are used).
  const std::vector<ExprReference>& references() const;
  const std::vector<ExprCall>& calls() const;

  /// Evaluates the expression. The resolvers are called for each reference
  /// and call actually evaluated, every time (no caching); an empty
  /// std::function fails every reference or call it would resolve. `seen`,
  /// when given, receives each reference evaluated and its value, in
  /// evaluation order, once per canonical text (the first value), also when
  /// evaluation then fails (to explain a failing gate: "accuracy = 0.87").
  std::variant<ExprValue, ExprError> evaluate(const Resolver& resolve, const CallResolver& call,
                                              Seen* seen = nullptr) const;

  /// The parse, defined in expression.cpp.
  struct Impl;

private:
  explicit Expression(std::shared_ptr<const Impl> impl) : m_impl(std::move(impl)) {}

  std::shared_ptr<const Impl> m_impl;
};

} // namespace kiln::core
