"""hetflow.mpi under mpirun: a registered array a task reaches other than as its own argument (in
a list, a functools.partial, a closure, a default value, a module global the function reads), or
another view of its memory (the matrix of registered row blocks), is refused on every rank (the rank that
ran the task read its own copy, out of date, or not, depending on timing: [-1.0] * 3 instead of
[7.0] * 3); wait_all while this rank holds an acquisition its tasks need raises instead of
waiting for ever; after the runtime shut down, hetflow.mpi says so. Usage: mpirun -np N python
hidden_arrays_and_waits.py."""
import functools
import types

import numpy as np

import hetflow
import hetflow.mpi as hm
from checks import expect_raises

held_x = None  # the registered x, as a module global
whole = None  # a matrix whose row blocks are registered, as a module global
settings = types.SimpleNamespace(held_x=np.full(3, 2.0))


def copy_held_x(o):
    o[...] = held_x


def copy_settings_held_x(o):  # an attribute named like the global: no array of hetflow.mpi's
    o[...] = settings.held_x


def sum_whole(o):  # reads every block through the matrix: other ranks' rows, out of date here
    o[...] = whole.sum()


def main():
    global held_x, whole
    hm.init()
    me, ranks = hm.rank(), hm.size()
    last = ranks - 1
    run = hetflow.task_submit.options(executor="thread")
    x = hm.register(np.full(3, 7.0) if me == 0 else np.full(3, -1.0), owner=0, name="x")
    out = hm.register(np.zeros(3), owner=last, name="out")

    def copy(o, value=None):
        o[...] = value[0] if isinstance(value, list) else value

    held_x = x

    def with_default(o, value=x):
        o[...] = value

    for place, submit in [
        ("a list", lambda: run(copy, hetflow.W(out), [x])),
        ("a list", lambda: hetflow.task_submit.options(executor="process")(copy, hetflow.W(out), [x])),
        ("functools.partial", lambda: run(functools.partial(copy, value=x), hetflow.W(out))),
        ("closure", lambda: run(lambda o: o.__setitem__(Ellipsis, x), hetflow.W(out))),
        ("default value", lambda: run(with_default, hetflow.W(out))),
        ("module global variable 'held_x'", lambda: run(copy_held_x, hetflow.W(out))),
        ("module global variable 'held_x'", lambda: run(lambda o: [copy_held_x(o) for _ in range(1) if held_x is not None], hetflow.W(out))),
    ]:
        expect_raises(ValueError, submit, [place, "give the array itself as an argument"])
    # Other views of registered memory are refused alike: the matrix whose row blocks were
    # registered, a slice across two blocks (each read this rank's copies: 4.0 for 24.0).
    whole = np.zeros((ranks, 4))
    for r, block in enumerate(np.array_split(whole, ranks)):
        hm.register(block, owner=r, name=f"block {r}")
    last_rows = whole[-1:, 1:]  # a local: captured by the task's function
    for place, submit in [
        ("module global variable 'whole'", lambda: run(sum_whole, hetflow.W(out))),
        ("a list", lambda: run(lambda o, m: o.fill(m[0].sum()), hetflow.W(out), [whole[:, :2]])),
        ("a list", lambda: run(lambda o, m: o.fill(m[0].sum()), hetflow.W(out), [whole])),
        ("closure", lambda: run(lambda o: o.fill(last_rows.sum()), hetflow.W(out))),
    ]:
        expect_raises(ValueError, submit, [place, "or a view of its memory", "give the array itself as an argument"])
    # As an argument, or captured as well as given, it is sent where the task runs.
    run(copy_settings_held_x, hetflow.W(out))
    run(lambda o, v: o.__setitem__(Ellipsis, v + held_x), hetflow.W(out), x)
    run(lambda o, v: o.__setitem__(Ellipsis, v + x), hetflow.W(out), x)
    plain = np.ones(3)  # plain arrays and data every rank owns may be captured
    mine = hm.register(np.full(3, float(me)), owner=hm.EVERY_RANK, name="mine")
    run(lambda o: o.__iadd__(plain + mine - mine), hetflow.RW(out))
    hm.gather(out, root=0)
    hm.wait_all()
    if me == 0:
        assert (out == 15.0).all(), out

    # wait_all while holding an acquisition a later task needs: told, where it does, not a hang.
    held = hetflow.acquire(x, "RW")
    run(lambda v: v.__iadd__(1.0), hetflow.RW(x))
    run(copy, hetflow.W(out), x)
    if me in (0, last):  # the task writing x, and the receive of x for the one reading it
        expect_raises(RuntimeError, hm.wait_all, ["would never end", "release it first"])
        held.release()
        hm.wait_all()  # meets the other ranks' wait_all
    else:
        held.release()  # holds nothing back here
        hm.wait_all()
    hm.gather(out, root=0)
    hm.wait_all()
    if me == 0:
        assert (out == 8.0).all(), out

    hetflow.shutdown()
    expect_raises(RuntimeError, hm.wait_all, ["was shut down", "cannot start again"])
    print(f"rank {me}: hidden arrays and waits checks passed", flush=True)


main()
