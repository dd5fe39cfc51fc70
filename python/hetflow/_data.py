"""numpy arrays registered with the engine: handles, shared allocation, host access."""
from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hetflow._arrays import check_mode, span


def _root(array: Any) -> Any:
    """The array that owns (or wraps the owner of) the memory: it outlives every view."""
    import numpy

    while isinstance(array.base, numpy.ndarray):
        array = array.base
    return array


class HandleRegistry:
    """One engine data handle per array buffer (by address and extent) of a runtime.

    A handle lives as long as the array that owns the memory; then it is let go once the tasks
    using it are done. Views of different extents are different data for the engine: tasks on
    overlapping but unequal views are not ordered against each other.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._handles: Dict[Tuple[int, int], Tuple[Any, Any]] = {}
        self._acquired: Dict[Tuple[int, int], List[Any]] = {}

    def handle(self, array: Any, mode: str) -> Tuple[Any, int, int]:
        """The handle of ``array``'s buffer, with its address and size."""
        if "W" in mode and not array.flags.writeable:
            raise ValueError(f"hetflow: access mode {mode} on a read-only array")
        address, nbytes, _ = span(array)
        key = (address, nbytes)
        with self._lock:
            entry = self._handles.get(key)
            if entry is not None and entry[1]() is not None:
                return entry[0], address, nbytes
            root = _root(array)
            handle = self._engine.register_array(address, max(nbytes, 1), f"array@{address:#x}")
            self._handles[key] = (handle, weakref.ref(root))
        weakref.finalize(root, self._forget, key, handle)
        return handle, address, nbytes

    def _forget(self, key: Tuple[int, int], handle: Any) -> None:
        with self._lock:
            entry = self._handles.get(key)
            if entry is not None and entry[0] is handle:
                del self._handles[key]
        self._engine.unregister_async(handle)

    def acquire(self, array: Any, mode: str) -> Any:
        handle, address, nbytes = self.handle(array, mode)
        acquisition = self._engine.acquire(handle, mode)
        with self._lock:
            self._acquired.setdefault((address, nbytes), []).append(acquisition)
        return acquisition

    def release(self, array: Any, acquisition: Optional[Any] = None) -> None:
        address, nbytes, _ = span(array)
        with self._lock:
            held = self._acquired.get((address, nbytes), [])
            if acquisition is None:
                if not held:
                    raise ValueError("hetflow.release: this array is not acquired")
                acquisition = held.pop()
            elif acquisition in held:
                held.remove(acquisition)
            else:
                return  # released already
        acquisition.release()


class Acquired:
    """Host access to an array that tasks may be using; from ``hetflow.acquire``.

    >>> with hetflow.acquire(a, "RW") as view:   # waits for earlier tasks on a
    ...     view[0] = 1.0                          # later tasks on a wait for the release
    """

    def __init__(self, registry: HandleRegistry, array: Any, acquisition: Any) -> None:
        self.array = array
        self._registry = registry
        self._acquisition = acquisition

    def release(self) -> None:
        self._registry.release(self.array, self._acquisition)

    def __enter__(self) -> Any:
        return self.array

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- arrays in shared memory ----------------------------------------------------------------------
def empty(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """A numpy array in memory that worker processes share: process tasks use it without copies.

    >>> a = hetflow.empty((1000, 1000))
    >>> hetflow.submit(fill, hetflow.W(a), 1.0)
    """
    import numpy

    dtype = numpy.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if order not in ("C", "F"):
        raise ValueError(f"hetflow.empty: order must be 'C' or 'F', not {order!r}")
    count = 1
    for extent in shape:
        if not isinstance(extent, (int, numpy.integer)) or extent < 0:
            raise ValueError(f"hetflow.empty: bad shape {shape!r}")
        count *= int(extent)
    from hetflow import _hetflow

    raw = _hetflow.shared_bytes(count * dtype.itemsize)
    return numpy.ndarray(shape, dtype=dtype, buffer=raw, order=order)


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """Like ``numpy.zeros``, in shared memory (see ``hetflow.empty``)."""
    array = empty(shape, dtype, order)
    array.fill(0)
    return array


def ones(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """Like ``numpy.ones``, in shared memory (see ``hetflow.empty``)."""
    array = empty(shape, dtype, order)
    array.fill(1)
    return array


def array(data: Any, dtype: Any = None) -> Any:
    """A copy of ``data`` (anything numpy.asarray takes) in shared memory (see ``hetflow.empty``)."""
    import numpy

    source = numpy.asarray(data, dtype=dtype)
    copy = empty(source.shape, source.dtype)
    copy[...] = source
    return copy


def names_with_modes(func: Any, access: Dict[str, str], args: Sequence[Any], kwargs: Dict[str, Any]) -> Tuple[tuple, dict]:
    """Wraps the arguments named in ``access`` (``{"a": "RW"}``) in Access objects."""
    import inspect

    from hetflow._arrays import Access

    bound = inspect.signature(func).bind_partial(*args, **kwargs)
    for name, mode in access.items():
        if name in bound.arguments:
            bound.arguments[name] = Access(bound.arguments[name], mode)
    return bound.args, bound.kwargs
