#pragma once
// The engine's task record. Pooled: see task_pool.hpp.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "hetflow/access.hpp"
#include "hetflow/codelet.hpp"
#include "hetflow/detail/task_api.hpp"
#include "hetflow/ext/scheduler.hpp"
#include "util/block_pool.hpp"
#include "util/spin_lock.hpp"

namespace hetflow::detail {

class Engine;
class HandleImpl;
struct TaskCore;

struct AccessRecord {
  HandleImpl* handle = nullptr;
  AccessMode mode = AccessMode::R;
  /// The task named this handle in an earlier record too: dependencies and bytes count it there.
  bool repeat = false;
};

/// What a kCallsBack manual task calls when it starts (with itself), kept in its inline storage.
using ManualCallback = std::function<void(TaskCore*)>;

inline constexpr BodyOps kNoBody{[](void*, TaskContext&) {}, [](void*) noexcept {}, nullptr, nullptr};

/// A task's successor links, in the order added: the first few inline, since a task of a regular
/// graph has few, the rest in pooled chunks. A link is never 0.
class SuccessorLinks {
 public:
  static constexpr std::size_t kInline = 2;

  SuccessorLinks() = default;
  SuccessorLinks(SuccessorLinks&& other) noexcept { steal(other); }
  SuccessorLinks& operator=(SuccessorLinks&& other) noexcept {
    if (this != &other) {
      free_chunks();
      steal(other);
    }
    return *this;
  }
  ~SuccessorLinks() { free_chunks(); }

  void add(std::uintptr_t link) {
    for (std::uintptr_t& slot : inline_) {
      if (slot == 0) {
        slot = link;
        return;
      }
    }
    if (last_ == nullptr || last_->links[Chunk::kLinks - 1] != 0) {
      auto* chunk = ::new (Chunks::allocate()) Chunk{};
      (last_ == nullptr ? first_ : last_->next) = chunk;
      last_ = chunk;
    }
    for (std::uintptr_t& slot : last_->links) {
      if (slot == 0) {
        slot = link;
        return;
      }
    }
  }
  /// Moves the links out, leaving none here.
  [[nodiscard]] SuccessorLinks take() noexcept { return std::move(*this); }
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (std::uintptr_t link : inline_) {
      if (link == 0) return;
      fn(link);
    }
    for (const Chunk* chunk = first_; chunk != nullptr; chunk = chunk->next) {
      for (std::uintptr_t link : chunk->links) {
        if (link == 0) return;
        fn(link);
      }
    }
  }

 private:
  struct Chunk {
    static constexpr std::size_t kLinks = 7;
    std::uintptr_t links[kLinks] = {};
    Chunk* next = nullptr;
  };
  using Chunks = BlockPool<sizeof(Chunk), alignof(Chunk)>;

  void steal(SuccessorLinks& other) noexcept {
    for (std::size_t i = 0; i < kInline; ++i) inline_[i] = std::exchange(other.inline_[i], 0);
    first_ = std::exchange(other.first_, nullptr);
    last_ = std::exchange(other.last_, nullptr);
  }
  void free_chunks() noexcept {
    while (first_ != nullptr) {
      Chunk* next = first_->next;
      Chunks::recycle(first_);
      first_ = next;
    }
    last_ = nullptr;
  }

  std::uintptr_t inline_[kInline] = {};
  Chunk* first_ = nullptr;
  Chunk* last_ = nullptr;
};

struct TaskCore : ext::SchedTask {
  static constexpr std::uint32_t kStatusMask = 0xff;
  static constexpr std::uint32_t kWaitersBit = 0x100;
  static constexpr std::uint32_t kAfterAbortBit = 0x200;  // reached its final state after Engine::abort
  // Started by a task that waits for it (Engine::claim) while still queued. The queue's entry
  // holds no reference: the record stays in the pool's hands until both the entry has been
  // taken (kEntryDroppedBit) and the last reference dropped (kContentsGoneBit); whichever comes
  // second returns it to the pool (task_pool.cpp). These bits outlive the status changes.
  static constexpr std::uint32_t kClaimedBit = 0x400;
  static constexpr std::uint32_t kEntryDroppedBit = 0x800;
  static constexpr std::uint32_t kContentsGoneBit = 0x1000;
  static constexpr std::uint32_t kClaimBits = kClaimedBit | kEntryDroppedBit | kContentsGoneBit;
  // Ended because shutdown_until gave up on the work (Engine::give_up_on): cancelled before it
  // started, or failed while its body still ran, detached (the body's own end then changes
  // nothing).
  static constexpr std::uint32_t kGivenUpBit = 0x2000;
  // Its end was counted and told to its successors when the shutdown gave up on it: its finish,
  // if it ever comes, only drops the engine's reference.
  static constexpr std::uint32_t kToldEarlyBit = 0x4000;
  static constexpr std::size_t kInlineStorage = 40;
  static constexpr std::size_t kInlineAccesses = 4;
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
    kAbandoned = 64,    // a manual task its owner gave up waiting for (refused): it ends as it starts
  };

  std::atomic<std::uint32_t> state{static_cast<std::uint32_t>(TaskStatus::pending)};
  std::atomic<std::uint32_t> refs{0};
  // The Futures of the task, among `refs`: the one the submission hands out counts from the
  // start. Once none is left and the task is done, its result goes (kResultGone), so that a
  // result referring to the task's own data does not live as long as that data's handle does.
  static constexpr std::uint32_t kResultGone = 0x80000000U;
  std::atomic<std::uint32_t> future_refs{1};
  std::atomic<std::int32_t> pending{0};
  SpinLock lock;          // guards released, successors, dependency_error
  bool released = false;  // successors have been told; later dependents need not wait
  std::uint8_t flags = 0;
  std::uint16_t access_count = 0;
  std::int32_t pinned_worker = -1;  // runs on this worker only, bypassing the scheduler
  // The sequence + 1 of the task whose body submitted this one (0: submitted outside a task): a
  // task waiting inside its body may run its own children on its stack.
  std::uint64_t parent_sequence = 0;
  Engine* runtime = nullptr;
  const BodyOps* ops = nullptr;
  const Codelet* codelet = nullptr;
  SuccessorLinks successors;  // tagged links: see kCallbackLink, kOrderingLink
  std::exception_ptr error;   // own failure, or the DependencyError that keeps it from running
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
