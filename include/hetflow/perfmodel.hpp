#pragma once
// Performance models: how long a codelet (a "symbol") takes on each architecture for each data
// size, learned from measured runs and kept across processes under $HETFLOW_HOME/perfmodels/.
// The file format is specified in docs/perfmodels.md.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hetflow/arch.hpp"
#include "hetflow/codelet.hpp"
#include "hetflow/export.hpp"

namespace hetflow {

/// The statistics of one (architecture, size) pair of a model.
struct PerfEntry {
  Arch arch = Arch::cpu;
  std::size_t size = 0;
  std::uint64_t count = 0;  ///< measurements ever recorded (this process and those saved before)
  double mean = 0;          ///< seconds, over all measurements
  double stddev = 0;        ///< seconds, sample standard deviation over all measurements (0 below 2)
  double min = 0;           ///< seconds
  double max = 0;           ///< seconds
  double robust = 0;        ///< seconds: the estimate `expected()` uses, see PerfModel
};

/// The regression t(n) = a * n^b + c over the calibrated sizes of one architecture.
struct HETFLOW_API PerfFit {
  double a = 0;
  double b = 0;
  double c = 0;
  bool valid = false;      ///< false when fewer than 3 usable sizes (or a degenerate fit)
  std::size_t points = 0;  ///< the sizes the fit used
  /// a * n^b + c, or nullopt when the fit is not valid or the value is not finite.
  [[nodiscard]] std::optional<double> operator()(std::size_t n) const noexcept;
};

/// Fits t = a * n^b + c (a > 0, 0 <= c < min t) to points with n > 0 and t > 0 (others are
/// skipped): for each c on a grid refined around its best value, b and log(a) come from least
/// squares on log(t - c) against log(n); the c kept is the one with the least sum of squared
/// relative errors. Constant data gives b = 0, proportional data c = 0. Spans of different
/// lengths: InvalidArgument.
[[nodiscard]] HETFLOW_API PerfFit fit_power_law(std::span<const double> sizes, std::span<const double> seconds);

/// The architecture called `name` ("cpu", "cuda", "opencl", "process"), or nullopt.
[[nodiscard]] HETFLOW_API std::optional<Arch> arch_from_name(std::string_view name) noexcept;

/// Throws InvalidArgument unless `symbol` can name a model file: 1 to 200 characters among
/// letters, digits and `_ - . + : @`, not starting with '.'.
HETFLOW_API void validate_perfmodel_symbol(std::string_view symbol);

/// The performance model of one symbol: a history per (architecture, size) and a regression per
/// architecture. Thread-safe; `record` is cheap (a lock, a map lookup, O(1) updates).
///
/// Per (arch, size) it keeps the count, mean and standard deviation (Welford), min and max, and
/// the last 32 samples. The robust estimate is the mean of those recent samples that lie within
/// 3 scaled MADs (1.4826 * median absolute deviation) of their median — the median when they
/// all agree — so one outlier cannot move it much.
///
/// A size is calibrated once it has `calibration_samples()` measurements (default 10, or
/// HETFLOW_CALIBRATE). `expected` answers the robust estimate of a calibrated size, else the
/// regression over that architecture's calibrated sizes when there are at least 3, else nullopt.
class HETFLOW_API PerfModel : public PerfModelHook {
 public:
  /// A model held in memory only (`save` throws), e.g. for tests.
  explicit PerfModel(std::string symbol);
  /// A model stored in `file` (normally made by PerfModelRegistry::get). Does not read it: see load().
  PerfModel(std::string symbol, std::filesystem::path file);
  ~PerfModel() override;
  PerfModel(const PerfModel&) = delete;
  PerfModel& operator=(const PerfModel&) = delete;

  [[nodiscard]] const std::string& symbol() const noexcept;
  /// The model's file; empty for a memory-only model.
  [[nodiscard]] const std::filesystem::path& file() const noexcept;

  /// The longest run a model records (about 31 years): what lies beyond is no measurement.
  static constexpr double kLongestRun = 1e9;
  /// Records one measured run. Negative, non-finite or longer than kLongestRun, it is ignored.
  void record(Arch arch, std::size_t size, double seconds) override;

  [[nodiscard]] std::optional<double> expected(Arch arch, std::size_t size) const;
  [[nodiscard]] bool calibrated(Arch arch, std::size_t size) const;
  /// Every (arch, size) with measurements, ordered by arch then size.
  [[nodiscard]] std::vector<PerfEntry> entries() const;
  /// The regression over the calibrated sizes of `arch` (cached: made again when a size becomes
  /// calibrated, and after records on calibrated sizes as many as an eighth of its sizes).
  [[nodiscard]] PerfFit fit(Arch arch) const;

  [[nodiscard]] std::size_t calibration_samples() const noexcept;
  /// At least 1.
  void set_calibration_samples(std::size_t samples);

  /// Re-reads the file: the model becomes the file's content plus the measurements recorded and
  /// not yet saved. A missing file counts as empty; a damaged one is reported on stderr (file and
  /// line) and ignored (as empty). Returns whether a file was loaded.
  bool load();
  /// Writes the measurements recorded since the last load/save into the file, merged with what
  /// the file holds now (another process may have saved since): counts, means and deviations
  /// combine exactly, recent samples are the file's followed by ours. Under an advisory lock,
  /// written to a temporary file, fsync'ed and renamed, so readers never see a partial file.
  /// Afterwards the model holds the merged content. A no-op when nothing was recorded since.
  /// Throws hetflow::Error when the file cannot be written.
  void save();
  /// Whether measurements were recorded since the last load/save.
  [[nodiscard]] bool dirty() const;

 private:
  friend class PerfModelRegistry;  // holds the model still across a fork()
  void hold_for_fork() noexcept;
  void release_after_fork(bool in_child) noexcept;
  struct State;
  std::unique_ptr<State> state_;
};

/// The process's models, one per symbol and directory, loaded from disk on first use.
///
/// The directory is resolved on each call: $HETFLOW_HOME/perfmodels, or ~/.hetflow/perfmodels
/// when HETFLOW_HOME is unset. Models are kept by file, so changing HETFLOW_HOME gives fresh
/// models for the new directory while the old ones keep their own files.
class HETFLOW_API PerfModelRegistry {
 public:
  static PerfModelRegistry& instance();

  /// The model of `symbol` in the current directory, loading it the first time. Throws
  /// InvalidArgument for a bad symbol.
  [[nodiscard]] std::shared_ptr<PerfModel> get(const std::string& symbol);
  /// Symbols with a file in the current directory or runs recorded in memory, sorted (a model
  /// only looked up, under a mistyped symbol say, is not listed).
  [[nodiscard]] std::vector<std::string> list();
  /// Saves every model with unsaved measurements. Never throws: a failure is reported on stderr
  /// and the other models are still saved (the engine calls this at shutdown). Then lets go of
  /// the saved models that nobody else holds (the next get() loads them again from their
  /// files), so that a long-running program meeting ever new symbols does not keep them all.
  void save_all() noexcept;
  /// $HETFLOW_HOME/perfmodels (default ~/.hetflow/perfmodels); not created until a save.
  [[nodiscard]] std::filesystem::path directory() const;
  /// Forgets the models held in memory, unsaved measurements included (for tests). Models
  /// handed out stay valid but are no longer the registry's.
  void reset();

  PerfModelRegistry(const PerfModelRegistry&) = delete;
  PerfModelRegistry& operator=(const PerfModelRegistry&) = delete;

  /// Around fork() (registered with pthread_atfork): no model is being saved or changed while
  /// the process forks, and a child forgets the measurements its parent has not saved yet (the
  /// parent saves them; both did, counting them twice).
  void hold_for_fork() noexcept;
  void release_after_fork(bool in_child) noexcept;

 private:
  PerfModelRegistry();
  ~PerfModelRegistry();
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace hetflow
