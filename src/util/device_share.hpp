#pragma once
// Dealing a machine's devices between the processes that share it (the MPI ranks on one node):
// process `part` of `parts` gets devices part, part + parts, part + 2 * parts, ...; when there
// are fewer devices than processes, device part % count, shared with others.
#include <cstddef>
#include <vector>

namespace hetflow::detail {

[[nodiscard]] inline std::vector<std::size_t> dealt_share(std::size_t count, std::size_t part, std::size_t parts) {
  std::vector<std::size_t> share;
  if (count == 0 || parts == 0) return share;
  if (count < parts) {
    share.push_back(part % count);
    return share;
  }
  for (std::size_t device = part; device < count; device += parts) share.push_back(device);
  return share;
}

}  // namespace hetflow::detail
