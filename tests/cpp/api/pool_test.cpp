// Task records come from a pool: once warm, submitting tasks does not call the general
// allocator per task. This executable replaces the global operator new/delete with counting
// versions to check it.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "hetflow/hetflow.hpp"

namespace {

std::atomic<std::size_t> allocations{0};

void* counted_alloc(std::size_t size, std::size_t align) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (size == 0) size = 1;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(size);
  } else {
    p = std::aligned_alloc(align, (size + align - 1) / align * align);
  }
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t size) { return counted_alloc(size, alignof(std::max_align_t)); }
void* operator new[](std::size_t size) { return counted_alloc(size, alignof(std::max_align_t)); }
void* operator new(std::size_t size, std::align_val_t align) {
  return counted_alloc(size, static_cast<std::size_t>(align));
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return counted_alloc(size, static_cast<std::size_t>(align));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

constexpr std::size_t kTasks = 10'000;

TEST(Pool, CountingAllocatorIsInstalled) {
  const std::size_t before = allocations.load();
  auto* p = new int(3);
  delete p;
  EXPECT_EQ(allocations.load(), before + 1);
}

TEST(Pool, SteadyStateSubmissionDoesNotAllocatePerTask) {
  hetflow::Runtime rt;
  std::atomic<std::size_t> ran{0};
  const hetflow::Codelet codelet{.name = "tick",
                                 .cpu = [&ran](hetflow::TaskContext&) { ran.fetch_add(1, std::memory_order_relaxed); }};
  for (int warm = 0; warm < 2; ++warm) {
    for (std::size_t i = 0; i < kTasks; ++i) (void)rt.insert(codelet);
    rt.wait_all();
  }
  const std::size_t before = allocations.load();
  for (std::size_t i = 0; i < kTasks; ++i) (void)rt.insert(codelet);
  rt.wait_all();
  const std::size_t grew = allocations.load() - before;
  EXPECT_EQ(ran.load(), 3 * kTasks);
  // Records come in slabs of 256: even a cold pool would need ~40 slabs for 10,000 tasks.
  EXPECT_LT(grew, kTasks / 100) << grew << " allocations for " << kTasks << " tasks";
  std::printf("%zu allocations for %zu tasks in steady state\n", grew, kTasks);
}

TEST(Pool, SteadyStateCallableSubmission) {
  hetflow::Runtime rt;
  std::atomic<std::size_t> sum{0};
  auto submit_all = [&] {
    for (std::size_t i = 0; i < kTasks; ++i)
      (void)rt.submit([&sum, i] { sum.fetch_add(i, std::memory_order_relaxed); });
    rt.wait_all();
  };
  submit_all();
  submit_all();
  const std::size_t before = allocations.load();
  submit_all();
  const std::size_t grew = allocations.load() - before;
  EXPECT_EQ(sum.load(), 3 * (kTasks * (kTasks - 1) / 2));
  EXPECT_LT(grew, kTasks / 100) << grew << " allocations for " << kTasks << " tasks";
}

}  // namespace
