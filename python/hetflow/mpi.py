"""hetflow across MPI ranks: every rank runs the same program, owner-computes.

Every rank registers the same numpy arrays with an owner rank and submits the same tasks in the
same order; a task over registered arrays runs on the owner of the arrays it writes (or where
``on=`` says), and hetflow sends it the arrays it reads. Tasks over no registered array run on
every rank, as without MPI. Run the program under ``mpirun``::

    import numpy as np
    import hetflow, hetflow.mpi as hm

    hm.init()                                    # MPI_COMM_WORLD (or hm.init(comm) with mpi4py)
    tiles = [np.zeros(1000) for _ in range(8)]
    for i, tile in enumerate(tiles):
        hm.register(tile, owner=i % hm.size())   # the same calls on every rank
    hetflow.task_submit(np.add, tiles[0], tiles[1], hetflow.W(tiles[2]))   # on tile 2's owner
    hm.gather(tiles[2], root=0)                  # its latest version on rank 0 too
    hm.wait_all()                                # every rank: everything is done

A future is real on the rank that runs its task; elsewhere it is finished and its ``result()``
raises ``ElsewhereError``. ``future.rank`` says where the task ran. See docs/mpi.md.
"""
from __future__ import annotations

import atexit
import bisect
import dis
import functools
import math
import numbers
import os
import sys
import threading
import types
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, TypeVar

from hetflow import _runtime
from hetflow._args import _CONTAINERS
from hetflow._arrays import Access, span
from hetflow._errors import DependencyError, ElsewhereError, exception_from_outcome
from hetflow._future import Future
from hetflow._serialize import is_array

#: The owner of an array every rank has its own copy of: never sent; a task whose registered
#: arrays are all of this kind runs on every rank, each on its own copy.
EVERY_RANK = -1

__all__ = [
    "EVERY_RANK",
    "ElsewhereError",
    "block_cyclic",
    "broadcast",
    "distribute",
    "flush",
    "gather",
    "get_on",
    "holder",
    "init",
    "migrate",
    "owner",
    "rank",
    "register",
    "sent",
    "set_reduction",
    "size",
    "task_submit",
    "wait_all",
]

K = TypeVar("K", bound=Hashable)

# What a rank's worker processes inherit, for rank() and size() in process-executor tasks.
_RANK_VARIABLE = "HETFLOW_MPI_RANK"
_SIZE_VARIABLE = "HETFLOW_MPI_SIZE"

# How long the context may take at exit to finish the transfers still in flight before the
# program tells the other ranks and leaves without them (another rank failed, say).
_EXIT_WAIT_S = 30.0
# Beyond that, how long the closing may take (the farewell, cancelling) before it is left to run
# on behind the program.
_CLOSE_GRACE_S = 10.0


class _State:
    def __init__(self, context: Any, runtime: Any) -> None:
        self.context = context
        self.runtime = runtime
        self.rank: int = context.rank()
        self.size: int = context.size()
        # _key(array) -> (array, handle capsule); the arrays are kept alive while registered.
        self.arrays: Dict[tuple, Tuple[Any, Any]] = {}
        # The memory of the registered arrays that have some, by lowest address: [low], [(end, key)]
        self.span_lows: List[int] = []
        self.span_ends: List[Tuple[int, tuple]] = []
        self.checking = False  # HETFLOW_MPI_CHECK


_state: Optional[_State] = None
_lock = threading.Lock()


def _module() -> Any:
    try:
        from hetflow import _hetflow_mpi
    except ImportError as error:
        raise ImportError(
            "hetflow.mpi: this hetflow was built without MPI; install Open MPI's development files "
            "(Debian: libopenmpi-dev openmpi-bin) and reinstall hetflow"
        ) from error
    return _hetflow_mpi


def init(comm: Any = None, *, share_node: bool = True, abort_on_error: bool = True) -> None:
    """Joins the ranks of ``comm`` (an mpi4py communicator; default: MPI_COMM_WORLD). MPI is
    initialised (thread level MULTIPLE) unless mpi4py or the program did it; hetflow then
    finalises it at exit. Every rank calls it, before its first task over distributed arrays.

    ``share_node``: ranks on one machine split its CPUs, each runtime starting one worker per
    CPU of its share (only when the runtime has not started yet; ``hetflow.init(ncpus=...)``
    before this call decides instead).

    ``abort_on_error``: a rank that ends on an uncaught exception (Ctrl-C included) ends every
    rank (MPI_Abort) once its traceback is printed, instead of leaving the others waiting for
    it for ever.

    >>> from mpi4py import MPI
    >>> hetflow.mpi.init(MPI.COMM_WORLD.Split(color, key))
    """
    global _state
    module = _module()
    with _lock:
        if _state is not None or _runtime.refusal_to_start is not None:
            raise RuntimeError("hetflow.mpi.init: already called in this process")
        address = None
        if comm is not None:
            try:
                from mpi4py import MPI
            except ImportError as error:
                raise TypeError("hetflow.mpi.init: comm must be an mpi4py communicator (mpi4py is not installed)") from error
            if not isinstance(comm, MPI.Comm):
                raise TypeError(f"hetflow.mpi.init: comm must be an mpi4py communicator, not {type(comm).__name__}")
            address = MPI._addressof(comm)
        transport = module.Transport(address)
        if _runtime._current is None:
            if share_node:
                transport.share_node()
            # Worker processes started from here on inherit them: rank() and size() work there.
            os.environ[_RANK_VARIABLE] = str(transport.rank())
            os.environ[_SIZE_VARIABLE] = str(transport.size())
        runtime = _runtime.current()
        runtime.serves_mpi = True
        context = module.Context(runtime._engine.engine_capsule(), transport)
        runtime._engine.set_router(context.router())
        _state = _State(context, runtime)
        if os.environ.get("HETFLOW_MPI_CHECK", "") in ("1", "true", "yes", "on"):  # the context refused others
            _state.checking = True
        # Every submission: registered arrays the task reaches other than as its own arguments are
        # refused (and, with HETFLOW_MPI_CHECK, the label the ranks compare).
        runtime.check_label = _label_of_submission
        runtime.before_stop(_closer(_state))
    if abort_on_error:
        _abort_on_uncaught(module)
    # After mpi4py's own exit handler was registered (at its import): this one runs before it.
    atexit.register(_close_at_exit)


def _abort_on_uncaught(module: Any) -> None:
    previous = sys.excepthook

    def hook(kind: Any, value: Any, traceback: Any) -> None:
        previous(kind, value, traceback)
        state = _state
        if state is not None and state.size > 1:
            print(
                f"hetflow.mpi: rank {state.rank} ended on an uncaught {kind.__name__}; ending every rank (MPI_Abort)",
                file=sys.stderr,
                flush=True,
            )
            module.abort_all(1)

    sys.excepthook = hook


def _closer(state: _State) -> Callable[[bool], None]:
    def close(finished: bool) -> None:
        global _ended, _ended_ranks
        _ended = True
        _ended_ranks = (state.rank, state.size)  # rank() and size() still answer, as mpi4py's do
        _runtime.refusal_to_start = (
            "hetflow: the runtime that served hetflow.mpi was shut down, and no other may start in this "
            "process (its distributed arrays would be plain arrays to it): an MPI program keeps one runtime, "
            "shut down at its end"
        )
        _close(state, wait=finished)

    return close


def _label_of_submission(func: Any, args: tuple, kwargs: dict) -> str:
    """Called for every task submitted while hetflow.mpi serves the runtime: refuses the task
    (ValueError, on every rank alike, before anything is submitted) when it reaches a distributed
    array other than as one of its own arguments, and gives ``_check_label``'s label with
    HETFLOW_MPI_CHECK ("" otherwise)."""
    state = _state
    if state is None:
        return ""
    if state.arrays:
        _refuse_hidden_arrays(state, func, args, kwargs)
    return _check_label(func, args, kwargs) if state.checking else ""


# How much of the containers among a task's arguments and of its function's captures is searched
# for distributed arrays: a few levels, a bounded number of items (the search runs per task).
_HIDDEN_DEPTH = 3
_HIDDEN_ITEMS = 256


def _refuse_hidden_arrays(state: _State, func: Any, args: tuple, kwargs: dict) -> None:
    """A distributed array inside a list, tuple or dict argument, or captured by the function (a
    ``functools.partial``'s arguments, a closure, a default value), is no task data: no transfer
    brings it to the rank that runs the task, which silently reads its own copy, out of date
    (or its value in flight, depending on timing). Such a task is refused, saying what to do.
    A module global variable the function itself reads is searched too (not those of the
    functions it calls)."""
    ndarray = sys.modules["numpy"].ndarray  # loaded: arrays were registered
    values = [value.value if type(value) is Access else value for value in (*args, *kwargs.values())]
    function = func
    while isinstance(function, functools.partial):
        function = function.func
    closure = getattr(function, "__closure__", None)
    defaults = getattr(function, "__defaults__", None)
    kwdefaults = getattr(function, "__kwdefaults__", None)
    code, module_globals = getattr(function, "__code__", None), getattr(function, "__globals__", None)
    if isinstance(code, types.CodeType) and isinstance(module_globals, dict):
        for name in _globals_read(code):
            value = module_globals.get(name)
            if isinstance(value, ndarray) and _is_hidden_array(state, value, values, ndarray):
                _refuse_hidden(func, f"the module global variable {name!r} its function reads")
    if function is func and not (closure or defaults or kwdefaults):
        for value in values:
            if isinstance(value, _CONTAINERS):
                break
        else:
            return  # the common task, whose arrays are all its arguments: nothing to search

    budget = [_HIDDEN_ITEMS]

    def search(value: Any, depth: int) -> bool:
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        if isinstance(value, ndarray):
            return _is_hidden_array(state, value, values, ndarray)
        if depth >= _HIDDEN_DEPTH:
            return False
        if type(value) is Access:
            return search(value.value, depth + 1)
        if isinstance(value, (list, tuple, set, frozenset)):
            return any(search(item, depth + 1) for item in value)
        if isinstance(value, dict):
            return any(search(item, depth + 1) for item in value.values())
        return False

    for argument in values:
        if not isinstance(argument, ndarray) and search(argument, 0):
            _refuse_hidden(func, "a list, tuple or dict argument")
    function = func
    while isinstance(function, functools.partial):
        if search(function.args, 0) or search(function.keywords, 0):
            _refuse_hidden(func, "the arguments of a functools.partial")
        function = function.func
    if search([cell.cell_contents for cell in closure or () if _filled(cell)], 0):
        _refuse_hidden(func, "a variable its function captured (a closure)")
    if search((*(defaults or ()), *(kwdefaults or {}).values()), 0):
        _refuse_hidden(func, "a default value of its function's arguments")


def _is_hidden_array(state: _State, array: Any, arguments: List[Any], ndarray: type) -> bool:
    """Whether ``array`` is, or shares memory with, a distributed array (not EVERY_RANK's) none of
    ``arguments`` is: a registered array itself, or another view of its memory (the matrix whose
    row blocks were registered, a slice across two of them), which reads the elements of this
    rank's copies, out of date, as much as the array itself would."""
    key = _key(array)
    record = state.arrays.get(key)
    if record is not None:
        met = [(key, record)]
    else:
        low, nbytes, _ = span(array)
        met = _registered_meeting(state, low, low + nbytes) if nbytes else []
    given = {_key(argument) for argument in arguments if isinstance(argument, ndarray)}
    return any(
        met_key not in given and state.context.owner(met_record[1]) != EVERY_RANK for met_key, met_record in met
    )


def _registered_meeting(state: _State, low: int, high: int) -> List[Tuple[tuple, Tuple[Any, Any]]]:
    """The registered arrays that share a byte with ``low`` to ``high`` (registered arrays share
    none: their ends rise with their starts)."""
    found = []
    index = bisect.bisect_left(state.span_lows, high)
    while index > 0:
        index -= 1
        end, key = state.span_ends[index]
        if end <= low:
            break
        found.append((key, state.arrays[key]))
    return found


_GLOBALS_READ: Dict[types.CodeType, frozenset] = {}
_GLOBALS_READ_KEPT = 4096  # code objects made at run time (exec) would grow it without bound


def _globals_read(code: types.CodeType) -> frozenset:
    """The global names ``code`` loads, its nested functions' and comprehensions' included
    (read from the bytecode: attributes of the same name are not among them)."""
    names = _GLOBALS_READ.get(code)
    if names is None:
        found = {instruction.argval for instruction in dis.get_instructions(code) if instruction.opname == "LOAD_GLOBAL"}
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                found |= _globals_read(constant)
        if len(_GLOBALS_READ) >= _GLOBALS_READ_KEPT:
            _GLOBALS_READ.clear()
        names = _GLOBALS_READ[code] = frozenset(found)
    return names


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return False
    return True


def _refuse_hidden(func: Any, place: str) -> None:
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    raise ValueError(
        f"hetflow.mpi: task {name!r} reaches an array registered with hetflow.mpi (or a view of its memory) through "
        f"{place}; only a task's own arguments are task data (no transfer would bring it to the rank that runs the "
        "task, which would read its own copy, out of date): give the array itself as an argument (hetflow.R(a), "
        "hetflow.RW(a))"
    )


def _check_label(func: Any, args: tuple, kwargs: dict) -> str:
    """What the submission check compares of a task beyond its data's tags, modes and layouts:
    its function (``_code_label``) and the dtypes of the distributed arrays it is given, which
    the layouts do not tell apart when the sizes match (float64 here, int64 there)."""
    state = _state
    label = _code_label(func)
    if state is None:
        return label
    dtypes = []
    for value in (*args, *kwargs.values()):
        array = value.value if type(value) is Access else value
        if is_array(array) and _key(array) in state.arrays:
            dtypes.append(str(array.dtype))
    return f"{label} over {', '.join(dtypes)}" if dtypes else label


def _code_label(func: Any) -> str:
    """What the submission check (``HETFLOW_MPI_CHECK``) compares of a task's function between
    the ranks: its qualified name, first line and a checksum of its bytecode and constants, so
    that two lambdas, or two versions of a function, differ. Not its file's path (the ranks may
    run the program from different directories), nor what it captured."""
    import functools
    import zlib

    while isinstance(func, functools.partial):
        func = func.func
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    code = getattr(func, "__code__", None)
    if code is None:
        return qualname
    checksum = zlib.crc32(code.co_code)
    for constant in code.co_consts:
        checksum = zlib.crc32(_constant_text(constant).encode("utf-8", "backslashreplace"), checksum)
    return f"{qualname} (line {code.co_firstlineno}, code {checksum:08x})"


def _constant_text(constant: Any) -> str:
    """A constant of a function's code as the same text on every rank: a nested function's code
    object by its name (it prints its address), a frozenset (``x in {"a", "b"}``) with its
    items sorted (it prints them in the order of their hashes, which for strings follow each
    process's own hash seed: the ranks' checks differed for one program)."""
    if hasattr(constant, "co_code"):
        return constant.co_name
    if isinstance(constant, frozenset):
        return "frozenset({" + ", ".join(sorted(_constant_text(item) for item in constant)) + "})"
    if isinstance(constant, tuple):
        return "(" + ", ".join(_constant_text(item) for item in constant) + ",)"
    return repr(constant)


def _close(state: _State, wait: bool, at_exit: bool = False) -> None:
    """Ends the context: waits for the transfers in flight (at exit at most _EXIT_WAIT_S, then
    tells the other ranks and leaves them), or leaves them when the work was given up; and, unless
    the process is exiting, for the other ranks to end theirs (the context's farewell)."""
    global _state
    with _lock:
        if _state is state:
            _state = None
    state.runtime.check_label = None
    try:
        state.runtime._engine.set_router(None)
    except RuntimeError:
        pass  # the engine is gone already
    if not wait:
        state.context.forget()
        return
    closer = threading.Thread(
        target=state.context.close, args=(at_exit, _EXIT_WAIT_S), name="hetflow-mpi-close", daemon=True
    )
    closer.start()
    closer.join(_EXIT_WAIT_S + _CLOSE_GRACE_S)
    if closer.is_alive():
        state.context.forget()
        print(
            f"hetflow.mpi: rank {state.rank}: its context has not ended after {_EXIT_WAIT_S + _CLOSE_GRACE_S:.0f} s "
            "(transfers still in flight, or other ranks that have not ended theirs: did one fail, or skip a call "
            "every rank makes?); going on without it",
            file=sys.stderr,
        )


def _close_at_exit() -> None:
    state = _state
    if state is not None:
        _close(state, wait=True, at_exit=True)


def _current() -> _State:
    state = _state
    if state is None:
        if _forked_from is not None:
            raise RuntimeError(
                f"hetflow.mpi: this process was forked from rank {_forked_from}; a forked child is not an MPI "
                "rank (MPI does not follow a fork), so it cannot take part in the distributed program"
            )
        if _ended:
            raise RuntimeError(
                "hetflow.mpi: the runtime that served hetflow.mpi was shut down (hetflow.shutdown(), or the end of "
                "a `with hetflow.init(...)` block), which ended its context; hetflow.mpi cannot start again in this "
                "process: keep the runtime until the program's distributed work is done"
            )
        raise RuntimeError("hetflow.mpi: call hetflow.mpi.init() first (on every rank)")
    return state


_forked_from: Optional[int] = None  # in a forked child of a rank: that rank
_ended = False  # the runtime that served hetflow.mpi was shut down
_ended_ranks: Optional[Tuple[int, int]] = None  # then: this process's rank and the number of ranks


def _after_fork_in_child() -> None:
    global _state, _forked_from
    if _state is not None:
        _forked_from = _state.rank
        _state.context.forget()  # the parent's: never ended here
    _state = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _every_rank_call(what: str) -> _State:
    """The state, for a call every rank makes (registering, moving, flushing, comparing or
    waiting for data): refused inside a task, which runs on one rank only. Made there, it put
    that rank's table of where the data are apart from the others' (a gather waited for data
    nobody sends), and, with HETFLOW_MPI_CHECK, its comparison of the ranks' work crossed the
    one the program's own wait_all made at the same time (the ranks' messages mixed up: the
    process aborted in the transport's thread)."""
    state = _current()
    if state.runtime.inside_task():
        raise RuntimeError(
            f"hetflow.mpi.{what}() cannot be called inside a task: the task runs on one rank only, and every "
            "rank's program makes this call, in the same order; make it outside the tasks"
        )
    return state


def _from_parent(variable: str) -> Optional[int]:
    """In a worker process of a rank's runtime: what the rank told it."""
    text = os.environ.get(variable)
    return int(text) if _state is None and text is not None and text.isdigit() else None


def rank() -> int:
    """This process's rank (in a process-executor task: the rank whose runtime runs it)."""
    inherited = _from_parent(_RANK_VARIABLE)
    if inherited is None and _state is None and _ended_ranks is not None and _forked_from is None:
        return _ended_ranks[0]  # after hetflow.shutdown(): the rank it was
    return inherited if inherited is not None else _current().rank


def size() -> int:
    """How many ranks run the program."""
    inherited = _from_parent(_SIZE_VARIABLE)
    if inherited is None and _state is None and _ended_ranks is not None and _forked_from is None:
        return _ended_ranks[1]
    return inherited if inherited is not None else _current().size


def _checked_rank(value: Any, what: str, allow_every: bool = False) -> int:
    state = _current()
    if type(value) is not int and not (hasattr(value, "__index__") and not isinstance(value, bool)):
        raise TypeError(f"hetflow.mpi.{what}: a rank is an int, not {type(value).__name__}")
    value = int(value)
    if allow_every and value == EVERY_RANK:
        return value
    if not 0 <= value < state.size:
        every = " or hetflow.mpi.EVERY_RANK" if allow_every else ""
        raise ValueError(f"hetflow.mpi.{what}: rank {value} is not one of 0..{state.size - 1}{every}")
    return value


def register(array: Any, owner: int, *, tag: Optional[int] = None, name: Optional[str] = None) -> Any:
    """Registers ``array`` (a contiguous numpy array) as distributed data owned by rank ``owner``
    (or ``EVERY_RANK``), and returns it. Every rank registers its own array of the same size
    with the same owner, in the same order: on the owner it is the data, elsewhere it is where
    a copy lands when a task there reads it. ``tag`` (default: the next free one) names its
    messages. The array is kept alive by hetflow from now on; views of it are not task data.

    >>> a = hetflow.mpi.register(np.zeros(1000), owner=1)
    """
    import numpy

    state = _every_rank_call("register")
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"hetflow.mpi.register: takes a numpy array, not {type(array).__name__}")
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        raise ValueError("hetflow.mpi.register: the array must be contiguous (numpy.ascontiguousarray makes a copy)")
    if not array.flags.writeable:
        raise ValueError("hetflow.mpi.register: the array must be writeable (copies of it are received into it)")
    if array.dtype.hasobject:
        raise TypeError(f"hetflow.mpi.register: an array of dtype {array.dtype} holds pointers; it cannot be sent")
    owner = _checked_rank(owner, "register", allow_every=True)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"hetflow.mpi.register: name must be a str, not {type(name).__name__}")
    with _lock:
        if _key(array) in state.arrays:
            if array.size == 0 and state.arrays[_key(array)][0] is not array:
                # np.array_split(matrix, ranks) with fewer rows than ranks: empty pieces at one address.
                raise ValueError(
                    "hetflow.mpi.register: this empty array starts where an empty array registered already does, "
                    "with the same shape (np.array_split gives such pieces when there are fewer rows than pieces); "
                    "hetflow cannot tell them apart: register one of them, or give the others arrays of their own "
                    "(numpy.empty(shape))"
                )
            raise ValueError("hetflow.mpi.register: this array is registered already")
        chosen = state.context.allocate_tags(1) if tag is None else tag
        if not isinstance(chosen, numbers.Integral) or isinstance(chosen, bool):
            raise TypeError(f"hetflow.mpi.register: tag must be an int, not {type(chosen).__name__}")
        chosen = int(chosen)
        if not 0 <= chosen < 2**31:
            raise ValueError(f"hetflow.mpi.register: tag {chosen} is not an MPI tag (0 up to the MPI library's MPI_TAG_UB)")
        label = name or f"array {chosen}"
        capsules: List[Any] = []

        def register_handle(address: int, nbytes: int) -> Any:
            dims = _dims_contiguous_first(array)
            if (math.prod(dims) if dims else 0) * array.itemsize != array.nbytes:
                raise AssertionError(
                    f"hetflow.mpi.register: the layout {dims} does not cover the array's {array.nbytes} bytes"
                )
            capsules.append(state.context.register_array(address, array.itemsize, dims, owner, chosen, label))
            return state.runtime._engine.adopt_distributed(capsules[0])

        state.runtime.handles.adopt(array, register_handle)
        state.arrays[_key(array)] = (array, capsules[0])
        low, nbytes, _ = span(array)
        if nbytes:
            index = bisect.bisect_right(state.span_lows, low)
            state.span_lows.insert(index, low)
            state.span_ends.insert(index, (low + nbytes, _key(array)))
    return array


def _dims_contiguous_first(array: Any) -> List[int]:
    """The dimensions of a contiguous array, the contiguous one first, the outermost merged past
    four: what the submission check (``HETFLOW_MPI_CHECK``) compares between the ranks, with the
    item size, so that an array of another shape, dtype size or memory order elsewhere is told."""
    if array.nbytes == 0:  # no element, or elements of no byte (a structured dtype of no field)
        return []
    dims = [int(d) for d in (array.shape if not array.flags.c_contiguous else reversed(array.shape))] or [1]
    while len(dims) > 4:
        # Not `dims[-2] *= dims.pop()`: its target is read before the pop and stored after it,
        # one place off (a 5-D array of 24 items was registered as 8, and only 8 were sent).
        outermost = dims.pop()
        dims[-1] *= outermost
    return dims


def _key(array: Any) -> tuple:
    """The same for every numpy array over the same elements (a view made again, say)."""
    return (array.__array_interface__["data"][0], array.shape, array.strides, array.dtype.str)


def distribute(arrays: Mapping[K, Any], owner: Callable[[K], int]) -> Mapping[K, Any]:
    """Registers every array of ``arrays`` with the owner ``owner(key)`` gives, in the mapping's
    order (the same on every rank); returns ``arrays``.

    >>> tiles = {(i, j): np.zeros((b, b)) for i in range(n) for j in range(i + 1)}
    >>> hetflow.mpi.distribute(tiles, hetflow.mpi.block_cyclic())   # 2-D block-cyclic
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(
            f"hetflow.mpi.distribute: arrays must be a mapping of key -> array (a dict), not {type(arrays).__name__}"
        )
    if not callable(owner):
        raise TypeError(f"hetflow.mpi.distribute: owner must be a function of the key, not {type(owner).__name__}")
    for key, array in arrays.items():
        register(array, owner(key), name=f"{key}")
    return arrays


def block_cyclic(rows: Optional[int] = None, columns: Optional[int] = None) -> Callable[[Any], int]:
    """The owner of tile ``(i, j)`` on a ``rows`` x ``columns`` grid of ranks, 2-D block-cyclic:
    ``(i % rows) * columns + j % columns``. Default: the most square grid of every rank."""
    count = size()
    for what, given in (("rows", rows), ("columns", columns)):
        if given is None:
            continue
        if isinstance(given, bool) or not isinstance(given, numbers.Integral):
            raise TypeError(f"hetflow.mpi.block_cyclic: {what} must be an int, not {type(given).__name__}")
        if given < 1:  # before dividing by it
            raise ValueError(f"hetflow.mpi.block_cyclic: {what} must be 1 or more, not {given}")
    if rows is None and columns is None:
        rows = max(r for r in range(1, int(count**0.5) + 1) if count % r == 0)
    if rows is None:
        rows = count // int(columns)  # type: ignore[arg-type]
    if columns is None:
        columns = count // rows
    if rows < 1 or columns < 1 or rows * columns > count:
        raise ValueError(f"hetflow.mpi.block_cyclic: a {rows} x {columns} grid does not fit {count} ranks")
    grid_rows, grid_columns = rows, columns

    def owner(key: Any) -> int:
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and all(isinstance(index, numbers.Integral) and not isinstance(index, bool) for index in key)
        ):
            # It raised "not enough values to unpack", or took a str of two letters.
            raise TypeError(f"hetflow.mpi.block_cyclic: a tile key is a pair of ints (i, j), not {key!r}")
        i, j = key
        return (i % grid_rows) * grid_columns + j % grid_columns

    return owner


def _capsule(array: Any, what: str) -> Any:
    import numpy

    state = _current()
    record = state.arrays.get(_key(array)) if isinstance(array, numpy.ndarray) else None
    if record is None:
        raise ValueError(f"hetflow.mpi.{what}: the array was not registered with hetflow.mpi.register")
    return record[1]


def task_submit(func: Callable[..., Any], *args: Any, on: Optional[Any] = None, **options: Any) -> Future:
    """``hetflow.task_submit`` with a placement: ``on`` is a rank, or a registered array whose
    owner runs the task. Other keywords are task options (executor, name, priority, ...);
    the function's own keyword arguments go through ``functools.partial``.

    >>> hetflow.mpi.task_submit(report, hetflow.R(total), on=0)   # on rank 0, total sent there
    """
    import numpy

    state = _current()
    if isinstance(on, numpy.ndarray):  # a registered array: its owner
        on = state.context.owner(_capsule(on, "task_submit"))
        if on == EVERY_RANK:  # not "no placement": the task would run wherever its data say
            raise ValueError(
                "hetflow.mpi.task_submit: on= names an array every rank owns (hetflow.mpi.EVERY_RANK), which has "
                "no one owner to run the task; give a rank"
            )
    elif on is not None:
        on = _checked_rank(on, "task_submit")  # an int, a numpy integer; anything else is refused
    unknown = set(options) - {"executor", "name", "priority", "perfmodel", "size"}
    if unknown:
        raise TypeError(f"hetflow.mpi.task_submit: unknown option(s) {', '.join(sorted(unknown))}")
    return state.runtime.submit(func, args, {}, on=on, **options)


def owner(array: Any) -> int:
    """The rank that owns ``array`` now (EVERY_RANK for arrays every rank owns)."""
    return int(_current().context.owner(_capsule(array, "owner")))


def holder(array: Any) -> int:
    """The rank that holds the latest version of ``array`` (the owner, or the last writer)."""
    return int(_current().context.holder(_capsule(array, "holder")))


def get_on(array: Any, rank: int) -> None:
    """Sends the latest version of ``array`` to ``rank`` unless it has it; there, tasks and
    ``hetflow.acquire`` see it from now on. Every rank calls it."""
    _every_rank_call("get_on").context.get_on(_capsule(array, "get_on"), _checked_rank(rank, "get_on"))


def migrate(array: Any, rank: int) -> None:
    """Makes ``rank`` the owner of ``array`` (its latest version sent there): the tasks that
    write it run there from now on. Every rank calls it."""
    _every_rank_call("migrate").context.migrate(_capsule(array, "migrate"), _checked_rank(rank, "migrate"))


def gather(arrays: Any, root: Optional[int] = 0) -> None:
    """Brings the latest version of each of ``arrays`` (one array or a sequence) to ``root``,
    or to every rank with ``root=None`` (``broadcast``), and waits there until it has arrived:
    on return the arrays there hold the values. Every rank calls it; the others do not wait.
    With ``HETFLOW_MPI_CHECK=1`` the ranks first compare what they submitted, as ``wait_all``
    does (every rank then meets the others there), so that a rank alone in it is told (a
    ``HetflowError`` on every rank) instead of waiting for ever. Where it waits, it raises ``DependencyError`` when what arrived is not the latest version:
    its writer failed, or it never came (the rank that had it left).

    >>> hetflow.mpi.gather(tiles, root=0)
    >>> if hetflow.mpi.rank() == 0: print(np.block(...))
    """
    what = "gather" if root is not None else "broadcast"
    state = _every_rank_call(what)
    group = _as_list(arrays)
    capsules = [_capsule(array, what) for array in group]
    if root is None:
        for capsule in capsules:
            state.context.broadcast(capsule)  # through a tree of ranks
    else:
        target = _checked_rank(root, "gather")
        for capsule in capsules:
            state.context.get_on(capsule, target)
    if state.checking:
        # On every rank, before the root waits: a rank alone in gather (the others never call it)
        # is told, with the others, instead of waiting for ever for data nobody sends.
        _check_submissions(state)
    if root is None or root == state.rank:
        handles = state.runtime.handles
        failures = [handles.read_now(array) for array in group]
        failure = next((failure for failure in failures if failure is not None), None)
        if failure is not None:  # a failed writer, or a transfer that never came (its sender left)
            raise DependencyError("the latest version of a gathered array", exception_from_outcome(failure))


def broadcast(arrays: Any) -> None:
    """``gather(arrays, root=None)``: the latest version of each array on every rank, sent
    through a tree (each rank that has it passes it on)."""
    gather(arrays, root=None)


def _as_list(arrays: Any) -> List[Any]:
    import numpy

    if isinstance(arrays, numpy.ndarray):
        return [arrays]
    if isinstance(arrays, Mapping):
        return list(arrays.values())
    if isinstance(arrays, Sequence):
        return list(arrays)
    raise TypeError(f"hetflow.mpi: expected a numpy array or a sequence of them, not {type(arrays).__name__}")


def set_reduction(array: Any, combine: Any, neutral: Any = None) -> None:
    """Lets tasks contribute to ``array`` with ``hetflow.REDUX(array)``: each rank gathers the
    contributions of the tasks it runs in its own copy, first set to ``neutral``; at the next
    other use of the array (or ``wait_all``) the copies are combined into the owner's.
    ``combine`` is a numpy ufunc (``numpy.add``, ``numpy.maximum``; ``neutral`` defaults to its
    identity) or a function ``combine(into, contribution)`` that updates ``into`` in place. Every
    rank calls it, before the first contribution. Called again, it changes the functions for the
    contributions that follow; those made before are combined the way they were made.

    >>> total = hetflow.mpi.register(np.zeros(3), owner=0)
    >>> hetflow.mpi.set_reduction(total, np.add)
    >>> for i, block in enumerate(blocks):     # each on its block's owner
    ...     hetflow.task_submit(lambda t, b: t.__iadd__(b.sum(axis=0)), hetflow.REDUX(total), block)
    """
    import ctypes

    import numpy

    state = _every_rank_call("set_reduction")
    capsule = _capsule(array, "set_reduction")
    if isinstance(combine, numpy.ufunc):
        if neutral is None:
            if combine.identity is None:
                raise ValueError(f"hetflow.mpi.set_reduction: numpy.{combine.__name__} has no identity; give neutral=")
            neutral = combine.identity
        ufunc = combine

        def combine_arrays(into: Any, contribution: Any) -> Any:
            return ufunc(into, contribution, out=into)

    elif callable(combine):
        if neutral is None:
            raise ValueError("hetflow.mpi.set_reduction: give neutral=, the value contributions start from")
        combine_arrays = combine
    else:
        raise TypeError(f"hetflow.mpi.set_reduction: combine must be a numpy ufunc or a function, not {combine!r}")
    shape, dtype, nbytes = array.shape, array.dtype, array.nbytes
    fortran = not array.flags.c_contiguous

    def at(address: int) -> Any:
        memory = (ctypes.c_char * max(nbytes, 1)).from_address(address)
        return numpy.ndarray(shape, dtype=dtype, buffer=memory, order="F" if fortran else "C")

    def init(address: int) -> None:
        at(address)[...] = neutral

    def combine_at(into: int, contribution: int) -> None:
        target = at(into)
        returned = combine_arrays(target, at(contribution))
        if isinstance(returned, numpy.ndarray) and returned is not target and not numpy.shares_memory(returned, target):
            # `lambda into, c: into + c`: the sum was dropped, and the contributions with it.
            raise TypeError(
                f"hetflow.mpi.set_reduction: {getattr(combine, '__qualname__', 'combine')} returned a new array "
                "instead of updating `into` in place (into += contribution, or numpy.add(into, contribution, out=into))"
            )

    name = getattr(combine, "__name__", "reduction")
    state.context.set_reduction(capsule, init, combine_at, name)


def flush(arrays: Any = None) -> None:
    """Drops the copies received for reading (of ``arrays``, or of every array): the next reader
    elsewhere receives the data again. Every rank calls it."""
    state = _every_rank_call("flush")
    if arrays is None:
        state.context.flush_all()
        return
    for array in _as_list(arrays):
        state.context.flush(_capsule(array, "flush"))


def wait_all() -> None:
    """Waits, on every rank, until every task and transfer submitted on every rank is done.
    Every rank calls it (it ends in a barrier that does not block hetflow's MPI thread). What
    this rank's tasks wrote on a device is then brought home, so that the rank may read and
    write its arrays directly (then ``flush``), but for an array whose last writer failed: that
    one stays as it is, its failure going with it to the ranks that read it.

    With ``HETFLOW_MPI_CHECK=1`` it raises ``HetflowError`` on every rank when the ranks
    submitted different work, after giving up on the transfers between them (the tasks that read
    what never came fail) and waiting for the other tasks; the ranks' distributed calls raise from
    then on (docs/mpi.md). It raises ``HetflowError`` too, once the local work is done, when a
    rank ended (returned without calling it as often), naming that rank."""
    from hetflow._data import interruptible
    from hetflow._errors import HetflowError

    state = _every_rank_call("wait_all")
    # On this thread, which holds the program's acquisitions (the wait below runs on another): a
    # task held back by one of them would never end, and the ranks would wait for it for ever.
    state.runtime._engine.check_wait_all_can_end()
    # Waited for on a thread of its own, so that Ctrl-C reaches this one meanwhile (and, with
    # abort_on_error, ends every rank rather than leaving them in the barrier).
    try:
        interruptible(state.context.wait_all)
        state.runtime.bring_device_writes_home(failed_stay=True)
    except RuntimeError as error:
        if type(error) is not RuntimeError:
            raise
        raise HetflowError(str(error)) from None  # the engine's own errors (the ranks diverged, say)
    except BaseException:
        # Ctrl-C: the wait left running on its thread ends too (the context must not end under it).
        state.context.interrupt_wait_all()
        raise
    finally:
        state.runtime.saw_tasks_end()  # the program may write its arrays directly now


def _check_submissions(state: _State) -> None:
    """With HETFLOW_MPI_CHECK: the ranks compare what they submitted so far (as wait_all does
    first); ``HetflowError`` on every rank when it differs."""
    from hetflow._errors import HetflowError

    try:
        state.context.check_submissions()
    except RuntimeError as error:
        if type(error) is not RuntimeError:
            raise
        raise HetflowError(str(error)) from None


def sent() -> List[Tuple[int, int]]:
    """(messages, bytes) this rank sent to each rank so far."""
    return [(int(m), int(b)) for m, b in _current().context.sent()]
