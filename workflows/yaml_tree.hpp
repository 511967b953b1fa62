#pragma once
// A small positioned YAML tree, built from yaml-cpp's event parser rather
// than YAML::Load: Load keeps the last of two equal keys silently and drops
// scalar styles, both of which the validator needs. The builder reports
// duplicate keys, aliases, merge keys, unknown tags and extra documents as
// it goes, and drops the offending entries so later checks do not cascade.
// This is the only file pair that includes yaml-cpp.
//
// Cost: yaml-cpp's scanner dominates loading (about 80 ms of CPU for a
// 900 KB, 10,000-step file; the tree and validation add about 20 ms).
// libyaml produces the same events with marks and scalar styles about 7x
// faster; swapping it in would touch only yaml_tree.cpp and the link line.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::workflows {

/// Line starts of a text, to turn byte offsets into 1-based line:column.
class SourceMap {
public:
  explicit SourceMap(std::string_view text);

  std::string_view text() const { return m_text; }
  /// 1-based line of a byte offset (offsets past the end map to the last line).
  int line_of(std::uint32_t offset) const;
  /// 1-based byte column of an offset within its line.
  int column_of(std::uint32_t offset) const;
  /// The line's bytes without its newline (and without a trailing '\r').
  std::string_view line_text(int line) const;
  /// Byte offset of 0-based line and column as yaml-cpp reports them, clamped
  /// to the text.
  std::uint32_t offset_of(int line0, int column0) const;

private:
  std::string_view m_text;
  std::vector<std::uint32_t> m_line_starts;
};

enum class NodeKind : std::uint8_t {
  null,
  scalar,
  sequence,
  map,
  /// Stands for something already reported (an alias): checks skip it silently.
  invalid,
};

enum class ScalarStyle : std::uint8_t { plain, single_quoted, double_quoted, literal, folded };

struct Node {
  NodeKind kind = NodeKind::null;
  ScalarStyle style = ScalarStyle::plain;
  /// False for quoted and block scalars and for `!!str`: their text is never
  /// read as a number or a boolean.
  bool plain = true;
  /// Byte offset of the node's content (after any anchor or tag).
  std::uint32_t offset = 0;
  std::string value;
  /// Sequence: the items. Map: key, value, key, value, ... in file order,
  /// keys always scalars and unique.
  std::vector<Node> children;

  bool is_null() const { return kind == NodeKind::null; }
  bool is_scalar() const { return kind == NodeKind::scalar; }
  bool is_map() const { return kind == NodeKind::map; }
  bool is_sequence() const { return kind == NodeKind::sequence; }
  std::size_t map_size() const { return children.size() / 2; }
  const Node& map_key(std::size_t i) const { return children[2 * i]; }
  const Node& map_value(std::size_t i) const { return children[2 * i + 1]; }
  /// The value of `name` in a map, or nullptr.
  const Node* find(std::string_view name) const;
};

struct YamlError {
  std::uint32_t offset = 0;
  std::uint32_t length = 1;
  std::string message;
};

struct YamlDocument {
  /// Absent when the text holds no document or a syntax error stopped the parse.
  std::optional<Node> root;
  std::vector<YamlError> errors;
  /// A syntax error: the tree is incomplete and must not be validated.
  bool syntax_error = false;
};

/// Parses one YAML document. Never throws: every problem becomes a YamlError.
/// `source` must outlive nothing: the tree owns its strings.
YamlDocument parse_yaml(const SourceMap& source);

} // namespace kiln::workflows
