"""Where tasks run: the thread executor (worker threads of this process) and the process
executor (persistent worker processes)."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy
import pytest

import hetflow
from hf_subprocess import run_script


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    hetflow.shutdown()


counter = {"calls": 0}


def where():
    return os.getpid(), threading.get_ident()


def sleepy_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def count_up():
    counter["calls"] += 1
    return counter["calls"]


def meet(directory, me, expected):
    """Waits until ``expected`` tasks have checked in under ``directory``: True if they all did,
    which they can only do if they run at the same time."""
    open(os.path.join(directory, f"{me}.in"), "w").close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len([n for n in os.listdir(directory) if n.endswith(".in")]) >= expected:
            return True, os.getpid()
        time.sleep(0.005)
    return False, os.getpid()


def spin(n):
    """Pure-Python CPU work, holding the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i
    return total


# -- thread executor ----------------------------------------------------------------------------------
def test_thread_tasks_run_in_a_worker_thread_of_this_process():
    hetflow.init(ncpus=2, executor="thread")
    pid, ident = hetflow.submit(where).result(timeout=30)
    assert pid == os.getpid()
    assert ident != threading.get_ident()
    assert ident != threading.main_thread().ident


def test_thread_tasks_share_this_processes_memory():
    hetflow.init(ncpus=2, executor="thread")
    box = []
    hetflow.submit(box.append, "from a task").result(timeout=30)
    assert box == ["from a task"]
    before = counter["calls"]
    assert hetflow.submit(count_up).result(timeout=30) == before + 1
    assert counter["calls"] == before + 1


def test_thread_tasks_use_the_cpu_workers():
    hetflow.init(ncpus=2, executor="thread")
    gate = threading.Barrier(2, timeout=20)
    idents = [hetflow.submit(lambda: (gate.wait(), threading.get_ident())[1]) for _ in range(2)]
    got = [f.result(timeout=30) for f in idents]  # both waited at the barrier: two threads at once
    assert len(set(got)) == 2


def test_thread_tasks_can_submit_tasks():
    hetflow.init(ncpus=2, executor="thread")

    def outer(x):
        return hetflow.submit(lambda y: y * 2, x).result(timeout=30) + 1

    assert hetflow.submit(outer, 20).result(timeout=30) == 41


# -- process executor ---------------------------------------------------------------------------------
def test_process_tasks_run_in_other_processes():
    hetflow.init(ncpus=2, executor="process")
    pid, _ = hetflow.submit(where).result(timeout=30)
    assert pid != os.getpid()


def test_process_tasks_run_in_parallel_in_distinct_workers(tmp_path):
    hetflow.init(ncpus=2, executor="process")
    futures = [hetflow.submit(meet, str(tmp_path), i, 2) for i in range(2)]
    results = [f.result(timeout=30) for f in futures]
    assert all(met for met, _ in results), "the two tasks did not run at the same time"
    pids = {pid for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids


def test_sleeping_process_tasks_spread_over_the_workers():
    hetflow.init(ncpus=2, executor="process")
    pids = {f.result(timeout=30) for f in [hetflow.submit(sleepy_pid, 0.1) for _ in range(6)]}
    assert len(pids) > 1 and os.getpid() not in pids


def test_pure_python_cpu_work_runs_in_the_workers():
    hetflow.init(ncpus=2, executor="process")
    futures = [hetflow.submit(spin, 200_000) for _ in range(4)]
    assert [f.result(timeout=60) for f in futures] == [spin(200_000)] * 4


def test_worker_processes_are_persistent():
    hetflow.init(ncpus=2, executor="process", nprocs=1)
    pids = {hetflow.submit(os.getpid).result(timeout=30) for _ in range(5)}
    assert len(pids) == 1 and os.getpid() not in pids
    # Module state in the worker survives between its tasks (and is not this process's).
    before = counter["calls"]
    assert [hetflow.submit(count_up).result(timeout=30) for _ in range(3)] == [1, 2, 3]
    assert counter["calls"] == before


def test_nprocs_sets_the_number_of_worker_processes():
    hetflow.init(ncpus=2, executor="process", nprocs=1)
    pids = {f.result(timeout=30) for f in [hetflow.submit(sleepy_pid, 0.05) for _ in range(4)]}
    assert len(pids) == 1


def test_process_tasks_run_lambdas_closures_and_nested_functions():
    hetflow.init(ncpus=2, executor="process")
    base = 10

    def nested(x):
        return x + base

    assert hetflow.submit(lambda: base * 2).result(timeout=30) == 20
    assert hetflow.submit(nested, 5).result(timeout=30) == 15
    assert hetflow.submit(lambda f: f(1), nested).result(timeout=30) == 11


def test_process_tasks_return_lambdas():
    hetflow.init(ncpus=2, executor="process")
    returned = hetflow.submit(lambda: (lambda y: y + 1)).result(timeout=30)
    assert returned(1) == 2


def test_an_unpicklable_result_fails_the_task_with_type_error():
    hetflow.init(ncpus=2, executor="process")
    future = hetflow.submit(threading.Lock)
    with pytest.raises(TypeError, match="cannot be pickled"):
        future.result(timeout=30)
    assert hetflow.submit(sum, [1, 2]).result(timeout=30) == 3


def views_of(a, with_a_lambda):
    views = (a, (a[1:], {"t": a.T}), numpy.broadcast_to(a, (2,) + a.shape))
    return views + (lambda: 1,) if with_a_lambda else views  # a lambda: pickled by cloudpickle


@pytest.mark.parametrize("with_a_lambda", [False, True], ids=["pickle", "cloudpickle"])
def test_read_only_arrays_a_process_task_returns_come_back_writeable_at_any_depth(with_a_lambda):
    # Its arguments reach the task read-only; returned (or views of them) inside a tuple or a
    # dict, the caller gets arrays of its own, as from any process pool (they came back read-only).
    hetflow.init(ncpus=2, executor="process")
    a = numpy.arange(6.0).reshape(2, 3)
    whole, (tail, named), broadcast, *function = hetflow.submit(views_of, a, with_a_lambda).result(timeout=30)
    for got, expected in ((whole, a), (tail, a[1:]), (named["t"], a.T), (broadcast, numpy.broadcast_to(a, (2, 2, 3)))):
        assert numpy.array_equal(got, expected)
        assert got.flags.writeable
        got += 1  # the caller's own copy
    assert numpy.array_equal(a, numpy.arange(6.0).reshape(2, 3))
    assert [f() for f in function] == ([1] if with_a_lambda else [])


class Alarm(Exception):
    pass


def raise_alarm(*_):
    raise Alarm("the alarm a task left")


def leaves_an_alarm(with_handler):
    if with_handler:
        signal.signal(signal.SIGALRM, raise_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.2)  # and returns without cancelling it
    return os.getpid()


@pytest.mark.parametrize("with_handler", [True, False], ids=["raising-handler", "default-action"])
def test_an_alarm_a_process_task_leaves_does_not_outlive_it(with_handler):
    # Its handler raised in the worker's reading of the next request (the worker died and the
    # next task failed with WorkerCrashedError); without a handler, SIGALRM ended the worker.
    hetflow.init(ncpus=1, nprocs=1, executor="process")
    worker = hetflow.submit(leaves_an_alarm, with_handler).result(timeout=30)
    time.sleep(0.5)  # the alarm would fire now, between tasks
    assert hetflow.submit(os.getpid).result(timeout=30) == worker
    assert hetflow.submit(time.sleep, 0.5).result(timeout=30) is None  # nor in a later task


def test_an_unpicklable_thread_result_for_a_process_task_fails_the_dependent():
    hetflow.init(ncpus=2, executor="process")
    lock_future = hetflow.task_submit.options(executor="thread")(threading.Lock)
    dependent = hetflow.submit(lambda lock: 1, lock_future)
    with pytest.raises(TypeError, match="process worker"):
        dependent.result(timeout=30)
    assert lock_future.result(timeout=30).acquire(False)


def test_tasks_inside_a_process_task_run_in_that_worker():
    hetflow.init(ncpus=2, executor="process", nprocs=1)

    def outer():
        import hetflow as inner

        return inner.submit(os.getpid).result(timeout=30), os.getpid()

    inner_pid, outer_pid = hetflow.submit(outer).result(timeout=60)
    assert inner_pid == outer_pid != os.getpid()


def test_process_executor_with_more_workers_than_cores():
    hetflow.init(ncpus=4, executor="process")
    pids = {f.result(timeout=60) for f in [hetflow.submit(sleepy_pid, 0.1) for _ in range(8)]}
    assert len(pids) > 1


# -- in a child interpreter: __main__ and stdout --------------------------------------------------------
def test_functions_and_classes_of_main_run_in_process_workers(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
        import os
        import hetflow

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        def norm1(p):
            return abs(p.x) + abs(p.y), os.getpid()

        def shift(p, dx):
            return Point(p.x + dx, p.y)

        if __name__ == "__main__":
            hetflow.init(ncpus=2, executor="process")
            value, pid = hetflow.submit(norm1, Point(3, -4)).result(timeout=30)
            moved = hetflow.submit(shift, Point(1, 2), 10).result(timeout=30)
            print("NORM", value, pid != os.getpid())
            print("MOVED", type(moved).__name__, moved.x, moved.y)
            k = 5
            print("CLOSURE", hetflow.submit(lambda: k * k).result(timeout=30))
        """,
    )
    assert rc == 0, err
    assert "NORM 7 True" in out
    assert "MOVED Point 11 2" in out
    assert "CLOSURE 25" in out


def test_print_in_a_process_task_reaches_the_hosts_stdout(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
        import os
        import hetflow

        def talk(i):
            print(f"hello from task {i} in", "worker" if os.getpid() != HOST else "host")
            return i

        HOST = os.getpid()
        if __name__ == "__main__":
            hetflow.init(ncpus=2, executor="process")
            for i in range(3):
                hetflow.submit(talk, i).result(timeout=30)
                print(f"host after {i}", flush=True)
        """,
    )
    assert rc == 0, err
    lines = out.splitlines()
    for i in range(3):
        said = f"hello from task {i} in worker"
        assert said in lines, out
        # A task's prints are flushed before its result comes back.
        assert lines.index(said) < lines.index(f"host after {i}")


def test_print_in_a_thread_task_reaches_stdout(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
        import hetflow
        hetflow.init(ncpus=2, executor="thread")
        hetflow.submit(print, "printed by a thread task").result(timeout=30)
        """,
    )
    assert rc == 0, err
    assert "printed by a thread task" in out.splitlines()


def test_a_main_function_whose_globals_change_at_every_call_stays_right_in_bounded_memory(tmp_path):
    # Each change of what it captures is a new version of the function; past a few dozen it
    # travels with its calls instead of being registered again and again.
    rc, out, err = run_script(
        tmp_path,
        """
import hetflow
from hetflow import _serialize

hetflow.init(ncpus=1, nprocs=1, executor="process")
step = 0

def scaled(x):
    return x * step

results = []
for step in range(2 * _serialize._MOST_VERSIONS + 10):
    results.append(hetflow.task_submit(scaled, 1).result(timeout=30))
print("RIGHT", results == list(range(2 * _serialize._MOST_VERSIONS + 10)))
print("REGISTERED", len(hetflow._runtime.current()._function_ids) <= _serialize._MOST_VERSIONS + 2)
""",
    )
    assert rc == 0, err
    assert "RIGHT True" in out and "REGISTERED True" in out, out


def test_a_new_function_object_at_every_call_stays_right_in_bounded_memory(tmp_path):
    # A lambda or a partial made in the loop: each is a function of its own, registered in the
    # host and its workers for good, until there are too many; the next ones travel with their calls.
    rc, out, err = run_script(
        tmp_path,
        """
import functools, operator
import hetflow
from hetflow import _serialize

_serialize._MOST_FUNCTIONS = 16
hetflow.init(ncpus=1, nprocs=1, executor="process")
lambdas = [hetflow.task_submit(lambda x, k=k: x + k, 1) for k in range(40)]
partials = [hetflow.task_submit(functools.partial(operator.mul, k), 2) for k in range(40)]
print("RIGHT", [f.result(timeout=30) for f in lambdas] == [1 + k for k in range(40)]
      and [f.result(timeout=30) for f in partials] == [2 * k for k in range(40)])
print("REGISTERED", len(hetflow._runtime.current()._function_ids) <= _serialize._MOST_FUNCTIONS + 1)
# One submitted again is registered then, not pickled at every call from then on.
tenfold = lambda x: 10 * x
before = len(hetflow._runtime.current()._function_ids)
print("AGAIN", [hetflow.task_submit(tenfold, x).result(timeout=30) for x in range(3)] == [0, 10, 20],
      len(hetflow._runtime.current()._function_ids) - before)
""",
    )
    assert rc == 0, err
    assert "RIGHT True" in out and "REGISTERED True" in out and "AGAIN True 1" in out, out


def test_new_functions_each_submitted_twice_stay_in_bounded_memory(tmp_path):
    # A long-running loop that makes a new function and submits it more than once (twice here,
    # or a hetflow.map over it: a task per chunk): past the bound, no new function is registered
    # in the host, the engine or the workers, however many such loops run.
    rc, out, err = run_script(
        tmp_path,
        """
import hetflow
from hetflow import _serialize

_serialize._MOST_FUNCTIONS = 4
_serialize._MOST_REGISTERED = 8
hetflow.init(ncpus=1, nprocs=1, executor="process")
right = True
for k in range(40):
    f = lambda x, k=k: x + k
    right &= hetflow.task_submit(f, 1).result(timeout=30) == 1 + k
    right &= hetflow.task_submit(f, 2).result(timeout=30) == 2 + k
    right &= hetflow.map(lambda x, k=k: x * k, range(3), chunksize=1) == [0, k, 2 * k]
print("RIGHT", right)
print("REGISTERED", len(hetflow._runtime.current()._function_ids), len(_serialize._registered_keys))
""",
    )
    assert rc == 0, err
    assert "RIGHT True" in out, out
    registered = out.split("REGISTERED")[1].split()
    assert int(registered[0]) <= 8 + 1 and int(registered[1]) <= 8, out  # + call_inline's


def thread_pool_variables():
    return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def cpu_workers_of_a_runtime_started_here():
    hetflow.init(executor="thread")
    try:
        return hetflow._runtime.current().ncpus
    finally:
        hetflow.shutdown()


def test_worker_processes_get_their_share_of_the_cpus_for_thread_pools(monkeypatch):
    # Each worker's BLAS (or a runtime a task starts there) used every CPU: nprocs times too many threads.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("HETFLOW_NCPUS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # the program's own setting stays
    hetflow.init(ncpus=1, nprocs=2, executor="process")
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    seen = hetflow.submit(thread_pool_variables).result(timeout=60)
    assert seen == {"OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": "3"}
    assert hetflow.submit(cpu_workers_of_a_runtime_started_here).result(timeout=60) == int(share)
    with hetflow.Executor(max_workers=1) as executor:
        alone = executor.submit(thread_pool_variables).result(timeout=60)
    assert alone["OMP_NUM_THREADS"] == str(len(os.sched_getaffinity(0)))
