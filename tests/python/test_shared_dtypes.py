"""hetflow.zeros / ones hold what numpy's do, also for dtypes whose items hold references."""
from __future__ import annotations

import numpy as np
import pytest

import hetflow


@pytest.mark.parametrize("dtype", [np.dtypes.StringDType(), object, [("a", "O", (2,)), ("b", "i4")]])
@pytest.mark.parametrize("order", ["C", "F"])
def test_zeros_and_ones_of_reference_dtypes_hold_what_numpys_do(dtype, order):
    for ours, theirs in ((hetflow.zeros, np.zeros), (hetflow.ones, np.ones)):
        made, expected = ours((2, 3), dtype=dtype, order=order), theirs((2, 3), dtype=dtype, order=order)
        assert made.dtype == expected.dtype
        assert repr(made.tolist()) == repr(expected.tolist()), (ours.__name__, dtype)
