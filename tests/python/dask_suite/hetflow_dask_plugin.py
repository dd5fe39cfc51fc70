"""A pytest plugin for Dask's own test suites: hetflow.dask.get becomes the default scheduler
(``dask.config`` ``scheduler``) for every test, and the named single-threaded scheduler
("sync", "synchronous", "single-threaded") is hetflow too: dask.array's and dask.bag's
``assert_eq`` compute with ``scheduler="sync"``, so without it most of their tests would not run
a graph on hetflow at all. Tests that name the threaded or process scheduler keep Dask's own."""
import dask
import dask.base
import pytest

import hetflow
import hetflow.dask

SINGLE_THREADED = ("sync", "synchronous", "single-threaded")


def pytest_configure(config):
    hetflow.init(ncpus=2, nprocs=0)
    for name in SINGLE_THREADED:
        dask.base.named_schedulers[name] = hetflow.dask.get


def pytest_unconfigure(config):
    hetflow.shutdown()


@pytest.fixture(autouse=True)
def _hetflow_is_the_default_dask_scheduler():
    with dask.config.set(scheduler=hetflow.dask.get):
        yield
