#include "plugins/local_executor.hpp"

#include "plugins/process_identity.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using kiln::core::JobExit;
using kiln::core::JobStarted;
using kiln::core::LaunchSpec;
using kiln::core::StopMode;
using kiln::core::WaitResult;
using kiln::plugins::LocalExecutor;
using namespace kiln::plugins::test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

JobStarted start_ok(LocalExecutor& executor, const LaunchSpec& spec) {
  auto started = executor.start(spec);
  REQUIRE_MESSAGE(started.ok(), (started.ok() ? std::string() : started.error()));
  return started.value();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> result;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    result.push_back(line);
  }
  std::sort(result.begin(), result.end());
  return result;
}

std::int64_t read_pid(const std::string& path) {
  REQUIRE(wait_for_file(path));
  return std::stoll(read_file(path));
}

// The stop signals get their default disposition for a test that sends
// them, so the result does not depend on how the test binary was started.
struct DefaultStopSignals {
  DefaultStopSignals() {
    for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
      m_old[sig] = std::signal(sig, SIG_DFL);
    }
  }
  ~DefaultStopSignals() {
    for (const auto& [sig, handler] : m_old) {
      std::signal(sig, handler);
    }
  }
  std::map<int, void (*)(int)> m_old;
};

} // namespace

TEST_SUITE("plugins::LocalExecutor") {

  TEST_CASE("exit codes are reported") {
    TempDir dir;
    LocalExecutor executor;
    const JobStarted ok = start_ok(executor, shell_spec(dir, "exit 0"));
    const JobExit ok_exit = wait_for_exit(executor, ok.id);
    CHECK(ok_exit.exit_code == 0);
    CHECK(ok_exit.signal == 0);

    const JobStarted three = start_ok(executor, shell_spec(dir, "exit 3"));
    CHECK(three.id != ok.id);
    const JobExit three_exit = wait_for_exit(executor, three.id);
    CHECK(three_exit.exit_code == 3);
    CHECK(three_exit.signal == 0);
    CHECK(executor.running() == 0);
  }

  TEST_CASE("death by a signal is reported as the signal") {
    TempDir dir;
    LocalExecutor executor;
    const JobStarted job = start_ok(executor, shell_spec(dir, "kill -9 $$"));
    const JobExit exit = wait_for_exit(executor, job.id);
    CHECK(exit.exit_code == -1);
    CHECK(exit.signal == SIGKILL);
  }

  TEST_CASE("the handle names the process group and its leader's start time") {
    TempDir dir;
    LocalExecutor executor;
    const JobStarted job = start_ok(executor, shell_spec(dir, "sleep 5"));
    CHECK(job.pid > 0);
    CHECK(::getpgid(static_cast<pid_t>(job.pid)) == job.pid);
    const std::int64_t ticks = kiln::plugins::process_start_ticks(job.pid);
    CHECK(ticks > 0);
    CHECK(job.handle == "local:" + std::to_string(job.pid) + ":" + std::to_string(ticks));
    executor.stop(job.id, StopMode::kill);
    CHECK(wait_for_exit(executor, job.id).signal == SIGKILL);
  }

  TEST_CASE("every handle carries the start ticks that /proc shows") {
    // start() usually takes them from the clock rather than from /proc.
    TempDir dir;
    LocalExecutor executor;
    for (int i = 0; i < 100; ++i) {
      const JobStarted job = start_ok(executor, shell_spec(dir, "true"));
      // Not reaped yet, so its stat line is still there.
      const std::string expected =
          "local:" + std::to_string(job.pid) + ":" + std::to_string(kiln::plugins::process_start_ticks(job.pid));
      REQUIRE(job.handle == expected);
      wait_for_exit(executor, job.id);
    }
  }

  TEST_CASE("stdout and stderr go to their files, truncated") {
    TempDir dir;
    const mode_t umask = ::umask(022);
    LocalExecutor executor;
    LaunchSpec spec = shell_spec(dir, "echo out; echo err >&2");

    SUBCASE("two files") {
      write_file(spec.stdout_path, "an older and longer output\n");
      const JobStarted job = start_ok(executor, spec);
      CHECK(wait_for_exit(executor, job.id).exit_code == 0);
      CHECK(read_file(spec.stdout_path) == "out\n");
      CHECK(read_file(spec.stderr_path) == "err\n");
      struct stat st;
      REQUIRE(::stat(spec.stderr_path.c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0644);
    }
    SUBCASE("one file for both keeps both streams") {
      spec.stderr_path = spec.stdout_path;
      const JobStarted job = start_ok(executor, spec);
      CHECK(wait_for_exit(executor, job.id).exit_code == 0);
      CHECK(read_file(spec.stdout_path) == "out\nerr\n");
    }
    ::umask(umask);
  }

  TEST_CASE("output that cannot be written is drained and dropped; the job never blocks") {
    TempDir dir;
    LocalExecutor executor;
    // 1 MB on stderr, far more than a pipe holds: a runner that stopped
    // reading would leave the job blocked for ever.
    LaunchSpec spec = shell_spec(dir, "head -c 1048576 /dev/zero >&2; echo done");
    spec.stderr_path = dir.file("no/such/dir/stderr");
    const JobStarted job = start_ok(executor, spec);
    CHECK(wait_for_exit(executor, job.id).exit_code == 0);
    CHECK(read_file(spec.stdout_path) == "done\n");
    CHECK_FALSE(std::filesystem::exists(spec.stderr_path));
  }

  TEST_CASE("what a job leaves running in its group dies with it, even if it ignores SIGTERM") {
    TempDir dir;
    LocalExecutor executor;
    const std::string pid_file = dir.file("background.pid");
    LaunchSpec spec = shell_spec(dir, "sh -c \"trap '' TERM; echo \\$\\$ > " + pid_file +
                                          "; sleep 30\" & "
                                          "while [ ! -s " +
                                          pid_file + " ]; do sleep 0.01; done; echo leader done");
    const JobStarted job = start_ok(executor, spec);
    CHECK(wait_for_exit(executor, job.id).exit_code == 0);
    const pid_t background = std::stoi(read_file(pid_file));
    CHECK(eventually_gone(
        [&] { return kiln::plugins::process_alive(background, kiln::plugins::process_start_ticks(background)); }));
    CHECK(read_file(spec.stdout_path) == "leader done\n");
  }

  TEST_CASE("a stream that says nothing leaves no file; a large one arrives whole") {
    TempDir dir;
    LocalExecutor executor;
    LaunchSpec spec = shell_spec(dir, "head -c 3000000 /dev/urandom | od -An -v | head -c 2000000");
    const JobStarted job = start_ok(executor, spec);
    CHECK(wait_for_exit(executor, job.id).exit_code == 0);
    CHECK(std::filesystem::file_size(spec.stdout_path) == 2000000);
    CHECK_FALSE(std::filesystem::exists(spec.stderr_path));
  }

  TEST_CASE("the job runs in its workdir") {
    TempDir dir;
    std::filesystem::create_directory(dir.path() / "work");
    LocalExecutor executor;
    LaunchSpec spec = shell_spec(dir, "pwd -P");
    spec.workdir = dir.file("work");
    const JobStarted job = start_ok(executor, spec);
    CHECK(wait_for_exit(executor, job.id).exit_code == 0);
    CHECK(read_file(spec.stdout_path) == spec.workdir + "\n");
  }

  TEST_CASE("the environment is exactly the spec's") {
    TempDir dir;
    ::setenv("KILN_TEST_NOT_PASSED", "leak", 1);
    LocalExecutor executor;
    LaunchSpec spec = shell_spec(dir, "");
    spec.argv = {"env"};
    spec.env = {"PATH=/usr/bin:/bin", "KILN_A=1", "KILN_B=two words"};
    const JobStarted job = start_ok(executor, spec);
    CHECK(wait_for_exit(executor, job.id).exit_code == 0);
    CHECK(lines(read_file(spec.stdout_path)) ==
          std::vector<std::string>{"KILN_A=1", "KILN_B=two words", "PATH=/usr/bin:/bin"});
    ::unsetenv("KILN_TEST_NOT_PASSED");
  }

  TEST_CASE("a command without a slash is found on the spec's PATH") {
    TempDir dir;
    std::filesystem::create_directories(dir.path() / "first");
    std::filesystem::create_directories(dir.path() / "bin");
    // Not executable, so skipped like execvp does.
    write_file(dir.file("first/kiln-tool"), "#!/bin/sh\necho wrong\n");
    ::chmod(dir.file("first/kiln-tool").c_str(), 0644);
    write_file(dir.file("bin/kiln-tool"), "#!/bin/sh\necho \"tool $1\"\n");
    ::chmod(dir.file("bin/kiln-tool").c_str(), 0755);
    LocalExecutor executor;

    SUBCASE("absolute entries") {
      LaunchSpec spec = shell_spec(dir, "");
      spec.argv = {"kiln-tool", "arg"};
      spec.env = {"HOME=/", "PATH=" + dir.file("first") + ":" + dir.file("bin") + ":/usr/bin:/bin"};
      const JobStarted job = start_ok(executor, spec);
      CHECK(wait_for_exit(executor, job.id).exit_code == 0);
      CHECK(read_file(spec.stdout_path) == "tool arg\n");
    }
    SUBCASE("relative entries are taken from the workdir") {
      LaunchSpec spec = shell_spec(dir, "");
      spec.argv = {"kiln-tool", "rel"};
      spec.env = {"PATH=first:bin:/usr/bin:/bin"};
      const JobStarted job = start_ok(executor, spec);
      CHECK(wait_for_exit(executor, job.id).exit_code == 0);
      CHECK(read_file(spec.stdout_path) == "tool rel\n");
    }
    SUBCASE("the runner's own PATH is not searched") {
      const std::string old_path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
      ::setenv("PATH", (dir.file("bin") + ":" + old_path).c_str(), 1);
      LaunchSpec spec = shell_spec(dir, "");
      spec.argv = {"kiln-tool"};
      auto started = executor.start(spec);
      ::setenv("PATH", old_path.c_str(), 1);
      REQUIRE_FALSE(started.ok());
      CHECK(started.error() == "command not found: kiln-tool");
    }
    SUBCASE("without PATH in the spec, the runner's PATH is used") {
      const std::string old_path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
      ::setenv("PATH", (dir.file("bin") + ":" + old_path).c_str(), 1);
      LaunchSpec spec = shell_spec(dir, "");
      spec.argv = {"kiln-tool", "fallback"};
      spec.env = {"HOME=/"};
      auto started = executor.start(spec);
      ::setenv("PATH", old_path.c_str(), 1);
      REQUIRE(started.ok());
      CHECK(wait_for_exit(executor, started->id).exit_code == 0);
      CHECK(read_file(spec.stdout_path) == "tool fallback\n");
    }
  }

  TEST_CASE("start errors name what is wrong") {
    TempDir dir;
    LocalExecutor executor;
    LaunchSpec spec = shell_spec(dir, "");

    SUBCASE("a command not on the PATH") {
      spec.argv = {"kiln-no-such-command", "x"};
      auto started = executor.start(spec);
      REQUIRE_FALSE(started.ok());
      CHECK(started.error() == "command not found: kiln-no-such-command");
    }
    SUBCASE("a path that does not exist") {
      spec.argv = {"./kiln-no-such-command"};
      auto started = executor.start(spec);
      REQUIRE_FALSE(started.ok());
      CHECK(started.error() == "command not found: ./kiln-no-such-command");
    }
    SUBCASE("a file that is not executable") {
      write_file(dir.file("script"), "echo hi\n");
      ::chmod(dir.file("script").c_str(), 0644);
      spec.argv = {"./script"};
      auto started = executor.start(spec);
      REQUIRE_FALSE(started.ok());
      CHECK(started.error() == "cannot run ./script: Permission denied");
    }
    SUBCASE("a script whose interpreter is missing") {
      write_file(dir.file("script"), "#!/kiln/no/such/interpreter\n");
      ::chmod(dir.file("script").c_str(), 0755);
      spec.argv = {"./script"};
      auto started = executor.start(spec);
      REQUIRE_FALSE(started.ok());
      CHECK(started.error() == "cannot run ./script: its interpreter was not found");
    }
    SUBCASE("a missing workdir") {
      spec.argv = {"sh", "-c", "true"};
      spec.workdir = dir.file("missing");
      auto started = executor.start(spec);
      REQUIRE_FALSE(started.ok());
      CHECK(started.error() == "workdir does not exist: " + spec.workdir);
    }
    SUBCASE("an empty command") {
      spec.argv = {};
      auto started = executor.start(spec);
      REQUIRE_FALSE(started.ok());
      CHECK(started.error() == "empty command");
    }
    CHECK(executor.running() == 0);
  }

  TEST_CASE("stdin is /dev/null") {
    TempDir dir;
    LocalExecutor executor;
    LaunchSpec spec = shell_spec(dir, "");
    spec.argv = {"cat"};
    const auto before = Clock::now();
    const JobStarted job = start_ok(executor, spec);
    CHECK(wait_for_exit(executor, job.id).exit_code == 0);
    CHECK(Clock::now() - before < 5s);
    CHECK(read_file(spec.stdout_path).empty());
  }

  TEST_CASE("stop(terminate) reaches the whole process group") {
    TempDir dir;
    LocalExecutor executor;
    const JobStarted job = start_ok(executor, shell_spec(dir, "sleep 100 & echo $! > grandchild.pid; wait"));
    const std::int64_t grandchild = read_pid(dir.file("grandchild.pid"));
    const std::int64_t grandchild_ticks = kiln::plugins::process_start_ticks(grandchild);
    REQUIRE(kiln::plugins::process_alive(grandchild, grandchild_ticks));
    CHECK(::getpgid(static_cast<pid_t>(grandchild)) == job.pid);

    executor.stop(job.id, StopMode::terminate);
    const JobExit exit = wait_for_exit(executor, job.id);
    CHECK(exit.signal == SIGTERM);
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(grandchild, grandchild_ticks); }));
  }

  TEST_CASE("stop(kill) ends a job that ignores SIGTERM") {
    TempDir dir;
    LocalExecutor executor;
    const JobStarted job = start_ok(executor, shell_spec(dir, "trap '' TERM; echo ready > ready; exec sleep 100"));
    REQUIRE(wait_for_file(dir.file("ready")));

    executor.stop(job.id, StopMode::terminate);
    const WaitResult still = executor.wait(Clock::now() + 300ms);
    CHECK(still.exits.empty());
    CHECK(executor.running() == 1);

    executor.stop(job.id, StopMode::kill);
    CHECK(wait_for_exit(executor, job.id).signal == SIGKILL);
    // A job already reaped is not signalled again.
    executor.stop(job.id, StopMode::kill);
  }

  TEST_CASE("wait honours its deadline") {
    LocalExecutor executor;

    SUBCASE("with nothing running") {
      const auto start = Clock::now();
      const auto deadline = start + 50ms;
      const WaitResult result = executor.wait(deadline);
      const auto end = Clock::now();
      CHECK(result.exits.empty());
      CHECK(result.interrupts.empty());
      CHECK(end >= deadline);
      CHECK(end < deadline + 200ms);
    }
    SUBCASE("with a job running") {
      TempDir dir;
      const JobStarted job = start_ok(executor, shell_spec(dir, "sleep 100"));
      const auto deadline = Clock::now() + 30ms;
      const WaitResult result = executor.wait(deadline);
      CHECK(result.exits.empty());
      CHECK(Clock::now() >= deadline);
      CHECK(Clock::now() < deadline + 200ms);
      executor.stop(job.id, StopMode::kill);
      CHECK(wait_for_exit(executor, job.id).signal == SIGKILL);
    }
    SUBCASE("a deadline already past returns at once") {
      const auto start = Clock::now();
      const WaitResult result = executor.wait(start - 1s);
      CHECK(result.exits.empty());
      CHECK(Clock::now() - start < 50ms);
    }
    SUBCASE("an exit that happened before wait is returned at once, even past the deadline") {
      TempDir dir;
      const JobStarted job = start_ok(executor, shell_spec(dir, "exit 7"));
      std::this_thread::sleep_for(100ms);
      const WaitResult result = executor.wait(Clock::now() - 1s);
      REQUIRE(result.exits.size() == 1);
      CHECK(result.exits[0].id == job.id);
      CHECK(result.exits[0].exit_code == 7);
    }
  }

  TEST_CASE("jobs in parallel are all reported") {
    TempDir dir;
    LocalExecutor executor;
    std::map<kiln::core::JobId, int> expected;
    for (int i = 0; i < 8; ++i) {
      LaunchSpec spec = shell_spec(dir, "sleep 0.1; exit " + std::to_string(i));
      spec.stdout_path = dir.file("out" + std::to_string(i));
      spec.stderr_path = dir.file("err" + std::to_string(i));
      expected[start_ok(executor, spec).id] = i;
    }
    CHECK(executor.running() == 8);
    std::map<kiln::core::JobId, int> seen;
    const auto give_up = Clock::now() + 20s;
    while (seen.size() < expected.size() && Clock::now() < give_up) {
      for (const JobExit& exit : executor.wait(give_up).exits) {
        CHECK(seen.count(exit.id) == 0);
        seen[exit.id] = exit.exit_code;
      }
    }
    CHECK(seen == expected);
    CHECK(executor.running() == 0);
  }

  TEST_CASE("a stop signal to the runner is returned as an interrupt") {
    TempDir dir;
    DefaultStopSignals defaults;
    LocalExecutor executor;
    const JobStarted job = start_ok(executor, shell_spec(dir, "sleep 100"));
    const std::int64_t ticks = kiln::plugins::process_start_ticks(job.pid);

    ::kill(::getpid(), SIGTERM);
    const WaitResult result = executor.wait(Clock::now() + 5s);
    CHECK(result.interrupts == std::vector<int>{SIGTERM});
    CHECK(result.exits.empty());
    CHECK(executor.running() == 1);
    CHECK(kiln::plugins::process_alive(job.pid, ticks));

    ::kill(::getpid(), SIGHUP);
    CHECK(executor.wait(Clock::now() + 5s).interrupts == std::vector<int>{SIGHUP});
    ::kill(::getpid(), SIGINT);
    CHECK(executor.wait(Clock::now() + 5s).interrupts == std::vector<int>{SIGINT});

    executor.stop(job.id, StopMode::kill);
    CHECK(wait_for_exit(executor, job.id).signal == SIGKILL);
  }

  TEST_CASE("a stop signal ignored before the executor stays ignored") {
    DefaultStopSignals defaults;
    std::signal(SIGHUP, SIG_IGN);
    LocalExecutor executor;
    ::kill(::getpid(), SIGHUP);
    const WaitResult result = executor.wait(Clock::now() + 50ms);
    CHECK(result.interrupts.empty());
  }

  TEST_CASE("the runner's descriptors do not leak into jobs") {
    TempDir dir;
    LocalExecutor executor;
    // As a library that forgets O_CLOEXEC would.
    const int leaky = ::open("/dev/null", O_RDONLY);
    REQUIRE(leaky >= 3);
    LaunchSpec spec = shell_spec(dir, "");
    spec.argv = {"ls", "/proc/self/fd"};
    const JobStarted job = start_ok(executor, spec);
    CHECK(wait_for_exit(executor, job.id).exit_code == 0);
    ::close(leaky);
    // 3 is the directory ls reads.
    CHECK(lines(read_file(spec.stdout_path)) == std::vector<std::string>{"0", "1", "2", "3"});
  }

  TEST_CASE("the destructor kills and reaps what is still running") {
    TempDir dir;
    std::int64_t pid = 0;
    std::int64_t grandchild = 0;
    {
      LocalExecutor executor;
      const JobStarted job = start_ok(executor, shell_spec(dir, "sleep 100 & echo $! > grandchild.pid; wait"));
      pid = job.pid;
      grandchild = read_pid(dir.file("grandchild.pid"));
    }
    // Reaped: not even a zombie is left.
    CHECK(kiln::plugins::process_start_ticks(pid) == 0);
    const std::int64_t ticks = kiln::plugins::process_start_ticks(grandchild);
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(grandchild, ticks); }));
  }

  TEST_CASE("many short jobs two at a time are all reaped") {
    // Also compares, in interleaved rounds so that a busy machine weighs on
    // both alike, with a bare loop: posix_spawn and a blocking waitpid.
    TempDir dir;
    constexpr int k_rounds = 10;
    constexpr int k_jobs_per_round = 50;
    constexpr std::size_t k_parallel = 2;
    const LaunchSpec spec = shell_spec(dir, "true");
    char* argv[] = {const_cast<char*>("/bin/sh"), const_cast<char*>("-c"), const_cast<char*>("true"), nullptr};
    char* envp[] = {const_cast<char*>("PATH=/usr/bin:/bin"), nullptr};

    LocalExecutor executor;
    Clock::duration executor_time{};
    Clock::duration bare_time{};
    int finished = 0;
    for (int round = 0; round < k_rounds; ++round) {
      const auto executor_start = Clock::now();
      int started = 0;
      int round_finished = 0;
      while (round_finished < k_jobs_per_round) {
        while (started < k_jobs_per_round && executor.running() < k_parallel) {
          start_ok(executor, spec);
          ++started;
        }
        for (const JobExit& exit : executor.wait(std::nullopt).exits) {
          CHECK(exit.exit_code == 0);
          ++round_finished;
        }
      }
      executor_time += Clock::now() - executor_start;
      finished += round_finished;
      REQUIRE(executor.running() == 0);

      const auto bare_start = Clock::now();
      std::size_t bare_running = 0;
      int bare_started = 0;
      while (bare_started < k_jobs_per_round || bare_running > 0) {
        while (bare_started < k_jobs_per_round && bare_running < k_parallel) {
          pid_t pid = 0;
          REQUIRE(::posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv, envp) == 0);
          ++bare_started;
          ++bare_running;
        }
        int status = 0;
        REQUIRE(::waitpid(-1, &status, 0) > 0);
        --bare_running;
      }
      bare_time += Clock::now() - bare_start;
    }
    CHECK(finished == k_rounds * k_jobs_per_round);

    using Micros = std::chrono::duration<double, std::micro>;
    constexpr double k_jobs = k_rounds * k_jobs_per_round;
    const double per_job = Micros(executor_time).count() / k_jobs;
    const double bare_per_job = Micros(bare_time).count() / k_jobs;
    MESSAGE("LocalExecutor " << per_job << " us/job, bare posix_spawn+waitpid " << bare_per_job << " us/job, overhead "
                             << per_job - bare_per_job << " us/job (ratio " << per_job / bare_per_job << ")");
  }

} // TEST_SUITE

namespace {

struct Orphan {
  std::int64_t leader = 0;
  std::int64_t leader_ticks = 0;
  std::int64_t grandchild = 0;
  std::int64_t grandchild_ticks = 0;
  std::string handle;
};

// A job group whose runner is gone: `setsid` makes the inner shell lead a
// group of its own, and the outer shell that started it exits, so the group
// belongs to no executor. `leader_script` runs after a background sleep is
// started in the group.
Orphan make_orphan(const TempDir& dir, const std::string& leader_script) {
  LocalExecutor executor;
  const std::string inner = "sleep 100 & echo $! > grandchild.pid; " + leader_script;
  const JobStarted outer =
      start_ok(executor, shell_spec(dir, "setsid sh -c '" + inner +
                                             "' >/dev/null 2>&1 & echo $! > leader.pid; "
                                             // Until the orphan has left our group: what stays in it dies with us.
                                             "while [ ! -s grandchild.pid ]; do sleep 0.01; done"));
  REQUIRE(wait_for_exit(executor, outer.id).exit_code == 0);

  Orphan orphan;
  orphan.leader = read_pid(dir.file("leader.pid"));
  orphan.grandchild = read_pid(dir.file("grandchild.pid"));
  orphan.leader_ticks = kiln::plugins::process_start_ticks(orphan.leader);
  orphan.grandchild_ticks = kiln::plugins::process_start_ticks(orphan.grandchild);
  REQUIRE(orphan.leader_ticks > 0);
  REQUIRE(orphan.grandchild_ticks > 0);
  REQUIRE(::getpgid(static_cast<pid_t>(orphan.leader)) == orphan.leader);
  REQUIRE(::getpgid(static_cast<pid_t>(orphan.grandchild)) == orphan.leader);
  orphan.handle = "local:" + std::to_string(orphan.leader) + ":" + std::to_string(orphan.leader_ticks);
  return orphan;
}

} // namespace

TEST_SUITE("plugins::LocalExecutor") {

  TEST_CASE("stop_orphan_job stops a group left by a dead runner") {
    TempDir dir;
    const Orphan orphan = make_orphan(dir, "wait");
    CHECK(kiln::plugins::process_alive(orphan.leader, orphan.leader_ticks));

    const auto start = Clock::now();
    kiln::plugins::stop_orphan_job(orphan.handle);
    MESSAGE(
        "stop_orphan_job took " << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()
                                << " ms");
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(orphan.leader, orphan.leader_ticks); }));
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(orphan.grandchild, orphan.grandchild_ticks); }));
  }

  TEST_CASE("stop_orphan_job stops a group whose leader already exited") {
    TempDir dir;
    const Orphan orphan = make_orphan(dir, "while [ ! -e go ]; do sleep 0.01; done");
    write_file(dir.file("go"), "");
    REQUIRE(eventually_gone([&] { return kiln::plugins::process_alive(orphan.leader, orphan.leader_ticks); }));
    REQUIRE(kiln::plugins::process_alive(orphan.grandchild, orphan.grandchild_ticks));

    kiln::plugins::stop_orphan_job(orphan.handle);
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(orphan.grandchild, orphan.grandchild_ticks); }));
  }

  TEST_CASE("stop_orphan_job leaves alone a group whose leader is another process") {
    TempDir dir;
    const Orphan orphan = make_orphan(dir, "wait");
    const std::string wrong = "local:" + std::to_string(orphan.leader) + ":" + std::to_string(orphan.leader_ticks + 1);

    const auto start = Clock::now();
    kiln::plugins::stop_orphan_job(wrong);
    CHECK(Clock::now() - start < 100ms);
    std::this_thread::sleep_for(100ms);
    CHECK(kiln::plugins::process_alive(orphan.leader, orphan.leader_ticks));
    CHECK(kiln::plugins::process_alive(orphan.grandchild, orphan.grandchild_ticks));

    SUBCASE("and handles that do not parse") {
      for (const char* handle :
           {"", "local:", "local:abc:1", "local:12", "local::5", "slurm:123", "local:99999999999999999999:1"}) {
        kiln::plugins::stop_orphan_job(handle);
      }
      CHECK(kiln::plugins::process_alive(orphan.leader, orphan.leader_ticks));
    }

    kiln::plugins::stop_orphan_job(orphan.handle);
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(orphan.leader, orphan.leader_ticks); }));
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(orphan.grandchild, orphan.grandchild_ticks); }));
  }

} // TEST_SUITE

TEST_CASE("stop_orphan_jobs stops several stubborn groups within one grace, not one each") {
  std::vector<TempDir> dirs(3);
  std::vector<Orphan> orphans;
  std::vector<std::string> handles;
  for (auto& dir : dirs) {
    // The leader ignores SIGTERM: only the SIGKILL after the grace ends it.
    orphans.push_back(make_orphan(dir, "trap \"\" TERM; while true; do sleep 0.05; done"));
    handles.push_back(orphans.back().handle);
  }
  const auto start = Clock::now();
  kiln::plugins::stop_orphan_jobs(handles);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  MESSAGE("stop_orphan_jobs took " << took.count() << " ms for 3 groups");
  // One grace is about 2 s; one each would be at least 6 s.
  CHECK(took < 4500ms);
  for (const Orphan& orphan : orphans) {
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(orphan.leader, orphan.leader_ticks); }));
    CHECK(eventually_gone([&] { return kiln::plugins::process_alive(orphan.grandchild, orphan.grandchild_ticks); }));
  }
}
