"""hetflow.joblib: StarPU-style parallel loops, and the backend for the real joblib."""
from __future__ import annotations

import asyncio
from math import log10

import numpy as np
import pytest

import hetflow
import hetflow.joblib as hj
from hf_tasks import in_a_worker


@pytest.fixture(autouse=True)
def runtime():
    hetflow.init(ncpus=3)
    yield
    hetflow.shutdown()


def square(x):
    return x * x


def test_partition_puts_the_remainder_first():
    assert [len(b) for b in hj.partition(list(range(10)), 3)] == [4, 3, 3]
    assert [len(b) for b in hj.partition(list(range(10)), 5)] == [2] * 5
    assert [len(b) for b in hj.partition(list(range(2)), 4)] == [1, 1]  # fewer items than blocks
    assert sum(hj.partition(list(range(10)), 3), []) == list(range(10))


@pytest.mark.parametrize("n_jobs, blocks", [(1, 1), (2, 2), (-1, 3), (-2, 2), (-4, 1)])
def test_n_jobs(n_jobs, blocks):
    assert hj.block_count(n_jobs) == blocks


def test_bad_n_jobs():
    with pytest.raises(ValueError, match="n_jobs=0 has no meaning"):
        hj.Parallel(n_jobs=0)(hj.delayed(square)(1) for _ in range(2))
    with pytest.raises(ValueError, match="out of range"):
        hj.block_count(-10)
    with pytest.raises(ValueError, match="mode must be"):
        hj.Parallel(mode="eventually")
    with pytest.raises(TypeError, match="n_jobs must be an int"):
        hj.block_count(True)


def test_n_jobs_may_be_a_numpy_integer():
    # Refused ("n_jobs must be an int, not np.int64(2)"), where joblib takes it.
    assert hj.block_count(np.int64(2)) == 2 and hj.block_count(np.int32(-1)) == 3
    assert hj.Parallel(n_jobs=np.int64(2))(hj.delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("n_jobs", [1, 2, 3, 7, -1])
def test_results_in_input_order(executor, n_jobs):
    results = hj.Parallel(n_jobs=n_jobs, executor=executor)(hj.delayed(square)(i) for i in range(23))
    assert results == [i * i for i in range(23)]


def test_each_block_is_one_task():
    lists = hj.Parallel(mode="future", n_jobs=3)(hj.delayed(square)(i) for i in range(10)).result()
    assert lists == [[0, 1, 4, 9], [16, 25, 36], [49, 64, 81]]


def test_mixed_functions_and_keywords():
    def power(x, exponent=1):
        return x**exponent

    calls = [hj.delayed(square)(3), hj.delayed(power)(2, exponent=5), hj.delayed(log10)(1000)]
    assert hj.parallel(n_jobs=2)(calls) == [9, 32, 3.0]


def test_future_mode_in_a_running_loop_prints_end_msg(capsys):
    async def main():
        fut = hj.parallel(mode="future", n_jobs=2, end_msg="ready!")(hj.delayed(square)(i) for i in range(4))
        return await fut

    assert asyncio.run(main()) == [[0, 1], [4, 9]]
    assert capsys.readouterr().out.startswith("ready! <_GatheringFuture finished")


def test_end_msg_is_not_printed_when_the_wait_is_cancelled(capsys):
    import time

    async def main():
        fut = hj.parallel(mode="future", n_jobs=2, end_msg="ready!")(hj.delayed(time.sleep)(0.5) for _ in range(2))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fut, 0.05)
        await asyncio.sleep(0.1)  # the cancellation's callbacks have run

    asyncio.run(main())
    assert "ready!" not in capsys.readouterr().out


def add_into(a, b, out):
    out[:] = a + b


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("shape", [(10,), (7, 3), (5, 2, 4)])
def test_cut_arrays_along_the_first_axis(executor, shape):
    a = np.arange(np.prod(shape), dtype=float).reshape(shape)
    b = np.ones(shape)
    out = np.zeros(shape)
    assert hj.Parallel(n_jobs=3, executor=executor)(hj.delayed(add_into)(a, b, out)) is None
    np.testing.assert_array_equal(out, a + b)


def doubled(a):
    return a * 2


def test_cut_results_are_joined():
    a = np.arange(11.0)
    np.testing.assert_array_equal(hj.Parallel(n_jobs=4)(hj.delayed(doubled)(a)), a * 2)
    gen_result = hj.Parallel(n_jobs=2)(hj.delayed(lambda xs: [x + 1 for x in xs])(x for x in range(5)))
    assert gen_result == [1, 2, 3, 4, 5]


def scaled_into(x, factor=2.0, out=None, *, offset=0.0):
    out[:] = x * factor + offset


def sums_with(a, b=10, c=100):
    return [float(v) + b + c for v in a]


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_keyword_arguments_of_a_cut_call_stay_keywords(executor):
    x = np.arange(6.0)
    out = np.zeros(6)
    hj.Parallel(n_jobs=2, executor=executor)(hj.delayed(scaled_into)(x, out=out, offset=1.0))  # cut too
    np.testing.assert_array_equal(out, x * 2.0 + 1.0)
    assert hj.Parallel(n_jobs=2, executor=executor)(hj.delayed(sums_with)(np.arange(4.0), c=1)) == [
        11.0, 12.0, 13.0, 14.0
    ]


def test_cut_arrays_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        hj.Parallel(n_jobs=2)(hj.delayed(add_into)(np.zeros(4), np.zeros(5), np.zeros(4)))


def test_not_delayed_calls_are_refused():
    with pytest.raises(TypeError, match="expected delayed"):
        hj.Parallel(n_jobs=2)([square])
    with pytest.raises(TypeError, match="expected delayed"):
        hj.Parallel(n_jobs=2)([(square, [1], {})])  # a tuple, but not one joblib.delayed makes


def test_calls_of_joblibs_own_delayed_run():
    # joblib.delayed(f)(x) is the plain tuple (f, (x,), {}): code written for joblib passes it.
    joblib = pytest.importorskip("joblib", reason="joblib is an optional dependency")
    out = np.zeros(2)
    calls = [joblib.delayed(square)(i) for i in range(6)] + [joblib.delayed(add_into)(np.ones(2), np.ones(2), hetflow.W(out))]
    assert hj.Parallel(n_jobs=2)(calls) == [0, 1, 4, 9, 16, 25, None]
    np.testing.assert_array_equal(out, [2.0, 2.0])


def test_perfmodel_records_block_lengths(tmp_path, monkeypatch):
    monkeypatch.setenv("HETFLOW_HOME", str(tmp_path))
    hj.Parallel(n_jobs=2, perfmodel="test-blocks")(hj.delayed(square)(i) for i in range(10))
    hetflow.shutdown()  # models are saved at shutdown
    from hetflow import perfmodel

    sizes = {entry["size"] for entry in perfmodel.entries("test-blocks")}
    assert sizes == {5}


def test_progress_bar_does_not_change_results():
    assert hj.Parallel(n_jobs=2, progress=True)(hj.delayed(square)(i) for i in range(6)) == [0, 1, 4, 9, 16, 25]


def test_real_joblib_runs_on_hetflow():
    joblib = pytest.importorskip("joblib", reason="joblib is an optional dependency")
    hj.register()
    with joblib.parallel_config(backend="hetflow"):
        assert joblib.Parallel(n_jobs=-1)(joblib.delayed(square)(i) for i in range(20)) == [i * i for i in range(20)]
        with pytest.raises(ZeroDivisionError):
            joblib.Parallel(n_jobs=2)(joblib.delayed(lambda x: 1 / x)(i) for i in range(3))


# -- the joblib backend ---------------------------------------------------------------------------
def slow_marked(i, directory, fail_at):
    import os
    import time

    if i == fail_at:
        raise KeyError(f"call {i} failed")
    time.sleep(0.2)
    open(os.path.join(directory, str(i)), "w").close()
    return i


@pytest.fixture
def joblib():
    module = pytest.importorskip("joblib", reason="joblib is an optional dependency")
    hj.register()
    return module


def _ran(directory):
    hetflow.wait_for_all()  # the batches already running when joblib gave up
    return len(list(directory.iterdir()))


def test_an_error_cancels_the_calls_not_started(joblib, tmp_path):
    calls = (joblib.delayed(slow_marked)(i, str(tmp_path), 2) for i in range(50))
    with pytest.raises(KeyError, match="call 2 failed"):
        joblib.Parallel(n_jobs=3, backend="hetflow", batch_size=1, pre_dispatch="all")(calls)
    assert _ran(tmp_path) < 25  # 49 without the cancelling


def test_a_timeout_cancels_the_calls_not_started(joblib, tmp_path):
    calls = (joblib.delayed(slow_marked)(i, str(tmp_path), -1) for i in range(50))
    import multiprocessing

    with pytest.raises(multiprocessing.TimeoutError):  # the error joblib raises
        joblib.Parallel(n_jobs=3, backend="hetflow", batch_size=1, pre_dispatch="all", timeout=0.01)(calls)
    assert _ran(tmp_path) < 25  # 50 without the cancelling


def test_a_generator_closed_early_cancels_the_calls_not_started(joblib, tmp_path):
    calls = (joblib.delayed(slow_marked)(i, str(tmp_path), -1) for i in range(50))
    output = joblib.Parallel(n_jobs=3, backend="hetflow", batch_size=1, pre_dispatch="all", return_as="generator")(
        calls
    )
    assert next(output) == 0
    with pytest.warns(UserWarning, match="cancelled"):  # joblib's note on the work given up
        output.close()
    assert _ran(tmp_path) < 25  # 50 without the cancelling


def pid_of(_):
    import os

    return os.getpid()


def nested_pids(i):
    import os

    import joblib

    inner = joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(pid_of)(j) for j in range(4))
    return os.getpid(), set(inner)


def test_nested_parallel_runs_on_the_worker_threads(joblib):
    hetflow.shutdown()
    hetflow.init(ncpus=2, executor="process")
    for outer, inner in joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(nested_pids)(i) for i in range(2)):
        assert outer != __import__("os").getpid()
        assert inner == {outer}  # no processes started inside the worker


def append_to(shared, i):
    shared.append(i)


def test_manager_proxies_work_in_the_worker_processes(joblib):
    import multiprocessing

    hetflow.shutdown()
    hetflow.init(ncpus=2, executor="process")
    with multiprocessing.Manager() as manager:
        shared = manager.list()
        joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(append_to)(shared, i) for i in range(6))
        assert sorted(shared) == list(range(6))


def test_short_calls_are_batched_and_progress_is_printed(joblib, monkeypatch, capsys):
    submitted = []
    submit = hetflow.task_submit

    def counting_submit(*args, **kwargs):
        submitted.append(args[0])
        return submit(*args, **kwargs)

    monkeypatch.setattr(hetflow, "task_submit", counting_submit)
    calls = (joblib.delayed(square)(i) for i in range(2000))
    assert joblib.Parallel(n_jobs=2, backend="hetflow", verbose=10)(calls) == [i * i for i in range(2000)]
    assert len(submitted) < 500  # one task a call without the batching
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "Batch computation too fast" in text and "Done 2000 out of 2000" in text


_setting = {}


def set_setting(value):
    import os

    _setting["value"] = value
    _setting["pid"] = os.getpid()


def read_setting(_):
    import os

    return _setting.get("value"), _setting.get("pid") == os.getpid()


def fail_setup_in_workers():
    if in_a_worker():
        raise OSError("no licence server")


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_init_runs_the_initializer_in_each_worker(joblib, executor):
    hetflow.shutdown()
    hetflow.init(ncpus=2, executor=executor, initializer=set_setting, initargs=("ready",))
    results = joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(read_setting)(i) for i in range(4))
    assert results == [("ready", True)] * 4


def test_a_failed_initializer_fails_the_tasks_with_its_error():
    hetflow.shutdown()
    hetflow.init(ncpus=1, executor="process", nprocs=1, initializer=fail_setup_in_workers)
    with pytest.raises(OSError, match="no licence server"):
        hetflow.task_submit(read_setting, 0).result()


def test_bad_initializer_settings_are_refused():
    with pytest.raises(ValueError, match="initializer must be callable"):
        hetflow.init(initializer="setup")
    with pytest.raises(ValueError, match="initargs must be a tuple"):
        hetflow.init(initializer=set_setting, initargs=[1])
    with pytest.raises(ValueError, match="initargs given without an initializer"):
        hetflow.init(initargs=(1,))


# -- the backend's pool: running batches stopped on abort, n_jobs, thread limits, shared inputs -----
def _alive(pid):
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stuck_after_marking(i, directory):
    """Call 0 fails once another call is running; the others mark their pid and never end."""
    import os
    import time

    if i == 0:
        for _ in range(400):
            if os.listdir(directory):
                raise KeyError("call 0 failed")
            time.sleep(0.05)
        raise AssertionError("no other call started")
    with open(os.path.join(directory, str(os.getpid())), "w"):
        pass
    time.sleep(600)


def _marked_pids(directory):
    return [int(name) for name in __import__("os").listdir(directory)]


def _wait_until_gone(pids):
    import time

    for _ in range(200):
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_an_error_ends_the_batches_still_running(joblib, tmp_path):
    with pytest.raises(KeyError, match="call 0 failed"):
        joblib.Parallel(n_jobs=2, backend="hetflow", batch_size=1)(
            joblib.delayed(stuck_after_marking)(i, str(tmp_path)) for i in range(2)
        )
    pids = _marked_pids(tmp_path)
    assert pids and _wait_until_gone(pids)  # they would sleep for 10 minutes otherwise


def sleep_marked(i, directory):
    import os
    import time

    with open(os.path.join(directory, str(os.getpid())), "w"):
        pass
    time.sleep(600)


def test_a_timeout_ends_the_batches_still_running(joblib, tmp_path):
    import multiprocessing

    joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(square)(i) for i in range(2))  # workers started
    with pytest.raises(multiprocessing.TimeoutError):
        joblib.Parallel(n_jobs=2, backend="hetflow", batch_size=1, timeout=5)(
            joblib.delayed(sleep_marked)(i, str(tmp_path)) for i in range(2)
        )
    pids = _marked_pids(tmp_path)
    assert pids and _wait_until_gone(pids)


def test_a_pool_survives_an_abort_for_the_next_loop(joblib, tmp_path):
    with pytest.raises(KeyError):
        joblib.Parallel(n_jobs=2, backend="hetflow", batch_size=1)(
            joblib.delayed(stuck_after_marking)(i, str(tmp_path)) for i in range(2)
        )
    assert joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def meet(barrier, _):
    import os

    barrier.wait(timeout=30)  # broken unless every worker is in a call at once
    return os.getpid()


@pytest.mark.parametrize("n_jobs", [2, 5])
def test_n_jobs_workers_exactly_even_beyond_the_runtimes(joblib, n_jobs):
    import multiprocessing

    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(n_jobs)
        pids = joblib.Parallel(n_jobs=n_jobs, backend="hetflow", batch_size=1)(
            joblib.delayed(meet)(barrier, i) for i in range(2 * n_jobs)
        )
    assert len(set(pids)) == n_jobs  # 5 > the runtime's 3 workers


def test_negative_n_jobs_count_from_the_runtimes_workers(joblib):
    with joblib.parallel_config(backend="hetflow"):
        assert joblib.effective_n_jobs(-1) == 3
        assert joblib.effective_n_jobs(-2) == 2
        assert joblib.effective_n_jobs(-9) == 1


def test_one_job_runs_here_and_threads_are_this_process(joblib):
    import os

    assert joblib.Parallel(n_jobs=1, backend="hetflow")(joblib.delayed(pid_of)(i) for i in range(3)) == [os.getpid()] * 3
    threads = joblib.Parallel(n_jobs=2, backend="hetflow", prefer="threads")(joblib.delayed(pid_of)(i) for i in range(4))
    assert threads == [os.getpid()] * 4


def thread_settings(_):
    import os

    return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def test_worker_processes_limit_blas_and_openmp_threads(joblib, monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    expected = str(max(joblib.cpu_count() // 2, 1))
    settings = joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(thread_settings)(i) for i in range(2))
    assert settings == [dict.fromkeys(settings[0], expected)] * 2
    with joblib.parallel_config(backend="hetflow", inner_max_num_threads=3):
        settings = joblib.Parallel(n_jobs=2)(joblib.delayed(thread_settings)(i) for i in range(2))
    assert settings == [dict.fromkeys(settings[0], "3")] * 2


def blas_threads(_):
    from threadpoolctl import threadpool_info

    import numpy

    numpy.ones((4, 4)) @ numpy.ones((4, 4))
    return {pool["num_threads"] for pool in threadpool_info()}


def test_blas_in_the_workers_uses_the_limit(joblib):
    pytest.importorskip("threadpoolctl", reason="threadpoolctl reads the BLAS thread counts")
    with joblib.parallel_config(backend="hetflow", inner_max_num_threads=1):
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(blas_threads)(i) for i in range(2)) == [{1}, {1}]


_started = []


def count_start(tag):
    import os

    _started.append((tag, os.getpid()))


def starts_seen(_):
    import os

    return os.getpid(), list(_started)


def test_backend_initializer_runs_once_in_each_worker(joblib):
    with joblib.parallel_config(backend="hetflow", initializer=count_start, initargs=("ready",)):
        seen = joblib.Parallel(n_jobs=2, batch_size=1)(joblib.delayed(starts_seen)(i) for i in range(6))
    for pid, started in seen:
        assert started == [("ready", pid)]


def describe(array, _):
    return type(array).__name__, array.flags.writeable, float(array.sum())


def test_large_arrays_reach_the_workers_once_through_shared_memory(joblib, monkeypatch):
    from hetflow import _data

    copies = []
    empty = _data.empty
    monkeypatch.setattr(_data, "empty", lambda *a, **k: copies.append(a) or empty(*a, **k))
    big, small = np.arange(400_000, dtype=np.float64), np.arange(10.0)
    seen = joblib.Parallel(n_jobs=2, backend="hetflow", batch_size=1)(
        joblib.delayed(describe)(array, i) for i in range(8) for array in (big, small)
    )
    assert seen == [("memmap", False, float(big.sum())), ("ndarray", True, float(small.sum()))] * 8
    assert len(copies) == 1  # once for the call, not once per task


def masked_mean(array):
    return type(array).__name__, float(array.mean())


def test_a_large_masked_array_keeps_its_mask(joblib):
    big = np.ma.masked_array(np.ones(200_000), mask=np.zeros(200_000, dtype=bool))
    big[::2] = 1000.0
    big[::2] = np.ma.masked
    seen = joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(masked_mean)(big) for _ in range(2))
    assert seen == [("MaskedArray", 1.0)] * 2


def write_first(array, value):
    array[0] = value
    return float(array[0])


def test_mmap_modes(joblib):
    big = np.zeros(300_000)
    run = lambda mode, **kw: joblib.Parallel(n_jobs=2, backend="hetflow", mmap_mode=mode, **kw)(  # noqa: E731
        joblib.delayed(write_first)(big, v) for v in (1.0, 2.0)
    )
    with pytest.raises(ValueError, match="read-only"):
        run("r")
    assert run("c") == [1.0, 2.0] and big[0] == 0  # writes stay in the task
    assert run(None) == [1.0, 2.0] and big[0] == 0  # copies
    assert run("r", max_nbytes=None) == [1.0, 2.0] and big[0] == 0
    shared = hetflow.zeros(300_000)
    assert joblib.Parallel(n_jobs=2, backend="hetflow", mmap_mode="r+")(
        joblib.delayed(write_first)(shared, 5.0) for _ in range(2)
    ) == [5.0, 5.0]
    assert shared[0] == 5.0  # hetflow's shared memory is mapped, not copied


def test_r_plus_does_not_write_a_read_only_array_in_hetflows_shared_memory(joblib):
    # It was mapped writable as it was: the workers wrote into an array the caller made read-only.
    frozen = hetflow.zeros(300_000)
    frozen.flags.writeable = False
    assert joblib.Parallel(n_jobs=2, backend="hetflow", mmap_mode="r+")(
        joblib.delayed(write_first)(frozen, 5.0) for _ in range(2)
    ) == [5.0, 5.0]
    assert frozen[0] == 0.0


def test_bad_mmap_mode_is_refused(joblib):
    with pytest.raises(ValueError, match="mmap_mode"):
        joblib.Parallel(n_jobs=2, backend="hetflow", mmap_mode="x")(joblib.delayed(square)(i) for i in range(2))


def test_loops_in_two_threads_at_once(joblib):
    import concurrent.futures

    def loop(offset):
        return joblib.Parallel(n_jobs=2, backend="hetflow", batch_size=1)(
            joblib.delayed(square)(offset + i) for i in range(30)
        )

    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        results = list(threads.map(loop, (0, 100)))
    assert results == [[i * i for i in range(30)], [(100 + i) ** 2 for i in range(30)]]


def double(x):
    return x * 2


@pytest.mark.parametrize("shape", [(0,), (0, 3)])
def test_an_empty_array_given_to_a_cut_call_runs_it_once(shape):
    hetflow.init(ncpus=2, executor="thread")
    result = hj.Parallel(n_jobs=2)(hj.delayed(double)(np.zeros(shape)))
    assert isinstance(result, np.ndarray) and result.shape == shape


def inner_parallel_sum(n):
    from joblib import Parallel, delayed  # imported by the task itself, in the worker

    return sum(Parallel(n_jobs=2, backend="hetflow")(delayed(abs)(-i) for i in range(n)))


def test_a_process_task_may_ask_joblib_for_the_hetflow_backend():
    hetflow.joblib.register()
    hetflow.init(ncpus=2, executor="process")
    assert hetflow.submit(inner_parallel_sum, 10).result(timeout=60) == 45
    with hetflow.Executor(2) as executor:
        assert executor.submit(inner_parallel_sum, 20).result(timeout=60) == 190


def test_hetflow_joblib_raises_a_failure_without_waiting_for_the_calls_before_it():
    import threading

    release = threading.Event()

    def call(i):
        if i == 1:
            raise ValueError("call 1 failed")
        release.wait(timeout=10)  # bounds a broken run
        return i

    try:
        with pytest.raises(ValueError, match="call 1 failed"):
            hj.Parallel(n_jobs=2, executor="thread")(hj.delayed(call)(i) for i in range(2))
        assert not release.is_set()
    finally:
        release.set()


def test_progress_line_for_hetflow_joblib_parallel(capsys):
    assert hj.Parallel(n_jobs=2, progress=True)(hj.delayed(square)(i) for i in range(6)) == [0, 1, 4, 9, 16, 25]
    assert "hetflow: 2/2 tasks done" in capsys.readouterr().err


def fill_with(view, value):
    view[...] = value
    return view.tolist()


def test_views_of_file_backed_memmaps_are_mapped_again_not_copied(joblib, tmp_path):
    mapped = np.memmap(tmp_path / "data", dtype=np.float64, shape=(100,), mode="w+", offset=16)
    mapped[:] = np.arange(100)
    views = [mapped[10:13], mapped[::-40], mapped.reshape(10, 10)[2:4, 1:3]]
    expected = [view.tolist() for view in views]
    assert joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(np.ndarray.tolist)(v) for v in views) == expected
    joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(fill_with)(v, -1.0) for v in views)
    assert all((view == -1.0).all() for view in views)  # the workers wrote into the file
    assert mapped[9] == 9.0 and mapped[14] == 14.0


def test_initializer_given_to_parallel(joblib):
    seen = joblib.Parallel(n_jobs=2, backend="hetflow", batch_size=1, initializer=count_start, initargs=("given",))(
        joblib.delayed(starts_seen)(i) for i in range(4)
    )
    for pid, started in seen:
        assert started == [("given", pid)]


def same(array):
    return array


def test_returned_inputs_keep_their_byte_order(joblib):
    big_endian = np.arange(300_000, dtype=">i4")
    returned = joblib.Parallel(n_jobs=2, backend="hetflow")(joblib.delayed(same)(big_endian) for _ in range(2))
    assert all(type(r) is np.ndarray and r.dtype == big_endian.dtype and (r == big_endian).all() for r in returned)


def copy_into(destination, source):
    destination[...] = source


@pytest.mark.parametrize("executor", ["process", "thread"])
@pytest.mark.parametrize("n_jobs", [1, 3])
@pytest.mark.parametrize("make", [np.arange, lambda n: hetflow.array(np.arange(n))], ids=["numpy", "shared"])
def test_a_call_reads_what_the_calls_before_it_wrote_beside_it(executor, n_jobs, make):
    # An array no task had used travelled in its block by value, pickled at submission: with
    # the process executor, a call reading a view that an earlier call of the loop (in its block
    # or an earlier one) wrote through a mark got the values from before the loop.
    data = make(30).astype(float)
    expected = data.copy()
    steps = range(0, 24, 3)
    hj.Parallel(n_jobs=n_jobs, executor=executor)(
        hj.delayed(copy_into)(hetflow.W(data[i + 2 : i + 4]), data[i : i + 2]) for i in steps
    )
    for i in steps:
        expected[i + 2 : i + 4] = expected[i : i + 2].copy()
    np.testing.assert_array_equal(data, expected)
    shifted = make(12).astype(float)
    expected = shifted.copy()
    hj.Parallel(n_jobs=n_jobs, executor=executor)(
        hj.delayed(copy_into)(destination=hetflow.W(shifted[i + 1 : i + 3]), source=shifted[i : i + 2]) for i in range(8)
    )
    for i in range(8):
        expected[i + 1 : i + 3] = expected[i : i + 2].copy()
    np.testing.assert_array_equal(shifted, expected)


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_failed_block_cancels_the_blocks_not_started(executor, tmp_path):
    # The list-returning loop raised the first failure and left the blocks not started to run
    # behind the caller's back (all 49 others ran), unlike joblib, hetflow.map and its own
    # generator and timeout paths.
    with pytest.raises(KeyError, match="call 0 failed"):
        hj.Parallel(n_jobs=50, executor=executor)(hj.delayed(slow_marked)(i, str(tmp_path), 0) for i in range(50))
    assert _ran(tmp_path) < 25


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
@pytest.mark.parametrize("abandon", ["close", "lose"])
def test_a_generator_abandoned_before_its_first_result_cancels_the_blocks_not_started(return_as, abandon, tmp_path):
    # A generator never started ignores close(), and one lost runs no finally: every block ran.
    output = hj.Parallel(n_jobs=50, executor="thread", return_as=return_as)(
        hj.delayed(slow_marked)(i, str(tmp_path), -1) for i in range(50)
    )
    if abandon == "close":
        output.close()
    else:
        del output
    assert _ran(tmp_path) < 25
