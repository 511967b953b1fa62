#pragma once
// What steps record besides their status: metric histories, params, tags and
// artifacts. Plain values shared by the ingestion paths (metrics files, the
// stdout line protocol, `kiln log`), the tracker store and the history CLI.
//
// A value logged by a step belongs to that step of that run; one logged for
// the run as a whole (workflow params, system and workflow tags) has an empty
// step id.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::core {

struct MetricPoint {
  std::string key;
  /// NaN and the infinities are values like any other.
  double value = 0;
  /// The training step (epoch, batch...) the value belongs to; 0 when not given.
  std::int64_t step = 0;
  /// ms since the Unix epoch; 0 means "not given", for the recorder to fill in.
  std::int64_t timestamp_ms = 0;
};

/// One step's history of one key, summarised.
struct MetricSummary {
  std::string step_id;
  std::string key;
  /// The point with the greatest (step, timestamp), later logging winning ties.
  double last = 0;
  std::int64_t last_step = 0;
  std::int64_t last_timestamp_ms = 0;
  /// Over the non-NaN values; NaN when every value is NaN.
  double min = 0;
  double max = 0;
  std::int64_t count = 0;
};

/// A param or tag; step_id "" for the run's own.
struct KeyValue {
  std::string step_id;
  std::string key;
  std::string value;
};

using KeyValues = std::vector<std::pair<std::string, std::string>>;

enum class ArtifactKind {
  /// A declared output of a task or evaluate step, or a train step's output other than its model.
  output,
  /// The `model` output of a train step.
  model,
  /// A declared output of a predict step.
  prediction,
  /// Logged by the step itself (line protocol or `kiln log artifact`).
  logged,
};
std::string_view to_string(ArtifactKind kind);
std::optional<ArtifactKind> parse_artifact_kind(std::string_view text);

struct ArtifactRecord {
  std::string step_id;
  /// Relative to the step's workdir, '/'-separated, normalised (no "." or
  /// ".." components): "model.pkl", "reports/confusion.png".
  std::string path;
  /// 64 lower-case hex digits; the blob's name in the store.
  std::string sha256;
  std::int64_t size = 0;
  ArtifactKind kind = ArtifactKind::output;
  /// The declared output's name ("model"); "" for outputs given as a list and logged artifacts.
  std::string name;
  std::int64_t created_ms = 0;
};

/// The rules MLflow applies to metric, param and tag keys (alphanumerics,
/// '_', '-', '.', ' ', '/'; at most 250 characters; not empty, no "..",
/// not absolute): "" when `key` follows them, else why not.
std::string check_key(std::string_view key);

/// Whose value it is, for messages: "the run" (step "") or "step 'train'".
std::string describe_owner(std::string_view step);

} // namespace kiln::core
