#include "plugins/executors.hpp"

#include "plugins/local_executor.hpp"

#include <doctest/doctest.h>

#include <string_view>
#include <vector>

TEST_SUITE("plugins::executors") {

  TEST_CASE("local is compiled in") {
    CHECK(kiln::plugins::executor_names() == std::vector<std::string_view>{"local"});
    auto executor = kiln::plugins::make_executor("local");
    REQUIRE(executor != nullptr);
    CHECK(executor->name() == "local");
    CHECK(dynamic_cast<kiln::plugins::LocalExecutor*>(executor.get()) != nullptr);
  }

  TEST_CASE("an unknown name makes nothing") {
    CHECK(kiln::plugins::make_executor("slurm-typo") == nullptr);
    CHECK(kiln::plugins::make_executor("") == nullptr);
    // Unknown executors and bad handles are left alone, without a crash.
    kiln::plugins::stop_orphan("nope", "local:1:1");
    kiln::plugins::stop_orphan("local", "not a handle");
  }

} // TEST_SUITE
