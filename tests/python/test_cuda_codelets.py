"""Codelets with CUDA implementations over CuPy arrays, on a GPU: they skip, saying why, on a
machine without a GPU, CuPy or hetflow's CUDA module, and run on one (scripts/gpu-check.sh).
The last one checks, where there is no GPU, that a GPU-only codelet is refused with the reason."""
import numpy as np
import pytest

import hetflow


def _gpu_or_skip():
    try:
        from hetflow import _hetflow_cuda
    except ImportError as error:
        pytest.skip(f"hetflow was built without its CUDA module: {error}")
    if _hetflow_cuda.device_count() == 0:
        pytest.skip("no CUDA GPU on this machine")
    pytest.importorskip("cupy", reason="CuPy (hetflow[cuda]) is not installed")


ran_on = []


def scale_cpu(x, factor):
    ran_on.append("cpu")
    x *= factor


def scale_cuda(x, factor):
    ran_on.append("cuda")
    x *= factor  # a CuPy kernel on the worker's stream


def gemm_cpu(c, a, b):
    ran_on.append("cpu")
    c += a @ b


def gemm_cuda(c, a, b):
    import cupy

    ran_on.append("cuda")
    c += cupy.matmul(a, b)


scale = hetflow.Codelet("scale", cpu=scale_cpu, cuda=scale_cuda)
gemm = hetflow.Codelet("gemm", cpu=gemm_cpu, cuda=gemm_cuda)


@pytest.fixture
def runtime():
    _gpu_or_skip()
    ran_on.clear()
    session = hetflow.init(ncpus=2, executor="thread", cuda=True)
    yield session.runtime
    hetflow.shutdown()


def test_runtime_has_a_cuda_worker_and_defaults_to_dmdas(runtime):
    assert "cuda" in runtime.worker_archs()
    assert runtime._engine.scheduler_name() == "dmdas"


def test_gpu_then_host_then_gpu_each_sees_the_last_write(runtime):
    a = np.arange(1 << 16, dtype=np.float64)
    hetflow.insert(scale, hetflow.RW(a), 2.0, where="cuda")
    hetflow.insert(scale, hetflow.RW(a), 3.0, where="cpu")
    hetflow.insert(scale, hetflow.RW(a), 5.0, where="cuda").result()
    np.testing.assert_array_equal(a, np.arange(1 << 16) * 30.0)
    assert ran_on == ["cuda", "cpu", "cuda"]


def test_tiled_gemm_on_the_gpu_matches_numpy(runtime):
    rng = np.random.default_rng(3)
    tiles, size = 3, 256
    a = [[rng.standard_normal((size, size)) for _ in range(tiles)] for _ in range(tiles)]
    b = [[rng.standard_normal((size, size)) for _ in range(tiles)] for _ in range(tiles)]
    c = [[np.zeros((size, size)) for _ in range(tiles)] for _ in range(tiles)]
    for i in range(tiles):
        for j in range(tiles):
            for k in range(tiles):
                hetflow.insert(gemm, hetflow.RW(c[i][j]), a[i][k], b[k][j], where="cuda")
    hetflow.wait_for_all()
    expected = np.block(a) @ np.block(b)
    np.testing.assert_allclose(np.block(c), expected, rtol=1e-10, atol=1e-10)


def test_mixed_placement_chosen_by_dmdas_is_right(runtime):
    arrays = [np.full(4096, float(i)) for i in range(32)]
    for x in arrays:
        hetflow.insert(scale, hetflow.RW(x), 2.0)
        hetflow.insert(scale, hetflow.RW(x), 3.0)
    hetflow.wait_for_all()
    for i, x in enumerate(arrays):
        np.testing.assert_array_equal(x, np.full(4096, 6.0 * i))


def test_eviction_under_a_small_gpu_limit_keeps_every_result(monkeypatch):
    _gpu_or_skip()
    monkeypatch.setenv("HETFLOW_MEMORY_LIMITS", "1:4M")  # 8 arrays of 1 MB fit; 24 do not
    hetflow.init(ncpus=1, executor="thread", cuda=True)
    try:
        arrays = [np.full(1 << 17, float(i)) for i in range(24)]
        for _ in range(3):
            for x in arrays:
                hetflow.insert(scale, hetflow.RW(x), 2.0, where="cuda")
        hetflow.wait_for_all()
        for i, x in enumerate(arrays):
            np.testing.assert_array_equal(x, np.full(1 << 17, 8.0 * i))
    finally:
        hetflow.shutdown()


def test_an_error_in_a_cuda_implementation_fails_its_task_and_dependents_only(runtime):
    def broken(x):
        raise RuntimeError("launch refused")

    a = np.ones(64)
    first = hetflow.insert(hetflow.Codelet("broken", cuda=broken), hetflow.RW(a))
    after = hetflow.insert(scale, hetflow.RW(a), 2.0, where="cuda")
    with pytest.raises(RuntimeError, match="launch refused"):
        first.result()
    with pytest.raises(hetflow.DependencyError):
        after.result()
    b = np.ones(64)
    hetflow.insert(scale, hetflow.RW(b), 2.0, where="cuda").result()
    np.testing.assert_array_equal(b, np.full(64, 2.0))


def test_without_a_gpu_a_cuda_only_codelet_is_refused_with_the_reason():
    try:
        from hetflow import _hetflow_cuda
    except ImportError as error:
        with pytest.raises(ImportError, match="no cuda driver"):
            hetflow.init(cuda=True)
        pytest.skip(f"(checked the error of a build without CUDA) {error}")
    if _hetflow_cuda.device_count() > 0:
        pytest.skip("a GPU is present: the other tests of this file run on it")
    hetflow.init(ncpus=1, executor="thread", cuda=True)
    try:
        assert "cuda" not in hetflow._runtime.current().worker_archs()
        with pytest.raises(ValueError, match=r"only on cuda workers and the runtime has none"):
            hetflow.insert(hetflow.Codelet("gpu_only", cuda=scale_cuda), hetflow.RW(np.ones(4)), 2.0)
        a = np.ones(4)
        hetflow.insert(scale, hetflow.RW(a), 2.0).result()  # the cpu implementation runs instead
        np.testing.assert_array_equal(a, np.full(4, 2.0))
    finally:
        hetflow.shutdown()
