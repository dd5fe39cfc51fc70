// Codelets: what an implementation sees through TaskContext (buffers, argument, worker), task
// names, priorities, and explicit ordering of codelet tasks.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "test_support.hpp"

namespace {

// A task keeps a reference to its codelet: a temporary one would be gone when the task runs.
template <class C>
concept InsertableFrom = requires(hetflow::Runtime& rt, C&& codelet) {
  rt.insert(std::forward<C>(codelet));
  rt.insert(std::forward<C>(codelet), hetflow::TaskOptions{}, 1);
};
static_assert(!InsertableFrom<hetflow::Codelet>);
static_assert(InsertableFrom<const hetflow::Codelet&>);

using hetflow::Arch;
using hetflow::Codelet;
using hetflow::Config;
using hetflow::DependencyError;
using hetflow::InvalidArgument;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskContext;
using hetflow::TaskOptions;
using hetflow::W;
using hetflow::test::Gate;
using hetflow::test::Signal;

struct Params {
  double factor;
  int offset;
};

TEST(Codelets, BufferViewsOfVectorAndMatrix) {
  Runtime rt;
  std::vector<double> v{1, 2, 3, 4, 5};
  const std::size_t nx = 3, ny = 4, ld = 5;
  std::vector<double> m(ld * ny, -1.0);  // padding rows hold -1
  for (std::size_t j = 0; j < ny; ++j) {
    for (std::size_t i = 0; i < nx; ++i) m[j * ld + i] = static_cast<double>(10 * j + i);
  }
  auto hv = rt.register_vector(v.data(), v.size(), "v");
  auto hm = rt.register_matrix(m.data(), nx, ny, ld, "m");

  Codelet axpy{.name = "add vector sum to matrix", .cpu = [](TaskContext& ctx) {
                 if (ctx.buffer_count() != 2) throw std::runtime_error("expected two buffers");
                 hetflow::DataView vector = ctx.buffer(0);
                 hetflow::DataView matrix = ctx.buffer(1);
                 if (vector.nx() != 5 || vector.elements() != 5) throw std::runtime_error("vector shape");
                 if (matrix.nx() != 3 || matrix.ny() != 4 || matrix.ld() != 5) throw std::runtime_error("matrix shape");
                 const double* x = vector.as<double>();
                 const double sum = std::accumulate(x, x + vector.nx(), 0.0);
                 double* a = matrix.as<double>();
                 for (std::size_t j = 0; j < matrix.ny(); ++j) {
                   for (std::size_t i = 0; i < matrix.nx(); ++i) a[j * matrix.ld() + i] += sum;
                 }
               }};
  rt.insert(axpy, {.data = {R(hv), RW(hm)}}).get();
  rt.unregister(hm);
  for (std::size_t j = 0; j < ny; ++j) {
    for (std::size_t i = 0; i < ld; ++i) {
      const double expected = i < nx ? static_cast<double>(10 * j + i) + 15.0 : -1.0;
      EXPECT_EQ(m[j * ld + i], expected) << "at (" << i << ", " << j << ")";
    }
  }
}

TEST(Codelets, SubmittedCallableTakingTheContext) {
  Runtime rt;
  int x = 1;
  int y = 10;
  auto hx = rt.register_variable(x, "x");
  auto hy = rt.register_variable(y, "y");
  auto f = rt.submit(
      TaskOptions{.data = {R(hx), RW(hy)}, .name = "with context"},
      [](TaskContext& ctx, int extra) {
        const int* in = ctx.buffer(0).as<int>();
        int* out = ctx.buffer(1).as<int>();
        *out += *in + extra;
        return std::string(ctx.task_name()) + ":" + std::to_string(ctx.buffer_count());
      },
      5);
  EXPECT_EQ(f.get(), "with context:2");
  EXPECT_EQ(*rt.acquire(hy, hetflow::AccessMode::R).as<int>(), 16);
  // Without arguments, and a plain callable has no codelet.
  auto g = rt.submit([](TaskContext& ctx) { return ctx.codelet() == nullptr && ctx.arch() == Arch::cpu; });
  EXPECT_TRUE(g.get());
}

TEST(Codelets, BufferViewOfBlock) {
  Runtime rt;
  const std::array<std::size_t, 3> dims{2, 3, 4};
  const std::array<std::size_t, 3> strides{1, 2, 6};
  std::vector<int> b(24, 0);
  auto hb = rt.register_block(b.data(), std::span<const std::size_t>(dims), std::span<const std::size_t>(strides));
  Codelet fill{.name = "fill", .cpu = [](TaskContext& ctx) {
                 hetflow::DataView view = ctx.buffer(0);
                 int* p = view.as<int>();
                 for (std::size_t k = 0; k < view.nz(); ++k) {
                   for (std::size_t j = 0; j < view.ny(); ++j) {
                     for (std::size_t i = 0; i < view.nx(); ++i) {
                       p[k * view.layout.strides[2] + j * view.layout.strides[1] + i] =
                           static_cast<int>(100 * k + 10 * j + i);
                     }
                   }
                 }
               }};
  rt.insert(fill, {.data = {W(hb)}}).get();
  rt.unregister(hb);
  EXPECT_EQ(b[0], 0);
  EXPECT_EQ(b[1], 1);
  EXPECT_EQ(b[2], 10);
  EXPECT_EQ(b[23], 321);
}

TEST(Codelets, BufferIndexOutOfRangeFailsTheTask) {
  Runtime rt;
  int x = 0;
  auto h = rt.register_variable(x);
  Codelet reach{.name = "reaches too far", .cpu = [](TaskContext& ctx) { (void)ctx.buffer(1); }};
  try {
    rt.insert(reach, {.data = {R(h)}}).get();
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("reaches too far"), std::string::npos) << e.what();
  }
}

TEST(Codelets, ArgumentOfTheRightType) {
  Runtime rt;
  double x = 2.0;
  auto h = rt.register_variable(x);
  Codelet scale{.name = "scale", .cpu = [](TaskContext& ctx) {
                  const Params& p = ctx.arg<Params>();
                  double* value = ctx.buffer(0).as<double>();
                  *value = *value * p.factor + p.offset;
                }};
  rt.insert(scale, {.data = {RW(h)}}, Params{3.0, 1});
  rt.insert(scale, {.data = {RW(h)}}, Params{0.5, -1}).get();
  EXPECT_EQ(x, 2.5);
}

TEST(Codelets, ArgumentOfTheWrongTypeThrows) {
  Runtime rt;
  Codelet wrong{.name = "wants a double", .cpu = [](TaskContext& ctx) { (void)ctx.arg<double>(); }};
  try {
    rt.insert(wrong, {}, 42).get();
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("wants a double"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("carries a int, not a double"), std::string::npos) << e.what();
  }
  try {
    rt.insert(wrong).get();
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("no argument"), std::string::npos) << e.what();
  }
}

TEST(Codelets, ArgumentsAreDestroyed) {
  auto tracker = std::make_shared<int>(7);
  Runtime rt;
  std::atomic<int> seen{0};
  Codelet use{.name = "use", .cpu = [&seen](TaskContext& ctx) { seen += *ctx.arg<std::shared_ptr<int>>(); }};
  for (int i = 0; i < 10; ++i) (void)rt.insert(use, {}, tracker);
  // Arguments of tasks that never run are destroyed as well.
  auto failing = rt.submit([] { throw std::runtime_error("no"); });
  for (int i = 0; i < 10; ++i) (void)rt.insert(use, {.after = {failing}}, tracker);
  rt.wait_all();
  EXPECT_EQ(seen.load(), 70);
  EXPECT_EQ(tracker.use_count(), 1);
}

TEST(Codelets, LargeArgument) {
  Runtime rt;
  std::array<int, 64> big{};
  std::iota(big.begin(), big.end(), 1);
  std::atomic<int> sum{0};
  Codelet add{.name = "sum", .cpu = [&sum](TaskContext& ctx) {
                const auto& values = ctx.arg<std::array<int, 64>>();
                sum = std::accumulate(values.begin(), values.end(), 0);
              }};
  rt.insert(add, {}, big).get();
  EXPECT_EQ(sum.load(), 64 * 65 / 2);
}

TEST(Codelets, ContextDescribesTheWorker) {
  Runtime rt(Config{.ncpus = 2});
  std::mutex mutex;
  std::vector<std::string> problems;
  Codelet probe;
  probe.name = "probe";
  probe.cpu = [&](TaskContext& ctx) {
    std::lock_guard guard(mutex);
    if (ctx.arch() != Arch::cpu) problems.push_back("arch");
    if (ctx.worker_id() >= 2) problems.push_back("worker id");
    if (ctx.memory_node() != 0) problems.push_back("memory node");
    if (ctx.codelet() == nullptr || ctx.codelet()->name != "probe") problems.push_back("codelet");
    if (ctx.driver_state() != nullptr) problems.push_back("driver state");
    if (std::string(ctx.task_name()) != "probe" && std::string(ctx.task_name()) != "renamed") {
      problems.push_back(std::string("name ") + ctx.task_name());
    }
  };
  for (int i = 0; i < 20; ++i) (void)rt.insert(probe, {.name = i % 2 ? "renamed" : ""});
  rt.wait_all();
  EXPECT_TRUE(problems.empty()) << problems.front();
}

TEST(Codelets, TaskNamesAppearInErrors) {
  Runtime rt;
  Codelet broken{.name = "broken kernel", .cpu = [](TaskContext&) { throw std::runtime_error("kernel fault"); }};
  Codelet fine{.name = "fine", .cpu = [](TaskContext&) {}};
  auto by_codelet = rt.insert(broken);
  auto by_option = rt.insert(broken, {.name = "step 3"});
  EXPECT_STREQ(by_codelet.name(), "broken kernel");
  EXPECT_STREQ(by_option.name(), "step 3");
  auto after_codelet = rt.insert(fine, {.after = {by_codelet}});
  auto after_option = rt.insert(fine, {.after = {by_option}});
  try {
    after_codelet.get();
    ADD_FAILURE() << "expected DependencyError";
  } catch (const DependencyError& e) {
    EXPECT_EQ(e.root_task(), "broken kernel");
    EXPECT_NE(std::string(e.what()).find("broken kernel"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("kernel fault"), std::string::npos);
  }
  try {
    after_option.get();
    ADD_FAILURE() << "expected DependencyError";
  } catch (const DependencyError& e) {
    EXPECT_EQ(e.root_task(), "step 3");
  }
  auto unnamed = rt.submit([] {});
  EXPECT_STREQ(unnamed.name(), "task");
}

TEST(Codelets, CodeletsWithoutARunnableImplementationAreRejected) {
  Runtime rt;
  Codelet none{.name = "empty codelet"};
  try {
    (void)rt.insert(none);
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("empty codelet"), std::string::npos) << e.what();
  }
  Codelet gpu_only{.name = "gpu only", .cuda = [](TaskContext&) {}};
  EXPECT_EQ(gpu_only.archs(), hetflow::ArchMask(Arch::cuda));
  try {
    (void)rt.insert(gpu_only);
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("gpu only"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
  Codelet cpu{.name = "cpu", .cpu = [](TaskContext&) {}};
  // Where it was asked to run, and where it can, rather than "it runs on none".
  hetflow::test::expect_invalid_argument([&] { (void)rt.insert(cpu, {.where = Arch::cuda}); },
                                         {"may run on cuda (TaskOptions::where)", "implementations for cpu only"});
  hetflow::test::expect_invalid_argument([&] { (void)rt.submit(TaskOptions{.where = Arch::opencl}, [] {}); },
                                         {"may run on opencl", "a callable runs on cpu, process only"});
  EXPECT_NO_THROW(rt.insert(cpu, {.where = Arch::cpu | Arch::cuda}).get());
}

TEST(Codelets, PrioritiesRunHighestFirst) {
  Runtime rt(Config{.ncpus = 1, .scheduler = "prio"});
  Gate gate;
  Signal started;
  auto blocker = rt.submit([&] {
    started.raise();
    gate.wait();
  });
  started.wait();  // the only worker is busy: everything below queues up
  std::vector<int> priorities(40);
  for (int i = 0; i < 40; ++i) priorities[i] = (i * 17) % 13 - 6;  // repeats, negatives
  std::mt19937 rng(7);
  std::shuffle(priorities.begin(), priorities.end(), rng);
  std::vector<std::pair<int, int>> ran;  // (priority, submission index), appended by the one worker
  Codelet record{.name = "record", .cpu = [&ran](TaskContext& ctx) { ran.push_back(ctx.arg<std::pair<int, int>>()); }};
  for (int i = 0; i < 40; ++i)
    (void)rt.insert(record, {.priority = priorities[i]}, std::pair<int, int>(priorities[i], i));
  gate.open();
  blocker.get();
  rt.wait_all();
  ASSERT_EQ(ran.size(), 40u);
  for (std::size_t i = 1; i < ran.size(); ++i) {
    const auto& [p0, s0] = ran[i - 1];
    const auto& [p1, s1] = ran[i];
    EXPECT_TRUE(p0 > p1 || (p0 == p1 && s0 < s1))
        << "ran (" << p0 << ", #" << s0 << ") before (" << p1 << ", #" << s1 << ")";
  }
}

TEST(Codelets, ExplicitDependenciesBetweenCodelets) {
  Runtime rt;
  std::vector<int> order;
  Codelet append{.name = "append", .cpu = [&order](TaskContext& ctx) { order.push_back(ctx.arg<int>()); }};
  hetflow::Future<void> previous = rt.insert(append, {}, 0);
  for (int i = 1; i < 100; ++i) previous = rt.insert(append, {.after = {previous}}, i);
  previous.get();
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

// A performance model hook that throws does not fail the task whose run it was told of: the
// result stands, and the failure is said once on stderr.
TEST(Codelets, AThrowingModelHookLeavesTheTaskDone) {
  struct Throwing final : hetflow::PerfModelHook {
    std::atomic<int> calls{0};
    void record(Arch, std::size_t, double) override {
      ++calls;
      throw std::runtime_error("disk full");
    }
  };
  auto hook = std::make_shared<Throwing>();
  Codelet codelet{.name = "modelled", .cpu = [](TaskContext&) {}};
  codelet.model = hook;
  Runtime rt(Config{.ncpus = 2});
  testing::internal::CaptureStderr();
  std::vector<hetflow::Future<void>> runs;
  for (int i = 0; i < 5; ++i) runs.push_back(rt.insert(codelet, {}));
  for (auto& run : runs) EXPECT_NO_THROW(run.get());
  rt.wait_all();
  const std::string said = testing::internal::GetCapturedStderr();
  EXPECT_EQ(hook->calls.load(), 5);
  EXPECT_NE(said.find("the performance model of 'modelled' could not record a run (disk full)"), std::string::npos)
      << said;
  EXPECT_EQ(said.find("could not record", said.find("could not record") + 1), std::string::npos) << said;
}

}  // namespace
