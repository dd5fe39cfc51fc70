// Names, parsing and messages of the public vocabulary types.
#include <algorithm>
#include <cctype>
#include <string>

#include "hetflow/access.hpp"
#include "hetflow/arch.hpp"
#include "hetflow/error.hpp"

namespace hetflow {

std::string_view arch_name(Arch arch) noexcept {
  switch (arch) {
    case Arch::cpu: return "cpu";
    case Arch::cuda: return "cuda";
    case Arch::opencl: return "opencl";
    case Arch::process: return "process";
  }
  return "unknown";
}

AccessMode parse_access_mode(std::string_view text) {
  std::string upper(text);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
  if (upper == "R") return AccessMode::R;
  if (upper == "W") return AccessMode::W;
  if (upper == "RW") return AccessMode::RW;
  if (upper == "REDUX") return AccessMode::Redux;
  if (upper == "PART-R") return AccessMode::PartR;
  if (upper == "PART-W") return AccessMode::PartW;
  throw InvalidArgument("unknown access mode '" + std::string(text) + "': use R, W, RW, REDUX, PART-R or PART-W");
}

std::string_view access_mode_name(AccessMode mode) noexcept {
  switch (mode) {
    case AccessMode::R: return "R";
    case AccessMode::W: return "W";
    case AccessMode::RW: return "RW";
    case AccessMode::Redux: return "REDUX";
    case AccessMode::PartR: return "PART-R";
    case AccessMode::PartW: return "PART-W";
  }
  return "?";
}

std::string describe(const std::exception_ptr& error) {
  if (!error) return "no error";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

DependencyError::DependencyError(std::string root_task, std::exception_ptr root_cause)
    : Error("dependency '" + root_task + "' failed: " + describe(root_cause)),
      root_task_(std::move(root_task)),
      root_cause_(std::move(root_cause)) {}

}  // namespace hetflow
