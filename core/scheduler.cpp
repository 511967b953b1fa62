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
  m_group_running.assign(plan.groups.size(), 0);
  m_free_gpus = m_options.gpus;
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
  for (std::size_t i = 0; i < m_steps.size(); ++i) {
    const int step = static_cast<int>(i);
    if (i < m_options.prior_attempts.size()) {
      m_steps[i].prior_attempts = m_options.prior_attempts[i];
    }
    if (i < m_options.kept.size() && m_options.kept[i]) {
      // Done in an earlier session of the run: its record stands as it is.
      m_steps[i].stands_in = true;
      settle(step, StepStatus::succeeded, {});
    } else if (!m_options.selected.empty() && !m_options.selected[i]) {
      m_steps[i].stands_in = true;
      settle(step, StepStatus::skipped, m_options.unselected_reason);
    }
  }
  // (Steps whose needs settled above are in m_newly_ready already.)
  for (std::size_t i = 0; i < m_steps.size(); ++i) {
    if (m_plan.steps[i].needs.empty() && m_steps[i].status == StepStatus::pending) {
      m_newly_ready.push_back(static_cast<int>(i));
    }
  }
  for (;;) {
    prepare_ready();
    start_ready();
    // After a failure (without --keep-going) only steps that run after
    // failures are left in m_ready; after a signal nothing starts.
    const bool more_to_start = m_interrupt_signal == 0 && (!m_ready.empty() || !m_backing_off.empty());
    if (m_running.empty() && !more_to_start) {
      break;
    }
    m_observer.before_wait();
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

  m_observer.before_wait();
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

void Scheduler::prepare_ready() {
  // became_ready may settle a step (skipped, cached), which may add more.
  while (!m_newly_ready.empty()) {
    const int step = m_newly_ready.back();
    m_newly_ready.pop_back();
    if (m_steps[step].status == StepStatus::pending) {
      became_ready(step);
    }
  }
}

void Scheduler::became_ready(int step) {
  if (m_interrupt_signal != 0) {
    return; // cancelled at the end of run()
  }
  const PlannedStep& planned = m_plan.steps[step];
  StepState& state = m_steps[step];
  // With hooks, the condition itself decides (`not failure()` must be able
  // to run); without, the trigger stands for it.
  if (m_hooks == nullptr && planned.trigger == Trigger::failure && !state.failure_upstream) {
    settle(step, StepStatus::skipped, "runs only when a step upstream fails, and none did");
    return;
  }
  if (m_stopping && planned.trigger == Trigger::success) {
    settle(step, StepStatus::skipped,
           "not started: the run stopped after '" + m_first_failure +
               "' failed (--keep-going runs what does not depend on it)");
    return;
  }
  if (m_hooks != nullptr) {
    StartDecision decision =
        m_hooks->prepare(step, state.failure_upstream, [this](int s) { return m_steps[s].status; });
    switch (decision.action) {
    case StartDecision::Action::run: break;
    case StartDecision::Action::skip: settle(step, StepStatus::skipped, decision.reason); return;
    case StartDecision::Action::cached: settle(step, StepStatus::cached, decision.reason); return;
    case StartDecision::Action::fail: fail_step(step, decision.reason); return;
    }
    if (decision.command) {
      m_resolved.emplace_back(step, std::move(*decision.command));
    }
  }
  push_ready(step);
}

void Scheduler::start_ready() {
  auto lower = [this](int a, int b) {
    const auto pa = m_plan.steps[a].priority;
    const auto pb = m_plan.steps[b].priority;
    return pa != pb ? pa < pb : a > b;
  };
  // Variants of a matrix at its max_parallel wait without holding up the
  // steps behind them in the queue.
  std::vector<int> bounded;
  while (m_interrupt_signal == 0 && !m_ready.empty() && static_cast<int>(m_running.size()) < m_options.jobs) {
    const int step = m_ready.front();
    const PlannedStep& planned = m_plan.steps[step];
    if (planned.group >= 0 && m_group_running[planned.group] >= m_plan.groups[planned.group]) {
      std::pop_heap(m_ready.begin(), m_ready.end(), lower);
      m_ready.pop_back();
      bounded.push_back(step);
      continue;
    }
    // Strict priority: when the best step does not fit, wait for room rather
    // than letting smaller ones overtake it for ever.
    if (!m_running.empty() && !fits(planned)) {
      break;
    }
    std::pop_heap(m_ready.begin(), m_ready.end(), lower);
    m_ready.pop_back();
    start_attempt(step);
  }
  for (int step : bounded) {
    push_ready(step);
  }
}

void Scheduler::release_gpus(StepState& state) {
  // Back in the given order, so assignment stays predictable.
  for (std::string& id : state.gpus) {
    m_free_gpus.push_back(std::move(id));
  }
  state.gpus.clear();
  std::sort(m_free_gpus.begin(), m_free_gpus.end(), [this](const std::string& a, const std::string& b) {
    return std::find(m_options.gpus.begin(), m_options.gpus.end(), a) <
           std::find(m_options.gpus.begin(), m_options.gpus.end(), b);
  });
}

bool Scheduler::fits(const PlannedStep& step) const {
  return m_cpus_in_use + step.cpus <= m_options.cpus &&
         (m_options.memory == 0 || m_memory_in_use + step.memory <= m_options.memory) &&
         static_cast<std::size_t>(step.gpus) <= m_free_gpus.size();
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

  const int attempt = state.prior_attempts + state.attempt;
  LaunchSpec spec;
  spec.run_id = m_plan.run_id;
  spec.step_id = planned.id;
  spec.attempt = attempt;
  auto resolved = std::find_if(m_resolved.begin(), m_resolved.end(), [&](const auto& r) { return r.first == step; });
  if (resolved != m_resolved.end()) {
    PlannedStep copy = planned;
    copy.env = resolved->second.env;
    spec.argv = resolved->second.argv;
    spec.env = attempt_environment(m_plan, copy, attempt);
  } else {
    spec.argv = planned.argv;
    spec.env = attempt_environment(m_plan, planned, attempt);
  }
  spec.workdir = planned.workdir;
  auto [out, err] = m_log_paths(step, attempt);
  spec.env.push_back("KILN_OUTPUTS=" + outputs_path(out));
  spec.stdout_path = std::move(out);
  spec.stderr_path = std::move(err);
  spec.cpus = planned.cpus;
  // Taken now, handed back when the attempt ends (or fails to start).
  const auto gpus_taken = static_cast<std::size_t>(std::min<std::size_t>(planned.gpus, m_free_gpus.size()));
  state.gpus.assign(m_free_gpus.begin(), m_free_gpus.begin() + static_cast<std::ptrdiff_t>(gpus_taken));
  m_free_gpus.erase(m_free_gpus.begin(), m_free_gpus.begin() + static_cast<std::ptrdiff_t>(gpus_taken));
  if (planned.gpus > 0) {
    std::string devices;
    for (const std::string& id : state.gpus) {
      devices += (devices.empty() ? "" : ",") + id;
    }
    spec.env.push_back("CUDA_VISIBLE_DEVICES=" + devices);
  }

  auto started = m_executor.start(spec);
  if (!started) {
    release_gpus(state);
    m_observer.attempt_started(step, attempt, spec, JobStarted{}, wall());
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
  m_memory_in_use += planned.memory;
  if (planned.group >= 0) {
    ++m_group_running[planned.group];
  }
  m_observer.attempt_started(step, attempt, spec, *started, wall());
}

void Scheduler::handle_exit(const JobExit& exit) {
  auto it = std::find_if(m_running.begin(), m_running.end(), [&](const auto& r) { return r.first == exit.id; });
  if (it == m_running.end()) {
    return;
  }
  const int step = it->second;
  m_running.erase(it);
  m_cpus_in_use -= m_plan.steps[step].cpus;
  m_memory_in_use -= m_plan.steps[step].memory;
  release_gpus(m_steps[step]);
  if (m_plan.steps[step].group >= 0) {
    --m_group_running[m_plan.steps[step].group];
  }
  StepState& state = m_steps[step];
  state.timeout_at.reset();
  state.kill_at.reset();
  AttemptOutcome outcome;
  if (exit.signal == 0) {
    outcome.exit_code = exit.exit_code;
  }
  outcome.signal = exit.signal;
  outcome.timed_out = state.timed_out;
  const int attempt = state.prior_attempts + state.attempt;
  if (m_collector != nullptr && outcome.succeeded() && !state.cancelling) {
    outcome.error = m_collector->collect(step, attempt);
  }
  if (m_hooks != nullptr && outcome.succeeded() && !state.cancelling) {
    outcome.error = m_hooks->verify(step, attempt);
    outcome.final = !outcome.error.empty();
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
  const int attempt = state.prior_attempts + state.attempt;

  if (state.cancelling) {
    m_observer.attempt_finished(step, attempt, outcome, wall(), std::nullopt);
    settle(step, StepStatus::cancelled, "stopped: runner interrupted by signal " + std::to_string(m_interrupt_signal));
    return;
  }
  if (outcome.succeeded()) {
    m_observer.attempt_finished(step, attempt, outcome, wall(), std::nullopt);
    settle(step, StepStatus::succeeded, {});
    return;
  }
  const bool attempts_left = state.attempt <= planned.retries.limit;
  if (attempts_left && !m_stopping && !outcome.final && retryable(planned.retries, outcome)) {
    Millis delay = backoff_delay(planned.retries, state.attempt + 1);
    if (planned.retries.jitter && delay.count() > 1) {
      // Equal jitter: somewhere in [delay/2, delay], so retries of many
      // steps spread out but never come sooner than half the delay.
      std::uniform_int_distribution<std::int64_t> spread(delay.count() / 2, delay.count());
      delay = Millis(spread(m_random));
    }
    m_observer.attempt_finished(step, attempt, outcome, wall(), delay);
    state.retry_at = m_clock.now() + delay;
    m_backing_off.push_back(step);
    return;
  }
  m_observer.attempt_finished(step, attempt, outcome, wall(), std::nullopt);
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
    reason += " (attempt " + std::to_string(attempt) + " of " +
              std::to_string(state.prior_attempts + planned.retries.limit + 1) + ")";
  }
  fail_step(step, reason);
}

void Scheduler::fail_step(int step, const std::string& reason) {
  if (!m_failed) {
    m_first_failure = m_plan.steps[step].id;
  }
  m_failed = true;
  settle(step, StepStatus::failed, reason);
  if (m_options.keep_going == KeepGoing::no && !m_stopping) {
    m_stopping = true;
    // Steps waiting to retry would only delay the end of a stopped run.
    std::vector<int> waiting;
    waiting.swap(m_backing_off);
    for (int w : waiting) {
      m_steps[w].retry_at.reset();
      settle(w, StepStatus::failed, "not retried: the run stopped after '" + m_first_failure + "' failed");
    }
    // Ready steps that do not run after failures will not start.
    std::vector<int> ready;
    ready.swap(m_ready);
    for (int r : ready) {
      if (m_plan.steps[r].trigger == Trigger::success) {
        settle(r, StepStatus::skipped,
               "not started: the run stopped after '" + m_first_failure +
                   "' failed (--keep-going runs what does not depend on it)");
      } else {
        push_ready(r);
      }
    }
  }
}

void Scheduler::finish_step(int step, StepStatus status, const std::string& reason) {
  m_steps[step].status = status;
  if (!m_steps[step].stands_in || status != StepStatus::succeeded) {
    m_observer.step_finished(step, status, reason, wall());
  }
}

void Scheduler::settle(int step, StepStatus status, const std::string& reason) {
  finish_step(step, status, reason);
  // Depth-first over what this decides downstream: a step that may run only
  // after success is skipped as soon as one of its needs did not succeed,
  // naming that need, and the same then holds for the steps after it.
  std::vector<int> stack{step};
  while (!stack.empty()) {
    const int done = stack.back();
    stack.pop_back();
    const StepState& from = m_steps[done];
    const bool ok = is_success(from.status) || from.stands_in;
    const bool failed_here = from.status == StepStatus::failed || (from.failure_upstream && !ok);
    for (int d : m_dependents[done]) {
      StepState& next = m_steps[d];
      if (next.status != StepStatus::pending) {
        continue;
      }
      next.failure_upstream = next.failure_upstream || failed_here;
      if (!ok && m_interrupt_signal != 0) {
        continue; // cancelled at the end of run(), as everything not started
      }
      if (!ok && m_plan.steps[d].trigger == Trigger::success) {
        const std::string what = from.status == StepStatus::failed      ? "failed"
                                 : from.status == StepStatus::cancelled ? "was cancelled"
                                                                        : "was skipped";
        finish_step(d, StepStatus::skipped, "needs '" + m_plan.steps[done].id + "', which " + what);
        stack.push_back(d);
        continue;
      }
      if (--next.unfinished_needs == 0) {
        m_newly_ready.push_back(d);
      }
    }
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
  std::vector<int> waiting;
  waiting.swap(m_backing_off);
  for (int step : waiting) {
    m_steps[step].retry_at.reset();
    settle(step, StepStatus::cancelled, "run interrupted while waiting to retry");
  }
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
