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

import builtins
import concurrent.futures
import itertools
import keyword
import numbers
import threading
import types
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from hetflow import _kernel, _runtime
from hetflow._errors import SettingTypeError
from hetflow._future import Future
from hetflow._serialize import find_nested, loaded_numpy

Target = Union[int, Sequence[int], None]
_LAUNCH_OPTIONS = ("asynchronous", "async", "auto", "target")
_launch_ids = itertools.count(1)
# Held while a launch gets its id and sends its kernels to its cores, so that launches reach
# every core in the same order: were launch A first on one core and launch B first on another,
# kernels of A and B waiting in barrier() (or recv) would wait on each other for ever.
_launch_lock = threading.Lock()


def numcores() -> int:
    """The number of cores (process workers); inside a kernel, of the runtime that launched it."""
    if _kernel.num_cores is not None and _kernel.worker_index is not None:
        return _kernel.num_cores
    return _runtime.current().nprocs


def coreid() -> int:
    """The id of the core running the calling kernel."""
    return _kernel.coreid()


class OffloadHandle:
    """The kernels of an asynchronous launch, one per core.

    ``wait()`` (or ``await handle``) returns their values ordered by core id; ``wait_any()``
    returns ``(core, value)`` of a finished kernel and forgets it; ``test()`` is true while a
    finished kernel is left for ``wait_any()`` to collect (so false once all are collected), and
    ``done()`` once all have finished. A kernel's exception is re-raised with the core id attached.
    """

    def __init__(self, futures: Dict[int, Future]) -> None:
        if not isinstance(futures, dict) or not all(
            isinstance(core, int) and not isinstance(core, bool) and isinstance(future, Future)
            for core, future in futures.items()
        ):
            import reprlib

            raise TypeError(
                "hetflow.OffloadHandle takes a dict of core id (int) -> hetflow.Future, as a launch makes it, "
                f"not {type(futures).__name__} {reprlib.repr(futures)}"
            )
        self._futures = dict(sorted(futures.items()))
        # wait_any() forgets what it collects: threads sharing the handle take turns at the dict.
        self._lock = threading.Lock()

    def _items(self) -> List[Tuple[int, Future]]:
        with self._lock:
            return list(self._futures.items())

    @property
    def cores(self) -> List[int]:
        return [core for core, _ in self._items()]

    def wait(self) -> List[Any]:
        items = self._items()  # the kernels not collected yet (another thread's wait_any may take some meanwhile)
        for _, future in items:
            future._wait(None)  # a wait that can never end (behind an acquisition held here) raises
        # A kernel that failed fails the peers waiting for it (PeerFailed): its own error is the
        # one to raise, whichever core it ran on.
        failed = [(core, future) for core, future in items if not future.cancelled() and future.exception() is not None]
        causes = [(core, future) for core, future in failed if not isinstance(future.exception(), _kernel.PeerFailed)]
        if not causes:
            # A kernel cancelled before it started ends without sending or reaching the barrier:
            # the PeerFailed of its peers says "ended", and the note says why.
            cancelled = [core for core, future in items if future.cancelled()]
            for core, future in failed:
                _note_cancelled(future.exception(), cancelled)
        for core, future in causes or failed:
            _value(core, future)
        return [_value(core, future) for core, future in items]

    def wait_any(self) -> Tuple[int, Any]:
        while True:
            with self._lock:
                if not self._futures:
                    raise RuntimeError("hetflow: wait_any() on a handle whose kernels were all collected")
                by_future: Dict[concurrent.futures.Future, int] = {
                    future: core for core, future in self._futures.items()
                }
            done, _ = concurrent.futures.wait(by_future, return_when=concurrent.futures.FIRST_COMPLETED)
            with self._lock:
                # Another thread's wait_any may have collected them meanwhile: each goes to one caller.
                ready = [by_future[future] for future in done if self._futures.get(by_future[future]) is future]
                if not ready:
                    continue
                core = min(ready)
                future = self._futures.pop(core)
            return core, _value(core, future)

    def __await__(self) -> Any:
        """``await handle`` in a coroutine: ``wait()``'s values, the event loop free meanwhile."""
        return self._awaited().__await__()

    async def _awaited(self) -> List[Any]:
        import asyncio

        await asyncio.gather(*(future for _, future in self._items()), return_exceptions=True)
        return self.wait()  # every kernel has ended: no wait, the errors raised as wait() raises them

    def test(self) -> bool:
        return any(future.done() for _, future in self._items())

    def done(self) -> bool:
        return all(future.done() for _, future in self._items())

    def __repr__(self) -> str:
        return f"<hetflow.OffloadHandle cores={self.cores} done={self.done()}>"

    def __reduce__(self) -> Any:
        # Its futures belong to this process: elsewhere they would be their values (or nothing).
        raise TypeError(_HANDLE_TRAVELS)


_HANDLE_TRAVELS = (
    "an OffloadHandle cannot be sent to a core or a worker process (its kernels are waited for "
    "where they were launched); wait for it here and pass the values (handle.wait())"
)


_note_lock = threading.Lock()  # threads waiting on one handle note its errors once


def _note_cancelled(error: Any, cancelled: List[int]) -> None:
    for core in cancelled:
        note = f"core {core}'s kernel was cancelled (its future's cancel()) before it started"
        with _note_lock:
            if (
                hasattr(error, "add_note")
                and f"core {core}'s kernel ended" in str(error)
                and note not in getattr(error, "__notes__", ())
            ):
                error.add_note(note)


def _value(core: int, future: Future) -> Any:
    error = None if future.cancelled() else future.exception()  # a Ctrl-C meanwhile is not the kernel's
    if error is None:
        return future.result()
    error.core = core  # type: ignore[attr-defined]
    note = f"raised by the kernel on core {core}"
    with _note_lock:
        if hasattr(error, "add_note") and note not in getattr(error, "__notes__", ()):
            error.add_note(note)  # once, however often the handle is waited on
    raise error


def _cores(
    runtime: Any, auto: Optional[int], target: Target, auto_name: str = "auto", where: str = "hetflow.offload"
) -> List[int]:
    """The cores a launch runs on; ``auto_name``: what the user called ``auto`` (``cores`` for
    offload_multiple), and ``where`` the function called, for the messages."""
    count = runtime.nprocs
    if count == 0:
        raise ValueError(f"{where}: the runtime has no cores (nprocs=0)")
    if auto is not None and target is not None:
        raise ValueError(f"{where}: give {auto_name} or target, not both")
    if target is not None:
        return sorted(_checked_target(target, where, count))
    if auto is not None:
        auto = _check_auto(auto, auto_name, where)
        if auto > count:
            raise ValueError(f"{where}: {auto_name}={auto} but there are only {count} cores")
        loads = [(runtime.core_load(core), core) for core in range(count)]
        return sorted(core for _, core in sorted(loads)[:auto])
    return list(range(count))


def _is_int(value: Any) -> bool:
    """An int or a numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and not _is_numpy_bool(value)


def _is_numpy_bool(value: Any) -> bool:
    numpy = loaded_numpy()
    return numpy is not None and isinstance(value, numpy.bool_)


def _check_auto(auto: Any, auto_name: str, where: str = "hetflow.offload") -> int:
    if not _is_int(auto):
        raise SettingTypeError(f"{where}: {auto_name} must be a positive number of cores, not {auto!r}")
    if auto < 1:
        raise ValueError(f"{where}: {auto_name} must be a positive number of cores, not {auto!r}")
    return int(auto)


def launch(func: Callable[..., Any], args: tuple, kwargs: dict, cores: Iterable[int]) -> OffloadHandle:
    """Runs ``func(*args, **kwargs)`` once on each of ``cores``; kernels on busy cores queue."""
    name = getattr(func, "__name__", "kernel")
    labelled = _labelled_arguments(func, args, kwargs)
    _check_arguments(f"hetflow.offload: kernel {name!r}", labelled)
    runtime = _runtime.current()
    cores = tuple(cores)
    sent_args, sent_kwargs = _after_writers(runtime, args, kwargs, name)
    # Submitting only queues the kernels (it never waits for a core), so the lock is held briefly
    # and asynchronous launches still return at once.
    try:
        with _launch_lock:
            launch_id = next(_launch_ids)
            runtime.open_launch(launch_id, len(cores))
            futures: Dict[int, Future] = {}
            try:
                for core in cores:
                    futures[core] = runtime.submit_to_core(
                        core, _kernel.run_kernel, (launch_id, cores, func, sent_args, sent_kwargs), name, launch_id
                    )
            except BaseException:
                # The kernels never sent would keep the launch open (and its state) for good.
                runtime.abandon_launch(launch_id, len(cores) - len(futures))
                raise
    except TypeError as error:
        unsendable = _unsendable(f"hetflow.offload: kernel {name!r}", labelled + [(f"the kernel {name!r}", func)])
        if unsendable is None:
            raise
        raise unsendable from error.__cause__ or error
    return OffloadHandle(futures)


_SENDABLE = (
    "each core gets a pickled copy (cloudpickle): numbers, strings, lists, dicts, numpy arrays, functions and "
    "objects that pickle travel; locks, generators, open files, sockets and the like do not"
)


def _labelled_arguments(func: Callable[..., Any], args: tuple, kwargs: dict) -> List[Tuple[str, Any]]:
    """``(what the user calls it, value)`` for each argument of ``func(*args, **kwargs)``: its
    parameter's name where the signature tells, else its position."""
    import inspect

    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        pass
    else:
        labelled: List[Tuple[str, Any]] = []
        for parameter, value in bound.arguments.items():
            kind = bound.signature.parameters[parameter].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                labelled += [(f"argument {parameter}[{i}]", item) for i, item in enumerate(value)]
            elif kind is inspect.Parameter.VAR_KEYWORD:
                labelled += [(f"keyword argument {key!r}", item) for key, item in value.items()]
            else:
                labelled.append((f"argument {parameter!r}", value))
        return labelled
    return _runtime.labelled_by_position(args, kwargs)


def _unsendable(where: str, labelled: List[Tuple[str, Any]]) -> Optional[TypeError]:
    """A TypeError naming the first of ``labelled`` that cannot be pickled for a core, and why;
    None if each pickles on its own (the failure was something else)."""
    import reprlib

    from hetflow._serialize import _pack_by_reduce

    for what, value in labelled:
        try:
            _pack_by_reduce(_kernel.run_kernel, (value,), {})  # futures among them reduce as when sent
        except TypeError as error:
            reason = error.__cause__ or error
            return TypeError(f"{where}: cannot send {what} ({reprlib.repr(value)}) to the cores: {reason}; {_SENDABLE}")
    return None


def _check_arguments(where: str, labelled: List[Tuple[str, Any]], kernel: bool = True) -> None:
    """Refuses, naming where it is, what cannot be an argument of a kernel: an access mark (a
    kernel gets values; marks are for tasks) or an OffloadHandle (it cannot travel to a core)."""
    from hetflow._arrays import Access

    for what, value in labelled:
        found = find_nested(value, lambda item: isinstance(item, (Access, OffloadHandle)))
        if found is None:
            continue
        path, item = found
        place = what if not path else f"{what}, at {path},"
        if isinstance(item, OffloadHandle):
            raise TypeError(f"{where}: {place} is an OffloadHandle; {_HANDLE_TRAVELS}")
        if kernel:
            raise TypeError(
                f"{where}: {place} is an access mark (hetflow.{item.mode}(...)); a kernel takes its arguments as "
                "values (each core gets its own copy), and marks are for tasks. Return what a kernel computes, or "
                "keep it on the cores with define_on_device / copy_from_device"
            )
        raise TypeError(
            f"{where}: {place} is an access mark (hetflow.{item.mode}(...)); each core gets its own copy of a "
            "device variable, and marks are for tasks: give the value itself"
        )


def _after_writers(runtime: Any, args: tuple, kwargs: dict, name: str) -> Tuple[tuple, dict]:
    """``args`` and ``kwargs`` with each numpy array among them (at top level, as for a task)
    replaced by its copy: made now for an array no task has used, else a Future of the copy,
    made by a task that reads it: the kernels, which wait for the futures among their arguments,
    get the array as it is once the tasks submitted before that write it have ended, and tasks
    submitted later that write it wait for the copy. Submitting only queues such a copy, so an
    asynchronous launch still returns at once."""
    from hetflow._serialize import is_array

    copies: Dict[int, Any] = {}
    handles = runtime._handles

    def take(value: Any) -> Any:
        if not is_array(value):
            return value
        if handles is None or not handles.known(value):
            # No task ever used its memory, so none may write it: copied now, as a list argument
            # is pickled now; the program may write the array once an asynchronous launch returns.
            if id(value) not in copies:
                copies[id(value)] = _copy(value)
            return copies[id(value)]
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
    copy = array.copy(order="K")
    if not array.flags.writeable:
        # Read-only on the cores too, as the array itself arrives in a task, inside a list, and
        # in the kernel's plain call (a write raises there instead of changing a copy unseen).
        copy.flags.writeable = False
    return copy


def _refuse_generator_function(func: Any) -> None:
    """TypeError for a generator function: a kernel's call would only make a generator, which
    cannot come back from a core (it does not pickle), and every launch would fail."""
    import inspect

    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"hetflow.offload: {getattr(func, '__qualname__', func)!r} is a generator function: a kernel's call "
            "would only make a generator, which cannot come back from a core; return a list (list(...)) instead"
        )


def _refuse_inside_a_worker(where: str) -> None:
    """RuntimeError for a launch (or device data) from inside a kernel or a process task with no
    runtime started there: it would start a second pool of cores inside this core's process (as
    many processes as the machine has CPUs, in each core that does it), with other core ids and
    none of the host's device data."""
    current = _runtime._current
    if _kernel.worker_index is None or (current is not None and current.started_by_init):
        return  # on the host, or a pool this process's hetflow.init(...) made on purpose
    inside = "a kernel (an @offload function running on a core)" if _kernel._launch is not None else "a process task"
    raise RuntimeError(
        f"{where}: called inside {inside}: its cores would be a second pool of worker processes started inside "
        "this one, with core ids of their own and none of the host's device data; launch kernels from the host "
        "(return what the kernel computes, and launch the next kernel there), or call the plain function "
        "(its __wrapped__) here. hetflow.init(...) in this process first if a pool of processes here is meant"
    )


class OffloadedFunction:
    """A function whose calls run on many cores; made by ``@offload``."""

    def __init__(
        self, func: Callable[..., Any], asynchronous: bool, auto: Optional[int], target: Target, auto_name: str = "auto"
    ) -> None:
        if not callable(func):
            raise TypeError(f"hetflow.offload: {func!r} is not callable")
        # Offloading an offloaded function (or its method) again gives it other options: the kernel
        # is its function, not a call that would launch kernels from inside a kernel.
        # (A bound method would travel as getattr(instance, name): the offloaded one again.)
        self._instance: tuple = ()
        inner: Any = func
        if isinstance(inner, OffloadedFunction):
            func = inner.func
        elif isinstance(inner, types.MethodType) and isinstance(inner.__func__, OffloadedFunction):
            func, self._instance = inner.__func__.func, (inner.__self__,)
        _runtime.refuse_async_function(func, "hetflow.offload")
        _refuse_generator_function(func)
        self.func: Callable[..., Any] = func
        self.asynchronous = asynchronous
        self.auto = auto
        self.target = target
        self._auto_name = auto_name  # what the decorator called auto (offload_multiple: cores)
        self.__name__ = getattr(func, "__name__", "kernel")
        self.__doc__ = getattr(func, "__doc__", None)
        self.__wrapped__ = func

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        # On a method: the kernel gets its instance (a copy, on each core) first; not on a
        # staticmethod (``@offload`` above ``@staticmethod``), which gets no instance.
        if instance is None or isinstance(self.func, staticmethod):
            return self
        return types.MethodType(self, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        taken = {name: kwargs[name] for name in _LAUNCH_OPTIONS if name in kwargs}
        asynchronous = _asynchronous(kwargs, self.asynchronous, "hetflow.offload")
        auto = kwargs.pop("auto", None)
        target = kwargs.pop("target", None)
        auto_name = "auto"
        if auto is None and target is None:
            auto, target, auto_name = self.auto, self.target, self._auto_name
        _refuse_inside_a_worker(f"hetflow.offload: kernel {self.__name__!r}")
        _refuse_options_meant_for_the_kernel(self.func, self._instance + args, kwargs, taken)
        handle = launch(self.func, self._instance + args, kwargs, _cores(_runtime.current(), auto, target, auto_name))
        return handle if asynchronous else handle.wait()


def _refuse_options_meant_for_the_kernel(func: Callable[..., Any], args: tuple, kwargs: dict, taken: dict) -> None:
    """TypeError where a launch option given by keyword (``target=``, ``auto=``, ...) is also a
    parameter of the kernel that, without it, gets no value: the call meant it for the kernel,
    and would otherwise fail on the option's value or in every kernel, saying neither."""
    if not taken:
        return
    import inspect

    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    clashing = [name for name in taken if name in signature.parameters and signature.parameters[name].kind in kinds]
    if not clashing:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        given = ", ".join(f"{name}={taken[name]!r}" for name in clashing)
        raise TypeError(
            f"hetflow.offload: kernel {getattr(func, '__name__', 'kernel')!r} has a parameter named "
            f"{' and '.join(repr(name) for name in clashing)}, but a call's {given} is a launch option (asynchronous, "
            "async, auto and target are, in every @offload call), so the kernel would get no value for it: pass it by "
            "position"
        ) from None


def _target_cores(target: Any, where: str = "hetflow.offload") -> List[int]:
    """The cores ``target`` names: one core id (an int), or a list (tuple, range) of them; numpy
    integers are ints here, bools are not."""
    if _is_int(target):
        return [int(target)]
    if not isinstance(target, (list, tuple, range, set, frozenset)):
        raise TypeError(
            f"{where}: target must be a core id (an int) or a list of core ids, not "
            f"{type(target).__name__} {target!r}"
        )
    cores = list(target)
    for core in cores:
        if not _is_int(core):
            raise TypeError(f"{where}: target names {core!r} ({type(core).__name__}); core ids are ints")
    return [int(core) for core in cores]


def _checked_target(target: Any, where: str, count: Optional[int] = None) -> List[int]:
    """``_target_cores(target)``, refused (ValueError) if it names no core, a core twice, or a
    core that does not exist (below 0, or ``count`` and above where the number is known: a
    decorator's target is checked against the cores at each call)."""
    cores = _target_cores(target, where)
    if not cores:
        raise ValueError(f"{where}: target names no core")
    for core in cores:
        if core < 0 or (count is not None and core >= count):
            known = f"; cores are 0 to {count - 1}" if count is not None else "; core ids start at 0"
            raise ValueError(f"{where}: core {core!r} does not exist{known}")
    if len(set(cores)) != len(cores):
        raise ValueError(f"{where}: target {cores} names a core twice")
    return cores


def _asynchronous(options: Dict[str, Any], default: bool, where: str) -> bool:
    """Takes ``asynchronous`` (or ``async``, as ported ePython code spells it) out of ``options``."""
    if "asynchronous" in options and "async" in options:
        raise TypeError(f"{where}: give asynchronous or async (the same option), not both")
    # Checked: any value was taken for its truth ("no" launched asynchronously).
    return _runtime.check_flag(options.pop("asynchronous", options.pop("async", default)), f"{where}: asynchronous")


def _options(options: Dict[str, Any], where: str) -> Tuple[bool, Optional[int], Target]:
    unknown = set(options) - set(_LAUNCH_OPTIONS)
    if unknown:
        raise TypeError(
            f"{where}: unknown keyword {', '.join(sorted(unknown))}; use asynchronous (or async), auto or target"
        )
    asynchronous = _asynchronous(dict(options), False, where)
    if options.get("auto") is not None and options.get("target") is not None:
        # Refused where it is written, as a wrong target is: every call without an override would fail.
        raise ValueError(f"{where}: give auto or target, not both")
    if options.get("target") is not None:
        _checked_target(options["target"], where)  # a wrong type or value fails where it is written
    if options.get("auto") is not None:
        _check_auto(options["auto"], "auto")
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
    cores = _check_auto(cores, "cores", "hetflow.offload_multiple")  # a wrong type fails where it is written
    if func is not None:
        return OffloadedFunction(func, True, cores, None, "cores")
    return lambda f: OffloadedFunction(f, True, cores, None, "cores")


def offload_single(func: Optional[Callable[..., Any]] = None) -> Any:
    """Asynchronous launch on one idle core: ``@offload_single``."""
    if func is not None:
        return OffloadedFunction(func, True, 1, None)
    return lambda f: OffloadedFunction(f, True, 1, None)


def wait_all(*handles: OffloadHandle) -> List[List[Any]]:
    """The values of each handle's kernels (see OffloadHandle.wait), in the order given::

        h1, h2 = adder(10, 20), subtractor(10, 20)   # @offload_multiple / @offload_single
        print(hetflow.wait_all(h1, h2))

    Without handles it raises TypeError: it waits for the handles given only (every task:
    ``hetflow.wait_for_all()``)."""
    if not handles:
        raise TypeError(
            "hetflow.wait_all waits for the offload handles it is given, and none were given; to wait for every "
            "task submitted, call hetflow.wait_for_all()"
        )
    for handle in handles:
        if not isinstance(handle, OffloadHandle):
            raise TypeError(
                f"hetflow.wait_all takes the handles of asynchronous offloads (OffloadHandle), not {type(handle).__name__}"
            )
    return [handle.wait() for handle in handles]


waitAll = wait_all


# -- device-resident data -------------------------------------------------------------------------
def _on_cores(
    func: Callable[..., Any], args: tuple, target: Target, asynchronous: bool, where: str = "hetflow.offload"
) -> Any:
    _refuse_inside_a_worker(where)
    runtime = _runtime.current()
    cores = _cores(runtime, None, target, where=where)
    if len(args) > 1:  # (name, value): the value of a device variable
        labelled = [(f"the value of device variable {args[0]!r}", args[1])]
        _check_arguments(where, labelled, kernel=False)
    # The tasks' name, as errors (a future of another runtime as value) and traces show it.
    name = f'{where.rpartition(".")[2]}("{args[0]}")'
    sent, _ = _after_writers(runtime, args, {}, name)
    try:
        futures = {core: runtime.submit_to_core(core, func, sent, name) for core in cores}
    except TypeError as error:
        unsendable = _unsendable(where, labelled) if len(args) > 1 else None
        if unsendable is None:
            raise
        raise unsendable from error.__cause__ or error
    handle = OffloadHandle(futures)
    return handle if asynchronous else handle.wait()


def define_on_device(name: str, value: Any) -> None:
    """Gives every core its own copy of ``value``, which kernels use as the global ``name`` and
    which stays on the core between launches (changes made by kernels included)."""
    _check_name(name)
    _on_cores(_kernel.store, (name, value), None, False, "hetflow.define_on_device")


def copy_to_device(name: str, value: Any, target: Target = None, asynchronous: bool = False) -> Any:
    """Sets device variable ``name`` to ``value`` on the target cores (default: all)."""
    _check_name(name)
    asynchronous = _runtime.check_flag(asynchronous, "hetflow.copy_to_device: asynchronous")
    result = _on_cores(_kernel.store, (name, value), target, asynchronous, "hetflow.copy_to_device")
    return result if asynchronous else None


def copy_from_device(name: str, target: Target = None, asynchronous: bool = False) -> Any:
    """The value of device variable ``name`` on each target core (default: all), by core id."""
    _check_name(name)
    asynchronous = _runtime.check_flag(asynchronous, "hetflow.copy_from_device: asynchronous")
    return _on_cores(_kernel.load, (name,), target, asynchronous, "hetflow.copy_from_device")


def _check_name(name: str) -> None:
    """A device variable becomes a global of the kernels: its name must be one a kernel can use,
    and must not hide a builtin (every later kernel on the core would get the variable instead)."""
    if not isinstance(name, str):
        raise SettingTypeError(f"hetflow: a device variable needs a Python identifier (a str) as name, not {name!r}")
    if not name.isidentifier():
        raise ValueError(f"hetflow: a device variable needs a Python identifier as name, not {name!r}")
    if keyword.iskeyword(name):
        raise ValueError(f"hetflow: {name!r} is a Python keyword; a device variable needs another name")
    if name.startswith("__") and name.endswith("__"):
        raise ValueError(
            f"hetflow: {name!r} is a special name (__...__) of the kernels' modules; a device variable needs another "
            "name"
        )
    if hasattr(builtins, name):
        raise ValueError(
            f"hetflow: {name!r} is a Python builtin; a device variable of that name would hide it from every "
            "kernel on the core: choose another name"
        )
