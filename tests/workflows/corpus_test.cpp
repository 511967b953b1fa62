// Every tests/workflows/invalid/NN-name.yaml is parsed as "invalid/NN-name.yaml"
// and its diagnostics (color off, one per line group, joined by newlines)
// must equal NN-name.expected byte for byte. A first line
// "# kiln-test: -p NAME=VALUE ..." passes overrides. Adding a pair adds a
// case. KILN_UPDATE_EXPECTED=1 rewrites the .expected files (then review
// them with git diff).

#include "workflows/workflow_loader.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace kiln::workflows;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

Overrides overrides_from_header(const std::string& text) {
  Overrides out;
  const std::string marker = "# kiln-test:";
  if (text.rfind(marker, 0) != 0) {
    return out;
  }
  std::istringstream words(text.substr(marker.size(), text.find('\n') - marker.size()));
  std::string word;
  while (words >> word) {
    if (word == "-p" && words >> word) {
      const auto eq = word.find('=');
      out.emplace_back(word.substr(0, eq), eq == std::string::npos ? "" : word.substr(eq + 1));
    }
  }
  return out;
}

// The first differing line, for a message that points at the problem.
std::string first_difference(const std::string& expected, const std::string& actual) {
  std::istringstream e(expected);
  std::istringstream a(actual);
  std::string el;
  std::string al;
  for (int line = 1;; ++line) {
    const bool has_e = static_cast<bool>(std::getline(e, el));
    const bool has_a = static_cast<bool>(std::getline(a, al));
    if (!has_e && !has_a) {
      return "identical";
    }
    if (!has_e || !has_a || el != al) {
      return "line " + std::to_string(line) + ":\n- expected: " + (has_e ? el : "<end>") +
             "\n+ actual:   " + (has_a ? al : "<end>");
    }
  }
}

} // namespace

TEST_SUITE("workflows::InvalidCorpus") {
  TEST_CASE("each invalid workflow reports exactly its expected diagnostics") {
    const fs::path dir = fs::path(KILN_TEST_DATA) / "workflows" / "invalid";
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() == ".yaml") {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    REQUIRE(files.size() >= 45);
    const bool update = std::getenv("KILN_UPDATE_EXPECTED") != nullptr;
    for (const auto& file : files) {
      const std::string text = read_file(file);
      const std::string display = "invalid/" + file.filename().string();
      const LoadResult result = parse_workflow(text, display, overrides_from_header(text));
      std::string actual;
      for (const auto& d : result.diagnostics) {
        actual += format_diagnostic(d, false) + "\n";
      }
      fs::path expected_path = file;
      expected_path.replace_extension(".expected");
      if (update) {
        std::ofstream(expected_path, std::ios::binary) << actual;
      }
      const std::string expected = read_file(expected_path);
      INFO(display);
      CHECK_FALSE_MESSAGE(result.ok(), display << " unexpectedly loads");
      CHECK_MESSAGE(actual == expected, display << " differs at " << first_difference(expected, actual)
                                                << "\n--- full actual output:\n"
                                                << actual);
    }
  }
}
