#include "core/graph.hpp"
#include "core/scheduler.hpp"
#include "tests/core/fake_executor.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace kiln;
using namespace std::chrono_literals;
using core::StepStatus;

namespace {

core::Plan make_plan(const std::vector<std::pair<std::string, std::vector<int>>>& steps) {
  core::Plan plan;
  plan.run_id = "0123456789abcdef0123456789abcdef";
  for (const auto& [id, needs] : steps) {
    core::PlannedStep s;
    s.id = id;
    s.needs = needs;
    s.argv = {"/bin/sh", "-c", "true"};
    s.workdir = "/tmp";
    plan.steps.push_back(s);
  }
  core::Dependencies deps;
  for (const auto& s : plan.steps) {
    deps.push_back(s.needs);
  }
  const auto priority = core::critical_path_lengths(deps);
  for (std::size_t i = 0; i < plan.steps.size(); ++i) {
    plan.steps[i].priority = priority[i];
  }
  return plan;
}

struct Recorder final : core::RunObserver {
  const core::Plan* plan = nullptr;
  std::vector<std::string> events;
  std::vector<std::pair<std::string, core::Millis>> retries;
  std::map<std::string, std::string> reasons;
  std::vector<core::AttemptOutcome> outcomes;

  void attempt_finished(int step, int attempt, const core::AttemptOutcome& outcome, std::int64_t,
                        std::optional<core::Millis> retry_in) override {
    outcomes.push_back(outcome);
    events.push_back(plan->steps[step].id + "#" + std::to_string(attempt) + (outcome.succeeded() ? " ok" : " fail"));
    if (retry_in) {
      retries.emplace_back(plan->steps[step].id, *retry_in);
    }
  }
  void step_finished(int step, StepStatus status, const std::string& reason, std::int64_t) override {
    events.push_back(plan->steps[step].id + " " + std::string(core::to_string(status)));
    reasons[plan->steps[step].id] = reason;
  }
};

/// Fails the first `failures` collections of each step it is asked about.
struct Collector final : core::OutputCollector {
  int failures = 0;
  std::map<int, int> calls;
  std::string collect(int step, int /*attempt*/) override {
    return ++calls[step] <= failures ? "declared output: 'model.pkl' does not exist" : "";
  }
};

struct Harness {
  core::Plan plan;
  core::OutputCollector* collector = nullptr;
  testing::FakeClock clock;
  testing::FakeExecutor executor{clock};
  Recorder recorder;
  core::SchedulerOptions options{.jobs = 2, .cpus = 2, .keep_going = core::KeepGoing::no, .seed = 42};

  explicit Harness(core::Plan p) : plan(std::move(p)) { recorder.plan = &plan; }

  core::RunResult run() {
    core::Scheduler scheduler(
        plan, executor, clock, recorder,
        [](int step, int attempt) {
          return std::pair{"out" + std::to_string(step) + "." + std::to_string(attempt), std::string("err")};
        },
        options);
    scheduler.set_collector(collector);
    return scheduler.run();
  }

  std::vector<std::string> start_order() const {
    std::vector<std::string> out;
    for (const auto& s : executor.starts) {
      out.push_back(s.step);
    }
    return out;
  }
};

} // namespace

TEST_SUITE("core::Scheduler") {
  TEST_CASE("a chain runs in dependency order and succeeds") {
    Harness h(make_plan({{"a", {}}, {"b", {0}}, {"c", {1}}}));
    auto result = h.run();
    CHECK(result.status == core::RunStatus::succeeded);
    CHECK(result.exit_code == 0);
    CHECK(h.start_order() == std::vector<std::string>{"a", "b", "c"});
    CHECK(h.clock.since_start() == 3000ms);
    CHECK(h.executor.max_running == 1);
  }

  TEST_CASE("a partial run skips the steps left out and runs what needs them") {
    // a -> b -> c, and d alone: --from b runs b and c, taking a as done.
    Harness h(make_plan({{"a", {}}, {"b", {0}}, {"c", {1}}, {"d", {}}}));
    h.options.selected = core::select_steps(h.plan, {}, {1});
    CHECK(h.options.selected == std::vector<char>{0, 1, 1, 0});
    h.options.unselected_reason = "not selected (--from b)";
    auto result = h.run();
    CHECK(result.status == core::RunStatus::succeeded);
    CHECK(h.start_order() == std::vector<std::string>{"b", "c"});
    CHECK(h.recorder.reasons["a"] == "not selected (--from b)");
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::skipped, StepStatus::succeeded, StepStatus::succeeded,
                                                  StepStatus::skipped});
    // --only c --from d: each by itself, and d's (no) dependents.
    CHECK(core::select_steps(h.plan, {2}, {3}) == std::vector<char>{0, 0, 1, 1});
    CHECK(core::select_steps(h.plan, {}, {}) == std::vector<char>{1, 1, 1, 1});
  }

  TEST_CASE("parallelism is bounded by jobs, and the longest path starts first") {
    // d is alone; a -> b -> c is a chain: a has the longer path behind it.
    Harness h(make_plan({{"d", {}}, {"e", {}}, {"a", {}}, {"b", {2}}, {"c", {3}}}));
    h.options.jobs = 2;
    h.options.cpus = 8;
    auto result = h.run();
    CHECK(result.exit_code == 0);
    CHECK(h.executor.max_running == 2);
    CHECK(h.start_order().front() == "a");
    CHECK(h.start_order()[1] == "d");
  }

  TEST_CASE("cpus bound what runs together; a step larger than the machine runs alone") {
    auto plan = make_plan({{"big", {}}, {"s1", {}}, {"s2", {}}, {"huge", {}}});
    plan.steps[0].cpus = 2;
    plan.steps[3].cpus = 16;
    Harness h(plan);
    h.options.jobs = 4;
    h.options.cpus = 2;
    auto result = h.run();
    CHECK(result.exit_code == 0);
    CHECK(h.executor.max_running == 2); // s1 and s2 together, never with big or huge
    CHECK(h.clock.since_start() == 3000ms);
  }

  TEST_CASE("a flaky step is retried with exponential back-off until it succeeds") {
    auto plan = make_plan({{"flaky", {}}, {"after", {0}}});
    plan.steps[0].retries = {.limit = 3, .backoff = core::Backoff::exponential, .delay = 1000ms, .max_delay = 60000ms};
    Harness h(plan);
    h.executor.scripts["flaky"] = {{1000ms, 1}, {1000ms, 1}, {1000ms, 0}};
    auto result = h.run();
    CHECK(result.exit_code == 0);
    REQUIRE(h.executor.starts.size() == 4);
    // attempt 1 at 0s, fails at 1s, waits 1s; attempt 2 at 2s, fails at 3s, waits 2s; attempt 3 at 5s.
    CHECK(h.executor.starts[1].at == 2000ms);
    CHECK(h.executor.starts[2].at == 5000ms);
    CHECK(h.executor.starts[2].attempt == 3);
    CHECK(h.executor.starts[3].step == "after");
    CHECK(h.recorder.retries ==
          std::vector<std::pair<std::string, core::Millis>>{{"flaky", 1000ms}, {"flaky", 2000ms}});
    // Every attempt sees its number.
    auto& env = h.executor.starts[2].env;
    CHECK(std::find(env.begin(), env.end(), "KILN_ATTEMPT=3") != env.end());
  }

  TEST_CASE("the collector is asked only about attempts that exited 0, and can fail them") {
    auto plan = make_plan({{"train", {}}, {"predict", {0}}, {"broken", {}}});
    plan.steps[0].retries = {.limit = 1, .delay = 10ms};
    Harness h(plan);
    h.executor.scripts["broken"] = {{5ms, 2}};
    Collector collector;
    collector.failures = 1;
    h.collector = &collector;
    h.options.keep_going = core::KeepGoing::yes;
    auto result = h.run();
    // train's first attempt is failed by the collector, then retried.
    CHECK(collector.calls[0] == 2);
    CHECK(collector.calls.count(2) == 0);
    const auto& events = h.recorder.events;
    CHECK(std::find(events.begin(), events.end(), "train#1 fail") != events.end());
    CHECK(std::find(events.begin(), events.end(), "train#2 ok") != events.end());
    CHECK(std::any_of(h.recorder.outcomes.begin(), h.recorder.outcomes.end(), [](const core::AttemptOutcome& o) {
      return o.exit_code == 0 && o.error == "declared output: 'model.pkl' does not exist";
    }));
    // predict's first (and only) collection fails it too: no retries there.
    CHECK(h.recorder.reasons["predict"] == "declared output: 'model.pkl' does not exist");
    CHECK(h.recorder.reasons["train"].empty());
    CHECK(result.exit_code == 1);
  }

  TEST_CASE("retries stop at the limit and the step fails") {
    auto plan = make_plan({{"bad", {}}});
    plan.steps[0].retries = {.limit = 2, .delay = 10ms};
    Harness h(plan);
    h.executor.scripts["bad"] = {{5ms, 3}};
    auto result = h.run();
    CHECK(result.exit_code == 1);
    CHECK(result.status == core::RunStatus::failed);
    CHECK(h.executor.starts.size() == 3);
    CHECK(h.recorder.reasons["bad"] == "exit code 3 (attempt 3 of 3)");
  }

  TEST_CASE("back-off is capped by max_delay, and jitter stays in [delay/2, delay]") {
    core::RetryPolicy p{.limit = 10, .backoff = core::Backoff::exponential, .delay = 1000ms, .max_delay = 5000ms};
    CHECK(core::Scheduler::backoff_delay(p, 2) == 1000ms);
    CHECK(core::Scheduler::backoff_delay(p, 3) == 2000ms);
    CHECK(core::Scheduler::backoff_delay(p, 4) == 4000ms);
    CHECK(core::Scheduler::backoff_delay(p, 5) == 5000ms);
    CHECK(core::Scheduler::backoff_delay(p, 60) == 5000ms);
    p.backoff = core::Backoff::fixed;
    CHECK(core::Scheduler::backoff_delay(p, 7) == 1000ms);

    auto plan = make_plan({{"j", {}}});
    plan.steps[0].retries = {
        .limit = 6, .backoff = core::Backoff::exponential, .delay = 1000ms, .max_delay = 8000ms, .jitter = true};
    Harness h(plan);
    h.executor.scripts["j"] = {{1ms, 1}};
    (void)h.run();
    REQUIRE(h.recorder.retries.size() == 6);
    bool any_below_nominal = false;
    for (std::size_t i = 0; i < h.recorder.retries.size(); ++i) {
      const auto nominal = core::Scheduler::backoff_delay(plan.steps[0].retries, static_cast<int>(i) + 2);
      CHECK(h.recorder.retries[i].second <= nominal);
      CHECK(h.recorder.retries[i].second >= nominal / 2);
      any_below_nominal = any_below_nominal || h.recorder.retries[i].second < nominal;
    }
    CHECK(any_below_nominal);
  }

  TEST_CASE("only the listed exit codes are retried when failure is not") {
    auto plan = make_plan({{"x", {}}, {"y", {}}});
    for (auto& s : plan.steps) {
      s.retries = {.limit = 2, .delay = 1ms, .on_failure = false, .on_timeout = false, .exit_codes = {75}};
    }
    Harness h(plan);
    h.options.keep_going = core::KeepGoing::yes;
    h.executor.scripts["x"] = {{1ms, 75}, {1ms, 0}};
    h.executor.scripts["y"] = {{1ms, 4}};
    auto result = h.run();
    CHECK(result.exit_code == 1);
    CHECK(result.steps[0] == StepStatus::succeeded);
    CHECK(result.steps[1] == StepStatus::failed);
    CHECK(std::count_if(h.executor.starts.begin(), h.executor.starts.end(),
                        [](const auto& s) { return s.step == "y"; }) == 1);
  }

  TEST_CASE("a timeout sends SIGTERM, then SIGKILL after the grace, and is retried only if asked") {
    auto plan = make_plan({{"slow", {}}, {"next", {0}}});
    plan.steps[0].timeout = 10000ms;
    plan.steps[0].kill_after = 3000ms;
    plan.steps[0].retries = {.limit = 1, .delay = 1000ms, .on_failure = true, .on_timeout = false};
    Harness h(plan);
    h.executor.scripts["slow"] = {{100000ms, 0, true}};
    auto result = h.run();
    CHECK(result.exit_code == 1);
    CHECK(h.executor.starts.size() == 1);
    REQUIRE(h.executor.stops.size() == 2);
    CHECK(h.executor.stops[0].second == core::StopMode::terminate);
    CHECK(h.executor.stops[1].second == core::StopMode::kill);
    CHECK(h.clock.since_start() == 13000ms);
    CHECK(h.recorder.outcomes.back().timed_out);
    CHECK(h.recorder.reasons["slow"] == "timed out");
    CHECK(result.steps[1] == StepStatus::skipped);
    CHECK(h.recorder.reasons["next"] == "needs 'slow', which failed");
  }

  TEST_CASE("a timed-out attempt is retried when on includes timeout") {
    auto plan = make_plan({{"slow", {}}});
    plan.steps[0].timeout = 1000ms;
    plan.steps[0].retries = {.limit = 1, .delay = 500ms};
    Harness h(plan);
    h.executor.scripts["slow"] = {{5000ms, 0}, {100ms, 0}};
    auto result = h.run();
    CHECK(result.exit_code == 0);
    REQUIRE(h.executor.starts.size() == 2);
    CHECK(h.executor.starts[1].at == 1500ms);
  }

  TEST_CASE("a failure starts nothing new, lets running steps finish, and skips dependents") {
    // fail and long start together; after fail, nothing else starts.
    Harness h(make_plan({{"fail", {}}, {"long", {}}, {"child", {0}}, {"other", {}}}));
    h.options.jobs = 2;
    h.executor.scripts["fail"] = {{1000ms, 2}};
    h.executor.scripts["long"] = {{5000ms, 0}};
    auto result = h.run();
    CHECK(result.exit_code == 1);
    CHECK(result.steps[0] == StepStatus::failed);
    CHECK(result.steps[1] == StepStatus::succeeded);
    CHECK(result.steps[2] == StepStatus::skipped);
    CHECK(result.steps[3] == StepStatus::skipped);
    CHECK(h.recorder.reasons["other"].find("--keep-going") != std::string::npos);
    CHECK(h.clock.since_start() == 5000ms);
  }

  TEST_CASE("--keep-going runs everything that does not depend on the failure") {
    Harness h(make_plan({{"fail", {}}, {"child", {0}}, {"grandchild", {1}}, {"other", {}}, {"after", {3}}}));
    h.options.keep_going = core::KeepGoing::yes;
    h.executor.scripts["fail"] = {{1000ms, 2}};
    auto result = h.run();
    CHECK(result.exit_code == 1);
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::failed, StepStatus::skipped, StepStatus::skipped,
                                                  StepStatus::succeeded, StepStatus::succeeded});
  }

  TEST_CASE("a step that cannot start is a failed attempt") {
    Harness h(make_plan({{"missing", {}}}));
    h.executor.start_errors["missing"] = "command not found: nosuchtool";
    auto result = h.run();
    CHECK(result.exit_code == 1);
    CHECK(h.recorder.reasons["missing"] == "command not found: nosuchtool");
  }

  TEST_CASE("an interrupt stops running steps, cancels the rest, and exits 128+signal") {
    Harness h(make_plan({{"a", {}}, {"b", {}}, {"c", {0}}}));
    h.executor.scripts["a"] = {{10000ms, 0}};
    h.executor.scripts["b"] = {{10000ms, 0}};
    h.executor.interrupts = {{2000ms, SIGINT}};
    auto result = h.run();
    CHECK(result.status == core::RunStatus::cancelled);
    CHECK(result.exit_code == 130);
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::cancelled, StepStatus::cancelled, StepStatus::cancelled});
    CHECK(h.clock.since_start() == 2000ms);
    CHECK(h.executor.stops.size() == 2);
  }

  TEST_CASE("a second interrupt kills at once") {
    auto plan = make_plan({{"stubborn", {}}});
    plan.steps[0].kill_after = 30000ms;
    Harness h(plan);
    h.executor.scripts["stubborn"] = {{100000ms, 0, true}};
    h.executor.interrupts = {{1000ms, SIGTERM}, {2000ms, SIGTERM}};
    auto result = h.run();
    CHECK(result.exit_code == 143);
    CHECK(h.clock.since_start() == 2000ms);
    REQUIRE(h.executor.stops.size() == 2);
    CHECK(h.executor.stops[1].second == core::StopMode::kill);
  }

  TEST_CASE("an interrupt during a retry back-off cancels the waiting step") {
    auto plan = make_plan({{"flaky", {}}});
    plan.steps[0].retries = {.limit = 3, .delay = 60000ms};
    Harness h(plan);
    h.executor.scripts["flaky"] = {{10ms, 1}};
    h.executor.interrupts = {{1000ms, SIGINT}};
    auto result = h.run();
    CHECK(result.exit_code == 130);
    CHECK(result.steps[0] == StepStatus::cancelled);
    CHECK(h.clock.since_start() == 1000ms);
  }
}

// Trigger rules, step hooks (conditions, caching, gates) and resumed runs.
TEST_SUITE("core::Scheduler") {
  /// Decides per step id as told, and records what it was asked.
  struct FakeHooks final : core::StepHooks {
    const core::Plan* plan = nullptr;
    std::map<std::string, core::StartDecision> decisions;
    /// What verify() says, per step id ("" = the step stands).
    std::map<std::string, std::string> verdicts;
    /// Each prepare(): "ID", with " after failure" when failure_upstream,
    /// then each need's status as the scheduler reports it.
    std::vector<std::string> prepared;
    std::map<std::string, int> verified;

    core::StartDecision prepare(int step, bool failure_upstream,
                                const std::function<StepStatus(int)>& status) override {
      const auto& planned = plan->steps[step];
      std::string entry = planned.id + (failure_upstream ? " after failure" : "");
      for (int need : planned.needs) {
        entry += " " + plan->steps[need].id + "=" + std::string(core::to_string(status(need)));
      }
      prepared.push_back(entry);
      auto it = decisions.find(planned.id);
      return it == decisions.end() ? core::StartDecision{} : it->second;
    }
    std::string verify(int step, int /*attempt*/) override {
      const std::string& id = plan->steps[step].id;
      ++verified[id];
      auto it = verdicts.find(id);
      return it == verdicts.end() ? "" : it->second;
    }
  };

  core::RunResult run_with_hooks(Harness & h, FakeHooks & hooks) {
    hooks.plan = &h.plan;
    core::Scheduler scheduler(
        h.plan, h.executor, h.clock, h.recorder,
        [](int step, int attempt) {
          return std::pair{"out" + std::to_string(step) + "." + std::to_string(attempt), std::string("err")};
        },
        h.options);
    scheduler.set_collector(h.collector);
    scheduler.set_hooks(&hooks);
    return scheduler.run();
  }

  core::StartDecision decide(core::StartDecision::Action action, std::string reason) {
    core::StartDecision d;
    d.action = action;
    d.reason = std::move(reason);
    return d;
  }

  bool has_event(const Harness& h, const std::string& event) {
    return std::find(h.recorder.events.begin(), h.recorder.events.end(), event) != h.recorder.events.end();
  }

  TEST_CASE("a failure() step is skipped when nothing upstream failed") {
    auto plan = make_plan({{"train", {}}, {"notify", {0}}});
    plan.steps[1].trigger = core::Trigger::failure;
    Harness h(plan);
    auto result = h.run();
    CHECK(result.exit_code == 0);
    CHECK(result.status == core::RunStatus::succeeded);
    CHECK(h.start_order() == std::vector<std::string>{"train"});
    CHECK(result.steps[1] == StepStatus::skipped);
    CHECK(h.recorder.reasons["notify"] == "runs only when a step upstream fails, and none did");
  }

  TEST_CASE("a failure() step runs after an upstream failure, also through steps skipped for it") {
    // train fails; evaluate is skipped for it; notify needs only evaluate.
    auto plan = make_plan({{"train", {}}, {"evaluate", {0}}, {"notify", {1}}});
    plan.steps[2].trigger = core::Trigger::failure;
    Harness h(plan);
    h.executor.scripts["train"] = {{1000ms, 2}};
    FakeHooks hooks;
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 1);
    CHECK(result.status == core::RunStatus::failed);
    CHECK(h.start_order() == std::vector<std::string>{"train", "notify"});
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::failed, StepStatus::skipped, StepStatus::succeeded});
    CHECK(h.recorder.reasons["evaluate"] == "needs 'train', which failed");
    // The hook hears that something upstream failed, and evaluate's status.
    CHECK(hooks.prepared == std::vector<std::string>{"train", "notify after failure evaluate=skipped"});
  }

  TEST_CASE("failure() looks upstream only: a failure elsewhere does not start it") {
    auto plan = make_plan({{"broken", {}}, {"fine", {}}, {"notify", {1}}});
    plan.steps[2].trigger = core::Trigger::failure;
    Harness h(plan);
    h.options.keep_going = core::KeepGoing::yes;
    h.executor.scripts["broken"] = {{10ms, 1}};
    auto result = h.run();
    CHECK(result.exit_code == 1);
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::failed, StepStatus::succeeded, StepStatus::skipped});
    CHECK(h.recorder.reasons["notify"] == "runs only when a step upstream fails, and none did");
  }

  TEST_CASE("an always() step runs after a failure without --keep-going; a ready ordinary step does not start") {
    // One job at a time: fail starts first (longest chain), other and report wait.
    auto plan = make_plan({{"fail", {}}, {"cleanup", {0}}, {"other", {}}, {"report", {}}});
    plan.steps[1].trigger = core::Trigger::always;
    plan.steps[3].trigger = core::Trigger::always;
    Harness h(plan);
    h.options.jobs = 1;
    h.executor.scripts["fail"] = {{1000ms, 2}};
    FakeHooks hooks;
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 1);
    CHECK(result.status == core::RunStatus::failed);
    CHECK(h.start_order() == std::vector<std::string>{"fail", "cleanup", "report"});
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::failed, StepStatus::succeeded, StepStatus::skipped,
                                                  StepStatus::succeeded});
    CHECK(h.recorder.reasons["other"] ==
          "not started: the run stopped after 'fail' failed (--keep-going runs what does not depend on it)");
    CHECK(std::find(hooks.prepared.begin(), hooks.prepared.end(), "cleanup after failure fail=failed") !=
          hooks.prepared.end());
  }

  TEST_CASE("an always() step runs after a need was skipped or succeeded alike") {
    auto plan = make_plan({{"a", {}}, {"b", {}}, {"after_both", {0, 1}}});
    plan.steps[2].trigger = core::Trigger::always;
    Harness h(plan);
    FakeHooks hooks;
    hooks.decisions["a"] = decide(core::StartDecision::Action::skip, "condition false: params.fast");
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 0);
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::skipped, StepStatus::succeeded, StepStatus::succeeded});
    CHECK(std::find(hooks.prepared.begin(), hooks.prepared.end(), "after_both a=skipped b=succeeded") !=
          hooks.prepared.end());
  }

  TEST_CASE("hooks decide: skipped skips its dependents, cached lets them run, failed fails the run") {
    auto plan = make_plan(
        {{"s", {}}, {"s_child", {0}}, {"c", {}}, {"c_child", {2}}, {"f", {}}, {"f_child", {4}}, {"plain", {}}});
    Harness h(plan);
    h.options.keep_going = core::KeepGoing::yes;
    FakeHooks hooks;
    hooks.decisions["s"] =
        decide(core::StartDecision::Action::skip, "condition false: params.deploy (params.deploy = false)");
    hooks.decisions["c"] = decide(core::StartDecision::Action::cached, "unchanged since run 4");
    hooks.decisions["f"] = decide(core::StartDecision::Action::fail, "w.yaml:3:11: when: division by zero");
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 1);
    CHECK(result.status == core::RunStatus::failed);
    CHECK(result.steps == std::vector<StepStatus>{StepStatus::skipped, StepStatus::skipped, StepStatus::cached,
                                                  StepStatus::succeeded, StepStatus::failed, StepStatus::skipped,
                                                  StepStatus::succeeded});
    auto started = h.start_order();
    std::sort(started.begin(), started.end());
    CHECK(started == std::vector<std::string>{"c_child", "plain"});
    CHECK(h.recorder.reasons["s"] == "condition false: params.deploy (params.deploy = false)");
    CHECK(h.recorder.reasons["s_child"] == "needs 's', which was skipped");
    CHECK(h.recorder.reasons["c"] == "unchanged since run 4");
    CHECK(h.recorder.reasons["f"] == "w.yaml:3:11: when: division by zero");
    CHECK(h.recorder.reasons["f_child"] == "needs 'f', which failed");
    // Steps skipped for a need are not asked about; c_child sees c as cached.
    CHECK(std::count_if(hooks.prepared.begin(), hooks.prepared.end(), [](const std::string& p) {
            return p.starts_with("s_child") || p.starts_with("f_child");
          }) == 0);
    CHECK(std::find(hooks.prepared.begin(), hooks.prepared.end(), "c_child c=cached") != hooks.prepared.end());
    // Neither skipped nor cached steps ran, so nothing was verified for them.
    CHECK(hooks.verified.count("c") == 0);
    CHECK(hooks.verified["c_child"] == 1);
  }

  TEST_CASE("a run of skipped and cached steps succeeds; a failed decision without --keep-going stops the run") {
    {
      auto plan = make_plan({{"c", {}}, {"child", {0}}, {"s", {}}});
      Harness h(plan);
      FakeHooks hooks;
      hooks.decisions["c"] = decide(core::StartDecision::Action::cached, "unchanged since run 1");
      hooks.decisions["s"] = decide(core::StartDecision::Action::skip, "condition false: false");
      auto result = run_with_hooks(h, hooks);
      CHECK(result.exit_code == 0);
      CHECK(result.status == core::RunStatus::succeeded);
      CHECK(h.start_order() == std::vector<std::string>{"child"});
    }
    {
      // Both are ready at once: whichever is decided first, later never starts.
      auto plan = make_plan({{"f", {}}, {"later", {}}});
      Harness h(plan);
      h.options.jobs = 1;
      FakeHooks hooks;
      hooks.decisions["f"] = decide(core::StartDecision::Action::fail, "cannot render the command: no step 'x'");
      auto result = run_with_hooks(h, hooks);
      CHECK(result.exit_code == 1);
      CHECK(result.steps == std::vector<StepStatus>{StepStatus::failed, StepStatus::skipped});
      CHECK(h.executor.starts.empty());
    }
  }

  TEST_CASE("a command resolved by the hooks replaces the plan's env, and KILN_OUTPUTS sits beside stdout") {
    auto plan = make_plan({{"use", {}}});
    plan.steps[0].env = {"WHAT=planned"};
    Harness h(plan);
    FakeHooks hooks;
    core::StartDecision resolved;
    resolved.command = core::ResolvedCommand{{"/bin/sh", "-c", "echo resolved"}, "echo resolved", {"WHAT=resolved"}};
    hooks.decisions["use"] = resolved;
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 0);
    REQUIRE(h.executor.starts.size() == 1);
    const auto& env = h.executor.starts[0].env;
    CHECK(std::find(env.begin(), env.end(), "WHAT=resolved") != env.end());
    CHECK(std::find(env.begin(), env.end(), "WHAT=planned") == env.end());
    CHECK(std::find(env.begin(), env.end(), "KILN_OUTPUTS=out0.1.outputs") != env.end());
  }

  TEST_CASE("a verify() failure is final: not retried even with retries left, and its dependents are skipped") {
    auto plan = make_plan({{"check", {}}, {"deploy", {0}}});
    plan.steps[0].kind = core::StepKind::evaluate;
    plan.steps[0].retries = {.limit = 3, .delay = 10ms};
    Harness h(plan);
    FakeHooks hooks;
    hooks.verdicts["check"] = "gate failed: accuracy >= 0.9 (accuracy = 0.8)";
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 1);
    CHECK(result.status == core::RunStatus::failed);
    CHECK(h.executor.starts.size() == 1);
    CHECK(hooks.verified["check"] == 1);
    CHECK(h.recorder.retries.empty());
    REQUIRE(h.recorder.outcomes.size() == 1);
    CHECK(h.recorder.outcomes[0].final);
    CHECK(h.recorder.outcomes[0].exit_code == 0);
    CHECK(h.recorder.reasons["check"] == "gate failed: accuracy >= 0.9 (accuracy = 0.8)");
    CHECK(result.steps[1] == StepStatus::skipped);
    CHECK(h.recorder.reasons["deploy"] == "needs 'check', which failed");
  }

  TEST_CASE("verify() is asked only about attempts that exited 0 and were collected; those failures still retry") {
    auto plan = make_plan({{"check", {}}});
    plan.steps[0].retries = {.limit = 3, .delay = 10ms};
    Harness h(plan);
    // Attempt 1 exits 1, attempt 2 fails collection, attempt 3 stands.
    h.executor.scripts["check"] = {{1ms, 1}, {1ms, 0}};
    Collector collector;
    collector.failures = 1;
    h.collector = &collector;
    FakeHooks hooks;
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 0);
    CHECK(h.executor.starts.size() == 3);
    CHECK(collector.calls[0] == 2);
    CHECK(hooks.verified["check"] == 1);
    CHECK(h.recorder.retries.size() == 2);
    CHECK(std::none_of(h.recorder.outcomes.begin(), h.recorder.outcomes.end(),
                       [](const core::AttemptOutcome& o) { return o.final; }));
  }

  TEST_CASE("a resumed run takes kept steps as done without reporting them, and numbers attempts after earlier ones") {
    // a and d were done in an earlier session; b had failed twice there.
    auto plan = make_plan({{"a", {}}, {"b", {0}}, {"c", {1}}, {"d", {}}});
    plan.steps[1].retries = {.limit = 1, .delay = 10ms};
    Harness h(plan);
    h.options.kept = {1, 0, 0, 1};
    h.options.prior_attempts = {1, 2, 0, 1};
    // Scripts are indexed by attempt number: b's third attempt fails, its fourth succeeds.
    h.executor.scripts["b"] = {{1ms, 1}, {1ms, 1}, {1ms, 1}, {1ms, 0}};
    FakeHooks hooks;
    auto result = run_with_hooks(h, hooks);
    CHECK(result.exit_code == 0);
    CHECK(result.status == core::RunStatus::succeeded);
    CHECK(result.steps == std::vector<StepStatus>(4, StepStatus::succeeded));
    CHECK(h.start_order() == std::vector<std::string>{"b", "b", "c"});
    CHECK(h.executor.starts[0].attempt == 3);
    CHECK(h.executor.starts[1].attempt == 4);
    CHECK(h.executor.starts[2].attempt == 1);
    const auto& env = h.executor.starts[0].env;
    CHECK(std::find(env.begin(), env.end(), "KILN_ATTEMPT=3") != env.end());
    CHECK(std::find(env.begin(), env.end(), "KILN_OUTPUTS=out1.3.outputs") != env.end());
    CHECK(has_event(h, "b#3 fail"));
    CHECK(has_event(h, "b#4 ok"));
    // Kept steps: never prepared, started or reported again.
    CHECK(hooks.prepared == std::vector<std::string>{"b a=succeeded", "c b=succeeded"});
    CHECK(h.recorder.reasons.count("a") == 0);
    CHECK(h.recorder.reasons.count("d") == 0);
    CHECK(std::none_of(h.recorder.events.begin(), h.recorder.events.end(),
                       [](const std::string& e) { return e.starts_with("a") || e.starts_with("d"); }));
  }

  TEST_CASE("a resumed run whose every step was kept runs nothing and succeeds") {
    Harness h(make_plan({{"a", {}}, {"b", {0}}}));
    h.options.kept = {1, 1};
    auto result = h.run();
    CHECK(result.exit_code == 0);
    CHECK(h.executor.starts.empty());
    CHECK(h.recorder.events.empty());
  }
}
