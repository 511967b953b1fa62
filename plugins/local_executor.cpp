// The local executor follows ninja's subprocess-posix.cc: children are made
// with posix_spawn (glibc uses clone(CLONE_VFORK) and reports exec failures
// synchronously), each in its own process group, and the one blocking point
// is a ppoll. Unlike ninja, signals come through a signalfd rather than a
// handler: SIGCHLD, SIGINT, SIGTERM and SIGHUP stay blocked for the life of
// the executor, so none can arrive between a check and the ppoll, and the
// stop requests are read in order of arrival.
//
// SIGCHLD is only a hint: several exits may coalesce into one, and other
// code may run children of its own. So every wakeup ends with a WNOHANG
// waitpid on each of our running jobs, and never with waitpid(-1).

#include "plugins/local_executor.hpp"

#include "plugins/process_identity.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kiln::plugins {

namespace {

// The spawn attributes are the same for every job: own process group, no
// blocked signals, default dispositions for what the runner blocks or may
// ignore. glibc resets signal handlers in the child by itself.
class SpawnAttributes {
public:
  SpawnAttributes() {
    ::posix_spawnattr_init(&m_attr);
    sigset_t empty;
    sigemptyset(&empty);
    sigset_t defaults;
    sigemptyset(&defaults);
    for (const int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) {
      sigaddset(&defaults, sig);
    }
    ::posix_spawnattr_setflags(&m_attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    ::posix_spawnattr_setpgroup(&m_attr, 0);
    ::posix_spawnattr_setsigmask(&m_attr, &empty);
    ::posix_spawnattr_setsigdefault(&m_attr, &defaults);
  }
  ~SpawnAttributes() { ::posix_spawnattr_destroy(&m_attr); }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;

  const posix_spawnattr_t* get() const { return &m_attr; }

private:
  posix_spawnattr_t m_attr;
};

const SpawnAttributes& spawn_attributes() {
  static const SpawnAttributes attributes;
  return attributes;
}

class FileActions {
public:
  FileActions() { ::posix_spawn_file_actions_init(&m_actions); }
  ~FileActions() { ::posix_spawn_file_actions_destroy(&m_actions); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;

  posix_spawn_file_actions_t* get() { return &m_actions; }

private:
  posix_spawn_file_actions_t m_actions;
};

class Fd {
public:
  explicit Fd(int fd = -1) : m_fd(fd) {}
  ~Fd() {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return m_fd; }
  int release() {
    const int fd = m_fd;
    m_fd = -1;
    return fd;
  }
  void reset(int fd) {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
    m_fd = fd;
  }

private:
  int m_fd;
};

std::string error_text(int error) {
  return std::generic_category().message(error);
}

// The child's dup2 onto 0, 1 and 2 happen in order, so a source descriptor
// must not be one of them (it is when the runner's own stdio was closed).
int above_stdio(int fd) {
  if (fd < 0 || fd > 2) {
    return fd;
  }
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return moved;
}

int open_output(const std::string& path) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
  } while (fd < 0 && errno == EINTR);
  return above_stdio(fd);
}

// A pipe for one output stream: the child gets the write end as its stdout
// or stderr; the runner reads the other, without blocking. O_NONBLOCK is
// set on the read end alone: the two ends are separate open files, and a
// job must see an ordinary blocking stdout.
struct OutputPipe {
  Fd read;
  Fd write;

  bool open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      return false;
    }
    read.reset(fds[0]);
    write.reset(above_stdio(fds[1]));
    return write.get() >= 0 && ::fcntl(read.get(), F_SETFL, O_NONBLOCK) == 0;
  }
};

bool is_executable_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

const char* env_path(const std::vector<std::string>& env) {
  for (const std::string& entry : env) {
    if (entry.starts_with("PATH=")) {
      return entry.c_str() + 5;
    }
  }
  const char* own = std::getenv("PATH");
  return own != nullptr ? own : "/usr/local/bin:/usr/bin:/bin";
}

// Field 22 of /proc/<pid>/stat is the time of the fork on CLOCK_BOOTTIME,
// floored to clock ticks (proc(5)). A tick read on the same clock before and
// after posix_spawn brackets the fork; when both reads agree, that is the
// child's start tick and the /proc read, the largest cost of start() after
// the spawn itself, is skipped. 0 when the tick does not divide a second.
std::int64_t tick_nanoseconds() {
  static const std::int64_t nanoseconds = [] {
    const long hz = ::sysconf(_SC_CLK_TCK);
    return hz > 0 && 1'000'000'000 % hz == 0 ? 1'000'000'000 / hz : 0;
  }();
  return nanoseconds;
}

std::int64_t boot_tick(std::int64_t tick_ns) {
  timespec now = {};
  if (tick_ns == 0 || ::clock_gettime(CLOCK_BOOTTIME, &now) != 0) {
    return -1;
  }
  return (static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec) / tick_ns;
}

void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

} // namespace

LocalExecutor::LocalExecutor() {
  sigemptyset(&m_watched);
  sigaddset(&m_watched, SIGCHLD);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction current = {};
    ::sigaction(sig, nullptr, &current);
    const bool ignored = (current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_IGN;
    if (!ignored) {
      sigaddset(&m_watched, sig);
    }
  }

  // An ignored SIGCHLD (or SA_NOCLDWAIT) makes the kernel reap children
  // itself, and waitpid would never see an exit status.
  struct sigaction child_default = {};
  child_default.sa_handler = SIG_DFL;
  sigemptyset(&child_default.sa_mask);
  ::sigaction(SIGCHLD, &child_default, &m_old_sigchld);

  ::pthread_sigmask(SIG_BLOCK, &m_watched, &m_old_mask);
  m_signal_fd = ::signalfd(-1, &m_watched, SFD_CLOEXEC | SFD_NONBLOCK);
  m_dev_null = above_stdio(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (m_signal_fd < 0 || m_dev_null < 0) {
    const int error = errno;
    if (m_signal_fd >= 0) {
      ::close(m_signal_fd);
    }
    ::sigaction(SIGCHLD, &m_old_sigchld, nullptr);
    ::pthread_sigmask(SIG_SETMASK, &m_old_mask, nullptr);
    errno = error;
    throw_errno("LocalExecutor");
  }
  spawn_attributes();
}

LocalExecutor::~LocalExecutor() {
  for (const Job& job : m_running) {
    ::kill(-job.pid, SIGKILL);
  }
  for (Job& job : m_running) {
    int status = 0;
    while (::waitpid(job.pid, &status, 0) < 0 && errno == EINTR) {
    }
    finish(job.out);
    finish(job.err);
  }
  ::close(m_signal_fd);
  ::close(m_dev_null);
  // A signal still pending meets the restored disposition as if it arrived
  // now: a SIGCHLD is only a hint, and a stop request that wait() never
  // returned takes the effect it would have had without us.
  ::sigaction(SIGCHLD, &m_old_sigchld, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &m_old_mask, nullptr);
}

bool LocalExecutor::resolve_command(const core::LaunchSpec& spec) {
  const std::string& command = spec.argv.front();
  if (command.find('/') != std::string::npos) {
    // Relative to the workdir: the child changes there before the exec.
    m_program = command;
    return true;
  }
  if (command.empty()) {
    m_program.clear();
    return false;
  }
  // Like execvp, but on the job's PATH, and with relative entries (an empty
  // one means ".") taken from the job's workdir rather than the runner's.
  std::string_view path = env_path(spec.env);
  while (true) {
    const std::size_t colon = path.find(':');
    const std::string_view dir = path.substr(0, colon);
    m_program.clear();
    if (!dir.starts_with('/') && !spec.workdir.empty()) {
      m_program.append(spec.workdir).push_back('/');
    }
    if (!dir.empty()) {
      m_program.append(dir).push_back('/');
    }
    m_program.append(command);
    if (is_executable_file(m_program)) {
      return true;
    }
    if (colon == std::string_view::npos) {
      m_program.clear();
      return false;
    }
    path.remove_prefix(colon + 1);
  }
}

core::Error LocalExecutor::start_error(const core::LaunchSpec& spec, int error) const {
  // posix_spawn reports a failed chdir and a failed exec alike; tell them
  // apart here, off the hot path.
  if (!spec.workdir.empty()) {
    struct stat st;
    if (::stat(spec.workdir.c_str(), &st) != 0) {
      if (errno == ENOENT) {
        return core::Error{"workdir does not exist: " + spec.workdir};
      }
      return core::Error{"cannot use workdir " + spec.workdir + ": " + error_text(errno)};
    }
    if (!S_ISDIR(st.st_mode)) {
      return core::Error{"workdir is not a directory: " + spec.workdir};
    }
  }
  if (error == ENOENT) {
    // m_program still names the file posix_spawn was given.
    const std::string program =
        m_program.starts_with('/') || spec.workdir.empty() ? m_program : spec.workdir + "/" + m_program;
    if (!m_program.empty() && ::access(program.c_str(), F_OK) == 0) {
      return core::Error{"cannot run " + spec.argv.front() + ": its interpreter was not found"};
    }
    return core::Error{"command not found: " + spec.argv.front()};
  }
  return core::Error{"cannot run " + spec.argv.front() + ": " + error_text(error)};
}

core::Expected<core::JobStarted> LocalExecutor::start(const core::LaunchSpec& spec) {
  if (spec.argv.empty()) {
    return core::Error{"empty command"};
  }
  if (!resolve_command(spec)) {
    return start_error(spec, ENOENT);
  }

  const bool shared = spec.stderr_path == spec.stdout_path;
  OutputPipe out;
  OutputPipe err;
  if (!out.open() || (!shared && !err.open())) {
    return core::Error{"cannot create a pipe for the output: " + error_text(errno)};
  }

  FileActions actions;
  ::posix_spawn_file_actions_adddup2(actions.get(), m_dev_null, 0);
  ::posix_spawn_file_actions_adddup2(actions.get(), out.write.get(), 1);
  ::posix_spawn_file_actions_adddup2(actions.get(), shared ? out.write.get() : err.write.get(), 2);
  if (!spec.workdir.empty()) {
    ::posix_spawn_file_actions_addchdir_np(actions.get(), spec.workdir.c_str());
  }
  // Our descriptors are all close-on-exec, but a library elsewhere in the
  // runner may open one without it; none of them belongs in a job.
  ::posix_spawn_file_actions_addclosefrom_np(actions.get(), 3);

  m_argv.clear();
  for (const std::string& arg : spec.argv) {
    m_argv.push_back(const_cast<char*>(arg.c_str()));
  }
  m_argv.push_back(nullptr);
  m_envp.clear();
  for (const std::string& entry : spec.env) {
    m_envp.push_back(const_cast<char*>(entry.c_str()));
  }
  m_envp.push_back(nullptr);

  const std::int64_t tick_ns = tick_nanoseconds();
  const std::int64_t tick_before = boot_tick(tick_ns);
  pid_t pid = 0;
  const int error =
      ::posix_spawn(&pid, m_program.c_str(), actions.get(), spawn_attributes().get(), m_argv.data(), m_envp.data());
  if (error != 0) {
    return start_error(spec, error);
  }
  const std::int64_t tick_after = boot_tick(tick_ns);

  const core::JobId id = m_next_id++;
  Job job{id, pid, {out.read.release(), -1, spec.stdout_path, false}, {}};
  if (!shared) {
    job.err = {err.read.release(), -1, spec.stderr_path, false};
  }
  m_running.push_back(std::move(job));

  // The child cannot be reaped before we read its stat: only wait() reaps.
  const std::int64_t start_ticks =
      tick_before >= 0 && tick_before == tick_after ? tick_before : process_start_ticks(pid);
  std::string handle = "local:";
  handle += std::to_string(pid);
  handle += ':';
  handle += std::to_string(start_ticks);
  return core::JobStarted{id, pid, std::move(handle)};
}

void LocalExecutor::stop(core::JobId id, core::StopMode mode) {
  for (const Job& job : m_running) {
    if (job.id == id) {
      // The whole group, so that grandchildren go too. The leader is not
      // reaped yet (only wait() reaps), so the group id cannot have been
      // reused; ESRCH just means everything in it already exited.
      ::kill(-job.pid, mode == core::StopMode::kill ? SIGKILL : SIGTERM);
      return;
    }
  }
}

void LocalExecutor::drain_signals(std::vector<int>& interrupts) {
  signalfd_siginfo infos[8];
  while (true) {
    const ssize_t n = ::read(m_signal_fd, infos, sizeof(infos));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return; // EAGAIN: drained.
    }
    const std::size_t count = static_cast<std::size_t>(n) / sizeof(signalfd_siginfo);
    for (std::size_t i = 0; i < count; ++i) {
      if (infos[i].ssi_signo != SIGCHLD) {
        interrupts.push_back(static_cast<int>(infos[i].ssi_signo));
      }
    }
    if (count < std::size(infos)) {
      return;
    }
  }
}

void LocalExecutor::reap(std::vector<core::JobExit>& exits) {
  for (std::size_t i = 0; i < m_running.size();) {
    const pid_t pid = m_running[i].pid;
    // Peek first, without reaping: while the exited leader is a zombie its
    // pid, and so its process group id, cannot be reused.
    siginfo_t info = {};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0) {
      ++i;
      continue;
    }
    // A step is over when its command is: whatever it left running in its
    // group (a background `sleep &`, a grandchild that ignored SIGTERM) is
    // killed, so no step outlives its record or escapes a timeout or a
    // Ctrl-C. Something meant to outlive a step must leave its group
    // (setsid).
    ::kill(-pid, SIGKILL);
    int status = 0;
    pid_t reaped = 0;
    do {
      reaped = ::waitpid(pid, &status, 0);
    } while (reaped < 0 && errno == EINTR);
    // What the job wrote is in its pipes now: take it before reporting.
    finish(m_running[i].out);
    finish(m_running[i].err);
    core::JobExit exit;
    exit.id = m_running[i].id;
    // ECHILD: someone else reaped it (a waitpid(-1) elsewhere); its status
    // is lost and the exit is reported with neither code nor signal.
    if (reaped > 0 && WIFEXITED(status)) {
      exit.exit_code = WEXITSTATUS(status);
    } else if (reaped > 0 && WIFSIGNALED(status)) {
      exit.signal = WTERMSIG(status);
    }
    exits.push_back(exit);
    m_running[i] = m_running.back();
    m_running.pop_back();
  }
}

core::WaitResult LocalExecutor::wait(std::optional<core::TimePoint> deadline) {
  core::WaitResult result;
  while (true) {
    drain_signals(result.interrupts);
    reap(result.exits);
    if (!result.exits.empty() || !result.interrupts.empty()) {
      return result;
    }

    timespec timeout = {};
    if (deadline) {
      const core::TimePoint now = std::chrono::steady_clock::now();
      if (now >= *deadline) {
        return result;
      }
      // ppoll takes nanoseconds and the kernel never wakes it early on the
      // same monotonic clock as steady_clock, so the exact remainder neither
      // spins (as a timeout truncated to 0 ms would) nor oversleeps (as one
      // rounded up to the next ms would).
      const auto left = std::chrono::ceil<std::chrono::nanoseconds>(*deadline - now);
      const auto seconds = std::chrono::floor<std::chrono::seconds>(left);
      timeout.tv_sec = static_cast<time_t>(seconds.count());
      timeout.tv_nsec = static_cast<long>((left - seconds).count());
    }
    m_poll.clear();
    m_poll_captures.clear();
    m_poll.push_back({m_signal_fd, POLLIN, 0});
    m_poll_captures.push_back(nullptr);
    for (Job& job : m_running) {
      for (Capture* capture : {&job.out, &job.err}) {
        if (capture->pipe >= 0) {
          m_poll.push_back({capture->pipe, POLLIN, 0});
          m_poll_captures.push_back(capture);
        }
      }
    }
    if (::ppoll(m_poll.data(), m_poll.size(), deadline ? &timeout : nullptr, nullptr) < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw_errno("ppoll");
    }
    for (std::size_t i = 1; i < m_poll.size(); ++i) {
      if (m_poll[i].revents != 0) {
        pump(*m_poll_captures[i]);
      }
    }
  }
}

void LocalExecutor::pump(Capture& capture) {
  while (capture.pipe >= 0) {
    const ssize_t n = ::read(capture.pipe, m_buffer.data(), m_buffer.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno != EAGAIN) {
        ::close(capture.pipe);
        capture.pipe = -1;
      }
      return;
    }
    if (n == 0) {
      ::close(capture.pipe);
      capture.pipe = -1;
      return;
    }
    if (capture.failed) {
      continue;
    }
    if (capture.file < 0) {
      capture.file = open_output(capture.path);
    }
    const char* data = m_buffer.data();
    std::size_t left = static_cast<std::size_t>(n);
    while (capture.file >= 0 && left > 0) {
      const ssize_t written = ::write(capture.file, data, left);
      if (written < 0 && errno == EINTR) {
        continue;
      }
      if (written <= 0) {
        break;
      }
      data += written;
      left -= static_cast<std::size_t>(written);
    }
    if (capture.file < 0 || left > 0) {
      // Disk full, store removed...: keep draining so the job never blocks
      // on a full pipe, and say so once.
      std::fprintf(stderr, "kiln: warning: cannot write %s: %s; dropping the rest of this output\n",
                   capture.path.c_str(), error_text(errno).c_str());
      capture.failed = true;
    }
  }
}

void LocalExecutor::finish(Capture& capture) {
  pump(capture);
  if (capture.pipe >= 0) {
    ::close(capture.pipe);
    capture.pipe = -1;
  }
  if (capture.file >= 0) {
    ::close(capture.file);
    capture.file = -1;
  }
}

namespace {

/// The group a handle "local:PGID:TICKS" names, if it is still ours to
/// signal; 0 otherwise.
pid_t orphan_group(std::string_view handle) {
  constexpr std::string_view prefix = "local:";
  if (!handle.starts_with(prefix)) {
    return 0;
  }
  handle.remove_prefix(prefix.size());
  const std::size_t colon = handle.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == handle.size()) {
    return 0;
  }
  std::uint64_t group = 0;
  std::uint64_t ticks = 0;
  const char* first = handle.data();
  const char* middle = first + colon;
  const char* last = first + handle.size();
  if (std::from_chars(first, middle, group).ptr != middle || std::from_chars(middle + 1, last, ticks).ptr != last) {
    return 0;
  }
  // Group 0 is our own group and -1 every process we may signal; our own
  // group is never a job's.
  const auto pgid = static_cast<pid_t>(group);
  if (group <= 1 || group != static_cast<std::uint64_t>(pgid) || pgid == ::getpgrp()) {
    return 0;
  }
  const std::int64_t leader_ticks = process_start_ticks(pgid);
  if (leader_ticks != static_cast<std::int64_t>(ticks)) {
    // Another process holds the leader's pid: the job's group ended before
    // it was reused. Or the leader is gone: then the group is ours only if
    // it still exists, and the leader's pid still not reused.
    if (leader_ticks != 0 || ::kill(-pgid, 0) != 0 || process_start_ticks(pgid) != 0) {
      return 0;
    }
  }
  return pgid;
}

bool group_gone(pid_t pgid) {
  // A group of zombies still exists until they are reaped by whoever
  // inherited them (an init that reaps lazily, or none in a container).
  return (::kill(-pgid, 0) != 0 && errno == ESRCH) || !process_group_running(pgid);
}

} // namespace

void stop_orphan_jobs(const std::vector<std::string>& handles) {
  std::vector<pid_t> groups;
  for (const std::string& handle : handles) {
    if (const pid_t pgid = orphan_group(handle); pgid != 0) {
      groups.push_back(pgid);
      ::kill(-pgid, SIGTERM);
    }
  }
  // All at once, then one grace for all: a recovery that finds eight
  // stubborn steps waits two seconds, not sixteen. This runs in a recovery
  // command, not in the runner's loop: a short poll is simpler than anything
  // that could wait on groups we did not start.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!groups.empty() && std::chrono::steady_clock::now() < give_up) {
    groups.erase(std::remove_if(groups.begin(), groups.end(), group_gone), groups.end());
    if (!groups.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  for (const pid_t pgid : groups) {
    ::kill(-pgid, SIGKILL);
  }
}

void stop_orphan_job(std::string_view handle) {
  stop_orphan_jobs({std::string(handle)});
}

} // namespace kiln::plugins
