"""asyncio waits inside a thread task: no hang on one worker, and cancellation as outside."""
from __future__ import annotations

import asyncio
import threading

import pytest

import hetflow


@pytest.fixture(autouse=True)
def _one_worker():
    hetflow.init(ncpus=1, executor="thread")
    yield
    hetflow.shutdown(timeout=5)


def _child():
    return 1


WAYS = {
    "wrap_future": lambda f: asyncio.wrap_future(f),
    "asyncio.wait": lambda f: _first_of(f),
}


async def _first_of(f):
    done, _ = await asyncio.wait([f])
    return done.pop().result()


@pytest.mark.parametrize("way", sorted(WAYS))
def test_asyncio_wait_for_a_child_in_a_task_ends_on_one_worker(way):
    def parent():
        async def body():
            return await WAYS[way](hetflow.task_submit(_child))

        return asyncio.run(body())

    assert hetflow.task_submit(parent).result(timeout=10) == 1


def test_await_of_another_runtimes_future_in_a_task_ends():
    ex = hetflow.Executor(1, executor="thread")

    def middle():
        return hetflow.task_submit(_child).result() + 1

    def outer():
        async def body():
            return await ex.submit(middle)

        return asyncio.run(body())

    try:
        assert hetflow.task_submit(outer).result(timeout=10) == 2
    finally:
        ex.shutdown(wait=False)


def _blocker(started, gate):
    started.set()
    gate.wait(10)


def _queued_behind_a_running_task(started, gate):
    """A task waiting for one that runs on the other worker: not one a wait here could run."""
    blocker = hetflow.task_submit(_blocker, started, gate)
    started.wait(10)
    return hetflow.task_submit(_child_of, blocker)


def test_wait_for_timeout_in_a_task_cancels_a_task_not_started():
    hetflow.init(ncpus=2, executor="thread")
    started, gate = threading.Event(), threading.Event()

    def scenario():
        async def body():
            waiting = _queued_behind_a_running_task(started, gate)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiting, 0.1)
            return waiting

        return asyncio.run(body())

    waiting = hetflow.task_submit(scenario).result(timeout=10)
    gate.set()
    assert waiting.cancelled()


def test_a_future_cancelled_while_awaited_in_a_task_raises_asyncio_cancelled_error():
    hetflow.init(ncpus=2, executor="thread")
    started, gate = threading.Event(), threading.Event()

    def scenario():
        async def body():
            waiting = _queued_behind_a_running_task(started, gate)
            asyncio.get_running_loop().call_later(0.05, waiting.cancel)
            try:
                await waiting
            except asyncio.CancelledError:
                return "asyncio"
            except BaseException as error:  # concurrent.futures.CancelledError
                return type(error).__module__
            finally:
                gate.set()

        return asyncio.run(body())

    assert hetflow.task_submit(scenario).result(timeout=10) == "asyncio"


def _child_of(value):
    return value


def _reads(array):
    return float(array.sum())


@pytest.mark.parametrize("way", sorted(WAYS))
def test_asyncio_waits_in_a_task_for_a_task_that_cannot_start_before_it_are_refused(way):
    # The reader of what the waiting task writes starts once that task ends: await refused the
    # wait at once; asyncio.wait and wrap_future waited for ever.
    np = pytest.importorskip("numpy")
    written = np.ones(4)

    def writer(array):
        async def body():
            with pytest.raises(RuntimeError, match="cannot start before"):
                await WAYS[way](hetflow.task_submit(_reads, hetflow.R(array)))
            return "refused"

        return asyncio.run(body())

    assert hetflow.task_submit(writer, hetflow.RW(written)).result(timeout=10) == "refused"
