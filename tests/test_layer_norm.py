"""triton_kernels.layer_norm against an fp64 PyTorch reference.

Without CUDA the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set
by conftest.py); with CUDA it runs compiled on the GPU.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
from xlm_fast.triton_kernels import layer_norm  # noqa: E402
from xlm_fast.triton_kernels.dropout import keep_mask, philox_seed  # noqa: E402
from xlm_fast.triton_kernels.layer_norm import add_layer_norm  # noqa: E402

from conftest import DEVICE  # noqa: E402

# max |error| relative to max |reference|: one rounding of the output to the dtype
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def reference_add_layer_norm(x, residual, weight, bias, eps, residual_bias=None, row_mask=None, dropout=None):
    """dropout: (keep mask shaped like x, p): XLM's dropout of the branch residual + residual_bias."""
    branch = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    if residual is not None:
        branch = branch + residual.double()
    if residual_bias is not None:
        branch = branch + residual_bias.double()
    if dropout is not None:
        keep, p = dropout
        branch = branch * keep.reshape(x.shape) / (1 - p)
    total = x.double() + branch
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


# ---- backward ----------------------------------------------------------------------
# The gradients are computed in fp32 from the dtype's inputs and rounded to the dtype
# once (dweight / dbias / dresidual_bias: fp32 column sums, then one rounding), so they
# meet the forward's TOLERANCE against fp64 autograd of the reference.
INPUT_NAMES = ("x", "residual", "residual_bias", "weight", "bias")


def backward_inputs(shape, dtype, seed, with_residual=True, with_residual_bias=True, with_row_mask=True):
    """Leaf tensors {name: tensor or None} for add_layer_norm (row_mask: 0 / 1, its first
    row kept and its last row masked when there are several), and a non-contiguous dy."""
    dim = shape[-1]
    inputs = dict(
        x=random(*shape, dtype=dtype, seed=seed, offset=3.0),
        residual=random(*shape, dtype=dtype, seed=seed + 1) if with_residual else None,
        residual_bias=random(dim, dtype=dtype, seed=seed + 2) if with_residual_bias else None,
        weight=random(dim, dtype=dtype, seed=seed + 3, scale=0.5, offset=1.0),
        bias=random(dim, dtype=dtype, seed=seed + 4),
    )
    row_mask = None
    if with_row_mask:
        generator = torch.Generator().manual_seed(seed + 5)
        row_mask = (torch.rand(shape[:-1], generator=generator) > 0.3).to(device=DEVICE, dtype=dtype)
        row_mask.view(-1)[-1] = 0
        row_mask.view(-1)[0] = 1
    grad_out = random(*shape[:-1], 2 * dim, dtype=dtype, seed=seed + 6)[..., ::2]  # a strided view
    return inputs, row_mask, grad_out


def reference_grads(inputs, row_mask, grad_out, eps, names, dropout=None):
    """{name: d(sum(reference * grad_out)) / d(name)} by fp64 autograd, for `names`."""
    return reference_with_grads(inputs, row_mask, grad_out, eps, names, dropout)[1]


def reference_with_grads(inputs, row_mask, grad_out, eps, names, dropout=None):
    """(fp64 reference output, {name: its gradient} by fp64 autograd, for `names`)."""
    leaves = {name: t.detach().double().requires_grad_(name in names) if t is not None else None
              for name, t in inputs.items()}
    expected = reference_add_layer_norm(leaves["x"], leaves["residual"], leaves["weight"], leaves["bias"], eps,
                                        leaves["residual_bias"], row_mask, dropout)
    grads = torch.autograd.grad(expected, [leaves[name] for name in names], grad_out.double())
    return expected.detach(), dict(zip(names, grads))


def kernel_grads(inputs, row_mask, grad_out, eps, names, dropout_p=None):
    """(output, {name: gradient}) of add_layer_norm, `names` requiring grad; dropout_p
    is passed on unless None."""
    leaves = {name: t.detach().requires_grad_(name in names) if t is not None else None
              for name, t in inputs.items()}
    kwargs = {} if dropout_p is None else dict(dropout_p=dropout_p)
    out = add_layer_norm(leaves["x"], leaves["residual"], leaves["weight"], leaves["bias"], eps,
                         residual_bias=leaves["residual_bias"], row_mask=row_mask, **kwargs)
    grads = torch.autograd.grad(out, [leaves[name] for name in names], grad_out)
    return out, dict(zip(names, grads))


@pytest.mark.parametrize("shape, dtype, with_residual, with_residual_bias, with_row_mask", [
    ((1, 64), torch.float32, True, True, True),  # a single row
    ((7, 80), torch.float32, True, True, True),  # 3 backward programs of 3, 3, 1 rows
    ((2, 65, 100), torch.float32, True, True, True),  # 130 rows, width not a power of two
    ((7, 80), torch.float32, False, False, False),  # a bare LayerNorm
    ((7, 80), torch.float32, True, False, True),
    ((7, 80), torch.float32, False, True, False),
    ((2, 65, 80), torch.float16, True, True, True),
    ((7, 80), torch.bfloat16, True, True, True),
])
def test_backward(shape, dtype, with_residual, with_residual_bias, with_row_mask):
    """Gradients of every input against fp64 autograd; rows with row_mask 0 get zeros."""
    inputs, row_mask, grad_out = backward_inputs(shape, dtype, 20, with_residual, with_residual_bias, with_row_mask)
    names = [name for name in INPUT_NAMES if inputs[name] is not None]
    _, grads = kernel_grads(inputs, row_mask, grad_out, 1e-5, names)
    expected = reference_grads(inputs, row_mask, grad_out, 1e-5, names)
    for name in names:
        assert grads[name].dtype == dtype, name
        assert_close(grads[name], expected[name], dtype)
    if with_row_mask:
        assert (grads["x"][row_mask == 0] == 0).all()


@pytest.mark.parametrize("names", [("residual", "weight"), ("weight",), ("x", "residual_bias")])
def test_backward_of_some_inputs(names):
    """Only the inputs that require grad get one (the others are skipped in the kernel)."""
    inputs, row_mask, grad_out = backward_inputs((7, 48), torch.float32, 30)
    _, grads = kernel_grads(inputs, row_mask, grad_out, 1e-12, names)
    expected = reference_grads(inputs, row_mask, grad_out, 1e-12, names)
    for name in names:
        assert_close(grads[name], expected[name], torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_forward_equals_no_grad_forward_and_backward_is_deterministic(dtype):
    """Saving mean / rstd changes no output bit; two backward passes agree bit for bit."""
    inputs, row_mask, grad_out = backward_inputs((7, 80), dtype, 40)
    out, grads = kernel_grads(inputs, row_mask, grad_out, 1e-5, INPUT_NAMES)
    assert out.requires_grad
    with torch.no_grad():
        inference = add_layer_norm(inputs["x"], inputs["residual"], inputs["weight"], inputs["bias"], 1e-5,
                                   residual_bias=inputs["residual_bias"], row_mask=row_mask)
    assert torch.equal(out, inference)
    _, again = kernel_grads(inputs, row_mask, grad_out, 1e-5, INPUT_NAMES)
    assert all(torch.equal(grads[name], again[name]) for name in INPUT_NAMES)


# ---- dropout of the residual + residual_bias branch ---------------------------------
def dropout_seed(torch_seed):
    """The Philox seed that the next kernel call draws after torch.manual_seed(torch_seed);
    leaves torch's generator re-seeded, so the next call draws exactly that seed."""
    torch.manual_seed(torch_seed)
    seed = philox_seed()
    torch.manual_seed(torch_seed)
    return seed


@pytest.mark.parametrize("p, shape, dtype, with_residual, with_residual_bias, with_row_mask", [
    (0.1, (1, 64), torch.float32, True, True, True),  # a single row
    (0.1, (7, 80), torch.float32, True, True, True),
    (0.5, (7, 80), torch.float32, True, True, True),
    (0.5, (2, 65, 100), torch.float32, True, True, True),  # 130 rows, a batch row fully padded
    (0.1, (7, 80), torch.float32, True, False, True),  # no residual_bias
    (0.5, (7, 80), torch.float32, False, True, False),  # the dropped branch is residual_bias alone
    (0.1, (3, 5, 80), torch.float16, True, True, True),
])
def test_dropout_against_fp64(p, shape, dtype, with_residual, with_residual_bias, with_row_mask):
    """Output and every gradient against fp64 autograd of the reference with the kernel's
    mask (keep_mask of the (rows, dim) view): x passes undropped, residual + residual_bias
    is dropped, and the backward regenerates the forward's mask."""
    inputs, row_mask, grad_out = backward_inputs(shape, dtype, 60, with_residual, with_residual_bias, with_row_mask)
    if with_row_mask and row_mask.dim() == 2:
        row_mask[-1] = 0
    names = [name for name in INPUT_NAMES if inputs[name] is not None]
    seed = dropout_seed(61)
    out, grads = kernel_grads(inputs, row_mask, grad_out, 1e-5, names, dropout_p=p)
    keep = keep_mask(seed, shape, p, DEVICE)
    expected_out, expected = reference_with_grads(inputs, row_mask, grad_out, 1e-5, names, (keep, p))
    assert_close(out, expected_out, dtype)
    for name in names:
        assert grads[name].dtype == dtype, name
        assert_close(grads[name], expected[name], dtype)
    if with_residual:  # exact zeros where dropped
        assert (grads["residual"][~keep] == 0).all()
    if with_row_mask:
        assert (out[row_mask == 0] == 0).all() and (grads["x"][row_mask == 0] == 0).all()


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_one_minus_p(p):
    """On 64 x 1024 elements the kernel keeps a fraction 1 - p within 5 binomial standard
    deviations. x = 0, residual = 1, unit LayerNorm: kept elements normalise above the row
    mean (positive), dropped ones below."""
    shape = (64, 1024)
    ones = torch.ones(shape, device=DEVICE)
    with torch.no_grad():
        out = add_layer_norm(torch.zeros_like(ones), ones, torch.ones(shape[1], device=DEVICE),
                             torch.zeros(shape[1], device=DEVICE), 1e-5, dropout_p=p)
    kept = (out > 0).double().mean().item()
    assert abs(kept - (1 - p)) <= 5 * (p * (1 - p) / ones.numel()) ** 0.5, kept


def test_dropout_is_reproducible_from_torch_seed():
    """One torch seed: bit-identical outputs and gradients on two runs, and the no-grad
    route gives the same output; another seed gives another output."""
    inputs, row_mask, grad_out = backward_inputs((7, 80), torch.float32, 70)
    runs = []
    for _ in range(2):
        torch.manual_seed(71)
        runs.append(kernel_grads(inputs, row_mask, grad_out, 1e-5, INPUT_NAMES, dropout_p=0.3))
    (out, grads), (again, grads_again) = runs
    assert torch.equal(out, again)
    assert all(torch.equal(grads[name], grads_again[name]) for name in INPUT_NAMES)
    args = (inputs["x"], inputs["residual"], inputs["weight"], inputs["bias"], 1e-5)
    kwargs = dict(residual_bias=inputs["residual_bias"], row_mask=row_mask, dropout_p=0.3)
    with torch.no_grad():
        torch.manual_seed(71)
        assert torch.equal(add_layer_norm(*args, **kwargs), out)
        torch.manual_seed(72)
        assert not torch.equal(add_layer_norm(*args, **kwargs), out)


def test_dropout_p_zero_is_no_dropout():
    """dropout_p=0 gives the bits of omitting it, forward and backward, and draws no seed."""
    inputs, row_mask, grad_out = backward_inputs((7, 80), torch.float32, 80)
    out, grads = kernel_grads(inputs, row_mask, grad_out, 1e-5, INPUT_NAMES)
    state = torch.get_rng_state()
    zero_out, zero_grads = kernel_grads(inputs, row_mask, grad_out, 1e-5, INPUT_NAMES, dropout_p=0.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(out, zero_out)
    assert all(torch.equal(grads[name], zero_grads[name]) for name in INPUT_NAMES)


@pytest.mark.parametrize("dropout_p", [-0.1, 1.0, "0.1", True])
def test_rejects_bad_dropout_p(dropout_p):
    x = random(2, 8, dtype=torch.float32, seed=90)
    weight = bias = torch.ones(8, device=DEVICE)
    with pytest.raises(ValueError, match="dropout_p"):
        add_layer_norm(x, x, weight, bias, 1e-5, dropout_p=dropout_p)


def test_dropout_needs_a_branch():
    x = random(2, 8, dtype=torch.float32, seed=91)
    weight = bias = torch.ones(8, device=DEVICE)
    with pytest.raises(ValueError, match="dropout_p"):
        add_layer_norm(x, None, weight, bias, 1e-5, dropout_p=0.1)


@pytest.mark.parametrize("block_rows", [1, 4])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_forced_block_rows(block_rows, p, monkeypatch):
    """BLOCK_ROWS forced to 1 (the GPU's configuration) and to 4 on 14 rows: forward blocks of
    4, 4, 4, 2 rows, 3 backward programs walking 5 rows each in blocks of 4 + 1; output and
    every gradient against fp64, the dropout mask unchanged (keep_mask of the (rows, dim) view)."""
    monkeypatch.setattr(layer_norm, "_block_rows", lambda n_rows, block_n: block_rows)
    inputs, row_mask, grad_out = backward_inputs((2, 7, 80), torch.float32, 50)
    seed = dropout_seed(51)
    out, grads = kernel_grads(inputs, row_mask, grad_out, 1e-5, INPUT_NAMES, dropout_p=p)
    dropout = (keep_mask(seed, (2, 7, 80), p, DEVICE), p) if p else None
    expected_out, expected = reference_with_grads(inputs, row_mask, grad_out, 1e-5, INPUT_NAMES, dropout)
    assert_close(out, expected_out, torch.float32)
    for name in INPUT_NAMES:
        assert_close(grads[name], expected[name], torch.float32)
