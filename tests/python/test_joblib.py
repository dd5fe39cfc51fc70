"""hetflow.joblib: StarPU-style parallel loops, and the backend for the real joblib."""
from __future__ import annotations

import asyncio
from math import log10

import numpy as np
import pytest

import hetflow
import hetflow.joblib as hj


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


def test_cut_arrays_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        hj.Parallel(n_jobs=2)(hj.delayed(add_into)(np.zeros(4), np.zeros(5), np.zeros(4)))


def test_not_delayed_calls_are_refused():
    with pytest.raises(TypeError, match="expected delayed"):
        hj.Parallel(n_jobs=2)([square])


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
