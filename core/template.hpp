#pragma once
// ${{ namespace.name }} templates in commands, environment values and
// working directories. Whitespace inside the braces is optional. An
// expression never spans lines. The four characters "$${{" stand for a
// literal "${{" and start no template (so `echo $$` stays untouched: only
// "$${{" is special).
//
// Namespaces: params.NAME, run.id, run.number, step.id, workflow.name,
// env.NAME, matrix.NAME (a matrix variant's values), and what upstream
// steps produced: steps.ID.outputs.NAME (KILN_OUTPUTS lines),
// steps.ID.metrics.NAME (the last value) and steps.ID.status. Those are
// known only when the step starts, so a plan keeps them (and only them) as
// templates and renders them then. Parsing is syntax only; render_template
// resolves values.

#include "core/expected.hpp"
#include "core/workflow.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

/// One ${{ ns.name }} in a text.
struct TemplateRef {
  std::string ns;
  std::string name;
  /// Byte offset of the "${{" and length through the closing "}}".
  std::size_t offset = 0;
  std::size_t length = 0;
};

struct TemplateSyntaxError {
  /// Byte offset of the "${{" the error is about, and how many bytes to mark.
  std::size_t offset = 0;
  std::size_t length = 3;
  std::string message;
};

/// Every reference and every syntax error in a text, each in text order.
/// Scanning continues after a bad expression and stops at an unterminated
/// "${{".
struct TemplateScan {
  std::vector<TemplateRef> refs;
  std::vector<TemplateSyntaxError> errors;
  bool ok() const { return errors.empty(); }
};

TemplateScan scan_template(std::string_view text);

/// The namespaces render_template knows, and the fixed names of the ones
/// that are not open-ended (params and env take any name).
inline constexpr std::array<std::string_view, 7> k_template_namespaces{"params", "run",    "step", "workflow",
                                                                       "env",    "matrix", "steps"};

/// steps.ID.FIELD[.NAME] split: field is "outputs", "metrics" or "status".
struct StepRef {
  std::string step;
  std::string field;
  std::string name;
};
/// The parts of what follows "steps.", or nullopt when it has no known field.
std::optional<StepRef> parse_step_ref(std::string_view path);
/// For "run", "step" and "workflow": the names they hold ("id", "number",
/// ...). Empty for the open namespaces and for unknown ones.
std::vector<std::string_view> template_fields(std::string_view ns);

/// What a running step's templates may refer to.
struct TemplateContext {
  /// params (Param::value is canonical text) and name.
  const Workflow* workflow = nullptr;
  std::string run_id;
  std::int64_t run_number = 0;
  std::string step_id;
  /// Lookup for env.X; nullopt (or no function) means unset.
  std::function<std::optional<std::string>(std::string_view)> env;
  /// matrix.NAME values of a matrix variant.
  std::vector<std::pair<std::string, std::string>> matrix;
  /// steps.PATH (PATH is what follows "steps."); unset = not available.
  std::function<Expected<std::string>(std::string_view path)> steps;
  /// Partial rendering, for a plan: steps.* references are kept as they are
  /// and escapes stay escaped, so the result is a template again whose only
  /// references are steps.* (values holding "${{" come out escaped).
  bool keep_steps = false;
};

/// `text` with every reference replaced by its value and "$${{" by "${{".
/// Fails on the first syntax error or unresolvable reference, e.g.
/// "env.HOME is not set", "undefined parameter 'X'".
Expected<std::string> render_template(std::string_view text, const TemplateContext& ctx);

} // namespace kiln::core
