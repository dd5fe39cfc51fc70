"""hetflow used from a program's own threads, as code written for concurrent.futures uses it:
threads submitting and waiting at once, finalizers and garbage collections running hetflow
code wherever they happen to run."""
from __future__ import annotations

import threading
import time

import pytest
from hf_subprocess import Child, run_script, write_script

import hetflow

# A collection may run anywhere an object is allocated, in any thread, also while hetflow holds
# the lock of its futures (making a future's condition, its callback list, starting the thread
# that runs the callbacks or the one that tells of completions); the finalizers it runs
# (weakref.finalize, __del__, gc.callbacks) may use futures. The lock was a plain Lock shared by
# every future: the thread waited for itself (or for the thread it was starting), and every
# hetflow future of the process with it.
GC_REENTRY = """
import concurrent.futures, gc, threading, weakref
import hetflow

hetflow.init(ncpus=1, executor="thread")
ended = hetflow.submit(int, 1)
ended.result()
calls = []
busy = threading.local()

def in_collection(phase, info):
    if phase == "start" and not getattr(busy, "on", False):
        busy.on = True
        try:
            ended.add_done_callback(lambda f: calls.append(1))
        finally:
            busy.on = False

gc.callbacks.append(in_collection)
gc.set_threshold(1)  # a collection at almost every allocation
try:
    for i in range(100):
        future = hetflow.submit(int, i)
        future.add_done_callback(lambda f: None)
        concurrent.futures.wait([future])
        assert future.result() == i
        assert future.remove_done_callback(print) == 0
finally:
    gc.set_threshold(700)
    gc.callbacks.remove(in_collection)
print("ok", len(calls) > 0)
"""


def test_collection_inside_future_lock_running_finalizer_that_uses_futures(tmp_path):
    status, out, err = run_script(tmp_path, GC_REENTRY)
    assert (status, out.strip()) == (0, "ok True"), err


# Finalizers that submit tasks and add callbacks while other threads submit, drop futures and
# collect: every finalizer's task runs, and the program ends.
FINALIZERS_SUBMIT = """
import gc, threading, time, weakref
import hetflow

hetflow.init(ncpus=2, executor="thread")
ex = hetflow.Executor(2, executor="thread")
results = []

class Cycle:
    pass

def finalizer(i):
    future = hetflow.submit(abs, -i) if i % 2 else ex.submit(abs, -i)
    future.add_done_callback(lambda f: results.append(f.result()))

def churn():
    for i in range(150):
        o = Cycle()
        o.me = o
        weakref.finalize(o, finalizer, i)
        future = hetflow.submit(abs, o) if i % 3 else ex.submit(abs, -i)
        del future, o
        if i % 25 == 0:
            gc.collect()

threads = [threading.Thread(target=churn) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
gc.collect()
deadline = time.monotonic() + 5
while len(results) < 600 and time.monotonic() < deadline:
    time.sleep(0.01)
    gc.collect()
ex.shutdown()
print(len(results), sorted(results) == sorted(list(range(150)) * 4))
"""


def test_finalizers_submitting_from_many_threads(tmp_path):
    status, out, err = run_script(tmp_path, FINALIZERS_SUBMIT)
    assert (status, out.strip()) == (0, "600 True"), err


# The same with a finalizer that submits to a hetflow.Executor while this thread is inside the
# executor's own submit (or map): its lock was a plain Lock, which that thread waited for.
EXECUTOR_GC_REENTRY = """
import gc, sys, threading
import hetflow

ex = hetflow.Executor(1, executor=sys.argv[1])
busy = threading.local()
inner = []

def in_collection(phase, info):
    if phase == "start" and not getattr(busy, "on", False) and len(inner) < 50:
        busy.on = True
        try:
            inner.append(ex.submit(abs, -1))
        finally:
            busy.on = False

gc.callbacks.append(in_collection)
gc.set_threshold(1)
try:
    futures = [ex.submit(abs, -i) for i in range(30)]
    mapped = list(ex.map(abs, range(-5, 0)))
    chunked = hetflow.map(abs, range(-5, 0), executor=ex)
finally:
    gc.set_threshold(700)
    gc.callbacks.remove(in_collection)
assert [f.result() for f in futures] == list(range(30))
assert mapped == chunked == [5, 4, 3, 2, 1]
print("ok", len(inner), all(f.result() == 1 for f in inner))
ex.shutdown()
"""


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_collection_inside_executor_submit_running_finalizer_that_submits(tmp_path, kind):
    script = write_script(tmp_path, EXECUTOR_GC_REENTRY)
    with Child(tmp_path, [str(script), kind]) as child:
        status, out, err = child.finish()
    assert (status, out.strip()) == (0, "ok 50 True"), err


# A signal handler runs in the main thread wherever it is, also inside hetflow's own locked
# sections (the runtime's, while it starts watching a future for its callbacks). One that uses
# futures there waited for the futures' lock, held by the completions thread, which waited for
# the runtime's lock, held by the main thread: for ever, or, as the timer kept firing, each
# handler interrupted that wait and ran again until a RecursionError.
SIGNAL_HANDLER_USES_FUTURES = """
import signal, threading
import hetflow

ended = hetflow.submit(abs, -1)
ended.result()
calls = []
for round in range(10):
    ex = hetflow.Executor(1, executor="thread")
    ticks = [0]
    inside = [False]

    def handler(signum, frame):
        if inside[0]:  # a handler slower than the timer would nest without end (a C stack overflow)
            return
        inside[0] = True
        try:
            ticks[0] += 1
            ended.add_done_callback(calls.append)
            if ticks[0] == 200:
                ex.shutdown(wait=False)
        finally:
            inside[0] = False

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    futures = []
    try:
        while True:
            try:
                future = ex.submit(abs, -1)
            except RuntimeError as error:
                assert "shut" in str(error), error
                break
            future.add_done_callback(lambda f: None)
            futures.append(future)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert all(f.result() == 1 for f in futures)
print("ok", len(calls) >= 2000)
"""


def test_signal_handler_using_futures_and_executor(tmp_path):
    status, out, err = run_script(tmp_path, SIGNAL_HANDLER_USES_FUTURES)
    assert (status, out.strip()) == (0, "ok True"), err


# A handler that cancels a pending future takes the runtime's lock (cancel -> unwatch), which
# the main thread may hold as the signal comes (in watch, adding a callback): a plain lock
# waited for itself.
SIGNAL_HANDLER_CANCELS = """
import signal
import hetflow

cancelled = 0
inside = False
for round in range(10):
    ex = hetflow.Executor(1, executor="thread")
    futures = []

    def handler(signum, frame):
        global cancelled, inside
        if futures and not inside:  # not nested in itself (see SIGNAL_HANDLER_USES_FUTURES)
            inside = True
            try:
                cancelled += futures[-1].cancel()
            finally:
                inside = False

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    try:
        for i in range(3000):
            futures.append(ex.submit(abs, -i))
            futures[-1].add_done_callback(lambda f: None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert all(f.cancelled() or f.result() == i for i, f in enumerate(futures))
    ex.shutdown()
print("ok")
"""


def test_signal_handler_cancelling_futures(tmp_path):
    status, out, err = run_script(tmp_path, SIGNAL_HANDLER_CANCELS)
    assert (status, out.strip()) == (0, "ok"), err


# Callbacks added while the earlier ones of the same future are being handed to the callback
# thread, or run there, still run after them, in the order they were added.
def test_callbacks_added_while_earlier_ones_run_keep_their_order():
    with hetflow.Executor(1, executor="thread") as ex:
        gate = threading.Event()
        order = []
        future = ex.submit(abs, -1)

        def first(f):
            order.append("first")
            gate.wait(5)

        future.add_done_callback(first)
        future.result()
        deadline = time.monotonic() + 5
        while not order and time.monotonic() < deadline:
            time.sleep(0.001)
        for i in range(5):
            future.add_done_callback(lambda f, i=i: order.append(i))
        assert order == ["first"]
        gate.set()
        while len(order) < 6 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert order == ["first", 0, 1, 2, 3, 4]
        future.add_done_callback(lambda f: order.append("now"))  # all run: at once, here
        assert order[-1] == "now"


# A child forked while another thread of the parent was inside Executor.submit inherited the
# executor's lock held, by a thread that does not exist in the child: the child's submit waited
# for ever instead of raising the RuntimeError that says the executor belongs to the parent.
FORK_WHILE_A_THREAD_SUBMITS = """
import os, threading, time, warnings
import hetflow

warnings.simplefilter("ignore")  # fork() of a multi-threaded process
ex = hetflow.Executor(1, executor="thread")
stop = threading.Event()

def submitting():
    while not stop.is_set():
        ex.submit(abs, -1)

thread = threading.Thread(target=submitting)
thread.start()
time.sleep(0.1)
statuses = []
for _ in range(10):
    pid = os.fork()
    if pid == 0:
        import signal
        signal.alarm(5)  # a hang ends the child with SIGALRM
        try:
            ex.submit(abs, -1)
        except RuntimeError as error:
            os._exit(0 if "belongs to the parent process" in str(error) else 3)
        os._exit(4)
    statuses.append(os.waitpid(pid, 0)[1])
stop.set()
thread.join()
ex.shutdown()
print(statuses)
"""


def test_fork_while_another_thread_submits_to_an_executor(tmp_path):
    status, out, err = run_script(tmp_path, FORK_WHILE_A_THREAD_SUBMITS)
    assert (status, out.strip()) == (0, str([0] * 10)), err
