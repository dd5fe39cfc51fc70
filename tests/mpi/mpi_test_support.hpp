#pragma once
// Helpers of the suites that run under mpirun (every rank runs every test).
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hetflow/mpi.hpp"

namespace hetflow::test {

/// How long a rank waits for messages before declaring the program stuck. A stuck rank aborts
/// (which ends every rank) rather than leaving its callbacks to fire into a finished test.
inline constexpr std::chrono::seconds mpi_stuck_after{60};

/// Counts the `done` callbacks of a transport.
class Completions {
 public:
  /// A callback that counts one completion.
  std::function<void()> callback() {
    return [state = state_] {
      {
        std::lock_guard guard(state->mutex);
        ++state->count;
      }
      state->changed.notify_all();
    };
  }

  /// Waits until `expected` callbacks have run; aborts the rank, saying what it waited for, if
  /// they do not come.
  void wait(std::size_t expected, const std::string& what) const {
    std::unique_lock lock(state_->mutex);
    if (!state_->changed.wait_for(lock, mpi_stuck_after, [&] { return state_->count >= expected; })) {
      std::fprintf(stderr, "rank %d: stuck waiting for %s (%zu of %zu done)\n", world_rank(), what.c_str(),
                   state_->count, expected);
      std::fflush(stderr);
      std::abort();
    }
  }

  [[nodiscard]] std::size_t count() const {
    std::lock_guard guard(state_->mutex);
    return state_->count;
  }

 private:
  static int world_rank() { return hetflow::mpi::world()->rank(); }

  struct State {
    std::mutex mutex;
    std::condition_variable changed;
    std::size_t count = 0;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

/// Waits for a barrier of `transport` on every rank.
inline void barrier(hetflow::mpi::Transport& transport, const std::string& what = "a barrier") {
  Completions done;
  transport.barrier(done.callback());
  done.wait(1, what);
}

/// The byte at `index` of a test message identified by (sender, message).
inline std::uint8_t pattern_byte(int sender, std::size_t message, std::size_t index) {
  return static_cast<std::uint8_t>((static_cast<std::size_t>(sender) * 131 + message * 31 + index * 7 + index / 251) &
                                   0xFF);
}

inline std::vector<std::uint8_t> pattern(int sender, std::size_t message, std::size_t bytes) {
  std::vector<std::uint8_t> data(bytes);
  for (std::size_t i = 0; i < bytes; ++i) data[i] = pattern_byte(sender, message, i);
  return data;
}

/// What a rank sends around a ring (message i: `sizes[i]` bytes of its pattern) and the zeroed
/// buffers it receives the previous rank's into.
struct RingMessages {
  std::vector<std::vector<std::uint8_t>> outgoing;
  std::vector<std::vector<std::uint8_t>> incoming;
};

inline RingMessages ring_messages(int rank, const std::vector<std::size_t>& sizes) {
  RingMessages messages;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    messages.outgoing.push_back(pattern(rank, i, sizes[i]));
    messages.incoming.emplace_back(sizes[i], std::uint8_t{0});
  }
  return messages;
}

/// The index of the first byte that differs from the pattern, or -1 (for readable failures of
/// large buffers).
inline long long first_mismatch(const std::vector<std::uint8_t>& data, int sender, std::size_t message) {
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (data[i] != pattern_byte(sender, message, i)) return static_cast<long long>(i);
  }
  return -1;
}

}  // namespace hetflow::test
