// `kiln push` and the push at the end of `kiln run`.

#include "cli/commands.hpp"
#include "cli/console.hpp"
#include "cli/context.hpp"
#include "cli/history.hpp"
#include "cli/push.hpp"
#include "plugins/curl_transport.hpp"
#include "plugins/mlflow_push.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <tuple>

namespace kiln::cli {

namespace {

namespace mlflow = plugins::mlflow;

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

/// Where one group of runs goes.
struct Destination {
  /// As given (flag or environment, may hold credentials), or the stored remote.
  std::string uri;
  std::string experiment;
};

bool operator<(const Destination& a, const Destination& b) {
  return std::tie(a.uri, a.experiment) < std::tie(b.uri, b.experiment);
}

/// Settings for a tracking URI with the MLFLOW_* environment applied; the
/// error is redacted.
core::Expected<plugins::HttpSettings> http_settings(const std::string& uri, bool verbose) {
  core::Expected<plugins::HttpSettings> settings = plugins::parse_tracking_uri(uri);
  if (!settings) {
    return settings;
  }
  if (core::Expected<void> applied =
          plugins::apply_environment(*settings, [](const char* name) { return std::getenv(name); });
      !applied) {
    return core::Error{applied.error()};
  }
  if (verbose) {
    settings->trace = [](const std::string& line) { std::fprintf(stderr, "kiln: http: %s\n", line.c_str()); };
  }
  return settings;
}

core::Expected<plugins::RetryPolicy> retry_policy(plugins::RetryPolicy defaults) {
  return plugins::RetryPolicy::from_environment(defaults, [](const char* name) { return std::getenv(name); });
}

/// Fails when libcurl cannot be loaded (it is opened on first use).
core::Expected<mlflow::PushSettings> push_settings(const plugins::HttpSettings& http, const std::string& experiment,
                                                   const plugins::RetryPolicy& policy, int connections) {
  try {
    plugins::init_http();
  } catch (const std::exception& e) {
    return core::Error{e.what()};
  }
  mlflow::PushSettings settings;
  settings.remote = http.base_url;
  settings.experiment = experiment;
  settings.connections = connections;
  settings.policy = policy;
  settings.make_transport = [http] { return std::make_unique<plugins::CurlTransport>(http); };
  settings.trace = http.trace;
  return settings;
}

/// 1234567 -> "1,234,567".
std::string format_count(std::int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) {
    digits.insert(static_cast<std::size_t>(i), ",");
  }
  return n < 0 ? "-" + digits : digits;
}

std::string count(std::int64_t n, const char* one, const char* many) {
  return format_count(n) + " " + (n == 1 ? one : many);
}

void print_result(const mlflow::PushResult& result, const mlflow::PushSettings& settings, bool dry_run,
                  double seconds) {
  for (const std::string& warning : result.warnings) {
    std::fprintf(stderr, "kiln: warning: run %lld: %s\n", static_cast<long long>(result.run), warning.c_str());
  }
  const std::string where = settings.remote + ", experiment '" + settings.experiment + "'";
  if (!result.ok) {
    std::fprintf(stderr, "kiln: error: push of run %lld to %s: %s\n", static_cast<long long>(result.run), where.c_str(),
                 result.error.c_str());
    return;
  }
  const std::string data =
      count(result.params, "param", "params") + ", " + count(result.tags, "tag", "tags") + ", " +
      count(result.points, "metric point", "metric points") + " (" + count(result.batches, "batch", "batches") +
      ") and " + count(result.artifacts, "artifact", "artifacts") + " (" + format_size(result.artifact_bytes) + ")";
  if (dry_run) {
    if (result.already_synced) {
      std::printf("kiln: run %lld: nothing to send to %s\n", static_cast<long long>(result.run), where.c_str());
    } else {
      std::printf("kiln: run %lld -> %s: would create %s and send %s: about %s\n", static_cast<long long>(result.run),
                  where.c_str(), count(result.runs_created, "MLflow run", "MLflow runs").c_str(), data.c_str(),
                  count(result.requests, "request", "requests").c_str());
    }
    return;
  }
  if (result.already_synced) {
    std::printf("kiln: run %lld is already on %s (MLflow run %s)\n", static_cast<long long>(result.run), where.c_str(),
                result.remote_run_id.c_str());
    return;
  }
  std::string created = count(result.runs_created, "MLflow run", "MLflow runs") + " created";
  if (result.runs_adopted > 0) {
    created += ", " + count(result.runs_adopted, "found from an earlier push", "found from an earlier push");
  }
  std::printf("kiln: pushed run %lld to %s (id %s): MLflow run %s; %s; sent %s in %s, %s\n",
              static_cast<long long>(result.run), where.c_str(), result.experiment_id.c_str(),
              result.remote_run_id.c_str(), created.c_str(), data.c_str(),
              count(result.requests, "request", "requests").c_str(),
              format_duration_ms(static_cast<std::int64_t>(seconds * 1000)).c_str());
}

nlohmann::json result_json(const mlflow::PushResult& result, const mlflow::PushSettings& settings, bool dry_run,
                           double seconds) {
  auto text_or_null = [](const std::string& text) { return text.empty() ? nlohmann::json() : nlohmann::json(text); };
  return nlohmann::json{{"run", result.run},
                        {"remote", settings.remote},
                        {"experiment", settings.experiment},
                        {"experiment_id", text_or_null(result.experiment_id)},
                        {"mlflow_run_id", text_or_null(result.remote_run_id)},
                        {"dry_run", dry_run},
                        {"ok", result.ok},
                        {"error", text_or_null(result.error)},
                        {"already_synced", result.already_synced},
                        {"runs_created", result.runs_created},
                        {"runs_adopted", result.runs_adopted},
                        {"batches", result.batches},
                        {"params", result.params},
                        {"tags", result.tags},
                        {"points", result.points},
                        {"artifacts", result.artifacts},
                        {"artifact_bytes", result.artifact_bytes},
                        {"requests", result.requests},
                        {"bytes_sent", result.bytes_sent},
                        {"seconds", seconds},
                        {"warnings", result.warnings}};
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

} // namespace

std::optional<PushTarget> run_push_target(const core::TrackingConfig& tracking, const std::string& workflow_name) {
  PushTarget target;
  if (!tracking.uri.empty()) {
    target.uri = tracking.uri;
  } else if (const char* uri = env("MLFLOW_TRACKING_URI")) {
    target.uri = uri;
  } else {
    return std::nullopt;
  }
  if (!tracking.experiment.empty()) {
    target.experiment = tracking.experiment;
  } else if (const char* name = env("MLFLOW_EXPERIMENT_NAME")) {
    target.experiment = name;
  } else {
    target.experiment = workflow_name;
  }
  return target;
}

std::string record_pending_push(core::TrackerStore& store, std::int64_t run, const PushTarget& target) {
  core::Expected<plugins::HttpSettings> settings = plugins::parse_tracking_uri(target.uri);
  if (!settings) {
    return settings.error();
  }
  core::PushRecord record;
  record.run = run;
  record.remote = settings->base_url;
  record.experiment = target.experiment;
  record.state = core::PushState::pending;
  record.updated_ms = now_ms();
  if (core::Expected<void> saved = store.set_push_record(record); !saved) {
    return saved.error();
  }
  return {};
}

void auto_push(core::TrackerStore& store, std::int64_t run, const PushTarget& target) {
  core::Expected<core::RunRecord> record = store.run(run);
  core::Expected<plugins::HttpSettings> http = http_settings(target.uri, false);
  // A night run must not wait long on a server that is down: a few quick
  // retries, then `kiln push --pending` picks it up.
  plugins::RetryPolicy defaults;
  defaults.max_retries = 2;
  defaults.backoff_factor = std::chrono::duration<double>(1.0);
  defaults.max_delay = std::chrono::duration<double>(5.0);
  defaults.budget = std::chrono::duration<double>(20.0);
  core::Expected<plugins::RetryPolicy> policy = retry_policy(defaults);
  std::string error;
  if (!record) {
    error = record.error();
  } else if (!http) {
    error = http.error();
  } else if (!policy) {
    error = policy.error();
  }
  if (!error.empty()) {
    std::fprintf(stderr, "kiln: warning: not pushed: %s\n", error.c_str());
    return;
  }
  // A server that accepts connections but never answers costs at most
  // about 25 s: two tries of 10 s before the budget runs out.
  http->request_timeout = std::min(http->request_timeout, std::chrono::milliseconds(10'000));
  http->connect_timeout = std::min(http->connect_timeout, std::chrono::milliseconds(5'000));
  http->stall_timeout = std::min(http->stall_timeout, std::chrono::milliseconds(10'000));
  core::Expected<mlflow::PushSettings> made = push_settings(*http, target.experiment, *policy, 4);
  if (!made) {
    std::fprintf(stderr, "kiln: warning: not pushed: %s; the run is pending for `kiln push --pending`\n",
                 made.error().c_str());
    return;
  }
  const mlflow::PushSettings& settings = *made;
  // Never wait on a long push (a cron backlog): the run stays pending for it.
  core::Expected<plugins::mlflow::PushLock> lock =
      mlflow::PushLock::acquire(store.directory(), mlflow::PushLock::Wait::no);
  if (!lock) {
    std::fprintf(stderr, "kiln: warning: not pushed yet: %s; the run is pending for `kiln push --pending`\n",
                 lock.error().c_str());
    return;
  }
  const auto started = std::chrono::steady_clock::now();
  mlflow::Pusher pusher(store, settings);
  const mlflow::PushResult result = pusher.push(*record);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (result.ok) {
    print_result(result, settings, false, seconds);
  } else {
    for (const std::string& warning : result.warnings) {
      std::fprintf(stderr, "kiln: warning: run %lld: %s\n", static_cast<long long>(run), warning.c_str());
    }
    std::fprintf(stderr,
                 "kiln: warning: push to %s failed (the run itself is recorded; `kiln push --pending` retries): "
                 "%s\n",
                 settings.remote.c_str(), result.error.c_str());
  }
}

int push_command(const GlobalOptions& global, const PushOptions& options) {
  if (options.runs.empty() && !options.pending) {
    std::fprintf(stderr, "kiln: error: name the runs to push, or give --pending for every run not yet pushed\n");
    return k_exit_usage;
  }
  std::unique_ptr<core::TrackerStore> store;
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  std::string given_uri = options.tracking_uri;
  if (given_uri.empty()) {
    if (const char* uri = env("MLFLOW_TRACKING_URI")) {
      given_uri = uri;
    }
  }
  // The remote a given URI stands for, as the store keys it.
  std::string given_remote;
  if (!given_uri.empty()) {
    core::Expected<plugins::HttpSettings> settings = plugins::parse_tracking_uri(given_uri);
    if (!settings) {
      std::fprintf(stderr, "kiln: error: %s\n", settings.error().c_str());
      return k_exit_usage;
    }
    given_remote = settings->base_url;
  }

  core::Expected<std::vector<core::PushRecord>> records = store->push_records();
  if (!records) {
    std::fprintf(stderr, "kiln: error: %s\n", records.error().c_str());
    return k_exit_internal;
  }
  std::map<std::int64_t, std::vector<const core::PushRecord*>> records_of;
  for (const core::PushRecord& record : *records) {
    records_of[record.run].push_back(&record);
  }

  // Which runs, to where.
  std::map<Destination, std::vector<core::RunRecord>> groups;
  std::map<std::int64_t, std::set<std::string>> planned;
  int status = k_exit_ok;
  auto experiment_for = [&](const core::RunRecord& run, const core::PushRecord* record) {
    if (!options.experiment.empty()) {
      return options.experiment;
    }
    if (record != nullptr && !record->experiment.empty()) {
      return record->experiment;
    }
    if (const char* name = env("MLFLOW_EXPERIMENT_NAME")) {
      return std::string(name);
    }
    return run.workflow_name;
  };
  auto add = [&](const core::RunRecord& run) -> bool {
    if (!options.tracking_uri.empty() || (records_of[run.number].empty() && !given_uri.empty())) {
      const core::PushRecord* record = nullptr;
      for (const core::PushRecord* r : records_of[run.number]) {
        if (r->remote == given_remote) {
          record = r;
        }
      }
      if (planned[run.number].insert(given_remote).second) {
        groups[{given_uri, experiment_for(run, record)}].push_back(run);
      }
      return true;
    }
    if (records_of[run.number].empty()) {
      std::fprintf(stderr,
                   "kiln: error: run %lld names no tracking server: give --tracking-uri, set MLFLOW_TRACKING_URI, or "
                   "add a tracking: section to the workflow\n",
                   static_cast<long long>(run.number));
      return false;
    }
    for (const core::PushRecord* record : records_of[run.number]) {
      if (options.pending && record->state == core::PushState::synced) {
        continue;
      }
      if (planned[run.number].insert(record->remote).second) {
        // The stored remote has no credentials: the environment supplies
        // them, or MLFLOW_TRACKING_URI's userinfo when it names this server.
        const std::string& uri = record->remote == given_remote ? given_uri : record->remote;
        groups[{uri, experiment_for(run, record)}].push_back(run);
      }
    }
    return true;
  };
  for (const std::string& ref : options.runs) {
    core::Expected<core::RunRecord> run = store->resolve_run(ref);
    if (!run) {
      std::fprintf(stderr, "kiln: error: %s\n", run.error().c_str());
      return k_exit_usage;
    }
    if (!add(*run)) {
      status = k_exit_usage;
    }
  }
  if (options.pending) {
    std::set<std::int64_t> candidates;
    for (const core::PushRecord& record : *records) {
      if (record.state != core::PushState::synced && (options.tracking_uri.empty() || record.remote == given_remote)) {
        candidates.insert(record.run);
      }
    }
    if (!given_remote.empty()) {
      core::Expected<std::vector<std::int64_t>> unsynced = store->runs_not_synced(given_remote);
      if (!unsynced) {
        std::fprintf(stderr, "kiln: error: %s\n", unsynced.error().c_str());
        return k_exit_internal;
      }
      candidates.insert(unsynced->begin(), unsynced->end());
    }
    for (std::int64_t number : candidates) {
      core::Expected<core::RunRecord> run = store->run(number);
      if (!run) {
        continue;
      }
      if (run->status == core::RunStatus::running) {
        // Its own runner pushes it when it ends.
        continue;
      }
      add(*run);
    }
  }
  if (status != k_exit_ok) {
    return status;
  }
  if (groups.empty()) {
    if (options.format == OutputFormat::json) {
      std::printf("[]\n");
    } else {
      std::printf("kiln: nothing to push\n");
    }
    return k_exit_ok;
  }

  core::Expected<plugins::RetryPolicy> policy = retry_policy(plugins::RetryPolicy{});
  if (!policy) {
    std::fprintf(stderr, "kiln: error: %s\n", policy.error().c_str());
    return k_exit_usage;
  }
  std::optional<plugins::mlflow::PushLock> lock;
  if (!options.dry_run) {
    core::Expected<plugins::mlflow::PushLock> acquired =
        mlflow::PushLock::acquire(store->directory(), mlflow::PushLock::Wait::yes);
    if (!acquired) {
      std::fprintf(stderr, "kiln: error: %s\n", acquired.error().c_str());
      return k_exit_internal;
    }
    lock.emplace(std::move(*acquired));
  }
  nlohmann::json results = nlohmann::json::array();
  for (auto& [destination, runs] : groups) {
    core::Expected<plugins::HttpSettings> http = http_settings(destination.uri, options.verbose);
    if (!http) {
      std::fprintf(stderr, "kiln: error: %s\n", http.error().c_str());
      status = k_exit_usage;
      continue;
    }
    core::Expected<mlflow::PushSettings> made =
        push_settings(*http, destination.experiment, *policy, options.connections);
    if (!made) {
      std::fprintf(stderr, "kiln: error: %s\n", made.error().c_str());
      return k_exit_internal;
    }
    const mlflow::PushSettings& settings = *made;
    mlflow::Pusher pusher(*store, settings);
    for (const core::RunRecord& run : runs) {
      const auto started = std::chrono::steady_clock::now();
      const mlflow::PushResult result = options.dry_run ? pusher.dry_run(run) : pusher.push(run);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (options.format == OutputFormat::json) {
        results.push_back(result_json(result, settings, options.dry_run, seconds));
      } else {
        print_result(result, settings, options.dry_run, seconds);
      }
      if (!result.ok && status == k_exit_ok) {
        status = k_exit_step_failed;
      }
    }
  }
  if (options.format == OutputFormat::json) {
    std::printf("%s\n", results.dump(2).c_str());
  }
  return status;
}

} // namespace kiln::cli
