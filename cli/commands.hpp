#pragma once
// The commands: each parses nothing itself (app.cpp does, with CLI11),
// calls a few core entry points, and prints.

#include "cli/output.hpp"

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
};

struct RunOptions {
  WorkflowOptions workflow;
  int jobs = 0;
  bool keep_going = false;
  std::string executor = "local";
};

int validate_command(const std::vector<std::string>& files);
int plan_command(const WorkflowOptions& options, OutputFormat format);
int graph_command(const WorkflowOptions& options, const std::string& format);
int run_command(const GlobalOptions& global, const RunOptions& options, int argc, char** argv);

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

} // namespace kiln::cli
