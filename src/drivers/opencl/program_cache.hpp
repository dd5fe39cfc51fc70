#pragma once
// Programs built for one device, by (source, build options), and their kernels by name. Used by
// the one worker that drives the device, so it needs no lock.
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "drivers/opencl/cl_handle.hpp"

namespace hetflow::opencl::detail {

class DeviceResources;

class ProgramCache {
 public:
  explicit ProgramCache(const DeviceResources& device) noexcept : device_(device) {}

  /// The kernel, building its program on first use. Throws hetflow::Error with the build log
  /// when the program does not build, or naming the kernel when the program has none so named.
  [[nodiscard]] cl_kernel kernel(std::string_view source, std::string_view name, std::string_view options);

  /// The program of (source, options), built on first use. Throws hetflow::Error with the build
  /// log when it does not build.
  cl_program program(std::string_view source, std::string_view options);

  /// How many programs have been built (for tests and statistics).
  [[nodiscard]] std::size_t program_count() const noexcept { return programs_.size(); }

  /// Seconds spent building programs since the last call.
  [[nodiscard]] double take_build_seconds() noexcept { return std::exchange(build_seconds_, 0.0); }
  /// Counts a build made outside the cache (by an implementation's own OpenCL bindings).
  void add_build_seconds(double seconds) noexcept { build_seconds_ += seconds; }

 private:
  struct Key {
    std::string source;
    std::string options;
  };
  struct KeyView {
    std::string_view source;
    std::string_view options;
  };
  // Orders by options first: they are short, and sources of one application often share a
  // long prefix.
  struct KeyOrder {
    using is_transparent = void;
    static KeyView view(const Key& key) noexcept { return {key.source, key.options}; }
    static KeyView view(const KeyView& key) noexcept { return key; }
    template <class A, class B>
    bool operator()(const A& a, const B& b) const noexcept {
      const KeyView left = view(a);
      const KeyView right = view(b);
      if (left.options != right.options) return left.options < right.options;
      return left.source < right.source;
    }
  };
  struct Program {
    OwnedProgram program;
    std::map<std::string, OwnedKernel, std::less<>> kernels;
  };

  Program& find_or_build(std::string_view source, std::string_view options, std::string_view for_kernel);

  [[nodiscard]] OwnedProgram build(std::string_view source, std::string_view for_kernel,
                                   std::string_view options) const;
  [[nodiscard]] OwnedKernel create_kernel(cl_program program, std::string_view name) const;

  const DeviceResources& device_;
  std::map<Key, Program, KeyOrder> programs_;
  double build_seconds_ = 0;
};

}  // namespace hetflow::opencl::detail
