#pragma once
// What this machine offers steps: CPUs, memory and GPUs, detected, or as
// the user says with --cpus, --memory and --gpus. GPUs come from
// `nvidia-smi` when it is on the PATH (one line per device index), else
// there are none.

#include "core/expected.hpp"
#include "core/plan.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::plugins {

struct Capacity {
  int cpus = 1;
  /// Bytes.
  std::int64_t memory = 0;
  /// Device ids as CUDA_VISIBLE_DEVICES takes them.
  std::vector<std::string> gpus;
  /// Where the GPU list came from: "nvidia-smi", "--gpus" or "none".
  std::string gpu_source = "none";
};

enum class DetectGpus { no, yes };
/// Online CPUs, physical memory, and with DetectGpus::yes the GPUs
/// nvidia-smi lists (a process: asked only when some step wants GPUs).
Capacity detect_capacity(DetectGpus gpus);

/// The device ids `nvidia-smi --query-gpu=index --format=csv,noheader`
/// prints; empty when it is not on the PATH or fails.
std::vector<std::string> nvidia_gpus();

/// --gpus: a count ("2", devices 0 and 1) or a list of ids ("0,2", "GPU-1a2b").
core::Expected<std::vector<std::string>> parse_gpus(const std::string& text);

/// Every step asking for more than `capacity` holds, one message each,
/// e.g. "step 'train' asks for 2 GPUs; this machine has 1 (nvidia-smi); give --gpus".
std::vector<std::string> check_capacity(const core::Plan& plan, const Capacity& capacity);

} // namespace kiln::plugins
