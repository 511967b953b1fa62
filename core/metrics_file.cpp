// JSON Lines histories are the large case (a training loop writing a line
// per batch: hundreds of thousands of lines). They are read in 1 MiB blocks
// and split into lines in place, and each line first goes through a
// hand-written parser for the shape nearly every line has, a flat object of
// numbers ({"step": 3, "loss": 0.41, "acc": 0.88}); only a line it does not
// recognise goes to nlohmann::json, which also words every error. The fast
// path accepts nothing nlohmann would reject (bare NaN aside, see below) and
// reads the same values: numbers are checked against JSON's grammar before
// from_chars converts them, and keys with escapes or non-ASCII bytes,
// repeated keys and out-of-range numbers are left to nlohmann.
//
// Why not nlohmann alone: on 500,000 such lines (1,000,000 points, 26 MB)
// on the 2-core development VM, its DOM parser per line took 0.7-0.8 s of
// CPU and its SAX interface with a flattening handler 0.45-0.5 s, against a
// budget of a second for parsing and storing a million points. This reader
// takes 0.21 s, file reading included, about half of it the kernel faulting
// in the 56 MB of points. JSON and YAML objects are small and read whole.
//
// Python's json module writes NaN and the infinities as the bare words
// NaN, Infinity and -Infinity, which are not JSON. Both paths accept them
// (the fallback by quoting them and parsing again) so that a diverging loss
// does not make the whole file unreadable.

#include "core/metrics_file.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>

namespace kiln::core {

using nlohmann::json;

namespace {

constexpr double k_nan = std::numeric_limits<double>::quiet_NaN();
constexpr double k_inf = std::numeric_limits<double>::infinity();

enum class Format { json, json_lines, yaml };

Format format_of(const std::filesystem::path& file) {
  std::string extension = file.extension().string();
  for (char& c : extension) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  if (extension == ".jsonl" || extension == ".ndjson") {
    return Format::json_lines;
  }
  if (extension == ".yaml" || extension == ".yml") {
    return Format::yaml;
  }
  // .json and anything else: JSON, which may turn out to be JSON Lines.
  return Format::json;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool is_blank(std::string_view text) {
  for (char c : text) {
    if (!is_space(c)) {
      return false;
    }
  }
  return true;
}

std::string_view type_name(const json& value) {
  switch (value.type()) {
  case json::value_t::object: return "an object";
  case json::value_t::array: return "an array";
  case json::value_t::string: return "a string";
  case json::value_t::boolean: return "a boolean";
  case json::value_t::number_integer:
  case json::value_t::number_unsigned:
  case json::value_t::number_float: return "a number";
  case json::value_t::null: return "null";
  default: return "a value";
  }
}

// "NaN", "Infinity" and "-Infinity" as JSON strings, the values Python's
// json writes bare and JavaScript's JSON.stringify cannot write at all.
std::optional<double> special_value(std::string_view text) {
  if (text == "NaN") {
    return k_nan;
  }
  if (text == "Infinity") {
    return k_inf;
  }
  if (text == "-Infinity") {
    return -k_inf;
  }
  return std::nullopt;
}

// An integer, or a float with no fraction (numpy and JavaScript write 3.0).
std::optional<std::int64_t> integer_of(const json& value) {
  if (value.is_number_integer() && !value.is_number_unsigned()) {
    return value.get<std::int64_t>();
  }
  if (value.is_number_unsigned()) {
    const auto u = value.get<std::uint64_t>();
    if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return static_cast<std::int64_t>(u);
    }
    return std::nullopt;
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    // 2^63 is exact as a double; anything below it converts safely.
    if (std::isfinite(d) && d == std::trunc(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
      return static_cast<std::int64_t>(d);
    }
  }
  return std::nullopt;
}

void flatten_value(const json& value, std::string& key, std::int64_t step, std::int64_t timestamp_ms, bool in_array,
                   std::vector<MetricPoint>& out);

void flatten_members(const json& object, std::string& prefix, std::int64_t step, std::int64_t timestamp_ms,
                     bool skip_reserved, std::vector<MetricPoint>& out) {
  const std::size_t base = prefix.size();
  for (const auto& [name, value] : object.items()) {
    if (skip_reserved && (name == "step" || name == "timestamp")) {
      continue;
    }
    if (base > 0) {
      prefix += '.';
    }
    prefix += name;
    flatten_value(value, prefix, step, timestamp_ms, false, out);
    prefix.resize(base);
  }
}

void flatten_value(const json& value, std::string& key, std::int64_t step, std::int64_t timestamp_ms, bool in_array,
                   std::vector<MetricPoint>& out) {
  switch (value.type()) {
  case json::value_t::number_integer:
  case json::value_t::number_unsigned:
  case json::value_t::number_float: out.push_back(MetricPoint{key, value.get<double>(), step, timestamp_ms}); break;
  case json::value_t::string:
    if (const std::optional<double> special = special_value(value.get_ref<const std::string&>())) {
      out.push_back(MetricPoint{key, *special, step, timestamp_ms});
    }
    break;
  case json::value_t::object: flatten_members(value, key, step, timestamp_ms, false, out); break;
  case json::value_t::array:
    // A history: the index is the step. An array in an array means nothing.
    if (!in_array) {
      for (std::size_t i = 0; i < value.size(); ++i) {
        flatten_value(value[i], key, static_cast<std::int64_t>(i), timestamp_ms, true, out);
      }
    }
    break;
  default: break;
  }
}

// nlohmann's "[json.exception.parse_error.101] parse error at line 1,
// column 6: syntax error ..." without the id and the position, which the
// caller gives in its own terms.
std::string parse_error_text(const json::parse_error& error) {
  std::string_view text = error.what();
  if (const std::size_t id_end = text.find("] "); id_end != std::string_view::npos) {
    text.remove_prefix(id_end + 2);
  }
  if (text.rfind("parse error at line ", 0) == 0) {
    if (const std::size_t colon = text.find(": "); colon != std::string_view::npos) {
      text.remove_prefix(colon + 2);
    }
  }
  return std::string(text);
}

// The text with bare NaN, Infinity and -Infinity outside strings quoted, or
// nothing when there are none.
std::optional<std::string> quote_bare_specials(std::string_view text) {
  std::string fixed;
  bool changed = false;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\' && i + 1 < text.size()) {
        fixed += c;
        fixed += text[++i];
        continue;
      }
      in_string = c != '"';
      fixed += c;
      continue;
    }
    if (c == '"') {
      in_string = true;
      fixed += c;
      continue;
    }
    bool replaced = false;
    for (std::string_view word : {"NaN", "Infinity", "-Infinity"}) {
      if (text.compare(i, word.size(), word) == 0) {
        fixed += '"';
        fixed += word;
        fixed += '"';
        i += word.size() - 1;
        replaced = changed = true;
        break;
      }
    }
    if (!replaced) {
      fixed += c;
    }
  }
  if (!changed) {
    return std::nullopt;
  }
  return fixed;
}

struct ParseFailure {
  std::string message;
  /// 1-based byte index of the last character read.
  std::size_t byte = 0;
};

// One JSON value, or why not.
std::optional<json> parse_json(std::string_view text, ParseFailure& failure) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& error) {
    failure.message = parse_error_text(error);
    failure.byte = error.byte;
  }
  if (const std::optional<std::string> fixed = quote_bare_specials(text)) {
    try {
      return json::parse(*fixed);
    } catch (const json::parse_error&) {
      // The original's error points at the original text.
    }
  }
  return std::nullopt;
}

// The line and column of a parse error in `text`.
std::pair<std::size_t, std::size_t> position_of(std::string_view text, std::size_t byte) {
  const std::size_t index = std::min(byte > 0 ? byte - 1 : 0, text.size());
  std::size_t line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < index; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, index - line_start + 1};
}

// Keys are checked once per position in a line and spelling: a history
// repeats the same few keys on every line.
class KeyChecker {
public:
  /// "" if the key at `position` of its line is valid.
  std::string check(std::size_t position, std::string_view key) {
    if (position < m_known.size() && m_known[position] == key) {
      return "";
    }
    std::string why = check_key(key);
    if (why.empty()) {
      if (position >= m_known.size()) {
        m_known.resize(position + 1);
      }
      m_known[position] = key;
    }
    return why;
  }

private:
  std::vector<std::string> m_known;
};

// The fast path's view of a line: a flat object of numbers.
struct FlatLine {
  std::vector<std::pair<std::string_view, double>> values;
  std::optional<std::int64_t> step;
  std::optional<std::int64_t> timestamp;
};

const char* skip_spaces(const char* p, const char* end) {
  while (p != end && (*p == ' ' || *p == '\t' || *p == '\r')) {
    ++p;
  }
  return p;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// The end of a JSON number starting at `p` (JSON's grammar exactly: no '+',
// no leading zeros, digits on both sides of '.'), or nullptr.
const char* scan_number(const char* p, const char* end, bool& integer) {
  integer = true;
  if (p != end && *p == '-') {
    ++p;
  }
  if (p == end || !is_digit(*p)) {
    return nullptr;
  }
  if (*p == '0') {
    ++p;
  } else {
    while (p != end && is_digit(*p)) {
      ++p;
    }
  }
  if (p != end && *p == '.') {
    integer = false;
    ++p;
    if (p == end || !is_digit(*p)) {
      return nullptr;
    }
    while (p != end && is_digit(*p)) {
      ++p;
    }
  }
  if (p != end && (*p == 'e' || *p == 'E')) {
    integer = false;
    ++p;
    if (p != end && (*p == '+' || *p == '-')) {
      ++p;
    }
    if (p == end || !is_digit(*p)) {
      return nullptr;
    }
    while (p != end && is_digit(*p)) {
      ++p;
    }
  }
  return p;
}

bool starts_with(const char* p, const char* end, std::string_view word) {
  return static_cast<std::size_t>(end - p) >= word.size() && std::memcmp(p, word.data(), word.size()) == 0;
}

// False when the line is anything but a flat object of plain-keyed numbers
// (or when it is not valid JSON): nlohmann then reads it, or says why not.
bool parse_flat_line(std::string_view line, FlatLine& result) {
  result.values.clear();
  result.step.reset();
  result.timestamp.reset();
  const char* p = line.data();
  const char* const end = p + line.size();
  p = skip_spaces(p, end);
  if (p == end || *p != '{') {
    return false;
  }
  p = skip_spaces(p + 1, end);
  if (p != end && *p == '}') {
    return skip_spaces(p + 1, end) == end;
  }
  for (;;) {
    if (p == end || *p != '"') {
      return false;
    }
    const char* const key_start = ++p;
    while (p != end && *p != '"') {
      const auto c = static_cast<unsigned char>(*p);
      if (c == '\\' || c < 0x20 || c >= 0x80) {
        return false;
      }
      ++p;
    }
    if (p == end) {
      return false;
    }
    const std::string_view key(key_start, static_cast<std::size_t>(p - key_start));
    p = skip_spaces(p + 1, end);
    if (p == end || *p != ':') {
      return false;
    }
    p = skip_spaces(p + 1, end);
    if (key == "step" || key == "timestamp") {
      std::optional<std::int64_t>& slot = key == "step" ? result.step : result.timestamp;
      bool integer = false;
      const char* const number_end = scan_number(p, end, integer);
      std::int64_t whole = 0;
      // Anything but a plain integer, and a duplicate: nlohmann decides.
      if (number_end == nullptr || !integer || slot || std::from_chars(p, number_end, whole).ec != std::errc()) {
        return false;
      }
      slot = whole;
      p = number_end;
    } else {
      double value = 0;
      if (starts_with(p, end, "NaN")) {
        value = k_nan;
        p += 3;
      } else if (starts_with(p, end, "Infinity")) {
        value = k_inf;
        p += 8;
      } else if (starts_with(p, end, "-Infinity")) {
        value = -k_inf;
        p += 9;
      } else {
        bool integer = false;
        const char* const number_end = scan_number(p, end, integer);
        // Out of range (1e999) is left to nlohmann too.
        if (number_end == nullptr || std::from_chars(p, number_end, value).ec != std::errc()) {
          return false;
        }
        p = number_end;
      }
      // A repeated key: nlohmann keeps the last, and so must the points.
      for (const auto& seen : result.values) {
        if (seen.first == key) {
          return false;
        }
      }
      result.values.emplace_back(key, value);
    }
    p = skip_spaces(p, end);
    if (p == end) {
      return false;
    }
    if (*p == '}') {
      return skip_spaces(p + 1, end) == end;
    }
    if (*p != ',') {
      return false;
    }
    p = skip_spaces(p + 1, end);
  }
}

std::string where(const std::string& file, std::size_t line) {
  return file + ":" + std::to_string(line) + ": ";
}

// The step and timestamp a top-level object gives its metrics, or why not.
Expected<std::pair<std::int64_t, std::int64_t>> step_and_time(const json& object, std::int64_t default_step,
                                                              std::int64_t now_ms) {
  std::pair<std::int64_t, std::int64_t> result{default_step, now_ms};
  if (const auto it = object.find("step"); it != object.end()) {
    const std::optional<std::int64_t> step = integer_of(*it);
    if (!step) {
      return Error{"'step' must be an integer, got " + it->dump()};
    }
    result.first = *step;
  }
  if (const auto it = object.find("timestamp"); it != object.end()) {
    const std::optional<std::int64_t> timestamp = integer_of(*it);
    if (!timestamp) {
      return Error{"'timestamp' must be an integer (ms since the Unix epoch), got " + it->dump()};
    }
    result.second = *timestamp;
  }
  return result;
}

// Checks the keys of out[first...] as the metrics of one object.
std::string check_keys(KeyChecker& checker, const std::vector<MetricPoint>& out, std::size_t first) {
  for (std::size_t i = first; i < out.size(); ++i) {
    if (std::string why = checker.check(i - first, out[i].key); !why.empty()) {
      return "metric " + why;
    }
  }
  return "";
}

// Reads JSON Lines one line at a time, numbering them.
class JsonLines {
public:
  JsonLines(const std::string& file, std::int64_t now_ms, std::uintmax_t size_hint)
      : m_file(file), m_now_ms(now_ms), m_size_hint(size_hint) {}

  Expected<void> add(std::string_view line) {
    ++m_line;
    if (parse_flat_line(line, m_flat)) {
      if (m_index == 0) {
        reserve(line.size());
      }
      const std::int64_t step = m_flat.step.value_or(m_index);
      const std::int64_t timestamp = m_flat.timestamp.value_or(m_now_ms);
      for (std::size_t i = 0; i < m_flat.values.size(); ++i) {
        const auto& [key, value] = m_flat.values[i];
        if (std::string why = m_checker.check(i, key); !why.empty()) {
          return Error{where(m_file, m_line) + "metric " + why};
        }
        m_points.push_back(MetricPoint{std::string(key), value, step, timestamp});
      }
      ++m_index;
      return {};
    }
    if (is_blank(line)) {
      return {};
    }
    ParseFailure failure;
    const std::optional<json> object = parse_json(line, failure);
    if (!object) {
      const std::size_t column = std::min(failure.byte, line.size() + 1);
      return Error{m_file + ":" + std::to_string(m_line) + ":" + std::to_string(column) +
                   ": invalid JSON: " + failure.message};
    }
    if (!object->is_object()) {
      return Error{where(m_file, m_line) + "expected an object, got " + std::string(type_name(*object))};
    }
    const auto step_time = step_and_time(*object, m_index, m_now_ms);
    if (!step_time) {
      return Error{where(m_file, m_line) + step_time.error()};
    }
    const std::size_t first = m_points.size();
    std::string prefix;
    flatten_members(*object, prefix, step_time->first, step_time->second, true, m_points);
    if (std::string why = check_keys(m_checker, m_points, first); !why.empty()) {
      return Error{where(m_file, m_line) + why};
    }
    ++m_index;
    return {};
  }

  std::vector<MetricPoint> take() { return std::move(m_points); }

private:
  // Growing a vector of a million points by doubling costs more than parsing
  // them (copies and page faults), so the first line sizes it: the file is
  // most likely more lines like it. Unused capacity is never touched.
  void reserve(std::size_t first_line_size) {
    const std::uintmax_t lines = m_size_hint / (first_line_size + 1) + 1;
    const std::uintmax_t points = lines * m_flat.values.size();
    constexpr std::uintmax_t k_max_reserved = 16U << 20;
    m_points.reserve(static_cast<std::size_t>(std::min(points, k_max_reserved)));
  }

  const std::string& m_file;
  const std::int64_t m_now_ms;
  const std::uintmax_t m_size_hint;
  std::vector<MetricPoint> m_points;
  KeyChecker m_checker;
  FlatLine m_flat;
  /// Objects so far: the step of a line without "step".
  std::int64_t m_index = 0;
  /// 1-based number of the current line.
  std::size_t m_line = 0;
};

// Splits an in-memory text into lines ('\n' removed) for `add`.
template <typename Add>
Expected<void> for_each_line(std::string_view text, Add&& add) {
  std::size_t start = 0;
  while (start < text.size()) {
    const void* newline = std::memchr(text.data() + start, '\n', text.size() - start);
    const std::size_t stop =
        newline != nullptr ? static_cast<std::size_t>(static_cast<const char*>(newline) - text.data()) : text.size();
    if (Expected<void> added = add(text.substr(start, stop - start)); !added) {
      return added;
    }
    start = stop + 1;
  }
  return {};
}

// Reads a file in large blocks and hands out its lines as views into the
// block: no copy of the whole file, and a buffer that stays in cache.
class LineReader {
public:
  explicit LineReader(std::FILE* stream) : m_stream(stream), m_buffer(k_block) {}

  /// False at the end of the file or on a read error (see error()).
  bool next(std::string_view& line) {
    for (;;) {
      const char* const begin = m_buffer.data() + m_start;
      const void* newline = std::memchr(begin, '\n', m_end - m_start);
      if (newline != nullptr) {
        const auto length = static_cast<std::size_t>(static_cast<const char*>(newline) - begin);
        line = std::string_view(begin, length);
        m_start += length + 1;
        return true;
      }
      if (m_eof) {
        if (m_start == m_end) {
          return false;
        }
        line = std::string_view(begin, m_end - m_start);
        m_start = m_end;
        return true;
      }
      refill();
    }
  }

  int error() const { return m_error; }

private:
  static constexpr std::size_t k_block = 1 << 20;

  // Keeps the unfinished line, moved to the front; a line longer than the
  // buffer doubles it.
  void refill() {
    const std::size_t kept = m_end - m_start;
    std::memmove(m_buffer.data(), m_buffer.data() + m_start, kept);
    m_start = 0;
    m_end = kept;
    if (m_buffer.size() - m_end < k_block / 2) {
      m_buffer.resize(m_buffer.size() * 2);
    }
    const std::size_t got = std::fread(m_buffer.data() + m_end, 1, m_buffer.size() - m_end, m_stream);
    m_end += got;
    if (got == 0) {
      m_eof = true;
      m_error = std::ferror(m_stream) != 0 ? errno : 0;
    }
  }

  std::FILE* m_stream;
  std::vector<char> m_buffer;
  std::size_t m_start = 0;
  std::size_t m_end = 0;
  bool m_eof = false;
  int m_error = 0;
};

// Closes on every path.
struct FileCloser {
  void operator()(std::FILE* stream) const { std::fclose(stream); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

Expected<File> open_file(const std::filesystem::path& file) {
  File stream(std::fopen(file.c_str(), "rb"));
  if (!stream) {
    return Error{file.string() + ": " + std::strerror(errno)};
  }
  return stream;
}

std::uintmax_t size_of(const std::filesystem::path& file) {
  std::error_code ignored;
  const std::uintmax_t size = std::filesystem::file_size(file, ignored);
  return ignored ? 0 : size;
}

Expected<std::vector<MetricPoint>> stream_json_lines(const std::filesystem::path& file, std::int64_t now_ms) {
  Expected<File> stream = open_file(file);
  if (!stream) {
    return Error{stream.error()};
  }
  const std::string name = file.string();
  JsonLines lines(name, now_ms, size_of(file));
  LineReader reader(stream->get());
  std::string_view line;
  bool first = true;
  while (reader.next(line)) {
    if (first && line.substr(0, 3) == "\xEF\xBB\xBF") {
      line.remove_prefix(3);
    }
    first = false;
    if (Expected<void> added = lines.add(line); !added) {
      return Error{added.error()};
    }
  }
  if (reader.error() != 0) {
    return Error{name + ": " + std::strerror(reader.error())};
  }
  return lines.take();
}

// Whether a .json file holds JSON Lines: a first line that is a whole JSON
// value by itself, followed by more. A pretty-printed object's first line
// ("{") is not one.
bool looks_like_json_lines(std::string_view text) {
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t stop = text.find('\n', start);
    if (stop == std::string_view::npos) {
      return false;
    }
    const std::string_view line = text.substr(start, stop - start);
    start = stop + 1;
    if (is_blank(line)) {
      continue;
    }
    if (is_blank(text.substr(start))) {
      return false;
    }
    FlatLine flat;
    ParseFailure ignored;
    return parse_flat_line(line, flat) || parse_json(line, ignored).has_value();
  }
  return false;
}

Expected<std::vector<MetricPoint>> metrics_of_document(const json& document, const std::string& file,
                                                       std::int64_t now_ms, Format format) {
  std::vector<MetricPoint> out;
  if (document.is_null()) {
    return out;
  }
  if (!document.is_object()) {
    if (format == Format::yaml) {
      const std::string_view got = document.is_array()    ? "a list"
                                   : document.is_string() ? "a string"
                                                          : type_name(document);
      return Error{file + ": expected a map of metrics, got " + std::string(got)};
    }
    return Error{file + ": expected an object of metrics, got " + std::string(type_name(document))};
  }
  const auto step_time = step_and_time(document, 0, now_ms);
  if (!step_time) {
    return Error{file + ": " + step_time.error()};
  }
  std::string prefix;
  flatten_members(document, prefix, step_time->first, step_time->second, true, out);
  KeyChecker checker;
  if (std::string why = check_keys(checker, out, 0); !why.empty()) {
    return Error{file + ": " + why};
  }
  return out;
}

// For .json and YAML files, which are parsed as a whole.
Expected<std::string> read_whole(const std::filesystem::path& file) {
  Expected<File> stream = open_file(file);
  if (!stream) {
    return Error{stream.error()};
  }
  std::string text;
  text.reserve(static_cast<std::size_t>(size_of(file)));
  char block[64 * 1024];
  std::size_t got = 0;
  while ((got = std::fread(block, 1, sizeof block, stream->get())) > 0) {
    text.append(block, got);
  }
  if (std::ferror(stream->get()) != 0) {
    return Error{file.string() + ": " + std::strerror(errno)};
  }
  return text;
}

} // namespace

Expected<std::vector<MetricPoint>> read_metrics_file(const std::filesystem::path& file, std::int64_t now_ms,
                                                     const YamlToJson& yaml_to_json) {
  const Format format = format_of(file);
  if (format == Format::json_lines) {
    return stream_json_lines(file, now_ms);
  }
  const std::string name = file.string();
  Expected<std::string> content = read_whole(file);
  if (!content) {
    return Error{content.error()};
  }
  std::string_view text = *content;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") {
    text.remove_prefix(3);
  }
  // A step that declared a file and wrote nothing into it logged no metrics.
  if (is_blank(text)) {
    return std::vector<MetricPoint>();
  }
  if (format == Format::yaml) {
    if (!yaml_to_json) {
      return Error{name + ": YAML metrics files are not supported here"};
    }
    Expected<json> document = yaml_to_json(*content, name);
    if (!document) {
      return Error{document.error()};
    }
    return metrics_of_document(*document, name, now_ms, format);
  }
  if (looks_like_json_lines(text)) {
    JsonLines lines(name, now_ms, text.size());
    if (Expected<void> read = for_each_line(text, [&](std::string_view line) { return lines.add(line); }); !read) {
      return Error{read.error()};
    }
    return lines.take();
  }
  ParseFailure failure;
  const std::optional<json> document = parse_json(text, failure);
  if (!document) {
    const auto [line, column] = position_of(text, failure.byte);
    return Error{name + ":" + std::to_string(line) + ":" + std::to_string(column) +
                 ": invalid JSON: " + failure.message};
  }
  return metrics_of_document(*document, name, now_ms, format);
}

void flatten_metrics(const nlohmann::json& object, std::int64_t step, std::int64_t timestamp_ms,
                     std::vector<MetricPoint>& out) {
  if (!object.is_object()) {
    return;
  }
  std::string prefix;
  flatten_members(object, prefix, step, timestamp_ms, false, out);
}

} // namespace kiln::core
