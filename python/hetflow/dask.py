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

from collections.abc import Mapping
from typing import Any, Dict, Hashable, List

from hetflow import _runtime
from hetflow._errors import CancelledError, DependencyError
from hetflow._future import Future, wait_failing_fast
from hetflow._submit import TaskOptions

__all__ = ["get"]


def get(dsk: Any, keys: Any, executor: str = "thread", priority: int = 0, **kwargs: Any) -> Any:
    """Computes ``keys`` of the Dask graph ``dsk`` on hetflow and returns their values.

    ``keys`` is one key or a list of keys, lists nested as deep as needed; the result has the same
    structure, with tuples for the lists (as Dask's own ``get`` functions return). Use it as
    ``dask.compute(x, scheduler=hetflow.dask.get)`` or
    ``x.compute(scheduler=hetflow.dask.get, executor="process")``.

    executor: ``"thread"`` (default; right for numpy chunks) or ``"process"``.
    priority: the tasks' priority under the ``prio`` scheduler.
    A task that raises makes ``get`` raise that exception (same type); the graph's tasks not yet
    started are cancelled then.
    """
    if kwargs:
        raise TypeError(
            f"hetflow.dask.get: unknown option(s) {', '.join(sorted(map(repr, kwargs)))}; "
            "accepted: executor ('thread' or 'process'), priority (int)"
        )
    options = TaskOptions(executor=executor, priority=priority)
    graph = _task_graph(dsk)
    wanted = _flat_keys(keys)
    for key in wanted:
        if key not in graph:
            raise KeyError(f"hetflow.dask.get: key {key!r} is not in the graph ({len(graph)} keys)")

    values: Dict[Hashable, Any] = {}
    try:
        _submit_graph(graph, wanted, options, values)
        # Every task is watched: a failure reaches the wanted keys only once the other inputs of
        # the tasks between them have ended, and the tasks not started yet are cancelled now.
        wait_failing_fast([value for value in values.values() if isinstance(value, Future)], _result)
        return _nested(keys, {key: _result(values[key]) for key in wanted})
    except BaseException:
        for value in values.values():
            if isinstance(value, Future):
                value.cancel()
        raise


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


def _submit_graph(
    graph: Dict[Hashable, Any], wanted: List[Hashable], options: TaskOptions, values: Dict[Hashable, Any]
) -> None:
    """Submits the tasks the wanted keys need, dependencies first, filling ``values`` with key ->
    future (or plain value, for the graph's constants) as it goes."""
    from dask._task_spec import DataNode
    from dask.core import toposort
    from dask.utils import key_split

    needed = _needed(graph, wanted)
    runtime = _runtime.current()
    for key in toposort({key: graph[key] for key in needed}):
        node = graph[key]
        if isinstance(node, DataNode):
            # Constants need no task: their value goes straight to the tasks that use them.
            values[key] = node()
            continue
        inputs = {dep: values[dep] for dep in node.dependencies}
        values[key] = runtime.submit(
            _run_node, (node, inputs), {}, executor=options.executor, name=key_split(key), priority=options.priority
        )


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


def _run_node(node: Any, inputs: Dict[Hashable, Any]) -> Any:
    return node(inputs)


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
