#include <map>
#include <mutex>
#include <string>

#include "hetflow/error.hpp"
#include "hetflow/ext/scheduler.hpp"

namespace hetflow::ext {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::pair<std::string, SchedulerFactory>, std::less<>> entries;
};

Registry& registry() {
  static Registry instance;
  return instance;
}

}  // namespace

void register_scheduler(std::string name, std::string description, SchedulerFactory factory) {
  if (name.empty() || !factory) throw InvalidArgument("register_scheduler: a scheduler needs a name and a factory");
  Registry& r = registry();
  std::lock_guard guard(r.mutex);
  r.entries[std::move(name)] = {std::move(description), std::move(factory)};
}

std::unique_ptr<Scheduler> make_scheduler(std::string_view name) {
  Registry& r = registry();
  SchedulerFactory factory;
  {
    std::lock_guard guard(r.mutex);
    auto it = r.entries.find(name);
    if (it == r.entries.end()) {
      std::string known;
      for (const auto& [known_name, entry] : r.entries) known += (known.empty() ? "" : ", ") + known_name;
      throw InvalidArgument("unknown scheduler '" + std::string(name) + "'; known schedulers: " + known);
    }
    factory = it->second.second;
  }
  // Called without the lock: a factory may itself make or register schedulers.
  return factory();
}

std::vector<SchedulerEntry> schedulers() {
  Registry& r = registry();
  std::lock_guard guard(r.mutex);
  std::vector<SchedulerEntry> out;
  for (const auto& [name, entry] : r.entries) out.push_back({name, entry.first});
  return out;
}

}  // namespace hetflow::ext
