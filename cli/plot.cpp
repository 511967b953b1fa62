// Braille plot: the plot area is a grid of dots, width*2 columns by
// height*4 rows. Each point maps to a dot column and a dot row by linear
// scaling; each column keeps the lowest and highest row it received and the
// rows of its first and last point. Empty columns between two filled ones
// get the interpolated row, and two neighbours whose rows are more than one
// apart each extend half way towards the other, so the curve is unbroken.
// One pass over the points, one over the columns: O(n + width*height).

#include "cli/plot.hpp"

#include "cli/console.hpp"
#include "cli/output.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

namespace kiln::cli {

namespace {

/// Where `value` falls in [lo, hi], scaled to 0..steps and rounded; 0 when
/// the range is empty. Halved first so hi - lo cannot overflow.
int scale(double value, double lo, double hi, int steps) {
  const double range = hi / 2 - lo / 2;
  if (!(range > 0)) {
    return 0;
  }
  const double t = (value / 2 - lo / 2) / range;
  return std::clamp(static_cast<int>(std::lround(t * steps)), 0, steps);
}

struct Column {
  int lo = 0;
  int hi = 0;
  int first = 0;
  int last = 0;
  bool filled = false;
};

/// Labels for the two ends of the y range: the fewest significant digits
/// (at least 4) that tell them apart.
std::pair<std::string, std::string> range_labels(double lo, double hi) {
  char a[40];
  char b[40];
  for (int digits = 4;; ++digits) {
    std::snprintf(a, sizeof a, "%.*g", digits, lo);
    std::snprintf(b, sizeof b, "%.*g", digits, hi);
    if (lo == hi || std::string_view(a) != b || digits >= 17) {
      return {a, b};
    }
  }
}

/// Steps are integers: 0, 1000000; anything else as %g.
std::string x_label(double x) {
  if (x == std::floor(x) && std::fabs(x) < 1e15) {
    return std::to_string(static_cast<long long>(x));
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

/// U+2800 plus the dot bits, in UTF-8.
void append_braille(std::string& out, unsigned bits) {
  out += static_cast<char>(0xE2);
  out += static_cast<char>(0xA0 | (bits >> 6));
  out += static_cast<char>(0x80 | (bits & 0x3F));
}

std::string pad_left(const std::string& text, std::size_t width) {
  return std::string(width - std::min(width, text.size()), ' ') + text;
}

} // namespace

std::vector<std::string> braille_plot(const std::vector<std::pair<double, double>>& points, int width, int height,
                                      bool color) {
  width = std::max(width, 1);
  height = std::max(height, 1);
  double x_lo = HUGE_VAL;
  double x_hi = -HUGE_VAL;
  double y_lo = HUGE_VAL;
  double y_hi = -HUGE_VAL;
  for (const auto& [x, y] : points) {
    if (std::isfinite(x) && std::isfinite(y)) {
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }
  if (x_lo > x_hi) {
    return {"(no finite values)"};
  }

  // Dot rows count from the bottom.
  const int dot_columns = width * 2;
  const int dot_rows = height * 4;
  std::vector<Column> columns(static_cast<std::size_t>(dot_columns));
  for (const auto& [x, y] : points) {
    if (!std::isfinite(x) || !std::isfinite(y)) {
      continue;
    }
    auto& c = columns[static_cast<std::size_t>(scale(x, x_lo, x_hi, dot_columns - 1))];
    const int row = scale(y, y_lo, y_hi, dot_rows - 1);
    if (!c.filled) {
      c = {row, row, row, row, true};
    } else {
      c.lo = std::min(c.lo, row);
      c.hi = std::max(c.hi, row);
      c.last = row;
    }
  }
  std::optional<int> previous;
  for (int k = 0; k < dot_columns; ++k) {
    if (!columns[k].filled) {
      continue;
    }
    if (previous && *previous + 1 < k) {
      const int p = *previous;
      const double from = columns[p].last;
      const double to = columns[k].first;
      for (int j = p + 1; j < k; ++j) {
        const int row = static_cast<int>(std::lround(from + (to - from) * (j - p) / (k - p)));
        columns[j] = {row, row, row, row, true};
      }
    }
    previous = k;
  }
  for (int k = 1; k < dot_columns; ++k) {
    auto& left = columns[k - 1];
    auto& right = columns[k];
    if (!left.filled || !right.filled) {
      continue;
    }
    const int a = left.last;
    const int b = right.first;
    const int mid = (a + b) / 2; // a, b >= 0: rounds down
    if (b > a + 1) {
      left.hi = std::max(left.hi, mid);
      right.lo = std::min(right.lo, mid + 1);
    } else if (a > b + 1) {
      left.lo = std::min(left.lo, mid + 1);
      right.hi = std::max(right.hi, mid);
    }
  }

  // Braille dot bits by (dot column in the cell, dot row from the cell's top).
  static constexpr unsigned k_bits[2][4] = {{0x01, 0x02, 0x04, 0x40}, {0x08, 0x10, 0x20, 0x80}};
  std::vector<unsigned> cells(static_cast<std::size_t>(width * height), 0);
  for (int k = 0; k < dot_columns; ++k) {
    const auto& c = columns[k];
    if (!c.filled) {
      continue;
    }
    for (int row = c.lo; row <= c.hi; ++row) {
      const int from_top = dot_rows - 1 - row;
      cells[static_cast<std::size_t>(from_top / 4 * width + k / 2)] |= k_bits[k % 2][from_top % 4];
    }
  }

  auto [lo_label, hi_label] = range_labels(y_lo, y_hi);
  if (y_lo == y_hi) {
    hi_label.clear(); // the one value is on the axis line
  }
  const std::size_t label_width = std::max(lo_label.size(), hi_label.size());
  std::vector<std::string> lines;
  lines.reserve(static_cast<std::size_t>(height) + 2);
  for (int r = 0; r < height; ++r) {
    std::string curve;
    for (int col = 0; col < width; ++col) {
      const unsigned bits = cells[static_cast<std::size_t>(r * width + col)];
      if (bits == 0) {
        curve += ' ';
      } else {
        append_braille(curve, bits);
      }
    }
    const std::string label = r == 0 ? pad_left(hi_label, label_width) : std::string(label_width, ' ');
    lines.push_back(paint(label + (r == 0 ? " ┤" : " │"), Style::dim, color) + paint(curve, Style::green, color));
  }
  std::string axis;
  for (int col = 0; col < width; ++col) {
    axis += "─";
  }
  lines.push_back(paint(pad_left(lo_label, label_width) + " └" + axis, Style::dim, color));
  const std::string first = x_label(x_lo);
  const std::string last = x_label(x_hi);
  std::string steps = first;
  if (x_hi > x_lo) {
    // The last step ends under the last column, or one space after the first.
    const std::size_t used = first.size() + last.size();
    const auto columns_wide = static_cast<std::size_t>(width);
    steps += std::string(columns_wide > used ? columns_wide - used : 1, ' ') + last;
  }
  lines.push_back(paint(std::string(label_width + 2, ' ') + steps, Style::dim, color));
  return lines;
}

std::string sparkline(const std::vector<double>& values, int width) {
  static constexpr const char* k_levels[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  if (values.empty() || width < 1) {
    return {};
  }
  const std::size_t n = values.size();
  const std::size_t buckets = std::min(n, static_cast<std::size_t>(width));
  std::vector<double> sum(buckets, 0.0);
  std::vector<std::size_t> count(buckets, 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isfinite(values[i])) {
      const std::size_t b = i * buckets / n;
      sum[b] += values[i];
      ++count[b];
    }
  }
  double lo = HUGE_VAL;
  double hi = -HUGE_VAL;
  for (std::size_t b = 0; b < buckets; ++b) {
    if (count[b] > 0) {
      sum[b] /= static_cast<double>(count[b]);
      lo = std::min(lo, sum[b]);
      hi = std::max(hi, sum[b]);
    }
  }
  std::string out;
  for (std::size_t b = 0; b < buckets; ++b) {
    if (count[b] == 0) {
      out += ' ';
    } else if (lo == hi) {
      out += k_levels[3];
    } else {
      out += k_levels[scale(sum[b], lo, hi, 7)];
    }
  }
  return out;
}

} // namespace kiln::cli
