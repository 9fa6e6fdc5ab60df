"""triton_kernels.attention against an fp64 PyTorch reference of XLM attention.

Without CUDA the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set
by conftest.py); with CUDA it runs compiled on the GPU.
"""
import math

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
from xlm_fast.triton_kernels.attention import (  # noqa: E402
    _head_dim_slices,
    _launch_config,
    flash_attention,
    key_mask_prefix_lengths,
    split_fused_qkv,
)
from xlm_fast.triton_kernels.dropout import keep_mask, philox_seed  # noqa: E402

from conftest import DEVICE  # noqa: E402

# max |error| allowed relative to max |reference|; fp16/bf16 probabilities are rounded
# to the input dtype before P @ V, as in HF eager
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def reference_attention(q, k, v, keep=None, causal=False, head_scale=None, eager=False, dropout=None):
    """XLM attention: masked scores = the input dtype's min, softmax, dropout, head scale. In fp64,
    or with eager=True in the inputs' dtype (fp32 softmax, probabilities cast back) as HF's XLM
    computes it: the accuracy baseline for 16-bit gradients. dropout: (bool mask (batch, heads,
    seq, seq) of kept probabilities, p), kept ones scaled by 1 / (1 - p)."""
    masked_value = torch.finfo(q.dtype).min
    q, k, v = (t.transpose(1, 2) if eager else t.double().transpose(1, 2) for t in (q, k, v))  # (b, h, s, hd)
    seq_len, head_dim = q.shape[2], q.shape[3]
    scores = (q / math.sqrt(head_dim)) @ k.transpose(-1, -2)
    if causal:
        keep_2d = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep_2d, masked_value)
    elif keep is not None:
        scores = scores.masked_fill(~keep.bool()[:, None, None, :], masked_value)
    probs = scores.float().softmax(-1).type_as(scores) if eager else scores.softmax(-1)
    if dropout is not None:
        mask, p = dropout
        probs = probs * mask.to(probs.dtype) * (1.0 / (1.0 - p))
    if head_scale is not None:
        probs = probs * head_scale.to(probs.dtype)[None, :, None, None]
    return (probs @ v).transpose(1, 2).reshape(q.shape[0], seq_len, -1)


def random_qkv(batch, seq_len, heads, head_dim, dtype, seed=0):
    """q, k, v as strided slices of one fused (batch, seq, 3 * dim) projection output."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, seq_len, 3 * heads * head_dim, generator=generator) * 1.5
    return split_fused_qkv(qkv.to(device=DEVICE, dtype=dtype), heads)


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype
    assert torch.isfinite(actual).all()
    error = (actual.double() - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= TOLERANCE[dtype] * max(scale, 1e-6), f"max error {error:.3e} vs scale {scale:.3e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "batch, seq_len, heads, head_dim",
    [(1, 1, 2, 64), (2, 7, 3, 80), (2, 130, 2, 128), (1, 33, 2, 64), (2, 9, 2, 8),
     (2, 19, 2, 48), (1, 40, 1, 96), (2, 33, 2, 112), (2, 5, 2, 40)],
)
def test_lengths_padding(batch, seq_len, heads, head_dim, dtype):
    q, k, v = random_qkv(batch, seq_len, heads, head_dim, dtype)
    lengths = torch.tensor([seq_len, max(seq_len // 2, 1)][:batch], device=DEVICE)
    keep = torch.arange(seq_len, device=DEVICE)[None, :] < lengths[:, None]
    out = flash_attention(q, k, v, lengths=lengths)
    assert out.shape == (batch, seq_len, heads * head_dim)
    assert_close(out, reference_attention(q, k, v, keep=keep), dtype)


def test_head_dims_are_split_into_power_of_two_slices_rather_than_padded():
    """80 = 64 + 16 and 96 = 64 + 32 run as two column slices (no MMA work on padding);
    112 and 40 have no such split and are padded; powers of two are one slice."""
    assert _head_dim_slices(80) == dict(BLOCK_D=64, PAD_D=False, SPLIT_D=True, BLOCK_D2=16)
    assert _head_dim_slices(96) == dict(BLOCK_D=64, PAD_D=False, SPLIT_D=True, BLOCK_D2=32)
    assert _head_dim_slices(128) == dict(BLOCK_D=128, PAD_D=False, SPLIT_D=False, BLOCK_D2=16)
    assert _head_dim_slices(112)["BLOCK_D"] == 128 and _head_dim_slices(112)["PAD_D"]
    assert _head_dim_slices(40)["BLOCK_D"] == 64 and _head_dim_slices(40)["PAD_D"]
    assert _head_dim_slices(8)["BLOCK_D"] == 16 and _head_dim_slices(8)["PAD_D"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_no_mask(dtype):
    q, k, v = random_qkv(2, 45, 2, 64, dtype, seed=1)
    assert_close(flash_attention(q, k, v), reference_attention(q, k, v), dtype)


def test_lengths_skip_key_tiles_past_the_length():
    """Key tiles wholly past a row's length are skipped, not computed: NaN values there
    (64 = a multiple of every key tile size used) leave the output finite and exact."""
    q, k, v = random_qkv(2, 200, 2, 64, torch.float32, seed=8)
    lengths = torch.tensor([50, 200], device=DEVICE)
    keep = torch.arange(200, device=DEVICE)[None, :] < lengths[:, None]
    expected = reference_attention(q, k, v, keep=keep)
    v[0, 64:] = float("nan")
    k[0, 64:] = float("nan")
    assert_close(flash_attention(q, k, v, lengths=lengths), expected, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [80, 128])
def test_lengths_on_and_off_tile_boundaries(head_dim, dtype):
    """Rows whose length ends exactly on a key tile (32 and 64 divide the interpreter's
    and the GPU's tile sizes), one key past it, one short of it, the whole sequence."""
    seq_len = 130
    lengths = torch.tensor([32, 64, 65, 127, 128, 130], device=DEVICE)
    q, k, v = random_qkv(len(lengths), seq_len, 2, head_dim, dtype, seed=9)
    keep = torch.arange(seq_len, device=DEVICE)[None, :] < lengths[:, None]
    assert_close(flash_attention(q, k, v, lengths=lengths), reference_attention(q, k, v, keep=keep), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_padded_queries_skips_only_whole_padding_tiles(dtype):
    """Queries in a tile wholly past the length come out as zeros; every query in a tile
    that holds a valid one is exact (padding queries there too); a zero-length row
    still averages V; no lengths means nothing to skip."""
    seq_len, tile = 130, _launch_config(80, dtype)["BLOCK_M"]  # queries per tile
    lengths = torch.tensor([130, 40, 0, 1, 64], device=DEVICE)
    q, k, v = random_qkv(len(lengths), seq_len, 2, 80, dtype, seed=12)
    keep = torch.arange(seq_len, device=DEVICE)[None, :] < lengths[:, None]
    expected = reference_attention(q, k, v, keep=keep)
    out = flash_attention(q, k, v, lengths=lengths, zero_padded_queries=True)
    for row, length in enumerate(lengths.tolist()):
        computed = seq_len if length == 0 else min(seq_len, -(-length // tile) * tile)  # up to the tile end
        assert_close(out[row, :computed], expected[row, :computed], dtype)
        assert (out[row, computed:] == 0).all()
    with pytest.raises(ValueError, match="needs lengths or key_padding_mask"):
        flash_attention(q, k, v, zero_padded_queries=True)


def test_key_mask_prefix_lengths():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]],
                        device=DEVICE)
    expected = torch.tensor([3, -1, 0, 5, -1], dtype=torch.int32)
    for form in (mask, mask.bool(), mask.float() * 0.5):
        assert torch.equal(key_mask_prefix_lengths(form).cpu(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefix_mask_rows_skip_tiles_like_lengths(dtype):
    """A key mask whose rows are prefixes skips key tiles past each length (NaN keys and
    values there change nothing) and, with zero_padded_queries, padding query tiles;
    rows with holes are computed in full, exactly."""
    seq_len, tile = 130, _launch_config(80, dtype)["BLOCK_M"]
    q, k, v = random_qkv(3, seq_len, 2, 80, dtype, seed=13)
    keep = torch.ones(3, seq_len, dtype=torch.bool, device=DEVICE)
    keep[0, 50:] = False  # prefix of 50
    keep[1, 7] = False  # a hole
    keep[1, 100:] = False
    expected = reference_attention(q, k, v, keep=keep)
    k[0, 64:] = float("nan")  # past every key tile size used (32, 64) beyond row 0's length
    v[0, 64:] = float("nan")
    out = flash_attention(q, k, v, key_padding_mask=keep, zero_padded_queries=True)
    computed = min(seq_len, -(-50 // tile) * tile)
    assert_close(out[0, :computed], expected[0, :computed], dtype)
    assert (out[0, computed:] == 0).all()
    assert_close(out[1:], expected[1:], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_length_rows_average_all_values(dtype):
    """A row with no valid key gets a uniform softmax over ALL keys (mean of V), not zeros."""
    q, k, v = random_qkv(3, 70, 2, 80, dtype, seed=2)
    lengths = torch.tensor([0, 70, 5], device=DEVICE)
    keep = torch.arange(70, device=DEVICE)[None, :] < lengths[:, None]
    out = flash_attention(q, k, v, lengths=lengths)
    expected = reference_attention(q, k, v, keep=keep)
    mean_of_v = v[0].double().mean(0).reshape(-1)
    assert torch.allclose(expected[0], mean_of_v.expand(70, -1))
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 80, 128])
def test_general_mask_with_all_masked_row(head_dim, dtype):
    """A non-prefix 0/1 mask (holes, one row fully masked) in float, int and bool forms."""
    batch, seq_len, heads = 3, 50, 2
    q, k, v = random_qkv(batch, seq_len, heads, head_dim, dtype, seed=3)
    generator = torch.Generator().manual_seed(4)
    keep = (torch.rand(batch, seq_len, generator=generator) > 0.4).to(DEVICE)
    keep[1] = False
    expected = reference_attention(q, k, v, keep=keep)
    for mask in (keep, keep.float(), keep.long()):
        assert_close(flash_attention(q, k, v, key_padding_mask=mask), expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seq_len, head_dim", [(1, 64), (7, 64), (130, 64), (200, 80)])
def test_causal(seq_len, head_dim, dtype):
    q, k, v = random_qkv(2, seq_len, 2, head_dim, dtype, seed=5)
    assert_close(flash_attention(q, k, v, causal=True), reference_attention(q, k, v, causal=True), dtype)


@pytest.mark.parametrize("mode", ["lengths", "mask", "causal"])
def test_head_scale_zeros_and_fractions(mode):
    batch, seq_len, heads, head_dim = 2, 40, 4, 80
    q, k, v = random_qkv(batch, seq_len, heads, head_dim, torch.float32, seed=6)
    head_scale = torch.tensor([0.0, 0.25, 1.0, 0.7], device=DEVICE)
    lengths = torch.tensor([40, 13], device=DEVICE)
    keep = torch.arange(seq_len, device=DEVICE)[None, :] < lengths[:, None]
    kwargs = {"lengths": dict(lengths=lengths), "mask": dict(key_padding_mask=keep), "causal": dict(causal=True)}[mode]
    out = flash_attention(q, k, v, head_scale=head_scale, **kwargs)
    expected = reference_attention(q, k, v, keep=None if mode == "causal" else keep, causal=mode == "causal",
                                   head_scale=head_scale)
    assert_close(out, expected, torch.float32)
    assert (out.view(batch, seq_len, heads, head_dim)[:, :, 0] == 0).all()


def test_separate_contiguous_inputs_match_fused_views():
    q, k, v = random_qkv(2, 20, 2, 64, torch.float32, seed=7)
    lengths = torch.tensor([20, 9], device=DEVICE)
    fused = flash_attention(q, k, v, lengths=lengths)
    separate = flash_attention(q.contiguous(), k.contiguous(), v.contiguous(), lengths=lengths)
    assert torch.equal(fused, separate)


def test_rejects_bad_inputs():
    q, k, v = random_qkv(2, 8, 2, 64, torch.float32)
    lengths = torch.tensor([8, 3], device=DEVICE)
    with pytest.raises(ValueError, match="lengths or as key_padding_mask"):
        flash_attention(q, k, v, lengths=lengths, key_padding_mask=torch.ones(2, 8, device=DEVICE))
    with pytest.raises(ValueError, match="causal"):
        flash_attention(q, k, v, lengths=lengths, causal=True)
    with pytest.raises(ValueError, match="lengths"):
        flash_attention(q, k, v, lengths=torch.tensor([8.0, 3.0], device=DEVICE))
    with pytest.raises(ValueError, match="key_padding_mask"):
        flash_attention(q, k, v, key_padding_mask=torch.ones(2, 7, device=DEVICE))
    with pytest.raises(ValueError, match="head_scale"):
        flash_attention(q, k, v, head_scale=torch.ones(3, device=DEVICE))
    with pytest.raises(ValueError, match="k"):
        flash_attention(q, k[:, :4], v)
    with pytest.raises(TypeError, match="q"):
        flash_attention(q.long(), k, v)
    with pytest.raises(TypeError, match="one dtype"):
        flash_attention(q, k.half(), v)
    with pytest.raises(ValueError, match="n_heads"):
        split_fused_qkv(torch.randn(1, 2, 10), 4)


@pytest.mark.parametrize("used", [(True, True, True), (True, False, True)])
def test_split_fused_qkv_views_and_gradient(used):
    """q, k, v are views of qkv with or without gradients; qkv's gradient is each view's
    in its slice, zeros for a view the loss does not use."""
    qkv = torch.randn(2, 5, 3 * 2 * 80, device=DEVICE, requires_grad=True)
    views = split_fused_qkv(qkv, 2)
    assert [view.data_ptr() for view in views] == [qkv.data_ptr() + i * 160 * 4 for i in range(3)]
    assert all(view.shape == (2, 5, 2, 80) for view in views)
    weights = [torch.randn(2, 5, 2, 80, device=DEVICE) for _ in range(3)]
    loss = sum((view * weight).sum() for view, weight, use in zip(views, weights, used) if use)
    grad, = torch.autograd.grad(loss, qkv)
    expected = torch.stack([weight if use else torch.zeros_like(weight) for weight, use in zip(weights, used)], dim=2)
    assert torch.equal(grad, expected.flatten(2))


# ---- backward -----------------------------------------------------------------------
# max |error| of a gradient relative to max |reference gradient| in fp32; 16-bit inputs
# are held to the DESIGN rule instead: no less accurate than eager autograd in the same
# dtype (relative L2 error at most 1.5x eager's, against the same fp64 reference)
GRAD_TOLERANCE_FP32 = 2e-5


def attention_gradients(fn, qkv, heads, dout, head_scale=None, row_scale=None, **kwargs):
    """Gradients of sum(fn(q, k, v) * dout) as (dq, dk, dv, d head_scale or None), q, k, v
    being views of the fused projection output `qkv`; row_scale (batch, seq, 1) multiplies
    the output (the zeros of zero_padded_queries)."""
    qkv = qkv.detach().requires_grad_()
    leaves = [qkv]
    if head_scale is not None:
        head_scale = head_scale.detach().to(qkv.dtype if qkv.dtype == torch.float64 else torch.float32)
        leaves.append(head_scale.requires_grad_())
    q, k, v = split_fused_qkv(qkv, heads)
    out = fn(q, k, v, head_scale=head_scale, **kwargs)
    if row_scale is not None:
        out = out * row_scale.to(out.dtype)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    dq, dk, dv = grads[0].unflatten(-1, (3, heads, -1)).unbind(2)
    return dq, dk, dv, grads[1] if head_scale is not None else None


def relative_l2_error(actual, expected):
    return ((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def gradient_case(mode, batch, seq_len, heads, head_dim, dtype, seed):
    """(qkv, dout, flash_attention kwargs, reference kwargs, row_scale, head_scale) of a
    masking mode on fresh random inputs."""
    generator = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(batch, seq_len, 3 * heads * head_dim, generator=generator) * 1.5).to(DEVICE, dtype)
    dout = torch.randn(batch, seq_len, heads * head_dim, generator=generator).to(DEVICE, dtype)
    head_scale = torch.rand(heads, generator=generator).to(DEVICE)
    head_scale[0] = 0.0  # a pruned head: its q, k get no gradient, its scale does
    positions = torch.arange(seq_len, device=DEVICE)
    row_scale = None
    if mode == "none":
        kwargs, reference = {}, {}
    elif mode == "causal":
        kwargs, reference = dict(causal=True), dict(causal=True)
    elif mode in ("lengths", "lengths_zero_padded"):
        lengths = torch.tensor([seq_len, 0, max(seq_len // 3, 1)][:batch], device=DEVICE)
        kwargs = dict(lengths=lengths, zero_padded_queries=mode == "lengths_zero_padded")
        reference = dict(keep=positions[None, :] < lengths[:, None])
        if mode == "lengths_zero_padded":  # the forward's query tiles wholly past a length (> 0) are zeros
            tile = _launch_config(head_dim, dtype)["BLOCK_M"]
            computed = torch.where(lengths > 0, (lengths + tile - 1) // tile * tile, seq_len)
            row_scale = (positions[None, :] < computed[:, None]).to(torch.float64)[:, :, None]
    elif mode == "mask":  # holes, an all-masked row, a prefix row
        keep = torch.rand(batch, seq_len, generator=generator).to(DEVICE) > 0.4
        keep[min(1, batch - 1)] = False
        keep[-1] = positions < seq_len // 2
        kwargs, reference = dict(key_padding_mask=keep), dict(keep=keep)
    return qkv, dout, kwargs, reference, row_scale, head_scale


def seeded_dropout(mode, batch, seq_len, heads, head_dim, dtype, seed, dropout_p):
    """gradient_case with probability dropout: (case..., flash_attention that reseeds torch
    before each call, so it draws the seed whose mask the reference applies)."""
    qkv, dout, kwargs, reference, row_scale, head_scale = gradient_case(mode, batch, seq_len, heads, head_dim,
                                                                        dtype, seed)
    torch.manual_seed(seed)
    mask = keep_mask(philox_seed(), (batch, heads, seq_len, seq_len), dropout_p, DEVICE)

    def flash(*args, **kw):
        torch.manual_seed(seed)
        return flash_attention(*args, dropout_p=dropout_p, **kw)
    return qkv, dout, kwargs, dict(reference, dropout=(mask, dropout_p)), row_scale, head_scale, flash


def check_fp32_gradients(mode, batch, seq_len, heads, head_dim, seed, with_head_scale=True, dropout_p=0.0):
    if dropout_p:
        qkv, dout, kwargs, reference, row_scale, head_scale, flash = seeded_dropout(
            mode, batch, seq_len, heads, head_dim, torch.float32, seed, dropout_p)
    else:
        qkv, dout, kwargs, reference, row_scale, head_scale = gradient_case(mode, batch, seq_len, heads, head_dim,
                                                                            torch.float32, seed)
        flash = flash_attention
    head_scale = head_scale if with_head_scale else None
    ours = attention_gradients(flash, qkv, heads, dout, head_scale, row_scale, **kwargs)
    expected = attention_gradients(reference_attention, qkv.double(), heads, dout, head_scale, row_scale,
                                   **reference)
    # dq, dk, dv relative to the largest of them: a gradient can be exactly 0 (dq at seq 1)
    qkv_scale = max(g.abs().max().item() for g in expected[:3])
    for name, actual, wanted in zip(("dq", "dk", "dv", "d head_scale"), ours, expected):
        if wanted is None:
            assert actual is None
            continue
        assert actual.dtype == (torch.float32 if name == "d head_scale" else qkv.dtype)
        scale = wanted.abs().max().item() if name == "d head_scale" else max(wanted.abs().max().item(), qkv_scale)
        error = (actual.double() - wanted).abs().max().item() / scale
        assert error <= GRAD_TOLERANCE_FP32, f"{name}: relative error {error:.2e}"
    return ours, expected


@pytest.mark.parametrize(
    "mode, batch, seq_len, heads, head_dim",
    [("none", 1, 1, 2, 64), ("none", 2, 7, 2, 80), ("lengths", 3, 7, 3, 80), ("lengths", 3, 40, 2, 64),
     ("lengths_zero_padded", 3, 70, 2, 80), ("mask", 3, 7, 2, 64), ("mask", 3, 40, 2, 80),
     ("causal", 2, 7, 2, 80), ("causal", 1, 130, 2, 64), ("causal", 1, 7, 2, 128)],
)
def test_gradients_fp32(mode, batch, seq_len, heads, head_dim):
    """dq, dk, dv and d head_scale (head 0 scaled by 0, the others by fractions) against
    fp64 autograd of the reference, on fresh random inputs."""
    check_fp32_gradients(mode, batch, seq_len, heads, head_dim, seed=20 + seq_len + head_dim)


def test_gradients_of_all_masked_rows_and_pruned_heads():
    """A row without valid keys has constant uniform probabilities: its queries and keys
    get no gradient, its values get dout / seq_len (mean of V); a head scaled by 0 gives
    its q, k, v no gradient."""
    (dq, dk, dv, _), (_, _, dv_expected, _) = check_fp32_gradients("lengths", 3, 7, 3, 80, seed=3)
    assert (dq[1] == 0).all() and (dk[1] == 0).all()
    assert dv[1].abs().max() > 0
    assert (dq[:, :, 0] == 0).all() and (dk[:, :, 0] == 0).all() and (dv[:, :, 0] == 0).all()
    assert torch.allclose(dv[1].double(), dv_expected[1], atol=1e-6)


@pytest.mark.parametrize("dtype, mode, head_dim, dropout_p",
                         [(torch.bfloat16, "lengths", 128, 0.0), (torch.float16, "mask", 80, 0.0),
                          (torch.bfloat16, "causal", 64, 0.0), (torch.bfloat16, "mask", 80, 0.1),
                          (torch.float16, "lengths", 128, 0.5)])
def test_gradients_16_bit(dtype, mode, head_dim, dropout_p):
    """16-bit probabilities and score gradients are rounded before their dots, as eager
    autograd in the same dtype rounds its operands: each gradient's relative L2 error
    against fp64 is at most 1.5x eager's (DESIGN's rule). Triton's interpreter casts
    fp32 to bf16 by truncation, not to nearest (a one-sided error of up to 2^-7 in every
    rounded probability and score gradient; the GPU rounds to nearest), which takes bf16
    on the CPU to ~1.6x eager's: 2x there. With dropout, eager drops its rounded
    probabilities as HF's nn.functional.dropout does."""
    if dropout_p:
        qkv, dout, kwargs, reference, row_scale, head_scale, flash = seeded_dropout(mode, 3, 24, 2, head_dim, dtype,
                                                                                    11, dropout_p)
    else:
        qkv, dout, kwargs, reference, row_scale, head_scale = gradient_case(mode, 3, 24, 2, head_dim, dtype, seed=11)
        flash = flash_attention
    ours = attention_gradients(flash, qkv, 2, dout, head_scale, row_scale, **kwargs)
    eager = attention_gradients(lambda *args, **kw: reference_attention(*args, eager=True, **kw), qkv, 2, dout,
                                head_scale, row_scale, **reference)
    expected = attention_gradients(reference_attention, qkv.double(), 2, dout, head_scale, row_scale, **reference)
    bound = 2.0 if dtype == torch.bfloat16 and DEVICE == "cpu" else 1.5
    for name, actual, baseline, wanted in zip(("dq", "dk", "dv", "d head_scale"), ours, eager, expected):
        assert torch.isfinite(actual).all()
        error, eager_error = relative_l2_error(actual, wanted), relative_l2_error(baseline, wanted)
        assert error <= bound * eager_error, f"{name}: relative L2 error {error:.2e}, eager's {eager_error:.2e}"


@pytest.mark.parametrize("mode", ["lengths_zero_padded", "mask", "causal"])
def test_grad_enabled_forward_equals_no_grad(mode):
    """With gradients wanted the forward also stores the log-sum-exp; its output is the
    inference output bit for bit."""
    qkv, _, kwargs, _, _, head_scale = gradient_case(mode, 3, 40, 2, 80, torch.float32, seed=30)
    with torch.no_grad():
        expected = flash_attention(*split_fused_qkv(qkv, 2), head_scale=head_scale, **kwargs)
    assert expected.grad_fn is None
    out = flash_attention(*split_fused_qkv(qkv.requires_grad_(), 2), head_scale=head_scale, **kwargs)
    assert out.grad_fn is not None
    assert torch.equal(out, expected)


def test_backward_is_deterministic():
    """No atomics: two backward passes give the same bits."""
    qkv, dout, kwargs, _, _, head_scale = gradient_case("mask", 3, 20, 2, 64, torch.float32, seed=31)
    first = attention_gradients(flash_attention, qkv, 2, dout, head_scale, **kwargs)
    second = attention_gradients(flash_attention, qkv, 2, dout, head_scale, **kwargs)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_gradients_of_separate_inputs_some_requiring_grad():
    """Separate q, k, v where only v and head_scale want gradients (dq is not computed,
    d head_scale still is), with out.sum() as the loss (a broadcast, stride-0 dout)."""
    q, k, v = (t.contiguous() for t in random_qkv(2, 20, 2, 64, torch.float32, seed=32))
    lengths = torch.tensor([20, 9], device=DEVICE)
    keep = torch.arange(20, device=DEVICE)[None, :] < lengths[:, None]
    head_scale = torch.tensor([0.5, 1.0], device=DEVICE, requires_grad=True)
    v.requires_grad_()
    flash_attention(q, k, v, lengths=lengths, head_scale=head_scale).sum().backward()
    v64 = v.detach().double().requires_grad_()
    head_scale64 = head_scale.detach().double().requires_grad_()
    reference_attention(q.double(), k.double(), v64, keep=keep, head_scale=head_scale64).sum().backward()
    assert q.grad is None and k.grad is None
    assert (v.grad.double() - v64.grad).abs().max() <= GRAD_TOLERANCE_FP32 * v64.grad.abs().max()
    head_scale_error = (head_scale.grad.double() - head_scale64.grad).abs().max()
    assert head_scale_error <= GRAD_TOLERANCE_FP32 * head_scale64.grad.abs().max()


def test_backward_skips_key_tiles_past_the_length():
    """Key tiles wholly past a row's length take no probability: the backward reads no
    query against them (NaN keys and values there leave every gradient finite), their dk
    and dv are 0, and the other gradients are exact."""
    qkv, dout, _, _, _, _ = gradient_case("none", 2, 80, 2, 64, torch.float32, seed=33)
    lengths = torch.tensor([40, 80], device=DEVICE)
    keep = torch.arange(80, device=DEVICE)[None, :] < lengths[:, None]
    expected = attention_gradients(reference_attention, qkv.double(), 2, dout, keep=keep)
    qkv.unflatten(-1, (3, -1))[0, 64:, 1:] = float("nan")  # keys and values of row 0 past 64
    dq, dk, dv, _ = attention_gradients(flash_attention, qkv, 2, dout, lengths=lengths)
    assert (dk[0, 64:] == 0).all() and (dv[0, 64:] == 0).all()
    for actual, wanted in zip((dq, dk[:, :64], dv[:, :64]), (expected[0], expected[1][:, :64], expected[2][:, :64])):
        assert (actual.double() - wanted).abs().max() <= GRAD_TOLERANCE_FP32 * wanted.abs().max()


# ---- probability dropout --------------------------------------------------------------
@pytest.mark.parametrize("dropout_p", [0.1, 0.5])
@pytest.mark.parametrize(
    "mode, batch, seq_len, heads, head_dim",
    [("none", 1, 1, 2, 64), ("lengths", 3, 7, 3, 80), ("lengths_zero_padded", 3, 40, 2, 80), ("mask", 3, 40, 2, 64),
     ("causal", 1, 70, 2, 64)],
)
def test_dropout_output_and_gradients_fp32(mode, batch, seq_len, heads, head_dim, dropout_p):
    """Output, dq, dk, dv and d head_scale with dropped probabilities against the fp64
    reference applying keep_mask of the call's seed (all-masked rows dropped too); the
    normaliser takes the undropped probabilities."""
    seed = 40 + seq_len + head_dim
    check_fp32_gradients(mode, batch, seq_len, heads, head_dim, seed, dropout_p=dropout_p)
    qkv, _, kwargs, reference, row_scale, head_scale, flash = seeded_dropout(mode, batch, seq_len, heads, head_dim,
                                                                             torch.float32, seed, dropout_p)
    q, k, v = split_fused_qkv(qkv, heads)
    out = flash(q, k, v, head_scale=head_scale, **kwargs)
    expected = reference_attention(q, k, v, head_scale=head_scale, **reference)
    if row_scale is not None:
        out, expected = out * row_scale.float(), expected * row_scale
    assert_close(out, expected, torch.float32)


@pytest.mark.parametrize("dropout_p", [0.1, 0.5])
def test_dropout_masks_of_forward_and_backward_are_keep_mask(dropout_p):
    """With q = k = 0 (uniform P = 1 / seq) and one-hot values v_j = e_j the output is
    D / (seq (1 - p)), and with one-hot dout_i = e_i, dv_j is the same D transposed: the
    forward and dk/dv kernels read exactly keep_mask(seed, (batch, heads, seq, seq), p),
    and the kept fraction is 1 - p within 4 binomial standard deviations."""
    batch, seq_len, heads = 2, 64, 2
    eye = torch.eye(seq_len, device=DEVICE)[None, :, None, :].expand(batch, seq_len, heads, seq_len)
    q = torch.zeros(batch, seq_len, heads, seq_len, device=DEVICE)
    v = eye.clone().requires_grad_()
    torch.manual_seed(3)
    expected = keep_mask(philox_seed(), (batch, heads, seq_len, seq_len), dropout_p, DEVICE).double()
    torch.manual_seed(3)
    out = flash_attention(q, q, v, dropout_p=dropout_p)
    (dv,) = torch.autograd.grad(out, v, eye.reshape(batch, seq_len, -1))
    scale = seq_len * (1 - dropout_p)
    forward_mask = out.double().view(batch, seq_len, heads, seq_len).transpose(1, 2) * scale  # (b, h, i, j)
    backward_mask = dv.double().permute(0, 2, 3, 1) * scale  # dv[b, j, h, i] -> (b, h, i, j)
    for mask in (forward_mask, backward_mask):
        assert (mask - expected).abs().max() < 1e-5
    kept, n = expected.mean().item(), expected.numel()
    assert abs(kept - (1 - dropout_p)) <= 4 * math.sqrt(dropout_p * (1 - dropout_p) / n)


def test_dropout_same_seed_same_bits_other_seed_differs():
    """torch.manual_seed fixes the call's seed: two runs give the same output and gradients
    bit for bit, a run without gradients the same output; another seed another output."""
    qkv, dout, kwargs, _, _, head_scale = gradient_case("mask", 3, 20, 2, 64, torch.float32, seed=34)

    def flash(seed):
        def call(*args, **kw):
            torch.manual_seed(seed)
            return flash_attention(*args, dropout_p=0.3, **kw)
        return call
    first = attention_gradients(flash(5), qkv, 2, dout, head_scale, **kwargs)
    second = attention_gradients(flash(5), qkv, 2, dout, head_scale, **kwargs)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    out = flash(5)(*split_fused_qkv(qkv.detach().requires_grad_(), 2), head_scale=head_scale, **kwargs)
    assert out.grad_fn is not None
    q, k, v = split_fused_qkv(qkv, 2)
    with torch.no_grad():
        assert torch.equal(flash(5)(q, k, v, head_scale=head_scale, **kwargs), out)
        assert not torch.equal(flash(6)(q, k, v, head_scale=head_scale, **kwargs), out)


def test_dropout_p_zero_is_no_dropout():
    """dropout_p=0 gives the bits of a call without it and draws nothing from torch's generator."""
    q, k, v = random_qkv(2, 20, 2, 64, torch.float32, seed=35)
    lengths = torch.tensor([20, 9], device=DEVICE)
    expected = flash_attention(q, k, v, lengths=lengths)
    torch.manual_seed(7)
    out = flash_attention(q, k, v, lengths=lengths, dropout_p=0)
    drawn = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(4))
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dropout_p", [-0.1, 1.0, "0.1", True])
def test_rejects_bad_dropout_p(dropout_p):
    q, k, v = random_qkv(1, 4, 2, 16, torch.float32)
    with pytest.raises(ValueError, match="dropout_p"):
        flash_attention(q, k, v, dropout_p=dropout_p)
