// PerfModelRegistry: the process's performance models by symbol, loaded on first use and saved
// together (the engine saves them at shutdown).
#include <pthread.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <system_error>

#include "hetflow/perfmodel.hpp"
#include "perfmodel/storage.hpp"

namespace hetflow {

struct PerfModelRegistry::State {
  std::mutex mutex;
  // By file, so that a change of HETFLOW_HOME gives fresh models for the new directory.
  std::map<std::filesystem::path, std::shared_ptr<PerfModel>> models;
};

PerfModelRegistry::PerfModelRegistry() : state_(std::make_unique<State>()) {}
PerfModelRegistry::~PerfModelRegistry() = default;

PerfModelRegistry& PerfModelRegistry::instance() {
  // Never destroyed: the engine may save models while other static objects are being destroyed.
  static auto* registry = [] {
    auto* made = new PerfModelRegistry();
    ::pthread_atfork([] { instance().hold_for_fork(); }, [] { instance().release_after_fork(false); },
                     [] { instance().release_after_fork(true); });
    return made;
  }();
  return *registry;
}

// In the order get() and save() take them: the registry's, then each model's save lock and its
// own. A save in progress ends before the fork (its file lock is not inherited while held).
void PerfModelRegistry::hold_for_fork() noexcept {
  state_->mutex.lock();
  for (const auto& [file, model] : state_->models) model->hold_for_fork();
}

void PerfModelRegistry::release_after_fork(bool in_child) noexcept {
  for (const auto& [file, model] : state_->models) model->release_after_fork(in_child);
  state_->mutex.unlock();
}

std::filesystem::path PerfModelRegistry::directory() const { return detail::perfmodel_directory(); }

std::shared_ptr<PerfModel> PerfModelRegistry::get(const std::string& symbol) {
  validate_perfmodel_symbol(symbol);
  std::filesystem::path file = detail::perfmodel_file(directory(), symbol);
  std::lock_guard lock(state_->mutex);
  auto& model = state_->models[file];
  if (!model) {
    try {
      auto fresh = std::make_shared<PerfModel>(symbol, file);
      fresh->load();
      model = std::move(fresh);
    } catch (...) {
      state_->models.erase(file);
      throw;
    }
  }
  return model;
}

std::vector<std::string> PerfModelRegistry::list() {
  const std::filesystem::path dir = directory();
  std::set<std::string> symbols;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    // A directory (or a FIFO...) called "x.model" is no model: listed, `show x` said "no
    // measurements" with a warning. A damaged regular file is listed (its warning says why).
    std::error_code kind_error;
    if (!it->is_regular_file(kind_error)) continue;
    if (std::string symbol = detail::symbol_of_file(it->path()); !symbol.empty()) symbols.insert(std::move(symbol));
  }
  {
    std::lock_guard lock(state_->mutex);
    // A model only looked up (its entries asked for under a mistyped symbol) is not one.
    for (const auto& [file, model] : state_->models) {
      if (file.parent_path() == dir && !model->entries().empty()) symbols.insert(model->symbol());
    }
  }
  return {symbols.begin(), symbols.end()};
}

void PerfModelRegistry::save_all() noexcept {
  std::vector<std::shared_ptr<PerfModel>> models;
  try {
    std::lock_guard lock(state_->mutex);
    models.reserve(state_->models.size());
    for (const auto& [file, model] : state_->models) models.push_back(model);
  } catch (const std::exception& e) {
    detail::warn(std::string("could not save performance models: ") + e.what());
    return;
  }
  // A lock another process holds past its patience is held for the next model too: waiting for
  // it once per model held the program's shutdown that many times as long.
  std::set<std::filesystem::path> held;
  std::size_t not_tried = 0;
  for (const auto& model : models) {
    try {
      if (held.contains(model->file().parent_path())) {
        ++not_tried;
        continue;
      }
      model->save();
    } catch (const detail::LockHeldError& e) {
      held.insert(model->file().parent_path());
      detail::warn("could not save performance model '" + model->symbol() + "': " + e.what());
    } catch (const std::exception& e) {
      detail::warn("could not save performance model '" + model->symbol() + "': " + e.what());
    }
  }
  if (not_tried > 0) {
    detail::warn(std::to_string(not_tried) +
                 " more performance models not saved: their directory's lock is held (above); their measurements "
                 "stay in memory");
  }
  // The saved models nobody else holds are let go: the next get() loads them from their files.
  // Kept: those with measurements not saved (their save failed), those someone holds (a codelet,
  // a task about to record), and those given a calibration of their own.
  models.clear();
  try {
    const std::size_t calibration = detail::default_calibration_samples();
    std::lock_guard lock(state_->mutex);
    std::erase_if(state_->models, [calibration](const auto& entry) {
      const auto& model = entry.second;
      return model.use_count() == 1 && !model->dirty() && model->calibration_samples() == calibration;
    });
  } catch (const std::exception&) {
    // A malformed HETFLOW_CALIBRATE (reported where models are made): every model stays.
  }
}

void PerfModelRegistry::reset() {
  std::lock_guard lock(state_->mutex);
  state_->models.clear();
}

}  // namespace hetflow
