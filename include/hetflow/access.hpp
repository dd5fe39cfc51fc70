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
/// PartR, PartW: the task reads, or writes, only part of this data. Tasks naming one handle PartR
/// or PartW do not wait for each other: the program orders those whose parts overlap by other
/// means (Python declares them on the views that a task's own view overlaps but does not hold,
/// and each task's own view orders it with the others overlapping that view). A whole access
/// waits for them and they wait for it, except PartR and R, which only read. A part write takes
/// the outcome of the handle's last writer as RW does (a failed writer fails it), and a failed
/// part write fails the whole reads after it until the next whole write. Tasks only (not
/// acquisitions); not for hetflow::mpi. A task that may run on a device (a codelet with a CUDA
/// or OpenCL implementation) takes them as R and RW: a device holds a copy of the whole data,
/// and parts written on two memory nodes at once would lose one of them.
enum class AccessMode : std::uint8_t { R = 1, W = 2, RW = 3, Redux = 7, PartR = 9, PartW = 11 };

/// "R", "W", "RW", "REDUX", "PART-R" or "PART-W" (case-insensitive); anything else throws
/// InvalidArgument naming the bad text.
HETFLOW_API AccessMode parse_access_mode(std::string_view text);
HETFLOW_API std::string_view access_mode_name(AccessMode mode) noexcept;

[[nodiscard]] constexpr bool reads(AccessMode mode) noexcept { return (static_cast<unsigned>(mode) & 1u) != 0; }
[[nodiscard]] constexpr bool writes(AccessMode mode) noexcept { return (static_cast<unsigned>(mode) & 2u) != 0; }
/// PartR or PartW: the task uses only part of the data.
[[nodiscard]] constexpr bool partial(AccessMode mode) noexcept { return (static_cast<unsigned>(mode) & 8u) != 0; }
/// Whether an access with `later` on a handle waits for one with `earlier` on it.
[[nodiscard]] constexpr bool conflict(AccessMode earlier, AccessMode later) noexcept {
  return !(partial(earlier) && partial(later)) && (writes(earlier) || writes(later));
}
/// `mode` on the whole data: PartR as R, PartW as RW.
[[nodiscard]] constexpr AccessMode whole(AccessMode mode) noexcept {
  return static_cast<AccessMode>(static_cast<unsigned>(mode) & 7u);
}
/// The one access that does what `a` and `b` on the same handle do: their union, a part access
/// only if both are (with a whole access it is the whole data's).
[[nodiscard]] constexpr AccessMode both_modes(AccessMode a, AccessMode b) noexcept {
  const auto both = static_cast<AccessMode>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
  return partial(a) && partial(b) ? both : whole(both);
}

/// One data handle used by a task, with its access mode.
struct DataAccess {
  DataHandle handle{};
  AccessMode mode = AccessMode::R;
};

inline DataAccess R(DataHandle handle) { return {std::move(handle), AccessMode::R}; }
inline DataAccess W(DataHandle handle) { return {std::move(handle), AccessMode::W}; }
inline DataAccess RW(DataHandle handle) { return {std::move(handle), AccessMode::RW}; }
inline DataAccess Redux(DataHandle handle) { return {std::move(handle), AccessMode::Redux}; }
inline DataAccess PartR(DataHandle handle) { return {std::move(handle), AccessMode::PartR}; }
inline DataAccess PartW(DataHandle handle) { return {std::move(handle), AccessMode::PartW}; }

}  // namespace hetflow
