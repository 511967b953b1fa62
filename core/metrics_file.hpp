#pragma once
// Reading a step's declared metrics file when it ends. Three shapes:
//
// - A JSON object (.json): every number is a metric at step 0, nested
//   objects flattened with '.' ({"eval": {"f1": 0.9}} gives eval.f1); an
//   array of numbers is a history, its index the step (an array of objects
//   likewise, per key). The strings "NaN", "Infinity" and "-Infinity" are
//   those values, and so are the bare words Python's json module writes
//   for them; other strings, booleans and nulls are not metrics and are left
//   out. A top-level "step" or "timestamp" applies to the object's metrics,
//   as in JSON Lines.
// - JSON Lines (.jsonl, .ndjson, or a .json file holding more than one
//   object, one per line): each line an object as above, whose "step"
//   (integer) and "timestamp" (integer ms) apply to its metrics; without
//   "step" a line's 0-based index among the file's objects is its step.
//   Blank lines are skipped.
// - YAML (.yaml, .yml): an object as for JSON, converted by the caller's
//   loader (core knows no YAML).
//
// Extensions are compared ignoring case; any other is read as .json. An
// empty file holds no metrics. Points without a timestamp get `now_ms`.
// Metric keys must pass check_key(). Errors name the file and, for JSON
// Lines, the line: "metrics.jsonl:17: expected an object, got an array";
// a file that cannot be read gives "<file>: <the system's reason>".

#include "core/expected.hpp"
#include "core/tracking.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace kiln::core {

/// Parses YAML text into JSON (numbers as numbers); errors as "file:line:col: message".
using YamlToJson = std::function<Expected<nlohmann::json>(const std::string& text, const std::string& file)>;

Expected<std::vector<MetricPoint>> read_metrics_file(const std::filesystem::path& file, std::int64_t now_ms,
                                                     const YamlToJson& yaml_to_json);

/// The points of one JSON object, flattened as above, appended to `out`.
/// "step" and "timestamp" are ordinary keys here (read_metrics_file takes
/// them out first), and keys are not checked. Anything but an object adds nothing.
void flatten_metrics(const nlohmann::json& object, std::int64_t step, std::int64_t timestamp_ms,
                     std::vector<MetricPoint>& out);

} // namespace kiln::core
