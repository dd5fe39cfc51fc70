#pragma once
// An n x n matrix of doubles cut into square tiles of `tile` (the last row and column of tiles
// are smaller when tile does not divide n), stored in one page-aligned allocation, and the data
// handles of its tiles.
#include <cstddef>
#include <cstdlib>
#include <hetflow/hetflow.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace linalg {

/// How the tiles lie in memory.
enum class Layout {
  tiles,  ///< each tile contiguous (its ld is its row count): cheap to copy to a device
  full,   ///< one column-major matrix (ld = n); each tile is a block of it
};
[[nodiscard]] std::string_view layout_name(Layout layout) noexcept;

class TiledMatrix {
 public:
  TiledMatrix(std::size_t n, std::size_t tile, Layout layout);

  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] std::size_t tile() const noexcept { return tile_; }
  [[nodiscard]] std::size_t tile_count() const noexcept { return tiles_; }
  [[nodiscard]] Layout layout() const noexcept { return layout_; }
  /// Rows (or columns) of tile row (column) `index`.
  [[nodiscard]] std::size_t extent(std::size_t index) const noexcept;
  [[nodiscard]] std::size_t start(std::size_t index) const noexcept { return index * tile_; }

  [[nodiscard]] double* tile_data(std::size_t i, std::size_t j) noexcept { return data_.get() + offset(i, j); }
  [[nodiscard]] std::size_t tile_ld(std::size_t i) const noexcept { return layout_ == Layout::full ? n_ : extent(i); }
  [[nodiscard]] double& at(std::size_t row, std::size_t col) noexcept;
  [[nodiscard]] double at(std::size_t row, std::size_t col) const noexcept;

  /// Copies from / to a column-major n x n matrix with leading dimension ld.
  void copy_from(const double* full, std::size_t ld);
  void copy_to(double* full, std::size_t ld) const;

 private:
  struct Free {
    void operator()(double* p) const noexcept { std::free(p); }
  };
  [[nodiscard]] std::size_t offset(std::size_t i, std::size_t j) const noexcept;

  std::size_t n_;
  std::size_t tile_;
  std::size_t tiles_;
  Layout layout_;
  std::unique_ptr<double[], Free> data_;
};

/// Which tiles to register.
enum class Part { all, lower };

/// The handles of a TiledMatrix's tiles. Declare it after the Runtime (so it goes first) and the
/// TiledMatrix before (so the memory outlives every task).
class TileHandles {
 public:
  TileHandles() = default;
  TileHandles(hetflow::Runtime& runtime, TiledMatrix& matrix, const std::string& name, Part part = Part::all);

  [[nodiscard]] const hetflow::DataHandle& operator()(std::size_t i, std::size_t j) const;
  /// Waits for the tasks on the tiles, brings the latest data back into the matrix and lets the
  /// handles go.
  void unregister(hetflow::Runtime& runtime);

 private:
  std::size_t tiles_ = 0;
  std::vector<hetflow::DataHandle> handles_;  // column by column; unregistered tiles are empty
};

}  // namespace linalg
