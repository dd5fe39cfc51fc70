"""Starting, configuring and stopping the runtime: init, Session, shutdown, environment
variables, exit of the interpreter."""
from __future__ import annotations

import os
import threading

import pytest

import hetflow
from hf_subprocess import leftovers, run_script

ENV_VARS = ("HETFLOW_NCPUS", "HETFLOW_SCHED", "HETFLOW_EXECUTOR", "HETFLOW_NPROCS")


@pytest.fixture(autouse=True)
def _fresh_runtime(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    yield
    hetflow.shutdown()


def inc(x):
    return x + 1


def pid():
    return os.getpid()


# -- first use, init, Session ----------------------------------------------------------------------
def test_runtime_starts_on_first_use_with_defaults():
    assert hetflow.submit(inc, 1).result(timeout=30) == 2
    assert hetflow.ncpus() == len(os.sched_getaffinity(0))


def test_default_executor_is_process_on_a_gil_build():
    session = hetflow.init(ncpus=2)
    assert session.executor == "process"
    assert hetflow.submit(pid).result(timeout=30) != os.getpid()


def test_init_returns_a_session_describing_the_runtime():
    session = hetflow.init(ncpus=3, sched="eager", executor="thread", nprocs=1)
    assert isinstance(session, hetflow.Session)
    assert (session.ncpus, session.scheduler, session.executor, session.nprocs) == (3, "eager", "thread", 1)
    assert hetflow.ncpus() == 3


def test_nprocs_defaults_to_ncpus():
    assert hetflow.init(ncpus=2, executor="process").nprocs == 2


@pytest.mark.parametrize("sched", ["ws", "eager", "prio", "random"])
def test_every_scheduler_runs_tasks(sched):
    session = hetflow.init(ncpus=2, sched=sched, executor="thread")
    assert session.scheduler == sched
    futures = [hetflow.submit(inc, i) for i in range(20)]
    assert [f.result(timeout=30) for f in futures] == list(range(1, 21))


def test_session_as_context_manager_shuts_the_runtime_down():
    with hetflow.init(ncpus=3, executor="thread") as session:
        assert isinstance(session, hetflow.Session)
        future = hetflow.submit(inc, 41)
        assert hetflow.ncpus() == 3
    # The session's runtime is gone: its work was done first, and a new call starts a fresh one.
    assert future.done() and future.result(timeout=0) == 42
    with pytest.raises(RuntimeError, match="shut down"):
        session.runtime.submit(inc, (1,), {})
    assert hetflow.ncpus() == len(os.sched_getaffinity(0))  # a fresh runtime with defaults


def test_exiting_an_old_session_leaves_the_newer_runtime_running():
    with hetflow.init(ncpus=3, executor="thread"):
        hetflow.init(ncpus=1, executor="thread")
    assert hetflow.ncpus() == 1
    assert hetflow.submit(inc, 1).result(timeout=30) == 2


def test_init_restarts_a_running_runtime_after_its_work():
    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        release.wait(timeout=30)
        return "slow done"

    slow_future = hetflow.submit(slow)
    assert started.wait(timeout=30)
    queued = [hetflow.submit(inc, i) for i in range(5)]
    threading.Timer(0.2, release.set).start()
    session = hetflow.init(ncpus=3, executor="thread")  # waits for the work above
    assert slow_future.done() and slow_future.result(timeout=0) == "slow done"
    assert all(f.done() for f in queued)
    assert [f.result(timeout=0) for f in queued] == [1, 2, 3, 4, 5]
    assert session.ncpus == 3 == hetflow.ncpus()
    assert hetflow.submit(inc, 9).result(timeout=30) == 10


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_shutdown_waits_for_submitted_tasks(executor):
    hetflow.init(ncpus=2, executor=executor)
    first = hetflow.submit(inc, 0)
    chain = [first]
    for _ in range(20):
        chain.append(hetflow.submit(inc, chain[-1]))
    hetflow.shutdown()
    assert all(f.done() for f in chain)
    assert chain[-1].result(timeout=0) == 21


def test_shutdown_twice_and_without_a_runtime_is_harmless():
    hetflow.shutdown()
    hetflow.shutdown()
    hetflow.init(ncpus=2, executor="thread")
    hetflow.shutdown()
    hetflow.shutdown()
    assert hetflow.submit(inc, 1).result(timeout=30) == 2


def test_a_fresh_runtime_after_shutdown_runs_tasks():
    for executor in ("thread", "process", "thread"):
        hetflow.init(ncpus=2, executor=executor)
        assert hetflow.submit(inc, 1).result(timeout=30) == 2
        hetflow.shutdown()


def test_submitting_to_a_shut_down_sessions_runtime_raises_runtime_error():
    session = hetflow.init(ncpus=2, executor="thread")
    hetflow.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        session.runtime.submit(inc, (1,), {})


def test_wait_for_all_waits_for_every_task():
    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    blocker = hetflow.submit(release.wait, 30)
    others = [hetflow.submit(inc, i) for i in range(10)]
    assert hetflow.wait_for_all(timeout=0.05) is False
    assert not blocker.done()
    release.set()
    assert hetflow.wait_for_all() is True
    assert blocker.done() and all(f.done() for f in others)
    assert blocker.result(timeout=0) is True


def test_wait_for_all_with_process_tasks():
    hetflow.init(ncpus=2, executor="process")
    futures = [hetflow.submit(inc, i) for i in range(10)]
    assert hetflow.wait_for_all(timeout=30) is True
    assert all(f.done() for f in futures)


def test_wait_for_all_with_nothing_submitted():
    hetflow.init(ncpus=2, executor="thread")
    assert hetflow.wait_for_all(timeout=5) is True


# -- environment variables -------------------------------------------------------------------------
def test_environment_variables_configure_the_runtime(monkeypatch):
    monkeypatch.setenv("HETFLOW_NCPUS", "3")
    monkeypatch.setenv("HETFLOW_SCHED", "prio")
    monkeypatch.setenv("HETFLOW_EXECUTOR", "thread")
    monkeypatch.setenv("HETFLOW_NPROCS", "1")
    session = hetflow.init()
    assert (session.ncpus, session.scheduler, session.executor, session.nprocs) == (3, "prio", "thread", 1)
    assert hetflow.submit(threading.get_ident).result(timeout=30) != threading.get_ident()


def test_environment_variables_apply_to_the_runtime_started_on_first_use(monkeypatch):
    monkeypatch.setenv("HETFLOW_NCPUS", "3")
    monkeypatch.setenv("HETFLOW_EXECUTOR", "thread")
    assert hetflow.submit(pid).result(timeout=30) == os.getpid()
    assert hetflow.ncpus() == 3


def test_init_arguments_override_environment_variables(monkeypatch):
    monkeypatch.setenv("HETFLOW_NCPUS", "3")
    monkeypatch.setenv("HETFLOW_SCHED", "prio")
    monkeypatch.setenv("HETFLOW_EXECUTOR", "thread")
    monkeypatch.setenv("HETFLOW_NPROCS", "1")
    session = hetflow.init(ncpus=2, sched="eager", executor="process", nprocs=2)
    assert (session.ncpus, session.scheduler, session.executor, session.nprocs) == (2, "eager", "process", 2)


def test_nprocs_from_the_environment_sets_the_worker_processes(monkeypatch):
    monkeypatch.setenv("HETFLOW_NPROCS", "1")
    hetflow.init(ncpus=2, executor="process")

    def sleepy_pid():
        import time

        time.sleep(0.05)
        return os.getpid()

    pids = {f.result(timeout=30) for f in [hetflow.submit(sleepy_pid) for _ in range(4)]}
    assert len(pids) == 1 and os.getpid() not in pids


@pytest.mark.parametrize(
    "name, value",
    [
        ("HETFLOW_NCPUS", "abc"),
        ("HETFLOW_NCPUS", "-2"),
        ("HETFLOW_NPROCS", "x"),
        ("HETFLOW_EXECUTOR", "gpu"),
        ("HETFLOW_SCHED", "no-such-scheduler"),
    ],
)
def test_bad_environment_values_raise_value_error(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    settings = {} if name == "HETFLOW_NCPUS" else {"ncpus": 2}  # an argument would override it
    with pytest.raises(ValueError, match=value):
        hetflow.init(**settings)


# -- bad arguments to init ---------------------------------------------------------------------------
def test_unknown_scheduler_raises_value_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="no-such") as info:
        hetflow.init(ncpus=2, sched="no-such")
    for known in ("ws", "eager", "prio", "random"):
        assert known in str(info.value)


def test_unknown_executor_raises_value_error():
    with pytest.raises(ValueError, match="gpu"):
        hetflow.init(ncpus=2, executor="gpu")


@pytest.mark.parametrize("ncpus", [0, -1, 1.5, "2"])
def test_bad_ncpus_raises_value_error(ncpus):
    with pytest.raises(ValueError, match="ncpus"):
        hetflow.init(ncpus=ncpus)


def test_negative_nprocs_raises_value_error():
    # As for ncpus and HETFLOW_NPROCS: a clear ValueError, not an error from the binding layer.
    with pytest.raises(ValueError, match="nprocs"):
        hetflow.init(ncpus=2, nprocs=-1)


def test_process_tasks_without_worker_processes_raise_value_error():
    hetflow.init(ncpus=2, executor="thread", nprocs=0)
    with pytest.raises(ValueError, match="nprocs=0"):
        hetflow.task_submit.options(executor="process")(inc, 1)
    assert hetflow.submit(inc, 1).result(timeout=30) == 2


# -- interpreter exit ------------------------------------------------------------------------------
def test_exit_without_shutdown_is_clean(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
        import os, time
        import hetflow

        def work(i):
            time.sleep(0.05)
            return i * i, os.getpid()

        hetflow.init(ncpus=2, executor="process")
        done = [hetflow.submit(work, i).result(timeout=30) for i in range(4)]
        pending = [hetflow.submit(work, i) for i in range(6)]  # still running at exit
        workers = hf_children()
        print("WORKERS", workers)
        print("RESULTS", [d[0] for d in done])
        print("HOST", os.getpid(), "WORKER PIDS", sorted({d[1] for d in done}))
        """,
    )
    assert rc == 0, err
    assert "RESULTS [0, 1, 4, 9]" in out
    workers = eval(out.split("WORKERS ", 1)[1].splitlines()[0])
    assert len(workers) >= 1
    assert leftovers(workers) == {}, "worker processes outlived the interpreter"
    for bad in ("leaked", "resource_tracker", "Traceback", "Exception ignored", "Warning"):
        assert bad not in err, err


def test_exit_without_any_task_is_clean(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
        import hetflow
        hetflow.init(ncpus=2, executor="process")
        print("OK")
        """,
    )
    assert (rc, out.strip()) == (0, "OK")
    assert "Traceback" not in err and "leaked" not in err, err


def test_exit_without_shutdown_after_process_tasks_on_shared_arrays_is_clean(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
        import hetflow

        def fill(out, value):
            out[:] = value

        hetflow.init(ncpus=2, executor="process")
        shared = hetflow.zeros(1000)
        hetflow.submit(fill, hetflow.W(shared), 3.0)
        print("SUM", hetflow.submit(lambda a: float(a.sum()), shared).result(timeout=30))
        for value in range(5):  # still queued or running at exit
            hetflow.submit(fill, hetflow.W(shared), float(value))
        workers = hf_children()
        print("WORKERS", workers)
        """,
    )
    assert rc == 0, err
    assert "SUM 3000.0" in out
    workers = eval(out.split("WORKERS ", 1)[1].splitlines()[0])
    assert len(workers) >= 1
    assert leftovers(workers) == {}, "worker processes outlived the interpreter"
    for bad in ("leaked", "resource_tracker", "Traceback", "Exception ignored", "Warning"):
        assert bad not in err, err
