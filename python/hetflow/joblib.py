"""joblib-style parallel loops on hetflow, as StarPU's Python interface has them, and a backend
that runs the real joblib on hetflow.

>>> from math import log10
>>> from hetflow import joblib
>>> joblib.Parallel(n_jobs=2)(joblib.delayed(log10)(10 ** i) for i in range(10))
[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]

The calls are cut into ``n_jobs`` blocks of consecutive calls (the first ``len % n_jobs`` blocks
one call longer); each block is one task; results come back in input order.
``delayed(f)(A, B)`` given alone, with numpy arrays (or generators) as arguments, instead cuts
those arguments into ``n_jobs`` parts along their first axis and calls ``f`` on each part
(read-write, or for reading only where an array cannot be written), and joins the parts' results.
``timeout=`` and ``return_as=`` work as joblib's; joblib's other keywords raise a TypeError.

To run existing joblib code on hetflow::

    hetflow.joblib.register()
    with joblib.parallel_config(backend="hetflow"):
        joblib.Parallel(n_jobs=-1)(...)
"""
from __future__ import annotations

import difflib
import multiprocessing
import numbers
import time
import types
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import hetflow
from hetflow import _runtime
from hetflow._future import Future, noting_interruptions, wait_failing_fast
from hetflow._serialize import is_array
from hetflow.executor import _lift_data, _lifts, _put_back


class DelayedCall(NamedTuple):
    """A call to make later: what ``delayed(f)(*args, **kwargs)`` returns."""

    function: Callable[..., Any]
    args: tuple
    kwargs: dict


def delayed(function: Callable[..., Any]) -> Callable[..., DelayedCall]:
    """``delayed(f)(*args, **kwargs)`` describes the call ``f(*args, **kwargs)`` for Parallel."""
    if not callable(function):
        raise TypeError(f"hetflow.joblib.delayed: {function!r} is not callable")
    _runtime.refuse_async_function(function, "hetflow.joblib.delayed")

    def describe(*args: Any, **kwargs: Any) -> DelayedCall:
        return DelayedCall(function, args, kwargs)

    return describe


def _as_delayed_call(call: Any) -> DelayedCall:
    """A call of ``delayed``, or of joblib's own ``joblib.delayed`` (a plain tuple ``(function,
    args, kwargs)``), as a DelayedCall."""
    if isinstance(call, DelayedCall):
        return call
    if (
        type(call) is tuple
        and len(call) == 3
        and callable(call[0])
        and isinstance(call[1], tuple)
        and isinstance(call[2], dict)
    ):
        return delayed(call[0])(*call[1], **call[2])
    raise TypeError(f"hetflow.joblib.Parallel: expected delayed(f)(...) calls, got {type(call).__name__}")


def cpu_count() -> int:
    """The number of CPU workers of the runtime."""
    return _runtime.current().ncpus


def checked_n_jobs(n_jobs: Any) -> Optional[int]:
    """``n_jobs`` as an int (a numpy integer too, as joblib takes it) or None; TypeError or
    ValueError for what cannot mean a number of blocks."""
    if n_jobs is None:
        return None
    if not isinstance(n_jobs, numbers.Integral) or isinstance(n_jobs, bool):
        raise TypeError(f"hetflow.joblib: n_jobs must be an int, not {n_jobs!r}")
    if n_jobs == 0:
        raise ValueError("hetflow.joblib: n_jobs=0 has no meaning; use 1 or more, or -1 for all CPUs")
    return int(n_jobs)


def block_count(n_jobs: Optional[int]) -> int:
    """How many blocks ``n_jobs`` means: negative counts from the number of CPUs (-1: all)."""
    n_jobs = checked_n_jobs(n_jobs)
    if n_jobs is None:
        return 1
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


def _run_block(calls: Sequence[DelayedCall], *data: Any) -> List[Any]:
    """``data``: the block task's arrays (and access marks), which the calls name by ``_Lifted``."""
    if data:
        calls = _put_back_calls(calls, data)
    return [call.function(*call.args, **call.kwargs) for call in calls]


def _run_same(function: Callable[..., Any], arguments: Sequence[tuple], *data: Any) -> List[Any]:
    """A block of calls of one function without keywords: sent as the function and a list of
    argument tuples, several times cheaper to pickle than the calls themselves."""
    if data:
        arguments = _put_back(list(arguments), True, data)
    return [function(*args) for args in arguments]


def _lift_block(block: Sequence[DelayedCall], lifts: Callable[[Any], bool]) -> Tuple[List[DelayedCall], tuple]:
    """The block's calls with their arrays and access marks made the block task's own arguments
    (see ``hetflow.executor._lift_data``): task data, ordered with the tasks that use them."""
    lifted, data = _lift_data(_flat(block), True, lifts)
    return (_rebuilt(block, lifted), data) if data else (list(block), ())


def _put_back_calls(calls: Sequence[DelayedCall], data: tuple) -> List[DelayedCall]:
    return _rebuilt(calls, _put_back(_flat(calls), True, data))


def _flat(calls: Sequence[DelayedCall]) -> List[tuple]:
    """Each call's arguments as one tuple: the positional ones, then the keyword values."""
    return [(*call.args, *call.kwargs.values()) for call in calls]


def _rebuilt(calls: Sequence[DelayedCall], flat: List[tuple]) -> List[DelayedCall]:
    """The calls with the arguments ``flat`` gives them, laid out as ``_flat`` lays them."""
    return [
        DelayedCall(call.function, tuple(values[: len(call.args)]), dict(zip(call.kwargs, values[len(call.args) :])))
        for call, values in zip(calls, flat)
    ]


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


def _marked(value: Any, executor: str) -> Any:
    """Array parts are written in place by many functions: marked read-write, unless the array
    cannot be written (read-only, a ``numpy.broadcast_to`` view), or a process task could not
    write it (a subclass, such as a masked array, reaches it whole, by value): then it is given
    for reading."""
    if not is_array(value) or not value.flags.writeable:
        return value
    if executor == "process" and not _runtime.plain_array(value):
        return value
    return hetflow.RW(value)


def _describe(value: Any) -> str:
    if is_array(value):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return "None" if value is None else f"a {type(value).__name__}"


def _cannot_join(block_results: List[Any], spans: List[Tuple[int, int]], why: str) -> TypeError:
    returned = "; ".join(
        f"block {i} (items {start} to {stop - 1}) returned {_describe(result)}"
        for i, ((start, stop), result) in enumerate(zip(spans, block_results))
    )
    return TypeError(f"hetflow.joblib.Parallel: the results of the blocks of a cut call cannot be joined ({why}): {returned}")


def _gather(block_results: List[Any], spans: List[Tuple[int, int]]) -> Any:
    """The results of the blocks of a cut call, in order, as StarPU's interface gives them:
    None when every block returned None (the function filled an output in place), arrays
    concatenated, 0-d arrays (one value per block) stacked, anything else in a list (lists and
    tuples flattened). Results of different kinds raise a TypeError naming each block's."""
    nones = [result is None for result in block_results]
    if all(nones):
        return None
    if any(nones):
        raise _cannot_join(block_results, spans, "some blocks returned None, others did not")
    arrays = [is_array(result) for result in block_results]
    if any(arrays):
        if not all(arrays):
            raise _cannot_join(block_results, spans, "some blocks returned arrays, others did not")
        import numpy

        if all(result.ndim == 0 for result in block_results):
            return numpy.stack(block_results)
        if any(result.ndim == 0 for result in block_results):
            raise _cannot_join(block_results, spans, "0-d arrays cannot be concatenated with the others")
        try:
            return numpy.concatenate(block_results)
        except ValueError as error:
            raise _cannot_join(block_results, spans, str(error)) from None
    flat: List[Any] = []
    for result in block_results:
        if isinstance(result, (list, tuple)):
            flat.extend(result)
        else:
            flat.append(result)
    return flat


class ParallelTimeoutError(TimeoutError, multiprocessing.TimeoutError):
    """``Parallel(timeout=...)`` passed: both the built-in TimeoutError and the
    ``multiprocessing.TimeoutError`` that joblib raises, so that either ``except`` catches it."""


# joblib.Parallel's keywords that hetflow.joblib.Parallel does not take, and what to do instead.
_JOBLIB_ONLY = {
    "backend": "the blocks always run as hetflow tasks; choose their workers with executor='thread' or 'process'",
    "prefer": "choose the workers with executor='thread' or 'process'",
    "require": "choose the workers with executor='thread' (shared memory) or 'process'",
    "verbose": "use progress=True to see the finished blocks",
    "batch_size": "the calls are cut into n_jobs blocks of consecutive calls; set n_jobs",
    "pre_dispatch": "every block is submitted at once",
    "temp_folder": "arrays reach the blocks as hetflow task arguments, not through memmapped files",
    "max_nbytes": "arrays reach the blocks as hetflow task arguments, not through memmapped files",
    "mmap_mode": "arrays reach the blocks as hetflow task arguments, not through memmapped files",
}
_KEYWORDS = ("mode", "n_jobs", "end_msg", "perfmodel", "progress", "executor", "name", "timeout", "return_as")
_RETURN_AS = ("list", "generator", "generator_unordered")
# How long a wait for one block lasts before the later blocks are looked at for a failure.
_FAIL_FAST_PAUSE_S = 0.05


def _refuse_keywords(given: Dict[str, Any]) -> None:
    for keyword in given:
        if keyword in _JOBLIB_ONLY:
            raise TypeError(
                f"hetflow.joblib.Parallel does not take joblib's {keyword}=: {_JOBLIB_ONLY[keyword]}. "
                "For joblib's own Parallel with all its keywords on hetflow: hetflow.joblib.register(), "
                "then joblib.Parallel(backend='hetflow', ...)"
            )
    if given:
        names = ", ".join(repr(keyword) for keyword in given)
        hints = []
        for keyword in given:
            close = difflib.get_close_matches(keyword, list(_KEYWORDS) + list(_JOBLIB_ONLY), n=1)
            if close:
                hints.append(f"{keyword!r}: did you mean {close[0]!r}?")
        raise TypeError(
            f"hetflow.joblib.Parallel got unexpected keyword argument{'s' if len(given) > 1 else ''} {names}"
            + (f" ({'; '.join(hints)})" if hints else "")
            + f"; it takes {', '.join(_KEYWORDS)}"
        )


class Parallel:
    """Runs delayed calls in ``n_jobs`` blocks, one task per block.

    mode: ``"normal"`` returns the results; ``"future"`` returns at once an awaitable of the
    per-block results (an asyncio future inside a running event loop, else a hetflow.Future),
    and prints ``end_msg`` (if given) when they are ready. perfmodel: records each block's time
    under that symbol, with the block's length as size. progress: a progress bar on a
    terminal (tqdm when installed). executor: where the blocks run (default: the runtime's).
    timeout: as joblib's, seconds to wait for each block's results; when they do not come,
    ParallelTimeoutError (a TimeoutError, and joblib's ``multiprocessing.TimeoutError``) is
    raised and the blocks not started are cancelled. return_as: as joblib's, ``"list"``,
    ``"generator"`` (the results in order, as their blocks finish) or ``"generator_unordered"``
    (each block's results as soon as it finishes). joblib's other keywords raise a TypeError
    that says what to use instead; so does an unknown keyword.
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
        timeout: Optional[float] = None,
        return_as: str = "list",
        **unknown: Any,
    ) -> None:
        _refuse_keywords(unknown)
        if not isinstance(mode, str) or mode not in ("normal", "future"):
            hint = f" (joblib's first argument is n_jobs: give it by name, n_jobs={mode!r})" if isinstance(mode, int) else ""
            raise ValueError(f"hetflow.joblib.Parallel: mode must be 'normal' or 'future', not {mode!r}{hint}")
        if executor is not None:
            _runtime.check_executor(executor)
        progress = _runtime.check_flag(progress, "hetflow.joblib.Parallel: progress")
        for what, text in (("end_msg", end_msg), ("name", name)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"hetflow.joblib.Parallel: {what} must be a str or None, not {type(text).__name__} {text!r}")
        if timeout is not None:
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
                raise TypeError(f"hetflow.joblib.Parallel: timeout must be a number of seconds or None, not {timeout!r}")
            if not timeout > 0:
                raise ValueError(f"hetflow.joblib.Parallel: timeout must be more than 0 seconds, not {timeout!r}")
            if mode == "future":
                raise ValueError(
                    "hetflow.joblib.Parallel: timeout= applies to mode='normal'; with mode='future' give the "
                    "timeout to the wait: result(timeout) or asyncio.wait_for(future, timeout)"
                )
        if return_as not in _RETURN_AS:
            raise ValueError(f"hetflow.joblib.Parallel: return_as must be one of {_RETURN_AS}, not {return_as!r}")
        if return_as != "list" and mode == "future":
            raise ValueError(
                f"hetflow.joblib.Parallel: return_as={return_as!r} applies to mode='normal'; "
                "mode='future' returns an awaitable of the per-block results"
            )
        self.mode = mode
        self.n_jobs = checked_n_jobs(n_jobs)  # here, not at the call, which may be far from it
        self.end_msg = end_msg
        self.perfmodel = perfmodel
        self.progress = progress
        self.executor = executor
        self.name = name
        self.timeout = timeout
        self.return_as = return_as

    def __call__(self, iterable: Any) -> Any:
        blocks = block_count(self.n_jobs)
        if isinstance(iterable, DelayedCall):
            if self.return_as != "list":
                raise ValueError(
                    f"hetflow.joblib.Parallel: return_as={self.return_as!r} applies to an iterable of delayed "
                    "calls; a cut call, delayed(f)(A, ...) given alone, returns its blocks' results joined "
                    "(use return_as='list')"
                )
            futures, spans = self._submit_cut(iterable, blocks)
        else:
            calls = [_as_delayed_call(call) for call in iterable]
            futures, spans = self._submit_blocks(calls, blocks)
        if self.mode == "future":
            return self._as_future(futures)
        if self.return_as != "list":
            output = self._generate(futures, spans, ordered=self.return_as == "generator")
            # Started up to its first yield (as joblib starts its own): closing or losing it before
            # its first result runs its ``finally`` too, which cancels the blocks not started.
            next(output)
            return output
        results = self._wait(futures, spans)
        if isinstance(iterable, DelayedCall):
            return _gather(results, spans)
        return _flatten(results)

    def _options(self, size: int, name: str) -> Callable[..., Future]:
        return hetflow.task_submit.options(
            executor=self.executor, name=self.name or name, perfmodel=self.perfmodel, size=size
        )

    def _submit_blocks(self, calls: List[DelayedCall], blocks: int) -> Tuple[List[Future], List[Tuple[int, int]]]:
        name = getattr(calls[0].function, "__name__", "block") if calls else "block"
        runtime = _runtime.current()
        kind = self.executor or runtime.executor
        lifts = _lifts(runtime, kind, self.mode == "normal", (value for args in _flat(calls) for value in args))
        futures = []
        spans = []
        start = 0
        for block in partition(calls, blocks):
            spans.append((start, start + len(block)))
            start += len(block)
            function = block[0].function if block else None
            if all(call.function is function and not call.kwargs for call in block):
                arguments, data = _lift_data([call.args for call in block], True, lifts)
                futures.append(self._options(len(block), name)(_run_same, function, arguments, *data))
            else:
                lifted, data = _lift_block(block, lifts)
                futures.append(self._options(len(block), name)(_run_block, lifted, *data))
        return futures, spans

    def _submit_cut(self, call: DelayedCall, blocks: int) -> Tuple[List[Future], List[Tuple[int, int]]]:
        name = getattr(call.function, "__name__", "block")
        executor = self.executor or _runtime.current().executor
        futures = []
        spans = []
        start = 0
        for args, kwargs in _split_arguments(call, blocks):
            cut = [*args, *kwargs.values()]
            size = max((len(a) for a in cut if is_array(a) or isinstance(a, list)), default=1)
            length = next((len(a) for a in cut if is_array(a) or isinstance(a, list)), 0)
            spans.append((start, start + length))
            start += length
            futures.append(self._options(size, name)(
                call.function,
                *(_marked(value, executor) for value in args),
                **{key: _marked(value, executor) for key, value in kwargs.items()},
            ))
        return futures, spans

    def _wait(self, futures: List[Future], spans: List[Tuple[int, int]]) -> List[Any]:
        bar = self._progress_bar(futures)
        try:
            if self.timeout is None:
                wait_failing_fast(futures)
            else:
                for index in range(len(futures)):
                    self._wait_for(futures, index, spans)
        except BaseException:
            # A block failed (or the wait was interrupted): the loop is over, as in joblib and
            # hetflow.map, so the blocks not started do not run behind the caller's back.
            self._give_up(futures)
            if bar is not None:
                bar.close()
            raise
        if bar is not None:
            bar.close(complete=True)
        return [future.result() for future in futures]

    def _progress_bar(self, futures: List[Future]) -> Any:
        """A bar counting the finished blocks, when progress=True."""
        if not self.progress:
            return None
        from hetflow._progress import Progress

        bar = Progress(len(futures))
        for future in futures:
            future.add_done_callback(lambda _: bar.update(1))
        return bar

    def _wait_for(self, futures: List[Future], index: int, spans: List[Tuple[int, int]]) -> None:
        """Waits for block ``index``: raises the error of a later block that failed meanwhile
        (as wait_failing_fast), and ParallelTimeoutError after ``timeout`` seconds."""
        future = futures[index]
        if not future.done():
            future._task.check_wait_can_end()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        failed: Optional[Future] = None
        with noting_interruptions(futures):  # not the failure raised after: a task's own KeyboardInterrupt
            while failed is None and not future.done():
                pause = _FAIL_FAST_PAUSE_S
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        raise self._timed_out(futures, [index], spans)
                future._task.wait(pause)
                failed = next((other for other in futures[index + 1 :] if other._task.status() == "failed"), None)
        if failed is None and future._status() == "failed":
            failed = future
        if failed is not None:
            failed.result()  # raises its error

    def _timed_out(self, futures: List[Future], late: List[int], spans: List[Tuple[int, int]]) -> ParallelTimeoutError:
        """Gives up on the loop: the error that says which blocks did not finish in time."""
        self._give_up(futures)
        blocks = ", ".join(f"{i} (items {spans[i][0]} to {spans[i][1] - 1})" for i in late)
        return ParallelTimeoutError(
            f"hetflow.joblib.Parallel: block{'s' if len(late) > 1 else ''} {blocks} of {len(futures)} did not "
            f"finish within timeout={self.timeout} s; the blocks not started were cancelled"
        )

    @staticmethod
    def _give_up(futures: List[Future]) -> None:
        """Cancels the blocks not started (those running finish; their results are dropped)."""
        for future in futures:
            if not future.done():
                future.cancel()

    def _generate(self, futures: List[Future], spans: List[Tuple[int, int]], ordered: bool) -> Iterator[Any]:
        """return_as='generator' (ordered) or 'generator_unordered': the results of each block as
        it finishes; closing or losing the generator early (before its first result too) cancels
        the blocks not started."""
        import concurrent.futures

        bar = self._progress_bar(futures)
        try:
            yield None  # taken by __call__, which starts the generator
            if ordered:
                for index, future in enumerate(futures):
                    self._wait_for(futures, index, spans)
                    yield from future.result()
            else:
                left = set(range(len(futures)))
                while left:
                    done, _ = concurrent.futures.wait(
                        [futures[i] for i in sorted(left)], timeout=self.timeout, return_when="FIRST_COMPLETED"
                    )
                    if not done:
                        raise self._timed_out(futures, sorted(left), spans)
                    for index in sorted(i for i in left if futures[i] in done):
                        left.discard(index)
                        yield from futures[index].result()
        finally:
            self._give_up(futures)
            if bar is not None:
                bar.close()

    def _as_future(self, futures: List[Future]) -> Any:
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            gathered = hetflow.task_submit.options(executor="thread", name="gather")(_collect, _Blocks(futures))
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


class _Blocks:
    """The blocks' futures, out of the argument search: the gathering task waits for them in its
    body, so that a failed block fails it with the block's own exception, as ``mode="normal"``
    and an event loop's future give it (as dependencies, it would fail with a DependencyError)."""

    __slots__ = ("futures",)

    def __init__(self, futures: List[Future]) -> None:
        self.futures = futures


def _collect(blocks: _Blocks) -> List[Any]:
    import concurrent.futures

    concurrent.futures.wait(blocks.futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    return [future.result() for future in blocks.futures]


def _flatten(block_results: List[List[Any]]) -> List[Any]:
    return [result for block in block_results for result in block]


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
