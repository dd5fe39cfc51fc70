"""The joblib backend when the program is interrupted or forks: Ctrl-C during a ``Parallel`` loop
reaches the caller and leaves no worker process behind, and a forked child runs its own loops."""
from __future__ import annotations

import os
import signal
import time

import pytest

from hf_subprocess import Child, leftovers, write_script

pytest.importorskip("joblib")

CTRL_C_SCRIPT = """
import os, sys, time
import joblib
import hetflow.joblib

hetflow.joblib.register()


def nap(seconds):
    time.sleep(seconds)
    return seconds


def nap_after_mark(seconds, marks_path):
    with open(marks_path, "a") as marks:
        marks.write("x")
    return nap(seconds)


try:
    with joblib.parallel_config(backend="hetflow", n_jobs=2, prefer=sys.argv[2]):
        # The first loop leaves its pool idle for reuse; the second is interrupted.
        assert joblib.Parallel()(joblib.delayed(nap)(0) for _ in range(4)) == [0] * 4
        print("POOL", hf_children(), flush=True)
        joblib.Parallel()(joblib.delayed(nap_after_mark)(120, sys.argv[1]) for _ in range(6))
    print("FINISHED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    print("AFTER", hf_children(), flush=True)
"""


@pytest.mark.parametrize("prefer", ["processes", "threads"])
def test_ctrl_c_during_a_parallel_loop_reaches_the_caller(tmp_path, prefer):
    marks = tmp_path / "started"
    script = write_script(tmp_path, CTRL_C_SCRIPT)
    with Child(tmp_path, [str(script), str(marks), prefer]) as child:
        lines = child.readline_until("POOL")
        child.workers = eval(lines[-1].split(" ", 1)[1])
        deadline = time.monotonic() + 5
        while (not marks.exists() or len(marks.read_text()) < 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marks.exists() and len(marks.read_text()) == 2, "the two workers did not start their calls"
        os.kill(child.pid, signal.SIGINT)
        rc, out, err = child.finish()
        assert "INTERRUPTED" in out, (out, err)
        assert "FINISHED" not in out
        if prefer == "processes":
            # The calls still running were ended with their workers, not left for two minutes.
            assert leftovers(child.workers) == {}, "worker processes outlived the interrupted loop"
        assert rc == 0, err


FORK_SCRIPT = """
import os, sys
import joblib
import hetflow.joblib

hetflow.joblib.register()


def square(x):
    return x * x


with joblib.parallel_config(backend="hetflow", n_jobs=2):
    assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(8)) == [i * i for i in range(8)]
    pid = os.fork()
    if pid == 0:
        # The parent's idle pool is not the child's: the child starts workers of its own.
        result = joblib.Parallel()(joblib.delayed(square)(i) for i in range(8, 16))
        os._exit(0 if result == [i * i for i in range(8, 16)] else 3)
    _, status = os.waitpid(pid, 0)
    print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
    # The parent's pool still works after the child is gone.
    assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]
print("PARENT OK", flush=True)
"""


def test_a_forked_child_runs_its_own_parallel_loops(tmp_path):
    script = write_script(tmp_path, FORK_SCRIPT)
    with Child(tmp_path, [str(script)]) as child:
        rc, out, err = child.finish()
        assert "CHILD 0" in out, (out, err)
        assert "PARENT OK" in out, (out, err)
        assert rc == 0, err


SIGTERM_SCRIPT = """
import signal, sys, time
import hetflow
from hetflow.joblib import Parallel, delayed

hetflow.init(executor="thread", ncpus=2)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))


def nap(x):
    time.sleep(60)
    return x


print("READY", flush=True)
if sys.argv[1] == "timeout":
    Parallel(n_jobs=2, timeout=600)(delayed(nap)(i) for i in range(4))
elif sys.argv[1] == "generator":
    list(Parallel(n_jobs=2, return_as="generator")(delayed(nap)(i) for i in range(4)))
else:
    Parallel(n_jobs=2)(delayed(nap)(i) for i in range(4))
print("FINISHED", flush=True)
"""


@pytest.mark.parametrize("how", ["list", "timeout", "generator"])
def test_a_sigterm_handlers_exit_during_a_parallel_loop_gives_the_work_up_at_exit(tmp_path, how):
    # As after an interrupted result(): the loop's wait on the engine did not mark the runtime
    # interrupted, so the exit waited for the blocks still running (a minute here).
    script = write_script(tmp_path, SIGTERM_SCRIPT)
    with Child(tmp_path, [str(script), how]) as child:
        child.readline_until("READY")
        time.sleep(0.5)  # the loop waits by now
        os.kill(child.pid, signal.SIGTERM)
        rc, out, err = child.finish()
    assert rc == 3, err
    assert "FINISHED" not in out
    assert "exiting without" not in err and "Traceback" not in err, err
