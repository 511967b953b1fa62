#include "core/tracker_store.hpp"

#include "core/hash.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <exception>
#include <system_error>
#include <utility>

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
  json["steps"] = {{"total", run.steps.total()},       {"pending", run.steps.pending}, {"running", run.steps.running},
                   {"succeeded", run.steps.succeeded}, {"failed", run.steps.failed},   {"skipped", run.steps.skipped},
                   {"cancelled", run.steps.cancelled}};
}

void to_json(nlohmann::json& json, const StepRecord& step) {
  json = nlohmann::json::object();
  json["id"] = step.id;
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
  Expected<void> pragmas = database->exec(fresh ? "PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON"
                                                : "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON");
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

Expected<RunRecord> TrackerStore::create_run(const NewRun& new_run) {
  std::string id;
  std::string source_hash;
  try {
    id = random_hex_id();
    source_hash = sha256_hex(new_run.workflow_content);
  } catch (const std::exception& error) {
    return Error{error.what()};
  }

  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
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
  std::int64_t number = m_database.last_insert_rowid();
  {
    Expected<CachedStatement> insert =
        m_database.cached("INSERT INTO steps (run, id, position, kind, command, needs_json, status) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!insert) {
      return Error{insert.error()};
    }
    std::int64_t position = 0;
    for (const NewStep& step : new_run.steps) {
      insert->bind_all(number, step.id, position++, step.kind, step.command, dump(nlohmann::json(step.needs)),
                       to_string(StepStatus::pending));
      if (Expected<void> done = insert->run(); !done) {
        return Error{"step '" + step.id + "': " + done.error()};
      }
    }
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }

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
  run.steps.pending = static_cast<int>(new_run.steps.size());
  return run;
}

// The single-statement writes below run in autocommit mode: SQLite starts
// such a statement's transaction with the write lock requested up front and
// waits on the busy handler for it, which is what BEGIN IMMEDIATE does for
// multi-statement transactions, at a third of the statements.

Expected<void> TrackerStore::set_step_commands(std::int64_t run,
                                               const std::vector<std::pair<std::string, std::string>>& commands) {
  Expected<Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  {
    Expected<CachedStatement> update = m_database.cached("UPDATE steps SET command = ?3 WHERE run = ?1 AND id = ?2");
    if (!update) {
      return Error{update.error()};
    }
    for (const auto& [step, command] : commands) {
      update->bind_all(run, step, command);
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
    if (Expected<void> done = query->for_each_row([&](sqlite::StatementRef& row) { runs.push_back(read_run(row)); });
        !done) {
      return Error{done.error()};
    }
  }
  for (RunRecord& run : runs) {
    if (Expected<bool> loaded = load_step_counts(run); !loaded) {
      return Error{loaded.error()};
    }
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
            "SELECT id, kind, command, needs_json, status, started_ms, ended_ms, attempts, reason "
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
