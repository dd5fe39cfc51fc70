#pragma once
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "hetflow/access.hpp"
#include "hetflow/arch.hpp"
#include "hetflow/codelet.hpp"
#include "hetflow/config.hpp"
#include "hetflow/data.hpp"
#include "hetflow/detail/body.hpp"
#include "hetflow/export.hpp"
#include "hetflow/ext/scheduler.hpp"
#include "hetflow/future.hpp"

namespace hetflow {

namespace detail {
class Engine;
}

/// Everything about one task except its body.
///
///     rt.insert(scale, {.data = {RW(x)}, .priority = 2, .name = "scale x"});
///     rt.submit({.after = {f}}, [] { ... });
struct TaskOptions {
  /// Registered data the task uses; dependencies are inferred from the modes.
  std::initializer_list<DataAccess> data{};
  /// More data, from a list built at run time (a std::vector<DataAccess>, say); the list must
  /// live until the submitting call returns.
  std::span<const DataAccess> data_list{};
  /// Tasks this one must wait for, besides those inferred from data.
  std::vector<FutureBase> after{};
  /// Higher runs earlier, for schedulers that use priorities ("prio" and later "dmdas").
  int priority = 0;
  /// Shown in traces and error messages; defaults to the codelet's name, or "task".
  std::string name{};
  /// Architectures the task may run on (intersected with those the codelet implements; a plain
  /// callable runs on host threads: cpu and process workers).
  ArchMask where = ArchMask::all();
  /// Runs the task on this worker (its id in `Runtime::workers()`) and nowhere else, in the order
  /// such tasks become ready; -1 lets the scheduler choose.
  int worker = -1;
};

class Runtime;

/// What Runtime::submit accepts: a callable of the arguments, optionally after a TaskContext&.
template <class F, class... Args>
concept Submittable = std::invocable < std::decay_t<F>
&, std::decay_t<Args>&... > || std::invocable<std::decay_t<F>&, TaskContext&, std::decay_t<Args>&...>;

/// Host access to a registered buffer, obtained from Runtime::acquire. Tasks that come after
/// (in submission order) and conflict with the mode wait until it is released.
class HETFLOW_API Acquisition {
 public:
  Acquisition() = default;
  Acquisition(Acquisition&& other) noexcept;
  Acquisition& operator=(Acquisition&& other) noexcept;
  Acquisition(const Acquisition&) = delete;
  Acquisition& operator=(const Acquisition&) = delete;
  ~Acquisition();

  [[nodiscard]] void* data() const noexcept { return data_; }
  template <class T>
  [[nodiscard]] T* as() const noexcept {
    return static_cast<T*>(data_);
  }
  /// False once released, through this object or through Runtime::release.
  [[nodiscard]] bool active() const noexcept { return token_ != nullptr && !detail::is_finished(token_); }
  /// When the task that last wrote the data failed (or was cancelled), its error: the data are
  /// what it left. nullptr otherwise, and always for a W acquisition (it overwrites the data).
  [[nodiscard]] const std::exception_ptr& failure() const noexcept { return failure_; }
  void release();
  /// Releases, marking the data as not produced (for a write whose source failed elsewhere):
  /// the tasks after it that read the data fail with a DependencyError whose cause is `error`.
  void release_failed(std::exception_ptr error);

 private:
  friend class Runtime;
  void end(std::exception_ptr error) noexcept;
  void disown() noexcept;
  Acquisition(Runtime* runtime, detail::TaskCore* token, void* data, std::exception_ptr failure) noexcept
      : runtime_(runtime), token_(token), data_(data), failure_(std::move(failure)) {}
  Runtime* runtime_ = nullptr;
  detail::TaskCore* token_ = nullptr;
  void* data_ = nullptr;
  std::exception_ptr failure_;
};

/// The engine: workers, a scheduler, registered data and the tasks that run over them.
///
///     hetflow::Runtime rt;                      // one CPU worker per core, "ws" scheduler
///     auto f = rt.submit([](int a) { return a + 1; }, 41);
///     int answer = f.get();                     // 42
///
/// The destructor waits for everything submitted.
///
/// A runtime belongs to the process that created it: in a child made by fork() (where its
/// worker threads do not exist) submitting, waiting and acquiring throw hetflow::Error, and
/// shutdown(), abort(), cancel_pending() and the destructor return at once (doing nothing: abort
/// would end the parent's worker processes), as Future::cancel() does, returning false. The
/// child can create a Runtime of its own.
class HETFLOW_API Runtime {
 public:
  explicit Runtime(Config config = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// Runs `fn(args...)` as a task; the future holds its result. A callable whose first
  /// parameter is a `TaskContext&` gets the context too (its buffers, its worker).
  template <class F, class... Args>
  requires Submittable<F, Args...>
  auto submit(F&& fn, Args&&... args) {
    return submit(TaskOptions{}, std::forward<F>(fn), std::forward<Args>(args)...);
  }
  template <class F, class... Args>
  requires Submittable<F, Args...>
  auto submit(const TaskOptions& options, F&& fn, Args&&... args) {
    using Fn = std::decay_t<F>;
    using R = typename detail::CallResult<Fn, std::decay_t<Args>...>::type;
    static_assert(!std::is_reference_v<R>,
                  "hetflow::Runtime::submit: the callable returns a reference, which a Future cannot hold; "
                  "return a value (or a pointer, or a std::reference_wrapper)");
    using Bound = detail::Bound<Fn, std::decay_t<Args>...>;
    using Body = detail::CallableBody<Bound, R>;
    detail::refuse_empty_callable(fn, "Runtime::submit");
    void* storage = nullptr;
    detail::TaskCore* task = begin_task(options, nullptr, &Body::ops, Body::size, Body::align, &storage);
    construct_body<Bound>(task, storage, Bound{std::forward<F>(fn), {std::forward<Args>(args)...}});
    return Future<R>(commit_task(task, options));
  }

  /// Runs the codelet's implementation for the worker it lands on, over `options.data`. The task
  /// keeps a reference to the codelet, which must outlive it (a temporary does not compile).
  Future<void> insert(const Codelet& codelet, const TaskOptions& options = {});
  Future<void> insert(Codelet&& codelet, const TaskOptions& options = {}) = delete;
  /// The same, with an argument the implementation reads with `context.arg<A>()`.
  template <class A>
  Future<void> insert(const Codelet& codelet, const TaskOptions& options, A&& arg) {
    using Arg = std::decay_t<A>;
    using Body = detail::CodeletBody<Arg>;
    void* storage = nullptr;
    detail::TaskCore* task = begin_task(options, &codelet, &Body::ops, sizeof(Arg), alignof(Arg), &storage);
    construct_body<Arg>(task, storage, std::forward<A>(arg));
    return Future<void>(commit_task(task, options));
  }
  template <class A>
  Future<void> insert(Codelet&& codelet, const TaskOptions& options, A&& arg) = delete;

  template <class T>
  DataHandle register_variable(T& value, std::string name = {}) {
    return register_data(&value, DataLayout::variable(sizeof(T)), std::move(name));
  }
  template <class T>
  DataHandle register_vector(T* data, std::size_t n, std::string name = {}) {
    return register_data(data, DataLayout::vector(n, sizeof(T)), std::move(name));
  }
  template <class T>
  DataHandle register_matrix(T* data, std::size_t nx, std::size_t ny, std::size_t ld, std::string name = {}) {
    return register_data(data, DataLayout::matrix(nx, ny, ld, sizeof(T)), std::move(name));
  }
  template <class T>
  DataHandle register_block(T* data, std::span<const std::size_t> dims, std::span<const std::size_t> strides,
                            std::string name = {}) {
    if (dims.size() != strides.size()) throw InvalidArgument("register_block: dims and strides differ in length");
    return register_data(data, DataLayout::block(dims.size(), dims.data(), strides.data(), sizeof(T)), std::move(name));
  }
  /// `ptr` may be null for data of no elements (an empty std::vector's data()). Throws
  /// InvalidArgument when some of the buffer's bytes belong to data registered already and not
  /// let go yet (unregistered, its tasks done): the tasks of two handles over the same bytes
  /// would not be ordered with each other. Tiles of one matrix (ld > nx) may interleave; data
  /// laid out in more than 65,536 separate runs (columns, say) are not checked.
  DataHandle register_data(void* ptr, const DataLayout& layout, std::string name = {});
  /// register_data without that check, for a caller that orders the tasks of overlapping data
  /// itself (each task on one also declares the others it overlaps, as hetflow's Python front
  /// does with the views of an array). Its bytes do not count in later checks either.
  DataHandle register_overlapping_data(void* ptr, const DataLayout& layout, std::string name = {});

  /// Waits for the tasks submitted before that conflict with `mode`, brings the latest data to
  /// the host, and holds later conflicting tasks back until the acquisition is released. Throws
  /// InvalidArgument rather than waiting for ever when the calling thread holds an acquisition
  /// that this one would wait for (of the handle, either one not R, or through the tasks between
  /// them), or runs a task that uses it. An acquisition counts as the thread's that made it
  /// until the object is moved: then as nobody's (whoever holds it may release it).
  [[nodiscard]] Acquisition acquire(const DataHandle& handle, AccessMode mode);
  /// The same without waiting: `ready` is called with the acquisition once the tasks submitted
  /// before that conflict with `mode` are done and the latest data are in host memory — on the
  /// thread that finished the last of them (a worker), or on this one if none is left. Later
  /// conflicting tasks wait until it is released, from any thread. For code that hands the data
  /// to something asynchronous (a network transfer, say) and releases when that completes:
  /// `ready` must not block; if it throws, the acquisition is released and the error dropped.
  /// Unlike acquire, it does not take the data as a new version: when the writer before it
  /// failed (`failure()`), the tasks after it that read the data fail as well.
  void acquire_then(const DataHandle& handle, AccessMode mode, std::function<void(Acquisition)> ready);
  /// Releases the most recent acquisition of `handle` still held (for code that keeps none).
  void release(const DataHandle& handle);
  /// Waits for the tasks using `handle`, leaves the latest data in the user's buffer and makes
  /// the handle unusable for new tasks. Throws InvalidArgument, leaving the handle as it is, when
  /// the calling task uses it or the calling thread holds an acquisition of it; when it would
  /// wait for those through other tasks, InvalidArgument too, and the handle is unregistered
  /// once the tasks using it end (as by unregister_async). On a handle being unregistered
  /// already (unregister_async, another thread, a refused call), it waits until that is done;
  /// on one unregistered already, it returns at once.
  void unregister(const DataHandle& handle);
  /// The same without waiting: new tasks are refused at once, and the handle is let go when the
  /// tasks already using it have finished (for buffers whose owner is going away).
  void unregister_async(const DataHandle& handle);
  /// unregister_async for a buffer about to be freed whose contents nobody wants (a Python array
  /// being destroyed): the tasks already using it still run, but no copy (a device's version, a
  /// write-back on eviction) lands in the buffer any more. Tasks on CPU workers use the buffer
  /// itself: free it only once the tasks using it have ended (Python arrays are kept alive by
  /// the tasks that name them).
  void discard(const DataHandle& handle);
  /// For data the application writes in host memory directly, without acquiring it, once it has
  /// waited for the tasks using it (numpy arrays in Python do): a device's copy of it that
  /// matched host memory before the application last waited (note_application_waited) is
  /// copied again from host memory before its next use. Other data (the default) is assumed to
  /// change on the host only through acquire, and keeps its device copies.
  void watch_host_writes(const DataHandle& handle);
  /// The application has just seen tasks end (it waited for them) and may now write the host
  /// memory of watched data (watch_host_writes). Cheap: a counter, process-wide.
  static void note_application_waited() noexcept;
  /// Starts moving the latest version of `handle` to memory node `node` (see memory_nodes()) in
  /// the background, after the tasks submitted before that write it, so that a task there later
  /// finds it in place. Never waits; a hint the engine may drop when the node is full.
  void prefetch(const DataHandle& handle, unsigned node);

  /// Blocks until every task submitted so far has finished. Throws hetflow::Error rather than
  /// waiting for ever when one of them waits for an acquisition the calling thread holds.
  /// Once shutdown_until() has given up on the work, throws CancelledError instead (at once, and
  /// in the threads waiting then).
  void wait_all();
  /// The same with a deadline; returns false if work is still pending when it passes, and at
  /// once once shutdown_until() has given up on the work.
  [[nodiscard]] bool wait_all_until(std::chrono::steady_clock::time_point deadline);
  /// Waits for submitted work and stops the workers; later submissions throw ShutdownError. The
  /// acquisitions the calling thread made and that are still held (moved since or not) are
  /// released first (so are they by ~Runtime): the tasks behind them see the data as the program
  /// left them, and releasing one afterwards does nothing.
  void shutdown();
  [[nodiscard]] bool is_shut_down() const noexcept;
  /// Gives up on the submitted work: tasks that have not started are cancelled (their futures
  /// raise CancelledError, dependents DependencyError) and drivers stop what they run where they
  /// can (process workers are ended, their tasks fail). Running CPU tasks finish. Then call
  /// shutdown(), which returns once the workers are idle.
  void abort();
  /// From now on, tasks that have not started are cancelled instead of run (their futures raise
  /// CancelledError, those of their dependents too, rather than DependencyError); unlike abort(),
  /// what is running goes on, process workers included.
  void cancel_pending() noexcept;
  /// Tasks submitted and not finished yet: what wait_all() waits for.
  [[nodiscard]] std::size_t unfinished_tasks() const noexcept;
  /// shutdown() for work that may never end: waits for the submitted work until `deadline`, then
  /// gives up on what is left. Tasks that have not started never run (as after cancel_pending()),
  /// the workers that are free stop, and those still inside a task are left running, detached
  /// (the trace and the statistics are written then, as they stand). Every wait for the work
  /// given up on ends, now for the threads blocked in one and at once for later ones (and for a
  /// future's ready() and status(), which read it ended from then on): wait_all()
  /// throws CancelledError, and a future of a task that had not ended raises CancelledError, whether the task
  /// had not started (queued for a worker left in its task, say) or still ran in a thread left
  /// detached; a task that depends on one that ended so raises DependencyError (or
  /// CancelledError, when its own wait came first). Such a task counts as finished, and its
  /// body's own end, if it ever comes, changes nothing (its result is dropped); that body may
  /// still use its data meanwhile. Returns how many threads were left, those of workers and the
  /// spare threads standing in for workers whose task waits (Config::spare_threads): more than
  /// worker_count() when tasks wait inside their bodies. If any were, this Runtime must never be
  /// destroyed, since they still use it: let go of it on purpose (leak it). Returns 0 at once in
  /// a forked child.
  [[nodiscard]] unsigned shutdown_until(std::chrono::steady_clock::time_point deadline);
  /// Whether the calling thread is one of this runtime's workers (running one of its tasks), or
  /// runs one of its tasks that went on without its worker after a wait.
  [[nodiscard]] bool on_worker_thread() const noexcept;
  /// Whether the task the calling thread runs for this runtime declared access to `handle`:
  /// acquiring the handle there would wait for that very task.
  [[nodiscard]] bool current_task_uses(const DataHandle& handle) const noexcept;
  /// Whether the task the calling thread runs for this runtime declared access to `handle` in a
  /// mode that an access with `mode` would wait for (see conflict).
  [[nodiscard]] bool current_task_uses(const DataHandle& handle, AccessMode mode) const noexcept;
  /// The program takes `handle`'s data as they are, as acquire does for the data it acquires: a
  /// failed last writer is forgotten, so that later readers read a new version rather than fail
  /// (for data that lie inside data the program acquired).
  void forget_failure(const DataHandle& handle);
  /// How many tasks and acquisitions have declared access to `handle` so far, if none uses it or
  /// waits to and the last task writing it (if any) succeeded: unregistering it now would change
  /// nothing a later task sees. nullopt otherwise, and once it is unregistered. For caches of
  /// handles that let go of those left unused for a while.
  [[nodiscard]] std::optional<std::uint64_t> accesses_if_at_rest(const DataHandle& handle) const;

  /// Seconds since the runtime started: virtual seconds in a simulation (Config::simulate),
  /// where after wait_all() it is the makespan of the work.
  [[nodiscard]] double elapsed() const noexcept;
  [[nodiscard]] unsigned worker_count() const noexcept;
  /// Tasks pinned to `worker` (TaskOptions::worker) that have not finished yet.
  [[nodiscard]] std::size_t pinned_load(unsigned worker) const;
  [[nodiscard]] std::span<const ext::WorkerInfo> workers() const noexcept;
  /// The memory nodes by number (WorkerInfo::memory_node): "host" first, then the devices'
  /// (each name once: a device named like one before it gets "#2", "#3"...).
  [[nodiscard]] std::vector<std::string> memory_nodes() const;
  [[nodiscard]] const std::string& scheduler_name() const noexcept;

  /// Seconds since the runtime started: the clock of its trace (virtual under simulation).
  [[nodiscard]] double now() const noexcept;
  /// Shows, with a trace (Config::trace_path), a message exchanged with another process on track
  /// `track` of the trace's "messages" process ("to rank 1", say), named `name`, from `start` to
  /// `end` (now()'s clock, 0 <= start <= end <= now(), else InvalidArgument). hetflow::mpi
  /// records its transfers between ranks this way.
  void trace_message(std::string_view track, std::string_view name, std::size_t bytes, double start, double end);
  /// The resolved configuration in force.
  [[nodiscard]] const Config& config() const noexcept;
  [[nodiscard]] detail::Engine& impl() noexcept { return *impl_; }

 private:
  friend class Acquisition;
  DataHandle register_checked_data(void* ptr, const DataLayout& layout, std::string name, const std::string& where,
                                   bool refuse_overlap);
  detail::TaskCore* begin_task(const TaskOptions& options, const Codelet* codelet, const detail::BodyOps* ops,
                               std::size_t size, std::size_t align, void** storage);
  FutureBase commit_task(detail::TaskCore* task, const TaskOptions& options);
  void abort_task(detail::TaskCore* task) noexcept;
  void release_acquisition(detail::TaskCore* token, std::exception_ptr error = nullptr) noexcept;

  template <class B, class V>
  void construct_body(detail::TaskCore* task, void* storage, V&& value) {
    try {
      ::new (storage) B(std::forward<V>(value));
    } catch (...) {
      abort_task(task);
      throw;
    }
  }

  std::unique_ptr<detail::Engine> impl_;
};

template <class T>
template <class F>
auto Future<T>::then(F&& fn) const {
  detail::refuse_empty_callable(fn, "Future::then");
  return detail::owner(checked()).submit(
      TaskOptions{.after = {*this}},
      [self = *this, fn = std::forward<F>(fn)]() mutable { return std::invoke(fn, self.get()); });
}

template <class F>
auto Future<void>::then(F&& fn) const {
  return detail::owner(checked()).submit(TaskOptions{.after = {*this}}, std::forward<F>(fn));
}

template <class T>
auto when_all(const std::vector<Future<T>>& futures) {
  if constexpr (std::is_void_v<T>) {
    return when_all(std::vector<FutureBase>(futures.begin(), futures.end()));
  } else {
    if (futures.empty()) throw InvalidArgument("when_all: needs at least one future");
    for (const auto& f : futures) {
      if (!f.valid()) throw InvalidArgument("when_all: an empty future");
    }
    Runtime& runtime = detail::owner(futures.front().core());
    TaskOptions options{.after = std::vector<FutureBase>(futures.begin(), futures.end()), .name = "when_all"};
    return runtime.submit(options, [futures] {
      std::vector<T> values;
      values.reserve(futures.size());
      for (const auto& f : futures) values.push_back(f.get());
      return values;
    });
  }
}

}  // namespace hetflow
