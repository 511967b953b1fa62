#include "core/step_decider.hpp"

#include "core/template.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>

namespace kiln::core {

namespace {

/// A text value as a condition sees it: a number when it reads as one,
/// true/false as booleans, else a string.
ExprValue typed(const std::string& text) {
  if (text == "true" || text == "false") {
    return ExprValue(text == "true");
  }
  double number = 0;
  const char* end = text.data() + text.size();
  if (!text.empty()) {
    auto [ptr, ec] = std::from_chars(text.data(), end, number);
    if (ec == std::errc{} && ptr == end) {
      return ExprValue(number);
    }
  }
  return ExprValue(text);
}

/// A number as a command sees it: shortest round-trip text.
std::string number_text(double value) {
  return to_display(ExprValue(value));
}

std::string explain(const Expression::Seen& seen) {
  std::string out;
  for (const auto& [name, value] : seen) {
    out += (out.empty() ? "" : ", ") + name + " = " + to_display(value);
  }
  return out;
}

} // namespace

Expected<std::optional<CacheHit>> CacheIndex::find(const std::string& step, const std::string& key,
                                                   std::int64_t except_run) {
  if (!m_loaded) {
    auto latest = m_store.latest_keys(m_workflow, m_before_run);
    if (!latest) {
      return Error{latest.error()};
    }
    m_latest.reserve(latest->size());
    for (KeyedStep& keyed : *latest) {
      std::string id = keyed.step;
      m_latest.emplace(std::move(id), std::move(keyed));
    }
    m_loaded = true;
  }
  if (const auto it = m_latest.find(step);
      it != m_latest.end() && it->second.key == key && it->second.source_run != except_run) {
    return std::optional<CacheHit>(CacheHit{it->second.source_run, step});
  }
  return m_store.find_cache_hit(key, except_run);
}

Expected<const std::vector<ArtifactRecord>*> CacheIndex::outputs(std::int64_t run, const std::string& step) {
  static const std::vector<ArtifactRecord> none;
  auto [it, fresh] = m_runs.try_emplace(run);
  if (fresh) {
    auto artifacts = m_store.declared_outputs(run);
    if (!artifacts) {
      m_runs.erase(it);
      return Error{artifacts.error()};
    }
    for (ArtifactRecord& a : *artifacts) {
      it->second[a.step_id].push_back(std::move(a));
    }
  }
  const auto found = it->second.find(step);
  return found == it->second.end() ? &none : &found->second;
}

Expected<CacheLookup> look_up_cache(TrackerStore& store, CacheIndex& index, FileHasher& hasher, const PlannedStep& step,
                                    const std::string& key, std::int64_t except_run) {
  CacheLookup lookup;
  auto hit = index.find(step.id, key, except_run);
  if (!hit) {
    return Error{hit.error()};
  }
  if (!*hit) {
    return lookup;
  }
  auto recorded = index.outputs((*hit)->run, (*hit)->step);
  if (!recorded) {
    return Error{recorded.error()};
  }
  if ((*recorded)->empty()) {
    return lookup;
  }
  lookup.hit = std::move(**hit);
  // The outputs must be what that execution produced: in place and
  // unchanged, or restorable from the artifact store when gone. An output
  // changed by hand is not overwritten: the step runs.
  for (const ArtifactRecord& output : **recorded) {
    const std::string path = path_in(step.workdir, output.path);
    const FileStatus probe = hasher.probe(path);
    if (probe.error != 0) {
      if (!store.blobs().contains(output.sha256)) {
        lookup.state = CacheLookup::State::stale;
        lookup.problem = "output " + output.path + " is gone and not in the artifact store";
        return lookup;
      }
      lookup.missing.push_back(output);
      continue;
    }
    auto sha = probe.type == FileType::regular ? hasher.hash_probed(path, probe) : Expected<std::string>(Error{""});
    if (!sha || *sha != output.sha256) {
      lookup.state = CacheLookup::State::stale;
      lookup.problem = "output " + output.path + " changed since run " + std::to_string(lookup.hit.run);
      return lookup;
    }
  }
  lookup.state = lookup.missing.empty() ? CacheLookup::State::hit : CacheLookup::State::restorable;
  return lookup;
}

StepDecider::StepDecider(TrackerStore& store, const Plan& plan, std::string workflow_name, std::vector<char> forced,
                         InMemoryHashMemo& memo)
    : m_store(store), m_plan(plan), m_workflow(std::move(workflow_name)), m_forced(std::move(forced)), m_hasher(memo),
      m_memo(memo), m_cache_index(store, m_workflow, plan.run_number), m_keys(plan.steps.size()),
      m_cached_from(plan.steps.size()), m_ahead(plan.steps.size()), m_values(plan.steps.size()),
      m_pending_of(plan.steps.size(), -1) {
  m_forced.resize(plan.steps.size(), 0);
  // Every cached step leaves a decision: reserved once, not regrown.
  m_pending.reserve(static_cast<std::size_t>(
      std::count_if(plan.steps.begin(), plan.steps.end(), [](const PlannedStep& s) { return s.cache; })));
  m_index.reserve(plan.steps.size());
  for (std::size_t i = 0; i < plan.steps.size(); ++i) {
    m_index.emplace(plan.steps[i].id, static_cast<int>(i));
  }
}

void StepDecider::adopt_recorded(const std::vector<char>& kept) {
  for (std::size_t i = 0; i < kept.size() && i < m_plan.steps.size(); ++i) {
    if (!kept[i]) {
      continue;
    }
    auto cache = m_store.step_cache(m_plan.run_number, m_plan.steps[i].id);
    if (!cache) {
      m_errors.push_back(cache.error());
      continue;
    }
    // (A kept cached step's outputs and metrics were copied into this run
    // when it was found cached: it is read like a step that ran.)
    if (*cache) {
      m_keys[i] = (*cache)->key;
    }
  }
}

std::optional<int> StepDecider::index_of(std::string_view id) const {
  const auto it = m_index.find(id);
  return it == m_index.end() ? std::nullopt : std::optional<int>(it->second);
}

StepDecider::Source StepDecider::source_of(int step) const {
  if (m_cached_from[step]) {
    return *m_cached_from[step];
  }
  return {m_plan.run_number, m_plan.steps[step].id};
}

std::optional<std::string> StepDecider::output_of(int step, const std::string& name) {
  const Source source = source_of(step);
  auto outputs = m_store.step_outputs(source.run, source.step);
  if (!outputs) {
    m_errors.push_back(outputs.error());
    return std::nullopt;
  }
  for (const auto& [key, value] : *outputs) {
    if (key == name) {
      return value;
    }
  }
  return std::nullopt;
}

std::optional<double> StepDecider::metric_of(int step, const std::string& name) {
  const Source source = source_of(step);
  auto summaries = m_store.metric_summaries(source.run);
  if (!summaries) {
    m_errors.push_back(summaries.error());
    return std::nullopt;
  }
  for (const MetricSummary& s : *summaries) {
    if (s.step_id == source.step && s.key == name) {
      return s.last;
    }
  }
  return std::nullopt;
}

ExprValue StepDecider::param_value(const std::string& name) const {
  const Param* param = m_plan.scope ? m_plan.scope->param(name) : nullptr;
  if (param == nullptr) {
    return {};
  }
  switch (param->type) {
  case ParamType::integer:
  case ParamType::floating: return typed(param->value);
  case ParamType::boolean: return ExprValue(param->value == "true");
  case ParamType::string: return ExprValue(param->value);
  }
  return {};
}

std::variant<ExprValue, std::string> StepDecider::step_value(const std::vector<std::string>& path,
                                                             const std::function<StepStatus(int)>& status) {
  // path: steps, ID, status | outputs NAME | metrics NAME
  const auto index = index_of(path[1]);
  if (!index) {
    return "no step '" + path[1] + "'";
  }
  if (path[2] == "status") {
    return ExprValue(std::string(to_string(status(*index))));
  }
  if (path[2] == "outputs") {
    if (auto value = output_of(*index, path[3])) {
      return typed(*value);
    }
    return ExprValue();
  }
  if (auto value = metric_of(*index, path[3])) {
    return ExprValue(*value);
  }
  return ExprValue();
}

Expected<std::string> StepDecider::step_text(std::string_view path, const std::function<StepStatus(int)>& status) {
  const auto ref = parse_step_ref(path);
  if (!ref) {
    return Error{"bad reference 'steps." + std::string(path) + "'"};
  }
  const auto index = index_of(ref->step);
  if (!index) {
    return Error{"no step '" + ref->step + "'"};
  }
  if (ref->field == "status") {
    return std::string(to_string(status(*index)));
  }
  if (ref->field == "outputs") {
    if (auto value = output_of(*index, ref->name)) {
      return *value;
    }
    return Error{"step '" + ref->step + "' wrote no output '" + ref->name + "' to KILN_OUTPUTS"};
  }
  if (auto value = metric_of(*index, ref->name)) {
    return number_text(*value);
  }
  return Error{"step '" + ref->step + "' recorded no metric '" + ref->name + "'"};
}

std::string StepDecider::where(const Condition& condition) const {
  std::string out = m_plan.scope ? m_plan.scope->file : std::string();
  if (condition.location.line > 0) {
    out += ":" + std::to_string(condition.location.line) + ":" + std::to_string(condition.location.column);
  }
  return out;
}

StartDecision StepDecider::prepare(int step, bool failure_upstream, const std::function<StepStatus(int)>& status) {
  if (m_ahead[step]) {
    return *m_ahead[step];
  }
  const PlannedStep& planned = m_plan.steps[step];
  StartDecision decision;
  if (!planned.when.empty()) {
    auto parsed = Expression::parse(planned.when.text);
    if (auto* e = std::get_if<ExprError>(&parsed)) {
      decision.action = StartDecision::Action::fail;
      decision.reason = "when: " + e->message;
      return decision;
    }
    const Expression& when = std::get<Expression>(parsed);
    auto resolve = [&](const ExprReference& ref) -> std::variant<ExprValue, std::string> {
      const std::string& head = ref.path[0];
      if (head == "params") {
        return param_value(ref.path[1]);
      }
      if (head == "steps") {
        return step_value(ref.path, status);
      }
      if (head == "matrix") {
        for (const auto& [name, value] : planned.matrix) {
          if (name == ref.path[1]) {
            return typed(value);
          }
        }
        return "matrix." + ref.path[1] + " is not defined for this step";
      }
      if (head == "env") {
        for (const auto* list : {&planned.env, &m_plan.base_env}) {
          for (const std::string& entry : *list) {
            if (entry.size() > ref.path[1].size() && entry.starts_with(ref.path[1]) &&
                entry[ref.path[1].size()] == '=') {
              return ExprValue(entry.substr(ref.path[1].size() + 1));
            }
          }
        }
        return ExprValue();
      }
      return "cannot resolve '" + ref.text() + "'";
    };
    auto call = [&](const ExprCall& c, const std::vector<ExprValue>&) -> std::variant<ExprValue, std::string> {
      if (c.name == "always") {
        return ExprValue(true);
      }
      if (c.name == "failure") {
        return ExprValue(failure_upstream);
      }
      if (c.name == "success") {
        for (int need : planned.needs) {
          if (!is_success(status(need))) {
            return ExprValue(false);
          }
        }
        return ExprValue(true);
      }
      return "unknown function '" + c.name + "'";
    };
    Expression::Seen seen;
    auto result = when.evaluate(resolve, call, &seen);
    if (auto* e = std::get_if<ExprError>(&result)) {
      decision.action = StartDecision::Action::fail;
      decision.reason = where(planned.when) + ": when: " + e->message;
      return decision;
    }
    const ExprValue& value = std::get<ExprValue>(result);
    const std::string values = seen.empty() ? "" : " (" + explain(seen) + ")";
    if (value.is_null()) {
      decision.action = StartDecision::Action::skip;
      decision.reason = "condition unknown: " + planned.when.text + values;
      return decision;
    }
    if (!value.is_bool()) {
      decision.action = StartDecision::Action::fail;
      decision.reason = where(planned.when) + ": when: expected true or false, got " + std::string(type_name(value)) +
                        " " + to_display(value);
      return decision;
    }
    if (!value.as_bool()) {
      decision.action = StartDecision::Action::skip;
      decision.reason = "condition false: " + planned.when.text + values;
      return decision;
    }
  }
  if (planned.deferred) {
    TemplateContext tc;
    tc.workflow = m_plan.scope.get();
    tc.run_id = m_plan.run_id;
    tc.run_number = m_plan.run_number;
    tc.step_id = planned.id;
    auto& values = m_values[step];
    tc.steps = [&](std::string_view path) -> Expected<std::string> {
      auto text = step_text(path, status);
      if (text) {
        values.emplace_back("steps." + std::string(path), *text);
      }
      return text;
    };
    ResolvedCommand command;
    std::string problem;
    for (std::size_t i = 0; i < planned.argv.size() && problem.empty(); ++i) {
      auto rendered = render_template(planned.argv[i], tc);
      if (!rendered) {
        problem = rendered.error();
        break;
      }
      // /bin/sh -c SCRIPT shows the script; exec form shows argv quoted.
      if (!(planned.argv.size() == 3 && planned.argv[0] == "/bin/sh" && i < 2)) {
        command.display +=
            (command.display.empty() ? "" : " ") +
            (planned.argv.size() == 3 && planned.argv[0] == "/bin/sh" ? *rendered : shell_quote(*rendered));
      }
      command.argv.push_back(std::move(*rendered));
    }
    for (std::size_t i = 0; i < planned.env.size() && problem.empty(); ++i) {
      auto rendered = render_template(planned.env[i], tc);
      if (!rendered) {
        problem = rendered.error();
        break;
      }
      command.env.push_back(std::move(*rendered));
    }
    if (!problem.empty()) {
      decision.action = StartDecision::Action::fail;
      decision.reason = "cannot render the command: " + problem;
      return decision;
    }
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    decision.command = std::move(command);
  }
  if (planned.cache) {
    StartDecision cached = decide_cache(step, m_values[step]);
    if (cached.action == StartDecision::Action::run) {
      write_needs(step, status);
    }
    if (cached.action == StartDecision::Action::cached && !planned.gate.empty()) {
      // The gate may have changed (a stricter threshold): it judges the
      // metrics of the execution the step stands for.
      if (std::string failed = verify(step, 0); !failed.empty()) {
        cached.action = StartDecision::Action::fail;
        cached.reason = failed + "; metrics of run " + std::to_string(m_cached_from[step]->run);
      }
    }
    if (cached.action != StartDecision::Action::run) {
      return cached;
    }
    return decision;
  }
  write_needs(step, status);
  return decision;
}

void StepDecider::write_needs(int step, const std::function<StepStatus(int)>& status) {
  const PlannedStep& planned = m_plan.steps[step];
  const std::string path = needs_json_path(m_plan, planned);
  if (path.empty()) {
    return;
  }
  auto typed_json = [](const std::string& text) {
    // Whole numbers stay whole (C: 1 reads back as 1, not 1.0).
    std::int64_t whole = 0;
    const char* end = text.data() + text.size();
    if (auto [ptr, ec] = std::from_chars(text.data(), end, whole); ec == std::errc{} && ptr == end && !text.empty()) {
      return nlohmann::json(whole);
    }
    const ExprValue v = typed(text);
    return v.is_number() ? nlohmann::json(v.as_number())
           : v.is_bool() ? nlohmann::json(v.as_bool())
                         : nlohmann::json(text);
  };
  std::unordered_map<std::int64_t, std::vector<MetricSummary>> summaries;
  nlohmann::json needs = nlohmann::json::array();
  for (int need : planned.needs) {
    const PlannedStep& other = m_plan.steps[need];
    const Source source = source_of(need);
    nlohmann::json entry = {{"id", other.id}, {"status", to_string(status(need))}};
    const auto bracket = other.id.find('[');
    entry["step"] = other.matrix.empty() || bracket == std::string::npos ? other.id : other.id.substr(0, bracket);
    nlohmann::json matrix = nlohmann::json::object();
    for (const auto& [name, value] : other.matrix) {
      matrix[name] = typed_json(value);
    }
    entry["matrix"] = std::move(matrix);
    nlohmann::json outputs = nlohmann::json::object();
    if (auto recorded = m_store.step_outputs(source.run, source.step)) {
      for (const auto& [name, value] : *recorded) {
        outputs[name] = value;
      }
    }
    entry["outputs"] = std::move(outputs);
    auto [it, fresh] = summaries.try_emplace(source.run);
    if (fresh) {
      if (auto all = m_store.metric_summaries(source.run)) {
        it->second = std::move(*all);
      }
    }
    nlohmann::json metrics = nlohmann::json::object();
    for (const MetricSummary& s : it->second) {
      if (s.step_id == source.step) {
        metrics[s.key] = metric_value_json(s.last);
      }
    }
    entry["metrics"] = std::move(metrics);
    needs.push_back(std::move(entry));
  }
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << nlohmann::json{{"step", planned.id}, {"needs", std::move(needs)}}.dump(
               2, ' ', false, nlohmann::json::error_handler_t::replace)
        << '\n';
    if (!out) {
      m_errors.push_back("cannot write " + temp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) {
    m_errors.push_back("cannot write " + path + ": " + ec.message());
  }
}

std::optional<CacheLookup> StepDecider::find_source(int step,
                                                    const std::vector<std::pair<std::string, std::string>>& values,
                                                    CacheDecision& record) {
  const PlannedStep& planned = m_plan.steps[step];
  const std::vector<InputFile> inputs = resolve_inputs(planned.workdir, planned.inputs, m_hasher);
  CacheKey key = compute_cache_key(
      m_plan, planned, inputs, [this](int need) { return m_keys[static_cast<std::size_t>(need)]; }, values);
  m_keys[step] = key.key;
  record.step = planned.id;
  record.cache.key = key.key;
  record.cache.components_json = std::move(key.components_json);
  if (m_forced[step] || !input_problem(inputs).empty()) {
    return std::nullopt;
  }
  auto lookup = look_up_cache(m_store, m_cache_index, m_hasher, planned, key.key, m_plan.run_number);
  if (!lookup) {
    m_errors.push_back(lookup.error());
    return std::nullopt;
  }
  if (lookup->state != CacheLookup::State::hit && lookup->state != CacheLookup::State::restorable) {
    return std::nullopt;
  }
  return std::move(*lookup);
}

StartDecision StepDecider::stand_in(int step, const CacheLookup& lookup, CacheDecision& record) {
  const std::int64_t from_run = lookup.hit.run;
  record.cache.cached_from = from_run;
  record.cache.components_json = {}; // its source's are the same; not stored twice
  record.from_step = lookup.hit.step;
  m_cached_from[step] = Source{from_run, lookup.hit.step};
  StartDecision decision;
  decision.action = StartDecision::Action::cached;
  decision.reason = "unchanged since run " + std::to_string(from_run);
  if (const std::size_t missing = lookup.missing.size(); missing > 0) {
    decision.reason +=
        "; restored " + std::to_string(missing) + " output" + (missing == 1 ? "" : "s") + " from the artifact store";
  }
  return decision;
}

StartDecision StepDecider::decide_cache(int step, const std::vector<std::pair<std::string, std::string>>& values) {
  StartDecision decision;
  CacheDecision record;
  std::optional<CacheLookup> found = find_source(step, values, record);
  const std::filesystem::path workdir = m_plan.steps[step].workdir;
  for (std::size_t i = 0; found && i < found->missing.size(); ++i) {
    const ArtifactRecord& output = found->missing[i];
    const std::filesystem::path dest = workdir / output.path;
    std::error_code ec;
    std::filesystem::create_directories(dest.parent_path(), ec);
    if (auto copied = m_store.blobs().copy_out(output.sha256, dest); !copied) {
      m_errors.push_back("restoring " + dest.string() + ": " + copied.error());
      found.reset();
      break;
    }
  }
  if (found) {
    decision = stand_in(step, *found, record);
  }
  m_pending_of[step] = static_cast<int>(m_pending.size());
  m_pending.push_back(std::move(record));
  return decision;
}

namespace {

/// What decide_ahead may decide, as far as the plan alone says.
bool may_decide_ahead(const PlannedStep& planned, bool forced) {
  return planned.cache && !forced && planned.when.empty() && planned.gate.empty() && !planned.deferred;
}

} // namespace

void StepDecider::prefetch_stats() {
  std::vector<std::string> paths;
  m_prefetched.assign(m_plan.steps.size(), {0, 0});
  for (int step : m_plan.order) {
    const PlannedStep& planned = m_plan.steps[step];
    if (!may_decide_ahead(planned, m_forced[step] != 0)) {
      continue;
    }
    const std::size_t begin = paths.size();
    const std::string workdir = normal_workdir(planned.workdir);
    for (const std::string& pattern : planned.inputs) {
      if (!pattern.empty() && !is_glob(pattern)) {
        paths.push_back(path_in(workdir, pattern));
      }
    }
    for (const StepOutput& output : planned.outputs) {
      paths.push_back(path_in(workdir, output.path));
    }
    m_prefetched[step] = {begin, paths.size()};
  }
  if (!paths.empty()) {
    m_prefetch = std::make_unique<StatPrefetch>(std::move(paths));
  }
}

std::optional<StampedFiles> StepDecider::replay_files() const {
  StampedFiles files;
  auto add = [&](const std::string& path) {
    const MemoEntry* entry = m_memo.find(path);
    if (entry == nullptr) {
      return false;
    }
    files.paths.push_back(path);
    files.stamps.push_back(entry->stamp);
    return true;
  };
  for (int step : m_plan.order) {
    const PlannedStep& planned = m_plan.steps[step];
    if (!m_ahead[step] || m_ahead[step]->action != StartDecision::Action::cached) {
      return std::nullopt;
    }
    // A plain input's memo entry is the stamp decide_ahead found it with (a
    // hit is an equal stamp outside the racy window); a directory has none,
    // and a glob's matches can change without any stamp listed changing.
    const std::string workdir = normal_workdir(planned.workdir);
    for (const std::string& pattern : planned.inputs) {
      if (pattern.empty() || is_glob(pattern) || !add(path_in(workdir, pattern))) {
        return std::nullopt;
      }
    }
    for (const StepOutput& output : planned.outputs) {
      if (!add(path_in(workdir, output.path))) {
        return std::nullopt;
      }
    }
  }
  return files;
}

std::vector<std::optional<CacheDecision>> StepDecider::decide_ahead(const std::vector<char>& selected,
                                                                    std::int64_t now_ms) {
  std::vector<std::optional<CacheDecision>> decided(m_plan.steps.size());
  m_hasher.set_reading(FileHasher::Reading::put_off);
  for (int step : m_plan.order) {
    const PlannedStep& planned = m_plan.steps[step];
    const bool eligible =
        may_decide_ahead(planned, m_forced[step] != 0) && (selected.empty() || selected[step]) &&
        std::all_of(planned.needs.begin(), planned.needs.end(), [this](int need) { return m_ahead[need].has_value(); });
    if (!eligible) {
      continue;
    }
    // (A file the memo cannot vouch for is not read: as an input it is a
    // problem, as an output it does not match; either way no source.)
    CacheDecision record;
    if (m_prefetch) {
      m_hasher.set_prefetched(m_prefetch.get(), m_prefetched[step].first, m_prefetched[step].second);
    }
    std::optional<CacheLookup> found = find_source(step, {}, record);
    if (!found || !found->missing.empty()) {
      m_keys[step].clear(); // the loop decides it
      continue;
    }
    StartDecision decision = stand_in(step, *found, record);
    record.settled = true;
    record.settled_ms = now_ms;
    record.reason = decision.reason;
    m_ahead[step] = std::move(decision);
    decided[step] = std::move(record);
  }
  m_hasher.set_reading(FileHasher::Reading::now);
  // From here on steps run: what was stated before is not trusted.
  m_hasher.set_prefetched(nullptr);
  m_prefetch.reset();
  return decided;
}

std::string StepDecider::verify(int step, int /*attempt*/) {
  const PlannedStep& planned = m_plan.steps[step];
  for (const Condition& gate : planned.gate) {
    auto parsed = Expression::parse(gate.text);
    if (auto* e = std::get_if<ExprError>(&parsed)) {
      return "gate: " + e->message;
    }
    std::vector<MetricSummary> own;
    const Source source = source_of(step);
    if (auto summaries = m_store.metric_summaries(source.run)) {
      for (MetricSummary& s : *summaries) {
        if (s.step_id == source.step) {
          own.push_back(std::move(s));
        }
      }
    } else {
      return "gate: " + summaries.error();
    }
    auto resolve = [&](const ExprReference& ref) -> std::variant<ExprValue, std::string> {
      const std::string& head = ref.path[0];
      if (head == "params" && ref.path.size() == 2) {
        return param_value(ref.path[1]);
      }
      if (head == "previous" && ref.path.size() == 2) {
        auto value = m_store.previous_metric(m_workflow, planned.id, ref.path[1], m_plan.run_number);
        if (!value) {
          return value.error();
        }
        return *value ? ExprValue(**value) : ExprValue();
      }
      const std::string& name = ref.path.size() == 1 ? head : ref.path[1];
      for (const MetricSummary& s : own) {
        if (s.key == name) {
          return ExprValue(s.last);
        }
      }
      return "the step recorded no metric '" + name + "'";
    };
    Expression::Seen seen;
    auto result = std::get<Expression>(parsed).evaluate(resolve, {}, &seen);
    if (auto* e = std::get_if<ExprError>(&result)) {
      return where(gate) + ": gate: " + e->message;
    }
    const ExprValue& value = std::get<ExprValue>(result);
    if (value.is_null()) {
      continue; // e.g. previous.accuracy before any run succeeded: nothing to compare with
    }
    if (!value.is_bool()) {
      return where(gate) + ": gate: expected true or false, got " + std::string(type_name(value)) + " " +
             to_display(value);
    }
    if (!value.as_bool()) {
      return "gate failed: " + gate.text + " (" + explain(seen) + ")";
    }
  }
  return "";
}

void StepDecider::step_finished(int step, StepStatus status, const std::string& reason, std::int64_t at_ms) {
  if (status != StepStatus::cached || m_ahead[step]) {
    return; // (a step decided ahead was recorded cached with its run)
  }
  if (const int pending = m_pending_of[step]; pending >= 0) {
    CacheDecision& decision = m_pending[static_cast<std::size_t>(pending)];
    decision.settled = true;
    decision.settled_ms = at_ms;
    decision.reason = reason;
    return;
  }
  // Its decision was written in an earlier turn of the loop.
  if (auto done = m_store.set_step_status(m_plan.run_number, m_plan.steps[step].id, status, at_ms, reason); !done) {
    m_errors.push_back(done.error());
  }
}

void StepDecider::flush() {
  if (!m_pending.empty()) {
    if (auto done = m_store.record_cache_decisions(m_plan.run_number, m_pending); !done) {
      m_errors.push_back(done.error());
    }
    std::fill(m_pending_of.begin(), m_pending_of.end(), -1);
    m_pending.clear();
  }
  if (auto changed = m_memo.changed(); !changed.empty()) {
    if (auto done = m_store.save_hash_memo(changed); !done) {
      m_errors.push_back(done.error());
    }
    m_memo.clear_changed();
  }
}

} // namespace kiln::core
