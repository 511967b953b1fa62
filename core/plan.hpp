#pragma once
// A plan is a workflow resolved for one run: templates rendered, commands
// turned into argv, paths made absolute, the graph as indices with each
// step's critical-path priority. It holds only what differs per step; the
// environment common to all steps is kept once (10,000 steps stay small).

#include "core/expected.hpp"
#include "core/workflow.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

struct PlannedStep {
  std::string id;
  StepKind kind = StepKind::task;
  std::vector<int> needs;
  std::vector<std::string> argv;
  /// The command as a person reads it: the script, or argv shell-quoted.
  std::string display_command;
  /// Absolute.
  std::string workdir;
  /// Variables this step sets on top of the plan's base environment.
  std::vector<std::string> env;
  std::optional<Millis> timeout;
  Millis kill_after{10000};
  RetryPolicy retries;
  int cpus = 1;
  /// resources.memory in bytes (0 = not counted) and resources.gpus.
  std::int64_t memory = 0;
  int gpus = 0;
  /// Declared outputs, relative to workdir (as written; never templated).
  std::vector<StepOutput> outputs;
  /// The declared metrics file, relative to workdir; "" for none.
  std::string metrics;
  TagList tags;
  /// Declared inputs (patterns relative to workdir) and whether the step is cached.
  std::vector<std::string> inputs;
  bool cache = false;
  Condition when;
  Trigger trigger = Trigger::success;
  std::vector<Condition> gate;
  /// A matrix variant's values.
  std::vector<std::pair<std::string, std::string>> matrix;
  /// Index into Plan::groups for a variant of a bounded matrix; -1 otherwise.
  int group = -1;
  /// argv, display_command and env still hold steps.* templates, rendered
  /// when the step starts.
  bool deferred = false;
  /// The params its command, env, workdir and condition refer to, with
  /// their values (part of its cache key).
  std::vector<std::pair<std::string, std::string>> params_used;
  /// Longest chain of dependents behind this step, itself included.
  std::int64_t priority = 1;
};

struct Plan {
  std::string run_id;
  std::vector<PlannedStep> steps;
  /// The environment every step starts from, as KEY=VALUE.
  std::vector<std::string> base_env;
  /// A topological order that prefers longer critical paths: the order the
  /// steps would start with unlimited parallelism of one.
  std::vector<int> order;
  std::int64_t run_number = 0;
  /// The workflow's name and params (no steps), for what is rendered when
  /// a step starts.
  std::shared_ptr<const Workflow> scope;
  /// The workflow's own env, rendered, as KEY=VALUE (part of every key).
  std::vector<std::string> workflow_env;
  /// max_parallel of each bounded matrix (PlannedStep::group indexes it).
  std::vector<int> groups;
  /// Where a step that needs others finds their results (KILN_NEEDS_JSON:
  /// <needs_dir>/<step>.needs.json); "" = not provided.
  std::string needs_dir;
  /// The environment variables templates looked up while planning (found
  /// or not), sorted: what of the runner's environment the plan depends on.
  std::vector<std::string> env_read;
};

struct PlanContext {
  std::string run_id;
  std::int64_t run_number = 0;
  std::string store_dir;
  /// The runner's own environment, as KEY=VALUE.
  std::vector<std::string> process_env;
};

/// Resolves `workflow` for a run. Template errors (an unset env.X, say) are
/// reported together, one per line, as file:line:col: error: message.
Expected<Plan> make_plan(const Workflow& workflow, const PlanContext& context);

/// `value` quoted for /bin/sh when it needs to be.
std::string shell_quote(std::string_view value);

/// The full environment of one attempt: base, then the step's own, then
/// KILN_WORKDIR and KILN_ATTEMPT. Later entries override earlier ones of the same name.
/// Which steps a partial run (`kiln run --only/--from`) runs, by index:
/// each step in `only` by itself, and each step in `from` with everything
/// downstream of it; the union when both are given. Every other step is
/// left out (its upstream work is taken as done). Empty `only` and `from`
/// select every step.
std::vector<char> select_steps(const Plan& plan, const std::vector<int>& only, const std::vector<int>& from);

std::vector<std::string> attempt_environment(const Plan& plan, const PlannedStep& step, int attempt);

/// The JSON file describing a step's needs (status, matrix values, outputs,
/// metrics of each), or "" when the plan has no needs_dir or the step no needs.
std::string needs_json_path(const Plan& plan, const PlannedStep& step);

/// The file an attempt writes `name=value` lines to (KILN_OUTPUTS), beside
/// its stdout log: "<x>.out" gives "<x>.outputs".
std::string outputs_path(std::string_view stdout_path);

} // namespace kiln::core
