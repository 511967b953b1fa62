#include "cli/plot.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

using kiln::cli::braille_plot;
using kiln::cli::sparkline;

namespace {

using Points = std::vector<std::pair<double, double>>;

constexpr double k_nan = std::numeric_limits<double>::quiet_NaN();
constexpr double k_inf = std::numeric_limits<double>::infinity();

/// A line cut into its characters (UTF-8 code points).
std::vector<std::string> characters(const std::string& line) {
  std::vector<std::string> out;
  for (char c : line) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
      out.emplace_back();
    }
    out.back() += c;
  }
  return out;
}

std::string repeat(const std::string& text, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) {
    out += text;
  }
  return out;
}

} // namespace

TEST_SUITE("cli::braille_plot") {
  TEST_CASE("an increasing series in 2x1 cells") {
    // 4 dot columns by 4 dot rows: one dot per point, bottom left to top right.
    const std::vector<std::string> expected{
        "4 ┤⡠⠊",
        "1 └──",
        "   0 3",
    };
    CHECK(braille_plot({{0, 1}, {1, 2}, {2, 3}, {3, 4}}, 2, 1, false) == expected);
  }

  TEST_CASE("steps far apart are joined, and labels and axes follow the size") {
    // 8 dot columns by 8 dot rows: the points land in the corners, the
    // columns between get the interpolated rows.
    const std::vector<std::string> expected{
        "0.5 ┤  ⡠⠊",
        "    │⡠⠊  ",
        " -1 └────",
        "     10 40",
    };
    CHECK(braille_plot({{10, -1}, {40, 0.5}}, 4, 2, false) == expected);
  }

  TEST_CASE("a flat series lies on the axis with one label") {
    const std::vector<std::string> expected{
        "  ┤   ",
        "  │⣀⣀⣀",
        "5 └───",
        "   0 2",
    };
    CHECK(braille_plot({{0, 5}, {1, 5}, {2, 5}}, 3, 2, false) == expected);
  }

  TEST_CASE("one point") {
    const std::vector<std::string> expected{
        "    ┤⡀ ",
        "0.7 └──",
        "     3",
    };
    CHECK(braille_plot({{3, 0.7}}, 2, 1, false) == expected);
  }

  TEST_CASE("not-finite values are skipped") {
    CHECK(braille_plot({{0, 1}, {1, k_nan}, {2, 2}, {3, k_inf}, {k_nan, 9}, {3, 3}, {4, 4}}, 2, 1, false) ==
          braille_plot({{0, 1}, {2, 2}, {3, 3}, {4, 4}}, 2, 1, false));
    CHECK(braille_plot({{0, k_nan}, {1, -k_inf}}, 10, 3, false) == std::vector<std::string>{"(no finite values)"});
    CHECK(braille_plot({}, 10, 3, false) == std::vector<std::string>{"(no finite values)"});
  }

  TEST_CASE("a spike among a million points stays visible; size as asked, quickly") {
    Points points;
    points.reserve(1'000'000);
    for (int i = 0; i < 1'000'000; ++i) {
      points.emplace_back(i, -1.0 + 1.0 / (1 + i * 0.001));
    }
    points[500'123].second = 50;
    const auto start = std::chrono::steady_clock::now();
    auto lines = braille_plot(points, 60, 10, false);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed < std::chrono::milliseconds(500));
    REQUIRE(lines.size() == 12);
    CHECK(lines[0].rfind("    50 ┤", 0) == 0);
    CHECK(lines[10].rfind("-0.999 └", 0) == 0);
    CHECK(lines[11] == "        0" + std::string(60 - 7, ' ') + "999999");
    // The spike, at step 500,123 of 999,999, is dot column 60 of 120, the
    // left half of cell 30: a span from the curve to the top.
    for (int row = 0; row < 10; ++row) {
      auto cells = characters(lines[row]);
      REQUIRE(cells.size() == 6 + 2 + 60);
      CHECK(cells[8 + 30] != " ");
      if (row < 9) {
        CHECK(cells[8 + 30] == "⡇");
      }
    }
    auto top = characters(lines[0]);
    CHECK(std::count(top.begin(), top.end(), " ") == 5 + 59); // "    50 ┤" and the cells
  }

  TEST_CASE("colour only when asked") {
    auto plain = braille_plot({{0, 1}, {1, 2}}, 4, 2, false);
    auto painted = braille_plot({{0, 1}, {1, 2}}, 4, 2, true);
    for (const auto& line : plain) {
      CHECK(line.find('\033') == std::string::npos);
    }
    CHECK(painted[0].find("\033[32m") != std::string::npos);
  }
}

TEST_SUITE("cli::sparkline") {
  TEST_CASE("one level per value") {
    CHECK(sparkline({0, 1, 2, 3, 4, 5, 6, 7}, 20) == "▁▂▃▄▅▆▇█");
    CHECK(sparkline({3, -1, 3}, 20) == "█▁█");
  }

  TEST_CASE("more values than width are averaged in runs") {
    CHECK(sparkline({0, 0, 6, 6, 14, 14}, 3) == "▁▄█");
    CHECK(sparkline(std::vector<double>(1'000'000, 1.0), 30) == repeat("▄", 30));
    CHECK(sparkline({1, 2, 3, 4, 5, 6, 7}, 2) == "▁█"); // runs of 3 and 4
  }

  TEST_CASE("flat, empty and not finite") {
    CHECK(sparkline({2, 2, 2}, 10) == "▄▄▄");
    CHECK(sparkline({1, k_nan, 2}, 10) == "▁ █");
    CHECK(sparkline({}, 10) == "");
    CHECK(sparkline({1, 2}, 0) == "");
  }
}
