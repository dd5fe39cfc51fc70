// Per (architecture, size) statistics: Welford's running mean and variance, their exact merge,
// and the robust estimate over the recent samples.
#include "perfmodel/history.hpp"

#include <algorithm>
#include <cmath>

namespace hetflow::detail {
namespace {

constexpr double kMadToSigma = 1.4826;  // MAD * this estimates the standard deviation of a normal
constexpr double kRejectSigmas = 3.0;

double median_of(std::span<double> values) {
  const std::size_t n = values.size();
  auto middle = values.begin() + static_cast<std::ptrdiff_t>(n / 2);
  std::nth_element(values.begin(), middle, values.end());
  double upper = *middle;
  if (n % 2 == 1) return upper;
  double lower = *std::max_element(values.begin(), middle);
  return lower + (upper - lower) / 2;
}

}  // namespace

double robust_estimate(std::span<double> samples) {
  if (samples.empty()) return 0;
  const double median = median_of(samples);
  // The recent window fits on the stack; longer inputs (direct callers) allocate.
  std::array<double, History::kRecent> small{};
  std::vector<double> large;
  std::span<double> deviations;
  if (samples.size() <= small.size()) {
    deviations = std::span<double>(small.data(), samples.size());
  } else {
    large.resize(samples.size());
    deviations = large;
  }
  std::transform(samples.begin(), samples.end(), deviations.begin(),
                 [median](double x) { return std::abs(x - median); });
  const double mad = median_of(deviations);
  if (mad == 0) return median;
  const double limit = kRejectSigmas * kMadToSigma * mad;
  double sum = 0;
  std::size_t kept = 0;
  for (double x : samples) {
    if (std::abs(x - median) <= limit) {
      sum += x;
      ++kept;
    }
  }
  return kept == 0 ? median : sum / static_cast<double>(kept);
}

void History::add(double seconds) noexcept {
  // Saturated, as the merge: a file counting more runs is refused at its next load.
  if (count_ < kMostRuns) ++count_;
  if (count_ == 1) {
    mean_ = seconds;
    m2_ = 0;
    min_ = max_ = seconds;
  } else {
    const double delta = seconds - mean_;
    mean_ += delta / static_cast<double>(count_);
    m2_ += delta * (seconds - mean_);
    min_ = std::min(min_, seconds);
    max_ = std::max(max_, seconds);
  }
  push_recent(seconds);
}

void History::push_recent(double seconds) noexcept {
  ring_[ring_next_] = seconds;
  ring_next_ = (ring_next_ + 1) % kRecent;
  ring_size_ = std::min(ring_size_ + 1, kRecent);
  robust_valid_ = false;
}

void History::merge(const History& newer) noexcept {
  if (newer.empty()) return;
  if (empty()) {
    *this = newer;
    return;
  }
  const double na = static_cast<double>(count_);
  const double nb = static_cast<double>(newer.count_);
  const double n = na + nb;
  const double delta = newer.mean_ - mean_;
  mean_ += delta * nb / n;
  m2_ += newer.m2_ + delta * delta * na * nb / n;
  // Two files of 2^53 runs (hand-edited) merged into one the next load refused as damaged.
  count_ = std::min(count_ + newer.count_, kMostRuns);
  min_ = std::min(min_, newer.min_);
  max_ = std::max(max_, newer.max_);
  for (double x : newer.recent()) push_recent(x);
  robust_valid_ = false;
}

History History::from_parts(std::uint64_t count, double mean, double m2, double min, double max,
                            std::span<const double> recent) noexcept {
  History h;
  h.count_ = count;
  h.mean_ = mean;
  h.m2_ = m2;
  h.min_ = min;
  h.max_ = max;
  const std::size_t skip = recent.size() > kRecent ? recent.size() - kRecent : 0;
  for (double x : recent.subspan(skip)) h.push_recent(x);
  return h;
}

double History::stddev() const noexcept {
  if (count_ < 2) return 0;
  return std::sqrt(std::max(0.0, m2_) / static_cast<double>(count_ - 1));
}

std::vector<double> History::recent() const {
  std::vector<double> out;
  out.reserve(ring_size_);
  const std::size_t first = (ring_next_ + kRecent - ring_size_) % kRecent;
  for (std::size_t i = 0; i < ring_size_; ++i) out.push_back(ring_[(first + i) % kRecent]);
  return out;
}

double History::robust() const {
  if (!robust_valid_) {
    if (ring_size_ == 0) {
      robust_ = mean_;
    } else {
      std::array<double, kRecent> samples{};
      std::copy_n(ring_.begin(), ring_size_, samples.begin());  // order does not matter here
      robust_ = robust_estimate(std::span<double>(samples.data(), ring_size_));
    }
    robust_valid_ = true;
  }
  return robust_;
}

}  // namespace hetflow::detail
