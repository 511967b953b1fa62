// TrackerStore: cache keys, cached steps and step outputs (schema version 5),
// and the memo of input file hashes. Each call is one statement or one
// transaction, like the rest of the store.

#include "core/tracker_store.hpp"

#include <limits>

namespace kiln::core {

namespace {

using sqlite::CachedStatement;
using sqlite::StatementRef;
using sqlite::TransactionKind;

StepCache read_cache(StatementRef& row, int first) {
  StepCache cache;
  cache.key = row.column_text(first);
  cache.components_json = row.column_text(first + 1);
  if (!row.is_null(first + 2)) {
    cache.cached_from = row.column_int64(first + 2);
  }
  return cache;
}

} // namespace

Expected<void> TrackerStore::stage_cache_decisions(const std::vector<const CacheDecision*>& decisions) {
  // Set-based: the decisions go into a temp table, then one statement per
  // table does every step's update or copy. 10,000 cached steps are 10,000
  // small inserts and eight statements, not 70,000 statements.
  if (Expected<void> made = m_database.exec(
          "CREATE TEMP TABLE IF NOT EXISTS cache_batch (step TEXT PRIMARY KEY, cache_key TEXT NOT NULL, "
          "cache_json TEXT NOT NULL, from_run INTEGER, from_step TEXT NOT NULL, settled_ms INTEGER, "
          "reason TEXT NOT NULL)");
      !made) {
    return made;
  }
  Expected<CachedStatement> insert =
      m_database.cached("INSERT OR REPLACE INTO temp.cache_batch (step, cache_key, cache_json, from_run, from_step, "
                        "settled_ms, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  if (!insert) {
    return Error{insert.error()};
  }
  for (const CacheDecision* d : decisions) {
    // A cached step's components are its source's: not stored twice.
    insert->bind_all(d->step, d->cache.key, d->cache.cached_from ? std::string_view() : d->cache.components_json,
                     d->cache.cached_from, d->from_step,
                     d->settled ? std::optional<std::int64_t>(d->settled_ms) : std::nullopt, d->reason);
    if (Expected<void> done = insert->run(); !done) {
      return done;
    }
  }
  return {};
}

Expected<void> TrackerStore::copy_cached_from_sources(std::int64_t run) {
  // ?1 = run. What a cached step copies from the execution it stands for:
  // outputs, params, tags, artifacts (rows sharing the blobs) and one point
  // per metric, its last value, which conditions and gates read.
  static constexpr std::string_view k_statements[] = {
      "INSERT OR REPLACE INTO step_outputs (run, step, name, value) SELECT ?1, b.step, o.name, o.value "
      "FROM temp.cache_batch AS b JOIN step_outputs AS o ON o.run = b.from_run AND o.step = b.from_step",
      "INSERT OR REPLACE INTO params (run, step, key, value) SELECT ?1, b.step, o.key, o.value "
      "FROM temp.cache_batch AS b JOIN params AS o ON o.run = b.from_run AND o.step = b.from_step",
      "INSERT OR REPLACE INTO tags (run, step, key, value) SELECT ?1, b.step, o.key, o.value "
      "FROM temp.cache_batch AS b JOIN tags AS o ON o.run = b.from_run AND o.step = b.from_step",
      "INSERT OR REPLACE INTO artifacts (run, step, path, sha256, size, kind, name, created_ms) "
      "SELECT ?1, b.step, o.path, o.sha256, o.size, o.kind, o.name, o.created_ms "
      "FROM temp.cache_batch AS b JOIN artifacts AS o ON o.run = b.from_run AND o.step = b.from_step",
      "INSERT OR IGNORE INTO metric_series (run, step, key, count, last_value, last_step, last_ms, min_value, "
      "max_value) SELECT ?1, b.step, o.key, 1, o.last_value, o.last_step, o.last_ms, o.last_value, o.last_value "
      "FROM temp.cache_batch AS b JOIN metric_series AS o ON o.run = b.from_run AND o.step = b.from_step",
      "INSERT OR IGNORE INTO metric_points (series, seq, step, value, timestamp_ms) "
      "SELECT mine.id, 0, mine.last_step, mine.last_value, mine.last_ms "
      "FROM temp.cache_batch AS b JOIN metric_series AS mine ON mine.run = ?1 AND mine.step = b.step "
      "WHERE b.from_run IS NOT NULL",
  };
  for (std::string_view sql : k_statements) {
    Expected<CachedStatement> statement = m_database.cached(sql);
    if (!statement) {
      return Error{statement.error()};
    }
    statement->bind_all(run);
    if (Expected<void> done = statement->run(); !done) {
      return done;
    }
  }
  return m_database.exec("DELETE FROM temp.cache_batch");
}

Expected<void> TrackerStore::record_cache_decisions(std::int64_t run, const std::vector<CacheDecision>& decisions) {
  if (decisions.empty()) {
    return {};
  }
  Expected<sqlite::Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  std::vector<const CacheDecision*> staged;
  staged.reserve(decisions.size());
  for (const CacheDecision& d : decisions) {
    staged.push_back(&d);
  }
  if (Expected<void> done = stage_cache_decisions(staged); !done) {
    return done;
  }
  {
    Expected<CachedStatement> update = m_database.cached(
        "UPDATE steps SET cache_key = b.cache_key, cache_json = b.cache_json, cached_from = b.from_run, "
        "status = iif(b.settled_ms IS NULL, status, 'cached'), ended_ms = coalesce(b.settled_ms, ended_ms), "
        "reason = iif(b.settled_ms IS NULL, steps.reason, b.reason) "
        "FROM temp.cache_batch AS b WHERE steps.run = ?1 AND steps.id = b.step");
    if (!update) {
      return Error{update.error()};
    }
    update->bind_all(run);
    if (Expected<void> done = update->run(); !done) {
      return done;
    }
  }
  if (Expected<void> done = copy_cached_from_sources(run); !done) {
    return done;
  }
  return transaction->commit();
}

Expected<std::optional<RunRecord>> TrackerStore::replay_run(const NewRun& new_run, std::int64_t from_run,
                                                            std::int64_t at_ms,
                                                            const std::function<bool()>& unchanged) {
  // Rows copied from rows that were checked: see create_run.
  Expected<sqlite::ForeignKeysOff> foreign_keys = m_database.foreign_keys_off();
  if (!foreign_keys) {
    return Error{foreign_keys.error()};
  }
  Expected<sqlite::Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  // What find_cache_hit would answer now is what it answered for from_run:
  // no execution newer than from_run can be a source (it stops at the
  // first; any succeeded keyed step of a later run, of any workflow, counts
  // as one), and no source is gone. And from_run is whole: all cached.
  bool still = false;
  Expected<void> checked = m_database.each_row(
      "SELECT (SELECT count(*) FROM runs WHERE number = ?1 AND status = 'succeeded') = 1 "
      "AND NOT EXISTS (SELECT 1 FROM steps WHERE run > ?1 AND status = 'succeeded' AND cache_key <> '') "
      "AND NOT EXISTS (SELECT 1 FROM steps AS s WHERE s.run = ?1 AND (s.status <> 'cached' OR s.cached_from IS NULL "
      "OR s.cached_from NOT IN (SELECT number FROM runs)))",
      [&](StatementRef& row) { still = row.column_int64(0) != 0; }, from_run);
  if (!checked) {
    return Error{checked.error()};
  }
  if (!still) {
    return std::optional<RunRecord>();
  }
  Expected<std::pair<std::int64_t, std::string>> inserted = insert_run(new_run);
  if (!inserted) {
    return Error{inserted.error()};
  }
  auto& [number, id] = *inserted;
  // ?1 = the new run, ?2 = from_run, ?3 = at_ms. The step rows, then what
  // each copied from its source (as copy_cached_from_sources did for
  // from_run, so the same), then the basis moves to the new run.
  static constexpr std::string_view k_statements[] = {
      "INSERT INTO steps (run, id, position, kind, command, needs_json, status, ended_ms, reason, workdir, cache_key, "
      "cached_from) SELECT ?1, id, position, kind, command, needs_json, 'cached', ?3, reason, workdir, cache_key, "
      "cached_from FROM steps WHERE run = ?2",
      "INSERT INTO step_outputs (run, step, name, value) SELECT ?1, step, name, value FROM step_outputs WHERE run = ?2",
      "INSERT INTO params (run, step, key, value) SELECT ?1, step, key, value FROM params WHERE run = ?2 AND step <> "
      "''",
      "INSERT INTO tags (run, step, key, value) SELECT ?1, step, key, value FROM tags WHERE run = ?2 AND step <> ''",
      "INSERT INTO artifacts (run, step, path, sha256, size, kind, name, created_ms) "
      "SELECT ?1, step, path, sha256, size, kind, name, created_ms FROM artifacts WHERE run = ?2 AND step <> ''",
      "INSERT INTO metric_series (run, step, key, count, last_value, last_step, last_ms, min_value, max_value) "
      "SELECT ?1, step, key, count, last_value, last_step, last_ms, min_value, max_value FROM metric_series "
      "WHERE run = ?2 AND step <> ''",
      "INSERT INTO metric_points (series, seq, step, value, timestamp_ms) "
      "SELECT mine.id, p.seq, p.step, p.value, p.timestamp_ms FROM metric_series AS theirs "
      "JOIN metric_series AS mine ON mine.run = ?1 AND mine.step = theirs.step AND mine.key = theirs.key "
      "JOIN metric_points AS p ON p.series = theirs.id WHERE theirs.run = ?2 AND theirs.step <> ''",
      "UPDATE replays SET run = ?1 WHERE run = ?2",
  };
  std::int64_t steps = 0;
  for (std::string_view sql : k_statements) {
    Expected<CachedStatement> statement = m_database.cached(sql);
    if (!statement) {
      return Error{statement.error()};
    }
    const bool step_rows = sql.starts_with("INSERT INTO steps");
    if (step_rows) {
      statement->bind_all(number, from_run, at_ms);
    } else {
      statement->bind_all(number, from_run);
    }
    if (Expected<void> done = statement->run(); !done) {
      return Error{done.error()};
    }
    if (step_rows) {
      steps = m_database.changes();
    }
  }
  if (Expected<void> done = insert_run_params_and_tags(number, new_run); !done) {
    return Error{done.error()};
  }
  if (!unchanged()) {
    return std::optional<RunRecord>();
  }
  if (Expected<void> committed = transaction->commit(); !committed) {
    return Error{committed.error()};
  }
  RunRecord run = created_run(number, std::move(id), new_run);
  run.steps.cached = static_cast<int>(steps);
  return std::optional<RunRecord>(std::move(run));
}

Expected<std::optional<ReplayBasis>> TrackerStore::replay_basis(std::string_view workflow_file) {
  std::optional<ReplayBasis> basis;
  Expected<void> done = m_database.each_row(
      "SELECT run, digest, env_names, wants_gpus, header, files FROM replays WHERE workflow_file = ?1",
      [&](StatementRef& row) {
        ReplayBasis b;
        b.workflow_file = std::string(workflow_file);
        b.run = row.column_int64(0);
        b.digest = row.column_text(1);
        const std::string names = row.column_text(2);
        for (std::size_t at = 0; at < names.size();) {
          const std::size_t end = std::min(names.find('\n', at), names.size());
          b.env_names.push_back(names.substr(at, end - at));
          at = end + 1;
        }
        b.wants_gpus = row.column_int64(3) != 0;
        b.header = row.column_text(4);
        b.files = row.column_blob(5);
        basis = std::move(b);
      },
      workflow_file);
  if (!done) {
    return Error{done.error()};
  }
  return basis;
}

Expected<void> TrackerStore::save_replay(const ReplayBasis& basis) {
  std::string names;
  for (const std::string& name : basis.env_names) {
    names += (names.empty() ? "" : "\n") + name;
  }
  Expected<CachedStatement> insert =
      m_database.cached("INSERT OR REPLACE INTO replays (workflow_file, run, digest, env_names, wants_gpus, header, "
                        "files) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  if (!insert) {
    return Error{insert.error()};
  }
  insert->bind_all(basis.workflow_file, basis.run, basis.digest, names, basis.wants_gpus, basis.header,
                   sqlite::Blob{basis.files});
  return insert->run();
}

Expected<void> TrackerStore::forget_replay(std::string_view workflow_file) {
  Expected<CachedStatement> remove = m_database.cached("DELETE FROM replays WHERE workflow_file = ?1");
  if (!remove) {
    return Error{remove.error()};
  }
  remove->bind_all(workflow_file);
  return remove->run();
}

Expected<std::optional<CacheHit>> TrackerStore::find_cache_hit(std::string_view key, std::int64_t except_run) {
  std::optional<CacheHit> hit;
  Expected<void> done = m_database.each_row(
      "SELECT run, id FROM steps WHERE cache_key = ?1 AND cache_key <> '' AND run <> ?2 "
      "AND status = 'succeeded' "
      "ORDER BY run DESC LIMIT 1",
      [&](StatementRef& row) {
        hit = CacheHit{row.column_int64(0), row.column_text(1)};
      },
      key, except_run);
  if (!done) {
    return Error{done.error()};
  }
  return hit;
}

Expected<std::optional<StepCache>> TrackerStore::step_cache(std::int64_t run, std::string_view step) {
  std::optional<StepCache> cache;
  Expected<void> done = m_database.each_row(
      "SELECT cache_key, cache_json, cached_from FROM steps WHERE run = ?1 AND id = ?2",
      [&](StatementRef& row) { cache = read_cache(row, 0); }, run, step);
  if (!done) {
    return Error{done.error()};
  }
  return cache;
}

Expected<std::vector<KeyedStep>> TrackerStore::latest_keys(std::string_view workflow, std::int64_t before_run) {
  std::vector<KeyedStep> keyed;
  Expected<void> done = m_database.each_row(
      "SELECT s.id, s.cache_key, coalesce(s.cached_from, s.run) FROM steps AS s "
      "WHERE s.run = (SELECT max(number) FROM runs WHERE workflow_name = ?1 AND number < ?2) "
      "AND s.cache_key <> '' AND s.status IN ('succeeded', 'cached') "
      "AND coalesce(s.cached_from, s.run) IN (SELECT number FROM runs)",
      [&](StatementRef& row) {
        keyed.push_back({row.column_text(0), row.column_text(1), row.column_int64(2)});
      },
      workflow, before_run);
  if (!done) {
    return Error{done.error()};
  }
  return keyed;
}

Expected<std::optional<PastExecution>> TrackerStore::last_execution(std::string_view workflow, std::string_view step,
                                                                    std::int64_t before_run) {
  std::optional<PastExecution> past;
  Expected<void> done = m_database.each_row(
      "SELECT s.run, s.status, s.cache_key, s.cache_json, s.cached_from FROM steps AS s "
      "JOIN runs AS r ON r.number = s.run "
      "WHERE r.workflow_name = ?1 AND s.id = ?2 AND s.run < ?3 AND s.status = 'succeeded' "
      "AND s.cache_key <> '' ORDER BY s.run DESC LIMIT 1",
      [&](StatementRef& row) {
        PastExecution p;
        p.run = row.column_int64(0);
        p.status = parse_step_status(row.column_text(1)).value_or(StepStatus::succeeded);
        p.cache = read_cache(row, 2);
        past = std::move(p);
      },
      workflow, step, before_run);
  if (!done) {
    return Error{done.error()};
  }
  return past;
}

Expected<void> TrackerStore::set_step_outputs(std::int64_t run, std::string_view step, const KeyValues& outputs) {
  Expected<sqlite::Transaction> transaction = begin_step_write(run, step);
  if (!transaction) {
    return Error{transaction.error()};
  }
  {
    Expected<CachedStatement> clear = m_database.cached("DELETE FROM step_outputs WHERE run = ?1 AND step = ?2");
    if (!clear) {
      return Error{clear.error()};
    }
    clear->bind_all(run, step);
    if (Expected<void> done = clear->run(); !done) {
      return done;
    }
    Expected<CachedStatement> insert =
        m_database.cached("INSERT OR REPLACE INTO step_outputs (run, step, name, value) VALUES (?1, ?2, ?3, ?4)");
    if (!insert) {
      return Error{insert.error()};
    }
    for (const auto& [name, value] : outputs) {
      insert->bind_all(run, step, name, value);
      if (Expected<void> done = insert->run(); !done) {
        return done;
      }
    }
  }
  return transaction->commit();
}

Expected<KeyValues> TrackerStore::step_outputs(std::int64_t run, std::string_view step) {
  KeyValues outputs;
  Expected<void> done = m_database.each_row(
      "SELECT name, value FROM step_outputs WHERE run = ?1 AND step = ?2 ORDER BY name",
      [&](StatementRef& row) { outputs.emplace_back(row.column_text(0), row.column_text(1)); }, run, step);
  if (!done) {
    return Error{done.error()};
  }
  return outputs;
}

Expected<std::optional<double>> TrackerStore::previous_metric(std::string_view workflow, std::string_view step,
                                                              std::string_view key, std::int64_t before_run) {
  std::optional<double> value;
  Expected<void> done = m_database.each_row(
      "SELECT ms.last_value FROM metric_series AS ms JOIN runs AS r ON r.number = ms.run "
      "WHERE r.workflow_name = ?1 AND r.status = 'succeeded' AND ms.step = ?2 AND ms.key = ?3 AND ms.run < ?4 "
      "ORDER BY ms.run DESC LIMIT 1",
      [&](StatementRef& row) {
        // NaN is stored as NULL.
        value = row.is_null(0) ? std::numeric_limits<double>::quiet_NaN() : row.column_double(0);
      },
      workflow, step, key, before_run);
  if (!done) {
    return Error{done.error()};
  }
  return value;
}

Expected<MemoEntries> TrackerStore::load_hash_memo() {
  MemoEntries memo;
  // In the primary key's order: sorted by path, as the memo keeps them.
  Expected<void> done = m_database.each_row(
      "SELECT path, size, mtime_ns, ctime_ns, inode, device, sha256, hashed_at_ns FROM file_hashes ORDER BY path",
      [&](StatementRef& row) {
        MemoEntry e;
        e.stamp = {row.column_int64(1), row.column_int64(2), row.column_int64(3), row.column_int64(4),
                   row.column_int64(5)};
        e.sha256 = row.column_text(6);
        e.hashed_at_ns = row.column_int64(7);
        memo.emplace_back(row.column_text(0), std::move(e));
      });
  if (!done) {
    return Error{done.error()};
  }
  return memo;
}

Expected<void> TrackerStore::save_hash_memo(const std::vector<std::pair<std::string, MemoEntry>>& entries) {
  if (entries.empty()) {
    return {};
  }
  Expected<sqlite::Transaction> transaction = m_database.begin(TransactionKind::immediate);
  if (!transaction) {
    return Error{transaction.error()};
  }
  {
    Expected<CachedStatement> insert =
        m_database.cached("INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, ctime_ns, inode, device, sha256, "
                          "hashed_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (!insert) {
      return Error{insert.error()};
    }
    for (const auto& [path, e] : entries) {
      insert->bind_all(path, e.stamp.size, e.stamp.mtime_ns, e.stamp.ctime_ns, e.stamp.inode, e.stamp.device, e.sha256,
                       e.hashed_at_ns);
      if (Expected<void> done = insert->run(); !done) {
        return done;
      }
    }
  }
  return transaction->commit();
}

} // namespace kiln::core
