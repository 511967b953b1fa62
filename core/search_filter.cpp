// A hand-written tokenizer and recursive-descent parser for the run filter
// grammar in search_filter.hpp (no library parses MLflow's filter syntax; it
// is small enough not to need one), and its translation to SQL.
//
// The lexer works on demand, one token ahead, so an error is always reported
// at the first token the parser cannot use, and a lexical error (an
// unterminated string) only when the parser reaches it. Semantic checks
// (metrics take numbers, statuses must exist, ...) run as each comparison is
// parsed, so their errors point at the offending operator or value. The
// first error stops the parse: a filter is one line, and later errors are
// usually consequences of the first.
//
// The SQL never contains user text: keys and values are bound as `?`.

#include "core/search_filter.hpp"

#include "core/run_status.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <optional>
#include <utility>

namespace kiln::core {

namespace {

// --- Names ---------------------------------------------------------------

struct PrefixName {
  std::string_view name;
  FilterEntity entity;
};
constexpr std::array<PrefixName, 10> k_prefixes{{
    {"metrics", FilterEntity::metric},
    {"metric", FilterEntity::metric},
    {"params", FilterEntity::param},
    {"param", FilterEntity::param},
    {"tags", FilterEntity::tag},
    {"tag", FilterEntity::tag},
    {"attributes", FilterEntity::attribute},
    {"attribute", FilterEntity::attribute},
    {"attr", FilterEntity::attribute},
    {"run", FilterEntity::attribute},
}};

enum class AttributeType { text, status, number };

struct AttributeName {
  std::string_view name;
  std::string_view canonical;
  AttributeType type;
};
constexpr std::array<AttributeName, 14> k_attributes{{
    {"id", "id", AttributeType::text},
    {"run_id", "id", AttributeType::text},
    {"number", "number", AttributeType::number},
    {"workflow", "workflow", AttributeType::text},
    {"run_name", "workflow", AttributeType::text},
    {"status", "status", AttributeType::status},
    {"user", "user", AttributeType::text},
    {"user_id", "user", AttributeType::text},
    {"host", "host", AttributeType::text},
    {"git_commit", "git_commit", AttributeType::text},
    {"git_branch", "git_branch", AttributeType::text},
    {"start_time", "start_time", AttributeType::number},
    {"end_time", "end_time", AttributeType::number},
    {"duration", "duration", AttributeType::number},
}};

constexpr std::array<std::string_view, 5> k_run_statuses{"running", "succeeded", "failed", "cancelled", "crashed"};

char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lowercase(std::string_view text) {
  std::string result(text);
  std::transform(result.begin(), result.end(), result.begin(), to_lower);
  return result;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return to_lower(x) == to_lower(y); });
}

const AttributeName* find_attribute(std::string_view name) {
  for (const AttributeName& attribute : k_attributes) {
    if (iequals(attribute.name, name)) {
      return &attribute;
    }
  }
  return nullptr;
}

AttributeType attribute_type(std::string_view canonical) {
  const AttributeName* attribute = find_attribute(canonical);
  return attribute ? attribute->type : AttributeType::text;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      std::size_t substitution = diagonal + (to_lower(a[i - 1]) == to_lower(b[j - 1]) ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitution});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// " (did you mean 'x'?)" for the closest candidate within a third of its
/// length (at least one edit), or "".
template <typename Range>
std::string did_you_mean(std::string_view word, const Range& candidates) {
  std::string_view best;
  std::size_t best_distance = 0;
  for (std::string_view candidate : candidates) {
    std::size_t distance = edit_distance(word, candidate);
    std::size_t limit = std::max<std::size_t>(1, candidate.size() / 3);
    if (distance <= limit && (best.empty() || distance < best_distance)) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best.empty() ? std::string() : " (did you mean '" + std::string(best) + "'?)";
}

/// "a, b, c or d".
template <typename Range>
std::string join_or(const Range& names) {
  std::string result;
  std::size_t count = std::size(names);
  std::size_t index = 0;
  for (std::string_view name : names) {
    if (index > 0) {
      result += index + 1 == count ? " or " : ", ";
    }
    result += name;
    ++index;
  }
  return result;
}

// --- Tokens --------------------------------------------------------------

struct Token {
  enum class Kind { word, number, string, symbol, end, invalid };
  Kind kind = Kind::end;
  /// The token as written (with its quotes, for a string).
  std::string_view text;
  /// string: the contents, unquoted; invalid: the error message.
  std::string value;
  /// string: the quote character (' " or `).
  char quote = 0;
  FilterValue number;
  std::size_t offset = 0;

  std::size_t end() const { return offset + text.size(); }
  bool is_symbol(std::string_view symbol) const { return kind == Kind::symbol && text == symbol; }
  bool is_keyword(std::string_view keyword) const { return kind == Kind::word && iequals(text, keyword); }
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_word_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_word_char(char c) {
  return is_word_start(c) || is_digit(c) || c == '.' || c == '-' || c == '/' || c == ':';
}

/// One token of lookahead over the filter text.
class Lexer {
public:
  explicit Lexer(std::string_view text) : m_text(text) {}

  const Token& peek() {
    if (!m_peeked) {
      m_peeked = lex();
    }
    return *m_peeked;
  }
  Token take() {
    Token token = peek();
    m_peeked.reset();
    return token;
  }

private:
  Token make(Token::Kind kind, std::size_t begin, std::size_t end) {
    Token token;
    token.kind = kind;
    token.offset = begin;
    token.text = m_text.substr(begin, end - begin);
    m_pos = end;
    return token;
  }

  Token lex() {
    while (m_pos < m_text.size() && is_space(m_text[m_pos])) {
      ++m_pos;
    }
    std::size_t begin = m_pos;
    if (begin == m_text.size()) {
      return make(Token::Kind::end, begin, begin);
    }
    char c = m_text[begin];
    if (c == '\'' || c == '"' || c == '`') {
      return lex_quoted(begin);
    }
    bool sign = (c == '+' || c == '-');
    std::size_t digits = begin + (sign ? 1 : 0);
    if (digits < m_text.size() && (is_digit(m_text[digits]) || (m_text[digits] == '.' && digits + 1 < m_text.size() &&
                                                                is_digit(m_text[digits + 1])))) {
      return lex_number(begin);
    }
    if (is_word_start(c)) {
      std::size_t end = begin;
      while (end < m_text.size() && is_word_char(m_text[end])) {
        ++end;
      }
      return make(Token::Kind::word, begin, end);
    }
    for (std::string_view symbol : {"<=", ">=", "!=", "<>", "=", "<", ">", "(", ")", ","}) {
      if (m_text.substr(begin).starts_with(symbol)) {
        return make(Token::Kind::symbol, begin, begin + symbol.size());
      }
    }
    // One whole UTF-8 character, for the message.
    std::size_t end = begin + 1;
    while (end < m_text.size() && (static_cast<unsigned char>(m_text[end]) & 0xC0) == 0x80) {
      ++end;
    }
    Token token = make(Token::Kind::invalid, begin, end);
    token.value = "unexpected character '" + std::string(token.text) + "'";
    return token;
  }

  // A quote inside is written twice, as in SQL: 'it''s'.
  Token lex_quoted(std::size_t begin) {
    char quote = m_text[begin];
    std::string value;
    std::size_t pos = begin + 1;
    for (;;) {
      if (pos >= m_text.size()) {
        Token token = make(Token::Kind::invalid, begin, m_text.size());
        token.value = quote == '`' ? "unterminated name starting here" : "unterminated string starting here";
        return token;
      }
      if (m_text[pos] == quote) {
        if (pos + 1 < m_text.size() && m_text[pos + 1] == quote) {
          value += quote;
          pos += 2;
          continue;
        }
        break;
      }
      value += m_text[pos++];
    }
    Token token = make(Token::Kind::string, begin, pos + 1);
    token.value = std::move(value);
    token.quote = quote;
    return token;
  }

  Token lex_number(std::size_t begin) {
    std::size_t pos = begin;
    if (m_text[pos] == '+' || m_text[pos] == '-') {
      ++pos;
    }
    bool integral = true;
    while (pos < m_text.size() && is_digit(m_text[pos])) {
      ++pos;
    }
    if (pos < m_text.size() && m_text[pos] == '.') {
      integral = false;
      ++pos;
      while (pos < m_text.size() && is_digit(m_text[pos])) {
        ++pos;
      }
    }
    if (pos < m_text.size() && (m_text[pos] == 'e' || m_text[pos] == 'E')) {
      std::size_t exponent = pos + 1;
      if (exponent < m_text.size() && (m_text[exponent] == '+' || m_text[exponent] == '-')) {
        ++exponent;
      }
      if (exponent < m_text.size() && is_digit(m_text[exponent])) {
        integral = false;
        pos = exponent;
        while (pos < m_text.size() && is_digit(m_text[pos])) {
          ++pos;
        }
      }
    }
    if (pos < m_text.size() && is_word_char(m_text[pos])) {
      std::size_t end = pos;
      while (end < m_text.size() && is_word_char(m_text[end])) {
        ++end;
      }
      Token token = make(Token::Kind::invalid, begin, end);
      token.value = "invalid number '" + std::string(token.text) + "'";
      return token;
    }
    Token token = make(Token::Kind::number, begin, pos);
    std::string_view digits = token.text;
    if (digits.starts_with('+')) {
      digits.remove_prefix(1);
    }
    if (integral) {
      std::int64_t value = 0;
      auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
      if (error == std::errc() && end == digits.data() + digits.size()) {
        token.number = value;
        return token;
      }
    }
    double value = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    token.number = value;
    return token;
  }

  std::string_view m_text;
  std::size_t m_pos = 0;
  std::optional<Token> m_peeked;
};

// --- Parser --------------------------------------------------------------

struct Entity {
  FilterEntity entity = FilterEntity::attribute;
  std::string name;
  /// As written, for messages: "metrics.`my key`".
  std::string_view source;
  std::size_t offset = 0;
};

struct Operand {
  FilterValue value;
  std::size_t offset = 0;
  std::string_view text;
};

class Parser {
public:
  /// `what`: "filter" or "ordering", for "the end of the filter".
  Parser(std::string_view text, std::string_view what) : m_text(text), m_what(what), m_lexer(text) {}

  std::variant<FilterNode, FilterError> parse_filter() {
    if (m_lexer.peek().kind == Token::Kind::end) {
      FilterNode all;
      all.kind = FilterNode::Kind::all_of;
      return all;
    }
    std::optional<FilterNode> node = parse_or();
    if (node) {
      const Token& next = m_lexer.peek();
      if (next.is_symbol(")")) {
        fail(next.offset, "unexpected ')' without a matching '('");
      } else if (next.kind != Token::Kind::end) {
        fail_expected(next, "expected AND, OR or " + end_name());
      }
    }
    if (m_error) {
      return std::move(*m_error);
    }
    return std::move(*node);
  }

  std::variant<std::vector<OrderTerm>, FilterError> parse_order() {
    std::vector<OrderTerm> terms;
    if (m_lexer.peek().kind == Token::Kind::end) {
      return terms;
    }
    for (;;) {
      std::string expected = terms.empty() ? "expected a field to order by, such as metrics.accuracy"
                                           : "expected a field to order by after ','";
      std::optional<Entity> entity = parse_entity(expected);
      if (!entity) {
        break;
      }
      OrderTerm term{entity->entity, std::move(entity->name), false};
      bool direction = false;
      if (m_lexer.peek().is_keyword("asc") || m_lexer.peek().is_keyword("desc")) {
        term.descending = m_lexer.take().is_keyword("desc");
        direction = true;
      }
      terms.push_back(std::move(term));
      const Token& next = m_lexer.peek();
      if (next.is_symbol(",")) {
        m_lexer.take();
        continue;
      }
      if (next.kind != Token::Kind::end) {
        fail_expected(next, (direction ? "expected ',' or " : "expected ASC, DESC, ',' or ") + end_name());
      }
      break;
    }
    if (m_error) {
      return std::move(*m_error);
    }
    return terms;
  }

private:
  std::string end_name() const { return "the end of the " + std::string(m_what); }

  /// How a token is named in a message.
  std::string describe(const Token& token) const {
    switch (token.kind) {
    case Token::Kind::end: return end_name();
    case Token::Kind::string: return std::string(token.text);
    default: return "'" + std::string(token.text) + "'";
    }
  }

  int column(std::size_t offset) const {
    int result = 1;
    for (std::size_t i = 0; i < offset && i < m_text.size(); ++i) {
      // Counts characters, not bytes: skips UTF-8 continuation bytes.
      if ((static_cast<unsigned char>(m_text[i]) & 0xC0) != 0x80) {
        ++result;
      }
    }
    return result;
  }

  /// Records the first error; returns false so callers can `return fail(...)`.
  bool fail(std::size_t offset, std::string message) {
    if (!m_error) {
      FilterError error;
      error.message = std::move(message);
      error.column = column(offset);
      std::string line(m_text);
      std::replace_if(line.begin(), line.end(), is_space, ' ');
      error.excerpt = line + "\n" + std::string(static_cast<std::size_t>(error.column - 1), ' ') + "^";
      m_error = std::move(error);
    }
    return false;
  }

  /// "<expected>, found <token>", or the token's own error when it is one.
  bool fail_expected(const Token& token, const std::string& expected) {
    if (token.kind == Token::Kind::invalid) {
      return fail(token.offset, token.value);
    }
    return fail(token.offset, expected + ", found " + describe(token));
  }

  std::optional<FilterNode> parse_or() {
    std::optional<FilterNode> first = parse_and("");
    if (!first || !m_lexer.peek().is_keyword("or")) {
      return first;
    }
    FilterNode any;
    any.kind = FilterNode::Kind::any_of;
    any.children.push_back(std::move(*first));
    while (m_lexer.peek().is_keyword("or")) {
      Token keyword = m_lexer.take();
      std::optional<FilterNode> next = parse_and(keyword.text);
      if (!next) {
        return std::nullopt;
      }
      any.children.push_back(std::move(*next));
    }
    return any;
  }

  /// `after`: the OR that came before, if any, for "expected a condition after 'or'".
  std::optional<FilterNode> parse_and(std::string_view after) {
    std::optional<FilterNode> first = parse_primary(after);
    if (!first || !m_lexer.peek().is_keyword("and")) {
      return first;
    }
    FilterNode all;
    all.kind = FilterNode::Kind::all_of;
    all.children.push_back(std::move(*first));
    while (m_lexer.peek().is_keyword("and")) {
      Token keyword = m_lexer.take();
      std::optional<FilterNode> next = parse_primary(keyword.text);
      if (!next) {
        return std::nullopt;
      }
      all.children.push_back(std::move(*next));
    }
    return all;
  }

  std::optional<FilterNode> parse_primary(std::string_view after) {
    if (!m_lexer.peek().is_symbol("(")) {
      std::string expected = "expected a condition";
      if (!after.empty()) {
        expected += " after '" + std::string(after) + "'";
      }
      return parse_comparison(expected);
    }
    Token open = m_lexer.take();
    std::optional<FilterNode> inner = parse_or();
    if (!inner) {
      return std::nullopt;
    }
    const Token& close = m_lexer.peek();
    if (!close.is_symbol(")")) {
      fail_expected(close, "expected ')' to close '(' at column " + std::to_string(column(open.offset)));
      return std::nullopt;
    }
    m_lexer.take();
    return inner;
  }

  /// prefix '.' name, from a word token (and a quoted name right after "prefix.").
  std::optional<Entity> parse_entity(const std::string& expected) {
    const Token& first = m_lexer.peek();
    if (first.kind != Token::Kind::word) {
      fail_expected(first, expected);
      return std::nullopt;
    }
    Token word = m_lexer.take();
    std::size_t dot = word.text.find('.');
    if (dot == std::string_view::npos) {
      for (std::string_view keyword : {"and", "or", "not", "in", "like", "ilike", "asc", "desc"}) {
        if (word.is_keyword(keyword)) {
          fail_expected(word, expected);
          return std::nullopt;
        }
      }
      std::string name(word.text);
      if (find_attribute(name)) {
        fail(word.offset, "missing prefix before '" + name + "' (did you mean 'attributes." + name + "'?)");
      } else {
        fail(word.offset, "missing prefix before '" + name + "': write metrics." + name + ", params." + name +
                              ", tags." + name + " or attributes." + name);
      }
      return std::nullopt;
    }
    std::string_view prefix = word.text.substr(0, dot);
    const PrefixName* found = nullptr;
    for (const PrefixName& candidate : k_prefixes) {
      if (iequals(candidate.name, prefix)) {
        found = &candidate;
      }
    }
    if (!found) {
      constexpr std::array<std::string_view, 4> k_plural{"metrics", "params", "tags", "attributes"};
      fail(word.offset, "unknown entity '" + std::string(prefix) + "'; expected metrics, params, tags or attributes" +
                            did_you_mean(prefix, k_plural));
      return std::nullopt;
    }
    Entity entity;
    entity.entity = found->entity;
    entity.offset = word.offset;
    std::size_t name_offset = word.offset + dot + 1;
    std::size_t end = word.end();
    if (dot + 1 < word.text.size()) {
      entity.name = std::string(word.text.substr(dot + 1));
    } else {
      const Token& quoted = m_lexer.peek();
      bool adjacent = quoted.offset == word.end();
      if (adjacent && quoted.kind == Token::Kind::invalid) {
        fail(quoted.offset, quoted.value);
        return std::nullopt;
      }
      if (!adjacent || quoted.kind != Token::Kind::string || quoted.quote == '\'') {
        fail(name_offset, "expected a name after '" + std::string(word.text) + "'");
        return std::nullopt;
      }
      if (quoted.value.empty()) {
        fail(quoted.offset, "empty name after '" + std::string(word.text) + "'");
        return std::nullopt;
      }
      entity.name = quoted.value;
      end = quoted.end();
      m_lexer.take();
    }
    entity.source = m_text.substr(entity.offset, end - entity.offset);
    if (entity.entity == FilterEntity::attribute) {
      const AttributeName* attribute = find_attribute(entity.name);
      if (!attribute) {
        std::vector<std::string_view> names;
        for (const AttributeName& known : k_attributes) {
          names.push_back(known.name);
        }
        fail(name_offset,
             "unknown attribute '" + entity.name + "'; expected " + join_or(names) + did_you_mean(entity.name, names));
        return std::nullopt;
      }
      entity.name = std::string(attribute->canonical);
    }
    return entity;
  }

  std::optional<FilterNode> parse_comparison(const std::string& expected) {
    std::optional<Entity> entity = parse_entity(expected);
    if (!entity) {
      return std::nullopt;
    }
    FilterNode node;
    node.kind = FilterNode::Kind::comparison;
    node.entity = entity->entity;
    node.name = entity->name;
    node.column = column(entity->offset);

    const Token& first = m_lexer.peek();
    std::size_t op_offset = first.offset;
    std::size_t op_end = first.end();
    if (first.kind == Token::Kind::symbol && first.text != "(" && first.text != ")" && first.text != ",") {
      static constexpr std::array<std::pair<std::string_view, FilterOp>, 7> k_symbols{{
          {"=", FilterOp::eq},
          {"!=", FilterOp::ne},
          {"<>", FilterOp::ne},
          {"<", FilterOp::lt},
          {"<=", FilterOp::le},
          {">", FilterOp::gt},
          {">=", FilterOp::ge},
      }};
      for (const auto& [symbol, op] : k_symbols) {
        if (first.text == symbol) {
          node.op = op;
        }
      }
      m_lexer.take();
    } else if (first.is_keyword("like") || first.is_keyword("ilike") || first.is_keyword("in")) {
      node.op = first.is_keyword("like") ? FilterOp::like : first.is_keyword("ilike") ? FilterOp::ilike : FilterOp::in;
      m_lexer.take();
    } else if (first.is_keyword("not")) {
      m_lexer.take();
      const Token& second = m_lexer.peek();
      if (!second.is_keyword("like") && !second.is_keyword("ilike") && !second.is_keyword("in")) {
        fail_expected(second, "expected LIKE, ILIKE or IN after 'NOT'");
        return std::nullopt;
      }
      node.op = second.is_keyword("like")    ? FilterOp::not_like
                : second.is_keyword("ilike") ? FilterOp::not_ilike
                                             : FilterOp::not_in;
      op_end = second.end();
      m_lexer.take();
    } else {
      fail_expected(first, "expected a comparison operator after '" + std::string(entity->source) + "'");
      return std::nullopt;
    }
    std::string_view op_text = m_text.substr(op_offset, op_end - op_offset);

    std::vector<Operand> operands;
    if (node.op == FilterOp::in || node.op == FilterOp::not_in) {
      const Token& open = m_lexer.peek();
      if (!open.is_symbol("(")) {
        fail_expected(open, "expected '(' after '" + std::string(op_text) + "'");
        return std::nullopt;
      }
      std::size_t open_offset = m_lexer.take().offset;
      if (m_lexer.peek().is_symbol(")")) {
        fail(m_lexer.peek().offset, "an IN list needs at least one value");
        return std::nullopt;
      }
      for (;;) {
        std::optional<Operand> operand = parse_value(operands.empty() ? "'('" : "','");
        if (!operand) {
          return std::nullopt;
        }
        operands.push_back(std::move(*operand));
        const Token& next = m_lexer.peek();
        if (next.is_symbol(",")) {
          m_lexer.take();
          continue;
        }
        if (!next.is_symbol(")")) {
          fail_expected(next,
                        "expected ',' or ')' to close the IN list at column " + std::to_string(column(open_offset)));
          return std::nullopt;
        }
        m_lexer.take();
        break;
      }
    } else {
      std::optional<Operand> operand = parse_value("'" + std::string(op_text) + "'");
      if (!operand) {
        return std::nullopt;
      }
      operands.push_back(std::move(*operand));
    }
    if (!check(*entity, node.op, op_offset, op_text, operands)) {
      return std::nullopt;
    }
    for (Operand& operand : operands) {
      node.values.push_back(std::move(operand.value));
    }
    return node;
  }

  /// `after`: what the value follows, quoted, for messages.
  std::optional<Operand> parse_value(const std::string& after) {
    const Token& token = m_lexer.peek();
    Operand operand;
    operand.offset = token.offset;
    operand.text = token.text;
    if (token.kind == Token::Kind::number) {
      operand.value = token.number;
    } else if (token.kind == Token::Kind::string && token.quote != '`') {
      operand.value = token.value;
    } else if (token.kind == Token::Kind::string) {
      fail(token.offset, "backquotes are for names; quote a value with '...'");
      return std::nullopt;
    } else if (token.kind == Token::Kind::word) {
      fail(token.offset, "expected a value after " + after + ", found '" + std::string(token.text) +
                             "' (quote text: '" + std::string(token.text) + "')");
      return std::nullopt;
    } else {
      fail_expected(token, "expected a value after " + after);
      return std::nullopt;
    }
    m_lexer.take();
    return operand;
  }

  /// The semantic rules: which operators and value types each entity takes.
  bool check(const Entity& entity, FilterOp op, std::size_t op_offset, std::string_view op_text,
             std::vector<Operand>& operands) {
    bool pattern =
        op == FilterOp::like || op == FilterOp::ilike || op == FilterOp::not_like || op == FilterOp::not_ilike;
    bool list = op == FilterOp::in || op == FilterOp::not_in;
    bool ordering = op == FilterOp::lt || op == FilterOp::le || op == FilterOp::gt || op == FilterOp::ge;
    std::string source(entity.source);
    auto is_number = [](const Operand& operand) { return !std::holds_alternative<std::string>(operand.value); };

    switch (entity.entity) {
    case FilterEntity::metric:
      if (pattern || list) {
        return fail(op_offset, "metrics are compared as numbers: use =, !=, <, <=, >, >=");
      }
      if (!is_number(operands[0])) {
        return fail(operands[0].offset,
                    "metrics are compared as numbers: expected a number, found " + std::string(operands[0].text));
      }
      return true;
    case FilterEntity::param:
    case FilterEntity::tag:
      if (pattern && is_number(operands[0])) {
        return fail(operands[0].offset,
                    std::string(op_text) + " needs a quoted pattern, such as '" + std::string(operands[0].text) + "%'");
      }
      if (ordering && !is_number(operands[0])) {
        return fail(operands[0].offset, "'" + std::string(op_text) + "' compares " + source +
                                            " as a number: write the value without quotes");
      }
      for (const Operand& operand : operands) {
        if (is_number(operand) != is_number(operands[0])) {
          return fail(operand.offset, "an IN list cannot mix numbers and strings");
        }
      }
      return true;
    case FilterEntity::attribute: break;
    }

    switch (attribute_type(entity.name)) {
    case AttributeType::number: {
      std::string unit = entity.name == "number"     ? "the run number"
                         : entity.name == "duration" ? "milliseconds"
                                                     : "milliseconds since the epoch";
      if (pattern) {
        return fail(op_offset, source + " is a number (" + unit + "): use =, !=, <, <=, >, >=, IN or NOT IN");
      }
      for (const Operand& operand : operands) {
        if (!is_number(operand)) {
          return fail(operand.offset, source + " is a number (" + unit + "), found " + std::string(operand.text));
        }
      }
      return true;
    }
    case AttributeType::text:
    case AttributeType::status:
      if (ordering) {
        return fail(op_offset, source + " is text: use =, !=, LIKE, ILIKE, IN or NOT IN");
      }
      for (Operand& operand : operands) {
        if (is_number(operand)) {
          return fail(operand.offset, source + " is text: quote the value, found '" + std::string(operand.text) + "'");
        }
        if (attribute_type(entity.name) == AttributeType::status && !pattern) {
          // Statuses are stored in lower case; accept MLflow's upper-case habit.
          std::string status = lowercase(std::get<std::string>(operand.value));
          if (!parse_run_status(status)) {
            return fail(operand.offset, "unknown run status " + std::string(operand.text) + "; expected " +
                                            join_or(k_run_statuses) + did_you_mean(status, k_run_statuses));
          }
          operand.value = std::move(status);
        }
      }
      return true;
    }
    return true;
  }

  std::string_view m_text;
  std::string_view m_what;
  Lexer m_lexer;
  std::optional<FilterError> m_error;
};

// --- SQL -----------------------------------------------------------------

std::string_view sql_operator(FilterOp op) {
  switch (op) {
  case FilterOp::eq: return "=";
  case FilterOp::ne: return "<>";
  case FilterOp::lt: return "<";
  case FilterOp::le: return "<=";
  case FilterOp::gt: return ">";
  case FilterOp::ge: return ">=";
  case FilterOp::like:
  case FilterOp::ilike: return "LIKE";
  case FilterOp::not_like:
  case FilterOp::not_ilike: return "NOT LIKE";
  case FilterOp::in: return "IN";
  case FilterOp::not_in: return "NOT IN";
  }
  return "=";
}

/// `column <op> ?` (or `(?,?)` for IN), binding the node's values.
void append_condition(std::string column, const FilterNode& node, SqlFragment& out) {
  if (node.op == FilterOp::ilike || node.op == FilterOp::not_ilike) {
    out.sql += "lower(" + column + ") " + std::string(sql_operator(node.op)) + " lower(?)";
    out.args.push_back(node.values.empty() ? FilterValue(std::string()) : node.values[0]);
    return;
  }
  out.sql += column + " " + std::string(sql_operator(node.op)) + " ";
  if (node.op == FilterOp::in || node.op == FilterOp::not_in) {
    out.sql += "(";
    for (std::size_t i = 0; i < node.values.size(); ++i) {
      out.sql += i == 0 ? "?" : ",?";
      out.args.push_back(node.values[i]);
    }
    out.sql += ")";
    return;
  }
  out.sql += "?";
  out.args.push_back(node.values.empty() ? FilterValue(std::string()) : node.values[0]);
}

std::string_view attribute_column(std::string_view canonical) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 11> k_columns{{
      {"id", "r.id"},
      {"number", "r.number"},
      {"workflow", "r.workflow_name"},
      {"status", "r.status"},
      {"user", "r.user"},
      {"host", "r.host"},
      {"git_commit", "r.git_commit"},
      {"git_branch", "r.git_branch"},
      {"start_time", "r.started_ms"},
      {"end_time", "r.ended_ms"},
      {"duration", "(r.ended_ms - r.started_ms)"},
  }};
  for (const auto& [name, column] : k_columns) {
    if (name == canonical) {
      return column;
    }
  }
  return "r.id";
}

void append_filter(const FilterNode& node, SqlFragment& out) {
  if (node.kind != FilterNode::Kind::comparison) {
    if (node.children.empty()) {
      out.sql += node.kind == FilterNode::Kind::all_of ? "1" : "0";
      return;
    }
    out.sql += "(";
    for (std::size_t i = 0; i < node.children.size(); ++i) {
      if (i > 0) {
        out.sql += node.kind == FilterNode::Kind::all_of ? " AND " : " OR ";
      }
      append_filter(node.children[i], out);
    }
    out.sql += ")";
    return;
  }
  switch (node.entity) {
  case FilterEntity::attribute: append_condition(std::string(attribute_column(node.name)), node, out); return;
  case FilterEntity::metric:
    // NaN is stored as NULL and so never matches, like a missing metric.
    out.sql += "r.number IN (SELECT run FROM metric_series WHERE key = ? AND ";
    out.args.emplace_back(node.name);
    append_condition("last_value", node, out);
    out.sql += ")";
    return;
  case FilterEntity::param:
  case FilterEntity::tag: {
    out.sql += "r.number IN (SELECT run FROM ";
    out.sql += node.entity == FilterEntity::param ? "params" : "tags";
    out.sql += " WHERE key = ? AND ";
    out.args.emplace_back(node.name);
    bool numeric = !node.values.empty() && !std::holds_alternative<std::string>(node.values[0]);
    if (numeric) {
      // The guard holds only for text that is a whole number literal: the
      // comparison applies NUMERIC affinity to the TEXT column, which
      // converts well-formed numbers only, so '1abc' and '' stay text and
      // differ from any REAL (a plain CAST would read them as 1 and 0).
      out.sql += "CAST(value AS REAL) = value AND ";
      append_condition("CAST(value AS REAL)", node, out);
    } else {
      append_condition("value", node, out);
    }
    out.sql += ")";
    return;
  }
  }
}

} // namespace

std::variant<FilterNode, FilterError> parse_search_filter(std::string_view text) {
  return Parser(text, "filter").parse_filter();
}

std::variant<std::vector<OrderTerm>, FilterError> parse_order_by(std::string_view text) {
  return Parser(text, "ordering").parse_order();
}

SqlFragment filter_to_sql(const FilterNode& filter) {
  SqlFragment out;
  append_filter(filter, out);
  return out;
}

SqlFragment order_to_sql(const std::vector<OrderTerm>& order) {
  SqlFragment out;
  for (const OrderTerm& term : order) {
    std::string direction = term.descending ? " DESC" : " ASC";
    std::string value;
    int binds = 0;
    switch (term.entity) {
    case FilterEntity::metric:
      // The most recently logged series when steps log the same key. The
      // unary + keeps SQLite (without statistics) from choosing the by-key
      // index here: one lookup per run via (run, step, key) is what is wanted.
      value = "(SELECT last_value FROM metric_series WHERE run = r.number AND +key = ? ORDER BY last_ms DESC LIMIT 1)";
      binds = 1;
      break;
    case FilterEntity::param:
    case FilterEntity::tag:
      // The run's own value (step '') before any step's.
      value = std::string("(SELECT value FROM ") + (term.entity == FilterEntity::param ? "params" : "tags") +
              " WHERE run = r.number AND +key = ? ORDER BY step LIMIT 1)";
      binds = 1;
      break;
    case FilterEntity::attribute: value = std::string(attribute_column(term.name)); break;
    }
    // Missing values (no such key, NaN, a running run's end) sort last
    // whatever the direction.
    bool nullable = term.entity != FilterEntity::attribute || term.name == "end_time" || term.name == "duration";
    if (nullable) {
      out.sql += value + " IS NULL, ";
      for (int i = 0; i < binds; ++i) {
        out.args.emplace_back(term.name);
      }
    }
    out.sql += value + direction + ", ";
    for (int i = 0; i < binds; ++i) {
      out.args.emplace_back(term.name);
    }
  }
  out.sql += "r.number DESC";
  return out;
}

} // namespace kiln::core
