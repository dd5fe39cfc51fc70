"""Submitting work: task_submit/submit, per-call options, @delayed, futures as arguments and
the errors bad input gets."""
from __future__ import annotations

import collections
import os
import threading
import time

import pytest

import hetflow
from hf_tasks import EXECUTORS, add, submit_on

Pair = collections.namedtuple("Pair", "left right")


@pytest.fixture(autouse=True)
def _fresh_runtime():
    hetflow.init(ncpus=2, executor="process")
    yield
    hetflow.shutdown()


def echo(*args, **kwargs):
    return args, kwargs


def where():
    return os.getpid(), threading.get_ident()


def describe(value):
    return type(value).__name__, value


@hetflow.delayed
def mul(a, b):
    """Multiplies."""
    return a * b


@hetflow.delayed(name="scaled", priority=3, perfmodel="scale-model", executor="thread")
def scale(x, factor=2):
    return x * factor, os.getpid()


# -- task_submit / submit ----------------------------------------------------------------------------
def test_submit_is_task_submit():
    assert hetflow.submit is hetflow.task_submit


@pytest.mark.parametrize("executor", EXECUTORS)
def test_submit_passes_positional_and_keyword_arguments(executor):
    future = submit_on(executor)(echo, 1, "two", [3.0], key={"k": (4, None)})
    assert isinstance(future, hetflow.Future)
    assert future.result(timeout=30) == ((1, "two", [3.0]), {"key": {"k": (4, None)}})


def test_submit_uses_the_default_executor():
    assert hetflow.submit(where).result(timeout=30)[0] != os.getpid()
    hetflow.init(ncpus=2, executor="thread")
    assert hetflow.submit(where).result(timeout=30)[0] == os.getpid()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_builtins_lambdas_and_closures_run(executor):
    offset = 100
    submit = submit_on(executor)
    assert submit(sum, [1, 2, 3]).result(timeout=30) == 6
    assert submit(lambda x: x * 3, 5).result(timeout=30) == 15
    assert submit(lambda: offset + 1).result(timeout=30) == 101


@pytest.mark.parametrize("executor", EXECUTORS)
def test_returned_objects_come_back(executor):
    value = submit_on(executor)(lambda: {"pair": Pair(1, [2, 3]), "bytes": b"\x00\xff", "none": None})
    assert value.result(timeout=30) == {"pair": Pair(1, [2, 3]), "bytes": b"\x00\xff", "none": None}


def test_many_tasks_all_complete():
    futures = [hetflow.submit(add, i, i) for i in range(200)]
    assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(200)]


# -- options ----------------------------------------------------------------------------------------------
def test_options_executor_picks_where_the_task_runs():
    thread_pid, thread_ident = submit_on("thread")(where).result(timeout=30)
    process_pid, _ = submit_on("process")(where).result(timeout=30)
    assert thread_pid == os.getpid() and thread_ident != threading.get_ident()
    assert process_pid != os.getpid()


def test_options_name_names_the_future():
    future = hetflow.task_submit.options(name="my-task")(add, 1, 2)
    assert future.name == "my-task"
    assert "my-task" in repr(future)
    assert future.result(timeout=30) == 3


def test_the_default_name_is_the_functions():
    assert hetflow.submit(add, 1, 2).name == "add"
    assert hetflow.submit(lambda: 1).name == "<lambda>"


def test_priority_orders_queued_tasks_under_the_prio_scheduler():
    hetflow.init(ncpus=1, sched="prio", executor="thread")
    started, release = threading.Event(), threading.Event()

    def blocker():
        started.set()
        return release.wait(timeout=30)

    first = hetflow.submit(blocker)
    assert started.wait(timeout=30)
    order = []
    for priority in (1, 5, 3, 0, 9):
        hetflow.task_submit.options(priority=priority)(order.append, priority)
    release.set()
    assert hetflow.wait_for_all(timeout=30)
    assert first.result(timeout=0) is True
    assert order == [9, 5, 3, 1, 0]


def test_unknown_executor_option_raises_value_error():
    with pytest.raises(ValueError, match="gpu"):
        hetflow.task_submit.options(executor="gpu")


def test_non_int_priority_raises_type_error():
    with pytest.raises(TypeError, match="priority"):
        hetflow.task_submit.options(priority="high")(add, 1, 2)


# -- @delayed -------------------------------------------------------------------------------------
def test_delayed_calls_submit_tasks():
    future = mul(6, 7)
    assert isinstance(future, hetflow.Future)
    assert future.result(timeout=30) == 42
    assert future.name == "mul"


def test_delayed_keeps_the_functions_metadata():
    assert isinstance(mul, hetflow.DelayedFunction)
    assert mul.__name__ == "mul" and mul.__doc__ == "Multiplies."
    assert mul.func(2, 3) == 6  # the plain function


def test_delayed_with_options():
    future = scale(5, factor=3)
    assert future.name == "scaled"
    value, pid = future.result(timeout=30)
    assert value == 15 and pid == os.getpid()  # executor="thread"
    assert scale.perfmodel == "scale-model"


def test_delayed_options_returns_a_changed_copy():
    in_process = scale.options(executor="process", name="scaled-in-process")
    future = in_process(5)
    assert future.name == "scaled-in-process"
    value, pid = future.result(timeout=30)
    assert value == 10 and pid != os.getpid()
    # The original keeps its options.
    assert scale(1).name == "scaled" and scale(1).result(timeout=30)[1] == os.getpid()
    assert in_process.perfmodel == "scale-model"


def test_delayed_futures_chain():
    assert mul(mul(2, 3), mul(4, 5)).result(timeout=30) == 120


def test_delayed_function_passed_to_a_process_task_gives_its_value_there():
    assert hetflow.submit(lambda f: f(3, 4), mul).result(timeout=30) == 12


def twice_mul(x):
    return mul(x, 2) * 2  # a delayed function's value inside a task, whichever executor


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_delayed_function_called_inside_a_task_returns_its_value_in_either_executor(executor):
    # In a thread task it returned a future: a function that worked on processes failed on threads.
    assert submit_on(executor)(twice_mul, 3).result(timeout=30) == 12
    assert submit_on(executor)(mul, 3, 4).result(timeout=30) == 12


def mul_of_a_child(x):
    child = hetflow.submit.options(executor="thread")(lambda: 7)
    return mul(child, x) + mul(x, b=[child][0]) + mul([child], 1)[0]  # as the program would write it


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_delayed_function_called_inside_a_task_with_futures_gets_their_values(executor):
    # It ran as the plain function on the futures themselves: "unsupported operand type(s) for
    # *: 'Future' and 'int'", where the same call in the program waits for them.
    assert submit_on(executor)(mul_of_a_child, 3).result(timeout=30) == 21 + 21 + 7


def returns_its_childs_future(nested):
    child = hetflow.submit.options(executor="thread")(lambda: 7)
    return {"child": [child]} if nested else child


@pytest.mark.parametrize("nested", [False, True])
def test_a_process_task_that_returns_a_future_says_to_return_its_value(nested):
    # It said "a Future cannot be pickled; pass it as an argument of a task instead".
    future = submit_on("process")(returns_its_childs_future, nested)
    said = r"returned a hetflow\.Future.*return its value \(future\.result\(\)\)"
    with pytest.raises(TypeError, match=said) as raised:
        future.result(timeout=30)
    assert ("['child'][0]" in str(raised.value)) == nested
    assert submit_on("thread")(returns_its_childs_future, False).result(timeout=30).result(timeout=30) == 7


def test_delayed_lambda_and_bad_inputs():
    double = hetflow.delayed(lambda x: 2 * x)
    assert double(21).result(timeout=30) == 42
    with pytest.raises(TypeError, match="not callable"):
        hetflow.delayed(42)
    with pytest.raises(TypeError, match="colour"):
        mul.options(colour="red")
    with pytest.raises(ValueError, match="gpu"):
        mul.options(executor="gpu")
    with pytest.raises(ValueError, match="gpu"):
        hetflow.delayed(executor="gpu")


# -- futures as arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_future_argument_is_replaced_by_its_value(executor):
    submit = submit_on(executor)
    first = submit(add, 1, 2)
    assert submit(add, first, 10).result(timeout=30) == 13
    assert submit(add, a=first, b=first).result(timeout=30) == 6


@pytest.mark.parametrize("executor", EXECUTORS)
def test_nested_future_arguments_are_replaced(executor):
    submit = submit_on(executor)
    one, two, three = submit(lambda: 1), submit(lambda: 2), submit(lambda: 3)
    future = submit(echo, [one, (two, {"three": three})], mapping={"xs": [one, two], "t": (three,)})
    assert future.result(timeout=30) == (([1, (2, {"three": 3})],), {"mapping": {"xs": [1, 2], "t": (3,)}})


@pytest.mark.parametrize("executor", EXECUTORS)
def test_container_types_are_kept_when_futures_are_replaced(executor):
    submit = submit_on(executor)
    one = submit(lambda: 1)
    assert submit(describe, Pair(one, 2)).result(timeout=30) == ("Pair", Pair(1, 2))
    assert submit(describe, (one,)).result(timeout=30) == ("tuple", (1,))
    assert submit(describe, [one]).result(timeout=30) == ("list", [1])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_futures_in_sets_and_dict_keys_are_replaced(executor):
    submit = submit_on(executor)
    one, two = submit(lambda: 1), submit(lambda: 2)
    assert submit(describe, {one, two}).result(timeout=30) == ("set", {1, 2})
    assert submit(describe, frozenset([one])).result(timeout=30) == ("frozenset", frozenset([1]))
    assert submit(describe, {one: "a", "b": two}).result(timeout=30) == ("dict", {1: "a", "b": 2})
    counts = collections.defaultdict(int, {"k": one})
    kind, value = submit(describe, counts).result(timeout=30)
    assert (kind, value, value.default_factory) == ("defaultdict", {"k": 1}, int)


class Tagged(dict):
    """A dict subclass whose constructor takes something else than items."""

    def __init__(self, tag, **items):
        super().__init__(**items)
        self.tag = tag


class Items(list):
    pass


@pytest.mark.parametrize("executor", EXECUTORS)
def test_subclasses_of_containers_keep_their_type_and_contents(executor):
    submit = submit_on(executor)
    one = submit(lambda: 1)
    assert submit(describe, collections.Counter({"k": one})).result(timeout=30) == ("Counter", {"k": 1})
    kind, tagged = submit(describe, Tagged("t", k=one)).result(timeout=30)
    assert (kind, tagged, tagged.tag) == ("Tagged", {"k": 1}, "t")
    assert submit(describe, Items([one, 2])).result(timeout=30) == ("Items", [1, 2])
    ordered = collections.OrderedDict([("b", one), ("a", 2)])
    assert list(submit(describe, ordered).result(timeout=30)[1].items()) == [("b", 1), ("a", 2)]


def test_a_thread_task_given_a_future_gets_the_other_arguments_themselves():
    # The containers beside a future (or holding none) were copied too: a task filling a list
    # or a dict it was given beside a future filled a copy, and its writes were lost.
    submit = submit_on("thread")
    one = submit(lambda: 1)
    out, results, shared = [], {}, []
    submit(lambda x, sink: sink.append(x), one, out).result(timeout=30)
    submit(lambda sink, x: sink.update(v=x), results, one).result(timeout=30)
    submit(lambda job: job["sink"].append(job["x"]), {"x": one, "sink": out}).result(timeout=30)
    assert out == [1, 1] and results == {"v": 1}
    assert submit(lambda x, a, b: a is b is shared, one, shared, shared).result(timeout=30)
    # A container holding a future twice, or named twice, is copied once.
    pair = [one, one]
    first, second = submit(lambda x, y: (x, y), pair, pair).result(timeout=30)
    assert first == [1, 1] and first is second and pair[0] is one


def test_thread_task_arguments_that_hold_themselves_or_nest_deeply():
    submit = submit_on("thread")
    one = submit(lambda: 1)
    looped = [one]
    looped.append(looped)  # a list that holds itself, and a future
    value = submit(lambda x: (x[0], x[1][0]), looped).result(timeout=30)
    assert value == (1, 1)
    chain: tuple = ()
    for i in range(5000):  # deeper than Python's recursion limit
        chain = (i, chain)
    assert submit(lambda x, c: x + c[0], one, chain).result(timeout=30) == 1 + 4999
    # A future that deep: every container on the way is copied with its value (it raised
    # RecursionError past about 330 levels).
    deep: list = [one]
    for _ in range(5000):
        deep = [deep]

    def innermost(x):
        while isinstance(x, list) and len(x) == 1 and isinstance(x[0], list):
            x = x[0]
        return x

    assert submit(innermost, deep).result(timeout=30) == [1]
    # A container that holds a future, named twice at different depths, is one copy.
    shared = [one]
    got = submit(lambda x: (x[0], x[1][0], x[0] is x[1][0]), [shared, [shared]]).result(timeout=30)
    assert got == ([1], [1], True)


def test_a_thread_task_given_a_container_that_holds_itself_gets_a_copy_that_holds_the_copy():
    # As pickle gives a process task: the copy's inner reference was the caller's original,
    # so the task met the future itself there instead of its value.
    submit = submit_on("thread")
    one = submit(lambda: 1)
    looped = [one]
    looped.append(looped)
    got = submit(lambda x: (x[0], x[1] is x, x[1][0]), looped).result(timeout=30)
    assert got == (1, True, 1)
    table = {"one": one}
    table["self"] = table
    got = submit(lambda x: (x["one"], x["self"] is x), table).result(timeout=30)
    assert got == (1, True)
    # Through a tuple (which can only be made once its items are) and a list subclass.
    holder: list = []
    pair = (one, holder)
    holder.append(pair)
    got = submit(lambda p: (p[0], p[1][0] is p), pair).result(timeout=30)
    assert got == (1, True)
    got = submit(lambda h: (h[0][0], h[0][1] is h), holder).result(timeout=30)
    assert got == (1, True)
    items = Items([one])
    items.append(items)
    got = submit(lambda x: (type(x).__name__, x[0], x[1] is x), items).result(timeout=30)
    assert got == ("Items", 1, True)
    assert looped[0] is one and table["one"] is one and holder[0] is pair  # the caller's are left alone


def test_a_task_given_many_futures_in_a_list_gets_their_values():
    submit = submit_on("thread")
    futures = [submit(lambda i=i: i) for i in range(20000)]
    assert submit(sum, futures).result(timeout=60) == sum(range(20000))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_names_no_utf8_holds_are_shown_escaped(executor):
    # A lone surrogate in a task's name (or its function's) failed deep in the submission.
    def seven():
        return 7

    seven.__name__ = seven.__qualname__ = "bad\udcffname"
    assert submit_on(executor)(seven).result(timeout=30) == 7
    assert submit_on(executor, name="also \udcff bad")(abs, -3).result(timeout=30) == 3


class Positional(tuple):
    """A tuple subclass whose constructor does not take its items."""

    def __new__(cls, a, b):
        return super().__new__(cls, (a, b))


def test_a_container_that_cannot_be_rebuilt_with_the_values_is_refused_clearly():
    submit = submit_on("thread")
    one = submit(lambda: 1)
    with pytest.raises(TypeError, match="cannot rebuild a Positional"):
        submit(lambda p: p, Positional(one, 2)).result(timeout=30)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_dependent_task_waits_for_its_dependency(executor):
    hetflow.init(ncpus=2, executor="thread")
    release = threading.Event()
    gate = hetflow.submit(lambda: release.wait(timeout=30) and "opened")
    dependent = submit_on(executor)(lambda value: "after " + value, gate)
    assert not dependent.done()
    release.set()
    assert dependent.result(timeout=30) == "after opened"


@pytest.mark.parametrize("first, second", [("thread", "process"), ("process", "thread")])
def test_dependencies_across_executors(first, second):
    source = submit_on(first)(lambda: ([1, 2], os.getpid()))
    sink = submit_on(second)(lambda value: (value[0] + [3], value[1], os.getpid()), source)
    items, source_pid, sink_pid = sink.result(timeout=30)
    assert items == [1, 2, 3]
    assert (source_pid == os.getpid()) == (first == "thread")
    assert (sink_pid == os.getpid()) == (second == "thread")


def test_a_long_chain_alternating_executors():
    future = submit_on("thread")(add, 0, 1)
    for i in range(20):
        future = submit_on(EXECUTORS[i % 2])(add, future, 1)
    assert future.result(timeout=60) == 21


def test_a_diamond_of_dependencies():
    top = hetflow.submit(lambda: 1)
    left = submit_on("thread")(add, top, 10)
    right = submit_on("process")(add, top, 100)
    bottom = hetflow.submit(lambda l, r, t: l + r + t, left, right, top)
    assert bottom.result(timeout=30) == 11 + 101 + 1


# -- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_non_callable_raises_type_error(executor):
    with pytest.raises(TypeError, match="not callable"):
        submit_on(executor)(42)
    with pytest.raises(TypeError, match="not callable"):
        hetflow.submit("add", 1, 2)


def test_an_unpicklable_argument_for_the_process_executor_raises_type_error():
    with pytest.raises(TypeError, match="argument 0") as info:
        hetflow.submit(lambda lock: 1, threading.Lock())
    assert "lock" in str(info.value) and "process worker" in str(info.value)
    with pytest.raises(TypeError, match="keyword argument 'guard'"):
        hetflow.submit(lambda guard: 1, guard=threading.Lock())
    # The same argument is fine for the thread executor.
    assert submit_on("thread")(lambda lock: lock.acquire(False), threading.Lock()).result(timeout=30) is True


def test_an_unpicklable_function_for_the_process_executor_raises_type_error():
    lock = threading.Lock()
    with pytest.raises(TypeError, match="process worker") as info:
        hetflow.submit(lambda: lock.locked())
    assert "lock" in str(info.value)
    assert submit_on("thread")(lambda: lock.locked()).result(timeout=30) is False


def test_a_failed_submission_leaves_the_runtime_usable():
    with pytest.raises(TypeError):
        hetflow.submit(lambda lock: 1, threading.Lock())
    assert hetflow.submit(add, 1, 1).result(timeout=30) == 2


def apply_to(func, x):
    return func(x)


def test_a_function_with_a_parameter_named_func_takes_it_by_keyword():
    hetflow.init(ncpus=1, executor="thread")
    assert hetflow.task_submit(apply_to, func=abs, x=-3).result(timeout=30) == 3
    assert hetflow.task_submit.options(executor="thread")(apply_to, func=abs, x=-4).result(timeout=30) == 4


def test_access_on_a_parameter_that_gathers_several_arguments_is_refused():
    def scale_all(factor, *arrays):
        for array in arrays:
            array *= factor

    with pytest.raises(ValueError, match="gathers several arguments"):
        hetflow.delayed(access={"arrays": "RW"})(scale_all)


def test_a_future_of_another_runtime_is_refused_with_a_clear_error():
    with hetflow.Executor(1, executor="thread") as first, hetflow.Executor(1, executor="thread") as second:
        future = first.submit(add, 1, 2)
        with pytest.raises(ValueError, match="future of a task of another runtime.*future.result"):
            second.submit(add, future, 1)
        assert second.submit(add, future.result(), 1).result(timeout=30) == 4


def kind_of_first(items):
    return type(items[0]).__name__


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_an_access_mark_inside_a_container_is_refused_saying_where(executor):
    import re

    import numpy as np

    a = np.zeros(3)
    submit = hetflow.task_submit.options(executor=executor)
    with pytest.raises(TypeError, match=re.escape("task 'kind_of_first': positional argument 1, at [0], is an access mark (hetflow.RW(...))")):
        submit(kind_of_first, [hetflow.RW(a)])
    with pytest.raises(TypeError, match=re.escape("keyword argument 'items', at ['k'][1], is an access mark (hetflow.W(...))")):
        submit(kind_of_first, items={"k": (1, hetflow.W(a))})
    future = submit(add, 1, 2)
    assert submit(kind_of_first, [future, "Access"]).result() == "int"  # the word alone is no mark
    assert submit(kind_of_first, [a]).result() == "ndarray"


class Model:
    def __init__(self, k):
        self.k = k

    @hetflow.delayed
    def scale(self, x):
        return self.k * x


@pytest.mark.parametrize("executor", EXECUTORS)
def test_delayed_on_a_method_gets_its_instance(executor):
    hetflow.init(ncpus=2, executor=executor)
    assert Model(10).scale(2).result(timeout=60) == 20
    assert Model.scale(Model(3), 2).result(timeout=60) == 6  # through the class, as a plain method
    assert Model(10).scale.options(priority=1)(3).result(timeout=60) == 30  # options kept the instance


class WithStatic:
    @hetflow.delayed
    @staticmethod
    def double(x):
        return 2 * x


@pytest.mark.parametrize("executor", EXECUTORS)
def test_delayed_over_a_staticmethod_gets_no_instance(executor):
    # It was given the instance all the same: "double() takes 1 positional argument but 2 were given".
    hetflow.init(ncpus=2, executor=executor)
    assert WithStatic().double(4).result(timeout=60) == 8
    assert WithStatic.double(5).result(timeout=60) == 10


async def await_mul(x):
    return await mul(x, 2)


def run_coroutine_in_a_task(x):
    import asyncio

    return asyncio.run(await_mul(x))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_coroutine_inside_a_task_awaits_a_delayed_call(executor):
    # Inside a task a delayed call gives its value, but a coroutine there awaits it, as outside
    # (in a process task too, where it was the plain function: "int can't be used in 'await'").
    assert submit_on(executor)(run_coroutine_in_a_task, 4).result(timeout=30) == 8


TRACED_THREAD_TASKS = """
import sys, threading
import hetflow

calls = []


def tracer(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "task_body":
        calls.append(threading.current_thread() is not threading.main_thread())
    return None


def profiler(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "task_body":
        calls.append("profiled")


def task_body(i):
    return threading.current_thread() is not threading.main_thread()


threading.settrace(tracer)
threading.setprofile(profiler)
hetflow.init(ncpus=2)
futures = [hetflow.task_submit.options(executor="thread")(task_body, i) for i in range(20)]
off_main = sum(f.result() for f in futures)  # a waiting main thread may run some itself, untraced
print(off_main, calls.count(True), calls.count("profiled"))
"""


def test_thread_tasks_see_the_hooks_of_threading_settrace_and_setprofile():
    """As threads that threading starts do: coverage.py and profilers see the code thread tasks
    run (they saw none of it)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", TRACED_THREAD_TASKS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    off_main, traced, profiled = (int(word) for word in result.stdout.split())
    assert off_main > 0 and traced == off_main and profiled == off_main, result.stdout + result.stderr


REQUEST = None  # a contextvars.ContextVar, made by the test below


def _set_request_and_read_the_one_before(value):
    before = REQUEST.get()
    REQUEST.set(value)
    return before


def _seventh():
    import decimal

    return str(decimal.Decimal(1) / decimal.Decimal(7))


def _seventh_inside_a_task_of_low_precision():
    import decimal

    decimal.getcontext().prec = 4
    return hetflow.task_submit.options(executor="thread")(_seventh).result(timeout=60)


def test_each_thread_task_runs_in_a_contextvars_context_of_its_own():
    # What a task set was seen by the next tasks of its worker thread while it kept the GIL, and
    # by a task its thread ran while it waited (a division at the waiting task's precision).
    import contextvars
    import decimal

    global REQUEST
    REQUEST = contextvars.ContextVar("request", default="unset")
    hetflow.init(ncpus=1, executor="thread")
    submit = hetflow.task_submit.options(executor="thread")
    futures = [submit(_set_request_and_read_the_one_before, i) for i in range(50)]
    assert [f.result(timeout=60) for f in futures] == ["unset"] * 50
    default = str(decimal.Context().divide(decimal.Decimal(1), decimal.Decimal(7)))
    assert submit(_seventh_inside_a_task_of_low_precision).result(timeout=60) == default


DEEP_RECURSION_ON_A_BIG_STACK = """
import sys, threading
import hetflow

sys.setrecursionlimit(1_000_000)
threading.stack_size(512 * 1024 * 1024)


def depth(n):
    return 0 if n == 0 else 1 + sum(map(depth, [n - 1]))  # through C frames, which need the stack


hetflow.init(ncpus=1)
print(hetflow.task_submit.options(executor="thread")(depth, 60_000).result())
print(threading.stack_size(0))  # the size before: hetflow.init left it as the program set it
"""


def test_thread_tasks_get_the_stack_size_threading_sets():
    """As threading's own threads do: a recursion that fits in threading.stack_size() crashed the
    whole process (segmentation fault) on the engine's threads, which had the default stack."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", DEEP_RECURSION_ON_A_BIG_STACK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["60000", str(512 * 1024 * 1024)]


_per_thread = threading.local()


def count_on_this_thread(_):
    _per_thread.count = getattr(_per_thread, "count", 0) + 1
    return threading.get_ident(), _per_thread.count


def test_a_threading_local_of_a_worker_thread_lasts_between_bursts():
    # A worker thread gives the GIL back when it runs out of work; what its tasks keep in a
    # threading.local (a per-thread cache) must not be lost then, as in a Python thread.
    counts: dict = {}
    with hetflow.Executor(2, executor="thread") as executor:
        for _ in range(5):
            for ident, count in executor.map(count_on_this_thread, range(20)):
                counts[ident] = max(counts.get(ident, 0), count)
            time.sleep(0.05)  # the workers go idle
    assert sum(counts.values()) == 100
