"""numpy arrays as task data: ordering by access mode, shared memory, host access."""
from __future__ import annotations

import os
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
    out[:] = value


def add_into(out, a):
    out += a


def append_digit(out, digit):
    # Not commutative: the result spells the order the tasks ran in.
    out[0] = out[0] * 10 + digit


def total(a):
    return float(a.sum())


def slow_total(a, delay):
    time.sleep(delay)
    return float(a.sum())


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("alloc", [np.zeros, hetflow.zeros], ids=["numpy", "shared"])
def test_writes_are_ordered_and_seen_by_later_readers(executor, alloc):
    hetflow.init(ncpus=2, executor=executor)
    a, b = alloc(500), alloc(500)
    hetflow.submit(fill, hetflow.W(a), 1.0)
    hetflow.submit(fill, hetflow.W(b), 2.0)
    for _ in range(20):
        hetflow.submit(add_into, hetflow.RW(a), b)
    assert hetflow.submit(total, a).result() == 500 * 41.0
    hetflow.wait_for_all()
    assert a[0] == 41.0 and b[-1] == 2.0  # the caller's own arrays hold the results


@pytest.mark.parametrize("executor", EXECUTORS)
def test_writers_run_in_submission_order(executor):
    hetflow.init(ncpus=2, executor=executor)
    out = np.zeros(1, dtype=np.int64)
    for digit in range(1, 10):
        hetflow.submit(append_digit, hetflow.RW(out), digit)
    hetflow.wait_for_all()
    assert out[0] == 123456789


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_writer_waits_for_earlier_readers(executor):
    hetflow.init(ncpus=2, executor=executor)
    a = np.ones(100)
    reader = hetflow.submit(slow_total, a, 0.3)  # R by default
    hetflow.submit(fill, hetflow.W(a), 5.0)
    assert reader.result() == 100.0  # read before the write, although the write was ready first
    hetflow.wait_for_all()
    assert a[0] == 5.0


def test_access_modes_from_delayed():
    hetflow.init(ncpus=2, executor="process")
    scale = hetflow.delayed(access={"out": "W"})(fill)
    out = np.zeros(10)
    scale(out, 3.0).result()
    assert (out == 3.0).all()


DEFAULT_OUT = np.zeros(3)


def add_into_default(x, out=DEFAULT_OUT):
    out += x


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_access_to_a_parameter_left_to_its_default_is_tracked(executor):
    # The default was not marked: a process task wrote its copy (the writes were lost), and
    # thread tasks wrote it unordered.
    hetflow.init(ncpus=2, executor=executor)
    DEFAULT_OUT[:] = 0
    add = hetflow.delayed(access={"out": "RW"})(add_into_default)
    for future in [add(1) for _ in range(5)]:
        future.result()
    assert DEFAULT_OUT.tolist() == [5.0, 5.0, 5.0]


def scaled_or_into(a, out=None):
    if out is None:
        return a * 2
    out[:] = a * 2
    return None


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_parameter_left_to_a_default_of_none_is_not_marked(executor):
    # numpy's `out=None` idiom: called without `out`, the task got hetflow.W(None), refused with
    # "access mode W needs a numpy array, not NoneType", an argument the call never gave.
    hetflow.init(ncpus=2, executor=executor)
    scale = hetflow.delayed(access={"out": "W"})(scaled_or_into)
    assert scale(np.arange(3.0)).result().tolist() == [0.0, 2.0, 4.0]
    out = np.zeros(3)
    assert scale(np.arange(3.0), out).result() is None
    assert out.tolist() == [0.0, 2.0, 4.0]


def test_a_mark_on_a_parameter_with_an_access_from_delayed_is_refused():
    # It was wrapped twice: an AttributeError from inside hetflow, or the task got the wrapper.
    scale = hetflow.delayed(access={"out": "R"})(fill)
    with pytest.raises(TypeError, match=r"parameter 'out' .* access mode 'R' from delayed\(access=...\) and is marked hetflow\.RW"):
        scale(hetflow.RW(np.zeros(3)), 1.0)


def test_access_names_must_be_parameters():
    with pytest.raises(ValueError, match="'nope', which is not a parameter"):
        hetflow.delayed(access={"nope": "RW"})(fill)


def test_unknown_access_mode():
    with pytest.raises(ValueError, match="unknown access mode 'X'"):
        hetflow.RW  # noqa: B018 - the wrappers exist
        hetflow.Access(np.zeros(1), "X")


def test_writing_a_read_only_array_is_refused():
    hetflow.init(ncpus=1, executor="thread")
    a = np.zeros(4)
    a.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        hetflow.submit(fill, hetflow.W(a), 1.0)


def write_then_wait(a, flag_index):
    # Writes into the host's array, then waits for the host to answer in the same memory.
    a[0] = 1.0
    deadline = time.time() + 10
    while a[flag_index] == 0.0:
        if time.time() > deadline:
            return "no answer"
        time.sleep(0.01)
    return "answered"


def test_shared_arrays_are_not_copied():
    # Only memory shared without a copy lets the host see a write of a task that is still
    # running, and the task see the host's answer.
    hetflow.init(ncpus=1, executor="process")
    a = hetflow.zeros(2)
    task = hetflow.submit(write_then_wait, hetflow.RW(a), 1)
    deadline = time.time() + 10
    while a[0] == 0.0 and time.time() < deadline:
        time.sleep(0.01)
    assert a[0] == 1.0
    a[1] = 1.0
    assert task.result() == "answered"


def pid_and_sum(a):
    return os.getpid(), float(a.sum())


def test_plain_arrays_are_copied_in_for_process_tasks():
    hetflow.init(ncpus=1, executor="process")
    a = np.arange(10.0)
    pid, value = hetflow.submit(pid_and_sum, a).result()
    assert pid != os.getpid() and value == 45.0


def test_views_and_strides_reach_process_tasks_intact():
    hetflow.init(ncpus=1, executor="process")
    base = np.arange(24.0).reshape(4, 6)
    for view in (base[:, ::2], base[::-1], base.T, base[1:3, 2:5]):
        assert hetflow.submit(total, view).result() == float(view.sum())
    shared = hetflow.array(base)
    assert hetflow.submit(total, shared[::2, 1::3]).result() == float(base[::2, 1::3].sum())


def _write_first(a):
    a[0] = 42
    return "wrote"


def test_process_tasks_get_what_they_only_read_read_only():
    """As a thread task would get it: a write to an array passed for reading raises, rather than
    landing in shared memory the caller and other readers share, or being lost with a copy."""
    hetflow.init(ncpus=1, executor="process")
    for made in (hetflow.zeros, np.zeros):
        data = made(4)
        with pytest.raises(ValueError, match="read-only"):
            hetflow.submit(_write_first, data).result()
        with pytest.raises(ValueError, match="read-only"):
            hetflow.submit(_write_first, hetflow.R(data)).result()
        assert data.tolist() == [0.0] * 4
        assert hetflow.submit(_write_first, hetflow.RW(data)).result() == "wrote"
        assert data.tolist() == [42.0, 0.0, 0.0, 0.0]
        # The same view read and written by one task is writable there.
        assert hetflow.submit(lambda x, y: _write_first(y), hetflow.R(data), hetflow.W(data)).result() == "wrote"


def test_shared_allocation_functions():
    assert hetflow.empty((2, 3), dtype=np.int32).shape == (2, 3)
    assert (hetflow.zeros(5) == 0).all()
    assert (hetflow.ones((2, 2), dtype=np.float32) == 1).all()
    copy = hetflow.array([[1, 2], [3, 4]])
    assert copy.tolist() == [[1, 2], [3, 4]]
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    assert hetflow.array(fortran).flags.f_contiguous and hetflow.array(fortran).tolist() == fortran.tolist()
    assert hetflow.array(fortran, order="C").flags.c_contiguous
    assert hetflow.array(np.arange(6.0).reshape(2, 3)).flags.c_contiguous
    with pytest.raises(ValueError, match="order must be"):
        hetflow.array([1], order="X")
    with pytest.raises(ValueError, match="bad shape"):
        hetflow.empty((-1, 2))


@pytest.mark.parametrize("dtype", ["S3", "U2", "V4", [("a", "S2"), ("b", "f4")], "f8", "c16", "?", "i2", object])
@pytest.mark.parametrize("order", ["C", "F"])
def test_zeros_and_ones_hold_what_numpys_do(dtype, order):
    for ours, theirs in ((hetflow.zeros, np.zeros), (hetflow.ones, np.ones)):
        made, expected = ours((2, 3), dtype=dtype, order=order), theirs((2, 3), dtype=dtype, order=order)
        assert made.dtype == expected.dtype and made.flags.f_contiguous == expected.flags.f_contiguous
        if made.dtype.hasobject:
            assert made.tolist() == expected.tolist()
        else:
            assert made.tobytes(order="A") == expected.tobytes(order="A"), (ours.__name__, dtype)


def test_shared_arrays_beyond_the_machine_are_refused():
    assert hetflow.zeros(np.int64(3)).tolist() == [0.0, 0.0, 0.0]  # a numpy integer as the shape
    # Shared memory more than the machine has would be taken page by page until the kernel kills
    # a process: refused at once, as numpy.empty refuses it.
    with pytest.raises(MemoryError, match="more than this machine's memory and swap"):
        hetflow.zeros(2**50)
    with pytest.raises(ValueError, match="is too big"):
        hetflow.empty(2**62)


def test_acquire_waits_for_writers_and_holds_later_tasks():
    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(1, dtype=np.int64)
    hetflow.submit(append_digit, hetflow.RW(a), 1)
    with hetflow.acquire(a, "RW") as view:
        assert view[0] == 1  # the earlier writer is done
        later = hetflow.submit(append_digit, hetflow.RW(a), 2)
        time.sleep(0.2)
        assert not later.done()  # held back while the host has the array
        view[0] = 7
    later.result()
    assert a[0] == 72


def test_an_acquisition_that_would_wait_for_one_this_thread_holds_is_refused():
    hetflow.init(ncpus=1, executor="thread")
    a = np.zeros(8)
    with hetflow.acquire(a, "RW"):
        with pytest.raises(RuntimeError, match="this thread holds an acquisition"):
            hetflow.acquire(a, "R")
        with pytest.raises(RuntimeError, match="this thread holds an acquisition"):
            hetflow.acquire(a[:4], "RW")  # an overlapping view
    with hetflow.acquire(a, "R"), hetflow.acquire(a, "R"):  # readers do not wait for each other
        pass
    assert hetflow.submit(fill, hetflow.W(a), 1.0).result(timeout=30) is None


def test_waiting_for_a_task_behind_an_acquisition_this_thread_holds_is_refused():
    import concurrent.futures
    import threading

    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(8)
    out = np.zeros(8)
    with hetflow.acquire(a[:4], "W") as view:  # a view: the task on the whole array waits for it too
        copy = hetflow.submit(np.copyto, hetflow.W(out), hetflow.R(a))
        with pytest.raises(RuntimeError, match="cannot start before this thread releases what it holds"):
            copy.result()
        with pytest.raises(RuntimeError, match="waiting for every task would never end"):
            hetflow.wait_for_all()
        with pytest.raises(concurrent.futures.TimeoutError):
            copy.result(timeout=0.05)  # a wait with a deadline ends at it
        # concurrent.futures' waits too (they hung): for all, for the first, one by one.
        for wait in (
            lambda: concurrent.futures.wait([copy]),
            lambda: concurrent.futures.wait([copy], return_when=concurrent.futures.FIRST_COMPLETED),
            lambda: list(concurrent.futures.as_completed([copy])),
        ):
            with pytest.raises(RuntimeError, match="cannot start before this thread releases what it holds"):
                wait()
        other = hetflow.submit(int, 3)
        done, _ = concurrent.futures.wait([copy, other], return_when=concurrent.futures.FIRST_COMPLETED)
        assert done == {other}  # the first of several ends with one that can
        with pytest.raises(RuntimeError, match="cannot start before this thread releases what it holds"):
            concurrent.futures.wait([copy, other])
        assert hetflow.submit(int, 3).result(timeout=30) == 3  # tasks behind nothing still run
        elsewhere = threading.Thread(target=copy.result)  # another thread may wait for the release
        elsewhere.start()
        view[:] = 5
    elsewhere.join(timeout=30)
    assert not elsewhere.is_alive()
    assert hetflow.wait_for_all(timeout=30)
    assert list(out) == [5, 5, 5, 5, 0, 0, 0, 0]


def test_shutdown_releases_what_the_calling_thread_holds():
    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(4)
    b = np.zeros(4)
    with hetflow.acquire(a, "W") as view:
        view[:] = 3
        copy = hetflow.submit(np.copyto, hetflow.W(b), hetflow.R(a))
        hetflow.shutdown(timeout=60)  # it hung: the copy waited for this hold
        assert copy.done() and list(b) == [3, 3, 3, 3]
    # a release after the shutdown (leaving the with block) does nothing


def test_ctrl_c_interrupts_an_acquire_and_the_data_is_not_left_held(tmp_path):
    from hf_subprocess import run_script

    rc, out, err = run_script(
        tmp_path,
        """
import os, signal, threading, time
import numpy as np
import hetflow

hetflow.init(ncpus=2, executor="thread")
a = np.zeros(4)
started = threading.Event()

def slow(x):
    started.set()
    time.sleep(1.5)
    x += 1

hetflow.submit(slow, hetflow.RW(a))
started.wait(30)
threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    hetflow.acquire(a, "R")
    print("NOT INTERRUPTED")
except KeyboardInterrupt:
    print("INTERRUPTED")
after = hetflow.submit(lambda x: float(x[0]), hetflow.RW(a))
print("AFTER", after.result(timeout=30))  # the acquisition that came later was let go
""",
    )
    assert rc == 0, err
    assert "INTERRUPTED" in out and "NOT INTERRUPTED" not in out, out
    assert "AFTER 1.0" in out, out


def test_release_without_acquire_is_an_error():
    hetflow.init(ncpus=1, executor="thread")
    with pytest.raises(ValueError, match="not acquired"):
        hetflow.release(np.zeros(3))


def test_release_by_array():
    hetflow.init(ncpus=1, executor="thread")
    a = np.zeros(3)
    hetflow.acquire(a, "W")
    task = hetflow.submit(fill, hetflow.W(a), 2.0)
    time.sleep(0.1)
    assert not task.done()
    hetflow.release(a)
    task.result()
    assert a[0] == 2.0


def test_arrays_that_die_let_their_handles_go():
    hetflow.init(ncpus=1, executor="thread")
    runtime = hetflow._runtime.current()
    for _ in range(50):
        a = np.zeros(16)
        hetflow.submit(fill, hetflow.W(a), 1.0).result()
        del a
    import gc

    gc.collect()
    assert len(runtime.handles._handles) <= 1


def echo(*args):
    return args


def test_tasks_over_known_arrays_are_submitted_in_one_call():
    """A thread task over plain values and arrays whose views were met before is submitted by the
    extension in one call (submit_call); what it declines, having submitted nothing, takes the
    Python path. Either way the task gets the arrays themselves, marks unwrapped, and is ordered
    by its modes."""
    hetflow.init(ncpus=2, executor="thread")
    runtime = hetflow._runtime.current()
    a, b = np.zeros(1, dtype=np.int64), np.zeros(3)
    hetflow.submit(echo, hetflow.RW(a), b).result()  # met: registered by the Python path
    recent = runtime.handles._recent
    engine = runtime._engine
    submitted = engine.submit_call(echo, (1, "x", None, hetflow.W(b), hetflow.R(a), a), recent, "echo", 0)
    assert submitted is not None
    future = hetflow.Future(submitted, runtime, "echo")
    value = future.result()
    assert value[:3] == (1, "x", None) and value[3] is b and value[4] is a and value[5] is a
    declined = [
        (hetflow.W(b), [1]),  # a list: the futures' search
        (hetflow.W(b[1:]),),  # a view not met yet
        (hetflow.W(3),),  # a mark on a value that is not an array
        (np.ma.zeros(3),),  # a subclass
    ]
    for args in declined:
        assert engine.submit_call(echo, args, recent, "echo", 0) is None
    assert engine.submit_call(echo, (hetflow.W(a),), None, "echo", 0) is None  # no registry yet
    assert engine.submit_call(echo, (1, 2.5), None, "echo", 0) is not None  # nothing to look up
    # Writers in submission order, through either path (a list argument takes the Python one).
    for digit in range(1, 10):
        if digit % 3:
            hetflow.submit(append_digit, hetflow.RW(a), digit)
        else:
            hetflow.submit(lambda out, digits: append_digit(out, digits[0]), hetflow.RW(a), [digit])
    assert hetflow.submit(lambda x: int(x[0]), a).result() == 123456789


def test_a_write_mark_the_one_call_path_cannot_take_is_left_to_the_python_path():
    """A read-only array under W is refused, and W on items with padding counts as RW, also once
    their views are known."""
    hetflow.init(ncpus=1, executor="thread")
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    hetflow.submit(total, frozen).result()  # met
    with pytest.raises(ValueError, match="read-only"):
        hetflow.submit(fill, hetflow.W(frozen), 1.0)
    padded = np.zeros(2, dtype=np.dtype({"names": ["x"], "formats": ["i4"], "offsets": [0], "itemsize": 8}))
    hetflow.submit(echo, hetflow.R(padded)).result()  # met
    runtime = hetflow._runtime.current()
    assert runtime._engine.submit_call(echo, (hetflow.W(padded),), runtime.handles._recent, "echo", 0) is None
    hetflow.submit(echo, hetflow.W(padded)).result()


def _sweep_mappings_above_one_mib():
    from hetflow import _arrays

    _arrays._MAPPINGS_SWEPT_ABOVE = 1 << 20


def _shared_mappings_kept():
    from hetflow import _arrays

    return len(_arrays._mappings)


def test_a_busy_worker_lets_go_of_the_shared_arrays_the_host_freed():
    # A loop making a new shared array for each task and dropping it: the worker, never idle long
    # enough for its watcher to sweep, still lets go of the mappings of the arrays the host freed
    # (they kept the memory of up to 64 such arrays alive), once they pass its byte bound.
    hetflow.init(ncpus=1, nprocs=1, executor="process", initializer=_sweep_mappings_above_one_mib)
    for i in range(40):
        a = hetflow.zeros(1 << 18)  # 2 MiB
        hetflow.task_submit(fill, hetflow.W(a), i).result(timeout=30)
        del a
    assert hetflow.task_submit(_shared_mappings_kept).result(timeout=30) <= 4


def test_release_by_array_releases_the_calling_threads_acquisition():
    # Two threads read the array; hetflow.release(a) in the first released the second's (the most
    # recent), leaving the first's on its records: its next acquisition was refused as waiting
    # for itself, though it held none.
    import threading

    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(4)
    first_holds, second_holds, go = threading.Event(), threading.Event(), threading.Event()

    def second():
        first_holds.wait()
        hetflow.acquire(a, "R")
        second_holds.set()
        go.wait()
        time.sleep(0.1)
        hetflow.release(a)

    thread = threading.Thread(target=second)
    thread.start()
    hetflow.acquire(a, "R")
    first_holds.set()
    second_holds.wait(10)
    hetflow.release(a)
    go.set()
    try:
        with hetflow.acquire(a, "RW") as view:  # waits for the second thread's release
            view[0] = 1.0
    finally:
        go.set()
        thread.join(10)
    assert hetflow.task_submit.options(executor="thread")(total, a).result(timeout=10) == 1.0


def test_acquiring_a_read_only_array_to_write_says_to_acquire_it_for_reading():
    a = np.arange(3.0)
    a.setflags(write=False)
    with pytest.raises(ValueError, match=r"hetflow.acquire: the array is read-only.*the default is 'RW'.*mode 'R'"):
        hetflow.acquire(a)
    with hetflow.acquire(a, "R") as view:
        assert view.sum() == 3.0


@pytest.mark.parametrize("shape", [2.0, None, "3", (2, 2.0), ("3",), True, (True, 2)])
def test_a_shape_that_is_not_ints_is_refused_as_numpy_refuses_it(shape):
    # Refused with numpy's TypeError, saying what a shape is ("'float' object is not iterable",
    # or ValueError "bad shape" for a str), and True was taken as a shape of (1,).
    with pytest.raises(TypeError):
        np.zeros(shape)
    for make in (hetflow.empty, hetflow.zeros, hetflow.ones):
        with pytest.raises(TypeError, match=r"hetflow.empty: shape must be an int or a sequence of ints"):
            make(shape)


def test_shutdown_releases_what_a_thread_that_ended_still_held():
    # Nothing could release it any more: the task behind it, and shutdown waiting for that task,
    # waited for ever (only the calling thread's acquisitions were released).
    import threading

    hetflow.init(ncpus=2, executor="thread")
    a = np.zeros(4)
    go = threading.Event()
    # Started first, so that it does not take the ended thread's ident (a thread's own acquisitions
    # were released by its shutdown already).
    stopper = threading.Thread(target=lambda: (go.wait(), hetflow.shutdown()), daemon=True)
    stopper.start()
    thread = threading.Thread(target=hetflow.acquire, args=(a, "RW"))
    thread.start()
    thread.join()
    future = hetflow.task_submit.options(executor="thread")(add_into, hetflow.RW(a), 1.0)
    go.set()
    stopper.join(20)
    if stopper.is_alive():
        hetflow.release(a)  # lets the shutdown end
        pytest.fail("shutdown waited for an acquisition that nothing could release")
    assert future.result(timeout=10) is None
    np.testing.assert_array_equal(a, np.ones(4))
