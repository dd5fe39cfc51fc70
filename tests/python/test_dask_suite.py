"""A part of Dask's own test suites (installed with dask) with hetflow.dask.get as the scheduler.

``dask_suite/hetflow_dask_plugin.py`` makes hetflow the default scheduler and the one behind
``scheduler="sync"``, which dask.array's and dask.bag's ``assert_eq`` use; the tests run in a
child pytest, whose outcome is read back. The modules are those that run many graphs quickly
(about a minute on two cores); dask.array's reductions, routines and creation tests pass too, in
several minutes more. Left out (NOT_ON_HETFLOW): tests of which scheduler Dask picks, not of what
it computes, and one that needs pytest-mock.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask", reason="dask is an optional dependency (pip install '.[dask]')")
pytest.importorskip("dask.array", reason="dask.array needs numpy (pip install 'dask[array]')")

PLUGIN_DIR = Path(__file__).resolve().parent / "dask_suite"
MODULES = [
    "dask.tests.test_base",
    "dask.tests.test_delayed",
    "dask.tests.test_callbacks",
    "dask.tests.test_graph_manipulation",
    "dask.tests.test_traceback",
    "dask.bag.tests.test_bag",
    "dask.array.tests.test_array_core",
    "dask.array.tests.test_rechunk",
    "dask.array.tests.test_overlap",
    "dask.array.tests.test_reshape",
    "dask.array.tests.test_atop",
    "dask.array.tests.test_gufunc",
    "dask.array.tests.test_random",
]
NOT_ON_HETFLOW = {
    # compute() of an array and a bag: each names its own default scheduler, and Dask refuses to
    # choose; a scheduler set in dask.config (as here) is used for both instead.
    "test_compute_array_bag": "Dask refuses two default schedulers only when none is configured",
    "test_persist_array_bag": "the same for persist",
    "test_get_scheduler": "asserts that no scheduler is configured",
    # The .partd files of a bag's groupby are left in temporary_directory only by the worker
    # processes of the multiprocessing scheduler (under Dask's threaded scheduler too they are
    # gone once the groupby has been read).
    "test_temporary_directory": "files left behind by the multiprocessing scheduler's workers",
    # Not about the scheduler: needs pytest-mock, which is not a test dependency of hetflow.
    "test_binary_operator_delegation": "uses pytest-mock's mocker fixture",
}
# Also left out: the tests run with scheduler="processes" (Dask's multiprocessing scheduler, not
# hetflow; the slowest of these modules, for worker processes they start).
MIN_PASSED = 1000


def test_dasks_own_tests_pass_on_hetflow(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HETFLOW_")}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), environment.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-p", "hetflow_dask_plugin", "-p", "no:cacheprovider",
               "--basetemp", str(tmp_path / "basetemp"), "--pyargs", *MODULES,
               "-k", "not (processes or " + " or ".join(NOT_ON_HETFLOW) + ")", "-q", "-rfE", "-W", "ignore"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) >= MIN_PASSED, f"too few of Dask's tests ran on hetflow:\n{output[-3000:]}"
    assert " failed" not in output and " error" not in output, output[-6000:]
