// The MLflow push's logic around the wire: request bodies, artifact paths,
// the mapping of a kiln run to MLflow runs with MLflow's limits, batching to
// the fewest requests, and resuming without duplicates. The HTTP side is a
// fake here; the real exchange is tested end to end against the test server
// (tests/e2e/push*.sh).

#include "plugins/mlflow_push.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace kiln::plugins;
using namespace kiln::plugins::mlflow;
using kiln::test::ok;
using kiln::test::TempDir;

namespace {

/// Enough of an MLflow server for the pusher, in memory, with a switch to
/// fail requests and to "lose" answers after acting on them.
class FakeServer final : public HttpTransport {
public:
  struct Run {
    std::string experiment;
    std::map<std::string, std::string> tags;
    std::map<std::string, std::string> params;
    std::vector<std::tuple<std::string, std::string, std::int64_t, std::int64_t>> points;
    std::string status = "RUNNING";
    std::set<std::string> artifacts;
  };

  HttpResult send(const HttpRequest& request) override {
    ++requests;
    ++by_endpoint[request.method + " " + request.target.substr(0, request.target.find('?'))];
    HttpResult result;
    if (fail_from > 0 && requests >= fail_from && (fail_count < 0 || requests < fail_from + fail_count)) {
      if (!act_then_fail) {
        result.error = {TransportFailure::connection, "connection refused"};
        return result;
      }
      (void)handle(request);
      result.error = {TransportFailure::timeout, "timed out"};
      return result;
    }
    result.response = handle(request);
    return result;
  }

  HttpResponse handle(const HttpRequest& request) {
    const std::string path = request.target.substr(0, request.target.find('?'));
    const nlohmann::json body = request.body.empty() ? nlohmann::json::object() : nlohmann::json::parse(request.body);
    auto answer = [](int status, nlohmann::json json) { return HttpResponse{status, {}, json.dump()}; };
    if (path == "/api/2.0/mlflow/experiments/get-by-name") {
      if (experiment_exists) {
        return answer(200, {{"experiment", {{"experiment_id", "7"}, {"lifecycle_stage", "active"}}}});
      }
      return answer(404, {{"error_code", "RESOURCE_DOES_NOT_EXIST"}, {"message", "no"}});
    }
    if (path == "/api/2.0/mlflow/experiments/create") {
      experiment_exists = true;
      return answer(200, {{"experiment_id", "7"}});
    }
    if (path == "/api/2.0/mlflow/runs/create") {
      const std::string id = std::string(31, '0') + std::to_string(runs.size() % 10) + "";
      const std::string run_id = "run" + std::to_string(runs.size());
      Run& run = runs[run_id];
      run.experiment = body["experiment_id"];
      for (const auto& tag : body["tags"]) {
        run.tags[tag["key"]] = tag["value"];
      }
      (void)id;
      return answer(200, {{"run", {{"info", {{"run_id", run_id}, {"artifact_uri", "mlflow-artifacts:/7/" + run_id + "/artifacts"}}}}}});
    }
    if (path == "/api/2.0/mlflow/runs/search") {
      nlohmann::json found = nlohmann::json::array();
      const std::string filter = body["filter"];
      for (const auto& [id, run] : runs) {
        auto it = run.tags.find("kiln.run.id");
        if (it != run.tags.end() && filter.find("'" + it->second + "'") != std::string::npos) {
          nlohmann::json tags = nlohmann::json::array();
          for (const auto& [k, v] : run.tags) {
            tags.push_back({{"key", k}, {"value", v}});
          }
          nlohmann::json params = nlohmann::json::array();
          for (const auto& [k, v] : run.params) {
            params.push_back({{"key", k}, {"value", v}});
          }
          found.push_back({{"info", {{"run_id", id}, {"artifact_uri", "mlflow-artifacts:/7/" + id + "/artifacts"}}},
                           {"data", {{"tags", tags}, {"params", params}}}});
        }
      }
      return answer(200, found.empty() ? nlohmann::json::object() : nlohmann::json{{"runs", found}});
    }
    if (path == "/api/2.0/mlflow/runs/log-batch") {
      Run& run = runs.at(body["run_id"]);
      const auto size = [&](const char* name) { return body.contains(name) ? body[name].size() : 0; };
      REQUIRE(size("metrics") <= 1000);
      REQUIRE(size("params") <= 100);
      REQUIRE(size("tags") <= 100);
      REQUIRE(size("metrics") + size("params") + size("tags") <= 1000);
      for (const auto& param : body.value("params", nlohmann::json::array())) {
        auto [it, inserted] = run.params.emplace(param["key"], param["value"]);
        if (!inserted && it->second != param["value"]) {
          return answer(400, {{"error_code", "INVALID_PARAMETER_VALUE"}, {"message", "Changing param values is not allowed"}});
        }
      }
      for (const auto& tag : body.value("tags", nlohmann::json::array())) {
        run.tags[tag["key"]] = tag["value"];
      }
      for (const auto& m : body.value("metrics", nlohmann::json::array())) {
        run.points.emplace_back(m["key"], m["value"].dump(), m["step"], m["timestamp"]);
      }
      return answer(200, nlohmann::json::object());
    }
    if (path == "/api/2.0/mlflow/runs/update") {
      runs.at(body["run_id"]).status = body["status"];
      return answer(200, {{"run_info", {{"status", body["status"]}}}});
    }
    if (path.starts_with("/api/2.0/mlflow-artifacts/artifacts/7/")) {
      const std::string rest = path.substr(std::string("/api/2.0/mlflow-artifacts/artifacts/7/").size());
      runs.at(rest.substr(0, rest.find('/'))).artifacts.insert(rest.substr(rest.find("/artifacts/") + 11));
      return answer(200, nlohmann::json::object());
    }
    return answer(404, nlohmann::json::object());
  }

  std::map<std::string, Run> runs;
  std::map<std::string, int> by_endpoint;
  bool experiment_exists = false;
  int requests = 0;
  /// From this request number on (1-based; 0 = never), `fail_count` requests fail (-1 = all).
  int fail_from = 0;
  int fail_count = -1;
  /// Fail after acting, as a server whose answer is lost.
  bool act_then_fail = false;
};

/// A transport that forwards to one shared FakeServer (the pusher makes one per connection).
class Forward final : public HttpTransport {
public:
  explicit Forward(FakeServer& server) : m_server(server) {}
  HttpResult send(const HttpRequest& request) override { return m_server.send(request); }

private:
  FakeServer& m_server;
};

class NoWait final : public RetryEnvironment {
public:
  void sleep(std::chrono::duration<double>) override {}
  std::chrono::steady_clock::time_point now() override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point wall_now() override { return std::chrono::system_clock::now(); }
  double uniform() override { return 0.5; }
};

struct Fixture {
  TempDir dir;
  std::unique_ptr<kiln::core::TrackerStore> store = ok(kiln::core::TrackerStore::open(dir.path() / "store"));
  FakeServer server;
  NoWait wait;

  PushSettings settings(int retries = 2) {
    PushSettings s;
    s.remote = "http://mlflow.test";
    s.experiment = "exp";
    // One connection: the fake is not thread-safe.
    s.connections = 1;
    s.policy.max_retries = retries;
    s.make_transport = [this] { return std::make_unique<Forward>(server); };
    s.environment = &wait;
    return s;
  }

  /// A finished run: step "train" with `points` points of "loss", `params`
  /// params, and the given tags.
  kiln::core::RunRecord make_run(int points, int params, const kiln::core::KeyValues& step_tags = {}) {
    kiln::core::NewRun run;
    run.workflow_name = "flow";
    run.workflow_file = "/w/flow.yaml";
    run.workflow_hash = "h";
    run.workflow_content = "name: flow";
    run.user = "ann";
    run.started_ms = 1000;
    kiln::core::NewStep step;
    step.id = "train";
    step.kind = "train";
    step.command = "python train.py";
    step.workdir = "/w";
    run.steps.push_back(step);
    kiln::core::RunRecord record = ok(store->create_run(run));
    std::vector<kiln::core::MetricPoint> history;
    for (int i = 0; i < points; ++i) {
      history.push_back({"loss", 1.0 / (i + 1), i, 2000 + i});
    }
    if (!history.empty()) {
      history.back().value = std::numeric_limits<double>::quiet_NaN();
    }
    REQUIRE(store->log_metrics(record.number, "train", history).ok());
    kiln::core::KeyValues ps;
    for (int i = 0; i < params; ++i) {
      ps.emplace_back("p" + std::to_string(1000 + i), std::to_string(i));
    }
    REQUIRE(store->log_params(record.number, "train", ps).ok());
    REQUIRE(store->set_tags(record.number, "train", step_tags).ok());
    REQUIRE(store->set_step_status(record.number, "train", kiln::core::StepStatus::succeeded, 5000).ok());
    REQUIRE(store->finish_run(record.number, kiln::core::RunStatus::succeeded, 0, 6000).ok());
    return ok(store->run(record.number));
  }

  std::int64_t points_on_server() const {
    std::int64_t n = 0;
    for (const auto& [id, run] : server.runs) {
      n += static_cast<std::int64_t>(run.points.size());
    }
    return n;
  }
};

} // namespace

TEST_SUITE("plugins::mlflow") {
  TEST_CASE("log-batch bodies carry NaN and the infinities as strings") {
    Batch batch;
    batch.params = {{"lr", "0.1"}};
    batch.metrics = {{"loss", 0.5, 3, 1700}, {"loss", std::numeric_limits<double>::quiet_NaN(), 4, 1701},
                     {"loss", std::numeric_limits<double>::infinity(), 5, 1702},
                     {"loss", -std::numeric_limits<double>::infinity(), 6, 1703}};
    CHECK(log_batch_body("abc", batch) ==
          R"({"metrics":[{"key":"loss","step":3,"timestamp":1700,"value":0.5},)"
          R"({"key":"loss","step":4,"timestamp":1701,"value":"NaN"},)"
          R"({"key":"loss","step":5,"timestamp":1702,"value":"Infinity"},)"
          R"({"key":"loss","step":6,"timestamp":1703,"value":"-Infinity"}],"params":[{"key":"lr","value":"0.1"}],"run_id":"abc"})");
  }

  TEST_CASE("artifact paths go through the proxy, percent-encoded") {
    CHECK(artifact_target("mlflow-artifacts:/2/abc/artifacts", "reports/a b#1.txt") ==
          "/api/2.0/mlflow-artifacts/artifacts/2/abc/artifacts/reports/a%20b%231.txt");
    CHECK(artifact_target("mlflow-artifacts://mlflow:5000/2/abc/artifacts/", "m.pkl") ==
          "/api/2.0/mlflow-artifacts/artifacts/2/abc/artifacts/m.pkl");
    CHECK_FALSE(artifact_target("s3://bucket/2/abc/artifacts", "m.pkl").has_value());
    CHECK_FALSE(artifact_target("/var/mlruns/2/abc/artifacts", "m.pkl").has_value());
  }

  TEST_CASE("the plan fits MLflow's limits and says what it changed") {
    Fixture f;
    const auto run = f.make_run(3, 1, {{"long", std::string(5200, 'x')}, {"bad key!", "v"}, {"ok", "fine"}});
    const PushPlan plan = ok(plan_push(*f.store, run));
    REQUIRE(plan.runs.size() == 2);
    CHECK(plan.runs[0].run_name == "flow-1");
    CHECK(plan.runs[0].status == "FINISHED");
    const PlannedRun& train = plan.runs[1];
    CHECK(train.run_name == "train");
    CHECK(train.points == 3);
    std::map<std::string, std::string> tags;
    for (const KeyValue& tag : train.create_tags) {
      tags[tag.key] = tag.value;
    }
    CHECK(tags.at("long").size() == 5000);
    CHECK(tags.at("ok") == "fine");
    CHECK(tags.at("kiln.step") == "train");
    CHECK(tags.at("mlflow.runName") == "train");
    CHECK(tags.count("mlflow.parentRunId") == 1);
    CHECK(tags.count("bad key!") == 0);
    REQUIRE(plan.warnings.size() == 2);
    // In key order.
    CHECK(plan.warnings[0].starts_with("skipped tag 'bad key!' of step 'train': "));
    CHECK(plan.warnings[1] == "cut tag 'long' of step 'train' from 5200 to 5000 characters (MLflow's limit)");
  }

  TEST_CASE("batches are full: 2,500 points and 150 params take 3 requests") {
    Fixture f;
    const auto run = f.make_run(2500, 150);
    Pusher pusher(*f.store, f.settings());
    const PushResult result = pusher.push(run);
    REQUIRE_MESSAGE(result.ok, result.error);
    CHECK(result.batches == 3);
    CHECK(result.points == 2500);
    CHECK(result.params == 150);
    CHECK(f.server.by_endpoint["POST /api/2.0/mlflow/runs/log-batch"] == 3);
    CHECK(f.server.by_endpoint["POST /api/2.0/mlflow/runs/create"] == 2);
    CHECK(f.server.by_endpoint["POST /api/2.0/mlflow/runs/update"] == 2);
    CHECK(f.points_on_server() == 2500);
    // NaN went as a string.
    const auto& points = f.server.runs.at("run1").points;
    CHECK(std::get<1>(points.back()) == "\"NaN\"");
    // Nothing left: a second push sends nothing.
    const PushResult again = pusher.push(run);
    CHECK(again.ok);
    CHECK(again.already_synced);
    CHECK(again.requests == 0);
  }

  TEST_CASE("a push that stops part-way resumes where it stopped, with no point sent twice") {
    Fixture f;
    const auto run = f.make_run(3500, 0);
    {
      // Requests: experiment lookup, create, search, create parent, create
      // train, then log-batches: the second batch fails for good.
      f.server.fail_from = 7;
      Pusher pusher(*f.store, f.settings(1));
      const PushResult result = pusher.push(run);
      CHECK_FALSE(result.ok);
      CHECK(result.error.find("logging 0 params, 1000 metric points and 0 tags of step 'train'") != std::string::npos);
      CHECK(f.points_on_server() == 1000);
    }
    f.server.fail_from = 0;
    Pusher pusher(*f.store, f.settings());
    const PushResult result = pusher.push(run);
    REQUIRE_MESSAGE(result.ok, result.error);
    CHECK(result.runs_created == 0);
    CHECK(result.points == 2500);
    CHECK(f.points_on_server() == 3500);
    CHECK(f.server.runs.size() == 2);
  }

  TEST_CASE("a create whose answer is lost is found, not repeated") {
    Fixture f;
    const auto run = f.make_run(10, 0);
    // The 4th request (creating the parent run) is acted on, but its answer never comes.
    f.server.fail_from = 4;
    f.server.fail_count = 1;
    f.server.act_then_fail = true;
    Pusher pusher(*f.store, f.settings());
    const PushResult result = pusher.push(run);
    REQUIRE_MESSAGE(result.ok, result.error);
    CHECK(f.server.runs.size() == 2);
    CHECK(result.runs_created == 1);
    CHECK(result.runs_adopted == 1);
    CHECK(f.points_on_server() == 10);
  }

  TEST_CASE("a param the server holds with another value stops the push before anything is sent") {
    Fixture f;
    const auto run = f.make_run(10, 2);
    {
      Pusher pusher(*f.store, f.settings());
      REQUIRE(pusher.push(run).ok);
    }
    // The server's copy holds another value, and the store has forgotten the push.
    f.server.runs.at("run1").params["p1000"] = "changed";
    REQUIRE(f.store->forget_remote_runs("http://mlflow.test", run.number).ok());
    const int batches = f.server.by_endpoint["POST /api/2.0/mlflow/runs/log-batch"];
    Pusher pusher(*f.store, f.settings());
    const PushResult result = pusher.push(run);
    CHECK_FALSE(result.ok);
    CHECK(result.error.starts_with("param 'p1000' of step 'train' is 'changed' on the server (MLflow run run1) but '0' here"));
    CHECK(f.server.by_endpoint["POST /api/2.0/mlflow/runs/log-batch"] == batches);
    const auto records = ok(f.store->push_records(run.number));
    REQUIRE(records.size() == 1);
    CHECK(records[0].state == kiln::core::PushState::failed);
  }
}
