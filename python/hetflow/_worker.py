"""A process worker: ``python -m hetflow._worker READ_FD WRITE_FD``.

Started and driven by the host's process driver over two pipes (see ``_protocol``). It sends
READY, then runs one RUN message at a time and answers each with RESULT or ERROR, until
SHUTDOWN or end of file (exit status 0). Ctrl-C is ignored: the host handles it. A task's
prints are flushed before its reply. ``HETFLOW_SYS_PATH`` (``_protocol.worker_environment()``),
when set, goes first on ``sys.path``, so modules import here as they do in the host.

Inside a task::

    >>> from hetflow import _worker
    >>> _worker.worker_id()        # HETFLOW_WORKER_ID set by the host, or None
    2
"""
from __future__ import annotations

import gc
import importlib.abc
import importlib.util
import io
import os
import pickle
import signal
import struct
import sys
import threading
import time
import traceback
import weakref
from types import CoroutineType, TracebackType
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

from . import _kernel, _main_globals
from . import _protocol as P
from ._errors import end_forked_child, flush_stdio, returned_coroutine, same_exception
from ._serialize import ExceptionAsItIs, Placeholder, dumps_result, loaded_numpy, type_name

EXIT_GRACE_S = 5.0  # at exit, threads a task left running get this long before os._exit
HOST_PID_VARIABLE = "HETFLOW_HOST_PID"  # set by the host's process driver
PR_SET_PDEATHSIG = 1  # prctl option, from <linux/prctl.h>
SWEEP_PERIOD_MS = 1000  # how often an idle worker lets go of shared arrays the host freed


# Before 3.11 (no -P), the command runs the worker after dropping the working directory that
# ``-c`` put first on sys.path.
_BOOTSTRAP = (
    "import sys; del sys.path[0]; import runpy; "
    "runpy.run_module('hetflow._worker', run_name='__main__', alter_sys=True)"
)


# Flags of the host's interpreter that a worker does not take: they change where modules are
# found, and a worker must find hetflow as it always does (it then puts the host's sys.path first).
_LOOKUP_FLAGS = frozenset({"-I", "-E", "-s", "-S", "-P"})


def _interpreter_flags() -> List[str]:
    """The host's ``-O``, ``-W``, ``-X dev``, ``-b``... as ``multiprocessing`` passes them to the
    interpreters it starts, so that tasks run as they would in the host (asserts, warnings)."""
    import subprocess

    flags = getattr(subprocess, "_args_from_interpreter_flags", None)
    try:
        return [flag for flag in (flags() if flags is not None else []) if flag not in _LOOKUP_FLAGS]
    except Exception:
        return []


def command(python: str = sys.executable) -> List[str]:
    """The command that starts a worker (the host appends its two descriptors).

    The working directory is not searched for modules, as ``python -m`` would search it first:
    a stray ``traceback.py`` or ``json.py`` there would run in every worker. Modules the host
    imports still import here (``HETFLOW_SYS_PATH``). The host's interpreter flags (``-O``,
    ``-W error``, ``-X dev``...) apply here too.
    """
    if sys.version_info >= (3, 11):
        return [python, *_interpreter_flags(), "-P", "-m", "hetflow._worker"]
    return [python, *_interpreter_flags(), "-c", _BOOTSTRAP]


def worker_id() -> Optional[int]:
    """This worker's index as the host numbered it (``HETFLOW_WORKER_ID``), None if unset."""
    return _kernel.worker_index


def _adopt_host_sys_path() -> None:
    host = [p for p in os.environ.pop(P.SYS_PATH_VARIABLE, "").split(os.pathsep) if p]
    if host:
        sys.path[:] = host + [p for p in sys.path if p not in host]


def _adopt_host_authkey() -> None:
    authkey = os.environ.pop(P.AUTHKEY_VARIABLE, None)
    if authkey:
        from multiprocessing.process import current_process

        current_process().authkey = bytes.fromhex(authkey)


def _run_initializer() -> Optional[BaseException]:
    """Runs hetflow.init's initializer; what it raised, if it did, for every task to report.

    An Exception is reported as it is. SystemExit, KeyboardInterrupt and the like are reported
    inside a RuntimeError (the original as its cause): re-raised as they are by a task's
    result(), they would end the host program, or unwind it as if Ctrl-C had been pressed.
    A process the initializer forked ends when the initializer returns there or raises.
    """
    pickled = os.environ.pop(P.INITIALIZER_VARIABLE, None)
    if not pickled:
        return None
    pid = os.getpid()
    try:
        initializer, initargs = pickle.loads(bytes.fromhex(pickled))
        _main_globals.note_initializer(initializer)
        initializer(*initargs)
    except BaseException as exc:
        if os.getpid() != pid:
            _end_forked_child(exc)
        if isinstance(exc, Exception):
            return exc
        try:
            what = repr(exc)
        except BaseException:
            what = type(exc).__name__
        error = RuntimeError(
            f"hetflow: the initializer given to hetflow.init raised {what} in this worker process, "
            "so it runs no tasks"
        )
        exc.__traceback__ = _task_frames(exc.__traceback__)  # the initializer's frames only
        error.__cause__ = exc
        return error
    finally:
        flush_stdio()
    if os.getpid() != pid:
        _end_forked_child(None)
    return None


class _JoblibWatcher(importlib.abc.MetaPathFinder):
    """Registers hetflow's joblib backend when a task first imports joblib, so that it may ask
    for ``backend="hetflow"`` as the host does (without importing joblib in every worker)."""

    def __init__(self) -> None:
        self.looking = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "joblib" or self.looking:
            return None
        self.looking = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.looking = False
        loader = getattr(spec, "loader", None) if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            from hetflow import joblib as hetflow_joblib

            hetflow_joblib.register()

        loader.exec_module = exec_module  # this import's loader only
        return spec


def _end_forked_child(exc: Optional[BaseException]) -> NoReturn:
    """end_forked_child, its traceback without the worker's own frames."""
    end_forked_child(exc, _task_frames)


def _line_buffered_stdio() -> None:
    """Each line a task prints reaches the shared stdout in one write, so the lines of workers
    printing at once do not interleave (an inherited PYTHONUNBUFFERED would write a line's text
    and its newline separately), and still as soon as the line is complete."""
    for stream in (sys.stdout, sys.stderr):
        try:
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(line_buffering=True, write_through=False)
        except ValueError:
            pass  # not a TextIOWrapper: leave it


def _stdin_from_devnull() -> None:
    """A task reads an empty stdin (``input()`` raises EOFError), as in ``multiprocessing``'s
    processes. The host's stdin is its program's: a task that read it took (and buffered) what
    the host was to read, such as the rest of a script fed to ``python -i``, and from a terminal
    a worker, in a process group of its own, would be stopped (SIGTTIN) at its first read."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return
    if fd != 0:
        os.dup2(fd, 0)  # the programs a task starts inherit it too
        os.close(fd)
    else:
        os.set_inheritable(0, True)  # stdin was closed: os.open made it non-inheritable
    if sys.stdin is None:  # stdin was closed as the worker started
        sys.stdin = open(0, closefd=False)


def _pickle_exception(exc: BaseException) -> bytes:
    """The exception's pickle if it unpickles as it was, else, if it pickles at all, one that does
    without calling its ``__init__`` again (whose parameters may not be its args), else b"" (the
    host then rebuilds it from its type name and text). Whatever its __reduce__, __init__ or
    __str__ raise, KeyboardInterrupt and SystemExit included, ends here: it must not end the
    worker."""
    try:
        data = dumps_result(exc)
    except BaseException:
        return b""  # its type refuses to be pickled
    try:
        if same_exception(pickle.loads(data), exc):
            return data
    except BaseException:
        pass
    try:
        data = dumps_result(ExceptionAsItIs(exc))
        pickle.loads(data)
        return data
    except BaseException:
        return b""


def _with_its_source_file(func: Any) -> Any:
    """``func``, its code naming the file it was written in again, and that of the functions it
    calls by name. Functions of the host's main script travel by value, and cloudpickle names
    their code's file ``<dynamic-code>``: their tracebacks would show neither the script nor its
    lines."""
    pending: List[Any] = [func]
    seen: Set[int] = set()
    while pending and len(seen) < 1000:
        current = pending.pop()
        # A bound method (a classmethod, say, whose function cloudpickle sends by value even from
        # an importable module) has its function's code, which only the function can replace.
        current = getattr(current, "__func__", current)
        code = getattr(current, "__code__", None)
        globals_ = getattr(current, "__globals__", None)
        if id(current) in seen or code is None or not isinstance(globals_, dict):
            continue
        seen.add(id(current))
        source = globals_.get("__file__")
        if code.co_filename != "<dynamic-code>" or not isinstance(source, str):
            continue
        try:
            current.__code__ = _renamed(code, source)
        except (AttributeError, TypeError, ValueError):
            continue  # a callable whose code cannot be replaced keeps it
        pending.extend(value for value in globals_.values() if hasattr(value, "__code__"))
    return func


def _renamed(code: Any, source: str) -> Any:
    consts = tuple(_renamed(c, source) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=source, co_consts=consts)


def _task_frames(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """``tb`` without its leading frames of this module (the worker's own) and the one that runs
    an offload kernel."""
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__ or tb.tb_frame.f_code is _kernel.run_kernel.__code__
    ):
        tb = tb.tb_next
    return tb


def _error_parts(task_id: bytes, exc: BaseException, context: str = "") -> List[bytes]:
    """The parts of an ERROR message for ``exc``, its traceback without the worker's frames.

    Each step has a fallback, and each step catches BaseException: the exception is the task's
    own object, and its __str__, __reduce__ or __repr__ may raise anything (KeyboardInterrupt,
    SystemExit), which must fail the task, not end the worker.
    """
    cls = type(exc)
    try:
        class_name = type_name(cls)
    except BaseException:
        class_name = getattr(cls, "__name__", "Exception")
    try:
        message = str(exc)
    except BaseException:
        message = f"<unprintable {cls.__name__} object>"
    try:
        text = context + "".join(traceback.format_exception(cls, exc, _task_frames(exc.__traceback__)))
    except BaseException:
        text = f"{context}{class_name}: {message}\n(hetflow: the traceback could not be formatted)\n"
    return [
        task_id,
        _pickle_exception(exc),
        class_name.encode("utf-8", errors="replace"),
        message.encode("utf-8", errors="replace"),
        text.encode("utf-8", errors="replace"),
    ]


class Worker:
    """Serves RUN messages read from ``read_fd``, answering on ``write_fd``."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        # One buffered reader for everything the host sends: a message costs one read, not one
        # per header, length and part.
        self.reader = io.BufferedReader(io.FileIO(read_fd, "rb", closefd=False), buffer_size=1 << 16)
        self.functions: Dict[str, Callable[..., Any]] = {}
        # Functions that failed to load, with what they raised: the host sends a function's
        # bytes once, so later tasks of it must fail with the same error, not a missing key.
        self.failed: Dict[str, Tuple[BaseException, Optional[TracebackType]]] = {}
        self.broken: Optional[BaseException] = None  # what the initializer raised
        # The worker's process: a process a task forks must never read or answer requests.
        self.pid = os.getpid()
        # Index and buffer (weakly) of each of the running task's arrays copied into a scratch segment.
        self.copies: List[Tuple[int, "weakref.ref[Any]"]] = []

    def _leave_if_forked(self, exc: Optional[BaseException] = None) -> None:
        """Ends this process if it is not the worker's but a child a task forked (see
        ``_end_forked_child``); ``exc``: what the task's code raised, if it did."""
        if os.getpid() != self.pid:
            _end_forked_child(exc)

    def serve(self) -> int:
        """Runs until SHUTDOWN or end of file; returns the exit status (0)."""
        _kernel.attach(self.reader, self.write_fd)  # offload kernels talk to their host here
        timers = _TimersOfTasks()
        P.write_message(self.write_fd, P.READY, [str(os.getpid()).encode("ascii")])
        while True:
            self._leave_if_forked()
            message = P.read_message(self.reader)
            if message is None:
                return 0
            kind, parts = message
            del message
            if kind == P.SHUTDOWN:
                return 0
            if kind != P.RUN or len(parts) < P.RUN_DEPS or len(parts[P.RUN_TASK_ID]) != 8:
                raise P.ProtocolError(f"hetflow worker: unexpected message: kind {kind} with {len(parts)} parts")
            started = time.perf_counter()
            reply_kind, reply = self.run(parts)
            timers.end()
            if reply_kind == P.RESULT:  # the host's performance models learn the time spent here
                reply.append(struct.pack("<d", time.perf_counter() - started))
            reply.append(self.kept_copies())
            self.copies = []
            if os.getpid() != self.pid:  # forked where run() does not look (a __reduce__, say)
                _end_forked_child(None if reply_kind == P.RESULT else RuntimeError("the task failed"))
            del parts  # let a task's inputs go before waiting for the next one
            flush_stdio()  # the task's prints reach the host before its result does
            P.write_message(self.write_fd, reply_kind, reply)
            del reply

    def run(self, parts: List[bytearray]) -> Tuple[int, List[bytes]]:
        """Runs the task of a RUN message's parts; returns the reply's kind and parts."""
        task_id = bytes(parts[P.RUN_TASK_ID])
        stage = "loading the task's function"
        try:
            if self.broken is not None:
                stage = "running the initializer given to hetflow.init"
                raise self.broken
            func = self.function(bytes(parts[P.RUN_FUNC_KEY]).decode("utf-8"), parts[P.RUN_FUNC_BYTES])
            stage = "loading the task's arguments"
            args, kwargs = self.arguments(parts[P.RUN_CALL_BYTES], parts[P.RUN_DEPS :])
            back: List[Tuple[Any, Any]] = []
            if len(parts[P.RUN_ARRAYS]):
                stage = "mapping the task's arrays"
                args, kwargs = _with_arrays(args, kwargs, parts[P.RUN_ARRAYS], back, self.copies)
        except BaseException as exc:
            self._leave_if_forked(exc)  # a function or argument whose unpickling forked
            context = f"hetflow: process worker (pid {os.getpid()}) failed {stage}:\n"
            return P.ERROR, _error_parts(task_id, exc, context)
        try:
            _kernel.running_a_task = True
            result = func(*args, **kwargs)
        except BaseException as exc:  # SystemExit too: the task failed, the worker goes on
            self._leave_if_forked(exc)  # a child the task forked raised: it ends with that
            _wait_for_tasks_left_here()
            return P.ERROR, _error_parts(task_id, exc)
        finally:
            _kernel.running_a_task = False
            del args, kwargs
        self._leave_if_forked()  # a child the task forked returned: it ends, status 0
        _wait_for_tasks_left_here()
        if type(result) is CoroutineType:  # no task awaits it: refused, as an async def function is
            return P.ERROR, _error_parts(task_id, returned_coroutine(func, result))
        if back:
            try:
                for copy, view in back:  # overlapping views: into the copies the host copies home
                    copy[...] = view
            except BaseException as exc:
                return P.ERROR, _error_parts(task_id, exc)
            del back
        numpy = loaded_numpy()
        if (
            numpy is not None
            and isinstance(result, numpy.ndarray)
            and not isinstance(result, numpy.memmap)
            and not result.flags.writeable
        ):
            # Its read-only arguments (or views of them), say: pickle would bring it back read-only,
            # where any other process pool gives the caller an array of its own to change.
            result = result.copy()
        try:
            return P.RESULT, [task_id, dumps_result(result)]
        except TypeError as exc:
            exc.__traceback__ = None  # the pickling failed, not the task: no frames to show
            return P.ERROR, _error_parts(task_id, exc)
        except BaseException as exc:  # a __reduce__ that raises KeyboardInterrupt, say
            try:
                what = f"{type(exc).__name__}: {exc}"
            except BaseException:
                what = type(exc).__name__
            error = TypeError(
                f"hetflow: the task's result of type {type_name(type(result))} cannot be pickled: {what}"
            )
            return P.ERROR, _error_parts(task_id, error)

    def kept_copies(self) -> bytes:
        """The indices of the task's arrays copied into scratch segments that something still
        refers to now that the task is over (a cache in the worker, a view of them): the host
        copies later tasks' arrays elsewhere, so that they keep their values."""
        if any(buffer() is not None for _, buffer in self.copies):
            # A reference cycle the task left (a pandas object, an object naming itself) is not a
            # reference it kept: the young generations are collected once before saying so.
            gc.collect(1)
        return " ".join(str(index) for index, buffer in self.copies if buffer() is not None).encode("ascii")

    def function(self, key: str, data: Any) -> Callable[..., Any]:
        """The function cached under ``key``, loaded from ``data`` (cloudpickle) the first time.

        A function that fails to load raises the same error for every task of it (the host
        sends its bytes only once)."""
        func = self.functions.get(key)
        if func is None:
            failed = self.failed.get(key)
            if failed is not None:
                raise failed[0].with_traceback(failed[1])
            if not len(data):
                raise RuntimeError(
                    f"hetflow: process worker (pid {os.getpid()}) has no function under key {key!r} "
                    "and the RUN message carried none (the host must send it the first time)"
                )
            try:
                func = pickle.loads(data)
            except BaseException as exc:
                if isinstance(exc, Exception):  # not KeyboardInterrupt and the like: may pass
                    self.failed[key] = (exc, exc.__traceback__)
                raise
            self.functions[key] = _with_its_source_file(_main_globals.seeing_initializer_globals(func))
        return self.functions[key]

    @staticmethod
    def arguments(call: Any, deps: Sequence[Any]) -> Tuple[tuple, Dict[str, Any]]:
        """``(args, kwargs)`` from the call pickle, each ``Placeholder(i)`` replaced by dep i,
        wherever the pickle rebuilds it (inside sets, dict keys, objects' state...)."""
        if not deps:
            return pickle.loads(call)
        return _ResolvingUnpickler(io.BytesIO(call), deps).load()


_PLACEHOLDER_NAME = (Placeholder.__module__, Placeholder.__qualname__)


class _ResolvingUnpickler(pickle.Unpickler):
    """Rebuilds each ``Placeholder(i)`` of a call pickle as the value of dependency ``i``.

    A Placeholder pickles as a call of its class (``__reduce__``); loading that class here gives
    a function that returns the value instead, so a future is resolved wherever pickle rebuilds
    it, at no cost for the rest of the pickle (``find_class`` runs once per class it names).
    """

    def __init__(self, file: Any, deps: Sequence[Any]) -> None:
        super().__init__(file)
        self.deps = deps
        self.values: Dict[int, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _PLACEHOLDER_NAME:
            return self.value
        return super().find_class(module, name)

    def value(self, index: int) -> Any:
        values = self.values
        if index not in values:
            deps = self.deps
            if type(index) is not int or not 0 <= index < len(deps):
                raise IndexError(f"hetflow: Placeholder({index}) but the task has {len(deps)} dependencies")
            values[index] = pickle.loads(deps[index])
        return values[index]


def _wait_for_tasks_left_here() -> None:
    """Waits for the tasks a task submitted in this worker and left running: they may use its
    arrays, whose copies are reused for the next task's once it is done."""
    runtime_module = sys.modules.get("hetflow._runtime")
    runtime = getattr(runtime_module, "_current", None)
    if (
        runtime is not None
        and not runtime._closed
        and runtime._generation == runtime_module._fork_generation  # type: ignore[union-attr]
        and runtime._engine.outstanding() > 0
    ):
        runtime.wait_all()


def _with_arrays(
    args: tuple,
    kwargs: Dict[str, Any],
    table: Any,
    back: Optional[List[Tuple[Any, Any]]] = None,
    copies: Optional[List[Tuple[int, "weakref.ref[Any]"]]] = None,
) -> Tuple[tuple, Dict[str, Any]]:
    """The call with each ArrayRef (the host puts them at top level) replaced by its array.

    Overlapping copied views of one task, one of them written, are put over one buffer (see
    ``alias_overlapping``); ``back`` gets the ``(copy, view)`` pairs to copy once the task returns;
    ``copies`` the index and a weak reference to the buffer of each array copied into a scratch
    segment (the base of the array and of every view of it).
    """
    from hetflow._arrays import ArrayRef, alias_overlapping, materialize

    refs = sorted(
        (v for v in (*args, *kwargs.values()) if type(v) is ArrayRef), key=lambda ref: ref.index
    )
    unique = list({ref.index: ref for ref in refs}.values())
    copied: List[bool] = []
    arrays = materialize(table, unique, copied)
    if copies is not None:
        copies.extend((ref.index, weakref.ref(array.base)) for ref, array, copy in zip(unique, arrays, copied) if copy)
    if any(ref.together is not None for ref in unique):
        pairs = alias_overlapping(unique, arrays, copied)
        if back is not None:
            back.extend(pairs)
    for ref, array in zip(unique, arrays):
        if ref.read_only:  # what a task reads only, it cannot write, as in a thread task
            array.flags.writeable = False
    by_index = {ref.index: array for ref, array in zip(unique, arrays)}
    dtypes = {ref.index: ref.dtype for ref in unique}

    def swap(value: Any) -> Any:
        if type(value) is not ArrayRef:
            return value
        array = by_index[value.index]
        if value.dtype != dtypes[value.index]:
            # One view (same bytes, shape, strides, item size) passed under another dtype too:
            # each argument keeps its own dtype, over the same memory.
            import numpy

            return array.view(numpy.dtype(value.dtype))
        return array

    return tuple(swap(v) for v in args), {k: swap(v) for k, v in kwargs.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: ``main(["READ_FD", "WRITE_FD"])``; returns the exit status."""
    # A handler that does nothing rather than SIG_IGN: an ignored signal stays ignored across
    # exec, so every program a task started (subprocess) ignored SIGINT, and a task that stops
    # its program with SIGINT (as one stops a server or a recorder) waited for it for ever. A
    # handler goes back to the default in the program.
    signal.signal(signal.SIGINT, P.swallow_sigint)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 2 or not all(a.isdigit() for a in argv):
        print("usage: python -m hetflow._worker READ_FD WRITE_FD", file=sys.stderr)
        return 2
    _die_with_host()
    read_fd, write_fd = int(argv[0]), int(argv[1])
    for fd in (read_fd, write_fd):
        os.set_inheritable(fd, False)  # a task's own subprocesses must not hold our pipes open
    _watch_host_pipe(read_fd)
    if "joblib" not in sys.modules:
        sys.meta_path.insert(0, _JoblibWatcher())
    _forget_pipes_after_fork(read_fd, write_fd)
    # The host's variables are taken out of the environment: a program a task starts is not a worker.
    _kernel.adopt_worker_environment()
    _adopt_host_sys_path()
    _adopt_host_authkey()
    _line_buffered_stdio()
    _stdin_from_devnull()
    try:
        worker = Worker(read_fd, write_fd)
        worker.broken = _run_initializer()
        return worker.serve()
    except BrokenPipeError:  # the host is gone: nobody to answer
        return 0
    except P.ProtocolError as exc:
        print(f"hetflow worker (pid {os.getpid()}): {exc}", file=sys.stderr)
        return 2


class _TimersOfTasks:
    """A task's timers end with it: an alarm it left (a timeout with ``signal.alarm`` it did not
    cancel) fired between tasks, where its handler raised in the worker's own reading of the next
    request (the worker died, failing a task that never ran), or in a later task; one left
    without a handler ended the process. After each task, the interval timers are stopped and
    the timer signals' handlers are those the worker had when it began (its initializer's). A
    timer already running then (a profiler the initializer started) is the worker's: left alone."""

    SIGNALS = ((signal.ITIMER_REAL, signal.SIGALRM), (signal.ITIMER_VIRTUAL, signal.SIGVTALRM), (signal.ITIMER_PROF, signal.SIGPROF))

    # signal.getsignal converts each handler to an enum, costing more than the checks themselves
    getsignal = getattr(signal, "_signal", signal).getsignal

    def __init__(self) -> None:
        self.handlers = [self.getsignal(signum) for _, signum in self.SIGNALS]
        self.tasks_timers = [signal.getitimer(timer) == (0.0, 0.0) for timer, _ in self.SIGNALS]

    def end(self) -> None:
        for (timer, signum), handler, tasks in zip(self.SIGNALS, self.handlers, self.tasks_timers):
            if not tasks:
                continue
            if signal.getitimer(timer) != (0.0, 0.0):  # reading is cheaper than stopping
                signal.setitimer(timer, 0)
            if self.getsignal(signum) is not handler:
                signal.signal(signum, handler)


def _forget_pipes_after_fork(read_fd: int, write_fd: int) -> None:
    """A process a task forks does not keep the worker's pipes: it must not speak to the host
    (offload kernels' calls there fail instead of taking the worker's requests), and a child
    that outlives the worker must not hide the worker's end from the host."""

    def in_child() -> None:
        kernel = sys.modules.get("hetflow._kernel")
        if kernel is not None:
            kernel._fds = None  # type: ignore[attr-defined]
        for fd in (read_fd, write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    os.register_at_fork(after_in_child=in_child)


def _die_with_host() -> None:
    """Ends this process when the host does (killed, crashed), even in the middle of a task.

    The kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG); if the host died before
    that was set, this process is an orphan already and exits now. A thread also watches the
    host's end of the request pipe: when it closes (the host died, or exec'd another program)
    a task still running gets EXIT_GRACE_S to end before the process exits.
    """
    host_text = os.environ.pop(HOST_PID_VARIABLE, "")
    host = int(host_text) if host_text.isdigit() else None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the pipe watcher below still ends an orphan
    if host is not None and os.getppid() != host and not _alive(host):
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _arrays_loaded() -> bool:
    return "hetflow._arrays" in sys.modules


def _watch_host_pipe(read_fd: int) -> None:
    """Starts a daemon thread that ends the process once the host's end of ``read_fd`` closes."""
    import select

    if not hasattr(select, "poll"):
        return
    parent = os.getppid()

    def watch() -> None:
        poller = select.poll()
        poller.register(read_fd, 0)  # hang-up and errors only: requests are the main thread's
        try:
            while not poller.poll(SWEEP_PERIOD_MS):
                if _arrays_loaded():
                    from hetflow._arrays import forget_freed_segments

                    forget_freed_segments()
        except OSError:
            return
        if os.getppid() != parent:  # the host is gone: nobody reads what this process does
            os._exit(1)
        # The host closed the pipe on purpose (shutdown): the main thread reads the end of the
        # requests and exits; a task that does not end in time must not keep the process alive.
        time.sleep(EXIT_GRACE_S)
        flush_stdio()
        os._exit(0)

    threading.Thread(target=watch, name="hetflow-host-watch", daemon=True).start()


def _exit(status: int) -> None:
    flush_stdio()
    # A non-daemon thread left running by a task would stall the interpreter's exit forever.
    watchdog = threading.Timer(EXIT_GRACE_S, os._exit, (status,))
    watchdog.daemon = True
    watchdog.start()
    sys.exit(status)


if __name__ == "__main__":
    _exit(main())
