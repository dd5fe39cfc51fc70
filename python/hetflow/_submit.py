"""Submitting work: task_submit / submit, the delayed decorator and per-call options."""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, TypeVar, overload

from hetflow import _runtime
from hetflow._args import FutureSearch
from hetflow._data import names_with_modes
from hetflow._future import Future, _running_loop

F = TypeVar("F", bound=Callable[..., Any])


class TaskOptions:
    """Options for the tasks of one call: ``hetflow.task_submit.options(executor="thread")(f, x)``.

    executor: ``"thread"`` (a CPU worker thread, under the GIL; right for numpy and other code
    that releases it) or ``"process"`` (a worker interpreter process: pure Python in parallel).
    name: shown in errors and traces. priority: higher runs earlier under the ``prio`` scheduler.
    perfmodel: a symbol under which each task's run time is recorded, per architecture and
    size; size: the size recorded, an int or numpy integer from 0 to 2**64 - 1 (default: the total
    length of the arguments, see docs/python.md).
    """

    __slots__ = ("executor", "name", "priority", "perfmodel", "size")

    def __init__(
        self,
        executor: Optional[str] = None,
        name: Optional[str] = None,
        priority: int = 0,
        perfmodel: Optional[str] = None,
        size: Optional[int] = None,
    ) -> None:
        if executor is not None:
            _runtime.check_executor(executor)
        priority = _runtime.check_priority(priority)
        _runtime.check_name(name)
        if perfmodel is not None and not isinstance(perfmodel, str):
            raise TypeError(f"hetflow: perfmodel must be a symbol (str) or None, not {type(perfmodel).__name__}")
        if size is not None:
            from hetflow.perfmodel import check_size

            size = check_size(size)
        self.executor = executor
        self.name = name
        self.priority = priority
        self.perfmodel = perfmodel
        self.size = size

    def merged(self, **changes: Any) -> "TaskOptions":
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"hetflow: unknown task option(s) {', '.join(sorted(unknown))}; use {self.__slots__}")
        values = {slot: getattr(self, slot) for slot in self.__slots__}
        values.update({k: v for k, v in changes.items() if v is not None or k == "executor"})
        return TaskOptions(**values)

    def submit(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return _runtime.current().submit(
            func,
            args,
            kwargs,
            executor=self.executor,
            name=self.name,
            priority=self.priority,
            perfmodel=self.perfmodel,
            size=self.size,
        )


class _TaskSubmit:
    """``task_submit(func, *args, **kwargs)`` runs ``func(*args, **kwargs)`` as a task.

    >>> fut = hetflow.task_submit(add, 1, 2)
    >>> fut.result()
    3
    >>> hetflow.task_submit.options(executor="thread", name="add")(add, 1, 2).result()
    3

    Futures among the arguments (also inside lists, tuples, sets and dicts) make the task wait for
    them, and it receives their values.
    """

    def __call__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        runtime = _runtime._current or _runtime.current()
        return runtime.submit(func, args, kwargs)

    def options(
        self,
        executor: Optional[str] = None,
        name: Optional[str] = None,
        priority: int = 0,
        perfmodel: Optional[str] = None,
        size: Optional[int] = None,
    ) -> Callable[..., Future]:
        return TaskOptions(executor, name, priority, perfmodel, size).submit


task_submit = _TaskSubmit()
submit = task_submit


class DelayedFunction:
    """A function whose calls are submitted as tasks; made by ``@hetflow.delayed``."""

    def __init__(self, func: Callable[..., Any], options: TaskOptions, access: Optional[Dict[str, str]] = None) -> None:
        if not callable(func):
            raise TypeError(f"hetflow.delayed: {func!r} is not callable")
        _runtime.refuse_async_function(func, "hetflow.delayed")
        functools.update_wrapper(self, func)
        self.func = func
        self.access = _checked_access(func, access)
        self._options = options if options.name else options.merged(name=getattr(func, "__name__", None))

    def __call__(self, *args: Any, **kwargs: Any) -> Future:
        if _runtime.inside_a_task() and _running_loop() is None:
            # Inside a task: the value, not a future, so that a function calling it works the same
            # in either executor.
            # A coroutine (an event loop the task runs) gets a future to await, as outside.
            # Futures among the arguments are waited for and replaced by their values, as a task
            # gets them (the function got the futures themselves).
            search = FutureSearch(args, kwargs, _runtime._is_future) if args or kwargs else None
            if search is not None and search.futures:
                copies: Dict[int, Any] = {}
                args = tuple(search.substitute(value, _runtime._resolve, copies) for value in args)
                kwargs = {key: search.substitute(value, _runtime._resolve, copies) for key, value in kwargs.items()}
            return self.func(*args, **kwargs)
        if self.access:
            args, kwargs = names_with_modes(self.func, self.access, args, kwargs)
        return self._options.submit(self.func, *args, **kwargs)

    def __get__(self, instance: Any, owner: Optional[type] = None) -> "DelayedFunction":
        # On a method: the call gets its instance first, as the plain method would (and so do
        # the calls of .options(), which a bound method would hand the unbound function).
        # A staticmethod (``@delayed`` above ``@staticmethod``) gets no instance.
        if instance is None or isinstance(self.func, staticmethod):
            return self
        return DelayedFunction(functools.partial(self.func, instance), self._options, self.access)

    def options(self, **changes: Any) -> "DelayedFunction":
        """The same function with some task options changed, for one call or more:
        ``add.options(executor="thread")(1, 2)``."""
        return DelayedFunction(self.func, self._options.merged(**changes), self.access)

    @property
    def perfmodel(self) -> Optional[str]:
        """The symbol the calls' times are recorded under, if any."""
        return self._options.perfmodel

    def __reduce__(self) -> Any:
        # Sent to a worker process (inside another task, say) as itself: a call there returns the
        # value as in a thread task, and a future to await in a coroutine the task runs.
        return (DelayedFunction, (self.func, self._options, self.access or None))


def _checked_access(func: Callable[..., Any], access: Optional[Dict[str, str]]) -> Dict[str, str]:
    if access is None:
        return {}
    if not isinstance(access, dict):
        raise TypeError(
            f"hetflow.delayed: access must be a dict of parameter name -> mode ('R', 'W', 'RW' or 'REDUX'), "
            f"e.g. access={{'out': 'W'}}, not {type(access).__name__} {access!r}"
        )
    if not access:
        return {}
    import inspect

    from hetflow._arrays import MODES, check_mode

    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        parameters = None
    checked = {}
    for name, mode in access.items():
        if not isinstance(name, str):
            raise TypeError(f"hetflow.delayed: access keys are parameter names (str), not {name!r}")
        if parameters is not None and name not in parameters:
            raise ValueError(f"hetflow.delayed: access names {name!r}, which is not a parameter of {func.__name__}")
        if parameters is not None and parameters[name].kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise ValueError(
                f"hetflow.delayed: access names {name!r}, which gathers several arguments (*{name} or **{name}); "
                "mark those arguments themselves at the call (hetflow.RW(array), ...)"
            )
        if not isinstance(mode, str) or mode.upper() not in MODES:
            raise ValueError(f"hetflow.delayed: access[{name!r}] is {mode!r}; a mode is 'R', 'W', 'RW' or 'REDUX'")
        checked[name] = check_mode(mode)
    return checked


@overload
def delayed(func: F) -> DelayedFunction: ...
@overload
def delayed(
    *,
    name: Optional[str] = None,
    priority: int = 0,
    perfmodel: Optional[str] = None,
    executor: Optional[str] = None,
    access: Optional[Dict[str, str]] = None,
) -> Callable[[F], DelayedFunction]: ...


def delayed(
    func: Optional[Callable[..., Any]] = None,
    *,
    name: Optional[str] = None,
    priority: int = 0,
    perfmodel: Optional[str] = None,
    executor: Optional[str] = None,
    access: Optional[Dict[str, str]] = None,
) -> Any:
    """Makes calls of the decorated function submit tasks and return futures.

    >>> @hetflow.delayed
    ... def add(a, b):
    ...     return a + b
    >>> add(1, 2).result()
    3
    >>> @hetflow.delayed(name="mul", priority=2, executor="thread")
    ... def mul(a, b):
    ...     return a * b
    >>> @hetflow.delayed(access={"out": "W"})     # numpy arguments are read ("R") by default
    ... def scale(out, a, factor):
    ...     out[:] = a * factor
    """
    options = TaskOptions(executor, name, priority, perfmodel)
    if func is not None:
        return DelayedFunction(func, options, access)
    return lambda f: DelayedFunction(f, options, access)
