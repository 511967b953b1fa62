#pragma once
// Pieces the history commands share: opening the store and a run for
// reading, and printing a list of runs or a table in the chosen format.

#include "cli/commands.hpp"
#include "cli/console.hpp"
#include "core/tracker_store.hpp"

#include <memory>
#include <string>
#include <vector>

namespace kiln::cli {

/// Opens the store to read its history: a store that does not exist is
/// reported (exit 2) rather than created empty. Returns the exit status.
int open_history(const GlobalOptions& global, std::unique_ptr<core::TrackerStore>& out);

struct OpenedRun {
  std::unique_ptr<core::TrackerStore> store;
  core::RunRecord run;
};

/// Opens the store and finds the run `ref` names; on failure prints why and
/// returns the exit status.
int open_run(const GlobalOptions& global, const std::string& ref, OpenedRun& out);

/// `runs list` and `runs search` output: a table, CSV, or a JSON array of runs.
void print_runs(const std::vector<core::RunRecord>& runs, OutputFormat format, const core::TrackerStore& store);

/// A table as text or CSV (json is each command's own).
void print_table(const Table& table, OutputFormat format);

/// 1.2 KiB, 3.4 MiB...
std::string format_size(std::int64_t bytes);

} // namespace kiln::cli
