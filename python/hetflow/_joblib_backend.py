"""The ``"hetflow"`` backend of the real joblib (``hetflow.joblib.register()``).

Each ``Parallel`` call checks out a pool of exactly ``n_jobs`` workers (a ``hetflow.Executor``)
and gives it back at the end, so that the next loop with the same settings finds its workers
started, as joblib's own process backend does. A pool is never shared by two calls running at
once: aborting one call (a failed call, ``timeout=``, a generator closed early) ends that call's
worker processes only, and nothing of it keeps running.

Large numpy arrays (``max_nbytes``, ``mmap_mode``) are copied once per call into shared memory
and reach every batch of the call as a mapping of that copy: read-only with ``mmap_mode="r"``
(joblib's default), private to the task with ``"c"``, shared with ``"r+"``/``"w+"``. Arrays
already in hetflow's shared memory (``hetflow.empty`` and friends) are not copied at all.
"""
from __future__ import annotations

import io
import mmap
import os
import pickle
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from hetflow import _runtime
from hetflow._future import Future
from hetflow._serialize import loaded_numpy

registered = False  # in this process: set by hetflow.joblib.register()

# Pools kept for later loops once their call is over; more are shut down, oldest first.
_IDLE_POOLS_KEPT = 2
_MMAP_MODES = ("r", "r+", "w+", "c")


def backend_class() -> type:
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        SequentialBackend,
        ThreadingBackend,
    )

    class HetflowBackend(AutoBatchingMixin, ParallelBackendBase):
        """Runs joblib's batches of calls as hetflow tasks on a pool of ``n_jobs`` workers.

        Batches grow while they take less than 0.2 s, as with joblib's own process backends.
        ``n_jobs=1`` runs the calls in this process, as joblib's backends do. ``prefer="threads"``
        gives a pool of threads; otherwise the pool has the kind of workers hetflow runs (worker
        processes on a Python with a GIL). Backend options (``joblib.parallel_config(backend=
        "hetflow", ...)``): ``initializer``/``initargs`` run once in each worker (default:
        ``hetflow.init``'s), ``inner_max_num_threads`` limits BLAS/OpenMP threads in the worker
        processes (default: CPUs // n_jobs, unless the variables are set already).
        """

        supports_retrieve_callback = True
        supports_timeout = True
        supports_inner_max_num_threads = True
        uses_threads = False
        supports_sharedmem = False

        def __init__(
            self,
            nesting_level: Optional[int] = None,
            inner_max_num_threads: Optional[int] = None,
            initializer: Optional[Callable[..., Any]] = None,
            initargs: tuple = (),
            **backend_kwargs: Any,
        ) -> None:
            super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **backend_kwargs)
            _check_initializer(initializer, initargs)
            self.initializer = initializer
            self.initargs = initargs
            self._settings: Optional[_PoolSettings] = None
            self._pool: Optional[Any] = None
            self._shared: Optional[_SharedInputs] = None
            self._pending: set = set()
            self._pending_lock = threading.Lock()

        def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
            if n_jobs == 0:
                raise ValueError("n_jobs == 0 in Parallel has no meaning")
            if n_jobs is None:
                return 1
            if n_jobs < 0:
                return max(_cpus() + 1 + n_jobs, 1)
            return n_jobs

        def configure(
            self,
            n_jobs: int = 1,
            parallel: Any = None,
            prefer: Optional[str] = None,
            require: Optional[str] = None,
            max_nbytes: Optional[int] = None,
            mmap_mode: Optional[str] = None,
            initializer: Optional[Callable[..., Any]] = None,
            initargs: Optional[tuple] = None,
            **ignored: Any,  # temp_folder, verbose, context: joblib's own pools' settings
        ) -> int:
            n_jobs = self.effective_n_jobs(n_jobs)
            if n_jobs == 1:
                raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
            if mmap_mode is not None and mmap_mode not in _MMAP_MODES:
                raise ValueError(f"hetflow backend: mmap_mode must be one of {_MMAP_MODES} or None, not {mmap_mode!r}")
            self.parallel = parallel
            self._release_pool()
            kind = "thread" if prefer == "threads" else _default_kind()
            if initializer is not None or initargs is not None:  # Parallel(initializer=...) over the backend's
                _check_initializer(initializer, initargs)
                initargs = () if initargs is None else initargs
            else:
                initializer, initargs = self.initializer, self.initargs
            if initializer is None:
                initializer, initargs = _init_initializer()
            environment = self._prepare_worker_env(n_jobs) if kind == "process" else {}
            self._settings = _PoolSettings(kind, n_jobs, initializer, initargs, environment)
            self._pool = _pools.take(self._settings)
            large = max_nbytes if mmap_mode is not None else None
            self._shared = _SharedInputs(large, mmap_mode) if kind == "process" else None
            return n_jobs

        def submit(self, func: Callable[[], Any], callback: Optional[Callable[[Any], Any]] = None) -> Future:
            if self._pool is None:
                if self._settings is None:
                    raise RuntimeError("hetflow backend: submit() before configure()")
                self._pool = _pools.take(self._settings)
            if self._shared is not None:
                future = self._pool.submit(_run_pickled_batch, self._shared.dumps(func))
            else:
                future = self._pool.submit(_run_batch, func)
            with self._pending_lock:
                self._pending.add(future)
            future.add_done_callback(self._forget)
            if callback is not None:
                future.add_done_callback(callback)
            return future

        def _forget(self, future: Future) -> None:
            with self._pending_lock:
                self._pending.discard(future)

        def retrieve_result_callback(self, future: Future) -> Any:
            return future.result()

        def retrieve_result(self, out: Future, timeout: Optional[float] = None) -> Any:
            return out.result(timeout)

        def abort_everything(self, ensure_ready: bool = True) -> None:
            """Cancels the batches not started; when batches still run, gives up on this call's
            pool: its worker processes are ended, or its threads let the calls finish, detached,
            their results dropped (the interpreter does not wait for them at exit, as for the
            threads of joblib's own backend)."""
            with self._pending_lock:
                pending = list(self._pending)
                self._pending.clear()
            running = [future for future in pending if not future.cancel() and not future.done()]
            pool = self._pool
            if running and pool is not None:
                self._pool = None
                pool._terminate("joblib gave up on the loop (a call failed, it timed out, or its output was closed)")
            if not ensure_ready:
                self._release_pool()

        def terminate(self) -> None:
            self._release_pool()
            self._shared = None
            self.reset_batch_stats()

        def _release_pool(self) -> None:
            pool, self._pool = self._pool, None
            if pool is not None and self._settings is not None:
                _pools.give_back(self._settings, pool)

        def get_nested_backend(self) -> Any:
            return ThreadingBackend(nesting_level=self.nesting_level + 1), None

    return HetflowBackend


# -- in the workers -------------------------------------------------------------------------------
def _register_here() -> None:
    global registered
    if not registered:
        from hetflow import joblib as hetflow_joblib

        hetflow_joblib.register()


def _run_batch(batch: Callable[[], Any]) -> Any:
    """Runs one of joblib's batches of calls; a worker registers the backend at its first batch."""
    _register_here()
    return batch()


def _run_pickled_batch(payload: bytes) -> Any:
    """A batch pickled with its arrays replaced by references to shared memory or their files."""
    _register_here()
    _memmaps_travel_as_arrays()
    return pickle.loads(payload)()


_memmap_reducer_set = False


def _memmaps_travel_as_arrays() -> None:
    """In a worker, a ``numpy.memmap`` (a mapped input, or a view of one, returned at any depth of
    a result) is pickled as a plain array: the host has no file behind it, and numpy pickles a
    memmap without its byte order. Through ``copyreg``, which the pickler looks up by exact
    type, so results without memmaps cost nothing more."""
    global _memmap_reducer_set
    if _memmap_reducer_set:
        return
    import copyreg

    import numpy

    from hetflow._serialize import PROTOCOL

    copyreg.pickle(numpy.memmap, lambda mapped: numpy.asarray(mapped).__reduce_ex__(PROTOCOL))
    _memmap_reducer_set = True


def _reopen(filename: str, mode: str, start: int, nbytes: int, dtype: Any, shape: tuple, strides: tuple, first: int) -> Any:
    """The worker's view of an input that is a file-backed ``numpy.memmap`` (or a view of one):
    the same file, mapped again, so that writes reach it."""
    import numpy

    raw = numpy.memmap(filename, dtype=numpy.uint8, mode=cast(Any, mode), offset=start, shape=(nbytes,))
    return numpy.ndarray(shape, dtype=dtype, buffer=raw, offset=first, strides=strides).view(numpy.memmap)


def _attach(location: str, dtype: Any, shape: tuple, strides: tuple, first: int, mode: str) -> Any:
    """The worker's view of a shared input array: a ``numpy.memmap`` over the host's copy."""
    import numpy

    from hetflow import _arrays

    segment_id, fd, pid, offset, nbytes = (int(field) for field in location.split()[:5])
    if mode == "c":  # writes stay in this mapping: pages are copied as they are written
        with open(f"/proc/{pid}/fd/{fd}", "rb", buffering=0) as file:
            mapping = mmap.mmap(file.fileno(), os.fstat(file.fileno()).st_size, access=mmap.ACCESS_COPY)
    else:
        mapping = _arrays._mapping(segment_id, fd, pid)
    buffer = memoryview(mapping)[offset : offset + nbytes]
    array = numpy.ndarray(shape, dtype=dtype, buffer=buffer, offset=first, strides=strides)
    if mode == "r":
        array.flags.writeable = False
    return array.view(numpy.memmap)


# -- in the host ----------------------------------------------------------------------------------
class _SharedInputs:
    """The large arrays of one Parallel call, each copied once into shared memory; the copies
    live as long as the call (this object)."""

    def __init__(self, max_nbytes: Optional[int], mmap_mode: Optional[str]) -> None:
        self.max_nbytes = max_nbytes
        self.mmap_mode = mmap_mode
        self._lock = threading.Lock()
        # id(array) -> (array, the shared memory it travels in, its reduction): holding the array
        # keeps the id its own, holding the shared copy keeps it alive for as long as the call.
        self._reduced: Dict[int, Tuple[Any, Any, tuple]] = {}

    def dumps(self, batch: Any) -> bytes:
        buffer = io.BytesIO()
        _batch_pickler()(buffer, self).dump(batch)
        return buffer.getvalue()

    def reduce(self, array: Any) -> Optional[tuple]:
        """How ``array`` travels: a reference to its file or to shared memory, or None (pickled whole)."""
        if array.nbytes == 0 or array.dtype.hasobject:
            return None
        by_file = _by_file(array)
        if by_file is not None:
            return by_file
        if self.max_nbytes is None or array.nbytes <= self.max_nbytes:
            return None
        from hetflow import _hetflow
        from hetflow._arrays import span

        with self._lock:
            entry = self._reduced.get(id(array))
            if entry is None:
                shared = self._shared(array, self.mmap_mode in ("r+", "w+"))
                low, nbytes, first = span(shared)
                location = _hetflow.locate_shared(low, nbytes)
                reduction = (_attach, (location, shared.dtype, shared.shape, shared.strides, first, self.mmap_mode))
                entry = self._reduced[id(array)] = (array, shared, reduction)
        return entry[2]

    @staticmethod
    def _shared(array: Any, written: bool) -> Any:
        """``array`` if it is in hetflow's shared memory already (and may be written there, where
        the workers' mapping is ``written``), else a copy there."""
        import numpy

        from hetflow import _data, _hetflow

        from hetflow._arrays import span

        low, nbytes, _ = span(array)
        if _hetflow.locate_shared(low, nbytes) is not None and (array.flags.writeable or not written):
            return array
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        copy = _data.empty(array.shape, array.dtype, order=order)
        numpy.copyto(copy, array)
        return copy


def _by_file(array: Any) -> Optional[tuple]:
    """A view of a file-backed ``numpy.memmap`` travels as where it is in that file (any size), as
    joblib sends it: the worker maps the file again, in the memmap's own mode."""
    import numpy

    from hetflow._arrays import span

    # The memmap that made the mapping: its data is at `offset` in the file (views of it carry
    # the same offset and filename, but start elsewhere).
    backing = array
    while isinstance(backing, numpy.ndarray) and not isinstance(backing.base, mmap.mmap):
        backing = backing.base
    if not isinstance(backing, numpy.memmap) or not backing.filename or backing.offset is None:
        return None
    low, nbytes, first = span(array)
    start = backing.offset + (low - backing.ctypes.data)
    mode = {"w+": "r+", "readonly": "r", "write": "r+", "readwrite": "r+", "copyonwrite": "c"}.get(backing.mode, backing.mode)
    return (_reopen, (backing.filename, mode, start, nbytes, array.dtype, array.shape, array.strides, first))


def _check_initializer(initializer: Any, initargs: Any) -> None:
    if initializer is not None and not callable(initializer):
        raise ValueError(f"hetflow backend: initializer must be callable (or None), not {initializer!r}")
    if initargs is not None and not isinstance(initargs, tuple):
        raise ValueError(f"hetflow backend: initargs must be a tuple, not {initargs!r}")


_pickler_class: Optional[type] = None


def _batch_pickler() -> type:
    """hetflow's cloudpickle pickler (the functions of ``__mp_main__``, ``<run_path>`` and
    ``lru_cache`` ones of ``__main__`` sent by value), with large numpy arrays sent as references
    to shared memory."""
    global _pickler_class
    if _pickler_class is None:
        from hetflow._serialize import _pickler_class as hetflow_pickler_class

        base: Any = hetflow_pickler_class()

        class BatchPickler(base):
            def __init__(self, file: Any, shared: _SharedInputs) -> None:
                super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
                self._shared = shared

            def reducer_override(self, obj: Any) -> Any:
                numpy = loaded_numpy()
                # A subclass (a masked array) is pickled whole: its mask would not travel in shared memory.
                if numpy is not None and (type(obj) is numpy.ndarray or isinstance(obj, numpy.memmap)):
                    reduced = self._shared.reduce(obj)
                    if reduced is not None:
                        return reduced
                return super().reducer_override(obj)

        _pickler_class = BatchPickler
    return _pickler_class


class _PoolSettings:
    """What makes two pools interchangeable."""

    __slots__ = ("kind", "n_jobs", "initializer", "initargs", "environment", "_key")

    def __init__(
        self, kind: str, n_jobs: int, initializer: Optional[Callable[..., Any]], initargs: tuple, environment: dict
    ) -> None:
        self.kind = kind
        self.n_jobs = n_jobs
        self.initializer = initializer
        self.initargs = initargs
        self.environment = environment
        self._key = (kind, n_jobs, initializer, _hashable(initargs), tuple(sorted(environment.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PoolSettings) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def make(self) -> Any:
        from hetflow.executor import Executor

        return Executor(
            self.n_jobs, self.kind, initializer=self.initializer, initargs=self.initargs,
            _worker_environment=self.environment,
        )


def _hashable(value: Any) -> Any:
    """``value`` if it can be compared by equality in a key, else its identity."""
    try:
        hash(value)
    except TypeError:
        return ("object at", id(value))
    return value


class _Pools:
    """Pools not in use by a call, by settings: a call takes one (or starts one) and gives it back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: "OrderedDict[Tuple[_PoolSettings, int], Tuple[_PoolSettings, Any]]" = OrderedDict()
        self._pid = os.getpid()

    def take(self, settings: _PoolSettings) -> Any:
        with self._lock:
            self._forget_after_fork()
            for key, (kept, pool) in self._idle.items():
                if kept == settings and not pool._shut_down:
                    del self._idle[key]
                    return pool
        return settings.make()

    def give_back(self, settings: _PoolSettings, pool: Any) -> None:
        if pool._shut_down:
            return
        with self._lock:
            self._forget_after_fork()
            self._idle[(settings, id(pool))] = (settings, pool)
            surplus: List[Any] = []
            while len(self._idle) > _IDLE_POOLS_KEPT:
                surplus.append(self._idle.popitem(last=False)[1][1])
        for old in surplus:
            old.shutdown(wait=False)

    def _forget_after_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's pools are not here
            self._idle.clear()
            self._pid = os.getpid()


_pools = _Pools()


def _cpus() -> int:
    """What ``n_jobs=-1`` means: the workers of the running hetflow runtime, else the CPUs hetflow
    would use (``HETFLOW_NCPUS``, else those this process may run on)."""
    runtime = _runtime._current
    if runtime is not None and not runtime._closed:
        return runtime.nprocs if runtime.executor == "process" and runtime.nprocs else runtime.ncpus
    return cast(int, _runtime.Settings().resolved().ncpus)


def _default_kind() -> str:
    runtime = _runtime._current
    if runtime is not None and not runtime._closed:
        return runtime.executor
    return _runtime.default_executor()


def _init_initializer() -> Tuple[Optional[Callable[..., Any]], tuple]:
    runtime = _runtime._current
    if runtime is not None and not runtime._closed:
        return runtime.initializer, runtime.initargs
    return None, ()
