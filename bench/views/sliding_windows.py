"""A long-lived array worked through in overlapping sliding windows, one thread task per window:
the time per task, the views the handle registry keeps and the process's resident memory, block
after block, with the views left unused let go (the default) and with every view kept (as before
they were let go).

    .venv/bin/python bench/views/sliding_windows.py [--tasks N] [--width W] [--blocks B]

Each task adds one to its window (width W, each window one element on from the last); every 8th
task is waited for, as a program that reads results now and then. Prints, per block of N / B
tasks, the microseconds per task, and the views kept and the resident memory (MiB) at the
block's end; checks the array.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import hetflow
from hetflow import _data, _runtime


def resident_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def add_one(window: np.ndarray) -> None:
    window += 1


def run(tasks: int, width: int, blocks: int, keep_all: bool) -> list:
    saved = _data._VIEWS_BEFORE_SWEEP
    if keep_all:
        _data._VIEWS_BEFORE_SWEEP = 1 << 62  # no root ever has that many views: none is let go
    hetflow.init(ncpus=2, executor="thread")
    try:
        registry = _runtime.current().handles
        a = np.zeros(tasks + width)
        rows = []
        per_block = tasks // blocks
        start = 0
        for _ in range(blocks):
            began = time.perf_counter()
            for first in range(start, start + per_block):
                task = hetflow.submit(add_one, hetflow.RW(a[first : first + width]))
                if first % 8 == 7:
                    task.result()
            hetflow.wait_for_all()
            elapsed = time.perf_counter() - began
            root = registry._root_of(a)
            kept = len(root.views) + len(root.resting)
            rows.append((start + per_block, 1e6 * elapsed / per_block, kept, resident_mib()))
            start += per_block
        expected = np.convolve(np.ones(start), np.ones(width))
        if not np.array_equal(a[: start + width - 1], expected):
            raise SystemExit("wrong result")
        return rows
    finally:
        hetflow.shutdown()
        _data._VIEWS_BEFORE_SWEEP = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=4)
    options = parser.parse_args()
    let_go = run(options.tasks, options.width, options.blocks, keep_all=False)
    kept = run(options.tasks, options.width, options.blocks, keep_all=True)
    print(f"{'':>8} {'views left unused let go':>30}   {'every view kept':>30}")
    print(f"{'tasks':>8} {'us/task':>10} {'views':>8} {'RSS MiB':>10}   {'us/task':>10} {'views':>8} {'RSS MiB':>10}")
    for (done, *mine), (_, *theirs) in zip(let_go, kept):
        cells = [f"{us:>10.1f} {views:>8} {rss:>10.1f}" for us, views, rss in (mine, theirs)]
        print(f"{done:>8} {cells[0]}   {cells[1]}")


if __name__ == "__main__":
    main()
