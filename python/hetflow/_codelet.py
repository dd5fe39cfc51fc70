"""Codelets: one function with implementations for CPU workers, OpenCL devices and GPUs, run
over numpy arrays whose copies the engine moves between host and device memory."""
from __future__ import annotations

import threading
import time
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hetflow._args import _CONTAINERS, FutureSearch
from hetflow._arrays import Access
from hetflow._future import Future

ARCHS = ("cpu", "opencl", "cuda")
_FIXED = frozenset({"name", "cpu", "opencl", "cuda", "model"})  # Codelet attributes set once
_setup = threading.local()  # seconds the running implementation spent building programs


class Codelet:
    """A named function with one implementation per kind of worker, for :func:`hetflow.insert`.

    Each implementation is called with the task's arguments in the order given to ``insert``;
    the arrays arrive as what that kind of worker works on:

    - ``cpu(*args)``: the numpy arrays themselves, on a CPU worker (as a thread task);
    - ``opencl(*args)``: ``pyopencl.array.Array`` objects over the device's copies, all on the
      worker's in-order queue (``a.queue``); enqueue on it and return, without waiting;
    - ``cuda(*args)``: CuPy arrays over the GPU's copies, with the worker's stream as CuPy's
      current stream; launch and return, without synchronizing.

    The task is done when the implementation has returned and, on a device, when the work it
    enqueued has finished. ``model``: the symbol of a performance model (``hetflow.perfmodel``)
    that learns each implementation's time, which ``dmdas`` uses to choose where tasks run.

    >>> scale = hetflow.Codelet("scale", cpu=lambda x, f: numpy.multiply(x, f, out=x),
    ...                         cuda=lambda x, f: x.__imul__(f))
    >>> hetflow.insert(scale, hetflow.RW(a), 2.0).result()
    """

    def __init__(
        self,
        name: str,
        cpu: Optional[Callable[..., Any]] = None,
        opencl: Optional[Callable[..., Any]] = None,
        cuda: Optional[Callable[..., Any]] = None,
        model: Optional[str] = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"hetflow.Codelet: name must be a non-empty str, not {name!r}")
        implementations = {"cpu": cpu, "opencl": opencl, "cuda": cuda}
        from hetflow._runtime import refuse_async_function

        for arch, implementation in implementations.items():
            if implementation is not None and not callable(implementation):
                raise TypeError(f"hetflow.Codelet {name!r}: {arch} must be callable, not {implementation!r}")
            if implementation is not None:
                # Its call would only make a coroutine: the task would succeed without running it.
                refuse_async_function(implementation, f"hetflow.Codelet {name!r}: {arch}")
        if all(implementation is None for implementation in implementations.values()):
            raise ValueError(f"hetflow.Codelet {name!r}: give at least one implementation (cpu, opencl or cuda)")
        if model is not None and not isinstance(model, str):
            raise TypeError(f"hetflow.Codelet {name!r}: model must be a performance model's symbol (a str), not {model!r}")
        self.name = name
        self.cpu = cpu
        self.opencl = opencl
        self.cuda = cuda
        self.model = model

    def __setattr__(self, attribute: str, value: Any) -> None:
        if attribute in _FIXED and attribute in self.__dict__:
            raise AttributeError(
                f"hetflow.Codelet {self.name!r}: its {attribute} cannot change once it is made (a runtime registers "
                "its implementations at its first insert and keeps them): make a new hetflow.Codelet"
            )
        super().__setattr__(attribute, value)

    def __delattr__(self, attribute: str) -> None:
        if attribute in _FIXED:
            raise AttributeError(f"hetflow.Codelet {self.name!r}: its {attribute} cannot be deleted")
        super().__delattr__(attribute)

    @property
    def archs(self) -> Tuple[str, ...]:
        """The kinds of worker this codelet has an implementation for."""
        return tuple(arch for arch in ARCHS if getattr(self, arch) is not None)

    def __repr__(self) -> str:
        return f"hetflow.Codelet({self.name!r}, {', '.join(self.archs)})"


class _Call:
    """A codelet task's runner: the engine calls it on the worker the task lands on, with that
    worker's kind and what its device module says about the task; it keeps the value."""

    __slots__ = ("codelet", "args", "slots", "futures", "nested", "value")

    def __init__(
        self, codelet: Codelet, args: list, slots: Dict[int, Tuple[int, Any]], futures: list, nested: Any = None
    ) -> None:
        self.codelet = codelet
        self.args = args  # the call's arguments, the arrays unwrapped
        self.slots = slots  # argument position -> (buffer index, array)
        self.futures = futures  # argument position -> its future, resolved at run time
        self.nested = nested  # (FutureSearch, positions): futures inside lists, tuples, dicts, sets
        self.value: Any = None

    def __call__(self, arch: str, info: Any) -> float:
        """Runs the implementation for ``arch``; returns the seconds it spent building what it
        keeps (programs), which the performance model leaves out."""
        args = list(self.args)
        # Runs once: what it holds goes now, so that a future kept in a module's globals is no
        # cycle (future -> task -> runner -> implementation -> those globals) that the garbage
        # collector cannot see through the engine.
        codelet, slots, futures, nested = self.codelet, self.slots, self.futures, self.nested
        self.codelet = self.args = self.slots = self.futures = self.nested = None  # type: ignore[assignment]
        for position, future in futures:
            args[position] = Future.result(future)  # a dependency: finished; its arrays reach us through accesses
        if nested is not None:  # copies of the containers that hold futures, their values in place
            search, positions = nested
            copies: dict = {}
            for position in positions:
                args[position] = search.substitute(args[position], Future.result, copies)
        _setup.seconds = 0.0
        if arch == "cuda":
            self.value = _run_cuda(codelet.cuda, args, slots, info)
        elif arch == "opencl":
            self.value = _run_opencl(codelet.opencl, args, slots, info)
        else:
            self.value = codelet.cpu(*args)  # type: ignore[misc]
        if type(self.value) is types.CoroutineType:  # a lambda over an async function: never awaited
            from hetflow._errors import returned_coroutine

            value, self.value = self.value, None
            raise returned_coroutine(getattr(codelet, arch), value)
        return _setup.seconds


class CodeletFuture(Future):
    """A codelet task's future: ``result()`` also brings the arrays the task wrote back to host
    memory, so that the program reads what the task wrote wherever it ran."""

    _written: Sequence[Any] = ()

    def result(self, timeout: Optional[float] = None) -> Any:
        """Waits for the task, brings the arrays it wrote home, and returns its value."""
        value = super().result(timeout)
        self._runtime.bring_home(self._written)
        return value

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """Waits for the task, brings the arrays it wrote home (``if f.exception() is None:``
        reads them), and returns its exception or None."""
        error = super().exception(timeout)
        if error is None:
            self._runtime.bring_home(self._written)
        return error


def _missing_extra(package: str, extra: str, kind: str) -> ImportError:
    return ImportError(
        f"hetflow: {kind} implementations need {package}, which is not installed "
        f"(pip install 'hetflow[{extra}]')"
    )


# Arrays reach devices only when contiguous with positive strides (see insert): element 0 is the
# first byte of the device copy.


def _run_cuda(implementation: Any, args: list, slots: Dict[int, Tuple[int, Any]], info: Any) -> Any:
    try:
        import cupy
    except ImportError:
        raise _missing_extra("CuPy", "cuda", "CUDA") from None
    device, stream_pointer, buffers = info
    with cupy.cuda.Device(device):
        for position, (index, array) in slots.items():
            address, nbytes = buffers[index]
            memory = cupy.cuda.UnownedMemory(address, nbytes, None, device)
            args[position] = cupy.ndarray(array.shape, array.dtype, cupy.cuda.MemoryPointer(memory, 0),
                                          strides=array.strides)
        with cupy.cuda.ExternalStream(stream_pointer, device):
            return implementation(*args)


_opencl_queues: Dict[int, Any] = {}
_opencl_lock = threading.Lock()


def _opencl_queue(pointer: int) -> Tuple[Any, Any]:
    """The pyopencl queue over one of the driver's queues, and its context, made once."""
    found = _opencl_queues.get(pointer)
    if found is None:
        import pyopencl

        with _opencl_lock:
            found = _opencl_queues.get(pointer)
            if found is None:
                queue = pyopencl.CommandQueue.from_int_ptr(pointer, retain=True)
                found = _opencl_queues[pointer] = (queue, queue.context)
    return found


def _run_opencl(implementation: Any, args: list, slots: Dict[int, Tuple[int, Any]], info: Any) -> Any:
    try:
        import pyopencl
        import pyopencl.array
    except ImportError:
        raise _missing_extra("pyopencl", "opencl", "OpenCL") from None
    _context_pointer, queue_pointer, _device_pointer, buffers = info
    queue, context = _opencl_queue(queue_pointer)
    for position, (index, array) in slots.items():
        address, _nbytes = buffers[index]
        args[position] = _opencl_array(
            pyopencl.array.Array, queue, context, array, pyopencl.Buffer.from_int_ptr(address, retain=True)
        )
    return implementation(*args)


def _opencl_array(array_type: Any, queue: Any, context: Any, like: Any, buffer: Any) -> Any:
    """A pyopencl array over ``buffer`` shaped like the numpy array ``like``. The constructor's
    checks cost ~10 us, most of a small task; the arguments here are already checked, so its
    fast path is taken where this pyopencl has it."""
    try:
        return array_type(queue, like.shape, like.dtype, strides=like.strides, data=buffer,
                          _fast=True, _size=like.size, _context=context, _queue=queue)
    except TypeError:
        return array_type(queue, like.shape, like.dtype, strides=like.strides, data=buffer)


_programs: Dict[Tuple[int, str, str], Any] = {}
_programs_lock = threading.Lock()


def opencl_program(context: Any, source: str, options: str = "") -> Any:
    """The ``pyopencl.Program`` of OpenCL C ``source`` built for ``context`` (a
    ``pyopencl.Context``, or an array or queue of it), built once and kept for the next tasks;
    inside a task, the build's time is left out of what the performance model learns.

    >>> def scale_opencl(x, factor):
    ...     program = hetflow.opencl_program(x, SOURCE)
    ...     program.scale(x.queue, x.shape, None, x.data, numpy.float64(factor))
    """
    given = context
    context = getattr(context, "context", context)
    if not hasattr(context, "int_ptr"):
        raise TypeError(
            "hetflow.opencl_program: context must be a pyopencl.Context, or an array or queue of one, "
            f"not {type(given).__name__}"
        )
    for what, text in (("source", source), ("options", options)):
        if not isinstance(text, str):
            raise TypeError(f"hetflow.opencl_program: {what} must be a str, not {type(text).__name__}")
    key = (context.int_ptr, source, options)
    program = _programs.get(key)
    if program is None:
        import pyopencl

        with _programs_lock:
            program = _programs.get(key)
            if program is None:
                started = time.perf_counter()
                program = pyopencl.Program(context, source).build(options=options)
                _programs[key] = program
                _setup.seconds = getattr(_setup, "seconds", 0.0) + time.perf_counter() - started
    return program


_kernels: Dict[Tuple[int, str], Any] = {}


def opencl_kernel(context: Any, source: str, name: str, options: str = "") -> Any:
    """The ``pyopencl.Kernel`` ``name`` of ``opencl_program(context, source, options)``, made once
    and kept: making one costs more than a small launch on some platforms (about 170 us on
    PoCL). Its arguments are set at each launch; meant for device implementations, which a
    device's single worker runs one at a time, so no two threads use one kernel at once.

    >>> def scale_opencl(x, factor):
    ...     hetflow.opencl_kernel(x, SOURCE, "scale")(x.queue, x.shape, None, x.data, numpy.float64(factor))
    """
    try:
        program = opencl_program(context, source, options)
    except Exception as error:
        # pyopencl's build error has the log but not the kernel asked for: the same error (type,
        # code, routine) with its message naming it, as the C++ side's does.
        what: Any = getattr(error, "what", None)
        if getattr(error, "routine", None) != "clBuildProgram" or not hasattr(what, "what"):
            raise
        try:
            import pyopencl

            record = pyopencl._cl._ErrorRecord(
                msg=f"hetflow.opencl_kernel: the program of kernel {name!r} does not build: {what.what()}",
                code=what.code(),
                routine=what.routine(),
            )
            named = type(error)(record)
        except Exception:  # a pyopencl whose error records are made otherwise: its own error
            raise error from None
        raise named from None
    key = (program.int_ptr, name)
    kernel = _kernels.get(key)
    if kernel is None:
        import pyopencl

        with _programs_lock:
            kernel = _kernels.get(key)
            if kernel is None:
                try:
                    kernel = _kernels[key] = pyopencl.Kernel(program, name)
                except pyopencl.LogicError as error:
                    names = sorted(k.function_name for k in program.all_kernels())
                    raise ValueError(
                        f"hetflow.opencl_kernel: the program has no kernel {name!r}; its kernels: "
                        f"{', '.join(names) or 'none'} ({error})"
                    ) from None
    return kernel


def insert(
    runtime: Any, codelet: Codelet, args: tuple, priority: int, where: Optional[str], name: Optional[str]
) -> CodeletFuture:
    """Submits ``codelet`` over ``args`` to ``runtime``; see :func:`hetflow.insert`."""
    import numpy

    from hetflow._data import engine_accesses

    if not isinstance(codelet, Codelet):
        raise TypeError(f"hetflow.insert takes a hetflow.Codelet first, not {type(codelet).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(
            f"hetflow.insert: name must be a str (shown in errors and traces) or None, not {type(name).__name__}"
        )
    archs = _allowed_archs(codelet, where)
    handles = runtime.handles
    merged: Dict[Any, int] = {}
    call_args: List[Any] = []
    arrays: List[Tuple[int, Any, Any]] = []  # (position, array, its view)
    futures: List[Tuple[int, Future]] = []
    written: List[Tuple[Any, Any]] = []  # (array, its view)
    on_host_only = ""  # why the task must run on the host, if it must
    for position, value in enumerate(args):
        mode = "R"
        if isinstance(value, Access):
            mode, value = value.mode, value.value
            if not isinstance(value, numpy.ndarray):
                raise TypeError(
                    f"hetflow.insert: {codelet.name!r} argument {position} is marked {mode} but is a "
                    f"{type(value).__name__}; only numpy arrays are task data"
                )
        if isinstance(value, numpy.ndarray):
            view = handles.accesses(value, mode, merged)
            arrays.append((position, value, view))
            if mode != "R":
                written.append((value, view))
            # A device copy covers one view; views that share elements with others are kept
            # coherent through host memory, so a task on them runs on the host.
            if view.overlaps or not (value.flags.c_contiguous or value.flags.f_contiguous):
                on_host_only = on_host_only or (
                    "one of its arrays is not contiguous, or shares elements with another view of its buffer "
                    "that was passed to a task or acquired (hetflow.acquire), for as long as the buffer lives: such "
                    "arrays are used on the host only (give the codelet a cpu implementation, or pass contiguous "
                    "arrays that no other task's view overlaps)"
                )
            if value.dtype.hasobject:  # pointers to Python objects: a kernel would write over them
                on_host_only = on_host_only or (
                    f"its argument {position} (dtype {value.dtype}) holds Python objects, which only the host "
                    "can use (give the codelet a cpu implementation)"
                )
        elif isinstance(value, Future):
            futures.append((position, value))
        call_args.append(value)
    if on_host_only and archs != ("cpu",):
        if "cpu" not in archs:
            raise ValueError(f"hetflow.insert: {codelet.name!r} must run on {'/'.join(archs)}, but {on_host_only}")
        archs = ("cpu",)
    _check_workers(runtime, codelet, archs)
    accesses = engine_accesses(merged)
    buffer_index = {handle: index for index, (handle, _) in enumerate(accesses)}
    slots = {position: (buffer_index[view.handle], array) for position, array, view in arrays}
    nested = _nested_futures(codelet, call_args)
    deps = [f for _, f in futures]
    if nested is not None:
        deps += [f for f in nested[0].futures if all(f is not other for other in deps)]
    runner = _Call(codelet, call_args, slots, futures, nested)
    future = runtime.submit_codelet(codelet, runner, [f._task for f in deps], accesses, name or codelet.name,
                                    priority, archs)
    if written and archs != ("cpu",):
        future._written = tuple(array for array, _ in written)
        runtime.note_device_writes([view for _, view in written])
    return future


def _nested_futures(codelet: Codelet, args: List[Any]) -> Optional[Tuple[Any, List[int]]]:
    """The futures inside the lists, tuples, dicts and sets among ``args``, which the task waits
    for and gets the values of, as a thread task does: (their search, the positions holding
    them), or None. An access mark found there is refused: it acts only as an argument itself."""
    positions = [position for position, value in enumerate(args) if isinstance(value, _CONTAINERS)]
    if not positions:
        return None
    search = FutureSearch(
        tuple(args[position] for position in positions),
        {},
        lambda value: isinstance(value, Future) or type(value) is Access,
    )
    for mark in search.futures:
        if type(mark) is Access:
            from hetflow._serialize import find_nested

            position, path = next(
                (p, found[0]) for p in positions if (found := find_nested(args[p], lambda item: item is mark))
            )
            raise TypeError(
                f"hetflow.insert: {codelet.name!r} argument {position}, at {path}, is an access mark "
                f"(hetflow.{mark.mode}(...)); marks act only as arguments of their own, not inside lists, tuples, "
                "dicts or sets (an array there is not task data): pass the array as an argument, marked"
            )
    if not search.futures:
        return None
    return search, [position for position in positions if id(args[position]) in search.holders]


def _allowed_archs(codelet: Codelet, where: Optional[str]) -> Tuple[str, ...]:
    archs = codelet.archs
    if where is None or where == "any":
        return archs
    if where not in ARCHS:
        raise ValueError(f"hetflow.insert: where must be one of {', '.join(ARCHS)} or 'any', not {where!r}")
    if where not in archs:
        raise ValueError(
            f"hetflow.insert: where={where!r} but codelet {codelet.name!r} has no {where} implementation "
            f"(it has: {', '.join(archs)})"
        )
    return (where,)


def _check_workers(runtime: Any, codelet: Codelet, archs: Sequence[str]) -> None:
    present = runtime.worker_archs()
    if any(arch in present for arch in archs):
        return
    if len(archs) == 1 and archs[0] in ("cuda", "opencl"):
        raise ValueError(
            f"hetflow.insert: {codelet.name!r} can run only on {archs[0]} workers and the runtime has none "
            f"(start it with hetflow.init({archs[0]}=True) on a machine with such a device"
            + ('; opencl="all" takes CPU devices too, as PoCL\'s)' if archs[0] == "opencl" else ")")
        )
    raise ValueError(
        f"hetflow.insert: no worker of the runtime can run {codelet.name!r} (it runs on {', '.join(archs)}; "
        f"the runtime has {', '.join(sorted(present))} workers)"
    )
