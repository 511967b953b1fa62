#include "cli/app.hpp"

#include "cli/commands.hpp"

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>

namespace kiln::cli {

namespace {

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
             "128+N stopped by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM). See kiln(1) and kiln-workflow(5).");

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
  run->add_flag("-k,--keep-going", run_options.keep_going,
                "After a failure, run every step that does not depend on it");
  run->add_option("--executor", run_options.executor, "Where steps run")->check(CLI::IsMember({"local"}));
  run->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

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
  auto* show = runs->add_subcommand("show", "One run: params, steps, attempts");
  show->add_option("run", show_run, "Run number, id, unique id prefix, or 'last'")->required();
  add_output_option(show, show_format, {OutputFormat::table, OutputFormat::json});
  show->add_option("--store", global.store, "Tracker store directory")->type_name("DIR");

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
    if (*list) {
      return runs_list_command(global, list_options);
    }
    if (*show) {
      return runs_show_command(global, show_run, show_format);
    }
    if (*logs) {
      return logs_command(global, logs_run, logs_step, logs_attempt, logs_stream);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: internal error: %s\n", e.what());
    return k_exit_internal;
  }
  return k_exit_usage;
}

} // namespace kiln::cli
