#pragma once
// Blocks of one size, kept for the life of the process. Each thread keeps a free list, and full
// lists move between threads in batches: a block is typically taken by one thread and given back
// by another (a task submitted by the application and finished by a worker), so steady use never
// reaches the general allocator nor takes a lock per block.
#include <pthread.h>

#include <cstddef>
#include <mutex>
#include <new>
#include <vector>

namespace hetflow::detail {

template <std::size_t kBytes, std::size_t kAlign>
class BlockPool {
 public:
  static_assert(kBytes >= sizeof(void*) && kBytes % kAlign == 0);

  [[nodiscard]] static void* allocate() {
    FreeList& list = cache().list;
    if (list.head == nullptr && !shared().take(list)) list = shared().grow();
    Block* block = list.pop();
    // The next block was most likely last written by another thread: start fetching it now.
    if (list.head != nullptr) __builtin_prefetch(list.head, 1);
    return block;
  }

  static void recycle(void* memory) noexcept {
    FreeList& list = cache().list;
    list.push(::new (memory) Block{});
    if (list.size >= 2 * kBatch) {
      FreeList batch;
      while (batch.size < kBatch) batch.push(list.pop());
      try {
        shared().give(batch);
      } catch (...) {  // no memory left to list the batch: this thread keeps it
        while (batch.head != nullptr) list.push(batch.pop());
      }
    }
  }

 private:
  static constexpr std::size_t kBatch = 128;
  static constexpr std::size_t kSlab = 256;

  struct Block {
    Block* next = nullptr;
  };

  struct FreeList {
    Block* head = nullptr;
    std::size_t size = 0;

    void push(Block* block) noexcept {
      block->next = head;
      head = block;
      ++size;
    }
    Block* pop() noexcept {
      Block* block = head;
      head = block->next;
      --size;
      return block;
    }
  };

  class Shared {
   public:
    void give(FreeList batch) {
      std::lock_guard guard(mutex_);
      batches_.push_back(batch);
    }
    bool take(FreeList& into) {
      std::lock_guard guard(mutex_);
      if (batches_.empty()) return false;
      into = batches_.back();
      batches_.pop_back();
      return true;
    }
    FreeList grow() {
      auto* slab = static_cast<std::byte*>(::operator new (kBytes* kSlab, std::align_val_t{kAlign}));
      FreeList list;
      for (std::size_t i = 0; i < kSlab; ++i) list.push(::new (slab + i * kBytes) Block{});
      return list;  // slabs are never returned
    }
    void lock() { mutex_.lock(); }
    void unlock() { mutex_.unlock(); }

   private:
    std::mutex mutex_;
    std::vector<FreeList> batches_;
  };

  static Shared& shared() {
    static Shared* pool = [] {
      auto* created = new Shared();  // outlives every thread's cache
      // A fork while another thread holds the lock would leave it held for ever in the child,
      // where a new runtime allocates.
      ::pthread_atfork([] { shared().lock(); }, [] { shared().unlock(); }, [] { shared().unlock(); });
      return created;
    }();
    return *pool;
  }

  struct Cache {
    FreeList list;
    ~Cache() {
      try {
        if (list.size > 0) shared().give(list);
      } catch (...) {  // no memory left to list them: the blocks are lost, the process goes on
      }
    }
  };

  static Cache& cache() {
    thread_local Cache mine;
    return mine;
  }
};

}  // namespace hetflow::detail
