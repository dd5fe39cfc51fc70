"""hetflow.mpi under mpirun (2 ranks or more): failures that travel with their data, empty
pieces of a buffer, placements given as numpy integers, refusals. Every rank checks what it
sees; a failed check ends every rank with a non-zero status."""
import numpy as np

import hetflow
import hetflow.mpi as hm
from checks import expect_raises

hm.init()
me, ranks = hm.rank(), hm.size()
thread = hetflow.task_submit.options(executor="thread")


def update(a, step):
    a += 1.0
    if step == 2:
        raise ArithmeticError(f"diverged at step {step}")


def copy_into(out, a):
    out[:] = a


# A failure on rank 0 reaches rank 1's readers of every later step, although rank 0 keeps
# writing the data after it (each step's transfer carries the failure of the writer before it).
x = hm.register(np.zeros(8), owner=0, name="x")
history = [hm.register(np.zeros(8), owner=1, name=f"history {s}") for s in range(5)]
readers = []
for step in range(5):
    thread(update, hetflow.RW(x), step)
    readers.append(thread(copy_into, hetflow.W(history[step]), x))
hm.wait_all()
if me == 1:
    for step, reader in enumerate(readers):
        try:
            reader.result()
            assert step < 2, f"the reader of step {step} ran on what the failed update left"
            assert history[step][0] == step + 1.0, (step, history[step])
        except hetflow.DependencyError as error:
            assert step >= 2 and "diverged at step 2" in str(error) and "rank 0" in str(error), (step, error)

# Sending the failed data elsewhere does not clear the failure where it was written.
y = hm.register(np.zeros(4), owner=0, name="y")
mine = hm.register(np.zeros(4), owner=0, name="mine")
theirs = hm.register(np.zeros(4), owner=1, name="theirs")
thread(update, hetflow.RW(y), 2)
thread(copy_into, hetflow.W(theirs), y)  # on rank 1: fails
hm.wait_all()
later = thread(copy_into, hetflow.W(mine), y)  # on rank 0, after the transfer
hm.wait_all()
if me == 0:
    try:
        later.result()
        raise AssertionError("a later reader on the writer's rank ran on the failed data")
    except hetflow.DependencyError as error:
        assert "diverged" in str(error), error

# Empty pieces of a buffer have no byte of their own: registering them beside the others is
# fine, and moving them never writes into the program's memory.
matrix = np.zeros((ranks - 1, 3))
blocks = np.array_split(matrix, ranks)  # the last block is empty
for r, block in enumerate(blocks):
    hm.register(block, owner=r, name=f"rows {r}")
plain = np.full(4, 10 * me + 1, np.uint8)  # never registered
tail = hm.register(plain[4:], owner=ranks - 1, name="empty tail")
thread(lambda t: None, hetflow.W(tail))
hm.gather(tail, root=0)
hm.wait_all()
assert plain.tolist() == [10 * me + 1] * 4, (me, plain)
# An empty piece right before a registered one: a byte of the empty one was received over the
# first byte of the next.
row = np.full(8, 10 * me + 2, np.uint8)
hm.register(row[4:], owner=0, name="after the empty piece")
empty = hm.register(row[4:4], owner=ranks - 1, name="empty piece")
thread(lambda t: None, hetflow.W(empty))
hm.gather(empty, root=0)
hm.wait_all()
assert row.tolist() == [10 * me + 2] * 8, (me, row)

# A placement may be any integer, numpy's included; anything else is refused clearly.
loads = np.array([5.0, 1.0] + [9.0] * (ranks - 2))
target = hm.register(np.zeros(2), owner=0, name="target")
assert hm.task_submit(lambda a: a.fill(1.0), hetflow.W(target), on=np.argmin(loads), executor="thread").rank == 1
try:
    hm.task_submit(lambda a: None, hetflow.W(target), on=1.0)
    raise AssertionError("on=1.0 was accepted")
except TypeError as error:
    assert "a rank is an int" in str(error), error
try:
    hm.register(np.zeros(2), owner=0, tag=2**40)
    raise AssertionError("tag=2**40 was accepted")
except ValueError as error:
    assert "not an MPI tag" in str(error), error
try:
    hm.register(np.zeros(2), owner=0, tag=True)
    raise AssertionError("tag=True was accepted")
except TypeError as error:
    assert "tag must be an int" in str(error), error
numpy_tagged = hm.register(np.zeros(2), owner=0, tag=np.int64(4000))  # numpy's integers are ints
# on= an array every rank owns names no one rank: refused, not run where its data say.
everywhere = hm.register(np.zeros(2), owner=hm.EVERY_RANK, name="everywhere")
expect_raises(ValueError, lambda: hm.task_submit(lambda a, e: None, hetflow.W(target), everywhere, on=everywhere), ["every rank owns", "give a rank"])
for rows, columns in ((0, None), (None, 0), (-1, None)):
    expect_raises(ValueError, lambda: hm.block_cyclic(rows, columns), ["must be 1 or more"])  # not ZeroDivisionError
expect_raises(TypeError, lambda: hm.block_cyclic(1.5), ["must be an int"])
# Empty pieces of np.array_split at one address (fewer rows than pieces) cannot be told apart:
# said so, rather than "registered already" of an array registered once.
pieces = np.array_split(np.zeros((1, 3)), 3)  # pieces 1 and 2: empty, at one address
hm.register(pieces[1], owner=0, name="first empty piece")
expect_raises(ValueError, lambda: hm.register(pieces[2], owner=ranks - 1), ["cannot tell them apart", "numpy.empty(shape)"])

# Arrays of more than four dimensions travel whole (the outermost ones merged into one: 8 of
# their 24 elements were sent, the others left as they were on the receiving rank).
five = hm.register(np.zeros((2, 1, 3, 2, 2)), owner=ranks - 1, name="five dimensions")
six = hm.register(np.zeros((2, 3, 1, 2, 2, 2), order="F"), owner=0, name="six dimensions")
thread(lambda a: np.copyto(a, np.arange(24.0).reshape(a.shape)), hetflow.W(five))
thread(lambda b, a: np.copyto(b, np.arange(48.0).reshape(b.shape, order="F") + a.sum()), hetflow.W(six), five)
# Elements of no byte (a structured dtype without fields): no byte to move, as an empty array
# (the runtime refused the layout: "element size is 0").
fieldless = hm.register(np.zeros(3, dtype=np.dtype([])), owner=ranks - 1, name="fieldless")
thread(lambda f: None, hetflow.W(fieldless))
hm.broadcast([five, six, fieldless])
assert five.ravel().tolist() == list(range(24)), (me, five.ravel())
assert six.ravel(order="F").tolist() == [276.0 + i for i in range(48)], (me, six.ravel(order="F"))
hm.wait_all()
print(f"rank {me}: failure and edge checks passed", flush=True)
