#include "core.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace taskbench {
namespace {

constexpr std::array<std::pair<std::string_view, Pattern>, 11> kPatterns{{
    {"trivial", Pattern::trivial},
    {"no_comm", Pattern::no_comm},
    {"stencil_1d", Pattern::stencil_1d},
    {"stencil_1d_periodic", Pattern::stencil_1d_periodic},
    {"dom", Pattern::dom},
    {"tree", Pattern::tree},
    {"fft", Pattern::fft},
    {"all_to_all", Pattern::all_to_all},
    {"nearest", Pattern::nearest},
    {"spread", Pattern::spread},
    {"random_nearest", Pattern::random_nearest},
}};

constexpr std::array<std::pair<std::string_view, KernelType>, 4> kKernels{{
    {"empty", KernelType::empty},
    {"compute_bound", KernelType::compute_bound},
    {"memory_bound", KernelType::memory_bound},
    {"load_imbalance", KernelType::load_imbalance},
}};

/// Written at the start of every scratch buffer: a kernel that finds it changed ran over memory
/// that is not its scratch.
constexpr std::uint64_t kScratchMagic = 0x5343524154434842ULL;  // "SCRATCHB"
constexpr std::size_t kStampBytes = 2 * sizeof(std::int64_t);
/// Output buffers start on their own cache line, so that neighbouring points never share one.
constexpr std::size_t kBufferAlign = 64;
constexpr long kNeverWritten = -1;

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// A number in [0, 1) that depends only on `words`: the random choices of a graph are the same
/// in every runtime and every run.
double uniform(std::initializer_list<long> words) {
  std::uint64_t h = 0x243f6a8885a308d3ULL;
  for (long word : words) h = mix(h ^ static_cast<std::uint64_t>(word));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

bool needs_period(Pattern pattern) { return pattern == Pattern::spread || pattern == Pattern::random_nearest; }

struct Failures {
  std::mutex mutex;
  std::vector<std::string> messages;
  long count = 0;
};
Failures& failures() {
  static Failures instance;
  return instance;
}
std::atomic<bool> any_failure{false};
constexpr std::size_t kFailuresKept = 10;

void stamp(std::byte* output, std::size_t bytes, long step, long point) {
  const std::int64_t words[2] = {step, point};
  for (std::size_t at = 0; at + kStampBytes <= bytes; at += kStampBytes) std::memcpy(output + at, words, kStampBytes);
}

std::string describe_stamp(long step, long point) {
  if (step == kNeverWritten && point == kNeverWritten) return "nothing yet (no task had written it)";
  return "(step " + std::to_string(step) + ", point " + std::to_string(point) + ")";
}

/// The first stamp in `input` that is not (step, point), as (offset, step, point); offset -1 if
/// all match.
std::array<long, 3> first_bad_stamp(const std::byte* input, std::size_t bytes, long step, long point) {
  for (std::size_t at = 0; at + kStampBytes <= bytes; at += kStampBytes) {
    std::int64_t words[2];
    std::memcpy(words, input + at, kStampBytes);
    if (words[0] != step || words[1] != point) return {static_cast<long>(at), words[0], words[1]};
  }
  return {-1, 0, 0};
}

/// Per-thread scratch memory for the memory-bound kernel. The original gives each point its own;
/// points of different steps may run at once in some patterns, so a per-point buffer would be
/// written by two tasks at the same time. Per thread, the bytes each task moves are the same.
class Scratch {
 public:
  std::uint64_t* get(std::size_t bytes) {
    if (bytes > bytes_) {
      words_ = std::make_unique<std::uint64_t[]>(bytes / sizeof(std::uint64_t));
      std::fill_n(words_.get(), bytes / sizeof(std::uint64_t), kScratchMagic);
      bytes_ = bytes;
    }
    return words_.get();
  }

 private:
  std::unique_ptr<std::uint64_t[]> words_;
  std::size_t bytes_ = 0;
};

/// Keeps the kernels' results alive, so that the compiler cannot drop their loops.
thread_local volatile double kernel_sink = 0;

void compute_kernel(long iterations) {
  // Values in (-1, 0) stay finite and away from denormals under a = a * a + a.
  double a[64];
  for (int i = 0; i < 64; ++i) a[i] = -0.5 + 0.004 * i;
  for (long it = 0; it < iterations; ++it) {
    for (double& v : a) v = v * v + v;
  }
  double product = 1.0;
  for (double v : a) product *= v;
  kernel_sink = product;
}

void memory_kernel(const TaskGraph& graph, long step, std::byte* scratch) {
  const auto samples = static_cast<std::size_t>(graph.kernel.samples);
  const std::size_t sample_bytes = graph.scratch_bytes / samples;
  const std::size_t half = sample_bytes / 2;
  const auto iterations = static_cast<std::size_t>(graph.kernel.iterations);
  for (std::size_t it = 0; it < iterations; ++it) {
    const std::size_t sample = (static_cast<std::size_t>(step) * iterations + it) % samples;
    std::byte* base = scratch + sample * sample_bytes;
    std::memcpy(base + half, base, half);
  }
}

long parse_long(const char* flag, const char* text, long min) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min) {
    throw std::invalid_argument(std::string("flag ") + flag + " wants a whole number >= " + std::to_string(min) +
                                ", not '" + text + "'");
  }
  return value;
}

double parse_double(const char* flag, const char* text, double min, double max) {
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(value >= min && value <= max)) {
    throw std::invalid_argument(std::string("flag ") + flag + " wants a number in [" + std::to_string(min) + ", " +
                                std::to_string(max) + "], not '" + text + "'");
  }
  return value;
}

void show_help(const char* program) {
  std::printf("%s: Task Bench, one task graph (or several, separated by -and) per run\n\n", program);
  std::printf("Graph:\n");
  std::printf("  %-20s steps of the graph (default 4)\n", "-steps N");
  std::printf("  %-20s points per step (default 4)\n", "-width N");
  std::printf("  %-20s dependence pattern (default trivial)\n", "-type PATTERN");
  std::printf("  %-20s neighbours of nearest, spread and random_nearest (default 3)\n", "-radix N");
  std::printf("  %-20s dependence sets of spread and random_nearest (default 3)\n", "-period N");
  std::printf("  %-20s share of the neighbours random_nearest keeps (default 0.25)\n", "-fraction F");
  std::printf("  %-20s generations of each point's output buffer (default: steps)\n", "-field N");
  std::printf("  %-20s start the next graph\n", "-and");
  std::printf("Kernel:\n");
  std::printf("  %-20s kernel (default empty)\n", "-kernel KERNEL");
  std::printf("  %-20s iterations of the kernel's loop (default 0)\n", "-iter N");
  std::printf("  %-20s output bytes per task, >= 16 (default 16)\n", "-output N");
  std::printf("  %-20s scratch bytes per task (memory_bound)\n", "-scratch N");
  std::printf("  %-20s samples the scratch is cut into (memory_bound, default 16)\n", "-sample N");
  std::printf("  %-20s load imbalance in [0, 2] (load_imbalance)\n", "-imbalance F");
  std::printf("Other:\n");
  std::printf("  %-20s show the points and dependencies of every step\n", "-v");
  std::printf("\nPatterns:");
  for (const auto& [name, pattern] : kPatterns) std::printf(" %.*s", static_cast<int>(name.size()), name.data());
  std::printf("\nKernels:");
  for (const auto& [name, type] : kKernels) std::printf(" %.*s", static_cast<int>(name.size()), name.data());
  std::printf("\n");
}

}  // namespace

std::string_view pattern_name(Pattern pattern) {
  for (const auto& [name, value] : kPatterns) {
    if (value == pattern) return name;
  }
  return "?";
}

std::string_view kernel_name(KernelType type) {
  for (const auto& [name, value] : kKernels) {
    if (value == type) return name;
  }
  return "?";
}

bool failed() { return any_failure.load(std::memory_order_relaxed); }

void record_failure(std::string message) {
  Failures& all = failures();
  const std::lock_guard lock(all.mutex);
  any_failure.store(true, std::memory_order_relaxed);
  ++all.count;
  if (all.messages.size() < kFailuresKept) all.messages.push_back(std::move(message));
}

long failure_count() {
  Failures& all = failures();
  const std::lock_guard lock(all.mutex);
  return all.count;
}

std::vector<std::string> failure_messages() {
  Failures& all = failures();
  const std::lock_guard lock(all.mutex);
  return all.messages;
}

void TaskGraph::Free::operator()(std::byte* p) const noexcept { std::free(p); }

long TaskGraph::offset_at(long step) const {
  if (step < 0) return 0;
  if (pattern == Pattern::dom) return std::max(0L, step + width - steps);
  return 0;
}

long TaskGraph::width_at(long step) const {
  if (step < 0) return 0;
  switch (pattern) {
    case Pattern::dom: return std::min(width, std::min(step + 1, steps - step));
    case Pattern::tree: return std::min(width, 1L << std::min(step, 62L));
    default: return width;
  }
}

long TaskGraph::dependence_sets() const {
  switch (pattern) {
    case Pattern::fft: {
      long bits = 0;
      while ((1L << bits) < width) ++bits;
      return std::max(1L, bits);
    }
    case Pattern::spread:
    case Pattern::random_nearest: return period;
    default: return 1;
  }
}

long TaskGraph::dependence_set_at(long step) const {
  const long sets = dependence_sets();
  switch (pattern) {
    case Pattern::fft: return (step + sets - 1) % sets;
    case Pattern::spread:
    case Pattern::random_nearest: return step % sets;
    default: return 0;
  }
}

namespace {

/// The points a point of dependence set `set` reads, clipped to [lo, hi]: the whole width when
/// checking the pattern, the points of the previous step when running it.
void pattern_dependencies(const TaskGraph& g, long set, long point, long lo, long hi, std::vector<long>& out) {
  out.clear();
  const auto add = [&](long first, long last) {
    for (long d = std::max(first, lo); d <= std::min(last, hi); ++d) out.push_back(d);
  };
  const long w = g.width;
  switch (g.pattern) {
    case Pattern::trivial: break;
    case Pattern::no_comm: add(point, point); break;
    case Pattern::stencil_1d: add(std::max(0L, point - 1), std::min(point + 1, w - 1)); break;
    case Pattern::stencil_1d_periodic: {
      const long first = std::max(0L, point - 1);
      const long last = std::min(point + 1, w - 1);
      add(first, last);
      // The wrapped neighbours, unless the width is so small that they are already in.
      if (point - 1 < 0 && w - 1 > last) add(w - 1, w - 1);
      if (point + 1 >= w && 0 < first) add(0, 0);
      break;
    }
    case Pattern::dom: add(std::max(0L, point - 1), point); break;
    case Pattern::tree: add(point / 2, point / 2); break;
    case Pattern::fft: {
      const long stride = 1L << set;
      if (point - stride >= 0) add(point - stride, point - stride);
      add(point, point);
      if (point + stride < w) add(point + stride, point + stride);
      break;
    }
    case Pattern::all_to_all: add(0, w - 1); break;
    case Pattern::nearest:
      if (g.radix > 0) add(std::max(0L, point - g.radix / 2), std::min(point + (g.radix - 1) / 2, w - 1));
      break;
    case Pattern::spread:
      for (long i = 0; i < g.radix; ++i) {
        const long d = (point + i * w / g.radix + (i > 0 ? set : 0)) % w;
        add(d, d);
      }
      break;
    case Pattern::random_nearest: {
      const long first = std::max(0L, point - g.radix / 2);
      const long last = std::min(point + (g.radix - 1) / 2, w - 1);
      for (long d = first; d <= last; ++d) {
        if (d == point || uniform({g.index, g.radix, set, d, point}) < g.fraction) add(d, d);
      }
      break;
    }
  }
}

}  // namespace

void TaskGraph::dependencies(long step, long point, std::vector<long>& out) const {
  const long lo = offset_at(step - 1);
  const long hi = lo + width_at(step - 1) - 1;
  pattern_dependencies(*this, dependence_set_at(step), point, lo, hi, out);
}

long TaskGraph::iterations_of(long step, long point) const {
  if (kernel.type != KernelType::load_imbalance) return kernel.iterations;
  const double u = uniform({index, step, point});
  return std::lround((1.0 + (u - 0.5) * kernel.imbalance) * static_cast<double>(kernel.iterations));
}

long long TaskGraph::flops_of(long step, long point) const {
  switch (kernel.type) {
    case KernelType::compute_bound:
    case KernelType::load_imbalance: return 2LL * 64 * iterations_of(step, point) + 64;
    default: return 0;
  }
}

long long TaskGraph::bytes_of(long, long) const {
  if (kernel.type != KernelType::memory_bound) return 0;
  return static_cast<long long>(scratch_bytes) * kernel.iterations / kernel.samples;
}

void TaskGraph::execute(long step, long point, std::byte* output, std::span<const std::byte* const> inputs) const {
  thread_local std::vector<long> deps;
  dependencies(step, point, deps);
  if (inputs.size() != deps.size()) {
    record_failure("task (graph " + std::to_string(index) + ", step " + std::to_string(step) + ", point " +
                   std::to_string(point) + ") was given " + std::to_string(inputs.size()) + " inputs, its pattern " +
                   std::string(pattern_name(pattern)) + " names " + std::to_string(deps.size()));
  } else {
    for (std::size_t k = 0; k < deps.size(); ++k) {
      const auto [at, got_step, got_point] = first_bad_stamp(inputs[k], output_bytes, step - 1, deps[k]);
      if (at >= 0) {
        record_failure("task (graph " + std::to_string(index) + ", step " + std::to_string(step) + ", point " +
                       std::to_string(point) + "): input " + std::to_string(k) + " should hold the output of (step " +
                       std::to_string(step - 1) + ", point " + std::to_string(deps[k]) + ") but byte " +
                       std::to_string(at) + " holds " + describe_stamp(got_step, got_point) +
                       ": a dependency was not respected");
        break;
      }
    }
  }
  switch (kernel.type) {
    case KernelType::empty: break;
    case KernelType::compute_bound:
    case KernelType::load_imbalance: compute_kernel(iterations_of(step, point)); break;
    case KernelType::memory_bound: {
      thread_local Scratch scratch;
      std::uint64_t* words = scratch.get(scratch_bytes);
      if (words[0] != kScratchMagic) {
        record_failure("task (graph " + std::to_string(index) + ", step " + std::to_string(step) + ", point " +
                       std::to_string(point) + "): its scratch memory was overwritten");
      }
      memory_kernel(*this, step, reinterpret_cast<std::byte*>(words));
      break;
    }
  }
  // Last, so that a task started too early finds its input incomplete even while the task that
  // writes it is still running.
  stamp(output, output_bytes, step, point);
}

void TaskGraph::execute_in_place(long step, long point) const {
  thread_local std::vector<long> deps;
  thread_local std::vector<const std::byte*> inputs;
  dependencies(step, point, deps);
  inputs.clear();
  for (long d : deps) inputs.push_back(output_of(step - 1, d));
  execute(step, point, output_of(step, point), inputs);
}

void TaskGraph::finish_and_check() {
  const std::string name(pattern_name(pattern));
  if (period < 0) period = needs_period(pattern) ? 3 : 0;
  if (needs_period(pattern) && period == 0) {
    throw std::invalid_argument("pattern " + name + " needs a period > 0 (-period)");
  }
  if (!needs_period(pattern) && period != 0) throw std::invalid_argument("pattern " + name + " takes no -period");
  if (pattern == Pattern::spread) {
    if (radix < 1) throw std::invalid_argument("pattern spread needs -radix >= 1");
    if (radix > width) throw std::invalid_argument("pattern spread needs -radix <= -width");
    // A longer period would wrap a later dependence set onto an earlier one.
    const long most = (width + radix - 1) / radix;
    if (period > most) {
      throw std::invalid_argument("pattern spread with width " + std::to_string(width) + " and radix " +
                                  std::to_string(radix) + " needs -period <= " + std::to_string(most));
    }
  }
  if (fields == 0) fields = steps;
  fields = std::min(fields, steps);
  // One generation would make a task read and write the same buffer.
  if (fields < 2 && steps > 1) throw std::invalid_argument("-field must be at least 2");
  if (output_bytes < kStampBytes) throw std::invalid_argument("-output must be at least 16");
  if (kernel.type == KernelType::memory_bound) {
    if (kernel.samples < 1) throw std::invalid_argument("kernel memory_bound needs -sample >= 1");
    if (scratch_bytes % sizeof(std::uint64_t) != 0 ||
        scratch_bytes / static_cast<std::size_t>(kernel.samples) < 2 * sizeof(std::uint64_t)) {
      throw std::invalid_argument(
          "kernel memory_bound needs -scratch a multiple of 8 with at least 16 bytes per sample (-sample)");
    }
  }

  // No point may name the same point twice: every runtime would count it once. Only the sets
  // some step uses are looked at (a period far longer than the steps names sets none uses).
  if (pattern != Pattern::all_to_all) {
    std::vector<long> deps;
    const long used_sets = std::min(dependence_sets(), steps);
    for (long set = 0; set < used_sets; ++set) {
      for (long point = 0; point < width; ++point) {
        pattern_dependencies(*this, set, point, 0, width - 1, deps);
        std::sort(deps.begin(), deps.end());
        if (std::adjacent_find(deps.begin(), deps.end()) != deps.end()) {
          throw std::invalid_argument("pattern " + name + " with these flags names a point twice (point " +
                                      std::to_string(point) + ", dependence set " + std::to_string(set) + ")");
        }
      }
    }
  }
}

void TaskGraph::allocate() {
  std::size_t buffers = 0;
  std::size_t bytes = 0;
  const bool overflows =
      output_bytes > std::numeric_limits<std::size_t>::max() - kBufferAlign ||
      __builtin_mul_overflow(static_cast<std::size_t>(fields), static_cast<std::size_t>(width), &buffers) ||
      __builtin_mul_overflow(buffers, (output_bytes + kBufferAlign - 1) / kBufferAlign * kBufferAlign, &bytes);
  auto* memory = overflows ? nullptr : static_cast<std::byte*>(std::aligned_alloc(kBufferAlign, bytes));
  if (memory == nullptr) {
    throw std::invalid_argument("the outputs of " + std::to_string(fields) + " x " + std::to_string(width) +
                                " points of " + std::to_string(output_bytes) +
                                " bytes (-field, -width, -output) do not fit in memory");
  }
  stride_ = (output_bytes + kBufferAlign - 1) / kBufferAlign * kBufferAlign;
  storage_.reset(memory);
  // Stamped "never written", so that a task reading a buffer too early is told apart from one
  // reading the output of step 0.
  for (long field = 0; field < fields; ++field) {
    for (long point = 0; point < width; ++point) stamp(buffer(field, point), stride_, kNeverWritten, kNeverWritten);
  }
}

bool TaskGraph::check_final_outputs() const {
  std::vector<char> seen(static_cast<std::size_t>(fields * width), 0);
  for (long step = steps - 1; step >= 0; --step) {
    const long field = step % fields;
    for (long point = offset_at(step); point < offset_at(step) + width_at(step); ++point) {
      char& mark = seen[static_cast<std::size_t>(field * width + point)];
      if (mark != 0) continue;
      mark = 1;
      const auto [at, got_step, got_point] = first_bad_stamp(buffer(field, point), output_bytes, step, point);
      if (at >= 0) {
        record_failure("after the run, the output buffer of point " + std::to_string(point) + " (graph " +
                       std::to_string(index) + ", generation " + std::to_string(field) + ") should hold step " +
                       std::to_string(step) + " but holds " + describe_stamp(got_step, got_point) +
                       ": a task did not run, or ran out of order");
        return false;
      }
    }
  }
  return true;
}

App::App(int argc, char** argv) {
  TaskGraph graph;
  const auto next_graph = [&] {
    graph.index = static_cast<long>(graphs.size());
    graphs.push_back(std::move(graph));
    graph = TaskGraph{};
  };
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string_view flag = argv[i];
      if (flag == "-h" || flag == "--help") {
        show_help(argv[0]);
        std::exit(0);
      }
      if (flag == "-v") {
        ++verbose;
        continue;
      }
      if (flag == "-and") {
        next_graph();
        continue;
      }
      if (i + 1 >= argc) throw std::invalid_argument("flag " + std::string(flag) + " needs a value (see -h)");
      const char* value = argv[++i];
      if (flag == "-steps") {
        graph.steps = parse_long(argv[i - 1], value, 1);
      } else if (flag == "-width") {
        graph.width = parse_long(argv[i - 1], value, 1);
      } else if (flag == "-type") {
        const auto it =
            std::find_if(kPatterns.begin(), kPatterns.end(), [&](const auto& p) { return p.first == value; });
        if (it == kPatterns.end()) throw std::invalid_argument(std::string("unknown pattern '") + value + "' (see -h)");
        graph.pattern = it->second;
      } else if (flag == "-radix") {
        graph.radix = parse_long(argv[i - 1], value, 0);
      } else if (flag == "-period") {
        graph.period = parse_long(argv[i - 1], value, 0);
      } else if (flag == "-fraction") {
        graph.fraction = parse_double(argv[i - 1], value, 0.0, 1.0);
      } else if (flag == "-field") {
        graph.fields = parse_long(argv[i - 1], value, 1);
      } else if (flag == "-kernel") {
        const auto it = std::find_if(kKernels.begin(), kKernels.end(), [&](const auto& k) { return k.first == value; });
        if (it == kKernels.end()) throw std::invalid_argument(std::string("unknown kernel '") + value + "' (see -h)");
        graph.kernel.type = it->second;
      } else if (flag == "-iter") {
        graph.kernel.iterations = parse_long(argv[i - 1], value, 0);
      } else if (flag == "-output") {
        graph.output_bytes = static_cast<std::size_t>(parse_long(argv[i - 1], value, 16));
      } else if (flag == "-scratch") {
        graph.scratch_bytes = static_cast<std::size_t>(parse_long(argv[i - 1], value, 0));
      } else if (flag == "-sample") {
        graph.kernel.samples = parse_long(argv[i - 1], value, 1);
      } else if (flag == "-imbalance") {
        graph.kernel.imbalance = parse_double(argv[i - 1], value, 0.0, 2.0);
      } else {
        throw std::invalid_argument("unknown flag " + std::string(flag) + " (see -h)");
      }
    }
    next_graph();
    for (TaskGraph& g : graphs) {
      g.finish_and_check();
      g.allocate();
    }
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    std::exit(2);
  }
}

long App::max_steps() const {
  long most = 0;
  for (const TaskGraph& g : graphs) most = std::max(most, g.steps);
  return most;
}

void App::display(std::string_view system) const {
  std::printf("Running Task Benchmark (%.*s)\n", static_cast<int>(system.size()), system.data());
  std::printf("  Configuration:\n");
  std::vector<long> deps;
  for (const TaskGraph& g : graphs) {
    const std::string_view pattern = pattern_name(g.pattern);
    const std::string_view kernel = kernel_name(g.kernel.type);
    std::printf("    Task Graph %ld:\n", g.index + 1);
    std::printf("      Time Steps: %ld\n", g.steps);
    std::printf("      Max Width: %ld\n", g.width);
    std::printf("      Dependence Type: %.*s\n", static_cast<int>(pattern.size()), pattern.data());
    std::printf("      Radix: %ld\n", g.radix);
    std::printf("      Period: %ld\n", g.period);
    std::printf("      Fraction Connected: %f\n", g.fraction);
    std::printf("      Kernel:\n");
    std::printf("        Type: %.*s\n", static_cast<int>(kernel.size()), kernel.data());
    std::printf("        Iterations: %ld\n", g.kernel.iterations);
    std::printf("        Samples: %ld\n", g.kernel.samples);
    std::printf("        Imbalance: %f\n", g.kernel.imbalance);
    std::printf("      Output Bytes: %zu\n", g.output_bytes);
    std::printf("      Scratch Bytes: %zu\n", g.scratch_bytes);
    std::printf("      Fields: %ld\n", g.fields);
    if (verbose == 0) continue;
    for (long t = 0; t < g.steps; ++t) {
      std::printf("      Timestep %ld (offset %ld, width %ld, dependence set %ld):\n", t, g.offset_at(t), g.width_at(t),
                  g.dependence_set_at(t));
      for (long p = g.offset_at(t); p < g.offset_at(t) + g.width_at(t); ++p) {
        g.dependencies(t, p, deps);
        std::printf("        Point %ld:", p);
        for (long d : deps) std::printf(" %ld", d);
        std::printf("\n");
      }
    }
  }
  std::fflush(stdout);
}

int App::report(double elapsed_seconds) const {
  for (const TaskGraph& g : graphs) {
    if (!g.check_final_outputs()) break;
  }
  if (failed()) {
    Failures& all = failures();
    const std::lock_guard lock(all.mutex);
    std::fprintf(stderr, "ERROR: Task Bench found %ld wrong result(s); the first:\n", all.count);
    for (const std::string& message : all.messages) std::fprintf(stderr, "  %s\n", message.c_str());
    return 1;
  }

  long long tasks = 0;
  long long dependencies = 0;
  long long flops = 0;
  long long bytes = 0;
  std::vector<long> deps;
  for (const TaskGraph& g : graphs) {
    for (long t = 0; t < g.steps; ++t) {
      for (long p = g.offset_at(t); p < g.offset_at(t) + g.width_at(t); ++p) {
        g.dependencies(t, p, deps);
        ++tasks;
        dependencies += static_cast<long long>(deps.size());
        flops += g.flops_of(t, p);
        bytes += g.bytes_of(t, p);
      }
    }
  }
  std::printf("Total Tasks %lld\n", tasks);
  std::printf("Total Dependencies %lld\n", dependencies);
  std::printf("Total FLOPs %lld\n", flops);
  std::printf("Total Bytes %lld\n", bytes);
  std::printf("Elapsed Time %e seconds\n", elapsed_seconds);
  std::printf("FLOP/s %e\n", static_cast<double>(flops) / elapsed_seconds);
  std::printf("B/s %e\n", static_cast<double>(bytes) / elapsed_seconds);
  std::fflush(stdout);
  return 0;
}

int guarded_main(int argc, char** argv, int (*run)(int, char**)) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}

}  // namespace taskbench
