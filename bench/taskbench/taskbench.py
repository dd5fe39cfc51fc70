#!/usr/bin/env python3
"""Task Bench from Python: hetflow's Python executors, and Dask's threaded scheduler beside them.

The graphs, the kernels, the checks and the report are not written again here: they are the C++
core's (core.cpp), reached through its C ABI (capi.cpp, built as libtaskbench_capi.so) with
ctypes. This program parses the same flags through the core, learns each step's points and
dependencies from it, and runs every point as a task of the system chosen:

  hetflow-thread   hetflow.task_submit on the thread executor. A task writes (hetflow.W) its
                   point's output buffer and reads (hetflow.R) those it depends on, numpy arrays
                   over the core's own buffers, so hetflow infers the dependencies from the
                   access modes, as taskbench-hetflow does in C++.
  hetflow-process  The same tasks on the process executor: each worker process loads the core
                   itself and runs the point on the copies of the buffers hetflow hands it.
  dask             dask.threaded.get on a graph dict whose edges are the pattern's
                   dependencies (and, when outputs are reused with -field, the write-after-read
                   edges that hetflow infers by itself).

A point's kernel is one foreign call, during which ctypes releases the GIL: the kernels of the
thread executor and of Dask's threads run in parallel, and what remains under the GIL is each
system's own per-task work. The timer covers submitting and running, as in the C++ programs; the
runtime, its workers, Dask's thread pool and hetflow's data handles of the buffers are set up
before it.

Usage: taskbench.py [--system S] [--workers N] [--lib PATH] [--wrong-order] TASK BENCH FLAGS
  --system        hetflow-thread (default), hetflow-process or dask
  --workers N     worker threads or processes (default: the CPUs this process may use)
  --lib PATH      libtaskbench_capi.so (default: $TASKBENCH_LIB, else under $BUILD, else under
                  build/ of this repository, in bench/taskbench/)
  --wrong-order   runs the steps last first (hetflow: submits them so; Dask: reverses the edges),
                  a deliberately wrong graph that the checks must catch (exit status 1)
The Task Bench flags (-steps, -width, -type, -kernel, -iter, -and, ...) are the core's: -h
lists them. Exits 0, 1 when a check failed, 2 on a bad flag.
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

SYSTEMS = ("hetflow-thread", "hetflow-process", "dask")
_MESSAGE_BYTES = 4096

_long = ctypes.c_long
_ptr = ctypes.c_void_p
_SIGNATURES: Dict[str, Tuple[Any, List[Any]]] = {
    "taskbench_app_create": (_ptr, [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
    "taskbench_app_destroy": (None, [_ptr]),
    "taskbench_graph_count": (_long, [_ptr]),
    "taskbench_graph": (_ptr, [_ptr, _long]),
    "taskbench_display": (None, [_ptr, ctypes.c_char_p]),
    "taskbench_report": (ctypes.c_int, [_ptr, ctypes.c_double]),
    "taskbench_steps": (_long, [_ptr]),
    "taskbench_width": (_long, [_ptr]),
    "taskbench_fields": (_long, [_ptr]),
    "taskbench_output_bytes": (_long, [_ptr]),
    "taskbench_offset_at": (_long, [_ptr, _long]),
    "taskbench_width_at": (_long, [_ptr, _long]),
    "taskbench_buffer": (_ptr, [_ptr, _long, _long]),
    "taskbench_step_dependencies": (_long, [_ptr, _long, ctypes.POINTER(_long), ctypes.POINTER(_long), _long]),
    "taskbench_execute_in_place": (None, [_ptr, _long, _long]),
    "taskbench_execute": (None, [_ptr, _long, _long, _ptr, ctypes.POINTER(_ptr), _long]),
    "taskbench_failure_count": (_long, []),
    "taskbench_failure_message": (_long, [_long, ctypes.c_char_p, _long]),
    "taskbench_record_failure": (None, [ctypes.c_char_p]),
}


def default_library() -> str:
    """Where the core's shared library is looked for: $TASKBENCH_LIB, $BUILD, then build/."""
    if os.environ.get("TASKBENCH_LIB"):
        return os.environ["TASKBENCH_LIB"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = os.environ.get("BUILD") or os.path.join(root, "build")
    return os.path.join(build, "bench", "taskbench", "libtaskbench_capi.so")


def load_library(path: str) -> ctypes.CDLL:
    """The core's C ABI; a CDLL, so that every call releases the GIL."""
    try:
        lib = ctypes.CDLL(os.path.abspath(path))
    except OSError as error:
        raise SystemExit(
            f"taskbench.py: cannot load the Task Bench core {path}: {error}\n"
            "  build it (cmake --build BUILD --target taskbench_capi) and pass --lib, TASKBENCH_LIB or BUILD"
        ) from None
    for name, (result, arguments) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = result
        function.argtypes = arguments
    return lib


def create_app(lib: ctypes.CDLL, flags: Sequence[str]) -> int:
    """The core's App for these flags (it exits 2 on a bad flag, as the C++ programs do)."""
    words = [b"taskbench.py", *(flag.encode() for flag in flags)]
    argv = (ctypes.c_char_p * (len(words) + 1))(*words, None)
    sys.stdout.flush()
    app = lib.taskbench_app_create(len(words), argv)
    if not app:
        raise SystemExit(1)
    return app


class Graph:
    """One task graph as the core describes it: its points and dependencies per step, and numpy
    arrays over its output buffers (one array per buffer, so no two share memory)."""

    def __init__(self, lib: ctypes.CDLL, app: int, index: int, with_buffers: bool = True) -> None:
        self.index = index
        self.handle = lib.taskbench_graph(app, index)
        self.steps = lib.taskbench_steps(self.handle)
        self.width = lib.taskbench_width(self.handle)
        self.fields = lib.taskbench_fields(self.handle)
        self.offsets = [lib.taskbench_offset_at(self.handle, t) for t in range(self.steps)]
        self.widths = [lib.taskbench_width_at(self.handle, t) for t in range(self.steps)]
        self.dependencies = [self._step_dependencies(lib, t) for t in range(self.steps)]
        self.buffers: List[List[Any]] = []
        if with_buffers:
            import numpy

            nbytes = lib.taskbench_output_bytes(self.handle)
            self.buffers = [
                [
                    numpy.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(lib.taskbench_buffer(self.handle, f, p)))
                    for p in range(self.width)
                ]
                for f in range(self.fields)
            ]

    def _step_dependencies(self, lib: ctypes.CDLL, step: int) -> List[List[int]]:
        """For each point of ``step`` in order, the points of step - 1 it reads."""
        counts = (_long * max(self.widths[step], 1))()
        capacity = 4 * self.widths[step] + 16
        while True:
            points = (_long * capacity)()
            total = lib.taskbench_step_dependencies(self.handle, step, counts, points, capacity)
            if total <= capacity:
                break
            capacity = total
        flat = points[:total]
        result, at = [], 0
        for k in range(self.widths[step]):
            result.append(flat[at : at + counts[k]])
            at += counts[k]
        return result

    def points(self, step: int) -> range:
        return range(self.offsets[step], self.offsets[step] + self.widths[step])


def step_order(steps: int, wrong_order: bool) -> Sequence[int]:
    return range(steps - 1, -1, -1) if wrong_order else range(steps)


# -- the kernels: one foreign call each (the GIL is released during it) ----------------------------
_execute_in_place: Any = None


def point_in_place(graph: int, step: int, point: int, *buffers: Any) -> None:
    """A task of the thread executor or of Dask: it was handed the graph's own buffers (its output
    first), so the core runs the point on them in place."""
    _execute_in_place(graph, step, point)


# In a worker process: the core and the App of each command line met, loaded at the first task.
_worker_apps: Dict[Tuple[str, Tuple[str, ...]], Tuple[ctypes.CDLL, List[int]]] = {}


def _worker_graphs(lib_path: str, flags: Tuple[str, ...]) -> Tuple[ctypes.CDLL, List[int]]:
    key = (lib_path, flags)
    entry = _worker_apps.get(key)
    if entry is None:
        lib = load_library(lib_path)
        app = create_app(lib, flags)
        entry = _worker_apps[key] = (lib, [lib.taskbench_graph(app, g) for g in range(lib.taskbench_graph_count(app))])
    return entry


def prepare_worker(lib_path: str, flags: Tuple[str, ...]) -> int:
    """Loads the core and builds the graphs in a worker process, before the timer starts."""
    _worker_graphs(lib_path, flags)
    return os.getpid()


def point_in_worker(
    lib_path: str, flags: Tuple[str, ...], graph: int, step: int, point: int, output: Any, *inputs: Any
) -> Optional[List[str]]:
    """A task of the process executor: runs the point on the arrays it was handed (copies, in this
    process) and returns the messages of the checks that failed here, if any, for the host."""
    lib, graphs = _worker_graphs(lib_path, flags)
    before = lib.taskbench_failure_count()
    addresses = (_ptr * max(len(inputs), 1))(*(array.ctypes.data for array in inputs))
    lib.taskbench_execute(graphs[graph], step, point, output.ctypes.data, addresses, len(inputs))
    if lib.taskbench_failure_count() == before:
        return None
    messages = []
    text = ctypes.create_string_buffer(_MESSAGE_BYTES)
    index = before
    while lib.taskbench_failure_message(index, text, _MESSAGE_BYTES) >= 0:
        messages.append(text.value.decode(errors="replace"))
        index += 1
    return messages or [f"task (graph {graph}, step {step}, point {point}) failed a check in worker process {os.getpid()}"]


# -- the systems --------------------------------------------------------------------------------------
def run_hetflow(
    lib: ctypes.CDLL, graphs: List[Graph], executor: str, workers: int, lib_path: str, flags: Tuple[str, ...],
    wrong_order: bool,
) -> Tuple[float, List[str]]:
    import hetflow
    from hetflow import R, W

    if executor == "thread":
        hetflow.init(ncpus=workers, executor="thread", nprocs=0)
        hetflow.task_submit.options(executor="thread")(int, 0).result()  # the workers are up
    else:
        hetflow.init(ncpus=workers, executor="process", nprocs=workers)
        hetflow.offload(prepare_worker)(lib_path, flags)  # every worker process has the graphs
    # Each buffer's data handle is registered before the timer, as the C++ programs do it.
    for g in graphs:
        for generation in g.buffers:
            for buffer in generation:
                hetflow.acquire(buffer, "R").release()
    submit = hetflow.task_submit.options(executor=executor, name="point")
    max_steps = max(g.steps for g in graphs)
    submitted: List[Tuple[Any, int, int, int]] = []

    start = time.perf_counter()
    for t in step_order(max_steps, wrong_order):
        for g in graphs:
            if t >= g.steps:
                continue
            previous = g.buffers[(t - 1) % g.fields]
            own = g.buffers[t % g.fields]
            for point, deps in zip(g.points(t), g.dependencies[t]):
                reads = [R(previous[d]) for d in deps]
                if executor == "thread":
                    future = submit(point_in_place, g.handle, t, point, W(own[point]), *reads)
                else:
                    future = submit(point_in_worker, lib_path, flags, g.index, t, point, W(own[point]), *reads)
                submitted.append((future, g.index, t, point))
    hetflow.wait_for_all()
    elapsed = time.perf_counter() - start

    problems = []
    for future, index, t, point in submitted:
        error = future.exception()
        if error is not None:
            problems.append(f"task (graph {index}, step {t}, point {point}) raised {type(error).__name__}: {error}")
        elif executor == "process":
            problems.extend(future.result() or [])
    hetflow.shutdown()
    return elapsed, problems


def dask_graph(graphs: List[Graph], wrong_order: bool) -> Tuple[dict, list]:
    """The Dask graph: each point a task on the keys of the points it depends on. When a graph
    reuses its output buffers (-field below -steps), a point also waits for the earlier writer of
    its buffer and for that writer's readers; hetflow infers those edges from the access modes."""
    dsk: dict = {}
    keys: list = []
    for g in graphs:
        name = f"point-{g.index}"
        for t in range(g.steps):
            earlier = t - g.fields  # the step that wrote this step's buffers before, if any
            readers: Dict[int, List[int]] = {}
            if earlier >= 0:
                for reader, deps in zip(g.points(earlier + 1), g.dependencies[earlier + 1]):
                    for d in deps:
                        readers.setdefault(d, []).append(reader)
            later = list(g.points(t + 1)) if wrong_order and t + 1 < g.steps else []
            for point, deps in zip(g.points(t), g.dependencies[t]):
                if wrong_order:
                    inputs = [(name, t + 1, q) for q in later]
                    ordering = []
                else:
                    inputs = [(name, t - 1, d) for d in deps]
                    ordering = [(name, earlier + 1, r) for r in readers.get(point, ())]
                    if earlier >= 0 and point in g.points(earlier):
                        ordering.append((name, earlier, point))
                key = (name, t, point)
                dsk[key] = (point_in_place, g.handle, t, point, inputs, ordering)
                keys.append(key)
    return dsk, keys


def run_dask(graphs: List[Graph], workers: int, wrong_order: bool) -> Tuple[float, List[str]]:
    try:
        import dask.threaded
    except ImportError:
        raise SystemExit("taskbench.py: --system dask needs dask (pip install dask)") from None

    dask.threaded.get({"warm-up": (int, 0)}, ["warm-up"], num_workers=workers)  # the pool is up
    problems = []
    start = time.perf_counter()
    try:
        dsk, keys = dask_graph(graphs, wrong_order)
        dask.threaded.get(dsk, keys, num_workers=workers)
    except Exception as error:  # a task raised: the report must fail
        problems.append(f"dask.threaded.get raised {type(error).__name__}: {error}")
    elapsed = time.perf_counter() - start
    return elapsed, problems


# -- the program ----------------------------------------------------------------------------------------
def parse(arguments: Sequence[str]) -> Tuple[str, int, str, bool, List[str]]:
    system, workers, lib_path, wrong_order = "hetflow-thread", 0, default_library(), False
    flags: List[str] = []
    items = list(arguments)
    i = 0
    while i < len(items):
        item = items[i]
        name, _, inline = item.partition("=")
        if name in ("--system", "--workers", "--lib"):
            if inline:
                value = inline
            elif i + 1 < len(items):
                i += 1
                value = items[i]
            else:
                raise SystemExit(f"taskbench.py: {name} needs a value")
            if name == "--system":
                if value not in SYSTEMS:
                    print(f"taskbench.py: unknown system {value!r}; use one of {', '.join(SYSTEMS)}", file=sys.stderr)
                    raise SystemExit(2)
                system = value
            elif name == "--workers":
                if not value.isdigit() or int(value) < 1:
                    print(f"taskbench.py: --workers wants a whole number >= 1, not {value!r}", file=sys.stderr)
                    raise SystemExit(2)
                workers = int(value)
            else:
                lib_path = value
        elif item == "--wrong-order":
            wrong_order = True
        elif item in ("-h", "--help"):
            summary = __doc__.partition("\n\n")[0]
            usage = __doc__.partition("\nUsage: ")[2].partition("\nThe Task")[0]
            print(f"{summary}\n\nusage: {usage}\n")
            flags = ["-h"]
            break
        else:
            flags.append(item)
        i += 1
    if workers == 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return system, workers, os.path.abspath(lib_path), wrong_order, flags


def main(arguments: Sequence[str]) -> int:
    global _execute_in_place
    system, workers, lib_path, wrong_order, flags = parse(arguments)
    lib = load_library(lib_path)
    _execute_in_place = lib.taskbench_execute_in_place
    app = create_app(lib, flags)
    graphs = [Graph(lib, app, index) for index in range(lib.taskbench_graph_count(app))]
    lib.taskbench_display(app, f"{system}, Python, {workers} workers".encode())

    if system == "dask":
        elapsed, problems = run_dask(graphs, workers, wrong_order)
    else:
        executor = system.split("-", 1)[1]
        elapsed, problems = run_hetflow(lib, graphs, executor, workers, lib_path, tuple(flags), wrong_order)
    for problem in problems:
        lib.taskbench_record_failure(problem.encode())
    sys.stdout.flush()
    return lib.taskbench_report(app, elapsed)


if __name__ == "__main__":
    # Run as this module's own name, so that the functions a worker process is sent are found there
    # by name (the workers import it from the host's sys.path, which holds this directory).
    import taskbench

    sys.exit(taskbench.main(sys.argv[1:]))
