#pragma once
// Decides, as each step becomes ready, whether it runs: its `when:`
// condition over params, upstream statuses, outputs and metrics; then, for a
// cached step, whether an earlier success with the same key can stand for
// it (outputs in place, or restored from the artifact store, as DVC's run
// cache does). It renders commands that use upstream values, and checks an
// evaluate step's gate once it has recorded its metrics.
//
// Decisions happen inside the scheduler's loop; what they record (keys,
// cached steps' copies, the hash memo) is written in one transaction per
// loop turn (before_wait), so 10,000 cached steps cost one commit rather
// than 10,000. Lookups within a turn read what the decider holds, not the
// store.
//
// A new run decides some steps ahead, while it is being recorded: a cached
// step whose key needs nothing from this run (no condition, gate or steps.*
// value; every need decided cached ahead too; no input or output that must
// be read, since the store's write lock is held; nothing to restore). Its
// row is then written once, already cached, in the run's own transaction.
// A no-op rerun is decided entirely ahead; the loop only reports it.

#include "core/expression.hpp"
#include "core/input_files.hpp"
#include "core/plan.hpp"
#include "core/scheduler.hpp"
#include "core/step_cache.hpp"
#include "core/tracker_store.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::core {

/// Whether an earlier success with `key` can stand for `step` now.
struct CacheLookup {
  enum class State {
    /// No earlier success with this key (or it recorded no outputs).
    miss,
    /// Its outputs are in place and unchanged.
    hit,
    /// Some outputs are gone, and all of those are in the artifact store.
    restorable,
    /// An output differs from what it produced (changed by hand?), or a
    /// gone one is not in the artifact store: the step must run.
    stale,
  };
  State state = State::miss;
  CacheHit hit;
  /// restorable: the outputs to restore.
  std::vector<ArtifactRecord> missing;
  /// stale: which output, and why.
  std::string problem;
};
/// What cache lookups read from the store, read in bulk: the keys of the
/// workflow's previous run, which a rerun's steps mostly match, and the
/// declared outputs of earlier executions, a whole run at a time. A query
/// per cached step would cost more than everything else a no-op rerun does.
class CacheIndex {
public:
  /// `workflow`'s newest run before `before_run` is the one read first.
  CacheIndex(TrackerStore& store, std::string workflow, std::int64_t before_run)
      : m_store(store), m_workflow(std::move(workflow)), m_before_run(before_run) {}
  /// An earlier success of `step` with `key`, in a run other than
  /// `except_run` (outputs not filled): the one the previous run's step
  /// stands for when its key is the same, else the newest in the store.
  Expected<std::optional<CacheHit>> find(const std::string& step, const std::string& key, std::int64_t except_run);
  /// The declared outputs an execution recorded (every kind but logged).
  Expected<const std::vector<ArtifactRecord>*> outputs(std::int64_t run, const std::string& step);

private:
  TrackerStore& m_store;
  std::string m_workflow;
  std::int64_t m_before_run;
  bool m_loaded = false;
  /// The previous run's keyed steps, by id.
  std::unordered_map<std::string, KeyedStep> m_latest;
  std::unordered_map<std::int64_t, std::unordered_map<std::string, std::vector<ArtifactRecord>>> m_runs;
};

Expected<CacheLookup> look_up_cache(TrackerStore& store, CacheIndex& index, FileHasher& hasher, const PlannedStep& step,
                                    const std::string& key, std::int64_t except_run);

class StepDecider final : public StepHooks, public RunObserver {
public:
  /// `forced`: per step, run even when cached (empty = none).
  StepDecider(TrackerStore& store, const Plan& plan, std::string workflow_name, std::vector<char> forced,
              InMemoryHashMemo& memo);

  /// Takes the recorded keys of the steps marked (kept from an earlier
  /// session of a resumed run), for the keys of the steps after them.
  void adopt_recorded(const std::vector<char>& kept);

  /// Decides ahead what can be (see the top of this file), for a run being
  /// recorded: per step, its settled decision (at `now_ms`), or nothing
  /// for a step left to the loop. `selected` as SchedulerOptions::selected.
  std::vector<std::optional<CacheDecision>> decide_ahead(const std::vector<char>& selected, std::int64_t now_ms);
  /// Starts stating, on a second thread, the plain inputs and the declared
  /// outputs of the steps decide_ahead may decide, in the order it will ask
  /// for them, so that the stats overlap what comes before and between
  /// them (loading the memo, computing keys). decide_ahead uses what is
  /// taken by then, stats the rest itself, and stops the thread.
  void prefetch_stats();
  /// After decide_ahead: when it decided every step cached, each from plain
  /// input files (no glob, no directory) and outputs the hash memo vouched
  /// for, those files with the stamps vouched for, in plan order: what a
  /// replay of this run rests on (ReplayBasis). Otherwise nothing.
  std::optional<StampedFiles> replay_files() const;

  StartDecision prepare(int step, bool failure_upstream, const std::function<StepStatus(int)>& status) override;
  std::string verify(int step, int attempt) override;
  /// A cached step's status is written with its cache decision (the
  /// RunRecorder leaves cached steps alone).
  void step_finished(int step, StepStatus status, const std::string& reason, std::int64_t at_ms) override;
  void before_wait() override { flush(); }

  /// Writes what is held; called at the end of the run too. Errors are
  /// kept in errors().
  void flush();
  const std::vector<std::string>& errors() const { return m_errors; }

private:
  /// Where a step's outputs and metrics are read: its own record, or for a
  /// cached step the execution it stands for.
  struct Source {
    std::int64_t run = 0;
    std::string step;
  };
  Source source_of(int step) const;
  std::optional<int> index_of(std::string_view id) const;
  /// The value of steps.ID.FIELD[.NAME] for conditions (null when absent).
  std::variant<ExprValue, std::string> step_value(const std::vector<std::string>& path,
                                                  const std::function<StepStatus(int)>& status);
  /// steps.PATH as text for a command.
  Expected<std::string> step_text(std::string_view path, const std::function<StepStatus(int)>& status);
  std::optional<std::string> output_of(int step, const std::string& name);
  std::optional<double> metric_of(int step, const std::string& name);
  ExprValue param_value(const std::string& name) const;
  std::string where(const Condition& condition) const;
  StartDecision decide_cache(int step, const std::vector<std::pair<std::string, std::string>>& values);
  /// The step's key (kept in m_keys) into `record`, and the earlier
  /// execution that may stand for it (hit or restorable), if any.
  std::optional<CacheLookup> find_source(int step, const std::vector<std::pair<std::string, std::string>>& values,
                                         CacheDecision& record);
  /// Takes `lookup`'s execution as the step's: the decision, and its source in `record`.
  StartDecision stand_in(int step, const CacheLookup& lookup, CacheDecision& record);
  /// KILN_NEEDS_JSON for a step about to run: each need's status, matrix
  /// values, outputs and last metric values (how a step after a matrix picks
  /// the best variant).
  void write_needs(int step, const std::function<StepStatus(int)>& status);

  TrackerStore& m_store;
  const Plan& m_plan;
  std::string m_workflow;
  std::vector<char> m_forced;
  FileHasher m_hasher;
  InMemoryHashMemo& m_memo;
  CacheIndex m_cache_index;
  std::unordered_map<std::string_view, int> m_index;
  /// Per step: its key ("" none), and for a cached step where it came from.
  std::vector<std::string> m_keys;
  std::vector<std::optional<Source>> m_cached_from;
  /// Per step decided ahead: its decision, already recorded.
  std::vector<std::optional<StartDecision>> m_ahead;
  /// prefetch_stats(): the stats, and per step its paths' range in them.
  std::unique_ptr<StatPrefetch> m_prefetch;
  std::vector<std::pair<std::size_t, std::size_t>> m_prefetched;
  /// Per step, the steps.* values its command used (part of its key).
  std::vector<std::vector<std::pair<std::string, std::string>>> m_values;
  std::vector<CacheDecision> m_pending;
  /// Per step, its decision's index in m_pending while it is there, else -1.
  std::vector<int> m_pending_of;
  std::vector<std::string> m_errors;
};

} // namespace kiln::core
