"""The wire protocol (framing) and the process worker, driven the way the host driver does."""
from __future__ import annotations

import array
import dataclasses
import io
import multiprocessing
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest

from hetflow import _protocol as P
from hetflow import _serialize as S
from hetflow import _worker

PYTHON_DIR = Path(P.__file__).resolve().parents[1]
TIMEOUT = 30.0


# -- framing ------------------------------------------------------------------------------------
def test_exact_bytes() -> None:
    data = P.encode_message(P.RUN, [P.u64(1), b"k", b"", b"xy"])
    assert data == (
        b"HFW1" + b"\x01\0\0\0" + b"\x04\0\0\0" + b"\0\0\0\0"
        + b"\x08" + b"\0" * 7 + b"\x01" + b"\0" * 7
        + b"\x01" + b"\0" * 7 + b"k"
        + b"\0" * 8
        + b"\x02" + b"\0" * 7 + b"xy"
    )
    assert P.encode_message(P.SHUTDOWN) == b"HFW1\x02\0\0\0\0\0\0\0\0\0\0\0"
    assert P.HEADER_SIZE == 16


def test_u64() -> None:
    assert P.u64(0x0102030405060708) == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert P.from_u64(P.u64(2**64 - 1)) == 2**64 - 1
    with pytest.raises(P.ProtocolError):
        P.from_u64(b"\0" * 4)


def test_round_trip_through_a_file_object() -> None:
    stream = io.BytesIO()
    P.write_message(stream, P.READY, [b"123"])
    P.write_message(stream, P.ERROR, [P.u64(9), b"", "é".encode(), b"", b"tb"])
    P.write_message(stream, P.SHUTDOWN, [])
    stream.seek(0)
    assert P.read_message(stream) == (P.READY, [b"123"])
    assert P.read_message(stream) == (P.ERROR, [P.u64(9), b"", "é".encode(), b"", b"tb"])
    assert P.read_message(stream) == (P.SHUTDOWN, [])
    assert P.read_message(stream) is None


def test_round_trip_through_a_pipe_with_large_parts() -> None:
    r, w = os.pipe()
    big = os.urandom(3 << 20)  # well over a pipe's buffer: short writes and reads happen
    doubles = array.array("d", range(1000))  # not a byte buffer: length counts bytes
    sent = [(P.RUN, [P.u64(5), b"key", big, bytearray(b"call"), memoryview(doubles)]), (P.RESULT, [b""] * 3)]

    def writer() -> None:
        for kind, parts in sent:
            P.write_message(w, kind, parts)
        os.close(w)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        kind, parts = P.read_message(r)
        assert kind == P.RUN
        assert parts[:4] == [P.u64(5), b"key", big, b"call"]
        assert parts[4] == doubles.tobytes()
        assert P.read_message(r) == (P.RESULT, [b"", b"", b""])
        assert P.read_message(r) is None
    finally:
        thread.join()
        os.close(r)


def test_every_truncation_is_an_error() -> None:
    data = P.encode_message(P.RUN, [P.u64(1), b"key", b"", b"abc"])
    assert P.read_message(io.BytesIO(b"")) is None
    for size in range(1, len(data)):
        with pytest.raises(P.ProtocolError, match="truncated"):
            P.read_message(io.BytesIO(data[:size]))


def test_truncation_on_a_pipe() -> None:
    r, w = os.pipe()
    os.write(w, P.encode_message(P.RESULT, [b"x" * 100])[:-10])
    os.close(w)
    with pytest.raises(P.ProtocolError, match="end of file after 90 of 100 bytes of part 0"):
        P.read_message(r)
    os.close(r)


def test_garbled_input() -> None:
    good = P.encode_message(P.RESULT, [b"x"])
    with pytest.raises(P.ProtocolError, match="bad magic"):
        P.read_message(io.BytesIO(b"XXXX" + good[4:]))
    with pytest.raises(P.ProtocolError, match="reserved"):
        P.read_message(io.BytesIO(good[:12] + b"\x01\0\0\0" + good[16:]))
    with pytest.raises(P.ProtocolError, match="parts"):
        P.read_message(io.BytesIO(P.HEADER.pack(P.MAGIC, 1, P.MAX_PARTS + 1, 0)))
    # A garbled huge length fails at end of file instead of allocating it all.
    with pytest.raises(P.ProtocolError, match="truncated"):
        P.read_message(io.BytesIO(P.HEADER.pack(P.MAGIC, 1, 1, 0) + P.LENGTH.pack(2**62) + b"abc"))


def test_worker_environment() -> None:
    entry, authkey = P.worker_environment()
    assert authkey == f"HETFLOW_AUTHKEY={multiprocessing.current_process().authkey.hex()}"
    name, _, value = entry.partition("=")
    assert name == "HETFLOW_SYS_PATH"
    paths = value.split(os.pathsep)
    assert all(os.path.isabs(p) for p in paths) and len(set(paths)) == len(paths)
    assert str(Path(__file__).resolve().parent) in paths  # pytest put the test directory there


def test_message_kinds_agree_with_the_extension() -> None:
    """Workers read the kinds from _protocol (they run without the extension); the host's are
    the extension's: both tables must say the same."""
    from hetflow import _hetflow

    assert P.MESSAGE_KINDS == _hetflow.message_kinds()
    assert all(getattr(P, name) == kind for name, kind in P.MESSAGE_KINDS.items())


def test_bad_arguments_to_write() -> None:
    with pytest.raises(TypeError, match="not str"):
        P.encode_message(P.RUN, ["text"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        P.encode_message(2**32, [])


# -- driving a worker ---------------------------------------------------------------------------
class Child:
    """A worker process and the host's ends of its two pipes."""

    def __init__(self, stdout: Any = None, env: Optional[dict] = None) -> None:
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(PYTHON_DIR)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        name, _, value = P.worker_environment()[0].partition("=")  # the test module importable there
        environment[name] = value
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hetflow._worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            env=environment,
            stdout=stdout,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.known: set = set()
        self.next_id = 1

    def send(self, kind: int, parts: List[bytes]) -> None:
        P.write_message(self.to_child, kind, parts)

    def recv(self, timeout: float = TIMEOUT) -> Any:
        ready, _, _ = select.select([self.from_child], [], [], timeout)
        assert ready, "the worker did not answer in time"
        return P.read_message(self.from_child)

    def ready(self) -> int:
        kind, parts = self.recv()
        assert kind == P.READY
        return int(parts[0].decode("ascii"))

    def run_raw(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Sends a RUN (futures are Fut objects) and returns the reply ``(kind, parts)``."""
        reduces = any(isinstance(a, ReducingFut) for a in (*args, *kwargs.values()))
        packed = S.pack_call(func, args, kwargs, lambda x: isinstance(x, Fut), reduces_to_placeholder=reduces)
        first = packed.func_key not in self.known
        self.known.add(packed.func_key)
        task_id = P.u64(self.next_id)
        self.next_id += 1
        deps = [S.dumps_value(f.value) for f in packed.futures]
        self.send(P.RUN, [task_id, packed.func_key.encode(), packed.func_bytes if first else b"", packed.call_bytes, b"", *deps])
        reply = self.recv()
        assert reply is not None and bytes(reply[1][0]) == task_id
        return reply

    def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """The task's value, or raises its exception as the host would."""
        kind, parts = self.run_raw(func, *args, **kwargs)
        if kind == P.RESULT:
            return S.loads_result(bytes(parts[1]))
        assert kind == P.ERROR and len(parts) == 6 and parts[5] == b""
        raise S.unpack_error([bytes(p) for p in parts])

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        for fd in (self.to_child, self.from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Fut:
    """A stand-in for a host future: the worker gets ``value`` where it was."""

    def __init__(self, value: Any) -> None:
        self.value = value


@pytest.fixture
def child() -> Any:
    c = Child()
    c.ready()
    yield c
    c.close()


def module_level_add(a: int, b: int = 0) -> int:
    return a + b


def structure(a: Any, b: Any = None, **rest: Any) -> Any:
    return {"a": a, "b": b, "rest": rest}


class ReducingFut(Fut):
    """A stand-in for hetflow's own futures: pickles as a Placeholder wherever it is."""

    def __reduce__(self) -> Any:
        return S.packing.placeholder(self).__reduce__()


@dataclasses.dataclass
class Box:
    v: Any


class MyList(list):
    pass


class LockedError(Exception):
    """Does not pickle: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgError(Exception):
    """Pickles but does not unpickle: __init__ needs two arguments, args holds one."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def test_ready_carries_the_pid() -> None:
    c = Child()
    try:
        assert c.ready() == c.proc.pid
    finally:
        c.close()


def test_lambda_closure_and_module_function(child: Child) -> None:
    assert child.run(lambda x: x * 2, 21) == 42
    offset = 100

    def add_offset(x: int) -> int:
        return x + offset

    assert child.run(add_offset, 1) == 101
    assert child.run(module_level_add, 1, b=2) == 3  # pickled by reference, imported there


def test_function_from_main_travels_by_value(child: Child) -> None:
    namespace: dict = {"__name__": "__main__"}
    exec("FACTOR = 3\ndef triple(x):\n    return x * FACTOR\n", namespace)
    assert namespace["triple"].__module__ == "__main__"
    assert child.run(namespace["triple"], 5) == 15


def test_kwargs(child: Child) -> None:
    assert child.run(structure, 1, b=2, c=3) == {"a": 1, "b": 2, "rest": {"c": 3}}


def test_futures_become_their_values(child: Child) -> None:
    f1, f2 = Fut(10), Fut("two")
    out = child.run(structure, f1, b=[{"x": f2, "y": (f1, f2)}, f1], c={"deep": [[f2]]})
    assert out == {"a": 10, "b": [{"x": "two", "y": (10, "two")}, 10], "rest": {"c": {"deep": [["two"]]}}}
    assert type(out["b"][0]["y"]) is tuple


def test_futures_anywhere_become_their_values(child: Child) -> None:
    f1, f2 = ReducingFut(41), ReducingFut("two")
    out = child.run(
        structure,
        {f1},
        b=(frozenset([f1, f2]), {f2: 1}, Box(f1), MyList([f2, f1]), [[[[f1]]]]),
        c=ReducingFut([1, 2]),
    )
    assert out["a"] == {41}
    frozen, keyed, box, mine, deep = out["b"]
    assert frozen == frozenset([41, "two"]) and keyed == {"two": 1} and deep == [[[[41]]]]
    assert type(box) is Box and box.v == 41
    assert type(mine) is MyList and mine == ["two", 41]
    assert out["rest"] == {"c": [1, 2]}
    shared = ReducingFut([0])
    x, y = child.run(lambda a, b: (a, b), shared, Box(shared))
    assert x == [0] and y.v is x  # one value per future, shared as the future was


def test_placeholder_out_of_range_is_an_error(child: Child) -> None:
    packed = S.pack_call(structure, (S.Placeholder(3),), {}, lambda x: False)
    child.send(P.RUN, [P.u64(1), packed.func_key.encode(), packed.func_bytes, packed.call_bytes, b"", S.dumps_value(0)])
    kind, parts = child.recv()
    assert kind == P.ERROR
    assert b"Placeholder(3)" in parts[P.ERROR_MESSAGE]
    assert child.run(module_level_add, 1) == 1  # still serving


def test_numpy_values_and_no_numpy_unless_needed(child: Child) -> None:
    assert child.run(lambda: "numpy" in sys.modules) is False
    np = pytest.importorskip("numpy")
    a = np.arange(12.0).reshape(3, 4)
    out = child.run(lambda m, k: m * k, Fut(a), 2)
    assert isinstance(out, np.ndarray) and (out == a * 2).all()


def test_function_cache(child: Child) -> None:
    def square(x: int) -> int:
        return x * x

    assert child.run(square, 3) == 9
    key = S.pack_call(square, (), {}, lambda x: False).func_key
    assert key in child.known
    assert child.run(square, 4) == 16  # sent without function bytes this time
    call = S.pack_call(square, (5,), {}, lambda x: False).call_bytes
    child.send(P.RUN, [P.u64(77), b"never.sent#0", b"", call, b""])
    kind, parts = child.recv()
    assert kind == P.ERROR and parts[0] == P.u64(77)
    exc = S.unpack_error([bytes(p) for p in parts])
    assert isinstance(exc, RuntimeError)
    assert "no function under key 'never.sent#0'" in str(exc)
    assert child.run(square, 6) == 36


def test_function_from_main_sees_the_current_globals(child: Child) -> None:
    namespace: dict = {"__name__": "__main__"}
    exec("SCALE = 1\nCONFIG = {'k': 1}\ndef f(x):\n    return x * SCALE + CONFIG['k']\n", namespace)
    assert child.run(namespace["f"], 2) == 3
    namespace["SCALE"] = 10
    assert child.run(namespace["f"], 2) == 21
    namespace["CONFIG"]["k"] = 5
    assert child.run(namespace["f"], 2) == 25


def test_exception_comes_back_with_type_message_and_traceback(child: Child) -> None:
    def inner(x: int) -> None:
        raise ValueError(f"bad value {x}")

    def outer(x: int) -> None:
        inner(x)

    kind, parts = child.run_raw(outer, 7)
    assert kind == P.ERROR
    assert parts[P.ERROR_TYPE_NAME] == b"builtins.ValueError"
    assert parts[P.ERROR_MESSAGE] == b"bad value 7"
    tb = bytes(parts[P.ERROR_TRACEBACK]).decode()
    assert tb.startswith("Traceback (most recent call last):")
    assert "in outer" in tb and "in inner" in tb and "ValueError: bad value 7" in tb
    assert "_worker.py" not in tb  # the worker's own frames are left out
    exc = S.unpack_error([bytes(p) for p in parts])
    assert type(exc) is ValueError and exc.args == ("bad value 7",)
    assert isinstance(exc.__cause__, S.RemoteTraceback) and str(exc.__cause__) == tb
    if sys.version_info >= (3, 11):
        assert any("process worker" in note for note in exc.__notes__)


def test_exception_of_a_test_module_class(child: Child) -> None:
    with pytest.raises(S.RemoteTaskError) as info:
        child.run(_raise_locked)
    assert info.value.type_name == "test_worker_protocol.LockedError"
    assert info.value.message == "holding a lock"
    assert "in _raise_locked" in str(info.value.__cause__)

    # Pickles, but would not unpickle (its __init__ needs two arguments): sent without it.
    kind, parts = child.run_raw(_raise_two_arg)
    assert kind == P.ERROR and parts[P.ERROR_EXC_BYTES] != b""
    exc = S.unpack_error([bytes(p) for p in parts])
    assert type(exc).__name__ == "TwoArgError" and str(exc) == "x/y"


def _raise_locked() -> None:
    raise LockedError("holding a lock")


def _raise_two_arg() -> None:
    raise TwoArgError("x", "y")


def test_system_exit_in_a_task_is_an_error_not_an_exit(child: Child) -> None:
    with pytest.raises(SystemExit):
        child.run(sys.exit, 4)
    assert child.run(module_level_add, 2) == 2


def test_results_that_need_cloudpickle_or_cannot_be_pickled(child: Child) -> None:
    f = child.run(lambda k: (lambda x: x + k), 5)  # a returned lambda: cloudpickle
    assert f(1) == 6
    with pytest.raises(TypeError, match=r"result of type _thread\.lock cannot be pickled"):
        child.run(threading.Lock)
    assert child.run(module_level_add, 3) == 3


def test_print_reaches_stdout_before_the_result() -> None:
    c = Child(stdout=subprocess.PIPE)
    try:
        c.ready()
        assert c.run(lambda: print("hello from a task") or 1) == 1
        fd = c.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], 0)  # flushed before RESULT was sent
        assert ready
        assert os.read(fd, 1000) == b"hello from a task\n"
    finally:
        c.close()


def test_shutdown_exits_0(child: Child) -> None:
    child.send(P.SHUTDOWN, [])
    assert child.wait() == 0
    assert child.recv() is None


def test_exit_does_not_wait_forever_for_threads_a_task_left(child: Child) -> None:
    def leave_a_thread() -> None:
        threading.Thread(target=time.sleep, args=(3600,)).start()

    child.run(leave_a_thread)
    child.send(P.SHUTDOWN, [])
    assert child.wait(timeout=_worker.EXIT_GRACE_S + TIMEOUT) == 0


def test_end_of_file_exits_0(child: Child) -> None:
    os.close(child.to_child)
    assert child.wait() == 0


def test_sigint_does_not_kill_the_worker(child: Child) -> None:
    child.proc.send_signal(signal.SIGINT)
    assert child.run(module_level_add, 1, 1) == 2

    def slow() -> str:
        time.sleep(0.5)
        return "finished"

    timer = threading.Timer(0.2, child.proc.send_signal, (signal.SIGINT,))
    timer.start()
    assert child.run(slow) == "finished"
    timer.join()
    assert child.proc.poll() is None


def test_programs_a_task_starts_do_not_ignore_sigint(child: Child) -> None:
    # The worker ignored SIGINT with SIG_IGN, which the programs its tasks start inherit across
    # exec: one stopped with SIGINT never stopped. The worker itself still goes on.
    def sigint_in_a_program_and_here() -> Any:
        import subprocess

        check = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
        program = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
        os.kill(os.getpid(), signal.SIGINT)  # the worker's own: swallowed
        return program.stdout.strip(), True

    assert child.run(sigint_in_a_program_and_here) == ("True", True)
    assert child.proc.poll() is None


def test_a_worker_that_dies_in_a_task_gives_end_of_file(child: Child) -> None:
    packed = S.pack_call(os._exit, (3,), {}, lambda x: False)
    child.send(P.RUN, [P.u64(1), packed.func_key.encode(), packed.func_bytes, packed.call_bytes, b""])
    try:
        assert child.recv() is None
    except P.ProtocolError:
        pass
    assert child.wait() == 3


def test_worker_id() -> None:
    c = Child(env={"HETFLOW_WORKER_ID": "4"})
    try:
        c.ready()
        assert c.run(_worker_id_in_task) == 4
    finally:
        c.close()


def _worker_id_in_task() -> Any:
    from hetflow import _worker as w

    return w.worker_id()


def test_garbled_input_makes_the_worker_exit_2(child: Child) -> None:
    os.write(child.to_child, b"nonsense" * 4)
    assert child.wait() == 2


def test_bad_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hetflow._worker"],
        env={**os.environ, "PYTHONPATH": str(PYTHON_DIR)},
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 2 and b"usage" in proc.stderr


def test_loading_failure_is_reported(child: Child) -> None:
    call = pickle.dumps(((), {}))
    child.send(P.RUN, [P.u64(2), b"broken#1", b"not a pickle", call, b""])
    kind, parts = child.recv()
    assert kind == P.ERROR
    assert b"loading the task's function" in parts[P.ERROR_TRACEBACK]
    assert child.run(module_level_add, 5) == 5


def test_a_function_that_failed_to_load_fails_each_of_its_tasks_the_same(child: Child) -> None:
    call = pickle.dumps(((), {}))
    missing = b"cno_such_module_for_hetflow\nf\n."  # a pickle of a function of a missing module
    for task_id, data in [(3, missing), (4, b""), (5, b"")]:  # the host sends the bytes once
        child.send(P.RUN, [P.u64(task_id), b"missing.f#1", data, call, b""])
        kind, parts = child.recv()
        assert kind == P.ERROR and parts[0] == P.u64(task_id)
        exc = S.unpack_error([bytes(p) for p in parts])
        assert isinstance(exc, ModuleNotFoundError), exc
        assert "no_such_module_for_hetflow" in str(exc)
        assert b"loading the task's function" in parts[P.ERROR_TRACEBACK]
    assert child.run(module_level_add, 5) == 5
