"""The runtime behind the module-level API: starting, configuring and stopping it."""
from __future__ import annotations

import atexit
import functools
import os
import pickle
import sys
import threading
from typing import Any, Callable, Optional

from hetflow._args import find_futures, substitute
from hetflow._arrays import Access
from hetflow._errors import freeze_exception
from hetflow._future import Future
from hetflow._serialize import function_entry

EXECUTORS = ("thread", "process")


def default_executor() -> str:
    """``process`` on a Python with a GIL (real parallelism for pure Python), else ``thread``.

    Inside a worker process it is ``thread``: a task that submits tasks should not start a
    second pool of processes.
    """
    if os.environ.get("HETFLOW_WORKER_ID") is not None:
        return "thread"
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    return "process" if gil_enabled else "thread"


def check_executor(executor: str) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"hetflow: unknown executor {executor!r}; use 'thread' or 'process'")
    return executor


def _env_int(name: str) -> Optional[int]:
    text = os.environ.get(name)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"hetflow: {name}={text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"hetflow: {name}={text!r} must not be negative")
    return value


def _is_future(value: Any) -> bool:
    return isinstance(value, Future)


def _resolve(future: Future) -> Any:
    return future.result()


def resolve_settings(
    ncpus: Optional[int],
    sched: Optional[str],
    executor: Optional[str],
    nprocs: Optional[int],
    spin_us: Optional[int],
    trace: Optional[str] = None,
    stats: Optional[bool] = None,
) -> tuple:
    """Checks init()'s settings (before anything is stopped or started); returns the executor,
    ncpus and nprocs with defaults filled in."""
    from hetflow import _hetflow

    def count(value: Any, name: str, least: int) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            kind = "a positive int" if least else "an int of 0 or more"
            raise ValueError(f"hetflow.init: {name} must be {kind}, not {value!r}")

    if trace is not None and not isinstance(trace, (str, os.PathLike)):
        raise ValueError(f"hetflow.Runtime: trace must be a path, not {trace!r}")
    if stats is not None and not isinstance(stats, bool):
        raise ValueError(f"hetflow.Runtime: stats must be True or False, not {stats!r}")
    count(ncpus, "ncpus", 1)
    count(nprocs, "nprocs", 0)
    count(spin_us, "spin_us", 0)
    if sched is not None and sched not in _hetflow.schedulers():
        raise ValueError(
            f"hetflow.init: unknown scheduler {sched!r}; known schedulers: {', '.join(_hetflow.schedulers())}"
        )
    executor = check_executor(executor or os.environ.get("HETFLOW_EXECUTOR") or default_executor())
    if ncpus is None:
        ncpus = _env_int("HETFLOW_NCPUS") or len(os.sched_getaffinity(0))
    if nprocs is None:
        nprocs = _env_int("HETFLOW_NPROCS")
    if nprocs is None:
        nprocs = ncpus
    return executor, ncpus, nprocs


class Runtime:
    """One engine: CPU workers for the thread executor and worker processes for the process
    executor. Made by ``hetflow.init()`` or on first use; see there.

    trace: a path where a Chrome trace (JSON, opens in Perfetto) is written at shutdown; stats:
    print per-worker and per-transfer statistics on stderr at shutdown. None leaves them to
    ``HETFLOW_TRACE`` and ``HETFLOW_STATS`` (docs/traces.md)."""

    def __init__(
        self,
        ncpus: Optional[int] = None,
        sched: Optional[str] = None,
        executor: Optional[str] = None,
        nprocs: Optional[int] = None,
        spin_us: Optional[int] = None,
        trace: Optional[str] = None,
        stats: Optional[bool] = None,
    ) -> None:
        from hetflow import _hetflow, _protocol  # the engine loads on first use, not at import

        self.executor, ncpus, nprocs = resolve_settings(ncpus, sched, executor, nprocs, spin_us, trace, stats)
        if trace is not None:
            trace = os.fspath(trace)
        self.ncpus = ncpus
        self.nprocs = nprocs
        self.interrupted = False  # a wait on this runtime was interrupted (Ctrl-C)
        self._engine = _hetflow.Runtime(
            ncpus=ncpus,
            scheduler=sched,
            nprocs=nprocs,
            worker_command=[sys.executable, "-m", "hetflow._worker"],
            worker_environment=[*_protocol.worker_environment(), f"HETFLOW_NUM_CORES={nprocs}"],
            spin_us=spin_us,
            dumps=_dumps_value,
            freeze=freeze_exception,
            trace=trace,
            stats=stats,
        )
        self._function_ids: dict = {}  # function key -> the engine's id for it
        self._handles: Optional[Any] = None
        self._dispatcher: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._closed = False

    # -- submission ----------------------------------------------------------------------------
    def submit(
        self,
        func: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        *,
        executor: Optional[str] = None,
        name: Optional[str] = None,
        priority: int = 0,
        perfmodel: Optional[str] = None,
        size: Optional[int] = None,
    ) -> Future:
        if not callable(func):
            raise TypeError(f"hetflow: {func!r} is not callable")
        if self._closed:
            raise RuntimeError("hetflow: cannot submit a task: the runtime has been shut down")
        executor = check_executor(executor) if executor is not None else self.executor
        if type(priority) is not int:
            raise TypeError(f"hetflow: priority must be an int, not {type(priority).__name__}")
        name = name or getattr(func, "__name__", None) or type(func).__name__
        if perfmodel is None and _all_plain(args, kwargs):
            # The common case, kept short: nothing to wait for, no data, no model.
            if executor == "thread":
                task = self._engine.submit_thread(functools.partial(func, *args, **kwargs), _NONE, _NONE, name, priority)
                return Future(task, self, name)
            if self.nprocs:
                key, code = function_entry(func)
                call = pickle.dumps((args, kwargs), protocol=5)
                task = self._engine.submit_process(self._function_id(key, code), call, _NONE, _NONE, name, priority)
                return Future(task, self, name)
        if executor == "process" and self.nprocs == 0:
            raise ValueError("hetflow: executor='process' but the runtime has no worker processes (nprocs=0)")
        data = _find_data(args, kwargs)
        if executor == "process":
            from hetflow._serialize import pack_call

            arrays: list = []
            if data:
                args, kwargs, arrays = self._data_for_process(args, kwargs)
            packed = pack_call(func, args, kwargs, _is_future, reduces_to_placeholder=True)
            deps = [f._task for f in packed.futures]
            task = self._engine.submit_process(
                self._function_id(packed.func_key, packed.func_bytes), packed.call_bytes, deps, arrays, name, priority,
                perfmodel=perfmodel, size=_size(args, kwargs, size) if perfmodel else 0,
            )
        else:
            accesses: list = []
            if data:
                args, kwargs, accesses = self._data_for_thread(args, kwargs)
            futures = find_futures(args, kwargs, _is_future) if args or kwargs else []
            if futures:
                call = functools.partial(_call_resolved, func, args, kwargs)
            else:
                call = functools.partial(func, *args, **kwargs)
            task = self._engine.submit_thread(
                call, [f._task for f in futures], accesses, name, priority,
                perfmodel=perfmodel, size=_size(args, kwargs, size) if perfmodel else 0,
            )
        return Future(task, self, name)

    def _function_id(self, key: str, code: bytes) -> int:
        function_id = self._function_ids.get(key)
        if function_id is None:
            function_id = self._function_ids[key] = self._engine.register_function(key, code)
        return function_id

    # -- cores (offload) ---------------------------------------------------------------------------
    def open_launch(self, launch: int, size: int) -> None:
        self._engine.open_launch(launch, size)

    def core_load(self, core: int) -> int:
        """Unfinished tasks pinned to core ``core`` (its process worker)."""
        return self._engine.pinned_load(self.ncpus + core)

    def submit_to_core(self, core: int, func: Callable[..., Any], args: tuple, name: str, launch: int = 0) -> Future:
        """Runs ``func(*args)`` on process worker ``core`` only, after what was sent there before;
        ``launch`` names the offload launch it is a kernel of (0: none)."""
        if self._closed:
            raise RuntimeError("hetflow: cannot submit a task: the runtime has been shut down")
        from hetflow._serialize import pack_call

        packed = pack_call(func, args, {}, _is_future, reduces_to_placeholder=True)
        deps = [f._task for f in packed.futures]
        task = self._engine.submit_process(
            self._function_id(packed.func_key, packed.func_bytes), packed.call_bytes, deps, [], name, 0,
            worker=self.ncpus + core, launch=launch,
        )
        return Future(task, self, name)

    # -- data --------------------------------------------------------------------------------------
    @property
    def handles(self) -> Any:
        if self._handles is None:
            from hetflow._data import HandleRegistry

            with self._lock:
                if self._handles is None:
                    self._handles = HandleRegistry(self._engine)
        return self._handles

    def _data_for_thread(self, args: tuple, kwargs: dict) -> tuple:
        """Unwraps access marks; returns the engine accesses [(handle, mode)] of the arrays."""
        accesses: list = []

        def take(value: Any) -> Any:
            value, mode = _unwrap(value)
            if _is_array(value):
                accesses.append((self.handles.handle(value, mode)[0], mode))
            return value

        return tuple(take(v) for v in args), {k: take(v) for k, v in kwargs.items()}, accesses

    def _data_for_process(self, args: tuple, kwargs: dict) -> tuple:
        """Replaces each array by an ArrayRef; returns the engine's array specs in ArrayRef order."""
        from hetflow._arrays import ArrayRef

        arrays: list = []
        index_of: dict = {}

        def take(value: Any) -> Any:
            value, mode = _unwrap(value)
            if not _is_array(value):
                return value
            index = index_of.get(id(value))
            if index is None:
                handle, address, nbytes = self.handles.handle(value, mode)
                index = index_of[id(value)] = len(arrays)
                arrays.append((handle, mode, address, nbytes, value))
            elif "W" in mode and "W" not in arrays[index][1]:
                entry = arrays[index]
                arrays[index] = (entry[0], "RW", *entry[2:])
            return ArrayRef.of(index, value)

        return tuple(take(v) for v in args), {k: take(v) for k, v in kwargs.items()}, arrays

    # -- completion notices ----------------------------------------------------------------------
    def watch(self, future: Future) -> None:
        """Has ``future._fire()`` called on the dispatcher thread once its task finishes."""
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="hetflow-completions", daemon=True)
                self._dispatcher.start()
        self._engine.watch(future._task, future)

    def _dispatch(self) -> None:
        while True:
            for future in self._engine.drain_completions(100):
                future._fire()
            if self._engine.is_shut_down() and self._closed:
                for future in self._engine.drain_completions(0):
                    future._fire()
                return

    # -- lifecycle -------------------------------------------------------------------------------
    def wait_all(self, timeout: Optional[float] = None) -> bool:
        try:
            return self._engine.wait_all(timeout)
        except KeyboardInterrupt:
            self.interrupted = True
            raise

    def shutdown(self) -> None:
        """Waits for the submitted work, then stops. If a wait on this runtime was interrupted
        (Ctrl-C), or this wait is, it gives up instead: tasks not started are cancelled and the
        worker processes are ended."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.interrupted:
                while not self._engine.wait_all(0.2):
                    pass
        except KeyboardInterrupt:
            self.interrupted = True
        if self.interrupted:
            self._engine.abort()
        self._engine.shutdown()
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(timeout=5)

    def workers(self) -> list:
        return self._engine.workers()

    @property
    def scheduler(self) -> str:
        return self._engine.scheduler_name()


def _dumps_value(value: Any) -> bytes:
    # cloudpickle is imported only once a process task needs it.
    from hetflow._serialize import dumps_value

    return dumps_value(value)


def _size(args: tuple, kwargs: dict, size: Optional[int]) -> int:
    """The size a task's time is recorded under: given, or the total length of its arguments
    (elements of arrays and sequences, 1 for anything else)."""
    if size is not None:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"hetflow: size must be a non-negative int, not {size!r}")
        return size
    total = 0
    for value in (*args, *kwargs.values()):
        value = value.value if type(value) is Access else value
        length = getattr(value, "size", None) if _is_array(value) else None
        if length is None:
            try:
                length = len(value)
            except TypeError:
                length = 1
        total += int(length)
    return total


def _is_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _unwrap(value: Any) -> tuple:
    if type(value) is Access:
        return value.value, value.mode
    return value, "R"


_NONE: list = []
_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


def _all_plain(args: tuple, kwargs: dict) -> bool:
    """True when every argument is a number, string or None: no future, array or access mark."""
    for value in args:
        if type(value) not in _PLAIN:
            return False
    if kwargs:
        for value in kwargs.values():
            if type(value) not in _PLAIN:
                return False
    return True


def _find_data(args: tuple, kwargs: dict) -> bool:
    """True if a top-level argument is an array or carries an access mode."""
    return any(type(value) is Access or _is_array(value) for value in (*args, *kwargs.values()))


def _call_resolved(func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    return func(*substitute(args, _is_future, _resolve), **substitute(kwargs, _is_future, _resolve))


_current: Optional[Runtime] = None
_current_lock = threading.RLock()


def current() -> Runtime:
    """The running runtime, started with defaults on first use."""
    global _current
    runtime = _current
    if runtime is not None:
        return runtime
    with _current_lock:
        if _current is None:
            _current = Runtime()
        return _current


def start(**settings: Any) -> Runtime:
    global _current
    resolve_settings(**settings)  # a bad setting leaves the running runtime alone
    with _current_lock:
        if _current is not None:
            _current.shutdown()
            _current = None
        _current = Runtime(**settings)
        return _current


def stop() -> None:
    global _current
    with _current_lock:
        if _current is not None:
            _current.shutdown()
            _current = None


atexit.register(stop)
