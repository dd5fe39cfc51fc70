#include "data/node_memory.hpp"

#include <chrono>
#include <thread>

#include "data/coherence.hpp"
#include "data/data_context.hpp"
#include "data/handle.hpp"
#include "hetflow/error.hpp"

namespace hetflow::detail {
namespace {

std::string mebibytes(std::size_t bytes) {
  return std::to_string(static_cast<double>(bytes) / (1 << 20)).substr(0, 8) + " MiB";
}

// Long enough for any task holding replicas to finish its work; a node that stays full beyond
// it is reported instead of waited for forever.
constexpr auto kFullNodePatience = std::chrono::seconds(60);

// Whether a copy into another replica of `handle` than the one on `node` (or into the staging
// buffer of chained prefetches, kept by the host replica) is still in flight.
bool copying_elsewhere(HandleImpl& handle, unsigned node) {
  for (unsigned other = 0; other < handle.replicas.size(); ++other) {
    const Replica& replica = handle.replicas[other];
    if (other != node && replica.pending && !replica.pending->done()) return true;
  }
  return false;
}

}  // namespace

NodeMemory::NodeMemory(DataContext& context, unsigned index, std::shared_ptr<ext::MemoryNode> node, std::size_t limit)
    : context_(context),
      index_(index),
      node_(std::move(node)),
      limit_(limit != 0 && node_->capacity() != 0 ? std::min(limit, node_->capacity())
                                                  : (limit != 0 ? limit : node_->capacity())),
      max_buffer_(node_->max_buffer_bytes()) {}

NodeMemory::~NodeMemory() { free_cached(); }

std::size_t NodeMemory::used() const {
  std::lock_guard guard(mutex_);
  return used_;
}

void* NodeMemory::allocate(HandleImpl& handle, std::size_t bytes, bool may_wait) {
  if (limit_ != 0 && bytes > limit_) {
    throw Error("hetflow: data " + handle.display_name() + " (" + mebibytes(bytes) + ") does not fit on memory node " +
                std::to_string(index_) + " (" + node_->name() + "), which holds at most " + mebibytes(limit_));
  }
  const auto give_up = std::chrono::steady_clock::now() + kFullNodePatience;
  for (;;) {
    {
      std::lock_guard guard(mutex_);
      auto cached = cached_.find(bytes);
      if (cached != cached_.end()) {
        void* buffer = cached->second;
        cached_.erase(cached);
        return buffer;
      }
      for (;;) {
        if (limit_ == 0 || used_ + bytes <= limit_) {
          if (void* buffer = node_->allocate(bytes)) {
            used_ += bytes;
            return buffer;
          }
        }
        // No room: cached buffers of other sizes go first, then the least recently used replicas.
        if (!cached_.empty()) {
          free_cached();
          continue;
        }
        if (!evict_one(handle)) break;
      }
    }
    if (!may_wait) return nullptr;
    // In a simulation nothing runs beside this thread: waiting could not make room.
    if (context_.simulating() || std::chrono::steady_clock::now() > give_up) {
      throw Error("hetflow: no room for data '" + handle.name + "' (" + mebibytes(bytes) + ") on memory node " +
                  std::to_string(index_) + " (" + node_->name() + "): the rest is in use by running tasks");
    }
    // Whatever could make room is in use by tasks running now: they release it when they end.
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

bool NodeMemory::evict_one(HandleImpl& requester) {
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    HandleImpl& victim = **it;
    if (&victim == &requester) continue;
    std::unique_lock victim_guard(victim.coherence_mutex, std::try_to_lock);
    if (!victim_guard.owns_lock()) continue;  // in use right now; lock order forbids waiting
    Replica& replica = victim.replicas[index_];
    // A replica still being copied in is left alone (a task is about to use it), except in a
    // simulation, where time cannot pass here to let it land: the copy is dropped, its link
    // time spent for nothing.
    if (replica.pins != 0 || (replica.pending && !replica.pending->done() && !context_.simulating())) continue;
    // Nor is the source of a copy to another device still in flight (a chained prefetch, which
    // reads the owner's buffer), which must not be freed under it.
    if (replica.state == ReplicaState::owner && !context_.simulating() && copying_elsewhere(victim, index_)) continue;
    replica.pending.reset();
    const std::size_t bytes = victim.layout.span_bytes();
    if (replica.state == ReplicaState::owner) {
      copy_home(victim, index_);  // the only valid copy goes home first
      victim.replicas[kHostNode].state = ReplicaState::owner;
    }
    replica.state = ReplicaState::invalid;
    node_->free(replica.ptr, bytes);
    replica.ptr = nullptr;
    replica.listed = false;
    used_ -= bytes;
    lru_.erase(it);
    return true;
  }
  return false;
}

void NodeMemory::touch(HandleImpl& handle) {
  std::lock_guard guard(mutex_);
  Replica& replica = handle.replicas[index_];
  if (replica.listed) {
    lru_.splice(lru_.end(), lru_, replica.lru_position);
  } else {
    replica.lru_position = lru_.insert(lru_.end(), &handle);
    replica.listed = true;
  }
}

void NodeMemory::release(HandleImpl& handle, void* buffer, std::size_t bytes) noexcept {
  std::lock_guard guard(mutex_);
  Replica& replica = handle.replicas[index_];
  if (replica.listed) {
    lru_.erase(replica.lru_position);
    replica.listed = false;
  }
  cached_.emplace(bytes, buffer);
}

void NodeMemory::free_cached() noexcept {
  for (auto& [bytes, buffer] : cached_) {
    node_->free(buffer, bytes);
    used_ -= bytes;
  }
  cached_.clear();
}

}  // namespace hetflow::detail
