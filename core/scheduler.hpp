#pragma once
// The scheduler runs a plan as a dependency graph on an executor. One thread,
// one loop, as in ninja: start what may start, wait for the next event (a job
// ending, the nearest deadline, a signal to the runner) with the nearest
// deadline as the timeout, handle it, repeat. Deadlines are step timeouts,
// SIGKILL escalations after a grace, retry back-offs, and observer refreshes.
// Ready steps start in order of the longest chain of work behind them.
// Everything outside (processes, time, records, the console) is behind the
// Executor, Clock and RunObserver interfaces, so tests run it in microseconds.

#include "core/executor.hpp"
#include "core/plan.hpp"
#include "core/run_status.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace kiln::core {

enum class KeepGoing { no, yes };

struct SchedulerOptions {
  /// At most this many steps at once.
  int jobs = 1;
  /// Sum of running steps' resources.cpus; a step asking more than this runs
  /// alone.
  int cpus = 1;
  /// Bytes the running steps' resources.memory may add up to; 0 = no limit.
  std::int64_t memory = 0;
  /// The GPUs steps are given (CUDA device ids); a step asking for N gets N
  /// of them to itself, named in its CUDA_VISIBLE_DEVICES. Callers check
  /// that no step asks for more than there are.
  std::vector<std::string> gpus;
  KeepGoing keep_going = KeepGoing::no;
  /// Seeds retry jitter, so tests are repeatable.
  std::uint64_t seed = 0;
  /// A partial run: per step, whether it runs (see select_steps); empty =
  /// all. A step left out is recorded skipped with `unselected_reason`, and
  /// the steps needing it start as if it had succeeded.
  std::vector<char> selected;
  std::string unselected_reason;
  /// A resumed run: per step, whether it already succeeded (or was cached)
  /// in an earlier session of the run; such a step is taken as done and not
  /// reported again. Empty = none.
  std::vector<char> kept;
  /// Per step, attempts made by earlier sessions of the run: this session's
  /// attempts are numbered after them. Empty = none.
  std::vector<int> prior_attempts;
};

/// How one attempt ended.
struct AttemptOutcome {
  std::optional<int> exit_code;
  int signal = 0;
  bool timed_out = false;
  /// Set when the job could not start at all.
  std::string error;
  /// The attempt failed in a way retrying cannot mend (a gate).
  bool final = false;
  bool succeeded() const { return error.empty() && !timed_out && exit_code == 0; }
};

/// Told of every state change, in order, as it happens.
class RunObserver {
public:
  virtual ~RunObserver() = default;
  virtual void step_started(int /*step*/, std::int64_t /*at_ms*/) {}
  virtual void attempt_started(int /*step*/, int /*attempt*/, const LaunchSpec& /*spec*/, const JobStarted& /*job*/,
                               std::int64_t /*at_ms*/) {}
  /// `retry_in` is set when another attempt will follow after that delay;
  /// when it is not, step_finished for the same step follows at once.
  virtual void attempt_finished(int /*step*/, int /*attempt*/, const AttemptOutcome& /*outcome*/,
                                std::int64_t /*at_ms*/, std::optional<Millis> /*retry_in*/) {}
  virtual void step_finished(int /*step*/, StepStatus /*status*/, const std::string& /*reason*/,
                             std::int64_t /*at_ms*/) {}
  /// The runner was asked to stop by `signal`; `count` is how many times so far.
  virtual void interrupted(int /*signal*/, int /*count*/) {}
  /// The scheduler is about to wait for the next event: a moment to write
  /// what was batched in this turn of the loop. Also called when the run ends.
  virtual void before_wait() {}
  /// When the observer next wants refresh() called (a status line's clock).
  virtual std::optional<TimePoint> next_refresh() const { return std::nullopt; }
  virtual void refresh(TimePoint /*now*/) {}
};

/// Gathers what a step produced (metrics file, declared outputs...) once its
/// command has exited 0, and may still fail the attempt: a declared output
/// that is missing or points outside the workdir, a malformed metrics file.
/// Such a failure is an ordinary failed attempt, retried under the step's
/// policy like a non-zero exit.
class OutputCollector {
public:
  virtual ~OutputCollector() = default;
  /// "" when the attempt stands as succeeded; else why it failed.
  virtual std::string collect(int step, int attempt) = 0;
};

/// A command resolved when its step starts (it used upstream outputs or
/// metrics): what replaces the plan's argv, display command and own env.
struct ResolvedCommand {
  std::vector<std::string> argv;
  std::string display;
  std::vector<std::string> env;
};

/// What happens to a step whose needs have all finished.
struct StartDecision {
  enum class Action { run, skip, cached, fail };
  Action action = Action::run;
  /// Why it is skipped, cached or failed.
  std::string reason;
  /// Set when the plan's command is replaced.
  std::optional<ResolvedCommand> command;
};

/// Decisions the scheduler leaves to the caller: whether a ready step runs
/// (its `when:` condition, a cache hit) and with which command, and whether
/// a successful attempt stands (a quality gate). Called from the loop.
class StepHooks {
public:
  virtual ~StepHooks() = default;
  /// `failure_upstream`: some step upstream failed. `status` gives any
  /// step's current status.
  virtual StartDecision prepare(int step, bool failure_upstream, const std::function<StepStatus(int)>& status) = 0;
  /// After an attempt exited 0 and its outputs were collected: "" when the
  /// step succeeds; else why it fails, for good (no retry: a gate measures
  /// a model, and measuring again gives the same answer).
  virtual std::string verify(int step, int attempt) = 0;
};

/// Where an attempt's output goes: {stdout path, stderr path}.
using LogPaths = std::function<std::pair<std::string, std::string>(int step, int attempt)>;

struct RunResult {
  RunStatus status = RunStatus::succeeded;
  /// 0 all succeeded, 1 a step failed, 128+signal when interrupted.
  int exit_code = 0;
  std::vector<StepStatus> steps;
};

class Scheduler {
public:
  Scheduler(const Plan& plan, Executor& executor, const Clock& clock, RunObserver& observer, LogPaths log_paths,
            SchedulerOptions options);
  /// Consulted for every attempt that exits 0; none by default.
  void set_collector(OutputCollector* collector) { m_collector = collector; }
  /// Consulted for every step that becomes ready and every attempt that
  /// succeeds; none by default (every ready step runs as planned).
  void set_hooks(StepHooks* hooks) { m_hooks = hooks; }
  RunResult run();

  /// The delay before attempt `next_attempt` (2 for the first retry), before jitter.
  static Millis backoff_delay(const RetryPolicy& policy, int next_attempt);

private:
  struct StepState {
    StepStatus status = StepStatus::pending;
    int unfinished_needs = 0;
    int attempt = 0;
    JobId job = 0;
    bool timed_out = false;
    bool cancelling = false;
    /// A step upstream failed (directly, or through steps skipped for it).
    bool failure_upstream = false;
    /// Counts as succeeded for the steps needing it: left out of a partial
    /// run, or kept from an earlier session of a resumed run.
    bool stands_in = false;
    /// Attempts of earlier sessions of the run.
    int prior_attempts = 0;
    /// The GPUs given to the running attempt.
    std::vector<std::string> gpus;
    std::optional<TimePoint> timeout_at;
    std::optional<TimePoint> kill_at;
    std::optional<TimePoint> retry_at;
  };

  void prepare_ready();
  void became_ready(int step);
  void start_ready();
  /// Whether the step's cpus, memory and GPUs fit beside what runs now.
  bool fits(const PlannedStep& step) const;
  void release_gpus(StepState& state);
  void start_attempt(int step);
  void handle_exit(const JobExit& exit);
  void attempt_ended(int step, const AttemptOutcome& outcome);
  void handle_interrupt(int signal);
  void handle_deadlines();
  void finish_step(int step, StepStatus status, const std::string& reason);
  /// finish_step, then tells the steps downstream: those that may not run
  /// after it are skipped at once (and so on down), the others count it
  /// as done and join m_newly_ready when nothing else is left.
  void settle(int step, StepStatus status, const std::string& reason);
  /// A step failed for good: settle it, and stop the run unless --keep-going.
  void fail_step(int step, const std::string& reason);
  void push_ready(int step);
  bool retryable(const RetryPolicy& policy, const AttemptOutcome& outcome) const;
  std::optional<TimePoint> nearest_deadline() const;
  std::int64_t wall() const { return m_clock.wall_ms(); }

  const Plan& m_plan;
  Executor& m_executor;
  const Clock& m_clock;
  RunObserver& m_observer;
  OutputCollector* m_collector = nullptr;
  StepHooks* m_hooks = nullptr;
  LogPaths m_log_paths;
  SchedulerOptions m_options;
  std::mt19937_64 m_random;

  std::vector<StepState> m_steps;
  std::vector<std::vector<int>> m_dependents;
  /// Steps whose needs have all finished, not yet prepared.
  std::vector<int> m_newly_ready;
  /// Commands resolved at start (see StepHooks::prepare), by step; sparse.
  std::vector<std::pair<int, ResolvedCommand>> m_resolved;
  /// Max-heap of ready steps by priority, then file order.
  std::vector<int> m_ready;
  std::vector<int> m_backing_off;
  /// Running steps by job id (few: at most `jobs`).
  std::vector<std::pair<JobId, int>> m_running;
  int m_cpus_in_use = 0;
  std::int64_t m_memory_in_use = 0;
  /// GPUs no running step holds, in the order given.
  std::vector<std::string> m_free_gpus;
  /// Running variants per bounded matrix (Plan::groups).
  std::vector<int> m_group_running;
  bool m_failed = false;
  /// No new step starts: after a failure without --keep-going, or a signal.
  bool m_stopping = false;
  int m_interrupt_signal = 0;
  int m_interrupt_count = 0;
  std::string m_first_failure;
};

} // namespace kiln::core
