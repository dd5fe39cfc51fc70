#include "data/memory_node.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

namespace hetflow::detail {

void* HostMemoryNode::allocate(std::size_t bytes) {
  void* ptr = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (ptr == nullptr) throw std::bad_alloc();
  return ptr;
}

void HostMemoryNode::free(void* ptr) noexcept { std::free(ptr); }

void HostMemoryNode::copy_in(void* dst, const void* host_src, std::size_t bytes) { std::memcpy(dst, host_src, bytes); }

void HostMemoryNode::copy_out(void* host_dst, const void* src, std::size_t bytes) { std::memcpy(host_dst, src, bytes); }

}  // namespace hetflow::detail
