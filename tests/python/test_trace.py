"""Traces and statistics from Python: Runtime(trace=..., stats=...) and HETFLOW_TRACE /
HETFLOW_STATS. The trace is read back as JSON and checked track by track (docs/traces.md)."""
from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from hetflow._runtime import Runtime

ENV_VARS = ("HETFLOW_NCPUS", "HETFLOW_SCHED", "HETFLOW_EXECUTOR", "HETFLOW_NPROCS", "HETFLOW_TRACE", "HETFLOW_STATS")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def square(x):
    return x * x


def run_tasks(runtime: Runtime, executor: str = "thread") -> None:
    futures = [runtime.submit(square, (i,), {}, executor=executor, name="alpha") for i in range(6)]
    futures += [runtime.submit(square, (i,), {}, executor=executor, name="beta \"quoted\"") for i in range(3)]
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(6)] + [i * i for i in range(3)]


def read_trace(path) -> tuple:
    """(track name -> list of complete events on it, process names) of a Chrome trace."""
    with open(path) as f:
        trace = json.load(f)
    names, slices, processes = {}, {}, {}
    for event in trace["traceEvents"]:
        key = (event["pid"], event.get("tid"))
        if event["ph"] == "M":
            if event["name"] == "thread_name":
                names[key] = event["args"]["name"]
            elif event["name"] == "process_name":
                processes[event["pid"]] = event["args"]["name"]
        else:
            assert event["ph"] == "X", event
            assert event["dur"] >= 0 and event["ts"] >= 0, event
            slices.setdefault(key, []).append(event)
    assert set(slices) <= set(names), "slices on tracks without a name"
    return {names[key]: slices.get(key, []) for key in names}, processes


def test_trace_has_a_track_per_worker_and_a_slice_per_task(tmp_path):
    path = tmp_path / "trace.json"
    runtime = Runtime(ncpus=2, executor="thread", nprocs=0, trace=str(path))
    workers = runtime.workers()
    run_tasks(runtime)
    runtime.shutdown()

    tracks, processes = read_trace(path)
    assert processes[1] == "workers"
    expected = {f"worker {wid} ({arch})" for wid, arch, _node in workers}
    assert expected <= set(tracks)
    tasks = Counter(e["name"] for name in expected for e in tracks[name] if e["cat"] == "task")
    assert tasks == {"alpha": 6, 'beta "quoted"': 3}
    for name in expected:
        events = tracks[name]
        assert all("bytes" in e["args"] for e in events if e["cat"] == "task")
        # Tasks and idle slices tile the worker's track from 0 to the end, without gaps.
        top_level, covered = [], 0.0
        for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            if e["ts"] >= covered - 1e-3:
                top_level.append(e)
                covered = e["ts"] + e["dur"]
        assert top_level[0]["ts"] == 0
        for before, after in zip(top_level, top_level[1:]):
            assert after["ts"] == pytest.approx(before["ts"] + before["dur"], abs=1e-3)
            assert not (before["cat"] == "idle" and after["cat"] == "idle")


def test_a_shutdown_that_gives_up_on_a_running_task_still_writes_the_trace(tmp_path):
    # The engine is then never destroyed (a worker is left in the task), which wrote nothing.
    import threading

    path = tmp_path / "trace.json"
    runtime = Runtime(ncpus=2, executor="thread", nprocs=0, trace=str(path))
    release = threading.Event()
    runtime.submit(release.wait, (30,), {}, executor="thread", name="stuck")
    runtime.submit(abs, (-1,), {}, executor="thread", name="quick").result(timeout=30)
    runtime.shutdown(timeout=0.1)
    release.set()
    tracks, _ = read_trace(path)
    names = {e["name"] for events in tracks.values() for e in events if e["cat"] == "task"}
    assert "quick" in names


def test_trace_shows_process_workers(tmp_path):
    path = tmp_path / "trace.json"
    runtime = Runtime(ncpus=1, executor="process", nprocs=1, trace=path)  # a pathlib.Path is fine
    run_tasks(runtime, executor="process")
    runtime.shutdown()
    tracks, _ = read_trace(path)
    process_tracks = [name for name in tracks if name.endswith("(process)")]
    assert len(process_tracks) == 1
    names = Counter(e["name"] for e in tracks[process_tracks[0]] if e["cat"] == "task")
    assert names == {"alpha": 6, 'beta "quoted"': 3}


def test_process_tasks_sent_in_batches_each_have_their_slice_and_count(tmp_path, capfd):
    """Short process tasks go to a worker many in one message; the trace and the statistics
    showed the batch's first task only (17 slices for 200 tasks)."""
    path = tmp_path / "trace.json"
    runtime = Runtime(ncpus=1, executor="process", nprocs=1, trace=path, stats=True)
    futures = [runtime.submit(square, (i,), {}, executor="process", name="short") for i in range(200)]
    assert [f.result(timeout=60) for f in futures] == [i * i for i in range(200)]
    runtime.shutdown()
    tracks, _ = read_trace(path)
    (track,) = [name for name in tracks if name.endswith("(process)")]
    slices = sorted((e for e in tracks[track] if e["cat"] == "task"), key=lambda e: e["ts"])
    assert len(slices) == 200 and {e["name"] for e in slices} == {"short"}
    for before, after in zip(slices, slices[1:]):  # one after the other on the worker's track
        assert before["ts"] + before["dur"] <= after["ts"] + 1, (before, after)  # µs, rounded
    row = re.search(r"^\s*worker 1 \(process\)\s+(\d+)\s", capfd.readouterr().err, re.MULTILINE)
    assert row is not None and int(row.group(1)) == 200


def test_trace_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "env-trace.json"
    monkeypatch.setenv("HETFLOW_TRACE", str(path))
    runtime = Runtime(ncpus=1, executor="thread", nprocs=0)
    run_tasks(runtime)
    runtime.shutdown()
    tracks, _ = read_trace(path)
    assert "worker 0 (cpu)" in tracks


def submit_inside(x):
    import hetflow

    value = hetflow.task_submit.options(name="inner")(square, x).result(timeout=30)
    hetflow.shutdown()  # writes the worker's trace
    return value


def test_a_runtime_started_in_a_worker_process_traces_beside_the_program(tmp_path, monkeypatch):
    path = tmp_path / "trace.json"
    monkeypatch.setenv("HETFLOW_TRACE", str(path))
    runtime = Runtime(ncpus=1, executor="process", nprocs=1)
    assert runtime.submit(submit_inside, (3,), {}, name="outer").result(timeout=30) == 9
    runtime.shutdown()
    names = lambda tracks: {event["name"] for events in tracks.values() for event in events}  # noqa: E731
    program, worker = names(read_trace(path)[0]), names(read_trace(tmp_path / "trace-worker0.json")[0])
    assert "outer" in program and "inner" not in program  # not written over by the worker's
    assert "inner" in worker and "outer" not in worker


def test_stats_on_stderr(capfd):
    runtime = Runtime(ncpus=2, executor="thread", nprocs=0, stats=True)
    run_tasks(runtime)
    runtime.shutdown()
    err = capfd.readouterr().err
    assert "hetflow stats:" in err, err
    counts = {}
    for wid in (0, 1):
        row = re.search(rf"^\s*worker {wid} \(cpu\)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s*$", err, re.MULTILINE)
        assert row is not None, err
        counts[wid] = int(row.group(1))
        assert 0 <= float(row.group(3)) <= 100
    assert sum(counts.values()) == 9, err


def test_code_overrides_the_environment(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HETFLOW_STATS", "1")
    runtime = Runtime(ncpus=1, executor="thread", nprocs=0, stats=False)
    run_tasks(runtime)
    runtime.shutdown()
    assert "hetflow stats" not in capfd.readouterr().err


def test_an_unwritable_trace_is_reported_not_raised(capfd):
    runtime = Runtime(ncpus=1, executor="thread", nprocs=0, trace="/nonexistent-hetflow-dir/trace.json")
    run_tasks(runtime)
    runtime.shutdown()  # does not raise
    assert "cannot write the trace '/nonexistent-hetflow-dir/trace.json'" in capfd.readouterr().err


@pytest.mark.parametrize("kwargs", [{"trace": 5}, {"stats": "yes"}, {"stats": 1}])
def test_bad_trace_settings_raise_value_error(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"hetflow: {name} must be"):
        Runtime(ncpus=1, executor="thread", nprocs=0, **kwargs)


def test_a_task_name_with_a_nul_is_whole_in_the_trace(tmp_path):
    # The trace (and the messages) took the name as a C string: it ended at the NUL.
    path = tmp_path / "trace.json"
    runtime = Runtime(ncpus=1, executor="thread", nprocs=0, trace=str(path))
    assert runtime.submit(square, (2,), {}, name="nul\0inside").result(timeout=30) == 4
    runtime.shutdown()
    tracks, _ = read_trace(path)
    names = {e["name"] for events in tracks.values() for e in events if e["cat"] == "task"}
    assert names == {"nul\\x00inside"}


def _wait_in_slices(runtime: Runtime, seconds: float) -> float:
    # A wait with a deadline lends the worker to a spare thread (as hetflow.dask.get waits).
    future = runtime.submit(time.sleep, (seconds,), {}, name="leaf")
    while True:
        try:
            future.result(timeout=0.01)
            return seconds
        except TimeoutError:
            pass


def test_slices_on_a_track_nest_when_waiting_tasks_overlap(tmp_path):
    # A task that waits lends its worker; the spare runs a task that waits in turn, and the first
    # takes the worker back and ends while the second still runs: their slices overlap without
    # nesting, which one track cannot show (Perfetto reports them misnested). They go on another
    # lane of the worker's track, "worker 0 (cpu) (2)".
    path = tmp_path / "trace.json"
    runtime = Runtime(ncpus=1, executor="thread", nprocs=0, trace=str(path))
    delays = [0.05, 0.2, 0.1, 0.15, 0.05, 0.1]
    futures = [runtime.submit(_wait_in_slices, (runtime, d), {}, name="outer") for d in delays]
    assert [f.result(timeout=30) for f in futures] == delays
    runtime.shutdown()
    tracks, _ = read_trace(path)
    assert all(name.startswith("worker 0 (cpu)") for name in tracks)
    tasks = Counter(e["name"] for events in tracks.values() for e in events if e["cat"] == "task")
    assert tasks == {"outer": 6, "leaf": 6}
    for name, events in tracks.items():
        open_ends: list = []
        for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            while open_ends and open_ends[-1] <= e["ts"] + 1e-3:
                open_ends.pop()
            end = e["ts"] + e["dur"]
            assert not open_ends or end <= open_ends[-1] + 1e-3, f"{name}: {e} overlaps without nesting"
            open_ends.append(end)
