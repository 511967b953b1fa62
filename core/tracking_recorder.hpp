#pragma once
// Records what steps produce while a plan runs: the line protocol on each
// running attempt's stdout (read from its log file as it grows, so it works
// for any executor that writes logs), the declared metrics file and outputs
// when an attempt exits 0. Metrics, params and tags a step prints are in the
// store within a refresh interval (250 ms), before the step ends.
//
// A problem with what a step recorded (a malformed ::kiln:: line, a param
// changed, a declared output missing or outside the workdir, a metrics file
// that does not parse) fails the attempt when its command ends, with a reason
// naming it: a typo must not silently lose a metric or a model.

#include "core/clock.hpp"
#include "core/line_protocol.hpp"
#include "core/metrics_file.hpp"
#include "core/plan.hpp"
#include "core/scheduler.hpp"
#include "core/tracker_store.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

struct ArtifactRequest {
  /// Relative to the workdir, or absolute inside it.
  std::string path;
  ArtifactKind kind = ArtifactKind::logged;
  std::string name;
};

/// Finds the files the requests name (directories recursively), copies them
/// into the blob store and records them for the step, all or nothing. The
/// error names the first path refused or unreadable.
Expected<void> record_artifacts(TrackerStore& store, std::int64_t run, std::string_view step,
                                const std::filesystem::path& workdir, const std::vector<ArtifactRequest>& requests,
                                std::int64_t at_ms);

/// Records one protocol command for a step (timestamps 0 become `now_ms`).
Expected<void> record_command(TrackerStore& store, std::int64_t run, std::string_view step,
                              const std::filesystem::path& workdir, const ProtocolCommand& command,
                              std::int64_t now_ms);

/// The `name=value` lines a step wrote to its KILN_OUTPUTS file, as GitHub
/// Actions' GITHUB_OUTPUT: also `name<<DELIMITER`, then lines up to one that
/// is DELIMITER, for a value of several lines. Blank lines are ignored; a
/// later line for a name replaces an earlier one. No file is no outputs. The
/// error names the line: a typo must not lose an output silently.
Expected<KeyValues> read_outputs_file(const std::filesystem::path& file);

class TrackingRecorder final : public RunObserver, public OutputCollector {
public:
  TrackingRecorder(TrackerStore& store, const Plan& plan, std::int64_t run_number, const Clock& clock,
                   YamlToJson yaml_to_json);

  void attempt_started(int step, int attempt, const LaunchSpec& spec, const JobStarted& job,
                       std::int64_t at_ms) override;
  void attempt_finished(int step, int attempt, const AttemptOutcome& outcome, std::int64_t at_ms,
                        std::optional<Millis> retry_in) override;
  std::optional<TimePoint> next_refresh() const override;
  void refresh(TimePoint now) override;

  std::string collect(int step, int attempt) override;

private:
  /// An attempt whose stdout is being followed.
  struct Tail {
    int step = -1;
    int attempt = 0;
    std::int64_t started_ms = 0;
    std::string path;
    int fd = -1;
    std::int64_t offset = 0;
    /// The start of a line not yet ended by '\n' (kept only while it may
    /// be a command, and at most k_max_command_line bytes of it).
    std::string partial;
    /// The current line is a command longer than the limit: skip to its end.
    bool overlong = false;
    std::int64_t line = 0;
    /// What the step got wrong, in order; the first few are kept.
    std::vector<std::string> errors;
    std::int64_t error_count = 0;
  };

  Tail* tail_of(int step);
  enum class Drain {
    /// The step still runs: an unterminated last line waits for its end.
    running,
    /// The step has ended: an unterminated last line counts too.
    ended,
  };
  /// Reads what the log gained and records its commands.
  void drain(Tail& tail, Drain mode);
  void note(Tail& tail, std::string error);
  void close(Tail& tail);

  TrackerStore& m_store;
  const Plan& m_plan;
  std::int64_t m_run;
  const Clock& m_clock;
  YamlToJson m_yaml_to_json;
  std::vector<Tail> m_tails;
  std::string m_read_buffer;
  std::optional<TimePoint> m_next;
};

} // namespace kiln::core
