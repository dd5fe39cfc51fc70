"""hetflow futures in asyncio: ``await fut``, asyncio.wrap_future, gather, and the
``python -m asyncio`` REPL."""
from __future__ import annotations

import asyncio
import threading

import pytest

import hetflow
from hf_subprocess import Child
from hf_tasks import EXECUTORS, add, fail, submit_on



@pytest.fixture(autouse=True)
def _fresh_runtime():
    hetflow.init(ncpus=2, executor="process")
    yield
    hetflow.shutdown()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_await_a_future(executor):
    async def main():
        return await submit_on(executor)(add, 20, 22)

    assert run(main()) == 42


@pytest.mark.parametrize("executor", EXECUTORS)
def test_await_a_failing_future_raises_its_exception(executor):
    async def main():
        with pytest.raises(ValueError, match="async failure"):
            await submit_on(executor)(fail, "async failure")
        return "caught"

    assert run(main()) == "caught"


def test_await_a_dependent_of_a_failed_task_raises_dependency_error():
    async def main():
        failing = submit_on("process")(fail, "root")
        dependent = submit_on("thread")(add, failing, 1)
        with pytest.raises(hetflow.DependencyError) as info:
            await dependent
        return info.value.root_task

    assert run(main()) == "fail"


def test_await_a_finished_future():
    future = hetflow.submit(add, 1, 2)
    assert future.result(timeout=30) == 3

    async def main():
        return await future, await future

    assert run(main()) == (3, 3)


def test_wrap_future():
    async def main():
        wrapped = asyncio.wrap_future(hetflow.submit(add, 2, 3))
        assert isinstance(wrapped, asyncio.Future)
        return await wrapped

    assert run(main()) == 5


def test_gather_futures_of_both_executors():
    async def main():
        futures = [submit_on(EXECUTORS[i % 2])(add, i, i) for i in range(10)]
        return await asyncio.gather(*futures)

    assert run(main()) == [2 * i for i in range(10)]


def test_gather_with_return_exceptions():
    async def main():
        return await asyncio.gather(hetflow.submit(add, 1, 1), hetflow.submit(fail, "no"), return_exceptions=True)

    ok, error = run(main())
    assert ok == 2 and isinstance(error, ValueError) and str(error) == "no"


def test_awaiting_does_not_block_the_event_loop():
    # The task finishes only once a coroutine on the loop has run; were the loop blocked by the
    # await, the task would time out and return False.
    opened = threading.Event()

    async def open_later():
        await asyncio.sleep(0.01)
        opened.set()

    async def main():
        future = submit_on("thread")(opened.wait, 20)
        results = await asyncio.gather(future, open_later())
        return results[0]

    assert run(main()) is True


def test_asyncio_wait_for_times_out_on_a_long_task():
    release = threading.Event()

    async def main():
        future = submit_on("thread")(release.wait, 20)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(future), timeout=0.05)
        release.set()
        return future.result(timeout=30)

    assert run(main()) is True


def test_tasks_submitted_from_a_coroutine_chain():
    async def main():
        first = hetflow.submit(add, 1, 1)
        second = hetflow.submit(add, first, 1)
        third = submit_on("thread")(add, second, first)
        return await third

    assert run(main()) == 5


def test_asyncio_wait_over_hetflow_futures():
    # asyncio.wait adds its done-callbacks to the futures themselves: they ran on hetflow's
    # thread, outside the loop, and the wait never ended.
    import time

    async def main():
        futures = [hetflow.task_submit.options(executor="thread")(time.sleep, 0.05 * i) for i in range(4)]
        first, rest = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        assert futures[0] in first and len(first) + len(rest) == 4
        done, pending = await asyncio.wait(futures, timeout=30)
        return len(done), len(pending)

    assert run(main()) == (4, 0)


def test_await_inside_a_thread_task_runs_other_tasks_meanwhile():
    # The only worker awaited inside its task: it sat in the event loop, and the task awaited
    # never ran.
    hetflow.shutdown()
    hetflow.init(ncpus=1, executor="thread")

    def outer():
        async def body():
            return await hetflow.submit(add, 1, 2)

        return asyncio.run(body())

    assert hetflow.submit(outer).result(timeout=30) == 3


def waits_for_a_leaf(x):
    return hetflow.submit(lambda: x).result(timeout=30)


@pytest.mark.parametrize("sched", ["eager", "dmdas", "random", "ws"])
def test_tasks_awaiting_tasks_that_wait_inside_their_bodies(sched):
    # Each task's event loop awaits tasks that wait for a leaf task. Sleeping in the event loop
    # between its slices of waiting, the awaiting tasks kept both workers from the leaves (4 or 5
    # runs in 5 hung with eager, dmdas and random).
    hetflow.shutdown()
    hetflow.init(ncpus=2, executor="thread", sched=sched)

    def outer(i):
        async def body():
            return sum(await asyncio.gather(*[hetflow.submit(waits_for_a_leaf, i + j) for j in range(3)]))

        return asyncio.run(body())

    futures = [hetflow.submit(outer, i) for i in range(3)]
    assert [f.result(timeout=60) for f in futures] == [3 * i + 3 for i in range(3)]


def doubled_in_an_event_loop(x):
    async def body():
        await asyncio.sleep(0)
        return 2 * x

    return asyncio.run(body())


@pytest.mark.parametrize("how", ["await", "result"])
def test_a_task_run_while_another_awaits_on_its_worker_has_an_event_loop_of_its_own(how):
    # Run on the worker whose task waits inside asyncio.run, it saw that task's running loop:
    # its own asyncio.run refused to start ("cannot be called from a running event loop").
    hetflow.shutdown()
    hetflow.init(ncpus=1, executor="thread")

    def outer(x):
        async def body():
            inner = hetflow.submit(doubled_in_an_event_loop, x)
            return await inner if how == "await" else inner.result(timeout=30)

        in_loop = asyncio.run(body())
        return in_loop, hetflow.submit(doubled_in_an_event_loop, x + 1).result(timeout=30)

    assert hetflow.submit(outer, 21).result(timeout=30) == (42, 44)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_done_callback_that_awaits_another_future_ends(executor):
    # The await's own wake-up is a callback, queued behind the one waiting for it: a deadlock.
    results, finished = [], threading.Event()

    def follow_up(future):
        async def next_step():
            return await asyncio.wait_for(asyncio.wrap_future(submit_on(executor)(add, future.result(), 1)), 30)

        results.append(asyncio.run(next_step()))
        finished.set()

    submit_on(executor)(add, 1, 1).add_done_callback(follow_up)
    assert finished.wait(30)
    assert results == [3]


def test_await_in_the_asyncio_repl(tmp_path):
    session = "\n".join(
        [
            "import hetflow",
            "_ = hetflow.init(ncpus=2, executor='process')",
            "fut = hetflow.submit(lambda x: x * 6, 7)",
            "value = await fut",
            "print('AWAITED', value)",
            "print('GATHERED', await asyncio.gather(hetflow.submit(pow, 2, 10), fut))",
            "print('WORKER', await hetflow.submit(__import__('os').getpid) != __import__('os').getpid())",
            "",
        ]
    )
    with Child(tmp_path, ["-m", "asyncio"], stdin_text=session) as child:
        rc, out, err = child.finish()
    assert rc == 0, err
    assert "AWAITED 42" in out
    assert "GATHERED [1024, 42]" in out
    assert "WORKER True" in out
    assert "Traceback" not in err, err


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_async_function_is_refused_as_a_task(executor):
    """Its call only makes a coroutine that no task would await (a thread task would hand it back
    unawaited, a process task fail to pickle it): refused at submission, saying what to do."""

    async def fetch():
        return 1

    with pytest.raises(TypeError, match="is an async function.*asyncio.run"):
        submit_on(executor)(fetch)
    assert submit_on(executor)(add, 1, 2).result(timeout=30) == 3


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_async_generator_function_is_refused_as_a_task(executor):
    """Its call only makes an async generator, whose body runs where it is iterated: a thread
    task handed it back with nothing run, a process task failed, after running, to pickle it."""
    import functools

    async def numbers(count):
        for number in range(count):
            yield number

    class Streamer:
        async def __call__(self, count):
            yield count

    for func in (numbers, functools.partial(numbers, 3), Streamer()):
        with pytest.raises(TypeError, match="is an async generator function.*async for"):
            submit_on(executor)(func, 3)
    with pytest.raises(TypeError, match=r"hetflow.delayed: .*numbers.* is an async generator function"):
        hetflow.delayed(numbers)
    assert submit_on(executor)(add, 1, 2).result(timeout=30) == 3


def test_an_async_function_is_refused_by_offload_delayed_and_the_joblib_front():
    """Where a function is given to run elsewhere, as for task_submit: at the decorator, or when
    the call is described (it gave an unpicklable coroutine, or coroutines never awaited)."""
    import hetflow.joblib as hj
    from hetflow.offload import offload, offload_single

    async def kernel():
        return 1

    with pytest.raises(TypeError, match=r"hetflow.offload: .*kernel.* is an async function"):
        offload(kernel)
    with pytest.raises(TypeError, match="is an async function"):
        offload_single(kernel)
    with pytest.raises(TypeError, match=r"hetflow.joblib.delayed: .*kernel.* is an async function"):
        hj.delayed(kernel)
    with pytest.raises(TypeError, match=r"hetflow.delayed: .*kernel.* is an async function"):
        hetflow.delayed(kernel)
    with pytest.raises(TypeError, match=r"hetflow.delayed: .*kernel.* is an async function"):
        hetflow.delayed(executor="thread")(kernel)


def test_an_asyncio_task_given_to_a_process_task_is_refused_with_what_to_do():
    async def main():
        pending = asyncio.ensure_future(asyncio.sleep(0.01, 5))
        with pytest.raises(TypeError, match="not a hetflow future.*await it and pass its value"):
            submit_on("process")(add, pending, 1)
        return await pending

    assert run(main()) == 5


# -- a task that raises StopIteration ---------------------------------------------------------------
def _is_stop_iteration_error(error, value=5):
    """RuntimeError("task raised StopIteration") from the task's StopIteration, as PEP 479."""
    return (
        type(error) is RuntimeError
        and str(error) == "task raised StopIteration"
        and type(error.__cause__) is StopIteration
        and error.__cause__.value == value
    )


@pytest.mark.parametrize("executor", EXECUTORS)
def test_await_a_task_that_raised_stop_iteration_raises_runtime_error(executor):
    """asyncio refuses to hold a StopIteration: the await waited for ever. It gets what PEP 479
    gives, and so do wrap_future, gather, result() and exception()."""
    from hf_tasks import stop_iteration

    async def main():
        caught = []
        for how in ("await", "wrap_future", "gather"):
            future = submit_on(executor)(stop_iteration, 5)
            with pytest.raises(RuntimeError) as info:
                if how == "await":
                    await asyncio.wait_for(future, 30)
                elif how == "wrap_future":
                    await asyncio.wait_for(asyncio.wrap_future(future), 30)
                else:
                    await asyncio.wait_for(asyncio.gather(future, submit_on(executor)(add, 1, 2)), 30)
            caught.append(info.value)
        future = submit_on(executor)(stop_iteration, 5)
        gathered = await asyncio.wait_for(
            asyncio.gather(future, submit_on(executor)(add, 1, 2), return_exceptions=True), 30
        )
        caught.append(gathered[0])
        assert gathered[1] == 3
        return caught, future

    caught, future = run(main())
    assert all(_is_stop_iteration_error(error) for error in caught), caught
    with pytest.raises(RuntimeError, match="^task raised StopIteration$") as info:
        future.result(timeout=30)
    assert _is_stop_iteration_error(info.value)
    assert _is_stop_iteration_error(future.exception(timeout=30))
    dependent = submit_on(executor)(add, future, 1)
    with pytest.raises(hetflow.DependencyError) as info:
        dependent.result(timeout=30)
    assert _is_stop_iteration_error(info.value.root_exception)


def test_a_stop_iteration_task_in_a_generator_is_not_the_generator_ending():
    """result() inside a generator raises RuntimeError, not a StopIteration that would end it."""
    from hf_tasks import stop_iteration

    def values():
        yield hetflow.submit(add, 1, 2).result(timeout=30)
        yield hetflow.submit(stop_iteration, 5).result(timeout=30)

    with pytest.raises(RuntimeError, match="^task raised StopIteration$"):
        list(values())


# -- callables that return coroutines -------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_object_with_an_async_call_is_refused_as_a_task(executor):
    """Its call only makes a coroutine, as an async def function's: refused at submission,
    and so is a partial of it."""
    import functools

    from hf_tasks import AsyncCallable

    for func in (AsyncCallable(), functools.partial(AsyncCallable(), 1)):
        with pytest.raises(TypeError, match=r"is an async function \(its __call__ is an async def\).*asyncio.run"):
            submit_on(executor)(func, 2)
        with hetflow.Executor(2, executor=executor) as pool:
            with pytest.raises(TypeError, match="is an async function"):
                pool.submit(func, 2)
            with pytest.raises(TypeError, match="is an async function"):
                pool.map(func, range(4), chunksize=2)
        with pytest.raises(TypeError, match="is an async function"):
            hetflow.map(func, range(4), chunksize=2, executor=executor)
        with pytest.raises(TypeError, match="is an async function"):
            hetflow.delayed(func, executor=executor)(2)


def _refused_for_its_coroutine(error):
    return isinstance(error, TypeError) and "returned a coroutine, which no task awaits" in str(error)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_task_whose_body_returns_a_coroutine_fails_with_type_error(executor, recwarn):
    """A lambda, a partial or a plain function that returns a coroutine: the task fails with
    TypeError, as an async def function is refused, instead of handing back an unawaited
    coroutine (which warned that it was never awaited), on both executors and through submit,
    delayed, Executor.submit and map."""
    import functools
    import gc

    from hf_tasks import _coroutine_body, returns_a_coroutine

    makers = [returns_a_coroutine, lambda value: _coroutine_body(value), functools.partial(returns_a_coroutine)]
    futures = []
    for maker in makers:
        futures.append(submit_on(executor)(maker, 1))
        futures.append(submit_on(executor)(maker, submit_on(executor)(add, 0, 1)))  # waits for a future first
        futures.append(hetflow.delayed(maker, executor=executor)(1))
    with hetflow.Executor(2, executor=executor) as pool:
        futures.append(pool.submit(returns_a_coroutine, 1))
        for future in futures:
            assert _refused_for_its_coroutine(future.exception(timeout=30)), future.exception()
        for chunksize in (1, 2):
            with pytest.raises(TypeError, match="returned a coroutine"):
                list(pool.map(returns_a_coroutine, range(4), chunksize=chunksize, timeout=30))
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]
    # A task that returns something else is unchanged.
    assert submit_on(executor)(add, 1, 2).result(timeout=30) == 3


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("chunksize", [1, 2])
def test_map_over_a_call_that_raises_stop_iteration_raises_runtime_error(executor, chunksize):
    """At the call's position, as a single task's future gives it (not "generator raised")."""
    from hf_tasks import stop_iteration

    with hetflow.Executor(2, executor=executor) as pool:
        results = pool.map(stop_iteration, [5, 6], chunksize=chunksize, timeout=30)
        with pytest.raises(RuntimeError, match="^task raised StopIteration$") as info:
            next(results)
    assert _is_stop_iteration_error(info.value)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_awaiting_a_failed_future_again_does_not_grow_its_traceback(executor):
    # Each await raised the one error with the traceback it had when the await began, the
    # frames of every earlier await (and their locals) included: it grew with each await.
    future = submit_on(executor)(fail, "again")

    def depth(error):
        count, tb = 0, error.__traceback__
        while tb is not None:
            count, tb = count + 1, tb.tb_next
        return count

    async def main():
        depths = []
        for _ in range(20):
            try:
                await future
            except ValueError as error:
                depths.append(depth(error))
        try:
            await asyncio.wrap_future(future)
        except ValueError as error:
            depths.append(depth(error))
        return depths

    depths = run(main())
    assert max(depths) <= depths[0] + 1, depths


def test_tasks_left_behind_a_shield_are_cancelled_at_the_end_of_asyncio_run_unless_wrapped():
    # asyncio wraps a hetflow future in a Task (shield, gather, as_completed, wait_for), and
    # asyncio.run cancels the Tasks left when its coroutine returns (as the docs say); a future
    # given through asyncio.wrap_future is not a Task, and its task goes on, as a
    # concurrent.futures one does.
    hetflow.shutdown()
    hetflow.init(ncpus=1, executor="thread")
    release = threading.Event()

    def left(wrap):
        async def main():
            busy = hetflow.submit(release.wait, 20)  # keeps the only worker until released
            queued = hetflow.submit(add, 1, 2)
            awaited = asyncio.wrap_future(queued) if wrap else queued
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(awaited), 0.05)
            return busy, queued

        busy, queued = asyncio.run(main())
        release.set()
        busy.result(timeout=30)
        release.clear()
        return queued

    assert left(wrap=True).result(timeout=30) == 3
    with pytest.raises(hetflow.CancelledError):
        left(wrap=False).result(timeout=30)
