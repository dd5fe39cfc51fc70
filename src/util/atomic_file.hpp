#pragma once
// Files the runtime reads and writes on its own (performance and bus models, traces), where
// anything may sit at the path: a file appears under its final name complete or not at all and
// never replaces something that is not a regular file; a read takes only a regular file of
// bounded size, and never blocks (a FIFO) or runs away (a link to /dev/zero).
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace hetflow::detail {

/// Written to a temporary file in the target's directory (which must exist), then, at commit(),
/// fsynced and renamed over the target, and the directory fsynced. Refuses, with hetflow::Error
/// naming the path and what is there, a target that exists and is not a regular file (a
/// symbolic link, a directory, a FIFO, a device, a socket): it is left alone, and not followed.
/// Destroyed without commit(), the temporary file is removed and the target left as it was.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view text);
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temporary_;
  int fd_ = -1;
};

/// Creates `directory` and the directories missing above it (as create_directories), each with
/// the owner's read, write and search permissions whatever the umask: one made under umask 0777
/// (mode 000) could not be entered, by this run or any later one, to save what it is for.
/// Directories that exist are left as they are. Throws hetflow::Error naming the one it cannot make.
void create_owned_directories(const std::filesystem::path& directory);

/// Adds the owner's read and write permissions to the file open as `fd`, if it is this user's and
/// lacks them (it was created under a umask such as 0777), so that a later run can read it.
void keep_owner_access(int fd) noexcept;

/// The whole of `text` in `file`, through an AtomicFile.
void write_file_atomically(const std::filesystem::path& file, std::string_view text);

/// What read_regular_file found.
struct FileRead {
  enum class Status { missing, loaded, refused };
  Status status = Status::missing;
  std::string text;    ///< loaded: the contents
  std::string reason;  ///< refused: why (not a regular file, too large, an error)
};

inline constexpr std::size_t kMaxReadBytes = std::size_t{64} << 20;

/// Reads `file` (following symbolic links) if it is a regular file of at most `limit` bytes.
/// Never throws for what is at the path, and never blocks on it.
[[nodiscard]] FileRead read_regular_file(const std::filesystem::path& file, std::size_t limit = kMaxReadBytes);

/// "a symbolic link", "a directory", "a FIFO"... for a file type (st_mode), "a regular file"
/// included.
[[nodiscard]] const char* file_kind(unsigned mode) noexcept;

}  // namespace hetflow::detail
