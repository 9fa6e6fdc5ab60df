"""Model outputs that behave like transformers' ModelOutput: fields by attribute, by key,
by integer index over the fields that are set, and `to_tuple()`."""

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Optional, Tuple

import torch


class ModelOutput(OrderedDict):
    """An ordered dict of the non-None fields of a dataclass, also indexable by position."""

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                super().__setitem__(field.name, value)

    def __getitem__(self, key):
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __setattr__(self, name, value):
        if value is not None and name in self.keys():
            super().__setitem__(name, value)
        super().__setattr__(name, value)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def __iter__(self):
        return iter(self.keys())

    def to_tuple(self):
        return tuple(super(ModelOutput, self).__getitem__(key) for key in self.keys())

    def __reduce__(self):
        return type(self), tuple(getattr(self, field.name) for field in fields(self))


def model_output(cls):
    # eq=False: comparing tensors field by field has no single truth value.
    return dataclass(eq=False)(cls)


@model_output
class BaseModelOutput(ModelOutput):
    last_hidden_state: Optional[torch.Tensor] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


@model_output
class LossLogitsOutput(ModelOutput):
    """Fields shared by the LM, sequence, multiple-choice and token classification heads."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


@model_output
class MaskedLMOutput(LossLogitsOutput):
    """logits (batch, seq, vocab): scores, or log-probabilities with an adaptive softmax."""


@model_output
class SequenceClassifierOutput(LossLogitsOutput):
    """logits (batch, num_labels)."""


@model_output
class MultipleChoiceModelOutput(LossLogitsOutput):
    """logits (batch, num_choices)."""


@model_output
class TokenClassifierOutput(LossLogitsOutput):
    """logits (batch, seq, num_labels)."""


@model_output
class QuestionAnsweringModelOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    start_logits: Optional[torch.Tensor] = None
    end_logits: Optional[torch.Tensor] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


@model_output
class XLMSquadHeadOutput(ModelOutput):
    """Output of the beam-search SQuAD head alone (before the transformer's fields)."""

    loss: Optional[torch.Tensor] = None
    start_top_log_probs: Optional[torch.Tensor] = None
    start_top_index: Optional[torch.Tensor] = None
    end_top_log_probs: Optional[torch.Tensor] = None
    end_top_index: Optional[torch.Tensor] = None
    cls_logits: Optional[torch.Tensor] = None


@model_output
class XLMForQuestionAnsweringOutput(XLMSquadHeadOutput):
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
