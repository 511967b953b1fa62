#pragma once
// Pushing kiln runs to an MLflow tracking server.
//
// Model: the local store is the truth and the server a copy. A kiln run
// becomes one MLflow run (tags kiln.run.id, mlflow.runName "<workflow>-<n>")
// and each step a nested run (mlflow.parentRunId, kiln.step). A push sends
// what the store's progress marks say is missing, in a fixed order, and
// marks each part as the server acknowledges it, so a push killed anywhere
// resumes where it stopped. Creating a run is the one request that is not
// idempotent: before creating (and before retrying a create whose answer
// was lost), the pusher looks the run up by its kiln tags, so a kiln run
// never gets a second MLflow run.
//
// Data is fitted to MLflow's rules before anything is sent (plan_push):
// a key MLflow refuses is skipped, an over-long tag or param value is cut to
// MLflow's limit, NaN and the infinities go as strings; each such change is
// a warning that push and --dry-run print.

#include "core/tracker_store.hpp"
#include "plugins/mlflow_client.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::plugins::mlflow {

/// One MLflow run to be: the kiln run's own (step "") or a step's.
struct PlannedRun {
  std::string step;
  std::string run_name;
  std::string user;
  std::int64_t start_time = 0;
  std::int64_t end_time = 0;
  /// FINISHED, FAILED or KILLED.
  std::string status;
  /// Sent with runs/create: mlflow.* identity tags and kiln.run.id/kiln.step
  /// first, then the rest, at most k_max_tags_per_batch.
  std::vector<KeyValue> create_tags;
  /// Tags that did not fit into runs/create, sent by log-batch.
  std::vector<KeyValue> batch_tags;
  /// Sorted by key.
  std::vector<KeyValue> params;
  /// Keys of metric histories that are not pushed (invalid for MLflow).
  std::vector<std::string> skipped_metrics;
  /// Points to push (valid keys only).
  std::int64_t points = 0;
  std::vector<core::ArtifactRecord> artifacts;
};

struct PushPlan {
  core::RunRecord run;
  /// The kiln run's own first, then the steps in file order.
  std::vector<PlannedRun> runs;
  /// Every change made to fit MLflow's rules, one line each.
  std::vector<std::string> warnings;
};

/// Reads the run from the store and maps it to MLflow runs.
core::Expected<PushPlan> plan_push(core::TrackerStore& store, const core::RunRecord& run);

/// MLflow's status for a kiln run's and a step's status.
std::string_view mlflow_status(core::RunStatus status);
std::string_view mlflow_status(core::StepStatus status);

struct PushSettings {
  /// The tracking URI as stored and shown: no credentials.
  std::string remote;
  /// The experiment's name; created when missing.
  std::string experiment;
  /// Connections used in parallel for steps and artifacts.
  int connections = 4;
  RetryPolicy policy;
  /// Makes one connection's transport.
  std::function<std::unique_ptr<HttpTransport>()> make_transport;
  /// nullptr = system_retry_environment().
  RetryEnvironment* environment = nullptr;
  std::function<void(const std::string&)> trace;
};

/// What one push did (or, for a dry run, would do).
struct PushResult {
  std::int64_t run = 0;
  bool ok = false;
  /// Why not, redacted; names the step and entity refused.
  std::string error;
  /// Nothing was missing.
  bool already_synced = false;
  std::string experiment_id;
  /// The MLflow run standing for the kiln run.
  std::string remote_run_id;
  int runs_created = 0;
  /// MLflow runs found on the server by their kiln tags (a push that
  /// stopped after creating them) and reused.
  int runs_adopted = 0;
  std::int64_t batches = 0;
  std::int64_t params = 0;
  std::int64_t tags = 0;
  std::int64_t points = 0;
  std::int64_t artifacts = 0;
  std::int64_t artifact_bytes = 0;
  std::int64_t requests = 0;
  std::int64_t bytes_sent = 0;
  std::vector<std::string> warnings;
};

class Pusher {
public:
  Pusher(core::TrackerStore& store, PushSettings settings);
  ~Pusher();
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  /// Pushes what the server lacks of a finished run and records the
  /// outcome in the store's push record. Refuses a running run.
  PushResult push(const core::RunRecord& run);
  /// What push would send, from the store alone (no network).
  PushResult dry_run(const core::RunRecord& run);

private:
  struct Connection;
  struct Session;

  core::Expected<std::string> experiment_id(Client& client);
  std::string store_error(const std::string& message);

  core::TrackerStore& m_store;
  PushSettings m_settings;
  std::vector<std::unique_ptr<Connection>> m_connections;
  /// The store is one SQLite connection; workers take turns.
  std::mutex m_store_mutex;
  std::string m_experiment_id;
};

/// An exclusive lock on pushing from one store (<store>/push.lock), so an
/// auto-push and a cron `kiln push --pending` never send the same run at
/// once.
class PushLock {
public:
  enum class Wait { no, yes };
  /// With Wait::no, an error at once when another push holds it.
  static core::Expected<PushLock> acquire(const std::filesystem::path& store_directory, Wait wait);
  PushLock(PushLock&& other) noexcept;
  PushLock& operator=(PushLock&&) = delete;
  PushLock(const PushLock&) = delete;
  PushLock& operator=(const PushLock&) = delete;
  ~PushLock();

private:
  explicit PushLock(int fd) : m_fd(fd) {}
  int m_fd = -1;
};

} // namespace kiln::plugins::mlflow
