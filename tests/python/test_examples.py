"""Every example of the two seed documents runs on hetflow and prints what the documents show."""
from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def run(relative: str, timeout: float = 120, **env: str) -> list:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / relative)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        cwd=EXAMPLES,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.splitlines()


def last_value(lines: list):
    return ast.literal_eval(lines[-1])


@pytest.mark.parametrize(
    "example, hellos, expected",
    [
        ("epython/01_offload.py", 16, [30] * 16),
        ("epython/02_asynchronous.py", 16, [30] * 16),
        ("epython/03_auto.py", 4, [30] * 4),
        ("epython/04_target.py", 2, [30, 30]),
    ],
)
def test_epython_hello_world(example, hellos, expected):
    lines = run(example)
    assert lines.count("Hello World") == hellos
    assert last_value(lines) == expected


def test_epython_multiple_and_single():
    assert last_value(run("epython/05_multiple_single.py")) == [[30] * 8, [-10]]


def test_epython_find_pi():
    line = run("epython/06_find_pi.py")[-1]
    assert line.startswith("Value of PI is ")
    assert abs(float(line.split()[-1]) - math.pi) < 0.2


def test_epython_jacobi_halo_swap_converges():
    lines = run("epython/07_jacobi_halo.py")
    residuals = [float(line.split()[-1]) for line in lines if line.startswith("after ")]
    assert len(residuals) == 4 and residuals == sorted(residuals, reverse=True)
    assert float(lines[-1].split()[-1]) < 1e-3


def test_starpu_task_submit_and_delayed():
    assert run("starpu/01_task_submit.py") == ["3"]
    assert run("starpu/02_delayed.py") == ["3"]


def test_starpu_await():
    assert run("starpu/03_await.py") == ["The result of function is 3"]


def test_starpu_chained_futures():
    assert run("starpu/04_chained_futures.py") == ["The first result is ready!", "The second result is ready!", "2"]


def test_starpu_joblib_generator():
    expected = [float(i) for i in range(10)]
    lines = run("starpu/05_joblib_generator.py")
    assert [ast.literal_eval(line) for line in lines] == [expected, expected]


def test_starpu_joblib_function_list():
    lines = run("starpu/06_joblib_function_list.py")
    assert sorted(lines) == [
        "Example 1: Hello, world!",
        "Example 2: The result of  2 * 3 is 6",
        "Example 3: The result of  1.2 + 2.5 + 3.6 + 4.9 is 12.200000000000001",
        "Example 4: The result of  6 - 2 - 5.9 is -1.9000000000000004 and the result of 6 - 2 is 4",
    ]


def test_starpu_joblib_future():
    blocks = "[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]"
    assert run("starpu/07_joblib_future.py") == [
        f"The result is ready! <_GatheringFuture finished result={blocks}>",
        blocks,
    ]


def test_starpu_joblib_perfmodel(tmp_path):
    lines = run("starpu/08_joblib_perfmodel.py", HETFLOW_HOME=str(tmp_path), HETFLOW_EXAMPLE_MAX_N="3000")
    assert lines[-1].startswith("plot written to ")
    plot = Path(lines[-1].split("plot written to ", 1)[1])
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "perfmodels" / "log.model").exists()


def run_tiled_cholesky(tmp_path, *args: str) -> str:
    """Runs the tiled Cholesky example with its own performance models; returns what it printed."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "tiled_cholesky.py"), "--n", "256", "--tile", "64", "--check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HETFLOW_HOME": str(tmp_path)},
        cwd=EXAMPLES,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "runs: first" in completed.stdout and ": OK" in completed.stdout, completed.stdout
    return completed.stdout


def test_tiled_cholesky_on_cpu_workers(tmp_path):
    output = run_tiled_cholesky(tmp_path, "--where", "cpu", "--repeat", "2")
    assert "workers: cpu," in output and "2 runs:" in output


@pytest.mark.parametrize("placement", [["--where", "opencl"], []], ids=["opencl", "dmdas-chooses"])
def test_tiled_cholesky_with_opencl(tmp_path, placement):
    from hf_opencl import opencl_or_skip

    opencl_or_skip()
    output = run_tiled_cholesky(tmp_path, "--opencl", "--repeat", "2", *placement)
    assert "opencl" in output.splitlines()[0] and "scheduler dmdas" in output
