"""What offloaded kernels see inside a worker process ("core"): their core id, the other cores
of their launch, messages among them, and the data that lives on the device.

Every call here talks to the host over the worker's pipes: a request message, and for receive
and barrier, the host's answer.
"""
from __future__ import annotations

import functools
import inspect
import numbers
import operator
import os
import pickle
import sys
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, Union

from hetflow import _protocol as P
from hetflow._serialize import loaded_numpy


def _elementwise(builtin: Callable[[Any, Any], Any], ufunc: str) -> Callable[[Any, Any], Any]:
    """``builtin`` (min or max) for plain values; numpy's element-wise ``ufunc`` (minimum,
    maximum) where a value is a numpy array, as "sum" and "prod" are element-wise there (the
    builtin would ask an array for its truth value and raise)."""

    def combine(a: Any, b: Any) -> Any:
        numpy = loaded_numpy()
        if numpy is not None and (isinstance(a, numpy.ndarray) or isinstance(b, numpy.ndarray)):
            return getattr(numpy, ufunc)(a, b)
        return builtin(a, b)

    combine.__name__ = builtin.__name__
    return combine


OPERATORS: Dict[str, Callable[[Any, Any], Any]] = {
    "sum": operator.add,
    "prod": operator.mul,
    "min": _elementwise(min, "minimum"),
    "max": _elementwise(max, "maximum"),
}

_fds: Optional[Tuple[Any, int]] = None  # (the worker's reader of host messages, the fd to write to)
_launch: Optional[Tuple[int, Tuple[int, ...]]] = None
# Variables defined on this core with define_on_device / copy_to_device.
device_data: Dict[str, Any] = {}
# Whether the worker's main thread runs a task the host sent (hetflow._runtime.inside_a_task).
running_a_task = False
# In a worker process: its index, which of its processes this is (1 for the first, 2 for the one
# that replaced it...) and the host's number of worker processes, from the variables the host set
# (taken out of the environment, so that programs a task starts do not take themselves for workers).
worker_index: Optional[int] = None
worker_start = 1
num_cores: Optional[int] = None


def adopt_worker_environment() -> None:
    """Takes this worker's variables (HETFLOW_WORKER_ID, HETFLOW_WORKER_START, HETFLOW_NUM_CORES)
    out of the environment into ``worker_index``, ``worker_start`` and ``num_cores``."""
    global worker_index, worker_start, num_cores
    worker_index = _popped_int(P.WORKER_ID_VARIABLE)
    worker_start = _popped_int(P.WORKER_START_VARIABLE) or 1
    num_cores = _popped_int(P.NUM_CORES_VARIABLE)


def _popped_int(name: str) -> Optional[int]:
    value = os.environ.pop(name, None)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class PeerFailed(RuntimeError):
    """A message or barrier of a launch that will never come: another kernel failed or ended
    without it, or every kernel still running waits for another (``hetflow.PeerFailed``)."""


def attach(reader: Any, write_fd: int) -> None:
    global _fds
    _fds = (reader, write_fd)


def coreid() -> int:
    """This core's id (0 to numcores() - 1)."""
    if worker_index is None or _fds is None:
        raise RuntimeError("hetflow.coreid(): only inside a kernel running on a core (an @offload function)")
    return worker_index


def launch_cores() -> Tuple[int, ...]:
    """The cores running the current launch, in increasing order."""
    if _launch is None:
        raise RuntimeError("hetflow: core-to-core messages are only possible inside an @offload kernel")
    return _launch[1]


# A kernel's threads may message at once: each message is written whole (a large one takes many
# writes, which another thread's must not split), and a request that waits for the host's answer
# (recv, barrier) is the only one reading the pipe until it has it, so that each thread reads its
# own answer. Sends go on meanwhile (a thread's recv may wait for what another thread sends).
_write_lock = threading.Lock()
_answer_lock = threading.Lock()
# Threads of this kernel in recv or barrier, and the threads that were there before it began.
_messaging: Set[int] = set()
_kernel_thread: Optional[int] = None
_before_kernel: FrozenSet[int] = frozenset()
_POLL_SECONDS = (0.0002, 0.02)  # the first and the longest pause between polls


def _request(kind: int, parts: Sequence[bytes], answer: bool) -> Any:
    launch = _launch
    if _fds is None or launch is None:
        raise RuntimeError("hetflow: core-to-core messages are only possible inside an @offload kernel")
    reader, write_fd = _fds
    message_parts = [str(launch[0]).encode(), *parts]
    if not answer:
        with _write_lock:
            P.write_message(write_fd, kind, message_parts)
        return None
    with _answer_lock:
        with _write_lock:
            P.write_message(write_fd, kind, message_parts)
        message = P.read_message(reader)
    if message is None:
        raise RuntimeError("hetflow: the host closed the connection")
    reply, reply_parts = message
    if reply == P.FAILED:
        raise PeerFailed(bytes(reply_parts[0]).decode("utf-8", "replace"))
    return reply, reply_parts


def _waits_for_its_own_threads(frame: Any) -> bool:
    """Whether a thread whose innermost Python frame is ``frame`` waits, with no timeout, for
    another thread of its process (``Thread.join``, an ``Event``, a ``Condition``, a ``Queue``)."""
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    if frame.f_code.co_name not in ("wait", "join", "_wait_for_tstate_lock"):
        return False
    timeout = frame.f_locals.get("timeout")
    return timeout is None or (isinstance(timeout, (int, float)) and timeout < 0)


def _other_threads() -> str:
    """What the kernel's other threads (its own thread included, when this is another) do:
    "none" (there are none), "waiting" (each waits, with no timeout, for another of them, so
    that none of them can send until this one's request is answered) or "active"."""
    me = threading.get_ident()
    others = [
        thread.ident
        for thread in threading.enumerate()
        if thread.ident not in (me, None) and (thread.ident == _kernel_thread or thread.ident not in _before_kernel)
    ]
    if not others:
        return "none"
    frames = sys._current_frames()
    if all(ident not in _messaging and _waits_for_its_own_threads(frames.get(ident)) for ident in others):
        return "waiting"
    return "active"


def _wait_for_host(kind: int, parts: Sequence[bytes]) -> List[Any]:
    """A recv's or a barrier's answer. A request that waits at the host holds the pipe, and its
    core counts as waiting there (kernels that all wait for each other are told): so it waits
    only where no other thread of the kernel may still send, recv or reach a barrier meanwhile
    (seen so twice, a pause apart, for a thread just woken that has not left its wait yet).
    Otherwise it polls: the host answers at once, and does not count this core as waiting."""
    me = threading.get_ident()
    _messaging.add(me)
    try:
        pause = _POLL_SECONDS[0]
        polled: List[bytes] = []  # after a barrier reached polling: its generation
        before = ""
        while True:
            others = _other_threads()
            wait = others == "none" or others == before == "waiting"
            before = others
            how = [b"wait" if wait else b"poll", *polled] if polled or not wait else []
            reply, reply_parts = _request(kind, [*parts, *how], answer=True)
            if reply != P.NOT_YET:
                return reply_parts
            if kind == P.BARRIER:
                polled = [bytes(reply_parts[0])]
            time.sleep(pause)
            pause = min(pause * 2, _POLL_SECONDS[1])
    finally:
        _messaging.discard(me)


def _check_peer(core: Any, what: str) -> int:
    """``core`` as an int, if it is a core of this launch; a core id is an int (or a numpy
    integer), not a bool, a float or a string."""
    if isinstance(core, bool) or not isinstance(core, numbers.Integral):
        raise TypeError(f"hetflow.{what}: a core id is an int, not {type(core).__name__} {core!r}")
    core = int(core)
    if core not in launch_cores():
        raise ValueError(f"hetflow: core {core} is not running this launch (its cores are {list(launch_cores())})")
    return core


def send(value: Any, core: int) -> None:
    """Sends ``value`` to kernel ``core`` of this launch (does not wait for it to be received)."""
    core = _check_peer(core, "send")
    import cloudpickle

    _request(P.SEND, [str(core).encode(), cloudpickle.dumps(value, protocol=5)], answer=False)


def recv(core: int) -> Any:
    """The next value kernel ``core`` of this launch sent to this one (waits for it)."""
    core = _check_peer(core, "recv")
    parts = _wait_for_host(P.RECEIVE, [str(core).encode()])
    return pickle.loads(parts[0])


def barrier() -> None:
    """Waits until every kernel of this launch has reached the barrier."""
    _wait_for_host(P.BARRIER, [])


def bcast(value: Any, root: int) -> Any:
    """``value`` of core ``root``, on every core of the launch."""
    root = _check_peer(root, "bcast")
    if coreid() == root:
        for core in launch_cores():
            if core != root:
                send(value, core)
        return value
    return recv(root)


def _combine(op: Union[str, Callable[[Any, Any], Any]]) -> Callable[[Any, Any], Any]:
    if callable(op):
        return op
    if op not in OPERATORS:
        raise ValueError(f"hetflow.reduce: unknown operator {op!r}; use sum, min, max, prod or a function")
    return OPERATORS[op]


def reduce(value: Any, op: Union[str, Callable[[Any, Any], Any]] = "sum", root: Optional[int] = None) -> Any:
    """Combines every core's ``value`` with ``op`` (in core order) on ``root`` (default: the
    launch's first core), which gets the result; the other cores get None."""
    combine = _combine(op)
    cores = launch_cores()
    root = _check_peer(cores[0] if root is None else root, "reduce")
    if coreid() != root:
        send(value, root)
        return None
    values = {root: value}
    for core in cores:
        if core != root:
            values[core] = recv(core)
    result = values[cores[0]]
    for core in cores[1:]:
        result = combine(result, values[core])
    return result


def allreduce(value: Any, op: Union[str, Callable[[Any, Any], Any]] = "sum") -> Any:
    """Like reduce, with the result on every core."""
    root = launch_cores()[0]
    return bcast(reduce(value, op, root), root)


# -- entry points the host submits to cores --------------------------------------------------------
def run_kernel(launch: int, cores: Tuple[int, ...], func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Runs one kernel of a launch, with the core's device data visible as globals."""
    global _launch, _kernel_thread, _before_kernel
    _kernel_thread = threading.get_ident()
    _before_kernel = frozenset(thread.ident for thread in threading.enumerate() if thread.ident is not None)
    _launch = (launch, tuple(cores))
    # A kernel of the host's main script travels by value (as an argument, not as a task's
    # function): its code names its file again, so that its traceback shows the script's lines.
    from hetflow._worker import _with_its_source_file

    _with_its_source_file(func)
    _with_its_source_file(_innermost(func))
    namespaces = _namespaces(func)
    given = dict(device_data)
    # What the names held before: put back after the kernel, so that the globals of the kernel's
    # module (an imported one is the module itself) are its own again for the tasks and the
    # functions of that module that run on this core later.
    before = [{name: namespace.get(name, _ABSENT) for name in given} for namespace in namespaces]
    try:
        for namespace in namespaces:
            namespace.update(given)
        return func(*args, **kwargs)
    finally:
        _launch = None
        for name, value in given.items():  # a kernel may rebind device data (``global x; x = ...``)
            for namespace in namespaces:
                if name in namespace and namespace[name] is not value:
                    device_data[name] = namespace[name]
                    break
        for namespace, held in zip(namespaces, before):
            for name, old in held.items():
                if old is _ABSENT:
                    namespace.pop(name, None)
                else:
                    namespace[name] = old


_ABSENT = object()  # a name a namespace did not hold


def _namespaces(func: Any) -> list:
    """The globals the kernel ``func`` reads device data from: its own, and those of the function
    the user wrote where ``func`` only leads there: a decorator's wrapper (``functools.wraps``),
    a ``functools.partial``, a bound method, an object's ``__call__``."""
    found: list = []

    def add(f: Any) -> None:
        namespace = getattr(f, "__globals__", None)
        if isinstance(namespace, dict) and not any(namespace is seen for seen in found):
            found.append(namespace)

    add(func)
    add(_innermost(func))
    return found


def _innermost(func: Any) -> Any:
    """The function the user wrote where the kernel ``func`` only leads there (see _namespaces)."""
    inner = func
    for _ in range(100):  # a partial of a method of a partial...
        if isinstance(inner, functools.partial):
            inner = inner.func
        elif inspect.ismethod(inner):
            inner = inner.__func__
        elif hasattr(inner, "__wrapped__"):
            try:
                inner = inspect.unwrap(inner)
            except ValueError:  # a cycle of __wrapped__
                break
            if not (isinstance(inner, functools.partial) or inspect.ismethod(inner)):
                break
        elif not inspect.isroutine(inner) and not isinstance(inner, type) and callable(inner):
            inner = type(inner).__call__
        else:
            break
    return inner


def store(name: str, value: Any) -> None:
    device_data[name] = value


def load(name: str) -> Any:
    if name not in device_data:
        if worker_start > 1:
            raise NameError(
                f"hetflow: {name!r} is not defined on core {coreid()}: the core's process was replaced after the one "
                "before it died, and what was defined there went with it; define it again (define_on_device, "
                "copy_to_device)"
            )
        raise NameError(f"hetflow: {name!r} is not defined on core {coreid()} (see define_on_device)")
    return device_data[name]
