// The tracker store's schema version 2: metrics, params, tags, artifacts,
// models, search, deletion and gc.

#include "core/tracker_store.hpp"
#include "tests/support.hpp"

#include "core/sqlite.hpp"

#include <doctest/doctest.h>

#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <variant>
#include <vector>
using kiln::test::check;
using kiln::test::ok;
using kiln::test::read_file;
using kiln::test::TempDir;
using kiln::test::write_file;

namespace fs = std::filesystem;
using namespace kiln::core;

namespace {

constexpr double k_nan = std::numeric_limits<double>::quiet_NaN();
constexpr double k_inf = std::numeric_limits<double>::infinity();

std::string error_of(const Expected<void>& result) {
  REQUIRE_FALSE(result.ok());
  return result.error();
}

std::unique_ptr<TrackerStore> open_store(const fs::path& dir) {
  return ok(TrackerStore::open(dir));
}

NewStep make_step(std::string id, std::string kind, std::vector<std::string> needs = {}) {
  NewStep step;
  step.id = std::move(id);
  step.kind = std::move(kind);
  step.command = "run " + step.id;
  step.needs = std::move(needs);
  step.workdir = "/work/" + step.id;
  return step;
}

/// prep -> train -> scale -> evaluate, and a task and a second evaluate that
/// do not depend on train.
NewRun make_run(std::string name = "flow") {
  NewRun run;
  run.workflow_name = std::move(name);
  run.workflow_file = "/work/flow.yaml";
  run.workflow_hash = "abc";
  run.workflow_content = "name: flow\n";
  run.params = {{"lr", 0.01}, {"epochs", 3}, {"label", "x y"}, {"fast", true}};
  run.user = "ada";
  run.host = "box";
  run.kiln_version = "0.2.0";
  run.command_line = "kiln run flow.yaml";
  run.runner = RunnerIdentity{"box", 1, 2};
  run.started_ms = 1000;
  run.steps.push_back(make_step("prep", "task"));
  run.steps.push_back(make_step("train", "train", {"prep"}));
  run.steps.push_back(make_step("scale", "task", {"train"}));
  run.steps.push_back(make_step("evaluate", "evaluate", {"scale"}));
  run.steps.push_back(make_step("other_eval", "evaluate", {"prep"}));
  return run;
}

RunRecord create(TrackerStore& store, const NewRun& run) {
  return ok(store.create_run(run));
}

RunRecord create_finished(TrackerStore& store, const std::string& name, std::int64_t ended_ms) {
  RunRecord run = create(store, make_run(name));
  check(store.finish_run(run.number, RunStatus::succeeded, 0, ended_ms));
  return run;
}

MetricPoint point(std::string key, double value, std::int64_t step = 0, std::int64_t timestamp_ms = 0) {
  return MetricPoint{std::move(key), value, step, timestamp_ms};
}

TrackerStore::NewArtifact stage(TrackerStore& store, const fs::path& file, std::string logical,
                                ArtifactKind kind = ArtifactKind::output, std::string name = {}) {
  return TrackerStore::NewArtifact{std::move(logical), ok(store.blobs().stage(file)), kind, std::move(name)};
}

std::int64_t count_rows(const fs::path& db, const std::string& sql) {
  sqlite::Database database = ok(sqlite::Database::open(db));
  return ok(database.query_int64(sql));
}

std::size_t temp_count(TrackerStore& store) {
  std::error_code ignored;
  std::size_t n = 0;
  for (fs::directory_iterator it(store.blobs().root() / "tmp", ignored), end; !ignored && it != end;
       it.increment(ignored)) {
    ++n;
  }
  return n;
}

struct HistoryRow {
  std::string step;
  MetricPoint point;
};

std::vector<HistoryRow> history(TrackerStore& store, std::int64_t run, TrackerStore::HistoryQuery query) {
  std::vector<HistoryRow> rows;
  check(store.metric_history(run, query, [&](const std::string& step, const MetricPoint& p) {
    rows.push_back({step, p});
  }));
  return rows;
}

} // namespace

TEST_SUITE("core::TrackerStore") {

  TEST_CASE("a version 1 store migrates to version 2 and keeps its runs") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    {
      auto store = open_store(dir);
      create(*store, make_run());
    }
    {
      // Back to the version 1 schema: what migrations 2, 4, 5 and 7 add, removed.
      sqlite::Database database = ok(sqlite::Database::open(dir / "kiln.db"));
      check(database.exec("DROP TABLE replays; DROP TABLE file_hashes; DROP TABLE step_outputs; DROP INDEX steps_by_cache_key; "
                          "ALTER TABLE steps DROP COLUMN cache_key; ALTER TABLE steps DROP COLUMN cache_json; "
                          "ALTER TABLE steps DROP COLUMN cached_from; DROP TABLE push_records; DROP TABLE remote_artifacts; DROP TABLE remote_runs; "
                          "DROP TABLE artifacts; DROP TABLE blobs; DROP TABLE metric_points; "
                          "DROP TABLE metric_series; DROP TABLE tags; DROP TABLE params; "
                          "ALTER TABLE steps DROP COLUMN workdir; PRAGMA user_version = 1"));
    }
    auto store = open_store(dir);
    CHECK(count_rows(dir / "kiln.db", "PRAGMA user_version") == TrackerStore::schema_version());
    RunRecord old = ok(store->run(1));
    CHECK(old.workflow_name == "flow");
    std::vector<StepRecord> steps = ok(store->steps(1));
    REQUIRE(steps.size() == 5);
    CHECK(steps[0].workdir.empty());
    check(store->log_params(1, "train", {{"depth", "3"}}));
    check(store->log_metrics(1, "train", {point("loss", 0.5)}));
    CHECK(ok(store->metric_summaries(1)).size() == 1);

    RunRecord fresh = create(*store, make_run());
    CHECK(ok(store->steps(fresh.number))[1].workdir == "/work/train");
  }

  TEST_CASE("migration 3 gives version 1 runs the params and system tags create_run writes") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    NewRun in_git = make_run("git");
    in_git.git_commit = "deadbeef";
    in_git.git_branch = "main";
    in_git.git_dirty = true;
    NewRun odd = make_run("odd");
    odd.params = {{"tiny", 1e-05},          {"whole", 2.0},      {"big", -12345678901234},
                  {"off", false},           {"none", nullptr},   {"list", {1, "a\"b"}},
                  {"nested", {{"k", 0.5}}}, {"quote\"key", 1.5}, {"text", "\u00e9 \"q\""}};
    std::map<std::int64_t, std::vector<KeyValue>> expected_params;
    std::map<std::int64_t, std::vector<KeyValue>> expected_tags;
    {
      auto store = open_store(dir);
      for (const NewRun& new_run : {make_run(), in_git, odd}) {
        RunRecord run = create(*store, new_run);
        expected_params[run.number] = ok(store->params(run.number));
        expected_tags[run.number] = ok(store->tags(run.number));
      }
      NewRun broken = make_run("broken");
      broken.params = nlohmann::json::array({1, 2});
      create(*store, broken);
    }
    {
      // Back to version 1: what migrations 2 and 4 add, removed; then a run whose
      // params_json is not JSON at all.
      sqlite::Database database = ok(sqlite::Database::open(dir / "kiln.db"));
      check(database.exec("DROP TABLE replays; DROP TABLE file_hashes; DROP TABLE step_outputs; DROP INDEX steps_by_cache_key; "
                          "ALTER TABLE steps DROP COLUMN cache_key; ALTER TABLE steps DROP COLUMN cache_json; "
                          "ALTER TABLE steps DROP COLUMN cached_from; DROP TABLE push_records; DROP TABLE remote_artifacts; DROP TABLE remote_runs; "
                          "DROP TABLE artifacts; DROP TABLE blobs; DROP TABLE metric_points; "
                          "DROP TABLE metric_series; DROP TABLE tags; DROP TABLE params; "
                          "ALTER TABLE steps DROP COLUMN workdir; "
                          "INSERT INTO runs (id, workflow_name, workflow_file, workflow_hash, workflow_source, "
                          "params_json, status, started_ms) SELECT 'x', 'bad', '', '', workflow_source, "
                          "'{not json', 'failed', 0 FROM runs LIMIT 1; "
                          "PRAGMA user_version = 1"));
    }
    auto store = open_store(dir);
    CHECK(count_rows(dir / "kiln.db", "PRAGMA user_version") == TrackerStore::schema_version());
    auto same = [](const std::vector<KeyValue>& got, const std::vector<KeyValue>& want) {
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i].step_id == want[i].step_id);
        CHECK(got[i].key == want[i].key);
        CHECK(got[i].value == want[i].value);
      }
    };
    for (const auto& [number, params] : expected_params) {
      CAPTURE(number);
      same(ok(store->params(number)), params);
      same(ok(store->tags(number)), expected_tags[number]);
    }
    // Spelled out, so the test does not rest on create_run alone.
    std::map<std::string, std::string> odd_params;
    for (const KeyValue& param : ok(store->params(3))) {
      odd_params[param.key] = param.value;
    }
    CHECK(odd_params == std::map<std::string, std::string>{{"tiny", "1e-05"},
                                                           {"whole", "2.0"},
                                                           {"big", "-12345678901234"},
                                                           {"off", "false"},
                                                           {"none", "null"},
                                                           {"list", "[1,\"a\\\"b\"]"},
                                                           {"nested", "{\"k\":0.5}"},
                                                           {"quote\"key", "1.5"},
                                                           {"text", "\u00e9 \"q\""}});
    std::map<std::string, std::string> git_tags;
    for (const KeyValue& tag : ok(store->tags(2))) {
      git_tags[tag.key] = tag.value;
    }
    CHECK(git_tags == std::map<std::string, std::string>{{"kiln.user", "ada"},
                                                         {"kiln.host", "box"},
                                                         {"kiln.git.commit", "deadbeef"},
                                                         {"kiln.git.branch", "main"},
                                                         {"kiln.git.dirty", "true"},
                                                         {"kiln.workflow.file", "/work/flow.yaml"},
                                                         {"kiln.workflow.hash", "abc"},
                                                         {"kiln.version", "0.2.0"},
                                                         {"kiln.command", "kiln run flow.yaml"}});
    CHECK(ok(store->params(4)).empty());
    CHECK(ok(store->params(5)).empty());
    CHECK(ok(store->tags(5)).size() == 6);

    auto search = [&](std::string_view filter) {
      std::vector<std::int64_t> numbers;
      for (const RunRecord& run : ok(store->search_runs(std::get<FilterNode>(parse_search_filter(filter)), {}, 0))) {
        numbers.push_back(run.number);
      }
      return numbers;
    };
    using Numbers = std::vector<std::int64_t>;
    CHECK(search("params.lr = '0.01' AND tags.kiln.user = 'ada'") == Numbers{2, 1});
    CHECK(search("params.fast = 'true' AND tags.`kiln.git.branch` = 'main'") == Numbers{2});
    CHECK(search("params.tiny = '1e-05'") == Numbers{3});
  }

  TEST_CASE("create_run records workdirs, params as text and system tags, then the run's tags") {
    TempDir temp;
    auto store = open_store(temp.path());
    NewRun new_run = make_run();
    new_run.git_commit = "deadbeef";
    new_run.git_branch = "main";
    new_run.git_dirty = true;
    new_run.tags = {{"team", "a"}, {"kiln.user", "override"}, {"team", "b"}};
    RunRecord run = create(*store, new_run);

    std::vector<StepRecord> steps = ok(store->steps(run.number));
    CHECK(steps[1].workdir == "/work/train");
    nlohmann::json step_json = steps[1];
    CHECK(step_json["workdir"] == "/work/train");

    std::vector<KeyValue> params = ok(store->params(run.number));
    REQUIRE(params.size() == 4);
    CHECK(params[0].key == "epochs");
    CHECK(params[0].value == "3");
    CHECK(params[1].key == "fast");
    CHECK(params[1].value == "true");
    CHECK(params[2].key == "label");
    CHECK(params[2].value == "x y");
    CHECK(params[3].key == "lr");
    CHECK(params[3].value == "0.01");
    CHECK(params[3].step_id.empty());

    std::map<std::string, std::string> tags;
    for (const KeyValue& tag : ok(store->tags(run.number))) {
      CHECK(tag.step_id.empty());
      tags[tag.key] = tag.value;
    }
    CHECK(tags["kiln.user"] == "override");
    CHECK(tags["kiln.host"] == "box");
    CHECK(tags["kiln.git.commit"] == "deadbeef");
    CHECK(tags["kiln.git.branch"] == "main");
    CHECK(tags["kiln.git.dirty"] == "true");
    CHECK(tags["kiln.workflow.file"] == "/work/flow.yaml");
    CHECK(tags["kiln.workflow.hash"] == "abc");
    CHECK(tags["kiln.version"] == "0.2.0");
    CHECK(tags["kiln.command"] == "kiln run flow.yaml");
    CHECK(tags["team"] == "b");
    CHECK(tags.size() == 10);

    // Outside git: no git tags.
    RunRecord plain = create(*store, make_run());
    for (const KeyValue& tag : ok(store->tags(plain.number))) {
      CHECK(tag.key.rfind("kiln.git.", 0) == std::string::npos);
    }
  }

  TEST_CASE("metric summaries: count, min and max over non-NaN values, last by (step, timestamp)") {
    TempDir temp;
    auto store = open_store(temp.path());
    RunRecord run = create(*store, make_run());
    check(store->log_metrics(run.number, "train",
                             {point("loss", 0.9, 1, 100), point("acc", 0.5, 1, 100), point("loss", k_nan, 2, 200),
                              point("loss", 0.4, 3, 300), point("loss", 0.7, 2, 999)}));
    // A second call continues the same histories; an earlier step does not
    // become the last, an equal (step, timestamp) logged later does.
    check(store->log_metrics(run.number, "train",
                             {point("loss", -k_inf, 1, 5000), point("loss", 0.3, 3, 300), point("acc", k_inf, 0, 0)}));
    check(store->log_metrics(run.number, "evaluate", {point("nan_only", k_nan, 4, 40)}));

    std::vector<MetricSummary> summaries = ok(store->metric_summaries(run.number));
    REQUIRE(summaries.size() == 3);
    // By step position, then key.
    CHECK(summaries[0].step_id == "train");
    CHECK(summaries[0].key == "acc");
    CHECK(summaries[1].key == "loss");
    CHECK(summaries[2].step_id == "evaluate");

    const MetricSummary& loss = summaries[1];
    CHECK(loss.count == 6);
    CHECK(loss.last == 0.3);
    CHECK(loss.last_step == 3);
    CHECK(loss.last_timestamp_ms == 300);
    CHECK(loss.min == -k_inf);
    CHECK(loss.max == 0.9);

    const MetricSummary& acc = summaries[0];
    CHECK(acc.count == 2);
    CHECK(acc.last == 0.5);
    CHECK(acc.max == k_inf);
    CHECK(acc.min == 0.5);

    const MetricSummary& nan_only = summaries[2];
    CHECK(std::isnan(nan_only.last));
    CHECK(std::isnan(nan_only.min));
    CHECK(std::isnan(nan_only.max));
    CHECK(nan_only.count == 1);

    nlohmann::json json = nan_only;
    CHECK(json == nlohmann::json{{"step", "evaluate"},
                                 {"key", "nan_only"},
                                 {"last", "NaN"},
                                 {"last_step", 4},
                                 {"last_timestamp_ms", 40},
                                 {"min", "NaN"},
                                 {"max", "NaN"},
                                 {"count", 1}});
    json = acc;
    CHECK(json["max"] == "Infinity");
    CHECK(json["last"] == 0.5);
    CHECK(metric_value_json(-k_inf) == "-Infinity");

    CHECK(error_of(store->log_metrics(run.number, "nope", {point("x", 1)})).find("no step 'nope'") !=
          std::string::npos);
    CHECK_FALSE(store->log_metrics(99, "train", {point("x", 1)}).ok());
  }

  TEST_CASE("metric history: by step position, then logging order; step filters and ranges") {
    TempDir temp;
    auto store = open_store(temp.path());
    RunRecord run = create(*store, make_run());
    // Logged for evaluate first: the order of steps comes from the workflow.
    check(store->log_metrics(run.number, "evaluate", {point("loss", 5, 1, 10), point("loss", 6, 0, 11)}));
    check(store->log_metrics(run.number, "train",
                             {point("loss", 1, 3, 1), point("other", 9, 0, 0), point("loss", k_nan, 1, 2)}));
    check(store->log_metrics(run.number, "train", {point("loss", 3, 2, 3)}));

    std::vector<HistoryRow> all = history(*store, run.number, {"loss", "", std::nullopt, std::nullopt});
    REQUIRE(all.size() == 5);
    CHECK(all[0].step == "train");
    CHECK(all[0].point.value == 1);
    CHECK(all[0].point.step == 3);
    CHECK(std::isnan(all[1].point.value));
    CHECK(all[1].point.timestamp_ms == 2);
    CHECK(all[2].point.value == 3);
    CHECK(all[3].step == "evaluate");
    CHECK(all[3].point.value == 5);
    CHECK(all[4].point.value == 6);
    CHECK(all[4].point.key == "loss");

    std::vector<HistoryRow> evaluate = history(*store, run.number, {"loss", "evaluate", std::nullopt, std::nullopt});
    REQUIRE(evaluate.size() == 2);
    CHECK(evaluate[0].step == "evaluate");

    std::vector<HistoryRow> ranged = history(*store, run.number, {"loss", "train", 2, 3});
    REQUIRE(ranged.size() == 2);
    CHECK(ranged[0].point.step == 3);
    CHECK(ranged[1].point.step == 2);
    CHECK(history(*store, run.number, {"loss", "", std::nullopt, 0}).size() == 1);
    CHECK(history(*store, run.number, {"absent", "", std::nullopt, std::nullopt}).empty());

    CHECK_FALSE(store
                    ->metric_history(run.number, {"loss", "nope", std::nullopt, std::nullopt},
                                     [](const std::string&, const MetricPoint&) {})
                    .ok());
  }

  TEST_CASE("params: same value is a no-op, a change is refused and nothing of the call is written") {
    TempDir temp;
    auto store = open_store(temp.path());
    RunRecord run = create(*store, make_run());
    check(store->log_params(run.number, "train", {{"lr", "0.1"}, {"depth", "4"}}));
    check(store->log_params(run.number, "train", {{"lr", "0.1"}}));
    CHECK(error_of(store->log_params(run.number, "train", {{"width", "8"}, {"lr", "0.2"}})) ==
          "param 'lr' of step 'train' was logged as '0.1'; it cannot be changed to '0.2'");
    CHECK(error_of(store->log_params(run.number, "", {{"lr", "0.5"}})) ==
          "param 'lr' of the run was logged as '0.01'; it cannot be changed to '0.5'");
    CHECK(error_of(store->log_params(run.number, "prep", {{"a", "1"}, {"a", "2"}})) ==
          "param 'a' of step 'prep' was logged as '1'; it cannot be changed to '2'");

    std::vector<KeyValue> params = ok(store->params(run.number));
    std::vector<std::string> seen;
    for (const KeyValue& param : params) {
      seen.push_back((param.step_id.empty() ? "-" : param.step_id) + ":" + param.key + "=" + param.value);
    }
    // The run's own first, then by step position; keys sorted.
    CHECK(seen == std::vector<std::string>{"-:epochs=3", "-:fast=true", "-:label=x y", "-:lr=0.01", "train:depth=4",
                                           "train:lr=0.1"});
    nlohmann::json json = params.front();
    CHECK(json == nlohmann::json{{"step", nullptr}, {"key", "epochs"}, {"value", "3"}});
    json = params.back();
    CHECK(json["step"] == "train");
  }

  TEST_CASE("tags are upserted") {
    TempDir temp;
    auto store = open_store(temp.path());
    RunRecord run = create(*store, make_run());
    check(store->set_tags(run.number, "train", {{"gpu", "a100"}, {"note", "first"}}));
    check(store->set_tags(run.number, "train", {{"note", "second"}}));
    check(store->set_tags(run.number, "", {{"kiln.user", "bob"}}));
    std::map<std::string, std::string> tags;
    for (const KeyValue& tag : ok(store->tags(run.number))) {
      tags[tag.step_id + ":" + tag.key] = tag.value;
    }
    CHECK(tags["train:gpu"] == "a100");
    CHECK(tags["train:note"] == "second");
    CHECK(tags[":kiln.user"] == "bob");
    CHECK_FALSE(store->set_tags(run.number, "nope", {{"a", "b"}}).ok());
  }

  TEST_CASE("artifacts: identical content is one blob; a path logged again is replaced") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    fs::path work = temp.path() / "work";
    write_file(work / "model.pkl", "weights v1");
    write_file(work / "copy.pkl", "weights v1");
    write_file(work / "report.txt", "report");

    RunRecord first = create(*store, make_run());
    RunRecord second = create(*store, make_run());
    check(store->add_artifacts(first.number, "train",
                               {stage(*store, work / "model.pkl", "model.pkl", ArtifactKind::model, "model"),
                                stage(*store, work / "report.txt", "report.txt")},
                               5000));
    check(store->add_artifacts(second.number, "train", {stage(*store, work / "copy.pkl", "model.pkl")}, 6000));
    CHECK(ok(store->blobs().list()).size() == 2);
    CHECK(temp_count(*store) == 0);

    std::vector<ArtifactRecord> artifacts = ok(store->artifacts(first.number));
    REQUIRE(artifacts.size() == 2);
    CHECK(artifacts[0].path == "model.pkl");
    CHECK(artifacts[0].kind == ArtifactKind::model);
    CHECK(artifacts[0].name == "model");
    CHECK(artifacts[0].size == 10);
    CHECK(artifacts[0].created_ms == 5000);
    CHECK(artifacts[0].step_id == "train");
    CHECK(artifacts[1].path == "report.txt");
    CHECK(artifacts[0].sha256 == ok(store->artifacts(second.number))[0].sha256);
    nlohmann::json json = artifacts[1];
    CHECK(json == nlohmann::json{{"step", "train"},
                                 {"path", "report.txt"},
                                 {"sha256", artifacts[1].sha256},
                                 {"size", 6},
                                 {"kind", "output"},
                                 {"name", nullptr},
                                 {"created_ms", 5000}});

    write_file(work / "model.pkl", "weights v2");
    check(store->add_artifacts(first.number, "train", {stage(*store, work / "model.pkl", "model.pkl")}, 7000));
    artifacts = ok(store->artifacts(first.number, "train"));
    REQUIRE(artifacts.size() == 2);
    CHECK(artifacts[0].size == 10);
    CHECK(artifacts[0].created_ms == 7000);
    fs::path out = temp.path() / "out.pkl";
    check(store->blobs().copy_out(artifacts[0].sha256, out));
    CHECK(read_file(out) == "weights v2");
    CHECK(ok(store->artifacts(first.number, "prep")).empty());
  }

  TEST_CASE("add_artifacts discards every staged temp on error, and repairs a blob whose file is gone") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    fs::path work = temp.path() / "work";
    write_file(work / "a", "aaa");
    write_file(work / "b", "bbb");
    RunRecord run = create(*store, make_run());

    std::vector<TrackerStore::NewArtifact> staged = {stage(*store, work / "a", "a"), stage(*store, work / "b", "b")};
    CHECK(temp_count(*store) == 2);
    CHECK_FALSE(store->add_artifacts(run.number, "nope", staged, 1).ok());
    CHECK(temp_count(*store) == 0);
    CHECK(ok(store->blobs().list()).empty());

    TrackerStore::NewArtifact a = stage(*store, work / "a", "a");
    check(store->add_artifacts(run.number, "train", {a}, 1));
    CHECK(fs::remove(store->blobs().path_of(a.blob.sha256)));
    check(store->add_artifacts(run.number, "evaluate", {stage(*store, work / "a", "a")}, 2));
    CHECK(store->blobs().contains(a.blob.sha256));
    CHECK(temp_count(*store) == 0);
  }

  TEST_CASE("models: a train step's model with the metrics of evaluate steps downstream of it") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    write_file(temp.path() / "model.pkl", "model");
    RunRecord first = create(*store, make_run("flow"));
    RunRecord other = create(*store, make_run("other"));
    RunRecord second = create(*store, make_run("flow"));
    for (const RunRecord& run : {first, other, second}) {
      check(store->add_artifacts(run.number, "train",
                                 {stage(*store, temp.path() / "model.pkl", "model.pkl", ArtifactKind::model, "model"),
                                  stage(*store, temp.path() / "model.pkl", "notes.txt", ArtifactKind::output)},
                                 run.number));
      check(store->log_metrics(run.number, "evaluate", {point("accuracy", 0.5 + run.number / 10.0, 0, 1)}));
      check(store->log_metrics(run.number, "other_eval", {point("accuracy", 0.1)}));
      check(store->log_metrics(run.number, "scale", {point("rows", 10)}));
      check(store->log_metrics(run.number, "train", {point("loss", 0.1)}));
    }
    std::vector<TrackerStore::ModelRecord> models = ok(store->models("flow", 0));
    REQUIRE(models.size() == 2);
    CHECK(models[0].run_number == second.number);
    CHECK(models[1].run_number == first.number);
    CHECK(models[0].run_id == second.id);
    CHECK(models[0].workflow_name == "flow");
    CHECK(models[0].run_status == RunStatus::running);
    CHECK(models[0].artifact.path == "model.pkl");
    REQUIRE(models[0].metrics.size() == 1);
    CHECK(models[0].metrics[0].step_id == "evaluate");
    CHECK(models[0].metrics[0].key == "accuracy");
    CHECK(models[0].metrics[0].last == doctest::Approx(0.8));

    CHECK(ok(store->models("", 0)).size() == 3);
    std::vector<TrackerStore::ModelRecord> newest = ok(store->models("", 1));
    REQUIRE(newest.size() == 1);
    CHECK(newest[0].run_number == second.number);
    CHECK(ok(store->models("nothing", 0)).empty());
  }

  TEST_CASE("delete_runs refuses running runs, then removes rows, logs, points and unshared blobs") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    auto store = open_store(dir);
    write_file(temp.path() / "shared", "shared content");
    write_file(temp.path() / "own", "own content");
    RunRecord first = create_finished(*store, "flow", 2000);
    RunRecord second = create(*store, make_run());
    for (const RunRecord& run : {first, second}) {
      check(store->add_artifacts(run.number, "train", {stage(*store, temp.path() / "shared", "shared")}, 1));
      check(store->log_metrics(run.number, "train", {point("loss", 1), point("loss", 2)}));
      check(store->log_params(run.number, "train", {{"a", "b"}}));
    }
    check(store->add_artifacts(first.number, "prep", {stage(*store, temp.path() / "own", "own")}, 1));
    write_file(store->log_path(first.id, "train", 1, "out"), "log");

    Expected<TrackerStore::DeleteReport> refused = store->delete_runs({first.number, second.number});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().rfind("run 2 is still running and cannot be deleted", 0) == 0);
    CHECK(ok(store->list_runs({})).size() == 2);
    CHECK_FALSE(store->delete_runs({first.number, 77}).ok());
    CHECK(ok(store->list_runs({})).size() == 2);

    TrackerStore::DeleteReport report = ok(store->delete_runs({first.number}));
    CHECK(report.runs == std::vector<std::int64_t>{first.number});
    CHECK(report.blobs_removed == 1);
    CHECK(report.bytes_freed == 11);
    CHECK_FALSE(store->run(first.number).ok());
    CHECK_FALSE(fs::exists(dir / "logs" / first.id));
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM metric_points") == 2);
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM metric_series") == 1);
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM params WHERE run = 1") == 0);
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM steps WHERE run = 1") == 0);
    // The blob the remaining run references stays.
    std::vector<ArtifactRecord> kept = ok(store->artifacts(second.number));
    REQUIRE(kept.size() == 1);
    CHECK(store->blobs().contains(kept[0].sha256));
    CHECK(ok(store->blobs().list()).size() == 1);

    check(store->finish_run(second.number, RunStatus::failed, 1, 3000));
    report = ok(store->delete_runs({second.number}));
    CHECK(report.blobs_removed == 1);
    CHECK(ok(store->blobs().list()).empty());
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM metric_points") == 0);
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM blobs") == 0);
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM workflow_sources") == 0);
  }

  TEST_CASE("gc: keep_last per workflow among finished runs, ended_before, both, and never running runs") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    // a: runs 1, 2, 3 (ended 100, 200, 300); b: run 4 (ended 400); a: run 5 running.
    for (int i = 1; i <= 3; ++i) {
      create_finished(*store, "a", i * 100);
    }
    create_finished(*store, "b", 400);
    create(*store, make_run("a"));

    auto numbers = [](const TrackerStore::GcReport& report) {
      std::vector<std::int64_t> out;
      for (const RunRecord& run : report.runs) {
        out.push_back(run.number);
      }
      return out;
    };
    auto dry = [&](std::optional<int> keep_last, std::optional<std::int64_t> ended_before) {
      return numbers(ok(store->gc({keep_last, ended_before, true}, 10'000)));
    };
    CHECK(dry(std::nullopt, std::nullopt).empty());
    CHECK(dry(2, std::nullopt) == std::vector<std::int64_t>{1});
    CHECK(dry(1, std::nullopt) == std::vector<std::int64_t>{1, 2});
    CHECK(dry(0, std::nullopt) == std::vector<std::int64_t>{1, 2, 3, 4});
    CHECK(dry(std::nullopt, 250) == std::vector<std::int64_t>{1, 2});
    CHECK(dry(std::nullopt, 100) == std::vector<std::int64_t>{});
    CHECK(dry(1, 150) == std::vector<std::int64_t>{1});
    CHECK(dry(std::nullopt, 1'000'000) == std::vector<std::int64_t>{1, 2, 3, 4});
    CHECK(ok(store->list_runs({})).size() == 5);

    TrackerStore::GcReport report = ok(store->gc({1, std::nullopt, false}, 10'000));
    CHECK(numbers(report) == std::vector<std::int64_t>{1, 2});
    std::vector<std::int64_t> left;
    for (const RunRecord& run : ok(store->list_runs({}))) {
      left.push_back(run.number);
    }
    CHECK(left == std::vector<std::int64_t>{5, 4, 3});
  }

  TEST_CASE("gc removes blobs only the removed runs reference, orphan files and stale temps; dry_run changes nothing") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    auto store = open_store(dir);
    write_file(temp.path() / "shared", "shared!");
    write_file(temp.path() / "old", "old only");
    write_file(temp.path() / "orphan", "orphan file");
    RunRecord old_run = create_finished(*store, "flow", 100);
    RunRecord new_run = create_finished(*store, "flow", 900);
    check(store->add_artifacts(
        old_run.number, "train",
        {stage(*store, temp.path() / "shared", "shared"), stage(*store, temp.path() / "old", "old")}, 1));
    check(store->add_artifacts(new_run.number, "train", {stage(*store, temp.path() / "shared", "shared")}, 1));
    // A blob file without a row (a process died after the rename), a stale
    // temp and a fresh one.
    StagedBlob orphan = ok(store->blobs().stage(temp.path() / "orphan"));
    check(store->blobs().commit(orphan));
    StagedBlob stale = ok(store->blobs().stage(temp.path() / "orphan"));
    StagedBlob fresh = ok(store->blobs().stage(temp.path() / "orphan"));
    std::int64_t now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    fs::last_write_time(stale.temp, fs::last_write_time(stale.temp) - std::chrono::hours(2));

    TrackerStore::GcPolicy policy{std::nullopt, 500, true};
    TrackerStore::GcReport dry = ok(store->gc(policy, now_ms));
    REQUIRE(dry.runs.size() == 1);
    CHECK(dry.runs[0].number == old_run.number);
    CHECK(dry.blobs_removed == 2);
    CHECK(dry.bytes_freed == 8 + 11);
    CHECK(dry.temps_removed == 1);
    CHECK(ok(store->list_runs({})).size() == 2);
    CHECK(ok(store->blobs().list()).size() == 3);
    CHECK(fs::exists(stale.temp));
    CHECK(ok(store->artifacts(old_run.number)).size() == 2);

    policy.dry_run = false;
    TrackerStore::GcReport done = ok(store->gc(policy, now_ms));
    CHECK(done.runs.size() == 1);
    CHECK(done.blobs_removed == 2);
    CHECK(done.bytes_freed == 19);
    CHECK(done.temps_removed == 1);
    CHECK_FALSE(fs::exists(stale.temp));
    CHECK(fs::exists(fresh.temp));
    CHECK(ok(store->blobs().list()).size() == 1);
    std::vector<ArtifactRecord> kept = ok(store->artifacts(new_run.number));
    CHECK(store->blobs().contains(kept[0].sha256));
    CHECK_FALSE(store->blobs().contains(orphan.sha256));

    // No rule: no run goes, and nothing referenced does either.
    TrackerStore::GcReport idle = ok(store->gc({}, now_ms));
    CHECK(idle.runs.empty());
    CHECK(idle.blobs_removed == 0);
    CHECK(store->blobs().contains(kept[0].sha256));
  }

  TEST_CASE("search_runs: metric, param, tag and attribute conditions, order and limit") {
    TempDir temp;
    auto store = open_store(temp.path());
    // Runs 1..4: accuracy 0.1 .. 0.4 on evaluate; lr param on train; run 4 has no metric.
    for (int i = 1; i <= 4; ++i) {
      NewRun new_run = make_run(i % 2 == 0 ? "even" : "odd");
      new_run.tags = {{"team", i <= 2 ? "Vision" : "speech"}};
      RunRecord run = create(*store, new_run);
      if (i < 4) {
        check(store->log_metrics(run.number, "evaluate", {point("accuracy", i / 10.0)}));
      }
      check(store->log_params(run.number, "train", {{"optimizer", i == 3 ? "sgd" : "adam"}}));
    }
    auto search = [&](std::string_view filter, std::string_view order = {}, int limit = 0) {
      auto parsed = parse_search_filter(filter);
      REQUIRE_MESSAGE(std::holds_alternative<FilterNode>(parsed),
                      (std::holds_alternative<FilterError>(parsed) ? std::get<FilterError>(parsed).message : ""));
      auto terms = parse_order_by(order);
      REQUIRE(std::holds_alternative<std::vector<OrderTerm>>(terms));
      std::vector<std::int64_t> numbers;
      for (const RunRecord& run :
           ok(store->search_runs(std::get<FilterNode>(parsed), std::get<std::vector<OrderTerm>>(terms), limit))) {
        numbers.push_back(run.number);
      }
      return numbers;
    };
    using Numbers = std::vector<std::int64_t>;
    CHECK(search("") == Numbers{4, 3, 2, 1});
    CHECK(search("", "", 2) == Numbers{4, 3});
    CHECK(search("metrics.accuracy > 0.15") == Numbers{3, 2});
    CHECK(search("metrics.accuracy > 0.15 and params.optimizer = 'adam'") == Numbers{2});
    CHECK(search("params.optimizer != 'adam'") == Numbers{3});
    CHECK(search("tags.team LIKE 'vis%'").empty());
    CHECK(search("tags.team ILIKE 'vis%'") == Numbers{2, 1});
    CHECK(search("attributes.workflow = 'odd' OR metrics.accuracy < 0.15") == Numbers{3, 1});
    CHECK(search("", "metrics.accuracy DESC") == Numbers{3, 2, 1, 4});
    CHECK(search("", "metrics.accuracy ASC") == Numbers{1, 2, 3, 4});
    std::vector<RunRecord> found =
        ok(store->search_runs(std::get<FilterNode>(parse_search_filter("attributes.number = 2")), {}, 0));
    REQUIRE(found.size() == 1);
    CHECK(found[0].steps.pending == 5);
    CHECK(found[0].workflow_name == "even");
  }

  TEST_CASE("remote sync: states, artifact marks, the point cursor and push records; deleted with the run") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    auto store = open_store(dir);
    RunRecord run = create(*store, make_run());
    check(store->log_metrics(run.number, "train", {{"loss", 3, 0, 10}, {"loss", k_nan, 1, 11}, {"acc", 0.5, 0, 12}}));
    check(store->log_metrics(run.number, "train", {{"loss", 1, 2, 13}}));
    // Push order: by series (first logged first), then logging order.
    std::vector<RemotePoint> page = ok(store->metric_points_after(run.number, "train", 0, -1, 2));
    REQUIRE(page.size() == 2);
    CHECK(page[0].point.key == "loss");
    CHECK(page[1].point.step == 1);
    CHECK(std::isnan(page[1].point.value));
    page = ok(store->metric_points_after(run.number, "train", page[1].series, page[1].seq, 10));
    REQUIRE(page.size() == 2);
    CHECK(page[0].point.value == 1);
    CHECK(page[1].point.key == "acc");

    RemoteRunState state;
    state.step = "train";
    state.experiment_id = "3";
    state.remote_id = "abc";
    state.points_sent = 2;
    check(store->save_remote_run("http://m", run.number, state));
    state.points_sent = 4;
    state.finished = true;
    check(store->save_remote_run("http://m", run.number, state));
    std::vector<RemoteRunState> states = ok(store->remote_runs("http://m", run.number));
    REQUIRE(states.size() == 1);
    CHECK(states[0].points_sent == 4);
    CHECK(states[0].finished);
    CHECK(ok(store->remote_runs("http://other", run.number)).empty());
    check(store->mark_remote_artifact("http://m", run.number, "train", "model.pkl"));
    check(store->mark_remote_artifact("http://m", run.number, "train", "model.pkl"));
    CHECK(ok(store->remote_artifacts("http://m", run.number, "train")) == std::vector<std::string>{"model.pkl"});

    CHECK(ok(store->runs_not_synced("http://m")).empty()); // still running
    check(store->finish_run(run.number, RunStatus::succeeded, 0, 100));
    CHECK(ok(store->runs_not_synced("http://m")) == std::vector<std::int64_t>{run.number});
    check(store->set_push_record({run.number, "http://m", "exp", PushState::failed, "down", 5}));
    check(store->set_push_record({run.number, "http://m", "exp", PushState::synced, "", 6}));
    std::vector<PushRecord> records = ok(store->push_records());
    REQUIRE(records.size() == 1);
    CHECK(records[0].state == PushState::synced);
    CHECK(records[0].updated_ms == 6);
    CHECK(ok(store->runs_not_synced("http://m")).empty());

    (void)ok(store->delete_runs({run.number}));
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM remote_runs") == 0);
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM remote_artifacts") == 0);
    CHECK(count_rows(dir / "kiln.db", "SELECT count(*) FROM push_records") == 0);
  }

} // TEST_SUITE
