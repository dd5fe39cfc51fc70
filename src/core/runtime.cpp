// The public Runtime: argument checks, then the engine.
#include "hetflow/runtime.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <numeric>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/dependencies.hpp"
#include "core/engine.hpp"
#include "core/task_pool.hpp"
#include "core/task_state.hpp"
#include "core/threaded_execution.hpp"
#include "data/coherence.hpp"
#include "data/layout.hpp"
#include "hetflow/error.hpp"

namespace hetflow {

using detail::AccessRecord;
using detail::HandleImpl;
using detail::kNoBody;
using detail::TaskCore;
using detail::thread_number;

namespace {

std::string display_quoted(const std::string& name) {
  return name.empty() ? std::string("(unnamed)") : "'" + name + "'";
}

// The mode of an acquisition of `handle` the calling thread holds (one that writes, with
// `writes_only`), if any.
std::optional<AccessMode> held_by_this_thread(HandleImpl& handle, bool writes_only) {
  std::lock_guard guard(handle.dep_lock);
  for (const auto& held : handle.acquisitions) {
    const AccessMode held_mode = held.token->inline_accesses[0].mode;
    if (held.holder == thread_number() && (!writes_only || held_mode != AccessMode::R)) return held_mode;
  }
  return std::nullopt;
}

// A task may also name data Redux (run as RW here), PartR or PartW; acquisitions may not.
void check_mode(AccessMode mode, const char* where, bool task = false) {
  const bool task_only = mode == AccessMode::Redux || mode == AccessMode::PartR || mode == AccessMode::PartW;
  if (mode != AccessMode::R && mode != AccessMode::W && mode != AccessMode::RW && (!task || !task_only)) {
    throw InvalidArgument(std::string(where) + ": access mode " + std::to_string(static_cast<int>(mode)) +
                          (task ? " is not R, W, RW, Redux, PartR or PartW" : " is not R, W or RW"));
  }
}

[[noreturn]] void refuse_unregistered(const HandleImpl& impl, const detail::Engine& runtime, const char* where) {
  if (runtime.shutting_down()) {
    throw ShutdownError(std::string(where) + ": the runtime is shutting down (data handle " +
                        display_quoted(impl.name) + " was unregistered by it)");
  }
  throw InvalidArgument(std::string(where) + ": data handle " + display_quoted(impl.name) + " has been unregistered");
}

// Gives every record of a handle named more than once the union of its modes, and marks all but
// its first record repeats. Pairwise for the few handles of most tasks, by sorting for many (a
// task over 65,535 handles took seconds pairwise).
void merge_repeated_handles(AccessRecord* records, std::size_t count) {
  constexpr std::size_t kPairwiseUpTo = 32;
  if (count <= kPairwiseUpTo) {
    for (std::size_t i = 0; i < count; ++i) {
      if (records[i].repeat) continue;
      for (std::size_t j = i + 1; j < count; ++j) {
        if (records[j].handle != records[i].handle) continue;
        records[j].repeat = true;
        records[i].mode = both_modes(records[i].mode, records[j].mode);
      }
      for (std::size_t j = i + 1; j < count; ++j) {
        if (records[j].handle == records[i].handle) records[j].mode = records[i].mode;
      }
    }
    return;
  }
  std::vector<std::uint32_t> order(count);
  std::iota(order.begin(), order.end(), 0u);
  // Stable, so that within a handle's records the first given comes first.
  std::stable_sort(order.begin(), order.end(), [records](std::uint32_t a, std::uint32_t b) {
    return std::less<const HandleImpl*>{}(records[a].handle, records[b].handle);
  });
  for (std::size_t first = 0; first < count;) {
    std::size_t end = first + 1;
    AccessMode mode = records[order[first]].mode;
    for (; end < count && records[order[end]].handle == records[order[first]].handle; ++end) {
      mode = both_modes(mode, records[order[end]].mode);
    }
    for (std::size_t k = first; k < end; ++k) {
      records[order[k]].mode = mode;
      records[order[k]].repeat = k != first;
    }
    first = end;
  }
}

// A submission holds an unregister of its handles off (Engine::unregister waits for it) while
// it puts its task in the graph, where the unregistration's token then comes after the task; a
// submission that an unregister began before is refused. (Checked only when the task was built,
// a task could come after the token, and run once the buffer was the application's again.) The
// handles are kept apart from the task, which may have run and gone by the end.
class SubmissionOn {
 public:
  SubmissionOn(const AccessRecord* records, std::size_t count) {
    if (count > inline_.size()) spilled_.resize(count);
    HandleImpl** handles = count > inline_.size() ? spilled_.data() : inline_.data();
    for (std::size_t i = 0; i < count; ++i) {
      handles[i] = records[i].handle;
      handles[i]->submitting.fetch_add(1);
    }
    handles_ = std::span<HandleImpl* const>(handles, count);
  }
  ~SubmissionOn() {
    for (HandleImpl* handle : handles_) handle->submitting.fetch_sub(1);
  }
  SubmissionOn(const SubmissionOn&) = delete;
  SubmissionOn& operator=(const SubmissionOn&) = delete;

  /// The first of the handles unregistered meanwhile, if any.
  [[nodiscard]] const HandleImpl* unregistered() const {
    for (const HandleImpl* handle : handles_) {
      if (!handle->registered.load()) return handle;
    }
    return nullptr;
  }

 private:
  std::array<HandleImpl*, 4> inline_{};
  std::vector<HandleImpl*> spilled_;
  std::span<HandleImpl* const> handles_;
};

HandleImpl& check_handle(const DataHandle& handle, const detail::Engine& runtime, const char* where,
                         bool must_be_registered = true) {
  HandleImpl* impl = handle.impl();
  if (impl == nullptr) throw InvalidArgument(std::string(where) + ": empty DataHandle (never registered)");
  if (impl->context != &runtime) {
    throw InvalidArgument(std::string(where) + ": data handle " + display_quoted(impl->name) +
                          " was registered with another runtime");
  }
  if (must_be_registered && !impl->registered.load(std::memory_order_acquire))
    refuse_unregistered(*impl, runtime, where);
  return *impl;
}

template <class Fn>
void for_each_access(const TaskOptions& options, Fn fn) {
  for (const DataAccess& access : options.data) fn(access);
  for (const DataAccess& access : options.data_list) fn(access);
}

std::string arch_list(ArchMask mask) {
  std::string text;
  for (unsigned a = 0; a < kArchCount; ++a) {
    if (!mask.contains(static_cast<Arch>(a))) continue;
    if (!text.empty()) text += ", ";
    text += arch_name(static_cast<Arch>(a));
  }
  return text.empty() ? "none" : text;
}

}  // namespace

namespace {

// The one place that chooses how tasks run: on worker threads, or in virtual time on the machine
// a simulation describes.
std::unique_ptr<detail::Engine> make_engine(Runtime& facade, Config config) {
  std::unique_ptr<detail::Execution> execution =
      config.simulate->empty() ? detail::make_threaded_execution() : detail::make_simulated_execution(*config.simulate);
  return std::make_unique<detail::Engine>(facade, std::move(config), std::move(execution));
}

}  // namespace

Runtime::Runtime(Config config) : impl_(make_engine(*this, config.resolved())) {}

Runtime::~Runtime() {
  if (impl_->forked()) {
    // A forked child holds a copy of the engine whose worker threads exist only in the parent:
    // nothing can be joined, waited for or torn down, so the copy is left as it is.
    static_cast<void>(impl_.release());
    return;
  }
  if (on_worker_thread()) {
    // Its shutdown would wait for the very task destroying it; a destructor cannot report that.
    std::fputs(
        "hetflow: a Runtime was destroyed inside one of its own tasks, where it would wait for that task "
        "itself; destroy it outside its tasks. Aborting.\n",
        stderr);
    std::abort();
  }
  impl_->shutdown();
}

TaskCore* Runtime::begin_task(const TaskOptions& options, const Codelet* codelet, const detail::BodyOps* ops,
                              std::size_t size, std::size_t align, void** storage) {
  const char* what = codelet != nullptr ? "hetflow::Runtime::insert" : "hetflow::Runtime::submit";
  impl_->check_not_forked(what);
  auto task_label = [&] {
    if (!options.name.empty()) return "'" + options.name + "'";
    if (codelet != nullptr && !codelet->name.empty()) return "'" + codelet->name + "'";
    return std::string("(unnamed)");
  };
  if (!impl_->accepting_from_this_thread()) {
    throw ShutdownError(std::string(what) + ": cannot submit task " + task_label() +
                        ": the runtime has been shut down");
  }
  // A plain callable runs on the worker's host thread: any CPU or process worker can run it.
  const ArchMask runnable = codelet != nullptr ? codelet->archs() : Arch::cpu | Arch::process;
  ArchMask where = options.where & runnable;
  if (where.empty()) {
    throw InvalidArgument(std::string(what) + ": task " + task_label() + " may run on " + arch_list(options.where) +
                          " (TaskOptions::where), but " +
                          (codelet != nullptr ? "its codelet has implementations for " + arch_list(runnable)
                                              : "a callable runs on " + arch_list(runnable)) +
                          " only");
  }
  if (impl_->simulating()) {
    where = options.where & impl_->simulated_archs(codelet, options.name);
    if (where.empty()) {
      throw InvalidArgument(
          std::string(what) + ": task " + task_label() + " may run on " + arch_list(options.where) +
          ", where the simulated machine (HETFLOW_SIMULATE) gives it no cost" +
          (codelet == nullptr && options.where.contains(Arch::process)
               ? ": tasks for worker processes are not simulated; a simulated machine runs plain tasks on its CPU "
                 "workers (in Python, executor='thread')"
               : std::string()));
    }
  }
  ArchMask present;
  for (const auto& worker : impl_->worker_infos()) present = present | worker.arch;
  if ((where & present).empty()) {
    throw InvalidArgument(std::string(what) + ": no worker can run task " + task_label() + ": it runs on " +
                          arch_list(where) + "; this runtime has workers for " + arch_list(present));
  }
  if (const std::size_t mentioned = options.data.size() + options.data_list.size();
      mentioned > std::numeric_limits<decltype(TaskCore::access_count)>::max()) {
    throw InvalidArgument(std::string(what) + ": task " + task_label() + " names " + std::to_string(mentioned) +
                          " data accesses; a task may name at most " +
                          std::to_string(std::numeric_limits<decltype(TaskCore::access_count)>::max()));
  }
  for_each_access(options, [&](const DataAccess& access) {
    check_mode(access.mode, what, /*task=*/true);
    check_handle(access.handle, *impl_, what);
  });
  if (options.worker != -1) {
    const auto& infos = impl_->worker_infos();
    if (options.worker < 0 || static_cast<std::size_t>(options.worker) >= infos.size()) {
      throw InvalidArgument(std::string(what) + ": task " + task_label() + " is pinned to worker " +
                            std::to_string(options.worker) + ", but the workers are 0 to " +
                            std::to_string(infos.size() - 1));
    }
    if (!where.contains(infos[static_cast<std::size_t>(options.worker)].arch)) {
      throw InvalidArgument(std::string(what) + ": task " + task_label() + " is pinned to worker " +
                            std::to_string(options.worker) + " (" +
                            std::string(arch_name(infos[static_cast<std::size_t>(options.worker)].arch)) +
                            "), which cannot run it: it runs on " + arch_list(where));
    }
  }
  for (const FutureBase& predecessor : options.after) {
    if (!predecessor.valid()) throw InvalidArgument(std::string(what) + ": an empty Future in TaskOptions::after");
    if (&detail::owner(predecessor.core()) != this) {
      throw InvalidArgument(std::string(what) + ": task " + task_label() +
                            " is given (in TaskOptions::after, or as an argument in Python) the future of a task of "
                            "another runtime, which cannot order it: pass that future's value instead "
                            "(future.result() in Python, get() in C++)");
    }
  }

  TaskCore* task = detail::allocate_task();
  task->runtime = impl_.get();
  task->ops = ops;
  task->codelet = codelet;
  task->priority = options.priority;
  task->where = where & present;
  task->pinned_worker = options.worker;
  task->sequence = impl_->next_sequence();
  if (const detail::WorkerState* worker = detail::current_worker(); worker != nullptr && worker->running != nullptr) {
    task->parent_sequence = worker->running->task->sequence + 1;
  }
  task->refs.store(2, std::memory_order_relaxed);  // the engine's and the future's
  task->pending.store(1, std::memory_order_relaxed);
  if (!options.name.empty()) task->name = std::make_unique<std::string>(options.name);

  // One record per mention, in the order given: TaskContext::buffer(i) is the i-th handle named.
  // A handle named more than once gets the union of its modes in each of its records, and its
  // dependencies are tracked once (Engine::submit skips the repeats).
  const std::size_t mentioned = options.data.size() + options.data_list.size();
  detail::allocate_accesses(task, mentioned);
  AccessRecord* records = task->accesses();
  std::size_t count = 0;
  // Coherence keeps one copy of the whole data per memory node: part accesses of a task that may
  // run on a device are whole ones (see AccessMode).
  const bool may_run_on_a_device = task->where.contains(Arch::cuda) || task->where.contains(Arch::opencl);
  for_each_access(options, [&](const DataAccess& access) {
    records[count++] = {access.handle.impl(), may_run_on_a_device ? whole(access.mode) : access.mode};
  });
  merge_repeated_handles(records, count);
  task->access_count = static_cast<std::uint16_t>(count);
  if (options.worker == -1) task->where = detail::archs_with_room(*impl_, task, task->where);

  if (size <= TaskCore::kInlineStorage && align <= alignof(std::max_align_t)) {
    *storage = task->inline_storage;
  } else {
    const std::size_t heap_align = std::max(align, detail::kHeapBodyAlign);
    void* heap = ::operator new (size, std::align_val_t{heap_align});
    ::new (task->inline_storage) detail::HeapBody{heap, heap_align};
    task->flags |= TaskCore::kHeapStorage;
    *storage = heap;
  }
  return task;
}

FutureBase Runtime::commit_task(TaskCore* task, const TaskOptions& options) {
  std::exception_ptr refusal;
  {
    const SubmissionOn submission(task->accesses(), task->access_count);
    if (const HandleImpl* gone = submission.unregistered()) {
      try {
        refuse_unregistered(*gone, *impl_, "hetflow::Runtime::submit");
      } catch (const Error&) {
        refusal = std::current_exception();
      }
    } else if (impl_->admit_task()) {
      impl_->submit(task, options.after);
      return FutureBase::adopt(task);
    } else {  // the shutdown began after begin_task looked
      refusal = std::make_exception_ptr(ShutdownError("hetflow::Runtime::submit: cannot submit task '" +
                                                      std::string(task->display_name()) +
                                                      "': the runtime has been shut down"));
    }
  }
  task->ops->destroy_body(task->storage());
  abort_task(task);
  std::rethrow_exception(refusal);
}

void Runtime::abort_task(TaskCore* task) noexcept {
  task->ops = nullptr;
  detail::recycle_task(task);
}

Future<void> Runtime::insert(const Codelet& codelet, const TaskOptions& options) {
  if (codelet.archs().empty()) {
    throw InvalidArgument("hetflow::Runtime::insert: codelet '" + codelet.name + "' has no implementation");
  }
  void* storage = nullptr;
  TaskCore* task = begin_task(options, &codelet, &detail::kCodeletWithoutArg, 0, 1, &storage);
  return Future<void>(commit_task(task, options));
}

DataHandle Runtime::register_data(void* ptr, const DataLayout& layout, std::string name) {
  return register_checked_data(ptr, layout, std::move(name), "hetflow::Runtime::register_data", true);
}

DataHandle Runtime::register_overlapping_data(void* ptr, const DataLayout& layout, std::string name) {
  return register_checked_data(ptr, layout, std::move(name), "hetflow::Runtime::register_overlapping_data", false);
}

DataHandle Runtime::register_checked_data(void* ptr, const DataLayout& layout, std::string name,
                                          const std::string& where, bool refuse_overlap) {
  if (layout.elem_size == 0) throw InvalidArgument(where + ": element size is 0");
  detail::check_layout(layout, where);
  if (ptr == nullptr) {
    // An empty std::vector's data(): nothing is ever read or written there, but the engine and
    // the drivers expect an address.
    static char no_elements;
    if (layout.span_bytes() != 0) throw InvalidArgument(where + ": null pointer for " + display_quoted(name));
    ptr = &no_elements;
  }
  impl_->check_not_forked(where.c_str());
  if (impl_->stopped()) throw ShutdownError(where + ": the runtime has been shut down");
  return DataHandle(impl_->register_data(ptr, layout, std::move(name), refuse_overlap ? where : std::string()));
}

Acquisition Runtime::acquire(const DataHandle& handle, AccessMode mode) {
  check_mode(mode, "hetflow::Runtime::acquire");
  impl_->check_not_forked("hetflow::Runtime::acquire");
  if (impl_->stopped()) throw ShutdownError("hetflow::Runtime::acquire: the runtime has been shut down");
  HandleImpl& impl = check_handle(handle, *impl_, "hetflow::Runtime::acquire");
  if (detail::running_task_uses(impl_.get(), &impl)) {
    throw InvalidArgument("hetflow::Runtime::acquire: the calling task uses " + display_quoted(impl.name) +
                          " itself, so acquiring it would wait for that task; use the task's own access to it (an "
                          "acquire_then callback runs as part of the task that ended the ones before it)");
  }

  // One this thread holds that the new one would wait for could never be released.
  if (const auto held_mode = held_by_this_thread(impl, mode == AccessMode::R)) {
    throw InvalidArgument("hetflow::Runtime::acquire: this thread holds an acquisition (" +
                          std::string(access_mode_name(*held_mode)) + ") of " + display_quoted(impl.name) +
                          " that this one (" + std::string(access_mode_name(mode)) +
                          ") would wait for; release it first");
  }
  // Two references: the engine's (dropped when the acquisition is released, either way) and the
  // Acquisition object's, so that the record stays this acquisition's until the object is done.
  const AccessRecord record{&impl, mode};
  TaskCore* token = [&] {
    const SubmissionOn submission(&record, 1);
    if (submission.unregistered() != nullptr) refuse_unregistered(impl, *impl_, "hetflow::Runtime::acquire");
    return impl_->submit_manual("acquire " + display_quoted(impl.name), &impl, mode, 2);
  }();
  try {
    detail::wait_until_started(token);
  } catch (const Error& refusal) {
    // It waits for the calling task, or for an acquisition this thread holds, through other
    // tasks: it ends as soon as it starts (at once, if that was released meanwhile).
    if (!impl_->give_up_on_start(token, TaskCore::kAbandoned)) detail::complete_manual(token);
    detail::release(token);  // the reference the Acquisition would have had
    throw InvalidArgument(std::string("hetflow::Runtime::acquire: ") + refusal.what());
  }
  // The application takes the data as they are: a new version.
  std::exception_ptr failure = detail::failure_read_by(token);
  detail::forgive_failed_writer(impl);
  void* data = detail::prepare_replica(impl, detail::kHostNode, mode);
  {
    std::lock_guard guard(impl.dep_lock);
    impl.acquisitions.push_back({token, thread_number()});
  }
  impl_->note_acquired(token, thread_number());
  return Acquisition(this, token, data, std::move(failure));
}

namespace {

// The failure an acquisition of acquire_then's that reads and writes the data read (see there),
// which it passes on when released without an error of its own; nullptr for others.
std::exception_ptr inherited_failure(TaskCore* token) {
  std::lock_guard guard(token->lock);
  return std::exchange(token->error, nullptr);
}

}  // namespace

void Runtime::acquire_then(const DataHandle& handle, AccessMode mode, std::function<void(Acquisition)> ready) {
  check_mode(mode, "hetflow::Runtime::acquire_then");
  impl_->check_not_forked("hetflow::Runtime::acquire_then");
  if (impl_->stopped()) throw ShutdownError("hetflow::Runtime::acquire_then: the runtime has been shut down");
  if (!ready) throw InvalidArgument("hetflow::Runtime::acquire_then: no function to call");
  HandleImpl& impl = check_handle(handle, *impl_, "hetflow::Runtime::acquire_then");
  auto on_start = [this, &impl, mode, ready = std::move(ready)](TaskCore* token) {
    // Handed on as they are (a send, say): a failure stays with the data for the tasks after.
    // Read and written (RW), the acquisition is their last writer: it keeps the failure
    // it read, to fail with when released (those tasks read after it, not after the writer).
    std::exception_ptr failure = detail::failure_read_by(
        token, reads(mode) && writes(mode) ? detail::TokenFailure::keep : detail::TokenFailure::take);
    void* data = detail::prepare_replica(impl, detail::kHostNode, mode);
    {
      std::lock_guard guard(impl.dep_lock);
      impl.acquisitions.push_back({token, 0});
    }
    try {
      ready(Acquisition(this, token, data, std::move(failure)));  // released unless `ready` keeps it
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented; the engine's thread must go on
    }
  };
  const AccessRecord record{&impl, mode};
  const SubmissionOn submission(&record, 1);
  if (submission.unregistered() != nullptr) refuse_unregistered(impl, *impl_, "hetflow::Runtime::acquire_then");
  impl_->submit_manual("acquire " + display_quoted(impl.name), &impl, mode, 2, std::move(on_start));
}

void Runtime::release_acquisition(TaskCore* token, std::exception_ptr error) noexcept {
  // Done already if it was released through Runtime::release (its handle may be gone since).
  if (token->status() != detail::TaskStatus::done) {
    HandleImpl& handle = *token->inline_accesses[0].handle;
    bool held = false;
    {
      std::lock_guard guard(handle.dep_lock);
      auto it = std::find_if(handle.acquisitions.begin(), handle.acquisitions.end(),
                             [token](const auto& acquisition) { return acquisition.token == token; });
      if (it != handle.acquisitions.end()) {
        handle.acquisitions.erase(it);
        held = true;
      }
    }
    impl_->note_released(token);
    if (held) detail::complete_manual(token, error ? std::move(error) : inherited_failure(token));
  }
  detail::release(token);  // the Acquisition object's reference
}

void Runtime::release(const DataHandle& handle) {
  // Another runtime's handle is refused like everywhere else (it released that runtime's
  // acquisition here, leaving that runtime counting it as still held).
  HandleImpl* impl = &check_handle(handle, *impl_, "hetflow::Runtime::release", false);
  TaskCore* token = nullptr;
  {
    std::lock_guard guard(impl->dep_lock);
    if (!impl->acquisitions.empty()) {
      token = impl->acquisitions.back().token;
      impl->acquisitions.pop_back();
    }
  }
  if (token != nullptr) impl_->note_released(token);
  if (token == nullptr) {
    throw InvalidArgument("hetflow::Runtime::release: data handle " + display_quoted(impl->name) + " is not acquired");
  }
  // The Acquisition object, if any, still holds its reference.
  detail::complete_manual(token, inherited_failure(token));
}

// Unregistering twice is harmless: the second call finds nothing to do.
void Runtime::unregister(const DataHandle& handle) {
  impl_->check_not_forked("hetflow::Runtime::unregister");
  HandleImpl& impl = check_handle(handle, *impl_, "hetflow::Runtime::unregister", false);
  // What unregistering would wait for for ever, refused while the handle is still usable.
  if (detail::running_task_uses(impl_.get(), &impl)) {
    throw InvalidArgument("hetflow::Runtime::unregister: the calling task uses " + display_quoted(impl.name) +
                          " itself, so unregistering it would wait for that task; unregister it after the task");
  }
  if (held_by_this_thread(impl, false)) {
    throw InvalidArgument("hetflow::Runtime::unregister: this thread holds an acquisition of " +
                          display_quoted(impl.name) + ", which unregistering it would wait for; release it first");
  }
  impl_->unregister(impl);
}

void Runtime::unregister_async(const DataHandle& handle) {
  impl_->check_not_forked("hetflow::Runtime::unregister_async");
  impl_->unregister_async(check_handle(handle, *impl_, "hetflow::Runtime::unregister_async", false));
}

void Runtime::discard(const DataHandle& handle) {
  impl_->check_not_forked("hetflow::Runtime::discard");
  HandleImpl& impl = check_handle(handle, *impl_, "hetflow::Runtime::discard", false);
  impl.host_gone.store(true, std::memory_order_release);
  {
    // A copy home already under way ends before the buffer may go; later ones see the flag.
    std::lock_guard guard(impl.coherence_mutex);
  }
  impl_->unregister_async(impl);
}

void Runtime::prefetch(const DataHandle& handle, unsigned node) {
  impl_->check_not_forked("hetflow::Runtime::prefetch");
  HandleImpl& impl = check_handle(handle, *impl_, "hetflow::Runtime::prefetch");
  if (node >= impl_->node_count()) {
    throw InvalidArgument("hetflow::Runtime::prefetch: no memory node " + std::to_string(node) + " (there are " +
                          std::to_string(impl_->node_count()) + ", 0 being host RAM)");
  }
  if (node == detail::kHostNode) return;  // host-side accesses bring the data home themselves
  impl_->submit_prefetch(impl, node);
}

void Runtime::watch_host_writes(const DataHandle& handle) {
  HandleImpl& impl = check_handle(handle, *impl_, "hetflow::Runtime::watch_host_writes");
  impl.host_writes_watched.store(true, std::memory_order_relaxed);
}

void Runtime::note_application_waited() noexcept { detail::application_waits.fetch_add(1, std::memory_order_relaxed); }

std::vector<std::string> Runtime::memory_nodes() const {
  std::vector<std::string> names;
  for (unsigned node = 0; node < impl_->node_count(); ++node) names.push_back(impl_->node_name(node));
  return names;
}

void Runtime::wait_all() {
  impl_->check_not_forked("hetflow::Runtime::wait_all");
  detail::check_wait_all_can_end(*this);
  if (!impl_->wait_all()) {  // without a deadline, only once shutdown_until gave up on the work
    throw CancelledError(
        "hetflow::Runtime::wait_all: the work did not finish: the runtime's shutdown_until gave up on it (the futures "
        "of the tasks it gave up on say how each ended)");
  }
}
bool Runtime::wait_all_until(std::chrono::steady_clock::time_point deadline) {
  impl_->check_not_forked("hetflow::Runtime::wait_all_until");
  return impl_->wait_all(&deadline);
}
void Runtime::shutdown() {
  if (impl_->forked()) return;  // nothing of it runs in a forked child: nothing to stop (see ~Runtime)
  impl_->shutdown();
}
// Nothing of it runs in a forked child, where aborting would end the parent's worker processes.
void Runtime::abort() {
  if (!impl_->forked()) impl_->abort();
}
void Runtime::cancel_pending() noexcept {
  if (!impl_->forked()) impl_->cancel_pending_and_dependents();
}
std::size_t Runtime::unfinished_tasks() const noexcept {
  return static_cast<std::size_t>(std::max<std::int64_t>(0, impl_->outstanding()));
}
unsigned Runtime::shutdown_until(std::chrono::steady_clock::time_point deadline) {
  if (impl_->forked()) return 0;  // as shutdown(): nothing of it runs in a forked child
  return impl_->shutdown_until(deadline);
}
bool Runtime::on_worker_thread() const noexcept { return detail::inside_task_of(impl_.get()); }
bool Runtime::current_task_uses(const DataHandle& handle) const noexcept {
  return handle.impl() != nullptr && detail::running_task_uses(impl_.get(), handle.impl());
}
bool Runtime::current_task_uses(const DataHandle& handle, AccessMode mode) const noexcept {
  return handle.impl() != nullptr && detail::running_task_uses(impl_.get(), handle.impl(), mode);
}
void Runtime::forget_failure(const DataHandle& handle) {
  detail::forgive_failed_writer(check_handle(handle, *impl_, "hetflow::Runtime::forget_failure"));
}
std::optional<std::uint64_t> Runtime::accesses_if_at_rest(const DataHandle& handle) const {
  return detail::accesses_if_at_rest(check_handle(handle, *impl_, "hetflow::Runtime::accesses_if_at_rest", false));
}
bool Runtime::is_shut_down() const noexcept { return impl_->stopped(); }
std::size_t Runtime::pinned_load(unsigned worker) const {
  if (worker >= impl_->worker_infos().size()) {
    throw InvalidArgument("hetflow::Runtime::pinned_load: no worker " + std::to_string(worker));
  }
  return impl_->pinned_load(worker);
}

double Runtime::elapsed() const noexcept { return impl_->now(); }
unsigned Runtime::worker_count() const noexcept { return static_cast<unsigned>(impl_->worker_infos().size()); }
std::span<const ext::WorkerInfo> Runtime::workers() const noexcept { return impl_->worker_infos(); }

double Runtime::now() const noexcept { return impl_->now(); }

void Runtime::trace_message(std::string_view track, std::string_view name, std::size_t bytes, double start,
                            double end) {
  const double now = impl_->now();
  if (!(start >= 0 && start <= end && end <= now)) {  // NaN too
    throw InvalidArgument("hetflow: trace_message: a message from " + std::to_string(start) + " s to " +
                          std::to_string(end) +
                          " s; give the times of a message already exchanged, on now()'s clock (" +
                          "0 <= start <= end <= " + std::to_string(now) + ")");
  }
  if (detail::Recorder* recorder = impl_->recorder()) recorder->message(track, name, bytes, start, end);
}
const std::string& Runtime::scheduler_name() const noexcept { return impl_->scheduler_name(); }
const Config& Runtime::config() const noexcept { return impl_->config; }

Acquisition::Acquisition(Acquisition&& other) noexcept
    : runtime_(std::exchange(other.runtime_, nullptr)),
      token_(std::exchange(other.token_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      failure_(std::move(other.failure_)) {
  disown();
}

Acquisition& Acquisition::operator=(Acquisition&& other) noexcept {
  if (this != &other) {
    release();
    runtime_ = std::exchange(other.runtime_, nullptr);
    token_ = std::exchange(other.token_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    failure_ = std::move(other.failure_);
    disown();
  }
  return *this;
}

void Acquisition::disown() noexcept {
  // Moved, it may be released by another thread: nobody's waits are refused on its account.
  if (token_ != nullptr && !detail::is_finished(token_)) runtime_->impl().disown(token_);
}

Acquisition::~Acquisition() { release(); }

void Acquisition::release() { end(nullptr); }

void Acquisition::release_failed(std::exception_ptr error) {
  if (token_ == nullptr) return;
  if (!error) throw InvalidArgument("hetflow::Acquisition::release_failed: no error given");
  end(std::move(error));
}

void Acquisition::end(std::exception_ptr error) noexcept {
  if (token_ == nullptr) return;
  TaskCore* token = std::exchange(token_, nullptr);
  data_ = nullptr;
  if (detail::is_finished(token)) {
    // Released already: through Runtime::release, or by the runtime's shutdown (gone, maybe).
    detail::release(token);
    return;
  }
  runtime_->release_acquisition(token, std::move(error));
}

}  // namespace hetflow

namespace hetflow::detail {

namespace {
thread_local std::uint64_t tl_acting_for = 0;

// Waits for the submissions that found `handle` registered to have put their tasks in the graph.
void wait_for_submissions_on(const HandleImpl& handle) {
  while (handle.submitting.load() != 0) std::this_thread::yield();
}
}  // namespace

std::uint64_t thread_number() noexcept {
  static std::atomic<std::uint64_t> next{1};
  thread_local const std::uint64_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return tl_acting_for != 0 ? tl_acting_for : mine;
}

std::uint64_t act_for_thread(std::uint64_t number) noexcept { return std::exchange(tl_acting_for, number); }

TaskCore* Engine::submit_manual(std::string name, HandleImpl* handle, AccessMode mode, std::uint32_t refs,
                                ManualCallback on_start) {
  check_not_forked("hetflow");
  TaskCore* token = allocate_task();
  token->runtime = this;
  token->ops = &kNoBody;
  token->flags = TaskCore::kManual;
  if (on_start) {
    static_assert(sizeof(ManualCallback) <= TaskCore::kInlineStorage);
    new (token->inline_storage) ManualCallback(std::move(on_start));
    token->flags |= TaskCore::kCallsBack;
  }
  token->refs.store(refs, std::memory_order_relaxed);
  token->pending.store(1, std::memory_order_relaxed);
  token->name = std::make_unique<std::string>(std::move(name));
  if (handle != nullptr) {
    token->inline_accesses[0] = {handle, mode};
    token->access_count = 1;
  }
  submit(token, {});
  return token;
}

namespace {

// An unregister whose wait could never end (through other tasks, for what this thread holds).
[[noreturn]] void throw_refused_unregister(const Error& refusal) {
  throw InvalidArgument("hetflow::Runtime::unregister: " + std::string(refusal.what()) +
                        "; the handle is unregistered once the tasks using it end, as by unregister_async");
}

}  // namespace

void Engine::unregister(HandleImpl& handle) {
  if (!handle.registered.exchange(false)) {
    // Being let go already (unregister_async, another thread, an unregister refused before): on
    // return the latest data must be in the user's buffer all the same. The letting go waits for
    // the handle's last writer (its token, once submitted): a wait for that which could never end
    // (it waits for what this thread holds) is refused as the first unregister refuses it.
    while (!handle.let_go.load(std::memory_order_acquire)) {
      TaskCore* writer = nullptr;
      {
        std::lock_guard guard(handle.dep_lock);
        writer = handle.last_writer;
        if (writer != nullptr) retain(writer);
      }
      if (writer == nullptr || writer->status() != TaskStatus::pending) {
        if (writer != nullptr) release(writer);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        continue;
      }
      try {
        wait_until_started(writer);
      } catch (const Error& refusal) {
        release(writer);
        throw_refused_unregister(refusal);
      }
      release(writer);
    }
    return;
  }
  wait_for_submissions_on(handle);
  TaskCore* token = submit_manual("unregister " + display_quoted(handle.name), &handle, AccessMode::RW, 1);
  try {
    wait_until_started(token);
  } catch (const Error& refusal) {
    // It waits for the calling task or for an acquisition this thread holds, through other
    // tasks: it lets the handle go when it starts, as unregister_async does, rather than stay
    // in the graph for ever (at once, if that was released meanwhile).
    if (!give_up_on_start(token, TaskCore::kUnregisters)) complete_unregistration(token);
    throw_refused_unregister(refusal);
  }
  complete_unregistration(token);
}

void Engine::unregister_async(HandleImpl& handle) {
  if (!handle.registered.exchange(false)) return;
  wait_for_submissions_on(handle);
  TaskCore* token = allocate_task();
  token->runtime = this;
  token->ops = &kNoBody;
  token->flags = TaskCore::kManual | TaskCore::kUnregisters;
  token->refs.store(1, std::memory_order_relaxed);
  token->pending.store(1, std::memory_order_relaxed);
  token->inline_accesses[0] = {&handle, AccessMode::RW};
  token->access_count = 1;
  submit(token, {});  // completes the unregistration at once, or when the last user finishes
}

// The token (RW on the handle) has started: no task uses the handle any more.
void Engine::complete_unregistration(TaskCore* token) noexcept {
  HandleImpl& handle = *token->inline_accesses[0].handle;
  std::shared_ptr<HandleImpl> keep;  // the registry may hold the last reference
  try {
    // The latest version back in the user's buffer, unless that is gone (discard).
    if (!handle.host_gone.load(std::memory_order_acquire)) prepare_replica(handle, kHostNode, AccessMode::R);
  } catch (...) {
    // A failed copy home cannot be reported from here; the host buffer keeps what it had.
  }
  drop_device_replicas(handle);
  for (unsigned node = 1; node < node_count(); ++node) {
    node_memory(node).device().host_buffer_removed(handle.host_ptr(), handle.layout.span_bytes());
  }
  registered_memory_.remove(handle);
  {
    std::lock_guard guard(registry_mutex_);
    std::size_t index = handle.registry_index;
    keep = registry_[index];
    std::swap(registry_[index], registry_.back());
    registry_[index]->registry_index = index;
    registry_.pop_back();
  }
  complete_manual(token);
  handle.forget_tasks();
  handle.let_go.store(true, std::memory_order_release);
}

}  // namespace hetflow::detail
