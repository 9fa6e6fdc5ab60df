"""generate()'s output classes behave like transformers' (attribute, key, index over the set fields)."""

import torch

from xlm_fast.generation_outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput


def test_fields_by_attribute_key_and_index():
    sequences = torch.ones(2, 3, dtype=torch.long)
    out = GenerateDecoderOnlyOutput(sequences=sequences, scores=(torch.zeros(2, 5),))
    assert out.sequences is sequences and out["sequences"] is sequences and out[0] is sequences
    assert list(out.keys()) == ["sequences", "scores"] and out.logits is None
    beam = GenerateBeamDecoderOnlyOutput(sequences=sequences, sequences_scores=torch.zeros(2))
    assert beam.to_tuple()[1].shape == (2,) and beam.beam_indices is None
