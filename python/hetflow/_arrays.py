"""numpy arrays as task data: access modes, and how arrays reach worker processes.

Imported by worker processes too, so it loads numpy only when an array is actually met.
"""
from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from typing import Any, List, Tuple

MODES = ("R", "W", "RW")


def check_mode(mode: str) -> str:
    if not isinstance(mode, str) or mode.upper() not in MODES:
        raise ValueError(f"hetflow: unknown access mode {mode!r}; use 'R', 'W' or 'RW'")
    return mode.upper()


class Access:
    """An argument with the access mode its task has on it: ``hetflow.RW(a)``.

    The task receives the array itself. Tasks that write an array run after the earlier tasks
    that use it; later tasks that use it run after them and see the writes.
    """

    __slots__ = ("value", "mode")

    def __init__(self, value: Any, mode: str) -> None:
        self.value = value
        self.mode = check_mode(mode)

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
    """Stands for the i-th array of a task sent to a worker process; the worker maps it."""

    __slots__ = ("index", "dtype", "shape", "strides", "first")

    def __init__(self, index: int, dtype: str, shape: tuple, strides: tuple, first: int) -> None:
        self.index = index
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.first = first

    def __reduce__(self) -> Any:
        return (ArrayRef, (self.index, self.dtype, self.shape, self.strides, self.first))

    @staticmethod
    def of(index: int, array: Any) -> "ArrayRef":
        return ArrayRef(index, array.dtype.str, array.shape, array.strides, span(array)[2])


# -- in a worker process --------------------------------------------------------------------------
_MAPPINGS_KEPT = 64
_mappings: "OrderedDict[int, mmap.mmap]" = OrderedDict()


def _mapping(segment_id: int, fd: int, pid: int) -> mmap.mmap:
    mapping = _mappings.get(segment_id)
    if mapping is not None:
        _mappings.move_to_end(segment_id)
        return mapping
    with open(f"/proc/{pid}/fd/{fd}", "r+b", buffering=0) as file:
        mapping = mmap.mmap(file.fileno(), os.fstat(file.fileno()).st_size)
    _mappings[segment_id] = mapping
    while len(_mappings) > _MAPPINGS_KEPT:
        _mappings.popitem(last=False)  # arrays still using it keep the memory mapped
    return mapping


def materialize(table: bytes, refs: List["ArrayRef"]) -> List[Any]:
    """The arrays of a RUN message: its array table (one "id fd pid offset nbytes" line each)."""
    import numpy

    arrays = []
    lines = bytes(table).decode("ascii").splitlines()
    for line, ref in zip(lines, refs):
        segment_id, fd, pid, offset, nbytes = (int(field) for field in line.split())
        buffer = memoryview(_mapping(segment_id, fd, pid))[offset : offset + nbytes]
        arrays.append(
            numpy.ndarray(ref.shape, dtype=numpy.dtype(ref.dtype), buffer=buffer, offset=ref.first, strides=ref.strides)
        )
    return arrays
