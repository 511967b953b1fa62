#include "core/scheduler.hpp"

#include <algorithm>
#include <cassert>

namespace kiln::core {

Scheduler::Scheduler(const Plan& plan, Executor& executor, const Clock& clock, RunObserver& observer,
                     LogPaths log_paths, SchedulerOptions options)
    : m_plan(plan), m_executor(executor), m_clock(clock), m_observer(observer), m_log_paths(std::move(log_paths)),
      m_options(options), m_random(options.seed), m_steps(plan.steps.size()), m_dependents(plan.steps.size()) {
  m_options.jobs = std::max(1, m_options.jobs);
  m_options.cpus = std::max(1, m_options.cpus);
  for (std::size_t i = 0; i < plan.steps.size(); ++i) {
    m_steps[i].unfinished_needs = static_cast<int>(plan.steps[i].needs.size());
    for (int dep : plan.steps[i].needs) {
      m_dependents[dep].push_back(static_cast<int>(i));
    }
  }
}

Millis Scheduler::backoff_delay(const RetryPolicy& policy, int next_attempt) {
  Millis delay = policy.delay;
  if (policy.backoff == Backoff::exponential) {
    // delay * 2^(retry - 1), saturating well before overflow.
    for (int i = 2; i < next_attempt && delay < policy.max_delay; ++i) {
      delay *= 2;
    }
  }
  return std::min(delay, policy.max_delay);
}

RunResult Scheduler::run() {
  if (!m_options.selected.empty()) {
    for (std::size_t i = 0; i < m_steps.size(); ++i) {
      if (!m_options.selected[i]) {
        finish_step(static_cast<int>(i), StepStatus::skipped, m_options.unselected_reason);
        for (int d : m_dependents[i]) {
          --m_steps[d].unfinished_needs;
        }
      }
    }
  }
  for (std::size_t i = 0; i < m_steps.size(); ++i) {
    if (m_steps[i].unfinished_needs == 0 && m_steps[i].status == StepStatus::pending) {
      push_ready(static_cast<int>(i));
    }
  }
  for (;;) {
    start_ready();
    const bool more_to_start = !m_stopping && (!m_ready.empty() || !m_backing_off.empty());
    if (m_running.empty() && !more_to_start) {
      break;
    }
    auto deadline = nearest_deadline();
    WaitResult events = m_executor.wait(deadline);
    for (const auto& exit : events.exits) {
      handle_exit(exit);
    }
    for (int signal : events.interrupts) {
      handle_interrupt(signal);
    }
    handle_deadlines();
  }

  // Whatever never started: cancelled when interrupted, else skipped
  // because the run stopped after a failure.
  for (std::size_t i = 0; i < m_steps.size(); ++i) {
    if (m_steps[i].status == StepStatus::pending) {
      if (m_interrupt_signal != 0) {
        finish_step(static_cast<int>(i), StepStatus::cancelled, "run interrupted before it started");
      } else {
        finish_step(static_cast<int>(i), StepStatus::skipped,
                    "not started: the run stopped after '" + m_first_failure +
                        "' failed (--keep-going runs what does not depend on it)");
      }
    }
  }

  RunResult result;
  for (const auto& s : m_steps) {
    result.steps.push_back(s.status);
  }
  if (m_interrupt_signal != 0) {
    result.status = RunStatus::cancelled;
    result.exit_code = 128 + m_interrupt_signal;
  } else if (m_failed) {
    result.status = RunStatus::failed;
    result.exit_code = 1;
  }
  return result;
}

void Scheduler::push_ready(int step) {
  auto lower = [this](int a, int b) {
    const auto pa = m_plan.steps[a].priority;
    const auto pb = m_plan.steps[b].priority;
    return pa != pb ? pa < pb : a > b;
  };
  m_ready.push_back(step);
  std::push_heap(m_ready.begin(), m_ready.end(), lower);
}

void Scheduler::start_ready() {
  auto lower = [this](int a, int b) {
    const auto pa = m_plan.steps[a].priority;
    const auto pb = m_plan.steps[b].priority;
    return pa != pb ? pa < pb : a > b;
  };
  while (!m_stopping && !m_ready.empty() && static_cast<int>(m_running.size()) < m_options.jobs) {
    const int step = m_ready.front();
    const int cpus = m_plan.steps[step].cpus;
    // Strict priority: when the best step does not fit, wait for room rather
    // than letting smaller ones overtake it for ever.
    if (!m_running.empty() && m_cpus_in_use + cpus > m_options.cpus) {
      break;
    }
    std::pop_heap(m_ready.begin(), m_ready.end(), lower);
    m_ready.pop_back();
    start_attempt(step);
  }
}

void Scheduler::start_attempt(int step) {
  StepState& state = m_steps[step];
  const PlannedStep& planned = m_plan.steps[step];
  if (state.attempt == 0) {
    state.status = StepStatus::running;
    m_observer.step_started(step, wall());
  }
  ++state.attempt;
  state.timed_out = false;
  state.retry_at.reset();

  LaunchSpec spec;
  spec.run_id = m_plan.run_id;
  spec.step_id = planned.id;
  spec.attempt = state.attempt;
  spec.argv = planned.argv;
  spec.workdir = planned.workdir;
  spec.env = attempt_environment(m_plan, planned, state.attempt);
  auto [out, err] = m_log_paths(step, state.attempt);
  spec.stdout_path = std::move(out);
  spec.stderr_path = std::move(err);
  spec.cpus = planned.cpus;

  auto started = m_executor.start(spec);
  if (!started) {
    m_observer.attempt_started(step, state.attempt, spec, JobStarted{}, wall());
    AttemptOutcome outcome;
    outcome.error = started.error();
    attempt_ended(step, outcome);
    return;
  }
  state.job = started->id;
  if (planned.timeout) {
    state.timeout_at = m_clock.now() + *planned.timeout;
  }
  m_running.emplace_back(state.job, step);
  m_cpus_in_use += planned.cpus;
  m_observer.attempt_started(step, state.attempt, spec, *started, wall());
}

void Scheduler::handle_exit(const JobExit& exit) {
  auto it = std::find_if(m_running.begin(), m_running.end(), [&](const auto& r) { return r.first == exit.id; });
  if (it == m_running.end()) {
    return;
  }
  const int step = it->second;
  m_running.erase(it);
  m_cpus_in_use -= m_plan.steps[step].cpus;
  StepState& state = m_steps[step];
  state.timeout_at.reset();
  state.kill_at.reset();
  AttemptOutcome outcome;
  if (exit.signal == 0) {
    outcome.exit_code = exit.exit_code;
  }
  outcome.signal = exit.signal;
  outcome.timed_out = state.timed_out;
  if (m_collector != nullptr && outcome.succeeded() && !state.cancelling) {
    outcome.error = m_collector->collect(step, state.attempt);
  }
  attempt_ended(step, outcome);
}

bool Scheduler::retryable(const RetryPolicy& policy, const AttemptOutcome& outcome) const {
  if (outcome.timed_out) {
    return policy.on_timeout;
  }
  if (policy.on_failure) {
    return true;
  }
  return outcome.exit_code &&
         std::find(policy.exit_codes.begin(), policy.exit_codes.end(), *outcome.exit_code) != policy.exit_codes.end();
}

void Scheduler::attempt_ended(int step, const AttemptOutcome& outcome) {
  StepState& state = m_steps[step];
  const PlannedStep& planned = m_plan.steps[step];

  if (state.cancelling) {
    m_observer.attempt_finished(step, state.attempt, outcome, wall(), std::nullopt);
    finish_step(step, StepStatus::cancelled,
                "stopped: runner interrupted by signal " + std::to_string(m_interrupt_signal));
    return;
  }
  if (outcome.succeeded()) {
    m_observer.attempt_finished(step, state.attempt, outcome, wall(), std::nullopt);
    finish_step(step, StepStatus::succeeded, {});
    release_dependents(step);
    return;
  }
  const bool attempts_left = state.attempt <= planned.retries.limit;
  if (attempts_left && !m_stopping && retryable(planned.retries, outcome)) {
    Millis delay = backoff_delay(planned.retries, state.attempt + 1);
    if (planned.retries.jitter && delay.count() > 1) {
      // Equal jitter: somewhere in [delay/2, delay], so retries of many
      // steps spread out but never come sooner than half the delay.
      std::uniform_int_distribution<std::int64_t> spread(delay.count() / 2, delay.count());
      delay = Millis(spread(m_random));
    }
    m_observer.attempt_finished(step, state.attempt, outcome, wall(), delay);
    state.retry_at = m_clock.now() + delay;
    m_backing_off.push_back(step);
    return;
  }
  m_observer.attempt_finished(step, state.attempt, outcome, wall(), std::nullopt);
  std::string reason;
  if (!outcome.error.empty()) {
    reason = outcome.error;
  } else if (outcome.timed_out) {
    reason = "timed out";
  } else if (outcome.signal != 0) {
    reason = "killed by signal " + std::to_string(outcome.signal);
  } else {
    reason = "exit code " + std::to_string(outcome.exit_code.value_or(-1));
  }
  if (state.attempt > 1) {
    reason += " (attempt " + std::to_string(state.attempt) + " of " + std::to_string(planned.retries.limit + 1) + ")";
  }
  finish_step(step, StepStatus::failed, reason);
  if (!m_failed) {
    m_first_failure = planned.id;
  }
  m_failed = true;
  skip_dependents(step);
  if (m_options.keep_going == KeepGoing::no) {
    m_stopping = true;
    // Steps waiting to retry would only delay the end of a stopped run.
    for (int waiting : m_backing_off) {
      m_steps[waiting].retry_at.reset();
      finish_step(waiting, StepStatus::failed, "not retried: the run stopped after '" + m_first_failure + "' failed");
    }
    m_backing_off.clear();
  }
}

void Scheduler::finish_step(int step, StepStatus status, const std::string& reason) {
  m_steps[step].status = status;
  m_observer.step_finished(step, status, reason, wall());
}

void Scheduler::release_dependents(int step) {
  for (int d : m_dependents[step]) {
    if (--m_steps[d].unfinished_needs == 0 && m_steps[d].status == StepStatus::pending) {
      push_ready(d);
    }
  }
}

void Scheduler::skip_dependents(int step) {
  // Depth-first over everything downstream; each is skipped once, naming
  // the step whose failure it inherits.
  std::vector<int> stack(m_dependents[step].begin(), m_dependents[step].end());
  const std::string reason = "needs '" + m_plan.steps[step].id + "', which failed";
  while (!stack.empty()) {
    const int d = stack.back();
    stack.pop_back();
    if (m_steps[d].status != StepStatus::pending) {
      continue;
    }
    finish_step(d, StepStatus::skipped, reason);
    stack.insert(stack.end(), m_dependents[d].begin(), m_dependents[d].end());
  }
}

void Scheduler::handle_interrupt(int signal) {
  ++m_interrupt_count;
  m_observer.interrupted(signal, m_interrupt_count);
  const bool first = m_interrupt_signal == 0;
  if (first) {
    m_interrupt_signal = signal;
  }
  m_stopping = true;
  const auto now = m_clock.now();
  for (const auto& [job, step] : m_running) {
    StepState& state = m_steps[step];
    state.cancelling = true;
    state.timeout_at.reset();
    if (first) {
      m_executor.stop(job, StopMode::terminate);
      state.kill_at = now + m_plan.steps[step].kill_after;
    } else {
      // A second Ctrl-C: no more patience.
      m_executor.stop(job, StopMode::kill);
      state.kill_at.reset();
    }
  }
  for (int step : m_backing_off) {
    m_steps[step].retry_at.reset();
    finish_step(step, StepStatus::cancelled, "run interrupted while waiting to retry");
  }
  m_backing_off.clear();
}

void Scheduler::handle_deadlines() {
  const auto now = m_clock.now();
  for (const auto& [job, step] : m_running) {
    StepState& state = m_steps[step];
    if (state.timeout_at && *state.timeout_at <= now) {
      state.timeout_at.reset();
      state.timed_out = true;
      m_executor.stop(job, StopMode::terminate);
      state.kill_at = now + m_plan.steps[step].kill_after;
    } else if (state.kill_at && *state.kill_at <= now) {
      state.kill_at.reset();
      m_executor.stop(job, StopMode::kill);
    }
  }
  for (auto it = m_backing_off.begin(); it != m_backing_off.end();) {
    StepState& state = m_steps[*it];
    if (state.retry_at && *state.retry_at <= now) {
      state.retry_at.reset();
      push_ready(*it);
      it = m_backing_off.erase(it);
    } else {
      ++it;
    }
  }
  if (auto refresh = m_observer.next_refresh(); refresh && *refresh <= now) {
    m_observer.refresh(now);
  }
}

std::optional<TimePoint> Scheduler::nearest_deadline() const {
  std::optional<TimePoint> nearest = m_observer.next_refresh();
  auto consider = [&nearest](const std::optional<TimePoint>& t) {
    if (t && (!nearest || *t < *nearest)) {
      nearest = t;
    }
  };
  for (const auto& [job, step] : m_running) {
    consider(m_steps[step].timeout_at);
    consider(m_steps[step].kill_at);
  }
  for (int step : m_backing_off) {
    consider(m_steps[step].retry_at);
  }
  return nearest;
}

} // namespace kiln::core
