"""Shared fixtures: small random XLM configurations and twin models (transformers and
xlm_fast) holding the same weights."""

import os

import pytest
import torch

# Without CUDA the Triton kernels run in Triton's CPU interpreter; the variable must be
# set before triton_kernels is imported (conftest is imported before every test file).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

import xlm_fast  # noqa: E402

transformers = pytest.importorskip("transformers")  # noqa: E402

# Small configurations covering the variants the issue names; n_heads=3 and 5 give
# non-power-of-two head counts (head_dim 8 and 6).
CONFIGS = {
    "base": dict(vocab_size=101, emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=40),
    "causal": dict(vocab_size=101, emb_dim=24, n_layers=2, n_heads=3, causal=True, max_position_embeddings=40),
    "sinusoidal": dict(vocab_size=90, emb_dim=30, n_layers=2, n_heads=5, sinusoidal_embeddings=True,
                       max_position_embeddings=40),
    "multilingual": dict(vocab_size=120, emb_dim=32, n_layers=3, n_heads=4, n_langs=3, max_position_embeddings=40,
                         lang2id={"en": 0, "fr": 1, "ro": 2}),
    "relu": dict(vocab_size=80, emb_dim=16, n_layers=2, n_heads=2, gelu_activation=False, max_position_embeddings=40),
}


def make_twins(class_name, config_name="base", **overrides):
    """(transformers model, xlm_fast model) of `class_name` with identical weights, eval mode."""
    kwargs = dict(CONFIGS[config_name], **overrides)
    torch.manual_seed(0)
    hf_model = getattr(transformers, class_name)(transformers.XLMConfig(**kwargs)).eval()
    ours = getattr(xlm_fast, class_name)(xlm_fast.XLMConfig(**kwargs)).eval()
    info = ours.load_checkpoint(hf_model.state_dict())
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return hf_model, ours


def random_batch(config_name="base", batch=3, seq=9, padded=True, seed=1):
    """input_ids (batch, seq) avoiding the pad id, right-padded rows when `padded`,
    plus a matching attention_mask."""
    cfg = CONFIGS[config_name]
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, cfg["vocab_size"], (batch, seq), generator=generator)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if padded and batch > 1:
        ids[1, seq - 3:] = 2
        mask[1, seq - 3:] = 0
    return ids, mask


def relative_error(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


@pytest.fixture
def twins():
    return make_twins
