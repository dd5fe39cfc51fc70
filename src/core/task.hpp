#pragma once
// The engine's task record. Pooled: see task_pool.hpp.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hetflow/access.hpp"
#include "hetflow/codelet.hpp"
#include "hetflow/detail/task_api.hpp"
#include "hetflow/ext/scheduler.hpp"
#include "util/spin_lock.hpp"

namespace hetflow::detail {

class Engine;
class HandleImpl;
struct TaskCore;

struct AccessRecord {
  HandleImpl* handle = nullptr;
  AccessMode mode = AccessMode::R;
};

/// What a kCallsBack manual task calls when it starts (with itself), kept in its inline storage.
using ManualCallback = std::function<void(TaskCore*)>;

inline constexpr BodyOps kNoBody{[](void*, TaskContext&) {}, [](void*) noexcept {}, nullptr, nullptr};

struct TaskCore : ext::SchedTask {
  static constexpr std::uint32_t kStatusMask = 0xff;
  static constexpr std::uint32_t kWaitersBit = 0x100;
  static constexpr std::size_t kInlineStorage = 40;
  static constexpr std::size_t kInlineAccesses = 2;
  /// Successor links: bit 0 marks a CompletionCallback*; bit 1 a successor task that waits for
  /// this one only for order (see EdgeKind), so that this one's failure does not fail it.
  static constexpr std::uintptr_t kCallbackLink = 1;
  static constexpr std::uintptr_t kOrderingLink = 2;
  static constexpr std::uintptr_t kLinkTags = 3;

  enum Flags : std::uint8_t {
    kManual = 1,        // never scheduled: made ready, then finished by its owner (acquisitions)
    kHeapStorage = 2,   // the body did not fit inline: storage holds a pointer to it
    kHeapAccesses = 4,  // more accesses than fit inline
    kUnregisters = 8,   // a manual task that unregisters its handle as soon as it starts
    kPrefetches = 16,   // a manual task that starts a prefetch of its handle as soon as it starts
    kCallsBack = 32,    // a manual task that calls the ManualCallback in its storage when it starts
  };

  std::atomic<std::uint32_t> state{static_cast<std::uint32_t>(TaskStatus::pending)};
  std::atomic<std::uint32_t> refs{0};
  std::atomic<std::int32_t> pending{0};
  SpinLock lock;          // guards released, successors, dependency_error
  bool released = false;  // successors have been told; later dependents need not wait
  std::uint8_t flags = 0;
  std::uint16_t access_count = 0;
  std::int32_t pinned_worker = -1;  // runs on this worker only, bypassing the scheduler
  Engine* runtime = nullptr;
  const BodyOps* ops = nullptr;
  const Codelet* codelet = nullptr;
  std::uintptr_t first_successor = 0;  // a tagged link: see kCallbackLink, kOrderingLink
  std::vector<std::uintptr_t>* more_successors = nullptr;
  std::exception_ptr error;  // own failure, or the DependencyError that keeps it from running
  std::unique_ptr<std::string> name;
  union {
    AccessRecord inline_accesses[kInlineAccesses];
    AccessRecord* heap_accesses;
  };
  alignas(16) std::byte inline_storage[kInlineStorage];

  TaskCore() noexcept : inline_accesses{} {}

  [[nodiscard]] TaskStatus status() const noexcept {
    return static_cast<TaskStatus>(state.load(std::memory_order_acquire) & kStatusMask);
  }
  [[nodiscard]] void* storage() noexcept {
    return (flags & kHeapStorage) ? *reinterpret_cast<void**>(inline_storage) : inline_storage;
  }
  [[nodiscard]] AccessRecord* accesses() noexcept { return (flags & kHeapAccesses) ? heap_accesses : inline_accesses; }
  [[nodiscard]] const char* display_name() const noexcept {
    if (name) return name->c_str();
    if (codelet != nullptr && !codelet->name.empty()) return codelet->name.c_str();
    return "task";
  }
};

static_assert(alignof(TaskCore) > TaskCore::kLinkTags, "successor links keep their tags in a TaskCore*'s low bits");

[[nodiscard]] constexpr bool is_final(TaskStatus status) noexcept {
  return status == TaskStatus::done || status == TaskStatus::failed || status == TaskStatus::cancelled;
}

}  // namespace hetflow::detail
