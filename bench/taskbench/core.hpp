#pragma once
// Task Bench (Slaughter et al., SC 2020): a parameterised task graph of `steps` x `width` tasks,
// the same for every runtime measured on it. Point (t, i) runs a kernel, writes its output (its
// step and point stamped in it) and reads the outputs of the points of step t-1 its dependence
// pattern names. This library holds what the runtimes share: the flags, the patterns, the
// kernels, the checks and the report; each runtime's program only maps tasks onto the runtime.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace taskbench {

enum class Pattern {
  trivial,
  no_comm,
  stencil_1d,
  stencil_1d_periodic,
  dom,
  tree,
  fft,
  all_to_all,
  nearest,
  spread,
  random_nearest,
};

enum class KernelType { empty, compute_bound, memory_bound, load_imbalance };

struct Kernel {
  KernelType type = KernelType::empty;
  long iterations = 0;
  long samples = 16;
  double imbalance = 0.0;
};

/// One task graph: which points exist at each step, whom they depend on, and what they run.
/// Outputs live in `fields` generations of one buffer per point: step t writes generation
/// t % fields, so a runtime sees a write-after-read on a buffer only when fields < steps.
class TaskGraph {
 public:
  long index = 0;
  long steps = 4;
  long width = 4;
  Pattern pattern = Pattern::trivial;
  long radix = 3;
  long period = -1;
  double fraction = 0.25;
  Kernel kernel{};
  std::size_t output_bytes = 16;
  std::size_t scratch_bytes = 0;
  long fields = 0;

  /// The first point and the number of points that exist at step t (none before step 0).
  [[nodiscard]] long offset_at(long step) const;
  [[nodiscard]] long width_at(long step) const;
  [[nodiscard]] long dependence_sets() const;
  [[nodiscard]] long dependence_set_at(long step) const;
  /// The points of step t-1 that point (t, point) reads, without those absent at step t-1.
  void dependencies(long step, long point, std::vector<long>& out) const;

  [[nodiscard]] long long flops_of(long step, long point) const;
  [[nodiscard]] long long bytes_of(long step, long point) const;
  [[nodiscard]] long iterations_of(long step, long point) const;

  /// The output buffer of `point` in generation `field` (allocated by allocate()).
  [[nodiscard]] std::byte* buffer(long field, long point) const {
    return storage_.get() + (static_cast<std::size_t>(field * width + point) * stride_);
  }
  [[nodiscard]] std::byte* output_of(long step, long point) const { return buffer(step % fields, point); }

  /// Runs point (t, point): checks its inputs (given in the order of dependencies()), stamps its
  /// output and runs the kernel. A wrong input is recorded (see failed()), never thrown.
  void execute(long step, long point, std::byte* output, std::span<const std::byte* const> inputs) const;
  /// The same, with the inputs taken from this graph's own buffers.
  void execute_in_place(long step, long point) const;

  /// Fills in the defaults that depend on other flags and rejects impossible graphs (throws
  /// std::invalid_argument with the reason).
  void finish_and_check();
  void allocate();
  /// After the run: every buffer holds the output of the last step that wrote it. Returns false
  /// (after recording why) otherwise, which means some task did not run or ran out of order.
  bool check_final_outputs() const;

 private:
  std::size_t stride_ = 0;
  struct Free {
    void operator()(std::byte* p) const noexcept;
  };
  std::unique_ptr<std::byte, Free> storage_;
};

[[nodiscard]] std::string_view pattern_name(Pattern pattern);
[[nodiscard]] std::string_view kernel_name(KernelType type);

/// Whether any check failed so far; the first failures are kept for the report.
[[nodiscard]] bool failed();
void record_failure(std::string message);
/// How many checks failed so far, and the messages of the first of them.
[[nodiscard]] long failure_count();
[[nodiscard]] std::vector<std::string> failure_messages();

/// The command line and the graphs it describes. Flags follow the original Task Bench:
/// -steps -width -type -radix -period -fraction -kernel -iter -output -scratch -sample
/// -imbalance -field, with -and starting the next graph; -v shows each step's dependencies.
class App {
 public:
  /// Parses the flags; on a bad one prints the reason and exits with status 2.
  App(int argc, char** argv);

  std::vector<TaskGraph> graphs;
  int verbose = 0;

  /// The longest graph's step count: runtimes submit step by step over all graphs.
  [[nodiscard]] long max_steps() const;
  /// Prints the configuration, as the original does before running.
  void display(std::string_view system) const;
  /// Checks the final outputs, prints the totals and the rates, and returns the exit status:
  /// 0, or 1 when any check failed.
  int report(double elapsed_seconds) const;
};

using Clock = std::chrono::steady_clock;
/// `run(argc, argv)`, with an exception printed as an error and exit status 1.
int guarded_main(int argc, char** argv, int (*run)(int, char**));

[[nodiscard]] inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace taskbench
