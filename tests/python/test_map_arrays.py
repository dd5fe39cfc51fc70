"""numpy arrays among the calls of a chunked map (Executor.map with chunksize > 1, hetflow.map's
chunks) are task data as in a call submitted on its own: ordered with the tasks that use them."""
from __future__ import annotations

import time

import numpy as np
import pytest

import hetflow

KINDS = ["thread", "process"]


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    hetflow.shutdown()


def _slow_fill(a, value):
    time.sleep(0.3)
    a[...] = value


def _fill(a, value):
    a[...] = value


def _total(a):
    return float(a.sum())


def _slow_total(a):
    time.sleep(0.3)
    return float(a.sum())


def _increment(a):
    a += 1
    return float(a.sum())


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_map_calls_wait_for_the_earlier_writer_of_their_array(kind):
    with hetflow.Executor(2, executor=kind) as executor:
        a = np.zeros(10)
        executor.submit(_slow_fill, hetflow.W(a), 1.0)
        assert list(executor.map(_total, [a, a, a], chunksize=3)) == [10.0] * 3
        b = np.zeros(10)
        executor.submit(_slow_fill, hetflow.W(b), 1.0)
        assert hetflow.map(_total, [b] * 20, executor=executor) == [10.0] * 20  # chunks of 3


@pytest.mark.parametrize("kind", KINDS)
def test_hetflow_map_waits_for_the_earlier_writer_of_its_arrays(kind):
    a = np.zeros(10)
    hetflow.task_submit(_slow_fill, hetflow.W(a), 1.0)
    assert hetflow.map(_total, [a] * 20, executor=kind) == [10.0] * 20


def test_a_later_writer_waits_for_a_chunk_of_thread_calls_reading_its_array():
    with hetflow.Executor(2, executor="thread") as executor:
        a = np.zeros(10)
        results = executor.map(_slow_total, [a, a], chunksize=2)
        executor.submit(_fill, hetflow.W(a), 1.0)
        assert list(results) == [0.0, 0.0]


@pytest.mark.parametrize("kind", KINDS)
def test_access_marks_in_a_chunked_map_act_as_in_calls_of_their_own(kind):
    with hetflow.Executor(2, executor=kind) as executor:
        a = np.zeros(4)
        assert list(executor.map(_increment, [hetflow.RW(a)] * 3, chunksize=3)) == [4.0, 8.0, 12.0]
        assert a.tolist() == [3.0] * 4
        b, c = np.zeros(2), np.zeros(2)
        marks = [hetflow.RW(b), hetflow.RW(c), hetflow.RW(b[::-1])]
        assert list(executor.map(_increment, marks, chunksize=3)) == [2.0, 2.0, 4.0]
        assert b.tolist() == [2.0, 2.0] and c.tolist() == [1.0, 1.0]


# -- hetflow.joblib's blocks of delayed calls ---------------------------------------------------------
def _scaled_total(a, scale=1.0):
    return float(a.sum()) * scale


@pytest.mark.parametrize("kind", KINDS)
def test_joblib_blocks_wait_for_the_earlier_writer_of_their_arrays(kind):
    import hetflow.joblib as hetflow_joblib

    a = np.zeros(10)
    hetflow.task_submit(_slow_fill, hetflow.W(a), 1.0)
    calls = [hetflow_joblib.delayed(_total)(a), hetflow_joblib.delayed(_scaled_total)(a, scale=2.0)] * 2
    assert hetflow_joblib.Parallel(n_jobs=2, executor=kind)(calls) == [10.0, 20.0] * 2
    b = np.zeros(4)
    marked = (hetflow_joblib.delayed(_increment)(hetflow.RW(b)) for _ in range(3))
    assert hetflow_joblib.Parallel(n_jobs=2, executor=kind)(marked) == [4.0, 8.0, 12.0]
