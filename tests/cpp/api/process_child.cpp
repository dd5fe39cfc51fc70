// The child program of the process driver tests: speaks the framing documented in
// hetflow/process.hpp over the two descriptors given as its last two arguments (read, write).
//
// It sends kind 3 (ready) with its pid as text, then answers each kind 1 message by its first
// part:
//   "crash"       exits at once with status 3, without replying
//   "orphan" PATH leaves a process of its own behind that holds both pipes open, unused, for up
//                 to two minutes (its pid written to PATH), then exits with status 5, without
//                 replying
//   "hang"        never replies (it waits for its pipe to close, or to be killed)
//   "pid"         replies with its pid as text
//   "env" NAME    replies with the value of the environment variable NAME ("" if unset)
//   "ask" ...     sends the other parts as a request (kind 4), waits for the host's answer
//                 (kind 6) and replies with the answer's parts
//   anything else is echoed back (kind 1, the same parts)
// It exits on kind 2 or when the host closes its pipe. Started with "--exit-before-ready" as its
// first argument it exits with status 7 before saying it is ready.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::uint32_t kReply = 1;
constexpr std::uint32_t kExit = 2;
constexpr std::uint32_t kReady = 3;
constexpr std::uint32_t kRequest = 4;
constexpr std::uint32_t kAnswer = 6;

struct Message {
  std::uint32_t kind = 0;
  std::vector<std::string> parts;
};

int in_fd = -1;
int out_fd = -1;

bool read_exact(char* out, std::size_t size) {
  while (size > 0) {
    ssize_t got = ::read(in_fd, out, size);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    out += got;
    size -= static_cast<std::size_t>(got);
  }
  return true;
}

void write_all(const std::string& bytes) {
  const char* data = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t written = ::write(out_fd, data, left);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) ::_exit(9);  // the host is gone
    data += written;
    left -= static_cast<std::size_t>(written);
  }
}

void put(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::uint64_t get(const char* in, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return value;
}

// False on end of file; exits with status 8 on a garbled stream.
bool read_message(Message& message) {
  char header[16];
  if (!read_exact(header, sizeof header)) return false;
  if (std::memcmp(header, "HFW1", 4) != 0) ::_exit(8);
  message.kind = static_cast<std::uint32_t>(get(header + 4, 4));
  message.parts.assign(get(header + 8, 4), std::string());
  for (std::string& part : message.parts) {
    char length[8];
    if (!read_exact(length, sizeof length)) return false;
    part.resize(get(length, 8));
    if (!part.empty() && !read_exact(part.data(), part.size())) return false;
  }
  return true;
}

void write_message(std::uint32_t kind, const std::vector<std::string>& parts) {
  std::string bytes = "HFW1";
  put(bytes, kind, 4);
  put(bytes, parts.size(), 4);
  put(bytes, 0, 4);
  for (const std::string& part : parts) {
    put(bytes, part.size(), 8);
    bytes += part;
  }
  write_all(bytes);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  if (std::strcmp(argv[1], "--exit-before-ready") == 0) return 7;
  in_fd = std::atoi(argv[argc - 2]);
  out_fd = std::atoi(argv[argc - 1]);

  write_message(kReady, {std::to_string(::getpid())});
  if (std::strcmp(argv[1], "--deaf") == 0) {
    // Ignores what it is sent, its pipe closing, SIGTERM and SIGHUP: only SIGKILL ends it.
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGHUP, SIG_IGN);
    for (;;) ::pause();
  }
  Message message;
  while (read_message(message)) {
    if (message.kind == kExit) return 0;
    const std::string first = message.parts.empty() ? std::string() : message.parts[0];
    if (message.kind != kReply) {
      write_message(kReply, {"unexpected kind " + std::to_string(message.kind)});
    } else if (first == "crash") {
      ::_exit(3);
    } else if (first == "orphan") {
      const pid_t orphan = ::fork();
      if (orphan == 0) {
        const int null_fd = ::open("/dev/null", O_RDWR);  // not the test's output, which its runner reads to the end
        ::dup2(null_fd, STDOUT_FILENO);
        ::dup2(null_fd, STDERR_FILENO);
        ::sleep(120);
        ::_exit(0);
      }
      const std::string text = std::to_string(orphan);
      const int pid_fd = ::open(message.parts.at(1).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (pid_fd >= 0) {
        static_cast<void>(::write(pid_fd, text.data(), text.size()));
        ::close(pid_fd);
      }
      ::_exit(5);
    } else if (first == "hang") {
      // Never replies; reads (and ignores) what comes until the host's end of the pipe closes,
      // so that a host killed meanwhile leaves no child behind.
      char sink[256];
      for (;;) {
        ssize_t got = ::read(in_fd, sink, sizeof sink);
        if (got == 0 || (got < 0 && errno != EINTR)) return 0;
      }
    } else if (first == "claim") {
      // A reply that announces far more bytes than it sends, then the child is gone.
      std::string bytes = "HFW1";
      put(bytes, kReply, 4);
      put(bytes, 1, 4);
      put(bytes, 0, 4);
      put(bytes, std::stoull(message.parts.at(1)), 8);
      bytes += "short";
      write_all(bytes);
      ::_exit(0);
    } else if (first == "pid") {
      write_message(kReply, {std::to_string(::getpid())});
    } else if (first == "env") {
      const char* value = message.parts.size() > 1 ? std::getenv(message.parts[1].c_str()) : nullptr;
      write_message(kReply, {value != nullptr ? value : ""});
    } else if (first == "ask") {
      write_message(kRequest, std::vector<std::string>(message.parts.begin() + 1, message.parts.end()));
      Message answer;
      if (!read_message(answer)) return 0;
      if (answer.kind == kAnswer) {
        write_message(kReply, answer.parts);
      } else {
        write_message(kReply, {"expected an answer (kind 6), got kind " + std::to_string(answer.kind)});
      }
    } else {
      write_message(kReply, message.parts);
    }
  }
  return 0;
}
