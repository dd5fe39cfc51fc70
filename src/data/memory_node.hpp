#pragma once
// A place data can live. Host RAM is node 0; device drivers add one node per device.
#include <cstddef>
#include <string>

namespace hetflow::detail {

class MemoryNode {
 public:
  virtual ~MemoryNode() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  [[nodiscard]] virtual void* allocate(std::size_t bytes) = 0;
  virtual void free(void* ptr) noexcept = 0;
  /// Copies `bytes` from a host buffer into this node's buffer, and back.
  virtual void copy_in(void* dst, const void* host_src, std::size_t bytes) = 0;
  virtual void copy_out(void* host_dst, const void* src, std::size_t bytes) = 0;
};

class HostMemoryNode final : public MemoryNode {
 public:
  [[nodiscard]] std::string name() const override { return "host"; }
  [[nodiscard]] void* allocate(std::size_t bytes) override;
  void free(void* ptr) noexcept override;
  void copy_in(void* dst, const void* host_src, std::size_t bytes) override;
  void copy_out(void* host_dst, const void* src, std::size_t bytes) override;
};

inline constexpr unsigned kHostNode = 0;

}  // namespace hetflow::detail
