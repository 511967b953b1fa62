#pragma once
// Skip-unchanged caching: what a step's cache key covers. A key is the
// SHA-256 of a JSON object of named components, kept in the store beside it
// so that `kiln why` and `kiln status` can name the component that changed
// rather than say "the key differs":
//
//   command          the command as planned (steps.* references unrendered;
//                    their values are "value:steps.ID..." components)
//   workdir          absolute
//   outputs          the declared output paths
//   env:NAME         the workflow's and the step's own env, rendered
//   param:NAME       each param the step's templates or condition use
//   input:PATH       each input file's SHA-256 (or why it has none)
//   upstream:ID      each need's key ("-" for a need that is not cached)
//   value:REF        each steps.* value the command used when it started
//   version          bumped when kiln changes what a key means
//
// The variables of the runner's own environment are not covered (PATH and
// HOME differ between a terminal and cron); a step that depends on one
// declares it in its env.

#include "core/input_files.hpp"
#include "core/plan.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::core {

struct CacheKey {
  std::string key;
  /// The components as a JSON object, sorted by name, compact: the text the
  /// key hashes (what the store keeps).
  std::string components_json;
};

/// The key of `step` given its inputs as resolved now, its needs' keys
/// ("" for a need without one) and the steps.* values its command used.
CacheKey compute_cache_key(const Plan& plan, const PlannedStep& step, const std::vector<InputFile>& inputs,
                           const std::function<std::string(int need)>& upstream_key,
                           const std::vector<std::pair<std::string, std::string>>& values = {});

/// The first input with a problem (missing, unreadable), as "PATH: problem"; "" for none.
std::string input_problem(const std::vector<InputFile>& inputs);

/// What differs from `before` to `after`, one readable line per component,
/// inputs first: "input data/iris.csv changed (sha256 ... -> ...)",
/// "param C: 1 -> 10", "upstream step 'prepare' changed (its key differs)",
/// "command: A -> B". Empty when equal.
std::vector<std::string> explain_changes(const nlohmann::json& before, const nlohmann::json& after);

} // namespace kiln::core
