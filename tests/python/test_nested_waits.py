"""Thread-executor tasks that wait for tasks they submit: the waiting worker runs other tasks
meanwhile, with or without a timeout, so that nested waits complete even on one or two workers."""
from __future__ import annotations

from typing import Optional

import pytest

import hetflow

# Only a hang would come near it.
PATIENCE = 60.0


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    hetflow.shutdown()


def nested(depth: int, timeout: Optional[float]) -> int:
    """Counts the levels below it by submitting one child per level and waiting for it."""
    if depth == 0:
        return 0
    child = hetflow.task_submit(nested, depth - 1, timeout)
    return child.result(timeout=timeout) + 1


def waits_for_child(value: int, timeout: Optional[float]) -> int:
    child = hetflow.task_submit(lambda: value * 2)
    return child.result(timeout=timeout) + 1


@pytest.mark.parametrize("ncpus", [1, 2])
@pytest.mark.parametrize("timeout", [None, PATIENCE], ids=["no-timeout", "timeout"])
def test_nested_waits_of_depth_three(ncpus, timeout):
    hetflow.init(ncpus=ncpus, executor="thread")
    assert hetflow.task_submit(nested, 3, timeout).result(timeout=PATIENCE) == 3


@pytest.mark.parametrize("ncpus", [1, 2])
@pytest.mark.parametrize("timeout", [None, PATIENCE], ids=["no-timeout", "timeout"])
def test_a_fan_out_of_tasks_each_waiting_on_a_child(ncpus, timeout):
    hetflow.init(ncpus=ncpus, executor="thread")
    futures = [hetflow.task_submit(waits_for_child, i, timeout) for i in range(20)]
    assert [f.result(timeout=PATIENCE) for f in futures] == [i * 2 + 1 for i in range(20)]


def test_a_short_timeout_inside_a_task_still_expires():
    hetflow.init(ncpus=1, executor="thread")
    gate = hetflow.empty(1, dtype="int64")

    def blocked_reader(a):
        return int(a[0])

    def waits_briefly():
        # The reader waits for the acquisition below, which outlives this task: the wait ends.
        reader = hetflow.task_submit(blocked_reader, hetflow.R(gate))
        try:
            reader.result(timeout=0.05)
        except TimeoutError:
            return "timed out"
        return "finished"

    with hetflow.acquire(gate, "W") as view:
        view[0] = 4
        assert hetflow.task_submit(waits_briefly).result(timeout=PATIENCE) == "timed out"
    assert hetflow.wait_for_all(timeout=PATIENCE)
