"""Each score processor against transformers' processor of the same name, on random scores
and histories; and the padding rule: history past a row's length does not count."""

import pytest
import torch

from xlm_fast import logits_processors as lp

lp_hf = pytest.importorskip("transformers.generation.logits_process")


def random_case(rows=4, width=7, vocab=30, seed=0, ids=6):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, ids, (rows, width), generator=generator)  # few ids: repeats and n-gram hits
    scores = torch.randn(rows, vocab, generator=generator) * 3
    return scores, tokens, torch.full((rows,), width)


@pytest.mark.parametrize("penalty", [0.5, 1.7])
def test_repetition_penalty_matches_transformers(penalty):
    scores, tokens, lengths = random_case()
    expected = lp_hf.RepetitionPenaltyLogitsProcessor(penalty)(tokens, scores.clone())
    assert torch.equal(lp.repetition_penalty(scores, tokens, lengths, penalty), expected)


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_no_repeat_ngram_matches_transformers(size):
    scores, tokens, lengths = random_case(width=12, ids=3)
    expected = lp_hf.NoRepeatNGramLogitsProcessor(size)(tokens, scores.clone())
    actual = lp.no_repeat_ngram(scores, tokens, lengths, size)
    assert torch.equal(torch.isinf(actual), torch.isinf(expected))
    assert torch.isinf(actual).any() or size > 3


def test_bad_words_match_transformers():
    scores, tokens, lengths = random_case()
    words = [[7], [tokens[0, -1].item(), 9], [tokens[1, -2].item(), tokens[1, -1].item(), 11], [1, 2, 3, 4, 5, 6, 7, 8]]
    expected = lp_hf.NoBadWordsLogitsProcessor(words, eos_token_id=29)(tokens, scores.clone())
    actual = lp.bad_words(scores, tokens, lengths, words)
    assert torch.equal(torch.isinf(actual), torch.isinf(expected))
    assert torch.isinf(actual[0, 9]) and torch.isinf(actual[1, 11]) and torch.isinf(actual[:, 7]).all()


@pytest.mark.parametrize("top_k,top_p,keep", [(5, 1.0, 1), (0, 0.6, 1), (3, 0.3, 2), (1, 0.1, 3)])
def test_top_k_top_p_match_transformers(top_k, top_p, keep):
    scores, _, _ = random_case(vocab=50)
    expected = scores.clone()
    if top_k:
        expected = lp_hf.TopKLogitsWarper(top_k, min_tokens_to_keep=keep)(None, expected)
        actual = lp.filter_top_k(scores, top_k, keep)
    else:
        actual = scores
    if top_p < 1:
        expected = lp_hf.TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(None, expected)
        actual = lp.filter_top_p(actual, top_p, keep)
    assert torch.equal(torch.isinf(actual), torch.isinf(expected))
    assert (~torch.isinf(actual)).sum(dim=1).min() >= keep


def test_history_past_a_row_length_is_ignored():
    scores, tokens, _ = random_case(rows=1, width=5)
    tokens = torch.tensor([[3, 4, 3, 9, 9]])
    short = torch.tensor([3])  # history [3, 4, 3]; the 9s are padding
    penalized = lp.repetition_penalty(scores, tokens, short, 2.0)
    assert not torch.equal(penalized[0, 3], scores[0, 3]) and torch.equal(penalized[0, 9], scores[0, 9])
    blocked = lp.no_repeat_ngram(scores, tokens, short, 2)  # suffix [3] was followed by 4
    assert torch.isinf(blocked[0, 4]) and torch.isinf(blocked).sum() == 1
    assert torch.equal(lp.bad_words(scores, tokens, short, [[9, 1]]), scores)


def test_process_scores_bans_eos_before_min_new_tokens_only():
    scores, tokens, lengths = random_case()
    params = dict(repetition_penalty=1.0, no_repeat_ngram_size=0, bad_words_ids=None, min_new_tokens=2)
    eos = torch.tensor([1, 2])
    assert torch.isinf(lp.process_scores(scores, tokens, lengths, 1, params, eos, sampling=False)[:, [1, 2]]).all()
    assert torch.equal(lp.process_scores(scores, tokens, lengths, 2, params, eos, sampling=False), scores)
