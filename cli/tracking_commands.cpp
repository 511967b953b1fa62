// Commands over what steps recorded: runs search / compare / delete,
// kiln metrics, kiln artifacts, kiln models and kiln gc. Each reads the store
// through a few TrackerStore queries and prints a table (on a terminal,
// metric curves as plots), CSV, or the JSON shape documented in kiln(1).

#include "cli/commands.hpp"
#include "cli/console.hpp"
#include "cli/history.hpp"
#include "cli/output.hpp"
#include "cli/plot.hpp"
#include "core/clock.hpp"
#include "core/duration.hpp"
#include "core/search_filter.hpp"
#include "core/tracker_store.hpp"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

namespace kiln::cli {

namespace {

int report(const std::string& error, int status) {
  std::fprintf(stderr, "kiln: error: %s\n", error.c_str());
  return status;
}

void print_filter_error(const core::FilterError& error) {
  std::fprintf(stderr, "kiln: error: filter: %s (column %d)\n%s\n", error.message.c_str(), error.column,
               error.excerpt.c_str());
}

std::string step_label(const std::string& step) {
  return step.empty() ? "(run)" : step;
}

/// "12:40" -> {12, 40}; either side may be empty ("5:", ":100").
bool parse_step_range(const std::string& text, std::optional<std::int64_t>& min, std::optional<std::int64_t>& max) {
  const auto colon = text.find(':');
  if (colon == std::string::npos) {
    return false;
  }
  auto number = [](std::string_view part, std::optional<std::int64_t>& out) {
    if (part.empty()) {
      return true;
    }
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc() || end != part.data() + part.size()) {
      return false;
    }
    out = value;
    return true;
  };
  const std::string_view all(text);
  return number(all.substr(0, colon), min) && number(all.substr(colon + 1), max);
}

} // namespace

// ---- runs search ----

int runs_search_command(const GlobalOptions& global, const SearchOptions& options) {
  auto filter = core::parse_search_filter(options.filter);
  if (auto* error = std::get_if<core::FilterError>(&filter)) {
    print_filter_error(*error);
    return k_exit_usage;
  }
  auto order = core::parse_order_by(options.order_by);
  if (auto* error = std::get_if<core::FilterError>(&order)) {
    std::fprintf(stderr, "kiln: error: --order-by: %s (column %d)\n%s\n", error->message.c_str(), error->column,
                 error->excerpt.c_str());
    return k_exit_usage;
  }
  std::unique_ptr<core::TrackerStore> store;
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  auto runs = store->search_runs(std::get<core::FilterNode>(filter), std::get<std::vector<core::OrderTerm>>(order),
                                 options.limit);
  if (!runs) {
    return report(runs.error(), k_exit_internal);
  }
  print_runs(*runs, options.format, *store);
  return k_exit_ok;
}

// ---- runs compare ----

int runs_compare_command(const GlobalOptions& global, const std::vector<std::string>& refs, OutputFormat format) {
  std::unique_ptr<core::TrackerStore> store;
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  struct Column {
    core::RunRecord run;
    std::map<std::pair<std::string, std::string>, std::string> params;
    std::map<std::pair<std::string, std::string>, double> metrics;
  };
  std::vector<Column> columns;
  // Row names in a stable order: the run's own first, then by step, by key.
  std::set<std::pair<std::string, std::string>> param_rows;
  std::set<std::pair<std::string, std::string>> metric_rows;
  for (const auto& ref : refs) {
    auto run = store->resolve_run(ref);
    if (!run) {
      return report(run.error(), k_exit_usage);
    }
    Column column{std::move(*run), {}, {}};
    auto params = store->params(column.run.number);
    auto metrics = store->metric_summaries(column.run.number);
    if (!params || !metrics) {
      return report(!params ? params.error() : metrics.error(), k_exit_internal);
    }
    for (const auto& p : *params) {
      column.params[{p.step_id, p.key}] = p.value;
      param_rows.insert({p.step_id, p.key});
    }
    for (const auto& m : *metrics) {
      column.metrics[{m.step_id, m.key}] = m.last;
      metric_rows.insert({m.step_id, m.key});
    }
    columns.push_back(std::move(column));
  }

  struct Row {
    std::string kind;
    std::string step;
    std::string key;
    std::vector<std::optional<std::string>> texts;
    std::vector<nlohmann::json> values;
    bool differs = false;
  };
  std::vector<Row> rows;
  for (const auto& name : param_rows) {
    Row row{"param", name.first, name.second, {}, {}, false};
    for (const auto& c : columns) {
      auto it = c.params.find(name);
      row.texts.push_back(it == c.params.end() ? std::nullopt : std::optional(it->second));
      row.values.push_back(it == c.params.end() ? nlohmann::json() : nlohmann::json(it->second));
    }
    rows.push_back(std::move(row));
  }
  for (const auto& name : metric_rows) {
    Row row{"metric", name.first, name.second, {}, {}, false};
    for (const auto& c : columns) {
      auto it = c.metrics.find(name);
      row.texts.push_back(it == c.metrics.end() ? std::nullopt : std::optional(format_metric(it->second)));
      row.values.push_back(it == c.metrics.end() ? nlohmann::json() : core::metric_value_json(it->second));
    }
    rows.push_back(std::move(row));
  }
  for (auto& row : rows) {
    row.differs = std::adjacent_find(row.texts.begin(), row.texts.end(), std::not_equal_to<>()) != row.texts.end();
  }

  if (format == OutputFormat::json) {
    nlohmann::json out;
    out["runs"] = nlohmann::json::array();
    for (const auto& c : columns) {
      out["runs"].push_back({{"number", c.run.number}, {"id", c.run.id}, {"workflow_name", c.run.workflow_name}});
    }
    out["rows"] = nlohmann::json::array();
    for (const auto& row : rows) {
      out["rows"].push_back({{"kind", row.kind},
                             {"step", row.step.empty() ? nlohmann::json() : nlohmann::json(row.step)},
                             {"key", row.key},
                             {"values", row.values},
                             {"differs", row.differs}});
    }
    std::cout << out.dump(2) << '\n';
    return k_exit_ok;
  }
  const bool color = format == OutputFormat::table && detect_terminal(STDOUT_FILENO).color;
  std::vector<std::string> header{"", "KIND", "STEP", "KEY"};
  if (format == OutputFormat::csv) {
    header = {"differs", "kind", "step", "key"};
  }
  for (const auto& c : columns) {
    header.push_back((format == OutputFormat::csv ? "run " : "RUN ") + std::to_string(c.run.number));
  }
  Table table(header);
  for (const auto& row : rows) {
    std::vector<std::string> cells;
    if (format == OutputFormat::csv) {
      cells = {row.differs ? "true" : "false", row.kind, row.step, row.key};
    } else {
      cells = {row.differs ? "*" : "", row.kind, step_label(row.step), row.key};
    }
    for (const auto& text : row.texts) {
      const std::string cell = text.value_or(format == OutputFormat::csv ? "" : "-");
      cells.push_back(row.differs ? paint(cell, Style::yellow, color) : cell);
    }
    table.add(std::move(cells));
  }
  print_table(table, format);
  if (format == OutputFormat::table) {
    std::cout << "(* marks rows whose values differ; metrics are each key's last value)\n";
  }
  return k_exit_ok;
}

// ---- runs delete ----

int runs_delete_command(const GlobalOptions& global, const std::vector<std::string>& refs, OutputFormat format) {
  std::unique_ptr<core::TrackerStore> store;
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  std::vector<std::int64_t> numbers;
  for (const auto& ref : refs) {
    auto run = store->resolve_run(ref);
    if (!run) {
      return report(run.error(), k_exit_usage);
    }
    numbers.push_back(run->number);
  }
  auto deleted = store->delete_runs(numbers);
  if (!deleted) {
    return report(deleted.error(), k_exit_step_failed);
  }
  if (format == OutputFormat::json) {
    nlohmann::json out{
        {"runs", deleted->runs}, {"blobs_removed", deleted->blobs_removed}, {"bytes_freed", deleted->bytes_freed}};
    std::cout << out.dump(2) << '\n';
    return k_exit_ok;
  }
  if (format == OutputFormat::csv) {
    Table table({"run"});
    for (auto n : deleted->runs) {
      table.add({std::to_string(n)});
    }
    table.print_csv(std::cout);
    return k_exit_ok;
  }
  for (auto n : deleted->runs) {
    std::printf("deleted run %lld\n", static_cast<long long>(n));
  }
  std::printf("freed %s in %lld artifact blobs no remaining run references\n",
              format_size(deleted->bytes_freed).c_str(), static_cast<long long>(deleted->blobs_removed));
  return k_exit_ok;
}

// ---- kiln gc ----

int gc_command(const GlobalOptions& global, const GcOptions& options) {
  core::TrackerStore::GcPolicy policy;
  const std::int64_t now = core::SystemClock().wall_ms();
  if (options.keep_last >= 0) {
    policy.keep_last = options.keep_last;
  }
  if (!options.older_than.empty()) {
    auto age = core::parse_duration(options.older_than);
    if (!age) {
      return report("--older-than " + options.older_than + ": " + age.error(), k_exit_usage);
    }
    policy.ended_before_ms = now - age->count();
  }
  policy.dry_run = options.dry_run;
  std::unique_ptr<core::TrackerStore> store;
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  auto report_gc = store->gc(policy, now);
  if (!report_gc) {
    return report(report_gc.error(), k_exit_internal);
  }
  if (options.format == OutputFormat::json) {
    nlohmann::json out;
    out["dry_run"] = options.dry_run;
    out["runs"] = nlohmann::json::array();
    for (const auto& r : report_gc->runs) {
      out["runs"].push_back(r.number);
    }
    out["blobs_removed"] = report_gc->blobs_removed;
    out["bytes_freed"] = report_gc->bytes_freed;
    out["temps_removed"] = report_gc->temps_removed;
    std::cout << out.dump(2) << '\n';
    return k_exit_ok;
  }
  const char* verb = options.dry_run ? "would remove" : "removed";
  if (options.format == OutputFormat::csv) {
    print_runs(report_gc->runs, options.format, *store);
  } else if (!report_gc->runs.empty()) {
    Table table({"#", "WORKFLOW", "STATUS", "STARTED", "ENDED"});
    for (const auto& r : report_gc->runs) {
      table.add({std::to_string(r.number), r.workflow_name, std::string(core::to_string(r.status)),
                 format_time(r.started_ms), r.ended_ms ? format_time(*r.ended_ms) : "-"});
    }
    print_table(table, options.format);
  }
  if (options.format == OutputFormat::table) {
    std::printf("kiln gc: %s %zu runs, %lld artifact blobs (%s) and %lld stale temp files\n", verb,
                report_gc->runs.size(), static_cast<long long>(report_gc->blobs_removed),
                format_size(report_gc->bytes_freed).c_str(), static_cast<long long>(report_gc->temps_removed));
  }
  return k_exit_ok;
}

// ---- kiln metrics ----

int metrics_command(const GlobalOptions& global, const MetricsOptions& options) {
  core::TrackerStore::HistoryQuery query;
  query.key = options.key;
  query.step = options.step;
  if (!options.step_range.empty() && !parse_step_range(options.step_range, query.min_step, query.max_step)) {
    return report("--step-range " + options.step_range + ": write A:B, A: or :B with integer steps", k_exit_usage);
  }
  OpenedRun opened;
  if (int status = open_run(global, options.run, opened); status != k_exit_ok) {
    return status;
  }
  auto& store = *opened.store;
  const std::int64_t run = opened.run.number;
  auto summaries = store.metric_summaries(run);
  if (!summaries) {
    return report(summaries.error(), k_exit_internal);
  }
  // The histories asked for: one key (of one step or all), or every key.
  std::vector<core::MetricSummary> series;
  for (const auto& s : *summaries) {
    if ((options.key.empty() || s.key == options.key) && (options.step.empty() || s.step_id == options.step)) {
      series.push_back(s);
    }
  }
  if (series.empty() && (!options.key.empty() || !options.step.empty())) {
    std::string known;
    for (const auto& s : *summaries) {
      known += (known.empty() ? "" : ", ") + step_label(s.step_id) + ":" + s.key;
    }
    return report("run " + std::to_string(run) + " has no metric " +
                      (options.key.empty() ? "" : "'" + options.key + "' ") +
                      (options.step.empty() ? "" : "of step '" + options.step + "' ") + "(it has " +
                      (known.empty() ? "none" : known) + ")",
                  k_exit_usage);
  }

  const Terminal terminal = detect_terminal(STDOUT_FILENO);
  if (terminal.is_tty && !options.format_given) {
    // People would rather look at a curve than read it: one plot per history.
    const int width = std::clamp(terminal.width - 14, 20, 100);
    for (const auto& s : series) {
      std::vector<std::pair<double, double>> points;
      core::TrackerStore::HistoryQuery one = query;
      one.key = s.key;
      one.step = s.step_id;
      auto read = store.metric_history(run, one, [&](const std::string&, const core::MetricPoint& p) {
        points.emplace_back(static_cast<double>(p.step), p.value);
      });
      if (!read) {
        return report(read.error(), k_exit_internal);
      }
      std::cout << paint(step_label(s.step_id) + " " + s.key, Style::bold, terminal.color) << "  last "
                << format_metric(s.last) << " at step " << s.last_step << ", min " << format_metric(s.min) << ", max "
                << format_metric(s.max) << ", " << s.count << " points\n";
      if (points.size() > 1) {
        for (const auto& line : braille_plot(points, width, 8, terminal.color)) {
          std::cout << line << '\n';
        }
      }
      std::cout << '\n';
    }
    std::cout << "(the points themselves: kiln metrics " << run << (options.key.empty() ? "" : " " + options.key)
              << " --output csv)\n";
    return k_exit_ok;
  }

  // Every point, streamed: a history may hold millions.
  FastWriter out(STDOUT_FILENO);
  const bool json = options.format == OutputFormat::json;
  if (json) {
    out.append("{\"run\": ");
    out.append_int(run);
    out.append(", \"points\": [");
  } else if (options.format == OutputFormat::csv) {
    out.append("step_id,key,step,timestamp_ms,value\n");
  } else {
    out.append("STEP\tKEY\tSTEP#\tTIMESTAMP_MS\tVALUE\n");
  }
  bool first = true;
  for (const auto& s : series) {
    core::TrackerStore::HistoryQuery one = query;
    one.key = s.key;
    one.step = s.step_id;
    // Names are the same for a whole history: format them once.
    std::string prefix;
    if (json) {
      prefix = "{\"step_id\": " + nlohmann::json(s.step_id).dump() + ", \"key\": " + nlohmann::json(s.key).dump() +
               ", \"step\": ";
    } else if (options.format == OutputFormat::csv) {
      prefix = csv_field(s.step_id) + "," + csv_field(s.key) + ",";
    } else {
      prefix = step_label(s.step_id) + "\t" + s.key + "\t";
    }
    auto read = store.metric_history(run, one, [&](const std::string&, const core::MetricPoint& p) {
      if (json) {
        out.append(first ? "\n  " : ",\n  ");
        out.append(prefix);
        out.append_int(p.step);
        out.append(", \"timestamp_ms\": ");
        out.append_int(p.timestamp_ms);
        out.append(", \"value\": ");
        if (std::isfinite(p.value)) {
          out.append_double(p.value);
        } else {
          out.append(core::metric_value_json(p.value).dump());
        }
        out.append("}");
      } else {
        out.append(prefix);
        out.append_int(p.step);
        out.append(options.format == OutputFormat::csv ? "," : "\t");
        out.append_int(p.timestamp_ms);
        out.append(options.format == OutputFormat::csv ? "," : "\t");
        out.append_double(p.value);
        out.newline();
      }
      first = false;
    });
    if (!read) {
      return report(read.error(), k_exit_internal);
    }
  }
  if (json) {
    out.append(first ? "]}\n" : "\n]}\n");
  }
  out.flush();
  return k_exit_ok;
}

// ---- kiln artifacts ----

int artifacts_list_command(const GlobalOptions& global, const std::string& ref, const std::string& step,
                           OutputFormat format) {
  OpenedRun opened;
  if (int status = open_run(global, ref, opened); status != k_exit_ok) {
    return status;
  }
  auto artifacts = opened.store->artifacts(opened.run.number, step);
  if (!artifacts) {
    return report(artifacts.error(), k_exit_internal);
  }
  if (format == OutputFormat::json) {
    std::cout << nlohmann::json(*artifacts).dump(2) << '\n';
    return k_exit_ok;
  }
  if (artifacts->empty() && format == OutputFormat::table) {
    std::printf("run %lld recorded no artifacts%s\n", static_cast<long long>(opened.run.number),
                step.empty() ? "" : (" for step '" + step + "'").c_str());
    return k_exit_ok;
  }
  const bool csv = format == OutputFormat::csv;
  Table table(csv ? std::vector<std::string>{"step", "path", "kind", "name", "size", "sha256", "created_ms"}
                  : std::vector<std::string>{"STEP", "PATH", "KIND", "SIZE", "SHA256"});
  for (const auto& a : *artifacts) {
    if (csv) {
      table.add({a.step_id, a.path, std::string(core::to_string(a.kind)), a.name, std::to_string(a.size), a.sha256,
                 std::to_string(a.created_ms)});
    } else {
      const std::string kind =
          std::string(core::to_string(a.kind)) + (a.name.empty() || a.name == "model" ? "" : " (" + a.name + ")");
      table.add({a.step_id, a.path, kind, format_size(a.size), a.sha256.substr(0, 12)});
    }
  }
  print_table(table, format);
  return k_exit_ok;
}

int artifacts_get_command(const GlobalOptions& global, const ArtifactGetOptions& options) {
  OpenedRun opened;
  if (int status = open_run(global, options.run, opened); status != k_exit_ok) {
    return status;
  }
  auto artifacts = opened.store->artifacts(opened.run.number, options.step);
  if (!artifacts) {
    return report(artifacts.error(), k_exit_internal);
  }
  std::string wanted = options.path;
  while (wanted.size() > 1 && wanted.back() == '/') {
    wanted.pop_back();
  }
  // The file itself, or everything under a directory of that name.
  std::vector<const core::ArtifactRecord*> matches;
  std::set<std::string> steps;
  bool is_file = false;
  for (const auto& a : *artifacts) {
    if (a.path == wanted || a.path.starts_with(wanted + "/")) {
      matches.push_back(&a);
      steps.insert(a.step_id);
      is_file = is_file || a.path == wanted;
    }
  }
  if (matches.empty()) {
    return report("run " + std::to_string(opened.run.number) + " has no artifact '" + wanted +
                      "'; see kiln artifacts list " + std::to_string(opened.run.number),
                  k_exit_usage);
  }
  if (steps.size() > 1) {
    std::string names;
    for (const auto& s : steps) {
      names += (names.empty() ? "" : ", ") + s;
    }
    return report("artifact '" + wanted + "' was recorded by several steps (" + names + "); choose one with --step",
                  k_exit_usage);
  }
  namespace fs = std::filesystem;
  const std::string base = fs::path(wanted).filename().string();
  fs::path dest = options.output.empty() ? fs::path(base) : fs::path(options.output);
  std::error_code ec;
  // DEST/ names a directory to put the file in, as with cp.
  const bool into_directory = !options.output.empty() && options.output.back() == '/';
  if (is_file && (into_directory || fs::is_directory(dest, ec))) {
    dest /= base;
  }
  if (!is_file && fs::exists(dest, ec) && !fs::is_directory(dest, ec)) {
    return report("'" + wanted + "' is a directory of artifacts, and " + dest.string() +
                      " is a file; give -o a directory (new or existing)",
                  k_exit_usage);
  }
  for (const auto* a : matches) {
    fs::path target = dest;
    if (!is_file) {
      target = dest / fs::path(a->path.substr(wanted.size() + 1));
    }
    const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
    if (fs::create_directories(parent, ec); ec) {
      return report("cannot create " + parent.string() + ": " + ec.message(), k_exit_usage);
    }
    if (auto copied = opened.store->blobs().copy_out(a->sha256, target); !copied) {
      return report(copied.error(), k_exit_internal);
    }
    std::printf("%s -> %s\n", a->path.c_str(), target.c_str());
  }
  std::fprintf(stderr, "kiln: wrote %zu file%s to %s (sha256 checked)\n", matches.size(),
               matches.size() == 1 ? "" : "s", dest.c_str());
  return k_exit_ok;
}

// ---- kiln models ----

int models_command(const GlobalOptions& global, const std::string& workflow, int limit, OutputFormat format) {
  std::unique_ptr<core::TrackerStore> store;
  if (int status = open_history(global, store); status != k_exit_ok) {
    return status;
  }
  auto models = store->models(workflow, limit);
  if (!models) {
    return report(models.error(), k_exit_internal);
  }
  if (format == OutputFormat::json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& m : *models) {
      nlohmann::json metrics = nlohmann::json::array();
      for (const auto& s : m.metrics) {
        metrics.push_back(s);
      }
      out.push_back({{"run", m.run_number},
                     {"run_id", m.run_id},
                     {"workflow_name", m.workflow_name},
                     {"run_status", core::to_string(m.run_status)},
                     {"artifact", m.artifact},
                     {"metrics", metrics}});
    }
    std::cout << out.dump(2) << '\n';
    return k_exit_ok;
  }
  if (models->empty() && format == OutputFormat::table) {
    std::printf("no models recorded%s\n", workflow.empty() ? "" : (" for workflow '" + workflow + "'").c_str());
    return k_exit_ok;
  }
  const bool csv = format == OutputFormat::csv;
  Table table(
      csv ? std::vector<std::string>{"run", "workflow", "run_status", "step", "path", "size", "sha256", "created_ms",
                                     "metrics"}
          : std::vector<std::string>{"RUN", "WORKFLOW", "STATUS", "STEP", "MODEL", "SIZE", "CREATED", "METRICS"});
  for (const auto& m : *models) {
    std::string metrics;
    for (const auto& s : m.metrics) {
      metrics += (metrics.empty() ? "" : " ") + s.key + "=" + format_metric(s.last);
    }
    if (csv) {
      table.add({std::to_string(m.run_number), m.workflow_name, std::string(core::to_string(m.run_status)),
                 m.artifact.step_id, m.artifact.path, std::to_string(m.artifact.size), m.artifact.sha256,
                 std::to_string(m.artifact.created_ms), metrics});
    } else {
      table.add({std::to_string(m.run_number), m.workflow_name, std::string(core::to_string(m.run_status)),
                 m.artifact.step_id, m.artifact.path, format_size(m.artifact.size), format_time(m.artifact.created_ms),
                 metrics.empty() ? "-" : metrics});
    }
  }
  print_table(table, format);
  return k_exit_ok;
}

} // namespace kiln::cli
