// The recorder behind HETFLOW_TRACE and HETFLOW_STATS, driven directly: the trace is read back
// with the JSON reader and checked track by track, the statistics are read from stderr.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/hetflow.hpp"
#include "trace/recorder.hpp"
#include "util/json.hpp"

namespace {

using hetflow::Arch;
using hetflow::InvalidArgument;
using hetflow::detail::JsonValue;
using hetflow::detail::Recorder;
using hetflow::ext::WorkerInfo;

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("hetflow-trace-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::string file(const std::string& name) const { return (path_ / name).string(); }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct Slice {
  std::string name;
  std::string category;
  double ts = 0;   // microseconds
  double dur = 0;  // microseconds
  const JsonValue* args = nullptr;
};

/// A trace read back: tracks by name, each with its slices in file order.
struct Trace {
  JsonValue root;
  std::map<std::string, std::vector<Slice>> tracks;
  std::map<int, std::string> processes;  // pid -> process name

  [[nodiscard]] std::vector<Slice> slices(const std::string& track, const std::string& category) const {
    std::vector<Slice> out;
    for (const Slice& slice : tracks.at(track)) {
      if (slice.category == category) out.push_back(slice);
    }
    return out;
  }
};

Trace read_trace(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "no trace at " << path;
  std::stringstream text;
  text << in.rdbuf();
  Trace trace;
  trace.root = hetflow::detail::parse_json(text.str(), path);
  std::map<std::pair<int, int>, std::string> names;
  std::map<std::pair<int, int>, std::vector<Slice>> slices;
  for (const JsonValue& event : trace.root.at("traceEvents").as_array()) {
    const std::string& phase = event.at("ph").as_string();
    const int pid = static_cast<int>(event.at("pid").as_number());
    if (phase == "M") {
      const std::string& what = event.at("name").as_string();
      if (what == "thread_name") {
        names[{pid, static_cast<int>(event.at("tid").as_number())}] = event.at("args").at("name").as_string();
      } else if (what == "process_name") {
        trace.processes[pid] = event.at("args").at("name").as_string();
      }
      continue;
    }
    EXPECT_EQ(phase, "X");
    Slice slice{event.at("name").as_string(), event.at("cat").as_string(), event.at("ts").as_number(),
                event.at("dur").as_number(), event.find("args")};
    slices[{pid, static_cast<int>(event.at("tid").as_number())}].push_back(slice);
  }
  for (const auto& [key, name] : names) {
    EXPECT_EQ(trace.tracks.count(name), 0u) << "two tracks named " << name;
    trace.tracks[name] = slices[key];
    slices.erase(key);
  }
  EXPECT_TRUE(slices.empty()) << "slices on a track without a name";
  return trace;
}

std::vector<WorkerInfo> two_workers() {
  return {{.id = 0, .arch = Arch::cpu, .memory_node = 0}, {.id = 1, .arch = Arch::cuda, .memory_node = 1}};
}

std::vector<std::string> two_nodes() { return {"host", "cuda0"}; }

double bytes_of(const Slice& slice) { return slice.args->at("bytes").as_number(); }

TEST(Trace, OneTrackPerWorkerWithTasksAndIdleSlices) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, false, two_workers(), two_nodes());
  recorder.task(0, "gemm", 1024, 0.100, 0.300);
  recorder.task(0, "potrf", 2048, 0.500, 0.600);
  recorder.finish(1.0);

  const Trace trace = read_trace(path);
  EXPECT_EQ(trace.processes.at(1), "workers");
  ASSERT_EQ(trace.tracks.size(), 2u);  // no transfers: no transfer tracks
  const auto& busy = trace.tracks.at("worker 0 (cpu)");
  ASSERT_EQ(busy.size(), 5u);
  const std::vector<std::tuple<std::string, double, double>> expected = {{"idle", 0, 100000},
                                                                         {"gemm", 100000, 200000},
                                                                         {"idle", 300000, 200000},
                                                                         {"potrf", 500000, 100000},
                                                                         {"idle", 600000, 400000}};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(busy[i].name, std::get<0>(expected[i])) << i;
    EXPECT_DOUBLE_EQ(busy[i].ts, std::get<1>(expected[i])) << i;
    EXPECT_DOUBLE_EQ(busy[i].dur, std::get<2>(expected[i])) << i;
  }
  EXPECT_EQ(busy[1].category, "task");
  EXPECT_EQ(busy[0].category, "idle");
  EXPECT_DOUBLE_EQ(bytes_of(busy[1]), 1024);
  EXPECT_DOUBLE_EQ(bytes_of(busy[3]), 2048);

  // A worker that ran nothing is idle from start to end.
  const auto& idle = trace.tracks.at("worker 1 (cuda)");
  ASSERT_EQ(idle.size(), 1u);
  EXPECT_EQ(idle[0].name, "idle");
  EXPECT_DOUBLE_EQ(idle[0].ts, 0);
  EXPECT_DOUBLE_EQ(idle[0].dur, 1e6);
}

// A task that throws ran all the same: its slice is in the trace (it showed as idle time).
TEST(Trace, AFailedTaskHasItsSlice) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  {
    hetflow::Runtime rt(hetflow::Config{.ncpus = 1, .trace_path = path});
    auto failing = rt.submit(hetflow::TaskOptions{.name = "fails"}, [] { throw std::runtime_error("no"); });
    EXPECT_THROW(failing.get(), std::runtime_error);
  }
  const Trace trace = read_trace(path);
  const auto& slices = trace.tracks.at("worker 0 (cpu)");
  EXPECT_TRUE(std::any_of(slices.begin(), slices.end(), [](const auto& slice) { return slice.name == "fails"; }));
}

TEST(Trace, NoIdleSliceBetweenBackToBackTasks) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, false, {{.id = 0, .arch = Arch::cpu, .memory_node = 0}}, {"host"});
  recorder.task(0, "a", 0, 0.0, 0.25);
  recorder.task(0, "b", 0, 0.25, 0.5);
  recorder.finish(0.5);
  const Trace trace = read_trace(path);
  const auto& track = trace.tracks.at("worker 0 (cpu)");
  ASSERT_EQ(track.size(), 2u);
  EXPECT_EQ(track[0].name, "a");
  EXPECT_EQ(track[1].name, "b");
}

TEST(Trace, NestedTasksNestAndLeaveNoFalseIdle) {
  // A task that waits runs other tasks on its worker meanwhile; they end (and are recorded)
  // before it.
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, true, {{.id = 0, .arch = Arch::cpu, .memory_node = 0}}, {"host"});
  recorder.task(0, "inner1", 0, 0.2, 0.3);
  recorder.task(0, "inner2", 0, 0.35, 0.4);
  recorder.task(0, "outer", 0, 0.1, 0.5);
  testing::internal::CaptureStderr();
  recorder.finish(1.0);
  const std::string stats = testing::internal::GetCapturedStderr();

  const Trace trace = read_trace(path);
  const auto& track = trace.tracks.at("worker 0 (cpu)");
  std::vector<std::string> names;
  for (const auto& slice : track) names.push_back(slice.name);
  EXPECT_EQ(names, (std::vector<std::string>{"idle", "outer", "inner1", "inner2", "idle"}));
  EXPECT_DOUBLE_EQ(track.back().ts, 500000);
  EXPECT_DOUBLE_EQ(track.back().dur, 500000);
  EXPECT_NE(stats.find("0.400000"), std::string::npos) << stats;  // busy: the outer task only
  EXPECT_NE(stats.find("40.0"), std::string::npos) << stats;
}

TEST(Trace, TasksThatOverlapWithoutNestingGoOnAnotherLane) {
  // A task whose wait lent its worker takes it back while a task that started inside it still
  // runs (waiting in turn, without the worker): one track cannot show both.
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, false, two_workers(), two_nodes());
  recorder.task(0, "leaf", 0, 0.25, 0.28);
  recorder.task(0, "outer1", 0, 0.1, 0.3);
  recorder.task(0, "outer2", 0, 0.2, 0.4);
  recorder.task(0, "after", 0, 0.5, 0.6);
  recorder.finish(1.0);

  const Trace trace = read_trace(path);
  std::vector<std::string> names;
  for (const auto& slice : trace.tracks.at("worker 0 (cpu)")) names.push_back(slice.name);
  EXPECT_EQ(names, (std::vector<std::string>{"idle", "outer1", "leaf", "idle", "after", "idle"}));
  const auto& idle = trace.slices("worker 0 (cpu)", "idle");
  ASSERT_EQ(idle.size(), 3u);
  EXPECT_DOUBLE_EQ(idle[1].ts, 400000);  // after outer2, on the other lane
  const auto lane = trace.slices("worker 0 (cpu) (2)", "task");
  ASSERT_EQ(lane.size(), 1u);
  EXPECT_EQ(lane[0].name, "outer2");
  EXPECT_DOUBLE_EQ(lane[0].ts, 200000);
  EXPECT_DOUBLE_EQ(lane[0].dur, 200000);
  // The lane's thread id is none of the workers': worker 1's track is its own idle slice only.
  ASSERT_EQ(trace.tracks.at("worker 1 (cuda)").size(), 1u);
  EXPECT_EQ(trace.tracks.at("worker 1 (cuda)")[0].category, "idle");
}

TEST(Trace, TransfersGetATrackPerNodePair) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, false, two_workers(), two_nodes());
  recorder.transfer(0, 1, 4096, 0.2, 0.25);
  recorder.transfer(0, 1, 8192, 0.3, 0.35);
  recorder.transfer(1, 0, 100, 0.4, 0.5);
  recorder.finish(1.0);

  const Trace trace = read_trace(path);
  EXPECT_EQ(trace.processes.at(2), "transfers");
  ASSERT_EQ(trace.tracks.size(), 4u);
  const auto to_gpu = trace.slices("transfers host -> cuda0", "transfer");
  ASSERT_EQ(to_gpu.size(), 2u);
  EXPECT_DOUBLE_EQ(to_gpu[0].ts, 200000);
  EXPECT_DOUBLE_EQ(to_gpu[0].dur, 50000);
  EXPECT_DOUBLE_EQ(bytes_of(to_gpu[0]), 4096);
  EXPECT_DOUBLE_EQ(bytes_of(to_gpu[1]), 8192);
  EXPECT_EQ(to_gpu[0].args->at("from").as_string(), "host");
  EXPECT_EQ(to_gpu[0].args->at("to").as_string(), "cuda0");
  const auto to_host = trace.slices("transfers cuda0 -> host", "transfer");
  ASSERT_EQ(to_host.size(), 1u);
  EXPECT_DOUBLE_EQ(bytes_of(to_host[0]), 100);
}

TEST(Trace, OverlappingTransfersGoOnSeparateLanes) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, false, two_workers(), two_nodes());
  recorder.transfer(0, 1, 1, 0.0, 0.4);
  recorder.transfer(0, 1, 2, 0.1, 0.2);  // overlaps the first
  recorder.transfer(0, 1, 3, 0.5, 0.6);  // fits after the first on its lane
  recorder.finish(1.0);
  const Trace trace = read_trace(path);
  const auto first = trace.slices("transfers host -> cuda0", "transfer");
  const auto second = trace.slices("transfers host -> cuda0 (2)", "transfer");
  ASSERT_EQ(first.size(), 2u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_DOUBLE_EQ(bytes_of(second[0]), 2);
}

TEST(Trace, MessagesGetATrackPerPeerNamedAfterTheirData) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, false, two_workers(), two_nodes());
  recorder.message("to rank 1", "tile (2, 0)", 4096, 0.1, 0.3);
  recorder.message("to rank 1", "tile (3, 0)", 4096, 0.2, 0.4);  // in flight with the first
  recorder.message("from rank 2", "x", 8, 0.5, 0.6);
  recorder.finish(1.0);
  const Trace trace = read_trace(path);
  EXPECT_EQ(trace.processes.at(3), "messages");
  const auto first = trace.slices("to rank 1", "message");
  const auto second = trace.slices("to rank 1 (2)", "message");
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(first[0].name, "tile (2, 0)");
  EXPECT_DOUBLE_EQ(first[0].dur, 200000);
  EXPECT_DOUBLE_EQ(bytes_of(second[0]), 4096);
  const auto received = trace.slices("from rank 2", "message");
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].name, "x");
}

TEST(Trace, ThePathMayNameTheRankTheProcessAndTheScheduler) {
  const TempDir dir;
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  {
    Recorder recorder(dir.file("trace.%r.%p.%s.100%%s.json"), false, two_workers(), two_nodes(), "dmdas");
    recorder.finish(1.0);
  }
  unsetenv("OMPI_COMM_WORLD_RANK");
  EXPECT_TRUE(std::filesystem::exists(dir.file("trace.3." + std::to_string(getpid()) + ".dmdas.100%s.json")));
}

// Runtimes alive together with one trace path (the module's and an executor's, from one
// HETFLOW_TRACE) wrote one file, the last over the other.
TEST(Trace, RecordersAliveTogetherWriteAFileEach) {
  const TempDir dir;
  {
    Recorder first(dir.file("trace.json"), false, two_workers(), two_nodes(), "eager");
    Recorder second(dir.file("trace.json"), false, two_workers(), two_nodes(), "eager");
    Recorder third(dir.file("trace.json"), false, two_workers(), two_nodes(), "eager");
    third.finish(1.0);
    second.finish(1.0);
    first.finish(1.0);
  }
  for (const char* name : {"trace.json", "trace-2.json", "trace-3.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.file(name))) << name;
  }
  {
    Recorder again(dir.file("trace.json"), false, two_workers(), two_nodes(), "eager");  // all finished: free
    again.finish(2.0);
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("trace-4.json")));
}

TEST(Trace, NamesAreEscaped) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, false, {{.id = 0, .arch = Arch::cpu, .memory_node = 0}}, {"host \"RAM\""});
  const std::string name = "say \"hi\"\\\n\ttab \x01 caf\xC3\xA9";
  recorder.task(0, name, 0, 0.1, 0.2);
  recorder.task(0, "bad \xFF utf8", 0, 0.3, 0.4);
  recorder.finish(1.0);
  const Trace trace = read_trace(path);
  const auto tasks = trace.slices("worker 0 (cpu)", "task");
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].name, name);
  EXPECT_EQ(tasks[1].name, "bad \xEF\xBF\xBD utf8");
}

TEST(Trace, ConcurrentWorkersLoseNothing) {
  constexpr unsigned kWorkers = 4;
  constexpr int kTasks = 20000;
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  std::vector<WorkerInfo> workers;
  for (unsigned w = 0; w < kWorkers; ++w) workers.push_back({.id = w, .arch = Arch::cpu, .memory_node = 0});
  Recorder recorder(path, true, workers, {"host"});
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&recorder, w] {
      for (int i = 0; i < kTasks; ++i) {
        const std::string name = "kernel" + std::to_string(i % 7);
        // 1 us tasks every 2 us: idle gaps of 1 us between them.
        recorder.task(w, name, static_cast<std::size_t>(i), 2e-6 * i, 2e-6 * i + 1e-6);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  testing::internal::CaptureStderr();
  recorder.finish(2e-6 * kTasks);
  const std::string stats = testing::internal::GetCapturedStderr();

  const Trace trace = read_trace(path);
  for (unsigned w = 0; w < kWorkers; ++w) {
    const std::string track = "worker " + std::to_string(w) + " (cpu)";
    const auto tasks = trace.slices(track, "task");
    ASSERT_EQ(tasks.size(), static_cast<std::size_t>(kTasks)) << track;
    std::map<std::string, int> per_name;
    double bytes = 0;
    for (const auto& task : tasks) {
      ++per_name[task.name];
      bytes += bytes_of(task);
    }
    EXPECT_EQ(per_name.size(), 7u);
    EXPECT_EQ(per_name["kernel0"], (kTasks + 6) / 7);
    EXPECT_DOUBLE_EQ(bytes, static_cast<double>(kTasks) * (kTasks - 1) / 2);
    EXPECT_EQ(trace.slices(track, "idle").size(), static_cast<std::size_t>(kTasks));  // after each task
    EXPECT_NE(stats.find(track), std::string::npos);
  }
  EXPECT_NE(stats.find(std::to_string(kTasks)), std::string::npos) << stats;
  EXPECT_NE(stats.find("50.0"), std::string::npos) << stats;
}

// The row of `table` (stderr text) that starts with `label` after the indentation, split into
// cells at runs of two or more spaces.
std::vector<std::string> stats_row(const std::string& table, const std::string& label) {
  std::istringstream lines(table);
  std::string line;
  while (std::getline(lines, line)) {
    const auto first = line.find_first_not_of(' ');
    if (first == std::string::npos || line.compare(first, label.size(), label) != 0) continue;
    std::vector<std::string> cells;
    std::size_t i = first;
    while (i < line.size()) {
      std::size_t end = line.find("  ", i);
      if (end == std::string::npos) end = line.size();
      cells.push_back(line.substr(i, end - i));
      i = line.find_first_not_of(' ', end);
      if (i == std::string::npos) break;
    }
    return cells;
  }
  return {};
}

TEST(Stats, WorkerAndTransferTables) {
  Recorder recorder("", true, two_workers(), two_nodes());
  recorder.task(0, "a", 0, 0.0, 0.5);
  recorder.task(0, "b", 0, 1.0, 1.5);
  recorder.task(0, "c", 0, 1.5, 2.0);
  recorder.task(1, "d", 0, 0.0, 0.25);
  recorder.transfer(0, 1, 1'000'000'000, 0.0, 0.5);
  recorder.transfer(0, 1, 1'000'000'000, 1.0, 1.5);
  recorder.transfer(1, 0, 3'000, 0.0, 0.0);
  testing::internal::CaptureStderr();
  recorder.finish(2.5);
  const std::string stats = testing::internal::GetCapturedStderr();

  EXPECT_NE(stats.find("2 workers, 2.500000 s"), std::string::npos) << stats;
  EXPECT_EQ(stats_row(stats, "worker 0 (cpu)"), (std::vector<std::string>{"worker 0 (cpu)", "3", "1.500000", "60.0"}))
      << stats;
  EXPECT_EQ(stats_row(stats, "worker 1 (cuda)"), (std::vector<std::string>{"worker 1 (cuda)", "1", "0.250000", "10.0"}))
      << stats;
  EXPECT_EQ(stats_row(stats, "host -> cuda0"),
            (std::vector<std::string>{"host -> cuda0", "2", "2000000000", "1.000000", "2.00"}))
      << stats;
  EXPECT_EQ(stats_row(stats, "cuda0 -> host"),
            (std::vector<std::string>{"cuda0 -> host", "1", "3000", "0.000000", "-"}))
      << stats;

  // Aligned: every row of a table has the same length.
  std::istringstream lines(stats);
  std::string line;
  std::vector<std::size_t> lengths;
  while (std::getline(lines, line)) lengths.push_back(line.size());
  ASSERT_EQ(lengths.size(), 7u) << stats;  // title, 3 worker rows, 3 transfer rows
  EXPECT_EQ(lengths[1], lengths[2]);
  EXPECT_EQ(lengths[2], lengths[3]);
  EXPECT_EQ(lengths[4], lengths[5]);
  EXPECT_EQ(lengths[5], lengths[6]);
}

TEST(Stats, NestedTasksCountOnceWithoutATrace) {
  Recorder recorder("", true, {{.id = 0, .arch = Arch::cpu, .memory_node = 0}}, {"host"});
  recorder.task(0, "inner", 0, 0.2, 0.3);
  recorder.task(0, "inner", 0, 0.3, 0.4);
  recorder.task(0, "outer", 0, 0.1, 0.5);
  recorder.task(0, "next", 0, 0.6, 0.7);
  testing::internal::CaptureStderr();
  recorder.finish(1.0);
  const std::string stats = testing::internal::GetCapturedStderr();
  EXPECT_EQ(stats_row(stats, "worker 0 (cpu)"), (std::vector<std::string>{"worker 0 (cpu)", "4", "0.500000", "50.0"}))
      << stats;
  EXPECT_EQ(stats.find("transfers"), std::string::npos) << stats;  // no transfers: no table
}

TEST(Stats, ManyTasksInsideOneStayExact) {
  // More enclosed tasks than the recorder keeps spans for without merging.
  Recorder recorder("", true, {{.id = 0, .arch = Arch::cpu, .memory_node = 0}}, {"host"});
  constexpr int kInner = 10000;
  for (int i = 0; i < kInner; ++i) recorder.task(0, "inner", 0, 1.0 + 1e-4 * i, 1.0 + 1e-4 * i + 5e-5);
  recorder.task(0, "outer", 0, 0.5, 3.0);
  testing::internal::CaptureStderr();
  recorder.finish(4.0);
  const std::string stats = testing::internal::GetCapturedStderr();
  EXPECT_EQ(stats_row(stats, "worker 0 (cpu)"),
            (std::vector<std::string>{"worker 0 (cpu)", std::to_string(kInner + 1), "2.500000", "62.5"}))
      << stats;
}

TEST(Stats, EndBeforeTheLastTaskExtendsTheRun) {
  Recorder recorder("", true, {{.id = 0, .arch = Arch::cpu, .memory_node = 0}}, {"host"});
  recorder.task(0, "a", 0, 0.0, 2.0);
  testing::internal::CaptureStderr();
  recorder.finish(1.0);
  const std::string stats = testing::internal::GetCapturedStderr();
  EXPECT_NE(stats.find("2.000000 s"), std::string::npos) << stats;
  EXPECT_EQ(stats_row(stats, "worker 0 (cpu)"), (std::vector<std::string>{"worker 0 (cpu)", "1", "2.000000", "100.0"}))
      << stats;
}

TEST(Trace, UnwritablePathIsReportedNotThrown) {
  const std::string path = "/nonexistent-hetflow-dir/trace.json";
  Recorder recorder(path, false, two_workers(), two_nodes());
  recorder.task(0, "a", 0, 0.0, 1.0);
  testing::internal::CaptureStderr();
  EXPECT_NO_THROW(recorder.finish(1.0));
  const std::string error = testing::internal::GetCapturedStderr();
  EXPECT_NE(error.find("hetflow: cannot write the trace '" + path + "'"), std::string::npos) << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Trace, ReplacesAnOldTraceAndLeavesNoTemporaryFile) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  std::ofstream(path) << "old contents";
  Recorder recorder(path, false, two_workers(), two_nodes());
  recorder.task(1, "new", 0, 0.0, 1.0);
  recorder.finish(1.0);
  const Trace trace = read_trace(path);
  EXPECT_EQ(trace.slices("worker 1 (cuda)", "task").at(0).name, "new");
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1u);
}

TEST(Trace, FinishWritesOnceAndLaterRecordsAreIgnored) {
  const TempDir dir;
  const std::string path = dir.file("trace.json");
  Recorder recorder(path, true, two_workers(), two_nodes());
  recorder.task(0, "a", 0, 0.0, 1.0);
  testing::internal::CaptureStderr();
  recorder.finish(1.0);
  const std::string first = testing::internal::GetCapturedStderr();
  EXPECT_FALSE(first.empty());
  std::filesystem::remove(path);
  recorder.task(0, "late", 0, 1.0, 2.0);
  recorder.transfer(0, 1, 10, 1.0, 2.0);
  testing::internal::CaptureStderr();
  recorder.finish(2.0);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Trace, NothingAskedNothingWritten) {
  Recorder recorder("", false, two_workers(), two_nodes());
  recorder.task(0, "a", 0, 0.0, 1.0);
  testing::internal::CaptureStderr();
  recorder.finish(1.0);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(Trace, MessagesOffTheRuntimesClockAreRefused) {
  const auto path = std::filesystem::temp_directory_path() / ("hetflow-messages-" + std::to_string(::getpid()));
  {
    hetflow::Runtime rt(hetflow::Config{.ncpus = 1u, .trace_path = path.string()});
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const double now = rt.now();
    for (auto [start, end] : {std::pair{std::nan(""), now}, std::pair{0.0, std::nan("")}, std::pair{0.0, 1e300},
                              std::pair{now, now / 2}, std::pair{-1.0, now}, std::pair{0.0, now + 3600}}) {
      EXPECT_THROW(rt.trace_message("to rank 1", "x", 8, start, end), InvalidArgument) << start << " to " << end;
    }
    rt.trace_message("to rank 1", "kept", 8, now / 2, now);
  }
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(path);
  EXPECT_NE(text.find("kept"), std::string::npos);
  EXPECT_EQ(text.find("\"x\""), std::string::npos);
}

TEST(Trace, BadArgumentsAreInvalidArgument) {
  Recorder recorder("", true, two_workers(), two_nodes());
  try {
    recorder.task(7, "a", 0, 0.0, 1.0);
    FAIL() << "an unknown worker was accepted";
  } catch (const InvalidArgument& error) {
    EXPECT_STREQ(error.what(), "Recorder::task: worker 7 is not one of the 2 workers recorded");
  }
  try {
    recorder.transfer(0, 2, 1, 0.0, 1.0);
    FAIL() << "an unknown node was accepted";
  } catch (const InvalidArgument& error) {
    EXPECT_STREQ(error.what(), "Recorder::transfer: memory node 2 is not one of the 2 memory nodes");
  }
  EXPECT_THROW(Recorder("", true, {{.id = 0, .arch = Arch::cuda, .memory_node = 1}}, {"host"}), InvalidArgument);
  EXPECT_THROW(Recorder("", true, {{.id = 3}, {.id = 3}}, {"host"}), InvalidArgument);
  EXPECT_THROW(Recorder("", true, {{.id = 1u << 30}}, {"host"}), InvalidArgument);
  testing::internal::CaptureStderr();
  recorder.finish(1.0);
  (void)testing::internal::GetCapturedStderr();
}

}  // namespace
