"""Beam search (xlm_fast/beam_search.py) through generate(): sequences, sequences_scores,
per-step scores and beam_indices equal transformers' generate(use_cache=False) on the same
checkpoint, for length_penalty, every early_stopping mode and num_return_sequences; the
causal cache (reordered with the beams) changes nothing."""

import pytest
import torch

from conftest import make_twins

transformers = pytest.importorskip("transformers")

EOS = list(range(4, 101, 3))  # many eos ids: hypotheses finish at different lengths


def lm_twins(config_name):
    return make_twins("XLMWithLMHeadModel", config_name, init_std=0.3, embed_init_std=0.5)


CASES = [
    dict(num_beams=3),
    dict(num_beams=3, num_return_sequences=3, length_penalty=0.5),
    dict(num_beams=4, num_return_sequences=2, early_stopping=True, eos_token_id=EOS),
    dict(num_beams=2, early_stopping=False, length_penalty=-1.0, eos_token_id=EOS),
    dict(num_beams=2, early_stopping="never", length_penalty=2.0, eos_token_id=EOS),
    dict(num_beams=3, early_stopping="never", length_penalty=0.0, eos_token_id=EOS[:5]),
    dict(num_beams=3, no_repeat_ngram_size=2, repetition_penalty=1.3, min_new_tokens=3, eos_token_id=EOS),
]


def case_id(kwargs):
    return ",".join(f"{k}={v}" for k, v in kwargs.items() if k != "eos_token_id")


@pytest.mark.parametrize("kwargs", CASES, ids=case_id)
@pytest.mark.parametrize("config_name", ["causal", "base"])
def test_beam_search_matches_transformers(config_name, kwargs):
    hf_model, ours = lm_twins(config_name)
    ids = torch.randint(4, 90, (3, 5), generator=torch.Generator().manual_seed(3))
    call = dict(max_new_tokens=9, return_dict_in_generate=True, output_scores=True, output_logits=True, **kwargs)
    expected = hf_model.generate(ids, use_cache=False, **call)
    for use_cache in (True, False):
        actual = ours.generate(ids, use_cache=use_cache, **call)
        assert type(actual).__name__ == "GenerateBeamDecoderOnlyOutput"
        assert torch.equal(actual.sequences, expected.sequences)
        assert torch.allclose(actual.sequences_scores, expected.sequences_scores, rtol=1e-5, atol=1e-6)
        assert torch.equal(actual.beam_indices.long(), expected.beam_indices.long())
        assert len(actual.scores) == len(expected.scores)
        for ours_scores, theirs in zip(actual.scores, expected.scores):
            assert ours_scores.shape == (3 * kwargs["num_beams"], 101)
            assert torch.allclose(ours_scores, theirs, rtol=1e-5, atol=1e-5)
        assert torch.equal(ours.generate(ids, use_cache=use_cache, max_new_tokens=9, **kwargs), actual.sequences)


def test_hypotheses_of_different_lengths_are_padded_and_best_first():
    _, ours = lm_twins("causal")
    ids = torch.randint(4, 90, (2, 4), generator=torch.Generator().manual_seed(1))
    out = ours.generate(ids, max_new_tokens=8, num_beams=4, num_return_sequences=4, eos_token_id=EOS, pad_token_id=99,
                        return_dict_in_generate=True, output_scores=True)
    scores = out.sequences_scores.view(2, 4)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    lengths = (out.beam_indices >= 0).sum(dim=1)
    assert len(set(lengths.tolist())) > 1  # not vacuous: some hypotheses ended early
    for row, length in zip(out.sequences[:, 4:].tolist(), lengths.tolist()):
        assert row[length - 1] in EOS or length == 8
        assert all(token == 99 for token in row[length:])


def test_beam_sampling_is_reproducible():
    _, ours = lm_twins("causal")
    ids = torch.randint(4, 90, (2, 4))
    draw = lambda seed: ours.generate(ids, max_new_tokens=6, num_beams=3, do_sample=True, top_k=10,  # noqa: E731
                                      generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1), draw(1))
    assert any(not torch.equal(draw(1), draw(seed)) for seed in range(2, 6))
