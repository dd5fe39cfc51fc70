"""numpy arrays as task data: access modes, and how arrays reach worker processes.

Imported by worker processes too, so it loads numpy only when an array is actually met.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import reprlib
import threading
from collections import OrderedDict
from typing import Any, List, Optional, Tuple

from hetflow._errors import SettingTypeError

MODES = ("R", "W", "RW", "REDUX")
_CANONICAL_MODES = frozenset(MODES)


def check_mode(mode: str) -> str:
    if not isinstance(mode, str):
        raise SettingTypeError(f"hetflow: an access mode is a str, 'R', 'W', 'RW' or 'REDUX', not {mode!r}")
    if mode.upper() not in MODES:
        raise ValueError(f"hetflow: unknown access mode {reprlib.repr(mode)}; use 'R', 'W', 'RW' or 'REDUX'")
    return mode.upper()


class Access:
    """An argument with the access mode its task has on it: ``hetflow.RW(a)``.

    The task receives the array itself. Tasks that write an array run after the earlier tasks
    that use it; later tasks that use it run after them and see the writes.
    """

    __slots__ = ("value", "mode")

    def __init__(self, value: Any, mode: str) -> None:
        self.value = value
        self.mode = mode if type(mode) is str and mode in _CANONICAL_MODES else check_mode(mode)

    def __repr__(self) -> str:
        return f"hetflow.{self.mode}({self.value!r})"


def R(value: Any) -> Access:
    """Marks an argument as read by the task (the default for numpy arrays)."""
    return Access(value, "R")


def W(value: Any) -> Access:
    """Marks an argument as written (not read) by the task."""
    return Access(value, "W")


def RW(value: Any) -> Access:
    """Marks an argument as read and written by the task."""
    return Access(value, "RW")


def REDUX(value: Any) -> Access:
    """Marks an argument as one the task adds a contribution to, in any order with the other
    contributions (``total += ...``). One process runs such tasks one after the other, as RW;
    across MPI ranks each rank gathers its own and they are combined on the owner
    (``hetflow.mpi.set_reduction``)."""
    return Access(value, "REDUX")


class ReadOnlyCopy:
    """An ndarray subclass (a masked array, a matrix) that a process task reads (see
    ``_runtime._subclass_by_value``): pickled whole, it reaches the task read-only, as the task's
    plain arrays that it reads do, so that a write into it raises rather than change a copy that
    never comes back."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __reduce__(self) -> Any:
        return (read_only, (self.array,))


def read_only(array: Any) -> Any:
    """``array`` (an unpickled copy) made read-only, with its mask if it has one."""
    import numpy

    array.flags.writeable = False
    mask = getattr(array, "_mask", None)
    if isinstance(mask, numpy.ndarray) and mask.ndim:
        mask.flags.writeable = False
    return array


def span(array: Any) -> Tuple[int, int, int]:
    """``(lowest address, bytes spanned, offset of element 0 from the lowest address)``."""
    start = array.__array_interface__["data"][0]
    if array.size == 0:
        return start, 0, 0
    low = high = start
    for extent, stride in zip(array.shape, array.strides):
        reach = (extent - 1) * stride
        if reach < 0:
            low += reach
        else:
            high += reach
    return low, high + array.itemsize - low, start - low


class ArrayRef:
    """Stands for the i-th array of a task sent to a worker process; the worker maps it. ``dtype``:
    a dtype string, or the dtype itself when structured.

    ``together``: None, or ``(group, offset, nbytes, phase, writes)`` for a view that shares
    elements with another view of the same task and root, one of them written: the worker puts
    the views of ``group`` over one buffer of ``nbytes`` (the span covering them, its lowest byte
    at ``phase`` modulo 64), this view's lowest byte at ``offset``, so that they alias as in the
    host (see ``alias_overlapping``). ``read_only``: the task does not write the array (it reads
    it, ``R``): the worker hands it over read-only, as a thread task would get a read-only array."""

    __slots__ = ("index", "dtype", "shape", "strides", "first", "together", "read_only")

    def __init__(
        self,
        index: int,
        dtype: Any,
        shape: tuple,
        strides: tuple,
        first: int,
        together: Optional[tuple] = None,
        read_only: bool = False,
    ) -> None:
        self.index = index
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.first = first
        self.together = together
        self.read_only = read_only

    def __reduce__(self) -> Any:
        return (
            ArrayRef,
            (self.index, self.dtype, self.shape, self.strides, self.first, self.together, self.read_only),
        )

    @staticmethod
    def of(index: int, array: Any, first: Optional[int] = None) -> "ArrayRef":
        """``first``: element 0's offset from the lowest byte, when known (see ``span``)."""
        dtype = array.dtype
        # A plain dtype travels as its short string; a structured one whole (its field names,
        # offsets and nesting are not in dtype.str).
        described = dtype.str if dtype.names is None else dtype
        return ArrayRef(index, described, array.shape, array.strides, span(array)[2] if first is None else first)


# -- in a worker process --------------------------------------------------------------------------
_MAPPINGS_KEPT = 64
# segment id -> (mapping, host fd, host pid, inode): the inode tells whether the host still holds
# that segment (see forget_freed_segments).
_mappings: "OrderedDict[int, Tuple[mmap.mmap, int, int, int]]" = OrderedDict()
_mappings_lock = threading.Lock()  # the host-pipe watcher thread sweeps them
# The watcher sweeps only while the worker idles: a busy worker also looks for segments the host
# freed once its mappings hold this many bytes more than after its last look (each new shared
# array of a loop, freed by the host since, would otherwise keep its memory until 64 are mapped).
_MAPPINGS_SWEPT_ABOVE = 256 << 20
_mapped_after_sweep = 0
# The host's scratch segments (plain arrays copied for a task) come and go with its tasks: their
# mappings are kept within the bounds the host keeps the segments in (python/src/shared_memory.hpp),
# so that a freed one is not kept alive here; a larger one is unmapped when its task's arrays go.
_SCRATCH_KEPT_SEGMENT_BYTES = 4 << 20
_SCRATCH_KEPT_BYTES = 16 << 20
_scratch_mappings: "OrderedDict[int, mmap.mmap]" = OrderedDict()


def _mapping(segment_id: int, fd: int, pid: int, scratch: bool = False) -> mmap.mmap:
    if scratch:
        mapping = _scratch_mappings.get(segment_id)
        if mapping is not None:
            _scratch_mappings.move_to_end(segment_id)
            return mapping
    else:
        with _mappings_lock:
            entry = _mappings.get(segment_id)
            if entry is not None:
                _mappings.move_to_end(segment_id)
                return entry[0]
    try:
        file = open(f"/proc/{pid}/fd/{fd}", "r+b", buffering=0)
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        raise OSError(exc.errno, _out_of_descriptors(exc)) from exc
    with file:
        status = os.fstat(file.fileno())
        mapping = mmap.mmap(file.fileno(), status.st_size)
    if scratch:
        if len(mapping) <= _SCRATCH_KEPT_SEGMENT_BYTES:
            _scratch_mappings[segment_id] = mapping
            kept = sum(len(m) for m in _scratch_mappings.values())
            while kept > _SCRATCH_KEPT_BYTES:
                kept -= len(_scratch_mappings.popitem(last=False)[1])
        return mapping
    with _mappings_lock:
        _mappings[segment_id] = (mapping, fd, pid, status.st_ino)
        while len(_mappings) > _MAPPINGS_KEPT:
            _mappings.popitem(last=False)  # arrays still using it keep the memory mapped
        mapped = sum(len(entry[0]) for entry in _mappings.values())
    if mapped > _mapped_after_sweep + _MAPPINGS_SWEPT_ABOVE:
        forget_freed_segments()
    return mapping


def forget_freed_segments() -> int:
    """Drops the mappings of shared arrays the host has freed (its descriptor for the segment is
    closed, or now names another file), so that a worker does not keep their memory alive.
    Returns how many were dropped; arrays a task still holds keep their own mapping."""
    with _mappings_lock:
        entries = list(_mappings.items())
    freed = []
    for segment_id, (_, fd, pid, inode) in entries:
        try:
            alive = os.stat(f"/proc/{pid}/fd/{fd}").st_ino == inode
        except OSError:
            alive = False
        if not alive:
            freed.append(segment_id)
    global _mapped_after_sweep
    with _mappings_lock:
        for segment_id in freed:
            _mappings.pop(segment_id, None)
        _mapped_after_sweep = sum(len(entry[0]) for entry in _mappings.values())
    return len(freed)


def _out_of_descriptors(exc: OSError) -> str:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = "" if soft == resource.RLIM_INFINITY else f" (limit {soft})"
    whose = "this worker process" if exc.errno == errno.EMFILE else "the system"
    return (
        f"hetflow: cannot map a task's array: {whose} ran out of file descriptors{limit}; raise the "
        "limit (ulimit -n, or resource.setrlimit(resource.RLIMIT_NOFILE, ...) before hetflow starts) "
        "or have the task's own code keep fewer files open"
    )


def materialize(table: bytes, refs: List["ArrayRef"], copied: Optional[List[bool]] = None) -> List[Any]:
    """The arrays of a RUN message: its array table (one "id fd pid offset nbytes" line each,
    followed by " scratch" for the host's scratch segments). ``copied``, if given, gets whether
    each array is a copy in a scratch segment (not the program's own shared memory)."""
    import numpy

    arrays = []
    lines = bytes(table).decode("ascii").splitlines()
    for line, ref in zip(lines, refs):
        fields = line.split()
        segment_id, fd, pid, offset, nbytes = (int(field) for field in fields[:5])
        scratch = fields[5:] == ["scratch"]
        if copied is not None:
            copied.append(scratch)
        mapping = _mapping(segment_id, fd, pid, scratch)
        if scratch:  # an object of its own, which the worker watches for references the task kept
            buffer: Any = (ctypes.c_char * nbytes).from_buffer(mapping, offset)
        else:
            buffer = memoryview(mapping)[offset : offset + nbytes]
        arrays.append(
            numpy.ndarray(ref.shape, dtype=numpy.dtype(ref.dtype), buffer=buffer, offset=ref.first, strides=ref.strides)
        )
    return arrays


def alias_overlapping(refs: List["ArrayRef"], arrays: List[Any], copied: List[bool]) -> List[Tuple[Any, Any]]:
    """Puts the copied views of each group (``ArrayRef.together``) over one buffer of their own,
    filled from their copies, so that what the task writes through one view shows through the
    others, as in the host. Replaces them in ``arrays``; returns the ``(copy, view)`` pairs to
    copy back once the task has returned (the written views: the host copies their elements
    home from their copies, each copy holding the same final values where views overlap)."""
    groups: dict = {}
    for i, ref in enumerate(refs):
        if ref.together is not None and copied[i]:
            groups.setdefault(ref.together[0], []).append(i)
    back: List[Tuple[Any, Any]] = []
    for members in groups.values():
        if len(members) < 2:
            continue  # the others are in shared memory: they alias there already
        import numpy

        nbytes, phase = refs[members[0]].together[2:4]
        raw = numpy.empty(nbytes + 128, dtype=numpy.uint8)
        start = (-raw.ctypes.data) % 64 + phase  # aligned as the host's span is
        buffer = raw[start : start + nbytes]
        for i in members:
            ref, copy = refs[i], arrays[i]
            offset = ref.together[1] + ref.first
            view = numpy.ndarray(ref.shape, dtype=copy.dtype, buffer=buffer, offset=offset, strides=ref.strides)
            view[...] = copy  # every copy came from the host's memory at once: they agree where they meet
            if ref.together[4]:
                back.append((copy, view))
            arrays[i] = view
    return back
