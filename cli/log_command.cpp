// `kiln log metric|param|tag|artifact ...`: recording from inside a step,
// for scripts that would rather call a command than print the line
// protocol. The run, step and workdir come from the environment kiln gives
// every step; the arguments are the protocol's fields, so both ways accept
// exactly the same things (one parser).

#include "cli/commands.hpp"
#include "core/clock.hpp"
#include "core/line_protocol.hpp"
#include "core/tracker_store.hpp"
#include "core/tracking_recorder.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace kiln::cli {

namespace {

/// `text` as a protocol value: as is when it can be, else double-quoted
/// with " and \ escaped.
std::string protocol_quote(std::string_view text) {
  if (!text.empty() && text.find_first_of(" \t\"\\") == std::string_view::npos) {
    return std::string(text);
  }
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out + '"';
}

} // namespace

int log_command(const std::string& what, const std::vector<std::string>& args) {
  const char* store_dir = std::getenv("KILN_STORE");
  const char* run_id = std::getenv("KILN_RUN_ID");
  const char* step = std::getenv("KILN_STEP_ID");
  const char* workdir = std::getenv("KILN_WORKDIR");
  for (auto [name, value] : {std::pair{"KILN_STORE", store_dir}, std::pair{"KILN_RUN_ID", run_id},
                             std::pair{"KILN_STEP_ID", step}, std::pair{"KILN_WORKDIR", workdir}}) {
    if (value == nullptr || *value == '\0') {
      std::fprintf(stderr,
                   "kiln: error: kiln log records for the step it runs in, but %s is not set; call it from a step "
                   "of `kiln run`\n",
                   name);
      return k_exit_usage;
    }
  }
  for (const auto& arg : args) {
    // The protocol cannot carry them, and they would break tables later.
    if (std::any_of(arg.begin(), arg.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
      std::fprintf(stderr,
                   "kiln: error: kiln log %s: '%s' holds a control character (a newline?); values are one line\n",
                   what.c_str(), arg.c_str());
      return k_exit_usage;
    }
  }
  // The same line a step could print, so one parser decides what is valid.
  std::string line = std::string(core::k_protocol_prefix) + what;
  for (const auto& arg : args) {
    line += ' ';
    const auto eq = arg.find('=');
    if (what == "artifact") {
      line += protocol_quote(std::filesystem::absolute(arg).string());
    } else if (eq == std::string::npos) {
      line += arg;
    } else {
      line += protocol_quote(std::string_view(arg).substr(0, eq)) + '=' +
              protocol_quote(std::string_view(arg).substr(eq + 1));
    }
  }
  auto command = core::parse_protocol_line(line);
  if (!command) {
    std::fprintf(stderr, "kiln: error: kiln log %s: %s\n", what.c_str(), command.error().c_str());
    return k_exit_usage;
  }
  // Never create a store here: a step pointed at the wrong place should hear so.
  if (std::error_code ec; !std::filesystem::exists(std::filesystem::path(store_dir) / "kiln.db", ec)) {
    std::fprintf(stderr, "kiln: error: no kiln store at %s (KILN_STORE); call kiln log from a step of `kiln run`\n",
                 store_dir);
    return k_exit_usage;
  }
  auto store = core::TrackerStore::open(store_dir);
  if (!store) {
    std::fprintf(stderr, "kiln: error: %s\n", store.error().c_str());
    return k_exit_internal;
  }
  auto run = (*store)->resolve_run(run_id);
  if (!run) {
    std::fprintf(stderr, "kiln: error: %s\n", run.error().c_str());
    return k_exit_internal;
  }
  const core::SystemClock clock;
  if (auto recorded = core::record_command(**store, run->number, step, workdir, **command, clock.wall_ms());
      !recorded) {
    std::fprintf(stderr, "kiln: error: kiln log %s: %s\n", what.c_str(), recorded.error().c_str());
    return k_exit_step_failed;
  }
  return k_exit_ok;
}

} // namespace kiln::cli
