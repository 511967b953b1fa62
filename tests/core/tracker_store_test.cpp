#include "core/tracker_store.hpp"
#include "tests/support.hpp"

#include "core/sqlite.hpp"

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
using kiln::test::check;
using kiln::test::ok;
using kiln::test::TempDir;

namespace fs = std::filesystem;
using namespace kiln::core;

namespace {

std::unique_ptr<TrackerStore> open_store(const fs::path& dir) {
  Expected<std::unique_ptr<TrackerStore>> store = TrackerStore::open(dir);
  REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error()));
  return std::move(store).value();
}

NewRun make_run(std::string name = "train", std::string host = "box", int steps = 2) {
  NewRun run;
  run.workflow_name = std::move(name);
  run.workflow_file = "/work/flows/train.yaml";
  run.workflow_hash = "abc123";
  run.workflow_content = "name: train\nsteps: []\n";
  run.params = {{"lr", 0.01}, {"epochs", 3}, {"tag", "x"}, {"fast", true}};
  run.user = "ada";
  run.host = host;
  run.git_commit = "deadbeef";
  run.git_branch = "main";
  run.git_dirty = true;
  run.kiln_version = "0.1.0";
  run.command_line = "kiln run train.yaml";
  run.runner = RunnerIdentity{host, 4242, 987654};
  run.started_ms = 1000;
  for (int i = 0; i < steps; ++i) {
    NewStep step;
    step.id = "s" + std::to_string(i);
    step.kind = "task";
    step.command = "echo " + std::to_string(i);
    if (i > 0) {
      step.needs.push_back("s" + std::to_string(i - 1));
    }
    run.steps.push_back(std::move(step));
  }
  return run;
}

RunRecord create(TrackerStore& store, const NewRun& run) {
  Expected<RunRecord> created = store.create_run(run);
  REQUIRE_MESSAGE(created.ok(), (created.ok() ? "" : created.error()));
  return std::move(created).value();
}

/// Rewrites the schema version behind the store's back.
void set_user_version(const fs::path& db, int version) {
  Expected<sqlite::Database> database = sqlite::Database::open(db);
  REQUIRE(database.ok());
  REQUIRE(database->exec("PRAGMA user_version = " + std::to_string(version)).ok());
}

} // namespace

TEST_SUITE("core::TrackerStore") {

  TEST_CASE("discover finds the nearest .kiln directory, else cwd/.kiln") {
    TempDir temp;
    fs::path deep = temp.path() / "a" / "b" / "c";
    fs::create_directories(deep);
    CHECK(TrackerStore::discover(deep) == deep / ".kiln");

    fs::create_directories(temp.path() / "a" / ".kiln");
    CHECK(TrackerStore::discover(deep) == temp.path() / "a" / ".kiln");
    CHECK(TrackerStore::discover(temp.path() / "a") == temp.path() / "a" / ".kiln");

    fs::create_directories(deep / ".kiln");
    CHECK(TrackerStore::discover(deep) == deep / ".kiln");
  }

  TEST_CASE("open creates the directory and database; reopening keeps the runs") {
    TempDir temp;
    fs::path dir = temp.path() / "nested" / ".kiln";
    {
      auto store = open_store(dir);
      CHECK(store->directory() == dir);
      CHECK(fs::exists(dir / "kiln.db"));
      create(*store, make_run());
    }
    auto store = open_store(dir);
    Expected<std::vector<RunRecord>> runs = store->list_runs({});
    REQUIRE(runs.ok());
    REQUIRE(runs->size() == 1);
    CHECK(runs->front().number == 1);
    CHECK(create(*store, make_run()).number == 2);
  }

  TEST_CASE("a store with a newer schema is refused with a clear message") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    { open_store(dir); }
    set_user_version(dir / "kiln.db", TrackerStore::schema_version() + 7);

    Expected<std::unique_ptr<TrackerStore>> store = TrackerStore::open(dir);
    REQUIRE_FALSE(store.ok());
    const std::string& message = store.error();
    CHECK(message.find((dir / "kiln.db").string()) != std::string::npos);
    CHECK(message.find(std::to_string(TrackerStore::schema_version() + 7)) != std::string::npos);
    CHECK(message.find(std::to_string(TrackerStore::schema_version())) != std::string::npos);
    CHECK(message.find("upgrade kiln") != std::string::npos);
  }

  TEST_CASE("an unmigrated store is migrated on open") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    fs::create_directories(dir);
    {
      // An empty SQLite file at version 0, as a crash before the first
      // migration committed would leave it.
      Expected<sqlite::Database> database = sqlite::Database::open(dir / "kiln.db");
      REQUIRE(database.ok());
      REQUIRE(database->exec("PRAGMA journal_mode = WAL").ok());
    }
    auto store = open_store(dir);
    CHECK(create(*store, make_run()).number == 1);
    Expected<sqlite::Database> database = sqlite::Database::open(dir / "kiln.db");
    REQUIRE(database.ok());
    Expected<std::int64_t> version = database->query_int64("PRAGMA user_version");
    REQUIRE(version.ok());
    CHECK(*version == TrackerStore::schema_version());
  }

  TEST_CASE("create, list and filter runs") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");

    NewRun first = make_run("train");
    RunRecord one = create(*store, first);
    CHECK(one.number == 1);
    CHECK(one.id.size() == 32);
    CHECK(one.status == RunStatus::running);
    CHECK(one.steps.pending == 2);

    NewRun second = make_run("eval");
    second.started_ms = 5000;
    RunRecord two = create(*store, second);
    CHECK(two.number == 2);
    CHECK(two.id != one.id);
    check(store->finish_run(2, RunStatus::failed, 1, 6000));

    Expected<std::vector<RunRecord>> all = store->list_runs({});
    REQUIRE(all.ok());
    REQUIRE(all->size() == 2);
    CHECK((*all)[0].number == 2);
    CHECK((*all)[1].number == 1);

    const RunRecord& stored = (*all)[1];
    CHECK(stored.id == one.id);
    CHECK(stored.workflow_name == "train");
    CHECK(stored.workflow_file == first.workflow_file);
    CHECK(stored.workflow_hash == first.workflow_hash);
    CHECK(stored.params == first.params);
    CHECK(stored.params["epochs"].is_number_integer());
    CHECK(stored.status == RunStatus::running);
    CHECK_FALSE(stored.exit_code.has_value());
    CHECK(stored.started_ms == 1000);
    CHECK_FALSE(stored.ended_ms.has_value());
    CHECK(stored.user == "ada");
    CHECK(stored.host == "box");
    CHECK(stored.git_commit == "deadbeef");
    CHECK(stored.git_branch == "main");
    CHECK(stored.git_dirty);
    CHECK(stored.kiln_version == "0.1.0");
    CHECK(stored.command_line == "kiln run train.yaml");
    CHECK(stored.runner.host == "box");
    CHECK(stored.runner.pid == 4242);
    CHECK(stored.runner.start_ticks == 987654);
    CHECK(stored.steps.pending == 2);
    CHECK(stored.steps.total() == 2);

    const RunRecord& finished = (*all)[0];
    CHECK(finished.status == RunStatus::failed);
    CHECK(finished.exit_code == 1);
    CHECK(finished.ended_ms == 6000);

    RunFilter by_workflow;
    by_workflow.workflow = "train";
    Expected<std::vector<RunRecord>> trains = store->list_runs(by_workflow);
    REQUIRE(trains.ok());
    REQUIRE(trains->size() == 1);
    CHECK(trains->front().number == 1);

    RunFilter by_status;
    by_status.status = RunStatus::failed;
    Expected<std::vector<RunRecord>> failed = store->list_runs(by_status);
    REQUIRE(failed.ok());
    REQUIRE(failed->size() == 1);
    CHECK(failed->front().number == 2);

    RunFilter since;
    since.since_ms = 2000;
    Expected<std::vector<RunRecord>> recent = store->list_runs(since);
    REQUIRE(recent.ok());
    REQUIRE(recent->size() == 1);
    CHECK(recent->front().number == 2);

    create(*store, make_run("train"));
    RunFilter limited;
    limited.limit = 2;
    limited.workflow = "train";
    Expected<std::vector<RunRecord>> newest = store->list_runs(limited);
    REQUIRE(newest.ok());
    REQUIRE(newest->size() == 2);
    CHECK((*newest)[0].number == 3);
    CHECK((*newest)[1].number == 1);

    Expected<std::string> content = store->workflow_content(1);
    REQUIRE(content.ok());
    CHECK(*content == first.workflow_content);
  }

  TEST_CASE("create_run with steps_of: the steps it makes from the run's number and id, or nothing at all") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    create(*store, make_run("train"));

    NewRun run = make_run("train");
    std::int64_t seen_number = 0;
    std::string seen_id;
    Expected<RunRecord> made = store->create_run(run, [&](std::int64_t number, const std::string& id) {
      seen_number = number;
      seen_id = id;
      std::vector<NewStep> steps;
      steps.push_back({"only", "train", "python train.py --run " + std::to_string(number), {}, "/work/" + id});
      return Expected<std::vector<NewStep>>(std::move(steps));
    });
    REQUIRE_MESSAGE(made.ok(), (made.ok() ? "" : made.error()));
    CHECK(seen_number == 2);
    CHECK(made->number == 2);
    CHECK(seen_id == made->id);
    CHECK(made->steps.pending == 1);
    // The made steps replace run.steps, with their commands and workdirs.
    auto steps = ok(store->steps(2));
    REQUIRE(steps.size() == 1);
    CHECK(steps[0].id == "only");
    CHECK(steps[0].kind == "train");
    CHECK(steps[0].command == "python train.py --run 2");
    CHECK(steps[0].workdir == "/work/" + made->id);
    CHECK(steps[0].status == StepStatus::pending);

    // A failure records nothing: no run, no steps, no number used up by a
    // visible run.
    Expected<RunRecord> refused = store->create_run(
        run, [](std::int64_t, const std::string&) -> Expected<std::vector<NewStep>> { return Error{"bad plan"}; });
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error() == "bad plan");
    auto runs = ok(store->list_runs({}));
    CHECK(runs.size() == 2);
    auto none = store->steps(3);
    REQUIRE_FALSE(none.ok());
    CHECK(none.error().find("no run 3") != std::string::npos);
  }

  TEST_CASE("a settled cache decision records the step cached in the same write; an unsettled one leaves its status") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    RunRecord first = create(*store, make_run("train"));
    RunRecord second = create(*store, make_run("train"));
    CacheDecision settled{"s0", StepCache{"k0", "", first.number}, "s0"};
    settled.settled = true;
    settled.settled_ms = 1234;
    settled.reason = "unchanged since run 1";
    CacheDecision unsettled{"s1", StepCache{"k1", "{}", std::nullopt}, ""};
    check(store->record_cache_decisions(second.number, {settled, unsettled}));
    auto steps = ok(store->steps(second.number));
    REQUIRE(steps.size() == 2);
    CHECK(steps[0].status == StepStatus::cached);
    CHECK(steps[0].ended_ms == std::optional<std::int64_t>(1234));
    CHECK_FALSE(steps[0].started_ms.has_value());
    CHECK(steps[0].reason == "unchanged since run 1");
    CHECK(steps[1].status == StepStatus::pending);
    CHECK_FALSE(steps[1].ended_ms.has_value());
    CHECK(steps[1].reason.empty());
    auto cache = ok(store->step_cache(second.number, "s0"));
    REQUIRE(cache.has_value());
    CHECK(cache->key == "k0");
    CHECK(cache->cached_from == std::optional<std::int64_t>(first.number));
  }

  TEST_CASE("resolve_run by last, number, id and prefix, with clear errors") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");

    Expected<RunRecord> none = store->resolve_run("last");
    REQUIRE_FALSE(none.ok());
    CHECK(none.error().find("no runs yet") != std::string::npos);

    // Enough runs that some share a first hex digit (16 digits, 40 runs).
    std::vector<RunRecord> runs;
    for (int i = 0; i < 40; ++i) {
      runs.push_back(create(*store, make_run()));
    }

    Expected<RunRecord> last = store->resolve_run("last");
    REQUIRE(last.ok());
    CHECK(last->number == 40);

    Expected<RunRecord> twelve = store->resolve_run("12");
    REQUIRE(twelve.ok());
    CHECK(twelve->id == runs[11].id);

    Expected<RunRecord> by_id = store->resolve_run(runs[4].id);
    REQUIRE(by_id.ok());
    CHECK(by_id->number == 5);

    // The shortest prefix of run 7's id that no other id shares.
    const std::string& id = runs[6].id;
    std::size_t length = 1;
    auto shared = [&](std::size_t n) {
      for (const RunRecord& other : runs) {
        if (other.number != 7 && other.id.compare(0, n, id, 0, n) == 0) {
          return true;
        }
      }
      return false;
    };
    while (shared(length)) {
      ++length;
    }
    std::string unique_prefix = id.substr(0, length);
    bool digits_only = unique_prefix.find_first_not_of("0123456789") == std::string::npos;
    if (!digits_only || length >= 4) {
      Expected<RunRecord> by_prefix = store->resolve_run(unique_prefix);
      REQUIRE_MESSAGE(by_prefix.ok(), unique_prefix);
      CHECK(by_prefix->number == 7);
    }
    std::string upper = id.substr(0, 12);
    for (char& c : upper) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    Expected<RunRecord> by_upper = store->resolve_run(upper);
    REQUIRE(by_upper.ok());
    CHECK(by_upper->number == 7);

    // A one-letter prefix shared by several runs (40 ids over 6 letters a-f
    // and 10 digits: some letter is shared, by pigeonhole over 16 buckets).
    std::string ambiguous;
    std::vector<std::int64_t> sharing;
    for (char letter : std::string("abcdef")) {
      std::vector<std::int64_t> numbers;
      for (const RunRecord& run : runs) {
        if (run.id[0] == letter) {
          numbers.push_back(run.number);
        }
      }
      if (numbers.size() >= 2) {
        ambiguous = std::string(1, letter);
        sharing = numbers;
        break;
      }
    }
    REQUIRE_FALSE(ambiguous.empty());
    Expected<RunRecord> several = store->resolve_run(ambiguous);
    REQUIRE_FALSE(several.ok());
    CHECK(several.error().find("'" + ambiguous + "' is ambiguous: runs " + std::to_string(sharing[0]) +
                               (sharing.size() == 2 ? " and " : ", ") + std::to_string(sharing[1])) == 0);

    Expected<RunRecord> missing = store->resolve_run("999");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error() == "no run matches '999'");
    Expected<RunRecord> nonsense = store->resolve_run("zz-top");
    REQUIRE_FALSE(nonsense.ok());
    CHECK(nonsense.error() == "no run matches 'zz-top'");
  }

  TEST_CASE("step and attempt lifecycle round-trips") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    RunRecord run = create(*store, make_run("train", "box", 3));

    check(store->set_step_status(run.number, "s0", StepStatus::running, 1100));
    AttemptStart start{111, "local", "pid:111", 1100, "/logs/s0.1.out", "/logs/s0.1.err"};
    check(store->begin_attempt(run.number, "s0", 1, start));
    check(store->end_attempt(run.number, "s0", 1, AttemptEnd{2, 0, false, 1200, ""}));
    AttemptStart retry{112, "local", "pid:112", 1300, "/logs/s0.2.out", "/logs/s0.2.err"};
    check(store->begin_attempt(run.number, "s0", 2, retry));
    check(store->end_attempt(run.number, "s0", 2, AttemptEnd{0, 0, false, 1400, ""}));
    check(store->set_step_status(run.number, "s0", StepStatus::succeeded, 1400));

    check(store->set_step_status(run.number, "s1", StepStatus::running, 1500));
    check(store->begin_attempt(run.number, "s1", 1, AttemptStart{113, "local", "pid:113", 1500, "", ""}));
    check(store->end_attempt(run.number, "s1", 1, AttemptEnd{std::nullopt, 9, true, 1600, ""}));
    check(store->set_step_status(run.number, "s1", StepStatus::failed, 1600, "timed out after 0.1s"));
    check(store->set_step_status(run.number, "s2", StepStatus::skipped, 1600, "s1 failed"));
    check(store->finish_run(run.number, RunStatus::failed, 1, 1700));

    Expected<std::vector<StepRecord>> steps = store->steps(run.number);
    REQUIRE(steps.ok());
    REQUIRE(steps->size() == 3);
    const StepRecord& s0 = (*steps)[0];
    CHECK(s0.id == "s0");
    CHECK(s0.kind == "task");
    CHECK(s0.command == "echo 0");
    CHECK(s0.needs.empty());
    CHECK(s0.status == StepStatus::succeeded);
    CHECK(s0.started_ms == 1100);
    CHECK(s0.ended_ms == 1400);
    CHECK(s0.attempts == 2);
    CHECK(s0.reason.empty());
    const StepRecord& s1 = (*steps)[1];
    CHECK(s1.needs == std::vector<std::string>{"s0"});
    CHECK(s1.status == StepStatus::failed);
    CHECK(s1.reason == "timed out after 0.1s");
    CHECK(s1.attempts == 1);
    const StepRecord& s2 = (*steps)[2];
    CHECK(s2.status == StepStatus::skipped);
    CHECK_FALSE(s2.started_ms.has_value());
    CHECK(s2.ended_ms == 1600);
    CHECK(s2.attempts == 0);

    Expected<std::vector<AttemptRecord>> attempts = store->attempts(run.number);
    REQUIRE(attempts.ok());
    REQUIRE(attempts->size() == 3);
    const AttemptRecord& first = (*attempts)[0];
    CHECK(first.step_id == "s0");
    CHECK(first.number == 1);
    CHECK(first.start.pid == 111);
    CHECK(first.start.executor == "local");
    CHECK(first.start.handle == "pid:111");
    CHECK(first.start.stdout_path == "/logs/s0.1.out");
    CHECK(first.start.stderr_path == "/logs/s0.1.err");
    REQUIRE(first.end.has_value());
    CHECK(first.end->exit_code == 2);
    CHECK(first.end->ended_ms == 1200);
    CHECK((*attempts)[1].number == 2);
    const AttemptRecord& killed = (*attempts)[2];
    CHECK(killed.step_id == "s1");
    REQUIRE(killed.end.has_value());
    CHECK_FALSE(killed.end->exit_code.has_value());
    CHECK(killed.end->signal == 9);
    CHECK(killed.end->timed_out);

    Expected<RunRecord> finished = store->resolve_run("last");
    REQUIRE(finished.ok());
    CHECK(finished->status == RunStatus::failed);
    CHECK(finished->steps.succeeded == 1);
    CHECK(finished->steps.failed == 1);
    CHECK(finished->steps.skipped == 1);

    // JSON: stable names, statuses as text, null when absent.
    nlohmann::json run_json = *finished;
    CHECK(run_json["status"] == "failed");
    CHECK(run_json["exit_code"] == 1);
    CHECK(run_json["ended_ms"] == 1700);
    CHECK(run_json["duration_ms"] == 700);
    CHECK(run_json["steps"]["total"] == 3);
    CHECK(run_json["runner"]["pid"] == 4242);
    nlohmann::json step_json = (*steps)[2];
    CHECK(step_json["status"] == "skipped");
    CHECK(step_json["started_ms"].is_null());
    CHECK(step_json["reason"] == "s1 failed");
    nlohmann::json attempt_json = killed;
    CHECK(attempt_json["exit_code"].is_null());
    CHECK(attempt_json["signal"] == 9);
    CHECK(attempt_json["timed_out"] == true);
    CHECK(attempt_json["error"].is_null());
  }

  TEST_CASE("writes name what they could not find") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    RunRecord run = create(*store, make_run());

    Expected<void> no_step = store->set_step_status(run.number, "nope", StepStatus::running, 1);
    REQUIRE_FALSE(no_step.ok());
    CHECK(no_step.error() == "run 1 has no step 'nope'");
    CHECK_FALSE(store->begin_attempt(run.number, "nope", 1, AttemptStart{}).ok());
    CHECK_FALSE(store->end_attempt(run.number, "s0", 1, AttemptEnd{}).ok());
    CHECK_FALSE(store->finish_run(99, RunStatus::succeeded, 0, 1).ok());
    check(store->begin_attempt(run.number, "s0", 1, AttemptStart{}));
    CHECK_FALSE(store->begin_attempt(run.number, "s0", 1, AttemptStart{}).ok());
    CHECK_FALSE(store->steps(99).ok());

    NewRun duplicate = make_run();
    duplicate.steps.push_back(duplicate.steps.front());
    CHECK_FALSE(store->create_run(duplicate).ok());
    // The failed create left nothing behind.
    Expected<std::vector<RunRecord>> runs = store->list_runs({});
    REQUIRE(runs.ok());
    CHECK(runs->size() == 1);
  }

  TEST_CASE("log paths live under the store") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");
    CHECK(store->log_path("abc", "train", 2, "err") == temp.path() / ".kiln" / "logs" / "abc" / "train.2.err");
  }

  TEST_CASE("recover_crashed marks dead runners' runs crashed and returns open attempts") {
    TempDir temp;
    auto store = open_store(temp.path() / ".kiln");

    NewRun dead_run = make_run("train", "box", 3);
    dead_run.runner.pid = 100;
    RunRecord dead = create(*store, dead_run);
    check(store->set_step_status(dead.number, "s0", StepStatus::succeeded, 1100));
    check(store->set_step_status(dead.number, "s1", StepStatus::running, 1200));
    check(store->begin_attempt(dead.number, "s1", 1, AttemptStart{555, "local", "pid:555", 1200, "", ""}));

    NewRun live_run = make_run("train", "box", 1);
    live_run.runner.pid = 200;
    RunRecord live = create(*store, live_run);

    NewRun elsewhere_run = make_run("train", "other", 1);
    elsewhere_run.runner.pid = 100;
    RunRecord elsewhere = create(*store, elsewhere_run);
    check(store->set_step_status(elsewhere.number, "s0", StepStatus::running, 1200));

    NewRun done_run = make_run("train", "box", 1);
    done_run.runner.pid = 100;
    RunRecord done = create(*store, done_run);
    check(store->finish_run(done.number, RunStatus::succeeded, 0, 1300));

    std::vector<std::int64_t> asked;
    auto alive = [&](const RunnerIdentity& runner) {
      asked.push_back(runner.pid);
      return runner.pid != 100;
    };
    Expected<std::vector<OrphanAttempt>> orphans = store->recover_crashed("box", alive, 9000);
    REQUIRE(orphans.ok());
    REQUIRE(orphans->size() == 1);
    const OrphanAttempt& orphan = orphans->front();
    CHECK(orphan.run_number == dead.number);
    CHECK(orphan.run_id == dead.id);
    CHECK(orphan.step_id == "s1");
    CHECK(orphan.attempt == 1);
    CHECK(orphan.executor == "local");
    CHECK(orphan.handle == "pid:555");
    CHECK(asked == std::vector<std::int64_t>{100, 200});

    Expected<RunRecord> crashed = store->run(dead.number);
    REQUIRE(crashed.ok());
    CHECK(crashed->status == RunStatus::crashed);
    CHECK_FALSE(crashed->exit_code.has_value());
    // Ended when the store last heard from it (attempt 1 began at 1200), not
    // at recovery time.
    CHECK(crashed->ended_ms == 1200);
    Expected<std::vector<StepRecord>> steps = store->steps(dead.number);
    REQUIRE(steps.ok());
    CHECK((*steps)[0].status == StepStatus::succeeded);
    CHECK((*steps)[1].status == StepStatus::failed);
    CHECK((*steps)[1].reason == "runner died");
    CHECK((*steps)[1].ended_ms == 1200);
    CHECK((*steps)[2].status == StepStatus::cancelled);
    CHECK((*steps)[2].reason == "runner died");
    Expected<std::vector<AttemptRecord>> attempts = store->attempts(dead.number);
    REQUIRE(attempts.ok());
    REQUIRE(attempts->front().end.has_value());
    CHECK(attempts->front().end->ended_ms == 1200);
    CHECK(attempts->front().end->error == "runner died");

    Expected<RunRecord> still = store->run(live.number);
    REQUIRE(still.ok());
    CHECK(still->status == RunStatus::running);
    Expected<RunRecord> other = store->run(elsewhere.number);
    REQUIRE(other.ok());
    CHECK(other->status == RunStatus::running);
    Expected<std::vector<StepRecord>> other_steps = store->steps(elsewhere.number);
    REQUIRE(other_steps.ok());
    CHECK(other_steps->front().status == StepStatus::running);
    Expected<RunRecord> finished = store->run(done.number);
    REQUIRE(finished.ok());
    CHECK(finished->status == RunStatus::succeeded);
    CHECK(finished->ended_ms == 1300);

    // A second recovery finds nothing left to do.
    Expected<std::vector<OrphanAttempt>> again = store->recover_crashed("box", alive, 9500);
    REQUIRE(again.ok());
    CHECK(again->empty());
    Expected<RunRecord> unchanged = store->run(dead.number);
    REQUIRE(unchanged.ok());
    CHECK(unchanged->ended_ms == 1200);
  }

  TEST_CASE("eight processes write to one new store at once") {
    TempDir temp;
    // Not created yet: the children also race to create and migrate it.
    fs::path dir = temp.path() / ".kiln";
    constexpr int k_children = 8;
    constexpr int k_steps = 50; // 4 writes each: 200 updates per child

    // The children wait on this pipe so they start together.
    int gate[2];
    REQUIRE(pipe(gate) == 0);
    std::vector<pid_t> children;
    for (int i = 0; i < k_children; ++i) {
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        close(gate[1]);
        char byte = 0;
        (void)!read(gate[0], &byte, 1);
        auto fail = [](const std::string& what) {
          std::fprintf(stderr, "child %d: %s\n", static_cast<int>(getpid()), what.c_str());
          std::_Exit(1);
        };
        Expected<std::unique_ptr<TrackerStore>> opened = TrackerStore::open(dir);
        if (!opened) {
          fail(opened.error());
        }
        TrackerStore& store = **opened;
        Expected<RunRecord> run = store.create_run(make_run("w", "box", k_steps));
        if (!run) {
          fail(run.error());
        }
        std::int64_t number = run->number;
        for (int s = 0; s < k_steps; ++s) {
          std::string step = "s" + std::to_string(s);
          std::int64_t t = 2000 + s;
          Expected<void> results[] = {
              store.set_step_status(number, step, StepStatus::running, t),
              store.begin_attempt(number, step, 1, AttemptStart{getpid(), "local", "", t, "", ""}),
              store.end_attempt(number, step, 1, AttemptEnd{0, 0, false, t + 1, ""}),
              store.set_step_status(number, step, StepStatus::succeeded, t + 1),
          };
          for (const Expected<void>& result : results) {
            if (!result) {
              fail(result.error());
            }
          }
        }
        Expected<void> finished = store.finish_run(number, RunStatus::succeeded, 0, 9999);
        if (!finished) {
          fail(finished.error());
        }
        std::_Exit(0);
      }
      children.push_back(pid);
    }
    close(gate[0]);
    close(gate[1]);

    int succeeded = 0;
    for (pid_t child : children) {
      int status = 0;
      REQUIRE(waitpid(child, &status, 0) == child);
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        ++succeeded;
      }
    }
    CHECK(succeeded == k_children);

    auto store = open_store(dir);
    Expected<std::vector<RunRecord>> runs = store->list_runs({});
    REQUIRE(runs.ok());
    REQUIRE(runs->size() == static_cast<std::size_t>(k_children));
    std::set<std::int64_t> numbers;
    for (const RunRecord& run : *runs) {
      numbers.insert(run.number);
      CHECK(run.status == RunStatus::succeeded);
      CHECK(run.steps.succeeded == k_steps);
    }
    CHECK(numbers.size() == static_cast<std::size_t>(k_children));
    CHECK(*numbers.begin() == 1);
    CHECK(*numbers.rbegin() == k_children);
  }

  TEST_CASE("a writer killed mid-run leaves a store that opens and recovers") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    { open_store(dir); }
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      close(ready[0]);
      Expected<std::unique_ptr<TrackerStore>> opened = TrackerStore::open(dir);
      if (!opened) {
        std::_Exit(1);
      }
      NewRun run = make_run("w", "box", 2000);
      run.runner.pid = getpid();
      Expected<RunRecord> created = (*opened)->create_run(run);
      if (!created) {
        std::_Exit(1);
      }
      (void)!write(ready[1], "x", 1);
      for (int s = 0;; s = (s + 1) % 2000) {
        std::string step = "s" + std::to_string(s);
        (void)(*opened)->set_step_status(created->number, step, StepStatus::running, s);
        (void)(*opened)->begin_attempt(created->number, step, 1, AttemptStart{1, "local", "", s, "", ""});
      }
    }
    close(ready[1]);
    char byte = 0;
    REQUIRE(read(ready[0], &byte, 1) == 1);
    close(ready[0]);
    usleep(20000); // let it get well into its writes
    kill(child, SIGKILL);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));

    auto store = open_store(dir);
    Expected<RunRecord> run = store->resolve_run("last");
    REQUIRE(run.ok());
    CHECK(run->status == RunStatus::running);
    Expected<std::vector<OrphanAttempt>> orphans = store->recover_crashed(
        "box", [](const RunnerIdentity&) { return false; }, 5);
    REQUIRE(orphans.ok());
    CHECK_FALSE(orphans->empty());
    Expected<RunRecord> crashed = store->run(run->number);
    REQUIRE(crashed.ok());
    CHECK(crashed->status == RunStatus::crashed);
    CHECK(crashed->steps.running == 0);
    CHECK(crashed->steps.pending == 0);
  }

  TEST_CASE("concurrent recoveries handle each crashed run once") {
    TempDir temp;
    fs::path dir = temp.path() / ".kiln";
    constexpr int k_runs = 6;
    {
      auto store = open_store(dir);
      for (int i = 0; i < k_runs; ++i) {
        RunRecord run = create(*store, make_run("w", "box", 2));
        check(store->set_step_status(run.number, "s0", StepStatus::running, 10));
        check(store->begin_attempt(run.number, "s0", 1, AttemptStart{1, "local", "h", 10, "", ""}));
      }
    }
    constexpr int k_children = 4;
    int gate[2];
    REQUIRE(pipe(gate) == 0);
    std::vector<pid_t> children;
    for (int i = 0; i < k_children; ++i) {
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        close(gate[1]);
        char byte = 0;
        (void)!read(gate[0], &byte, 1);
        Expected<std::unique_ptr<TrackerStore>> opened = TrackerStore::open(dir);
        if (!opened) {
          std::_Exit(100);
        }
        Expected<std::vector<OrphanAttempt>> orphans = (*opened)->recover_crashed(
            "box", [](const RunnerIdentity&) { return false; }, 20);
        // The exit status carries how many orphans this process was handed.
        std::_Exit(orphans ? static_cast<int>(orphans->size()) : 100);
      }
      children.push_back(pid);
    }
    close(gate[0]);
    close(gate[1]);
    int handed_out = 0;
    for (pid_t child : children) {
      int status = 0;
      REQUIRE(waitpid(child, &status, 0) == child);
      REQUIRE(WIFEXITED(status));
      REQUIRE(WEXITSTATUS(status) != 100);
      handed_out += WEXITSTATUS(status);
    }
    CHECK(handed_out == k_runs);
    auto store = open_store(dir);
    RunFilter crashed;
    crashed.status = RunStatus::crashed;
    Expected<std::vector<RunRecord>> runs = store->list_runs(crashed);
    REQUIRE(runs.ok());
    CHECK(runs->size() == static_cast<std::size_t>(k_runs));
  }

  TEST_CASE("per-call cost (measured, not asserted)") {
    using Clock = std::chrono::steady_clock;
    TempDir temp;
    Clock::time_point before_open = Clock::now();
    auto store = open_store(temp.path() / ".kiln");
    double open_ms = std::chrono::duration<double, std::milli>(Clock::now() - before_open).count();

    constexpr int k_steps = 1250; // 4 calls each: 5000 calls
    RunRecord run = create(*store, make_run("bench", "box", k_steps));
    std::vector<std::string> ids;
    for (int s = 0; s < k_steps; ++s) {
      ids.push_back("s" + std::to_string(s));
    }
    Clock::time_point start = Clock::now();
    for (int s = 0; s < k_steps; ++s) {
      check(store->set_step_status(run.number, ids[s], StepStatus::running, s));
      check(store->begin_attempt(run.number, ids[s], 1, AttemptStart{1, "local", "", s, "", ""}));
      check(store->end_attempt(run.number, ids[s], 1, AttemptEnd{0, 0, false, s + 1, ""}));
      check(store->set_step_status(run.number, ids[s], StepStatus::succeeded, s + 1));
    }
    double total_us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    MESSAGE("fresh store open: " << open_ms << " ms; " << 4 * k_steps << " updates: " << total_us / 1000 << " ms, "
                                 << total_us / (4 * k_steps) << " us per call");
    Expected<std::vector<RunRecord>> runs = store->list_runs({});
    REQUIRE(runs.ok());
    CHECK(runs->front().steps.succeeded == k_steps);
  }

} // TEST_SUITE
