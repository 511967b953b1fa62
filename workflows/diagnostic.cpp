#include "workflows/diagnostic.hpp"

#include <algorithm>

namespace kiln::workflows {

namespace {

bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// Blanks that line up under column `column` of `line`: tabs stay tabs so
// the caret lands where the terminal shows the byte; a multi-byte UTF-8
// character counts once.
std::string caret_line(const std::string& line, int column, int length) {
  std::string out;
  const std::size_t start = column > 0 ? static_cast<std::size_t>(column - 1) : 0;
  for (std::size_t i = 0; i < start; ++i) {
    if (i >= line.size()) {
      out += ' ';
    } else if (line[i] == '\t') {
      out += '\t';
    } else if (!is_continuation(line[i])) {
      out += ' ';
    }
  }
  out += '^';
  int chars = 0;
  const std::size_t end = std::min(line.size(), start + static_cast<std::size_t>(std::max(length, 1)));
  for (std::size_t i = start; i < end; ++i) {
    if (!is_continuation(line[i])) {
      ++chars;
    }
  }
  for (int i = 1; i < chars; ++i) {
    out += '~';
  }
  return out;
}

} // namespace

std::string format_diagnostic(const Diagnostic& d, bool color) {
  const std::string error = color ? "\x1b[1;31merror:\x1b[0m" : "error:";
  if (d.file.empty()) {
    return "kiln: " + error + " " + d.message;
  }
  if (d.line <= 0) {
    return d.file + ": " + error + " " + d.message;
  }
  std::string out = d.file + ":" + std::to_string(d.line) + ":" + std::to_string(d.column) + ": " + error + " " +
                    d.message + "\n" + d.source_line + "\n";
  if (color) {
    out += "\x1b[32m" + caret_line(d.source_line, d.column, d.length) + "\x1b[0m";
  } else {
    out += caret_line(d.source_line, d.column, d.length);
  }
  return out;
}

} // namespace kiln::workflows
