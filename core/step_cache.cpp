#include "core/step_cache.hpp"

#include "core/hash.hpp"

#include <algorithm>

namespace kiln::core {

namespace {

constexpr std::string_view k_version = "1";

// Order of explanation: what users change most often first.
int rank(std::string_view component) {
  static constexpr std::string_view k_order[] = {
      "input:", "param:", "upstream:", "value:", "env:", "command", "workdir", "outputs", "version"};
  for (std::size_t i = 0; i < std::size(k_order); ++i) {
    if (component.starts_with(k_order[i])) {
      return static_cast<int>(i);
    }
  }
  return static_cast<int>(std::size(k_order));
}

std::string text_of(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

std::string shorten(const std::string& text) {
  constexpr std::size_t k_max = 60;
  return text.size() <= k_max ? text : text.substr(0, k_max - 3) + "...";
}

std::string describe(std::string_view component, const nlohmann::json* before, const nlohmann::json* after) {
  const auto colon = component.find(':');
  const std::string what(component.substr(0, colon));
  const std::string name = colon == std::string_view::npos ? "" : std::string(component.substr(colon + 1));
  if (what == "input") {
    if (before == nullptr) {
      return "input " + name + " is new";
    }
    if (after == nullptr) {
      return "input " + name + " is no longer an input";
    }
    const std::string b = text_of(*before);
    const std::string a = text_of(*after);
    if (a.starts_with("missing")) {
      return "input " + name + " is " + a;
    }
    if (b.starts_with("missing")) {
      return "input " + name + " is there now (it was " + b + ")";
    }
    return "input " + name + " changed (sha256 " + b.substr(0, 12) + " -> " + a.substr(0, 12) + ")";
  }
  if (what == "upstream") {
    if (before == nullptr || after == nullptr) {
      return std::string("need '") + name + "' " + (before == nullptr ? "added" : "removed");
    }
    return "upstream step '" + name + "' changed (its key differs)";
  }
  auto from_to = [&](const std::string& label) {
    return label + ": " + (before ? shorten(text_of(*before)) : "(unset)") + " -> " +
           (after ? shorten(text_of(*after)) : "(unset)");
  };
  if (what == "param") {
    return from_to("param " + name);
  }
  if (what == "env") {
    return from_to("env " + name);
  }
  if (what == "value") {
    return from_to(name);
  }
  if (what == "version") {
    return "kiln's cache format changed";
  }
  return from_to(what);
}

} // namespace

namespace {

/// True when nlohmann's dump writes `text` as it is, between quotes:
/// printable ASCII but the quote and the backslash.
bool plain(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'; });
}

/// The components as nlohmann's compact dump of the object would write them
/// (what keys have always hashed; see the pinned keys in the tests), without
/// building the object when every name and value is plain: a rerun computes
/// 10,000 keys. `sorted`: by name, unique.
std::string components_text(const std::vector<std::pair<std::string, std::string>>& sorted) {
  const bool all_plain =
      std::all_of(sorted.begin(), sorted.end(), [](const auto& c) { return plain(c.first) && plain(c.second); });
  if (!all_plain) {
    nlohmann::json object = nlohmann::json::object();
    for (const auto& [name, value] : sorted) {
      object[name] = value;
    }
    return object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::size_t size = 2;
  for (const auto& [name, value] : sorted) {
    size += name.size() + value.size() + 6;
  }
  std::string text;
  text.reserve(size);
  text += '{';
  for (const auto& [name, value] : sorted) {
    if (text.size() > 1) {
      text += ',';
    }
    text += '"';
    text += name;
    text += "\":\"";
    text += value;
    text += '"';
  }
  text += '}';
  return text;
}

} // namespace

CacheKey compute_cache_key(const Plan& plan, const PlannedStep& step, const std::vector<InputFile>& inputs,
                           const std::function<std::string(int need)>& upstream_key,
                           const std::vector<std::pair<std::string, std::string>>& values) {
  // Named components, in the order they are set: a later one of the same
  // name wins (a step's env over the workflow's), as in a JSON object.
  std::vector<std::pair<std::string, std::string>> c;
  c.reserve(4 + plan.workflow_env.size() + step.env.size() + step.params_used.size() + inputs.size() +
            step.needs.size() + values.size());
  c.emplace_back("version", k_version);
  c.emplace_back("command", step.display_command);
  c.emplace_back("workdir", step.workdir);
  std::string outputs;
  for (const StepOutput& output : step.outputs) {
    outputs += (outputs.empty() ? "" : ",") + (output.name.empty() ? "" : output.name + "=") + output.path;
  }
  c.emplace_back("outputs", std::move(outputs));
  auto add_env = [&c](const std::string& entry) {
    const auto eq = entry.find('=');
    c.emplace_back("env:" + entry.substr(0, eq), eq == std::string::npos ? "" : entry.substr(eq + 1));
  };
  for (const std::string& entry : plan.workflow_env) {
    add_env(entry);
  }
  for (const std::string& entry : step.env) {
    add_env(entry);
  }
  for (const auto& [name, value] : step.params_used) {
    c.emplace_back("param:" + name, value);
  }
  for (const InputFile& input : inputs) {
    c.emplace_back("input:" + input.path, input.problem.empty() ? input.sha256 : "missing (" + input.problem + ")");
  }
  for (int need : step.needs) {
    const std::string k = upstream_key(need);
    c.emplace_back("upstream:" + plan.steps[static_cast<std::size_t>(need)].id, k.empty() ? "-" : k);
  }
  for (const auto& [ref, value] : values) {
    c.emplace_back("value:" + ref, value);
  }
  std::stable_sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  // Of equal names, the last set is kept.
  std::vector<std::pair<std::string, std::string>> sorted;
  sorted.reserve(c.size());
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (i + 1 < c.size() && c[i + 1].first == c[i].first) {
      continue;
    }
    sorted.push_back(std::move(c[i]));
  }
  CacheKey key;
  key.components_json = components_text(sorted);
  key.key = sha256_hex(key.components_json);
  return key;
}

std::string input_problem(const std::vector<InputFile>& inputs) {
  for (const InputFile& input : inputs) {
    if (!input.problem.empty()) {
      return input.path + ": " + input.problem;
    }
  }
  return "";
}

std::vector<std::string> explain_changes(const nlohmann::json& before, const nlohmann::json& after) {
  std::vector<std::string> names;
  for (const auto& [name, value] : before.items()) {
    if (!after.contains(name) || after[name] != value) {
      names.push_back(name);
    }
  }
  for (const auto& [name, value] : after.items()) {
    if (!before.contains(name)) {
      names.push_back(name);
    }
  }
  std::stable_sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : a < b;
  });
  std::vector<std::string> lines;
  for (const std::string& name : names) {
    lines.push_back(
        describe(name, before.contains(name) ? &before[name] : nullptr, after.contains(name) ? &after[name] : nullptr));
  }
  return lines;
}

} // namespace kiln::core
