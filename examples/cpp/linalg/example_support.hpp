#pragma once
// What the cholesky and tiled_gemm programs share: their command line, the runtime set-up from
// it, host matrices, and reporting.
#include <cstddef>
#include <cstdint>
#include <hetflow/hetflow.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tiled_matrix.hpp"

namespace linalg {

struct ExampleOptions {
  std::size_t n = 0;
  std::size_t tile = 0;
  bool opencl = false;  ///< add the OpenCL driver
  bool cuda = false;    ///< add the CUDA driver
  std::string where_name = "any";
  hetflow::ArchMask where = hetflow::ArchMask::all();  ///< TaskOptions::where of every task
  bool check = false;
  unsigned repeat = 1;
  Layout layout = Layout::tiles;
  std::optional<std::string> scheduler;
  std::optional<unsigned> ncpus;
  bool vendor = false;      ///< --cublas / --cusolver: time the vendor library on the whole matrix
  bool indefinite = false;  ///< (cholesky) make the matrix not positive definite, to see the error
  std::string trace;        ///< Chrome trace file, empty for none
};

/// What differs between the programs' command lines.
struct ExampleSpec {
  const char* program;
  const char* summary;
  std::size_t default_n;
  std::size_t default_tile;
  const char* vendor_flag;  ///< "--cublas" or "--cusolver"
  const char* vendor_help;
  bool has_indefinite;
  bool has_full_layout = true;  ///< --layout full (one buffer for the whole matrix) is offered
};

/// Parses the command line; prints the usage and exits (0 for --help, 2 for a mistake).
[[nodiscard]] ExampleOptions parse_options(int argc, char** argv, const ExampleSpec& spec);

/// The runtime configuration: the scheduler and CPU count asked for, and the drivers.
[[nodiscard]] hetflow::Config make_config(const ExampleOptions& options);

/// Exit status of a program that found no worker for its tasks (no device of the kind asked
/// for): what ctest's SKIP_RETURN_CODE takes as "skipped".
inline constexpr int kNoWorkerExitStatus = 77;

/// Prints the workers and the scheduler. Returns false, after saying why, when the tasks may
/// only run on an architecture that has no worker.
[[nodiscard]] bool describe_runtime(const hetflow::Runtime& runtime, const ExampleOptions& options);

/// A column-major n x n matrix of uniform values in [-1, 1), the same for the same seed.
[[nodiscard]] std::vector<double> random_matrix(std::size_t n, std::uint64_t seed);
/// A symmetric matrix made positive definite by a dominant diagonal (random in [-1, 1) + n).
[[nodiscard]] std::vector<double> random_spd_matrix(std::size_t n, std::uint64_t seed);
/// Rows [first_row, first_row + rows) of columns [first_col, first_col + cols) of
/// random_spd_matrix(n, seed), the same values, written column-major with leading dimension ld
/// into `out`: a process that holds some tiles of the matrix fills them without the rest.
void fill_random_spd_block(double* out, std::size_t ld, std::size_t n, std::uint64_t seed, std::size_t first_row,
                           std::size_t first_col, std::size_t rows, std::size_t cols);

/// Waits for every future; prints the first failure that is not a dependency's (and how many
/// tasks failed) on stderr. Returns whether all succeeded.
[[nodiscard]] bool report_failures(const std::vector<hetflow::Future<void>>& futures, const char* program);

/// "12.34 GFLOP/s" (three significant digits below 1).
[[nodiscard]] std::string rate_text(double flops, double seconds);

/// Times of the runs: prints the first, the best and the mean as seconds and GFLOP/s.
void print_times(const std::vector<double>& seconds, double flops);

}  // namespace linalg
