// CacheIndex: a rerun looks its keys up in the workflow's previous run first
// (one range scan), and asks the store's key index only for what that run
// cannot answer. Real store files; the hits must be the same as the key
// index would give, including after gc removed the run a cached step came from.

#include "core/run_status.hpp"
#include "core/step_decider.hpp"
#include "core/tracker_store.hpp"
#include "tests/core/cache_fixtures.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <limits>
#include <map>
#include <string>
#include <vector>

using kiln::test::check;
using kiln::test::executed;
using kiln::test::start_run;
using kiln::test::TempDir;

using namespace kiln::core;

namespace {

constexpr std::int64_t k_later = std::numeric_limits<std::int64_t>::max();

/// The step was found cached: `key` stands for its execution in `from`.
void cached(TrackerStore& store, std::int64_t run, const std::string& step, const std::string& key, std::int64_t from) {
  check(store.record_cache_decisions(run, {CacheDecision{step, StepCache{key, "", from}, step}}));
  check(store.set_step_statuses(run, {{step, StepStatus::cached, 1010, "unchanged"}}));
}

void finish(TrackerStore& store, std::int64_t run) {
  check(store.finish_run(run, RunStatus::succeeded, 0, 2000));
}

/// The run a lookup finds, 0 for none.
std::int64_t found(CacheIndex& index, const std::string& step, const std::string& key, std::int64_t except) {
  auto hit = index.find(step, key, except);
  REQUIRE_MESSAGE(hit.ok(), (hit.ok() ? "" : hit.error()));
  if (!*hit) {
    return 0;
  }
  CHECK((*hit)->step == step);
  return (*hit)->run;
}

} // namespace

TEST_CASE("latest_keys: the previous run's keyed steps, with the run each execution is in") {
  TempDir dir;
  auto store = TrackerStore::open(dir.path() / ".kiln");
  REQUIRE(store.ok());
  TrackerStore& s = **store;

  const std::int64_t first = start_run(s, "nightly", {"prep", "train", "report"});
  executed(s, first, "prep", "kp");
  executed(s, first, "train", "kt");
  executed(s, first, "report", "kr");
  finish(s, first);
  // Another workflow's run in between is not "the previous run".
  const std::int64_t other = start_run(s, "weekly", {"prep"});
  executed(s, other, "prep", "kw");
  finish(s, other);
  const std::int64_t second = start_run(s, "nightly", {"prep", "train", "report"});
  cached(s, second, "prep", "kp", first);
  executed(s, second, "train", "kt2");
  // report failed: not a source of anything.
  check(s.record_cache_decisions(second, {CacheDecision{"report", StepCache{"kr2", "{}", std::nullopt}, ""}}));
  check(s.begin_attempt(second, "report", 1, AttemptStart{1, "local", "pid:1", 1000, "", ""}));
  StepEnd failed{StepStatus::failed, "exit 1"};
  check(s.end_attempt(second, "report", 1, AttemptEnd{1, 0, false, 1010, ""}, &failed));
  finish(s, second);

  auto latest = s.latest_keys("nightly", k_later);
  REQUIRE(latest.ok());
  std::map<std::string, std::pair<std::string, std::int64_t>> by_step;
  for (const KeyedStep& k : *latest) {
    by_step[k.step] = {k.key, k.source_run};
  }
  CHECK(by_step.size() == 2);
  CHECK(by_step["prep"] == std::pair<std::string, std::int64_t>{"kp", first});
  CHECK(by_step["train"] == std::pair<std::string, std::int64_t>{"kt2", second});

  // Before `second`, the previous nightly run is `first`.
  auto earlier = s.latest_keys("nightly", second);
  REQUIRE(earlier.ok());
  CHECK(earlier->size() == 3);

  SUBCASE("CacheIndex answers from it, and from the key index otherwise") {
    // The same key executed since, elsewhere: the key index's newest, but
    // the previous nightly run's cached step names its own source.
    const std::int64_t copy = start_run(s, "weekly", {"prep"});
    executed(s, copy, "prep", "kp");
    finish(s, copy);
    auto newest = s.find_cache_hit("kp", k_later);
    REQUIRE(newest.ok());
    REQUIRE(*newest);
    CHECK((*newest)->run == copy);

    const std::int64_t third = start_run(s, "nightly", {"prep", "train", "report"});
    CacheIndex index(s, "nightly", third);
    CHECK(found(index, "prep", "kp", third) == first);    // through second's cached step
    CHECK(found(index, "train", "kt2", third) == second); // second ran it
    CHECK(found(index, "train", "kt", third) == first);   // an older key: the key index
    CHECK(found(index, "report", "kr", third) == first);  // second's failure is no source
    CHECK(found(index, "report", "kr2", third) == 0);
    CHECK(found(index, "prep", "nope", third) == 0);
    // A run is never its own source.
    CacheIndex own(s, "nightly", k_later);
    CHECK(found(own, "train", "kt2", second) == 0);
  }

  SUBCASE("a cached step whose source run is gone is no hint") {
    auto deleted = s.delete_runs({first});
    REQUIRE_MESSAGE(deleted.ok(), (deleted.ok() ? "" : deleted.error()));
    auto after = s.latest_keys("nightly", k_later);
    REQUIRE(after.ok());
    REQUIRE(after->size() == 1);
    CHECK((*after)[0].step == "train");
    const std::int64_t third = start_run(s, "nightly", {"prep"});
    CacheIndex index(s, "nightly", third);
    CHECK(found(index, "prep", "kp", third) == 0);
    CHECK(found(index, "train", "kt2", third) == second);
  }
}
