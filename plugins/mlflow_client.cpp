#include "plugins/mlflow_client.hpp"

#include <cmath>
#include <filesystem>
#include <system_error>

namespace kiln::plugins::mlflow {

namespace {

constexpr std::string_view k_api = "/api/2.0/mlflow/";
constexpr std::string_view k_artifacts_api = "/api/2.0/mlflow-artifacts/artifacts/";

nlohmann::json key_values_json(const std::vector<KeyValue>& entries) {
  nlohmann::json array = nlohmann::json::array();
  for (const KeyValue& entry : entries) {
    array.push_back({{"key", entry.key}, {"value", entry.value}});
  }
  return array;
}

std::vector<KeyValue> read_key_values(const nlohmann::json& array) {
  std::vector<KeyValue> entries;
  if (!array.is_array()) {
    return entries;
  }
  for (const nlohmann::json& entry : array) {
    if (entry.is_object() && entry.value("key", nlohmann::json()).is_string()) {
      KeyValue kv;
      kv.key = entry["key"].get<std::string>();
      const nlohmann::json& value = entry.value("value", nlohmann::json());
      kv.value = value.is_string() ? value.get<std::string>() : value.dump();
      entries.push_back(std::move(kv));
    }
  }
  return entries;
}

std::string string_field(const nlohmann::json& object, const char* name) {
  if (!object.is_object()) {
    return {};
  }
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) {
    return {};
  }
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::optional<std::int64_t> int_field(const nlohmann::json& object, const char* name) {
  if (!object.is_object()) {
    return std::nullopt;
  }
  auto it = object.find(name);
  if (it == object.end()) {
    return std::nullopt;
  }
  if (it->is_number_integer()) {
    return it->get<std::int64_t>();
  }
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

RunInfo read_run_info(const nlohmann::json& info) {
  RunInfo run;
  run.run_id = string_field(info, "run_id");
  if (run.run_id.empty()) {
    run.run_id = string_field(info, "run_uuid");
  }
  run.experiment_id = string_field(info, "experiment_id");
  run.run_name = string_field(info, "run_name");
  run.status = string_field(info, "status");
  run.artifact_uri = string_field(info, "artifact_uri");
  run.lifecycle_stage = string_field(info, "lifecycle_stage");
  run.start_time = int_field(info, "start_time").value_or(0);
  run.end_time = int_field(info, "end_time");
  return run;
}

template <typename T>
ApiResult<T> failed(ApiError error) {
  ApiResult<T> result;
  result.error = std::move(error);
  return result;
}

template <typename T>
ApiResult<T> succeeded(T value) {
  ApiResult<T> result;
  result.value = std::move(value);
  return result;
}

ApiError malformed(std::string_view what) {
  return ApiError{200, "", "the server's answer to " + std::string(what) + " is not what MLflow sends"};
}

nlohmann::json metric_json(const core::MetricPoint& point) {
  nlohmann::json value;
  if (std::isnan(point.value)) {
    value = "NaN";
  } else if (std::isinf(point.value)) {
    value = point.value > 0 ? "Infinity" : "-Infinity";
  } else {
    value = point.value;
  }
  return {{"key", point.key}, {"value", std::move(value)}, {"timestamp", point.timestamp_ms}, {"step", point.step}};
}

} // namespace

std::string ApiError::describe() const {
  if (status == 0) {
    return message;
  }
  std::string text = std::to_string(status);
  if (!code.empty()) {
    text += " " + code;
  }
  if (!message.empty()) {
    text += ": " + message;
  }
  return text;
}

const std::string* RemoteRun::tag(std::string_view key) const {
  for (const KeyValue& entry : tags) {
    if (entry.key == key) {
      return &entry.value;
    }
  }
  return nullptr;
}

std::string log_batch_body(std::string_view run_id, const Batch& batch) {
  nlohmann::json body;
  body["run_id"] = run_id;
  if (!batch.params.empty()) {
    body["params"] = key_values_json(batch.params);
  }
  if (!batch.metrics.empty()) {
    nlohmann::json metrics = nlohmann::json::array();
    for (const core::MetricPoint& point : batch.metrics) {
      metrics.push_back(metric_json(point));
    }
    body["metrics"] = std::move(metrics);
  }
  if (!batch.tags.empty()) {
    body["tags"] = key_values_json(batch.tags);
  }
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<std::string> artifact_target(std::string_view artifact_uri, std::string_view relative_path) {
  constexpr std::string_view k_scheme = "mlflow-artifacts:";
  if (!artifact_uri.starts_with(k_scheme)) {
    return std::nullopt;
  }
  std::string_view path = artifact_uri.substr(k_scheme.size());
  if (path.starts_with("//")) {
    // mlflow-artifacts://host:port/path: the server named itself; the path is what counts.
    const std::size_t slash = path.find('/', 2);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
  while (path.starts_with('/')) {
    path.remove_prefix(1);
  }
  while (path.ends_with('/')) {
    path.remove_suffix(1);
  }
  std::string target(k_artifacts_api);
  if (!path.empty()) {
    target += percent_encode(path, true);
    target += '/';
  }
  target += percent_encode(relative_path, true);
  return target;
}

HttpResult Client::Counter::send(const HttpRequest& request) {
  ++requests;
  if (request.body_file.empty()) {
    bytes += static_cast<std::int64_t>(request.body.size());
  } else {
    std::error_code ignored;
    const auto size = std::filesystem::file_size(request.body_file, ignored);
    bytes += ignored ? 0 : static_cast<std::int64_t>(size);
  }
  return inner.send(request);
}

Client::Client(HttpTransport& transport, RetryPolicy policy, RetryEnvironment& environment,
               std::function<void(const std::string&)> trace)
    : m_counter(transport), m_policy(policy), m_environment(environment), m_trace(std::move(trace)) {}

ApiResult<nlohmann::json> Client::call(const HttpRequest& request,
                                       const std::function<bool(const HttpResult&)>& before_retry) {
  const std::int64_t sent_before = m_counter.requests;
  const HttpResult result = send_with_retries(m_counter, request, m_policy, m_environment, before_retry, m_trace);
  // A fault that outlasted the retries says so, so the reader knows it was not a first try.
  const std::int64_t tries = m_counter.requests - sent_before;
  const std::string gave_up =
      tries > 1 && is_retryable(result) ? " (gave up after " + std::to_string(tries) + " tries)" : "";
  if (!result.ok()) {
    return failed<nlohmann::json>(ApiError{0, "", result.error.message + gave_up});
  }
  const HttpResponse& response = *result.response;
  nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
  if (response.status >= 200 && response.status < 300) {
    if (body.is_discarded()) {
      // An empty 2xx body (some proxies) is as good as {}.
      if (response.body.find_first_not_of(" \t\r\n") == std::string::npos) {
        return succeeded(nlohmann::json::object());
      }
      return failed<nlohmann::json>(
          malformed(request.method + " " + request.target.substr(0, request.target.find('?'))));
    }
    return succeeded(std::move(body));
  }
  ApiError error;
  error.status = response.status;
  if (!body.is_discarded() && body.is_object()) {
    error.code = string_field(body, "error_code");
    error.message = string_field(body, "message");
  }
  if (error.message.empty()) {
    switch (response.status) {
    case 401:
      error.message = "not authenticated; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
                      "MLFLOW_TRACKING_TOKEN (the server refused the credentials given, if any)";
      break;
    case 403: error.message = "permission denied for these credentials"; break;
    case 404: error.message = "not found; is this an MLflow tracking server (at its base URL)?"; break;
    default: error.message = "the server answered without an MLflow error body"; break;
    }
  }
  error.message += gave_up;
  return failed<nlohmann::json>(std::move(error));
}

ApiResult<std::string> Client::experiment_id(std::string_view name) {
  HttpRequest request;
  request.method = "GET";
  request.target = std::string(k_api) + "experiments/get-by-name?experiment_name=" + percent_encode(name, false);
  ApiResult<nlohmann::json> answer = call(request);
  if (!answer.ok()) {
    return failed<std::string>(std::move(answer.error));
  }
  const nlohmann::json experiment = answer.value->value("experiment", nlohmann::json());
  std::string id = string_field(experiment, "experiment_id");
  if (id.empty()) {
    return failed<std::string>(malformed("experiments/get-by-name"));
  }
  if (string_field(experiment, "lifecycle_stage") == "deleted") {
    return failed<std::string>(ApiError{400, "EXPERIMENT_DELETED",
                                        "experiment '" + std::string(name) + "' (id " + id +
                                            ") is deleted on the server; restore it there, or push to another "
                                            "experiment with --experiment"});
  }
  return succeeded(std::move(id));
}

ApiResult<std::string> Client::create_experiment(std::string_view name) {
  HttpRequest request;
  request.method = "POST";
  request.target = std::string(k_api) + "experiments/create";
  request.content_type = "application/json";
  request.body = nlohmann::json{{"name", name}, {"tags", key_values_json({{"created_by", "kiln"}})}}.dump();
  ApiResult<nlohmann::json> answer = call(request);
  if (!answer.ok()) {
    return failed<std::string>(std::move(answer.error));
  }
  std::string id = string_field(*answer.value, "experiment_id");
  if (id.empty()) {
    return failed<std::string>(malformed("experiments/create"));
  }
  return succeeded(std::move(id));
}

ApiResult<RunInfo> Client::create_run(const NewRun& run, const std::function<bool(const HttpResult&)>& before_retry) {
  HttpRequest request;
  request.method = "POST";
  request.target = std::string(k_api) + "runs/create";
  request.content_type = "application/json";
  request.idempotent = false;
  nlohmann::json body{{"experiment_id", run.experiment_id},
                      {"user_id", run.user},
                      {"start_time", run.start_time},
                      {"run_name", run.run_name},
                      {"tags", key_values_json(run.tags)}};
  request.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  ApiResult<nlohmann::json> answer = call(request, before_retry);
  if (!answer.ok()) {
    return failed<RunInfo>(std::move(answer.error));
  }
  RunInfo info = read_run_info(answer.value->value("run", nlohmann::json()).value("info", nlohmann::json()));
  if (info.run_id.empty()) {
    return failed<RunInfo>(malformed("runs/create"));
  }
  return succeeded(std::move(info));
}

ApiResult<std::vector<RemoteRun>> Client::search_runs(std::string_view experiment_id, std::string_view filter) {
  std::vector<RemoteRun> runs;
  std::string page_token;
  for (;;) {
    HttpRequest request;
    request.method = "POST";
    request.target = std::string(k_api) + "runs/search";
    request.content_type = "application/json";
    nlohmann::json body{{"experiment_ids", nlohmann::json::array({experiment_id})},
                        {"filter", filter},
                        {"run_view_type", "ACTIVE_ONLY"},
                        {"max_results", 1000}};
    if (!page_token.empty()) {
      body["page_token"] = page_token;
    }
    request.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    ApiResult<nlohmann::json> answer = call(request);
    if (!answer.ok()) {
      return failed<std::vector<RemoteRun>>(std::move(answer.error));
    }
    const nlohmann::json& page = *answer.value;
    if (auto it = page.find("runs"); it != page.end() && it->is_array()) {
      for (const nlohmann::json& entry : *it) {
        RemoteRun run;
        run.info = read_run_info(entry.value("info", nlohmann::json()));
        const nlohmann::json data = entry.value("data", nlohmann::json::object());
        run.params = read_key_values(data.value("params", nlohmann::json()));
        run.tags = read_key_values(data.value("tags", nlohmann::json()));
        if (!run.info.run_id.empty()) {
          runs.push_back(std::move(run));
        }
      }
    }
    page_token = string_field(page, "next_page_token");
    if (page_token.empty()) {
      return succeeded(std::move(runs));
    }
  }
}

ApiResult<Done> Client::log_batch(std::string_view run_id, const Batch& batch) {
  HttpRequest request;
  request.method = "POST";
  request.target = std::string(k_api) + "runs/log-batch";
  request.content_type = "application/json";
  request.body = log_batch_body(run_id, batch);
  ApiResult<nlohmann::json> answer = call(request);
  if (!answer.ok()) {
    return failed<Done>(std::move(answer.error));
  }
  return succeeded(Done{});
}

ApiResult<Done> Client::update_run(std::string_view run_id, std::string_view status, std::int64_t end_time) {
  HttpRequest request;
  request.method = "POST";
  request.target = std::string(k_api) + "runs/update";
  request.content_type = "application/json";
  request.body = nlohmann::json{{"run_id", run_id}, {"status", status}, {"end_time", end_time}}.dump();
  ApiResult<nlohmann::json> answer = call(request);
  if (!answer.ok()) {
    return failed<Done>(std::move(answer.error));
  }
  // An unknown status is answered 200 with nothing changed (transcript 52):
  // check that the server took it.
  const RunInfo info = read_run_info(answer.value->value("run_info", nlohmann::json()));
  if (!info.status.empty() && info.status != status) {
    return failed<Done>(
        ApiError{200, "", "the server kept status " + info.status + " instead of " + std::string(status)});
  }
  return succeeded(Done{});
}

ApiResult<Done> Client::upload_artifact(std::string_view target, const std::filesystem::path& file) {
  HttpRequest request;
  request.method = "PUT";
  request.target = std::string(target);
  request.content_type = "application/octet-stream";
  request.body_file = file;
  ApiResult<nlohmann::json> answer = call(request);
  if (!answer.ok()) {
    return failed<Done>(std::move(answer.error));
  }
  return succeeded(Done{});
}

} // namespace kiln::plugins::mlflow
