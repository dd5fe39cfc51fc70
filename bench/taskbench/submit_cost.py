"""Where the Python thread executor's submission of a Task Bench point goes: the submitting
thread's CPU time per task for each layer of it, from the arguments alone to the public call.

    .venv/bin/python bench/taskbench/submit_cost.py [--tasks N] [--runs R]

Each layer is timed with time.thread_time(), so that other work on the machine counts less
than in wall-clock time; the workers run the tasks meanwhile. Prints the median and the
minimum of the runs, in microseconds per task.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import numpy as np

import hetflow
from hetflow import W, _runtime
from hetflow._future import Future


def point(a: object, b: object, c: object, d: object) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    hetflow.init(ncpus=2, nprocs=0)
    runtime = _runtime.current()
    engine = runtime._engine
    buffers = [np.zeros(8, dtype=np.uint8) for _ in range(4)]
    submit = hetflow.task_submit.options(executor="thread", name="point")
    submit(point, 1, 2, W(buffers[0]), buffers[1]).result()  # the views are met: the cache holds them
    recent = runtime._handles._recent
    n = options.tasks

    def arguments() -> list:
        return [(1, i, W(buffers[i % 4]), buffers[(i + 1) % 4]) for i in range(n)]

    def submit_call_plain() -> list:
        return [engine.submit_call(point, (1, i, 3, 4), recent, "point", 0) for i in range(n)]

    def submit_call_arrays() -> list:
        return [engine.submit_call(point, (1, i, W(buffers[i % 4]), buffers[(i + 1) % 4]), recent, "point", 0)
                for i in range(n)]

    def with_future() -> list:
        return [Future(engine.submit_call(point, (1, i, W(buffers[i % 4]), buffers[(i + 1) % 4]), recent, "point", 0),
                       runtime, "point") for i in range(n)]

    def runtime_submit() -> list:
        return [runtime.submit(point, (1, i, W(buffers[i % 4]), buffers[(i + 1) % 4]), {}, executor="thread",
                               name="point") for i in range(n)]

    def task_submit() -> list:
        return [submit(point, 1, i, W(buffers[i % 4]), buffers[(i + 1) % 4]) for i in range(n)]

    layers: Dict[str, Callable[[], list]] = {
        "arguments (W(a) and the tuple)": arguments,
        "submit_call, plain values": submit_call_plain,
        "submit_call, two arrays": submit_call_arrays,
        "the same and a Future": with_future,
        "Runtime.submit": runtime_submit,
        "task_submit.options(...)(...)": task_submit,
    }
    times: Dict[str, List[float]] = {name: [] for name in layers}
    for _ in range(options.runs):
        for name, layer in layers.items():
            started = time.thread_time()
            made = layer()
            times[name].append(1e6 * (time.thread_time() - started) / n)
            del made
            engine.wait_all(None)
    for name, values in times.items():
        print(f"{name:34s} median {statistics.median(values):6.2f}  min {min(values):6.2f}  us/task")
    hetflow.shutdown()


if __name__ == "__main__":
    main()
