"""Fault injection: worker processes die at random moments (SIGKILL from outside, segfaults,
``os._exit`` inside tasks, kills while idle), and nothing else is lost.

For every seeded round the test checks each future against what the faults allow: an innocent
task returns its value and leaves its write in shared memory, a task whose worker died fails with
WorkerCrashedError, its dependents fail with DependencyError, and after shutdown no worker
process is left and the scratch shared memory is back where it started. The figures (tasks,
faults, mismatches) are printed with ``-s`` and quoted in docs/reliability.md;
``HETFLOW_FAULT_ROUNDS`` runs more rounds.
"""
from __future__ import annotations

import ctypes
import os
import random
import signal
import time

import pytest

import hetflow
from hetflow import _hetflow
from hf_subprocess import children_of, leftovers

np = pytest.importorskip("numpy")

ROUNDS = int(os.environ.get("HETFLOW_FAULT_ROUNDS", "4"))
TASKS_PER_ROUND = 60
FAULTS = ("sigkill", "segfault", "exit", "external")


# -- task bodies (module level: the workers import them by reference) --------------------------------
def innocent(cell, value, nap):
    time.sleep(nap)
    cell[0] = value
    return value


def plus_one(value):
    return value + 1


def faulty(how, cell, pid_cell, nap):
    pid_cell[0] = os.getpid()
    time.sleep(nap)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    elif how == "exit":
        os._exit(7)
    else:  # killed from outside while it sleeps here
        time.sleep(30)
    cell[0] = -1  # never reached
    return -1


def worker_pid():
    return os.getpid()


# -- the oracle ----------------------------------------------------------------------------------------
def _run_round(seed: int, counts: dict) -> None:
    rng = random.Random(seed)
    out = hetflow.zeros(TASKS_PER_ROUND, dtype=np.int64)
    plain = np.zeros(TASKS_PER_ROUND, dtype=np.int64)  # reaches the workers through scratch copies
    pids = hetflow.zeros(TASKS_PER_ROUND, dtype=np.int64)
    planned = []  # (index, kind, future, dependent future or None)
    for index in range(TASKS_PER_ROUND):
        nap = rng.choice((0.0, 0.0, 0.001, 0.005))
        kind = rng.choice(FAULTS) if rng.random() < 0.12 else "ok"
        target = rng.choice((out, plain))
        if kind == "ok":
            future = hetflow.task_submit(innocent, hetflow.RW(target[index : index + 1]), index * 3 + 1, nap)
        else:
            future = hetflow.task_submit(
                faulty, kind, hetflow.RW(target[index : index + 1]), hetflow.RW(pids[index : index + 1]),
                nap if kind != "external" else 0.0,
            )
        dependent = hetflow.task_submit(plus_one, future) if rng.random() < 0.3 else None
        planned.append((index, kind, future, dependent))
        if kind == "external":
            _kill_when_started(pids, index, future)
        if rng.random() < 0.05:
            _kill_an_idle_worker()

    mismatches = []
    for index, kind, future, dependent in planned:
        counts["tasks"] += 1 + (dependent is not None)
        if kind == "ok":
            value = future.result(timeout=60)
            written = out[index] + plain[index]  # one of them holds the write
            if value != index * 3 + 1 or written != index * 3 + 1:
                mismatches.append((index, kind, value, int(written)))
            if dependent is not None and dependent.result(timeout=60) != value + 1:
                mismatches.append((index, "dependent", dependent.result(), value + 1))
        else:
            counts["faults"] += 1
            with pytest.raises(hetflow.WorkerCrashedError):
                future.result(timeout=60)
            if out[index] != 0 or plain[index] != 0:
                mismatches.append((index, kind, "wrote", int(out[index]), int(plain[index])))
            if dependent is not None:
                with pytest.raises(hetflow.DependencyError):
                    dependent.result(timeout=60)
    counts["mismatches"] += len(mismatches)
    assert not mismatches, f"seed {seed}: {mismatches}"


def _kill_when_started(pids, index: int, future) -> None:
    """SIGKILLs the worker running task ``index`` once it has said which worker it is."""
    deadline = time.monotonic() + 30
    while pids[index] == 0 and not future.done():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.001)
    if pids[index]:
        os.kill(int(pids[index]), signal.SIGKILL)


def _kill_an_idle_worker() -> None:
    """Kills a worker process that has nothing to do: waits for all work first."""
    hetflow.wait_for_all()
    victim = hetflow.task_submit(worker_pid).result(timeout=30)
    os.kill(victim, signal.SIGKILL)
    # Wait until its death can be seen (waitid without reaping: the runtime reaps it), so the
    # next task is sent after the worker is truly gone, not while its threads are exiting.
    deadline = time.monotonic() + 30
    while True:
        try:
            if os.waitid(os.P_PID, victim, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:  # reaped already
            return
        assert time.monotonic() < deadline, "the killed worker never ended"
        time.sleep(0.001)


def test_random_worker_deaths_lose_nothing_but_the_dying_tasks():
    counts = {"tasks": 0, "faults": 0, "mismatches": 0}
    scratch_before = _hetflow.scratch_bytes()
    for seed in range(ROUNDS):
        hetflow.init(ncpus=2, executor="process", nprocs=2)
        try:
            _run_round(seed, counts)
        finally:
            workers = children_of(os.getpid())  # the replacements too
            hetflow.shutdown()
        assert leftovers(workers) == {}, "worker processes outlived shutdown"
    assert _hetflow.scratch_bytes() <= scratch_before, "scratch shared memory was left behind"
    print(f"\nfault injection: {counts['tasks']} tasks, {counts['faults']} faults, {counts['mismatches']} mismatches")
    assert counts["faults"] > 0
