// _hetflow_mpi: hetflow::mpi for the Python package (hetflow.mpi). A context over the engine of
// a hetflow runtime and the ranks of MPI_COMM_WORLD, or of a communicator of mpi4py's; the main
// extension submits tasks over distributed arrays through its router.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "finalizing.hpp"
#include "hetflow/hetflow.hpp"
#include "hetflow/mpi.hpp"
#include "mpi_router.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hetflow::python {
namespace {

/// Runs a Python function from a reduction's codelet on a CPU worker: `function(address, ...)`
/// with the addresses of the task's buffers. A Python error becomes a hetflow::Error with its
/// text, so that nothing Python is left to release without the GIL.
void call_with_buffers(PyObject* function, const TaskContext& context) {
  const PyGILState_STATE gil = ensure_gil();
  PyObject* arguments = PyTuple_New(static_cast<Py_ssize_t>(context.buffer_count()));
  for (std::size_t i = 0; arguments != nullptr && i < context.buffer_count(); ++i) {
    PyTuple_SET_ITEM(arguments, static_cast<Py_ssize_t>(i),
                     PyLong_FromUnsignedLongLong(reinterpret_cast<std::uintptr_t>(context.buffer(i).ptr)));
  }
  PyObject* result = arguments != nullptr ? PyObject_Call(function, arguments, nullptr) : nullptr;
  Py_XDECREF(arguments);
  if (result != nullptr) {
    Py_DECREF(result);
    PyGILState_Release(gil);
    return;
  }
  std::string text = "a Python error";
#if PY_VERSION_HEX >= 0x030C0000
  PyObject* error = PyErr_GetRaisedException();
#else
  PyObject* kind = nullptr;
  PyObject* error = nullptr;
  PyObject* traceback = nullptr;
  PyErr_Fetch(&kind, &error, &traceback);
  PyErr_NormalizeException(&kind, &error, &traceback);
  Py_XDECREF(kind);
  Py_XDECREF(traceback);
#endif
  if (error != nullptr) {
    PyObject* described = PyObject_Str(error);
    const char* utf8 = described != nullptr ? PyUnicode_AsUTF8(described) : nullptr;
    text = std::string(Py_TYPE(error)->tp_name) + ": " + (utf8 != nullptr ? utf8 : "?");
    Py_XDECREF(described);
    Py_DECREF(error);
  }
  PyErr_Clear();
  PyGILState_Release(gil);
  throw Error("hetflow.mpi: the reduction's function failed: " + text);
}

class ContextRouter final : public Router {
 public:
  ContextRouter(Runtime& runtime, std::shared_ptr<mpi::Transport> transport)
      : context_(runtime, std::move(transport)) {}
  [[nodiscard]] int rank() const override { return context_.rank(); }
  [[nodiscard]] int executor(const TaskOptions& options, std::optional<int> rank) const override {
    return context_.executor(options, placement(rank));
  }
  void route(const TaskOptions& options, std::optional<int> rank, std::string_view label) override {
    static_cast<void>(context_.route(options, placement(rank), label));
  }
  [[nodiscard]] mpi::Context& context() noexcept { return context_; }

  /// A reduction whose init and combine call Python functions (kept alive by the caller for the
  /// context's lifetime).
  void set_reduction(const DataHandle& handle, PyObject* init, PyObject* combine, const std::string& name) {
    const Codelet& init_codelet = codelets_.emplace_back(
        Codelet{.name = "init " + name, .cpu = [init](TaskContext& task) { call_with_buffers(init, task); }});
    const Codelet& combine_codelet = codelets_.emplace_back(
        Codelet{.name = "combine " + name, .cpu = [combine](TaskContext& task) { call_with_buffers(combine, task); }});
    context_.set_reduction(handle, init_codelet, combine_codelet);
  }

 private:
  static mpi::Placement placement(std::optional<int> rank) { return {.rank = rank.value_or(-1)}; }
  std::deque<Codelet> codelets_;  // outlive the context's tasks: destroyed after it
  mpi::Context context_;
};

/// The ranks: of MPI_COMM_WORLD, or of the communicator at `communicator` (an MPI_Comm's address).
class RankTransport {
 public:
  explicit RankTransport(std::optional<std::uintptr_t> communicator)
      : transport_(communicator ? mpi::over_communicator(reinterpret_cast<const void*>(*communicator)) : mpi::world()) {
  }
  [[nodiscard]] int rank() const { return transport_->rank(); }
  [[nodiscard]] int size() const { return transport_->size(); }
  /// This rank's share of the machine's CPUs (before the runtime starts): how many.
  unsigned share_node() { return mpi::share_node(*transport_); }
  [[nodiscard]] const std::shared_ptr<mpi::Transport>& get() const noexcept { return transport_; }

 private:
  std::shared_ptr<mpi::Transport> transport_;
};

const DataHandle& handle_of(nb::handle capsule) { return from_capsule<DataHandle>(capsule.ptr(), kDataHandleCapsule); }

/// One rank's context, over the engine given as a capsule (kept alive by the caller).
class RankContext {
 public:
  RankContext(nb::handle engine, const RankTransport& transport) {
    auto* runtime = static_cast<Runtime*>(PyCapsule_GetPointer(engine.ptr(), kEngineCapsule));
    if (runtime == nullptr) throw nb::python_error();
    router_ = std::make_shared<ContextRouter>(*runtime, transport.get());
  }

  [[nodiscard]] int rank() const { return context().rank(); }
  [[nodiscard]] int size() const { return context().size(); }

  /// The router for the main extension, as a capsule.
  nb::object router() {
    PyObject* capsule = owning_capsule<std::shared_ptr<Router>>(router_, kRouterCapsule);
    if (capsule == nullptr) throw nb::python_error();
    return nb::steal(capsule);
  }

  /// Registers the array at `address`, elements of `itemsize` bytes in dimensions `dims`
  /// (the contiguous one first, at most DataLayout::kMaxDims; empty for an empty array): the
  /// submission check compares the layouts, so arrays of another dtype, shape or memory order on
  /// other ranks are told. The handle as a capsule.
  nb::object register_array(std::uintptr_t address, std::size_t itemsize, const std::vector<std::size_t>& dims,
                            int owner, int tag, const std::string& name) {
    // An empty array takes no byte (the registry counts one for its own sake): a byte would be
    // received past its end, over another array's.
    DataLayout layout = DataLayout::vector(0, 1);
    if (!dims.empty()) {
      std::vector<std::size_t> strides(dims.size(), 1);
      for (std::size_t d = 1; d < dims.size(); ++d) strides[d] = strides[d - 1] * dims[d - 1];
      layout = DataLayout::block(dims.size(), dims.data(), strides.data(), itemsize);
    }
    DataHandle handle = context().register_data(reinterpret_cast<void*>(address), layout, owner, tag, name);
    PyObject* capsule = owning_capsule<DataHandle>(std::move(handle), kDataHandleCapsule);
    if (capsule == nullptr) throw nb::python_error();
    return nb::steal(capsule);
  }

  int allocate_tags(int count) { return context().allocate_tags(count); }
  [[nodiscard]] int owner(nb::handle handle) const { return context().owner(handle_of(handle)); }
  [[nodiscard]] int holder(nb::handle handle) const { return context().holder(handle_of(handle)); }
  void get_on(nb::handle handle, int rank) { context().get_on(handle_of(handle), rank); }
  void migrate(nb::handle handle, int rank) { context().migrate(handle_of(handle), rank); }
  void broadcast(nb::handle handle) { context().broadcast(handle_of(handle)); }

  /// `init(address)` sets a rank's contributions to the neutral value, `combine(into, from)` adds
  /// one rank's into the data (addresses of the buffers).
  void set_reduction(nb::handle handle, nb::callable init, nb::callable combine, const std::string& name) {
    check_open();
    functions_.push_back(init);
    functions_.push_back(combine);
    router_->set_reduction(handle_of(handle), init.ptr(), combine.ptr(), name);
  }
  void flush(nb::handle handle) { context().flush(handle_of(handle)); }
  void flush_all() { context().flush_all(); }

  void wait_all() { wait_with_the_ranks(&mpi::Context::wait_all); }
  void check_submissions() { wait_with_the_ranks(&mpi::Context::check_submissions); }

  void interrupt_wait_all() {
    if (router_) router_->context().interrupt_wait_all();
  }

  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> sent() const {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    for (const auto& peer : context().sent()) out.emplace_back(peer.messages, peer.bytes);
    return out;
  }

  /// Lets go of the context without ending it: in a forked child, or at exit with transfers
  /// that will not finish (ending it would wait for them).
  void forget() { static_cast<void>(new std::shared_ptr<ContextRouter>(std::move(router_))); }

  /// Ends the context: waits for the transfers still in flight (not for the tasks; at exit, at
  /// most `exit_patience_s`, then tells the others and leaves them), and, unless the process is
  /// exiting, for the other ranks to end theirs.
  void close(bool at_exit, double exit_patience_s) {
    std::shared_ptr<ContextRouter> router = std::move(router_);
    if (!router) return;
    if (at_exit) router->context().ending_with_process(std::chrono::duration<double>(exit_patience_s));
    router->context().interrupt_wait_all();  // a wait left running on another thread ends first
    GilReleased release;
    {
      std::unique_lock lock(in_progress_mutex_);
      in_progress_ended_.wait(lock, [this] { return in_progress_ == 0; });
    }
    router.reset();
  }

 private:
  void check_open() const {
    if (!router_) throw std::runtime_error("hetflow.mpi: the context has been closed");
  }

  /// Counted while it runs, so that close() waits for it to end before destroying the context
  /// (a wait interrupted by Ctrl-C goes on on its thread until interrupt_wait_all ends it).
  void wait_with_the_ranks(void (mpi::Context::*call)()) {
    std::shared_ptr<ContextRouter> router = router_;
    check_open();
    std::exception_ptr failure;
    {
      GilReleased release;  // the tasks waited for (or given up on after a divergence) need it
      {
        const InProgress counted(*this);
        try {
          (router->context().*call)();
        } catch (...) {
          failure = std::current_exception();
        }
        router.reset();  // before the count drops: close() destroys the context, not this thread
      }
    }
    if (failure) std::rethrow_exception(failure);
  }
  [[nodiscard]] mpi::Context& context() const {
    check_open();
    return router_->context();
  }

  struct InProgress {
    explicit InProgress(RankContext& counted) : owner(counted) {
      std::lock_guard lock(owner.in_progress_mutex_);
      ++owner.in_progress_;
    }
    ~InProgress() {
      std::lock_guard lock(owner.in_progress_mutex_);
      if (--owner.in_progress_ == 0) owner.in_progress_ended_.notify_all();
    }
    InProgress(const InProgress&) = delete;
    InProgress& operator=(const InProgress&) = delete;
    RankContext& owner;
  };

  std::shared_ptr<ContextRouter> router_;
  std::vector<nb::object> functions_;  // the reductions' Python functions
  std::mutex in_progress_mutex_;
  std::condition_variable in_progress_ended_;
  int in_progress_ = 0;  // wait_all calls running
};

}  // namespace
}  // namespace hetflow::python

NB_MODULE(_hetflow_mpi, m) {
  using namespace hetflow::python;
  m.doc() = "hetflow across MPI ranks; use hetflow.mpi, not this module.";
  m.attr("EVERY_RANK") = hetflow::mpi::kEveryRank;
  m.def("abort_all", &hetflow::mpi::abort_all, "code"_a);
  m.def(
      "close_gil_gate",
      [](double patience_s) { close_gil_gate(std::chrono::milliseconds(static_cast<long>(patience_s * 1000))); },
      "patience_s"_a);
  nb::class_<RankTransport>(m, "Transport")
      .def(nb::init<std::optional<std::uintptr_t>>(), "communicator"_a = nb::none())
      .def("rank", &RankTransport::rank)
      .def("size", &RankTransport::size)
      .def("share_node", &RankTransport::share_node);
  nb::class_<RankContext>(m, "Context")
      .def(nb::init<nb::handle, const RankTransport&>(), "engine"_a, "transport"_a)
      .def("rank", &RankContext::rank)
      .def("size", &RankContext::size)
      .def("router", &RankContext::router)
      .def("register_array", &RankContext::register_array, "address"_a, "itemsize"_a, "dims"_a, "owner"_a, "tag"_a,
           "name"_a)
      .def("allocate_tags", &RankContext::allocate_tags, "count"_a)
      .def("owner", &RankContext::owner, "handle"_a)
      .def("holder", &RankContext::holder, "handle"_a)
      .def("get_on", &RankContext::get_on, "handle"_a, "rank"_a)
      .def("migrate", &RankContext::migrate, "handle"_a, "rank"_a)
      .def("broadcast", &RankContext::broadcast, "handle"_a)
      .def("set_reduction", &RankContext::set_reduction, "handle"_a, "init"_a, "combine"_a, "name"_a)
      .def("flush", &RankContext::flush, "handle"_a)
      .def("flush_all", &RankContext::flush_all)
      .def("wait_all", &RankContext::wait_all)
      .def("check_submissions", &RankContext::check_submissions)
      .def("interrupt_wait_all", &RankContext::interrupt_wait_all)
      .def("sent", &RankContext::sent)
      .def("close", &RankContext::close, "at_exit"_a, "exit_patience_s"_a)
      .def("forget", &RankContext::forget);
}
