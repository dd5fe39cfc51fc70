// The model-driven schedulers inside a real runtime: codelet tasks with a (memory-only)
// performance model, so that the first runs calibrate the model and the later ones are placed
// by it. Checks that every task runs once, in dependency order, with the right result.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "hetflow/hetflow.hpp"
#include "hetflow/perfmodel.hpp"

namespace {

using hetflow::Codelet;
using hetflow::Config;
using hetflow::PerfModel;
using hetflow::R;
using hetflow::Runtime;
using hetflow::RW;
using hetflow::TaskContext;

class ModelSchedRuntime : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(ModelSched, ModelSchedRuntime, ::testing::Values("dm", "dmda", "dmdas"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) { return param_info.param; });

TEST_P(ModelSchedRuntime, CodeletTasksWithAPerfModelAllCompleteCorrectly) {
  auto model = std::make_shared<PerfModel>("sym");
  model->set_calibration_samples(3);  // calibrated early, so most tasks are placed by the model
  std::atomic<int> runs{0};
  Codelet add{.name = "add",
              .cpu =
                  [&runs](TaskContext& context) {
                    hetflow::DataView view = context.buffer(0);
                    double* x = view.as<double>();
                    const int k = context.arg<int>();
                    for (std::size_t i = 0; i < view.nx(); ++i) x[i] += k;
                    runs.fetch_add(1);
                  },
              .model = model};
  // Reads one vector, writes another: dependencies across vectors.
  Codelet copy_first{.name = "copy_first",
                     .cpu =
                         [&runs](TaskContext& context) {
                           const double* from = context.buffer(0).as<double>();
                           context.buffer(1).as<double>()[0] += from[0];
                           runs.fetch_add(1);
                         },
                     .model = model};

  constexpr std::size_t kVectors = 16;
  constexpr std::size_t kLength = 64;
  constexpr int kTasks = 320;
  std::vector<std::vector<double>> data(kVectors, std::vector<double>(kLength, 0.0));
  std::vector<double> expected_first(kVectors, 0.0);
  std::vector<double> expected_rest(kVectors, 0.0);
  int expected_runs = 0;
  {
    Runtime rt{Config{.ncpus = 2, .scheduler = GetParam()}};
    std::vector<hetflow::DataHandle> handles;
    for (std::size_t v = 0; v < kVectors; ++v) {
      std::string name = "v";  // built in steps: GCC 12 misreports "v" + to_string(v) (-Wrestrict)
      name += std::to_string(v);
      handles.push_back(rt.register_vector(data[v].data(), kLength, name));
    }
    for (int k = 0; k < kTasks; ++k) {
      const std::size_t v = static_cast<std::size_t>(k) % kVectors;
      rt.insert(add, {.data = {RW(handles[v])}, .priority = k % 3}, k);
      expected_first[v] += k;
      expected_rest[v] += k;
      ++expected_runs;
      if (k % 10 == 9) {
        const std::size_t to = (v + 1) % kVectors;
        rt.insert(copy_first, {.data = {R(handles[v]), RW(handles[to])}});
        expected_first[to] += expected_first[v];
        ++expected_runs;
      }
    }
    rt.wait_all();
    for (auto& handle : handles) rt.unregister(handle);
  }
  EXPECT_EQ(runs.load(), expected_runs);
  for (std::size_t v = 0; v < kVectors; ++v) {
    EXPECT_EQ(data[v][0], expected_first[v]) << "vector " << v;
    for (std::size_t i = 1; i < kLength; ++i)
      ASSERT_EQ(data[v][i], expected_rest[v]) << "vector " << v << " [" << i << "]";
  }
  // Every run was measured into the model.
  std::uint64_t measured = 0;
  for (const auto& entry : model->entries()) measured += entry.count;
  EXPECT_EQ(measured, static_cast<std::uint64_t>(expected_runs));
}

}  // namespace
