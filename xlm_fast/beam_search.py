"""Beam search with transformers' rules, so that sequences and scores equal its generate():

- each step keeps the `keep` = max(2, 1 + number of eos ids) * num_beams best continuations
  of all beams (top-k of accumulated log-probabilities, or drawn without replacement when
  sampling); of these, the num_beams best that did not just finish run on;
- a continuation that ends in eos (or reaches max_new_tokens) among the num_beams best is
  a finished hypothesis scored sum(log-probs) / generated_length ** length_penalty; each
  batch item keeps its num_beams best finished hypotheses;
- a batch item is done when no running beam can beat its worst finished hypothesis
  (early_stopping=False: judged at the current length; "never": at max length when
  length_penalty > 0), or with early_stopping=True as soon as num_beams hypotheses
  finished.

The decoder holds batch * num_beams rows (beam b of item i in row i * num_beams + b) and is
reordered after each step to follow the surviving beams.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Scores of impossible choices: large enough to lose every comparison, finite so that
# sums stay ordered (transformers uses the same value).
IMPOSSIBLE = -1.0e9


@dataclass
class BeamSearchResult:
    generated: torch.Tensor  # (batch * num_return_sequences, generated) token ids, fill_id past each end
    sequences_scores: torch.Tensor  # (batch * num_return_sequences,) length-penalized scores
    beam_indices: torch.Tensor  # (batch * num_return_sequences, generated) source rows, -1 past each end
    scores: tuple  # one (batch * num_beams, vocab) tensor of processed log-probs per step, if kept
    logits: tuple  # one (batch * num_beams, vocab) tensor of raw logits per step, if kept


def _gather(tensor, index):
    """tensor (batch, n, ...) -> (batch, k, ...) along dim 1 by index (batch, k)."""
    expanded = index.view(*index.shape, *([1] * (tensor.dim() - 2))).expand(*index.shape, *tensor.shape[2:])
    return tensor.gather(1, expanded)


def _still_improvable(improvable, running_scores, finished_scores, finished, step, max_new_tokens,
                      length_penalty, early_stopping):
    """(batch, 1) bool: whether the best running beam could still beat the worst finished
    hypothesis; `step` tokens generated so far."""
    length = max_new_tokens if early_stopping == "never" and length_penalty > 0.0 else step
    best_running = running_scores[:, :1] / (length ** length_penalty)
    worst_finished = torch.where(finished, finished_scores.min(dim=1, keepdim=True).values, IMPOSSIBLE)
    return improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)


def beam_search(decoder, process, batch_size, num_beams, max_new_tokens, eos_ids, fill_id, length_penalty,
                early_stopping, num_return_sequences, do_sample=False, generator=None, keep_scores=False,
                keep_logits=False):
    """decoder: .logits() -> (rows, vocab) float next-token logits, .reorder(rows), .append(tokens);
    process(log_probs, step) -> processed log-probs (the score processors of generation.py);
    eos_ids (n,) long; fill_id: written past each hypothesis' end."""
    device = eos_ids.device
    n_beams = num_beams
    keep = max(2, 1 + eos_ids.numel()) * n_beams
    is_top = torch.arange(keep, device=device) < n_beams  # (keep,): candidates that may finish
    item_offset = torch.arange(batch_size, device=device)[:, None] * n_beams  # (batch, 1)

    # Running beams: only beam 0 is live at first, so the first step does not pick the same token n times.
    running_scores = torch.full((batch_size, n_beams), IMPOSSIBLE, device=device)
    running_scores[:, 0] = 0.0
    running_tokens = torch.full((batch_size, n_beams, max_new_tokens), fill_id, dtype=torch.long, device=device)
    running_rows = torch.full((batch_size, n_beams, max_new_tokens), -1, dtype=torch.long, device=device)
    # Finished hypotheses, best first after each merge.
    finished_scores = torch.full((batch_size, n_beams), IMPOSSIBLE, device=device)
    finished_tokens = running_tokens.clone()
    finished_rows = running_rows.clone()
    finished = torch.zeros((batch_size, n_beams), dtype=torch.bool, device=device)
    improvable = torch.ones((batch_size, 1), dtype=torch.bool, device=device)
    all_scores, all_logits = [], []

    for step in range(max_new_tokens):
        logits = decoder.logits()
        log_probs = process(F.log_softmax(logits, dim=-1), step)
        if keep_scores:
            all_scores.append(log_probs.clone())
        if keep_logits:
            all_logits.append(logits.clone())
        vocab = log_probs.size(-1)
        totals = (log_probs.view(batch_size, n_beams, vocab) + running_scores[:, :, None]).view(batch_size, -1)
        if do_sample:
            choice = torch.multinomial(F.softmax(totals, dim=-1), keep, generator=generator)
            cand_scores = totals.gather(1, choice)
        else:
            cand_scores, choice = torch.topk(totals, keep)
        cand_beam, cand_token = choice // vocab, choice % vocab  # (batch, keep)
        cand_tokens = _gather(running_tokens, cand_beam)
        cand_tokens[:, :, step] = cand_token
        cand_rows = _gather(running_rows, cand_beam)
        cand_rows[:, :, step] = cand_beam + item_offset
        ends = torch.isin(cand_token, eos_ids) | (step + 1 >= max_new_tokens)

        # Finished hypotheses: merge the candidates that just ended with the kept ones.
        scored = cand_scores / ((step + 1) ** length_penalty)
        items_full = finished.all(dim=-1, keepdim=True) & (early_stopping is True)
        scored = scored + items_full.float() * IMPOSSIBLE
        scored = scored + (~improvable).float() * IMPOSSIBLE
        just_finished = ends & is_top[None, :]
        scored = scored + (~just_finished).float() * IMPOSSIBLE
        merged_scores = torch.cat([finished_scores, scored], dim=1)
        best = torch.topk(merged_scores, n_beams).indices
        finished_scores = merged_scores.gather(1, best)
        finished_tokens = _gather(torch.cat([finished_tokens, cand_tokens], dim=1), best)
        finished_rows = _gather(torch.cat([finished_rows, cand_rows], dim=1), best)
        finished = torch.cat([finished, just_finished], dim=1).gather(1, best)

        # Running beams: the best continuations that did not end.
        open_scores = cand_scores + ends.float() * IMPOSSIBLE
        chosen = torch.topk(open_scores, n_beams).indices
        running_scores = open_scores.gather(1, chosen)
        running_tokens = _gather(cand_tokens, chosen)
        running_rows = _gather(cand_rows, chosen)
        if step + 1 < max_new_tokens:
            decoder.reorder(running_rows[:, :, step].reshape(-1))
            decoder.append(running_tokens[:, :, step].reshape(-1))

        improvable = _still_improvable(improvable, running_scores, finished_scores, finished, step + 1,
                                       max_new_tokens, length_penalty, early_stopping)
        all_done = finished.all() & (early_stopping is True)
        if not bool(improvable.any() & ~all_done & ~ends.all()):
            break

    rows = finished_rows[:, :num_return_sequences].reshape(batch_size * num_return_sequences, -1)
    generated = int((rows >= 0).sum(dim=1).max())
    return BeamSearchResult(
        generated=finished_tokens[:, :num_return_sequences].reshape(batch_size * num_return_sequences, -1)[
            :, :generated],
        sequences_scores=finished_scores[:, :num_return_sequences].reshape(-1),
        beam_indices=rows[:, :generated],
        scores=tuple(all_scores),
        logits=tuple(all_logits),
    )
