#pragma once
// The states a run and its steps go through, shared by the scheduler, the
// tracker store and the CLI.

#include <optional>
#include <string_view>

namespace kiln::core {

enum class RunStatus { running, succeeded, failed, cancelled, crashed };
enum class StepStatus { pending, running, succeeded, failed, skipped, cancelled };

std::string_view to_string(RunStatus status);
std::optional<RunStatus> parse_run_status(std::string_view text);
std::string_view to_string(StepStatus status);
std::optional<StepStatus> parse_step_status(std::string_view text);

/// A step that will not change state any more.
inline bool is_final(StepStatus status) {
  return status != StepStatus::pending && status != StepStatus::running;
}

} // namespace kiln::core
