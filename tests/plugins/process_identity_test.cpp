#include "plugins/process_identity.hpp"

#include "test_support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace kiln::plugins;
using namespace kiln::plugins::test;

namespace {

pid_t spawn(const std::string& program, const std::string& arg) {
  char* argv[] = {const_cast<char*>(program.c_str()), const_cast<char*>(arg.c_str()), nullptr};
  char* envp[] = {nullptr};
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv, envp) == 0);
  return pid;
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status;
  ::waitpid(pid, &status, 0);
}

} // namespace

TEST_SUITE("plugins::process_identity") {

  TEST_CASE("the runner's own identity") {
    const std::int64_t ticks = self_start_ticks();
    CHECK(ticks > 0);
    CHECK(ticks == process_start_ticks(::getpid()));
    CHECK(process_alive(::getpid(), ticks));
    CHECK_FALSE(process_alive(::getpid(), ticks + 1));
    CHECK_FALSE(process_alive(::getpid(), 0));
    CHECK_FALSE(host_name().empty());
  }

  TEST_CASE("no such process") {
    CHECK(process_start_ticks(0) == 0);
    CHECK(process_start_ticks(-1) == 0);
    CHECK(process_start_ticks(0x7ffffff0) == 0);
    CHECK_FALSE(process_alive(0x7ffffff0, 1));
  }

  TEST_CASE("a child is alive until it exits, and a zombie is not alive") {
    const pid_t pid = spawn("/bin/sleep", "100");
    const std::int64_t ticks = process_start_ticks(pid);
    CHECK(ticks >= self_start_ticks());
    CHECK(process_alive(pid, ticks));
    ::kill(pid, SIGKILL);
    // Unreaped, it still has its stat line, but it no longer runs.
    CHECK(eventually_gone([&] { return process_alive(pid, ticks); }));
    CHECK(process_start_ticks(pid) == ticks);
    int status;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(process_start_ticks(pid) == 0);
  }

  TEST_CASE("a group runs while a member is not a zombie") {
    CHECK(process_group_running(::getpgrp()));
    CHECK_FALSE(process_group_running(0x7ffffff0));
    CHECK_FALSE(process_group_running(0));

    posix_spawnattr_t attr;
    ::posix_spawnattr_init(&attr);
    ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    ::posix_spawnattr_setpgroup(&attr, 0);
    char* argv[] = {const_cast<char*>("sleep"), const_cast<char*>("100"), nullptr};
    char* envp[] = {nullptr};
    pid_t pid = 0;
    REQUIRE(::posix_spawn(&pid, "/bin/sleep", nullptr, &attr, argv, envp) == 0);
    ::posix_spawnattr_destroy(&attr);
    CHECK(process_group_running(pid));
    ::kill(pid, SIGKILL);
    // A zombie leader keeps the group in existence, not running.
    CHECK(eventually_gone([&] { return process_group_running(pid); }));
    CHECK(::kill(-pid, 0) == 0);
    int status;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
  }

  TEST_CASE("a command name with spaces and parentheses does not confuse the parser") {
    TempDir dir;
    const std::string odd = dir.file("a) (b c");
    std::filesystem::copy_file("/bin/sleep", odd);
    const pid_t plain = spawn("/bin/sleep", "100");
    const pid_t tricky = spawn(odd, "100");
    const std::int64_t plain_ticks = process_start_ticks(plain);
    const std::int64_t tricky_ticks = process_start_ticks(tricky);
    CHECK(plain_ticks > 0);
    // Started within a second of each other (ticks are 1/100 s).
    CHECK(tricky_ticks >= plain_ticks);
    CHECK(tricky_ticks - plain_ticks < ::sysconf(_SC_CLK_TCK));
    CHECK(process_alive(tricky, tricky_ticks));
    kill_and_reap(plain);
    kill_and_reap(tricky);
  }

} // TEST_SUITE
