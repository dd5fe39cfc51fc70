"""hetflow.dask.get: Dask graphs (dask.array, dask.delayed, plain dicts) computed on hetflow."""
from __future__ import annotations

import threading
import time

import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import numpy as np  # noqa: E402

import hetflow  # noqa: E402
import hetflow.dask  # noqa: E402
from hetflow import _runtime  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def runtime():
    hetflow.init(ncpus=2, nprocs=2)
    yield
    hetflow.shutdown()


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def test_sum_of_a_chunked_array():
    values = np.arange(10_000, dtype=np.float64).reshape(100, 100)
    x = da.from_array(values, chunks=(25, 30))
    (total, column_sums) = dask.compute(x.sum(), x.sum(axis=0), scheduler=hetflow.dask.get)
    assert total == values.sum()
    np.testing.assert_allclose(column_sums, values.sum(axis=0))


def test_matrix_product():
    rng = np.random.default_rng(0)
    a, b = rng.random((120, 90)), rng.random((90, 60))
    product = (da.from_array(a, chunks=(40, 30)) @ da.from_array(b, chunks=(30, 20))).compute(
        scheduler=hetflow.dask.get
    )
    np.testing.assert_allclose(product, a @ b)


def test_the_tasks_run_as_hetflow_tasks():
    where = dask.delayed(lambda: _runtime.current().inside_task())()
    assert where.compute(scheduler=hetflow.dask.get) is True
    assert where.compute(scheduler="sync") is False


def test_diamond_runs_the_shared_task_once():
    calls = []
    lock = threading.Lock()

    def source(x):
        with lock:
            calls.append(x)
        return x * 10

    top = dask.delayed(source)(4)
    left, right = dask.delayed(inc)(top), dask.delayed(inc)(dask.delayed(inc)(top))
    bottom = dask.delayed(add)(left, right)
    assert bottom.compute(scheduler=hetflow.dask.get) == 41 + 42
    assert calls == [4]


def test_diamond_on_the_process_executor():
    top = dask.delayed(inc)(1)
    bottom = dask.delayed(add)(dask.delayed(inc)(top), dask.delayed(inc)(top))
    assert dask.compute(bottom, top, scheduler=hetflow.dask.get, executor="process") == (6, 2)


def test_nested_keys_of_a_plain_graph():
    dsk = {"a": 1, "b": (inc, "a"), "c": (add, "a", "b"), "d": (sum, ["a", "b", "c"]), "e": "a"}
    assert hetflow.dask.get(dsk, "c") == 3
    assert hetflow.dask.get(dsk, [["c", "d"], "b", [["e"]]]) == ((3, 6), 2, ((1,),))
    assert hetflow.dask.get(dsk, []) == ()


class Boom(ValueError):
    pass


def test_a_failing_task_raises_its_own_error_and_its_dependents_do_not_run():
    ran = []

    def fail(x):
        raise Boom(f"bad input {x}")

    def after(x):
        ran.append(x)
        return x

    bad = dask.delayed(after)(dask.delayed(fail)(dask.delayed(inc)(1)))
    good = dask.delayed(inc)(5)
    with pytest.raises(Boom, match="bad input 2"):
        dask.compute(good, bad, scheduler=hetflow.dask.get)
    with pytest.raises(Boom, match="bad input 2"):
        bad.compute(scheduler=hetflow.dask.get, executor="process")
    assert ran == []
    # The runtime is still usable afterwards.
    assert good.compute(scheduler=hetflow.dask.get) == 6


def test_a_failure_is_raised_at_once_without_waiting_for_the_other_keys():
    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    ran = []

    def slow_step(x):
        ran.append(x)
        release.wait(timeout=10)  # bounds a broken run
        return x + 1

    def fail():
        raise Boom("failed at once")

    chain = dask.delayed(slow_step)(0)
    for step in range(1, 4):
        chain = dask.delayed(slow_step)(chain)
    try:
        with pytest.raises(Boom, match="failed at once"):
            dask.compute(chain, dask.delayed(fail)(), scheduler=hetflow.dask.get)
        assert len(ran) <= 1  # raised while the first step still waited
    finally:
        release.set()


def test_a_failure_below_a_wanted_key_is_raised_at_once_and_cancels_the_rest():
    """The failed task feeds a wanted key only through a task that also waits for others: its
    failure is raised without waiting for them, and the tasks not started are cancelled."""
    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    failing = threading.Event()
    started = []

    def gate():
        failing.wait(timeout=10)  # the slow tasks become ready once the failure is under way
        return 0

    def slow(i, _):
        started.append(i)
        release.wait(timeout=2)  # bounds a broken run
        return i

    def fail():
        failing.set()
        raise Boom("failed below")

    def total(*values):
        return sum(values)

    opened = dask.delayed(gate)()
    slow_part = dask.delayed(total)(*[dask.delayed(slow)(i, opened) for i in range(20)])
    graph = dask.delayed(total)(dask.delayed(total)(dask.delayed(fail)()), slow_part)
    try:
        with pytest.raises(Boom, match="failed below"):
            dask.compute(graph, scheduler=hetflow.dask.get)
    finally:
        release.set()
    hetflow.wait_for_all()
    # Those the two workers had taken when it raised, which waited; the others were cancelled.
    assert len(started) <= 2, started


def test_a_failure_is_raised_while_a_large_graph_is_still_being_submitted(monkeypatch):
    """Submitting a graph of many tasks takes a while, its first tasks running meanwhile: a failure
    among them ends get then, instead of once every task is submitted (and has run)."""
    hetflow.init(ncpus=2, executor="thread")
    task_name = hetflow.dask._task_name

    def slow_to_submit(key):
        time.sleep(0.001)  # 3000 tasks: 3 s to submit
        return task_name(key)

    monkeypatch.setattr(hetflow.dask, "_task_name", slow_to_submit)

    def fail():
        raise Boom("failed first")

    dsk = {"first": (fail,)}
    dsk.update({("after", i): (inc, i) for i in range(3000)})
    dsk["all"] = (sum, [("after", i) for i in range(3000)] + ["first"])
    started = time.monotonic()
    with pytest.raises(Boom, match="failed first"):
        hetflow.dask.get(dsk, "all")
    assert time.monotonic() - started < 1.5


def test_bad_arguments_say_what_is_accepted():
    from dask._task_spec import Task, TaskRef

    dsk = {"a": 1, "b": (inc, "a")}
    with pytest.raises(KeyError, match="'z' is not in the graph"):
        hetflow.dask.get(dsk, ["b", "z"])
    with pytest.raises(KeyError, match="depends on 'missing'"):
        hetflow.dask.get({"c": Task("c", inc, TaskRef("missing"))}, "c")
    with pytest.warns(UserWarning, match="ignores the option.*'num_workers'.*takes executor"):
        assert hetflow.dask.get(dsk, "b", num_workers=4) == 2
    with pytest.raises(ValueError, match="unknown executor 'gpu'"):
        hetflow.dask.get(dsk, "b", executor="gpu")
    with pytest.raises(TypeError, match="expected a Dask graph"):
        hetflow.dask.get([1, 2], "b")


def test_options_of_other_schedulers_passed_on_by_compute_are_ignored():
    # Dask forwards compute's unknown keywords to the scheduler and its own schedulers ignore
    # those they do not take (dask's test_delayed_compute_forward_kwargs); get refused them, so
    # x.compute(num_workers=4) failed once hetflow was the default scheduler.
    x = dask.delayed(inc)(1)
    with dask.config.set(scheduler=hetflow.dask.get):
        with pytest.warns(UserWarning, match="'num_workers', 'pool'"):
            assert x.compute(num_workers=4, pool=None) == 2
        with pytest.warns(UserWarning, match="'bogus_keyword'"):
            assert dask.compute(da.ones(10, chunks=5).sum(), bogus_keyword=10) == (10.0,)


@pytest.mark.skipif(not hasattr(hetflow, "Executor"), reason="hetflow.Executor is not available")
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_hetflow_executor_is_a_dask_scheduler(kind):
    def fail(x):
        raise Boom(f"bad input {x}")

    x = da.from_array(np.arange(1000.0), chunks=100)
    with hetflow.Executor(2, executor=kind) as pool:
        assert dask.compute(x.sum(), (x * 2).max(), scheduler=pool) == (499500.0, 1998.0)
        with pytest.raises(Boom, match="bad input 3"):
            dask.delayed(fail)(3).compute(scheduler=pool)



# Dask's own tests of foreign `get` functions: every expectation Dask has of a scheduler.
from dask.utils_test import GetFunctionTestMixin  # noqa: E402


class TestDasksGetFunctionSuiteOnThreads(GetFunctionTestMixin):
    get = staticmethod(hetflow.dask.get)


class TestDasksGetFunctionSuiteOnProcesses(GetFunctionTestMixin):
    get = staticmethod(lambda dsk, keys, **options: hetflow.dask.get(dsk, keys, executor="process", **options))


class Chunk:
    live: "weakref.WeakSet[Chunk]"

    def __init__(self, n):
        self.n = n


Chunk.live = __import__("weakref").WeakSet()


def make_chunk(n, *_earlier):
    chunk = Chunk(n)
    Chunk.live.add(chunk)
    return chunk


def count_live(chunk):
    return (chunk.n, len(Chunk.live))


def test_a_result_is_let_go_of_once_the_tasks_that_read_it_have_run():
    # Every task's future, and so its value, stayed alive until get returned: a reduction over
    # data larger than memory ran out of it. Here each chunk is read once, in a chain of steps.
    dsk = {("make", 0): (make_chunk, 0)}
    for i in range(1, 40):
        dsk[("seen", i - 1)] = (count_live, ("make", i - 1))
        dsk[("make", i)] = (make_chunk, i, ("seen", i - 1))
    seen = hetflow.dask.get(dsk, [("seen", i) for i in range(39)])
    assert [n for n, _ in seen] == list(range(39))
    assert max(live for _, live in seen) <= 8, seen  # at most a few chunks at a time, not all 40


def test_dask_callbacks_and_diagnostics_are_told():
    from dask.callbacks import Callback
    from dask.diagnostics import Profiler

    calls = {"start": 0, "start_state": 0, "pretask": 0, "posttask": 0, "finish": []}
    lock = threading.Lock()

    def count(name):
        def call(*args):
            with lock:
                calls[name] += 1
        return call

    x = da.ones((40, 40), chunks=10).sum()
    with Callback(
        start=count("start"),
        start_state=count("start_state"),
        pretask=count("pretask"),
        posttask=count("posttask"),
        finish=lambda dsk, state, errored: calls["finish"].append((len(state["finished"]), errored)),
    ), Profiler() as profiler:
        assert x.compute(scheduler=hetflow.dask.get) == 1600
    tasks = len(profiler.results)
    assert tasks > 10
    assert calls["start"] == calls["start_state"] == 1 and calls["pretask"] == calls["posttask"] == tasks
    assert calls["finish"] == [(tasks, False)]


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_callback_that_raises_makes_get_raise_and_finish_is_told(executor):
    from dask.callbacks import Callback

    finished = []

    def broken(key, result, dsk, state, worker):
        raise ZeroDivisionError("from a callback")

    with Callback(posttask=broken, finish=lambda dsk, state, errored: finished.append(errored)):
        with pytest.raises(ZeroDivisionError, match="from a callback"):
            hetflow.dask.get({"x": (inc, 1), "y": (inc, "x")}, "y", executor=executor)
    assert finished == [True]


def test_thread_tasks_see_the_callers_context_variables():
    import contextvars

    var = contextvars.ContextVar("var", default=42)
    token = var.set(43)
    try:
        assert hetflow.dask.get({"x": (var.get,)}, "x") == 43
    finally:
        var.reset(token)


@pytest.mark.parametrize("key", [b"\xff\xfe", (), ("x", ("y", 1)), -1])
def test_keys_dask_accepts_work(key):
    # key_split, used to name the task, failed on bytes that are not UTF-8 and on ().
    assert hetflow.dask.get({key: (inc, 1)}, key) == 2


def test_callbacks_given_to_get_are_told_instead_of_the_active_ones():
    from dask.callbacks import Callback

    given, active = [], []
    with Callback(posttask=lambda *args: active.append(args[0])):
        assert hetflow.dask.get({"x": (inc, 1), "y": (inc, "x")}, "y", callbacks=[Callback(posttask=lambda *a: given.append(a[0]))]) == 3
    assert sorted(given) == ["x", "y"] and active == []


def test_nested_computes_end_when_every_spare_thread_is_in_use(tmp_path):
    # dask.get waits in slices (with a timeout); once every spare thread stood in for a worker,
    # a timed wait idled its worker to the deadline, and with every thread in such waits the
    # leaves the inner computes waited for never ran.
    import os
    import subprocess
    import sys

    script = tmp_path / "nested.py"
    script.write_text(
        "import time, dask, hetflow, hetflow.dask\n"
        "from dask import delayed\n"
        "hetflow.init(ncpus=2, executor='thread')\n"
        "def leaf(i):\n"
        "    time.sleep(0.001)\n"
        "    return i\n"
        "def mid(i):\n"
        "    return sum(dask.compute(*[delayed(leaf)(j) for j in range(5)], scheduler=hetflow.dask.get))\n"
        "def top(i):\n"
        "    return sum(dask.compute(*[delayed(mid)(j) for j in range(5)], scheduler=hetflow.dask.get))\n"
        "print(sum(dask.compute(*[delayed(top)(i) for i in range(8)], scheduler=hetflow.dask.get)))\n"
    )
    for spare in ("1", "2"):
        env = dict(os.environ, HETFLOW_SPARE_THREADS=spare)
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "400", (spare, done.stdout, done.stderr)


_SIGTERM_DURING_COMPUTE = """
import signal, sys, time
import dask
import hetflow
import hetflow.dask

hetflow.init(ncpus=2)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))


def nap(x):
    time.sleep(60)
    return x


print("READY", flush=True)
dask.compute(*[dask.delayed(nap)(i) for i in range(4)], scheduler=hetflow.dask.get, executor=sys.argv[1])
print("FINISHED", flush=True)
"""


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_sigterm_handlers_exit_during_compute_gives_the_work_up_at_exit(tmp_path, executor):
    # As after an interrupted result(): get's wait on the engine did not mark the runtime
    # interrupted, so the exit waited for the tasks still running (a minute here).
    import os
    import signal

    from hf_subprocess import Child, write_script

    script = write_script(tmp_path, _SIGTERM_DURING_COMPUTE)
    with Child(tmp_path, [str(script), executor]) as child:
        child.readline_until("READY")
        time.sleep(0.5)  # compute waits by now
        os.kill(child.pid, signal.SIGTERM)
        rc, out, err = child.finish()
    assert rc == 3, err
    assert "FINISHED" not in out
    assert "exiting without" not in err and "Traceback" not in err, err
