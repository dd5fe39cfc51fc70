#include "core/driver_claims.hpp"

#include <algorithm>
#include <mutex>
#include <set>
#include <string>

#include "hetflow/error.hpp"

namespace hetflow::detail {

namespace {

std::mutex& claims_mutex() {
  static std::mutex instance;
  return instance;
}

std::set<const ext::Driver*>& in_use() {
  static std::set<const ext::Driver*> instance;
  return instance;
}

}  // namespace

DriverClaims::DriverClaims(const std::vector<std::shared_ptr<ext::Driver>>& drivers) {
  std::lock_guard guard(claims_mutex());
  for (const auto& driver : drivers) {
    if (!driver) continue;
    const std::string name(driver->name());
    if (std::find(claimed_.begin(), claimed_.end(), driver.get()) != claimed_.end()) {
      throw InvalidArgument("hetflow::Config::drivers: the " + name +
                            " driver is listed twice; one driver object drives its devices once (make another "
                            "driver for more workers)");
    }
    if (in_use().contains(driver.get())) {
      throw InvalidArgument("hetflow::Config::drivers: the " + name +
                            " driver already serves another Runtime that is still alive; a driver serves one "
                            "Runtime at a time (make one per runtime)");
    }
    claimed_.push_back(driver.get());
  }
  in_use().insert(claimed_.begin(), claimed_.end());
}

DriverClaims::~DriverClaims() {
  std::lock_guard guard(claims_mutex());
  for (const ext::Driver* driver : claimed_) in_use().erase(driver);
}

}  // namespace hetflow::detail
