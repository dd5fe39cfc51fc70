// Coherence between device memory nodes: a prefetch of data whose only valid copy is on another
// device. Nodes that chain copies (ChainedCopies) start a device -> host -> device copy that
// nobody waits for, which leaves the source the owner of its copy until a write; nodes that do
// not leave the copy to the task. The devices are host memory here, and their copies run when
// someone waits for them, so that a test sees them in flight.
#include "data/coherence.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "data/data_context.hpp"
#include "data/handle.hpp"
#include "data/node_memory.hpp"

namespace {

using hetflow::AccessMode;
using hetflow::DataLayout;
using hetflow::detail::ChainedCopies;
using hetflow::detail::DataContext;
using hetflow::detail::HandleImpl;
using hetflow::detail::kHostNode;
using hetflow::detail::NodeMemory;
using hetflow::detail::ReplicaState;

// A copy made when it is first waited for; in flight until then.
class DeferredCopy final : public hetflow::ext::Transfer {
 public:
  explicit DeferredCopy(std::function<void()> copy) : copy_(std::move(copy)) {}
  void wait() override {
    if (copy_) std::exchange(copy_, nullptr)();
  }
  bool done() override { return !copy_; }

 private:
  std::function<void()> copy_;
};

class DeviceMemory : public hetflow::ext::MemoryNode {
 public:
  explicit DeviceMemory(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  void* allocate(std::size_t bytes) override { return ::operator new(bytes); }
  void free(void* buffer, std::size_t /*bytes*/) noexcept override { ::operator delete(buffer); }
  std::unique_ptr<hetflow::ext::Transfer> copy_from_host(void* buffer, const void* host, std::size_t bytes) override {
    ++copies_to_device;
    return std::make_unique<DeferredCopy>([=] { std::memcpy(buffer, host, bytes); });
  }
  void copy_to_host(void* host, const void* buffer, std::size_t bytes) override {
    ++copies_to_host;
    std::memcpy(host, buffer, bytes);
  }

  int copies_to_device = 0;
  int copies_to_host = 0;

 private:
  const std::string name_;
};

class ChainingDeviceMemory final : public DeviceMemory, public ChainedCopies {
 public:
  using DeviceMemory::DeviceMemory;
  std::unique_ptr<hetflow::ext::Transfer> start_copy_to_host(void* host, const void* buffer,
                                                             std::size_t bytes) override {
    ++chained_copies_to_host;
    return std::make_unique<DeferredCopy>([=] { std::memcpy(host, buffer, bytes); });
  }
  std::unique_ptr<hetflow::ext::Transfer> copy_from_host_after(
      void* buffer, std::size_t bytes, std::shared_ptr<hetflow::detail::StagedCopy> source) override {
    ++chained_copies_to_device;
    return std::make_unique<DeferredCopy>([=] {
      source->wait();
      std::memcpy(buffer, source->staging(), bytes);
    });
  }

  int chained_copies_to_host = 0;
  int chained_copies_to_device = 0;
};

// Host RAM and devices, as the engine presents them to the data layer.
class Devices final : public DataContext {
 public:
  Devices(bool chaining, std::size_t limit, unsigned count = 2) {
    for (unsigned node = 1; node <= count; ++node) {
      std::shared_ptr<DeviceMemory> device;
      if (chaining) {
        device = std::make_shared<ChainingDeviceMemory>("dev" + std::to_string(node));
      } else {
        device = std::make_shared<DeviceMemory>("dev" + std::to_string(node));
      }
      devices.push_back(device);
      memories.push_back(std::make_unique<NodeMemory>(*this, node, device, limit));
    }
  }
  double now() const noexcept override { return 0; }
  void record_transfer(unsigned /*from*/, unsigned /*to*/, std::size_t /*bytes*/, double /*start*/,
                       double /*end*/) override {}
  std::size_t node_count() const noexcept override { return devices.size() + 1; }
  NodeMemory& node_memory(unsigned node) const noexcept override { return *memories[node - 1]; }
  bool simulating() const noexcept override { return false; }

  ChainingDeviceMemory& chaining(unsigned node) { return dynamic_cast<ChainingDeviceMemory&>(*devices[node - 1]); }

  std::vector<std::shared_ptr<DeviceMemory>> devices;
  std::vector<std::unique_ptr<NodeMemory>> memories;
};

constexpr std::size_t kElements = 64;

// A vector of ints, written (all elements + `offset`) by a task on device `node`.
class Data {
 public:
  Data(Devices& context, unsigned writer_node, int offset)
      : host_(kElements, -1),
        handle_(std::make_unique<HandleImpl>(context, host_.data(), DataLayout::vector(kElements, sizeof(int)), "x")) {
    auto* device = static_cast<int*>(hetflow::detail::prepare_replica(*handle_, writer_node, AccessMode::W));
    std::iota(device, device + kElements, offset);
  }
  ~Data() { hetflow::detail::drop_device_replicas(*handle_); }
  Data(const Data&) = delete;
  Data& operator=(const Data&) = delete;

  HandleImpl& handle() { return *handle_; }
  ReplicaState state(unsigned node) const { return handle_->replicas[node].state; }
  const std::vector<int>& host() const { return host_; }

  // What a task reading (or writing) the data on `node` sees.
  std::vector<int> use(unsigned node, AccessMode mode) {
    hetflow::detail::fetch(*handle_, node, hetflow::reads(mode));
    const auto* data = static_cast<const int*>(hetflow::detail::complete_fetch(*handle_, node, mode));
    std::vector<int> seen(data, data + kElements);
    hetflow::detail::unpin(*handle_, node);
    return seen;
  }

 private:
  std::vector<int> host_;
  std::unique_ptr<HandleImpl> handle_;
};

std::vector<int> expected(int offset) {
  std::vector<int> values(kElements);
  std::iota(values.begin(), values.end(), offset);
  return values;
}

TEST(ChainedPrefetch, CopiesTheOwnersVersionWithoutWaitingAndKeepsItsOwner) {
  Devices context(/*chaining=*/true, 0);
  Data x(context, 1, 100);
  ASSERT_EQ(x.state(kHostNode), ReplicaState::invalid);

  hetflow::detail::prefetch(x.handle(), 2);
  EXPECT_EQ(context.chaining(1).chained_copies_to_host, 1);
  EXPECT_EQ(context.chaining(2).chained_copies_to_device, 1);
  ASSERT_TRUE(x.handle().replicas[2].pending);
  EXPECT_FALSE(x.handle().replicas[2].pending->done());  // started, nobody waited
  // Reads replicate: the writer's copy stays valid, and the one responsible for the data.
  EXPECT_EQ(x.state(1), ReplicaState::owner);
  EXPECT_EQ(x.state(2), ReplicaState::shared);
  EXPECT_EQ(x.state(kHostNode), ReplicaState::invalid);  // the user's buffer was not touched
  EXPECT_EQ(x.host(), std::vector<int>(kElements, -1));

  EXPECT_EQ(x.use(2, AccessMode::R), expected(100));
  EXPECT_EQ(x.use(1, AccessMode::R), expected(100));
  EXPECT_EQ(context.chaining(1).copies_to_host + context.chaining(2).copies_to_host, 0);
  EXPECT_EQ(x.use(kHostNode, AccessMode::R), expected(100));
  EXPECT_EQ(context.chaining(1).copies_to_host, 1);  // home from the owner
}

TEST(ChainedPrefetch, NotStartedTwice) {
  Devices context(/*chaining=*/true, 0);
  Data x(context, 1, 7);
  hetflow::detail::prefetch(x.handle(), 2);
  hetflow::detail::prefetch(x.handle(), 2);
  EXPECT_EQ(context.chaining(2).chained_copies_to_device, 1);
  hetflow::detail::prefetch(x.handle(), 1);  // valid there already
  EXPECT_EQ(context.chaining(1).chained_copies_to_device, 0);
  EXPECT_EQ(x.use(2, AccessMode::R), expected(7));
}

TEST(ChainedPrefetch, OneCopyToHostServesEveryDevice) {
  Devices context(/*chaining=*/true, 0, 3);
  Data x(context, 1, 40);
  hetflow::detail::prefetch(x.handle(), 2);
  hetflow::detail::prefetch(x.handle(), 3);
  EXPECT_EQ(context.chaining(1).chained_copies_to_host, 1);
  EXPECT_EQ(context.chaining(2).chained_copies_to_device, 1);
  EXPECT_EQ(context.chaining(3).chained_copies_to_device, 1);
  EXPECT_EQ(x.use(3, AccessMode::R), expected(40));
  EXPECT_EQ(x.use(2, AccessMode::R), expected(40));

  // A new version is copied anew.
  std::vector<int> zeros(kElements, 0);
  auto* data = static_cast<int*>(hetflow::detail::prepare_replica(x.handle(), 1, AccessMode::W));
  std::copy(zeros.begin(), zeros.end(), data);
  hetflow::detail::prefetch(x.handle(), 2);
  EXPECT_EQ(context.chaining(1).chained_copies_to_host, 2);
  EXPECT_EQ(x.use(2, AccessMode::R), zeros);
}

TEST(ChainedPrefetch, AWriteAfterItLeavesTheWritersReplicaTheOnlyValidOne) {
  Devices context(/*chaining=*/true, 0);
  Data x(context, 1, 3);
  hetflow::detail::prefetch(x.handle(), 2);
  EXPECT_EQ(x.use(2, AccessMode::RW), expected(3));
  EXPECT_EQ(x.state(2), ReplicaState::owner);
  EXPECT_EQ(x.state(1), ReplicaState::invalid);
  EXPECT_EQ(x.state(kHostNode), ReplicaState::invalid);
  EXPECT_FALSE(x.handle().replicas[2].pending);
}

TEST(ChainedPrefetch, AWriteOnTheSourceWaitsForTheCopyItFeeds) {
  Devices context(/*chaining=*/true, 0);
  Data x(context, 1, 50);
  hetflow::detail::prefetch(x.handle(), 2);
  hetflow::detail::fetch(x.handle(), 1, true);
  auto* data = static_cast<int*>(hetflow::detail::complete_fetch(x.handle(), 1, AccessMode::RW));
  EXPECT_FALSE(x.handle().replicas[2].pending);  // landed before the writer may change the source
  std::fill(data, data + kElements, 0);
  hetflow::detail::unpin(x.handle(), 1);
  EXPECT_EQ(x.state(2), ReplicaState::invalid);
  EXPECT_EQ(x.use(2, AccessMode::R), std::vector<int>(kElements, 0));
}

TEST(ChainedPrefetch, TheSourceOfACopyInFlightIsNotEvicted) {
  // Room for one replica per device: another handle's prefetch to device 1 would evict x there.
  Devices context(/*chaining=*/true, kElements * sizeof(int));
  Data x(context, 1, 20);
  hetflow::detail::prefetch(x.handle(), 2);
  std::vector<int> other_host(kElements, 5);
  HandleImpl other(context, other_host.data(), DataLayout::vector(kElements, sizeof(int)), "other");

  hetflow::detail::prefetch(other, 1);  // gives up: x's replica there feeds the copy to device 2
  EXPECT_EQ(other.replicas[1].ptr, nullptr);
  EXPECT_EQ(x.state(1), ReplicaState::owner);

  EXPECT_EQ(x.use(2, AccessMode::R), expected(20));  // the copy lands
  hetflow::detail::prefetch(other, 1);               // now x's replica may go (home first)
  EXPECT_NE(other.replicas[1].ptr, nullptr);
  EXPECT_EQ(x.state(1), ReplicaState::invalid);
  EXPECT_EQ(x.host(), expected(20));
  EXPECT_EQ(x.use(kHostNode, AccessMode::R), expected(20));
  hetflow::detail::drop_device_replicas(other);
}

TEST(ChainedPrefetch, NodesThatCannotChainLeaveTheCopyToTheTask) {
  Devices context(/*chaining=*/false, 0);
  Data x(context, 1, 9);
  hetflow::detail::prefetch(x.handle(), 2);
  EXPECT_EQ(x.state(2), ReplicaState::invalid);
  EXPECT_FALSE(x.handle().replicas[2].pending);
  EXPECT_EQ(context.devices[0]->copies_to_host, 0);
  EXPECT_EQ(x.state(1), ReplicaState::owner);

  EXPECT_EQ(x.use(2, AccessMode::R), expected(9));  // through host RAM, when the task starts
  EXPECT_EQ(context.devices[0]->copies_to_host, 1);
  EXPECT_EQ(x.host(), expected(9));
}

}  // namespace
