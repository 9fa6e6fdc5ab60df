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
