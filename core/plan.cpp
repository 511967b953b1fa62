#include "core/plan.hpp"

#include "core/graph.hpp"
#include "core/template.hpp"

#include <algorithm>
#include <filesystem>
#include <set>
#include <unordered_map>

namespace kiln::core {

namespace {

std::string_view env_name(std::string_view entry) {
  return entry.substr(0, entry.find('='));
}

std::optional<std::string> lookup(const std::vector<std::string>& env, std::string_view name) {
  // Last definition wins, as in the environment we build.
  for (auto it = env.rbegin(); it != env.rend(); ++it) {
    if (env_name(*it) == name && it->size() > name.size()) {
      return it->substr(name.size() + 1);
    }
  }
  return std::nullopt;
}

/// One entry per name, the last definition winning, in first-seen order.
std::vector<std::string> merge_environment(std::vector<std::string> entries) {
  std::vector<std::string> merged;
  merged.reserve(entries.size());
  std::unordered_map<std::string, std::size_t> index;
  for (auto& entry : entries) {
    std::string name(env_name(entry));
    if (auto it = index.find(name); it != index.end()) {
      merged[it->second] = std::move(entry);
    } else {
      index.emplace(std::move(name), merged.size());
      merged.push_back(std::move(entry));
    }
  }
  return merged;
}

std::string absolute_dir(const std::string& base, const std::string& dir) {
  std::filesystem::path p(dir);
  if (p.is_relative()) {
    p = std::filesystem::path(base) / p;
  }
  p = p.lexically_normal();
  // "dir/." normalises to "dir/": drop the trailing separator.
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) {
    p = p.parent_path();
  }
  return p.string();
}

/// Calls `fn(text)` for each templated text of the step: run, env values, workdir.
template <typename Fn>
void each_template(const Step& step, Fn&& fn) {
  if (step.run.form == Command::Form::shell) {
    fn(step.run.script);
  }
  for (const auto& arg : step.run.argv) {
    fn(arg);
  }
  for (const auto& [name, value] : step.env) {
    fn(value);
  }
  fn(step.workdir);
}

bool mentions_steps(const Step& step) {
  bool found = false;
  each_template(step, [&](const std::string& text) {
    if (!found && text.find("${{") != std::string::npos) {
      for (const TemplateRef& ref : scan_template(text).refs) {
        found = found || ref.ns == "steps";
      }
    }
  });
  return found;
}

std::vector<std::pair<std::string, std::string>> params_used(const Step& step, const Workflow& workflow) {
  std::vector<std::string> names;
  each_template(step, [&](const std::string& text) {
    if (text.find("${{") != std::string::npos) {
      for (const TemplateRef& ref : scan_template(text).refs) {
        if (ref.ns == "params") {
          names.push_back(ref.name);
        }
      }
    }
  });
  // The condition's params.X references: a cheap textual scan (the loader
  // has validated the expression).
  for (std::size_t at = step.when.text.find("params."); at != std::string::npos;
       at = step.when.text.find("params.", at + 7)) {
    std::size_t end = at + 7;
    while (end < step.when.text.size() && (std::isalnum(static_cast<unsigned char>(step.when.text[end])) ||
                                           step.when.text[end] == '_' || step.when.text[end] == '-')) {
      ++end;
    }
    names.push_back(step.when.text.substr(at + 7, end - at - 7));
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::vector<std::pair<std::string, std::string>> used;
  for (const std::string& name : names) {
    if (const Param* param = workflow.param(name)) {
      used.emplace_back(name, param->value);
    }
  }
  return used;
}

} // namespace

std::string shell_quote(std::string_view value) {
  const bool plain = !value.empty() && std::all_of(value.begin(), value.end(), [](unsigned char c) {
    return std::isalnum(c) || std::string_view("@%+=:,./-_").find(static_cast<char>(c)) != std::string_view::npos;
  });
  if (plain) {
    return std::string(value);
  }
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

std::vector<std::string> attempt_environment(const Plan& plan, const PlannedStep& step, int attempt) {
  // base_env has one entry per name (make_plan merges it); a step sets a
  // handful, so a linear search per step variable beats building an index.
  std::vector<std::string> env;
  env.reserve(plan.base_env.size() + step.env.size() + 2);
  env.insert(env.end(), plan.base_env.begin(), plan.base_env.end());
  auto set = [&env](std::string entry) {
    const auto name = env_name(entry);
    for (std::size_t i = 0; i < env.size(); ++i) {
      if (env_name(env[i]) == name) {
        env[i] = std::move(entry);
        return;
      }
    }
    env.push_back(std::move(entry));
  };
  for (const auto& e : step.env) {
    set(e);
  }
  // Built per attempt rather than stored per step in the plan: most steps
  // share a workdir, and 10,000 copies of it would only slow planning.
  // `kiln log artifact` keeps artifacts inside it.
  set("KILN_WORKDIR=" + step.workdir);
  set("KILN_ATTEMPT=" + std::to_string(attempt));
  if (std::string needs = needs_json_path(plan, step); !needs.empty()) {
    set("KILN_NEEDS_JSON=" + needs);
  }
  return env;
}

std::string needs_json_path(const Plan& plan, const PlannedStep& step) {
  if (plan.needs_dir.empty() || step.needs.empty()) {
    return "";
  }
  return plan.needs_dir + "/" + step.id + ".needs.json";
}

std::string outputs_path(std::string_view stdout_path) {
  std::string path(stdout_path);
  if (path.ends_with(".out")) {
    path.resize(path.size() - 4);
  }
  return path + ".outputs";
}

Expected<Plan> make_plan(const Workflow& workflow, const PlanContext& context) {
  Plan plan;
  plan.run_id = context.run_id;
  plan.run_number = context.run_number;
  if (!context.store_dir.empty()) {
    // Beside the run's logs (TrackerStore::log_path's directory).
    plan.needs_dir = context.store_dir + "/logs/" + context.run_id;
  }
  {
    auto scope = std::make_shared<Workflow>();
    scope->name = workflow.name;
    scope->file = workflow.file;
    scope->directory = workflow.directory;
    scope->params = workflow.params;
    plan.scope = std::move(scope);
  }
  std::string errors;
  // `where` names what holds the template: "step 'train'", "env A of step
  // 'train'", "workflow env A". Positions are the step's or the command's;
  // the model keeps none for env values.
  auto report = [&](const SourceLocation& at, const std::string& where, const std::string& message) {
    if (!errors.empty()) {
      errors += '\n';
    }
    errors += workflow.file;
    if (at.line > 0) {
      errors += ":" + std::to_string(at.line) + ":" + std::to_string(at.column);
    }
    errors += ": error: " + where + ": " + message;
  };

  // The base environment: the runner's, then the workflow's (templated
  // against the runner's), then what kiln tells every step.
  plan.base_env = context.process_env;
  TemplateContext tc;
  tc.workflow = &workflow;
  tc.run_id = context.run_id;
  tc.run_number = context.run_number;
  // Every name a template looks up, wherever it is found: a replay of this
  // plan is valid while their values in the runner's environment are.
  std::set<std::string, std::less<>> env_read;
  tc.env = [&](std::string_view name) {
    env_read.emplace(name);
    return lookup(context.process_env, name);
  };
  for (const auto& [name, value] : workflow.env) {
    auto rendered = render_template(value, tc);
    if (!rendered) {
      report({}, "workflow env " + name, rendered.error());
      continue;
    }
    plan.base_env.push_back(name + "=" + *rendered);
    plan.workflow_env.push_back(name + "=" + *rendered);
  }
  plan.base_env.push_back("KILN_RUN_ID=" + context.run_id);
  plan.base_env.push_back("KILN_RUN_NUMBER=" + std::to_string(context.run_number));
  plan.base_env.push_back("KILN_STORE=" + context.store_dir);
  plan.base_env.push_back("KILN_WORKFLOW=" + workflow.name);
  plan.base_env = merge_environment(std::move(plan.base_env));

  std::unordered_map<std::string_view, int> index_of;
  for (std::size_t i = 0; i < workflow.steps.size(); ++i) {
    index_of.emplace(workflow.steps[i].id, static_cast<int>(i));
  }

  Dependencies needs(workflow.steps.size());
  plan.steps.reserve(workflow.steps.size());
  std::unordered_map<std::string, std::string> absolute_dirs;
  std::unordered_map<std::string, int> group_of;
  for (std::size_t i = 0; i < workflow.steps.size(); ++i) {
    const Step& step = workflow.steps[i];
    PlannedStep ps;
    ps.id = step.id;
    ps.kind = step.kind;
    for (const auto& n : step.needs) {
      if (auto it = index_of.find(n); it != index_of.end()) {
        ps.needs.push_back(it->second);
      }
    }
    needs[i] = ps.needs;

    tc.step_id = step.id;
    tc.matrix = step.matrix;
    // Templates naming steps.* wait for the step's start; params and the
    // like are rendered now.
    ps.deferred = mentions_steps(step);
    tc.keep_steps = ps.deferred;
    ps.params_used = params_used(step, workflow);
    // Step env: templated; env.X inside it sees the runner's and the
    // workflow's variables.
    std::vector<std::string> step_env;
    step_env.push_back("KILN_STEP_ID=" + step.id);
    tc.env = [&](std::string_view name) {
      env_read.emplace(name);
      return lookup(plan.base_env, name);
    };
    for (const auto& [name, value] : step.env) {
      auto rendered = render_template(value, tc);
      if (!rendered) {
        report(step.location, "env " + name + " of step '" + step.id + "'", rendered.error());
        continue;
      }
      step_env.push_back(name + "=" + *rendered);
    }
    // Commands see the step's whole environment.
    tc.env = [&](std::string_view name) -> std::optional<std::string> {
      env_read.emplace(name);
      if (auto v = lookup(step_env, name)) {
        return v;
      }
      return lookup(plan.base_env, name);
    };
    auto workdir = render_template(step.workdir, tc);
    if (!workdir) {
      report(step.location, "workdir of step '" + step.id + "'", workdir.error());
    } else {
      // Most steps share a workdir; path arithmetic per step adds up.
      auto [it, fresh] = absolute_dirs.try_emplace(*workdir);
      if (fresh) {
        it->second = absolute_dir(workflow.directory, *workdir);
      }
      ps.workdir = it->second;
    }
    if (step.run.form == Command::Form::shell) {
      auto script = render_template(step.run.script, tc);
      if (!script) {
        report(step.run.location, "step '" + step.id + "'", script.error());
      } else {
        ps.display_command = *script;
        ps.argv = {"/bin/sh", "-c", std::move(*script)};
      }
    } else {
      for (const auto& arg : step.run.argv) {
        auto rendered = render_template(arg, tc);
        if (!rendered) {
          report(step.run.location, "step '" + step.id + "'", rendered.error());
          continue;
        }
        if (!ps.display_command.empty()) {
          ps.display_command += ' ';
        }
        ps.display_command += shell_quote(*rendered);
        ps.argv.push_back(std::move(*rendered));
      }
    }
    ps.env = std::move(step_env);
    ps.timeout = step.timeout;
    ps.kill_after = step.kill_after;
    ps.retries = step.retries;
    ps.cpus = step.resources.cpus;
    ps.memory = step.resources.memory;
    ps.gpus = step.resources.gpus;
    ps.outputs = step.outputs;
    ps.metrics = step.metrics;
    ps.tags = step.tags;
    ps.inputs = step.inputs;
    ps.cache = step.cache;
    ps.when = step.when;
    ps.trigger = step.trigger;
    ps.gate = step.gate;
    ps.matrix = step.matrix;
    if (step.max_parallel > 0) {
      auto [it, fresh] = group_of.try_emplace(step.matrix_of, static_cast<int>(plan.groups.size()));
      if (fresh) {
        plan.groups.push_back(step.max_parallel);
      }
      ps.group = it->second;
    }
    plan.steps.push_back(std::move(ps));
  }
  tc.keep_steps = false;
  tc.matrix.clear();
  if (!errors.empty()) {
    return Error{errors};
  }
  // A step that consumes a model is told where it is: in the producer's
  // workdir as resolved above (it may be templated).
  for (std::size_t i = 0; i < workflow.steps.size(); ++i) {
    const Step& step = workflow.steps[i];
    if (step.model.empty()) {
      continue;
    }
    const auto producer = index_of.find(step.model);
    if (producer == index_of.end()) {
      continue;
    }
    if (const StepOutput* model = workflow.steps[producer->second].output("model")) {
      plan.steps[i].env.push_back("KILN_MODEL=" + absolute_dir(plan.steps[producer->second].workdir, model->path));
    }
  }

  const auto priority = critical_path_lengths(needs);
  for (std::size_t i = 0; i < plan.steps.size(); ++i) {
    plan.steps[i].priority = priority[i];
  }
  // Kahn's algorithm with the longest critical path first.
  const auto dependents = dependents_of(needs);
  std::vector<int> remaining(needs.size());
  auto later = [&](int a, int b) { return priority[a] != priority[b] ? priority[a] < priority[b] : a > b; };
  std::vector<int> ready;
  for (std::size_t i = 0; i < needs.size(); ++i) {
    remaining[i] = static_cast<int>(needs[i].size());
    if (remaining[i] == 0) {
      ready.push_back(static_cast<int>(i));
    }
  }
  std::make_heap(ready.begin(), ready.end(), later);
  while (!ready.empty()) {
    std::pop_heap(ready.begin(), ready.end(), later);
    const int node = ready.back();
    ready.pop_back();
    plan.order.push_back(node);
    for (int d : dependents[node]) {
      if (--remaining[d] == 0) {
        ready.push_back(d);
        std::push_heap(ready.begin(), ready.end(), later);
      }
    }
  }
  plan.env_read.assign(env_read.begin(), env_read.end());
  return plan;
}

std::vector<char> select_steps(const Plan& plan, const std::vector<int>& only, const std::vector<int>& from) {
  const std::size_t count = plan.steps.size();
  if (only.empty() && from.empty()) {
    return std::vector<char>(count, 1);
  }
  std::vector<char> selected(count, 0);
  for (int step : only) {
    selected[static_cast<std::size_t>(step)] = 1;
  }
  if (!from.empty()) {
    std::vector<std::vector<int>> dependents(count);
    for (std::size_t i = 0; i < count; ++i) {
      for (int need : plan.steps[i].needs) {
        dependents[static_cast<std::size_t>(need)].push_back(static_cast<int>(i));
      }
    }
    std::vector<char> reached(count, 0);
    std::vector<int> stack(from.begin(), from.end());
    while (!stack.empty()) {
      const auto step = static_cast<std::size_t>(stack.back());
      stack.pop_back();
      if (reached[step]) {
        continue;
      }
      reached[step] = 1;
      selected[step] = 1;
      stack.insert(stack.end(), dependents[step].begin(), dependents[step].end());
    }
  }
  return selected;
}

} // namespace kiln::core
