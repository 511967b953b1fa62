#pragma once
// Runs each step as a child process of the runner, in its own process group,
// so that stopping a step reaches everything it started. The runner's single
// loop blocks in wait(): a ppoll on a signalfd that carries SIGCHLD (a job
// ended) and SIGINT/SIGTERM/SIGHUP (the runner was asked to stop), and on
// the pipes that carry the jobs' stdout and stderr, with the scheduler's
// nearest deadline as the timeout.
//
// Output goes through pipes, as in ninja, rather than straight into files:
// the runner sees it as it is written, and a log file is created only when
// its stream first says something. Creating a file costs ~300 us on some
// disks (ext4 on this project's VMs), more than a `true` step itself.

#include "core/executor.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/types.h>

namespace kiln::plugins {

/// Contract with the rest of the process: one LocalExecutor at a time,
/// created before any thread is started (threads inherit the blocked
/// signals), and no one else reaps its children (waitpid(-1) elsewhere would
/// steal their exit status; waitpid on one's own pids is fine).
class LocalExecutor final : public core::Executor {
public:
  /// Blocks SIGCHLD, SIGINT, SIGTERM and SIGHUP for this thread and opens the
  /// signalfd that wait() polls. A stop signal that was ignored when the
  /// executor was created (nohup, a background job) stays ignored.
  /// Throws std::system_error if the signalfd or /dev/null cannot be opened.
  LocalExecutor();
  /// SIGKILLs the process group of every job still running, reaps them, and
  /// restores the signal mask and SIGCHLD disposition it found. A stop
  /// signal that arrived but was not returned by wait() is then delivered.
  ~LocalExecutor() override;
  LocalExecutor(const LocalExecutor&) = delete;
  LocalExecutor& operator=(const LocalExecutor&) = delete;

  std::string_view name() const override { return "local"; }
  /// stdout_path and stderr_path are created by the runner (relative to its
  /// own working directory) when the stream first writes; a stream that
  /// writes nothing leaves no file. The same path for both gives one pipe
  /// and one file, in the order the job wrote.
  core::Expected<core::JobStarted> start(const core::LaunchSpec& spec) override;
  /// A job already reaped, or unknown, is left alone.
  void stop(core::JobId id, core::StopMode mode) override;
  /// Also returns at once with what is already there (exits reaped, stop
  /// signals pending), even past the deadline. A stop signal sent twice
  /// before wait() reads it counts once: standard signals do not queue.
  core::WaitResult wait(std::optional<core::TimePoint> deadline) override;

  /// Jobs started and not yet reaped.
  std::size_t running() const { return m_running.size(); }

private:
  /// One output stream of a job: the read end of its pipe (-1 once at end
  /// of file) and the log file, opened on the first byte.
  struct Capture {
    int pipe = -1;
    int file = -1;
    std::string path;
    /// The file could not be created or written: output is drained and
    /// dropped, after one warning.
    bool failed = false;
  };

  struct Job {
    core::JobId id = 0;
    pid_t pid = 0; // Also the process group id: each job leads its own group.
    Capture out;
    /// pipe -1 when stderr shares stdout's pipe.
    Capture err;
  };

  /// Moves what the pipe holds into the log file; at end of file closes the
  /// pipe. Never blocks.
  void pump(Capture& capture);
  /// Pumps, then closes the pipe and the file: after the job exited (and
  /// what it left in its group was killed), the pipe holds all it wrote.
  void finish(Capture& capture);

  void drain_signals(std::vector<int>& interrupts);
  void reap(std::vector<core::JobExit>& exits);
  /// Sets m_program to the file to exec; false if not found on the PATH.
  bool resolve_command(const core::LaunchSpec& spec);
  core::Error start_error(const core::LaunchSpec& spec, int error) const;

  std::vector<Job> m_running;
  core::JobId m_next_id = 1;

  int m_signal_fd = -1;
  int m_dev_null = -1;
  sigset_t m_watched;  // The signals read through m_signal_fd.
  sigset_t m_old_mask; // This thread's mask before the constructor.
  struct sigaction m_old_sigchld;

  // Reused across start() calls so a job costs no allocation beyond its
  // handle string.
  std::vector<char*> m_argv;
  std::vector<char*> m_envp;
  std::string m_program;
  std::vector<pollfd> m_poll;
  std::vector<Capture*> m_poll_captures;
  std::vector<char> m_buffer = std::vector<char>(64 * 1024);
};

/// Stops a job left behind by a runner that died, from its handle
/// "local:PGID:STARTTICKS": SIGTERM to the group, SIGKILL after about two
/// seconds if anything in it is still alive. A group is signalled only if
/// its leader is the same process (same start ticks) or is gone while the
/// group still exists (a pid cannot be reused while a group of that id
/// lives); a handle that does not parse, or whose pid now belongs to another
/// process, is left alone. Blocks for up to about two seconds.
void stop_orphan_job(std::string_view handle);

/// The same for several jobs at once: SIGTERM to every group, one grace of
/// about two seconds for all, then SIGKILL to what is left.
void stop_orphan_jobs(const std::vector<std::string>& handles);

} // namespace kiln::plugins
