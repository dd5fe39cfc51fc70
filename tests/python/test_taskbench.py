"""The Python Task Bench (bench/taskbench/taskbench.py): small graphs of several patterns through
hetflow's thread and process executors (and Dask's threaded scheduler where dask is installed)
pass their checks and report the graph's totals, and a graph run in the wrong order fails.

The Task Bench core is compiled here from bench/taskbench (core.cpp, capi.cpp) into a temporary
shared library, so that the test runs the current sources; TASKBENCH_LIB names a built one
instead (cmake --build BUILD --target taskbench_capi)."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TASKBENCH = Path(__file__).resolve().parents[2] / "bench" / "taskbench"
SCRIPT = TASKBENCH / "taskbench.py"
HAS_DASK = importlib.util.find_spec("dask") is not None
SYSTEMS = [
    "hetflow-thread",
    "hetflow-process",
    pytest.param(
        "dask",
        marks=pytest.mark.skipif(not HAS_DASK, reason="dask is not installed: the Task Bench dask system is not run"),
    ),
]
GRAPHS = [
    "-steps 6 -width 4 -type stencil_1d -kernel compute_bound -iter 50",
    "-steps 7 -width 8 -type fft -kernel memory_bound -iter 4 -scratch 4096 -sample 4 -output 40",
    "-steps 9 -width 5 -type dom -kernel load_imbalance -iter 100 -imbalance 1.5 -field 3",
    "-steps 8 -width 6 -type random_nearest -radix 5 -fraction 0.5 -field 2",
    "-steps 5 -width 4 -type all_to_all -and -steps 7 -width 3 -type tree -kernel compute_bound -iter 20",
]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> str:
    given = os.environ.get("TASKBENCH_LIB")
    if given:
        return given
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the Task Bench core (set CXX, or TASKBENCH_LIB to a built library)")
    path = tmp_path_factory.mktemp("taskbench") / "libtaskbench_capi.so"
    subprocess.run(
        [compiler, "-std=c++20", "-O1", "-shared", "-fPIC", "-fvisibility=hidden", "-o", str(path),
         str(TASKBENCH / "core.cpp"), str(TASKBENCH / "capi.cpp")],
        check=True,
        timeout=300,
    )
    return str(path)


def run(library: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--lib", library, "--workers", "2", *arguments],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HETFLOW_EXIT_TIMEOUT": "30"},
    )


def totals(output: str) -> dict:
    return {name: int(value) for name, value in re.findall(r"^Total (\w+) (\d+)$", output, re.MULTILINE)}


def expected_totals(library: str, flags: str) -> dict:
    """Tasks and dependencies of the graphs, counted from the core's description of them."""
    sys.path.insert(0, str(TASKBENCH))
    try:
        import taskbench
    finally:
        sys.path.remove(str(TASKBENCH))
    lib = taskbench.load_library(library)
    app = taskbench.create_app(lib, flags.split())
    try:
        graphs = [taskbench.Graph(lib, app, g, with_buffers=False) for g in range(lib.taskbench_graph_count(app))]
        tasks = sum(sum(g.widths) for g in graphs)
        dependencies = sum(len(deps) for g in graphs for step in g.dependencies for deps in step)
    finally:
        lib.taskbench_app_destroy(app)
    return {"Tasks": tasks, "Dependencies": dependencies}


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("flags", GRAPHS)
def test_graph_runs_checked_and_reports(library: str, system: str, flags: str) -> None:
    completed = run(library, "--system", system, *flags.split())
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    found = totals(completed.stdout)
    expected = expected_totals(library, flags)
    assert {name: found.get(name) for name in expected} == expected
    assert re.search(r"^Elapsed Time \S+ seconds$", completed.stdout, re.MULTILINE)
    assert re.search(r"^FLOP/s \S+$", completed.stdout, re.MULTILINE)


@pytest.mark.parametrize("system", SYSTEMS)
def test_graph_run_in_the_wrong_order_fails(library: str, system: str) -> None:
    completed = run(library, "--system", system, "--wrong-order", "-steps", "4", "-width", "4", "-type", "stencil_1d")
    assert completed.returncode == 1, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "a dependency was not respected" in completed.stderr
    assert "Elapsed Time" not in completed.stdout


def test_bad_flag_exits_2(library: str) -> None:
    completed = run(library, "-type", "no_such_pattern")
    assert completed.returncode == 2
    assert "unknown pattern 'no_such_pattern'" in completed.stderr
