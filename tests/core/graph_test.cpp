#include "core/graph.hpp"

#include <doctest/doctest.h>

using namespace kiln::core;

TEST_SUITE("core::Graph") {
  TEST_CASE("an acyclic graph has no cycle") {
    CHECK(find_cycle({{}, {0}, {0, 1}}).empty());
    CHECK(find_cycle({}).empty());
  }

  TEST_CASE("a cycle comes back as the whole path, closed") {
    // 0 needs 1, 1 needs 2, 2 needs 0.
    CHECK(find_cycle({{1}, {2}, {0}}) == std::vector<int>{0, 1, 2, 0});
    // A self-loop.
    CHECK(find_cycle({{}, {1}}) == std::vector<int>{1, 1});
    // The cycle need not include the first node reached.
    CHECK(find_cycle({{1}, {2}, {3}, {2}}) == std::vector<int>{2, 3, 2});
  }

  TEST_CASE("topological order keeps file order among ready steps") {
    CHECK(topological_order({{}, {}, {0}, {1, 2}}) == std::vector<int>{0, 1, 2, 3});
    CHECK(topological_order({{2}, {}, {1}}) == std::vector<int>{1, 2, 0});
  }

  TEST_CASE("critical path lengths count the longest chain of dependents") {
    // 0 -> 1 -> 2 and 0 -> 3: 0 has the chain 0,1,2 behind it.
    CHECK(critical_path_lengths({{}, {0}, {1}, {0}}) == std::vector<std::int64_t>{3, 2, 1, 1});
    CHECK(dependents_of({{}, {0}, {0}}) == Dependencies{{1, 2}, {}, {}});
  }

  TEST_CASE("a 10,000-step layered graph is handled without deep recursion") {
    Dependencies deps(10000);
    for (int i = 1; i < 10000; ++i) {
      deps[i] = {i - 1};
    }
    CHECK(find_cycle(deps).empty());
    CHECK(critical_path_lengths(deps)[0] == 10000);
    deps[0] = {9999};
    CHECK(find_cycle(deps).size() == 10001);
  }
}
