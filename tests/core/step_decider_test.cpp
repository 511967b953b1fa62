// StepDecider deciding ahead: while kiln run records a new run, the cached
// steps whose keys need nothing from the run are decided and written cached
// in the run's own transaction; the rest is left to the loop. Real store
// files and real input and output files.

#include "core/hash.hpp"
#include "core/step_decider.hpp"
#include "core/tracker_store.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

using kiln::test::check;
using kiln::test::ok;
using kiln::test::read_file;
using kiln::test::TempDir;
using kiln::test::write_file;

using namespace kiln::core;

namespace {

constexpr std::int64_t k_second_ns = 1'000'000'000;

/// a -> b -> c, each cached with one input and one output; c has a
/// condition, so it is decided as it starts.
struct Fixture {
  TempDir dir;
  std::unique_ptr<TrackerStore> store = kiln::test::ok(TrackerStore::open(dir.path() / "store"));
  std::string workdir = (dir.path() / "w").string();

  Fixture() {
    for (const char* name : {"a", "b", "c"}) {
      write_file(workdir + "/in/" + name + ".txt", std::string("input ") + name + "\n");
      write_file(workdir + "/out/" + name + ".txt", std::string("output ") + name + "\n");
    }
  }

  Plan plan(std::int64_t number) const {
    Plan plan;
    plan.run_number = number;
    plan.run_id = "run" + std::to_string(number);
    for (const char* name : {"a", "b", "c"}) {
      PlannedStep step;
      step.id = name;
      step.argv = {"/bin/sh", "-c", std::string("make ") + name};
      step.display_command = std::string("make ") + name;
      step.workdir = workdir;
      step.inputs = {std::string("in/") + name + ".txt"};
      step.outputs = {{"", std::string("out/") + name + ".txt"}};
      step.cache = true;
      if (!plan.steps.empty()) {
        step.needs = {static_cast<int>(plan.steps.size()) - 1};
      }
      plan.steps.push_back(step);
    }
    plan.steps[2].when.text = "true";
    plan.order = {0, 1, 2};
    return plan;
  }

  static std::vector<NewStep> steps_of(const Plan& plan) {
    std::vector<NewStep> steps;
    for (const PlannedStep& s : plan.steps) {
      steps.push_back({s.id, "task", s.display_command, {}, s.workdir, std::nullopt});
    }
    return steps;
  }

  static NewRun new_run() {
    NewRun run;
    run.workflow_name = "flow";
    run.workflow_file = "/flows/flow.yaml";
    run.workflow_hash = "h1";
    run.workflow_content = "name: flow\n";
    run.runner = RunnerIdentity{"box", 100, 1};
    run.started_ms = 1000;
    return run;
  }

  /// A memo that trusts every file of the fixture as it is now (hashed
  /// long after its last change), as a rerun's memo does.
  MemoEntries settled_memo() const {
    MemoEntries memo;
    for (const char* dir_name : {"in", "out"}) {
      for (const char* name : {"a", "b", "c"}) {
        const std::string path = workdir + "/" + dir_name + "/" + name + ".txt";
        struct stat st {};
        REQUIRE(::stat(path.c_str(), &st) == 0);
        MemoEntry entry;
        entry.stamp = {st.st_size, st.st_mtim.tv_sec * k_second_ns + st.st_mtim.tv_nsec,
                       st.st_ctim.tv_sec * k_second_ns + st.st_ctim.tv_nsec, static_cast<std::int64_t>(st.st_ino),
                       static_cast<std::int64_t>(st.st_dev)};
        entry.sha256 = sha256_hex(read_file(path));
        entry.hashed_at_ns = FileHasher::wall_clock_ns() + 60 * k_second_ns;
        memo.emplace_back(path, entry);
      }
    }
    return memo;
  }

  /// Run 1: every step decided in the loop (nothing before it to stand
  /// for it), then executed and succeeded with its output recorded.
  void first_run() {
    const Plan p = plan(1);
    NewRun run = new_run();
    run.steps = steps_of(p);
    const std::int64_t number = ok(store->create_run(run)).number;
    REQUIRE(number == 1);
    InMemoryHashMemo memo;
    StepDecider decider(*store, p, "flow", {}, memo);
    auto status = [](int) { return StepStatus::succeeded; };
    for (int step = 0; step < 3; ++step) {
      REQUIRE(decider.prepare(step, false, status).action == StartDecision::Action::run);
    }
    decider.flush();
    REQUIRE(decider.errors().empty());
    for (const char* name : {"a", "b", "c"}) {
      check(store->begin_attempt(1, name, 1, AttemptStart{1, "local", "pid:1", 1000, "", ""}));
      StepEnd end{StepStatus::succeeded, ""};
      check(store->end_attempt(1, name, 1, AttemptEnd{0, 0, false, 1010, ""}, &end));
      const std::string output = std::string("out/") + name + ".txt";
      TrackerStore::NewArtifact artifact{output, ok(store->blobs().stage(workdir + "/" + output)), ArtifactKind::output,
                                         ""};
      check(store->add_artifacts(1, name, {artifact}, 1010));
    }
    check(store->finish_run(1, RunStatus::succeeded, 0, 2000));
  }

  /// Run 2, recorded with what `decider` decides ahead (made in the run's
  /// transaction, as kiln run does).
  struct Second {
    Plan plan;
    InMemoryHashMemo memo;
    std::optional<StepDecider> decider;
    std::vector<std::optional<CacheDecision>> ahead;
    std::int64_t number = 0;
  };
  void second_run(Second& second, std::vector<char> forced = {}, std::vector<char> selected = {}) {
    auto made =
        store->create_run(new_run(), [&](std::int64_t number, const std::string&) -> Expected<std::vector<NewStep>> {
          second.plan = plan(number);
          second.decider.emplace(*store, second.plan, "flow", forced, second.memo);
          // As kiln run does: the stats start on their thread first.
          second.decider->prefetch_stats();
          second.ahead = second.decider->decide_ahead(selected, 5000);
          std::vector<NewStep> steps = steps_of(second.plan);
          for (std::size_t i = 0; i < steps.size(); ++i) {
            steps[i].cached = second.ahead[i];
          }
          return steps;
        });
    second.number = ok(std::move(made)).number;
  }

  StepRecord step(std::int64_t run, const std::string& id) {
    for (StepRecord& s : ok(store->steps(run))) {
      if (s.id == id) {
        return s;
      }
    }
    FAIL("no step " << id);
    return {};
  }
};

} // namespace

TEST_SUITE("core::StepDecider") {
  TEST_CASE("a rerun decides its unchanged steps ahead and records them cached with the run") {
    Fixture f;
    f.first_run();
    const std::optional<StepCache> a1 = ok(f.store->step_cache(1, "a"));
    REQUIRE(a1);
    REQUIRE(a1->key.size() == 64);

    Fixture::Second second;
    second.memo = InMemoryHashMemo(f.settled_memo());
    f.second_run(second);
    REQUIRE(second.number == 2);
    REQUIRE(second.ahead.size() == 3);
    CHECK(second.ahead[0].has_value());
    CHECK(second.ahead[1].has_value());
    // A condition is decided as the step starts.
    CHECK_FALSE(second.ahead[2].has_value());

    // Written once, cached, with the key, the source, the reason and the
    // time it was decided; what it copies from its source is there too.
    for (const char* id : {"a", "b"}) {
      const StepRecord row = f.step(2, id);
      CHECK(row.status == StepStatus::cached);
      CHECK(row.reason == "unchanged since run 1");
      CHECK(row.ended_ms == std::optional<std::int64_t>(5000));
      const std::optional<StepCache> cache = ok(f.store->step_cache(2, id));
      REQUIRE(cache);
      CHECK(cache->key == ok(f.store->step_cache(1, id))->key);
      CHECK(cache->cached_from == std::optional<std::int64_t>(1));
      const auto artifacts = ok(f.store->artifacts(2, id));
      REQUIRE(artifacts.size() == 1);
      CHECK(artifacts[0].path == std::string("out/") + id + ".txt");
    }
    CHECK(f.step(2, "c").status == StepStatus::pending);
    // Nothing was read: every input and output was known to the memo.
    CHECK(second.memo.changed().empty());

    // The loop gets the decisions made ahead back, and writes nothing for
    // them; the step left to it is decided with their keys.
    StepDecider& decider = *second.decider;
    auto status = [](int) { return StepStatus::cached; };
    const StartDecision a = decider.prepare(0, false, status);
    CHECK(a.action == StartDecision::Action::cached);
    CHECK(a.reason == "unchanged since run 1");
    decider.step_finished(0, StepStatus::cached, a.reason, 9000);
    CHECK(decider.prepare(1, false, status).action == StartDecision::Action::cached);
    const StartDecision c = decider.prepare(2, false, status);
    CHECK(c.action == StartDecision::Action::cached);
    decider.step_finished(2, StepStatus::cached, c.reason, 9000);
    decider.flush();
    CHECK(decider.errors().empty());
    CHECK(f.step(2, "a").ended_ms == std::optional<std::int64_t>(5000));
    CHECK(f.step(2, "c").status == StepStatus::cached);
    CHECK(ok(f.store->step_cache(2, "c"))->key == ok(f.store->step_cache(1, "c"))->key);
  }

  TEST_CASE("an input the memo cannot vouch for is not read while the run is recorded: the loop decides") {
    Fixture f;
    f.first_run();
    Fixture::Second second; // an empty memo: every input must be read
    f.second_run(second);
    CHECK_FALSE(second.ahead[0].has_value());
    CHECK_FALSE(second.ahead[1].has_value());
    CHECK(second.memo.changed().empty());
    CHECK(f.step(2, "a").status == StepStatus::pending);
    CHECK(ok(f.store->step_cache(2, "a"))->key.empty());

    auto status = [](int) { return StepStatus::cached; };
    CHECK(second.decider->prepare(0, false, status).action == StartDecision::Action::cached);
    CHECK_FALSE(second.memo.changed().empty());
  }

  TEST_CASE("forced, unselected and changed steps are left to the loop, and so is what follows them") {
    Fixture f;
    f.first_run();
    SUBCASE("forced") {
      Fixture::Second second;
      second.memo = InMemoryHashMemo(f.settled_memo());
      f.second_run(second, {1, 0, 0});
      CHECK_FALSE(second.ahead[0].has_value());
      CHECK_FALSE(second.ahead[1].has_value());
    }
    SUBCASE("not selected") {
      Fixture::Second second;
      second.memo = InMemoryHashMemo(f.settled_memo());
      f.second_run(second, {}, {1, 0, 1});
      CHECK(second.ahead[0].has_value());
      CHECK_FALSE(second.ahead[1].has_value());
    }
    SUBCASE("an output gone: restoring it is left to the loop") {
      const auto memo = f.settled_memo();
      std::filesystem::remove(f.workdir + "/out/a.txt");
      Fixture::Second second;
      second.memo = InMemoryHashMemo(memo);
      f.second_run(second);
      CHECK_FALSE(second.ahead[0].has_value());
      CHECK_FALSE(second.ahead[1].has_value());
      auto status = [](int) { return StepStatus::cached; };
      const StartDecision a = second.decider->prepare(0, false, status);
      CHECK(a.action == StartDecision::Action::cached);
      CHECK(a.reason == "unchanged since run 1; restored 1 output from the artifact store");
      CHECK(read_file(f.workdir + "/out/a.txt") == "output a\n");
    }
    SUBCASE("an input changed") {
      write_file(f.workdir + "/in/a.txt", "changed\n");
      Fixture::Second second;
      second.memo = InMemoryHashMemo(f.settled_memo());
      f.second_run(second);
      CHECK_FALSE(second.ahead[0].has_value());
      CHECK_FALSE(second.ahead[1].has_value());
    }
  }
}
