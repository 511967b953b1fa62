#pragma once
// The seam between the scheduler and whatever runs a step: local child
// processes now, Slurm jobs later. The scheduler only starts jobs, asks them
// to stop, and waits for the next event with a deadline; nothing here knows
// about pids or process groups.

#include "core/clock.hpp"
#include "core/expected.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

struct LaunchSpec {
  std::string run_id;
  std::string step_id;
  int attempt = 1;
  /// argv[0] is looked up on the PATH of `env` when it has no slash.
  std::vector<std::string> argv;
  /// Absolute.
  std::string workdir;
  /// The whole environment of the job, as KEY=VALUE.
  std::vector<std::string> env;
  /// Files the job's stdout and stderr go to, created or truncated.
  std::string stdout_path;
  std::string stderr_path;
  int cpus = 1;
};

using JobId = std::uint64_t;

struct JobStarted {
  JobId id = 0;
  /// The process id where there is one, else 0; for people reading records.
  std::int64_t pid = 0;
  /// Durable description of the job ("local:PGID:STARTTICKS", a Slurm job
  /// id...) from which a later kiln process can stop it if this runner dies.
  std::string handle;
};

struct JobExit {
  JobId id = 0;
  /// The exit status when the job exited, else -1.
  int exit_code = -1;
  /// The signal that ended the job, else 0.
  int signal = 0;
};

struct WaitResult {
  std::vector<JobExit> exits;
  /// Signals (SIGINT, SIGTERM...) that asked the runner itself to stop, in
  /// order of arrival.
  std::vector<int> interrupts;
};

enum class StopMode { terminate, kill };

class Executor {
public:
  virtual ~Executor() = default;
  virtual std::string_view name() const = 0;
  /// Starts a job. An error means the job never ran (command not found,
  /// workdir missing...): the scheduler records a failed attempt.
  virtual Expected<JobStarted> start(const LaunchSpec& spec) = 0;
  /// terminate: ask the whole job to stop (SIGTERM to its process group);
  /// kill: stop it now (SIGKILL). Its exit is still reported by wait().
  virtual void stop(JobId id, StopMode mode) = 0;
  /// Blocks until at least one job ended, the runner was asked to stop, or
  /// `deadline` passed (never, if empty). Never sleeps past any of them.
  virtual WaitResult wait(std::optional<TimePoint> deadline) = 0;
};

} // namespace kiln::core
