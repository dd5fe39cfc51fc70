"""Random programs over numpy views, run on hetflow and replayed sequentially in plain numpy.

A seeded generator makes a few arrays (shared and plain, 1-D and 2-D), views of them (slices,
steps, negative steps, row and column blocks, tiles, whole arrays) and tasks that read and write
1 to 3 views each with an update whose result depends on the order of the tasks. Some tasks
raise, before writing anything. The program runs on both executors under several schedulers;
the replay runs it in submission order, following the failure rules:

- a task that raises leaves its data alone; its future raises what it raised;
- a task that reads (R or RW) data whose last writer failed does not run and fails with
  DependencyError; if it writes, it is a failed writer too;
- a write-only access (W) makes a new version whatever came before.

Views enter these rules as hetflow tracks them (docs/python.md): a task's access to a view counts
as the same access to each overlapping view used so far that lies wholly within it, and as a part
access to the others. Part accesses read what the last whole writer of that view left; a part
write that fails fails the whole reads after it, until a whole write.
The arrays must match bit for bit and every future's outcome must match.

``HETFLOW_ORACLE_TASKS=1000000 pytest tests/python/test_oracle.py -s`` (``make stress``) checks
that many tasks instead of the default and prints the figures.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

import hetflow

MODULUS = 1_000_003
COMBINATIONS = [("thread", "ws"), ("thread", "eager"), ("thread", "random"), ("process", "ws"), ("process", "dmdas")]
DEFAULT_TASKS = 12000  # over all combinations
TASKS_PER_PROGRAM = 240


class Injected(Exception):
    """The failure a task of the program raises on purpose."""


def oracle_task(index: int, fail: bool, modes: Tuple[str, ...], *views: Any) -> int:
    if fail:
        raise Injected(f"task {index} fails")
    total = 0
    for mode, view in zip(modes, views):
        if mode != "W":
            total += int(view.sum())
    for k, (mode, view) in enumerate(zip(modes, views)):
        if mode == "W":
            view[...] = (total + index * (k + 1)) % MODULUS
        elif mode == "RW":
            view[...] = (view * (k + 3) + total + index) % MODULUS
    return total + index


# -- programs --------------------------------------------------------------------------------------
@dataclass
class ViewSpec:
    array: int
    slicer: Any
    indices: np.ndarray  # the flat indices of its elements, in view order
    key: tuple  # element 0, shape, strides: one engine handle per key
    dense: bool  # its elements fill every index between the lowest and the highest
    low: int
    high: int
    overlaps: Dict[int, bool] = field(default_factory=dict)  # view -> lies within this one


@dataclass
class Program:
    shapes: List[Tuple[int, ...]]
    shared: List[bool]
    initial: List[np.ndarray]
    views: List[ViewSpec]
    tasks: List[Tuple[int, bool, str, List[int]]]  # index, fails, modes, views


def _view_slicers(rng: np.random.Generator, shape: Tuple[int, ...]) -> List[Any]:
    def part(n: int) -> slice:
        kind = rng.integers(0, 5)
        i = int(rng.integers(0, n))
        j = int(rng.integers(i + 1, n + 1))
        step = int(rng.integers(2, 4))
        if kind == 0:
            return slice(None)
        if kind == 1:
            return slice(i, j)
        if kind == 2:
            return slice(i, j, step)
        if kind == 3:
            return slice(j - 1, i - 1 if i > 0 else None, -step)
        return slice(None, None, -1)

    slicers: List[Any] = [(slice(None),) * len(shape)]
    for _ in range(int(rng.integers(4, 9))):
        if len(shape) == 1:
            slicers.append((part(shape[0]),))
            continue
        rows, cols = shape
        kind = rng.integers(0, 4)
        if kind == 0:  # column block
            c = int(rng.integers(0, cols - 1))
            slicers.append((slice(None), slice(c, int(rng.integers(c + 1, cols + 1)))))
        elif kind == 1:  # tile of a grid
            tr, tc = int(rng.integers(2, 4)), int(rng.integers(2, 5))
            r, c = int(rng.integers(0, rows // tr)) * tr, int(rng.integers(0, cols // tc)) * tc
            slicers.append((slice(r, r + tr), slice(c, c + tc)))
        elif kind == 2:  # row block
            r = int(rng.integers(0, rows - 1))
            slicers.append((slice(r, int(rng.integers(r + 1, rows + 1))), slice(None)))
        else:
            slicers.append((part(rows), part(cols)))
    return slicers


def make_program(seed: int, ntasks: int) -> Program:
    rng = np.random.default_rng(seed)
    shapes: List[Tuple[int, ...]] = []
    for _ in range(int(rng.integers(2, 5))):
        if rng.random() < 0.5:
            shapes.append((int(rng.integers(8, 48)),))
        else:
            shapes.append((int(rng.integers(4, 10)), int(rng.integers(4, 12))))
    shared = [bool(rng.random() < 0.5) for _ in shapes]
    initial = [rng.integers(0, 1000, size=shape, dtype=np.int64) for shape in shapes]
    views: List[ViewSpec] = []
    by_key: Dict[tuple, int] = {}
    for a, shape in enumerate(shapes):
        flat = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        for slicer in _view_slicers(rng, shape):
            indices = flat[slicer]
            if indices.size == 0:
                continue
            key = (a, int(indices.reshape(-1)[0]), indices.shape, indices.strides)
            if key in by_key:
                continue
            ordered = np.sort(indices.reshape(-1))
            low, high = int(ordered[0]), int(ordered[-1])
            spec = ViewSpec(a, slicer, ordered, key, high - low + 1 == ordered.size, low, high)
            by_key[key] = len(views)
            views.append(spec)
    def holds(outer: ViewSpec, inner: ViewSpec) -> bool:
        return outer.dense and outer.low <= inner.low and inner.high <= outer.high

    for i, vi in enumerate(views):
        for j, vj in enumerate(views):
            if i != j and vi.array == vj.array and np.intersect1d(vi.indices, vj.indices).size:
                vi.overlaps[j] = holds(vi, vj)
    fail_rate = float(rng.choice([0.0, 0.005, 0.03]))
    tasks = []
    for index in range(ntasks):
        chosen: List[int] = []
        for _ in range(int(rng.integers(1, 4))):
            v = int(rng.integers(0, len(views)))
            if v not in chosen and all(v not in views[c].overlaps for c in chosen):
                chosen.append(v)
        modes = [str(rng.choice(["R", "W", "RW"], p=[0.4, 0.25, 0.35])) for _ in chosen]
        tasks.append((index, bool(rng.random() < fail_rate), ",".join(modes), chosen))
    return Program(shapes, shared, initial, views, tasks)


# -- the replay ------------------------------------------------------------------------------------
def replay(program: Program) -> Tuple[List[np.ndarray], List[Tuple[str, Any]]]:
    """The arrays and outcomes ("value", v) / ("raised", message) / ("dependency", None) that the
    failure rules give, running the tasks one after the other."""
    arrays = [a.copy() for a in program.initial]
    used: set = set()
    failed_writer: Dict[int, bool] = {}  # view -> its last whole writer failed
    failed_part: Dict[int, bool] = {}  # view -> a part writer failed since its last whole writer
    outcomes: List[Tuple[str, Any]] = []
    bits = {"R": 1, "W": 2, "RW": 3}
    part = 8

    def merge(declared: Dict[int, int], v: int, new: int) -> None:
        old = declared.get(v, 0)
        declared[v] = old | new if not old or old & new & part else (old | new) & ~part

    for index, fails, modes, chosen in program.tasks:
        mode_list = modes.split(",")
        declared: Dict[int, int] = {}
        used.update(chosen)
        for v, mode in zip(chosen, mode_list):
            merge(declared, v, bits[mode])
            for other, inside in program.views[v].overlaps.items():
                if other not in used:
                    continue
                merge(declared, other, bits[mode] if inside else part | (1 if mode == "R" else 3))

        def reads_a_failure(v: int, b: int) -> bool:
            if b & part:
                return failed_writer.get(v, False)
            return bool(b & 1) and (failed_writer.get(v, False) or failed_part.get(v, False))

        blocked = any(reads_a_failure(v, b) for v, b in declared.items())
        if blocked:
            outcomes.append(("dependency", None))
            ok = False
        elif fails:
            outcomes.append(("raised", f"task {index} fails"))
            ok = False
        else:
            views = [arrays[program.views[v].array][program.views[v].slicer] for v in chosen]
            outcomes.append(("value", oracle_task(index, False, tuple(mode_list), *views)))
            ok = True
        for v, b in declared.items():
            if b & part:
                failed_part[v] = failed_part.get(v, False) or (bool(b & 2) and not ok)
            elif b & 2:
                failed_writer[v] = not ok
                failed_part[v] = False
    return arrays, outcomes


# -- running it on hetflow -------------------------------------------------------------------------
def run(program: Program) -> Tuple[List[np.ndarray], List[Tuple[str, Any]]]:
    arrays = []
    for initial, shared in zip(program.initial, program.shared):
        arrays.append(hetflow.array(initial) if shared else initial.copy())
    marks = {"R": hetflow.R, "W": hetflow.W, "RW": hetflow.RW}
    futures = []
    for index, fails, modes, chosen in program.tasks:
        mode_list = modes.split(",")
        args = [marks[m](arrays[program.views[v].array][program.views[v].slicer]) for v, m in zip(chosen, mode_list)]
        futures.append(hetflow.task_submit(oracle_task, index, fails, tuple(mode_list), *args))
    outcomes: List[Tuple[str, Any]] = []
    for future in futures:
        try:
            outcomes.append(("value", future.result(timeout=120)))
        except hetflow.DependencyError:
            outcomes.append(("dependency", None))
        except Injected as error:
            outcomes.append(("raised", str(error)))
    return arrays, outcomes


def check(program: Program, got: Tuple[list, list], want: Tuple[list, list]) -> List[str]:
    mismatches = []
    for a, (mine, theirs) in enumerate(zip(got[0], want[0])):
        if mine.dtype != theirs.dtype or mine.tobytes() != theirs.tobytes():
            mismatches.append(f"array {a} differs at {np.argwhere(mine != theirs)[:5].tolist()}")
    for (index, *_), mine, theirs in zip(program.tasks, got[1], want[1]):
        if mine != theirs:
            mismatches.append(f"task {index}: got {mine}, expected {theirs}")
    return mismatches


def oracle(total_tasks: int, seed: int, combinations: List[Tuple[str, str]]) -> Dict[str, int]:
    figures = {"programs": 0, "tasks": 0, "mismatches": 0, "injected": 0, "dependency_errors": 0}
    # Long runs take longer programs and more of them per runtime: starting one costs.
    per_program = TASKS_PER_PROGRAM if total_tasks <= 100_000 else 1000
    per_runtime = 4 if total_tasks <= 100_000 else 12
    per_program = min(per_program, max(1, total_tasks // len(combinations)))
    first_mismatches: List[str] = []
    done = 0
    program_seed = seed
    while done < total_tasks:
        for executor, sched in combinations:
            if done >= total_tasks:
                break
            with hetflow.init(ncpus=2, nprocs=2, executor=executor, sched=sched):
                for _ in range(per_runtime):
                    if done >= total_tasks:
                        break
                    program = make_program(program_seed, min(per_program, total_tasks - done))
                    program_seed += 1
                    want = replay(program)
                    got = run(program)
                    wrong = check(program, got, want)
                    figures["programs"] += 1
                    figures["tasks"] += len(program.tasks)
                    figures["mismatches"] += len(wrong)
                    figures["injected"] += sum(1 for _, fails, _, _ in program.tasks if fails)
                    figures["dependency_errors"] += sum(1 for kind, _ in want[1] if kind == "dependency")
                    if wrong and len(first_mismatches) < 10:
                        first_mismatches += [f"seed {program_seed - 1} {executor}/{sched}: {w}" for w in wrong[:3]]
                    done += len(program.tasks)
    figures["first_mismatches"] = first_mismatches  # type: ignore[assignment]
    return figures


def _tasks_wanted() -> int:
    text = os.environ.get("HETFLOW_ORACLE_TASKS")
    return int(text) if text else DEFAULT_TASKS


def test_generator_covers_what_it_promises():
    program = make_program(7, 400)
    assert any(spec.slicer == (slice(None),) for spec in program.views)
    assert any(s.step is not None and s.step < 0 for spec in program.views for s in spec.slicer)
    assert any(len(spec.slicer) == 2 for spec in program.views) and any(len(spec.slicer) == 1 for spec in program.views)
    assert any(spec.overlaps for spec in program.views)
    assert any(not spec.overlaps for spec in program.views) or len(program.views) > 1
    assert {m for _, _, modes, _ in program.tasks for m in modes.split(",")} == {"R", "W", "RW"}


def test_programs_without_failures_match_the_replay():
    figures = {"mismatches": 0}
    for seed in range(3):
        program = make_program(1000 + seed, 150)
        program.tasks = [(i, False, modes, chosen) for i, _, modes, chosen in program.tasks]
        for executor in ("thread", "process"):
            with hetflow.init(ncpus=2, nprocs=2, executor=executor):
                wrong = check(program, run(program), replay(program))
            assert not wrong, wrong[:5]
            figures["mismatches"] += len(wrong)
    assert figures["mismatches"] == 0


def test_random_programs_with_failures_match_the_replay():
    start = time.perf_counter()
    figures = oracle(_tasks_wanted(), seed=int(os.environ.get("HETFLOW_ORACLE_SEED", "1")), combinations=COMBINATIONS)
    took = time.perf_counter() - start
    print(
        f"\noracle: {figures['tasks']} tasks in {figures['programs']} programs checked in {took:.1f} s, "
        f"{figures['mismatches']} mismatches, {figures['injected']} failures injected, "
        f"{figures['dependency_errors']} dependency errors expected"
    )
    assert figures["injected"] > 0 and figures["dependency_errors"] > 0
    assert figures["mismatches"] == 0, figures["first_mismatches"]
