#include "core/duration.hpp"

#include <cctype>
#include <charconv>

#include <array>
#include <cstdint>

namespace kiln::core {

namespace {

struct Unit {
  std::string_view suffix;
  std::int64_t millis;
};

// Largest first: the order parse_duration enforces and format_duration writes.
constexpr std::array<Unit, 5> k_units{{
    {"d", 86'400'000},
    {"h", 3'600'000},
    {"m", 60'000},
    {"s", 1'000},
    {"ms", 1},
}};

// About 100 years: far beyond any timeout, far below int64 overflow.
constexpr std::int64_t k_max_millis = 100LL * 365 * 86'400'000;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

Error invalid(std::string_view text, std::string_view why) {
  return Error{"invalid duration '" + std::string(text) + "': " + std::string(why)};
}

} // namespace

Expected<Millis> parse_duration(std::string_view text) {
  if (text.empty()) {
    return invalid(text, "empty; write e.g. 30s");
  }
  bool all_digits = true;
  for (char c : text) {
    all_digits = all_digits && is_digit(c);
  }
  if (all_digits) {
    const std::string number = text.size() <= 9 ? std::string(text) : std::string("30");
    return Error{"'" + std::string(text) + "' has no unit: a duration needs a unit, e.g. " + number + "s"};
  }

  std::int64_t total = 0;
  std::size_t previous_unit = k_units.size(); // none yet
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t digits_start = i;
    std::int64_t number = 0;
    while (i < text.size() && is_digit(text[i])) {
      number = number * 10 + (text[i] - '0');
      if (number > k_max_millis) {
        return invalid(text, "too large");
      }
      ++i;
    }
    if (i == digits_start) {
      return invalid(text, "expected a number followed by a unit, e.g. 30s or 1h30m");
    }
    const std::size_t unit_start = i;
    while (i < text.size() && is_letter(text[i])) {
      ++i;
    }
    const std::string_view suffix = text.substr(unit_start, i - unit_start);
    if (suffix.empty()) {
      if (i < text.size()) {
        return invalid(text, "expected a number followed by a unit, e.g. 30s or 1h30m");
      }
      return invalid(text, "the last number has no unit; use ms, s, m, h or d");
    }
    std::size_t unit = k_units.size();
    for (std::size_t u = 0; u < k_units.size(); ++u) {
      if (k_units[u].suffix == suffix) {
        unit = u;
      }
    }
    if (unit == k_units.size()) {
      return invalid(text, "unknown unit '" + std::string(suffix) + "' (use ms, s, m, h or d)");
    }
    if (previous_unit != k_units.size() && unit <= previous_unit) {
      return invalid(text, "units must go from largest to smallest, each once, e.g. 1h30m");
    }
    previous_unit = unit;
    if (number > k_max_millis / k_units[unit].millis) {
      return invalid(text, "too large");
    }
    total += number * k_units[unit].millis;
    if (total > k_max_millis) {
      return invalid(text, "too large");
    }
  }
  return Millis{total};
}

std::string format_duration(Millis duration) {
  std::int64_t rest = duration.count();
  std::string out;
  if (rest < 0) {
    out += '-';
    // -(INT64_MIN) overflows; durations that large are not meaningful anyway.
    rest = rest == INT64_MIN ? INT64_MAX : -rest;
  }
  if (rest == 0) {
    return "0s";
  }
  for (const Unit& unit : k_units) {
    if (rest >= unit.millis) {
      out += std::to_string(rest / unit.millis);
      out += unit.suffix;
      rest %= unit.millis;
    }
  }
  return out;
}

Expected<std::int64_t> parse_size(std::string_view text) {
  const std::string bad = "bad size '" + std::string(text) + "': use a number with K, M, G or T, e.g. 4G or 512M";
  std::size_t end = 0;
  while (end < text.size() && ((text[end] >= '0' && text[end] <= '9') || text[end] == '.')) {
    ++end;
  }
  if (end == 0) {
    return Error{bad};
  }
  double number = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + end, number);
  if (ec != std::errc{} || ptr != text.data() + end) {
    return Error{bad};
  }
  std::string unit(text.substr(end));
  for (char& c : unit) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (unit.ends_with("IB")) {
    unit.resize(unit.size() - 2);
  } else if (unit.ends_with("I") || (unit.size() > 1 && unit.ends_with("B"))) {
    unit.resize(unit.size() - 1);
  } else if (unit == "B") {
    unit.clear();
  }
  double scale = 1;
  if (unit == "K") {
    scale = 1024.0;
  } else if (unit == "M") {
    scale = 1024.0 * 1024;
  } else if (unit == "G") {
    scale = 1024.0 * 1024 * 1024;
  } else if (unit == "T") {
    scale = 1024.0 * 1024 * 1024 * 1024;
  } else if (!unit.empty()) {
    return Error{bad};
  }
  const double bytes = number * scale;
  if (!(bytes >= 1) || bytes > 9.0e18) {
    return Error{"bad size '" + std::string(text) + "': must be above zero"};
  }
  return static_cast<std::int64_t>(bytes);
}

} // namespace kiln::core
