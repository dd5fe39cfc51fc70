"""Futures among a task's arguments: finding them and replacing them by their values."""
from __future__ import annotations

import copy
from typing import Any, Callable

_CONTAINERS = (list, tuple, dict, set, frozenset)


def _walk(value: Any, is_future: Callable[[Any], bool], found: list) -> None:
    if is_future(value):
        if not any(value is f for f in found):
            found.append(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _walk(item, is_future, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(key, is_future, found)
            _walk(item, is_future, found)


def find_futures(args: tuple, kwargs: dict, is_future: Callable[[Any], bool]) -> list:
    """The futures among the arguments, at top level or inside lists, tuples, sets and dicts
    (keys too)."""
    found: list = []
    for value in args:
        if is_future(value) or isinstance(value, _CONTAINERS):
            _walk(value, is_future, found)
    for value in kwargs.values():
        if is_future(value) or isinstance(value, _CONTAINERS):
            _walk(value, is_future, found)
    return found


def substitute(value: Any, is_future: Callable[[Any], bool], resolve: Callable[[Any], Any]) -> Any:
    """A copy of ``value`` with each future replaced by ``resolve(future)``, container types kept."""
    if is_future(value):
        return resolve(value)
    if isinstance(value, list):
        items = [substitute(item, is_future, resolve) for item in value]
        return items if type(value) is list else _refilled(value, items)
    if isinstance(value, tuple):
        items = [substitute(item, is_future, resolve) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, (set, frozenset)):
        return type(value)(substitute(item, is_future, resolve) for item in value)
    if isinstance(value, dict):
        pairs = [(substitute(key, is_future, resolve), substitute(item, is_future, resolve)) for key, item in value.items()]
        return dict(pairs) if type(value) is dict else _refilled(value, pairs)
    return value


def _refilled(container: Any, items: list) -> Any:
    """A copy of a list or dict subclass holding ``items`` (a dict's as pairs): what the subclass
    keeps besides its items (a defaultdict's factory, attributes) and its own ``__init__`` are
    left alone, and items are stored one by one (``Counter.update`` would count them)."""
    refilled = copy.copy(container)
    refilled.clear()
    if isinstance(refilled, dict):
        for key, item in items:
            refilled[key] = item
    else:
        refilled.extend(items)
    return refilled
