"""numpy views as task data: copy-back of a view's own elements, ordering of overlapping views,
parallelism of disjoint ones, dtypes, and access modes on values that are not arrays."""
from __future__ import annotations

import ctypes
import gc
import threading
import time

import numpy as np
import pytest

import hetflow

EXECUTORS = ["thread", "process"]


@pytest.fixture(autouse=True)
def fresh_runtime():
    yield
    hetflow.shutdown()


def fill(out, value):
    out[...] = value


def append_digit(out, digit):
    # Not commutative: the result spells the order the tasks ran in.
    out[...] = out * 10 + digit


# -- copy-back of plain (non-shared) arrays --------------------------------------------------------
@pytest.mark.parametrize(
    "split",
    [
        lambda a: [a[0::2], a[1::2]],
        lambda a: [a[::-2], a[-2::-2]],
        lambda a: [a[:5000], a[5000:]],
        lambda a: [a[0::3], a[1::3], a[2::3]],
    ],
    ids=["even-odd", "negative-steps", "halves", "thirds"],
)
def test_tasks_on_disjoint_views_of_a_plain_array_keep_each_others_writes(split):
    hetflow.init(ncpus=2, executor="process")
    a = np.zeros(10000)
    parts = split(a)
    for round_ in range(3):
        for value, part in enumerate(parts, start=1):
            hetflow.task_submit(fill, hetflow.RW(part), float(value + 10 * round_))
    hetflow.wait_for_all()
    for value, part in enumerate(split(a), start=1):
        assert (part == value + 20).all()


@pytest.mark.parametrize("order", ["C", "F"])
def test_column_blocks_and_tiles_of_a_plain_matrix(order):
    hetflow.init(ncpus=2, executor="process")
    m = np.zeros((64, 100), order=order)
    hetflow.task_submit(fill, hetflow.W(m[:, :50]), 1.0)
    hetflow.task_submit(fill, hetflow.W(m[:, 50:]), 2.0)
    hetflow.wait_for_all()
    assert (m[:, :50] == 1.0).all() and (m[:, 50:] == 2.0).all()

    tiles = [(i, j) for i in range(0, 64, 16) for j in range(0, 100, 25)]
    for n, (i, j) in enumerate(tiles):
        hetflow.task_submit(fill, hetflow.W(m[i : i + 16, j : j + 25]), float(n))
    hetflow.wait_for_all()
    for n, (i, j) in enumerate(tiles):
        assert (m[i : i + 16, j : j + 25] == n).all()


def test_a_strided_write_leaves_the_elements_between_alone():
    hetflow.init(ncpus=1, executor="process")
    a = np.arange(20.0)
    hetflow.task_submit(fill, hetflow.W(a[3:17:4]), -1.0).result()
    expected = np.arange(20.0)
    expected[3:17:4] = -1.0
    assert (a == expected).all()


# -- ordering of overlapping views ------------------------------------------------------------------
def overlapping_views(a):
    return [a, a[10:20], a[::2], a[15:], a[:-1], a[::-3], a[10:11]]


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("alloc", [np.zeros, hetflow.zeros], ids=["numpy", "shared"])
def test_tasks_on_overlapping_views_run_in_submission_order(executor, alloc):
    hetflow.init(ncpus=2, executor=executor)
    a = alloc(40, dtype=np.int64)
    expected = np.zeros(40, dtype=np.int64)
    for digit in range(1, 10):
        for view, replayed in zip(overlapping_views(a), overlapping_views(expected)):
            hetflow.task_submit(append_digit, hetflow.RW(view), digit)
            append_digit(replayed, digit)
    hetflow.wait_for_all()
    assert (a == expected).all()


def views_numpy_cannot_trace_by_base(a):
    """Views of ``a`` made through another object: numpy's stride tricks, a memoryview, ctypes."""
    return {
        "as_strided": np.lib.stride_tricks.as_strided(a, shape=(a.size - 2, 3), strides=(a.itemsize,) * 2),
        "sliding_window_view": np.lib.stride_tricks.sliding_window_view(a, 3, writeable=True),
        "memoryview": np.asarray(memoryview(a)),
        "ctypes": np.ctypeslib.as_array((ctypes.c_int64 * a.size).from_address(a.ctypes.data)),
    }


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", ["as_strided", "sliding_window_view", "memoryview", "ctypes"])
def test_views_made_through_other_objects_are_ordered_with_the_array(executor, kind):
    hetflow.init(ncpus=2, executor=executor)
    a = np.zeros(12, dtype=np.int64)
    expected = np.zeros(12, dtype=np.int64)
    for digit in range(1, 4):
        for target in (a, views_numpy_cannot_trace_by_base(a)[kind]):
            hetflow.task_submit(append_digit, hetflow.RW(target), digit)
        append_digit(expected, digit)
        append_digit(views_numpy_cannot_trace_by_base(expected)[kind], digit)
    hetflow.wait_for_all()
    assert (a == expected).all(), (a, expected)


@pytest.mark.parametrize("kind", ["as_strided", "sliding_window_view", "memoryview", "ctypes"])
def test_acquire_of_a_view_made_through_another_object_waits_for_the_writer(kind):
    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(12, dtype=np.int64)
    gate = threading.Event()

    def slow_fill(out):
        gate.wait(timeout=30)
        out[...] = 7

    hetflow.task_submit(slow_fill, hetflow.W(a))
    view = views_numpy_cannot_trace_by_base(a)[kind]
    threading.Timer(0.2, gate.set).start()
    with hetflow.acquire(view, "R") as seen:
        assert (seen == 7).all()


def test_an_array_inside_a_root_around_a_smaller_root_is_ordered_with_the_outer_one():
    hetflow.init(ncpus=2, executor="thread")
    buffer = bytearray(800)
    small = np.frombuffer(memoryview(buffer)[80:160], dtype=np.int64)  # a root met first
    hetflow.task_submit(fill, hetflow.W(small), 1).result(timeout=30)
    whole = np.frombuffer(buffer, dtype=np.int64)  # a root around it
    inner = np.frombuffer(memoryview(buffer)[400:480], dtype=np.int64)  # inside whole, not small
    expected = np.zeros(100, dtype=np.int64)
    expected[10:20] = 1  # what the task on small wrote
    for digit in range(1, 5):
        for target, replayed in ((whole, expected), (inner, expected[50:60])):
            hetflow.task_submit(append_digit, hetflow.RW(target), digit)
            append_digit(replayed, digit)
    hetflow.wait_for_all()
    assert (whole == expected).all(), (whole, expected)


def add_one(out):
    out += 1


def gated_append_digit(gate, out, digit):
    gate.wait(timeout=30)
    append_digit(out, digit)


def test_arrays_over_one_buffer_stay_ordered_after_the_array_met_first_goes():
    # The second array lies in the first one's buffer (numpy cannot follow it back): its views
    # are the first one's, and must stay so when the first goes while the bytearray lives on.
    hetflow.init(ncpus=2, executor="thread")
    buffer = bytearray(8 * 4)
    first = np.frombuffer(buffer, dtype=np.int64)
    hetflow.task_submit(append_digit, hetflow.RW(first), 1).result(timeout=30)
    gate = threading.Event()
    second = np.frombuffer(buffer, dtype=np.int64)
    waiting = hetflow.task_submit(gated_append_digit, gate, hetflow.RW(second), 2)
    del first
    gc.collect()
    later = hetflow.task_submit(append_digit, hetflow.RW(np.frombuffer(buffer, dtype=np.int64)), 3)
    for _ in range(20):  # ran at once (unordered) before the fix
        if later.done():
            break
        time.sleep(0.01)
    gate.set()
    waiting.result(timeout=30)
    later.result(timeout=30)
    assert np.frombuffer(buffer, dtype=np.int64)[0] == 123


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_array_met_inside_another_is_still_task_data_after_that_one_goes(executor):
    # Its view (the registry's cache of it included) outlived the first array's handles: the
    # next task on it failed, the handle "has been unregistered".
    hetflow.init(ncpus=2, executor=executor)
    buffer = bytearray(8 * 10)
    first = np.frombuffer(buffer, dtype=np.float64)
    hetflow.task_submit(fill, hetflow.W(first), 1.0).result(timeout=30)
    second = np.frombuffer(buffer, dtype=np.float64)
    hetflow.task_submit(add_one, hetflow.RW(second)).result(timeout=30)
    del first
    gc.collect()
    for _ in range(3):
        hetflow.task_submit(add_one, hetflow.RW(second))
    hetflow.wait_for_all()
    assert (second == 5.0).all(), second


def append_digit_at(out, index, digit):
    out[index] = out[index] * 10 + digit


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("layout", ["inner_first", "partly_overlapping"])
def test_arrays_over_overlapping_parts_of_one_buffer_are_ordered(executor, layout):
    # Neither array is a view of the other for numpy. An array around one met before, or sharing
    # part of its bytes, made a root of its own: the tasks on the two were not ordered.
    hetflow.init(ncpus=2, executor=executor)
    buffer = bytearray(8 * 12)
    if layout == "inner_first":
        first = np.frombuffer(memoryview(buffer)[24:48], dtype=np.int64)  # elements 3 to 5
        hetflow.task_submit(fill, hetflow.W(first), 0).result(timeout=30)
        second = np.frombuffer(buffer, dtype=np.int64)
        shared_first, shared_second = 1, 4  # element 4 of the buffer
    else:
        first = np.frombuffer(memoryview(buffer)[0:64], dtype=np.int64)  # elements 0 to 7
        second = np.frombuffer(memoryview(buffer)[32:96], dtype=np.int64)  # elements 4 to 11
        shared_first, shared_second = 4, 0
    expected = 0
    for digit in range(1, 6):
        hetflow.task_submit(append_digit_at, hetflow.RW(first), shared_first, digit)
        hetflow.task_submit(append_digit_at, hetflow.RW(second[::2]), shared_second // 2, digit)
        expected = expected * 100 + digit * 11
    hetflow.wait_for_all()
    assert first[shared_first] == expected


def read_sum(a):
    return int(a.sum())


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_reader_of_a_view_sees_an_earlier_write_of_the_whole_array(executor):
    hetflow.init(ncpus=2, executor=executor)
    a = np.zeros(1000, dtype=np.int64)
    sums = []
    for value in range(1, 30):
        hetflow.task_submit(fill, hetflow.W(a), value)
        sums.append(hetflow.task_submit(read_sum, a[100:200:3]))
    assert [s.result() for s in sums] == [v * len(range(100, 200, 3)) for v in range(1, 30)]


def meet(barrier, out, value):
    # Returns only if the other task runs at the same time.
    barrier.wait(timeout=10)
    out[...] = value


@pytest.mark.parametrize(
    "shape, split",
    [
        (100, lambda a: (a[:50], a[50:])),
        (100, lambda a: (a[0::2], a[1::2])),
        ((10, 10), lambda a: (a[:, :5], a[:, 5:])),
        ((10, 10), lambda a: (a[:5, :5], a[5:, :5])),
    ],
    ids=["halves", "even-odd", "column-blocks", "tiles"],
)
def test_tasks_on_disjoint_views_run_in_parallel(shape, split):
    hetflow.init(ncpus=2, executor="thread")
    first, second = split(np.zeros(shape))
    barrier = threading.Barrier(2)
    f1 = hetflow.task_submit(meet, barrier, hetflow.RW(first), 1.0)
    f2 = hetflow.task_submit(meet, barrier, hetflow.RW(second), 2.0)
    f1.result()
    f2.result()
    assert (first == 1.0).all() and (second == 2.0).all()


@pytest.mark.parametrize(
    "shape, split, crossing",
    [
        (100, lambda a: (a[:50], a[50:]), lambda a: a[40:60]),
        (100, lambda a: (a[0::2], a[1::2]), lambda a: a[10:20]),
        ((10, 10), lambda a: (a[:, :5], a[:, 5:]), lambda a: a[2:5]),
        ((10, 10), lambda a: (a[:5, :5], a[5:, :5]), lambda a: a[3:7]),
    ],
    ids=["halves", "even-odd", "column-blocks", "tiles"],
)
@pytest.mark.parametrize("used_first", ["whole", "crossing"])
def test_disjoint_views_stay_parallel_after_a_view_meeting_both_was_used(shape, split, crossing, used_first):
    hetflow.init(ncpus=2, executor="thread")
    whole = np.zeros(shape)
    hetflow.task_submit(fill, hetflow.W(whole), 0.5)
    if used_first == "crossing":
        hetflow.task_submit(fill, hetflow.W(crossing(whole)), 0.5)
    first, second = split(whole)
    barrier = threading.Barrier(2)
    f1 = hetflow.task_submit(meet, barrier, hetflow.RW(first), 1.0)
    f2 = hetflow.task_submit(meet, barrier, hetflow.RW(second), 2.0)
    total = hetflow.task_submit(np.sum, whole)  # a whole read waits for both
    f1.result(timeout=60)
    f2.result(timeout=60)
    expected = np.full(shape, 0.5)
    for part, value in zip(split(expected), (1.0, 2.0)):
        part[...] = value
    assert total.result(timeout=60) == expected.sum()
    # A reader of one part and a writer of the other meet too; a whole write waits for both.
    barrier = threading.Barrier(2)
    reader = hetflow.task_submit(meet_and_sum, barrier, first)
    writer = hetflow.task_submit(meet, barrier, hetflow.W(second), 3.0)
    hetflow.task_submit(fill, hetflow.W(whole), 4.0)
    assert reader.result(timeout=60) == 1.0 * first.size
    writer.result(timeout=60)
    assert hetflow.task_submit(np.sum, whole).result(timeout=60) == 4.0 * whole.size


def meet_and_sum(barrier, x):
    barrier.wait(timeout=10)
    return float(x.sum())


_SHARED_WITH_TASKS: dict = {}


def write_half_and_the_other_in_a_child(mine):
    mine[...] = 1.0
    other = _SHARED_WITH_TASKS["other"]  # not this task's data: a child may write it
    child = hetflow.task_submit(fill, hetflow.W(other), 2.0)
    child.result()  # a wait for a task on a disjoint view: it may end
    return float(other.sum())


@pytest.mark.parametrize("used_first", ["whole", "crossing"])
def test_a_task_may_wait_for_a_child_on_a_disjoint_view_of_an_array_used_so(used_first):
    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(100)
    hetflow.task_submit(fill, hetflow.W(a if used_first == "whole" else a[40:60]), 7.0)
    _SHARED_WITH_TASKS["other"] = a[50:]
    try:
        parent = hetflow.task_submit(write_half_and_the_other_in_a_child, hetflow.W(a[:50]))
        assert parent.result(timeout=60) == 100.0
    finally:
        _SHARED_WITH_TASKS.clear()
    with hetflow.acquire(a, "R") as done:
        assert (done[:50] == 1.0).all() and (done[50:] == 2.0).all()


def test_a_failed_part_write_fails_whole_reads_only_until_a_whole_write():
    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(100)
    hetflow.task_submit(fill, hetflow.W(a), 1.0).result(timeout=60)
    bad = hetflow.task_submit(fail_writing, hetflow.W(a[:50]))
    other_part = hetflow.task_submit(np.sum, a[50:])
    whole = hetflow.task_submit(np.sum, a)
    with pytest.raises(ValueError):
        bad.result(timeout=60)
    assert other_part.result(timeout=60) == 50.0
    with pytest.raises(hetflow.DependencyError):
        whole.result(timeout=60)
    hetflow.task_submit(fill, hetflow.W(a), 3.0)
    assert hetflow.task_submit(np.sum, a).result(timeout=60) == 300.0


def fail_writing(out):
    raise ValueError("on purpose")


def acquire_the_other_half(mine):
    mine[...] = 1.0
    with hetflow.acquire(_SHARED_WITH_TASKS["other"], "RW") as other:  # disjoint from its own view
        other[...] = 2.0
    return "acquired"


def test_a_task_may_acquire_a_view_disjoint_from_its_own_after_the_whole_array_was_used():
    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(100)
    hetflow.task_submit(fill, hetflow.W(a), 7.0)
    _SHARED_WITH_TASKS["other"] = a[50:]
    try:
        assert hetflow.task_submit(acquire_the_other_half, hetflow.W(a[:50])).result(timeout=60) == "acquired"
    finally:
        _SHARED_WITH_TASKS.clear()
    assert (a[:50] == 1.0).all() and (a[50:] == 2.0).all()


def test_acquiring_the_whole_array_forgets_the_failure_its_views_kept():
    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(100)
    hetflow.task_submit(np.sum, a[:10]).result(timeout=60)  # a view inside a, met first
    with pytest.raises(ValueError):
        hetflow.task_submit(fail_writing, hetflow.RW(a)).result(timeout=60)
    with hetflow.acquire(a, "RW") as view:  # the program takes the data as they are
        view[...] = 5.0
    assert hetflow.task_submit(np.sum, a).result(timeout=60) == 500.0
    assert hetflow.task_submit(np.sum, a[:10]).result(timeout=60) == 50.0


def add_one_to_each(*arrays):
    for x in arrays:
        x += 1


@pytest.mark.parametrize("through", ["the same arrays", "overlapping views"])
def test_an_acquire_behind_what_this_thread_holds_is_refused_not_waited_for(through):
    hetflow.init(ncpus=2, executor="thread")
    if through == "the same arrays":
        held, wanted = np.zeros(10), np.zeros(10)
        arrays = (held, wanted)
    else:
        a = np.zeros(100)
        held, wanted = a[:50], a[60:70]
        arrays = (a[::2],)  # overlaps both
    with hetflow.acquire(held, "RW"):
        queued_task = hetflow.task_submit(add_one_to_each, *[hetflow.RW(x) for x in arrays])  # waits for the release
        with pytest.raises(RuntimeError, match="would never end"):
            hetflow.acquire(wanted, "R")
    queued_task.result(timeout=60)


def test_tiles_are_independent_and_the_whole_matrix_orders_after_them():
    hetflow.init(ncpus=2, executor="thread")
    m = np.zeros((64, 64))
    registry = hetflow._runtime.current().handles
    tiles = [m[i : i + 8, j : j + 8] for i in range(0, 64, 8) for j in range(0, 64, 8)]
    for tile in tiles:
        registry.view(tile, "RW")
    assert all(not registry.view(tile, "R").overlaps for tile in tiles)
    whole = registry.view(m, "R")
    assert len(whole.overlaps) == len(tiles)
    assert all(list(registry.view(tile, "R").overlaps) == [whole] for tile in tiles)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_acquire_of_a_view_waits_for_tasks_on_overlapping_views(executor):
    hetflow.init(ncpus=2, executor=executor)
    a = np.zeros(100, dtype=np.int64)
    for digit in range(1, 6):
        hetflow.task_submit(append_digit, hetflow.RW(a), digit)
    with hetflow.acquire(a[40:60], "R") as view:
        assert (view == 12345).all()
    for digit in range(6, 9):
        hetflow.task_submit(append_digit, hetflow.RW(a[::2]), digit)
    with hetflow.acquire(a, "R") as whole:
        assert (whole[::2] == 12345678).all() and (whole[1::2] == 12345).all()


# -- ndarray subclasses -----------------------------------------------------------------------------
def masked_mean(x):
    return type(x).__name__, float(x.mean())


def square(m):
    return type(m).__name__, (m * m).tolist()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_subclasses_keep_what_they_hold_in_every_executor(executor):
    hetflow.init(ncpus=2, executor=executor)
    masked = np.ma.masked_array([1.0, 2.0, 1000.0], mask=[False, False, True])
    assert hetflow.task_submit(masked_mean, masked).result(timeout=30) == ("MaskedArray", 1.5)
    matrix = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    assert hetflow.task_submit(square, matrix).result(timeout=30) == ("matrix", [[7.0, 10.0], [15.0, 22.0]])
    assert [r[1] for r in hetflow.map(masked_mean, [masked, masked])] == [1.5, 1.5]


def test_a_process_task_reads_a_subclass_after_its_earlier_writer():
    hetflow.init(ncpus=2, executor="process")
    masked = np.ma.masked_array(np.zeros(3), mask=[False, False, True])
    gate = threading.Event()

    def slow_fill(x):
        gate.wait(timeout=30)
        x[...] = 4.0

    hetflow.task_submit.options(executor="thread")(slow_fill, hetflow.W(masked))
    threading.Timer(0.2, gate.set).start()
    assert hetflow.task_submit(masked_mean, masked).result(timeout=30) == ("MaskedArray", 4.0)


def test_the_program_may_acquire_a_subclass_a_process_task_read():
    # Its read for the task (waiting for the writers) stayed in this thread's acquisitions, and
    # an acquisition to write it was refused as one that would wait for that read.
    hetflow.init(ncpus=2, executor="process")
    masked = np.ma.masked_array(np.arange(3.0), mask=[False, False, True])
    assert hetflow.task_submit(masked_mean, masked).result(timeout=30) == ("MaskedArray", 0.5)
    with hetflow.acquire(masked, "RW") as held:
        held[0] = 7.0
    assert masked.data.tolist() == [7.0, 1.0, 2.0]


@pytest.mark.parametrize("mark", [hetflow.W, hetflow.RW])
def test_a_process_task_may_not_write_a_subclass(mark):
    hetflow.init(ncpus=2, executor="process")
    masked = np.ma.masked_array(np.zeros(3), mask=[False, False, True])
    with pytest.raises(TypeError, match="cannot write a MaskedArray"):
        hetflow.task_submit(fill, mark(masked), 1.0)
    replayed = masked.copy()
    fill(replayed, 1.0)
    assert hetflow.task_submit.options(executor="thread")(fill, mark(masked), 1.0).result(timeout=30) is None
    assert masked.tolist() == replayed.tolist()


# -- dtypes -----------------------------------------------------------------------------------------
def set_first(items):
    items[0] = "changed"


def test_object_arrays_are_refused_by_process_tasks():
    hetflow.init(ncpus=1, executor="process")
    items = np.array(["a", None, 3], dtype=object)
    for mark in (hetflow.R, hetflow.W, hetflow.RW):
        with pytest.raises(TypeError, match="object arrays hold pointers into this process"):
            hetflow.task_submit(set_first, mark(items))
    with pytest.raises(TypeError, match="executor='thread'"):
        hetflow.task_submit(set_first, items)


def test_object_arrays_work_in_thread_tasks():
    hetflow.init(ncpus=1, executor="thread")
    items = np.array(["a", None, 3], dtype=object)
    hetflow.task_submit(set_first, hetflow.RW(items)).result()
    assert items[0] == "changed"


def bump_structured(records):
    assert records.dtype.names == ("id", "pos", "name")
    records["id"] += 100
    records["pos"][:, 1] = records["id"] * 2.0
    return records["name"].tolist()


@pytest.mark.parametrize("alloc", ["numpy", "shared"])
def test_structured_arrays_keep_their_fields_in_process_tasks(alloc):
    hetflow.init(ncpus=1, executor="process")
    dtype = np.dtype([("id", "<i4"), ("pos", "<f8", (2,)), ("name", "S4")], align=True)
    records = np.zeros(5, dtype=dtype)
    if alloc == "shared":
        records = hetflow.zeros(5, dtype=dtype)
    records["id"] = np.arange(5)
    records["name"] = [b"a", b"b", b"c", b"d", b"e"]
    names = hetflow.task_submit(bump_structured, hetflow.RW(records[1:4])).result()
    assert names == [b"b", b"c", b"d"]
    assert records["id"].tolist() == [0, 101, 102, 103, 4]
    assert records["pos"][:, 1].tolist() == [0.0, 202.0, 204.0, 206.0, 0.0]


# -- access modes on values that are not arrays ---------------------------------------------------
def append_one(items):
    items.append(1)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("value", [[], {}, bytearray(4)], ids=["list", "dict", "bytearray"])
@pytest.mark.parametrize("mark", [hetflow.W, hetflow.RW], ids=["W", "RW"])
def test_write_modes_on_non_arrays_are_refused(executor, value, mark):
    hetflow.init(ncpus=1, executor=executor)
    with pytest.raises(TypeError, match="needs a numpy array.*numpy.frombuffer"):
        hetflow.task_submit(append_one, mark(value))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_reading_a_non_array_is_allowed(executor):
    hetflow.init(ncpus=1, executor=executor)
    assert hetflow.task_submit(len, hetflow.R([1, 2, 3])).result() == 3


def test_acquire_of_a_non_array_is_a_type_error():
    hetflow.init(ncpus=1, executor="thread")
    with pytest.raises(TypeError, match="takes a numpy array, not list"):
        hetflow.acquire([1, 2, 3])


def test_a_task_acquiring_its_own_array_gets_an_error_not_a_hang():
    other = np.zeros(3)  # not an argument of the task: the task does not use it

    def grab(whole):
        try:
            with hetflow.acquire(whole[2:5], "R"):  # overlaps the array the task writes
                return "acquired"
        except RuntimeError as error:
            message = str(error)
        with hetflow.acquire(other, "RW") as view:
            view[0] = 7.0
        return message

    with hetflow.init(ncpus=1, executor="thread"):
        message = hetflow.submit(grab, hetflow.RW(np.zeros(10))).result(timeout=30)
    assert "would wait for that task" in message
    assert other[0] == 7.0


def leave_a_writer_behind(x):
    import time

    import hetflow

    def late_add(y):
        time.sleep(0.3)
        y += 100

    hetflow.task_submit.options(executor="thread")(late_add, hetflow.RW(x))  # not waited for


def test_a_process_task_ends_once_the_tasks_it_left_in_its_worker_have():
    # The worker replied as soon as the function returned: the late write was lost, and landed
    # in the copy of another array, which the next task over it got.
    hetflow.init(ncpus=1, nprocs=1, executor="process")
    a = np.zeros(256)
    hetflow.task_submit(leave_a_writer_behind, hetflow.RW(a)).result(timeout=60)
    assert (a == 100).all()
    b = np.zeros(256)
    hetflow.task_submit(np.add, b, 1, out=hetflow.W(b)).result(timeout=60)
    assert (b == 1).all()


def write_99_then_fail(x):
    x[...] = 99
    raise RuntimeError("boom")


def set_field_x(v):
    v["x"] = 1.0


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_write_through_a_dtype_with_padding_does_not_take_over_the_bytes_it_skips(executor):
    # W on a view whose items have bytes no field covers was taken as rewriting them: a reader of
    # those bytes after a failed writer ran on what the failed task left (99s).
    hetflow.init(ncpus=1, nprocs=1, executor=executor)
    a = np.arange(8.0)
    hetflow.task_submit(write_99_then_fail, hetflow.RW(a[1::2]))
    padded = np.dtype({"names": ["x"], "formats": ["f8"], "offsets": [0], "itemsize": 16})
    hetflow.task_submit(set_field_x, hetflow.W(a.view(padded)))
    reader = hetflow.task_submit(np.copy, a[1::2])
    with pytest.raises(hetflow.DependencyError):
        reader.result(timeout=60)


def same(x):
    return x


def test_a_process_task_returning_what_it_only_read_gives_an_array_to_change():
    # The argument reaches the task read-only; returned as it is, it came back read-only.
    hetflow.init(ncpus=1, nprocs=1, executor="process")
    result = hetflow.task_submit(same, np.arange(4.0)).result(timeout=60)
    result += 1
    assert result.tolist() == [1.0, 2.0, 3.0, 4.0]


# -- views let go while their array lives ----------------------------------------------------------
def views_kept(runtime, array):
    root = runtime.handles._root_of(array)
    return len(root.views) + len(root.resting)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_tasks_on_ever_new_slices_of_a_long_lived_array_keep_few_views(executor):
    # Each window was kept as long as the array lived: a service working through one buffer grew
    # without end, and with overlapping windows each new task declared every window it met.
    hetflow.init(ncpus=2, nprocs=2, executor=executor)
    runtime = hetflow._runtime.current()
    steps, width = 1500, 4
    a = np.zeros(steps + width)
    most = 0
    for start in range(steps):
        task = hetflow.submit(add_one, hetflow.RW(a[start : start + width]))
        if start % 8 == 7:
            task.result(timeout=60)
        most = max(most, views_kept(runtime, a))
    hetflow.wait_for_all()
    expected = np.zeros_like(a)
    for start in range(steps):
        expected[start : start + width] += 1
    np.testing.assert_array_equal(a, expected)
    assert most <= 4 * hetflow._data._VIEWS_BEFORE_SWEEP, most


def test_a_view_set_aside_is_let_go_only_once_nothing_holds_it():
    hetflow.init(ncpus=1, executor="thread")
    registry = hetflow._runtime.current().handles
    a = np.zeros(100_000)
    held = registry.view(a[0:2], "RW")
    root = registry._root_of(a)
    fresh = iter(range(1, len(a) - 2))

    def sweep():  # registers new views until the next sweep has run
        for _ in range(root.sweep_at - len(root.views)):
            start = next(fresh)
            registry.view(a[start : start + 2], "RW")

    sweep()  # finds it at rest
    sweep()  # finds it unused since: set aside
    assert held in root.resting.values()
    assert registry.view(a[0:2], "RW") is held  # met again before it went: taken back
    sweep()
    sweep()
    assert held in root.resting.values()
    set_aside_with_it = {view.key for view in root.resting.values() if view is not held}
    assert len(set_aside_with_it) > 100
    sweep()  # a thread holding it may still submit a task on it: kept
    assert held in root.resting.values() and held.handle.registered()
    assert not any(view.key in set_aside_with_it for view in hetflow._data._views_of(root))  # the others went
    held_id = id(held)
    del held
    sweep()  # lets it go: the View dies (no View is made after, so none can take its address)
    assert all(id(view) != held_id for view in hetflow._data._views_of(root))
    assert len(hetflow._data._views_of(root)) < 4 * hetflow._data._VIEWS_BEFORE_SWEEP


def fail_on(out):
    out[...] = -1.0
    raise ValueError("on purpose")


def test_a_view_whose_last_writer_failed_is_kept_for_its_readers():
    hetflow.init(ncpus=1, executor="thread")
    sweep = hetflow._data._VIEWS_BEFORE_SWEEP
    a = np.zeros(4 * sweep)
    failed = hetflow.submit(fail_on, hetflow.W(a[0:2]))
    with pytest.raises(ValueError):
        failed.result(timeout=60)
    for i in range(2, 4 * sweep - 2):
        hetflow.submit(add_one, hetflow.RW(a[i : i + 2])).result(timeout=60)
    with pytest.raises(hetflow.DependencyError):
        hetflow.submit(np.copy, a[0:4]).result(timeout=60)


def test_a_ctrl_c_while_views_are_let_go_leaves_the_registry_whole(monkeypatch):
    # A KeyboardInterrupt between two steps of a sweep left views let go (handles unregistered)
    # still set aside, taken back when met again ("has been unregistered"), or half out of the
    # overlaps and spans (every later sweep raised IndexError): the program that caught the
    # Ctrl-C and went on could not use the array any more. The SIGINT comes from inside the
    # sweep, its handler running at the next bytecode, as a terminal's or a timer's would.
    import signal

    # A program started in the background by a shell (a CI's, say) inherits SIGINT ignored, and
    # Python installs no KeyboardInterrupt handler then: installed here, as in a terminal.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_sweeps(monkeypatch, signal)
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def _interrupt_sweeps(monkeypatch, signal):
    monkeypatch.setattr(hetflow._data, "_VIEWS_BEFORE_SWEEP", 8)
    let_go = hetflow._data.HandleRegistry._let_go
    calls = [0]

    def interrupted_let_go(self, root, view):
        let_go(self, root, view)
        calls[0] += 1
        if calls[0] in (3, 40):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(hetflow._data.HandleRegistry, "_let_go", interrupted_let_go)
    hetflow.init(ncpus=2, executor="thread")
    n, width = 200, 4
    a = np.zeros(n)
    expected = np.zeros(n)
    interrupts = 0
    for round_ in range(6):
        for start in range(round_ % 2, n - width, 2):  # new windows, then those of two rounds before
            try:
                task = hetflow.submit(add_one, hetflow.RW(a[start : start + width]))
            except KeyboardInterrupt:
                interrupts += 1
                continue  # not submitted
            expected[start : start + width] += 1
            task.result(timeout=60)  # at rest by the next sweep
    hetflow.wait_for_all()
    assert calls[0] >= 40 and interrupts == 2
    np.testing.assert_array_equal(a, expected)


def test_acquiring_ever_new_windows_keeps_no_record_of_each():
    hetflow.init(ncpus=1, executor="thread")
    registry = hetflow._runtime.current().handles
    a = np.zeros(5000)
    for start in range(0, 4000):
        with hetflow.acquire(a[start : start + 4], "RW") as window:
            window += 1
        registry.read_now(a[start : start + 2])  # as bring_home and a codelet's result do
    assert len(registry._acquired) == 0  # a key (and an empty list) per window acquired, for good
    assert a[10] == 4
