"""Tiled matrix product C = A B over hetflow codelets: numpy on CPU workers, pyopencl on OpenCL
devices, CuPy on GPUs, all over the same tiles (separate contiguous arrays), checked against
numpy. The engine moves the tiles between host and devices; A and B stay where they were used
between runs, as registered data do.

    python examples/python/tiled_gemm.py --n 1024 --tile 256 --opencl --where opencl --check
    python examples/python/tiled_gemm.py --n 16384 --tile 4096 --cuda --where cuda --repeat 3 --cupy
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import hetflow

GEMM_SOURCE = """
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
// C = beta C + A B for row-major n x n tiles.
__kernel void gemm(__global double *c, __global const double *a, __global const double *b, int n, double beta) {
    int i = get_global_id(0), j = get_global_id(1);
    double sum = 0.0;
    for (int k = 0; k < n; ++k) sum += a[i * n + k] * b[k * n + j];
    c[i * n + j] = beta * c[i * n + j] + sum;
}
"""


def gemm_cpu(c, a, b, beta):
    if beta == 0.0:
        np.matmul(a, b, out=c)
    else:
        c += a @ b


def gemm_opencl(c, a, b, beta):
    kernel = hetflow.opencl_kernel(c, GEMM_SOURCE, "gemm")
    kernel(c.queue, c.shape, None, c.data, a.data, b.data, np.int32(c.shape[0]), np.float64(beta))


def gemm_cuda(c, a, b, beta):
    import cupy

    if beta == 0.0:
        cupy.matmul(a, b, out=c)
    else:
        c += cupy.matmul(a, b)


GEMM = hetflow.Codelet("gemm", cpu=gemm_cpu, opencl=gemm_opencl, cuda=gemm_cuda, model="python_gemm")


def tiles_of(matrix: np.ndarray, size: int) -> list:
    count = matrix.shape[0] // size
    return [[np.ascontiguousarray(matrix[i * size:(i + 1) * size, j * size:(j + 1) * size]) for j in range(count)]
            for i in range(count)]


def submit_product(c: list, a: list, b: list, where: str | None) -> None:
    count = len(c)
    for i in range(count):
        for j in range(count):
            for k in range(count):
                hetflow.insert(GEMM, hetflow.RW(c[i][j]), a[i][k], b[k][j], 0.0 if k == 0 else 1.0, where=where,
                               priority=count - k)


def cupy_seconds(a: np.ndarray, b: np.ndarray, repeat: int) -> float:
    import cupy

    a_gpu, b_gpu = cupy.asarray(a), cupy.asarray(b)
    c_gpu = cupy.empty_like(a_gpu)
    best = float("inf")
    for _ in range(repeat + 1):  # one warm-up
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        cupy.matmul(a_gpu, b_gpu, out=c_gpu)
        cupy.cuda.Device().synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--opencl", action="store_true", help="add OpenCL devices (CPU devices too, as PoCL's)")
    parser.add_argument("--cuda", action="store_true", help="add the GPUs")
    parser.add_argument("--where", choices=["cpu", "opencl", "cuda"], help="run every tile product there")
    parser.add_argument("--sched", help="scheduler (default: dmdas with devices)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="compare every entry with numpy (else 64 samples)")
    parser.add_argument("--cupy", action="store_true", help="also time one CuPy matmul of the whole matrices")
    options = parser.parse_args()
    if options.n % options.tile:
        parser.error("--n must be a multiple of --tile")

    rng = np.random.default_rng(1)
    a_full = rng.uniform(-1, 1, (options.n, options.n))
    b_full = rng.uniform(-1, 1, (options.n, options.n))
    a, b = tiles_of(a_full, options.tile), tiles_of(b_full, options.tile)
    c = [[np.empty((options.tile, options.tile)) for _ in row] for row in a]
    flops = 2.0 * options.n**3

    session = hetflow.init(executor="thread", sched=options.sched, opencl="all" if options.opencl else False,
                           cuda=options.cuda)
    workers = sorted(session.worker_kinds - {"process"})
    print(f"tiled_gemm.py: n = {options.n}, tiles of {options.tile}, workers: {', '.join(workers)}, "
          f"scheduler {session.scheduler}, tasks on: {options.where or 'any'}")
    seconds = []
    for _ in range(options.repeat):
        start = time.perf_counter()
        submit_product(c, a, b, options.where)
        hetflow.wait_for_all()  # also brings C home
        seconds.append(time.perf_counter() - start)
    hetflow.shutdown()
    best = min(seconds)
    print(f"{len(seconds)} runs: first {seconds[0]:.4f} s, best {best:.4f} s ({flops / best * 1e-9:.2f} GFLOP/s)")

    product = np.block(c)
    if options.check:
        worst = np.max(np.abs(product - a_full @ b_full))
    else:
        rows, cols = (np.arange(64) * 131) % options.n, (np.arange(64) * 71) % options.n
        expected = np.einsum("ij,ji->i", a_full[rows, :], b_full[:, cols])
        worst = np.max(np.abs(product[rows, cols] - expected))
    ok = worst <= 1e-12 * options.n
    print(f"largest error{'' if options.check else ' on 64 sampled entries'}: {worst:.2e}: {'OK' if ok else 'FAILED'}")
    if options.cupy:
        vendor = cupy_seconds(a_full, b_full, options.repeat)
        print(f"cupy.matmul (one call, whole matrices on the GPU): {vendor:.4f} s, {flops / vendor * 1e-9:.2f} GFLOP/s; "
              f"hetflow tiled (best): {flops / best * 1e-9:.2f} GFLOP/s = {100.0 * vendor / best:.1f}% of it")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
