#pragma once
// What a person (or cron mail, or a CI log) sees while a run goes on. On a
// terminal: finished steps scroll above one ninja-like status line,
// "[3/7] train (attempt 2/3) 12s", redrawn each second. Off a terminal: one
// plain line per event and nothing else. When a step fails, the tail of its
// log and the command that shows the rest.

#include "cli/console.hpp"
#include "core/plan.hpp"
#include "core/scheduler.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace kiln::cli {

class ConsoleReporter final : public core::RunObserver {
public:
  ConsoleReporter(const core::Plan& plan, std::int64_t run_number, const core::Clock& clock, Terminal terminal,
                  std::FILE* out);

  void step_started(int step, std::int64_t at_ms) override;
  void attempt_started(int step, int attempt, const core::LaunchSpec& spec, const core::JobStarted& job,
                       std::int64_t at_ms) override;
  void attempt_finished(int step, int attempt, const core::AttemptOutcome& outcome, std::int64_t at_ms,
                        std::optional<core::Millis> retry_in) override;
  void step_finished(int step, core::StepStatus status, const std::string& reason, std::int64_t at_ms) override;
  void interrupted(int signal, int count) override;
  void before_wait() override;
  std::optional<core::TimePoint> next_refresh() const override;
  void refresh(core::TimePoint now) override;

  /// Steps settled before this session (a resumed run's kept steps, which
  /// the scheduler does not report) count as finished in the [n/N] counter.
  void count_settled(int steps) { m_finished += steps; }
  /// Clears the status line before the caller prints its summary.
  void finish();

private:
  struct StepView {
    int attempt = 0;
    /// The number of this session's first attempt: a resumed run's attempts
    /// go on from its earlier ones, and each session may retry in full.
    int first_attempt = 0;
    std::int64_t started_ms = 0;
    std::int64_t attempt_started_ms = 0;
    core::TimePoint attempt_started_at{};
    std::string stdout_path;
    std::string stderr_path;
    bool running = false;
  };

  void line(const std::string& text);
  void draw_status();
  std::string counter() const;

  const core::Plan& m_plan;
  std::int64_t m_run_number;
  const core::Clock& m_clock;
  Terminal m_terminal;
  std::FILE* m_out;
  std::vector<StepView> m_steps;
  /// Running steps, most recently started last.
  std::vector<int> m_running;
  int m_finished = 0;
  bool m_status_shown = false;
  std::optional<core::TimePoint> m_next_refresh;
};

} // namespace kiln::cli
