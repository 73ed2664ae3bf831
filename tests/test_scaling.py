"""The moment buffers' power-of-two rescaling (lrkit.methods.scaling)."""

from __future__ import annotations

import pytest
import torch

from lrkit.methods.scaling import multiply_by_power_of_two_


@pytest.mark.parametrize(
    ("dtype", "exponent"),
    [
        (torch.float16, 22),  # 2^22 is inf in float16: must go in smaller factors
        (torch.float16, -22),
        (torch.bfloat16, 100),
        (torch.float32, -150),
        (torch.float64, 500),
    ],
)
def test_multiply_by_power_of_two_is_exact_in_every_dtype(dtype, exponent):
    info = torch.finfo(dtype)
    # values whose product stays normal in the dtype, so the result is exact
    middle = 2.0 ** (-exponent // 2)
    values = torch.tensor([1.0, 1.5, -3.25], dtype=torch.float64) * middle
    tensors = [values.to(dtype), values.to(dtype).clone()]
    assert all(torch.isfinite(t).all() and t.abs().min() >= info.tiny for t in tensors)
    expected = torch.ldexp(values.to(dtype).double(), torch.tensor(exponent)).to(dtype)
    multiply_by_power_of_two_(tensors, exponent)
    for tensor in tensors:
        assert torch.equal(tensor, expected)


def test_mixed_dtypes_are_each_scaled_in_their_own_range():
    tensors = [torch.full((2,), 3.7e-4, dtype=torch.float16), torch.full((2,), 3.7e-4)]
    multiply_by_power_of_two_(tensors, 22)
    assert torch.equal(tensors[0], torch.full((2,), 3.7e-4, dtype=torch.float16) * 2.0**22)
    assert torch.isfinite(tensors[0]).all()
    assert torch.equal(tensors[1], torch.full((2,), 3.7e-4) * 2.0**22)
