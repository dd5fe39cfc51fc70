#pragma once
#include <array>
#include <cstddef>
#include <memory>
#include <string>

#include "hetflow/export.hpp"

namespace hetflow {

namespace detail {
class HandleImpl;
}

/// The shape of a registered buffer. Sizes and strides count elements, not bytes.
/// A matrix is `nx` contiguous elements by `ny` with `ld` elements between the starts of
/// consecutive runs of nx (column-major, as BLAS and LAPACK expect: ld >= nx).
struct HETFLOW_API DataLayout {
  enum class Kind : unsigned char { variable, vector, matrix, block };
  static constexpr std::size_t kMaxDims = 4;

  Kind kind = Kind::variable;
  std::size_t elem_size = 0;
  std::size_t ndim = 0;
  std::array<std::size_t, kMaxDims> dims{};     // dims[0] is the contiguous dimension
  std::array<std::size_t, kMaxDims> strides{};  // strides[0] is 1

  static DataLayout variable(std::size_t elem_size);
  static DataLayout vector(std::size_t n, std::size_t elem_size);
  static DataLayout matrix(std::size_t nx, std::size_t ny, std::size_t ld, std::size_t elem_size);
  /// An N-d block (N <= 4): dims[0] contiguous, strides in elements, strides[0] must be 1.
  static DataLayout block(std::size_t ndim, const std::size_t* dims, const std::size_t* strides, std::size_t elem_size);

  [[nodiscard]] std::size_t element_count() const noexcept;
  /// Bytes of the payload (without the padding between leading-dimension runs).
  [[nodiscard]] std::size_t payload_bytes() const noexcept { return element_count() * elem_size; }
  /// Bytes from the first to one past the last element, padding included.
  [[nodiscard]] std::size_t span_bytes() const noexcept;
  [[nodiscard]] std::size_t nx() const noexcept { return ndim > 0 ? dims[0] : 1; }
  [[nodiscard]] std::size_t ny() const noexcept { return ndim > 1 ? dims[1] : 1; }
  [[nodiscard]] std::size_t nz() const noexcept { return ndim > 2 ? dims[2] : 1; }
  [[nodiscard]] std::size_t ld() const noexcept { return ndim > 1 ? strides[1] : nx(); }
};

/// A buffer as one implementation sees it: the replica on the worker's memory node.
struct DataView {
  void* ptr = nullptr;
  DataLayout layout{};

  template <class T>
  [[nodiscard]] T* as() const noexcept {
    return static_cast<T*>(ptr);
  }
  [[nodiscard]] std::size_t nx() const noexcept { return layout.nx(); }
  [[nodiscard]] std::size_t ny() const noexcept { return layout.ny(); }
  [[nodiscard]] std::size_t nz() const noexcept { return layout.nz(); }
  [[nodiscard]] std::size_t ld() const noexcept { return layout.ld(); }
  [[nodiscard]] std::size_t elements() const noexcept { return layout.element_count(); }
};

/// A registered buffer. Copies refer to the same registration. Obtained from
/// `Runtime::register_*`; stays valid (but unusable for new tasks) after `Runtime::unregister`.
class HETFLOW_API DataHandle {
 public:
  DataHandle() = default;
  explicit DataHandle(std::shared_ptr<detail::HandleImpl> impl) noexcept : impl_(std::move(impl)) {}

  [[nodiscard]] explicit operator bool() const noexcept { return impl_ != nullptr; }
  [[nodiscard]] const DataLayout& layout() const;
  [[nodiscard]] const std::string& name() const;
  /// The user's buffer (the host replica).
  [[nodiscard]] void* host_ptr() const;
  [[nodiscard]] bool registered() const noexcept;
  [[nodiscard]] detail::HandleImpl* impl() const noexcept { return impl_.get(); }
  bool operator==(const DataHandle& other) const noexcept = default;

 private:
  std::shared_ptr<detail::HandleImpl> impl_;
};

}  // namespace hetflow
