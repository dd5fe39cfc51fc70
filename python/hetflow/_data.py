"""numpy arrays registered with the engine: handles, shared allocation, host access."""
from __future__ import annotations

import bisect
import ctypes
import functools
import operator
import os
import signal
import sys
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hetflow._arrays import check_mode, span


def _root(array: Any) -> Any:
    """The array that owns (or wraps the owner of) the memory: it outlives every view. Views
    made through another object are followed to their array too: numpy's stride tricks
    (``as_strided``, ``sliding_window_view``) wrap it in an object whose ``base`` it is, and
    ``np.asarray(memoryview(a))`` keeps the memoryview, whose ``obj`` it is."""
    import numpy

    while True:
        base = array.base
        if not isinstance(base, numpy.ndarray):
            base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
            if not isinstance(base, numpy.ndarray):
                return array
        array = base


# What the handles of empty arrays stand for (they have no byte of their own); shared by all of
# them, kept for the life of the process: what lands in it is never read.
_EMPTY_STAND_IN = ctypes.create_string_buffer(8)
_EMPTY_STAND_IN_ADDRESS = ctypes.addressof(_EMPTY_STAND_IN)

# Roots whose buffers start below a new array's that _root_holding looks at for one holding it.
_NESTED_ROOTS_LOOKED_AT = 16
# Deciding whether two views share an element is exact for slices, steps and tiles well within
# this effort; a pair it cannot decide counts as overlapping (ordered, never a race).
_OVERLAP_EFFORT = 1000
# REDUX reads and writes, and more: merged with any other mode it stays REDUX. PART-R and PART-W
# (bit 8) are declared on the views a task's view overlaps and does not hold (see mirror_mode).
_MODE_BITS = {"R": 1, "W": 2, "RW": 3, "REDUX": 7, "PART-R": 9, "PART-W": 11}
_BIT_MODES = {bits: mode for mode, bits in _MODE_BITS.items()}
_PART = 8
try:  # signal's own functions without signal.py's enum conversions (microseconds each)
    import _signal as _raw_signal  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - CPython has it
    _raw_signal = signal
_SIGINT = int(signal.SIGINT)
# Views of one root buffer kept, at least, before those at rest are let go (HandleRegistry._sweep).
_VIEWS_BEFORE_SWEEP = 256


class _Probe:
    """Exposes an address layout to numpy without the memory's owner (nothing kept alive)."""

    def __init__(self, interface: dict) -> None:
        self.__array_interface__ = interface


class View:
    """One view (element 0's address, shape, strides, item size) of a root buffer, and the
    engine handle that stands for it. ``overlaps`` maps each other view of the same root that
    shares an element with this one to whether that view lies inside this one's bytes."""

    __slots__ = ("key", "handle", "low", "high", "dense", "overlaps", "probe", "root", "lookups", "seen", "__weakref__")

    def __init__(self, key: tuple, handle: Any, low: int, high: int, dense: bool, probe: Any, root: "_Root") -> None:
        self.key = key
        self.root = root  # the root buffer's views: its array lives as long as this view's handle
        self.handle = handle
        self.low = low
        self.high = high
        self.dense = dense
        self.overlaps: Dict["View", bool] = {}
        self.probe = probe
        self.lookups = 0  # by HandleRegistry.view (tasks on it, not those on the views it overlaps)
        self.seen: Optional[tuple] = None  # its use, as HandleRegistry._sweep last found it at rest

    def holds(self, other: "View") -> bool:
        """Every byte of ``other`` is one of this view's: writing all of this view rewrites it."""
        return self.dense and self.low <= other.low and other.high <= self.high


class _Root:
    """The views met so far of one root buffer. To find the views whose spans meet a new one's,
    they are kept sorted by lowest address in classes of similar span (a power of two apart at
    most): within a class, the scan back from the new view's end stops one longest span before
    its start, so that tiles next to the whole matrix are not all visited for each new tile."""

    __slots__ = (
        "ref",
        "low",
        "high",
        "views",
        "classes",
        "distributed",
        "members",
        "adopted",
        "into",
        "resting",
        "sweep_at",
    )

    def __init__(self, ref: Any, low: int, high: int) -> None:
        self.ref = ref
        # The arrays alive that hold these views: the root array, and the arrays over memory in
        # its buffer that numpy cannot follow back to it (adopted: id -> weak reference). Unless
        # one that owns its buffer goes (the buffer with it), the views, and the handles ordering
        # their tasks, are kept until the last of them goes (a bytearray or a ctypes buffer that
        # they were made over may outlive the root array).
        self.members = 1
        self.adopted: Dict[int, Any] = {}
        # Where a root array is met over memory that overlaps other roots' (arrays over parts of
        # one bytearray, say, the smaller met first), their views are merged into its root: into.
        self.into: Optional["_Root"] = None
        self.low = low  # of its buffer, or of the buffers merged into it (HandleRegistry's spans)
        self.high = high
        self.distributed = False  # registered with hetflow.mpi: only the array itself is task data
        self.views: Dict[tuple, View] = {}
        self.classes: Dict[int, Tuple[List[int], List[View], List[int]]] = {}  # lows, views, [longest]
        # Views set aside by the last sweep, by key: let go at the next one if still at rest and
        # nothing else holds them, taken back if an array of the same view is met before that
        # (HandleRegistry._sweep).
        self.resting: Dict[tuple, View] = {}
        self.sweep_at = _VIEWS_BEFORE_SWEEP

    def alive(self) -> Optional["_Root"]:
        """The root its views are in now, while an array holding them lives; None after."""
        root = _final(self)
        return root if root.members > 0 else None


def _final(root: _Root) -> _Root:
    """The root that ``root``'s views were merged into, if they were (else ``root``)."""
    while root.into is not None:
        root = root.into
    return root


def mirror_mode(mode: str, other_inside: bool) -> str:
    """The access a task with ``mode`` on a view also declares on another view overlapping it.

    On one inside its own it declares its access as it is (a write-only access rewrites it
    too). On any other (around its own, or crossing it) it declares a part access (PART-R,
    PART-W): part accesses of two tasks do not wait for each other, while an access of a task to
    that view itself waits for them (and they for it, unless both only read). Two tasks whose
    views overlap still meet with the access of one to its own view: the other task declares one
    there, whichever view came first. A part write takes the outcome of the view's last writer,
    as a read-write access does: data it leaves as they were keep that writer's failure."""
    if other_inside:
        return mode
    return "PART-R" if mode == "R" else "PART-W"


def merged_bits(declared: int, bits: int) -> int:
    """The mode bits of a handle a task declares ``declared`` and ``bits`` on: two part accesses
    stay one, a part and a whole access are a whole one."""
    both = declared | bits
    return both if declared & bits & _PART or not declared else both & ~_PART


class HandleRegistry:
    """The engine data handles of a runtime's arrays: one per distinct view of a root buffer.

    Views whose elements overlap are ordered by their access modes: a task on a view also
    declares its access (see ``mirror_mode``) on every view met so far that shares an element
    with it, so that whichever of two overlapping views came first, both tasks meet on its
    handle. Views that share no element (``a[:50]`` / ``a[50:]``, ``a[0::2]`` / ``a[1::2]``,
    column blocks, tiles) stay independent, also once a view meeting both (``a``, ``a[40:60]``)
    was used: their tasks declare part accesses there, which do not wait for each other. A
    root's handles live as long as the root array (and the arrays over memory in its buffer that
    numpy cannot follow back to it, when it does not own the buffer), then are let go once the
    tasks using them are done. Once a root has many views, those left unused for a while are
    let go while it lives (``_sweep``): a program working on ever new slices of one array does
    not grow.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        # Re-entrant: a root dying during a registration (garbage collection) forgets its views.
        self._lock = threading.RLock()
        self._roots: Dict[int, _Root] = {}
        # The roots' buffers, sorted by lowest address: [low], [(high, root)]
        self._span_lows: List[int] = []
        self._span_roots: List[Tuple[int, _Root]] = []
        self._recent: Dict[int, tuple] = {}  # id(array) -> (weakref, shape, strides, View)
        # view key -> [(acquisition, mode, the thread that acquired)], most recent last
        self._acquired: Dict[tuple, List[Tuple[Any, str, int]]] = {}
        # The finalizers watching the arrays that hold views (weakref.finalize, by a number),
        # detached by close(): an array outliving its runtime would otherwise keep the registry,
        # and through it the runtime's engine, alive for as long as the array lives.
        self._finalizers: Dict[int, Any] = {}
        self._finalizer_count = 0
        # The file bytes that the numpy.memmap roots met map: (device, inode) -> [(weak reference
        # to the root array, first byte, end, mapping's address)] (_warn_if_file_aliased).
        self._mapped_files: Dict[Tuple[int, int], List[Tuple[Any, int, int, int]]] = {}

    def _when_gone(self, array: Any, callback: Callable[..., None], *args: Any) -> None:
        """Calls ``callback(*args)`` once ``array`` is gone, unless the registry is closed first.
        Called with the lock held."""
        self._finalizer_count += 1
        number = self._finalizer_count
        finalizer = weakref.finalize(array, self._gone, number, callback, *args)
        # Not at exit, where the array still lives: weakref.finalize's exit handler runs before
        # the runtime's (registered later), and would discard the arrays of tasks still running
        # (a device's result never brought home: a memmap's file, a send to another MPI rank).
        finalizer.atexit = False
        self._finalizers[number] = finalizer

    def _gone(self, number: int, callback: Callable[..., None], *args: Any) -> None:
        self._finalizers.pop(number, None)
        callback(*args)

    def close(self) -> None:
        """The runtime has stopped: lets go of the views of the arrays still alive (their handles
        serve no task any more), so that those arrays keep neither the registry nor the engine."""
        with self._lock:
            finalizers = list(self._finalizers.values())
            self._finalizers.clear()
            self._roots.clear()
            self._span_lows.clear()
            self._span_roots.clear()
            self._recent.clear()
            self._mapped_files.clear()
        for finalizer in finalizers:
            finalizer.detach()

    @property
    def _handles(self) -> Dict[tuple, View]:
        """Every view registered, by key (for inspection and tests)."""
        with self._lock:
            return {key: view for root in self._roots.values() for key, view in root.views.items()}

    def view(self, array: Any, mode: str) -> View:
        """The registered view of ``array`` (registered now if new)."""
        if mode != "R" and not array.flags.writeable:
            raise ValueError(
                f"hetflow: access mode {mode} on a read-only array: {read_only_cause(array)}; "
                "or pass it unmarked, for a task that only reads it"
            )
        recent = self._recent.get(id(array))
        if recent is not None and recent[0]() is array and recent[1] == array.shape and recent[2] == array.strides:
            recent[3].lookups += 1
            return recent[3]
        first = array.__array_interface__["data"][0]
        key = (first, array.shape, array.strides, array.itemsize)
        with self._lock, _InterruptsHeld():
            root = self._root_of(array)
            view = root.views.get(key)
            if view is None and key in root.resting:
                view = root.views[key] = root.resting.pop(key)  # not let go yet: in use again
            if view is None:
                if root.distributed:
                    raise ValueError(
                        "hetflow.mpi: this is a view of an array registered with hetflow.mpi.register; only the "
                        "registered array itself can be task data (register tiles as arrays of their own)"
                    )
                view = self._add(root, array, key, first)
                if len(root.views) >= root.sweep_at:
                    self._sweep(root, view)
            view.lookups += 1
            if len(self._recent) >= 4096:
                self._recent.clear()
            try:
                self._recent[id(array)] = (weakref.ref(array), array.shape, array.strides, view)
            except TypeError:
                pass  # an ndarray subclass without weak references: looked up each time
        return view

    def known(self, array: Any) -> bool:
        """Whether tasks may have used ``array``'s memory: views of its root buffer, or of a
        buffer sharing a byte with it, were met (``hetflow.map``'s chunks make it task data then)."""
        root_array = _root(array)
        with self._lock:
            root = self._roots.get(id(root_array))
            if root is not None and root.ref() is root_array:
                return _final(root).members > 0
            low, nbytes, _ = span(root_array)
            return any(root.members > 0 for root in self._roots_meeting(low, low + nbytes)) if nbytes else False

    def adopt(self, array: Any, register: Any) -> Any:
        """Registers the whole of ``array`` (contiguous) through ``register(address, nbytes)``,
        which returns its handle: hetflow.mpi's distributed arrays. Several views of one buffer
        may be registered so (row blocks of one matrix, say) if they share no byte; other views
        of that buffer are refused from then on."""
        first = array.__array_interface__["data"][0]
        key = (first, array.shape, array.strides, array.itemsize)
        low, nbytes, _ = span(array)
        with self._lock:
            root = self._root_of(array)
            if root.views and not root.distributed:
                raise ValueError(
                    "hetflow.mpi.register: this array (or the array it is a view of) was already used as task data; "
                    "register arrays before their first task"
                )
            for other in root.views.values():
                if nbytes and other.high > other.low and low < other.high and other.low < low + nbytes:
                    raise ValueError(
                        "hetflow.mpi.register: this array shares memory with one registered already; each piece of "
                        "distributed data needs memory of its own"
                    )
            view = self._add(root, array, key, first, register)
            root.distributed = True
        return view.handle

    def _root_of(self, array: Any) -> _Root:
        """The views met so far of ``array``'s root buffer (none yet for a new one); called with
        the lock held."""
        root_array = _root(array)
        root = self._roots.get(id(root_array))
        if root is not None and root.ref() is root_array:
            return _final(root)
        low, nbytes, _ = span(root_array)
        high = low + nbytes
        holder = self._root_holding(low, high)
        if holder is not None:
            self._adopt(holder, root_array)
            return holder
        root = self._roots[id(root_array)] = _Root(weakref.ref(root_array), low, high)
        self._when_gone(root_array, self._forget, id(root_array), root, bool(root_array.flags.owndata))
        if nbytes:
            # Roots' buffers never overlap: those that this one meets are merged into it.
            for other in self._roots_meeting(low, high):
                self._merge(other, root)
            index = bisect.bisect_right(self._span_lows, root.low)
            self._span_lows.insert(index, root.low)
            self._span_roots.insert(index, (root.high, root))
            self._warn_if_file_aliased(root_array, low, nbytes)
        return root

    def _warn_if_file_aliased(self, root_array: Any, low: int, nbytes: int) -> None:
        """Warns when a new ``numpy.memmap`` root maps bytes of a file that another one alive maps
        at another address, one of them for writing: tasks are ordered by the memory their arrays
        lie in, so those on the two are not ordered against each other. Called with the lock
        held, once the root is registered (a warning turned into an error leaves it consistent)."""
        import numpy

        filename = getattr(root_array, "filename", None) if isinstance(root_array, numpy.memmap) else None
        offset = getattr(root_array, "offset", None)
        if not filename or offset is None:
            return
        try:
            stat = os.stat(filename)
        except (OSError, TypeError, ValueError):
            return
        start, end = int(offset), int(offset) + nbytes
        mappings = self._mapped_files.setdefault((stat.st_dev, stat.st_ino), [])
        alive = [(mapping, mapping[0]()) for mapping in mappings]
        mappings[:] = [mapping for mapping, other in alive if other is not None and other is not root_array]
        clash = None
        for (_, other_start, other_end, address), other in alive:
            if other is None or other is root_array or address == low or not (start < other_end and other_start < end):
                continue
            if _maps_for_writing(root_array) or _maps_for_writing(other):
                clash = (other_start, other_end)
        mappings.append((weakref.ref(root_array), start, end, low))
        if clash is not None:
            import warnings

            warnings.warn(
                f"hetflow: this numpy.memmap maps bytes {start} to {end} of {str(filename)!r}, which another "
                f"numpy.memmap alive maps too (bytes {clash[0]} to {clash[1]}) at another address, one of them for "
                "writing: hetflow orders tasks by the memory their arrays lie in, so tasks on the two are not "
                "ordered against each other (a write through one may be lost, or seen half done through the "
                "other); map the file once and give tasks views of that one memmap",
                RuntimeWarning,
                stacklevel=2,
            )

    def _roots_meeting(self, low: int, high: int) -> List[_Root]:
        """The roots whose buffers share a byte with ``low`` to ``high`` (no two roots' buffers
        do, so their ends rise with their starts). Called with the lock held."""
        found = []
        index = bisect.bisect_left(self._span_lows, high)  # those before start below ``high``
        while index > 0:
            index -= 1
            end, root = self._span_roots[index]
            if end <= low:
                break
            found.append(root)
        return found

    def _merge(self, other: _Root, root: _Root) -> None:
        """Moves ``other``'s views, and the arrays holding them, into the new ``root``, whose
        buffer overlaps ``other``'s: their tasks are then ordered by the views' overlaps. Called
        with the lock held."""
        self._drop_span(other)
        other.into = root
        root.members += other.members
        other.members = 0
        root.adopted.update(other.adopted)
        other.adopted = {}
        root.distributed = root.distributed or other.distributed
        root.low = min(root.low, other.low)
        root.high = max(root.high, other.high)
        resting = {id(view) for view in other.resting.values()}
        for view in _views_of(other):
            view.root = root
            if id(view) in resting:
                root.resting.setdefault(view.key, view)
            else:
                root.views.setdefault(view.key, view)  # one of two alike stays known by its key
            if view.high > view.low:
                self._place(root, view)
        other.views.clear()
        other.classes.clear()
        other.resting = {}

    def _drop_span(self, root: _Root) -> None:
        index = bisect.bisect_left(self._span_lows, root.low)
        while index < len(self._span_lows) and self._span_lows[index] == root.low:
            if self._span_roots[index][1] is root:
                del self._span_lows[index], self._span_roots[index]
                return
            index += 1

    def _adopt(self, root: _Root, array: Any) -> None:
        """``array``, which numpy follows back to no other array, lies in ``root``'s buffer (its
        views are ``root``'s): ``root`` is kept for as long as ``array`` lives too, even after
        the root array went (unless that owned the buffer), so that its tasks stay ordered with
        those on later arrays over the same memory. Called with the lock held."""
        known = root.adopted.get(id(array))
        if known is not None and known() is array:
            return
        try:
            ref = weakref.ref(array)
        except TypeError:
            return  # an ndarray subclass without weak references: as long as the root array
        root.adopted[id(array)] = ref
        root.members += 1
        self._when_gone(array, self._member_gone, root, id(array))

    def _root_holding(self, low: int, high: int) -> Optional[_Root]:
        """A live root whose buffer holds the bytes from ``low`` to ``high``: an array over its
        memory that numpy cannot follow back to it (``np.ctypeslib.as_array`` of its address,
        say) is a view of it. Called with the lock held."""
        if high <= low:
            return None
        # Roots' buffers seldom nest (a small one met before a large one around it): the few
        # starting just below are looked at.
        first = bisect.bisect_right(self._span_lows, low) - 1
        for index in range(first, max(first - _NESTED_ROOTS_LOOKED_AT, -1), -1):
            end, root = self._span_roots[index]
            if high <= end and root.members > 0:
                return root
        return None

    def _add(self, root: _Root, array: Any, key: tuple, first: int, register: Any = None) -> View:
        import numpy

        low, nbytes, _ = span(array)
        high = low + nbytes
        # An empty array has no byte of its own (numpy points it into other memory, or one past
        # the end of its buffer), so its handle stands for a byte of hetflow's: a copy home or a
        # message into it must never land in the program's memory.
        address = low if nbytes else _EMPTY_STAND_IN_ADDRESS
        # A buffer whose owning array is read-only is taken at its word: device copies of it stay
        # valid across the program's waits. Any other may be written directly once it waited, and
        # so may read-only memory the root array does not own (but bytes): a file that a
        # numpy.memmap(mode='r') maps changes when the file is written, the memory of a read-only
        # view of a bytearray through the bytearray.
        root_array = _root(array)
        host_writable = bool(root_array.flags.writeable) or not (
            root_array.flags.owndata or isinstance(root_array.base, bytes)
        )
        if register is not None:
            handle = register(address, max(nbytes, 1))
            if host_writable:
                self._engine.watch_host_writes(handle)
        else:
            _refuse_distributed_elsewhere(self, low, high)
            handle = self._engine.register_array(address, max(nbytes, 1), f"array@{first:#x}", host_writable)
        probe = numpy.asarray(
            _Probe(
                {
                    "data": (first, False),
                    "shape": array.shape,
                    "strides": array.strides,
                    "typestr": f"|V{array.itemsize}",
                    "version": 3,
                }
            )
        )
        dense = _dense(array.shape, array.strides, array.itemsize)
        view = View(key, handle, low, high, dense, probe, root)
        root.views[key] = view
        if not nbytes:
            return view  # no element: overlaps nothing
        self._place(root, view)
        return view

    def _place(self, root: _Root, view: View) -> None:
        """Records the overlaps of ``view`` (with elements) with ``root``'s other views, and files
        it among them. Called with the lock held."""
        import numpy

        low, high, probe = view.low, view.high, view.probe
        nbytes = high - low
        for lows, views, longest in root.classes.values():
            index = bisect.bisect_left(lows, high)  # views[:index] start below this one's end
            while index > 0:
                index -= 1
                other = views[index]
                if other.low + longest[0] <= low:
                    break
                if other.high <= low:
                    continue
                try:
                    # numpy's stubs allow only -1 and 0, but any bound is documented and works
                    shared = numpy.shares_memory(probe, other.probe, max_work=_OVERLAP_EFFORT)  # type: ignore[arg-type]
                except numpy.exceptions.TooHardError:
                    shared = True
                if shared:
                    view.overlaps[other] = view.holds(other)
                    other.overlaps[view] = other.holds(view)
        lows, views, longest = root.classes.setdefault(nbytes.bit_length(), ([], [], [0]))
        position = bisect.bisect_right(lows, low)
        lows.insert(position, low)
        views.insert(position, view)
        longest[0] = max(longest[0], nbytes)

    def _sweep(self, root: _Root, new: View) -> None:
        """Lets go of ``root``'s views left unused, in steps, so that none goes while a thread is
        about to submit a task on it. A view at rest (no task uses it or waits to, its last
        writer succeeded) and not used by a task of its own since the last sweep (tasks on the
        views it overlaps do not count) is set aside: no longer found by its key, but taken back
        if met again before the next sweep. At the next sweep, those set aside that are still at
        rest and that nothing but the registry holds are let go. The next sweep comes once new
        views as many as half those found by key (and at least _VIEWS_BEFORE_SWEEP) have come:
        a sweep's cost is spread over them. Called with the lock held; the engine's answers keep
        the GIL, so no Python thread moves meanwhile."""
        if root.distributed:
            return
        accesses_if_at_rest = self._engine.accesses_if_at_rest
        kept = {}
        for key, view in root.resting.items():
            if max(_extra_references(view)) > 0 or accesses_if_at_rest(view.handle) is None:
                kept[key] = view
            else:
                self._let_go(root, view)
        root.resting = kept
        unused = []
        for view in root.views.values():
            if view is new or view.high <= view.low:
                continue
            accesses = accesses_if_at_rest(view.handle)
            if accesses is not None:
                # Its own tasks: those found through HandleRegistry.view, and those submitted
                # without it (submit_call's cache, for views overlapping none, whose handles no
                # other view's tasks then access). Empty views (overlapping nothing, filed in no
                # class, which _extra_references counts on) stay.
                use = (view.lookups, None if view.overlaps else accesses)
                if use == view.seen:
                    unused.append(view)
                view.seen = use
        for view in unused:
            del root.views[view.key]
            root.resting[view.key] = view
        if unused:
            self._recent.clear()  # it finds views by array: none may lead to those set aside
        root.sweep_at = len(root.views) + max(_VIEWS_BEFORE_SWEEP, len(root.views) // 2)

    def _let_go(self, root: _Root, view: View) -> None:
        """Takes ``view`` out of ``root``'s overlaps and unregisters its handle (its data are in
        the program's memory once that is done). Called with the lock held."""
        for other in view.overlaps:
            del other.overlaps[view]
        view.overlaps.clear()
        if view.high > view.low:
            lows, views, _ = root.classes[(view.high - view.low).bit_length()]
            index = bisect.bisect_left(lows, view.low)
            while views[index] is not view:
                index += 1
            del lows[index], views[index]
        self._engine.unregister_async(view.handle)

    def overlapping(self, view: View) -> List[Tuple[View, bool]]:
        """The other views sharing an element with ``view``, each with whether it lies inside."""
        with self._lock:
            return list(view.overlaps.items())

    def accesses(self, array: Any, mode: str, into: Dict[Any, int]) -> View:
        """Adds the engine accesses of a task's ``mode`` on ``array`` to ``into`` (handle ->
        mode bits, merged with what the task declares already); returns the array's view."""
        if mode == "W" and not _fills_its_items(array.dtype):
            # Its items have bytes that no field covers (padding, a multi-field index): writing
            # every element leaves those as they were, which a view of the same bytes under
            # another dtype reads: it does not rewrite the view, RW.
            mode = "RW"
        view = self.view(array, mode)
        into[view.handle] = merged_bits(into.get(view.handle, 0), _MODE_BITS[mode])
        if view.overlaps:
            for other, inside in self.overlapping(view):
                bits = _MODE_BITS[mirror_mode(mode, inside)]
                into[other.handle] = merged_bits(into.get(other.handle, 0), bits)
        return view

    def handle(self, array: Any, mode: str) -> Tuple[Any, int, int]:
        """The handle of ``array``'s view, with its lowest address and the bytes it spans."""
        view = self.view(array, mode)
        return view.handle, view.low, view.high - view.low

    def _forget(self, root_id: int, root: _Root, owned: bool = False) -> None:
        """A root array went: its views go with it if it owned its buffer, else with the last
        array holding them."""
        with self._lock:
            if self._roots.get(root_id) is root:
                del self._roots[root_id]
        self._member_gone(root, None, owned)

    def _member_gone(self, root: _Root, adopted_id: Optional[int], frees_buffer: bool = False) -> None:
        with self._lock:
            root = _final(root)
            if root.members <= 0:
                return  # its views went already
            if adopted_id is not None:
                root.adopted.pop(adopted_id, None)
            root.members = 0 if frees_buffer else root.members - 1
            if root.members > 0:
                return
            self._drop_span(root)
            views = _views_of(root)
            root.views.clear()
            root.classes.clear()
            root.resting = {}
            for view in views:
                view.overlaps.clear()
        for view in views:
            self._engine.discard(view.handle)  # its memory goes with the array: nothing may land there

    def acquire(self, array: Any, mode: str) -> Any:
        """Host access to ``array``'s view. It waits for the earlier tasks on the views that
        overlap it (without taking them over: their versions and failures stay theirs), then
        acquires the view's own handle, which later tasks on overlapping views also declare."""
        if not _is_ndarray(array):
            raise TypeError(
                f"hetflow.acquire takes a numpy array, not {type(array).__name__}; "
                "only numpy arrays are tracked as task data"
            )
        if mode != "R" and not array.flags.writeable:
            raise ValueError(
                f"hetflow.acquire: the array is read-only, and mode {mode!r} (the default is 'RW') would write it; "
                f"acquire it with mode 'R' to read it ({read_only_cause(array)})"
            )
        view = self.view(array, mode)
        others = self.overlapping(view)
        wait_mode = "R" if mode == "R" else "RW"
        waits = [(other.handle, mirror_mode(wait_mode, inside)) for other, inside in others]
        if self._engine.running_task_conflicts([(view.handle, "RW")] + waits):
            raise RuntimeError(
                "hetflow.acquire: the calling task uses this array (or a view overlapping it) itself, so "
                "acquiring it would wait for that task; the task already has access to it"
            )
        self._refuse_waiting_for_this_thread(view, mode, others)
        if others:
            task = self._engine.submit_thread(_nothing, [], waits, "acquire (overlapping views)", 0)
            task.check_wait_can_end()  # behind what this thread holds, say: RuntimeError, not a hang
            interruptible(lambda: task.wait(None))  # its outcome does not matter: only that they are done
        from hetflow import _hetflow

        holder = _hetflow.thread_number()  # this thread holds it, though a helper thread waits for it
        try:
            acquisition = interruptible(lambda: self._engine.acquire(view.handle, mode, holder), _release)
        except ValueError as refusal:  # a wait that could never end, refused as the engine's waits are
            raise RuntimeError(str(refusal)) from None
        for other, inside in others:
            if inside:  # its data are all the program's now, as they are
                self._engine.forget_failure(other.handle)
        with self._lock:
            self._acquired.setdefault(view.key, []).append((acquisition, mode, threading.get_ident()))
        _hetflow.note_application_waited()  # the program may write the array directly now
        return acquisition

    def _refuse_waiting_for_this_thread(self, view: View, mode: str, others: List[Tuple[View, bool]]) -> None:
        """An acquisition this thread holds, of the view or of one overlapping it, that the new one
        would wait for could never be released: refused rather than waited for."""
        me = threading.get_ident()
        with self._lock:
            for key in [view.key] + [other.key for other, _ in others]:
                for _, held_mode, thread in self._acquired.get(key, ()):
                    if thread == me and (held_mode != "R" or mode != "R"):
                        raise RuntimeError(
                            f"hetflow.acquire: this thread holds an acquisition ({held_mode}) of this array, or of "
                            f"a view overlapping it, that this one ({mode}) would wait for; release it first"
                        )

    def held(self, view: View) -> bool:
        """Whether the program holds an acquisition of the view (which brought its data home)."""
        with self._lock:
            return bool(self._acquired.get(view.key))

    def release_all(self, thread: Optional[int] = None) -> None:
        """Releases every acquisition still held, or those ``thread`` holds (at interpreter exit,
        or when that thread shuts the runtime down: the tasks behind them can then run), with
        those of threads that ended holding them (nothing can release those any more: shutdown
        waited for the tasks behind them for ever)."""
        threads = {thread}
        if thread is not None:
            alive = {known.ident for known in threading.enumerate()}
            with self._lock:
                threads.update(entry[2] for entries in self._acquired.values() for entry in entries)
            threads = {ident for ident in threads if ident == thread or ident not in alive}
        with self._lock:
            held = [
                entry[0] for entries in self._acquired.values() for entry in entries
                if thread is None or entry[2] in threads
            ]
            for key, entries in list(self._acquired.items()):
                entries[:] = [entry for entry in entries if thread is not None and entry[2] not in threads]
                if not entries:
                    del self._acquired[key]
        for acquisition in held:
            acquisition.release()

    def read_now(self, array: Any) -> Any:
        """Waits for the tasks writing ``array`` (its latest version then in host memory) by
        acquiring it for reading and releasing it at once; returns how its last writer failed
        (``Acquisition.failure()``: None if it did not)."""
        acquisition = self.acquire(array, "R")
        try:
            return acquisition.failure()
        finally:
            self.release(array, acquisition)  # and out of this thread's records, which later acquisitions check

    def release(self, array: Any, acquisition: Optional[Any] = None) -> None:
        if not _is_ndarray(array):
            raise TypeError(f"hetflow.release takes a numpy array, not {type(array).__name__}")
        key = (array.__array_interface__["data"][0], array.shape, array.strides, array.itemsize)
        with self._lock:
            held = self._acquired.get(key, [])
            if acquisition is None:
                if not held:
                    raise ValueError("hetflow.release: this array is not acquired")
                # The calling thread's most recent one (another thread's, if it holds none): taking
                # another's left this thread's on its records, refusing its next acquisitions.
                me = threading.get_ident()
                mine = next((i for i in range(len(held) - 1, -1, -1) if held[i][2] == me), len(held) - 1)
                acquisition = held.pop(mine)[0]
            else:
                position = next((i for i, entry in enumerate(held) if entry[0] is acquisition), None)
                if position is None:
                    return  # released already
                del held[position]
            if not held:
                self._acquired.pop(key, None)  # a key per view ever acquired grew without end
        acquisition.release()


class _InterruptsHeld:
    """Holds back Ctrl-C (the Python handler of SIGINT) on the main thread while the registry's
    records change, and runs it once they agree again: a KeyboardInterrupt between two steps of a
    registration or a sweep left them half changed (a view let go, its handle unregistered, yet
    still set aside, then taken back: "has been unregistered"; or out of some views' overlaps
    only: every later sweep raised). Other threads never get KeyboardInterrupt."""

    __slots__ = ("previous", "caught")

    def __enter__(self) -> "_InterruptsHeld":
        self.previous: Any = None
        self.caught: Optional[tuple] = None
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = _raw_signal.getsignal(_SIGINT)
        if not callable(previous):
            return self  # ignored, the default action, or a handler not set from Python

        def hold(signum: int, frame: Any) -> None:
            self.caught = (signum, frame)

        self.previous = previous  # first: a Ctrl-C held from here on must find it restored
        try:
            _raw_signal.signal(_SIGINT, hold)
        except (ValueError, OSError):  # not the main interpreter's main thread
            self.previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        previous, self.previous = self.previous, None
        if previous is None:
            return
        _raw_signal.signal(_SIGINT, previous)
        caught, self.caught = self.caught, None
        if caught is not None:
            previous(*caught)


def _extra_references(view: View) -> Tuple[int, int]:
    """References to a resting view beyond those of the registry (its root's lists, its
    overlapping views), and to its handle beyond the view's: above zero, something else holds
    it (a thread that found the view before it was set aside, and may yet submit a task on it)."""
    return (
        sys.getrefcount(view) - len(view.overlaps) - _ONLY_THE_REGISTRY[0],
        sys.getrefcount(view.handle) - _ONLY_THE_REGISTRY[1],
    )


def _references_when_only_the_registry_holds() -> Tuple[int, int]:
    """``_extra_references`` with no baseline, of a view held as a resting one is, called as
    ``HandleRegistry._sweep`` calls it (counted on the running Python, whose ways of counting a
    call's references differ between versions)."""
    view = View((), object(), 0, 1, True, None, None)  # type: ignore[arg-type]
    resting, filed = {(): view}, [view]
    del view
    counts = (0, 0)
    for _, view in resting.items():
        counts = _extra_references(view)
    del filed
    return counts


_ONLY_THE_REGISTRY = (0, 0)
_ONLY_THE_REGISTRY = _references_when_only_the_registry_holds()


def _refuse_distributed_elsewhere(registry: HandleRegistry, low: int, high: int) -> None:
    """Refuses memory distributed with hetflow.mpi as task data of another runtime than the one
    hetflow.mpi.init started (a ``hetflow.Executor``'s own): that runtime knows nothing of the
    ranks, so each rank ran the task on its own copies (reading what was never sent to it, and
    writing where the data do not live), unordered with the distributed tasks."""
    mpi = sys.modules.get("hetflow.mpi")
    state = getattr(mpi, "_state", None)
    if state is None or high <= low:
        return
    served = state.runtime._handles
    if served is None or served is registry:
        return
    with served._lock:
        distributed = any(root.distributed for root in served._roots_meeting(low, high))
    if distributed:
        raise ValueError(
            "hetflow: this array is distributed with hetflow.mpi; only the runtime hetflow.mpi.init() serves it "
            "(hetflow.task_submit, hetflow.insert, delayed functions), not another one such as a hetflow.Executor's "
            "own, which would run the task on every rank, each on its own copy"
        )


def _views_of(root: _Root) -> List[View]:
    """Every view of ``root``: those known by key or set aside, and those filed by span (where
    two merged roots had a view alike, one of them is known by its span only)."""
    views = {id(view): view for view in root.views.values()}
    views.update((id(view), view) for view in root.resting.values())
    for _, filed, _ in root.classes.values():
        for view in filed:
            views.setdefault(id(view), view)
    return list(views.values())


def _fills_its_items(dtype: Any) -> bool:
    """Whether every byte of an item belongs to a field (at any depth), or there are no fields."""
    if dtype.fields is None:
        return dtype.subdtype is None or _fills_its_items(dtype.subdtype[0])
    end = 0
    for field, offset, *_ in sorted(dtype.fields.values(), key=lambda entry: entry[1]):
        if offset > end or not _fills_its_items(field):
            return False
        end = max(end, offset + field.itemsize)
    return end == dtype.itemsize


def _dense(shape: tuple, strides: tuple, itemsize: int) -> bool:
    """The elements fill every byte of the view's span, each once (in any order and direction)."""
    expected = itemsize
    for stride, extent in sorted((abs(stride), extent) for extent, stride in zip(shape, strides) if extent > 1):
        if stride != expected:
            return False
        expected *= extent
    return True


def _nothing() -> None:
    return None


def _release(acquisition: Any) -> None:
    acquisition.release()


def interruptible(wait: Callable[[], Any], undo: Optional[Callable[[Any], None]] = None) -> Any:
    """``wait()`` on a thread of its own, so that Ctrl-C reaches this one meanwhile; on Ctrl-C
    (or another exception here), what ``wait`` returns later goes to ``undo``. Off the main
    thread, which alone gets Ctrl-C, ``wait()`` runs here: a task waiting on its worker's thread
    lends the worker meanwhile, which it cannot do while another thread waits for it."""
    if threading.current_thread() is not threading.main_thread():
        return wait()
    outcome: List[Any] = []
    given_up = threading.Event()
    lock = threading.Lock()

    def run() -> None:
        try:
            value = wait()
        except BaseException as error:  # noqa: B902 - handed to the caller as it is
            outcome.append((False, error))
            return
        with lock:
            if not given_up.is_set():
                outcome.append((True, value))
                return
        if undo is not None:
            undo(value)

    waiter = threading.Thread(target=run, name="hetflow-acquire", daemon=True)
    waiter.start()
    try:
        while waiter.is_alive():
            waiter.join(0.05)
    except BaseException:
        with lock:
            given_up.set()
            taken = outcome[:]
        if taken and taken[0][0] and undo is not None:
            undo(taken[0][1])  # it arrived just before the interruption: nobody will hold it
        raise
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value


def _maps_for_writing(memmap: Any) -> bool:
    """A ``numpy.memmap`` whose writes reach its file (mode 'r+' or 'w+')."""
    return getattr(memmap, "mode", None) in ("r+", "w+", "readwrite", "write")


def _read_only_buffer(buffer: Any) -> bool:
    try:
        with memoryview(buffer) as exported:
            return exported.readonly
    except (ValueError, TypeError, BufferError):
        return False  # closed, or released


def read_only_cause(array: Any) -> str:
    """Why ``array`` is read-only, and how to get one a task may write: said when ``W``/``RW``
    is refused on it."""
    import mmap

    import numpy

    read_only_memmap = None
    holder: Any = array
    while holder is not None:
        if isinstance(holder, numpy.memmap) and getattr(holder, "mode", None) in ("r", "readonly"):
            read_only_memmap = holder
        if isinstance(holder, numpy.ndarray):
            holder = holder.base
        elif isinstance(holder, memoryview):
            holder = holder.obj
        else:
            break
    if read_only_memmap is not None:
        return (
            f"it maps the file {str(read_only_memmap.filename)!r} with numpy.memmap(mode='r') (or "
            "numpy.load(mmap_mode='r')); open it with mode='r+' for tasks whose writes reach the file, or mode='c' "
            "for writes kept in memory"
        )
    if isinstance(holder, bytes) or isinstance(holder, (memoryview, mmap.mmap)) and _read_only_buffer(holder):
        return (
            f"its memory is a read-only {type(holder).__name__} object; make the array over a writeable buffer "
            "(a bytearray, an mmap opened for writing) or pass a copy, numpy.array(a)"
        )
    return (
        "its writeable flag is off (a numpy.broadcast_to view, a.flags.writeable = False, a read-only buffer); "
        "pass a copy, numpy.array(a), or the writeable array it is a view of"
    )


def _is_ndarray(value: Any) -> bool:
    import numpy

    return isinstance(value, numpy.ndarray)


def engine_accesses(into: Dict[Any, int]) -> List[Tuple[Any, str]]:
    """``[(handle, mode)]`` from the merged mode bits of ``HandleRegistry.accesses``."""
    return [(handle, _BIT_MODES[bits]) for handle, bits in into.items()]


class Acquired:
    """Host access to an array that tasks may be using; from ``hetflow.acquire``.

    >>> with hetflow.acquire(a, "RW") as view:   # waits for earlier tasks on a
    ...     view[0] = 1.0                          # later tasks on a wait for the release
    """

    def __init__(self, registry: HandleRegistry, array: Any, acquisition: Any) -> None:
        self.array = array
        self._registry = registry
        self._acquisition = acquisition

    def release(self) -> None:
        self._registry.release(self.array, self._acquisition)

    def __enter__(self) -> Any:
        return self.array

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- arrays in shared memory ----------------------------------------------------------------------
def empty(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """A numpy array in memory that worker processes share: process tasks use it without copies.

    >>> a = hetflow.empty((1000, 1000))
    >>> hetflow.submit(fill, hetflow.W(a), 1.0)
    """
    import numpy

    dtype = numpy.dtype(dtype)
    try:
        if isinstance(shape, bool):
            raise TypeError  # an int to operator.index, not to numpy
        shape = (operator.index(shape),)  # an int, or numpy's
    except TypeError:
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(f"hetflow.empty: shape must be an int or a sequence of ints, not {shape!r}") from None
    if not isinstance(order, str) or order not in ("C", "F"):  # a str first: an array's `in` is ambiguous
        raise ValueError(f"hetflow.empty: order must be 'C' or 'F', not {order!r}")
    count = 1
    for extent in shape:
        if isinstance(extent, bool) or not isinstance(extent, (int, numpy.integer)):
            # as numpy.empty: a float or a str is no extent (TypeError), a negative one is (ValueError)
            raise TypeError(f"hetflow.empty: shape must be an int or a sequence of ints, not {shape!r}")
        if extent < 0:
            raise ValueError(f"hetflow.empty: bad shape {shape!r}: negative dimensions are not allowed")
        count *= int(extent)
    nbytes = count * dtype.itemsize
    if nbytes > sys.maxsize:
        raise ValueError(f"hetflow.empty: an array of shape {shape} of {dtype} is too big ({nbytes} bytes)")
    # Shared memory is not refused when it is more than the machine has: its pages are taken as
    # they are written, until the kernel kills a process to free memory (numpy.empty raises).
    available = _memory_and_swap()
    if available is not None and nbytes > available:
        raise MemoryError(
            f"hetflow.empty: an array of shape {shape} of {dtype} needs {nbytes} bytes, more than this machine's "
            f"memory and swap ({available} bytes)"
        )
    from hetflow import _hetflow

    raw = _hetflow.shared_bytes(nbytes)
    return numpy.ndarray(shape, dtype=dtype, buffer=raw, order="F" if order == "F" else "C")


# A process task's array outside shared memory is copied into the worker's shared memory whole
# (its view's elements): above this many bytes, one more than the machine's memory and swap is
# refused rather than left to the kernel's out-of-memory killer (refuse_copy_beyond_memory).
_COPY_CHECKED_ABOVE = 1 << 28


def refuse_copy_beyond_memory(array: Any) -> None:
    """Raises MemoryError when ``array``, given to a process task, would be copied into shared
    memory (it is not in a shared segment) and is larger than the machine's memory and swap: a
    ``numpy.memmap`` of a file larger than memory, most likely."""
    nbytes = array.nbytes
    if nbytes <= _COPY_CHECKED_ABOVE:
        return
    available = _memory_and_swap()
    if available is None or nbytes <= available:
        return
    from hetflow import _hetflow

    low, span_bytes, _ = span(array)
    if _hetflow.locate_shared(low, span_bytes) is not None:
        return
    what = "array"
    import numpy

    holder: Any = array
    while isinstance(holder, numpy.ndarray):
        if isinstance(holder, numpy.memmap) and getattr(holder, "filename", None):
            what = f"numpy.memmap of {str(holder.filename)!r}"
            break
        holder = holder.base
    raise MemoryError(
        f"hetflow: a process task's {what} of {nbytes} bytes would be copied into shared memory for it (only "
        f"hetflow.empty/zeros/array ones are not), more than this machine's memory and swap ({available} bytes); "
        "give process tasks views of it that fit (chunks), or run the task with executor='thread'"
    )


@functools.lru_cache(maxsize=None)
def _memory_and_swap() -> Optional[int]:
    """Bytes of memory and swap of the machine, None if unknown (read once)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    swap = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("SwapTotal:"):
                    swap = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return memory + swap


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """Like ``numpy.zeros``, in shared memory (see ``hetflow.empty``)."""
    array = empty(shape, dtype, order)
    # Fresh shared memory reads as zero bytes, which is numpy.zeros's content for every dtype
    # (strings empty, voids all zero) but objects, where it is None: numpy.zeros puts 0 there.
    # Not writing the zeros also leaves the pages untouched until used, as numpy.zeros does.
    # Copied from numpy's own zero item: 0 for objects, "" for a StringDType (not "0").
    if array.dtype.hasobject:
        import numpy

        numpy.copyto(array, numpy.zeros((), dtype=array.dtype))
    return array


def ones(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """Like ``numpy.ones``, in shared memory (see ``hetflow.empty``)."""
    import numpy

    array = empty(shape, dtype, order)
    numpy.copyto(array, 1, casting="unsafe")  # as numpy.ones (fill(1) refuses void dtypes)
    return array


def array(data: Any, dtype: Any = None, order: str = "K") -> Any:
    """A copy of ``data`` (anything numpy.asarray takes) in shared memory (see ``hetflow.empty``).
    ``order``: "C", "F", or "K" (the default, as numpy.array): Fortran order for a source laid
    out so, else C."""
    import numpy

    if not isinstance(order, str) or order not in ("K", "C", "F"):  # a str first: an array's `in` is ambiguous
        raise ValueError(f"hetflow.array: order must be 'K', 'C' or 'F', not {order!r}")
    source = numpy.asarray(data, dtype=dtype)
    if order == "K":
        order = "F" if source.flags.f_contiguous and not source.flags.c_contiguous else "C"
    copy = empty(source.shape, source.dtype, order)
    copy[...] = source
    return copy


def names_with_modes(func: Any, access: Dict[str, str], args: Sequence[Any], kwargs: Dict[str, Any]) -> Tuple[tuple, dict]:
    """Wraps the arguments named in ``access`` (``{"a": "RW"}``) in Access objects."""
    import inspect

    from hetflow._arrays import Access

    signature = inspect.signature(func)
    bound = signature.bind_partial(*args, **kwargs)
    for name, mode in access.items():
        if name in bound.arguments:
            given = bound.arguments[name]
            if type(given) is Access:
                raise TypeError(
                    f"hetflow: parameter {name!r} of {getattr(func, '__qualname__', func)!r} has the access mode "
                    f"{mode!r} from delayed(access=...) and is marked hetflow.{given.mode}(...) too: give one"
                )
            bound.arguments[name] = Access(given, mode)
        elif (default := signature.parameters[name].default) is not inspect.Parameter.empty and default is not None:
            # Left to its default (an array the function writes): passed, so that it is tracked
            # (a process task would write a copy of the default, and nothing would order them).
            # A default of None (numpy's `out=None`: the function makes its own) is no data: left
            # as it is, rather than refused as an access mark on None that the call never gave.
            bound.arguments[name] = Access(default, mode)
    return bound.args, bound.kwargs
