// The regression t(n) = a * n^b + c: least squares in log-log space for a and b at a given c,
// and a search over c for the least squared relative error.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "hetflow/perfmodel.hpp"

namespace hetflow {
namespace {

struct Point {
  double log_n;
  double n;
  double t;
};

struct Candidate {
  double c = 0;
  double a = 0;
  double b = 0;
  double error = std::numeric_limits<double>::infinity();
};

// a and b by least squares of log(t - c) on log(n); the error is the sum of squared relative
// errors of a * n^b + c against t.
Candidate fit_at(const std::vector<Point>& points, double c) {
  Candidate out;
  out.c = c;
  const double count = static_cast<double>(points.size());
  double mean_x = 0;
  double mean_y = 0;
  for (const Point& p : points) {
    mean_x += p.log_n;
    mean_y += std::log(p.t - c);
  }
  mean_x /= count;
  mean_y /= count;
  double sxx = 0;
  double sxy = 0;
  for (const Point& p : points) {
    const double dx = p.log_n - mean_x;
    sxx += dx * dx;
    sxy += dx * (std::log(p.t - c) - mean_y);
  }
  out.b = sxy / sxx;
  out.a = std::exp(mean_y - out.b * mean_x);
  double error = 0;
  for (const Point& p : points) {
    const double relative = (out.a * std::pow(p.n, out.b) + c - p.t) / p.t;
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
  std::vector<Point> points;
  const std::size_t count = std::min(sizes.size(), seconds.size());
  for (std::size_t i = 0; i < count; ++i) {
    const double n = sizes[i];
    const double t = seconds[i];
    if (n > 0 && t > 0 && std::isfinite(n) && std::isfinite(t)) points.push_back({std::log(n), n, t});
  }
  PerfFit fit;
  fit.points = points.size();
  if (points.size() < 3) return fit;
  const auto [lowest, highest] =
      std::minmax_element(points.begin(), points.end(), [](const Point& x, const Point& y) { return x.n < y.n; });
  if (lowest->n == highest->n) return fit;  // one size repeated: no slope to fit

  const double t_min = std::min_element(points.begin(), points.end(), [](const Point& x, const Point& y) {
                         return x.t < y.t;
                       })->t;
  // c in [0, t_min): an even grid, then points ever closer to t_min (constant-dominated data).
  constexpr int kGrid = 64;
  std::vector<double> grid;
  for (int k = 0; k < kGrid; ++k) grid.push_back(t_min * k / kGrid);
  for (double gap = 1e-2; gap >= 1e-7; gap /= 10) grid.push_back(t_min * (1 - gap));
  std::sort(grid.begin(), grid.end());

  Candidate best;
  std::size_t best_index = 0;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    Candidate candidate = fit_at(points, grid[i]);
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
  Candidate f1 = fit_at(points, x1);
  Candidate f2 = fit_at(points, x2);
  for (int iteration = 0; iteration < 60 && high - low > 1e-15 * t_min; ++iteration) {
    if (f1.error <= f2.error) {
      high = x2;
      x2 = x1;
      f2 = f1;
      x1 = high - ratio * (high - low);
      f1 = fit_at(points, x1);
    } else {
      low = x1;
      x1 = x2;
      f1 = f2;
      x2 = low + ratio * (high - low);
      f2 = fit_at(points, x2);
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
