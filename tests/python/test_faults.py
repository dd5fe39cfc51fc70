"""Faults and resources of worker processes: the host dying, idle workers dying, exceptions
that do not pickle, scratch shared memory, descriptors, unmatched messages, the working
directory."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

import hetflow
from hf_subprocess import Child, child_env, state_of, write_script
from hf_tasks import add

DEADLINE_S = 10.0  # far longer than anything here takes; reaching it is a failure


@pytest.fixture(autouse=True)
def _shutdown_after():
    yield
    hetflow.shutdown()


def pid():
    return os.getpid()


def worker_pids():
    """The host's live worker processes (this process's children running hetflow._worker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"hetflow._worker" in command:
            found.append(int(entry))
    return found


def wait_until(condition, what, limit=DEADLINE_S):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def exited(child_pid):
    """Whether a child of this process has exited, every thread of it (without reaping it)."""
    try:
        return os.waitid(os.P_PID, child_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped already: the host saw it die (while still starting, say)


def is_dead(ident):
    return state_of(ident) in (None, "Z")


# -- the host dies ---------------------------------------------------------------------------------
HOST_DEATH_SCRIPT = """
import sys, time
import hetflow

hetflow.init(ncpus=2, executor="process", nprocs=2)

def busy():
    while True:
        time.sleep(0.01)

futures = [hetflow.submit(busy) for _ in range(2)]
while not all(f.running() for f in futures):
    time.sleep(0.01)
print("WORKERS", hf_children(), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_busy_workers_die_with_their_host(tmp_path, how):
    script = write_script(tmp_path, HOST_DEATH_SCRIPT)
    with Child(tmp_path, [str(script)]) as child:
        child.workers = eval(child.readline_until("WORKERS")[-1].split(" ", 1)[1])
        assert len(child.workers) == 2
        os.kill(child.pid, how)
        child.proc.wait(timeout=DEADLINE_S)
        # Well before the Child's watchdog would kill them.
        wait_until(lambda: all(is_dead(w) for w in child.workers), "the workers are gone", limit=5.0)


# -- the runtime gives up on its worker processes ---------------------------------------------------
GIVE_UP_SCRIPT = """
import subprocess, sys, time
import hetflow

hetflow.init(ncpus=2, executor="process", nprocs=2)

def start_a_program_and_wait():
    program = subprocess.Popen(["sleep", "60"])
    print("GRANDCHILD", program.pid, flush=True)
    program.wait()

futures = [hetflow.submit(start_a_program_and_wait) for _ in range(2)]
sys.stdin.readline()  # the test has seen both programs start
if sys.argv[1] == "shutdown":
    hetflow.shutdown(timeout=0)
    print("SHUT DOWN", flush=True)
    time.sleep(60)
else:
    futures[0].result()  # interrupted by the test's SIGINT
"""


def _ident(pid_):
    fields = Path(f"/proc/{pid_}/stat").read_text()
    return (pid_, int(fields[fields.rindex(")") + 2 :].split()[19]))


@pytest.mark.parametrize("how", ["shutdown", "SIGINT"])
def test_programs_that_tasks_started_end_with_the_workers_given_up(tmp_path, how):
    """Worker processes lead process groups of their own (a Ctrl-C at the terminal reaches the
    host only), so the programs their tasks run (subprocess) never see that Ctrl-C: when the
    runtime gives the work up and kills the workers, it kills those programs with them (they
    were left running, orphaned, before)."""
    script = write_script(tmp_path, GIVE_UP_SCRIPT)
    with Child(tmp_path, [str(script), how], stdin_text="") as child:
        programs = [_ident(int(child.readline_until("GRANDCHILD")[-1].split()[1])) for _ in range(2)]
        try:
            child.proc.stdin.write("go\n")
            child.proc.stdin.flush()
            if how == "shutdown":
                child.readline_until("SHUT DOWN")
            else:
                os.kill(child.pid, signal.SIGINT)
                child.proc.wait(timeout=DEADLINE_S)
            wait_until(lambda: all(is_dead(p) for p in programs), "the programs the tasks started are gone", 5.0)
        finally:
            for program in programs:
                if not is_dead(program):
                    os.kill(program[0], signal.SIGKILL)


# -- an idle worker dies ---------------------------------------------------------------------------
@pytest.mark.parametrize("nprocs", [1, 2])
def test_an_idle_workers_death_fails_no_task(nprocs):
    hetflow.init(ncpus=2, executor="process", nprocs=nprocs)
    # The workers know `add` already: their replacements must be sent it again.
    assert [hetflow.submit(add, i, 1).result(timeout=DEADLINE_S) for i in range(4)] == [1, 2, 3, 4]
    wait_until(lambda: len(worker_pids()) == nprocs, "every worker process has started")
    victims = worker_pids()
    for victim in victims:
        os.kill(victim, signal.SIGKILL)
    wait_until(lambda: all(exited(v) for v in victims), "the killed workers are dead")
    futures = [hetflow.submit(add, i, 1) for i in range(20)]
    assert [f.result(timeout=DEADLINE_S) for f in futures] == list(range(1, 21))


# -- exceptions that do not travel -------------------------------------------------------------------
class ReduceRaises(Exception):
    def __reduce__(self):
        raise ValueError("no pickling this")


class ReduceInterrupts(Exception):
    def __reduce__(self):
        raise KeyboardInterrupt


class ReduceExits(Exception):
    def __reduce__(self):
        raise SystemExit(4)


class NeedsArguments(Exception):
    def __init__(self, a, b):
        super().__init__(a)


class StrInterrupts(Exception):
    def __str__(self):
        raise KeyboardInterrupt

    def __reduce__(self):
        raise KeyboardInterrupt


class ResultInterrupts:
    def __reduce__(self):
        raise KeyboardInterrupt


def raise_it(cls):
    if cls is NeedsArguments:
        raise cls("text of the error", "b")
    raise cls("text of the error")


def return_unpicklable():
    return ResultInterrupts()


@pytest.mark.parametrize(
    "cls", [ReduceRaises, ReduceInterrupts, ReduceExits, NeedsArguments, StrInterrupts], ids=lambda c: c.__name__
)
def test_an_exception_that_does_not_pickle_reports_its_type_and_the_worker_lives_on(cls):
    hetflow.init(ncpus=2, executor="process", nprocs=1)
    before = hetflow.submit(pid).result(timeout=DEADLINE_S)
    with pytest.raises(BaseException) as info:
        hetflow.submit(raise_it, cls).result(timeout=DEADLINE_S)
    assert not isinstance(info.value, hetflow.WorkerCrashedError), info.value
    if cls is NeedsArguments:  # pickles: travels as itself, rebuilt without its __init__
        assert type(info.value) is NeedsArguments
    else:
        assert cls.__name__ in str(info.value)
    if cls is not StrInterrupts:
        assert "text of the error" in str(info.value)
    assert hetflow.submit(pid).result(timeout=DEADLINE_S) == before


def test_a_result_whose_pickling_interrupts_fails_only_its_task():
    hetflow.init(ncpus=2, executor="process", nprocs=1)
    before = hetflow.submit(pid).result(timeout=DEADLINE_S)
    with pytest.raises(TypeError, match="ResultInterrupts"):
        hetflow.submit(return_unpicklable).result(timeout=DEADLINE_S)
    assert hetflow.submit(pid).result(timeout=DEADLINE_S) == before


def leave_a_process_behind_and_die(pid_file):
    orphan = os.fork()
    if orphan == 0:  # holds the worker's pipes open, unused
        time.sleep(120)
        os._exit(0)
    Path(pid_file).write_text(str(orphan))
    os._exit(4)


def test_a_worker_that_dies_leaving_a_process_of_its_own_behind_fails_its_task(tmp_path):
    # That process keeps the worker's pipes open: their end of file never came, and the host
    # waited for the reply as long as it lived.
    hetflow.init(ncpus=2, executor="process", nprocs=1)
    pid_file = tmp_path / "orphan"
    try:
        with pytest.raises(hetflow.WorkerCrashedError, match="exited with status 4"):
            hetflow.submit(leave_a_process_behind_and_die, str(pid_file)).result(timeout=DEADLINE_S)
        assert hetflow.submit(add, 1, 2).result(timeout=DEADLINE_S) == 3
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


# -- descriptors ------------------------------------------------------------------------------------
def occupy_descriptors_below(target):
    """Opens /dev/null until every descriptor below ``target`` is in use; returns those opened."""
    opened = []
    while not opened or opened[-1] < target - 1:
        opened.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return opened


def test_workers_start_whatever_descriptors_the_host_has_open():
    # The workers' pipes land on every descriptor around 100, and far above it.
    for target in [*range(94, 104), 200]:
        opened = occupy_descriptors_below(target)
        try:
            hetflow.init(ncpus=2, executor="process", nprocs=2)
            futures = [hetflow.submit(add, i, target) for i in range(4)]
            assert [f.result(timeout=DEADLINE_S) for f in futures] == [i + target for i in range(4)], target
            hetflow.shutdown()
        finally:
            for fd in opened:
                os.close(fd)


DESCRIPTORS_SCRIPT = """
import os, resource, signal, time
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import hetflow

def total(a):
    return float(a.sum())

hetflow.init(ncpus=2, executor="process", nprocs=1)
print("WARM", hetflow.submit(total, hetflow.zeros(4)).result(timeout=10), flush=True)
worker = hetflow.submit(os.getpid).result(timeout=10)
arrays = []
try:
    while len(arrays) < 1000:
        arrays.append(hetflow.zeros(4))
except Exception as error:
    print("ARRAYS", type(error).__name__, error, flush=True)
# Out of descriptors, a worker that must be replaced cannot be.
os.kill(worker, signal.SIGKILL)
while not os.waitid(os.P_PID, worker, os.WEXITED | os.WNOHANG | os.WNOWAIT):
    time.sleep(0.01)
try:
    hetflow.submit(total, arrays[0]).result(timeout=10)
except Exception as error:
    print("RESTART", type(error).__name__, error, flush=True)
del arrays[-50:]
print("AFTER", hetflow.submit(total, arrays[0]).result(timeout=10), flush=True)
"""


def test_running_out_of_descriptors_says_so_and_what_to_do(tmp_path):
    script = write_script(tmp_path, DESCRIPTORS_SCRIPT)
    with Child(tmp_path, [str(script)]) as child:
        rc, out, err = child.finish()
    assert rc == 0, err
    lines = {line.split(" ", 1)[0]: line for line in out.splitlines()}
    for key in ("ARRAYS", "RESTART"):
        assert "ran out of file descriptors (limit 256" in lines[key], out
        assert "ulimit -n" in lines[key], out
    assert "shared arrays" in lines["ARRAYS"]
    assert lines["AFTER"] == "AFTER 0.0"


# -- the working directory ----------------------------------------------------------------------------
PLANTED = "open({marker!r}, 'a').write(__name__ + ' imported from the working directory\\n')\n"

WORKING_DIRECTORY_SCRIPT = """
import sys
import hetflow
import hetflow._worker
import next_to_the_script

if sys.argv[1] == "bootstrap":  # the command of Pythons before 3.11, which lack -P
    hetflow._worker.command = lambda python=sys.executable: [python, "-c", hetflow._worker._BOOTSTRAP]
hetflow.init(ncpus=2, executor="process", nprocs=2)
futures = [hetflow.submit(next_to_the_script.triple, i) for i in range(4)]
print("RESULTS", [f.result(timeout=10) for f in futures], flush=True)
try:
    hetflow.submit(next_to_the_script.fail).result(timeout=10)
except ValueError as error:
    print("ERROR", error, flush=True)
"""


@pytest.mark.parametrize("form", ["default", "bootstrap"])
def test_modules_in_the_working_directory_do_not_run_in_workers(tmp_path, form):
    marker = tmp_path / "marker"
    working = tmp_path / "working"
    working.mkdir()
    for name in ("traceback", "json", "pickle", "hetflow"):
        (working / f"{name}.py").write_text(PLANTED.format(marker=str(marker)))
    application = tmp_path / "application"
    application.mkdir()
    (application / "next_to_the_script.py").write_text(
        "def triple(x):\n    return 3 * x\n\n\ndef fail():\n    raise ValueError('failed as planned')\n"
    )
    script = write_script(application, WORKING_DIRECTORY_SCRIPT)
    with Child(working, [str(script), form]) as child:
        rc, out, err = child.finish()
    assert rc == 0, err
    assert "RESULTS [0, 3, 6, 9]" in out and "ERROR failed as planned" in out, (out, err)
    assert not marker.exists(), marker.read_text()


# -- offload messages that can never come ----------------------------------------------------------
# In a child interpreter: if the wait hangs, the child's watchdog ends it, and the test fails.
UNMATCHED_SCRIPT = """
import sys
import hetflow

def receive_from_one():
    if hetflow.coreid() == 1:
        return "core one ends without sending"
    return hetflow.recv(1)

def barrier_without_one():
    if hetflow.coreid() == 1:
        return "core one ends before the barrier"
    hetflow.barrier()
    return "passed"

hetflow.init(ncpus=2, executor="process", nprocs=2)
kernel = {"recv": receive_from_one, "barrier": barrier_without_one}[sys.argv[1]]
handle = hetflow.offload(target=[0, 1], asynchronous=True)(kernel)()
for _ in range(2):
    try:
        print("VALUE", *handle.wait_any(), flush=True)
    except Exception as error:
        print("ERROR", getattr(error, "core", None), type(error).__name__, error, flush=True)
"""


@pytest.mark.parametrize("kernel", ["recv", "barrier"])
def test_waiting_for_a_kernel_that_has_ended_fails_instead_of_hanging(tmp_path, kernel):
    script = write_script(tmp_path, UNMATCHED_SCRIPT)
    with Child(tmp_path, [str(script), kernel]) as child:
        rc, out, err = child.finish()
    assert rc == 0, err
    lines = out.splitlines()
    assert any(line.startswith("VALUE 1 core one ends") for line in lines), out
    failure = [line for line in lines if line.startswith("ERROR 0 PeerFailed")]
    assert failure and "core 1's kernel ended without" in failure[0], out


CANCELLED_PEER_SCRIPT = """
import time
import hetflow
from hetflow import _runtime

def receive_from_one():
    return hetflow.recv(1)

hetflow.init(ncpus=2, executor="process", nprocs=2)
busy = _runtime.current().submit_to_core(1, time.sleep, (1.0,), "busy")  # core 1's kernel waits behind it
handle = hetflow.offload(target=[0, 1], asynchronous=True)(receive_from_one)()
print("CANCELLED", handle._futures[1].cancel(), flush=True)
try:
    print("VALUE", handle._futures[0].result(timeout=8), flush=True)
except Exception as error:
    print("ERROR", type(error).__name__, error, flush=True)
"""


def test_waiting_for_a_kernel_that_was_cancelled_before_it_ran_fails(tmp_path):
    script = write_script(tmp_path, CANCELLED_PEER_SCRIPT)
    with Child(tmp_path, [str(script)]) as child:
        rc, out, err = child.finish()
    assert rc == 0, err
    assert "CANCELLED True" in out, out
    assert "core 1's kernel ended without" in out, out


# -- scratch shared memory ------------------------------------------------------------------------------
def total(array):
    return float(array.sum())


def memfd_bytes():
    """Bytes of hetflow's shared memory that this process and its workers hold: the host's
    descriptors and the workers' mappings, each memory counted once."""
    sizes = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:hetflow"):
                status = os.fstat(int(fd))
                sizes[status.st_ino] = status.st_size
        except OSError:
            pass
    for worker in worker_pids():
        for line in Path(f"/proc/{worker}/maps").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[5] == "/memfd:hetflow":
                low, high = (int(x, 16) for x in fields[0].split("-"))
                sizes[("worker", int(fields[4]))] = max(sizes.get(("worker", int(fields[4])), 0), high - low)
    return sum(sizes.values())


_kept_in_worker: list = []  # a process task's cache, in the worker's copy of this module


def keep(array, fail=False):
    _kept_in_worker.extend([array, array[2:]])  # the array and a view of it
    if fail:
        raise ValueError("kept, then failed")
    return float(array.sum())


def sums_of_kept():
    return [float(array.sum()) for array in _kept_in_worker]


def test_an_array_a_process_task_keeps_is_not_overwritten_by_later_tasks_arrays():
    numpy = pytest.importorskip("numpy")
    hetflow.init(ncpus=1, executor="process", nprocs=1)
    # One after the other: each task's array is copied where the one before's was, unless it was kept.
    assert hetflow.submit(keep, numpy.ones(100)).result(timeout=DEADLINE_S) == 100.0
    with pytest.raises(ValueError, match="kept, then failed"):
        hetflow.submit(keep, numpy.full(100, 2.0), fail=True).result(timeout=DEADLINE_S)
    assert hetflow.submit(keep, numpy.zeros(100)).result(timeout=DEADLINE_S) == 0.0
    assert hetflow.submit(sums_of_kept).result(timeout=DEADLINE_S) == [100.0, 98.0, 200.0, 196.0, 0.0, 0.0]


def test_scratch_memory_for_a_large_plain_array_is_released():
    numpy = pytest.importorskip("numpy")
    hetflow.init(ncpus=2, executor="process", nprocs=2)
    small = numpy.ones(1000)
    assert hetflow.submit(total, small).result(timeout=DEADLINE_S) == 1000.0
    before = memfd_bytes()
    large = numpy.ones(8 << 20)  # 64 MiB, not in hetflow's shared memory: copied for each task
    futures = [hetflow.submit(total, large) for _ in range(4)]
    assert [f.result(timeout=DEADLINE_S) for f in futures] == [float(8 << 20)] * 4
    del large, futures
    assert hetflow._hetflow.scratch_bytes() < 16 << 20
    assert memfd_bytes() - before < 16 << 20
    # Smaller arrays still reuse what is kept.
    assert hetflow.submit(total, small).result(timeout=DEADLINE_S) == 1000.0


def test_workers_let_go_of_a_freed_shared_array():
    numpy = pytest.importorskip("numpy")
    hetflow.init(ncpus=2, executor="process", nprocs=2)
    assert hetflow.submit(total, numpy.ones(10)).result(timeout=DEADLINE_S) == 10.0
    before = memfd_bytes()
    shared = hetflow.ones(8 << 20)  # 64 MiB in hetflow's shared memory, mapped by the workers
    futures = [hetflow.submit(total, shared) for _ in range(4)]
    assert [f.result(timeout=DEADLINE_S) for f in futures] == [float(8 << 20)] * 4
    del shared, futures
    deadline = time.monotonic() + DEADLINE_S
    while memfd_bytes() - before >= 16 << 20:  # idle workers sweep once a second
        assert time.monotonic() < deadline, "the workers keep a freed shared array mapped"
        time.sleep(0.05)


def test_running_out_of_descriptors_while_loading_the_pickler_says_so(monkeypatch):
    import errno

    from hetflow import _serialize

    def no_descriptors():
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_serialize, "_cloudpickle", no_descriptors)
    with pytest.raises(OSError, match="ran out of file descriptors") as info:
        _serialize._pickle_function(lambda: 1)
    assert "executor='thread'" not in str(info.value)
