"""hetflow.Future: the eventual result of a task."""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import numbers
import reprlib
import sys
import threading
import time
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable, Iterator, Optional, Tuple

from hetflow._errors import INTERRUPTIONS, CancelledError, HetflowError, exception_from_outcome, forget_frames
# Imported here, not where used: a late use (a __del__ at interpreter shutdown) can import nothing.
from hetflow._serialize import loads_result, packing

_LOGGER = logging.getLogger("hetflow")
_UNSET: Any = object()

# concurrent.futures' internal states, which concurrent.futures.wait/as_completed read.
_PENDING = "PENDING"
_RUNNING = "RUNNING"
_CANCELLED_AND_NOTIFIED = "CANCELLED_AND_NOTIFIED"
_FINISHED = "FINISHED"
# A finished task's final state and the waiter method that tells a waiter about it.
_FINAL_STATES = {
    "done": (_FINISHED, "add_result"),
    "failed": (_FINISHED, "add_exception"),
    "cancelled": (_CANCELLED_AND_NOTIFIED, "add_cancelled"),
}


# How long wait_failing_fast waits for one future before it looks for a failure among the others.
_FAIL_FAST_PAUSE_S = 0.05
# How long a task waiting in concurrent.futures.wait/as_completed runs other tasks for the future
# it waits for before it looks at the others again.
_HELP_SLICE_S = 0.02


class _WaiterEvent(threading.Event):
    """The event of a ``concurrent.futures`` waiter on hetflow futures: a wait on it that Ctrl-C
    interrupts makes their runtimes give up at exit, as an interrupted ``result()`` does."""

    def __init__(self, replaced: threading.Event) -> None:
        super().__init__()
        if replaced.is_set():
            self.set()
        self.futures: list = list(getattr(replaced, "futures", ()))  # weak references to the futures waited for
        # The waiter needs every future (ALL_COMPLETED; the standard library's waiter for it has
        # stop_on_exception False), not the first one to end (FIRST_COMPLETED, as_completed).
        self.needs_all = bool(getattr(replaced, "needs_all", False))

    def wait(self, timeout: Optional[float] = None) -> bool:
        with noting_interruptions(future for future in (ref() for ref in self.futures) if future is not None):
            return self._wait(timeout)

    def _wait(self, timeout: Optional[float]) -> bool:
        if timeout is None and not self.is_set():
            self._refuse_if_never()
        return threading.Event.wait(self, timeout)

    def _refuse_if_never(self) -> None:
        """Raises, as ``result()`` would, when the wait could never end: a future it needs (or,
        waiting for the first, every one) cannot end before this thread releases an acquisition
        it holds. (Another kind of future among those waited for could end a FIRST_COMPLETED
        wait: give such a wait a timeout.)"""
        refusals = []
        for future in (ref() for ref in self.futures):
            if future is None or future._task.done():
                if not self.needs_all:
                    return  # one has ended: the wait ends
                continue
            try:
                future._task.check_wait_can_end()
            except RuntimeError as refusal:
                if self.needs_all:
                    raise refusal from None
                refusals.append(refusal)
            else:
                if not self.needs_all:
                    return
        if refusals:
            raise refusals[0]


class _HelpingEvent(_WaiterEvent):
    """The event of a ``concurrent.futures`` waiter installed from inside a task: waiting on it
    runs the runtime's tasks meanwhile, as ``Future.result()`` does there (the task waited for
    may be queued behind the waiting one, on the only worker), and refuses a wait that could
    never end."""

    def __init__(self, replaced: threading.Event) -> None:
        super().__init__(replaced)
        # Those that cannot end before the waiting task does: id -> the refusal (fixed once known:
        # a task's dependencies are set when it is submitted)
        self._never: dict = {}
        self._checked: set = set()

    def _wait(self, timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            remaining = _HELP_SLICE_S if deadline is None else min(_HELP_SLICE_S, deadline - time.monotonic())
            if remaining <= 0:
                break
            futures = [f for f in (ref() for ref in self.futures) if f is not None]
            unfinished = [f for f in futures if not f._task.done()]
            helpable = [f for f in unfinished if self._may_end(f)]
            if helpable:
                helpable[0]._task.wait(remaining)
            elif unfinished and deadline is None and (self.needs_all or not self._notice_coming(futures)):
                # What is left can never end: a wait for all of it, or for the next one to end,
                # would never end. (Another kind of future among those waited for could end a
                # FIRST_COMPLETED wait: give such a wait a timeout.)
                raise self._never[id(unfinished[0])]
            else:  # other kinds of futures, the deadline, or the event about to be set
                threading.Event.wait(self, remaining)
        return self.is_set()

    @staticmethod
    def _notice_coming(futures: list) -> bool:
        """A future has ended but not told its waiters yet (the completions thread will)."""
        return any(f._task.done() and f._final_state is None for f in futures)

    def _may_end(self, future: "Future") -> bool:
        key = id(future)
        if key not in self._checked:
            self._checked.add(key)
            try:
                future._task.check_wait_can_end()
            except RuntimeError as refusal:
                self._never[key] = refusal
        return key not in self._never


class _Waiters(list):
    """A future's ``concurrent.futures`` waiters, whose events are made ``_WaiterEvent``s. One
    installed by a task of the future's runtime gets a helping event (``_HelpingEvent``): that
    task's worker must not idle while it waits."""

    def __init__(self, future: "Future") -> None:
        super().__init__()
        self._future = weakref.ref(future)

    def append(self, waiter: Any) -> None:
        future = self._future()
        if future is not None:
            event = waiter.event
            inside = future._runtime.inside_task()
            if inside and not isinstance(event, _HelpingEvent):
                event = waiter.event = _HelpingEvent(event)
            elif not isinstance(event, _WaiterEvent):
                event = waiter.event = _WaiterEvent(event)
            event.needs_all = getattr(waiter, "stop_on_exception", None) is False
            event.futures.append(self._future)
        super().append(waiter)


class Future(concurrent.futures.Future):
    """The eventual result of a task submitted to hetflow.

    It is a ``concurrent.futures.Future`` (so ``concurrent.futures.wait``, ``as_completed`` and
    ``asyncio.wrap_future`` accept it), it can be awaited, and passing it to another task makes
    that task wait for it and receive its value:

    >>> fut1 = hetflow.submit(add, 1, 2)
    >>> fut2 = hetflow.submit(sub, fut1, 1)   # runs after fut1, gets 3
    >>> fut2.result()
    2
    >>> await fut2                             # inside a running asyncio loop
    2

    Completion is tracked by the engine; the Python-side machinery (conditions, callbacks) is
    only set up when something asks for it, so an unobserved task costs no Python work.
    """

    # Deliberately not calling concurrent.futures.Future.__init__: its condition, waiter and
    # callback lists are created on demand by the properties below.
    # Defaults on the class: a future that nobody observes sets only three attributes.
    _value: Any = _UNSET
    # The task's error and its traceback (a thread task's frames), which result() raises it
    # with each time (not under the frames of earlier callers).
    _failure: Optional[Tuple[BaseException, Optional[TracebackType]]] = None
    _cond: Optional[threading.Condition] = None
    _waiter_list: Optional[list] = None
    _callbacks: Optional[list] = None
    _watched = False
    _fired = False
    _queued = 0  # 1 while its callbacks are handed to the callback thread and not all run yet
    # Callbacks added meanwhile (_queued): the callback thread runs them after those, in order.
    _late: Optional[list] = None
    # The final state as concurrent.futures.wait/as_completed see it; set once, under the
    # condition, together with telling the waiters (as concurrent.futures.Future.set_result).
    _final_state: Optional[str] = None
    # Guards the rarely used observer state of every future; contention is negligible.
    # Reentrant: a garbage collection that runs while a thread holds it (at any allocation) may
    # run a finalizer (``weakref.finalize``, ``__del__``, a ``gc.callbacks`` hook) that uses
    # another future in that same thread: with a plain lock that thread waited for itself, and
    # every future of the process with it. The sections under it allocate their new objects
    # before they take it, so that such a finalizer, if it uses this same future, finds its
    # state whole and what it adds is not overwritten.
    _lock = threading.RLock()

    def __init__(self, task: Any, runtime: Any, name: str) -> None:  # noqa: D107
        self._task = task
        self._runtime = runtime
        self._name = name

    @property
    def rank(self) -> Optional[int]:
        """With ``hetflow.mpi``: the rank that runs the task (``hetflow.mpi.EVERY_RANK``: every
        rank); None for a task over no distributed array, which every rank runs."""
        rank: Optional[int] = self._task.rank()
        return rank

    # -- the concurrent.futures.Future interface -------------------------------------------
    def done(self) -> bool:
        """True once the task has succeeded, failed or been cancelled."""
        if not self._task.done() and self._status() != "cancelled":
            return False
        self._runtime.saw_tasks_end()
        return True

    def running(self) -> bool:
        """True while the task runs on a worker."""
        return self._status() == "running"

    def cancelled(self) -> bool:
        """True if the task was cancelled before it started."""
        return self._status() == "cancelled"

    def cancel(self) -> bool:
        """Cancels the task if it has not started; its dependents then fail with DependencyError.
        Its waiters hear of it at once, and its callbacks run in this thread before it returns,
        as with concurrent.futures (even for a task still waiting for its own dependencies,
        whose dependents the engine tells only once those end)."""
        if self._task.cancel():
            self._fire(here=True)
            return True
        return self.cancelled()

    def result(self, timeout: Optional[float] = None) -> Any:
        """Waits for the task (Ctrl-C interrupts the wait) and returns its value or raises its error.

        A task that raised ``StopIteration`` raises ``RuntimeError("task raised StopIteration")``
        here, its ``__cause__`` the StopIteration, as PEP 479 does for generators and asyncio for
        coroutines; so do ``exception()`` (which returns that RuntimeError), ``await``,
        ``asyncio.wrap_future`` and the dependents' ``DependencyError`` (asyncio cannot hold a
        StopIteration: an await of it would wait for ever)."""
        try:
            self._wait(timeout)
            return self._outcome_value()
        finally:
            del self  # a raised error's traceback must not keep this future alive

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """Waits for the task and returns its exception, or None if it succeeded (a StopIteration
        as ``RuntimeError("task raised StopIteration")`` from it, as ``result()`` raises it)."""
        self._wait(timeout)
        self._settle()
        failure = self._failure
        if failure is None:
            return None
        error = failure[0]
        # With the task's own traceback, not that of the last raise: asyncio (wrap_future, so
        # every await) re-raises what this returns, which would otherwise gather the frames (and
        # locals) of every earlier await of this future.
        error.__traceback__ = failure[1]
        if self.cancelled():
            raise error  # concurrent.futures raises CancelledError here too
        return error

    def add_done_callback(self, fn: Callable[["Future"], Any]) -> None:
        """Calls ``fn(future)`` when the task finishes: at once, in this thread, if it has and
        the callbacks added before were handed on; else after those, on the callback thread
        (callbacks run in the order they were added). asyncio's own callbacks (``asyncio.wait`` and ``as_completed`` add them to the futures
        they are given) are called in the event loop that added them, as asyncio expects."""
        if not callable(fn):
            # Taken, it failed only when called, on the callback thread, as a logged traceback.
            raise TypeError(
                "hetflow.Future.add_done_callback: fn must be callable (it is called with the future), "
                f"not {type(fn).__name__} {reprlib.repr(fn)}"
            )
        module = getattr(fn, "__module__", None)
        if module in ("asyncio.tasks", "asyncio.futures"):
            loop = _running_loop()
            if loop is not None:
                if module == "asyncio.tasks":
                    fn = _LoopCallback(loop, fn)
                if not self._task.done() and _inside_a_task():
                    # asyncio.wait / wrap_future in a coroutine a task runs: the loop would sleep
                    # in select() while the task it waits for is queued behind this worker. A
                    # wait that could never end is refused, as an await is.
                    self._task.check_wait_can_end()
                    loop.call_soon(self._help_in_loop, loop, fn)
        first = [fn]  # made before the lock is taken (see _lock)
        with self._lock:
            # Queued also when the task is done but callbacks added before are still to be handed
            # to the callback thread (_fire): called now, this one would run before them.
            if self._callbacks or not (self._fired or self._task.done()):
                if self._callbacks is None:
                    self._callbacks = first
                else:
                    self._callbacks.append(fn)
                watch = not self._fired
                queued = None
            else:
                queued = self._queued > 0
                if queued:  # those added before wait on the callback thread: after them
                    if self._late is None:
                        self._late = first
                    else:
                        self._late.append(fn)
        if queued is None:
            if watch:
                self._watch()  # outside the lock (see _watch)
            return
        if not queued:
            self._call(fn)

    def remove_done_callback(self, fn: Callable[["Future"], Any]) -> int:
        """Removes every pending ``fn`` added by ``add_done_callback``; returns how many (as
        asyncio's futures do)."""
        removed = 0
        with self._lock:
            # In place, making no new object (see _lock): a callback added meanwhile is kept.
            callbacks = self._callbacks
            index = len(callbacks) if callbacks is not None else 0
            while index > 0 and callbacks is not None:
                index -= 1
                callback = callbacks[index]
                if callback is fn or getattr(callback, "function", None) is fn:
                    del callbacks[index]
                    removed += 1
        return removed

    def set_running_or_notify_cancel(self) -> bool:  # pragma: no cover - executors' hook, unused
        return not self.cancelled()

    def set_result(self, result: Any) -> None:
        raise RuntimeError("hetflow.Future: the result is set by the task, not by set_result()")

    def set_exception(self, exception: Optional[BaseException]) -> None:
        raise RuntimeError("hetflow.Future: the outcome is set by the task, not by set_exception()")

    def __await__(self) -> Generator[Any, None, Any]:
        asyncio = _asyncio()
        if not self.done() and _inside_a_task():
            return self._await_in_task().__await__()
        return asyncio.wrap_future(self).__await__()

    def _help_in_loop(self, loop: Any, fn: Any) -> None:
        """Between the turns of an event loop that runs in a task and waits for this future
        through an asyncio callback, waits a slice as result() would (the worker runs other
        tasks meanwhile), while the callback is still installed."""
        if self.done() or loop.is_closed():
            return
        with self._lock:
            installed = any(callback is fn for callback in self._callbacks or [])
        if not installed:
            return
        self._task.wait(_AWAIT_SLICE_S)
        loop.call_soon(self._help_in_loop, loop, fn)

    async def _await_in_task(self) -> Any:
        """An await inside a task. The event loop keeps its turn (another coroutine may be what
        the task awaited waits for), but between turns the task waits a slice as result() would:
        the task awaited, or what it waits for, may be queued behind this worker (one worker: it
        would wait for ever), which runs it or another thread's tasks meanwhile. Sleeping in the
        event loop instead kept the worker from the tasks the awaited one waited for."""
        asyncio = _asyncio()
        self._task.check_wait_can_end()
        try:
            while not self.done():
                await asyncio.sleep(0)
                self._task.wait(_AWAIT_SLICE_S)
        except asyncio.CancelledError:
            self.cancel()  # as asyncio.wrap_future's future does outside a task
            raise
        if self.cancelled():
            raise asyncio.CancelledError()  # as outside a task (wrap_future)
        return self.result()

    def __repr__(self) -> str:
        status = self._status()
        # "ready" (its dependencies met) reads as "its result is ready"
        return f"<hetflow.Future '{self._name}' {'queued' if status == 'ready' else status}>"

    def __copy__(self) -> "Future":
        return self  # a handle on one task: a copy is the same handle (copy.copy of a structure)

    def __deepcopy__(self, memo: Any) -> "Future":
        return self

    def __reduce__(self) -> Any:
        # Inside a task's arguments, a placeholder the worker fills with the value; elsewhere, an
        # error (a future is a handle on this process's runtime).
        return packing.placeholder(self).__reduce__()

    @property
    def name(self) -> str:
        """The task's name (its function's, unless given)."""
        return self._name

    # -- what concurrent.futures.wait / as_completed read ----------------------------------
    def _made_condition(self) -> threading.Condition:
        condition = self._cond
        if condition is not None:
            return condition
        made = threading.Condition()  # before the lock is taken (see _lock)
        with self._lock:
            if self._cond is None:
                self._cond = made
            return self._cond

    def _condition_now(self) -> threading.Condition:
        condition = self._made_condition()
        # wait() and as_completed() take every future's condition before they read _state (see
        # _state_now): a task that has finished gets its final state here, before, so that one
        # that does not block (timeout=0) sees it done.
        if self._final_state is None and not condition._is_owned() and self._status() in _FINAL_STATES:  # type: ignore[attr-defined]
            self._finish()
        return condition

    def _state_now(self) -> str:
        # The standard library reads this twice while holding the condition (wait() decides what
        # is done, then counts what is not) and installs a waiter in between: the state must not
        # become final behind its back. A thread that holds the condition sees the stored state;
        # the transition comes from _fire (the watch is installed) once the condition is free.
        final = self._final_state
        if final is not None:
            return final
        status = self._status()
        if status in _FINAL_STATES:
            condition = self._made_condition()
            if not condition._is_owned():  # type: ignore[attr-defined]
                self._finish()
                return self._final_state  # type: ignore[return-value]
            self._watch()
            return _RUNNING
        return _RUNNING if status == "running" else _PENDING

    def _waiters_now(self) -> list:
        if self._waiter_list is not None:
            return self._waiter_list
        made = _Waiters(self)  # before the lock is taken (see _lock)
        with self._lock:
            if self._waiter_list is None:
                self._waiter_list = made
                watch = self._final_state is None
            else:
                watch = False
            waiters = self._waiter_list
        if watch:
            self._watch()  # outside the lock (see _watch)
        return waiters

    # Properties, made on demand; to type checkers the attributes that the standard library (and
    # the protocol its stubs give as_completed) expect.
    if TYPE_CHECKING:
        _condition: threading.Condition
        _state: str
        _waiters: list
    else:
        _condition = property(_condition_now)
        _state = property(_state_now)
        _waiters = property(_waiters_now)

    # -- internals ---------------------------------------------------------------------------
    def _status(self) -> str:
        """The task's status. A task that a shutdown gave up on counts as cancelled from then on:
        one not started at once (the engine cancels it only when a worker next looks at it), and
        one still running too, whatever it gives when it ends, detached."""
        status: str = self._task.status()
        if status in ("pending", "ready", "running") and self._runtime.abandoned():
            # Read again: the give-up may have ended it since (its engine ends what it gave up on
            # as it is read), as a dependent of a task given up on while it ran (DependencyError)
            status = self._task.status()
            if status in ("pending", "ready", "running"):
                return "cancelled"
        if status in ("done", "failed") and self._abandoned_when_it_ended():
            return "cancelled"
        return status

    def _abandoned_when_it_ended(self) -> bool:
        """Ended after shutdown gave up on it, detached: cancelled whatever it gave, unless its
        worker process was ended (WorkerCrashedError, as the give-up says)."""
        return self._task.finished_after_abort() and (
            self._task.status() == "done" or self._task.outcome()[0] != "crashed"
        )

    def _wait(self, timeout: Optional[float]) -> None:
        if self._task.done() or self._ended_if_given_up():
            return
        if timeout is not None and not isinstance(timeout, numbers.Real):
            # The engine's binding refused it with a message about its own types (TaskRef).
            raise TypeError(f"hetflow.Future: timeout must be None or a number of seconds, not {timeout!r}")
        with noting_interruptions((self,)):
            if (timeout is None or type(timeout) in (int, float) and timeout >= 0) and not _inside_a_task():
                finished = self._wait_in_slices(timeout)
            else:  # inside a task the engine runs other tasks meanwhile; a bad timeout is refused there
                finished = self._task.wait(timeout)
        if not finished:
            raise TimeoutError(f"task '{self._name}' did not finish within {timeout} s")

    def _wait_in_slices(self, timeout: Optional[float]) -> bool:
        """Waits so that a shutdown giving up on the task ends the wait (CancelledError): a task
        given up on may never finish, and one not started then never runs."""
        if timeout is None:
            self._task.check_wait_can_end()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _GIVE_UP_CHECK_S if deadline is None else min(_GIVE_UP_CHECK_S, deadline - time.monotonic())
            if self._task.wait(max(left, 0.0)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._ended_if_given_up():
                return True

    def _ended_if_given_up(self) -> bool:
        """Raises, instead of letting the caller wait, for a task that will never finish here (of
        a parent process, or given up on by a shutdown: CancelledError). True when the give-up
        ended the task meanwhile: what it ended with (a DependencyError, for a dependent of a task
        given up on while it ran) is what every reader of the future sees, not CancelledError."""
        try:
            self._runtime.check_usable(self._name)
        except CancelledError:
            if self._task.done():
                return True
            raise
        return False

    def _settle(self) -> None:
        """Turns the engine's outcome into a value or an exception, once."""
        self._runtime.saw_tasks_end()
        if self._value is not _UNSET or self._failure is not None:
            return
        if self._abandoned_when_it_ended():
            abandoned = CancelledError(f"task '{self._name}' did not finish: {self._runtime.gave_up}")
            self.__dict__.setdefault("_failure", (abandoned, None))
            return
        outcome = self._task.outcome()
        kind = outcome[0]
        if kind == "object":
            self._value = outcome[1]
        elif kind == "pickled":
            try:
                self._value = loads_result(bytes(outcome[1]))
            except ImportError as missing:
                if not sys.is_finalizing():
                    raise
                # A late use at interpreter shutdown: the modules its classes come from are gone.
                raise HetflowError(
                    f"hetflow: the value of task '{self._name}' cannot be loaded: the interpreter is shutting down "
                    f"({missing})"
                ) from None
        else:
            # One error per future: threads that read it together each make one, and the first
            # stored is the one every reader raises. Each borrows the task's frames, which the
            # store lets go of once one is stored. No lock: a finalizer run by a collection inside
            # the store's lock may read this future.
            error = exception_from_outcome(outcome)
            if kind in ("cancelled", "crashed") and self._runtime.gave_up is not None:
                error.args = (f"{error} ({self._runtime.gave_up})",)
            self.__dict__.setdefault("_failure", (error, error.__traceback__))  # atomic
            if kind == "python_error":
                forget_frames(outcome[1])

    def _outcome_value(self) -> Any:
        self._settle()
        failure = self._failure
        if failure is not None:
            error = failure[0]
            error.__traceback__ = failure[1]
            try:
                raise error
            finally:
                del self, error, failure  # the traceback must not keep this future (or itself) alive
        return self._value

    def _watch(self) -> None:
        # Called without self._lock held: the runtime's watch may start its completions thread,
        # and waits for it to start, where a collection may run a finalizer that uses a future
        # (see _lock). Marked once watched: a refusal (a task of a parent process) leaves it to
        # be asked again.
        with self._lock:
            if self._watched:
                return
            self._watched = True
        try:
            self._runtime.watch(self)
        except BaseException:
            with self._lock:
                self._watched = False
            raise

    def _finish(self) -> None:
        """Makes the state final and tells the waiters, once, under the condition; the task
        has finished."""
        condition = self._made_condition()
        with condition:
            if self._final_state is not None:
                return
            state, tell = _FINAL_STATES[self._status()]
            self._final_state = state
            self._runtime.saw_tasks_end()
            for waiter in list(self._waiter_list or ()):
                getattr(waiter, tell)(self)
            condition.notify_all()

    def _fire(self, here: bool = False) -> None:
        """Runs once the task has finished: on the dispatcher thread, or in cancel(). The
        callbacks run on a thread of their own (one that waits, for other futures say, holds
        back only them, not the completions that would end its wait); ``here``: on this thread
        before it returns, as concurrent.futures' cancel() runs them."""
        with self._lock:
            if self._fired:
                return  # fired when shutdown gave up on it, then again when it ended
            self._fired = True
        self._runtime.unwatch(self)
        self._finish()
        with self._lock:
            # Taken under the lock: a callback added meanwhile joined them, and one added later
            # goes after them (_late, run by _call_all), not before them, not here. They are
            # handed on with the lock released: the runtime's lock is never taken under this one
            # (a signal handler or a finalizer that uses a future, run in a thread that holds the
            # runtime's lock, would wait for this one while its holder waited for that one).
            callbacks, self._callbacks = self._callbacks or [], None
            handed = bool(callbacks) and not here
            if handed:
                self._queued = 1
        if handed:
            try:
                self._runtime.call_back(self._call_all, callbacks)
            except BaseException:
                with self._lock:
                    self._queued, self._late = 0, None
                raise
            return
        for fn in callbacks:  # here: as concurrent.futures' cancel() runs them
            self._call(fn)

    def _call_all(self, callbacks: list) -> None:
        """Runs, on the callback thread, the callbacks _fire handed on, then those added after
        them meanwhile (_late), in order."""
        while True:
            for fn in callbacks:
                self._call(fn)
            with self._lock:
                late, self._late = self._late, None
                if not late:
                    self._queued = 0
                    return
            callbacks = late

    def _call(self, fn: Callable[["Future"], Any]) -> None:
        self._runtime.saw_tasks_end()
        try:
            fn(self)
        except BaseException:  # as concurrent.futures does, and SystemExit too: others still run
            _LOGGER.exception("exception calling callback for %r", self)


# How long an await inside a task waits (running other tasks) before the loop gets a turn.
_AWAIT_SLICE_S = 0.002
# How often a wait outside a task looks whether shutdown gave the task up.
_GIVE_UP_CHECK_S = 0.2


def _inside_a_task() -> bool:
    """In a thread task of any of this process's runtimes."""
    return _runtime.inside_a_task()


def _running_loop() -> Any:
    """The asyncio event loop running in this thread, if any."""
    asyncio = sys.modules.get("asyncio")  # None too at interpreter shutdown
    if asyncio is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _asyncio() -> Any:
    """The asyncio module (loaded once something awaits), or a clear error where it can no longer
    be imported: at interpreter shutdown, in a late ``__del__``."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        try:
            import asyncio
        except ImportError as error:
            raise HetflowError(f"hetflow: cannot await a future: asyncio cannot be imported ({error})") from None
    return asyncio


class _LoopCallback:
    """A done-callback called in the event loop that added it."""

    def __init__(self, loop: Any, function: Callable[["Future"], Any]) -> None:
        self.loop = loop
        self.function = function

    def __call__(self, future: "Future") -> None:
        try:
            self.loop.call_soon_threadsafe(self.function, future)
        except RuntimeError:  # the loop has closed: nobody is left to tell
            pass


def wait_failing_fast(futures: "list[Future]", raise_failure: Callable[["Future"], Any] = Future.result) -> None:
    """Waits until every future has finished, or one has failed: then ``raise_failure(it)``
    raises its error, without waiting for the others (as Dask's and joblib's schedulers do).

    The futures are waited for in order; while one is unfinished, those after it are looked at
    now and then for a failure, at most a twentieth of the time."""
    for future in futures:
        if not future.done():
            future._task.check_wait_can_end()  # inside a task: waited for in slices, never refused
    failed: Optional[Future] = None
    with noting_interruptions(futures):  # not the failure raised after: a task's own KeyboardInterrupt
        for index, future in enumerate(futures):
            pause = _FAIL_FAST_PAUSE_S
            while failed is None and not future.done():
                future._task.wait(pause)
                started = time.monotonic()
                failed = next((other for other in futures[index + 1 :] if other._task.status() == "failed"), None)
                pause = max(_FAIL_FAST_PAUSE_S, 20 * (time.monotonic() - started))
            if failed is None and future._status() == "failed":
                failed = future
            if failed is not None:
                break
    if failed is not None:
        raise_failure(failed)


@contextlib.contextmanager
def noting_interruptions(futures: "Iterable[Future]") -> "Iterator[None]":
    """Around a wait for ``futures``: if the wait is interrupted (Ctrl-C, a signal handler's
    ``sys.exit``), their runtimes give up the work left at exit rather than wait for it. Every
    wait on futures goes through here, the Python between the engine's waits included."""
    try:
        yield
    except INTERRUPTIONS:
        for future in futures:
            future._runtime.interrupted = True
        raise


# At the end: hetflow._runtime imports this module (the names above are what it takes from it).
from hetflow import _runtime  # noqa: E402
