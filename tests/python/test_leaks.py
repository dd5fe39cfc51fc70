"""Resources a long-running program (a service, a notebook, a parameter sweep) must not
accumulate as it repeats the same work: memory, threads, descriptors."""
import ctypes
import os
import threading

import pytest

import hetflow
from hetflow import _hetflow


def _malloc_in_use() -> int:
    """Bytes malloc hands out now (glibc's mallinfo2), else the resident set in bytes."""
    try:
        libc = ctypes.CDLL(None)

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                "fordblks", "keepcost")]

        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd
    except (OSError, AttributeError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("no measure of memory in use")


def _add(a, b):
    return a + b


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HETFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("HETFLOW_CALIBRATE", raising=False)
    hetflow.shutdown()
    _hetflow.perfmodel_reset()
    yield tmp_path
    hetflow.shutdown()
    _hetflow.perfmodel_reset()


def _runtimes_with_new_symbols(first: int, runtimes: int, per_runtime: int) -> None:
    for r in range(runtimes):
        hetflow.init(executor="thread", ncpus=2)
        for i in range(per_runtime):
            symbol = f"leak_{first + r * per_runtime + i}"
            hetflow.task_submit.options(perfmodel=symbol, executor="thread")(_add, 1, 2)
        hetflow.shutdown()


def test_models_of_past_runtimes_are_not_kept_in_memory(home):
    # Each performance model symbol (one per job, per parameter of a sweep) stayed in the
    # process's memory for good, about 2 KB each, across every later runtime: 1200 symbols kept
    # about 2.6 MB. Saved at shutdown, they live on in their files.
    _runtimes_with_new_symbols(0, 2, 100)  # warm-up: the allocator's own tables
    before = _malloc_in_use()
    _runtimes_with_new_symbols(1000, 4, 300)
    grown = _malloc_in_use() - before
    assert grown < 1_000_000, f"{grown} bytes more in use after 1200 more models were saved"
    # What they learned is still there, read back from their files.
    (entry,) = _hetflow.perfmodel_entries("leak_2199")
    assert entry["count"] == 1
    assert len(list((home / "perfmodels").glob("leak_*.model"))) == 1400
