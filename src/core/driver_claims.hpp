#pragma once
// A driver's workers keep per-thread state (program caches, queues) for one runtime: a driver
// object given to two live runtimes, or twice to one, would have two workers drive one device
// through shared objects (wrong results, crashes). Each runtime claims its drivers while it lives.
#include <memory>
#include <vector>

#include "hetflow/ext/driver.hpp"

namespace hetflow::detail {

class DriverClaims {
 public:
  /// Throws InvalidArgument, claiming none, if a driver is listed twice or serves a live runtime.
  explicit DriverClaims(const std::vector<std::shared_ptr<ext::Driver>>& drivers);
  ~DriverClaims();
  DriverClaims(const DriverClaims&) = delete;
  DriverClaims& operator=(const DriverClaims&) = delete;

 private:
  std::vector<const ext::Driver*> claimed_;
};

}  // namespace hetflow::detail
