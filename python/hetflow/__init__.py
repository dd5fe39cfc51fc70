"""hetflow: tasks, futures and data over every core of the machine.

>>> import hetflow
>>> def add(a, b):
...     return a + b
>>> fut = hetflow.task_submit(add, 1, 2)     # runs in a worker, returns at once
>>> hetflow.task_submit(add, fut, 10).result()
13

The runtime starts on first use. ``hetflow.init(ncpus=4, sched="ws", executor="process")``
configures it (also as a context manager), ``hetflow.shutdown()`` stops it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

from hetflow import _runtime
from hetflow._arrays import REDUX, RW, Access, R, W, check_mode
from hetflow._codelet import Codelet, opencl_kernel, opencl_program
from hetflow._codelet import insert as _insert_codelet
from hetflow._data import Acquired, array, empty, ones, zeros
from hetflow._errors import INTERRUPTIONS, CancelledError, DependencyError, HetflowError, WorkerCrashedError
from hetflow._future import Future
from hetflow._kernel import PeerFailed, allreduce, barrier, bcast, recv, reduce, send
from hetflow._serialize import RemoteTaskError
from hetflow.offload import (
    OffloadHandle,
    coreid,
    copy_from_device,
    copy_to_device,
    define_on_device,
    numcores,
    offload,
    offload_multiple,
    offload_single,
    wait_all,
    waitAll,
)
from hetflow._submit import DelayedFunction, TaskOptions, delayed, submit, task_submit
from hetflow.executor import Executor, map

__all__ = [
    "OffloadHandle",
    "allreduce",
    "barrier",
    "bcast",
    "copy_from_device",
    "copy_to_device",
    "coreid",
    "define_on_device",
    "numcores",
    "offload",
    "offload_multiple",
    "offload_single",
    "recv",
    "reduce",
    "send",
    "wait_all",
    "waitAll",
    "Access",
    "Acquired",
    "R",
    "REDUX",
    "RW",
    "W",
    "acquire",
    "array",
    "empty",
    "ones",
    "release",
    "zeros",
    "CancelledError",
    "Codelet",
    "DelayedFunction",
    "DependencyError",
    "RemoteTaskError",
    "Executor",
    "Future",
    "HetflowError",
    "PeerFailed",
    "Session",
    "TaskOptions",
    "WorkerCrashedError",
    "delayed",
    "init",
    "insert",
    "map",
    "ncpus",
    "opencl_kernel",
    "opencl_program",
    "perfmodel_plot",
    "shutdown",
    "submit",
    "task_submit",
    "wait_for_all",
]
__version__ = "0.1.0"


class Session:
    """What ``hetflow.init()`` returns; as a context manager it shuts the runtime down on exit.

    >>> with hetflow.init(ncpus=2, executor="thread"):
    ...     hetflow.submit(print, "hello").result()
    """

    def __init__(self, runtime: _runtime.Runtime) -> None:
        self.runtime = runtime

    @property
    def ncpus(self) -> int:
        return self.runtime.ncpus

    @property
    def nprocs(self) -> int:
        return self.runtime.nprocs

    @property
    def executor(self) -> str:
        return self.runtime.executor

    @property
    def worker_kinds(self) -> frozenset:
        """The kinds of worker: ``cpu``, ``process``, and ``opencl`` / ``cuda`` with devices."""
        return self.runtime.worker_archs()

    @property
    def scheduler(self) -> str:
        return self.runtime.scheduler

    def __enter__(self) -> "Session":
        return self

    def shutdown(self, timeout: Optional[float] = None, cancel_futures: bool = False) -> None:
        """Shuts this session's runtime down, as ``hetflow.shutdown(timeout, cancel_futures)``."""
        if _runtime._current is self.runtime:
            shutdown(timeout, cancel_futures)
        else:
            self.runtime.shutdown(timeout, cancel_futures)

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.runtime.note_block_left(kind)
        self.shutdown()


def init(
    ncpus: Optional[int] = None,
    sched: Optional[str] = None,
    executor: Optional[str] = None,
    nprocs: Optional[int] = None,
    spin_us: Optional[int] = None,
    trace: Optional[str] = None,
    stats: Optional[bool] = None,
    initializer: Optional[Callable[..., Any]] = None,
    initargs: tuple = (),
    opencl: Optional[Union[bool, str]] = None,
    cuda: Optional[bool] = None,
    memory_limits: Optional[Dict[int, int]] = None,
) -> Session:
    """Starts (or restarts, after waiting for its work) the runtime.

    ncpus: CPU workers (default: ``HETFLOW_NCPUS``, else the CPUs this process may use); more
    workers than cores is allowed. sched: ``ws`` (default, or ``HETFLOW_SCHED``), ``eager``,
    ``prio``, ``random``, ``dm``, ``dmda``, ``dmdas``. executor: where tasks run unless told otherwise — ``process`` (default
    on a Python with a GIL, or ``HETFLOW_EXECUTOR``) or ``thread`` (the default with nprocs=0). nprocs: worker processes
    for the process executor (default: ``HETFLOW_NPROCS``, else ncpus); they start with the
    runtime when the executor is ``process`` or nprocs is given, else (executor ``thread``, no
    nprocs argument) each only when its first task needs it (an ``executor="process"`` task, an
    offload kernel), which then waits for it. spin_us: how long idle
    workers poll before sleeping. trace: a path where a Chrome trace is written at shutdown
    (default ``HETFLOW_TRACE``); stats: print worker statistics at shutdown (``HETFLOW_STATS``).
    initializer: called as ``initializer(*initargs)`` once in each worker process when it starts,
    before its first task (a task on a worker whose initializer raised fails with that error),
    and once here for the thread workers, which share this process's state.
    opencl: add a worker per OpenCL GPU or accelerator (``"all"``: CPU devices too, as PoCL's);
    cuda: add a worker per NVIDIA GPU; None: added when ``HETFLOW_OPENCL_DEVICES`` /
    ``HETFLOW_NCUDA`` is set. Codelets (``hetflow.insert``) run on them; with devices the
    default scheduler is ``dmdas``. memory_limits: bytes the engine may keep on each device
    memory node (1, 2, ... in the order of the device workers), ``{1: 256 << 20}``; least
    recently used copies are written back and evicted beyond it (``HETFLOW_MEMORY_LIMITS``).

    A restart shuts the running runtime down (after its work) before it starts the new one; a
    task another thread submits meanwhile is refused with RuntimeError saying a restart is under
    way (waiting for the new runtime instead could wait for ever, when the old work waits for
    that thread).

    >>> with hetflow.init(ncpus=4, trace="trace.json"):
    ...     hetflow.task_submit(print, "hello").result()
    """
    settings = _runtime.Settings(
        ncpus, sched, executor, nprocs, spin_us, trace, stats, initializer, initargs, opencl, cuda, memory_limits
    )
    return Session(_runtime.start(settings))


def insert(
    codelet: Codelet, *args: Any, priority: int = 0, where: Optional[str] = None, name: Optional[str] = None
) -> Future:
    """Runs ``codelet`` over ``args`` on a worker that has an implementation for it, after the
    tasks whose data it needs: arrays marked ``hetflow.R``/``W``/``RW`` (unmarked arrays are
    read), futures (their values are passed) and plain values, in that order to the
    implementation. ``where``: ``"cpu"``, ``"opencl"`` or ``"cuda"`` forces a kind of worker;
    None lets the scheduler choose among the codelet's implementations.

    The engine copies arrays to the device that runs the task and keeps them there for the next
    tasks; ``result()`` of the returned future, ``hetflow.wait_for_all()`` and
    ``hetflow.acquire`` bring them back to host memory. Arrays that are not contiguous, or that
    share elements with another view in use, are used on the host only.

    >>> gemm = hetflow.Codelet("gemm", cpu=gemm_numpy, cuda=gemm_cupy, model="gemm")
    >>> hetflow.insert(gemm, hetflow.RW(c), a, b).result()
    """
    return _insert_codelet(_runtime.current(), codelet, args, priority, where, name)


def shutdown(timeout: Optional[float] = None, cancel_futures: bool = False) -> None:
    """Waits for the submitted tasks, then stops the workers and worker processes. A later call
    of any hetflow function starts a fresh runtime.

    timeout: seconds to wait at most (None: as long as the tasks take). When it passes, the
    tasks not started are cancelled (their futures raise ``CancelledError``) and the worker
    processes are ended (their tasks raise ``WorkerCrashedError``); a thread-executor task that
    still runs cannot be stopped and is left to finish on its own, but shutdown returns.
    cancel_futures: cancel the tasks not started first, and wait only for the running ones.
    Ctrl-C while it waits gives the work up the same way, then raises KeyboardInterrupt.
    Inside a task it raises RuntimeError (it would wait for that task itself). The arrays the
    calling thread still holds (``hetflow.acquire``) are released first: the tasks behind them
    see what the program wrote.
    """
    _runtime.stop(timeout, cancel_futures)


def wait_for_all(timeout: Optional[float] = None, progress: bool = False) -> bool:
    """Waits for every task submitted so far; False if the timeout passed first.

    progress: show how many of the tasks unfinished at the call are done (a tqdm bar when tqdm
    is installed, else a line on stderr); tasks they submit meanwhile are counted in."""
    progress = _runtime.check_flag(progress, "hetflow.wait_for_all: progress")
    runtime = _runtime.current()
    if not progress or runtime.inside_task():
        return runtime.wait_all(timeout)  # inside a task it raises, before any progress is shown
    return _wait_with_progress(runtime, timeout)


def _wait_with_progress(runtime: _runtime.Runtime, timeout: Optional[float]) -> bool:
    import time

    from hetflow._progress import Progress

    engine = runtime._engine
    limit = _runtime._checked_timeout(timeout, "hetflow.wait_for_all")  # None: no limit
    deadline = None if limit is None else time.monotonic() + limit
    start = engine.finished()
    bar = Progress(engine.outstanding())
    finished = False
    try:
        while True:
            step = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
            finished = runtime.wait_all(step)
            done = engine.finished() - start
            bar.update(done - bar.done, total=max(bar.total, done + engine.outstanding()))
            if finished or (deadline is not None and time.monotonic() >= deadline):
                return finished
    finally:
        bar.close(complete=finished)


def acquire(array: Any, mode: str = "RW") -> Acquired:
    """Host access to an array that tasks may be using: waits for the earlier tasks that conflict
    with ``mode`` ("R", "W" or "RW"), and holds later conflicting tasks back until released.

    >>> with hetflow.acquire(a, "R") as view:
    ...     print(view.sum())
    """
    mode = check_mode(mode)  # before the runtime starts for it
    runtime = _runtime.current()
    if mode == "REDUX":
        raise ValueError("hetflow.acquire: REDUX is a mode for tasks that contribute; acquire with 'R', 'W' or 'RW'")
    try:
        acquired = runtime.handles.acquire(array, mode)
    except INTERRUPTIONS:
        runtime.interrupted = True  # at exit, do not wait for the work left
        raise
    return Acquired(runtime.handles, array, acquired)


def release(array: Any) -> None:
    """Releases the most recent ``hetflow.acquire`` of ``array`` still held."""
    _runtime.current().handles.release(array)


def perfmodel_plot(perfmodel: str, path: Optional[str] = None) -> str:
    """Writes a PNG of what the performance model ``perfmodel`` learned (time against size per
    architecture, spread and fitted curve) and returns its path."""
    from hetflow.perfmodel import perfmodel_plot as plot

    return plot(perfmodel, path)


def ncpus() -> int:
    """The number of CPU workers of the running runtime."""
    return _runtime.current().ncpus
