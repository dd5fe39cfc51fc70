"""hetflow run the unusual ways, each in a child interpreter: ``python -c`` and stdin in a
deleted working directory, ``-OO`` (no docstrings), ``-O -W error -X dev`` (worker processes
under the host's flags), ``functools.lru_cache`` functions of ``__main__``, ``python -i`` fed on
stdin (a task's ``input()``), a script run by ``runpy.run_path``."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from hf_subprocess import HANG_S, child_env

PROGRAM = textwrap.dedent(
    """\
    import hetflow

    def add(a, b):
        return a + b

    print(hetflow.task_submit(add, 1, 2).result(timeout=30))
    print(hetflow.task_submit.options(executor="thread")(add, 3, 4).result(timeout=30))
    """
)


def _run(args, cwd, stdin_text=None):
    return subprocess.run(
        [sys.executable, *args],
        cwd=str(cwd),
        env=child_env(),
        input=stdin_text,
        stdin=None if stdin_text is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_S * 3,
    )


def test_dash_c_and_stdin_in_a_deleted_working_directory(tmp_path):
    # sys.path[0] is "" for -c and stdin: the working directory, here gone. The worker processes'
    # sys.path was made from os.getcwd(), which raised FileNotFoundError at the first task.
    gone = tmp_path / "gone"
    # A launcher enters the directory and removes it: the child starts there, as from a shell left in it.
    code = textwrap.dedent(
        """\
        import os, subprocess, sys
        os.chdir(sys.argv[1])
        os.rmdir(sys.argv[1])
        r = subprocess.run(
            [sys.executable, *sys.argv[2:]], input=sys.stdin.read(), text=True, capture_output=True, timeout=60
        )
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        sys.exit(r.returncode)
        """
    )
    for args in (["-c", PROGRAM], ["-"]):
        gone.mkdir()
        proc = _run(["-c", code, str(gone), *args], tmp_path, stdin_text=PROGRAM if args == ["-"] else "")
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stdout.split() == ["3", "7"], (args, proc.stdout, proc.stderr)


def test_bench_help_under_dash_OO(tmp_path):
    # -OO drops docstrings: the command line's description came from the module's __doc__.
    proc = _run(["-OO", "-m", "hetflow.bench", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m hetflow.bench" in proc.stdout


def test_a_program_under_OO_W_error_X_dev_warns_nothing(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    env = child_env()
    env["PYTHONWARNINGS"] = "error"  # the worker processes too
    proc = subprocess.run(
        [sys.executable, "-OO", "-W", "error", "-X", "dev", str(script)],
        cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=HANG_S * 3,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "7"]
    assert "Warning" not in proc.stderr, proc.stderr


LRU_PROGRAM = textwrap.dedent(
    """\
    import functools, hetflow

    @functools.lru_cache(maxsize=None)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    K = 1

    @functools.cache
    def scaled(x):
        return x * K

    def apply(f, x):
        return f(x)

    print(hetflow.task_submit(fib, 30).result(timeout=30))
    print(hetflow.task_submit(scaled, 5).result(timeout=30))
    K = 100  # rebound: the function travels again
    print(hetflow.task_submit(scaled, 5).result(timeout=30))
    print(hetflow.task_submit(apply, fib, 20).result(timeout=30))
    with hetflow.Executor(2) as ex:
        print(sum(ex.map(fib, range(8), chunksize=3)))
    print(fib.cache_info().currsize)  # the host's cache, untouched by the workers
    """
)


def test_lru_cache_functions_of_main_reach_process_workers(tmp_path):
    # functools' wrapper pickles by its name in __main__, which a worker's __main__ lacks
    # ("Can't get attribute 'fib' on <module 'hetflow._worker'>"); it travels by value now.
    for args, stdin_text in ((["-c", LRU_PROGRAM], None), (["-"], LRU_PROGRAM)):
        proc = _run(args, tmp_path, stdin_text=stdin_text)
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stdout.split() == ["832040", "5", "500", "6765", "33", "0"], (args, proc.stdout, proc.stderr)


FLAGS_PROGRAM = textwrap.dedent(
    """\
    import sys, hetflow, warnings

    def probe():
        try:
            warnings.warn("from a task", UserWarning)
            warned = "returned"
        except UserWarning:
            warned = "raised"
        return sys.flags.optimize, sys.flags.dev_mode, sys.flags.bytes_warning, warned

    print(probe())
    print(hetflow.task_submit.options(executor="thread")(probe).result(timeout=30))
    print(hetflow.task_submit(probe).result(timeout=30))
    """
)


def test_worker_processes_run_under_the_hosts_interpreter_flags(tmp_path):
    # As multiprocessing's interpreters do: without them, `python -O -W error` ran process tasks
    # with asserts on and warnings as warnings, unlike thread tasks and the host.
    proc = _run(["-O", "-W", "error", "-X", "dev", "-b", "-c", FLAGS_PROGRAM], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ["(1, True, 1, 'raised')"] * 3, (proc.stdout, proc.stderr)


STDIN_SESSION = textwrap.dedent(
    """\
    import hetflow

    def ask():
        try:
            return input()
        except EOFError:
            return "EOF"

    print(hetflow.task_submit(ask).result(timeout=30))
    print("the host read this line")
    """
)


def test_a_process_task_does_not_read_the_hosts_stdin(tmp_path):
    # `python -i` fed on stdin reads its lines one at a time: a task's input() in a worker took
    # (and buffered) the rest of them, and the host never ran them. Now the task sees EOF.
    proc = _run(["-i", "-q"], tmp_path, stdin_text=STDIN_SESSION)
    assert proc.returncode == 0, proc.stderr
    assert "EOF" in proc.stdout and "the host read this line" in proc.stdout, (proc.stdout, proc.stderr)


RUN_PATH_SCRIPT = textwrap.dedent(
    """\
    import dataclasses, hetflow

    @dataclasses.dataclass
    class Point:
        x: int

    STEP = {}

    def init():
        STEP["by"] = 10

    def shift(p):
        return Point(p.x + STEP.get("by", 1))

    print(hetflow.task_submit(shift, Point(1)).result(timeout=30))
    with hetflow.Executor(2, initializer=init) as ex:
        print(list(ex.map(shift, [Point(2)], chunksize=2)))
    """
)


def test_a_script_run_by_runpy_run_path_without_run_name(tmp_path):
    # Its module is "<run_path>" while it runs, in sys.modules: cloudpickle sent its functions,
    # classes and initializer by reference, and the workers failed with "No module named '<run_path>'".
    (tmp_path / "script.py").write_text(RUN_PATH_SCRIPT)
    proc = _run(["-c", "import runpy; runpy.run_path('script.py')"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Point(x=2)", "[Point(x=12)]"], (proc.stdout, proc.stderr)


def test_joblib_on_the_hetflow_backend_in_a_script_run_by_runpy_run_path(tmp_path):
    # The backend's own pickler sent the script's functions by reference: "No module named
    # '<run_path>'" (so too "__mp_main__" in a multiprocessing child started with spawn).
    (tmp_path / "script.py").write_text(
        textwrap.dedent(
            """
            import functools
            import joblib
            import hetflow.joblib

            def square(x):
                return x * x

            @functools.lru_cache
            def cube(x):
                return x ** 3

            hetflow.joblib.register()
            with joblib.parallel_config(backend="hetflow", n_jobs=2):
                print(joblib.Parallel()(joblib.delayed(square)(j) for j in range(4)))
                print(joblib.Parallel()(joblib.delayed(cube)(j) for j in range(3)))
            """
        )
    )
    proc = _run(["-c", "import runpy; runpy.run_path('script.py')"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[0, 1, 4, 9]", "[0, 1, 8]"], (proc.stdout, proc.stderr)


def test_pythoninspect_is_for_the_host_not_its_workers(tmp_path):
    # Inherited, PYTHONINSPECT made each worker print its SystemExit's traceback as it ended, then
    # start an interactive prompt on the host's stdin.
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM + "hetflow.shutdown()\n")
    env = child_env()
    env["PYTHONINSPECT"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=HANG_S * 3,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["3", "7"], (proc.stdout, proc.stderr)
    assert "SystemExit" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
