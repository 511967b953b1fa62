#pragma once
// Helpers shared by the plugin tests that run real child processes.

#include "core/executor.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kiln::plugins::test {

using TempDir = kiln::test::TempDir;

using kiln::test::read_file;
using kiln::test::write_file;

/// Waits (test code may poll) until `path` exists and is not empty.
inline bool wait_for_file(const std::string& path, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < give_up) {
    std::error_code ignored;
    if (std::filesystem::file_size(path, ignored) > 0 && !ignored) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

inline core::LaunchSpec shell_spec(const TempDir& dir, const std::string& script) {
  core::LaunchSpec spec;
  spec.run_id = "run";
  spec.step_id = "step";
  spec.argv = {"sh", "-c", script};
  spec.workdir = dir.path().string();
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.stdout_path = dir.file("stdout");
  spec.stderr_path = dir.file("stderr");
  return spec;
}

/// Waits for the exit of `id`, collecting any other exits into `others`.
inline core::JobExit wait_for_exit(core::Executor& executor, core::JobId id,
                                   std::vector<core::JobExit>* others = nullptr) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < give_up) {
    core::WaitResult result = executor.wait(give_up);
    REQUIRE(result.interrupts.empty());
    core::JobExit found;
    bool seen = false;
    for (const core::JobExit& exit : result.exits) {
      if (exit.id == id) {
        found = exit;
        seen = true;
      } else if (others != nullptr) {
        others->push_back(exit);
      }
    }
    if (seen) {
      return found;
    }
  }
  FAIL("job " << id << " did not exit in time");
  return {};
}

/// Waits until `alive()` turns false; true if it did within `limit`.
template <typename Alive>
bool eventually_gone(Alive alive, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < give_up) {
    if (!alive()) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return !alive();
}

} // namespace kiln::plugins::test
