#pragma once
// "Did you mean" for misspelt keys, step ids, parameters and enum values.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::workflows {

/// Optimal string alignment distance (Levenshtein plus adjacent
/// transpositions), comparing ASCII letters case-insensitively.
std::size_t edit_distance(std::string_view a, std::string_view b);

/// The candidate most likely meant by `word`: the closest within a third of
/// its length (at least 1), first in candidate order on ties; nullopt when
/// none is that close or `word` is itself a candidate.
std::optional<std::string_view> closest_match(std::string_view word, const std::vector<std::string_view>& candidates);

/// " (did you mean 'x'?)" or "".
std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates);

} // namespace kiln::workflows
