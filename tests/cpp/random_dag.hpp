#pragma once
// Random task graphs over a set of shared 64-bit variables, for the stress and failure-injection
// suites: each task names 1 to 3 distinct handles with random modes, and applies a deterministic
// function to them that the tests replay sequentially on plain memory.
#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "hetflow/hetflow.hpp"

namespace hetflow::test {

struct DagTask {
  std::uint32_t id = 0;
  std::uint8_t count = 0;
  std::array<std::uint32_t, 3> handles{};
  std::array<AccessMode, 3> modes{};
  int priority = 0;
  bool throws = false;  // failure injection: the task throws before touching its data
};

/// `prefix` followed by the number (GCC 12 misreports `"literal" + std::to_string(n)` under -Wrestrict).
inline std::string numbered(const char* prefix, std::uint64_t n) {
  std::string text(prefix);
  text += std::to_string(n);
  return text;
}

/// The exception an injected failure throws.
struct InjectedFailure : std::runtime_error {
  explicit InjectedFailure(std::uint32_t task)
      : std::runtime_error(numbered("injected failure in t", task)), id(task) {}
  std::uint32_t id;
};

inline std::vector<DagTask> random_dag(std::mt19937_64& rng, std::size_t tasks, std::size_t handles,
                                       double failure_rate = 0.0) {
  std::uniform_int_distribution<std::uint32_t> pick_handle(0, static_cast<std::uint32_t>(handles - 1));
  std::uniform_int_distribution<int> pick_count(1, 3);
  std::uniform_int_distribution<int> pick_mode(0, 2);
  std::uniform_int_distribution<int> pick_priority(-2, 2);
  std::bernoulli_distribution fails(failure_rate);
  std::vector<DagTask> dag(tasks);
  for (std::size_t i = 0; i < tasks; ++i) {
    DagTask& t = dag[i];
    t.id = static_cast<std::uint32_t>(i);
    t.count = static_cast<std::uint8_t>(pick_count(rng));
    for (std::size_t k = 0; k < t.count; ++k) {
      std::uint32_t h;
      bool repeated;
      do {
        h = pick_handle(rng);
        repeated = false;
        for (std::size_t j = 0; j < k; ++j) repeated = repeated || t.handles[j] == h;
      } while (repeated);
      t.handles[k] = h;
      static constexpr AccessMode kModes[] = {AccessMode::R, AccessMode::W, AccessMode::RW};
      t.modes[k] = kModes[pick_mode(rng)];
    }
    t.priority = pick_priority(rng);
    t.throws = failure_rate > 0 && fails(rng);
  }
  return dag;
}

/// The task's effect on its handles (values[k] is the k-th handle it names); returns a digest of
/// what it read and wrote, which the tests compare task by task. Unsigned arithmetic: wraps.
inline std::uint64_t apply(const DagTask& t, std::uint64_t* const* values) {
  std::uint64_t sum = 0;
  for (std::size_t k = 0; k < t.count; ++k) {
    if (t.modes[k] == AccessMode::R) sum += *values[k];
  }
  std::uint64_t digest = sum * 0x9E3779B97F4A7C15ull + t.id;
  for (std::size_t k = 0; k < t.count; ++k) {
    std::uint64_t& x = *values[k];
    if (t.modes[k] == AccessMode::RW) {
      x = x * 31 + t.id + sum;
    } else if (t.modes[k] == AccessMode::W) {
      x = (static_cast<std::uint64_t>(t.id) + 1) * 0x100000001B3ull + sum;
    } else {
      continue;
    }
    digest = digest * 131 + x;
  }
  return digest;
}

/// Runs `t` on plain memory, as the sequential reference.
inline std::uint64_t apply_sequentially(const DagTask& t, std::vector<std::uint64_t>& memory) {
  std::array<std::uint64_t*, 3> values{};
  for (std::size_t k = 0; k < t.count; ++k) values[k] = &memory[t.handles[k]];
  return apply(t, values.data());
}

/// Inserts `t` as a task of `codelet` (whose argument is the task id). The handles go through
/// TaskOptions::data, TaskOptions::data_list or both, depending on how many there are.
inline Future<void> insert_dag_task(Runtime& rt, const Codelet& codelet, const DagTask& t,
                                    const std::vector<DataHandle>& handles, std::vector<FutureBase> after = {},
                                    std::string name = {}) {
  std::array<DataAccess, 3> accesses{};
  for (std::size_t k = 0; k < t.count; ++k) accesses[k] = {handles[t.handles[k]], t.modes[k]};
  switch (t.count) {
    case 1:
      return rt.insert(
          codelet, {.data = {accesses[0]}, .after = std::move(after), .priority = t.priority, .name = std::move(name)},
          t.id);
    case 2:
      return rt.insert(codelet,
                       {.data_list = std::span<const DataAccess>(accesses.data(), 2),
                        .after = std::move(after),
                        .priority = t.priority,
                        .name = std::move(name)},
                       t.id);
    default:
      return rt.insert(codelet,
                       {.data = {accesses[0]},
                        .data_list = std::span<const DataAccess>(accesses.data() + 1, 2),
                        .after = std::move(after),
                        .priority = t.priority,
                        .name = std::move(name)},
                       t.id);
  }
}

/// The codelet that runs DAG tasks: reads the task's description from `dag`, throws if it is to
/// fail, else applies it to its buffers and stores its digest in `digests`.
inline Codelet dag_codelet(const std::vector<DagTask>& dag, std::vector<std::uint64_t>& digests) {
  Codelet codelet;
  codelet.name = "dag task";
  codelet.cpu = [&dag, &digests](TaskContext& ctx) {
    const DagTask& t = dag[ctx.arg<std::uint32_t>()];
    if (ctx.buffer_count() != t.count) throw std::logic_error("wrong buffer count");
    if (t.throws) throw InjectedFailure(t.id);
    std::array<std::uint64_t*, 3> values{};
    for (std::size_t k = 0; k < t.count; ++k) values[k] = ctx.buffer(k).as<std::uint64_t>();
    digests[t.id] = apply(t, values.data());
  };
  return codelet;
}

}  // namespace hetflow::test
