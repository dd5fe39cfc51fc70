"""hetflow.mpi under mpirun: every rank runs this and checks what it sees; a failed check ends
every rank with a non-zero status. Usage: mpirun -np N python owner_computes.py [mpi4py-first|
mpi4py-after|world]."""
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "world"
if mode == "mpi4py-first":
    from mpi4py import MPI  # MPI initialised by mpi4py, adopted by hetflow

import numpy as np

import hetflow
import hetflow.mpi as hm
from checks import expect_raises

if mode == "mpi4py-first":
    hm.init(MPI.COMM_WORLD)
else:
    hm.init()
if mode == "mpi4py-after":
    from mpi4py import MPI  # MPI initialised by hetflow; mpi4py uses it as it is

    assert MPI.Is_initialized() and MPI.COMM_WORLD.Get_size() == hm.size()

me, ranks = hm.rank(), hm.size()
assert ranks >= 2, "run with at least 2 ranks"
last = ranks - 1
thread = hetflow.task_submit.options(executor="thread")
process = hetflow.task_submit.options(executor="process")


def add_into(x, y):
    y += x
    return float(y.sum())


def scale(x, factor):
    x *= factor


# Ownership: a task runs on the owner of what it writes and receives what it reads.
x = hm.register(np.arange(8.0) if me == 0 else np.zeros(8), owner=0, name="x")
y = hm.register(np.ones(8), owner=last, name="y")
future = thread(add_into, x, hetflow.RW(y))
assert future.rank == last, future.rank
assert hm.holder(y) == last and hm.owner(x) == 0
hm.wait_all()
if me == last:
    assert future.result() == 8 + 28, future.result()
    assert y[7] == 8.0
else:
    error = expect_raises(hm.ElsewhereError, future.result, [f"rank {last}"])
    assert error.rank == last and future.done()

# Worker processes know their rank.
assert process(lambda: (hm.rank(), hm.size())).result() == (me, ranks)

# The process executor: the same, in a worker process.
z = hm.register(np.zeros(8), owner=1, name="z")
future = process(add_into, y, hetflow.RW(z))
assert future.rank == 1
hm.wait_all()
if me == 1:
    assert future.result() == 8 + 28 and z[3] == 4.0, (future.result(), z)

# Plain arrays: read by a distributed task on its rank's own copy; written, refused everywhere.
plain = np.full(8, 2.0)
thread(add_into, plain, hetflow.RW(z))
expect_raises(ValueError, lambda: thread(scale, hetflow.RW(plain), 3.0, hetflow.R(z)), ["not distributed", "rank 1"])
# A value on one rank is not an argument on another.
elsewhere = thread(add_into, x, hetflow.RW(y))  # on the last rank
expect_raises(ValueError, lambda: thread(lambda v, out: None, elsewhere, hetflow.RW(x)), ["ran on rank"])
hm.wait_all()
if me == 1:
    assert z[0] == 1.0 + 2.0, z  # y[0], then plain[0]

# gather and broadcast: the latest version where it is wanted.
hm.gather(z, root=0)
if me == 0:
    assert z[0] == 3.0, z
hm.broadcast(y)
assert y[1] == 1 + 2 * 1.0, (me, y)  # y = 1 + x twice (x[1] = 1)

# Placement: on a rank, or on the owner of an array; migration moves the owner.
w = hm.register(np.zeros(4), owner=0, name="w")
assert hm.task_submit(scale, hetflow.RW(w), 2.0, on=last, executor="thread").rank == last
assert hm.task_submit(scale, hetflow.RW(w), 2.0, on=y, executor="thread").rank == last
hm.migrate(w, 1)
assert hm.owner(w) == 1
assert thread(scale, hetflow.RW(w), 2.0).rank == 1
expect_raises(ValueError, lambda: hm.task_submit(scale, hetflow.RW(w), 2.0, on=ranks), ["not one of"])

# Codelets too run owner-computes.
def scale_cpu(x, factor):
    x *= factor


scale_codelet = hetflow.Codelet("scale", cpu=scale_cpu)
v = hm.register(np.ones(4) if me == last else np.zeros(4), owner=last, name="v")
inserted = hetflow.insert(scale_codelet, hetflow.RW(v), 5.0)
assert inserted.rank == last, inserted.rank
hm.broadcast(v)
assert v[2] == 5.0, (me, v)

# Data every rank owns: never sent; a task over it alone runs on every rank.
mine = hm.register(np.zeros(8), owner=hm.EVERY_RANK, name="mine")
hm.wait_all()
before = hm.sent()
assert thread(lambda out, r: out.fill(r), hetflow.W(mine), float(me)).rank == hm.EVERY_RANK
hm.wait_all()
assert mine[0] == me
thread(add_into, mine, hetflow.RW(z))  # on rank 1, with its own copy
hm.wait_all()
assert [m for m, _ in hm.sent()] == [m for m, _ in before], "data every rank owns was sent"
if me == 1:
    assert z[0] == 3.0 + 1.0, z

# Reductions: contributions on every rank, combined on the owner at the next read.
total = hm.register(np.full(3, 100.0) if me == 0 else np.zeros(3), owner=0, name="total")
hm.set_reduction(total, np.add)
for i in range(2 * ranks):
    hm.task_submit(lambda t, k: t.__iadd__(k), hetflow.REDUX(total), float(i), on=i % ranks,
                   executor="thread" if i % 2 else "process")
largest = hm.register(np.zeros(2), owner=last, name="largest")
hm.set_reduction(largest, np.maximum, neutral=-np.inf)
for rank in range(ranks):
    hm.task_submit(lambda t, k: np.maximum(t, k, out=t), hetflow.REDUX(largest), float(rank * 10), on=rank)
hm.broadcast([total, largest])
expected = 100.0 + sum(range(2 * ranks))
assert total[0] == expected and largest[1] == 10.0 * last, (me, total, largest)


def failing_combine(into, contribution):
    raise OverflowError("does not fit")


bounded = hm.register(np.zeros(1), owner=0, name="bounded")
hm.set_reduction(bounded, failing_combine, neutral=0.0)
hm.task_submit(lambda t: t.__iadd__(1.0), hetflow.REDUX(bounded), on=last, executor="thread")
check = hm.task_submit(lambda b: float(b[0]), bounded, on=0, executor="thread")
hm.wait_all()
if me == 0:
    expect_raises(hetflow.DependencyError, check.result, ["does not fit"])

# Views of registered arrays are not task data.
expect_raises(ValueError, lambda: thread(scale, hetflow.RW(y[:4]), 2.0), ["view"])

# Row blocks of one matrix, each registered with its own owner; overlapping ones are refused.
matrix = np.zeros((2 * ranks, 3))
blocks = [hm.register(matrix[2 * r : 2 * r + 2], owner=r, name=f"rows {r}") for r in range(ranks)]
expect_raises(ValueError, lambda: hm.register(matrix[1:3], owner=0), ["shares memory"])
for r in range(ranks):
    assert thread(lambda b, v: b.fill(v), hetflow.W(blocks[r]), float(r + 1)).rank == r
hm.gather(matrix[2 * last : 2 * last + 2], root=0)  # a view made again names the same block
hm.wait_all()  # gather brings the last block; rank 0's own task on the first may still be running
if me == 0:
    assert matrix[2 * last, 0] == last + 1.0 and matrix[0, 2] == 1.0, matrix


# A failure reaches the readers on other ranks, naming the rank and the cause.
def broken(out):
    raise ArithmeticError("pivot is zero")


bad = hm.register(np.zeros(4), owner=0, name="bad")
failed = thread(broken, hetflow.RW(bad))
reader = thread(add_into, bad, hetflow.RW(y))  # on the last rank
hm.wait_all()
if me == 0:
    expect_raises(ArithmeticError, failed.result, ["pivot is zero"])
if me == last:
    error = expect_raises(hetflow.DependencyError, reader.result, ["pivot is zero"])
    assert "rank 0" in str(error), error

hm.wait_all()
# Shut down, no other runtime starts: the arrays above would be plain arrays to it.
hetflow.shutdown()
expect_raises(RuntimeError, lambda: hetflow.task_submit(len, "abc"), ["served hetflow.mpi"])
expect_raises(RuntimeError, lambda: hetflow.init(executor="thread"), ["served hetflow.mpi"])
print(f"rank {me}: owner-computes checks passed ({mode})", flush=True)
