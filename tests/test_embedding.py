"""triton_kernels.embedding against an fp64 PyTorch reference of XLM's embeddings.

Without CUDA the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set
by conftest.py); with CUDA it runs compiled on the GPU.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
from xlm_fast.triton_kernels import embedding  # noqa: E402
from xlm_fast.triton_kernels.dropout import keep_mask, philox_seed  # noqa: E402
from xlm_fast.triton_kernels.embedding import embedding_layer_norm  # noqa: E402

from conftest import DEVICE  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
VOCAB, MAX_POSITIONS, N_LANGS = 50, 160, 3


def make_tables(dim, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, offset=0.0):
        return (torch.randn(*shape, generator=generator) + offset).to(device=DEVICE, dtype=dtype)

    return dict(word_embeddings=rand(VOCAB, dim), position_embeddings=rand(MAX_POSITIONS, dim),
                lang_embeddings=rand(N_LANGS, dim), ln_weight=rand(dim, offset=1.0), ln_bias=rand(dim))


def reference(tables, eps, input_ids=None, inputs_embeds=None, position_ids=None, langs=None, token_type_ids=None,
              row_mask=None, dropout=None):
    """dropout: (keep mask (batch, seq, dim), p) applied after the LayerNorm, before row_mask, or None."""
    word = tables["word_embeddings"].double()
    x = inputs_embeds.double() if inputs_embeds is not None else word[input_ids]
    seq_len = x.shape[1]
    if position_ids is None:
        position_ids = torch.arange(seq_len, device=x.device)[None]
    x = x + tables["position_embeddings"].double()[position_ids]
    if langs is not None:
        x = x + tables["lang_embeddings"].double()[langs]
    if token_type_ids is not None:
        x = x + word[token_type_ids]
    y = torch.nn.functional.layer_norm(x, x.shape[-1:], tables["ln_weight"].double(), tables["ln_bias"].double(), eps)
    if dropout is not None:
        keep, p = dropout
        y = y * keep / (1 - p)
    if row_mask is not None:
        y = y * row_mask.double()[..., None]
    return y


def random_ids(high, batch, seq_len, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (batch, seq_len), generator=generator).to(DEVICE)


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype and actual.shape == expected.shape
    error = (actual.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * expected.abs().max().item(), f"max error {error:.3e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch, seq_len, dim", [(1, 1, 64), (2, 7, 80), (3, 130, 256)])
def test_all_inputs(batch, seq_len, dim, dtype):
    tables = make_tables(dim, dtype)
    input_ids = random_ids(VOCAB, batch, seq_len, seed=1)
    langs = random_ids(N_LANGS, batch, seq_len, seed=2)
    token_type_ids = random_ids(VOCAB, batch, seq_len, seed=3)
    position_ids = random_ids(MAX_POSITIONS, batch, seq_len, seed=4)
    lengths = torch.tensor([seq_len, 0, max(seq_len - 3, 1)][:batch], device=DEVICE)
    row_mask = (torch.arange(seq_len, device=DEVICE)[None] < lengths[:, None]).to(dtype)
    out = embedding_layer_norm(
        input_ids, tables["word_embeddings"], tables["position_embeddings"], tables["ln_weight"], tables["ln_bias"],
        1e-12, position_ids=position_ids, langs=langs, lang_embeddings=tables["lang_embeddings"],
        token_type_ids=token_type_ids, row_mask=row_mask,
    )
    expected = reference(tables, 1e-12, input_ids=input_ids, position_ids=position_ids, langs=langs,
                         token_type_ids=token_type_ids, row_mask=row_mask)
    assert_close(out, expected, dtype)
    assert (out[row_mask == 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_defaults_only_words_and_positions(dtype):
    tables = make_tables(96, dtype, seed=5)
    input_ids = random_ids(VOCAB, 2, 9, seed=6)
    out = embedding_layer_norm(input_ids, tables["word_embeddings"], tables["position_embeddings"],
                               tables["ln_weight"], tables["ln_bias"], 1e-5)
    assert_close(out, reference(tables, 1e-5, input_ids=input_ids), dtype)


def test_inputs_embeds_broadcast_positions_and_bool_mask():
    tables = make_tables(64, torch.float32, seed=7)
    generator = torch.Generator().manual_seed(8)
    inputs_embeds = torch.randn(2, 5, 64, generator=generator).to(DEVICE)
    position_ids = torch.arange(3, 8, device=DEVICE)[None]  # (1, seq): broadcast over the batch
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool, device=DEVICE)
    out = embedding_layer_norm(None, tables["word_embeddings"], tables["position_embeddings"], tables["ln_weight"],
                               tables["ln_bias"], 1e-12, inputs_embeds=inputs_embeds, position_ids=position_ids,
                               row_mask=keep)
    expected = reference(tables, 1e-12, inputs_embeds=inputs_embeds, position_ids=position_ids, row_mask=keep)
    assert_close(out, expected, torch.float32)


def test_rejects_bad_inputs():
    tables = make_tables(32, torch.float32)
    ids = random_ids(VOCAB, 2, 4, seed=9)
    args = (tables["word_embeddings"], tables["position_embeddings"], tables["ln_weight"], tables["ln_bias"], 1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        embedding_layer_norm(None, *args)
    with pytest.raises(TypeError, match="input_ids"):
        embedding_layer_norm(ids.float(), *args)
    with pytest.raises(ValueError, match="langs and lang_embeddings"):
        embedding_layer_norm(ids, *args, langs=ids)
    with pytest.raises(ValueError, match="token_type_ids"):
        embedding_layer_norm(ids, *args, token_type_ids=ids[:, :2])
    with pytest.raises(ValueError, match="position_embeddings rows"):
        embedding_layer_norm(random_ids(VOCAB, 1, MAX_POSITIONS + 1, seed=10), *args)
    with pytest.raises(ValueError, match="row_mask"):
        embedding_layer_norm(ids, *args, row_mask=torch.ones(3, device=DEVICE))
    with pytest.raises(TypeError, match="position_embeddings"):
        embedding_layer_norm(ids, tables["word_embeddings"], tables["position_embeddings"].half(), *args[2:])


# --- backward -------------------------------------------------------------------------

GRAD_TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 1e-2}
TABLES = ("word_embeddings", "position_embeddings", "lang_embeddings", "ln_weight", "ln_bias")


def run_both(tables, eps, dtype, seed, dropout_p=None, **inputs):
    """(kernel output, its gradients, fp64 reference gradients, fp64 reference output) for a random dL/dy:
    gradients by name (the tables, and inputs_embeds when given). dropout_p is passed on
    unless None; when > 0 the reference applies the mask of the seed the kernel draws
    after torch.manual_seed(seed)."""
    leaves = {name: tables[name].clone().requires_grad_() for name in TABLES}
    reference_leaves = {name: tables[name].double().requires_grad_() for name in TABLES}
    embeds = inputs.pop("inputs_embeds", None)
    if embeds is not None:
        leaves["inputs_embeds"] = embeds.clone().requires_grad_()
        reference_leaves["inputs_embeds"] = embeds.double().requires_grad_()
    use_langs = inputs.get("langs") is not None
    kwargs, dropout = {}, None
    if dropout_p is not None:
        kwargs["dropout_p"] = dropout_p
    if dropout_p:
        torch.manual_seed(seed)
        philox = philox_seed()
        torch.manual_seed(seed)  # the kernel call draws philox again
    out = embedding_layer_norm(
        inputs.get("input_ids"), leaves["word_embeddings"], leaves["position_embeddings"], leaves["ln_weight"],
        leaves["ln_bias"], eps, inputs_embeds=leaves.get("inputs_embeds"), position_ids=inputs.get("position_ids"),
        langs=inputs.get("langs"), lang_embeddings=leaves["lang_embeddings"] if use_langs else None,
        token_type_ids=inputs.get("token_type_ids"), row_mask=inputs.get("row_mask"), **kwargs)
    if dropout_p:
        dropout = (keep_mask(philox, out.shape, dropout_p, DEVICE), dropout_p)
    expected = reference(reference_leaves, eps, inputs_embeds=reference_leaves.get("inputs_embeds"),
                         dropout=dropout, **inputs)
    generator = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(DEVICE)
    out.backward(grad_out.to(dtype))
    expected.backward(grad_out)
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    return out, grads, {name: leaf.grad for name, leaf in reference_leaves.items()}, expected.detach()


def assert_grads_close(grads, expected_grads, dtype):
    assert grads.keys() == expected_grads.keys()
    for name, expected in expected_grads.items():
        if expected is None:  # the reference never read this table
            assert grads[name] is None or not grads[name].any(), name
            continue
        actual = grads[name]
        assert actual is not None and actual.dtype == dtype and actual.shape == expected.shape, name
        error = (actual.double() - expected).abs().max().item()
        assert error <= GRAD_TOLERANCE[dtype] * expected.abs().max().item(), f"{name}: max error {error:.3e}"


@pytest.mark.parametrize("batch, seq_len, dim, dtype", [(1, 1, 64, torch.float32), (3, 7, 80, torch.float32),
                                                         (2, 7, 80, torch.bfloat16)])
@pytest.mark.parametrize("with_langs, with_token_types, with_positions", [(True, True, True), (False, False, False)])
def test_backward_against_fp64(batch, seq_len, dim, dtype, with_langs, with_token_types, with_positions):
    tables = make_tables(dim, dtype, seed=11)
    # ids from 4 values: most rows of the word table are hit by several tokens (scatter collisions)
    inputs = dict(input_ids=random_ids(4, batch, seq_len, seed=12))
    if with_langs:
        inputs["langs"] = random_ids(N_LANGS, batch, seq_len, seed=13)
    if with_token_types:
        inputs["token_type_ids"] = random_ids(3, batch, seq_len, seed=14)
    if with_positions:
        inputs["position_ids"] = random_ids(4, 1, seq_len, seed=15)  # broadcast over the batch, repeated
    lengths = torch.tensor([seq_len, 0, max(seq_len - 3, 1)][:batch], device=DEVICE)
    inputs["row_mask"] = (torch.arange(seq_len, device=DEVICE)[None] < lengths[:, None]).to(dtype)
    _, grads, expected, _ = run_both(tables, 1e-12, dtype, seed=16, **inputs)
    if not with_langs:
        assert grads["lang_embeddings"] is None
    assert_grads_close(grads, expected, dtype)


@pytest.mark.parametrize("with_token_types", [False, True])
def test_backward_inputs_embeds(with_token_types):
    tables = make_tables(48, torch.float32, seed=17)
    generator = torch.Generator().manual_seed(18)
    inputs = dict(inputs_embeds=torch.randn(2, 5, 48, generator=generator).to(DEVICE),
                  langs=random_ids(N_LANGS, 2, 5, seed=19),
                  row_mask=torch.tensor([[1.0, 1.0, 0.5, 0.0, 0.0], [1.0] * 5], device=DEVICE))
    if with_token_types:
        inputs["token_type_ids"] = random_ids(2, 2, 5, seed=20)
    _, grads, expected, _ = run_both(tables, 1e-5, torch.float32, seed=21, **inputs)
    assert (grads["inputs_embeds"][0, 3:] == 0).all()  # padded tokens get no gradient
    assert_grads_close(grads, expected, torch.float32)


def test_backward_layer_norm_parameters_only():
    """Only ln_weight / ln_bias require grad: the kernel skips ds, the tables get none."""
    tables = make_tables(40, torch.float32, seed=22)
    input_ids = random_ids(VOCAB, 2, 3, seed=23)
    weight, bias = tables["ln_weight"].clone().requires_grad_(), tables["ln_bias"].clone().requires_grad_()
    out = embedding_layer_norm(input_ids, tables["word_embeddings"], tables["position_embeddings"], weight, bias,
                               1e-5)
    reference_weight = tables["ln_weight"].double().requires_grad_()
    reference_bias = tables["ln_bias"].double().requires_grad_()
    expected = reference(dict(tables, ln_weight=reference_weight, ln_bias=reference_bias), 1e-5,
                         input_ids=input_ids)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(24), dtype=torch.float64).to(DEVICE)
    out.backward(grad_out.float())
    expected.backward(grad_out)
    assert_grads_close(dict(ln_weight=weight.grad, ln_bias=bias.grad),
                       dict(ln_weight=reference_weight.grad, ln_bias=reference_bias.grad), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_enabled_forward_equals_inference(dtype):
    tables = make_tables(80, dtype, seed=25)
    kwargs = dict(position_ids=random_ids(MAX_POSITIONS, 2, 7, seed=26), langs=random_ids(N_LANGS, 2, 7, seed=27),
                  lang_embeddings=tables["lang_embeddings"], token_type_ids=random_ids(VOCAB, 2, 7, seed=28),
                  row_mask=random_ids(2, 2, 7, seed=29).bool())
    input_ids = random_ids(VOCAB, 2, 7, seed=30)
    args = (tables["word_embeddings"], tables["position_embeddings"], tables["ln_weight"], tables["ln_bias"], 1e-12)
    with torch.no_grad():
        inference = embedding_layer_norm(input_ids, *args, **kwargs)
    word = tables["word_embeddings"].clone().requires_grad_()
    training = embedding_layer_norm(input_ids, word, *args[1:], **kwargs)
    assert training.requires_grad and not inference.requires_grad
    assert torch.equal(training.detach(), inference)


def test_backward_deterministic_mode_repeats_bit_for_bit():
    """Under torch.use_deterministic_algorithms(True) the scatter takes torch's
    deterministic index_add_: two backwards of one input give identical gradients."""
    tables = make_tables(64, torch.float32, seed=31)
    inputs = dict(input_ids=random_ids(3, 4, 6, seed=32), langs=random_ids(N_LANGS, 4, 6, seed=33),
                  token_type_ids=random_ids(3, 4, 6, seed=34))
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = run_both(tables, 1e-5, torch.float32, seed=35, **inputs)[1]
        second = run_both(tables, 1e-5, torch.float32, seed=35, **inputs)[1]
    finally:
        torch.use_deterministic_algorithms(previous)
    for name in TABLES:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("block_rows", [1, 4])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_forced_block_rows(block_rows, p, monkeypatch):
    """BLOCK_ROWS forced to 1 (the GPU's configuration) and to 4 on 3 x 7 = 21 tokens: forward
    blocks of 4 with a last one of 1, 3 backward programs walking 7 tokens each in blocks of
    4 + 3; output and every gradient against fp64, the dropout mask unchanged."""
    monkeypatch.setattr(embedding, "_block_rows", lambda n_rows, block_n: block_rows)
    tables = make_tables(80, torch.float32, seed=55)
    inputs = dropout_inputs("all", 3, 7, 80)
    out, grads, expected, expected_out = run_both(tables, 1e-5, torch.float32, seed=56, dropout_p=p, **inputs)
    assert_close(out, expected_out, torch.float32)
    assert_grads_close(grads, expected, torch.float32)
    assert (out[inputs["row_mask"] == 0] == 0).all()


# --- dropout ---------------------------------------------------------------------------


def dropout_inputs(case, batch, seq_len, dim):
    """run_both's inputs: "all" (ids, langs, token types, positions), "ids" only, or
    "embeds" (inputs_embeds, langs, token types); a row mask whose second batch row is
    all padding."""
    if case == "embeds":
        generator = torch.Generator().manual_seed(41)
        inputs = dict(inputs_embeds=torch.randn(batch, seq_len, dim, generator=generator).to(DEVICE))
    else:
        inputs = dict(input_ids=random_ids(4, batch, seq_len, seed=42))
    if case in ("all", "embeds"):
        inputs.update(langs=random_ids(N_LANGS, batch, seq_len, seed=43),
                      token_type_ids=random_ids(3, batch, seq_len, seed=44))
    if case == "all":
        inputs["position_ids"] = random_ids(MAX_POSITIONS, batch, seq_len, seed=45)
    lengths = torch.tensor([seq_len, 0, max(seq_len - 3, 1)][:batch], device=DEVICE)
    inputs["row_mask"] = (torch.arange(seq_len, device=DEVICE)[None] < lengths[:, None]).float()
    return inputs


@pytest.mark.parametrize("p, case, batch, seq_len, dim, dtype", [
    (0.1, "all", 3, 7, 80, torch.float32),
    (0.5, "all", 3, 7, 80, torch.float32),
    (0.5, "ids", 1, 1, 64, torch.float32),
    (0.1, "embeds", 2, 5, 100, torch.float32),
    (0.5, "embeds", 3, 5, 48, torch.float32),
    (0.1, "all", 2, 7, 80, torch.bfloat16),
])
def test_dropout_against_fp64(p, case, batch, seq_len, dim, dtype):
    """Output and every gradient against fp64 autograd of the reference with the kernel's
    mask (keep_mask of the (batch, seq, dim) output), applied after the LayerNorm and
    before the padding mask; the backward regenerates the forward's mask."""
    tables = make_tables(dim, dtype, seed=40)
    inputs = dropout_inputs(case, batch, seq_len, dim)
    inputs = {name: t.to(dtype) if t.is_floating_point() else t for name, t in inputs.items()}
    out, grads, expected, expected_out = run_both(tables, 1e-12, dtype, seed=46, dropout_p=p, **inputs)
    assert_close(out, expected_out, dtype)
    assert_grads_close(grads, expected, dtype)
    assert (out[inputs["row_mask"] == 0] == 0).all()


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_one_minus_p(p):
    """ln_weight = 0, ln_bias = 1: the output is the dropout factor itself, 0 or 1 / (1 - p);
    over 64 x 1024 elements the kept fraction is 1 - p within 5 binomial standard deviations."""
    tables = make_tables(1024, torch.float32, seed=47)
    with torch.no_grad():
        out = embedding_layer_norm(random_ids(VOCAB, 4, 16, seed=48), tables["word_embeddings"],
                                   tables["position_embeddings"], torch.zeros(1024, device=DEVICE),
                                   torch.ones(1024, device=DEVICE), 1e-5, dropout_p=p)
    kept = out != 0
    assert torch.allclose(out[kept], torch.tensor(1 / (1 - p), device=DEVICE))
    fraction = kept.double().mean().item()
    assert abs(fraction - (1 - p)) <= 5 * (p * (1 - p) / out.numel()) ** 0.5, fraction


def test_dropout_is_reproducible_from_torch_seed():
    """One torch seed: bit-identical outputs and gradients on two runs, and the no-grad
    route gives the same output; another seed gives another output."""
    tables = make_tables(80, torch.float32, seed=49)
    inputs = dropout_inputs("all", 3, 7, 80)
    out, grads, _, _ = run_both(tables, 1e-5, torch.float32, seed=50, dropout_p=0.3, **inputs)
    again, grads_again, _, _ = run_both(tables, 1e-5, torch.float32, seed=50, dropout_p=0.3, **inputs)
    assert torch.equal(out, again)
    assert all(torch.equal(grads[name], grads_again[name]) for name in grads)
    args = (inputs.pop("input_ids"), tables["word_embeddings"], tables["position_embeddings"], tables["ln_weight"],
            tables["ln_bias"], 1e-5)
    with torch.no_grad():
        torch.manual_seed(50)
        inference = embedding_layer_norm(*args, lang_embeddings=tables["lang_embeddings"], dropout_p=0.3, **inputs)
        assert torch.equal(inference, out.detach())
        torch.manual_seed(51)
        other = embedding_layer_norm(*args, lang_embeddings=tables["lang_embeddings"], dropout_p=0.3, **inputs)
        assert not torch.equal(other, out.detach())


def test_dropout_p_zero_is_no_dropout():
    """dropout_p=0 gives the bits of omitting it, forward and backward, and draws no seed."""
    tables = make_tables(80, torch.float32, seed=52)
    inputs = dropout_inputs("all", 3, 7, 80)
    out, grads, _, _ = run_both(tables, 1e-5, torch.float32, seed=53, **inputs)
    state = torch.get_rng_state()
    zero_out, zero_grads, _, _ = run_both(tables, 1e-5, torch.float32, seed=53, dropout_p=0.0, **inputs)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(out, zero_out)
    assert all(torch.equal(grads[name], zero_grads[name]) for name in grads)


@pytest.mark.parametrize("dropout_p", [-0.1, 1.0, "0.1", True])
def test_rejects_bad_dropout_p(dropout_p):
    tables = make_tables(32, torch.float32)
    with pytest.raises(ValueError, match="dropout_p"):
        embedding_layer_norm(random_ids(VOCAB, 2, 4, seed=54), tables["word_embeddings"],
                             tables["position_embeddings"], tables["ln_weight"], tables["ln_bias"], 1e-5,
                             dropout_p=dropout_p)
