#pragma once
// Workflow files -> core::Workflow. Parsing and validation report every
// problem at once, in file order, as compiler-style diagnostics; a workflow
// comes back only when there is none. The format is documented in
// man/kiln-workflow.5.

#include "core/expected.hpp"
#include "core/workflow.hpp"
#include "workflows/diagnostic.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::workflows {

struct LoadResult {
  /// Set exactly when diagnostics is empty.
  std::optional<core::Workflow> workflow;
  /// Problems in file order; those without a file position (bad -p) last.
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return workflow.has_value() && diagnostics.empty(); }
};

/// From `-p NAME=VALUE`, in command-line order; a later one wins.
using Overrides = std::vector<std::pair<std::string, std::string>>;

/// Reads `path` and parses it. A file that cannot be read is a diagnostic
/// with line 0. Workflow::file is `path` as given.
LoadResult load_workflow(const std::string& path, const Overrides& overrides = {});

/// Parses and validates `text` as if read from `path` (used in diagnostics
/// and for Workflow::file/directory; the file is not touched).
LoadResult parse_workflow(std::string_view text, const std::string& path, const Overrides& overrides = {});

/// Canonical text of `text` as a value of `type`: ints in decimal, floats as
/// written when already canonical-looking (else shortest round-trip), bools
/// true/false, strings unchanged. The error reads e.g. "'abc' is not a number".
core::Expected<std::string> canonical_param_value(core::ParamType type, std::string_view text);

/// "an int", "a float", "a bool", "a string": for messages.
std::string_view param_type_phrase(core::ParamType type);

} // namespace kiln::workflows
