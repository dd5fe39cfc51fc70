"""Performance models: what hetflow has measured of each task symbol, as a table or a plot.

A model holds, per architecture and data size, the count, mean, standard deviation, min, max and
a robust estimate of the measured times, plus a regression ``t = a * size**b + c`` per
architecture. Models live in ``$HETFLOW_HOME/perfmodels/<symbol>.model`` (default
``~/.hetflow``); the format is described in docs/perfmodels.md.

    python -m hetflow perfmodel list
    python -m hetflow perfmodel show SYMBOL
    python -m hetflow perfmodel plot SYMBOL [-o FILE]

The process keeps one model per symbol (and ``HETFLOW_HOME``), read from disk on first use;
measurements reach the disk with ``save_all()`` (the runtime also saves at shutdown, and what
``record`` measured is saved at interpreter exit).
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Dict, List, Optional, Tuple

from hetflow._errors import SettingTypeError

__all__ = [
    "ARCHS",
    "directory",
    "entries",
    "expected",
    "fit",
    "list_models",
    "perfmodel_plot",
    "record",
    "save_all",
    "show",
]

ARCHS = ("cpu", "cuda", "opencl", "process")

Entry = Dict[str, Any]
Fit = Tuple[float, float, float, bool]


def _engine() -> Any:
    from hetflow import _hetflow  # the extension loads on first use, not at import

    return _hetflow


def directory() -> str:
    """Where models are stored: ``$HETFLOW_HOME/perfmodels`` (default ``~/.hetflow/perfmodels``)."""
    return _engine().perfmodel_directory()


def list_models() -> List[str]:
    """The symbols with a model on disk (in ``directory()``) or measured by this process, sorted."""
    return list(_engine().perfmodel_list())


# The longest run a model records (PerfModel::kLongestRun): squares of longer ones would overflow
# the deviation kept in the file.
LONGEST_RUN = 1e9


# The largest size a model keeps (sizes are unsigned 64-bit integers in the engine and the file).
LARGEST_SIZE = 2**64 - 1


def check_size(size: Any, where: str = "hetflow: size") -> int:
    """``size`` as an int when it is a valid model size: an int or a numpy integer (not a bool)
    from 0 to 2**64 - 1. Raises TypeError for other types and ValueError out of that range;
    ``where`` names the argument in the message (e.g. ``"hetflow.perfmodel.record: size"``)."""
    if type(size) is bool or not isinstance(size, numbers.Integral):
        raise TypeError(
            f"{where} must be a whole number (an int or a numpy integer, not a bool) from 0 to 2**64 - 1, "
            f"not {type(size).__name__} {size!r}"
        )
    value = int(size)
    if not 0 <= value <= LARGEST_SIZE:
        raise ValueError(f"{where} must be a whole number from 0 to 2**64 - 1, not {value}")
    return value


def check_names(where: str, symbol: Any, arch: Any = "cpu") -> None:
    """TypeError, naming ``where``, unless ``symbol`` and ``arch`` are strings (the bindings' own
    message listed their internal signature: ``perfmodel_entries(): incompatible function
    arguments``). Their values are checked by the engine (ValueError)."""
    for name, value in (("symbol", symbol), ("arch", arch)):
        if not isinstance(value, str):
            raise TypeError(f"{where}: {name} must be a str, not {type(value).__name__} {value!r}")


def record(symbol: str, arch: str, size: int, seconds: float) -> None:
    """Records one measured run of ``symbol`` on ``arch`` for data of ``size`` (e.g. bytes): an
    int or numpy integer from 0 to 2**64 - 1 (TypeError for other types, bools included;
    ValueError out of range). It reaches the disk with ``save_all()``, at the latest when the
    interpreter exits."""
    check_names("hetflow.perfmodel.record", symbol, arch)
    size = check_size(size, "hetflow.perfmodel.record: size")
    if type(seconds) is bool or not isinstance(seconds, numbers.Real) or not 0 <= seconds <= LONGEST_RUN:
        error = ValueError if isinstance(seconds, numbers.Real) and type(seconds) is not bool else SettingTypeError
        raise error(
            f"hetflow.perfmodel.record: seconds must be a number from 0 to {LONGEST_RUN:g} (about 31 years), "
            f"not {seconds!r}"
        )
    _engine().perfmodel_record(symbol, arch, size, float(seconds))
    _save_at_exit()


_saving_at_exit = False


def _save_at_exit() -> None:
    """Saves at interpreter exit what ``record`` measured: a program that records without a
    runtime (or after its shutdown, which saves) lost its runs unless it called ``save_all()``."""
    global _saving_at_exit
    if _saving_at_exit:
        return
    _saving_at_exit = True
    import atexit

    atexit.register(save_all)  # a no-op for models with nothing new


def entries(symbol: str) -> List[Entry]:
    """One dict per (arch, size): arch, size, count, mean, stddev, min, max, robust (the estimate
    used for predictions), calibrated. Times in seconds."""
    check_names("hetflow.perfmodel.entries", symbol)
    return list(_engine().perfmodel_entries(symbol))


def fit(symbol: str, arch: str) -> Fit:
    """``(a, b, c, valid)`` of ``t = a * size**b + c`` over the calibrated sizes of ``arch``."""
    check_names("hetflow.perfmodel.fit", symbol, arch)
    return tuple(_engine().perfmodel_fit(symbol, arch))


def expected(symbol: str, arch: str, size: int) -> Optional[float]:
    """The predicted seconds, or None while the model cannot tell. ``size`` as for ``record``."""
    check_names("hetflow.perfmodel.expected", symbol, arch)
    return _engine().perfmodel_expected(symbol, arch, check_size(size, "hetflow.perfmodel.expected: size"))


def save_all() -> None:
    """Writes the measurements not yet saved, merged with what other processes saved meanwhile."""
    _engine().perfmodel_save_all()


def format_seconds(seconds: float, micro: str = "us") -> str:
    """A time with a readable unit: ``70.12 ms``, ``190 us`` (``micro`` names microseconds)."""
    if seconds == 0:
        return "0 s"
    # Rounded first, so that 0.99999 ms reads "1 ms", not "1000 us".
    seconds = float(f"{seconds:.4g}")
    for unit, scale in (("s", 1.0), ("ms", 1e-3), (micro, 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds / 1e-9:.4g} ns"


def format_size(size: float) -> str:
    """A size with a decimal suffix: ``512``, ``64k``, ``1.5M``, up to ``18.45E`` for 2**64 - 1
    (sizes are what was recorded: bytes of data for codelets, item counts for some front ends)."""
    # Rounded first, so that 999999 reads "1M", not "1000k"; P and E, so that sizes past 1e15
    # (the axis of a model of huge sizes) read "20P", not "2e+04T".
    size = float(f"{size:.4g}")
    for suffix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(size) >= scale:
            return f"{size / scale:.4g}{suffix}"
    return f"{size:.4g}"


# Exponents closer to 0 than this are shown as 0: the fit of constant data gives b = 0 up to
# rounding (about 1e-16), and n^b differs from 1 by less than 1e-6 * ln(2**64) < 5e-5 below it.
TINY_EXPONENT = 1e-6


def format_exponent(b: float, digits: int = 4) -> str:
    """The exponent ``b`` of a fit for display: ``digits`` significant digits, 0 when it is
    within ``TINY_EXPONENT`` of 0 (so constant data reads ``n^0``, not ``n^-1.34e-16``)."""
    return "0" if abs(b) < TINY_EXPONENT else f"{b:.{digits}g}"


def describe_fit(model_fit: Fit) -> str:
    a, b, c, valid = model_fit
    if not valid:
        return "no regression (it needs 3 or more calibrated sizes with times above 0)"
    return f"t(n) = {a:.4g} * n^{format_exponent(b)} + {format_seconds(c)}"


def _by_arch(rows: List[Entry]) -> Dict[str, List[Entry]]:
    groups: Dict[str, List[Entry]] = {}
    for row in rows:
        groups.setdefault(row["arch"], []).append(row)
    for group in groups.values():
        group.sort(key=lambda row: row["size"])
    return {arch: groups[arch] for arch in ARCHS if arch in groups}


def show(symbol: str) -> str:
    """A readable table of the model of ``symbol``: one line per (arch, size), then the
    regression of each architecture."""
    check_names("hetflow.perfmodel.show", symbol)
    engine = _engine()
    rows = entries(symbol)
    path = os.path.join(directory(), f"{symbol}.model")
    lines = [f"performance model {symbol!r} ({path})"]
    if not rows:
        lines.append("no measurements")
        return "\n".join(lines) + "\n"
    lines.append(f"a size is calibrated after {engine.perfmodel_calibration_samples(symbol)} measurements")
    lines.append("")
    header = ("arch", "size", "count", "estimate", "mean", "stddev", "min", "max", "calibrated")
    table = [header]
    for arch, group in _by_arch(rows).items():
        for row in group:
            table.append(
                (
                    arch,
                    str(row["size"]),
                    str(row["count"]),
                    format_seconds(row["robust"]),
                    format_seconds(row["mean"]),
                    format_seconds(row["stddev"]),
                    format_seconds(row["min"]),
                    format_seconds(row["max"]),
                    "yes" if row["calibrated"] else "no",
                )
            )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    for arch in _by_arch(rows):
        lines.append(f"{arch}: {describe_fit(fit(symbol, arch))}")
    return "\n".join(lines) + "\n"


def _import_matplotlib() -> Tuple[Any, Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        raise ImportError(
            "hetflow.perfmodel_plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from exc
    return Figure, FigureCanvasAgg, FuncFormatter


def _plot_format(path: str, canvas_class: Any) -> str:
    """The image format ``path`` asks for by its suffix (PNG without one); ValueError for a suffix
    matplotlib cannot write."""
    suffix = os.path.splitext(path)[1][1:].lower()
    if not suffix:
        return "png"
    supported = canvas_class.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(
            f"hetflow.perfmodel_plot: cannot write a {suffix!r} file ({path}); the format follows the file's "
            f"suffix, one of {', '.join('.' + name for name in sorted(supported))} (PNG without a suffix)"
        )
    return suffix


def _label_log_axis(axis: Any, text: Any, FuncFormatter: Any) -> None:
    """Tick labels in readable units on a log axis: the decades, plus some of the ticks between
    them when the axis spans little more than a decade (else every label would be a power of ten
    or none at all)."""

    def minor(value: float, _position: Any) -> str:
        low, high = axis.get_view_interval()
        if value <= 0 or low <= 0 or high <= low:
            return ""
        decades = math.log10(high / low)
        coefficient = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        if decades > 1.5 or (decades > 0.6 and coefficient not in (2, 5)):
            return ""
        return text(value)

    axis.set_major_formatter(FuncFormatter(lambda value, _position: text(value)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _power_law(a: float, b: float, c: float, x: float) -> float:
    """``a * x**b + c``, inf where ``x**b`` overflows (a steep fit of large sizes does; the engine's
    estimate is None there)."""
    try:
        return a * x**b + c
    except OverflowError:
        return math.inf


def perfmodel_plot(perfmodel: str, path: Optional[str] = None) -> str:
    """Plots the model of symbol ``perfmodel`` into an image file and returns its path.

    Time against data size per architecture, on log-log axes: the robust estimate of each size
    (filled markers for calibrated sizes, hollow ones for the others), the mean ± standard
    deviation as a band, the min..max range as whiskers, and the fitted ``a * n^b + c`` curve
    when there is one (its exponent shown as 0 when within 1e-6 of 0; where the curve overflows
    over the plotted sizes, the points are joined instead). Sizes and times of 0 cannot be placed
    on a log axis and are left out; an architecture with estimates of 0 says at how many sizes in
    its legend entry.

    ``path`` defaults to ``$HETFLOW_HOME/perfmodels/<symbol>.png`` (that directory is made if need
    be); another path's directory must exist. The format follows its suffix (``.png``, ``.svg``,
    ``.pdf``, ... whatever matplotlib writes; PNG for a path without one). Raises ImportError when
    matplotlib is missing, ValueError when there is nothing to plot or the suffix names a format
    matplotlib cannot write, FileNotFoundError when the directory does not exist and
    IsADirectoryError when ``path`` is a directory (each before writing anything). The figure is
    drawn with the Agg canvas directly, so an application's pyplot backend is left alone.
    """
    check_names("hetflow.perfmodel_plot", perfmodel)
    Figure, FigureCanvasAgg, FuncFormatter = _import_matplotlib()
    rows = [row for row in entries(perfmodel) if row["size"] > 0 and row["max"] > 0]
    if not rows:
        raise ValueError(
            f"performance model {perfmodel!r} has no measurements with a size and a time above 0 to plot "
            f"(on log axes; looked in {directory()})"
        )
    if path is None:
        # hetflow's own directory, made if need be (the models may not have been saved yet).
        path = os.path.join(directory(), f"{perfmodel}.png")
        os.makedirs(directory(), exist_ok=True)
    path = os.fspath(path)
    image_format = _plot_format(path, FigureCanvasAgg)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        # As other tools: a mistyped directory is said, not made.
        raise FileNotFoundError(f"cannot write the plot to {path!r}: there is no directory {parent!r}")
    if os.path.isdir(path):  # said before drawing, not as savefig's bare "[Errno 21] Is a directory"
        raise IsADirectoryError(
            f"cannot write the plot to {path!r}: it is a directory; give a file, such as "
            f"{os.path.join(path, perfmodel + '.png')!r}"
        )

    figure = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colors = {arch: f"C{i}" for i, arch in enumerate(ARCHS)}
    for arch, group in _by_arch(rows).items():
        color = colors[arch]
        sizes = [row["size"] for row in group]
        robust = [row["robust"] for row in group]
        lower = [max(row["mean"] - row["stddev"], row["min"]) for row in group]
        upper = [min(row["mean"] + row["stddev"], row["max"]) for row in group]
        if len(group) > 1:
            axes.fill_between(sizes, lower, upper, color=color, alpha=0.18, linewidth=0)
        else:
            axes.vlines(sizes, lower, upper, color=color, alpha=0.35, linewidth=6)
        # An estimate of 0 (most runs too short to measure) has no place on the log axis.
        calibrated = [(s, r) for s, r, row in zip(sizes, robust, group) if row["calibrated"] and r > 0]
        uncalibrated = [(s, r) for s, r, row in zip(sizes, robust, group) if not row["calibrated"] and r > 0]
        zero_estimates = sum(1 for r in robust if not r > 0)
        runs = sum(row["count"] for row in group)
        label: Optional[str] = f"{arch} ({runs} run{'' if runs == 1 else 's'})"
        if zero_estimates:
            label = (
                f"{arch} ({runs} run{'' if runs == 1 else 's'}; estimate 0 at {zero_estimates} "
                f"size{'' if zero_estimates == 1 else 's'}, not drawn)"
            )
        if calibrated:
            axes.plot(*zip(*calibrated), "o", color=color, label=label)
            label = None
        if uncalibrated:
            axes.plot(*zip(*uncalibrated), "o", color=color, markerfacecolor="none", label=label)
            label = None
        # No marker to show: the legend entry goes to the min..max bars, which are drawn.
        axes.vlines(
            sizes, [row["min"] for row in group], [row["max"] for row in group], color=color, alpha=0.6, label=label,
            zorder=1.9,  # under the markers
        )
        positive = calibrated + uncalibrated
        positive.sort()
        a, b, c, valid = fit(perfmodel, arch)
        if not valid and len(positive) >= 3:
            # Too few runs per size for the model's own fit: fit the points as measured.
            a, b, c, valid = _engine().fit_power_law([float(s) for s, _ in positive], [r for _, r in positive])
        curve_drawn = False
        if valid:
            low, high = min(sizes) / 2, max(sizes) * 2
            steps = 200
            curve_x = [low * (high / low) ** (i / (steps - 1)) for i in range(steps)]
            curve_y = [_power_law(a, b, c, x) for x in curve_x]
            if all(math.isfinite(y) and y > 0 for y in curve_y):
                fit_label = f"{arch} fit: {a:.3g}·n^{format_exponent(b, 3)} + {format_seconds(c, micro='µs')}"
                axes.plot(curve_x, curve_y, "--", color=color, linewidth=1.5, label=fit_label)
                curve_drawn = True
        if not curve_drawn and len(positive) > 1:
            axes.plot(*zip(*positive), color=color, linewidth=1, alpha=0.5)  # no fit: join the points
    times = [t for row in rows for t in (row["min"], row["max"]) if t > 0]
    if times and min(times) == max(times):  # one time throughout: a decade around it, not an empty range
        axes.set_ylim(min(times) / 3, max(times) * 3)
    axes.set_xscale("log")
    axes.set_yscale("log")
    _label_log_axis(axes.xaxis, format_size, FuncFormatter)
    _label_log_axis(axes.yaxis, lambda value: format_seconds(value, micro="µs"), FuncFormatter)
    axes.set_xlabel("data size")
    axes.set_ylabel("time per run")
    axes.set_title(perfmodel, fontsize="large", pad=18)
    axes.text(
        0.5, 1.01, "markers: estimate (hollow: not yet calibrated) · band: mean ± stddev · bars: min to max",
        transform=axes.transAxes, ha="center", va="bottom", fontsize="x-small", color="0.35",
    )
    axes.grid(True, which="major", alpha=0.4)
    axes.grid(True, which="minor", alpha=0.15)
    axes.legend(loc="best", fontsize="small")
    figure.savefig(path, format=image_format, dpi=120)
    return path
