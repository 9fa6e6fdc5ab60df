"""generate(): greedy follows XLM's documented scheme exactly as transformers computes it
(its forward in a greedy loop, and its generate(use_cache=False)); the causal cache
changes nothing but the cost; sampling is seedable and honours temperature/top_k/top_p.

transformers' generate with its default cache is not the oracle: from 5.24 on its cache
keeps each step's mask token, so its tokens drift from the documented scheme (README,
deliberate differences)."""

import pytest
import torch

from xlm_fast.generation import filter_top_k, filter_top_p

from conftest import make_twins


def lm_twins(config_name):
    # A larger init_std spreads the logits so that greedy decoding varies its tokens.
    return make_twins("XLMWithLMHeadModel", config_name, init_std=0.3, embed_init_std=0.5)


@torch.no_grad()
def documented_greedy(hf_model, ids, max_new_tokens):
    """XLM's generation scheme over transformers' forward: append mask_token_id, fill
    langs with lang_id, take the argmax at the mask position, replace the mask by it."""
    config = hf_model.config
    for _ in range(max_new_tokens):
        with_mask = torch.cat([ids, torch.full((ids.size(0), 1), config.mask_token_id)], dim=1)
        langs = None if config.lang_id is None else torch.full_like(with_mask, config.lang_id)
        logits = hf_model(input_ids=with_mask, langs=langs).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def transformers_greedy(hf_model, ids, max_new_tokens):
    return hf_model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, use_cache=False)


@pytest.mark.parametrize("oracle", [documented_greedy, transformers_greedy])
@pytest.mark.parametrize("config_name", ["base", "causal", "multilingual"])
def test_greedy_matches_the_documented_scheme(config_name, oracle):
    hf_model, ours = lm_twins(config_name)
    ids = torch.randint(4, 90, (3, 5), generator=torch.Generator().manual_seed(3))
    expected = oracle(hf_model, ids, 12)
    actual = ours.generate(ids, max_new_tokens=12, eos_token_id=-1)
    assert torch.equal(actual, expected)
    assert len(set(actual[:, 5:].flatten().tolist())) > 1  # not a degenerate repetition


def test_cache_does_not_change_causal_greedy_output():
    _, ours = lm_twins("causal")
    ids = torch.randint(4, 90, (2, 4))
    with_cache = ours.generate(ids, max_new_tokens=10, use_cache=True)
    without = ours.generate(ids, max_new_tokens=10, use_cache=False)
    assert torch.equal(with_cache, without)


def test_lang_id_and_mask_token_follow_the_config_scheme():
    hf_model, ours = lm_twins("multilingual")
    for model in (hf_model, ours):
        model.config.lang_id = 2
        model.config.mask_token_id = 7
    ids = torch.randint(4, 90, (2, 4))
    assert torch.equal(ours.generate(ids, max_new_tokens=6, eos_token_id=-1), documented_greedy(hf_model, ids, 6))
    assert torch.equal(ours.generate(ids, max_new_tokens=6), transformers_greedy(hf_model, ids, 6))


def test_max_length_counts_the_prompt_and_defaults_to_twenty():
    _, ours = lm_twins("base")
    ids = torch.randint(4, 90, (1, 6))
    assert ours.generate(ids, max_length=9, eos_token_id=-1).shape == (1, 9)
    assert ours.generate(ids, eos_token_id=-1).shape == (1, 20)


def test_stops_at_eos_and_pads_finished_sequences():
    _, ours = lm_twins("base")
    ids = torch.randint(4, 90, (3, 4))
    free = ours.generate(ids, max_new_tokens=8, eos_token_id=-1)
    eos = int(free[0, 5])  # the second generated token of row 0 becomes "eos"
    out = ours.generate(ids, max_new_tokens=8, eos_token_id=eos, pad_token_id=99)
    first = out[0, 4:].tolist()
    stop = first.index(eos)
    assert all(token == 99 for token in first[stop + 1:])
    if not any(eos in row for row in out[:, 4:].tolist()[1:]):
        assert out.shape[1] == 12


def test_sampling_is_reproducible_with_a_seeded_generator():
    _, ours = lm_twins("causal")
    ids = torch.randint(4, 90, (2, 3))
    draw = lambda seed: ours.generate(  # noqa: E731
        ids, max_new_tokens=10, do_sample=True, top_k=0, temperature=1.5,
        generator=torch.Generator().manual_seed(seed), eos_token_id=-1,
    )
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_top_k_one_sampling_is_greedy():
    _, ours = lm_twins("base")
    ids = torch.randint(4, 90, (2, 3))
    greedy = ours.generate(ids, max_new_tokens=6)
    sampled = ours.generate(ids, max_new_tokens=6, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy, sampled)


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_top_k(logits, 2)).tolist() == [[True, False, False, True]]
    probs = torch.softmax(logits, -1)  # [0.087, 0.644, 0.237, 0.032]
    kept = ~torch.isinf(filter_top_p(logits, 0.7))
    assert kept.tolist() == [[False, True, True, False]]
    assert (~torch.isinf(filter_top_p(logits, 0.5))).tolist() == [[False, True, False, False]]
    assert probs.sum().item() == pytest.approx(1.0)


def test_top_p_matches_transformers_warper():
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.randn(4, 50)
    expected = TopPLogitsWarper(top_p=0.8)(None, logits.clone())
    assert torch.equal(torch.isinf(filter_top_p(logits, 0.8)), torch.isinf(expected))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_length=-1), "max_length"),
        (dict(max_new_tokens=100), "max_position_embeddings"),
        (dict(do_sample=True, temperature=0.0), "temperature"),
        (dict(do_sample=True, top_p=1.5), "top_p"),
        (dict(do_sample=True, top_k=-2), "top_k"),
    ],
)
def test_bad_generation_arguments_are_rejected(kwargs, name):
    _, ours = lm_twins("base")
    with pytest.raises(ValueError, match=name):
        ours.generate(torch.randint(4, 90, (1, 3)), **kwargs)


def test_bad_prompt_is_rejected():
    _, ours = lm_twins("base")
    with pytest.raises(ValueError, match="input_ids"):
        ours.generate(torch.randint(4, 90, (3,)))
    with pytest.raises(TypeError, match="generator"):
        ours.generate(torch.randint(4, 90, (1, 3)), generator=3)


@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        (dict(mask_token_id=500), ValueError, "mask_token_id"),  # would surface as an input_ids range error
        (dict(lang_id=3), ValueError, "lang_id"),  # would surface as a langs range error
        (dict(pad_token_id="0"), ValueError, "pad_token_id"),
        (dict(pad_token_id=101), ValueError, "pad_token_id"),
        (dict(eos_token_id="1"), ValueError, "eos_token_id"),
        (dict(eos_token_id=[1, 2.0]), ValueError, "eos_token_id"),
        (dict(do_sample="yes"), TypeError, "do_sample"),
        (dict(use_cache=1), TypeError, "use_cache"),
        (dict(do_sample=True, temperature="1.0"), ValueError, "temperature"),
        (dict(do_sample=True, temperature=float("inf")), ValueError, "temperature"),
        (dict(do_sample=True, top_p="0.9"), ValueError, "top_p"),
        (dict(do_sample=True, top_k=True), ValueError, "top_k"),
    ],
)
def test_bad_token_ids_and_options_are_named(kwargs, error, name):
    _, ours = lm_twins("base")
    with pytest.raises(error, match=name):
        ours.generate(torch.randint(4, 90, (1, 3)), max_new_tokens=2, **kwargs)


def test_prompt_dtype_and_type_are_named():
    _, ours = lm_twins("base")
    ids = torch.randint(4, 90, (2, 3))
    with pytest.raises(TypeError, match="input_ids"):
        ours.generate(ids.float(), max_new_tokens=2)
    with pytest.raises(TypeError, match="input_ids"):
        ours.generate(ids.tolist(), max_new_tokens=2)
    with pytest.raises(ValueError, match="input_ids"):
        ours.generate(ids[:0], max_new_tokens=2)
    # narrower integer prompts are the same ids
    assert torch.equal(ours.generate(ids.int(), max_new_tokens=3), ours.generate(ids, max_new_tokens=3))
