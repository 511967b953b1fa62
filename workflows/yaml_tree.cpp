#include "workflows/yaml_tree.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <istream>
#include <streambuf>
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

// An istream over a string_view without copying the text.
class ViewBuffer final : public std::streambuf {
public:
  explicit ViewBuffer(std::string_view text) {
    char* begin = const_cast<char*>(text.data());
    setg(begin, begin, begin + text.size());
  }
};

// Thrown from the probe handler to stop at the start of a second document.
struct SecondDocument {
  std::uint32_t offset;
};

constexpr std::string_view k_core_tag_prefix = "tag:yaml.org,2002:";
constexpr std::size_t k_hashed_map_size = 16;

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

class TreeBuilder final : public YAML::EventHandler {
public:
  TreeBuilder(const SourceMap& source, std::vector<YamlError>& errors) : m_source(source), m_errors(errors) {}

  std::optional<Node> take_root() { return std::move(m_root); }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override {
    Node node;
    node.kind = NodeKind::null;
    node.offset = offset_of(mark);
    add(std::move(node));
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    Node node;
    node.kind = NodeKind::invalid;
    node.offset = offset_of(mark);
    if (!skipping_value()) {
      error(node.offset, alias_length(node.offset),
            "aliases are not supported; use 'defaults:' for settings shared by steps");
    }
    add(std::move(node));
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t, const std::string& value) override {
    Node node;
    node.kind = NodeKind::scalar;
    node.offset = content_offset(offset_of(mark));
    node.value = value;
    node.plain = tag == "?" || (tag.rfind(k_core_tag_prefix, 0) == 0 && tag != "tag:yaml.org,2002:str");
    node.style = style_at(node.offset, tag);
    check_tag(node, tag);
    if ((node.style == ScalarStyle::single_quoted || node.style == ScalarStyle::double_quoted) &&
        !has_closing_quote(node.offset)) {
      // yaml-cpp takes a quoted scalar that runs to the end of the file as
      // complete; everything after the quote would silently become text.
      error(node.offset, 1, "invalid YAML: unterminated quoted string (missing closing quote)");
      m_fatal = true;
    }
    add(std::move(node));
  }

  bool fatal() const { return m_fatal; }

  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    start(NodeKind::sequence, mark, tag);
  }
  void OnSequenceEnd() override { end(); }

  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    start(NodeKind::map, mark, tag);
  }
  void OnMapEnd() override { end(); }

private:
  struct Frame {
    Node node;
    bool awaiting_value = false;
    bool skip_value = false;
    // Key -> offset of its first occurrence, once the map is large enough
    // that a linear scan would make 10,000 steps quadratic.
    std::unordered_map<std::string, std::uint32_t> index;
  };

  std::uint32_t offset_of(const YAML::Mark& mark) const { return m_source.offset_of(mark.line, mark.column); }

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

  ScalarStyle style_at(std::uint32_t offset, const std::string& tag) const {
    const std::string_view text = m_source.text();
    if (tag == "?" || offset >= text.size()) {
      return ScalarStyle::plain;
    }
    switch (text[offset]) {
    case '\'': return ScalarStyle::single_quoted;
    case '"': return ScalarStyle::double_quoted;
    case '|': return ScalarStyle::literal;
    case '>': return ScalarStyle::folded;
    default: return ScalarStyle::plain;
    }
  }

  bool has_closing_quote(std::uint32_t offset) const {
    const std::string_view text = m_source.text();
    const char quote = text[offset];
    for (std::size_t i = offset + 1; i < text.size(); ++i) {
      if (quote == '"' && text[i] == '\\') {
        ++i;
      } else if (text[i] == quote) {
        if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
          ++i;
        } else {
          return true;
        }
      }
    }
    return false;
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

  void start(NodeKind kind, const YAML::Mark& mark, const std::string& tag) {
    Frame frame;
    frame.node.kind = kind;
    frame.node.offset = content_offset(offset_of(mark));
    check_tag(frame.node, tag);
    m_stack.push_back(std::move(frame));
  }

  void end() {
    if (m_stack.empty()) {
      return;
    }
    Node node = std::move(m_stack.back().node);
    m_stack.pop_back();
    add(std::move(node));
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
  bool m_fatal = false;
};

// Sees where a second document starts, then stops the parser.
class DocumentProbe final : public YAML::EventHandler {
public:
  explicit DocumentProbe(const SourceMap& source) : m_source(source) {}
  void OnDocumentStart(const YAML::Mark& mark) override {
    throw SecondDocument{m_source.offset_of(mark.line, mark.column)};
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

private:
  const SourceMap& m_source;
};

std::string syntax_message(const std::string& msg) {
  if (msg.empty()) {
    return "invalid YAML";
  }
  return "invalid YAML: " + msg;
}

} // namespace

YamlDocument parse_yaml(const SourceMap& source) {
  YamlDocument doc;
  ViewBuffer buffer(source.text());
  std::istream in(&buffer);
  auto syntax_error = [&](const YAML::Mark& mark, std::string message) {
    doc.syntax_error = true;
    doc.root.reset();
    std::uint32_t offset = source.offset_of(mark.line, mark.column);
    // yaml-cpp's message for a tab in indentation is often a confusing
    // "end of map not found"; say what is wrong when the line starts with one.
    const std::string_view line = source.line_text(source.line_of(offset));
    const std::size_t indent_end = line.find_first_not_of(" \t");
    const std::size_t tab = line.substr(0, indent_end).find('\t');
    if (tab != std::string_view::npos) {
      offset = static_cast<std::uint32_t>(line.data() - source.text().data() + tab);
      message = "invalid YAML: a tab in indentation; indent with spaces";
    }
    doc.errors.push_back({offset, 1, std::move(message)});
  };
  try {
    YAML::Parser parser(in);
    TreeBuilder builder(source, doc.errors);
    if (!parser.HandleNextDocument(builder)) {
      return doc;
    }
    doc.root = builder.take_root();
    if (builder.fatal()) {
      doc.syntax_error = true;
      doc.root.reset();
      return doc;
    }
    try {
      DocumentProbe probe(source);
      parser.HandleNextDocument(probe);
    } catch (const SecondDocument& second) {
      const bool marker = source.text().compare(second.offset, 3, "---") == 0;
      doc.errors.push_back({second.offset, marker ? 3U : 1U,
                            "a workflow file holds a single YAML document; remove this second one"});
    }
  } catch (const YAML::DeepRecursion& e) {
    syntax_error(e.mark, "invalid YAML: nesting is too deep");
  } catch (const YAML::Exception& e) {
    syntax_error(e.mark, syntax_message(e.msg));
  } catch (const std::exception& e) {
    doc.syntax_error = true;
    doc.root.reset();
    doc.errors.push_back({0, 1, std::string("invalid YAML: ") + e.what()});
  }
  return doc;
}

} // namespace kiln::workflows
