"""joblib's own test suite (``joblib.test``, installed with joblib) on the hetflow backend.

joblib parametrizes many of its tests over every registered backend; with hetflow registered
before collection (``joblib_suite/hetflow_joblib_plugin.py``), those run on hetflow. They run in a
child pytest, whose outcome is read back. Left out: the inner loop of ``test_nested_loop`` on
hetflow inside a loky or multiprocessing worker, where nothing imported hetflow to register it
(joblib then says "Invalid backend: hetflow", as it would for any backend a worker never
registered).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("joblib", reason="joblib is an optional dependency")

PLUGIN_DIR = Path(__file__).resolve().parent / "joblib_suite"
# joblib's test ids are awkward to name from outside its package: a -k expression instead.
ON_HETFLOW = "hetflow and not (test_nested_loop and (loky or back_compat_backend))"


def test_joblibs_own_tests_pass_on_the_hetflow_backend(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HETFLOW_")}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), environment.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-p", "hetflow_joblib_plugin", "-p", "no:cacheprovider",
               "--pyargs", "joblib.test", "-k", ON_HETFLOW, "-q", "-rfE", "-W", "ignore::UserWarning"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) >= 50, f"too few of joblib's tests ran on hetflow:\n{output[-3000:]}"
    assert " failed" not in output and " error" not in output, output[-6000:]
