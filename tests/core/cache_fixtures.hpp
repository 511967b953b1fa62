#pragma once
// Runs and steps written to a real store the way kiln run writes them, for
// the tests of what caching reads back (CacheIndex, replay_run).

#include "core/run_status.hpp"
#include "core/tracker_store.hpp"
#include "tests/support.hpp"

#include <string>
#include <vector>

namespace kiln::test {

/// A run of `workflow` (/flows/<workflow>.yaml) with a task per id, no needs.
inline core::NewRun flow_run(const std::string& workflow, const std::vector<std::string>& ids) {
  core::NewRun run;
  run.workflow_name = workflow;
  run.workflow_file = "/flows/" + workflow + ".yaml";
  run.workflow_hash = "h1";
  run.workflow_content = "name: " + workflow + "\n";
  run.host = "box";
  run.command_line = "kiln run";
  run.runner = core::RunnerIdentity{"box", 100, 1};
  run.started_ms = 1000;
  for (const std::string& id : ids) {
    run.steps.push_back({id, "task", "echo " + id, {}, "/flows"});
  }
  return run;
}

/// The number of a new flow_run.
inline std::int64_t start_run(core::TrackerStore& store, const std::string& workflow,
                              const std::vector<std::string>& ids) {
  return ok(store.create_run(flow_run(workflow, ids))).number;
}

/// The step ran and succeeded with `key`.
inline void executed(core::TrackerStore& store, std::int64_t run, const std::string& step, const std::string& key) {
  check(store.record_cache_decisions(run, {core::CacheDecision{step, core::StepCache{key, "{}", std::nullopt}, ""}}));
  check(store.begin_attempt(run, step, 1, core::AttemptStart{1, "local", "pid:1", 1000, "", ""}));
  core::StepEnd end{core::StepStatus::succeeded, ""};
  check(store.end_attempt(run, step, 1, core::AttemptEnd{0, 0, false, 1010, ""}, &end));
}

} // namespace kiln::test
