"""Task functions and helpers shared by the Python test modules. Not a test module.

The functions live at module level, so that process workers receive them by reference, as they
would a user's."""
from __future__ import annotations

from typing import Any

import hetflow

EXECUTORS = ["thread", "process"]


def add(a, b):
    return a + b


def in_a_worker() -> bool:
    """Whether this runs in one of hetflow's worker processes (an initializer asks)."""
    from hetflow import _kernel

    return _kernel.worker_index is not None


def fail(message):
    raise ValueError(message)


def submit_on(executor: str, **options: Any):
    """``task_submit`` with per-call options: ``submit_on("process")(add, 1, 2)``."""
    return hetflow.task_submit.options(executor=executor, **options)


def stop_iteration(value):
    raise StopIteration(value)


async def _coroutine_body(value):
    return value


def returns_a_coroutine(value):
    """A plain function whose call gives a coroutine (as a lambda or partial over an async def would)."""
    return _coroutine_body(value)


class AsyncCallable:
    """An object whose ``__call__`` is an ``async def``: calling it makes a coroutine."""

    async def __call__(self, value):
        return value
