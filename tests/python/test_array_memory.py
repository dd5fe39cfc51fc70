"""Arrays over memory the program did not get from numpy's allocator: file mappings
(``numpy.memmap``, ``mmap``), ``bytes``/``bytearray``, ctypes and ``SharedMemory`` buffers, as task
data of thread and process tasks: writes reach the file, read-only ones are refused saying why, and
two mappings of one file are pointed out."""
from __future__ import annotations

import ctypes
import mmap
import warnings

import numpy as np
import pytest

import hetflow
from hf_opencl import opencl_or_skip

EXECUTORS = ["thread", "process"]


@pytest.fixture(autouse=True)
def fresh_runtime():
    yield
    hetflow.shutdown()


def add(a, k):
    a += k


def total(a):
    return float(np.asarray(a).sum())


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_memmap_writes_reach_the_file_and_copy_on_write_ones_do_not(tmp_path, executor):
    path = tmp_path / "data.f8"
    np.zeros((20, 30)).tofile(path)
    submit = hetflow.task_submit.options(executor=executor)
    m = np.memmap(path, dtype=np.float64, mode="r+", shape=(20, 30))
    want = np.zeros((20, 30))
    futures = [submit(add, hetflow.RW(m), 1)]
    want += 1
    for i in range(5):  # disjoint column blocks, then a strided view and a transposed one
        futures.append(submit(add, hetflow.RW(m[:, i * 6 : (i + 1) * 6]), i))
        want[:, i * 6 : (i + 1) * 6] += i
    futures.append(submit(add, hetflow.RW(m[::3, 1::2]), 10))
    want[::3, 1::2] += 10
    futures.append(submit(add, hetflow.RW(m.T[4:9]), 100))
    want.T[4:9] += 100
    for future in futures:
        future.result()
    m.flush()
    np.testing.assert_array_equal(np.fromfile(path).reshape(20, 30), want)
    del m  # else the one below, whose unwritten pages show m's writes, is warned of
    private = np.memmap(path, dtype=np.float64, mode="c", shape=(20, 30))
    submit(add, hetflow.RW(private), 1).result()
    np.testing.assert_array_equal(private, want + 1)
    np.testing.assert_array_equal(np.fromfile(path).reshape(20, 30), want)  # the file as it was
    assert submit(total, np.memmap(path, dtype=np.float64, mode="r")).result() == want.sum()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_arrays_over_foreign_buffers_are_written_in_place(executor):
    submit = hetflow.task_submit.options(executor=executor)
    anonymous = mmap.mmap(-1, 800)
    raw = bytearray(801)
    c_doubles = (ctypes.c_double * 100)()
    arrays = [
        np.frombuffer(anonymous, dtype=np.float64),
        np.frombuffer(raw, dtype=np.float64, offset=1),  # misaligned
        np.ctypeslib.as_array(c_doubles),
    ]
    futures = [submit(add, hetflow.RW(a if i % 2 else a[::-1]), 1) for a in arrays for i in range(4)]
    for future in futures:
        future.result()
    for a in arrays:
        np.testing.assert_array_equal(a, np.full(100, 4.0))
    np.testing.assert_array_equal(np.frombuffer(c_doubles), np.full(100, 4.0))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_read_only_memmap_written_is_refused_naming_the_mode_to_open_it_with(tmp_path, executor):
    path = tmp_path / "data.f8"
    np.zeros(10).tofile(path)
    submit = hetflow.task_submit.options(executor=executor)
    read_only = np.memmap(path, dtype=np.float64, mode="r")
    for mark in (hetflow.RW, hetflow.W):
        with pytest.raises(ValueError, match=r"numpy.memmap\(mode='r'\).*mode='r\+'.*mode='c'"):
            submit(add, mark(read_only[2:5]), 1)
    with pytest.raises(ValueError, match=r"read-only bytes object.*bytearray"):
        submit(add, hetflow.RW(np.frombuffer(bytes(80))), 1)
    with pytest.raises(ValueError, match=r"writeable flag is off.*numpy.array\(a\)"):
        submit(add, hetflow.RW(np.broadcast_to(np.zeros(1), (3,))), 1)
    frozen = np.memmap(path, dtype=np.float64, mode="c")  # over a writeable mapping
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"writeable flag is off"):
        submit(add, hetflow.RW(frozen), 1)
    with pytest.raises(ValueError, match=r"mode 'R'.*numpy.memmap\(mode='r'\)"):
        hetflow.acquire(read_only)
    assert submit(total, read_only).result() == 0.0  # read: fine


def test_two_memmaps_of_one_file_are_pointed_out_when_one_writes(tmp_path):
    path = tmp_path / "data.f8"
    np.zeros(100).tofile(path)
    first = np.memmap(path, dtype=np.float64, mode="r+")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hetflow.submit(add, hetflow.RW(first), 1).result()
        hetflow.submit(add, hetflow.RW(first[10:]), 1).result()  # views of one memmap: fine
        readers = [np.memmap(path, dtype=np.float64, mode="r", offset=400) for _ in range(2)]
        second_reader = readers[1]
        del first
        hetflow.submit(total, readers[0]).result()
        hetflow.submit(total, second_reader).result()  # two read-only mappings: fine
    writer = np.memmap(path, dtype=np.float64, mode="r+", shape=(60,))
    with pytest.warns(RuntimeWarning, match=r"maps bytes 0 to 480 of .*data.f8.*map the file once"):
        hetflow.submit(add, hetflow.RW(writer), 1).result()


def test_a_process_task_array_larger_than_memory_is_refused_not_copied(monkeypatch, tmp_path):
    """A process task's array outside shared memory is copied into shared memory: one larger
    than the machine's memory and swap (a memmap of a big file) is refused, not left to the
    out-of-memory killer. The machine is made small here; views that fit, shared arrays and
    thread tasks go on."""
    from hetflow import _data

    path = tmp_path / "big.f8"
    np.ones(1 << 18).tofile(path)  # 2 MiB
    mapped = np.memmap(path, dtype=np.float64, mode="r")
    shared = hetflow.zeros(1 << 18)
    monkeypatch.setattr(_data, "_COPY_CHECKED_ABOVE", 0)
    monkeypatch.setattr(_data, "_memory_and_swap", lambda: 1 << 20)
    process = hetflow.task_submit.options(executor="process")
    with pytest.raises(MemoryError, match=r"numpy.memmap of .*big.f8.*views of it that fit.*executor='thread'"):
        process(total, mapped)
    with pytest.raises(MemoryError, match="more than this machine's memory"):
        hetflow.map(total, [mapped], executor="process")
    assert process(total, mapped[: 1 << 16]).result() == 1 << 16
    assert process(total, shared).result() == 0.0
    assert hetflow.task_submit.options(executor="thread")(total, mapped).result() == 1 << 18


def _sum_cpu(x):
    return float(x.sum())


def _sum_opencl(x):
    return float(x.get().sum())


def test_a_device_reads_a_read_only_memmap_again_after_its_file_changed(tmp_path):
    """A read-only array the program cannot change is kept on a device across waits; a file that
    a memmap of mode 'r' maps changes when written (another program, another mapping), so the
    device copies it again after the program waits, as it does a writeable array."""
    opencl_or_skip()
    path = tmp_path / "data.f8"
    np.zeros(1000).tofile(path)
    hetflow.init(ncpus=1, executor="thread", opencl="all")
    total_codelet = hetflow.Codelet("memory_total", cpu=_sum_cpu, opencl=_sum_opencl)
    mapped = np.memmap(path, dtype=np.float64, mode="r")
    for value in (1.0, 2.0, 3.0):
        with open(path, "r+b") as file:  # the file written behind the mapping
            file.write(np.full(1000, value).tobytes())
        assert hetflow.insert(total_codelet, mapped, where="opencl").result() == 1000 * value
