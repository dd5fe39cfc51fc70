"""The OpenCL check of the tests that run codelets on PoCL's CPU device. Not a test module.

pyopencl and an OpenCL platform are optional dependencies; with HETFLOW_TEST_REQUIRE_OPENCL=1
(as `make test` sets it) their absence fails these tests instead of skipping them."""
import os

import pytest


def opencl_or_skip() -> None:
    """Skips the calling test where OpenCL is unusable (fails it where it is required)."""
    try:
        import pyopencl

        platforms = pyopencl.get_platforms()
        from hetflow import _hetflow_opencl  # noqa: F401
    except Exception as error:  # ImportError, or pyopencl's LogicError without a platform
        if os.environ.get("HETFLOW_TEST_REQUIRE_OPENCL") == "1":
            pytest.fail(f"OpenCL is required here (HETFLOW_TEST_REQUIRE_OPENCL=1) but unusable: {error}")
        pytest.skip(f"no usable OpenCL (pyopencl, a platform, hetflow's OpenCL module): {error}")
    if not platforms:
        pytest.skip("no OpenCL platform")
