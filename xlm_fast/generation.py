"""generate() for XLMWithLMHeadModel with transformers' XLM scheme: each step appends
`mask_token_id` to the sequence, fills `langs` with `lang_id`, and predicts the token at
the mask's position.

For causal models the keys and values of the real tokens are cached, so a step runs
only the newest token and the mask (transformers recomputes the whole prefix): the
mask's entries are dropped from the cache after each step, since the next step puts
the predicted token at that position. Bidirectional (MLM) models let every position see
the mask, so they are recomputed in full at each step, as in transformers.
"""

import torch
from torch.nn import functional as F


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name, value):
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_token_id(name, value, limit, optional):
    """An id in [0, limit) (or None when optional): it is fed to the model or written out."""
    if value is None and optional:
        return
    if not _is_int(value) or not 0 <= value < limit:
        raise ValueError(f"{name} must be an int in [0, {limit}){' or None' if optional else ''}, got {value!r}")


def filter_top_k(logits, top_k):
    """Keeps the top_k largest logits per row (bs, vocab); the rest become -inf."""
    top_k = min(top_k, logits.size(-1))
    threshold = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits, top_p):
    """Nucleus filter: keeps the smallest set of tokens whose probability reaches top_p
    (at least one token per row)."""
    sorted_logits, sorted_index = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_index, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def drop_last_cached_position(cache):
    """Removes the newest position from every layer's keys/values (bs, heads, klen, hd)."""
    for key, value in cache.items():
        if key != "slen":
            k, v = value
            cache[key] = (k[:, :, :-1], v[:, :, :-1])
    cache["slen"] -= 1


class GenerationMixin:
    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens=None, max_length=None, do_sample=False, temperature=1.0,
                 top_k=50, top_p=1.0, eos_token_id=None, pad_token_id=None, generator=None,
                 mask_token_id=None, lang_id=None, use_cache=True):
        """input_ids (batch, prompt_len) -> (batch, prompt_len + generated) int64.

        Greedy by default; do_sample=True samples with temperature, top_k and top_p
        (transformers' defaults: 1.0, 50, 1.0) from `generator` (a torch.Generator, for
        reproducible draws). Stops after max_new_tokens (or at max_length in total,
        default 20), or when every sequence has produced eos_token_id; finished
        sequences are padded with pad_token_id.
        """
        config = self.config
        if not torch.is_tensor(input_ids) or input_ids.is_floating_point() or input_ids.is_complex():
            raise TypeError(f"input_ids must be an integer tensor, got {getattr(input_ids, 'dtype', type(input_ids))}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, prompt_len), got {tuple(input_ids.shape)}")
        if input_ids.size(1) == 0:
            raise ValueError("input_ids must hold at least one token per sequence")
        prompt_len = input_ids.size(1)
        if max_new_tokens is not None:
            _positive_int("max_new_tokens", max_new_tokens)
            total = prompt_len + max_new_tokens
        else:
            total = 20 if max_length is None else max_length
            _positive_int("max_length", total)
        if total + 1 > config.max_position_embeddings:
            raise ValueError(
                f"max_length/max_new_tokens: {total} tokens plus the mask token exceed "
                f"max_position_embeddings ({config.max_position_embeddings})"
            )
        for name, flag in (("do_sample", do_sample), ("use_cache", use_cache)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if do_sample:
            number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
            if not number(temperature) or not temperature > 0 or temperature == float("inf"):
                raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
            if not _is_int(top_k) or top_k < 0:
                raise ValueError(f"top_k must be a non-negative integer, got {top_k!r}")
            if not number(top_p) or not 0 < top_p <= 1:
                raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        eos_token_id = config.eos_token_id if eos_token_id is None else eos_token_id
        pad_token_id = config.pad_token_id if pad_token_id is None else pad_token_id
        mask_token_id = config.mask_token_id if mask_token_id is None else mask_token_id
        lang_id = config.lang_id if lang_id is None else lang_id
        _check_token_id("mask_token_id", mask_token_id, config.vocab_size, optional=False)
        _check_token_id("pad_token_id", pad_token_id, config.vocab_size, optional=True)
        _check_token_id("lang_id", lang_id, config.n_langs, optional=True)
        # Any int: an id outside the vocabulary (e.g. -1) is never produced, so never stops.
        if not (eos_token_id is None or _is_int(eos_token_id)
                or (isinstance(eos_token_id, (list, tuple)) and all(map(_is_int, eos_token_id)))):
            raise ValueError(f"eos_token_id must be an int, a list of ints or None, got {eos_token_id!r}")
        eos_ids = torch.tensor(
            [] if eos_token_id is None else list(eos_token_id) if isinstance(eos_token_id, (list, tuple))
            else [eos_token_id], device=input_ids.device, dtype=torch.long,
        )

        cache = {"slen": 0} if use_cache and config.causal else None
        sequences = input_ids.long()
        unfinished = torch.ones(sequences.size(0), dtype=torch.bool, device=sequences.device)
        mask_column = torch.full((sequences.size(0), 1), mask_token_id, dtype=torch.long, device=sequences.device)
        while sequences.size(1) < total:
            step_input = torch.cat([sequences, mask_column], dim=1)
            langs = torch.full_like(step_input, lang_id) if lang_id is not None else None
            hidden = self.transformer(step_input, langs=langs, cache=cache, return_dict=True).last_hidden_state
            # Only the mask's position is scored: the vocabulary projection of every
            # other position would be thrown away.
            logits = self.pred_layer(hidden[:, -1:])[0][:, -1].float()
            if cache is not None:
                drop_last_cached_position(cache)
            next_tokens = self._choose_tokens(logits, do_sample, temperature, top_k, top_p, generator)
            if pad_token_id is not None:
                next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad_token_id))
            sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
            if eos_ids.numel():
                unfinished &= ~torch.isin(next_tokens, eos_ids)
                if not bool(unfinished.any()):
                    break
        return sequences

    @staticmethod
    def _choose_tokens(logits, do_sample, temperature, top_k, top_p, generator):
        """logits (bs, vocab) -> next token ids (bs,)."""
        if not do_sample:
            return logits.argmax(dim=-1)
        logits = logits / temperature
        if top_k:
            logits = filter_top_k(logits, top_k)
        if top_p < 1.0:
            logits = filter_top_p(logits, top_p)
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
