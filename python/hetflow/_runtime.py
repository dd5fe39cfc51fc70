"""The runtime behind the module-level API: starting, configuring and stopping it."""
from __future__ import annotations

import atexit
import functools
import inspect
import numbers
import os
import pickle
import queue
import reprlib
import sys
import threading
import time
import types
import weakref
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

from hetflow import _errors, _kernel
from hetflow._args import FutureSearch
from hetflow._arrays import Access, ArrayRef, ReadOnlyCopy
from hetflow._data import (
    _BIT_MODES,
    _MODE_BITS,
    HandleRegistry,
    _InterruptsHeld,
    engine_accesses,
    refuse_copy_beyond_memory,
)
from hetflow._errors import (
    HIDDEN_FRAMES,
    INTERRUPTIONS,
    CancelledError,
    HetflowError,
    SettingTypeError,
    freeze_exception,
    let_go_of_all_frames,
    returned_coroutine,
)
from hetflow._future import _GIVE_UP_CHECK_S, Future
from hetflow._serialize import (
    _PLAIN,
    all_plain,
    dumps_value,
    find_nested,
    function_for_call,
    is_array,
    loaded_numpy,
    pack_call,
    utf8_text,
)

EXECUTORS = ("thread", "process")
_CO_ASYNC = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
# Far beyond any machine, yet small enough for the engine (and the system) to take.
MAX_NCPUS = 4096
MAX_NPROCS = 1024
MAX_SPIN_US = 10_000_000
MAX_NCUDA = 4096  # as the CUDA driver reads HETFLOW_NCUDA
# After an abort, how long the work given up on has to end before its workers are left behind.
_ABORT_GRACE_S = 0.5
# Device writes noted (Runtime.note_device_writes) beyond which those of freed buffers are dropped.
_DEVICE_WRITES_PURGE_AT = 1024
# A callback running this long with others queued behind it is taken to be waiting (perhaps for
# one of those): the callbacks after it go on on a new thread.
_CALLBACK_STALL_S = 0.1


def default_executor() -> str:
    """``process`` on a Python with a GIL (real parallelism for pure Python), else ``thread``.

    Inside a worker process it is ``thread``: a task that submits tasks should not start a
    second pool of processes.
    """
    if _kernel.worker_index is not None:
        return "thread"
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    return "process" if gil_enabled else "thread"


def starts_processes_lazily(executor: str, explicit_nprocs: bool = False) -> bool:
    """Whether a runtime starts its worker processes only as they are first needed (each at its
    first task: a process task, an offload kernel), rather than as it starts: when its default
    executor is ``thread`` and ``nprocs`` was not given. A runtime whose default executor is
    ``process``, or that was asked for worker processes by number, starts them up front, so
    that its first tasks do not wait for interpreters to start."""
    return executor == "thread" and not explicit_nprocs


def _worker_trace_path() -> Optional[str]:
    """In a worker process, where HETFLOW_TRACE puts the trace of a runtime a task starts there:
    beside the host's, not over it ("trace.json" -> "trace-worker0.json" in worker 0)."""
    path = os.environ.get("HETFLOW_TRACE")
    if not path or _kernel.worker_index is None:
        return None  # the engine reads HETFLOW_TRACE itself
    stem, extension = os.path.splitext(path)
    return f"{stem}-worker{_kernel.worker_index}{extension}"


def check_executor(executor: str) -> str:
    if not isinstance(executor, str):
        raise SettingTypeError(
            f"hetflow: executor must be 'thread' or 'process', not {type(executor).__name__} {reprlib.repr(executor)}"
        )
    if executor not in EXECUTORS:
        raise ValueError(f"hetflow: unknown executor {reprlib.repr(executor)}; use 'thread' or 'process'")
    return executor


def _env_int(name: str, most: int) -> Optional[int]:
    """A count from the environment, read as the engine reads its own (src/core/config.cpp): None
    when unset or empty, else ASCII digits only, from 0 to ``most``. (int() also took "1_0", " 2",
    "+3" and other scripts' digits, which the engine and its C++ programs refuse.)"""
    text = os.environ.get(name)
    if not text:
        return None
    significant = text.lstrip("0") or "0"  # int() refuses strings of thousands of digits
    if not (text.isascii() and text.isdigit()) or len(significant) > len(str(most)) or int(significant) > most:
        raise ValueError(f"hetflow: {name}='{text}' is not a whole number from 0 to {most}")
    return int(significant)


def _env_ncpus() -> Optional[int]:
    """``HETFLOW_NCPUS``, refused with the engine's own message."""
    try:
        ncpus = _env_int("HETFLOW_NCPUS", MAX_NCPUS)
        if ncpus != 0:
            return ncpus
    except ValueError:
        pass
    raise ValueError(
        f"hetflow: HETFLOW_NCPUS must be a positive whole number, not '{os.environ.get('HETFLOW_NCPUS')}' (at most "
        f"{MAX_NCPUS}; unset, one worker per CPU this process may use)"
    )


# The engine keeps priorities in a C int.
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1


def check_priority(priority: Any) -> int:
    """A task priority: an int or a numpy integer (not a bool) in the engine's range, as an int;
    higher runs earlier."""
    if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
        raise TypeError(
            f"hetflow: priority must be an int (higher runs earlier, 0 by default), not {type(priority).__name__} "
            f"{priority!r}"
        )
    priority = int(priority)
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"hetflow: priority={priority} is out of range; use an int from {MIN_PRIORITY} to {MAX_PRIORITY}")
    return priority


def check_name(name: Any) -> Optional[str]:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"hetflow: name must be a str (shown in errors and traces) or None, not {type(name).__name__}")
    return name


def _checked_timeout(timeout: Any, where: str) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{where}: timeout must be None (no limit) or a number of seconds >= 0, not {timeout!r}")
    if timeout != timeout or timeout < 0:
        raise ValueError(f"{where}: timeout must be None (no limit) or a number of seconds >= 0, not {timeout!r}")
    return float(timeout) if timeout < 1e9 else None  # longer than any run: no limit


def check_flag(value: Any, where: str) -> bool:
    """``value`` as a bool (True, False or a numpy bool); else a TypeError naming ``where``, as
    ``"hetflow.map: progress"``. A flag of another type was taken for its truth value."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")):
        return bool(value)
    raise TypeError(f"{where} must be True or False, not {type(value).__name__} {reprlib.repr(value)}")


def _is_future(value: Any) -> bool:
    return isinstance(value, Future)


def _resolve(future: Future) -> Any:
    return future.result()


@dataclass(frozen=True)
class Settings:
    """A runtime's settings, as ``hetflow.init`` and :class:`Runtime` take them (see
    ``hetflow.init`` for each), checked when made: a bad one raises ValueError (one of the wrong
    type SettingTypeError, a TypeError and ValueError) before anything is stopped or started.
    None leaves a setting to its environment variable or default, which :meth:`resolved` fills
    in.

    >>> Settings(ncpus=4, executor="thread").resolved().nprocs    # HETFLOW_NPROCS, else ncpus
    4
    """

    ncpus: Optional[int] = None
    sched: Optional[str] = None
    executor: Optional[str] = None
    nprocs: Optional[int] = None
    spin_us: Optional[int] = None
    trace: Optional[Union[str, "os.PathLike[str]"]] = None
    stats: Optional[bool] = None
    initializer: Optional[Callable[..., Any]] = None
    initargs: tuple = ()
    opencl: Optional[Union[bool, str]] = None
    cuda: Optional[bool] = None
    memory_limits: Optional[Dict[int, int]] = None

    def __post_init__(self) -> None:
        trace, stats, initializer, initargs = self.trace, self.stats, self.initializer, self.initargs
        if self.opencl is not None and self.opencl not in (True, False, "all"):
            raise ValueError(f"hetflow: opencl must be True, False, 'all' (CPU devices too) or None, not {self.opencl!r}")
        if self.cuda is not None and not isinstance(self.cuda, bool):
            raise SettingTypeError(f"hetflow: cuda must be True, False or None, not {self.cuda!r}")
        if self.memory_limits is not None:
            object.__setattr__(self, "memory_limits", _check_memory_limits(self.memory_limits))
        if trace is not None and not isinstance(trace, (str, os.PathLike)):
            raise SettingTypeError(f"hetflow: trace must be a path, not {trace!r}")
        if trace is not None and os.fspath(trace) in ("", b""):
            # Taken, it failed only at shutdown, as a warning that the trace '' cannot be written.
            raise ValueError("hetflow: trace is an empty path; give a file name, or None for no trace")
        if trace is not None and "\x00" in str(os.fspath(trace)):
            # The engine's path stopped at the NUL: the trace went elsewhere, or nowhere.
            raise ValueError(f"hetflow: trace {os.fspath(trace)!r} contains a NUL character, which no path may hold")
        if stats is not None and not isinstance(stats, bool):
            raise SettingTypeError(f"hetflow: stats must be True or False, not {stats!r}")
        if initializer is not None and not callable(initializer):
            raise SettingTypeError(f"hetflow: initializer must be callable (or None), not {initializer!r}")
        if not isinstance(initargs, tuple):
            raise SettingTypeError(f"hetflow: initargs must be a tuple of arguments for the initializer, not {initargs!r}")
        if initargs and initializer is None:
            raise ValueError("hetflow: initargs given without an initializer to call with them")
        _check_count(self.ncpus, "ncpus", 1, MAX_NCPUS, "CPU workers")
        _check_count(self.nprocs, "nprocs", 0, MAX_NPROCS, "worker processes")
        _check_count(self.spin_us, "spin_us", 0, MAX_SPIN_US, "microseconds")
        if self.sched is not None:
            from hetflow import _hetflow

            if not isinstance(self.sched, str):
                raise SettingTypeError(
                    f"hetflow: the scheduler (sched) must be a name, one of {', '.join(_hetflow.schedulers())}, "
                    f"not {type(self.sched).__name__} {reprlib.repr(self.sched)}"
                )
            if self.sched not in _hetflow.schedulers():
                raise ValueError(
                    f"hetflow: unknown scheduler {reprlib.repr(self.sched)}; known schedulers: "
                    f"{', '.join(_hetflow.schedulers())}"
                )
        if self.executor is not None and self.executor != "":  # "" is left to HETFLOW_EXECUTOR, as None is
            check_executor(self.executor)

    def resolved(self) -> "Settings":
        """These settings with the executor, ncpus and nprocs filled in from the environment
        (``HETFLOW_EXECUTOR``, ``HETFLOW_NCPUS``, ``HETFLOW_NPROCS``) or the defaults, and the
        trace path as a str."""
        chosen = self.executor or os.environ.get("HETFLOW_EXECUTOR") or None
        ncpus = self.ncpus
        if ncpus is None:
            ncpus = _env_ncpus()
            if ncpus is None:
                # In a worker process (a task's own runtime), the worker's share of the CPUs, as
                # for the thread pools of its libraries (_thread_limits).
                ncpus = max(1, len(os.sched_getaffinity(0)) // (_kernel.num_cores or 1))
            _check_count(ncpus, "ncpus (HETFLOW_NCPUS)", 1, MAX_NCPUS, "CPU workers")
        nprocs = self.nprocs
        if nprocs is None:
            nprocs = _env_int("HETFLOW_NPROCS", MAX_NPROCS)
            _check_count(nprocs, "nprocs (HETFLOW_NPROCS)", 0, MAX_NPROCS, "worker processes")
        if nprocs is None:
            nprocs = min(ncpus, MAX_NPROCS)
        if chosen is None:
            # Without worker processes the default could run nothing: tasks go to threads.
            executor = "thread" if nprocs == 0 else default_executor()
        else:
            executor = check_executor(chosen)
            if executor == "process" and nprocs == 0:
                origin = "executor='process'" if self.executor else "HETFLOW_EXECUTOR=process"
                raise ValueError(
                    f"hetflow: {origin} runs tasks in worker processes, but nprocs=0 starts none; "
                    "give nprocs >= 1 or use executor='thread'"
                )
        trace = os.fspath(self.trace) if self.trace is not None else _worker_trace_path()
        return replace(self, executor=executor, ncpus=ncpus, nprocs=nprocs, trace=trace)

    def as_keywords(self) -> Dict[str, Any]:
        """The settings as keyword arguments of :class:`Runtime`."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _check_memory_limits(limits: Any) -> Dict[int, int]:
    """``limits`` as plain ints (numpy integers are taken), each in the engine's range: a node
    or size beyond it got the binding layer's signature dump."""
    if not isinstance(limits, dict):
        raise SettingTypeError(f"hetflow: memory_limits must be a dict of device node -> bytes, not {limits!r}")
    checked = {}
    for node, size in limits.items():
        if not _is_whole(node) or not 1 <= node < 2**32:
            raise ValueError(
                f"hetflow: memory_limits: {node!r} is not a device memory node (1, 2, ... in the order of the "
                "device workers; node 0, host memory, has no limit)"
            )
        if not _is_whole(size) or not 1 <= size < 2**64:
            raise ValueError(
                f"hetflow: memory_limits[{node}] must be a positive number of bytes (at most 2**64 - 1), not {size!r}"
            )
        checked[int(node)] = int(size)
    return checked


def _is_whole(value: Any) -> bool:
    """An int or a numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def _check_count(value: Any, name: str, least: int, most: int, unit: str) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingTypeError(f"hetflow: {name} must be an int from {least} to {most}, not {reprlib.repr(value)}")
    if not least <= value <= most:
        raise ValueError(f"hetflow: {name}={value} is out of range; use {least} to {most} {unit}")


def resolve_settings(*args: Any, **kwargs: Any) -> tuple:
    """``(executor, ncpus, nprocs)`` of ``Settings(*args, **kwargs)`` with the defaults filled in."""
    settings = Settings(*args, **kwargs).resolved()
    return settings.executor, settings.ncpus, settings.nprocs


def device_modules(settings: Settings) -> List[Tuple[str, Any, Any, Any]]:
    """The device drivers a runtime of ``settings`` adds: ``(kind, driver, describer, setup
    note)`` each (capsules the engine reads).

    ``opencl`` / ``cuda`` None: the driver is added when ``HETFLOW_OPENCL_DEVICES`` /
    ``HETFLOW_NCUDA`` (a number above 0) is set, else not."""
    opencl, cuda = settings.opencl, settings.cuda
    if opencl is None:
        opencl = bool(os.environ.get("HETFLOW_OPENCL_DEVICES"))
    if cuda is None:
        cuda = bool(_env_int("HETFLOW_NCUDA", MAX_NCUDA))
    devices: List[Tuple[str, Any, Any, Any]] = []
    if opencl:
        module = _device_module("opencl", "an OpenCL SDK (Debian: ocl-icd-opencl-dev opencl-c-headers)")
        devices.append(("opencl", module.driver(0, opencl == "all"), module.describer(), module.setup_note()))
    if cuda:
        module = _device_module("cuda", "the CUDA toolkit (nvcc on PATH)")
        devices.append(("cuda", module.driver(0), module.describer(), module.setup_note()))
    return devices


def _device_module(kind: str, needs: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"hetflow._hetflow_{kind}")
    except ImportError as error:
        raise ImportError(
            f"hetflow: this build of hetflow has no {kind} driver: it is built when {needs} is found "
            f"while hetflow is installed ({error})"
        ) from None


def _fire_all(futures: List[Future]) -> None:
    """Tells the futures whose tasks have finished (Future._fire); holds none of them after."""
    for future in futures:
        future._fire()


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
        trace: Optional[Union[str, "os.PathLike[str]"]] = None,
        stats: Optional[bool] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: tuple = (),
        opencl: Optional[Union[bool, str]] = None,
        cuda: Optional[bool] = None,
        memory_limits: Optional[Dict[int, int]] = None,
        worker_environment: Optional[dict] = None,
        initialize_here: bool = True,
    ) -> None:
        """``worker_environment``: more variables for the worker processes (name -> value).
        ``initialize_here``: run the initializer in this process too, for the thread workers
        (False when only the worker processes run tasks).

        Refused (HetflowError) once the interpreter is finalizing (a ``__del__`` run as modules
        are torn down, after hetflow's exit handler stopped the runtime): nothing could stop
        the runtime then, and its threads could not run. An ``atexit`` handler that runs after
        hetflow's (registered before hetflow was imported) may still start one."""
        if sys.is_finalizing():
            raise _finalizing_error("start a runtime")
        nprocs_given = nprocs is not None
        from hetflow import _hetflow, _protocol, _worker  # the engine loads on first use, not at import

        _hetflow.open_gil_gate()  # a runtime started by an exit handler that runs after hetflow's
        settings = Settings(
            ncpus, sched, executor, nprocs, spin_us, trace, stats, initializer, initargs, opencl, cuda, memory_limits
        ).resolved()
        devices = device_modules(settings)
        self.settings = settings
        # Resolved settings have these filled in, and the trace path as a str.
        self.executor = cast(str, settings.executor)
        ncpus, nprocs = cast(int, settings.ncpus), cast(int, settings.nprocs)
        environment = [*_protocol.worker_environment(), f"{_protocol.NUM_CORES_VARIABLE}={nprocs}"]
        environment += [f"{name}={value}" for name, value in (worker_environment or {}).items()]
        environment += _thread_limits(nprocs, worker_environment or {})
        if initializer is not None:
            if nprocs:  # pickled first: a refusal leaves nothing run
                environment.append(f"{_protocol.INITIALIZER_VARIABLE}={_pickled_initializer(initializer, initargs)}")
            if initialize_here:
                initializer(*initargs)  # for the thread workers: they share this process's state
        self.ncpus = ncpus
        self.nprocs = nprocs
        # Nobody asked for worker processes up front (the default executor is thread, and nprocs
        # was not given): each starts when its first task needs it (starts_processes_lazily).
        self.lazy_processes = starts_processes_lazily(self.executor, explicit_nprocs=nprocs_given)
        self.initializer = initializer
        self.initargs = initargs
        self.interrupted = False  # a wait on this runtime was interrupted (Ctrl-C, a signal handler's sys.exit)
        # Made by hetflow.init (start), not by a first submission: inside a kernel or a process
        # task, only such a runtime may launch offloads (offload._refuse_inside_a_worker).
        self.started_by_init = False
        self._engine = _hetflow.Runtime(
            ncpus=ncpus,
            scheduler=settings.sched,  # None: the engine's default, dmdas when there are devices
            nprocs=nprocs,
            worker_command=_worker.command(),
            worker_environment=environment,
            spin_us=settings.spin_us,
            dumps=_dumps_value,
            freeze=freeze_exception,
            trace=cast(Optional[str], settings.trace),
            stats=settings.stats,
            devices=devices,
            memory_limits=settings.memory_limits or {},
            lazy_processes=self.lazy_processes,
            worker_stack_bytes=_thread_stack_size(),
        )
        # Called wherever the program learns that tasks ended (a wait, done(), a callback): it
        # may then write its arrays directly, so device copies made before are not trusted.
        self.saw_tasks_end: Callable[[], None] = _hetflow.note_application_waited
        self._function_ids: dict = {}  # function key -> the engine's id for it
        self._codelet_ids: Dict[Any, int] = {}  # hetflow.Codelet -> the engine's codelet
        self._worker_archs = frozenset(arch for _, arch, _ in self._engine.workers())
        # Arrays written by tasks that may run on a device, until wait_all brings them home; weakly
        # held, so that a program that never waits for everything does not keep them all alive.
        # view key -> (weak references to the view's root array and to the view): note_device_writes
        self._device_writes: Dict[tuple, Tuple[Any, Any]] = {}
        self._watched: "weakref.WeakSet[Future]" = weakref.WeakSet()  # futures whose completion is watched
        self._device_writes_purge_at = _DEVICE_WRITES_PURGE_AT
        self._handles: Optional[Any] = None
        self._core_markers: Dict[int, Any] = {}  # per core, a byte whose W orders the work sent there
        self._dispatcher: Optional[threading.Thread] = None
        self._callback_thread: Optional[threading.Thread] = None
        self._callback_since: Optional[float] = None  # when the callback thread's current call began
        self._callback_generation = 0  # that of the callback thread; one replaced leaves after its call
        self._callback_queue: "queue.SimpleQueue[Optional[Tuple[Callable[[list], None], list]]]" = queue.SimpleQueue()
        # Reentrant: a signal handler or a finalizer run while this thread holds it (in watch, say)
        # may use a future, whose cancel or completion takes it again.
        self._lock = threading.RLock()
        self._closed = False
        self._shutdown_lock = threading.Lock()
        self._generation = _fork_generation  # a forked child has another: this engine is not there
        self.gave_up: Optional[str] = None  # why shutdown gave up on unfinished work, if it did
        # With hetflow.mpi's submission check: what the ranks compare of a task (function, args, kwargs).
        self.check_label: Optional[Callable[[Any, tuple, dict], str]] = None
        # Called before the engine stops, with whether the work finished (hetflow.mpi's context).
        self._before_stop: List[Callable[[bool], None]] = []
        _live.add(self)
        if _exit_handler_ran:
            _stop_when_this_exit_handler_returns(self)

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
        on: Optional[int] = None,
    ) -> Future:
        """``on``: with hetflow.mpi, the rank that runs the task (default: the owner of the
        distributed arrays it writes)."""
        if not callable(func):
            raise TypeError(f"hetflow: {func!r} is not callable")
        refuse_async_function(func, "hetflow")
        if self._closed and not self._takes_follow_ups():
            raise RuntimeError(self._closed_message())
        if sys.is_finalizing():
            raise _finalizing_error("submit a task")
        if executor is None:
            executor = self.executor
        elif type(executor) is not str or executor not in EXECUTORS:
            executor = check_executor(executor)
        if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            priority = check_priority(priority)
        if name is not None and type(name) is not str:
            check_name(name)
        if not name:
            name = getattr(func, "__name__", None) or type(func).__name__
        if type(name) is not str or "\0" in name or not name.isascii():
            name = utf8_text(name)
        label = self.check_label(func, args, kwargs) if self.check_label is not None else ""
        if executor == "thread" and perfmodel is None and on is None and not kwargs:
            # The common case in one call: plain values, and arrays (marked or not) whose views
            # were met before (submit_call says None, having done nothing, for anything else).
            handles = self._handles
            task = self._engine.submit_call(func, args, None if handles is None else handles._recent, name, priority)
            if task is not None:
                return Future(task, self, name)
        if perfmodel is None and all_plain(args) and (not kwargs or all_plain(kwargs.values())):
            # Nothing to wait for, no data, no model.
            if executor == "thread":
                task = self._engine.submit_thread(
                    func, _NONE, _NONE, name, priority, on=on, label=label, args=_as_tuple(args),
                    kwargs=dict(kwargs) if kwargs else None,
                )
                return Future(task, self, name)
            if self.nprocs:
                key, code, args, inline = function_for_call(func, args)
                call_bytes = _dumps_value((args, kwargs)) if inline else pickle.dumps((args, kwargs), protocol=5)
                task = self._engine.submit_process(
                    self._function_id(key, code), call_bytes, _NONE, _NONE, name, priority, on=on, label=label
                )
                return Future(task, self, name)
        if executor == "process" and self.nprocs == 0:
            raise ValueError("hetflow: executor='process' but the runtime has no worker processes (nprocs=0)")
        if executor == "thread" and perfmodel is None and not kwargs:
            plain_and_arrays = self._arrays_and_plain(args)
            if plain_and_arrays is not None:
                call_args, array_accesses = plain_and_arrays
                task = self._engine.submit_thread(
                    func, _NONE, array_accesses, name, priority, on=on, label=label, args=tuple(call_args)
                )
                return Future(task, self, name)
        data = _find_data(args, kwargs)
        if executor == "process":
            arrays: list = []
            order: list = []
            model_size = _size(args, kwargs, size) if perfmodel else 0  # of the arrays, not of their placeholders
            if data:
                args, kwargs, arrays, order = self._data_for_process(args, kwargs)
            packed = pack_call(func, args, kwargs, _is_future, reduces_to_placeholder=True)
            if b"Access" in packed.call_bytes:  # perhaps a mark inside a container (the name, pickled)
                _refuse_nested_mark(name, args, kwargs)
            deps = [f._task for f in packed.futures]
            task = self._engine.submit_process(
                self._function_id(packed.func_key, packed.func_bytes), packed.call_bytes, deps, arrays, name, priority,
                perfmodel=perfmodel, size=model_size, order=order, on=on, label=label,
            )
        else:
            accesses: list = []
            if data:
                args, kwargs, accesses = self._data_for_thread(args, kwargs)
            search = FutureSearch(args, kwargs, _future_or_mark) if args or kwargs else None
            if search is not None and search.futures and any(type(found) is Access for found in search.futures):
                _refuse_nested_mark(name, args, kwargs)
            if search is not None and search.futures:
                call: Callable[..., Any] = functools.partial(_call_resolved, func, args, kwargs, search)
                positional: Optional[tuple] = None
                keywords: Optional[dict] = None
            else:
                call, positional, keywords = func, _as_tuple(args), dict(kwargs) if kwargs else None
            task = self._engine.submit_thread(
                call, [f._task for f in search.futures] if search is not None else [], accesses, name, priority,
                perfmodel=perfmodel, size=_size(args, kwargs, size) if perfmodel else 0, on=on, label=label,
                args=positional, kwargs=keywords,
            )
        return Future(task, self, name)

    def _function_id(self, key: str, code: bytes) -> int:
        function_id = self._function_ids.get(key)
        if function_id is None:
            function_id = self._function_ids[key] = self._engine.register_function(key, code)
        return function_id

    # -- codelets ----------------------------------------------------------------------------------
    def worker_archs(self) -> frozenset:
        """The kinds of worker the runtime has ("cpu", "process", "opencl", "cuda")."""
        return self._worker_archs

    def submit_codelet(
        self, codelet: Any, runner: Any, deps: list, accesses: list, name: str, priority: int, archs: Sequence[str]
    ) -> Future:
        from hetflow._codelet import CodeletFuture

        if self._closed and not self._takes_follow_ups():
            raise RuntimeError(self._closed_message())
        if sys.is_finalizing():
            raise _finalizing_error("submit a task")
        priority = check_priority(priority)
        codelet_id = self._codelet_ids.get(codelet)
        if codelet_id is None:
            with self._lock:
                codelet_id = self._codelet_ids.get(codelet)
                if codelet_id is None:
                    codelet_id = self._codelet_ids[codelet] = self._engine.register_codelet(
                        codelet.name, list(codelet.archs), codelet.model
                    )
        task = self._engine.submit_codelet(codelet_id, runner, deps, accesses, name, priority, list(archs))
        return CodeletFuture(task, self, name)

    def note_device_writes(self, views: Sequence[Any]) -> None:
        """The views of the arrays that a task that may run on a device writes: wait_all brings
        them home. The handle registry keeps them (an array passed may be a temporary view) until
        their buffer goes, or until it lets go of them, which brings their data home."""
        with self._lock:
            writes = self._device_writes
            for view in views:
                noted = writes.get(view.key)
                if noted is None or noted[1]() is not view:  # a view of a freed buffer at the same address
                    writes[view.key] = (view.root.alive, weakref.ref(view))
            if len(writes) > self._device_writes_purge_at:  # buffers freed, views let go: nothing to bring home
                for key in [key for key, (root, view) in writes.items() if root() is None or view() is None]:
                    del writes[key]
                self._device_writes_purge_at = max(_DEVICE_WRITES_PURGE_AT, 2 * len(writes))

    def bring_home(self, arrays: Sequence[Any]) -> None:
        """Makes host memory hold the latest version of each array (its copy on a device, if that
        is the only valid one, is copied back); waits for the tasks that write them first. A
        stopped runtime brought every array home as it stopped: nothing to do."""
        if not arrays or self._closed:
            return  # its registry, closed, would register the arrays anew with a stopped engine
        handles = self.handles
        try:
            views = [handles.view(array, "R") for array in arrays]
        except RuntimeError:
            if self._closed:
                return  # stopped meanwhile, by another thread
            raise
        self._bring_views_home(views)

    def _bring_views_home(self, views: Sequence[Any]) -> None:
        if not views or self._closed:
            return
        inside = self._engine.inside_task()
        for view in views:
            if inside and self._engine.running_task_conflicts([(view.handle, "RW")]):
                continue  # the task's own array, which it has through its access: acquiring it would wait for it
            if not self.handles.held(view):  # acquiring it again could wait for that acquisition
                self._engine.acquire(view.handle, "R").release()
        self.saw_tasks_end()  # after the copies home, which count as matching the devices' copies

    # -- cores (offload) ---------------------------------------------------------------------------
    def open_launch(self, launch: int, size: int) -> None:
        self._engine.open_launch(launch, size)

    def abandon_launch(self, launch: int, unsent: int) -> None:
        """``unsent`` kernels of ``launch`` will never be submitted (its submission failed): the
        launch fails, and the engine forgets it once the kernels sent have ended."""
        self._engine.abandon_launch(launch, unsent)

    def core_load(self, core: int) -> int:
        """Unfinished tasks pinned to core ``core`` (its process worker)."""
        return self._engine.pinned_load(self.ncpus + core)

    def submit_to_core(self, core: int, func: Callable[..., Any], args: tuple, name: str, launch: int = 0) -> Future:
        """Runs ``func(*args)`` on process worker ``core`` only, after what was sent there before;
        ``launch`` names the offload launch it is a kernel of (0: none)."""
        if self._closed and not self._takes_follow_ups():
            raise RuntimeError(self._closed_message())
        if sys.is_finalizing():
            raise _finalizing_error("submit a task")
        packed = pack_call(func, args, {}, _is_future, reduces_to_placeholder=True)
        deps = [f._task for f in packed.futures]
        task = self._engine.submit_process(
            self._function_id(packed.func_key, packed.func_bytes), packed.call_bytes, deps, [], name, 0,
            worker=self.ncpus + core, launch=launch, order=[(self._core_order(core), "W")],
        )
        return Future(task, self, name)

    def _core_order(self, core: int) -> Any:
        """The handle every submission to ``core`` writes, for order only: one waiting for a future
        would otherwise be overtaken by those sent after it (and a launch's kernels could run in
        different orders on different cores, each waiting at a barrier for the others)."""
        import numpy

        marker = self._core_markers.setdefault(core, numpy.zeros(1, dtype=numpy.uint8))
        return self.handles.view(marker, "W").handle

    # -- data --------------------------------------------------------------------------------------
    @property
    def handles(self) -> Any:
        if self._handles is None:
            with self._lock:
                if self._handles is None:
                    self._handles = HandleRegistry(self._engine)
        return self._handles

    def _data_for_thread(self, args: tuple, kwargs: dict) -> tuple:
        """Unwraps access marks; returns the engine accesses [(handle, mode)] of the arrays (their
        own views' and, for ordering, the overlapping views')."""
        handles = self.handles
        merged: dict = {}

        def take(value: Any) -> Any:
            value, mode = _unwrap(value)
            if is_array(value):
                handles.accesses(value, mode, merged)
            elif mode != "R":
                raise TypeError(_not_data_message(value, mode))
            return value

        args, kwargs = tuple(take(v) for v in args), {k: take(v) for k, v in kwargs.items()}
        return args, kwargs, engine_accesses(merged)

    def _arrays_and_plain(self, args: tuple) -> Optional[tuple]:
        """The arguments and engine accesses of a thread task whose arguments are all plain values,
        numpy arrays or marked numpy arrays, found in one pass (the common case of a task graph
        over arrays); None for anything else (futures, containers, marked non-arrays), which
        ``_data_for_thread`` and the futures' search handle."""
        ndarray = _ndarray_type()
        handles = self.handles
        merged: dict = {}
        call_args = []
        for value in args:
            kind = type(value)
            if kind in _PLAIN:
                call_args.append(value)
                continue
            if kind is Access:
                mode = value.mode
                value = value.value
                if type(value) is not ndarray:
                    return None
            elif kind is ndarray:
                mode = "R"
            else:
                return None
            handles.accesses(value, mode, merged)
            call_args.append(value)
        return call_args, engine_accesses(merged) if merged else _NONE

    def _data_for_process(self, args: tuple, kwargs: dict) -> tuple:
        """Replaces each array by an ArrayRef; returns the engine's array specs in ArrayRef order
        and the accesses on overlapping views that order the task without reaching it."""
        handles = self.handles
        merged: dict = {}
        entries: list = []  # [view, array, the task's own mode bits], in ArrayRef order
        index_of: dict = {}  # view -> index: one array in the worker per distinct view
        refs: list = []

        def take(value: Any) -> Any:
            value, mode = _unwrap(value)
            if not is_array(value):
                if mode != "R":
                    raise TypeError(_not_data_message(value, mode))
                return value
            if not plain_array(value):
                return _subclass_by_value(handles, value, mode)
            if value.dtype.hasobject:
                raise TypeError(
                    f"hetflow: an array of dtype {value.dtype} cannot reach a worker process: object arrays "
                    "hold pointers into this process; pass a list or use executor='thread'"
                )
            refuse_copy_beyond_memory(value)
            view = handles.accesses(value, mode, merged)
            index = index_of.get(view)
            if index is None:
                index = index_of[view] = len(entries)
                entries.append([view, value, _MODE_BITS[mode]])
            else:
                entries[index][2] |= _MODE_BITS[mode]
            ref = ArrayRef.of(index, value, view.key[0] - view.low)
            refs.append(ref)
            return ref

        args, kwargs = tuple(take(v) for v in args), {k: take(v) for k, v in kwargs.items()}
        for ref in refs:
            ref.read_only = not entries[ref.index][2] & 2  # read only by the task: not writable there
        if len(entries) > 1:
            _alias_overlapping_views(handles, entries, index_of, refs)
        arrays = []
        for view, array, own in entries:
            engine_mode = _BIT_MODES[merged.pop(view.handle)]
            arrays.append(
                (
                    view.handle, engine_mode, bool(own & 2), view.low, view.high - view.low, view.key[0] - view.low,
                    array.shape, array.strides, array.itemsize, array,
                )
            )
        order = [(handle, _BIT_MODES[bits]) for handle, bits in merged.items()]
        return args, kwargs, arrays, order

    # -- completion notices ----------------------------------------------------------------------
    def watch(self, future: Future) -> None:
        """Has ``future._fire()`` called on the dispatcher thread once its task finishes."""
        finished = future._task.done()
        if finished and self.abandoned() or not finished and future._status() == "cancelled":
            # Done, or given up by shutdown before it started (it never runs): the engine, left to
            # the workers still in a task, is not asked.
            threading.Thread(target=future._fire, name="hetflow-given-up", daemon=True).start()
            return
        if not finished:
            self.check_usable(future.name)
        with self._lock:
            self._engine.watch(future._task, future)
            self._watched.add(future)
            # After shutdown the dispatcher ends once nothing is left; a later watch (of a task
            # finished by then, notified at once) starts another.
            # Kept once started: a Ctrl-C while it starts leaves none, and the next watch starts one.
            if self._dispatcher is None:
                dispatcher = threading.Thread(target=self._dispatch, name="hetflow-completions", daemon=True)
                dispatcher.start()
                self._dispatcher = dispatcher

    def unwatch(self, future: Future) -> None:
        with self._lock:
            self._watched.discard(future)

    def call_back(self, call: Callable[[list], None], callbacks: list) -> None:
        """Runs ``call(callbacks)`` on the callback thread, in the order asked."""
        with self._lock:
            if self._callback_thread is None:  # kept once started, as the dispatcher
                self._start_callback_thread()
        self._callback_queue.put((call, callbacks))

    def _start_callback_thread(self) -> None:
        # Called with self._lock held.
        self._callback_generation += 1
        callback_thread = threading.Thread(
            target=self._run_callbacks, args=(self._callback_generation,), name="hetflow-callbacks", daemon=True
        )
        self._callback_thread = callback_thread
        self._callback_since = None
        callback_thread.start()

    def _run_callbacks(self, generation: int) -> None:
        while True:
            with self._lock:
                if generation != self._callback_generation:  # replaced while a callback of its waited
                    return
                self._callback_since = None
            item = self._callback_queue.get()
            with self._lock:
                if item is None:  # from _join_dispatcher, at shutdown (unless a thread started since)
                    if self._callback_thread is None:
                        return
                    continue
                self._callback_since = time.monotonic()
            call, callbacks = item
            call(callbacks)  # catches what the callbacks raise
            del item, call, callbacks  # a future kept here would keep its task (and the engine) alive

    def _unblock_callbacks(self) -> None:
        """A callback that waits (for a future whose await is a callback queued behind it, say)
        would hold the ones after it for ever: they go on on a new thread."""
        with self._lock:
            since = self._callback_since
            if (
                since is not None
                and time.monotonic() - since >= _CALLBACK_STALL_S
                and not self._callback_queue.empty()
            ):
                self._start_callback_thread()

    def _dispatch(self) -> None:
        # The futures are fired by _fire_all: a loop variable here would keep the last one (and its
        # value) alive while this thread waits for the next completion.
        while True:
            _fire_all(self._engine.drain_completions(100))
            if self._callback_since is not None:
                self._unblock_callbacks()
            if self._engine.is_shut_down() and self._closed:
                with self._lock:
                    last = self._engine.drain_completions(0)
                    if not last:
                        self._dispatcher = None
                        return
                _fire_all(last)
                del last

    # -- lifecycle -------------------------------------------------------------------------------
    def check_usable(self, task_name: str) -> None:
        """Raises instead of letting a caller wait for a task that will never finish here: one
        submitted before this process was forked, or one that shutdown gave up on."""
        if self._generation != _fork_generation:
            raise RuntimeError(
                f"hetflow: task '{task_name}' belongs to the runtime of the parent process, from before "
                "this process was forked; it does not run here. Submit it again in this process."
            )
        if self.abandoned():
            raise CancelledError(f"task '{task_name}' did not finish: {self.gave_up}")

    def note_block_left(self, kind: Optional[type]) -> None:
        """A ``with`` block over the runtime ended, by an exception of type ``kind`` (None: none):
        a Ctrl-C there gives the work up, as one in a wait does."""
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.interrupted = True

    def _refuse_if_abandoned(self, what: str) -> None:
        if self.abandoned():
            raise CancelledError(f"{what}: the work did not finish: {self.gave_up}")

    def abandoned(self) -> bool:
        """True once shutdown gave up on unfinished work: tasks not started then never run."""
        return self.gave_up is not None and self._engine.is_shut_down()

    def inside_task(self) -> bool:
        """True on a worker thread of this runtime (in a thread-executor task)."""
        return self._engine.inside_task()

    def wait_all(self, timeout: Optional[float] = None) -> bool:
        if self._engine.inside_task():
            raise RuntimeError(
                "hetflow.wait_for_all() cannot be called inside a task: it would wait for that task itself; "
                "wait for the futures it needs instead"
            )
        timeout = _checked_timeout(timeout, "hetflow.wait_for_all")
        try:
            if timeout is None:
                # In slices, so that a shutdown giving up on the work ends the wait (CancelledError).
                self._engine.check_wait_all_can_end()
                while not self._engine.wait_all(_GIVE_UP_CHECK_S):
                    self._refuse_if_abandoned("hetflow.wait_for_all")
                finished = True
            else:
                finished = self._engine.wait_all(timeout)
        except INTERRUPTIONS:
            self.interrupted = True
            raise
        if finished:
            self.bring_device_writes_home()
        self.saw_tasks_end()
        return finished

    def bring_device_writes_home(self, failed_stay: bool = False) -> None:
        """Once every task has ended: the arrays that tasks which may have run on a device wrote
        are brought home, so that the program reads and writes them directly. ``failed_stay``:
        those whose last writer failed stay as they are, their failure with them (hetflow.mpi,
        where it travels to the ranks that read them; taking the data home would forget it)."""
        if not self._device_writes:
            return
        with self._lock:
            # The roots are held meanwhile: a buffer freed now would take its handles with it.
            alive = [(root(), view()) for root, view in self._device_writes.values()]
            self._device_writes.clear()
        views = [view for root, view in alive if root is not None and view is not None]
        if failed_stay:
            views = [view for view in views if self._engine.accesses_if_at_rest(view.handle) is not None]
        self._bring_views_home(views)

    def shutdown(
        self, timeout: Optional[float] = None, cancel_futures: bool = False, *, idle_timeout: Optional[float] = None
    ) -> None:
        """Waits for the submitted work (at most ``timeout`` seconds; None: as long as it takes),
        then stops. ``cancel_futures``: the tasks not started yet are cancelled first.
        ``idle_timeout``: gives up once that many seconds pass without a task finishing.

        Giving up (time out, Ctrl-C now or in an earlier wait on this runtime) cancels the tasks
        not started and ends the worker processes, so that their futures fail; thread-executor
        tasks still running cannot be stopped: their workers are left to finish them, detached.
        A Ctrl-C is raised again once the work is given up."""
        timeout = _checked_timeout(timeout, "hetflow.shutdown")
        if not isinstance(cancel_futures, bool):
            raise TypeError(f"hetflow.shutdown: cancel_futures must be True or False, not {cancel_futures!r}")
        if not self._closed and self._engine.inside_task():
            raise RuntimeError(
                "hetflow.shutdown() cannot be called inside a task of the runtime it would stop: it would "
                "wait for that task itself; call it from the program that submitted the work"
            )
        with self._shutdown_lock:
            if self._closed:
                return
            self._closed = True
            if self._handles is not None:
                self._handles.release_all(threading.get_ident())  # the work behind them would wait for ever
            if cancel_futures:
                self._engine.cancel_pending()
            self._draining = True
            try:
                why = (
                    "the program was interrupted (Ctrl-C, or a signal handler's sys.exit) while it waited for the runtime"
                    if self.interrupted
                    else self._wait_for_work(timeout, idle_timeout)
                )
            except BaseException as exc:
                # Ctrl-C, or whatever else ends the wait (a SIGTERM handler's sys.exit): the caller
                # no longer waits, and the runtime is closed already (a second shutdown, or the
                # one at exit, would return at once), so the work is given up now. Left as it
                # was, the process waited at exit for the running tasks without any limit.
                self._draining = False
                if isinstance(exc, KeyboardInterrupt):
                    self.interrupted = True
                    reason = "hetflow.shutdown() was interrupted (Ctrl-C)"
                else:
                    reason = f"hetflow.shutdown() was interrupted ({type(exc).__name__} raised while it waited)"
                self._run_before_stop(False)
                self._give_up(reason)
                self._join_dispatcher()
                raise
            self._draining = False
            self._run_before_stop(why is None)
            if why is None:
                self._engine.shutdown()
            else:
                self._give_up(why)
        self._join_dispatcher()
        self._close_handles()

    def _close_handles(self) -> None:
        """Once stopped: the arrays that outlive the runtime no longer keep it (its engine) alive.
        An engine left to workers still running (a give-up) keeps being told of arrays that go."""
        if self._handles is not None and self._engine.is_shut_down():
            self._handles.close()

    def before_stop(self, hook: Callable[[bool], None]) -> None:
        """Has ``hook(finished)`` called when the runtime stops, before its engine does."""
        self._before_stop.append(hook)

    def _run_before_stop(self, finished: bool) -> None:
        hooks, self._before_stop = self._before_stop, []
        for hook in reversed(hooks):
            hook(finished)

    def terminate(self, reason: str) -> None:
        """Gives up at once: cancels the tasks not started, ends the worker processes (their tasks
        fail, saying ``reason``) and stops; thread-executor tasks still running are left to finish,
        detached. Nothing more may be submitted."""
        with self._shutdown_lock:
            if self._closed:
                return
            self._closed = True
            self._run_before_stop(False)
            self._give_up(reason)
        self._join_dispatcher()
        self._close_handles()

    def _wait_for_work(self, timeout: Optional[float], idle_timeout: Optional[float]) -> Optional[str]:
        """Waits for every submitted task; None once they are done, else why it stopped waiting:
        ``timeout`` passed, or ``idle_timeout`` passed without a task finishing."""
        late = f"hetflow.shutdown(timeout={timeout!r}) ended it: the work was not finished in time"
        if idle_timeout is None:
            return None if self._engine.wait_all(timeout) else late
        now = time.monotonic()
        deadline = float("inf") if timeout is None else now + timeout
        finished = self._engine.finished()
        progress_at = now
        while True:
            step = min(0.2, max(0.0, deadline - now), max(0.0, progress_at + idle_timeout - now))
            if self._engine.wait_all(step):
                return None
            now = time.monotonic()
            count = self._engine.finished()
            if count != finished:
                finished, progress_at = count, now
            if now >= deadline:
                return late
            if now >= progress_at + idle_timeout:
                return (
                    f"hetflow ended it at interpreter exit: no task had finished for {idle_timeout:g} s "
                    "(HETFLOW_EXIT_TIMEOUT)"
                )

    abandoned_tasks = 0  # unfinished tasks when shutdown gave up

    def _give_up(self, reason: str) -> None:
        """Cancels the tasks not started, ends the worker processes and stops; workers still
        in a task by then are left running, with the engine they use.

        A Ctrl-C meanwhile (a second one, often: the first is why the work is given up) is
        raised once this is done: raised between abort() and shutdown_within(), it left an
        aborted engine that was never stopped, whose destructor then hung the interpreter's
        exit; raised after shutdown_within(), the futures given up on were never told."""
        with _InterruptsHeld():
            self.gave_up = reason
            self.abandoned_tasks = self._engine.outstanding()
            self._engine.abort()
            try:
                if self._engine.shutdown_within(_ABORT_GRACE_S):
                    _abandoned.append(self._engine)  # its remaining workers still use it: never destroyed
            finally:
                # The futures given up on are cancelled now: their waiters and callbacks are
                # told, before the callback thread stops (a task left running may never end).
                with self._lock:
                    watched = list(self._watched)
                for future in watched:
                    future._fire()

    def _join_dispatcher(self) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not threading.current_thread() and self._engine.is_shut_down():
            dispatcher.join(timeout=5)
        with self._lock:
            callback_thread, self._callback_thread = self._callback_thread, None
        if callback_thread is not None:
            self._callback_queue.put(None)  # after the callbacks queued so far
            if callback_thread is not threading.current_thread():
                callback_thread.join(timeout=5)

    _draining = False  # shutdown is waiting for the submitted work
    _replaced = False  # hetflow.init() is replacing it (or has)

    def _takes_follow_ups(self) -> bool:
        """While shutdown waits for the work, the tasks of that work may still submit the tasks
        that continue it (a chain where each link submits the next); other threads may not."""
        return self._draining and self._generation == _fork_generation and self._engine.inside_task()

    made_for = "hetflow"  # what made it, for messages: "hetflow.Executor" for an executor's own
    serves_mpi = False  # hetflow.mpi's: hetflow.init() may not replace it

    def _closed_message(self) -> str:
        if self._generation != _fork_generation:
            if self.made_for != "hetflow":
                return (
                    f"hetflow: this {self.made_for} belongs to the parent process, from before this process was "
                    f"forked; make a new {self.made_for} here"
                )
            return (
                "hetflow: this runtime belongs to the parent process, from before this process was forked; "
                "hetflow calls here start a new one (hetflow.init() or first use)"
            )
        if self._replaced:
            return (
                "hetflow: cannot submit a task: hetflow.init() is replacing this runtime with a new one (it waits for "
                "this one's work first); submit again once hetflow.init() has returned"
            )
        return "hetflow: cannot submit a task: the runtime has been shut down"

    def workers(self) -> list:
        return self._engine.workers()

    @property
    def scheduler(self) -> str:
        return self._engine.scheduler_name()


def _finalizing_error(what: str) -> HetflowError:
    """Refusal of a late use, once the interpreter is finalizing (a ``__del__`` run as modules are
    torn down, after the exit handlers): the thread workers could no longer take the GIL to run a
    task, nothing would stop a new runtime, and no module could be imported."""
    return HetflowError(
        f"hetflow: cannot {what}: the interpreter is shutting down (this is a late use, from a __del__ or "
        "finalizer run as modules are torn down, after hetflow's exit handler stopped its runtimes); submit the "
        "work and wait for it before the program ends"
    )


# The variables that size the thread pools of the libraries a task may call (OpenMP, the BLAS
# builds numpy and scipy use, numexpr, numba).
_THREAD_POOL_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def _thread_limits(nprocs: int, given: Dict[str, Any]) -> List[str]:
    """Each worker process's share of the CPUs for the thread pools of what its tasks call: with
    every worker's BLAS using every CPU, ``nprocs`` workers would run ``nprocs`` times as many
    threads as there are CPUs. Not for variables the program set, here or in
    ``worker_environment``."""
    if nprocs <= 0:
        return []
    share = max(1, len(os.sched_getaffinity(0)) // nprocs)
    return [f"{name}={share}" for name in _THREAD_POOL_VARIABLES if name not in os.environ and name not in given]


def _pickled_initializer(initializer: Callable[..., Any], initargs: tuple) -> str:
    """The initializer and its arguments as hex, for the worker processes' environment."""
    from hetflow._serialize import _cloud_dumps  # __mp_main__'s and <run_path>'s by value too

    try:
        return _cloud_dumps((initializer, initargs)).hex()
    except Exception as error:
        raise ValueError(f"hetflow: the initializer and its initargs cannot be pickled: {error}") from error


def _dumps_value(value: Any) -> bytes:
    # cloudpickle is imported only once a process task needs it (in dumps_value).
    return dumps_value(value)


def _size(args: tuple, kwargs: dict, size: Optional[int]) -> int:
    """The size a task's time is recorded under: given (checked as ``perfmodel.check_size``), or
    the total length of its arguments: elements of arrays and sequences, 1 for anything else,
    also for an argument whose length cannot be measured (``len()`` raises, as it does for a
    ``__len__`` that raises or returns more than ``sys.maxsize``); the total is capped at
    2**64 - 1, the largest size a model keeps."""
    from hetflow.perfmodel import LARGEST_SIZE, check_size

    if size is not None:
        return check_size(size)
    total = 0
    for value in (*args, *kwargs.values()):
        value = value.value if type(value) is Access else value
        length = getattr(value, "size", None) if is_array(value) else None
        if length is None:
            try:
                length = len(value)
            except Exception:  # no length, or one that cannot be measured: counts as one item
                length = 1
        total += int(length)
    return min(total, LARGEST_SIZE)


def _not_data_message(value: Any, mode: str) -> str:
    return (
        f"hetflow: access mode {mode} needs a numpy array, not {type(value).__name__}: only numpy arrays "
        "are tracked as task data (a worker process would get a copy and its writes would be lost). "
        "Use hetflow.zeros / hetflow.array (or numpy.frombuffer for bytes-like objects), or pass the "
        "value unmarked (read) and return what the task makes"
    )


def _unwrap(value: Any) -> tuple:
    if type(value) is Access:
        return value.value, value.mode
    return value, "R"


_NONE: list = []


def _coroutine_maker(func: Any) -> Optional[str]:
    """How ``func`` makes coroutines, if its call only makes one: "" for an ``async def`` function
    (or a partial of one), " (its __call__ is an async def)" for an object whose ``__call__`` is one
    (or a partial of it); None for anything else."""
    while type(func) is functools.partial:
        func = func.func
    if inspect.iscoroutinefunction(func):
        return ""
    if isinstance(func, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, type)):
        return None
    if inspect.iscoroutinefunction(getattr(type(func), "__call__", None)):
        return " (its __call__ is an async def)"
    return None


def _async_generator_maker(func: Any) -> bool:
    """Whether ``func`` (or what a partial calls, or an object's ``__call__``) is an async
    generator function: its call only makes an async generator."""
    while type(func) is functools.partial:
        func = func.func
    if inspect.isasyncgenfunction(func):
        return True
    if isinstance(func, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, type)):
        return False
    return inspect.isasyncgenfunction(getattr(type(func), "__call__", None))


def refuse_async_function(func: Any, where: str) -> None:
    """TypeError for an ``async def`` function (or an object whose ``__call__`` is one, or a
    partial of either) given to run as a task: its call only makes a coroutine, which nothing
    would await; so for an async generator function, whose call only makes an async generator
    (its body would run where it is iterated, not in the task). A task whose body returns a
    coroutine all the same (a lambda over an async function) fails with such a TypeError when it
    runs (the extension's thread task call, and ``_call_resolved``)."""
    if type(func) is types.FunctionType and not func.__code__.co_flags & _CO_ASYNC and not func.__dict__:
        return  # the common case, quickly: a plain function, not marked (inspect.markcoroutinefunction)
    if _async_generator_maker(func):
        raise TypeError(
            f"{where}: {getattr(func, '__qualname__', func)!r} is an async generator function: its call only makes "
            "an async generator, whose body runs where it is iterated (async for), not in the task; submit a plain "
            "function that iterates it (asyncio.run), or iterate it in your event loop"
        )
    how = _coroutine_maker(func)
    if how is not None:
        raise TypeError(
            f"{where}: {getattr(func, '__qualname__', func)!r} is an async function{how}: its call only makes a "
            "coroutine, which no task awaits; submit a plain function that runs it (asyncio.run), or await it "
            "in your event loop"
        )


def _ndarray_type() -> Optional[type]:
    """numpy.ndarray if numpy is loaded (nothing else can be an array then), else None."""
    numpy = loaded_numpy()
    return None if numpy is None else numpy.ndarray


def _alias_overlapping_views(handles: Any, entries: list, index_of: dict, refs: list) -> None:
    """Marks the ArrayRefs of a process task's views that share elements, one of them written, to
    be put over one buffer in the worker (``ArrayRef.together``): each view is copied to the
    worker on its own, and without this the task would write one copy and the other copy,
    stale, would be copied home over it. ``entries``: [view, array, own mode bits] by index."""
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    joined = False
    for i, (view, _, _) in enumerate(entries):
        if not view.overlaps:
            continue
        if len(view.overlaps) < len(entries):
            others = [index_of[other] for other, _ in handles.overlapping(view) if other in index_of]
        else:
            others = [j for j, entry in enumerate(entries) if entry[0] in view.overlaps]
        for j in others:
            a, b = find(i), find(j)
            if a != b:
                parent[a] = b
                joined = True
    if not joined:
        return
    groups: dict = {}
    for i in range(len(entries)):
        groups.setdefault(find(i), []).append(i)
    together: dict = {}
    for group, members in groups.items():
        if len(members) < 2 or not any(entries[i][2] & 2 for i in members):
            continue  # only read: separate copies read the same
        low = min(entries[i][0].low for i in members)
        high = max(entries[i][0].high for i in members)
        for i in members:
            view = entries[i][0]
            together[i] = (group, view.low - low, high - low, low % 64, bool(entries[i][2] & 2))
    for ref in refs:
        ref.together = together.get(ref.index)


def plain_array(array: Any) -> bool:
    """An ndarray or a memmap: its elements are all there is to it."""
    numpy = loaded_numpy()
    return type(array) is numpy.ndarray or isinstance(array, numpy.memmap)


def _subclass_by_value(handles: Any, array: Any, mode: str) -> Any:
    """An ndarray subclass (a masked array, a matrix) for a process task: pickled with what it
    holds besides its elements (a mask), once the tasks writing it have ended; never written."""
    if mode != "R":
        raise TypeError(
            f"hetflow: a process task cannot write a {type(array).__name__} (access mode {mode}): a worker "
            "process gets a copy of it, and what the subclass holds besides its elements (a mask, say) could "
            "not come back; write it in a thread task, or pass its plain elements (numpy.asarray(x))"
        )
    handles.read_now(array)
    return ReadOnlyCopy(array)


def _find_data(args: tuple, kwargs: dict) -> bool:
    """True if a top-level argument is an array or carries an access mode."""
    return any(type(value) is Access or is_array(value) for value in (*args, *kwargs.values()))


def labelled_by_position(args: tuple, kwargs: dict) -> List[Tuple[str, Any]]:
    """``(what the user calls it, value)`` for each argument of a call: ``positional argument N``
    (from 1) or ``keyword argument 'k'``, for messages."""
    return [(f"positional argument {i + 1}", value) for i, value in enumerate(args)] + [
        (f"keyword argument {key!r}", value) for key, value in kwargs.items()
    ]


def _future_or_mark(value: Any) -> bool:
    """What a thread task's arguments are searched for: futures, and access marks (which count
    only at top level, where they are unwrapped before the search: one found is nested)."""
    return isinstance(value, Future) or type(value) is Access


def _refuse_nested_mark(name: str, args: tuple, kwargs: dict) -> None:
    """Raises TypeError, saying where, if an access mark lies inside a container among the
    arguments (marks act only as a task's own arguments; the task would get the mark object)."""
    for what, value in labelled_by_position(args, kwargs):
        if type(value) is Access:
            continue  # at top level: a mark (unwrapped by the caller)
        found = find_nested(value, lambda item: type(item) is Access)
        if found is not None:
            path, mark = found
            raise TypeError(
                f"hetflow: task {name!r}: {what}, at {path}, is an access mark (hetflow.{mark.mode}(...)); marks act "
                "only as a task's own arguments, not inside lists, tuples, dicts or sets (an array there travels by "
                "value and is not tracked): pass the array as an argument of its own, marked"
            )


def _call_resolved(func: Callable[..., Any], args: tuple, kwargs: dict, search: FutureSearch) -> Any:
    copies: dict = {}
    result = func(
        *[search.substitute(value, _resolve, copies) for value in args],
        **{key: search.substitute(value, _resolve, copies) for key, value in kwargs.items()},
    )
    if type(result) is types.CoroutineType:
        raise returned_coroutine(func, result)
    return result


def _as_tuple(args: Any) -> tuple:
    return args if type(args) is tuple else tuple(args)


HIDDEN_FRAMES.add(_call_resolved.__code__)


_current: Optional[Runtime] = None
_current_lock = threading.RLock()
# Changes in a forked child: runtimes made before belong to the parent.
_fork_generation = 0
_live: "weakref.WeakSet[Runtime]" = weakref.WeakSet()
# Engines never destroyed: their workers are still in tasks that shutdown gave up on, or (in a
# forked child) they have no threads here and destroying them would wait for ever.
_abandoned: List[Any] = []


def inside_a_task() -> bool:
    """Whether this thread runs a task: of one of this process's runtimes, or, in a process
    worker, the task the host sent."""
    kernel = sys.modules.get("hetflow._kernel")
    if kernel is not None and kernel.running_a_task and threading.current_thread() is threading.main_thread():
        return True
    return any(runtime._engine.inside_task() for runtime in list(_live))


# Why no new runtime may start in this process, if none may: hetflow.mpi's arrays would be plain
# arrays to it, and tasks over them would run on every rank instead of on their owners.
refusal_to_start: Optional[str] = None


def _thread_stack_size() -> Optional[int]:
    """The stack threading's new threads get (threading.stack_size()), for the engine's threads,
    which run thread tasks (64 KiB at least, which the engine's own frames need beside the
    task's); None for the system's default."""
    size = threading.stack_size()  # which also sets it back to the default: restored
    threading.stack_size(size)
    return max(size, 64 << 10) if size else None


def current() -> Runtime:
    """The running runtime, started with defaults on first use."""
    global _current
    runtime = _current
    if runtime is not None:
        return runtime
    with _current_lock:
        if _current is None:
            if refusal_to_start is not None:
                raise RuntimeError(refusal_to_start)
            _current = Runtime()
        return _current


def _refuse_inside_task(what: str) -> None:
    runtime = _current
    if runtime is not None and not runtime._closed and runtime.inside_task():
        raise RuntimeError(
            f"hetflow.{what}() cannot be called inside a task: it would stop the runtime that runs the task "
            "and wait for that task itself; call it from the program that submitted the work"
        )


def start(settings: Settings) -> Runtime:
    """Replaces the current runtime (after waiting for its work) with one of ``settings``."""
    global _current
    settings.resolved()  # a bad setting from the environment leaves the running runtime alone
    _refuse_inside_task("init")
    if refusal_to_start is not None:
        raise RuntimeError(refusal_to_start)
    with _current_lock:
        if _current is not None and _current.serves_mpi and not _current._closed:
            raise RuntimeError(
                "hetflow.init: the running runtime serves hetflow.mpi, and a new one would not (its distributed "
                "arrays would be plain arrays to it, and tasks over them would run on every rank); call "
                "hetflow.init(...) before hetflow.mpi.init()"
            )
        if _current is not None:
            # Submissions from other threads meanwhile are refused, saying why. Waiting for the new
            # runtime could wait for ever: the old work may wait for the submitting thread.
            _current._replaced = True
            try:
                _current.shutdown()
            finally:
                _current = None
        _current = Runtime(**settings.as_keywords())
        _current.started_by_init = True
        return _current


def stop(timeout: Optional[float] = None, cancel_futures: bool = False) -> None:
    global _current
    _checked_timeout(timeout, "hetflow.shutdown")
    _refuse_inside_task("shutdown")
    with _current_lock:
        if _current is not None:
            try:
                _current.shutdown(timeout, cancel_futures)
            finally:
                _current = None


EXIT_TIMEOUT_DEFAULT = 60.0


def exit_timeout() -> Optional[float]:
    """HETFLOW_EXIT_TIMEOUT: seconds without a task finishing after which the interpreter's exit
    stops waiting for the work (default 60; ``none``: wait for ever; 0: do not wait)."""
    text = os.environ.get("HETFLOW_EXIT_TIMEOUT", "").strip()
    if not text:
        return EXIT_TIMEOUT_DEFAULT
    if text.lower() in ("none", "inf", "never"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        print(
            f"hetflow: HETFLOW_EXIT_TIMEOUT={text!r} is not a number of seconds >= 0 or 'none'; "
            f"using {EXIT_TIMEOUT_DEFAULT:g}",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT_DEFAULT
    return value


# Set once hetflow's exit handler has run: a runtime started later is one an exit handler of the
# program's started (registered before hetflow was imported, it runs after hetflow's).
_exit_handler_ran = False
# The runtimes such handlers started, to stop when the handler that started them returns.
_late: "weakref.WeakSet[Runtime]" = weakref.WeakSet()


def _stop_when_this_exit_handler_returns(runtime: Runtime) -> None:
    """Has ``runtime``, started by an exit handler that runs after hetflow's, stopped as hetflow's
    exit handler stops its runtimes (waiting for the work while it makes progress) when that
    handler returns or raises. ``atexit`` runs no handler registered while it runs them, and a
    runtime left to the interpreter's teardown hung it for ever when a task was still to run (its
    thread could no longer take the GIL, and the teardown waited for it)."""
    if threading.current_thread() is not threading.main_thread() or sys.getprofile() is not None:
        return  # exit handlers run on the main thread; a profiler's hook is left alone
    watching = bool(_late)
    _late.add(runtime)
    if watching:
        return
    frame = sys._getframe()
    while frame.f_back is not None:
        frame = frame.f_back
    handler = frame  # the exit handler's own frame: atexit calls it from C

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "return" and frame is handler:  # returned or raised
            sys.setprofile(None)
            _stop_late_runtimes()

    sys.setprofile(watch)


def _stop_late_runtimes() -> None:
    interrupted = False
    for runtime in list(_late):
        _late.discard(runtime)
        if runtime._closed or runtime._generation != _fork_generation or runtime is _current:
            continue
        if interrupted:
            runtime.interrupted = True
        try:
            _shut_down_at_exit(runtime)
        except KeyboardInterrupt:
            interrupted = True
            print(f"hetflow: interrupted at exit (Ctrl-C): {runtime.abandoned_tasks} unfinished task(s) given up", file=sys.stderr)
    if interrupted and _current is not None:
        _current.interrupted = True
    _at_exit()  # the module's runtime, if the handler started one; the gates to the GIL closed again


def _at_exit() -> None:
    """Waits for the work while it makes progress; gives up (cancels what has not started,
    ends the worker processes) after HETFLOW_EXIT_TIMEOUT seconds without a task finishing."""
    global _current, _exit_handler_ran
    _exit_handler_ran = True
    with _current_lock:
        runtime = _current
    try:
        if runtime is None or runtime._generation != _fork_generation:
            return
        _shut_down_at_exit(runtime)
    except KeyboardInterrupt:  # shutdown gave the work up; a traceback of this handler tells nothing more
        assert runtime is not None
        print(f"hetflow: interrupted at exit (Ctrl-C): {runtime.abandoned_tasks} unfinished task(s) given up", file=sys.stderr)
    finally:
        # The frames of failed thread tasks that nobody read go now, their locals' finalizers
        # run (the runtime, shut down, still the current one), as a thread pool's go with its futures.
        let_go_of_all_frames()
        with _current_lock:
            if _current is runtime:
                _current = None
        _close_gil_gates()
        # A future kept in a global holds its runtime, whose engine holds the task's exception,
        # whose class's methods hold the module's globals: a cycle through C++ that the garbage
        # collector cannot see, so the runtime outlives the interpreter (shut down already, its
        # trace written). The process ends anyway; nanobind need not list those objects.
        engine_module = sys.modules.get("hetflow._hetflow")
        if engine_module is not None:
            engine_module.expect_objects_at_exit()


# How long the exit handler lets go of the GIL for threads already on their way to it.
_GIL_GATE_PATIENCE_S = 1.0


def _close_gil_gates() -> None:
    """hetflow's threads (and the program's threads inside hetflow's calls) that want the GIL
    back from now on wait for the process to end: Python is about to finalize, and ends such a
    thread in a way that aborts the process through C++ frames (python/src/finalizing.hpp)."""
    for name in ("hetflow._hetflow", "hetflow._hetflow_mpi"):  # those loaded (on first use)
        module = sys.modules.get(name)
        if module is not None:
            module.close_gil_gate(_GIL_GATE_PATIENCE_S)


def _shut_down_at_exit(runtime: Runtime) -> None:
    # The runtime stays the current one meanwhile: its tasks may submit follow-ups to it.
    if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        runtime.interrupted = True  # the program ended on Ctrl-C: do not wait for its work
    if runtime._handles is not None:
        runtime._handles.release_all()  # the program can no longer release what it holds
    idle = exit_timeout()
    if idle is None:
        runtime.shutdown()
    else:
        runtime.shutdown(idle_timeout=idle)
    if runtime.gave_up is not None and not runtime.interrupted:
        count = runtime.abandoned_tasks
        print(
            f"hetflow: exiting without {count} unfinished task{'s' if count != 1 else ''}: {runtime.gave_up}",
            file=sys.stderr,
        )


def _after_fork_in_child() -> None:
    """A forked child starts afresh: the runtimes it inherited have no threads here, so they are
    let go of without being shut down, and hetflow calls start a new one."""
    global _current, _current_lock, _fork_generation
    _fork_generation += 1
    # Taken first: dropping _current may free the current runtime, whose engine would then be
    # stopped here (waiting for threads that are not) instead of let go of.
    inherited = list(_live)
    in_a_thread_task = any(runtime._engine.inside_task() for runtime in inherited)
    _current = None
    _current_lock = threading.RLock()  # another thread may have held it at the fork
    for runtime in inherited:
        runtime._engine.forget()
        runtime._closed = True
        runtime._shutdown_lock = threading.Lock()
        runtime._lock = threading.RLock()
        _abandoned.append(runtime)
    _live.clear()
    Future._lock = threading.RLock()  # reentrant, as the one it replaces (see Future._lock)
    if in_a_thread_task:
        _end_when_the_task_ends()


def _end_when_the_task_ends() -> None:
    """In a child that a thread task forked: the process ends when the task's function returns
    (status 0) or raises (``SystemExit``: its code; else status 1, the traceback on stderr), as
    such a child of a plain script, or of a process task, ends. Back in the worker's loop, which
    has no runtime here, it waited for ever (and so did a parent waiting for it).

    The extension's task guard ends it as the task's call returns to the worker (it counts the
    forks: python/src/gil_session.cpp); a raise is seen first where the engine keeps the task's
    exception (``freeze_exception``), which prints its traceback: noted here, the task's frame."""
    frame = sys._getframe()
    while frame.f_back is not None:
        frame = frame.f_back
    _errors.forked_task = (threading.get_ident(), frame)  # the worker's thread calls it from C++


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
