"""hetflow.Future as a concurrent.futures.Future: result, done, exception, callbacks, cancel,
running, concurrent.futures.wait and as_completed."""
from __future__ import annotations

import concurrent.futures as cf
import gc
import logging
import threading
import time
import weakref

import numpy
import pytest

import hetflow
from hf_tasks import EXECUTORS, add, fail, submit_on



@pytest.fixture(autouse=True)
def _fresh_runtime():
    hetflow.init(ncpus=2, executor="thread")
    yield
    hetflow.shutdown()


class Gate:
    """Thread tasks that hold a worker until the test opens the gate."""

    def __init__(self):
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def hold(self, value=None):
        self.started.release()
        self.release.wait(timeout=30)
        return value

    def wait_started(self, count=1):
        for _ in range(count):
            assert self.started.acquire(timeout=30), "a task did not start"


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.release.set()


def test_future_is_a_concurrent_futures_future():
    future = hetflow.submit(add, 1, 2)
    assert isinstance(future, hetflow.Future)
    assert isinstance(future, cf.Future)
    assert future.result() == 3


@pytest.mark.parametrize("executor", EXECUTORS)
def test_result_done_and_exception_of_a_successful_task(executor):
    future = submit_on(executor)(add, 2, 3)
    assert future.result(timeout=30) == 5
    assert future.done()
    assert future.exception(timeout=30) is None
    assert not future.running() and not future.cancelled()
    assert future.result() == 5  # again


@pytest.mark.parametrize("executor", EXECUTORS)
def test_exception_of_a_failed_task(executor):
    future = submit_on(executor)(fail, "bad value")
    error = future.exception(timeout=30)
    assert isinstance(error, ValueError) and str(error) == "bad value"
    assert future.done() and not future.cancelled()
    with pytest.raises(ValueError, match="bad value"):
        future.result(timeout=30)


def test_state_while_pending_and_running(gate):
    running = [hetflow.submit(gate.hold, i) for i in range(2)]
    gate.wait_started(2)
    queued = hetflow.submit(add, 1, 1)
    assert all(f.running() and not f.done() for f in running)
    assert not queued.running() and not queued.done() and not queued.cancelled()
    gate.release.set()
    assert [f.result(timeout=30) for f in running] == [0, 1]
    assert queued.result(timeout=30) == 2
    assert not any(f.running() for f in running + [queued])


def test_result_and_exception_time_out(gate):
    future = hetflow.submit(gate.hold, "late")
    gate.wait_started()
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.05)
    with pytest.raises(TimeoutError):  # the same class since Python 3.11; a TimeoutError either way
        future.exception(timeout=0)
    assert not future.done()
    gate.release.set()
    assert future.result(timeout=30) == "late"


def test_timeouts_longer_than_the_clock_counts_wait_for_the_task(gate):
    # 9.3e9 s and more overflowed the deadline into the past: the wait gave up at once, saying
    # the task had not finished in inf s.
    future = hetflow.submit(gate.hold, "late")
    gate.wait_started()
    threading.Timer(0.2, gate.release.set).start()
    assert future.result(timeout=float("inf")) == "late"
    later = hetflow.submit(lambda: "later")
    assert later.exception(timeout=1e10) is None
    assert list(hetflow.Executor(1, executor="thread").map(abs, [-1], timeout=float("inf"))) == [1]
    with pytest.raises(ValueError, match="NaN"):
        hetflow.submit(time.sleep, 0.5).result(timeout=float("nan"))


def test_a_timeout_that_is_not_a_number_is_refused_with_what_it_takes(gate):
    # The engine's binding refused it, naming its own types: "wait(): incompatible function
    # arguments ... Invoked with types: hetflow._hetflow.TaskRef, str".
    future = hetflow.submit(gate.hold, "late")
    gate.wait_started()
    for timeout in ("1", [1], object()):
        with pytest.raises(TypeError, match="timeout must be None or a number of seconds"):
            future.result(timeout=timeout)
        with pytest.raises(TypeError, match="timeout must be None or a number of seconds"):
            future.exception(timeout=timeout)
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=numpy.float64(0.01))
    gate.release.set()
    assert future.result(timeout=numpy.int64(30)) == "late"


# -- callbacks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_done_callback_is_called_once_with_the_future(executor, gate):
    hold = hetflow.submit(gate.hold, 1)
    future = submit_on(executor)(add, hold, 1)  # not finished before the callback is added
    called = []
    event = threading.Event()

    def callback(f):
        called.append(f)
        event.set()

    future.add_done_callback(callback)
    assert called == []
    gate.release.set()
    assert event.wait(timeout=30)
    assert future.result(timeout=30) == 2
    assert hetflow.wait_for_all(timeout=30)
    assert called == [future]


def test_callbacks_run_in_order_and_see_the_outcome(gate):
    hold = hetflow.submit(gate.hold, 10)
    future = hetflow.submit(add, hold, 1)
    seen = []
    finished = threading.Event()
    future.add_done_callback(lambda f: seen.append(("first", f.result())))
    future.add_done_callback(lambda f: seen.append(("second", f.done())))
    future.add_done_callback(lambda f: finished.set())
    assert seen == []
    gate.release.set()
    assert finished.wait(timeout=30)
    assert seen == [("first", 11), ("second", True)]


def test_callback_added_after_completion_runs_at_once_in_the_caller():
    future = hetflow.submit(add, 1, 1)
    assert future.result(timeout=30) == 2
    seen = []
    future.add_done_callback(lambda f: seen.append((f, threading.get_ident())))
    assert seen == [(future, threading.get_ident())]


def test_callback_of_a_failed_task_sees_the_exception():
    future = submit_on("process")(fail, "oops")
    errors = []
    event = threading.Event()

    def callback(f):
        errors.append(f.exception())
        event.set()

    future.add_done_callback(callback)
    assert event.wait(timeout=30)
    assert isinstance(errors[0], ValueError) and str(errors[0]) == "oops"


def test_a_failing_callback_is_logged_and_does_not_stop_the_others(caplog, gate):
    hold = hetflow.submit(gate.hold)
    future = hetflow.submit(lambda _: 1, hold)
    event = threading.Event()

    def broken(f):
        raise RuntimeError("callback broke")

    future.add_done_callback(broken)
    future.add_done_callback(lambda f: event.set())
    with caplog.at_level(logging.ERROR, logger="hetflow"):
        gate.release.set()
        assert event.wait(timeout=30)
    assert "callback broke" in caplog.text
    assert future.result(timeout=30) == 1


def test_set_result_and_set_exception_are_refused():
    future = hetflow.submit(add, 1, 1)
    with pytest.raises(RuntimeError):
        future.set_result(3)
    with pytest.raises(RuntimeError):
        future.set_exception(ValueError())
    assert future.result(timeout=30) == 2


# -- cancel --------------------------------------------------------------------------------------------------
def test_cancel_a_queued_task(gate):
    holders = [hetflow.submit(gate.hold) for _ in range(2)]
    gate.wait_started(2)
    ran = []
    queued = hetflow.submit(ran.append, "ran")
    assert queued.cancel() is True
    assert queued.cancelled() and queued.done() and not queued.running()
    with pytest.raises(cf.CancelledError):
        queued.result(timeout=30)
    with pytest.raises(cf.CancelledError):
        queued.exception(timeout=30)
    gate.release.set()
    assert hetflow.wait_for_all(timeout=30)
    assert ran == []
    assert all(h.result(timeout=0) is None for h in holders)


def test_cancel_is_refused_once_running_or_done(gate):
    running = hetflow.submit(gate.hold, "kept")
    gate.wait_started()
    assert running.cancel() is False
    assert not running.cancelled()
    gate.release.set()
    assert running.result(timeout=30) == "kept"
    assert running.cancel() is False and not running.cancelled()


def test_cancel_a_task_waiting_for_a_dependency(gate):
    hold = hetflow.submit(gate.hold, 1)
    waiting = submit_on("process")(add, hold, 1)
    assert waiting.cancel() is True
    gate.release.set()
    assert hold.result(timeout=30) == 1
    with pytest.raises(cf.CancelledError):
        waiting.result(timeout=30)
    assert waiting.cancelled()


def test_dependents_of_a_cancelled_task_fail_with_dependency_error(gate):
    holders = [hetflow.submit(gate.hold) for _ in range(2)]
    gate.wait_started(2)
    queued = hetflow.task_submit.options(name="to-cancel")(add, 1, 1)
    dependent = hetflow.submit(add, queued, 1)
    assert queued.cancel()
    # Told at once, while the workers are still busy.
    with pytest.raises(hetflow.DependencyError) as info:
        dependent.result(timeout=30)
    gate.release.set()
    assert info.value.root_task == "to-cancel"
    assert isinstance(info.value.root_exception, cf.CancelledError)
    assert not dependent.cancelled()
    assert all(h.result(timeout=30) is None for h in holders)


def test_repr_says_what_became_of_the_task(gate):
    holders = [hetflow.submit(gate.hold) for _ in range(2)]
    gate.wait_started(2)
    queued = hetflow.task_submit.options(name="later")(add, 1, 1)
    assert repr(queued) == "<hetflow.Future 'later' queued>"
    assert repr(holders[0]).endswith(" running>")
    gate.release.set()
    assert queued.result(timeout=30) == 2
    assert repr(queued) == "<hetflow.Future 'later' done>"


def test_cancelled_future_callbacks_run(gate):
    holders = [hetflow.submit(gate.hold) for _ in range(2)]
    gate.wait_started(2)
    queued = hetflow.submit(add, 1, 1)
    event = threading.Event()
    seen = []
    callers = []
    queued.add_done_callback(lambda f: (seen.append(f.cancelled()), callers.append(threading.get_ident()), event.set()))
    waiter = threading.Thread(target=lambda: seen.append(len(cf.wait([queued], timeout=30)[0])))
    waiter.start()
    assert queued.cancel()
    assert event.is_set() and callers == [threading.get_ident()]  # in cancel(), as with concurrent.futures
    waiter.join(timeout=30)
    gate.release.set()
    assert sorted(seen, key=str) == [1, True]
    assert all(h.result(timeout=30) is None for h in holders)


# -- concurrent.futures.wait / as_completed ------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_concurrent_futures_wait_all_completed(executor):
    futures = [submit_on(executor)(add, i, 1) for i in range(10)]
    done, not_done = cf.wait(futures, timeout=30)
    assert done == set(futures) and not not_done
    assert sorted(f.result() for f in done) == list(range(1, 11))


def test_concurrent_futures_wait_first_completed(gate):
    slow = hetflow.submit(gate.hold, "slow")
    gate.wait_started()
    fast = hetflow.submit(add, 1, 1)
    done, not_done = cf.wait([slow, fast], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    gate.release.set()
    assert slow.result(timeout=30) == "slow"


def test_concurrent_futures_wait_first_exception(gate):
    slow = hetflow.submit(gate.hold, "slow")
    gate.wait_started()
    failing = submit_on("process")(fail, "first")
    done, not_done = cf.wait([slow, failing], timeout=30, return_when=cf.FIRST_EXCEPTION)
    assert done == {failing} and not_done == {slow}
    gate.release.set()


def test_concurrent_futures_wait_times_out(gate):
    slow = hetflow.submit(gate.hold)
    gate.wait_started()
    done, not_done = cf.wait([slow], timeout=0.05)
    assert not done and not_done == {slow}


def test_concurrent_futures_wait_on_finished_futures():
    futures = [hetflow.submit(add, i, 0) for i in range(5)]
    assert [f.result(timeout=30) for f in futures] == list(range(5))
    done, not_done = cf.wait(futures, timeout=30)
    assert done == set(futures) and not not_done


def test_as_completed_yields_in_completion_order(gate):
    slow = hetflow.submit(gate.hold, "slow")
    gate.wait_started()
    fast = [hetflow.submit(add, i, 0) for i in range(3)]
    seen = []
    for future in cf.as_completed([slow] + fast, timeout=30):
        seen.append(future)
        if len(seen) == 3:
            gate.release.set()
    assert set(seen[:3]) == set(fast) and seen[3] is slow


@pytest.mark.parametrize("executor", EXECUTORS)
def test_as_completed_with_failures_and_mixed_executors(executor):
    futures = [submit_on(executor)(add, i, 0) for i in range(5)] + [submit_on(executor)(fail, "x")]
    results, errors = [], []
    for future in cf.as_completed(futures, timeout=30):
        if future.exception() is None:
            results.append(future.result())
        else:
            errors.append(future.exception())
    assert sorted(results) == list(range(5))
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


class Held:
    """A task's value whose lifetime the test follows."""


def make_held():
    return Held()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_future_dropped_after_as_completed_is_freed_with_its_value(executor):
    # Nothing of hetflow's may keep a finished future (and its value) once the program drops it,
    # the last one to finish included, while no other task finishes.
    futures = [submit_on(executor)(make_held) for _ in range(3)]
    refs = []
    for future in cf.as_completed(futures, timeout=30):
        futures.remove(future)
        refs += [weakref.ref(future), weakref.ref(future.result())]
        del future
    deadline = time.monotonic() + 5
    while any(ref() is not None for ref in refs) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.02)
    assert [ref() for ref in refs] == [None] * len(refs)


def scale_and_return(array):
    array *= 2
    return array


@pytest.mark.parametrize("mode", ["RW", "R"])
def test_an_array_a_thread_task_returns_goes_once_the_program_drops_it_and_the_future(mode):
    # The array's handle held its last task (writer or reader), the task its result, and the
    # result the array: neither the array nor its handle ever went, until shutdown.
    numpy = pytest.importorskip("numpy")
    refs = []
    for _ in range(20):
        array = numpy.ones(1000)
        refs.append(weakref.ref(array))
        future = hetflow.task_submit.options(executor="thread")(
            scale_and_return if mode == "RW" else numpy.asarray, getattr(hetflow, mode)(array)
        )
        assert future.result(timeout=30) is array
        del array, future
    gc.collect()
    assert [ref() for ref in refs] == [None] * len(refs)


def test_as_completed_times_out(gate):
    slow = hetflow.submit(gate.hold)
    gate.wait_started()
    with pytest.raises(cf.TimeoutError):
        for _ in cf.as_completed([slow], timeout=0.05):
            pass


def test_result_waits_from_several_threads(gate):
    future = hetflow.submit(gate.hold, 7)
    results = []
    waiters = [threading.Thread(target=lambda: results.append(future.result(timeout=30))) for _ in range(4)]
    for t in waiters:
        t.start()
    gate.release.set()
    for t in waiters:
        t.join(timeout=30)
    assert results == [7, 7, 7, 7]


# -- many waits on futures that finish while wait() looks at them -----------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_wait_and_as_completed_never_miss_a_future_finishing_meanwhile(executor):
    # wait() reads each future's state twice under its condition and installs a waiter in
    # between; a future finishing in that window must be counted exactly once, or wait()
    # returns too early (ALL_COMPLETED with futures left over) or never returns.
    submit = submit_on(executor)
    modes = [cf.ALL_COMPLETED, cf.FIRST_EXCEPTION, cf.FIRST_COMPLETED]
    for i in range(4000):
        futures = [submit(add, i, 1), submit(add, i, 2), submit(add, i, 3)]
        if i % 4 == 0:
            futures.append(submit(fail, "x"))
        mode = modes[i % 3]
        done, not_done = cf.wait(futures, timeout=30, return_when=mode)
        assert done | not_done == set(futures) and not done & not_done
        assert all(f.done() for f in done), (i, mode)
        assert done, (i, mode)
        if mode == cf.ALL_COMPLETED:
            assert not not_done, (i, mode, [f.done() for f in futures])
        elif mode == cf.FIRST_EXCEPTION and not_done:
            assert any(f.exception() is not None for f in done), (i, mode)
        if i % 5 == 0:
            seen = list(cf.as_completed(futures, timeout=30))
            assert len(seen) == len(futures) and set(seen) == set(futures), i


@pytest.mark.parametrize("executor", EXECUTORS)
def test_wait_and_as_completed_after_shutdown(executor):
    futures = [submit_on(executor)(add, i, 1) for i in range(10)]
    futures[0].add_done_callback(lambda f: None)  # the completion dispatcher has run
    hetflow.shutdown()
    done, not_done = cf.wait(futures, timeout=30)
    assert done == set(futures) and not not_done
    assert set(cf.as_completed(futures, timeout=30)) == set(futures)
    seen = []
    futures[1].add_done_callback(seen.append)
    assert seen == [futures[1]]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_callback_may_wait_for_other_futures(executor):
    # Callbacks run beside the thread that delivers completions: a callback waiting for another
    # task's completion does not hold that completion back.
    seen = {}
    called = threading.Event()

    def callback(_):
        other = submit_on(executor)(add, 1, 1)
        done, _ = cf.wait([other], timeout=30)
        seen["wait"] = [f.result() for f in done]
        later = submit_on(executor)(add, 2, 2)
        seen["as_completed"] = [f.result() for f in cf.as_completed([later], timeout=30)]
        called.set()

    submit_on(executor)(add, 0, 0).add_done_callback(callback)
    assert called.wait(60), "the callback never ended"
    assert seen == {"wait": [2], "as_completed": [4]}


def test_a_callback_that_raises_system_exit_does_not_stop_the_others(caplog):
    def leave(_):
        raise SystemExit("a callback calls sys.exit")

    later = threading.Event()
    with caplog.at_level(logging.ERROR, logger="hetflow"):
        hetflow.submit(add, 1, 1).add_done_callback(leave)
        hetflow.submit(add, 2, 2).add_done_callback(lambda _: later.set())
        assert later.wait(30), "callbacks stopped after one raised SystemExit"
        done, _ = cf.wait([hetflow.submit(add, 3, 3)], timeout=30)
        # A callback added to a finished future runs at once, in this thread, maybe before one
        # queued earlier on the callback thread: the log may come a little later.
        deadline = time.monotonic() + 30
        while "a callback calls sys.exit" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(done) == 1
    assert "a callback calls sys.exit" in caplog.text


def test_a_ctrl_c_while_the_completions_thread_starts_leaves_futures_working(monkeypatch):
    # The thread was kept before it had started: interrupted there, no callback ever ran again,
    # concurrent.futures.wait never returned, and the exit failed to join it.
    hetflow.shutdown()
    hetflow.init(ncpus=2, executor="thread")
    start = threading.Thread.start

    def interrupted_once(self):
        if self.name == "hetflow-completions":
            monkeypatch.setattr(threading.Thread, "start", start)
            raise KeyboardInterrupt
        start(self)

    monkeypatch.setattr(threading.Thread, "start", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        hetflow.submit(time.sleep, 0.05).add_done_callback(lambda _: None)
    ran = threading.Event()
    hetflow.submit(time.sleep, 0.05).add_done_callback(lambda _: ran.set())
    assert ran.wait(30), "callbacks stopped after the interrupt"
    done, _ = cf.wait([hetflow.submit(time.sleep, 0.05)], timeout=30)
    assert len(done) == 1
    hetflow.shutdown()


def test_a_copy_of_a_future_is_the_same_handle():
    import copy

    hetflow.init(ncpus=1, executor="thread")
    try:
        future = hetflow.submit(int, "7")
        assert copy.copy(future) is future
        nested = copy.deepcopy({"results": [future]})
        assert nested["results"][0] is future and future.result(timeout=30) == 7
    finally:
        hetflow.shutdown()


def test_cancelling_a_task_that_waits_for_its_dependencies_tells_its_waiters_at_once():
    """concurrent.futures' cancel() notifies waiters and runs callbacks before the task's
    dependency ends (the engine tells the task's own dependents only then)."""
    import concurrent.futures
    import threading

    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    try:
        blocker = hetflow.submit(release.wait, 30)
        waiting = hetflow.submit(lambda value: value, blocker)
        called = threading.Event()
        waiting.add_done_callback(lambda future: called.set())
        assert waiting.cancel() and waiting.cancelled()
        done, not_done = concurrent.futures.wait([waiting], timeout=30)
        assert done == {waiting} and not blocker.done()  # told while the dependency still runs
        assert called.wait(30) and not blocker.done()
        assert next(concurrent.futures.as_completed([waiting], timeout=30)) is waiting
    finally:
        release.set()
        hetflow.shutdown()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_wait_that_does_not_block_sees_the_futures_that_finished(executor):
    # wait(timeout=0) and as_completed(timeout=0) read the state while holding each future's
    # condition: finished futures were left "running" until a background thread caught up.
    for _ in range(20):
        fs = [submit_on(executor)(add, i, 1) for i in range(10)]
        assert [f.result() for f in fs] == list(range(1, 11))
        done, not_done = cf.wait(fs, timeout=0)
        assert len(done) == 10 and not not_done
        assert len(list(cf.as_completed(fs, timeout=0))) == 10
        assert len(cf.wait(fs, timeout=0, return_when=cf.FIRST_COMPLETED).done) == 10


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_callback_added_after_result_runs_after_those_added_before(executor):
    # Added once the task was done, it ran at once, ahead of one added before and still queued.
    for _ in range(30):
        order = []
        future = submit_on(executor)(add, 1, 1)
        future.add_done_callback(lambda f: order.append(1))
        future.result(timeout=30)
        future.add_done_callback(lambda f: order.append(2))
        deadline = time.monotonic() + 10
        while len(order) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert order == [1, 2]


def test_a_callback_added_while_the_dispatcher_hands_on_earlier_ones_runs_after_them(monkeypatch):
    # The dispatcher marked the future fired, then (after unwatch and telling the waiters) handed
    # its callbacks to the callback thread: one added in between ran first. The gap is widened.
    from hetflow import _runtime

    unwatch = _runtime.Runtime.unwatch

    def slow_unwatch(runtime, future):
        time.sleep(0.05)
        unwatch(runtime, future)

    monkeypatch.setattr(_runtime.Runtime, "unwatch", slow_unwatch)
    for _ in range(5):
        order = []
        future = submit_on("thread")(add, 1, 1)
        future.add_done_callback(lambda f: order.append(1))
        while not future._task.done():
            time.sleep(0.001)
        time.sleep(0.01)  # the dispatcher is in the gap now, most likely
        future.add_done_callback(lambda f: order.append(2))
        deadline = time.monotonic() + 10
        while len(order) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert order == [1, 2]
