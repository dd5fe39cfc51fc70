"""Failures: a task's exception, its traceback, failing dependents, worker processes that die,
and Ctrl-C."""
from __future__ import annotations

import concurrent.futures
import ctypes
import gc
import os
import signal
import sys
import threading
import time
import traceback
import weakref

import pytest

import hetflow
from hetflow._errors import _FRAMES_KEPT_FOR
from hf_subprocess import Child, leftovers, run_script, write_script
from hf_tasks import EXECUTORS, add, submit_on



@pytest.fixture(autouse=True)
def _fresh_runtime():
    hetflow.init(ncpus=2, executor="process")
    yield
    hetflow.shutdown()


class AppError(Exception):
    """An application's exception with extra state, importable by the worker processes."""

    def __init__(self, message, code=0):
        super().__init__(message, code)
        self.code = code


class NeedsTwoArguments(Exception):
    """Pickles but does not unpickle: its __init__ needs two arguments, its args hold one."""

    def __init__(self, a, b):
        super().__init__(a)


def parse_config(text):
    raise KeyError(f"missing key in {text}")


def raise_app_error(code):
    raise AppError("application failed", code)


def raise_needs_two():
    raise NeedsTwoArguments("one", "two")


def identity(x):
    return x


def pid():
    return os.getpid()


def exit_hard():
    os._exit(3)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def segfault():
    ctypes.string_at(0)


# -- a task's exception --------------------------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_result_reraises_the_tasks_exception_with_its_type(executor):
    future = submit_on(executor)(parse_config, "app.toml")
    with pytest.raises(KeyError) as info:
        future.result(timeout=30)
    assert info.value.args == ("missing key in app.toml",)


class CodedError(Exception):
    """An exception whose __init__ takes other parameters than the args it passes on."""

    def __init__(self, code):
        super().__init__(f"failed with code {code}")
        self.code = code


def raise_coded(code):
    raise CodedError(code)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_exception_whose_init_differs_from_its_args_comes_back_as_it_was(executor):
    future = submit_on(executor)(raise_coded, 7)
    with pytest.raises(CodedError) as info:
        future.result(timeout=30)
    assert str(info.value) == "failed with code 7" and info.value.code == 7


def raise_coded_at(x):
    if x == 3:
        raise CodedError(x)
    return x


@pytest.mark.parametrize("chunksize", [1, 2])
def test_an_exception_whose_init_differs_comes_back_as_it_was_from_a_chunk_of_map(chunksize):
    # From a chunk of calls it came back as RemoteTaskError: the type depended on the chunk size.
    with hetflow.Executor(2, executor="process") as executor:
        with pytest.raises(CodedError) as info:
            list(executor.map(raise_coded_at, range(6), chunksize=chunksize))
    assert str(info.value) == "failed with code 3" and info.value.code == 3


def frame_names(error):
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(error.__traceback__)]


def parse_holding(text, held):
    bulky = held()  # noqa: F841 (a local of the failing frame)
    raise KeyError(f"missing key in {text}")


def test_a_thread_tasks_error_reaches_into_the_tasks_frames_as_a_thread_pools_does():
    """A post-mortem debugger (pdb.post_mortem, %debug) lands in the task, with its locals."""
    future = submit_on("thread")(parse_holding, "a", Bulky)
    with pytest.raises(KeyError) as info:
        future.result(timeout=30)
    names = frame_names(info.value)
    assert names[0] == "test_a_thread_tasks_error_reaches_into_the_tasks_frames_as_a_thread_pools_does"
    assert names[-1] == "parse_holding"
    innermost = list(traceback.walk_tb(info.value.__traceback__))[-1][0]
    assert innermost.f_locals["text"] == "a" and type(innermost.f_locals["bulky"]) is Bulky
    assert info.value.__cause__ is None  # the traceback is the task's own, not text beside it
    printed = "".join(traceback.format_exception(info.value))
    assert "parse_holding" in printed and "raise KeyError" in printed


def test_raising_again_does_not_stack_the_earlier_callers_frames():
    future = submit_on("thread")(parse_config, "a")

    def read():
        with pytest.raises(KeyError) as info:
            future.result(timeout=30)
        return frame_names(info.value)

    first = read()
    assert read() == first and first.count("parse_config") == 1


def test_a_failed_thread_tasks_frames_go_with_its_future():
    future = submit_on("thread")(parse_holding, "a", Bulky)
    assert isinstance(future.exception(timeout=30), KeyError)
    held = weakref.ref(list(traceback.walk_tb(future.exception().__traceback__))[-1][0].f_locals["bulky"])
    del future
    gc.collect()
    assert held() is None


def test_the_frames_of_failed_tasks_nobody_read_go_with_their_futures():
    made = []

    def held():
        bulky = Bulky()
        made.append(weakref.ref(bulky))
        return bulky

    futures = [submit_on("thread")(parse_holding, i, held) for i in range(5)]
    hetflow.wait_for_all()
    del futures
    gc.collect()
    assert len(made) == 5 and all(ref() is None for ref in made)


class ReadsAFailureWhenFreed:
    """A local whose finalizer reads another failed future, run when the frames holding it go."""

    def __init__(self, future, read):
        self.future = future
        self.read = read

    def __del__(self):
        self.read.append(type(self.future.exception(timeout=30)))


def fail_holding(make_local):
    local = make_local()  # noqa: F841 (freed with the frame)
    raise ValueError("failed")


def test_frames_let_go_of_may_run_finalizers_that_read_other_failed_futures():
    read = []
    earlier = submit_on("thread")(parse_config, "a")
    later = submit_on("thread")(fail_holding, lambda: ReadsAFailureWhenFreed(earlier, read))
    hetflow.wait_for_all()

    def drop_and_collect():
        nonlocal later
        later = None  # unread: its frames go with the next collection, finalizer and all
        gc.collect()

    worker = threading.Thread(target=drop_and_collect, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the finalizer's read waited for ever"
    assert read == [KeyError]


def test_a_child_forked_while_a_failure_was_being_kept_reads_its_own_failures(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
import os, threading, time
import hetflow
from hetflow import _errors

def fail():
    raise KeyError("in the child")

hetflow.init(ncpus=1, nprocs=0)
held = threading.Event()
def hold():  # as a worker thread keeping a failed task's frames at the moment of the fork
    with _errors._frames_lock:
        held.set()
        time.sleep(3)
threading.Thread(target=hold, daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    hetflow.init(ncpus=1, nprocs=0)
    error = hetflow.task_submit.options(executor="thread")(fail).exception(timeout=20)
    os._exit(0 if isinstance(error, KeyError) else 3)
for _ in range(200):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.1)
else:
    os.kill(pid, 9)
    print("child hung")
""",
    )
    assert rc == 0 and "child 0" in out, (out, err)


def test_a_failing_task_does_not_wait_for_a_frames_store_held_for_long():
    # As where a finalizer, run by a collection inside the store's lock, waits for that task.
    from hetflow import _errors

    release = threading.Event()
    holding = threading.Event()

    def hold_the_store():
        with _errors._frames_lock:
            holding.set()
            release.wait(timeout=60)

    holder = threading.Thread(target=hold_the_store, daemon=True)
    holder.start()
    holding.wait(timeout=30)
    try:
        future = submit_on("thread")(parse_config, "held")
        assert hetflow.wait_for_all(timeout=30), "the failing task waited for the store"
    finally:
        release.set()
        holder.join(timeout=30)
    with pytest.raises(KeyError) as info:
        future.result(timeout=30)
    assert "parse_config" in str(info.value.__cause__)  # its traceback as text: no frames kept


class Holder:
    """Holds a task's own future, for the task's frame to reach it."""


def fail_holding_its_own_future(holder, made):
    bulky = Bulky()
    made.append(weakref.ref(bulky))
    assert holder is not None
    raise ValueError("cycle")


def test_frames_in_a_cycle_through_their_own_future_are_let_go_of_after_more_failures():
    """A failed task whose frame reaches its own future: the engine holds the error, so the cycle
    goes through C++, where the garbage collector cannot see; the frames are kept for a bounded
    number of later failures only."""
    made = []
    holder = Holder()
    holder.future = submit_on("thread")(fail_holding_its_own_future, holder, made)
    hetflow.wait_for_all()
    del holder
    gc.collect()
    assert made[0]() is not None  # the engine holds the error, the future it is held by
    for i in range(_FRAMES_KEPT_FOR):
        assert isinstance(submit_on("thread")(parse_config, i).exception(timeout=30), KeyError)
    gc.collect()
    assert made[0]() is None


class SlowToCopy(ValueError):
    """Its copy lets go of the GIL: threads that read the failure together settle it together."""

    def __copy__(self):
        time.sleep(0.02)
        return SlowToCopy(*self.args)


def fail_slow_to_copy():
    time.sleep(0.1)  # the readers are all waiting when it fails
    raise SlowToCopy("failed")


def test_readers_of_a_failure_together_all_get_the_tasks_frames():
    # Each made its own copy; only the first got the frames (taken from the store), the others
    # (and the future, when one of them stored its copy last) the text as the cause.
    future = submit_on("thread")(fail_slow_to_copy)
    barrier = threading.Barrier(4)
    errors = []

    def read():
        barrier.wait()
        try:
            future.result(timeout=30)
        except SlowToCopy as error:
            errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=60)
    assert len(errors) == 4 and all(error is errors[0] for error in errors)
    with pytest.raises(SlowToCopy) as info:
        future.result(timeout=30)
    assert frame_names(info.value)[-1] == "fail_slow_to_copy" and info.value.__cause__ is None


COLLECTION_IN_THE_STORE_SCRIPT = """
import gc, sys
import hetflow

hetflow.init(ncpus=2, executor="thread")

def fail(i):
    raise ValueError(i)

pool = [hetflow.submit(fail, i) for i in range(300)]
hetflow.wait_for_all()

class Job:
    # In a cycle; reads its failed future when collected, and leaves more such garbage behind.
    def __init__(self, future):
        self.future = future
        self.me = self

    def __del__(self):
        self.future.exception()
        if pool:
            Job(pool.pop())

gc.set_threshold(1)  # a collection at (nearly) every allocation, the store's own included
Job(pool.pop())
for i in range(300):
    assert isinstance(hetflow.submit(fail, i).exception(timeout=60), ValueError)
gc.set_threshold(700)
print("DONE", flush=True)
"""


def test_a_collection_inside_the_frame_store_may_run_finalizers_that_read_failed_futures(tmp_path):
    # A collection that an allocation of the store's own set off ran, in that thread, a finalizer
    # that read a failed future: it waited for the store's lock, which its thread held.
    rc, out, err = run_script(tmp_path, COLLECTION_IN_THE_STORE_SCRIPT)
    assert rc == 0 and "DONE" in out, err


AT_EXIT_SCRIPT = """
import sys
import hetflow

hetflow.init(ncpus=2, executor="thread")

def write_then_fail(path):
    out = open(path, "w")  # buffered: written when the file is closed, or freed
    out.write("written")
    raise ValueError("failed")

future = hetflow.submit(write_then_fail, sys.argv[1])  # kept, never read
hetflow.wait_for_all()
"""


def test_the_frames_of_a_failed_task_nobody_read_go_at_exit(tmp_path):
    # The engine, never freed, holds the store of frames: the task's locals were never freed,
    # their finalizers never ran (a file it wrote lost what it buffered; a temporary file stayed).
    script = write_script(tmp_path, AT_EXIT_SCRIPT)
    path = tmp_path / "out.txt"
    with Child(tmp_path, [str(script), str(path)]) as child:
        rc, out, err = child.finish()
    assert rc == 0, err
    assert path.read_text() == "written"


def test_a_dependents_error_names_the_root_with_its_frames():
    failing = submit_on("thread")(parse_config, "a")
    dependent = submit_on("thread")(identity, failing)
    with pytest.raises(hetflow.DependencyError) as info:
        dependent.result(timeout=30)
    assert frame_names(info.value.root_exception)[-1] == "parse_config"
    with pytest.raises(KeyError) as own:
        failing.result(timeout=30)
    assert frame_names(own.value)[-1] == "parse_config"


def test_a_process_tasks_traceback_is_the_cause():
    future = submit_on("process")(parse_config, "a")
    with pytest.raises(KeyError) as info:
        future.result(timeout=30)
    cause = info.value.__cause__
    assert type(cause).__name__ == "RemoteTraceback"
    assert "parse_config" in str(cause) and "KeyError" in str(cause)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_application_exception_keeps_its_class_and_state(executor):
    with pytest.raises(AppError) as info:
        submit_on(executor)(raise_app_error, 7).result(timeout=30)
    assert info.value.code == 7
    assert "raise_app_error" in "".join(traceback.format_exception(info.value))  # its frames, or their text


def test_an_exception_whose_init_needs_more_than_its_args_comes_back_from_a_process():
    with pytest.raises(NeedsTwoArguments) as info:
        submit_on("process")(raise_needs_two).result(timeout=30)
    assert info.value.args == ("one",)
    assert "raise_needs_two" in str(info.value.__cause__)


class HoldsALock(Exception):
    """Does not pickle at all: its state holds a lock."""

    def __init__(self, text):
        super().__init__(text)
        self.lock = threading.Lock()


def raise_holding_a_lock():
    raise HoldsALock("locked up")


def test_an_exception_that_cannot_be_rebuilt_still_reports_its_type_and_message():
    with pytest.raises(Exception) as info:
        submit_on("process")(raise_holding_a_lock).result(timeout=30)
    text = str(info.value)
    assert "HoldsALock" in text and "locked up" in text
    assert "raise_holding_a_lock" in str(info.value.__cause__)


class Bulky:
    """Something a caller's frame holds, to see whether a raised error keeps that frame alive."""


def test_a_thread_tasks_exception_that_cannot_be_copied_keeps_no_caller_frame_alive():
    """The engine holds the task's exception; raising that object itself would add the caller's
    frames to it, kept alive from C++. An exception whose __init__ takes more than its args is
    copied without calling __init__."""

    def wait_in_a_frame():
        bulky = Bulky()
        future = submit_on("thread")(raise_needs_two)
        try:
            future.result(timeout=30)
        except NeedsTwoArguments as error:
            assert error.args == ("one",)
        return weakref.ref(bulky)

    held = wait_in_a_frame()
    gc.collect()
    assert held() is None


@pytest.mark.parametrize("executor", EXECUTORS)
def test_raising_again_gives_the_same_error(executor):
    future = submit_on(executor)(parse_config, "x")
    for _ in range(2):
        with pytest.raises(KeyError, match="missing key in x"):
            future.result(timeout=30)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_system_exit_in_a_task_fails_only_that_task(executor):
    with pytest.raises(SystemExit):
        submit_on(executor)(sys.exit, 3).result(timeout=30)
    assert submit_on(executor)(add, 1, 2).result(timeout=30) == 3


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failed_task_does_not_disturb_the_others(executor):
    futures = [submit_on(executor)(parse_config, i) if i % 3 == 0 else submit_on(executor)(add, i, 0) for i in range(12)]
    for i, future in enumerate(futures):
        if i % 3 == 0:
            with pytest.raises(KeyError):
                future.result(timeout=30)
        else:
            assert future.result(timeout=30) == i


# -- dependents of a failed task ------------------------------------------------------------------------
@pytest.mark.parametrize("first", EXECUTORS)
@pytest.mark.parametrize("second", EXECUTORS)
def test_dependents_fail_with_dependency_error(first, second):
    failing = submit_on(first)(parse_config, "cfg")
    dependent = submit_on(second)(identity, failing)
    with pytest.raises(hetflow.DependencyError) as info:
        dependent.result(timeout=30)
    error = info.value
    assert error.root_task == "parse_config"
    assert isinstance(error.root_exception, KeyError)
    assert error.root_exception.args == ("missing key in cfg",)
    assert error.__cause__ is error.root_exception
    assert "parse_config" in str(error) and "KeyError" in str(error)
    assert isinstance(error, hetflow.HetflowError) and isinstance(error, RuntimeError)


def test_a_chain_of_dependents_names_the_root_task():
    root = submit_on("process", name="root-step")(raise_app_error, 5)
    level1 = submit_on("thread")(identity, root)
    level2 = submit_on("process")(identity, [level1])
    level3 = submit_on("thread")(add, 1, {"x": level2})
    for future in (level1, level2, level3):
        with pytest.raises(hetflow.DependencyError) as info:
            future.result(timeout=30)
        assert info.value.root_task == "root-step"
        assert isinstance(info.value.root_exception, AppError)
        assert info.value.root_exception.code == 5
    with pytest.raises(AppError):
        root.result(timeout=30)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failed_dependency_in_a_keyword_or_container_fails_the_task(executor):
    failing = submit_on(executor)(parse_config, "k")
    ok = submit_on(executor)(add, 1, 1)
    dependents = [
        submit_on(executor)(add, 1, b=failing),
        submit_on(executor)(identity, {"values": [ok, (failing,)]}),
    ]
    for dependent in dependents:
        with pytest.raises(hetflow.DependencyError) as info:
            dependent.result(timeout=30)
        assert info.value.root_task == "parse_config"
    assert ok.result(timeout=30) == 2


def test_a_dependent_of_a_failed_task_never_runs(tmp_path):
    marker = tmp_path / "ran"
    failing = submit_on("thread")(parse_config, "z")
    dependent = submit_on("process")(lambda _: marker.write_text("ran"), failing)
    with pytest.raises(hetflow.DependencyError):
        dependent.result(timeout=30)
    assert hetflow.wait_for_all(timeout=30)
    assert not marker.exists()


def test_many_dependents_of_one_failure_all_fail_and_nothing_hangs():
    failing = submit_on("thread")(parse_config, "wide")
    dependents = [submit_on(EXECUTORS[i % 2])(identity, failing) for i in range(30)]
    grandchildren = [submit_on("thread")(identity, d) for d in dependents]
    assert hetflow.wait_for_all(timeout=30)
    for future in dependents + grandchildren:
        assert isinstance(future.exception(timeout=0), hetflow.DependencyError)
        assert future.exception(timeout=0).root_task == "parse_config"


# -- worker processes that die --------------------------------------------------------------------------
@pytest.mark.parametrize("how", [exit_hard, kill_self, segfault], ids=["os._exit", "SIGKILL", "segfault"])
def test_a_dying_worker_fails_only_its_task(how):
    doomed = hetflow.submit(how)
    others = [hetflow.submit(add, i, 0) for i in range(6)]
    with pytest.raises(hetflow.WorkerCrashedError) as info:
        doomed.result(timeout=30)
    assert isinstance(info.value, hetflow.HetflowError)
    assert isinstance(info.value, concurrent.futures.BrokenExecutor)  # as code for the standard pools catches it
    assert [f.result(timeout=30) for f in others] == list(range(6))
    # Later tasks complete, on a restarted worker among others.
    after = {f.result(timeout=30) for f in [hetflow.submit(pid) for _ in range(6)]}
    assert after and os.getpid() not in after
    assert hetflow.submit(add, 2, 2).result(timeout=30) == 4


def test_a_crashed_worker_is_replaced_by_a_new_process():
    hetflow.init(ncpus=2, executor="process", nprocs=1)
    first = hetflow.submit(pid).result(timeout=30)
    with pytest.raises(hetflow.WorkerCrashedError) as info:
        hetflow.submit(exit_hard).result(timeout=30)
    assert str(first) in str(info.value)  # names the worker that died
    second = hetflow.submit(pid).result(timeout=30)
    assert second != first and second != os.getpid()


def test_repeated_crashes_do_not_exhaust_the_workers():
    hetflow.init(ncpus=2, executor="process", nprocs=1)
    for _ in range(4):
        with pytest.raises(hetflow.WorkerCrashedError):
            hetflow.submit(kill_self).result(timeout=30)
    assert hetflow.submit(add, 20, 22).result(timeout=30) == 42


def test_dependents_of_a_crashed_task_fail_with_dependency_error():
    doomed = submit_on("process", name="doomed")(segfault)
    dependent = submit_on("thread")(identity, doomed)
    with pytest.raises(hetflow.DependencyError) as info:
        dependent.result(timeout=30)
    assert info.value.root_task == "doomed"
    assert isinstance(info.value.root_exception, hetflow.WorkerCrashedError)


# -- Ctrl-C ------------------------------------------------------------------------------------------------
CTRL_C_SCRIPT = """
import os, sys, time
import hetflow

hetflow.init(ncpus=2, executor=sys.argv[1])

def long_task():
    time.sleep(120)
    return "finished"

future = hetflow.submit(long_task)
while not future.running():
    time.sleep(0.01)
print("WORKERS", hf_children(), flush=True)
try:
    print("WAITING", flush=True)
    future.result()
except KeyboardInterrupt:
    print("INTERRUPTED", future.done(), flush=True)
"""


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ctrl_c_interrupts_a_wait_on_result(tmp_path, executor):
    script = write_script(tmp_path, CTRL_C_SCRIPT + "os._exit(0)  # this test is about the wait only\n")
    with Child(tmp_path, [str(script), executor]) as child:
        lines = child.readline_until("WAITING")
        child.workers = eval(lines[0].split(" ", 1)[1])
        time.sleep(0.2)  # time to block in result(); a signal a little earlier (in the try) is handled alike
        os.kill(child.pid, signal.SIGINT)
        # KeyboardInterrupt reached the caller of result() while the task still ran.
        assert child.readline_until("INTERRUPTED")[-1] == "INTERRUPTED False"


INTERRUPTED_WAIT_SCRIPT = """
import concurrent.futures, os, sys, time
import hetflow

os.environ["HETFLOW_EXIT_TIMEOUT"] = "3600"  # an exit that waited for the stuck task would hang
hetflow.init(ncpus=2, executor="process")

def stuck(array=None):
    time.sleep(600)

array = hetflow.zeros(4)
future = hetflow.submit(stuck, hetflow.RW(array))
handle = hetflow.offload(target=[1], asynchronous=True)(stuck)()
while not future.running():
    time.sleep(0.01)
wait = {
    "result": future.result,
    "concurrent.futures.wait": lambda: concurrent.futures.wait([future]),
    "as_completed": lambda: next(concurrent.futures.as_completed([future])),
    "offload": handle.wait,
    "acquire": lambda: hetflow.acquire(array, "R"),
}[sys.argv[1]]
try:
    print("WAITING", flush=True)
    wait()
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


@pytest.mark.parametrize("wait", ["result", "concurrent.futures.wait", "as_completed", "offload", "acquire"])
def test_after_an_interrupted_wait_the_exit_gives_the_work_up_at_once(tmp_path, wait):
    # Only result() and wait_for_all() marked their runtime interrupted: after the others the
    # exit waited for the stuck tasks (HETFLOW_EXIT_TIMEOUT without progress).
    script = write_script(tmp_path, INTERRUPTED_WAIT_SCRIPT)
    with Child(tmp_path, [str(script), wait]) as child:
        child.readline_until("WAITING")
        time.sleep(0.5)  # time to block in the wait (a signal before the wait begins is the program's own)
        os.kill(child.pid, signal.SIGINT)
        rc, out, err = child.finish()
    assert "INTERRUPTED" in out, err
    assert rc == 0, err


def test_ctrl_c_then_a_clean_exit_with_no_workers_left(tmp_path):
    script = write_script(tmp_path, CTRL_C_SCRIPT)
    with Child(tmp_path, [str(script), "process"]) as child:
        lines = child.readline_until("WAITING")
        child.workers = eval(lines[0].split(" ", 1)[1])
        assert child.workers, "no worker processes found"
        time.sleep(0.2)  # time to block in result(); a signal a little earlier (in the try) is handled alike
        os.kill(child.pid, signal.SIGINT)
        rc, out, err = child.finish()
        assert "INTERRUPTED False" in out
        assert rc == 0, err
        assert "Traceback" not in err, err
        assert leftovers(child.workers) == {}, "worker processes outlived the interpreter"


class LookupFailed(Exception):
    pass


def lookup_from(key, suppress):
    try:
        return {}[key]
    except KeyError as error:
        if suppress:
            raise LookupFailed(key) from None
        raise LookupFailed(key) from error


@pytest.mark.parametrize("suppress", [False, True])
def test_a_thread_tasks_own_cause_stays(suppress):
    # The task's traceback took the place of the cause the task gave its exception.
    with pytest.raises(LookupFailed) as info:
        submit_on("thread")(lookup_from, "k", suppress).result(timeout=30)
    error = info.value
    assert isinstance(error.__context__, KeyError)
    if suppress:
        assert error.__cause__ is None and error.__suppress_context__
    else:
        assert isinstance(error.__cause__, KeyError) and error.__cause__.args == ("k",)
    # The exception it was raised while handling has its frames too (the engine's copy keeps
    # none: it printed with no line of its own), and no text of them beside it.
    assert frame_names(error)[-1] == "lookup_from" and frame_names(error.__context__)[-1] == "lookup_from"
    printed = "".join(traceback.format_exception(error))
    assert printed.count("return {}[key]") == (0 if suppress else 1)  # `from None` hides it, as ever
    assert not getattr(error, "__notes__", None)


def test_a_thread_tasks_own_cause_stays_with_the_text_once_its_frames_are_gone():
    future = submit_on("thread")(lookup_from, "k", False)
    hetflow.wait_for_all()
    for i in range(_FRAMES_KEPT_FOR):
        assert isinstance(submit_on("thread")(parse_config, i).exception(timeout=30), KeyError)
    error = future.exception(timeout=30)
    assert isinstance(error.__cause__, KeyError) and error.__cause__.args == ("k",)
    if sys.version_info >= (3, 11):
        assert any("lookup_from" in note for note in error.__notes__)


def test_no_gc_callback_until_a_thread_task_fails(tmp_path):
    # hetflow's gc callback is Python code: a Ctrl-C that came while a collection ran it was
    # raised there, printed as "Exception ignored in: <function _after_collection ...>" and
    # dropped, so a program that never had a failing task went on as if Ctrl-C had not been
    # pressed. The callback is installed only once a failed task's frames are kept.
    rc, out, err = run_script(
        tmp_path,
        """
import gc
import hetflow
from hetflow import _errors

hetflow.init(ncpus=1, executor="thread")
assert hetflow.task_submit(pow, 2, 3).result() == 8
hetflow.map(abs, range(-50, 50), executor="thread")
print("BEFORE", _errors._after_collection in gc.callbacks)
failed = hetflow.task_submit(lambda: 1 / 0)
try:
    failed.result()
except ZeroDivisionError:
    pass
print("AFTER", _errors._after_collection in gc.callbacks)
""",
    )
    assert rc == 0, err
    assert "BEFORE False" in out and "AFTER True" in out, out + err
