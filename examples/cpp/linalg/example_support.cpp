#include "example_support.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <numeric>
#include <string_view>

#include "linalg.hpp"

#ifdef HETFLOW_EXAMPLE_WITH_OPENCL
#include <hetflow/opencl.hpp>
#endif
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
#include <hetflow/cuda.hpp>
#endif

namespace linalg {
namespace {

void print_usage(std::FILE* out, const ExampleSpec& spec) {
  std::fprintf(out,
               "%s\n\n"
               "usage: %s [--n N] [--tile B] [--opencl] [--cuda] [--where cpu|opencl|cuda|any] [--check]\n"
               "       [--repeat R]%s [--sched NAME] [--ncpus N] [--trace FILE] [%s]%s\n\n"
               "  --n N          matrix order (default %zu)\n"
               "  --tile B       tile order (default %zu); B need not divide N\n"
               "  --opencl       add the OpenCL driver (CPU devices too with HETFLOW_OPENCL_DEVICES=all)%s\n"
               "  --cuda         add the CUDA driver%s\n"
               "  --where ARCH   run every task on ARCH only (implies its driver); default any\n"
               "  --check        compare with LAPACK/BLAS on the host; exit status 1 if too far off\n"
               "  --repeat R     run R times (performance models learn on the way)\n"
               "%s"
               "  --sched NAME   scheduler (ws, eager, prio, random, dm, dmda, dmdas; default HETFLOW_SCHED or ws)\n"
               "  --ncpus N      CPU workers (default HETFLOW_NCPUS or one per CPU)\n"
               "  --trace FILE   write a Chrome trace (Perfetto) at shutdown\n"
               "  %-14s %s%s\n",
               spec.summary, spec.program, spec.has_full_layout ? " [--layout tiles|full]" : "", spec.vendor_flag,
               spec.has_indefinite ? " [--indefinite]" : "", spec.default_n, spec.default_tile,
               built_with_opencl() ? "" : " [not in this build]", built_with_cuda() ? "" : " [not in this build]",
               spec.has_full_layout
                   ? "  --layout L     tiles: each tile contiguous (default); full: blocks of one matrix\n"
                   : "",
               spec.vendor_flag, spec.vendor_help, built_with_cuda() ? "" : " [not in this build]");
  if (spec.has_indefinite) {
    std::fprintf(out,
                 "  --indefinite   make the matrix not positive definite (shows how a failing tile is reported)\n");
  }
}

[[noreturn]] void usage_error(const ExampleSpec& spec, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n\n", spec.program, message.c_str());
  print_usage(stderr, spec);
  std::exit(2);
}

template <class T>
T parse_number(const ExampleSpec& spec, std::string_view flag, std::string_view text) {
  T value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) {
    usage_error(spec, std::string(flag) + " needs a non-negative integer, not '" + std::string(text) + "'");
  }
  return value;
}

}  // namespace

ExampleOptions parse_options(int argc, char** argv, const ExampleSpec& spec) {
  ExampleOptions options;
  options.n = spec.default_n;
  options.tile = spec.default_tile;
  std::size_t positional = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) usage_error(spec, std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      print_usage(stdout, spec);
      std::exit(0);
    } else if (arg == "--n") {
      options.n = parse_number<std::size_t>(spec, arg, value());
    } else if (arg == "--tile") {
      options.tile = parse_number<std::size_t>(spec, arg, value());
    } else if (arg == "--opencl") {
      options.opencl = true;
    } else if (arg == "--cuda") {
      options.cuda = true;
    } else if (arg == "--where") {
      options.where_name = value();
      if (options.where_name == "cpu") {
        options.where = hetflow::Arch::cpu;
      } else if (options.where_name == "opencl") {
        options.where = hetflow::Arch::opencl;
        options.opencl = true;
      } else if (options.where_name == "cuda") {
        options.where = hetflow::Arch::cuda;
        options.cuda = true;
      } else if (options.where_name == "any") {
        options.where = hetflow::ArchMask::all();
      } else {
        usage_error(spec, "--where takes cpu, opencl, cuda or any, not '" + options.where_name + "'");
      }
    } else if (arg == "--check") {
      options.check = true;
    } else if (arg == "--repeat") {
      options.repeat = parse_number<unsigned>(spec, arg, value());
    } else if (arg == "--layout") {
      const std::string_view layout = value();
      if (layout == "tiles") {
        options.layout = Layout::tiles;
      } else if (layout == "full" && spec.has_full_layout) {
        options.layout = Layout::full;
      } else if (layout == "full") {
        usage_error(spec, "--layout full is not offered: each tile is a buffer of its own");
      } else {
        usage_error(spec, "--layout takes tiles or full, not '" + std::string(layout) + "'");
      }
    } else if (arg == "--sched") {
      options.scheduler = std::string(value());
    } else if (arg == "--ncpus") {
      options.ncpus = parse_number<unsigned>(spec, arg, value());
    } else if (arg == "--trace") {
      options.trace = value();
    } else if (arg == spec.vendor_flag) {
      options.vendor = true;
    } else if (spec.has_indefinite && arg == "--indefinite") {
      options.indefinite = true;
    } else if (!arg.empty() && arg[0] != '-' && positional < 2) {
      // The old form, `tiled_gemm [matrix size] [tile size]`, still works.
      (positional++ == 0 ? options.n : options.tile) = parse_number<std::size_t>(spec, "the size", arg);
    } else {
      usage_error(spec, "unknown argument '" + std::string(arg) + "'");
    }
  }
  if (options.n == 0 || options.tile == 0) usage_error(spec, "the matrix and tile sizes must be positive");
  if (options.repeat == 0) usage_error(spec, "--repeat must be at least 1");
  if (options.opencl && !built_with_opencl()) {
    usage_error(spec, "this build has no OpenCL driver (hetflow::opencl was not built: no OpenCL found)");
  }
  if ((options.cuda || options.vendor) && !built_with_cuda()) {
    usage_error(spec, "this build has no CUDA driver (hetflow::cuda was not built: no CUDA toolkit found)");
  }
  return options;
}

hetflow::Config make_config(const ExampleOptions& options) {
  hetflow::Config config;
  config.scheduler = options.scheduler;
  config.ncpus = options.ncpus;
  if (!options.trace.empty()) config.trace_path = options.trace;
#ifdef HETFLOW_EXAMPLE_WITH_OPENCL
  if (options.opencl) config.drivers.push_back(hetflow::opencl::make_driver());
#endif
#ifdef HETFLOW_EXAMPLE_WITH_CUDA
  if (options.cuda) config.drivers.push_back(hetflow::cuda::make_driver());
#endif
  return config;
}

bool describe_runtime(const hetflow::Runtime& runtime, const ExampleOptions& options) {
  unsigned per_arch[hetflow::kArchCount] = {};
  for (const hetflow::ext::WorkerInfo& worker : runtime.workers()) ++per_arch[static_cast<unsigned>(worker.arch)];
  std::printf("hetflow: %u workers (", runtime.worker_count());
  const char* separator = "";
  for (unsigned a = 0; a < hetflow::kArchCount; ++a) {
    if (per_arch[a] == 0) continue;
    std::printf("%s%u %s", separator, per_arch[a],
                std::string(hetflow::arch_name(static_cast<hetflow::Arch>(a))).c_str());
    separator = ", ";
  }
  std::printf("), scheduler '%s', tasks on: %s\n", runtime.scheduler_name().c_str(), options.where_name.c_str());
  if (options.opencl && per_arch[static_cast<unsigned>(hetflow::Arch::opencl)] == 0) {
    std::fprintf(stderr,
                 "note: the OpenCL driver found no device (GPUs and accelerators by default; "
                 "HETFLOW_OPENCL_DEVICES=all adds CPU devices)\n");
  }
  if (options.cuda && per_arch[static_cast<unsigned>(hetflow::Arch::cuda)] == 0) {
    std::fprintf(stderr, "note: the CUDA driver found no GPU\n");
  }
  // Tile codelets run on cpu, opencl and cuda workers (not process workers).
  bool runnable = false;
  for (hetflow::Arch arch : {hetflow::Arch::cpu, hetflow::Arch::opencl, hetflow::Arch::cuda}) {
    runnable = runnable || (options.where.contains(arch) && per_arch[static_cast<unsigned>(arch)] > 0);
  }
  if (!runnable) {
    std::fprintf(stderr, "no worker can run the tasks (--where %s): nothing to do\n", options.where_name.c_str());
  }
  return runnable;
}

namespace {

// splitmix64: a fast generator whose every output is a good hash of a counter, so any element
// can be computed on its own and the matrices do not depend on the order they are filled in.
std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double uniform(std::uint64_t seed, std::uint64_t index) noexcept {
  // The top 53 bits as a double in [0, 1), then to [-1, 1).
  return static_cast<double>(mix(seed * 0x100000001b3ULL + index) >> 11) * 0x1.0p-52 - 1.0;
}

}  // namespace

std::vector<double> random_matrix(std::size_t n, std::uint64_t seed) {
  std::vector<double> a(n * n);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = uniform(seed, i);
  return a;
}

std::vector<double> random_spd_matrix(std::size_t n, std::uint64_t seed) {
  std::vector<double> a(n * n);
  for (std::size_t j = 0; j < n; ++j) {
    for (std::size_t i = j; i < n; ++i) {
      const double v = uniform(seed, j * n + i);
      a[j * n + i] = v;
      a[i * n + j] = v;
    }
    // Each off-diagonal entry is below 1 in magnitude, so a diagonal above n - 1 dominates its
    // row: the matrix is symmetric positive definite, and well conditioned.
    a[j * n + j] += static_cast<double>(n);
  }
  return a;
}

void fill_random_spd_block(double* out, std::size_t ld, std::size_t n, std::uint64_t seed, std::size_t first_row,
                           std::size_t first_col, std::size_t rows, std::size_t cols) {
  for (std::size_t c = 0; c < cols; ++c) {
    const std::size_t col = first_col + c;
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t row = first_row + r;
      // random_spd_matrix draws entry (row, col) of the lower triangle and mirrors it above.
      double value = uniform(seed, std::min(row, col) * n + std::max(row, col));
      if (row == col) value += static_cast<double>(n);
      out[c * ld + r] = value;
    }
  }
}

bool report_failures(const std::vector<hetflow::Future<void>>& futures, const char* program) {
  std::size_t failed = 0;
  std::string first;             // the first task that failed on its own
  std::string first_dependency;  // or, failing that, what a dependent task reports
  for (const hetflow::Future<void>& future : futures) {
    try {
      future.get();
    } catch (const hetflow::DependencyError& error) {
      ++failed;
      if (first_dependency.empty()) first_dependency = hetflow::describe(error.root_cause());
    } catch (const std::exception& error) {
      ++failed;
      if (first.empty()) first = error.what();
    }
  }
  if (failed == 0) return true;
  std::fprintf(stderr, "%s: %zu tasks failed; the first failure: %s\n", program, failed,
               (first.empty() ? first_dependency : first).c_str());
  return false;
}

std::string rate_text(double flops, double seconds) {
  const double gflops = flops / seconds * 1e-9;
  char text[48];
  std::snprintf(text, sizeof text, gflops >= 1 ? "%.2f GFLOP/s" : "%.3g GFLOP/s", gflops);
  return text;
}

void print_times(const std::vector<double>& seconds, double flops) {
  if (seconds.size() == 1) {
    std::printf("time %.4f s, %s\n", seconds[0], rate_text(flops, seconds[0]).c_str());
    return;
  }
  const double best = *std::min_element(seconds.begin(), seconds.end());
  const double mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / static_cast<double>(seconds.size());
  std::printf("%zu runs: first %.4f s (%s), best %.4f s (%s), mean %.4f s (%s)\n", seconds.size(), seconds[0],
              rate_text(flops, seconds[0]).c_str(), best, rate_text(flops, best).c_str(), mean,
              rate_text(flops, mean).c_str());
}

}  // namespace linalg
