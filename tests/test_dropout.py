"""The dropout stream of the fused kernels (triton_kernels/dropout.py): seeds from torch's
generator, the keep mask as a function of (seed, row-major offset), the check of p.
The kernels' own tests compare each kernel's dropped values with keep_mask."""
import math

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton path cannot be tested")
from xlm_fast.triton_kernels import dropout  # noqa: E402

from conftest import DEVICE  # noqa: E402


def test_philox_seed_follows_torch_manual_seed():
    torch.manual_seed(3)
    first, second = dropout.philox_seed(), dropout.philox_seed()
    torch.manual_seed(3)
    assert dropout.philox_seed() == first
    assert second != first
    assert all(0 <= seed < dropout.SEED_RANGE for seed in (first, second))
    generator = torch.Generator().manual_seed(3)
    assert dropout.philox_seed(generator) == first  # the default generator, seeded alike


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_one_minus_p(p):
    """Fraction kept within 5 binomial standard deviations; neighbouring offsets
    uncorrelated (the correlation of a +-1 coding within 5 / sqrt(n))."""
    mask = dropout.keep_mask(12345, (257, 1031), p, DEVICE).cpu()
    n = mask.numel()
    assert abs(mask.double().mean().item() - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n)
    signs = mask.flatten().double() * 2 - 1
    centred = signs - signs.mean()
    correlation = (centred[1:] * centred[:-1]).mean() / centred.square().mean()
    assert abs(correlation.item()) <= 5 / math.sqrt(n)


def test_keep_mask_is_a_function_of_seed_and_row_major_offset():
    whole = dropout.keep_mask(7, (6, 50), 0.5, DEVICE)
    assert torch.equal(dropout.keep_mask(7, (6, 50), 0.5, DEVICE), whole)
    assert torch.equal(dropout.keep_mask(7, (300,), 0.5, DEVICE), whole.flatten())
    assert torch.equal(dropout.keep_mask(7, (3, 50), 0.5, DEVICE), whole[:3])  # a prefix of the offsets
    assert not torch.equal(dropout.keep_mask(8, (6, 50), 0.5, DEVICE), whole)
    assert dropout.keep_mask(7, (6, 50), 0.0, DEVICE).all()


@pytest.mark.parametrize("p", [0, 0.0, 0.25, 0.999])
def test_check_dropout_p_accepts_zero_to_below_one(p):
    assert dropout.check_dropout_p("dropout_p", p) == float(p)
    assert isinstance(dropout.check_dropout_p("dropout_p", p), float)


@pytest.mark.parametrize("p", [1.0, 1, -0.1, float("nan"), True, "0.1", None])
def test_check_dropout_p_names_the_argument(p):
    with pytest.raises(ValueError, match="attention_dropout_p must be a float in"):
        dropout.check_dropout_p("attention_dropout_p", p)
