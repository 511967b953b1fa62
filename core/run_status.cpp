#include "core/run_status.hpp"

#include <array>
#include <utility>

namespace kiln::core {

namespace {
constexpr std::array<std::pair<RunStatus, std::string_view>, 5> k_run_names{{
    {RunStatus::running, "running"},
    {RunStatus::succeeded, "succeeded"},
    {RunStatus::failed, "failed"},
    {RunStatus::cancelled, "cancelled"},
    {RunStatus::crashed, "crashed"},
}};
constexpr std::array<std::pair<StepStatus, std::string_view>, 7> k_step_names{{
    {StepStatus::pending, "pending"},
    {StepStatus::running, "running"},
    {StepStatus::succeeded, "succeeded"},
    {StepStatus::failed, "failed"},
    {StepStatus::skipped, "skipped"},
    {StepStatus::cancelled, "cancelled"},
    {StepStatus::cached, "cached"},
}};

template <typename Enum, std::size_t N>
std::string_view name_of(const std::array<std::pair<Enum, std::string_view>, N>& names, Enum value) {
  for (const auto& [e, name] : names) {
    if (e == value) {
      return name;
    }
  }
  return "unknown";
}

template <typename Enum, std::size_t N>
std::optional<Enum> value_of(const std::array<std::pair<Enum, std::string_view>, N>& names, std::string_view text) {
  for (const auto& [e, name] : names) {
    if (name == text) {
      return e;
    }
  }
  return std::nullopt;
}
} // namespace

std::string_view to_string(RunStatus status) {
  return name_of(k_run_names, status);
}
std::optional<RunStatus> parse_run_status(std::string_view text) {
  return value_of(k_run_names, text);
}
std::string_view to_string(StepStatus status) {
  return name_of(k_step_names, status);
}
std::optional<StepStatus> parse_step_status(std::string_view text) {
  return value_of(k_step_names, text);
}

} // namespace kiln::core
