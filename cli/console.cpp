#include "cli/console.hpp"

#include "cli/output.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <ostream>

namespace kiln::cli {

Terminal detect_terminal(int fd) {
  Terminal t;
  t.is_tty = isatty(fd) == 1;
  const char* term = std::getenv("TERM");
  const char* no_color = std::getenv("NO_COLOR");
  t.color =
      t.is_tty && (no_color == nullptr || *no_color == '\0') && (term == nullptr || std::string_view(term) != "dumb");
  winsize ws{};
  if (t.is_tty && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    t.width = ws.ws_col;
  }
  return t;
}

std::string paint(std::string_view text, Style style, bool color) {
  if (!color) {
    return std::string(text);
  }
  const char* code = "";
  switch (style) {
  case Style::bold: code = "\033[1m"; break;
  case Style::red: code = "\033[1;31m"; break;
  case Style::green: code = "\033[32m"; break;
  case Style::yellow: code = "\033[33m"; break;
  case Style::dim: code = "\033[2m"; break;
  }
  return std::string(code) + std::string(text) + "\033[0m";
}

std::string format_duration_ms(std::int64_t ms) {
  char buf[32];
  if (ms < 0) {
    ms = 0;
  }
  if (ms < 1000) {
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
  } else if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  } else if (ms < 3'600'000) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(ms / 60'000),
                  static_cast<long long>(ms / 1000 % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(ms / 3'600'000),
                  static_cast<long long>(ms / 60'000 % 60));
  }
  return buf;
}

std::string format_time(std::int64_t epoch_ms) {
  const std::time_t seconds = static_cast<std::time_t>(epoch_ms / 1000);
  std::tm local{};
  localtime_r(&seconds, &local);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &local);
  return buf;
}

namespace {

/// Terminal columns of UTF-8 text, one per code point (no wide characters in
/// what kiln prints).
std::size_t display_width(std::string_view text) {
  std::size_t n = 0;
  for (char c : text) {
    n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  }
  return n;
}

} // namespace

void Table::print(std::ostream& out) const {
  std::vector<std::size_t> width(m_header.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], display_width(row[i]));
    }
  };
  measure(m_header);
  for (const auto& row : m_rows) {
    measure(row);
  }
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line.append(width[i] - display_width(row[i]) + 2, ' ');
      }
    }
    while (!line.empty() && line.back() == ' ') {
      line.pop_back();
    }
    out << line << '\n';
  };
  emit(m_header);
  for (const auto& row : m_rows) {
    emit(row);
  }
}

void Table::print_csv(std::ostream& out) const {
  write_csv_row(out, m_header);
  for (const auto& row : m_rows) {
    write_csv_row(out, row);
  }
}

std::string tail_file(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {};
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff chunk = std::min<std::streamoff>(size, 64 * 1024);
  in.seekg(size - chunk);
  std::string data(static_cast<std::size_t>(chunk), '\0');
  in.read(data.data(), chunk);
  if (!data.empty() && data.back() == '\n') {
    data.pop_back();
  }
  std::size_t pos = data.size();
  for (int n = 0; n < lines && pos != std::string::npos; ++n) {
    pos = pos == 0 ? std::string::npos : data.rfind('\n', pos - 1);
  }
  return pos == std::string::npos ? data : data.substr(pos + 1);
}

} // namespace kiln::cli
