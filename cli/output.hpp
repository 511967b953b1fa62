#pragma once
// What the history commands print, whatever the format: `--output` formats,
// CSV per RFC 4180, metric values as text and JSON, and a buffered writer
// for outputs of a million lines. Off a terminal nothing is coloured and no
// value is cut short.

#include <unistd.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::cli {

enum class OutputFormat { table, json, csv };

/// "table", "json", "csv".
std::string_view to_string(OutputFormat format);
/// The inverse of to_string; nullopt for any other text.
std::optional<OutputFormat> parse_output_format(std::string_view text);

/// One RFC 4180 field: as is, or in double quotes (inner quotes doubled) when
/// it holds a comma, a quote, CR or LF, or starts or ends with a space.
std::string csv_field(std::string_view text);
/// Fields joined by commas, ended by LF (not RFC 4180's CRLF: the output is
/// for pipes and Unix tools; every CSV reader accepts LF).
void write_csv_row(std::ostream& out, const std::vector<std::string>& fields);

/// The shortest text that reads back as the same double (std::to_chars):
/// 0.41, 1e-05, 123456789, 1e+20; "nan", "inf" and "-inf" otherwise.
std::string format_metric(double value);

/// Text for a million lines in tens of milliseconds: collected in a 64 KiB
/// buffer and written to a file descriptor with write(2), with no iostream
/// or locale in the way. A failed write (EPIPE when the reader went away:
/// kiln ignores SIGPIPE) ends the output: later text is dropped, ok() turns
/// false and error() holds the errno. The destructor flushes. Whatever
/// std::cout or stdio still buffers for the same descriptor is not ordered
/// with it: flush those first.
class FastWriter {
public:
  explicit FastWriter(int fd = STDOUT_FILENO);
  ~FastWriter();
  FastWriter(const FastWriter&) = delete;
  FastWriter& operator=(const FastWriter&) = delete;

  void append(std::string_view text);
  void append(char c);
  void append_int(std::int64_t value);
  /// format_metric's text.
  void append_double(double value);
  /// csv_field's text.
  void append_csv(std::string_view field);
  void newline() { append('\n'); }
  /// Writes out what is buffered; false once any write has failed.
  bool flush();

  bool ok() const { return m_error == 0; }
  /// The errno of the write that failed, 0 while none has.
  int error() const { return m_error; }

private:
  static constexpr std::size_t k_capacity = 64 * 1024;
  /// Room for one number, flushing first when the buffer is nearly full;
  /// null once a write has failed.
  char* reserve(std::size_t size);

  int m_fd;
  int m_error = 0;
  std::size_t m_size = 0;
  std::unique_ptr<char[]> m_buffer;
};

} // namespace kiln::cli
