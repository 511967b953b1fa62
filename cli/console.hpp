#pragma once
// Terminal-facing formatting shared by the commands: whether we talk to a
// terminal, colour (off with NO_COLOR, TERM=dumb or no terminal), durations,
// times and plain aligned tables that never cut a value short.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::cli {

struct Terminal {
  bool is_tty = false;
  bool color = false;
  int width = 80;
};

Terminal detect_terminal(int fd);

enum class Style { bold, red, green, yellow, dim };
std::string paint(std::string_view text, Style style, bool color);

/// 950ms, 1.2s, 59.9s, 3m04s, 1h02m.
std::string format_duration_ms(std::int64_t ms);
/// Local time, 2026-11-22 06:40:12.
std::string format_time(std::int64_t epoch_ms);

/// Columns padded to their widest cell; the last column is not padded.
/// Widths count UTF-8 code points, so cells may hold sparklines (▁▂▃).
class Table {
public:
  explicit Table(std::vector<std::string> header) : m_header(std::move(header)) {}
  void add(std::vector<std::string> row) { m_rows.push_back(std::move(row)); }
  bool empty() const { return m_rows.empty(); }
  void print(std::ostream& out) const;
  /// The header and the rows as RFC 4180 records (see cli/output.hpp).
  void print_csv(std::ostream& out) const;

private:
  std::vector<std::string> m_header;
  std::vector<std::vector<std::string>> m_rows;
};

/// The last `lines` lines of a file ("" when unreadable), reading only its end.
std::string tail_file(const std::string& path, int lines);

} // namespace kiln::cli
