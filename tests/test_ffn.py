"""triton_kernels.ffn against an fp64 PyTorch reference.

Without CUDA the epilogue kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1,
set by conftest.py); with CUDA they run compiled on the GPU.
"""
import math

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
import xlm_fast.triton_kernels.ffn as ffn  # noqa: E402
from xlm_fast.triton_kernels._utils import tma_supported  # noqa: E402
from xlm_fast.triton_kernels.dropout import keep_mask, philox_seed  # noqa: E402
from xlm_fast.triton_kernels.ffn import (  # noqa: E402
    GEMMS,
    feed_forward_residual_layer_norm,
    linear_activation,
    linear_residual_layer_norm,
)

from conftest import DEVICE  # noqa: E402

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


# "triton-pointers": the Triton GEMM with TMA switched off (pre-Hopper GPUs, unaligned rows)
GEMM_VARIANTS = GEMMS + ("triton-pointers",)


def gemm_variant(name, monkeypatch):
    """The `gemm=` argument for a variant name, switching TMA off for triton-pointers."""
    if name == "triton-pointers":
        monkeypatch.setattr(ffn, "_tma_eligible", lambda *tensors: False)
        return "triton"
    return name


@pytest.mark.parametrize("variant", GEMM_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("shape, out_features", [((1, 1, 64), 256), ((2, 7, 80), 320), ((2, 130, 128), 512),
                                                 ((3, 5, 24), 56), ((3, 5, 24), 50)])
def test_linear_activation(shape, out_features, activation, dtype, variant, monkeypatch):
    """Every GEMM; odd row counts, K not a multiple of the K tile (80, 24), N not a
    multiple of the N tile (56, 50; 50 rows are not 16-byte aligned, so no TMA)."""
    gemm = gemm_variant(variant, monkeypatch)
    in_features = shape[-1]
    x = random(*shape, dtype=dtype, seed=0)
    weight = random(out_features, in_features, dtype=dtype, seed=1, scale=in_features ** -0.5)
    bias = random(out_features, dtype=dtype, seed=2)
    out = linear_activation(x, weight, bias, activation, gemm=gemm)
    pre = x.double() @ weight.double().t() + bias.double()
    expected = exact_gelu(pre) if activation == "gelu" else pre.clamp_min(0)
    assert_close(out, expected, dtype)


def test_tma_is_used_for_aligned_16_bit_rows_only():
    """The TMA kernel takes 16-bit tensors with 16-byte aligned rows (the interpreter
    stands in for Hopper); fp32 and unaligned rows take the pointer kernel."""
    aligned = torch.zeros(4, 64, dtype=torch.bfloat16, device=DEVICE)
    supported = tma_supported(aligned.device)
    assert ffn._tma_eligible(aligned, aligned) == supported
    assert not ffn._tma_eligible(aligned.float(), aligned.float())
    assert ffn._tma_eligible(aligned[:, :9], aligned) == supported  # 9 columns of 128-byte rows
    assert not ffn._tma_eligible(aligned.view(-1)[:36].view(4, 9), aligned)  # 18-byte rows
    assert not ffn._tma_eligible(aligned.view(-1)[1:65].view(1, 64), aligned)  # base off by 2 bytes


@pytest.mark.parametrize("gemm", GEMMS)
def test_gelu_is_exact_erf_form(gemm):
    """Distinguishes erf GELU from the tanh approximation (differs by up to ~5e-4)."""
    x = torch.linspace(-4, 4, 256, device=DEVICE, dtype=torch.float32)[:, None]
    identity = torch.eye(1, device=DEVICE)
    out = linear_activation(x, identity, torch.zeros(1, device=DEVICE), "gelu", gemm=gemm)
    assert (out.double() - exact_gelu(x.double())).abs().max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_gemm_on_strided_rows_and_no_rows(dtype):
    """x whose rows are strided views (a slice of a wider tensor), and an empty batch."""
    wide = random(37, 96, dtype=dtype, seed=11)
    x = wide[:, 16:80]  # (37, 64), row stride 96
    weight = random(40, 64, dtype=dtype, seed=12, scale=0.125)
    bias = random(40, dtype=dtype, seed=13)
    expected = exact_gelu(x.double() @ weight.double().t() + bias.double())
    assert_close(linear_activation(x, weight, bias, gemm="triton"), expected, dtype)
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
    with pytest.raises(ValueError, match="dropout_p"):
        linear_residual_layer_norm(x, weight, bias, torch.zeros(2, 16, device=DEVICE),
                                   torch.ones(16, device=DEVICE), torch.zeros(16, device=DEVICE), 1e-5, dropout_p=1.0)


# ---- backward ----------------------------------------------------------------------
# Gradients meet the forward's TOLERANCE: the saved GEMM output, dpre and each backward
# GEMM's output are each rounded to the dtype once; the rest is fp32.
def leaves(*tensors):
    return [t.detach().requires_grad_() for t in tensors]


def linear_inputs(rows_shape, in_features, out_features, dtype, seed):
    x = random(*rows_shape, in_features, dtype=dtype, seed=seed)
    weight = random(out_features, in_features, dtype=dtype, seed=seed + 1, scale=in_features ** -0.5)
    bias = random(out_features, dtype=dtype, seed=seed + 2)
    return x, weight, bias


def activation_grad_out(x, weight, bias, activation, seed):
    """A random dh, zero where |x @ W^T + b| is within 4 units of roundoff of its terms'
    magnitude: there the sign, and so ReLU's derivative, is decided by how the GEMM
    output rounds (differently in the reference), not by the inputs."""
    grad_out = random(*x.shape[:-1], weight.shape[0], dtype=x.dtype, seed=seed)
    if activation == "relu":
        pre = x.double() @ weight.double().t() + bias.double()
        magnitude = x.double().abs() @ weight.double().abs().t() + bias.double().abs()
        grad_out[pre.abs() <= 2 * torch.finfo(x.dtype).eps * magnitude] = 0
    return grad_out


def reference_linear_grads(x, weight, bias, activation, grad_out, requires):
    """fp64 autograd gradients of act(x @ W^T + b) for the inputs flagged in `requires`."""
    inputs = [t.detach().double().requires_grad_(flag) for t, flag in zip((x, weight, bias), requires)]
    pre = inputs[0] @ inputs[1].t() + inputs[2]
    out = exact_gelu(pre) if activation == "gelu" else pre.clamp_min(0)
    return torch.autograd.grad(out, [t for t in inputs if t.requires_grad], grad_out.double())


@pytest.mark.parametrize("variant", GEMM_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_linear_activation_backward(activation, dtype, variant, monkeypatch):
    """dx, dW, db of every GEMM; the grad-enabled forward equals the inference one bit for bit."""
    gemm = gemm_variant(variant, monkeypatch)
    x, weight, bias = linear_inputs((2, 7), 80, 96, dtype, seed=20)
    grad_out = activation_grad_out(x, weight, bias, activation, seed=23)
    inputs = leaves(x, weight, bias)
    out = linear_activation(*inputs, activation, gemm=gemm)
    with torch.no_grad():
        assert torch.equal(out, linear_activation(x, weight, bias, activation, gemm=gemm))
    grads = torch.autograd.grad(out, inputs, grad_out)
    for grad, expected in zip(grads, reference_linear_grads(x, weight, bias, activation, grad_out, (True, True, True))):
        assert_close(grad, expected, dtype)


@pytest.mark.parametrize("variant", GEMM_VARIANTS)
@pytest.mark.parametrize("rows_shape, in_features, out_features", [((1,), 64, 32), ((2, 65), 24, 50)])
def test_linear_activation_backward_shapes(rows_shape, in_features, out_features, variant, monkeypatch):
    """A single row; 130 rows with K (24) and N (50, rows not 16-byte aligned) off the tiles."""
    gemm = gemm_variant(variant, monkeypatch)
    x, weight, bias = linear_inputs(rows_shape, in_features, out_features, torch.float32, seed=30)
    grad_out = activation_grad_out(x, weight, bias, "gelu", seed=33)
    inputs = leaves(x, weight, bias)
    grads = torch.autograd.grad(linear_activation(*inputs, gemm=gemm), inputs, grad_out)
    for grad, expected in zip(grads, reference_linear_grads(x, weight, bias, "gelu", grad_out, (True, True, True))):
        assert_close(grad, expected, torch.float32)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("requires", [(True, False, False), (False, True, True)])
def test_linear_activation_backward_of_some_inputs(requires, gemm):
    """Only the inputs that require grad get one (a frozen layer: weight and bias only)."""
    x, weight, bias = linear_inputs((7,), 40, 24, torch.float32, seed=40)
    grad_out = activation_grad_out(x, weight, bias, "gelu", seed=43)
    inputs = [t.detach().requires_grad_(flag) for t, flag in zip((x, weight, bias), requires)]
    wanted = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(linear_activation(*inputs, gemm=gemm), wanted, grad_out)
    for grad, expected in zip(grads, reference_linear_grads(x, weight, bias, "gelu", grad_out, requires)):
        assert_close(grad, expected, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_residual_layer_norm_backward(dtype):
    """End to end through torch.matmul's and add_layer_norm's autograd, a masked row included."""
    dim, hidden = 48, 192
    x, weight, bias = linear_inputs((2, 7), hidden, dim, dtype, seed=50)
    residual = random(2, 7, dim, dtype=dtype, seed=53)
    ln_weight, ln_bias = random(dim, dtype=dtype, seed=54), random(dim, dtype=dtype, seed=55)
    row_mask = torch.ones(2, 7, device=DEVICE, dtype=dtype)
    row_mask[1, -2:] = 0
    grad_out = random(2, 7, dim, dtype=dtype, seed=56)
    tensors = (x, weight, bias, residual, ln_weight, ln_bias)
    inputs = leaves(*tensors)
    out = linear_residual_layer_norm(*inputs, 1e-12, row_mask=row_mask)
    grads = torch.autograd.grad(out, inputs, grad_out)

    ref = [t.detach().double().requires_grad_() for t in tensors]
    total = ref[3] + ref[0] @ ref[1].t() + ref[2]
    expected = torch.nn.functional.layer_norm(total, (dim,), ref[4], ref[5], 1e-12) * row_mask.double()[..., None]
    for grad, expected_grad in zip(grads, torch.autograd.grad(expected, ref, grad_out.double())):
        assert_close(grad, expected_grad, dtype)
    assert (grads[0][1, -2:] == 0).all() and (grads[3][1, -2:] == 0).all()


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_linear_residual_layer_norm_dropout(p):
    """XLM's LN(residual + dropout(x @ W^T + b)) * row_mask: the projection with its bias
    is dropped, the residual stream is not; output and every gradient against fp64."""
    dim, hidden = 48, 192
    x, weight, bias = linear_inputs((2, 7), hidden, dim, torch.float32, seed=60)
    residual = random(2, 7, dim, dtype=torch.float32, seed=63)
    ln_weight, ln_bias = random(dim, dtype=torch.float32, seed=64), random(dim, dtype=torch.float32, seed=65)
    row_mask = torch.ones(2, 7, device=DEVICE)
    row_mask[1] = 0  # a batch row of padding only
    grad_out = random(2, 7, dim, dtype=torch.float32, seed=66)
    tensors = (x, weight, bias, residual, ln_weight, ln_bias)
    inputs = leaves(*tensors)
    torch.manual_seed(67)
    keep = keep_mask(philox_seed(), (2, 7, dim), p, DEVICE)
    torch.manual_seed(67)
    out = linear_residual_layer_norm(*inputs, 1e-12, row_mask=row_mask, dropout_p=p)
    grads = torch.autograd.grad(out, inputs, grad_out)

    ref = [t.detach().double().requires_grad_() for t in tensors]
    total = ref[3] + (ref[0] @ ref[1].t() + ref[2]) * keep / (1 - p)
    expected = torch.nn.functional.layer_norm(total, (dim,), ref[4], ref[5], 1e-12) * row_mask.double()[..., None]
    assert_close(out, expected.detach(), torch.float32)
    for grad, expected_grad in zip(grads, torch.autograd.grad(expected, ref, grad_out.double())):
        assert_close(grad, expected_grad, torch.float32)


def feed_forward_inputs(dtype, seed, dim=48, hidden=192):
    """x (= the residual, as in XLM's layer) (2, 7, dim), lin1, lin2 and LN parameters."""
    x, weight1, bias1 = linear_inputs((2, 7), dim, hidden, dtype, seed)
    _, weight2, bias2 = linear_inputs((1,), hidden, dim, dtype, seed + 3)
    ln_weight, ln_bias = random(dim, dtype=dtype, seed=seed + 6), random(dim, dtype=dtype, seed=seed + 7)
    return x, weight1, bias1, weight2, bias2, ln_weight, ln_bias


def feed_forward(inputs, activation, gemm, row_mask, dropout_p=0.0):
    x, weight1, bias1, weight2, bias2, ln_weight, ln_bias = inputs
    return feed_forward_residual_layer_norm(x, weight1, bias1, weight2, bias2, x, ln_weight, ln_bias, 1e-12,
                                            activation, row_mask=row_mask, dropout_p=dropout_p, gemm=gemm)


@pytest.mark.parametrize("variant", GEMM_VARIANTS)
# ReLU in fp32 only: in 16 bits some of lin1's outputs round to the other sign than in
# fp64, which flips their derivative (activation_grad_out)
@pytest.mark.parametrize("activation, dropout_p, dtype", [
    ("gelu", 0.0, torch.float32), ("gelu", 0.0, torch.bfloat16), ("relu", 0.0, torch.float32),
    ("gelu", 0.2, torch.float32), ("gelu", 0.2, torch.bfloat16)])
def test_feed_forward_residual_layer_norm(activation, dropout_p, dtype, variant, monkeypatch):
    """Output and the gradients of all seven inputs against fp64 (dropout's mask from
    keep_mask); a padding row; with gradients, the output equals the inference one and
    the chained linear_activation + linear_residual_layer_norm bit for bit."""
    gemm = gemm_variant(variant, monkeypatch)
    tensors = feed_forward_inputs(dtype, seed=70)
    row_mask = torch.ones(2, 7, device=DEVICE, dtype=dtype)
    row_mask[1, -2:] = 0
    grad_out = random(2, 7, 48, dtype=dtype, seed=79)
    inputs = leaves(*tensors)
    torch.manual_seed(80)
    out = feed_forward(inputs, activation, gemm, row_mask, dropout_p)
    torch.manual_seed(80)
    with torch.no_grad():
        assert torch.equal(out, feed_forward(tensors, activation, gemm, row_mask, dropout_p))
    torch.manual_seed(80)
    x, weight1, bias1, weight2, bias2, ln_weight, ln_bias = tensors
    hidden = linear_activation(x, weight1, bias1, activation, gemm=gemm)
    assert torch.equal(out, linear_residual_layer_norm(hidden, weight2, bias2, x, ln_weight, ln_bias, 1e-12,
                                                       row_mask=row_mask, dropout_p=dropout_p))
    torch.manual_seed(80)
    keep = keep_mask(philox_seed(), (2, 7, 48), dropout_p, DEVICE) if dropout_p else 1.0
    grads = torch.autograd.grad(out, inputs, grad_out)

    ref = [t.detach().double().requires_grad_() for t in tensors]
    pre = ref[0] @ ref[1].t() + ref[2]
    hidden = exact_gelu(pre) if activation == "gelu" else pre.clamp_min(0)
    total = ref[0] + (hidden @ ref[3].t() + ref[4]) * keep / (1 - dropout_p)
    expected = torch.nn.functional.layer_norm(total, (48,), ref[5], ref[6], 1e-12) * row_mask.double()[..., None]
    assert_close(out, expected.detach(), dtype)
    for grad, expected_grad in zip(grads, torch.autograd.grad(expected, ref, grad_out.double())):
        assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("gemm", GEMMS)
def test_feed_forward_keeps_one_hidden_sized_tensor(gemm):
    """The backward keeps lin1's GEMM output but not the activation, which the chained
    calls (and eager PyTorch) keep too; frozen lin2 weights still get no gradient."""
    tensors = feed_forward_inputs(torch.float32, seed=90)
    row_mask = torch.ones(2, 7, device=DEVICE)

    def hidden_sized_saved(run):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            run()
        return sum(n == 2 * 7 * 192 for n in saved)

    inputs = leaves(*tensors)
    assert hidden_sized_saved(lambda: feed_forward(inputs, "gelu", gemm, row_mask)) == 1

    def chained():
        x, weight1, bias1, weight2, bias2, ln_weight, ln_bias = inputs
        hidden = linear_activation(x, weight1, bias1, gemm=gemm)
        linear_residual_layer_norm(hidden, weight2, bias2, x, ln_weight, ln_bias, 1e-12, row_mask=row_mask)
    assert hidden_sized_saved(chained) == 2

    frozen = [t.detach().requires_grad_(i != 3) for i, t in enumerate(tensors)]
    grads = torch.autograd.grad(feed_forward(frozen, "gelu", gemm, row_mask).sum(),
                                [t for t in frozen if t.requires_grad])
    assert len(grads) == 6 and frozen[3].grad is None


def test_feed_forward_rejects_bad_inputs():
    x, weight1, bias1, weight2, bias2, ln_weight, ln_bias = feed_forward_inputs(torch.float32, seed=95)

    def call(**changes):
        arguments = dict(x=x, weight1=weight1, bias1=bias1, weight2=weight2, bias2=bias2, residual=x,
                         ln_weight=ln_weight, ln_bias=ln_bias, eps=1e-12)
        return feed_forward_residual_layer_norm(**dict(arguments, **changes))
    with pytest.raises(ValueError, match="weight1"):
        call(weight1=weight1.t())
    with pytest.raises(ValueError, match="weight2"):
        call(weight2=weight2.t())
    with pytest.raises(ValueError, match="bias2"):
        call(bias2=bias2[:3])
    with pytest.raises(TypeError, match="weight2"):
        call(weight2=weight2.double())
    with pytest.raises(ValueError, match="activation"):
        call(activation="tanh")
    with pytest.raises(ValueError, match="gemm"):
        call(gemm="cutlass")
