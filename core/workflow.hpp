#pragma once
// The workflow model: what a workflow file says, after parsing and
// validation, independent of YAML. Commands still hold their ${{ }}
// templates; core/plan resolves them when a run starts.

#include "core/clock.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::core {

/// 1-based; 0 means unknown.
struct SourceLocation {
  int line = 0;
  int column = 0;
};

enum class StepKind { task, train, evaluate, predict };
std::string_view to_string(StepKind kind);

enum class ParamType { string, integer, floating, boolean };
std::string_view to_string(ParamType type);

struct Param {
  std::string name;
  ParamType type = ParamType::string;
  /// Canonical text of the value in force (default or override): integers
  /// in decimal, floats as written or shortest round-trip, booleans true/false.
  std::string value;
  std::string description;
  SourceLocation location;
};

using EnvVars = std::vector<std::pair<std::string, std::string>>;
/// Tags, in file order.
using TagList = std::vector<std::pair<std::string, std::string>>;

enum class Backoff { fixed, exponential };

struct RetryPolicy {
  /// Retries after the first attempt: limit 2 means at most 3 attempts.
  int limit = 0;
  Backoff backoff = Backoff::fixed;
  Millis delay{1000};
  Millis max_delay{300000};
  bool jitter = false;
  /// Which outcomes are retried: any non-zero exit or death by signal,
  /// a timeout, or only the listed exit codes.
  bool on_failure = true;
  bool on_timeout = true;
  std::vector<int> exit_codes;
};

struct Command {
  enum class Form { shell, exec };
  Form form = Form::shell;
  /// Form::shell: run as /bin/sh -c script.
  std::string script;
  /// Form::exec: run directly, argv[0] looked up on PATH.
  std::vector<std::string> argv;
  SourceLocation location;
};

struct StepOutput {
  /// Empty for outputs given as a list.
  std::string name;
  std::string path;
};

struct Resources {
  int cpus = 1;
  /// Bytes; 0 = not said (not counted).
  std::int64_t memory = 0;
  int gpus = 0;
};

/// A condition as written (`when:`, or one `gate:` entry) and where its text starts.
struct Condition {
  std::string text;
  SourceLocation location;
  bool empty() const { return text.empty(); }
};

/// When a step may start, by what its needs did. Derived from the status
/// functions its `when:` calls (GitHub Actions' model): none means
/// `success()`, all needs succeeded (or were cached), and the step is
/// skipped as soon as one did not; with any of them the step waits for all
/// its needs, whatever happened, and the condition decides. `failure` (it
/// calls only failure()) lets a scheduler without a condition evaluator run
/// it only after a failure upstream.
enum class Trigger { success, failure, always };

struct Step {
  std::string id;
  StepKind kind = StepKind::task;
  std::string description;
  std::vector<std::string> needs;
  Command run;
  /// Relative to the workflow file's directory unless absolute.
  std::string workdir = ".";
  EnvVars env;
  std::vector<StepOutput> outputs;
  /// Declared inputs: files, directories and globs, relative to workdir.
  std::vector<std::string> inputs;
  /// Skip-unchanged caching: as written, else on for steps that declare both
  /// inputs and outputs.
  bool cache = false;
  Condition when;
  Trigger trigger = Trigger::success;
  /// evaluate: conditions on its own metrics; all must hold.
  std::vector<Condition> gate;
  /// evaluate: the metrics file the step writes.
  std::string metrics;
  /// predict: id of the train step whose model it consumes.
  std::string model;
  std::optional<Millis> timeout;
  /// After a timeout, how long SIGTERM has before SIGKILL.
  Millis kill_after{10000};
  RetryPolicy retries;
  Resources resources;
  TagList tags;
  /// A matrix variant's values (matrix.NAME), in the matrix's order; empty
  /// for a step without a matrix.
  std::vector<std::pair<std::string, std::string>> matrix;
  /// A matrix variant: the id of the step it expands ("train"); "" otherwise.
  std::string matrix_of;
  /// For a matrix: at most this many of its variants at once; 0 = no bound.
  int max_parallel = 0;
  SourceLocation location;

  /// The path of the output named `name`, or nullptr.
  const StepOutput* output(std::string_view name) const;
};

/// Where runs are pushed (the workflow's `tracking:` section); empty = not said.
struct TrackingConfig {
  /// An MLflow tracking server, "http(s)://host[:port][/path]".
  std::string uri;
  /// The MLflow experiment's name.
  std::string experiment;
  SourceLocation location;
};

struct Workflow {
  std::string name;
  std::string description;
  /// The file as given on the command line, and its absolute directory.
  std::string file;
  std::string directory;
  /// The file's bytes and their SHA-256, hex.
  std::string content;
  std::string content_hash;
  std::vector<Param> params;
  EnvVars env;
  TagList tags;
  TrackingConfig tracking;
  /// In file order.
  std::vector<Step> steps;

  const Step* step(std::string_view id) const;
  const Param* param(std::string_view name) const;
};

} // namespace kiln::core
