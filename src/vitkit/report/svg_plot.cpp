#include "vitkit/report/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace vitkit {

namespace {

const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

// Tick label: as few digits as the value needs.
std::string tick_label(double v) {
  if (v == 0) return "0";
  char b[32];
  const double a = std::fabs(v);
  if (a >= 1e6 || a < 1e-3)
    std::snprintf(b, sizeof b, "%.0e", v);
  else
    std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

// Maps data values of one axis to pixels.
struct Scale {
  double lo = 0, hi = 1, p0 = 0, p1 = 1;  // data range -> pixel range
  bool log = false;
  double operator()(double v) const {
    const double a = log ? std::log10(lo) : lo, b = log ? std::log10(hi) : hi;
    const double t = ((log ? std::log10(v) : v) - a) / (b - a);
    return p0 + t * (p1 - p0);
  }
};

// The axis range: given, or the data's (with the reference lines), widened to ticks.
std::pair<double, double> fit_range(const PlotAxis& ax, const std::vector<double>& values) {
  if (ax.min != ax.max) return {ax.min, ax.max};
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values)
    if (usable(v, ax.log)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo)) return ax.log ? std::pair{1.0, 10.0} : std::pair{0.0, 1.0};
  if (ax.log) {
    lo = std::pow(10, std::floor(std::log10(lo)));
    hi = std::pow(10, std::ceil(std::log10(hi)));
    if (hi <= lo) hi = lo * 10;
    return {lo, hi};
  }
  if (hi == lo) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const std::vector<double> t = plot_ticks(lo, hi, false);
  const double step = t.size() > 1 ? t[1] - t[0] : (hi - lo);
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step};
}

struct Box {
  double x0, y0, x1, y1;
};

// id: unique within the document (the clip path's).
void panel(std::string& svg, const Plot& p, double ox, int width, int height, int& color_index, int id) {
  bool has_right = false;
  for (auto& s : p.series) has_right = has_right || s.right;
  for (auto& l : p.lines) has_right = has_right || l.right;
  const double left = 64, right = has_right ? 64 : 20, top = p.title.empty() ? 16 : 36, bottom = 50;
  const Box area{ox + left, top, ox + width - right, height - bottom};
  std::vector<double> xs, ys, y2s;
  for (auto& s : p.series) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    (s.right ? y2s : ys).insert((s.right ? y2s : ys).end(), s.y.begin(), s.y.end());
  }
  for (double t : p.xticks) xs.push_back(t);
  for (auto& l : p.lines) (l.right ? y2s : ys).push_back(l.y);
  auto [xl, xh] = fit_range(p.x, xs);
  auto [yl, yh] = fit_range(p.y, ys);
  auto [y2l, y2h] = fit_range(p.y2, y2s);
  Scale sx{xl, xh, area.x0, area.x1, p.x.log}, sy{yl, yh, area.y1, area.y0, p.y.log},
      sy2{y2l, y2h, area.y1, area.y0, p.y2.log};

  svg += "<g font-family=\"sans-serif\" font-size=\"11\">\n";
  if (!p.title.empty())
    svg += "<text x=\"" + num((area.x0 + area.x1) / 2) +
           "\" y=\"20\" text-anchor=\"middle\" font-size=\"13\" "
           "font-weight=\"bold\">" +
           esc(p.title) + "</text>\n";
  // Grid and ticks.
  auto xticks = p.xticks.empty() ? plot_ticks(xl, xh, p.x.log) : p.xticks;
  for (double t : xticks) {
    if (t < xl - 1e-12 || t > xh + 1e-12) continue;
    const double x = sx(t);
    svg += "<line x1=\"" + num(x) + "\" y1=\"" + num(area.y0) + "\" x2=\"" + num(x) + "\" y2=\"" + num(area.y1) +
           "\" stroke=\"#e5e5e5\"/>\n";
    svg += "<text x=\"" + num(x) + "\" y=\"" + num(area.y1 + 15) + "\" text-anchor=\"middle\">" + esc(tick_label(t)) +
           "</text>\n";
  }
  for (double t : plot_ticks(yl, yh, p.y.log)) {
    const double y = sy(t);
    svg += "<line x1=\"" + num(area.x0) + "\" y1=\"" + num(y) + "\" x2=\"" + num(area.x1) + "\" y2=\"" + num(y) +
           "\" stroke=\"#e5e5e5\"/>\n";
    svg += "<text x=\"" + num(area.x0 - 6) + "\" y=\"" + num(y + 4) + "\" text-anchor=\"end\">" + esc(tick_label(t)) +
           "</text>\n";
  }
  if (has_right)
    for (double t : plot_ticks(y2l, y2h, p.y2.log)) {
      const double y = sy2(t);
      svg += "<line x1=\"" + num(area.x1) + "\" y1=\"" + num(y) + "\" x2=\"" + num(area.x1 + 4) + "\" y2=\"" + num(y) +
             "\" stroke=\"#333\"/>\n";
      svg += "<text x=\"" + num(area.x1 + 7) + "\" y=\"" + num(y + 4) + "\">" + esc(tick_label(t)) + "</text>\n";
    }
  svg += "<rect x=\"" + num(area.x0) + "\" y=\"" + num(area.y0) + "\" width=\"" + num(area.x1 - area.x0) +
         "\" height=\"" + num(area.y1 - area.y0) + "\" fill=\"none\" stroke=\"#333\"/>\n";
  // Axis labels.
  svg += "<text x=\"" + num((area.x0 + area.x1) / 2) + "\" y=\"" + num(height - 12.0) + "\" text-anchor=\"middle\">" +
         esc(p.x.label) + "</text>\n";
  const double my = (area.y0 + area.y1) / 2;
  svg += "<text transform=\"translate(" + num(ox + 16) + "," + num(my) + ") rotate(-90)\" text-anchor=\"middle\">" +
         esc(p.y.label) + "</text>\n";
  if (has_right)
    svg += "<text transform=\"translate(" + num(ox + width - 12.0) + "," + num(my) +
           ") rotate(90)\" text-anchor=\"middle\">" + esc(p.y2.label) + "</text>\n";
  // Clip series to the plot area.
  const std::string clip = "clip" + std::to_string(id);
  svg += "<clipPath id=\"" + clip + "\"><rect x=\"" + num(area.x0) + "\" y=\"" + num(area.y0) + "\" width=\"" +
         num(area.x1 - area.x0) + "\" height=\"" + num(area.y1 - area.y0) + "\"/></clipPath>\n";
  for (auto& l : p.lines) {
    const Scale& s = l.right ? sy2 : sy;
    const bool lg = l.right ? p.y2.log : p.y.log;
    if (!usable(l.y, lg)) continue;
    const double y = s(l.y);
    svg += "<line x1=\"" + num(area.x0) + "\" y1=\"" + num(y) + "\" x2=\"" + num(area.x1) + "\" y2=\"" + num(y) +
           "\" stroke=\"#555\" stroke-dasharray=\"2,3\"/>\n";
    if (!l.label.empty())
      svg += "<text x=\"" + num(area.x1 - 4) + "\" y=\"" + num(y - 4) + "\" text-anchor=\"end\" fill=\"#555\">" +
             esc(l.label) + "</text>\n";
  }
  // Series.
  std::vector<std::pair<std::string, const PlotSeries*>> legend;
  std::vector<std::pair<double, double>> points;  // pixels, for the legend placement
  for (auto& s : p.series) {
    const std::string color = s.color.empty() ? kPalette[color_index++ % 10] : s.color;
    const Scale& ys_ = s.right ? sy2 : sy;
    const bool lg = s.right ? p.y2.log : p.y.log;
    std::string path;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!usable(s.x[i], p.x.log) || !usable(s.y[i], lg)) continue;
      const double px = sx(s.x[i]), py = ys_(s.y[i]);
      if (!path.empty()) path += ' ';
      path += num(px);
      path += ',';
      path += num(py);
      points.push_back({px, py});
    }
    svg += "<g clip-path=\"url(#" + clip + ")\">\n";
    if (s.lines && !path.empty())
      svg += "<polyline points=\"" + path + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.8\"" +
             (s.dashed ? " stroke-dasharray=\"6,4\"" : "") + "/>\n";
    if (s.markers)
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (!usable(s.x[i], p.x.log) || !usable(s.y[i], lg)) continue;
        svg +=
            "<circle cx=\"" + num(sx(s.x[i])) + "\" cy=\"" + num(ys_(s.y[i])) + "\" r=\"3\" fill=\"" + color + "\"/>\n";
      }
    svg += "</g>\n";
    if (!s.name.empty()) legend.push_back({color, &s});
  }
  if (!legend.empty()) {
    // The corner whose legend box covers the fewest points.
    double wmax = 0;
    for (auto& [c, s] : legend) wmax = std::max(wmax, 6.5 * double(s->name.size()));
    const double lw = wmax + 40, lh = 16.0 * double(legend.size()) + 8;
    Box best{};
    size_t best_n = SIZE_MAX;
    for (int corner = 0; corner < 4; ++corner) {
      const double x0 = corner % 2 ? area.x0 + 6 : area.x1 - 6 - lw;
      const double y0 = corner < 2 ? area.y0 + 6 : area.y1 - 6 - lh;
      const Box b{x0, y0, x0 + lw, y0 + lh};
      size_t n = 0;
      for (auto& [px, py] : points) n += px >= b.x0 - 4 && px <= b.x1 + 4 && py >= b.y0 - 4 && py <= b.y1 + 4;
      if (n < best_n) best_n = n, best = b;
    }
    svg += "<rect x=\"" + num(best.x0) + "\" y=\"" + num(best.y0) + "\" width=\"" + num(lw) + "\" height=\"" + num(lh) +
           "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n";
    for (size_t i = 0; i < legend.size(); ++i) {
      const double y = best.y0 + 14 + 16.0 * double(i);
      const PlotSeries& s = *legend[i].second;
      svg += "<line x1=\"" + num(best.x0 + 6) + "\" y1=\"" + num(y - 4) + "\" x2=\"" + num(best.x0 + 26) + "\" y2=\"" +
             num(y - 4) + "\" stroke=\"" + legend[i].first + "\" stroke-width=\"2\"" +
             (s.dashed ? " stroke-dasharray=\"6,4\"" : "") + "/>\n";
      if (s.markers)
        svg += "<circle cx=\"" + num(best.x0 + 16) + "\" cy=\"" + num(y - 4) + "\" r=\"3\" fill=\"" + legend[i].first +
               "\"/>\n";
      svg += "<text x=\"" + num(best.x0 + 32) + "\" y=\"" + num(y) + "\">" + esc(s.name) + (s.right ? " (right)" : "") +
             "</text>\n";
    }
  }
  svg += "</g>\n";
}

}  // namespace

std::vector<double> plot_ticks(double lo, double hi, bool log, int target) {
  std::vector<double> t;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return {lo};
  if (log) {
    const int a = int(std::floor(std::log10(lo) + 1e-9)), b = int(std::ceil(std::log10(hi) - 1e-9));
    const bool fine = b - a <= 2;
    for (int e = a; e <= b; ++e)
      for (double m : fine ? std::vector<double>{1, 2, 5} : std::vector<double>{1}) {
        const double v = m * std::pow(10.0, e);
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t.push_back(v);
      }
    return t;
  }
  const double raw = (hi - lo) / std::max(1, target - 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw * 0.999) {
      step = m * mag;
      break;
    }
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

std::string render_svg(const std::vector<Plot>& panels, int width, int height) {
  return render_svg_grid(panels, int(std::max<size_t>(1, panels.size())), width, height);
}

std::string render_svg_grid(const std::vector<Plot>& panels, int columns, int width, int height) {
  columns = std::max(1, columns);
  const int n = int(std::max<size_t>(1, panels.size()));
  const int cols = std::min(columns, n), rows = (n + cols - 1) / cols;
  const int total_w = width * cols, total_h = height * rows;
  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    std::to_string(total_w) + "\" height=\"" + std::to_string(total_h) + "\" viewBox=\"0 0 " +
                    std::to_string(total_w) + " " + std::to_string(total_h) + "\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  int color = 0;
  for (size_t i = 0; i < panels.size(); ++i) {
    color = 0;
    const int row = int(i) / cols, col = int(i) % cols;
    if (row > 0) svg += "<g transform=\"translate(0," + std::to_string(row * height) + ")\">\n";
    panel(svg, panels[i], double(col) * width, width, height, color, int(i));
    if (row > 0) svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace vitkit
