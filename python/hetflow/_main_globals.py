"""The host's main script in a worker process: its functions travel by value (cloudpickle), each
with its own copy of the globals it uses. The initializer's copy is kept, and the main script's
functions sent later see its objects under the same names, as they would in the one module they
come from: a global the initializer sets (``STATE["model"] = load()``) is what the tasks read.

>>> note_initializer(init)          # before running it, in the worker
>>> task = seeing_initializer_globals(task)
"""
from __future__ import annotations

import sys
import types
from typing import Any, Dict, Optional

_initializer_globals: Optional[Dict[str, Any]] = None


def _by_value_globals(func: Any) -> Optional[Dict[str, Any]]:
    """The globals ``func`` came with, if it is a function of the host's main script sent by
    value; else None."""
    globals_ = getattr(func, "__globals__", None)
    main = sys.modules.get("__main__")
    if not isinstance(globals_, dict) or globals_.get("__name__") not in ("__main__", "__mp_main__", "<run_path>"):
        return None
    return None if main is not None and globals_ is vars(main) else globals_


def note_initializer(initializer: Any) -> None:
    """Keeps the globals of the initializer (or of the function of a ``functools.partial``)."""
    global _initializer_globals
    _initializer_globals = _by_value_globals(getattr(initializer, "func", initializer))


def _rebound(func: types.FunctionType, globals_: Dict[str, Any]) -> types.FunctionType:
    copy = types.FunctionType(func.__code__, globals_, func.__name__, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__dict__.update(func.__dict__)
    copy.__qualname__ = func.__qualname__
    copy.__module__ = func.__module__
    copy.__doc__ = func.__doc__
    copy.__annotations__ = func.__annotations__
    return copy


def seeing_initializer_globals(func: Any) -> Any:
    """``func`` (and the main script's functions sent with it), the globals it shares with the
    initializer's being the initializer's objects; ``func`` itself when there are none."""
    shared = _initializer_globals
    own = _by_value_globals(func)
    if shared is None or own is None or own is shared or not isinstance(func, types.FunctionType):
        return func
    common = [name for name in own if name in shared and not name.startswith("__")]
    if not common:
        return func
    merged = dict(own)
    merged.update((name, shared[name]) for name in common)
    for name, value in own.items():
        if isinstance(value, types.FunctionType) and value.__globals__ is own and name not in common:
            merged[name] = _rebound(value, merged)
    return _rebound(func, merged)
