// Mutated versions of a valid workflow must never crash the loader, and
// every diagnostic must point inside the file. Run under -DKILN_SANITIZE=ON
// too. Also: a generated 10,000-step workflow must load fast.

#include "workflows/workflow_loader.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

using namespace kiln::workflows;

namespace {

std::string iris_text() {
  std::ifstream in(std::string(KILN_TEST_DATA) + "/workflows/valid/iris.yaml", std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

int line_count(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n')) + 1;
}

void check_sane(const std::string& text, const LoadResult& result) {
  CHECK(result.ok() == result.diagnostics.empty());
  for (const auto& d : result.diagnostics) {
    CHECK(d.line >= 0);
    CHECK(d.line <= line_count(text));
    CHECK(d.length >= 1);
    CHECK(!d.message.empty());
    // Formatting must hold up for any diagnostic.
    CHECK(!format_diagnostic(d, true).empty());
  }
}

} // namespace

TEST_SUITE("workflows::Robustness") {
  TEST_CASE("truncation at every offset") {
    const std::string text = iris_text();
    REQUIRE(!text.empty());
    for (std::size_t n = 0; n <= text.size(); ++n) {
      const std::string cut = text.substr(0, n);
      check_sane(cut, parse_workflow(cut, "t.yaml", {{"tag", "x"}}));
    }
  }

  TEST_CASE("random byte flips, insertions and deletions with a fixed seed") {
    const std::string text = iris_text();
    std::mt19937 rng(20240607);
    const std::string interesting = ":-[]{}&*!|>'\"#%@`,?\t\n \\$";
    for (int round = 0; round < 3000; ++round) {
      std::string mutated = text;
      const int edits = 1 + static_cast<int>(rng() % 8);
      for (int e = 0; e < edits && !mutated.empty(); ++e) {
        const std::size_t at = rng() % mutated.size();
        switch (rng() % 4) {
        case 0: mutated[at] = static_cast<char>(rng() % 256); break;
        case 1: mutated[at] = interesting[rng() % interesting.size()]; break;
        case 2: mutated.insert(at, 1, interesting[rng() % interesting.size()]); break;
        default: mutated.erase(at, 1 + rng() % 16); break;
        }
      }
      check_sane(mutated, parse_workflow(mutated, "t.yaml", {{"tag", "x"}}));
    }
  }

  TEST_CASE("hostile inputs") {
    const std::vector<std::string> inputs{
        "",
        std::string(100000, '['),
        std::string(100000, '{'),
        "a: " + std::string(5000, '[') + std::string(5000, ']'),
        [] {
          std::string s;
          for (int i = 0; i < 3000; ++i) {
            s += std::string(static_cast<std::size_t>(i % 200), ' ') + "- \n";
          }
          return s;
        }(),
        "a: &a [1]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b, *b]\n",
        "<<: {name: x}\n",
        "!!binary abc",
        "name: !<tag:yaml.org,2002:str> x\nsteps: !!map {a: {run: !custom x}}\n",
        std::string("\xff\xfe\x00\x00", 4),
        std::string("\x00\x00\xfe\xff", 4),
        "\xef\xbb\xbfname: x\nsteps: {a: {run: go}}\n",
        "name: x\nsteps:\n\ta: {run: go}\n",
        "%YAML 1.2\n%TAG ! tag:example.com:\n---\nname: x\n",
        "--- |\n  text\n",
        "? [a, b]\n: c\n",
        "name: \"\\u0000\\x00\"\nsteps: {a: {run: \"\\uD800\"}}\n",
        "name: x\nsteps: {a: {run: \"${{\"}}\n",
        "...\n...\n---\n---\n",
        std::string(1000, '\n') + "\t",
    };
    for (const auto& input : inputs) {
      check_sane(input, parse_workflow(input, "t.yaml"));
    }
  }
}

TEST_SUITE("workflows::Performance") {
  TEST_CASE("10,000 steps with needs and a run line") {
    std::string text = "name: big\nparams:\n  n: 3\nsteps:\n";
    constexpr int k_steps = 10'000;
    for (int i = 0; i < k_steps; ++i) {
      text += "  s" + std::to_string(i) + ":\n";
      if (i > 0) {
        text += "    needs: [s" + std::to_string(i - 1) + (i > 2 ? ", s" + std::to_string(i / 2) : "") + "]\n";
      }
      text += "    run: python3 work.py --part " + std::to_string(i) + " --n ${{ params.n }}\n";
    }
    // CPU time rather than wall time: the machine may be shared.
    const std::clock_t start = std::clock();
    const LoadResult result = parse_workflow(text, "big.yaml");
    const std::chrono::milliseconds elapsed{(std::clock() - start) * 1000 / CLOCKS_PER_SEC};
    REQUIRE(result.ok());
    CHECK(result.workflow->steps.size() == k_steps);
    MESSAGE("10,000 steps (" << text.size() << " bytes) loaded in " << elapsed.count() << " ms of CPU");
    // A guard against quadratic behaviour (which would take seconds), loose
    // enough for a loaded shared machine. Release measures ~75 ms of CPU
    // here (yaml-cpp took ~150 ms); see workflows/yaml_tree.hpp.
#if defined(__SANITIZE_ADDRESS__)
    CHECK(elapsed.count() < 10'000);
#elif defined(NDEBUG)
    CHECK(elapsed.count() < 500);
#else
    CHECK(elapsed.count() < 2'000);
#endif
  }
}
