#include "workflows/yaml_json.hpp"

#include "workflows/yaml_tree.hpp"

#include <charconv>
#include <cstdlib>
#include <limits>
#include <string_view>

namespace kiln::workflows {

using nlohmann::json;

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_null_text(std::string_view text) {
  return text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL";
}

template <typename Predicate>
bool all_of(std::string_view text, Predicate predicate) {
  for (char c : text) {
    if (!predicate(c)) {
      return false;
    }
  }
  return !text.empty();
}

// The core schema's float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool is_float_text(std::string_view text) {
  std::size_t i = 0;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) {
    ++i;
  }
  std::size_t digits = 0;
  while (i < text.size() && is_digit(text[i])) {
    ++i;
    ++digits;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    std::size_t fraction = 0;
    while (i < text.size() && is_digit(text[i])) {
      ++i;
      ++fraction;
    }
    // "1." is a float; "." alone is not, nor is ".e5".
    if (digits == 0 && fraction == 0) {
      return false;
    }
  } else if (digits == 0) {
    return false;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) {
      ++i;
    }
    if (i == text.size() || !is_digit(text[i])) {
      return false;
    }
    while (i < text.size() && is_digit(text[i])) {
      ++i;
    }
  }
  return i == text.size();
}

double to_double(std::string_view text) {
  // strtod rather than from_chars: it saturates to inf and flushes to zero
  // where from_chars reports out of range.
  const std::string copy(text);
  return std::strtod(copy.c_str(), nullptr);
}

// Digits in `base`, with the sign already removed: an int64 if it fits,
// else a uint64, else a float.
json integer(std::string_view digits, int base, bool negative) {
  std::uint64_t magnitude = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude, base);
  if (error != std::errc() || end != digits.data() + digits.size()) {
    if (base != 10) {
      return json(std::string(negative ? "-" : "") + std::string(digits));
    }
    return to_double(std::string(negative ? "-" : "") + std::string(digits));
  }
  constexpr std::uint64_t k_max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (!negative) {
    return magnitude <= k_max ? json(static_cast<std::int64_t>(magnitude)) : json(magnitude);
  }
  if (magnitude <= k_max) {
    return json(-static_cast<std::int64_t>(magnitude));
  }
  if (magnitude == k_max + 1) {
    return json(std::numeric_limits<std::int64_t>::min());
  }
  return json(-static_cast<double>(magnitude));
}

json resolve_plain(const std::string& value) {
  const std::string_view text = value;
  if (is_null_text(text)) {
    return json(nullptr);
  }
  if (text == "true" || text == "True" || text == "TRUE") {
    return json(true);
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    return json(false);
  }
  std::string_view unsigned_text = text;
  const bool negative = !text.empty() && text.front() == '-';
  const bool sign = negative || (!text.empty() && text.front() == '+');
  if (sign) {
    unsigned_text.remove_prefix(1);
  }
  if (all_of(unsigned_text, is_digit)) {
    return integer(unsigned_text, 10, negative);
  }
  // 0o17 and 0x1F take no sign in the core schema.
  if (!sign && text.size() > 2 && text[0] == '0' && text[1] == 'o' &&
      all_of(text.substr(2), [](char c) { return c >= '0' && c <= '7'; })) {
    return integer(text.substr(2), 8, false);
  }
  if (!sign && text.size() > 2 && text[0] == '0' && text[1] == 'x' &&
      all_of(text.substr(2), [](char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); })) {
    return integer(text.substr(2), 16, false);
  }
  if (unsigned_text == ".inf" || unsigned_text == ".Inf" || unsigned_text == ".INF") {
    return json(negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity());
  }
  if (!sign && (text == ".nan" || text == ".NaN" || text == ".NAN")) {
    return json(std::numeric_limits<double>::quiet_NaN());
  }
  if (is_float_text(text)) {
    return json(to_double(text));
  }
  return json(value);
}

json to_json(const Node& node) {
  switch (node.kind) {
  case NodeKind::scalar: return node.plain ? resolve_plain(node.value) : json(node.value);
  case NodeKind::sequence: {
    json array = json::array();
    for (const Node& item : node.children) {
      array.push_back(to_json(item));
    }
    return array;
  }
  case NodeKind::map: {
    json object = json::object();
    for (std::size_t i = 0; i < node.map_size(); ++i) {
      object[node.map_key(i).value] = to_json(node.map_value(i));
    }
    return object;
  }
  case NodeKind::null:
  case NodeKind::invalid: break;
  }
  return json(nullptr);
}

// yaml_tree words a few messages for workflow files; this file is data.
std::string data_message(std::string message) {
  constexpr std::string_view k_workflow_hint = "; use 'defaults:' for settings shared by steps";
  if (const std::size_t at = message.find(k_workflow_hint); at != std::string::npos) {
    message.erase(at, k_workflow_hint.size());
  }
  constexpr std::string_view k_workflow_file = "a workflow file holds";
  if (message.rfind(k_workflow_file, 0) == 0) {
    message.replace(0, k_workflow_file.size(), "the file must hold");
  }
  return message;
}

} // namespace

core::Expected<nlohmann::json> yaml_to_json(const std::string& text, const std::string& file) {
  std::string_view body = text;
  // Not part of the first line for the parser's columns, as in the workflow loader.
  if (body.substr(0, 3) == "\xEF\xBB\xBF") {
    body.remove_prefix(3);
  }
  const SourceMap source(body);
  const YamlDocument document = parse_yaml(source);
  if (!document.errors.empty()) {
    std::string message;
    for (const YamlError& error : document.errors) {
      if (!message.empty()) {
        message += '\n';
      }
      message += file + ":" + std::to_string(source.line_of(error.offset)) + ":" +
                 std::to_string(source.column_of(error.offset)) + ": " + data_message(error.message);
    }
    return core::Error{std::move(message)};
  }
  if (!document.root) {
    return json(nullptr);
  }
  return to_json(*document.root);
}

} // namespace kiln::workflows
