#pragma once
#include <cstdint>
#include <string_view>

#include "hetflow/export.hpp"

namespace hetflow {

/// A kind of processor a task implementation can run on.
enum class Arch : std::uint8_t { cpu = 0, cuda = 1, opencl = 2, process = 3 };

inline constexpr unsigned kArchCount = 4;

HETFLOW_API std::string_view arch_name(Arch arch) noexcept;

/// A set of architectures, e.g. the ones a task may run on.
class ArchMask {
 public:
  constexpr ArchMask() noexcept = default;
  constexpr ArchMask(Arch arch) noexcept : bits_(bit(arch)) {}  // NOLINT: implicit by design
  static constexpr ArchMask all() noexcept { return from_bits((1u << kArchCount) - 1); }
  static constexpr ArchMask from_bits(std::uint32_t bits) noexcept {
    ArchMask mask;
    mask.bits_ = bits;
    return mask;
  }

  [[nodiscard]] constexpr bool contains(Arch arch) const noexcept { return (bits_ & bit(arch)) != 0; }
  [[nodiscard]] constexpr bool empty() const noexcept { return bits_ == 0; }
  [[nodiscard]] constexpr std::uint32_t bits() const noexcept { return bits_; }
  constexpr ArchMask operator|(ArchMask other) const noexcept { return from_bits(bits_ | other.bits_); }
  constexpr ArchMask operator&(ArchMask other) const noexcept { return from_bits(bits_ & other.bits_); }
  constexpr bool operator==(const ArchMask&) const noexcept = default;

 private:
  static constexpr std::uint32_t bit(Arch arch) noexcept { return 1u << static_cast<unsigned>(arch); }
  std::uint32_t bits_ = 0;
};

constexpr ArchMask operator|(Arch a, Arch b) noexcept { return ArchMask(a) | ArchMask(b); }

}  // namespace hetflow
