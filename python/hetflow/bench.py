"""Benchmarks, printed as ``<system> <metric> <value>`` lines and ratios, peers in the same run.

    python -m hetflow.bench overhead [--tasks N]   # ns per tiny task: hetflow vs the usual pools
    python -m hetflow.bench scaling [--darts N]    # dartboard pi: 1 worker vs all workers

Machines are shared and noisy: compare the ratios of one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time
from typing import Callable, Dict, List, Optional

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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hetflow.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    over = sub.add_parser("overhead", help="ns per tiny task, hetflow beside the usual pools")
    over.add_argument("--tasks", type=int, default=20000)
    scale = sub.add_parser("scaling", help="dartboard pi on 1 worker and on all")
    scale.add_argument("--darts", type=int, default=400_000)
    args = parser.parse_args(argv)
    if args.command == "overhead":
        overhead(args.tasks)
    else:
        scaling(args.darts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
