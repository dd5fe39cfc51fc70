"""Futures among a task's arguments: finding them and replacing them by their values.

Only the containers that hold a future (at any depth) are copied, with values in place of the
futures; every other argument reaches the task as the object itself, so a task that fills a list
or a dict given beside a future fills the caller's, and an object passed twice arrives as one.
The walk keeps to an explicit stack and remembers what it has seen: containers that hold
themselves, and nestings deeper than Python's recursion limit, are fine."""
from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple

_CONTAINERS = (list, tuple, dict, set, frozenset)


# Values that are never futures nor hold any, skipped without a call.
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None)})


def _items(value: Any) -> Iterator[Any]:
    """A container's items (a dict's keys and values, in turn)."""
    return itertools.chain.from_iterable(value.items()) if isinstance(value, dict) else iter(value)


class FutureSearch:
    """The futures among a task's arguments (in the order first met, each once), and which
    containers hold one, at top level or inside lists, tuples, sets and dicts (keys too)."""

    def __init__(self, args: tuple, kwargs: dict, is_future: Callable[[Any], bool]) -> None:
        self.is_future = is_future
        self.futures: List[Any] = []
        self.holders: Set[int] = set()  # ids of the containers that hold a future, at any depth
        seen_futures: Set[int] = set()
        visited: Set[int] = set()
        for top in (*args, *kwargs.values()):
            if type(top) in _ATOMS:
                continue
            if is_future(top):
                if id(top) not in seen_futures:
                    seen_futures.add(id(top))
                    self.futures.append(top)
                continue
            if not isinstance(top, _CONTAINERS) or id(top) in visited:
                continue
            # Depth first; a container is left once its items are done (then it is known whether
            # one of them holds a future), and its iterator resumes where it was after a child.
            visited.add(id(top))
            stack: List[Tuple[Any, Iterator[Any]]] = [(top, _items(top))]
            while stack:
                container, items = stack[-1]
                for child in items:
                    if type(child) in _ATOMS:
                        continue
                    if is_future(child):
                        self.holders.add(id(container))
                        if id(child) not in seen_futures:
                            seen_futures.add(id(child))
                            self.futures.append(child)
                    elif isinstance(child, _CONTAINERS):
                        if id(child) not in visited:
                            visited.add(id(child))
                            stack.append((child, _items(child)))
                            break
                        if id(child) in self.holders:
                            self.holders.add(id(container))
                else:
                    stack.pop()
                    if id(container) in self.holders and stack:
                        self.holders.add(id(stack[-1][0]))

    def substitute(self, value: Any, resolve: Callable[[Any], Any], copies: Dict[int, Any]) -> Any:
        """``value`` itself, or, when it is a future or holds one, its value or a copy with
        ``resolve(future)`` in place of each future, container types kept. ``copies`` maps the
        containers copied so far (one copy per container, however often it is named). Depth
        first on an explicit stack, as the search: nestings deeper than Python's recursion limit
        are fine. A container that holds itself (through lists and dicts: only those can) holds
        its copy, as ``pickle`` and ``copy.deepcopy`` give it: a list or dict copy is made empty
        as the walk enters it and filled as it leaves, and a tuple met again inside itself is
        put in place once it is made."""
        if self.is_future(value):
            return resolve(value)
        if id(value) not in self.holders or not isinstance(value, _CONTAINERS):
            return value
        if id(value) in copies:
            return copies[id(value)]
        # A container is rebuilt once the containers below it are. Lists and dicts get their
        # (empty) copy on the way in, so that one inside itself is named as its copy; a tuple,
        # set or frozenset being rebuilt (an ancestor) is noted where it was met, and put there
        # once it is made.
        in_progress = {id(value)}
        pending: Dict[int, List[Tuple[Any, Any]]] = {}  # id of such an ancestor: (copy, index or key)
        shell = _shell(value)
        if shell is not None:
            copies[id(value)] = shell
        stack: List[Tuple[Any, Iterator[Any]]] = [(value, _items(value))]
        while stack:
            container, items = stack[-1]
            for child in items:
                if (
                    isinstance(child, _CONTAINERS)
                    and id(child) in self.holders
                    and id(child) not in copies
                    and id(child) not in in_progress
                    and not self.is_future(child)
                ):
                    in_progress.add(id(child))
                    shell = _shell(child)
                    if shell is not None:
                        copies[id(child)] = shell
                    stack.append((child, _items(child)))
                    break
            else:
                stack.pop()
                in_progress.discard(id(container))
                made = self._rebuilt(container, resolve, copies, in_progress, pending)
                copies[id(container)] = made
                for holder, where in pending.pop(id(container), ()):
                    holder[where] = made
        return copies[id(value)]

    def _rebuilt(
        self,
        value: Any,
        resolve: Callable[[Any], Any],
        copies: Dict[int, Any],
        in_progress: Set[int],
        pending: Dict[int, List[Tuple[Any, Any]]],
    ) -> Any:
        """A copy of the container ``value``, its futures resolved and its containers that hold
        one replaced by their copies; a list or dict is filled into the copy made on the way in.
        An ancestor tuple still being rebuilt is left as itself for now, noted in ``pending``."""

        def each(item: Any) -> Any:
            if type(item) in _ATOMS:
                return item
            if self.is_future(item):
                return resolve(item)
            return copies.get(id(item), item) if id(item) in self.holders else item

        if isinstance(value, (list, dict)):
            made = copies[id(value)]
            if isinstance(value, list):
                made.extend(each(item) for item in value)
                places: List[Tuple[Any, Any]] = list(enumerate(value))
            else:
                places = []
                for key, item in value.items():
                    key = each(key)
                    made[key] = each(item)  # one by one: Counter.update would count them
                    places.append((key, item))
            for where, item in places:
                if id(item) in in_progress and id(item) not in copies:
                    pending.setdefault(id(item), []).append((made, where))
            return made
        if isinstance(value, tuple):
            items = [each(item) for item in value]
            try:
                return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
            except TypeError as error:
                raise TypeError(
                    f"hetflow: cannot rebuild a {type(value).__name__} with the values of the futures it holds "
                    f"(its constructor does not take its items: {error}); pass the futures outside it"
                ) from None
        return type(value)(each(item) for item in value)


def _shell(container: Any) -> Any:
    """An empty copy of a list or dict (of a subclass: what it keeps besides its items, a
    defaultdict's factory, attributes, with its own ``__init__`` left alone), to be filled once
    the containers inside it are copied; None for the other containers, made when they are."""
    if type(container) is list:
        return []
    if type(container) is dict:
        return {}
    if isinstance(container, (list, dict)):
        shell = copy.copy(container)
        shell.clear()
        return shell
    return None
