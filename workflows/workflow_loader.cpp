// Validation walks the positioned YAML tree once, filling core::Workflow and
// collecting diagnostics as byte offsets; offsets become line:column only
// when reported, and the tree is freed before the workflow is returned.
// Order of work: params first (templates everywhere refer to them), then
// the other top-level keys, the steps in two passes (ids, then bodies, so
// needs may point forward), then the graph (cycles, model inference, kind
// contracts), then -p overrides and required params. Step ids live in a
// hash map so 10,000 steps stay linear.

#include "workflows/workflow_loader.hpp"

#include "core/duration.hpp"
#include "core/expression.hpp"
#include "core/graph.hpp"
#include "core/hash.hpp"
#include "core/template.hpp"
#include "core/tracking.hpp"
#include "workflows/suggest.hpp"
#include "workflows/yaml_tree.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

namespace kiln::workflows {

using core::EnvVars;
using core::Millis;
using core::Param;
using core::ParamType;
using core::Resources;
using core::RetryPolicy;
using core::Step;
using core::StepKind;
using core::Workflow;

namespace {

using Names = std::vector<std::string_view>;

const Names k_top_keys{"name", "description", "params", "env", "tags", "tracking", "defaults", "steps"};
const Names k_tracking_keys{"uri", "experiment"};
const Names k_step_keys{"kind",       "description", "needs",     "run",  "workdir", "env",         "outputs",
                        "inputs",     "cache",       "when",      "gate", "metrics", "model",       "timeout",
                        "kill_after", "retries",     "resources", "tags", "matrix",  "max_parallel"};
const Names k_default_keys{"timeout", "kill_after", "retries", "resources", "workdir", "env"};
const Names k_param_keys{"type", "default", "description"};
const Names k_retry_keys{"limit", "backoff", "delay", "max_delay", "jitter", "on"};
const Names k_resource_keys{"cpus", "memory", "gpus"};
const Names k_kinds{"task", "train", "evaluate", "predict"};
const Names k_types{"string", "int", "float", "bool"};
const Names k_backoffs{"fixed", "exponential"};
const Names k_retry_conditions{"failure", "timeout"};

constexpr int k_max_retries = 100;
constexpr int k_max_cpus = 4096;
constexpr std::size_t k_max_file_size = 64U << 20;
// Did-you-mean over step ids costs O(steps) per unknown id; beyond this many
// suggestions a file with thousands of bad ids would be slow to reject.
constexpr int k_step_suggestion_budget = 200;

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// [A-Za-z0-9_.-]+
bool is_workflow_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-';
  });
}

// [A-Za-z0-9_][A-Za-z0-9_.-]*
bool is_step_id(std::string_view s) {
  return is_workflow_name(s) && s[0] != '.' && s[0] != '-';
}

// [A-Za-z_][A-Za-z0-9_-]*: what a template can name as params.NAME.
bool is_param_name(std::string_view s) {
  return !s.empty() && (is_alpha(s[0]) || s[0] == '_') &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_alpha(c) || is_digit(c) || c == '_' || c == '-'; });
}

// [A-Za-z_][A-Za-z0-9_]*
/// True when `path` is absolute or climbs above where it starts with "..":
/// declared outputs must stay inside the step's workdir. (Symlinks pointing
/// out are caught when the output is recorded.)
bool escapes_workdir(std::string_view path) {
  if (path.starts_with('/')) {
    return true;
  }
  int depth = 0;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) {
      end = path.size();
    }
    const std::string_view part = path.substr(start, end - start);
    if (part == "..") {
      if (--depth < 0) {
        return true;
      }
    } else if (!part.empty() && part != ".") {
      ++depth;
    }
    start = end + 1;
  }
  return false;
}

bool is_env_name(std::string_view s) {
  return !s.empty() && (is_alpha(s[0]) || s[0] == '_') &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_alpha(c) || is_digit(c) || c == '_'; });
}

std::string join(const Names& names, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) {
      out += separator;
    }
    out += names[i];
  }
  return out;
}

// "a, b or c"
std::string one_of(const Names& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) {
      out += i + 1 == names.size() ? " or " : ", ";
    }
    out += names[i];
  }
  return out;
}

bool is_bool_word(std::string_view s, bool& value) {
  if (s == "true" || s == "True" || s == "TRUE") {
    value = true;
    return true;
  }
  if (s == "false" || s == "False" || s == "FALSE") {
    value = false;
    return true;
  }
  return false;
}

// [-+]?[0-9]+
bool looks_like_int(std::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    s.remove_prefix(1);
  }
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

// [-+]?([0-9]+.?[0-9]*|.[0-9]+)([eE][-+]?[0-9]+)?
bool looks_like_float(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
    ++i;
  }
  std::size_t digits = 0;
  while (i < s.size() && is_digit(s[i])) {
    ++i;
    ++digits;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) {
      ++i;
      ++digits;
    }
  }
  if (digits == 0) {
    return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
      ++i;
    }
    const std::size_t exponent_start = i;
    while (i < s.size() && is_digit(s[i])) {
      ++i;
    }
    if (i == exponent_start) {
      return false;
    }
  }
  return i == s.size();
}

// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)?: kept as the user wrote it.
bool is_canonical_float_text(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && s[i] == '-') {
    ++i;
  }
  if (i >= s.size() || !is_digit(s[i])) {
    return false;
  }
  if (s[i] == '0' && i + 1 < s.size() && is_digit(s[i + 1])) {
    return false;
  }
  while (i < s.size() && is_digit(s[i])) {
    ++i;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (i >= s.size() || !is_digit(s[i])) {
      return false;
    }
    while (i < s.size() && is_digit(s[i])) {
      ++i;
    }
  }
  return i == s.size() || looks_like_float(s);
}

ParamType infer_type(const Node& scalar) {
  if (!scalar.plain) {
    return ParamType::string;
  }
  bool b = false;
  if (is_bool_word(scalar.value, b)) {
    return ParamType::boolean;
  }
  if (looks_like_int(scalar.value)) {
    return ParamType::integer;
  }
  if (looks_like_float(scalar.value)) {
    return ParamType::floating;
  }
  return ParamType::string;
}

std::optional<ParamType> parse_type_name(std::string_view s) {
  if (s == "string" || s == "str") {
    return ParamType::string;
  }
  if (s == "int" || s == "integer") {
    return ParamType::integer;
  }
  if (s == "float" || s == "number") {
    return ParamType::floating;
  }
  if (s == "bool" || s == "boolean") {
    return ParamType::boolean;
  }
  return std::nullopt;
}

std::optional<StepKind> parse_kind(std::string_view s) {
  if (s == "task") {
    return StepKind::task;
  }
  if (s == "train") {
    return StepKind::train;
  }
  if (s == "evaluate") {
    return StepKind::evaluate;
  }
  if (s == "predict") {
    return StepKind::predict;
  }
  return std::nullopt;
}

std::string quote(std::string_view s) {
  constexpr std::size_t k_max = 40;
  std::string_view shown = s.substr(0, std::min(s.find('\n'), k_max));
  std::string out = "'" + std::string(shown);
  if (shown.size() < s.size()) {
    out += "...";
  }
  return out + "'";
}

std::string describe(const Node& node) {
  switch (node.kind) {
  case NodeKind::null: return "nothing";
  case NodeKind::scalar: return quote(node.value);
  case NodeKind::sequence: return "a list";
  case NodeKind::map: return "a map";
  case NodeKind::invalid: return "an alias";
  }
  return "nothing";
}

// Where the first byte is that is not valid UTF-8, if any.
std::optional<std::size_t> first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
      code = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      code = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      code = c & 0x07;
    } else {
      return i;
    }
    if (i + length > n) {
      return i;
    }
    for (std::size_t k = 1; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) {
        return i;
      }
      code = (code << 6) | (s[i + k] & 0x3F);
    }
    const bool overlong = (length == 3 && code < 0x800) || (length == 4 && code < 0x10000);
    if (overlong || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return i;
    }
    i += length;
  }
  return std::nullopt;
}

std::string absolute_directory(const std::string& path) {
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  if (ec) {
    absolute = path;
  }
  return absolute.lexically_normal().parent_path().string();
}

// Optional settings that `defaults:` gives every step.
struct Defaults {
  std::optional<Millis> timeout;
  Millis kill_after{10000};
  RetryPolicy retries;
  Resources resources;
  std::string workdir = ".";
  EnvVars env;
};

// What the graph checks need to know about a step, beyond core::Step.
struct StepInfo {
  const Node* key = nullptr;
  const Node* kind_value = nullptr;
  const Node* model_value = nullptr;
  /// Resolved needs (index into steps) and the list item naming each.
  std::vector<std::pair<int, const Node*>> needs;
  const Node* cache_value = nullptr;
  const Node* when_value = nullptr;
  const Node* gate_key = nullptr;
  /// steps.ID references in the step's templates and conditions: the step
  /// named must be upstream, checked with the graph.
  struct StepMention {
    std::uint32_t offset = 0;
    std::uint32_t length = 1;
    std::string step;
  };
  std::vector<StepMention> mentions;
  /// matrix.NAME references (offset, length, NAME), checked against the matrix.
  std::vector<StepMention> matrix_refs;
  struct Matrix {
    /// Axes in file order, each value as written.
    std::vector<std::pair<std::string, std::vector<std::string>>> axes;
    std::vector<std::vector<std::pair<std::string, std::string>>> include;
    std::vector<std::vector<std::pair<std::string, std::string>>> exclude;
    /// `from: STEP`: one variant per variant of STEP, needing only it.
    const Node* from = nullptr;
  };
  std::optional<Matrix> matrix;
  const Node* matrix_key = nullptr;
};

enum class ConditionKind { when, gate };

struct Positioned {
  std::uint32_t offset = 0;
  std::uint32_t length = 1;
  std::string message;
};

class Loader {
public:
  Loader(const SourceMap& source, const std::string& path) : m_source(source), m_path(path) {}

  void load(const Node& root, Workflow& workflow);
  void apply_overrides(const Overrides& overrides, Workflow& workflow);
  void check_required_params(const Workflow& workflow);

  void error(std::uint32_t offset, std::uint32_t length, std::string message) {
    m_errors.push_back({offset, std::max<std::uint32_t>(length, 1), std::move(message)});
  }
  void error_at(const Node& node, std::string message) { error(node.offset, extent(node), std::move(message)); }
  // Null values carry the position of whatever follows them: point at the key.
  void error_value(const Node& value, const Node& key, std::string message) {
    error_at(value.is_null() ? key : value, std::move(message));
  }
  /// About the file as a whole (a missing key): "FILE: error: ...".
  void error_file(std::string message) { m_file_level.push_back(std::move(message)); }
  /// Outside any file (a bad -p): "kiln: error: ...".
  void error_unplaced(std::string message) { m_unplaced.push_back(std::move(message)); }

  std::vector<Diagnostic> take_diagnostics();

private:
  std::uint32_t extent(const Node& node) const;
  std::uint32_t template_offset(const Node& scalar, std::size_t value_offset) const;

  void check_keys(const Node& map, const Names& allowed);
  bool expect(const Node& value, const Node& key, NodeKind kind, std::string_view expected);
  std::optional<std::string> read_string(const Node& value, const Node& key);
  std::optional<bool> read_bool(const Node& value, const Node& key);
  std::optional<int> read_int(const Node& value, const Node& key, int min, int max, std::string_view what);
  std::optional<Millis> read_duration(const Node& value, const Node& key);
  /// A duration above zero: a zero timeout would kill every step at once.
  std::optional<Millis> read_timeout(const Node& value, const Node& key);
  void check_templates(const Node& scalar);
  void forbid_templates(const Node& scalar, std::string_view where);

  void load_params(const Node& key, const Node& value, Workflow& workflow);
  bool load_param(const Node& key, const Node& value, Param& param);
  void load_env(const Node& key, const Node& value, EnvVars& env);
  void load_defaults(const Node& key, const Node& value, Defaults& defaults);
  void load_retries(const Node& key, const Node& value, RetryPolicy& policy);
  void load_resources(const Node& key, const Node& value, Resources& resources);
  void load_steps(const Node& key, const Node& value, const Defaults& defaults, Workflow& workflow);
  void load_step(const Node& key, const Node& value, Step& step, StepInfo& info);
  void load_needs(const Node& key, const Node& value, Step& step, StepInfo& info);
  void load_run(const Node& key, const Node& value, Step& step);
  void load_outputs(const Node& key, const Node& value, Step& step);
  void load_inputs(const Node& key, const Node& value, Step& step);
  void load_matrix(const Node& key, const Node& value, StepInfo& info);
  /// For outputs, inputs and metrics: only ${{ matrix.NAME }} is expanded there.
  void matrix_templates_only(const Node& scalar, std::string_view where);
  /// Replaces each matrix step by its variants (ids "train[C=0.1,penalty=l1]")
  /// and each need of one by needs of all its variants (or, with
  /// `matrix: {from: X}`, of the matching one).
  void expand_matrices(Workflow& workflow);
  /// A `when:` (which also sets `trigger`) or one `gate:` condition.
  void load_condition(const Node& key, const Node& value, core::Condition& condition, ConditionKind kind,
                      core::Trigger* trigger = nullptr);
  void load_gate(const Node& key, const Node& value, Step& step);
  /// Source offset of byte `at` of a scalar's value, for positions inside
  /// an expression (exact for plain and quoted one-line scalars without escapes).
  std::uint32_t value_offset(const Node& scalar, std::size_t at) const;
  void load_tags(const Node& key, const Node& value, core::TagList& tags);
  void load_tracking(const Node& key, const Node& value, core::TrackingConfig& tracking);
  void check_graph(Workflow& workflow);
  std::vector<int> trains_upstream(int step, const Workflow& workflow);
  std::vector<std::vector<int>> all_trains_upstream(const core::Dependencies& deps, const Workflow& workflow);
  bool is_upstream(int ancestor, int step, const core::Dependencies& dependents);
  std::string suggest_step(std::string_view word);
  Names param_names() const { return Names(m_param_names.begin(), m_param_names.end()); }

  const SourceMap& m_source;
  const std::string& m_path;
  std::vector<Positioned> m_errors;
  /// Text no source line shown may hold (credentials), masked with '*'.
  std::vector<std::string> m_concealed;
  std::vector<std::string> m_file_level;
  std::vector<std::string> m_unplaced;

  /// Declared params in file order (also those with errors, to avoid
  /// cascading "undefined parameter" reports) and whether each has a value.
  /// Owned: -p overrides are checked after the tree is freed.
  std::vector<std::string> m_param_names;
  std::vector<char> m_param_has_value;
  std::vector<char> m_param_broken;

  /// Views into the YAML tree: valid only inside load(), which is where all
  /// step lookups happen.
  Names m_step_ids;
  std::unordered_map<std::string_view, int> m_step_index;
  std::vector<StepInfo> m_infos;
  /// The step being loaded, for references only steps may make; -1 outside.
  int m_current_step = -1;
  int m_step_suggestions_left = k_step_suggestion_budget;
  /// For each train step named by a `model:`: which steps are downstream.
  std::unordered_map<int, std::vector<char>> m_downstream;
};

std::vector<Diagnostic> Loader::take_diagnostics() {
  std::stable_sort(m_errors.begin(), m_errors.end(),
                   [](const Positioned& a, const Positioned& b) { return a.offset < b.offset; });
  std::vector<Diagnostic> out;
  out.reserve(m_errors.size() + m_unplaced.size());
  const auto size = static_cast<std::uint32_t>(m_source.text().size());
  for (Positioned& e : m_errors) {
    // An error at the end of the file points just past the last line's text
    // rather than at an empty line after the final newline.
    if (e.offset >= size && size > 0 && m_source.text().back() == '\n') {
      e.offset = size - 1;
    }
    Diagnostic d;
    d.file = m_path;
    d.line = m_source.line_of(e.offset);
    d.column = m_source.column_of(e.offset);
    d.source_line = std::string(m_source.line_text(d.line));
    for (const std::string& secret : m_concealed) {
      for (std::size_t at = d.source_line.find(secret); at != std::string::npos;
           at = d.source_line.find(secret, at + secret.size())) {
        d.source_line.replace(at, secret.size(), std::string(secret.size(), '*'));
      }
    }
    const int room = std::max(1, static_cast<int>(d.source_line.size()) - (d.column - 1));
    d.length = std::clamp(static_cast<int>(e.length), 1, room);
    d.message = std::move(e.message);
    out.push_back(std::move(d));
  }
  for (std::string& message : m_file_level) {
    Diagnostic d;
    d.file = m_path;
    d.message = std::move(message);
    out.push_back(std::move(d));
  }
  for (std::string& message : m_unplaced) {
    Diagnostic d;
    d.message = std::move(message);
    out.push_back(std::move(d));
  }
  m_errors.clear();
  m_file_level.clear();
  m_unplaced.clear();
  return out;
}

// Bytes of the token at the node's position, for the ~~~ under it.
std::uint32_t Loader::extent(const Node& node) const {
  const std::string_view text = m_source.text();
  const std::size_t start = node.offset;
  if (start >= text.size()) {
    return 1;
  }
  std::size_t line_end = text.find('\n', start);
  if (line_end == std::string_view::npos) {
    line_end = text.size();
  }
  if (node.kind != NodeKind::scalar) {
    return 1;
  }
  switch (node.style) {
  case ScalarStyle::plain: {
    const std::string_view first_line = std::string_view(node.value).substr(0, node.value.find('\n'));
    if (!first_line.empty() && text.compare(start, first_line.size(), first_line) == 0) {
      return static_cast<std::uint32_t>(first_line.size());
    }
    return 1;
  }
  case ScalarStyle::single_quoted:
  case ScalarStyle::double_quoted: {
    const char q = text[start];
    for (std::size_t i = start + 1; i < line_end; ++i) {
      if (q == '"' && text[i] == '\\') {
        ++i;
        continue;
      }
      if (text[i] == q) {
        if (q == '\'' && i + 1 < line_end && text[i + 1] == '\'') {
          ++i;
          continue;
        }
        return static_cast<std::uint32_t>(i - start + 1);
      }
    }
    return static_cast<std::uint32_t>(line_end - start);
  }
  case ScalarStyle::literal:
  case ScalarStyle::folded: return 1;
  }
  return 1;
}

// The source offset of the "${{" at `value_offset` in a scalar's value: the
// n-th "${{" of the value is the n-th in the source from the scalar's start,
// because no YAML quoting or folding creates or splits one (only a
// double-quoted escape could; then the scalar's own position is used).
std::uint32_t Loader::template_offset(const Node& scalar, std::size_t value_offset) const {
  std::size_t count = 0;
  for (std::size_t at = scalar.value.find("${{"); at != std::string::npos && at < value_offset;
       at = scalar.value.find("${{", at + 3)) {
    ++count;
  }
  const std::string_view text = m_source.text();
  std::size_t pos = text.find("${{", scalar.offset);
  for (std::size_t i = 0; i < count && pos != std::string_view::npos; ++i) {
    pos = text.find("${{", pos + 3);
  }
  if (pos == std::string_view::npos) {
    return scalar.offset;
  }
  return static_cast<std::uint32_t>(pos);
}

void Loader::check_keys(const Node& map, const Names& allowed) {
  for (std::size_t i = 0; i < map.map_size(); ++i) {
    const Node& key = map.map_key(i);
    if (std::find(allowed.begin(), allowed.end(), key.value) != allowed.end()) {
      continue;
    }
    const std::string hint = did_you_mean(key.value, allowed);
    error_at(key,
             "unknown key " + quote(key.value) + (hint.empty() ? "; expected one of: " + join(allowed, ", ") : hint));
  }
}

bool Loader::expect(const Node& value, const Node& key, NodeKind kind, std::string_view expected) {
  if (value.kind == kind) {
    return true;
  }
  if (value.kind != NodeKind::invalid) {
    error_value(value, key, "expected " + std::string(expected) + ", got " + describe(value));
  }
  return false;
}

std::optional<std::string> Loader::read_string(const Node& value, const Node& key) {
  if (!expect(value, key, NodeKind::scalar, "a string")) {
    return std::nullopt;
  }
  return value.value;
}

std::optional<bool> Loader::read_bool(const Node& value, const Node& key) {
  if (!expect(value, key, NodeKind::scalar, "true or false")) {
    return std::nullopt;
  }
  bool b = false;
  if (!is_bool_word(value.value, b)) {
    error_at(value, "expected true or false, got " + quote(value.value));
    return std::nullopt;
  }
  return b;
}

std::optional<int> Loader::read_int(const Node& value, const Node& key, int min, int max, std::string_view what) {
  const std::string range =
      std::string(what) + " must be a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  if (value.kind == NodeKind::invalid) {
    return std::nullopt;
  }
  if (!value.is_scalar()) {
    error_value(value, key, range + ", got " + describe(value));
    return std::nullopt;
  }
  int n = 0;
  const char* begin = value.value.data();
  const char* end = begin + value.value.size();
  const auto [ptr, ec] = std::from_chars(begin, end, n);
  if (ec != std::errc{} || ptr != end || n < min || n > max) {
    error_at(value, range + ", got " + quote(value.value));
    return std::nullopt;
  }
  return n;
}

std::optional<Millis> Loader::read_timeout(const Node& value, const Node& key) {
  auto d = read_duration(value, key);
  if (d && d->count() == 0) {
    error_at(value, "a timeout must be longer than 0s; leave 'timeout' out for none");
    return std::nullopt;
  }
  return d;
}

std::optional<Millis> Loader::read_duration(const Node& value, const Node& key) {
  if (!expect(value, key, NodeKind::scalar, "a duration such as 30s")) {
    return std::nullopt;
  }
  auto parsed = core::parse_duration(value.value);
  if (!parsed) {
    error_at(value, parsed.error());
    return std::nullopt;
  }
  return *parsed;
}

void Loader::check_templates(const Node& scalar) {
  if (scalar.value.find("${{") == std::string::npos) {
    return;
  }
  const core::TemplateScan scan = core::scan_template(scalar.value);
  for (const auto& e : scan.errors) {
    error(template_offset(scalar, e.offset), static_cast<std::uint32_t>(e.length), e.message);
  }
  static const Names namespaces(core::k_template_namespaces.begin(), core::k_template_namespaces.end());
  for (const auto& ref : scan.refs) {
    const std::uint32_t offset = template_offset(scalar, ref.offset);
    const auto length = static_cast<std::uint32_t>(ref.length);
    const std::string full = ref.ns + "." + ref.name;
    if (std::find(namespaces.begin(), namespaces.end(), ref.ns) == namespaces.end()) {
      const std::string hint = did_you_mean(ref.ns, namespaces);
      error(offset, length,
            "unknown namespace '" + ref.ns + "' in '" + full + "'" +
                (hint.empty() ? "; use " + one_of(namespaces) : hint));
    } else if (ref.ns == "steps" || ref.ns == "matrix") {
      if (m_current_step < 0) {
        error(offset, length, "'" + full + "' can be used only in a step's run, env and workdir");
      } else if (ref.ns == "matrix") {
        m_infos[m_current_step].matrix_refs.push_back({offset, length, ref.name});
      } else if (ref.ns == "steps") {
        if (auto parsed = core::parse_step_ref(ref.name)) {
          m_infos[m_current_step].mentions.push_back({offset, length, parsed->step});
        } else {
          error(offset, length,
                "bad reference '" + full + "': use steps.ID.outputs.NAME, steps.ID.metrics.NAME or steps.ID.status");
        }
      }
    } else if (ref.ns == "params") {
      if (std::find(m_param_names.begin(), m_param_names.end(), ref.name) == m_param_names.end()) {
        const std::string hint = did_you_mean(ref.name, param_names());
        error(offset, length,
              "undefined parameter '" + ref.name + "'" +
                  (hint.empty() ? (m_param_names.empty() ? "; declare it under 'params:'" : "") : hint));
      }
    } else if (ref.ns != "env") {
      const auto fields = core::template_fields(ref.ns);
      if (std::find(fields.begin(), fields.end(), ref.name) == fields.end()) {
        Names full_fields;
        std::vector<std::string> storage;
        for (auto f : fields) {
          storage.push_back(ref.ns + "." + std::string(f));
        }
        for (const auto& f : storage) {
          full_fields.push_back(f);
        }
        const std::string hint = did_you_mean(full, full_fields);
        error(offset, length, "unknown field '" + full + "'" + (hint.empty() ? "; use " + one_of(full_fields) : hint));
      }
    }
  }
}

void Loader::forbid_templates(const Node& scalar, std::string_view where) {
  const std::size_t at = scalar.value.find("${{");
  if (at == std::string::npos || (at > 0 && scalar.value[at - 1] == '$')) {
    return;
  }
  error(template_offset(scalar, at), 3,
        "templates are not expanded in '" + std::string(where) + "'; write it literally");
}

void Loader::load(const Node& root, Workflow& workflow) {
  if (!root.is_map()) {
    error_at(root, "expected a map of workflow settings (name, steps, ...) at the top level, got " + describe(root));
    return;
  }
  check_keys(root, k_top_keys);
  if (const Node* params = root.find("params")) {
    load_params(*(params - 1), *params, workflow);
  }
  Defaults defaults;
  if (const Node* value = root.find("defaults")) {
    load_defaults(*(value - 1), *value, defaults);
  }
  for (std::size_t i = 0; i < root.map_size(); ++i) {
    const Node& key = root.map_key(i);
    const Node& value = root.map_value(i);
    if (key.value == "name") {
      if (auto name = read_string(value, key)) {
        if (!is_workflow_name(*name)) {
          error_at(value, "invalid workflow name " + quote(*name) + ": use letters, digits, '_', '.' and '-'");
        }
        workflow.name = std::move(*name);
      }
    } else if (key.value == "description") {
      if (auto text = read_string(value, key)) {
        workflow.description = std::move(*text);
      }
    } else if (key.value == "env") {
      load_env(key, value, workflow.env);
    } else if (key.value == "tags") {
      load_tags(key, value, workflow.tags);
    } else if (key.value == "tracking") {
      load_tracking(key, value, workflow.tracking);
    }
  }
  if (root.find("name") == nullptr) {
    error_file("missing required key 'name'; add e.g. 'name: my-workflow'");
  }
  if (const Node* steps = root.find("steps")) {
    load_steps(*(steps - 1), *steps, defaults, workflow);
  } else {
    error_file("missing required key 'steps'; a workflow needs at least one step");
  }
}

void Loader::load_params(const Node& key, const Node& value, Workflow& workflow) {
  if (value.is_null() || !expect(value, key, NodeKind::map, "a map of parameter: default or {type, default}")) {
    return;
  }
  workflow.params.reserve(value.map_size());
  for (std::size_t i = 0; i < value.map_size(); ++i) {
    const Node& param_key = value.map_key(i);
    Param param;
    param.name = param_key.value;
    param.location = {m_source.line_of(param_key.offset), m_source.column_of(param_key.offset)};
    m_param_names.push_back(param_key.value);
    m_param_has_value.push_back(0);
    m_param_broken.push_back(0);
    if (!is_param_name(param.name)) {
      error_at(param_key, "invalid parameter name " + quote(param.name) +
                              ": use letters, digits, '_' and '-', starting with a letter or '_'");
    }
    const std::size_t errors_before = m_errors.size();
    const bool has_default = load_param(param_key, value.map_value(i), param);
    m_param_broken.back() = m_errors.size() != errors_before ? 1 : 0;
    m_param_has_value.back() = has_default ? 1 : 0;
    workflow.params.push_back(std::move(param));
  }
}

// Fills `param`; true when it got a valid default. An explicit null default
// (`default: ~`) means none: the param must then come from -p.
bool Loader::load_param(const Node& key, const Node& value, Param& param) {
  const std::string name = param.name;
  auto set_default = [&](const Node& node) {
    if (node.is_null()) {
      return false;
    }
    if (!node.is_scalar()) {
      if (node.kind != NodeKind::invalid) {
        error_at(node, "parameter '" + name + "' needs a single value as its default, got " + describe(node));
      }
      return false;
    }
    auto canonical = canonical_param_value(param.type, node.value);
    if (!canonical) {
      error_at(node,
               "parameter '" + name + "' is " + std::string(param_type_phrase(param.type)) + "; " + canonical.error());
      return false;
    }
    param.value = std::move(*canonical);
    return true;
  };
  switch (value.kind) {
  case NodeKind::invalid: return false;
  case NodeKind::null:
    error_at(key, "parameter '" + name + "' needs a default or a type, e.g. '" + name + ": {type: string}'");
    return false;
  case NodeKind::sequence:
    error_at(value, "expected a default value or a map {type, default, description}, got a list");
    return false;
  case NodeKind::scalar: param.type = infer_type(value); return set_default(value);
  case NodeKind::map: break;
  }
  check_keys(value, k_param_keys);
  const Node* type = value.find("type");
  const Node* default_value = value.find("default");
  if (const Node* description = value.find("description")) {
    if (auto text = read_string(*description, *(description - 1))) {
      param.description = std::move(*text);
    }
  }
  if (type != nullptr) {
    auto type_name = read_string(*type, *(type - 1));
    if (!type_name) {
      return false;
    }
    auto parsed = parse_type_name(*type_name);
    if (!parsed) {
      const std::string hint = did_you_mean(*type_name, k_types);
      error_at(*type, "unknown type " + quote(*type_name) + (hint.empty() ? "; use " + one_of(k_types) : hint));
      return false;
    }
    param.type = *parsed;
  } else if (default_value != nullptr && default_value->is_scalar()) {
    param.type = infer_type(*default_value);
  } else if (default_value == nullptr) {
    error_at(key, "parameter '" + name + "' needs a 'type' or a 'default', e.g. {type: float}");
    return false;
  }
  return default_value != nullptr && set_default(*default_value);
}

void Loader::load_env(const Node& key, const Node& value, EnvVars& env) {
  if (value.is_null() || !expect(value, key, NodeKind::map, "a map of NAME: value")) {
    return;
  }
  for (std::size_t i = 0; i < value.map_size(); ++i) {
    const Node& name = value.map_key(i);
    const Node& text = value.map_value(i);
    if (!is_env_name(name.value)) {
      error_at(name, "invalid environment variable name " + quote(name.value) +
                         ": use letters, digits and '_', not starting with a digit");
    }
    if (text.is_null()) {
      error_at(name, "environment variable '" + name.value + "' needs a value; write " + name.value +
                         ": \"\" for an empty one");
      continue;
    }
    if (!expect(text, name, NodeKind::scalar, "a string")) {
      continue;
    }
    check_templates(text);
    env.emplace_back(name.value, text.value);
  }
}

void Loader::load_tags(const Node& key, const Node& value, core::TagList& tags) {
  if (value.is_null() || !expect(value, key, NodeKind::map, "a map of tag: value")) {
    return;
  }
  for (std::size_t i = 0; i < value.map_size(); ++i) {
    const Node& name = value.map_key(i);
    const Node& text = value.map_value(i);
    if (std::string problem = core::check_key(name.value); !problem.empty()) {
      error_at(name, "invalid tag: " + problem);
    } else if (name.value.starts_with("kiln.")) {
      error_at(name, "tag " + quote(name.value) + " uses the prefix 'kiln.', which is kiln's own; choose another name");
    }
    if (text.is_null() || !text.is_scalar()) {
      if (text.kind != NodeKind::invalid) {
        error_value(text, name, "tag '" + name.value + "' needs a single value, got " + describe(text));
      }
      continue;
    }
    forbid_templates(text, "tags");
    tags.emplace_back(name.value, text.value);
  }
}

void Loader::load_tracking(const Node& key, const Node& value, core::TrackingConfig& tracking) {
  if (value.is_null() || !expect(value, key, NodeKind::map, "a map with 'uri' and 'experiment'")) {
    return;
  }
  tracking.location = {m_source.line_of(key.offset), m_source.column_of(key.offset)};
  check_keys(value, k_tracking_keys);
  if (const Node* uri = value.find("uri")) {
    if (auto text = read_string(*uri, *(uri - 1))) {
      forbid_templates(*uri, "tracking");
      // Credentials belong in MLFLOW_TRACKING_USERNAME/PASSWORD or _TOKEN:
      // the workflow file is copied into every run's record. Whatever is
      // wrong, the error shows them masked.
      // Userinfo is whatever precedes the last '@' (a password may hold '/',
      // '#' or '?' unencoded; an '@' in a path must be written %40), with or
      // without a scheme. It is masked in every error shown for this file.
      const std::size_t scheme_end = text->find("://");
      const std::size_t authority = scheme_end == std::string::npos ? 0 : scheme_end + 3;
      const std::size_t at = text->rfind('@');
      const std::string userinfo =
          at != std::string::npos && at >= authority ? text->substr(authority, at - authority) : std::string();
      std::string shown = *text;
      if (!userinfo.empty()) {
        shown.replace(authority, userinfo.size(), "***");
        m_concealed.push_back(userinfo);
      }
      const std::string_view scheme =
          scheme_end == std::string::npos ? std::string_view() : std::string_view(*text).substr(0, scheme_end);
      if (!userinfo.empty()) {
        error_at(*uri, "tracking uri holds credentials (before its '@'), and the workflow file is copied into every "
                       "run's record; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                       "MLFLOW_TRACKING_TOKEN) instead, and write an '@' in a path as %40");
      } else if (scheme != "http" && scheme != "https") {
        error_at(*uri, "tracking uri " + quote(shown) +
                           " is not an MLflow tracking server; give its http:// or https:// address");
      } else {
        tracking.uri = std::move(*text);
      }
    }
  }
  if (const Node* experiment = value.find("experiment")) {
    if (auto text = read_string(*experiment, *(experiment - 1))) {
      forbid_templates(*experiment, "tracking");
      if (text->empty()) {
        error_at(*experiment, "'experiment' is empty; name the MLflow experiment or leave the key out");
      }
      tracking.experiment = std::move(*text);
    }
  }
}

void Loader::load_defaults(const Node& key, const Node& value, Defaults& defaults) {
  if (value.is_null() || !expect(value, key, NodeKind::map, "a map of step settings")) {
    return;
  }
  check_keys(value, k_default_keys);
  for (std::size_t i = 0; i < value.map_size(); ++i) {
    const Node& k = value.map_key(i);
    const Node& v = value.map_value(i);
    if (k.value == "timeout") {
      if (auto d = read_timeout(v, k)) {
        defaults.timeout = *d;
      }
    } else if (k.value == "kill_after") {
      if (auto d = read_duration(v, k)) {
        defaults.kill_after = *d;
      }
    } else if (k.value == "retries") {
      load_retries(k, v, defaults.retries);
    } else if (k.value == "resources") {
      load_resources(k, v, defaults.resources);
    } else if (k.value == "workdir") {
      if (auto dir = read_string(v, k)) {
        check_templates(v);
        defaults.workdir = std::move(*dir);
      }
    } else if (k.value == "env") {
      load_env(k, v, defaults.env);
    }
  }
}

void Loader::load_retries(const Node& key, const Node& value, RetryPolicy& policy) {
  if (value.is_scalar()) {
    if (auto limit = read_int(value, key, 0, k_max_retries, "retries")) {
      policy.limit = *limit;
    }
    return;
  }
  if (!expect(value, key, NodeKind::map, "a retry count such as 3 or a map {limit, backoff, delay, ...}")) {
    return;
  }
  check_keys(value, k_retry_keys);
  for (std::size_t i = 0; i < value.map_size(); ++i) {
    const Node& k = value.map_key(i);
    const Node& v = value.map_value(i);
    if (k.value == "limit") {
      if (auto limit = read_int(v, k, 0, k_max_retries, "the retry limit")) {
        policy.limit = *limit;
      }
    } else if (k.value == "backoff") {
      if (auto name = read_string(v, k)) {
        if (*name == "fixed") {
          policy.backoff = core::Backoff::fixed;
        } else if (*name == "exponential") {
          policy.backoff = core::Backoff::exponential;
        } else {
          const std::string hint = did_you_mean(*name, k_backoffs);
          error_at(v, "unknown backoff " + quote(*name) + (hint.empty() ? "; use fixed or exponential" : hint));
        }
      }
    } else if (k.value == "delay") {
      if (auto d = read_duration(v, k)) {
        policy.delay = *d;
      }
    } else if (k.value == "max_delay") {
      if (auto d = read_duration(v, k)) {
        policy.max_delay = *d;
      }
    } else if (k.value == "jitter") {
      if (auto b = read_bool(v, k)) {
        policy.jitter = *b;
      }
    } else if (k.value == "on") {
      std::vector<const Node*> items;
      if (v.is_scalar()) {
        items.push_back(&v);
      } else if (expect(v, k, NodeKind::sequence, "a list of failure, timeout or exit codes")) {
        for (const Node& item : v.children) {
          items.push_back(&item);
        }
      } else {
        continue;
      }
      policy.on_failure = false;
      policy.on_timeout = false;
      policy.exit_codes.clear();
      for (const Node* item : items) {
        if (!expect(*item, k, NodeKind::scalar, "failure, timeout or an exit code")) {
          continue;
        }
        const std::string& word = item->value;
        if (word == "failure") {
          policy.on_failure = true;
        } else if (word == "timeout") {
          policy.on_timeout = true;
        } else if (looks_like_int(word)) {
          if (auto code = read_int(*item, k, 1, 255, "an exit code")) {
            policy.exit_codes.push_back(*code);
          }
        } else {
          const std::string hint = did_you_mean(word, k_retry_conditions);
          error_at(*item, "unknown retry condition " + quote(word) +
                              (hint.empty() ? "; use failure, timeout or an exit code" : hint));
        }
      }
    }
  }
}

void Loader::load_resources(const Node& key, const Node& value, Resources& resources) {
  if (!expect(value, key, NodeKind::map, "a map such as {cpus: 2}")) {
    return;
  }
  check_keys(value, k_resource_keys);
  if (const Node* cpus = value.find("cpus")) {
    if (auto n = read_int(*cpus, *(cpus - 1), 1, k_max_cpus, "cpus")) {
      resources.cpus = *n;
    }
  }
  if (const Node* gpus = value.find("gpus")) {
    if (auto n = read_int(*gpus, *(gpus - 1), 0, 1024, "gpus")) {
      resources.gpus = *n;
    }
  }
  if (const Node* memory = value.find("memory")) {
    if (expect(*memory, *(memory - 1), NodeKind::scalar, "a size such as 4G or 512M")) {
      if (auto bytes = core::parse_size(memory->value)) {
        resources.memory = *bytes;
      } else {
        error_at(*memory, bytes.error());
      }
    }
  }
}

std::string Loader::suggest_step(std::string_view word) {
  if (m_step_suggestions_left <= 0) {
    return "";
  }
  --m_step_suggestions_left;
  return did_you_mean(word, m_step_ids);
}

void Loader::load_steps(const Node& key, const Node& value, const Defaults& defaults, Workflow& workflow) {
  if (value.is_null() || (value.is_map() && value.map_size() == 0)) {
    error_at(value.is_null() ? key : value, "no steps: add at least one under 'steps:'");
    return;
  }
  if (!expect(value, key, NodeKind::map, "a map of step id: settings")) {
    return;
  }
  const std::size_t n = value.map_size();
  m_step_ids.reserve(n);
  m_step_index.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const Node& id = value.map_key(i);
    if (!is_step_id(id.value)) {
      error_at(id, "invalid step id " + quote(id.value) +
                       ": use letters, digits, '_', '.' and '-', starting with a letter, digit or '_'");
    }
    m_step_ids.push_back(id.value);
    m_step_index.emplace(id.value, static_cast<int>(i));
  }
  workflow.steps.resize(n);
  m_infos.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    Step& step = workflow.steps[i];
    step.timeout = defaults.timeout;
    step.kill_after = defaults.kill_after;
    step.retries = defaults.retries;
    step.resources = defaults.resources;
    step.workdir = defaults.workdir;
    step.env = defaults.env;
    load_step(value.map_key(i), value.map_value(i), step, m_infos[i]);
  }
  check_graph(workflow);
  // Checks the matrices always; expands them only when all else is valid.
  expand_matrices(workflow);
}

void Loader::load_step(const Node& key, const Node& value, Step& step, StepInfo& info) {
  m_current_step = static_cast<int>(&info - m_infos.data());
  struct Reset {
    int& current;
    ~Reset() { current = -1; }
  } reset{m_current_step};
  step.id = key.value;
  step.location = {m_source.line_of(key.offset), m_source.column_of(key.offset)};
  info.key = &key;
  if (value.is_null()) {
    error_at(key, "step '" + step.id + "' is empty; give it at least a 'run' command");
    return;
  }
  if (!expect(value, key, NodeKind::map, "a map of step settings")) {
    return;
  }
  check_keys(value, k_step_keys);
  bool has_run = false;
  for (std::size_t i = 0; i < value.map_size(); ++i) {
    const Node& k = value.map_key(i);
    const Node& v = value.map_value(i);
    const std::string& name = k.value;
    if (name == "kind") {
      if (auto text = read_string(v, k)) {
        if (auto kind = parse_kind(*text)) {
          step.kind = *kind;
          info.kind_value = &v;
        } else {
          const std::string hint = did_you_mean(*text, k_kinds);
          error_at(v, "unknown kind " + quote(*text) + (hint.empty() ? "; use " + one_of(k_kinds) : hint));
        }
      }
    } else if (name == "description") {
      if (auto text = read_string(v, k)) {
        step.description = std::move(*text);
      }
    } else if (name == "needs") {
      load_needs(k, v, step, info);
    } else if (name == "run") {
      has_run = true;
      load_run(k, v, step);
    } else if (name == "workdir") {
      if (auto dir = read_string(v, k)) {
        if (dir->empty()) {
          error_at(v, "'workdir' is empty; use '.' for the workflow's directory");
        }
        check_templates(v);
        step.workdir = std::move(*dir);
      }
    } else if (name == "env") {
      EnvVars own;
      load_env(k, v, own);
      for (auto& [var, text] : own) {
        auto it = std::find_if(step.env.begin(), step.env.end(), [&](const auto& e) { return e.first == var; });
        if (it != step.env.end()) {
          it->second = std::move(text);
        } else {
          step.env.emplace_back(var, std::move(text));
        }
      }
    } else if (name == "outputs") {
      load_outputs(k, v, step);
    } else if (name == "inputs") {
      load_inputs(k, v, step);
    } else if (name == "cache") {
      if (auto on = read_bool(v, k)) {
        step.cache = *on;
        info.cache_value = &v;
      }
    } else if (name == "when") {
      info.when_value = &v;
      load_condition(k, v, step.when, ConditionKind::when, &step.trigger);
    } else if (name == "gate") {
      info.gate_key = &k;
      load_gate(k, v, step);
    } else if (name == "matrix") {
      info.matrix_key = &k;
      load_matrix(k, v, info);
    } else if (name == "max_parallel") {
      if (auto n = read_int(v, k, 1, 100000, "max_parallel")) {
        step.max_parallel = *n;
      }
    } else if (name == "tags") {
      load_tags(k, v, step.tags);
    } else if (name == "metrics") {
      if (auto path = read_string(v, k)) {
        if (path->empty()) {
          error_at(v, "'metrics' is empty; give the path of the metrics file");
        }
        matrix_templates_only(v, "metrics");
        if (escapes_workdir(*path)) {
          error_at(v, "metrics file " + quote(*path) +
                          " is outside the step's workdir; the step's results are read from inside it");
        }
        step.metrics = std::move(*path);
      }
    } else if (name == "model") {
      if (read_string(v, k)) {
        info.model_value = &v;
      }
    } else if (name == "timeout") {
      if (auto d = read_timeout(v, k)) {
        step.timeout = *d;
      }
    } else if (name == "kill_after") {
      if (auto d = read_duration(v, k)) {
        step.kill_after = *d;
      }
    } else if (name == "retries") {
      load_retries(k, v, step.retries);
    } else if (name == "resources") {
      load_resources(k, v, step.resources);
    }
  }
  if (!has_run) {
    error_at(key, "step '" + step.id + "' has no 'run' command");
  }
  for (const StepInfo::StepMention& ref : info.matrix_refs) {
    if (!info.matrix) {
      error(ref.offset, ref.length, "matrix." + ref.step + " is used, but step '" + step.id + "' has no 'matrix'");
    } else if (!info.matrix->from) {
      const auto& axes = info.matrix->axes;
      const bool known = std::any_of(axes.begin(), axes.end(), [&](const auto& a) { return a.first == ref.step; });
      if (!known) {
        Names names;
        for (const auto& a : axes) {
          names.push_back(a.first);
        }
        const std::string hint = did_you_mean(ref.step, names);
        error(ref.offset, ref.length,
              "matrix." + ref.step + " is not in the step's matrix" +
                  (hint.empty() ? "; it has " + join(names, ", ") : hint));
      }
    }
  }
  if (step.max_parallel > 0 && !info.matrix) {
    error_at(*info.key, "'max_parallel' bounds a matrix; step '" + step.id + "' has no 'matrix'");
  }
  if (info.cache_value == nullptr) {
    step.cache = !step.inputs.empty() && !step.outputs.empty();
  } else if (step.cache && step.outputs.empty()) {
    error_at(*info.cache_value, "a cached step must declare its 'outputs': they are what a cache hit keeps");
  }
}

void Loader::load_inputs(const Node& key, const Node& value, Step& step) {
  std::vector<const Node*> items;
  if (value.is_scalar() && !value.is_null()) {
    items.push_back(&value);
  } else if (expect(value, key, NodeKind::sequence, "a list of files, directories or globs")) {
    for (const Node& item : value.children) {
      items.push_back(&item);
    }
  }
  for (const Node* item : items) {
    if (!expect(*item, key, NodeKind::scalar, "a path or glob")) {
      continue;
    }
    if (item->value.empty()) {
      error_at(*item, "an input path is empty");
      continue;
    }
    matrix_templates_only(*item, "inputs");
    step.inputs.push_back(item->value);
  }
}

std::uint32_t Loader::value_offset(const Node& scalar, std::size_t at) const {
  switch (scalar.style) {
  case ScalarStyle::plain:
    if (scalar.value.find('\n') == std::string::npos) {
      return scalar.offset + static_cast<std::uint32_t>(at);
    }
    break;
  case ScalarStyle::single_quoted:
  case ScalarStyle::double_quoted:
    if (scalar.value.find_first_of("'\"\\\n") == std::string::npos) {
      return scalar.offset + 1 + static_cast<std::uint32_t>(at);
    }
    break;
  default: break;
  }
  return scalar.offset;
}

void Loader::load_condition(const Node& key, const Node& value, core::Condition& condition, ConditionKind kind,
                            core::Trigger* trigger) {
  const bool gate = kind == ConditionKind::gate;
  if (!value.is_scalar() || value.is_null() || value.value.find_first_not_of(" \t\r\n") == std::string::npos) {
    error_value(value, key,
                gate ? "expected a condition on the step's metrics, e.g. accuracy >= 0.9"
                     : "expected a condition, e.g. steps.evaluate.metrics.accuracy >= params.min_accuracy");
    return;
  }
  forbid_templates(value, gate ? "gate" : "when");
  const std::uint32_t column = m_source.column_of(value_offset(value, 0));
  auto parsed = core::Expression::parse(value.value, column);
  if (auto* e = std::get_if<core::ExprError>(&parsed)) {
    error(value_offset(value, e->offset), static_cast<std::uint32_t>(e->length), e->message);
    return;
  }
  const core::Expression& expression = std::get<core::Expression>(parsed);
  condition.text = value.value;
  condition.location = {m_source.line_of(value.offset), m_source.column_of(value_offset(value, 0))};
  static const Names when_heads{"params", "steps", "matrix", "env"};
  static const Names gate_heads{"params", "metrics", "previous"};
  for (const core::ExprReference& ref : expression.references()) {
    const std::uint32_t offset = value_offset(value, ref.offset);
    const auto length = static_cast<std::uint32_t>(ref.length);
    const std::string& head = ref.path[0];
    const std::string text = ref.text();
    if (gate && ref.path.size() == 1) {
      continue; // one of the step's own metrics, known only when it has run
    }
    const Names& heads = gate ? gate_heads : when_heads;
    if (std::find(heads.begin(), heads.end(), head) == heads.end()) {
      const std::string hint = did_you_mean(head, heads);
      error(offset, length,
            "unknown name '" + text + "'" +
                (hint.empty()
                     ? (gate ? "; name one of the step's metrics (accuracy), or use previous.NAME or params.NAME"
                             : "; use params., steps., matrix. or env.")
                     : hint));
      continue;
    }
    if (head == "steps") {
      const bool status = ref.path.size() == 3 && ref.path[2] == "status";
      const bool value_of = ref.path.size() == 4 && (ref.path[2] == "outputs" || ref.path[2] == "metrics");
      if (!status && !value_of) {
        error(offset, length,
              "bad reference '" + text + "': use steps.ID.outputs.NAME, steps.ID.metrics.NAME or steps.ID.status");
        continue;
      }
      m_infos[m_current_step].mentions.push_back({offset, length, ref.path[1]});
      continue;
    }
    if (ref.path.size() != 2) {
      error(offset, length, "bad reference '" + text + "': use " + head + ".NAME");
      continue;
    }
    if (head == "params" && std::find(m_param_names.begin(), m_param_names.end(), ref.path[1]) == m_param_names.end()) {
      const std::string hint = did_you_mean(ref.path[1], param_names());
      error(offset, length,
            "undefined parameter '" + ref.path[1] + "'" +
                (hint.empty() ? (m_param_names.empty() ? "; declare it under 'params:'" : "") : hint));
    }
  }
  static const Names status_functions{"always", "success", "failure"};
  bool calls_always = false;
  bool calls_failure = false;
  bool calls_success = false;
  for (const core::ExprCall& call : expression.calls()) {
    const std::uint32_t offset = value_offset(value, call.offset);
    const auto length = static_cast<std::uint32_t>(call.length);
    const bool known = std::find(status_functions.begin(), status_functions.end(), call.name) != status_functions.end();
    if (gate || !known) {
      const std::string hint = gate ? "" : did_you_mean(call.name, status_functions);
      error(offset, length,
            "unknown function '" + call.name + "'" +
                (hint.empty() ? (gate ? "; a gate may call min, max and abs"
                                      : "; use always(), success() or failure() (and min, max, abs)")
                              : hint));
      continue;
    }
    if (call.arity != 0) {
      error(offset, length, call.name + "() takes no arguments");
    }
    calls_always = calls_always || call.name == "always";
    calls_failure = calls_failure || call.name == "failure";
    calls_success = calls_success || call.name == "success";
  }
  if (trigger != nullptr) {
    *trigger = calls_always || (calls_failure && calls_success) ? core::Trigger::always
               : calls_failure                                  ? core::Trigger::failure
                                                                : core::Trigger::success;
  }
}

void Loader::matrix_templates_only(const Node& scalar, std::string_view where) {
  if (scalar.value.find("${{") == std::string::npos) {
    return;
  }
  const core::TemplateScan scan = core::scan_template(scalar.value);
  for (const auto& e : scan.errors) {
    error(template_offset(scalar, e.offset), static_cast<std::uint32_t>(e.length), e.message);
  }
  for (const auto& ref : scan.refs) {
    const std::uint32_t offset = template_offset(scalar, ref.offset);
    const auto length = static_cast<std::uint32_t>(ref.length);
    if (ref.ns != "matrix") {
      error(offset, length,
            "only ${{ matrix.NAME }} is expanded in '" + std::string(where) + "'; write the rest literally");
    } else if (m_current_step >= 0) {
      m_infos[m_current_step].matrix_refs.push_back({offset, length, ref.name});
    }
  }
}

void Loader::load_matrix(const Node& key, const Node& value, StepInfo& info) {
  if (!expect(value, key, NodeKind::map, "a map of NAME: [values], with optional include, exclude or from")) {
    return;
  }
  StepInfo::Matrix matrix;
  auto read_combinations = [&](const Node& k, const Node& v,
                               std::vector<std::vector<std::pair<std::string, std::string>>>& out) {
    if (!expect(v, k, NodeKind::sequence, "a list of maps of NAME: value")) {
      return;
    }
    for (const Node& item : v.children) {
      if (!expect(item, k, NodeKind::map, "a map of NAME: value")) {
        continue;
      }
      std::vector<std::pair<std::string, std::string>> combination;
      for (std::size_t i = 0; i < item.map_size(); ++i) {
        if (expect(item.map_value(i), item.map_key(i), NodeKind::scalar, "a value")) {
          combination.emplace_back(item.map_key(i).value, item.map_value(i).value);
        }
      }
      out.push_back(std::move(combination));
    }
  };
  for (std::size_t i = 0; i < value.map_size(); ++i) {
    const Node& k = value.map_key(i);
    const Node& v = value.map_value(i);
    if (k.value == "include") {
      read_combinations(k, v, matrix.include);
    } else if (k.value == "exclude") {
      read_combinations(k, v, matrix.exclude);
    } else if (k.value == "from") {
      if (read_string(v, k)) {
        matrix.from = &v;
      }
    } else if (!is_param_name(k.value) || k.value.find('-') != std::string::npos) {
      error_at(k, "invalid matrix name " + quote(k.value) + ": use letters, digits and '_', starting with a letter");
    } else {
      std::vector<const Node*> items;
      if (v.is_sequence()) {
        for (const Node& item : v.children) {
          items.push_back(&item);
        }
      } else if (!v.is_null() && v.is_scalar()) {
        items.push_back(&v);
      }
      if (items.empty()) {
        error_value(v, k, "matrix '" + k.value + "' needs a list of values, e.g. [0.1, 1, 10]");
        continue;
      }
      std::vector<std::string> values;
      for (const Node* item : items) {
        if (!expect(*item, k, NodeKind::scalar, "a value (a number or a string)")) {
          continue;
        }
        if (std::find(values.begin(), values.end(), item->value) != values.end()) {
          error_at(*item, "value " + quote(item->value) + " is listed twice in matrix '" + k.value + "'");
          continue;
        }
        if (item->value.find_first_of("[],=") != std::string::npos) {
          error_at(*item, "a matrix value cannot hold '[', ']', ',' or '=': they delimit variant ids");
          continue;
        }
        values.push_back(item->value);
      }
      matrix.axes.emplace_back(k.value, std::move(values));
    }
  }
  if (matrix.from != nullptr && (!matrix.axes.empty() || !matrix.include.empty() || !matrix.exclude.empty())) {
    error_at(key, "a matrix with 'from' takes its variants from that step; give no names, include or exclude");
  } else if (matrix.from == nullptr && matrix.axes.empty() && matrix.include.empty()) {
    error_at(key, "the matrix is empty; give at least one NAME: [values]");
  }
  info.matrix = std::move(matrix);
}

void Loader::expand_matrices(Workflow& workflow) {
  using Combination = std::vector<std::pair<std::string, std::string>>;
  const std::size_t n = workflow.steps.size();
  std::vector<std::vector<Combination>> variants(n);
  bool any = false;
  for (std::size_t i = 0; i < n; ++i) {
    const StepInfo& info = m_infos[i];
    if (!info.matrix) {
      continue;
    }
    any = true;
    const StepInfo::Matrix& m = *info.matrix;
    if (m.from != nullptr) {
      const auto it = m_step_index.find(m.from->value);
      const Step& step = workflow.steps[i];
      if (it == m_step_index.end()) {
        error_at(*m.from, "unknown step " + quote(m.from->value) + " in matrix from" + suggest_step(m.from->value));
      } else if (!m_infos[it->second].matrix || m_infos[it->second].matrix->from != nullptr) {
        error_at(*m.from, "step '" + m.from->value + "' has no matrix of its own to take variants from");
      } else if (std::find(step.needs.begin(), step.needs.end(), m.from->value) == step.needs.end()) {
        error_at(*m.from, "step '" + m.from->value + "' must be in needs to feed '" + step.id + "' variant by variant");
      } else if (static_cast<std::size_t>(it->second) > i) {
        error_at(*m.from, "step '" + m.from->value + "' must come before '" + step.id + "' in the file");
      } else {
        variants[i] = variants[it->second];
      }
      continue;
    }
    std::vector<Combination> product{{}};
    for (const auto& [name, values] : m.axes) {
      std::vector<Combination> next;
      for (const Combination& c : product) {
        for (const std::string& v : values) {
          Combination longer = c;
          longer.emplace_back(name, v);
          next.push_back(std::move(longer));
        }
      }
      product = std::move(next);
    }
    if (m.axes.empty()) {
      product.clear();
    }
    auto matches = [](const Combination& c, const Combination& pattern) {
      return std::all_of(pattern.begin(), pattern.end(),
                         [&](const auto& p) { return std::find(c.begin(), c.end(), p) != c.end(); });
    };
    for (const Combination& pattern : m.exclude) {
      product.erase(
          std::remove_if(product.begin(), product.end(), [&](const Combination& c) { return matches(c, pattern); }),
          product.end());
    }
    for (const Combination& extra : m.include) {
      if (std::none_of(product.begin(), product.end(), [&](const Combination& c) { return c == extra; })) {
        product.push_back(extra);
      }
    }
    if (product.empty()) {
      error_at(*info.matrix_key,
               "the matrix of step '" + workflow.steps[i].id + "' has no variants left after exclude");
    }
    variants[i] = std::move(product);
  }
  if (!any || !m_errors.empty()) {
    return;
  }
  auto variant_id = [](const std::string& base, const Combination& c) {
    std::string id = base + "[";
    for (std::size_t k = 0; k < c.size(); ++k) {
      id += (k ? "," : "") + c[k].first + "=" + c[k].second;
    }
    return id + "]";
  };
  auto render = [this](const std::string& text, const Combination& c) {
    if (text.find("${{") == std::string::npos) {
      return text;
    }
    core::TemplateContext tc;
    tc.matrix = c;
    auto rendered = core::render_template(text, tc);
    return rendered ? *rendered : text;
  };
  std::vector<Step> expanded;
  std::vector<std::vector<std::string>> ids(n);
  for (std::size_t i = 0; i < n; ++i) {
    Step& step = workflow.steps[i];
    if (!m_infos[i].matrix) {
      ids[i] = {step.id};
      continue;
    }
    for (const Combination& c : variants[i]) {
      ids[i].push_back(variant_id(step.id, c));
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    Step& step = workflow.steps[i];
    const StepInfo& info = m_infos[i];
    auto needs_for = [&](std::size_t variant) {
      std::vector<std::string> needs;
      for (const auto& [dep, item] : info.needs) {
        const bool paired =
            info.matrix && info.matrix->from != nullptr && info.matrix->from->value == workflow.steps[dep].id;
        if (paired) {
          needs.push_back(ids[dep][variant]);
        } else {
          needs.insert(needs.end(), ids[dep].begin(), ids[dep].end());
        }
      }
      return needs;
    };
    if (!info.matrix) {
      step.needs = needs_for(0);
      expanded.push_back(std::move(step));
      continue;
    }
    for (std::size_t v = 0; v < variants[i].size(); ++v) {
      Step copy = step;
      const Combination& c = variants[i][v];
      copy.id = ids[i][v];
      copy.matrix_of = step.id;
      copy.matrix = c;
      copy.needs = needs_for(v);
      for (core::StepOutput& output : copy.outputs) {
        output.path = render(output.path, c);
      }
      for (std::string& input : copy.inputs) {
        input = render(input, c);
      }
      copy.metrics = render(copy.metrics, c);
      if (!copy.model.empty() && info.matrix->from != nullptr && copy.model == info.matrix->from->value) {
        copy.model = ids[m_step_index.at(copy.model)][v];
      }
      expanded.push_back(std::move(copy));
    }
  }
  workflow.steps = std::move(expanded);
}

void Loader::load_gate(const Node& key, const Node& value, Step& step) {
  if (value.is_scalar() && !value.is_null()) {
    step.gate.emplace_back();
    load_condition(key, value, step.gate.back(), ConditionKind::gate);
    return;
  }
  if (!expect(value, key, NodeKind::sequence, "a list of conditions on the step's metrics")) {
    return;
  }
  for (const Node& item : value.children) {
    step.gate.emplace_back();
    load_condition(key, item, step.gate.back(), ConditionKind::gate);
  }
}

void Loader::load_needs(const Node& key, const Node& value, Step& step, StepInfo& info) {
  std::vector<const Node*> items;
  if (value.is_scalar()) {
    items.push_back(&value);
  } else if (expect(value, key, NodeKind::sequence, "a list of step ids")) {
    for (const Node& item : value.children) {
      items.push_back(&item);
    }
  }
  std::unordered_set<int> listed;
  for (const Node* item : items) {
    if (!expect(*item, key, NodeKind::scalar, "a step id")) {
      continue;
    }
    const std::string& id = item->value;
    if (id == step.id) {
      error_at(*item, "step '" + id + "' needs itself");
      continue;
    }
    const auto it = m_step_index.find(id);
    if (it == m_step_index.end()) {
      error_at(*item, "unknown step " + quote(id) + " in needs" + suggest_step(id));
      continue;
    }
    if (!listed.insert(it->second).second) {
      error_at(*item, "step '" + id + "' is listed twice in needs");
      continue;
    }
    info.needs.emplace_back(it->second, item);
    step.needs.push_back(id);
  }
}

void Loader::load_run(const Node& key, const Node& value, Step& step) {
  step.run.location = {m_source.line_of(value.is_null() ? key.offset : value.offset),
                       m_source.column_of(value.is_null() ? key.offset : value.offset)};
  if (value.is_null()) {
    error_at(key, "'run' is empty; give a shell command or a list of arguments");
    return;
  }
  if (value.is_scalar()) {
    if (value.value.find_first_not_of(" \t\r\n") == std::string::npos) {
      error_at(value, "'run' is empty; give a shell command or a list of arguments");
      return;
    }
    check_templates(value);
    step.run.form = core::Command::Form::shell;
    step.run.script = value.value;
    return;
  }
  if (!expect(value, key, NodeKind::sequence, "a command (a string, or a list of arguments)")) {
    return;
  }
  if (value.children.empty()) {
    error_at(value, "'run' is empty; give a shell command or a list of arguments");
    return;
  }
  step.run.form = core::Command::Form::exec;
  step.run.argv.reserve(value.children.size());
  for (const Node& arg : value.children) {
    if (!expect(arg, key, NodeKind::scalar, "an argument string")) {
      continue;
    }
    check_templates(arg);
    step.run.argv.push_back(arg.value);
  }
  if (!step.run.argv.empty() && step.run.argv[0].empty()) {
    error_at(value.children[0], "the program name is empty");
  }
}

void Loader::load_outputs(const Node& key, const Node& value, Step& step) {
  auto add = [&](std::string name, const Node& path, const Node& path_key) {
    if (!path.is_scalar()) {
      if (path.kind != NodeKind::invalid) {
        error_value(path, path_key, "expected an output path, got " + describe(path));
      }
      return;
    }
    if (path.value.empty()) {
      error_at(path, "an output path is empty");
      return;
    }
    matrix_templates_only(path, "outputs");
    if (escapes_workdir(path.value)) {
      error_at(path, "output " + quote(path.value) +
                         " is outside the step's workdir; artifacts are recorded from inside it (set 'workdir' to a "
                         "directory that holds it)");
    }
    step.outputs.push_back({std::move(name), path.value});
  };
  if (value.is_sequence()) {
    for (const Node& item : value.children) {
      add("", item, key);
    }
    return;
  }
  if (value.is_map()) {
    for (std::size_t i = 0; i < value.map_size(); ++i) {
      add(value.map_key(i).value, value.map_value(i), value.map_key(i));
    }
    return;
  }
  expect(value, key, NodeKind::sequence, "a list of paths or a map of name: path");
}

// Train steps reachable through needs, nearest first; terminates on cycles.
std::vector<std::vector<int>> Loader::all_trains_upstream(const core::Dependencies& deps, const Workflow& workflow) {
  // Each step's train steps upstream, in one pass in dependency order: a
  // search per evaluate or predict step would be quadratic on long chains.
  // Only "none, one, or which few" matters, so each list is capped.
  constexpr std::size_t k_cap = 16;
  std::vector<std::vector<int>> trains(deps.size());
  for (const int step : core::topological_order(deps)) {
    auto& mine = trains[step];
    for (const int dep : deps[step]) {
      if (workflow.steps[dep].kind == StepKind::train) {
        mine.push_back(dep);
      }
      mine.insert(mine.end(), trains[dep].begin(), trains[dep].end());
    }
    std::sort(mine.begin(), mine.end());
    mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
    if (mine.size() > k_cap) {
      mine.resize(k_cap);
    }
  }
  return trains;
}

bool Loader::is_upstream(int ancestor, int step, const core::Dependencies& dependents) {
  // Steps downstream of each train step named by a `model:`, found once per
  // train step: typically one or two for a whole workflow.
  auto [it, fresh] = m_downstream.try_emplace(ancestor);
  if (fresh) {
    it->second.assign(dependents.size(), 0);
    std::vector<int> queue{ancestor};
    for (std::size_t head = 0; head < queue.size(); ++head) {
      for (const int next : dependents[queue[head]]) {
        if (it->second[next] == 0) {
          it->second[next] = 1;
          queue.push_back(next);
        }
      }
    }
  }
  return it->second[step] != 0;
}

std::vector<int> Loader::trains_upstream(int step, const Workflow& workflow) {
  std::vector<int> trains;
  std::vector<char> seen(m_infos.size(), 0);
  std::vector<int> queue{step};
  seen[step] = 1;
  for (std::size_t head = 0; head < queue.size(); ++head) {
    for (const auto& [dep, item] : m_infos[queue[head]].needs) {
      if (seen[dep] != 0) {
        continue;
      }
      seen[dep] = 1;
      queue.push_back(dep);
      if (workflow.steps[dep].kind == StepKind::train) {
        trains.push_back(dep);
      }
    }
  }
  return trains;
}

void Loader::check_graph(Workflow& workflow) {
  const int n = static_cast<int>(workflow.steps.size());
  core::Dependencies deps(n);
  for (int i = 0; i < n; ++i) {
    deps[i].reserve(m_infos[i].needs.size());
    for (const auto& need : m_infos[i].needs) {
      deps[i].push_back(need.first);
    }
  }
  const std::vector<int> cycle = core::find_cycle(deps);
  // Without a cycle, upstream trains come from one pass; with one (already
  // an error) a search per step still gives sensible follow-up messages.
  const std::vector<std::vector<int>> upstream =
      cycle.empty() ? all_trains_upstream(deps, workflow) : std::vector<std::vector<int>>{};
  const core::Dependencies dependents = cycle.empty() ? core::dependents_of(deps) : core::Dependencies{};
  auto trains_of = [&](int step) { return cycle.empty() ? upstream[step] : trains_upstream(step, workflow); };
  if (!cycle.empty()) {
    std::string path;
    for (std::size_t i = 0; i < cycle.size(); ++i) {
      path += (i > 0 ? " -> " : "") + workflow.steps[cycle[i]].id;
    }
    const StepInfo& first = m_infos[cycle[0]];
    const Node* where = first.key;
    for (const auto& [dep, item] : first.needs) {
      if (cycle.size() > 1 && dep == cycle[1]) {
        where = item;
      }
    }
    error_at(*where, "dependency cycle: " + path);
  }

  for (int i = 0; i < n; ++i) {
    Step& step = workflow.steps[i];
    const StepInfo& info = m_infos[i];
    if (info.key == nullptr) {
      continue;
    }
    const Node& kind_at = info.kind_value != nullptr ? *info.kind_value : *info.key;
    const bool consumes_model = step.kind == StepKind::evaluate || step.kind == StepKind::predict;
    if (info.model_value != nullptr) {
      const Node& model = *info.model_value;
      const auto it = m_step_index.find(model.value);
      if (!consumes_model) {
        error_at(model, "'model' is only allowed on evaluate and predict steps");
      } else if (it == m_step_index.end()) {
        error_at(model, "unknown step " + quote(model.value) + " in model" + suggest_step(model.value));
      } else if (workflow.steps[it->second].kind != StepKind::train) {
        error_at(model, "step '" + model.value + "' is not a train step");
      } else {
        const bool upstream_of_step = cycle.empty() ? is_upstream(it->second, i, dependents) : [&] {
          const auto trains = trains_upstream(i, workflow);
          return std::find(trains.begin(), trains.end(), it->second) != trains.end();
        }();
        if (!upstream_of_step) {
          error_at(model, "train step '" + model.value + "' is not upstream of '" + step.id + "'; add it to needs");
        } else {
          step.model = model.value;
        }
      }
    }
    if (info.gate_key != nullptr && step.kind != StepKind::evaluate) {
      error_at(*info.gate_key, "'gate' is only allowed on evaluate steps: it checks the metrics they record");
    }
    for (const StepInfo::StepMention& mention : info.mentions) {
      const auto it = m_step_index.find(mention.step);
      if (it == m_step_index.end()) {
        error(mention.offset, mention.length, "unknown step " + quote(mention.step) + suggest_step(mention.step));
      } else if (it->second == i) {
        error(mention.offset, mention.length, "step '" + step.id + "' cannot use what it produces itself");
      } else if (cycle.empty() && !is_upstream(it->second, i, dependents)) {
        error(mention.offset, mention.length,
              "step '" + mention.step + "' is not upstream of '" + step.id + "'; add it to needs");
      }
    }
    switch (step.kind) {
    case StepKind::task: break;
    case StepKind::train:
      if (step.output("model") == nullptr) {
        error_at(kind_at,
                 "train step '" + step.id + "' must declare the model it produces: add 'outputs: {model: PATH}'");
      }
      break;
    case StepKind::evaluate:
      if (step.metrics.empty()) {
        error_at(kind_at, "evaluate step '" + step.id + "' must declare its metrics file: add 'metrics: PATH'");
      }
      if (info.model_value == nullptr) {
        const auto trains = trains_of(i);
        if (trains.size() == 1) {
          step.model = workflow.steps[trains[0]].id;
        }
      }
      break;
    case StepKind::predict:
      if (step.outputs.empty()) {
        error_at(kind_at, "predict step '" + step.id + "' must declare its predictions: add 'outputs: [PATH]'");
      }
      if (info.model_value == nullptr) {
        const auto trains = trains_of(i);
        if (trains.empty()) {
          error_at(kind_at,
                   "predict step '" + step.id + "' has no train step upstream; add one to needs or set 'model:'");
        } else if (trains.size() > 1) {
          std::vector<int> sorted = trains;
          std::sort(sorted.begin(), sorted.end());
          std::string names;
          for (std::size_t k = 0; k < sorted.size(); ++k) {
            names += (k > 0 ? ", " : "") + workflow.steps[sorted[k]].id;
          }
          error_at(kind_at, "predict step '" + step.id + "' has several train steps upstream (" + names +
                                "); set 'model:' to the one it uses");
        } else {
          step.model = workflow.steps[trains[0]].id;
        }
      }
      break;
    }
  }
}

void Loader::apply_overrides(const Overrides& overrides, Workflow& workflow) {
  for (const auto& [name, text] : overrides) {
    const std::string prefix = "-p " + name + "=" + text + ": ";
    auto it =
        std::find_if(workflow.params.begin(), workflow.params.end(), [&](const Param& p) { return p.name == name; });
    if (it == workflow.params.end()) {
      if (m_param_names.empty()) {
        error_unplaced(prefix + "unknown parameter '" + name + "'; the workflow declares no parameters");
      } else {
        const Names names = param_names();
        const std::string hint = did_you_mean(name, names);
        error_unplaced(prefix + "unknown parameter '" + name + "'" +
                       (hint.empty() ? "; declared: " + join(names, ", ") : hint));
      }
      continue;
    }
    auto canonical = canonical_param_value(it->type, text);
    if (!canonical) {
      error_unplaced(prefix + "parameter '" + name + "' is " + std::string(param_type_phrase(it->type)) + "; " +
                     canonical.error());
      continue;
    }
    it->value = std::move(*canonical);
    m_param_has_value[static_cast<std::size_t>(it - workflow.params.begin())] = 1;
  }
}

void Loader::check_required_params(const Workflow& workflow) {
  for (std::size_t i = 0; i < workflow.params.size(); ++i) {
    if (m_param_has_value[i] == 0 && m_param_broken[i] == 0) {
      const Param& p = workflow.params[i];
      const std::uint32_t offset = m_source.offset_of(p.location.line - 1, p.location.column - 1);
      error(offset, static_cast<std::uint32_t>(p.name.size()),
            "parameter '" + p.name + "' has no default; pass it with -p " + p.name + "=VALUE");
    }
  }
}

} // namespace

std::string_view param_type_phrase(ParamType type) {
  switch (type) {
  case ParamType::string: return "a string";
  case ParamType::integer: return "an int";
  case ParamType::floating: return "a float";
  case ParamType::boolean: return "a bool";
  }
  return "a string";
}

core::Expected<std::string> canonical_param_value(ParamType type, std::string_view text) {
  switch (type) {
  case ParamType::string: return std::string(text);
  case ParamType::integer: {
    if (!looks_like_int(text)) {
      return core::Error{quote(text) + " is not a whole number"};
    }
    std::string_view digits = text[0] == '+' ? text.substr(1) : text;
    std::int64_t n = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc{} || ptr != digits.data() + digits.size()) {
      return core::Error{quote(text) + " is too large for an int"};
    }
    return std::to_string(n);
  }
  case ParamType::floating: {
    if (!looks_like_float(text)) {
      return core::Error{quote(text) + " is not a number"};
    }
    std::string_view digits = text[0] == '+' ? text.substr(1) : text;
    double d = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
    if (ec != std::errc{} || ptr != digits.data() + digits.size() || !std::isfinite(d)) {
      return core::Error{quote(text) + " is out of range for a float"};
    }
    if (is_canonical_float_text(text)) {
      return std::string(text);
    }
    std::array<char, 64> buffer{};
    const auto written = std::to_chars(buffer.data(), buffer.data() + buffer.size(), d);
    return std::string(buffer.data(), written.ptr);
  }
  case ParamType::boolean: {
    bool b = false;
    if (!is_bool_word(text, b)) {
      return core::Error{quote(text) + " is not true or false"};
    }
    return std::string(b ? "true" : "false");
  }
  }
  return std::string(text);
}

namespace {

// `owned`, when given, holds `text` and is moved into Workflow::content
// instead of copied: a 10,000-step file is about a megabyte.
LoadResult parse_text(std::string_view text, const std::string& path, const Overrides& overrides, std::string* owned) {
  LoadResult result;
  Workflow workflow;
  workflow.file = path;
  workflow.directory = absolute_directory(path);

  // A UTF-8 byte order mark is not part of the first line for the parser's
  // columns; offsets below are relative to the text after it.
  std::string_view body = text;
  if (body.substr(0, 3) == "\xEF\xBB\xBF") {
    body.remove_prefix(3);
  }
  if (body.size() > k_max_file_size) {
    Diagnostic d;
    d.file = path;
    d.message = "the file is too large (over 64 MiB)";
    result.diagnostics.push_back(std::move(d));
    return result;
  }
  const SourceMap source(body);
  Loader loader(source, path);

  const std::size_t nul = body.find('\0');
  const auto bad_utf8 = first_invalid_utf8(body);
  if (nul != std::string_view::npos && (!bad_utf8 || nul < *bad_utf8)) {
    loader.error(static_cast<std::uint32_t>(nul), 1, "the file contains a NUL byte; is it a binary file?");
    result.diagnostics = loader.take_diagnostics();
    return result;
  }
  if (bad_utf8) {
    loader.error(static_cast<std::uint32_t>(*bad_utf8), 1, "the file is not valid UTF-8");
    result.diagnostics = loader.take_diagnostics();
    return result;
  }

  {
    YamlDocument doc = parse_yaml(source);
    for (YamlError& e : doc.errors) {
      loader.error(e.offset, e.length, std::move(e.message));
    }
    if (doc.syntax_error) {
      result.diagnostics = loader.take_diagnostics();
      return result;
    }
    if (!doc.root || doc.root->is_null()) {
      Diagnostic d;
      d.file = path;
      d.message = "the file is empty; a workflow needs at least 'name' and 'steps'";
      result.diagnostics = loader.take_diagnostics();
      result.diagnostics.insert(result.diagnostics.begin(), std::move(d));
      return result;
    }
    loader.load(*doc.root, workflow);
    // The tree goes out of scope here: only the model stays in memory.
  }
  loader.apply_overrides(overrides, workflow);
  loader.check_required_params(workflow);
  result.diagnostics = loader.take_diagnostics();
  if (result.diagnostics.empty()) {
    workflow.content_hash = core::sha256_hex(text);
    workflow.content = owned != nullptr ? std::move(*owned) : std::string(text);
    result.workflow = std::move(workflow);
  }
  return result;
}

} // namespace

LoadResult parse_workflow(std::string_view text, const std::string& path, const Overrides& overrides) {
  return parse_text(text, path, overrides, nullptr);
}

LoadResult load_workflow(const std::string& path, const Overrides& overrides) {
  auto fail = [&](std::string message) {
    LoadResult result;
    Diagnostic d;
    d.file = path;
    d.message = std::move(message);
    result.diagnostics.push_back(std::move(d));
    return result;
  };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return fail("cannot read the workflow: it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail(std::string("cannot read the workflow: ") + std::strerror(errno));
  }
  std::string content;
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    content.append(buffer, static_cast<std::size_t>(in.gcount()));
    if (content.size() > k_max_file_size) {
      return fail("the file is too large (over 64 MiB)");
    }
  }
  if (in.bad()) {
    return fail(std::string("cannot read the workflow: ") + std::strerror(errno));
  }
  const std::string_view text = content;
  return parse_text(text, path, overrides, &content);
}

} // namespace kiln::workflows
