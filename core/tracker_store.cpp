#include "core/tracker_store.hpp"

#include "core/hash.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <map>
#include <set>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <variant>

namespace kiln::core {

namespace {

using sqlite::CachedStatement;
using sqlite::StatementRef;
using sqlite::Transaction;
using sqlite::TransactionKind;

// A writer waits this long for another process's write lock. Each write
// holds the lock for tens of microseconds, so this is only reached when a
// process is stuck, not when many runners share a store.
constexpr std::chrono::milliseconds k_busy_timeout{30000};

constexpr std::string_view k_runner_died = "runner died";

struct Migration {
  int version;
  std::string_view sql;
};

// The schema's history, oldest first. Append only: a released migration is
// never edited, since stores in the field have already applied it. Each runs
// inside the migrating transaction; user_version is set to the last one
// applied. Conventions: statuses are their to_string names (text, no CHECK
// constraint, so a new status needs no table rebuild), times are integer ms
// since the Unix epoch (NULL when absent), JSON columns end in _json.
constexpr Migration k_migrations[] = {
    {1, R"sql(
CREATE TABLE workflow_sources (
  -- SHA-256 of content: many runs of one file share a row.
  sha256 TEXT PRIMARY KEY,
  content TEXT NOT NULL
);

CREATE TABLE runs (
  -- The run number users type; AUTOINCREMENT so it is never reused, even
  -- after the newest runs are deleted.
  number INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  workflow_name TEXT NOT NULL,
  workflow_file TEXT NOT NULL,
  workflow_hash TEXT NOT NULL,
  workflow_source TEXT NOT NULL REFERENCES workflow_sources(sha256),
  params_json TEXT NOT NULL DEFAULT '{}',
  status TEXT NOT NULL,
  exit_code INTEGER,
  started_ms INTEGER NOT NULL,
  ended_ms INTEGER,
  user TEXT NOT NULL DEFAULT '',
  host TEXT NOT NULL DEFAULT '',
  git_commit TEXT NOT NULL DEFAULT '',
  git_branch TEXT NOT NULL DEFAULT '',
  git_dirty INTEGER NOT NULL DEFAULT 0,
  kiln_version TEXT NOT NULL DEFAULT '',
  command_line TEXT NOT NULL DEFAULT '',
  runner_host TEXT NOT NULL DEFAULT '',
  runner_pid INTEGER NOT NULL DEFAULT 0,
  runner_start_ticks INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_workflow ON runs (workflow_name, number);
CREATE INDEX runs_by_status ON runs (status, number);
CREATE INDEX runs_by_started ON runs (started_ms);

CREATE TABLE steps (
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  id TEXT NOT NULL,
  -- 0-based position in the workflow file.
  position INTEGER NOT NULL,
  kind TEXT NOT NULL,
  command TEXT NOT NULL DEFAULT '',
  needs_json TEXT NOT NULL DEFAULT '[]',
  status TEXT NOT NULL,
  started_ms INTEGER,
  ended_ms INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (run, id)
) WITHOUT ROWID;

CREATE TABLE attempts (
  run INTEGER NOT NULL,
  step TEXT NOT NULL,
  -- 1-based.
  number INTEGER NOT NULL,
  pid INTEGER NOT NULL DEFAULT 0,
  executor TEXT NOT NULL DEFAULT '',
  handle TEXT NOT NULL DEFAULT '',
  started_ms INTEGER NOT NULL,
  stdout_path TEXT NOT NULL DEFAULT '',
  stderr_path TEXT NOT NULL DEFAULT '',
  -- NULL while the attempt runs; the other end columns are meaningful only
  -- once it is set.
  ended_ms INTEGER,
  exit_code INTEGER,
  signal INTEGER NOT NULL DEFAULT 0,
  timed_out INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (run, step, number),
  FOREIGN KEY (run, step) REFERENCES steps (run, id) ON DELETE CASCADE
) WITHOUT ROWID;
)sql"},
    {2, R"sql(
ALTER TABLE steps ADD COLUMN workdir TEXT NOT NULL DEFAULT '';

-- Params and tags; step '' = the run's own.
CREATE TABLE params (
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  step TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (run, step, key)
) WITHOUT ROWID;
CREATE INDEX params_by_key ON params (key, value, run);

CREATE TABLE tags (
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  step TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (run, step, key)
) WITHOUT ROWID;
CREATE INDEX tags_by_key ON tags (key, value, run);

-- One row per (run, step, key) history, with its running summary.
-- Values: REAL; NaN is stored as NULL (SQLite turns NaN into NULL anyway),
-- the infinities as themselves.
CREATE TABLE metric_series (
  id INTEGER PRIMARY KEY,
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  step TEXT NOT NULL,
  key TEXT NOT NULL,
  count INTEGER NOT NULL DEFAULT 0,
  last_value REAL,
  last_step INTEGER NOT NULL DEFAULT 0,
  last_ms INTEGER NOT NULL DEFAULT 0,
  -- Over non-NaN values; NULL while there is none.
  min_value REAL,
  max_value REAL,
  UNIQUE (run, step, key)
);
CREATE INDEX metric_series_by_key ON metric_series (key, last_value, run);

-- The points, clustered by series in logging order (seq = 0, 1, ... per
-- series), so a history is one range scan. Deleted with their series
-- explicitly (no foreign key, to keep bulk inserts lean).
CREATE TABLE metric_points (
  series INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  step INTEGER NOT NULL,
  value REAL,
  timestamp_ms INTEGER NOT NULL,
  PRIMARY KEY (series, seq)
) WITHOUT ROWID;

CREATE TABLE blobs (
  sha256 TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE artifacts (
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  step TEXT NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL REFERENCES blobs (sha256),
  size INTEGER NOT NULL,
  kind TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (run, step, path)
) WITHOUT ROWID;
CREATE INDEX artifacts_by_blob ON artifacts (sha256);
)sql"},
    {3, R"sql(
-- Runs recorded before schema 2 have params_json and the identity columns
-- but no params or tags rows, so search and compare missed them. Rebuild
-- the rows create_run writes. A param's text is param_text's: a string
-- unquoted, anything else as the JSON text params_json holds (written by
-- the same dump), which `->` returns verbatim where json_each's value would
-- reformat reals (1e-05 -> 1.0e-05); a key `->` cannot address falls back
-- to the value. Malformed or non-object params_json yields no params.
-- (Each INSERT ... SELECT reads its own target, so SQLite materialises the
-- selection before inserting: NOT EXISTS sees the table as it was.)
INSERT OR IGNORE INTO params (run, step, key, value)
SELECT r.number, '', p.key,
       CASE p.type
         WHEN 'text' THEN p.value
         WHEN 'true' THEN 'true'
         WHEN 'false' THEN 'false'
         WHEN 'null' THEN 'null'
         ELSE coalesce(r.params_json -> p.fullkey, CAST(p.value AS TEXT))
       END
FROM runs AS r,
     json_each(CASE WHEN json_valid(r.params_json) AND json_type(r.params_json) = 'object'
                    THEN r.params_json ELSE '{}' END) AS p
WHERE NOT EXISTS (SELECT 1 FROM params AS x WHERE x.run = r.number);

INSERT OR IGNORE INTO tags (run, step, key, value)
SELECT number, '', key, value FROM (
  SELECT number, 'kiln.user' AS key, user AS value, 1 AS wanted FROM runs
  UNION ALL SELECT number, 'kiln.host', host, 1 FROM runs
  UNION ALL SELECT number, 'kiln.git.commit', git_commit, git_commit <> '' FROM runs
  UNION ALL SELECT number, 'kiln.git.branch', git_branch, git_commit <> '' FROM runs
  UNION ALL SELECT number, 'kiln.git.dirty', CASE WHEN git_dirty THEN 'true' ELSE 'false' END, git_commit <> ''
            FROM runs
  UNION ALL SELECT number, 'kiln.workflow.file', workflow_file, 1 FROM runs
  UNION ALL SELECT number, 'kiln.workflow.hash', workflow_hash, 1 FROM runs
  UNION ALL SELECT number, 'kiln.version', kiln_version, 1 FROM runs
  UNION ALL SELECT number, 'kiln.command', command_line, 1 FROM runs
) AS t
WHERE wanted AND NOT EXISTS (SELECT 1 FROM tags AS x WHERE x.run = t.number);
)sql"},
    {4, R"sql(
-- Pushes to remote trackers (MLflow). remote is the tracking URI without
-- credentials; step '' stands for the run itself.
CREATE TABLE remote_runs (
  remote TEXT NOT NULL,
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  step TEXT NOT NULL,
  experiment_id TEXT NOT NULL,
  remote_id TEXT NOT NULL,
  artifact_uri TEXT NOT NULL DEFAULT '',
  params_sent INTEGER NOT NULL DEFAULT 0,
  tags_sent INTEGER NOT NULL DEFAULT 0,
  -- The last point acknowledged, as (metric_series.id, seq).
  points_series INTEGER NOT NULL DEFAULT 0,
  points_seq INTEGER NOT NULL DEFAULT -1,
  points_sent INTEGER NOT NULL DEFAULT 0,
  finished INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (remote, run, step)
) WITHOUT ROWID;

CREATE TABLE remote_artifacts (
  remote TEXT NOT NULL,
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  step TEXT NOT NULL,
  path TEXT NOT NULL,
  PRIMARY KEY (remote, run, step, path)
) WITHOUT ROWID;

CREATE TABLE push_records (
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  remote TEXT NOT NULL,
  experiment TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (run, remote)
) WITHOUT ROWID;
CREATE INDEX push_records_by_state ON push_records (state, run);
)sql"},
    {5, R"sql(
-- Skip-unchanged caching. cache_key is the SHA-256 of cache_json, the
-- components the key covers (command, env, params, inputs' hashes,
-- upstream keys), kept so `kiln why` can say which one changed. A cached
-- step names the run whose execution of the same key it stands for.
ALTER TABLE steps ADD COLUMN cache_key TEXT NOT NULL DEFAULT '';
ALTER TABLE steps ADD COLUMN cache_json TEXT NOT NULL DEFAULT '';
ALTER TABLE steps ADD COLUMN cached_from INTEGER;
-- Only successes: cached steps share their source's key, and a lookup
-- must not walk every no-op rerun that reused it.
CREATE INDEX steps_by_cache_key ON steps (cache_key, run) WHERE cache_key <> '' AND status = 'succeeded';

-- What a step wrote to KILN_OUTPUTS.
CREATE TABLE step_outputs (
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  step TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (run, step, name)
) WITHOUT ROWID;

-- Content hashes of input files, trusted while the stat data is unchanged
-- (see core/input_files.hpp); times in ns since the Unix epoch.
CREATE TABLE file_hashes (
  path TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL,
  ctime_ns INTEGER NOT NULL,
  inode INTEGER NOT NULL,
  device INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  hashed_at_ns INTEGER NOT NULL
) WITHOUT ROWID;
)sql"},
    {6, R"sql(
-- Artifact rows no longer indexed by blob. Every run that caches a step
-- copies its source's artifact rows, and those rows, keyed by random
-- SHA-256s, landed all over this index: a no-op rerun of 10,000 steps
-- dirtied every page of it (0.24 s of the run, growing with the history).
-- Only gc asked "which rows use this blob", and it now answers that with
-- one scan of the table.
DROP INDEX IF EXISTS artifacts_by_blob;
)sql"},
    {7, R"sql(
-- What a no-op rerun of a workflow file may replay (see ReplayBasis): its
-- last run whose every step was found cached before any started, and what
-- that rested on. One per file; gone with the run.
CREATE TABLE replays (
  workflow_file TEXT PRIMARY KEY,
  run INTEGER NOT NULL REFERENCES runs (number) ON DELETE CASCADE,
  -- SHA-256 of what the plan was made from (see replay_digest).
  digest TEXT NOT NULL,
  -- The environment variables the plan read, one per line.
  env_names TEXT NOT NULL,
  wants_gpus INTEGER NOT NULL,
  -- The run's description from the workflow (JSON).
  header TEXT NOT NULL,
  -- The files its decisions rested on and their stamps (encode_stamps).
  files BLOB NOT NULL
) WITHOUT ROWID;
)sql"},
};

constexpr int k_schema_version = k_migrations[std::size(k_migrations) - 1].version;

std::string dump(const nlohmann::json& json) {
  // replace: invalid UTF-8 in a param or command must not throw.
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json parse_json(const std::string& text, const nlohmann::json& fallback) {
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  return parsed.is_discarded() ? fallback : parsed;
}

std::vector<std::string> parse_needs(const std::string& text) {
  std::vector<std::string> needs;
  nlohmann::json parsed = parse_json(text, nlohmann::json::array());
  if (parsed.is_array()) {
    for (const nlohmann::json& item : parsed) {
      if (item.is_string()) {
        needs.push_back(item.get<std::string>());
      }
    }
  }
  return needs;
}

nlohmann::json optional_ms(const std::optional<std::int64_t>& ms) {
  return ms ? nlohmann::json(*ms) : nlohmann::json(nullptr);
}

nlohmann::json text_or_null(const std::string& text) {
  return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
}

nlohmann::json duration(std::optional<std::int64_t> started, std::optional<std::int64_t> ended) {
  if (started && ended) {
    return *ended - *started;
  }
  return nullptr;
}

constexpr std::string_view k_run_columns =
    "number, id, workflow_name, workflow_file, workflow_hash, params_json, status, exit_code, "
    "started_ms, ended_ms, user, host, git_commit, git_branch, git_dirty, kiln_version, "
    "command_line, runner_host, runner_pid, runner_start_ticks";

RunRecord read_run(const StatementRef& row) {
  RunRecord run;
  run.number = row.column_int64(0);
  run.id = row.column_text(1);
  run.workflow_name = row.column_text(2);
  run.workflow_file = row.column_text(3);
  run.workflow_hash = row.column_text(4);
  run.params = parse_json(row.column_text(5), nlohmann::json::object());
  // An unknown name cannot come from this schema version; read it as crashed
  // rather than pretend the run is still going.
  run.status = parse_run_status(row.column_text(6)).value_or(RunStatus::crashed);
  if (!row.is_null(7)) {
    run.exit_code = row.column_int(7);
  }
  run.started_ms = row.column_int64(8);
  run.ended_ms = row.column_optional_int64(9);
  run.user = row.column_text(10);
  run.host = row.column_text(11);
  run.git_commit = row.column_text(12);
  run.git_branch = row.column_text(13);
  run.git_dirty = row.column_int64(14) != 0;
  run.kiln_version = row.column_text(15);
  run.command_line = row.column_text(16);
  run.runner.host = row.column_text(17);
  run.runner.pid = row.column_int64(18);
  run.runner.start_ticks = row.column_int64(19);
  return run;
}

bool is_digits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
}

bool is_hex(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(),
                                      [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

/// A param's value as text: a JSON string as itself, anything else as JSON.
std::string param_text(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : dump(value);
}

Expected<void> upsert_tags(sqlite::Database& database, std::int64_t run, std::string_view step, const KeyValues& tags) {
  Expected<CachedStatement> upsert =
      database.cached("INSERT INTO tags (run, step, key, value) VALUES (?1, ?2, ?3, ?4) "
                      "ON CONFLICT (run, step, key) DO UPDATE SET value = excluded.value");
  if (!upsert) {
    return Error{upsert.error()};
  }
  for (const auto& [key, value] : tags) {
    upsert->bind_all(run, step, key, value);
    if (Expected<void> done = upsert->run(); !done) {
      return Error{"tag '" + key + "': " + done.error()};
    }
  }
  return {};
}

/// "the run" or "step 'train'", for messages about a run's or a step's values.
/// A REAL column that may hold NULL for NaN.
double column_metric(const StatementRef& row, int column) {
  return row.is_null(column) ? std::numeric_limits<double>::quiet_NaN() : row.column_double(column);
}

/// "3", "3 and 7", "3, 7 and 9".
std::string join_numbers(const std::vector<std::int64_t>& numbers) {
  std::string out;
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    if (i > 0) {
      out += i + 1 == numbers.size() ? " and " : ", ";
    }
    out += std::to_string(numbers[i]);
  }
  return out;
}

} // namespace

int& StepCounts::operator[](StepStatus status) {
  switch (status) {
  case StepStatus::pending: return pending;
  case StepStatus::running: return running;
  case StepStatus::succeeded: return succeeded;
  case StepStatus::failed: return failed;
  case StepStatus::skipped: return skipped;
  case StepStatus::cancelled: return cancelled;
  case StepStatus::cached: return cached;
  }
  return pending;
}

// ---- JSON ----

void to_json(nlohmann::json& json, const RunRecord& run) {
  json = nlohmann::json::object();
  json["number"] = run.number;
  json["id"] = run.id;
  json["workflow_name"] = run.workflow_name;
  json["workflow_file"] = run.workflow_file;
  json["workflow_hash"] = run.workflow_hash;
  json["params"] = run.params.is_object() ? run.params : nlohmann::json::object();
  json["status"] = to_string(run.status);
  json["exit_code"] = run.exit_code ? nlohmann::json(*run.exit_code) : nlohmann::json(nullptr);
  json["started_ms"] = run.started_ms;
  json["ended_ms"] = optional_ms(run.ended_ms);
  json["duration_ms"] = duration(run.started_ms, run.ended_ms);
  json["user"] = run.user;
  json["host"] = run.host;
  json["git_commit"] = text_or_null(run.git_commit);
  json["git_branch"] = text_or_null(run.git_branch);
  json["git_dirty"] = run.git_dirty;
  json["kiln_version"] = run.kiln_version;
  json["command_line"] = run.command_line;
  json["runner"] = {{"host", run.runner.host}, {"pid", run.runner.pid}, {"start_ticks", run.runner.start_ticks}};
  json["steps"] = {{"total", run.steps.total()},   {"pending", run.steps.pending},
                   {"running", run.steps.running}, {"succeeded", run.steps.succeeded},
                   {"failed", run.steps.failed},   {"skipped", run.steps.skipped},
                   {"cached", run.steps.cached},   {"cancelled", run.steps.cancelled}};
}

void to_json(nlohmann::json& json, const StepRecord& step) {
  json = nlohmann::json::object();
  json["id"] = step.id;
  json["workdir"] = step.workdir;
  json["kind"] = step.kind;
  json["command"] = step.command;
  json["needs"] = step.needs;
  json["status"] = to_string(step.status);
  json["started_ms"] = optional_ms(step.started_ms);
  json["ended_ms"] = optional_ms(step.ended_ms);
  json["duration_ms"] = duration(step.started_ms, step.ended_ms);
  json["attempts"] = step.attempts;
  json["reason"] = text_or_null(step.reason);
}

void to_json(nlohmann::json& json, const AttemptRecord& attempt) {
  json = nlohmann::json::object();
  json["step"] = attempt.step_id;
  json["number"] = attempt.number;
  json["pid"] = attempt.start.pid;
  json["executor"] = attempt.start.executor;
  json["handle"] = attempt.start.handle;
  json["started_ms"] = attempt.start.started_ms;
  json["stdout_path"] = attempt.start.stdout_path;
  json["stderr_path"] = attempt.start.stderr_path;
  if (attempt.end) {
    const AttemptEnd& end = *attempt.end;
    json["ended_ms"] = end.ended_ms;
    json["duration_ms"] = end.ended_ms - attempt.start.started_ms;
    json["exit_code"] = end.exit_code ? nlohmann::json(*end.exit_code) : nlohmann::json(nullptr);
    json["signal"] = end.signal != 0 ? nlohmann::json(end.signal) : nlohmann::json(nullptr);
    json["timed_out"] = end.timed_out;
    json["error"] = text_or_null(end.error);
  } else {
    for (const char* key : {"ended_ms", "duration_ms", "exit_code", "signal", "timed_out", "error"}) {
      json[key] = nullptr;
    }
  }
}

nlohmann::json metric_value_json(double value) {
  if (std::isnan(value)) {
    return "NaN";
  }
  if (std::isinf(value)) {
    return value > 0 ? "Infinity" : "-Infinity";
  }
  return value;
}

void to_json(nlohmann::json& json, const MetricSummary& summary) {
  json = nlohmann::json::object();
  json["step"] = summary.step_id;
  json["key"] = summary.key;
  json["last"] = metric_value_json(summary.last);
  json["last_step"] = summary.last_step;
  json["last_timestamp_ms"] = summary.last_timestamp_ms;
  json["min"] = metric_value_json(summary.min);
  json["max"] = metric_value_json(summary.max);
  json["count"] = summary.count;
}

void to_json(nlohmann::json& json, const ArtifactRecord& artifact) {
  json = nlohmann::json::object();
  json["step"] = artifact.step_id;
  json["path"] = artifact.path;
  json["sha256"] = artifact.sha256;
  json["size"] = artifact.size;
  json["kind"] = to_string(artifact.kind);
  json["name"] = text_or_null(artifact.name);
  json["created_ms"] = artifact.created_ms;
}

void to_json(nlohmann::json& json, const KeyValue& entry) {
  json = nlohmann::json::object();
  json["step"] = text_or_null(entry.step_id);
  json["key"] = entry.key;
  json["value"] = entry.value;
}

// ---- TrackerStore ----

TrackerStore::TrackerStore(std::filesystem::path directory, sqlite::Database database)
    : m_directory(std::move(directory)), m_database(std::move(database)), m_blobs(m_directory / "artifacts") {}

int TrackerStore::schema_version() {
  return k_schema_version;
}

std::filesystem::path TrackerStore::discover(const std::filesystem::path& cwd) {
  std::error_code ignored;
  std::filesystem::path start = std::filesystem::absolute(cwd, ignored);
  if (start.empty()) {
    start = cwd;
  }
  start = start.lexically_normal();
  for (std::filesystem::path dir = start;; dir = dir.parent_path()) {
    std::filesystem::path candidate = dir / ".kiln";
    if (std::filesystem::is_directory(candidate, ignored)) {
      return candidate;
    }
    if (dir == dir.parent_path() || dir.empty()) {
      break;
    }
  }
  return start / ".kiln";
}

std::unique_ptr<sqlite::BackgroundCheckpoint> TrackerStore::checkpoint_log(const std::filesystem::path& dir) {
  // SQLite deletes the log when the last connection closes after copying
  // it; an empty one has nothing to copy either.
  std::error_code error;
  const std::uintmax_t size = std::filesystem::file_size(dir / "kiln.db-wal", error);
  if (error || size == 0) {
    return nullptr;
  }
  return std::make_unique<sqlite::BackgroundCheckpoint>(dir / "kiln.db");
}

Expected<std::unique_ptr<TrackerStore>> TrackerStore::open(const std::filesystem::path& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return Error{"cannot create the tracker store " + dir.string() + ": " + error.message()};
  }
  Expected<sqlite::Database> database = sqlite::Database::open(dir / "kiln.db");
  if (!database) {
    return Error{database.error()};
  }
  database->set_busy_timeout(k_busy_timeout);
  // A store without a schema holds nothing to lose, so it is built without
  // fsyncs: switching an empty file to WAL goes through a rollback journal
  // (four syncs) and the first WAL commit syncs again, which together cost
  // more than the rest of a short run. A killed process still leaves the
  // file whole; only a power cut during creation could spoil the new store.
  Expected<std::int64_t> version = database->query_int64("PRAGMA user_version");
  if (!version) {
    return Error{version.error()};
  }
  bool fresh = *version == 0;
  // case_sensitive_like: LIKE in search filters is case-sensitive, as in
  // MLflow (ILIKE is compiled to lower() LIKE lower()). mmap_size: pages are
  // read from a mapping of the file, not one pread each; a rerun that finds
  // 10,000 steps cached reads some 12,000 pages.
  Expected<void> pragmas =
      database->exec(std::string(fresh ? "PRAGMA synchronous = OFF;" : "PRAGMA synchronous = NORMAL;") +
                     " PRAGMA foreign_keys = ON; PRAGMA case_sensitive_like = ON; PRAGMA mmap_size = 1073741824");
  if (!pragmas) {
    return Error{pragmas.error()};
  }
  // WAL: readers never block the writer and a commit appends to the log;
  // with synchronous=NORMAL it survives a killed process (not a power cut)
  // without an fsync per commit. A file system without WAL support keeps
  // the rollback journal; the store still works there, writers serialised
  // on the file lock.
  Expected<std::string> journal = database->enable_wal(k_busy_timeout);
  if (!journal) {
    return Error{journal.error()};
  }
  std::unique_ptr<TrackerStore> store(new TrackerStore(dir, std::move(database).value()));
  Expected<void> migrated = store->migrate();
  if (!migrated) {
    return Error{migrated.error()};
  }
  if (fresh) {
    Expected<void> durable = store->m_database.exec("PRAGMA synchronous = NORMAL");
    if (!durable) {
      return Error{durable.error()};
    }
  }
  return store;
}

Expected<void> TrackerStore::migrate() {
  auto too_new = [this](std::int64_t found) {
    return Error{database_file().string() + " has schema version " + std::to_string(found) + ", newer than the " +
                 std::to_string(k_schema_version) + " this kiln (" + KILN_VERSION +
                 ") knows: upgrade kiln to use this store"};
  };
  Expected<std::int64_t> version = m_database.query_int64("PRAGMA user_version");
  if (!version) {
    return Error{version.error()};
  }
  if (*version == k_schema_version) {
    return {};
  }
  if (*version > k_schema_version) {
    return too_new(*version);
  }
  // Another process may be migrating the same store right now: take the
  // write lock first, then read the version again under it.
  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  version = m_database.query_int64("PRAGMA user_version");
  if (!version) {
    return Error{version.error()};
  }
  if (*version > k_schema_version) {
    return too_new(*version);
  }
  for (const Migration& migration : k_migrations) {
    if (migration.version <= *version) {
      continue;
    }
    Expected<void> applied = m_database.exec(migration.sql);
    if (!applied) {
      return Error{"migrating " + database_file().string() + " to schema version " + std::to_string(migration.version) +
                   ": " + applied.error()};
    }
  }
  Expected<void> stamped = m_database.exec("PRAGMA user_version = " + std::to_string(k_schema_version));
  if (!stamped) {
    return stamped;
  }
  return transaction->commit();
}

Error TrackerStore::no_run(std::int64_t number) const {
  return Error{"no run " + std::to_string(number) + " in " + database_file().string()};
}

Expected<std::pair<std::int64_t, std::string>> TrackerStore::insert_run(const NewRun& new_run) {
  std::string id;
  std::string source_hash;
  try {
    id = random_hex_id();
    source_hash = sha256_hex(new_run.workflow_content);
  } catch (const std::exception& error) {
    return Error{error.what()};
  }
  {
    Expected<CachedStatement> insert =
        m_database.cached("INSERT OR IGNORE INTO workflow_sources (sha256, content) VALUES (?1, ?2)");
    if (!insert) {
      return Error{insert.error()};
    }
    insert->bind_all(source_hash, new_run.workflow_content);
    if (Expected<void> done = insert->run(); !done) {
      return Error{done.error()};
    }
  }
  {
    Expected<CachedStatement> insert =
        m_database.cached("INSERT INTO runs (id, workflow_name, workflow_file, workflow_hash, workflow_source, "
                          "params_json, status, started_ms, user, host, git_commit, git_branch, git_dirty, "
                          "kiln_version, command_line, runner_host, runner_pid, runner_start_ticks) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)");
    if (!insert) {
      return Error{insert.error()};
    }
    const nlohmann::json& params = new_run.params.is_null() ? nlohmann::json::object() : new_run.params;
    insert->bind_all(id, new_run.workflow_name, new_run.workflow_file, new_run.workflow_hash, source_hash, dump(params),
                     to_string(RunStatus::running), new_run.started_ms, new_run.user, new_run.host, new_run.git_commit,
                     new_run.git_branch, new_run.git_dirty, new_run.kiln_version, new_run.command_line,
                     new_run.runner.host, new_run.runner.pid, new_run.runner.start_ticks);
    if (Expected<void> done = insert->run(); !done) {
      return Error{done.error()};
    }
  }
  return std::pair{m_database.last_insert_rowid(), std::move(id)};
}

Expected<void> TrackerStore::insert_run_params_and_tags(std::int64_t number, const NewRun& new_run) {
  {
    Expected<CachedStatement> insert =
        m_database.cached("INSERT INTO params (run, step, key, value) VALUES (?1, '', ?2, ?3)");
    if (!insert) {
      return Error{insert.error()};
    }
    if (new_run.params.is_object()) {
      for (const auto& [key, value] : new_run.params.items()) {
        insert->bind_all(number, key, param_text(value));
        if (Expected<void> done = insert->run(); !done) {
          return Error{"param '" + key + "': " + done.error()};
        }
      }
    }
  }
  KeyValues tags = {{"kiln.user", new_run.user}, {"kiln.host", new_run.host}};
  if (!new_run.git_commit.empty()) {
    tags.emplace_back("kiln.git.commit", new_run.git_commit);
    tags.emplace_back("kiln.git.branch", new_run.git_branch);
    tags.emplace_back("kiln.git.dirty", new_run.git_dirty ? "true" : "false");
  }
  tags.emplace_back("kiln.workflow.file", new_run.workflow_file);
  tags.emplace_back("kiln.workflow.hash", new_run.workflow_hash);
  tags.emplace_back("kiln.version", new_run.kiln_version);
  tags.emplace_back("kiln.command", new_run.command_line);
  tags.insert(tags.end(), new_run.tags.begin(), new_run.tags.end());
  return upsert_tags(m_database, number, "", tags);
}

RunRecord TrackerStore::created_run(std::int64_t number, std::string id, const NewRun& new_run) {
  RunRecord run;
  run.number = number;
  run.id = std::move(id);
  run.workflow_name = new_run.workflow_name;
  run.workflow_file = new_run.workflow_file;
  run.workflow_hash = new_run.workflow_hash;
  run.params = new_run.params.is_null() ? nlohmann::json::object() : new_run.params;
  run.status = RunStatus::running;
  run.started_ms = new_run.started_ms;
  run.user = new_run.user;
  run.host = new_run.host;
  run.git_commit = new_run.git_commit;
  run.git_branch = new_run.git_branch;
  run.git_dirty = new_run.git_dirty;
  run.kiln_version = new_run.kiln_version;
  run.command_line = new_run.command_line;
  run.runner = new_run.runner;
  return run;
}

Expected<RunRecord> TrackerStore::create_run(const NewRun& new_run, const StepsOfRun& steps_of) {
  // Every row written here references the run written first, its workflow
  // source, or (a cached step's copies) blobs its source's rows reference
  // already, which gc keeps: the references hold by construction, and
  // checking them was a lookup per copied artifact (~10 ms at 10,000).
  Expected<sqlite::ForeignKeysOff> foreign_keys = m_database.foreign_keys_off();
  if (!foreign_keys) {
    return Error{foreign_keys.error()};
  }
  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  Expected<std::pair<std::int64_t, std::string>> inserted = insert_run(new_run);
  if (!inserted) {
    return Error{inserted.error()};
  }
  auto& [number, id] = *inserted;
  std::vector<NewStep> made;
  if (steps_of) {
    auto steps = steps_of(number, id);
    if (!steps) {
      return Error{steps.error()};
    }
    made = std::move(*steps);
  }
  const std::vector<NewStep>& steps = steps_of ? made : new_run.steps;
  {
    Expected<CachedStatement> insert =
        m_database.cached("INSERT INTO steps (run, id, position, kind, command, needs_json, status, workdir, "
                          "cache_key, cached_from, ended_ms, reason) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
    if (!insert) {
      return Error{insert.error()};
    }
    std::int64_t position = 0;
    std::vector<const CacheDecision*> cached;
    for (const NewStep& step : steps) {
      const CacheDecision* c = step.cached ? &*step.cached : nullptr;
      if (c != nullptr) {
        cached.push_back(c);
      }
      insert->bind_all(number, step.id, position++, step.kind, step.command, dump(nlohmann::json(step.needs)),
                       to_string(c != nullptr ? StepStatus::cached : StepStatus::pending), step.workdir,
                       c != nullptr ? std::string_view(c->cache.key) : std::string_view(),
                       c != nullptr ? c->cache.cached_from : std::nullopt,
                       c != nullptr ? std::optional<std::int64_t>(c->settled_ms) : std::nullopt,
                       c != nullptr ? std::string_view(c->reason) : std::string_view());
      if (Expected<void> done = insert->run(); !done) {
        return Error{"step '" + step.id + "': " + done.error()};
      }
    }
    if (!cached.empty()) {
      if (Expected<void> done = stage_cache_decisions(cached); !done) {
        return Error{done.error()};
      }
      if (Expected<void> done = copy_cached_from_sources(number); !done) {
        return Error{done.error()};
      }
    }
  }
  if (Expected<void> done = insert_run_params_and_tags(number, new_run); !done) {
    return Error{done.error()};
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  RunRecord run = created_run(number, std::move(id), new_run);
  run.steps.pending = static_cast<int>(steps.size());
  return run;
}

// The single-statement writes below run in autocommit mode: SQLite starts
// such a statement's transaction with the write lock requested up front and
// waits on the busy handler for it, which is what BEGIN IMMEDIATE does for
// multi-statement transactions, at a third of the statements.

Expected<void> TrackerStore::set_step_commands(std::int64_t run, const std::vector<StepCommand>& commands) {
  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  {
    Expected<CachedStatement> update =
        m_database.cached("UPDATE steps SET command = ?3, workdir = ?4 WHERE run = ?1 AND id = ?2");
    if (!update) {
      return Error{update.error()};
    }
    for (const auto& c : commands) {
      update->bind_all(run, c.id, c.command, c.workdir);
      if (Expected<void> done = update->run(); !done) {
        return done;
      }
    }
  }
  return transaction->commit();
}

Expected<void> TrackerStore::set_step_status(std::int64_t run, std::string_view step, StepStatus status,
                                             std::int64_t at_ms, std::string_view reason) {
  return update_step_status(run, step, status, at_ms, reason);
}

Expected<void> TrackerStore::set_step_statuses(std::int64_t run, const std::vector<StatusChange>& changes) {
  if (changes.empty()) {
    return {};
  }
  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  for (const StatusChange& c : changes) {
    if (Expected<void> done = update_step_status(run, c.step, c.status, c.at_ms, c.reason); !done) {
      return done;
    }
  }
  return transaction->commit();
}

Expected<void> TrackerStore::update_step_status(std::int64_t run, std::string_view step, StepStatus status,
                                                std::int64_t at_ms, std::string_view reason) {
  Expected<CachedStatement> update =
      m_database.cached("UPDATE steps SET status = ?3, "
                        "started_ms = CASE WHEN ?3 = 'running' THEN coalesce(started_ms, ?4) ELSE started_ms END, "
                        "ended_ms = CASE ?3 WHEN 'running' THEN NULL WHEN 'pending' THEN ended_ms ELSE ?4 END, "
                        "reason = ?5 WHERE run = ?1 AND id = ?2");
  if (!update) {
    return Error{update.error()};
  }
  update->bind_all(run, step, to_string(status), at_ms, reason);
  if (Expected<void> done = update->run(); !done) {
    return done;
  }
  if (m_database.changes() == 0) {
    return Error{"run " + std::to_string(run) + " has no step '" + std::string(step) + "'"};
  }
  return {};
}

Expected<void> TrackerStore::begin_attempt(std::int64_t run, std::string_view step, int attempt,
                                           const AttemptStart& start) {
  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  {
    Expected<CachedStatement> update =
        m_database.cached("UPDATE steps SET attempts = max(attempts, ?3), status = 'running', "
                          "started_ms = coalesce(started_ms, ?4), ended_ms = NULL WHERE run = ?1 AND id = ?2");
    if (!update) {
      return Error{update.error()};
    }
    update->bind_all(run, step, attempt, start.started_ms);
    if (Expected<void> done = update->run(); !done) {
      return done;
    }
    if (m_database.changes() == 0) {
      return Error{"run " + std::to_string(run) + " has no step '" + std::string(step) + "'"};
    }
  }
  {
    Expected<CachedStatement> insert =
        m_database.cached("INSERT INTO attempts (run, step, number, pid, executor, handle, started_ms, "
                          "stdout_path, stderr_path) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    if (!insert) {
      return Error{insert.error()};
    }
    insert->bind_all(run, step, attempt, start.pid, start.executor, start.handle, start.started_ms, start.stdout_path,
                     start.stderr_path);
    if (Expected<void> done = insert->run(); !done) {
      return Error{"run " + std::to_string(run) + " step '" + std::string(step) + "' attempt " +
                   std::to_string(attempt) + ": " + done.error()};
    }
  }
  return transaction->commit();
}

Expected<void> TrackerStore::end_attempt(std::int64_t run, std::string_view step, int attempt, const AttemptEnd& end,
                                         const StepEnd* step_end) {
  std::optional<Transaction> transaction;
  if (step_end != nullptr) {
    Expected<Transaction> begun = m_database.begin(TransactionKind::immediate);
    if (!begun) {
      return Error{begun.error()};
    }
    transaction.emplace(std::move(*begun));
  }
  {
    Expected<CachedStatement> update =
        m_database.cached("UPDATE attempts SET ended_ms = ?4, exit_code = ?5, signal = ?6, timed_out = ?7, "
                          "error = ?8 WHERE run = ?1 AND step = ?2 AND number = ?3");
    if (!update) {
      return Error{update.error()};
    }
    update->bind_all(run, step, attempt, end.ended_ms, end.exit_code, end.signal, end.timed_out, end.error);
    if (Expected<void> done = update->run(); !done) {
      return done;
    }
    if (m_database.changes() == 0) {
      return Error{"run " + std::to_string(run) + " step '" + std::string(step) + "' has no attempt " +
                   std::to_string(attempt)};
    }
  }
  if (step_end == nullptr) {
    return {};
  }
  if (Expected<void> done = update_step_status(run, step, step_end->status, end.ended_ms, step_end->reason); !done) {
    return done;
  }
  return transaction->commit();
}

Expected<void> TrackerStore::finish_run(std::int64_t run, RunStatus status, int exit_code, std::int64_t at_ms) {
  Expected<CachedStatement> update =
      m_database.cached("UPDATE runs SET status = ?2, exit_code = ?3, ended_ms = ?4 WHERE number = ?1");
  if (!update) {
    return Error{update.error()};
  }
  update->bind_all(run, to_string(status), exit_code, at_ms);
  if (Expected<void> done = update->run(); !done) {
    return done;
  }
  if (m_database.changes() == 0) {
    return no_run(run);
  }
  return {};
}

Expected<bool> TrackerStore::load_step_counts(RunRecord& run) {
  Expected<CachedStatement> query =
      m_database.cached("SELECT status, count(*) FROM steps WHERE run = ?1 GROUP BY status");
  if (!query) {
    return Error{query.error()};
  }
  query->bind_all(run.number);
  run.steps = StepCounts{};
  while (true) {
    Expected<bool> row = query->step();
    if (!row) {
      return Error{row.error()};
    }
    if (!*row) {
      return true;
    }
    if (std::optional<StepStatus> status = parse_step_status(query->column_text(0))) {
      run.steps[*status] += query->column_int(1);
    }
  }
}

Expected<std::vector<RunRecord>> TrackerStore::read_runs(sqlite::StatementRef& query) {
  std::vector<RunRecord> runs;
  if (Expected<void> done = query.for_each_row([&](sqlite::StatementRef& row) { runs.push_back(read_run(row)); });
      !done) {
    return Error{done.error()};
  }
  if (runs.empty()) {
    return runs;
  }
  // The step counts of all of them in one statement (a query per run was
  // most of a search listing thousands): by the steps' primary key
  // (run, id), a range per listed run, however many runs the store holds.
  std::unordered_map<std::int64_t, RunRecord*> by_number;
  by_number.reserve(runs.size());
  nlohmann::json numbers = nlohmann::json::array();
  for (RunRecord& run : runs) {
    by_number.emplace(run.number, &run);
    numbers.push_back(run.number);
  }
  Expected<CachedStatement> counts =
      m_database.cached("SELECT run, status, count(*) FROM steps "
                        "WHERE run IN (SELECT value FROM json_each(?1)) GROUP BY run, status");
  if (!counts) {
    return Error{counts.error()};
  }
  counts->bind_all(dump(numbers));
  if (Expected<void> done = counts->for_each_row([&](StatementRef& row) {
        auto found = by_number.find(row.column_int64(0));
        std::optional<StepStatus> status = parse_step_status(row.column_text(1));
        if (found != by_number.end() && status) {
          found->second->steps[*status] += row.column_int(2);
        }
      });
      !done) {
    return Error{done.error()};
  }
  return runs;
}

Expected<std::vector<RunRecord>> TrackerStore::list_runs(const RunFilter& filter) {
  std::string sql = "SELECT " + std::string(k_run_columns) + " FROM runs WHERE 1";
  int index = 0;
  if (filter.workflow) {
    sql += " AND workflow_name = ?" + std::to_string(++index);
  }
  if (filter.status) {
    sql += " AND status = ?" + std::to_string(++index);
  }
  if (filter.since_ms) {
    sql += " AND started_ms >= ?" + std::to_string(++index);
  }
  sql += " ORDER BY number DESC";
  if (filter.limit > 0) {
    sql += " LIMIT ?" + std::to_string(++index);
  }

  // One snapshot for the runs and their step counts.
  Expected<Transaction> transaction = m_database.begin(TransactionKind::deferred);
  if (!transaction) {
    return Error{transaction.error()};
  }
  std::vector<RunRecord> runs;
  {
    Expected<CachedStatement> query = m_database.cached(sql);
    if (!query) {
      return Error{query.error()};
    }
    index = 0;
    if (filter.workflow) {
      query->bind(++index, *filter.workflow);
    }
    if (filter.status) {
      query->bind(++index, to_string(*filter.status));
    }
    if (filter.since_ms) {
      query->bind(++index, *filter.since_ms);
    }
    if (filter.limit > 0) {
      query->bind(++index, filter.limit);
    }
    Expected<std::vector<RunRecord>> read = read_runs(*query);
    if (!read) {
      return Error{read.error()};
    }
    runs = std::move(read).value();
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  return runs;
}

Expected<RunRecord> TrackerStore::run(std::int64_t number) {
  std::optional<RunRecord> found;
  {
    Expected<CachedStatement> query =
        m_database.cached("SELECT " + std::string(k_run_columns) + " FROM runs WHERE number = ?1");
    if (!query) {
      return Error{query.error()};
    }
    query->bind_all(number);
    Expected<bool> row = query->step();
    if (!row) {
      return Error{row.error()};
    }
    if (!*row) {
      return no_run(number);
    }
    found = read_run(*query);
  }
  if (Expected<bool> loaded = load_step_counts(*found); !loaded) {
    return Error{loaded.error()};
  }
  return std::move(*found);
}

Expected<RunRecord> TrackerStore::resolve_run(std::string_view ref) {
  Expected<std::int64_t> newest = m_database.query_int64("SELECT coalesce(max(number), 0) FROM runs");
  if (!newest) {
    return Error{newest.error()};
  }
  if (*newest == 0) {
    return Error{"no runs yet in " + database_file().string()};
  }
  if (ref == "last") {
    return run(*newest);
  }
  auto no_match = [&] { return Error{"no run matches '" + std::string(ref) + "'"}; };

  // A run number, unless it is too long to be one: a 32-digit id or a long
  // all-digit prefix is read as an id below.
  if (is_digits(ref) && ref.size() <= 18) {
    std::int64_t number = std::stoll(std::string(ref));
    Expected<RunRecord> found = run(number);
    if (found || ref.size() < 4) {
      return found ? std::move(found) : no_match();
    }
  }
  if (!is_hex(ref) || ref.size() > 32) {
    return no_match();
  }
  std::string prefix = lower(ref);
  // Ids are lower-case hex, so every id starting with `prefix` sorts in
  // [prefix, prefix + "g"): a range the UNIQUE index on id answers.
  std::vector<std::int64_t> numbers;
  {
    if (Expected<void> done = m_database.each_row(
            "SELECT number FROM runs WHERE id >= ?1 AND id < ?2 ORDER BY number LIMIT 6",
            [&](sqlite::StatementRef& row) { numbers.push_back(row.column_int64(0)); }, prefix, prefix + "g");
        !done) {
      return Error{done.error()};
    }
  }
  if (numbers.empty()) {
    return no_match();
  }
  if (numbers.size() == 1) {
    return run(numbers.front());
  }
  std::string listed;
  if (numbers.size() > 5) {
    numbers.resize(5);
    listed = join_numbers(numbers);
    listed.replace(listed.rfind(" and "), 5, ", ");
    listed += " and more";
  } else {
    listed = join_numbers(numbers);
  }
  return Error{"'" + std::string(ref) + "' is ambiguous: runs " + listed + " match; give more of the id"};
}

Expected<std::vector<StepRecord>> TrackerStore::steps(std::int64_t run) {
  std::vector<StepRecord> steps;
  {
    if (Expected<void> done = m_database.each_row(
            "SELECT id, kind, command, needs_json, status, started_ms, ended_ms, attempts, reason, workdir "
            "FROM steps WHERE run = ?1 ORDER BY position",
            [&](sqlite::StatementRef& row) {
              StepRecord step;
              step.id = row.column_text(0);
              step.kind = row.column_text(1);
              step.command = row.column_text(2);
              step.needs = parse_needs(row.column_text(3));
              step.status = parse_step_status(row.column_text(4)).value_or(StepStatus::failed);
              step.started_ms = row.column_optional_int64(5);
              step.ended_ms = row.column_optional_int64(6);
              step.attempts = row.column_int(7);
              step.reason = row.column_text(8);
              step.workdir = row.column_text(9);
              steps.push_back(std::move(step));
            },
            run);
        !done) {
      return Error{done.error()};
    }
  }
  if (steps.empty()) {
    if (Expected<RunRecord> found = this->run(run); !found) {
      return Error{found.error()};
    }
  }
  return steps;
}

Expected<std::vector<AttemptRecord>> TrackerStore::attempts(std::int64_t run) {
  std::vector<AttemptRecord> attempts;
  {
    if (Expected<void> done = m_database.each_row(
            "SELECT a.step, a.number, a.pid, a.executor, a.handle, a.started_ms, a.stdout_path, "
            "a.stderr_path, a.ended_ms, a.exit_code, a.signal, a.timed_out, a.error "
            "FROM attempts a JOIN steps s ON s.run = a.run AND s.id = a.step "
            "WHERE a.run = ?1 ORDER BY s.position, a.number",
            [&](sqlite::StatementRef& row) {
              AttemptRecord attempt;
              attempt.step_id = row.column_text(0);
              attempt.number = row.column_int(1);
              attempt.start.pid = row.column_int64(2);
              attempt.start.executor = row.column_text(3);
              attempt.start.handle = row.column_text(4);
              attempt.start.started_ms = row.column_int64(5);
              attempt.start.stdout_path = row.column_text(6);
              attempt.start.stderr_path = row.column_text(7);
              if (!row.is_null(8)) {
                AttemptEnd end;
                end.ended_ms = row.column_int64(8);
                if (!row.is_null(9)) {
                  end.exit_code = row.column_int(9);
                }
                end.signal = row.column_int(10);
                end.timed_out = row.column_int64(11) != 0;
                end.error = row.column_text(12);
                attempt.end = std::move(end);
              }
              attempts.push_back(std::move(attempt));
            },
            run);
        !done) {
      return Error{done.error()};
    }
  }
  if (attempts.empty()) {
    if (Expected<RunRecord> found = this->run(run); !found) {
      return Error{found.error()};
    }
  }
  return attempts;
}

Expected<std::string> TrackerStore::workflow_content(std::int64_t run) {
  Expected<CachedStatement> query =
      m_database.cached("SELECT s.content FROM runs r JOIN workflow_sources s ON s.sha256 = r.workflow_source "
                        "WHERE r.number = ?1");
  if (!query) {
    return Error{query.error()};
  }
  query->bind_all(run);
  Expected<bool> row = query->step();
  if (!row) {
    return Error{row.error()};
  }
  if (!*row) {
    return no_run(run);
  }
  return query->column_text(0);
}

// ---- What steps record ----

namespace {

/// A metric series as log_metrics keeps it during one call: its row and
/// summary, written back once at the end.
struct SeriesState {
  std::int64_t id = 0;
  /// Index among the call's series (in order of first appearance).
  std::size_t slot = 0;
  std::int64_t count = 0;
  /// Meaningful once count > 0.
  double last = 0;
  std::int64_t last_step = 0;
  std::int64_t last_ms = 0;
  /// NaN while no non-NaN value was seen.
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
};

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};

/// A point waiting for its INSERT.
struct PendingPoint {
  std::size_t slot = 0;
  std::int64_t series = 0;
  std::int64_t seq = 0;
  std::int64_t step = 0;
  double value = 0;
  std::int64_t timestamp_ms = 0;
};

// Points per INSERT statement: one statement's fixed cost (step, reset,
// program start) is shared by this many rows, which roughly halves the cost
// of a point.
constexpr int k_points_per_insert = 64;
// Points grouped by series and inserted together (see log_metrics).
constexpr std::size_t k_points_per_chunk = 16384;

std::string points_insert_sql(int rows) {
  std::string sql = "INSERT INTO metric_points (series, seq, step, value, timestamp_ms) VALUES ";
  for (int i = 0; i < rows; ++i) {
    sql += i == 0 ? "(?, ?, ?, ?, ?)" : ", (?, ?, ?, ?, ?)";
  }
  return sql;
}

std::optional<double> real_or_null(double value) {
  return std::isnan(value) ? std::nullopt : std::optional<double>(value);
}

constexpr std::string_view k_summary_columns =
    "ms.step, ms.key, ms.last_value, ms.last_step, ms.last_ms, ms.min_value, ms.max_value, ms.count";

MetricSummary read_summary(const StatementRef& row) {
  MetricSummary summary;
  summary.step_id = row.column_text(0);
  summary.key = row.column_text(1);
  summary.last = column_metric(row, 2);
  summary.last_step = row.column_int64(3);
  summary.last_timestamp_ms = row.column_int64(4);
  summary.min = column_metric(row, 5);
  summary.max = column_metric(row, 6);
  summary.count = row.column_int64(7);
  return summary;
}

constexpr std::string_view k_artifact_columns = "a.step, a.path, a.sha256, a.size, a.kind, a.name, a.created_ms";

ArtifactRecord read_artifact(const StatementRef& row, int first) {
  ArtifactRecord artifact;
  artifact.step_id = row.column_text(first);
  artifact.path = row.column_text(first + 1);
  artifact.sha256 = row.column_text(first + 2);
  artifact.size = row.column_int64(first + 3);
  artifact.kind = parse_artifact_kind(row.column_text(first + 4)).value_or(ArtifactKind::output);
  artifact.name = row.column_text(first + 5);
  artifact.created_ms = row.column_int64(first + 6);
  return artifact;
}

} // namespace

Expected<void> TrackerStore::check_step(std::int64_t run, std::string_view step) {
  bool found = false;
  Expected<void> done =
      step.empty()
          ? m_database.each_row(
                "SELECT 1 FROM runs WHERE number = ?1", [&](StatementRef&) { found = true; }, run)
          : m_database.each_row(
                "SELECT 1 FROM steps WHERE run = ?1 AND id = ?2", [&](StatementRef&) { found = true; }, run, step);
  if (!done) {
    return done;
  }
  if (found) {
    return {};
  }
  if (!step.empty()) {
    if (Expected<void> run_exists = check_step(run, {}); !run_exists) {
      return run_exists;
    }
    return Error{"run " + std::to_string(run) + " has no step '" + std::string(step) + "'"};
  }
  return no_run(run);
}

Expected<Transaction> TrackerStore::begin_step_write(std::int64_t run, std::string_view step) {
  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  if (Expected<void> exists = check_step(run, step); !exists) {
    return Error{exists.error()};
  }
  return transaction;
}

Expected<void> TrackerStore::log_metrics(std::int64_t run, std::string_view step,
                                         const std::vector<MetricPoint>& points) {
  Expected<Transaction> transaction = begin_step_write(run, step);
  if (!transaction) {
    return Error{transaction.error()};
  }
  static const std::string k_batch_sql = points_insert_sql(k_points_per_insert);
  static const std::string k_single_sql = points_insert_sql(1);
  Expected<CachedStatement> batch = m_database.cached(k_batch_sql);
  if (!batch) {
    return Error{batch.error()};
  }
  Expected<CachedStatement> single = m_database.cached(k_single_sql);
  if (!single) {
    return Error{single.error()};
  }
  // Points are inserted a chunk at a time, grouped by series (in id order,
  // each in logging order): rows of one series land side by side in the
  // primary key, so consecutive inserts find their page without a search
  // from the root, where interleaved keys (loss, acc, loss, acc...) would
  // alternate between two places.
  std::vector<PendingPoint> pending;
  std::vector<PendingPoint> grouped;
  pending.reserve(std::min(points.size(), k_points_per_chunk));
  std::vector<std::int64_t> slot_ids;
  auto bind_point = [](StatementRef& insert, int row, const PendingPoint& point) {
    int base = row * 5;
    insert.bind(base + 1, point.series);
    insert.bind(base + 2, point.seq);
    insert.bind(base + 3, point.step);
    insert.bind(base + 4, real_or_null(point.value));
    insert.bind(base + 5, point.timestamp_ms);
  };
  auto flush = [&]() -> Expected<void> {
    // A counting sort by series: linear, and stable, so logging order holds.
    std::vector<std::size_t> order(slot_ids.size());
    for (std::size_t slot = 0; slot < order.size(); ++slot) {
      order[slot] = slot;
    }
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return slot_ids[a] < slot_ids[b]; });
    std::vector<std::size_t> start(slot_ids.size(), 0);
    for (const PendingPoint& point : pending) {
      ++start[point.slot];
    }
    std::size_t offset = 0;
    for (std::size_t slot : order) {
      std::size_t count = start[slot];
      start[slot] = offset;
      offset += count;
    }
    grouped.resize(pending.size());
    for (const PendingPoint& point : pending) {
      grouped[start[point.slot]++] = point;
    }
    std::size_t next = 0;
    for (; next + k_points_per_insert <= grouped.size(); next += k_points_per_insert) {
      for (int row = 0; row < k_points_per_insert; ++row) {
        bind_point(*batch, row, grouped[next + static_cast<std::size_t>(row)]);
      }
      if (Expected<void> done = batch->run(); !done) {
        return done;
      }
    }
    for (; next < grouped.size(); ++next) {
      bind_point(*single, 0, grouped[next]);
      if (Expected<void> done = single->run(); !done) {
        return done;
      }
    }
    pending.clear();
    return {};
  };

  std::unordered_map<std::string, SeriesState, StringHash, std::equal_to<>> series;
  for (const MetricPoint& point : points) {
    auto found = series.find(std::string_view(point.key));
    if (found == series.end()) {
      SeriesState state;
      bool exists = false;
      Expected<void> done = m_database.each_row(
          "SELECT id, count, last_value, last_step, last_ms, min_value, max_value FROM metric_series "
          "WHERE run = ?1 AND step = ?2 AND key = ?3",
          [&](StatementRef& row) {
            exists = true;
            state.id = row.column_int64(0);
            state.count = row.column_int64(1);
            state.last = column_metric(row, 2);
            state.last_step = row.column_int64(3);
            state.last_ms = row.column_int64(4);
            state.min = column_metric(row, 5);
            state.max = column_metric(row, 6);
          },
          run, step, point.key);
      if (!done) {
        return done;
      }
      if (!exists) {
        Expected<CachedStatement> insert =
            m_database.cached("INSERT INTO metric_series (run, step, key) VALUES (?1, ?2, ?3)");
        if (!insert) {
          return Error{insert.error()};
        }
        insert->bind_all(run, step, point.key);
        if (Expected<void> inserted = insert->run(); !inserted) {
          return inserted;
        }
        state.id = m_database.last_insert_rowid();
      }
      state.slot = slot_ids.size();
      slot_ids.push_back(state.id);
      found = series.emplace(point.key, state).first;
    }
    SeriesState& state = found->second;
    pending.push_back(PendingPoint{state.slot, state.id, state.count, point.step, point.value, point.timestamp_ms});
    if (pending.size() == k_points_per_chunk) {
      if (Expected<void> done = flush(); !done) {
        return done;
      }
    }
    // The last point is the one with the greatest (step, timestamp); a
    // later one wins a tie.
    if (state.count == 0 || point.step > state.last_step ||
        (point.step == state.last_step && point.timestamp_ms >= state.last_ms)) {
      state.last = point.value;
      state.last_step = point.step;
      state.last_ms = point.timestamp_ms;
    }
    if (!std::isnan(point.value)) {
      state.min = std::isnan(state.min) ? point.value : std::min(state.min, point.value);
      state.max = std::isnan(state.max) ? point.value : std::max(state.max, point.value);
    }
    ++state.count;
  }
  if (Expected<void> done = flush(); !done) {
    return done;
  }
  {
    Expected<CachedStatement> update =
        m_database.cached("UPDATE metric_series SET count = ?2, last_value = ?3, last_step = ?4, last_ms = ?5, "
                          "min_value = ?6, max_value = ?7 WHERE id = ?1");
    if (!update) {
      return Error{update.error()};
    }
    for (const auto& [key, state] : series) {
      update->bind_all(state.id, state.count, real_or_null(state.last), state.last_step, state.last_ms,
                       real_or_null(state.min), real_or_null(state.max));
      if (Expected<void> done = update->run(); !done) {
        return done;
      }
    }
  }
  return transaction->commit();
}

Expected<void> TrackerStore::log_params(std::int64_t run, std::string_view step, const KeyValues& params) {
  Expected<Transaction> transaction = begin_step_write(run, step);
  if (!transaction) {
    return Error{transaction.error()};
  }
  for (const auto& [key, value] : params) {
    std::optional<std::string> logged;
    if (Expected<void> done = m_database.each_row(
            "SELECT value FROM params WHERE run = ?1 AND step = ?2 AND key = ?3",
            [&](StatementRef& row) { logged = row.column_text(0); }, run, step, key);
        !done) {
      return done;
    }
    if (logged) {
      if (*logged == value) {
        continue;
      }
      // Nothing of this call is written: the transaction rolls back.
      return Error{"param '" + key + "' of " + describe_owner(step) + " was logged as '" + *logged +
                   "'; it cannot be changed to '" + value + "'"};
    }
    Expected<CachedStatement> insert =
        m_database.cached("INSERT INTO params (run, step, key, value) VALUES (?1, ?2, ?3, ?4)");
    if (!insert) {
      return Error{insert.error()};
    }
    insert->bind_all(run, step, key, value);
    if (Expected<void> done = insert->run(); !done) {
      return done;
    }
  }
  return transaction->commit();
}

Expected<void> TrackerStore::set_tags(std::int64_t run, std::string_view step, const KeyValues& tags) {
  Expected<Transaction> transaction = begin_step_write(run, step);
  if (!transaction) {
    return Error{transaction.error()};
  }
  if (Expected<void> done = upsert_tags(m_database, run, step, tags); !done) {
    return done;
  }
  return transaction->commit();
}

Expected<void> TrackerStore::add_artifacts(std::int64_t run, std::string_view step,
                                           const std::vector<NewArtifact>& artifacts, std::int64_t at_ms) {
  // Staged temps from `first` on are still ours to discard.
  auto fail = [&](std::size_t first, std::string message) -> Expected<void> {
    for (std::size_t i = first; i < artifacts.size(); ++i) {
      m_blobs.discard(artifacts[i].blob);
    }
    return Error{std::move(message)};
  };
  // The write lock is held from here to the commit, blob renames included:
  // gc removes blob files only under it, so it never sees a blob renamed
  // into place whose row is not yet written.
  Expected<Transaction> transaction = begin_step_write(run, step);
  if (!transaction) {
    return fail(0, transaction.error());
  }
  for (std::size_t i = 0; i < artifacts.size(); ++i) {
    const NewArtifact& artifact = artifacts[i];
    const StagedBlob& blob = artifact.blob;
    bool known = false;
    if (Expected<void> done = m_database.each_row(
            "SELECT 1 FROM blobs WHERE sha256 = ?1", [&](StatementRef&) { known = true; }, blob.sha256);
        !done) {
      return fail(i, done.error());
    }
    if (known && m_blobs.contains(blob.sha256)) {
      m_blobs.discard(blob);
    } else {
      // A row without its file (a damaged store) is repaired by this copy.
      if (Expected<void> committed = m_blobs.commit(blob); !committed) {
        return fail(i + 1, committed.error());
      }
      if (!known) {
        Expected<CachedStatement> insert =
            m_database.cached("INSERT INTO blobs (sha256, size, created_ms) VALUES (?1, ?2, ?3)");
        if (!insert) {
          return fail(i + 1, insert.error());
        }
        insert->bind_all(blob.sha256, blob.size, at_ms);
        if (Expected<void> done = insert->run(); !done) {
          return fail(i + 1, done.error());
        }
      }
    }
    Expected<CachedStatement> insert =
        m_database.cached("INSERT OR REPLACE INTO artifacts (run, step, path, sha256, size, kind, name, created_ms) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (!insert) {
      return fail(i + 1, insert.error());
    }
    insert->bind_all(run, step, artifact.logical_path, blob.sha256, blob.size, to_string(artifact.kind), artifact.name,
                     at_ms);
    if (Expected<void> done = insert->run(); !done) {
      return fail(i + 1, "artifact '" + artifact.logical_path + "': " + done.error());
    }
  }
  // A failed commit leaves blob files without rows: gc removes them.
  return transaction->commit();
}

Expected<std::vector<KeyValue>> TrackerStore::key_values(std::int64_t run, std::string_view table) {
  std::vector<KeyValue> entries;
  const std::string t(table);
  if (Expected<void> done = m_database.each_row(
          "SELECT x.step, x.key, x.value FROM " + t +
              " x LEFT JOIN steps s ON s.run = x.run AND s.id = x.step "
              "WHERE x.run = ?1 ORDER BY coalesce(s.position, -1), x.step, x.key",
          [&](StatementRef& row) {
            entries.push_back({row.column_text(0), row.column_text(1), row.column_text(2)});
          },
          run);
      !done) {
    return Error{done.error()};
  }
  if (entries.empty()) {
    if (Expected<void> exists = check_step(run, {}); !exists) {
      return Error{exists.error()};
    }
  }
  return entries;
}

Expected<std::vector<KeyValue>> TrackerStore::params(std::int64_t run) {
  return key_values(run, "params");
}

Expected<std::vector<KeyValue>> TrackerStore::tags(std::int64_t run) {
  return key_values(run, "tags");
}

Expected<std::vector<MetricSummary>> TrackerStore::metric_summaries(std::int64_t run) {
  std::vector<MetricSummary> summaries;
  if (Expected<void> done = m_database.each_row(
          "SELECT " + std::string(k_summary_columns) +
              " FROM metric_series ms LEFT JOIN steps s ON s.run = ms.run AND s.id = ms.step "
              "WHERE ms.run = ?1 AND ms.count > 0 ORDER BY coalesce(s.position, -1), ms.step, ms.key",
          [&](StatementRef& row) { summaries.push_back(read_summary(row)); }, run);
      !done) {
    return Error{done.error()};
  }
  if (summaries.empty()) {
    if (Expected<void> exists = check_step(run, {}); !exists) {
      return Error{exists.error()};
    }
  }
  return summaries;
}

Expected<void>
TrackerStore::metric_history(std::int64_t run, const HistoryQuery& query,
                             const std::function<void(const std::string& step_id, const MetricPoint&)>& on_point) {
  // One snapshot for the series and their points.
  Expected<Transaction> transaction = m_database.begin(TransactionKind::deferred);
  if (!transaction) {
    return Error{transaction.error()};
  }
  std::vector<std::pair<std::int64_t, std::string>> series;
  std::optional<std::string> step_filter;
  if (!query.step.empty()) {
    step_filter = query.step;
  }
  if (Expected<void> done = m_database.each_row(
          "SELECT ms.id, ms.step FROM metric_series ms LEFT JOIN steps s ON s.run = ms.run AND s.id = ms.step "
          "WHERE ms.run = ?1 AND ms.key = ?2 AND (?3 IS NULL OR ms.step = ?3) "
          "ORDER BY coalesce(s.position, -1), ms.step",
          [&](StatementRef& row) { series.emplace_back(row.column_int64(0), row.column_text(1)); }, run, query.key,
          step_filter);
      !done) {
    return done;
  }
  if (series.empty()) {
    if (Expected<void> exists = check_step(run, query.step); !exists) {
      return exists;
    }
    return transaction->commit();
  }
  Expected<CachedStatement> points = m_database.cached("SELECT step, value, timestamp_ms FROM metric_points "
                                                       "WHERE series = ?1 AND step BETWEEN ?2 AND ?3 ORDER BY seq");
  if (!points) {
    return Error{points.error()};
  }
  // One point reused for every row: the key is the query's, the rest is
  // overwritten, so streaming allocates nothing per point.
  MetricPoint point;
  point.key = query.key;
  for (const auto& [id, step_id] : series) {
    points->bind_all(id, query.min_step.value_or(std::numeric_limits<std::int64_t>::min()),
                     query.max_step.value_or(std::numeric_limits<std::int64_t>::max()));
    if (Expected<void> done = points->for_each_row([&](StatementRef& row) {
          point.step = row.column_int64(0);
          point.value = column_metric(row, 1);
          point.timestamp_ms = row.column_int64(2);
          on_point(step_id, point);
        });
        !done) {
      return done;
    }
  }
  return transaction->commit();
}

Expected<std::vector<ArtifactRecord>> TrackerStore::artifacts(std::int64_t run, std::string_view step) {
  std::vector<ArtifactRecord> artifacts;
  auto read = [&](StatementRef& row) { artifacts.push_back(read_artifact(row, 0)); };
  // Two statements rather than "?2 IS NULL OR a.step = ?2", which keeps
  // SQLite from using the key on step: one step's artifacts would scan the
  // whole run's (quadratic for a cache check per step of a large run).
  Expected<void> done =
      step.empty() ? m_database.each_row("SELECT " + std::string(k_artifact_columns) +
                                             " FROM artifacts a LEFT JOIN steps s ON s.run = a.run AND s.id = a.step "
                                             "WHERE a.run = ?1 ORDER BY coalesce(s.position, -1), a.step, a.path",
                                         read, run)
                   : m_database.each_row("SELECT " + std::string(k_artifact_columns) +
                                             " FROM artifacts a WHERE a.run = ?1 AND a.step = ?2 ORDER BY a.path",
                                         read, run, step);
  if (!done) {
    return Error{done.error()};
  }
  if (artifacts.empty()) {
    if (Expected<void> exists = check_step(run, step); !exists) {
      return Error{exists.error()};
    }
  }
  return artifacts;
}

Expected<std::vector<ArtifactRecord>> TrackerStore::declared_outputs(std::int64_t run) {
  std::vector<ArtifactRecord> artifacts;
  // In key order (run, step, path): no sort, no join.
  Expected<void> done = m_database.each_row(
      "SELECT " + std::string(k_artifact_columns) + " FROM artifacts a WHERE a.run = ?1 AND a.kind <> ?2",
      [&](StatementRef& row) { artifacts.push_back(read_artifact(row, 0)); }, run, to_string(ArtifactKind::logged));
  if (!done) {
    return Error{done.error()};
  }
  return artifacts;
}

Expected<std::vector<TrackerStore::ModelRecord>> TrackerStore::models(std::string_view workflow, int limit) {
  Expected<Transaction> transaction = m_database.begin(TransactionKind::deferred);
  if (!transaction) {
    return Error{transaction.error()};
  }
  std::vector<ModelRecord> models;
  if (Expected<void> done = m_database.each_row(
          "SELECT r.number, r.id, r.workflow_name, r.status, " + std::string(k_artifact_columns) +
              " FROM artifacts a JOIN runs r ON r.number = a.run "
              "LEFT JOIN steps s ON s.run = a.run AND s.id = a.step "
              "WHERE a.kind = 'model' AND (?1 = '' OR r.workflow_name = ?1) "
              "ORDER BY a.run DESC, coalesce(s.position, -1), a.step, a.path LIMIT ?2",
          [&](StatementRef& row) {
            ModelRecord model;
            model.run_number = row.column_int64(0);
            model.run_id = row.column_text(1);
            model.workflow_name = row.column_text(2);
            model.run_status = parse_run_status(row.column_text(3)).value_or(RunStatus::crashed);
            model.artifact = read_artifact(row, 4);
            models.push_back(std::move(model));
          },
          workflow, limit > 0 ? std::int64_t{limit} : std::int64_t{-1});
      !done) {
    return Error{done.error()};
  }

  // Per run: which steps are downstream of which (from needs), and what
  // every step measured.
  struct RunInfo {
    std::map<std::string, std::vector<std::string>, std::less<>> dependents;
    std::set<std::string, std::less<>> evaluates;
    std::vector<MetricSummary> summaries;
  };
  std::map<std::int64_t, RunInfo> runs;
  for (ModelRecord& model : models) {
    auto [it, inserted] = runs.try_emplace(model.run_number);
    RunInfo& info = it->second;
    if (inserted) {
      if (Expected<void> done = m_database.each_row(
              "SELECT id, kind, needs_json FROM steps WHERE run = ?1",
              [&](StatementRef& row) {
                std::string id = row.column_text(0);
                if (row.column_text(1) == "evaluate") {
                  info.evaluates.insert(id);
                }
                for (std::string& need : parse_needs(row.column_text(2))) {
                  info.dependents[need].push_back(id);
                }
              },
              model.run_number);
          !done) {
        return Error{done.error()};
      }
      Expected<std::vector<MetricSummary>> summaries = metric_summaries(model.run_number);
      if (!summaries) {
        return Error{summaries.error()};
      }
      info.summaries = std::move(summaries).value();
    }
    std::set<std::string, std::less<>> downstream;
    std::vector<std::string> frontier{model.artifact.step_id};
    while (!frontier.empty()) {
      std::string step = std::move(frontier.back());
      frontier.pop_back();
      auto found = info.dependents.find(step);
      if (found == info.dependents.end()) {
        continue;
      }
      for (const std::string& dependent : found->second) {
        if (downstream.insert(dependent).second) {
          frontier.push_back(dependent);
        }
      }
    }
    for (const MetricSummary& summary : info.summaries) {
      if (downstream.count(summary.step_id) != 0 && info.evaluates.count(summary.step_id) != 0) {
        model.metrics.push_back(summary);
      }
    }
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  return models;
}

Expected<std::vector<RunRecord>> TrackerStore::search_runs(const FilterNode& filter,
                                                           const std::vector<OrderTerm>& order, int limit) {
  SqlFragment where = filter_to_sql(filter);
  SqlFragment order_by = order_to_sql(order);
  std::string sql = "SELECT " + std::string(k_run_columns) + " FROM runs r WHERE " + where.sql + " ORDER BY " +
                    order_by.sql + " LIMIT ?";
  // Prepared for this call only: each filter is its own SQL text, and the
  // connection's cache is for the statements every run uses.
  Expected<sqlite::Statement> query = m_database.prepare(sql);
  if (!query) {
    return Error{query.error()};
  }
  int index = 0;
  for (const std::vector<FilterValue>* args : {&where.args, &order_by.args}) {
    for (const FilterValue& arg : *args) {
      ++index;
      std::visit([&](const auto& value) { query->bind(index, value); }, arg);
    }
  }
  query->bind(++index, limit > 0 ? std::int64_t{limit} : std::int64_t{-1});

  // One snapshot for the runs and their step counts.
  Expected<Transaction> transaction = m_database.begin(TransactionKind::deferred);
  if (!transaction) {
    return Error{transaction.error()};
  }
  Expected<std::vector<RunRecord>> runs = read_runs(*query);
  if (!runs) {
    return Error{runs.error()};
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  return runs;
}

// ---- Deleting ----

Expected<std::vector<std::string>> TrackerStore::delete_run_rows(const std::vector<std::int64_t>& runs) {
  std::vector<std::string> ids;
  std::set<std::string> sources;
  for (std::int64_t number : runs) {
    if (Expected<void> done = m_database.each_row(
            "SELECT id, workflow_source FROM runs WHERE number = ?1",
            [&](StatementRef& row) {
              ids.push_back(row.column_text(0));
              sources.insert(row.column_text(1));
            },
            number);
        !done) {
      return Error{done.error()};
    }
    // Points have no foreign key (bulk inserts stay lean): they go by
    // series, each a range of the primary key. The rest cascades from runs.
    constexpr std::string_view k_deletes[] = {
        "DELETE FROM metric_points WHERE series IN (SELECT id FROM metric_series WHERE run = ?1)",
        "DELETE FROM runs WHERE number = ?1",
    };
    for (std::string_view sql : k_deletes) {
      Expected<CachedStatement> statement = m_database.cached(sql);
      if (!statement) {
        return Error{statement.error()};
      }
      statement->bind_all(number);
      if (Expected<void> done = statement->run(); !done) {
        return Error{"deleting run " + std::to_string(number) + ": " + done.error()};
      }
    }
  }
  for (const std::string& source : sources) {
    Expected<CachedStatement> statement = m_database.cached("DELETE FROM workflow_sources WHERE sha256 = ?1 AND NOT "
                                                            "EXISTS (SELECT 1 FROM runs WHERE workflow_source = ?1)");
    if (!statement) {
      return Error{statement.error()};
    }
    statement->bind_all(source);
    if (Expected<void> done = statement->run(); !done) {
      return Error{done.error()};
    }
  }
  return ids;
}

void TrackerStore::remove_logs(const std::vector<std::string>& run_ids) {
  // The rows are gone already; a log directory that cannot be removed is
  // left behind rather than undoing the deletion.
  for (const std::string& id : run_ids) {
    if (!id.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(m_directory / "logs" / id, ignored);
    }
  }
}

Expected<TrackerStore::BlobSweep> TrackerStore::sweep_blobs(const std::vector<std::int64_t>& leaving, SweepMode mode,
                                                            OrphanFiles orphans) {
  // Removing takes the write lock before looking: add_artifacts renames
  // blobs into place and writes their rows under it, so nothing seen
  // unreferenced here can gain a reference before the commit.
  // Deleting a blob row would make SQLite look for artifact rows naming it,
  // a scan of artifacts per blob without the index schema 6 dropped. The
  // query below has just established there are none, under the same lock,
  // so the foreign key check is off for this transaction (the pragma only
  // takes effect outside one).
  std::optional<sqlite::ForeignKeysOff> foreign_keys;
  if (mode == SweepMode::remove) {
    Expected<sqlite::ForeignKeysOff> off = m_database.foreign_keys_off();
    if (!off) {
      return Error{off.error()};
    }
    foreign_keys.emplace(std::move(*off));
  }
  Expected<Transaction> transaction =
      m_database.begin(mode == SweepMode::remove ? TransactionKind::immediate : TransactionKind::deferred);
  if (!transaction) {
    return Error{transaction.error()};
  }
  BlobSweep sweep;
  std::vector<std::pair<std::string, std::int64_t>> unreferenced;
  // NOT IN over an uncorrelated subquery: SQLite scans artifacts once into
  // a temporary index (artifacts has no index on sha256, see schema 6).
  if (Expected<void> done = m_database.each_row(
          "SELECT b.sha256, b.size FROM blobs b WHERE b.sha256 NOT IN (SELECT a.sha256 FROM artifacts a "
          "WHERE a.run NOT IN (SELECT value FROM json_each(?1)))",
          [&](StatementRef& row) { unreferenced.emplace_back(row.column_text(0), row.column_int64(1)); },
          dump(nlohmann::json(leaving)));
      !done) {
    return Error{done.error()};
  }
  for (const auto& [hash, size] : unreferenced) {
    if (mode == SweepMode::remove) {
      Expected<CachedStatement> remove = m_database.cached("DELETE FROM blobs WHERE sha256 = ?1");
      if (!remove) {
        return Error{remove.error()};
      }
      remove->bind_all(hash);
      if (Expected<void> done = remove->run(); !done) {
        return Error{done.error()};
      }
      // Files go before the commit, under the lock. Should the commit then
      // fail, the rows stay without files; staging that content again
      // restores them (see add_artifacts).
      if (Expected<void> removed = m_blobs.remove(hash); !removed) {
        return Error{removed.error()};
      }
    }
    ++sweep.blobs;
    sweep.bytes += size;
  }
  if (orphans == OrphanFiles::include) {
    // Files with no row: left by a process that died between renaming a
    // blob and committing its row.
    Expected<std::vector<std::string>> files = m_blobs.list();
    if (!files) {
      return Error{files.error()};
    }
    for (const std::string& hash : *files) {
      bool known = false;
      if (Expected<void> done = m_database.each_row(
              "SELECT 1 FROM blobs WHERE sha256 = ?1", [&](StatementRef&) { known = true; }, hash);
          !done) {
        return Error{done.error()};
      }
      if (known) {
        continue;
      }
      std::error_code error;
      std::uintmax_t size = std::filesystem::file_size(m_blobs.path_of(hash), error);
      if (mode == SweepMode::remove) {
        if (Expected<void> removed = m_blobs.remove(hash); !removed) {
          return Error{removed.error()};
        }
      }
      ++sweep.blobs;
      sweep.bytes += error ? 0 : static_cast<std::int64_t>(size);
    }
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  return sweep;
}

Expected<TrackerStore::DeleteReport> TrackerStore::delete_runs(const std::vector<std::int64_t>& runs) {
  DeleteReport report;
  for (std::int64_t number : runs) {
    if (std::find(report.runs.begin(), report.runs.end(), number) == report.runs.end()) {
      report.runs.push_back(number);
    }
  }
  std::vector<std::string> ids;
  {
    Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
    if (!transaction) {
      return Error{transaction.error()};
    }
    std::vector<std::int64_t> running;
    for (std::int64_t number : report.runs) {
      std::optional<std::string> status;
      if (Expected<void> done = m_database.each_row(
              "SELECT status FROM runs WHERE number = ?1", [&](StatementRef& row) { status = row.column_text(0); },
              number);
          !done) {
        return Error{done.error()};
      }
      if (!status) {
        return no_run(number);
      }
      if (*status == to_string(RunStatus::running)) {
        running.push_back(number);
      }
    }
    if (!running.empty()) {
      return Error{(running.size() == 1 ? "run " : "runs ") + join_numbers(running) +
                   (running.size() == 1 ? " is" : " are") +
                   " still running and cannot be deleted (a run whose runner died is marked crashed by the next "
                   "kiln command on its host); nothing was deleted"};
    }
    Expected<std::vector<std::string>> deleted = delete_run_rows(report.runs);
    if (!deleted) {
      return Error{deleted.error()};
    }
    ids = std::move(deleted).value();
    if (Expected<void> committed = transaction->commit(); !committed) {
      return Error{committed.error()};
    }
  }
  remove_logs(ids);
  Expected<BlobSweep> sweep = sweep_blobs({}, SweepMode::remove, OrphanFiles::keep);
  if (!sweep) {
    return Error{"the runs were deleted, but not their artifacts: " + sweep.error()};
  }
  report.blobs_removed = sweep->blobs;
  report.bytes_freed = sweep->bytes;
  return report;
}

Expected<TrackerStore::GcReport> TrackerStore::gc(const GcPolicy& policy, std::int64_t now_ms) {
  // Stale: older than any staging could take while its process lives.
  constexpr std::int64_t k_stale_temp_ms = 60 * 60 * 1000;
  GcReport report;
  bool dry = policy.dry_run;
  std::vector<std::string> ids;
  std::vector<std::int64_t> numbers;
  {
    Expected<Transaction> transaction = m_database.begin(dry ? TransactionKind::deferred : TransactionKind::immediate);
    if (!transaction) {
      return Error{transaction.error()};
    }
    if (policy.keep_last || policy.ended_before_ms) {
      // Ranked newest first among each workflow's finished runs.
      Expected<CachedStatement> query = m_database.cached(
          "SELECT " + std::string(k_run_columns) +
          " FROM runs WHERE number IN (SELECT number FROM (SELECT number, ended_ms, row_number() OVER "
          "(PARTITION BY workflow_name ORDER BY number DESC) AS rank FROM runs WHERE status != 'running') "
          "WHERE (?1 IS NULL OR rank > ?1) AND (?2 IS NULL OR ended_ms < ?2)) ORDER BY number");
      if (!query) {
        return Error{query.error()};
      }
      std::optional<std::int64_t> keep_last;
      if (policy.keep_last) {
        keep_last = std::max(0, *policy.keep_last);
      }
      query->bind_all(keep_last, policy.ended_before_ms);
      Expected<std::vector<RunRecord>> candidates = read_runs(*query);
      if (!candidates) {
        return Error{candidates.error()};
      }
      report.runs = std::move(candidates).value();
    }
    for (const RunRecord& run : report.runs) {
      numbers.push_back(run.number);
    }
    if (!dry && !numbers.empty()) {
      Expected<std::vector<std::string>> deleted = delete_run_rows(numbers);
      if (!deleted) {
        return Error{deleted.error()};
      }
      ids = std::move(deleted).value();
    }
    if (Expected<void> committed = transaction->commit(); !committed) {
      return Error{committed.error()};
    }
  }
  remove_logs(ids);
  // Dry, the runs are still there: count the blobs only they reference.
  Expected<BlobSweep> sweep = sweep_blobs(dry ? numbers : std::vector<std::int64_t>{},
                                          dry ? SweepMode::report : SweepMode::remove, OrphanFiles::include);
  if (!sweep) {
    return Error{sweep.error()};
  }
  report.blobs_removed = sweep->blobs;
  report.bytes_freed = sweep->bytes;
  for (const std::filesystem::path& temp : m_blobs.stale_temps(now_ms, k_stale_temp_ms)) {
    std::error_code error;
    if (dry || std::filesystem::remove(temp, error)) {
      ++report.temps_removed;
    }
  }
  return report;
}

std::filesystem::path TrackerStore::log_path(std::string_view run_id, std::string_view step, int attempt,
                                             std::string_view stream) const {
  std::string name(step);
  name += '.';
  name += std::to_string(attempt);
  name += '.';
  name += stream;
  return m_directory / "logs" / std::string(run_id) / name;
}

Expected<std::vector<OrphanAttempt>>
TrackerStore::recover_crashed(const std::string& host, const std::function<bool(const RunnerIdentity&)>& alive,
                              std::int64_t now_ms) {
  // Liveness is checked outside the write lock (it reads /proc and may be
  // slow); the status is checked again under it, so a run finished or
  // recovered meanwhile by another process is left alone.
  std::vector<std::int64_t> dead;
  {
    std::vector<std::pair<std::int64_t, RunnerIdentity>> candidates;
    {
      if (Expected<void> done = m_database.each_row(
              "SELECT number, runner_host, runner_pid, runner_start_ticks FROM runs "
              "WHERE status = 'running' AND runner_host = ?1 ORDER BY number",
              [&](sqlite::StatementRef& row) {
                RunnerIdentity runner{row.column_text(1), row.column_int64(2), row.column_int64(3)};
                candidates.emplace_back(row.column_int64(0), std::move(runner));
              },
              host);
          !done) {
        return Error{done.error()};
      }
    }
    for (const auto& [number, runner] : candidates) {
      bool is_alive = true;
      try {
        is_alive = alive(runner);
      } catch (const std::exception& error) {
        return Error{"checking the runner of run " + std::to_string(number) + ": " + error.what()};
      }
      if (!is_alive) {
        dead.push_back(number);
      }
    }
  }
  std::vector<OrphanAttempt> orphans;
  if (dead.empty()) {
    return orphans;
  }

  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  for (std::int64_t number : dead) {
    std::string run_id;
    {
      Expected<CachedStatement> query =
          m_database.cached("SELECT id FROM runs WHERE number = ?1 AND status = 'running'");
      if (!query) {
        return Error{query.error()};
      }
      query->bind_all(number);
      Expected<bool> row = query->step();
      if (!row) {
        return Error{row.error()};
      }
      if (!*row) {
        continue;
      }
      run_id = query->column_text(0);
    }
    {
      if (Expected<void> done = m_database.each_row(
              "SELECT a.step, a.number, a.executor, a.handle FROM attempts a "
              "JOIN steps s ON s.run = a.run AND s.id = a.step "
              "WHERE a.run = ?1 AND a.ended_ms IS NULL ORDER BY s.position, a.number",
              [&](sqlite::StatementRef& row) {
                orphans.push_back(OrphanAttempt{number, run_id, row.column_text(0), row.column_int(1),
                                                row.column_text(2), row.column_text(3)});
              },
              number);
          !done) {
        return Error{done.error()};
      }
    }
    // The run ended, as far as anyone can tell, when the store last heard
    // from it: recovery may come days later, and its time would make the
    // run look that long.
    std::int64_t last_seen = now_ms;
    {
      if (Expected<void> done = m_database.each_row(
              "SELECT max((SELECT started_ms FROM runs WHERE number = ?1), "
              "coalesce((SELECT max(max(started_ms, coalesce(ended_ms, 0))) FROM attempts WHERE run = ?1), 0), "
              "coalesce((SELECT max(max(coalesce(started_ms, 0), coalesce(ended_ms, 0))) FROM steps "
              "WHERE run = ?1), 0))",
              [&](sqlite::StatementRef& row) { last_seen = std::min(now_ms, row.column_int64(0)); }, number);
          !done) {
        return Error{done.error()};
      }
    }
    constexpr std::string_view k_updates[] = {
        "UPDATE attempts SET ended_ms = ?2, error = ?3 WHERE run = ?1 AND ended_ms IS NULL",
        "UPDATE steps SET status = 'failed', ended_ms = ?2, reason = ?3 "
        "WHERE run = ?1 AND status = 'running'",
        "UPDATE steps SET status = 'cancelled', ended_ms = ?2, reason = ?3 "
        "WHERE run = ?1 AND status = 'pending'",
    };
    for (std::string_view sql : k_updates) {
      Expected<CachedStatement> update = m_database.cached(sql);
      if (!update) {
        return Error{update.error()};
      }
      update->bind_all(number, last_seen, k_runner_died);
      if (Expected<void> done = update->run(); !done) {
        return Error{done.error()};
      }
    }
    Expected<CachedStatement> update =
        m_database.cached("UPDATE runs SET status = 'crashed', exit_code = NULL, ended_ms = ?2 WHERE number = ?1");
    if (!update) {
      return Error{update.error()};
    }
    update->bind_all(number, last_seen);
    if (Expected<void> done = update->run(); !done) {
      return Error{done.error()};
    }
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  return orphans;
}

} // namespace kiln::core
