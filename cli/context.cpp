#include "cli/context.hpp"

#include "core/clock.hpp"
#include "core/plan.hpp"
#include "plugins/executors.hpp"
#include "plugins/process_identity.hpp"

#include <pwd.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>

namespace kiln::cli {

std::optional<GitInfo> git_info(const std::filesystem::path& dir) {
  // Look for .git first: spawning git outside a repository costs
  // milliseconds that a one-step workflow should not pay.
  std::error_code ec;
  auto probe = std::filesystem::absolute(dir, ec);
  bool found = false;
  for (; !probe.empty(); probe = probe.parent_path()) {
    if (std::filesystem::exists(probe / ".git", ec)) {
      found = true;
      break;
    }
    if (probe == probe.root_path()) {
      break;
    }
  }
  if (!found) {
    return std::nullopt;
  }
  const std::string command =
      "git -C " + core::shell_quote(dir.string()) + " status --porcelain=v2 --branch --untracked-files=no 2>/dev/null";
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    return std::nullopt;
  }
  GitInfo info;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), pipe) != nullptr) {
    std::string_view line(buf.data());
    if (!line.empty() && line.back() == '\n') {
      line.remove_suffix(1);
    }
    if (line.starts_with("# branch.oid ")) {
      info.commit = line.substr(13);
    } else if (line.starts_with("# branch.head ")) {
      info.branch = line.substr(14);
    } else if (!line.empty() && line[0] != '#') {
      info.dirty = true;
    }
  }
  if (pclose(pipe) != 0 || info.commit.empty()) {
    return std::nullopt;
  }
  if (info.commit == "(initial)") {
    info.commit.clear();
  }
  if (info.branch == "(detached)") {
    info.branch.clear();
  }
  return info;
}

std::string current_user() {
  if (passwd* pw = getpwuid(geteuid()); pw != nullptr && pw->pw_name != nullptr) {
    return pw->pw_name;
  }
  if (const char* user = std::getenv("USER")) {
    return user;
  }
  return std::to_string(geteuid());
}

std::string command_line(int argc, char** argv) {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    if (i > 0) {
      out += ' ';
    }
    out += core::shell_quote(argv[i]);
  }
  return out;
}

std::filesystem::path store_directory(const std::string& flag) {
  if (!flag.empty()) {
    return std::filesystem::absolute(flag);
  }
  if (const char* env = std::getenv("KILN_STORE"); env != nullptr && *env != '\0') {
    return std::filesystem::absolute(env);
  }
  return core::TrackerStore::discover(std::filesystem::current_path());
}

core::Expected<std::unique_ptr<core::TrackerStore>> open_store(const std::string& flag) {
  auto store = core::TrackerStore::open(store_directory(flag));
  if (!store) {
    return store;
  }
  const core::SystemClock clock;
  auto orphans = (*store)->recover_crashed(
      plugins::host_name(),
      [](const core::RunnerIdentity& runner) { return plugins::process_alive(runner.pid, runner.start_ticks); },
      clock.wall_ms());
  if (!orphans) {
    std::fprintf(stderr, "kiln: warning: could not check for crashed runs: %s\n", orphans.error().c_str());
    return store;
  }
  std::int64_t last_run = 0;
  std::map<std::string, std::vector<std::string>> handles;
  for (const auto& orphan : *orphans) {
    if (orphan.run_number != last_run) {
      std::fprintf(stderr, "kiln: run %lld's runner died; marked it crashed\n",
                   static_cast<long long>(orphan.run_number));
      last_run = orphan.run_number;
    }
    handles[orphan.executor].push_back(orphan.handle);
  }
  for (const auto& [executor, group] : handles) {
    plugins::stop_orphans(executor, group);
  }
  return store;
}

} // namespace kiln::cli
