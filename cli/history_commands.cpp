// Commands that read the store: runs list, runs show, logs.

#include "cli/commands.hpp"
#include "cli/console.hpp"
#include "cli/context.hpp"
#include "cli/history.hpp"
#include "core/clock.hpp"
#include "core/duration.hpp"
#include "core/tracker_store.hpp"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace kiln::cli {

namespace {

std::string duration_of(std::int64_t start, const std::optional<std::int64_t>& end) {
  if (!end) {
    return "-";
  }
  return format_duration_ms(*end - start);
}

std::string exit_text(const std::optional<core::AttemptEnd>& end) {
  if (!end) {
    return "-";
  }
  // An attempt that never ran has only its error; one that exited (0 even,
  // when what it recorded was refused) shows how, and REASON says why.
  if (!end->error.empty() && !end->exit_code && end->signal == 0) {
    return end->error;
  }
  std::string text;
  if (end->signal != 0) {
    const char* name = sigabbrev_np(end->signal);
    text = name ? std::string("SIG") + name : "signal " + std::to_string(end->signal);
  } else if (end->exit_code) {
    text = std::to_string(*end->exit_code);
  } else {
    text = "-";
  }
  if (end->timed_out) {
    text += " (timed out)";
  }
  return text;
}

} // namespace

int open_history(const GlobalOptions& global, std::unique_ptr<core::TrackerStore>& out) {
  const auto directory = store_directory(global.store);
  std::error_code ec;
  if (!std::filesystem::exists(directory / "kiln.db", ec)) {
    const bool discovered = global.store.empty() && std::getenv("KILN_STORE") == nullptr;
    std::fprintf(
        stderr,
        "kiln: error: no kiln store at %s%s; run a workflow here first, or name a store with --store or KILN_STORE\n",
        directory.c_str(), discovered ? " (nor a .kiln/ in any parent directory)" : "");
    return k_exit_usage;
  }
  auto store = open_store(global.store);
  if (!store) {
    std::fprintf(stderr, "kiln: error: %s\n", store.error().c_str());
    return k_exit_internal;
  }
  out = std::move(*store);
  return k_exit_ok;
}

int open_run(const GlobalOptions& global, const std::string& ref, OpenedRun& out) {
  if (int status = open_history(global, out.store); status != k_exit_ok) {
    return status;
  }
  auto run = out.store->resolve_run(ref);
  if (!run) {
    std::fprintf(stderr, "kiln: error: %s\n", run.error().c_str());
    return k_exit_usage;
  }
  out.run = std::move(*run);
  return k_exit_ok;
}

namespace {

/// A JSON value as a CSV cell: strings bare, null empty, the rest as JSON.
std::string csv_text(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : value.is_null() ? std::string() : value.dump();
}

} // namespace

void print_runs(const std::vector<core::RunRecord>& runs, OutputFormat format, const core::TrackerStore& store) {
  if (format == OutputFormat::json) {
    // One run at a time: a search may match tens of thousands, and a whole
    // document in memory first costs more than the query (page faults).
    std::string text = "[";
    for (std::size_t i = 0; i < runs.size(); ++i) {
      text += i == 0 ? "\n  " : ",\n  ";
      const std::string item = nlohmann::json(runs[i]).dump(2);
      for (char c : item) {
        text += c;
        if (c == '\n') {
          text += "  ";
        }
      }
      if (text.size() > 1 << 16) {
        std::cout << text;
        text.clear();
      }
    }
    std::cout << text << (runs.empty() ? "]\n" : "\n]\n");
    return;
  }
  if (runs.empty() && format == OutputFormat::table) {
    std::printf("no runs recorded in %s\n", store.directory().c_str());
    return;
  }
  if (format == OutputFormat::csv) {
    // For programs: whole ids, times in ms, counts as numbers.
    Table table({"number", "id", "workflow", "status", "exit_code", "started_ms", "ended_ms", "duration_ms",
                 "steps_total", "steps_succeeded", "steps_failed", "user", "host"});
    auto optional_text = [](const auto& value) { return value ? std::to_string(*value) : std::string(); };
    for (const auto& r : runs) {
      const std::string duration = r.ended_ms ? std::to_string(*r.ended_ms - r.started_ms) : std::string();
      table.add({std::to_string(r.number), r.id, r.workflow_name, std::string(core::to_string(r.status)),
                 optional_text(r.exit_code), std::to_string(r.started_ms), optional_text(r.ended_ms), duration,
                 std::to_string(r.steps.total()), std::to_string(r.steps.succeeded), std::to_string(r.steps.failed),
                 r.user, r.host});
    }
    table.print_csv(std::cout);
    return;
  }
  Table table({"#", "ID", "WORKFLOW", "STATUS", "STARTED", "DURATION", "STEPS", "USER"});
  for (const auto& r : runs) {
    const auto& c = r.steps;
    std::string steps = std::to_string(c.succeeded) + "/" + std::to_string(c.total()) + " ok";
    if (c.failed > 0) {
      steps += ", " + std::to_string(c.failed) + " failed";
    }
    table.add({std::to_string(r.number), r.id.substr(0, 8), r.workflow_name, std::string(core::to_string(r.status)),
               format_time(r.started_ms), duration_of(r.started_ms, r.ended_ms), steps, r.user});
  }
  print_table(table, format);
}

void print_table(const Table& table, OutputFormat format) {
  if (format == OutputFormat::csv) {
    table.print_csv(std::cout);
  } else {
    table.print(std::cout);
  }
}

std::string format_size(std::int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

int runs_list_command(const GlobalOptions& global, const ListOptions& options) {
  core::RunFilter filter;
  if (!options.workflow.empty()) {
    filter.workflow = options.workflow;
  }
  if (!options.status.empty()) {
    filter.status = core::parse_run_status(options.status);
  }
  if (!options.since.empty()) {
    auto window = core::parse_duration(options.since);
    if (!window) {
      std::fprintf(stderr, "kiln: error: --since %s: %s\n", options.since.c_str(), window.error().c_str());
      return k_exit_usage;
    }
    filter.since_ms = core::SystemClock().wall_ms() - window->count();
  }
  filter.limit = options.limit;
  std::unique_ptr<core::TrackerStore> store;
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  auto runs = store->list_runs(filter);
  if (!runs) {
    std::fprintf(stderr, "kiln: error: %s\n", runs.error().c_str());
    return k_exit_internal;
  }
  print_runs(*runs, options.format, *store);
  return k_exit_ok;
}

int runs_show_command(const GlobalOptions& global, const std::string& ref, OutputFormat format) {
  OpenedRun opened;
  if (int status = open_run(global, ref, opened); status != k_exit_ok) {
    return status;
  }
  auto& store = opened.store;
  const core::RunRecord* run = &opened.run;
  auto steps = store->steps(run->number);
  auto attempts = store->attempts(run->number);
  auto params = store->params(run->number);
  auto tags = store->tags(run->number);
  auto metrics = store->metric_summaries(run->number);
  auto artifacts = store->artifacts(run->number);
  auto pushes = store->push_records(run->number);
  for (const std::string* error :
       {steps ? nullptr : &steps.error(), attempts ? nullptr : &attempts.error(), params ? nullptr : &params.error(),
        tags ? nullptr : &tags.error(), metrics ? nullptr : &metrics.error(), artifacts ? nullptr : &artifacts.error(),
        pushes ? nullptr : &pushes.error()}) {
    if (error != nullptr) {
      std::fprintf(stderr, "kiln: error: %s\n", error->c_str());
      return k_exit_internal;
    }
  }
  if (format == OutputFormat::json) {
    nlohmann::json out = *run;
    // What belongs to the run itself at the top; what a step recorded in it.
    out["tags"] = nlohmann::json::object();
    for (const auto& t : *tags) {
      if (t.step_id.empty()) {
        out["tags"][t.key] = t.value;
      }
    }
    out["step_list"] = nlohmann::json::array();
    for (const auto& s : *steps) {
      nlohmann::json step = s;
      step["params"] = nlohmann::json::object();
      step["tags"] = nlohmann::json::object();
      step["metrics"] = nlohmann::json::object();
      // What it wrote to KILN_OUTPUTS, and for a cached step the run it stands for.
      step["outputs"] = nlohmann::json::object();
      if (auto outputs = store->step_outputs(run->number, s.id)) {
        for (const auto& [name, value] : *outputs) {
          step["outputs"][name] = value;
        }
      }
      step["cached_from"] = nullptr;
      if (s.status == core::StepStatus::cached) {
        if (auto cache = store->step_cache(run->number, s.id); cache && *cache && (*cache)->cached_from) {
          step["cached_from"] = *(*cache)->cached_from;
        }
      }
      for (const auto& p : *params) {
        if (p.step_id == s.id) {
          step["params"][p.key] = p.value;
        }
      }
      for (const auto& t : *tags) {
        if (t.step_id == s.id) {
          step["tags"][t.key] = t.value;
        }
      }
      for (const auto& m : *metrics) {
        if (m.step_id == s.id) {
          nlohmann::json summary = m;
          summary.erase("step");
          summary.erase("key");
          step["metrics"][m.key] = std::move(summary);
        }
      }
      out["step_list"].push_back(std::move(step));
    }
    out["artifacts"] = *artifacts;
    out["attempts"] = *attempts;
    // Where the run has been pushed: remote, experiment, state (pending,
    // synced, failed), error (null when none), updated_ms, mlflow_run_id
    // (null before the MLflow run exists).
    out["pushes"] = nlohmann::json::array();
    for (const core::PushRecord& push : *pushes) {
      nlohmann::json entry{{"remote", push.remote},
                           {"experiment", push.experiment},
                           {"state", core::to_string(push.state)},
                           {"error", push.error.empty() ? nlohmann::json() : nlohmann::json(push.error)},
                           {"updated_ms", push.updated_ms},
                           {"mlflow_run_id", nullptr}};
      if (auto remote = store->remote_runs(push.remote, run->number);
          remote && !remote->empty() && remote->front().step.empty()) {
        entry["mlflow_run_id"] = remote->front().remote_id;
      }
      out["pushes"].push_back(std::move(entry));
    }
    std::cout << out.dump(2) << '\n';
    return k_exit_ok;
  }
  if (format == OutputFormat::csv) {
    // One tidy table: every fact of the run as section, step, name, field, value.
    Table table({"section", "step", "name", "field", "value"});
    nlohmann::json run_json = *run;
    for (const auto& [field, value] : run_json.items()) {
      if (!value.is_object()) {
        table.add({"run", "", "", field, csv_text(value)});
      }
    }
    for (const auto& p : *params) {
      table.add({"param", p.step_id, p.key, "value", p.value});
    }
    for (const auto& t : *tags) {
      table.add({"tag", t.step_id, t.key, "value", t.value});
    }
    for (const auto& st : *steps) {
      nlohmann::json step = st;
      for (const auto& [field, value] : step.items()) {
        if (field != "id") {
          table.add({"step", st.id, "", field, csv_text(value)});
        }
      }
    }
    for (const auto& m : *metrics) {
      table.add({"metric", m.step_id, m.key, "last", format_metric(m.last)});
      table.add({"metric", m.step_id, m.key, "last_step", std::to_string(m.last_step)});
      table.add({"metric", m.step_id, m.key, "min", format_metric(m.min)});
      table.add({"metric", m.step_id, m.key, "max", format_metric(m.max)});
      table.add({"metric", m.step_id, m.key, "count", std::to_string(m.count)});
    }
    for (const auto& a : *artifacts) {
      table.add({"artifact", a.step_id, a.path, "sha256", a.sha256});
      table.add({"artifact", a.step_id, a.path, "size", std::to_string(a.size)});
      table.add({"artifact", a.step_id, a.path, "kind", std::string(core::to_string(a.kind))});
    }
    for (const auto& a : *attempts) {
      nlohmann::json attempt = a;
      for (const auto& [field, value] : attempt.items()) {
        if (field != "step" && field != "number") {
          table.add({"attempt", a.step_id, std::to_string(a.number), field, csv_text(value)});
        }
      }
    }
    table.print_csv(std::cout);
    return k_exit_ok;
  }
  const bool color = detect_terminal(STDOUT_FILENO).color;
  std::cout << paint("run " + std::to_string(run->number), Style::bold, color) << "  " << run->id << "\n";
  std::cout << "workflow  " << run->workflow_name << "  " << run->workflow_file
            << "  sha256:" << run->workflow_hash.substr(0, 12) << "\n";
  std::cout << "status    " << core::to_string(run->status);
  if (run->exit_code) {
    std::cout << " (exit " << *run->exit_code << ")";
  }
  std::cout << "\n";
  std::cout << "started   " << format_time(run->started_ms) << " by " << run->user << "@" << run->host;
  if (run->ended_ms) {
    std::cout << ", took " << format_duration_ms(*run->ended_ms - run->started_ms);
  }
  std::cout << "\n";
  if (!run->git_commit.empty()) {
    std::cout << "git       " << run->git_commit << (run->git_branch.empty() ? "" : " on " + run->git_branch)
              << (run->git_dirty ? " (dirty)" : "") << "\n";
  }
  std::cout << "command   " << run->command_line << "  (kiln " << run->kiln_version << ")\n";
  for (const core::PushRecord& push : *pushes) {
    std::cout << "pushed    " << push.remote << ", experiment '" << push.experiment
              << "': " << core::to_string(push.state);
    if (!push.error.empty()) {
      std::cout << " (" << push.error << ")";
    }
    std::cout << "\n";
  }
  // key=value lists: the run's own, then each step's.
  auto pairs = [&](const char* label, const std::vector<core::KeyValue>& entries, bool skip_system) {
    std::string current = "\x01";
    for (const auto& e : entries) {
      if (skip_system && e.key.starts_with("kiln.")) {
        continue; // shown above, in words
      }
      if (e.step_id != current) {
        current = e.step_id;
        std::string head = e.step_id.empty() ? label : std::string(label) + " (" + e.step_id + ")";
        head.resize(std::max<std::size_t>(head.size(), 9), ' ');
        std::cout << (&e == &entries.front() ? "" : "\n") << head;
      }
      std::cout << ' ' << e.key << '=' << e.value;
    }
    if (current != "\x01") {
      std::cout << "\n";
    }
  };
  pairs("params", *params, false);
  pairs("tags", *tags, true);
  std::cout << "\n";
  Table step_table({"STEP", "KIND", "STATUS", "ATTEMPTS", "DURATION", "EXIT", "REASON"});
  for (const auto& s : *steps) {
    std::optional<core::AttemptEnd> last_end;
    for (const auto& a : *attempts) {
      if (a.step_id == s.id) {
        last_end = a.end;
      }
    }
    step_table.add({s.id, s.kind, std::string(core::to_string(s.status)), std::to_string(s.attempts),
                    s.started_ms ? duration_of(*s.started_ms, s.ended_ms) : "-", exit_text(last_end),
                    s.reason.empty() ? "" : s.reason});
  }
  step_table.print(std::cout);
  if (!metrics->empty()) {
    std::cout << "\n";
    Table metric_table({"STEP", "METRIC", "LAST", "AT STEP", "MIN", "MAX", "POINTS"});
    for (const auto& m : *metrics) {
      metric_table.add({m.step_id, m.key, format_metric(m.last), std::to_string(m.last_step), format_metric(m.min),
                        format_metric(m.max), std::to_string(m.count)});
    }
    metric_table.print(std::cout);
  }
  if (!artifacts->empty()) {
    std::cout << "\n";
    Table artifact_table({"STEP", "ARTIFACT", "KIND", "SIZE", "SHA256"});
    for (const auto& a : *artifacts) {
      artifact_table.add(
          {a.step_id, a.path, std::string(core::to_string(a.kind)), format_size(a.size), a.sha256.substr(0, 12)});
    }
    artifact_table.print(std::cout);
  }
  if (!attempts->empty()) {
    std::cout << "\n";
    Table attempt_table({"STEP", "ATTEMPT", "PID", "STARTED", "DURATION", "EXIT", "STDOUT"});
    for (const auto& a : *attempts) {
      attempt_table.add({a.step_id, std::to_string(a.number), std::to_string(a.start.pid),
                         format_time(a.start.started_ms),
                         a.end ? format_duration_ms(a.end->ended_ms - a.start.started_ms) : "running", exit_text(a.end),
                         a.start.stdout_path});
    }
    attempt_table.print(std::cout);
  }
  return k_exit_ok;
}

int logs_command(const GlobalOptions& global, const std::string& ref, const std::string& step, int attempt,
                 const std::string& stream) {
  OpenedRun opened;
  if (int status = open_run(global, ref, opened); status != k_exit_ok) {
    return status;
  }
  auto& store = opened.store;
  const core::RunRecord* run = &opened.run;
  auto attempts = store->attempts(run->number);
  if (!attempts) {
    std::fprintf(stderr, "kiln: error: %s\n", attempts.error().c_str());
    return k_exit_internal;
  }
  // The chosen attempt of each step: the one asked for, else the last.
  std::vector<const core::AttemptRecord*> chosen;
  bool step_known = step.empty();
  for (const auto& a : *attempts) {
    if (!step.empty() && a.step_id != step) {
      continue;
    }
    step_known = true;
    if (attempt > 0) {
      if (a.number == attempt) {
        chosen.push_back(&a);
      }
    } else if (!chosen.empty() && chosen.back()->step_id == a.step_id) {
      chosen.back() = &a;
    } else {
      chosen.push_back(&a);
    }
  }
  if (!step_known) {
    std::fprintf(stderr, "kiln: error: run %lld has no attempts of a step '%s'; see kiln runs show %lld\n",
                 static_cast<long long>(run->number), step.c_str(), static_cast<long long>(run->number));
    return k_exit_usage;
  }
  if (chosen.empty()) {
    if (attempt > 0) {
      std::fprintf(stderr, "kiln: error: run %lld has no attempt %d%s\n", static_cast<long long>(run->number), attempt,
                   step.empty() ? "" : (" of step '" + step + "'").c_str());
      return k_exit_usage;
    }
    return k_exit_ok;
  }
  // Headers only when more than one file has something to show.
  int non_empty = 0;
  for (const auto* a : chosen) {
    for (const auto& [name, path] :
         {std::pair{std::string("out"), a->start.stdout_path}, std::pair{std::string("err"), a->start.stderr_path}}) {
      std::error_code ec;
      if ((stream == "both" || stream == name) && std::filesystem::file_size(path, ec) > 0 && !ec) {
        ++non_empty;
      }
    }
  }
  const bool headers = non_empty > 1;
  for (const auto* a : chosen) {
    for (const auto& [name, path] :
         {std::pair{std::string("out"), a->start.stdout_path}, std::pair{std::string("err"), a->start.stderr_path}}) {
      if (stream != "both" && stream != name) {
        continue;
      }
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        // No file: the stream said nothing (files are created on the first
        // byte). Any other failure to read is worth a word.
        if (errno != ENOENT) {
          std::fprintf(stderr, "kiln: warning: %s: %s\n", path.c_str(), std::strerror(errno));
        }
        continue;
      }
      if (in.peek() == std::ifstream::traits_type::eof()) {
        continue;
      }
      if (headers) {
        std::cout << "==> " << a->step_id << " attempt " << a->number << " std" << name << " <==\n";
      }
      std::cout << in.rdbuf();
      std::cout.flush();
    }
  }
  return k_exit_ok;
}

} // namespace kiln::cli
