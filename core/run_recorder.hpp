#pragma once
// Records a running plan in the tracker store: every state change the
// scheduler reports is committed as it happens, so a runner killed at any
// moment leaves the truth up to that moment. Changes that happen at the same
// instant share one transaction (a step going running with its first
// attempt; a last attempt ending with its step), which halves the commits
// per step. A cached step is the exception: the StepDecider writes its
// status with its cache decision, so its row is updated once, not twice.

#include "core/plan.hpp"
#include "core/scheduler.hpp"
#include "core/tracker_store.hpp"

#include <string>
#include <vector>

namespace kiln::core {

class RunRecorder final : public RunObserver {
public:
  RunRecorder(TrackerStore& store, const Plan& plan, std::int64_t run_number, std::string executor);

  void attempt_started(int step, int attempt, const LaunchSpec& spec, const JobStarted& job,
                       std::int64_t at_ms) override;
  void attempt_finished(int step, int attempt, const AttemptOutcome& outcome, std::int64_t at_ms,
                        std::optional<Millis> retry_in) override;
  void step_finished(int step, StepStatus status, const std::string& reason, std::int64_t at_ms) override;
  /// Writes the statuses of steps decided without running in this turn.
  void before_wait() override;

  /// Writes that failed (disk full, say); the run goes on regardless and
  /// the caller reports these.
  const std::vector<std::string>& errors() const { return m_errors; }

private:
  void check(const Expected<void>& result);

  struct PendingEnd {
    int step = -1;
    int attempt = 0;
    AttemptEnd end;
  };

  TrackerStore& m_store;
  const Plan& m_plan;
  std::int64_t m_run;
  std::string m_executor;
  std::vector<std::string> m_errors;
  /// The end of an attempt that decided its step, written with the step's
  /// final status by the step_finished that follows at once.
  std::optional<PendingEnd> m_pending;
  /// Steps settled without an attempt (skipped, cached), written together
  /// before the scheduler waits or the next attempt starts: a no-op rerun
  /// of 10,000 cached steps is one commit.
  std::vector<TrackerStore::StatusChange> m_settled;
};

/// Fans every event out to several observers, in order.
class ObserverList final : public RunObserver {
public:
  explicit ObserverList(std::vector<RunObserver*> observers) : m_observers(std::move(observers)) {}

  void step_started(int step, std::int64_t at_ms) override;
  void attempt_started(int step, int attempt, const LaunchSpec& spec, const JobStarted& job,
                       std::int64_t at_ms) override;
  void attempt_finished(int step, int attempt, const AttemptOutcome& outcome, std::int64_t at_ms,
                        std::optional<Millis> retry_in) override;
  void step_finished(int step, StepStatus status, const std::string& reason, std::int64_t at_ms) override;
  void interrupted(int signal, int count) override;
  void before_wait() override;
  std::optional<TimePoint> next_refresh() const override;
  void refresh(TimePoint now) override;

private:
  std::vector<RunObserver*> m_observers;
};

} // namespace kiln::core
