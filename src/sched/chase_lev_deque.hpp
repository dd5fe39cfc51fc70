#pragma once
// A work-stealing deque (Chase and Lev; memory orders after Le, Pop, Cohen and Zappa Nardelli,
// PPoPP 2013). The owner pushes and pops at the bottom; any thread steals from the top. The owner
// keeps its own copy of bottom and a possibly stale top (it only grows the array when even a
// fresh top says it is full).
// Arrays that were outgrown are kept until the deque dies, so a thief never reads freed memory.
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace hetflow::detail {

template <class T>
class ChaseLevDeque {
  static_assert(std::is_pointer_v<T>);

 public:
  explicit ChaseLevDeque(std::int64_t capacity = 1024) {
    arrays_.push_back(std::make_unique<Array>(capacity));
    owner_array_ = arrays_.back().get();
    array_.store(owner_array_, std::memory_order_relaxed);
  }

  void push(T item) {
    const std::int64_t b = owner_bottom_;
    Array* a = owner_array_;
    if (b - owner_top_ > a->capacity - 1) {
      // Looks full from the owner's stale view of top: refresh it before growing.
      owner_top_ = top_.load(std::memory_order_acquire);
      if (b - owner_top_ > a->capacity - 1) a = grow(a, owner_top_, b);
    }
    a->put(b, item);
    // A release store rather than a release fence and a relaxed store: the same ordering for the
    // thieves' acquire load of bottom_, and one ThreadSanitizer can see (it ignores fences).
    bottom_.store(b + 1, std::memory_order_release);
    owner_bottom_ = b + 1;
  }

  T pop() {
    const std::int64_t b = owner_bottom_ - 1;
    Array* a = owner_array_;
    bottom_.store(b, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::int64_t t = top_.load(std::memory_order_relaxed);
    owner_top_ = t;
    if (t > b) {
      bottom_.store(b + 1, std::memory_order_relaxed);
      return nullptr;
    }
    T item = a->get(b);
    if (t == b) {
      // The last item: race the thieves for it.
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) {
        item = nullptr;
      }
      bottom_.store(b + 1, std::memory_order_relaxed);
      return item;
    }
    owner_bottom_ = b;
    return item;
  }

  /// Takes the oldest item, or nullptr if the deque looked empty or another thread won it.
  T steal() {
    std::int64_t t = top_.load(std::memory_order_acquire);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::int64_t b = bottom_.load(std::memory_order_acquire);
    if (t >= b) return nullptr;
    Array* a = array_.load(std::memory_order_acquire);
    T item = a->get(t);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) return nullptr;
    return item;
  }

  [[nodiscard]] bool looks_empty() const noexcept {
    return top_.load(std::memory_order_relaxed) >= bottom_.load(std::memory_order_relaxed);
  }

 private:
  struct Array {
    explicit Array(std::int64_t n) : capacity(n), mask(n - 1), items(new std::atomic<T>[static_cast<std::size_t>(n)]) {}
    std::int64_t capacity;
    std::int64_t mask;
    std::unique_ptr<std::atomic<T>[]> items;
    void put(std::int64_t i, T item) noexcept {
      items[static_cast<std::size_t>(i & mask)].store(item, std::memory_order_relaxed);
    }
    T get(std::int64_t i) const noexcept {
      return items[static_cast<std::size_t>(i & mask)].load(std::memory_order_relaxed);
    }
  };

  Array* grow(Array* old, std::int64_t t, std::int64_t b) {
    auto bigger = std::make_unique<Array>(old->capacity * 2);
    for (std::int64_t i = t; i < b; ++i) bigger->put(i, old->get(i));
    Array* raw = bigger.get();
    arrays_.push_back(std::move(bigger));
    array_.store(raw, std::memory_order_release);
    owner_array_ = raw;
    return raw;
  }

  alignas(64) std::atomic<std::int64_t> top_{0};
  alignas(64) std::atomic<std::int64_t> bottom_{0};
  alignas(64) std::atomic<Array*> array_{nullptr};
  std::vector<std::unique_ptr<Array>> arrays_;  // touched by the owner only
  // The owner's private copies, so that pushing does not pull the lines thieves write.
  alignas(64) std::int64_t owner_bottom_ = 0;
  std::int64_t owner_top_ = 0;
  Array* owner_array_ = nullptr;
};

}  // namespace hetflow::detail
