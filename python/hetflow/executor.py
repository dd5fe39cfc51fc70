"""``hetflow.Executor`` (a ``concurrent.futures.Executor``) and ``hetflow.map``."""
from __future__ import annotations

import atexit
import bisect
import concurrent.futures
import functools
import math
import os
import pickle
import sys
import threading
import time
import traceback
import weakref
from types import CoroutineType
from typing import Any, Callable, Generator, Iterable, Iterator, List, Optional, Tuple, Union

from hetflow import _main_globals, _runtime
from hetflow._arrays import Access, span
from hetflow._errors import SettingTypeError, returned_coroutine, same_exception, task_exception
from hetflow._future import Future
from hetflow._progress import Progress
from hetflow._serialize import (
    ExceptionAsItIs,
    RemoteTaskError,
    RemoteTraceback,
    dumps_result,
    dumps_value,
    function_entry,
    is_array,
    loaded_numpy,
    names_main,
)

# Chunks per worker when the chunk size is picked automatically: enough to even out uneven tasks,
# few enough that each chunk's fixed cost vanishes beside its elements.
_CHUNKS_PER_WORKER = 4


class _ThreadInitializer:
    """Runs before each task of a thread executor: the executor's initializer, once in each
    thread (a ``threading.local`` it sets up is there for that thread's tasks, as in
    ``ThreadPoolExecutor``). Where it raised, that thread's tasks fail with a RuntimeError
    whose cause is its error."""

    def __init__(self, initializer: Callable[..., Any], initargs: tuple) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self.local = threading.local()

    def __call__(self) -> None:
        outcome = getattr(self.local, "outcome", None)
        if outcome is None:
            try:
                self.initializer(*self.initargs)
            except BaseException as error:
                outcome = self.local.outcome = error
            else:
                self.local.outcome = True
                return
        if outcome is not True:
            try:
                what = repr(outcome)
            except BaseException:
                what = type(outcome).__name__
            raise RuntimeError(
                f"hetflow.Executor: the initializer raised {what} in this worker thread, so it runs no tasks"
            ) from outcome


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose tasks run on a hetflow runtime of its own.

    >>> with hetflow.Executor(4) as ex:                 # 4 worker processes
    ...     list(ex.map(pow, [2, 3], [5, 2]))
    [32, 9]

    Each executor starts its own runtime, with ``max_workers`` workers, and ``shutdown`` (or
    the end of the ``with`` block) stops that runtime only: the module's runtime
    (``hetflow.submit``, ``hetflow.init``) and other executors are left alone. Its futures are
    ``hetflow.Future`` objects; they may be passed to further tasks of the same executor, which
    then wait for them.

    max_workers: workers (default: the CPUs this process may use). executor: ``"process"``
    (worker interpreter processes: pure Python in parallel; the default on a Python with a GIL)
    or ``"thread"`` (worker threads of this process). sched: the scheduler (``hetflow.init``'s
    names). spin_us: how long idle workers poll before they sleep. initializer, initargs:
    ``initializer(*initargs)`` runs once in each worker (process, or thread of this process)
    before its first task; if it raises, the tasks of that worker fail with its error, as with
    ``concurrent.futures``' executors.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        executor: Optional[str] = None,
        sched: Optional[str] = None,
        *,
        spin_us: Optional[int] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: tuple = (),
        _worker_environment: Optional[dict] = None,
    ) -> None:
        if max_workers is not None:
            if not isinstance(max_workers, int) or isinstance(max_workers, bool):
                raise TypeError(f"hetflow.Executor: max_workers must be an int or None, not {max_workers!r}")
            if not 1 <= max_workers <= _runtime.MAX_NPROCS:
                # Worded as concurrent.futures' executors word it: code (and tests) written for
                # them match this message.
                raise ValueError(
                    f"hetflow.Executor: max_workers must be greater than 0 (and at most {_runtime.MAX_NPROCS}), "
                    f"not {max_workers}"
                )
        kind = _runtime.check_executor(executor) if executor is not None else _runtime.default_executor()
        if max_workers is None:
            max_workers = min(len(os.sched_getaffinity(0)), _runtime.MAX_NPROCS)
        # The process executor's tasks run on the process workers; one CPU worker is enough.
        ncpus, nprocs = (max_workers, 0) if kind == "thread" else (1, max_workers)
        self._runtime = _runtime.Runtime(
            ncpus=ncpus, sched=sched, executor=kind, nprocs=nprocs, spin_us=spin_us, initializer=initializer,
            initargs=tuple(initargs) if isinstance(initargs, list) else initargs,  # any sequence, as in the stdlib
            worker_environment=_worker_environment, initialize_here=False,
        )
        if kind == "thread" and initializer is not None:
            self._runtime._engine.set_thread_initializer(_ThreadInitializer(initializer, self._runtime.initargs))
        self._runtime.made_for = "hetflow.Executor"
        self._max_workers = max_workers
        # Reentrant: a garbage collection during a submission (pickling, registering arrays: any
        # allocation) may run a finalizer that submits to this executor, in this same thread;
        # with a plain lock that thread waited for itself.
        self._lock = threading.RLock()
        self._shut_down = False
        self._submitted: "weakref.WeakSet[Future]" = weakref.WeakSet()  # for shutdown(cancel_futures=True)
        # Dropped without shutdown: the work still finishes, without blocking whoever dropped it.
        self._finalizer = weakref.finalize(self, _release, self._runtime)
        self._finalizer.atexit = False  # at exit, _at_exit waits for the work instead
        _unstopped.add(self._runtime)
        _executors.add(self)

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def executor(self) -> str:
        """``"process"`` or ``"thread"``."""
        return self._runtime.executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Runs ``fn(*args, **kwargs)`` as a task; returns its ``hetflow.Future``."""
        with self._lock:
            if self._shut_down:
                raise RuntimeError("hetflow.Executor: cannot schedule new futures after shutdown")
            future = self._runtime.submit(fn, args, kwargs)
            self._submitted.add(future)
            return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: Optional[int] = 1,
        progress: bool = False,
    ) -> Iterator[Any]:
        """``fn`` over the elements of ``iterables`` taken together (stopping at the shortest).

        The calls are submitted at once; the iterator returned yields their results in input
        order as they come. ``timeout``: seconds from this call after which ``next()`` raises
        ``TimeoutError``. A call's exception is raised by ``next()`` at that call's position.
        chunksize: calls per task (more for many short calls); None picks one from the number
        of calls and workers. progress: show finished calls (a tqdm bar, else a line on stderr).
        Closing the iterator (or losing it once read from) cancels the calls not started; an
        iterator never read from and lost lets them all run, as with ``concurrent.futures``.
        """
        deadline = None if timeout is None else time.monotonic() + _checked_timeout(timeout)
        chunksize = _checked_chunksize(chunksize)
        progress = _runtime.check_flag(progress, "hetflow.Executor.map: progress")
        if self._shut_down:
            raise RuntimeError("hetflow.Executor: cannot schedule new futures after shutdown")
        if not iterables:
            return iter(())  # no calls, as concurrent.futures' map (hetflow.map refuses it)
        # Read before taking the lock: a generator among the iterables may itself submit to this
        # executor (or shut it down), and a slow one must not hold back other threads' submissions.
        calls, star = _calls(fn, iterables)
        with self._lock:
            if self._shut_down:
                raise RuntimeError("hetflow.Executor: cannot schedule new futures after shutdown")
            chunks = _submit(self._runtime, fn, calls, star, chunksize, None)
        return _results(chunks, deadline, progress)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops the executor's runtime; later submissions raise ``RuntimeError``.

        wait: return once the submitted work is done and the workers have stopped (else at once;
        the work still finishes, and the interpreter waits for it at exit). cancel_futures:
        cancel the tasks not started yet: ``submit``'s futures are cancelled before this returns
        (or waits), those of ``map`` as the workers reach them; none of them runs."""
        runtime = self._runtime
        if wait and not runtime._closed and runtime._engine.inside_task():
            raise RuntimeError(
                "hetflow.Executor.shutdown() cannot wait inside one of the executor's own tasks: it would wait for "
                "that task itself; call it from the program that submitted the work, or with wait=False"
            )
        with self._lock:
            self._shut_down = True
        self._finalizer.detach()
        if cancel_futures:
            runtime._engine.cancel_pending()  # nothing queued starts after this
            for future in list(self._submitted):
                future.cancel()  # its waiters told now, as with concurrent.futures, not as a worker reaches it
        if wait:
            runtime.shutdown(cancel_futures=cancel_futures)
            return
        if not runtime._closed:
            _release(runtime)

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self._runtime.note_block_left(kind)
        self.shutdown(wait=True)

    def _terminate(self, reason: str) -> None:
        """Gives up at once: tasks not started are cancelled, worker processes ended (their
        tasks fail with ``reason``); running thread tasks are left to finish, detached."""
        with self._lock:
            self._shut_down = True
        self._finalizer.detach()
        self._runtime.terminate(reason)

    def __repr__(self) -> str:
        state = "shut down" if self._shut_down else "running"
        return f"<hetflow.Executor {self.executor} max_workers={self._max_workers} {state}>"


# Every executor made in this process, for _after_fork_in_child.
_executors: "weakref.WeakSet[Executor]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a child made by ``os.fork()``: the executors inherited from the parent get new locks.
    A thread of the parent that was inside ``submit`` or ``map`` at the fork left the lock held
    in the child, where no thread would ever release it: the child's ``submit`` waited for ever
    instead of raising RuntimeError (the executor belongs to the parent)."""
    for executor in list(_executors):
        executor._lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)

# The runtimes of executors not shut down yet; at interpreter exit each is stopped as the
# module's runtime is (waiting while its tasks make progress).
_unstopped: "weakref.WeakSet[_runtime.Runtime]" = weakref.WeakSet()


def _at_exit() -> None:
    interrupted = False
    for runtime in {*_unstopped, *_left_to_exit}:
        if not runtime._closed and runtime._generation == _runtime._fork_generation:
            if interrupted:
                runtime.interrupted = True  # Ctrl-C at exit: the other executors do not wait either
            try:
                _runtime._shut_down_at_exit(runtime)
            except KeyboardInterrupt:  # as the module's runtime says it: a traceback of this handler tells nothing
                interrupted = True
                print(
                    f"hetflow: interrupted at exit (Ctrl-C): {runtime.abandoned_tasks} unfinished task(s) given up",
                    file=sys.stderr,
                )


atexit.register(_at_exit)


def _release(runtime: _runtime.Runtime) -> None:
    """Stops ``runtime`` once its work is done, from a thread the interpreter waits for at exit;
    from then on, _at_exit stops it (no longer than HETFLOW_EXIT_TIMEOUT without a task
    finishing, as for the module's runtime)."""
    if runtime._closed:  # inherited by a forked child (or shut down already): nothing of it runs here
        return
    try:
        threading.Thread(target=_stop_when_done, args=(runtime,), name="hetflow-executor-shutdown").start()
    except RuntimeError:  # the interpreter is exiting: no new threads
        _runtime._shut_down_at_exit(runtime)


_interpreter_exiting = threading.Event()
# Called as the interpreter starts to exit, before it waits for the threads _release starts.
threading._register_atexit(_interpreter_exiting.set)  # type: ignore[attr-defined]
# Runtimes whose stop thread handed them to _at_exit, kept alive until then (their executors may
# be gone): the main thread waits for their work there, where a Ctrl-C ends the wait as for the
# module's runtime (one line, not a traceback of the interpreter's wait for this thread).
_left_to_exit: "list[_runtime.Runtime]" = []


def _stop_when_done(runtime: _runtime.Runtime) -> None:
    while not runtime._engine.wait_all(0.2):
        if _interpreter_exiting.is_set():
            _left_to_exit.append(runtime)
            return
    runtime.shutdown()


def map(
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    chunksize: Optional[int] = None,
    executor: Union[None, str, Executor] = None,
    progress: bool = False,
) -> List[Any]:
    """``[fn(*args) for args in zip(*iterables)]``, computed by tasks; the list is in input order.

    >>> hetflow.map(pow, range(5), [2] * 5)
    [0, 1, 4, 9, 16]

    Made for many short calls: they are grouped into chunks, one task per chunk (chunksize=None
    picks about four chunks per worker; give a number to choose). executor: ``"process"`` or
    ``"thread"`` for the module's runtime (default: its executor), or a ``hetflow.Executor``
    to run on. The first failing call's exception is raised (once the calls before it are
    done); the calls not started then are cancelled. progress: show finished calls.
    """
    chunksize = _checked_chunksize(chunksize)
    progress = _runtime.check_flag(progress, "hetflow.map: progress")
    if isinstance(executor, Executor):
        if executor._shut_down:
            raise RuntimeError("hetflow.map: the executor has been shut down")
        calls, star = _calls(fn, iterables)  # outside the lock, as in Executor.map
        with executor._lock:
            if executor._shut_down:
                raise RuntimeError("hetflow.map: the executor has been shut down")
            chunks = _submit(executor._runtime, fn, calls, star, chunksize, None, waited=True)
    else:
        if executor is not None:
            if not isinstance(executor, str):
                raise TypeError(
                    f"hetflow.map: executor must be 'process', 'thread', a hetflow.Executor or None, not {executor!r}"
                )
            _runtime.check_executor(executor)
        runtime = _runtime.current()
        calls, star = _calls(fn, iterables)
        chunks = _submit(runtime, fn, calls, star, chunksize, executor, waited=True)
    return list(_results(chunks, None, progress))


# -- chunks ------------------------------------------------------------------------------------
def _checked_chunksize(chunksize: Any) -> Optional[int]:
    if chunksize is None:
        return None
    if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
        error = ValueError if isinstance(chunksize, int) and not isinstance(chunksize, bool) else SettingTypeError
        raise error(f"hetflow: chunksize must be an int >= 1 (calls per task) or None (automatic), not {chunksize!r}")
    return chunksize


def _checked_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"hetflow.Executor.map: timeout must be None or a number of seconds, not {timeout!r}")
    if timeout != timeout:
        raise ValueError(f"hetflow.Executor.map: timeout must be None or a number of seconds, not {timeout!r}")
    return float(timeout)


def _workers(runtime: _runtime.Runtime, executor: str) -> int:
    return runtime.nprocs if executor == "process" and runtime.nprocs else runtime.ncpus


def _calls(fn: Callable[..., Any], iterables: Tuple[Iterable[Any], ...]) -> Tuple[list, bool]:
    """Checks ``fn`` and reads the iterables to the end: the calls, and whether each is a tuple
    of arguments (several iterables) rather than the one argument (one iterable, the common
    case: no tuple for each). Called with no lock held: the iterables run the caller's code."""
    if not callable(fn):
        raise TypeError(f"hetflow: {fn!r} is not callable")
    _runtime.refuse_async_function(fn, "hetflow")
    if not iterables:
        raise TypeError("hetflow: map() needs at least one iterable of arguments")
    star = len(iterables) > 1
    return (list(zip(*iterables)) if star else list(iterables[0])), star


def _submit(
    runtime: _runtime.Runtime,
    fn: Callable[..., Any],
    calls: list,
    star: bool,
    chunksize: Optional[int],
    executor: Optional[str],
    waited: bool = False,
) -> List[Tuple[Future, int]]:
    """Submits the calls (from ``_calls``), ``chunksize`` per task; returns (future, calls) per
    task in order. A future of one call (``calls == 0``) gives its value; a chunk's gives a
    _ChunkOutcome. ``waited``: the caller waits for the calls before the program goes on
    (``hetflow.map``)."""
    kind = executor or runtime.executor
    if kind == "process" and runtime.nprocs == 0:
        raise ValueError("hetflow: executor='process' but the runtime has no worker processes (nprocs=0)")
    if chunksize is None:
        chunksize = max(1, math.ceil(len(calls) / (_CHUNKS_PER_WORKER * _workers(runtime, kind))))
    name = getattr(fn, "__name__", None) or type(fn).__name__
    chunks: List[Tuple[Future, int]] = []
    try:
        if chunksize == 1:
            for call in calls:
                chunks.append((runtime.submit(fn, call if star else (call,), {}, executor=executor), 0))
            return chunks
        lifts = _lifts(runtime, kind, waited, (value for call in calls for value in call) if star else calls)
        if kind == "process":
            # Pickled here, once per chunk: the task's arguments are then plain bytes, which
            # take the engine's shortest path.
            fn_bytes = function_entry(fn)[1]
            for start in range(0, len(calls), chunksize):
                part, data = _lift_data(calls[start : start + chunksize], star, lifts)
                target: Callable[..., _ChunkOutcome]
                args: tuple
                try:
                    target, args = _run_pickled_chunk, (fn_bytes, _dumps_calls(part), star, *data)
                except TypeError:
                    # Futures among the arguments: the general path waits for them and sends
                    # their values (and names what cannot be sent at all).
                    target, args = _run_chunk_in_process, (fn, part, star, *data)
                chunks.append((runtime.submit(target, args, {}, executor=kind, name=name), len(part)))
        else:
            for start in range(0, len(calls), chunksize):
                part, data = _lift_data(calls[start : start + chunksize], star, lifts)
                chunks.append(
                    (runtime.submit(_run_chunk, (fn, part, star, *data), {}, executor=kind, name=name), len(part))
                )
    except BaseException:
        for future, _ in chunks:
            future.cancel()
        raise
    return chunks


def _dumps_calls(calls: list) -> bytes:
    try:
        data = pickle.dumps(calls, protocol=pickle.HIGHEST_PROTOCOL)
        # Named by reference in __main__ (or __mp_main__, <run_path>): the worker processes, whose __main__ is
        # not the host's, could not load it; cloudpickle sends those functions and classes by value.
        if not names_main(data):
            return data
    except Exception:
        pass
    return dumps_value(calls)  # cloudpickle: lambdas and classes of __main__ among the arguments


_ChunkOutcome = Tuple[list, Optional[BaseException], Optional[str]]


class _Lifted:
    """Stands, in a chunk's calls, for the chunk task's data argument ``index``: a numpy array or
    an access mark on one that a call takes (see ``_lift_data``)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> Any:
        return (_Lifted, (self.index,))


def _lift_data(part: list, star: bool, lifts: Callable[[Any], bool]) -> Tuple[list, tuple]:
    """The chunk's calls with each access mark, and each numpy array that ``lifts``, replaced by a
    ``_Lifted``, and those values (each once), which become the chunk task's own arguments: task
    data, ordered by their access modes and sent to worker processes as for a call submitted on
    its own (chunksize=1), rather than values nested in a list, which nothing orders."""
    numpy = loaded_numpy()
    data_types: tuple = (Access,) if numpy is None else (Access, numpy.ndarray)
    for value in (value for call in part for value in call) if star else part:
        if isinstance(value, data_types):
            break
    else:
        return part, ()  # nothing to lift: the common case of plain values
    data: list = []
    slots: dict = {}

    def lift(value: Any) -> Any:
        if type(value) is not Access and not (is_array(value) and lifts(value)):
            return value
        slot = slots.get(id(value))
        if slot is None:
            slot = slots[id(value)] = _Lifted(len(data))
            data.append(value)
        return slot

    if star:
        lifted = [tuple(lift(value) for value in call) for call in part]
    else:
        lifted = [lift(value) for value in part]
    return (lifted, tuple(data)) if data else (part, ())


def _lifts(runtime: _runtime.Runtime, kind: str, waited: bool, values: Iterable[Any]) -> Callable[[Any], bool]:
    """Which arrays among the calls' argument ``values`` ``_lift_data`` makes task data. A
    thread task reads the array itself, so all of them, unless the calls are waited for before
    the program goes on (``hetflow.map``). Otherwise (a process task gets a copy pickled now, or
    the program waits), those whose memory tasks of this runtime have used, whose earlier writers
    the calls must wait for, and those that share a byte with one the calls write through a mark
    (``W``, ``RW``, ``REDUX``), which a call must read as the calls before it wrote it (a copy
    pickled now, or a thread reading beside a writer, read what was there before). Other arrays
    travel in the calls (object arrays too, which cannot be task data in a worker process), which
    costs no registration."""
    if kind == "thread" and not waited:
        return lambda array: True
    handles = runtime._handles
    known: Callable[[Any], bool] = (lambda array: False) if handles is None else handles.known
    written = _written_ranges(values)

    def lifts(array: Any) -> bool:
        if kind == "process" and array.dtype.hasobject:
            return False
        return known(array) or (bool(written) and _meets(written, array))

    return lifts


def _written_ranges(values: Iterable[Any]) -> List[List[int]]:
    """The byte ranges [start, stop) the access marks among ``values`` write, merged, in order."""
    ranges = []
    for value in values:
        if type(value) is Access and value.mode != "R" and is_array(value.value) and value.value.size:
            low, nbytes, _ = span(value.value)
            ranges.append((low, low + nbytes))
    merged: List[List[int]] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return merged


def _meets(ranges: List[List[int]], array: Any) -> bool:
    """Whether ``array``'s span shares a byte with one of the merged ``ranges``."""
    low, nbytes, _ = span(array)
    if not nbytes:
        return False
    # The last range starting before the array ends meets it if it ends after the array starts.
    index = bisect.bisect_left(ranges, [low + nbytes]) - 1
    return index >= 0 and ranges[index][1] > low


def _put_back(calls: list, star: bool, data: tuple) -> list:
    """The calls with the task's data arguments in place of their ``_Lifted`` stand-ins."""

    def back(value: Any) -> Any:
        return data[value.index] if type(value) is _Lifted else value

    if star:
        return [tuple(back(value) for value in call) for call in calls]
    return [back(value) for value in calls]


def _run_chunk(fn: Callable[..., Any], calls: list, star: bool, *data: Any) -> _ChunkOutcome:
    """Runs the calls in order; stops at the first failing one and hands back its exception
    with the results before it, so that the caller raises it at its own position."""
    if data:
        calls = _put_back(calls, star, data)
    results: List[Any] = []
    append = results.append
    try:
        if star:
            for args in calls:
                append(fn(*args))
                if type(results[-1]) is CoroutineType:
                    raise returned_coroutine(fn, results.pop())
        else:
            for arg in calls:
                append(fn(arg))
                if type(results[-1]) is CoroutineType:
                    raise returned_coroutine(fn, results.pop())
    except BaseException as exc:  # SystemExit and the like too: raised at their position
        return results, exc, None
    return results, None, None


_loaded: dict = {}  # a worker process's functions, by their pickled bytes


def _run_pickled_chunk(fn_bytes: bytes, calls_bytes: bytes, star: bool, *data: Any) -> _ChunkOutcome:
    fn = _loaded.get(fn_bytes)
    if fn is None:
        if len(_loaded) > 64:
            _loaded.clear()
        fn = _loaded[fn_bytes] = pickle.loads(fn_bytes)
    return _run_chunk_in_process(fn, pickle.loads(calls_bytes), star, *data)


def _run_chunk_in_process(fn: Callable[..., Any], calls: list, star: bool, *data: Any) -> _ChunkOutcome:
    """_run_chunk in a worker process: the exception travels pickled, its traceback as text."""
    results, exc, _ = _run_chunk(_main_globals.seeing_initializer_globals(fn), calls, star, *data)
    if exc is None:
        return results, None, None
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    # As a single task's: itself if it comes back as it was, else without its __init__ called
    # again (whose parameters may not be its args), else what it was; the results before it
    # still come back.
    for travelling in (exc, ExceptionAsItIs(exc)):
        try:
            if same_exception(pickle.loads(dumps_result(travelling)), exc):
                return results, travelling, text  # type: ignore[return-value]
        except Exception:
            pass
    return results, RemoteTaskError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)), text


def _count_done(bar: Progress, count: int, _: Future) -> None:
    bar.update(count)
    if bar.done >= bar.total:
        bar.close()  # the results may never be read


def _results(chunks: List[Tuple[Future, int]], deadline: Optional[float], progress: bool) -> Iterator[Any]:
    """The calls' results in input order; raises a call's exception at its position."""
    bar = Progress(sum(count or 1 for _, count in chunks)) if progress else None
    if bar is not None:
        for future, count in chunks:
            future.add_done_callback(functools.partial(_count_done, bar, count or 1))
    return _MapResults(chunks, deadline, bar)


class _MapResults:
    """What ``Executor.map`` returns: its results in order (a generator underneath). Closed, the
    calls not started are cancelled, before the first ``next()`` too (a generator never started
    runs no ``finally``). Lost before the first ``next()``, the calls all run, as with
    ``concurrent.futures``: ``with ex: ex.map(save, files)`` is a way to run them all."""

    def __init__(self, chunks: List[Tuple[Future, int]], deadline: Optional[float], bar: Optional[Progress]) -> None:
        self._chunks = chunks
        self._bar = bar
        self._started = False
        self._results = _result_iterator(chunks, deadline, bar)

    def __iter__(self) -> "_MapResults":
        return self

    def __next__(self) -> Any:
        self._started = True
        return next(self._results)

    def close(self) -> None:
        if not self._started:
            self._started = True
            _give_up(self._chunks, self._bar)
        self._results.close()

    def __del__(self) -> None:
        if self._started:
            self._results.close()


def _result_iterator(
    chunks: List[Tuple[Future, int]], deadline: Optional[float], bar: Optional[Progress]
) -> Generator[Any, None, None]:
    chunks.reverse()  # popped from the end: a result is let go of once yielded
    try:
        while chunks:
            future, count = chunks[-1]
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                value = future.result(timeout)
            except TimeoutError:
                if future.done():
                    raise  # the call's own, at its position
                raise TimeoutError("hetflow: map's results were not all ready within its timeout") from None
            chunks.pop()
            del future
            # Each result is handed over without a reference kept here while the caller holds it
            # (as concurrent.futures' map does): what the caller drops is freed.
            if count == 0:
                held = [value]
                del value
                yield held.pop()
                continue
            results, exc, text = value
            del value
            results.reverse()
            while results:
                yield results.pop()
            if exc is not None:
                if text is not None:
                    exc.__cause__ = RemoteTraceback(text)
                raise task_exception(exc)  # a StopIteration as a single task's (RuntimeError from it)
    finally:
        _give_up(chunks, bar)


def _give_up(chunks: List[Tuple[Future, int]], bar: Optional[Progress]) -> None:
    """The calls whose results were not taken are cancelled (those not started), the bar closed."""
    for future, _ in chunks:
        future.cancel()
    if bar is not None:
        bar.close(complete=not chunks)
