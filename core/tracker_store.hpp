#pragma once
// The local tracker: one SQLite file (<store dir>/kiln.db) recording every
// run, step and attempt of `kiln run`.
//
// Model: each call is one short transaction, committed before it returns, so
// a runner killed at any point leaves a store that opens and tells the truth
// up to its last call. Writers take the lock up front (BEGIN IMMEDIATE) and
// wait on a 30 s busy timeout, so many `kiln run` processes can share one
// store. The schema version lives in PRAGMA user_version and moves forward
// through an ordered list of migrations (see tracker_store.cpp); a store
// written by a newer kiln is refused rather than misread.
//
// JSON (to_json below, printed by `kiln runs show --output json`): statuses
// are their to_string names, times are integer milliseconds since the Unix
// epoch, and a value that is absent is null.

#include "core/artifact_store.hpp"
#include "core/expected.hpp"
#include "core/input_files.hpp"
#include "core/run_status.hpp"
#include "core/search_filter.hpp"
#include "core/sqlite.hpp"
#include "core/tracking.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln::core {

/// Who runs a run: enough to tell later whether that process is still alive.
struct RunnerIdentity {
  std::string host;
  std::int64_t pid = 0;
  /// The process's start time in clock ticks since boot (/proc/<pid>/stat
  /// field 22), so a recycled pid is not mistaken for the runner.
  std::int64_t start_ticks = 0;
};

/// The cache key a step had in a run and what it covers.
struct StepCache {
  std::string key;
  /// JSON object: component name -> value (see core/step_cache.hpp).
  std::string components_json;
  /// For a cached step: the run whose execution it stands for.
  std::optional<std::int64_t> cached_from;
};

/// A step's key, and when it was found cached, where from.
struct CacheDecision {
  std::string step;
  StepCache cache;
  /// With cache.cached_from: the step in that run (the same id, unless renamed).
  std::string from_step;
  /// Set once the step is settled cached: its status (cached), end time and
  /// reason are written with the decision, in the same UPDATE of its row.
  bool settled = false;
  std::int64_t settled_ms = 0;
  std::string reason;
};

struct NewStep {
  std::string id;
  std::string kind;
  /// Display text of the command.
  std::string command;
  std::vector<std::string> needs;
  /// Absolute; where the step runs and where its artifacts must stay. ""
  /// when it is known only once the plan is resolved (set_step_commands).
  std::string workdir;
  /// Set for a step found cached before its run was recorded (settled):
  /// its row is written cached, with what it copies from its source, in
  /// the run's own transaction.
  std::optional<CacheDecision> cached;
};

struct NewRun {
  std::string workflow_name;
  /// Absolute.
  std::string workflow_file;
  std::string workflow_hash;
  /// The file's bytes, kept so a run can be resumed or inspected later.
  std::string workflow_content;
  /// Object: resolved param name -> typed value.
  nlohmann::json params = nlohmann::json::object();
  std::string user;
  std::string host;
  /// Empty when the workflow is not in a git repository.
  std::string git_commit;
  std::string git_branch;
  bool git_dirty = false;
  std::string kiln_version;
  std::string command_line;
  RunnerIdentity runner;
  std::int64_t started_ms = 0;
  /// In file order; inserted as pending.
  std::vector<NewStep> steps;
  /// The run's tags from the workflow file and --tag, in that order (a later
  /// one replaces an earlier one with the same key). The system tags
  /// (kiln.user, kiln.host, kiln.git.commit, kiln.git.branch, kiln.git.dirty,
  /// kiln.workflow.file, kiln.workflow.hash, kiln.version, kiln.command) are
  /// added by create_run from the fields above.
  KeyValues tags;
};

/// What a no-op rerun of a workflow file may replay instead of planning and
/// deciding: the file's last run whose every step was found cached before
/// any started, and what those decisions rested on. kiln run keeps one per
/// file (see kiln(1), kiln run); it goes with its run.
struct ReplayBasis {
  /// Absolute, as NewRun::workflow_file.
  std::string workflow_file;
  /// The run replayed: every step cached.
  std::int64_t run = 0;
  /// SHA-256 of everything its plan was made from but the files below.
  std::string digest;
  /// The environment variables the plan read (part of the digest).
  std::vector<std::string> env_names;
  /// Whether capacity detection looked for GPUs.
  bool wants_gpus = false;
  /// What the run's record takes from the workflow (JSON; kiln run's).
  std::string header;
  /// The input and output files its decisions rested on, with the stamps
  /// the hash memo vouched for (encode_stamps).
  std::string files;
};

/// Steps of a run by status.
struct StepCounts {
  int pending = 0;
  int running = 0;
  int succeeded = 0;
  int failed = 0;
  int skipped = 0;
  int cancelled = 0;
  int cached = 0;

  int total() const { return pending + running + succeeded + failed + skipped + cancelled + cached; }
  int& operator[](StepStatus status);
};

struct RunRecord {
  /// 1, 2, ... in creation order; never reused within a store.
  std::int64_t number = 0;
  /// 32 lower-case hex digits.
  std::string id;
  std::string workflow_name;
  std::string workflow_file;
  std::string workflow_hash;
  nlohmann::json params = nlohmann::json::object();
  RunStatus status = RunStatus::running;
  /// Absent while running and when the run crashed.
  std::optional<int> exit_code;
  std::int64_t started_ms = 0;
  std::optional<std::int64_t> ended_ms;
  std::string user;
  std::string host;
  std::string git_commit;
  std::string git_branch;
  bool git_dirty = false;
  std::string kiln_version;
  std::string command_line;
  RunnerIdentity runner;
  StepCounts steps;
};

struct StepRecord {
  std::string id;
  /// Absolute; "" for runs recorded before schema version 2.
  std::string workdir;
  std::string kind;
  std::string command;
  std::vector<std::string> needs;
  StepStatus status = StepStatus::pending;
  /// Set when the step first goes running.
  std::optional<std::int64_t> started_ms;
  /// Set when the step reaches a terminal status.
  std::optional<std::int64_t> ended_ms;
  /// Attempts begun so far.
  int attempts = 0;
  /// Why the step was skipped, failed or cancelled; "" otherwise.
  std::string reason;
};

struct AttemptStart {
  std::int64_t pid = 0;
  std::string executor;
  /// The executor's own name for what it started (e.g. a container id).
  std::string handle;
  std::int64_t started_ms = 0;
  std::string stdout_path;
  std::string stderr_path;
};

struct AttemptEnd {
  std::optional<int> exit_code;
  /// The signal that killed the process; 0 for none.
  int signal = 0;
  bool timed_out = false;
  std::int64_t ended_ms = 0;
  /// Why the attempt failed outside the command, e.g. "command not found".
  std::string error;
};

/// A step's final status, recorded with the attempt that decided it.
struct StepEnd {
  StepStatus status = StepStatus::succeeded;
  std::string reason;
};

struct AttemptRecord {
  std::string step_id;
  /// 1-based.
  int number = 0;
  AttemptStart start;
  /// Absent while the attempt runs.
  std::optional<AttemptEnd> end;
};

/// An attempt left open by a runner that died; the process behind it may
/// still be running.
struct OrphanAttempt {
  std::int64_t run_number = 0;
  std::string run_id;
  std::string step_id;
  int attempt = 0;
  std::string executor;
  std::string handle;
};

struct RunFilter {
  std::optional<std::string> workflow;
  std::optional<RunStatus> status;
  /// Runs started at or after this time.
  std::optional<std::int64_t> since_ms;
  /// 0 = all.
  int limit = 0;
};

/// Fields: number, id, workflow_name, workflow_file, workflow_hash, params
/// (object), status, exit_code, started_ms, ended_ms, duration_ms (null while
/// running), user, host, git_commit, git_branch (null when not in git),
/// git_dirty, kiln_version, command_line, runner {host, pid, start_ticks},
/// steps {total, pending, running, succeeded, failed, skipped, cancelled}.
void to_json(nlohmann::json& json, const RunRecord& run);
/// Fields: id, workdir, kind, command, needs (array), status, started_ms,
/// ended_ms, duration_ms, attempts, reason (null when empty).
void to_json(nlohmann::json& json, const StepRecord& step);
/// Fields: step, number, pid, executor, handle, started_ms, stdout_path,
/// stderr_path, and from the end (all null while running): ended_ms,
/// duration_ms, exit_code, signal (null for none), timed_out, error (null
/// when empty).
void to_json(nlohmann::json& json, const AttemptRecord& attempt);
/// A metric value as JSON: a number, or (as MLflow writes them) the strings
/// "NaN", "Infinity" and "-Infinity", which JSON numbers cannot express.
nlohmann::json metric_value_json(double value);
/// Fields: step, key, last, last_step, last_timestamp_ms, min, max, count;
/// values as metric_value_json writes them.
void to_json(nlohmann::json& json, const MetricSummary& summary);
/// Fields: step, path, sha256, size, kind, name (null when empty), created_ms.
void to_json(nlohmann::json& json, const ArtifactRecord& artifact);
/// Fields: step (null for the run's own), key, value.
void to_json(nlohmann::json& json, const KeyValue& entry);

// ---- What has been pushed to remote trackers (schema version 4) ----

/// One MLflow run standing for a kiln run (step "") or one of its steps on a
/// remote, and how much of its data the remote has acknowledged. Data is
/// sent in a fixed order (params and tags in the order the pusher lists
/// them, metric points by series then logging order), so progress is a
/// count or a position in that order.
struct RemoteRunState {
  std::string step;
  std::string experiment_id;
  std::string remote_id;
  std::string artifact_uri;
  std::int64_t params_sent = 0;
  std::int64_t tags_sent = 0;
  /// The last metric point acknowledged: (metric_series.id, seq); (0, -1) = none.
  std::int64_t points_series = 0;
  std::int64_t points_seq = -1;
  std::int64_t points_sent = 0;
  /// The final status and end time have been sent.
  bool finished = false;
};

enum class PushState { pending, synced, failed };
std::string_view to_string(PushState state);

/// A run that is to be, or has been, pushed to a remote.
struct PushRecord {
  std::int64_t run = 0;
  /// Tracking URI without credentials.
  std::string remote;
  /// The experiment named when the push was asked for; "" = decide at push time.
  std::string experiment;
  PushState state = PushState::pending;
  /// Why the last push failed; "" otherwise.
  std::string error;
  std::int64_t updated_ms = 0;
};

/// A metric point with its place in the push order.
struct RemotePoint {
  std::int64_t series = 0;
  std::int64_t seq = 0;
  MetricPoint point;
};

// ---- Caching and step outputs (schema version 5) ----

/// A step's key in a run, and the run that executed it with that key.
struct KeyedStep {
  std::string step;
  std::string key;
  std::int64_t source_run = 0;
};

/// An earlier successful execution with a given key.
struct CacheHit {
  std::int64_t run = 0;
  std::string step;
};

/// The latest earlier execution of a step that ran and succeeded.
struct PastExecution {
  std::int64_t run = 0;
  StepStatus status = StepStatus::succeeded;
  StepCache cache;
};

// ---- Resume ----

/// A new session of a run that did not succeed (see reopen_run).
struct RunReopen {
  /// The process that runs the new session.
  RunnerIdentity runner;
  /// The resume's command line, kept in the tag kiln.resume.command (the
  /// run's command_line stays the one that started it).
  std::string command_line;
  /// The workflow's steps as the session runs them, in file order: each
  /// recorded step must be among them (its kind, needs and position follow
  /// them); one not recorded is added, pending.
  std::vector<NewStep> steps;
  /// Set when the session runs a changed workflow file (--allow-changed):
  /// its content and hash replace the run's, so a later resume compares
  /// against what this session ran.
  std::optional<std::string> workflow_content;
  std::string workflow_hash;
};

class TrackerStore {
public:
  /// The schema version this build writes; stores up to it open.
  static int schema_version();

  /// The nearest ancestor of `cwd` (inclusive) holding a `.kiln/` directory,
  /// else `cwd/.kiln`.
  static std::filesystem::path discover(const std::filesystem::path& cwd);
  /// Opens `dir/kiln.db`, creating the directory and the file as needed and
  /// migrating an older schema.
  static Expected<std::unique_ptr<TrackerStore>> open(const std::filesystem::path& dir);

  TrackerStore(const TrackerStore&) = delete;
  TrackerStore& operator=(const TrackerStore&) = delete;

  const std::filesystem::path& directory() const { return m_directory; }
  std::filesystem::path database_file() const { return m_directory / "kiln.db"; }

  /// This connection leaves what it writes in the write-ahead log for a
  /// later one to copy into kiln.db (sqlite::Database::defer_checkpoints).
  void defer_checkpoints() { m_database.defer_checkpoints(); }
  /// A checkpoint of the store in `dir` started on its own thread, when
  /// its write-ahead log holds writes (left there by defer_checkpoints);
  /// null when there is nothing to copy.
  static std::unique_ptr<sqlite::BackgroundCheckpoint> checkpoint_log(const std::filesystem::path& dir);

  /// Makes a run's steps once its number and id are known: commands and
  /// workdirs may name the run.
  using StepsOfRun = std::function<Expected<std::vector<NewStep>>(std::int64_t number, const std::string& id)>;
  /// Inserts the run (status running) and its steps (pending). The id is
  /// random; the number is the next in the store, safe under concurrency.
  /// With `steps_of`, the steps are what it makes, inside the same
  /// transaction, rather than `run.steps`: each step row is written once,
  /// with its resolved command, and a failure records nothing. A step made
  /// with a cached decision is recorded as record_cache_decisions would.
  Expected<RunRecord> create_run(const NewRun& run, const StepsOfRun& steps_of = {});
  /// Records `run` as a repeat of `from_run`, whose steps were all cached:
  /// the same step rows, cached from the same sources, with what they copied
  /// from them, ended at `at_ms`. Nothing (rolled back) unless, under the
  /// write lock, a rerun would still decide the same: no step has succeeded
  /// with a cache key since `from_run` (a newer source), every source run is
  /// still there, and `unchanged()` (called last, in the transaction) says
  /// the files are as they were. The run is left running (finish_run).
  Expected<std::optional<RunRecord>> replay_run(const NewRun& run, std::int64_t from_run, std::int64_t at_ms,
                                                const std::function<bool()>& unchanged);
  /// The replay basis of a workflow file (absolute), if any.
  Expected<std::optional<ReplayBasis>> replay_basis(std::string_view workflow_file);
  /// Replaces the file's basis.
  Expected<void> save_replay(const ReplayBasis& basis);
  Expected<void> forget_replay(std::string_view workflow_file);
  struct StepCommand {
    std::string id;
    std::string command;
    /// Absolute.
    std::string workdir;
  };
  /// Records steps' resolved commands and workdirs in one transaction: the
  /// run's id and number are known only once it exists, and both may use them.
  Expected<void> set_step_commands(std::int64_t run, const std::vector<StepCommand>& commands);
  /// running sets started_ms (first time only) and clears ended_ms; a
  /// terminal status sets ended_ms. `reason` replaces the step's reason.
  Expected<void> set_step_status(std::int64_t run, std::string_view step, StepStatus status, std::int64_t at_ms,
                                 std::string_view reason = {});
  struct StatusChange {
    std::string step;
    StepStatus status = StepStatus::pending;
    std::int64_t at_ms = 0;
    std::string reason;
  };
  /// set_step_status for several steps, in one transaction (steps decided
  /// together without running: skipped, cached).
  Expected<void> set_step_statuses(std::int64_t run, const std::vector<StatusChange>& changes);
  /// Records attempt `attempt` (1-based) of the step, raises the step's
  /// attempt count to it and marks the step running (started_ms is set the
  /// first time): one transaction, as both happen at once.
  Expected<void> begin_attempt(std::int64_t run, std::string_view step, int attempt, const AttemptStart& start);
  /// Ends the attempt; with `step_end`, also sets the step's final status
  /// (as set_step_status would) in the same transaction.
  Expected<void> end_attempt(std::int64_t run, std::string_view step, int attempt, const AttemptEnd& end,
                             const StepEnd* step_end = nullptr);
  Expected<void> finish_run(std::int64_t run, RunStatus status, int exit_code, std::int64_t at_ms);

  /// Newest first.
  Expected<std::vector<RunRecord>> list_runs(const RunFilter& filter);
  Expected<RunRecord> run(std::int64_t number);
  /// "last", a run number ("12"), a full id, or a unique id prefix.
  Expected<RunRecord> resolve_run(std::string_view ref);
  /// In file order.
  Expected<std::vector<StepRecord>> steps(std::int64_t run);
  /// By step position, then attempt number.
  Expected<std::vector<AttemptRecord>> attempts(std::int64_t run);
  /// The workflow file's content as it was when the run started.
  Expected<std::string> workflow_content(std::int64_t run);

  // ---- What steps record (schema version 2) ----

  /// Appends points to the step's histories and updates each key's summary,
  /// in one transaction. Points keep their order: a history lists points in
  /// the order they were logged.
  Expected<void> log_metrics(std::int64_t run, std::string_view step, const std::vector<MetricPoint>& points);
  /// Logs params of a step (step "" = the run's). Logging a key again with
  /// the same value is a no-op; with a different value it is an error naming
  /// the key and both values, and none of `params` is written (as in MLflow).
  Expected<void> log_params(std::int64_t run, std::string_view step, const KeyValues& params);
  /// Sets tags (step "" = the run's), replacing the values of keys set before.
  Expected<void> set_tags(std::int64_t run, std::string_view step, const KeyValues& tags);

  struct NewArtifact {
    std::string logical_path;
    StagedBlob blob;
    ArtifactKind kind = ArtifactKind::output;
    std::string name;
  };
  /// Content staged with blobs().stage(), recorded for the step in one
  /// write transaction: each blob is committed into the blob store (or
  /// dropped when identical content is there already) and its row written.
  /// A path recorded before for the same step is replaced. On error every
  /// staged temp is discarded.
  Expected<void> add_artifacts(std::int64_t run, std::string_view step, const std::vector<NewArtifact>& artifacts,
                               std::int64_t at_ms);
  BlobStore& blobs() { return m_blobs; }

  /// The run's own first, then by step position; keys sorted within each.
  Expected<std::vector<KeyValue>> params(std::int64_t run);
  Expected<std::vector<KeyValue>> tags(std::int64_t run);
  /// By step position, then key.
  Expected<std::vector<MetricSummary>> metric_summaries(std::int64_t run);
  struct HistoryQuery {
    std::string key;
    /// "" = every step of the run that logged the key.
    std::string step;
    /// Inclusive bounds on MetricPoint::step.
    std::optional<std::int64_t> min_step;
    std::optional<std::int64_t> max_step;
  };
  /// Streams the matching points, by step position, then logging order.
  Expected<void> metric_history(std::int64_t run, const HistoryQuery& query,
                                const std::function<void(const std::string& step_id, const MetricPoint&)>& on_point);
  /// "" = every step; by step position, then path.
  Expected<std::vector<ArtifactRecord>> artifacts(std::int64_t run, std::string_view step = {});
  /// The run's artifacts of every kind but logged (what steps declared), by
  /// step id then path: what a cache lookup compares outputs with.
  Expected<std::vector<ArtifactRecord>> declared_outputs(std::int64_t run);

  /// A model a train step produced, with what evaluate steps downstream of
  /// it in the same run measured.
  struct ModelRecord {
    std::int64_t run_number = 0;
    std::string run_id;
    std::string workflow_name;
    RunStatus run_status = RunStatus::running;
    ArtifactRecord artifact;
    /// The last value of every metric of the evaluate steps that need the
    /// train step, directly or through other steps.
    std::vector<MetricSummary> metrics;
  };
  /// Newest run first; `workflow` "" = all; limit 0 = all.
  Expected<std::vector<ModelRecord>> models(std::string_view workflow, int limit);

  /// Runs matching the filter in the order given (newest first by default);
  /// limit 0 = all.
  Expected<std::vector<RunRecord>> search_runs(const FilterNode& filter, const std::vector<OrderTerm>& order,
                                               int limit);

  /// Deletes the runs (steps, attempts, metrics, params, tags, artifact rows
  /// and their log files), then the blobs no remaining run references. A run
  /// still running (its runner alive) is refused and nothing is deleted.
  struct DeleteReport {
    std::vector<std::int64_t> runs;
    std::int64_t blobs_removed = 0;
    std::int64_t bytes_freed = 0;
  };
  Expected<DeleteReport> delete_runs(const std::vector<std::int64_t>& runs);

  struct GcPolicy {
    /// Keep the newest N finished runs of each workflow; nullopt = no such rule.
    std::optional<int> keep_last;
    /// Only runs that ended before this time are candidates; nullopt = no such rule.
    std::optional<std::int64_t> ended_before_ms;
    bool dry_run = false;
  };
  /// Retention: with neither rule, no run is removed. With both, a run is
  /// removed only when both allow it. Running runs are never removed. Then
  /// (also with no rule) blob files no run references and stale temp files
  /// are removed. With dry_run, reports what would go and changes nothing.
  struct GcReport {
    std::vector<RunRecord> runs;
    std::int64_t blobs_removed = 0;
    std::int64_t bytes_freed = 0;
    std::int64_t temps_removed = 0;
  };
  Expected<GcReport> gc(const GcPolicy& policy, std::int64_t now_ms);

  // ---- Remote sync (schema version 4) ----

  /// The MLflow runs recorded for the kiln run on `remote`, the run's own
  /// (step "") first.
  Expected<std::vector<RemoteRunState>> remote_runs(std::string_view remote, std::int64_t run);
  /// Inserts or replaces the state of one (remote, run, step).
  Expected<void> save_remote_run(std::string_view remote, std::int64_t run, const RemoteRunState& state);
  /// Forgets every MLflow run recorded for the kiln run on `remote` (when the
  /// remote lost them, e.g. deleted by hand), with their artifacts' marks.
  Expected<void> forget_remote_runs(std::string_view remote, std::int64_t run);
  /// Paths of the step's artifacts the remote has acknowledged.
  Expected<std::vector<std::string>> remote_artifacts(std::string_view remote, std::int64_t run, std::string_view step);
  Expected<void> mark_remote_artifact(std::string_view remote, std::int64_t run, std::string_view step,
                                      std::string_view path);
  /// Up to `limit` points of the step's histories after (series, seq), in
  /// push order (series id, then seq).
  Expected<std::vector<RemotePoint>> metric_points_after(std::int64_t run, std::string_view step, std::int64_t series,
                                                         std::int64_t seq, int limit);
  /// Inserts or updates the run's push record for its remote.
  Expected<void> set_push_record(const PushRecord& record);
  /// Push records, of one run (run > 0) or all; by run number, then remote.
  Expected<std::vector<PushRecord>> push_records(std::int64_t run = 0);
  /// Finished runs (not running) with no synced record for `remote`, oldest first.
  Expected<std::vector<std::int64_t>> runs_not_synced(std::string_view remote);

  // ---- Caching and step outputs (schema version 5) ----

  /// Records keys, in one transaction. A decision with cached_from also
  /// copies, from the execution it stands for, what downstream steps and
  /// readers use: its outputs (KILN_OUTPUTS), params, tags, artifacts (rows
  /// sharing the blobs) and each metric's last value. A settled decision
  /// also records the step cached: one write of its row, not two.
  Expected<void> record_cache_decisions(std::int64_t run, const std::vector<CacheDecision>& decisions);
  /// The newest succeeded execution (in any run but `except_run`) whose key is `key`.
  Expected<std::optional<CacheHit>> find_cache_hit(std::string_view key, std::int64_t except_run);
  Expected<std::optional<StepCache>> step_cache(std::int64_t run, std::string_view step);
  /// The keyed steps of the newest run of `workflow` before `before_run`
  /// that succeeded or were cached there, each with the run whose
  /// execution it is (its own, or the one it was cached from, when that run
  /// is still recorded). One range scan: what a rerun looks up first.
  Expected<std::vector<KeyedStep>> latest_keys(std::string_view workflow, std::int64_t before_run);
  /// The newest execution of `step` in a run of `workflow` before
  /// `before_run` that succeeded (ran, rather than was cached) and has a key.
  Expected<std::optional<PastExecution>> last_execution(std::string_view workflow, std::string_view step,
                                                        std::int64_t before_run);
  /// Replaces the step's outputs.
  Expected<void> set_step_outputs(std::int64_t run, std::string_view step, const KeyValues& outputs);
  /// By name.
  Expected<KeyValues> step_outputs(std::int64_t run, std::string_view step);
  /// The last value of a step's metric in the newest succeeded run of the
  /// workflow before `before_run`; nullopt when there is none.
  Expected<std::optional<double>> previous_metric(std::string_view workflow, std::string_view step,
                                                  std::string_view key, std::int64_t before_run);
  Expected<MemoEntries> load_hash_memo();
  Expected<void> save_hash_memo(const std::vector<std::pair<std::string, MemoEntry>>& entries);

  // ---- Resume ----

  /// Continues a failed, cancelled or crashed run in place, in one
  /// transaction: status running, exit_code and ended_ms cleared, the
  /// runner replaced; its succeeded and cached steps stay as they are,
  /// every other one goes back to pending (reason and ended_ms cleared,
  /// attempts and their rows kept, so new attempts number after them); tag
  /// kiln.resumed counts the resumes and kiln.resume.command holds the
  /// latest one's command line. What was pushed of the run and of the reset
  /// steps is marked to be sent again. A run that is running or succeeded
  /// is refused (checked under the write lock: of two resumes, one wins).
  Expected<RunRecord> reopen_run(std::int64_t run, const RunReopen& reopen);

  /// dir/logs/<run id>/<step>.<attempt>.<stream>; stream is "out" or "err".
  std::filesystem::path log_path(std::string_view run_id, std::string_view step, int attempt,
                                 std::string_view stream) const;

  /// Runs still `running` whose runner on `host` is no longer alive (per
  /// `alive`): each is marked crashed (exit_code null, ended when the store
  /// last heard from it, at most now_ms), its
  /// running steps failed and its pending steps cancelled with reason
  /// "runner died", and its open attempts ended with error "runner died".
  /// Returns the attempts that were open, so the caller can stop what is
  /// behind them. Runs of other hosts are left alone. Safe when several
  /// processes recover at once: each run is handled by exactly one.
  Expected<std::vector<OrphanAttempt>> recover_crashed(const std::string& host,
                                                       const std::function<bool(const RunnerIdentity&)>& alive,
                                                       std::int64_t now_ms);

private:
  TrackerStore(std::filesystem::path directory, sqlite::Database database);
  Expected<void> migrate();
  /// The parts of record_cache_decisions, inside the caller's transaction:
  /// the decisions into temp.cache_batch, and what the cached ones copy
  /// from their sources (then the batch is emptied).
  Expected<void> stage_cache_decisions(const std::vector<const CacheDecision*>& decisions);
  Expected<void> copy_cached_from_sources(std::int64_t run);
  /// The parts of create_run and replay_run, inside their transaction: the
  /// run's row (and its workflow source), returning its number and id; its
  /// params and tags.
  Expected<std::pair<std::int64_t, std::string>> insert_run(const NewRun& run);
  Expected<void> insert_run_params_and_tags(std::int64_t number, const NewRun& run);
  /// The record of a run just inserted.
  static RunRecord created_run(std::int64_t number, std::string id, const NewRun& run);
  Expected<bool> load_step_counts(RunRecord& run);
  /// The rows of `table` (params or tags) for the run, ordered as params() says.
  Expected<std::vector<KeyValue>> key_values(std::int64_t run, std::string_view table);
  /// The rows of a query selecting the run columns (as list_runs does),
  /// with their step counts.
  Expected<std::vector<RunRecord>> read_runs(sqlite::StatementRef& query);
  Error no_run(std::int64_t number) const;
  /// An error unless the run has the step (step "" = the run itself).
  Expected<void> check_step(std::int64_t run, std::string_view step);
  /// A write transaction (BEGIN IMMEDIATE) for what a step records, once the
  /// run is known to have the step.
  Expected<sqlite::Transaction> begin_step_write(std::int64_t run, std::string_view step);
  /// Deletes the runs' rows, inside the caller's write transaction; returns
  /// their ids (for their log directories).
  Expected<std::vector<std::string>> delete_run_rows(const std::vector<std::int64_t>& runs);
  void remove_logs(const std::vector<std::string>& run_ids);

  enum class SweepMode { report, remove };
  enum class OrphanFiles { keep, include };
  struct BlobSweep {
    std::int64_t blobs = 0;
    std::int64_t bytes = 0;
  };
  /// The blobs no artifact references once the runs `leaving` are gone (and
  /// with OrphanFiles::include, blob files without a row): counted, and
  /// with SweepMode::remove deleted, rows and files, under the write lock.
  Expected<BlobSweep> sweep_blobs(const std::vector<std::int64_t>& leaving, SweepMode mode, OrphanFiles orphans);
  /// The UPDATE behind set_step_status, without a transaction of its own.
  Expected<void> update_step_status(std::int64_t run, std::string_view step, StepStatus status, std::int64_t at_ms,
                                    std::string_view reason);

  std::filesystem::path m_directory;
  sqlite::Database m_database;
  BlobStore m_blobs;
};

} // namespace kiln::core
