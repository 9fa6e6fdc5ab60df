"""triton_kernels.ffn against an fp64 PyTorch reference.

Without CUDA the epilogue kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1,
set by conftest.py); with CUDA they run compiled on the GPU.
"""
import math

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
from conftest import DEVICE  # noqa: E402
from triton_kernels.ffn import GEMMS, linear_activation, linear_residual_layer_norm  # noqa: E402

# max |error| relative to max |reference|; the GEMM output is rounded to the dtype once
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def exact_gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def random(*shape, dtype, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).to(device=DEVICE, dtype=dtype)


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype and actual.shape == expected.shape
    error = (actual.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * expected.abs().max().item(), f"max error {error:.3e}"


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("shape, out_features", [((1, 1, 64), 256), ((2, 7, 80), 320), ((2, 130, 128), 512),
                                                 ((3, 5, 24), 50)])
def test_linear_activation(shape, out_features, activation, dtype, gemm):
    """Both GEMMs; odd row counts, K not a multiple of the K tile (80, 24), N not a
    multiple of the N tile (50)."""
    in_features = shape[-1]
    x = random(*shape, dtype=dtype, seed=0)
    weight = random(out_features, in_features, dtype=dtype, seed=1, scale=in_features ** -0.5)
    bias = random(out_features, dtype=dtype, seed=2)
    out = linear_activation(x, weight, bias, activation, gemm=gemm)
    pre = x.double() @ weight.double().t() + bias.double()
    expected = exact_gelu(pre) if activation == "gelu" else pre.clamp_min(0)
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("gemm", GEMMS)
def test_gelu_is_exact_erf_form(gemm):
    """Distinguishes erf GELU from the tanh approximation (differs by up to ~5e-4)."""
    x = torch.linspace(-4, 4, 256, device=DEVICE, dtype=torch.float32)[:, None]
    identity = torch.eye(1, device=DEVICE)
    out = linear_activation(x, identity, torch.zeros(1, device=DEVICE), "gelu", gemm=gemm)
    assert (out.double() - exact_gelu(x.double())).abs().max() < 1e-6


def test_triton_gemm_on_strided_rows_and_no_rows():
    """x whose rows are strided views (a slice of a wider tensor), and an empty batch."""
    wide = random(37, 96, dtype=torch.float32, seed=11)
    x = wide[:, 16:80]  # (37, 64), row stride 96
    weight = random(40, 64, dtype=torch.float32, seed=12, scale=0.125)
    bias = random(40, dtype=torch.float32, seed=13)
    expected = exact_gelu(x.double() @ weight.double().t() + bias.double())
    assert_close(linear_activation(x, weight, bias, gemm="triton"), expected, torch.float32)
    empty = linear_activation(x[:0], weight, bias, gemm="triton")
    assert empty.shape == (0, 40)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 64), (3, 7, 80), (2, 130, 128)])
def test_linear_residual_layer_norm(shape, dtype):
    dim, hidden = shape[-1], 4 * shape[-1]
    x = random(*shape[:-1], hidden, dtype=dtype, seed=3)
    weight = random(dim, hidden, dtype=dtype, seed=4, scale=hidden ** -0.5)
    bias = random(dim, dtype=dtype, seed=5)
    residual = random(*shape, dtype=dtype, seed=6)
    ln_weight = random(dim, dtype=dtype, seed=7)
    ln_bias = random(dim, dtype=dtype, seed=8)
    row_mask = torch.ones(shape[:-1], device=DEVICE, dtype=dtype)
    row_mask[0, -1] = 0
    out = linear_residual_layer_norm(x, weight, bias, residual, ln_weight, ln_bias, 1e-12, row_mask=row_mask)
    total = residual.double() + x.double() @ weight.double().t() + bias.double()
    expected = torch.nn.functional.layer_norm(total, (dim,), ln_weight.double(), ln_bias.double(), 1e-12)
    expected = expected * row_mask.double()[..., None]
    assert_close(out, expected, dtype)
    assert (out[0, -1] == 0).all()


def test_rejects_bad_inputs():
    x = random(2, 8, dtype=torch.float32, seed=9)
    weight, bias = random(16, 8, dtype=torch.float32, seed=10), torch.zeros(16, device=DEVICE)
    with pytest.raises(ValueError, match="activation"):
        linear_activation(x, weight, bias, "tanh")
    with pytest.raises(ValueError, match="gemm"):
        linear_activation(x, weight, bias, gemm="cutlass")
    with pytest.raises(ValueError, match="weight"):
        linear_activation(x, weight.t(), bias)
    with pytest.raises(ValueError, match="bias"):
        linear_activation(x, weight, bias[:3])
    with pytest.raises(TypeError, match="dtype"):
        linear_activation(x, weight.half(), bias)
    with pytest.raises(ValueError, match="residual"):
        linear_residual_layer_norm(x, weight, bias, torch.zeros(2, 3, device=DEVICE),
                                   torch.ones(16, device=DEVICE), torch.zeros(16, device=DEVICE), 1e-5)
