#include "core/duration.hpp"

#include <doctest/doctest.h>

using kiln::core::format_duration;
using kiln::core::Millis;
using kiln::core::parse_duration;

namespace {

long long ms(std::string_view text) {
  auto parsed = parse_duration(text);
  REQUIRE_MESSAGE(parsed.ok(), (parsed.ok() ? std::string() : parsed.error()));
  return parsed->count();
}

std::string error_of(std::string_view text) {
  auto parsed = parse_duration(text);
  REQUIRE_FALSE(parsed.ok());
  return parsed.error();
}

} // namespace

TEST_SUITE("core::Duration") {
  TEST_CASE("single units") {
    CHECK(ms("500ms") == 500);
    CHECK(ms("90s") == 90'000);
    CHECK(ms("5m") == 300'000);
    CHECK(ms("2h") == 7'200'000);
    CHECK(ms("1d") == 86'400'000);
    CHECK(ms("0s") == 0);
  }

  TEST_CASE("combinations in descending order") {
    CHECK(ms("1h30m") == 5'400'000);
    CHECK(ms("1m30s") == 90'000);
    CHECK(ms("1d2h3m4s5ms") == 86'400'000 + 7'200'000 + 180'000 + 4'000 + 5);
    CHECK(ms("1s500ms") == 1'500);
    CHECK(ms("90m") == 5'400'000);
  }

  TEST_CASE("a bare number suggests a unit") {
    CHECK(error_of("30") == "'30' has no unit: a duration needs a unit, e.g. 30s");
    CHECK(error_of("0") == "'0' has no unit: a duration needs a unit, e.g. 0s");
  }

  TEST_CASE("malformed durations") {
    CHECK(error_of("") == "invalid duration '': empty; write e.g. 30s");
    CHECK(error_of("5x") == "invalid duration '5x': unknown unit 'x' (use ms, s, m, h or d)");
    CHECK(error_of("1m1h") == "invalid duration '1m1h': units must go from largest to smallest, each once, e.g. 1h30m");
    CHECK(error_of("1s1s") == "invalid duration '1s1s': units must go from largest to smallest, each once, e.g. 1h30m");
    CHECK(error_of("abc") == "invalid duration 'abc': expected a number followed by a unit, e.g. 30s or 1h30m");
    CHECK(error_of("-5s") == "invalid duration '-5s': expected a number followed by a unit, e.g. 30s or 1h30m");
    CHECK(error_of("1.5s") == "invalid duration '1.5s': expected a number followed by a unit, e.g. 30s or 1h30m");
    CHECK(error_of("1h30") == "invalid duration '1h30': the last number has no unit; use ms, s, m, h or d");
    CHECK(error_of("5 s") == "invalid duration '5 s': expected a number followed by a unit, e.g. 30s or 1h30m");
    CHECK(error_of("99999999999999999999d") == "invalid duration '99999999999999999999d': too large");
    CHECK(error_of("40000d") == "invalid duration '40000d': too large");
  }

  TEST_CASE("format") {
    CHECK(format_duration(Millis{90'000}) == "1m30s");
    CHECK(format_duration(Millis{1'500}) == "1s500ms");
    CHECK(format_duration(Millis{0}) == "0s");
    CHECK(format_duration(Millis{86'400'000}) == "1d");
    CHECK(format_duration(Millis{5'400'000}) == "1h30m");
    CHECK(format_duration(Millis{-2'000}) == "-2s");
  }

  TEST_CASE("format and parse round-trip") {
    for (long long value : {1LL, 999LL, 1000LL, 61'001LL, 3'600'000LL, 90'061'001LL, 864'000'000'123LL}) {
      CAPTURE(value);
      CHECK(ms(format_duration(Millis{value})) == value);
    }
  }
}
