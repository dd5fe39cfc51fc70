#pragma once
// The measurements of one (architecture, size) pair: running statistics (Welford) and a window
// of recent samples for the robust estimate.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace hetflow::detail {

class History {
 public:
  static constexpr std::size_t kRecent = 32;
  /// The most runs a history counts (a file's count is at most this): counts stay exact in
  /// doubles. Past it the count stays there; the statistics go on (a run's weight is 2^-53 anyway).
  static constexpr std::uint64_t kMostRuns = std::uint64_t{1} << 53;

  void add(double seconds) noexcept;
  /// Folds `newer` (measurements taken after this one's) in: the statistics combine exactly
  /// (Chan et al.), the recent window keeps the last kRecent samples of this then `newer`.
  void merge(const History& newer) noexcept;

  /// Rebuilds a history from stored statistics; `recent` oldest first (the last kRecent are kept).
  static History from_parts(std::uint64_t count, double mean, double m2, double min, double max,
                            std::span<const double> recent) noexcept;

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  [[nodiscard]] double mean() const noexcept { return mean_; }
  [[nodiscard]] double m2() const noexcept { return m2_; }
  /// The sample standard deviation; 0 below two samples.
  [[nodiscard]] double stddev() const noexcept;
  [[nodiscard]] double min() const noexcept { return min_; }
  [[nodiscard]] double max() const noexcept { return max_; }
  /// The mean of the recent samples within 3 scaled MADs of their median (the median itself when
  /// the MAD is 0); the mean when no recent samples are kept. Cached until the next change.
  [[nodiscard]] double robust() const;
  /// The recent samples, oldest first.
  [[nodiscard]] std::vector<double> recent() const;

 private:
  void push_recent(double seconds) noexcept;

  std::uint64_t count_ = 0;
  double mean_ = 0;
  double m2_ = 0;
  double min_ = 0;
  double max_ = 0;
  std::array<double, kRecent> ring_{};
  std::size_t ring_size_ = 0;
  std::size_t ring_next_ = 0;  // where the next sample goes
  mutable double robust_ = 0;
  mutable bool robust_valid_ = false;
};

/// The robust estimate of `samples` (reordered): see History::robust. 0 for no samples.
[[nodiscard]] double robust_estimate(std::span<double> samples);

}  // namespace hetflow::detail
