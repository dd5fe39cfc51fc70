#pragma once
#include <mutex>

#include "util/cpu_relax.hpp"

namespace hetflow::detail {

/// A mutex for short critical sections taken by many threads: a contender spins for a while
/// before it sleeps, since sleeping and being woken costs more than the section itself.
class AdaptiveMutex {
 public:
  void lock() {
    for (int attempt = 0; attempt < kSpins; ++attempt) {
      if (mutex_.try_lock()) return;
      cpu_relax();
    }
    mutex_.lock();
  }
  bool try_lock() { return mutex_.try_lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  static constexpr int kSpins = 100;
  std::mutex mutex_;
};

}  // namespace hetflow::detail
