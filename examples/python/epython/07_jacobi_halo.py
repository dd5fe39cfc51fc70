# Jacobi iteration for Laplace's equation on a 1-D domain split over the cores: each core owns a
# slab of the grid (device-resident between launches) and swaps one halo value with each
# neighbour per iteration with send / recv; the global residual comes from allreduce.
import hetflow
from hetflow import (allreduce, copy_from_device, coreid, define_on_device,
                     numcores, offload, recv, send)

hetflow.init(ncpus=4)

POINTS_PER_CORE = 8
LEFT, RIGHT = 1.0, 0.0          # fixed boundary values

define_on_device("slab", [0.0] * (POINTS_PER_CORE + 2))   # with one halo cell at each end


@offload
def jacobi(iterations):
    global slab
    me, cores = coreid(), numcores()
    residual = 0.0
    for _ in range(iterations):
        # Halo swap: send my edge values to my neighbours, receive theirs into my halo cells.
        if me > 0:
            send(slab[1], me - 1)
        if me < cores - 1:
            send(slab[-2], me + 1)
        slab[0] = recv(me - 1) if me > 0 else LEFT
        slab[-1] = recv(me + 1) if me < cores - 1 else RIGHT
        new = slab[:]
        for i in range(1, len(slab) - 1):
            new[i] = 0.5 * (slab[i - 1] + slab[i + 1])
        local = sum((new[i] - slab[i]) ** 2 for i in range(1, len(slab) - 1))
        slab = new
        residual = allreduce(local, "sum") ** 0.5
    return residual


for sweep in range(4):
    residuals = jacobi(500)
    print(f"after {(sweep + 1) * 500} iterations: residual {residuals[0]:.3e}")

interior = [value for slab in copy_from_device("slab") for value in slab[1:-1]]
n = len(interior)
worst = max(abs(v - (1.0 - (i + 1) / (n + 1))) for i, v in enumerate(interior))
print(f"{n} points on {numcores()} cores; largest distance to the exact solution: {worst:.1e}")
