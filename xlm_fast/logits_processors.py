"""The score processors of generate(), as small functions, in the order transformers applies
them: repetition penalty, n-gram blocking, bad words, the eos ban before min_new_tokens,
then (sampling only) temperature, top_k and top_p.

Each takes scores (rows, vocab) and returns new scores. Those that look at the history
take `tokens` (rows, width) and `lengths` (rows,): row r's history is tokens[r, :lengths[r]]
(prompts are left-aligned, so padding never counts as history)."""

import torch


def _history_mask(tokens, lengths):
    """(rows, width) bool: which columns of `tokens` belong to their row's history."""
    return torch.arange(tokens.size(1), device=tokens.device)[None, :] < lengths[:, None]


def repetition_penalty(scores, tokens, lengths, penalty):
    """Every token id seen in a row's history: a positive score divided by `penalty`, a
    negative one multiplied by it (CTRL's rule)."""
    seen = torch.zeros_like(scores).scatter_add_(1, tokens, _history_mask(tokens, lengths).to(scores.dtype)) > 0
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalized, scores)


def no_repeat_ngram(scores, tokens, lengths, size):
    """Bans each token that would complete an n-gram of `size` tokens already in the row's
    history: the (size - 1) last tokens are matched against every earlier window."""
    width = tokens.size(1)
    if width < size:
        return scores
    windows = tokens.unfold(1, size, 1)  # (rows, width - size + 1, size)
    starts = torch.arange(windows.size(1), device=tokens.device)
    # the (size - 1)-token suffix of each history; clamped indices only for rows too short to match
    suffix_index = (lengths[:, None] - (size - 1) + torch.arange(size - 1, device=tokens.device)).clamp_min(0)
    suffix = tokens.gather(1, suffix_index)  # (rows, size - 1)
    matches = (windows[..., :-1] == suffix[:, None, :]).all(-1) & (starts[None, :] + size <= lengths[:, None])
    banned = torch.zeros_like(scores).scatter_add_(1, windows[..., -1], matches.to(scores.dtype)) > 0
    return scores.masked_fill(banned, float("-inf"))


def bad_words(scores, tokens, lengths, bad_words_ids):
    """Bans the last token of every sequence in `bad_words_ids` (lists of ids) whose other
    tokens end the row's history (which must be longer than them, as in transformers);
    one-token sequences are banned always."""
    banned = torch.zeros_like(scores, dtype=torch.bool)
    for words in bad_words_ids:
        *prefix, last = words
        if not prefix:
            banned[:, last] = True
            continue
        n = len(prefix)
        if tokens.size(1) <= n:
            continue
        index = (lengths[:, None] - n + torch.arange(n, device=tokens.device)).clamp_min(0)
        expected = torch.tensor(prefix, device=tokens.device)
        hit = (tokens.gather(1, index) == expected).all(-1) & (lengths > n)
        banned[:, last] |= hit
    return scores.masked_fill(banned, float("-inf"))


def ban_tokens(scores, token_ids):
    """token_ids (n,) long: those columns become -inf (eos before min_new_tokens)."""
    scores = scores.clone()
    scores[:, token_ids] = float("-inf")
    return scores


def filter_top_k(logits, top_k, min_tokens_to_keep=1):
    """Keeps the top_k largest logits per row (bs, vocab); the rest become -inf."""
    top_k = min(max(top_k, min_tokens_to_keep), logits.size(-1))
    threshold = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits, top_p, min_tokens_to_keep=1):
    """Nucleus filter: keeps the smallest set of tokens whose probability reaches top_p
    (at least min_tokens_to_keep per row)."""
    sorted_logits, sorted_index = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(-1, sorted_index, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def process_scores(scores, tokens, lengths, step, params, eos_ids, sampling, min_tokens_to_keep=1):
    """Applies every processor that `params` (the resolved generation parameters) turns on.
    step: how many tokens each row has generated so far; eos_ids (n,) long."""
    if params["repetition_penalty"] != 1.0:
        scores = repetition_penalty(scores, tokens, lengths, params["repetition_penalty"])
    if params["no_repeat_ngram_size"]:
        scores = no_repeat_ngram(scores, tokens, lengths, params["no_repeat_ngram_size"])
    if params["bad_words_ids"]:
        scores = bad_words(scores, tokens, lengths, params["bad_words_ids"])
    if step < params["min_new_tokens"] and eos_ids.numel():
        scores = ban_tokens(scores, eos_ids)
    if sampling:
        if params["temperature"] != 1.0:
            scores = scores / params["temperature"]
        if params["top_k"]:
            scores = filter_top_k(scores, params["top_k"], min_tokens_to_keep)
        if params["top_p"] < 1.0:
            scores = filter_top_p(scores, params["top_p"], min_tokens_to_keep)
    return scores
