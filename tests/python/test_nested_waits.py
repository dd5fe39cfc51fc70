"""Thread-executor tasks that wait for tasks they submit: the waiting worker runs other tasks
meanwhile (the task waited for on the waiting one's stack, others on a spare thread it lends the
worker to), with or without a timeout, so that nested waits complete even on one or two workers."""
from __future__ import annotations

import concurrent.futures
import re
import threading
from typing import Optional

import numpy as np
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


@pytest.mark.parametrize("sched", ["ws", "eager", "dmda", "random"])
@pytest.mark.parametrize("timeout", [None, PATIENCE], ids=["no-timeout", "timeout"])
def test_a_chain_of_tasks_each_waiting_for_the_one_before(sched, timeout):
    """Nothing tells the engine that task i waits for task i - 1: all of them start before the
    first one ends (it waits at a gate). Run on top of each other they hung under dmda and random;
    each waits on a thread of its own now."""
    hetflow.init(ncpus=2, executor="thread", sched=sched)
    gate = threading.Event()
    chain = [hetflow.task_submit(lambda: gate.wait(PATIENCE) and 0)]
    for _ in range(150):
        before = chain[-1]  # in the closure, not an argument: not a dependency
        chain.append(hetflow.task_submit(lambda before=before: before.result(timeout=timeout) + 1))
    gate.set()
    assert chain[-1].result(timeout=PATIENCE) == 150


def test_nested_waits_deeper_than_the_recursion_limit_on_one_stack():
    """Each level waits for the next on one worker: the waiting task runs the one it waits for on
    its own stack a few levels deep, then another thread stands in. On one stack, Python's
    recursion limit ended it at about 350 levels (RecursionError)."""
    hetflow.init(ncpus=1, executor="thread")
    assert hetflow.task_submit(nested, 600, None).result(timeout=PATIENCE) == 600


@pytest.mark.parametrize("sched", ["eager", "dmdas", "ws"])
def test_acquire_inside_tasks_behind_writers(sched):
    """The acquisition waited on a thread of its own while the task's thread waited for that one:
    the worker neither ran the writers nor let another thread run them (hung with eager from two
    such tasks, and with dmdas)."""
    hetflow.init(ncpus=2, executor="thread", sched=sched)
    counter = np.zeros(1)

    def increment(x):
        x += 1

    def read_under_acquisition():
        with hetflow.acquire(counter, "R") as view:
            return float(view[0])

    readers = []
    for _ in range(4):
        hetflow.submit(increment, hetflow.RW(counter))
        readers.append(hetflow.submit(read_under_acquisition))
    seen = [r.result(timeout=PATIENCE) for r in readers]
    # Each reader's acquisition comes after the increments submitted before the reader.
    assert all(i + 1 <= value <= 4 for i, value in enumerate(seen)), seen
    hetflow.wait_for_all()
    assert counter[0] == 4


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


WAYS_TO_WAIT = {
    "result": lambda f: f.result(),
    "exception": lambda f: f.exception(),
    "cf.wait": lambda f: concurrent.futures.wait([f]),
    "cf.wait-first": lambda f: concurrent.futures.wait([f], return_when=concurrent.futures.FIRST_COMPLETED),
    "cf.as_completed": lambda f: list(concurrent.futures.as_completed([f])),
    "cf.as_completed-timeout": lambda f: list(concurrent.futures.as_completed([f], timeout=PATIENCE)),
}


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_every_way_to_wait_runs_the_child_on_the_only_worker(way):
    hetflow.init(ncpus=1, executor="thread")

    def parent():
        child = hetflow.task_submit(lambda: 21)
        WAYS_TO_WAIT[way](child)
        return child.result() * 2

    assert hetflow.task_submit(parent).result(timeout=PATIENCE) == 42


def test_concurrent_futures_wait_inside_a_task_mixes_hetflow_and_other_futures():
    hetflow.init(ncpus=1, executor="thread")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:

        def parent():
            theirs = pool.submit(lambda: 1)
            ours = hetflow.task_submit(lambda: 2)
            done, not_done = concurrent.futures.wait([theirs, ours])
            return len(done), len(not_done), theirs.result() + ours.result()

        assert hetflow.task_submit(parent).result(timeout=PATIENCE) == (2, 0, 3)


def test_a_wait_inside_a_task_with_a_timeout_still_expires_in_concurrent_futures():
    hetflow.init(ncpus=1, executor="thread")
    gate = hetflow.empty(1, dtype="int64")

    def waits_briefly():
        reader = hetflow.task_submit(lambda a: int(a[0]), hetflow.R(gate))
        done, _ = concurrent.futures.wait([reader], timeout=0.05)
        return len(done)

    with hetflow.acquire(gate, "W") as view:
        view[0] = 4
        assert hetflow.task_submit(waits_briefly).result(timeout=PATIENCE) == 0
    assert hetflow.wait_for_all(timeout=PATIENCE)


@pytest.mark.parametrize("way", [way for way in WAYS_TO_WAIT if not way.endswith("-timeout")])
@pytest.mark.parametrize("ncpus", [1, 2])
def test_waiting_for_a_child_that_needs_the_parents_data_is_refused(way, ncpus):
    """The child reads what the parent writes, so it cannot start before the parent ends: the
    wait would never end. It is refused at once, and the child runs once the parent has ended
    (or fails with it, if the parent lets the refusal end it)."""
    hetflow.init(ncpus=ncpus, executor="thread")
    data = np.zeros(4)
    children = []

    def parent(x, catch):
        x[:] = 1
        children.append(hetflow.task_submit(lambda y: float(y.sum()), hetflow.R(x)))
        try:
            WAYS_TO_WAIT[way](children[-1])
        except RuntimeError as refusal:
            if not catch:
                raise
            return str(refusal)
        return "waited"

    refusal = hetflow.task_submit(parent, hetflow.RW(data), True).result(timeout=PATIENCE)
    assert re.search(r"task 'parent' waits for task '<lambda>'.*would never end", refusal), refusal
    assert children[-1].result(timeout=PATIENCE) == 4.0

    with pytest.raises(RuntimeError, match="would never end"):
        hetflow.task_submit(parent, hetflow.RW(data), False).result(timeout=PATIENCE)
    with pytest.raises(hetflow.DependencyError, match="'parent' failed"):
        children[-1].result(timeout=PATIENCE)


def test_waiting_behind_thousands_of_tasks_that_need_the_parent_is_refused_after_a_while():
    """Past the few thousand tasks the check looks at when a wait begins, the wait is checked
    again a second later, over many more, and refused (it hung)."""
    hetflow.init(ncpus=2, executor="thread")
    data = np.zeros(1)

    def bump(y):
        y += 1

    def parent(x):
        last = None
        for _ in range(3000):
            last = hetflow.task_submit(bump, hetflow.RW(x))
        try:
            last.result()
        except RuntimeError as refusal:
            return str(refusal)
        return "waited"

    refusal = hetflow.task_submit(parent, hetflow.RW(data)).result(timeout=PATIENCE)
    assert re.search(r"task 'parent' waits for task 'bump'.*would never end", refusal), refusal
    hetflow.wait_for_all()
    assert data[0] == 3000


TIMED_WAYS = {
    "result": (lambda f: f.result(timeout=0.1), TimeoutError),
    "cf.wait": (lambda f: concurrent.futures.wait([f], timeout=0.1)[0], None),
    "cf.as_completed": (lambda f: list(concurrent.futures.as_completed([f], timeout=0.1)), TimeoutError),
}


@pytest.mark.parametrize("way", TIMED_WAYS)
def test_a_timed_wait_for_a_child_that_needs_the_parents_data_times_out(way):
    """With a timeout, the same wait cannot hang: it ends as it says, at the timeout."""
    hetflow.init(ncpus=2, executor="thread")
    data = np.zeros(4)
    children = []
    wait, raises = TIMED_WAYS[way]

    def parent(x):
        x[:] = 1
        children.append(hetflow.task_submit(lambda y: float(y.sum()), hetflow.R(x)))
        try:
            return len(wait(children[0]))
        except TimeoutError:
            return "timed out"

    assert hetflow.task_submit(parent, hetflow.RW(data)).result(timeout=PATIENCE) == ("timed out" if raises else 0)
    assert children[0].result(timeout=PATIENCE) == 4.0


def test_first_completed_inside_a_task_returns_the_future_that_can_end():
    hetflow.init(ncpus=2, executor="thread")
    data = np.zeros(4)

    def parent(x):
        stuck = hetflow.task_submit(lambda y: float(y.sum()), hetflow.R(x))  # needs this task's x
        free = hetflow.task_submit(lambda: "free")
        done, _ = concurrent.futures.wait([stuck, free], return_when=concurrent.futures.FIRST_COMPLETED)
        return [f.result() for f in done]

    assert hetflow.task_submit(parent, hetflow.RW(data)).result(timeout=PATIENCE) == ["free"]


def test_as_completed_inside_a_task_yields_what_can_end_then_refuses_the_rest():
    hetflow.init(ncpus=2, executor="thread")
    data = np.zeros(4)

    def parent(x):
        stuck = hetflow.task_submit(lambda y: float(y.sum()), hetflow.R(x))
        free = hetflow.task_submit(lambda: "free")
        got = []
        try:
            for future in concurrent.futures.as_completed([free, stuck]):
                got.append(future.result())
        except RuntimeError as refusal:
            got.append("would never end" in str(refusal))
        return got

    assert hetflow.task_submit(parent, hetflow.RW(data)).result(timeout=PATIENCE) == ["free", True]


@pytest.mark.parametrize("sched", ["ws", "eager", "dmdas"])
def test_two_tasks_waiting_for_each_other_on_two_workers_fail_saying_why(sched):
    """Each has started (on its own worker) when it waits for the other: the wait that would close
    the cycle raises, naming both tasks, and the other task fails with that error; both hung."""
    hetflow.init(ncpus=2, executor="thread", sched=sched)
    both_started = threading.Barrier(2, timeout=PATIENCE)
    futures: dict = {}
    ready = threading.Event()

    def wait_for(other: str) -> int:
        both_started.wait()
        ready.wait(PATIENCE)
        return futures[other].result() + 1

    futures["first"] = hetflow.task_submit.options(name="first")(wait_for, "second")
    futures["second"] = hetflow.task_submit.options(name="second")(wait_for, "first")
    ready.set()
    done, _ = concurrent.futures.wait(list(futures.values()), timeout=PATIENCE)
    assert len(done) == 2, "tasks waiting for each other hung"
    for future in futures.values():
        with pytest.raises(RuntimeError, match=r"task '(first|second)' waits for task '(first|second)'.*would never end"):
            future.result()


@pytest.mark.parametrize("parents", [2, 3])
def test_a_ring_of_parents_each_waiting_for_a_child_reading_the_next_ones_array_fails_saying_why(parents):
    """Parent i writes array i and waits for a child reading array i+1, which cannot start
    before parent i+1 ends: around the ring each wait needs the next, on another worker. The
    wait that closes the ring raises, naming the tasks (it hung), and the rest fail with it."""
    hetflow.init(ncpus=parents, executor="thread")
    arrays = [np.zeros(4) for _ in range(parents)]
    all_started = threading.Barrier(parents, timeout=PATIENCE)

    def parent(mine, index):
        mine[:] = index
        all_started.wait()
        return hetflow.task_submit(np.sum, hetflow.R(arrays[(index + 1) % parents])).result()

    futures = [hetflow.task_submit.options(name=f"parent{i}")(parent, hetflow.RW(arrays[i]), i) for i in range(parents)]
    done, _ = concurrent.futures.wait(futures, timeout=PATIENCE)
    assert len(done) == parents, "a ring of waits through data hung"
    refusals = [str(future.exception()) for future in futures]
    assert any(re.search(r"task 'parent\d' waits for task 'sum'.*would never end", text) for text in refusals), refusals
    assert all(future.exception() is not None for future in futures)


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_task_holding_a_lock_goes_on_once_its_wait_is_over(timeout):
    """The idiom of concurrent.futures with a lock: task A holds it while it waits for a slow
    task; task C, which needs it, starts meanwhile on the spare thread standing in for A's
    worker. Once its wait is over A goes on without its worker and releases the lock; it waited
    for C for ever (C here gives up after a while, saying whether it got the lock)."""
    import time

    executor = hetflow.Executor(2, executor="thread")
    lock = threading.Lock()
    holding = threading.Event()
    try:
        slow = executor.submit(time.sleep, 0.3)

        def task_a():
            with lock:
                holding.set()
                slow.result(timeout=timeout)
            return "a done"

        def task_c():
            got = lock.acquire(timeout=10)
            if got:
                lock.release()
            return got

        a = executor.submit(task_a)
        assert holding.wait(PATIENCE)
        time.sleep(0.05)  # A waits, its worker lent
        c = executor.submit(task_c)
        assert c.result(timeout=PATIENCE) is True
        assert a.result(timeout=PATIENCE) == "a done"
    finally:
        executor.shutdown()


def test_a_task_polling_its_children_with_timeouts_on_one_worker():
    """After its first timed wait the task goes on without its worker (the spare thread runs the
    child); the spare must go on serving the worker for the next children."""
    import time

    executor = hetflow.Executor(1, executor="thread")
    try:

        def child(i):
            time.sleep(0.06)
            return i

        def parent():
            total = 0
            for i in range(1, 4):
                future = executor.submit(child, i)
                deadline = time.monotonic() + PATIENCE
                while time.monotonic() < deadline:
                    try:
                        total += future.result(timeout=0.005)
                        break
                    except concurrent.futures.TimeoutError:
                        pass
            return total

        assert executor.submit(parent).result(timeout=PATIENCE) == 6
    finally:
        executor.shutdown()


def test_a_nested_task_that_went_on_without_its_worker_ends_without_a_fatal_error(tmp_path):
    """A task run on the stack of a waiting one (its parent, which let the GIL go to wait) waits
    with a timeout for a task a spare thread runs; the wait times out while the spare still has
    the worker, so the task goes on without it and takes it back as its body returns. Taking it
    back gave up a GIL session the thread did not hold: the interpreter aborted ("Fatal Python
    error: PyGILState_Release: thread state ... must be current when releasing"). A child
    interpreter runs it, as that killed the process."""
    from hf_subprocess import run_script

    status, out, err = run_script(
        tmp_path,
        """
        import concurrent.futures, time
        import hetflow

        def long():
            time.sleep(0.3)
            return "long"

        def child():
            slow = hetflow.task_submit(long)
            try:
                return slow.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                return "timed out", slow.result()

        def parent():
            return hetflow.task_submit(child).result(), sum(range(10))

        hetflow.init(ncpus=1, executor="thread")
        print(hetflow.task_submit(parent).result(timeout=30))
        """,
    )
    assert (status, err) == (0, ""), err
    assert out.strip() == "(('timed out', 'long'), 45)"
