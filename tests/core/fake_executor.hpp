#pragma once
// A fake executor and clock for scheduler tests: jobs are scripts of
// (duration, exit code) per attempt, time jumps straight to the next event.

#include "core/clock.hpp"
#include "core/executor.hpp"

#include <csignal>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kiln::testing {

class FakeClock final : public core::Clock {
public:
  core::TimePoint now() const override { return m_now; }
  std::int64_t wall_ms() const override { return since_start().count(); }
  core::Millis since_start() const { return std::chrono::duration_cast<core::Millis>(m_now - core::TimePoint{}); }
  void set(core::TimePoint t) { m_now = t; }

private:
  core::TimePoint m_now{};
};

struct FakeAttempt {
  core::Millis duration{1000};
  int exit_code = 0;
  /// Whether SIGTERM is ignored (only SIGKILL ends the job).
  bool ignores_term = false;
};

struct StartRecord {
  std::string step;
  int attempt;
  core::Millis at;
  std::vector<std::string> env;
};

class FakeExecutor final : public core::Executor {
public:
  explicit FakeExecutor(FakeClock& clock) : m_clock(clock) {}

  /// Behaviour of a step's attempts in order; the last repeats.
  std::map<std::string, std::vector<FakeAttempt>> scripts;
  /// Steps whose start fails with this message.
  std::map<std::string, std::string> start_errors;
  /// Signals delivered to the runner at these times.
  std::vector<std::pair<core::Millis, int>> interrupts;

  std::vector<StartRecord> starts;
  std::vector<std::pair<std::string, core::StopMode>> stops;
  int max_running = 0;

  std::string_view name() const override { return "fake"; }

  core::Expected<core::JobStarted> start(const core::LaunchSpec& spec) override {
    starts.push_back({spec.step_id, spec.attempt, m_clock.since_start(), spec.env});
    if (auto it = start_errors.find(spec.step_id); it != start_errors.end()) {
      return core::Error{it->second};
    }
    FakeAttempt behaviour;
    if (auto it = scripts.find(spec.step_id); it != scripts.end() && !it->second.empty()) {
      behaviour = it->second[std::min<std::size_t>(spec.attempt - 1, it->second.size() - 1)];
    }
    Job job{++m_next_id, m_clock.now() + behaviour.duration, behaviour.exit_code, 0, behaviour.ignores_term};
    m_jobs.push_back(job);
    max_running = std::max(max_running, static_cast<int>(m_jobs.size()));
    return core::JobStarted{job.id, static_cast<std::int64_t>(1000 + job.id), "fake:" + std::to_string(job.id)};
  }

  void stop(core::JobId id, core::StopMode mode) override {
    for (auto& job : m_jobs) {
      if (job.id != id) {
        continue;
      }
      stops.push_back({std::to_string(id), mode});
      if (mode == core::StopMode::kill || !job.ignores_term) {
        job.ends_at = m_clock.now();
        job.signal = mode == core::StopMode::kill ? SIGKILL : SIGTERM;
      }
    }
  }

  core::WaitResult wait(std::optional<core::TimePoint> deadline) override {
    core::WaitResult result;
    std::optional<core::TimePoint> next;
    for (const auto& job : m_jobs) {
      if (!next || job.ends_at < *next) {
        next = job.ends_at;
      }
    }
    std::optional<core::TimePoint> interrupt_at;
    if (!interrupts.empty()) {
      interrupt_at = core::TimePoint{} + interrupts.front().first;
    }
    if (!next && !deadline && !interrupt_at) {
      throw std::logic_error("fake executor: wait() with nothing that could ever happen");
    }
    auto at = next;
    if (deadline && (!at || *deadline < *at)) {
      at = deadline;
    }
    if (interrupt_at && (!at || *interrupt_at <= *at)) {
      m_clock.set(std::max(m_clock.now(), *interrupt_at));
      result.interrupts.push_back(interrupts.front().second);
      interrupts.erase(interrupts.begin());
      return result;
    }
    m_clock.set(std::max(m_clock.now(), *at));
    for (auto it = m_jobs.begin(); it != m_jobs.end();) {
      if (it->ends_at <= m_clock.now()) {
        result.exits.push_back({it->id, it->signal ? -1 : it->exit_code, it->signal});
        it = m_jobs.erase(it);
      } else {
        ++it;
      }
    }
    return result;
  }

private:
  struct Job {
    core::JobId id;
    core::TimePoint ends_at;
    int exit_code;
    int signal;
    bool ignores_term;
  };
  FakeClock& m_clock;
  std::vector<Job> m_jobs;
  core::JobId m_next_id = 0;
};

} // namespace kiln::testing
