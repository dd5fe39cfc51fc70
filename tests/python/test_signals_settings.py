"""Process-wide settings a program makes before or while it uses hetflow: signal dispositions
(SIGCHLD ignored), interval timers interrupting every blocking call, resource limits and the
umask. Each program runs in a child interpreter of its own, with a timeout (a hang fails)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap


def run(tmp_path, source, timeout=25, **env):
    """Runs `source` in a fresh interpreter; its (returncode, stdout, stderr)."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(source))
    environment = dict(os.environ, HETFLOW_HOME=str(tmp_path / "home"), **env)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=environment, cwd=tmp_path
    )
    return done.returncode, done.stdout, done.stderr


SIGCHLD_IGNORED = """
import os, signal
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the program reaps nothing: the kernel does
import hetflow

def square(x):
    return x * x

def program_status():
    import subprocess
    return subprocess.run(["sh", "-c", "exit 5"]).returncode

def die():
    os._exit(3)

hetflow.init(ncpus=2, nprocs=2)
assert [f.result() for f in [hetflow.task_submit(square, i) for i in range(20)]] == [i * i for i in range(20)]
print("STATUS", hetflow.task_submit(program_status).result(), flush=True)
try:
    hetflow.task_submit(die).result()
except hetflow.WorkerCrashedError as error:
    print("CRASH", error, flush=True)
assert hetflow.task_submit(square, 7).result() == 49
hetflow.shutdown()
"""


def test_sigchld_ignored_by_the_host(tmp_path):
    """With SIGCHLD ignored, the kernel reaps the worker processes itself: a worker's end must
    be seen all the same (the engine's waitpid fails with ECHILD; shutdown waited its whole stop
    timeout for each child, then signalled a pid that may have been reused), a crash says why
    its status is unknown, and the workers do not inherit the setting (a task's subprocess gets
    its status)."""
    rc, out, err = run(tmp_path, SIGCHLD_IGNORED)
    assert rc == 0, (out, err)
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["STATUS"] == "5", "the worker process inherited SIGCHLD ignored: subprocess lost the status"
    assert "SIGCHLD" in lines["CRASH"], lines["CRASH"]


THREAD_LIMIT = """
import os, resource
os.environ["HETFLOW_WORKER_STACK"] = "1G"
import hetflow
# Address space for two more stacks of 1 GiB: the third worker thread cannot be made.
size = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (5 << 29), resource.RLIM_INFINITY))
try:
    hetflow.init(ncpus=4, executor="thread", nprocs=0)
    print("STARTED", flush=True)
except Exception as error:
    print("REFUSED", type(error).__name__, error, flush=True)
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
hetflow.init(ncpus=2, executor="thread", nprocs=0)
print("AFTER", hetflow.task_submit(abs, -3).result(), flush=True)
hetflow.shutdown()
"""


def test_a_worker_thread_that_cannot_start_is_an_error(tmp_path):
    """A limit hit while the worker threads start (RLIMIT_AS, RLIMIT_NPROC) fails `init` with
    the reason; the threads already started stop. It ended the program (std::terminate: their
    threads were still running as the runtime unwound)."""
    rc, out, err = run(tmp_path, THREAD_LIMIT)
    assert rc == 0, (rc, out, err)
    assert "REFUSED" in out and "cannot start the thread of worker 2 (of 4)" in out and "RLIMIT_AS" in out, out
    assert "AFTER 3" in out, (out, err)


UMASK = """
import os, sys
os.umask(0o777)
import hetflow

def nap(x):
    return x

hetflow.init(ncpus=2, executor="thread", nprocs=0, trace=sys.argv[0] + ".trace.json")
for i in range(20):
    hetflow.task_submit.options(perfmodel="umask_model", size=100)(nap, i).result()
hetflow.shutdown()
"""


def test_umask_0777_leaves_the_models_usable(tmp_path):
    """Under umask 0777 the models' directory was made with mode 000 and each file with mode
    000: no later run of this user (root aside) could read or save its models again. What
    hetflow makes for itself keeps the owner's access; the rest of the umask still applies."""
    rc, out, err = run(tmp_path, UMASK)
    assert rc == 0, (out, err)
    home = tmp_path / "home"
    models = home / "perfmodels"
    for directory in (home, models):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o700 == 0o700, oct(directory.stat().st_mode)
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0, "more than the owner's access was added"
    files = [models / "umask_model.model", models / ".lock", tmp_path / "program.py.trace.json"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


TIMERS = """
import signal, time
import numpy as np
calls = [0]
def tick(signum, frame):
    calls[0] += 1
signal.signal(signal.SIGALRM, tick)
signal.signal(signal.SIGPROF, tick)
# No SA_RESTART (Python's handlers): every blocking call of every thread may fail with EINTR.
signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
signal.setitimer(signal.ITIMER_PROF, 0.0003, 0.0003)
import hetflow, hetflow.joblib

def double(a):
    return a * 2

def inc(a):
    a += 1

def nap(x):
    time.sleep(0.0002)
    return x

def nested(x):
    return hetflow.task_submit.options(executor="thread")(nap, x).result() + 1

hetflow.init(ncpus=2, nprocs=2)
big = np.arange(1_000_000, dtype=np.float64)  # messages larger than a pipe: partial reads and writes
assert all((f.result() == big * 2).all() for f in [hetflow.task_submit(double, big) for _ in range(4)])
counter = np.zeros(8)
for _ in range(200):
    hetflow.task_submit(inc, hetflow.RW(counter))
hetflow.wait_for_all()
assert (counter == 200).all(), counter
assert [f.result() for f in [hetflow.task_submit(nap, i) for i in range(400)]] == list(range(400))
assert [f.result() for f in [hetflow.task_submit.options(executor="thread")(nested, i) for i in range(100)]] == list(
    range(1, 101)
)
assert hetflow.joblib.Parallel(n_jobs=2)(hetflow.joblib.delayed(nap)(i) for i in range(200)) == list(range(200))
with hetflow.Executor(2, executor="process") as pool:
    assert list(pool.map(nap, range(200))) == list(range(200))
hetflow.shutdown()
signal.setitimer(signal.ITIMER_REAL, 0)
signal.setitimer(signal.ITIMER_PROF, 0)
print("OK", calls[0], flush=True)
"""


def test_interval_timers_interrupting_every_blocking_call(tmp_path):
    """A profiler's or watchdog's timer firing every 0.3 ms while tasks, waits, arrays sent
    through pipes, joblib loops and an executor run: results right, no hang, clean exit."""
    rc, out, err = run(tmp_path, TIMERS)
    assert rc == 0, (rc, out, err)
    assert out.startswith("OK"), (out, err)
    assert int(out.split()[1]) > 10, "the timer did not fire"
