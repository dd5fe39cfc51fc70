"""hetflow.joblib.Parallel (StarPU's joblib): joblib's keywords it takes work as joblib documents
them (timeout, return_as), the others and unknown keywords are refused by name; a cut call reads
read-only arrays, and its blocks' results are joined or refused with what each block returned."""
from __future__ import annotations

import multiprocessing
import threading
import types

import numpy as np
import pytest

import hetflow
import hetflow.joblib as hj

WAIT_S = 20  # bounds a broken run: how long a blocked call waits before it gives up


@pytest.fixture(autouse=True)
def runtime():
    hetflow.init(ncpus=3, executor="thread")
    yield
    hetflow.shutdown()


def square(x):
    return x * x


# -- keywords ---------------------------------------------------------------------------------------
def test_unknown_keywords_raise_type_error_naming_them():
    with pytest.raises(TypeError, match=r"unexpected keyword arguments 'bakend', 'verbos'.*did you mean 'backend'"):
        hj.Parallel(n_jobs=2, bakend="loky", verbos=10)


@pytest.mark.parametrize(
    "keyword, value, instead",
    [
        ("backend", "loky", "executor="),
        ("prefer", "threads", "executor="),
        ("require", "sharedmem", "executor="),
        ("verbose", 10, "progress=True"),
        ("batch_size", 4, "n_jobs"),
        ("pre_dispatch", "all", "submitted at once"),
        ("max_nbytes", None, "task arguments"),
        ("mmap_mode", "r", "task arguments"),
        ("temp_folder", "/tmp", "task arguments"),
    ],
)
def test_joblib_keywords_hetflow_does_not_take_say_what_to_use(keyword, value, instead):
    with pytest.raises(TypeError, match=f"does not take joblib's {keyword}=") as refused:
        hj.Parallel(n_jobs=2, **{keyword: value})
    assert instead in str(refused.value) and "backend='hetflow'" in str(refused.value)


def test_n_jobs_given_as_joblib_first_argument_is_explained():
    with pytest.raises(ValueError, match="give it by name, n_jobs=2"):
        hj.Parallel(2)


def wait_for(release, i):
    if i == 0:
        release.wait(WAIT_S)
    return i


@pytest.mark.parametrize("return_as", ["list", "generator", "generator_unordered"])
def test_timeout_raises_timeout_error_as_joblib(return_as):
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError, match=r"block 0 \(items 0 to 0\).* did not finish within timeout=0.2 s") as raised:
            list(hj.Parallel(n_jobs=2, timeout=0.2, return_as=return_as)(hj.delayed(wait_for)(release, i) for i in range(2)))
        assert isinstance(raised.value, multiprocessing.TimeoutError)  # what joblib raises
        assert not release.is_set()
    finally:
        release.set()


def test_timeout_cancels_the_blocks_not_started():
    hetflow.init(ncpus=1, executor="thread")
    release = threading.Event()
    ran = []

    def record(i):
        ran.append(i)
        return wait_for(release, i)

    try:
        with pytest.raises(TimeoutError):
            hj.Parallel(n_jobs=3, timeout=0.2)(hj.delayed(record)(i) for i in range(3))
    finally:
        release.set()
    hetflow.shutdown()  # waits for the block that was running
    assert ran == [0]


def test_results_within_the_timeout_are_returned():
    assert hj.Parallel(n_jobs=2, timeout=30)(hj.delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("timeout, error", [(0, ValueError), (-1.0, ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_timeouts_are_refused(timeout, error):
    with pytest.raises(error, match="timeout must be"):
        hj.Parallel(n_jobs=2, timeout=timeout)


def test_timeout_with_mode_future_is_refused():
    with pytest.raises(ValueError, match="timeout= applies to mode='normal'"):
        hj.Parallel(mode="future", n_jobs=2, timeout=1)


def test_return_as_generator_gives_the_results_in_order():
    output = hj.Parallel(n_jobs=3, return_as="generator")(hj.delayed(square)(i) for i in range(7))
    assert isinstance(output, types.GeneratorType)
    assert list(output) == [i * i for i in range(7)]


def test_return_as_generator_unordered_gives_a_block_as_soon_as_it_finishes():
    release = threading.Event()
    try:
        output = hj.Parallel(n_jobs=2, return_as="generator_unordered")(hj.delayed(wait_for)(release, i) for i in range(2))
        assert isinstance(output, types.GeneratorType)
        assert next(output) == 1  # block 1 is done while block 0 waits
        release.set()
        assert list(output) == [0]
    finally:
        release.set()


def test_a_failed_block_is_raised_by_the_generator():
    def fail_on_two(i):
        if i == 2:
            raise ValueError("call 2 failed")
        return i

    output = hj.Parallel(n_jobs=3, return_as="generator")(hj.delayed(fail_on_two)(i) for i in range(3))
    with pytest.raises(ValueError, match="call 2 failed"):
        list(output)


@pytest.mark.parametrize("return_as", ["lst", "iterator", None])
def test_unknown_return_as_is_refused(return_as):
    with pytest.raises(ValueError, match="return_as must be one of"):
        hj.Parallel(n_jobs=2, return_as=return_as)


def test_return_as_generator_with_mode_future_or_a_cut_call_is_refused():
    with pytest.raises(ValueError, match="applies to mode='normal'"):
        hj.Parallel(mode="future", n_jobs=2, return_as="generator")
    with pytest.raises(ValueError, match="a cut call"):
        hj.Parallel(n_jobs=2, return_as="generator")(hj.delayed(np.sum)(np.arange(4.0)))


# -- cut calls --------------------------------------------------------------------------------------
def column_sums(a):
    return a.sum(axis=0)


def read_only(array):
    array.setflags(write=False)
    return array


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: read_only(np.arange(10.0)), [10.0, 35.0]),
        (lambda: np.broadcast_to(np.arange(3.0), (10, 3)), [[0.0, 5.0, 10.0], [0.0, 5.0, 10.0]]),
        # A process task could not write it back (it travels whole, by value): read, not refused.
        (lambda: np.ma.masked_array(np.arange(10.0), mask=[0] * 10), [10.0, 35.0]),
    ],
    ids=["read-only", "broadcast_to", "masked"],
)
def test_a_cut_call_reads_arrays_that_cannot_be_written(executor, make, expected):
    array = make()
    result = hj.Parallel(n_jobs=2, executor=executor)(hj.delayed(column_sums)(array))
    np.testing.assert_array_equal(np.asarray(result).reshape(np.shape(expected)), expected)


def test_a_cut_call_still_writes_a_writable_output_next_to_a_read_only_input():
    source = read_only(np.arange(6.0))
    out = np.zeros(6)

    def doubled_into(a, out):
        out[:] = a * 2

    assert hj.Parallel(n_jobs=2)(hj.delayed(doubled_into)(source, out)) is None
    np.testing.assert_array_equal(out, source * 2)


def test_0d_array_results_are_stacked_one_per_block():
    result = hj.Parallel(n_jobs=2)(hj.delayed(lambda x: np.array(x.sum()))(np.arange(10.0)))
    np.testing.assert_array_equal(result, [10.0, 35.0])


def test_a_block_returning_none_among_others_is_an_error_naming_it():
    with pytest.raises(TypeError, match=r"block 0 \(items 0 to 4\) returned None; block 1 \(items 5 to 9\) returned a list"):
        hj.Parallel(n_jobs=2)(hj.delayed(lambda x: None if x[0] == 0 else x.tolist())(np.arange(10.0)))


def test_arrays_that_do_not_concatenate_are_an_error_naming_their_shapes():
    with pytest.raises(TypeError, match=r"block 0 .* returned an array of shape \(5, 1\).*block 1 .* shape \(5, 2\)"):
        hj.Parallel(n_jobs=2)(hj.delayed(lambda x: x.reshape(-1, 1) if x[0] == 0 else np.c_[x, x])(np.arange(10.0)))


def test_arrays_mixed_with_other_results_are_an_error():
    with pytest.raises(TypeError, match="some blocks returned arrays, others did not"):
        hj.Parallel(n_jobs=2)(hj.delayed(lambda x: x if x[0] == 0 else x.tolist())(np.arange(10.0)))


def _three_fails(x):
    if x == 3:
        raise ValueError("three")
    return x


def test_a_failed_block_raises_its_own_exception_in_future_mode_outside_an_event_loop():
    # The gathering task took the blocks as dependencies: it failed with a DependencyError.
    future = hj.Parallel(mode="future", n_jobs=2)(hj.delayed(_three_fails)(i) for i in range(6))
    with pytest.raises(ValueError, match="three"):
        future.result()
    # Without a failure, the blocks' results as before: one list per block.
    assert hj.Parallel(mode="future", n_jobs=2)(hj.delayed(_three_fails)(i) for i in range(3)).result() == [[0, 1], [2]]
