#include "plugins/mlflow_push.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <set>
#include <sys/file.h>
#include <thread>
#include <unistd.h>

namespace kiln::plugins::mlflow {

namespace {

using core::Error;
using core::Expected;

constexpr std::string_view k_run_id_tag = "kiln.run.id";
constexpr std::string_view k_step_tag = "kiln.step";
constexpr std::string_view k_parent_tag = "mlflow.parentRunId";
constexpr std::string_view k_run_name_tag = "mlflow.runName";

/// Code points in UTF-8 text (MLflow measures values in Python characters).
std::size_t code_points(std::string_view text) {
  std::size_t count = 0;
  for (const char c : text) {
    count += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  }
  return count;
}

/// `text` cut to at most `limit` code points.
void truncate_code_points(std::string& text, std::size_t limit) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      if (count == limit) {
        text.resize(i);
        return;
      }
      ++count;
    }
  }
}

/// Adds `key` = `value` unless the key is taken; a key or value MLflow
/// refuses is skipped or cut, with a warning.
void add_entry(std::vector<KeyValue>& entries, std::set<std::string>& seen, std::string key, std::string value,
               std::size_t value_limit, std::string_view what, std::string_view step,
               std::vector<std::string>& warnings) {
  if (std::string problem = core::check_key(key); !problem.empty()) {
    warnings.push_back("skipped " + std::string(what) + " '" + key + "' of " + core::describe_owner(step) + ": " +
                       problem);
    return;
  }
  if (!seen.insert(key).second) {
    warnings.push_back("skipped " + std::string(what) + " '" + key + "' of " + core::describe_owner(step) +
                       ": kiln sets that key itself");
    return;
  }
  if (code_points(value) > value_limit) {
    warnings.push_back("cut " + std::string(what) + " '" + key + "' of " + core::describe_owner(step) + " from " +
                       std::to_string(code_points(value)) + " to " + std::to_string(value_limit) +
                       " characters (MLflow's limit)");
    truncate_code_points(value, value_limit);
  }
  entries.push_back({std::move(key), std::move(value)});
}

/// Splits tags into those sent with runs/create and the rest.
void place_tags(PlannedRun& planned, std::vector<KeyValue> tags) {
  const std::size_t in_create = std::min<std::size_t>(tags.size(), k_max_tags_per_batch);
  planned.create_tags.assign(std::make_move_iterator(tags.begin()),
                             std::make_move_iterator(tags.begin() + static_cast<std::ptrdiff_t>(in_create)));
  planned.batch_tags.assign(std::make_move_iterator(tags.begin() + static_cast<std::ptrdiff_t>(in_create)),
                            std::make_move_iterator(tags.end()));
}

std::string run_name(const core::RunRecord& run) {
  return run.workflow_name + "-" + std::to_string(run.number);
}

/// Runs `jobs` over up to `threads` threads, each job given its thread's
/// index; stops handing out jobs after the first failure, which it returns.
Expected<void> run_parallel(std::size_t threads, std::size_t jobs,
                            const std::function<Expected<void>(std::size_t thread, std::size_t job)>& run_job) {
  if (jobs == 0) {
    return {};
  }
  threads = std::max<std::size_t>(1, std::min(threads, jobs));
  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::string first_error;
  auto worker = [&](std::size_t thread) {
    for (;;) {
      if (stop.load()) {
        return;
      }
      const std::size_t job = next.fetch_add(1);
      if (job >= jobs) {
        return;
      }
      Expected<void> done = run_job(thread, job);
      if (!done) {
        std::lock_guard lock(error_mutex);
        if (!stop.exchange(true)) {
          first_error = done.error();
        }
        return;
      }
    }
  };
  if (threads == 1) {
    worker(0);
  } else {
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) {
      pool.emplace_back(worker, i);
    }
    for (std::thread& t : pool) {
      t.join();
    }
  }
  if (stop.load()) {
    return Error{first_error};
  }
  return {};
}

} // namespace

std::string_view mlflow_status(core::RunStatus status) {
  switch (status) {
  case core::RunStatus::succeeded: return "FINISHED";
  case core::RunStatus::failed:
  case core::RunStatus::crashed: return "FAILED";
  case core::RunStatus::cancelled: return "KILLED";
  case core::RunStatus::running: return "RUNNING";
  }
  return "FAILED";
}

std::string_view mlflow_status(core::StepStatus status) {
  switch (status) {
  case core::StepStatus::succeeded:
  // Its outputs are those of an earlier success; kiln.step.status says cached.
  case core::StepStatus::cached: return "FINISHED";
  case core::StepStatus::failed: return "FAILED";
  case core::StepStatus::running: return "RUNNING";
  case core::StepStatus::pending:
  case core::StepStatus::skipped:
  case core::StepStatus::cancelled:
    // Never ran, or stopped: MLflow has no "skipped"; kiln.step.status says which.
    return "KILLED";
  }
  return "KILLED";
}

Expected<PushPlan> plan_push(core::TrackerStore& store, const core::RunRecord& run) {
  PushPlan plan;
  plan.run = run;
  Expected<std::vector<core::StepRecord>> steps = store.steps(run.number);
  if (!steps) {
    return Error{steps.error()};
  }
  Expected<std::vector<core::AttemptRecord>> attempts = store.attempts(run.number);
  if (!attempts) {
    return Error{attempts.error()};
  }
  Expected<std::vector<core::KeyValue>> params = store.params(run.number);
  if (!params) {
    return Error{params.error()};
  }
  Expected<std::vector<core::KeyValue>> tags = store.tags(run.number);
  if (!tags) {
    return Error{tags.error()};
  }
  Expected<std::vector<core::MetricSummary>> metrics = store.metric_summaries(run.number);
  if (!metrics) {
    return Error{metrics.error()};
  }
  Expected<std::vector<core::ArtifactRecord>> artifacts = store.artifacts(run.number);
  if (!artifacts) {
    return Error{artifacts.error()};
  }
  const std::int64_t run_end = run.ended_ms.value_or(run.started_ms);
  std::vector<std::string>& warnings = plan.warnings;
  std::map<std::string, std::size_t> index;

  // The run's own.
  {
    PlannedRun planned;
    planned.run_name = run_name(run);
    planned.user = run.user;
    planned.start_time = run.started_ms;
    planned.end_time = run_end;
    planned.status = std::string(mlflow_status(run.status));
    std::vector<KeyValue> entries;
    std::set<std::string> seen;
    auto add = [&](std::string key, std::string value) {
      add_entry(entries, seen, std::move(key), std::move(value), k_max_tag_value_length, "tag", "", warnings);
    };
    add(std::string(k_run_name_tag), planned.run_name);
    add(std::string(k_run_id_tag), run.id);
    add("mlflow.user", run.user);
    add("mlflow.source.name", run.workflow_file);
    add("mlflow.source.type", "LOCAL");
    if (!run.git_commit.empty()) {
      add("mlflow.source.git.commit", run.git_commit);
      if (!run.git_branch.empty()) {
        add("mlflow.source.git.branch", run.git_branch);
      }
    }
    add("kiln.run.number", std::to_string(run.number));
    add("kiln.run.status", std::string(core::to_string(run.status)));
    if (run.exit_code) {
      add("kiln.exit_code", std::to_string(*run.exit_code));
    }
    // Keys kiln sets on nested runs only: on the run's own they would
    // misplace it in the UI or hide it from the search for an earlier push.
    seen.insert(std::string(k_parent_tag));
    seen.insert(std::string(k_step_tag));
    for (const core::KeyValue& tag : *tags) {
      if (tag.step_id.empty()) {
        add(tag.key, tag.value);
      }
    }
    place_tags(planned, std::move(entries));
    index[""] = 0;
    plan.runs.push_back(std::move(planned));
  }

  std::map<std::string, const core::AttemptRecord*> last_attempt;
  for (const core::AttemptRecord& attempt : *attempts) {
    last_attempt[attempt.step_id] = &attempt;
  }
  for (const core::StepRecord& step : *steps) {
    PlannedRun planned;
    planned.step = step.id;
    planned.run_name = step.id;
    planned.user = run.user;
    planned.start_time = step.started_ms.value_or(run_end);
    planned.end_time = step.ended_ms.value_or(run_end);
    planned.status = std::string(mlflow_status(step.status));
    std::vector<KeyValue> entries;
    std::set<std::string> seen;
    auto add = [&](std::string key, std::string value) {
      add_entry(entries, seen, std::move(key), std::move(value), k_max_tag_value_length, "tag", step.id, warnings);
    };
    add(std::string(k_run_name_tag), step.id);
    // Filled in with the parent's id when the run is created.
    add(std::string(k_parent_tag), "");
    add(std::string(k_run_id_tag), run.id);
    add(std::string(k_step_tag), step.id);
    add("mlflow.user", run.user);
    add("mlflow.source.name", run.workflow_file);
    add("mlflow.source.type", "LOCAL");
    if (!run.git_commit.empty()) {
      add("mlflow.source.git.commit", run.git_commit);
    }
    add("kiln.step.kind", step.kind);
    add("kiln.step.status", std::string(core::to_string(step.status)));
    add("kiln.step.attempts", std::to_string(step.attempts));
    if (auto it = last_attempt.find(step.id); it != last_attempt.end() && it->second->end) {
      const core::AttemptEnd& end = *it->second->end;
      if (end.exit_code) {
        add("kiln.step.exit_code", std::to_string(*end.exit_code));
      }
      if (end.signal != 0) {
        add("kiln.step.signal", std::to_string(end.signal));
      }
    }
    if (step.started_ms && step.ended_ms) {
      add("kiln.step.duration_ms", std::to_string(*step.ended_ms - *step.started_ms));
    }
    if (!step.reason.empty()) {
      add("kiln.step.reason", step.reason);
    }
    if (!step.command.empty()) {
      add("kiln.step.command", step.command);
    }
    for (const core::KeyValue& tag : *tags) {
      if (tag.step_id == step.id) {
        add(tag.key, tag.value);
      }
    }
    place_tags(planned, std::move(entries));
    index[step.id] = plan.runs.size();
    plan.runs.push_back(std::move(planned));
  }

  std::vector<std::set<std::string>> param_keys(plan.runs.size());
  for (const core::KeyValue& param : *params) {
    auto it = index.find(param.step_id);
    if (it != index.end()) {
      add_entry(plan.runs[it->second].params, param_keys[it->second], param.key, param.value, k_max_param_value_length,
                "param", param.step_id, warnings);
    }
  }
  for (const core::MetricSummary& summary : *metrics) {
    auto it = index.find(summary.step_id);
    if (it == index.end()) {
      continue;
    }
    PlannedRun& planned = plan.runs[it->second];
    if (std::string problem = core::check_key(summary.key); !problem.empty()) {
      warnings.push_back("skipped metric '" + summary.key + "' of " + core::describe_owner(summary.step_id) + " (" +
                         std::to_string(summary.count) + " points): " + problem);
      planned.skipped_metrics.push_back(summary.key);
    } else {
      planned.points += summary.count;
    }
  }
  for (core::ArtifactRecord& artifact : *artifacts) {
    auto it = index.find(artifact.step_id);
    if (it != index.end()) {
      plan.runs[it->second].artifacts.push_back(std::move(artifact));
    }
  }
  return plan;
}

// ---- Pusher ----

struct Pusher::Connection {
  std::unique_ptr<HttpTransport> transport;
  std::unique_ptr<Client> client;
};

/// One kiln run's push: the plan, the store's marks, and the MLflow runs.
struct Pusher::Session {
  PushPlan plan;
  /// Parallel to plan.runs.
  std::vector<core::RemoteRunState> states;
  /// Whether the MLflow run exists (char, not bool: workers write their own
  /// elements concurrently, which vector<bool>'s packed bits would race on).
  std::vector<char> known;
  PushResult& result;
};

Pusher::Pusher(core::TrackerStore& store, PushSettings settings) : m_store(store), m_settings(std::move(settings)) {
  if (m_settings.environment == nullptr) {
    m_settings.environment = &system_retry_environment();
  }
  const int count = std::max(1, m_settings.connections);
  for (int i = 0; i < count; ++i) {
    auto connection = std::make_unique<Connection>();
    connection->transport = m_settings.make_transport();
    connection->client =
        std::make_unique<Client>(*connection->transport, m_settings.policy, *m_settings.environment, m_settings.trace);
    m_connections.push_back(std::move(connection));
  }
}

Pusher::~Pusher() = default;

std::string Pusher::store_error(const std::string& message) {
  return "recording push progress in the store: " + message;
}

Expected<std::string> Pusher::experiment_id(Client& client) {
  if (!m_experiment_id.empty()) {
    return m_experiment_id;
  }
  const std::string& name = m_settings.experiment;
  ApiResult<std::string> found = client.experiment_id(name);
  if (!found.ok() && found.error.code == "RESOURCE_DOES_NOT_EXIST") {
    found = client.create_experiment(name);
    if (!found.ok() && found.error.code == "RESOURCE_ALREADY_EXISTS") {
      // Someone created it meanwhile.
      found = client.experiment_id(name);
    }
  }
  if (!found.ok()) {
    return Error{"experiment '" + name + "' on " + m_settings.remote + ": " + found.error.describe()};
  }
  m_experiment_id = *found.value;
  return m_experiment_id;
}

PushResult Pusher::dry_run(const core::RunRecord& run) {
  PushResult result;
  result.run = run.number;
  Expected<PushPlan> plan = plan_push(m_store, run);
  if (!plan) {
    result.error = plan.error();
    return result;
  }
  Expected<std::vector<core::RemoteRunState>> states = m_store.remote_runs(m_settings.remote, run.number);
  if (!states) {
    result.error = states.error();
    return result;
  }
  std::map<std::string, const core::RemoteRunState*> by_step;
  for (const core::RemoteRunState& state : *states) {
    by_step[state.step] = &state;
  }
  result.warnings = plan->warnings;
  bool anything = false;
  for (const PlannedRun& planned : plan->runs) {
    const core::RemoteRunState* state = by_step.count(planned.step) ? by_step[planned.step] : nullptr;
    if (state == nullptr) {
      ++result.runs_created;
    }
    if (planned.step.empty() && state != nullptr) {
      result.remote_run_id = state->remote_id;
      result.experiment_id = state->experiment_id;
    }
    const std::int64_t params = static_cast<std::int64_t>(planned.params.size()) - (state ? state->params_sent : 0);
    const std::int64_t batch_tags =
        static_cast<std::int64_t>(planned.batch_tags.size()) - (state ? state->tags_sent : 0);
    const std::int64_t points = planned.points - (state ? state->points_sent : 0);
    result.params += std::max<std::int64_t>(0, params);
    result.tags +=
        std::max<std::int64_t>(0, batch_tags) + (state ? 0 : static_cast<std::int64_t>(planned.create_tags.size()));
    result.points += std::max<std::int64_t>(0, points);
    // The fewest requests the limits allow: every batch full.
    const std::int64_t entities =
        std::max<std::int64_t>(0, params) + std::max<std::int64_t>(0, batch_tags) + std::max<std::int64_t>(0, points);
    std::int64_t batches = (entities + k_max_entities_per_batch - 1) / k_max_entities_per_batch;
    batches =
        std::max(batches, (std::max<std::int64_t>(0, params) + k_max_params_per_batch - 1) / k_max_params_per_batch);
    result.batches += batches;
    std::set<std::string> sent;
    if (state != nullptr) {
      Expected<std::vector<std::string>> marked = m_store.remote_artifacts(m_settings.remote, run.number, planned.step);
      if (marked) {
        sent.insert(marked->begin(), marked->end());
      }
    }
    for (const core::ArtifactRecord& artifact : planned.artifacts) {
      if (!sent.count(artifact.path)) {
        ++result.artifacts;
        result.artifact_bytes += artifact.size;
      }
    }
    anything = anything || state == nullptr || !state->finished || entities > 0;
  }
  anything = anything || result.artifacts > 0;
  result.already_synced = !anything;
  // Experiment lookup, the search for runs created by an interrupted push,
  // creates, batches, uploads, final updates.
  result.requests = anything ? (result.runs_created > 0 ? 2 : 0) + result.runs_created + result.batches +
                                   result.artifacts + static_cast<std::int64_t>(plan->runs.size())
                             : 0;
  result.ok = true;
  return result;
}

PushResult Pusher::push(const core::RunRecord& run) {
  PushResult result;
  result.run = run.number;
  std::int64_t requests_before = 0;
  std::int64_t bytes_before = 0;
  for (const auto& connection : m_connections) {
    requests_before += connection->client->requests();
    bytes_before += connection->client->bytes_sent();
  }
  auto finish = [&](std::string error) -> PushResult {
    for (const auto& connection : m_connections) {
      result.requests += connection->client->requests();
      result.bytes_sent += connection->client->bytes_sent();
    }
    result.requests -= requests_before;
    result.bytes_sent -= bytes_before;
    result.ok = error.empty();
    result.error = std::move(error);
    result.already_synced = result.ok && result.requests == 0;
    core::PushRecord record;
    record.run = run.number;
    record.remote = m_settings.remote;
    record.experiment = m_settings.experiment;
    record.state = result.ok ? core::PushState::synced : core::PushState::failed;
    record.error = result.error;
    record.updated_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    std::lock_guard lock(m_store_mutex);
    if (Expected<void> saved = m_store.set_push_record(record); !saved && result.ok) {
      result.ok = false;
      result.error = store_error(saved.error());
    }
    return result;
  };
  if (run.status == core::RunStatus::running) {
    return finish("run " + std::to_string(run.number) + " is still running; push it once it has ended");
  }
  Expected<PushPlan> plan = plan_push(m_store, run);
  if (!plan) {
    return finish(plan.error());
  }
  result.warnings = plan->warnings;
  Session session{std::move(*plan), {}, {}, result};
  const std::size_t count = session.plan.runs.size();
  session.states.resize(count);
  session.known.assign(count, 0);
  Expected<std::vector<core::RemoteRunState>> states = m_store.remote_runs(m_settings.remote, run.number);
  if (!states) {
    return finish(states.error());
  }
  for (core::RemoteRunState& state : *states) {
    for (std::size_t i = 0; i < count; ++i) {
      if (session.plan.runs[i].step == state.step) {
        session.states[i] = std::move(state);
        session.known[i] = 1;
        break;
      }
    }
  }
  Client& main = *m_connections.front()->client;

  // Which experiment: the one this run went to before, else the named one.
  std::string experiment;
  for (std::size_t i = 0; i < count; ++i) {
    if (session.known[i]) {
      experiment = session.states[i].experiment_id;
      break;
    }
  }
  const bool all_known = std::all_of(session.known.begin(), session.known.end(), [](char k) { return k != 0; });
  if (experiment.empty() || !all_known) {
    if (experiment.empty()) {
      Expected<std::string> id = experiment_id(main);
      if (!id) {
        return finish(id.error());
      }
      experiment = *id;
    }
  }
  result.experiment_id = experiment;

  // Runs an interrupted push created but did not record: found by their tags.
  const std::string filter = "tags." + std::string(k_run_id_tag) + " = '" + run.id + "'";
  auto adopt = [&](const std::vector<RemoteRun>& found, std::size_t only) -> Expected<bool> {
    bool adopted_any = false;
    for (std::size_t i = 0; i < count; ++i) {
      if ((only != count && i != only) || session.known[i]) {
        continue;
      }
      const PlannedRun& planned = session.plan.runs[i];
      const RemoteRun* match = nullptr;
      for (const RemoteRun& remote : found) {
        const std::string* step = remote.tag(k_step_tag);
        const bool same = planned.step.empty() ? step == nullptr : step != nullptr && *step == planned.step;
        // The oldest, should there be several.
        if (same && (match == nullptr || remote.info.start_time < match->info.start_time)) {
          match = &remote;
        }
      }
      if (match == nullptr) {
        continue;
      }
      // A param the server holds with another value would fail every batch.
      for (const KeyValue& param : planned.params) {
        for (const KeyValue& held : match->params) {
          if (held.key == param.key && held.value != param.value) {
            return Error{"param '" + param.key + "' of " + core::describe_owner(planned.step) + " is '" + held.value +
                         "' on the server (MLflow run " + match->info.run_id + ") but '" + param.value +
                         "' here; MLflow does not change params, so nothing was pushed. Delete that MLflow run "
                         "on the server to push this run again"};
          }
        }
      }
      core::RemoteRunState& state = session.states[i];
      state = core::RemoteRunState{};
      state.step = planned.step;
      state.experiment_id = match->info.experiment_id.empty() ? experiment : match->info.experiment_id;
      state.remote_id = match->info.run_id;
      state.artifact_uri = match->info.artifact_uri;
      {
        std::lock_guard lock(m_store_mutex);
        if (Expected<void> saved = m_store.save_remote_run(m_settings.remote, run.number, state); !saved) {
          return Error{store_error(saved.error())};
        }
        ++result.runs_adopted;
      }
      session.known[i] = 1;
      adopted_any = true;
    }
    return adopted_any;
  };
  if (!all_known) {
    ApiResult<std::vector<RemoteRun>> found = main.search_runs(experiment, filter);
    if (!found.ok()) {
      return finish("looking for runs of an earlier push on " + m_settings.remote + ": " + found.error.describe());
    }
    if (Expected<bool> adopted = adopt(*found.value, count); !adopted) {
      return finish(adopted.error());
    }
  }

  // Creates planned run i unless known; used for the parent, then by the workers.
  auto ensure_created = [&](Client& client, std::size_t i) -> Expected<void> {
    if (session.known[i]) {
      return {};
    }
    const PlannedRun& planned = session.plan.runs[i];
    NewRun request;
    request.experiment_id = experiment;
    request.run_name = planned.run_name;
    request.user = planned.user;
    request.start_time = planned.start_time;
    request.tags = planned.create_tags;
    for (KeyValue& tag : request.tags) {
      if (tag.key == k_parent_tag) {
        tag.value = session.states[0].remote_id;
      }
    }
    std::string adopt_error;
    // The answer to a create can be lost after the server acted on it:
    // look before creating again.
    auto before_retry = [&](const HttpResult&) {
      ApiResult<std::vector<RemoteRun>> found = client.search_runs(experiment, filter);
      if (!found.ok()) {
        // Unknown whether the failed try created the run: creating again
        // could make a second one. Stop; the next push's search finds it.
        return false;
      }
      Expected<bool> adopted = adopt(*found.value, i);
      if (!adopted) {
        adopt_error = adopted.error();
        return false;
      }
      return !*adopted;
    };
    ApiResult<RunInfo> created = client.create_run(request, before_retry);
    if (!adopt_error.empty()) {
      return Error{adopt_error};
    }
    if (session.known[i]) {
      return {};
    }
    if (!created.ok()) {
      return Error{"creating the MLflow run for " + core::describe_owner(planned.step) + ": " +
                   created.error.describe()};
    }
    core::RemoteRunState& state = session.states[i];
    state = core::RemoteRunState{};
    state.step = planned.step;
    state.experiment_id = experiment;
    state.remote_id = created.value->run_id;
    state.artifact_uri = created.value->artifact_uri;
    std::lock_guard lock(m_store_mutex);
    if (Expected<void> saved = m_store.save_remote_run(m_settings.remote, run.number, state); !saved) {
      return Error{store_error(saved.error())};
    }
    session.known[i] = 1;
    ++result.runs_created;
    result.tags += static_cast<std::int64_t>(request.tags.size());
    return {};
  };

  // Params, batch tags and metric points, in full batches.
  auto send_data = [&](Client& client, std::size_t i) -> Expected<void> {
    const PlannedRun& planned = session.plan.runs[i];
    core::RemoteRunState& state = session.states[i];
    std::set<std::string> skipped(planned.skipped_metrics.begin(), planned.skipped_metrics.end());
    for (;;) {
      Batch batch;
      const auto param_begin = static_cast<std::size_t>(
          std::min<std::int64_t>(state.params_sent, static_cast<std::int64_t>(planned.params.size())));
      const std::size_t params = std::min(planned.params.size() - param_begin, std::size_t{k_max_params_per_batch});
      batch.params.assign(planned.params.begin() + static_cast<std::ptrdiff_t>(param_begin),
                          planned.params.begin() + static_cast<std::ptrdiff_t>(param_begin + params));
      const auto tag_begin = static_cast<std::size_t>(
          std::min<std::int64_t>(state.tags_sent, static_cast<std::int64_t>(planned.batch_tags.size())));
      const std::size_t tags = std::min(planned.batch_tags.size() - tag_begin, std::size_t{k_max_tags_per_batch});
      batch.tags.assign(planned.batch_tags.begin() + static_cast<std::ptrdiff_t>(tag_begin),
                        planned.batch_tags.begin() + static_cast<std::ptrdiff_t>(tag_begin + tags));
      const int room =
          static_cast<int>(std::min<std::size_t>(k_max_metrics_per_batch, k_max_entities_per_batch - params - tags));
      std::int64_t last_series = state.points_series;
      std::int64_t last_seq = state.points_seq;
      std::int64_t taken = 0;
      if (room > 0) {
        Expected<std::vector<core::RemotePoint>> points = [&] {
          std::lock_guard lock(m_store_mutex);
          return m_store.metric_points_after(run.number, planned.step, state.points_series, state.points_seq, room);
        }();
        if (!points) {
          return Error{points.error()};
        }
        batch.metrics.reserve(points->size());
        for (core::RemotePoint& point : *points) {
          last_series = point.series;
          last_seq = point.seq;
          if (!skipped.count(point.point.key)) {
            batch.metrics.push_back(std::move(point.point));
            ++taken;
          }
        }
      }
      const bool cursor_moved = last_series != state.points_series || last_seq != state.points_seq;
      if (batch.entities() == 0) {
        if (cursor_moved) {
          // Only skipped keys in this page: move past them.
          state.points_series = last_series;
          state.points_seq = last_seq;
          continue;
        }
        return {};
      }
      ApiResult<Done> sent = client.log_batch(state.remote_id, batch);
      if (!sent.ok()) {
        std::string what = "logging " + std::to_string(batch.params.size()) + " params, " +
                           std::to_string(batch.metrics.size()) + " metric points and " +
                           std::to_string(batch.tags.size()) + " tags of " + core::describe_owner(planned.step) +
                           " to MLflow run " + state.remote_id + ": " + sent.error.describe();
        if (sent.error.message.find("Changing param values") != std::string::npos) {
          what += "; a param differs from the value the server holds, and MLflow does not change params. Delete "
                  "that MLflow run on the server to push this run again";
        }
        return Error{what};
      }
      state.params_sent += static_cast<std::int64_t>(params);
      state.tags_sent += static_cast<std::int64_t>(tags);
      state.points_series = last_series;
      state.points_seq = last_seq;
      state.points_sent += taken;
      std::lock_guard lock(m_store_mutex);
      if (Expected<void> saved = m_store.save_remote_run(m_settings.remote, run.number, state); !saved) {
        return Error{store_error(saved.error())};
      }
      ++result.batches;
      result.params += static_cast<std::int64_t>(params);
      result.tags += static_cast<std::int64_t>(tags);
      result.points += taken;
    }
  };

  // The parent first: its id goes into every child's mlflow.parentRunId.
  if (Expected<void> created = ensure_created(main, 0); !created) {
    return finish(created.error());
  }
  result.remote_run_id = session.states[0].remote_id;
  const std::size_t threads = m_connections.size();
  Expected<void> data = run_parallel(threads, count, [&](std::size_t thread, std::size_t i) -> Expected<void> {
    Client& client = *m_connections[thread]->client;
    if (Expected<void> created = ensure_created(client, i); !created) {
      return created;
    }
    return send_data(client, i);
  });
  if (!data) {
    return finish(data.error());
  }

  // Artifacts, each its own job, over all connections.
  struct Upload {
    std::size_t run;
    const core::ArtifactRecord* artifact;
  };
  std::vector<Upload> uploads;
  for (std::size_t i = 0; i < count; ++i) {
    const PlannedRun& planned = session.plan.runs[i];
    if (planned.artifacts.empty()) {
      continue;
    }
    Expected<std::vector<std::string>> marked = m_store.remote_artifacts(m_settings.remote, run.number, planned.step);
    if (!marked) {
      return finish(marked.error());
    }
    const std::set<std::string> done(marked->begin(), marked->end());
    for (const core::ArtifactRecord& artifact : planned.artifacts) {
      if (!done.count(artifact.path)) {
        uploads.push_back({i, &artifact});
      }
    }
  }
  std::atomic<std::int64_t> uploaded{0};
  std::atomic<std::int64_t> uploaded_bytes{0};
  Expected<void> sent =
      run_parallel(threads, uploads.size(), [&](std::size_t thread, std::size_t job) -> Expected<void> {
        const Upload& upload = uploads[job];
        const core::RemoteRunState& state = session.states[upload.run];
        const core::ArtifactRecord& artifact = *upload.artifact;
        const std::optional<std::string> target = artifact_target(state.artifact_uri, artifact.path);
        if (!target) {
          return Error{"MLflow run " + state.remote_id + " keeps its artifacts at " + state.artifact_uri +
                       ", which kiln cannot write to through the server; start the server with --serve-artifacts "
                       "(the artifact proxy, MLflow's default since 2.0)"};
        }
        const std::filesystem::path file = m_store.blobs().path_of(artifact.sha256);
        ApiResult<Done> put = m_connections[thread]->client->upload_artifact(*target, file);
        if (!put.ok()) {
          return Error{"uploading artifact '" + artifact.path + "' of " + core::describe_owner(artifact.step_id) +
                       ": " + put.error.describe()};
        }
        std::lock_guard lock(m_store_mutex);
        if (Expected<void> saved = m_store.mark_remote_artifact(m_settings.remote, run.number,
                                                                session.plan.runs[upload.run].step, artifact.path);
            !saved) {
          return Error{store_error(saved.error())};
        }
        ++uploaded;
        uploaded_bytes += artifact.size;
        return {};
      });
  result.artifacts = uploaded.load();
  result.artifact_bytes = uploaded_bytes.load();
  if (!sent) {
    return finish(sent.error());
  }

  // Final statuses: the steps', then the run's, so the run shows RUNNING
  // on the server until everything else is there.
  auto update = [&](Client& client, std::size_t i) -> Expected<void> {
    core::RemoteRunState& state = session.states[i];
    if (state.finished) {
      return {};
    }
    const PlannedRun& planned = session.plan.runs[i];
    ApiResult<Done> updated = client.update_run(state.remote_id, planned.status, planned.end_time);
    if (!updated.ok()) {
      return Error{"setting the status of " + core::describe_owner(planned.step) + " (MLflow run " + state.remote_id +
                   ") to " + planned.status + ": " + updated.error.describe()};
    }
    state.finished = true;
    std::lock_guard lock(m_store_mutex);
    if (Expected<void> saved = m_store.save_remote_run(m_settings.remote, run.number, state); !saved) {
      return Error{store_error(saved.error())};
    }
    return {};
  };
  Expected<void> steps_done = run_parallel(threads, count - 1, [&](std::size_t thread, std::size_t job) {
    return update(*m_connections[thread]->client, job + 1);
  });
  if (!steps_done) {
    return finish(steps_done.error());
  }
  if (Expected<void> parent_done = update(main, 0); !parent_done) {
    return finish(parent_done.error());
  }
  return finish({});
}

// ---- PushLock ----

Expected<PushLock> PushLock::acquire(const std::filesystem::path& store_directory, Wait wait) {
  const std::filesystem::path file = store_directory / "push.lock";
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Error{file.string() + ": " + std::strerror(errno)};
  }
  while (::flock(fd, wait == Wait::yes ? LOCK_EX : LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      ::close(fd);
      return Error{"another kiln push from this store is running"};
    }
    if (errno != EINTR) {
      const int error = errno;
      ::close(fd);
      return Error{file.string() + ": cannot lock: " + std::strerror(error)};
    }
  }
  return PushLock(fd);
}

PushLock::PushLock(PushLock&& other) noexcept : m_fd(other.m_fd) {
  other.m_fd = -1;
}

PushLock::~PushLock() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
}

} // namespace kiln::plugins::mlflow
