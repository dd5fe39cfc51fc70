"""The hetflow engine; use the hetflow package, not this module."""

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated

import numpy
from numpy.typing import NDArray


def perfmodel_record(symbol: str, arch: str, size: int, seconds: float) -> None:
    """
    Records one measured run of `symbol` on `arch` for data of `size`, in seconds.
    """

def perfmodel_entries(symbol: str) -> list:
    """
    The measurements of `symbol`: one dict per (arch, size) with count, mean, stddev, min, max, robust (the estimate used for predictions, seconds) and calibrated.
    """

def perfmodel_fit(symbol: str, arch: str) -> tuple[float, float, float, bool]:
    """
    (a, b, c, valid) of the regression t = a * size**b + c over the calibrated sizes.
    """

def fit_power_law(sizes: Sequence[float], seconds: Sequence[float]) -> tuple[float, float, float, bool]:
    """
    (a, b, c, valid) of the least-squares fit t = a * size**b + c to the points.
    """

def perfmodel_expected(symbol: str, arch: str, size: int) -> float | None:
    """The predicted seconds, or None when the model cannot tell yet."""

def perfmodel_calibration_samples(symbol: str) -> int:
    """
    How many measurements make a size calibrated (HETFLOW_CALIBRATE, default 10).
    """

def perfmodel_list() -> list[str]:
    """The symbols with a model on disk or in memory, sorted."""

def perfmodel_save_all() -> None:
    """
    Saves every model with unsaved measurements (failures are reported on stderr).
    """

def perfmodel_directory() -> str:
    """
    Where models are stored: $HETFLOW_HOME/perfmodels (default ~/.hetflow/perfmodels).
    """

def perfmodel_reset() -> None:
    """
    Forgets the models held in memory, unsaved measurements included (for tests).
    """

class TaskRef:
    def done(self) -> bool: ...

    def rank(self) -> int | None: ...

    def status(self) -> str: ...

    def finished_after_abort(self) -> bool: ...

    def check_wait_can_end(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def cancel(self) -> bool: ...

    def name(self) -> str: ...

    def outcome(self) -> tuple: ...

class ArrayHandle:
    def registered(self) -> bool: ...

class Acquisition:
    def release(self) -> None: ...

    def active(self) -> bool: ...

    def failure(self) -> object: ...

class Runtime:
    def __init__(self, ncpus: int | None, scheduler: str | None, nprocs: int, worker_command: Sequence[str], worker_environment: Sequence[str], spin_us: int | None, dumps: Callable, freeze: Callable, trace: str | None = None, stats: bool | None = None, devices: Sequence[tuple[str, object, object, object]] = [], memory_limits: Mapping[int, int] = {}, lazy_processes: bool = False, worker_stack_bytes: int | None = None) -> None: ...

    def register_codelet(self, name: str, archs: Sequence[str], perfmodel: str | None) -> int: ...

    def submit_codelet(self, codelet: int, runner: Callable, deps: Sequence[TaskRef], accesses: Sequence[tuple[ArrayHandle, str]], name: str, priority: int, where: Sequence[str]) -> TaskRef: ...

    def set_thread_initializer(self, initializer: Callable) -> None: ...

    def submit_thread(self, fn: Callable, deps: Sequence[TaskRef], accesses: Sequence[tuple[ArrayHandle, str]], name: str, priority: int, perfmodel: str | None = None, size: int = 0, on: int | None = None, label: str = '', args: tuple | None = None, kwargs: dict | None = None) -> TaskRef: ...

    def submit_call(self, fn: object, args: object, recent: object | None, name: str, priority: int) -> TaskRef | None: ...

    def register_function(self, key: str, code: bytes) -> int: ...

    def submit_process(self, function_id: int, call: bytes, deps: Sequence[TaskRef], arrays: Sequence[tuple[ArrayHandle, str, bool, int, int, int, Sequence[int], Sequence[int], int, object]], name: str, priority: int, worker: int = -1, launch: int = 0, perfmodel: str | None = None, size: int = 0, order: Sequence[tuple[ArrayHandle, str]] = [], on: int | None = None, label: str = '') -> TaskRef: ...

    def open_launch(self, launch: int, size: int) -> None: ...

    def abandon_launch(self, launch: int, unsent: int) -> None: ...

    def open_launches(self) -> int: ...

    def pinned_load(self, worker: int) -> int: ...

    def register_array(self, address: int, nbytes: int, name: str, host_writable: bool) -> ArrayHandle: ...

    def watch_host_writes(self, array: ArrayHandle) -> None: ...

    def unregister_async(self, handle: ArrayHandle) -> None: ...

    def discard(self, handle: ArrayHandle) -> None: ...

    def accesses_if_at_rest(self, handle: ArrayHandle) -> int | None: ...

    def acquire(self, handle: ArrayHandle, mode: str, holder: int | None = None) -> Acquisition: ...

    def watch(self, task: TaskRef, target: object) -> None: ...

    def engine_capsule(self) -> object: ...

    def set_router(self, router: object | None) -> None: ...

    @staticmethod
    def adopt_distributed(handle: object) -> ArrayHandle: ...

    def drain_completions(self, timeout_ms: int) -> list: ...

    def wait_all(self, timeout: float | None = None) -> bool: ...

    def check_wait_all_can_end(self) -> None: ...

    def shutdown(self) -> None: ...

    def abort(self) -> None: ...

    def cancel_pending(self) -> None: ...

    def inside_task(self) -> bool: ...

    def running_task_conflicts(self, accesses: Sequence[tuple[ArrayHandle, str]]) -> bool: ...

    def forget_failure(self, handle: ArrayHandle) -> None: ...

    def outstanding(self) -> int: ...

    def finished(self) -> int: ...

    def forget(self) -> None: ...

    def shutdown_within(self, timeout: float) -> int: ...

    def is_shut_down(self) -> bool: ...

    def workers(self) -> list: ...

    def scheduler_name(self) -> str: ...

def shared_bytes(nbytes: int) -> Annotated[NDArray[numpy.uint8], dict(shape=(None,))]:
    """A uint8 numpy array of nbytes in memory that worker processes share."""

def locate_shared(address: int, nbytes: int) -> str | None:
    """
    Where a worker process finds [address, address + nbytes) of a shared array ("id fd pid offset nbytes"), or None when that memory is not in a shared segment.
    """

def scratch_bytes() -> int:
    """
    Bytes of the scratch shared memory that plain arrays are copied into for worker processes.
    """

def message_kinds() -> dict:
    """
    The kinds of the messages between the host and its worker processes, by name.
    """

def note_application_waited() -> None:
    """
    The program has seen tasks end and may now write its arrays directly: device copies made before are copied again from host memory before their next use (read-only arrays excepted).
    """

def close_gil_gate(patience_s: float) -> None:
    """
    At exit, after hetflow's last work: threads of this module that want the GIL back wait for the process to end from now on (finalizing Python would end them through C++ frames); waits up to patience_s for those already on their way to it.
    """

def check_environment() -> None:
    """
    Reads the engine's HETFLOW_* variables (and HETFLOW_SIMULATE's machine description) as a runtime would; ValueError naming a bad one.
    """

def expect_objects_at_exit() -> None:
    """
    At exit: hetflow's objects still referenced then (a future in a global, whose exception's class refers to the module that holds the future) are reclaimed with the process, unreported.
    """

def open_gil_gate() -> None:
    """
    hetflow is used again after its exit handler (by a later one): its threads take the GIL as before.
    """

def thread_number() -> int:
    """
    A number for the calling thread, never given to another one: acquisitions are held by it.
    """

def schedulers() -> list[str]: ...
