#pragma once
// The host bytes held by one engine's registered data, so that a registration over bytes that
// another handle holds is refused: two handles over the same memory would not order their tasks,
// and a writer through one would race the readers and writers through the other.
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "hetflow/data.hpp"

namespace hetflow::detail {

class HandleImpl;

class RegisteredMemory {
 public:
  /// Data laid out in more contiguous runs than this (a matrix of more columns, ld > nx) are
  /// neither checked nor recorded: the cost of the check grows with the runs.
  static constexpr std::size_t kMaxRuns = std::size_t{1} << 16;

  /// Records the bytes of `handle`'s host buffer (and sets its memory_recorded). Throws
  /// InvalidArgument, naming `where` and both data, when some of them belong to data recorded
  /// already, recording nothing then.
  void add(HandleImpl& handle, const std::string& where);
  /// Forgets the bytes recorded for `handle`, if any (idempotent).
  void remove(const HandleImpl& handle) noexcept;

 private:
  struct Run {
    std::uintptr_t end;  // one past its last byte
    const HandleImpl* owner;
  };
  std::mutex mutex_;
  std::map<std::uintptr_t, Run> runs_;  // by first byte; no two overlap
};

}  // namespace hetflow::detail
