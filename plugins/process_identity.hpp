#pragma once
// Who a process is, across pid reuse: a pid plus the kernel's start time of
// that process (field 22 of /proc/<pid>/stat, in clock ticks since boot).
// A later kiln process uses this pair to tell whether a runner or a job it
// finds in the store is still the same process before signalling it.

#include <cstdint>
#include <string>

namespace kiln::plugins {

/// The start time of `pid` in clock ticks since boot; 0 if there is no such
/// process (a zombie still has one: it exists until reaped).
std::int64_t process_start_ticks(std::int64_t pid);

/// True if `pid` is a live process (not a zombie) that started at
/// `start_ticks`; false if it is gone, a zombie, or another process that
/// reuses the pid.
bool process_alive(std::int64_t pid, std::int64_t start_ticks);

/// True if some process of group `pgid` is still running (not a zombie).
/// Scans /proc: for crash recovery, not for the runner's loop.
bool process_group_running(std::int64_t pgid);

/// The start ticks of the calling process, recorded with a runner's pid.
std::int64_t self_start_ticks();

/// This machine's host name, recorded with a runner so that crash recovery
/// only trusts pids from the same host.
std::string host_name();

} // namespace kiln::plugins
