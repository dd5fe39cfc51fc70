#include "util/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "hetflow/error.hpp"

namespace hetflow::detail {
namespace {

std::string system_error_text(int error) { return std::strerror(error); }

// Throws unless nothing, or a regular file, is at `target` (not following a link there).
void check_replaceable(const std::filesystem::path& target) {
  struct stat info {};
  if (::lstat(target.c_str(), &info) != 0) {
    if (errno == ENOENT) return;
    throw Error("cannot replace " + target.string() + ": " + system_error_text(errno));
  }
  if (!S_ISREG(info.st_mode)) {
    throw Error("refusing to replace " + target.string() + ": it is " + file_kind(info.st_mode) +
                ", not a regular file");
  }
}

}  // namespace

const char* file_kind(unsigned mode) noexcept {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFLNK: return "a symbolic link";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    default: return "not a regular file";
  }
}

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
  static std::atomic<unsigned> counter{0};
  check_replaceable(target_);
  // Hidden, and named after the target with a suffix that no reader lists as one of its files.
  std::string name = ".";
  name += target_.filename().string();
  name += ".tmp.";
  name += std::to_string(::getpid());
  name += '.';
  name += std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
  temporary_ = target_.parent_path() / name;
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot create " + temporary_.string() + ": " + system_error_text(errno));
  keep_owner_access(fd_);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!temporary_.empty()) ::unlink(temporary_.c_str());
}

void AtomicFile::write(std::string_view text) {
  if (fd_ < 0) throw Error("cannot write " + target_.string() + ": the file was already committed");
  const char* data = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t written = ::write(fd_, data, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot write " + temporary_.string() + ": " + system_error_text(errno));
    }
    data += written;
    left -= static_cast<std::size_t>(written);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error("cannot write " + target_.string() + ": the file was already committed");
  if (::fsync(fd_) != 0) throw Error("cannot write " + temporary_.string() + " (fsync): " + system_error_text(errno));
  const int closed = ::close(std::exchange(fd_, -1));  // released even when close reports an error
  if (closed != 0) throw Error("cannot write " + temporary_.string() + " (close): " + system_error_text(errno));
  // Again: something may have appeared at the path while the file was being written.
  check_replaceable(target_);
  if (::rename(temporary_.c_str(), target_.c_str()) != 0) {
    throw Error("cannot rename " + temporary_.string() + " to " + target_.string() + ": " + system_error_text(errno));
  }
  temporary_.clear();
  // Make the rename itself durable.
  std::filesystem::path directory = target_.parent_path();
  if (directory.empty()) directory = ".";
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void keep_owner_access(int fd) noexcept {
  struct stat info {};
  if (::fstat(fd, &info) != 0 || info.st_uid != ::geteuid()) return;
  const mode_t wanted = S_IRUSR | S_IWUSR;
  if ((info.st_mode & wanted) != wanted) ::fchmod(fd, (info.st_mode & 07777) | wanted);
}

void create_owned_directories(const std::filesystem::path& directory) {
  // The missing ones, from the deepest up; made from the top down, each entered in turn.
  std::vector<std::filesystem::path> missing;
  for (std::filesystem::path path = directory; !path.empty(); path = path.parent_path()) {
    struct stat info {};
    if (::stat(path.c_str(), &info) == 0) break;
    missing.push_back(path);
    if (path == path.parent_path()) break;
  }
  for (auto path = missing.rbegin(); path != missing.rend(); ++path) {
    if (::mkdir(path->c_str(), 0777) != 0) {
      if (errno == EEXIST) continue;  // made meanwhile (another process), or a file: said below
      throw Error("cannot create " + path->string() + ": " + system_error_text(errno));
    }
    struct stat info {};
    if (::stat(path->c_str(), &info) == 0 && (info.st_mode & S_IRWXU) != S_IRWXU) {
      ::chmod(path->c_str(), (info.st_mode & 07777) | S_IRWXU);
    }
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(directory, ec)) {
    throw Error("cannot create " + directory.string() + ": " + (ec ? ec.message() : "something else is there"));
  }
}

void write_file_atomically(const std::filesystem::path& file, std::string_view text) {
  AtomicFile out(file);
  out.write(text);
  out.commit();
}

FileRead read_regular_file(const std::filesystem::path& file, std::size_t limit) {
  FileRead result;
  auto refuse = [&](std::string reason) {
    result.status = FileRead::Status::refused;
    result.reason = std::move(reason);
    return result;
  };
  // Non-blocking: opening a FIFO with no writer would otherwise wait for one.
  const int fd = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    // No file there, or no directory on the way to it (a path through a regular file): missing.
    if (errno == ENOENT || errno == ENOTDIR) return result;
    return refuse(std::string("cannot be opened: ") + system_error_text(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) return refuse(std::string("cannot be examined: ") + system_error_text(errno));
  if (!S_ISREG(info.st_mode)) return refuse(std::string("it is ") + file_kind(info.st_mode) + ", not a regular file");
  if (static_cast<std::uint64_t>(info.st_size) > limit) {
    return refuse("it is " + std::to_string(info.st_size) + " bytes, more than the " + std::to_string(limit) +
                  " accepted");
  }
  // The size is checked again while reading: the file may grow meanwhile.
  std::string text(static_cast<std::size_t>(info.st_size), '\0');
  std::size_t used = 0;
  for (;;) {
    if (used == text.size()) {
      if (used > limit) return refuse("it grew past the " + std::to_string(limit) + " bytes accepted");
      text.resize(std::min(limit + 1, std::max<std::size_t>(used * 2, 4096)));
    }
    const ssize_t got = ::read(fd, text.data() + used, text.size() - used);
    if (got < 0) {
      if (errno == EINTR) continue;
      return refuse(std::string("cannot be read: ") + system_error_text(errno));
    }
    if (got == 0) break;
    used += static_cast<std::size_t>(got);
  }
  text.resize(used);
  result.status = FileRead::Status::loaded;
  result.text = std::move(text);
  return result;
}

}  // namespace hetflow::detail
