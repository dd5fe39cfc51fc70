// PerfModel: the measurements of one symbol, what it predicts from them, and its load/save
// cycle (read, merge, write atomically) on top of storage.cpp.
#include "hetflow/perfmodel.hpp"

#include <array>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "hetflow/error.hpp"
#include "perfmodel/history.hpp"
#include "perfmodel/storage.hpp"

namespace hetflow {

using detail::History;
using detail::ModelContents;
using detail::ReadResult;

namespace {

struct Slot {
  History total;    // everything known: the file as last read or written, plus what was recorded since
  History pending;  // recorded since the last load/save: what a save adds to the file
};

using SlotsByArch = std::array<std::map<std::size_t, Slot>, kArchCount>;

unsigned index_of(Arch arch) { return static_cast<unsigned>(arch); }

// The temporary files of saves killed before their rename (they piled up, one per kill) are
// removed at this process's first save into each directory, under the directory's lock.
void clean_directory_once(const std::filesystem::path& directory) {
  static std::mutex mutex;
  static std::set<std::filesystem::path> cleaned;
  {
    std::lock_guard lock(mutex);
    if (!cleaned.insert(directory).second) return;
  }
  detail::remove_abandoned_temporaries(directory);
}

}  // namespace

struct PerfModel::State {
  std::string symbol;
  std::filesystem::path file;
  std::mutex save_mutex;  // one load/save of this model at a time; held across file I/O

  mutable std::mutex mutex;  // everything below
  SlotsByArch slots;
  std::size_t calibration = 10;
  bool dirty = false;
  mutable std::array<std::optional<PerfFit>, kArchCount> fits;
  // Records on calibrated sizes since each fit was made. A fit over N sizes costs O(N): made again
  // after every record, it cost milliseconds per task with a thousand sizes. It is made again once
  // these are an eighth of its sizes, or when a size joins them.
  mutable std::array<std::size_t, kArchCount> records_since_fit{};

  void invalidate_fits() {
    for (auto& fit : fits) fit.reset();
  }
  [[nodiscard]] const Slot* find(Arch arch, std::size_t size) const {
    const auto& by_size = slots[index_of(arch)];
    auto it = by_size.find(size);
    return it == by_size.end() ? nullptr : &it->second;
  }
  [[nodiscard]] const PerfFit& fit_locked(Arch arch) const {
    auto& cached = fits[index_of(arch)];
    if (!cached) {
      std::vector<double> sizes;
      std::vector<double> seconds;
      for (const auto& [size, slot] : slots[index_of(arch)]) {
        if (slot.total.count() < calibration) continue;
        sizes.push_back(static_cast<double>(size));
        seconds.push_back(slot.total.robust());
      }
      cached = fit_power_law(sizes, seconds);
      records_since_fit[index_of(arch)] = 0;
    }
    return *cached;
  }
  // The pending measurements, taken out (the totals keep them).
  ModelContents take_pending() {
    ModelContents taken;
    for (unsigned a = 0; a < kArchCount; ++a) {
      for (auto& [size, slot] : slots[a]) {
        if (slot.pending.empty()) continue;
        taken[{static_cast<Arch>(a), size}] = slot.pending;
        slot.pending = History{};
      }
    }
    dirty = false;
    return taken;
  }
  [[nodiscard]] ModelContents totals() const {
    ModelContents out;
    for (unsigned a = 0; a < kArchCount; ++a) {
      for (const auto& [size, slot] : slots[a]) out[{static_cast<Arch>(a), size}] = slot.total;
    }
    return out;
  }
  // The totals become `base` followed by whatever is still pending.
  void rebase(const ModelContents& base) {
    SlotsByArch fresh;
    for (const auto& [key, history] : base) fresh[index_of(key.first)][key.second].total = history;
    for (unsigned a = 0; a < kArchCount; ++a) {
      for (auto& [size, slot] : slots[a]) {
        if (slot.pending.empty()) continue;
        Slot& target = fresh[a][size];
        target.total.merge(slot.pending);
        target.pending = std::move(slot.pending);
      }
    }
    slots = std::move(fresh);
    invalidate_fits();
  }
  // A forked child's: the measurements not saved yet are the parent's to save.
  void discard_pending() {
    for (auto& by_size : slots) {
      for (auto& [size, slot] : by_size) slot.pending = History{};
    }
    dirty = false;
  }
  // Puts measurements taken out by take_pending back, before those recorded since.
  void restore_pending(const ModelContents& taken) {
    for (const auto& [key, history] : taken) {
      Slot& slot = slots[index_of(key.first)][key.second];
      History merged = history;
      merged.merge(slot.pending);
      slot.pending = std::move(merged);
      dirty = true;
    }
  }
};

PerfModel::PerfModel(std::string symbol) : PerfModel(std::move(symbol), std::filesystem::path{}) {}

PerfModel::PerfModel(std::string symbol, std::filesystem::path file) : state_(std::make_unique<State>()) {
  validate_perfmodel_symbol(symbol);
  state_->symbol = std::move(symbol);
  state_->file = std::move(file);
  state_->calibration = detail::default_calibration_samples();
}

PerfModel::~PerfModel() = default;

const std::string& PerfModel::symbol() const noexcept { return state_->symbol; }
const std::filesystem::path& PerfModel::file() const noexcept { return state_->file; }

void PerfModel::record(Arch arch, std::size_t size, double seconds) {
  // NaN, negative, inf, and runs longer than any a task takes: their squares would overflow the
  // deviation, and the file written would be refused as damaged when read.
  if (!(seconds >= 0) || !(seconds <= kLongestRun)) return;
  if (index_of(arch) >= kArchCount) return;
  std::lock_guard lock(state_->mutex);
  Slot& slot = state_->slots[index_of(arch)][size];
  slot.total.add(seconds);
  slot.pending.add(seconds);
  state_->dirty = true;
  const std::size_t count = slot.total.count();
  if (count < state_->calibration) return;  // not among the fit's sizes yet
  auto& fit = state_->fits[index_of(arch)];
  if (count == state_->calibration || !fit || ++state_->records_since_fit[index_of(arch)] > fit->points / 8) {
    fit.reset();
  }
}

std::optional<double> PerfModel::expected(Arch arch, std::size_t size) const {
  if (index_of(arch) >= kArchCount) return std::nullopt;
  std::lock_guard lock(state_->mutex);
  const Slot* slot = state_->find(arch, size);
  if (slot != nullptr && slot->total.count() >= state_->calibration) return slot->total.robust();
  return state_->fit_locked(arch)(size);
}

bool PerfModel::calibrated(Arch arch, std::size_t size) const {
  if (index_of(arch) >= kArchCount) return false;
  std::lock_guard lock(state_->mutex);
  const Slot* slot = state_->find(arch, size);
  return slot != nullptr && slot->total.count() >= state_->calibration;
}

std::vector<PerfEntry> PerfModel::entries() const {
  std::lock_guard lock(state_->mutex);
  std::vector<PerfEntry> out;
  for (unsigned a = 0; a < kArchCount; ++a) {
    for (const auto& [size, slot] : state_->slots[a]) {
      const History& h = slot.total;
      if (h.empty()) continue;
      out.push_back({.arch = static_cast<Arch>(a),
                     .size = size,
                     .count = h.count(),
                     .mean = h.mean(),
                     .stddev = h.stddev(),
                     .min = h.min(),
                     .max = h.max(),
                     .robust = h.robust()});
    }
  }
  return out;
}

PerfFit PerfModel::fit(Arch arch) const {
  if (index_of(arch) >= kArchCount) return {};
  std::lock_guard lock(state_->mutex);
  return state_->fit_locked(arch);
}

std::size_t PerfModel::calibration_samples() const noexcept {
  std::lock_guard lock(state_->mutex);
  return state_->calibration;
}

void PerfModel::set_calibration_samples(std::size_t samples) {
  if (samples < 1) throw InvalidArgument("PerfModel::set_calibration_samples: at least 1 sample is needed");
  std::lock_guard lock(state_->mutex);
  state_->calibration = samples;
  state_->invalidate_fits();
}

bool PerfModel::dirty() const {
  std::lock_guard lock(state_->mutex);
  return state_->dirty;
}

void PerfModel::hold_for_fork() noexcept {
  state_->save_mutex.lock();
  state_->mutex.lock();
}

void PerfModel::release_after_fork(bool in_child) noexcept {
  if (in_child) state_->discard_pending();
  state_->mutex.unlock();
  state_->save_mutex.unlock();
}

bool PerfModel::load() {
  if (state_->file.empty()) return false;
  std::lock_guard save_lock(state_->save_mutex);
  ReadResult read = detail::read_model_file(state_->file, state_->symbol);
  if (read.status == ReadResult::Status::damaged) {
    detail::warn("ignoring damaged performance model " + detail::describe_damage(state_->file, read));
  } else if (read.status == ReadResult::Status::newer) {
    detail::warn("ignoring performance model " + detail::describe_damage(state_->file, read) +
                 ": written by a newer hetflow, it is left as it is (what this process measures is not saved there)");
  }
  std::lock_guard lock(state_->mutex);
  state_->rebase(read.contents);  // empty unless loaded
  return read.status == ReadResult::Status::loaded;
}

void PerfModel::save() {
  if (state_->file.empty()) {
    throw Error("performance model '" + state_->symbol + "' is held in memory only and cannot be saved");
  }
  std::lock_guard save_lock(state_->save_mutex);
  ModelContents pending;
  ModelContents known;
  {
    std::lock_guard lock(state_->mutex);
    if (!state_->dirty) return;
    known = state_->totals();
    pending = state_->take_pending();
  }
  try {
    detail::DirectoryLock directory_lock(state_->file.parent_path());
    clean_directory_once(state_->file.parent_path());
    ReadResult on_disk = detail::read_model_file(state_->file, state_->symbol);
    if (on_disk.status == ReadResult::Status::newer) {  // not ours to replace: its data would be lost
      detail::warn("performance model " + detail::describe_damage(state_->file, on_disk) +
                   ": written by a newer hetflow, left as it is; what this process measured is not saved");
      std::lock_guard lock(state_->mutex);
      state_->restore_pending(pending);
      return;
    }
    ModelContents merged;
    std::error_code kind_error;
    const bool regular =
        std::filesystem::symlink_status(state_->file, kind_error).type() == std::filesystem::file_type::regular;
    if (on_disk.status == ReadResult::Status::damaged && regular) {
      // Keep the damaged file for inspection; what this process knows replaces it.
      std::filesystem::path aside = state_->file;
      aside += ".damaged";
      std::error_code ec;
      std::filesystem::rename(state_->file, aside, ec);
      detail::warn("damaged performance model " + detail::describe_damage(state_->file, on_disk) +
                   (ec ? "; replacing it" : "; moved to " + aside.string() + " and replaced"));
      merged = std::move(known);
    } else if (on_disk.status == ReadResult::Status::damaged) {
      // Not a regular file (a link, a FIFO, a directory): the write below refuses to replace it,
      // saying what it is; it is left as it is.
      merged = std::move(known);
    } else {
      // The file now (another process may have saved since we read it) plus what we recorded since.
      merged = std::move(on_disk.contents);
      for (const auto& [key, history] : pending) merged[key].merge(history);
    }
    std::size_t dropped = 0;
    detail::write_file_atomically(state_->file, detail::format_model_within_limit(state_->symbol, merged, dropped));
    if (dropped > 0) {
      detail::warn("performance model '" + state_->symbol + "' (" + state_->file.string() +
                   "): " + std::to_string(dropped) +
                   " sizes with the fewest runs left out of the file, which would have been "
                   "larger than a load accepts; pass fewer distinct sizes (size=) to keep them all");
    }
    std::lock_guard lock(state_->mutex);
    state_->rebase(merged);
  } catch (...) {
    std::lock_guard lock(state_->mutex);
    state_->restore_pending(pending);
    throw;
  }
}

}  // namespace hetflow
