#include "cli/output.hpp"

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

std::string csv_field(std::string_view text) {
  const bool quote = text.find_first_of(",\"\r\n") != std::string_view::npos ||
                     (!text.empty() && (text.front() == ' ' || text.back() == ' '));
  if (!quote) {
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

} // namespace kiln::cli
