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

transformers = pytest.importorskip("transformers")


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


# ---- transformers' generate() arguments ------------------------------------------------
def prompts(batch=3, length=5, seed=3):
    return torch.randint(4, 90, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_same_output(expected, actual, eos_ids=(), prompt_len=5):
    """Same sequences, and the same scores for every row still running at each step (after
    its eos, transformers scores a row whose padding hides its mask token: nothing it uses)."""
    assert torch.equal(actual.sequences, expected.sequences)
    assert len(actual.scores) == len(expected.scores)
    generated = actual.sequences[:, prompt_len:]
    for step, (theirs, ours) in enumerate(zip(expected.scores, actual.scores)):
        assert ours.shape == theirs.shape
        running = ~torch.isin(generated[:, :step], torch.tensor(list(eos_ids), dtype=torch.long)).any(dim=1)
        if ours.size(0) != running.size(0):  # beam rows never hold a finished sequence
            running = torch.ones(ours.size(0), dtype=torch.bool)
        assert torch.allclose(ours[running], theirs[running], rtol=1e-5, atol=1e-5)
    if getattr(expected, "sequences_scores", None) is not None:
        assert torch.allclose(actual.sequences_scores, expected.sequences_scores, rtol=1e-5, atol=1e-6)


EVERY_THIRD = list(range(4, 90, 3))  # many eos ids, so that sequences end at different lengths

PROCESSOR_CASES = [
    dict(repetition_penalty=1.5),
    dict(repetition_penalty=0.6),
    dict(no_repeat_ngram_size=1),
    dict(no_repeat_ngram_size=2),
    dict(bad_words_ids=[[20], [5, 6], [7, 8, 9]]),
    dict(min_new_tokens=6, eos_token_id=EVERY_THIRD),
    dict(min_length=9, eos_token_id=EVERY_THIRD),
    dict(eos_token_id=EVERY_THIRD, pad_token_id=0),
    dict(max_length=13),
]


@pytest.mark.parametrize("kwargs", PROCESSOR_CASES, ids=lambda kw: ",".join(kw))
@pytest.mark.parametrize("config_name", ["causal", "base"])
def test_score_processors_match_transformers(config_name, kwargs):
    hf_model, ours = lm_twins(config_name)
    ids = prompts()
    kwargs = dict(dict(max_new_tokens=10), **kwargs) if "max_length" not in kwargs else kwargs
    expected = hf_model.generate(ids, use_cache=False, return_dict_in_generate=True, output_scores=True, **kwargs)
    for use_cache in (True, False):
        actual = ours.generate(ids, use_cache=use_cache, return_dict_in_generate=True, output_scores=True, **kwargs)
        eos = kwargs.get("eos_token_id", hf_model.config.eos_token_id)
        assert_same_output(expected, actual, eos if isinstance(eos, list) else [eos])


@pytest.mark.parametrize("config_name", ["causal", "base"])
def test_eos_list_stops_rows_and_pads_them(config_name):
    hf_model, ours = lm_twins(config_name)
    ids = prompts(batch=6)
    eos = list(range(4, 101, 2))
    out = ours.generate(ids, max_new_tokens=10, eos_token_id=eos, pad_token_id=99)
    assert torch.equal(out, hf_model.generate(ids, max_new_tokens=10, eos_token_id=eos, pad_token_id=99,
                                              use_cache=False))
    stops = [next((i for i, t in enumerate(row) if t in eos), None) for row in out[:, 5:].tolist()]
    assert any(stop is not None and stop < out.size(1) - 6 for stop in stops)  # not vacuous
    for row, stop in zip(out[:, 5:].tolist(), stops):
        if stop is not None:
            assert all(t == 99 for t in row[stop + 1:])


def test_output_logits_and_scores_are_per_step_tuples():
    hf_model, ours = lm_twins("causal")
    ids = prompts(batch=2)
    kwargs = dict(max_new_tokens=4, repetition_penalty=1.3, return_dict_in_generate=True, output_scores=True,
                  output_logits=True)
    expected = hf_model.generate(ids, use_cache=False, **kwargs)
    actual = ours.generate(ids, **kwargs)
    assert type(actual).__name__ == "GenerateDecoderOnlyOutput"
    assert isinstance(actual.scores, tuple) and len(actual.scores) == 4
    assert all(s.shape == (2, 101) for s in actual.scores)
    for theirs, ours_logits in zip(expected.logits, actual.logits):
        assert torch.allclose(ours_logits, theirs, rtol=1e-5, atol=1e-5)
    assert not torch.equal(actual.scores[1], actual.logits[1])  # the penalty changed the processed scores
    assert torch.equal(ours.generate(ids, max_new_tokens=4, repetition_penalty=1.3), actual.sequences)


# ---- padded prompts --------------------------------------------------------------------
def padded_batch(rows, side, pad_id=2):
    """rows: lists of ids -> (input_ids, attention_mask) padded on `side` to the longest."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3), dict(no_repeat_ngram_size=2, repetition_penalty=1.4)],
                         ids=["greedy", "beams", "processors"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("config_name,use_cache", [("causal", True), ("causal", False), ("base", True)])
def test_padded_prompt_continues_as_the_prompt_alone(config_name, use_cache, side, kwargs):
    _, ours = lm_twins(config_name)
    ids, mask = padded_batch(ROWS, side)
    batch = ours.generate(ids, attention_mask=mask, max_new_tokens=8, use_cache=use_cache, eos_token_id=-1,
                          **kwargs)
    assert torch.equal(batch[:, :ids.size(1)], ids)  # the prompt comes back as given, padding included
    for i, row in enumerate(ROWS):
        alone = ours.generate(torch.tensor([row]), max_new_tokens=8, use_cache=use_cache, eos_token_id=-1, **kwargs)
        assert batch[i, ids.size(1):].tolist() == alone[0, len(row):].tolist()


def test_transformers_padded_prompt_does_not_continue_as_alone():
    """Why xlm_fast does not copy transformers here (README, deliberate differences): its
    XLM generate drops attention_mask and sets lengths = number of non-pad tokens, which
    masks the mask token of every padded row, so those rows decode from the bias alone."""
    hf_model, _ = lm_twins("causal")
    ids, mask = padded_batch(ROWS, "left")
    batch = hf_model.generate(ids, attention_mask=mask, max_new_tokens=6, use_cache=False, eos_token_id=None)
    alone = hf_model.generate(torch.tensor([ROWS[1]]), max_new_tokens=6, use_cache=False, eos_token_id=None)
    assert batch[1, ids.size(1):].tolist() != alone[0, 2:].tolist()
    assert len(set(batch[1, ids.size(1):].tolist())) == 1  # one token, the argmax of the output bias


def test_attention_mask_defaults_to_the_non_pad_tokens():
    _, ours = lm_twins("causal")
    ids, mask = padded_batch(ROWS, "left")
    assert torch.equal(ours.generate(ids, max_new_tokens=5, pad_token_id=2),
                       ours.generate(ids, attention_mask=mask, max_new_tokens=5, pad_token_id=2))


def test_unpadded_attention_mask_changes_nothing():
    hf_model, ours = lm_twins("causal")
    ids = prompts()
    expected = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, use_cache=False)
    assert torch.equal(ours.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8), expected)


# ---- sampling --------------------------------------------------------------------------
def reference_sampler(ours, ids, steps, temperature, top_k, top_p, seed):
    """The documented scheme with transformers' warpers, drawn from a seeded generator."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    generator = torch.Generator().manual_seed(seed)
    config = ours.config
    for _ in range(steps):
        with_mask = torch.cat([ids, torch.full((ids.size(0), 1), config.mask_token_id)], dim=1)
        logits = ours(input_ids=with_mask).logits[:, -1].float()
        for warper in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)):
            logits = warper(ids, logits)
        ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=generator)], dim=1)
    return ids


@pytest.mark.parametrize("config_name", ["causal", "base"])
def test_sampling_equals_a_seeded_reference(config_name):
    _, ours = lm_twins(config_name)
    ids = prompts()
    kwargs = dict(temperature=0.7, top_k=20, top_p=0.9)
    with torch.no_grad():
        expected = reference_sampler(ours, ids, 10, seed=11, **kwargs)
    actual = ours.generate(ids, max_new_tokens=10, do_sample=True, eos_token_id=-1,
                           generator=torch.Generator().manual_seed(11), **kwargs)
    assert torch.equal(actual, expected)


def test_sampling_with_the_global_seed_equals_transformers():
    """Without a generator both draw from torch's global RNG, once per step."""
    hf_model, ours = lm_twins("causal")
    ids = prompts()
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=1.3, top_k=30, top_p=0.95, num_return_sequences=2)
    torch.manual_seed(5)
    expected = hf_model.generate(ids, use_cache=False, **kwargs)
    torch.manual_seed(5)
    assert torch.equal(ours.generate(ids, **kwargs), expected)


def test_sampling_spreads_over_the_allowed_tokens():
    _, ours = lm_twins("causal")
    ids = prompts(batch=1).expand(400, -1)
    logits = ours(input_ids=torch.cat([ids[:1], torch.zeros(1, 1, dtype=torch.long)], 1)).logits[0, -1]
    allowed = set(torch.topk(logits, 3).indices.tolist())
    drawn = ours.generate(ids, max_new_tokens=1, do_sample=True, top_k=3, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn[:, -1], minlength=101)
    assert set(torch.nonzero(counts).flatten().tolist()) <= allowed
    probs = torch.softmax(logits[sorted(allowed)], -1)
    assert torch.allclose(counts[sorted(allowed)] / 400.0, probs, atol=0.08)


# ---- generation_config -----------------------------------------------------------------
def test_generation_config_object_and_kwargs_override_it():
    hf_model, ours = lm_twins("causal")
    ids = prompts()
    config = transformers.GenerationConfig(max_new_tokens=7, num_beams=3, length_penalty=0.3, eos_token_id=EVERY_THIRD)
    expected = hf_model.generate(ids, generation_config=config, use_cache=False)
    assert torch.equal(ours.generate(ids, generation_config=config), expected)
    expected = hf_model.generate(ids, generation_config=config, num_beams=2, use_cache=False)
    assert torch.equal(ours.generate(ids, config, num_beams=2), expected)
    assert config.num_beams == 3  # the caller's object is not changed


def test_model_generation_config_is_the_default_and_is_used():
    from xlm_fast.generation_config import GenerationConfig

    hf_model, ours = lm_twins("causal")
    assert ours.can_generate() and type(ours).can_generate()
    assert isinstance(ours.generation_config, transformers.GenerationConfig)
    assert (ours.generation_config.eos_token_id, ours.generation_config.pad_token_id) == (1, 2)
    ours.generation_config.max_new_tokens = 4
    assert ours.generate(prompts()).shape == (3, 9)
    ours.generation_config = GenerationConfig(max_new_tokens=3, num_beams=2)
    hf_model.generation_config = transformers.GenerationConfig(max_new_tokens=3, num_beams=2)
    assert torch.equal(ours.generate(prompts()), hf_model.generate(prompts(), use_cache=False))


def test_generation_config_is_loaded_from_the_checkpoint_directory(tmp_path):
    _, ours = lm_twins("causal")
    assert ours._load_generation_config(str(tmp_path)).eos_token_id == 1  # no file: the model config's ids
    config = transformers.GenerationConfig(max_new_tokens=6, num_beams=2, eos_token_id=[1, 3])
    config.save_pretrained(str(tmp_path))
    loaded = ours._load_generation_config(str(tmp_path))
    assert (loaded.max_new_tokens, loaded.num_beams, loaded.eos_token_id) == (6, 2, [1, 3])
    assert ours.generation_config is loaded
    ours.generation_config.save_pretrained(str(tmp_path / "again"))
    assert transformers.GenerationConfig.from_pretrained(str(tmp_path / "again")).num_beams == 2


# ---- bad arguments ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        (dict(num_beams=0), ValueError, "num_beams"),
        (dict(num_beams=2.0), ValueError, "num_beams"),
        (dict(num_beams=2, num_return_sequences=3), ValueError, "num_return_sequences"),
        (dict(num_return_sequences=2), ValueError, "num_return_sequences"),
        (dict(repetition_penalty=0.0), ValueError, "repetition_penalty"),
        (dict(repetition_penalty=-1.0), ValueError, "repetition_penalty"),
        (dict(no_repeat_ngram_size=-1), ValueError, "no_repeat_ngram_size"),
        (dict(min_new_tokens=3, max_new_tokens=2), ValueError, "min_new_tokens"),
        (dict(min_new_tokens=-1), ValueError, "min_new_tokens"),
        (dict(num_beams=2, early_stopping="sometimes"), ValueError, "early_stopping"),
        (dict(num_beams=2, length_penalty="long"), ValueError, "length_penalty"),
        (dict(bad_words_ids=[[]]), ValueError, "bad_words_ids"),
        (dict(bad_words_ids=[[500]]), ValueError, "bad_words_ids"),
        (dict(foo=1), ValueError, "foo"),
        (dict(typical_p=0.5), ValueError, "typical_p"),
        (dict(output_attentions=True), ValueError, "output_attentions"),
        (dict(return_dict_in_generate=1), TypeError, "return_dict_in_generate"),
        (dict(attention_mask=torch.ones(1, 4)), ValueError, "attention_mask"),
        (dict(attention_mask=torch.tensor([[0, 0, 0]])), ValueError, "attention_mask"),
        (dict(attention_mask=torch.tensor([[0, 2, 1]])), ValueError, "attention_mask"),
        (dict(generation_config={"num_beams": 2}), TypeError, "generation_config"),
    ],
)
def test_bad_generation_parameters_are_named(kwargs, error, name):
    _, ours = lm_twins("base")
    kwargs = dict(dict(max_new_tokens=2), **kwargs)
    with pytest.raises(error, match=name):
        ours.generate(torch.randint(4, 90, (1, 3)), **kwargs)


def test_unsupported_parameter_in_a_generation_config_is_named():
    _, ours = lm_twins("base")
    with pytest.raises(ValueError, match="typical_p"):
        ours.generate(torch.randint(4, 90, (1, 3)), transformers.GenerationConfig(typical_p=0.5, do_sample=True))
