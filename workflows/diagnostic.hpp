#pragma once
// A user mistake in a workflow file (or on the command line), and its
// compiler-style rendering: location, message, source line, caret.

#include <string>

namespace kiln::workflows {

struct Diagnostic {
  /// The path as the user gave it; empty for problems outside any file
  /// (e.g. a bad `-p NAME=VALUE`).
  std::string file;
  /// 1-based; line 0 means no position in the file.
  int line = 0;
  /// 1-based byte column.
  int column = 0;
  /// Bytes of the offending token from `column`, at least 1.
  int length = 1;
  std::string message;
  /// The line `line` of the file, verbatim, without its newline.
  std::string source_line;
};

/// Without a trailing newline:
///   FILE:LINE:COL: error: MESSAGE
///   <source line>
///   <blanks up to COL, tabs kept as tabs>^~~~
/// For line 0: "FILE: error: MESSAGE"; without a file: "kiln: error: MESSAGE".
/// `color` makes "error:" bold red and the caret line green.
std::string format_diagnostic(const Diagnostic& d, bool color);

} // namespace kiln::workflows
