// The recorder behind HETFLOW_TRACE and HETFLOW_STATS.
//
// Hot path: task() touches only its worker's log, under that log's own spin lock, which nobody
// else takes until finish() — so it never contends, and costs an uncontended atomic exchange.
// Records go into fixed-size chunks (growth never copies what was recorded) and task names are
// interned per worker (a record is 32 bytes whatever the name). Without a trace, nothing is kept
// per task: the counters for the statistics only.
//
// Times are converted to whole nanoseconds before anything is derived from them, so that the
// idle slices exactly fill the gaps between tasks and rounding cannot unnest nested slices.
#include "trace/recorder.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hetflow/error.hpp"
#include "util/atomic_file.hpp"
#include "util/json.hpp"
#include "util/number_format.hpp"
#include "util/spin_lock.hpp"

namespace hetflow::detail {
namespace {

// "%r" in a trace path is the MPI rank mpirun gave the process (0 outside mpirun), "%p" its
// process id, "%s" the scheduler, "%%" a "%": ranks of one program, started with one
// HETFLOW_TRACE, write a file each, as do runtimes of one process with different schedulers.
std::string expand_trace_path(const std::string& path, const std::string& scheduler) {
  if (path.find('%') == std::string::npos) return path;
  std::string rank = "0";
  for (const char* variable : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* value = std::getenv(variable); value != nullptr && *value != '\0') {
      rank = value;
      break;
    }
  }
  std::string expanded;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%' && i + 1 < path.size()) {
      const char next = path[i + 1];
      if (next == 'r' || next == 'p' || next == 's' || next == '%') {
        expanded += next == 'r'   ? rank
                    : next == 'p' ? std::to_string(::getpid())
                    : next == 's' ? scheduler
                                  : std::string("%");
        ++i;
        continue;
      }
    }
    expanded += path[i];
  }
  return expanded;
}

// The trace paths the live recorders of this process write: runtimes alive together (the
// module's and an executor's, both from HETFLOW_TRACE) would write one file, the last one
// over the other's.
class TracePathClaim {
 public:
  TracePathClaim() = default;
  /// Claims `asked`, or, when another recorder has it, `asked` with "-2", "-3", ... before its
  /// extension.
  explicit TracePathClaim(const std::string& asked) : asked_(asked) {
    std::lock_guard guard(mutex());
    path_ = asked;
    for (unsigned n = 2; claimed().count(path_) != 0; ++n) path_ = numbered(asked, n);
    claimed().insert(path_);
  }
  TracePathClaim(const TracePathClaim&) = delete;
  TracePathClaim& operator=(const TracePathClaim&) = delete;
  ~TracePathClaim() { release(); }

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] const std::string& asked() const noexcept { return asked_; }
  void release() noexcept {
    if (path_.empty()) return;
    std::lock_guard guard(mutex());
    claimed().erase(path_);
    path_.clear();
  }

 private:
  static std::string numbered(const std::string& path, unsigned n) {
    const std::size_t name = path.find_last_of('/') + 1;  // npos + 1 == 0
    const std::size_t dot = path.find_last_of('.');
    const std::size_t at = dot != std::string::npos && dot > name ? dot : path.size();
    return path.substr(0, at) + "-" + std::to_string(n) + path.substr(at);
  }
  static std::mutex& mutex() {
    static std::mutex instance;
    return instance;
  }
  static std::set<std::string>& claimed() {
    static std::set<std::string> instance;
    return instance;
  }

  std::string asked_;
  std::string path_;
};

using Nanos = std::int64_t;

Nanos to_nanos(double seconds) noexcept {
  // Clamped well inside int64 so that differences of two of them cannot overflow either.
  constexpr double kLimit = 4e18;
  if (!std::isfinite(seconds)) return 0;
  return static_cast<Nanos>(std::llround(std::clamp(seconds * 1e9, -kLimit, kLimit)));
}

double to_seconds(Nanos nanos) noexcept { return static_cast<double>(nanos) * 1e-9; }

/// Lanes of one track for slices given in order of start: each goes on the first lane where it
/// overlaps nothing, or, if slices may nest, where it lies inside every slice it overlaps (a
/// trace viewer draws only such slices on one line).
class Lanes {
 public:
  explicit Lanes(bool may_nest) : may_nest_(may_nest) {}

  /// The lane of the slice [start, end): 0, 1, ... (count() grows when it needs a new one).
  std::size_t place(Nanos start, Nanos end) {
    std::size_t lane = 0;
    for (;; ++lane) {
      if (lane == open_ends_.size()) open_ends_.emplace_back();
      std::vector<Nanos>& open = open_ends_[lane];
      while (!open.empty() && open.back() <= start) open.pop_back();
      if (open.empty() || (may_nest_ && end <= open.back())) break;
    }
    open_ends_[lane].push_back(end);
    return lane;
  }
  [[nodiscard]] std::size_t count() const noexcept { return open_ends_.size(); }

  /// The name a lane shows: the track's label, then " (2)", " (3)"... for the extra ones.
  [[nodiscard]] static std::string label(const std::string& track, std::size_t lane) {
    return lane == 0 ? track : track + " (" + std::to_string(lane + 1) + ")";
  }

 private:
  bool may_nest_;
  std::vector<std::vector<Nanos>> open_ends_;  // per lane: ends of the slices still open at the last start
};

struct TaskRecord {
  double start;
  double end;
  std::size_t bytes;
  std::uint32_t name;  // index in the worker's NameTable
};

/// Append-only storage in chunks: pushing never moves earlier records (no latency spike from
/// reallocating a large vector on a worker's hot path).
class TaskLog {
 public:
  void push_back(const TaskRecord& record) {
    if (size_ % kChunk == 0) chunks_.push_back(std::make_unique<TaskRecord[]>(kChunk));
    chunks_.back()[size_ % kChunk] = record;
    ++size_;
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  void clear() noexcept {
    chunks_.clear();
    size_ = 0;
  }
  [[nodiscard]] const TaskRecord& operator[](std::size_t i) const noexcept { return chunks_[i / kChunk][i % kChunk]; }

 private:
  static constexpr std::size_t kChunk = 4096;
  std::vector<std::unique_ptr<TaskRecord[]>> chunks_;
  std::size_t size_ = 0;
};

/// A recorded task in whole nanoseconds, ready to be written.
struct Slice {
  Nanos start;
  Nanos end;
  std::size_t bytes;
  std::uint32_t name;
};

struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
};

/// A worker's distinct task names. Consecutive tasks usually share a name, so the last one is
/// compared first, before hashing.
class NameTable {
 public:
  std::uint32_t id(std::string_view name) {
    if (!names_.empty() && *names_[last_] == name) return last_;
    auto found = index_.find(name);
    if (found == index_.end()) {
      found = index_.emplace(std::string(name), static_cast<std::uint32_t>(names_.size())).first;
      names_.push_back(&found->first);  // map nodes do not move
    }
    last_ = found->second;
    return last_;
  }
  [[nodiscard]] const std::string& name(std::uint32_t id) const noexcept { return *names_[id]; }
  [[nodiscard]] std::size_t size() const noexcept { return names_.size(); }

 private:
  std::unordered_map<std::string, std::uint32_t, NameHash, std::equal_to<>> index_;
  std::vector<const std::string*> names_;
  std::uint32_t last_ = 0;
};

/// The length of the union of a worker's task intervals, kept without storing every task. A
/// worker that waits inside a task runs other tasks meanwhile, so a task can contain tasks that
/// were recorded before it (a worker records tasks in the order they end); those must not count
/// twice. The spans kept are the ones a still-running task may yet turn out to contain; past
/// kMaxSpans, the oldest half is merged into one span, which stays exact unless a single task
/// encloses thousands of others and starts inside the merged stretch.
class BusyTime {
 public:
  void add(Nanos start, Nanos end) {
    end = std::max(end, start);
    Nanos covered = 0;
    while (!spans_.empty() && spans_.back().start >= start && spans_.back().end <= end) {
      covered += spans_.back().busy;
      spans_.pop_back();
    }
    if (!spans_.empty() && spans_.back().end > start) {
      // Overlaps the start of this task: count the overlap once.
      Span& last = spans_.back();
      const Nanos overlap = std::min(last.busy, std::min(last.end, end) - start);
      last.busy -= overlap;
      covered += overlap;
      last.end = start;
    }
    busy_ += (end - start) - covered;
    latest_end_ = std::max(latest_end_, end);
    spans_.push_back({start, end, end - start});
    if (spans_.size() >= kMaxSpans) merge_oldest_half();
  }
  [[nodiscard]] Nanos busy() const noexcept { return busy_; }
  [[nodiscard]] Nanos latest_end() const noexcept { return latest_end_; }

 private:
  struct Span {
    Nanos start;
    Nanos end;
    Nanos busy;  // the busy part of [start, end) (less than end - start once merged)
  };
  static constexpr std::size_t kMaxSpans = 4096;

  void merge_oldest_half() {
    const std::size_t half = spans_.size() / 2;
    Span merged{spans_.front().start, spans_[half - 1].end, 0};
    for (std::size_t i = 0; i < half; ++i) merged.busy += spans_[i].busy;
    spans_.erase(spans_.begin() + 1, spans_.begin() + static_cast<std::ptrdiff_t>(half));
    spans_.front() = merged;
  }

  std::vector<Span> spans_;  // disjoint, in time order
  Nanos busy_ = 0;
  Nanos latest_end_ = 0;
};

struct TransferRecord {
  unsigned from;
  unsigned to;
  std::size_t bytes;
  double start;
  double end;
};

struct MessageRecord {
  std::string track;
  std::string name;
  std::size_t bytes;
  double start;
  double end;
};

struct LinkTotals {
  std::uint64_t count = 0;
  std::uint64_t bytes = 0;
  double seconds = 0;
};

// Microseconds with three decimals (the trace format's unit, at nanosecond resolution).
void append_micros(std::string& out, Nanos nanos) {
  if (nanos < 0) {
    out += '-';
    nanos = -nanos;
  }
  append_number(out, static_cast<std::uint64_t>(nanos / 1000));
  const auto fraction = static_cast<unsigned>(nanos % 1000);
  out += '.';
  out += static_cast<char>('0' + fraction / 100);
  out += static_cast<char>('0' + fraction / 10 % 10);
  out += static_cast<char>('0' + fraction % 10);
}

/// Columns padded to their widest cell: the first left-aligned, the others right-aligned.
class Table {
 public:
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print_to(std::string& out, std::string_view indent) const {
    std::vector<std::size_t> widths;
    for (const auto& row : rows_) {
      widths.resize(std::max(widths.size(), row.size()), 0);
      for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
    }
    for (const auto& row : rows_) {
      out += indent;
      for (std::size_t i = 0; i < row.size(); ++i) {
        const std::string padding(widths[i] - row[i].size(), ' ');
        if (i == 0) {
          out += row[i] + padding;
        } else {
          out += "  " + padding + row[i];
        }
      }
      out += '\n';
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace

struct Recorder::State {
  struct alignas(64) WorkerLog {  // one cache line apart: workers write their own concurrently
    SpinLock lock;
    bool closed = false;  // finish() has begun: later tasks are not recorded
    std::uint64_t tasks = 0;
    BusyTime busy;    // without a trace
    TaskLog records;  // with a trace
    NameTable names;  // with a trace
    // With a trace, from finish() on: the records sorted by start, enclosing tasks before the
    // tasks they enclose (the order trace viewers nest them in).
    std::vector<Slice> sorted;
  };

  std::string trace_path;
  std::optional<TracePathClaim> claim;  // of trace_path, while this recorder may write it
  bool stats = false;
  std::vector<ext::WorkerInfo> workers;
  std::vector<std::string> node_names;
  std::vector<std::unique_ptr<WorkerLog>> logs;  // parallel to `workers`
  std::vector<WorkerLog*> log_by_id;             // worker id -> its log (nullptr: no such worker)

  std::mutex transfer_mutex;
  bool transfers_closed = false;
  std::vector<TransferRecord> transfers;                      // with a trace
  std::map<std::pair<unsigned, unsigned>, LinkTotals> links;  // per (from, to)
  std::vector<MessageRecord> messages;                        // with a trace

  std::atomic<bool> finished{false};

  [[nodiscard]] bool tracing() const noexcept { return !trace_path.empty(); }
  [[nodiscard]] bool active() const noexcept { return tracing() || stats; }

  std::string worker_label(const ext::WorkerInfo& worker) const {
    return "worker " + std::to_string(worker.id) + " (" + std::string(arch_name(worker.arch)) + ")";
  }
  std::string link_label(unsigned from, unsigned to) const { return node_names[from] + " -> " + node_names[to]; }

  void write_trace(Nanos end) const;
  void print_stats(Nanos end) const;
  static void sort_records(WorkerLog& log);
  static Nanos busy_of(const WorkerLog& log, bool tracing);
  Nanos latest_end() const;
};

Recorder::Recorder(std::string trace_path, bool stats, std::vector<ext::WorkerInfo> workers,
                   std::vector<std::string> node_names, const std::string& scheduler)
    : state_(std::make_unique<State>()) {
  constexpr unsigned kMaxWorkerId = 1u << 16;  // ids index a table: they are small and dense
  for (const auto& worker : workers) {
    if (worker.id >= kMaxWorkerId) {
      throw InvalidArgument("Recorder: worker id " + std::to_string(worker.id) + " is not below " +
                            std::to_string(kMaxWorkerId));
    }
    if (worker.memory_node >= node_names.size()) {
      throw InvalidArgument("Recorder: worker " + std::to_string(worker.id) + " is on memory node " +
                            std::to_string(worker.memory_node) + " but only " + std::to_string(node_names.size()) +
                            " memory nodes are named");
    }
  }
  State& state = *state_;
  if (!trace_path.empty()) {
    state.claim.emplace(expand_trace_path(trace_path, scheduler));
    state.trace_path = state.claim->path();
  }
  state.stats = stats;
  state.workers = std::move(workers);
  state.node_names = std::move(node_names);
  for (const auto& worker : state.workers) {
    state.logs.push_back(std::make_unique<State::WorkerLog>());
    if (worker.id >= state.log_by_id.size()) state.log_by_id.resize(worker.id + 1, nullptr);
    if (state.log_by_id[worker.id] != nullptr) {
      throw InvalidArgument("Recorder: worker id " + std::to_string(worker.id) + " appears twice");
    }
    state.log_by_id[worker.id] = state.logs.back().get();
  }
}

Recorder::~Recorder() = default;

void Recorder::task(unsigned worker, std::string_view name, std::size_t bytes, double start, double end) {
  State& state = *state_;
  if (!state.active()) return;
  State::WorkerLog* log = worker < state.log_by_id.size() ? state.log_by_id[worker] : nullptr;
  if (log == nullptr) {
    throw InvalidArgument("Recorder::task: worker " + std::to_string(worker) + " is not one of the " +
                          std::to_string(state.workers.size()) + " workers recorded");
  }
  std::lock_guard guard(log->lock);
  if (log->closed) return;
  ++log->tasks;
  if (state.tracing()) {
    log->records.push_back({start, end, bytes, log->names.id(name)});
  } else {
    log->busy.add(to_nanos(start), to_nanos(end));
  }
}

void Recorder::transfer(unsigned from, unsigned to, std::size_t bytes, double start, double end) {
  State& state = *state_;
  if (!state.active()) return;
  if (from >= state.node_names.size() || to >= state.node_names.size()) {
    throw InvalidArgument("Recorder::transfer: memory node " + std::to_string(std::max(from, to)) +
                          " is not one of the " + std::to_string(state.node_names.size()) + " memory nodes");
  }
  std::lock_guard guard(state.transfer_mutex);
  if (state.transfers_closed) return;
  LinkTotals& totals = state.links[{from, to}];
  ++totals.count;
  totals.bytes += bytes;
  totals.seconds += std::max(0.0, end - start);
  if (state.tracing()) state.transfers.push_back({from, to, bytes, start, end});
}

void Recorder::message(std::string_view track, std::string_view name, std::size_t bytes, double start, double end) {
  State& state = *state_;
  if (!state.tracing()) return;
  std::lock_guard guard(state.transfer_mutex);
  if (state.transfers_closed) return;
  state.messages.push_back({std::string(track), std::string(name), bytes, start, end});
}

void Recorder::finish(double end) noexcept {
  State& state = *state_;
  if (state.finished.exchange(true) || !state.active()) return;
  // From here on task() and transfer() record nothing, so what follows reads without racing.
  for (auto& log : state.logs) {
    std::lock_guard guard(log->lock);
    log->closed = true;
  }
  try {
    for (auto& log : state.logs) State::sort_records(*log);
  } catch (const std::exception& error) {  // out of memory: nothing more can be done reliably
    std::fprintf(stderr, "hetflow: cannot write the trace or statistics: %s\n", error.what());
    return;
  }
  {
    std::lock_guard guard(state.transfer_mutex);
    state.transfers_closed = true;
  }
  const Nanos end_ns = std::max(to_nanos(end), state.latest_end());
  if (state.tracing()) {
    try {
      state.write_trace(end_ns);
      if (state.trace_path != state.claim->asked()) {
        std::fprintf(stderr, "hetflow: the trace is in '%s': '%s' is another runtime's of this process\n",
                     state.trace_path.c_str(), state.claim->asked().c_str());
      }
    } catch (const std::exception& error) {
      std::fprintf(stderr, "hetflow: cannot write the trace '%s': %s\n", state.trace_path.c_str(), error.what());
    }
    state.claim->release();
  }
  if (state.stats) {
    try {
      state.print_stats(end_ns);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "hetflow: cannot print the statistics: %s\n", error.what());
    }
  }
}

void Recorder::State::sort_records(WorkerLog& log) {
  std::vector<Slice>& slices = log.sorted;
  slices.reserve(log.records.size());
  for (std::size_t i = 0; i < log.records.size(); ++i) {
    const TaskRecord& record = log.records[i];
    const Nanos start = to_nanos(record.start);
    slices.push_back({start, std::max(start, to_nanos(record.end)), record.bytes, record.name});
  }
  log.records.clear();
  std::stable_sort(slices.begin(), slices.end(), [](const Slice& a, const Slice& b) {
    return a.start != b.start ? a.start < b.start : a.end > b.end;
  });
}

Nanos Recorder::State::busy_of(const WorkerLog& log, bool tracing) {
  if (!tracing) return log.busy.busy();
  Nanos busy = 0;
  Nanos covered_until = std::numeric_limits<Nanos>::min();
  for (const Slice& slice : log.sorted) {
    if (slice.end > covered_until) {
      busy += slice.end - std::max(slice.start, covered_until);
      covered_until = slice.end;
    }
  }
  return busy;
}

Nanos Recorder::State::latest_end() const {
  Nanos latest = 0;
  for (const auto& log : logs) {
    latest = std::max(latest, log->busy.latest_end());
    for (const Slice& slice : log->sorted) latest = std::max(latest, slice.end);
  }
  for (const auto& transfer : transfers) latest = std::max(latest, to_nanos(transfer.end));
  for (const auto& message : messages) latest = std::max(latest, to_nanos(message.end));
  return latest;
}

void Recorder::State::write_trace(Nanos end) const {
  // Worker tracks are process 1, transfer tracks process 2, message tracks process 3; thread ids
  // start at 1 (some viewers treat 0 specially).
  constexpr int kWorkersPid = 1;
  constexpr int kTransfersPid = 2;
  constexpr int kMessagesPid = 3;
  constexpr std::size_t kFlushAt = std::size_t{1} << 20;

  AtomicFile file(trace_path);
  std::string out;
  out.reserve(kFlushAt + 4096);
  bool first = true;
  auto begin_event = [&] {
    out += first ? "\n" : ",\n";
    first = false;
  };
  auto flush_if_full = [&] {
    if (out.size() < kFlushAt) return;
    file.write(out);
    out.clear();
  };
  auto metadata = [&](int pid, std::optional<std::size_t> tid, std::string_view what, std::string_view key,
                      const std::string& value) {
    begin_event();
    out += "{\"ph\":\"M\",\"pid\":";
    append_number(out, static_cast<std::uint64_t>(pid));
    if (tid) {
      out += ",\"tid\":";
      append_number(out, *tid);
    }
    out += ",\"name\":\"";
    out += what;
    out += "\",\"args\":{\"";
    out += key;
    out += "\":";
    out += value;
    out += "}}";
  };
  auto slice = [&](int pid, std::size_t tid, std::string_view quoted_name, std::string_view category, Nanos start,
                   Nanos finish) {
    begin_event();
    out += "{\"ph\":\"X\",\"pid\":";
    append_number(out, static_cast<std::uint64_t>(pid));
    out += ",\"tid\":";
    append_number(out, tid);
    out += ",\"name\":";
    out += quoted_name;
    out += ",\"cat\":\"";
    out += category;
    out += "\",\"ts\":";
    append_micros(out, start);
    out += ",\"dur\":";
    append_micros(out, finish - start);
  };

  out += "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"hetflow\"},\"traceEvents\":[";
  metadata(kWorkersPid, std::nullopt, "process_name", "name", "\"workers\"");
  metadata(kWorkersPid, std::nullopt, "process_sort_index", "sort_index", "1");
  // Extra lanes of a worker's track (below) take thread ids after every worker's.
  std::size_t next_lane_tid = 1;
  for (const auto& worker : workers) next_lane_tid = std::max(next_lane_tid, std::size_t{worker.id} + 2);
  for (std::size_t w = 0; w < workers.size(); ++w) {
    const ext::WorkerInfo& worker = workers[w];
    const std::size_t tid = worker.id + 1;
    metadata(kWorkersPid, tid, "thread_name", "name", json_quote(worker_label(worker)));
    metadata(kWorkersPid, tid, "thread_sort_index", "sort_index", std::to_string(worker.id));
    const WorkerLog& log = *logs[w];
    std::vector<std::string> quoted_names;  // each distinct name quoted once, not once per task
    for (std::uint32_t id = 0; id < log.names.size(); ++id) quoted_names.push_back(json_quote(log.names.name(id)));
    // A task whose wait lent its worker may take the worker back while a task that started
    // inside it still runs (that one waits in turn, and goes on without the worker): the two
    // overlap without nesting, and the later one goes on an extra lane.
    Lanes lanes(/*may_nest=*/true);
    std::vector<std::uint32_t> lane_of(log.sorted.size(), 0);
    for (std::size_t i = 0; i < log.sorted.size(); ++i) {
      lane_of[i] = static_cast<std::uint32_t>(lanes.place(log.sorted[i].start, log.sorted[i].end));
    }
    auto task_slice = [&](std::size_t lane_tid, const Slice& task) {
      slice(kWorkersPid, lane_tid, quoted_names[task.name], "task", task.start, task.end);
      out += ",\"args\":{\"bytes\":";
      append_number(out, task.bytes);
      out += "}}";
      flush_if_full();
    };
    Nanos covered_until = 0;
    auto idle_until = [&](Nanos until) {
      if (until <= covered_until) return;
      slice(kWorkersPid, tid, "\"idle\"", "idle", covered_until, until);
      out += ",\"cname\":\"grey\"}";
    };
    for (std::size_t i = 0; i < log.sorted.size(); ++i) {
      const Slice& task = log.sorted[i];
      idle_until(task.start);
      if (lane_of[i] == 0) task_slice(tid, task);
      covered_until = std::max(covered_until, task.end);
    }
    idle_until(end);
    std::vector<std::vector<std::size_t>> on_lane(lanes.count());  // the extra lanes' slices
    for (std::size_t i = 0; i < log.sorted.size(); ++i) {
      if (lane_of[i] != 0) on_lane[lane_of[i]].push_back(i);
    }
    for (std::size_t lane = 1; lane < on_lane.size(); ++lane) {
      const std::size_t lane_tid = next_lane_tid++;
      metadata(kWorkersPid, lane_tid, "thread_name", "name", json_quote(Lanes::label(worker_label(worker), lane)));
      metadata(kWorkersPid, lane_tid, "thread_sort_index", "sort_index", std::to_string(worker.id));
      for (const std::size_t i : on_lane[lane]) task_slice(lane_tid, log.sorted[i]);
    }
  }

  // Slices on tracks (per link, or per peer) that overlap in time (prefetches, messages in
  // flight together) go on lanes of their own: a track shows only properly nested slices.
  std::size_t next_tid = 1;
  auto lanes_of_track = [&](int pid, const std::string& label, auto records, auto&& write) {
    std::stable_sort(records.begin(), records.end(), [](const auto* a, const auto* b) { return a->start < b->start; });
    Lanes lanes(/*may_nest=*/false);
    std::vector<std::size_t> tids;  // per lane
    for (const auto* record : records) {
      const Nanos start = to_nanos(record->start);
      const Nanos finish = std::max(start, to_nanos(record->end));
      const std::size_t lane = lanes.place(start, finish);
      if (lane == tids.size()) {
        const std::size_t tid = next_tid++;
        metadata(pid, tid, "thread_name", "name", json_quote(Lanes::label(label, lane)));
        metadata(pid, tid, "thread_sort_index", "sort_index", std::to_string(tid));
        tids.push_back(tid);
      }
      write(*record, tids[lane], start, finish);
      flush_if_full();
    }
  };

  if (!transfers.empty()) {
    metadata(kTransfersPid, std::nullopt, "process_name", "name", "\"transfers\"");
    metadata(kTransfersPid, std::nullopt, "process_sort_index", "sort_index", "2");
    std::map<std::pair<unsigned, unsigned>, std::vector<const TransferRecord*>> by_link;
    for (const auto& transfer : transfers) by_link[{transfer.from, transfer.to}].push_back(&transfer);
    for (auto& [link, list] : by_link) {
      lanes_of_track(kTransfersPid, "transfers " + link_label(link.first, link.second), list,
                     [&](const TransferRecord& transfer, std::size_t tid, Nanos start, Nanos finish) {
                       slice(kTransfersPid, tid, "\"transfer\"", "transfer", start, finish);
                       out += ",\"args\":{\"bytes\":";
                       append_number(out, transfer.bytes);
                       out += ",\"from\":";
                       append_json_quoted(out, node_names[transfer.from]);
                       out += ",\"to\":";
                       append_json_quoted(out, node_names[transfer.to]);
                       out += "}}";
                     });
    }
  }

  if (!messages.empty()) {
    metadata(kMessagesPid, std::nullopt, "process_name", "name", "\"messages\"");
    metadata(kMessagesPid, std::nullopt, "process_sort_index", "sort_index", "3");
    std::map<std::string, std::vector<const MessageRecord*>> by_track;
    for (const auto& message : messages) by_track[message.track].push_back(&message);
    for (auto& [track, list] : by_track) {
      lanes_of_track(kMessagesPid, track, list,
                     [&](const MessageRecord& message, std::size_t tid, Nanos start, Nanos finish) {
                       slice(kMessagesPid, tid, json_quote(message.name), "message", start, finish);
                       out += ",\"args\":{\"bytes\":";
                       append_number(out, message.bytes);
                       out += "}}";
                     });
    }
  }
  out += "\n]}\n";
  file.write(out);
  file.commit();
}

void Recorder::State::print_stats(Nanos end) const {
  const double end_seconds = to_seconds(end);
  std::string out =
      "hetflow stats: " + std::to_string(workers.size()) + " workers, " + format_fixed(end_seconds, 6) + " s\n";
  Table worker_table;
  worker_table.row({"worker", "tasks", "busy s", "busy %"});
  for (std::size_t w = 0; w < workers.size(); ++w) {
    const WorkerLog& log = *logs[w];
    const double busy = to_seconds(busy_of(log, tracing()));
    worker_table.row({worker_label(workers[w]), std::to_string(log.tasks), format_fixed(busy, 6),
                      end > 0 ? format_fixed(100.0 * busy / end_seconds, 1) : "-"});
  }
  worker_table.print_to(out, "  ");
  if (!links.empty()) {
    Table link_table;
    link_table.row({"transfers", "count", "bytes", "s", "GB/s"});
    for (const auto& [link, totals] : links) {
      link_table.row(
          {link_label(link.first, link.second), std::to_string(totals.count), std::to_string(totals.bytes),
           format_fixed(totals.seconds, 6),
           totals.seconds > 0 ? format_fixed(static_cast<double>(totals.bytes) / totals.seconds / 1e9, 2) : "-"});
    }
    link_table.print_to(out, "  ");
  }
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

}  // namespace hetflow::detail
