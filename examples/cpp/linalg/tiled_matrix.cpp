#include "tiled_matrix.hpp"

#include <algorithm>
#include <cstring>
#include <new>

namespace linalg {

std::string_view layout_name(Layout layout) noexcept { return layout == Layout::full ? "full" : "tiles"; }

TiledMatrix::TiledMatrix(std::size_t n, std::size_t tile, Layout layout)
    : n_(n), tile_(tile), tiles_(tile == 0 ? 0 : (n + tile - 1) / tile), layout_(layout) {
  if (n == 0 || tile == 0) throw hetflow::InvalidArgument("TiledMatrix: the size and the tile size must be positive");
  // Page-aligned so that a device driver can pin (page-lock) it for fast copies.
  constexpr std::size_t kPage = 4096;
  const std::size_t bytes = (n * n * sizeof(double) + kPage - 1) / kPage * kPage;
  data_.reset(static_cast<double*>(std::aligned_alloc(kPage, bytes)));
  if (!data_) throw std::bad_alloc();
  std::memset(data_.get(), 0, bytes);
}

std::size_t TiledMatrix::extent(std::size_t index) const noexcept { return std::min(tile_, n_ - index * tile_); }

std::size_t TiledMatrix::offset(std::size_t i, std::size_t j) const noexcept {
  // Either layout keeps each column of tiles in its own n x extent(j) slab; they differ in how
  // a slab is cut: by row blocks stacked one after another, or as one column-major block.
  const std::size_t slab = start(j) * n_;
  return layout_ == Layout::full ? slab + start(i) : slab + start(i) * extent(j);
}

double& TiledMatrix::at(std::size_t row, std::size_t col) noexcept {
  const std::size_t i = row / tile_, j = col / tile_;
  return data_[offset(i, j) + (col - start(j)) * tile_ld(i) + (row - start(i))];
}

double TiledMatrix::at(std::size_t row, std::size_t col) const noexcept {
  const std::size_t i = row / tile_, j = col / tile_;
  return data_[offset(i, j) + (col - start(j)) * tile_ld(i) + (row - start(i))];
}

void TiledMatrix::copy_from(const double* full, std::size_t ld) {
  for (std::size_t j = 0; j < tiles_; ++j) {
    for (std::size_t i = 0; i < tiles_; ++i) {
      double* tile = tile_data(i, j);
      for (std::size_t c = 0; c < extent(j); ++c) {
        std::copy_n(full + (start(j) + c) * ld + start(i), extent(i), tile + c * tile_ld(i));
      }
    }
  }
}

void TiledMatrix::copy_to(double* full, std::size_t ld) const {
  for (std::size_t j = 0; j < tiles_; ++j) {
    for (std::size_t i = 0; i < tiles_; ++i) {
      const double* tile = data_.get() + offset(i, j);
      for (std::size_t c = 0; c < extent(j); ++c) {
        std::copy_n(tile + c * tile_ld(i), extent(i), full + (start(j) + c) * ld + start(i));
      }
    }
  }
}

TileHandles::TileHandles(hetflow::Runtime& runtime, TiledMatrix& matrix, const std::string& name, Part part)
    : tiles_(matrix.tile_count()), handles_(tiles_ * tiles_) {
  for (std::size_t j = 0; j < tiles_; ++j) {
    for (std::size_t i = part == Part::lower ? j : 0; i < tiles_; ++i) {
      handles_[j * tiles_ + i] =
          runtime.register_matrix(matrix.tile_data(i, j), matrix.extent(i), matrix.extent(j), matrix.tile_ld(i),
                                  name + "[" + std::to_string(i) + "," + std::to_string(j) + "]");
    }
  }
}

const hetflow::DataHandle& TileHandles::operator()(std::size_t i, std::size_t j) const {
  const hetflow::DataHandle& handle = handles_.at(j * tiles_ + i);
  if (!handle) {
    throw hetflow::InvalidArgument("TileHandles: tile (" + std::to_string(i) + "," + std::to_string(j) +
                                   ") is not registered");
  }
  return handle;
}

void TileHandles::unregister(hetflow::Runtime& runtime) {
  for (hetflow::DataHandle& handle : handles_) {
    if (handle) runtime.unregister(handle);
  }
  handles_.clear();
  tiles_ = 0;
}

}  // namespace linalg
