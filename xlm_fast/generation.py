"""generate() for XLMWithLMHeadModel with XLM's documented scheme: each step appends
`mask_token_id` to the sequence, fills `langs` with `lang_id`, and predicts the token at
the mask's position.

Prompts are kept left-aligned: row r's tokens (those its attention_mask marks) fill
columns [0, length_r), its mask token sits at column length_r, and `lengths` hides the
columns after it. A padded prompt therefore decodes exactly as the same prompt alone,
with the same positions, and the same holds for its history in the score processors.
(transformers' XLM drops attention_mask in generate and derives `lengths` from pad tokens,
which hides the mask token of every padded row: README, deliberate differences.)

For causal models the keys and values of the positions that every row has finished are
cached, so a step computes only the columns from the shortest row's newest token to the
longest row's mask (two columns for unpadded prompts; transformers recomputes the whole
prefix). Bidirectional (MLM) models let every position see the mask, so they are
recomputed in full at each step, as in transformers.
"""

import torch

from . import generation_config as gc
from .beam_search import beam_search
from .generation_outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from .logits_processors import filter_top_k, filter_top_p, process_scores

__all__ = ["GenerationMixin", "MaskedStepDecoder", "filter_top_k", "filter_top_p"]


def _check_token_id(name, value, limit, optional):
    """An id in [0, limit) (or None when optional): it is fed to the model or written out."""
    if value is None and optional:
        return
    if not gc._is_int(value) or not 0 <= value < limit:
        raise ValueError(f"{name} must be an int in [0, {limit}){' or None' if optional else ''}, got {value!r}")


def truncate_cache(cache, length):
    """Keeps the first `length` positions of every layer's keys/values (bs, heads, klen, hd)."""
    for key, value in cache.items():
        if key != "slen":
            k, v = value
            cache[key] = (k[:, :, :length], v[:, :, :length])
    cache["slen"] = length


class MaskedStepDecoder:
    """The decoding state of one generate() call: rows of left-aligned tokens with their
    lengths, and the key/value cache of a causal model.

    logits() scores the mask token appended to every row; append(tokens) puts a token in
    its place; reorder(rows) follows beams."""

    def __init__(self, model, prompts, prompt_lengths, max_new_tokens, mask_token_id, lang_id, use_cache):
        self.model = model
        self.lang_id = lang_id
        rows, width = prompts.size(0), int(prompt_lengths.max()) + max_new_tokens + 1
        # Columns past a row's length hold the mask token, so column length_r is already its mask.
        self.tokens = torch.full((rows, width), mask_token_id, dtype=torch.long, device=prompts.device)
        beyond = torch.arange(prompts.size(1), device=prompts.device)[None, :] >= prompt_lengths[:, None]
        self.tokens[:, :prompts.size(1)] = prompts.masked_fill(beyond, mask_token_id)
        self.lengths = prompt_lengths.clone()
        self._span()
        self.cache = {"slen": 0} if use_cache and model.config.causal else None

    def _span(self):
        """The shortest and longest row lengths, as ints (read once, not at every use)."""
        self.shortest, self.longest = int(self.lengths.min()), int(self.lengths.max())

    def history(self):
        """(tokens (rows, width), lengths (rows,)): row r's history is tokens[r, :lengths[r]]."""
        return self.tokens[:, :self.longest], self.lengths

    def logits(self):
        """(rows, vocab) float32 logits of the token at each row's mask position."""
        width = self.longest + 1
        step_input = self.tokens[:, :width]
        langs = torch.full_like(step_input, self.lang_id) if self.lang_id is not None else None
        hidden = self.model.transformer(step_input, langs=langs, lengths=self.lengths + 1, cache=self.cache,
                                        return_dict=True).last_hidden_state
        # With a cache only the columns after the cached ones come back.
        first = 0 if self.cache is None else width - hidden.size(1)
        at_mask = hidden.gather(1, (self.lengths - first).view(-1, 1, 1).expand(-1, 1, hidden.size(-1)))
        if self.cache is not None:
            # Every row's tokens before the shortest row's mask are final; the rest is recomputed.
            truncate_cache(self.cache, self.shortest)
        # Only the mask's position is scored: the vocabulary projection of the others is not needed.
        return self.model.pred_layer(at_mask)[0][:, 0].float()

    def append(self, tokens):
        """tokens (rows,) long: each row's next token, at its mask's column."""
        self.tokens.scatter_(1, self.lengths[:, None], tokens[:, None])
        self.lengths = self.lengths + 1
        self.shortest, self.longest = self.shortest + 1, self.longest + 1

    def reorder(self, rows):
        """rows (rows,) long: the row each row continues from (beam search)."""
        self.tokens = self.tokens.index_select(0, rows)
        self.lengths = self.lengths.index_select(0, rows)
        self._span()
        if self.cache is not None:
            for key, value in self.cache.items():
                if key != "slen":
                    self.cache[key] = tuple(part.index_select(0, rows) for part in value)


def left_align(input_ids, attention_mask):
    """(prompts, lengths): each row's attended tokens moved to its start, in order; the
    columns after them hold the row's padding."""
    order = torch.sort((attention_mask == 0).to(torch.int8), dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.sum(dim=1)


class GenerationMixin:
    """generate() and the generation attributes transformers' pipelines look for."""

    @classmethod
    def can_generate(cls):
        return True

    @property
    def generation_config(self):
        """transformers' GenerationConfig when transformers is installed (else xlm_fast's);
        defaults to the model config's token ids."""
        config = self.__dict__.get("_generation_config")
        if config is None:
            config = self.__dict__["_generation_config"] = gc.default_generation_config(self.config)
        return config

    @generation_config.setter
    def generation_config(self, value):
        if not hasattr(value, "to_diff_dict"):
            raise TypeError(f"generation_config must be a GenerationConfig, got {type(value).__name__}")
        self.__dict__["_generation_config"] = value

    def _load_generation_config(self, model_dir):
        """Sets generation_config from model_dir/generation_config.json when present (for
        from_pretrained); returns it."""
        self.generation_config = gc.load_generation_config(model_dir, self.config)
        return self.generation_config

    @torch.no_grad()
    def generate(self, inputs=None, generation_config=None, *, attention_mask=None, generator=None,
                 mask_token_id=None, lang_id=None, **kwargs):
        """inputs / input_ids (batch, prompt_len) -> (batch * num_return_sequences, prompt_len + generated)
        int64, or with return_dict_in_generate=True a GenerateDecoderOnlyOutput /
        GenerateBeamDecoderOnlyOutput.

        The parameters are transformers' (generation_config, overridden by keyword arguments):
        greedy, sampling (temperature, top_k, top_p, from `generator` when given), beam search
        (num_beams, length_penalty, early_stopping, num_return_sequences), repetition_penalty,
        no_repeat_ngram_size, bad_words_ids, min_length / min_new_tokens, max_length /
        max_new_tokens, eos_token_id (int or list), pad_token_id, output_scores / output_logits.
        attention_mask (batch, prompt_len) marks each row's tokens (left or right padding).
        mask_token_id and lang_id default to the model config's.
        """
        config = self.config
        input_ids = kwargs.pop("input_ids", None)
        if inputs is not None and input_ids is not None:
            raise ValueError("pass the prompt once: as inputs or as input_ids")
        input_ids = inputs if input_ids is None else input_ids
        if generation_config is None:
            # The model's own config; without one set, its defaults (cheaper than importing transformers to build it)
            generation_config = self.__dict__.get("_generation_config") or gc.GenerationConfig.from_model_config(config)
        params = gc.resolve_parameters(generation_config, kwargs, config.vocab_size)
        input_ids, attention_mask = self._check_prompt(input_ids, attention_mask, params)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        mask_token_id = config.mask_token_id if mask_token_id is None else mask_token_id
        lang_id = config.lang_id if lang_id is None else lang_id
        _check_token_id("mask_token_id", mask_token_id, config.vocab_size, optional=False)
        _check_token_id("lang_id", lang_id, config.n_langs, optional=True)

        eos = params["eos_token_id"]
        eos_ids = torch.tensor([] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos],
                               dtype=torch.long, device=input_ids.device)
        # As transformers: finished rows are padded with eos when no pad id is set.
        pad_token_id = params["pad_token_id"]
        if pad_token_id is None and eos_ids.numel():
            pad_token_id = int(eos_ids[0])
        width = input_ids.size(1)
        max_new = (params["max_new_tokens"] if params["max_new_tokens"] is not None
                   else max(params["max_length"] - width, 0))
        # min_length counts the prompt's columns, as max_length does.
        params["min_new_tokens"] = max(params["min_new_tokens"] or 0, params["min_length"] - width)

        prompts, lengths = left_align(input_ids, attention_mask)
        longest = int(lengths.max())
        if longest + max_new + 1 > config.max_position_embeddings:
            raise ValueError(
                f"max_length/max_new_tokens: {longest + max_new} tokens plus the mask token exceed "
                f"max_position_embeddings ({config.max_position_embeddings})"
            )
        num_beams = params["num_beams"]
        expand = num_beams if num_beams > 1 else params["num_return_sequences"]
        if expand > 1:
            input_ids, prompts, lengths = (t.repeat_interleave(expand, dim=0) for t in (input_ids, prompts, lengths))
        if max_new == 0:
            return self._finish(params, input_ids)
        decoder = MaskedStepDecoder(self, prompts, lengths, max_new, mask_token_id, lang_id, params["use_cache"])
        min_keep = eos_ids.numel() + 1 if num_beams > 1 else 1

        def process(scores, step):
            tokens, history_lengths = decoder.history()
            return process_scores(scores, tokens, history_lengths, step, params, eos_ids, params["do_sample"],
                                  min_keep)

        keep_scores = params["return_dict_in_generate"] and params["output_scores"]
        keep_logits = params["return_dict_in_generate"] and bool(params["output_logits"])
        if num_beams > 1:
            fill = pad_token_id if pad_token_id is not None else -1
            result = beam_search(
                decoder, process, input_ids.size(0) // num_beams, num_beams, max_new, eos_ids, fill,
                params["length_penalty"], params["early_stopping"], params["num_return_sequences"],
                do_sample=params["do_sample"], generator=generator, keep_scores=keep_scores, keep_logits=keep_logits,
            )
            prompt_rows = input_ids[::num_beams].repeat_interleave(params["num_return_sequences"], dim=0)
            return self._finish(params, torch.cat([prompt_rows, result.generated], dim=1), result.scores,
                                result.logits, beam=result)
        generated, scores, logits = self._sample(decoder, process, max_new, eos_ids, pad_token_id,
                                                 params["do_sample"], generator, keep_scores, keep_logits)
        return self._finish(params, torch.cat([input_ids, generated], dim=1), scores, logits)

    @staticmethod
    def _sample(decoder, process, max_new, eos_ids, pad_token_id, do_sample, generator, keep_scores, keep_logits):
        """Greedy or sampled decoding: (generated (rows, n) long, scores, logits)."""
        rows = decoder.lengths.size(0)
        unfinished = torch.ones(rows, dtype=torch.bool, device=decoder.tokens.device)
        columns, all_scores, all_logits = [], [], []
        for step in range(max_new):
            logits = decoder.logits()
            scores = process(logits, step)
            if keep_scores:
                all_scores.append(scores)
            if keep_logits:
                all_logits.append(logits)
            if do_sample:
                tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)
            else:
                tokens = scores.argmax(dim=-1)
            if pad_token_id is not None:
                tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad_token_id))
            columns.append(tokens)
            if eos_ids.numel():
                unfinished &= ~torch.isin(tokens, eos_ids)
                if not bool(unfinished.any()):
                    break
            if step + 1 < max_new:
                decoder.append(tokens)
        return torch.stack(columns, dim=1), tuple(all_scores), tuple(all_logits)

    @staticmethod
    def _finish(params, sequences, scores=(), logits=(), beam=None):
        if not params["return_dict_in_generate"]:
            return sequences
        scores = scores if params["output_scores"] else None
        logits = logits if params["output_logits"] else None
        if beam is None and params["num_beams"] == 1:
            return GenerateDecoderOnlyOutput(sequences=sequences, scores=scores, logits=logits)
        return GenerateBeamDecoderOnlyOutput(
            sequences=sequences, scores=scores, logits=logits,
            sequences_scores=beam.sequences_scores if beam is not None and params["output_scores"] else None,
            beam_indices=beam.beam_indices if beam is not None else None,
        )

    def _check_prompt(self, input_ids, attention_mask, params):
        """(input_ids int64, attention_mask) checked; the mask defaults as in transformers:
        the non-pad tokens when the prompt holds pad_token_id (and it is not eos), else all."""
        if input_ids is None:
            raise ValueError("generate() needs input_ids (batch, prompt_len): XLM has no start-of-text prompt")
        if not torch.is_tensor(input_ids) or input_ids.is_floating_point() or input_ids.is_complex():
            raise TypeError(f"input_ids must be an integer tensor, got {getattr(input_ids, 'dtype', type(input_ids))}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, prompt_len), got {tuple(input_ids.shape)}")
        if input_ids.size(1) == 0 or input_ids.size(0) == 0:
            raise ValueError(f"input_ids must hold at least one token per sequence, got {tuple(input_ids.shape)}")
        input_ids = input_ids.long()
        if attention_mask is None:
            pad, eos = params["pad_token_id"], params["eos_token_id"]
            eos = eos if isinstance(eos, (list, tuple)) else [eos]
            if pad is not None and pad not in eos and bool((input_ids == pad).any()):
                attention_mask = (input_ids != pad).long()
            else:
                attention_mask = torch.ones_like(input_ids)
        elif not torch.is_tensor(attention_mask) or attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must be a tensor of the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {getattr(attention_mask, 'shape', type(attention_mask).__name__)}")
        elif attention_mask.device != input_ids.device:
            raise ValueError(f"attention_mask is on {attention_mask.device}, input_ids on {input_ids.device}")
        elif not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 and 1")
        if not bool((attention_mask != 0).any(dim=1).all()):
            raise ValueError("attention_mask: every row must mark at least one prompt token")
        return input_ids, attention_mask
