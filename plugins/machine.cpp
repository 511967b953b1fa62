#include "plugins/machine.hpp"

#include <unistd.h>

#include <cstdio>
#include <memory>

namespace kiln::plugins {

namespace {

std::string format_bytes(std::int64_t bytes) {
  const char* units[] = {"B", "K", "M", "G", "T"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, value == static_cast<double>(static_cast<std::int64_t>(value)) ? "%.0f%s" : "%.1f%s",
                value, units[unit]);
  return buf;
}

} // namespace

std::vector<std::string> nvidia_gpus() {
  std::vector<std::string> ids;
  // popen runs it through /bin/sh, which finds it on the PATH (or fails
  // quietly: 2>/dev/null).
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(
      ::popen("nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null", "r"), ::pclose);
  if (!pipe) {
    return ids;
  }
  char line[256];
  while (std::fgets(line, sizeof line, pipe.get()) != nullptr) {
    std::string id(line);
    while (!id.empty() && (id.back() == '\n' || id.back() == '\r' || id.back() == ' ')) {
      id.pop_back();
    }
    if (!id.empty()) {
      ids.push_back(id);
    }
  }
  if (::pclose(pipe.release()) != 0) {
    return {};
  }
  return ids;
}

Capacity detect_capacity(DetectGpus gpus) {
  Capacity capacity;
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  capacity.cpus = cpus > 0 ? static_cast<int>(cpus) : 1;
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  capacity.memory = pages > 0 && page_size > 0 ? static_cast<std::int64_t>(pages) * page_size : 0;
  if (gpus == DetectGpus::yes) {
    capacity.gpus = nvidia_gpus();
  }
  capacity.gpu_source = capacity.gpus.empty() ? "none" : "nvidia-smi";
  return capacity;
}

core::Expected<std::vector<std::string>> parse_gpus(const std::string& text) {
  std::vector<std::string> ids;
  const bool count = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  if (count && text.size() <= 4) {
    for (int i = 0; i < std::stoi(text); ++i) {
      ids.push_back(std::to_string(i));
    }
    return ids;
  }
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string id = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (id.empty() || id.find_first_of(" \t=") != std::string::npos) {
      return core::Error{"--gpus " + text + ": give a count (2) or device ids separated by commas (0,1)"};
    }
    ids.push_back(id);
    if (comma == std::string::npos) {
      break;
    }
    start = comma + 1;
  }
  return ids;
}

std::vector<std::string> check_capacity(const core::Plan& plan, const Capacity& capacity) {
  std::vector<std::string> problems;
  for (const core::PlannedStep& step : plan.steps) {
    if (step.cpus > capacity.cpus) {
      problems.push_back("step '" + step.id + "' asks for " + std::to_string(step.cpus) + " CPUs; this machine has " +
                         std::to_string(capacity.cpus) + " (give --cpus to say otherwise)");
    }
    if (capacity.memory > 0 && step.memory > capacity.memory) {
      problems.push_back("step '" + step.id + "' asks for " + format_bytes(step.memory) +
                         " of memory; this machine has " + format_bytes(capacity.memory) +
                         " (give --memory to say otherwise)");
    }
    if (static_cast<std::size_t>(step.gpus) > capacity.gpus.size()) {
      problems.push_back("step '" + step.id + "' asks for " + std::to_string(step.gpus) + " GPU" +
                         (step.gpus == 1 ? "" : "s") + "; this machine has " + std::to_string(capacity.gpus.size()) +
                         " (" + capacity.gpu_source + "; list them with --gpus 0,1)");
    }
  }
  return problems;
}

} // namespace kiln::plugins
