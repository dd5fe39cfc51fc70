"""A Dask scheduler that runs a graph's tasks as hetflow tasks.

>>> import dask, dask.array as da
>>> import hetflow.dask
>>> x = da.ones((1000, 1000), chunks=(250, 250))
>>> dask.compute(x.sum(), scheduler=hetflow.dask.get)
(1000000.0,)
>>> (x @ x.T).compute(scheduler=hetflow.dask.get)

Each task of the graph becomes one hetflow task; the tasks it depends on are passed to it as
futures, so hetflow's scheduler orders the graph and runs what is ready on its workers. Tasks
run on the thread executor by default: Dask graphs are mostly numpy chunks, whose kernels release
the GIL and which would be copied in and out of a worker process. ``executor="process"`` runs
them in worker processes instead (pure Python tasks, e.g. ``dask.delayed`` or ``dask.bag``).
Needs dask 2024.12 or later (graphs of ``dask._task_spec`` nodes).
"""
from __future__ import annotations

import contextvars
import functools
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import Any, Dict, Hashable, List, Optional

from hetflow import _runtime
from hetflow._errors import HIDDEN_FRAMES, CancelledError, DependencyError
from hetflow._future import Future, noting_interruptions
from hetflow._submit import TaskOptions

__all__ = ["get"]

# How long the wait for a wanted key lasts before it looks again for a failure elsewhere.
_FAILURE_CHECK_S = 0.05

# The files of hetflow's frames between Dask's compute() and a failed task's own frames in the
# traceback of the error compute() raises, for Dask to leave out as it does its own schedulers'.
_SHORTENED_FILES = r"hetflow[\\/](dask|_future)\.py"


def _tell_dask_to_shorten_our_frames() -> None:
    """Adds hetflow's files to ``admin.traceback.shorten`` (unless it is empty: no shortening);
    at each get, since the program may set that list anew meanwhile."""
    import dask

    patterns = dask.config.get("admin.traceback.shorten", None)
    if isinstance(patterns, list) and patterns and _SHORTENED_FILES not in patterns:
        dask.config.set({"admin.traceback.shorten": [*patterns, _SHORTENED_FILES]})


def get(
    dsk: Any, keys: Any, executor: str = "thread", priority: int = 0, callbacks: Any = None, **kwargs: Any
) -> Any:
    """Computes ``keys`` of the Dask graph ``dsk`` on hetflow and returns their values.

    ``keys`` is one key or a list of keys, lists nested as deep as needed; the result has the same
    structure, with tuples for the lists (as Dask's own ``get`` functions return). Use it as
    ``dask.compute(x, scheduler=hetflow.dask.get)`` or
    ``x.compute(scheduler=hetflow.dask.get, executor="process")``.

    executor: ``"thread"`` (default; right for numpy chunks) or ``"process"``.
    priority: the tasks' priority under the ``prio`` scheduler.
    callbacks: Dask callbacks (``dask.callbacks.Callback`` objects or their tuples) to tell instead
    of those active (``with ProgressBar():``), as Dask's own schedulers take them.
    A task that raises makes ``get`` raise that exception (same type); the graph's tasks not yet
    started are cancelled then. A task's result is let go of once the tasks that read it have
    run, unless its key is wanted. Thread tasks run in a copy of the caller's ``contextvars``
    context, as with Dask's threaded scheduler. Other options (``num_workers``, ``pool``: those
    of Dask's other schedulers, which Dask passes on from ``compute``) are ignored, with a warning.
    """
    _tell_dask_to_shorten_our_frames()
    if kwargs:
        # Dask hands every keyword of compute/persist it does not know to the scheduler, and its
        # own schedulers ignore those they do not take (x.compute(num_workers=4) on any of them):
        # refusing them would make such a call fail only once hetflow is the default scheduler.
        warnings.warn(
            f"hetflow.dask.get ignores the option(s) {', '.join(sorted(map(repr, kwargs)))}; "
            "it takes executor ('thread' or 'process'), priority (int), callbacks",
            UserWarning,
            stacklevel=2,
        )
    from dask.callbacks import local_callbacks, normalize_callback

    if callbacks is not None:
        callbacks = [normalize_callback(callback) for callback in callbacks]
    options = TaskOptions(executor=executor, priority=priority)
    graph = _task_graph(dsk)
    wanted = _flat_keys(keys)
    for key in wanted:
        if key not in graph:
            raise KeyError(f"hetflow.dask.get: key {key!r} is not in the graph ({len(graph)} keys)")
    with local_callbacks(callbacks) as active:
        started: List[Any] = []
        state: Dict[str, Any] = {}
        succeeded = False
        try:
            for callback in active:
                if callback[0]:
                    callback[0](graph)
                started.append(callback)
            needed = _needed(graph, wanted)
            progress = _Progress(graph, needed, active, here=executor != "process") if active else None
            if progress is not None:
                state = progress.state
                for callback in active:
                    if callback[1]:
                        callback[1](graph, state)
            results = _compute(graph, needed, wanted, options, progress)
            succeeded = True
            return _nested(keys, results)
        finally:
            for callback in started:
                if callback[4]:
                    callback[4](graph, state, not succeeded)


def _task_graph(dsk: Any) -> Dict[Hashable, Any]:
    """The graph as a dict of key -> ``dask._task_spec`` node, whatever form dask handed over."""
    try:
        from dask._task_spec import convert_legacy_graph
    except ImportError as exc:
        raise ImportError(
            "hetflow.dask needs dask 2024.12 or later (graphs of dask._task_spec nodes): "
            "pip install -U 'dask[array]'"
        ) from exc
    if not isinstance(dsk, Mapping):
        if not hasattr(dsk, "__dask_graph__"):
            raise TypeError(
                f"hetflow.dask.get: expected a Dask graph (a mapping, or an object with __dask_graph__), "
                f"not {type(dsk).__name__}"
            )
        dsk = dsk.__dask_graph__()
    return convert_legacy_graph(dsk)


def _compute(
    graph: Dict[Hashable, Any],
    needed: set,
    wanted: List[Hashable],
    options: TaskOptions,
    progress: Optional["_Progress"],
) -> Dict[Hashable, Any]:
    """Submits the tasks the wanted keys need, dependencies first, and waits for the wanted keys'
    values. A future is kept only while tasks still to be submitted read it (or its key is
    wanted): the results of the others go once their readers have run."""
    from dask._task_spec import DataNode

    runtime = _runtime.current()
    readers = Counter(dep for key in needed for dep in graph[key].dependencies)
    wanted_set = set(wanted)
    values: Dict[Hashable, Any] = {}  # key -> future (or the value of a constant)
    watch = _Watch(progress)
    try:
        for key in _submission_order(graph, needed):
            node = graph[key]
            if isinstance(node, DataNode):
                values[key] = node()  # constants need no task: their value goes to the tasks reading it
            else:
                futures = {dep: values[dep] for dep in node.dependencies if isinstance(values[dep], Future)}
                constants = _Constants({dep: values[dep] for dep in node.dependencies if dep not in futures})
                function: Any = _run_node
                args: tuple = (node, futures, constants)
                if options.executor != "process":
                    report = functools.partial(progress.ran, key) if progress is not None else None
                    function, args = _run_node_here, (contextvars.copy_context(), *args, report)
                future = runtime.submit(
                    function, args, {}, executor=options.executor, name=_task_name(key), priority=options.priority
                )
                values[key] = future
                watch.add(key, future)
                watch.now_and_then()  # a failure stops the submission of a large graph
            for dep in node.dependencies:
                readers[dep] -= 1
                if readers[dep] == 0 and dep not in wanted_set:
                    del values[dep]
        results = {key: values[key] for key in wanted}
        values.clear()
        for value in results.values():
            watch.wait(value)
        watch.wait_until_told()
        return {key: _result(value) for key, value in results.items()}
    except BaseException:
        watch.cancel_all()
        raise


def _submission_order(graph: Dict[Hashable, Any], needed: set) -> List[Hashable]:
    """Dependencies first, in Dask's own order (dask.order: the one that lets results go
    soonest; hetflow's schedulers take ready tasks about in the order submitted)."""
    from dask.core import toposort
    from dask.order import order

    subgraph = {key: graph[key] for key in needed}
    try:
        rank = order(subgraph)
    except Exception:  # a cycle: toposort names it
        return toposort(subgraph)
    keys = sorted(needed, key=rank.__getitem__)
    if any(rank[dep] > rank[key] for key in keys for dep in graph[key].dependencies):
        return toposort(subgraph)  # not an order dask promises: dependencies first, then
    return keys


class _Constants:
    """The graph's constants a task reads: opaque to the search for futures among a task's
    arguments, which would walk a large one again for every task reading it."""

    __slots__ = ("values",)

    def __init__(self, values: Dict[Hashable, Any]) -> None:
        self.values = values


class _Watch:
    """The graph's futures not finished yet, looked at now and then for a failure while get
    waits (a wanted key would hear of it only once the other inputs of the tasks between them
    had ended); and, for process tasks, the Dask callbacks told once each has ended."""

    def __init__(self, progress: Optional["_Progress"]) -> None:
        # Weak: a result must go once its readers have run (until then they hold its future).
        self.pending: Dict[Hashable, "weakref.ref[Future]"] = {}
        self.failures: List[BaseException] = []  # what a Dask callback raised
        # Process tasks whose callbacks are told on hetflow's callback thread: how many are still
        # to be told (get ends only once all are, before the callbacks' finish).
        self.progress = progress if progress is not None and not progress.here else None
        self.untold = 0
        self.told = threading.Condition()
        self.next_look = time.monotonic() + _FAILURE_CHECK_S  # now_and_then's

    def now_and_then(self) -> None:
        """While get submits: raises a failure of a task submitted so far, looking a twentieth of
        the time at most (submitting a large graph takes seconds, its first tasks running)."""
        if time.monotonic() < self.next_look:
            return
        self.next_look = time.monotonic() + self._look()

    def _look(self) -> float:
        """Raises a failure found so far; else the pause until the next look: 20 times what this
        one took, so that looking over many pending futures takes a twentieth of the time."""
        started = time.monotonic()
        self.raise_failure()
        self.raise_failure_elsewhere()
        return max(_FAILURE_CHECK_S, 20 * (time.monotonic() - started))

    def add(self, key: Hashable, future: Future) -> None:
        self.pending[key] = weakref.ref(future)
        if self.progress is not None:
            with self.told:
                self.untold += 1
            future.add_done_callback(functools.partial(self._tell, key))

    def _tell(self, key: Hashable, future: Future) -> None:
        try:
            if future._status() == "done":
                self.progress.ran(key, future.result, None)  # type: ignore[union-attr]
        except BaseException as error:  # noqa: BLE001 - raised by get, as Dask's schedulers do
            self.failures.append(error)
        finally:
            with self.told:
                self.untold -= 1
                self.told.notify_all()

    def wait_until_told(self) -> None:
        with self.told:
            self.told.wait_for(lambda: self.untold == 0)
        self.raise_failure()

    def wait(self, value: Any) -> None:
        """Waits for a wanted key's future; a failure elsewhere is raised meanwhile. The others
        are looked at a twentieth of the time at most."""
        if not isinstance(value, Future):
            return
        if not value.done():
            value._task.check_wait_can_end()  # inside a task: waited for in slices, never refused
        pause = _FAILURE_CHECK_S
        with noting_interruptions((value,)):
            while not value.done():
                value._task.wait(pause)
                pause = self._look()

    def raise_failure(self) -> None:
        if self.failures:
            raise self.failures[0]

    def raise_failure_elsewhere(self) -> None:
        # Once the wanted keys are done there is no need: every task of the graph is below one,
        # which would have failed (DependencyError, which _result makes the failure itself).
        for key, ref in list(self.pending.items()):
            future = ref()
            if future is None or not future.done():
                if future is None:
                    del self.pending[key]
                continue
            del self.pending[key]
            if future._status() == "failed":
                _result(future)

    def cancel_all(self) -> None:
        for ref in list(self.pending.values()):
            future = ref()
            if future is not None:
                future.cancel()


class _Progress:
    """The state Dask's callbacks are given (``dask.local``'s, with ``ready`` a set) and the
    calls of their ``pretask`` and ``posttask``: one at a time, around each thread task on its
    worker; for process tasks both once the task has ended, on hetflow's callback thread."""

    def __init__(self, graph: Dict[Hashable, Any], needed: set, callbacks: Any, here: bool) -> None:
        from dask._task_spec import DataNode

        self.graph = graph
        self.lock = threading.Lock()
        self.pretask = [callback[2] for callback in callbacks if callback[2]]
        self.posttask = [callback[3] for callback in callbacks if callback[3]]
        self.here = here  # thread tasks: told on their workers
        tasks = {key for key in needed if not isinstance(graph[key], DataNode)}
        dependencies = {key: set(graph[key].dependencies) for key in needed}
        dependents: Dict[Hashable, set] = {key: set() for key in needed}
        for key in needed:
            for dep in dependencies[key]:
                dependents[dep].add(key)
        waiting = {key: dependencies[key] & tasks for key in tasks}
        self.state: Dict[str, Any] = {
            "cache": {},  # no result is kept for the callbacks
            "dependencies": dependencies,
            "dependents": dependents,
            "waiting": {key: deps for key, deps in waiting.items() if deps},
            "ready": {key for key, deps in waiting.items() if not deps},
            "running": set(),
            "finished": set(),
            "released": set(),
            "waiting_data": {},
        }

    def ran(self, key: Hashable, run: Any, worker_id: Any) -> Any:
        """Runs ``run()`` for the task of ``key``, the callbacks told before and after."""
        state = self.state
        with self.lock:
            state["ready"].discard(key)
            state["running"].add(key)
            for pretask in self.pretask:
                pretask(key, self.graph, state)
        value = run()
        with self.lock:
            state["running"].discard(key)
            state["finished"].add(key)
            for dependent in state["dependents"][key]:
                waiting = state["waiting"].get(dependent)
                if waiting is not None:
                    waiting.discard(key)
                    if not waiting:
                        del state["waiting"][dependent]
                        state["ready"].add(dependent)
            for posttask in self.posttask:
                posttask(key, value, self.graph, state, worker_id)
        return value


def _needed(graph: Dict[Hashable, Any], wanted: List[Hashable]) -> set:
    """The keys the wanted keys depend on, directly or not, and the wanted keys themselves."""
    needed: set = set()
    stack = list(wanted)
    while stack:
        key = stack.pop()
        if key in needed:
            continue
        needed.add(key)
        for dep in graph[key].dependencies:
            if dep not in graph:
                raise KeyError(f"hetflow.dask.get: task {key!r} depends on {dep!r}, which is not in the graph")
            stack.append(dep)
    return needed


def _run_node(node: Any, inputs: Dict[Hashable, Any], constants: _Constants) -> Any:
    return node({**constants.values, **inputs})


def _run_node_here(
    context: contextvars.Context, node: Any, inputs: Dict[Hashable, Any], constants: _Constants, report: Any
) -> Any:
    if report is None:
        return context.run(_run_node, node, inputs, constants)
    return report(functools.partial(context.run, _run_node, node, inputs, constants), threading.get_ident())


# A failed task's traceback starts at the node Dask runs, not at hetflow's calls of it.
HIDDEN_FRAMES.update((_run_node.__code__, _run_node_here.__code__, _Progress.ran.__code__))


def _task_name(key: Hashable) -> str:
    from dask.utils import key_split

    try:
        return str(key_split(key))
    except Exception:  # a key Dask allows that key_split cannot cut (bytes that are not UTF-8, "()")
        return repr(key)[:100]


def _result(value: Any) -> Any:
    if not isinstance(value, Future):
        return value
    try:
        return value.result()
    except DependencyError as error:
        # Dask users expect the failing task's own exception, not hetflow's wrapper.
        root = error.root_exception
        if isinstance(root, CancelledError) or root is None:
            raise
        raise root from root.__cause__


def _flat_keys(keys: Any) -> List[Hashable]:
    flat: List[Hashable] = []
    stack = [keys]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _nested(keys: Any, results: Dict[Hashable, Any]) -> Any:
    if isinstance(keys, list):  # a tuple back, as Dask's own get functions give
        return tuple(_nested(item, results) for item in keys)
    return results[keys]
