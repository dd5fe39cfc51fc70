// The bus model: transfer estimates between memory nodes, measured once per device node and
// kept on disk. A fake node (host memory underneath) counts what the measurement asks of it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/ext/memory_node.hpp"
#include "perfmodel/bus.hpp"

namespace {

namespace fs = std::filesystem;
using hetflow::detail::BusFileContents;
using hetflow::detail::BusLink;
using hetflow::detail::BusModel;

class CountedTransfer final : public hetflow::ext::Transfer {
 public:
  explicit CountedTransfer(std::atomic<int>& waits) : waits_(waits) {}
  void wait() override { waits_.fetch_add(1); }
  [[nodiscard]] bool done() override { return true; }

 private:
  std::atomic<int>& waits_;
};

// Device memory that is host memory; copies are memcpy, started copies are already done.
class FakeNode final : public hetflow::ext::MemoryNode {
 public:
  explicit FakeNode(std::string name, bool room = true) : name_(std::move(name)), room_(room) {}

  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] void* allocate(std::size_t bytes) override {
    allocations.fetch_add(1);
    if (!room_) return nullptr;
    live.fetch_add(1);
    return std::malloc(bytes);
  }
  void free(void* buffer, std::size_t /*bytes*/) noexcept override {
    live.fetch_sub(1);
    std::free(buffer);
  }
  [[nodiscard]] std::unique_ptr<hetflow::ext::Transfer> copy_from_host(void* buffer, const void* host,
                                                                       std::size_t bytes) override {
    copies_in.fetch_add(1);
    std::memcpy(buffer, host, bytes);
    return std::make_unique<CountedTransfer>(waits);
  }
  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override {
    copies_out.fetch_add(1);
    std::memcpy(host, buffer, bytes);
  }
  void host_buffer_added(void* /*host*/, std::size_t /*bytes*/) override { host_buffers.fetch_add(1); }
  void host_buffer_removed(void* /*host*/, std::size_t /*bytes*/) noexcept override { host_buffers.fetch_sub(1); }

  [[nodiscard]] int calls() const { return allocations.load() + copies_in.load() + copies_out.load(); }

  std::atomic<int> allocations{0};
  std::atomic<int> live{0};
  std::atomic<int> copies_in{0};
  std::atomic<int> copies_out{0};
  std::atomic<int> waits{0};
  std::atomic<int> host_buffers{0};

 private:
  std::string name_;
  bool room_;
};

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("hetflow-bus-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& file) {
  std::ifstream in(file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

bool usable(const BusLink& link) {
  return link.known && std::isfinite(link.bandwidth) && link.bandwidth > 0 && std::isfinite(link.latency) &&
         link.latency >= 0;
}

TEST(BusModel, ExpectedIsLatencyPlusBytesOverBandwidth) {
  FakeNode a("a"), b("b");
  BusModel bus({nullptr, &a, &b});
  const double defaults = BusModel::kDefaultLatency + 1e6 / BusModel::kDefaultBandwidth;
  EXPECT_DOUBLE_EQ(bus.expected(0, 1, 1'000'000), defaults);
  EXPECT_FALSE(bus.link(0, 1).known);
  EXPECT_EQ(bus.expected(1, 1, 1'000'000), 0.0);
  EXPECT_EQ(bus.expected(0, 0, 1'000'000), 0.0);
  EXPECT_EQ(bus.expected(0, 1, 0), 0.0);

  bus.set(0, 1, 1e9, 1e-3);
  bus.set(1, 0, 2e9, 2e-3);
  EXPECT_DOUBLE_EQ(bus.expected(0, 1, 1'000'000), 1e-3 + 1e-3);
  EXPECT_DOUBLE_EQ(bus.expected(1, 0, 1'000'000), 2e-3 + 5e-4);
  // Device to device goes through the host: both legs.
  EXPECT_DOUBLE_EQ(bus.expected(1, 2, 1'000'000), 2e-3 + 5e-4 + defaults);
  EXPECT_DOUBLE_EQ(bus.expected(2, 1, 1'000'000), defaults + 2e-3);
  // Unless a direct link was set.
  bus.set(1, 2, 50e9, 1e-6);
  EXPECT_DOUBLE_EQ(bus.expected(1, 2, 1'000'000), 1e-6 + 2e-5);
  EXPECT_DOUBLE_EQ(bus.expected(2, 1, 1'000'000), defaults + 2e-3);
  // A node out of range gets the defaults.
  EXPECT_DOUBLE_EQ(bus.expected(0, 7, 1'000'000), defaults);
}

TEST(BusModel, SetRejectsBadValues) {
  FakeNode a("a");
  BusModel bus({nullptr, &a});
  EXPECT_THROW(bus.set(0, 2, 1e9, 0), hetflow::InvalidArgument);
  EXPECT_THROW(bus.set(0, 1, 0, 0), hetflow::InvalidArgument);
  EXPECT_THROW(bus.set(0, 1, -1e9, 0), hetflow::InvalidArgument);
  EXPECT_THROW(bus.set(0, 1, 1e9, -1), hetflow::InvalidArgument);
  EXPECT_THROW(bus.set(0, 1, std::nan(""), 0), hetflow::InvalidArgument);
  EXPECT_THROW(bus.set(0, 1, 1e9, INFINITY), hetflow::InvalidArgument);
  EXPECT_FALSE(bus.link(0, 1).known);
}

TEST(BusModel, CalibrateMeasuresSavesAndTheNextCalibrateOnlyReads) {
  TempDir dir;
  FakeNode node("fake0");
  BusModel bus({nullptr, &node});
  bus.calibrate(dir.path());
  EXPECT_GT(node.copies_in.load(), 0);
  EXPECT_GT(node.copies_out.load(), 0);
  EXPECT_EQ(node.waits.load(), node.copies_in.load()) << "every started copy is waited for";
  EXPECT_EQ(node.live.load(), 0) << "every buffer is freed";
  EXPECT_EQ(node.host_buffers.load(), 0) << "every host buffer announced is withdrawn";
  ASSERT_TRUE(usable(bus.link(0, 1)));
  ASSERT_TRUE(usable(bus.link(1, 0)));

  const fs::path file = dir.path() / "bus" / "fake0.txt";
  ASSERT_TRUE(fs::exists(file));
  const std::string text = read_file(file);
  EXPECT_EQ(text.rfind("hetflow-bus 1\nnode fake0\n", 0), 0u) << text;

  FakeNode again("fake0");
  BusModel reread({nullptr, &again});
  reread.calibrate(dir.path());
  EXPECT_EQ(again.calls(), 0) << "the saved numbers are used without measuring";
  for (auto [from, to] : {std::pair{0u, 1u}, std::pair{1u, 0u}}) {
    EXPECT_EQ(reread.link(from, to).bandwidth, bus.link(from, to).bandwidth);
    EXPECT_EQ(reread.link(from, to).latency, bus.link(from, to).latency);
  }
  EXPECT_EQ(reread.expected(0, 1, 12345), bus.expected(0, 1, 12345));
}

TEST(BusModel, EachDeviceNodeHasItsOwnFile) {
  TempDir dir;
  FakeNode a("gpu-a"), b("gpu/b");
  BusModel bus({nullptr, &a, nullptr, &b});
  bus.calibrate(dir.path());
  EXPECT_TRUE(fs::exists(dir.path() / "bus" / "gpu-a.txt"));
  EXPECT_TRUE(fs::exists(dir.path() / "bus" / "gpu_b.txt"));
  EXPECT_TRUE(bus.link(0, 1).known);
  EXPECT_FALSE(bus.link(0, 2).known);
  EXPECT_TRUE(bus.link(3, 0).known);
}

TEST(BusModel, DamagedFileIsMeasuredAgainWithAWarning) {
  const std::string damaged[] = {
      "garbage\n",
      "",
      "hetflow-bus 1\nnode other\nhost_to_node 1e9 1e-6\nnode_to_host 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 0 1e-6\nnode_to_host 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 1e9 nan\nnode_to_host 1e9 1e-6\n",
      // Finite, but the transfer times made from them overflow: outside the bounds a machine
      // description's link has.
      "hetflow-bus 1\nnode fake0\nhost_to_node 5e-324 0\nnode_to_host 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 1e9 1e-6\nnode_to_host 1e9 1.7e308\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 999 1e-6\nnode_to_host 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 1.1e18 1e-6\nnode_to_host 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 1e9 1.5\nnode_to_host 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nhost_to_node 1e9 1e-6\nhost_to_node 1e9 1e-6\nnode_to_host 1e9 1e-6\n",
      "hetflow-bus 1\nnode fake0\nsideways 1e9 1e-6\n",
      "hetflow-bus 2\nnode fake0\nhost_to_node 1e9 1e-6\nnode_to_host 1e9 1e-6\n",
  };
  for (const std::string& text : damaged) {
    TempDir dir;
    const fs::path file = dir.path() / "bus" / "fake0.txt";
    write_file(file, text);
    FakeNode node("fake0");
    BusModel bus({nullptr, &node});
    testing::internal::CaptureStderr();
    bus.calibrate(dir.path());
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("hetflow: warning: ignoring damaged bus model " + file.string()), std::string::npos)
        << "for:\n"
        << text << "stderr: " << err;
    EXPECT_GT(node.calls(), 0) << "measured again for:\n" << text;
    EXPECT_TRUE(usable(bus.link(0, 1)));
    // The new measurement replaced the damaged file.
    FakeNode again("fake0");
    BusModel reread({nullptr, &again});
    reread.calibrate(dir.path());
    EXPECT_EQ(again.calls(), 0) << "for:\n" << text;
  }
}

// A bus file that is a FIFO or a link to /dev/zero would block start-up or eat memory: it is
// skipped with a warning saying why, and left where it is.
TEST(BusModel, FileThatIsNotRegularIsSkippedWithAWarning) {
  for (const char* kind : {"a FIFO", "a character device"}) {
    TempDir dir;
    const fs::path file = dir.path() / "bus" / "fake0.txt";
    fs::create_directories(file.parent_path());
    if (std::string(kind) == "a FIFO") {
      ASSERT_EQ(::mkfifo(file.c_str(), 0600), 0);
    } else {
      fs::create_symlink("/dev/zero", file);
    }
    FakeNode node("fake0");
    BusModel bus({nullptr, &node});
    testing::internal::CaptureStderr();
    bus.calibrate(dir.path());
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("hetflow: warning: ignoring damaged bus model " + file.string() + ": it is " + kind),
              std::string::npos)
        << err;
    EXPECT_GT(node.calls(), 0);  // measured instead
    EXPECT_TRUE(usable(bus.link(0, 1)));
    EXPECT_FALSE(fs::is_regular_file(fs::symlink_status(file)));  // not replaced
  }
}

TEST(BusModel, ValidFileWithCommentsAndCrLfIsRead) {
  TempDir dir;
  write_file(dir.path() / "bus" / "fake0.txt",
             "hetflow-bus 1\r\n# measured by hand\r\n\r\nnode fake0\r\nnode_to_host 2e9 3e-6\r\n"
             "  host_to_node\t1e9   1e-6\r\n");
  FakeNode node("fake0");
  BusModel bus({nullptr, &node});
  testing::internal::CaptureStderr();
  bus.calibrate(dir.path());
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(node.calls(), 0);
  EXPECT_EQ(bus.link(0, 1).bandwidth, 1e9);
  EXPECT_EQ(bus.link(0, 1).latency, 1e-6);
  EXPECT_EQ(bus.link(1, 0).bandwidth, 2e9);
  EXPECT_EQ(bus.link(1, 0).latency, 3e-6);
}

// An editor's UTF-8 byte order mark made a hand-edited file "not a hetflow bus model": measured
// again and overwritten.
TEST(BusModel, AByteOrderMarkIsNotDamage) {
  TempDir dir;
  write_file(dir.path() / "bus" / "fake0.txt",
             "\xEF\xBB\xBFhetflow-bus 1\nnode fake0\nnode_to_host 2e9 3e-6\nhost_to_node 1e9 1e-6\n");
  FakeNode node("fake0");
  BusModel bus({nullptr, &node});
  testing::internal::CaptureStderr();
  bus.calibrate(dir.path());
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(node.calls(), 0);
  EXPECT_EQ(bus.link(0, 1).bandwidth, 1e9);
}

TEST(BusModel, FormatAndParseRoundTrip) {
  // Numbers whose shortest text has many digits, within the bounds of a link.
  const BusFileContents contents{"cuda0", {12345678901.5, 7.25e-6, true}, {(0.1 + 0.2) * 1e4, 1.0 / 3, true}};
  BusFileContents parsed;
  ASSERT_EQ(hetflow::detail::parse_bus_text(hetflow::detail::format_bus(contents), "cuda0", parsed), "");
  EXPECT_EQ(parsed.node, "cuda0");
  EXPECT_EQ(parsed.host_to_node.bandwidth, contents.host_to_node.bandwidth);
  EXPECT_EQ(parsed.host_to_node.latency, contents.host_to_node.latency);
  EXPECT_EQ(parsed.node_to_host.bandwidth, contents.node_to_host.bandwidth);
  EXPECT_EQ(parsed.node_to_host.latency, contents.node_to_host.latency);
}

TEST(BusModel, FileNamesAreSafe) {
  EXPECT_EQ(hetflow::detail::bus_file_name("cuda0"), "cuda0.txt");
  EXPECT_EQ(hetflow::detail::bus_file_name("a/b c"), "a_b_c.txt");
  EXPECT_EQ(hetflow::detail::bus_file_name(".."), "_...txt");
  EXPECT_EQ(hetflow::detail::bus_file_name(""), "_.txt");
}

TEST(BusModel, NodeWithoutRoomKeepsTheDefaultsAndSavesNothing) {
  TempDir dir;
  FakeNode node("full0", /*room=*/false);
  BusModel bus({nullptr, &node});
  testing::internal::CaptureStderr();
  bus.calibrate(dir.path());
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cannot measure the transfers to memory node 1 (full0)"), std::string::npos) << err;
  EXPECT_FALSE(bus.link(0, 1).known);
  EXPECT_FALSE(fs::exists(dir.path() / "bus" / "full0.txt"));
}

TEST(BusModel, UnwritableDirectoryKeepsTheMeasurementWithAWarning) {
  TempDir dir;
  const fs::path not_a_directory = dir.path() / "file";
  write_file(not_a_directory, "x");
  FakeNode node("fake0");
  BusModel bus({nullptr, &node});
  testing::internal::CaptureStderr();
  bus.calibrate(not_a_directory);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cannot save the bus model of fake0"), std::string::npos) << err;
  EXPECT_TRUE(usable(bus.link(0, 1)));
}

// Estimates are read on every push while the simulator may set links: no torn numbers, no races.
TEST(BusModel, ReadsAreSafeWhileLinksAreSet) {
  FakeNode a("a");
  BusModel bus({nullptr, &a});
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 20000; ++i) bus.set(0, 1, i % 2 == 0 ? 1e9 : 4e9, i % 2 == 0 ? 1e-6 : 2e-6);
    stop = true;
  });
  int bad = 0;
  while (!stop.load()) {
    const double seconds = bus.expected(0, 1, 4'000'000);
    // Any mix of the two settings: between 1 ms + 1 us and 4 ms + 2 us, or the default.
    const bool in_range = seconds >= 1e-3 + 1e-6 && seconds <= 4e-3 + 2e-6;
    const bool is_default = seconds == BusModel::kDefaultLatency + 4e6 / BusModel::kDefaultBandwidth;
    if (!in_range && !is_default) ++bad;
  }
  writer.join();
  EXPECT_EQ(bad, 0);
}

}  // namespace
