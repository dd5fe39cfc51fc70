// What a task's performance model learns leaves out what is not the task's own: the one-off
// preparation a driver reports for it (building a program, creating a library handle), which
// the next run will not pay, and the tasks its worker ran while it waited for a future.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>

#include "hetflow/ext/driver.hpp"
#include "hetflow/hetflow.hpp"
#include "hetflow/perfmodel.hpp"

namespace {

using hetflow::Arch;
using hetflow::Codelet;
using hetflow::Config;
using hetflow::PerfModel;
using hetflow::Runtime;
using hetflow::TaskContext;

// One opencl-architecture worker computing in host RAM; its implementations tell it how long
// they spent preparing, as a device library would.
class SetupReportingDriver final : public hetflow::ext::Driver {
 public:
  [[nodiscard]] std::string_view name() const override { return "setup-reporting"; }
  [[nodiscard]] Arch arch() const override { return Arch::opencl; }
  [[nodiscard]] unsigned worker_count() const override { return 1; }
  [[nodiscard]] double take_setup_seconds(unsigned /*index*/) override {
    ++takes;
    return pending_setup.exchange(0.0);
  }

  std::atomic<double> pending_setup{0.0};
  std::atomic<int> takes{0};
};

constexpr auto kSetup = std::chrono::milliseconds(100);

// Sleeps as long as a program build might, and reports it as setup.
void prepare(SetupReportingDriver& driver) {
  const auto started = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(kSetup);
  driver.pending_setup = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

// A codelet whose task with argument `true` prepares first, then fails if `fail_after_setup`.
Codelet probe(SetupReportingDriver& driver, const std::shared_ptr<PerfModel>& model, bool fail_after_setup) {
  return Codelet{.name = "setup probe",
                 .opencl =
                     [&driver, fail_after_setup](TaskContext& context) {
                       if (!context.arg<bool>()) return;
                       prepare(driver);
                       if (fail_after_setup) throw std::runtime_error("the program does not build");
                     },
                 .model = model};
}

TEST(DriverSetup, IsLeftOutOfWhatTheModelLearns) {
  auto driver = std::make_shared<SetupReportingDriver>();
  auto model = std::make_shared<PerfModel>("setup-probe");
  const Codelet codelet = probe(*driver, model, false);
  {
    Runtime rt(Config{.ncpus = 1, .drivers = {driver}});
    rt.insert(codelet, {.where = Arch::opencl}, true).get();
    rt.insert(codelet, {.where = Arch::opencl}, false).get();
  }
  const auto entries = model->entries();
  ASSERT_EQ(entries.size(), 1U);
  EXPECT_EQ(entries[0].arch, Arch::opencl);
  EXPECT_EQ(entries[0].count, 2U);
  // Learned with the setup, the first run would be the longest by the whole sleep.
  EXPECT_LT(entries[0].max, std::chrono::duration<double>(kSetup).count());
  EXPECT_EQ(driver->takes.load(), 2);
}

TEST(DriverSetup, OfAFailedTaskIsNotChargedToTheNext) {
  auto driver = std::make_shared<SetupReportingDriver>();
  auto model = std::make_shared<PerfModel>("setup-failure-probe");
  const Codelet codelet = probe(*driver, model, true);
  {
    Runtime rt(Config{.ncpus = 1, .drivers = {driver}});
    EXPECT_THROW(rt.insert(codelet, {.where = Arch::opencl}, true).get(), std::runtime_error);
    rt.insert(codelet, {.where = Arch::opencl}, false).get();
  }
  EXPECT_EQ(driver->takes.load(), 2) << "the failed task's setup is taken when it fails";
  EXPECT_EQ(driver->pending_setup.load(), 0.0);
  const auto entries = model->entries();
  ASSERT_EQ(entries.size(), 1U);
  EXPECT_EQ(entries[0].count, 1U) << "a failed run is not a measurement";
  EXPECT_GT(entries[0].max, 0.0) << "the run after the failure is not reduced by its setup";
}

// A task that submits `inner` and waits for it; with one worker, the worker runs `inner` while
// it waits. With `prepare_first`, it reports a setup before submitting.
Codelet waiting_for(Runtime*& rt, const Codelet& inner, const std::shared_ptr<PerfModel>& model,
                    SetupReportingDriver* prepare_first) {
  auto body = [&rt, inner, prepare_first](TaskContext&) {
    if (prepare_first != nullptr) prepare(*prepare_first);
    rt->insert(inner, {.where = prepare_first != nullptr ? Arch::opencl : Arch::cpu}).get();
  };
  Codelet codelet{.name = "waiting probe", .model = model};
  (prepare_first != nullptr ? codelet.opencl : codelet.cpu) = body;
  return codelet;
}

TEST(NestedTasks, AreNotLearnedAsTheWaitingTasksTime) {
  auto outer_model = std::make_shared<PerfModel>("nested-outer-probe");
  auto inner_model = std::make_shared<PerfModel>("nested-inner-probe");
  const Codelet inner{
      .name = "sleeper", .cpu = [](TaskContext&) { std::this_thread::sleep_for(kSetup); }, .model = inner_model};
  Runtime* rt = nullptr;
  const Codelet outer = waiting_for(rt, inner, outer_model, nullptr);
  {
    Runtime runtime(Config{.ncpus = 1});
    rt = &runtime;
    runtime.insert(outer, {}).get();
  }
  const auto inner_entries = inner_model->entries();
  ASSERT_EQ(inner_entries.size(), 1U);
  EXPECT_GE(inner_entries[0].min, std::chrono::duration<double>(kSetup).count() * 0.9);
  const auto outer_entries = outer_model->entries();
  ASSERT_EQ(outer_entries.size(), 1U);
  EXPECT_LT(outer_entries[0].max, inner_entries[0].min / 2) << "the waiting task learned the sleeper's time";
}

TEST(DriverSetup, BeforeAWaitIsTheWaitingTasksNotTheNestedOnes) {
  auto driver = std::make_shared<SetupReportingDriver>();
  auto outer_model = std::make_shared<PerfModel>("nested-setup-outer-probe");
  auto inner_model = std::make_shared<PerfModel>("nested-setup-inner-probe");
  const Codelet inner{.name = "quick", .opencl = [](TaskContext&) {}, .model = inner_model};
  Runtime* rt = nullptr;
  const Codelet outer = waiting_for(rt, inner, outer_model, driver.get());
  {
    Runtime runtime(Config{.ncpus = 1, .drivers = {driver}});
    rt = &runtime;
    runtime.insert(outer, {}).get();
  }
  const auto outer_entries = outer_model->entries();
  ASSERT_EQ(outer_entries.size(), 1U);
  EXPECT_LT(outer_entries[0].max, std::chrono::duration<double>(kSetup).count())
      << "the waiting task learned its own setup";
  const auto inner_entries = inner_model->entries();
  ASSERT_EQ(inner_entries.size(), 1U);
  EXPECT_EQ(inner_entries[0].count, 1U);
  EXPECT_EQ(driver->pending_setup.load(), 0.0);
}

}  // namespace

namespace {

// A driver's workers keep state for one runtime: one driver object serves one live runtime, once.
TEST(DriverSetup, ADriverServesOneLiveRuntimeOnce) {
  auto driver = std::make_shared<SetupReportingDriver>();
  try {
    Runtime twice(Config{.ncpus = 1, .drivers = {driver, driver}});
    ADD_FAILURE() << "a driver listed twice was accepted";
  } catch (const hetflow::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("listed twice"), std::string::npos) << error.what();
  }
  {
    Runtime first(Config{.ncpus = 1, .drivers = {driver}});
    try {
      Runtime second(Config{.ncpus = 1, .drivers = {driver}});
      ADD_FAILURE() << "a driver serving a live runtime was accepted by another";
    } catch (const hetflow::InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find("already serves another Runtime"), std::string::npos) << error.what();
    }
    EXPECT_EQ(first.submit([] { return 1; }).get(), 1);  // the first one is untouched
  }
  Runtime after(Config{.ncpus = 1, .drivers = {driver}});  // free again once the first is gone
  EXPECT_EQ(after.worker_count(), 2U);
}

}  // namespace
