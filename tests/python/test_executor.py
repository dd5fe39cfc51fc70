"""hetflow.Executor (a concurrent.futures.Executor), hetflow.map and progress reporting."""
from __future__ import annotations

import builtins
import concurrent.futures
import gc
import io
import os
import re
import sys
import threading
import time
import types
import weakref

import pytest

import hetflow
from hetflow import _progress, _runtime
from hf_tasks import in_a_worker

KINDS = ["thread", "process"]


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    hetflow.shutdown()


@pytest.fixture(scope="module", params=KINDS)
def ex(request):
    with hetflow.Executor(2, executor=request.param) as executor:
        yield executor


def square(x):
    return x * x


def add3(a, b, c):
    return a + b + c


def fail_at(x, bad):
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


def exit_at(x, bad):
    if x == bad:
        raise SystemExit(f"exit {x}")
    return x


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("this exception does not pickle")


def unpicklable_at(x, bad):
    if x == bad:
        raise Unpicklable(f"bad {x}")
    return x


def started_then(started, event, value):
    started.set()
    return wait_then(event, value)


def wait_then(event, value):
    if not event.wait(10):
        raise AssertionError("the test did not release the task")
    return value


# -- submit and map ------------------------------------------------------------------------------
def test_is_a_concurrent_futures_executor(ex):
    assert isinstance(ex, concurrent.futures.Executor)
    future = ex.submit(add3, 1, 2, c=3)
    assert isinstance(future, hetflow.Future)
    assert future.result() == 6
    done, _ = concurrent.futures.wait([ex.submit(square, i) for i in range(5)])
    assert sorted(f.result() for f in done) == [0, 1, 4, 9, 16]


def test_submit_takes_fn_positionally_only(ex):
    assert ex.submit(dict, fn=1).result() == {"fn": 1}


@pytest.mark.parametrize("chunksize", [1, 3, None])
def test_map_keeps_input_order(ex, chunksize):
    assert list(ex.map(square, range(20), chunksize=chunksize)) == [x * x for x in range(20)]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_zips_iterables_and_stops_at_the_shortest(ex, chunksize):
    result = ex.map(add3, range(10), range(100, 107), iter([1000] * 50), chunksize=chunksize)
    assert list(result) == [1100 + 2 * i for i in range(7)]
    assert list(ex.map(square, [], chunksize=chunksize)) == []


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_raises_at_the_failing_position(ex, chunksize):
    results = ex.map(fail_at, range(10), [5] * 10, chunksize=chunksize)
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="bad 5"):
        next(results)


class Payload:
    """A result whose lifetime the test follows."""


def payload(_):
    return Payload()


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_keeps_no_reference_to_a_result_it_has_yielded(ex, chunksize):
    # A map over many large results must not keep each one alive after the caller dropped it.
    for result in ex.map(payload, range(7), chunksize=chunksize):
        ref = weakref.ref(result)
        del result
        gc.collect()
        assert ref() is None


# A chunk failing with what is not an Exception (SystemExit), or, in a worker process, with an
# exception that does not pickle, lost the results of the calls before it in that chunk.
def test_map_yields_the_chunks_results_before_any_failing_call(ex):
    results = ex.map(exit_at, range(10), [5] * 10, chunksize=10)
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(SystemExit, match="exit 5"):
        next(results)
    results = ex.map(unpicklable_at, range(10), [5] * 10, chunksize=10)
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(Exception, match="bad 5"):
        next(results)


def test_map_failure_in_a_process_chunk_carries_the_remote_traceback():
    with hetflow.Executor(1, executor="process") as executor:
        with pytest.raises(ValueError, match="bad 2") as info:
            list(executor.map(fail_at, range(4), [2] * 4, chunksize=4))
    assert "fail_at" in str(info.value.__cause__)


def test_map_consumes_its_input_at_once_and_its_results_lazily():
    release = threading.Event()
    with hetflow.Executor(2, executor="thread") as executor:
        taken = []

        def inputs():
            for i in range(3):
                taken.append(i)
                yield i

        results = executor.map(wait_then, [release] * 3, inputs())
        assert taken == [0, 1, 2]  # submitted at the call, like concurrent.futures
        release.set()
        assert next(results) == 0
        assert list(results) == [1, 2]


@pytest.mark.parametrize("kind", KINDS)
def test_map_reads_its_input_with_no_lock_held(kind):
    # A generator given to map may use the executor itself: read under the executor's lock, its
    # submit waited for that lock for ever (and a slow one held back every other submission).
    executor = hetflow.Executor(2, executor=kind)

    def inputs():
        for i in range(3):
            yield executor.submit(square, i).result()

    outcome = []

    def read():
        outcome.append(list(executor.map(square, inputs())))
        outcome.append(hetflow.map(square, inputs(), executor=executor))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():
        pytest.fail("map hung reading a generator that submits to the same executor")
    executor.shutdown()
    assert outcome == [[0, 1, 16], [0, 1, 16]]


def test_map_timeout_counts_from_the_call():
    release = threading.Event()
    with hetflow.Executor(1, executor="thread") as executor:
        results = executor.map(wait_then, [release, release], ["a", "b"], timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)
        release.set()


def record(log, event, value):
    log.append(value)
    return wait_then(event, value)


def test_closing_the_map_iterator_cancels_the_calls_not_started():
    go, release, log = threading.Event(), threading.Event(), []
    go.set()
    with hetflow.Executor(1, executor="thread") as executor:
        results = executor.map(record, [log] * 4, [go, release, release, release], range(4))
        assert next(results) == 0
        results.close()
        release.set()
    assert log in ([0], [0, 1])  # the second call may have started; the others never run


def test_a_map_iterator_closed_before_its_first_result_cancels_the_calls():
    # A generator never started runs no finally: every call ran.
    release, log = threading.Event(), []
    with hetflow.Executor(1, executor="thread") as executor:
        results = executor.map(record, [log] * 4, [release] * 4, range(4))
        results.close()
        release.set()
    assert log in ([], [0])  # the first call may have started; the others never run


def write_text(path, text):
    with open(path, "w") as out:
        out.write(text)


@pytest.mark.parametrize("kind", KINDS)
def test_a_map_iterator_never_read_and_lost_runs_every_call(kind, tmp_path):
    # `with ex: ex.map(save, files)`, as with concurrent.futures: no call was made.
    paths = [str(tmp_path / f"{i}.txt") for i in range(8)]
    with hetflow.Executor(2, executor=kind) as executor:
        executor.map(write_text, paths, [str(i) for i in range(8)])
    assert [open(p).read() for p in paths] == [str(i) for i in range(8)]


def raise_timeout(x):
    raise TimeoutError(f"connection {x} timed out")


@pytest.mark.parametrize("chunksize", [1, 3])
def test_a_call_that_raises_timeout_error_has_it_raised_as_it_is(chunksize):
    # map replaced it with its own "results were not all ready within its timeout", with no timeout given.
    with hetflow.Executor(2, executor="thread") as executor:
        with pytest.raises(TimeoutError, match="connection 2 timed out"):
            list(executor.map(raise_timeout, [2, 3], chunksize=chunksize))
    with pytest.raises(TimeoutError, match="connection 2 timed out"):
        hetflow.map(raise_timeout, [2, 3], executor="thread")


def test_cancel_a_queued_future():
    release = threading.Event()
    with hetflow.Executor(1, executor="thread") as executor:
        running = executor.submit(wait_then, release, 1)
        queued = executor.submit(square, 3)
        assert queued.cancel()
        assert queued.cancelled()
        release.set()
        assert running.result() == 1
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result()


def test_bad_arguments_are_refused_with_what_is_accepted():
    with pytest.raises(ValueError, match="greater than 0"):
        hetflow.Executor(0)
    with pytest.raises(ValueError, match="'thread' or 'process'"):
        hetflow.Executor(1, executor="gpu")
    with hetflow.Executor(1, executor="thread") as executor:
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(square, range(3), chunksize=0)
        with pytest.raises(TypeError, match="not callable"):
            executor.map(5, range(3))


def test_bad_max_workers_is_refused_in_the_standard_executors_words():
    # Code ported from concurrent.futures may match its message (CPython's own suite does).
    for number in (0, -1):
        with pytest.raises(ValueError) as standard:
            concurrent.futures.ThreadPoolExecutor(max_workers=number)
        with pytest.raises(ValueError, match=re.escape(str(standard.value))):
            hetflow.Executor(number)


# -- workers and shutdown ------------------------------------------------------------------------
def test_max_workers_run_together():
    barrier = threading.Barrier(3, timeout=10)
    with hetflow.Executor(3, executor="thread") as executor:
        assert executor.max_workers == 3
        assert all(f.result() == 1 for f in [executor.submit(lambda: barrier.wait() * 0 + 1) for _ in range(3)])


def test_process_executor_uses_its_own_worker_processes():
    with hetflow.Executor(2, executor="process") as executor:
        assert executor._runtime.nprocs == 2
        pids = {f.result() for f in [executor.submit(os.getpid) for _ in range(8)]}
        assert os.getpid() not in pids


def test_shutdown_stops_only_the_executors_runtime():
    assert hetflow.submit(square, 2).result() == 4
    module_runtime = _runtime._current
    with hetflow.Executor(1, executor="thread") as executor:
        assert executor.submit(square, 3).result() == 9
    assert _runtime._current is module_runtime and not module_runtime._closed
    assert hetflow.submit(square, 4).result() == 16


def test_submit_and_map_after_shutdown_raise_runtime_error():
    executor = hetflow.Executor(1, executor="thread")
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.map(square, [1])
    executor.shutdown()  # a second shutdown is harmless


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_while_busy_waits_for_the_work(kind):
    executor = hetflow.Executor(2, executor=kind)
    futures = [executor.submit(square, i) for i in range(50)]
    executor.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [i * i for i in range(50)]


def test_shutdown_without_waiting_returns_while_tasks_run():
    release = threading.Event()
    executor = hetflow.Executor(1, executor="thread")
    running = executor.submit(wait_then, release, "done")
    queued = executor.submit(square, 5)
    executor.shutdown(wait=False)
    assert not running.done()  # shutdown did not wait for it
    release.set()
    assert running.result() == "done" and queued.result() == 25
    executor.shutdown(wait=True)


@pytest.mark.parametrize("wait", [True, False])
def test_cancel_futures_cancels_the_queued_tasks(wait):
    started, release = threading.Event(), threading.Event()
    executor = hetflow.Executor(1, executor="thread")
    running = executor.submit(started_then, started, release, "ran")
    queued = [executor.submit(square, i) for i in range(3)]
    # Their dependents too, in any order (they failed with DependencyError when the task they
    # wait for was cancelled first).
    queued = [executor.submit(square, queued[0]), executor.submit(square, queued[-1])] + queued
    assert started.wait(10)
    if wait:
        threading.Timer(0.05, release.set).start()
    executor.shutdown(wait=wait, cancel_futures=True)
    # Told at once, as concurrent.futures does: without waiting, the worker is still busy.
    assert all(f.cancelled() and f.done() for f in queued)
    assert not running.cancelled()
    release.set()
    assert running.result() == "ran"
    executor.shutdown()
    assert all(f.cancelled() for f in queued)  # none ran meanwhile


def test_executors_left_running_finish_their_work_at_exit(tmp_path):
    from hf_subprocess import run_script

    rc, out, err = run_script(
        tmp_path,
        """
        import time
        import hetflow

        def slow(x):
            time.sleep(0.2)
            return x

        def report(future):
            print("DONE", future.result(), flush=True)

        if __name__ == "__main__":
            kept = hetflow.Executor(1, executor="process")
            kept.submit(slow, "kept").add_done_callback(report)
            dropped = hetflow.Executor(1, executor="thread")
            dropped.submit(slow, "dropped").add_done_callback(report)
            del dropped
        """,
    )
    assert rc == 0, err
    assert sorted(out.split()) == ["DONE", "DONE", "dropped", "kept"]
    assert "leaked" not in err


# -- hetflow.map ---------------------------------------------------------------------------------
@pytest.mark.parametrize("executor", [None, "thread", "process"])
def test_map_returns_a_list_in_input_order(executor):
    expected = [x * x for x in range(1000)]
    assert hetflow.map(square, range(1000), executor=executor) == expected
    assert hetflow.map(square, range(10), chunksize=1, executor=executor) == expected[:10]
    assert hetflow.map(add3, range(5), range(5), range(9), chunksize=2, executor=executor) == [3 * i for i in range(5)]


def test_map_on_an_executor_and_its_errors():
    with hetflow.Executor(2, executor="thread") as executor:
        assert hetflow.map(square, range(7), executor=executor) == [x * x for x in range(7)]
    with pytest.raises(RuntimeError, match="shut down"):
        hetflow.map(square, range(7), executor=executor)
    with pytest.raises(ValueError, match="bad 3"):
        hetflow.map(fail_at, range(10), [3] * 10, chunksize=4)
    with pytest.raises(TypeError, match="executor must be"):
        hetflow.map(square, range(3), executor=2)
    with pytest.raises(TypeError, match="at least one iterable"):
        hetflow.map(square)
    with hetflow.Executor(1, executor="thread") as executor:
        assert list(executor.map(square)) == []  # as concurrent.futures' map: no calls


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_map_waits_for_futures_among_its_arguments(executor):
    futures = [hetflow.submit(square, i) for i in range(12)]
    assert hetflow.map(square, futures, chunksize=4, executor=executor) == [i**4 for i in range(12)]
    with pytest.raises(ValueError, match="bad 9"):
        hetflow.map(fail_at, futures, [9] * 12, chunksize=4, executor=executor)


def test_map_sends_lambdas_and_their_arguments_to_processes():
    assert hetflow.map(lambda f, x: f(x), [lambda v: v + 1] * 4, range(4), executor="process") == [1, 2, 3, 4]


# -- progress ------------------------------------------------------------------------------------
@pytest.fixture
def no_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` raise ImportError


def test_map_progress_without_tqdm_prints_a_line_per_interval_and_at_the_end(no_tqdm, capsys):
    assert hetflow.map(square, range(100), executor="thread", progress=True) == [x * x for x in range(100)]
    err = capsys.readouterr().err
    assert err.endswith("hetflow: 100/100 tasks done\n")
    assert "\r" not in err  # not a terminal: whole lines only


def test_executor_map_progress_without_tqdm(no_tqdm, capsys):
    with hetflow.Executor(1, executor="thread") as executor:
        assert list(executor.map(square, range(9), chunksize=2, progress=True)) == [x * x for x in range(9)]
    assert capsys.readouterr().err.endswith("hetflow: 9/9 tasks done\n")


def test_progress_on_a_terminal_redraws_one_line(no_tqdm, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(_progress, "TTY_INTERVAL_S", 0.0)
    stream = Terminal()
    with _progress.Progress(3, stream=stream) as bar:
        for _ in range(3):
            bar.update(1)
    text = stream.getvalue()
    assert text.startswith("\rhetflow: 0/3 tasks done\rhetflow: 1/3 tasks done")
    assert text.endswith("\rhetflow: 3/3 tasks done\n")


def test_wait_for_all_progress_without_tqdm(no_tqdm, capsys, monkeypatch):
    hetflow.init(ncpus=2, executor="thread")
    opened = threading.Event()
    gate = hetflow.submit(opened.wait, 30)  # the 30 tasks wait for it: all unfinished at the call

    class OpensTheGate(_progress.Progress):  # once the bar has counted what is unfinished
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.set()

    monkeypatch.setattr(_progress, "Progress", OpensTheGate)
    futures = [hetflow.submit(lambda _, i: square(i), gate, i) for i in range(30)]
    assert hetflow.wait_for_all(progress=True) is True
    assert all(f.done() for f in futures)
    assert capsys.readouterr().err.endswith("hetflow: 31/31 tasks done\n")


def test_progress_uses_tqdm_when_importable(monkeypatch, capsys):
    bars = []

    class FakeBar:
        def __init__(self, total, unit, desc):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def refresh(self):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    assert hetflow.map(square, range(40), executor="thread", chunksize=3, progress=True)[-1] == 39 * 39
    assert [(b.total, b.n, b.closed) for b in bars] == [(40, 40, True)]
    assert capsys.readouterr().err == ""  # the bar draws, not hetflow


def test_progress_with_the_real_tqdm(capsys):
    pytest.importorskip("tqdm")
    assert hetflow.map(square, range(20), executor="thread", progress=True) == [x * x for x in range(20)]
    assert "20/20" in capsys.readouterr().err


def test_map_is_not_the_builtin():
    assert hetflow.map is not builtins.map


_initialized = []


def remember_start(tag):
    _initialized.append((tag, os.getpid()))


def starts_here(_):
    return os.getpid(), list(_initialized)


def refuse_to_start():
    if in_a_worker():
        raise PermissionError("no licence here")


def test_executor_initializer_runs_once_in_each_worker_process():
    _initialized.clear()
    with hetflow.Executor(2, executor="process", initializer=remember_start, initargs=("ready",)) as executor:
        seen = list(executor.map(starts_here, range(8)))
    for pid, started in seen:
        assert started == [("ready", pid)]


_thread_setup = threading.local()


def set_up_thread(tag):
    _thread_setup.tag = tag
    _initialized.append((tag, threading.get_ident()))


def thread_setup_seen(_):
    time.sleep(0.002)
    return threading.get_ident(), getattr(_thread_setup, "tag", None)


def test_thread_executor_initializer_runs_once_in_each_thread():
    # As in ThreadPoolExecutor: what the initializer keeps in a threading.local is there for
    # every task of its thread, also after the workers went idle between bursts of tasks.
    _initialized.clear()
    seen = []
    with hetflow.Executor(2, executor="thread", initializer=set_up_thread, initargs=("ready",)) as executor:
        for _ in range(5):
            seen += executor.map(thread_setup_seen, range(10))
            time.sleep(0.05)
    assert {tag for _, tag in seen} == {"ready"}
    initialized_threads = [ident for _, ident in _initialized]
    assert len(initialized_threads) == len(set(initialized_threads))  # once per thread
    assert {ident for ident, _ in seen} <= set(initialized_threads)
    assert threading.get_ident() not in initialized_threads  # not in the submitting thread


def refuse_on_worker_threads():
    if threading.current_thread() is not threading.main_thread():
        raise PermissionError("no licence here")


def test_a_failed_thread_initializer_fails_that_threads_tasks():
    with hetflow.Executor(1, executor="thread", initializer=refuse_on_worker_threads) as executor:
        for _ in range(2):  # every task of the thread, not only the first
            with pytest.raises(RuntimeError, match="initializer raised PermissionError") as failure:
                executor.submit(square, 3).result()
            assert isinstance(failure.value.__cause__, PermissionError)


def test_a_failed_executor_initializer_fails_that_workers_tasks():
    with hetflow.Executor(1, executor="process", initializer=refuse_to_start) as executor:
        with pytest.raises(PermissionError, match="no licence here"):
            executor.submit(square, 3).result()


def test_executor_initargs_may_be_a_list():
    _initialized.clear()
    with hetflow.Executor(1, executor="thread", initializer=remember_start, initargs=["listed"]) as executor:
        assert executor.submit(square, 3).result() == 9
    assert [started for started, _ in _initialized] == ["listed"]


def test_bad_executor_initializer_is_refused():
    with pytest.raises(ValueError, match="initializer must be callable"):
        hetflow.Executor(1, initializer=42)


def test_a_process_executors_initializer_does_not_run_here():
    _initialized.clear()
    with hetflow.Executor(1, executor="process", initializer=remember_start, initargs=("worker",)) as executor:
        pid, started = executor.submit(starts_here, 0).result()
    assert started == [("worker", pid)] and _initialized == []


def _run_main_script(tmp_path, text: str) -> str:
    """Runs ``text`` as a program's main script (its ``__main__``); its stdout, then stderr."""
    import subprocess

    script = tmp_path / "main_script.py"
    script.write_text(text)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


MAIN_SCRIPT_INITIALIZER = """
import hetflow

STATE = {}
LIMIT = None

def init(value, limit):
    global LIMIT
    STATE["value"] = value
    LIMIT = limit

def helper():
    return STATE.get("value")

def read(_):
    return helper(), LIMIT

if __name__ == "__main__":
    with hetflow.Executor(1, executor="process", initializer=init, initargs=(42, 7)) as executor:
        print("submit", executor.submit(read, 0).result())
        print("map", list(executor.map(read, range(4), chunksize=2)))
"""


def test_a_main_scripts_initializer_sets_globals_its_tasks_read(tmp_path):
    """The idiom of concurrent.futures' initializer with functions of the main script, which
    travel by value: the tasks see what the initializer set (a dict changed in place, a global
    rebound), through helpers too."""
    output = _run_main_script(tmp_path, MAIN_SCRIPT_INITIALIZER)
    assert "submit (42, 7)" in output, output
    assert "map [(42, 7), (42, 7), (42, 7), (42, 7)]" in output, output


def run_call(call, *args):
    return call(*args)


def meet_peer(barrier):
    barrier.wait(10)  # broken unless the other call runs at the same time
    return os.getpid()


def test_short_tasks_are_not_grouped_while_a_worker_is_idle():
    import multiprocessing

    with multiprocessing.Manager() as manager, hetflow.Executor(2, "process") as executor:
        barrier = manager.Barrier(2)
        for _ in range(4):
            # The function has been quick so far: tasks of it would go two by two to one worker.
            assert [f.result() for f in [executor.submit(run_call, square, i) for i in range(40)]] == [
                i * i for i in range(40)
            ]
            pids = {f.result() for f in [executor.submit(run_call, meet_peer, barrier) for _ in range(2)]}
            assert len(pids) == 2


def test_shutdown_waiting_inside_its_own_task_is_refused_and_changes_nothing():
    with hetflow.Executor(1, executor="thread") as executor:
        inside = executor.submit(lambda: executor.shutdown())
        with pytest.raises(RuntimeError, match="cannot wait inside one of the executor's own tasks"):
            inside.result(timeout=30)
        assert executor.submit(square, 4).result(timeout=30) == 16  # still running


def test_an_executor_shut_down_without_waiting_gives_up_at_exit_after_the_exit_timeout():
    """Its work finishes after shutdown(wait=False), and the interpreter waits for it at exit,
    but no longer than HETFLOW_EXIT_TIMEOUT without a task finishing (a task that never ends
    kept the interpreter alive for ever)."""
    import subprocess

    program = (
        "import threading, hetflow\n"
        "executor = hetflow.Executor(1, executor='thread')\n"
        "executor.submit(threading.Event().wait)\n"
        "done = executor.submit(int, '5')\n"
        "executor.shutdown(wait=False)\n"
        "print('shut down', flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HETFLOW_EXIT_TIMEOUT": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "shut down" in result.stdout
    assert "exiting without" in result.stderr and "HETFLOW_EXIT_TIMEOUT" in result.stderr, result.stderr


MAIN_SCRIPT_CLASSES_IN_CHUNKS = """
import dataclasses, enum
import hetflow


@dataclasses.dataclass
class Point:
    x: int


class Colour(enum.Enum):
    RED = 1


def describe(value):
    return type(value).__name__, isinstance(value, (Point, Colour))


if __name__ == "__main__":
    with hetflow.Executor(2, executor="process") as executor:
        print("map", list(executor.map(describe, [Point(1), Colour.RED, Point(2)], chunksize=3)))
    print("hetflow.map", hetflow.map(describe, [Point(3), Colour.RED], chunksize=2, executor="process"))
"""


def test_process_map_chunks_send_the_main_scripts_classes_by_value(tmp_path):
    """A chunk's calls pickle by reference to ``__main__`` in the host, which worker processes
    cannot load: objects of the main script's classes among them travel by value, as they do
    with chunksize=1 (and with ProcessPoolExecutor, whose workers import the main script)."""
    output = _run_main_script(tmp_path, MAIN_SCRIPT_CLASSES_IN_CHUNKS)
    assert "map [('Point', True), ('Colour', True), ('Point', True)]" in output, output
    assert "hetflow.map [('Point', True), ('Colour', True)]" in output, output


def copy_into(destination, source):
    destination[...] = source


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunksize", [8, 3])
def test_map_reads_an_array_beside_what_earlier_calls_write_as_they_wrote_it(kind, chunksize):
    # Each call shifts two elements up by one: a read view that overlaps the views the calls
    # write (through hetflow.W) was pickled at submission into a process chunk (stale values),
    # or read by a thread chunk beside the chunk writing it (not ordered after it).
    import numpy as np

    expected = np.arange(12.0)
    for i in range(8):
        expected[i + 1 : i + 3] = expected[i : i + 2].copy()
    hetflow.init(ncpus=2, nprocs=2)
    values = np.arange(12.0)
    writes = [hetflow.W(values[i + 1 : i + 3]) for i in range(8)]
    hetflow.map(copy_into, writes, [values[i : i + 2] for i in range(8)], chunksize=chunksize, executor=kind)
    np.testing.assert_array_equal(values, expected)
    with hetflow.Executor(2, executor=kind) as executor:
        values = np.arange(12.0)
        writes = [hetflow.W(values[i + 1 : i + 3]) for i in range(8)]
        list(executor.map(copy_into, writes, [values[i : i + 2] for i in range(8)], chunksize=chunksize))
    np.testing.assert_array_equal(values, expected)
