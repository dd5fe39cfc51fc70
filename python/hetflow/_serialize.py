"""Host-side pickling for the process executor: calls out, results and errors back.

>>> packed = pack_call(scale, (fut, 2.0), {"out": [fut]}, is_future)
>>> packed.func_key                  # 'mymod.scale#3f1c...'; register packed.func_bytes under it once
>>> packed.futures                   # [fut]: the call carries Placeholder(0) where fut was
>>> value = loads_result(result_bytes)            # a RESULT message's pickle
>>> raise unpack_error(error_parts)               # an ERROR message's parts, task id included

Functions are pickled with cloudpickle (by value for ``__main__``, lambdas and closures, by
reference for functions of importable modules) once per function object; the key names the
function and a hash of its pickle, so equal pickles share a key and a worker keeps one copy.
"""
from __future__ import annotations

import hashlib
import pickle
import reprlib
import sys
import threading
import weakref
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple


from ._protocol import MAX_PARTS, RUN_DEPS

PROTOCOL = 5
MAX_FUTURES = MAX_PARTS - RUN_DEPS  # a RUN message carries one part per future after the others
_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})
_KEEP: Any = object()  # what a replace() callback returns to leave a leaf as it is


class Placeholder:
    """Stands in the pickled call for the value of the ``index``-th future the call depends on."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> Tuple[Any, Tuple[int]]:
        return (Placeholder, (self.index,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placeholder) and other.index == self.index

    def __hash__(self) -> int:
        return hash((Placeholder, self.index))

    def __repr__(self) -> str:
        return f"Placeholder({self.index})"


class PackedCall(NamedTuple):
    """What ``pack_call`` returns; see there."""

    func_key: str
    func_bytes: bytes
    call_bytes: bytes
    futures: List[Any]


class RemoteTaskError(Exception):
    """A task's exception that could not travel back as itself (it did not pickle or unpickle).

    ``type_name`` is its qualified type name (``"mymod.MyError"``), ``message`` its ``str()``.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


class RemoteTraceback(Exception):
    """The traceback of a task that failed in a worker process, set as its exception's
    ``__cause__`` (as ``concurrent.futures.ProcessPoolExecutor`` does), so it prints above it."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _cloudpickle() -> Any:
    """cloudpickle, imported when first needed (plain values never need it)."""
    import cloudpickle

    return cloudpickle


# -- walking arguments ----------------------------------------------------------------------------
def replace_nested(value: Any, replace: Callable[[Any], Any]) -> Any:
    """``value`` with each leaf ``x`` for which ``replace(x)`` is not ``_KEEP`` swapped for it.

    Looks inside lists, tuples (named tuples too) and dict values, recursively; a container
    with nothing replaced is returned as is (no copy), one with something replaced is rebuilt
    with its type. Shared containers stay shared; a cycle is left as it is.
    """
    memo: Dict[int, Any] = {}

    def walk(item: Any) -> Any:
        kind = type(item)
        if kind in _ATOMS:
            return item
        new = replace(item)
        if new is not _KEEP:
            return new
        if not (kind is list or kind is dict or kind is tuple or (isinstance(item, tuple) and hasattr(kind, "_fields"))):
            return item  # not a container we look into (dict and list subclasses included)
        key = id(item)
        if key in memo:
            return memo[key]
        memo[key] = item  # while inside it: a cycle back to it keeps the original
        if kind is dict:
            values = [walk(v) for v in item.values()]
            changed = any(n is not o for n, o in zip(values, item.values()))
            result = dict(zip(item.keys(), values)) if changed else item
        else:
            items = [walk(v) for v in item]
            changed = any(n is not o for n, o in zip(items, item))
            if not changed:
                result = item
            elif kind is list:
                result = items
            elif kind is tuple:
                result = tuple(items)
            else:
                result = kind(*items)  # named tuple
        memo[key] = result
        return result

    return walk(value)


# -- functions ------------------------------------------------------------------------------------
_func_lock = threading.Lock()
_func_weak: "weakref.WeakKeyDictionary[Any, Tuple[str, bytes]]" = weakref.WeakKeyDictionary()
_func_strong: Dict[Any, Tuple[str, bytes]] = {}  # hashable callables that take no weak reference


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(name, str) and callable(obj) and not isinstance(obj, type):
        return f"<function {name}>"
    return reprlib.repr(obj)


def _func_name(func: Any) -> str:
    module = getattr(func, "__module__", None) or type(func).__module__
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{name}"


def _out_of_descriptors(exc: BaseException) -> Optional[OSError]:
    """A clear error if ``exc`` (or what caused it) is a process running out of descriptors:
    loading cloudpickle is often the first thing to hit the limit, and "cannot send the
    function" would point at the wrong culprit."""
    import errno

    cause: Optional[BaseException] = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.EMFILE, errno.ENFILE):
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            limit = "" if soft == resource.RLIM_INFINITY else f" (limit {soft}, ulimit -n)"
            return OSError(
                cause.errno,
                f"hetflow: cannot prepare a process task: this process ran out of file descriptors{limit}; "
                "raise the limit (ulimit -n), or keep fewer files, sockets and shared arrays open at once",
            )
        cause = cause.__cause__ or cause.__context__
    return None


def _pickle_function(func: Any) -> Tuple[str, bytes]:
    try:
        data = _cloudpickle().dumps(func, protocol=PROTOCOL)
    except Exception as exc:
        descriptors = _out_of_descriptors(exc)
        if descriptors is not None:
            raise descriptors from exc
        raise TypeError(
            f"hetflow: cannot send {_describe(func)} to a process worker: {exc}; use executor='thread' for it"
        ) from exc
    digest = hashlib.blake2b(data, digest_size=12).hexdigest()
    return f"{_func_name(func)}#{digest}", data


def function_entry(func: Any) -> Tuple[str, bytes]:
    """``(func_key, func_bytes)`` for a callable, pickled once per function object.

    Cached weakly where the callable allows (a cached closure does not outlive its users);
    unhashable callables are pickled on every call (their key still dedupes in the workers).
    """
    last = _last_function
    if last is not None and last[0] is func:
        return last[1]
    if not callable(func):
        raise TypeError(f"hetflow: {reprlib.repr(func)} is not callable")
    try:
        hash(func)
    except TypeError:
        return _pickle_function(func)
    with _func_lock:
        try:
            entry = _func_weak.get(func)
            weak = True
        except TypeError:  # no weak references to it
            entry = _func_strong.get(func)
            weak = False
    if entry is not None:
        _remember_last(func, entry)
        return entry
    entry = _pickle_function(func)  # outside the lock: may be slow; a race only pickles twice
    with _func_lock:
        if weak:
            entry = _func_weak.setdefault(func, entry)
        else:
            entry = _func_strong.setdefault(func, entry)
    _remember_last(func, entry)
    return entry


# The function submitted last, for the common case of many tasks of one function in a row.
_last_function: Optional[Tuple[Any, Tuple[str, bytes]]] = None


def _remember_last(func: Any, entry: Tuple[str, bytes]) -> None:
    global _last_function
    _last_function = (func, entry)


# -- calls ----------------------------------------------------------------------------------------
class Packing(threading.local):
    """The futures met while one call is pickled on this thread: a future type whose
    ``__reduce__`` calls ``Packing.placeholder`` pickles as a Placeholder, without any walk over
    the arguments in Python."""

    futures: Optional[List[Any]] = None
    index_of: Optional[Dict[int, int]] = None

    def placeholder(self, future: Any) -> "Placeholder":
        if self.futures is None or self.index_of is None:
            raise TypeError("hetflow: a Future cannot be pickled; pass it as an argument of a task instead")
        index = self.index_of.get(id(future))
        if index is None:
            index = self.index_of[id(future)] = len(self.futures)
            self.futures.append(future)
        return Placeholder(index)


packing = Packing()


def _pack_by_reduce(func: Any, args: tuple, kwargs: Dict[str, Any]) -> Tuple[bytes, List[Any]]:
    """Pickles the call with futures reducing themselves to placeholders: the C pickler when it
    can do it faithfully (nothing pickled by reference to ``__main__``, which workers lack),
    cloudpickle otherwise."""
    packing.futures, packing.index_of = [], {}
    try:
        try:
            data = pickle.dumps((args, kwargs), protocol=PROTOCOL)
            if b"__main__" not in data:
                return data, packing.futures
        except Exception:
            pass
        packing.futures, packing.index_of = [], {}
        try:
            return _cloudpickle().dumps((args, kwargs), protocol=PROTOCOL), packing.futures
        except Exception as exc:
            raise _argument_error(func, (args, kwargs)) from exc
    finally:
        packing.futures = packing.index_of = None


def pack_call(
    func: Callable[..., Any],
    args: Any,
    kwargs: Optional[Dict[str, Any]],
    is_future: Callable[[Any], bool],
    reduces_to_placeholder: bool = False,
) -> PackedCall:
    """Pickles a call for a process worker, futures swapped for placeholders.

    ``is_future(x)`` says whether ``x`` is a future; each future found in ``args``/``kwargs``
    (at top level or nested in lists, tuples and dict values) becomes ``Placeholder(i)``, where
    ``futures[i]`` is that future (one index per distinct future object).

    >>> pc = pack_call(f, (1, fut), {"xs": [fut, 3]}, lambda x: isinstance(x, Future))
    >>> pc.futures == [fut]     # the worker gets f(1, v, xs=[v, 3]) with v the value of fut

    ``reduces_to_placeholder``: the futures reduce themselves through ``packing`` (hetflow's
    own do), so they are found wherever they are, while pickling, at the C pickler's speed.
    """
    func_key, func_bytes = function_entry(func)
    args = tuple(args)
    kwargs = dict(kwargs or {})
    if all_plain(args) and all_plain(kwargs.values()):
        # Numbers and strings: nothing to swap, and the C pickler is several times faster.
        return PackedCall(func_key, func_bytes, pickle.dumps((args, kwargs), protocol=PROTOCOL), [])
    if reduces_to_placeholder:
        call_bytes, found = _pack_by_reduce(func, args, kwargs)
        if len(found) > MAX_FUTURES:
            raise ValueError(
                f"hetflow: a task can depend on at most {MAX_FUTURES} futures through its arguments, not {len(found)}"
            )
        return PackedCall(func_key, func_bytes, call_bytes, found)
    futures: List[Any] = []
    index_of: Dict[int, int] = {}

    def swap(item: Any) -> Any:
        if not is_future(item):
            return _KEEP
        index = index_of.get(id(item))
        if index is None:
            index = index_of[id(item)] = len(futures)
            futures.append(item)
        return Placeholder(index)

    call = (replace_nested(args, swap), replace_nested(kwargs, swap))
    if len(futures) > MAX_FUTURES:
        raise ValueError(
            f"hetflow: a task can depend on at most {MAX_FUTURES} futures through its arguments, not {len(futures)}"
        )
    try:
        call_bytes = _cloudpickle().dumps(call, protocol=PROTOCOL)
    except Exception as exc:
        raise _argument_error(func, call) from exc
    return PackedCall(func_key, func_bytes, call_bytes, futures)


_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


def all_plain(values: Iterable[Any]) -> bool:
    """True when every value is a number, string, bytes or None (not a subclass): nothing in it
    can be a future, an array or an access mark, and the C pickler takes it as it is."""
    for value in values:
        if type(value) not in _PLAIN:
            return False
    return True


def is_array(value: Any) -> bool:
    """Whether ``value`` is a numpy array (numpy is not imported for the question)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _argument_error(func: Any, call: Tuple[tuple, Dict[str, Any]]) -> TypeError:
    """A TypeError naming the first argument that does not pickle, and why."""
    named: List[Tuple[str, Any]] = [(f"argument {i}", v) for i, v in enumerate(call[0])]
    named += [(f"keyword argument {k!r}", v) for k, v in call[1].items()]
    for what, value in named:
        try:
            _cloudpickle().dumps(value, protocol=PROTOCOL)
        except Exception as exc:
            return TypeError(
                f"hetflow: cannot send {what} of {_describe(func)} ({reprlib.repr(value)}) to a process worker: "
                f"{exc}; use executor='thread' for it"
            )
    return TypeError(f"hetflow: cannot send the arguments of {_describe(func)} to a process worker")


# -- values ---------------------------------------------------------------------------------------
def dumps_value(value: Any) -> bytes:
    """Pickles a value for a worker (a thread task's result that a process task depends on).

    cloudpickle, so objects of classes from ``__main__`` travel too; TypeError if impossible.
    """
    try:
        return _cloudpickle().dumps(value, protocol=PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"hetflow: cannot send a value of type {type_name(type(value))} to a process worker: {exc}"
        ) from exc


def dumps_result(value: Any) -> bytes:
    """Pickles a task's return value in the worker: pickle, else cloudpickle (a lambda, say).

    Raises TypeError naming the value's type when neither can.
    """
    try:
        return pickle.dumps(value, protocol=PROTOCOL)
    except Exception:
        pass
    try:
        return _cloudpickle().dumps(value, protocol=PROTOCOL)
    except Exception as exc:
        raise TypeError(f"hetflow: the task's result of type {type_name(type(value))} cannot be pickled: {exc}") from exc


def loads_result(data: Any) -> Any:
    """Unpickles a RESULT message's value (``bytes``)."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        _add_note(exc, "hetflow: raised while unpickling the result of a process task")
        raise


# -- errors ---------------------------------------------------------------------------------------
def type_name(cls: type) -> str:
    """``module.QualName`` of a class, as error messages and ERROR replies name it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _text(part: Any) -> str:
    return bytes(part).decode("utf-8", errors="replace")


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)


def unpack_error(parts: List[Any]) -> BaseException:
    """The exception an ERROR message describes; ``parts`` are all of its parts, task id first.

    The original exception (type and args) when its pickle loads, else ``RemoteTaskError``;
    either way its ``__cause__`` is a ``RemoteTraceback`` holding the worker's traceback text.
    """
    if len(parts) < 5:
        raise ValueError(f"hetflow: an ERROR message has 5 parts, not {len(parts)}")
    exc_bytes, class_name, message, tb = parts[1], _text(parts[2]), _text(parts[3]), _text(parts[4])
    exc: Optional[BaseException] = None
    if len(exc_bytes):
        try:
            loaded = pickle.loads(exc_bytes)
        except Exception:
            loaded = None
        if isinstance(loaded, BaseException):
            exc = loaded
    if exc is None:
        exc = RemoteTaskError(class_name, message)
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    _add_note(exc, "hetflow: raised in a process worker (executor='process'); its traceback is shown above")
    return exc
