#include <string>

#include "hetflow/data.hpp"
#include "hetflow/error.hpp"

namespace hetflow {

DataLayout DataLayout::variable(std::size_t elem_size) {
  DataLayout layout;
  layout.kind = Kind::variable;
  layout.elem_size = elem_size;
  return layout;
}

DataLayout DataLayout::vector(std::size_t n, std::size_t elem_size) {
  std::size_t dims[] = {n};
  std::size_t strides[] = {1};
  DataLayout layout = block(1, dims, strides, elem_size);
  layout.kind = Kind::vector;
  return layout;
}

DataLayout DataLayout::matrix(std::size_t nx, std::size_t ny, std::size_t ld, std::size_t elem_size) {
  if (ld < nx) {
    throw InvalidArgument("DataLayout::matrix: leading dimension " + std::to_string(ld) + " is smaller than nx " +
                          std::to_string(nx));
  }
  std::size_t dims[] = {nx, ny};
  std::size_t strides[] = {1, ld};
  DataLayout layout = block(2, dims, strides, elem_size);
  layout.kind = Kind::matrix;
  return layout;
}

DataLayout DataLayout::block(std::size_t ndim, const std::size_t* dims, const std::size_t* strides,
                             std::size_t elem_size) {
  if (ndim == 0 || ndim > kMaxDims) {
    throw InvalidArgument("DataLayout::block: " + std::to_string(ndim) + " dimensions; 1 to " +
                          std::to_string(kMaxDims) + " are supported");
  }
  if (strides[0] != 1) throw InvalidArgument("DataLayout::block: the first dimension must be contiguous (stride 1)");
  DataLayout layout;
  layout.kind = Kind::block;
  layout.elem_size = elem_size;
  layout.ndim = ndim;
  for (std::size_t d = 0; d < ndim; ++d) {
    layout.dims[d] = dims[d];
    layout.strides[d] = strides[d];
    if (d > 0 && strides[d] < strides[d - 1] * dims[d - 1]) {
      throw InvalidArgument("DataLayout::block: stride " + std::to_string(strides[d]) + " of dimension " +
                            std::to_string(d) + " overlaps the previous dimension (needs at least " +
                            std::to_string(strides[d - 1] * dims[d - 1]) + ")");
    }
  }
  return layout;
}

std::size_t DataLayout::element_count() const noexcept {
  std::size_t count = 1;
  for (std::size_t d = 0; d < ndim; ++d) count *= dims[d];
  return count;
}

std::size_t DataLayout::span_bytes() const noexcept {
  if (element_count() == 0) return 0;
  std::size_t last = 0;
  for (std::size_t d = 0; d < ndim; ++d) last += (dims[d] - 1) * strides[d];
  return (last + 1) * elem_size;
}

}  // namespace hetflow
