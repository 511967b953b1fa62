#pragma once
// A small positioned YAML tree, built from libyaml's event parser rather
// than a generic loader: loaders keep the last of two equal keys silently and
// drop scalar styles, both of which the validator needs. The builder reports
// duplicate keys, aliases, merge keys, unknown tags and extra documents as
// it goes, and drops the offending entries so later checks do not cascade.
// libyaml's syntax errors are reworded in terms of the user's file. This is
// the only file pair that includes libyaml.
//
// Why libyaml: yaml-cpp's scanner was 90% of `kiln validate` on a
// 10,000-step file. libyaml gives the same events with marks and scalar
// styles at a fraction of the cost: on a 506 KB, 10,000-step layered
// workflow `kiln validate` went from 977M to 307M instructions (parsing is
// now about 210M of them) and from 0.12 s to 0.07 s wall.
// libyaml parses YAML 1.1 and is stricter than yaml-cpp in a few corners: a
// tab after "- ", a control character, an unknown %DIRECTIVE or an empty
// flow entry ("[a, , b]") is a syntax error, and U+0085, U+2028 and U+2029
// break lines.

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
  /// Byte offset of a 0-based line and byte column, clamped to the text.
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
