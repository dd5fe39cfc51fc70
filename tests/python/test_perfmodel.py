"""Performance models from Python: the _hetflow bindings, hetflow.perfmodel (table, plot) and
``python -m hetflow perfmodel``.

The model registry is a process-wide singleton, but it resolves HETFLOW_HOME on every call and
keeps models by file; the ``home`` fixture points HETFLOW_HOME at a fresh directory and calls
``perfmodel_reset()`` (forget the models held in memory) before and after each test.
"""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hetflow import _hetflow, perfmodel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HETFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("HETFLOW_CALIBRATE", raising=False)
    _hetflow.perfmodel_reset()
    yield tmp_path
    _hetflow.perfmodel_reset()


def power_law(a, b, c, n):
    return a * n**b + c


def record_power_law(symbol, arch, a, b, c, sizes, samples=10, noise=0.0, seed=0):
    rng = random.Random(seed)
    for n in sizes:
        for _ in range(samples):
            _hetflow.perfmodel_record(symbol, arch, n, power_law(a, b, c, n) * (1 + rng.gauss(0, noise)))


def cli(home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETFLOW_")}
    env["HETFLOW_HOME"] = str(home)
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, "-m", "hetflow", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_directory_follows_hetflow_home(home):
    assert _hetflow.perfmodel_directory() == str(home / "perfmodels")
    assert perfmodel.directory() == str(home / "perfmodels")


def test_runs_recorded_without_a_runtime_are_saved_at_exit(home):
    # perfmodel.record in a program that starts no runtime (or records after its shutdown): the
    # runs were never written unless the program called save_all().
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETFLOW_")}
    env["HETFLOW_HOME"] = str(home)
    code = "from hetflow import perfmodel\nperfmodel.record('at_exit', 'cpu', 10, 0.25)\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert [(e["size"], e["count"], e["mean"]) for e in perfmodel.entries("at_exit")] == [(10, 1, 0.25)]


def test_record_entries_and_statistics(home):
    for seconds in (1.0, 2.0, 3.0, 4.0):
        _hetflow.perfmodel_record("stats", "cpu", 64, seconds)
    _hetflow.perfmodel_record("stats", "cuda", 128, 0.5)
    entries = _hetflow.perfmodel_entries("stats")
    assert [(e["arch"], e["size"]) for e in entries] == [("cpu", 64), ("cuda", 128)]
    cpu = entries[0]
    assert cpu["count"] == 4
    assert cpu["mean"] == pytest.approx(2.5)
    assert cpu["stddev"] == pytest.approx(math.sqrt(5 / 3))
    assert (cpu["min"], cpu["max"]) == (1.0, 4.0)
    assert cpu["robust"] == pytest.approx(2.5)
    assert cpu["calibrated"] is False
    assert set(cpu) == {"arch", "size", "count", "mean", "stddev", "min", "max", "robust", "calibrated"}


def test_outlier_does_not_move_the_estimate(home):
    rng = random.Random(3)
    for _ in range(20):
        _hetflow.perfmodel_record("outlier", "cpu", 1 << 20, 70e-3 * (1 + rng.gauss(0, 0.005)))
    _hetflow.perfmodel_record("outlier", "cpu", 1 << 20, 190e-6)
    assert _hetflow.perfmodel_expected("outlier", "cpu", 1 << 20) == pytest.approx(70e-3, rel=0.01)


def test_fit_and_expected(home):
    a, b, c = 2e-9, 1.5, 5e-5
    sizes = [1000 * 2**i for i in range(8)]
    record_power_law("gemm", "cpu", a, b, c, sizes, noise=0.01)
    fa, fb, fc, valid = _hetflow.perfmodel_fit("gemm", "cpu")
    assert valid
    assert fb == pytest.approx(b, abs=0.03)
    assert fa == pytest.approx(a, rel=0.3)
    assert fc == pytest.approx(c, rel=0.15)
    # A calibrated size answers its own estimate; another size the regression.
    assert _hetflow.perfmodel_expected("gemm", "cpu", 4000) == pytest.approx(power_law(a, b, c, 4000), rel=0.02)
    assert _hetflow.perfmodel_expected("gemm", "cpu", 3000) == pytest.approx(power_law(a, b, c, 3000), rel=0.02)
    assert perfmodel.fit("gemm", "cpu") == (fa, fb, fc, True)
    # Nothing known about another architecture.
    assert _hetflow.perfmodel_expected("gemm", "cuda", 3000) is None
    assert _hetflow.perfmodel_fit("gemm", "cuda")[3] is False


def test_expected_needs_calibration(home, monkeypatch):
    for _ in range(9):
        _hetflow.perfmodel_record("calib", "cpu", 10, 1e-3)
    assert _hetflow.perfmodel_expected("calib", "cpu", 10) is None
    _hetflow.perfmodel_record("calib", "cpu", 10, 1e-3)
    assert _hetflow.perfmodel_expected("calib", "cpu", 10) == pytest.approx(1e-3)
    monkeypatch.setenv("HETFLOW_CALIBRATE", "2")
    _hetflow.perfmodel_record("calib2", "cpu", 10, 1e-3)
    assert _hetflow.perfmodel_calibration_samples("calib2") == 2
    assert _hetflow.perfmodel_expected("calib2", "cpu", 10) is None
    _hetflow.perfmodel_record("calib2", "cpu", 10, 1e-3)
    assert _hetflow.perfmodel_expected("calib2", "cpu", 10) == pytest.approx(1e-3)


def test_bad_arguments(home):
    with pytest.raises(ValueError, match="unknown architecture 'gpu'"):
        _hetflow.perfmodel_record("ok", "gpu", 1, 1.0)
    for symbol in ("", "a/b", "../up", ".hidden", "with space"):
        with pytest.raises(ValueError, match="symbol"):
            _hetflow.perfmodel_record(symbol, "cpu", 1, 1.0)
    with pytest.raises(TypeError):
        _hetflow.perfmodel_record("ok", "cpu", -1, 1.0)
    for size in (-1, 2**64):
        with pytest.raises(ValueError, match="size must be a whole number"):
            perfmodel.record("ok", "cpu", size, 1.0)
    for size in (1.5, True, "3"):
        with pytest.raises(TypeError, match="size must be a whole number"):
            perfmodel.record("ok", "cpu", size, 1.0)
    # 1e300 s: its square overflowed the file's deviation, and the next load dropped the model.
    for seconds in (-0.1, float("nan"), float("inf"), "1", 1e300):
        with pytest.raises(ValueError, match="seconds must be a number from 0 to 1e"):
            perfmodel.record("ok", "cpu", 1, seconds)
    assert perfmodel.entries("ok") == []  # nothing half-recorded


def test_runs_too_long_to_be_measurements_leave_the_file_readable(home):
    _hetflow.perfmodel_record("long", "cpu", 1, 1e300)  # the engine's own path: ignored
    for _ in range(3):
        _hetflow.perfmodel_record("long", "cpu", 1, 1e-5)
    perfmodel.save_all()
    _hetflow.perfmodel_reset()
    (entry,) = _hetflow.perfmodel_entries("long")
    assert entry["count"] == 3 and entry["max"] == 1e-5


def test_save_and_reload(home):
    record_power_law("saved", "cpu", 1e-9, 1.0, 1e-4, [1000, 10000, 100000])
    _hetflow.perfmodel_record("saved", "process", 0, 0.25)
    before = _hetflow.perfmodel_entries("saved")
    assert not (home / "perfmodels" / "saved.model").exists()
    _hetflow.perfmodel_save_all()
    text = (home / "perfmodels" / "saved.model").read_text()
    assert text.splitlines()[:2] == ["hetflow-perfmodel 1", "symbol saved"]
    _hetflow.perfmodel_reset()
    assert _hetflow.perfmodel_entries("saved") == before
    assert _hetflow.perfmodel_list() == ["saved"]
    assert perfmodel.list_models() == ["saved"]


def test_damaged_file_is_reported_and_ignored(home, capfd):
    directory = home / "perfmodels"
    directory.mkdir()
    bad = directory / "broken.model"
    bad.write_text("hetflow-perfmodel 1\nsymbol broken\ncpu 10 x\n")
    assert _hetflow.perfmodel_entries("broken") == []
    err = capfd.readouterr().err
    assert "warning" in err and f"{bad}:3" in err
    assert "broken" in _hetflow.perfmodel_list()
    # Recording and saving replaces it; the damaged file is kept aside.
    _hetflow.perfmodel_record("broken", "cpu", 10, 1.0)
    _hetflow.perfmodel_save_all()
    assert "broken.model.damaged" in capfd.readouterr().err
    assert (directory / "broken.model.damaged").exists()
    _hetflow.perfmodel_reset()
    assert [e["count"] for e in _hetflow.perfmodel_entries("broken")] == [1]


def test_show_table(home):
    record_power_law("table", "cpu", 1e-9, 1.0, 1e-4, [1000, 10000, 100000])
    _hetflow.perfmodel_record("table", "cuda", 1000, 2e-5)
    text = perfmodel.show("table")
    assert "performance model 'table'" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("arch"))
    for column in ("size", "count", "estimate", "mean", "stddev", "min", "max", "calibrated"):
        assert column in header
    assert any(line.split()[:3] == ["cpu", "10000", "10"] for line in lines)
    assert any(line.startswith("cpu: t(n) = ") for line in lines)
    assert any(line.startswith("cuda: no regression") for line in lines)
    assert "no measurements" in perfmodel.show("empty")


def test_plot_writes_a_png(home):
    record_power_law("plotted", "cpu", 2e-9, 1.5, 5e-5, [1000 * 2**i for i in range(6)], noise=0.02)
    record_power_law("plotted", "cuda", 1e-10, 1.0, 2e-5, [1000, 4000], samples=3)
    path = perfmodel.perfmodel_plot("plotted")
    assert path == str(home / "perfmodels" / "plotted.png")
    data = Path(path).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    custom = home / "custom.png"
    assert perfmodel.perfmodel_plot("plotted", str(custom)) == str(custom)
    assert custom.read_bytes().startswith(PNG_MAGIC)


def test_plot_with_nothing_to_plot(home):
    with pytest.raises(ValueError, match="no measurements"):
        perfmodel.perfmodel_plot("nothing")
    _hetflow.perfmodel_record("size_zero", "cpu", 0, 1.0)
    with pytest.raises(ValueError, match="no measurements"):
        perfmodel.perfmodel_plot("size_zero")


def test_plot_without_matplotlib(home, monkeypatch):
    _hetflow.perfmodel_record("nompl", "cpu", 10, 1.0)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    with pytest.raises(ImportError, match="pip install matplotlib"):
        perfmodel.perfmodel_plot("nompl")


def test_cli_list_show_plot(home):
    record_power_law("clisym", "cpu", 1e-9, 1.0, 1e-4, [1000, 10000, 100000])
    _hetflow.perfmodel_save_all()

    listed = cli(home, "perfmodel", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["clisym"]

    shown = cli(home, "perfmodel", "show", "clisym")
    assert shown.returncode == 0, shown.stderr
    assert "performance model 'clisym'" in shown.stdout and "cpu: t(n) =" in shown.stdout

    out = home / "plot.png"
    plotted = cli(home, "perfmodel", "plot", "clisym", "-o", str(out))
    assert plotted.returncode == 0, plotted.stderr
    assert plotted.stdout.strip() == str(out)
    assert out.read_bytes().startswith(PNG_MAGIC)

    default = cli(home, "perfmodel", "plot", "clisym")
    assert default.returncode == 0, default.stderr
    assert Path(default.stdout.strip()) == home / "perfmodels" / "clisym.png"


def test_cli_plot_into_a_directory_that_does_not_exist(home):
    # It made the directories on the way (even /nonexistent as root) and said nothing.
    _hetflow.perfmodel_record("nodir", "cpu", 100, 1e-3)
    _hetflow.perfmodel_save_all()
    out = home / "missing" / "deeper" / "x.png"
    plotted = cli(home, "perfmodel", "plot", "nodir", "-o", str(out))
    assert plotted.returncode == 1
    assert plotted.stderr == (
        f"hetflow: cannot write the plot to {str(out)!r}: there is no directory {str(out.parent)!r}\n"
    )
    assert not (home / "missing").exists()
    with pytest.raises(FileNotFoundError, match="there is no directory"):
        perfmodel.perfmodel_plot("nodir", str(out))
    assert not (home / "missing").exists()


def test_plot_into_a_path_that_is_a_directory(home):
    # It drew the whole figure, then failed with savefig's bare "[Errno 21] Is a directory: '...'".
    _hetflow.perfmodel_record("isdir", "cpu", 100, 1e-3)
    _hetflow.perfmodel_save_all()
    plotted = cli(home, "perfmodel", "plot", "isdir", "-o", str(home))
    assert plotted.returncode == 1
    assert plotted.stderr == (
        f"hetflow: cannot write the plot to {str(home)!r}: it is a directory; give a file, such as "
        f"{str(home / 'isdir.png')!r}\n"
    )
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        perfmodel.perfmodel_plot("isdir", str(home))


def test_plot_of_a_fit_that_overflows_over_the_plotted_sizes(home, monkeypatch):
    # x**b overflowed to OverflowError; the engine's expected() gives None there.
    figures = _captured_figures(monkeypatch)
    for size, seconds in ((1e15, 1e-6), (2e15, 1e-3), (4e15, 1e3)):
        for _ in range(10):
            perfmodel.record("steep", "cpu", int(size), seconds)
    path = perfmodel.perfmodel_plot("steep", str(home / "steep.png"))
    assert Path(path).read_bytes().startswith(PNG_MAGIC)
    (axes,) = figures[-1].axes
    assert not any("fit" in line.get_label() for line in axes.lines)
    joined = [line for line in axes.lines if len(line.get_xdata()) == 3 and line.get_linestyle() == "-"]
    assert joined, [line.get_label() for line in axes.lines]
    perfmodel.save_all()
    plotted = cli(home, "perfmodel", "plot", "steep", "-o", str(home / "x.png"))
    assert plotted.returncode == 0, plotted.stderr


def test_cli_errors(home):
    missing = cli(home, "perfmodel", "show", "nosuch")
    assert missing.returncode == 1
    assert "no performance model 'nosuch'" in missing.stderr
    outside = cli(home, "perfmodel", "show", "../etc")  # not a model that could be missing
    assert outside.returncode == 1 and "must not start with '.'" in outside.stderr
    assert cli(home, "perfmodel", "plot", "nosuch").returncode == 1
    empty = cli(home, "perfmodel", "list")
    assert empty.returncode == 0 and empty.stdout == "" and "no performance models" in empty.stderr
    for args in ((), ("perfmodel",), ("perfmodel", "frobnicate"), ("perfmodel", "show")):
        usage = cli(home, *args)
        assert usage.returncode == 2, args
        assert "usage:" in usage.stderr


def test_cli_output_that_cannot_be_written(home):
    # More names than a pipe holds, so that the lister is still writing when its reader leaves.
    for index in range(2000):
        perfmodel.record(f"many{index:04d}_{'long' * 20}", "cpu", 100, 1e-3)
    perfmodel.save_all()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETFLOW_")}
    env["HETFLOW_HOME"] = str(home)
    # A reader that leaves early (`| head -1`): no traceback, and a failure status.
    lister = subprocess.Popen(
        [sys.executable, "-m", "hetflow", "perfmodel", "list"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert lister.stdout.readline().startswith(b"many0000_")
    lister.stdout.close()
    errors = lister.stderr.read().decode()
    assert lister.wait(timeout=120) == 1
    assert errors == ""
    if os.access("/dev/full", os.W_OK):
        with open("/dev/full", "w") as full:
            listed = subprocess.run(
                [sys.executable, "-m", "hetflow", "perfmodel", "list"],
                env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
            )
        assert listed.returncode == 1
        assert "hetflow: the output could not be written: No space left on device" in listed.stderr
        assert "Traceback" not in listed.stderr


def test_cli_damaged_file(home):
    directory = home / "perfmodels"
    directory.mkdir()
    (directory / "junk.model").write_text("not a model\n")
    shown = cli(home, "perfmodel", "show", "junk")
    assert shown.returncode == 1  # nothing could be read from it
    assert "no measurements" in shown.stdout
    assert f"{directory / 'junk.model'}:1" in shown.stderr
    plotted = cli(home, "perfmodel", "plot", "junk")
    assert plotted.returncode == 1 and "no measurements" in plotted.stderr


def busy(seconds):
    import time

    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pass
    return seconds


def test_process_tasks_sent_in_batches_record_the_time_each_took(home):
    """A worker process runs several tasks back to back: each records the time the worker spent
    on it, never less than its own busy loop (the host's reading of the replies does not split
    the time between them)."""
    import hetflow

    hetflow.init(ncpus=2, nprocs=2, executor="process")
    try:
        submit = hetflow.task_submit.options(perfmodel="busy_loop", size=1)
        for _ in range(4):
            assert [f.result(timeout=60) for f in [submit(busy, 0.005) for _ in range(8)]] == [0.005] * 8
    finally:
        hetflow.shutdown()
    entry = perfmodel.entries("busy_loop")[0]
    assert entry["count"] == 32
    assert entry["min"] >= 0.005, entry


# Sizes: one rule for perfmodel.record, perfmodel.expected and the size= task option.

SIZE_RANGE = r"from 0 to 2\*\*64 - 1"


def test_size_rule_is_the_same_everywhere(home):
    import numpy as np

    import hetflow

    for size in (0, 7, np.int64(7), np.uint64(2**64 - 1), 2**64 - 1):
        perfmodel.record("rule", "cpu", size, 1.0)
        assert perfmodel.expected("rule", "cpu", size) is None  # not calibrated yet: no raw TypeError
        hetflow.task_submit.options(perfmodel="rule", size=size)
    assert [(e["size"], e["count"]) for e in perfmodel.entries("rule")] == [(0, 1), (7, 2), (2**64 - 1, 2)]
    refused = [(True, TypeError), (np.bool_(True), TypeError), (1.5, TypeError), ("3", TypeError),
               (np.float64(3), TypeError), (-1, ValueError), (np.int64(-1), ValueError), (2**64, ValueError),
               (2**70, ValueError)]
    for size, error in refused:
        for where, call in (
            ("hetflow.perfmodel.record: size", lambda: perfmodel.record("rule", "cpu", size, 1.0)),
            ("hetflow.perfmodel.expected: size", lambda: perfmodel.expected("rule", "cpu", size)),
            ("hetflow: size", lambda: hetflow.task_submit.options(perfmodel="rule", size=size)),
        ):
            with pytest.raises(error, match=f"^{where} must be a whole number.*{SIZE_RANGE}"):
                call()


def test_size_option_reaches_the_model(home):
    import numpy as np

    import hetflow

    hetflow.init(ncpus=1, nprocs=0, executor="thread")
    try:
        for size in (np.int64(3), 2**64 - 1):
            assert hetflow.task_submit.options(perfmodel="opt", size=size)(len, "ab").result(timeout=60) == 2
        with pytest.raises(ValueError, match=SIZE_RANGE):
            hetflow.task_submit.options(perfmodel="opt", size=2**70)(len, "ab")
        with pytest.raises(TypeError, match="not a bool"):
            hetflow.task_submit.options(perfmodel="opt", size=True)(len, "ab")
    finally:
        hetflow.shutdown()
    assert [(e["size"], e["count"]) for e in perfmodel.entries("opt")] == [(3, 1), (2**64 - 1, 1)]


class _FailingLen:
    def __len__(self):
        raise ValueError("no length today")


class _HugeLen:
    def __len__(self):
        return 2**62


class _TooLongLen:
    def __len__(self):
        return 2**70  # len() raises OverflowError


def _count_args(*args):
    return len(args)


def test_arguments_whose_length_cannot_be_measured(home):
    """An argument whose len() raises counts as 1, as one without a length does; the total of
    huge lengths is capped at 2**64 - 1 instead of reaching the binding as a raw TypeError."""
    import hetflow

    hetflow.init(ncpus=1, nprocs=0, executor="thread")
    try:
        submit = hetflow.task_submit.options(perfmodel="lengths")
        assert submit(_count_args, _FailingLen(), [1, 2]).result(timeout=60) == 2  # 1 + 2
        assert submit(_count_args, _TooLongLen(), "abcd").result(timeout=60) == 2  # 1 + 4
        assert submit(_count_args, *[_HugeLen()] * 5).result(timeout=60) == 5  # capped
    finally:
        hetflow.shutdown()
    assert [(e["size"], e["count"]) for e in perfmodel.entries("lengths")] == [(3, 1), (5, 1), (2**64 - 1, 1)]


# Plots: formats, estimates of 0, the fit's exponent.


def _captured_figures(monkeypatch):
    """Makes perfmodel_plot keep its figures in the returned list (to inspect what was drawn)."""
    Figure, Canvas, Formatter = perfmodel._import_matplotlib()
    figures = []

    class Kept(Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(perfmodel, "_import_matplotlib", lambda: (Kept, Canvas, Formatter))
    return figures


def test_plot_format_follows_the_suffix(home):
    record_power_law("fmt", "cpu", 1e-9, 1.0, 0.0, [10, 100, 1000])
    svg = home / "fmt.svg"
    assert perfmodel.perfmodel_plot("fmt", svg) == str(svg)
    assert b"<svg" in svg.read_bytes()[:400] and not svg.read_bytes().startswith(PNG_MAGIC)
    pdf = home / "fmt.PDF"
    perfmodel.perfmodel_plot("fmt", str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF")
    bare = home / "fmt"
    perfmodel.perfmodel_plot("fmt", str(bare))
    assert bare.read_bytes().startswith(PNG_MAGIC)  # no suffix: PNG
    for name in ("fmt.txt", "fmt.png.bak", "sub/fmt.xyz"):
        with pytest.raises(ValueError, match=r"cannot write a .* file .*\.png.*\.svg"):
            perfmodel.perfmodel_plot("fmt", str(home / name))
        assert not (home / name).exists()
    assert not (home / "sub").exists()  # refused before anything was made


def test_plot_of_zero_estimates_says_so(home, monkeypatch):
    """Estimates of 0 (most runs too short to measure) cannot be drawn on log axes: no marker is
    drawn for them, the legend says how many sizes have one, and its entry is not a marker."""
    figures = _captured_figures(monkeypatch)
    for size in (10, 100, 1000):
        for _ in range(11):
            perfmodel.record("mostly_zero", "cpu", size, 0.0)
        perfmodel.record("mostly_zero", "cpu", size, 0.5)
    assert {e["robust"] for e in perfmodel.entries("mostly_zero")} == {0.0}
    perfmodel.perfmodel_plot("mostly_zero")
    (axes,) = figures[-1].axes
    for line in axes.lines:
        assert all(y > 0 for y in line.get_ydata()), line.get_label()
    legend = axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["cpu (36 runs; estimate 0 at 3 sizes, not drawn)"]
    (handle,) = legend.legend_handles
    assert getattr(handle, "get_marker", lambda: "None")() in ("None", "", None)


@pytest.mark.filterwarnings("error::UserWarning")  # matplotlib's, of a y range of one value
def test_fit_of_constant_data_reads_exponent_0(home, monkeypatch):
    figures = _captured_figures(monkeypatch)
    for size in (10, 100, 1000, 10000):
        for _ in range(10):
            perfmodel.record("flat", "cpu", size, 1e-3)
    a, b, c, valid = perfmodel.fit("flat", "cpu")
    assert valid and abs(b) < 1e-12
    assert "cpu: t(n) = 0.001 * n^0 + 0 s" in perfmodel.show("flat")
    perfmodel.perfmodel_plot("flat")
    texts = [text.get_text() for text in figures[-1].axes[0].get_legend().get_texts()]
    assert "cpu fit: 0.001·n^0 + 0 s" in texts, texts
    assert perfmodel.describe_fit((2.0, 1.5, 0.0, True)).startswith("t(n) = 2 * n^1.5 +")
    for size in (10, 100, 1000, 10000):  # calibrated, but nothing to fit a power law to
        for _ in range(10):
            perfmodel.record("instant", "cpu", size, 0.0)
    assert not perfmodel.fit("instant", "cpu")[3]
    assert "no regression (it needs 3 or more calibrated sizes with times above 0)" in perfmodel.show("instant")
    assert perfmodel.format_exponent(-1.34e-16) == "0" and perfmodel.format_exponent(2e-6) == "2e-06"


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_an_arrays_elements_make_the_size_in_either_executor(home, executor):
    # On the process executor arrays had been replaced by placeholders when the size was taken:
    # every task over arrays was recorded at size 1.
    import numpy as np

    import hetflow

    hetflow.init(ncpus=1, nprocs=1, executor=executor)
    try:
        submit = hetflow.task_submit.options(perfmodel=f"sizes_{executor}")
        submit(len, np.zeros(5)).result(timeout=60)
        submit(len, hetflow.RW(hetflow.zeros(7))).result(timeout=60)
    finally:
        hetflow.shutdown()
    assert sorted(e["size"] for e in perfmodel.entries(f"sizes_{executor}")) == [5, 7]


def test_sizes_and_times_read_well_at_any_scale(home, monkeypatch):
    # Past 1e15 the size axis read "1000T", "1e+04T", "1e+07T"; at a unit's edge "1000k" and
    # "1000 us" where "1M" and "1 ms" were meant.
    assert [perfmodel.format_size(x) for x in (512, 64e3, 1e15, 3e16, 2**64 - 1)] == ["512", "64k", "1P", "30P", "18.45E"]
    assert [perfmodel.format_size(x) for x in (999.99, 999_999, 999_999_999)] == ["1k", "1M", "1G"]
    assert perfmodel.format_seconds(0.0009999999) == "1 ms" and perfmodel.format_seconds(0.07012) == "70.12 ms"
    figures = _captured_figures(monkeypatch)
    for size in (10**15, 10**17, 2**64 - 1):
        for _ in range(10):
            perfmodel.record("huge_sizes", "cpu", size, 1e-3 * size / 1e15)
    perfmodel.perfmodel_plot("huge_sizes")
    figure = figures[-1]
    figure.canvas.draw()
    labels = [text.get_text() for text in figure.axes[0].get_xticklabels() if text.get_text()]
    assert labels and all("e+" not in label and "000" not in label for label in labels), labels
    assert "1P" in labels and "1E" in labels, labels


def test_hand_edited_and_leftover_files_in_the_model_directory(home, capfd):
    directory = home / "perfmodels"
    directory.mkdir()
    # A UTF-8 byte order mark (Notepad's) was "not a hetflow performance model".
    (directory / "bom.model").write_bytes(
        b"\xef\xbb\xbfhetflow-perfmodel 1\r\nsymbol bom\r\ncpu 8 1 0.5 0 0.5 0.5 0.5 1 0.5\r\n"
    )
    # A directory named like a model was listed, and `show` said "no measurements".
    (directory / "dir.model").mkdir()
    # A save killed before its rename left its temporary file for ever.
    (directory / ".bom.model.tmp.4242.0").write_text("partial")
    assert perfmodel.list_models() == ["bom"]
    assert [(e["size"], e["count"], e["mean"]) for e in perfmodel.entries("bom")] == [(8, 1, 0.5)]
    assert "warning" not in capfd.readouterr().err
    perfmodel.record("bom", "cpu", 8, 0.5)
    perfmodel.save_all()
    assert sorted(p.name for p in directory.iterdir()) == [".lock", "bom.model", "dir.model"]
    listed = cli(home, "perfmodel", "list")
    assert listed.returncode == 0 and listed.stdout.split() == ["bom"]


def test_a_symbol_or_arch_that_is_not_a_str_is_said_so(home):
    # The bindings' own TypeError listed their signature: "perfmodel_entries(): incompatible
    # function arguments. The following argument types are supported: ...".
    calls = {
        "hetflow.perfmodel.record: symbol": lambda: perfmodel.record(123, "cpu", 1, 1.0),
        "hetflow.perfmodel.record: arch": lambda: perfmodel.record("s", None, 1, 1.0),
        "hetflow.perfmodel.entries: symbol": lambda: perfmodel.entries(Path("s")),
        "hetflow.perfmodel.fit: arch": lambda: perfmodel.fit("s", 0),
        "hetflow.perfmodel.expected: symbol": lambda: perfmodel.expected(b"s", "cpu", 1),
        "hetflow.perfmodel.show: symbol": lambda: perfmodel.show(None),
        "hetflow.perfmodel_plot: symbol": lambda: perfmodel.perfmodel_plot(1),
    }
    for where, call in calls.items():
        with pytest.raises(TypeError, match=f"^{where} must be a str, not "):
            call()
