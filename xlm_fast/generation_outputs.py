"""What generate(return_dict_in_generate=True) returns: transformers' decoder-only output
classes, same names and fields (attentions, hidden states and the cache stay None)."""

from typing import Optional, Tuple

import torch

from .modeling_outputs import ModelOutput, model_output


@model_output
class GenerateDecoderOnlyOutput(ModelOutput):
    """sequences (rows, length); scores / logits: one (rows, vocab) tensor per generated
    token, processed scores and raw logits."""

    sequences: Optional[torch.Tensor] = None
    scores: Optional[Tuple[torch.Tensor, ...]] = None
    logits: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    past_key_values: Optional[dict] = None


@model_output
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """sequences (batch * num_return_sequences, length); sequences_scores: their length-
    penalized log-probabilities; scores / logits: one (batch * num_beams, vocab) tensor per
    step; beam_indices (batch * num_return_sequences, generated): the beam row each token
    came from, -1 past the sequence's end."""

    sequences: Optional[torch.Tensor] = None
    sequences_scores: Optional[torch.Tensor] = None
    scores: Optional[Tuple[torch.Tensor, ...]] = None
    logits: Optional[Tuple[torch.Tensor, ...]] = None
    beam_indices: Optional[torch.Tensor] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    past_key_values: Optional[dict] = None
