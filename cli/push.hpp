#pragma once
// Where runs are pushed, decided once for `kiln push` and for the push at
// the end of `kiln run`.

#include "core/tracker_store.hpp"
#include "core/workflow.hpp"

#include <optional>
#include <string>

namespace kiln::cli {

/// A tracking server and experiment, as resolved when a run starts: the
/// workflow's tracking: section first, then MLFLOW_TRACKING_URI and
/// MLFLOW_EXPERIMENT_NAME, then the workflow's name for the experiment.
/// nullopt when nothing names a server.
struct PushTarget {
  /// As given; may hold credentials (from the environment), never stored.
  std::string uri;
  std::string experiment;
};
std::optional<PushTarget> run_push_target(const core::TrackingConfig& tracking, const std::string& workflow_name);

/// Records that the run is to be pushed (state pending), so a runner killed
/// before its push leaves work for `kiln push --pending`. Returns a warning, or "".
std::string record_pending_push(core::TrackerStore& store, std::int64_t run, const PushTarget& target);

/// The push at the end of `kiln run`: bounded retries, a one-line report on
/// stdout, or a warning on stderr. Never changes the run's exit status.
void auto_push(core::TrackerStore& store, std::int64_t run, const PushTarget& target);

} // namespace kiln::cli
