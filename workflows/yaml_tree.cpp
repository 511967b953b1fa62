#include "workflows/yaml_tree.hpp"

#include <yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <unordered_map>

namespace kiln::workflows {

SourceMap::SourceMap(std::string_view text) : m_text(text) {
  m_line_starts.push_back(0);
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') {
      m_line_starts.push_back(static_cast<std::uint32_t>(i + 1));
    }
  }
}

int SourceMap::line_of(std::uint32_t offset) const {
  const auto it = std::upper_bound(m_line_starts.begin(), m_line_starts.end(), offset);
  return static_cast<int>(it - m_line_starts.begin());
}

int SourceMap::column_of(std::uint32_t offset) const {
  const int line = line_of(offset);
  return static_cast<int>(offset - m_line_starts[line - 1]) + 1;
}

std::string_view SourceMap::line_text(int line) const {
  if (line < 1 || line > static_cast<int>(m_line_starts.size())) {
    return {};
  }
  const std::size_t start = m_line_starts[line - 1];
  std::size_t end = line < static_cast<int>(m_line_starts.size()) ? m_line_starts[line] - 1 : m_text.size();
  if (end > start && m_text[end - 1] == '\r') {
    --end;
  }
  return m_text.substr(start, end - start);
}

std::uint32_t SourceMap::offset_of(int line0, int column0) const {
  if (line0 < 0 || column0 < 0) {
    return static_cast<std::uint32_t>(m_text.size());
  }
  if (line0 >= static_cast<int>(m_line_starts.size())) {
    return static_cast<std::uint32_t>(m_text.size());
  }
  const std::size_t start = m_line_starts[line0];
  const std::size_t end =
      line0 + 1 < static_cast<int>(m_line_starts.size()) ? m_line_starts[line0 + 1] - 1 : m_text.size();
  return static_cast<std::uint32_t>(std::min(start + static_cast<std::size_t>(column0), end));
}

const Node* Node::find(std::string_view name) const {
  if (kind != NodeKind::map) {
    return nullptr;
  }
  for (std::size_t i = 0; i < map_size(); ++i) {
    if (map_key(i).value == name) {
      return &map_value(i);
    }
  }
  return nullptr;
}

namespace {

constexpr std::string_view k_core_tag_prefix = "tag:yaml.org,2002:";
constexpr std::size_t k_hashed_map_size = 16;
// Open collections allowed at once. libyaml keeps its stacks on the heap and
// has no limit of its own, but the tree is freed and walked recursively.
constexpr std::size_t k_max_depth = 2000;

// libyaml counts mark.index in characters (code points), not bytes. Events
// arrive almost in text order, so a cursor that walks from the previous
// position keeps the conversion linear over the whole parse.
class ByteOffsets {
public:
  explicit ByteOffsets(std::string_view text) : m_text(text) {}

  std::uint32_t of(std::size_t index) {
    while (m_index < index && m_byte < m_text.size()) {
      ++m_byte;
      while (m_byte < m_text.size() && is_continuation(m_text[m_byte])) {
        ++m_byte;
      }
      ++m_index;
    }
    while (m_index > index && m_byte > 0) {
      --m_byte;
      while (m_byte > 0 && is_continuation(m_text[m_byte])) {
        --m_byte;
      }
      --m_index;
    }
    return static_cast<std::uint32_t>(m_byte);
  }

private:
  static bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

  std::string_view m_text;
  std::size_t m_index = 0;
  std::size_t m_byte = 0;
};

// Owns a libyaml parser over the text; yaml_parser_delete on every path.
class EventParser {
public:
  explicit EventParser(std::string_view text) {
    m_ok = yaml_parser_initialize(&m_parser) != 0;
    if (m_ok) {
      // UTF-8 always: the loader has checked it, and libyaml must not read a
      // stray 0xFF 0xFE as a UTF-16 byte order mark.
      yaml_parser_set_encoding(&m_parser, YAML_UTF8_ENCODING);
      // libyaml asserts a non-null input, which an empty string_view may not have.
      static const unsigned char k_empty[1] = {0};
      const auto* input = text.empty() ? k_empty : reinterpret_cast<const unsigned char*>(text.data());
      yaml_parser_set_input_string(&m_parser, input, text.size());
    }
  }
  ~EventParser() { yaml_parser_delete(&m_parser); }
  EventParser(const EventParser&) = delete;
  EventParser& operator=(const EventParser&) = delete;

  bool ok() const { return m_ok; }
  const yaml_parser_t& state() const { return m_parser; }
  yaml_parser_t* get() { return &m_parser; }

private:
  yaml_parser_t m_parser{};
  bool m_ok = false;
};

// One event; yaml_event_delete when replaced or destroyed.
class Event {
public:
  Event() = default;
  ~Event() { clear(); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  /// The next event, or false on a syntax error (the parser's state says which).
  bool next(EventParser& parser) {
    clear();
    m_valid = yaml_parser_parse(parser.get(), &m_event) != 0;
    return m_valid;
  }
  const yaml_event_t& operator*() const { return m_event; }
  const yaml_event_t* operator->() const { return &m_event; }

private:
  void clear() {
    if (m_valid) {
      yaml_event_delete(&m_event);
      m_valid = false;
    }
  }

  yaml_event_t m_event{};
  bool m_valid = false;
};

// The tag the checks below compare: "?" for an untagged plain scalar or
// collection (its text decides its type), "!" for an untagged quoted or
// block scalar (always a string), else the full tag.
std::string tag_name(const yaml_char_t* tag, bool plain_scalar) {
  if (tag == nullptr) {
    return plain_scalar ? "?" : "!";
  }
  return reinterpret_cast<const char*>(tag);
}

// "!!int" for core-schema tags, the tag as given otherwise.
std::string display_tag(const std::string& tag) {
  if (tag.rfind(k_core_tag_prefix, 0) == 0) {
    return "!!" + tag.substr(k_core_tag_prefix.size());
  }
  return tag.empty() || tag[0] == '!' ? tag : "!<" + tag + ">";
}

bool is_known_tag(const std::string& tag, NodeKind kind) {
  if (tag == "?" || tag == "!") {
    return true;
  }
  if (tag.rfind(k_core_tag_prefix, 0) != 0) {
    return false;
  }
  const std::string_view name = std::string_view(tag).substr(k_core_tag_prefix.size());
  switch (kind) {
  case NodeKind::map: return name == "map";
  case NodeKind::sequence: return name == "seq";
  default: return name == "str" || name == "int" || name == "float" || name == "bool" || name == "null";
  }
}

bool is_null_text(std::string_view value) {
  return value.empty() || value == "~" || value == "null" || value == "Null" || value == "NULL";
}

ScalarStyle style_of(yaml_scalar_style_t style) {
  switch (style) {
  case YAML_SINGLE_QUOTED_SCALAR_STYLE: return ScalarStyle::single_quoted;
  case YAML_DOUBLE_QUOTED_SCALAR_STYLE: return ScalarStyle::double_quoted;
  case YAML_LITERAL_SCALAR_STYLE: return ScalarStyle::literal;
  case YAML_FOLDED_SCALAR_STYLE: return ScalarStyle::folded;
  default: return ScalarStyle::plain;
  }
}

class TreeBuilder {
public:
  TreeBuilder(const SourceMap& source, std::vector<YamlError>& errors) : m_source(source), m_errors(errors) {}

  std::optional<Node> take_root() { return std::move(m_root); }

  void alias(std::uint32_t offset) {
    Node node;
    node.kind = NodeKind::invalid;
    node.offset = offset;
    if (!skipping_value()) {
      error(node.offset, alias_length(node.offset),
            "aliases are not supported; use 'defaults:' for settings shared by steps");
    }
    add(std::move(node));
  }

  void scalar(std::uint32_t offset, const yaml_event_t& event) {
    const auto& data = event.data.scalar;
    const bool plain_style = data.style == YAML_PLAIN_SCALAR_STYLE;
    const std::string tag = tag_name(data.tag, plain_style);
    std::string_view value(reinterpret_cast<const char*>(data.value), data.length);
    Node node;
    node.offset = content_offset(offset);
    if (plain_style && tag == "?" && is_null_text(value)) {
      node.kind = NodeKind::null;
      add(std::move(node));
      return;
    }
    node.kind = NodeKind::scalar;
    node.value = value;
    node.plain = tag == "?" || (tag.rfind(k_core_tag_prefix, 0) == 0 && tag != "tag:yaml.org,2002:str");
    node.style = style_of(data.style);
    check_tag(node, tag);
    add(std::move(node));
  }

  /// False when the nesting is too deep: the parse must stop.
  bool start(NodeKind kind, std::uint32_t offset, const yaml_char_t* tag) {
    Frame frame;
    frame.node.kind = kind;
    frame.node.offset = content_offset(offset);
    if (m_stack.size() >= k_max_depth) {
      error(frame.node.offset, 1, "invalid YAML: nesting is too deep");
      return false;
    }
    check_tag(frame.node, tag_name(tag, true));
    m_stack.push_back(std::move(frame));
    return true;
  }

  void end() {
    if (m_stack.empty()) {
      return;
    }
    Node node = std::move(m_stack.back().node);
    m_stack.pop_back();
    add(std::move(node));
  }

private:
  struct Frame {
    Node node;
    bool awaiting_value = false;
    bool skip_value = false;
    // Key -> offset of its first occurrence, once the map is large enough
    // that a linear scan would make 10,000 steps quadratic.
    std::unordered_map<std::string, std::uint32_t> index;
  };

  // Skips "&anchor" and "!tag" properties to where the content starts.
  std::uint32_t content_offset(std::uint32_t offset) const {
    const std::string_view text = m_source.text();
    std::size_t pos = offset;
    while (pos < text.size() && (text[pos] == '&' || text[pos] == '!')) {
      while (pos < text.size() && text[pos] != ' ' && text[pos] != '\t' && text[pos] != '\n' && text[pos] != '\r') {
        ++pos;
      }
      while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r')) {
        ++pos;
      }
    }
    return static_cast<std::uint32_t>(std::min(pos, text.size()));
  }

  std::uint32_t alias_length(std::uint32_t offset) const {
    const std::string_view text = m_source.text();
    std::size_t end = offset + 1;
    while (end < text.size() && text[end] != ' ' && text[end] != '\n' && text[end] != '\r' && text[end] != ',' &&
           text[end] != ']' && text[end] != '}') {
      ++end;
    }
    return static_cast<std::uint32_t>(end - offset);
  }

  void check_tag(const Node& node, const std::string& tag) {
    if (!is_known_tag(tag, node.kind)) {
      error(node.offset, 1, "unsupported tag '" + display_tag(tag) + "'");
    }
  }

  void error(std::uint32_t offset, std::uint32_t length, std::string message) {
    m_errors.push_back({offset, length, std::move(message)});
  }

  bool skipping_value() const {
    return !m_stack.empty() && m_stack.back().node.kind == NodeKind::map && m_stack.back().awaiting_value &&
           m_stack.back().skip_value;
  }

  void add(Node node) {
    if (m_stack.empty()) {
      m_root = std::move(node);
      return;
    }
    Frame& frame = m_stack.back();
    if (frame.node.kind == NodeKind::sequence) {
      frame.node.children.push_back(std::move(node));
      return;
    }
    if (frame.awaiting_value) {
      frame.awaiting_value = false;
      if (frame.skip_value) {
        frame.skip_value = false;
        return;
      }
      frame.node.children.push_back(std::move(node));
      return;
    }
    frame.awaiting_value = true;
    frame.skip_value = !accept_key(frame, node);
    if (!frame.skip_value) {
      frame.node.children.push_back(std::move(node));
    }
  }

  // Whether `key` may enter the map; reports why not.
  bool accept_key(Frame& frame, const Node& key) {
    switch (key.kind) {
    case NodeKind::invalid: return false;
    case NodeKind::null: error(key.offset, 1, "a map key is empty"); return false;
    case NodeKind::sequence:
    case NodeKind::map: error(key.offset, 1, "map keys must be plain strings"); return false;
    case NodeKind::scalar: break;
    }
    if (key.plain && key.value == "<<") {
      error(key.offset, 2, "merge keys ('<<') are not supported; use 'defaults:' for settings shared by steps");
      return false;
    }
    std::optional<std::uint32_t> first;
    if (frame.index.empty() && frame.node.map_size() < k_hashed_map_size) {
      for (std::size_t i = 0; i < frame.node.map_size(); ++i) {
        if (frame.node.map_key(i).value == key.value) {
          first = frame.node.map_key(i).offset;
          break;
        }
      }
    } else {
      if (frame.index.empty()) {
        for (std::size_t i = 0; i < frame.node.map_size(); ++i) {
          frame.index.emplace(frame.node.map_key(i).value, frame.node.map_key(i).offset);
        }
      }
      const auto [it, inserted] = frame.index.emplace(key.value, key.offset);
      if (!inserted) {
        first = it->second;
      }
    }
    if (first) {
      error(key.offset, key_length(key),
            "duplicate key '" + key.value + "' (first at line " + std::to_string(m_source.line_of(*first)) + ")");
      return false;
    }
    return true;
  }

  std::uint32_t key_length(const Node& key) const {
    const std::string_view text = m_source.text();
    if (key.style == ScalarStyle::plain && text.compare(key.offset, key.value.size(), key.value) == 0) {
      return static_cast<std::uint32_t>(std::max<std::size_t>(1, key.value.size()));
    }
    return 1;
  }

  const SourceMap& m_source;
  std::vector<YamlError>& m_errors;
  std::vector<Frame> m_stack;
  std::optional<Node> m_root;
};

bool equals(const char* a, const char* b) {
  return a != nullptr && std::strcmp(a, b) == 0;
}

// The character at `offset` quoted for a message: 'x', or the tab spelled out.
std::string quoted_char(std::string_view text, std::uint32_t offset) {
  if (offset >= text.size()) {
    return "the end of the file";
  }
  const unsigned char c = static_cast<unsigned char>(text[offset]);
  if (c == '\t') {
    return "a tab";
  }
  if (c < 0x20 || c >= 0x7F) {
    return "this character";
  }
  return std::string("'") + static_cast<char>(c) + "'";
}

// Whether only spaces precede `offset` on its line.
bool starts_line(const SourceMap& source, std::uint32_t offset) {
  const std::string_view line = source.line_text(source.line_of(offset));
  const std::size_t column = static_cast<std::size_t>(source.column_of(offset)) - 1;
  return line.substr(0, std::min(column, line.size())).find_first_not_of(' ') == std::string_view::npos;
}

std::string where(const SourceMap& source, std::uint32_t offset) {
  return "line " + std::to_string(source.line_of(offset)) + ", column " + std::to_string(source.column_of(offset));
}

// libyaml's own texts ("did not find expected key") name its grammar, not the
// user's mistake; the common ones are said again in terms of the file.
YamlError syntax_error(const yaml_parser_t& parser, const SourceMap& source, ByteOffsets& bytes) {
  const std::string_view text = source.text();
  if (parser.error == YAML_MEMORY_ERROR) {
    return {0, 1, "invalid YAML: out of memory"};
  }
  if (parser.error == YAML_READER_ERROR) {
    // The reader reports a byte offset, not a mark.
    const auto offset = static_cast<std::uint32_t>(std::min(parser.problem_offset, text.size()));
    if (equals(parser.problem, "control characters are not allowed") && parser.problem_value >= 0) {
      char code[16];
      std::snprintf(code, sizeof code, "%04X", static_cast<unsigned>(parser.problem_value));
      return {offset, 1, std::string("invalid YAML: control character U+") + code + " is not allowed"};
    }
    return {offset, 1,
            std::string("invalid YAML: ") + (parser.problem != nullptr ? parser.problem : "unreadable text")};
  }
  const std::uint32_t context = bytes.of(parser.context_mark.index);
  std::uint32_t offset = bytes.of(parser.problem_mark.index);

  const char* problem = parser.problem != nullptr ? parser.problem : "";
  const char* context_text = parser.context != nullptr ? parser.context : "";
  const char at = offset < text.size() ? text[offset] : '\0';
  // libyaml reads an unclosed quote to the end of the file (or to a "---"
  // line) and reports it there; the quote is what the user must fix.
  if (std::strcmp(context_text, "while scanning a quoted scalar") == 0 &&
      (equals(problem, "found unexpected end of stream") || equals(problem, "found unexpected document indicator"))) {
    return {context, 1, "invalid YAML: unterminated quoted string (missing closing quote)"};
  }
  // A tab in the indentation of the line at fault explains most errors
  // there, whatever libyaml saw first.
  const std::string_view line = source.line_text(source.line_of(offset));
  const std::size_t tab = line.substr(0, line.find_first_not_of(" \t")).find('\t');
  if (tab != std::string_view::npos) {
    offset = static_cast<std::uint32_t>(line.data() - text.data() + tab);
    return {offset, 1, "invalid YAML: a tab in indentation; indent with spaces"};
  }

  if (std::strcmp(context_text, "while scanning a simple key") == 0) {
    return {context, 1, "invalid YAML: a key must end with ':' on its own line; is a ':' missing here?"};
  }
  if (equals(problem, "found unknown escape character")) {
    std::string escape = "\\";
    if (offset + 1 < text.size() && static_cast<unsigned char>(text[offset + 1]) > 0x20 &&
        static_cast<unsigned char>(text[offset + 1]) < 0x7F) {
      escape += text[offset + 1];
    }
    return {offset, static_cast<std::uint32_t>(escape.size()),
            "invalid YAML: unknown escape '" + escape +
                "' in a double-quoted string; write '\\\\' for a backslash, or use single quotes"};
  }
  if (std::strcmp(context_text, "while scanning an alias") == 0 ||
      std::strcmp(context_text, "while scanning an anchor") == 0) {
    const char sign = context < text.size() ? text[context] : '*';
    return {context, 1,
            std::string("invalid YAML: '") + sign + "' starts an " + (sign == '&' ? "anchor" : "alias") +
                " name; quote the value if it is text"};
  }
  if (std::strcmp(context_text, "while scanning a tag") == 0 || std::strcmp(context_text, "while parsing a tag") == 0) {
    return {context, 1, "invalid YAML: '!' starts a tag here; quote the value if it is text"};
  }
  if (equals(problem, "found undefined tag handle")) {
    return {offset, 1, "invalid YAML: undefined tag handle (a '%TAG' directive is missing)"};
  }
  if (equals(problem, "found character that cannot start any token")) {
    if (at == '\t') {
      return {offset, 1, "invalid YAML: a tab is not allowed here; use spaces"};
    }
    return {offset, 1, "invalid YAML: a value cannot start with " + quoted_char(text, offset) + "; quote it"};
  }
  if (equals(problem, "mapping values are not allowed in this context")) {
    return {offset, 1,
            "invalid YAML: ':' cannot start a map here; quote a value that contains ': ', or fix the indentation"};
  }
  if (equals(problem, "block sequence entries are not allowed in this context")) {
    return {offset, 1, "invalid YAML: a '- ' list item is not allowed here; check the indentation"};
  }
  if ((equals(problem, "did not find expected ',' or ']'") && at == '}') ||
      (equals(problem, "did not find expected ',' or '}'") && at == ']')) {
    return {offset, 1,
            std::string("invalid YAML: unexpected '") + at + "'; the '" + (at == '}' ? '[' : '{') + "' at " +
                where(source, context) + " is still open"};
  }
  if (equals(problem, "did not find expected ',' or ']'")) {
    return {offset, 1, "invalid YAML: expected ',' or ']' to continue or close the '[' at " + where(source, context)};
  }
  if (equals(problem, "did not find expected ',' or '}'")) {
    return {offset, 1, "invalid YAML: expected ',' or '}' to continue or close the '{' at " + where(source, context)};
  }
  if (equals(problem, "did not find expected key") || equals(problem, "did not find expected '-' indicator")) {
    const bool map = equals(problem, "did not find expected key");
    if (at == ']' || at == '}') {
      return {offset, 1, std::string("invalid YAML: unmatched '") + at + "'"};
    }
    if (map && at == '-' && (offset + 1 >= text.size() || text[offset + 1] == ' ' || text[offset + 1] == '\n')) {
      return {offset, 1,
              "invalid YAML: a '- ' list item where the map at line " + std::to_string(source.line_of(context)) +
                  " expects a 'key:'; check the indentation"};
    }
    if (!starts_line(source, offset)) {
      return {offset, 1, "invalid YAML: unexpected text after a value; quote the whole value if it is one string"};
    }
    const std::string column = std::to_string(source.column_of(context));
    return {offset, 1,
            map ? "invalid YAML: bad indentation: expected a 'key:' at column " + column + ", like the map at line " +
                      std::to_string(source.line_of(context))
                : "invalid YAML: bad indentation: expected a '- ' item at column " + column +
                      ", like the list at line " + std::to_string(source.line_of(context))};
  }
  if (equals(problem, "did not find expected node content")) {
    return {offset, 1, "invalid YAML: expected a value here"};
  }
  if (equals(problem, "found unknown directive name")) {
    return {context, 1, "invalid YAML: unknown directive; only %YAML and %TAG are allowed"};
  }
  if (equals(problem, "did not find expected <document start>")) {
    return {offset, 1, "invalid YAML: unexpected content after the end of the document"};
  }
  return {offset, 1, std::string("invalid YAML: ") + (problem[0] != '\0' ? problem : "syntax error")};
}

} // namespace

YamlDocument parse_yaml(const SourceMap& source) {
  YamlDocument doc;
  ByteOffsets bytes(source.text());
  EventParser parser(source.text());
  TreeBuilder builder(source, doc.errors);
  auto fail = [&](YamlError error) {
    doc.syntax_error = true;
    doc.root.reset();
    doc.errors.push_back(std::move(error));
  };
  auto second_document = [&](std::uint32_t offset) {
    const bool marker = source.text().compare(offset, 3, "---") == 0;
    doc.errors.push_back(
        {offset, marker ? 3U : 1U, "a workflow file holds a single YAML document; remove this second one"});
  };
  if (!parser.ok()) {
    fail({0, 1, "invalid YAML: out of memory"});
    return doc;
  }
  Event event;
  int documents = 0;
  bool explicit_end = false;
  for (;;) {
    if (!event.next(parser)) {
      // After "...", content without "---" is a second document to a reader.
      if (documents == 1 && explicit_end && parser.state().error == YAML_PARSER_ERROR &&
          equals(parser.state().problem, "did not find expected <document start>")) {
        doc.root = builder.take_root();
        second_document(bytes.of(parser.state().problem_mark.index));
        return doc;
      }
      fail(syntax_error(parser.state(), source, bytes));
      return doc;
    }
    const std::uint32_t offset = bytes.of(event->start_mark.index);
    switch (event->type) {
    case YAML_DOCUMENT_START_EVENT:
      if (++documents > 1) {
        doc.root = builder.take_root();
        second_document(offset);
        return doc;
      }
      break;
    case YAML_DOCUMENT_END_EVENT: explicit_end = event->data.document_end.implicit == 0; break;
    case YAML_ALIAS_EVENT: builder.alias(offset); break;
    case YAML_SCALAR_EVENT: builder.scalar(offset, *event); break;
    case YAML_SEQUENCE_START_EVENT:
      if (!builder.start(NodeKind::sequence, offset, event->data.sequence_start.tag)) {
        doc.syntax_error = true;
        return doc;
      }
      break;
    case YAML_MAPPING_START_EVENT:
      if (!builder.start(NodeKind::map, offset, event->data.mapping_start.tag)) {
        doc.syntax_error = true;
        return doc;
      }
      break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: builder.end(); break;
    case YAML_STREAM_END_EVENT: doc.root = builder.take_root(); return doc;
    default: break;
    }
  }
}

} // namespace kiln::workflows
