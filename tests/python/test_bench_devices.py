"""`python -m hetflow.bench devices` at tiny sizes: it runs to the end (the benchmark checks its
own results) and prints each of its lines with a positive number. No timing is judged here."""
import re
import subprocess
import sys

import pytest

from hf_subprocess import child_env
from hf_opencl import opencl_or_skip


def test_devices_benchmark_prints_every_line(tmp_path):
    opencl_or_skip()
    env = child_env()
    env["HETFLOW_HOME"] = str(tmp_path)  # its performance models stay out of the user's
    command = [sys.executable, "-m", "hetflow.bench", "devices", "--tasks", "50", "--n", "64", "--tile", "32",
               "--repeat", "2"]
    try:
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the benchmark hung: {error.stdout!r} {error.stderr!r}")
    assert done.returncode == 0, done.stdout + done.stderr
    expected = [
        "hetflow opencl_task_ns",
        "pyopencl opencl_task_ns",
        "hetflow/pyopencl opencl_task ratio",
        "dmdas python_gemm_s",
        "cpu python_gemm_s",
        "opencl python_gemm_s",
        "dmdas/best_static python_gemm ratio",
    ]
    for prefix in expected:
        found = re.search(rf"^{re.escape(prefix)} ([0-9.]+)\b", done.stdout, re.MULTILINE)
        assert found, f"no line {prefix!r} in:\n{done.stdout}"
        assert float(found.group(1)) > 0, found.group(0)
    assert re.search(r"best static placement: (cpu|opencl|cuda);", done.stdout), done.stdout
