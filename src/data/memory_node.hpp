#pragma once
// Memory nodes are numbered: host RAM is node 0, each device node a driver brings follows
// (see ext/memory_node.hpp and NodeMemory).

namespace hetflow::detail {

inline constexpr unsigned kHostNode = 0;

}  // namespace hetflow::detail
