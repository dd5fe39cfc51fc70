// The owner-computes protocol. Every rank replays the same submissions, so every rank keeps the
// same table of which ranks hold the latest version of each piece of data, and agrees without
// messages on where each task runs and which transfers it needs. A transfer is a pair of
// asynchronous acquisitions: on the holder, a read whose data go out as a send; on the rank that
// runs the task, a write that a receive fills. Both are ordered with the local tasks by the
// engine, and released when the transport says the message is done.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/mpi.hpp"

namespace hetflow::mpi {

namespace {

struct Entry {
  int owner = 0;
  int tag = 0;
  std::size_t bytes = 0;
  DataHandle local;
  std::vector<char> valid;               // valid[r]: rank r holds the latest version
  std::unique_ptr<std::byte[]> storage;  // a copy's home on a rank that gave no buffer

  /// After a write on `rank`, or a flush: its copy is the only valid one.
  void only_on(int rank) {
    std::fill(valid.begin(), valid.end(), 0);
    valid[static_cast<std::size_t>(rank)] = 1;
  }
};

// A transfer not finished yet, for the watchdog (described only when it speaks).
struct Pending {
  const Entry* entry = nullptr;
  int peer = 0;
  bool sending = false;
  bool posted = false;  // given to the transport (else waiting for the local tasks before it)
};

// The longest error text a transfer carries (both sides cut it there, so that they agree).
constexpr std::size_t kLongestError = std::size_t{1} << 20;

std::string rank_text(int rank) { return "rank " + std::to_string(rank); }

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception of unknown type";
  }
}

}  // namespace

struct Context::Impl {
  Impl(Runtime& rt, std::shared_ptr<Transport> link) : runtime(rt), transport(std::move(link)) {
    if (!transport) throw InvalidArgument("hetflow::mpi::Context: no transport");
    rank = transport->rank();
    size = transport->size();
    sent.resize(static_cast<std::size_t>(size));
    const char* check_text = std::getenv("HETFLOW_MPI_CHECK");
    check = check_text != nullptr && std::string_view(check_text) == "1";
    if (const char* watchdog_text = std::getenv("HETFLOW_MPI_WATCHDOG")) {
      char* end = nullptr;
      const double seconds = std::strtod(watchdog_text, &end);
      if (end == watchdog_text || *end != '\0' || !(seconds >= 0)) {
        throw InvalidArgument(std::string("HETFLOW_MPI_WATCHDOG='") + watchdog_text +
                              "': give the seconds without progress after which pending transfers are shown "
                              "(0: never)");
      }
      watchdog_seconds = seconds;
    }
  }

  void check_rank(int candidate, const std::string& what) const {
    if (candidate < 0 || candidate >= size) {
      throw InvalidArgument("hetflow::mpi::Context::" + what + " " + std::to_string(candidate) +
                            " is not a rank (there are " + std::to_string(size) + ")");
    }
  }

  /// The tag of hetflow's own messages (the submission check): the transport's largest.
  [[nodiscard]] int control_tag() const { return transport->max_tag(); }

  void record_submission(const Codelet& codelet, const TaskOptions& options, int executor,
                         const std::vector<DataAccess>& data, const std::vector<Entry*>& used) {
    std::uint64_t hash = 1469598103934665603ULL;  // FNV-1a
    const auto mix = [&hash](std::uint64_t value) {
      for (int byte = 0; byte < 8; ++byte) {
        hash ^= (value >> (8 * byte)) & 0xffU;
        hash *= 1099511628211ULL;
      }
    };
    for (char c : codelet.name) mix(static_cast<unsigned char>(c));
    mix(static_cast<std::uint64_t>(executor));
    mix(static_cast<std::uint64_t>(static_cast<std::int64_t>(options.priority)));
    std::string described = "task " + std::to_string(submissions.size()) + " ('" +
                            (options.name.empty() ? codelet.name : options.name) + "' on " + rank_text(executor);
    for (std::size_t i = 0; i < data.size(); ++i) {
      mix(static_cast<std::uint64_t>(used[i]->tag));
      mix(static_cast<std::uint64_t>(data[i].mode));
      described += ", " + std::string(access_mode_name(data[i].mode)) + " tag " + std::to_string(used[i]->tag);
    }
    submissions.push_back(hash);
    descriptions.push_back(described + ")");
  }

  // Rank 0 gathers every rank's hashes since the last check and answers with the index of the
  // first submission that differs (or -1); every rank returns that answer.
  std::int64_t compare_submissions() {
    struct Exchange {
      std::mutex mutex;
      std::condition_variable changed;
      std::vector<std::uint64_t> mine;
      std::vector<std::uint64_t> counts;
      std::vector<std::vector<std::uint64_t>> theirs;
      int waiting = 0;
      std::int64_t first_difference = -1;
      bool answered = false;
    };
    auto exchange = std::make_shared<Exchange>();
    exchange->mine.assign(submissions.begin() + static_cast<std::ptrdiff_t>(checked), submissions.end());
    const int tag = control_tag();
    const auto answer = [exchange](std::int64_t index) {
      std::lock_guard lock(exchange->mutex);
      exchange->first_difference = index;
      exchange->answered = true;
      exchange->changed.notify_all();
    };
    if (rank != 0) {
      exchange->counts.assign(1, exchange->mine.size());
      // The buffers live in `exchange` until the sends are done.
      transport->send(0, tag, exchange->counts.data(), sizeof(std::uint64_t), [exchange] {});
      transport->send(0, tag, exchange->mine.data(), exchange->mine.size() * sizeof(std::uint64_t), [exchange] {});
      auto index = std::make_shared<std::int64_t>(-1);
      transport->receive(0, tag, index.get(), sizeof(std::int64_t), [index, answer] { answer(*index); });
    } else {
      exchange->counts.assign(static_cast<std::size_t>(size), 0);
      exchange->theirs.resize(static_cast<std::size_t>(size));
      exchange->waiting = size - 1;
      const auto decide = [this, exchange, tag, answer] {
        const std::vector<std::uint64_t>& reference = exchange->mine;
        std::int64_t first = -1;
        for (const auto& other : exchange->theirs) {
          if (&other == &exchange->theirs[0]) continue;
          const std::size_t common = std::min(reference.size(), other.size());
          std::size_t i = 0;
          while (i < common && reference[i] == other[i]) ++i;
          if (i < common || reference.size() != other.size()) {
            first = first < 0 ? static_cast<std::int64_t>(i) : std::min(first, static_cast<std::int64_t>(i));
          }
        }
        auto index = std::make_shared<std::int64_t>(first);
        for (int peer = 1; peer < size; ++peer) transport->send(peer, tag, index.get(), sizeof *index, [index] {});
        answer(first);
      };
      if (size == 1) decide();
      for (int peer = 1; peer < size; ++peer) {
        const auto p = static_cast<std::size_t>(peer);
        transport->receive(peer, tag, &exchange->counts[p], sizeof(std::uint64_t),
                           [this, exchange, peer, p, tag, decide] {
                             exchange->theirs[p].resize(exchange->counts[p]);
                             transport->receive(peer, tag, exchange->theirs[p].data(),
                                                exchange->theirs[p].size() * sizeof(std::uint64_t), [exchange, decide] {
                                                  bool last = false;
                                                  {
                                                    std::lock_guard lock(exchange->mutex);
                                                    last = --exchange->waiting == 0;
                                                  }
                                                  if (last) decide();
                                                });
                           });
      }
    }
    std::unique_lock lock(exchange->mutex);
    exchange->changed.wait(lock, [&exchange] { return exchange->answered; });
    checked = submissions.size();
    return exchange->first_difference < 0
               ? -1
               : exchange->first_difference + static_cast<std::int64_t>(checked - exchange->mine.size());
  }

  // Every transfer is noted until it ends, so that the watchdog can say what is left.
  std::uint64_t note_pending(const Entry& entry, int peer, bool sending) {
    std::lock_guard lock(transfer_mutex);
    ++in_flight;
    pending.emplace(++last_transfer_id, Pending{&entry, peer, sending, false});
    return last_transfer_id;
  }
  void note_posted(std::uint64_t id) {
    std::lock_guard lock(transfer_mutex);
    if (auto it = pending.find(id); it != pending.end()) it->second.posted = true;
  }
  static std::string describe_pending(const Pending& transfer) {
    const Entry& entry = *transfer.entry;
    return std::string(transfer.sending ? "send '" : "receive '") + entry.local.name() + "' (tag " +
           std::to_string(entry.tag) + ", " + std::to_string(entry.bytes) + " bytes) " +
           (transfer.sending ? "to " : "from ") + rank_text(transfer.peer) + ": " +
           (!transfer.posted   ? "waiting for the tasks before it here"
            : transfer.sending ? "posted, not yet matched by the receiver"
                               : "posted, nothing received yet");
  }

  Entry& entry_of(const DataHandle& handle, const char* caller) {
    auto it = entries.find(handle.impl());
    if (it == entries.end()) {
      throw InvalidArgument(std::string("hetflow::mpi::Context::") + caller + ": data " +
                            (handle ? "'" + handle.name() + "' " : std::string("(empty handle) ")) +
                            "was not registered with this context (Context::register_data)");
    }
    return *it->second;
  }

  [[nodiscard]] int holder_of(const Entry& entry) const {
    if (entry.valid[static_cast<std::size_t>(entry.owner)]) return entry.owner;
    const auto first = std::find(entry.valid.begin(), entry.valid.end(), 1);
    return static_cast<int>(first - entry.valid.begin());
  }

  void finished_transfer(std::uint64_t id) {
    std::lock_guard lock(transfer_mutex);
    pending.erase(id);
    last_progress = std::chrono::steady_clock::now();
    if (--in_flight == 0) transfers_done.notify_all();
  }

  /// Posts the transfer that gives `rank` the latest version of `entry`, unless it has it.
  void bring(Entry& entry, int destination) {
    if (entry.valid[static_cast<std::size_t>(destination)]) return;
    const int source = holder_of(entry);
    if (rank == source) post_send(entry, destination);
    if (rank == destination) post_receive(entry, source);
    entry.valid[static_cast<std::size_t>(destination)] = 1;
  }

  void count_sent(int destination, std::size_t bytes) {
    std::lock_guard lock(transfer_mutex);
    auto& peer = sent[static_cast<std::size_t>(destination)];
    ++peer.messages;
    peer.bytes += bytes;
  }

  // A transfer is a header (the length of an error text, 0 when the data are good), the text if
  // any, then the data, all under the data's tag: a reader elsewhere of data whose writer failed
  // fails too, instead of running on what the failed task left.
  struct Transfer {
    explicit Transfer(Acquisition held) : acquisition(std::move(held)) {}
    Acquisition acquisition;
    std::uint64_t error_length = 0;
    std::string error;
    int messages_left = 0;
  };

  void post_send(Entry& entry, int destination) {
    const std::uint64_t id = note_pending(entry, destination, true);
    runtime.acquire_then(entry.local, AccessMode::R, [this, &entry, destination, id](Acquisition acquisition) {
      note_posted(id);
      auto transfer = std::make_shared<Transfer>(std::move(acquisition));
      if (const std::exception_ptr& failure = transfer->acquisition.failure()) {
        transfer->error =
            "the task that wrote '" + entry.local.name() + "' on " + rank_text(rank) + " failed: " + describe(failure);
        transfer->error.resize(std::min<std::size_t>(transfer->error.size(), kLongestError));
        transfer->error_length = transfer->error.size();
      }
      transfer->messages_left = transfer->error.empty() ? 2 : 3;
      const auto sent_one = [this, transfer, id] {
        {
          std::lock_guard lock(transfer_mutex);
          if (--transfer->messages_left > 0) return;
        }
        transfer->acquisition.release();
        finished_transfer(id);
      };
      transport->send(destination, entry.tag, &transfer->error_length, sizeof transfer->error_length, sent_one);
      count_sent(destination, sizeof transfer->error_length);
      if (!transfer->error.empty()) {
        transport->send(destination, entry.tag, transfer->error.data(), transfer->error.size(), sent_one);
        count_sent(destination, transfer->error.size());
      }
      transport->send(destination, entry.tag, transfer->acquisition.data(), entry.bytes, sent_one);
      count_sent(destination, entry.bytes);
    });
  }

  void post_receive(Entry& entry, int source) {
    const std::uint64_t id = note_pending(entry, source, false);
    runtime.acquire_then(entry.local, AccessMode::W, [this, &entry, source, id](Acquisition acquisition) {
      note_posted(id);
      auto transfer = std::make_shared<Transfer>(std::move(acquisition));
      const auto received = [this, transfer, &entry, source, id] {
        if (transfer->error.empty()) {
          transfer->acquisition.release();
        } else {
          transfer->acquisition.release_failed(std::make_exception_ptr(
              Error("hetflow::mpi: '" + entry.local.name() + "' from " + rank_text(source) + ": " + transfer->error)));
        }
        finished_transfer(id);
      };
      const auto receive_data = [this, transfer, &entry, source, received] {
        transport->receive(source, entry.tag, transfer->acquisition.data(), entry.bytes, received);
      };
      transport->receive(source, entry.tag, &transfer->error_length, sizeof transfer->error_length,
                         [this, transfer, &entry, source, receive_data] {
                           if (transfer->error_length == 0) {
                             receive_data();
                             return;
                           }
                           transfer->error.resize(std::min<std::uint64_t>(transfer->error_length, kLongestError));
                           transport->receive(source, entry.tag, transfer->error.data(), transfer->error.size(),
                                              receive_data);
                         });
    });
  }

  Runtime& runtime;
  std::shared_ptr<Transport> transport;
  int rank = 0;
  int size = 1;
  std::mutex mutex;  // the protocol's state: entries, tags
  std::unordered_map<const detail::HandleImpl*, std::unique_ptr<Entry>> entries;
  std::set<int> tags;
  int next_allocated_tag = 0;
  std::mutex transfer_mutex;  // in_flight, sent, pending, last_progress
  std::condition_variable transfers_done;
  std::size_t in_flight = 0;
  std::vector<PeerStats> sent;
  std::map<std::uint64_t, Pending> pending;
  std::uint64_t last_transfer_id = 0;
  std::chrono::steady_clock::time_point last_progress = std::chrono::steady_clock::now();
  double watchdog_seconds = 60;
  bool check = false;  // HETFLOW_MPI_CHECK=1
  bool diverged = false;
  std::vector<std::uint64_t> submissions;  // a hash per task, with the check
  std::vector<std::string> descriptions;
  std::size_t checked = 0;  // submissions compared at the last wait_all
};

Context::Context(Runtime& runtime, std::shared_ptr<Transport> transport)
    : impl_(std::make_unique<Impl>(runtime, std::move(transport))) {}

Context::~Context() {
  if (const char* stats = std::getenv("HETFLOW_MPI_STATS"); stats != nullptr && std::string_view(stats) == "1") {
    std::string text;
    for (std::size_t peer = 0; peer < impl_->sent.size(); ++peer) {
      if (impl_->sent[peer].messages == 0) continue;
      text += "hetflow::mpi: " + rank_text(impl_->rank) + " sent " + std::to_string(impl_->sent[peer].messages) +
              " messages, " + std::to_string(impl_->sent[peer].bytes) + " bytes to " +
              rank_text(static_cast<int>(peer)) + "\n";
    }
    if (text.empty()) text = "hetflow::mpi: " + rank_text(impl_->rank) + " sent nothing\n";
    std::fputs(text.c_str(), stderr);
  }
  // Transfers hold references to the entries: let them end first. After the ranks diverged some
  // never will: then the state is left to them rather than freed under them.
  std::unique_lock lock(impl_->transfer_mutex);
  if (impl_->diverged) {
    if (!impl_->transfers_done.wait_for(lock, std::chrono::seconds(1), [this] { return impl_->in_flight == 0; })) {
      lock.release()->unlock();
      static_cast<void>(impl_.release());
    }
    return;
  }
  impl_->transfers_done.wait(lock, [this] { return impl_->in_flight == 0; });
}

int Context::rank() const noexcept { return impl_->rank; }
int Context::size() const noexcept { return impl_->size; }

DataHandle Context::register_data(void* ptr, const DataLayout& layout, int owner, int tag, std::string name) {
  Impl& impl = *impl_;
  impl.check_rank(owner, "register_data: owner");
  if (tag < 0 || tag >= impl.control_tag()) {
    throw InvalidArgument("hetflow::mpi::Context::register_data: tag " + std::to_string(tag) + " is outside 0.." +
                          std::to_string(impl.control_tag() - 1) + " (the transport's largest tag, " +
                          std::to_string(impl.control_tag()) + ", is hetflow's own)");
  }
  if (layout.span_bytes() != layout.payload_bytes()) {
    throw InvalidArgument(
        "hetflow::mpi::Context::register_data: the layout has gaps (a matrix with ld > nx, or "
        "a strided block); distributed data must be contiguous");
  }
  if (ptr == nullptr && owner == impl.rank) {
    throw InvalidArgument("hetflow::mpi::Context::register_data: the owner (" + rank_text(owner) +
                          ", this one) must give the data's buffer");
  }
  std::lock_guard lock(impl.mutex);
  if (!impl.tags.insert(tag).second) {
    throw InvalidArgument("hetflow::mpi::Context::register_data: tag " + std::to_string(tag) +
                          " is already used by other data; each piece of data needs its own");
  }
  auto entry = std::make_unique<Entry>();
  entry->owner = owner;
  entry->tag = tag;
  entry->bytes = layout.payload_bytes();
  entry->valid.resize(static_cast<std::size_t>(impl.size));
  entry->only_on(owner);
  if (ptr == nullptr) {
    entry->storage = std::make_unique<std::byte[]>(std::max<std::size_t>(entry->bytes, 1));
    ptr = entry->storage.get();
  }
  entry->local = impl.runtime.register_data(ptr, layout, std::move(name));
  DataHandle handle = entry->local;
  impl.entries.emplace(handle.impl(), std::move(entry));
  return handle;
}

int Context::allocate_tags(int count) {
  Impl& impl = *impl_;
  if (count < 1) throw InvalidArgument("hetflow::mpi::Context::allocate_tags: count must be at least 1");
  std::lock_guard lock(impl.mutex);
  // The next free run after the last one handed out; tags given to register_data are skipped.
  int first = impl.next_allocated_tag;
  for (;;) {
    if (first > impl.control_tag() - count) {
      throw InvalidArgument("hetflow::mpi::Context::allocate_tags: no " + std::to_string(count) +
                            " free consecutive tags below " + std::to_string(impl.control_tag()));
    }
    const auto clash = impl.tags.lower_bound(first);
    if (clash == impl.tags.end() || *clash >= first + count) break;
    first = *clash + 1;
  }
  impl.next_allocated_tag = first + count;
  return first;
}

Runtime& Context::runtime() const noexcept { return impl_->runtime; }

Future<void> Context::insert(const Codelet& codelet, const TaskOptions& options, Placement placement) {
  TaskOptions local;
  std::vector<DataAccess> data;
  if (!plan(codelet, options, placement, local, data)) return Future<void>{};
  return impl_->runtime.insert(codelet, local);
}

bool Context::plan(const Codelet& codelet, const TaskOptions& options, Placement placement, TaskOptions& local,
                   std::vector<DataAccess>& data) {
  Impl& impl = *impl_;
  // The task's accesses, each handle once (modes merged), in the order given.
  const auto add = [&data](const DataAccess& access) {
    auto same = std::find_if(data.begin(), data.end(), [&](const DataAccess& d) { return d.handle == access.handle; });
    if (same == data.end()) {
      data.push_back(access);
    } else {
      same->mode = static_cast<AccessMode>(static_cast<unsigned>(same->mode) | static_cast<unsigned>(access.mode));
    }
  };
  for (const DataAccess& access : options.data) add(access);
  for (const DataAccess& access : options.data_list) add(access);

  std::lock_guard lock(impl.mutex);
  std::vector<Entry*> used;
  for (const DataAccess& access : data) used.push_back(&impl.entry_of(access.handle, "insert"));

  int executor = -1;
  if (placement.rank >= 0) {
    impl.check_rank(placement.rank, "insert: Placement::rank");
    executor = placement.rank;
  } else if (placement.owner_of != nullptr) {
    executor = impl.entry_of(*placement.owner_of, "insert").owner;
  } else {
    for (std::size_t i = 0; i < data.size() && executor < 0; ++i) {
      if (writes(data[i].mode)) executor = used[i]->owner;
    }
    if (executor < 0) executor = used.empty() ? 0 : used.front()->owner;
  }

  for (std::size_t i = 0; i < data.size(); ++i) {
    if (reads(data[i].mode)) impl.bring(*used[i], executor);
  }
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (writes(data[i].mode)) used[i]->only_on(executor);
  }
  if (impl.check) impl.record_submission(codelet, options, executor, data, used);
  if (executor != impl.rank) return false;

  local.data_list = data;
  for (const FutureBase& before : options.after) {
    if (before.valid()) local.after.push_back(before);  // another rank's task: ordered through data
  }
  local.priority = options.priority;
  local.name = options.name;
  local.where = options.where;
  local.worker = options.worker;
  return true;
}

int Context::owner(const DataHandle& handle) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->entry_of(handle, "owner").owner;
}

void Context::get_on(const DataHandle& handle, int rank) {
  Impl& impl = *impl_;
  impl.check_rank(rank, "get_on:");
  std::lock_guard lock(impl.mutex);
  impl.bring(impl.entry_of(handle, "get_on"), rank);
}

void Context::migrate(const DataHandle& handle, int rank) {
  Impl& impl = *impl_;
  impl.check_rank(rank, "migrate:");
  std::lock_guard lock(impl.mutex);
  Entry& entry = impl.entry_of(handle, "migrate");
  impl.bring(entry, rank);
  entry.owner = rank;
}

int Context::holder(const DataHandle& handle) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->holder_of(impl_->entry_of(handle, "holder"));
}

void Context::flush(const DataHandle& handle) {
  std::lock_guard lock(impl_->mutex);
  Entry& entry = impl_->entry_of(handle, "flush");
  entry.only_on(impl_->holder_of(entry));
}

void Context::flush_all() {
  std::lock_guard lock(impl_->mutex);
  for (auto& [key, entry] : impl_->entries) entry->only_on(impl_->holder_of(*entry));
}

void Context::wait_all() {
  Impl& impl = *impl_;
  if (impl.check) {
    const std::int64_t first = impl.compare_submissions();
    if (first >= 0) {
      impl.diverged = true;
      const auto index = static_cast<std::size_t>(first);
      throw Error(
          "hetflow::mpi: the ranks did not submit the same work (HETFLOW_MPI_CHECK): the first that differs "
          "is " +
          (index < impl.descriptions.size() ? impl.descriptions[index] + " here"
                                            : "task " + std::to_string(index) + ", which this rank did not submit"));
    }
  }
  // Tasks and transfers, in slices, so that the watchdog can speak when nothing moves.
  bool reported = false;
  for (;;) {
    const auto slice = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    const bool tasks_done = impl.runtime.wait_all_until(slice);
    std::unique_lock lock(impl.transfer_mutex);
    if (tasks_done) {
      impl.transfers_done.wait_until(lock, slice, [&impl] { return impl.in_flight == 0; });
      if (impl.in_flight == 0 && impl.runtime.unfinished_tasks() == 0) break;
    }
    const std::chrono::duration<double> still = std::chrono::steady_clock::now() - impl.last_progress;
    if (impl.watchdog_seconds > 0 && still.count() > impl.watchdog_seconds && !reported && !impl.pending.empty()) {
      reported = true;
      std::string text = "hetflow::mpi watchdog: " + rank_text(impl.rank) + ": no transfer has finished for " +
                         std::to_string(static_cast<long>(still.count())) + " s; pending:\n";
      for (const auto& [id, transfer] : impl.pending) text += "  " + Impl::describe_pending(transfer) + "\n";
      std::fputs(text.c_str(), stderr);
    }
  }
  struct Meeting {
    std::mutex mutex;
    std::condition_variable met;
    bool everyone = false;
  };
  auto meeting = std::make_shared<Meeting>();  // the transport's thread may still hold it after the wait
  impl.transport->barrier([meeting] {
    std::lock_guard lock(meeting->mutex);
    meeting->everyone = true;
    meeting->met.notify_all();
  });
  std::unique_lock lock(meeting->mutex);
  meeting->met.wait(lock, [&meeting] { return meeting->everyone; });
}

std::vector<PeerStats> Context::sent() const {
  std::lock_guard lock(impl_->transfer_mutex);
  return impl_->sent;
}

}  // namespace hetflow::mpi
