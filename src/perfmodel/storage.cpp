// Performance model files: the versioned text format, atomic replacement, the directory lock,
// symbol validation, and where the files live. The format is specified in docs/perfmodels.md.
#include "perfmodel/storage.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/perfmodel.hpp"
#include "util/number_format.hpp"
#include "util/text_fields.hpp"

namespace hetflow {

std::optional<Arch> arch_from_name(std::string_view name) noexcept {
  for (unsigned a = 0; a < kArchCount; ++a) {
    const auto arch = static_cast<Arch>(a);
    if (arch_name(arch) == name) return arch;
  }
  return std::nullopt;
}

void validate_perfmodel_symbol(std::string_view symbol) {
  constexpr std::size_t kMaxLength = 200;
  auto quoted = [&] { return "'" + std::string(symbol) + "'"; };
  if (symbol.empty()) throw InvalidArgument("performance model symbol is empty");
  if (symbol.size() > kMaxLength) {
    throw InvalidArgument("performance model symbol " + quoted() + " is longer than " + std::to_string(kMaxLength) +
                          " characters");
  }
  if (symbol.front() == '.') {
    throw InvalidArgument("performance model symbol " + quoted() + " must not start with '.'");
  }
  for (char ch : symbol) {
    const auto c = static_cast<unsigned char>(ch);
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.' || c == '+' || c == ':' || c == '@';
    if (!ok) {
      std::string shown = c >= 0x20 && c < 0x7f ? std::string("'") + ch + "'" : "byte " + std::to_string(c);
      throw InvalidArgument("performance model symbol " + quoted() + " contains " + shown +
                            ": use letters, digits and _ - . + : @");
    }
  }
}

namespace detail {
namespace {

constexpr std::string_view kMagic = "hetflow-perfmodel";
constexpr std::uint64_t kMostRuns = History::kMostRuns;
constexpr std::size_t kFixedFields = 9;  // arch size count mean m2 min max robust recent_count

/// A number of seconds: finite, 0 or more, at most `most`.
std::optional<double> parse_seconds(std::string_view text, double most = PerfModel::kLongestRun) {
  auto value = parse_number<double>(text);
  if (!value || !std::isfinite(*value) || *value < 0 || *value > most) return std::nullopt;
  return value;
}

ReadResult damaged(std::size_t line, std::string reason) {
  ReadResult result;
  result.status = ReadResult::Status::damaged;
  result.line = line;
  result.reason = std::move(reason);
  return result;
}

// One measurement line; returns the reason it is bad, or "" when `key` and `history` are set.
std::string parse_entry(const std::vector<std::string_view>& fields, std::pair<Arch, std::size_t>& key,
                        History& history) {
  if (fields.size() < kFixedFields) {
    return "expected at least " + std::to_string(kFixedFields) + " fields, found " + std::to_string(fields.size());
  }
  auto arch = arch_from_name(fields[0]);
  if (!arch) return "unknown architecture '" + std::string(fields[0]) + "'";
  auto size = parse_number<std::uint64_t>(fields[1]);
  if (!size) return "bad size '" + std::string(fields[1]) + "'";
  auto count = parse_number<std::uint64_t>(fields[2]);
  // Counts stay exact in doubles (the merge weighs means by them) and sums of two cannot wrap.
  if (!count || *count == 0 || *count > kMostRuns) return "bad count '" + std::string(fields[2]) + "'";
  const char* names[] = {"mean", "m2", "min", "max", "robust"};
  double values[5] = {};
  for (std::size_t i = 0; i < 5; ++i) {
    // m2, a sum of squared deviations, is not a time: finite is all it must be.
    auto value = parse_seconds(fields[3 + i], i == 1 ? std::numeric_limits<double>::max() : PerfModel::kLongestRun);
    if (!value) return std::string("bad ") + names[i] + " '" + std::string(fields[3 + i]) + "'";
    values[i] = *value;
  }
  const double mean = values[0], m2 = values[1], min = values[2], max = values[3];
  if (min > max || mean < min * (1 - 1e-9) || mean > max * (1 + 1e-9)) return "min <= mean <= max does not hold";
  // The squared deviations of `count` runs within min..max add up to at most count (max - min)^2
  // (a hand-edited m2 of 1e300 gave a standard deviation of 7e149 s).
  const auto runs = static_cast<double>(*count);
  if (m2 > runs * (max - min) * (max - min) * (1 + 1e-6) + runs * max * max * 1e-12) {
    return "m2 is larger than " + std::to_string(*count) + " runs between min and max allow";
  }
  auto recent_count = parse_number<std::uint64_t>(fields[8]);
  if (!recent_count || *recent_count > History::kRecent || *recent_count > *count) {
    return "bad recent sample count '" + std::string(fields[8]) + "'";
  }
  if (fields.size() != kFixedFields + *recent_count) {
    return "expected " + std::to_string(*recent_count) + " recent samples, found " +
           std::to_string(fields.size() - kFixedFields);
  }
  std::vector<double> recent;
  for (std::size_t i = kFixedFields; i < fields.size(); ++i) {
    auto value = parse_seconds(fields[i]);
    if (!value) return "bad sample '" + std::string(fields[i]) + "'";
    // Every run is counted in min and max: a sample outside them was not one of these runs.
    if (*value < min * (1 - 1e-9) || *value > max * (1 + 1e-9)) {
      return "recent sample '" + std::string(fields[i]) + "' is outside min..max";
    }
    recent.push_back(*value);
  }
  key = {*arch, static_cast<std::size_t>(*size)};
  history = History::from_parts(*count, mean, m2, min, max, recent);
  return {};
}

}  // namespace

std::string_view without_byte_order_mark(std::string_view text) noexcept {
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (text.starts_with(kBom)) text.remove_prefix(kBom.size());
  return text;
}

ReadResult parse_model_text(std::string_view text, std::string_view symbol) {
  // A file saved by an editor that puts a byte order mark first (Notepad) was "not a hetflow
  // performance model", then moved aside as damaged at the next save.
  text = without_byte_order_mark(text);
  ReadResult result;
  result.status = ReadResult::Status::loaded;
  bool have_header = false;
  bool have_symbol = false;
  std::size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const auto fields = split_fields(take_line(text));
    if (!have_header) {
      if (fields.size() != 2 || fields[0] != kMagic) {
        return damaged(line_number, "not a hetflow performance model (expected '" + std::string(kMagic) + " " +
                                        std::to_string(kPerfModelFormatVersion) + "')");
      }
      auto version = parse_number<int>(fields[1]);
      if (!version || *version < 1 || std::to_string(*version) != fields[1]) {  // written as "1", never "01"
        return damaged(line_number, "bad format version '" + std::string(fields[1]) + "'");
      }
      if (*version > kPerfModelFormatVersion) {
        ReadResult newer =
            damaged(line_number, "format version " + std::to_string(*version) + " is newer than this hetflow's (" +
                                     std::to_string(kPerfModelFormatVersion) + ")");
        newer.status = ReadResult::Status::newer;
        return newer;
      }
      have_header = true;
      continue;
    }
    if (fields.empty() || fields[0].front() == '#') continue;
    if (!have_symbol) {
      if (fields.size() != 2 || fields[0] != "symbol") return damaged(line_number, "expected 'symbol <name>'");
      if (fields[1] != symbol) {
        return damaged(line_number,
                       "the file is for symbol '" + std::string(fields[1]) + "', not '" + std::string(symbol) + "'");
      }
      have_symbol = true;
      continue;
    }
    std::pair<Arch, std::size_t> key;
    History history;
    if (std::string reason = parse_entry(fields, key, history); !reason.empty()) return damaged(line_number, reason);
    if (!result.contents.emplace(key, std::move(history)).second) {
      return damaged(line_number,
                     "a second line for " + std::string(arch_name(key.first)) + " size " + std::to_string(key.second));
    }
  }
  if (!have_header) return damaged(line_number, "empty file");
  if (!have_symbol) return damaged(line_number, "no 'symbol' line");
  return result;
}

ReadResult read_model_file(const std::filesystem::path& file, std::string_view symbol) {
  FileRead read = read_regular_file(file);
  if (read.status == FileRead::Status::missing) return {};
  if (read.status == FileRead::Status::refused) return damaged(0, read.reason);
  return parse_model_text(read.text, symbol);
}

std::string format_model(std::string_view symbol, const ModelContents& contents) {
  std::string out;
  out += kMagic;
  out += ' ';
  out += std::to_string(kPerfModelFormatVersion);
  out += "\nsymbol ";
  out += symbol;
  out +=
      "\n# arch size count mean m2 min max robust recent_count recent_samples... (seconds; see docs/perfmodels.md)\n";
  for (const auto& [key, history] : contents) {
    if (history.empty()) continue;
    out += arch_name(key.first);
    out += ' ';
    append_number(out, static_cast<std::uint64_t>(key.second));
    out += ' ';
    append_number(out, history.count());
    for (double value : {history.mean(), history.m2(), history.min(), history.max(), history.robust()}) {
      out += ' ';
      append_number(out, value);
    }
    const auto recent = history.recent();
    out += ' ';
    append_number(out, static_cast<std::uint64_t>(recent.size()));
    for (double value : recent) {
      out += ' ';
      append_number(out, value);
    }
    out += '\n';
  }
  return out;
}

std::string format_model_within_limit(std::string_view symbol, ModelContents& contents, std::size_t& dropped,
                                      std::size_t limit) {
  dropped = 0;
  std::string text = format_model(symbol, contents);
  while (text.size() > limit && !contents.empty()) {
    // Lines are alike in length: drop enough of the least-run sizes to come a tenth under.
    const std::size_t per_line = text.size() / contents.size() + 1;
    const std::size_t keep = std::min(contents.size() - 1, limit / per_line * 9 / 10);
    std::vector<ModelContents::iterator> by_runs;
    by_runs.reserve(contents.size());
    for (auto it = contents.begin(); it != contents.end(); ++it) by_runs.push_back(it);
    std::stable_sort(by_runs.begin(), by_runs.end(),
                     [](const auto& a, const auto& b) { return a->second.count() < b->second.count(); });
    const std::size_t drop = contents.size() - keep;
    for (std::size_t i = 0; i < drop; ++i) contents.erase(by_runs[i]);
    dropped += drop;
    text = format_model(symbol, contents);
  }
  return text;
}

DirectoryLock::DirectoryLock(const std::filesystem::path& directory) {
  create_owned_directories(directory);
  const std::filesystem::path lock_file = directory / ".lock";
  fd_ = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0 && errno == EACCES) {
    // A directory shared between users: the lock file another user made is read-only to this
    // one, and flock() needs no more than a descriptor open for reading. If there is none (a
    // directory this user may not write to), the reason to give is the first one.
    fd_ = ::open(lock_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0 && errno == ENOENT) errno = EACCES;
  }
  if (fd_ < 0) throw Error("cannot open " + lock_file.string() + ": " + std::strerror(errno));
  keep_owner_access(fd_);  // made under umask 0777, it would refuse the next run
  // Saves take milliseconds: a lock held for long is a process stopped (Ctrl-Z) or stuck in its
  // save, and waiting for it would hold this program's shutdown, and its exit, for as long.
  const auto deadline = std::chrono::steady_clock::now() + kLockPatience;
  auto pause = std::chrono::milliseconds(1);
  while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    if (error == EINTR) continue;
    if (error == EWOULDBLOCK && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(100));
      continue;
    }
    ::close(fd_);
    if (error == EWOULDBLOCK) {
      throw LockHeldError(lock_file.string() + " has been held by another process for " +
                          std::to_string(kLockPatience.count()) +
                          " s (one stopped or stuck while saving its models?); the measurements stay in memory");
    }
    throw Error("cannot lock " + lock_file.string() + ": " + std::strerror(error));
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ < 0) return;
  // Unlocked before closing: a child forked meanwhile would keep the lock with its copy.
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
}

namespace {

std::filesystem::path user_home() {
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') return home;
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(::getuid(), &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr &&
      found->pw_dir != nullptr) {
    return found->pw_dir;
  }
  return ".";
}

std::optional<std::filesystem::path> named_user_home(const std::string& name) {
  if (name.empty()) return std::nullopt;
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr &&
      found->pw_dir != nullptr && *found->pw_dir != '\0') {
    return std::filesystem::path(found->pw_dir);
  }
  return std::nullopt;
}

}  // namespace

namespace {

std::filesystem::path given_perfmodel_directory() {
  if (const char* home = std::getenv("HETFLOW_HOME"); home != nullptr && *home != '\0') {
    // A quoted "~/models" reaches here unexpanded: it means the user's home, not a folder "~".
    const std::string_view given(home);
    if (given == "~") return user_home() / "perfmodels";
    if (given.starts_with("~/")) return user_home() / given.substr(2) / "perfmodels";
    if (given.starts_with("~")) {
      // "~name/models", as a shell expands it (it made a folder "~name" in the working
      // directory); a name that is no user's stays as written, as in a shell.
      const std::size_t slash = given.find('/');
      const std::string name(given.substr(1, slash == std::string_view::npos ? std::string_view::npos : slash - 1));
      if (auto home_of_name = named_user_home(name)) {
        return slash == std::string_view::npos ? *home_of_name / "perfmodels"
                                               : *home_of_name / given.substr(slash + 1) / "perfmodels";
      }
    }
    return std::filesystem::path(home) / "perfmodels";
  }
  return user_home() / ".hetflow" / "perfmodels";
}

}  // namespace

std::filesystem::path perfmodel_directory() {
  std::filesystem::path directory = given_perfmodel_directory();
  // A relative HETFLOW_HOME (or HOME) is taken from the working directory of the moment: a model
  // keeps that file, so that a chdir() later neither saves it elsewhere nor merges it into another
  // directory's model (models are kept by file).
  if (directory.is_relative()) {
    std::error_code ec;
    std::filesystem::path absolute = std::filesystem::absolute(directory, ec);
    if (!ec) directory = std::move(absolute);
  }
  return directory;
}

std::filesystem::path perfmodel_file(const std::filesystem::path& directory, std::string_view symbol) {
  return directory / (std::string(symbol) + std::string(kPerfModelExtension));
}

std::string symbol_of_file(const std::filesystem::path& file) {
  if (file.extension() != kPerfModelExtension) return {};
  std::string symbol = file.stem().string();
  try {
    validate_perfmodel_symbol(symbol);
  } catch (const InvalidArgument&) {
    return {};
  }
  return symbol;
}

std::size_t remove_abandoned_temporaries(const std::filesystem::path& directory) noexcept {
  std::size_t removed = 0;
  try {
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(directory, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      // ".<symbol>.model.tmp.<pid>.<n>", as AtomicFile names them: nothing else is touched.
      const std::string name = it->path().filename().string();
      if (name.size() < 2 || name.front() != '.') continue;
      const std::size_t marker = name.rfind(std::string(kPerfModelExtension) + ".tmp.");
      if (marker == std::string::npos) continue;
      const std::string_view rest = std::string_view(name).substr(marker + kPerfModelExtension.size() + 5);
      const std::size_t dot = rest.find('.');
      if (dot == std::string_view::npos || !parse_number<std::uint64_t>(rest.substr(0, dot)) ||
          !parse_number<std::uint64_t>(rest.substr(dot + 1))) {
        continue;
      }
      if (symbol_of_file(it->path().parent_path() / name.substr(1, marker - 1 + kPerfModelExtension.size())).empty()) {
        continue;
      }
      std::error_code kind_error;
      if (!it->is_regular_file(kind_error) || it->is_symlink(kind_error)) continue;
      std::error_code remove_error;
      if (std::filesystem::remove(it->path(), remove_error)) ++removed;
    }
  } catch (...) {
    // Out of memory listing a directory: the files stay, harmless.
  }
  return removed;
}

std::size_t default_calibration_samples() {
  constexpr std::size_t kDefault = 10;
  constexpr std::uint64_t kMax = 1'000'000;
  const char* text = std::getenv("HETFLOW_CALIBRATE");
  if (text == nullptr || *text == '\0') return kDefault;
  auto value = parse_number<std::uint64_t>(text);
  if (!value || *value < 1 || *value > kMax) {
    throw InvalidArgument("HETFLOW_CALIBRATE='" + std::string(text) + "' is not a whole number from 1 to " +
                          std::to_string(kMax) + " (measurements before a size counts as calibrated)");
  }
  return static_cast<std::size_t>(*value);
}

void warn(std::string_view message) noexcept {
  try {
    std::string line = "hetflow: warning: ";
    line += message;
    line += '\n';
    const char* data = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      const ssize_t written = ::write(STDERR_FILENO, data, left);
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) return;
      data += written;
      left -= static_cast<std::size_t>(written);
    }
  } catch (...) {
    // Out of memory while warning: nothing better to do.
  }
}

std::string describe_damage(const std::filesystem::path& file, const ReadResult& result) {
  std::string text = file.string();
  if (result.line > 0) {
    text += ':';
    text += std::to_string(result.line);
  }
  text += ": ";
  text += result.reason;
  return text;
}

}  // namespace detail
}  // namespace hetflow
