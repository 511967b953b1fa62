#include "core/tracking_recorder.hpp"

#include <fstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kiln::core {

namespace {

constexpr Millis k_refresh_interval{250};
/// Problems kept per attempt for its failure reason; the rest are counted.
constexpr std::size_t k_kept_errors = 5;
/// File times and the runner's clock may disagree by a file system's
/// timestamp granularity.
constexpr std::int64_t k_clock_slack_ms = 1000;
constexpr std::size_t k_read_chunk = 256 * 1024;
/// A ::kiln:: line longer than this is refused rather than held in memory
/// and written to the store (a runaway print must not take the runner down).
constexpr std::size_t k_max_command_line = 64 * 1024;

std::string join_errors(const std::vector<std::string>& errors, std::int64_t count) {
  std::string text;
  for (const auto& e : errors) {
    if (!text.empty()) {
      text += "; ";
    }
    text += e;
  }
  if (count > static_cast<std::int64_t>(errors.size())) {
    text += "; and " + std::to_string(count - static_cast<std::int64_t>(errors.size())) + " more";
  }
  return text;
}

ArtifactKind output_kind(StepKind kind, const StepOutput& output) {
  if (kind == StepKind::predict) {
    return ArtifactKind::prediction;
  }
  if (kind == StepKind::train && output.name == "model") {
    return ArtifactKind::model;
  }
  return ArtifactKind::output;
}

} // namespace

Expected<void> record_artifacts(TrackerStore& store, std::int64_t run, std::string_view step,
                                const std::filesystem::path& workdir, const std::vector<ArtifactRequest>& requests,
                                std::int64_t at_ms) {
  std::vector<TrackerStore::NewArtifact> staged;
  auto discard_all = [&] {
    for (const auto& a : staged) {
      store.blobs().discard(a.blob);
    }
  };
  for (const ArtifactRequest& request : requests) {
    auto files = collect_artifact_files(workdir, request.path);
    if (!files) {
      discard_all();
      return Error{files.error()};
    }
    for (const ArtifactFile& file : *files) {
      auto blob = store.blobs().stage(file.source);
      if (!blob) {
        discard_all();
        return Error{blob.error()};
      }
      staged.push_back({file.logical_path, std::move(*blob), request.kind, request.name});
    }
  }
  if (staged.empty()) {
    return {};
  }
  return store.add_artifacts(run, step, staged, at_ms);
}

Expected<void> record_command(TrackerStore& store, std::int64_t run, std::string_view step,
                              const std::filesystem::path& workdir, const ProtocolCommand& command,
                              std::int64_t now_ms) {
  switch (command.kind) {
  case ProtocolCommand::Kind::metric: {
    std::vector<MetricPoint> points = command.metrics;
    for (auto& p : points) {
      if (p.timestamp_ms == 0) {
        p.timestamp_ms = now_ms;
      }
    }
    return store.log_metrics(run, step, points);
  }
  case ProtocolCommand::Kind::param: return store.log_params(run, step, command.values);
  case ProtocolCommand::Kind::tag:
    for (const auto& [key, value] : command.values) {
      if (key.starts_with("kiln.")) {
        return Error{"tag '" + key + "' uses the prefix 'kiln.', which is kiln's own; choose another name"};
      }
    }
    return store.set_tags(run, step, command.values);
  case ProtocolCommand::Kind::artifact: {
    std::vector<ArtifactRequest> requests;
    for (const auto& path : command.paths) {
      requests.push_back({path, ArtifactKind::logged, {}});
    }
    return record_artifacts(store, run, step, workdir, requests, now_ms);
  }
  }
  return {};
}

TrackingRecorder::TrackingRecorder(TrackerStore& store, const Plan& plan, std::int64_t run_number, const Clock& clock,
                                   YamlToJson yaml_to_json)
    : m_store(store), m_plan(plan), m_run(run_number), m_clock(clock), m_yaml_to_json(std::move(yaml_to_json)) {}

TrackingRecorder::Tail* TrackingRecorder::tail_of(int step) {
  for (auto& t : m_tails) {
    if (t.step == step) {
      return &t;
    }
  }
  return nullptr;
}

void TrackingRecorder::attempt_started(int step, int attempt, const LaunchSpec& spec, const JobStarted& /*job*/,
                                       std::int64_t at_ms) {
  const PlannedStep& planned = m_plan.steps[step];
  if (attempt == 1 && !planned.tags.empty()) {
    // A failure here is the store's (the tags were validated): it shows in
    // the step's own writes too, so it is not reported twice.
    (void)m_store.set_tags(m_run, planned.id, planned.tags);
  }
  if (Tail* old = tail_of(step)) {
    close(*old);
  }
  Tail tail;
  tail.step = step;
  tail.attempt = attempt;
  tail.started_ms = at_ms;
  tail.path = spec.stdout_path;
  m_tails.push_back(std::move(tail));
  if (!m_next) {
    m_next = m_clock.now() + k_refresh_interval;
  }
}

void TrackingRecorder::attempt_finished(int step, int /*attempt*/, const AttemptOutcome& /*outcome*/,
                                        std::int64_t /*at_ms*/, std::optional<Millis> /*retry_in*/) {
  if (Tail* tail = tail_of(step)) {
    drain(*tail, Drain::ended);
    close(*tail);
  }
}

std::optional<TimePoint> TrackingRecorder::next_refresh() const {
  return m_next;
}

void TrackingRecorder::refresh(TimePoint now) {
  for (auto& tail : m_tails) {
    drain(tail, Drain::running);
  }
  m_next = m_tails.empty() ? std::nullopt : std::optional<TimePoint>(now + k_refresh_interval);
}

void TrackingRecorder::note(Tail& tail, std::string error) {
  ++tail.error_count;
  if (tail.errors.size() < k_kept_errors) {
    tail.errors.push_back(std::move(error));
  }
}

void TrackingRecorder::close(Tail& tail) {
  if (tail.fd >= 0) {
    ::close(tail.fd);
  }
  const int step = tail.step;
  std::erase_if(m_tails, [step](const Tail& t) { return t.step == step; });
  if (m_tails.empty()) {
    m_next.reset();
  }
}

void TrackingRecorder::drain(Tail& tail, Drain mode) {
  if (tail.fd < 0) {
    tail.fd = ::open(tail.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (tail.fd < 0) {
      // The executor creates the log on the first output: nothing yet.
      return;
    }
  }
  const PlannedStep& planned = m_plan.steps[tail.step];
  std::vector<MetricPoint> metrics;
  const std::int64_t now_ms = m_clock.wall_ms();
  auto flush_metrics = [&] {
    if (metrics.empty()) {
      return;
    }
    if (auto logged = m_store.log_metrics(m_run, planned.id, metrics); !logged) {
      note(tail, "recording metrics: " + logged.error());
    }
    metrics.clear();
  };
  auto handle_line = [&](std::string_view line) {
    ++tail.line;
    if (!line.starts_with(k_protocol_prefix)) {
      return;
    }
    auto parsed = parse_protocol_line(line);
    const std::string where = "stdout line " + std::to_string(tail.line) + ": ";
    if (!parsed) {
      note(tail, where + parsed.error());
      return;
    }
    if (!*parsed) {
      return;
    }
    ProtocolCommand& command = **parsed;
    if (command.kind == ProtocolCommand::Kind::metric) {
      for (auto& p : command.metrics) {
        if (p.timestamp_ms == 0) {
          p.timestamp_ms = now_ms;
        }
        metrics.push_back(std::move(p));
      }
      return;
    }
    // Keep the order a step logged things in: metrics before a later param.
    flush_metrics();
    if (auto recorded = record_command(m_store, m_run, planned.id, planned.workdir, command, now_ms); !recorded) {
      note(tail, where + recorded.error());
    }
  };

  // One buffer for every tail and refresh: the loop calls this four times a
  // second per running step.
  if (m_read_buffer.empty()) {
    m_read_buffer.resize(k_read_chunk);
  }
  std::string& buffer = m_read_buffer;
  for (;;) {
    const ssize_t got = ::pread(tail.fd, buffer.data(), buffer.size(), tail.offset);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      break;
    }
    tail.offset += got;
    std::string_view data(buffer.data(), static_cast<std::size_t>(got));
    for (;;) {
      const std::size_t newline = data.find('\n');
      const std::string_view piece = data.substr(0, newline);
      const bool ends_line = newline != std::string_view::npos;
      if (tail.partial.empty() && !tail.overlong && ends_line) {
        if (piece.size() > k_max_command_line && piece.starts_with(k_protocol_prefix)) {
          tail.overlong = true;
        } else {
          handle_line(piece); // the common case: a whole line in the buffer
        }
      } else if (!tail.overlong) {
        // Only a line that may be a command is worth keeping; others are
        // skipped to their end, however long.
        if (tail.partial.size() < k_protocol_prefix.size() ||
            std::string_view(tail.partial).starts_with(k_protocol_prefix)) {
          tail.partial.append(
              piece.substr(0, k_max_command_line + 1 - std::min(tail.partial.size(), k_max_command_line + 1)));
        }
        if (tail.partial.size() > k_max_command_line && std::string_view(tail.partial).starts_with(k_protocol_prefix)) {
          tail.overlong = true;
          tail.partial.clear();
        } else if (ends_line) {
          handle_line(tail.partial);
          tail.partial.clear();
        }
      }
      if (!ends_line) {
        break;
      }
      if (tail.overlong) {
        ++tail.line;
        note(tail, "stdout line " + std::to_string(tail.line) + ": a ::kiln:: command longer than " +
                       std::to_string(k_max_command_line / 1024) + " KiB was refused");
        tail.overlong = false;
      }
      data.remove_prefix(newline + 1);
    }
  }
  if (mode == Drain::ended && tail.overlong) {
    note(tail, "stdout line " + std::to_string(tail.line + 1) + ": a ::kiln:: command longer than " +
                   std::to_string(k_max_command_line / 1024) + " KiB was refused");
    tail.overlong = false;
  } else if (mode == Drain::ended && !tail.partial.empty()) {
    handle_line(tail.partial);
    tail.partial.clear();
  }
  flush_metrics();
}

Expected<KeyValues> read_outputs_file(const std::filesystem::path& file) {
  KeyValues outputs;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return outputs;
  }
  auto is_name = [](std::string_view name) {
    return !name.empty() && (std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_') &&
           std::all_of(name.begin(), name.end(), [](char c) {
             return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
           });
  };
  auto set = [&outputs](std::string name, std::string value) {
    for (auto& [key, old] : outputs) {
      if (key == name) {
        old = std::move(value);
        return;
      }
    }
    outputs.emplace_back(std::move(name), std::move(value));
  };
  const std::string where = "KILN_OUTPUTS (" + file.string() + ")";
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.find_first_not_of(" \t") == std::string::npos) {
      continue;
    }
    const auto eq = line.find('=');
    const auto heredoc = line.find("<<");
    if (heredoc != std::string::npos && (eq == std::string::npos || heredoc < eq)) {
      const std::string name = line.substr(0, heredoc);
      const std::string delimiter = line.substr(heredoc + 2);
      if (!is_name(name) || delimiter.empty()) {
        return Error{where + " line " + std::to_string(number) + ": expected NAME<<DELIMITER, got '" + line + "'"};
      }
      const int start = number;
      std::string value;
      bool closed = false;
      bool first = true;
      while (std::getline(in, line)) {
        ++number;
        if (!line.empty() && line.back() == '\r') {
          line.pop_back();
        }
        if (line == delimiter) {
          closed = true;
          break;
        }
        value += (first ? "" : "\n") + line;
        first = false;
      }
      if (!closed) {
        return Error{where + " line " + std::to_string(start) + ": no line '" + delimiter + "' ends the value of '" +
                     name + "'"};
      }
      set(name, std::move(value));
      continue;
    }
    if (eq == std::string::npos || !is_name(line.substr(0, eq))) {
      return Error{where + " line " + std::to_string(number) + ": expected NAME=VALUE, got '" +
                   (line.size() > 80 ? line.substr(0, 77) + "..." : line) + "'"};
    }
    set(line.substr(0, eq), line.substr(eq + 1));
  }
  return outputs;
}

std::string TrackingRecorder::collect(int step, int attempt) {
  const PlannedStep& planned = m_plan.steps[step];
  std::vector<std::string> errors;
  std::int64_t count = 0;
  std::int64_t started_ms = 0;
  if (Tail* tail = tail_of(step)) {
    drain(*tail, Drain::ended);
    errors = tail->errors;
    count = tail->error_count;
    started_ms = tail->started_ms;
  }
  auto fail = [&](std::string error) {
    ++count;
    if (errors.size() < k_kept_errors) {
      errors.push_back(std::move(error));
    }
  };
  const std::filesystem::path workdir = planned.workdir;
  if (!planned.metrics.empty()) {
    const auto file = workdir / planned.metrics;
    struct stat info {};
    if (::stat(file.c_str(), &info) != 0) {
      fail("the step did not write its metrics file " + file.string());
    } else if (const std::int64_t written_ms = info.st_mtim.tv_sec * 1000LL + info.st_mtim.tv_nsec / 1000000;
               written_ms + k_clock_slack_ms < started_ms) {
      // Last night's file must not pass for tonight's results.
      fail("the metrics file " + file.string() +
           " was last written before this attempt started: the step did not "
           "write it this time");
    } else if (auto points = read_metrics_file(file, m_clock.wall_ms(), m_yaml_to_json); !points) {
      fail(points.error());
    } else if (auto logged = m_store.log_metrics(m_run, planned.id, *points); !logged) {
      fail("recording metrics: " + logged.error());
    }
  }
  if (!planned.outputs.empty()) {
    std::vector<ArtifactRequest> requests;
    for (const StepOutput& output : planned.outputs) {
      requests.push_back({output.path, output_kind(planned.kind, output), output.name});
    }
    if (auto recorded = record_artifacts(m_store, m_run, planned.id, workdir, requests, m_clock.wall_ms()); !recorded) {
      fail("declared output: " + recorded.error());
    }
  }
  const auto outputs_file = outputs_path(m_store.log_path(m_plan.run_id, planned.id, attempt, "out").string());
  if (auto outputs = read_outputs_file(outputs_file); !outputs) {
    fail(outputs.error());
  } else if (outputs->empty()) {
    // Nothing to record: no write (and no commit) for the common case.
  } else if (auto recorded = m_store.set_step_outputs(m_run, planned.id, *outputs); !recorded) {
    fail("recording outputs: " + recorded.error());
  }
  return join_errors(errors, count);
}

} // namespace kiln::core
