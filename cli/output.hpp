#pragma once
// What the history commands print, whatever the format: `--output` formats,
// CSV per RFC 4180, metric values as text and JSON, and a buffered writer
// for outputs of a million lines. Off a terminal nothing is coloured and no
// value is cut short.

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

} // namespace kiln::cli
