// Commands about skip-unchanged caching: `kiln status FILE` (which steps a
// run would run, and why) and `kiln why RUN STEP` (which components of a
// step's cache key changed).

#include "cli/commands.hpp"
#include "cli/console.hpp"
#include "cli/context.hpp"
#include "cli/history.hpp"
#include "core/plan.hpp"
#include "core/step_cache.hpp"
#include "core/step_decider.hpp"
#include "core/template.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>

namespace kiln::cli {

namespace {

struct StepForecast {
  std::string id;
  /// "runs", "cached" or "restores" (cached after restoring outputs).
  std::string verdict;
  std::vector<std::string> reasons;
};

nlohmann::json parse_components(const std::string& text) {
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  return parsed.is_object() ? parsed : nlohmann::json::object();
}

} // namespace

int status_command(const GlobalOptions& global, const WorkflowOptions& options, OutputFormat format) {
  auto workflow = load_workflow(options);
  if (!workflow) {
    return k_exit_usage;
  }
  core::PlanContext context{"00000000000000000000000000000000", 0, "", process_environment()};
  auto plan = core::make_plan(*workflow, context);
  if (!plan) {
    std::fprintf(stderr, "%s\n", plan.error().c_str());
    return k_exit_usage;
  }
  std::unique_ptr<core::TrackerStore> store;
  std::error_code missing;
  if (!std::filesystem::exists(store_directory(global.store) / "kiln.db", missing)) {
    // No store yet: nothing was ever run here, so everything would run.
    std::cout << workflow->name << ": " << plan->steps.size() << " of " << plan->steps.size()
              << " steps would run (no runs recorded yet in " << store_directory(global.store).string() << ")\n";
    return k_exit_ok;
  }
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  core::InMemoryHashMemo memo;
  if (auto loaded = store->load_hash_memo()) {
    memo = core::InMemoryHashMemo(std::move(*loaded));
  }
  core::FileHasher hasher(memo);
  constexpr std::int64_t k_no_run = std::numeric_limits<std::int64_t>::max();
  core::CacheIndex cache_index(*store, workflow->name, k_no_run);

  const std::size_t n = plan->steps.size();
  std::vector<StepForecast> forecasts(n);
  std::vector<std::string> keys(n);
  std::vector<char> runs(n, 0);
  // Where a cached step's outputs and metrics would come from.
  std::vector<std::optional<core::CacheHit>> sources(n);
  for (int index : plan->order) {
    const core::PlannedStep& step = plan->steps[index];
    StepForecast& f = forecasts[index];
    f.id = step.id;
    f.verdict = "runs";
    runs[index] = 1;
    if (!step.when.empty()) {
      // Upstream statuses and metrics are known only during the run.
      f.reasons.push_back("when: " + step.when.text + " (decided as it starts)");
    }
    if (!step.cache) {
      f.reasons.push_back("not cached (declare its inputs and outputs, or set cache: true)");
      continue;
    }
    std::string upstream;
    for (int need : step.needs) {
      if (runs[need] && plan->steps[need].cache) {
        upstream = plan->steps[need].id;
        break;
      }
    }
    if (!upstream.empty()) {
      f.reasons.push_back("upstream step '" + upstream + "' runs");
      continue;
    }
    // The steps.* values its command would use: those of the executions
    // its upstream steps would reuse.
    std::vector<std::pair<std::string, std::string>> values;
    std::string unknown;
    if (step.deferred) {
      for (const std::string& text : step.argv) {
        for (const core::TemplateRef& ref : core::scan_template(text).refs) {
          const auto parsed = core::parse_step_ref(ref.name);
          int source = -1;
          for (std::size_t i = 0; parsed && i < n; ++i) {
            if (plan->steps[i].id == parsed->step) {
              source = static_cast<int>(i);
            }
          }
          if (source < 0 || !sources[source] || parsed->field != "outputs") {
            unknown = "its command uses steps." + ref.name + ", known only when it starts";
            continue;
          }
          if (auto outputs = store->step_outputs(sources[source]->run, sources[source]->step)) {
            for (const auto& [name, value] : *outputs) {
              if (name == parsed->name) {
                values.emplace_back("steps." + ref.name, value);
              }
            }
          }
        }
      }
      std::sort(values.begin(), values.end());
      values.erase(std::unique(values.begin(), values.end()), values.end());
    }
    if (!unknown.empty()) {
      f.reasons.push_back(unknown);
      continue;
    }
    const auto inputs = core::resolve_inputs(step.workdir, step.inputs, hasher);
    const core::CacheKey key = core::compute_cache_key(
        *plan, step, inputs, [&](int need) { return keys[static_cast<std::size_t>(need)]; }, values);
    keys[index] = key.key;
    if (std::string problem = core::input_problem(inputs); !problem.empty()) {
      f.reasons.push_back("input " + problem);
      continue;
    }
    auto lookup = core::look_up_cache(*store, cache_index, hasher, step, key.key, 0);
    if (!lookup) {
      std::fprintf(stderr, "kiln: error: %s\n", lookup.error().c_str());
      return k_exit_internal;
    }
    using State = core::CacheLookup::State;
    if (lookup->state == State::hit || lookup->state == State::restorable) {
      runs[index] = 0;
      sources[index] = lookup->hit;
      f.verdict = lookup->state == State::hit ? "cached" : "restores";
      f.reasons.push_back("unchanged since run " + std::to_string(lookup->hit.run) +
                          (lookup->state == State::hit ? ""
                                                       : "; " + std::to_string(lookup->missing.size()) +
                                                             " output(s) gone, restored from the artifact store"));
      continue;
    }
    if (lookup->state == State::stale) {
      f.reasons.push_back(lookup->problem);
      continue;
    }
    auto past = store->last_execution(workflow->name, step.id, k_no_run);
    if (!past) {
      std::fprintf(stderr, "kiln: error: %s\n", past.error().c_str());
      return k_exit_internal;
    }
    if (!*past) {
      f.reasons.push_back("no earlier successful execution");
      continue;
    }
    auto changes =
        core::explain_changes(parse_components((*past)->cache.components_json), parse_components(key.components_json));
    if (changes.empty()) {
      f.reasons.push_back("the execution with this key recorded no outputs");
    }
    for (auto& change : changes) {
      f.reasons.push_back(std::move(change) + " (since run " + std::to_string((*past)->run) + ")");
    }
  }
  if (auto saved = store->save_hash_memo(memo.changed()); !saved) {
    std::fprintf(stderr, "kiln: warning: %s\n", saved.error().c_str());
  }

  int to_run = 0;
  for (char r : runs) {
    to_run += r;
  }
  if (format == OutputFormat::json) {
    nlohmann::json out = {{"workflow", workflow->name}, {"runs", to_run}, {"steps", nlohmann::json::array()}};
    for (int index : plan->order) {
      const StepForecast& f = forecasts[index];
      out["steps"].push_back({{"id", f.id}, {"verdict", f.verdict}, {"reasons", f.reasons}});
    }
    std::cout << out.dump(2) << '\n';
    return k_exit_ok;
  }
  const bool color = detect_terminal(STDOUT_FILENO).color;
  std::cout << workflow->name << ": " << to_run << " of " << n << " steps would run\n";
  for (int index : plan->order) {
    const StepForecast& f = forecasts[index];
    const Style style = f.verdict == "runs" ? Style::yellow : Style::green;
    std::cout << "  " << paint(f.verdict, style, color) << std::string(9 - f.verdict.size(), ' ') << f.id;
    for (std::size_t i = 0; i < f.reasons.size(); ++i) {
      std::cout << (i == 0 ? ": " : "\n" + std::string(11 + f.id.size() + 2, ' ')) << f.reasons[i];
    }
    std::cout << '\n';
  }
  return k_exit_ok;
}

int why_command(const GlobalOptions& global, const std::string& run_ref, const std::string& step, OutputFormat format) {
  OpenedRun opened;
  if (int status = open_run(global, run_ref, opened); status != k_exit_ok) {
    return status;
  }
  auto& store = *opened.store;
  const core::RunRecord& run = opened.run;
  auto steps = store.steps(run.number);
  if (!steps) {
    std::fprintf(stderr, "kiln: error: %s\n", steps.error().c_str());
    return k_exit_internal;
  }
  const core::StepRecord* record = nullptr;
  for (const auto& s : *steps) {
    if (s.id == step) {
      record = &s;
    }
  }
  if (record == nullptr) {
    std::fprintf(stderr, "kiln: error: run %lld has no step '%s'\n", static_cast<long long>(run.number), step.c_str());
    return k_exit_usage;
  }
  auto cache = store.step_cache(run.number, step);
  if (!cache) {
    std::fprintf(stderr, "kiln: error: %s\n", cache.error().c_str());
    return k_exit_internal;
  }
  std::string verdict;
  std::vector<std::string> changes;
  std::optional<std::int64_t> compared;
  const std::string status(core::to_string(record->status));
  if (!*cache || (*cache)->key.empty()) {
    verdict =
        record->status == core::StepStatus::pending || record->status == core::StepStatus::skipped ||
                record->status == core::StepStatus::cancelled
            ? "has no cache key: it never became ready" + (record->reason.empty() ? "" : " (" + record->reason + ")")
            : "has no cache key: it is not cached (declare its inputs and outputs, or set cache: true)";
  } else if ((*cache)->cached_from) {
    compared = (*cache)->cached_from;
    verdict = "was cached: its key matched run " + std::to_string(*(*cache)->cached_from) + "'s execution";
    if (record->status != core::StepStatus::cached) {
      verdict = status + ": its key matched run " + std::to_string(*(*cache)->cached_from) + "'s execution" +
                (record->reason.empty() ? "" : ", but " + record->reason);
    }
  } else {
    auto past = store.last_execution(run.workflow_name, step, run.number);
    if (!past) {
      std::fprintf(stderr, "kiln: error: %s\n", past.error().c_str());
      return k_exit_internal;
    }
    if (!*past) {
      verdict = status + ": there was no earlier successful execution to reuse";
    } else {
      compared = (*past)->run;
      changes = core::explain_changes(parse_components((*past)->cache.components_json),
                                      parse_components((*cache)->components_json));
      if (changes.empty()) {
        verdict = status + ": its key equals run " + std::to_string((*past)->run) +
                  "'s, but that execution could not stand for it (an output was changed or gone, or --force)";
      } else {
        verdict = status + ": " + std::to_string(changes.size()) + " change" + (changes.size() == 1 ? "" : "s") +
                  " since run " + std::to_string((*past)->run) + ", its last successful execution";
      }
    }
  }
  if (format == OutputFormat::json) {
    nlohmann::json out = {{"run", run.number},
                          {"step", step},
                          {"status", status},
                          {"key", *cache ? (*cache)->key : ""},
                          {"compared_with", compared ? nlohmann::json(*compared) : nlohmann::json(nullptr)},
                          {"verdict", verdict},
                          {"changes", changes}};
    std::cout << out.dump(2) << '\n';
    return k_exit_ok;
  }
  std::cout << step << " in run " << run.number << " " << verdict << '\n';
  for (const std::string& change : changes) {
    std::cout << "  " << change << '\n';
  }
  return k_exit_ok;
}

} // namespace kiln::cli
