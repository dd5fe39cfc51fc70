#pragma once
#include <cstdint>
#include <thread>

#include "hetflow/ext/driver.hpp"
#include "hetflow/ext/scheduler.hpp"

namespace hetflow::detail {

class RuntimeImpl;

struct WorkerState {
  RuntimeImpl* runtime = nullptr;
  ext::WorkerInfo info;
  ext::Driver* driver = nullptr;  // nullptr for the built-in CPU workers
  unsigned driver_index = 0;
  int pin_cpu = -1;
  std::thread thread;
};

/// The worker the calling thread is, or nullptr for application threads.
WorkerState* current_worker() noexcept;

}  // namespace hetflow::detail
