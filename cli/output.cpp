#include "cli/output.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

namespace kiln::cli {

std::string_view to_string(OutputFormat format) {
  switch (format) {
  case OutputFormat::table: return "table";
  case OutputFormat::json: return "json";
  case OutputFormat::csv: return "csv";
  }
  return "table";
}

std::optional<OutputFormat> parse_output_format(std::string_view text) {
  for (auto format : {OutputFormat::table, OutputFormat::json, OutputFormat::csv}) {
    if (text == to_string(format)) {
      return format;
    }
  }
  return std::nullopt;
}

namespace {

bool needs_quotes(std::string_view field) {
  return field.find_first_of(",\"\r\n") != std::string_view::npos ||
         (!field.empty() && (field.front() == ' ' || field.back() == ' '));
}

} // namespace

std::string csv_field(std::string_view text) {
  if (!needs_quotes(text)) {
    return std::string(text);
  }
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (char c : text) {
    if (c == '"') {
      out += '"';
    }
    out += c;
  }
  out += '"';
  return out;
}

void write_csv_row(std::ostream& out, const std::vector<std::string>& fields) {
  // A lone empty field is written "" so the record is not an empty line.
  if (fields.size() == 1 && fields[0].empty()) {
    out << "\"\"\n";
    return;
  }
  std::string line;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) {
      line += ',';
    }
    line += csv_field(fields[i]);
  }
  line += '\n';
  out << line;
}

namespace {

/// std::to_chars's shortest form into `out` (at least 32 bytes), with one
/// spelling for NaN whatever its sign bit; the end of the text.
char* to_chars_metric(char* out, double value) {
  if (std::isnan(value)) {
    std::memcpy(out, "nan", 3);
    return out + 3;
  }
  return std::to_chars(out, out + 32, value).ptr;
}

} // namespace

std::string format_metric(double value) {
  char buf[32];
  return std::string(buf, to_chars_metric(buf, value));
}

FastWriter::FastWriter(int fd) : m_fd(fd), m_buffer(new char[k_capacity]) {}

FastWriter::~FastWriter() {
  flush();
}

void FastWriter::append(std::string_view text) {
  while (!text.empty() && ok()) {
    if (m_size == k_capacity) {
      flush();
      continue;
    }
    const std::size_t n = std::min(text.size(), k_capacity - m_size);
    std::memcpy(m_buffer.get() + m_size, text.data(), n);
    m_size += n;
    text.remove_prefix(n);
  }
}

void FastWriter::append(char c) {
  if (m_size == k_capacity) {
    flush();
  }
  if (ok()) {
    m_buffer[m_size++] = c;
  }
}

char* FastWriter::reserve(std::size_t size) {
  if (k_capacity - m_size < size) {
    flush();
  }
  return ok() ? m_buffer.get() + m_size : nullptr;
}

void FastWriter::append_int(std::int64_t value) {
  if (char* out = reserve(32)) {
    m_size = static_cast<std::size_t>(std::to_chars(out, out + 32, value).ptr - m_buffer.get());
  }
}

void FastWriter::append_double(double value) {
  if (char* out = reserve(32)) {
    m_size = static_cast<std::size_t>(to_chars_metric(out, value) - m_buffer.get());
  }
}

void FastWriter::append_csv(std::string_view field) {
  if (needs_quotes(field)) {
    append(csv_field(field));
  } else {
    append(field);
  }
}

bool FastWriter::flush() {
  std::size_t done = 0;
  while (done < m_size && ok()) {
    const ssize_t n = ::write(m_fd, m_buffer.get() + done, m_size - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      m_error = n < 0 ? errno : EIO;
    } else {
      done += static_cast<std::size_t>(n);
    }
  }
  m_size = 0;
  return ok();
}

} // namespace kiln::cli
