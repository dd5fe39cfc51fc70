#pragma once
#include <cstdint>

namespace hetflow::detail {

/// A small per-worker random number generator (xorshift) for picking victims and targets.
class FastRandom {
 public:
  explicit FastRandom(std::uint64_t seed) noexcept : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() noexcept {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  /// Uniform in [0, bound).
  std::uint32_t below(std::uint32_t bound) noexcept {
    return static_cast<std::uint32_t>((static_cast<std::uint64_t>(static_cast<std::uint32_t>(next())) * bound) >> 32);
  }

 private:
  std::uint64_t state_;
};

}  // namespace hetflow::detail
