"""Overlapping views of one array passed to the same task: they alias in the task as they do in
numpy, in either executor (a process task's copies of a plain array's views are put over one
buffer in the worker, and each written view is copied home from it)."""
from __future__ import annotations

import numpy as np
import pytest

import hetflow
import hetflow.joblib as hj

EXECUTORS = ["thread", "process"]
ALLOCS = {"numpy": np.array, "shared": hetflow.array}


@pytest.fixture(autouse=True)
def fresh_runtime():
    yield
    hetflow.shutdown()


def addto(out, x):
    out += x


def shift(out, x):
    out[:] = x - 1


def add_in_steps(out, x):
    # Element by element: later steps read what earlier ones wrote through the other view.
    for i in range(len(out)):
        out[i] = out[i] + x[i]


def write_then_read(out, x):
    out[0] = 100.0
    return x.tolist()


def fill(out, value):
    out[...] = value


def fail_after_writing(out, x):
    out[...] = -1.0
    x[...] = -2.0
    raise ValueError("on purpose")


CASES = {
    # name: (function, make the array, the task's marked arguments from the array)
    "rw-rw-halves": (addto, lambda: np.arange(6.0), lambda a: (hetflow.RW(a[:4]), hetflow.RW(a[2:]))),
    "w-rw-shift": (shift, lambda: np.arange(11.0), lambda a: (hetflow.W(a[1:]), hetflow.RW(a[:-1]))),
    "rw-rw-shift": (shift, lambda: np.arange(11.0), lambda a: (hetflow.RW(a[1:]), hetflow.RW(a[:-1]))),
    "steps": (add_in_steps, lambda: np.arange(10.0), lambda a: (hetflow.RW(a[1:]), hetflow.RW(a[:-1]))),
    "strided": (addto, lambda: np.arange(24.0), lambda a: (hetflow.RW(a[::2][:8]), hetflow.RW(a[::3][:8]))),
    "reversed": (add_in_steps, lambda: np.arange(9.0), lambda a: (hetflow.RW(a[::-1][:6]), hetflow.RW(a[2:8]))),
    "rows": (addto, lambda: np.arange(20.0).reshape(5, 4), lambda a: (hetflow.RW(a[:3]), hetflow.RW(a[2:]))),
    "transpose": (addto, lambda: np.arange(16.0).reshape(4, 4), lambda a: (hetflow.RW(a), hetflow.RW(a.T))),
    "three": (
        lambda o, x, y: (addto(o, x), addto(o, y)),
        lambda: np.arange(12.0),
        lambda a: (hetflow.RW(a[:6]), hetflow.RW(a[3:9]), hetflow.R(a[6:])),
    ),
}


def _numpy_result(func, make, marks):
    a = make()
    func(*(mark.value for mark in marks(a)))
    return a


@pytest.mark.parametrize("alloc", list(ALLOCS))
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("case", list(CASES))
def test_overlapping_written_views_in_one_task_alias_as_in_numpy(case, executor, alloc):
    func, make, marks = CASES[case]
    expected = _numpy_result(func, make, marks)
    hetflow.init(ncpus=2, executor=executor)
    a = ALLOCS[alloc](make())
    hetflow.task_submit(func, *marks(a)).result()
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_overlapping_views_as_keyword_arguments(executor):
    expected = np.arange(6.0)
    addto(out=expected[:4], x=expected[2:])
    hetflow.init(ncpus=2, executor=executor)
    a = np.arange(6.0)
    hetflow.task_submit(addto, out=hetflow.RW(a[:4]), x=hetflow.RW(a[2:])).result()
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_read_view_sees_what_the_task_wrote_through_an_overlapping_one(executor):
    hetflow.init(ncpus=2, executor=executor)
    a = np.arange(6.0)
    seen = hetflow.task_submit(write_then_read, hetflow.RW(a[:4]), a[:2]).result()
    assert seen == [100.0, 1.0]
    assert a.tolist() == [100.0, 1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_overlapping_read_views_read_the_array(executor):
    def total(x, y):
        return float(x.sum() + y.sum())

    hetflow.init(ncpus=2, executor=executor)
    a = np.arange(10.0)
    assert hetflow.task_submit(total, a[:6], a[3:]).result() == float(a[:6].sum() + a[3:].sum())
    assert hetflow.task_submit(total, hetflow.R(a[::2]), a[::3]).result() == float(a[::2].sum() + a[::3].sum())
    assert a.tolist() == list(np.arange(10.0))


def test_elements_between_overlapping_strided_views_keep_another_tasks_writes():
    # a[0:8:2] and a[4:12:2] meet at 4 and 6; the odd elements between them belong to a task
    # that may run at the same time: the copy home must leave them alone.
    hetflow.init(ncpus=2, executor="process")
    a = np.zeros(12)
    for _ in range(5):
        hetflow.task_submit(addto, hetflow.RW(a[0:8:2]), hetflow.RW(a[4:12:2]))
        hetflow.task_submit(addto, hetflow.RW(a[1::2]), 7.0)
    hetflow.wait_for_all()
    expected = np.zeros(12)
    for _ in range(5):
        addto(expected[0:8:2], expected[4:12:2])
        addto(expected[1::2], 7.0)
    np.testing.assert_array_equal(a, expected)


def test_many_small_tasks_on_overlapping_views_give_the_sequential_result():
    hetflow.init(ncpus=2, executor="process")
    a = np.arange(8.0)
    expected = a.copy()
    for k in range(30):
        lo = k % 3
        hetflow.task_submit(add_in_steps, hetflow.RW(a[lo + 1 :]), hetflow.RW(a[lo:-1]))
        add_in_steps(expected[lo + 1 :], expected[lo:-1])
    hetflow.wait_for_all()
    np.testing.assert_array_equal(a, expected)


def test_a_failed_task_on_overlapping_views_writes_nothing_home():
    hetflow.init(ncpus=2, executor="process")
    a = np.arange(6.0)
    with pytest.raises(ValueError, match="on purpose"):
        hetflow.task_submit(fail_after_writing, hetflow.RW(a[:4]), hetflow.RW(a[2:])).result()
    assert a.tolist() == list(np.arange(6.0))


def test_one_view_under_two_dtypes_keeps_each_dtype_in_a_process_task():
    def kinds(x, y):
        return x.dtype.str, y.dtype.str, x.tolist()

    hetflow.init(ncpus=2, executor="process")
    a = np.arange(3.0)
    assert hetflow.task_submit(kinds, a, a.view(np.int64)).result() == ("<f8", "<i8", [0.0, 1.0, 2.0])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_joblib_cut_of_overlapping_views_gives_numpy_result_in_one_block(executor):
    expected = np.arange(11.0)
    shift(expected[1:], expected[:-1])
    hetflow.init(ncpus=2)
    b = np.arange(11.0)
    hj.Parallel(n_jobs=1, executor=executor)(hj.delayed(shift)(b[1:], b[:-1]))
    np.testing.assert_array_equal(b, expected)


def test_joblib_cut_of_overlapping_views_is_the_same_in_both_executors():
    hetflow.init(ncpus=2)
    results = {}
    for executor in EXECUTORS:
        b = np.arange(11.0)
        hj.Parallel(n_jobs=3, executor=executor)(hj.delayed(shift)(b[1:], b[:-1]))
        results[executor] = b.tolist()
    assert results["process"] == results["thread"]
