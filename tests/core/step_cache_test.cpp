#include "core/step_cache.hpp"

#include "core/hash.hpp"

#include <doctest/doctest.h>

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

using namespace kiln::core;
using nlohmann::json;

namespace {

const std::string k_sha_a = sha256_hex("a");
const std::string k_sha_b = sha256_hex("b");

/// prepare -> train, train cached with one input, one param, env and an output.
struct Fixture {
  Plan plan;
  std::vector<InputFile> inputs{{"data.csv", "data.csv", k_sha_a, ""}};
  std::vector<std::pair<std::string, std::string>> values;
  std::string prepare_key = std::string(64, 'e');

  Fixture() {
    plan.run_id = "0123456789abcdef0123456789abcdef";
    plan.workflow_env = {"SEED=1"};
    plan.base_env = {"PATH=/usr/bin", "HOME=/home/me", "SEED=1"};
    PlannedStep prepare;
    prepare.id = "prepare";
    prepare.display_command = "python prepare.py";
    prepare.workdir = "/w";
    PlannedStep train;
    train.id = "train";
    train.needs = {0};
    train.argv = {"/bin/sh", "-c", "python train.py --C 1"};
    train.display_command = "python train.py --C 1";
    train.workdir = "/w";
    train.env = {"MODE=fast"};
    train.outputs = {{"", "model.pkl"}};
    train.params_used = {{"C", "1"}};
    train.inputs = {"data.csv"};
    train.cache = true;
    plan.steps = {prepare, train};
  }
  PlannedStep& train() { return plan.steps[1]; }
  CacheKey key() const {
    return compute_cache_key(
        plan, plan.steps[1], inputs, [this](int) { return prepare_key; }, values);
  }
};

/// The components the key covers, as the store keeps them.
json components_of(const CacheKey& key) {
  return json::parse(key.components_json);
}

} // namespace

TEST_SUITE("core::compute_cache_key") {
  TEST_CASE("the key is the SHA-256 of its components, and the same for the same step") {
    Fixture f;
    const CacheKey first = f.key();
    const CacheKey second = f.key();
    CHECK(first.key == second.key);
    CHECK(components_of(first) == components_of(second));
    CHECK(first.key.size() == 64);
    CHECK(first.key == sha256_hex(components_of(first).dump()));
    CHECK(components_of(first) == json{{"version", "1"},
                                       {"command", "python train.py --C 1"},
                                       {"workdir", "/w"},
                                       {"outputs", "model.pkl"},
                                       {"env:SEED", "1"},
                                       {"env:MODE", "fast"},
                                       {"param:C", "1"},
                                       {"input:data.csv", k_sha_a},
                                       {"upstream:prepare", f.prepare_key}});
  }

  TEST_CASE("each component changes the key") {
    const std::string base = Fixture().key().key;
    std::set<std::string> keys{base};
    auto changed = [&](const std::function<void(Fixture&)>& change) {
      Fixture f;
      change(f);
      const std::string key = f.key().key;
      CHECK(key != base);
      keys.insert(key);
    };
    changed([](Fixture& f) { f.train().display_command = "python train.py --C 2"; });
    changed([](Fixture& f) { f.train().workdir = "/elsewhere"; });
    changed([](Fixture& f) { f.train().outputs = {{"", "model2.pkl"}}; });
    changed([](Fixture& f) { f.train().outputs = {{"model", "model.pkl"}}; });
    changed([](Fixture& f) { f.train().outputs.push_back({"", "scores.csv"}); });
    changed([](Fixture& f) { f.plan.workflow_env = {"SEED=2"}; });
    changed([](Fixture& f) { f.train().env = {"MODE=slow"}; });
    changed([](Fixture& f) { f.train().env.push_back("EXTRA="); });
    changed([](Fixture& f) { f.train().params_used = {{"C", "10"}}; });
    changed([](Fixture& f) { f.train().params_used.emplace_back("D", "1"); });
    changed([](Fixture& f) { f.inputs[0].sha256 = k_sha_b; });
    changed([](Fixture& f) { f.inputs = {{"data.csv", "data.csv", "", "no such file or directory"}}; });
    changed([](Fixture& f) { f.inputs.push_back({"extra.csv", "extra.csv", k_sha_a, ""}); });
    changed([](Fixture& f) { f.prepare_key = std::string(64, 'f'); });
    changed([](Fixture& f) { f.prepare_key = ""; });
    changed([](Fixture& f) { f.values = {{"steps.prepare.outputs.path", "data.csv"}}; });
    // Every change above gave a key of its own.
    CHECK(keys.size() == 17);
  }

  TEST_CASE("keys stay what earlier versions computed, for any text: quotes, control characters, UTF-8, bad UTF-8") {
    Fixture f;
    f.train().display_command = "echo \"caf\xc3\xa9\" \\ \t\x01\x7f | tr -d '\n'";
    f.train().env = {"MODE=fast", "BAD=\xff\xfe ok", "EMPTY=", "NOVALUE"};
    f.train().params_used = {{"name", "na\u00efve \xe2\x82\xac"}, {"C", "1"}};
    f.values = {{"steps.prepare.outputs.path", "/tmp/\x1b[0m"}};
    const CacheKey key = f.key();
    // The text is canonical JSON as nlohmann::json writes it: parsing it and
    // writing it again changes nothing (bad UTF-8 became U+FFFD).
    const json parsed = json::parse(key.components_json);
    CHECK(parsed.dump(-1, ' ', false, json::error_handler_t::replace) == key.components_json);
    CHECK(parsed["env:BAD"] == "\xef\xbf\xbd\xef\xbf\xbd ok");
    CHECK(parsed["env:NOVALUE"] == "");
    CHECK(key.key == sha256_hex(key.components_json));
    // Pinned: a change here invalidates every cache users have.
    CHECK(key.key == "2d585f89429ee304fa7c57291ad1dadbe75384cdb32149b2aab5835ba00dbcec");
    CHECK(Fixture().key().key == "c1906efad5dab16b3ef3c9d891636146a6adc83530c400b4f1bbb6f7f60928fe");
  }

  TEST_CASE("a step's env overrides the workflow's of the same name: one component, the step's value") {
    Fixture f;
    f.train().env = {"SEED=7", "MODE=fast"};
    const CacheKey key = f.key();
    CHECK(components_of(key)["env:SEED"] == "7");
    CHECK(key.components_json.find("\"env:SEED\":\"7\"") != std::string::npos);
    CHECK(key.components_json.find("\"env:SEED\":\"1\"") == std::string::npos);
    CHECK(key.components_json == components_of(key).dump());
  }

  TEST_CASE("the runner's own environment, argv and retry policy are not part of the key") {
    Fixture f;
    const std::string base = f.key().key;
    f.plan.base_env = {"PATH=/opt/bin", "HOME=/root"};
    f.train().argv = {"/bin/bash", "-c", "python train.py --C 1"};
    f.train().retries.limit = 5;
    f.train().priority = 9;
    f.plan.run_id = "ffffffffffffffffffffffffffffffff";
    CHECK(f.key().key == base);
  }

  TEST_CASE("components say what each part was: missing inputs, uncached needs, values used") {
    Fixture f;
    f.inputs = {{"data.csv", "data.csv", "", "no such file or directory"}};
    f.prepare_key = "";
    f.values = {{"steps.prepare.outputs.path", "data.csv"}};
    f.train().outputs = {{"model", "model.pkl"}, {"", "log.txt"}};
    const json c = components_of(f.key());
    CHECK(c["input:data.csv"] == "missing (no such file or directory)");
    CHECK(c["upstream:prepare"] == "-");
    CHECK(c["value:steps.prepare.outputs.path"] == "data.csv");
    CHECK(c["outputs"] == "model=model.pkl,log.txt");
  }

  TEST_CASE("input_problem names the first input with one") {
    std::vector<InputFile> inputs{
        {"a", "a", k_sha_a, ""}, {"b/*.csv", "b/*.csv", "", "matches no file"}, {"c", "c", "", "permission denied"}};
    CHECK(input_problem(inputs) == "b/*.csv: matches no file");
    inputs.erase(inputs.begin() + 1, inputs.end());
    CHECK(input_problem(inputs).empty());
  }
}

TEST_SUITE("core::explain_changes") {
  TEST_CASE("equal components explain nothing") {
    const json c = components_of(Fixture().key());
    CHECK(explain_changes(c, c).empty());
    CHECK(explain_changes(json::object(), json::object()).empty());
  }

  TEST_CASE("each kind of component in its own words") {
    auto one = [](const json& before, const json& after) {
      auto lines = explain_changes(before, after);
      REQUIRE(lines.size() == 1);
      return lines[0];
    };
    CHECK(one({{"input:data/iris.csv", k_sha_a}}, {{"input:data/iris.csv", k_sha_b}}) ==
          "input data/iris.csv changed (sha256 " + k_sha_a.substr(0, 12) + " -> " + k_sha_b.substr(0, 12) + ")");
    CHECK(one({{"input:a.csv", k_sha_a}}, {{"input:a.csv", "missing (no such file or directory)"}}) ==
          "input a.csv is missing (no such file or directory)");
    CHECK(one(json::object(), {{"input:new.csv", k_sha_a}}) == "input new.csv is new");
    CHECK(one({{"input:old.csv", k_sha_a}}, json::object()) == "input old.csv is no longer an input");
    CHECK(one({{"param:C", "1"}}, {{"param:C", "10"}}) == "param C: 1 -> 10");
    CHECK(one(json::object(), {{"param:C", "1"}}) == "param C: (unset) -> 1");
    CHECK(one({{"param:C", "1"}}, json::object()) == "param C: 1 -> (unset)");
    CHECK(one({{"upstream:prepare", "k1"}}, {{"upstream:prepare", "k2"}}) ==
          "upstream step 'prepare' changed (its key differs)");
    CHECK(one(json::object(), {{"upstream:prepare", "k"}}) == "need 'prepare' added");
    CHECK(one({{"upstream:prepare", "k"}}, json::object()) == "need 'prepare' removed");
    CHECK(one({{"value:steps.prepare.outputs.path", "a.csv"}}, {{"value:steps.prepare.outputs.path", "b.csv"}}) ==
          "steps.prepare.outputs.path: a.csv -> b.csv");
    CHECK(one({{"env:MODE", "fast"}}, {{"env:MODE", "slow"}}) == "env MODE: fast -> slow");
    CHECK(one({{"command", "python train.py"}}, {{"command", "python train.py --C 2"}}) ==
          "command: python train.py -> python train.py --C 2");
    CHECK(one({{"workdir", "/a"}}, {{"workdir", "/b"}}) == "workdir: /a -> /b");
    CHECK(one({{"outputs", "model.pkl"}}, {{"outputs", "model.pkl,log.txt"}}) ==
          "outputs: model.pkl -> model.pkl,log.txt");
    CHECK(one({{"version", "0"}}, {{"version", "1"}}) == "kiln's cache format changed");
  }

  TEST_CASE("a long value is cut to 60 characters") {
    const std::string long_command = "python train.py " + std::string(100, 'x');
    const auto lines = explain_changes({{"command", "short"}}, {{"command", long_command}});
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "command: short -> " + long_command.substr(0, 57) + "...");
  }

  TEST_CASE("inputs first, then params, upstream steps, values, env, command, workdir, outputs, version") {
    Fixture f;
    const json before = components_of(f.key());
    f.train().display_command = "python train.py --C 10";
    f.train().workdir = "/other";
    f.train().outputs = {{"", "m.pkl"}};
    f.train().env = {"MODE=slow"};
    f.train().params_used = {{"C", "10"}};
    f.inputs = {{"data.csv", "data.csv", k_sha_b, ""}, {"b.csv", "b.csv", k_sha_a, ""}};
    f.prepare_key = std::string(64, '0');
    f.values = {{"steps.prepare.outputs.n", "3"}};
    json after = components_of(f.key());
    after["version"] = "2";
    CHECK(explain_changes(before, after) ==
          std::vector<std::string>{
              "input b.csv is new",
              "input data.csv changed (sha256 " + k_sha_a.substr(0, 12) + " -> " + k_sha_b.substr(0, 12) + ")",
              "param C: 1 -> 10",
              "upstream step 'prepare' changed (its key differs)",
              "steps.prepare.outputs.n: (unset) -> 3",
              "env MODE: fast -> slow",
              "command: python train.py --C 1 -> python train.py --C 10",
              "workdir: /w -> /other",
              "outputs: model.pkl -> m.pkl",
              "kiln's cache format changed",
          });
  }
}
