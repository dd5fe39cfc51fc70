"""Starting, configuring and stopping the runtime: init, Session, shutdown, environment
variables, exit of the interpreter."""
from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

import hetflow
from hf_subprocess import Child, leftovers, run_script, write_script

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


def _busy_worker():
    """A task of the current runtime that runs until the returned event is set."""
    release = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        release.wait(timeout=30)
        return "slow done"

    slow_future = hetflow.submit(slow)
    assert started.wait(timeout=30)
    return release, slow_future


def test_init_restarts_a_running_runtime_after_its_work():
    hetflow.init(ncpus=2, executor="thread")
    release, slow_future = _busy_worker()
    queued = [hetflow.submit(inc, i) for i in range(5)]
    threading.Timer(0.2, release.set).start()
    session = hetflow.init(ncpus=3, executor="thread")  # waits for the work above
    assert slow_future.done() and slow_future.result(timeout=0) == "slow done"
    assert all(f.done() for f in queued)
    assert [f.result(timeout=0) for f in queued] == [1, 2, 3, 4, 5]
    assert session.ncpus == 3 == hetflow.ncpus()
    assert hetflow.submit(inc, 9).result(timeout=30) == 10


def _double_cpu(value):
    return value * 2


@pytest.mark.parametrize("how", ["submit", "process", "delayed", "map", "insert"])
def test_a_submission_from_another_thread_during_a_restart_says_a_restart_is_under_way(how):
    """hetflow.init() shuts the old runtime down (after its work) before it starts the new one: a
    submission from another thread meanwhile was refused as if hetflow had been shut down for
    good; it says that init() is replacing the runtime, and once init() has returned the same
    submission runs on the new runtime."""
    old = hetflow.init(ncpus=2, executor="thread").runtime
    release, slow_future = _busy_worker()
    sessions = []
    restart = threading.Thread(target=lambda: sessions.append(hetflow.init(ncpus=3, executor="thread")))
    restart.start()
    deadline = time.monotonic() + 30
    while not old._closed:  # the restart is under way: the old runtime refuses new work
        assert time.monotonic() < deadline, "the restart did not begin"
        time.sleep(0.01)

    def submit():
        if how == "submit":
            return hetflow.submit(inc, 1).result(timeout=30)
        if how == "process":
            return hetflow.task_submit.options(executor="process")(inc, 1).result(timeout=30)
        if how == "delayed":
            return hetflow.delayed(inc)(1).result(timeout=30)
        if how == "insert":
            return hetflow.insert(hetflow.Codelet("double", cpu=_double_cpu), 1).result(timeout=30)
        return hetflow.map(inc, [1, 2, 3], chunksize=1)

    try:
        with pytest.raises(RuntimeError, match=r"hetflow.init\(\) is replacing this runtime.*once hetflow.init\(\) has returned"):
            submit()
    finally:
        release.set()
        restart.join(timeout=30)
    assert not restart.is_alive()
    assert slow_future.result(timeout=0) == "slow done"
    assert submit() == ([2, 3, 4] if how == "map" else 2)
    assert hetflow.ncpus() == 3 and sessions[0].runtime is not old


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


def add_one_in_place(out):
    out += 1


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_arrays_outliving_their_runtimes_keep_none_of_them_alive(executor):
    # A long-lived array (and a view of it, and a shared one) used by tasks of runtime after
    # runtime: each runtime's handle registry, and the engine it holds, goes with its shutdown
    # rather than live as long as the array.
    import gc
    import weakref

    import numpy

    plain, shared = numpy.zeros(8), hetflow.zeros(8)
    registries = []
    for _ in range(3):
        session = hetflow.init(ncpus=2, executor=executor)
        for array in (plain, shared[2:6]):
            hetflow.submit(add_one_in_place, hetflow.RW(array)).result(timeout=30)
        registries.append(weakref.ref(session.runtime.handles))
        del session
        hetflow.shutdown()
    gc.collect()
    assert [registry() for registry in registries] == [None, None, None]
    assert plain.tolist() == [3.0] * 8
    assert shared.tolist() == [0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0]
    with hetflow.Executor(2, executor=executor) as ex:
        ex.submit(add_one_in_place, hetflow.RW(plain)).result(timeout=30)
        registry = weakref.ref(ex._runtime.handles)
    del ex
    gc.collect()
    assert registry() is None
    assert plain.tolist() == [4.0] * 8


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


# int() took these, which the engine and its C++ programs refuse: HETFLOW_NCPUS=1_0 started 10
# workers from Python.
@pytest.mark.parametrize("name", ["HETFLOW_NCPUS", "HETFLOW_NPROCS", "HETFLOW_NCUDA"])
@pytest.mark.parametrize(
    "value", ["1_0", " 2", "2 ", "+3", "\u0663", "-0", "0x1", "1.0", pytest.param("9" * 5000, id="5000-digits")]
)
def test_counts_from_the_environment_are_read_as_the_engine_reads_them(monkeypatch, name, value):
    from hetflow._runtime import Settings, device_modules

    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(f"'{value}'")) as refused:
        device_modules(Settings(ncpus=2).resolved()) if name == "HETFLOW_NCUDA" else Settings().resolved()
    assert name in str(refused.value)


def test_counts_from_the_environment_are_digits_and_empty_is_unset(monkeypatch):
    from hetflow._runtime import Settings

    monkeypatch.setenv("HETFLOW_NCPUS", "003")
    monkeypatch.setenv("HETFLOW_NPROCS", "")
    settings = Settings().resolved()
    assert (settings.ncpus, settings.nprocs) == (3, 3)
    monkeypatch.setenv("HETFLOW_NCPUS", "4097")
    with pytest.raises(ValueError, match=r"HETFLOW_NCPUS must be a positive whole number, not '4097' \(at most 4096"):
        Settings().resolved()


def test_settings_are_checked_when_made_and_filled_in_from_the_environment(monkeypatch, tmp_path):
    from dataclasses import FrozenInstanceError

    from hetflow._runtime import Settings

    with pytest.raises(ValueError, match="ncpus"):
        Settings(ncpus=0)
    with pytest.raises(ValueError, match="initargs"):
        Settings(initargs=(1,))
    monkeypatch.setenv("HETFLOW_NPROCS", "1")
    monkeypatch.setenv("HETFLOW_EXECUTOR", "thread")
    settings = Settings(ncpus=3, trace=tmp_path / "trace.json").resolved()
    assert (settings.executor, settings.ncpus, settings.nprocs) == ("thread", 3, 1)
    assert settings.trace == str(tmp_path / "trace.json")
    with pytest.raises(FrozenInstanceError):
        settings.ncpus = 4


def test_a_wait_longer_than_any_run_with_progress_has_no_limit():
    hetflow.init(ncpus=1, executor="thread")
    hetflow.submit(inc, 1)
    assert hetflow.wait_for_all(timeout=1e12, progress=True)


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


def test_without_worker_processes_tasks_run_on_threads_by_default(monkeypatch):
    monkeypatch.delenv("HETFLOW_EXECUTOR", raising=False)
    hetflow.init(ncpus=2, nprocs=0)
    assert hetflow.submit(inc, 1).result(timeout=30) == 2
    assert hetflow.task_submit(threading.get_ident).result(timeout=30) != threading.get_ident()


@pytest.mark.parametrize("through_environment", [False, True])
def test_the_process_executor_without_worker_processes_is_refused_at_init(monkeypatch, through_environment):
    monkeypatch.setenv("HETFLOW_EXECUTOR", "process")
    options = {} if through_environment else {"executor": "process"}
    origin = "HETFLOW_EXECUTOR=process" if through_environment else "executor='process'"
    with pytest.raises(ValueError, match=f"{re.escape(origin)}.*nprocs=0"):
        hetflow.init(ncpus=2, nprocs=0, **options)


def test_process_tasks_without_worker_processes_raise_value_error():
    hetflow.init(ncpus=2, executor="thread", nprocs=0)
    with pytest.raises(ValueError, match="nprocs=0"):
        hetflow.task_submit.options(executor="process")(inc, 1)
    assert hetflow.submit(inc, 1).result(timeout=30) == 2


# -- when the worker processes start ---------------------------------------------------------------
def _worker_processes():
    """The pids of this process's live children that are hetflow worker processes (from /proc:
    psutil may not be installed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                state, parent = stat.read().rsplit(b")", 1)[1].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:  # it ended meanwhile
            continue
        if int(parent) == os.getpid() and state != b"Z" and b"hetflow" in command:
            found.append(int(entry))
    return sorted(found)


def _new_worker_processes(before):
    """Worker processes started since ``before`` was taken (a runtime an earlier test left to
    the garbage collector, or a joblib pool it cached, may still have its own)."""
    return sorted(set(_worker_processes()) - set(before))


def _wait_for_worker_processes(before, count, seconds=60):
    deadline = time.monotonic() + seconds
    while len(_new_worker_processes(before)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return _new_worker_processes(before)


_initialized_with = None


def _initialize(value):
    global _initialized_with
    _initialized_with = (value, os.getpid())


def _pid_and_initializer_value():
    return os.getpid(), _initialized_with


def test_the_thread_executor_starts_worker_processes_only_when_a_task_needs_one():
    before = _worker_processes()
    session = hetflow.init(ncpus=2, executor="thread", initializer=_initialize, initargs=("ready",))
    assert (session.nprocs, hetflow.numcores()) == (2, 2)  # counted, though not started
    assert [hetflow.submit(inc, i).result(timeout=30) for i in range(20)] == list(range(1, 21))
    time.sleep(0.3)  # a worker process started at init would show by now
    assert _new_worker_processes(before) == []

    # The first process task starts its worker's process, whose initializer runs before it.
    worker_pid, initialized = hetflow.task_submit.options(executor="process")(_pid_and_initializer_value).result(
        timeout=120
    )
    assert initialized == ("ready", worker_pid) and worker_pid != os.getpid()
    assert worker_pid in _new_worker_processes(before)
    assert 1 <= len(_new_worker_processes(before)) <= 2
    process_inc = hetflow.task_submit.options(executor="process")
    assert [process_inc(inc, i).result(timeout=120) for i in range(10)] == list(range(1, 11))
    hetflow.shutdown()
    assert _new_worker_processes(before) == []


def test_offload_starts_the_cores_it_needs_under_the_thread_executor():
    before = _worker_processes()
    hetflow.init(ncpus=2, executor="thread")
    assert _new_worker_processes(before) == []
    pids = hetflow.offload(pid)()
    assert len(set(pids)) == 2 and sorted(pids) == _new_worker_processes(before)
    assert hetflow.numcores() == 2


def test_shutdown_with_worker_processes_never_started_is_quick():
    before = _worker_processes()
    hetflow.init(ncpus=4, executor="thread")
    assert hetflow.submit(inc, 1).result(timeout=30) == 2
    started = time.monotonic()
    hetflow.shutdown()
    assert time.monotonic() - started < 5
    assert _new_worker_processes(before) == []


def test_a_worker_process_that_cannot_start_fails_the_task_that_needed_it(monkeypatch):
    from hetflow import _worker

    missing = "/nonexistent/hetflow-python"
    monkeypatch.setattr(_worker, "command", lambda python=missing: [python, "-m", "hetflow._worker"])
    hetflow.init(ncpus=1, executor="thread")  # starts: nothing needed a worker process yet
    assert hetflow.submit(inc, 1).result(timeout=30) == 2
    for _ in range(2):  # each says why, at once; the runtime carries on
        future = hetflow.task_submit.options(executor="process")(inc, 1)
        with pytest.raises(Exception, match=f"cannot start process worker '{re.escape(missing)}'"):
            future.result(timeout=60)
    assert hetflow.submit(inc, 2).result(timeout=30) == 3
    started = time.monotonic()
    hetflow.shutdown()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("options", [{"executor": "process"}, {"executor": "thread", "nprocs": 2}])
def test_worker_processes_asked_for_start_with_the_runtime(options):
    before = _worker_processes()
    hetflow.init(ncpus=2, **options)
    assert len(_wait_for_worker_processes(before, 2)) == 2
    assert hetflow.task_submit.options(executor="process")(pid).result(timeout=120) in _new_worker_processes(before)


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


# -- shutdown that cannot hang ---------------------------------------------------------------------
STUCK = """
import os, sys, time
import hetflow

def forever():
    import time
    while True:
        time.sleep(0.02)

def inc(x):
    return x + 1

def outcome(future):
    try:
        return repr(future.result(timeout=30))
    except BaseException as error:
        return f"{type(error).__name__}: {error}"

hetflow.init(ncpus=2, executor=EXECUTOR)
stuck = [hetflow.submit(forever) for _ in range(2)]
queued = [hetflow.submit(inc, i) for i in range(4)]
workers = hf_children()
print("WORKERS", workers)
"""


def _workers(out):
    return eval(out.split("WORKERS ", 1)[1].splitlines()[0])


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_shutdown_with_a_timeout_returns_although_tasks_never_return(tmp_path, executor):
    rc, out, err = run_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\n"
        + STUCK
        + """
hetflow.shutdown(timeout=0.5)
for future in stuck + queued:
    print("OUTCOME", outcome(future))
print("AGAIN", hetflow.submit(inc, 1).result(timeout=30))
""",
    )
    assert rc == 0, err
    outcomes = [line[len("OUTCOME ") :] for line in out.splitlines() if line.startswith("OUTCOME")]
    assert len(outcomes) == 6
    for text in outcomes:
        assert text.startswith(("CancelledError", "WorkerCrashedError")), text
        assert "shutdown(timeout=0.5)" in text, text
    assert "AGAIN 2" in out
    assert leftovers(_workers(out)) == {}, "worker processes outlived the interpreter"
    assert "Traceback" not in err and "FATAL" not in err and "leaked" not in err, err


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_exit_with_an_acquisition_held_releases_it_and_runs_the_tasks_behind_it(tmp_path, executor):
    rc, out, err = run_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\n"
        + """
import hetflow, numpy as np

def mark(a):
    a += 1
    print("RAN", flush=True)

hetflow.init(ncpus=1, executor=EXECUTOR)
a = np.zeros(3)
hetflow.acquire(a, "RW")  # never released by the program
hetflow.submit(mark, hetflow.RW(a))
print("EXITING", flush=True)
""",
    )
    assert rc == 0, err
    assert "EXITING" in out and "RAN" in out, out  # the task ran at exit instead of waiting 60 s
    assert "unfinished" not in err and "leaked" not in err, err


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_after_shutdown_gave_up_futures_say_what_became_of_their_tasks(tmp_path, executor):
    rc, out, err = run_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\n"
        + """
import concurrent.futures as cf
import hetflow, time

def forever():
    while True:
        time.sleep(0.02)

hetflow.init(ncpus=1, executor=EXECUTOR)
finished = hetflow.submit(abs, -1)
finished.result(timeout=30)
stuck = hetflow.submit(forever)
queued = [hetflow.submit(abs, -2) for _ in range(3)]
time.sleep(0.3)
hetflow.shutdown(timeout=0.3)
done, not_done = cf.wait([finished] + queued, timeout=30)
print("DONE", len(done), "NOT_DONE", len(not_done))
print("QUEUED", [(f.done(), f.cancelled()) for f in queued])
print("FINISHED", finished.done(), finished.result())
print("AS_COMPLETED", len(list(cf.as_completed([finished] + queued, timeout=30))))
""",
    )
    assert rc == 0, err
    assert "DONE 4 NOT_DONE 0" in out, out  # the finished task, and the queued ones cancelled
    assert "QUEUED [(True, True), (True, True), (True, True)]" in out, out
    assert "FINISHED True 1" in out and "AS_COMPLETED 4" in out, out
    assert "Traceback" not in err and "leaked" not in err and "terminate" not in err, err


def test_a_thread_task_left_running_by_shutdown_stays_cancelled_when_it_ends(tmp_path):
    """shutdown(timeout) gives up on a thread task that is still running (it goes on, detached):
    its future is cancelled from then on, consistently, before and after the task ends, and the
    waiters and callbacks installed before the give-up are told at once."""
    rc, out, err = run_script(
        tmp_path,
        """
import threading, time
import concurrent.futures as cf
import hetflow

release = threading.Event()
def slow():
    release.wait(30)
    return 2

hetflow.init(ncpus=1, executor="thread")
stuck = hetflow.submit(slow)
called = []
stuck.add_done_callback(lambda f: called.append(f.cancelled()))
woken = []
waiter = threading.Thread(target=lambda: woken.append(len(cf.wait([stuck], timeout=30)[0])))
waiter.start()
time.sleep(0.2)
hetflow.shutdown(timeout=0.2)
waiter.join(30)
def outcome():
    try:
        return stuck.result(timeout=0)
    except cf.CancelledError:
        return "CancelledError"
print("GIVEN UP", stuck.done(), stuck.cancelled(), stuck.running(), outcome(), woken, called)
release.set()
time.sleep(0.3)
print("ENDED", stuck.done(), stuck.cancelled(), stuck.running(), outcome())
""",
    )
    assert rc == 0, err
    assert "GIVEN UP True True False CancelledError [1] [True]" in out, out
    assert "ENDED True True False CancelledError" in out, out


def test_ctrl_c_in_a_with_block_gives_the_work_up(tmp_path):
    # A Ctrl-C in the program's own code (not in a wait of hetflow's) reached it only once every
    # running task had ended: __exit__ waited for the work.
    rc, out, err = run_script(
        tmp_path,
        """
import os, signal, threading, time
import hetflow

release = threading.Event()
for kind in ("session", "executor"):
    started = time.monotonic()
    try:
        block = hetflow.init(ncpus=1, nprocs=0, executor="thread") if kind == "session" else hetflow.Executor(1, executor="thread")
        with block as opened:
            submit = hetflow.submit if kind == "session" else opened.submit
            stuck = submit(release.wait, 30)
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            time.sleep(30)
    except KeyboardInterrupt:
        print(kind, "INTERRUPTED", time.monotonic() - started < 10, stuck.cancelled(), flush=True)
release.set()
""",
    )
    assert rc == 0, err
    assert "session INTERRUPTED True True" in out and "executor INTERRUPTED True True" in out, out + err


def test_threads_waiting_when_shutdown_gives_up_are_told_at_once(tmp_path):
    # They waited in the engine for tasks that a detached worker might never finish, or that
    # would never start (the workers are busy with those).
    rc, out, err = run_script(
        tmp_path,
        """
import threading, time
import hetflow

release = threading.Event()
hetflow.init(ncpus=1, nprocs=0, executor="thread")
running = hetflow.submit(release.wait, 30)
queued = hetflow.submit(abs, -1)
heard = {}
def wait(what, call):
    try:
        call()
        heard[what] = "returned"
    except BaseException as error:
        heard[what] = type(error).__name__
waiters = [
    threading.Thread(target=wait, args=("running", running.result)),
    threading.Thread(target=wait, args=("running, timeout", lambda: running.result(timeout=30))),
    threading.Thread(target=wait, args=("queued", queued.exception)),
    threading.Thread(target=wait, args=("all", hetflow.wait_for_all)),
]
for waiter in waiters:
    waiter.start()
time.sleep(0.2)
hetflow.shutdown(timeout=0.2)
for waiter in waiters:
    waiter.join(10)
print("HEARD", sorted(heard.items()))
release.set()
""",
    )
    assert rc == 0, err
    expected = [(what, "CancelledError") for what in ("all", "queued", "running", "running, timeout")]
    assert f"HEARD {expected}" in out, out + err


def test_a_wait_that_a_give_up_ends_reads_what_the_task_ended_with(tmp_path):
    # A dependent of a task given up on while it ran ends with DependencyError. A result() whose
    # wait slice ran out just as the give-up happened raised CancelledError all the same (the
    # runtime had given up), while cancelled() and exception() then said DependencyError. The
    # interleaving is forced: the slice's wait gives up (as another thread would) and times out.
    rc, out, err = run_script(
        tmp_path,
        """
import threading, time
import hetflow

release = threading.Event()
hetflow.init(ncpus=1, nprocs=0, executor="thread")
running = hetflow.submit(release.wait, 30)
dependent = hetflow.submit(abs, running)  # never starts
time.sleep(0.1)
task = dependent._task

class SliceEndsAsTheShutdownGivesUp:
    calls = 0
    def __getattr__(self, name):
        return getattr(task, name)
    def wait(self, timeout):
        SliceEndsAsTheShutdownGivesUp.calls += 1
        if SliceEndsAsTheShutdownGivesUp.calls > 1:
            return task.wait(timeout)
        hetflow.shutdown(timeout=0.01)
        running.done()  # read first: its dependent fails, saying what it depended on
        return False

dependent._task = SliceEndsAsTheShutdownGivesUp()
try:
    dependent.result()
except BaseException as error:
    print("RESULT", type(error).__name__)
dependent._task = task
print("CANCELLED", dependent.cancelled())
print("EXCEPTION", type(dependent.exception()).__name__)
release.set()
""",
    )
    assert rc == 0, err
    assert "RESULT DependencyError" in out, out + err
    assert "CANCELLED False" in out and "EXCEPTION DependencyError" in out, out + err


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_shutdown_cancel_futures_cancels_what_has_not_started(tmp_path, executor):
    rc, out, err = run_script(
        tmp_path,
        f"""
import os, time
import hetflow

def slow(marker):
    open(marker, "w").close()
    time.sleep(0.3)
    return "slow"

def inc(x):
    return x + 1

hetflow.init(ncpus=1, nprocs=1, executor={executor!r})
marker = os.path.abspath("started")
running = hetflow.submit(slow, marker)
while not os.path.exists(marker):
    time.sleep(0.005)
queued = [hetflow.submit(inc, i) for i in range(3)]
queued += [hetflow.submit(inc, queued[-1]), hetflow.submit(inc, queued[0])]  # their dependents too
hetflow.shutdown(cancel_futures=True)
print("RUNNING", running.result(timeout=0))
print("CANCELLED", [f.cancelled() for f in queued])
""",
    )
    assert rc == 0, err
    assert "RUNNING slow" in out
    # The dependents failed with DependencyError, not cancelled though they never started.
    assert "CANCELLED [True, True, True, True, True]" in out, out


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_exit_gives_up_after_hetflow_exit_timeout_without_progress(tmp_path, executor):
    rc, out, err = run_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\n" + STUCK + 'os.environ["HETFLOW_EXIT_TIMEOUT"] = "1"\n',
    )
    assert rc == 0, err
    assert re.search(r"hetflow: exiting without 6 unfinished tasks: .*HETFLOW_EXIT_TIMEOUT", err), err
    assert len(err.strip().splitlines()) == 1, err
    assert leftovers(_workers(out)) == {}, "worker processes outlived the interpreter"


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_tasks_left_running_at_exit_still_complete(tmp_path, executor):
    rc, out, err = run_script(
        tmp_path,
        f"""
import sys, time
import hetflow

def work(i):
    time.sleep(0.05)
    sys.stdout.write(f"DONE {{i}};")  # one write: the lines of two threads do not mix
    sys.stdout.flush()

hetflow.init(ncpus=2, executor={executor!r})
for i in range(8):
    hetflow.submit(work, i)
""",
    )
    assert rc == 0, err
    assert sorted(int(i) for i in re.findall(r"DONE (\d+);", out)) == list(range(8)), out
    assert err == "", err


def test_a_chain_that_submits_its_next_link_counts_as_progress_at_exit(tmp_path):
    # The number of unfinished tasks stays at one all along; the links still finish.
    rc, out, err = run_script(
        tmp_path,
        """
import os, sys, time
import hetflow

def link(i):
    time.sleep(0.3)
    sys.stdout.write(f"LINK {i};")
    sys.stdout.flush()
    if i < 6:
        hetflow.submit(link, i + 1)

os.environ["HETFLOW_EXIT_TIMEOUT"] = "1"
hetflow.init(ncpus=2, executor="thread")
hetflow.submit(link, 1)
""",
    )
    assert rc == 0, err
    assert re.findall(r"LINK (\d+);", out) == [str(i) for i in range(1, 7)], out
    assert err == "", err


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_ctrl_c_during_shutdown_gives_the_work_up_and_propagates(tmp_path, executor):
    script = write_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\n"
        + STUCK
        + """
print("READY", flush=True)
try:
    hetflow.shutdown()
finally:
    print("OUTCOME", outcome(stuck[0]), flush=True)
""",
    )
    with Child(tmp_path, [str(script)]) as child:
        lines = child.readline_until("READY")
        child.workers = _workers("\n".join(lines))
        time.sleep(0.3)  # shutdown() is waiting by now
        os.kill(child.pid, signal.SIGINT)
        rc, out, err = child.finish()
    assert rc != 0
    assert "KeyboardInterrupt" in err, err
    assert "OUTCOME" in out and "interrupted (Ctrl-C)" in out, out
    assert leftovers(child.workers) == {}, "worker processes outlived the interpreter"


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_sigterm_handlers_exit_during_a_wait_gives_the_work_up_at_exit(tmp_path, executor):
    # As a Ctrl-C there does: only a KeyboardInterrupt marked the runtime interrupted, so the
    # exit waited for the work left (HETFLOW_EXIT_TIMEOUT without progress, here 5 s, then said
    # so; for ever while tasks kept finishing).
    script = write_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\n"
        + STUCK
        + """
import signal
os.environ["HETFLOW_EXIT_TIMEOUT"] = "5"
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
print("READY", flush=True)
stuck[0].result()
""",
    )
    with Child(tmp_path, [str(script)]) as child:
        child.workers = _workers("\n".join(child.readline_until("READY")))
        time.sleep(0.3)  # result() waits by now
        os.kill(child.pid, signal.SIGTERM)
        rc, out, err = child.finish()
    assert rc == 3, err
    assert "exiting without" not in err and "Traceback" not in err, err
    assert leftovers(child.workers) == {}, "worker processes outlived the interpreter"


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("where", ["shutdown", "exit"])
def test_a_sigterm_handlers_exit_during_a_shutdown_gives_the_work_up(tmp_path, executor, where):
    # A SIGTERM handler that calls sys.exit (as services do) raises SystemExit in the wait of
    # hetflow.shutdown(), or of the interpreter's exit: only a KeyboardInterrupt gave the work up
    # there. The runtime was left closed, so a later shutdown(timeout=...) returned at once
    # without stopping anything, and the process then waited at exit for its running tasks
    # without any limit (HETFLOW_EXIT_TIMEOUT or not): for ever, for these.
    script = write_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\nWHERE = {where!r}\n"
        + STUCK
        + """
import signal, threading

def on_sigterm(signum, frame):
    sys.exit(3)

signal.signal(signal.SIGTERM, on_sigterm)

def say_when_shutdown_waits():
    while not hetflow._runtime._current._closed:
        time.sleep(0.01)
    print("WAITING", flush=True)

threading.Thread(target=say_when_shutdown_waits, daemon=True).start()
if WHERE == "shutdown":
    try:
        hetflow.shutdown()
    except SystemExit:
        print("INTERRUPTED", flush=True)
    hetflow.shutdown(timeout=30)
    print("OUTCOME", outcome(stuck[0]), flush=True)
""",
    )
    with Child(tmp_path, [str(script)]) as child:
        child.workers = _workers("\n".join(child.readline_until("WORKERS")))
        child.readline_until("WAITING")
        os.kill(child.pid, signal.SIGTERM)
        rc, out, err = child.finish()  # fails if the child hangs
    assert rc == 0, err  # SystemExit inside the exit handler leaves the status as it was
    if where == "shutdown":
        assert "INTERRUPTED" in out and "OUTCOME" in out, out
        assert "interrupted (SystemExit raised while it waited)" in out, out
    assert leftovers(child.workers) == {}, "worker processes outlived the interpreter"


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_ctrl_c_while_the_interpreter_waits_at_exit_gives_the_work_up_in_one_line(tmp_path, executor):
    script = write_script(tmp_path, f"EXECUTOR = {executor!r}\n" + STUCK + '\nprint("READY", flush=True)\n')
    with Child(tmp_path, [str(script)]) as child:
        lines = child.readline_until("READY")
        child.workers = _workers("\n".join(lines))
        time.sleep(0.5)  # the interpreter waits at exit by now
        os.kill(child.pid, signal.SIGINT)
        rc, out, err = child.finish()
    assert "hetflow: interrupted at exit (Ctrl-C): 6 unfinished task(s) given up" in err, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert leftovers(child.workers) == {}, "worker processes outlived the interpreter"


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("shut_down", [False, True], ids=["left-running", "shut-down-without-waiting"])
def test_ctrl_c_while_the_interpreter_waits_at_exit_for_an_executor_gives_the_work_up_in_one_line(
    tmp_path, executor, shut_down
):
    # An Executor left running (or a joblib backend's idle pool) is stopped by its own exit
    # handler, which let the KeyboardInterrupt out: "Exception ignored in atexit callback" and
    # a traceback of hetflow's internals, and the next executors were not stopped. One shut down
    # with wait=False was waited for by a thread the interpreter joins, where the Ctrl-C gave
    # "Exception ignored in: <module 'threading'>" and a traceback.
    script = write_script(
        tmp_path,
        f"""
import time
import hetflow

def forever():
    import time
    while True:
        time.sleep(0.02)

pools = [hetflow.Executor(1, executor={executor!r}) for _ in range(2)]
stuck = [pool.submit(forever) for pool in pools]
if {shut_down!r}:
    for pool in pools:
        pool.shutdown(wait=False)
print("WORKERS", hf_children())
print("READY", flush=True)
""",
    )
    with Child(tmp_path, [str(script)]) as child:
        child.workers = _workers("\n".join(child.readline_until("READY")))
        time.sleep(0.5)  # the interpreter waits at exit by now
        os.kill(child.pid, signal.SIGINT)
        rc, out, err = child.finish()  # fails if the child hangs
    assert "hetflow: interrupted at exit (Ctrl-C): 1 unfinished task(s) given up" in err, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert leftovers(child.workers) == {}, "worker processes outlived the interpreter"


def test_two_ctrl_c_at_exit_end_the_program_without_aborting(tmp_path):
    # The second Ctrl-C cuts the exit wait short: threads of the engine (a worker's task, the
    # completions thread) then wanted the GIL of a finalizing interpreter, which ended them with
    # pthread_exit, and the C++ frames they unwound through aborted the process.
    script = write_script(
        tmp_path, 'EXECUTOR = "thread"\n' + STUCK + '\nstuck[0].add_done_callback(print)\nprint("READY", flush=True)\n'
    )
    with Child(tmp_path, [str(script)]) as child:
        child.readline_until("READY")
        time.sleep(0.5)  # the interpreter waits at exit by now
        os.kill(child.pid, signal.SIGINT)
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGINT)
        rc, out, err = child.finish()
    assert rc != -signal.SIGABRT, err
    assert "terminate called" not in err and "Fatal Python error" not in err, err


def test_threads_making_their_first_waits_at_once_do_not_deadlock(tmp_path):
    # The first wait looked up Python's main thread in a function-local static initialized by
    # a Python call: Python code lets go of the GIL, so a second thread entering the function
    # waited for the static's guard with the GIL in hand, while the first waited for the GIL
    # inside the guard (one run in about 100 of the test below hung so). A main_thread that
    # sleeps makes that interleaving certain.
    rc, out, err = run_script(
        tmp_path,
        """
import threading, time
import hetflow

hetflow.init(ncpus=2, executor="thread")
real_main_thread = threading.main_thread

def slow_main_thread():
    time.sleep(0.2)  # lets go of the GIL, as any Python code may
    return real_main_thread()

threading.main_thread = slow_main_thread
barrier = threading.Barrier(4)

def first_wait():
    future = hetflow.task_submit(time.sleep, 0.3)
    barrier.wait()
    future.result()

threads = [threading.Thread(target=first_wait) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
threading.main_thread = real_main_thread
print("DONE")
""",
    )
    assert rc == 0 and out == "DONE\n", (out, err)


@pytest.mark.parametrize("patience", ["default", "none"])
def test_threads_waiting_on_tasks_while_the_interpreter_finalizes_do_not_abort_it(tmp_path, patience):
    # Daemon threads loop over submit + result() while the program ends without waiting: one
    # that had checked that Python was not finalizing, and waited for the GIL when it began,
    # was ended by Python through the C++ frames of result(), which aborted the process (about
    # one run in 40). The exit handler waits a while for such threads; with no patience at all
    # (as when another thread holds the GIL for longer in one C call) they are ended while they
    # wait (one run in 20 aborted). A race: several runs, each of which could abort.
    code = """
import os, threading, time
os.environ["HETFLOW_EXIT_TIMEOUT"] = "0"
import hetflow
""" + ("hetflow._runtime._GIL_GATE_PATIENCE_S = 0.0\n" if patience == "none" else "") + """

def loop():
    while True:
        try:
            hetflow.task_submit(abs, -1).result()
        except hetflow.HetflowError:
            pass

for _ in range(4):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(0.2)
"""
    for _ in range(25):
        rc, out, err = run_script(tmp_path, code)
        assert rc != -signal.SIGABRT and "terminate called" not in err and "Fatal Python error" not in err, err


def test_ctrl_c_then_a_later_shutdown_does_not_hang(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
import _thread, threading
import hetflow

def forever():
    import time
    while True:
        time.sleep(0.02)

hetflow.init(ncpus=2, executor="thread")
stuck = hetflow.submit(forever)
threading.Timer(0.3, _thread.interrupt_main).start()
try:
    stuck.result()
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
hetflow.shutdown()
print("SHUT DOWN")
""",
    )
    assert rc == 0, err
    assert "INTERRUPTED" in out and "SHUT DOWN" in out



# -- late use, from a __del__ as the interpreter tears its modules down -------------------------------
_LATE_USE = """
import concurrent.futures, sys
__PRELUDE__
import hetflow

def f(x):
    return [x + 1]

def report(what, call):
    try:
        print(what, "->", repr(call()), flush=True)
    except BaseException as error:
        print(what, "=>", type(error).__name__, str(error).replace("\\n", " "), flush=True)

class Late:
    # Deleted as __main__ is torn down: after the exit handlers, when nothing can be imported.
    def __del__(self):
        thread_future, process_future, pool = self.thread_future, self.process_future, self.pool
        report("thread result", lambda: thread_future.result(timeout=5))
        report("process result", lambda: process_future.result(timeout=5))
        report("exception", lambda: process_future.exception(timeout=5))
        report("done", process_future.done)
        report("cancel", process_future.cancel)
        report("callback", lambda: process_future.add_done_callback(lambda _: print("called back", flush=True)))
        report("wait", lambda: len(concurrent.futures.wait([thread_future, process_future], timeout=5).done))
        report("submit", lambda: hetflow.submit(f, 1).result(timeout=5))
        report("init", lambda: hetflow.init(ncpus=1))
        report("shutdown", hetflow.shutdown)
        report("pool submit", lambda: pool.submit(f, 1).result(timeout=5))
        report("pool shutdown", pool.shutdown)
        report("Executor", lambda: hetflow.Executor(1))

late = Late()
late.thread_future = hetflow.task_submit.options(executor="thread")(f, 1)
late.process_future = hetflow.task_submit.options(executor="process")(f, 1)
late.pool = hetflow.Executor(1, executor="process")
print("MAIN", late.thread_future.result(timeout=30), late.process_future.result(timeout=30), flush=True)
"""

# An exit handler registered before hetflow was imported runs after hetflow's: it starts a runtime
# that is still running when the modules are torn down.
_LATE_RUNTIME = """
import atexit

def start_late():
    print("LATE START", hetflow.task_submit.options(executor="thread")(f, 2).result(timeout=5), flush=True)

atexit.register(start_late)
"""


@pytest.mark.parametrize("late_runtime", [False, True], ids=["stopped", "late-runtime"])
def test_hetflow_used_from_a_del_at_interpreter_shutdown_works_or_says_why(tmp_path, late_runtime):
    """Futures that ended still give their outcome; what would start a runtime, or a task that
    no thread worker could run now, is refused with a HetflowError that says why (it raised
    "ImportError: sys.meta_path is None", or, on a runtime an exit handler started late, the
    task never ran and the interpreter hung at exit)."""
    code = _LATE_USE.replace("__PRELUDE__", _LATE_RUNTIME if late_runtime else "")
    rc, out, err = run_script(tmp_path, code)
    assert rc == 0, err
    assert "ImportError" not in out + err and "meta_path" not in out + err, out + err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "MAIN [2] [2]" in out
    if late_runtime:
        assert "LATE START [3]" in out
    for line in (
        "thread result -> [2]",
        "process result -> [2]",
        "exception -> None",
        "done -> True",
        "cancel -> False",
        "called back",
        "callback -> None",
        "wait -> 2",
        "shutdown -> None",
        "pool shutdown -> None",
    ):
        assert line in out.splitlines(), out
    refusals = {line.split(" => ")[0]: line.split(" => ")[1] for line in out.splitlines() if " => " in line}
    for what in ("submit", "init", "Executor"):
        assert refusals[what].startswith("HetflowError hetflow: cannot "), out
        assert "the interpreter is shutting down" in refusals[what], out
    # The executor's runtime stopped at exit: refused as after any shutdown.
    assert refusals["pool submit"] == "RuntimeError hetflow: cannot submit a task: the runtime has been shut down", out


# An exit handler that runs after hetflow's starts a runtime and leaves its tasks running.
_LATE_TASKS_LEFT_RUNNING = """
import atexit, time

def say_later(what):
    time.sleep(0.5)
    print(what, flush=True)

def start_late():
    import hetflow
    hetflow.task_submit.options(executor="thread")(say_later, "LATE TASK RAN")
    pool = hetflow.Executor(1, executor="thread")
    pool.submit(say_later, "LATE POOL TASK RAN")
    print("LATE HANDLER RETURNS", flush=True)

atexit.register(start_late)
import hetflow
print("MAIN", hetflow.submit(abs, -1).result(timeout=30), flush=True)
"""


def test_tasks_an_exit_handler_after_hetflows_leaves_running_finish_at_exit(tmp_path):
    """The runtime is stopped when that handler returns, waiting for its work as at any exit:
    left to the interpreter's teardown, a task still to run could no longer take the GIL and
    the teardown waited for it for ever."""
    rc, out, err = run_script(tmp_path, _LATE_TASKS_LEFT_RUNNING)
    assert rc == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert sorted(out.splitlines()) == ["LATE HANDLER RETURNS", "LATE POOL TASK RAN", "LATE TASK RAN", "MAIN 1"], out


# -- calls that would stop the runtime from inside one of its tasks ---------------------------------------
def _call_inside(what):
    try:
        if what == "shutdown":
            hetflow.shutdown()
        elif what == "init":
            hetflow.init(ncpus=1, executor="thread")
        else:
            hetflow.wait_for_all()
    except RuntimeError as error:
        return str(error)
    return "no error"


@pytest.mark.parametrize("what", ["shutdown", "init", "wait_for_all"])
def test_stopping_or_waiting_for_the_runtime_inside_a_thread_task_is_refused(what):
    hetflow.init(ncpus=2, executor="thread")
    message = hetflow.submit(_call_inside, what).result(timeout=30)
    assert f"hetflow.{what}() cannot be called inside a task" in message
    # The runtime is intact: nothing was half closed.
    assert hetflow.submit(inc, 1).result(timeout=30) == 2
    assert hetflow.ncpus() == 2


def test_hetflow_calls_inside_a_process_task_use_the_workers_own_runtime():
    hetflow.init(ncpus=1, executor="process")
    assert hetflow.submit(_call_inside, "shutdown").result(timeout=30) == "no error"
    assert hetflow.submit(inc, 1).result(timeout=30) == 2


# -- fork ----------------------------------------------------------------------------------------
FORK_PRELUDE = """
import os, sys, threading
import hetflow

def inc(x):
    return x + 1

hetflow.init(ncpus=2, executor=EXECUTOR)
print("PARENT", hetflow.submit(inc, 1).result(timeout=30), flush=True)
release = threading.Event()
inherited = hetflow.task_submit.options(executor="thread")(release.wait, 30)
"""


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_forked_child_starts_a_fresh_runtime(tmp_path, executor):
    rc, out, err = run_script(
        tmp_path,
        f"EXECUTOR = {executor!r}\n"
        + FORK_PRELUDE
        + """
pid = os.fork()
if pid == 0:
    code = 1
    try:
        print("CHILD", [hetflow.submit(inc, i).result(timeout=30) for i in range(3)], flush=True)
        try:
            inherited.result(timeout=30)
        except RuntimeError as error:
            print("INHERITED", error, flush=True)
        hetflow.shutdown()
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
release.set()
print("STATUS", status, inherited.result(timeout=30), flush=True)
""",
    )
    assert rc == 0, err
    assert "PARENT 2" in out and "CHILD [1, 2, 3]" in out, out + err
    assert "INHERITED" in out and "forked" in out, out
    assert "STATUS 0 True" in out


def test_an_executor_inherited_by_a_forked_child_says_to_make_a_new_one(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        """
import os
import hetflow

with hetflow.Executor(1, executor="thread") as executor:
    print("PARENT", executor.submit(abs, -1).result(timeout=30), flush=True)
    pid = os.fork()
    if pid == 0:
        try:
            executor.submit(abs, -2)
        except RuntimeError as error:
            print("CHILD", error, flush=True)
        with hetflow.Executor(1, executor="thread") as mine:
            print("OWN", mine.submit(abs, -3).result(timeout=30), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
""",
    )
    assert rc == 0, err
    assert "PARENT 1" in out and "OWN 3" in out, out + err
    assert "CHILD hetflow: this hetflow.Executor belongs to the parent process" in out, out
    assert "make a new hetflow.Executor here" in out, out


def test_a_forked_child_that_leaves_hetflow_alone_exits_quietly(tmp_path):
    """The child inherits the parent's runtime and arrays registered with it: it exits as a plain
    process does, without a traceback from an array's finalizer."""
    rc, out, err = run_script(
        tmp_path,
        """
import os, sys, numpy as np, hetflow
a = np.zeros(3)
hetflow.task_submit(np.ndarray.fill, hetflow.RW(a), 1).result(timeout=30)  # no future kept
pid = os.fork()
if pid == 0:
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("CHILD", status, flush=True)
print("PARENT", hetflow.task_submit(np.sum, a).result(timeout=30), flush=True)
""",
    )
    assert rc == 0, err
    assert "Traceback" not in err and "forked child cannot use it" not in err, err
    assert "CHILD 0" in out, out
    assert "PARENT 3.0" in out, out


def test_an_idle_executor_a_forked_child_drops_goes_quietly(tmp_path):
    # As joblib's idle pools do when the child runs a loop of its own: its finalizer started a
    # thread that waited on the parent's runtime ("has been shut down", in a traceback).
    rc, out, err = run_script(
        tmp_path,
        """
import gc, os, hetflow
executor = hetflow.Executor(1, executor="thread")
print("PARENT", executor.submit(abs, -1).result(timeout=30), flush=True)
pid = os.fork()
if pid == 0:
    del executor
    gc.collect()
    with hetflow.Executor(1, executor="thread") as mine:
        print("OWN", mine.submit(abs, -2).result(timeout=30), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
executor.shutdown()
""",
    )
    assert rc == 0, err
    assert "PARENT 1" in out and "OWN 2" in out, out + err
    assert "Traceback" not in err, err


_FORK_IN_A_THREAD_TASK = """
import os, sys
import hetflow

hetflow.init(ncpus=2, executor="thread")

def fork_and_wait(how):
    pid = os.fork()
    if pid == 0:
        if how == "exit":
            sys.exit(7)
        if how == "raise":
            raise ValueError("from the child")
        print("CHILD RETURNS", flush=True)
        return "child"
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)

for how in ("return", "exit", "raise"):
    print(how, hetflow.task_submit.options(executor="thread")(fork_and_wait, how).result(timeout=30), flush=True)
"""


def test_a_child_forked_by_a_thread_task_ends_when_the_task_does(tmp_path):
    """As a child forked by a process task, or by a plain script, does: back in the worker's loop,
    which has no runtime in the child, it waited for ever, and so did the parent waiting for it."""
    rc, out, err = run_script(tmp_path, _FORK_IN_A_THREAD_TASK)
    assert rc == 0, err
    assert out.splitlines() == ["CHILD RETURNS", "return 0", "exit 7", "raise 1"], out + err
    assert "ValueError: from the child" in err and "fork_and_wait" in err, err


_FORK_THEN_RETURN = """
import os
import hetflow

hetflow.init(ncpus=1, executor="thread")
PARENT = os.getpid()

def fork_and_wait():
    pid = os.fork()
    if pid == 0:
        return "child"
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)

def after(what):
    print(what, "in the parent" if os.getpid() == PARENT else "IN THE CHILD", flush=True)
    return what

forked = hetflow.submit(fork_and_wait)
queued = hetflow.submit(after, "QUEUED")  # next on the only worker, in the child's copy too
print("STATUS", forked.result(timeout=30), queued.result(timeout=30), flush=True)
"""


def test_a_child_forked_by_a_thread_task_ends_as_the_task_returns(tmp_path):
    """Ended by a thread that looked every 20 ms whether the task's frame had returned, the child
    went back into the worker's loop meanwhile, which ran its copy of the next queued task (the
    parent runs it too): its side effects happened twice. Now it ends as the call returns."""
    rc, out, err = run_script(tmp_path, _FORK_THEN_RETURN)
    assert rc == 0, err
    assert "IN THE CHILD" not in out, out + err
    assert out.splitlines() == [
        "QUEUED in the parent",
        "STATUS 0 QUEUED",
    ], out + err


# A pool's forked children start their own runtimes with the defaults (they do not inherit the
# parent's settings): on a Python with a GIL, the process executor, each starting its worker
# interpreters up front. Two children so started four interpreters at once, which under a busy
# machine's load (a C++ build beside the tests) took past the 10 s hang watchdog: the test
# failed as if it had hung, stdout only "PARENT 2". A forked child's own process workers are
# tested by test_a_forked_child_starts_a_fresh_runtime[process]; here the children use threads.
POOL_CHILDREN_USE_THREADS = """
os.environ["HETFLOW_EXECUTOR"] = "thread"  # read by the runtime each forked child starts
"""


def test_multiprocessing_fork_children_run_tasks(tmp_path):
    rc, out, err = run_script(
        tmp_path,
        "EXECUTOR = 'thread'\n"
        + FORK_PRELUDE
        + POOL_CHILDREN_USE_THREADS
        + """
import multiprocessing

def in_child(i):
    return hetflow.submit(inc, i).result(timeout=30)

with multiprocessing.get_context("fork").Pool(2) as pool:
    print("POOL", pool.map(in_child, range(6), chunksize=1), flush=True)
release.set()
""",
    )
    assert rc == 0, err
    assert "POOL [1, 2, 3, 4, 5, 6]" in out, out + err


def test_joblib_multiprocessing_backend_runs_tasks(tmp_path):
    pytest.importorskip("joblib")
    rc, out, err = run_script(
        tmp_path,
        "EXECUTOR = 'thread'\n"
        + FORK_PRELUDE
        + POOL_CHILDREN_USE_THREADS
        + """
import joblib

def in_child(i):
    return hetflow.submit(inc, i).result(timeout=30)

print("JOBLIB", joblib.Parallel(n_jobs=2, backend="multiprocessing")(joblib.delayed(in_child)(i) for i in range(6)))
release.set()
""",
    )
    assert rc == 0, err
    assert "JOBLIB [1, 2, 3, 4, 5, 6]" in out, out + err


def test_a_second_ctrl_c_while_shutdown_gives_the_work_up_still_tells_the_callbacks():
    # The first Ctrl-C interrupts shutdown's wait; the second lands while it gives the work up
    # (the grace period of shutdown_within): the callbacks of the futures given up on were
    # never called then, as nothing else fires them once the engine has stopped.
    started, release = threading.Event(), threading.Event()

    def stuck_task():
        started.set()
        release.wait()

    ex = hetflow.Executor(1, executor="thread")
    runtime = ex._runtime
    stuck = ex.submit(stuck_task)
    queued = ex.submit(pow, 2, 3)
    assert started.wait(10)
    told = []
    stuck.add_done_callback(lambda f: told.append("stuck"))
    queued.add_done_callback(lambda f: told.append("queued"))

    class Interrupted:  # the engine, with Ctrl-C pressed during each wait
        def __init__(self, engine):
            self._engine = engine

        def __getattr__(self, name):
            return getattr(self._engine, name)

        def wait_all(self, timeout):
            raise KeyboardInterrupt

        def shutdown_within(self, timeout):
            self._engine.shutdown_within(timeout)
            raise KeyboardInterrupt

    engine = runtime._engine
    runtime._engine = Interrupted(engine)
    try:
        with pytest.raises(KeyboardInterrupt):
            ex.shutdown()
        runtime._engine = engine
        deadline = time.monotonic() + 5
        while len(told) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Told while the task given up on still runs, as after a single Ctrl-C.
        assert sorted(told) == ["queued", "stuck"]
        assert stuck.cancelled() and queued.cancelled()
    finally:
        runtime._engine = engine
        release.set()


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_ctrl_c_between_abort_and_shutdown_of_a_give_up_does_not_hang_the_exit(tmp_path, executor):
    # A second Ctrl-C that landed just as shutdown's give-up had aborted the engine, before it
    # stopped it: the aborted engine was never stopped, and its destructor, run as the
    # interpreter finalized, waited for ever. The engine's abort() here sends that Ctrl-C.
    script = write_script(
        tmp_path,
        f"""
import os, signal, time
import hetflow

hetflow.init(executor={executor!r}, ncpus=2)
futures = [hetflow.task_submit(time.sleep, 0.05) for _ in range(100)]
print("WORKERS", hf_children())
runtime = hetflow._runtime._current

class CtrlCAfterAbort:
    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def abort(self):
        self._engine.abort()
        os.kill(os.getpid(), signal.SIGINT)

runtime._engine = CtrlCAfterAbort(runtime._engine)
time.sleep(0.2)
print("READY", flush=True)
raise KeyboardInterrupt  # the program ends on a first Ctrl-C
""",
    )
    with Child(tmp_path, [str(script)]) as child:
        child.workers = _workers("\n".join(child.readline_until("READY")))
        rc, out, err = child.finish()  # fails if the child hangs
    assert "hetflow: interrupted at exit (Ctrl-C)" in err, err
    assert leftovers(child.workers) == {}, "worker processes outlived the interpreter"
