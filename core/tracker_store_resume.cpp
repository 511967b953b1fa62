// TrackerStore: reopening a run for `kiln resume`. One transaction, like
// every other change to the store, so a resume killed at any point leaves
// either the run as it was or the run reopened, never half of it.

#include "core/tracker_store.hpp"

#include "core/hash.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

namespace kiln::core {

namespace {

using sqlite::CachedStatement;
using sqlite::StatementRef;
using sqlite::TransactionKind;

} // namespace

Expected<RunRecord> TrackerStore::reopen_run(std::int64_t run, const RunReopen& reopen) {
  std::string source_hash;
  if (reopen.workflow_content) {
    try {
      source_hash = sha256_hex(*reopen.workflow_content);
    } catch (const std::exception& error) {
      return Error{error.what()};
    }
  }
  auto write = [this](std::string_view sql, const auto&... args) -> Expected<void> {
    Expected<CachedStatement> statement = m_database.cached(sql);
    if (!statement) {
      return Error{statement.error()};
    }
    statement->bind_all(args...);
    return statement->run();
  };

  Expected<sqlite::Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  {
    std::optional<RunStatus> status;
    RunnerIdentity runner;
    if (Expected<void> done = m_database.each_row(
            "SELECT status, runner_host, runner_pid FROM runs WHERE number = ?1",
            [&](StatementRef& row) {
              status = parse_run_status(row.column_text(0)).value_or(RunStatus::crashed);
              runner.host = row.column_text(1);
              runner.pid = row.column_int64(2);
            },
            run);
        !done) {
      return Error{done.error()};
    }
    if (!status) {
      return no_run(run);
    }
    if (*status == RunStatus::running) {
      return Error{"run " + std::to_string(run) + " is still running (kiln pid " + std::to_string(runner.pid) + " on " +
                   runner.host + "); only a failed, cancelled or crashed run can be resumed"};
    }
    if (*status == RunStatus::succeeded) {
      return Error{"run " + std::to_string(run) + " succeeded: there is nothing to resume"};
    }
  }

  // The steps as the session runs them: recorded ones follow the file, new
  // ones are added; a recorded step the file lost cannot go on.
  {
    std::unordered_set<std::string> recorded;
    if (Expected<void> done = m_database.each_row(
            "SELECT id FROM steps WHERE run = ?1", [&](StatementRef& row) { recorded.insert(row.column_text(0)); },
            run);
        !done) {
      return Error{done.error()};
    }
    std::int64_t position = 0;
    for (const NewStep& step : reopen.steps) {
      const std::string needs =
          nlohmann::json(step.needs).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      Expected<void> done =
          recorded.erase(step.id) > 0
              ? write("UPDATE steps SET kind = ?3, needs_json = ?4, position = ?5 WHERE run = ?1 AND id = ?2", run,
                      step.id, step.kind, needs, position)
              : write("INSERT INTO steps (run, id, kind, needs_json, position, command, workdir, status) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
                      run, step.id, step.kind, needs, position, step.command, step.workdir);
      if (!done) {
        return Error{"step '" + step.id + "': " + done.error()};
      }
      ++position;
    }
    if (!recorded.empty()) {
      std::vector<std::string> names(recorded.begin(), recorded.end());
      std::sort(names.begin(), names.end());
      std::string listed;
      for (const std::string& id : names) {
        listed += (listed.empty() ? "'" : ", '") + id + "'";
      }
      return Error{"run " + std::to_string(run) + (names.size() == 1 ? " has step " : " has steps ") + listed +
                   ", which the workflow no longer has"};
    }
  }

  std::int64_t resumes = 0;
  if (Expected<void> done = m_database.each_row(
          "SELECT value FROM tags WHERE run = ?1 AND step = '' AND key = 'kiln.resumed'",
          [&](StatementRef& row) {
            const std::string text = row.column_text(0);
            std::from_chars(text.data(), text.data() + text.size(), resumes);
          },
          run);
      !done) {
    return Error{done.error()};
  }
  nlohmann::json tags = {{"kiln.resumed", std::to_string(resumes + 1)}, {"kiln.resume.command", reopen.command_line}};
  if (reopen.workflow_content) {
    tags["kiln.workflow.hash"] = reopen.workflow_hash;
    if (Expected<void> done = write("INSERT OR IGNORE INTO workflow_sources (sha256, content) VALUES (?1, ?2)",
                                    source_hash, *reopen.workflow_content);
        !done) {
      return Error{done.error()};
    }
    if (Expected<void> done = write("UPDATE runs SET workflow_source = ?2, workflow_hash = ?3 WHERE number = ?1", run,
                                    source_hash, reopen.workflow_hash);
        !done) {
      return Error{done.error()};
    }
  }
  const std::string tag_json = tags.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // The steps reset are those left pending.
  const std::string in_reset = " AND step IN (SELECT id FROM steps WHERE run = ?1 AND status = 'pending')";
  Expected<void> done = write("UPDATE runs SET status = 'running', exit_code = NULL, ended_ms = NULL, "
                              "runner_host = ?2, runner_pid = ?3, runner_start_ticks = ?4 WHERE number = ?1",
                              run, reopen.runner.host, reopen.runner.pid, reopen.runner.start_ticks);
  if (done) {
    done = write("UPDATE steps SET status = 'pending', ended_ms = NULL, reason = '' "
                 "WHERE run = ?1 AND status NOT IN ('succeeded', 'cached')",
                 run);
  }
  if (done) {
    done = write("INSERT INTO tags (run, step, key, value) SELECT ?1, '', key, value FROM json_each(?2) WHERE true "
                 "ON CONFLICT (run, step, key) DO UPDATE SET value = excluded.value",
                 run, tag_json);
  }
  // The remote copy is behind again: the run's tags and final status, and
  // all of the reset steps (their metric points are resent from the start:
  // new attempts append to series already sent, and MLflow keeps an
  // identical point once).
  if (done) {
    done = write("UPDATE remote_runs SET finished = 0, tags_sent = 0 WHERE run = ?1 AND step = ''", run);
  }
  if (done) {
    const std::string resend = "UPDATE remote_runs SET finished = 0, tags_sent = 0, points_series = 0, "
                               "points_seq = -1, points_sent = 0 WHERE run = ?1";
    done = write(resend + in_reset, run);
  }
  if (done) {
    done = write("DELETE FROM remote_artifacts WHERE run = ?1" + in_reset, run);
  }
  if (done) {
    done = write("UPDATE push_records SET state = 'pending', error = '' WHERE run = ?1", run);
  }
  if (!done) {
    return Error{done.error()};
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  return this->run(run);
}

} // namespace kiln::core
