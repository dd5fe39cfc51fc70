// Ranks as threads of one process: transfers matched in order per (source, destination, tag)
// and copied, completions and barriers run on one thread of the group, as a real transport's
// progress thread would run them.
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/mpi.hpp"

namespace hetflow::mpi {
namespace {

class Fabric {
 public:
  explicit Fabric(int ranks) : ranks_(ranks), thread_([this] { run(); }) {}
  ~Fabric() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;

  [[nodiscard]] int ranks() const noexcept { return ranks_; }

  void send(int source, int destination, int tag, const void* data, std::size_t bytes, std::function<void()> done) {
    std::lock_guard lock(mutex_);
    auto& receives = receives_[{source, destination, tag}];
    if (receives.empty()) {
      sends_[{source, destination, tag}].push_back({data, bytes, std::move(done)});
      return;
    }
    Receive receive = std::move(receives.front());
    receives.pop_front();
    deliver(data, bytes, std::move(done), receive);
  }

  void receive(int source, int destination, int tag, void* data, std::size_t bytes, std::function<void()> done) {
    std::lock_guard lock(mutex_);
    auto& sends = sends_[{source, destination, tag}];
    Receive receive{data, bytes, std::move(done)};
    if (sends.empty()) {
      receives_[{source, destination, tag}].push_back(std::move(receive));
      return;
    }
    Send send = std::move(sends.front());
    sends.pop_front();
    deliver(send.data, send.bytes, std::move(send.done), receive);
  }

  // Messages are copied when they meet, so a receive not met yet can simply be forgotten. Sends
  // stay: a peer may still take one it was about to ask for (the answer of the submission check).
  void cancel_pending(int rank, std::function<void()> done) {
    std::lock_guard lock(mutex_);
    std::erase_if(receives_, [rank](const auto& waiting) { return std::get<1>(waiting.first) == rank; });
    completions_.push_back(std::move(done));
    wake_.notify_one();
  }

  void barrier(std::function<void()> done) {
    std::lock_guard lock(mutex_);
    at_barrier_.push_back(std::move(done));
    if (static_cast<int>(at_barrier_.size()) < ranks_) return;
    for (auto& waiting : at_barrier_) completions_.push_back(std::move(waiting));
    at_barrier_.clear();
    wake_.notify_one();
  }

 private:
  using Key = std::tuple<int, int, int>;  // source, destination, tag
  struct Send {
    const void* data;
    std::size_t bytes;
    std::function<void()> done;
  };
  struct Receive {
    void* data;
    std::size_t bytes;
    std::function<void()> done;
  };

  // Called with the lock held.
  void deliver(const void* data, std::size_t bytes, std::function<void()> sent, Receive& receive) {
    if (bytes != receive.bytes) {
      throw Error("hetflow::mpi loopback: a message of " + std::to_string(bytes) + " bytes met a receive of " +
                  std::to_string(receive.bytes));
    }
    if (bytes > 0) std::memcpy(receive.data, data, bytes);
    completions_.push_back(std::move(sent));
    completions_.push_back(std::move(receive.done));
    wake_.notify_one();
  }

  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || !completions_.empty(); });
      if (completions_.empty()) return;  // stopping, and nothing left to tell
      std::deque<std::function<void()>> batch;
      batch.swap(completions_);
      lock.unlock();
      for (auto& done : batch) done();
      lock.lock();
    }
  }

  const int ranks_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<Key, std::deque<Send>> sends_;
  std::map<Key, std::deque<Receive>> receives_;
  std::vector<std::function<void()>> at_barrier_;
  std::deque<std::function<void()>> completions_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

class LoopbackTransport final : public Transport {
 public:
  LoopbackTransport(std::shared_ptr<Fabric> fabric, int rank) : fabric_(std::move(fabric)), rank_(rank) {}

  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] int size() const override { return fabric_->ranks(); }
  [[nodiscard]] int max_tag() const override { return (1 << 30) - 1; }
  void send(int peer, int tag, const void* data, std::size_t bytes, std::function<void()> done) override {
    fabric_->send(rank_, peer, tag, data, bytes, std::move(done));
  }
  void receive(int peer, int tag, void* data, std::size_t bytes, std::function<void()> done) override {
    fabric_->receive(peer, rank_, tag, data, bytes, std::move(done));
  }
  void barrier(std::function<void()> done) override { fabric_->barrier(std::move(done)); }
  bool cancel_pending(std::function<void()> done) override {
    fabric_->cancel_pending(rank_, std::move(done));
    return true;
  }

 private:
  std::shared_ptr<Fabric> fabric_;
  int rank_;
};

}  // namespace

std::vector<std::shared_ptr<Transport>> loopback(int ranks) {
  if (ranks < 1)
    throw InvalidArgument("hetflow::mpi::loopback: ranks must be at least 1, not " + std::to_string(ranks));
  auto fabric = std::make_shared<Fabric>(ranks);
  std::vector<std::shared_ptr<Transport>> transports;
  for (int rank = 0; rank < ranks; ++rank) transports.push_back(std::make_shared<LoopbackTransport>(fabric, rank));
  return transports;
}

}  // namespace hetflow::mpi
