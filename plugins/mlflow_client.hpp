#pragma once
// MLflow's REST API (tracking server 2.x, with the artifact proxy), as the
// push needs it: typed calls over an HttpTransport, retried per RetryPolicy.
// The JSON shapes, limits and error bodies follow real exchanges with an
// MLflow 2.10.2 server (tests/mlflow/transcripts/).
//
// A client is one connection; use one per thread.

#include "core/tracking.hpp"
#include "plugins/http_transport.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::plugins::mlflow {

/// The limits a tracking server enforces per runs/log-batch request and on
/// keys and values (MLflow's validation.py; seen in transcripts 14-25b).
inline constexpr int k_max_metrics_per_batch = 1000;
inline constexpr int k_max_params_per_batch = 100;
inline constexpr int k_max_tags_per_batch = 100;
inline constexpr int k_max_entities_per_batch = 1000;
inline constexpr std::size_t k_max_key_length = 250;
inline constexpr std::size_t k_max_param_value_length = 6000;
inline constexpr std::size_t k_max_tag_value_length = 5000;

/// Why a call failed.
struct ApiError {
  /// The HTTP status; 0 when no response came (see `message`).
  int status = 0;
  /// MLflow's error_code ("RESOURCE_DOES_NOT_EXIST"); "" when the body had none.
  std::string code;
  /// The server's message, or the transport's; redacted.
  std::string message;

  /// "404 RESOURCE_DOES_NOT_EXIST: Run with id=... not found", or the
  /// transport's message.
  std::string describe() const;
};

template <typename T>
struct ApiResult {
  std::optional<T> value;
  ApiError error;

  bool ok() const { return value.has_value(); }
};

struct Done {};

struct KeyValue {
  std::string key;
  std::string value;
};

struct RunInfo {
  std::string run_id;
  std::string experiment_id;
  std::string run_name;
  std::string status;
  std::string artifact_uri;
  std::string lifecycle_stage;
  std::int64_t start_time = 0;
  std::optional<std::int64_t> end_time;
};

/// A run as runs/search returns it.
struct RemoteRun {
  RunInfo info;
  std::vector<KeyValue> params;
  std::vector<KeyValue> tags;

  /// The tag's value, or nullptr.
  const std::string* tag(std::string_view key) const;
};

struct NewRun {
  std::string experiment_id;
  std::string run_name;
  std::string user;
  std::int64_t start_time = 0;
  /// Must include mlflow.runName equal to run_name when set (the server
  /// refuses a disagreement, transcript 07).
  std::vector<KeyValue> tags;
};

/// One runs/log-batch request; within the limits above (checked by the caller).
struct Batch {
  std::vector<KeyValue> params;
  std::vector<core::MetricPoint> metrics;
  std::vector<KeyValue> tags;

  std::size_t entities() const { return params.size() + metrics.size() + tags.size(); }
};

/// The request body of a log-batch: NaN and the infinities as the strings
/// "NaN", "Infinity" and "-Infinity" (transcript 19; a bare NaN token is
/// stored as 0, transcript 20).
std::string log_batch_body(std::string_view run_id, const Batch& batch);

/// "/api/2.0/mlflow-artifacts/artifacts/<path>/<relative>" for a run's
/// artifact_uri of the form mlflow-artifacts:/<path> (the artifact proxy),
/// each segment percent-encoded; nullopt for any other artifact store
/// (s3://, a local path...), which kiln cannot write to through the server.
std::optional<std::string> artifact_target(std::string_view artifact_uri, std::string_view relative_path);

class Client {
public:
  Client(HttpTransport& transport, RetryPolicy policy, RetryEnvironment& environment,
         std::function<void(const std::string&)> trace = {});

  /// The experiment's id; error code RESOURCE_DOES_NOT_EXIST when there is none.
  ApiResult<std::string> experiment_id(std::string_view name);
  /// Creates the experiment; RESOURCE_ALREADY_EXISTS (status 400) when the name is taken.
  ApiResult<std::string> create_experiment(std::string_view name);

  /// runs/create. `before_retry` is passed to send_with_retries: creating is
  /// not idempotent, so the caller checks whether a failed try created the
  /// run after all before trying again.
  ApiResult<RunInfo> create_run(const NewRun& run, const std::function<bool(const HttpResult&)>& before_retry);
  /// Every active run of the experiment matching `filter` (MLflow's search
  /// syntax), following page tokens.
  ApiResult<std::vector<RemoteRun>> search_runs(std::string_view experiment_id, std::string_view filter);
  ApiResult<Done> log_batch(std::string_view run_id, const Batch& batch);
  /// status: FINISHED, FAILED or KILLED.
  ApiResult<Done> update_run(std::string_view run_id, std::string_view status, std::int64_t end_time);
  /// PUT of a file through the artifact proxy, streamed.
  ApiResult<Done> upload_artifact(std::string_view target, const std::filesystem::path& file);

  /// Requests sent and bytes of request bodies, retries included.
  std::int64_t requests() const { return m_counter.requests; }
  std::int64_t bytes_sent() const { return m_counter.bytes; }

private:
  /// Sends with retries and returns the parsed JSON body of a 2xx answer,
  /// or why not.
  ApiResult<nlohmann::json> call(const HttpRequest& request,
                                              const std::function<bool(const HttpResult&)>& before_retry = {});

  /// Counts what goes through to the real transport, retries included.
  struct Counter final : HttpTransport {
    explicit Counter(HttpTransport& inner) : inner(inner) {}
    HttpResult send(const HttpRequest& request) override;
    HttpTransport& inner;
    std::int64_t requests = 0;
    std::int64_t bytes = 0;
  };

  Counter m_counter;
  RetryPolicy m_policy;
  RetryEnvironment& m_environment;
  std::function<void(const std::string&)> m_trace;
};

} // namespace kiln::plugins::mlflow
