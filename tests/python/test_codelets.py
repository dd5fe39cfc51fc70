"""Codelets with CPU and OpenCL implementations (hetflow.Codelet, hetflow.insert), on PoCL's CPU
device: mixed graphs, data coherent between host and device, eviction, failures, bad input.

pyopencl and an OpenCL platform are optional dependencies; with HETFLOW_TEST_REQUIRE_OPENCL=1
(as `make test` sets it) their absence fails these tests instead of skipping them."""
import gc
import time

import numpy as np
import pytest

import hetflow
from hf_opencl import opencl_or_skip

SCALE_SOURCE = """
__kernel void scale(__global double *x, double factor) {
    size_t i = get_global_id(0);
    x[i] *= factor;
}
"""

ran_on = []


def scale_cpu(x, factor):
    ran_on.append("cpu")
    x *= factor


def scale_opencl(x, factor):
    ran_on.append("opencl")
    hetflow.opencl_kernel(x, SCALE_SOURCE, "scale")(x.queue, (x.size,), None, x.data, np.float64(factor))


def add_opencl(y, x):
    ran_on.append("opencl")
    y += x  # pyopencl.array arithmetic, enqueued on the worker's queue


def add_cpu(y, x):
    ran_on.append("cpu")
    y += x


scale = hetflow.Codelet("scale", cpu=scale_cpu, opencl=scale_opencl)
scale_device_only = hetflow.Codelet("scale_device", opencl=scale_opencl)
add = hetflow.Codelet("add", cpu=add_cpu, opencl=add_opencl)


@pytest.fixture
def runtime():
    opencl_or_skip()
    ran_on.clear()
    session = hetflow.init(ncpus=2, executor="thread", opencl="all")
    yield session.runtime
    hetflow.shutdown()


def test_runtime_has_an_opencl_worker_and_defaults_to_dmdas(runtime):
    session = hetflow.Session(runtime)
    assert "opencl" in session.worker_kinds
    assert session.scheduler == "dmdas"


def test_device_then_host_then_device_each_sees_the_last_write(runtime):
    a = np.arange(1000, dtype=np.float64)
    hetflow.insert(scale, hetflow.RW(a), 2.0, where="opencl")
    hetflow.insert(scale, hetflow.RW(a), 3.0, where="cpu")  # must read the device's result
    last = hetflow.insert(scale, hetflow.RW(a), 5.0, where="opencl")  # must read the host's
    last.result()  # brings the array home
    np.testing.assert_array_equal(a, np.arange(1000) * 30.0)
    assert ran_on == ["opencl", "cpu", "opencl"]


def test_plain_thread_tasks_and_codelets_share_arrays(runtime):
    a = np.ones(256)
    b = np.zeros(256)

    def fill(out, value):
        out[:] = value

    hetflow.submit(fill, hetflow.W(b), 4.0)  # a plain Python task writes b on the host
    hetflow.insert(add, hetflow.RW(a), b, where="opencl")  # a += b on the device
    total = hetflow.submit(np.sum, a)  # a plain task reads a: must see the device's write
    assert total.result() == 256 * 5.0
    hetflow.insert(scale, hetflow.RW(b), 0.5, where="opencl")
    hetflow.wait_for_all()  # brings b home too
    np.testing.assert_array_equal(b, np.full(256, 2.0))


def test_process_tasks_see_device_writes(runtime):
    a = np.arange(64, dtype=np.float64)
    hetflow.insert(scale, hetflow.RW(a), 3.0, where="opencl")
    assert hetflow.task_submit.options(executor="process")(np.sum, a).result() == 3.0 * 63 * 64 / 2


def test_wait_for_all_brings_home_what_a_device_wrote_through_a_temporary_view(runtime):
    a = np.ones(1000)
    b = np.ones(1000)
    hetflow.insert(scale, hetflow.RW(a[:500]), 2.0, where="opencl")  # the view is gone at once
    hetflow.insert(scale, hetflow.RW(b[500:]), 3.0, where="opencl")
    gc.collect()
    hetflow.wait_for_all()
    np.testing.assert_array_equal(a, np.r_[np.full(500, 2.0), np.ones(500)])
    np.testing.assert_array_equal(b, np.r_[np.ones(500), np.full(500, 3.0)])


def test_wait_for_all_while_holding_an_array_a_device_wrote(runtime):
    a = np.ones(1000)
    scaled = hetflow.insert(scale, hetflow.RW(a), 2.0, where="opencl")
    deadline = time.monotonic() + 30
    while not scaled.done() and time.monotonic() < deadline:
        time.sleep(0.01)  # done() brings nothing home: the write stays on the device
    with hetflow.acquire(a, "RW") as view:
        view[0] = 9.0
        assert hetflow.wait_for_all(timeout=30)  # it hung: bringing the array home waited for this hold
    np.testing.assert_array_equal(a, np.r_[9.0, np.full(999, 2.0)])


def test_a_long_chain_alternating_sides_gives_the_exact_result(runtime):
    a = np.ones(4096)
    expected = np.ones(4096)
    rng = np.random.default_rng(7)
    for step in range(40):
        where = "opencl" if rng.random() < 0.5 else "cpu"
        factor = float(rng.integers(1, 3))
        hetflow.insert(scale, hetflow.RW(a), factor, where=where, name=f"step {step}")
        expected *= factor
    hetflow.wait_for_all()
    np.testing.assert_array_equal(a, expected)


def test_the_scheduler_chooses_when_not_forced_and_results_are_right(runtime):
    arrays = [np.full(512, float(i)) for i in range(16)]
    futures = [hetflow.insert(scale, hetflow.RW(x), 2.0) for x in arrays]
    for future in futures:
        future.result()
    for i, x in enumerate(arrays):
        np.testing.assert_array_equal(x, np.full(512, 2.0 * i))
    assert set(ran_on) <= {"cpu", "opencl"} and len(ran_on) == 16


def test_eviction_under_a_small_device_limit_keeps_every_result():
    opencl_or_skip()
    hetflow.init(ncpus=1, executor="thread", opencl="all", memory_limits={1: 64 << 10})  # 8 arrays of 8K fit
    try:
        arrays = [np.full(1024, float(i)) for i in range(24)]
        for _ in range(3):
            for x in arrays:
                hetflow.insert(scale, hetflow.RW(x), 2.0, where="opencl")
        hetflow.wait_for_all()
        for i, x in enumerate(arrays):
            np.testing.assert_array_equal(x, np.full(1024, 8.0 * i))
    finally:
        hetflow.shutdown()


def test_an_error_in_a_device_implementation_fails_its_task_and_dependents_only(runtime):
    def broken(x):
        raise ValueError("bad kernel arguments")

    failing = hetflow.Codelet("broken", opencl=broken)
    a = np.ones(32)
    first = hetflow.insert(failing, hetflow.RW(a), where="opencl")
    after = hetflow.insert(scale, hetflow.RW(a), 2.0, where="opencl")
    with pytest.raises(ValueError, match="bad kernel arguments"):
        first.result()
    with pytest.raises(hetflow.DependencyError):
        after.result()
    b = np.ones(32)
    hetflow.insert(scale, hetflow.RW(b), 2.0, where="opencl").result()
    np.testing.assert_array_equal(b, np.full(32, 2.0))


def test_a_kernel_that_does_not_build_fails_its_task_with_the_build_log(runtime):
    def bad_source(x):
        hetflow.opencl_program(x, "__kernel void k(__global double *x) { x[0] = undefined_name; }")

    with pytest.raises(Exception, match="undefined_name|build"):
        hetflow.insert(hetflow.Codelet("bad", opencl=bad_source), hetflow.RW(np.ones(4))).result()


def test_a_kernel_that_does_not_build_is_named_and_the_data_stay_coherent(runtime):
    # pyopencl's build error gave the log but not which kernel of the task's was asked for.
    import pyopencl

    broken = "__kernel void broken_k(__global double *x) { x[0] = undefined_q; }"

    def broken_opencl(x, factor):
        hetflow.opencl_kernel(x, broken, "broken_k")(x.queue, (x.size,), None, x.data)

    bad = hetflow.Codelet("bad scale", cpu=scale_cpu, opencl=broken_opencl)
    a = np.ones(64)
    first = hetflow.insert(scale, hetflow.RW(a), 2.0, where="cpu")
    on_device = hetflow.insert(scale, hetflow.RW(a), 3.0, where="opencl")
    failed = hetflow.insert(bad, hetflow.RW(a), 5.0, where="opencl")
    after = hetflow.insert(scale, hetflow.RW(a), 7.0, where="cpu")
    first.result(timeout=60)
    on_device.result(timeout=60)
    with pytest.raises(pyopencl.RuntimeError, match=r"(?s)kernel 'broken_k' does not build.*undefined_q"):
        failed.result(timeout=60)
    with pytest.raises(hetflow.DependencyError, match="broken_k"):
        after.result(timeout=60)
    with hetflow.acquire(a, "R") as view:  # the device's version before the failure
        np.testing.assert_array_equal(view, np.full(64, 6.0))
    hetflow.insert(scale, hetflow.RW(a), 2.0, where="opencl").result(timeout=60)
    np.testing.assert_array_equal(a, np.full(64, 12.0))


def test_views_and_overlapping_arrays_run_on_the_host(runtime):
    a = np.arange(100, dtype=np.float64)
    hetflow.insert(scale, hetflow.RW(a[::2]), 2.0).result()  # not contiguous: host only
    whole = np.arange(16, dtype=np.float64)
    hetflow.submit(np.sum, whole[:8]).result()  # a view of `whole` in use
    hetflow.insert(scale, hetflow.RW(whole), 3.0).result()  # overlaps it: host only
    assert ran_on == ["cpu", "cpu"]
    expected = np.arange(100, dtype=np.float64)
    expected[::2] *= 2
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(whole, np.arange(16) * 3.0)
    with pytest.raises(ValueError, match="contiguous"):
        hetflow.insert(scale_device_only, hetflow.RW(a[::2]), 2.0)


def test_futures_as_arguments_pass_their_values(runtime):
    factor = hetflow.submit(lambda: 4.0)
    a = np.ones(8)
    hetflow.insert(scale, hetflow.RW(a), factor, where="opencl").result()
    np.testing.assert_array_equal(a, np.full(8, 4.0))


def test_bad_input_is_refused_with_a_clear_error(runtime):
    with pytest.raises(ValueError, match="no cuda implementation"):
        hetflow.insert(scale, hetflow.RW(np.ones(4)), 2.0, where="cuda")
    with pytest.raises(ValueError, match="where must be"):
        hetflow.insert(scale, hetflow.RW(np.ones(4)), 2.0, where="gpu")
    with pytest.raises(TypeError, match="only numpy arrays"):
        hetflow.insert(scale, hetflow.RW([1.0, 2.0]), 2.0)
    with pytest.raises(TypeError, match="hetflow.Codelet first"):
        hetflow.insert(scale_cpu, np.ones(4))
    with pytest.raises(ValueError, match="at least one implementation"):
        hetflow.Codelet("empty")
    with pytest.raises(TypeError, match="must be callable"):
        hetflow.Codelet("x", cpu=3)


def test_a_device_only_codelet_without_such_workers_is_refused():
    hetflow.init(ncpus=1, executor="thread", opencl=False, cuda=False)
    try:
        with pytest.raises(ValueError, match=r"only on opencl workers and the runtime has none.*opencl=True"):
            hetflow.insert(scale_device_only, hetflow.RW(np.ones(4)), 2.0)
        a = np.ones(4)
        hetflow.insert(scale, hetflow.RW(a), 2.0).result()  # the cpu implementation runs
        np.testing.assert_array_equal(a, np.full(4, 2.0))
    finally:
        hetflow.shutdown()


def test_bad_device_settings_are_refused():
    with pytest.raises(ValueError, match="opencl must be"):
        hetflow.init(opencl="gpu")
    with pytest.raises(ValueError, match="cuda must be"):
        hetflow.init(cuda="yes")
    with pytest.raises(ValueError, match="not a device memory node"):
        hetflow.init(memory_limits={0: 1 << 20})
    with pytest.raises(ValueError, match="positive number of bytes"):
        hetflow.init(memory_limits={1: "64M"})


def test_a_program_build_inside_a_task_is_left_out_of_its_model(runtime, monkeypatch):
    import uuid

    import pyopencl

    from hetflow import perfmodel

    real_build = pyopencl.Program.build

    def slow_build(self, *args, **kwargs):
        time.sleep(2.0)  # a build far longer than the task itself
        return real_build(self, *args, **kwargs)

    monkeypatch.setattr(pyopencl.Program, "build", slow_build)
    tag = uuid.uuid4().hex
    source = SCALE_SOURCE + f"// {tag}\n"

    def scale_fresh(x, factor):
        program = hetflow.opencl_program(x, source)
        pyopencl.Kernel(program, "scale")(x.queue, (x.size,), None, x.data, np.float64(factor))

    codelet = hetflow.Codelet("fresh", opencl=scale_fresh, model=f"build_left_out_{tag}")
    a = np.ones(1024)
    started = time.perf_counter()
    hetflow.insert(codelet, hetflow.RW(a), 2.0, where="opencl").result()
    assert time.perf_counter() - started >= 2.0  # the build did happen inside the task
    np.testing.assert_array_equal(a, np.full(1024, 2.0))
    recorded = [entry for entry in perfmodel.entries(f"build_left_out_{tag}") if entry["arch"] == "opencl"]
    assert recorded and recorded[0]["count"] == 1
    assert recorded[0]["max"] < 1.0, recorded  # the task's own time, without the 2 s build


def test_acquire_brings_a_device_write_home(runtime):
    a = np.arange(32, dtype=np.float64)
    hetflow.insert(scale, hetflow.RW(a), 2.0, where="opencl")  # no result(), no wait
    with hetflow.acquire(a, "R") as view:
        np.testing.assert_array_equal(view, np.arange(32) * 2.0)


def test_codelet_futures_passed_to_tasks_do_not_wait_inside_them(runtime):
    b = np.ones(16)
    made = hetflow.insert(hetflow.Codelet("value", cpu=lambda x: 3.0), b, where="cpu")
    hetflow.insert(scale, hetflow.RW(b), made, where="opencl").result()
    np.testing.assert_array_equal(b, np.full(16, 3.0))
    total = hetflow.submit(lambda f, x: f + x.sum(), made, b)  # a thread task gets the value
    assert total.result() == 3.0 + 48.0


# -- host writes between waits ----------------------------------------------------------------------
# A program may write its arrays directly once it has waited (result(), wait_for_all(), done(), a
# callback, concurrent.futures.wait): a device's copy made before then must not stand for them.


def _two_waits(kind, future):
    if kind == "result":
        future.result()
    elif kind == "wait_for_all":
        hetflow.wait_for_all()
    elif kind == "done":
        while not future.done():
            time.sleep(0.001)
    elif kind == "concurrent.futures.wait":
        import concurrent.futures

        concurrent.futures.wait([future])
    elif kind == "callback":
        import threading

        called = threading.Event()
        future.add_done_callback(lambda _: called.set())
        assert called.wait(30)


@pytest.mark.parametrize("kind", ["result", "wait_for_all", "done", "concurrent.futures.wait", "callback"])
def test_a_host_write_after_a_wait_reaches_the_next_device_task(runtime, kind):
    data = np.ones(128)
    out = np.zeros(128)
    for step in range(1, 4):
        data[:] = step  # an input written on the host: its copy on the device is out of date
        future = hetflow.insert(add, hetflow.RW(out), data, where="opencl")
        _two_waits(kind, future)
        hetflow.wait_for_all()  # brings out home
        np.testing.assert_array_equal(out, np.full(128, step * (step + 1) / 2))
    written = np.ones(64)
    for step in range(3):  # an array the device writes, rewritten on the host each time
        future = hetflow.insert(scale, hetflow.RW(written), 2.0, where="opencl")
        _two_waits(kind, future)
        hetflow.wait_for_all()
        np.testing.assert_array_equal(written, np.full(64, 2.0))
        written[:] = 1.0


def _uploads(trace_path):
    import json

    events = json.loads(trace_path.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    return sum(1 for e in events if e.get("cat") == "transfer" and e["args"].get("from") == "host")


@pytest.mark.parametrize("read_only", [True, False])
def test_a_read_only_array_stays_on_the_device_across_waits(tmp_path, read_only):
    opencl_or_skip()
    trace = tmp_path / "trace.json"
    hetflow.init(ncpus=2, executor="thread", opencl="all", trace=str(trace))
    try:
        constant = np.arange(256, dtype=np.float64)
        constant.setflags(write=not read_only)  # read-only: numpy's word that it does not change
        out = np.zeros(256)
        for _ in range(3):
            hetflow.insert(add, hetflow.RW(out), constant, where="opencl").result()
        np.testing.assert_array_equal(out, 3 * np.arange(256.0))
    finally:
        hetflow.shutdown()
    # `out` goes up at each task (brought home by each result(), which the program may write
    # after); `constant` once if read-only, else after each wait too.
    assert _uploads(trace) == (4 if read_only else 6)


# The start of the child scripts with device tasks: a codelet `scale(x, f)` (x *= f) on OpenCL only.
_SCALE_ON_DEVICE_SCRIPT = """
import numpy as np, hetflow

SOURCE = "__kernel void scale(__global double *x, double f) { x[get_global_id(0)] *= f; }"

def scale_opencl(x, f):
    hetflow.opencl_kernel(x, SOURCE, "scale")(x.queue, (x.size,), None, x.data, np.float64(f))

scale = hetflow.Codelet("scale", opencl=scale_opencl)
"""


@pytest.mark.parametrize("limit", [None, 1 << 20])
def test_arrays_dropped_with_their_futures_while_devices_write_them_are_let_go_safely(tmp_path, limit):
    # The array (and its memory) goes while the device still writes it: the device's version must
    # not be copied into the freed memory (it corrupted the heap). In a child: a crash is its own.
    from hf_subprocess import run_script

    opencl_or_skip()
    rc, out, err = run_script(
        tmp_path,
        f"LIMIT = {limit!r}\n"
        + _SCALE_ON_DEVICE_SCRIPT
        + """
hetflow.init(ncpus=1, executor="thread", opencl="all", **({"memory_limits": {1: LIMIT}} if LIMIT else {}))
for _ in range(300):
    a = np.ones(20000)
    hetflow.insert(scale, hetflow.RW(a), 2.0, where="opencl")  # the future is dropped too
    del a
hetflow.wait_for_all()
kept = np.ones(16)
hetflow.insert(scale, hetflow.RW(kept), 3.0, where="opencl").result()
print("KEPT", kept[0])
""",
    )
    assert rc == 0, err
    assert "KEPT 3.0" in out, out


def test_a_memmap_that_device_tasks_write_reaches_its_file_when_the_program_exits_without_waiting(tmp_path):
    # The interpreter waits for the work at exit, but weakref.finalize's exit handler (which runs
    # before hetflow's) first told the engine that every array was gone: the device's result was
    # never copied home, and the file kept the old values.
    from hf_subprocess import run_script

    opencl_or_skip()
    path = tmp_path / "out.bin"
    rc, out, err = run_script(
        tmp_path,
        f"PATH = {str(path)!r}\n"
        + _SCALE_ON_DEVICE_SCRIPT
        + """
hetflow.init(ncpus=1, executor="thread", opencl="all")
m = np.memmap(PATH, dtype=np.float64, mode="w+", shape=(1024,))
m[:] = 1.0
for _ in range(3):
    hetflow.insert(scale, hetflow.RW(m), 2.0, where="opencl")
""",
    )
    assert rc == 0, err
    assert np.fromfile(path).tolist() == [8.0] * 1024


def test_wait_for_all_brings_home_an_array_at_the_address_of_a_freed_one(runtime):
    # The write noted for the freed array (same address, same view key) hid the new one's.
    for _ in range(5):
        a = np.ones(1024)
        hetflow.insert(scale_device_only, hetflow.RW(a), 2.0).result(timeout=60)
        del a
        b = np.ones(1024)
        hetflow.insert(scale_device_only, hetflow.RW(b), 3.0)
        hetflow.wait_for_all()
        np.testing.assert_array_equal(b, np.full(1024, 3.0))
        del b


def scale_on_the_device_and_read(b):
    hetflow.insert(scale_device_only, hetflow.RW(b), 3.0).result(timeout=60)
    return b.tolist()


def test_result_inside_a_thread_task_brings_the_device_write_home(runtime):
    b = np.ones(4)  # not the task's argument: the task reads it after the codelet's result()
    outer = hetflow.task_submit.options(executor="thread")(lambda: scale_on_the_device_and_read(b))
    assert outer.result(timeout=60) == [3.0] * 4  # it read the host's stale copy


def test_an_array_of_python_objects_stays_on_the_host(runtime):
    # A device kernel wrote over the object pointers: the process crashed.
    objects = np.array(["x", "y"], dtype=object)
    with pytest.raises(ValueError, match="holds Python objects"):
        hetflow.insert(scale_device_only, hetflow.RW(objects), 2.0)
    assert objects.tolist() == ["x", "y"]


def test_exception_of_a_codelet_future_brings_the_device_write_home(runtime):
    # `if f.exception() is None:` then reading the array read the host's stale copy.
    a = np.ones(8)
    future = hetflow.insert(scale_device_only, hetflow.RW(a), 4.0)
    assert future.exception(timeout=60) is None
    np.testing.assert_array_equal(a, np.full(8, 4.0))


def test_a_kernel_name_the_program_lacks_is_refused_naming_its_kernels(runtime):
    import pyopencl

    context = pyopencl.create_some_context(interactive=False)
    with pytest.raises(ValueError, match=r"no kernel 'scal'; its kernels: scale"):
        hetflow.opencl_kernel(context, SCALE_SOURCE, "scal")


def test_chunks_of_a_long_lived_array_let_go_keep_what_the_device_wrote(runtime):
    # Chunks left unused are let go while the array lives (their latest data brought home), and a
    # chunk met again before it went is the same view: it may still run on the device.
    chunk, count = 16, 1500
    a = np.ones(chunk * count)
    for i in range(count):
        future = hetflow.insert(scale_device_only, hetflow.RW(a[i * chunk : (i + 1) * chunk]), 2.0)
        if i % 50 == 49:
            future.result()
    for i in range(0, count, 2):
        hetflow.insert(scale_device_only, hetflow.RW(a[i * chunk : (i + 1) * chunk]), 3.0)
    hetflow.wait_for_all()
    expected = np.full(chunk * count, 2.0)
    for i in range(0, count, 2):
        expected[i * chunk : (i + 1) * chunk] *= 3.0
    np.testing.assert_array_equal(a, expected)
    root = runtime.handles._root_of(a)
    assert len(root.views) + len(root.resting) < count


@pytest.mark.parametrize("then", ["result", "exception", "result after a new init"])
def test_a_codelet_future_read_after_shutdown_gives_its_value(then):
    # A codelet that writes an array and could run on a device brings it home at result(); once
    # the runtime stopped (which brought everything home), result() registered the array anew with
    # the stopped engine: RuntimeError "the runtime has been shut down", for a task that succeeded.
    hetflow.init(ncpus=2, executor="thread")
    a = np.ones(8)
    future = hetflow.insert(scale, hetflow.RW(a), 2.0)  # cpu and opencl implementations
    hetflow.shutdown()
    try:
        if then == "result after a new init":
            hetflow.init(ncpus=1, executor="thread")
        if then == "exception":
            assert future.exception(timeout=10) is None
        else:
            assert future.result(timeout=10) is None
        np.testing.assert_array_equal(a, np.full(8, 2.0))
    finally:
        hetflow.shutdown()


async def _increment_async(x):
    x += 1


def test_an_async_implementation_is_refused_and_a_returned_coroutine_fails_the_task():
    # Its call only makes a coroutine: the task succeeded without changing the array (a
    # RuntimeWarning "never awaited" aside), where hetflow.submit refuses an async function.
    with pytest.raises(TypeError, match=r"Codelet 'inc': cpu: .*is an async function"):
        hetflow.Codelet("inc", cpu=_increment_async)
    with pytest.raises(TypeError, match=r"Codelet 'inc': opencl: .*is an async function"):
        hetflow.Codelet("inc", cpu=add_cpu, opencl=_increment_async)
    with hetflow.init(ncpus=2, executor="thread"):
        a = np.zeros(4)
        codelet = hetflow.Codelet("inc", cpu=lambda x: _increment_async(x))
        future = hetflow.insert(codelet, hetflow.RW(a))
        with pytest.raises(TypeError, match="returned a coroutine"):
            future.result(timeout=10)


def test_a_name_that_is_not_a_str_is_refused_at_insert():
    with hetflow.init(ncpus=1, executor="thread"):
        with pytest.raises(TypeError, match=r"hetflow.insert: name must be a str .* not int"):
            hetflow.insert(scale, hetflow.RW(np.ones(2)), 2.0, name=5)


def test_futures_inside_lists_and_dicts_are_waited_for_and_give_their_values():
    # As for a thread task: the codelet ran at once and got the Future objects themselves.
    def slow(value):
        time.sleep(0.2)
        return value

    def add_all(y, pair, named):
        y += pair[0] + pair[1][0] + named["k"]

    codelet = hetflow.Codelet("add_all", cpu=add_all, opencl=add_all)
    with hetflow.init(ncpus=2, executor="thread"):
        a = np.zeros(3)
        first = hetflow.submit(slow, 1.0)
        pair = [first, (hetflow.submit(slow, 2.0),)]
        hetflow.insert(codelet, hetflow.RW(a), pair, {"k": first}).result(timeout=30)
        np.testing.assert_array_equal(a, np.full(3, 4.0))
        assert isinstance(pair[0], hetflow.Future)  # the caller's list is left as it was
        failing = hetflow.insert(codelet, hetflow.RW(np.zeros(3)), [hetflow.submit(lambda: 1 / 0), (1,)], {"k": 1})
        with pytest.raises(hetflow.DependencyError, match="ZeroDivisionError"):
            failing.result(timeout=30)
        with pytest.raises(TypeError, match=r"argument 1, at \[0\], is an access mark \(hetflow.RW"):
            hetflow.insert(codelet, hetflow.RW(a), [hetflow.RW(np.zeros(3))], {})


def test_a_codelets_implementations_cannot_change_once_made():
    # A runtime registers a codelet's implementations at its first insert and keeps them: one set
    # afterwards was refused by the engine ("implementations for cpu only"), one removed ran all
    # the same where the scheduler chose it, and one set to a non-callable failed only as it ran.
    codelet = hetflow.Codelet("fixed", cpu=add_cpu)
    for attribute, value in [("opencl", add_opencl), ("cpu", None), ("cpu", 5), ("name", "other"), ("model", "m")]:
        with pytest.raises(AttributeError, match=f"its {attribute} cannot change once it is made"):
            setattr(codelet, attribute, value)
    with pytest.raises(AttributeError, match="cannot be deleted"):
        del codelet.cpu
    assert codelet.archs == ("cpu",) and codelet.name == "fixed"
    codelet.note = "a program's own attribute"  # others are free
