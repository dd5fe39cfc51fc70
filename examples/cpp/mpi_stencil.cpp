// A 1-D Jacobi stencil across MPI ranks whose blocks follow the load, over hetflow::mpi.
//
// The domain is B blocks of P points, each block a registered vector. A step updates every point
// from itself and its two neighbours (diffusion), then integrates a local reaction with a number
// of sub-steps; the blocks of a "hot spot" (a front, say) take K times more sub-steps, and the
// hot spot drifts along the domain. Each block also has two one-point halo handles per side,
// double-buffered by step parity: the task of step t for block i updates the block in place,
// reads the halos of blocks i - 1 and i + 1 written at step t - 1, and writes its own for step
// t + 1. Only those halos cross ranks between steps, and only at the edges of a rank's range.
//
// Blocks start in contiguous equal chunks. Every R steps (a phase), every rank computes the
// same new contiguous assignment from the cost model, which every rank knows (no messages),
// and calls Context::migrate for the blocks whose owner changes: their values move once, and
// their tasks run on the new owner from then on. The halo handles are not migrated: they are
// written wherever their block's task runs, and sent from there.
//
//   mpirun -np 4 mpi_stencil [--blocks B] [--points P] [--steps T] [--period R] [--hot-blocks H]
//                            [--hot-cost K] [--drift S] [--no-migrate | --compare] [--check] [--ncpus N]
//
// Rank 0 prints, per phase, the blocks migrated, the blocks per rank, the load imbalance the
// cost model predicts and the time; per run, the tasks each rank ran and the bytes all ranks sent
// (gathered through handles each rank owns). A short run before, not reported, pays for the
// first messages between ranks. --check gathers the final domain on rank 0 (get_on, then
// Runtime::acquire) and compares it bit for bit with a serial run of the same steps; the
// program exits 1 on a mismatch or a failed task.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <hetflow/hetflow.hpp>
#include <hetflow/mpi.hpp>
#include <memory>
#include <numeric>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using hetflow::R;
using hetflow::RW;
using hetflow::W;

struct Options {
  std::size_t blocks = 32;
  std::size_t points = 8192;
  std::size_t steps = 96;
  std::size_t period = 8;
  std::size_t hot_blocks = 4;
  unsigned hot_cost = 16;
  std::size_t drift = 3;
  bool migrate = true;
  bool compare = false;
  bool check = false;
  unsigned ncpus = 0;  // 0: this rank's share of the machine (share_node)
};

// The physics, the same in the tasks and in the serial reference, so that --check can ask for
// identical bits.
constexpr double kDiffusion = 0.25;  // explicit diffusion number, stable below 0.5
constexpr double kReactionStep = 0.05;
constexpr double kBoundary = 0.0;  // the value beyond both ends of the domain

// Updates one block in place: diffusion from the old values (`left` and `right` being the old
// values just outside the block), then `substeps` explicit steps of the reaction u' = u - u^3.
void advance_block(double* values, std::size_t count, double left, double right, unsigned substeps) {
  const double step = kReactionStep / substeps;
  double before = left;
  for (std::size_t j = 0; j < count; ++j) {
    const double here = values[j];
    const double after = j + 1 < count ? values[j + 1] : right;
    double updated = here + kDiffusion * (before - 2.0 * here + after);
    for (unsigned s = 0; s < substeps; ++s) updated += step * (updated - updated * updated * updated);
    values[j] = updated;
    before = here;
  }
}

// The initial value of global point `index`: pseudo-random in [-1, 1), from integers alone.
double initial_value(std::uint64_t index) {
  std::uint64_t x = index + 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return static_cast<double>(x >> 11) * 0x1.0p-52 - 1.0;
}

// Where the work is, known to every rank: the hot spot covers `hot_blocks` blocks from
// (t / drift) mod B on, wrapping around.
class CostModel {
 public:
  explicit CostModel(const Options& options) : options_(options) {}

  [[nodiscard]] bool hot(std::size_t block, std::size_t step) const {
    const std::size_t first = (step / options_.drift) % options_.blocks;
    return (block + options_.blocks - first) % options_.blocks < options_.hot_blocks;
  }
  [[nodiscard]] unsigned substeps(std::size_t block, std::size_t step) const {
    return hot(block, step) ? options_.hot_cost : 1;
  }
  // The sub-steps dominate: a hot block's step takes about K times as long as another's.
  [[nodiscard]] std::uint64_t cost(std::size_t block, std::size_t step) const { return substeps(block, step); }
  [[nodiscard]] std::vector<std::uint64_t> block_costs(std::size_t first_step, std::size_t end_step) const {
    std::vector<std::uint64_t> costs(options_.blocks, 0);
    for (std::size_t block = 0; block < options_.blocks; ++block) {
      for (std::size_t step = first_step; step < end_step; ++step) costs[block] += cost(block, step);
    }
    return costs;
  }

 private:
  Options options_;
};

// Contiguous ranges of blocks, one per rank and at least one block each, whose largest cost is
// as small as can be, with each boundary as near an equal share of the total as that allows (so
// that boundaries move little from one phase to the next, and few blocks migrate).
std::vector<int> balanced_owners(const std::vector<std::uint64_t>& costs, int ranks) {
  const std::size_t blocks = costs.size(), parts = static_cast<std::size_t>(ranks);
  std::vector<std::uint64_t> prefix(blocks + 1, 0);
  std::partial_sum(costs.begin(), costs.end(), prefix.begin() + 1);
  const std::uint64_t total = prefix[blocks];

  // The smallest limit under which filling ranks in turn needs no more ranks than there are.
  const auto ranks_needed = [&](std::uint64_t limit) {
    std::size_t needed = 1;
    std::uint64_t load = 0;
    for (const std::uint64_t cost : costs) {
      if (load + cost > limit) {
        ++needed;
        load = 0;
      }
      load += cost;
    }
    return needed;
  };
  std::uint64_t limit = *std::max_element(costs.begin(), costs.end());
  for (std::uint64_t enough = total; limit < enough;) {
    const std::uint64_t middle = limit + (enough - limit) / 2;
    if (ranks_needed(middle) <= parts) {
      enough = middle;
    } else {
      limit = middle + 1;
    }
  }

  // fits_from[m]: the first block from which the rest fits in m ranks under the limit (filling
  // them from the end).
  std::vector<std::size_t> fits_from(parts + 1, blocks);
  for (std::size_t m = 1, first = blocks; m <= parts; ++m) {
    for (std::uint64_t load = 0; first > 0 && load + costs[first - 1] <= limit; --first) load += costs[first - 1];
    fits_from[m] = first;
  }
  // Each rank ends where what follows still fits in the ranks after it, at one block each at
  // least, where its own load stays under the limit, and else nearest its equal share.
  std::vector<int> owners(blocks);
  for (std::size_t rank = 0, begin = 0; rank < parts; ++rank) {
    const std::size_t after = parts - rank - 1;
    std::size_t end = blocks;
    if (after > 0) {
      const std::size_t earliest = std::max(begin + 1, fits_from[after]);
      std::size_t latest = begin + 1;
      while (latest < blocks - after && prefix[latest + 1] - prefix[begin] <= limit) ++latest;
      const std::uint64_t share = total * (rank + 1);  // compared with prefix * ranks
      end = earliest;
      while (end < latest && prefix[end] * parts < share) ++end;
      if (end > earliest && prefix[end] * parts >= share &&
          share - prefix[end - 1] * parts < prefix[end] * parts - share) {
        --end;
      }
    }
    for (std::size_t i = begin; i < end; ++i) owners[i] = static_cast<int>(rank);
    begin = end;
  }
  return owners;
}

std::vector<int> equal_chunks(std::size_t blocks, int ranks) {
  std::vector<int> owners(blocks);
  for (std::size_t i = 0; i < blocks; ++i) owners[i] = static_cast<int>(i * static_cast<std::size_t>(ranks) / blocks);
  return owners;
}

// The largest rank's cost over the mean.
double imbalance(const std::vector<std::uint64_t>& costs, const std::vector<int>& owners, int ranks) {
  std::vector<std::uint64_t> per_rank(static_cast<std::size_t>(ranks), 0);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < costs.size(); ++i) {
    per_rank[static_cast<std::size_t>(owners[i])] += costs[i];
    total += costs[i];
  }
  const std::uint64_t largest = *std::max_element(per_rank.begin(), per_rank.end());
  return static_cast<double>(largest) * ranks / static_cast<double>(total);
}

// What a block's task needs besides its buffers: [0] the block (RW), [1] and [2] its left and
// right halos for the next step (W), then the neighbours' halos it reads, where there are
// neighbours.
struct StepArgs {
  unsigned substeps;
  bool has_left;
  bool has_right;
};

void step_block(hetflow::TaskContext& context) {
  const StepArgs& args = context.arg<StepArgs>();
  const hetflow::DataView block = context.buffer(0);
  double* values = block.as<double>();
  const std::size_t count = block.elements();
  std::size_t next = 3;
  const double left = args.has_left ? *context.buffer(next++).as<const double>() : kBoundary;
  const double right = args.has_right ? *context.buffer(next).as<const double>() : kBoundary;
  advance_block(values, count, left, right, args.substeps);
  *context.buffer(1).as<double>() = values[0];
  *context.buffer(2).as<double>() = values[count - 1];
}

// The blocks and their halos, registered on every rank; each rank fills the blocks it owns.
class Domain {
 public:
  Domain(hetflow::Runtime& rt, hetflow::mpi::Context& mpi, const Options& options, const std::vector<int>& owners)
      : rt_(rt), points_(options.points), owners_(owners) {
    const std::size_t blocks = options.blocks;
    const int first_tag = mpi.allocate_tags(static_cast<int>(5 * blocks));
    storage_.resize(blocks);
    halo_storage_.resize(4 * blocks);
    blocks_.resize(blocks);
    for (auto& parity : left_halos_) parity.resize(blocks);
    for (auto& parity : right_halos_) parity.resize(blocks);
    const auto one_point = hetflow::DataLayout::vector(1, sizeof(double));
    for (std::size_t i = 0; i < blocks; ++i) {
      const int owner = owners[i];
      const bool mine = owner == mpi.rank();
      if (mine) storage_[i].resize(points_);
      const int tag = first_tag + static_cast<int>(5 * i);
      const std::string name = std::to_string(i);
      // Elsewhere than on the owner, hetflow allocates the copies (nullptr).
      blocks_[i] = mpi.register_data(mine ? storage_[i].data() : nullptr,
                                     hetflow::DataLayout::vector(points_, sizeof(double)), owner, tag, "u" + name);
      for (std::size_t parity = 0; parity < 2; ++parity) {
        double* left = mine ? &halo_storage_[4 * i + 2 * parity] : nullptr;
        double* right = mine ? &halo_storage_[4 * i + 2 * parity + 1] : nullptr;
        const std::string suffix = name + "." + std::to_string(parity);
        left_halos_[parity][i] =
            mpi.register_data(left, one_point, owner, tag + 1 + static_cast<int>(2 * parity), "left" + suffix);
        right_halos_[parity][i] =
            mpi.register_data(right, one_point, owner, tag + 2 + static_cast<int>(2 * parity), "right" + suffix);
      }
      if (!mine) continue;
      hetflow::Acquisition values = rt.acquire(blocks_[i], hetflow::AccessMode::W);
      for (std::size_t j = 0; j < points_; ++j) values.as<double>()[j] = initial_value(i * points_ + j);
      rt.acquire(left_halos_[0][i], hetflow::AccessMode::W).as<double>()[0] = values.as<double>()[0];
      rt.acquire(right_halos_[0][i], hetflow::AccessMode::W).as<double>()[0] = values.as<double>()[points_ - 1];
    }
  }

  [[nodiscard]] std::size_t blocks() const noexcept { return blocks_.size(); }
  // The buffers go with the domain, before the context ends: their handles go first (after the
  // run's last wait_all, on every rank), or the runtime would keep them over freed memory.
  ~Domain() {
    for (const auto* handles : {&blocks_, &left_halos_[0], &left_halos_[1], &right_halos_[0], &right_halos_[1]}) {
      for (const hetflow::DataHandle& handle : *handles) rt_.unregister(handle);
    }
  }
  Domain(const Domain&) = delete;
  Domain& operator=(const Domain&) = delete;

  [[nodiscard]] const std::vector<int>& owners() const noexcept { return owners_; }

  // Moves the blocks whose owner changes; returns how many.
  std::size_t redistribute(hetflow::mpi::Context& mpi, const std::vector<int>& owners) {
    std::size_t moved = 0;
    for (std::size_t i = 0; i < blocks(); ++i) {
      if (owners[i] == owners_[i]) continue;
      mpi.migrate(blocks_[i], owners[i]);
      ++moved;
    }
    owners_ = owners;
    return moved;
  }

  // Submits step `step` on every rank; keeps the futures of the tasks that run on this one.
  void submit_step(hetflow::mpi::Context& mpi, const hetflow::Codelet& codelet, const CostModel& model,
                   std::size_t step, std::vector<hetflow::Future<void>>& futures) const {
    const std::size_t now = step % 2, then = (step + 1) % 2;
    std::vector<hetflow::DataAccess> data;
    for (std::size_t i = 0; i < blocks(); ++i) {
      const bool has_left = i > 0, has_right = i + 1 < blocks();
      data.assign({RW(blocks_[i]), W(left_halos_[then][i]), W(right_halos_[then][i])});
      if (has_left) data.push_back(R(right_halos_[now][i - 1]));
      if (has_right) data.push_back(R(left_halos_[now][i + 1]));
      hetflow::Future<void> future =
          mpi.insert(codelet, {.data_list = data, .where = hetflow::Arch::cpu},
                     StepArgs{.substeps = model.substeps(i, step), .has_left = has_left, .has_right = has_right});
      if (future.valid()) futures.push_back(std::move(future));
    }
  }

  // The whole domain on rank 0 (empty elsewhere): every block brought there, then read.
  std::vector<double> gather_on_rank_0(hetflow::Runtime& rt, hetflow::mpi::Context& mpi) const {
    for (const hetflow::DataHandle& block : blocks_) mpi.get_on(block, 0);
    mpi.wait_all();
    std::vector<double> domain;
    if (mpi.rank() != 0) return domain;
    domain.resize(blocks() * points_);
    for (std::size_t i = 0; i < blocks(); ++i) {
      const hetflow::Acquisition values = rt.acquire(blocks_[i], hetflow::AccessMode::R);
      std::copy_n(values.as<const double>(), points_, domain.begin() + static_cast<std::ptrdiff_t>(i * points_));
    }
    return domain;
  }

 private:
  hetflow::Runtime& rt_;
  std::size_t points_;
  std::vector<int> owners_;
  std::vector<std::vector<double>> storage_;  // the initial owner's buffers
  std::vector<double> halo_storage_;
  std::vector<hetflow::DataHandle> blocks_;
  std::vector<hetflow::DataHandle> left_halos_[2];  // by step parity
  std::vector<hetflow::DataHandle> right_halos_[2];
};

// The same steps on one rank, block by block with the same function: the reference of --check.
std::vector<double> serial_run(const Options& options, const CostModel& model) {
  const std::size_t blocks = options.blocks, points = options.points;
  std::vector<double> domain(blocks * points);
  for (std::size_t j = 0; j < domain.size(); ++j) domain[j] = initial_value(j);
  std::vector<double> left(blocks), right(blocks);
  for (std::size_t step = 0; step < options.steps; ++step) {
    for (std::size_t i = 0; i < blocks; ++i) {
      left[i] = i > 0 ? domain[i * points - 1] : kBoundary;
      right[i] = i + 1 < blocks ? domain[(i + 1) * points] : kBoundary;
    }
    for (std::size_t i = 0; i < blocks; ++i) {
      advance_block(domain.data() + i * points, points, left[i], right[i], model.substeps(i, step));
    }
  }
  return domain;
}

// Counts every rank has (tasks it ran, bytes and messages it sent), gathered on rank 0 through
// the data model itself: each rank writes its own into a handle it owns, which get_on brings to
// rank 0.
struct RankCounts {
  std::uint64_t tasks = 0;
  std::uint64_t bytes = 0;
  std::uint64_t messages = 0;
};

class CountsOnRank0 {
 public:
  CountsOnRank0(hetflow::Runtime& rt, hetflow::mpi::Context& mpi)
      : rt_(rt), counts_(static_cast<std::size_t>(mpi.size())) {
    const int first_tag = mpi.allocate_tags(mpi.size());
    for (int rank = 0; rank < mpi.size(); ++rank) {
      handles_.push_back(mpi.register_data(&counts_[static_cast<std::size_t>(rank)],
                                           hetflow::DataLayout::vector(1, sizeof(RankCounts)), rank, first_tag + rank,
                                           "counts of " + std::to_string(rank)));
    }
  }

  ~CountsOnRank0() {
    for (const hetflow::DataHandle& handle : handles_) rt_.unregister(handle);  // as ~Domain
  }
  CountsOnRank0(const CountsOnRank0&) = delete;
  CountsOnRank0& operator=(const CountsOnRank0&) = delete;

  // Every rank's counts on rank 0 (elsewhere: empty).
  std::vector<RankCounts> gather(hetflow::Runtime& rt, hetflow::mpi::Context& mpi, const RankCounts& mine) {
    rt.acquire(handles_[static_cast<std::size_t>(mpi.rank())], hetflow::AccessMode::W).as<RankCounts>()[0] = mine;
    for (const hetflow::DataHandle& handle : handles_) mpi.get_on(handle, 0);
    mpi.wait_all();
    std::vector<RankCounts> all;
    if (mpi.rank() != 0) return all;
    for (const hetflow::DataHandle& handle : handles_) {
      all.push_back(rt.acquire(handle, hetflow::AccessMode::R).as<const RankCounts>()[0]);
    }
    return all;
  }

 private:
  hetflow::Runtime& rt_;
  std::vector<RankCounts> counts_;
  std::vector<hetflow::DataHandle> handles_;
};

RankCounts sent_total(const std::vector<hetflow::mpi::PeerStats>& peers) {
  RankCounts total;
  for (const hetflow::mpi::PeerStats& peer : peers) {
    total.bytes += peer.bytes;
    total.messages += peer.messages;
  }
  return total;
}

struct RunResult {
  double seconds = 0;
  bool ok = true;
};

// One run of every step, migrating or not, over data of its own; rank 0 prints a line per phase
// when `report` is set.
RunResult run_stencil(hetflow::Runtime& rt, hetflow::mpi::Context& mpi, const Options& options, bool migrate,
                      const std::vector<double>& reference, bool report = true) {
  const int rank = mpi.rank(), ranks = mpi.size();
  const CostModel model(options);
  const hetflow::Codelet codelet{.name = "stencil_step", .cpu = step_block};
  CountsOnRank0 counts(rt, mpi);
  Domain domain(rt, mpi, options, equal_chunks(options.blocks, ranks));
  const RankCounts sent_before = sent_total(mpi.sent());

  if (report && rank == 0) {
    std::printf("%s run:\n%5s %9s %8s  %-*s %9s %9s\n", migrate ? "migrating" : "static", "phase", "steps", "migrated",
                std::max(15, 4 * ranks), "blocks per rank", "max/mean", "seconds");
  }
  RunResult result;
  std::size_t migrated = 0;
  std::vector<hetflow::Future<void>> futures;
  mpi.wait_all();  // every rank has registered and filled its blocks: start the clock together
  for (std::size_t first = 0, phase = 0; first < options.steps; first += options.period, ++phase) {
    const std::size_t end = std::min(first + options.period, options.steps);
    const std::vector<std::uint64_t> costs = model.block_costs(first, end);
    const auto start = std::chrono::steady_clock::now();
    const std::size_t moved = migrate ? domain.redistribute(mpi, balanced_owners(costs, ranks)) : 0;
    for (std::size_t step = first; step < end; ++step) domain.submit_step(mpi, codelet, model, step, futures);
    mpi.wait_all();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.seconds += seconds;
    migrated += moved;
    if (!report || rank != 0) continue;
    std::string per_rank;
    for (int r = 0; r < ranks; ++r) {
      per_rank += std::to_string(std::count(domain.owners().begin(), domain.owners().end(), r));
      per_rank += ' ';
    }
    const std::string steps = std::to_string(first) + "-" + std::to_string(end - 1);
    std::printf("%5zu %9s %8zu  %-*s %9.2f %9.4f\n", phase, steps.c_str(), moved, std::max(15, 4 * ranks),
                per_rank.c_str(), imbalance(costs, domain.owners(), ranks), seconds);
  }
  std::size_t failed = 0;
  for (const hetflow::Future<void>& future : futures) {
    try {
      future.get();
    } catch (const std::exception& error) {
      if (failed++ == 0) std::fprintf(stderr, "mpi_stencil (rank %d): %s\n", rank, error.what());
    }
  }
  if (failed > 0) {
    std::fprintf(stderr, "mpi_stencil (rank %d): %zu of its %zu tasks failed\n", rank, failed, futures.size());
    result.ok = false;
  }
  RankCounts mine = sent_total(mpi.sent());
  mine.tasks = futures.size();
  mine.bytes -= sent_before.bytes;
  mine.messages -= sent_before.messages;
  const std::vector<RankCounts> all = counts.gather(rt, mpi, mine);
  if (report && rank == 0) {
    RankCounts total;
    std::string tasks;
    for (const RankCounts& one : all) {
      total.bytes += one.bytes;
      total.messages += one.messages;
      tasks += ' ' + std::to_string(one.tasks);
    }
    std::printf(
        "%s: %zu steps in %.4f s (%.3f ms per step); blocks migrated: %zu (%zu bytes); tasks per rank:%s; "
        "sent by all ranks: %llu bytes in %llu messages\n",
        migrate ? "migrating" : "static", options.steps, result.seconds,
        1e3 * result.seconds / static_cast<double>(options.steps), migrated, migrated * options.points * sizeof(double),
        tasks.c_str(), static_cast<unsigned long long>(total.bytes), static_cast<unsigned long long>(total.messages));
  }
  if (options.check) {
    const std::vector<double> computed = domain.gather_on_rank_0(rt, mpi);
    if (rank == 0) {
      std::size_t differing = 0;
      double worst = 0;
      for (std::size_t j = 0; j < reference.size(); ++j) {
        if (std::bit_cast<std::uint64_t>(computed[j]) == std::bit_cast<std::uint64_t>(reference[j])) continue;
        ++differing;
        worst = std::max(worst, std::abs(computed[j] - reference[j]));
      }
      std::printf("check against a serial run on rank 0: %zu of %zu points differ (max |difference| %.3e): %s\n",
                  differing, reference.size(), worst, differing == 0 ? "OK" : "FAILED");
      result.ok = result.ok && differing == 0;
    }
  }
  return result;
}

void print_usage() {
  std::printf(
      "usage: mpirun -np N mpi_stencil [options]\n"
      "A 1-D stencil over blocks spread across MPI ranks (hetflow::mpi); a hot spot whose blocks cost\n"
      "K times more drifts along the domain, and every R steps the blocks migrate to balance the load.\n"
      "  --blocks B       blocks in the domain (default 32; at least the number of ranks)\n"
      "  --points P       points per block (default 8192)\n"
      "  --steps T        steps (default 96)\n"
      "  --period R       steps between rebalancings: a phase (default 8)\n"
      "  --hot-blocks H   blocks in the hot spot (default 4)\n"
      "  --hot-cost K     reaction sub-steps per step in the hot spot, 1 elsewhere (default 16)\n"
      "  --drift S        the hot spot moves one block every S steps (default 3)\n"
      "  --no-migrate     keep the initial contiguous distribution (static)\n"
      "  --compare        a static run, then a migrating one, and both times\n"
      "  --check          compare the final domain with a serial run on rank 0, bit for bit\n"
      "  --ncpus N        CPU workers per rank (default: this rank's share of the machine)\n");
}

// Parses the command line; returns false (after saying why) on a mistake.
bool parse(int argc, char** argv, Options& options, bool& help) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto number = [&](auto& field) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "mpi_stencil: %s needs a value\n", argv[i]);
        return false;
      }
      char* end = nullptr;
      const unsigned long long value = std::strtoull(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || value == 0) {
        std::fprintf(stderr, "mpi_stencil: %s wants a positive integer, not '%s'\n", argv[i - 1], argv[i]);
        return false;
      }
      field = static_cast<std::remove_reference_t<decltype(field)>>(value);
      return true;
    };
    bool ok = true;
    if (arg == "--help" || arg == "-h") {
      help = true;
    } else if (arg == "--blocks") {
      ok = number(options.blocks);
    } else if (arg == "--points") {
      ok = number(options.points);
    } else if (arg == "--steps") {
      ok = number(options.steps);
    } else if (arg == "--period") {
      ok = number(options.period);
    } else if (arg == "--hot-blocks") {
      ok = number(options.hot_blocks);
    } else if (arg == "--hot-cost") {
      ok = number(options.hot_cost);
    } else if (arg == "--drift") {
      ok = number(options.drift);
    } else if (arg == "--ncpus") {
      ok = number(options.ncpus);
    } else if (arg == "--no-migrate") {
      options.migrate = false;
    } else if (arg == "--compare") {
      options.compare = true;
    } else if (arg == "--check") {
      options.check = true;
    } else {
      std::fprintf(stderr, "mpi_stencil: unknown option '%s' (--help lists them)\n", argv[i]);
      ok = false;
    }
    if (!ok) return false;
  }
  if (options.compare && !options.migrate) {
    std::fprintf(stderr, "mpi_stencil: --compare runs both; --no-migrate goes without it\n");
    return false;
  }
  return true;
}

// Both runs (or one), after a warm-up; 0 when everything passed.
int run_all(hetflow::Runtime& rt, hetflow::mpi::Context& mpi, const Options& options) {
  const int rank = mpi.rank();
  if (options.blocks < static_cast<std::size_t>(mpi.size())) {
    if (rank == 0)
      std::fprintf(stderr, "mpi_stencil: %zu blocks for %d ranks: each needs one\n", options.blocks, mpi.size());
    return 2;
  }
  if (rank == 0) {
    std::printf(
        "mpi_stencil: %d ranks (CPU workers on rank 0: %zu), %zu blocks of %zu points, %zu steps, phases of %zu "
        "steps;\nhot spot: %zu blocks, %u sub-steps (1 elsewhere), moving one block every %zu steps\n",
        mpi.size(), static_cast<std::size_t>(rt.worker_count()), options.blocks, options.points, options.steps,
        options.period, std::min(options.hot_blocks, options.blocks), options.hot_cost, options.drift);
  }
  const std::vector<double> reference =
      options.check && rank == 0 ? serial_run(options, CostModel(options)) : std::vector<double>{};

  // The first messages between two ranks and the workers' first tasks cost more than the next
  // ones: a short run that is not reported pays for them before the timed runs.
  Options warm_up = options;
  warm_up.steps = std::min(options.steps, 2 * options.period);
  warm_up.check = false;
  bool ok = run_stencil(rt, mpi, warm_up, options.migrate, {}, /*report=*/false).ok;

  double static_seconds = 0;
  if (options.compare || !options.migrate) {
    const RunResult result = run_stencil(rt, mpi, options, false, reference);
    static_seconds = result.seconds;
    ok = ok && result.ok;
  }
  if (options.migrate) {
    const RunResult result = run_stencil(rt, mpi, options, true, reference);
    ok = ok && result.ok;
    if (options.compare && rank == 0) {
      std::printf("elapsed: static %.4f s, migrating %.4f s (static / migrating = %.2f)\n", static_seconds,
                  result.seconds, static_seconds / result.seconds);
    }
  }
  return ok ? 0 : 1;
}

int run(const Options& options) {
  const std::shared_ptr<hetflow::mpi::Transport> transport = hetflow::mpi::world();
  hetflow::Config config;
  if (options.ncpus > 0) {
    config.ncpus = options.ncpus;
  } else {
    hetflow::mpi::share_node(*transport);  // before the runtime: its workers on this rank's cores
  }
  hetflow::Runtime rt(config);
  hetflow::mpi::Context mpi(rt, transport);
  try {
    return run_all(rt, mpi, options);
  } catch (const std::exception& error) {
    // The other ranks would wait for this one in their next wait_all, and the context's
    // destructor here for transfers they will not make: leave at once, which makes mpirun end them.
    std::fprintf(stderr, "mpi_stencil (rank %d): %s\n", mpi.rank(), error.what());
    std::fflush(stdout);
    std::_Exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  bool help = false;
  if (!parse(argc, argv, options, help)) return 2;
  if (help) {
    print_usage();
    return 0;
  }
  try {
    return run(options);
  } catch (const std::exception& error) {  // before the ranks could work together (MPI, the runtime)
    std::fprintf(stderr, "mpi_stencil: %s\n", error.what());
    return 1;
  }
}
