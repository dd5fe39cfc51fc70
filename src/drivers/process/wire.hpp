#pragma once
// The framing of messages on a process worker's pipes (see hetflow/process.hpp).
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "hetflow/process.hpp"

namespace hetflow::detail {

/// Writes one message; returns false if the pipe is closed.
bool write_message(int fd, std::uint32_t kind, const std::vector<std::string_view>& parts);

/// Reads messages from a pipe through a buffer: one read() per message usually, rather than one
/// per header, length and part.
class MessageReader {
 public:
  explicit MessageReader(int fd) : fd_(fd), buffer_(1 << 16) {}
  /// One message; nullopt on end of file (at any point). Throws Error on a garbled stream.
  std::optional<ProcessMessage> read();

 private:
  bool read_exact(char* out, std::size_t size);
  int fd_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

}  // namespace hetflow::detail
