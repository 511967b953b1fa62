#pragma once
// The executors compiled into kiln, by name: a static table, no dlopen.
// A workflow or the command line names one ("local"); crash recovery hands
// a job's recorded handle back to the executor that wrote it.

#include "core/executor.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::plugins {

/// A new executor, or nullptr if no executor has that name.
std::unique_ptr<core::Executor> make_executor(std::string_view name);

/// The known names, in table order ("local" first).
std::vector<std::string_view> executor_names();

/// Stops a job that a dead runner left behind, given the executor's name and
/// the handle from JobStarted. An unknown executor or a handle that no
/// longer names a live job of ours is left alone. May block for a few
/// seconds while the job shuts down.
void stop_orphan(std::string_view executor, std::string_view handle);

/// The same for several jobs of one executor, stopped together: one grace
/// period for all rather than one each.
void stop_orphans(std::string_view executor, const std::vector<std::string>& handles);

} // namespace kiln::plugins
