// The regression t(n) = a * n^b + c: least squares in log-log space for a and b at a given c,
// and a search over c for the least squared relative error.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/perfmodel.hpp"

namespace hetflow {
namespace {

struct Point {
  double log_n;
  double dx;  // log_n minus the mean of log_n
  double t;
};

struct Points {
  std::vector<Point> points;
  double mean_x = 0;
  double sxx = 0;  // sum of dx^2, the same for every c
};

struct Candidate {
  double c = 0;
  double a = 0;
  double b = 0;
  double error = std::numeric_limits<double>::infinity();
};

// a and b by least squares of log(t - c) on log(n); the error is the sum of squared relative
// errors of a * n^b + c against t.
Candidate fit_at(const Points& data, double c) {
  Candidate out;
  out.c = c;
  double sum_y = 0;
  // Sum of dx * (y - y0): dx sums to zero, so any y0 gives the same b; the first point's makes
  // it exactly 0 for constant data (dx sums to zero only to rounding: b was about -1e-16).
  double sxy = 0;
  const double y0 = std::log(data.points.front().t - c);
  for (const Point& p : data.points) {
    const double y = std::log(p.t - c);
    sum_y += y;
    sxy += p.dx * (y - y0);
  }
  out.b = sxy / data.sxx;
  const double log_a = sum_y / static_cast<double>(data.points.size()) - out.b * data.mean_x;
  out.a = std::exp(log_a);
  double error = 0;
  for (const Point& p : data.points) {
    const double relative = (std::exp(log_a + out.b * p.log_n) + c - p.t) / p.t;
    error += relative * relative;
  }
  out.error = std::isfinite(out.a) && std::isfinite(out.b) && std::isfinite(error)
                  ? error
                  : std::numeric_limits<double>::infinity();
  return out;
}

// Near-ties keep the smaller c (`best` is visited first), so constant data gets c = 0 rather
// than an arbitrary split of the constant between a and c.
bool better(const Candidate& challenger, const Candidate& best) {
  constexpr double kRelativeTie = 1e-9;
  constexpr double kAbsoluteTie = 1e-20;
  if (!std::isfinite(best.error)) return std::isfinite(challenger.error);
  return challenger.error < best.error - kRelativeTie * best.error - kAbsoluteTie;
}

}  // namespace

std::optional<double> PerfFit::operator()(std::size_t n) const noexcept {
  if (!valid) return std::nullopt;
  const double value = a * std::pow(static_cast<double>(n), b) + c;
  if (!std::isfinite(value)) return std::nullopt;
  return value;
}

PerfFit fit_power_law(std::span<const double> sizes, std::span<const double> seconds) {
  if (sizes.size() != seconds.size()) {
    throw InvalidArgument("hetflow::fit_power_law: " + std::to_string(sizes.size()) + " sizes but " +
                          std::to_string(seconds.size()) + " times; give one time per size");
  }
  Points data;
  std::vector<Point>& points = data.points;
  const std::size_t count = sizes.size();
  for (std::size_t i = 0; i < count; ++i) {
    const double n = sizes[i];
    const double t = seconds[i];
    if (n > 0 && t > 0 && std::isfinite(n) && std::isfinite(t)) points.push_back({std::log(n), 0, t});
  }
  PerfFit fit;
  fit.points = points.size();
  if (points.size() < 3) return fit;
  for (const Point& p : points) data.mean_x += p.log_n;
  data.mean_x /= static_cast<double>(points.size());
  for (Point& p : points) {
    p.dx = p.log_n - data.mean_x;
    data.sxx += p.dx * p.dx;
  }
  if (!(data.sxx > 0)) return fit;  // one size repeated: no slope to fit

  const double t_min =
      std::min_element(points.begin(), points.end(), [](const Point& x, const Point& y) { return x.t < y.t; })->t;
  // c in [0, t_min): an even grid, then points ever closer to t_min (constant-dominated data).
  constexpr int kGrid = 64;
  std::vector<double> grid;
  for (int k = 0; k < kGrid; ++k) grid.push_back(t_min * k / kGrid);
  for (int k = 2; k <= 7; ++k) grid.push_back(t_min * (1 - std::pow(10.0, -k)));
  std::sort(grid.begin(), grid.end());

  Candidate best;
  std::size_t best_index = 0;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    Candidate candidate = fit_at(data, grid[i]);
    if (better(candidate, best)) {
      best = candidate;
      best_index = i;
    }
  }
  if (!std::isfinite(best.error)) return fit;

  // Golden-section search between the neighbours of the best grid point.
  double low = best_index == 0 ? 0.0 : grid[best_index - 1];
  double high = best_index + 1 < grid.size() ? grid[best_index + 1] : t_min * (1 - 1e-9);
  const double ratio = (std::sqrt(5.0) - 1) / 2;
  double x1 = high - ratio * (high - low);
  double x2 = low + ratio * (high - low);
  Candidate f1 = fit_at(data, x1);
  Candidate f2 = fit_at(data, x2);
  for (int iteration = 0; iteration < 60 && high - low > 1e-10 * t_min; ++iteration) {
    if (f1.error <= f2.error) {
      high = x2;
      x2 = x1;
      f2 = f1;
      x1 = high - ratio * (high - low);
      f1 = fit_at(data, x1);
    } else {
      low = x1;
      x1 = x2;
      f1 = f2;
      x2 = low + ratio * (high - low);
      f2 = fit_at(data, x2);
    }
  }
  for (const Candidate& refined : {f1, f2}) {
    if (better(refined, best)) best = refined;
  }

  fit.a = best.a;
  fit.b = best.b;
  fit.c = best.c;
  fit.valid = std::isfinite(best.a) && best.a > 0 && std::isfinite(best.b) && std::isfinite(best.c);
  return fit;
}

}  // namespace hetflow
