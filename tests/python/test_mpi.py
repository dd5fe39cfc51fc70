"""hetflow.mpi: programs run under mpirun with 2 and 4 ranks (oversubscribed, as root), each rank
checking what it sees (tests/python/mpi_programs), and the distributed Cholesky example checked
against numpy. Without MPI (mpirun, hetflow's MPI module, mpi4py) they skip; with
HETFLOW_TEST_REQUIRE_MPI=1 (as `make test` sets it) they fail instead."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest

import hetflow
from hetflow import _runtime
from hf_opencl import opencl_or_skip

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "mpi_programs"
_REQUIRED = os.environ.get("HETFLOW_TEST_REQUIRE_MPI") == "1"
# Open MPI in a container, as root, on one machine: ranks talk through shared memory.
_MPI_ENVIRONMENT = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


def _mpirun_or_skip(needs_mpi4py: bool = False) -> str:
    missing = []
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        missing.append("mpirun (Debian: openmpi-bin)")
    try:
        from hetflow import _hetflow_mpi  # noqa: F401
    except ImportError:
        missing.append("hetflow's MPI module (hetflow built without MPI: libopenmpi-dev)")
    if needs_mpi4py:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            missing.append("mpi4py")
    if missing:
        if _REQUIRED:
            pytest.fail(f"MPI is required here (HETFLOW_TEST_REQUIRE_MPI=1) but missing: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")
    assert mpirun is not None
    return mpirun


def _run(ranks: int, *command: str, needs_mpi4py: bool = False) -> str:
    mpirun = _mpirun_or_skip(needs_mpi4py)
    environment = {**os.environ, **_MPI_ENVIRONMENT}
    environment.pop("HETFLOW_NUM_CPUS", None)
    result = subprocess.run(
        [mpirun, "--timeout", "120", "-np", str(ranks), sys.executable, *command],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=150,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "nanobind: leaked" not in output, output  # nothing of hetflow's left alive at exit
    return output


def _run_program(program: str, ranks: int = 2, **environment: str) -> Tuple[int, str]:
    """``python -c program`` on ``ranks`` ranks: its exit status and output, whatever they are
    (mpirun's own time limit, far beyond what these take, says so in the output)."""
    mpirun = _mpirun_or_skip()
    result = subprocess.run(
        [mpirun, "--timeout", "100", "-np", str(ranks), sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={**os.environ, **_MPI_ENVIRONMENT, **environment},
        timeout=130,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("ranks", [2, 4])
@pytest.mark.parametrize("mode", ["world", "mpi4py-first", "mpi4py-after"])
def test_owner_computes_on_every_rank(ranks, mode):
    output = _run(ranks, str(PROGRAMS / "owner_computes.py"), mode, needs_mpi4py=mode != "world")
    for rank in range(ranks):
        assert f"rank {rank}: owner-computes checks passed ({mode})" in output, output


@pytest.mark.parametrize("ranks", [1, 4])
def test_the_distributed_cholesky_matches_numpy(ranks):
    output = _run(ranks, "examples/python/mpi_cholesky.py", "--n", "512", "--tile", "64", "--check")
    assert "check: relative error" in output and ": OK" in output, output
    if ranks > 1:
        assert "rank 1: sent" in output and "rank 1: sent 0 messages" not in output, output


def test_a_rank_that_fails_ends_every_rank_instead_of_leaving_them_waiting():
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.zeros(4), owner=1)\n"
        "if hm.rank() == 1:\n"
        "    raise SystemError('rank 1 gives up')\n"
        "hm.gather(a, root=0)\n"  # would wait for rank 1 for ever
    )
    returncode, output = _run_program(program)
    assert returncode != 0, output
    assert "rank 1 gives up" in output and "ending every rank" in output, output
    assert "time limit" not in output, output  # ended by the failing rank, not by mpirun's timeout


def test_ranks_that_register_different_sizes_are_told_so_instead_of_hanging():
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.ones(10 if hm.rank() == 0 else 5), owner=0)\n"
        "b = hm.register(np.zeros(1), owner=1)\n"
        "hetflow.task_submit.options(executor='thread')(lambda x, y: None, a, hetflow.RW(b))\n"
        "hm.wait_all()\n"
    )
    returncode, output = _run_program(program)
    assert returncode != 0, output
    assert "different sizes" in output and "time limit" not in output, output


def test_a_forked_child_of_a_rank_is_told_it_is_not_one_and_exits_at_once():
    program = (
        "import os, sys, numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.zeros(4), owner=0)\n"
        "hetflow.task_submit.options(executor='thread')(lambda x: x.fill(1), hetflow.W(a))\n"
        "hm.wait_all()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        hm.wait_all()\n"
        "    except RuntimeError as error:\n"
        "        print('child:', error, flush=True)\n"
        "    sys.exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(f'rank {hm.rank()}: child ended with {status}', flush=True)\n"
        "hm.broadcast(a)\n"
        "assert a[3] == 1.0\n"
    )
    output = _run(2, "-c", program)
    assert output.count("is not an MPI rank") == 2 and "child ended with 0" in output, output
    assert "still in use at exit" not in output, output  # the child left MPI to its parent


def test_ctrl_c_reaches_a_program_waiting_in_wait_all():
    program = (
        "import _thread, threading, time, numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init(abort_on_error=False)\n"
        "a = hm.register(np.zeros(1), owner=0)\n"
        "hetflow.task_submit.options(executor='thread')(lambda x: time.sleep(3), hetflow.RW(a))\n"
        "threading.Timer(0.5, _thread.interrupt_main).start()\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    hm.wait_all()\n"
        "except KeyboardInterrupt:\n"
        "    print(f'interrupted after {time.monotonic() - start:.1f} s', flush=True)\n"
        "hm.wait_all()\n"
    )
    output = _run(1, "-c", program)
    assert "interrupted after 0." in output, output


def test_without_init_distributed_calls_say_what_to_do():
    import hetflow.mpi as hm

    if hm._state is not None:
        pytest.skip("hetflow.mpi is initialised in this process")
    with pytest.raises(RuntimeError, match=r"hetflow.mpi.init\(\)"):
        hm.rank()
    with pytest.raises(RuntimeError, match=r"hetflow.mpi.init\(\)"):
        hm.task_submit(print, on=0)
    with pytest.raises(ValueError, match=r"hetflow.mpi.init\(\)"):
        _runtime.current().submit(print, (), {}, on=0)
    assert hetflow.task_submit(len, "abc").result() == 3


PROGRAMS_AND_SAYINGS = {
    # Failures travel with their data, and empty pieces stay put.
    "failures_and_edges.py": "failure and edge checks passed",
    # Arrays a task reaches other than as its arguments are refused, and waits behind a held
    # acquisition raise.
    "hidden_arrays_and_waits.py": "hidden arrays and waits checks passed",
}


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("program", PROGRAMS_AND_SAYINGS)
def test_programs_checking_themselves_on_every_rank(program, ranks):
    output = _run(ranks, str(PROGRAMS / program))
    for rank in range(ranks):
        assert f"rank {rank}: {PROGRAMS_AND_SAYINGS[program]}" in output, output


def test_a_rank_that_exits_with_a_status_ends_every_rank():
    program = (
        "import sys, time, numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.zeros(4), owner=1)\n"
        "hetflow.task_submit.options(executor='thread')(lambda x: x.fill(1), hetflow.W(a))\n"
        "if hm.rank() == 1:\n"
        "    time.sleep(0.2)\n"
        "    sys.exit(3)\n"  # not an exception Python hands to sys.excepthook
        "hm.wait_all()\n"  # would wait for rank 1 for ever
    )
    returncode, output = _run_program(program)
    assert returncode != 0, output
    # Rank 1's status ends the job; rank 0 may have been told first that rank 1's context ended.
    assert "exits with status 3" in output or "rank 1 ended (its context was destroyed)" in output, output
    assert "time limit" not in output, output


def test_a_rank_that_returns_without_wait_all_is_told_of_instead_of_waited_for():
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.zeros(4), owner=0, name='a')\n"
        "b = hm.register(np.ones(4), owner=1, name='b')\n"
        "run = hetflow.task_submit.options(executor='thread')\n"
        "if hm.rank() == 1:\n"
        "    raise SystemExit(0)\n"  # returns early: status 0, MPI finalised, no wait_all
        "reader = run(lambda x, y: x.__iadd__(y), hetflow.RW(a), b)\n"  # b never comes
        "try:\n"
        "    hm.wait_all()\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank 0: {error}', flush=True)\n"
        "try:\n"
        "    reader.result(timeout=5)\n"
        "except hetflow.DependencyError as error:\n"
        "    print(f'reader: {error}', flush=True)\n"
        "print(f'a = {a.tolist()}', flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert "rank 1 ended (its context was destroyed) after 0 wait_all calls" in output, output
    assert "reader: " in output and "'b' never came from rank 1, whose context ended" in output, output
    assert "a = [0.0, 0.0, 0.0, 0.0]" in output, output
    assert returncode == 0 and "time limit" not in output, output


def test_gather_of_data_whose_owner_left_raises_instead_of_returning_stale_values():
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "b = hm.register(np.full(4, float(hm.rank())), owner=1, name='b')\n"
        "hetflow.task_submit.options(executor='thread')(lambda x: x.__iadd__(10), hetflow.RW(b))\n"
        "if hm.rank() == 1:\n"
        "    raise SystemExit(0)\n"  # leaves without sending b
        "try:\n"
        "    hm.gather(b, root=0)\n"
        "    print(f'gathered b = {b.tolist()}', flush=True)\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'gather: {error}', flush=True)\n"
        "try:\n"
        "    hm.wait_all()\n"
        "except hetflow.HetflowError as error:\n"
        "    print('wait_all raised', flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert "gathered b" not in output, output
    assert "gather: dependency 'the latest version of a gathered array' failed: HetflowError: " in output, output
    assert "'b' never came from rank 1, whose context ended" in output, output
    assert "wait_all raised" in output, output
    assert returncode == 0 and "time limit" not in output, output


def test_the_program_may_write_an_array_it_gathered():
    # gather's read of it stayed among the thread's acquisitions: writing it was refused.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "b = hm.register(np.zeros(4), owner=1, name='b')\n"
        "hetflow.task_submit.options(executor='thread')(lambda x: x.fill(3), hetflow.W(b))\n"
        "hm.gather(b, root=None)\n"
        "with hetflow.acquire(b, 'RW') as held:\n"
        "    held += 1\n"
        "print(f'rank {hm.rank()}: b = {b.tolist()}', flush=True)\n"
        "hm.wait_all()\n"
    )
    returncode, output = _run_program(program)
    assert "rank 0: b = [4.0, 4.0, 4.0, 4.0]" in output and "rank 1: b = [4.0, 4.0, 4.0, 4.0]" in output, output
    assert returncode == 0, output


def test_a_rank_leaving_with_transfers_in_flight_tells_the_others():
    # Each rank waits for data the other never sends (they submitted different work). Rank 1
    # leaves without wait_all; at exit its receive never ends, and after its patience it still
    # tells rank 0, whose wait would otherwise never end.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "hm._EXIT_WAIT_S = 2.0\n"
        "a = hm.register(np.zeros(4), owner=0, name='a')\n"
        "b = hm.register(np.ones(4), owner=1, name='b')\n"
        "run = hetflow.task_submit.options(executor='thread')\n"
        "if hm.rank() == 1:\n"
        "    run(lambda y, x: y.__iadd__(x), hetflow.RW(b), a)\n"  # a never comes
        "    raise SystemExit(0)\n"
        "run(lambda x, y: x.__iadd__(y), hetflow.RW(a), b)\n"  # b never comes
        "try:\n"
        "    hm.wait_all()\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank 0: {error}', flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert "rank 1: its context ends with the process, with 1 transfers still in flight after 2 s" in output, output
    assert "'b' never came from rank 1, whose context ended" in output, output
    assert returncode == 0 and "time limit" not in output, output


def test_a_rank_interrupted_in_wait_all_ends_cleanly_and_can_wait_again():
    # Ctrl-C (here a SIGINT the rank sends itself) while hm.wait_all() waits for a late rank: the
    # wait left running on its thread ended under the context as the rank exited (SIGSEGV). It
    # is interrupted now, and waiting again ends with the other rank.
    program = (
        "import os, signal, threading, time, numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init(abort_on_error=False)\n"
        "x = hm.register(np.ones(4), owner=0, name='x')\n"
        "hetflow.task_submit.options(executor='thread')(lambda a: a.__imul__(2), hetflow.RW(x))\n"
        "if hm.rank() == 1:\n"
        "    time.sleep(2.0)\n"
        "else:\n"
        "    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "    try:\n"
        "        hm.wait_all()\n"
        "    except KeyboardInterrupt:\n"
        "        print('rank 0 interrupted', flush=True)\n"
        "hm.wait_all()\n"
        "print(f'rank {hm.rank()} done', flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert "rank 0 interrupted" in output and "rank 0 done" in output and "rank 1 done" in output, output
    assert returncode == 0 and "Segmentation" not in output and "time limit" not in output, output


def test_hetflow_init_after_hetflow_mpi_init_is_refused_and_the_ranks_go_on():
    # A new runtime would not serve hetflow.mpi: tasks over distributed arrays ran on every rank,
    # each on its own copy, and hm.wait_all() said to call hetflow.mpi.init().
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.zeros(3), owner=0, name='a')\n"
        "try:\n"
        "    hetflow.init(ncpus=2)\n"
        "except RuntimeError as error:\n"
        "    print(f'rank {hm.rank()}: {error}', flush=True)\n"
        "hetflow.task_submit.options(executor='thread')(lambda x: x.__iadd__(hm.rank() + 1), hetflow.RW(a))\n"
        "hm.wait_all()\n"
        "hm.gather([a], root=0)\n"
        "if hm.rank() == 0:\n"
        "    print(f'a = {a.tolist()}', flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert output.count("the running runtime serves hetflow.mpi") == 2, output
    assert "a = [1.0, 1.0, 1.0]" in output, output  # ran once, on the owner
    assert returncode == 0 and "time limit" not in output, output


def test_rank_and_size_still_answer_after_the_runtime_shut_down():
    # Once the `with hetflow.init(...)` block that served hetflow.mpi ended, hm.rank() raised
    # (printing the rank after the work failed), as mpi4py's comm.rank does not.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "with hetflow.init(ncpus=1):\n"
        "    hm.init()\n"
        "    me, ranks = hm.rank(), hm.size()\n"
        "    a = hm.register(np.zeros(3), owner=ranks - 1)\n"
        "    hm.wait_all()\n"
        "assert (hm.rank(), hm.size()) == (me, ranks), (hm.rank(), hm.size(), me, ranks)\n"
        "print(f'rank {hm.rank()} of {hm.size()} after shutdown', flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert returncode == 0, output
    assert "rank 0 of 2 after shutdown" in output and "rank 1 of 2 after shutdown" in output, output


def test_a_failure_too_long_to_send_whole_is_cut_between_characters():
    # Past 1 MiB the text sent to the reader's rank is cut: in the middle of a two-byte 'ü' it
    # gave the reader UnicodeDecodeError instead of the DependencyError naming the failure.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "run = hetflow.task_submit.options(executor='thread')\n"
        "src = hm.register(np.ones(2), owner=0, name='srcX')\n"
        "dst = hm.register(np.zeros(2), owner=1, name='dst')\n"
        "def bad(x):\n"
        "    raise ValueError('\u00fc' * 600000)\n"
        "run(bad, hetflow.RW(src))\n"
        "copied = run(lambda d, s: d.__setitem__(slice(None), s), hetflow.W(dst), src)\n"
        "hm.wait_all()\n"
        "if hm.rank() == 1:\n"
        "    try:\n"
        "        copied.result()\n"
        "    except hetflow.DependencyError as error:\n"
        "        print('reader:', str(error)[:60], len(str(error)) > 1000, flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert "reader: dependency " in output and " True" in output, output
    assert "UnicodeDecodeError" not in output and returncode == 0, output


def test_ranks_that_submit_different_work_are_told_so_with_hetflow_mpi_check():
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "x = hm.register(np.zeros(4), owner=0)\n"
        "y = hm.register(np.zeros(4), owner=hm.size() - 1)\n"
        "run = hetflow.task_submit.options(executor='thread')\n"
        "for i in range(3):\n"
        "    run(lambda a, b: a.__iadd__(b), hetflow.RW(y), x)\n"
        "extra = None\n"
        "if hm.rank() == 0:\n"  # one task more, which waits for y from a rank that never sends it
        "    extra = run(lambda a, b: a.__iadd__(b), hetflow.RW(x), y)\n"
        "try:\n"
        "    hm.wait_all()\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank {hm.rank()}: {error}', flush=True)\n"
        "if extra is not None:\n"
        "    try:\n"
        "        extra.result(timeout=5)\n"
        "        print('the extra task ran', flush=True)\n"
        "    except hetflow.DependencyError as error:\n"
        "        print(f'extra task: {error}', flush=True)\n"
        "try:\n"
        "    hm.wait_all()\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank {hm.rank()} again: {error}', flush=True)\n"
    )
    returncode, output = _run_program(program, HETFLOW_MPI_CHECK="1")
    for rank in range(2):
        assert f"rank {rank}: hetflow::mpi: the ranks did not submit the same work" in output, output
        assert f"rank {rank} again: " in output and "cannot be used any more" in output, output
    # The task that waited for a transfer the other rank never makes fails, saying why, and the
    # program ends (the runtime waited for that task for ever).
    assert "extra task: " in output and "never came from rank 1" in output, output
    assert returncode == 0 and "time limit" not in output, output


def test_ranks_that_submit_different_functions_of_one_name_are_told_so_with_hetflow_mpi_check():
    # Each rank adds to y with a lambda of its own (on its own line): the same name, other code.
    # The check compared a function's name only, so the ranks went on as if they did the same.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "x = hm.register(np.ones(4), owner=0)\n"
        "y = hm.register(np.zeros(4), owner=0)\n"
        "run = hetflow.task_submit.options(executor='thread')\n"
        "add = lambda a, b: a.__iadd__(b)\n"
        "same = lambda a, b: a.__iadd__(b)\n"
        "run(add, hetflow.RW(y), x)\n"
        "run(same if hm.rank() == 0 else add, hetflow.RW(y), x)\n"  # another line: told apart
        "try:\n"
        "    hm.wait_all()\n"
        "    print(f'rank {hm.rank()}: same lines unnoticed', flush=True)\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank {hm.rank()}: {error}', flush=True)\n"
    )
    returncode, output = _run_program(program, HETFLOW_MPI_CHECK="1")
    for rank in range(2):
        assert f"rank {rank}: hetflow::mpi: the ranks did not submit the same work" in output, output
        assert "task 1 ('<lambda>'" in output, output
    assert returncode == 0, output
    same_function = program.replace("run(same if hm.rank() == 0 else add", "run(add")
    returncode, output = _run_program(same_function, HETFLOW_MPI_CHECK="1")
    for rank in range(2):
        assert f"rank {rank}: same lines unnoticed" in output, output


def test_the_ranks_still_there_compare_their_work_when_one_has_ended_with_hetflow_mpi_check():
    # Rank 2 returns early; rank 0 submits a task more, which waits for y from rank 1. The check
    # left every rank out of the comparison once one had ended: rank 0 waited for y as long as
    # rank 1 lived, and was then told only that ranks 1 and 2 had ended.
    program = (
        "import time, numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "x = hm.register(np.ones(4), owner=0, name='x')\n"
        "y = hm.register(np.ones(4), owner=1, name='y')\n"
        "if hm.rank() == 2:\n"
        "    raise SystemExit(0)\n"
        "if hm.rank() == 0:\n"
        "    hetflow.task_submit.options(executor='thread')(lambda a, b: a.__iadd__(b), hetflow.RW(x), y)\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    hm.wait_all()\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank {hm.rank()} after {time.monotonic() - start:.0f} s: {error}', flush=True)\n"
        "if hm.rank() == 1:\n"
        "    time.sleep(20)\n"  # lives on: rank 0 is told all the same
    )
    returncode, output = _run_program(program, ranks=3, HETFLOW_MPI_CHECK="1")
    for rank in range(2):
        assert re.search(f"rank {rank} after [0-9] s: hetflow::mpi: the ranks did not submit the same work", output), output
    assert "task 0 (" in output and "task or call 0, which this rank did not make" in output, output
    assert returncode == 0 and "time limit" not in output, output


@pytest.mark.parametrize(
    "alone, told",
    [
        ("hm.gather(b, root=0)", "call 1 (get_on of 'b' (tag 1) to rank 0) here"),
        ("hm.flush(a)", "call 1 (flush of 'a' (tag 0)) here"),
        ("hm.set_reduction(a, np.add)", "call 1 (set_reduction of 'a' (tag 0)) here"),
    ],
    ids=["gather", "flush", "set_reduction"],
)
def test_a_call_only_one_rank_makes_is_told_on_every_rank_with_hetflow_mpi_check(alone, told):
    # Rank 0 alone gathers b (it waited for ever for data rank 1 never sends, rank 1 for ever in
    # wait_all), or flushes, or sets a reduction (its table of where the data are, or its tags,
    # then apart from rank 1's): nothing compared these calls.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.ones(4), owner=0, name='a')\n"
        "b = hm.register(np.zeros(4), owner=1, name='b')\n"
        "hetflow.task_submit.options(executor='thread')(lambda y, x: y.__iadd__(x), hetflow.RW(b), a)\n"
        "try:\n"
        "    if hm.rank() == 0:\n"
        f"        {alone}\n"
        "    hm.wait_all()\n"
        "    print(f'rank {hm.rank()}: unnoticed', flush=True)\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank {hm.rank()}: {error}', flush=True)\n"
    )
    returncode, output = _run_program(program, HETFLOW_MPI_CHECK="1")
    for rank in range(2):
        assert f"rank {rank}: hetflow::mpi: the ranks did not submit the same work" in output, output
    assert told in output and "task or call 1, which this rank did not make" in output, output
    assert returncode == 0 and "time limit" not in output, output


@pytest.mark.parametrize(
    "call",
    ["hm.gather(x, root=0)", "hm.wait_all()", "hm.flush(x)", "hm.register(np.zeros(2), owner=0)"],
    ids=["gather", "wait_all", "flush", "register"],
)
def test_a_call_every_rank_makes_is_refused_inside_a_task(call):
    # Made inside a task, which runs on one rank only: that rank's table of where the data are
    # (or its tags) parted from the others' (a gather waited for data nobody sends), and with
    # HETFLOW_MPI_CHECK its comparison of the ranks' work crossed the one of the program's own
    # wait_all: the rank aborted (std::length_error in the transport's thread) or hung.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.ones(4), owner=0, name='a')\n"
        "b = hm.register(np.zeros(4), owner=1, name='b')\n"
        "def inside(x):\n"
        f"    {call}\n"
        "task = hetflow.task_submit.options(executor='thread')(inside, hetflow.RW(a))\n"
        "hm.wait_all()\n"
        "if hm.rank() == 0:\n"
        "    try:\n"
        "        task.result()\n"
        "    except RuntimeError as error:\n"
        "        print(f'task: {error}', flush=True)\n"
        "print(f'rank {hm.rank()} done', flush=True)\n"
    )
    returncode, output = _run_program(program, HETFLOW_MPI_CHECK="1")
    assert "task: hetflow.mpi." in output and "cannot be called inside a task" in output, output
    assert "rank 0 done" in output and "rank 1 done" in output, output
    assert returncode == 0 and "time limit" not in output and not _crashed_ranks(output), output


def test_a_reduction_whose_combine_returns_a_new_array_fails_instead_of_dropping_contributions():
    # `lambda into, c: into + c` computed each sum and dropped it: rank 0's total silently left
    # out the contributions of the other ranks ([1.0, 1.0, 1.0] instead of [2.0, 2.0, 2.0]).
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "t = hm.register(np.zeros(3), owner=0, name='t')\n"
        "hm.set_reduction(t, lambda into, c: into + c, neutral=0.0)\n"
        "for r in range(hm.size()):\n"
        "    hm.task_submit(lambda x: x.__iadd__(1.0), hetflow.REDUX(t), on=r, executor='thread')\n"
        "try:\n"
        "    hm.gather(t, root=0)\n"
        "    if hm.rank() == 0:\n"
        "        print(f't = {t.tolist()}', flush=True)\n"
        "except hetflow.DependencyError as error:\n"
        "    print(f'gather: {error}', flush=True)\n"
        "hm.wait_all()\n"
    )
    returncode, output = _run_program(program)
    assert "t = " not in output, output
    assert "gather: " in output and "returned a new array instead of updating `into` in place" in output, output
    assert returncode == 0, output


def test_a_reduction_set_again_combines_earlier_contributions_the_way_they_were_made():
    # Each rank contributes rank + 1 under numpy.add, then, after the reduction is set to
    # numpy.minimum, 10 * (rank + 1): the first ones add up (3 on two ranks), and the later ones
    # leave that sum as the smallest. Combining the first ones with minimum would give 1; rank
    # 1's copy kept across the change (not set to the new neutral) would give 2.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "t = hm.register(np.zeros(2), owner=0, name='t')\n"
        "def contribute(x, value):\n"
        "    np.add(x, value, out=x) if value < 10 else np.minimum(x, value, out=x)\n"
        "hm.set_reduction(t, np.add)\n"
        "for r in range(hm.size()):\n"
        "    hm.task_submit(contribute, hetflow.REDUX(t), float(r + 1), on=r, executor='thread')\n"
        "hm.set_reduction(t, np.minimum, neutral=np.inf)\n"
        "for r in range(hm.size()):\n"
        "    hm.task_submit(contribute, hetflow.REDUX(t), 10.0 * (r + 1), on=r, executor='thread')\n"
        "hm.gather(t, root=0)\n"
        "if hm.rank() == 0:\n"
        "    print(f't = {t.tolist()}', flush=True)\n"
        "hm.wait_all()\n"
    )
    returncode, output = _run_program(program)
    assert "t = [3.0, 3.0]" in output, output
    assert returncode == 0 and not _crashed_ranks(output), output


def test_an_executor_of_its_own_refuses_distributed_arrays_and_takes_plain_ones():
    # A hetflow.Executor starts a runtime that knows nothing of the ranks: each rank ran the task
    # on its own copies, rank 0 reading its x that was never sent ([-5.0] * 3) and writing y
    # there, so the owner-computes y ([1.0] * 3) was silently lost.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "x = hm.register(np.full(3, 1.0) if hm.rank() == 1 else np.full(3, -5.0), owner=1, name='x')\n"
        "y = hm.register(np.zeros(3), owner=0, name='y')\n"
        "def add(out, a):\n"
        "    out += a\n"
        "with hetflow.Executor(2, executor='thread') as ex:\n"
        "    try:\n"
        "        ex.submit(add, hetflow.RW(y), x).result()\n"
        "    except ValueError as error:\n"
        "        print(f'rank {hm.rank()}: {error}', flush=True)\n"
        "    plain = np.zeros(3)\n"
        "    ex.submit(add, hetflow.RW(plain), np.ones(3)).result()\n"
        "hm.wait_all()\n"
        "hm.gather(y, root=0)\n"
        "print(f'rank {hm.rank()}: plain = {plain.tolist()}, y = {y.tolist()}', flush=True)\n"
        "hm.wait_all()\n"
    )
    returncode, output = _run_program(program)
    for rank in range(2):
        assert f"rank {rank}: hetflow: this array is distributed with hetflow.mpi" in output, output
    assert "rank 0: plain = [1.0, 1.0, 1.0], y = [0.0, 0.0, 0.0]" in output, output
    assert returncode == 0, output


@pytest.mark.parametrize(
    "elsewhere",
    [
        "np.zeros(24, np.float32)",
        "np.zeros((4, 3))",
        "np.zeros((3, 4), order='F')",
        "np.zeros(12, np.int64)",
        "np.zeros((3, 4), np.int64)",  # the same layout, another kind of number
    ],
)
def test_arrays_of_another_shape_dtype_or_order_elsewhere_are_told_with_hetflow_mpi_check(elsewhere):
    # Rank 1 registers the same number of bytes as rank 0's (3, 4) float64 array, shaped otherwise:
    # each rank would read the other's bytes as garbage.
    output = _told_apart_by_the_check(
        f"a = hm.register(np.zeros((3, 4)) if hm.rank() == 0 else {elsewhere}, owner=0)\n"
        "hetflow.task_submit.options(executor='thread')(lambda x: x.fill(1), hetflow.W(a))\n"
    )
    if "int64" in elsewhere and "(3, 4)" in elsewhere:  # each rank's message names its own dtype
        assert "over float64" in output and "over int64" in output, output


@pytest.mark.parametrize(
    "differs",
    [
        "a = hm.register(np.arange(4.0), owner=hm.rank())\nrun = hetflow.task_submit.options(executor='thread')\n",
        "a = hm.register(np.arange(4.0), owner=0)\n"
        "run = hetflow.task_submit.options(executor='thread', priority=5 * hm.rank())\n",
    ],
    ids=["owner", "priority"],
)
def test_ranks_that_disagree_on_an_owner_or_a_priority_are_told_with_hetflow_mpi_check(differs):
    # Each rank took itself for the owner of `a` (each read its own copy: a wrong result), or gave
    # the task another priority: neither was compared.
    _told_apart_by_the_check(
        differs
        + "out = hm.register(np.zeros(1), owner=1)\n"
        "run(lambda x, o: o.__setitem__(0, x.sum()), a, hetflow.W(out))\n"
    )


def _told_apart_by_the_check(submissions: str) -> str:
    """Runs ``submissions`` (which differ between the two ranks) and wait_all with
    HETFLOW_MPI_CHECK=1; checks that each rank is told the work differs; returns the output."""
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        + submissions
        + "try:\n"
        "    hm.wait_all()\n"
        "    print(f'rank {hm.rank()}: unnoticed', flush=True)\n"
        "except hetflow.HetflowError as error:\n"
        "    print(f'rank {hm.rank()}: {error}', flush=True)\n"
    )
    returncode, output = _run_program(program, HETFLOW_MPI_CHECK="1")
    for rank in range(2):
        assert f"rank {rank}: hetflow::mpi: the ranks did not submit the same work" in output, output
    assert returncode == 0, output
    return output


def _crashed_ranks(output: str) -> list:
    """The processes whose crash (a segmentation fault) Open MPI reported, but for mpirun's own:
    its PMIx server may crash as it finalizes after ranks aborted, which is not the ranks'."""
    reports: dict = {}
    for line in output.splitlines():
        report = re.match(r"\[[^\]:]+:(\d+)\] (.*)", line)
        if report:
            reports.setdefault(report.group(1), []).append(report.group(2))
    crashed = [
        pid
        for pid, lines in reports.items()
        if any("Segmentation fault" in line for line in lines)
        and not any("orte_finalize" in line or "/mpirun" in line for line in lines)
    ]
    return crashed + (["python"] if "Fatal Python error" in output else [])


def test_finalizing_mpi_with_transfers_in_flight_says_so():
    # The program finalizes MPI itself before waiting: the transport's next MPI call crashed
    # inside MPI, or MPI aborted without a word on why.
    _mpirun_or_skip(needs_mpi4py=True)
    code, output = _run_program(
        """
import time
from mpi4py import MPI
import numpy as np
import hetflow, hetflow.mpi as hm
hm.init(MPI.COMM_WORLD)
x = hm.register(np.full(1000, 3.0) if hm.rank() == 0 else np.zeros(1000), owner=0)
y = hm.register(np.zeros(1000), owner=1)
def slow_copy(dst, src):
    time.sleep(0.5)
    dst[...] = src
hetflow.task_submit.options(executor="thread")(slow_copy, hetflow.W(y), x)
MPI.Finalize()
time.sleep(2)
"""
    )
    assert code != 0, output
    assert "the program finalized MPI (MPI_Finalize) while rank" in output, output
    assert not _crashed_ranks(output), output


@pytest.mark.parametrize("ends_hetflow_first", [False, True])
def test_finalizing_mpi_after_the_work_asks_to_end_hetflow_first(ends_hetflow_first):
    # The work is done, but the context still lives (it keeps a receive of its own posted): told
    # so, rather than counted as a transfer in flight; after hetflow.shutdown() MPI.Finalize is fine.
    _mpirun_or_skip(needs_mpi4py=True)
    code, output = _run_program(
        f"""
from mpi4py import MPI
import numpy as np
import hetflow, hetflow.mpi as hm
hm.init(MPI.COMM_WORLD)
x = hm.register(np.full(10, 3.0) if hm.rank() == 0 else np.zeros(10), owner=0)
y = hm.register(np.zeros(10), owner=1)
def copy(dst, src):
    dst[...] = src
hetflow.task_submit.options(executor="thread")(copy, hetflow.W(y), x)
hm.wait_all()
if {ends_hetflow_first}:
    hetflow.shutdown()
MPI.Finalize()
print("finalized")
"""
    )
    if ends_hetflow_first:
        assert code == 0, output
        assert output.count("finalized") == 2, output
    else:
        assert code != 0, output
        assert "was still alive (its work was done): end every Context before MPI_Finalize" in output, output
        assert "in Python call hetflow.shutdown()" in output, output
        assert not _crashed_ranks(output), output


def test_a_function_with_a_set_of_strings_is_the_same_work_on_every_rank_with_hetflow_mpi_check():
    # `mode in {"alpha", ...}` compiles to a frozenset constant, which printed its strings in the
    # order of their hashes, seeded per process: the ranks' checksums of one function differed,
    # and every rank was told that they did not submit the same work.
    program = (
        "import numpy as np, hetflow, hetflow.mpi as hm\n"
        "hm.init()\n"
        "a = hm.register(np.ones(3), owner=0, name='a')\n"
        "b = hm.register(np.zeros(3), owner=1, name='b')\n"
        "def f(out, src, mode):\n"
        "    if mode in {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'}:\n"
        "        out += src + (1, frozenset({'x', 'y', 'z'}))[0]\n"
        "hetflow.task_submit(f, hetflow.RW(b), a, 'beta')\n"
        "hm.wait_all()\n"
        "hm.gather(b, root=0)\n"
        "print(f'rank {hm.rank()}: b = {b.tolist()}', flush=True)\n"
        "hm.wait_all()\n"
    )
    for _ in range(2):  # each rank a hash seed of its own: two runs, for the odds of a seed alike
        returncode, output = _run_program(program, HETFLOW_MPI_CHECK="1", PYTHONHASHSEED="random")
        assert "did not submit the same work" not in output, output
        assert "rank 0: b = [2.0, 2.0, 2.0]" in output and returncode == 0, output


# The start of the programs with device tasks: hetflow with PoCL's device on every rank, and a
# codelet `inc(x, v)` (x += v) whose OpenCL implementation fails for a negative v.
_INCREMENT_ON_DEVICES = (
    "import numpy as np, hetflow, hetflow.mpi as hm\n"
    "hetflow.init(opencl='all')\n"
    "hm.init()\n"
    "SOURCE = '__kernel void inc(__global double *x, double v) { x[get_global_id(0)] += v; }'\n"
    "def inc_cpu(x, v):\n"
    "    x += v\n"
    "def inc_opencl(x, v):\n"
    "    if v < 0:\n"
    "        raise ValueError('negative increment')\n"
    "    hetflow.opencl_kernel(x, SOURCE, 'inc')(x.queue, x.shape, None, x.data, np.float64(v))\n"
    "inc = hetflow.Codelet('inc', cpu=inc_cpu, opencl=inc_opencl)\n"
)


def test_after_wait_all_a_rank_reads_and_writes_directly_what_its_device_tasks_wrote():
    # wait_all left a device's version on the device: rank 1 read the old zeros directly, and its
    # direct write was lost, the next task reading the device's copy. A failed writer's array
    # stays as it is, its failure reaching the rank that gathers it.
    opencl_or_skip()
    program = (
        _INCREMENT_ON_DEVICES
        + "a = hm.register(np.zeros(4), owner=1, name='a')\n"
        "failed = hm.register(np.zeros(4), owner=1, name='failed')\n"
        "hetflow.insert(inc, hetflow.RW(a), 3.0, where='opencl')\n"
        "hetflow.insert(inc, hetflow.RW(failed), 2.0, where='opencl')\n"
        "hetflow.insert(inc, hetflow.RW(failed), -1.0, where='opencl')\n"
        "hm.wait_all()\n"
        "if hm.rank() == 1:\n"
        "    print(f'rank 1: a = {a.tolist()}', flush=True)\n"
        "    a[:] = 10.0\n"
        "hm.flush(a)\n"
        "hetflow.insert(inc, hetflow.RW(a), 1.0, where='opencl')\n"
        "hm.gather(a, root=0)\n"
        "print(f'rank {hm.rank()}: a = {a.tolist()}', flush=True)\n"
        "try:\n"
        "    hm.gather(failed, root=0)\n"
        "    print(f'rank {hm.rank()}: failed = {failed.tolist()}', flush=True)\n"
        "except hetflow.DependencyError as error:\n"
        "    print(f'rank {hm.rank()}: gather failed: {error}', flush=True)\n"
        "hm.wait_all()\n"
    )
    returncode, output = _run_program(program)
    assert "rank 1: a = [3.0, 3.0, 3.0, 3.0]" in output, output
    assert "rank 0: a = [11.0, 11.0, 11.0, 11.0]" in output, output
    assert "rank 0: gather failed: " in output and "negative increment" in output, output
    assert returncode == 0 and not _crashed_ranks(output), output


def test_a_rank_that_exits_while_its_device_tasks_run_sends_what_they_wrote():
    # At exit, weakref.finalize's handler (which runs before hetflow's) told the engine that every
    # array was gone: what the device wrote never came home, and rank 1 sent the array's old
    # values, which rank 0 read as good data.
    opencl_or_skip()
    program = (
        _INCREMENT_ON_DEVICES
        + "a = hm.register(np.zeros(4), owner=1, name='a')\n"
        "b = hm.register(np.zeros(4), owner=0, name='b')\n"
        "for _ in range(3):\n"
        "    hetflow.insert(inc, hetflow.RW(a), 1.0, where='opencl')\n"
        "reader = hetflow.task_submit.options(executor='thread')(lambda x, y: x.__iadd__(y), hetflow.RW(b), a)\n"
        "if hm.rank() == 1:\n"
        "    raise SystemExit(0)\n"  # at once, its device tasks still running: the exit waits for them
        "try:\n"
        "    hm.wait_all()\n"
        "except hetflow.HetflowError:\n"
        "    pass\n"  # rank 1 ended without wait_all
        "reader.result(timeout=30)\n"
        "print(f'b = {b.tolist()}', flush=True)\n"
    )
    returncode, output = _run_program(program)
    assert "b = [3.0, 3.0, 3.0, 3.0]" in output, output
    assert returncode == 0 and "time limit" not in output, output
