#include "plugins/process_identity.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

namespace kiln::plugins {

namespace {

struct ProcStat {
  char state = 0;
  std::int64_t pgrp = 0;
  std::int64_t start_ticks = 0;
};

// Reads /proc/<pid>/stat with one open and one read into a stack buffer:
// this runs once per started job, on the runner's hot path.
bool read_proc_stat(std::int64_t pid, ProcStat& out) {
  if (pid <= 0) {
    return false;
  }
  char path[40] = "/proc/";
  char* end = std::to_chars(path + 6, path + sizeof(path) - 6, pid).ptr;
  std::memcpy(end, "/stat", 6);

  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  char buffer[1024];
  ssize_t n = 0;
  do {
    n = ::read(fd, buffer, sizeof(buffer));
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) {
    return false;
  }

  // "pid (comm) state f4 f5 ...": comm may itself hold spaces and ')', so
  // the fields start after the last ')'. Only fields up to 22 are needed,
  // and they fit in the buffer even if the line was cut.
  const std::string_view line(buffer, static_cast<std::size_t>(n));
  const std::size_t paren = line.rfind(')');
  if (paren == std::string_view::npos || paren + 2 >= line.size()) {
    return false;
  }
  std::size_t pos = paren + 2;
  out.state = line[pos];
  for (int field = 3; field < 22; ++field) {
    pos = line.find(' ', pos);
    if (pos == std::string_view::npos) {
      return false;
    }
    ++pos; // Now at field + 1; field 5 is the process group.
    if (field + 1 == 5) {
      std::from_chars(line.data() + pos, line.data() + line.size(), out.pgrp);
    }
  }
  const auto [ptr, ec] = std::from_chars(line.data() + pos, line.data() + line.size(), out.start_ticks);
  return ec == std::errc() && ptr != line.data() + pos;
}

bool is_finished(char state) {
  // Z: zombie, X: dead; both have stopped running but may not be reaped.
  return state == 'Z' || state == 'X';
}

} // namespace

std::int64_t process_start_ticks(std::int64_t pid) {
  ProcStat stat;
  return read_proc_stat(pid, stat) ? stat.start_ticks : 0;
}

bool process_alive(std::int64_t pid, std::int64_t start_ticks) {
  ProcStat stat;
  if (start_ticks <= 0 || !read_proc_stat(pid, stat)) {
    return false;
  }
  return stat.start_ticks == start_ticks && !is_finished(stat.state);
}

bool process_group_running(std::int64_t pgid) {
  if (pgid <= 0) {
    return false;
  }
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) {
    return false;
  }
  bool running = false;
  while (const dirent* entry = ::readdir(proc)) {
    std::int64_t pid = 0;
    const char* name = entry->d_name;
    const char* end = name + std::strlen(name);
    if (std::from_chars(name, end, pid).ptr != end) {
      continue;
    }
    ProcStat stat;
    if (read_proc_stat(pid, stat) && stat.pgrp == pgid && !is_finished(stat.state)) {
      running = true;
      break;
    }
  }
  ::closedir(proc);
  return running;
}

std::int64_t self_start_ticks() {
  return process_start_ticks(::getpid());
}

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) {
    return {};
  }
  return name;
}

} // namespace kiln::plugins
