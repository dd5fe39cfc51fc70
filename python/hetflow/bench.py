"""Benchmarks, printed as ``<system> <metric> <value>`` lines and ratios, peers in the same run.

    python -m hetflow.bench overhead [--tasks N]   # ns per tiny task: hetflow vs the usual pools
    python -m hetflow.bench scaling [--darts N]    # dartboard pi: 1 worker vs all workers
    python -m hetflow.bench devices [--tasks N] [--n N] [--tile T] [--repeat R]
        # codelets: an OpenCL task vs the same launch in pyopencl; tiled GEMM, dmdas vs each placement

Machines are shared and noisy: compare the ratios of one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import hetflow


def add(a: int, b: int) -> int:
    return a + b


def _report(name: str, metric: str, value: float) -> None:
    print(f"{name} {metric} {value:.0f}", flush=True)


def _check(results: List[int], n: int) -> None:
    if sum(results) != sum(range(n)) + n:
        raise AssertionError("wrong results")


def hetflow_overhead(n: int, executor: str, workers: int) -> float:
    with hetflow.init(ncpus=workers, executor=executor, nprocs=workers if executor == "process" else 0):
        submit = hetflow.task_submit
        [f.result() for f in [submit(add, i, 1) for i in range(4 * workers)]]  # warm the workers
        start = time.perf_counter()
        futures = [submit(add, i, 1) for i in range(n)]
        _check([f.result() for f in futures], n)
        return time.perf_counter() - start


def thread_pool(n: int, workers: int) -> float:
    with cf.ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        futures = [pool.submit(add, i, 1) for i in range(n)]
        _check([f.result() for f in futures], n)
        return time.perf_counter() - start


def process_pool_warm(n: int, workers: int) -> float:
    with cf.ProcessPoolExecutor(workers) as pool:
        list(pool.map(add, range(workers), range(workers)))
        start = time.perf_counter()
        futures = [pool.submit(add, i, 1) for i in range(n)]
        _check([f.result() for f in futures], n)
        return time.perf_counter() - start


def mp_pool(n: int, workers: int) -> float:
    with mp.Pool(workers) as pool:
        start = time.perf_counter()
        _check(pool.starmap(add, [(i, 1) for i in range(n)]), n)
        return time.perf_counter() - start


def incr(x: int) -> int:
    return x + 1


def hetflow_map(n: int, workers: int) -> float:
    with hetflow.init(ncpus=1, executor="process", nprocs=workers):
        hetflow.map(incr, range(4 * workers), chunksize=1)  # warm the workers
        start = time.perf_counter()
        results = hetflow.map(incr, range(n))
        elapsed = time.perf_counter() - start
    _check(results, n)
    return elapsed


def mp_pool_map(n: int, workers: int) -> float:
    with mp.Pool(workers) as pool:
        pool.map(incr, range(4 * workers), chunksize=1)
        start = time.perf_counter()
        results = pool.map(incr, range(n))
        elapsed = time.perf_counter() - start
    _check(results, n)
    return elapsed


def joblib_loky(n: int, workers: int) -> Optional[float]:
    try:
        from joblib import Parallel, delayed
    except ImportError:
        return None
    start = time.perf_counter()
    _check(Parallel(n_jobs=workers)(delayed(add)(i, 1) for i in range(n)), n)
    return time.perf_counter() - start


def joblib_warm(n: int, workers: int, backend: str) -> Optional[float]:
    """One more ``joblib.Parallel`` call on workers already started by a first one."""
    try:
        import joblib
    except ImportError:
        return None
    if backend == "hetflow":
        from hetflow.joblib import register

        hetflow.init(ncpus=workers, executor="process", nprocs=workers)
        register()
    try:
        with joblib.parallel_config(backend=backend, n_jobs=workers):
            _check(joblib.Parallel()(joblib.delayed(add)(i, 1) for i in range(n)), n)  # warm
            start = time.perf_counter()
            _check(joblib.Parallel()(joblib.delayed(add)(i, 1) for i in range(n)), n)
            return time.perf_counter() - start
    finally:
        if backend == "hetflow":
            hetflow.shutdown()


def overhead(n: int) -> None:
    workers = len(os.sched_getaffinity(0))
    ns: Dict[str, float] = {}

    def run(name: str, measure: Callable[[], Optional[float]]) -> None:
        seconds = measure()
        if seconds is None:
            print(f"# {name} skipped: not installed", flush=True)
            return
        ns[name] = seconds / n * 1e9
        _report(name, "ns_per_task", ns[name])

    run("hetflow(thread)", lambda: hetflow_overhead(n, "thread", workers))
    run("hetflow(process)", lambda: hetflow_overhead(n, "process", workers))
    run(f"ThreadPoolExecutor({workers})", lambda: thread_pool(n, workers))
    run(f"ProcessPoolExecutor({workers}),warm", lambda: process_pool_warm(n, workers))
    run(f"multiprocessing.Pool({workers}).starmap,batched", lambda: mp_pool(n, workers))
    run("joblib.Parallel(loky)", lambda: joblib_loky(n, workers))
    # Existing joblib code on hetflow's backend, beside loky, both warm (auto-batched calls).
    run("hetflow-joblib", lambda: joblib_warm(n, workers, "hetflow"))
    run("joblib-loky", lambda: joblib_warm(n, workers, "loky"))
    # One call for many short tasks: hetflow.map chunks them, as Pool.map does (same workers).
    run("hetflow-map", lambda: hetflow_map(n, workers))
    run("multiprocessing-pool-map", lambda: mp_pool_map(n, workers))

    print("# ratios (lower is better for hetflow)")
    pairs = [
        ("hetflow(thread)", f"ThreadPoolExecutor({workers})", "target <= 0.33"),
        ("hetflow(process)", f"ProcessPoolExecutor({workers}),warm", "target <= 0.25"),
        ("hetflow(process)", "joblib.Parallel(loky)", "target < 1"),
        ("hetflow-joblib", "joblib-loky", "target < 1"),
        ("hetflow-map", "multiprocessing-pool-map", "hetflow-map target <= 1500 ns_per_task"),
    ]
    for ours, theirs, target in pairs:
        if ours in ns and theirs in ns:
            print(f"ratio {ours}/{theirs} {ns[ours] / ns[theirs]:.3f} ({target})")


def find_pi(darts: int, rounds: int) -> float:
    """The ePython tutorial's dartboard kernel (pure Python, CPU bound)."""
    from math import pow
    from random import random

    mypi = 0.0
    for _ in range(rounds):
        score = 0.0
        for _ in range(darts):
            x, y = random(), random()
            if pow(x, 2) + pow(y, 2) < 1.0:
                score += 1
        mypi += 4.0 * (score / darts)
    return mypi / rounds


def scaling(darts: int, repeat: int = 3) -> None:
    cores = len(os.sched_getaffinity(0))
    tasks = 4 * cores
    times = {}
    for workers in (1, cores):
        with hetflow.init(ncpus=workers, executor="process", nprocs=workers):
            [f.result() for f in [hetflow.submit(add, i, 1) for i in range(workers)]]  # warm
            runs = []
            for _ in range(repeat):  # the best of a few: the machine is shared
                start = time.perf_counter()
                estimates = [f.result() for f in [hetflow.submit(find_pi, darts, 1) for _ in range(tasks)]]
                runs.append(time.perf_counter() - start)
            times[workers] = min(runs)
        pi = sum(estimates) / len(estimates)
        print(f"hetflow(process,{workers}) seconds {times[workers]:.3f} (best of {repeat}) pi {pi:.4f}", flush=True)
    speedup = times[1] / times[cores]
    print(f"speedup {speedup:.2f} on {cores} cores ({speedup / cores:.2f} x cores; target >= 0.9)")


# -- devices: codelets on OpenCL devices (PoCL's CPU device counts) and GPUs ----------------------

INCREMENT_SOURCE = """
__kernel void increment(__global double *x) { x[get_global_id(0)] += 1.0; }
"""

GEMM_SOURCE = """
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
// One row-major n x n tile: c = a b, or c += a b when accumulate is set.
__kernel void gemm(__global double *c, __global const double *a, __global const double *b, int n, int accumulate) {
    int row = get_global_id(0), col = get_global_id(1);
    double sum = 0.0;
    for (int k = 0; k < n; ++k) sum += a[row * n + k] * b[k * n + col];
    c[row * n + col] = accumulate ? c[row * n + col] + sum : sum;
}
"""

_increment_device: List[Any] = [None]  # the pyopencl.Device the last increment task ran on


def increment_opencl(x: Any) -> None:
    _increment_device[0] = x.queue.device
    hetflow.opencl_kernel(x, INCREMENT_SOURCE, "increment")(x.queue, x.shape, None, x.data)


INCREMENT = hetflow.Codelet("bench_increment", opencl=increment_opencl)


def opencl_unusable() -> Optional[str]:
    """Why OpenCL codelets cannot run here, or None."""
    try:
        import pyopencl

        if not pyopencl.get_platforms():
            return "no OpenCL platform"
        import importlib

        importlib.import_module("hetflow._hetflow_opencl")
    except Exception as error:  # ImportError, or pyopencl's error without a platform
        return str(error)
    return None


def cuda_usable() -> bool:
    try:
        import importlib

        import cupy  # noqa: F401

        return bool(importlib.import_module("hetflow._hetflow_cuda").device_count() > 0)
    except Exception:
        return False


def hetflow_opencl_chain(tasks: int, repeat: int) -> Tuple[float, Any]:
    """Best seconds of ``repeat`` chains of ``tasks`` increments of one array on the OpenCL
    worker, and the device it ran on."""
    import numpy

    # One CPU worker and no worker processes: the chain runs on the OpenCL worker alone, and
    # idle workers would only take cores from it (and from PoCL's threads).
    with hetflow.init(ncpus=1, nprocs=0, executor="thread", opencl="all"):
        x = numpy.zeros(16)
        for _ in range(20):  # builds the program, starts the worker, puts x on the device
            hetflow.insert(INCREMENT, hetflow.RW(x), where="opencl")
        hetflow.wait_for_all()
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(tasks):
                hetflow.insert(INCREMENT, hetflow.RW(x), where="opencl")
            hetflow.wait_for_all()  # also brings x home
            best = min(best, time.perf_counter() - start)
    _check_increments(x, 20 + repeat * tasks, "hetflow")
    return best, _increment_device[0]


def pyopencl_launches(tasks: int, repeat: int, device: Any) -> float:
    """Best seconds of ``repeat`` rounds of ``tasks`` launches of the same kernel on ``device``,
    each waited for, with pyopencl alone."""
    import numpy
    import pyopencl

    context = pyopencl.Context([device])
    queue = pyopencl.CommandQueue(context)
    x = numpy.zeros(16)
    buffer = pyopencl.Buffer(context, pyopencl.mem_flags.READ_WRITE | pyopencl.mem_flags.COPY_HOST_PTR, hostbuf=x)
    kernel = pyopencl.Kernel(pyopencl.Program(context, INCREMENT_SOURCE).build(), "increment")
    for _ in range(20):
        kernel(queue, x.shape, None, buffer).wait()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(tasks):
            kernel(queue, x.shape, None, buffer).wait()
        pyopencl.enqueue_copy(queue, x, buffer).wait()
        best = min(best, time.perf_counter() - start)
    _check_increments(x, 20 + repeat * tasks, "pyopencl")
    return best


def _check_increments(x: Any, count: int, who: str) -> None:
    if not (x == count).all():
        raise AssertionError(f"{who}: wrong results {x[:4]}..., expected {count} everywhere")


_gemm_ran_on: List[str] = []  # the kind of worker of each tile product (list.append is atomic)


def gemm_cpu(c: Any, a: Any, b: Any, accumulate: bool) -> None:
    _gemm_ran_on.append("cpu")
    if accumulate:
        c += a @ b
    else:
        import numpy

        numpy.matmul(a, b, out=c)


def gemm_opencl(c: Any, a: Any, b: Any, accumulate: bool) -> None:
    import numpy

    _gemm_ran_on.append("opencl")
    kernel = hetflow.opencl_kernel(c, GEMM_SOURCE, "gemm")
    kernel(c.queue, c.shape, None, c.data, a.data, b.data, numpy.int32(c.shape[0]), numpy.int32(accumulate))


def gemm_cuda(c: Any, a: Any, b: Any, accumulate: bool) -> None:
    import cupy

    _gemm_ran_on.append("cuda")
    if accumulate:
        c += cupy.matmul(a, b)
    else:
        cupy.matmul(a, b, out=c)


GEMM = hetflow.Codelet("bench_gemm", cpu=gemm_cpu, opencl=gemm_opencl, cuda=gemm_cuda, model="bench_python_gemm")


def tiled_gemm(a: List[List[Any]], b: List[List[Any]], where: Optional[str]) -> List[List[Any]]:
    """C = A B over square tiles, one task per tile product; returns C's tiles once done."""
    import numpy

    count, tile = len(a), a[0][0].shape[0]
    c = [[numpy.full((tile, tile), numpy.nan) for _ in range(count)] for _ in range(count)]
    for i in range(count):
        for j in range(count):
            for k in range(count):
                target = hetflow.RW(c[i][j]) if k else hetflow.W(c[i][j])
                hetflow.insert(GEMM, target, a[i][k], b[k][j], k > 0, where=where, priority=count - k)
    hetflow.wait_for_all()  # also brings C home
    return c


def python_gemm(n: int, tile: int, repeat: int, device_kinds: List[str]) -> Dict[str, float]:
    """Best seconds of ``repeat`` tiled products for dmdas, then for each placement: cpu and
    ``device_kinds`` (a fresh runtime each), every result checked against numpy."""
    import numpy

    rng = numpy.random.default_rng(5)
    a_full, b_full = rng.uniform(-1, 1, (n, n)), rng.uniform(-1, 1, (n, n))
    expected = a_full @ b_full
    count = n // tile

    def tiles(matrix: Any) -> List[List[Any]]:
        return [[numpy.ascontiguousarray(matrix[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile])
                 for j in range(count)] for i in range(count)]

    a, b = tiles(a_full), tiles(b_full)
    seconds: Dict[str, float] = {}
    with one_blas_thread():
        for placement in ["dmdas", "cpu"] + device_kinds:
            seconds[placement] = gemm_placement(placement, a, b, expected, repeat, device_kinds)
    return seconds


def one_blas_thread() -> Any:
    """BLAS on one thread per call while it lasts: each CPU worker runs a tile product of its own,
    and BLAS threads on top of the workers would oversubscribe the cores."""
    try:
        import importlib

        limits = importlib.import_module("threadpoolctl").threadpool_limits
    except ImportError:
        print("# BLAS threads not limited (threadpoolctl is not installed): numpy may oversubscribe the cores")
        return contextlib.nullcontext()
    return limits(limits=1, user_api="blas")


def gemm_placement(placement: str, a: List[List[Any]], b: List[List[Any]], expected: Any, repeat: int,
                   device_kinds: List[str]) -> float:
    """Best seconds of ``repeat`` products with tasks on ``placement`` (dmdas: where it
    chooses), on a fresh runtime with CPU workers and workers for ``device_kinds``."""
    import numpy

    n, tile = expected.shape[0], a[0][0].shape[0]
    where = None if placement == "dmdas" else placement
    runs: List[Tuple[float, str]] = []  # (seconds, where the tile products ran)
    with hetflow.init(executor="thread", sched="dmdas", opencl="all" if "opencl" in device_kinds else False,
                      cuda="cuda" in device_kinds):
        # One product per device kind this placement may use, not timed: builds the programs.
        warm = [numpy.ones((tile, tile)) for _ in range(3)]
        for kind in device_kinds if placement == "dmdas" else [placement] if placement in device_kinds else []:
            hetflow.insert(GEMM, hetflow.W(warm[0]), warm[1], warm[2], False, where=kind)
        hetflow.wait_for_all()
        for _ in range(repeat):
            _gemm_ran_on.clear()
            start = time.perf_counter()
            c = tiled_gemm(a, b, where)
            elapsed = time.perf_counter() - start
            worst = float(numpy.max(numpy.abs(numpy.block(c) - expected)))
            if not worst <= 1e-12 * n:  # also catches NaN: a tile never written
                raise AssertionError(f"{placement} python_gemm: largest error {worst:.2e}")
            ran_on = ", ".join(f"{kind} {_gemm_ran_on.count(kind)}" for kind in sorted(set(_gemm_ran_on)))
            runs.append((elapsed, ran_on))
    best, ran_on = min(runs)
    print(f"{placement} python_gemm_s {best:.4f} (best of {repeat}: "
          f"{' '.join(f'{run:.4f}' for run, _ in runs)}; its tiles on {ran_on})", flush=True)
    return best


def devices(tasks: int, n: int, tile: int, repeat: int) -> None:
    """Python codelets on devices, with a fresh thread-executor runtime per measurement:

    - opencl_task_ns: the cost of one task of a tiny codelet (16 doubles, x[i] += 1) on an
      OpenCL device: a chain of ``tasks`` tasks on one array, each reading and writing it, so
      each waits for the one before it, divided by ``tasks``; beside it the same kernel launched
      and waited for (event.wait()) ``tasks`` times with pyopencl alone on the same device. Both
      warm (program built, worker started, array on the device), the final copy home included,
      best of ``repeat`` rounds.
    - python_gemm_s: a tiled matrix product (n x n, tiles of ``tile``; numpy, a naive OpenCL
      kernel, CuPy) with dmdas choosing where each tile product runs, then forced to each kind
      of worker. dmdas runs first and learns the ``bench_python_gemm`` model (in
      ``$HETFLOW_HOME``) over its ``repeat`` runs; best of ``repeat`` for each. numpy's BLAS runs
      on one thread per call (with threadpoolctl, when installed): one tile product per CPU worker.
    """
    no_opencl = opencl_unusable()
    ratios = []
    if no_opencl is None:
        ours, device = hetflow_opencl_chain(tasks, repeat)
        theirs = pyopencl_launches(tasks, repeat, device)
        print(f"# opencl device: {device.name.strip()} ({device.platform.name.strip()})", flush=True)
        _report("hetflow", "opencl_task_ns", ours / tasks * 1e9)
        _report("pyopencl", "opencl_task_ns", theirs / tasks * 1e9)
        ratios.append(f"hetflow/pyopencl opencl_task ratio {ours / theirs:.3f} (target <= 2)")
    else:
        print(f"# opencl skipped: {no_opencl}", flush=True)
    device_kinds = (["opencl"] if no_opencl is None else []) + (["cuda"] if cuda_usable() else [])
    seconds = python_gemm(n, tile, repeat, device_kinds)
    best_static = min(["cpu"] + device_kinds, key=lambda placement: seconds[placement])
    ratio = seconds["dmdas"] / seconds[best_static]
    verdict = "no slower" if ratio <= 1.0 else "slower"
    ratios.append(f"dmdas/best_static python_gemm ratio {ratio:.3f} "
                  f"(best static placement: {best_static}; dmdas {verdict}; target <= 1)")
    print("# ratios (lower is better for hetflow)")
    for line in ratios:
        print(line)


def _positive(text: str) -> int:
    """A whole number of at least 1, for argparse (which says which flag when it is not)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# The command line's description: the docstring's first line (python -OO drops docstrings).
_DESCRIPTION = (__doc__ or "Benchmarks, printed as <system> <metric> <value> lines and ratios").splitlines()[0]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hetflow.bench", description=_DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    over = sub.add_parser("overhead", help="ns per tiny task, hetflow beside the usual pools")
    over.add_argument("--tasks", type=_positive, default=20000)
    scale = sub.add_parser("scaling", help="dartboard pi on 1 worker and on all")
    scale.add_argument("--darts", type=_positive, default=400_000)
    dev = sub.add_parser("devices", help="codelets: an OpenCL task beside pyopencl; tiled GEMM, dmdas vs placements")
    dev.add_argument("--tasks", type=_positive, default=2000, help="tiny OpenCL tasks per round")
    dev.add_argument("--n", type=_positive, default=512, help="GEMM matrix size")
    dev.add_argument("--tile", type=_positive, default=128, help="GEMM tile size (divides --n)")
    dev.add_argument("--repeat", type=_positive, default=3, help="rounds of each measurement; the best is reported")
    args = parser.parse_args(argv)
    if args.command == "devices" and args.n % args.tile != 0:
        parser.error(f"devices: --n {args.n} must be a multiple of --tile {args.tile}")
    if args.command == "overhead":
        overhead(args.tasks)
    elif args.command == "devices":
        devices(args.tasks, args.n, args.tile, args.repeat)
    else:
        scaling(args.darts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
