// TrackerStore::replay_run: a run recorded as a repeat of one whose steps
// were all cached, in one transaction, and only while a rerun would still
// decide the same. Real store files; kiln run's e2e test (replay.sh) covers
// the basis and the files it rests on.

#include "core/run_status.hpp"
#include "core/tracker_store.hpp"
#include "tests/core/cache_fixtures.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using kiln::test::check;
using kiln::test::executed;
using kiln::test::flow_run;
using kiln::test::ok;
using kiln::test::start_run;
using kiln::test::TempDir;

using namespace kiln::core;

namespace {

/// Every step of `run` found cached from `from`, and the run succeeded.
std::int64_t all_cached(TrackerStore& store, const std::vector<std::string>& ids, std::int64_t from) {
  const std::int64_t run = start_run(store, "train", ids);
  std::vector<CacheDecision> decisions;
  for (const std::string& id : ids) {
    CacheDecision d{id, StepCache{"key-" + id, "", from}, id};
    d.settled = true;
    d.settled_ms = 1500;
    d.reason = "unchanged since run " + std::to_string(from);
    decisions.push_back(std::move(d));
  }
  check(store.record_cache_decisions(run, decisions));
  check(store.finish_run(run, RunStatus::succeeded, 0, 2000));
  return run;
}

std::int64_t run_count(TrackerStore& store) {
  return static_cast<std::int64_t>(ok(store.list_runs(RunFilter{})).size());
}

} // namespace

TEST_CASE("replay_run records a repeat of a wholly cached run, and nothing once a rerun would decide otherwise") {
  TempDir dir;
  auto opened = TrackerStore::open(dir.path() / ".kiln");
  REQUIRE(opened.ok());
  TrackerStore& store = **opened;
  const std::vector<std::string> ids{"prep", "train"};
  const std::int64_t source = start_run(store, "train", ids);
  executed(store, source, "prep", "key-prep");
  executed(store, source, "train", "key-train");
  check(store.set_step_outputs(source, "train", {{"model", "m.pkl"}}));
  check(store.finish_run(source, RunStatus::succeeded, 0, 1100));
  const std::int64_t basis = all_cached(store, ids, source);

  NewRun again = flow_run("train", {});
  again.params = {{"lr", 0.1}};
  again.tags = {{"purpose", "nightly"}};
  int asked = 0;
  const auto unchanged = [&asked] {
    ++asked;
    return true;
  };

  SUBCASE("replayed: the basis's steps, cached from the same source, with what they copied") {
    auto replayed = ok(store.replay_run(again, basis, 3000, unchanged));
    REQUIRE(replayed.has_value());
    CHECK(asked == 1);
    CHECK(replayed->number > basis);
    CHECK(replayed->steps.cached == 2);
    const auto steps = ok(store.steps(replayed->number));
    REQUIRE(steps.size() == 2);
    for (const StepRecord& step : steps) {
      CHECK(step.status == StepStatus::cached);
      CHECK(step.ended_ms == std::optional<std::int64_t>(3000));
      CHECK(step.reason == "unchanged since run " + std::to_string(source));
      auto cache = ok(store.step_cache(replayed->number, step.id));
      REQUIRE(cache.has_value());
      CHECK(cache->key == "key-" + step.id);
      CHECK(cache->cached_from == std::optional<std::int64_t>(source));
    }
    CHECK(ok(store.step_outputs(replayed->number, "train")) == KeyValues{{"model", "m.pkl"}});
    const auto params = ok(store.params(replayed->number));
    REQUIRE(params.size() == 1);
    CHECK(params[0].key == "lr");
    const auto tags = ok(store.tags(replayed->number));
    CHECK(std::any_of(tags.begin(), tags.end(), [](const KeyValue& tag) {
      return tag.step_id.empty() && tag.key == "purpose" && tag.value == "nightly";
    }));
    // Left running for the caller to finish.
    CHECK(ok(store.run(replayed->number)).status == RunStatus::running);
  }

  SUBCASE("a file changed: rolled back, no run recorded") {
    const std::int64_t before = run_count(store);
    auto replayed = ok(store.replay_run(again, basis, 3000, [&asked] {
      ++asked;
      return false;
    }));
    CHECK_FALSE(replayed.has_value());
    CHECK(asked == 1);
    CHECK(run_count(store) == before);
  }

  SUBCASE("a keyed step succeeded since, in any workflow: a newer source, so not replayed") {
    const std::int64_t other = start_run(store, "other", {"fit"});
    executed(store, other, "fit", "key-fit");
    CHECK_FALSE(ok(store.replay_run(again, basis, 3000, unchanged)).has_value());
    CHECK(asked == 0);
  }

  SUBCASE("a source run deleted: not replayed") {
    (void)ok(store.delete_runs({source}));
    CHECK_FALSE(ok(store.replay_run(again, basis, 3000, unchanged)).has_value());
    CHECK(asked == 0);
  }

  SUBCASE("a run whose steps executed, or that failed, is no basis") {
    CHECK_FALSE(ok(store.replay_run(again, source, 3000, unchanged)).has_value());
    const std::int64_t failed = all_cached(store, ids, source);
    check(store.finish_run(failed, RunStatus::failed, 1, 2100));
    CHECK_FALSE(ok(store.replay_run(again, failed, 3000, unchanged)).has_value());
    CHECK(asked == 0);
  }
}
