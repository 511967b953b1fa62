#include "plugins/executors.hpp"

#include "plugins/local_executor.hpp"

namespace kiln::plugins {

namespace {

struct ExecutorPlugin {
  std::string_view name;
  std::unique_ptr<core::Executor> (*make)();
  void (*stop_orphans)(const std::vector<std::string>& handles);
};

std::unique_ptr<core::Executor> make_local() {
  return std::make_unique<LocalExecutor>();
}

// Add an optional executor (Slurm) behind its CMake option here.
constexpr ExecutorPlugin k_executors[] = {
    {"local", &make_local, &stop_orphan_jobs},
};

const ExecutorPlugin* find(std::string_view name) {
  for (const ExecutorPlugin& plugin : k_executors) {
    if (plugin.name == name) {
      return &plugin;
    }
  }
  return nullptr;
}

} // namespace

std::unique_ptr<core::Executor> make_executor(std::string_view name) {
  const ExecutorPlugin* plugin = find(name);
  return plugin != nullptr ? plugin->make() : nullptr;
}

std::vector<std::string_view> executor_names() {
  std::vector<std::string_view> names;
  for (const ExecutorPlugin& plugin : k_executors) {
    names.push_back(plugin.name);
  }
  return names;
}

void stop_orphan(std::string_view executor, std::string_view handle) {
  stop_orphans(executor, {std::string(handle)});
}

void stop_orphans(std::string_view executor, const std::vector<std::string>& handles) {
  if (const ExecutorPlugin* plugin = find(executor)) {
    plugin->stop_orphans(handles);
  }
}

} // namespace kiln::plugins
