"""triton_kernels.layer_norm against an fp64 PyTorch reference.

Without CUDA the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set
by conftest.py); with CUDA it runs compiled on the GPU.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
from xlm_fast.triton_kernels.layer_norm import add_layer_norm  # noqa: E402

from conftest import DEVICE  # noqa: E402

# max |error| relative to max |reference|: one rounding of the output to the dtype
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def reference_add_layer_norm(x, residual, weight, bias, eps, residual_bias=None, row_mask=None):
    total = x.double()
    if residual is not None:
        total = total + residual.double()
    if residual_bias is not None:
        total = total + residual_bias.double()
    y = torch.nn.functional.layer_norm(total, total.shape[-1:], weight.double(), bias.double(), eps)
    if row_mask is not None:
        y = y * row_mask.double().reshape(y.shape[:-1])[..., None]
    return y


def random(*shape, dtype, seed, scale=1.0, offset=0.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale + offset).to(device=DEVICE, dtype=dtype)


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype and actual.shape == expected.shape
    error = (actual.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * expected.abs().max().item(), f"max error {error:.3e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 64), (2, 7, 80), (3, 130, 256), (5, 100)])
def test_residual_bias_and_mask(shape, dtype):
    x = random(*shape, dtype=dtype, seed=0, offset=3.0)  # a large mean: tests the centering
    residual = random(*shape, dtype=dtype, seed=1)
    weight = random(shape[-1], dtype=dtype, seed=2, scale=0.5, offset=1.0)
    bias = random(shape[-1], dtype=dtype, seed=3)
    residual_bias = random(shape[-1], dtype=dtype, seed=4)
    generator = torch.Generator().manual_seed(5)
    row_mask = (torch.rand(shape[:-1], generator=generator) > 0.3).to(device=DEVICE, dtype=dtype)
    if row_mask.dim() == 2:
        row_mask[-1] = 0  # a batch row of padding only
    out = add_layer_norm(x, residual, weight, bias, 1e-12, residual_bias=residual_bias, row_mask=row_mask)
    expected = reference_add_layer_norm(x, residual, weight, bias, 1e-12, residual_bias, row_mask)
    assert_close(out, expected, dtype)
    assert (out[row_mask == 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_without_optional_inputs(dtype):
    x = random(4, 9, 96, dtype=dtype, seed=6)
    weight = random(96, dtype=dtype, seed=7)
    bias = random(96, dtype=dtype, seed=8)
    assert_close(add_layer_norm(x, None, weight, bias, 1e-5), reference_add_layer_norm(x, None, weight, bias, 1e-5),
                 dtype)


def test_bool_mask_and_strided_input():
    """A bool (batch, seq) mask, and x / residual as non-contiguous views."""
    wide = random(2, 11, 2 * 48, dtype=torch.float32, seed=9)
    x, residual = wide[..., :48], wide[..., 48:]
    weight, bias = random(48, dtype=torch.float32, seed=10), random(48, dtype=torch.float32, seed=11)
    keep = torch.arange(11, device=DEVICE)[None, :] < torch.tensor([[11], [4]], device=DEVICE)
    out = add_layer_norm(x, residual, weight, bias, 1e-12, row_mask=keep)
    assert_close(out, reference_add_layer_norm(x, residual, weight, bias, 1e-12, row_mask=keep), torch.float32)


def test_rejects_bad_inputs():
    x = random(2, 3, 8, dtype=torch.float32, seed=12)
    weight = bias = torch.ones(8, device=DEVICE)
    with pytest.raises(ValueError, match="residual"):
        add_layer_norm(x, x[:, :2], weight, bias, 1e-5)
    with pytest.raises(ValueError, match="weight"):
        add_layer_norm(x, None, torch.ones(7, device=DEVICE), bias, 1e-5)
    with pytest.raises(ValueError, match="row_mask"):
        add_layer_norm(x, None, weight, bias, 1e-5, row_mask=torch.ones(5, device=DEVICE))
    with pytest.raises(ValueError, match="eps"):
        add_layer_norm(x, None, weight, bias, 0.0)
    with pytest.raises(TypeError, match="x"):
        add_layer_norm(x.long(), None, weight, bias, 1e-5)
