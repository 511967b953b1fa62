// The floor kiln is measured against: spawn N `sh -c true` processes, at most
// J at a time, and do nothing else (no graph, no store, no logs).
// usage: spawn_baseline N J

#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

extern char** environ;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: spawn_baseline N J\n");
    return 2;
  }
  const int n = std::atoi(argv[1]);
  const int j = std::atoi(argv[2]);
  char sh[] = "/bin/sh";
  char dash_c[] = "-c";
  char cmd[] = "true";
  char* args[] = {sh, dash_c, cmd, nullptr};
  int started = 0;
  int running = 0;
  while (started < n || running > 0) {
    while (started < n && running < j) {
      pid_t pid = 0;
      if (posix_spawn(&pid, sh, nullptr, nullptr, args, environ) != 0) {
        std::perror("posix_spawn");
        return 1;
      }
      ++started;
      ++running;
    }
    int status = 0;
    if (wait(&status) > 0) {
      --running;
    }
  }
  return 0;
}
