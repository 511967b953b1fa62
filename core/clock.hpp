#pragma once
// Time as the scheduler sees it: a monotonic clock for deadlines and a wall
// clock for what is recorded. Tests substitute a fake that jumps.

#include <chrono>
#include <cstdint>

namespace kiln::core {

using Millis = std::chrono::milliseconds;
using TimePoint = std::chrono::steady_clock::time_point;

class Clock {
public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  /// Milliseconds since the Unix epoch, for records.
  virtual std::int64_t wall_ms() const = 0;
};

class SystemClock final : public Clock {
public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  std::int64_t wall_ms() const override {
    return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
};

} // namespace kiln::core
