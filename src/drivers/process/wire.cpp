#include "drivers/process/wire.hpp"

#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace hetflow::detail {
namespace {

constexpr char kMagic[4] = {'H', 'F', 'W', '1'};
constexpr std::uint32_t kMaxParts = 1u << 16;

void put32(char* out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
void put64(char* out, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
std::uint64_t get(const char* in, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return value;
}

// Waits until `fd` is ready for `events` (or closed, or failed: the call that follows says
// which); false if the peer ended with `fd` still not ready. What the peer wrote before it ended
// is read all the same, and so is, into `replies` meanwhile, what it writes back.
bool ready_unless_ended(int fd, short events, const PeerEnded& ended, MessageReader* replies = nullptr) {
  constexpr int kCheckEveryMs = 100;
  pollfd watched[2] = {{fd, events, 0}, {replies != nullptr ? replies->fd() : -1, POLLIN, 0}};  // -1: not watched
  for (bool last_look = false;;) {
    const int rc = ::poll(watched, 2, last_look ? 0 : ended ? kCheckEveryMs : -1);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0 || watched[0].revents != 0) return true;
    if (watched[1].revents != 0) {
      if (!replies->take_available()) watched[1].fd = -1;  // the peer closed its end: nothing more comes
      continue;
    }
    if (last_look) return false;
    last_look = ended();
  }
}

bool write_all(int fd, std::vector<iovec>& pieces, const PeerEnded& ended, MessageReader* replies) {
  std::size_t first = 0;
  while (first < pieces.size()) {
    int count = static_cast<int>(std::min<std::size_t>(pieces.size() - first, IOV_MAX));
    ssize_t written = ::writev(fd, &pieces[first], count);
    if (written < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && ready_unless_ended(fd, POLLOUT, ended, replies)) continue;
      return false;
    }
    auto left = static_cast<std::size_t>(written);
    while (first < pieces.size() && left >= pieces[first].iov_len) left -= pieces[first++].iov_len;
    if (left > 0) {
      pieces[first].iov_base = static_cast<char*>(pieces[first].iov_base) + left;
      pieces[first].iov_len -= left;
    }
  }
  return true;
}

}  // namespace

bool MessageReader::take_available() {
  if (begin_ == end_) begin_ = end_ = 0;
  if (end_ == buffer_.size()) {
    if (begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    } else {
      buffer_.resize(buffer_.size() * 2);
    }
  }
  const ssize_t got = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
  if (got > 0) end_ += static_cast<std::size_t>(got);
  return got > 0 || (got < 0 && (errno == EINTR || errno == EAGAIN));
}

// false on end of file
bool MessageReader::read_exact(char* out, std::size_t size) {
  while (size > 0) {
    if (begin_ == end_) {
      if (ended_ && !ready_unless_ended(fd_, POLLIN, ended_)) return false;
      if (size >= buffer_.size()) {  // a large part: straight into its place
        ssize_t got = ::read(fd_, out, size);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return false;
        out += got;
        size -= static_cast<std::size_t>(got);
        continue;
      }
      ssize_t got = ::read(fd_, buffer_.data(), buffer_.size());
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      begin_ = 0;
      end_ = static_cast<std::size_t>(got);
    }
    const std::size_t take = std::min(size, end_ - begin_);
    std::memcpy(out, buffer_.data() + begin_, take);
    begin_ += take;
    out += take;
    size -= take;
  }
  return true;
}

bool write_message(int fd, std::uint32_t kind, const std::vector<std::string_view>& parts, const PeerEnded& ended,
                   MessageReader* replies) {
  std::array<char, 16> header{};
  std::memcpy(header.data(), kMagic, 4);
  put32(header.data() + 4, kind);
  put32(header.data() + 8, static_cast<std::uint32_t>(parts.size()));
  std::vector<std::array<char, 8>> lengths(parts.size());
  std::vector<iovec> pieces;
  pieces.reserve(1 + 2 * parts.size());
  pieces.push_back({header.data(), header.size()});
  for (std::size_t i = 0; i < parts.size(); ++i) {
    put64(lengths[i].data(), parts[i].size());
    pieces.push_back({lengths[i].data(), 8});
    if (!parts[i].empty()) pieces.push_back({const_cast<char*>(parts[i].data()), parts[i].size()});
  }
  return write_all(fd, pieces, ended, replies);
}

std::optional<ProcessMessage> MessageReader::read() {
  std::array<char, 16> header{};
  if (!read_exact(header.data(), header.size())) return std::nullopt;
  if (std::memcmp(header.data(), kMagic, 4) != 0) throw Error("hetflow process worker: garbled message (bad magic)");
  ProcessMessage message;
  message.kind = static_cast<std::uint32_t>(get(header.data() + 4, 4));
  auto count = static_cast<std::uint32_t>(get(header.data() + 8, 4));
  if (count > kMaxParts) throw Error("hetflow process worker: garbled message (too many parts)");
  message.parts.resize(count);
  for (auto& part : message.parts) {
    char length[8];
    if (!read_exact(length, 8)) return std::nullopt;
    const std::uint64_t announced = get(length, 8);
    if (announced > part.max_size()) throw Error("hetflow process worker: garbled message (a part too long)");
    // Grown as the bytes arrive: a length the child got wrong (or a child that dies mid-message)
    // must not make the host allocate what never comes.
    constexpr std::size_t kStep = std::size_t{64} << 20;
    for (std::size_t have = 0; have < announced;) {
      const std::size_t step = std::min<std::uint64_t>(announced - have, kStep);
      part.resize(have + step);
      if (!read_exact(part.data() + have, step)) return std::nullopt;
      have += step;
    }
  }
  return message;
}

}  // namespace hetflow::detail
