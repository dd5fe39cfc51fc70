#pragma once
// The on-disk side of performance models: the text format (docs/perfmodels.md), atomic writes,
// the lock that serialises read-merge-write cycles between processes, and where models live.
#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "hetflow/arch.hpp"
#include "hetflow/error.hpp"
#include "perfmodel/history.hpp"
#include "util/atomic_file.hpp"  // write_file_atomically, read_regular_file: how model files are accessed

namespace hetflow::detail {

inline constexpr int kPerfModelFormatVersion = 1;
inline constexpr std::string_view kPerfModelExtension = ".model";

/// A model's measurements, by (architecture, size).
using ModelContents = std::map<std::pair<Arch, std::size_t>, History>;

struct ReadResult {
  /// newer: written by a newer hetflow (its format version is past this one's): neither read
  /// nor replaced, so that what it holds is not lost.
  enum class Status { missing, loaded, damaged, newer };
  Status status = Status::missing;
  ModelContents contents;
  std::size_t line = 0;  ///< for damaged: the offending line (1-based; 0 when the file could not be read)
  std::string reason;    ///< for damaged: what is wrong
};

/// Parses a model file; never throws for a bad file (the result says damaged, where and why:
/// also when it is not a regular file, or larger than kMaxReadBytes).
[[nodiscard]] ReadResult read_model_file(const std::filesystem::path& file, std::string_view symbol);
[[nodiscard]] ReadResult parse_model_text(std::string_view text, std::string_view symbol);
[[nodiscard]] std::string format_model(std::string_view symbol, const ModelContents& contents);

/// What a DirectoryLock throws when another process has held the lock for kLockPatience.
class LockHeldError : public Error {
 public:
  using Error::Error;
};

/// A model file's text, at most `limit` bytes: the sizes with the fewest runs are left out of
/// `contents` (`dropped` says how many) where all of them would make it longer. A file longer
/// than a read accepts (kMaxReadBytes) would be refused, and everything in it lost, at the next
/// load.
[[nodiscard]] std::string format_model_within_limit(std::string_view symbol, ModelContents& contents,
                                                    std::size_t& dropped, std::size_t limit = kMaxReadBytes);

/// An exclusive advisory lock (flock) on `<directory>/.lock`, held for the object's life. Throws
/// LockHeldError when another process has held it for kLockPatience, hetflow::Error when it
/// cannot be taken.
class DirectoryLock {
 public:
  static constexpr std::chrono::seconds kLockPatience{10};
  explicit DirectoryLock(const std::filesystem::path& directory);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

/// $HETFLOW_HOME/perfmodels, else ~/.hetflow/perfmodels.
[[nodiscard]] std::filesystem::path perfmodel_directory();
/// `<directory>/<symbol>.model`.
[[nodiscard]] std::filesystem::path perfmodel_file(const std::filesystem::path& directory, std::string_view symbol);
/// The symbol a model file is for, or "" when `file` is not one (temporary, lock, damaged copy...).
[[nodiscard]] std::string symbol_of_file(const std::filesystem::path& file);
/// HETFLOW_CALIBRATE, else 10. Throws InvalidArgument for a malformed value.
[[nodiscard]] std::size_t default_calibration_samples();

/// `text` without a leading UTF-8 byte order mark (an editor's, on a hand-edited model file).
[[nodiscard]] std::string_view without_byte_order_mark(std::string_view text) noexcept;

/// Removes the temporary files that saves killed before their rename left in `directory`
/// (`.<symbol>.model.tmp.<pid>.<n>`). Called with the DirectoryLock held: every save writes its
/// temporary file under that lock, so those found then are nobody's. Returns how many it removed.
std::size_t remove_abandoned_temporaries(const std::filesystem::path& directory) noexcept;

/// "hetflow: warning: <message>" on stderr, in one write.
void warn(std::string_view message) noexcept;
/// "<file>:<line>: <reason>", or "<file>: <reason>" for line 0.
[[nodiscard]] std::string describe_damage(const std::filesystem::path& file, const ReadResult& result);

}  // namespace hetflow::detail
