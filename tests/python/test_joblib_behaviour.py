"""joblib's documented behaviour (Parallel, parallel_config, delayed) with hetflow as the default
backend: code written for joblib must run unchanged on ``backend="hetflow"``.

Every test runs inside ``joblib.parallel_config(backend="hetflow")``. Tests that need calls to
run at the same time make them wait for each other on a ``multiprocessing.Manager`` barrier, so
that a backend running fewer of them at once fails with ``BrokenBarrierError`` instead of
passing by luck; none of them measures time.
"""
from __future__ import annotations

import functools
import inspect
import multiprocessing
import os
import threading
import time
import types
import warnings
from typing import Any, Iterator, List

import pytest

import hetflow.joblib

joblib = pytest.importorskip("joblib", reason="joblib is an optional dependency")
np = pytest.importorskip("numpy")

WAIT_S = 20  # how long a call waits for the others before the test fails
THREAD_LIMIT_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LARGE = 300_000  # float64 items: 2.4 MB, above joblib's default max_nbytes ("1M")


@pytest.fixture(autouse=True, scope="module")
def hetflow_is_the_default_backend():
    hetflow.joblib.register()
    with joblib.parallel_config(backend="hetflow"):
        yield


@pytest.fixture(scope="module")
def manager():
    with multiprocessing.Manager() as started:
        yield started


@pytest.fixture
def release(manager):
    """An event the calls wait on; set at the end of the test whatever happened."""
    event = manager.Event()
    yield event
    event.set()


# -- what the calls do (module level: worker processes import them by name) ----------------------
class Refused(Exception):
    """An error of the test's own, to check that its type comes back."""


def square(x: int) -> int:
    return x * x


def power(x: int, exponent: int = 1, offset: int = 0) -> int:
    return x**exponent + offset


def sleep_then_return(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def pid_of(_: Any = None) -> int:
    return os.getpid()


def pid_after_barrier(barrier: Any, _: Any = None) -> int:
    barrier.wait(WAIT_S)
    return os.getpid()


def thread_after_barrier(barrier: threading.Barrier, _: Any = None) -> int:
    barrier.wait(WAIT_S)
    return threading.get_ident()


def wait_for(event: Any, value: Any) -> Any:
    if not event.wait(WAIT_S):
        raise RuntimeError(f"call {value} was never released")
    return value


def first_returns_then_wait(event: Any, i: int) -> int:
    return i if i == 0 else wait_for(event, i)


def first_fails_then_wait(event: Any, i: int) -> int:
    if i == 0:
        raise Refused("call 0 refused")
    return wait_for(event, i)


def raise_at(i: int, bad: int, error: type) -> int:
    if i == bad:
        raise error(f"item {i} is bad")
    return i


def array_as_seen(a: Any) -> tuple:
    return type(a).__name__, isinstance(a, np.memmap), bool(a.flags.writeable), float(a.sum())


def nested_in_containers(a: Any) -> dict:
    """The input given back at the top, in a list, a tuple, a dict and an object, and a view."""
    return {
        "top": a, "list": [a], "tuple": (a, 1), "dict": {"inner": {"deeper": a}},
        "object": types.SimpleNamespace(array=a), "view": a[::2],
    }


def write_then_read(a: Any, barrier: Any, i: int) -> tuple:
    """Writes slot ``i``, waits until the other call has written its slot, reads both."""
    a[i] = i + 1
    barrier.wait(WAIT_S)
    return float(a[0]), float(a[1])


def overwrite(a: Any) -> float:
    a[:] = -1.0
    return float(a[0])


def fill_row(output: Any, i: int) -> None:
    output[i] = i * 10.0


def thread_limits(_: Any = None) -> dict:
    return {name: os.environ.get(name) for name in THREAD_LIMIT_VARS}


def inner_loop(inner_backend: Any, i: int) -> tuple:
    """A call that runs a Parallel loop of its own; reports where its inner calls ran."""
    outer_thread = threading.get_ident()
    kwargs = {} if inner_backend is None else {"backend": inner_backend}
    inner = joblib.Parallel(n_jobs=2, **kwargs)(joblib.delayed(where)(i * 10 + j) for j in range(4))
    values = [value for value, _, _ in inner]
    return os.getpid(), outer_thread, values, {pid for _, pid, _ in inner}, {thread for _, _, thread in inner}


def where(value: int) -> tuple:
    return value, os.getpid(), threading.get_ident()


_initialized: dict = {}


def remember_setting(log: Any, value: str) -> None:
    _initialized["value"] = value
    _initialized["pid"] = os.getpid()
    log.append(os.getpid())


def read_setting(_: Any = None) -> tuple:
    return _initialized.get("value"), _initialized.get("pid") == os.getpid(), os.getpid()


def big_array(i: int) -> Any:
    return np.full(1_000_000, float(i))  # 8 MB


class Scaler:
    """A callable object with state of its own."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return self.factor * x

    def shifted(self, x: int, shift: int = 0) -> int:
        return self.factor * x + shift


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def counting(calls: List[Any], pulled: List[int]) -> Iterator[Any]:
    """The calls as a generator that records how many joblib has taken."""
    for call in calls:
        pulled.append(1)
        yield call


def cpus() -> int:
    return joblib.cpu_count()


# -- results and their order ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["list", "generator"])
def test_results_come_in_input_order(kind):
    calls = (joblib.delayed(square)(i) for i in range(40))
    results = joblib.Parallel(n_jobs=2)(list(calls) if kind == "list" else calls)
    assert results == [i * i for i in range(40)]
    # the first calls are the slowest: they tend to finish last, and still come first
    slow_first = (joblib.delayed(sleep_then_return)((8 - i) * 0.005, i) for i in range(8))
    assert joblib.Parallel(n_jobs=2, batch_size=1)(slow_first) == list(range(8))
    assert joblib.Parallel(n_jobs=2)([]) == []


def test_return_as_generator_yields_results_in_order():
    output = joblib.Parallel(n_jobs=2, return_as="generator")(joblib.delayed(square)(i) for i in range(20))
    assert inspect.isgenerator(output)
    assert list(output) == [i * i for i in range(20)]


def test_return_as_generator_unordered_yields_results_as_they_complete(release):
    output = joblib.Parallel(n_jobs=2, batch_size=1, return_as="generator_unordered")(
        joblib.delayed(wait_for)(release, i) if i == 0 else joblib.delayed(square)(i) for i in range(2)
    )
    assert next(output) == 1  # call 0 cannot finish before the test releases it
    release.set()
    assert list(output) == [0]


# -- errors, timeouts, outputs closed early ---------------------------------------------------------
@pytest.mark.parametrize("error", [ValueError, KeyError, Refused])
def test_an_error_in_a_call_reaches_the_caller_with_its_type_and_message(error):
    with pytest.raises(error, match="item 7 is bad"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(raise_at)(i, 7, error) for i in range(20))


def test_after_an_error_the_remaining_calls_are_not_dispatched(release):
    pulled: List[int] = []
    calls = [joblib.delayed(first_fails_then_wait)(release, i) for i in range(50)]
    with pytest.raises(Refused, match="call 0 refused"):
        joblib.Parallel(n_jobs=2, batch_size=1)(counting(calls, pulled))
    assert len(pulled) < 50
    release.set()
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_a_call_slower_than_the_timeout_raises_timeout_error(release):
    with pytest.raises(multiprocessing.TimeoutError):  # the error joblib documents
        joblib.Parallel(n_jobs=2, timeout=0.5)(joblib.delayed(wait_for)(release, i) for i in range(2))
    release.set()
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_a_generator_output_closed_early_stops_taking_calls(release):
    pulled: List[int] = []
    calls = [joblib.delayed(first_returns_then_wait)(release, i) for i in range(50)]
    output = joblib.Parallel(n_jobs=2, batch_size=1, return_as="generator")(counting(calls, pulled))
    assert next(output) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joblib may warn that it gave up running calls
        output.close()
    assert len(pulled) < 50
    with pytest.raises(StopIteration):
        next(output)
    release.set()
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


# -- nested loops -----------------------------------------------------------------------------------
def test_a_nested_loop_without_a_backend_runs_in_the_worker():
    results = joblib.Parallel(n_jobs=2)(joblib.delayed(inner_loop)(None, i) for i in range(3))
    for i, (outer_pid, _, values, inner_pids, _) in enumerate(results):
        assert outer_pid != os.getpid()
        assert values == [i * 10 + j for j in range(4)]
        assert inner_pids == {outer_pid}  # no processes started inside a worker


@pytest.mark.parametrize("inner_backend", ["threading", "sequential", "hetflow"])
def test_a_nested_loop_runs_on_the_backend_it_names(inner_backend):
    results = joblib.Parallel(n_jobs=2)(joblib.delayed(inner_loop)(inner_backend, i) for i in range(3))
    for i, (outer_pid, outer_thread, values, inner_pids, inner_threads) in enumerate(results):
        assert outer_pid != os.getpid()
        assert values == [i * 10 + j for j in range(4)]
        if inner_backend == "sequential":
            assert inner_pids == {outer_pid} and inner_threads == {outer_thread}
        elif inner_backend == "threading":
            assert inner_pids == {outer_pid} and outer_thread not in inner_threads


# -- memmapping of large numpy arrays ---------------------------------------------------------------
@pytest.mark.parametrize("mmap_mode", ["default", "r", "r+", "c"])
def test_a_large_array_reaches_the_workers_as_a_memmap(mmap_mode):
    a = np.arange(LARGE, dtype=np.float64)
    kwargs = {} if mmap_mode == "default" else {"mmap_mode": mmap_mode}
    seen = joblib.Parallel(n_jobs=2, **kwargs)(joblib.delayed(array_as_seen)(a) for _ in range(3))
    writeable = mmap_mode in ("r+", "c")  # joblib's default mode is "r"
    assert seen == [("memmap", True, writeable, float(a.sum()))] * 3


def test_a_memmapped_input_returned_comes_back_as_a_plain_array_at_any_depth():
    # In a dict it came back as a numpy.memmap with no file behind it.
    a = np.arange(LARGE, dtype=np.float64)
    for result in joblib.Parallel(n_jobs=2)(joblib.delayed(nested_in_containers)(a) for _ in range(2)):
        returned = [
            result["top"], result["list"][0], result["tuple"][0], result["dict"]["inner"]["deeper"],
            result["object"].array,
        ]
        assert [type(item) for item in returned + [result["view"]]] == [np.ndarray] * 6
        assert all((item == a).all() for item in returned) and (result["view"] == a[::2]).all()
        assert result["tuple"][1] == 1


def test_max_nbytes_sets_the_size_from_which_arrays_are_memmapped():
    a = np.arange(1000, dtype=np.float64)  # 8 kB
    for max_nbytes, memmapped in [(100, True), ("1K", True), ("1M", False), (None, False)]:
        seen = joblib.Parallel(n_jobs=2, max_nbytes=max_nbytes)(joblib.delayed(array_as_seen)(a) for _ in range(2))
        assert [memmapped] * 2 == [is_memmap for _, is_memmap, _, _ in seen], max_nbytes


@pytest.mark.parametrize(
    "size, settings",
    [(1000, {}), (LARGE, {"max_nbytes": None}), (LARGE, {"mmap_mode": None})],
    ids=["small", "max_nbytes=None", "mmap_mode=None"],
)
def test_small_arrays_and_disabled_memmapping_give_plain_copies(size, settings):
    a = np.arange(size, dtype=np.float64)
    seen = joblib.Parallel(n_jobs=2, **settings)(joblib.delayed(array_as_seen)(a) for _ in range(2))
    assert seen == [("ndarray", False, True, float(a.sum()))] * 2
    written = joblib.Parallel(n_jobs=2, **settings)(joblib.delayed(overwrite)(a) for _ in range(2))
    assert written == [-1.0, -1.0]
    assert a[0] == 0.0 and a[-1] == size - 1  # the workers wrote their own copies


@pytest.mark.parametrize("mmap_mode, expected", [("r+", [(1.0, 2.0)] * 2), ("c", [(1.0, 0.0), (0.0, 2.0)])])
def test_r_plus_writes_are_shared_by_the_calls_and_c_writes_are_private(manager, mmap_mode, expected):
    a = np.zeros(LARGE)
    barrier = manager.Barrier(2)
    seen = joblib.Parallel(n_jobs=2, batch_size=1, mmap_mode=mmap_mode)(
        joblib.delayed(write_then_read)(a, barrier, i) for i in range(2)
    )
    assert seen == expected
    assert not a.any()  # the calls wrote to the workers' mapping, not to this array


def test_workers_write_results_into_a_memmap_given_to_them(tmp_path):
    output = np.memmap(tmp_path / "output.mmap", dtype=np.float64, shape=(8,), mode="w+")
    joblib.Parallel(n_jobs=2)(joblib.delayed(fill_row)(output, i) for i in range(8))
    assert output.tolist() == [i * 10.0 for i in range(8)]


# -- n_jobs -----------------------------------------------------------------------------------------
def test_n_jobs_1_runs_the_calls_in_this_process():
    seen: List[int] = []
    results = joblib.Parallel(n_jobs=1)(joblib.delayed(seen.append)(i) for i in range(5))
    assert results == [None] * 5 and seen == list(range(5))  # the calls had this very list
    assert joblib.Parallel(n_jobs=1)(joblib.delayed(pid_of)(i) for i in range(3)) == [os.getpid()] * 3


@pytest.mark.parametrize("n_jobs", [-1, -2])
def test_negative_n_jobs_count_from_the_cpus(manager, n_jobs):
    expected = max(cpus() + 1 + n_jobs, 1)
    assert joblib.effective_n_jobs(n_jobs) == expected
    if expected == 1:
        assert joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(pid_of)(i) for i in range(3)) == [os.getpid()] * 3
    else:
        barrier = manager.Barrier(expected)
        pids = joblib.Parallel(n_jobs=n_jobs, batch_size=1)(
            joblib.delayed(pid_after_barrier)(barrier, i) for i in range(expected)
        )
        assert len(set(pids)) == expected and os.getpid() not in pids


def test_more_workers_than_cpus_when_asked(manager):
    n_jobs = cpus() + 2
    barrier = manager.Barrier(n_jobs)  # every call waits until all n_jobs of them run
    pids = joblib.Parallel(n_jobs=n_jobs, batch_size=1)(
        joblib.delayed(pid_after_barrier)(barrier, i) for i in range(n_jobs)
    )
    assert len(set(pids)) == n_jobs and os.getpid() not in pids


def test_n_jobs_0_is_refused():
    with pytest.raises(ValueError):
        joblib.Parallel(n_jobs=0)(joblib.delayed(square)(i) for i in range(2))


def test_effective_n_jobs():
    assert joblib.effective_n_jobs(3) == 3
    assert joblib.effective_n_jobs(1) == 1
    assert joblib.effective_n_jobs(-1) == cpus()
    assert joblib.effective_n_jobs() == cpus()  # its default is n_jobs=-1
    assert joblib.effective_n_jobs(None) == 1  # one job unless the config says more
    with joblib.parallel_config(n_jobs=3):
        assert joblib.effective_n_jobs(None) == 3


def test_parallel_config_sets_the_default_n_jobs(manager):
    barrier = manager.Barrier(2)
    with joblib.parallel_config(n_jobs=2):
        pids = joblib.Parallel(batch_size=1)(joblib.delayed(pid_after_barrier)(barrier, i) for i in range(2))
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert joblib.Parallel()(joblib.delayed(pid_of)(i) for i in range(2)) == [os.getpid()] * 2


# -- batches and dispatching ------------------------------------------------------------------------
def test_an_explicit_batch_size_groups_consecutive_calls():
    # 24 calls: joblib takes batch_size * n_jobs calls at a time and makes the batches smaller
    # when fewer are left, which 24 avoids
    with joblib.Parallel(n_jobs=2, batch_size=4, pre_dispatch="all") as parallel:
        pids = parallel(joblib.delayed(pid_of)(i) for i in range(24))
        assert parallel.n_dispatched_batches == 6 and parallel.n_dispatched_tasks == 24
    for start in range(0, 24, 4):
        assert len(set(pids[start : start + 4])) == 1  # one batch runs in one worker
    assert os.getpid() not in pids


def test_auto_batch_size_batches_short_calls():
    with joblib.Parallel(n_jobs=2, batch_size="auto") as parallel:
        assert parallel(joblib.delayed(square)(i) for i in range(3000)) == [i * i for i in range(3000)]
        assert parallel.n_dispatched_tasks == 3000
        assert parallel.n_dispatched_batches < 3000


@pytest.mark.parametrize("pre_dispatch, taken", [(3, 3), ("2*n_jobs", 4), ("all", 10)])
def test_pre_dispatch_bounds_the_calls_taken_ahead(release, pre_dispatch, taken):
    pulled: List[int] = []
    calls = [joblib.delayed(wait_for)(release, i) for i in range(10)]
    output = joblib.Parallel(n_jobs=2, batch_size=1, pre_dispatch=pre_dispatch, return_as="generator")(
        counting(calls, pulled)
    )
    assert len(pulled) == taken  # no call can finish before the release
    release.set()
    assert list(output) == list(range(10))
    assert len(pulled) == 10


def test_verbose_prints_progress(capsys):
    joblib.Parallel(n_jobs=2, verbose=0)(joblib.delayed(square)(i) for i in range(10))
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    joblib.Parallel(n_jobs=2, verbose=10)(joblib.delayed(square)(i) for i in range(10))
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "Using backend HetflowBackend with 2 concurrent workers" in text
    assert "Done  10 out of  10" in text


def test_a_parallel_context_reuses_its_workers_for_every_call(manager):
    barrier = manager.Barrier(2)
    with joblib.Parallel(n_jobs=2, batch_size=1) as parallel:
        first = parallel(joblib.delayed(pid_after_barrier)(barrier, i) for i in range(2))
        second = parallel(joblib.delayed(pid_after_barrier)(barrier, i) for i in range(2))
        third = parallel(joblib.delayed(square)(i) for i in range(5))
    assert len(set(first)) == 2 and set(second) == set(first)
    assert third == [0, 1, 4, 9, 16]


# -- threads ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("hint", [{"prefer": "threads"}, {"require": "sharedmem"}])
def test_threads_run_in_this_process_and_share_its_memory(hint):
    # require="sharedmem" makes joblib itself switch to threads; prefer="threads" is a hint that
    # joblib leaves to the chosen backend, and hetflow's follows it
    barrier = threading.Barrier(2)  # a plain one: only threads of this process can pass it
    threads = joblib.Parallel(n_jobs=2, batch_size=1, **hint)(
        joblib.delayed(thread_after_barrier)(barrier, i) for i in range(2)
    )
    assert len(set(threads)) == 2
    seen: List[int] = []
    joblib.Parallel(n_jobs=2, **hint)(joblib.delayed(seen.append)(i) for i in range(10))
    assert sorted(seen) == list(range(10))
    a = np.zeros(LARGE)
    ids = joblib.Parallel(n_jobs=2, **hint)(joblib.delayed(id)(a) for _ in range(2))
    assert ids == [id(a)] * 2  # the array itself, neither copied nor memmapped


# -- what can be called, and what comes back --------------------------------------------------------
def test_lambdas_and_closures_are_sent_to_the_workers():
    offset = 100

    def add_offset(x):
        return x + offset

    assert joblib.Parallel(n_jobs=2)(joblib.delayed(lambda x: x * 3)(i) for i in range(5)) == [0, 3, 6, 9, 12]
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(add_offset)(i) for i in range(3)) == [100, 101, 102]


def test_keyword_arguments_reach_the_calls():
    results = joblib.Parallel(n_jobs=2)(joblib.delayed(power)(i, exponent=2, offset=i) for i in range(6))
    assert results == [i * i + i for i in range(6)]
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(power)(x=3, exponent=3) for _ in range(2)) == [27, 27]


def test_callable_objects_methods_partials_and_classes():
    triple = Scaler(3)
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(triple)(i) for i in range(4)) == [0, 3, 6, 9]
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(triple.shifted)(i, shift=1) for i in range(3)) == [1, 4, 7]
    cube = functools.partial(power, exponent=3)
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(cube)(i) for i in range(4)) == [0, 1, 8, 27]
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
    points = joblib.Parallel(n_jobs=2)(joblib.delayed(Point)(i, y=-i) for i in range(3))
    assert [(p.x, p.y) for p in points] == [(0, 0), (1, -1), (2, -2)]


def test_large_return_values_come_back_whole():
    arrays = joblib.Parallel(n_jobs=2)(joblib.delayed(big_array)(i) for i in range(3))
    for i, a in enumerate(arrays):
        assert a.shape == (1_000_000,) and (a == i).all()
    blobs = joblib.Parallel(n_jobs=2)(joblib.delayed(bytes)(8_000_000) for _ in range(2))
    assert [len(b) for b in blobs] == [8_000_000] * 2 and not any(any(b) for b in blobs)


# -- backend settings given to parallel_config ------------------------------------------------------
def test_inner_max_num_threads_limits_the_threads_of_the_workers():
    with joblib.parallel_config(backend="hetflow", inner_max_num_threads=2):
        limits = joblib.Parallel(n_jobs=2)(joblib.delayed(thread_limits)(i) for i in range(4))
    assert limits == [dict.fromkeys(THREAD_LIMIT_VARS, "2")] * 4


def test_worker_thread_limits_default_to_cpus_over_n_jobs_unless_set(monkeypatch):
    for name in THREAD_LIMIT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # a limit set by the user is kept
    limits = joblib.Parallel(n_jobs=2)(joblib.delayed(thread_limits)(i) for i in range(4))
    default = str(max(cpus() // 2, 1))
    assert limits == [{"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": default, "MKL_NUM_THREADS": default}] * 4


def test_initializer_runs_once_in_each_worker(manager):
    log = manager.list()
    with joblib.parallel_config(backend="hetflow", initializer=remember_setting, initargs=(log, "ready")):
        results = joblib.Parallel(n_jobs=2)(joblib.delayed(read_setting)(i) for i in range(8))
    assert [(value, same) for value, same, _ in results] == [("ready", True)] * 8
    assert len(set(log)) == len(log)  # once in each worker
    assert {pid for _, _, pid in results} <= set(log)
    assert os.getpid() not in log


def test_initializer_given_to_parallel_runs_in_each_worker(manager):
    # Parallel passes the keywords it does not know to the backend's configure()
    log = manager.list()
    results = joblib.Parallel(n_jobs=2, initializer=remember_setting, initargs=(log, "configured"))(
        joblib.delayed(read_setting)(i) for i in range(8)
    )
    assert [(value, same) for value, same, _ in results] == [("configured", True)] * 8
    assert {pid for _, _, pid in results} <= set(log)
