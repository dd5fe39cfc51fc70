"""Host-side serialization for the process executor (no worker process involved)."""
from __future__ import annotations

import collections
import gc
import pickle
import sys
import threading
from typing import Any

import cloudpickle
import pytest

from hetflow import _serialize as S


class Fut:
    def __init__(self, value: Any = None) -> None:
        self.value = value


def is_fut(x: Any) -> bool:
    return isinstance(x, Fut)


def unpack(packed: S.PackedCall) -> Any:
    return pickle.loads(packed.call_bytes)


def double(x: int) -> int:
    return 2 * x


Point = collections.namedtuple("Point", "x y")


# -- Placeholder ----------------------------------------------------------------------------------
def test_placeholder() -> None:
    p = S.Placeholder(3)
    assert p.index == 3 and p == S.Placeholder(3) and p != S.Placeholder(4)
    assert repr(p) == "Placeholder(3)" and hash(p) == hash(S.Placeholder(3))
    assert not hasattr(p, "__dict__")
    assert pickle.loads(pickle.dumps(p, protocol=5)) == p
    assert len(pickle.dumps(p, protocol=5)) < 80


# -- pack_call ------------------------------------------------------------------------------------
def test_pack_call_without_futures() -> None:
    packed = S.pack_call(double, (1, [2, 3]), {"k": {"a": 4}}, is_fut)
    assert unpack(packed) == ((1, [2, 3]), {"k": {"a": 4}})
    assert packed.futures == []
    assert packed.func_key.startswith(f"{__name__}.double#")
    assert pickle.loads(packed.func_bytes) is double  # importable: by reference


def test_pack_call_replaces_nested_futures() -> None:
    f1, f2 = Fut(), Fut()
    packed = S.pack_call(double, (f1, [{"x": f2, "y": (f2, 1)}], Point(f1, 2)), {"k": f2, "m": [f1]}, is_fut)
    assert packed.futures == [f1, f2]  # placeholder order, one index per future object
    args, kwargs = unpack(packed)
    P0, P1 = S.Placeholder(0), S.Placeholder(1)
    assert args == (P0, [{"x": P1, "y": (P1, 1)}], Point(P0, 2))
    assert type(args[1][0]["y"]) is tuple and type(args[2]) is Point
    assert kwargs == {"k": P1, "m": [P0]}


def test_pack_call_accepts_lists_and_no_kwargs() -> None:
    f = Fut()
    packed = S.pack_call(double, [f], None, is_fut)
    assert unpack(packed) == ((S.Placeholder(0),), {})


def test_too_many_futures() -> None:
    S.pack_call(double, [Fut() for _ in range(S.MAX_FUTURES)], {}, is_fut)
    with pytest.raises(ValueError, match=f"at most {S.MAX_FUTURES} futures"):
        S.pack_call(double, [Fut() for _ in range(S.MAX_FUTURES + 1)], {}, is_fut)


def test_not_callable() -> None:
    with pytest.raises(TypeError, match=r"hetflow: 42 is not callable"):
        S.pack_call(42, (), {}, is_fut)  # type: ignore[arg-type]


def test_unpicklable_function() -> None:
    lock = threading.Lock()

    def f() -> None:
        with lock:
            pass

    with pytest.raises(TypeError) as info:
        S.pack_call(f, (), {}, is_fut)
    message = str(info.value)
    assert message.startswith("hetflow: cannot send <function test_unpicklable_function.<locals>.f> to a process worker:")
    assert "cannot pickle '_thread.lock' object" in message and "executor='thread'" in message


def test_unpicklable_arguments() -> None:
    with pytest.raises(TypeError, match=r"cannot send argument 1 of <function double> .*_thread\.lock"):
        S.pack_call(double, (1, threading.Lock()), {}, is_fut)
    with pytest.raises(TypeError, match=r"cannot send keyword argument 'k' of <function double>"):
        S.pack_call(double, (), {"k": [threading.Lock()]}, is_fut)


def test_lambdas_closures_and_main_functions_travel_by_value() -> None:
    k = 5
    for func, expect in [(lambda x: x + 1, 3), (lambda x: x * k, 10)]:
        loaded = pickle.loads(S.pack_call(func, (), {}, is_fut).func_bytes)
        assert loaded is not func and loaded(2) == expect
    namespace: dict = {"__name__": "__main__"}
    exec("def from_main(x):\n    return -x\n", namespace)
    packed = S.pack_call(namespace["from_main"], (), {}, is_fut)
    assert packed.func_key.startswith("__main__.from_main#")
    assert pickle.loads(packed.func_bytes)(4) == -4


# -- the function cache ---------------------------------------------------------------------------
def test_function_pickled_once_per_object() -> None:
    def f() -> int:
        return 1

    a = S.pack_call(f, (), {}, is_fut)
    b = S.pack_call(f, (1,), {}, is_fut)
    assert a.func_key == b.func_key and a.func_bytes is b.func_bytes


def test_keys_follow_the_pickle() -> None:
    def make(k: int) -> Any:
        return lambda: k

    one, one_again, two = make(1), make(1), make(2)
    key = lambda f: S.pack_call(f, (), {}, is_fut).func_key  # noqa: E731
    assert key(one) == key(one_again)  # same pickle: the worker keeps one copy
    assert key(one) != key(two)
    assert "make.<locals>.<lambda>#" in key(one)


def test_cached_closures_do_not_outlive_their_users() -> None:
    class Big:
        pass

    big = Big()
    import weakref

    alive = weakref.ref(big)

    def uses_big() -> Any:
        return big

    S.pack_call(uses_big, (), {}, is_fut)
    del uses_big, big
    gc.collect()
    assert alive() is None


def test_unhashable_and_unweakrefable_callables() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> int:
            return 7

    packed = S.pack_call(Unhashable(), (), {}, is_fut)
    assert pickle.loads(packed.func_bytes)() == 7

    class Slotted:  # hashable, but takes no weak reference: cached strongly
        __slots__ = ()

        def __call__(self) -> int:
            return 8

    slotted = Slotted()
    first = S.pack_call(slotted, (), {}, is_fut)
    assert S.pack_call(slotted, (), {}, is_fut).func_bytes is first.func_bytes
    assert pickle.loads(first.func_bytes)() == 8
    assert S.pack_call(len, ("ab",), {}, is_fut).func_key.startswith("builtins.len#")


# -- functions sent by value see the current values of what they use -----------------------------
def from_main(source: str) -> dict:
    """A namespace where ``source`` ran as the main script does (functions of ``__main__``)."""
    namespace: dict = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


def run_sent(func: Any, *args: Any) -> Any:
    """Calls ``func`` as a worker would: from the bytes of its current entry."""
    return pickle.loads(S.pack_call(func, args, {}, is_fut).func_bytes)(*args)


def test_main_function_sees_rebound_globals() -> None:
    ns = from_main("SCALE = 1\ndef f(x):\n    return x * SCALE\n")
    f = ns["f"]
    first = S.pack_call(f, (2,), {}, is_fut)
    assert pickle.loads(first.func_bytes)(2) == 2
    assert S.pack_call(f, (3,), {}, is_fut).func_bytes is first.func_bytes  # unchanged: cached
    ns["SCALE"] = 10
    second = S.pack_call(f, (2,), {}, is_fut)
    assert second.func_key != first.func_key and pickle.loads(second.func_bytes)(2) == 20
    ns["SCALE"] = 1  # back to the first pickle, and its key
    assert S.pack_call(f, (2,), {}, is_fut).func_key == first.func_key


def test_main_function_sees_globals_mutated_in_place() -> None:
    ns = from_main("CONFIG = {'k': 1, 'deep': [1]}\ndef g():\n    return CONFIG['k'] + CONFIG['deep'][0]\n")
    g = ns["g"]
    assert run_sent(g) == 2
    ns["CONFIG"]["k"] = 5
    assert run_sent(g) == 6
    ns["CONFIG"]["deep"].append(0)
    ns["CONFIG"]["deep"][0] = 7
    assert run_sent(g) == 12


def test_main_function_sees_changes_in_what_it_calls() -> None:
    ns = from_main(
        "def helper(x):\n    return x + 1\n"
        "class Box:\n    factor = 2\n    def scaled(self, x):\n        return x * self.factor\n"
        "def h(x):\n    return Box().scaled(helper(x))\n"
    )
    h = ns["h"]
    assert run_sent(h, 1) == 4
    exec("def helper(x):\n    return x + 100\n", ns)  # rebound: the new helper
    assert run_sent(h, 1) == 202
    ns["Box"].factor = 3  # a class attribute of __main__ changed in place
    assert run_sent(h, 1) == 303
    exec("def other(self, x):\n    return -x\n", ns)
    ns["Box"].scaled = ns["other"]
    assert run_sent(h, 1) == -101


def test_closures_defaults_and_new_globals_are_watched() -> None:
    box = [1]
    k = 1

    def closure(x: int) -> int:
        return x * k + box[0]

    assert run_sent(closure, 1) == 2
    k = 10
    assert run_sent(closure, 1) == 11
    box[0] = 5
    assert run_sent(closure, 1) == 15
    ns = from_main("def late(x, y=1, *, z=2):\n    return x + y + z + LATE\n")
    late = ns["late"]
    with pytest.raises(NameError):
        run_sent(late, 0)
    ns["LATE"] = 100  # a global defined after the first submission
    assert run_sent(late, 0) == 103
    late.__defaults__ = (10,)
    late.__kwdefaults__["z"] = 20
    assert run_sent(late, 0) == 130


def test_objects_of_main_classes_are_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)  # a script's own __main__, as pickle sees it
    exec(
        "class Cfg:\n    def __init__(self):\n        self.scale = 2\n    def go(self, x):\n        return x * self.scale\n"
        "cfg = Cfg()\ndef use(x):\n    return cfg.go(x)\n",
        main.__dict__,
    )
    assert run_sent(main.use, 1) == 2
    checks = S._watch(main.use)
    assert all(not c[3] for c in checks if c[0] == S._PICKLE)  # the C pickler's bytes compared, not cloudpickle's
    main.cfg.scale = 5  # the object changed in place
    assert run_sent(main.use, 1) == 5
    exec("def go(self, x):\n    return -x * self.scale\n", main.__dict__)
    main.Cfg.go = main.go  # its class changed
    assert run_sent(main.use, 1) == -5


def test_functions_by_reference_need_no_checks() -> None:
    assert S._watch(double) is None
    ns = from_main("import math\nN = 3\ndef f(x):\n    return math.sqrt(x) * N\n")
    checks = S._watch(ns["f"])
    assert checks is not None and checks is not S._ALWAYS and len(checks) == 1  # identities only


def test_watched_closures_do_not_outlive_their_users() -> None:
    import weakref

    ns = from_main("def rec(n):\n    return 0 if n == 0 else rec(n - 1)\n")
    alive = weakref.ref(ns["rec"])
    S.pack_call(ns["rec"], (1,), {}, is_fut)
    S.pack_call(double, (1,), {}, is_fut)  # no longer the last function sent
    del ns
    gc.collect()
    assert alive() is None


# -- __mp_main__: the main script of a multiprocessing child (spawn, forkserver) ------------------
def test_functions_and_classes_of_mp_main_travel_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    module = types.ModuleType("__mp_main__")
    monkeypatch.setitem(sys.modules, "__mp_main__", module)
    exec("class K:\n    def __init__(self, v):\n        self.v = v\ndef sq(x):\n    return x.v * x.v\n", module.__dict__)
    packed = S.pack_call(module.sq, (module.K(3),), {}, is_fut, reduces_to_placeholder=True)
    assert packed.func_key.startswith("__mp_main__.sq#")
    assert S.loads_result(S.dumps_value(module.K(1))).v == 1
    value = S.dumps_value(module.K(4))
    monkeypatch.delitem(sys.modules, "__mp_main__")  # as in a worker, which lacks that module
    args, kwargs = pickle.loads(packed.call_bytes)
    assert pickle.loads(packed.func_bytes)(*args) == 9
    assert pickle.loads(value).v == 4


# -- values and results ---------------------------------------------------------------------------
def test_values_and_results() -> None:
    assert S.loads_result(S.dumps_value({"a": [1, 2]})) == {"a": [1, 2]}
    assert S.loads_result(S.dumps_result((1, "x"))) == (1, "x")
    assert S.loads_result(S.dumps_result(lambda: 3))() == 3  # falls back to cloudpickle
    with pytest.raises(TypeError, match=r"value of type _thread\.lock"):
        S.dumps_value(threading.Lock())
    with pytest.raises(TypeError, match=r"result of type _thread\.lock cannot be pickled"):
        S.dumps_result(threading.Lock())
    # A container's message names the part that does not pickle (a chunk of map's calls, say).
    with pytest.raises(TypeError, match=r"builtins\.list cannot be pickled \(its part \[1\]\['b'\], of type _thread\.lock\)"):
        S.dumps_result([1, {"a": 2, "b": threading.Lock()}])
    assert type(S.dumps_value(1)) is bytes  # the C++ side needs bytes exactly


def test_loads_result_error_propagates() -> None:
    with pytest.raises(Exception):
        S.loads_result(b"not a pickle")


# -- errors ---------------------------------------------------------------------------------------
def error_parts(exc_bytes: bytes, type_name: str = "builtins.KeyError", message: str = "'k'", tb: str = "TB") -> list:
    return [b"\0" * 8, exc_bytes, type_name.encode(), message.encode(), tb.encode()]


def test_unpack_error_rebuilds_the_exception() -> None:
    exc = S.unpack_error(error_parts(pickle.dumps(KeyError("k"))))
    assert type(exc) is KeyError and exc.args == ("k",)
    assert isinstance(exc.__cause__, S.RemoteTraceback) and str(exc.__cause__) == "TB"
    if sys.version_info >= (3, 11):
        assert len(exc.__notes__) == 1 and "process worker" in exc.__notes__[0]


@pytest.mark.parametrize("exc_bytes", [b"", b"garbage", pickle.dumps("not an exception")])
def test_unpack_error_falls_back_to_remote_task_error(exc_bytes: bytes) -> None:
    exc = S.unpack_error(error_parts(exc_bytes, "mod.Custom", "went wrong"))
    assert type(exc) is S.RemoteTaskError
    assert exc.type_name == "mod.Custom" and exc.message == "went wrong"
    assert str(exc) == "mod.Custom: went wrong"
    assert str(exc.__cause__) == "TB"


def test_unpack_error_without_traceback_text() -> None:
    exc = S.unpack_error(error_parts(b"", tb=""))
    assert exc.__cause__ is None


def test_unpack_error_needs_five_parts() -> None:
    with pytest.raises(ValueError):
        S.unpack_error([b"\0" * 8, b""])


def test_remote_errors_pickle() -> None:
    e = pickle.loads(pickle.dumps(S.RemoteTaskError("a.B", "msg")))
    assert (e.type_name, e.message, str(e)) == ("a.B", "msg", "a.B: msg")
    assert str(pickle.loads(pickle.dumps(S.RemoteTraceback("tb text")))) == "tb text"


def test_the_chain_prints_the_remote_traceback() -> None:
    import traceback

    exc = S.unpack_error(error_parts(b"", "mod.E", "boom", "Traceback (most recent call last):\n  File 'x'\nmod.E: boom\n"))
    text = "".join(traceback.format_exception(type(exc), exc, None))
    assert "File 'x'" in text and "RemoteTaskError: mod.E: boom" in text


# -- replace_nested -------------------------------------------------------------------------------
def test_replace_nested_keeps_unchanged_containers_and_sharing() -> None:
    inner = [1, 2]
    value = ([inner, inner], {"a": inner})
    assert S.replace_nested(value, lambda x: S._KEEP) is value
    shared = [Fut()]
    out = S.replace_nested((shared, shared), lambda x: 0 if is_fut(x) else S._KEEP)
    assert out == ([0], [0]) and out[0] is out[1]


def test_replace_nested_survives_cycles() -> None:
    cycle: list = [Fut()]
    cycle.append(cycle)
    out = S.replace_nested(cycle, lambda x: "v" if is_fut(x) else S._KEEP)
    assert out[0] == "v"


def test_cloudpickle_is_the_only_dependency() -> None:
    assert S._cloudpickle() is cloudpickle


def test_a_large_global_is_watched_for_rebinding_only():
    from hetflow import _serialize as S

    namespace: dict = {"__name__": "__main__"}
    exec("import numpy\nBIG = numpy.ones(300_000)\ndef f(i):\n    return BIG[i]\n", namespace)
    func = namespace["f"]
    key = S.function_entry(func)[0]
    namespace["BIG"][0] = 5.0  # in place, past the size compared: not seen (documented)
    assert S.function_entry(func)[0] == key
    namespace["BIG"] = namespace["BIG"].copy()  # rebound: seen
    assert S.function_entry(func)[0] != key


def test_submissions_while_another_thread_imports_numpy() -> None:
    """numpy is in sys.modules from the start of its import: a submission that asked it whether
    an argument is an array failed while a task imported numpy (``partially initialized module
    'numpy' has no attribute 'ndarray'``); it waits for the import now."""
    import subprocess

    program = (
        "import sys, hetflow\n"
        "assert 'numpy' not in sys.modules\n"
        "def uses_numpy():\n"
        "    import numpy\n"
        "    return int(numpy.arange(3).sum())\n"
        "def ident(x):\n"
        "    return x\n"
        "first = hetflow.task_submit.options(executor='thread')(uses_numpy)\n"
        "errors, futures = [], []\n"
        "while not first.done() or len(futures) < 100:\n"
        "    try:\n"
        "        futures.append(hetflow.submit(ident, [len(futures)]))\n"
        "    except Exception as error:\n"
        "        errors.append(f'{type(error).__name__}: {error}')\n"
        "assert first.result() == 3\n"
        "assert [f.result() for f in futures] == [[i] for i in range(len(futures))]\n"
        "print('errors', len(errors), errors[:1])\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "errors 0 []", done.stdout
