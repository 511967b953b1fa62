// TrackerStore: what has been pushed to remote trackers (schema version 4).
// Each call is one short statement or transaction, like the rest of the
// store, so a push killed at any point leaves progress that is true: at
// worst the requests in flight (one per connection) were acknowledged but
// not yet marked, and are sent again; MLflow accepts an equal param, and its
// SQL stores keep identical points once.

#include "core/tracker_store.hpp"

#include <cmath>
#include <limits>

namespace kiln::core {

namespace {

using sqlite::CachedStatement;
using sqlite::StatementRef;

std::optional<PushState> parse_push_state(std::string_view text) {
  for (PushState state : {PushState::pending, PushState::synced, PushState::failed}) {
    if (to_string(state) == text) {
      return state;
    }
  }
  return std::nullopt;
}

} // namespace

std::string_view to_string(PushState state) {
  switch (state) {
  case PushState::pending: return "pending";
  case PushState::synced: return "synced";
  case PushState::failed: return "failed";
  }
  return "pending";
}

Expected<std::vector<RemoteRunState>> TrackerStore::remote_runs(std::string_view remote, std::int64_t run) {
  std::vector<RemoteRunState> states;
  Expected<void> done = m_database.each_row(
      "SELECT step, experiment_id, remote_id, artifact_uri, params_sent, tags_sent, points_series, points_seq, "
      "points_sent, finished FROM remote_runs WHERE remote = ?1 AND run = ?2 ORDER BY step",
      [&](StatementRef& row) {
        RemoteRunState state;
        state.step = row.column_text(0);
        state.experiment_id = row.column_text(1);
        state.remote_id = row.column_text(2);
        state.artifact_uri = row.column_text(3);
        state.params_sent = row.column_int64(4);
        state.tags_sent = row.column_int64(5);
        state.points_series = row.column_int64(6);
        state.points_seq = row.column_int64(7);
        state.points_sent = row.column_int64(8);
        state.finished = row.column_int64(9) != 0;
        states.push_back(std::move(state));
      },
      remote, run);
  if (!done) {
    return Error{done.error()};
  }
  return states;
}

Expected<void> TrackerStore::save_remote_run(std::string_view remote, std::int64_t run, const RemoteRunState& state) {
  Expected<CachedStatement> statement = m_database.cached(
      "INSERT OR REPLACE INTO remote_runs (remote, run, step, experiment_id, remote_id, artifact_uri, params_sent, "
      "tags_sent, points_series, points_seq, points_sent, finished) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
  if (!statement) {
    return Error{statement.error()};
  }
  statement->bind_all(remote, run, std::string_view(state.step), std::string_view(state.experiment_id),
                      std::string_view(state.remote_id), std::string_view(state.artifact_uri), state.params_sent,
                      state.tags_sent, state.points_series, state.points_seq, state.points_sent,
                      std::int64_t{state.finished ? 1 : 0});
  return statement->run();
}

Expected<void> TrackerStore::forget_remote_runs(std::string_view remote, std::int64_t run) {
  Expected<sqlite::Transaction> transaction = m_database.begin(sqlite::TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  for (std::string_view sql : {"DELETE FROM remote_runs WHERE remote = ?1 AND run = ?2",
                               "DELETE FROM remote_artifacts WHERE remote = ?1 AND run = ?2"}) {
    Expected<CachedStatement> statement = m_database.cached(sql);
    if (!statement) {
      return Error{statement.error()};
    }
    statement->bind_all(remote, run);
    if (Expected<void> done = statement->run(); !done) {
      return done;
    }
  }
  return transaction->commit();
}

Expected<std::vector<std::string>> TrackerStore::remote_artifacts(std::string_view remote, std::int64_t run,
                                                                  std::string_view step) {
  std::vector<std::string> paths;
  Expected<void> done = m_database.each_row(
      "SELECT path FROM remote_artifacts WHERE remote = ?1 AND run = ?2 AND step = ?3 ORDER BY path",
      [&](StatementRef& row) { paths.push_back(row.column_text(0)); }, remote, run, step);
  if (!done) {
    return Error{done.error()};
  }
  return paths;
}

Expected<void> TrackerStore::mark_remote_artifact(std::string_view remote, std::int64_t run, std::string_view step,
                                                  std::string_view path) {
  Expected<CachedStatement> statement =
      m_database.cached("INSERT OR IGNORE INTO remote_artifacts (remote, run, step, path) VALUES (?1, ?2, ?3, ?4)");
  if (!statement) {
    return Error{statement.error()};
  }
  statement->bind_all(remote, run, step, path);
  return statement->run();
}

Expected<std::vector<RemotePoint>> TrackerStore::metric_points_after(std::int64_t run, std::string_view step,
                                                                     std::int64_t series, std::int64_t seq, int limit) {
  std::vector<RemotePoint> points;
  points.reserve(static_cast<std::size_t>(std::max(limit, 0)));
  std::vector<std::pair<std::int64_t, std::string>> all_series;
  Expected<void> listed = m_database.each_row(
      "SELECT id, key FROM metric_series WHERE run = ?1 AND step = ?2 AND id >= ?3 ORDER BY id",
      [&](StatementRef& row) { all_series.emplace_back(row.column_int64(0), row.column_text(1)); }, run, step, series);
  if (!listed) {
    return Error{listed.error()};
  }
  // One series at a time, so each page is a range of the (series, seq)
  // primary key starting at the cursor: a page costs its own size, however
  // far into a long history it is.
  for (const auto& [id, key] : all_series) {
    const std::int64_t room = limit - static_cast<std::int64_t>(points.size());
    if (room <= 0) {
      break;
    }
    const std::int64_t after = id == series ? seq : -1;
    Expected<void> done = m_database.each_row(
        "SELECT seq, step, value, timestamp_ms FROM metric_points WHERE series = ?1 AND seq > ?2 ORDER BY seq "
        "LIMIT ?3",
        [&](StatementRef& row) {
          RemotePoint point;
          point.series = id;
          point.seq = row.column_int64(0);
          point.point.key = key;
          point.point.step = row.column_int64(1);
          point.point.value = row.is_null(2) ? std::numeric_limits<double>::quiet_NaN() : row.column_double(2);
          point.point.timestamp_ms = row.column_int64(3);
          points.push_back(std::move(point));
        },
        id, after, room);
    if (!done) {
      return Error{done.error()};
    }
  }
  return points;
}

Expected<void> TrackerStore::set_push_record(const PushRecord& record) {
  Expected<CachedStatement> statement = m_database.cached(
      "INSERT INTO push_records (run, remote, experiment, state, error, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT (run, remote) DO UPDATE SET experiment = excluded.experiment, state = excluded.state, "
      "error = excluded.error, updated_ms = excluded.updated_ms");
  if (!statement) {
    return Error{statement.error()};
  }
  statement->bind_all(record.run, std::string_view(record.remote), std::string_view(record.experiment),
                      to_string(record.state), std::string_view(record.error), record.updated_ms);
  return statement->run();
}

Expected<std::vector<PushRecord>> TrackerStore::push_records(std::int64_t run) {
  std::vector<PushRecord> records;
  Expected<void> done = m_database.each_row(
      "SELECT run, remote, experiment, state, error, updated_ms FROM push_records "
      "WHERE ?1 = 0 OR run = ?1 ORDER BY run, remote",
      [&](StatementRef& row) {
        PushRecord record;
        record.run = row.column_int64(0);
        record.remote = row.column_text(1);
        record.experiment = row.column_text(2);
        record.state = parse_push_state(row.column_text(3)).value_or(PushState::pending);
        record.error = row.column_text(4);
        record.updated_ms = row.column_int64(5);
        records.push_back(std::move(record));
      },
      run);
  if (!done) {
    return Error{done.error()};
  }
  return records;
}

Expected<std::vector<std::int64_t>> TrackerStore::runs_not_synced(std::string_view remote) {
  std::vector<std::int64_t> runs;
  Expected<void> done = m_database.each_row(
      "SELECT number FROM runs r WHERE status <> 'running' AND NOT EXISTS "
      "(SELECT 1 FROM push_records p WHERE p.run = r.number AND p.remote = ?1 AND p.state = 'synced') "
      "ORDER BY number",
      [&](StatementRef& row) { runs.push_back(row.column_int64(0)); }, remote);
  if (!done) {
    return Error{done.error()};
  }
  return runs;
}

} // namespace kiln::core
