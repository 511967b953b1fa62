#pragma once
// Durations as written in workflow files: a sequence of <integer><unit> with
// units d, h, m, s, ms in strictly descending order ("1h30m", "90s", "500ms").

#include "core/clock.hpp"
#include "core/expected.hpp"

#include <string>
#include <string_view>

namespace kiln::core {

/// Parses "500ms", "90s", "5m", "1h30m", "2h", "1d", "1d2h3m4s5ms". A bare
/// number is an error whose message suggests a unit. Negative, fractional
/// and empty texts are errors; so is a total above about 100 years.
Expected<Millis> parse_duration(std::string_view text);

/// The inverse of parse_duration, largest units first, zero parts left out:
/// 90000 -> "1m30s", 1500 -> "1s500ms", 0 -> "0s", 86400000 -> "1d".
/// Negative values get a leading '-' (parse_duration does not accept them).
std::string format_duration(Millis duration);

/// "4G", "512M", "1.5Gi", "2048" (bytes): K, M, G, T are powers of 1024
/// (as Slurm and Kubernetes' Gi read them; Ki, Mi, Gi, Ti and a trailing B
/// are accepted too). Must be above zero.
Expected<std::int64_t> parse_size(std::string_view text);

} // namespace kiln::core
