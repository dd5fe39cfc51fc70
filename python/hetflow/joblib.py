"""joblib-style parallel loops on hetflow, as StarPU's Python interface has them, and a backend
that runs the real joblib on hetflow.

>>> from math import log10
>>> from hetflow import joblib
>>> joblib.Parallel(n_jobs=2)(joblib.delayed(log10)(10 ** i) for i in range(10))
[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]

The calls are cut into ``n_jobs`` blocks of consecutive calls (the first ``len % n_jobs`` blocks
one call longer); each block is one task; results come back in input order.
``delayed(f)(A, B)`` given alone, with numpy arrays (or generators) as arguments, instead cuts
those arguments into ``n_jobs`` parts along their first axis and calls ``f`` on each part.

To run existing joblib code on hetflow::

    hetflow.joblib.register()
    with joblib.parallel_config(backend="hetflow"):
        joblib.Parallel(n_jobs=-1)(...)
"""
from __future__ import annotations

import types
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import hetflow
from hetflow import _runtime
from hetflow._future import Future, wait_failing_fast
from hetflow._serialize import is_array


class DelayedCall(NamedTuple):
    """A call to make later: what ``delayed(f)(*args, **kwargs)`` returns."""

    function: Callable[..., Any]
    args: tuple
    kwargs: dict


def delayed(function: Callable[..., Any]) -> Callable[..., DelayedCall]:
    """``delayed(f)(*args, **kwargs)`` describes the call ``f(*args, **kwargs)`` for Parallel."""
    if not callable(function):
        raise TypeError(f"hetflow.joblib.delayed: {function!r} is not callable")

    def describe(*args: Any, **kwargs: Any) -> DelayedCall:
        return DelayedCall(function, args, kwargs)

    return describe


def cpu_count() -> int:
    """The number of CPU workers of the runtime."""
    return _runtime.current().ncpus


def block_count(n_jobs: Optional[int]) -> int:
    """How many blocks ``n_jobs`` means: negative counts from the number of CPUs (-1: all)."""
    if n_jobs is None:
        return 1
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool):
        raise TypeError(f"hetflow.joblib: n_jobs must be an int, not {n_jobs!r}")
    if n_jobs == 0:
        raise ValueError("hetflow.joblib: n_jobs=0 has no meaning; use 1 or more, or -1 for all CPUs")
    if n_jobs > 0:
        return n_jobs
    cpus = cpu_count()
    if n_jobs < -cpus - 1:
        raise ValueError(f"hetflow.joblib: n_jobs={n_jobs} is out of range: there are {cpus} CPUs")
    return max(cpus + 1 + n_jobs, 1)


def partition(items: Sequence[Any], blocks: int) -> List[Sequence[Any]]:
    """``items`` cut into ``blocks`` runs of consecutive items, the first ``len % blocks`` one
    longer; one item each when there are fewer items than blocks."""
    count = len(items)
    if count < blocks:
        return [items[i : i + 1] for i in range(count)]
    short, longer = divmod(count, blocks)
    cuts = [0]
    for block in range(blocks):
        cuts.append(cuts[-1] + short + (1 if block < longer else 0))
    return [items[cuts[i] : cuts[i + 1]] for i in range(blocks)]


def _run_block(calls: Sequence[DelayedCall]) -> List[Any]:
    return [call.function(*call.args, **call.kwargs) for call in calls]


def _run_same(function: Callable[..., Any], arguments: Sequence[tuple]) -> List[Any]:
    """A block of calls of one function without keywords: sent as the function and a list of
    argument tuples, several times cheaper to pickle than the calls themselves."""
    return [function(*args) for args in arguments]


def _split_arguments(call: DelayedCall, blocks: int) -> List[Tuple[tuple, Dict[str, Any]]]:
    """Per block: the call's positional and keyword arguments, with arrays and generators cut
    along their first axis (keywords stay keywords)."""
    names = list(call.kwargs)
    values = list(call.args) + [call.kwargs[name] for name in names]
    split: List[Optional[List[Any]]] = []
    lengths = set()
    for value in values:
        if is_array(value):
            if value.ndim == 0:
                raise ValueError("hetflow.joblib: a 0-d array cannot be cut into blocks")
            parts = [value[cut.start : cut.stop] for cut in _cuts(value.shape[0], blocks)]
        elif isinstance(value, types.GeneratorType):
            items = list(value)
            parts = [items[cut.start : cut.stop] for cut in _cuts(len(items), blocks)]
        else:
            split.append(None)
            continue
        lengths.add(sum(len(part) for part in parts))
        split.append(parts)
    if len(lengths) > 1:
        raise ValueError(f"hetflow.joblib: the arrays to cut have different lengths {sorted(lengths)}")
    if not lengths:
        raise ValueError("hetflow.joblib: delayed(f)(...) given alone needs numpy arrays or generators to cut")
    count = len(next(parts for parts in split if parts is not None))
    positional = len(call.args)
    blocks_of_arguments = []
    for i in range(count):
        block = [parts[i] if parts is not None else value for parts, value in zip(split, values)]
        blocks_of_arguments.append((tuple(block[:positional]), dict(zip(names, block[positional:]))))
    return blocks_of_arguments


def _cuts(length: int, blocks: int) -> List[slice]:
    """The blocks' slices; one empty block for nothing to cut (the function still runs once)."""
    if length == 0:
        return [slice(0, 0)]
    indices = list(range(length))
    return [slice(run[0], run[-1] + 1) for run in partition(indices, blocks) if len(run)]


def _marked(value: Any) -> Any:
    """Array parts are written in place by many functions: marked read-write."""
    return hetflow.RW(value) if is_array(value) else value


def _gather(block_results: List[Any]) -> Any:
    """The results of the blocks of a cut call, in order, as StarPU's interface gives them."""
    if any(result is None for result in block_results):
        return None
    if all(is_array(result) for result in block_results):
        import numpy

        return numpy.concatenate(block_results)
    flat: List[Any] = []
    for result in block_results:
        if isinstance(result, (list, tuple)):
            flat.extend(result)
        else:
            flat.append(result)
    return flat


class Parallel:
    """Runs delayed calls in ``n_jobs`` blocks, one task per block.

    mode: ``"normal"`` returns the results; ``"future"`` returns at once an awaitable of the
    per-block results (an asyncio future inside a running event loop, else a hetflow.Future),
    and prints ``end_msg`` (if given) when they are ready. perfmodel: records each block's time
    under that symbol, with the block's length as size. progress: a progress bar on a
    terminal (tqdm when installed). executor: where the blocks run (default: the runtime's).
    """

    def __init__(
        self,
        mode: str = "normal",
        n_jobs: Optional[int] = 1,
        end_msg: Optional[str] = None,
        perfmodel: Optional[str] = None,
        progress: bool = False,
        executor: Optional[str] = None,
        name: Optional[str] = None,
        **ignored: Any,
    ) -> None:
        if mode not in ("normal", "future"):
            raise ValueError(f"hetflow.joblib.Parallel: mode must be 'normal' or 'future', not {mode!r}")
        if executor is not None:
            _runtime.check_executor(executor)
        self.mode = mode
        self.n_jobs = n_jobs
        self.end_msg = end_msg
        self.perfmodel = perfmodel
        self.progress = progress
        self.executor = executor
        self.name = name

    def __call__(self, iterable: Any) -> Any:
        blocks = block_count(self.n_jobs)
        if isinstance(iterable, DelayedCall):
            futures = self._submit_cut(iterable, blocks)
            finish: Callable[[List[Any]], Any] = _gather
        else:
            calls = list(iterable)
            for call in calls:
                if not isinstance(call, DelayedCall):
                    raise TypeError(
                        f"hetflow.joblib.Parallel: expected delayed(f)(...) calls, got {type(call).__name__}"
                    )
            futures = self._submit_blocks(calls, blocks)
            finish = _flatten
        if self.mode == "future":
            return self._as_future(futures)
        results = self._wait(futures)
        return finish(results)

    def _options(self, size: int, name: str) -> Callable[..., Future]:
        return hetflow.task_submit.options(
            executor=self.executor, name=self.name or name, perfmodel=self.perfmodel, size=size
        )

    def _submit_blocks(self, calls: List[DelayedCall], blocks: int) -> List[Future]:
        name = getattr(calls[0].function, "__name__", "block") if calls else "block"
        futures = []
        for block in partition(calls, blocks):
            function = block[0].function if block else None
            if all(call.function is function and not call.kwargs for call in block):
                futures.append(self._options(len(block), name)(_run_same, function, [call.args for call in block]))
            else:
                futures.append(self._options(len(block), name)(_run_block, list(block)))
        return futures

    def _submit_cut(self, call: DelayedCall, blocks: int) -> List[Future]:
        name = getattr(call.function, "__name__", "block")
        futures = []
        for args, kwargs in _split_arguments(call, blocks):
            cut = [*args, *kwargs.values()]
            size = max((len(a) for a in cut if is_array(a) or isinstance(a, list)), default=1)
            futures.append(self._options(size, name)(
                call.function, *map(_marked, args), **{key: _marked(value) for key, value in kwargs.items()}
            ))
        return futures

    def _wait(self, futures: List[Future]) -> List[Any]:
        if self.progress:
            _show_progress(futures)
        wait_failing_fast(futures)
        return [future.result() for future in futures]

    def _as_future(self, futures: List[Future]) -> Any:
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            gathered = hetflow.task_submit.options(executor="thread", name="gather")(_collect, futures)
            if self.end_msg is not None:
                gathered.add_done_callback(self._announce)
            return gathered
        awaited = asyncio.gather(*(asyncio.wrap_future(future) for future in futures))
        if self.end_msg is not None:
            awaited.add_done_callback(self._announce)
        return awaited

    def _announce(self, done: Any) -> None:
        """Prints ``end_msg`` once the results are there (not when the wait was cancelled or a
        block failed)."""
        if not done.cancelled() and done.exception() is None:
            print(self.end_msg, done)


parallel = Parallel


def _collect(results: List[Any]) -> List[Any]:
    return list(results)


def _flatten(block_results: List[List[Any]]) -> List[Any]:
    return [result for block in block_results for result in block]


def _show_progress(futures: List[Future]) -> None:
    """Shows finished blocks (a tqdm bar when tqdm is installed, else a line on stderr) until all are."""
    import concurrent.futures

    from hetflow._progress import Progress

    with Progress(len(futures)) as bar:
        for _ in concurrent.futures.as_completed(futures):
            bar.update(1)


def perfmodel_plot(perfmodel: str, path: Optional[str] = None) -> str:
    """Plots what the performance model ``perfmodel`` learned; returns the PNG's path."""
    return hetflow.perfmodel_plot(perfmodel=perfmodel, path=path)


# -- a backend for the real joblib ----------------------------------------------------------------
def register() -> None:
    """Makes ``backend="hetflow"`` available to joblib (an optional dependency).

    >>> hetflow.joblib.register()
    >>> with joblib.parallel_config(backend="hetflow", n_jobs=4):
    ...     joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(3))
    [0, 1, 2]

    The batches run on a pool of ``n_jobs`` workers of the backend's own, reused by later loops
    with the same settings; large numpy arrays reach the worker processes once, through shared
    memory (joblib's ``max_nbytes`` and ``mmap_mode``); see docs/python.md. Every batch also
    registers the backend in the worker that runs it, so that a task may itself call
    ``joblib.Parallel(backend="hetflow")``; inside a worker process that nested loop runs on
    threads, never on a second pool of processes.
    """
    try:
        import joblib
    except ImportError as error:
        raise ImportError("hetflow.joblib.register() needs joblib: pip install joblib") from error
    from hetflow import _joblib_backend

    joblib.register_parallel_backend("hetflow", _joblib_backend.backend_class())
    _joblib_backend.registered = True
