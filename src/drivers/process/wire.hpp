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
/// Reads one message; nullopt on end of file (at any point). Throws Error on a garbled stream.
std::optional<ProcessMessage> read_message(int fd);

}  // namespace hetflow::detail
