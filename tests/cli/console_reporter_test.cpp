#include "cli/console_reporter.hpp"

#include "tests/core/fake_executor.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <string>

namespace {

/// What the reporter wrote to `file` so far.
std::string written(std::FILE* file) {
  std::fflush(file);
  std::string text;
  std::rewind(file);
  char buffer[4096];
  while (const std::size_t n = std::fread(buffer, 1, sizeof buffer, file)) {
    text.append(buffer, n);
  }
  return text;
}

} // namespace

TEST_SUITE("cli::ConsoleReporter") {
  TEST_CASE("the status line counts attempts against this session's retries, also in a resumed run") {
    kiln::core::Plan plan;
    kiln::core::PlannedStep train;
    train.id = "train";
    train.retries.limit = 1;
    plan.steps = {train};
    kiln::testing::FakeClock clock;
    std::FILE* file = std::tmpfile();
    REQUIRE(file != nullptr);
    kiln::cli::ConsoleReporter console(plan, 1, clock, kiln::cli::Terminal{true, false, 120}, file);
    kiln::core::LaunchSpec spec;
    kiln::core::JobStarted job;

    SUBCASE("a first session: attempts 1 and 2 of 2") {
      console.attempt_started(0, 1, spec, job, 0);
      CHECK(written(file).find("train (attempt 1/2)") != std::string::npos);
      console.attempt_started(0, 2, spec, job, 0);
      CHECK(written(file).find("train (attempt 2/2)") != std::string::npos);
    }
    SUBCASE("resumed after two attempts: attempts 3 and 4 of 4, never 3 of 2") {
      console.attempt_started(0, 3, spec, job, 0);
      const std::string text = written(file);
      CHECK(text.find("train (attempt 3/4)") != std::string::npos);
      CHECK(text.find("(attempt 3/2)") == std::string::npos);
      console.attempt_started(0, 4, spec, job, 0);
      CHECK(written(file).find("train (attempt 4/4)") != std::string::npos);
    }
    std::fclose(file);
  }

  TEST_CASE("the [n/N] counter counts the steps a resumed run kept as finished") {
    kiln::core::Plan plan;
    for (const char* id : {"prepare", "train", "report"}) {
      kiln::core::PlannedStep step;
      step.id = id;
      plan.steps.push_back(step);
    }
    kiln::testing::FakeClock clock;
    std::FILE* file = std::tmpfile();
    REQUIRE(file != nullptr);
    kiln::cli::ConsoleReporter console(plan, 1, clock, kiln::cli::Terminal{true, false, 120}, file);
    console.count_settled(1);
    console.attempt_started(1, 2, kiln::core::LaunchSpec{}, kiln::core::JobStarted{}, 0);
    CHECK(written(file).find("[1/3] train") != std::string::npos);
    console.step_finished(1, kiln::core::StepStatus::succeeded, "", 10);
    console.attempt_started(2, 1, kiln::core::LaunchSpec{}, kiln::core::JobStarted{}, 10);
    CHECK(written(file).find("[2/3] report") != std::string::npos);
    std::fclose(file);
  }
}
