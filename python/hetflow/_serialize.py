"""Host-side pickling for the process executor: calls out, results and errors back.

>>> packed = pack_call(scale, (fut, 2.0), {"out": [fut]}, is_future)
>>> packed.func_key                  # 'mymod.scale#3f1c...'; register packed.func_bytes under it once
>>> packed.futures                   # [fut]: the call carries Placeholder(0) where fut was
>>> value = loads_result(result_bytes)            # a RESULT message's pickle
>>> raise unpack_error(error_parts)               # an ERROR message's parts, task id included

Functions are pickled with cloudpickle (by value for ``__main__``, lambdas and closures, by
reference for functions of importable modules); the key names the function and a hash of its
pickle, so equal pickles share a key and a worker keeps one copy. A function sent by value is
pickled again when what its pickle captured changed (a global it uses rebound or mutated in
place, a closure cell, its defaults...): cheap identity checks, at each submission, say when.
The main script of a multiprocessing child started with spawn or forkserver (``__mp_main__``),
and a script ``runpy.run_path`` runs (``<run_path>``), are sent by value as ``__main__`` is: the
worker processes cannot import them; so are the ``functools.lru_cache`` functions of those.
"""
from __future__ import annotations

import functools
import hashlib
import io
import pickle
import reprlib
import sys
import threading
import types
import weakref
from collections import ChainMap, OrderedDict
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple


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


# Modules whose functions and classes travel by value: workers cannot import them. In a child
# that multiprocessing started with spawn or forkserver, the main script is ``__mp_main__``; a
# script that ``runpy.run_path`` runs without a ``run_name`` is ``<run_path>`` while it runs.
_MAIN_MODULES = ("__main__", "__mp_main__", "<run_path>")
_BY_REFERENCE_IN_CLOUDPICKLE = _MAIN_MODULES[1:]  # cloudpickle sends these by reference


def names_main(data: bytes) -> bool:
    """Whether a plain pickle may name something of a module in ``_MAIN_MODULES`` (which the
    workers lack), so that cloudpickle must send it instead."""
    return b"_main__" in data or b"<run_path>" in data


_pickler: Any = None
_main_pickler: Any = None


def _rebuilt_lru_cache(func: Callable[..., Any], maxsize: Optional[int], typed: bool) -> Any:
    """A worker's copy of a ``functools.lru_cache`` (or ``cache``) function of ``__main__``,
    with a cache of its own."""
    return functools.lru_cache(maxsize=maxsize, typed=typed)(func)


def _reduce_lru_cache(obj: Any) -> Any:
    # functools' wrapper pickles as its qualified name, which a worker's __main__ (not the host's)
    # lacks: one of __main__ (or __mp_main__, <run_path>) travels as the function it wraps, by value.
    wrapped = getattr(obj, "__wrapped__", None)
    if getattr(obj, "__module__", None) in _MAIN_MODULES and wrapped is not None:
        parameters = obj.cache_parameters()
        return _rebuilt_lru_cache, (wrapped, parameters["maxsize"], parameters["typed"])
    return obj.__reduce__()


def _main_pickler_class() -> Any:
    """cloudpickle's Pickler, with the ``functools.lru_cache`` functions of ``__main__`` sent by
    value (cloudpickle sends them by name, and no worker's ``__main__`` has them)."""
    global _main_pickler
    if _main_pickler is None:
        base = _cloudpickle().Pickler
        table = getattr(base, "dispatch_table", None)
        if not isinstance(table, ChainMap):
            _main_pickler = base  # an unknown cloudpickle: as it pickles them
        else:
            chain: ChainMap = ChainMap({functools._lru_cache_wrapper: _reduce_lru_cache}, table)

            class MainPickler(base):  # type: ignore[misc, valid-type]
                dispatch_table = chain

            _main_pickler = MainPickler
    return _main_pickler


def _pickler_class() -> Any:
    """cloudpickle's Pickler, made to pickle ``__mp_main__``'s (and ``<run_path>``'s) functions
    and classes by value (cloudpickle sends them by reference, and no worker has that module)."""
    global _pickler
    if _pickler is None:
        cloudpickle = _cloudpickle()
        base = _main_pickler_class()
        module = getattr(cloudpickle, "cloudpickle", cloudpickle)
        class_reduce = getattr(module, "_dynamic_class_reduce", None)
        if class_reduce is None or not hasattr(base, "_dynamic_function_reduce") or not hasattr(base, "reducer_override"):
            _pickler = base  # an unknown cloudpickle: __mp_main__ as cloudpickle treats it
        else:
            reduce_class: Callable[[Any], Any] = class_reduce

            class Pickler(base):  # type: ignore[misc, valid-type]
                def reducer_override(self, obj: Any) -> Any:
                    kind = type(obj)
                    if (kind is types.FunctionType or isinstance(obj, type)) and getattr(
                        obj, "__module__", None
                    ) in _BY_REFERENCE_IN_CLOUDPICKLE:
                        if kind is types.FunctionType:
                            return self._dynamic_function_reduce(obj)
                        return reduce_class(obj)
                    return super().reducer_override(obj)

            _pickler = Pickler
    return _pickler


def _cloud_pickler() -> Any:
    """cloudpickle's Pickler, with ``__mp_main__`` and ``<run_path>`` sent by value as ``__main__``
    is, and ``functools.lru_cache`` functions of those modules sent by value."""
    _cloudpickle()  # loaded on first use (which may fail: out of descriptors)
    if any(name in sys.modules for name in _BY_REFERENCE_IN_CLOUDPICKLE):
        return _pickler if _pickler is not None else _pickler_class()
    # The usual case: cloudpickle's own reducer_override, without one more call per object.
    return _main_pickler if _main_pickler is not None else _main_pickler_class()


def _dumps_with(pickler: Any, obj: Any) -> bytes:
    with io.BytesIO() as file:
        pickler(file, protocol=PROTOCOL).dump(obj)
        return file.getvalue()


def _cloud_dumps(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, with ``__mp_main__`` sent by value as ``__main__`` is."""
    return _dumps_with(_cloud_pickler(), obj)


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
# Each callable's ((func_key, func_bytes), watch list, versions sent): see function_entry and _watch.
_Cached = Tuple[Tuple[str, bytes], Any, int]
# Every version of a function stays registered with the engine and its workers, so a function
# whose captured values change at every submission (a loop counter it reads as a global) would
# grow them without end: past this many versions it travels with each call instead (call_inline).
_MOST_VERSIONS = 32
# Nor would a program that submits a new function object at every call (a lambda or a partial
# made in a loop): past this many distinct function pickles registered by this process, a new one
# travels with its call, and is registered only when it is submitted again (among the last
# _MOST_FUNCTIONS new ones), so that a function called often is not pickled at every call.
_MOST_FUNCTIONS = 1024
# A registration is for good (the engine and every worker keep the function), so a program that
# submits each new function twice (a lambda made in a loop and called twice, a hetflow.map over
# one: a task per chunk) would still grow them without end: past this many, every new function
# travels with its calls, submitted again or not.
_MOST_REGISTERED = 4 * _MOST_FUNCTIONS
_registered_keys: Set[str] = set()
_sent_inline_once: "OrderedDict[str, None]" = OrderedDict()
# Captured values whose pickle is larger are watched for rebinding only (see _watch_value).
_LARGEST_COMPARED = 1 << 20
_INLINE: Any = object()  # the watch list of such a function
_func_weak: "weakref.WeakKeyDictionary[Any, _Cached]" = weakref.WeakKeyDictionary()
_func_strong: Dict[Any, _Cached] = {}  # hashable callables that take no weak reference


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(name, str) and callable(obj) and not isinstance(obj, type):
        return f"<function {name}>"
    return reprlib.repr(obj)


def _func_name(func: Any) -> str:
    module = getattr(func, "__module__", None) or type(func).__module__
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return utf8_text(f"{module}.{name}")


def utf8_text(text: str) -> str:
    """``text`` as the engine takes names (UTF-8, C strings): lone surrogates, which no UTF-8
    holds, as escapes (``\\udcff``) rather than an error from deep inside the submission, and
    NUL as ``\\x00`` (the trace and the messages would end the name there)."""
    if not isinstance(text, str):
        text = str(text)
    if "\0" in text:
        text = text.replace("\0", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
        data = _cloud_dumps(func)
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
    """``(func_key, func_bytes)`` for a callable, pickled once per function object, and again
    when something its pickle captured by value changed (see ``_watch``).

    Cached weakly where the callable allows (a cached closure does not outlive its users);
    unhashable callables are pickled on every call (their key still dedupes in the workers).
    """
    last = _last_function
    if last is not None and last[0] is func:
        watch = last[1][1]
        if watch is None or watch is _INLINE or (watch is not _ALWAYS and _unchanged(watch)):
            return last[1][0]
    if not callable(func):
        raise TypeError(f"hetflow: {reprlib.repr(func)} is not callable")
    try:
        hash(func)
    except TypeError:
        entry = _pickle_function(func)
        return _inline_entry() if _one_too_many(func, entry[0]) else entry
    cached: Optional[_Cached]
    with _func_lock:
        try:
            cached = _func_weak.get(func)
            weak = True
        except TypeError:  # no weak references to it
            cached = _func_strong.get(func)
            weak = False
    if cached is not None:
        watch = cached[1]
        if watch is None or watch is _INLINE or (watch is not _ALWAYS and _unchanged(watch)):
            _remember_last(func, cached)
            return cached[0]
    # Outside the lock: may be slow; a race only pickles twice. The watch list is made before
    # the pickle: a change in between then shows at the next check (one pickle too many).
    watch = _watch(func)
    entry = _pickle_function(func)
    versions = 1 if cached is None else cached[2] + (entry[0] != cached[0][0])
    if versions > _MOST_VERSIONS and watch is not None:
        watch, entry = _INLINE, _inline_entry()
    elif _one_too_many(func, entry[0]):
        watch, entry = _ALWAYS, _inline_entry()  # pickled again when submitted again: registered then
    fresh = (entry, watch, versions)
    with _func_lock:
        if weak:
            _func_weak[func] = fresh
        else:
            _func_strong[func] = fresh
    _remember_last(func, fresh)
    return fresh[0]


def _one_too_many(func: Any, key: str) -> bool:
    """Whether ``func``, pickled as ``key``, travels with its call rather than being registered:
    a new function past ``_MOST_FUNCTIONS``, the first time it is submitted, and every new
    function past ``_MOST_REGISTERED``."""
    with _func_lock:
        if key in _registered_keys or func is call_inline:
            return False
        if len(_registered_keys) < _MOST_FUNCTIONS or (
            key in _sent_inline_once and len(_registered_keys) < _MOST_REGISTERED
        ):
            _sent_inline_once.pop(key, None)
            _registered_keys.add(key)
            return False
        _sent_inline_once[key] = None
        if len(_sent_inline_once) > _MOST_FUNCTIONS:
            _sent_inline_once.popitem(last=False)
        return True


def call_inline(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Runs in a worker for a function that travels with its call (see ``function_for_call``)."""
    return func(*args, **kwargs)


def _inline_entry() -> Tuple[str, bytes]:
    return function_entry(call_inline)  # importable: sent by reference, registered once


def function_for_call(func: Any, args: tuple) -> Tuple[str, bytes, tuple, bool]:
    """``(func_key, func_bytes, args, inline)`` for a call of ``func``: its registered entry, or,
    for a function whose captured values changed at more than ``_MOST_VERSIONS`` submissions
    (``inline``), ``call_inline``'s, with the function itself put first among the arguments:
    it is then pickled by value with each call, as loky does."""
    key, data = function_entry(func)
    if func is not call_inline and key == _inline_entry()[0]:
        return key, data, (func, *args), True
    return key, data, args, False


# The function submitted last, for the common case of many tasks of one function in a row.
_last_function: Optional[Tuple[Any, _Cached]] = None


def _remember_last(func: Any, cached: _Cached) -> None:
    global _last_function
    _last_function = (func, cached)


# -- what a function's pickle captured ------------------------------------------------------------
# cloudpickle sends a function of __main__ (or a lambda, a closure) by value: its code, the
# current values of the globals it names, its closure cells, defaults and attributes, and the
# same for the functions and classes of __main__ they use. The pickle is cached, so each value
# it captured is watched: a name rebound (an identity check) or a mutable value changed in place
# (its pickle compared) makes the next submission pickle the function again, as loky would at
# every call. Numbers, strings, tuples of them, modules and whatever travels by reference need
# no more than the identity check. The checks hold what they watch weakly where it allows: a
# cached closure, and what it holds, must not outlive their users.
_MISSING: Any = object()
_ALWAYS: Any = object()  # a watch list that says: pickle again at each submission
_SKIPPED_CLASS_ATTRIBUTES = frozenset(
    {
        "__annotations__", "__dataclass_fields__", "__dataclass_params__", "__doc__", "__dict__", "__weakref__",
        "__slotnames__",  # copyreg's cache
    }
)
_STABLE_TYPES = (
    types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
    types.GetSetDescriptorType, types.MemberDescriptorType, types.ClassMethodDescriptorType,
    types.CodeType,
)
_FUNCTION, _ATTRIBUTES, _MAPPING, _PICKLE = range(4)


class _Ref(weakref.ref):
    """A weak reference made by ``_hold`` (no value of the user's is one)."""

    __slots__ = ()


def _hold(value: Any) -> Any:
    """``value`` held weakly when it allows, else itself; ``_held`` gives it back."""
    if type(value) in _ATOMS or value is _MISSING:
        return value
    try:
        return _Ref(value)
    except TypeError:
        return value


def _held(hold: Any) -> Any:
    """What ``_hold`` held (None when it is gone)."""
    return hold() if type(hold) is _Ref else hold


def _same(hold: Any, current: Any) -> bool:
    return hold is current or (type(hold) is _Ref and current is not None and hold() is current)


def _by_reference(obj: Any) -> bool:
    """Whether cloudpickle sends a function or class by reference (its module is importable)."""
    if getattr(obj, "__module__", None) in _MAIN_MODULES:
        return False
    module = _cloudpickle()
    should = getattr(getattr(module, "cloudpickle", module), "_should_pickle_by_reference", None)
    if should is None:  # an unknown cloudpickle: importable top-level names only
        name = getattr(obj, "__qualname__", "")
        return "<" not in name and getattr(obj, "__module__", None) in sys.modules
    try:
        return bool(should(obj))
    except Exception:
        return False


def _code_globals(code: types.CodeType) -> Tuple[str, ...]:
    """The global names a code object (and those nested in it) may read, as cloudpickle sees them."""
    module = _cloudpickle()
    extract = getattr(getattr(module, "cloudpickle", module), "_extract_code_globals", None)
    if extract is not None:
        try:
            return tuple(extract(code))
        except Exception:
            pass
    names: List[str] = []
    stack = [code]
    while stack:
        current = stack.pop()
        names.extend(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return tuple(dict.fromkeys(names))


def _watch(func: Any) -> Any:
    """The checks that tell whether ``func``'s pickle is still current: None when nothing it
    captured can change (sent by reference), ``_ALWAYS`` when that cannot be told cheaply."""
    if type(func) is types.FunctionType and _by_reference(func):
        return None
    checks: List[tuple] = []
    try:
        ok = _watch_value(func, checks, set())
    except Exception:
        ok = False
    if not ok:
        return _ALWAYS
    return checks or None


def _watch_value(value: Any, checks: List[tuple], seen: set) -> bool:
    """Adds to ``checks`` what tells whether ``value`` (as the function's pickle holds it) changed;
    False when nothing cheap can (the function is then pickled at each submission)."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is tuple or kind is frozenset:
        return all(_watch_value(item, checks, seen) for item in value)
    if id(value) in seen:
        return True
    seen.add(id(value))
    if kind is types.FunctionType:
        return _by_reference(value) or _watch_function(value, checks, seen)
    if isinstance(value, type):
        return _by_reference(value) or _watch_class(value, checks, seen)
    if kind is types.ModuleType:
        return value.__name__ in sys.modules and value.__name__ not in _MAIN_MODULES
    if isinstance(value, _STABLE_TYPES):
        owner = getattr(value, "__self__", None)
        return owner is None or type(owner) is types.ModuleType or _watch_value(owner, checks, seen)
    if kind is types.MethodType:
        return _watch_value(value.__func__, checks, seen) and _watch_value(value.__self__, checks, seen)
    if kind is staticmethod or kind is classmethod:
        return _watch_value(value.__func__, checks, seen)
    if kind is property:
        return all(_watch_value(f, checks, seen) for f in (value.fget, value.fset, value.fdel))
    if kind is functools._lru_cache_wrapper and getattr(value, "__module__", None) in _MAIN_MODULES:
        return _watch_value(getattr(value, "__wrapped__", None), checks, seen)  # sent as the function it wraps
    if kind is functools.partial:
        names = ("func", "args", "keywords")
        checks.append((_ATTRIBUTES, _hold(value), names, tuple(_hold(getattr(value, n)) for n in names)))
        return (
            _watch_value(value.func, checks, seen)
            and _watch_value(value.args, checks, seen)
            and _watch_value(value.keywords, checks, seen)
        )
    # A value that may change in place (a dict, a list, an object): its pickle is compared, the
    # C pickler's where it can (what it names in __main__, such as the class of an object, is
    # watched as well), cloudpickle's otherwise (slower: a class of __main__ is pickled whole).
    # A large one (a big array) is watched for rebinding only: pickling it at each submission
    # would cost more than most tasks; changes made in place to it are not seen (documented).
    nbytes = getattr(value, "nbytes", None)
    if type(nbytes) is int and nbytes > _LARGEST_COMPARED:
        return True
    try:
        data: Optional[bytes] = pickle.dumps(value, protocol=PROTOCOL)
    except Exception:
        data = None
    if data is not None and len(data) > _LARGEST_COMPARED:
        return True
    if data is not None:
        named = _named_in_main(value) if names_main(data) else []
        if named is not None and all(_watch_value(obj, checks, seen) for obj in named):
            checks.append((_PICKLE, _hold(value), data, False))
            return True
    checks.append((_PICKLE, _hold(value), _cloud_dumps(value), True))  # raises if it cannot be sent at all
    return True


class _NamedInMain(pickle._Pickler):
    """The pure-Python pickler, noting the functions and classes it names in ``__main__``."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), protocol=PROTOCOL)
        self.named: List[Any] = []

    def save_global(self, obj: Any, name: Optional[str] = None) -> None:
        if getattr(obj, "__module__", None) in _MAIN_MODULES:
            self.named.append(obj)
        super().save_global(obj, name)  # type: ignore[misc]


def _named_in_main(value: Any) -> Optional[List[Any]]:
    """The functions and classes of ``__main__`` that ``value``'s pickle names (None if unsure).
    Slow (pure Python), but only run when a watch list is made."""
    pickler = _NamedInMain()
    try:
        pickler.dump(value)
    except Exception:
        return None
    return pickler.named


def _watch_function(func: types.FunctionType, checks: List[tuple], seen: set) -> bool:
    # One check for all of it: the common case (a function of __main__, a few globals, no
    # closure, no attributes) then costs one pass over its global names.
    namespace = func.__globals__
    global_names = _code_globals(func.__code__)
    values = tuple(namespace.get(name, _MISSING) for name in global_names)
    contents = []
    for cell in func.__closure__ or ():
        try:
            contents.append(cell.cell_contents)
        except ValueError:  # empty
            contents.append(_MISSING)
    attributes = func.__dict__
    checks.append((
        _FUNCTION, _Ref(func), func.__code__, func.__defaults__, func.__kwdefaults__, attributes,
        global_names, tuple(_hold(v) for v in values), tuple(_hold(v) for v in contents),
        {k: _hold(v) for k, v in attributes.items()} if attributes else None,
    ))
    watched = [*values, *contents, *attributes.values(), func.__defaults__]
    if func.__kwdefaults__ is not None:
        watched.append(func.__kwdefaults__)
    return all(_watch_value(v, checks, seen) for v in watched if v is not _MISSING)


def _watch_class(cls: type, checks: List[tuple], seen: set) -> bool:
    checks.append((_ATTRIBUTES, _hold(cls), ("__bases__",), (cls.__bases__,)))
    return _watch_namespace(cls, _SKIPPED_CLASS_ATTRIBUTES, checks, seen) and all(
        _watch_value(base, checks, seen) for base in cls.__bases__
    )


def _watch_namespace(obj: Any, skipped: Any, checks: List[tuple], seen: set) -> bool:
    """Watches ``obj.__dict__`` (a class's, a function's attributes): its keys, the identity of
    each value, and each value as ``_watch_value`` does (but those in ``skipped``)."""
    snapshot = dict(obj.__dict__)
    checks.append((_MAPPING, _hold(obj), {k: _hold(v) for k, v in snapshot.items()}))
    return all(_watch_value(v, checks, seen) for k, v in snapshot.items() if k not in skipped)


def _unchanged(checks: List[tuple]) -> bool:
    """Whether everything ``_watch`` recorded is as it was (False also when a check fails or
    something it watched is gone)."""
    missing = _MISSING
    try:
        for check in checks:
            what = check[0]
            owner = check[1]
            if type(owner) is _Ref:
                owner = owner()
                if owner is None:
                    return False
            if what == _FUNCTION:
                _, _, code, defaults, kwdefaults, attributes, names, holds, cells, snapshot = check
                if (
                    owner.__code__ is not code
                    or owner.__defaults__ is not defaults
                    or owner.__kwdefaults__ is not kwdefaults
                    or owner.__dict__ is not attributes
                ):
                    return False
                if names:
                    namespace = owner.__globals__
                    for name, hold in zip(names, holds):
                        value = namespace.get(name, missing)
                        if value is not hold and not (type(hold) is _Ref and value is not None and hold() is value):
                            return False
                if cells:
                    for cell, hold in zip(owner.__closure__, cells):
                        try:
                            value = cell.cell_contents
                        except ValueError:
                            value = missing
                        if value is not hold and not (type(hold) is _Ref and value is not None and hold() is value):
                            return False
                if snapshot is None:
                    if attributes:
                        return False
                elif not _same_mapping(attributes, snapshot):
                    return False
            elif what == _ATTRIBUTES:
                for name, hold in zip(check[2], check[3]):
                    if not _same(hold, getattr(owner, name)):
                        return False
            elif what == _MAPPING:
                if not _same_mapping(owner.__dict__, check[2]):
                    return False
            else:  # _PICKLE: owner is the value
                data = _cloud_dumps(owner) if check[3] else pickle.dumps(owner, protocol=PROTOCOL)
                if data != check[2]:
                    return False
        return True
    except Exception:
        return False


def _same_mapping(mapping: Any, snapshot: Dict[str, Any]) -> bool:
    if len(mapping) != len(snapshot):
        return False
    for name, hold in snapshot.items():
        if not _same(hold, mapping.get(name, _MISSING)):
            return False
    return True


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
    can do it faithfully (nothing pickled by reference to ``__main__`` or ``__mp_main__``,
    which workers lack),
    cloudpickle otherwise."""
    packing.futures, packing.index_of = [], {}
    try:
        try:
            data = pickle.dumps((args, kwargs), protocol=PROTOCOL)
            if not names_main(data):  # nothing of __main__, __mp_main__ or <run_path>
                return data, packing.futures
        except Exception:
            pass
        packing.futures, packing.index_of = [], {}
        try:
            return _cloud_dumps((args, kwargs)), packing.futures
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
    func_key, func_bytes, args, _ = function_for_call(func, tuple(args))
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
        call_bytes = _cloud_dumps(call)
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


def loaded_numpy() -> Any:
    """numpy if this process has imported it, else None (numpy is not imported for the question).
    An import of numpy still running on another thread is waited for (``import`` takes the
    module's import lock): ``sys.modules`` holds the module from the start of its import, and
    reading it from there would give a module without ``ndarray`` yet."""
    if "numpy" not in sys.modules:
        return None
    import numpy

    return numpy


def is_array(value: Any) -> bool:
    """Whether ``value`` is a numpy array (numpy is not imported for the question)."""
    numpy = loaded_numpy()
    return numpy is not None and isinstance(value, numpy.ndarray)


def _argument_error(func: Any, call: Tuple[tuple, Dict[str, Any]]) -> TypeError:
    """A TypeError naming the first argument that does not pickle, and why."""
    named: List[Tuple[str, Any]] = [(f"argument {i}", v) for i, v in enumerate(call[0])]
    named += [(f"keyword argument {k!r}", v) for k, v in call[1].items()]
    for what, value in named:
        try:
            _cloud_dumps(value)
        except Exception as exc:
            if _is_asyncio_awaitable(value):  # no task waits for it, in a thread either
                hint = "it is not a hetflow future, which a task waits for: await it and pass its value"
            else:
                hint = "use executor='thread' for it"
            return TypeError(
                f"hetflow: cannot send {what} of {_describe(func)} ({reprlib.repr(value)}) to a process worker: "
                f"{exc}; {hint}"
            )
    return TypeError(f"hetflow: cannot send the arguments of {_describe(func)} to a process worker")


def _is_asyncio_awaitable(value: Any) -> bool:
    """An asyncio future or task, or a coroutine."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and (asyncio.isfuture(value) or asyncio.iscoroutine(value))


# -- values ---------------------------------------------------------------------------------------
def dumps_value(value: Any) -> bytes:
    """Pickles a value for a worker (a thread task's result that a process task depends on).

    cloudpickle, so objects of classes from ``__main__`` travel too; TypeError if impossible.
    """
    try:
        return _cloud_dumps(value)
    except Exception as exc:
        raise TypeError(
            f"hetflow: cannot send a value of type {type_name(type(value))} to a process worker: {exc}"
        ) from exc


def _reduce_writeable(array: Any) -> Any:
    """A numpy array's reduction that unpickles as a writeable array: protocol 5 brings a
    read-only array (an argument, a view of one, a ``broadcast_to`` view) back read-only, where
    every other process pool (pickle's default protocol) gives the caller arrays of its own."""
    if not array.flags.writeable:
        array = array.copy(order="K")
    return array.__reduce_ex__(PROTOCOL)


class _ReadOnlyBuffer(Exception):
    """Stops a result's pickling at its first read-only buffer (of an array, most likely)."""


def _in_band_if_writeable(buffer: Any) -> bool:
    """A ``buffer_callback`` told of each contiguous array's buffer as it is pickled: a writeable
    one goes in-band, as without a callback; a read-only one makes ``dumps_result`` start again
    with ``_dumps_writeable``."""
    if memoryview(buffer).readonly:
        raise _ReadOnlyBuffer
    return True


_writeable_picklers: Dict[Any, Any] = {}


def _dumps_writeable(value: Any, pickler: Any, numpy: Any) -> bytes:
    """``value`` pickled by (a subclass of) ``pickler``, its plain numpy arrays coming back
    writeable at any depth (in a tuple, a dict, an object's attributes; ``_reduce_writeable``).
    The subclass's ``dispatch_table`` does it: the C pickler reads it as it is made."""
    cls = _writeable_picklers.get(pickler)
    if cls is None:
        import copyreg

        table = getattr(pickler, "dispatch_table", None)
        table = ChainMap({numpy.ndarray: _reduce_writeable}, copyreg.dispatch_table if table is None else table)
        cls = _writeable_picklers[pickler] = type("WriteablePickler", (pickler,), {"dispatch_table": table})
    return _dumps_with(cls, value)


def dumps_result(value: Any) -> bytes:
    """Pickles a task's return value in the worker: pickle, else cloudpickle (a lambda, say).
    Its plain numpy arrays unpickle writeable, read-only ones included (``_reduce_writeable``).

    Raises TypeError naming the value's type when neither can.
    """
    numpy = loaded_numpy()
    try:
        if numpy is None or type(value) in _ATOMS:
            return pickle.dumps(value, protocol=PROTOCOL)
        try:
            return pickle.dumps(value, protocol=PROTOCOL, buffer_callback=_in_band_if_writeable)
        except _ReadOnlyBuffer:
            return _dumps_writeable(value, pickle.Pickler, numpy)
    except Exception:
        pass
    try:
        if numpy is None:
            return _cloud_dumps(value)
        return _dumps_writeable(value, _cloud_pickler(), numpy)
    except Exception as exc:
        part = find_nested(value, _does_not_pickle, limit=10_000)
        where = f" (its part {part[0]}, of type {type_name(type(part[1]))})" if part is not None and part[0] else ""
        culprit = part[1] if part is not None else value
        if type(culprit).__module__ == "hetflow._future":  # a future of a task it submitted here
            # Said as for an argument ("pass it as an argument of a task instead"), which a
            # returned future is not.
            at = f" (at {part[0]})" if part is not None and part[0] else ""
            raise TypeError(
                f"hetflow: the task returned a hetflow.Future{at}, of a task it submitted in its worker process: a "
                "future cannot travel back to the program; return its value (future.result()) instead"
            ) from exc
        raise TypeError(
            f"hetflow: the task's result of type {type_name(type(value))} cannot be pickled{where}: {exc}"
        ) from exc


_WALK_ATOMS = (int, float, complex, bool, str, bytes, type(None))
_WALKED = (list, tuple, dict, set, frozenset)


def find_nested(
    value: Any, wanted: Callable[[Any], bool], limit: Optional[int] = None
) -> Optional[Tuple[str, Any]]:
    """``(path, item)`` of the first item that is ``wanted``: ``value`` itself (path ``""``) or
    one inside its lists, tuples, dicts (keys and values) and sets, at any depth (path
    ``[0]['x']``); None if there is none (among the first ``limit`` items looked at, if given)."""
    visited = set()
    stack: List[Tuple[str, Any]] = [("", value)]
    while stack and (limit is None or limit > 0):
        path, item = stack.pop()
        if type(item) in _WALK_ATOMS:
            continue
        if limit is not None:
            limit -= 1
        if wanted(item):
            return path, item
        if not isinstance(item, _WALKED) or id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                children += [(f"{path}<key {key!r}>", key), (f"{path}[{key!r}]", child)]
        elif isinstance(item, (set, frozenset)):
            children = [(f"{path}<an item of a set>", child) for child in item]
        else:
            children = [(f"{path}[{i}]", child) for i, child in enumerate(item)]
        stack.extend(reversed(children))
    return None


def _does_not_pickle(item: Any) -> bool:
    if isinstance(item, _WALKED):
        return False  # its parts are looked at instead
    try:
        pickle.dumps(item, protocol=PROTOCOL)
    except Exception:
        try:
            _cloud_dumps(item)
        except Exception:
            return True
    return False


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


def rebuilt_exception(kind: type, args: tuple, state: Dict[str, Any]) -> BaseException:
    """An exception of ``kind`` with these ``args`` and attributes, made without calling its
    ``__init__``, whose parameters need not be its args (pickle would call it with them)."""
    exception = kind.__new__(kind, *args)
    exception.args = args
    exception.__dict__.update(state)
    return exception


class ExceptionAsItIs:
    """Pickles ``exception`` through ``rebuilt_exception``: for a type whose ``__init__`` does
    not take its args back."""

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception

    def __reduce__(self) -> Tuple[Any, ...]:
        exception = self.exception
        return rebuilt_exception, (type(exception), exception.args, dict(getattr(exception, "__dict__", {})))


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
