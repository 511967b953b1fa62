#include "core/plan.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace kiln::core;

namespace {

Workflow sample() {
  Workflow w;
  w.name = "demo";
  w.file = "demo.yaml";
  w.directory = "/work/demo";
  w.params = {{"C", ParamType::floating, "0.5", "", {}}, {"name", ParamType::string, "it's", "", {}}};
  w.env = {{"GREETING", "hi ${{ params.C }}"}};
  Step train;
  train.id = "train";
  train.kind = StepKind::train;
  train.run.form = Command::Form::exec;
  train.run.argv = {"python3", "train.py", "--C", "${{ params.C }}", "--name", "${{ params.name }}"};
  train.outputs = {{"model", "out/model.pkl"}};
  train.workdir = "models";
  train.env = {{"WHO", "${{ step.id }}@${{ run.number }}"}};
  Step predict;
  predict.id = "predict";
  predict.kind = StepKind::predict;
  predict.needs = {"train"};
  predict.model = "train";
  predict.run.script = "echo ${{ run.id }} ${{ env.GREETING }} > out.txt";
  predict.workdir = "/abs/dir/.";
  Step lone;
  lone.id = "lone";
  lone.run.script = "true";
  w.steps = {train, predict, lone};
  return w;
}

std::optional<std::string> env_value(const std::vector<std::string>& env, const std::string& name) {
  std::optional<std::string> found;
  for (const auto& e : env) {
    if (e.starts_with(name + "=")) {
      found = e.substr(name.size() + 1);
    }
  }
  return found;
}

} // namespace

TEST_SUITE("core::Plan") {
  TEST_CASE("templates, commands, workdirs and the environment are resolved for the run") {
    const Workflow w = sample();
    auto plan = make_plan(w, {"abc123", 7, "/store", {"PATH=/usr/bin", "GREETING=overridden"}});
    REQUIRE(plan.ok());
    REQUIRE(plan->steps.size() == 3);
    const auto& train = plan->steps[0];
    CHECK(train.argv == std::vector<std::string>{"python3", "train.py", "--C", "0.5", "--name", "it's"});
    CHECK(train.display_command == "python3 train.py --C 0.5 --name 'it'\\''s'");
    CHECK(train.workdir == "/work/demo/models");
    const auto& predict = plan->steps[1];
    CHECK(predict.argv == std::vector<std::string>{"/bin/sh", "-c", "echo abc123 hi 0.5 > out.txt"});
    CHECK(predict.workdir == "/abs/dir");
    CHECK(predict.needs == std::vector<int>{0});

    const auto env = attempt_environment(*plan, train, 2);
    CHECK(env_value(env, "PATH") == "/usr/bin");
    CHECK(env_value(env, "GREETING") == "hi 0.5"); // the workflow's env overrides the runner's
    CHECK(env_value(env, "WHO") == "train@7");
    CHECK(env_value(env, "KILN_RUN_ID") == "abc123");
    CHECK(env_value(env, "KILN_RUN_NUMBER") == "7");
    CHECK(env_value(env, "KILN_STEP_ID") == "train");
    CHECK(env_value(env, "KILN_STORE") == "/store");
    CHECK(env_value(env, "KILN_ATTEMPT") == "2");
    CHECK(env_value(env, "KILN_WORKDIR") == "/work/demo/models");
    CHECK(std::count_if(env.begin(), env.end(), [](const auto& e) { return e.starts_with("GREETING="); }) == 1);
    // A predict step is told where its model is.
    CHECK(env_value(attempt_environment(*plan, predict, 1), "KILN_MODEL") == "/work/demo/models/out/model.pkl");
    CHECK(!env_value(env, "KILN_MODEL"));
  }

  TEST_CASE("KILN_MODEL follows a templated workdir of the train step") {
    Workflow w = sample();
    w.steps[0].workdir = "${{ params.name }}";
    w.params[1].value = "runs";
    auto plan = make_plan(w, {"id", 1, "/s", {}});
    REQUIRE(plan.ok());
    CHECK(env_value(attempt_environment(*plan, plan->steps[1], 1), "KILN_MODEL") == "/work/demo/runs/out/model.pkl");
  }

  TEST_CASE("an unset env.X in the workflow's env names the variable") {
    Workflow w = sample();
    w.env.push_back({"B", "${{ env.NOPE_NOT_SET }}"});
    auto plan = make_plan(w, {"id", 1, "/s", {}});
    REQUIRE(!plan.ok());
    CHECK(plan.error() == "demo.yaml: error: workflow env B: env.NOPE_NOT_SET is not set");
  }

  TEST_CASE("the order starts the longest chain first and respects needs") {
    auto plan = make_plan(sample(), {"id", 1, "/s", {}});
    REQUIRE(plan.ok());
    CHECK(plan->order == std::vector<int>{0, 1, 2});
    CHECK(plan->steps[0].priority == 2);
    CHECK(plan->steps[2].priority == 1);
  }

  TEST_CASE("an unset env.X is an error naming the step and where it is") {
    Workflow w = sample();
    w.steps[2].run.script = "echo ${{ env.NOPE_NOT_SET }}";
    w.steps[2].run.location = {12, 10};
    auto plan = make_plan(w, {"id", 1, "/s", {}});
    REQUIRE(!plan.ok());
    CHECK(plan.error() == "demo.yaml:12:10: error: step 'lone': env.NOPE_NOT_SET is not set");
  }

  TEST_CASE("shell quoting leaves plain words alone") {
    CHECK(shell_quote("model.pkl") == "model.pkl");
    CHECK(shell_quote("--C=0.5") == "--C=0.5");
    CHECK(shell_quote("") == "''");
    CHECK(shell_quote("a b") == "'a b'");
    CHECK(shell_quote("$HOME") == "'$HOME'");
  }
}
