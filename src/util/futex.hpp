#pragma once
// Blocking on a 32-bit atomic with an optional deadline (std::atomic::wait has none).
#include <atomic>
#include <chrono>
#include <cstdint>

namespace hetflow::detail {

/// Sleeps while `word` holds `expected`, until woken or the deadline passes (spurious returns
/// are possible: callers re-check). Returns false only when the deadline passed.
bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                const std::chrono::steady_clock::time_point* deadline = nullptr) noexcept;
void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept;
inline void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept { futex_wake(word, 1 << 30); }

}  // namespace hetflow::detail
