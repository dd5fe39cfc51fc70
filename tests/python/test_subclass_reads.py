"""An ndarray subclass that a process task reads (by value) reaches it read-only, as its plain
arrays do: a write into it raises instead of changing a copy that never comes back."""
from __future__ import annotations

import numpy as np
import pytest

import hetflow
import hetflow.joblib as hetflow_joblib


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    hetflow.shutdown()


def _write_first(x):
    x[0] = 100
    return "wrote"


def _mask_first(x):
    x[0] = np.ma.masked
    return "masked"


def _same(x):
    return x


def _fill(x):
    x[...] = 7


SUBCLASSES = {
    "plain": lambda: np.arange(4.0),
    "matrix": lambda: np.matrix(np.arange(4.0)),
    "recarray": lambda: np.rec.fromarrays([np.arange(4.0)]).f0.view(np.recarray),
    "masked": lambda: np.ma.masked_array(np.arange(4.0), mask=[False, True, False, False]),
}


@pytest.mark.parametrize("kind", list(SUBCLASSES))
def test_a_process_task_cannot_write_an_array_it_reads_whatever_its_class(kind):
    hetflow.init(ncpus=2, executor="process")
    array = SUBCLASSES[kind]()
    with pytest.raises(ValueError, match="read-only"):
        hetflow.task_submit(_write_first, array).result(timeout=30)
    assert np.asarray(array).flat[0] == 0.0


def test_a_process_task_cannot_mask_a_masked_array_it_reads():
    hetflow.init(ncpus=2, executor="process")
    masked = np.ma.masked_array(np.arange(4.0), mask=[False, True, False, False])
    with pytest.raises(ValueError, match="read-only"):
        hetflow.task_submit(_mask_first, masked).result(timeout=30)


def test_a_subclass_a_process_task_read_and_returned_comes_back_to_change():
    hetflow.init(ncpus=2, executor="process")
    masked = np.ma.masked_array(np.arange(4.0), mask=[False, True, False, False])
    back = hetflow.task_submit(_same, masked).result(timeout=30)
    assert type(back) is np.ma.MaskedArray and back.mask.tolist() == [False, True, False, False]
    back[0] = 5.0
    back[2] = np.ma.masked
    matrix = hetflow.task_submit(_same, np.matrix(np.arange(4.0))).result(timeout=30)
    assert type(matrix) is np.matrix
    matrix[0, 0] = 5.0


def test_a_cut_call_cannot_fill_a_subclass_on_worker_processes_unseen():
    hetflow.init(ncpus=2, executor="process")
    matrix = np.matrix(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="read-only"):
        hetflow_joblib.Parallel(n_jobs=2, executor="process")(hetflow_joblib.delayed(_fill)(matrix))
    assert matrix.sum() == 0
