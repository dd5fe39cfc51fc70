"""Distributed tiled Cholesky factorisation A = L L^T over MPI ranks with hetflow.mpi: the tiles
of the lower triangle are spread 2-D block-cyclic over a grid of ranks, every rank submits every
task, and each task runs on the rank that owns the tile it writes (numpy on the thread executor:
its kernels release the GIL). hetflow sends each tile a task reads to the rank that runs it, once
per version. --check gathers L on rank 0 and compares it with numpy's factorisation of A.

    mpirun -np 4 python examples/python/mpi_cholesky.py --n 2048 --tile 256 --check
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import hetflow
import hetflow.mpi as hm


def potrf(a: np.ndarray) -> None:
    a[...] = np.linalg.cholesky(a)


def trsm(b: np.ndarray, l: np.ndarray) -> None:
    b[...] = np.linalg.solve(l, b.T).T  # b L^-T


def syrk(c: np.ndarray, a: np.ndarray) -> None:
    c -= a @ a.T


def gemm(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    c -= a @ b.T


def spd_matrix(n: int, seed: int) -> np.ndarray:
    """The same symmetric positive definite matrix on every rank."""
    random = np.random.default_rng(seed)
    m = random.standard_normal((n, n))
    return m @ m.T + n * np.eye(n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024, help="matrix size")
    parser.add_argument("--tile", type=int, default=256, help="tile size (divides n)")
    parser.add_argument("--check", action="store_true", help="compare L with numpy.linalg.cholesky on rank 0")
    args = parser.parse_args()
    if args.n <= 0 or args.tile <= 0 or args.n % args.tile:
        parser.error(f"--tile {args.tile} must divide --n {args.n}")

    hm.init()
    rank, ranks = hm.rank(), hm.size()
    t, b = args.n // args.tile, args.tile
    a = spd_matrix(args.n, seed=7)
    owner = hm.block_cyclic()
    # Each rank fills only its own tiles; the others are where copies land.
    tiles = {
        (i, j): (a[i * b : (i + 1) * b, j * b : (j + 1) * b].copy() if owner((i, j)) == rank else np.zeros((b, b)))
        for i in range(t)
        for j in range(i + 1)
    }
    hm.distribute(tiles, owner)
    run = hetflow.task_submit.options(executor="thread")

    hm.wait_all()
    start = time.perf_counter()
    for k in range(t):
        run(potrf, hetflow.RW(tiles[k, k]))
        for i in range(k + 1, t):
            run(trsm, hetflow.RW(tiles[i, k]), tiles[k, k])
        for i in range(k + 1, t):
            run(syrk, hetflow.RW(tiles[i, i]), tiles[i, k])
            for j in range(k + 1, i):
                run(gemm, hetflow.RW(tiles[i, j]), tiles[i, k], tiles[j, k])
    hm.wait_all()
    elapsed = time.perf_counter() - start
    messages, sent_bytes = (sum(column) for column in zip(*hm.sent()))
    if rank == 0:
        gflops = args.n**3 / 3 / elapsed / 1e9
        print(f"hetflow.mpi cholesky: n={args.n} tile={args.tile} ranks={ranks}: {elapsed:.3f} s, {gflops:.2f} GFLOP/s")
    print(f"rank {rank}: sent {messages} messages, {sent_bytes} bytes", flush=True)

    if not args.check:
        return 0
    hm.gather(list(tiles.values()), root=0)
    if rank != 0:
        hm.wait_all()
        return 0
    factor = np.zeros_like(a)
    for (i, j), tile in tiles.items():
        factor[i * b : (i + 1) * b, j * b : (j + 1) * b] = tile
    expected = np.linalg.cholesky(a)
    error = np.linalg.norm(factor - expected) / np.linalg.norm(expected)
    ok = error < 1e-10
    print(f"check: relative error {error:.2e} against numpy.linalg.cholesky: {'OK' if ok else 'FAILED'}", flush=True)
    hm.wait_all()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
