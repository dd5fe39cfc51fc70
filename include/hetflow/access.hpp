#pragma once
#include <cstdint>
#include <string_view>
#include <utility>

#include "hetflow/data.hpp"
#include "hetflow/export.hpp"

namespace hetflow {

/// How a task uses a data handle; dependencies are inferred from it in submission order.
/// Redux: the task adds a contribution to the data (`x += ...`, in any order). One Runtime runs
/// such tasks as RW, one after the other; hetflow::mpi::Context lets each rank gather its own
/// contributions and combines them on the data's owner (see Context::set_reduction).
enum class AccessMode : std::uint8_t { R = 1, W = 2, RW = 3, Redux = 7 };

/// "R", "W", "RW" or "REDUX" (case-insensitive); anything else throws InvalidArgument naming the
/// bad text.
HETFLOW_API AccessMode parse_access_mode(std::string_view text);
HETFLOW_API std::string_view access_mode_name(AccessMode mode) noexcept;

[[nodiscard]] constexpr bool reads(AccessMode mode) noexcept { return (static_cast<unsigned>(mode) & 1u) != 0; }
[[nodiscard]] constexpr bool writes(AccessMode mode) noexcept { return (static_cast<unsigned>(mode) & 2u) != 0; }

/// One data handle used by a task, with its access mode.
struct DataAccess {
  DataHandle handle{};
  AccessMode mode = AccessMode::R;
};

inline DataAccess R(DataHandle handle) { return {std::move(handle), AccessMode::R}; }
inline DataAccess W(DataHandle handle) { return {std::move(handle), AccessMode::W}; }
inline DataAccess RW(DataHandle handle) { return {std::move(handle), AccessMode::RW}; }
inline DataAccess Redux(DataHandle handle) { return {std::move(handle), AccessMode::Redux}; }

}  // namespace hetflow
