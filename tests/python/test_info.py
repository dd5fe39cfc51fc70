"""``python -m hetflow info``: what hetflow would use on this machine, without starting workers."""
from __future__ import annotations

import os
import subprocess
import sys

import hetflow


def info(home, **variables):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETFLOW_")}
    env["HETFLOW_HOME"] = str(home)
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-m", "hetflow", "info"], env=env, capture_output=True, text=True, timeout=60
    )


def fields(stdout):
    lines = stdout.splitlines()
    assert all(": " in line for line in lines), lines
    return dict((label.strip(), value.strip()) for label, value in (line.split(":", 1) for line in lines))


def test_info_shows_version_drivers_workers_and_settings(tmp_path):
    done = info(tmp_path, HETFLOW_NCPUS="3", HETFLOW_NPROCS="1", HETFLOW_SCHED="prio", HETFLOW_EXECUTOR="thread")
    assert done.returncode == 0, done.stderr
    shown = fields(done.stdout)
    assert shown["hetflow"].startswith(hetflow.__version__ + " (Python ")
    assert shown["extension"].endswith((".so", ".pyd")) and os.path.exists(shown["extension"])
    assert shown["drivers"].startswith("cpu (worker threads), process (worker processes)")
    assert shown["cpu workers"] == "3 (HETFLOW_NCPUS)"
    # The thread executor's runtime starts its worker processes only as tasks need them.
    assert shown["process workers"] == "1 (HETFLOW_NPROCS), each started at its first task"
    assert shown["scheduler"].startswith("prio (known: ") and "dmdas" in shown["scheduler"]
    assert shown["executor"] == "thread (HETFLOW_EXECUTOR)"
    assert shown["models"] == f"{tmp_path / 'perfmodels'} (0 models)"
    assert {"topology", "opencl", "cuda", "optional"} <= set(shown)
    assert "joblib" in shown["optional"] and "dask" in shown["optional"]


def test_info_defaults_follow_the_machine(tmp_path):
    done = info(tmp_path)
    assert done.returncode == 0, done.stderr
    shown = fields(done.stdout)
    assert shown["cpu workers"] == f"{len(os.sched_getaffinity(0))} (CPUs usable)"
    assert shown["scheduler"].startswith("ws (")
    assert shown["executor"].endswith("(default)")
    nprocs = len(os.sched_getaffinity(0))
    lazy = ", each started at its first task" if shown["executor"].startswith("thread") else ""
    assert shown["process workers"] == f"{min(nprocs, 1024)}{lazy}"


def test_info_reports_a_bad_variable(tmp_path):
    done = info(tmp_path, HETFLOW_SCHED="fastest")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "bad value" in done.stderr and "unknown scheduler 'fastest'" in done.stderr


def test_info_says_hetflow_once_and_refuses_what_a_runtime_refuses(tmp_path):
    # "hetflow: a HETFLOW_* variable has a bad value: hetflow: HETFLOW_NCPUS=..."
    for variable, value in [("HETFLOW_NCPUS", "1_0"), ("HETFLOW_NPROCS", "+3"), ("HETFLOW_SCHED", "fastest")]:
        done = info(tmp_path, **{variable: value})
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("hetflow: a HETFLOW_* variable has a bad value: ") and f"'{value}'" in done.stderr
        assert done.stderr.count("hetflow:") == 1, done.stderr


def test_info_reports_the_engines_own_variables_as_a_runtime_would(tmp_path):
    # These stopped every runtime from starting while info said nothing wrong.
    for variable, value, said in [("HETFLOW_STATS", "maybe", "not a boolean"), ("HETFLOW_SPIN_US", "1e9", "HETFLOW_SPIN_US")]:
        done = info(tmp_path, **{variable: value})
        assert done.returncode == 1 and said in done.stderr, done.stderr


def test_info_reports_the_device_variables_a_runtime_refuses(tmp_path):
    # A runtime refuses to start over these; info said nothing wrong and exited 0.
    for variable, value, said in [
        ("HETFLOW_NCUDA", "x", "HETFLOW_NCUDA='x' is not a whole number"),
        ("HETFLOW_NCUDA", "99999", "HETFLOW_NCUDA='99999'"),
        ("HETFLOW_OPENCL_DEVICES", "gpus", "unknown device type 'gpus'"),
        ("HETFLOW_OPENCL_DEVICES", "gpu,,cpu", "an empty item"),
        ("HETFLOW_CALIBRATE", "0", "HETFLOW_CALIBRATE='0' is not a whole number from 1 to 1000000"),
        ("HETFLOW_CALIBRATE", "ten", "HETFLOW_CALIBRATE='ten'"),
    ]:
        done = info(tmp_path, **{variable: value})
        assert done.returncode == 1 and said in done.stderr, (variable, value, done.stderr)
        assert done.stderr.startswith("hetflow: a HETFLOW_* variable has a bad value: "), done.stderr
    for value in ("gpu", " gpu , cpu ", "accelerator,all"):
        done = info(tmp_path, HETFLOW_OPENCL_DEVICES=value, HETFLOW_NCUDA="0", HETFLOW_CALIBRATE="1000000")
        assert done.returncode == 0, (value, done.stderr)


def test_info_shows_a_simulated_machine_and_refuses_a_missing_or_damaged_one(tmp_path):
    machine = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "sched_sim", "legacy.json")
    done = info(tmp_path, HETFLOW_SIMULATE=machine)
    assert done.returncode == 0, done.stderr
    shown = fields(done.stdout)
    assert shown["simulation"].startswith(machine) and shown["scheduler"].startswith("dmdas (")
    missing = info(tmp_path, HETFLOW_SIMULATE=str(tmp_path / "none.json"))
    assert missing.returncode == 1 and "HETFLOW_SIMULATE=" in missing.stderr, missing.stderr
    assert "No such file or directory" in missing.stderr, missing.stderr
    directory = info(tmp_path, HETFLOW_SIMULATE=str(tmp_path))
    assert directory.returncode == 1 and "it is a directory, not a regular file" in directory.stderr, directory.stderr
    # A file that is there but is no machine description: said as a runtime would say it (it
    # exited 0 and listed the file as the simulated machine).
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"cpus": "two"}')
    refused = info(tmp_path, HETFLOW_SIMULATE=str(damaged))
    assert refused.returncode == 1 and "damaged.json" in refused.stderr and "cpus" in refused.stderr, refused.stderr
