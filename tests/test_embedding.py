"""triton_kernels.embedding against an fp64 PyTorch reference of XLM's embeddings.

Without CUDA the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set
by conftest.py); with CUDA it runs compiled on the GPU.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
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
              row_mask=None):
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


def run_both(tables, eps, dtype, seed, **inputs):
    """(kernel output, its gradients, fp64 reference gradients) for a random dL/dy:
    gradients by name (the tables, and inputs_embeds when given)."""
    leaves = {name: tables[name].clone().requires_grad_() for name in TABLES}
    reference_leaves = {name: tables[name].double().requires_grad_() for name in TABLES}
    embeds = inputs.pop("inputs_embeds", None)
    if embeds is not None:
        leaves["inputs_embeds"] = embeds.clone().requires_grad_()
        reference_leaves["inputs_embeds"] = embeds.double().requires_grad_()
    use_langs = inputs.get("langs") is not None
    out = embedding_layer_norm(
        inputs.get("input_ids"), leaves["word_embeddings"], leaves["position_embeddings"], leaves["ln_weight"],
        leaves["ln_bias"], eps, inputs_embeds=leaves.get("inputs_embeds"), position_ids=inputs.get("position_ids"),
        langs=inputs.get("langs"), lang_embeddings=leaves["lang_embeddings"] if use_langs else None,
        token_type_ids=inputs.get("token_type_ids"), row_mask=inputs.get("row_mask"))
    expected = reference(reference_leaves, eps, inputs_embeds=reference_leaves.get("inputs_embeds"), **inputs)
    generator = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(DEVICE)
    out.backward(grad_out.to(dtype))
    expected.backward(grad_out)
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    return out, grads, {name: leaf.grad for name, leaf in reference_leaves.items()}


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
    _, grads, expected = run_both(tables, 1e-12, dtype, seed=16, **inputs)
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
    _, grads, expected = run_both(tables, 1e-5, torch.float32, seed=21, **inputs)
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
