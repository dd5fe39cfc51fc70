"""Process workers against what a task or an initializer may do to the worker's process: fork
a child that comes back into the worker's code (it must end there, and never speak the worker's
pipe protocol), or raise SystemExit / KeyboardInterrupt in the initializer (the tasks fail with
an ordinary error; the host program goes on)."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

import hetflow
from hf_tasks import in_a_worker

TIMEOUT = 30  # seconds for any one result()
CHILD_WAIT_S = 5.0  # how long a forking task waits for its child before killing it


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    hetflow.shutdown()


def ident(x):
    return x


def _wait_bounded(pid):
    """The child's exit status, or None if it did not end within CHILD_WAIT_S (then killed)."""
    deadline = time.monotonic() + CHILD_WAIT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def fork_and_leave(mode):
    """Forks; the child leaves this function (``mode``) without os._exit. The parent reports
    the child's exit status: the worker must have ended the child as it left."""
    pid = os.fork()
    if pid == 0:
        if mode == "return":
            return ("child", None)
        if mode == "raise":
            raise ValueError("raised in the forked child")
        if mode == "sysexit":
            sys.exit(3)
        if mode == "sysexit_none":
            sys.exit()
        os._exit(0)
    return ("parent", _wait_bounded(pid))


def fork_and_return_later():
    """Forks a child that returns after a while; the parent does not wait for it."""
    pid = os.fork()
    if pid == 0:
        time.sleep(0.3)
        return "child"
    return "parent"


@pytest.mark.parametrize(
    "mode, status",
    [("return", 0), ("raise", 1), ("sysexit", 3), ("sysexit_none", 0), ("os_exit", 0)],
)
def test_a_forked_child_leaving_the_task_ends_and_the_parent_gives_the_result(mode, status):
    with hetflow.Executor(1, executor="process") as executor:
        assert executor.submit(fork_and_leave, mode).result(timeout=TIMEOUT) == ("parent", status)
        assert [executor.submit(ident, i).result(timeout=TIMEOUT) for i in range(5)] == list(range(5))


def test_a_forked_child_does_not_take_the_workers_later_tasks():
    with hetflow.Executor(1, executor="process") as executor:
        assert executor.submit(fork_and_return_later).result(timeout=TIMEOUT) == "parent"
        results = []
        deadline = time.monotonic() + 1.0  # past the child's return, tasks one at a time
        i = 0
        while time.monotonic() < deadline or i < 20:
            results.append((i, executor.submit(ident, i).result(timeout=TIMEOUT)))
            i += 1
        assert all(value == i for i, value in results), [r for r in results if r[0] != r[1]][:5]


def forking_initializer():
    if not in_a_worker():
        return  # not in a worker
    if os.fork() == 0:
        time.sleep(0.1)
        return  # the child leaves the initializer: it must end, not serve the host


def test_a_child_forked_by_the_initializer_does_not_serve_the_host():
    with hetflow.Executor(1, executor="process", initializer=forking_initializer) as executor:
        values = [executor.submit(ident, i).result(timeout=TIMEOUT) for i in range(30)]
        time.sleep(0.3)
        values += [executor.submit(ident, i).result(timeout=TIMEOUT) for i in range(30, 40)]
    assert values == list(range(40))


def exit_in_workers(code):
    if in_a_worker():
        sys.exit(code)


def interrupt_in_workers():
    if in_a_worker():
        raise KeyboardInterrupt


def fail_in_workers():
    if in_a_worker():
        raise ValueError("bad setup")


def _outcome(future):
    """What result() raised, caught whatever it is (SystemExit, KeyboardInterrupt too)."""
    try:
        return future.result(timeout=TIMEOUT)
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    "initializer, initargs, text",
    [(exit_in_workers, (2,), "SystemExit(2)"), (interrupt_in_workers, (), "KeyboardInterrupt")],
)
def test_an_initializer_that_exits_fails_the_tasks_with_an_ordinary_error(initializer, initargs, text):
    with hetflow.Executor(2, executor="process", initializer=initializer, initargs=initargs) as executor:
        outcomes = [_outcome(executor.submit(ident, i)) for i in range(4)]
    for outcome in outcomes:
        assert isinstance(outcome, RuntimeError), repr(outcome)
        assert text in str(outcome) and "initializer" in str(outcome)


def test_an_initializer_that_exits_under_init_does_not_end_the_program():
    hetflow.init(ncpus=1, executor="process", nprocs=1, initializer=exit_in_workers, initargs=(2,))
    outcome = _outcome(hetflow.task_submit(ident, 1))
    assert isinstance(outcome, RuntimeError) and "SystemExit(2)" in str(outcome), repr(outcome)


def test_an_initializer_that_raises_an_exception_still_fails_the_tasks_with_it():
    with hetflow.Executor(1, executor="process", initializer=fail_in_workers) as executor:
        with pytest.raises(ValueError, match="bad setup"):
            executor.submit(ident, 1).result(timeout=TIMEOUT)


def noop():
    pass


def environment_of_a_program_started_here():
    import subprocess

    program = "import os; print(' '.join(sorted(k for k in os.environ if k.startswith('HETFLOW_'))))"
    started = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=TIMEOUT)
    return started.stdout.split()


def test_a_program_a_task_starts_does_not_take_itself_for_a_worker():
    # The variables the host gives its workers (their index, the initializer, sys.path...) stay with
    # the worker: a Python program a task starts that uses hetflow would otherwise run its own
    # workers' initializer, default to threads and count the host's cores.
    before = set(os.environ)
    hetflow.init(ncpus=1, executor="process", nprocs=1, initializer=noop)
    inherited = hetflow.submit(environment_of_a_program_started_here).result(timeout=TIMEOUT)
    leaked = [name for name in inherited if name not in before]
    assert leaked == [], leaked
    assert hetflow.submit(in_a_worker).result(timeout=TIMEOUT) is True
