"""ePython-style offload: cores, launches, subsets, handles, messages among cores, device data."""
from __future__ import annotations

import os
import re
import time

import pytest

import hetflow
from hetflow import offload, offload_multiple, offload_single, wait_all, waitAll

CORES = 4


@pytest.fixture(autouse=True)
def four_cores():
    hetflow.init(ncpus=CORES)
    yield
    hetflow.shutdown()


def where(a, b):
    return hetflow.coreid(), os.getpid(), a + b


def test_offload_runs_once_per_core_in_core_order():
    values = offload(where)(1, 2)
    assert [core for core, _, _ in values] == list(range(CORES))
    assert len({pid for _, pid, _ in values}) == CORES
    assert all(total == 3 for _, _, total in values)
    assert hetflow.numcores() == CORES


def test_decorator_arguments_and_call_overrides():
    on_two = offload(target=[1, 3])(where)
    assert [core for core, _, _ in on_two(0, 0)] == [1, 3]
    assert [core for core, _, _ in on_two(0, 0, target=2)] == [2]
    handle = on_two(0, 0, asynchronous=True)
    assert isinstance(handle, hetflow.OffloadHandle)
    assert [core for core, _, _ in handle.wait()] == [1, 3]
    handle = offload(where)(5, 5, **{"async": True})  # ported code keeps its spelling
    assert [value for _, _, value in handle.wait()] == [10] * CORES


def test_auto_picks_idle_cores():
    sleeper = offload(target=[0, 1], asynchronous=True)(time.sleep)
    busy = sleeper(0.5)
    chosen = [core for core, _, _ in offload(auto=2)(where)(0, 0)]
    assert chosen == [2, 3]
    busy.wait()


def napper(seconds):
    time.sleep(seconds * hetflow.coreid())
    return hetflow.coreid()


def test_handle_wait_any_test_done():
    handle = offload(asynchronous=True)(napper)(0.3)
    core, value = handle.wait_any()
    assert core == value == 0  # core 0 sleeps least
    assert handle.cores == [1, 2, 3]
    assert not handle.test() and not handle.done()  # the finished one was collected
    deadline = time.time() + 10
    while not handle.test() and time.time() < deadline:
        time.sleep(0.02)
    assert handle.test()  # core 1 finished, not collected yet
    assert handle.wait() == [1, 2, 3]
    assert handle.done()


def test_multiple_single_and_wait_all():
    adder = offload_multiple(cores=3)(lambda a, b: a + b)
    subtractor = offload_single(lambda a, b: a - b)
    h1, h2 = adder(10, 20), subtractor(10, 20)
    assert wait_all(h1, h2) == [[30, 30, 30], [-10]]
    assert waitAll is wait_all
    with pytest.raises(TypeError, match="not int"):
        wait_all(h1, 3)
    # Not a wait for every task (that is hetflow.wait_for_all()): said, rather than a no-op.
    with pytest.raises(TypeError, match=r"none were given; to wait for every task submitted, call hetflow.wait_for_all"):
        wait_all()


def test_busy_cores_queue_launches_in_order():
    log = offload(target=1, asynchronous=True)
    first = log(time.sleep)(0.2)
    second = log(lambda: time.time())()
    start = time.time()
    first.wait()
    assert second.wait()[0] >= start  # ran after the sleep that was sent before it


def ring():
    me, cores = hetflow.coreid(), hetflow.numcores()
    hetflow.send(me * 10, (me + 1) % cores)
    received = hetflow.recv((me - 1) % cores)
    hetflow.barrier()
    return (
        received,
        hetflow.allreduce(me, "sum"),
        hetflow.allreduce(me, "max"),
        hetflow.allreduce(me + 1, "prod"),
        hetflow.reduce(me, "min"),
        hetflow.bcast(f"from {me}", 2),
        hetflow.allreduce([me], lambda a, b: a + b),
    )


def test_messages_among_the_cores_of_a_launch():
    results = offload(ring)()
    for me, (received, total, biggest, product, smallest, broadcast, gathered) in enumerate(results):
        assert received == ((me - 1) % CORES) * 10
        assert (total, biggest, product) == (6, 3, 24)
        assert smallest == (0 if me == 0 else None)  # reduce: on the launch's first core only
        assert broadcast == "from 2"
        assert gathered == [0, 1, 2, 3]


def test_a_decorator_with_auto_and_target_is_refused_where_written():
    # It was accepted, and then every call without an override failed.
    with pytest.raises(ValueError, match="give auto or target, not both"):
        offload(auto=2, target=[0])(where)
    assert len(offload(where)(0, 0, auto=2, target=None)) == 2


def receive_on_two_threads():
    import threading

    import numpy

    me = hetflow.coreid()
    if me != 0:
        for _ in range(10):
            hetflow.send(numpy.full(20_000, float(me)), 0)  # each message larger than a pipe's atomic write
        return None
    received = {}

    def receive(peer):
        received[peer] = [float(hetflow.recv(peer)[0]) for _ in range(10)]

    threads = [threading.Thread(target=receive, args=(peer,)) for peer in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return received


def test_threads_of_a_kernel_message_at_once():
    # Two threads of one kernel each in recv read each other's answers: garbled messages, a
    # lost worker, and the kernel's value silently missing what they should have received.
    values = offload(target=[0, 1, 2])(receive_on_two_threads)()
    assert values[0] == {1: [1.0] * 10, 2: [2.0] * 10}


def array_extremes():
    import numpy

    me = hetflow.coreid()
    values = numpy.array([me, -me, 10 - me], dtype=float)
    return hetflow.allreduce(values, "min"), hetflow.allreduce(values, "max"), hetflow.reduce(values, "max")


def test_min_and_max_of_numpy_arrays_are_element_wise():
    # As "sum" and "prod" are: the builtins min and max raised (an array's truth value).
    import numpy

    for me, (smallest, biggest, reduced) in enumerate(offload(array_extremes)()):
        numpy.testing.assert_array_equal(smallest, [0, -3, 7])
        numpy.testing.assert_array_equal(biggest, [3, 0, 10])
        if me == 0:
            numpy.testing.assert_array_equal(reduced, [3, 0, 10])
        else:
            assert reduced is None


def fail_on_core_one():
    if hetflow.coreid() == 1:
        raise ValueError("core one gives up")
    return hetflow.recv(1)  # would wait forever for the failed core


def test_a_failing_kernel_fails_its_peers_instead_of_hanging():
    handle = offload(target=[0, 1], asynchronous=True)(fail_on_core_one)()
    results = []
    for core in (0, 1):
        try:
            results.append(handle.wait_any())
        except Exception as error:  # noqa: BLE001
            results.append((getattr(error, "core", None), type(error).__name__, str(error)))
    by_core = {entry[0]: entry for entry in results}
    assert by_core[1][1] == "ValueError" and "core one gives up" in by_core[1][2]
    assert by_core[0][1] == "PeerFailed" and "core 1 failed" in by_core[0][2]
    # wait() raises the failing kernel's own error, not the first core's PeerFailed
    with pytest.raises(ValueError, match="core one gives up") as raised:
        offload(target=[0, 1], asynchronous=True)(fail_on_core_one)().wait()
    assert raised.value.core == 1


def wait_for_each_other(mode):
    me = hetflow.coreid()
    other = 1 - me
    if mode == "own core":
        return hetflow.recv(me) if me == 1 else "core 0 ends"
    if mode == "each other":
        return hetflow.recv(other)
    if me == 0:  # "barrier and recv"
        hetflow.barrier()
    return hetflow.recv(other)


@pytest.mark.parametrize(
    "mode, says",
    [
        ("own core", "recv(1) on core 1 waits for a message from its own core"),
        ("each other", "every kernel still running waits"),
        ("barrier and recv", "core 0 at the barrier, core 1 in recv(0)"),
    ],
)
def test_kernels_that_can_only_wait_for_each_other_fail_instead_of_hanging(mode, says):
    with pytest.raises(hetflow.PeerFailed, match=re.escape(says)):
        offload(target=[0, 1])(wait_for_each_other)(mode)
    assert offload(target=[0, 1])(lambda: hetflow.coreid())() == [0, 1]  # the cores are free again


def message_from_a_second_thread(mode):
    import threading
    import time

    me = hetflow.coreid()
    if me == 1:
        if mode == "own core":
            return None
        value = hetflow.recv(0)
        if mode == "barrier":
            hetflow.barrier()
            return value
        hetflow.send(value + 1, 0)
        return value

    def later():
        time.sleep(0.3)  # the kernel's own thread waits meanwhile
        hetflow.send(10, 0 if mode == "own core" else 1)

    sender = threading.Thread(target=later)
    sender.start()
    try:
        if mode == "barrier":
            hetflow.barrier()
            return "passed"
        return hetflow.recv(0 if mode == "own core" else 1)
    finally:
        sender.join()


@pytest.mark.parametrize("mode, expected", [("recv", [11, 10]), ("own core", [10, None]), ("barrier", ["passed", 10])])
def test_a_kernel_waiting_while_another_of_its_threads_will_send_is_not_a_deadlock(mode, expected):
    # Core 0 waited (recv or barrier) and core 1 waited for what core 0's second thread was about
    # to send: both cores counted as waiting, and the launch failed as if they waited for each
    # other (and a recv from its own core failed at once).
    assert offload(target=[0, 1])(message_from_a_second_thread)(mode) == expected


def wait_for_each_other_from_a_second_thread():
    import threading

    me = hetflow.coreid()
    if me == 1:
        return hetflow.recv(0)
    failures = []

    def receive():
        try:
            hetflow.recv(1)
        except hetflow.PeerFailed as failure:
            failures.append(failure)

    receiver = threading.Thread(target=receive)
    receiver.start()
    receiver.join()  # the kernel's own thread waits for the one in recv: neither can send
    raise failures[0]


def test_kernels_whose_threads_all_wait_for_each_other_still_fail_instead_of_hanging():
    with pytest.raises(hetflow.PeerFailed, match="every kernel still running waits"):
        offload(target=[0, 1])(wait_for_each_other_from_a_second_thread)()


def end_this_process():
    os.kill(os.getpid(), 9)


def test_device_data_lost_with_a_core_that_died_says_so():
    hetflow.define_on_device("counter", 5)
    with pytest.raises(hetflow.WorkerCrashedError):
        offload(target=[0])(end_this_process)()
    with pytest.raises(NameError, match="the core's process was replaced after the one before it died"):
        hetflow.copy_from_device("counter", target=[0])
    assert hetflow.copy_from_device("counter", target=[1]) == [5]  # the other cores keep theirs
    hetflow.copy_to_device("counter", 6, target=[0])
    assert hetflow.copy_from_device("counter", target=[0]) == [6]


def test_device_data_lives_on_each_core_between_launches():
    hetflow.define_on_device("counter", 0)

    @offload(target=[0, 2])
    def bump():
        global counter
        counter += 1
        return counter

    assert bump() == [1, 1]
    assert bump() == [2, 2]
    assert hetflow.copy_from_device("counter") == [2, 0, 2, 0]
    hetflow.copy_to_device("counter", 10, target=3)
    assert hetflow.copy_from_device("counter", target=[3]) == [10]
    handle = hetflow.copy_from_device("counter", asynchronous=True)
    assert handle.wait() == [2, 0, 2, 10]


def slow_value(value):
    time.sleep(0.2)
    return value


def test_a_launch_waiting_for_a_future_is_not_overtaken_on_its_cores():
    hetflow.define_on_device("x", 1)

    @offload(asynchronous=True)
    def multiply(by):
        global x
        x = x * by
        return x

    @offload(asynchronous=True)
    def add(amount):
        global x
        x = x + amount
        return x

    three = hetflow.task_submit(slow_value, 3)
    first = multiply(three, target=[1, 2])
    second = add(10, target=[1, 2])  # ran first: x was 11, then 33
    assert first.wait() == [3, 3]
    assert second.wait() == [13, 13]
    hetflow.copy_to_device("x", hetflow.task_submit(slow_value, 7), target=3, asynchronous=True)
    assert hetflow.copy_from_device("x") == [1, 13, 13, 7]


def test_bad_launches_say_what_is_wrong():
    kernel = offload(where)
    with pytest.raises(ValueError, match="core 7 does not exist; cores are 0 to 3"):
        kernel(0, 0, target=[1, 7])
    with pytest.raises(ValueError, match="auto=5 but there are only 4 cores"):
        kernel(0, 0, auto=5)
    with pytest.raises(ValueError, match="auto or target, not both"):
        kernel(0, 0, auto=1, target=1)
    with pytest.raises(TypeError, match="unknown keyword cores"):
        offload(cores=3)
    with pytest.raises(ValueError, match="not 'x y'"):
        hetflow.define_on_device("x y", 1)
    with pytest.raises(RuntimeError, match="only inside a kernel"):
        hetflow.coreid()
    import numpy as np

    with pytest.raises(TypeError, match="marks are for tasks"):
        kernel(hetflow.RW(np.zeros(4)), 0)


def test_a_kernel_exception_names_its_core():
    def picky():
        if hetflow.coreid() == 2:
            raise KeyError("two")
        return True

    with pytest.raises(KeyError) as raised:
        offload(picky)()
    assert raised.value.core == 2



def barrier_then_core(payload):
    hetflow.barrier()
    return hetflow.coreid()


def test_concurrent_launches_from_threads_do_not_deadlock():
    # A launch sends its kernel to the cores one at a time; were launches of two threads to reach
    # the cores in different orders, their kernels' barriers would wait on each other for ever.
    import concurrent.futures
    import sys
    import threading

    threads_count, launches = 4, 25
    payload = list(range(20_000))  # some pickling per core, so a thread switch can fall between cores
    kernel = offload(barrier_then_core, asynchronous=True)
    handles = [[] for _ in range(threads_count)]
    errors = []

    def launch_many(i):
        try:
            for _ in range(launches):
                handles[i].append(kernel(payload))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: without the fix, mixed orders come at once
    try:
        threads = [threading.Thread(target=launch_many, args=(i,), daemon=True) for i in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)  # asynchronous launches return at once
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads), "asynchronous launches blocked"
    assert not errors, errors
    futures = [future for mine in handles for handle in mine for future in handle._futures.values()]
    assert len(futures) == threads_count * launches * CORES
    # Waits with a timeout (it takes about a second when it works) rather than in handle.wait(),
    # which would hang for ever on a deadlock.
    done, not_done = concurrent.futures.wait(futures, timeout=30)
    if not_done:
        hetflow.shutdown(timeout=1)  # ends the deadlocked worker processes
    assert not not_done, f"{len(not_done)} of {len(futures)} kernels deadlocked in barrier()"
    for mine in handles:
        assert [handle.wait() for handle in mine] == [list(range(CORES))] * launches


def fill_slowly(array, value):
    time.sleep(0.3)  # makes the race likely: the launch comes while the task still writes
    array[:] = value


def array_total(array):
    return float(array.sum())


def test_a_kernel_gets_its_array_arguments_after_the_tasks_writing_them():
    import numpy as np

    for a in (np.zeros(4), hetflow.zeros(4)):
        hetflow.task_submit(fill_slowly, hetflow.RW(a), 7)
        assert offload(array_total)(a) == [28.0] * CORES
        hetflow.task_submit(fill_slowly, hetflow.W(a[:2]), 1)  # a view of it: ordered too
        assert offload(array_total, target=[0, 2])(array=a) == [16.0, 16.0]  # a keyword argument
        # A task writing it after the launch waits for the kernels' copy.
        handle = offload(array_total, asynchronous=True)(a)
        hetflow.task_submit(fill_slowly, hetflow.RW(a), 0)
        assert handle.wait() == [16.0] * CORES
    assert hetflow.task_submit(np.sum, a).result() == 0.0


def test_an_asynchronous_launch_waits_for_the_writers_of_its_arrays_without_blocking():
    import threading

    import numpy as np

    a = np.zeros(4)
    gate = threading.Event()
    safety = threading.Timer(60, gate.set)  # a launch that blocked would otherwise hang for ever
    safety.start()
    try:
        hetflow.task_submit.options(executor="thread")(lambda x: (gate.wait(), x.fill(7)), hetflow.RW(a))
        handle = offload(array_total, asynchronous=True)(a)
        assert not gate.is_set(), "the launch waited for the writer instead of returning at once"
        gate.set()
        assert handle.wait() == [28.0] * CORES
    finally:
        safety.cancel()


def test_device_data_from_an_array_is_taken_after_the_tasks_writing_it():
    import numpy as np

    a = np.zeros(3)
    hetflow.task_submit(fill_slowly, hetflow.RW(a), 2)
    hetflow.define_on_device("d", a)
    hetflow.task_submit(fill_slowly, hetflow.RW(a), 5)
    hetflow.copy_to_device("d", a, target=[1, 3])
    hetflow.task_submit(fill_slowly, hetflow.RW(a), 6)
    handle = hetflow.copy_to_device("d", a, target=2, asynchronous=True)
    hetflow.task_submit(fill_slowly, hetflow.RW(a), 9)  # after the copy: not in it
    handle.wait()
    assert [value.tolist() for value in hetflow.copy_from_device("d")] == [[2.0] * 3, [5.0] * 3, [6.0] * 3, [5.0] * 3]


def fail_writing(array):
    raise ValueError("the writer failed")


def test_a_kernel_whose_array_writer_failed_fails():
    import numpy as np

    a = np.zeros(2)
    hetflow.task_submit(fail_writing, hetflow.RW(a))
    with pytest.raises(hetflow.DependencyError, match="the writer failed"):
        offload(array_total, target=0)(a)


def test_a_launch_behind_an_acquisition_this_thread_holds_is_refused():
    import numpy as np

    a = np.ones(2)
    with hetflow.acquire(a, "W"):
        with pytest.raises(RuntimeError, match="release it first"):
            offload(array_total, target=0)(a)
    assert offload(array_total, target=0)(a) == [2.0]


# -- clear errors for what cannot reach a core ------------------------------------------------------
def keeps(x, y=None):
    return 1


def test_an_unpicklable_argument_names_the_kernel_and_the_argument():
    import threading

    with pytest.raises(TypeError) as caught:
        offload(keeps)(1, y=(i for i in range(3)))
    message = str(caught.value)
    assert message.startswith("hetflow.offload: kernel 'keeps': cannot send argument 'y' (<generator")
    assert "cannot pickle 'generator' object" in message and "each core gets a pickled copy" in message
    assert "run_kernel" not in message and "executor" not in message
    with pytest.raises(TypeError) as caught:
        hetflow.define_on_device("lock", threading.Lock())
    message = str(caught.value)
    assert message.startswith("hetflow.define_on_device: cannot send the value of device variable 'lock'")
    assert "cannot pickle '_thread.lock' object" in message
    assert "store" not in message and "executor" not in message
    with pytest.raises(TypeError, match=r"^hetflow.copy_to_device: cannot send the value of device variable 'g'"):
        hetflow.copy_to_device("g", (i for i in range(2)), target=1)
    assert offload(keeps, target=0)(1) == [1]  # nothing was left behind


def test_launches_whose_arguments_cannot_be_sent_leave_nothing_behind():
    # Such a launch fails before any kernel is sent: the engine forgets it, as it forgets the
    # launches that ran (it kept each for good, a leak for a program retrying such launches).
    import threading

    engine = hetflow._runtime.current()._engine
    assert offload(keeps)(1) == [1] * CORES
    before = engine.open_launches()
    for _ in range(20):
        with pytest.raises(TypeError):
            offload(keeps)(threading.Lock())
        with pytest.raises(TypeError):
            offload(keeps, target=[1, 2])(1, y=(i for i in range(3)))
    assert offload(keeps)(1) == [1] * CORES
    assert engine.open_launches() == before


def test_options_are_named_as_written_and_numpy_integers_are_core_ids():
    import numpy as np

    with pytest.raises(ValueError, match=rf"^hetflow.offload: cores=10 but there are only {CORES} cores$"):
        offload_multiple(cores=10)(keeps)(0)
    with pytest.raises(ValueError, match="hetflow.offload_multiple: cores must be a positive number of cores, not True"):
        offload_multiple(cores=True)
    assert offload(keeps)(0, target=np.int64(1)) == [1]
    assert offload(where)(0, 0, target=[np.int32(2), 3])[0][0] == 2
    assert offload(keeps)(0, auto=np.int64(1)) == [1]
    for flag in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="target must be a core id"):
            offload(keeps)(0, target=flag)
        with pytest.raises(ValueError, match="auto must be a positive number of cores"):
            offload(keeps)(0, auto=flag)


def prints():
    print("kernel printing")
    return "printed"


def test_device_variable_names_must_be_usable_and_not_hide_builtins():
    for name, reason in [("class", "is a Python keyword"), ("print", "is a Python builtin"),
                         ("len", "is a Python builtin"), ("__name__", "special name"), ("a b", "identifier")]:
        with pytest.raises(ValueError, match=re.escape(f"{name!r}")) as caught:
            hetflow.define_on_device(name, 1)
        assert reason in str(caught.value)
        with pytest.raises(ValueError, match=reason):
            hetflow.copy_to_device(name, 1)
    assert offload(prints, target=0)() == ["printed"]  # print was not replaced
    hetflow.define_on_device("match", 2)  # a soft keyword is a name
    assert hetflow.copy_from_device("match", target=0) == [2]


def first_type(items):
    return type(items[0]).__name__


def test_access_marks_inside_kernel_arguments_are_refused_saying_where():
    import numpy as np

    a = np.zeros(3)
    with pytest.raises(TypeError, match=re.escape("kernel 'first_type': argument 'items', at [0], is an access mark (hetflow.RW(...))")):
        offload(first_type)([hetflow.RW(a)])
    with pytest.raises(TypeError, match=re.escape("argument 'items', at [1]['x'], is an access mark (hetflow.W(...))")):
        offload(first_type)([1, {"x": hetflow.W(a)}])
    with pytest.raises(TypeError, match=re.escape("argument 'items' is an access mark (hetflow.R(...))")):
        offload(first_type)(hetflow.R(a))
    with pytest.raises(TypeError, match=re.escape("the value of device variable 'v', at [0], is an access mark")):
        hetflow.define_on_device("v", [hetflow.RW(a)])
    assert offload(first_type, target=0)([a]) == ["ndarray"]


def wait_inside(handle):
    return handle.wait()


def test_a_handle_cannot_be_a_kernel_argument():
    handle = offload(keeps)(0, asynchronous=True)
    with pytest.raises(TypeError, match=re.escape("kernel 'wait_inside': argument 'handle' is an OffloadHandle; an OffloadHandle cannot be sent")):
        offload(wait_inside)(handle)
    with pytest.raises(TypeError, match=re.escape("argument 'handle', at [0], is an OffloadHandle")):
        offload(wait_inside)([handle])
    with pytest.raises(TypeError, match="an OffloadHandle cannot be sent to a core or a worker process"):
        hetflow.task_submit.options(executor="process")(keeps, handle).result()
    assert handle.wait() == [1] * CORES


def fails_on_core_0():
    if hetflow.coreid() == 0:
        raise ValueError("core 0 failed")
    return 1


def test_waiting_again_on_a_failed_handle_adds_no_note():
    handle = offload(fails_on_core_0)(asynchronous=True)
    for _ in range(3):
        with pytest.raises(ValueError, match="core 0 failed") as caught:
            handle.wait()
        assert caught.value.core == 0
        assert caught.value.__notes__.count("raised by the kernel on core 0") == 1


def receive_from_core_1():
    if hetflow.coreid() == 0:
        return hetflow.recv(1)
    hetflow.send("hi", 0)
    return "sent"


def test_a_peer_cancelled_before_it_started_is_named_as_cancelled():
    busy = offload(time.sleep, target=1, asynchronous=True)(1.0)
    handle = offload(receive_from_core_1, target=[0, 1], asynchronous=True)()
    if not handle._futures[1].cancel():
        pytest.skip("core 1's kernel started before it could be cancelled")
    for _ in range(2):
        with pytest.raises(hetflow.PeerFailed, match="core 1's kernel ended without sending") as caught:
            handle.wait()
        assert caught.value.core == 0
        assert caught.value.__notes__.count("core 1's kernel was cancelled (its future's cancel()) before it started") == 1
    busy.wait()


class Scaler:
    def __init__(self, k):
        self.k = k

    @offload(target=[0, 1])
    def add_k(self, x):
        return self.k + x


def test_offload_on_a_method_gets_its_instance():
    # No descriptor: the instance was not passed, and the kernel missed an argument.
    assert Scaler(10).add_k(2) == [12, 12]


class StaticKernel:
    @offload(target=[0, 1])
    @staticmethod
    def twice(x):
        return 2 * x


def test_offload_over_a_staticmethod_gets_no_instance():
    # It was given the instance all the same: "twice() takes 1 positional argument but 2 were given".
    assert StaticKernel().twice(3) == [6, 6]
    assert StaticKernel.twice(4) == [8, 8]


def test_an_asynchronous_launch_can_be_awaited():
    import asyncio

    @offload(target=[0, 1], asynchronous=True)
    def kernel(x):
        return x + hetflow.coreid()

    async def main():
        return await kernel(10)

    assert asyncio.run(main()) == [10, 11]


# -- a stranger from ePython: what went wrong before ------------------------------------------------
def _within(seconds, *functions):
    """Runs each of ``functions`` on its own thread at once; their values (or exceptions), failing
    the test rather than hanging if one is still running after ``seconds``."""
    import threading

    results = [None] * len(functions)

    def run(i, function):
        try:
            results[i] = ("value", function())
        except BaseException as error:  # noqa: BLE001
            results[i] = ("error", error)

    threads = [threading.Thread(target=run, args=(i, f), daemon=True) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds)
    assert not any(thread.is_alive() for thread in threads), "a wait on the handle hung"
    return results


def staggered():
    time.sleep(0.2 * hetflow.coreid())
    return hetflow.coreid()


def test_a_handle_shared_by_threads_gives_each_kernel_once():
    # wait_any() from two threads: both saw core 0 finish, and the second pop raised KeyError.
    handle = offload(staggered, asynchronous=True)()
    first, second = _within(60, lambda: [handle.wait_any() for _ in range(2)], lambda: [handle.wait_any() for _ in range(2)])
    assert first[0] == second[0] == "value", (first, second)
    assert sorted(first[1] + second[1]) == [(core, core) for core in range(CORES)]
    with pytest.raises(RuntimeError, match="were all collected"):
        handle.wait_any()
    # wait() while another thread's wait_any() collects: it raised "dictionary changed size during iteration".
    handle = offload(staggered, asynchronous=True)()
    waited, collected = _within(60, handle.wait, lambda: [handle.wait_any() for _ in range(2)])
    assert waited[0] == collected[0] == "value", (waited, collected)
    assert collected[1] == [(0, 0), (1, 1)]
    assert waited[1][-2:] == [2, 3] and set(waited[1]) <= set(range(CORES))
    assert handle.cores == [2, 3] and _within(60, handle.wait)[0] == ("value", [2, 3])


def count_up(n):
    yield from range(n)


def test_a_generator_function_is_refused_as_a_kernel():
    # Every launch failed, each core saying that "the task's result" (a generator) cannot be pickled.
    for decorate in (offload, offload(target=0), offload_single, offload_multiple(cores=2)):
        with pytest.raises(TypeError, match="'count_up' is a generator function: .* return a list"):
            decorate(count_up)


def inner_kernel(x):
    return x * 2


def calls_an_offloaded_function(x):
    return offload(inner_kernel)(x)


def defines_device_data():
    hetflow.define_on_device("inner_value", 1)


def test_a_kernel_cannot_launch_kernels():
    # It started a second pool of worker processes (one per CPU of the machine) inside the core's
    # process, whose core ids were its own and which had none of the host's device data.
    with pytest.raises(RuntimeError, match="kernel 'inner_kernel': called inside a kernel .* second pool") as caught:
        offload(calls_an_offloaded_function, target=1)(3)
    assert caught.value.core == 1
    with pytest.raises(RuntimeError, match="hetflow.define_on_device: called inside a kernel"):
        offload(defines_device_data, target=0)()
    with pytest.raises(RuntimeError, match="kernel 'inner_kernel': called inside a process task"):
        hetflow.task_submit.options(executor="process")(calls_an_offloaded_function, 3).result(timeout=60)
    assert offload(inner_kernel, target=[0, 1])(3) == [6, 6]  # from the host, as before


def test_device_data_errors_name_the_function_called():
    # They said "hetflow.offload: ..." whichever function was called.
    with pytest.raises(ValueError, match=r"^hetflow.copy_from_device: target names no core$"):
        hetflow.copy_from_device("x", target=[])
    with pytest.raises(ValueError, match=r"^hetflow.copy_to_device: core 9 does not exist; cores are 0 to 3$"):
        hetflow.copy_to_device("x", 1, target=9)
    with pytest.raises(TypeError, match=r"^hetflow.copy_from_device: target must be a core id"):
        hetflow.copy_from_device("x", target="0")
    # Their tasks were named "store" and "load" in what the engine says of them.
    of_another_runtime = hetflow.task_submit(keeps, 0)
    hetflow.init(ncpus=2, nprocs=0)
    with pytest.raises(ValueError, match=r"^hetflow.define_on_device: the runtime has no cores \(nprocs=0\)$"):
        hetflow.define_on_device("x", 1)
    hetflow.init(ncpus=CORES)
    with pytest.raises(ValueError, match=r"task 'copy_to_device\(\"x\"\)' is given .* the future of a task of another runtime"):
        hetflow.copy_to_device("x", of_another_runtime)


def test_async_and_asynchronous_together_are_refused():
    # asynchronous=False won silently over async=True (and the decorator's the other way round).
    with pytest.raises(TypeError, match="give asynchronous or async .*, not both"):
        offload(keeps)(0, asynchronous=False, **{"async": True})
    with pytest.raises(TypeError, match="give asynchronous or async .*, not both"):
        offload(asynchronous=True, **{"async": False})
    assert offload(keeps, target=0)(0, **{"async": False}) == [1]


def test_a_decorators_target_is_checked_where_it_is_written():
    # Accepted by the decorator, these failed at each call only.
    for target, says in [([], "target names no core"), ([1, 1], r"target \[1, 1\] names a core twice"),
                         (-1, "core -1 does not exist; core ids start at 0")]:
        with pytest.raises(ValueError, match=f"^hetflow.offload: {says}$"):
            offload(target=target)
    kernel = offload(target=[3, 7])(keeps)  # the number of cores is known at the call
    with pytest.raises(ValueError, match="core 7 does not exist; cores are 0 to 3"):
        kernel(0)


def write_into(array):
    array[0] = 1.0
    return array


def device_array_writable():
    return frozen_on_device.flags.writeable  # noqa: F821 (device data)


def test_a_read_only_array_argument_stays_read_only_on_the_cores():
    # At top level (copied for the launch) it arrived writable, and the kernel's write changed a
    # copy unseen; inside a list, in a task, and in the plain call, it is read-only.
    import numpy as np

    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        write_into(frozen)
    with pytest.raises(ValueError, match="read-only"):
        offload(write_into, target=0)(frozen)
    with pytest.raises(ValueError, match="read-only"):
        offload(write_into, target=0)(np.broadcast_to(np.zeros(1), (3,)))
    hetflow.define_on_device("frozen_on_device", frozen)
    assert offload(device_array_writable, target=[0, 1])() == [False, False]
    assert offload(write_into, target=0)(np.zeros(3))[0].tolist() == [1.0, 0.0, 0.0]  # a writable one is written


def test_offloading_an_offloaded_function_again_gives_it_other_options():
    # The kernel was the OffloadedFunction itself: each core launched kernels of its own (a second
    # pool of processes inside each core; now refused), and the values were lists of lists.
    retargeted = offload(target=[1, 2])(offload(where))
    assert [core for core, _, _ in retargeted(1, 2)] == [1, 2]
    assert offload_single(offload(target=[0, 1])(keeps))(0).wait() == [1]
    assert offload(target=[2, 3])(Scaler(5).add_k)(1) == [6, 6]


def send_to_core(core):
    if hetflow.coreid() == 0:
        hetflow.send("hi", core)
        return "sent"
    return hetflow.recv(0)


def test_a_core_id_that_is_not_an_int_is_a_type_error():
    # send(.., True) failed on the host with HetflowError("stoul"); recv("1") said "core 1 is not
    # running this launch (its cores are [0, 1])"; send(.., 1.0) worked by chance.
    import numpy as np

    for core, name in [(True, "bool True"), ("1", "str '1'"), (1.0, "float 1.0")]:
        with pytest.raises(TypeError, match=re.escape(f"hetflow.send: a core id is an int, not {name}")):
            offload(send_to_core, target=[0, 1])(core)
    with pytest.raises(TypeError, match=re.escape("hetflow.recv: a core id is an int, not str '0'")):
        offload(lambda: hetflow.recv("0"), target=[0, 1])()
    assert offload(send_to_core, target=[0, 1])(np.int64(1)) == ["sent", "hi"]


def read_device_value(plus=0):
    return device_value + plus  # noqa: F821 (device data)


class ReadsDeviceValue:
    def __call__(self):
        return device_value  # noqa: F821 (device data)


def test_device_data_reaches_the_function_behind_a_wrapper_a_partial_or_an_object():
    # The kernel's own globals only were given the device data: a decorator's wrapper from another
    # module (its globals are that module's), a functools.partial and a callable object raised NameError.
    import functools

    # A decorator of another module: its wrapper's globals are that module's, not the kernel's.
    library = {"functools": functools}
    exec(
        "def timed(function):\n"
        "    @functools.wraps(function)\n"
        "    def wrapper(*args, **kwargs):\n"
        "        return function(*args, **kwargs)\n"
        "    return wrapper\n",
        library,
    )
    hetflow.define_on_device("device_value", 5)
    assert offload(library["timed"](read_device_value), target=[0, 1])() == [5, 5]
    assert offload(functools.partial(read_device_value, 1), target=0)() == [6]
    assert offload(ReadsDeviceValue(), target=0)() == [5]


def first_element(array):
    return float(array[0])


def test_an_asynchronous_launch_takes_a_plain_array_as_it_is_at_the_call():
    # Its copy was taken later, by a task: the program's write right after the launch returned
    # reached the kernels (nearly every time), where a list argument was taken at the call.
    import numpy as np

    a = np.zeros(1000)
    for i in range(20):
        a[:] = i
        handle = offload(first_element, asynchronous=True)(a)
        device = hetflow.copy_to_device("copied", a, asynchronous=True)
        a[:] = -1
        assert handle.wait() == [float(i)] * CORES
        device.wait()
        assert [float(value[0]) for value in hetflow.copy_from_device("copied")] == [float(i)] * CORES


def submits_a_task():
    return hetflow.task_submit(inner_kernel, 1).result()


def test_a_kernel_cannot_launch_kernels_after_a_task_on_its_core_submitted_a_task():
    # A submit there started a runtime in the core's process, and from then on kernels there
    # launched on a second pool of processes (copy_from_device: "'x' is not defined on core 0").
    assert offload(submits_a_task, target=[0, 1])() == [2, 2]
    with pytest.raises(RuntimeError, match="kernel 'inner_kernel': called inside a kernel .* second pool"):
        offload(calls_an_offloaded_function, target=[0, 1])(3)
    assert hetflow.task_submit.options(executor="process")(submits_a_task).result(timeout=60) == 2
    with pytest.raises(RuntimeError, match="kernel 'inner_kernel': called inside a process task"):
        hetflow.task_submit.options(executor="process")(calls_an_offloaded_function, 3).result(timeout=60)


def moves(source, target):
    return f"{source}->{target}"


def takes_auto(items, auto):
    return items[auto]


def test_a_launch_option_that_names_a_kernel_parameter_says_so():
    # target="b" failed saying "target must be a core id", and auto=2 ran on 2 cores, each
    # raising "missing 1 required positional argument: 'auto'".
    with pytest.raises(TypeError, match=r"kernel 'moves' has a parameter named 'target', but a call's target='b' is a "
                                        r"launch option .* pass it by position"):
        offload(moves)("a", target="b")
    with pytest.raises(TypeError, match=r"kernel 'takes_auto' has a parameter named 'auto'.* auto=2"):
        offload(takes_auto)([10, 20, 30], auto=2)
    assert offload(moves)("a", "b", target=[1]) == ["a->b"]  # given by position: still the kernel's
    assert offload(takes_auto)([10, 20, 30], 2, auto=1) == [30]


module_scale = 2


def times_module_scale(x):
    return x * module_scale


def test_device_data_does_not_stay_in_the_globals_of_the_kernels_module():
    # The kernel's module (imported on the core) kept the device variable as its global: the
    # module's later process tasks there got 10 instead of its own 2.
    hetflow.define_on_device("module_scale", 10)
    assert offload(times_module_scale)(1) == [10] * CORES
    run = hetflow.task_submit.options(executor="process")
    assert [run(times_module_scale, 1).result(timeout=60) for _ in range(2 * CORES)] == [2] * (2 * CORES)
    assert offload(times_module_scale)(1) == [10] * CORES  # the kernels still get it


def test_a_kernels_traceback_shows_the_scripts_file_and_lines(tmp_path):
    # A kernel of the main script travels by value as run_kernel's argument (not as a task's
    # function, whose code is renamed back): its traceback showed <dynamic-code> and no line, and
    # began with hetflow's run_kernel frame.
    from hf_subprocess import run_script

    rc, out, err = run_script(
        tmp_path,
        """
import functools
import hetflow

def inner(x):
    return 1 / x

@hetflow.offload
def kernel(x):
    return inner(x - 1)

hetflow.init(ncpus=2)
for launch in (kernel, hetflow.offload(functools.partial(kernel.__wrapped__, 1)), hetflow.offload(lambda: inner(0))):
    try:
        launch(1, target=[1]) if launch is kernel else launch(target=[1])
    except ZeroDivisionError as error:
        print(error.__cause__)
        print("-----")
""",
    )
    assert rc == 0, err
    assert "<dynamic-code>" not in out, out
    assert "run_kernel" not in out, out
    tracebacks = out.split("-----")[:3]
    assert len(tracebacks) == 3, out
    for text in tracebacks:
        assert re.search(r'script\.py", line \d+, in inner\n\s+return 1 / x', text), text
