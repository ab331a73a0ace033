// Small self-contained SVG plots for reports: line and scatter series on linear
// or log axes, with ticks, labels, a legend, reference lines and an optional
// second y axis; several panels side by side in one figure.
#pragma once
#include <string>
#include <vector>

namespace vitkit {

struct PlotSeries {
  std::string name;          // legend entry ("" for none)
  std::vector<double> x, y;  // non-finite points (and <= 0 on a log axis) are skipped
  bool lines = true;         // connect the points
  bool markers = true;       // a circle on each point (scatter: lines = false)
  bool right = false;        // against the right y axis
  bool dashed = false;
  std::string color;  // "" picks the next palette colour
};

// A horizontal reference line (e.g. a threshold), labelled at its right end.
struct PlotLine {
  double y = 0;
  std::string label;
  bool right = false;
};

struct PlotAxis {
  std::string label;
  bool log = false;
  double min = 0, max = 0;  // min == max: fitted to the data
};

struct Plot {
  std::string title;
  PlotAxis x, y, y2;           // y2 is drawn when a series uses it
  std::vector<double> xticks;  // explicit x ticks (empty: automatic)
  std::vector<PlotSeries> series;
  std::vector<PlotLine> lines;
};

// An SVG document with the panels side by side, each width x height pixels.
std::string render_svg(const std::vector<Plot>& panels, int width = 520, int height = 380);
// The panels in rows of `columns` (>= 1), left to right, top to bottom.
std::string render_svg_grid(const std::vector<Plot>& panels, int columns, int width = 520, int height = 380);

// Tick positions for [lo, hi]: 1-2-5 steps (about `target` of them), or powers
// of ten (with 2 and 5 between when the range is short) on a log axis.
std::vector<double> plot_ticks(double lo, double hi, bool log, int target = 6);

}  // namespace vitkit
