#include "core/tracker_store.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

using kiln::test::check;
using kiln::test::TempDir;

using namespace kiln::core;

namespace {

constexpr std::string_view k_remote = "http://mlflow.test";

/// A run of `ids`, each needing the one before, as `kiln run` records it.
RunRecord start_run(TrackerStore& store, const std::vector<std::string>& ids) {
  NewRun run;
  run.workflow_name = "nightly";
  run.workflow_file = "/flows/nightly.yaml";
  run.workflow_hash = "h1";
  run.workflow_content = "name: nightly\n";
  run.params = {{"lr", 0.5}};
  run.host = "box";
  run.command_line = "kiln run nightly.yaml";
  run.runner = RunnerIdentity{"box", 100, 1};
  run.started_ms = 1000;
  for (const std::string& id : ids) {
    run.steps.push_back({id, "task", "echo " + id,
                         run.steps.empty() ? std::vector<std::string>{} : std::vector<std::string>{run.steps.back().id},
                         "/flows"});
  }
  Expected<RunRecord> created = store.create_run(run);
  REQUIRE_MESSAGE(created.ok(), (created.ok() ? "" : created.error()));
  return std::move(created).value();
}

/// One attempt of the step, ended with `exit_code`.
void attempt(TrackerStore& store, std::int64_t run, const std::string& step, int number, int exit_code,
             std::int64_t at_ms) {
  check(store.begin_attempt(run, step, number, AttemptStart{1, "local", "pid:1", at_ms, "", ""}));
  StepEnd end{exit_code == 0 ? StepStatus::succeeded : StepStatus::failed, exit_code == 0 ? "" : "exit 1"};
  check(store.end_attempt(run, step, number, AttemptEnd{exit_code, 0, false, at_ms + 10, ""}, &end));
}

std::map<std::string, std::string> run_tags(TrackerStore& store, std::int64_t run) {
  Expected<std::vector<KeyValue>> tags = store.tags(run);
  REQUIRE(tags.ok());
  std::map<std::string, std::string> out;
  for (const KeyValue& tag : *tags) {
    if (tag.step_id.empty()) {
      out[tag.key] = tag.value;
    }
  }
  return out;
}

std::vector<NewStep> steps_of(const std::vector<std::string>& ids) {
  std::vector<NewStep> steps;
  for (const std::string& id : ids) {
    steps.push_back(
        {id, "task", "", steps.empty() ? std::vector<std::string>{} : std::vector<std::string>{steps.back().id}, ""});
  }
  return steps;
}

RunReopen reopen_as(const std::vector<std::string>& ids) {
  RunReopen reopen;
  reopen.runner = RunnerIdentity{"box", 200, 2};
  reopen.command_line = "kiln resume 1";
  reopen.steps = steps_of(ids);
  return reopen;
}

} // namespace

TEST_SUITE("core::TrackerStore") {

  TEST_CASE("reopen_run continues a failed run in place, keeping what succeeded") {
    TempDir temp;
    auto opened = TrackerStore::open(temp.path() / "store");
    REQUIRE(opened.ok());
    TrackerStore& store = **opened;
    const std::vector<std::string> ids = {"prep", "feat", "train", "eval"};
    RunRecord run = start_run(store, ids);
    attempt(store, run.number, "prep", 1, 0, 1100);
    check(store.set_step_status(run.number, "feat", StepStatus::cached, 1200, "unchanged since run 7"));
    attempt(store, run.number, "train", 1, 1, 1300);
    attempt(store, run.number, "train", 2, 1, 1400);
    check(store.set_step_status(run.number, "eval", StepStatus::skipped, 1500, "needs 'train', which failed"));
    check(store.finish_run(run.number, RunStatus::failed, 1, 1500));
    // Pushed as it was.
    check(store.set_push_record(PushRecord{run.number, std::string(k_remote), "exp", PushState::synced, "", 1600}));
    for (const std::string step : {"", "prep", "train"}) {
      RemoteRunState state;
      state.step = step;
      state.experiment_id = "1";
      state.remote_id = "r-" + step;
      state.params_sent = 1;
      state.tags_sent = 5;
      state.points_series = 3;
      state.points_seq = 9;
      state.points_sent = 10;
      state.finished = true;
      check(store.save_remote_run(k_remote, run.number, state));
    }
    check(store.mark_remote_artifact(k_remote, run.number, "prep", "data.csv"));
    check(store.mark_remote_artifact(k_remote, run.number, "train", "model.pkl"));

    Expected<RunRecord> reopened = store.reopen_run(run.number, reopen_as(ids));
    REQUIRE_MESSAGE(reopened.ok(), (reopened.ok() ? "" : reopened.error()));
    CHECK(reopened->status == RunStatus::running);
    CHECK_FALSE(reopened->exit_code.has_value());
    CHECK_FALSE(reopened->ended_ms.has_value());
    CHECK(reopened->started_ms == 1000);
    CHECK(reopened->runner.pid == 200);
    CHECK(reopened->runner.start_ticks == 2);
    CHECK(reopened->command_line == "kiln run nightly.yaml");
    CHECK(reopened->workflow_hash == "h1");
    CHECK(reopened->steps.succeeded == 1);
    CHECK(reopened->steps.cached == 1);
    CHECK(reopened->steps.pending == 2);

    Expected<std::vector<StepRecord>> steps = store.steps(run.number);
    REQUIRE(steps.ok());
    REQUIRE(steps->size() == 4);
    const StepRecord& prep = (*steps)[0];
    CHECK(prep.status == StepStatus::succeeded);
    CHECK(prep.ended_ms == 1110);
    CHECK(prep.attempts == 1);
    CHECK((*steps)[1].status == StepStatus::cached);
    CHECK((*steps)[1].reason == "unchanged since run 7");
    const StepRecord& train = (*steps)[2];
    CHECK(train.status == StepStatus::pending);
    CHECK(train.reason.empty());
    CHECK_FALSE(train.ended_ms.has_value());
    CHECK(train.started_ms == 1300);
    CHECK(train.attempts == 2);
    CHECK(train.command == "echo train");
    CHECK((*steps)[3].status == StepStatus::pending);
    CHECK((*steps)[3].reason.empty());
    Expected<std::vector<AttemptRecord>> attempts = store.attempts(run.number);
    REQUIRE(attempts.ok());
    CHECK(attempts->size() == 3);

    std::map<std::string, std::string> tags = run_tags(store, run.number);
    CHECK(tags["kiln.resumed"] == "1");
    CHECK(tags["kiln.resume.command"] == "kiln resume 1");
    CHECK(tags["kiln.command"] == "kiln run nightly.yaml");

    // The remote copy of the run and of the reset steps is to be sent again;
    // what stands is left as it was sent.
    Expected<std::vector<RemoteRunState>> remote = store.remote_runs(k_remote, run.number);
    REQUIRE(remote.ok());
    REQUIRE(remote->size() == 3);
    std::map<std::string, RemoteRunState> by_step;
    for (const RemoteRunState& state : *remote) {
      by_step[state.step] = state;
    }
    CHECK_FALSE(by_step[""].finished);
    CHECK(by_step[""].tags_sent == 0);
    CHECK(by_step[""].points_sent == 10);
    CHECK(by_step["prep"].finished);
    CHECK(by_step["prep"].tags_sent == 5);
    CHECK_FALSE(by_step["train"].finished);
    CHECK(by_step["train"].params_sent == 1);
    CHECK(by_step["train"].points_series == 0);
    CHECK(by_step["train"].points_seq == -1);
    CHECK(by_step["train"].points_sent == 0);
    Expected<std::vector<std::string>> prep_artifacts = store.remote_artifacts(k_remote, run.number, "prep");
    Expected<std::vector<std::string>> train_artifacts = store.remote_artifacts(k_remote, run.number, "train");
    REQUIRE(prep_artifacts.ok());
    REQUIRE(train_artifacts.ok());
    CHECK(prep_artifacts->size() == 1);
    CHECK(train_artifacts->empty());
    Expected<std::vector<PushRecord>> pushes = store.push_records(run.number);
    REQUIRE(pushes.ok());
    REQUIRE(pushes->size() == 1);
    CHECK(pushes->front().state == PushState::pending);

    // New attempts number after the old ones; a second resume counts.
    attempt(store, run.number, "train", 3, 1, 2000);
    check(store.finish_run(run.number, RunStatus::failed, 1, 2100));
    REQUIRE(store.reopen_run(run.number, reopen_as(ids)).ok());
    CHECK(run_tags(store, run.number)["kiln.resumed"] == "2");
  }

  TEST_CASE("reopen_run refuses running and succeeded runs and lost steps, changing nothing") {
    TempDir temp;
    auto opened = TrackerStore::open(temp.path() / "store");
    REQUIRE(opened.ok());
    TrackerStore& store = **opened;
    RunRecord running = start_run(store, {"a"});
    Expected<RunRecord> refused = store.reopen_run(running.number, reopen_as({"a"}));
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error() ==
          "run 1 is still running (kiln pid 100 on box); only a failed, cancelled or crashed run can be resumed");

    check(store.finish_run(running.number, RunStatus::succeeded, 0, 1200));
    refused = store.reopen_run(running.number, reopen_as({"a"}));
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error() == "run 1 succeeded: there is nothing to resume");

    RunRecord failed = start_run(store, {"a", "b", "c"});
    attempt(store, failed.number, "a", 1, 1, 1100);
    check(store.finish_run(failed.number, RunStatus::failed, 1, 1200));
    refused = store.reopen_run(failed.number, reopen_as({"a"}));
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error() == "run 2 has steps 'b', 'c', which the workflow no longer has");
    Expected<RunRecord> unchanged = store.run(failed.number);
    REQUIRE(unchanged.ok());
    CHECK(unchanged->status == RunStatus::failed);
    CHECK(unchanged->runner.pid == 100);
    CHECK(unchanged->steps.failed == 1);
    CHECK(run_tags(store, failed.number).count("kiln.resumed") == 0);

    CHECK_FALSE(store.reopen_run(99, reopen_as({"a"})).ok());
  }

  TEST_CASE("reopen_run with a changed workflow records it and adds its new steps") {
    TempDir temp;
    auto opened = TrackerStore::open(temp.path() / "store");
    REQUIRE(opened.ok());
    TrackerStore& store = **opened;
    RunRecord run = start_run(store, {"a", "b"});
    attempt(store, run.number, "a", 1, 0, 1100);
    attempt(store, run.number, "b", 1, 1, 1200);
    check(store.finish_run(run.number, RunStatus::failed, 1, 1300));

    RunReopen reopen = reopen_as({"a", "fix", "b"});
    reopen.workflow_content = "name: nightly\n# fixed\n";
    reopen.workflow_hash = "h2";
    Expected<RunRecord> reopened = store.reopen_run(run.number, reopen);
    REQUIRE_MESSAGE(reopened.ok(), (reopened.ok() ? "" : reopened.error()));
    CHECK(reopened->workflow_hash == "h2");
    Expected<std::string> content = store.workflow_content(run.number);
    REQUIRE(content.ok());
    CHECK(*content == "name: nightly\n# fixed\n");
    CHECK(run_tags(store, run.number)["kiln.workflow.hash"] == "h2");

    Expected<std::vector<StepRecord>> steps = store.steps(run.number);
    REQUIRE(steps.ok());
    REQUIRE(steps->size() == 3);
    CHECK((*steps)[0].id == "a");
    CHECK((*steps)[0].status == StepStatus::succeeded);
    CHECK((*steps)[1].id == "fix");
    CHECK((*steps)[1].status == StepStatus::pending);
    CHECK((*steps)[1].needs == std::vector<std::string>{"a"});
    CHECK((*steps)[2].id == "b");
    CHECK((*steps)[2].needs == std::vector<std::string>{"fix"});
    CHECK((*steps)[2].status == StepStatus::pending);
    CHECK((*steps)[2].attempts == 1);
  }
}
