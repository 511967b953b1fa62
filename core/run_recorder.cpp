#include "core/run_recorder.hpp"

namespace kiln::core {

RunRecorder::RunRecorder(TrackerStore& store, const Plan& plan, std::int64_t run_number, std::string executor)
    : m_store(store), m_plan(plan), m_run(run_number), m_executor(std::move(executor)) {}

void RunRecorder::check(const Expected<void>& result) {
  if (!result) {
    m_errors.push_back(result.error());
  }
}

// A step goes running with its first attempt: begin_attempt records both.
void RunRecorder::attempt_started(int step, int attempt, const LaunchSpec& spec, const JobStarted& job,
                                  std::int64_t at_ms) {
  before_wait();
  AttemptStart start;
  start.pid = job.pid;
  start.executor = m_executor;
  start.handle = job.handle;
  start.started_ms = at_ms;
  start.stdout_path = spec.stdout_path;
  start.stderr_path = spec.stderr_path;
  check(m_store.begin_attempt(m_run, m_plan.steps[step].id, attempt, start));
}

void RunRecorder::attempt_finished(int step, int attempt, const AttemptOutcome& outcome, std::int64_t at_ms,
                                   std::optional<Millis> retry_in) {
  AttemptEnd end;
  end.exit_code = outcome.exit_code;
  end.signal = outcome.signal;
  end.timed_out = outcome.timed_out;
  end.ended_ms = at_ms;
  end.error = outcome.error;
  if (retry_in) {
    check(m_store.end_attempt(m_run, m_plan.steps[step].id, attempt, end));
    return;
  }
  m_pending = PendingEnd{step, attempt, std::move(end)};
}

void RunRecorder::step_finished(int step, StepStatus status, const std::string& reason, std::int64_t at_ms) {
  if (status == StepStatus::cached) {
    return; // written by the StepDecider with the cache decision, in one UPDATE of the row
  }
  if (m_pending && m_pending->step == step) {
    const StepEnd step_end{status, reason};
    check(m_store.end_attempt(m_run, m_plan.steps[step].id, m_pending->attempt, m_pending->end, &step_end));
    m_pending.reset();
    return;
  }
  m_settled.push_back({m_plan.steps[step].id, status, at_ms, reason});
}

void RunRecorder::before_wait() {
  if (!m_settled.empty()) {
    check(m_store.set_step_statuses(m_run, m_settled));
    m_settled.clear();
  }
}

void ObserverList::step_started(int step, std::int64_t at_ms) {
  for (auto* o : m_observers) {
    o->step_started(step, at_ms);
  }
}

void ObserverList::attempt_started(int step, int attempt, const LaunchSpec& spec, const JobStarted& job,
                                   std::int64_t at_ms) {
  for (auto* o : m_observers) {
    o->attempt_started(step, attempt, spec, job, at_ms);
  }
}

void ObserverList::attempt_finished(int step, int attempt, const AttemptOutcome& outcome, std::int64_t at_ms,
                                    std::optional<Millis> retry_in) {
  for (auto* o : m_observers) {
    o->attempt_finished(step, attempt, outcome, at_ms, retry_in);
  }
}

void ObserverList::step_finished(int step, StepStatus status, const std::string& reason, std::int64_t at_ms) {
  for (auto* o : m_observers) {
    o->step_finished(step, status, reason, at_ms);
  }
}

void ObserverList::interrupted(int signal, int count) {
  for (auto* o : m_observers) {
    o->interrupted(signal, count);
  }
}

void ObserverList::before_wait() {
  for (auto* o : m_observers) {
    o->before_wait();
  }
}

std::optional<TimePoint> ObserverList::next_refresh() const {
  std::optional<TimePoint> nearest;
  for (auto* o : m_observers) {
    auto t = o->next_refresh();
    if (t && (!nearest || *t < *nearest)) {
      nearest = t;
    }
  }
  return nearest;
}

void ObserverList::refresh(TimePoint now) {
  for (auto* o : m_observers) {
    if (auto t = o->next_refresh(); t && *t <= now) {
      o->refresh(now);
    }
  }
}

} // namespace kiln::core
