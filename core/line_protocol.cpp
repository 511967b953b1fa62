#include "core/line_protocol.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace kiln::core {

namespace {

// One field of a command, its quotes removed and its escapes applied.
struct Field {
  std::string text;
  /// Where the first '=' outside quotes is in `text`; npos if none.
  std::size_t equals = std::string::npos;
  /// The field as written, for messages.
  std::string_view raw;
};

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

// Splits at blanks outside double quotes. Inside quotes, \" and \\ are
// escapes and any other backslash is itself (Windows paths stay readable).
Expected<std::vector<Field>> split_fields(std::string_view text) {
  std::vector<Field> fields;
  std::size_t i = 0;
  for (;;) {
    while (i < text.size() && is_blank(text[i])) {
      ++i;
    }
    if (i == text.size()) {
      return fields;
    }
    const std::size_t start = i;
    Field field;
    while (i < text.size() && !is_blank(text[i])) {
      const char c = text[i];
      if (c == '"') {
        const std::size_t open = i++;
        for (;;) {
          if (i == text.size()) {
            return Error{"unterminated quote in '" + std::string(text.substr(open)) + "'"};
          }
          if (text[i] == '"') {
            ++i;
            break;
          }
          if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == '"' || text[i + 1] == '\\')) {
            ++i;
          }
          field.text += text[i++];
        }
        continue;
      }
      if (c == '=' && field.equals == std::string::npos) {
        field.equals = field.text.size();
      }
      field.text += c;
      ++i;
    }
    field.raw = text.substr(start, i - start);
    fields.push_back(std::move(field));
  }
}

bool equals_ignoring_case(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) {
    return false;
  }
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
    if (c != lower[i]) {
      return false;
    }
  }
  return true;
}

std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t value = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (!text.empty() && text.front() == '+') {
    ++first;
    if (first == last || *first == '-') {
      return std::nullopt;
    }
  }
  const auto [end, error] = std::from_chars(first, last, value);
  if (error != std::errc() || end != last || first == last) {
    return std::nullopt;
  }
  return value;
}

std::string quoted(std::string_view text) {
  return "'" + std::string(text) + "'";
}

Expected<ProtocolCommand> parse_metric(const std::vector<Field>& fields) {
  ProtocolCommand command;
  command.kind = ProtocolCommand::Kind::metric;
  std::optional<std::int64_t> step;
  std::optional<std::int64_t> timestamp;
  for (const Field& field : fields) {
    if (field.equals == std::string::npos) {
      return Error{quoted(field.text) + " has no '=VALUE'"};
    }
    const std::string_view key = std::string_view(field.text).substr(0, field.equals);
    const std::string_view value = std::string_view(field.text).substr(field.equals + 1);
    if (key == "step" || key == "timestamp") {
      std::optional<std::int64_t>& slot = key == "step" ? step : timestamp;
      if (slot) {
        return Error{std::string(key) + " is given twice"};
      }
      slot = parse_int(value);
      if (!slot) {
        return Error{std::string(key) + " must be an integer" +
                     (key == "timestamp" ? " (ms since the Unix epoch)" : "") + ", got " + quoted(value)};
      }
      continue;
    }
    if (std::string why = check_key(key); !why.empty()) {
      return Error{"metric " + why};
    }
    const std::optional<double> number = parse_metric_value(value);
    if (!number) {
      return Error{"metric " + quoted(key) + ": " + quoted(value) + " is not a number"};
    }
    command.metrics.push_back(MetricPoint{std::string(key), *number, 0, 0});
  }
  if (command.metrics.empty()) {
    return Error{"metric needs at least one KEY=NUMBER"};
  }
  for (MetricPoint& point : command.metrics) {
    point.step = step.value_or(0);
    point.timestamp_ms = timestamp.value_or(0);
  }
  return command;
}

Expected<ProtocolCommand> parse_key_values(ProtocolCommand::Kind kind, std::string_view name,
                                           const std::vector<Field>& fields) {
  ProtocolCommand command;
  command.kind = kind;
  for (const Field& field : fields) {
    if (field.equals == std::string::npos) {
      return Error{quoted(field.text) + " has no '=VALUE'"};
    }
    std::string key = field.text.substr(0, field.equals);
    if (std::string why = check_key(key); !why.empty()) {
      return Error{std::string(name) + " " + why};
    }
    command.values.emplace_back(std::move(key), field.text.substr(field.equals + 1));
  }
  if (command.values.empty()) {
    return Error{std::string(name) + " needs at least one KEY=VALUE"};
  }
  return command;
}

Expected<ProtocolCommand> parse_artifact(const std::vector<Field>& fields) {
  ProtocolCommand command;
  command.kind = ProtocolCommand::Kind::artifact;
  for (const Field& field : fields) {
    if (field.text.empty()) {
      return Error{"artifact path " + std::string(field.raw) + " is empty"};
    }
    command.paths.push_back(field.text);
  }
  if (command.paths.empty()) {
    return Error{"artifact needs at least one PATH"};
  }
  return command;
}

} // namespace

Expected<std::optional<ProtocolCommand>> parse_protocol_line(std::string_view line) {
  if (line.substr(0, k_protocol_prefix.size()) != k_protocol_prefix) {
    return std::optional<ProtocolCommand>();
  }
  line.remove_prefix(k_protocol_prefix.size());
  if (!line.empty() && line.back() == '\n') {
    line.remove_suffix(1);
  }
  if (!line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
  }
  std::size_t name_end = 0;
  while (name_end < line.size() && !is_blank(line[name_end])) {
    ++name_end;
  }
  const std::string_view name = line.substr(0, name_end);
  if (name.empty()) {
    return Error{"missing kiln command after '::kiln::' (expected metric, param, tag or artifact)"};
  }
  if (name != "metric" && name != "param" && name != "tag" && name != "artifact") {
    return Error{"unknown kiln command " + quoted(name) + " (expected metric, param, tag or artifact)"};
  }
  Expected<std::vector<Field>> fields = split_fields(line.substr(name_end));
  if (!fields) {
    return Error{fields.error()};
  }
  Expected<ProtocolCommand> command = name == "metric" ? parse_metric(*fields)
                                      : name == "param"
                                          ? parse_key_values(ProtocolCommand::Kind::param, "param", *fields)
                                      : name == "tag" ? parse_key_values(ProtocolCommand::Kind::tag, "tag", *fields)
                                                      : parse_artifact(*fields);
  if (!command) {
    return Error{command.error()};
  }
  return std::optional<ProtocolCommand>(std::move(command).value());
}

std::optional<double> parse_metric_value(std::string_view text) {
  std::string_view unsigned_text = text;
  bool negative = false;
  if (!unsigned_text.empty() && (unsigned_text.front() == '+' || unsigned_text.front() == '-')) {
    negative = unsigned_text.front() == '-';
    unsigned_text.remove_prefix(1);
  }
  if (unsigned_text.empty()) {
    return std::nullopt;
  }
  if (equals_ignoring_case(unsigned_text, "nan")) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (equals_ignoring_case(unsigned_text, "inf") || equals_ignoring_case(unsigned_text, "infinity")) {
    return negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  // Digits only from here: from_chars would also take "nan(...)" and "infinite"'s prefix.
  const char first = unsigned_text.front();
  if (!((first >= '0' && first <= '9') || first == '.')) {
    return std::nullopt;
  }
  double value = 0;
  const char* begin = unsigned_text.data();
  const char* end = begin + unsigned_text.size();
  const auto [stop, error] = std::from_chars(begin, end, value, std::chars_format::general);
  if (stop != end) {
    return std::nullopt;
  }
  if (error == std::errc::result_out_of_range) {
    // from_chars leaves the value alone on overflow and on underflow, where
    // 1e999 should be inf and 1e-400 zero: strtod says which.
    const std::string copy(unsigned_text);
    errno = 0;
    value = std::strtod(copy.c_str(), nullptr);
  } else if (error != std::errc()) {
    return std::nullopt;
  }
  return negative ? -value : value;
}

} // namespace kiln::core
