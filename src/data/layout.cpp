#include "data/layout.hpp"

#include <string>

#include "hetflow/error.hpp"

namespace hetflow {

DataLayout DataLayout::variable(std::size_t elem_size) {
  DataLayout layout;
  layout.kind = Kind::variable;
  layout.elem_size = elem_size;
  return layout;
}

namespace {

// DataLayout::block's work, its errors named after the call the application made (a vector of
// (size_t)-1 elements is refused by "DataLayout::vector", not by a block it never asked for).
DataLayout checked_block(std::size_t ndim, const std::size_t* dims, const std::size_t* strides, std::size_t elem_size,
                         DataLayout::Kind kind, const char* where) {
  if (ndim == 0 || ndim > DataLayout::kMaxDims) {
    throw InvalidArgument(std::string(where) + ": " + std::to_string(ndim) + " dimensions; 1 to " +
                          std::to_string(DataLayout::kMaxDims) + " are supported");
  }
  DataLayout layout;
  layout.kind = kind;
  layout.elem_size = elem_size;
  layout.ndim = ndim;
  for (std::size_t d = 0; d < ndim; ++d) {
    layout.dims[d] = dims[d];
    layout.strides[d] = strides[d];
  }
  detail::check_layout(layout, where);
  return layout;
}

}  // namespace

DataLayout DataLayout::vector(std::size_t n, std::size_t elem_size) {
  std::size_t dims[] = {n};
  std::size_t strides[] = {1};
  return checked_block(1, dims, strides, elem_size, Kind::vector, "DataLayout::vector");
}

DataLayout DataLayout::matrix(std::size_t nx, std::size_t ny, std::size_t ld, std::size_t elem_size) {
  if (ld < nx) {
    throw InvalidArgument("DataLayout::matrix: leading dimension " + std::to_string(ld) + " is smaller than nx " +
                          std::to_string(nx));
  }
  std::size_t dims[] = {nx, ny};
  std::size_t strides[] = {1, ld};
  return checked_block(2, dims, strides, elem_size, Kind::matrix, "DataLayout::matrix");
}

DataLayout DataLayout::block(std::size_t ndim, const std::size_t* dims, const std::size_t* strides,
                             std::size_t elem_size) {
  return checked_block(ndim, dims, strides, elem_size, Kind::block, "DataLayout::block");
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

namespace hetflow::detail {

namespace {

[[nodiscard]] bool multiply(std::size_t a, std::size_t b, std::size_t& product) noexcept {
  return !__builtin_mul_overflow(a, b, &product);
}

}  // namespace

void check_layout(const DataLayout& layout, const std::string& where) {
  const auto refuse = [&where](const std::string& why) { throw InvalidArgument(where + ": " + why); };
  if (layout.ndim > DataLayout::kMaxDims) {
    refuse(std::to_string(layout.ndim) + " dimensions; at most " + std::to_string(DataLayout::kMaxDims) +
           " are supported");
  }
  if (layout.ndim == 0) return;  // a variable: one element
  if (layout.strides[0] != 1) refuse("the first dimension must be contiguous (stride 1)");
  std::size_t elements = 1;
  std::size_t last = 0;  // the offset of the last element, in elements
  for (std::size_t d = 0; d < layout.ndim; ++d) {
    std::size_t extent = 0;  // what dimensions 0..d-1 span, in elements
    if (d > 0 && (!multiply(layout.strides[d - 1], layout.dims[d - 1], extent) || layout.strides[d] < extent)) {
      refuse("stride " + std::to_string(layout.strides[d]) + " of dimension " + std::to_string(d) +
             " overlaps the previous dimension (needs at least " +
             std::to_string(layout.strides[d - 1] * layout.dims[d - 1]) + ")");
    }
    std::size_t reach = 0;
    if (!multiply(elements, layout.dims[d], elements) ||
        (layout.dims[d] > 0 &&
         (!multiply(layout.dims[d] - 1, layout.strides[d], reach) || __builtin_add_overflow(last, reach, &last)))) {
      refuse("the dimensions hold more elements than a size_t counts");
    }
  }
  std::size_t bytes = 0;
  if (elements > 0 && (!multiply(last + 1, layout.elem_size, bytes) || last + 1 == 0)) {
    refuse("the data span more bytes than a size_t counts");
  }
}

}  // namespace hetflow::detail
