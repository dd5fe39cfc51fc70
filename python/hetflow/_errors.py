"""The exceptions hetflow raises, and how task outcomes become Python exceptions."""
from __future__ import annotations

import concurrent.futures
import copy
import gc
import os
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

CancelledError = concurrent.futures.CancelledError

# What ends a wait of the program's main thread from a signal handler: Ctrl-C, or a handler's
# sys.exit (SIGTERM, say). A wait ended so makes the shutdown at exit give the work up at once.
INTERRUPTIONS = (KeyboardInterrupt, SystemExit)


class HetflowError(RuntimeError):
    """An error of the hetflow engine itself."""


class DependencyError(HetflowError):
    """A task did not run because a task it depends on failed or was cancelled.

    ``root_task`` names the task whose failure started it; ``root_exception`` (also the
    ``__cause__``) is that failure.

    >>> f = hetflow.submit(lambda: 1 / 0)
    >>> g = hetflow.submit(lambda x: x + 1, f)
    >>> g.result()
    Traceback (most recent call last):
    hetflow.DependencyError: dependency '<lambda>' failed: ZeroDivisionError: division by zero
    """

    def __init__(self, root_task: str, root_exception: BaseException) -> None:
        super().__init__(f"dependency '{root_task}' failed: {type(root_exception).__name__}: {root_exception}")
        self.root_task = root_task
        self.root_exception = root_exception
        self.__cause__ = root_exception

    def __reduce__(self) -> Any:
        return (type(self), (self.root_task, self.root_exception))


class ElsewhereError(HetflowError):
    """The task ran on another MPI rank (hetflow.mpi): its value is there, not here.

    ``rank`` is the rank that ran it. Values reach other ranks through distributed arrays
    (``hetflow.mpi.register``, ``hetflow.mpi.gather``)."""

    def __init__(self, task: str, rank: int) -> None:
        super().__init__(f"task '{task}' ran on rank {rank}, not on this one: its value is there")
        self.task = task
        self.rank = rank

    def __reduce__(self) -> Any:
        return (type(self), (self.task, self.rank))


class WorkerCrashedError(HetflowError, concurrent.futures.BrokenExecutor):
    """The worker process running the task died (segfault, ``os._exit``, a signal).

    Only that task fails; the worker process is replaced and other tasks go on. It is a
    ``concurrent.futures.BrokenExecutor``, for code written for the standard executors, whose
    pools break so (``BrokenProcessPool`` is a subclass of it, which this is not).
    """


class SettingTypeError(TypeError, ValueError):
    """A setting or argument of the wrong type (``hetflow.init(ncpus="4")``): a TypeError, and
    a ValueError too, which hetflow raised for these before."""


class TaskTraceback(Exception):
    """The traceback of a task, as text; set as the ``__cause__`` of the errors tasks raise."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text}\"\"\""


TaskTraceback.__module__ = "hetflow"

_TRACEBACK_ATTRIBUTE = "__hetflow_traceback__"

# The frames of the exceptions thread tasks raised, kept apart from the exceptions, which the
# engine holds: id(exception) -> (exception, its traceback, the failure's number). The future of
# the task borrows them (Future.result() then raises an error whose traceback reaches into the
# task, for a post-mortem debugger) and tells the store to forget them. Others go once the
# engine lets go of their exception, and after _FRAMES_KEPT_FOR later failures: frames that
# reach the task's own future make a reference cycle through the engine, which the garbage
# collector cannot see.
# The fourth item: the tracebacks of the exceptions in its __cause__/__context__ chain, by id.
_Chain = Dict[int, Tuple[BaseException, Optional[TracebackType]]]
_frames: Dict[int, Tuple[BaseException, TracebackType, int, _Chain]] = {}
# Reentrant: a collection set off by an allocation while a thread holds it runs the finalizers of
# the garbage it finds in that thread, and one of those may read a failed future (_frames_of).
_frames_lock = threading.RLock()
_failures = 0
_FRAMES_KEPT_FOR = 256
_STORE_PATIENCE_S = 1.0


def _count_when_only_an_entry_holds() -> int:
    entry = (Exception(),)
    return sys.getrefcount(entry[0])  # as _let_go_of_frames counts (the entry's reference, the call's)


_ONLY_THE_ENTRY = _count_when_only_an_entry_holds()


def _let_go_of_frames() -> list:
    """Removes the frames whose exception nothing else holds now, and the oldest; called with
    _frames_lock held. Returns them, for the caller to drop once it has released the lock:
    freeing frames runs the finalizers of their locals, which may use futures."""
    gone = []
    for key, entry in list(_frames.items()):
        if sys.getrefcount(entry[0]) <= _ONLY_THE_ENTRY or entry[2] <= _failures - _FRAMES_KEPT_FOR:
            # Gone meanwhile, or replaced, if a finalizer (of a collection an allocation here set
            # off) took it: the lock is reentrant.
            if _frames.get(key) is entry:
                gone.append(_frames.pop(key))
    return gone


def _keep_frames(exception: BaseException, tb: TracebackType, chain: _Chain) -> None:
    global _failures
    # A worker must not wait on the store for long: a thread holds the lock that long only where
    # a finalizer, run by a collection inside it, waits for a task (this one, perhaps). The
    # task's traceback is then kept as text only.
    if not _frames_lock.acquire(timeout=_STORE_PATIENCE_S):
        return
    try:
        _failures += 1
        gone = _let_go_of_frames()
        _frames[id(exception)] = (exception, tb, _failures, chain)
    finally:
        _frames_lock.release()
    _watch_collections()
    del gone


def _after_collection(phase: str, info: Dict[str, int]) -> None:
    # The futures dropped meanwhile let go of their errors: their frames go too, without waiting
    # for another task to fail. Not after the youngest generation's collections, the frequent
    # ones (a store full of unread failures takes tens of microseconds to look over). Skipped
    # when another thread is at the store's own work (in this thread, inside it, the removal
    # tolerates being entered again).
    if phase != "stop" or info.get("generation", 2) == 0 or not _frames:
        return
    if _frames_lock.acquire(blocking=False):
        try:
            gone = _let_go_of_frames()
        finally:
            _frames_lock.release()
        del gone


def _watch_collections() -> None:
    # Installed once a failure's frames are kept, not at import: a Ctrl-C that comes while the
    # interpreter runs a gc callback written in Python raises KeyboardInterrupt there, which the
    # collector prints as "Exception ignored" and drops, so the program went on as if the key
    # had never been pressed. Programs whose thread tasks never fail are not exposed to that.
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def _after_fork_in_child() -> None:
    global _frames_lock
    _frames_lock = threading.RLock()  # another thread may have held it at the fork (a task failing)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _frames_of(exception: BaseException) -> Optional[Tuple[TracebackType, _Chain]]:
    """The traceback kept for ``exception``, and those of its chain, or None (borrowed: the
    store keeps them until told to forget them, or until it lets go of them itself)."""
    with _frames_lock:
        entry = _frames.get(id(exception))
        if entry is None or entry[0] is not exception:
            return None
        return entry[1], entry[3]


def forget_frames(exception: BaseException) -> None:
    """The task's future has the frames kept for ``exception`` (borrowed): the store lets go."""
    with _frames_lock:
        entry = _frames.get(id(exception))
        if entry is not None and entry[0] is exception:
            del _frames[id(exception)]


def let_go_of_all_frames() -> None:
    """At exit, after the runtime's shutdown: the frames nobody took go now, as those of a thread
    pool's futures go with the futures. The engine, which the interpreter does not free, holds
    freeze_exception and so this module's globals: the store would never be freed, nor would the
    task's locals (their finalizers never run, a file they wrote never flushed or removed)."""
    with _frames_lock:
        gone = list(_frames.values())
        _frames.clear()
    del gone


# In a child that a thread task forked: (the thread's id, the task's frame), see
# _runtime._end_when_the_task_ends.
forked_task: Optional[Tuple[int, Any]] = None


def _end_if_the_forked_task_raised(exception: BaseException) -> None:
    assert forked_task is not None
    ident, task = forked_task
    if threading.get_ident() != ident:
        return
    tb = exception.__traceback__
    while tb is not None:
        if tb.tb_frame is task:
            end_forked_child(exception)
        tb = tb.tb_next


def end_forked_child(
    exc: Optional[BaseException], trim: Callable[[Optional[TracebackType]], Optional[TracebackType]] = lambda tb: tb
) -> NoReturn:
    """Ends this process, a child that a task (or a worker's initializer) forked and that came
    back into hetflow's code, as such a child of a plain script ends: by the task's return
    (``exc`` None: status 0) or raise (SystemExit: its code; else status 1, the traceback, less
    what ``trim`` takes off, on stderr). It must not go on in the worker's loop or read its
    requests: only the process that forked speaks for the worker."""
    status = 0
    try:
        if isinstance(exc, SystemExit):
            code = exc.code
            if isinstance(code, int):
                status = code & 0xFF
            elif code is not None:
                status = 1
                print(code, file=sys.stderr)
        elif exc is not None:
            status = 1
            traceback.print_exception(type(exc), exc, trim(exc.__traceback__), file=sys.stderr)
    except BaseException:
        pass
    flush_stdio()
    os._exit(status)


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # a task may have replaced or closed them
            pass


def freeze_exception(exception: BaseException) -> None:
    """Called by the engine where a task raised: keeps the traceback as text, and the frames apart.

    The engine holds on to the exception; frames on it would keep everything they reference
    (module globals, the futures in them) alive from C++, where the garbage collector cannot see.
    """
    tb = exception.__traceback__
    if forked_task is not None:
        _end_if_the_forked_task_raised(exception)
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code in HIDDEN_FRAMES:
        tb = tb.tb_next  # hetflow's call of the task's function
    text = "".join(traceback.format_exception(type(exception), exception, tb))
    chain: _Chain = {}
    seen: set = set()
    pending: List[Optional[BaseException]] = [exception]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current is not exception:
            chain[id(current)] = (current, current.__traceback__)
        current.__traceback__ = None
        pending.extend((current.__cause__, current.__context__))
    if tb is not None:
        _keep_frames(exception, tb, chain)
    try:
        setattr(exception, _TRACEBACK_ATTRIBUTE, text)
    except Exception:
        pass


def _detached(exception: BaseException) -> BaseException:
    """A copy of an exception the engine holds, with the task's traceback: its frames while they
    are kept, else as text in its cause.

    Raising the engine's own object would add the caller's frames to its traceback, and those
    frames (and all they reference) would then be kept alive from C++, out of the garbage
    collector's sight.
    """
    clone = _copied(exception)
    if clone is None:
        return exception
    clone.__cause__ = exception.__cause__
    clone.__context__ = exception.__context__
    clone.__suppress_context__ = exception.__suppress_context__
    kept = _frames_of(exception)
    if kept is not None:
        # The frames, those of the exceptions it was raised from or while handling too (copies
        # of them, given theirs: the engine's own keep none).
        clone.__traceback__, chain = kept
        _with_frames(clone, exception, chain)
        return clone
    text = getattr(exception, _TRACEBACK_ATTRIBUTE, None)
    if text is not None:
        if exception.__cause__ is None and not exception.__suppress_context__:
            clone.__cause__ = TaskTraceback(text)
        elif hasattr(clone, "add_note"):  # Python 3.11: the task's own `raise ... from` cause stays
            clone.add_note(f"hetflow: the task's traceback:\n{text}")
    return clone


def _with_frames(clone: BaseException, exception: BaseException, chain: _Chain) -> None:
    """Gives ``clone`` (of a failed task's ``exception``) copies of the exceptions of its chain
    (``__cause__``, ``__context__``), each with the traceback it had in the task; the engine's
    own where one cannot be copied. Iterative: a chain may be long."""
    made: Dict[int, BaseException] = {id(exception): clone}
    linked = [(exception, clone)]
    pending: List[Optional[BaseException]] = [exception.__cause__, exception.__context__]
    while pending:
        current = pending.pop()
        if current is None or id(current) in made:
            continue
        entry = chain.get(id(current))
        if entry is None or entry[0] is not current:
            continue
        copied = _copied(current)
        if copied is None:
            continue
        copied.__traceback__ = entry[1]
        made[id(current)] = copied
        linked.append((current, copied))
        pending.extend((current.__cause__, current.__context__))
    for original, copied in linked:
        copied.__cause__ = made.get(id(original.__cause__), original.__cause__)
        copied.__context__ = made.get(id(original.__context__), original.__context__)
        copied.__suppress_context__ = original.__suppress_context__  # setting __cause__ set it


def same_exception(copy_: BaseException, original: BaseException) -> bool:
    """Whether a copy (or an unpickled exception) says what the original said: same type, args
    and text. A type whose ``__init__`` does not take its args back fails this."""
    return type(copy_) is type(original) and copy_.args == original.args and str(copy_) == str(original)


def _copied(exception: BaseException) -> Optional[BaseException]:
    """A shallow copy of ``exception``; for a type whose ``__init__`` cannot be called again with
    its ``args`` (extra required parameters, or parameters that are not its args, so that the copy
    would say something else), made without it. None if neither works."""
    kind = type(exception)
    try:
        clone = copy.copy(exception)
        if same_exception(clone, exception):
            return clone
    except Exception:
        pass
    try:
        clone = kind.__new__(kind, *exception.args)
        clone.args = exception.args
        if hasattr(exception, "__dict__"):
            clone.__dict__.update(exception.__dict__)
        return clone
    except Exception:
        return None


def task_exception(exception: BaseException) -> BaseException:
    """What a task's raised exception is delivered as: itself, except that a ``StopIteration``
    (or a subclass) becomes ``RuntimeError("task raised StopIteration")`` with it as the cause,
    as PEP 479 does for generators and asyncio for coroutines. asyncio cannot hold a
    StopIteration (``asyncio.wrap_future``, and so ``await fut``, waited for ever), and one
    raised from ``result()`` inside a generator would end the generator silently."""
    if isinstance(exception, StopIteration):
        error = RuntimeError("task raised StopIteration")
        error.__cause__ = exception
        return error
    return exception


def returned_coroutine(func: Any, coroutine: Any) -> TypeError:
    """The error of a task whose body returned a coroutine (an ``async def __call__``, a lambda or
    ``functools.partial`` over an async function): refused as an ``async def`` function is, since
    no task awaits it. The coroutine is closed, so it does not warn that it was never awaited."""
    try:
        coroutine.close()
    except BaseException:
        pass
    what = getattr(func, "__qualname__", None) or getattr(type(func), "__qualname__", None) or repr(func)
    return TypeError(
        f"hetflow: the task {what!r} returned a coroutine, which no task awaits (an async __call__, or a lambda "
        "or functools.partial over an async function?): submit a plain function that runs it (asyncio.run), "
        "or await it in your event loop"
    )


# Frames of hetflow's own calling a thread task's function, left out of the task's traceback.
HIDDEN_FRAMES: set = set()


def exception_from_outcome(outcome: tuple) -> BaseException:
    """Builds the exception a failed task's ``outcome()`` tuple describes (a StopIteration turned
    into a RuntimeError, see ``task_exception``), with a thread task's frames while the store
    keeps them (a dependent's DependencyError shows them too)."""
    kind = outcome[0]
    if kind == "python_error":
        return task_exception(_detached(outcome[1]))
    if kind == "remote_error":
        from hetflow._serialize import unpack_error

        return task_exception(unpack_error([bytes(part) for part in outcome[1]]))
    if kind == "dependency_error":
        return DependencyError(outcome[1], exception_from_outcome(outcome[2]))
    if kind == "cancelled":
        return CancelledError(outcome[1])
    if kind == "crashed":
        return WorkerCrashedError(outcome[1])
    if kind == "elsewhere":
        return ElsewhereError(outcome[2], outcome[1])
    return HetflowError(outcome[2])
