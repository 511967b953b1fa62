#include "cli/app.hpp"
#include <algorithm>

#include "cli/commands.hpp"

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>

namespace kiln::cli {

namespace {

/// STEP,STEP,... values split at the commas outside brackets (a matrix
/// variant's id, train[C=1,penalty=l2], is one name), empty names dropped.
std::vector<std::string> split_step_names(const std::vector<std::string>& values) {
  std::vector<std::string> names;
  for (const std::string& value : values) {
    int depth = 0;
    std::string name;
    for (char ch : value) {
      depth += ch == '[' ? 1 : (ch == ']' && depth > 0 ? -1 : 0);
      if (ch == ',' && depth == 0) {
        names.push_back(std::move(name));
        name.clear();
        continue;
      }
      name += ch;
    }
    names.push_back(std::move(name));
  }
  names.erase(std::remove(names.begin(), names.end(), std::string()), names.end());
  return names;
}

/// -o,--output FORMAT, limited to what the command can write: any other
/// value, csv included, is a usage error (exit 2) naming the accepted ones.
void add_output_option(CLI::App* command, OutputFormat& format, std::vector<OutputFormat> accepted) {
  std::vector<std::string> names;
  for (auto f : accepted) {
    names.emplace_back(to_string(f));
  }
  command
      ->add_option_function<std::string>(
          "-o,--output", [&format](const std::string& text) { format = *parse_output_format(text); }, "Output format")
      ->check(CLI::IsMember(names))
      ->type_name("FORMAT")
      ->default_str(std::string(to_string(format)));
}

void add_resource_options(CLI::App* command, ResourceOptions& options) {
  command->add_option("--cpus", options.cpus, "CPUs steps' resources.cpus count against (default: the machine's)")
      ->check(CLI::Range(1, 4096));
  command
      ->add_option("--memory", options.memory,
                   "Memory steps' resources.memory count against, e.g. 16G "
                   "(default: the machine's)")
      ->type_name("SIZE");
  command
      ->add_option("--gpus", options.gpus,
                   "GPUs to give steps: a count or device ids, e.g. 0,1 "
                   "(default: what nvidia-smi lists)")
      ->type_name("N|IDS");
}

void add_workflow_options(CLI::App* command, WorkflowOptions& options) {
  command->add_option("file", options.file, "Workflow file")->required();
  command->add_option("-p,--param", options.params, "Override a parameter: NAME=VALUE (repeatable)")
      ->type_name("NAME=VALUE")
      ->allow_extra_args(false);
}

} // namespace

int main(int argc, char** argv) {
  // A reader that goes away (`kiln run ... | head -1`, a CI log pipe that
  // breaks) must not kill a runner mid-run: writes to it fail with EPIPE and
  // are dropped, and the run is still recorded to the end. Steps get the
  // default disposition back (plugins/local_executor.cpp).
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"kiln: run ML pipelines described in YAML as dependency graphs, and record every run.", "kiln"};
  app.set_version_flag("-V,--version", std::string("kiln ") + KILN_VERSION);
  app.require_subcommand(1);
  app.footer("Exit status: 0 success, 1 a step failed, 2 bad usage or invalid workflow, 3 kiln itself failed,\n"
             "128+N stopped by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM). See kiln(1), kiln-workflow(5) and "
             "kiln-tracking(7).");

  GlobalOptions global;
  app.add_option("--store", global.store, "Tracker store directory (default: $KILN_STORE, or the nearest .kiln/)")
      ->type_name("DIR");

  // kiln help [COMMAND]
  std::string help_topic;
  auto* help = app.add_subcommand("help", "Show help for kiln or a command");
  help->add_option("command", help_topic, "Command");

  std::vector<std::string> validate_files;
  auto* validate = app.add_subcommand("validate", "Check workflow files and report every problem");
  validate->add_option("files", validate_files, "Workflow files")->required();

  WorkflowOptions plan_options;
  OutputFormat plan_format = OutputFormat::table;
  auto* plan = app.add_subcommand("plan", "Show the resolved steps in execution order");
  add_workflow_options(plan, plan_options);
  add_output_option(plan, plan_format, {OutputFormat::table, OutputFormat::json});

  WorkflowOptions graph_options;
  std::string graph_format = "dot";
  auto* graph = app.add_subcommand("graph", "Print the step graph for Graphviz or Mermaid");
  add_workflow_options(graph, graph_options);
  graph->add_option("--format", graph_format, "dot or mermaid")->check(CLI::IsMember({"dot", "mermaid"}));

  RunOptions run_options;
  auto* run = app.add_subcommand("run", "Run a workflow and record it");
  add_workflow_options(run, run_options.workflow);
  run->add_option("-j,--jobs", run_options.jobs, "Steps at once (default: number of CPUs)")->check(CLI::Range(1, 4096));
  add_resource_options(run, run_options.resources);
  run->add_flag("-k,--keep-going", run_options.keep_going,
                "After a failure, run every step that does not depend on it");
  run->add_option("--executor", run_options.executor, "Where steps run")->check(CLI::IsMember({"local"}));
  run->add_option("--tag", run_options.tags, "Tag the run: KEY=VALUE (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  run->add_option("--only", run_options.only,
                  "Run only these steps, taking what they need as done (repeatable, or comma-separated)")
      ->type_name("STEP")
      ->allow_extra_args(false);
  run->add_option("--from", run_options.from, "Run this step and everything downstream of it (repeatable)")
      ->type_name("STEP")
      ->allow_extra_args(false);
  auto* force = run->add_option("--force", run_options.force,
                                "Run cached steps anyway: every one, or only these (--force=STEP,...)")
                    ->type_name("STEP")
                    ->expected(0, 1)
                    ->allow_extra_args(false);
  run->add_flag("--no-push", run_options.no_push,
                "Do not push to the tracking server at the end; `kiln push --pending` sends the run later");
  run->add_flag("--no-replay", run_options.no_replay,
                "Plan and decide every step even when nothing changed since the last wholly cached run");
  run->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  run->callback([&run_options, force] {
    for (auto* names : {&run_options.only, &run_options.from, &run_options.force}) {
      *names = split_step_names(*names);
    }
    // A bare --force (CLI11 gives it one empty value) forces every step.
    run_options.force_all = force->count() > 0 && run_options.force.empty();
  });

  ResumeOptions resume_options;
  auto* resume = app.add_subcommand("resume", "Continue a failed, cancelled or crashed run in place");
  resume->add_option("run", resume_options.run, "Run number, id, unique id prefix, or 'last'")->required();
  resume->add_flag("--allow-changed", resume_options.allow_changed,
                   "Resume even though the workflow file changed, with the file as it is now");
  add_resource_options(resume, resume_options.resources);
  resume->add_option("-j,--jobs", resume_options.jobs, "Steps at once (default: number of CPUs)")
      ->check(CLI::Range(1, 4096));
  resume->add_flag("-k,--keep-going", resume_options.keep_going,
                   "After a failure, run every step that does not depend on it");
  resume->add_flag("--no-push", resume_options.no_push,
                   "Do not push to the tracking server at the end; `kiln push --pending` sends the run later");
  resume->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  WorkflowOptions status_options;
  OutputFormat status_format = OutputFormat::table;
  auto* status = app.add_subcommand("status", "Which steps a run would run, and why (cache keys against the store)");
  add_workflow_options(status, status_options);
  add_output_option(status, status_format, {OutputFormat::table, OutputFormat::json});
  status->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  std::string why_run;
  std::string why_step;
  OutputFormat why_format = OutputFormat::table;
  auto* why = app.add_subcommand("why", "Which part of a step's cache key changed since its last successful run");
  why->add_option("run", why_run, "Run number, id, unique id prefix, or 'last'")->required();
  why->add_option("step", why_step, "Step id")->required();
  add_output_option(why, why_format, {OutputFormat::table, OutputFormat::json});
  why->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  PushOptions push_options;
  auto* push = app.add_subcommand("push", "Upload runs to an MLflow tracking server");
  push->add_option("runs", push_options.runs, "Run numbers, ids, unique id prefixes, or 'last'");
  push->add_option("--tracking-uri", push_options.tracking_uri,
                   "MLflow tracking server (default: the run's workflow, then $MLFLOW_TRACKING_URI)")
      ->type_name("URI");
  push->add_option("--experiment", push_options.experiment,
                   "MLflow experiment (default: the workflow's, $MLFLOW_EXPERIMENT_NAME, the workflow's name)")
      ->type_name("NAME");
  push->add_flag("--pending", push_options.pending, "Every finished run not yet fully pushed");
  push->add_flag("--dry-run", push_options.dry_run,
                 "Say what would be sent, and what must be changed to fit "
                 "MLflow's limits, without sending anything");
  push->add_flag("-v,--verbose", push_options.verbose, "Trace each HTTP request on stderr (never credentials)");
  push->add_option("--connections", push_options.connections, "Parallel connections for steps and artifacts")
      ->check(CLI::Range(1, 16));
  add_output_option(push, push_options.format, {OutputFormat::table, OutputFormat::json});
  push->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  auto* runs = app.add_subcommand("runs", "Inspect recorded runs");
  runs->require_subcommand(1);
  ListOptions list_options;
  auto* list = runs->add_subcommand("list", "Recorded runs, newest first");
  list->add_option("--workflow", list_options.workflow, "Only runs of this workflow");
  list->add_option("--status", list_options.status, "Only runs with this status")
      ->check(CLI::IsMember({"running", "succeeded", "failed", "cancelled", "crashed"}));
  list->add_option("--since", list_options.since, "Only runs started within this long, e.g. 7d, 12h");
  list->add_option("-n,--limit", list_options.limit, "At most this many (0: all)")->capture_default_str();
  add_output_option(list, list_options.format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  list->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  std::string show_run;
  OutputFormat show_format = OutputFormat::table;
  auto* show = runs->add_subcommand("show", "One run: params, tags, steps, metrics, artifacts, attempts");
  show->add_option("run", show_run, "Run number, id, unique id prefix, or 'last'")->required();
  add_output_option(show, show_format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  show->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  SearchOptions search_options;
  auto* search = runs->add_subcommand("search", "Runs matching a filter, e.g. \"metrics.accuracy > 0.9 and "
                                                "params.model = 'lr'\" (MLflow syntax, plus OR and parentheses)");
  search->add_option("filter", search_options.filter, "The filter; see kiln-tracking(7)")->required();
  search->add_option("--order-by", search_options.order_by,
                     "e.g. \"metrics.accuracy DESC, attributes.start_time\" (default: newest first)");
  search->add_option("-n,--limit", search_options.limit, "At most this many (0: all)")->capture_default_str();
  add_output_option(search, search_options.format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  search->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  std::vector<std::string> compare_runs;
  OutputFormat compare_format = OutputFormat::table;
  auto* compare = runs->add_subcommand("compare", "Params and final metrics of runs side by side");
  compare->add_option("runs", compare_runs, "Two or more runs")->required()->expected(2, 1000);
  add_output_option(compare, compare_format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  compare->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  std::vector<std::string> delete_runs;
  auto* remove = runs->add_subcommand("delete", "Delete runs, their records, logs and the artifacts only they use");
  remove->add_option("runs", delete_runs, "Runs to delete")->required();
  OutputFormat delete_format = OutputFormat::table;
  add_output_option(remove, delete_format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  remove->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  GcOptions gc_options;
  auto* gc = app.add_subcommand("gc", "Retention: remove old runs, then artifacts no run references");
  gc->add_option("--keep-last", gc_options.keep_last, "Keep the newest N finished runs of each workflow")
      ->check(CLI::Range(0, 1000000000));
  gc->add_option("--older-than", gc_options.older_than, "Only runs that ended longer ago than this, e.g. 30d");
  gc->add_flag("--dry-run", gc_options.dry_run, "Say what would be removed, remove nothing");
  add_output_option(gc, gc_options.format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  gc->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  MetricsOptions metrics_options;
  auto* metrics =
      app.add_subcommand("metrics", "Metric histories of a run: plots on a terminal, every point otherwise");
  metrics->add_option("run", metrics_options.run, "Run number, id, unique id prefix, or 'last'")->required();
  metrics->add_option("key", metrics_options.key, "Only this metric");
  metrics->add_option("--step", metrics_options.step, "Only what this step logged");
  metrics->add_option("--step-range", metrics_options.step_range, "Only points with A <= step <= B")->type_name("A:B");
  metrics
      ->add_option_function<std::string>(
          "-o,--output",
          [&metrics_options](const std::string& text) {
            metrics_options.format = *parse_output_format(text);
            metrics_options.format_given = true;
          },
          "table, json or csv (default: plots on a terminal, a table of points otherwise)")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->type_name("FORMAT");
  metrics->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  auto* artifacts = app.add_subcommand("artifacts", "What runs' steps produced");
  artifacts->require_subcommand(1);
  std::string artifacts_run;
  std::string artifacts_step;
  OutputFormat artifacts_format = OutputFormat::table;
  auto* artifacts_list = artifacts->add_subcommand("list", "A run's artifacts");
  artifacts_list->add_option("run", artifacts_run, "Run number, id, unique id prefix, or 'last'")->required();
  artifacts_list->add_option("step", artifacts_step, "Only this step's");
  add_output_option(artifacts_list, artifacts_format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  artifacts_list->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");
  ArtifactGetOptions get_options;
  auto* artifacts_get = artifacts->add_subcommand("get", "Copy an artifact (or a directory of them) out of the store");
  artifacts_get->add_option("run", get_options.run, "Run number, id, unique id prefix, or 'last'")->required();
  artifacts_get->add_option("path", get_options.path, "Its path, as kiln artifacts list shows it")->required();
  artifacts_get->add_option("--step", get_options.step, "The step that recorded it, when several did");
  artifacts_get->add_option("-o,--output", get_options.output, "Where to write it (default: its name, here)")
      ->type_name("DEST");
  artifacts_get->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  std::string models_workflow;
  int models_limit = 20;
  OutputFormat models_format = OutputFormat::table;
  auto* models = app.add_subcommand("models", "Models train steps produced, with their evaluation's metrics");
  models->add_option("--workflow", models_workflow, "Only this workflow's");
  models->add_option("-n,--limit", models_limit, "At most this many (0: all)")->capture_default_str();
  add_output_option(models, models_format, {OutputFormat::table, OutputFormat::json, OutputFormat::csv});
  models->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  std::string log_what;
  std::vector<std::string> log_args;
  auto* log = app.add_subcommand("log", "Inside a step: record a metric, param, tag or artifact");
  log->add_option("what", log_what, "metric, param, tag or artifact")
      ->required()
      ->check(CLI::IsMember({"metric", "param", "tag", "artifact"}));
  log->add_option("args", log_args, "KEY=VALUE... (metric: also step=N timestamp=MS), or PATH...")->required();

  std::string logs_run;
  std::string logs_step;
  int logs_attempt = 0;
  std::string logs_stream = "both";
  auto* logs = app.add_subcommand("logs", "Print what a run's steps wrote");
  logs->add_option("run", logs_run, "Run number, id, unique id prefix, or 'last'")->required();
  logs->add_option("step", logs_step, "Only this step");
  logs->add_option("--attempt", logs_attempt, "This attempt (default: the last)")->check(CLI::PositiveNumber);
  logs->add_option("--stream", logs_stream, "out, err or both")->check(CLI::IsMember({"out", "err", "both"}));
  logs->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" that exit 0.
    const int code = app.exit(e);
    return code == 0 ? k_exit_ok : k_exit_usage;
  }

  try {
    if (*help) {
      if (help_topic.empty()) {
        // app.help() would describe the selected subcommand, `help` itself.
        std::fputs(app.get_formatter()->make_help(&app, "", CLI::AppFormatMode::Normal).c_str(), stdout);
        return k_exit_ok;
      }
      for (auto* sub : app.get_subcommands({})) {
        if (sub->get_name() == help_topic) {
          std::fputs(sub->help().c_str(), stdout);
          return k_exit_ok;
        }
      }
      std::fprintf(stderr, "kiln: error: no command '%s'; see kiln help\n", help_topic.c_str());
      return k_exit_usage;
    }
    if (*validate) {
      return validate_command(validate_files);
    }
    if (*plan) {
      return plan_command(plan_options, plan_format);
    }
    if (*graph) {
      return graph_command(graph_options, graph_format);
    }
    if (*run) {
      return run_command(global, run_options, argc, argv);
    }
    if (*resume) {
      return resume_command(global, resume_options, argc, argv);
    }
    if (*status) {
      return status_command(global, status_options, status_format);
    }
    if (*why) {
      return why_command(global, why_run, why_step, why_format);
    }
    if (*push) {
      return push_command(global, push_options);
    }
    if (*list) {
      return runs_list_command(global, list_options);
    }
    if (*show) {
      return runs_show_command(global, show_run, show_format);
    }
    if (*logs) {
      return logs_command(global, logs_run, logs_step, logs_attempt, logs_stream);
    }
    if (*search) {
      return runs_search_command(global, search_options);
    }
    if (*compare) {
      return runs_compare_command(global, compare_runs, compare_format);
    }
    if (*remove) {
      return runs_delete_command(global, delete_runs, delete_format);
    }
    if (*gc) {
      return gc_command(global, gc_options);
    }
    if (*metrics) {
      return metrics_command(global, metrics_options);
    }
    if (*artifacts_list) {
      return artifacts_list_command(global, artifacts_run, artifacts_step, artifacts_format);
    }
    if (*artifacts_get) {
      return artifacts_get_command(global, get_options);
    }
    if (*models) {
      return models_command(global, models_workflow, models_limit, models_format);
    }
    if (*log) {
      return log_command(log_what, log_args);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: internal error: %s\n", e.what());
    return k_exit_internal;
  }
  return k_exit_usage;
}

} // namespace kiln::cli
