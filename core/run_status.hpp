#pragma once
// The states a run and its steps go through, shared by the scheduler, the
// tracker store and the CLI.

#include <optional>
#include <string_view>

namespace kiln::core {

enum class RunStatus { running, succeeded, failed, cancelled, crashed };
/// cached: not run, because an earlier execution with the same cache key
/// produced outputs that are still in place (or were restored).
enum class StepStatus { pending, running, succeeded, failed, skipped, cancelled, cached };

std::string_view to_string(RunStatus status);
std::optional<RunStatus> parse_run_status(std::string_view text);
std::string_view to_string(StepStatus status);
std::optional<StepStatus> parse_step_status(std::string_view text);

/// Succeeded, or stood for by a cached earlier success: what a step
/// needing it waits for by default.
inline bool is_success(StepStatus status) {
  return status == StepStatus::succeeded || status == StepStatus::cached;
}

/// A step that will not change state any more.
inline bool is_final(StepStatus status) {
  return status != StepStatus::pending && status != StepStatus::running;
}

} // namespace kiln::core
