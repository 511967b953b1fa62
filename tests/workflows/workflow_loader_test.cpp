#include "workflows/workflow_loader.hpp"

#include "core/hash.hpp"
#include "workflows/suggest.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

using namespace kiln::workflows;
using kiln::core::Backoff;
using kiln::core::Command;
using kiln::core::Millis;
using kiln::core::ParamType;
using kiln::core::StepKind;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string all_diagnostics(const LoadResult& result) {
  std::string out;
  for (const auto& d : result.diagnostics) {
    out += format_diagnostic(d, false) + "\n";
  }
  return out;
}

// The diagnostics' messages only, for unit tests that do not care about
// positions.
std::vector<std::string> messages(std::string_view text, const Overrides& overrides = {}) {
  const LoadResult result = parse_workflow(text, "t.yaml", overrides);
  std::vector<std::string> out;
  for (const auto& d : result.diagnostics) {
    out.push_back(d.message);
  }
  return out;
}

kiln::core::Workflow load_ok(std::string_view text, const Overrides& overrides = {}) {
  LoadResult result = parse_workflow(text, "t.yaml", overrides);
  REQUIRE_MESSAGE(result.ok(), all_diagnostics(result));
  return std::move(*result.workflow);
}

} // namespace

TEST_SUITE("workflows::WorkflowLoader") {
  TEST_CASE("the iris workflow, field by field") {
    const std::string path = std::string(KILN_TEST_DATA) + "/workflows/valid/iris.yaml";
    LoadResult result = load_workflow(path, {{"tag", "v1"}, {"C", "0.25"}});
    REQUIRE_MESSAGE(result.ok(), all_diagnostics(result));
    const auto& wf = *result.workflow;
    CHECK(wf.name == "iris");
    CHECK(wf.description == "Train, evaluate and batch-predict an iris classifier");
    CHECK(wf.file == path);
    CHECK(wf.directory == std::string(KILN_TEST_DATA) + "/workflows/valid");
    CHECK(wf.content == read_file(path));
    CHECK(wf.content_hash == kiln::core::sha256_hex(wf.content));

    REQUIRE(wf.params.size() == 7);
    CHECK(wf.params[0].name == "C");
    CHECK(wf.params[0].type == ParamType::floating);
    CHECK(wf.params[0].value == "0.25");
    CHECK(wf.params[0].description == "inverse regularisation");
    CHECK(wf.params[0].location.line == 5);
    CHECK(wf.params[0].location.column == 3);
    CHECK(wf.params[1].name == "max_iter");
    CHECK(wf.params[1].type == ParamType::integer);
    CHECK(wf.params[1].value == "200");
    CHECK(wf.params[2].type == ParamType::string);
    CHECK(wf.params[2].value == "lbfgs");
    CHECK(wf.params[3].type == ParamType::boolean);
    CHECK(wf.params[3].value == "true");
    CHECK(wf.params[4].type == ParamType::integer);
    CHECK(wf.params[4].value == "42");
    CHECK(wf.params[5].type == ParamType::floating);
    CHECK(wf.params[5].value == "2");
    CHECK(wf.params[6].type == ParamType::string);
    CHECK(wf.params[6].value == "v1");

    REQUIRE(wf.env.size() == 2);
    CHECK(wf.env[0] == std::pair<std::string, std::string>{"PYTHONHASHSEED", "0"});
    CHECK(wf.env[1] == std::pair<std::string, std::string>{"RUN_TAG", "run-${{ run.number }}"});

    REQUIRE(wf.steps.size() == 4);
    const auto& prepare = wf.steps[0];
    CHECK(prepare.id == "prepare");
    CHECK(prepare.kind == StepKind::task);
    CHECK(prepare.description == "split the data set");
    CHECK(prepare.needs.empty());
    CHECK(prepare.run.form == Command::Form::shell);
    CHECK(prepare.run.script == "python3 prepare.py --out data --seed ${{ params.seed }}");
    CHECK(prepare.run.location.line == 22);
    CHECK(prepare.run.location.column == 10);
    REQUIRE(prepare.outputs.size() == 2);
    CHECK(prepare.outputs[0].name.empty());
    CHECK(prepare.outputs[0].path == "data/train.csv");
    CHECK(prepare.outputs[1].path == "data/test.csv");
    CHECK(prepare.timeout == Millis{600'000});
    CHECK(prepare.kill_after == Millis{5'000});
    CHECK(prepare.retries.limit == 2);
    CHECK(prepare.retries.backoff == Backoff::exponential);
    CHECK(prepare.retries.delay == Millis{1'000});
    CHECK(prepare.retries.max_delay == Millis{30'000});
    CHECK(prepare.retries.jitter);
    CHECK(prepare.retries.on_failure);
    CHECK(prepare.retries.on_timeout);
    CHECK(prepare.resources.cpus == 2);
    CHECK(prepare.workdir == ".");
    CHECK(prepare.env == kiln::core::EnvVars{{"OMP_NUM_THREADS", "1"}, {"LOG", "info"}});
    CHECK(prepare.location.line == 20);
    CHECK(prepare.location.column == 3);

    const auto& train = wf.steps[1];
    CHECK(train.id == "train");
    CHECK(train.kind == StepKind::train);
    CHECK(train.needs == std::vector<std::string>{"prepare"});
    CHECK(train.run.form == Command::Form::exec);
    CHECK(train.run.argv ==
          std::vector<std::string>{"python3", "train.py", "--C", "${{ params.C }}", "--out", "model.pkl"});
    REQUIRE(train.output("model") != nullptr);
    CHECK(train.output("model")->path == "model.pkl");
    // Step retries merge field by field over the defaults.
    CHECK(train.retries.limit == 3);
    CHECK(train.retries.backoff == Backoff::exponential);
    CHECK(train.retries.on_failure);
    CHECK(train.retries.on_timeout);
    CHECK(train.retries.exit_codes == std::vector<int>{75});
    CHECK(train.timeout == Millis{5'400'000});
    CHECK(train.resources.cpus == 1);
    CHECK(train.env == kiln::core::EnvVars{{"OMP_NUM_THREADS", "1"}, {"LOG", "debug"}, {"STEP", "${{ step.id }}"}});

    const auto& evaluate = wf.steps[2];
    CHECK(evaluate.kind == StepKind::evaluate);
    CHECK(evaluate.needs == std::vector<std::string>{"train"});
    CHECK(evaluate.run.script ==
          "python3 evaluate.py --model model.pkl \\\n  --metrics metrics.json --name ${{ workflow.name }}\n");
    CHECK(evaluate.metrics == "metrics.json");
    CHECK(evaluate.model == "train"); // inferred: the only train step upstream

    const auto& predict = wf.steps[3];
    CHECK(predict.kind == StepKind::predict);
    CHECK(predict.model == "train");
    CHECK(predict.workdir == "out/${{ run.id }}");
    CHECK(predict.run.script == "python3 predict.py --model model.pkl --out predictions.csv --tag '$${{ literal }}'");
    CHECK(predict.retries.limit == 0);
    CHECK(predict.kill_after == Millis{60'000});
    CHECK(wf.step("predict") == &predict);
  }

  TEST_CASE("the tracking section names the server and the experiment") {
    const kiln::core::Workflow wf = load_ok("name: w\n"
                                            "tracking:\n"
                                            "  uri: https://mlflow.example.com:5000/base\n"
                                            "  experiment: nightly retrain\n"
                                            "steps:\n"
                                            "  a: {run: 'true'}\n");
    CHECK(wf.tracking.uri == "https://mlflow.example.com:5000/base");
    CHECK(wf.tracking.experiment == "nightly retrain");
    CHECK(load_ok("name: w\nsteps:\n  a: {run: 'true'}\n").tracking.uri.empty());
    CHECK(load_ok("name: w\ntracking: {uri: 'http://h/a%40b'}\nsteps:\n  a: {run: 'true'}\n").tracking.uri ==
          "http://h/a%40b");
    // Anything before an '@' counts as credentials, whatever the scheme or
    // the characters in the password, and is masked in every error on the line.
    for (const char* uri : {"http://h/a@b", "alice:s3cret@mlflow:5000", "http:/alice:s3cret@mlflow",
                            "http://alice:s3#cr/et@mlflow:5000", "http://alice:s3cret@mlflow:5000/${{ params.x }}"}) {
      const LoadResult result =
          parse_workflow("name: w\ntracking: {uri: '" + std::string(uri) + "'}\nsteps:\n  a: {run: 'true'}\n", "t.yaml");
      CAPTURE(uri);
      CHECK_FALSE(result.ok());
      const std::string text = all_diagnostics(result);
      CHECK(text.find("holds credentials") != std::string::npos);
      CHECK(text.find("s3") == std::string::npos);
    }
  }

  TEST_CASE("a required parameter must be given with -p") {
    const std::string path = std::string(KILN_TEST_DATA) + "/workflows/valid/iris.yaml";
    LoadResult result = load_workflow(path);
    REQUIRE(result.diagnostics.size() == 1);
    CHECK(format_diagnostic(result.diagnostics[0], false) ==
          path + ":11:3: error: parameter 'tag' has no default; pass it with -p tag=VALUE\n"
                 "  tag: {type: string}\n"
                 "  ^~~");
  }

  TEST_CASE("missing files") {
    LoadResult result = load_workflow("/nonexistent/kiln.yaml");
    REQUIRE(result.diagnostics.size() == 1);
    CHECK(format_diagnostic(result.diagnostics[0], false) ==
          "/nonexistent/kiln.yaml: error: cannot read the workflow: No such file or directory");
    CHECK_FALSE(result.ok());
  }
}

TEST_SUITE("workflows::Overrides") {
  constexpr std::string_view k_params = R"(name: p
params:
  C: {type: float, default: 1.0}
  n: 3
  flag: false
  label: x
steps:
  a: {run: "echo ${{ params.C }} ${{ params.n }} ${{ params.flag }} ${{ params.label }}"}
)";

  TEST_CASE("overrides replace defaults with canonical values, the last one winning") {
    const auto wf = load_ok(k_params, {{"C", "0.5"}, {"n", "+7"}, {"flag", "TRUE"}, {"label", "a b"}, {"C", "2e3"}});
    CHECK(wf.param("C")->value == "2e3");
    CHECK(wf.param("n")->value == "7");
    CHECK(wf.param("flag")->value == "true");
    CHECK(wf.param("label")->value == "a b");
  }

  TEST_CASE("float canonical text") {
    CHECK(load_ok(k_params, {{"C", "1"}}).param("C")->value == "1");
    CHECK(load_ok(k_params, {{"C", ".5"}}).param("C")->value == "0.5");
    CHECK(load_ok(k_params, {{"C", "+1.50"}}).param("C")->value == "1.5");
    CHECK(load_ok(k_params, {{"C", "-0.125"}}).param("C")->value == "-0.125");
    CHECK(load_ok(k_params, {{"C", "007"}}).param("C")->value == "7");
  }

  TEST_CASE("wrong types and unknown names") {
    CHECK(messages(k_params, {{"C", "abc"}}) ==
          std::vector<std::string>{"-p C=abc: parameter 'C' is a float; 'abc' is not a number"});
    CHECK(messages(k_params, {{"n", "1.5"}}) ==
          std::vector<std::string>{"-p n=1.5: parameter 'n' is an int; '1.5' is not a whole number"});
    CHECK(messages(k_params, {{"n", "99999999999999999999"}}) ==
          std::vector<std::string>{
              "-p n=99999999999999999999: parameter 'n' is an int; '99999999999999999999' is too large for an int"});
    CHECK(messages(k_params, {{"flag", "yes"}}) ==
          std::vector<std::string>{"-p flag=yes: parameter 'flag' is a bool; 'yes' is not true or false"});
    CHECK(messages(k_params, {{"c", "1"}}) ==
          std::vector<std::string>{"-p c=1: unknown parameter 'c' (did you mean 'C'?)"});
    CHECK(messages(k_params, {{"zzz", "1"}}) ==
          std::vector<std::string>{"-p zzz=1: unknown parameter 'zzz'; declared: C, n, flag, label"});
    CHECK(messages(k_params, {{"C", "1e999"}}) ==
          std::vector<std::string>{"-p C=1e999: parameter 'C' is a float; '1e999' is out of range for a float"});
    CHECK(messages(k_params, {{"C", "nan"}}) ==
          std::vector<std::string>{"-p C=nan: parameter 'C' is a float; 'nan' is not a number"});
  }

  TEST_CASE("override diagnostics have no position and say kiln") {
    const LoadResult result = parse_workflow(k_params, "t.yaml", {{"C", "abc"}});
    REQUIRE(result.diagnostics.size() == 1);
    CHECK(result.diagnostics[0].file.empty());
    CHECK(format_diagnostic(result.diagnostics[0], false) ==
          "kiln: error: -p C=abc: parameter 'C' is a float; 'abc' is not a number");
  }

  TEST_CASE("a workflow without params") {
    CHECK(messages("name: x\nsteps: {a: {run: 'true'}}\n", {{"C", "1"}}) ==
          std::vector<std::string>{"-p C=1: unknown parameter 'C'; the workflow declares no parameters"});
  }

  TEST_CASE("canonical_param_value") {
    CHECK(*canonical_param_value(ParamType::integer, "-0") == "0");
    CHECK(*canonical_param_value(ParamType::floating, "1.0") == "1.0");
    CHECK(*canonical_param_value(ParamType::floating, "1.") == "1");
    CHECK(*canonical_param_value(ParamType::floating, "1E5") == "1E5");
    CHECK(*canonical_param_value(ParamType::boolean, "False") == "false");
    CHECK(*canonical_param_value(ParamType::string, "") == "");
    CHECK_FALSE(canonical_param_value(ParamType::floating, "").ok());
    CHECK_FALSE(canonical_param_value(ParamType::integer, "").ok());
    CHECK_FALSE(canonical_param_value(ParamType::floating, ".inf").ok());
  }
}

TEST_SUITE("workflows::KindContracts") {
  TEST_CASE("train must declare its model") {
    CHECK(messages("name: x\nsteps:\n  t: {kind: train, run: go, outputs: [m.pkl]}\n") ==
          std::vector<std::string>{"train step 't' must declare the model it produces: add 'outputs: {model: PATH}'"});
    load_ok("name: x\nsteps:\n  t: {kind: train, run: go, outputs: {model: m.pkl}}\n");
  }

  TEST_CASE("evaluate must declare metrics") {
    CHECK(messages("name: x\nsteps:\n  e: {kind: evaluate, run: go}\n") ==
          std::vector<std::string>{"evaluate step 'e' must declare its metrics file: add 'metrics: PATH'"});
    const auto wf = load_ok("name: x\nsteps:\n  e: {kind: evaluate, run: go, metrics: m.json}\n");
    CHECK(wf.steps[0].model.empty());
  }

  TEST_CASE("predict must declare predictions and find exactly one model") {
    CHECK(messages("name: x\nsteps:\n  p: {kind: predict, run: go}\n") ==
          std::vector<std::string>{"predict step 'p' must declare its predictions: add 'outputs: [PATH]'",
                                   "predict step 'p' has no train step upstream; add one to needs or set 'model:'"});
    constexpr std::string_view two = R"(name: x
steps:
  t1: {kind: train, run: go, outputs: {model: a}}
  t2: {kind: train, run: go, outputs: {model: b}}
  mid: {needs: [t2, t1], run: go}
  p: {kind: predict, needs: mid, run: go, outputs: [p.csv]}
)";
    CHECK(messages(two) ==
          std::vector<std::string>{
              "predict step 'p' has several train steps upstream (t1, t2); set 'model:' to the one it uses"});
    std::string chosen(two);
    chosen.replace(chosen.find("run: go, outputs: [p.csv]"), 0, "model: t2, ");
    CHECK(load_ok(chosen).step("p")->model == "t2");
    // Inferred through a chain of needs.
    CHECK(load_ok("name: x\nsteps:\n  t: {kind: train, run: go, outputs: {model: m}}\n  a: {needs: t, run: go}\n"
                  "  p: {kind: predict, needs: a, run: go, outputs: [o]}\n")
              .step("p")
              ->model == "t");
  }

  TEST_CASE("model: must name an upstream train step, on evaluate and predict only") {
    constexpr std::string_view base = R"(name: x
steps:
  t: {kind: train, run: go, outputs: {model: m}}
  other: {run: go}
)";
    CHECK(messages(std::string(base) + "  p: {kind: predict, model: t, run: go, outputs: [o]}\n") ==
          std::vector<std::string>{"train step 't' is not upstream of 'p'; add it to needs"});
    CHECK(messages(std::string(base) +
                   "  p: {kind: predict, needs: [t, other], model: other, run: go, outputs: [o]}\n") ==
          std::vector<std::string>{"step 'other' is not a train step"});
    CHECK(messages(std::string(base) + "  p: {kind: predict, needs: t, model: tt, run: go, outputs: [o]}\n") ==
          std::vector<std::string>{"unknown step 'tt' in model (did you mean 't'?)"});
    CHECK(messages(std::string(base) + "  p: {needs: t, model: t, run: go}\n") ==
          std::vector<std::string>{"'model' is only allowed on evaluate and predict steps"});
    CHECK(load_ok(std::string(base) + "  e: {kind: evaluate, needs: t, model: t, run: go, metrics: m.json}\n")
              .step("e")
              ->model == "t");
  }
}

TEST_SUITE("workflows::Suggest") {
  TEST_CASE("edit distance") {
    CHECK(edit_distance("needs", "needs") == 0);
    CHECK(edit_distance("nedds", "needs") == 1);
    CHECK(edit_distance("stpes", "steps") == 1); // a transposition is one edit
    CHECK(edit_distance("Needs", "needs") == 0);
    CHECK(edit_distance("", "abc") == 3);
    CHECK(edit_distance("kitten", "sitting") == 3);
  }

  TEST_CASE("closest match") {
    const std::vector<std::string_view> keys{"kind", "needs", "run", "outputs", "timeout"};
    CHECK(did_you_mean("need", keys) == " (did you mean 'needs'?)");
    CHECK(did_you_mean("ouputs", keys) == " (did you mean 'outputs'?)");
    CHECK(did_you_mean("RUN", keys) == " (did you mean 'run'?)");
    CHECK(did_you_mean("zebra", keys) == "");
    CHECK(did_you_mean("x", keys) == "");
    CHECK(did_you_mean("run", keys) == "");
    CHECK(closest_match("timout", keys) == std::optional<std::string_view>{"timeout"});
  }
}
