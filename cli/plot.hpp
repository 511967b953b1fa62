#pragma once
// Metric curves drawn in text: a braille line plot for a terminal and a
// sparkline for a table cell.

#include <string>
#include <utility>
#include <vector>

namespace kiln::cli {

/// A line plot of (x = step, y = value) points in `width` x `height` cells of
/// braille (2 x 4 dots each), with the maximum labelled on the top row, the
/// minimum on the x-axis line under the plot, and the first and last x under
/// that: height + 2 lines, each label column padded to one width. Points
/// that are not finite are skipped; none left gives one line,
/// "(no finite values)". Each dot column spans the smallest to the largest
/// value that falls into it, so a spike among a million points stays
/// visible, and neighbouring columns are joined. A flat series lies on the
/// bottom row. Points are expected in x order (for joining; the spans do not
/// care). `color` paints the curve green and the axes dim.
std::vector<std::string> braille_plot(const std::vector<std::pair<double, double>>& points, int width, int height,
                                      bool color);

/// One of ▁▂▃▄▅▆▇█ per value, at most `width` characters: more values are
/// averaged in equal runs. Not-finite values show as a space; a flat
/// series as ▄.
std::string sparkline(const std::vector<double>& values, int width);

} // namespace kiln::cli
