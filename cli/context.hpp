#pragma once
// What the commands learn about their surroundings: who runs them, on which
// host, the git state of the workflow's repository, and which store to use
// (opened with crash recovery, so every command that reads the store first
// settles the runs of runners that died).

#include "core/expected.hpp"
#include "core/tracker_store.hpp"

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace kiln::cli {

struct GitInfo {
  std::string commit;
  std::string branch;
  bool dirty = false;
};

/// The git state of the repository holding `dir`, or nothing when it is not
/// in one (or git is not installed). Costs one `git status` when it is.
std::optional<GitInfo> git_info(const std::filesystem::path& dir);

std::string current_user();

/// argv joined and shell-quoted, as recorded with a run.
std::string command_line(int argc, char** argv);

/// --store DIR, else $KILN_STORE, else the nearest .kiln/ up from the
/// current directory, else ./.kiln.
std::filesystem::path store_directory(const std::string& flag);

/// Opens the store, marks runs whose runner died as crashed, and stops the
/// step processes they left behind. Recovery problems are warnings.
core::Expected<std::unique_ptr<core::TrackerStore>> open_store(const std::string& flag);

} // namespace kiln::cli
