#pragma once
// The commands: each parses nothing itself (app.cpp does, with CLI11),
// calls a few core entry points, and prints.

#include "cli/output.hpp"
#include "core/workflow.hpp"

#include <optional>
#include <string>
#include <vector>

namespace kiln::cli {

/// Documented in man/kiln.1.
enum ExitCode : int {
  k_exit_ok = 0,
  k_exit_step_failed = 1,
  k_exit_usage = 2,
  /// kiln itself could not work: the store is unreadable, a disk is full.
  k_exit_internal = 3,
};

struct GlobalOptions {
  std::string store;
};

struct WorkflowOptions {
  std::string file;
  /// NAME=VALUE, from -p.
  std::vector<std::string> params;
  /// The file's text when it is known already (a resumed run's recorded
  /// content): parsed as if read from `file`, which is not read.
  std::optional<std::string> content;
};

/// --cpus, --memory, --gpus: what steps' resources are counted against;
/// detected from the machine when not given.
struct ResourceOptions {
  int cpus = 0;
  std::string memory;
  std::string gpus;
};

struct RunOptions {
  WorkflowOptions workflow;
  ResourceOptions resources;
  int jobs = 0;
  bool keep_going = false;
  std::string executor = "local";
  /// KEY=VALUE, from --tag.
  std::vector<std::string> tags;
  /// --no-push: record the push as pending instead of pushing at the end.
  bool no_push = false;
  /// --no-replay: plan and decide even when the last run could be replayed.
  bool no_replay = false;
  /// A partial run: --only STEP... (each by itself) and --from STEP... (with
  /// everything downstream).
  std::vector<std::string> only;
  std::vector<std::string> from;
  /// --force (every step) or --force=STEP,... : run even when cached.
  bool force_all = false;
  std::vector<std::string> force;
};

/// The runner's environment, as KEY=VALUE.
std::vector<std::string> process_environment();
/// The workflow, or nothing after printing every problem to stderr.
std::optional<core::Workflow> load_workflow(const WorkflowOptions& options);

int validate_command(const std::vector<std::string>& files);
int plan_command(const WorkflowOptions& options, OutputFormat format);
int graph_command(const WorkflowOptions& options, const std::string& format);
int run_command(const GlobalOptions& global, const RunOptions& options, int argc, char** argv);

struct ResumeOptions {
  /// Run number, id, unique id prefix, or "last".
  std::string run;
  /// Resume with the workflow file as it is now, though it changed.
  bool allow_changed = false;
  ResourceOptions resources;
  int jobs = 0;
  bool keep_going = false;
  bool no_push = false;
};
/// `kiln resume`: continues a failed, cancelled or crashed run in place.
int resume_command(const GlobalOptions& global, const ResumeOptions& options, int argc, char** argv);

/// Which steps a run would run and why (cache keys against the store).
int status_command(const GlobalOptions& global, const WorkflowOptions& options, OutputFormat format);
/// Which components of a step's cache key changed since its previous execution.
int why_command(const GlobalOptions& global, const std::string& run, const std::string& step, OutputFormat format);

struct ListOptions {
  std::string workflow;
  std::string status;
  std::string since;
  int limit = 20;
  OutputFormat format = OutputFormat::table;
};

int runs_list_command(const GlobalOptions& global, const ListOptions& options);
int runs_show_command(const GlobalOptions& global, const std::string& run, OutputFormat format);
int logs_command(const GlobalOptions& global, const std::string& run, const std::string& step, int attempt,
                 const std::string& stream);

struct SearchOptions {
  std::string filter;
  std::string order_by;
  int limit = 0;
  OutputFormat format = OutputFormat::table;
};
int runs_search_command(const GlobalOptions& global, const SearchOptions& options);
int runs_compare_command(const GlobalOptions& global, const std::vector<std::string>& runs, OutputFormat format);
int runs_delete_command(const GlobalOptions& global, const std::vector<std::string>& runs, OutputFormat format);

struct GcOptions {
  /// -1: no such rule.
  int keep_last = -1;
  std::string older_than;
  bool dry_run = false;
  OutputFormat format = OutputFormat::table;
};
int gc_command(const GlobalOptions& global, const GcOptions& options);

struct MetricsOptions {
  std::string run;
  std::string key;
  std::string step;
  /// A:B, A: or :B.
  std::string step_range;
  OutputFormat format = OutputFormat::table;
  /// --output was given: print the points even on a terminal.
  bool format_given = false;
};
int metrics_command(const GlobalOptions& global, const MetricsOptions& options);

int artifacts_list_command(const GlobalOptions& global, const std::string& run, const std::string& step,
                           OutputFormat format);
struct ArtifactGetOptions {
  std::string run;
  std::string path;
  std::string step;
  std::string output;
};
int artifacts_get_command(const GlobalOptions& global, const ArtifactGetOptions& options);
int models_command(const GlobalOptions& global, const std::string& workflow, int limit, OutputFormat format);

struct PushOptions {
  std::vector<std::string> runs;
  std::string tracking_uri;
  std::string experiment;
  bool pending = false;
  bool dry_run = false;
  /// Trace each request (never headers or credentials) on stderr.
  bool verbose = false;
  int connections = 4;
  OutputFormat format = OutputFormat::table;
};
/// `kiln push`: runs to an MLflow tracking server. Exit 1 when a run could not be pushed.
int push_command(const GlobalOptions& global, const PushOptions& options);

/// `kiln log metric|param|tag|artifact ARGS...`, inside a step.
int log_command(const std::string& what, const std::vector<std::string>& args);

} // namespace kiln::cli
