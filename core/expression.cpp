// A hand-written lexer and recursive-descent parser for the grammar in
// expression.hpp, and a tree-walking evaluator.
//
// The lexer works on demand, one token ahead, so an error is reported at the
// first token the parser cannot use and a lexical error (an unterminated
// string) only when the parser reaches it. A reference is lexed as one token
// because whether a '-' belongs to a name depends on the characters around
// it, not on the grammar.
//
// The tree is a vector of nodes in the Impl, children by index. Runs of the
// same precedence level (a + b - c, a and b and c) are one node with n
// operands, so the tree's depth, and with it the evaluator's recursion, is
// bounded by the nesting the parser allows (parentheses, calls, prefix
// operators), however long the expression.

#include "core/expression.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>
#include <system_error>

namespace kiln::core {

namespace {

// --- Values --------------------------------------------------------------

std::string display_number(double number) {
  if (std::isnan(number)) {
    return "nan";
  }
  if (std::isinf(number)) {
    return number > 0 ? "inf" : "-inf";
  }
  if (number == 0) {
    return "0";
  }
  char buffer[64];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof buffer, number);
  return std::string(buffer, result.ptr);
}

std::string quote(std::string_view text) {
  std::string result = "'";
  for (const char c : text) {
    switch (c) {
    case '\\': result += "\\\\"; break;
    case '\'': result += "\\'"; break;
    case '\n': result += "\\n"; break;
    case '\t': result += "\\t"; break;
    default: result += c; break;
    }
  }
  return result + "'";
}

constexpr std::size_t k_max_shown_string = 60;

/// "number 3", "string 'abc'", "null": a value named in an error message,
/// long strings cut short.
std::string describe(const ExprValue& value) {
  if (value.is_null()) {
    return "null";
  }
  if (value.is_string() && value.as_string().size() > k_max_shown_string) {
    std::size_t cut = k_max_shown_string;
    // Do not split a UTF-8 sequence.
    while (cut > 0 && (static_cast<unsigned char>(value.as_string()[cut]) & 0xC0) == 0x80) {
      --cut;
    }
    return "string " + quote(std::string_view(value.as_string()).substr(0, cut)) + "...";
  }
  return std::string(type_name(value)) + " " + to_display(value);
}

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_name_start(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}

/// A decimal number in full, less surrounding blanks: "42", " -1.5e3\n".
/// Not "inf", "nan", "0x10" or "".
std::optional<double> parse_numeric_string(std::string_view text) {
  while (!text.empty() && is_blank(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_blank(text.back())) {
    text.remove_suffix(1);
  }
  std::string_view digits = text;
  if (!digits.empty() && (digits.front() == '-' || digits.front() == '+')) {
    digits.remove_prefix(1);
  }
  if (digits.empty() || !(is_digit(digits.front()) || digits.front() == '.')) {
    return std::nullopt;
  }
  // from_chars takes no '+'.
  if (text.front() == '+') {
    text.remove_prefix(1);
  }
  double number = 0;
  const std::from_chars_result result = std::from_chars(text.data(), text.data() + text.size(), number);
  if (result.ec != std::errc() || result.ptr != text.data() + text.size()) {
    return std::nullopt;
  }
  return number;
}

// --- Tokens --------------------------------------------------------------

enum class Tok {
  end,
  error,
  number,
  string,
  reference,
  kw_true,
  kw_false,
  kw_null,
  kw_and,
  kw_or,
  kw_not,
  lparen,
  rparen,
  comma,
  plus,
  minus,
  star,
  slash,
  percent,
  eq,
  ne,
  lt,
  le,
  gt,
  ge,
  bang,
  and_and,
  or_or,
};

struct Token {
  Tok kind = Tok::end;
  std::size_t offset = 0;
  std::size_t length = 0;
  /// Tok::number.
  double number = 0;
  /// Tok::string: the unescaped text.
  std::string text;
  /// Tok::reference.
  std::vector<std::string> path;
  /// Tok::reference: one name, no dot or index (so it may be called).
  bool plain = false;
  /// Tok::error.
  ExprError error;
};

bool is_binary_operator(Tok kind) {
  switch (kind) {
  case Tok::kw_and:
  case Tok::kw_or:
  case Tok::plus:
  case Tok::star:
  case Tok::slash:
  case Tok::percent:
  case Tok::eq:
  case Tok::ne:
  case Tok::lt:
  case Tok::le:
  case Tok::gt:
  case Tok::ge:
  case Tok::and_and:
  case Tok::or_or: return true;
  default: return false;
  }
}

bool is_comparison(Tok kind) {
  return kind == Tok::eq || kind == Tok::ne || kind == Tok::lt || kind == Tok::le || kind == Tok::gt || kind == Tok::ge;
}

/// Bytes in the UTF-8 sequence that starts with `lead` (1 for a stray byte).
std::size_t utf8_length(unsigned char lead) {
  if (lead >= 0xF0 && lead < 0xF8) {
    return 4;
  }
  if (lead >= 0xE0) {
    return lead < 0xF0 ? 3 : 1;
  }
  if (lead >= 0xC0) {
    return 2;
  }
  return 1;
}

class Lexer {
public:
  explicit Lexer(std::string_view text) : m_text(text) {}

  const Token& peek() {
    if (!m_peeked) {
      m_next = lex();
      m_peeked = true;
    }
    return m_next;
  }

  Token take() {
    peek();
    m_peeked = false;
    return std::move(m_next);
  }

private:
  char at(std::size_t pos) const { return pos < m_text.size() ? m_text[pos] : '\0'; }

  Token make(Tok kind, std::size_t offset, std::size_t length) {
    Token token;
    token.kind = kind;
    token.offset = offset;
    token.length = length;
    m_pos = offset + length;
    return token;
  }

  static Token fail(std::size_t offset, std::size_t length, std::string message) {
    Token token;
    token.kind = Tok::error;
    token.offset = offset;
    token.length = length;
    token.error = ExprError{offset, std::max<std::size_t>(length, 1), std::move(message)};
    return token;
  }

  /// The character at `pos` as text, a whole UTF-8 sequence.
  std::string_view char_at(std::size_t pos) const {
    const std::size_t length = std::min(utf8_length(static_cast<unsigned char>(m_text[pos])), m_text.size() - pos);
    return m_text.substr(pos, length);
  }

  Token lex() {
    while (m_pos < m_text.size() && is_blank(m_text[m_pos])) {
      ++m_pos;
    }
    const std::size_t start = m_pos;
    if (start >= m_text.size()) {
      return make(Tok::end, m_text.size(), 0);
    }
    const char c = m_text[start];
    const char next = at(start + 1);
    if (is_digit(c)) {
      return lex_number(start);
    }
    if (c == '"' || c == '\'') {
      std::string text;
      std::size_t end = 0;
      if (std::optional<Token> error = lex_string(start, text, end)) {
        return std::move(*error);
      }
      Token token = make(Tok::string, start, end - start);
      token.text = std::move(text);
      return token;
    }
    if (is_name_start(c)) {
      return lex_reference(start);
    }
    switch (c) {
    case '(': return make(Tok::lparen, start, 1);
    case ')': return make(Tok::rparen, start, 1);
    case ',': return make(Tok::comma, start, 1);
    case '+': return make(Tok::plus, start, 1);
    case '-': return make(Tok::minus, start, 1);
    case '*': return make(Tok::star, start, 1);
    case '/': return make(Tok::slash, start, 1);
    case '%': return make(Tok::percent, start, 1);
    case '=':
      if (next == '=') {
        return make(Tok::eq, start, 2);
      }
      return fail(start, 1, "'=' is not an operator; did you mean '=='?");
    case '!': return next == '=' ? make(Tok::ne, start, 2) : make(Tok::bang, start, 1);
    case '<':
      if (next == '>') {
        return fail(start, 2, "'<>' is not an operator; did you mean '!='?");
      }
      return next == '=' ? make(Tok::le, start, 2) : make(Tok::lt, start, 1);
    case '>': return next == '=' ? make(Tok::ge, start, 2) : make(Tok::gt, start, 1);
    case '&':
      if (next == '&') {
        return make(Tok::and_and, start, 2);
      }
      return fail(start, 1, "'&' is not an operator; did you mean '&&' or 'and'?");
    case '|':
      if (next == '|') {
        return make(Tok::or_or, start, 2);
      }
      return fail(start, 1, "'|' is not an operator; did you mean '||' or 'or'?");
    case '.':
      if (start > 0 && is_blank(m_text[start - 1]) && is_name_start(next)) {
        return fail(start, 1, "unexpected '.'; a reference is written without spaces, e.g. steps.train.status");
      }
      return fail(start, 1, "unexpected '.'");
    default: break;
    }
    const std::string_view shown = char_at(start);
    return fail(start, shown.size(), "unexpected character '" + std::string(shown) + "'");
  }

  /// digits [. digits] [e|E [+|-] digits], not followed by a name character
  /// or a dot.
  Token lex_number(std::size_t start) {
    std::size_t pos = start;
    bool valid = true;
    while (is_digit(at(pos))) {
      ++pos;
    }
    if (at(pos) == '.') {
      ++pos;
      valid = is_digit(at(pos));
      while (is_digit(at(pos))) {
        ++pos;
      }
    }
    if (valid && (at(pos) == 'e' || at(pos) == 'E')) {
      ++pos;
      if (at(pos) == '+' || at(pos) == '-') {
        ++pos;
      }
      valid = is_digit(at(pos));
      while (is_digit(at(pos))) {
        ++pos;
      }
    }
    if (!valid || is_name_char(at(pos)) || at(pos) == '.') {
      while (is_name_char(at(pos)) || at(pos) == '.') {
        ++pos;
      }
      return fail(start, pos - start, "invalid number '" + std::string(m_text.substr(start, pos - start)) + "'");
    }
    double number = 0;
    const std::from_chars_result result = std::from_chars(m_text.data() + start, m_text.data() + pos, number);
    if (result.ec != std::errc()) {
      return fail(start, pos - start, "number out of range '" + std::string(m_text.substr(start, pos - start)) + "'");
    }
    Token token = make(Tok::number, start, pos - start);
    token.number = number;
    return token;
  }

  /// The string literal at `start` into `out`, `end` past its closing quote;
  /// an error token when it is malformed.
  std::optional<Token> lex_string(std::size_t start, std::string& out, std::size_t& end) const {
    const char quote_char = m_text[start];
    std::size_t pos = start + 1;
    while (pos < m_text.size() && m_text[pos] != quote_char) {
      if (m_text[pos] != '\\') {
        out += m_text[pos++];
        continue;
      }
      if (pos + 1 >= m_text.size()) {
        break;
      }
      switch (m_text[pos + 1]) {
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      default: {
        const std::string_view escaped = char_at(pos + 1);
        return fail(pos, 1 + escaped.size(),
                    "unknown escape '\\" + std::string(escaped) + "' in string; write '\\\\' for a backslash");
      }
      }
      pos += 2;
    }
    if (pos >= m_text.size()) {
      return fail(start, 1, "unterminated string");
    }
    end = pos + 1;
    return std::nullopt;
  }

  /// A name, then any '.name' and '["name"]'.
  Token lex_reference(std::size_t start) {
    std::size_t pos = start;
    while (is_name_char(at(pos))) {
      ++pos;
    }
    const std::string head(m_text.substr(start, pos - start));
    static constexpr std::pair<std::string_view, Tok> k_keywords[] = {
        {"true", Tok::kw_true}, {"false", Tok::kw_false}, {"null", Tok::kw_null},
        {"and", Tok::kw_and},   {"or", Tok::kw_or},       {"not", Tok::kw_not},
    };
    for (const auto& [word, kind] : k_keywords) {
      if (head == word) {
        if (at(pos) == '.' || at(pos) == '[') {
          return fail(start, pos - start, "'" + head + "' is a reserved word and cannot start a reference");
        }
        return make(kind, start, pos - start);
      }
    }
    std::vector<std::string> path{head};
    bool hyphen_in_last = false;
    while (true) {
      if (at(pos) == '.') {
        const std::size_t name_start = pos + 1;
        if (!is_name_start(at(name_start))) {
          return bad_name_after_dot(name_start, path.back(), hyphen_in_last);
        }
        pos = name_start;
        hyphen_in_last = false;
        while (true) {
          while (is_name_char(at(pos))) {
            ++pos;
          }
          if (at(pos) == '-' && is_name_char(at(pos + 1))) {
            hyphen_in_last = true;
            ++pos;
            continue;
          }
          break;
        }
        path.emplace_back(m_text.substr(name_start, pos - name_start));
        continue;
      }
      if (at(pos) == '[') {
        ++pos;
        while (is_blank(at(pos))) {
          ++pos;
        }
        if (at(pos) != '"' && at(pos) != '\'') {
          const std::size_t length = pos < m_text.size() ? char_at(pos).size() : 1;
          return fail(pos, length, "expected a quoted name after '[', e.g. metrics[\"val/loss\"]");
        }
        std::string name;
        std::size_t end = 0;
        if (std::optional<Token> error = lex_string(pos, name, end)) {
          return std::move(*error);
        }
        pos = end;
        while (is_blank(at(pos))) {
          ++pos;
        }
        if (at(pos) != ']') {
          const std::size_t length = pos < m_text.size() ? char_at(pos).size() : 1;
          return fail(pos, length, "expected ']' after the quoted name");
        }
        ++pos;
        path.push_back(std::move(name));
        hyphen_in_last = false;
        continue;
      }
      break;
    }
    Token token = make(Tok::reference, start, pos - start);
    token.plain = path.size() == 1 && pos - start == head.size();
    token.path = std::move(path);
    return token;
  }

  Token bad_name_after_dot(std::size_t pos, const std::string& previous, bool hyphen_in_previous) const {
    if (pos >= m_text.size()) {
      return fail(pos, 1, "expected a name after '.'");
    }
    const std::size_t length = char_at(pos).size();
    if (is_digit(m_text[pos]) && hyphen_in_previous) {
      return fail(pos, length,
                  "expected a name after '.'; a '-' joined to names is part of the name ('" + previous +
                      "'): put spaces around '-' to subtract");
    }
    if (is_digit(m_text[pos])) {
      std::size_t end = pos;
      while (is_name_char(at(end))) {
        ++end;
      }
      const std::string name(m_text.substr(pos, end - pos));
      return fail(pos, length, "a name after '.' cannot start with a digit; write [\"" + name + "\"]");
    }
    return fail(pos, length, "expected a name after '.'");
  }

  std::string_view m_text;
  std::size_t m_pos = 0;
  Token m_next;
  bool m_peeked = false;
};

// --- Tree ----------------------------------------------------------------

enum class NodeKind { literal, reference, call, builtin, negate, logical_not, sum, product, all, any, compare };

enum class Builtin { min, max, abs };

struct Node {
  NodeKind kind = NodeKind::literal;
  /// Byte range in the text (parentheses around it included).
  std::size_t offset = 0;
  std::size_t length = 0;
  /// NodeKind::literal.
  ExprValue value;
  /// NodeKind::reference and call: index in references() / calls().
  std::size_t index = 0;
  /// NodeKind::builtin.
  Builtin builtin = Builtin::min;
  /// Operands; calls' arguments.
  std::vector<std::size_t> children;
  /// NodeKind::sum, product and compare: operators[i] joins children[i] and
  /// children[i + 1], at operator_offsets[i]. NodeKind::negate: the '-' at
  /// operator_offsets[0].
  std::vector<Tok> operators;
  std::vector<std::size_t> operator_offsets;
};

std::string_view operator_text(Tok kind) {
  switch (kind) {
  case Tok::plus: return "+";
  case Tok::minus: return "-";
  case Tok::star: return "*";
  case Tok::slash: return "/";
  case Tok::percent: return "%";
  case Tok::eq: return "==";
  case Tok::ne: return "!=";
  case Tok::lt: return "<";
  case Tok::le: return "<=";
  case Tok::gt: return ">";
  case Tok::ge: return ">=";
  default: return "?";
  }
}

} // namespace

struct Expression::Impl {
  std::string text;
  std::vector<ExprReference> references;
  std::vector<ExprCall> calls;
  std::vector<Node> nodes;
  std::size_t root = 0;
};

namespace {

// --- Parser --------------------------------------------------------------

class Parser {
public:
  Parser(Expression::Impl& impl, std::size_t first_column)
      : m_impl(impl), m_lexer(impl.text), m_first_column(first_column) {}

  /// The root node, or nullopt with error() set.
  std::optional<std::size_t> parse() {
    const std::optional<std::size_t> root = parse_or();
    if (!root) {
      return std::nullopt;
    }
    const Token& token = m_lexer.peek();
    if (token.kind == Tok::end) {
      return root;
    }
    if (token.kind == Tok::error) {
      return fail(token.error);
    }
    if (token.kind == Tok::rparen) {
      return fail(token, "unexpected ')'");
    }
    return fail(token, "expected an operator before " + describe_token(token));
  }

  ExprError& error() { return m_error; }

private:
  using Result = std::optional<std::size_t>;

  /// Counts one level of nesting while alive.
  class Nest {
  public:
    explicit Nest(int& depth) : m_depth(depth) { ++m_depth; }
    ~Nest() { --m_depth; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;
    bool too_deep() const { return m_depth > Expression::k_max_nesting; }

  private:
    int& m_depth;
  };

  std::nullopt_t fail(ExprError error) {
    m_error = std::move(error);
    return std::nullopt;
  }

  std::nullopt_t fail(const Token& at, std::string message) {
    return fail(ExprError{at.offset, std::max<std::size_t>(at.length, 1), std::move(message)});
  }

  std::string_view slice(std::size_t offset, std::size_t length) const {
    return std::string_view(m_impl.text).substr(offset, length);
  }

  std::string describe_token(const Token& token) const {
    switch (token.kind) {
    case Tok::end: return "the end of the expression";
    case Tok::string: return "a string";
    default: break;
    }
    constexpr std::size_t k_max_shown = 30;
    const std::string_view text = slice(token.offset, token.length);
    return "'" + std::string(text.substr(0, k_max_shown)) + (text.size() > k_max_shown ? "...'" : "'");
  }

  /// 1-based column of `offset` in the source (characters, not bytes).
  std::size_t column_of(std::size_t offset) const {
    const std::string_view before = slice(0, offset);
    const std::size_t newline = before.rfind('\n');
    const std::string_view line = newline == std::string_view::npos ? before : before.substr(newline + 1);
    std::size_t column = newline == std::string_view::npos ? m_first_column : 1;
    for (const char c : line) {
      if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
        ++column;
      }
    }
    return column;
  }

  Token take() {
    Token token = m_lexer.take();
    m_previous = token.kind;
    m_previous_offset = token.offset;
    m_previous_length = token.length;
    return token;
  }

  std::size_t add(Node node) {
    m_impl.nodes.push_back(std::move(node));
    return m_impl.nodes.size() - 1;
  }

  /// A node for `first` and the operands after it, or just `first`.
  std::size_t add_chain(NodeKind kind, std::size_t first, std::vector<std::size_t> rest, std::vector<Tok> operators,
                        std::vector<std::size_t> offsets) {
    if (rest.empty()) {
      return first;
    }
    Node node;
    node.kind = kind;
    node.offset = m_impl.nodes[first].offset;
    const Node& last = m_impl.nodes[rest.back()];
    node.length = last.offset + last.length - node.offset;
    node.children.push_back(first);
    node.children.insert(node.children.end(), rest.begin(), rest.end());
    node.operators = std::move(operators);
    node.operator_offsets = std::move(offsets);
    return add(std::move(node));
  }

  Result parse_or() { return parse_logical(NodeKind::any); }

  /// `and` and `or` runs; `kind` is NodeKind::all or any.
  Result parse_logical(NodeKind kind) {
    const Tok word = kind == NodeKind::any ? Tok::kw_or : Tok::kw_and;
    const Tok symbol = kind == NodeKind::any ? Tok::or_or : Tok::and_and;
    const Result first = kind == NodeKind::any ? parse_logical(NodeKind::all) : parse_not();
    if (!first) {
      return std::nullopt;
    }
    std::vector<std::size_t> rest;
    while (m_lexer.peek().kind == word || m_lexer.peek().kind == symbol) {
      take();
      const Result operand = kind == NodeKind::any ? parse_logical(NodeKind::all) : parse_not();
      if (!operand) {
        return std::nullopt;
      }
      rest.push_back(*operand);
    }
    return add_chain(kind, *first, std::move(rest), {}, {});
  }

  Result parse_not() {
    const Token& token = m_lexer.peek();
    if (token.kind != Tok::kw_not && token.kind != Tok::bang) {
      return parse_comparison();
    }
    const Nest nest(m_depth);
    if (nest.too_deep()) {
      return fail(token, "expression nested too deeply");
    }
    const Token op = take();
    const Result operand = parse_not();
    if (!operand) {
      return std::nullopt;
    }
    Node node;
    node.kind = NodeKind::logical_not;
    node.offset = op.offset;
    node.length = m_impl.nodes[*operand].offset + m_impl.nodes[*operand].length - op.offset;
    node.children.push_back(*operand);
    return add(std::move(node));
  }

  Result parse_comparison() {
    const Result left = parse_arithmetic(NodeKind::sum);
    if (!left || !is_comparison(m_lexer.peek().kind)) {
      return left;
    }
    const Token op = take();
    const Result right = parse_arithmetic(NodeKind::sum);
    if (!right) {
      return std::nullopt;
    }
    if (is_comparison(m_lexer.peek().kind)) {
      return chained_comparison(*left, op, *right);
    }
    return add_chain(NodeKind::compare, *left, {*right}, {op.kind}, {op.offset});
  }

  std::nullopt_t chained_comparison(std::size_t left, const Token& first_op, std::size_t middle) {
    const Token second_op = take();
    const std::string message = "comparisons cannot be chained; use 'and'";
    const Result right = parse_arithmetic(NodeKind::sum);
    if (!right) {
      return fail(second_op, message);
    }
    const auto text_of = [this](std::size_t id) {
      return std::string(slice(m_impl.nodes[id].offset, m_impl.nodes[id].length));
    };
    const std::string middle_text = text_of(middle);
    return fail(second_op, message + ": " + text_of(left) + " " + std::string(operator_text(first_op.kind)) + " " +
                               middle_text + " and " + middle_text + " " + std::string(operator_text(second_op.kind)) +
                               " " + text_of(*right));
  }

  /// `+ -` runs (NodeKind::sum) and `* / %` runs (NodeKind::product).
  Result parse_arithmetic(NodeKind kind) {
    const auto operand = [&]() { return kind == NodeKind::sum ? parse_arithmetic(NodeKind::product) : parse_unary(); };
    const auto takes = [kind](Tok tok) {
      return kind == NodeKind::sum ? (tok == Tok::plus || tok == Tok::minus)
                                   : (tok == Tok::star || tok == Tok::slash || tok == Tok::percent);
    };
    const Result first = operand();
    if (!first) {
      return std::nullopt;
    }
    std::vector<std::size_t> rest;
    std::vector<Tok> operators;
    std::vector<std::size_t> offsets;
    while (takes(m_lexer.peek().kind)) {
      const Token op = take();
      const Result next = operand();
      if (!next) {
        return std::nullopt;
      }
      rest.push_back(*next);
      operators.push_back(op.kind);
      offsets.push_back(op.offset);
    }
    return add_chain(kind, *first, std::move(rest), std::move(operators), std::move(offsets));
  }

  Result parse_unary() {
    const Token& token = m_lexer.peek();
    if (token.kind != Tok::minus) {
      return parse_primary();
    }
    const Nest nest(m_depth);
    if (nest.too_deep()) {
      return fail(token, "expression nested too deeply");
    }
    const Token op = take();
    const Result operand = parse_unary();
    if (!operand) {
      return std::nullopt;
    }
    Node node;
    node.kind = NodeKind::negate;
    node.operator_offsets.push_back(op.offset);
    node.offset = op.offset;
    node.length = m_impl.nodes[*operand].offset + m_impl.nodes[*operand].length - op.offset;
    node.children.push_back(*operand);
    return add(std::move(node));
  }

  Result parse_primary() {
    const Token& token = m_lexer.peek();
    Node node;
    node.offset = token.offset;
    node.length = token.length;
    switch (token.kind) {
    case Tok::number: node.value = ExprValue(token.number); break;
    case Tok::string: node.value = ExprValue(token.text); break;
    case Tok::kw_true: node.value = ExprValue(true); break;
    case Tok::kw_false: node.value = ExprValue(false); break;
    case Tok::kw_null: break;
    case Tok::reference: return parse_reference_or_call();
    case Tok::lparen: return parse_parenthesised();
    default: return missing_operand(token);
    }
    take();
    return add(std::move(node));
  }

  std::nullopt_t missing_operand(const Token& token) {
    if (token.kind == Tok::error) {
      return fail(token.error);
    }
    const bool at_start = m_previous == Tok::end;
    const bool after_open = m_previous == Tok::lparen || m_previous == Tok::comma;
    if (at_start && token.kind == Tok::end) {
      return fail(token, "empty expression");
    }
    if ((at_start || after_open) && is_binary_operator(token.kind)) {
      return fail(token, "expected an operand before " + describe_token(token));
    }
    if (at_start && token.kind == Tok::rparen) {
      return fail(token, "unexpected ')'");
    }
    if (at_start) {
      return fail(token, "expected an operand, found " + describe_token(token));
    }
    std::string message =
        "expected an operand after '" + std::string(slice(m_previous_offset, m_previous_length)) + "'";
    if (token.kind != Tok::end) {
      message += ", found " + describe_token(token);
    }
    return fail(token, message);
  }

  Result parse_parenthesised() {
    const Nest nest(m_depth);
    if (nest.too_deep()) {
      return fail(m_lexer.peek(), "expression nested too deeply");
    }
    const Token open = take();
    const Result inner = parse_or();
    if (!inner) {
      return std::nullopt;
    }
    const Token& close = m_lexer.peek();
    if (close.kind != Tok::rparen) {
      return unclosed(open, close, "an operator or ')'");
    }
    const Token closed = take();
    // The parentheses belong to the operand: errors about it mark them too.
    Node& node = m_impl.nodes[*inner];
    node.offset = open.offset;
    node.length = closed.offset + 1 - open.offset;
    return inner;
  }

  std::nullopt_t unclosed(const Token& open, const Token& found, std::string_view expected) {
    if (found.kind == Tok::error) {
      return fail(found.error);
    }
    if (found.kind == Tok::end) {
      return fail(found, "expected ')' to close '(' at column " + std::to_string(column_of(open.offset)));
    }
    return fail(found, "expected " + std::string(expected) + " before " + describe_token(found));
  }

  Result parse_reference_or_call() {
    Token name = take();
    if (m_lexer.peek().kind != Tok::lparen) {
      ExprReference reference;
      reference.path = std::move(name.path);
      reference.offset = name.offset;
      reference.length = name.length;
      m_impl.references.push_back(std::move(reference));
      Node node;
      node.kind = NodeKind::reference;
      node.offset = name.offset;
      node.length = name.length;
      node.index = m_impl.references.size() - 1;
      return add(std::move(node));
    }
    if (!name.plain) {
      return fail(name, "only a plain name can be called: '" + std::string(slice(name.offset, name.length)) +
                            "' is a reference");
    }
    const Nest nest(m_depth);
    if (nest.too_deep()) {
      return fail(m_lexer.peek(), "expression nested too deeply");
    }
    const std::string& function = name.path.front();
    Node node;
    node.offset = name.offset;
    if (function == "min" || function == "max" || function == "abs") {
      node.kind = NodeKind::builtin;
      node.builtin = function == "min" ? Builtin::min : function == "max" ? Builtin::max : Builtin::abs;
    } else {
      node.kind = NodeKind::call;
      node.index = m_impl.calls.size();
      m_impl.calls.push_back(ExprCall{function, name.offset, name.length, 0});
    }
    const Token open = take();
    if (m_lexer.peek().kind != Tok::rparen) {
      while (true) {
        const Result argument = parse_or();
        if (!argument) {
          return std::nullopt;
        }
        node.children.push_back(*argument);
        const Token& next = m_lexer.peek();
        if (next.kind == Tok::comma) {
          take();
          continue;
        }
        if (next.kind != Tok::rparen) {
          return unclosed(open, next, "',' or ')'");
        }
        break;
      }
    }
    const Token close = take();
    node.length = close.offset + 1 - name.offset;
    const std::size_t arity = node.children.size();
    if (node.kind == NodeKind::call) {
      m_impl.calls[node.index].arity = arity;
    } else if (node.builtin == Builtin::abs && arity != 1) {
      return fail(name, "abs() takes 1 argument, got " + std::to_string(arity));
    } else if (node.builtin != Builtin::abs && arity < 2) {
      return fail(name, function + "() takes at least 2 arguments, got " + std::to_string(arity));
    }
    return add(std::move(node));
  }

  Expression::Impl& m_impl;
  Lexer m_lexer;
  std::size_t m_first_column;
  ExprError m_error;
  int m_depth = 0;
  /// The last token taken (Tok::end before the first).
  Tok m_previous = Tok::end;
  std::size_t m_previous_offset = 0;
  std::size_t m_previous_length = 0;
};

// --- Evaluator -----------------------------------------------------------

class Evaluator {
public:
  Evaluator(const Expression::Impl& impl, const Expression::Resolver& resolve, const Expression::CallResolver& call,
            Expression::Seen* seen)
      : m_impl(impl), m_resolve(resolve), m_call(call), m_seen(seen) {}

  /// The node's value, or nullopt with error() set.
  std::optional<ExprValue> eval(std::size_t id) {
    const Node& node = m_impl.nodes[id];
    switch (node.kind) {
    case NodeKind::literal: return node.value;
    case NodeKind::reference: return eval_reference(node);
    case NodeKind::call: return eval_call(node);
    case NodeKind::builtin: return eval_builtin(node);
    case NodeKind::negate: return eval_negate(node);
    case NodeKind::logical_not: return eval_not(node);
    case NodeKind::sum:
    case NodeKind::product: return eval_arithmetic(node);
    case NodeKind::all:
    case NodeKind::any: return eval_logical(node);
    case NodeKind::compare: return eval_compare(node);
    }
    return std::nullopt;
  }

  ExprError& error() { return m_error; }

private:
  std::nullopt_t fail(std::size_t offset, std::size_t length, std::string message) {
    m_error = ExprError{offset, std::max<std::size_t>(length, 1), std::move(message)};
    return std::nullopt;
  }

  std::nullopt_t fail_at(const Node& node, std::string message) {
    return fail(node.offset, node.length, std::move(message));
  }

  std::optional<ExprValue> eval_reference(const Node& node) {
    const ExprReference& reference = m_impl.references[node.index];
    if (!m_resolve) {
      return fail(reference.offset, reference.length, "cannot resolve '" + reference.text() + "' here");
    }
    std::variant<ExprValue, std::string> result = m_resolve(reference);
    if (std::string* message = std::get_if<std::string>(&result)) {
      return fail(reference.offset, reference.length, std::move(*message));
    }
    ExprValue& value = std::get<ExprValue>(result);
    if (m_seen != nullptr) {
      std::string text = reference.text();
      const bool known =
          std::any_of(m_seen->begin(), m_seen->end(),
                      [&](const std::pair<std::string, ExprValue>& entry) { return entry.first == text; });
      if (!known) {
        m_seen->emplace_back(std::move(text), value);
      }
    }
    return std::move(value);
  }

  /// The arguments of a call, left to right, all evaluated.
  std::optional<std::vector<ExprValue>> eval_arguments(const Node& node) {
    std::vector<ExprValue> arguments;
    for (const std::size_t child : node.children) {
      std::optional<ExprValue> value = eval(child);
      if (!value) {
        return std::nullopt;
      }
      arguments.push_back(std::move(*value));
    }
    return arguments;
  }

  std::optional<ExprValue> eval_call(const Node& node) {
    const ExprCall& call = m_impl.calls[node.index];
    std::optional<std::vector<ExprValue>> arguments = eval_arguments(node);
    if (!arguments) {
      return std::nullopt;
    }
    if (!m_call) {
      return fail(call.offset, call.length, "unknown function '" + call.name + "'");
    }
    std::variant<ExprValue, std::string> result = m_call(call, *arguments);
    if (std::string* message = std::get_if<std::string>(&result)) {
      return fail(call.offset, call.length, std::move(*message));
    }
    return std::get<ExprValue>(std::move(result));
  }

  std::optional<ExprValue> eval_builtin(const Node& node) {
    std::optional<std::vector<ExprValue>> arguments = eval_arguments(node);
    if (!arguments) {
      return std::nullopt;
    }
    const char* name = node.builtin == Builtin::min ? "min" : node.builtin == Builtin::max ? "max" : "abs";
    bool any_null = false;
    for (std::size_t i = 0; i < arguments->size(); ++i) {
      const ExprValue& argument = (*arguments)[i];
      if (argument.is_null()) {
        any_null = true;
      } else if (!argument.is_number()) {
        return fail_at(m_impl.nodes[node.children[i]],
                       std::string(name) + "() expects numbers, got " + describe(argument));
      }
    }
    if (any_null) {
      return ExprValue();
    }
    if (node.builtin == Builtin::abs) {
      return ExprValue(std::fabs((*arguments)[0].as_number()));
    }
    double result = (*arguments)[0].as_number();
    for (const ExprValue& argument : *arguments) {
      const double number = argument.as_number();
      if (std::isnan(number) || std::isnan(result)) {
        result = std::nan("");
      } else if (node.builtin == Builtin::min ? number < result : number > result) {
        result = number;
      }
    }
    return ExprValue(result);
  }

  std::optional<ExprValue> eval_negate(const Node& node) {
    std::optional<ExprValue> operand = eval(node.children[0]);
    if (!operand || operand->is_null()) {
      return operand;
    }
    if (!operand->is_number()) {
      return fail(node.operator_offsets[0], 1, "cannot apply '-' to " + describe(*operand));
    }
    return ExprValue(-operand->as_number());
  }

  /// A boolean or null operand of and/or/not, or nullopt with the error set.
  std::optional<ExprValue> eval_condition(std::size_t id) {
    std::optional<ExprValue> value = eval(id);
    if (value && !value->is_bool() && !value->is_null()) {
      return fail_at(m_impl.nodes[id], "expected a boolean, got " + describe(*value));
    }
    return value;
  }

  std::optional<ExprValue> eval_not(const Node& node) {
    std::optional<ExprValue> operand = eval_condition(node.children[0]);
    if (!operand || operand->is_null()) {
      return operand;
    }
    return ExprValue(!operand->as_bool());
  }

  /// Kleene logic: for `and`, false wins over null, null over true; for
  /// `or` the reverse. The winning value ends the evaluation.
  std::optional<ExprValue> eval_logical(const Node& node) {
    const bool decisive = node.kind == NodeKind::any;
    bool unknown = false;
    for (const std::size_t child : node.children) {
      std::optional<ExprValue> value = eval_condition(child);
      if (!value) {
        return std::nullopt;
      }
      if (value->is_null()) {
        unknown = true;
      } else if (value->as_bool() == decisive) {
        return ExprValue(decisive);
      }
    }
    return unknown ? ExprValue() : ExprValue(!decisive);
  }

  std::optional<ExprValue> eval_arithmetic(const Node& node) {
    std::optional<ExprValue> result = eval(node.children[0]);
    if (!result) {
      return std::nullopt;
    }
    for (std::size_t i = 0; i < node.operators.size(); ++i) {
      std::optional<ExprValue> right = eval(node.children[i + 1]);
      if (!right) {
        return std::nullopt;
      }
      const Tok op = node.operators[i];
      if (result->is_null() || right->is_null()) {
        result = ExprValue();
        continue;
      }
      if (op == Tok::plus && result->is_string() && right->is_string()) {
        result = ExprValue(result->as_string() + right->as_string());
        continue;
      }
      if (!result->is_number() || !right->is_number()) {
        return fail(node.operator_offsets[i], 1,
                    "cannot apply '" + std::string(operator_text(op)) + "' to " + describe(*result) + " and " +
                        describe(*right));
      }
      const double a = result->as_number();
      const double b = right->as_number();
      if ((op == Tok::slash || op == Tok::percent) && b == 0) {
        return fail(node.operator_offsets[i], 1, "division by zero");
      }
      switch (op) {
      case Tok::plus: result = ExprValue(a + b); break;
      case Tok::minus: result = ExprValue(a - b); break;
      case Tok::star: result = ExprValue(a * b); break;
      case Tok::slash: result = ExprValue(a / b); break;
      default: result = ExprValue(std::fmod(a, b)); break;
      }
    }
    return result;
  }

  std::optional<ExprValue> eval_compare(const Node& node) {
    const std::optional<ExprValue> left = eval(node.children[0]);
    if (!left) {
      return std::nullopt;
    }
    const std::optional<ExprValue> right = eval(node.children[1]);
    if (!right) {
      return std::nullopt;
    }
    if (left->is_null() || right->is_null()) {
      return ExprValue();
    }
    const Tok op = node.operators[0];
    const std::size_t op_offset = node.operator_offsets[0];
    const std::size_t op_length = operator_text(op).size();
    // <0, 0, >0 as for strcmp; nullopt for an unordered pair (NaN).
    std::optional<int> order;
    if (left->is_number() && right->is_number()) {
      order = compare_numbers(left->as_number(), right->as_number());
    } else if (left->is_string() && right->is_string()) {
      order = left->as_string().compare(right->as_string());
    } else if (left->is_string() != right->is_string() && (left->is_number() || right->is_number())) {
      const ExprValue& text = left->is_string() ? *left : *right;
      const std::optional<double> number = parse_numeric_string(text.as_string());
      if (!number) {
        return fail(op_offset, op_length, "cannot compare " + describe(*left) + " with " + describe(*right));
      }
      order = left->is_string() ? compare_numbers(*number, right->as_number())
                                : compare_numbers(left->as_number(), *number);
    } else if (left->is_bool() && right->is_bool()) {
      if (op != Tok::eq && op != Tok::ne) {
        return fail(op_offset, op_length,
                    "'" + std::string(operator_text(op)) + "' needs numbers or strings, got " + describe(*left) +
                        " and " + describe(*right));
      }
      order = left->as_bool() == right->as_bool() ? 0 : 1;
    } else {
      return fail(op_offset, op_length, "cannot compare " + describe(*left) + " with " + describe(*right));
    }
    if (!order) {
      return ExprValue(op == Tok::ne);
    }
    switch (op) {
    case Tok::eq: return ExprValue(*order == 0);
    case Tok::ne: return ExprValue(*order != 0);
    case Tok::lt: return ExprValue(*order < 0);
    case Tok::le: return ExprValue(*order <= 0);
    case Tok::gt: return ExprValue(*order > 0);
    default: return ExprValue(*order >= 0);
    }
  }

  static std::optional<int> compare_numbers(double a, double b) {
    if (std::isnan(a) || std::isnan(b)) {
      return std::nullopt;
    }
    return a < b ? -1 : (a > b ? 1 : 0);
  }

  const Expression::Impl& m_impl;
  const Expression::Resolver& m_resolve;
  const Expression::CallResolver& m_call;
  Expression::Seen* m_seen;
  ExprError m_error;
};

/// A name after a dot that needs no brackets: [A-Za-z_][A-Za-z0-9_]* with
/// '-' only between name characters.
bool is_dotted_name(std::string_view name) {
  if (name.empty() || !is_name_start(name.front()) || name.back() == '-') {
    return false;
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '-') {
      if (!is_name_char(name[i + 1])) {
        return false;
      }
    } else if (!is_name_char(name[i])) {
      return false;
    }
  }
  return true;
}

} // namespace

std::string to_display(const ExprValue& value) {
  if (value.is_null()) {
    return "null";
  }
  if (value.is_bool()) {
    return value.as_bool() ? "true" : "false";
  }
  if (value.is_number()) {
    return display_number(value.as_number());
  }
  return quote(value.as_string());
}

std::string_view type_name(const ExprValue& value) {
  switch (value.v.index()) {
  case 0: return "null";
  case 1: return "boolean";
  case 2: return "number";
  default: return "string";
  }
}

std::string ExprReference::text() const {
  std::string result;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (i == 0) {
      result += path[i];
    } else if (is_dotted_name(path[i])) {
      result += "." + path[i];
    } else {
      result += "[\"";
      for (const char c : path[i]) {
        switch (c) {
        case '\\': result += "\\\\"; break;
        case '"': result += "\\\""; break;
        case '\n': result += "\\n"; break;
        case '\t': result += "\\t"; break;
        default: result += c; break;
        }
      }
      result += "\"]";
    }
  }
  return result;
}

std::variant<Expression, ExprError> Expression::parse(std::string_view text, std::size_t first_column) {
  auto impl = std::make_shared<Impl>();
  impl->text = std::string(text);
  Parser parser(*impl, first_column);
  const std::optional<std::size_t> root = parser.parse();
  if (!root) {
    return std::move(parser.error());
  }
  impl->root = *root;
  return Expression(std::move(impl));
}

const std::string& Expression::text() const {
  static const std::string k_empty;
  return m_impl ? m_impl->text : k_empty;
}

const std::vector<ExprReference>& Expression::references() const {
  static const std::vector<ExprReference> k_none;
  return m_impl ? m_impl->references : k_none;
}

const std::vector<ExprCall>& Expression::calls() const {
  static const std::vector<ExprCall> k_none;
  return m_impl ? m_impl->calls : k_none;
}

std::variant<ExprValue, ExprError> Expression::evaluate(const Resolver& resolve, const CallResolver& call,
                                                        Seen* seen) const {
  if (!m_impl) {
    return ExprValue();
  }
  Evaluator evaluator(*m_impl, resolve, call, seen);
  std::optional<ExprValue> value = evaluator.eval(m_impl->root);
  if (!value) {
    return std::move(evaluator.error());
  }
  return std::move(*value);
}

} // namespace kiln::core
