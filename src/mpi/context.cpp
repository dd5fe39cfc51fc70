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
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hetflow/error.hpp"
#include "hetflow/mpi.hpp"
#include "mpi/env_flag.hpp"
#include "mpi/host_buffer.hpp"

namespace hetflow::mpi {

namespace {

// What a transfer moves: a handle of this rank's runtime, under one tag.
struct Channel {
  DataHandle local;
  int tag = 0;
  std::size_t bytes = 0;
  HostBuffer storage;  // its memory, where hetflow allocated it
};

// Redux contributions to one piece of data, gathered between two other accesses to it.
struct Reduction {
  const Codelet* init = nullptr;
  const Codelet* combine = nullptr;
  int tag = 0;  // the contributions' messages (the data's own tag carries its versions)
  bool open = false;
  std::vector<char> contributed;  // contributed[r]: rank r ran a contribution
  // Off the owner, a rank gathers its contributions in its own copy of the data (which the
  // reduction makes out of date anyway), sent under the reduction's tag.
  Channel outgoing;
  std::map<int, std::unique_ptr<Channel>> incoming;  // on the owner: each contributor's, received
};

struct Entry {
  int owner = 0;
  Channel data;
  DataLayout layout;
  std::vector<char> valid;  // valid[r]: rank r holds the latest version
  std::unique_ptr<Reduction> reduction;

  [[nodiscard]] bool everywhere() const { return owner == kEveryRank; }
  [[nodiscard]] const std::string& name() const { return data.local.name(); }

  /// After a write on `rank`, or a flush: its copy is the only valid one.
  void only_on(int rank) {
    std::fill(valid.begin(), valid.end(), 0);
    valid[static_cast<std::size_t>(rank)] = 1;
  }
};

// A transfer is a header (the length of an error text, 0 when the data are good), the text if
// any, then the data, all under the channel's tag: a reader elsewhere of data whose writer
// failed fails too, instead of running on what the failed task left.
struct Transfer {
  Transfer(Acquisition held, bool outgoing) : acquisition(std::move(held)), sending(outgoing) {}
  Acquisition acquisition;
  bool sending;
  std::uint64_t error_length = 0;
  std::string error;
  double posted_at = 0;  // on the runtime's clock, for the trace
  // Whoever ends the transfer first: its last message, or the context giving up on the ranks'
  // messages. Once settled, a late message touches nothing else (the context may be gone).
  std::mutex mutex;
  int messages_left = 0;
  bool settled = false;

  /// True for the caller that settles it: the last of its messages, or every one with `give_up`.
  bool settle(bool give_up) {
    std::lock_guard lock(mutex);
    if (settled || (!give_up && --messages_left > 0)) return false;
    settled = true;
    return true;
  }
};

// HETFLOW_MPI_WATCHDOG. Waits of more than a year are not meant: the bound keeps the waits'
// conversions to whole nanoseconds (and the seconds shown) far from overflowing.
constexpr double kDefaultWatchdogSeconds = 60;
constexpr double kMostWatchdogSeconds = 365.0 * 24 * 3600;

// A transfer not finished yet, for the watchdog (described only when it speaks) and for giving
// up on it.
struct Pending {
  const Channel* channel = nullptr;
  int peer = 0;
  bool sending = false;
  std::shared_ptr<Transfer> posted;  // given to the transport (else waiting for the local tasks before it)
};

// What a rank tells each other rank when its context ends: from then on it sends nothing and
// receives nothing, so the others stop waiting for it (a rank that returned without wait_all).
// The counts let the receiver tell the messages still on their way from those that will never
// come. Every rank's context waits for the others' farewells before it ends: a message left
// unreceived on a communicator that is freed can be delivered to the next one MPI makes.
struct Farewell {
  std::uint64_t wait_alls = 0;  // the wait_all calls it completed
  std::uint64_t calls = 0;      // the wait_all calls it made, those that threw included
  std::uint64_t sent = 0;       // data messages it sent to the receiver
  std::uint64_t received = 0;   // data messages it received from the receiver
  // The barriers its context posted, met or not, and whether it leaves with its process (then it
  // posts no more). A barrier cannot be cancelled: one left unmet (wait_all threw, its rank told
  // that another had ended) would meet the next context's first barrier over the transport on
  // the other ranks, so the ranks that posted fewer post as many more before their context ends.
  std::uint64_t barriers = 0;
  std::uint64_t leaving = 0;
};

// The longest error text a transfer carries (both sides cut it there, so that they agree).
constexpr std::size_t kLongestError = std::size_t{1} << 20;

// A failure's text sent to another rank, at most kLongestError bytes, cut between two UTF-8
// characters (Python decodes it there).
void cut_to_longest_error(std::string& text) {
  if (text.size() <= kLongestError) return;
  std::size_t end = kLongestError;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;  // a continuation byte
  text.resize(end);
}

std::string shown_seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", seconds);
  return text;
}

std::string rank_text(int rank) { return "rank " + std::to_string(rank); }
std::string where_text(int rank) { return rank == kEveryRank ? "every rank" : rank_text(rank); }

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception of unknown type";
  }
}

/// One step of FNV-1a over the eight bytes of `value` (the check's hashes of tasks and calls).
void mix_into(std::uint64_t& hash, std::uint64_t value) {
  for (int byte = 0; byte < 8; ++byte) {
    hash ^= (value >> (8 * byte)) & 0xffU;
    hash *= 1099511628211ULL;
  }
}

}  // namespace

// A transport's tags and messages are one Context's: two Contexts over one transport (world()
// twice, say) would take each other's messages.
class TransportClaim {
 public:
  explicit TransportClaim(const Transport* transport) : transport_(transport) {
    if (transport == nullptr) throw InvalidArgument("hetflow::mpi::Context: no transport");
    std::lock_guard guard(mutex());
    if (!claimed().insert(transport).second) {
      throw InvalidArgument(
          "hetflow::mpi::Context: this transport already serves another Context (their messages would cross); "
          "keep one Context, or give the other a communicator of its own (over_communicator of an MPI_Comm_dup)");
    }
  }
  ~TransportClaim() {
    std::lock_guard guard(mutex());
    claimed().erase(transport_);
  }
  TransportClaim(const TransportClaim&) = delete;
  TransportClaim& operator=(const TransportClaim&) = delete;

 private:
  static std::mutex& mutex() {
    static std::mutex instance;
    return instance;
  }
  static std::set<const Transport*>& claimed() {
    static std::set<const Transport*> instance;
    return instance;
  }
  const Transport* transport_;
};

struct Context::Impl {
  Impl(Runtime& rt, std::shared_ptr<Transport> link) : runtime(rt), claim(link.get()), transport(std::move(link)) {
    rank = transport->rank();
    size = transport->size();
    sent.resize(static_cast<std::size_t>(size));
    for (int peer = 0; peer < size; ++peer) {
      to_track.push_back("to " + rank_text(peer));
      from_track.push_back("from " + rank_text(peer));
    }
    check = env_flag("HETFLOW_MPI_CHECK");
    stats = env_flag("HETFLOW_MPI_STATS");
    watchdog_seconds =
        env_seconds("HETFLOW_MPI_WATCHDOG", kMostWatchdogSeconds,
                    "give the seconds without progress after which pending transfers are shown, from 0 (never) to " +
                        std::to_string(static_cast<long>(kMostWatchdogSeconds)) + " (a year)")
            .value_or(kDefaultWatchdogSeconds);
    departed.resize(static_cast<std::size_t>(size));
    arrivals.assign(static_cast<std::size_t>(size), 0);
    inbox->letters.resize(static_cast<std::size_t>(size));
    inbox->context = this;
    for (int peer = 0; peer < size; ++peer) {
      if (peer != rank) expect_farewell(peer);
    }
  }

  /// Every call that every rank makes starts here: refused inside a task, and after a divergence
  /// (the ranks no longer agree on where the data are: nothing more goes).
  void check_every_rank_call(const char* caller) const {
    if (runtime.on_worker_thread()) {
      // Made by the rank that runs the task only: the ranks' tables and messages would part.
      throw Error(std::string("hetflow::mpi::Context::") + caller +
                  " called from inside a task (or an acquire_then callback): every rank makes this call, from the "
                  "thread that submits the work, and a task runs on one rank only");
    }
    if (!diverged) return;
    throw Error(std::string("hetflow::mpi::Context::") + caller +
                ": this context cannot be used any more (its runtime can): at an earlier wait_all, " + divergence);
  }

  // Two threads of one rank in wait_all at once would cross their comparisons and barriers with
  // the other ranks' (a count read as a hash): the second is refused, unless the first was
  // interrupted (interrupt_wait_all: it leaves within a slice, and the retry waits for it).
  class OneThreadComparing {
   public:
    OneThreadComparing(Impl& impl, const char* caller) : lock_(impl.comparing, std::try_to_lock) {
      if (!lock_.owns_lock()) {
        if (impl.interruptions.load() == impl.interruptions_when_comparing.load()) {
          throw Error(std::string("hetflow::mpi::Context::") + caller +
                      ": another thread of this rank is in wait_all or check_submissions; every rank makes these "
                      "calls from one thread, one at a time");
        }
        lock_.lock();
      }
      impl.interruptions_when_comparing.store(impl.interruptions.load());
    }

   private:
    std::unique_lock<std::mutex> lock_;
  };

  void check_rank(int candidate, const std::string& what) const {
    if (candidate < 0 || candidate >= size) {
      throw InvalidArgument("hetflow::mpi::Context::" + what + " " + std::to_string(candidate) +
                            " is not a rank (there are " + std::to_string(size) + ")");
    }
  }

  /// The tag of hetflow's own messages (the submission check): the transport's largest.
  [[nodiscard]] int control_tag() const { return transport->max_tag(); }
  /// The tag of the farewells: the one below. Data take the tags below that.
  [[nodiscard]] int farewell_tag() const { return control_tag() - 1; }

  void record_submission(std::string_view label, const TaskOptions& options, int executor,
                         const std::vector<DataAccess>& data, const std::vector<Entry*>& used) {
    std::uint64_t hash = 1469598103934665603ULL;  // FNV-1a
    const auto mix = [&hash](std::uint64_t value) { mix_into(hash, value); };
    for (char c : label) mix(static_cast<unsigned char>(c));
    mix(static_cast<std::uint64_t>(executor));
    mix(static_cast<std::uint64_t>(static_cast<std::int64_t>(options.priority)));
    const std::string name = options.name.empty() ? std::string(label) : options.name;
    // The label too where it says more than the name: each rank's message then shows what it
    // submitted (the code of a function, the dtypes of its arrays), to be compared.
    std::string described = "task " + std::to_string(submissions.size()) + " ('" + name + "'" +
                            (label.empty() || label == name ? "" : ", " + std::string(label)) + " on " +
                            where_text(executor);
    for (std::size_t i = 0; i < data.size(); ++i) {
      mix(static_cast<std::uint64_t>(used[i]->data.tag));
      mix(static_cast<std::uint64_t>(data[i].mode));
      // Its owner too: a rank that takes itself for the owner of data another rank owns reads
      // its own copy, which no transfer brings up to date.
      mix(static_cast<std::uint64_t>(static_cast<std::int64_t>(used[i]->owner)));
      // The shape too: data registered with other dimensions or strides elsewhere (an array in
      // the other memory order, say) would be received as garbage of the same size.
      const DataLayout& layout = used[i]->layout;
      mix(layout.elem_size);
      mix(layout.ndim);
      for (std::size_t d = 0; d < layout.ndim && d < DataLayout::kMaxDims; ++d) {
        mix(layout.dims[d]);
        mix(layout.strides[d]);
      }
      described += ", " + std::string(access_mode_name(data[i].mode)) + " tag " + std::to_string(used[i]->data.tag) +
                   " (owner " + where_text(used[i]->owner) + ")";
    }
    submissions.push_back(hash);
    descriptions.push_back(described + ")");
  }

  /// With the check, a call every rank makes that submits no task (get_on, broadcast, migrate,
  /// flush, flush_all, set_reduction) is compared with the tasks: made on one rank only, it
  /// would leave that rank's table of where the data are apart from the others' (a transfer
  /// one side posts and the other never does), which nothing else tells.
  void record_call(std::string_view call, const Entry* entry = nullptr, int target = kEveryRank) {
    if (!check) return;
    std::uint64_t hash = 1099511628211ULL;  // FNV-1a, from another start than the tasks'
    const auto mix = [&hash](std::uint64_t value) { mix_into(hash, value); };
    for (char c : call) mix(static_cast<unsigned char>(c));
    mix(static_cast<std::uint64_t>(static_cast<std::int64_t>(entry != nullptr ? entry->data.tag : -1)));
    mix(static_cast<std::uint64_t>(static_cast<std::int64_t>(target)));
    std::string described = "call " + std::to_string(submissions.size()) + " (" + std::string(call);
    if (entry != nullptr) described += " of '" + entry->name() + "' (tag " + std::to_string(entry->data.tag) + ")";
    if (target != kEveryRank) described += " to " + rank_text(target);
    submissions.push_back(hash);
    descriptions.push_back(described + ")");
  }

  // Rank 0 gathers every rank's hashes since the last check and answers with the index of the
  // first submission that differs (or -1); every rank returns that answer.
  /// `while_waiting`: called while it waits for the other ranks (it may throw, to stop the wait).
  std::int64_t compare_submissions(std::uint64_t call, const std::function<void()>& while_waiting) {
    struct Exchange {
      std::mutex mutex;
      std::condition_variable changed;
      std::vector<std::uint64_t> mine;
      std::vector<std::uint64_t> counts;
      std::vector<std::vector<std::uint64_t>> theirs;
      int waiting = 0;
      std::vector<char> arrived;  // on rank 0: arrived[r], rank r's hashes have come
      bool decided = false;       // on rank 0: once, with every rank's hashes or those of the ranks still there
      std::int64_t first_difference = -1;
      std::vector<std::int64_t> parts;  // Answer's, per rank
      bool answered = false;
    };
    auto exchange = std::make_shared<Exchange>();
    exchange->mine.assign(submissions.begin() + static_cast<std::ptrdiff_t>(checked), submissions.end());
    const int tag = control_tag();
    // The answer: the first submission that differs (or -1), whether a rank whose context had
    // ended was left out (1) or not (0), then per rank kTookPart, kLeftOut or kLeftOutWaiting.
    using Answer = std::vector<std::int64_t>;
    const std::size_t answer_size = static_cast<std::size_t>(size) + 2;
    const auto answer = [exchange](const Answer& given) {
      std::lock_guard lock(exchange->mutex);
      exchange->first_difference = given[0];
      if (given[1] != 0) exchange->parts.assign(given.begin() + 2, given.end());
      exchange->answered = true;
      exchange->changed.notify_all();
    };
    std::function<void()> decide_now;  // on rank 0
    if (rank != 0) {
      exchange->counts.assign(1, exchange->mine.size());
      // The buffers live in `exchange` until the sends are done.
      transport->send(0, tag, exchange->counts.data(), sizeof(std::uint64_t), [exchange] {});
      transport->send(0, tag, exchange->mine.data(), exchange->mine.size() * sizeof(std::uint64_t), [exchange] {});
      auto given = std::make_shared<Answer>(answer_size, 0);
      transport->receive(0, tag, given->data(), answer_size * sizeof(std::int64_t),
                         [given, answer] { answer(*given); });
    } else {
      exchange->counts.assign(static_cast<std::size_t>(size), 0);
      exchange->theirs.resize(static_cast<std::size_t>(size));
      exchange->waiting = size - 1;
      exchange->arrived.assign(static_cast<std::size_t>(size), 0);
      const auto decide = [this, exchange, tag, answer, answer_size, call] {
        std::vector<char> arrived;
        {
          std::lock_guard lock(exchange->mutex);
          if (exchange->decided) return;
          exchange->decided = true;
          arrived = exchange->arrived;
        }
        const std::vector<std::uint64_t>& reference = exchange->mine;
        auto given = std::make_shared<Answer>(answer_size, kTookPart);
        std::int64_t& first = (*given)[0];
        first = -1;
        (*given)[1] = 0;
        for (int peer = 1; peer < size; ++peer) {
          if (arrived[static_cast<std::size_t>(peer)] == 0) {  // its context ended: not compared
            (*given)[1] = 1;
            (*given)[static_cast<std::size_t>(peer) + 2] = left_out(peer, call);
            continue;
          }
          const auto& other = exchange->theirs[static_cast<std::size_t>(peer)];
          const std::size_t common = std::min(reference.size(), other.size());
          std::size_t i = 0;
          while (i < common && reference[i] == other[i]) ++i;
          if (i < common || reference.size() != other.size()) {
            first = first < 0 ? static_cast<std::int64_t>(i) : std::min(first, static_cast<std::int64_t>(i));
          }
        }
        for (int peer = 1; peer < size; ++peer) {
          if (arrived[static_cast<std::size_t>(peer)] != 0)
            transport->send(peer, tag, given->data(), answer_size * sizeof(std::int64_t), [given] {});
        }
        answer(*given);
      };
      decide_now = decide;
      if (size == 1) decide();
      for (int peer = 1; peer < size; ++peer) {
        const auto p = static_cast<std::size_t>(peer);
        transport->receive(
            peer, tag, &exchange->counts[p], sizeof(std::uint64_t), [this, exchange, peer, p, tag, decide] {
              exchange->theirs[p].resize(exchange->counts[p]);
              transport->receive(peer, tag, exchange->theirs[p].data(),
                                 exchange->theirs[p].size() * sizeof(std::uint64_t), [exchange, p, decide] {
                                   bool last = false;
                                   {
                                     std::lock_guard lock(exchange->mutex);
                                     exchange->arrived[p] = 1;
                                     last = --exchange->waiting == 0;
                                   }
                                   if (last) decide();
                                 });
            });
      }
    }
    std::unique_lock lock(exchange->mutex);
    const auto answered = [&exchange] { return exchange->answered; };
    const auto since = std::chrono::steady_clock::now();
    bool told = false;
    while (!exchange->changed.wait_for(lock, std::chrono::milliseconds(100), answered)) {
      lock.unlock();
      while_waiting();
      if (rank != 0) {
        if (ended_before(0, call)) return -1;  // no rank compares: wait_all tells, once the tasks are done
      } else if (absent_from(call)) {
        // The ranks still there compare their work, and are told if it differs (their transfers
        // would otherwise keep wait_all waiting for as long as they live).
        bool all_came = true;
        for (int peer = 1; peer < size; ++peer) {
          const bool ended = ended_before(peer, call);
          std::lock_guard exchanged(exchange->mutex);
          all_came = all_came && (ended || exchange->arrived[static_cast<std::size_t>(peer)] != 0);
        }
        if (all_came) decide_now();
      }
      if (!told && watchdog_seconds > 0 &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count() > watchdog_seconds) {
        told = true;
        std::fputs(("hetflow::mpi watchdog: " + rank_text(rank) + ": it has waited for " +
                    std::to_string(static_cast<long>(watchdog_seconds)) +
                    " s in wait_all for the other ranks to compare the work they submitted (HETFLOW_MPI_CHECK): did "
                    "one return early, or does this one call wait_all once more than they do?\n")
                       .c_str(),
                   stderr);
      }
      lock.lock();
    }
    checked = submissions.size();
    compared_parts = exchange->parts;
    return exchange->first_difference < 0
               ? -1
               : exchange->first_difference + static_cast<std::int64_t>(checked - exchange->mine.size());
  }

  /// The check (HETFLOW_MPI_CHECK) of wait_all call `call`: when the ranks' submissions differ,
  /// every rank gives up on the transfers between them and throws, naming the first that differs.
  void compare_or_give_up(std::uint64_t call, const std::function<void()>& while_waiting) {
    const std::int64_t first = compare_submissions(call, while_waiting);
    if (first < 0) return;
    diverged = true;
    const auto index = static_cast<std::size_t>(first);
    divergence =
        "the ranks did not submit the same work (HETFLOW_MPI_CHECK): the first that differs is " +
        (index < descriptions.size() ? descriptions[index] + " here"
                                     : "task or call " + std::to_string(index) + ", which this rank did not make");
    give_up_on_transfers();
    throw Error("hetflow::mpi: " + divergence);
  }

  // Every transfer is noted until it ends, so that the watchdog can say what is left.
  std::uint64_t note_pending(const Channel& channel, int peer, bool sending) {
    std::lock_guard lock(transfer_mutex);
    ++in_flight;
    pending.emplace(++last_transfer_id, Pending{&channel, peer, sending, nullptr});
    return last_transfer_id;
  }
  /// False, noting nothing, when the transfer will never happen: its peer's context has ended.
  /// A send's `messages` (of `bytes` in all) are counted in the same step: a farewell that comes
  /// before they are posted to the transport must see them, or it would wait for them.
  bool note_posted(std::uint64_t id, int peer, const std::shared_ptr<Transfer>& transfer, std::uint64_t messages = 0,
                   std::uint64_t bytes = 0) {
    std::lock_guard lock(transfer_mutex);
    const auto it = pending.find(id);
    if (it != pending.end()) {
      if (never_happens(it->second, true)) return false;
      it->second.posted = transfer;
    }
    auto& counts = sent[static_cast<std::size_t>(peer)];
    counts.messages += messages;
    counts.bytes += bytes;
    return true;
  }
  static std::string describe_pending(const Pending& transfer) {
    const Channel& channel = *transfer.channel;
    return std::string(transfer.sending ? "send '" : "receive '") + channel.local.name() + "' (tag " +
           std::to_string(channel.tag) + ", " + std::to_string(channel.bytes) + " bytes) " +
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
  [[nodiscard]] const Entry& entry_of(const DataHandle& handle, const char* caller) const {
    return const_cast<Impl*>(this)->entry_of(handle, caller);
  }
  /// The entry of data a call is about to move or a task to use: still registered with the
  /// runtime. Checked before anything changes, so that every rank that unregistered it refuses
  /// alike (a transfer posted first failed in the runtime, and the context then waited for ever).
  Entry& used_entry_of(const DataHandle& handle, const char* caller) {
    Entry& entry = entry_of(handle, caller);
    if (!entry.data.local.registered()) {
      throw InvalidArgument(std::string("hetflow::mpi::Context::") + caller + ": data '" + entry.name() +
                            "' was unregistered from this rank's runtime (Runtime::unregister)");
    }
    return entry;
  }

  [[nodiscard]] static int holder_of(const Entry& entry) {
    if (entry.everywhere()) return kEveryRank;
    if (entry.valid[static_cast<std::size_t>(entry.owner)]) return entry.owner;
    const auto first = std::find(entry.valid.begin(), entry.valid.end(), 1);
    return static_cast<int>(first - entry.valid.begin());
  }

  /// A handle of this rank's runtime over memory hetflow allocates.
  Channel make_channel(const DataLayout& layout, int tag, std::string name) {
    Channel channel;
    channel.tag = tag;
    channel.bytes = layout.payload_bytes();
    channel.storage = HostBuffer(channel.bytes);
    channel.local = runtime.register_data(channel.storage.data(), layout, std::move(name));
    return channel;
  }

  /// Where a task runs: the placement's choice, else the owner of the first data it writes
  /// (not counting Redux), else of the first it reads, else of the first it reduces into; a task
  /// whose data every rank owns runs on every rank.
  int choose_executor(const std::vector<DataAccess>& data, const std::vector<Entry*>& used, Placement placement) const {
    if (placement.rank >= 0) {
      check_rank(placement.rank, "insert: Placement::rank");
      return placement.rank;
    }
    if (placement.owner_of != nullptr) {
      // Data every rank owns is everywhere: the task runs where the rule below puts it.
      const Entry& named = entry_of(*placement.owner_of, "insert");
      if (!named.everywhere()) return named.owner;
    }
    const auto first_owner = [&](auto&& wanted) {
      for (std::size_t i = 0; i < data.size(); ++i) {
        if (!used[i]->everywhere() && wanted(data[i].mode)) return used[i]->owner;
      }
      return kEveryRank;
    };
    int executor = first_owner([](AccessMode mode) { return mode != AccessMode::Redux && writes(mode); });
    if (executor == kEveryRank)
      executor = least_moved(data, used, first_owner([](AccessMode mode) { return mode == AccessMode::R; }));
    if (executor == kEveryRank) executor = first_owner([](AccessMode mode) { return mode == AccessMode::Redux; });
    return executor;
  }

  /// For a task that writes nothing: the rank that already holds the most of what it reads
  /// (fewest bytes to receive), `preferred` on a tie, else the lowest such rank.
  int least_moved(const std::vector<DataAccess>& data, const std::vector<Entry*>& used, int preferred) const {
    if (preferred == kEveryRank) return kEveryRank;
    const auto missing_on = [&](int candidate) {
      std::size_t bytes = 0;
      for (std::size_t i = 0; i < data.size(); ++i) {
        if (data[i].mode == AccessMode::R && !used[i]->valid[static_cast<std::size_t>(candidate)]) {
          bytes += used[i]->data.bytes;
        }
      }
      return bytes;
    };
    int best = preferred;
    std::size_t fewest = missing_on(preferred);
    for (int candidate = 0; candidate < size && fewest > 0; ++candidate) {
      const std::size_t bytes = missing_on(candidate);
      if (bytes < fewest) {
        best = candidate;
        fewest = bytes;
      }
    }
    return best;
  }

  /// Posts the transfer that gives `rank` the latest version of `entry`, unless it has it.
  void bring(Entry& entry, int destination) {
    if (entry.everywhere() || entry.valid[static_cast<std::size_t>(destination)]) return;
    transfer(entry, holder_of(entry), destination);
  }

  /// Sends the latest version of `entry` from `source`, which holds it (or will, once the
  /// transfers to it posted before are done), to `destination`.
  void transfer(Entry& entry, int source, int destination) {
    if (rank == source) post_send(entry.data, destination);
    if (rank == destination) post_receive(entry.data, source);
    entry.valid[static_cast<std::size_t>(destination)] = 1;
  }

  /// A Redux access by a task on `executor`: opens the reduction (the latest version on the
  /// owner, the only valid one from now on) and, the first time `executor` contributes off the
  /// owner, sets its copy of the data to the neutral value there.
  void contribute(Entry& entry, int executor) {
    Reduction& reduction = *entry.reduction;
    if (!reduction.open) {
      bring(entry, entry.owner);
      entry.only_on(entry.owner);
      std::fill(reduction.contributed.begin(), reduction.contributed.end(), 0);
      reduction.open = true;
    }
    if (executor == entry.owner || reduction.contributed[static_cast<std::size_t>(executor)]) return;
    reduction.contributed[static_cast<std::size_t>(executor)] = 1;
    if (rank == executor) {
      runtime.insert(*reduction.init,
                     {.data = {W(entry.data.local)}, .name = "init contributions to '" + entry.name() + "'"});
    }
  }

  /// Sends every contributor's buffer to the owner, which adds each into the data.
  void finish_reduction(Entry& entry) {
    Reduction& reduction = *entry.reduction;
    if (!reduction.open) return;
    reduction.open = false;
    for (int peer = 0; peer < size; ++peer) {
      if (peer == entry.owner || !reduction.contributed[static_cast<std::size_t>(peer)]) continue;
      if (rank == peer) post_send(reduction.outgoing, entry.owner);
      if (rank != entry.owner) continue;
      auto& incoming = reduction.incoming[peer];
      if (!incoming) {
        incoming = std::make_unique<Channel>(
            make_channel(entry.layout, reduction.tag, entry.name() + " (contributions from " + rank_text(peer) + ")"));
      }
      post_receive(*incoming, peer);
      runtime.insert(*reduction.combine,
                     {.data = {RW(entry.data.local), R(incoming->local)},
                      .name = "combine contributions to '" + entry.name() + "' from " + rank_text(peer)});
    }
  }

  void finish_reductions() {
    for (Entry* entry : in_order) {
      if (entry->reduction) finish_reduction(*entry);
    }
  }

  void finished_transfer(std::uint64_t id) {
    std::lock_guard lock(transfer_mutex);
    pending.erase(id);
    last_progress = std::chrono::steady_clock::now();
    if (--in_flight == 0) transfers_done.notify_all();
  }

  void post_send(Channel& channel, int destination) {
    const std::uint64_t id = note_pending(channel, destination, true);
    runtime.acquire_then(channel.local, AccessMode::R, [this, &channel, destination, id](Acquisition acquisition) {
      auto transfer = std::make_shared<Transfer>(std::move(acquisition), true);
      if (post_unless_given_up([&] { start_send(transfer, channel, destination, id); })) return;
      transfer->acquisition.release();
      finished_transfer(id);
    });
  }

  void start_send(const std::shared_ptr<Transfer>& transfer, const Channel& channel, int destination,
                  std::uint64_t id) {
    transfer->posted_at = runtime.now();
    if (const std::exception_ptr& failure = transfer->acquisition.failure()) {
      transfer->error =
          "the task that wrote '" + channel.local.name() + "' on " + rank_text(rank) + " failed: " + describe(failure);
      cut_to_longest_error(transfer->error);
      transfer->error_length = transfer->error.size();
    }
    transfer->messages_left = transfer->error.empty() ? 2 : 3;
    const std::uint64_t bytes = sizeof transfer->error_length + transfer->error.size() + channel.bytes;
    if (!note_posted(id, destination, transfer, static_cast<std::uint64_t>(transfer->messages_left), bytes)) {
      end_abandoned(id, Pending{&channel, destination, true, transfer}, true);
      return;
    }
    const auto sent_one = [this, transfer, &channel, destination, id] {
      if (!transfer->settle(false)) return;
      runtime.trace_message(to_track[static_cast<std::size_t>(destination)], channel.local.name(), channel.bytes,
                            transfer->posted_at, runtime.now());
      transfer->acquisition.release();
      finished_transfer(id);
    };
    transport->send(destination, channel.tag, &transfer->error_length, sizeof transfer->error_length, sent_one);
    if (!transfer->error.empty()) {
      transport->send(destination, channel.tag, transfer->error.data(), transfer->error.size(), sent_one);
    }
    transport->send(destination, channel.tag, transfer->acquisition.data(), channel.bytes, sent_one);
  }

  void post_receive(Channel& channel, int source) {
    const std::uint64_t id = note_pending(channel, source, false);
    runtime.acquire_then(channel.local, AccessMode::W, [this, &channel, source, id](Acquisition acquisition) {
      auto transfer = std::make_shared<Transfer>(std::move(acquisition), false);
      if (post_unless_given_up([&] { start_receive(transfer, channel, source, id); })) return;
      transfer->acquisition.release_failed(never_received(channel, source));
      finished_transfer(id);
    });
  }

  void start_receive(const std::shared_ptr<Transfer>& transfer, const Channel& channel, int source, std::uint64_t id) {
    transfer->posted_at = runtime.now();
    transfer->messages_left = 1;
    if (!note_posted(id, source, transfer)) {
      end_abandoned(id, Pending{&channel, source, false, transfer});
      return;
    }
    // Each message is counted once it is dealt with, so that a count that shows the source's
    // last message has come leaves no transfer of it pending.
    const auto received = [this, transfer, &channel, source, id] {
      if (!transfer->settle(false)) return;
      runtime.trace_message(from_track[static_cast<std::size_t>(source)], channel.local.name(), channel.bytes,
                            transfer->posted_at, runtime.now());
      if (transfer->error.empty()) {
        transfer->acquisition.release();
      } else {
        transfer->acquisition.release_failed(std::make_exception_ptr(
            Error("hetflow::mpi: '" + channel.local.name() + "' from " + rank_text(source) + ": " + transfer->error)));
      }
      finished_transfer(id);
      arrived(source);
    };
    const auto receive_data = [this, transfer, &channel, source, received] {
      post_unless_given_up(
          [&] { transport->receive(source, channel.tag, transfer->acquisition.data(), channel.bytes, received); });
    };
    transport->receive(source, channel.tag, &transfer->error_length, sizeof transfer->error_length,
                       [this, transfer, &channel, source, receive_data] {
                         if (transfer->error_length == 0) {
                           receive_data();
                         } else {
                           transfer->error.resize(std::min<std::uint64_t>(transfer->error_length, kLongestError));
                           post_unless_given_up([&] {
                             transport->receive(source, channel.tag, transfer->error.data(), transfer->error.size(),
                                                [this, source, receive_data] {
                                                  receive_data();
                                                  arrived(source);
                                                });
                           });
                         }
                         arrived(source);
                       });
  }

  // Runs `post` (calls to the transport) unless the context gave up on the ranks' messages, under
  // the posting lock: what it posts reaches the transport before the cancellation does.
  bool post_unless_given_up(const std::function<void()>& post) {
    std::lock_guard posting(posting_mutex);
    if (gave_up) return false;
    post();
    return true;
  }

  [[nodiscard]] std::exception_ptr never_received(const Channel& channel, int source) const {
    return std::make_exception_ptr(
        Error("hetflow::mpi: '" + channel.local.name() + "' never came from " + rank_text(source) + ": " + divergence));
  }

  // The farewells of the other ranks (Farewell) arrive here. The transport's callbacks hold it,
  // and reach the context through it only while the context lives.
  struct Inbox {
    std::mutex mutex;
    std::condition_variable arrived;
    Impl* context = nullptr;
    std::vector<Farewell> letters;  // one per peer, received into
    int count = 0;
  };

  void expect_farewell(int peer) {
    transport->receive(peer, farewell_tag(), &inbox->letters[static_cast<std::size_t>(peer)], sizeof(Farewell),
                       [box = inbox, peer] {
                         std::lock_guard lock(box->mutex);
                         ++box->count;
                         box->arrived.notify_all();
                         if (box->context != nullptr) box->context->farewell_from(peer);
                       });
  }

  void farewell_from(int peer) {
    {
      std::lock_guard lock(transfer_mutex);
      const auto p = static_cast<std::size_t>(peer);
      const Farewell& letter = departed[p].emplace(inbox->letters[p]);
      if (letter.received < sent[p].messages) {
        departures.push_back(rank_text(peer) + " ended (its context was destroyed) without receiving all the data " +
                             "this rank sent it (" + std::to_string(sent[p].messages - letter.received) + " of " +
                             std::to_string(sent[p].messages) + " messages)");
      }
    }
    abandon_transfers_with(peer);
  }

  /// Tells the other ranks that this one sends and receives nothing more, then waits for them to
  /// say the same. Every transfer has ended.
  void say_farewell() {
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      const auto p = static_cast<std::size_t>(peer);
      std::shared_ptr<Farewell> letter;
      {
        std::lock_guard lock(transfer_mutex);
        letter = std::make_shared<Farewell>(Farewell{wait_alls_done, wait_all_calls, sent[p].messages, arrivals[p],
                                                     barriers_posted, process_ending ? 1U : 0U});
      }
      transport->send(peer, farewell_tag(), letter.get(), sizeof(Farewell), [letter] {});
    }
    std::unique_lock lock(inbox->mutex);
    const auto everyone = [this] { return inbox->count == size - 1; };
    if (!process_ending) {
      if (watchdog_seconds > 0 &&
          !inbox->arrived.wait_for(lock, std::chrono::duration<double>(watchdog_seconds), everyone)) {
        std::fputs(("hetflow::mpi watchdog: " + rank_text(rank) + ": its context ends, and it has waited for " +
                    std::to_string(static_cast<long>(watchdog_seconds)) +
                    " s for the other ranks to end theirs (each rank's context waits for the others')\n")
                       .c_str(),
                   stderr);
      }
      inbox->arrived.wait(lock, everyone);
    }
    inbox->context = nullptr;
    lock.unlock();
    if (!process_ending) even_barriers();
    // Receives from ranks that ended without sending (and, at exit, those not come yet), and a
    // barrier they never came to: the transport would wait for them as it stops.
    wait_on_transport([this](std::function<void()> done) { return transport->cancel_pending(std::move(done)); });
  }

  /// Once every other rank's farewell has come: posts as many barriers as the rank that posted the
  /// most (Farewell::barriers), and waits for them and its own, so that every rank has posted as
  /// many and none is left for the next context over the transport to meet. Not when a rank that posted fewer
  /// leaves with its process (it posts no more: they would never be met).
  void even_barriers() {
    std::uint64_t most = barriers_posted;
    for (int peer = 0; peer < size; ++peer) {
      if (peer != rank) most = std::max(most, inbox->letters[static_cast<std::size_t>(peer)].barriers);
    }
    for (int peer = 0; peer < size; ++peer) {
      const Farewell& letter = inbox->letters[static_cast<std::size_t>(peer)];
      if (peer != rank && letter.leaving != 0 && letter.barriers < most) return;
    }
    std::vector<std::shared_ptr<Meeting>> extra;
    for (; barriers_posted < most; ++barriers_posted) {
      extra.push_back(start_meeting([this](std::function<void()> done) {
        transport->barrier(std::move(done));
        return true;
      }));
    }
    for (const auto& meeting : extra) await(*meeting, 0, {}, {});
    // wait_all's, left unmet when it threw, is met now too: MPI must not be left to finish it on
    // a communicator the transport frees.
    if (barrier) await(*barrier, 0, {}, {});
  }

  /// Whether a transfer with a rank whose context has ended will never happen: a receive once
  /// every message that rank sent has come; a send posted before it ended when it did not take
  /// every message, and any send posted after. Called with transfer_mutex held.
  [[nodiscard]] bool never_happens(const Pending& transfer, bool posting) const {
    const auto peer = static_cast<std::size_t>(transfer.peer);
    const std::optional<Farewell>& farewell = departed[peer];
    if (!farewell) return false;
    if (!transfer.sending) return arrivals[peer] >= farewell->sent;
    return posting || farewell->received < sent[peer].messages;
  }

  /// A data message from `source` has been dealt with.
  void arrived(int source) {
    bool last = false;
    {
      std::lock_guard lock(transfer_mutex);
      const auto peer = static_cast<std::size_t>(source);
      ++arrivals[peer];
      last = departed[peer] && arrivals[peer] == departed[peer]->sent;
    }
    if (last) abandon_transfers_with(source);
  }

  /// Ends the posted transfers with `peer` that will never happen (never_happens).
  void abandon_transfers_with(int peer) {
    std::vector<std::pair<std::uint64_t, Pending>> abandoned;
    {
      std::lock_guard lock(transfer_mutex);
      for (const auto& [id, transfer] : pending) {
        if (transfer.peer == peer && transfer.posted && never_happens(transfer, false) &&
            transfer.posted->settle(true)) {
          abandoned.emplace_back(id, transfer);
        }
      }
    }
    for (const auto& [id, transfer] : abandoned) end_abandoned(id, transfer);
  }

  /// As a divergence does (give_up_on_transfers): a send is let go of, a receive fails the tasks
  /// that read its data. wait_all tells of the receive, and of a send not posted before the peer
  /// ended (`unsent`; those posted before are counted by farewell_from).
  void end_abandoned(std::uint64_t id, const Pending& transfer, bool unsent = false) {
    const std::string name = transfer.channel->local.name();
    std::string what;
    if (transfer.sending) {
      if (unsent) what = "'" + name + "' was not sent to " + rank_text(transfer.peer) + ": its context had ended";
      transfer.posted->acquisition.release();
    } else {
      what = "'" + name + "' never came from " + rank_text(transfer.peer) + ", whose context ended without sending it";
      transfer.posted->acquisition.release_failed(std::make_exception_ptr(Error("hetflow::mpi: " + what)));
    }
    if (!what.empty()) {
      std::lock_guard lock(transfer_mutex);
      departures.push_back(std::move(what));
    }
    finished_transfer(id);
  }

  /// What the check says of a rank left out of the comparison (its context ended before): whether
  /// it waits for the others' farewells (it did not end with its process), which the ranks that
  /// diverged then send it all the same.
  static constexpr std::int64_t kLeftOut = 0;
  static constexpr std::int64_t kTookPart = 1;
  static constexpr std::int64_t kLeftOutWaiting = 2;
  [[nodiscard]] std::int64_t left_out(int peer, std::uint64_t call) {
    std::lock_guard lock(transfer_mutex);
    const std::optional<Farewell>& farewell = departed[static_cast<std::size_t>(peer)];
    return farewell && farewell->wait_alls < call && farewell->leaving == 0 ? kLeftOutWaiting : kLeftOut;
  }

  /// After a divergence, at the end of the context: a farewell to each rank the check left out
  /// that waits for every rank's (the ranks that diverged say none to each other).
  void farewell_to_those_left_out() {
    for (int peer = 0; peer < static_cast<int>(compared_parts.size()); ++peer) {
      const auto p = static_cast<std::size_t>(peer);
      if (compared_parts[p] != kLeftOutWaiting) continue;
      std::shared_ptr<Farewell> letter;
      {
        std::lock_guard lock(transfer_mutex);
        letter = std::make_shared<Farewell>(
            Farewell{wait_alls_done, wait_all_calls, sent[p].messages, arrivals[p], barriers_posted, 1});
      }
      transport->send(peer, farewell_tag(), letter.get(), sizeof(Farewell), [letter] {});
    }
  }

  /// Whether `peer`'s context ended before it took part in wait_all call number `call`.
  [[nodiscard]] bool ended_before(int peer, std::uint64_t call) {
    std::lock_guard lock(transfer_mutex);
    const std::optional<Farewell>& farewell = departed[static_cast<std::size_t>(peer)];
    return farewell && farewell->wait_alls < call;
  }

  /// Whether a rank whose context ended will not take part in wait_all call number `call`.
  [[nodiscard]] bool absent_from(std::uint64_t call) {
    std::lock_guard lock(transfer_mutex);
    return std::any_of(departed.begin(), departed.end(), [call](const std::optional<Farewell>& farewell) {
      return farewell && farewell->wait_alls < call;
    });
  }

  /// What wait_all has to tell of the ranks whose context ended: those that will not take part
  /// in its barrier number `call` (first those that did not come to it, then those whose own
  /// wait_all failed there), and the transfers with them that never happened (told once).
  std::string departure_report(std::uint64_t call) {
    std::lock_guard lock(transfer_mutex);
    std::vector<std::string> left;
    std::vector<std::string> failed;
    for (int peer = 0; peer < size; ++peer) {
      const std::optional<Farewell>& farewell = departed[static_cast<std::size_t>(peer)];
      if (!farewell || farewell->wait_alls >= call) continue;
      const std::string ended = rank_text(peer) + " ended (its context was destroyed) after ";
      if (farewell->calls >= call) {
        failed.push_back(ended + "its own wait_all call " + std::to_string(farewell->calls) + " failed");
      } else {
        left.push_back(ended + std::to_string(farewell->calls) + " wait_all calls, and this is this rank's call " +
                       std::to_string(wait_all_calls) +
                       ": did it return early, or does this rank call wait_all more often?");
      }
    }
    std::string report;
    for (const auto* parts : {&left, &failed, &departures}) {
      for (const std::string& part : *parts) report += (report.empty() ? "" : "; ") + part;
    }
    departures.clear();
    return report;
  }

  // Waits until the transport calls the callback `start` hands it; false if `start` returns false.
  // `stalled` is called once if that takes more than `patience` seconds (0: never); `check`, if
  // given, every 100 ms (it throws to end the wait).
  struct Meeting {
    std::mutex mutex;
    std::condition_variable met;
    bool done = false;
  };

  /// Starts an operation of the transport (`start` gets the callback that ends it); nullptr
  /// when `start` returns false (the transport cannot do it). The transport's thread may hold
  /// the meeting after the wait: it is shared.
  static std::shared_ptr<Meeting> start_meeting(const std::function<bool(std::function<void()>)>& start) {
    auto meeting = std::make_shared<Meeting>();
    if (!start([meeting] {
          std::lock_guard lock(meeting->mutex);
          meeting->done = true;
          meeting->met.notify_all();
        })) {
      return nullptr;
    }
    return meeting;
  }

  /// Waits for `meeting`, calling `check` (which may throw) every 100 ms and `stalled` once
  /// after `patience` seconds (0: never).
  static void await(Meeting& meeting, double patience, const std::function<void()>& stalled,
                    const std::function<void()>& check) {
    std::unique_lock lock(meeting.mutex);
    const auto done = [&meeting] { return meeting.done; };
    const auto since = std::chrono::steady_clock::now();
    bool told = false;
    while (!meeting.met.wait_for(lock, std::chrono::milliseconds(100), done)) {
      lock.unlock();
      if (check) check();
      if (!told && patience > 0 &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count() > patience) {
        told = true;
        stalled();
      }
      lock.lock();
    }
  }

  static bool wait_on_transport(const std::function<bool(std::function<void()>)>& start, double patience = 0,
                                const std::function<void()>& stalled = {}, const std::function<void()>& check = {}) {
    const std::shared_ptr<Meeting> meeting = start_meeting(start);
    if (!meeting) return false;
    await(*meeting, patience, stalled, check);
    return true;
  }

  // The ranks diverged: every rank gives up on the messages between them, so that nothing waits
  // for one that will never come. Receives are cancelled, and once every rank has cancelled its
  // own (a barrier) no send buffer is read any more: sends are released, receives released as
  // failed (the tasks that read their data fail, naming the divergence), and those still waiting
  // for local tasks end so when they start. Then the local tasks are waited for, so that none
  // runs on after wait_all throws. False when the transport cannot cancel: its transfers are
  // left as they are.
  bool give_up_on_transfers() {
    {
      std::lock_guard posting(posting_mutex);
      gave_up = true;
    }
    if (!wait_on_transport([this](std::function<void()> done) { return transport->cancel_pending(std::move(done)); }))
      return false;
    if (!compared_parts.empty()) {
      tell_cancelled();
    } else {
      wait_on_transport([this](std::function<void()> done) {
        transport->barrier(std::move(done));
        return true;
      });
      ++barriers_posted;
    }
    end_posted_transfers();
    try {
      runtime.wait_all();
    } catch (const Error&) {
      // The program holds an acquisition a task waits for: the divergence is still what to tell.
    }
    return true;
  }

  /// The barrier of give_up_on_transfers when some rank's context had ended (it comes to no
  /// barrier; it cancelled its receives as it ended): each rank tells every other that it has
  /// cancelled its own, and waits until each has said so too, or its context has ended.
  void tell_cancelled() {
    struct Notes {
      std::mutex mutex;
      std::uint64_t mark = 1;
      std::vector<std::uint64_t> received;
      std::vector<char> came;
    };
    auto notes = std::make_shared<Notes>();
    notes->received.assign(static_cast<std::size_t>(size), 0);
    notes->came.assign(static_cast<std::size_t>(size), 0);
    std::vector<int> peers;
    for (int peer = 0; peer < size; ++peer) {
      if (peer != rank && compared_parts[static_cast<std::size_t>(peer)] == kTookPart) peers.push_back(peer);
    }
    for (int peer : peers) {
      const auto p = static_cast<std::size_t>(peer);
      transport->send(peer, control_tag(), &notes->mark, sizeof notes->mark, [notes] {});
      transport->receive(peer, control_tag(), &notes->received[p], sizeof(std::uint64_t), [notes, p] {
        std::lock_guard lock(notes->mutex);
        notes->came[p] = 1;
      });
    }
    for (;;) {
      bool all = true;
      for (int peer : peers) {
        const bool ended = ended_before(peer, ~std::uint64_t{0});
        std::lock_guard lock(notes->mutex);
        all = all && (ended || notes->came[static_cast<std::size_t>(peer)] != 0);
      }
      if (all) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  /// Ends the transfers posted to the transport, once it has cancelled them: sends are let go
  /// of, receives fail the tasks that read their data.
  void end_posted_transfers() {
    std::vector<std::pair<std::uint64_t, Pending>> posted;
    {
      std::lock_guard lock(transfer_mutex);
      for (const auto& [id, transfer] : pending) {
        if (transfer.posted && transfer.posted->settle(true)) posted.emplace_back(id, transfer);
      }
    }
    for (const auto& [id, transfer] : posted) {
      if (transfer.sending) {
        transfer.posted->acquisition.release();
      } else {
        transfer.posted->acquisition.release_failed(never_received(*transfer.channel, transfer.peer));
      }
      finished_transfer(id);
    }
  }

  /// At exit, past the patience for the transfers in flight: nothing more is posted, the others
  /// are told (the farewell, which cancels what the transport still has), and the transfers
  /// posted end as after a divergence.
  void leave_transfers_at_exit() {
    {
      std::lock_guard posting(posting_mutex);
      gave_up = true;
      divergence = "this rank's context ended with the process before it came";
    }
    say_farewell();
    end_posted_transfers();
  }

  /// Claims `tag` for one piece of data (or its contributions), described as `user` in the error
  /// the next claim of it gets.
  void claim_tag(int tag, const char* caller, std::string user) {
    if (tag < 0 || tag >= farewell_tag()) {
      throw InvalidArgument(std::string("hetflow::mpi::Context::") + caller + ": tag " + std::to_string(tag) +
                            " is outside 0.." + std::to_string(farewell_tag() - 1) +
                            " (the transport's two largest tags, " + std::to_string(farewell_tag()) + " and " +
                            std::to_string(control_tag()) + ", are hetflow's own)");
    }
    if (const auto [taken, claimed] = tags.emplace(tag, std::move(user)); !claimed) {
      throw InvalidArgument(std::string("hetflow::mpi::Context::") + caller + ": tag " + std::to_string(tag) +
                            " is already used by " + taken->second +
                            "; each piece of data needs its own, and each reduction takes one (allocate_tags() "
                            "hands out tags nothing uses)");
    }
  }

  /// `count` consecutive tags that no data uses, after those handed out before.
  int free_tags(int count) {
    int first = next_allocated_tag;
    for (;;) {
      if (first > farewell_tag() - count) {
        throw InvalidArgument("hetflow::mpi::Context::allocate_tags: no " + std::to_string(count) +
                              " free consecutive tags below " + std::to_string(farewell_tag()));
      }
      const auto clash = tags.lower_bound(first);
      if (clash == tags.end() || clash->first >= first + count) break;
      first = clash->first + 1;
    }
    next_allocated_tag = first + count;
    return first;
  }

  Runtime& runtime;
  TransportClaim claim;
  std::shared_ptr<Transport> transport;
  int rank = 0;
  int size = 1;
  std::mutex mutex;  // the protocol's state: entries, tags
  std::unordered_map<const detail::HandleImpl*, std::unique_ptr<Entry>> entries;
  std::vector<Entry*> in_order;     // as registered: the same order on every rank
  std::map<int, std::string> tags;  // what uses each
  int next_allocated_tag = 0;
  std::mutex transfer_mutex;  // in_flight, sent, pending, last_progress
  std::condition_variable transfers_done;
  std::size_t in_flight = 0;
  std::vector<PeerStats> sent;
  std::vector<std::string> to_track;  // the trace's track names, per peer
  std::vector<std::string> from_track;
  std::map<std::uint64_t, Pending> pending;
  std::uint64_t last_transfer_id = 0;
  std::chrono::steady_clock::time_point last_progress = std::chrono::steady_clock::now();
  double watchdog_seconds = kDefaultWatchdogSeconds;
  bool check = false;  // HETFLOW_MPI_CHECK
  bool stats = false;  // HETFLOW_MPI_STATS
  bool diverged = false;
  std::string divergence;                  // what the check found, once it did
  std::recursive_mutex posting_mutex;      // gave_up, and the calls that post to the transport
  bool gave_up = false;                    // on the ranks' messages, after a divergence
  std::vector<std::uint64_t> submissions;  // a hash per task, with the check
  std::vector<std::string> descriptions;
  std::size_t checked = 0;            // submissions compared at the last wait_all
  std::uint64_t wait_alls_done = 0;   // barriers passed
  std::uint64_t wait_all_calls = 0;   // those that threw included
  std::uint64_t barriers_posted = 0;  // to the transport (Farewell::barriers)
  // After a check that left out ranks whose context had ended (else empty): per rank, kTookPart,
  // kLeftOut or kLeftOutWaiting.
  std::vector<std::int64_t> compared_parts;
  bool process_ending = false;
  std::atomic<std::uint64_t> interruptions{0};  // interrupt_wait_all calls
  std::mutex comparing;                         // held by the thread in wait_all or check_submissions
  std::atomic<std::uint64_t> interruptions_when_comparing{0};
  std::shared_ptr<Meeting> barrier;                // wait_all's, until it is met
  std::chrono::duration<double> exit_patience{0};  // set with process_ending
  // The ranks whose context ended (guarded by transfer_mutex, as are the two below).
  std::vector<std::optional<Farewell>> departed;
  std::vector<std::uint64_t> arrivals;  // data messages from each peer, dealt with
  std::vector<std::string> departures;  // transfers with them that never happened, for wait_all to tell
  std::shared_ptr<Inbox> inbox = std::make_shared<Inbox>();

  // The data registered with the context are let go with it, their latest versions in their
  // buffers: the runtime outlives the context, and would otherwise keep handles over memory the
  // context frees (copies it reserved, contributions received) and over the program's buffers,
  // which the program may register again with a next context. Unregistering waits for the tasks
  // still using them.
  ~Impl() {
    const auto let_go = [this](const DataHandle& handle) noexcept {
      try {
        runtime.unregister(handle);
      } catch (...) {  // from a task using it, say: it goes once those tasks end
      }
    };
    for (Entry* entry : in_order) {
      let_go(entry->data.local);
      if (!entry->reduction) continue;
      for (const auto& [peer, channel] : entry->reduction->incoming) {
        if (channel) let_go(channel->local);
      }
    }
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
};

Context::Context(Runtime& runtime, std::shared_ptr<Transport> transport)
    : impl_(std::make_unique<Impl>(runtime, std::move(transport))) {}

Context::~Context() {
  if (impl_->stats) {
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
  {
    std::lock_guard lock(impl_->inbox->mutex);  // no farewell comes after a divergence: nor is one waited for
    if (impl_->diverged) impl_->inbox->context = nullptr;
  }
  if (impl_->diverged) impl_->farewell_to_those_left_out();  // but by the ranks the check left out
  // Destroyed while an exception unwinds the rank: it is failing, and the others may be blocked
  // where no farewell reaches them (an MPI call of the program's): it does not wait for theirs.
  if (std::uncaught_exceptions() > 0 && !impl_->process_ending) ending_with_process();
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
  const auto none_in_flight = [this] { return impl_->in_flight == 0; };
  const auto pending_text = [this] {
    std::string text;
    for (const auto& [id, transfer] : impl_->pending) text += "  " + Impl::describe_pending(transfer) + "\n";
    return text;
  };
  if (impl_->process_ending) {
    if (!impl_->transfers_done.wait_for(lock, impl_->exit_patience, none_in_flight)) {
      // The process is going: the farewell tells the others, whose transfers with this rank then
      // fail rather than wait for a rank that is gone; its own are cancelled, and a task that
      // reads what never came fails (rather than hold the exit).
      std::fputs(
          ("hetflow::mpi: " + rank_text(impl_->rank) + ": its context ends with the process, with " +
           std::to_string(impl_->in_flight) + " transfers still in flight after " +
           shown_seconds(impl_->exit_patience.count()) +
           " s (did another rank fail, or skip a call every rank makes?); leaving without them:\n" + pending_text())
              .c_str(),
          stderr);
      lock.unlock();
      impl_->leave_transfers_at_exit();
      lock.lock();
      if (!impl_->transfers_done.wait_for(lock, std::chrono::seconds(1), none_in_flight)) {
        lock.release()->unlock();
        static_cast<void>(impl_.release());  // the transport may still call back into it
      }
      return;
    }
  } else if (impl_->watchdog_seconds > 0 &&
             !impl_->transfers_done.wait_for(lock, std::chrono::duration<double>(impl_->watchdog_seconds),
                                             none_in_flight)) {
    std::fputs(("hetflow::mpi watchdog: " + rank_text(impl_->rank) + ": its context ends, and it has waited for " +
                shown_seconds(impl_->watchdog_seconds) + " s for the transfers still in flight:\n" + pending_text())
                   .c_str(),
               stderr);
  }
  impl_->transfers_done.wait(lock, none_in_flight);
  lock.unlock();
  impl_->say_farewell();
}

int Context::rank() const noexcept { return impl_->rank; }
int Context::size() const noexcept { return impl_->size; }

DataHandle Context::register_data(void* ptr, const DataLayout& layout, int owner, int tag, std::string name) {
  Impl& impl = *impl_;
  impl.check_every_rank_call("register_data");
  if (owner != kEveryRank) impl.check_rank(owner, "register_data: owner");
  if (layout.span_bytes() != layout.payload_bytes()) {
    throw InvalidArgument(
        "hetflow::mpi::Context::register_data: the layout has gaps (a matrix with ld > nx, or "
        "a strided block); distributed data must be contiguous");
  }
  // Empty data needs no buffer anywhere (an empty std::vector's data() is null): refused on the
  // owner only, it left the ranks out of step.
  if (ptr == nullptr && layout.payload_bytes() != 0 && (owner == impl.rank || owner == kEveryRank)) {
    throw InvalidArgument("hetflow::mpi::Context::register_data: " +
                          std::string(owner == kEveryRank ? "data every rank owns needs its buffer on every rank"
                                                          : "the owner (" + rank_text(owner) +
                                                                ", this one) must give the data's buffer"));
  }
  std::lock_guard lock(impl.mutex);
  impl.claim_tag(tag, "register_data", {});
  auto entry = std::make_unique<Entry>();
  entry->owner = owner;
  entry->layout = layout;
  entry->data.tag = tag;
  entry->data.bytes = layout.payload_bytes();
  entry->valid.assign(static_cast<std::size_t>(impl.size), owner == kEveryRank ? 1 : 0);
  if (owner != kEveryRank) entry->only_on(owner);
  try {
    if (ptr == nullptr) {
      entry->data.storage = HostBuffer(entry->data.bytes);
      ptr = entry->data.storage.data();
    }
    entry->data.local = impl.runtime.register_data(ptr, layout, std::move(name));
  } catch (...) {
    impl.tags.erase(tag);
    throw;
  }
  DataHandle handle = entry->data.local;
  impl.tags[tag] = "'" + handle.name() + "'";
  impl.in_order.push_back(entry.get());
  impl.entries.emplace(handle.impl(), std::move(entry));
  return handle;
}

int Context::allocate_tags(int count) {
  impl_->check_every_rank_call("allocate_tags");
  if (count < 1) throw InvalidArgument("hetflow::mpi::Context::allocate_tags: count must be at least 1");
  std::lock_guard lock(impl_->mutex);
  return impl_->free_tags(count);
}

void Context::set_reduction(const DataHandle& handle, const Codelet& init, const Codelet& combine) {
  Impl& impl = *impl_;
  impl.check_every_rank_call("set_reduction");
  std::lock_guard lock(impl.mutex);
  Entry& entry = impl.used_entry_of(handle, "set_reduction");
  if (entry.everywhere()) {
    throw InvalidArgument("hetflow::mpi::Context::set_reduction: '" + entry.name() +
                          "' is owned by every rank: each rank's copy is its own, there is nothing to combine");
  }
  for (const Codelet* codelet : {&init, &combine}) {
    if (codelet->archs().empty()) {
      throw InvalidArgument("hetflow::mpi::Context::set_reduction: codelet '" + codelet->name +
                            "' has no implementation");
    }
  }
  impl.record_call("set_reduction", &entry);
  if (!entry.reduction) {
    auto reduction = std::make_unique<Reduction>();
    reduction->tag = impl.free_tags(1);
    impl.claim_tag(reduction->tag, "set_reduction", "the reduction of '" + entry.name() + "'");
    reduction->contributed.assign(static_cast<std::size_t>(impl.size), 0);
    reduction->outgoing.local = entry.data.local;
    reduction->outgoing.tag = reduction->tag;
    reduction->outgoing.bytes = entry.data.bytes;
    entry.reduction = std::move(reduction);
  } else {
    impl.finish_reduction(entry);  // the contributions so far combine the old way
  }
  entry.reduction->init = &init;
  entry.reduction->combine = &combine;
}

Runtime& Context::runtime() const noexcept { return impl_->runtime; }

Future<void> Context::insert(const Codelet& codelet, const TaskOptions& options, Placement placement) {
  std::optional<LocalTask> local = route(options, placement, codelet.name);
  if (!local) return Future<void>{};
  return impl_->runtime.insert(codelet, local->options);
}

namespace {

// A task's accesses, each handle once (modes merged), in the order given.
std::vector<DataAccess> merged_accesses(const TaskOptions& options) {
  std::vector<DataAccess> data;
  std::unordered_map<const detail::HandleImpl*, std::size_t> position;  // of each handle in data
  const auto add = [&](const DataAccess& access) {
    if (partial(access.mode)) {
      // Distributed data are each registered on their own: none lies inside another.
      throw InvalidArgument("hetflow::mpi::Context: task '" + options.name + "' names data " +
                            std::string(access_mode_name(access.mode)) +
                            "; part accesses are for views within one runtime, not for distributed data");
    }
    const auto [it, first] = position.try_emplace(access.handle.impl(), data.size());
    if (first) {
      data.push_back(access);
    } else {
      DataAccess& same = data[it->second];
      same.mode = both_modes(same.mode, access.mode);
    }
  };
  for (const DataAccess& access : options.data) add(access);
  for (const DataAccess& access : options.data_list) add(access);
  return data;
}

}  // namespace

int Context::executor(const TaskOptions& options, Placement placement) const {
  const Impl& impl = *impl_;
  const std::vector<DataAccess> data = merged_accesses(options);
  std::lock_guard lock(impl_->mutex);
  std::vector<Entry*> used;
  for (const DataAccess& access : data) used.push_back(&impl_->entry_of(access.handle, "executor"));
  return impl.choose_executor(data, used, placement);
}

std::optional<LocalTask> Context::route(const TaskOptions& options, Placement placement, std::string_view label) {
  Impl& impl = *impl_;
  impl.check_every_rank_call("insert");
  std::vector<DataAccess> data = merged_accesses(options);
  std::lock_guard lock(impl.mutex);
  // Everything is checked before the state changes: a refused task leaves every rank as it was.
  std::vector<Entry*> used;
  for (const DataAccess& access : data) {
    Entry& entry = impl.used_entry_of(access.handle, "insert");
    if (access.mode == AccessMode::Redux && !entry.reduction) {
      throw InvalidArgument("hetflow::mpi::Context::insert: task '" +
                            (options.name.empty() ? std::string(label) : options.name) + "' names '" + entry.name() +
                            "' Redux, but " +
                            (entry.everywhere() ? std::string("it is owned by every rank")
                                                : std::string("no reduction was set for it (Context::set_reduction)")));
    }
    used.push_back(&entry);
  }
  const int executor = impl.choose_executor(data, used, placement);

  for (std::size_t i = 0; i < data.size(); ++i) {
    if (data[i].mode != AccessMode::Redux && used[i]->reduction) impl.finish_reduction(*used[i]);
  }
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (reads(data[i].mode) && data[i].mode != AccessMode::Redux) impl.bring(*used[i], executor);
  }
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (data[i].mode == AccessMode::Redux) {
      impl.contribute(*used[i], executor);
    } else if (writes(data[i].mode) && !used[i]->everywhere()) {
      used[i]->only_on(executor);
    }
  }
  if (impl.check) impl.record_submission(label, options, executor, data, used);
  if (executor != kEveryRank && executor != impl.rank) return std::nullopt;

  std::optional<LocalTask> local(std::in_place);
  // As given, a handle named twice too: the task's buffers are numbered in this order.
  local->data = options.data;
  local->data.insert(local->data.end(), options.data_list.begin(), options.data_list.end());
  local->options.data_list = local->data;
  for (const FutureBase& before : options.after) {
    if (before.valid()) local->options.after.push_back(before);  // another rank's task: ordered through data
  }
  local->options.priority = options.priority;
  local->options.name = options.name;
  local->options.where = options.where;
  local->options.worker = options.worker;
  return local;
}

int Context::owner(const DataHandle& handle) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->entry_of(handle, "owner").owner;
}

void Context::get_on(const DataHandle& handle, int rank) {
  Impl& impl = *impl_;
  impl.check_every_rank_call("get_on");
  impl.check_rank(rank, "get_on:");
  std::lock_guard lock(impl.mutex);
  Entry& entry = impl.used_entry_of(handle, "get_on");
  impl.record_call("get_on", &entry, rank);
  if (entry.reduction) impl.finish_reduction(entry);
  impl.bring(entry, rank);
}

void Context::broadcast(const DataHandle& handle) {
  Impl& impl = *impl_;
  impl.check_every_rank_call("broadcast");
  std::lock_guard lock(impl.mutex);
  Entry& entry = impl.used_entry_of(handle, "broadcast");
  impl.record_call("broadcast", &entry);
  if (entry.everywhere()) return;
  if (entry.reduction) impl.finish_reduction(entry);
  // In rounds, each rank that holds the latest version sends it to one that does not: every rank
  // has it after log2(size) rounds instead of after size - 1 sends from one rank.
  for (;;) {
    std::vector<int> holders;
    std::vector<int> missing;
    for (int peer = 0; peer < impl.size; ++peer)
      (entry.valid[static_cast<std::size_t>(peer)] ? holders : missing).push_back(peer);
    if (missing.empty()) break;
    for (std::size_t i = 0; i < holders.size() && i < missing.size(); ++i) impl.transfer(entry, holders[i], missing[i]);
  }
}

void Context::gather(const std::vector<DataHandle>& handles, int rank) {
  for (const DataHandle& handle : handles) get_on(handle, rank);
}

void Context::migrate(const DataHandle& handle, int rank) {
  Impl& impl = *impl_;
  impl.check_every_rank_call("migrate");
  impl.check_rank(rank, "migrate:");
  std::lock_guard lock(impl.mutex);
  Entry& entry = impl.used_entry_of(handle, "migrate");
  if (entry.everywhere()) {
    throw InvalidArgument("hetflow::mpi::Context::migrate: '" + entry.name() +
                          "' is owned by every rank; it cannot move to one");
  }
  impl.record_call("migrate", &entry, rank);
  if (entry.reduction) impl.finish_reduction(entry);
  impl.bring(entry, rank);
  entry.owner = rank;
}

int Context::holder(const DataHandle& handle) const {
  std::lock_guard lock(impl_->mutex);
  return Impl::holder_of(impl_->entry_of(handle, "holder"));
}

void Context::flush(const DataHandle& handle) {
  impl_->check_every_rank_call("flush");
  std::lock_guard lock(impl_->mutex);
  Entry& entry = impl_->entry_of(handle, "flush");
  impl_->record_call("flush", &entry);
  if (entry.everywhere()) return;
  if (entry.reduction) impl_->finish_reduction(entry);
  entry.only_on(Impl::holder_of(entry));
}

void Context::flush_all() {
  impl_->check_every_rank_call("flush_all");
  std::lock_guard lock(impl_->mutex);
  impl_->record_call("flush_all");
  impl_->finish_reductions();
  for (Entry* entry : impl_->in_order) {
    if (!entry->everywhere()) entry->only_on(Impl::holder_of(*entry));
  }
}

void Context::wait_all() {
  Impl& impl = *impl_;
  impl.check_every_rank_call("wait_all");
  // A task held back by an acquisition this thread holds would never end: the ranks waited for
  // ever, and the watchdog said nothing (the task waits for no transfer).
  detail::check_wait_all_can_end(impl.runtime);
  const Impl::OneThreadComparing one_thread(impl, "wait_all");
  const std::uint64_t interruptions = impl.interruptions.load();
  const auto refuse_if_interrupted = [&impl, interruptions] {
    if (impl.interruptions.load() != interruptions) {
      throw Error("hetflow::mpi::Context::wait_all: interrupted (interrupt_wait_all)");
    }
  };
  ++impl.wait_all_calls;
  const std::uint64_t call = impl.wait_alls_done + 1;  // the barrier it ends in
  {
    std::lock_guard lock(impl.mutex);
    impl.finish_reductions();
  }
  if (impl.check) impl.compare_or_give_up(call, refuse_if_interrupted);
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
    lock.unlock();
    refuse_if_interrupted();
    lock.lock();
    const std::chrono::duration<double> still = std::chrono::steady_clock::now() - impl.last_progress;
    if (impl.watchdog_seconds > 0 && still.count() > impl.watchdog_seconds && !reported && !impl.pending.empty()) {
      reported = true;
      std::string text = "hetflow::mpi watchdog: " + rank_text(impl.rank) + ": no transfer has finished for " +
                         std::to_string(static_cast<long>(still.count())) + " s; pending:\n";
      for (const auto& [id, transfer] : impl.pending) text += "  " + Impl::describe_pending(transfer) + "\n";
      std::fputs(text.c_str(), stderr);
    }
  }
  if (std::string report = impl.departure_report(call); !report.empty()) {
    throw Error("hetflow::mpi::Context::wait_all: " + report);
  }
  // A rank that returned early, or calls wait_all once more than the others, leaves them here
  // (unless its context has ended: then it says so). A barrier posted by a call that was
  // interrupted is still the one to wait for: the retry does not post another.
  if (!impl.barrier) {
    impl.barrier = Impl::start_meeting([&impl](std::function<void()> done) {
      impl.transport->barrier(std::move(done));
      return true;
    });
    ++impl.barriers_posted;
  }
  Impl::await(
      *impl.barrier, impl.watchdog_seconds,
      [&impl] {
        std::fputs(("hetflow::mpi watchdog: " + rank_text(impl.rank) + ": its work is done and it has waited for " +
                    std::to_string(static_cast<long>(impl.watchdog_seconds)) +
                    " s in wait_all for the other ranks to call wait_all too (did one return early, or does this "
                    "one call it once more than they do?)\n")
                       .c_str(),
                   stderr);
      },
      [&impl, call, &refuse_if_interrupted] {
        refuse_if_interrupted();
        if (impl.absent_from(call)) throw Error("hetflow::mpi::Context::wait_all: " + impl.departure_report(call));
      });
  impl.barrier.reset();
  ++impl.wait_alls_done;
}

void Context::check_submissions() {
  Impl& impl = *impl_;
  impl.check_every_rank_call("check_submissions");
  const Impl::OneThreadComparing one_thread(impl, "check_submissions");
  if (impl.check) impl.compare_or_give_up(impl.wait_alls_done + 1, [] {});
}

void Context::interrupt_wait_all() noexcept { impl_->interruptions.fetch_add(1); }

void Context::ending_with_process(std::chrono::duration<double> patience) noexcept {
  impl_->process_ending = true;
  impl_->exit_patience = std::max(patience, std::chrono::duration<double>::zero());
}

std::vector<PeerStats> Context::sent() const {
  std::lock_guard lock(impl_->transfer_mutex);
  return impl_->sent;
}

}  // namespace hetflow::mpi
