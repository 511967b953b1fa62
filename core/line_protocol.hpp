#pragma once
// The line protocol a step prints on its stdout to record things while it
// runs, like GitHub Actions' workflow commands. A command is a whole line
// starting with "::kiln::" (a trailing '\r' is ignored); any other line is
// ordinary output:
//
//   ::kiln::metric KEY=NUMBER [KEY=NUMBER...] [step=INT] [timestamp=MS]
//   ::kiln::param KEY=VALUE [KEY=VALUE...]
//   ::kiln::tag KEY=VALUE [KEY=VALUE...]
//   ::kiln::artifact PATH [PATH...]
//
// Fields are separated by spaces or tabs. A value (or a path) containing
// spaces is written in double quotes, with \" and \\ as escapes. NUMBER is a
// decimal or exponent float, or nan, inf, -inf (any case). In a metric
// command, `step` and `timestamp` apply to every metric on the line (so
// neither can be a metric name there). Keys follow check_key().
//
// A line that starts with "::kiln::" but is malformed (unknown command, bad
// number, bad key, missing '=') is an error, which fails the step: a typo
// must not silently lose a metric.

#include "core/expected.hpp"
#include "core/tracking.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

inline constexpr std::string_view k_protocol_prefix = "::kiln::";

struct ProtocolCommand {
  enum class Kind { metric, param, tag, artifact };
  Kind kind = Kind::metric;
  /// Kind::metric: timestamp_ms 0 unless given on the line.
  std::vector<MetricPoint> metrics;
  /// Kind::param and Kind::tag, in line order.
  KeyValues values;
  /// Kind::artifact.
  std::vector<std::string> paths;
};

/// std::nullopt for an ordinary line (one not starting with the prefix).
Expected<std::optional<ProtocolCommand>> parse_protocol_line(std::string_view line);

/// Parses a number as the protocol and `kiln log metric` accept it.
std::optional<double> parse_metric_value(std::string_view text);

} // namespace kiln::core
