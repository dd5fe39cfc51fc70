// Performance models: statistics, the robust estimate, the regression, storage (round trip,
// atomic replacement, merging between processes, damaged files) and thread safety.
#include "hetflow/perfmodel.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/codelet.hpp"
#include "hetflow/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using hetflow::Arch;
using hetflow::PerfModel;
using hetflow::PerfModelRegistry;

namespace {

using hetflow::test::ScopedEnv;

/// A fresh HETFLOW_HOME for one test, removed afterwards; the registry forgets its models.
class PerfModelStorage : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "hetflow-perfmodel-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    home_ = pattern;
    env_.emplace("HETFLOW_HOME", home_.string());
    calibrate_.emplace("HETFLOW_CALIBRATE", std::nullopt);
    PerfModelRegistry::instance().reset();
  }
  void TearDown() override {
    PerfModelRegistry::instance().reset();
    env_.reset();
    std::error_code ec;
    fs::remove_all(home_, ec);
  }
  [[nodiscard]] fs::path directory() const { return home_ / "perfmodels"; }
  [[nodiscard]] fs::path model_file(const std::string& symbol) const { return directory() / (symbol + ".model"); }

  fs::path home_;
  std::optional<ScopedEnv> env_;
  std::optional<ScopedEnv> calibrate_;
};

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

const hetflow::PerfEntry* find_entry(const std::vector<hetflow::PerfEntry>& entries, Arch arch, std::size_t size) {
  for (const auto& e : entries) {
    if (e.arch == arch && e.size == size) return &e;
  }
  return nullptr;
}

double power_law(double a, double b, double c, double n) { return a * std::pow(n, b) + c; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Statistics

TEST(PerfModelStats, CountMeanStddevMinMax) {
  PerfModel model("stats");
  const std::vector<double> samples = {1.0, 2.0, 4.0, 4.0, 5.0, 7.0, 9.0};
  for (double s : samples) model.record(Arch::cpu, 64, s);
  model.record(Arch::cuda, 64, 3.0);

  double mean = 0;
  for (double s : samples) mean += s;
  mean /= static_cast<double>(samples.size());
  double ss = 0;
  for (double s : samples) ss += (s - mean) * (s - mean);
  const double stddev = std::sqrt(ss / static_cast<double>(samples.size() - 1));

  const auto entries = model.entries();
  ASSERT_EQ(entries.size(), 2u);
  const auto* cpu = find_entry(entries, Arch::cpu, 64);
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->count, samples.size());
  EXPECT_DOUBLE_EQ(cpu->mean, mean);
  EXPECT_NEAR(cpu->stddev, stddev, 1e-12);
  EXPECT_DOUBLE_EQ(cpu->min, 1.0);
  EXPECT_DOUBLE_EQ(cpu->max, 9.0);
  EXPECT_DOUBLE_EQ(cpu->robust, mean);  // no outliers: the robust estimate is the mean
  const auto* cuda = find_entry(entries, Arch::cuda, 64);
  ASSERT_NE(cuda, nullptr);
  EXPECT_EQ(cuda->count, 1u);
  EXPECT_DOUBLE_EQ(cuda->stddev, 0.0);
  EXPECT_EQ(entries.front().arch, Arch::cpu);  // ordered by arch, then size
}

TEST(PerfModelStats, WelfordIsStableForLargeOffsets) {
  PerfModel model("welford");
  for (int i = 0; i < 1000; ++i) model.record(Arch::cpu, 1, 1e6 + (i % 2 == 0 ? 1e-3 : -1e-3));
  const auto entries = model.entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_NEAR(entries[0].mean, 1e6, 1e-6);
  EXPECT_NEAR(entries[0].stddev, 1e-3, 1e-6);
}

TEST(PerfModelStats, IgnoresNegativeAndNonFiniteTimes) {
  PerfModel model("bad_times");
  model.record(Arch::cpu, 8, -1.0);
  model.record(Arch::cpu, 8, std::nan(""));
  model.record(Arch::cpu, 8, INFINITY);
  EXPECT_TRUE(model.entries().empty());
  model.record(Arch::cpu, 8, 0.0);
  EXPECT_EQ(model.entries().size(), 1u);
}

TEST(PerfModelStats, OneOutlierDoesNotMoveTheEstimate) {
  PerfModel model("outlier");
  std::mt19937 rng(7);
  std::normal_distribution<double> jitter(0.0, 0.5e-3);
  for (int i = 0; i < 40; ++i) model.record(Arch::cpu, 4096, 70e-3 + jitter(rng));
  model.record(Arch::cpu, 4096, 190e-6);  // e.g. a run that hit a cache of results
  for (int i = 0; i < 5; ++i) model.record(Arch::cpu, 4096, 70e-3 + jitter(rng));

  const auto entries = model.entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_NEAR(entries[0].robust, 70e-3, 0.7e-3);  // within 1%
  EXPECT_LT(entries[0].min, 1e-3);                // the outlier is in the statistics...
  ASSERT_TRUE(model.expected(Arch::cpu, 4096));
  EXPECT_NEAR(*model.expected(Arch::cpu, 4096), 70e-3, 0.7e-3);  // ...but not in the estimate

  // Just calibrated, with the outlier among only ten samples.
  PerfModel fresh("outlier_early");
  for (int i = 0; i < 9; ++i) fresh.record(Arch::cpu, 1, 70e-3 + jitter(rng));
  fresh.record(Arch::cpu, 1, 190e-6);
  ASSERT_TRUE(fresh.calibrated(Arch::cpu, 1));
  EXPECT_NEAR(*fresh.expected(Arch::cpu, 1), 70e-3, 0.7e-3);
}

TEST(PerfModelStats, IdenticalSamplesGiveThatValue) {
  PerfModel model("same");
  for (int i = 0; i < 12; ++i) model.record(Arch::cpu, 1, 0.5);
  model.record(Arch::cpu, 1, 100.0);
  EXPECT_DOUBLE_EQ(*model.expected(Arch::cpu, 1), 0.5);  // MAD 0: the median
}

// ---------------------------------------------------------------------------------------------
// Calibration and expected()

TEST(PerfModelExpected, CalibrationThreshold) {
  ScopedEnv calibrate("HETFLOW_CALIBRATE", std::nullopt);
  PerfModel model("calib");
  EXPECT_EQ(model.calibration_samples(), 10u);
  EXPECT_FALSE(model.expected(Arch::cpu, 100));
  for (int i = 0; i < 9; ++i) model.record(Arch::cpu, 100, 1e-3);
  EXPECT_FALSE(model.calibrated(Arch::cpu, 100));
  EXPECT_FALSE(model.expected(Arch::cpu, 100));
  model.record(Arch::cpu, 100, 1e-3);
  EXPECT_TRUE(model.calibrated(Arch::cpu, 100));
  EXPECT_DOUBLE_EQ(*model.expected(Arch::cpu, 100), 1e-3);
  EXPECT_FALSE(model.calibrated(Arch::cuda, 100));
  EXPECT_FALSE(model.expected(Arch::cuda, 100));

  model.set_calibration_samples(20);
  EXPECT_FALSE(model.calibrated(Arch::cpu, 100));
  EXPECT_THROW(model.set_calibration_samples(0), hetflow::InvalidArgument);
}

TEST(PerfModelExpected, CalibrationFromEnvironment) {
  {
    ScopedEnv calibrate("HETFLOW_CALIBRATE", "3");
    PerfModel model("env_calib");
    EXPECT_EQ(model.calibration_samples(), 3u);
    for (int i = 0; i < 3; ++i) model.record(Arch::cpu, 1, 1.0);
    EXPECT_TRUE(model.calibrated(Arch::cpu, 1));
  }
  for (const char* bad : {"0", "ten", "-4", "5x"}) {
    ScopedEnv calibrate("HETFLOW_CALIBRATE", bad);
    EXPECT_THROW(PerfModel("env_calib"), hetflow::InvalidArgument) << bad;
  }
}

TEST(PerfModelExpected, FallsBackToTheRegression) {
  PerfModel model("fallback");
  model.set_calibration_samples(2);
  const double a = 1e-8, b = 1.0, c = 1e-4;
  for (std::size_t n : {1000u, 10000u}) {
    for (int i = 0; i < 2; ++i) model.record(Arch::cpu, n, power_law(a, b, c, static_cast<double>(n)));
  }
  EXPECT_FALSE(model.fit(Arch::cpu).valid);  // two sizes are not enough
  EXPECT_FALSE(model.expected(Arch::cpu, 5000));
  model.record(Arch::cpu, 100000, power_law(a, b, c, 1e5));
  EXPECT_FALSE(model.expected(Arch::cpu, 5000));  // the third size is not calibrated yet
  model.record(Arch::cpu, 100000, power_law(a, b, c, 1e5));
  ASSERT_TRUE(model.expected(Arch::cpu, 5000));
  EXPECT_NEAR(*model.expected(Arch::cpu, 5000), power_law(a, b, c, 5000), 1e-3 * power_law(a, b, c, 5000));
  // Another architecture has its own (absent) regression.
  EXPECT_FALSE(model.expected(Arch::cuda, 5000));
}

// The fit over many sizes was made again after every record (1.5 ms per task with a thousand
// sizes); it is made again once the records on calibrated sizes outnumber an eighth of its sizes,
// or when a size becomes calibrated, so what it gives is never older than that.
TEST(PerfModelExpected, TheFitFollowsTheRecordsOnceAnEighthOfItsSizesChanged) {
  PerfModel model("refit");
  model.set_calibration_samples(1);
  constexpr std::size_t kSizes = 64;
  for (std::size_t i = 1; i <= kSizes; ++i) model.record(Arch::cpu, i * 1000, 1e-6 * static_cast<double>(i));
  const std::size_t unseen = 32500;
  const double before = *model.expected(Arch::cpu, unseen);
  EXPECT_NEAR(before, 32.5e-6, 1e-3 * 32.5e-6);
  // Every size becomes ten times slower; the fit stays for the first eighth of its sizes' records.
  for (std::size_t i = 1; i <= kSizes; ++i) {
    for (int k = 0; k < 4; ++k) model.record(Arch::cpu, i * 1000, 1e-5 * static_cast<double>(i));
    if (4 * i <= kSizes / 8) {
      EXPECT_EQ(*model.expected(Arch::cpu, unseen), before) << i;
    }
  }
  for (std::size_t k = 0; k <= kSizes / 8; ++k) model.record(Arch::cpu, 1000, 1e-5);
  EXPECT_NEAR(*model.expected(Arch::cpu, unseen), 32.5e-5, 1e-3 * 32.5e-5);
  // A record on a size not calibrated yet leaves the fit; a size becoming calibrated remakes it.
  model.set_calibration_samples(2);
  const double settled = *model.expected(Arch::cpu, unseen);
  model.record(Arch::cpu, 200000, 1.0);
  EXPECT_EQ(*model.expected(Arch::cpu, unseen), settled);
  model.record(Arch::cpu, 200000, 1.0);
  EXPECT_NE(*model.expected(Arch::cpu, unseen), settled);
}

// ---------------------------------------------------------------------------------------------
// Regression

TEST(PerfModelFit, RecoversPowerLawWithOffset) {
  const double a = 2e-9, b = 1.5, c = 5e-5;
  std::vector<double> sizes, times;
  for (double n = 1e3; n <= 1.1e6; n *= 2) {
    sizes.push_back(n);
    times.push_back(power_law(a, b, c, n));
  }
  const auto fit = hetflow::fit_power_law(sizes, times);
  ASSERT_TRUE(fit.valid);
  EXPECT_EQ(fit.points, sizes.size());
  EXPECT_NEAR(fit.b, b, 1e-3);
  EXPECT_NEAR(fit.a, a, 0.01 * a);
  EXPECT_NEAR(fit.c, c, 0.01 * c);
}

TEST(PerfModelFit, RecoversParametersFromNoisyMeasurements) {
  const double a = 3e-7, b = 0.8, c = 2e-3;
  std::mt19937 rng(42);
  std::normal_distribution<double> noise(1.0, 0.01);
  PerfModel model("noisy");
  for (double n = 256; n <= 4e6; n *= 4) {
    for (int i = 0; i < 16; ++i)
      model.record(Arch::cuda, static_cast<std::size_t>(n), power_law(a, b, c, n) * noise(rng));
  }
  const auto fit = model.fit(Arch::cuda);
  ASSERT_TRUE(fit.valid);
  EXPECT_NEAR(fit.b, b, 0.03);
  EXPECT_NEAR(fit.c, c, 0.1 * c);
  for (double n : {1000.0, 50000.0, 2e6}) {
    const double predicted = *fit(static_cast<std::size_t>(n));
    EXPECT_NEAR(predicted, power_law(a, b, c, n), 0.02 * power_law(a, b, c, n)) << n;
  }
  EXPECT_FALSE(model.fit(Arch::cpu).valid);
}

TEST(PerfModelFit, ConstantData) {
  std::vector<double> sizes = {10, 100, 1000, 10000};
  std::vector<double> times(sizes.size(), 4e-3);
  const auto fit = hetflow::fit_power_law(sizes, times);
  ASSERT_TRUE(fit.valid);
  EXPECT_EQ(fit.b, 0.0);  // exactly: a plot's label read n^-1.34e-16
  EXPECT_DOUBLE_EQ(fit.c, 0.0);
  for (std::size_t n : {1u, 10u, 5000u, 1000000u}) EXPECT_NEAR(*fit(n), 4e-3, 1e-12);
}

TEST(PerfModelFit, LinearData) {
  std::vector<double> sizes = {100, 1000, 10000, 100000};
  std::vector<double> times;
  for (double n : sizes) times.push_back(3e-9 * n);
  const auto fit = hetflow::fit_power_law(sizes, times);
  ASSERT_TRUE(fit.valid);
  EXPECT_NEAR(fit.b, 1.0, 1e-9);
  EXPECT_NEAR(fit.a, 3e-9, 1e-15);
  EXPECT_NEAR(fit.c, 0.0, 1e-12);
  EXPECT_NEAR(*fit(50000), 1.5e-4, 1e-12);
}

TEST(PerfModelFit, SpansOfDifferentLengthsAreRefused) {
  const std::vector<double> sizes = {10, 100, 1000, 10000};
  const std::vector<double> times = {1e-3, 2e-3};
  EXPECT_THROW((void)hetflow::fit_power_law(sizes, times), hetflow::InvalidArgument);
}

TEST(PerfModelFit, NeedsThreeDistinctPositivePoints) {
  std::vector<double> sizes = {0, 10, 100};
  std::vector<double> times = {1, 2, 3};
  auto fit = hetflow::fit_power_law(sizes, times);
  EXPECT_FALSE(fit.valid);
  EXPECT_EQ(fit.points, 2u);  // size 0 cannot be placed on a log scale
  EXPECT_FALSE(fit(10));
  std::vector<double> same = {10, 10, 10};
  EXPECT_FALSE(hetflow::fit_power_law(same, times).valid);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

TEST(PerfModelConcurrency, RecordFromManyThreads) {
  auto model = std::make_shared<PerfModel>("threads");
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::atomic<bool> reading{true};
  std::thread reader([&] {
    while (reading.load()) {
      (void)model->expected(Arch::cpu, 3);
      (void)model->entries();
      (void)model->fit(Arch::cpu);
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&model, t] {
      for (int i = 0; i < kPerThread; ++i) {
        model->record(Arch::cpu, static_cast<std::size_t>(i % 4), 1.0 + t);  // thread t records 1 + t
      }
    });
  }
  for (auto& thread : threads) thread.join();
  reading = false;
  reader.join();

  std::uint64_t total = 0;
  double weighted = 0;
  for (const auto& e : model->entries()) {
    total += e.count;
    weighted += e.mean * static_cast<double>(e.count);
  }
  EXPECT_EQ(total, static_cast<std::uint64_t>(kThreads) * kPerThread);
  EXPECT_NEAR(weighted / static_cast<double>(total), 1.0 + (kThreads - 1) / 2.0, 1e-9);
}

TEST(PerfModelConcurrency, UsableAsACodeletHook) {
  hetflow::Codelet codelet;
  auto model = std::make_shared<PerfModel>("hook");
  codelet.model = model;
  codelet.model->record(Arch::cpu, 10, 1e-3);
  EXPECT_EQ(model->entries().size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Symbols

TEST(PerfModelSymbols, Validation) {
  for (const char* good : {"gemm", "scale-model", "f64.gemm_v2", "ns::kernel", "a+b@cpu"}) {
    EXPECT_NO_THROW(hetflow::validate_perfmodel_symbol(good)) << good;
  }
  for (std::string bad :
       {std::string(), std::string("a/b"), std::string(".."), std::string(".hidden"), std::string("with space"),
        std::string("tab\t"), std::string(300, 'x'), std::string("new\nline"), std::string("back\\slash")}) {
    EXPECT_THROW(hetflow::validate_perfmodel_symbol(bad), hetflow::InvalidArgument) << bad;
    EXPECT_THROW(PerfModel{bad}, hetflow::InvalidArgument);
  }
  try {
    hetflow::validate_perfmodel_symbol("a/b");
    FAIL();
  } catch (const hetflow::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'/'"), std::string::npos) << e.what();
  }
}

TEST(PerfModelSymbols, ArchNames) {
  EXPECT_EQ(hetflow::arch_from_name("cuda"), Arch::cuda);
  EXPECT_EQ(hetflow::arch_from_name("process"), Arch::process);
  EXPECT_FALSE(hetflow::arch_from_name("gpu"));
}

// ---------------------------------------------------------------------------------------------
// Storage and registry

TEST_F(PerfModelStorage, DirectoryFollowsHetflowHome) {
  EXPECT_EQ(PerfModelRegistry::instance().directory(), directory());
  ScopedEnv unset("HETFLOW_HOME", std::nullopt);
  ScopedEnv user_home("HOME", "/somewhere");
  EXPECT_EQ(PerfModelRegistry::instance().directory(), fs::path("/somewhere/.hetflow/perfmodels"));
  // Quoted, a "~" reaches the program unexpanded: it still means the user's home.
  ScopedEnv tilde("HETFLOW_HOME", "~/models");
  EXPECT_EQ(PerfModelRegistry::instance().directory(), fs::path("/somewhere/models/perfmodels"));
  // "~name/..." is that user's home, as in a shell (it was a folder "~name" in the working
  // directory); a name that is no user's stays as written.
  const passwd* me = ::getpwuid(::getuid());
  ASSERT_NE(me, nullptr);
  ScopedEnv named("HETFLOW_HOME", "~" + std::string(me->pw_name) + "/models");
  EXPECT_EQ(PerfModelRegistry::instance().directory(), fs::path(me->pw_dir) / "models" / "perfmodels");
  ScopedEnv unknown("HETFLOW_HOME", "/x/~nosuchuser-hetflow");
  EXPECT_EQ(PerfModelRegistry::instance().directory(), fs::path("/x/~nosuchuser-hetflow/perfmodels"));
  ScopedEnv unknown_user("HETFLOW_HOME", "~nosuchuser-hetflow/models");
  EXPECT_EQ(PerfModelRegistry::instance().directory(), fs::current_path() / "~nosuchuser-hetflow/models/perfmodels");
}

TEST_F(PerfModelStorage, SaveAndLoadRoundTrip) {
  auto& registry = PerfModelRegistry::instance();
  auto model = registry.get("roundtrip");
  EXPECT_EQ(model, registry.get("roundtrip"));  // one model per symbol
  EXPECT_EQ(model->file(), model_file("roundtrip"));
  EXPECT_FALSE(fs::exists(directory()));  // nothing written before a save
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> spread(0.9, 1.1);
  for (int i = 0; i < 50; ++i) model->record(Arch::cpu, 1024, 1e-3 * spread(rng));
  for (int i = 0; i < 12; ++i) model->record(Arch::cuda, 1 << 20, 2.5e-4 * spread(rng));
  model->record(Arch::process, 0, 0.125);
  const auto before = model->entries();
  registry.save_all();
  EXPECT_FALSE(model->dirty());

  ASSERT_TRUE(fs::exists(model_file("roundtrip")));
  const std::string text = read_text(model_file("roundtrip"));
  EXPECT_EQ(text.substr(0, text.find('\n')), "hetflow-perfmodel 1");
  EXPECT_NE(text.find("\nsymbol roundtrip\n"), std::string::npos);

  registry.reset();
  auto loaded = registry.get("roundtrip");
  EXPECT_NE(loaded, model);
  const auto after = loaded->entries();
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].arch, before[i].arch);
    EXPECT_EQ(after[i].size, before[i].size);
    EXPECT_EQ(after[i].count, before[i].count);
    EXPECT_DOUBLE_EQ(after[i].mean, before[i].mean);  // shortest round-trip text for doubles
    EXPECT_DOUBLE_EQ(after[i].stddev, before[i].stddev);
    EXPECT_DOUBLE_EQ(after[i].min, before[i].min);
    EXPECT_DOUBLE_EQ(after[i].max, before[i].max);
    EXPECT_DOUBLE_EQ(after[i].robust, before[i].robust);
  }
  EXPECT_TRUE(loaded->calibrated(Arch::cpu, 1024));
  EXPECT_FALSE(loaded->dirty());
  EXPECT_EQ(registry.list(), std::vector<std::string>{"roundtrip"});
}

TEST_F(PerfModelStorage, ListShowsDiskAndMemoryButNotOtherFiles) {
  auto& registry = PerfModelRegistry::instance();
  auto saved = registry.get("on_disk");
  saved->record(Arch::cpu, 1, 1.0);
  saved->save();
  registry.reset();
  registry.get("in_memory")->record(Arch::cpu, 1, 1.0);
  (void)registry.get("only_asked_about");  // a mistyped symbol, say: measured nowhere
  write_text(directory() / ".on_disk.model.tmp.1.2", "partial");
  write_text(directory() / "old.model.damaged", "junk");
  write_text(directory() / "notes.txt", "not a model");
  EXPECT_EQ(registry.list(), (std::vector<std::string>{"in_memory", "on_disk"}));
}

TEST_F(PerfModelStorage, NothingToSaveWritesNothing) {
  auto& registry = PerfModelRegistry::instance();
  (void)registry.get("untouched");
  registry.save_all();
  EXPECT_FALSE(fs::exists(model_file("untouched")));
  auto memory_only = std::make_shared<PerfModel>("memory_only");
  memory_only->record(Arch::cpu, 1, 1.0);
  EXPECT_THROW(memory_only->save(), hetflow::Error);
}

TEST_F(PerfModelStorage, SavesMergeWithOtherWriters) {
  // Two models of one file stand for two processes that loaded it at the same time.
  const fs::path file = model_file("shared");
  PerfModel first("shared", file);
  PerfModel second("shared", file);
  first.load();
  second.load();
  for (int i = 0; i < 10; ++i) first.record(Arch::cpu, 8, 1.0);
  for (int i = 0; i < 30; ++i) second.record(Arch::cpu, 8, 3.0);
  second.record(Arch::cuda, 8, 0.5);
  first.save();
  second.save();  // must not lose first's measurements
  for (int i = 0; i < 10; ++i) first.record(Arch::cpu, 8, 1.0);
  first.save();  // nor second's, nor count its own twice

  PerfModel check("shared", file);
  ASSERT_TRUE(check.load());
  const auto entries = check.entries();
  const auto* cpu = find_entry(entries, Arch::cpu, 8);
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->count, 50u);
  EXPECT_DOUBLE_EQ(cpu->mean, (20 * 1.0 + 30 * 3.0) / 50);
  EXPECT_DOUBLE_EQ(cpu->min, 1.0);
  EXPECT_DOUBLE_EQ(cpu->max, 3.0);
  ASSERT_NE(find_entry(entries, Arch::cuda, 8), nullptr);
  // After saving, a model holds the merged content too.
  EXPECT_EQ(find_entry(first.entries(), Arch::cpu, 8)->count, 50u);
}

TEST_F(PerfModelStorage, ConcurrentProcessesNeitherCorruptNorLoseMeasurements) {
  constexpr int kProcesses = 4;
  constexpr int kRounds = 20;
  constexpr int kPerRound = 5;
  const fs::path file = model_file("multiprocess");
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int status = 0;
      try {
        PerfModel model("multiprocess", file);
        model.load();
        for (int round = 0; round < kRounds; ++round) {
          for (int i = 0; i < kPerRound; ++i) model.record(Arch::cpu, static_cast<std::size_t>(p), 1.0 + p);
          model.save();
        }
      } catch (...) {
        status = 1;
      }
      ::_exit(status);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  PerfModel check("multiprocess", file);
  testing::internal::CaptureStderr();
  ASSERT_TRUE(check.load());
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  const auto entries = check.entries();
  ASSERT_EQ(entries.size(), static_cast<std::size_t>(kProcesses));
  for (const auto& e : entries) {
    EXPECT_EQ(e.count, static_cast<std::uint64_t>(kRounds * kPerRound));
    EXPECT_DOUBLE_EQ(e.mean, 1.0 + static_cast<double>(e.size));
  }
  for (const auto& entry : fs::directory_iterator(directory())) {
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(name == "multiprocess.model" || name == ".lock") << "left behind: " << name;
  }
}

// Waits for a child up to `patience`; false (and the child killed) if it has not ended by then.
bool child_ended_well(pid_t pid, std::chrono::seconds patience) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// A forked child inherited the measurements its parent had not saved, and saved them as its own
// when it saved: the parent saved them too, and the file counted them twice.
TEST_F(PerfModelStorage, AForkedChildSavesItsOwnMeasurementsOnly) {
  auto model = PerfModelRegistry::instance().get("forked");
  for (int i = 0; i < 100; ++i) model->record(Arch::cpu, 8, 1.0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto inherited = PerfModelRegistry::instance().get("forked");
    for (int i = 0; i < 5; ++i) inherited->record(Arch::cpu, 8, 2.0);
    PerfModelRegistry::instance().save_all();
    ::_exit(0);
  }
  ASSERT_TRUE(child_ended_well(pid, std::chrono::seconds(30)));
  PerfModelRegistry::instance().save_all();
  PerfModel check("forked", model_file("forked"));
  ASSERT_TRUE(check.load());
  const auto entries = check.entries();
  const auto* cpu = find_entry(entries, Arch::cpu, 8);
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->count, 105u);
}

// A models directory shared between users: the lock file another user made (0644) is read-only
// to the others, whose saves all failed ("cannot open .../.lock: Permission denied") although
// they may write the directory. A child saves as another user (root) or under a read-only lock.
TEST_F(PerfModelStorage, ALockFileMadeByAnotherUserDoesNotStopSaves) {
  fs::create_directories(directory());
  write_text(directory() / ".lock", "");
  fs::permissions(home_, fs::perms::all);
  fs::permissions(directory(), fs::perms::all);
  fs::permissions(directory() / ".lock", fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(2);
    PerfModel model("shared", model_file("shared"));
    model.record(Arch::cpu, 1, 1.0);
    try {
      model.save();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "save failed: %s\n", error.what());
      ::_exit(1);
    }
    ::_exit(0);
  }
  ASSERT_TRUE(child_ended_well(pid, std::chrono::seconds(30)));
  PerfModel check("shared", model_file("shared"));
  ASSERT_TRUE(check.load());
  ASSERT_EQ(check.entries().size(), 1u);
  EXPECT_EQ(check.entries()[0].count, 1u);
}

// A fork while another thread saved left the child with the model's lock taken for good (it
// hung at its own save), and with the file lock, which then held every other program's saves.
TEST_F(PerfModelStorage, AForkDuringASaveLeavesTheChildFreeToSave) {
  auto model = PerfModelRegistry::instance().get("busy");
  std::atomic<bool> saving{true};
  std::thread saver([&] {
    while (saving.load()) {
      for (std::size_t size = 0; size < 2000; ++size) model->record(Arch::cpu, size, 1.0);
      PerfModelRegistry::instance().save_all();
    }
  });
  int hung = 0;
  for (int round = 0; round < 20; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      PerfModelRegistry::instance().get("busy")->record(Arch::cpu, 1, 1.0);
      PerfModelRegistry::instance().save_all();
      ::_exit(0);
    }
    if (!child_ended_well(pid, std::chrono::seconds(20))) {
      ++hung;
      break;
    }
  }
  saving.store(false);
  saver.join();
  EXPECT_EQ(hung, 0);
  // The lock is free: a save of this process goes through.
  model->record(Arch::cpu, 1, 1.0);
  EXPECT_NO_THROW(model->save());
}

// A process stopped in its save (Ctrl-Z) held every other program's saves, and their exits, for
// as long: a save now gives up after a while, saying why, and keeps the measurements.
TEST_F(PerfModelStorage, ASaveGivesUpOnALockHeldForLong) {
  PerfModel model("locked", model_file("locked"));
  model.record(Arch::cpu, 4, 1.0);
  fs::create_directories(directory());
  const int holder = ::open((directory() / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(holder, 0);
  ASSERT_EQ(::flock(holder, LOCK_EX), 0);  // another open file: as another process would
  try {
    model.save();
    ADD_FAILURE() << "the save went through a held lock";
  } catch (const hetflow::Error& error) {
    EXPECT_NE(std::string(error.what()).find("has been held by another process"), std::string::npos) << error.what();
  }
  EXPECT_TRUE(model.dirty());
  ::close(holder);
  model.save();
  PerfModel check("locked", model_file("locked"));
  ASSERT_TRUE(check.load());
  EXPECT_EQ(find_entry(check.entries(), Arch::cpu, 4)->count, 1u);
}

// A lock held past its patience is given up on once per directory: saving each model waited
// for it again, so a program's exit with five models waited five times as long.
TEST_F(PerfModelStorage, SaveAllGivesUpOnAHeldLockOncePerDirectory) {
  auto& registry = PerfModelRegistry::instance();
  for (const char* symbol : {"first", "second", "third"}) registry.get(symbol)->record(Arch::cpu, 1, 1.0);
  fs::create_directories(directory());
  const int holder = ::open((directory() / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(holder, 0);
  ASSERT_EQ(::flock(holder, LOCK_EX), 0);
  testing::internal::CaptureStderr();
  registry.save_all();
  const std::string warnings = testing::internal::GetCapturedStderr();
  ::close(holder);
  std::size_t given_up = 0;
  for (std::size_t at = warnings.find("has been held"); at != std::string::npos;
       at = warnings.find("has been held", at + 1)) {
    ++given_up;
  }
  EXPECT_EQ(given_up, 1u) << warnings;
  EXPECT_NE(warnings.find("2 more performance models not saved"), std::string::npos) << warnings;
  registry.save_all();  // the measurements stayed in memory
  for (const char* symbol : {"first", "second", "third"}) {
    PerfModel check(symbol, model_file(symbol));
    ASSERT_TRUE(check.load()) << symbol;
    EXPECT_EQ(find_entry(check.entries(), Arch::cpu, 1)->count, 1u) << symbol;
  }
}

TEST_F(PerfModelStorage, ReadersNeverSeeAPartialFile) {
  const fs::path file = model_file("atomic");
  PerfModel writer("atomic", file);
  for (std::size_t size = 0; size < 200; ++size) writer.record(Arch::cpu, size, 1.0);  // a sizeable file
  writer.save();
  std::atomic<bool> writing{true};
  std::atomic<int> bad_reads{0};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    while (writing.load()) {
      // Raw text: a complete file always ends with a newline after its last entry.
      const std::string text = read_text(file);
      if (text.empty() || text.back() != '\n' || text.rfind("hetflow-perfmodel 1\n", 0) != 0) ++bad_reads;
      ++reads;
    }
  });
  for (int round = 0; round < 100; ++round) {
    writer.record(Arch::cpu, static_cast<std::size_t>(round), 2.0);
    writer.save();
  }
  writing = false;
  reader.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(bad_reads.load(), 0);
  PerfModel check("atomic", file);
  testing::internal::CaptureStderr();
  EXPECT_TRUE(check.load());
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(check.entries().size(), 200u);
  for (const auto& entry : fs::directory_iterator(directory())) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
}

TEST_F(PerfModelStorage, DamagedFileIsReportedAndIgnored) {
  const fs::path file = model_file("damaged");
  write_text(file,
             "hetflow-perfmodel 1\n"
             "symbol damaged\n"
             "cpu 64 3 1.0 0.0 1.0 1.0 1.0 3 1.0 1.0 1.0\n"
             "cpu 128 3 not-a-number 0 1 1 1 0\n");
  auto& registry = PerfModelRegistry::instance();
  testing::internal::CaptureStderr();
  std::shared_ptr<PerfModel> model;
  ASSERT_NO_THROW(model = registry.get("damaged"));
  const std::string warning = testing::internal::GetCapturedStderr();
  EXPECT_NE(warning.find("warning"), std::string::npos) << warning;
  EXPECT_NE(warning.find(file.string() + ":4"), std::string::npos) << warning;
  EXPECT_NE(warning.find("mean"), std::string::npos) << warning;
  EXPECT_TRUE(model->entries().empty());  // the whole file is ignored

  // Saving keeps the damaged file aside and writes a good one.
  model->record(Arch::cpu, 64, 2.0);
  testing::internal::CaptureStderr();
  registry.save_all();
  EXPECT_NE(testing::internal::GetCapturedStderr().find(".damaged"), std::string::npos);
  EXPECT_TRUE(fs::exists(fs::path(file.string() + ".damaged")));
  PerfModel check("damaged", file);
  EXPECT_TRUE(check.load());
  ASSERT_EQ(check.entries().size(), 1u);
  EXPECT_EQ(check.entries()[0].count, 1u);
}

TEST_F(PerfModelStorage, DamageOfEveryKindIsCaught) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty"},
      {"garbage\n", ":1"},
      {"hetflow-perfmodel 99\nsymbol d\n", "newer"},
      {"hetflow-perfmodel 01\nsymbol d\n", "bad format version '01'"},
      {"hetflow-perfmodel +1\nsymbol d\n", "bad format version '+1'"},
      {"hetflow-perfmodel 1\nsymbol other\n", "for symbol 'other'"},
      {"hetflow-perfmodel 1\n# only a comment\n", "symbol"},
      {"hetflow-perfmodel 1\nsymbol d\ngpu 1 1 1 0 1 1 1 0\n", "unknown architecture 'gpu'"},
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 1 1 0 1 1 1\n", "fields"},
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 2 1 0 1 1 1 2 1\n", "recent samples"},
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 0 1 0 1 1 1 0\n", "count"},
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 1 -1 0 1 1 1 0\n", "mean"},
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 1 5 0 1 1 1 0\n", "min <= mean <= max"},
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 1 1 0 1 1 1 0\ncpu 1 1 1 0 1 1 1 0\n", "second line"},
      // Hand-edited lines whose parts disagree: a recent sample outside min..max, an m2 that
      // runs between min and max cannot give (both were used: 1000 s expected, 7e149 s spread).
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 2 0.002 0 0.001 0.003 0.002 2 1000 1000\n", "outside min..max"},
      {"hetflow-perfmodel 1\nsymbol d\ncpu 1 2 0.002 1e300 0.001 0.003 0.002 0\n", "m2 is larger"},
  };
  for (const auto& [text, expected] : cases) {
    write_text(model_file("d"), text);
    PerfModel model("d", model_file("d"));
    testing::internal::CaptureStderr();
    EXPECT_FALSE(model.load()) << text;
    const std::string warning = testing::internal::GetCapturedStderr();
    EXPECT_NE(warning.find(expected), std::string::npos) << "file:\n" << text << "warning: " << warning;
    EXPECT_NE(warning.find(model_file("d").string()), std::string::npos) << warning;
    EXPECT_TRUE(model.entries().empty());
  }
  // Comments, blank lines and CRLF line ends are fine.
  write_text(model_file("d"), "hetflow-perfmodel 1\r\n\r\n# note\r\nsymbol d\r\ncpu 1 1 1 0 1 1 1 1 1\r\n");
  PerfModel fine("d", model_file("d"));
  EXPECT_TRUE(fine.load());
  EXPECT_EQ(fine.entries().size(), 1u);
}

// A hand-edited file that an editor saved with a UTF-8 byte order mark first (Notepad does) was
// "not a hetflow performance model": ignored, then moved aside as damaged at the next save.
TEST_F(PerfModelStorage, AByteOrderMarkIsNotDamage) {
  write_text(model_file("bom"), "\xEF\xBB\xBFhetflow-perfmodel 1\r\nsymbol bom\r\ncpu 8 1 0.5 0 0.5 0.5 0.5 1 0.5\r\n");
  testing::internal::CaptureStderr();
  auto model = PerfModelRegistry::instance().get("bom");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  ASSERT_EQ(model->entries().size(), 1u);
  EXPECT_EQ(model->entries()[0].mean, 0.5);
  model->record(Arch::cpu, 8, 0.5);
  model->save();
  EXPECT_FALSE(fs::exists(fs::path(model_file("bom").string() + ".damaged")));
  EXPECT_EQ(read_text(model_file("bom")).rfind("hetflow-perfmodel 1\n", 0), 0u);  // written without one
  PerfModel check("bom", model_file("bom"));
  EXPECT_TRUE(check.load());
  EXPECT_EQ(check.entries()[0].count, 2u);
}

// Saves killed between writing their temporary file and renaming it (SIGKILL, a power cut) left
// `.<symbol>.model.tmp.<pid>.<n>` files behind for ever, one per kill.
TEST_F(PerfModelStorage, TemporaryFilesOfKilledSavesAreRemovedAtTheNextSave) {
  const std::vector<std::string> abandoned = {".gemm.model.tmp.4242.0", ".other.model.tmp.1.17",
                                              ".a.model.tmp.1.2.model.tmp.3.4"};
  const std::vector<std::string> kept = {".gemm.model.tmp.x.0", "gemm.model.tmp.1.2", ".gemm.model.tmp.1",
                                         ".notes.txt.tmp.1.2",  "other.model",        ".lock"};
  for (const auto& name : abandoned) write_text(directory() / name, "partial");
  for (const auto& name : kept) write_text(directory() / name, "hetflow-perfmodel 1\nsymbol other\n");
  fs::create_directory(directory() / ".dir.model.tmp.1.2");  // not a file: left alone
  auto model = PerfModelRegistry::instance().get("gemm");
  model->record(Arch::cpu, 8, 0.5);
  model->save();
  for (const auto& name : abandoned) EXPECT_FALSE(fs::exists(directory() / name)) << name;
  for (const auto& name : kept) EXPECT_TRUE(fs::exists(directory() / name)) << name;
  EXPECT_TRUE(fs::is_directory(directory() / ".dir.model.tmp.1.2"));
  EXPECT_TRUE(fs::exists(model_file("gemm")));
}

// A file of 2^53 runs (the most a file may count, hand-edited) plus one more run: the save wrote
// a count the next load refused, and the save after that moved the model aside as damaged.
TEST_F(PerfModelStorage, ACountAtTheMostAFileHoldsStaysReadable) {
  write_text(model_file("most"), "hetflow-perfmodel 1\nsymbol most\ncpu 8 9007199254740992 0.5 0 0.5 0.5 0.5 0\n");
  PerfModel model("most", model_file("most"));
  ASSERT_TRUE(model.load());
  model.record(Arch::cpu, 8, 0.5);
  model.save();
  PerfModel other("most", model_file("most"));
  other.record(Arch::cpu, 8, 0.5);
  other.save();  // merged with the file's 2^53 runs
  PerfModel check("most", model_file("most"));
  testing::internal::CaptureStderr();
  EXPECT_TRUE(check.load());
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  ASSERT_EQ(check.entries().size(), 1u);
  EXPECT_EQ(check.entries()[0].count, std::uint64_t{1} << 53);
  EXPECT_EQ(check.entries()[0].mean, 0.5);
}

// A directory named like a model file is no model: it was listed, and `perfmodel show` of it said
// "no measurements" with a warning. It is still never replaced by a save.
TEST_F(PerfModelStorage, ADirectoryNamedLikeAModelIsNotListed) {
  fs::create_directories(directory() / "x.model");
  write_text(model_file("y"), "junk");  // a damaged regular file is listed: its warning says why
  EXPECT_EQ(PerfModelRegistry::instance().list(), std::vector<std::string>{"y"});
  auto model = PerfModelRegistry::instance().get("x");
  model->record(Arch::cpu, 1, 1.0);
  testing::internal::CaptureStderr();
  EXPECT_THROW(model->save(), hetflow::Error);
  testing::internal::GetCapturedStderr();
  EXPECT_TRUE(fs::is_directory(directory() / "x.model"));
}

// A file of a newer format is a newer hetflow's: read as nothing, and never replaced (what it
// holds would be lost).
TEST_F(PerfModelStorage, AModelOfANewerFormatIsNeitherReadNorReplaced) {
  const std::string newer = "hetflow-perfmodel 99\nsymbol future\ncpu 64 3 1 0 1 1 1 0\n";
  write_text(model_file("future"), newer);
  PerfModel model("future", model_file("future"));
  testing::internal::CaptureStderr();
  EXPECT_FALSE(model.load());
  model.record(Arch::cpu, 64, 2.0);
  model.save();
  const std::string warnings = testing::internal::GetCapturedStderr();
  EXPECT_NE(warnings.find("newer hetflow"), std::string::npos) << warnings;
  EXPECT_EQ(read_text(model_file("future")), newer);
  EXPECT_FALSE(fs::exists(fs::path(model_file("future").string() + ".damaged")));
  EXPECT_EQ(model.entries().size(), 1u);  // what it measured stays in memory
}

TEST_F(PerfModelStorage, MissingFileIsAnEmptyModel) {
  testing::internal::CaptureStderr();
  auto model = PerfModelRegistry::instance().get("absent");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(model->entries().empty());
  EXPECT_FALSE(model->expected(Arch::cpu, 1));
}

TEST_F(PerfModelStorage, ChangingHomeGivesFreshModels) {
  auto& registry = PerfModelRegistry::instance();
  auto here = registry.get("moving");
  here->record(Arch::cpu, 1, 1.0);
  const fs::path other_home = home_ / "other";
  ScopedEnv moved("HETFLOW_HOME", other_home.string());
  auto there = registry.get("moving");
  EXPECT_NE(here, there);
  EXPECT_TRUE(there->entries().empty());
  EXPECT_EQ(there->file(), other_home / "perfmodels" / "moving.model");
  registry.save_all();
  EXPECT_TRUE(fs::exists(model_file("moving")));  // each model goes to its own file
  EXPECT_FALSE(fs::exists(other_home / "perfmodels" / "moving.model"));
}

// A relative HETFLOW_HOME is taken from the working directory when a model is looked up: a chdir
// afterwards neither moves its file nor makes the same model stand for another directory's.
TEST_F(PerfModelStorage, ARelativeHomeIsResolvedWhenTheModelIsLookedUp) {
  const fs::path first = home_ / "first";
  const fs::path second = home_ / "second";
  fs::create_directories(first);
  fs::create_directories(second);
  const fs::path previous = fs::current_path();
  ScopedEnv relative("HETFLOW_HOME", "models");
  auto& registry = PerfModelRegistry::instance();
  fs::current_path(first);
  EXPECT_EQ(registry.directory(), first / "models" / "perfmodels");
  auto here = registry.get("relative");
  here->record(Arch::cpu, 1, 1.0);
  fs::current_path(second);
  auto there = registry.get("relative");
  EXPECT_NE(here, there);  // another directory: another model
  there->record(Arch::cpu, 1, 2.0);
  registry.save_all();
  fs::current_path(previous);
  PerfModel first_model("relative", first / "models" / "perfmodels" / "relative.model");
  ASSERT_TRUE(first_model.load());
  ASSERT_EQ(first_model.entries().size(), 1u);
  EXPECT_EQ(first_model.entries()[0].count, 1u);
  EXPECT_EQ(first_model.entries()[0].mean, 1.0);
  PerfModel second_model("relative", second / "models" / "perfmodels" / "relative.model");
  ASSERT_TRUE(second_model.load());
  ASSERT_EQ(second_model.entries().size(), 1u);
  EXPECT_EQ(second_model.entries()[0].mean, 2.0);
}

// A model file that is not a regular file (a FIFO, a directory) is left as it is: the save fails,
// saying what is there, and keeps the measurements. It was moved aside as damaged and replaced.
TEST_F(PerfModelStorage, ASaveLeavesWhatIsNotARegularFileAlone) {
  fs::create_directories(directory());
  fs::create_directory(model_file("dir"));
  ASSERT_EQ(::mkfifo(model_file("fifo").c_str(), 0644), 0);
  for (const char* symbol : {"dir", "fifo"}) {
    PerfModel model(symbol, model_file(symbol));
    model.record(Arch::cpu, 1, 1.0);
    testing::internal::CaptureStderr();
    try {
      model.save();
      ADD_FAILURE() << symbol << ": the save replaced it";
    } catch (const hetflow::Error& error) {
      EXPECT_NE(std::string(error.what()).find("not a regular file"), std::string::npos) << error.what();
    }
    static_cast<void>(testing::internal::GetCapturedStderr());
    EXPECT_TRUE(model.dirty()) << symbol;
    EXPECT_FALSE(fs::exists(model_file(symbol).string() + ".damaged")) << symbol;
  }
  EXPECT_TRUE(fs::is_directory(model_file("dir")));
  EXPECT_TRUE(fs::is_fifo(model_file("fifo")));
}

// A home under a regular file has no models: nothing to read, and nothing called damaged.
TEST_F(PerfModelStorage, AHomeUnderARegularFileHoldsNoModelRatherThanADamagedOne) {
  write_text(home_ / "a-file", "x");
  ScopedEnv moved("HETFLOW_HOME", (home_ / "a-file" / "home").string());
  testing::internal::CaptureStderr();
  auto model = PerfModelRegistry::instance().get("nowhere");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(model->entries().empty());
}

TEST_F(PerfModelStorage, FailedSaveKeepsTheMeasurements) {
  // A regular file where the directory should be: the save cannot happen.
  fs::remove_all(directory());
  write_text(home_ / "perfmodels", "not a directory");
  PerfModel model("unsaved", model_file("unsaved"));
  model.record(Arch::cpu, 1, 1.0);
  EXPECT_THROW(model.save(), hetflow::Error);
  EXPECT_TRUE(model.dirty());
  EXPECT_EQ(model.entries().at(0).count, 1u);
  fs::remove(home_ / "perfmodels");
  model.save();
  PerfModel check("unsaved", model_file("unsaved"));
  ASSERT_TRUE(check.load());
  EXPECT_EQ(check.entries().at(0).count, 1u);
}

// A long-running program meeting ever new symbols (a model per job, per parameter) kept every
// model in memory for good, across runtimes. Saved, a model nobody holds is let go; the next
// get() loads what it had from its file. Kept: models held, with unsaved measurements, or given
// a calibration of their own.
TEST_F(PerfModelStorage, SaveAllLetsGoOfSavedModelsNobodyHolds) {
  auto& registry = PerfModelRegistry::instance();
  std::vector<std::weak_ptr<PerfModel>> gone;
  for (int i = 0; i < 100; ++i) {
    auto model = registry.get("job" + std::to_string(i));
    model->record(Arch::cpu, 64, 1e-3);
    gone.push_back(model);
  }
  std::weak_ptr<PerfModel> looked_up = registry.get("only_asked_about");
  auto held = registry.get("held");
  held->record(Arch::cpu, 8, 2e-3);
  std::weak_ptr<PerfModel> own_calibration;
  {
    auto model = registry.get("own_calibration");
    model->set_calibration_samples(2);
    own_calibration = model;
  }
  registry.save_all();
  for (const auto& model : gone) EXPECT_TRUE(model.expired());
  EXPECT_TRUE(looked_up.expired());
  EXPECT_EQ(registry.get("held"), held);
  EXPECT_FALSE(own_calibration.expired());
  EXPECT_EQ(registry.get("own_calibration")->calibration_samples(), 2u);
  // What a model let go of had comes back from its file.
  auto again = registry.get("job7");
  ASSERT_EQ(again->entries().size(), 1u);
  EXPECT_EQ(again->entries()[0].count, 1u);
  EXPECT_EQ(registry.list().size(), 101u);  // the jobs and "held"

  // Measurements a save could not write stay in memory, with their model.
  fs::remove_all(directory());
  write_text(home_ / "perfmodels", "not a directory");
  std::weak_ptr<PerfModel> unsaved;
  {
    auto model = registry.get("unsaved");
    model->record(Arch::cpu, 1, 1.0);
    unsaved = model;
  }
  testing::internal::CaptureStderr();
  registry.save_all();
  (void)testing::internal::GetCapturedStderr();
  ASSERT_FALSE(unsaved.expired());
  EXPECT_TRUE(unsaved.lock()->dirty());
  fs::remove(home_ / "perfmodels");
}
