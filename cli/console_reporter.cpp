#include "cli/console_reporter.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>

namespace kiln::cli {

namespace {
std::string outcome_text(const core::AttemptOutcome& outcome) {
  if (!outcome.error.empty()) {
    return outcome.error;
  }
  if (outcome.timed_out) {
    return "timed out";
  }
  if (outcome.signal != 0) {
    const char* name = sigabbrev_np(outcome.signal);
    return std::string("killed by ") + (name ? std::string("SIG") + name : "signal " + std::to_string(outcome.signal));
  }
  return "exit code " + std::to_string(outcome.exit_code.value_or(-1));
}
} // namespace

ConsoleReporter::ConsoleReporter(const core::Plan& plan, std::int64_t run_number, const core::Clock& clock,
                                 Terminal terminal, std::FILE* out)
    : m_plan(plan), m_run_number(run_number), m_clock(clock), m_terminal(terminal), m_out(out),
      m_steps(plan.steps.size()) {}

std::string ConsoleReporter::counter() const {
  return "[" + std::to_string(m_finished) + "/" + std::to_string(m_plan.steps.size()) + "]";
}

void ConsoleReporter::line(const std::string& text) {
  if (m_status_shown) {
    std::fputs("\r\033[K", m_out);
    m_status_shown = false;
  }
  std::fputs(text.c_str(), m_out);
  std::fputc('\n', m_out);
  if (m_terminal.is_tty) {
    draw_status();
  }
}

// Lines are flushed once per turn of the scheduler's loop, not one by one:
// a rerun that finds 10,000 steps cached prints them in a few writes.
void ConsoleReporter::before_wait() {
  std::fflush(m_out);
}

void ConsoleReporter::draw_status() {
  if (m_running.empty()) {
    return;
  }
  const int step = m_running.back();
  const auto& view = m_steps[step];
  const auto& planned = m_plan.steps[step];
  std::string text = counter() + " " + planned.id;
  if (planned.retries.limit > 0) {
    text += " (attempt " + std::to_string(view.attempt) + "/" +
            std::to_string(view.first_attempt + planned.retries.limit) + ")";
  }
  const auto elapsed = std::chrono::duration_cast<core::Millis>(m_clock.now() - view.attempt_started_at).count();
  text += " " + std::to_string(elapsed / 1000) + "s";
  if (m_running.size() > 1) {
    text += " +" + std::to_string(m_running.size() - 1) + " running";
  }
  if (static_cast<int>(text.size()) >= m_terminal.width) {
    text.resize(std::max(0, m_terminal.width - 1));
  }
  std::fputs("\r\033[K", m_out);
  std::fputs(text.c_str(), m_out);
  std::fflush(m_out);
  m_status_shown = true;
}

void ConsoleReporter::step_started(int step, std::int64_t at_ms) {
  m_steps[step].started_ms = at_ms;
}

void ConsoleReporter::attempt_started(int step, int attempt, const core::LaunchSpec& spec, const core::JobStarted&,
                                      std::int64_t at_ms) {
  auto& view = m_steps[step];
  view.attempt = attempt;
  if (view.first_attempt == 0) {
    view.first_attempt = attempt;
  }
  view.attempt_started_ms = at_ms;
  view.attempt_started_at = m_clock.now();
  view.stdout_path = spec.stdout_path;
  view.stderr_path = spec.stderr_path;
  view.running = true;
  m_running.push_back(step);
  if (m_terminal.is_tty) {
    draw_status();
    if (!m_next_refresh) {
      m_next_refresh = m_clock.now() + core::Millis(1000);
    }
  } else {
    std::string text = counter() + " " + m_plan.steps[step].id + " started";
    if (attempt > 1) {
      text += " (attempt " + std::to_string(attempt) + "/" + std::to_string(m_plan.steps[step].retries.limit + 1) + ")";
    }
    line(text);
  }
}

void ConsoleReporter::attempt_finished(int step, int attempt, const core::AttemptOutcome& outcome, std::int64_t at_ms,
                                       std::optional<core::Millis> retry_in) {
  auto& view = m_steps[step];
  view.running = false;
  m_running.erase(std::remove(m_running.begin(), m_running.end(), step), m_running.end());
  if (!retry_in) {
    return;
  }
  const auto& planned = m_plan.steps[step];
  line(paint(counter() + " " + planned.id, Style::yellow, m_terminal.color) + " attempt " + std::to_string(attempt) +
       "/" + std::to_string(planned.retries.limit + 1) + " failed (" + outcome_text(outcome) + ") after " +
       format_duration_ms(at_ms - view.attempt_started_ms) + "; retrying in " + format_duration_ms(retry_in->count()));
}

void ConsoleReporter::step_finished(int step, core::StepStatus status, const std::string& reason, std::int64_t at_ms) {
  ++m_finished;
  const auto& planned = m_plan.steps[step];
  const auto& view = m_steps[step];
  const std::string head = counter() + " " + planned.id;
  switch (status) {
  case core::StepStatus::succeeded:
    line(paint(head, Style::green, m_terminal.color) + " succeeded in " + format_duration_ms(at_ms - view.started_ms) +
         (view.attempt > 1 ? " (attempt " + std::to_string(view.attempt) + ")" : ""));
    break;
  case core::StepStatus::failed: {
    line(paint(head + " failed", Style::red, m_terminal.color) + ": " + reason);
    // The tail of what it said, and where the rest is.
    std::string tail = tail_file(view.stderr_path, 10);
    std::string stream = "stderr";
    if (tail.empty()) {
      tail = tail_file(view.stdout_path, 10);
      stream = "stdout";
    }
    std::string text;
    if (!tail.empty()) {
      text += "  last lines of " + stream + ":\n";
      std::size_t start = 0;
      while (start <= tail.size()) {
        const auto end = tail.find('\n', start);
        text += "  | " + tail.substr(start, end == std::string::npos ? std::string::npos : end - start) + "\n";
        if (end == std::string::npos) {
          break;
        }
        start = end + 1;
      }
    }
    if (view.attempt > 0) {
      text += "  full log: kiln logs " + std::to_string(m_run_number) + " " + planned.id + " --attempt " +
              std::to_string(view.attempt);
      line(text);
    }
    break;
  }
  case core::StepStatus::cached: line(paint(head + " cached", Style::dim, m_terminal.color) + ": " + reason); break;
  case core::StepStatus::skipped: line(paint(head + " skipped", Style::dim, m_terminal.color) + ": " + reason); break;
  case core::StepStatus::cancelled:
    line(paint(head + " cancelled", Style::yellow, m_terminal.color) + ": " + reason);
    break;
  default: break;
  }
}

void ConsoleReporter::interrupted(int signal, int count) {
  const char* name = sigabbrev_np(signal);
  const std::string sig = name ? std::string("SIG") + name : "signal " + std::to_string(signal);
  if (count == 1) {
    line("kiln: " + sig + " received: stopping running steps (again to kill them at once)");
  } else {
    line("kiln: " + sig + " received again: killing running steps");
  }
}

std::optional<core::TimePoint> ConsoleReporter::next_refresh() const {
  return m_running.empty() ? std::nullopt : m_next_refresh;
}

void ConsoleReporter::refresh(core::TimePoint now) {
  draw_status();
  m_next_refresh = now + core::Millis(1000);
}

void ConsoleReporter::finish() {
  if (m_status_shown) {
    std::fputs("\r\033[K", m_out);
    m_status_shown = false;
  }
  std::fflush(m_out);
}

} // namespace kiln::cli
