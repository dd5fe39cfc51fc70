#pragma once
// The framing of messages on a process worker's pipes (see hetflow/process.hpp).
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <vector>

#include "hetflow/process.hpp"

namespace hetflow::detail {

/// Whether the process at the other end of a pipe has ended. A process it started may hold the
/// pipe open after it, so the pipe alone would never tell.
using PeerEnded = std::function<bool()>;

class MessageReader;

/// Writes one message (`fd` may be non-blocking); returns false if the pipe is closed, or if
/// `ended` says so while the pipe stays full. While the pipe is full, what the peer writes back
/// is taken into `replies` (a peer that answers each message before it reads the next waits on
/// its full pipe back as long as this waits on it).
bool write_message(int fd, std::uint32_t kind, const std::vector<std::string_view>& parts, const PeerEnded& ended = {},
                   MessageReader* replies = nullptr);

/// Reads messages from a pipe through a buffer: one read() per message usually, rather than one
/// per header, length and part.
class MessageReader {
 public:
  explicit MessageReader(int fd, PeerEnded ended = {}) : fd_(fd), ended_(std::move(ended)), buffer_(1 << 16) {}
  /// One message; nullopt on end of file (at any point), or once `ended` says so with nothing
  /// left to read. Throws Error on a garbled stream.
  std::optional<ProcessMessage> read();
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// Takes what the pipe holds into the buffer, for `read` (the pipe is readable); false at end
  /// of file or on an error (which `read` then reports).
  bool take_available();

 private:
  bool read_exact(char* out, std::size_t size);
  int fd_;
  PeerEnded ended_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

}  // namespace hetflow::detail
