// A tiled matrix product C = A * B over registered tiles. Every tile task names the tiles it
// reads and writes; hetflow infers the order (each C tile accumulates its k products one after
// another) and runs independent tiles in parallel. Prints what ran where and checks the result.
//
//   tiled_gemm [matrix size] [tile size]
#include <hetflow/hetflow.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

struct TiledMatrix {
  std::size_t tiles;
  std::size_t tile;
  std::vector<std::vector<double>> storage;  // one column-major tile each
  std::vector<hetflow::DataHandle> handles;

  TiledMatrix(hetflow::Runtime& rt, std::size_t tile_count, std::size_t tile_size, const std::string& name)
      : tiles(tile_count), tile(tile_size), storage(tile_count * tile_count, std::vector<double>(tile_size * tile_size)) {
    for (std::size_t j = 0; j < tiles; ++j) {
      for (std::size_t i = 0; i < tiles; ++i) {
        handles.push_back(rt.register_matrix(at(i, j).data(), tile, tile, tile,
                                             name + "[" + std::to_string(i) + "," + std::to_string(j) + "]"));
      }
    }
  }
  std::vector<double>& at(std::size_t i, std::size_t j) { return storage[j * tiles + i]; }
  hetflow::DataHandle& handle(std::size_t i, std::size_t j) { return handles[j * tiles + i]; }
  double& element(std::size_t row, std::size_t col) { return at(row / tile, col / tile)[(col % tile) * tile + row % tile]; }
};

// C_tile += A_tile * B_tile, column-major, i-k-j loop order for unit-stride inner loops.
void gemm_tile(hetflow::TaskContext& context) {
  const hetflow::DataView a = context.buffer(0);
  const hetflow::DataView b = context.buffer(1);
  const hetflow::DataView c = context.buffer(2);
  const std::size_t n = c.nx();
  const double* pa = a.as<double>();
  const double* pb = b.as<double>();
  double* pc = c.as<double>();
  for (std::size_t col = 0; col < n; ++col) {
    for (std::size_t k = 0; k < n; ++k) {
      const double bkj = pb[col * b.ld() + k];
      for (std::size_t row = 0; row < n; ++row) pc[col * c.ld() + row] += pa[k * a.ld() + row] * bkj;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 768;
  const std::size_t tile = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 96;
  if (tile == 0 || n == 0 || n % tile != 0) {
    std::fprintf(stderr, "tiled_gemm: the matrix size (%zu) must be a positive multiple of the tile size (%zu)\n", n,
                 tile);
    return 2;
  }
  const std::size_t tiles = n / tile;

  hetflow::Runtime rt;
  std::printf("hetflow runtime: %u workers, scheduler '%s'\n", rt.worker_count(), rt.scheduler_name().c_str());

  TiledMatrix a(rt, tiles, tile, "A"), b(rt, tiles, tile, "B"), c(rt, tiles, tile, "C");
  std::mt19937_64 random(7);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  for (std::size_t col = 0; col < n; ++col) {
    for (std::size_t row = 0; row < n; ++row) {
      a.element(row, col) = uniform(random);
      b.element(row, col) = uniform(random);
    }
  }

  std::vector<std::atomic<unsigned>> tasks_per_worker(rt.worker_count());
  hetflow::Codelet gemm{.name = "gemm_tile", .cpu = [&](hetflow::TaskContext& context) {
                          gemm_tile(context);
                          tasks_per_worker[context.worker_id()].fetch_add(1, std::memory_order_relaxed);
                        }};

  const auto start = std::chrono::steady_clock::now();
  for (std::size_t k = 0; k < tiles; ++k) {
    for (std::size_t j = 0; j < tiles; ++j) {
      for (std::size_t i = 0; i < tiles; ++i) {
        rt.insert(gemm, {.data = {hetflow::R(a.handle(i, k)), hetflow::R(b.handle(k, j)), hetflow::RW(c.handle(i, j))},
                         .priority = static_cast<int>(tiles - k)});
      }
    }
  }
  // A task over the finished C: the Frobenius norm, returned through a future.
  std::vector<hetflow::DataAccess> all_of_c;
  for (auto& handle : c.handles) all_of_c.push_back(hetflow::R(handle));
  auto norm = rt.submit({.data_list = all_of_c, .name = "norm"}, [&c, tiles] {
        double sum = 0;
        for (std::size_t t = 0; t < tiles * tiles; ++t) {
          for (double v : c.storage[t]) sum += v * v;
        }
        return std::sqrt(sum);
      });
  rt.wait_all();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::printf("C = A * B, %zu x %zu in %zu x %zu tiles of %zu: %zu tile tasks in %.3f s (%.2f GFLOP/s)\n", n, n, tiles,
              tiles, tile, tiles * tiles * tiles, seconds, 2.0 * n * n * n / seconds * 1e-9);
  for (std::size_t w = 0; w < tasks_per_worker.size(); ++w) {
    std::printf("  worker %zu (%s): %u tasks\n", w, std::string(hetflow::arch_name(rt.workers()[w].arch)).c_str(),
                tasks_per_worker[w].load());
  }

  // Check a sample of entries against a direct product.
  double worst = 0;
  for (std::size_t s = 0; s < 64; ++s) {
    const std::size_t row = (s * 131) % n, col = (s * 71) % n;
    double expected = 0;
    for (std::size_t k = 0; k < n; ++k) expected += a.element(row, k) * b.element(k, col);
    worst = std::max(worst, std::abs(expected - c.element(row, col)));
  }
  std::printf("Frobenius norm of C: %.6f; largest error on 64 sampled entries: %.2e\n", norm.get(), worst);
  if (worst > 1e-9 * static_cast<double>(n)) {
    std::fprintf(stderr, "tiled_gemm: result differs from the direct product\n");
    return 1;
  }
  std::printf("result checked: OK\n");
  return 0;
}
