"""ePython-style offload: run a function once on each of many cores.

A *core* is a process worker of the runtime (its own interpreter); ``numcores()`` tells how
many, and ``hetflow.init(ncpus=16)`` gives 16 on any machine.

>>> from hetflow import offload
>>> @offload
... def helloworld(a, b):
...     print("Hello World")
...     return a + b
>>> helloworld(10, 20)            # one value per core, by core id
[30, 30, 30, ...]
>>> h = helloworld(10, 20, target=[9, 10], asynchronous=True)
>>> h.wait()
[30, 30]
"""
from __future__ import annotations

import concurrent.futures
import itertools
import numbers
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from hetflow import _kernel, _runtime
from hetflow._future import Future

Target = Union[int, Sequence[int], None]
_LAUNCH_OPTIONS = ("asynchronous", "async", "auto", "target")
_launch_ids = itertools.count(1)
# Held while a launch gets its id and sends its kernels to its cores, so that launches reach
# every core in the same order: were launch A first on one core and launch B first on another,
# kernels of A and B waiting in barrier() (or recv) would wait on each other for ever.
_launch_lock = threading.Lock()


def numcores() -> int:
    """The number of cores (process workers); inside a kernel, of the runtime that launched it."""
    import os

    inside = os.environ.get("HETFLOW_NUM_CORES")
    if inside is not None and os.environ.get("HETFLOW_WORKER_ID") is not None:
        return int(inside)
    return _runtime.current().nprocs


def coreid() -> int:
    """The id of the core running the calling kernel."""
    return _kernel.coreid()


class OffloadHandle:
    """The kernels of an asynchronous launch, one per core.

    ``wait()`` returns their values ordered by core id; ``wait_any()`` returns ``(core, value)``
    of a finished kernel and forgets it; ``test()`` is true once at least one has finished and
    ``done()`` once all have. A kernel's exception is re-raised with the core id attached.
    """

    def __init__(self, futures: Dict[int, Future]) -> None:
        self._futures = dict(sorted(futures.items()))

    @property
    def cores(self) -> List[int]:
        return list(self._futures)

    def wait(self) -> List[Any]:
        for future in self._futures.values():
            future._wait(None)  # a wait that can never end (behind an acquisition held here) raises
        # A kernel that failed fails the peers waiting for it (PeerFailed): its own error is the
        # one to raise, whichever core it ran on.
        failed = [
            (core, future)
            for core, future in self._futures.items()
            if not future.cancelled() and future.exception() is not None
        ]
        causes = [(core, future) for core, future in failed if not isinstance(future.exception(), _kernel.PeerFailed)]
        for core, future in causes or failed:
            _value(core, future)
        return [_value(core, future) for core, future in self._futures.items()]

    def wait_any(self) -> Tuple[int, Any]:
        if not self._futures:
            raise RuntimeError("hetflow: wait_any() on a handle whose kernels were all collected")
        by_future: Dict[concurrent.futures.Future, int] = {future: core for core, future in self._futures.items()}
        done, _ = concurrent.futures.wait(by_future, return_when=concurrent.futures.FIRST_COMPLETED)
        core = min(by_future[future] for future in done)
        future = self._futures.pop(core)
        return core, _value(core, future)

    def test(self) -> bool:
        return any(future.done() for future in self._futures.values())

    def done(self) -> bool:
        return all(future.done() for future in self._futures.values())

    def __repr__(self) -> str:
        return f"<hetflow.OffloadHandle cores={self.cores} done={self.done()}>"


def _value(core: int, future: Future) -> Any:
    error = None if future.cancelled() else future.exception()  # a Ctrl-C meanwhile is not the kernel's
    if error is None:
        return future.result()
    error.core = core  # type: ignore[attr-defined]
    if hasattr(error, "add_note"):
        error.add_note(f"raised by the kernel on core {core}")
    raise error


def _cores(runtime: Any, auto: Optional[int], target: Target) -> List[int]:
    count = runtime.nprocs
    if count == 0:
        raise ValueError("hetflow.offload: the runtime has no cores (nprocs=0)")
    if auto is not None and target is not None:
        raise ValueError("hetflow.offload: give auto or target, not both")
    if target is not None:
        cores = _target_cores(target)
        if not cores:
            raise ValueError("hetflow.offload: target names no core")
        for core in cores:
            if not isinstance(core, int) or not 0 <= core < count:
                raise ValueError(f"hetflow.offload: core {core!r} does not exist; cores are 0 to {count - 1}")
        if len(set(cores)) != len(cores):
            raise ValueError(f"hetflow.offload: target {cores} names a core twice")
        return sorted(cores)
    if auto is not None:
        if not isinstance(auto, numbers.Integral) or isinstance(auto, bool) or auto < 1:
            raise ValueError(f"hetflow.offload: auto must be a positive number of cores, not {auto!r}")
        auto = int(auto)
        if auto > count:
            raise ValueError(f"hetflow.offload: auto={auto} but there are only {count} cores")
        loads = [(runtime.core_load(core), core) for core in range(count)]
        return sorted(core for _, core in sorted(loads)[:auto])
    return list(range(count))


def launch(func: Callable[..., Any], args: tuple, kwargs: dict, cores: Iterable[int]) -> OffloadHandle:
    """Runs ``func(*args, **kwargs)`` once on each of ``cores``; kernels on busy cores queue."""
    from hetflow._arrays import Access

    for value in (*args, *kwargs.values()):
        if isinstance(value, Access):
            raise TypeError(
                f"hetflow: {getattr(func, '__name__', 'kernel')}: a kernel takes its arguments as values (each core "
                f"gets its own copy); hetflow.{value.mode}(...) marks are for tasks. Return what a kernel computes, "
                "or keep it on the cores with define_on_device / copy_from_device"
            )
    runtime = _runtime.current()
    cores = tuple(cores)
    name = getattr(func, "__name__", "kernel")
    args, kwargs = _after_writers(runtime, args, kwargs, name)
    # Submitting only queues the kernels (it never waits for a core), so the lock is held briefly
    # and asynchronous launches still return at once.
    with _launch_lock:
        launch_id = next(_launch_ids)
        runtime.open_launch(launch_id, len(cores))
        futures = {
            core: runtime.submit_to_core(
                core, _kernel.run_kernel, (launch_id, cores, func, args, kwargs), name, launch_id
            )
            for core in cores
        }
    return OffloadHandle(futures)


def _after_writers(runtime: Any, args: tuple, kwargs: dict, name: str) -> Tuple[tuple, dict]:
    """``args`` and ``kwargs`` with each numpy array among them (at top level, as for a task)
    replaced by a Future of its copy, made by a task that reads it: the kernels, which wait for
    the futures among their arguments, get the array as it is once the tasks submitted before
    that write it have ended, and tasks submitted later that write it wait for the copy.
    Submitting only queues the copy, so an asynchronous launch still returns at once."""
    from hetflow._serialize import is_array

    copies: Dict[int, Future] = {}

    def take(value: Any) -> Any:
        if not is_array(value):
            return value
        future = copies.get(id(value))
        if future is None:
            future = copies[id(value)] = runtime.submit(
                _copy, (value,), {}, executor="thread", name=f"{name}: argument copy"
            )
        return future

    if not any(is_array(value) for value in (*args, *kwargs.values())):
        return args, kwargs
    return tuple(take(value) for value in args), {key: take(value) for key, value in kwargs.items()}


def _copy(array: Any) -> Any:
    # Kept as it is now: the cores get it later, when later tasks may have written the array.
    return array.copy(order="K")


class OffloadedFunction:
    """A function whose calls run on many cores; made by ``@offload``."""

    def __init__(self, func: Callable[..., Any], asynchronous: bool, auto: Optional[int], target: Target) -> None:
        if not callable(func):
            raise TypeError(f"hetflow.offload: {func!r} is not callable")
        self.func = func
        self.asynchronous = asynchronous
        self.auto = auto
        self.target = target
        self.__name__ = getattr(func, "__name__", "kernel")
        self.__doc__ = getattr(func, "__doc__", None)
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        asynchronous = kwargs.pop("asynchronous", kwargs.pop("async", self.asynchronous))
        auto = kwargs.pop("auto", None)
        target = kwargs.pop("target", None)
        if auto is None and target is None:
            auto, target = self.auto, self.target
        handle = launch(self.func, args, kwargs, _cores(_runtime.current(), auto, target))
        return handle if asynchronous else handle.wait()


def _target_cores(target: Any) -> List[int]:
    """The cores ``target`` names: one core id (an int), or a list (tuple, range) of them."""
    if isinstance(target, int) and not isinstance(target, bool):
        return [target]
    if not isinstance(target, (list, tuple, range, set, frozenset)):
        raise TypeError(
            f"hetflow.offload: target must be a core id (an int) or a list of core ids, not "
            f"{type(target).__name__} {target!r}"
        )
    cores = list(target)
    for core in cores:
        if not isinstance(core, int) or isinstance(core, bool):
            raise TypeError(
                f"hetflow.offload: target names {core!r} ({type(core).__name__}); core ids are ints"
            )
    return cores


def _options(options: Dict[str, Any], where: str) -> Tuple[bool, Optional[int], Target]:
    unknown = set(options) - set(_LAUNCH_OPTIONS)
    if unknown:
        raise TypeError(
            f"{where}: unknown keyword {', '.join(sorted(unknown))}; use asynchronous (or async), auto or target"
        )
    asynchronous = options.get("asynchronous", options.get("async", False))
    if options.get("target") is not None:
        _target_cores(options["target"])  # a wrong type fails where it is written
    return bool(asynchronous), options.get("auto"), options.get("target")


def offload(func: Optional[Callable[..., Any]] = None, **options: Any) -> Any:
    """Runs the decorated function on every core (or ``auto=N`` idle ones, or ``target=[...]``);
    ``asynchronous=True`` (or ``**{"async": True}``) returns an OffloadHandle instead of the list.
    The same keywords given to a call override the decorator's for that call."""
    asynchronous, auto, target = _options(options, "hetflow.offload")
    if func is not None:
        return OffloadedFunction(func, asynchronous, auto, target)
    return lambda f: OffloadedFunction(f, asynchronous, auto, target)


def offload_multiple(func: Optional[Callable[..., Any]] = None, *, cores: int = 1) -> Any:
    """Asynchronous launch on ``cores`` idle cores: ``@offload_multiple(cores=8)``."""
    if func is not None:
        return OffloadedFunction(func, True, cores, None)
    return lambda f: OffloadedFunction(f, True, cores, None)


def offload_single(func: Optional[Callable[..., Any]] = None) -> Any:
    """Asynchronous launch on one idle core: ``@offload_single``."""
    if func is not None:
        return OffloadedFunction(func, True, 1, None)
    return lambda f: OffloadedFunction(f, True, 1, None)


def wait_all(*handles: OffloadHandle) -> List[List[Any]]:
    """The values of each handle's kernels (see OffloadHandle.wait), in the order given."""
    for handle in handles:
        if not isinstance(handle, OffloadHandle):
            raise TypeError(
                f"hetflow.wait_all takes the handles of asynchronous offloads (OffloadHandle), not {type(handle).__name__}"
            )
    return [handle.wait() for handle in handles]


waitAll = wait_all


# -- device-resident data -------------------------------------------------------------------------
def _on_cores(func: Callable[..., Any], args: tuple, target: Target, asynchronous: bool) -> Any:
    runtime = _runtime.current()
    cores = _cores(runtime, None, target)
    args, _ = _after_writers(runtime, args, {}, func.__name__)
    futures = {core: runtime.submit_to_core(core, func, args, func.__name__) for core in cores}
    handle = OffloadHandle(futures)
    return handle if asynchronous else handle.wait()


def define_on_device(name: str, value: Any) -> None:
    """Gives every core its own copy of ``value``, which kernels use as the global ``name`` and
    which stays on the core between launches (changes made by kernels included)."""
    _check_name(name)
    _on_cores(_kernel.store, (name, value), None, False)


def copy_to_device(name: str, value: Any, target: Target = None, asynchronous: bool = False) -> Any:
    """Sets device variable ``name`` to ``value`` on the target cores (default: all)."""
    _check_name(name)
    result = _on_cores(_kernel.store, (name, value), target, asynchronous)
    return result if asynchronous else None


def copy_from_device(name: str, target: Target = None, asynchronous: bool = False) -> Any:
    """The value of device variable ``name`` on each target core (default: all), by core id."""
    _check_name(name)
    return _on_cores(_kernel.load, (name,), target, asynchronous)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"hetflow: a device variable needs a Python identifier as name, not {name!r}")
