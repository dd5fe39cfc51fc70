"""Plots Task Bench efficiency against task granularity from the table metg.sh writes."""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)


def plot(table: str, image: str) -> None:
    """Draws efficiency against granularity (log scale), one panel per pattern, one line per system."""
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise SystemExit(f"{table}: no runs")
    largest = max(int(row["iter"]) for row in rows)
    peak: dict[str, float] = defaultdict(float)
    for row in rows:
        if int(row["iter"]) == largest:
            peak[row["pattern"]] = max(peak[row["pattern"]], float(row["flops_per_s"]))
    # In sweep order (largest tasks first): on a busy machine granularity is not monotonic.
    lines: dict[str, dict[str, list[tuple[int, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        efficiency = float(row["flops_per_s"]) / peak[row["pattern"]]
        lines[row["pattern"]][row["system"]].append((-int(row["iter"]), float(row["granularity_us"]), efficiency))
    systems = sorted({row["system"] for row in rows})
    colours = {system: f"C{i}" for i, system in enumerate(systems)}
    highest = max(p[2] for by_system in lines.values() for points in by_system.values() for p in points)

    columns = min(3, len(lines))
    rows_of_panels = math.ceil(len(lines) / columns)
    figure, grid = plt.subplots(
        rows_of_panels, columns, figsize=(max(7, 5 * columns), 3.6 * rows_of_panels + 0.6), squeeze=False, sharey=True
    )
    for axes, (pattern, by_system) in zip(grid.flat, lines.items()):
        for system, points in sorted(by_system.items()):
            points.sort()
            axes.plot(
                [p[1] for p in points], [p[2] for p in points], marker="o", markersize=3,
                color=colours[system], label=system,
            )
        axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        axes.set_xscale("log")
        axes.set_ylim(0, max(1.1, highest * 1.05))
        axes.set_title(pattern)
        axes.set_xlabel("granularity (µs): elapsed × cores / tasks")
        axes.grid(True, which="both", alpha=0.3)
    for axes in grid[:, 0]:
        axes.set_ylabel("efficiency (FLOP/s / peak)")
    for axes in list(grid.flat)[len(lines):]:
        axes.set_visible(False)
    handles, labels = grid[0][0].get_legend_handles_labels()
    grid[0][0].legend(handles, labels, fontsize="small")
    figure.suptitle("Task Bench, compute_bound: METG(50%) is where a line last crosses 0.5")
    figure.tight_layout()
    figure.savefig(image, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: plot_metg.py METG_TSV OUTPUT_PNG")
    plot(sys.argv[1], sys.argv[2])
