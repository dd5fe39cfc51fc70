#pragma once
// A registered buffer: its replicas on the memory nodes (MSI coherence) and what dependency
// tracking needs (the last writer and the readers since).
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/data_context.hpp"
#include "hetflow/data.hpp"
#include "hetflow/ext/memory_node.hpp"
#include "util/spin_lock.hpp"

namespace hetflow::detail {

struct TaskCore;

enum class ReplicaState : unsigned char { invalid, shared, owner };

struct Replica {
  ReplicaState state = ReplicaState::invalid;
  void* ptr = nullptr;                     // the node's buffer (device replicas: allocated on first use)
  unsigned pins = 0;                       // tasks about to use or using it: it must not be evicted
  std::shared_ptr<ext::Transfer> pending;  // the copy that makes it valid, while in flight
  std::uint64_t matched_host_at = 0;       // device replicas: application_waits when host RAM last held the same
  double pending_since = 0;                // when that copy started (engine clock)
  bool listed = false;                     // in its node's LRU list, at lru_position
  std::list<HandleImpl*>::iterator lru_position{};
};

class HandleImpl {
 public:
  HandleImpl(DataContext& context, void* host_ptr, const DataLayout& layout, std::string name);
  ~HandleImpl();
  HandleImpl(const HandleImpl&) = delete;
  HandleImpl& operator=(const HandleImpl&) = delete;

  DataContext* const context;  // the engine that registered it
  const DataLayout layout;
  const std::string name;
  std::atomic<bool> registered{true};
  // Whether its bytes were recorded in the engine's RegisteredMemory (set before it is shared).
  bool memory_recorded = false;
  // Submissions that found it registered and are putting their task in the graph: unregister
  // waits for them, so that its token comes after their tasks (see SubmissionOn).
  std::atomic<unsigned> submitting{0};
  // The application may write host RAM directly once it has waited (Runtime::watch_host_writes):
  // a device replica that matched host RAM before the latest wait is not trusted to still do.
  std::atomic<bool> host_writes_watched{false};
  // The application's buffer is going away (Runtime::discard): nothing is copied into it any more.
  std::atomic<bool> host_gone{false};
  // Set once the engine has let go of it (after unregistration): unregister waits for it.
  std::atomic<bool> let_go{false};
  std::size_t registry_index = 0;  // position in the runtime's registry, guarded by its lock

  // Dependency tracking (guarded by dep_lock). Holds a reference on each task it names.
  SpinLock dep_lock;
  TaskCore* last_writer = nullptr;
  std::vector<TaskCore*> readers;     // whole reads (R) since the last whole write
  std::size_t prune_readers_at = 64;  // readers' size at which finished ones are dropped next
  // Part accesses (PartR, PartW) since the last whole write: they do not wait for each other.
  std::vector<TaskCore*> part_readers;
  std::vector<TaskCore*> part_writers;
  std::size_t prune_part_readers_at = 64;
  std::size_t prune_part_writers_at = 64;
  std::uint64_t accesses = 0;  // declared by tasks and acquisitions so far
  struct HeldAcquisition {
    TaskCore* token = nullptr;
    std::uint64_t holder = 0;  // the thread that acquired (detail::thread_number), 0 for acquire_then's
  };
  std::vector<HeldAcquisition> acquisitions;  // held by the application, most recent last

  // Coherence (guarded by coherence_mutex). Replica 0 is the user's buffer in host RAM.
  std::mutex coherence_mutex;
  std::vector<Replica> replicas;

  [[nodiscard]] void* host_ptr() const noexcept { return replicas[0].ptr; }
  /// The name as messages show it: quoted, or "(unnamed)".
  [[nodiscard]] std::string display_name() const { return name.empty() ? "(unnamed)" : "'" + name + "'"; }
  /// Drops the references on tracked tasks (at unregistration, when nothing is pending).
  void forget_tasks() noexcept;
};

}  // namespace hetflow::detail
