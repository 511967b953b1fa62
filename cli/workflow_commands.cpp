// Commands that read a workflow file: validate, plan, graph, run, and resume
// (which reads the file a run ran, to check it is unchanged).

#include "cli/commands.hpp"
#include "cli/console.hpp"
#include "cli/console_reporter.hpp"
#include "cli/context.hpp"
#include "cli/heap.hpp"
#include "cli/history.hpp"
#include "cli/push.hpp"
#include "core/duration.hpp"
#include "core/hash.hpp"
#include "core/plan.hpp"
#include "core/run_recorder.hpp"
#include "core/scheduler.hpp"
#include "core/step_decider.hpp"
#include "core/tracker_store.hpp"
#include "core/tracking_recorder.hpp"
#include "plugins/executors.hpp"
#include "plugins/machine.hpp"
#include "plugins/process_identity.hpp"
#include "workflows/suggest.hpp"
#include "workflows/workflow_loader.hpp"
#include "workflows/yaml_json.hpp"

#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <thread>
#include <unordered_map>

extern char** environ;

namespace kiln::cli {

namespace {

/// Whether some step of the workflow asks for GPUs.
bool wants_gpus(const core::Workflow& workflow) {
  return std::any_of(workflow.steps.begin(), workflow.steps.end(),
                     [](const core::Step& s) { return s.resources.gpus > 0; });
}

/// The machine's capacity, with what --cpus, --memory and --gpus say
/// instead; GPUs are looked for when `gpus_wanted` (wants_gpus).
core::Expected<plugins::Capacity> capacity_for(const ResourceOptions& options, bool gpus_wanted) {
  plugins::Capacity capacity = plugins::detect_capacity(options.gpus.empty() && gpus_wanted ? plugins::DetectGpus::yes
                                                                                            : plugins::DetectGpus::no);
  if (options.cpus > 0) {
    capacity.cpus = options.cpus;
  }
  if (!options.memory.empty()) {
    auto bytes = core::parse_size(options.memory);
    if (!bytes) {
      return core::Error{"--memory " + options.memory + ": " + bytes.error()};
    }
    capacity.memory = *bytes;
  }
  if (!options.gpus.empty()) {
    auto gpus = plugins::parse_gpus(options.gpus);
    if (!gpus) {
      return core::Error{gpus.error()};
    }
    capacity.gpus = std::move(*gpus);
    capacity.gpu_source = "--gpus";
  }
  return capacity;
}

/// `text` as a JSON string. Escaped here rather than through a nlohmann
/// value, which would allocate one per string of a 10,000-step plan; bytes
/// are passed through, as nlohmann does for valid UTF-8 (the loader rejects
/// any other).
std::string json_string(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (const char c : text) {
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    case '\r': out += "\\r"; break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        out += buf;
      } else {
        out += c;
      }
    }
  }
  out += '"';
  return out;
}

/// One planned step as a JSON object on one line. Written directly: building
/// nlohmann objects for 10,000 steps costs more than planning them.
std::string step_json(const core::Plan& plan, const core::PlannedStep& s) {
  std::string out =
      "{\"id\":" + json_string(s.id) + ",\"kind\":\"" + std::string(core::to_string(s.kind)) + "\",\"needs\":[";
  for (std::size_t i = 0; i < s.needs.size(); ++i) {
    out += (i ? "," : "") + json_string(plan.steps[s.needs[i]].id);
  }
  out += "],\"command\":" + json_string(s.display_command) + ",\"argv\":[";
  for (std::size_t i = 0; i < s.argv.size(); ++i) {
    out += (i ? "," : "") + json_string(s.argv[i]);
  }
  const auto& r = s.retries;
  out += "],\"workdir\":" + json_string(s.workdir) +
         ",\"timeout_ms\":" + (s.timeout ? std::to_string(s.timeout->count()) : "null") +
         ",\"kill_after_ms\":" + std::to_string(s.kill_after.count()) +
         ",\"retries\":{\"limit\":" + std::to_string(r.limit) + ",\"backoff\":\"" +
         (r.backoff == core::Backoff::exponential ? "exponential" : "fixed") +
         "\",\"delay_ms\":" + std::to_string(r.delay.count()) +
         ",\"max_delay_ms\":" + std::to_string(r.max_delay.count()) + ",\"jitter\":" + (r.jitter ? "true" : "false") +
         ",\"on\":[";
  std::string on;
  if (r.on_failure) {
    on += "\"failure\"";
  }
  if (r.on_timeout) {
    on += std::string(on.empty() ? "" : ",") + "\"timeout\"";
  }
  for (int code : r.exit_codes) {
    on += (on.empty() ? "" : ",") + std::to_string(code);
  }
  out += on + "]},\"cpus\":" + std::to_string(s.cpus) + ",\"priority\":" + std::to_string(s.priority) + "}";
  return out;
}

std::string retries_text(const core::RetryPolicy& r) {
  if (r.limit == 0) {
    return "-";
  }
  return std::to_string(r.limit) + (r.backoff == core::Backoff::exponential ? " exp " : " fixed ") +
         format_duration_ms(r.delay.count()) + (r.jitter ? "~" : "");
}

/// The plan's steps as the store records them, commands resolved.
std::vector<core::NewStep> planned_steps(const core::Plan& plan) {
  std::vector<core::NewStep> steps;
  steps.reserve(plan.steps.size());
  for (const auto& s : plan.steps) {
    std::vector<std::string> needs;
    needs.reserve(s.needs.size());
    for (int need : s.needs) {
      needs.push_back(plan.steps[need].id);
    }
    steps.push_back({s.id, std::string(core::to_string(s.kind)), s.display_command, std::move(needs), s.workdir});
  }
  return steps;
}

/// The git state of the workflow's repository, asked on a thread as soon as
/// `kiln run` starts: `git status` takes tens of milliseconds in a large
/// repository, spent while the workflow is read and checked instead of
/// after.
using GitLater = std::shared_future<std::optional<GitInfo>>;
GitLater git_of_workflow(const std::string& workflow_file) {
  std::error_code error;
  const std::filesystem::path file = std::filesystem::absolute(workflow_file, error).lexically_normal();
  return std::async(std::launch::async, git_info, file.parent_path()).share();
}

/// Who runs it, where and how, into `new_run`: what describe_run adds to
/// the workflow's part (a replay has that from the store).
void describe_runner(core::NewRun& new_run, const GitLater& git_later, int argc, char** argv, std::int64_t started_ms) {
  new_run.user = current_user();
  new_run.host = plugins::host_name();
  if (const std::optional<GitInfo>& git = git_later.get()) {
    new_run.git_commit = git->commit;
    new_run.git_branch = git->branch;
    new_run.git_dirty = git->dirty;
  }
  new_run.kiln_version = KILN_VERSION;
  new_run.command_line = command_line(argc, argv);
  new_run.runner = {new_run.host, static_cast<std::int64_t>(getpid()), plugins::self_start_ticks()};
  new_run.started_ms = started_ms;
}

/// What the store records about a run as it starts, but its steps (made
/// from the plan, in create_run). Takes the workflow's content rather than
/// copying it: nothing later needs it.
core::NewRun describe_run(core::Workflow& workflow, const GitLater& git, int argc, char** argv,
                          std::int64_t started_ms) {
  core::NewRun new_run;
  new_run.workflow_name = workflow.name;
  new_run.workflow_file = std::filesystem::absolute(workflow.file).lexically_normal().string();
  new_run.workflow_hash = workflow.content_hash;
  new_run.workflow_content = std::move(workflow.content);
  for (const auto& p : workflow.params) {
    switch (p.type) {
    case core::ParamType::integer: new_run.params[p.name] = std::stoll(p.value); break;
    case core::ParamType::floating: new_run.params[p.name] = std::stod(p.value); break;
    case core::ParamType::boolean: new_run.params[p.name] = p.value == "true"; break;
    case core::ParamType::string: new_run.params[p.name] = p.value; break;
    }
  }
  new_run.tags = workflow.tags;
  describe_runner(new_run, git, argc, argv, started_ms);
  return new_run;
}

} // namespace

std::vector<std::string> process_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    env.emplace_back(*e);
  }
  return env;
}

/// The workflow, or nothing after printing every problem to stderr.
std::optional<core::Workflow> load_workflow(const WorkflowOptions& options) {
  workflows::Overrides overrides;
  bool bad = false;
  for (const auto& p : options.params) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "kiln: error: -p %s: expected NAME=VALUE\n", p.c_str());
      bad = true;
      continue;
    }
    overrides.emplace_back(p.substr(0, eq), p.substr(eq + 1));
  }
  if (bad) {
    return std::nullopt;
  }
  std::error_code size_error;
  const std::uintmax_t size =
      options.content ? options.content->size() : std::filesystem::file_size(options.file, size_error);
  if (!size_error && size >= k_huge_heap_from) {
    use_huge_pages();
  }
  auto result = options.content ? workflows::parse_workflow(*options.content, options.file, overrides)
                                : workflows::load_workflow(options.file, overrides);
  const bool color = detect_terminal(STDERR_FILENO).color;
  for (const auto& d : result.diagnostics) {
    std::fprintf(stderr, "%s\n", workflows::format_diagnostic(d, color).c_str());
  }
  if (!result.ok()) {
    return std::nullopt;
  }
  return std::move(result.workflow);
}

int validate_command(const std::vector<std::string>& files) {
  int status = k_exit_ok;
  for (const auto& file : files) {
    auto workflow = load_workflow({file, {}});
    if (!workflow) {
      status = k_exit_usage;
      continue;
    }
    std::printf("%s: ok (%zu steps)\n", file.c_str(), workflow->steps.size());
  }
  return status;
}

int plan_command(const WorkflowOptions& options, OutputFormat format) {
  auto workflow = load_workflow(options);
  if (!workflow) {
    return k_exit_usage;
  }
  core::PlanContext context;
  context.run_id = "<run-id>";
  context.store_dir = "<store>";
  context.process_env = process_environment();
  auto plan = core::make_plan(*workflow, context);
  if (!plan) {
    std::fprintf(stderr, "%s\n", plan.error().c_str());
    return k_exit_usage;
  }
  if (format == OutputFormat::json) {
    // Streamed a step at a time: a 10,000-step plan as one document would
    // cost tens of megabytes.
    nlohmann::json params = nlohmann::json::object();
    for (const auto& p : workflow->params) {
      params[p.name] = {{"type", core::to_string(p.type)}, {"value", p.value}};
    }
    std::string out = "{\n  \"workflow\": " + nlohmann::json(workflow->name).dump() +
                      ",\n  \"file\": " + nlohmann::json(workflow->file).dump() + ",\n  \"params\": " + params.dump() +
                      ",\n  \"steps\": [";
    bool first = true;
    for (int index : plan->order) {
      out += first ? "\n    " : ",\n    ";
      first = false;
      out += step_json(*plan, plan->steps[index]);
      if (out.size() > (1 << 16)) {
        std::fwrite(out.data(), 1, out.size(), stdout);
        out.clear();
      }
    }
    out += "\n  ]\n}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return k_exit_ok;
  }
  Table table({"#", "STEP", "KIND", "NEEDS", "TIMEOUT", "RETRIES", "CPUS", "COMMAND"});
  int n = 0;
  for (int index : plan->order) {
    const auto& s = plan->steps[index];
    std::string needs;
    for (int d : s.needs) {
      needs += (needs.empty() ? "" : ",") + plan->steps[d].id;
    }
    table.add({std::to_string(++n), s.id, std::string(core::to_string(s.kind)), needs.empty() ? "-" : needs,
               s.timeout ? format_duration_ms(s.timeout->count()) : "-", retries_text(s.retries),
               std::to_string(s.cpus), s.display_command});
  }
  std::cout << workflow->name << ": " << plan->steps.size() << " steps";
  if (!workflow->params.empty()) {
    std::cout << "; params:";
    for (const auto& p : workflow->params) {
      std::cout << ' ' << p.name << '=' << p.value;
    }
  }
  std::cout << "\n\n";
  table.print(std::cout);
  return k_exit_ok;
}

int graph_command(const WorkflowOptions& options, const std::string& format) {
  auto workflow = load_workflow(options);
  if (!workflow) {
    return k_exit_usage;
  }
  auto quote = [](const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') {
        out += '\\';
      }
      out += c;
    }
    return out + "\"";
  };
  if (format == "mermaid") {
    std::cout << "flowchart LR\n";
    for (std::size_t i = 0; i < workflow->steps.size(); ++i) {
      const auto& s = workflow->steps[i];
      std::cout << "  s" << i << "[\"" << s.id << " (" << core::to_string(s.kind) << ")\"]\n";
    }
    std::unordered_map<std::string_view, std::size_t> index;
    for (std::size_t i = 0; i < workflow->steps.size(); ++i) {
      index.emplace(workflow->steps[i].id, i);
    }
    for (std::size_t i = 0; i < workflow->steps.size(); ++i) {
      for (const auto& need : workflow->steps[i].needs) {
        std::cout << "  s" << index.at(need) << " --> s" << i << '\n';
      }
    }
    return k_exit_ok;
  }
  std::cout << "digraph " << quote(workflow->name) << " {\n  rankdir=LR;\n  node [shape=box];\n";
  for (const auto& s : workflow->steps) {
    std::cout << "  " << quote(s.id) << " [label=" << quote(s.id + "\\n" + std::string(core::to_string(s.kind)))
              << "];\n";
  }
  for (const auto& s : workflow->steps) {
    for (const auto& need : s.needs) {
      std::cout << "  " << quote(need) << " -> " << quote(s.id) << ";\n";
    }
  }
  std::cout << "}\n";
  return k_exit_ok;
}

namespace {

/// How the steps a partial run leaves out are recorded (skipped) begins.
constexpr std::string_view k_unselected = "not selected (";

/// The steps of `plan` that ask for more than `capacity`, one
/// "FILE: error: ..." line each; "" when none does.
std::string capacity_problems(const core::Workflow& workflow, const core::Plan& plan,
                              const plugins::Capacity& capacity) {
  std::string text;
  for (const std::string& problem : plugins::check_capacity(plan, capacity)) {
    text += (text.empty() ? "" : "\n") + workflow.file + ": error: " + problem;
  }
  return text;
}

/// The plan of `workflow` for `run` and what its steps may use, once it is
/// known that the workflow plans (no unset env.X) and no step asks for more
/// than that. Nothing after printing the problems.
std::optional<std::pair<core::Plan, plugins::Capacity>> plan_run(const core::TrackerStore& store,
                                                                 const core::Workflow& workflow,
                                                                 const core::RunRecord& run,
                                                                 const ResourceOptions& resources) {
  auto capacity = capacity_for(resources, wants_gpus(workflow));
  if (!capacity) {
    std::fprintf(stderr, "kiln: error: %s\n", capacity.error().c_str());
    return std::nullopt;
  }
  auto plan = core::make_plan(workflow, {run.id, run.number, store.directory().string(), process_environment()});
  if (!plan) {
    std::fprintf(stderr, "%s\n", plan.error().c_str());
    return std::nullopt;
  }
  if (const std::string problems = capacity_problems(workflow, *plan, *capacity); !problems.empty()) {
    std::fprintf(stderr, "%s\n", problems.c_str());
    return std::nullopt;
  }
  return std::pair{std::move(*plan), std::move(*capacity)};
}

/// How a session of a run goes beside its plan: `kiln run`'s flags, or what
/// `kiln resume` read from the store.
struct Session {
  /// What steps' resources count against.
  plugins::Capacity capacity;
  int jobs = 0;
  bool keep_going = false;
  bool no_push = false;
  /// When the session began, for the time it took.
  std::int64_t started_ms = 0;
  /// Called once the plan is made, to say per plan step which run (a partial
  /// run), which are done already (a resumed run) and which are forced.
  std::function<void(const core::Plan&, core::SchedulerOptions&, std::vector<char>& forced)> setup;
  /// Of the workflow, which is not kept once planned: its name, and where
  /// its runs are pushed.
  std::string workflow_name;
  std::optional<PushTarget> push_target;
};

/// A session starting now, with the command's options (kiln run's or kiln resume's).
template <typename Options>
Session make_session(plugins::Capacity capacity, const Options& options, const core::Workflow& workflow) {
  return Session{std::move(capacity),
                 options.jobs,
                 options.keep_going,
                 options.no_push,
                 core::SystemClock().wall_ms(),
                 {},
                 workflow.name,
                 run_push_target(workflow.tracking, workflow.name)};
}

/// What a session settles before its loop: which steps run and which are
/// forced (Session::setup), and the decider, over the hash memo, that may
/// have decided steps ahead (kiln run does, as it records the run).
struct Prepared {
  core::SchedulerOptions options;
  core::InMemoryHashMemo memo;
  std::optional<core::StepDecider> decider;
};

/// The store's memo of input hashes, when some step is cached (a store
/// that cannot give it costs hashing afresh, not the run).
void load_memo(core::TrackerStore& store, bool any_cached, Prepared& prepared) {
  if (!any_cached) {
    return;
  }
  if (auto loaded = store.load_hash_memo()) {
    prepared.memo = core::InMemoryHashMemo(std::move(*loaded));
  } else {
    std::fprintf(stderr, "kiln: warning: input hashes are computed afresh: %s\n", loaded.error().c_str());
  }
}

void prepare_session(core::TrackerStore& store, const core::Plan& plan, const std::string& workflow_name,
                     const Session& session, Prepared& prepared) {
  std::vector<char> forced(plan.steps.size(), 0);
  if (session.setup) {
    session.setup(plan, prepared.options, forced);
  }
  prepared.decider.emplace(store, plan, workflow_name, std::move(forced), prepared.memo);
}

/// Runs `plan`, of `workflow`, as a session of `run`, which is recorded
/// (created or reopened) as running under this process with its steps'
/// commands: records every step, finishes the run and pushes it as
/// configured. Returns the exit status. `prepared` is made here unless the
/// caller made it (prepare_session) before recording the run.
int execute_session(core::TrackerStore& store, core::Executor& executor, const core::Plan& plan,
                    const core::RunRecord& run, const Session& session, Prepared& prepared);

/// Whether `kiln run` with these options may replay a run, or leave one to
/// replay: the whole workflow, nothing forced, read from its file.
bool replay_applies(const RunOptions& options) {
  return options.only.empty() && options.from.empty() && !options.force_all && options.force.empty() &&
         !options.workflow.content;
}

/// SHA-256 of all a run's plan and decisions are made from but the files
/// its steps read and write: this kiln (version and executable), the
/// workflow file (path and content), the current directory, -p, the
/// executor, the capacity, the store, and the environment variables the
/// plan read. Each field is length-prefixed, so no two differ in one text.
std::string replay_digest(const RunOptions& options, const std::string& file, const std::string& content_hash,
                          const plugins::Capacity& capacity, const std::string& store_dir,
                          const std::vector<std::string>& env_names) {
  std::string text;
  auto field = [&](std::string_view tag, std::string_view value) {
    text.append(tag).append(" ").append(std::to_string(value.size())).append(":").append(value).append("\n");
  };
  field("format", "kiln replay 1");
  field("version", KILN_VERSION);
  struct stat self {};
  if (::stat("/proc/self/exe", &self) == 0) {
    field("exe", std::to_string(self.st_size) + " " + std::to_string(self.st_mtim.tv_sec) + "." +
                     std::to_string(self.st_mtim.tv_nsec) + " " + std::to_string(self.st_ino));
  }
  field("file", file);
  field("content", content_hash);
  std::error_code ignored;
  field("cwd", std::filesystem::current_path(ignored).string());
  for (const std::string& param : options.workflow.params) {
    field("param", param);
  }
  field("executor", options.executor);
  field("cpus", std::to_string(capacity.cpus));
  field("memory", std::to_string(capacity.memory));
  for (const std::string& gpu : capacity.gpus) {
    field("gpu", gpu);
  }
  field("store", store_dir);
  for (const std::string& name : env_names) {
    const char* value = std::getenv(name.c_str());
    field(value != nullptr ? "env" : "unset", value != nullptr ? name + "=" + value : name);
  }
  return core::sha256_hex(text);
}

/// What a replay takes from the workflow for the run's record (ReplayBasis::header).
std::string replay_header(const core::NewRun& new_run, const core::Workflow& workflow) {
  nlohmann::json tags = nlohmann::json::array();
  for (const auto& [key, value] : workflow.tags) {
    tags.push_back({key, value});
  }
  return nlohmann::json{{"name", new_run.workflow_name},
                        {"params", new_run.params.is_null() ? nlohmann::json::object() : new_run.params},
                        {"tags", std::move(tags)},
                        {"tracking", {{"uri", workflow.tracking.uri}, {"experiment", workflow.tracking.experiment}}}}
      .dump();
}

/// `kiln run` as a replay of the file's last wholly cached run, when nothing
/// it rests on has changed (see kiln(1), kiln run): its exit status, or
/// nothing when it does not apply and the run goes the usual way. Nothing
/// here parses the workflow: its bytes are hashed, the files its basis lists
/// are stated on two threads while the run is written, and the run is
/// committed only if every stamp is unchanged.
std::optional<int> replay(const GlobalOptions& global, const RunOptions& options, const core::KeyValues& tags,
                          const GitLater& git, int argc, char** argv) {
  const core::SystemClock clock;
  const std::int64_t started_ms = clock.wall_ms();
  // Only a store that exists: a first run creates it once the file is valid.
  const std::filesystem::path store_dir = store_directory(global.store);
  std::error_code missing;
  if (!std::filesystem::exists(store_dir / "kiln.db", missing)) {
    return std::nullopt;
  }
  // The last replay left its writes in the log (below): they are copied
  // into kiln.db on a thread while this one reads, hashes and states, not
  // on that run's way out. Its rows are written once the copy is done, so
  // the log starts over instead of growing.
  std::unique_ptr<core::sqlite::BackgroundCheckpoint> checkpoint = core::TrackerStore::checkpoint_log(store_dir);
  std::string content;
  {
    std::error_code size_error;
    const std::uintmax_t size = std::filesystem::file_size(options.workflow.file, size_error);
    std::ifstream in(options.workflow.file, std::ios::binary);
    if (size_error || !in) {
      return std::nullopt;
    }
    // A large workflow's replay allocates as its run would (load_workflow).
    if (size >= k_huge_heap_from) {
      use_huge_pages();
    }
    content.resize(size);
    if (!in.read(content.data(), static_cast<std::streamsize>(size)) || in.peek() != std::char_traits<char>::eof()) {
      return std::nullopt; // changing as it is read: the usual way says what it is
    }
  }
  const std::string file = std::filesystem::absolute(options.workflow.file).lexically_normal().string();
  // open_store, as the usual way: a crashed run is recovered first.
  auto store = open_store(global.store);
  if (!store) {
    return std::nullopt;
  }
  // A replay's writes stay in the log for the next command to copy.
  (*store)->defer_checkpoints();
  auto basis = (*store)->replay_basis(file);
  if (!basis || !*basis) {
    return std::nullopt;
  }
  auto capacity = capacity_for(options.resources, (*basis)->wants_gpus);
  if (!capacity) {
    return std::nullopt;
  }
  const std::string content_hash = core::sha256_hex(content);
  if (replay_digest(options, file, content_hash, *capacity, (*store)->directory().string(), (*basis)->env_names) !=
      (*basis)->digest) {
    return std::nullopt;
  }
  auto files = core::decode_stamps((*basis)->files);
  const nlohmann::json header = nlohmann::json::parse((*basis)->header, nullptr, false);
  if (!files || header.is_discarded() || !header.is_object()) {
    return std::nullopt;
  }
  const std::vector<core::FileStamp> stamps = std::move(files->stamps);
  // The second thread states from the first file on; the main thread, while
  // the checkpoint runs and once the rows are written, from the last back,
  // until they meet.
  core::StatPrefetch prefetch(std::move(files->paths));
  std::size_t left = stamps.size();
  const auto same = [&](std::size_t i, const core::FileStatus& status) {
    return status.error == 0 && status.type == core::FileType::regular && status.stamp == stamps[i];
  };
  // False at the first changed file; stops early when `enough` says so.
  const auto state_from_back = [&](const auto& enough) {
    for (; left > 0 && prefetch.status(left - 1) == nullptr && !enough(); --left) {
      if (!same(left - 1, core::stat_path(prefetch.path(left - 1)))) {
        return false;
      }
    }
    return true;
  };
  if (checkpoint) {
    if (!state_from_back([&] { return checkpoint->done(); })) {
      return std::nullopt;
    }
    (void)checkpoint->wait(); // what it could not copy stays in the log
  }
  auto unchanged = [&] {
    if (!state_from_back([] { return false; })) {
      return false;
    }
    for (std::size_t i = 0; i < left; ++i) {
      if (!same(i, *prefetch.status(i))) {
        return false;
      }
    }
    return true;
  };

  core::NewRun new_run;
  core::TrackingConfig tracking;
  try {
    tracking.uri = header.at("tracking").value("uri", "");
    tracking.experiment = header.at("tracking").value("experiment", "");
    new_run.workflow_name = header.at("name").get<std::string>();
    new_run.params = header.at("params");
    for (const auto& tag : header.at("tags")) {
      new_run.tags.emplace_back(tag.at(0).get<std::string>(), tag.at(1).get<std::string>());
    }
    describe_runner(new_run, git, argc, argv, started_ms);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  new_run.workflow_file = file;
  new_run.workflow_hash = content_hash;
  new_run.workflow_content = std::move(content);
  new_run.tags.insert(new_run.tags.end(), tags.begin(), tags.end());
  const std::int64_t from_run = (*basis)->run;
  auto run = (*store)->replay_run(new_run, from_run, clock.wall_ms(), unchanged);
  if (!run) {
    std::fprintf(stderr, "kiln: warning: no replay of run %lld: %s\n", static_cast<long long>(from_run),
                 run.error().c_str());
    return std::nullopt;
  }
  if (!*run) {
    return std::nullopt;
  }
  const std::optional<PushTarget> push_target = run_push_target(tracking, new_run.workflow_name);
  const core::RunRecord& record = **run;
  if (push_target) {
    if (std::string warning = record_pending_push(**store, record.number, *push_target); !warning.empty()) {
      std::fprintf(stderr, "kiln: warning: the run will not be pushed: %s\n", warning.c_str());
    }
  }
  const int steps = record.steps.cached;
  std::printf("kiln: run %lld of %s (%s): %d steps, all cached: nothing they rest on has changed since run %lld\n",
              static_cast<long long>(record.number), new_run.workflow_name.c_str(), record.id.c_str(), steps,
              static_cast<long long>(from_run));
  if (auto finished = (*store)->finish_run(record.number, core::RunStatus::succeeded, k_exit_ok, clock.wall_ms());
      !finished) {
    std::fprintf(stderr, "kiln: error: not recorded: %s\n", finished.error().c_str());
    std::printf("kiln: run %lld succeeded, but the store could not record all of it (see the errors above)\n",
                static_cast<long long>(record.number));
    return k_exit_internal;
  }
  const Terminal terminal = detect_terminal(STDOUT_FILENO);
  std::printf("kiln: run %lld %s in %s (%d cached)\n", static_cast<long long>(record.number),
              paint("succeeded", Style::green, terminal.color).c_str(),
              format_duration_ms(clock.wall_ms() - started_ms).c_str(), steps);
  std::printf("kiln: recorded in %s; see: kiln runs show %lld\n", (*store)->database_file().c_str(),
              static_cast<long long>(record.number));
  if (push_target && !options.no_push) {
    std::fflush(stdout);
    auto_push(**store, record.number, *push_target);
  }
  store->reset();
  return k_exit_ok;
}

} // namespace

int run_command(const GlobalOptions& global, const RunOptions& options, int argc, char** argv) {
  core::KeyValues tags;
  for (const auto& tag : options.tags) {
    const auto eq = tag.find('=');
    const std::string key = tag.substr(0, eq);
    std::string problem = eq == std::string::npos ? "write it as KEY=VALUE" : core::check_key(key);
    if (problem.empty() && key.starts_with("kiln.")) {
      problem = "the prefix 'kiln.' is kiln's own; choose another name";
    }
    if (!problem.empty()) {
      std::fprintf(stderr, "kiln: error: --tag '%s': %s\n", tag.c_str(), problem.c_str());
      return k_exit_usage;
    }
    tags.emplace_back(key, tag.substr(eq + 1));
  }
  const GitLater git = git_of_workflow(options.workflow.file);
  if (replay_applies(options) && !options.no_replay) {
    if (std::optional<int> status = replay(global, options, tags, git, argc, argv)) {
      exit_leaving_heap(*status);
      return *status;
    }
  }
  auto workflow = load_workflow(options.workflow);
  if (!workflow) {
    return k_exit_usage;
  }
  // A partial run names steps that must exist; checked before anything is recorded.
  {
    std::vector<std::string_view> ids;
    for (const auto& step : workflow->steps) {
      ids.push_back(step.id);
    }
    for (const auto* names : {&options.only, &options.from, &options.force}) {
      for (const std::string& name : *names) {
        // A matrix's name stands for all its variants.
        const bool a_matrix = std::any_of(workflow->steps.begin(), workflow->steps.end(),
                                          [&](const core::Step& s) { return s.matrix_of == name; });
        if (workflow->step(name) == nullptr && !a_matrix) {
          std::fprintf(stderr, "kiln: error: %s %s: no step '%s' in %s%s\n",
                       names == &options.only   ? "--only"
                       : names == &options.from ? "--from"
                                                : "--force",
                       name.c_str(), name.c_str(), options.workflow.file.c_str(),
                       workflows::did_you_mean(name, ids).c_str());
          return k_exit_usage;
        }
      }
    }
  }
  // The plan is checked (templates, resources) where it is made, inside the
  // run's transaction: a problem there records nothing.
  const auto capacity = capacity_for(options.resources, wants_gpus(*workflow));
  if (!capacity) {
    std::fprintf(stderr, "kiln: error: %s\n", capacity.error().c_str());
    return k_exit_usage;
  }
  auto store = open_store(global.store);
  if (!store) {
    std::fprintf(stderr, "kiln: error: %s\n", store.error().c_str());
    return k_exit_internal;
  }
  // From here on SIGINT and SIGTERM are events of the loop, not deaths.
  auto executor = plugins::make_executor(options.executor);
  if (!executor) {
    std::fprintf(stderr, "kiln: error: no executor named '%s'\n", options.executor.c_str());
    return k_exit_usage;
  }

  Session session = make_session(*capacity, options, *workflow);
  const bool gpus_wanted = wants_gpus(*workflow);
  core::NewRun new_run = describe_run(*workflow, git, argc, argv, session.started_ms);
  // Kept for the replay basis this run may leave (the workflow is not).
  const std::string header = replay_applies(options) ? replay_header(new_run, *workflow) : std::string();
  new_run.tags.insert(new_run.tags.end(), tags.begin(), tags.end());
  // Which steps run and which are forced: settled in the run's transaction,
  // before steps are decided ahead.
  session.setup = [&options](const core::Plan& plan, core::SchedulerOptions& scheduler_options,
                             std::vector<char>& forced) {
    // A name picks its step, or every variant of the matrix of that name.
    auto indices = [&](const std::vector<std::string>& names) {
      std::vector<int> out;
      for (const std::string& name : names) {
        for (std::size_t i = 0; i < plan.steps.size(); ++i) {
          const std::string& id = plan.steps[i].id;
          const bool variant = !plan.steps[i].matrix.empty() && id.size() > name.size() && id.starts_with(name) &&
                               id[name.size()] == '[';
          if (id == name || variant) {
            out.push_back(static_cast<int>(i));
          }
        }
      }
      return out;
    };
    if (!options.only.empty() || !options.from.empty()) {
      auto join = [](const std::vector<std::string>& names) {
        std::string text;
        for (const std::string& name : names) {
          text += (text.empty() ? "" : ", ") + name;
        }
        return text;
      };
      scheduler_options.selected = core::select_steps(plan, indices(options.only), indices(options.from));
      std::string how;
      if (!options.only.empty()) {
        how = "--only " + join(options.only);
      }
      if (!options.from.empty()) {
        how += (how.empty() ? "" : " ") + std::string("--from ") + join(options.from);
      }
      scheduler_options.unselected_reason = std::string(k_unselected) + how + ")";
    }
    if (options.force_all) {
      forced.assign(forced.size(), 1);
    }
    for (int i : indices(options.force)) {
      forced[i] = 1;
    }
  };
  Prepared prepared;
  const bool any_cached =
      std::any_of(workflow->steps.begin(), workflow->steps.end(), [](const core::Step& s) { return s.cache; });
  // The plan is made inside the run's transaction, once its number and id
  // are known: each step row is written once, with its resolved command,
  // and a step decided ahead (cached) is written cached.
  std::optional<core::Plan> plan;
  std::string plan_error;
  auto run = (*store)->create_run(
      new_run, [&](std::int64_t number, const std::string& id) -> core::Expected<std::vector<core::NewStep>> {
        auto made = core::make_plan(*workflow, {id, number, (*store)->directory().string(), process_environment()});
        if (!made) {
          plan_error = made.error();
          return core::Error{plan_error};
        }
        plan_error = capacity_problems(*workflow, *made, *capacity);
        if (!plan_error.empty()) {
          return core::Error{plan_error};
        }
        plan = std::move(*made);
        // The plan holds all the run needs from here on: the model (10,000
        // steps are megabytes) is freed before the memo and the decisions
        // add theirs.
        workflow.reset();
        prepare_session(**store, *plan, session.workflow_name, session, prepared);
        prepared.decider->prefetch_stats();
        load_memo(**store, any_cached, prepared);
        std::vector<core::NewStep> steps = planned_steps(*plan);
        auto ahead = prepared.decider->decide_ahead(prepared.options.selected, core::SystemClock().wall_ms());
        for (std::size_t i = 0; i < steps.size(); ++i) {
          steps[i].cached = std::move(ahead[i]);
        }
        return steps;
      });
  if (!run) {
    std::fprintf(stderr, plan_error.empty() ? "kiln: error: %s\n" : "%s\n", run.error().c_str());
    return plan_error.empty() ? k_exit_internal : k_exit_usage;
  }
  const int status = execute_session(**store, *executor, *plan, *run, session, prepared);
  if (replay_applies(options)) {
    // A run that succeeded with every step cached before any started can
    // be replayed by the next one; any other leaves nothing to replay.
    std::optional<core::StampedFiles> files;
    if (status == k_exit_ok) {
      files = prepared.decider->replay_files();
    }
    core::Expected<void> saved;
    if (files) {
      core::ReplayBasis basis{new_run.workflow_file,
                              run->number,
                              replay_digest(options, new_run.workflow_file, new_run.workflow_hash, *capacity,
                                            (*store)->directory().string(), plan->env_read),
                              plan->env_read,
                              gpus_wanted,
                              header,
                              core::encode_stamps(*files)};
      saved = (*store)->save_replay(basis);
    } else {
      saved = (*store)->forget_replay(new_run.workflow_file);
    }
    if (!saved) {
      std::fprintf(stderr, "kiln: warning: the next run cannot be a replay: %s\n", saved.error().c_str());
    }
  }
  // The executor and the store are closed; the rest is left to the OS.
  executor.reset();
  store->reset();
  exit_leaving_heap(status);
  return status;
}

namespace {

int execute_session(core::TrackerStore& store, core::Executor& executor, const core::Plan& plan,
                    const core::RunRecord& run, const Session& session, Prepared& prepared) {
  const core::SystemClock clock;
  const std::optional<PushTarget>& push_target = session.push_target;
  if (push_target) {
    if (std::string warning = record_pending_push(store, run.number, *push_target); !warning.empty()) {
      std::fprintf(stderr, "kiln: warning: the run will not be pushed: %s\n", warning.c_str());
    }
  }

  const std::string& workflow_name = session.workflow_name;
  const auto log_dir = store.log_path(run.id, "x", 1, "out").parent_path();
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  if (ec) {
    std::fprintf(stderr, "kiln: error: cannot create %s: %s\n", log_dir.c_str(), ec.message().c_str());
    (void)store.finish_run(run.number, core::RunStatus::failed, k_exit_internal, clock.wall_ms());
    return k_exit_internal;
  }

  if (!prepared.decider) {
    load_memo(store,
              std::any_of(plan.steps.begin(), plan.steps.end(), [](const core::PlannedStep& s) { return s.cache; }),
              prepared);
    prepare_session(store, plan, workflow_name, session, prepared);
  }
  core::SchedulerOptions& scheduler_options = prepared.options;
  core::StepDecider& decider = *prepared.decider;
  scheduler_options.jobs = session.jobs > 0 ? session.jobs : session.capacity.cpus;
  // Steps count their resources.cpus against the capacity's CPUs, but an
  // explicit -j above that is a request (I/O-bound steps) and is honoured.
  scheduler_options.cpus = std::max(session.capacity.cpus, scheduler_options.jobs);
  scheduler_options.memory = session.capacity.memory;
  scheduler_options.gpus = session.capacity.gpus;
  scheduler_options.keep_going = session.keep_going ? core::KeepGoing::yes : core::KeepGoing::no;
  scheduler_options.seed = std::hash<std::string>{}(run.id);

  const Terminal terminal = detect_terminal(STDOUT_FILENO);
  const auto kept = std::count(scheduler_options.kept.begin(), scheduler_options.kept.end(), 1);
  std::printf("kiln: run %lld of %s (%s): %zu steps", static_cast<long long>(run.number), workflow_name.c_str(),
              run.id.c_str(), plan.steps.size());
  if (kept > 0) {
    std::printf(", %lld done before and kept", static_cast<long long>(kept));
  }
  std::printf("\n");
  std::fflush(stdout);

  core::RunRecorder recorder(store, plan, run.number, std::string(executor.name()));
  core::TrackingRecorder tracking(store, plan, run.number, clock, workflows::yaml_to_json);
  ConsoleReporter console(plan, run.number, clock, terminal, stdout);
  console.count_settled(static_cast<int>(kept));
  // Steps kept from an earlier session: their keys (and where a cached one
  // came from) count for the steps after them.
  decider.adopt_recorded(scheduler_options.kept);
  core::ObserverList observers({&tracking, &recorder, &decider, &console});
  core::Scheduler scheduler(
      plan, executor, clock, observers,
      [&](int step, int attempt) {
        const auto& id = plan.steps[step].id;
        return std::pair{store.log_path(run.id, id, attempt, "out").string(),
                         store.log_path(run.id, id, attempt, "err").string()};
      },
      scheduler_options);
  scheduler.set_collector(&tracking);
  scheduler.set_hooks(&decider);
  const auto result = scheduler.run();
  console.finish();

  int exit_code = result.exit_code;
  // A run whose record is incomplete did not fully succeed: say so, and
  // exit 3 unless a step failure or a signal already says more.
  decider.flush();
  std::vector<std::string> unrecorded = recorder.errors();
  unrecorded.insert(unrecorded.end(), decider.errors().begin(), decider.errors().end());
  if (auto finished = store.finish_run(run.number, result.status, exit_code, clock.wall_ms()); !finished) {
    unrecorded.push_back(finished.error());
  }
  for (const auto& error : unrecorded) {
    std::fprintf(stderr, "kiln: error: not recorded: %s\n", error.c_str());
  }
  if (!unrecorded.empty() && exit_code == k_exit_ok) {
    exit_code = k_exit_internal;
  }

  std::map<core::StepStatus, int> counts;
  for (auto s : result.steps) {
    ++counts[s];
  }
  std::string summary;
  for (auto [status, count] : counts) {
    summary += (summary.empty() ? "" : ", ") + std::to_string(count) + " " + std::string(core::to_string(status));
  }
  const auto elapsed = clock.wall_ms() - session.started_ms;
  const std::string verdict = std::string(core::to_string(result.status));
  if (!unrecorded.empty()) {
    std::printf("kiln: run %lld %s, but the store could not record all of it (see the errors above)\n",
                static_cast<long long>(run.number), verdict.c_str());
    return exit_code;
  }
  std::printf(
      "kiln: run %lld %s in %s (%s)\n", static_cast<long long>(run.number),
      paint(verdict, result.status == core::RunStatus::succeeded ? Style::green : Style::red, terminal.color).c_str(),
      format_duration_ms(elapsed).c_str(), summary.c_str());
  std::printf("kiln: recorded in %s; see: kiln runs show %lld\n", store.database_file().c_str(),
              static_cast<long long>(run.number));
  if (push_target && !session.no_push) {
    std::fflush(stdout);
    auto_push(store, run.number, *push_target);
  }
  return exit_code;
}

} // namespace

int resume_command(const GlobalOptions& global, const ResumeOptions& options, int argc, char** argv) {
  OpenedRun opened;
  if (int status = open_run(global, options.run, opened); status != k_exit_ok) {
    return status;
  }
  core::TrackerStore& store = *opened.store;
  const core::RunRecord& run = opened.run;
  const auto number = static_cast<long long>(run.number);
  const char* file = run.workflow_file.c_str();
  if (run.status == core::RunStatus::running) {
    std::fprintf(stderr,
                 "kiln: error: run %lld is still running (kiln pid %lld on %s): wait for it, or stop it first\n",
                 number, static_cast<long long>(run.runner.pid), run.runner.host.c_str());
    return k_exit_usage;
  }
  if (run.status == core::RunStatus::succeeded) {
    std::fprintf(stderr, "kiln: error: run %lld succeeded: there is nothing to resume (kiln run %s starts a new run)\n",
                 number, file);
    return k_exit_usage;
  }

  // The run resumes with the workflow it ran: the recorded content, once
  // the file is seen to be unchanged, or with --allow-changed the file as
  // it is now (parsed from the bytes hashed here).
  std::optional<std::string> current;
  if (std::ifstream in(run.workflow_file, std::ios::binary); in) {
    current.emplace(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) {
      current.reset();
    }
  }
  const bool changed = !current || core::sha256_hex(*current) != run.workflow_hash;
  if (changed && !options.allow_changed) {
    std::fprintf(stderr,
                 "kiln: error: cannot resume run %lld: its workflow file %s %s, so the steps left would not run "
                 "as recorded; --allow-changed resumes with the file as it is now (and the run's recorded "
                 "params)\n",
                 number, file, current ? "has changed since the run started" : "cannot be read");
    return k_exit_usage;
  }
  if (changed && !current) {
    std::fprintf(stderr, "kiln: error: cannot resume run %lld: cannot read %s\n", number, file);
    return k_exit_usage;
  }
  WorkflowOptions workflow_options{run.workflow_file, {}, std::move(current)};
  if (!changed) {
    auto recorded = store.workflow_content(run.number);
    if (!recorded) {
      std::fprintf(stderr, "kiln: error: %s\n", recorded.error().c_str());
      return k_exit_internal;
    }
    workflow_options.content = std::move(*recorded);
  }
  for (const auto& [name, value] : run.params.items()) {
    workflow_options.params.push_back(name + "=" + (value.is_string() ? value.get<std::string>() : value.dump()));
  }
  auto workflow = load_workflow(workflow_options);
  if (!workflow) {
    return k_exit_usage;
  }
  auto before = store.steps(run.number);
  auto attempts = store.attempts(run.number);
  if (!before || !attempts) {
    std::fprintf(stderr, "kiln: error: %s\n", (!before ? before.error() : attempts.error()).c_str());
    return k_exit_internal;
  }
  {
    std::string lost;
    for (const core::StepRecord& step : *before) {
      if (workflow->step(step.id) == nullptr) {
        lost += (lost.empty() ? "'" : ", '") + step.id + "'";
      }
    }
    if (!lost.empty()) {
      std::fprintf(stderr,
                   "kiln: error: cannot resume run %lld: %s no longer has its step %s; a resumed run goes on with "
                   "the steps it recorded\n",
                   number, file, lost.c_str());
      return k_exit_usage;
    }
  }
  // Planned with the run's own id and number before it is reopened: a
  // problem here changes nothing recorded.
  auto planned = plan_run(store, *workflow, run, options.resources);
  if (!planned) {
    return k_exit_usage;
  }
  const auto& [plan, capacity] = *planned;
  // The executor that ran its attempts runs the new ones. From here on
  // SIGINT and SIGTERM are events of the loop, not deaths.
  const std::string executor_name = attempts->empty() ? "local" : attempts->back().start.executor;
  auto executor = plugins::make_executor(executor_name);
  if (!executor) {
    std::fprintf(stderr, "kiln: error: no executor named '%s'\n", executor_name.c_str());
    return k_exit_usage;
  }

  core::RunReopen reopen;
  reopen.runner = {plugins::host_name(), static_cast<std::int64_t>(getpid()), plugins::self_start_ticks()};
  reopen.command_line = command_line(argc, argv);
  reopen.steps = planned_steps(plan);
  if (changed) {
    std::fprintf(stderr, "kiln: warning: %s has changed since run %lld started; resuming with it as it is now\n", file,
                 number);
    reopen.workflow_content = workflow->content;
    reopen.workflow_hash = workflow->content_hash;
  }
  Session session = make_session(capacity, options, *workflow);
  auto reopened = store.reopen_run(run.number, reopen);
  if (!reopened) {
    std::fprintf(stderr, "kiln: error: %s\n", reopened.error().c_str());
    // Another kiln resumed it meanwhile, or the store failed.
    auto again = store.run(run.number);
    const bool refused =
        again && (again->status == core::RunStatus::running || again->status == core::RunStatus::succeeded);
    return refused ? k_exit_usage : k_exit_internal;
  }
  // Steps it recorded before keep their rows; their commands are the plan's.
  {
    std::vector<core::TrackerStore::StepCommand> commands;
    for (const auto& s : plan.steps) {
      commands.push_back({s.id, s.display_command, s.workdir});
    }
    if (auto recorded = store.set_step_commands(run.number, commands); !recorded) {
      std::fprintf(stderr, "kiln: warning: %s\n", recorded.error().c_str());
    }
  }
  auto after = store.steps(run.number);
  if (!after) {
    std::fprintf(stderr, "kiln: error: %s\n", after.error().c_str());
    (void)store.finish_run(run.number, core::RunStatus::failed, k_exit_internal, core::SystemClock().wall_ms());
    return k_exit_internal;
  }

  session.setup = [&](const core::Plan& plan, core::SchedulerOptions& scheduler_options,
                      std::vector<char>& /*forced*/) {
    std::unordered_map<std::string_view, const core::StepRecord*> now;
    std::unordered_map<std::string_view, const core::StepRecord*> was;
    for (const core::StepRecord& step : *after) {
      now.emplace(step.id, &step);
    }
    for (const core::StepRecord& step : *before) {
      was.emplace(step.id, &step);
    }
    const std::size_t n = plan.steps.size();
    std::vector<char>& kept = scheduler_options.kept;
    kept.assign(n, 0);
    scheduler_options.prior_attempts.assign(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string& id = plan.steps[i].id;
      if (auto it = now.find(id); it != now.end()) {
        const core::StepStatus status = it->second->status;
        kept[i] = status == core::StepStatus::succeeded || status == core::StepStatus::cached ? 1 : 0;
        scheduler_options.prior_attempts[i] = it->second->attempts;
      }
      // A partial run stays partial: what it left out is left out again.
      if (auto it = was.find(id); it != was.end() && it->second->status == core::StepStatus::skipped &&
                                  it->second->reason.starts_with(k_unselected)) {
        scheduler_options.selected.resize(n, 1);
        scheduler_options.selected[i] = 0;
        scheduler_options.unselected_reason = it->second->reason;
      }
    }
  };
  Prepared prepared;
  workflow.reset();
  const int status = execute_session(store, *executor, plan, *reopened, session, prepared);
  // The executor and the store are closed; the rest is left to the OS.
  executor.reset();
  opened.store.reset();
  exit_leaving_heap(status);
  return status;
}

} // namespace kiln::cli
