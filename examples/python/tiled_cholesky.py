"""Tiled Cholesky factorisation A = L L^T of a random symmetric positive definite matrix over
hetflow codelets: numpy on CPU workers, pyopencl on OpenCL devices, CuPy on GPUs, all over the
tiles of the lower triangle (separate contiguous arrays), checked against numpy. Each step k
factors the diagonal tile (potrf), solves the panel below it (trsm) and updates the trailing
matrix (syrk on diagonal tiles, gemm off it); the engine infers the dependencies from the tiles
each task reads and writes, and moves the tiles between host and devices. Every run (timed
whole) starts with tasks that copy the input tiles, which stay where they were used, into the
working tiles, and ends when L is back in host memory.

    python examples/python/tiled_cholesky.py --n 1024 --tile 256 --opencl --where opencl --check
    python examples/python/tiled_cholesky.py --n 16384 --tile 2048 --cuda --where cuda --repeat 3 --cupy
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import hetflow

CHOLESKY_SOURCE = """
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
// Row-major n x n tiles.

// L of the tile in place, its upper triangle cleared; one work-group, a column at a time.
__kernel void potrf(__global double *a, int n) {
    const int first = get_local_id(0), step = get_local_size(0);
    for (int k = 0; k < n; ++k) {
        const double pivot = sqrt(a[k * n + k]);
        barrier(CLK_GLOBAL_MEM_FENCE);  // every work-item has read the diagonal entry
        if (first == 0) a[k * n + k] = pivot;
        for (int i = k + 1 + first; i < n; i += step) a[i * n + k] /= pivot;
        barrier(CLK_GLOBAL_MEM_FENCE);
        for (int i = k + 1 + first; i < n; i += step)
            for (int j = k + 1; j <= i; ++j) a[i * n + j] -= a[i * n + k] * a[j * n + k];
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
    for (int i = first; i < n; i += step)
        for (int j = i + 1; j < n; ++j) a[i * n + j] = 0.0;
}

// b = b L^-T for a lower triangular l: one work-item per row of b, a forward substitution.
__kernel void trsm(__global double *b, __global const double *l, int n) {
    const int row = get_global_id(0);
    for (int j = 0; j < n; ++j) {
        double sum = b[row * n + j];
        for (int k = 0; k < j; ++k) sum -= b[row * n + k] * l[j * n + k];
        b[row * n + j] = sum / l[j * n + j];
    }
}

// c = c - a a^T: one work-item per entry of c (the whole tile, which stays symmetric).
__kernel void syrk(__global double *c, __global const double *a, int n) {
    const int i = get_global_id(0), j = get_global_id(1);
    double sum = 0.0;
    for (int k = 0; k < n; ++k) sum += a[i * n + k] * a[j * n + k];
    c[i * n + j] -= sum;
}

// c = c - a b^T: one work-item per entry of c.
__kernel void gemm(__global double *c, __global const double *a, __global const double *b, int n) {
    const int i = get_global_id(0), j = get_global_id(1);
    double sum = 0.0;
    for (int k = 0; k < n; ++k) sum += a[i * n + k] * b[j * n + k];
    c[i * n + j] -= sum;
}
"""


def opencl_kernel(x, name: str):
    return hetflow.opencl_kernel(x, CHOLESKY_SOURCE, name)


def potrf_cpu(a):
    a[...] = np.linalg.cholesky(a)


def potrf_opencl(a):
    import pyopencl

    kernel = opencl_kernel(a, "potrf")
    largest = kernel.get_work_group_info(pyopencl.kernel_work_group_info.WORK_GROUP_SIZE, a.queue.device)
    group = min(a.shape[0], 256, largest)
    kernel(a.queue, (group,), (group,), a.data, np.int32(a.shape[0]))


def potrf_cuda(a):
    import cupy

    a[...] = cupy.tril(cupy.linalg.cholesky(a))


def trsm_cpu(b, l):
    b[...] = np.linalg.solve(l, b.T).T  # X L^T = B is L X^T = B^T


def trsm_opencl(b, l):
    opencl_kernel(b, "trsm")(b.queue, (b.shape[0],), None, b.data, l.data, np.int32(b.shape[0]))


def trsm_cuda(b, l):
    from cupyx.scipy.linalg import solve_triangular

    b[...] = solve_triangular(l, b.T, lower=True).T


def syrk_cpu(c, a):
    c -= a @ a.T


def syrk_opencl(c, a):
    opencl_kernel(c, "syrk")(c.queue, c.shape, None, c.data, a.data, np.int32(c.shape[0]))


def syrk_cuda(c, a):
    import cupy

    c -= cupy.matmul(a, a.T)


def gemm_cpu(c, a, b):
    c -= a @ b.T


def gemm_opencl(c, a, b):
    opencl_kernel(c, "gemm")(c.queue, c.shape, None, c.data, a.data, b.data, np.int32(c.shape[0]))


def gemm_cuda(c, a, b):
    import cupy

    c -= cupy.matmul(a, b.T)


def copy_cpu(target, source):
    np.copyto(target, source)


def copy_opencl(target, source):
    import pyopencl

    pyopencl.enqueue_copy(target.queue, target.data, source.data, byte_count=target.nbytes)


def copy_cuda(target, source):
    target[...] = source


POTRF = hetflow.Codelet("potrf", cpu=potrf_cpu, opencl=potrf_opencl, cuda=potrf_cuda, model="python_potrf")
TRSM = hetflow.Codelet("trsm", cpu=trsm_cpu, opencl=trsm_opencl, cuda=trsm_cuda, model="python_trsm")
SYRK = hetflow.Codelet("syrk", cpu=syrk_cpu, opencl=syrk_opencl, cuda=syrk_cuda, model="python_syrk")
GEMM = hetflow.Codelet("gemm", cpu=gemm_cpu, opencl=gemm_opencl, cuda=gemm_cuda, model="python_gemm_nt")
COPY = hetflow.Codelet("copy", cpu=copy_cpu, opencl=copy_opencl, cuda=copy_cuda, model="python_tile_copy")

# Each task's work in units of tile^3 / 3 flops (the copies: next to none).
WEIGHTS = {COPY: 0, POTRF: 1, TRSM: 3, SYRK: 3, GEMM: 6}


def random_spd_matrix(n: int) -> np.ndarray:
    """Symmetric, entries off the diagonal in (-1, 1) and n added on it: the diagonal dominates
    each row, so the matrix is positive definite and well conditioned."""
    matrix = np.tril(np.random.default_rng(1).uniform(-1, 1, (n, n)))
    matrix += np.tril(matrix, -1).T
    matrix[np.diag_indices(n)] += n
    return matrix


def lower_tiles(matrix: np.ndarray, size: int) -> list:
    """The tiles (i, j), j <= i, of the lower triangle as separate contiguous arrays."""
    count = matrix.shape[0] // size
    return [[np.ascontiguousarray(matrix[i * size:(i + 1) * size, j * size:(j + 1) * size]) for j in range(i + 1)]
            for i in range(count)]


def cholesky_tasks(count: int) -> list:
    """The tasks of one run over count x count tiles, in submission order, as (codelet, tile
    written, tiles read): the copies of the input tiles, then for each k potrf(k), the
    trsm(i, k), the syrk(i, k) and the gemm(i, j, k)."""
    tasks: list = [(COPY, (i, j), []) for i in range(count) for j in range(i + 1)]
    for k in range(count):
        tasks.append((POTRF, (k, k), []))
        tasks.extend((TRSM, (i, k), [(k, k)]) for i in range(k + 1, count))
        for i in range(k + 1, count):
            tasks.append((SYRK, (i, i), [(i, k)]))
            tasks.extend((GEMM, (i, j), [(i, k), (j, k)]) for j in range(k + 1, i))
    return tasks


def upward_ranks(tasks: list) -> list:
    """Each task's priority: the longest chain of work from its start to the end of the
    factorisation. The critical path (potrf and the panel's trsm, then the updates that feed
    the next panel) goes first; the tasks with most slack fill the gaps."""
    last_writer: dict = {}
    before = []  # per task: the tasks that last wrote the tiles it uses
    for index, (_, written, read) in enumerate(tasks):
        before.append([last_writer[tile] for tile in [written, *read] if tile in last_writer])
        last_writer[written] = index
    ranks = [0] * len(tasks)
    for index in reversed(range(len(tasks))):
        ranks[index] += WEIGHTS[tasks[index][0]]
        for earlier in before[index]:
            ranks[earlier] = max(ranks[earlier], ranks[index])
    return ranks


def submit_cholesky(tasks: list, ranks: list, source: list, work: list, where: str | None) -> None:
    for (codelet, (i, j), read), priority in zip(tasks, ranks):
        if codelet is COPY:
            hetflow.insert(COPY, hetflow.W(work[i][j]), source[i][j], where=where, priority=priority)
        else:
            hetflow.insert(codelet, hetflow.RW(work[i][j]), *(work[r][c] for r, c in read), where=where,
                           priority=priority)


def assemble(tiles: list, n: int) -> np.ndarray:
    size = tiles[0][0].shape[0]
    matrix = np.zeros((n, n))
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            matrix[i * size:(i + 1) * size, j * size:(j + 1) * size] = tile
    return matrix


def cupy_seconds(a: np.ndarray, repeat: int) -> float:
    import cupy

    a_gpu = cupy.asarray(a)
    best = float("inf")
    for _ in range(repeat + 1):  # one warm-up
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        cupy.linalg.cholesky(a_gpu)
        cupy.cuda.Device().synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--opencl", action="store_true", help="add OpenCL devices (CPU devices too, as PoCL's)")
    parser.add_argument("--cuda", action="store_true", help="add the GPUs")
    parser.add_argument("--where", choices=["cpu", "opencl", "cuda"], help="run every tile task there")
    parser.add_argument("--sched", help="scheduler (default: dmdas with devices)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--check", action="store_true",
                        help="compare every entry of L with numpy's (else 64 sampled entries of L L^T with A)")
    parser.add_argument("--cupy", action="store_true", help="also time one CuPy Cholesky of the whole matrix")
    options = parser.parse_args()
    if options.n % options.tile:
        parser.error("--n must be a multiple of --tile")

    a_full = random_spd_matrix(options.n)
    source = lower_tiles(a_full, options.tile)
    work = [[np.empty_like(tile) for tile in row] for row in source]
    tasks = cholesky_tasks(len(work))
    ranks = upward_ranks(tasks)
    flops = options.n**3 / 3.0

    session = hetflow.init(executor="thread", sched=options.sched, opencl="all" if options.opencl else False,
                           cuda=options.cuda)
    workers = sorted(session.worker_kinds - {"process"})
    print(f"tiled_cholesky.py: n = {options.n}, tiles of {options.tile}, workers: {', '.join(workers)}, "
          f"scheduler {session.scheduler}, tasks on: {options.where or 'any'}")
    seconds = []
    for _ in range(options.repeat):
        start = time.perf_counter()
        submit_cholesky(tasks, ranks, source, work, options.where)
        hetflow.wait_for_all()  # also brings L home
        seconds.append(time.perf_counter() - start)
    hetflow.shutdown()
    best = min(seconds)
    print(f"{len(seconds)} runs: first {seconds[0]:.4f} s, best {best:.4f} s ({flops / best * 1e-9:.2f} GFLOP/s)")

    factor = assemble(work, options.n)
    # Cholesky is backward stable: on a well-conditioned matrix the factors agree to a small
    # multiple of n epsilon whatever the order of the operations.
    tolerance = 1e-14 * options.n + 1e-13
    if options.check:
        expected = np.linalg.cholesky(a_full)
        worst = np.max(np.abs(factor - expected)) / np.max(np.abs(expected))
    else:
        rows, cols = (np.arange(64) * 131) % options.n, (np.arange(64) * 71) % options.n
        products = np.einsum("ij,ij->i", factor[rows, :], factor[cols, :])
        worst = np.max(np.abs(products - a_full[rows, cols])) / np.max(np.abs(a_full))
    ok = bool(worst <= tolerance)
    print(f"largest error{' of L' if options.check else ' of L L^T on 64 sampled entries'}, relative: "
          f"{worst:.2e} (tolerance {tolerance:.1e}): {'OK' if ok else 'FAILED'}")
    if options.cupy:
        vendor = cupy_seconds(a_full, options.repeat)
        print(f"cupy.linalg.cholesky (one call, whole matrix on the GPU): {vendor:.4f} s, "
              f"{flops / vendor * 1e-9:.2f} GFLOP/s; "
              f"hetflow tiled (best): {flops / best * 1e-9:.2f} GFLOP/s = {100.0 * vendor / best:.1f}% of it")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
