#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hetflow {

namespace ext {
class Driver;
}

/// How a Runtime is set up. Fields left empty come from the environment, then from defaults:
/// code wins over the environment, the environment over defaults.
///
/// | field         | environment        | default                                          |
/// |---------------|--------------------|--------------------------------------------------|
/// | ncpus         | HETFLOW_NCPUS      | the number of CPUs this process may run on       |
/// | scheduler     | HETFLOW_SCHED      | "ws"                                             |
/// | pin_workers   | HETFLOW_PIN (0/1)  | false                                            |
/// | spin_us       | HETFLOW_SPIN_US    | 50: how long an idle worker polls before sleeping |
struct Config {
  std::optional<unsigned> ncpus;
  std::optional<std::string> scheduler;
  std::optional<bool> pin_workers;
  std::optional<unsigned> spin_us;
  /// Extra kinds of workers (each driver brings its own), beside the CPU workers.
  std::vector<std::shared_ptr<ext::Driver>> drivers;

  /// The configuration with every empty field filled from the environment and defaults.
  /// Throws InvalidArgument for malformed environment values.
  [[nodiscard]] Config resolved() const;
};

}  // namespace hetflow
