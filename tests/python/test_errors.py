"""Bad arguments get errors that say what was wrong and what is accepted (TypeError or
ValueError naming the parameter), never a binding layer's signature dump or an AttributeError,
and a bad call loses nothing already submitted."""
from __future__ import annotations

import threading

import pytest

import hetflow


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    hetflow.shutdown()


def f(a, b=1):
    return a + b


def _no_dump(error: BaseException) -> None:
    text = str(error)
    assert "incompatible function arguments" not in text and "supported" not in text, text
    assert not isinstance(error, AttributeError)


# -- init ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, parameter, accepted",
    [
        ({"ncpus": 10**30}, "ncpus", "1 to 4096"),
        ({"ncpus": 2, "nprocs": 10**30}, "nprocs", "0 to 1024"),
        ({"ncpus": 2, "spin_us": 10**30}, "spin_us", "microseconds"),
        ({"ncpus": 2, "spin_us": -1}, "spin_us", "0 to"),
        ({"ncpus": True}, "ncpus", "an int"),
        ({"ncpus": 2, "nprocs": 1.5}, "nprocs", "an int"),
        ({"ncpus": 2, "sched": 5}, "scheduler", "ws"),
        ({"ncpus": 2, "executor": 3}, "executor", "'thread' or 'process'"),
    ],
)
def test_bad_init_settings_name_the_parameter_and_what_is_accepted(settings, parameter, accepted):
    with pytest.raises((TypeError, ValueError)) as info:
        hetflow.init(**settings)
    _no_dump(info.value)
    assert parameter in str(info.value) and accepted in str(info.value)


def test_a_bad_init_leaves_the_running_runtime_and_its_work_alone():
    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    running = hetflow.submit(release.wait, 30)
    queued = [hetflow.submit(f, i) for i in range(5)]
    with pytest.raises(ValueError, match="ncpus"):
        hetflow.init(ncpus=10**30)
    release.set()
    assert running.result(timeout=30) is True
    assert [q.result(timeout=30) for q in queued] == [1, 2, 3, 4, 5]
    assert hetflow.ncpus() == 2


# -- task options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("priority", [True, 1.5, "high", None])
def test_priority_of_a_wrong_type_is_a_type_error(priority):
    with pytest.raises(TypeError, match="priority must be an int") as info:
        hetflow.task_submit.options(priority=priority)(f, 1)
    _no_dump(info.value)


def test_priority_out_of_the_engines_range_is_a_value_error():
    with pytest.raises(ValueError, match=r"priority=.* is out of range; use an int from -2147483648 to 2147483647"):
        hetflow.task_submit.options(priority=10**30, executor="process")(f, 1)
    with pytest.raises(ValueError, match="priority"):
        hetflow.delayed(priority=-(2**40))(f)


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_negative_priorities_are_accepted(executor):
    # Under the prio scheduler, lower than the default 0.
    assert hetflow.task_submit.options(priority=-5, executor=executor)(f, 1).result(timeout=30) == 2


@pytest.mark.parametrize("name", [5, b"bytes", ["x"]])
def test_name_of_a_wrong_type_is_a_type_error(name):
    with pytest.raises(TypeError, match="name must be a str"):
        hetflow.task_submit.options(name=name)(f, 1)
    with pytest.raises(TypeError, match="name must be a str"):
        hetflow.delayed(name=name)(f)


def test_priority_may_be_a_numpy_integer():
    # Refused ("priority must be an int, not int64"): priorities are often read from arrays.
    import numpy as np

    hetflow.init(ncpus=1, executor="thread")
    assert hetflow.task_submit.options(priority=np.int64(3))(f, 1).result(timeout=30) == 2
    assert hetflow.delayed(priority=np.int32(-2))(f)(2).result(timeout=30) == 3
    with pytest.raises(ValueError, match="out of range"):
        hetflow.task_submit.options(priority=np.int64(2**40))(f, 1)


def test_bad_options_at_decoration_time():
    with pytest.raises(TypeError, match="priority must be an int"):
        hetflow.delayed(priority="x")(f)


def test_a_bad_submission_loses_nothing_already_submitted():
    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    running = hetflow.submit(release.wait, 30)
    queued = [hetflow.submit(f, i) for i in range(5)]
    for bad in ({"priority": 1.5}, {"priority": 10**30}, {"name": 3}):
        with pytest.raises((TypeError, ValueError)):
            hetflow.task_submit.options(**bad)(f, 1)
    release.set()
    assert running.result(timeout=30) is True
    assert [q.result(timeout=30) for q in queued] == [1, 2, 3, 4, 5]


# -- delayed(access=...) ---------------------------------------------------------------------------
@pytest.mark.parametrize("access", ["RW", ["a"], ("a", "R")])
def test_access_must_be_a_dict_of_parameter_names_to_modes(access):
    with pytest.raises(TypeError, match="access must be a dict of parameter name -> mode") as info:
        hetflow.delayed(access=access)(f)
    _no_dump(info.value)


def test_access_names_a_parameter_of_the_function():
    with pytest.raises(ValueError, match="'c', which is not a parameter of f"):
        hetflow.delayed(access={"c": "R"})(f)


@pytest.mark.parametrize("mode", ["X", "rw+", 1, None])
def test_access_modes_are_r_w_or_rw(mode):
    with pytest.raises(ValueError, match=r"access\['a'\] is .*'R', 'W', 'RW' or 'REDUX'"):
        hetflow.delayed(access={"a": mode})(f)


# -- offload target ----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [1.0, "0", True, [0, 1.0], [None]])
def test_offload_target_of_a_wrong_type_is_a_type_error(target):
    hetflow.init(ncpus=2, nprocs=2)
    with pytest.raises(TypeError, match="target") as info:
        hetflow.offload(f)(1, target=target)
    _no_dump(info.value)
    with pytest.raises(TypeError, match="target"):
        hetflow.offload(target=target)(f)


# -- shutdown ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout, error", [(-1, ValueError), ("1", TypeError), (float("nan"), ValueError)])
def test_shutdown_timeout_must_be_seconds(timeout, error):
    hetflow.init(ncpus=1, executor="thread")
    future = hetflow.submit(f, 1)
    with pytest.raises(error, match="timeout must be None"):
        hetflow.shutdown(timeout=timeout)
    assert future.result(timeout=30) == 2
    assert hetflow.submit(f, 2).result(timeout=30) == 3  # the runtime is still running


def test_hetflow_ncpus_zero_is_an_error_not_the_default(monkeypatch):
    monkeypatch.setenv("HETFLOW_NCPUS", "0")
    with pytest.raises(ValueError, match="HETFLOW_NCPUS must be a positive whole number"):
        hetflow.init()


class Divider:
    @classmethod
    def divide(cls, x):
        return 1 / x  # the line the remote traceback shows


def test_a_process_tasks_traceback_shows_the_lines_of_a_classmethod():
    # cloudpickle sends a classmethod's function by value, from an importable module too: its
    # traceback showed <dynamic-code> and no line.
    hetflow.init(ncpus=1, nprocs=1, executor="process")
    with pytest.raises(ZeroDivisionError) as info:
        hetflow.submit(Divider.divide, 0).result(timeout=60)
    remote = str(info.value.__cause__)
    assert "<dynamic-code>" not in remote, remote
    assert "return 1 / x  # the line the remote traceback shows" in remote, remote


def test_a_process_tasks_traceback_shows_the_scripts_file_and_lines(tmp_path):
    # Functions of the main script travel by value, their code's file renamed <dynamic-code>:
    # the traceback showed neither the script nor its lines.
    from hf_subprocess import run_script

    rc, out, err = run_script(
        tmp_path,
        """
import hetflow

def inner(x):
    return 1 / x

def outer(x):
    return inner(x - 1)

hetflow.init(ncpus=1, nprocs=1, executor="process")
try:
    hetflow.submit(outer, 1).result(timeout=60)
except ZeroDivisionError as error:
    print(error.__cause__)
""",
    )
    assert rc == 0, err
    assert "<dynamic-code>" not in out, out
    import re

    assert re.search(r'script\.py", line \d+, in inner\n\s+return 1 / x', out), out


# -- bad input at the public entry points (a fuzz of each parameter) ---------------------------------
@pytest.mark.parametrize("limits", [{1: 2**64}, {2**63: 1 << 20}, {2**64: 1 << 20}])
def test_memory_limits_beyond_the_engines_range_are_a_value_error_naming_the_setting(limits):
    # They reached the binding layer, whose signature dump was the error.
    hetflow.init(ncpus=1, executor="thread")
    future = hetflow.submit(f, 1)
    with pytest.raises(ValueError, match="memory_limits") as info:
        hetflow.init(ncpus=1, executor="thread", memory_limits=limits)
    _no_dump(info.value)
    assert future.result(timeout=30) == 2


def test_memory_limits_take_numpy_integers():
    import numpy as np

    from hetflow import _runtime

    limits = _runtime.Settings(memory_limits={np.int64(1): np.uint64(1 << 20)}).memory_limits
    assert limits == {1: 1 << 20} and all(type(n) is int for item in limits.items() for n in item)


@pytest.mark.parametrize("trace", ["", "trace\x00.json"])
def test_a_trace_path_that_no_file_can_have_is_refused_at_init(trace):
    # Taken, it failed only at shutdown: a warning that the trace '' could not be written.
    hetflow.init(ncpus=1, executor="thread")
    future = hetflow.submit(f, 1)
    with pytest.raises(ValueError, match="trace"):
        hetflow.init(ncpus=1, executor="thread", trace=trace)
    assert future.result(timeout=30) == 2


@pytest.mark.parametrize("fn", [None, "print", 3])
def test_add_done_callback_refuses_what_cannot_be_called(fn):
    # Taken, it failed on the callback thread, a logged traceback, long after the call.
    hetflow.init(ncpus=1, executor="thread")
    future = hetflow.submit(f, 1)
    with pytest.raises(TypeError, match="add_done_callback: fn must be callable") as info:
        future.add_done_callback(fn)
    _no_dump(info.value)
    called = threading.Event()
    future.add_done_callback(lambda _: called.set())
    assert future.result(timeout=30) == 2 and called.wait(30)


@pytest.mark.parametrize("futures", [None, "x", [1], {0: 5}, {"a": None}])
def test_offload_handle_takes_a_dict_of_core_to_future(futures):
    with pytest.raises(TypeError, match="OffloadHandle takes a dict of core id") as info:
        hetflow.OffloadHandle(futures)
    _no_dump(info.value)


def test_mpi_distribute_takes_a_mapping_and_an_owner_function():
    import hetflow.mpi

    with pytest.raises(TypeError, match="arrays must be a mapping"):
        hetflow.mpi.distribute([1, 2], lambda key: 0)
    with pytest.raises(TypeError, match="owner must be a function"):
        hetflow.mpi.distribute({}, 0)


@pytest.mark.parametrize(
    "settings",
    [{"ncpus": "2"}, {"ncpus": 1.0}, {"sched": 5}, {"executor": 0}, {"stats": "yes"}, {"cuda": "yes"},
     {"initializer": "print"}, {"initargs": [1]}, {"trace": 1.5}, {"memory_limits": [1]}],
)
def test_an_init_setting_of_the_wrong_type_is_a_type_error(settings):
    # They were ValueErrors (still caught as such); executor=0 was taken for "the default".
    with pytest.raises(TypeError) as info:
        hetflow.init(**settings)
    assert isinstance(info.value, ValueError)
    assert next(iter(settings)).replace("sched", "scheduler") in str(info.value)


def _executor_map(**keywords):
    with hetflow.Executor(1, executor="thread") as executor:
        return list(executor.map(f, [1], **keywords))


@pytest.mark.parametrize(
    "call",
    [
        lambda: hetflow.map(f, [1], progress="yes"),
        lambda: hetflow.wait_for_all(progress=None),
        lambda: _executor_map(progress=[1]),
        lambda: __import__("hetflow.joblib").joblib.Parallel(progress="yes"),
    ],
)
def test_progress_is_true_or_false(call):
    # Any value was taken for its truth: "no" showed a bar.
    with pytest.raises(TypeError, match="progress must be True or False"):
        call()


@pytest.mark.parametrize("keyword", ["end_msg", "name"])
def test_joblib_parallel_texts_are_str(keyword):
    import hetflow.joblib

    with pytest.raises(TypeError, match=f"Parallel: {keyword} must be a str or None"):
        hetflow.joblib.Parallel(**{keyword: 0})


@pytest.mark.parametrize("context", [None, "gpu", 0])
def test_opencl_program_wants_a_context(context):
    # It raised AttributeError: 'NoneType' object has no attribute 'int_ptr'.
    with pytest.raises(TypeError, match="context must be a pyopencl.Context") as info:
        hetflow.opencl_kernel(context, "__kernel void k() {}", "k")
    _no_dump(info.value)


def test_offload_flags_are_true_or_false():
    # "no" was taken for its truth: an asynchronous launch, a handle instead of the values.
    with pytest.raises(TypeError, match="hetflow.offload: asynchronous must be True or False"):
        hetflow.offload(f, asynchronous="no")
    with pytest.raises(TypeError, match="hetflow.copy_to_device: asynchronous must be True or False"):
        hetflow.copy_to_device("v", 1, asynchronous="no")
    with pytest.raises(TypeError, match="as name"):
        hetflow.define_on_device(1.5, 1)


def test_block_cyclic_owners_take_a_pair_of_ints(tmp_path):
    # The owner function raised "not enough values to unpack" for a key that is not (i, j).
    from hf_subprocess import run_script

    rc, out, err = run_script(
        tmp_path,
        """
import hetflow, hetflow.mpi
hetflow.init(ncpus=1, executor="thread")
hetflow.mpi.init()
owner = hetflow.mpi.block_cyclic()
print(owner((3, 4)))
for key in ["x", (1,), (1, 2, 3), (1.5, 2)]:
    try:
        owner(key)
    except TypeError as error:
        print(error)
""",
    )
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "0" and len(lines) == 5, out
    assert all("a tile key is a pair of ints (i, j)" in line for line in lines[1:]), out


@pytest.mark.parametrize(
    "call",
    [
        lambda: hetflow.init(ncpus=1, sched="x" * 100_000),
        lambda: hetflow.init(ncpus=1, executor="x" * 100_000),
        lambda: hetflow.init(ncpus="x" * 100_000),
        lambda: hetflow.acquire(__import__("numpy").zeros(2), "x" * 100_000),
    ],
)
def test_an_absurdly_long_name_is_shortened_in_the_error(call):
    # The whole 100 000 characters were in the message.
    with pytest.raises(ValueError) as info:
        call()
    assert len(str(info.value)) < 300 and "xxx...xxx" in str(info.value), str(info.value)[:300]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: hetflow.array([1], order=__import__("numpy").zeros(3)), "order must be"),
        (lambda: hetflow.zeros(2, order=__import__("numpy").zeros(2)), "order must be"),
        (lambda: __import__("hetflow.joblib").joblib.Parallel(__import__("numpy").zeros(3)), "mode must be"),
    ],
)
def test_an_array_where_a_name_is_expected_names_the_parameter(call, message):
    # numpy's "truth value of an array ... is ambiguous" was the error.
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("n_jobs, error", [(len, TypeError), ("2", TypeError), (1.5, TypeError), (0, ValueError)])
def test_parallel_refuses_a_bad_n_jobs_where_it_is_made(n_jobs, error):
    # Refused only when called, which may be far from where the Parallel was made.
    import hetflow.joblib as hj

    with pytest.raises(error, match="n_jobs"):
        hj.Parallel(n_jobs=n_jobs)
