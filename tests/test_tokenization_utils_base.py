"""Padding, truncation, overflow windows, tensor conversion and BatchEncoding's token/word maps
(xlm_fast.tokenization_utils_base), against transformers' rules where it has them."""
import itertools
import os
import pickle

import numpy as np
import pytest
import torch

from xlm_fast.tokenization_utils_base import (
    BatchEncoding,
    EncodingMaps,
    Span,
    TokenSpan,
    check_strategies,
    overflow_windows,
    pad_fields,
    pad_target,
    to_tensor,
    truncation_bounds,
)

transformers = pytest.importorskip("transformers")
DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xlm_fast", "data")


@pytest.fixture(scope="module")
def slow():
    return transformers.XLMTokenizer(os.path.join(DEMO, "demo_vocab.json"), os.path.join(DEMO, "demo_merges.txt"))


def test_truncation_bounds_equal_transformers_truncate_sequences(slow):
    for first, second, remove, strategy, side in itertools.product(
            [0, 1, 5, 9], [None, 0, 3, 8], [1, 2, 4, 11], ["longest_first", "only_first", "only_second"],
            ["right", "left"]):
        if second == 0 and side == "left" and strategy == "longest_first":
            continue  # transformers turns the empty second sequence into None there (dropping its </s>): not kept
        slow.truncation_side = side
        ids, pair = list(range(first)), None if second is None else list(range(100, 100 + second))
        expected = slow.truncate_sequences(ids, pair, num_tokens_to_remove=remove, truncation_strategy=strategy)
        (a0, a1), b = truncation_bounds(first, second, remove, strategy, side)
        assert ids[a0:a1] == expected[0], (first, second, remove, strategy, side)
        assert (None if b is None else pair[b[0]:b[1]]) == expected[1], (first, second, remove, strategy, side)
    slow.truncation_side = "right"


@pytest.mark.parametrize("side", ["right", "left"])
def test_overflow_windows_overlap_by_stride_and_cover_everything(side):
    for length, room, stride in itertools.product(range(1, 30), range(1, 9), range(0, 8)):
        if stride >= room:
            continue
        windows = overflow_windows(length, room, stride, side)
        ordered = windows if side == "right" else windows[::-1]
        assert ordered[0][0] == 0 and ordered[-1][1] == length
        assert all(0 < stop - start <= room for start, stop in windows)
        for (_, stop), (start, _) in zip(ordered, ordered[1:]):
            assert stop - start == stride or length <= room
        assert windows[0] == ((0, min(room, length)) if side == "right" else (max(length - room, 0), length))


def test_strategies_and_padding_rules():
    assert check_strategies(True, None, None, 10**30) == ("longest", None, None)
    assert check_strategies("max_length", True, None, 12) == ("max_length", "longest_first", 12)
    assert check_strategies(False, None, 7, 10**30) == (None, "longest_first", 7)  # max_length alone truncates
    assert check_strategies("max_length", None, None, 10**30) == (None, None, None)  # no limit to pad to
    padding_enum = transformers.utils.PaddingStrategy.LONGEST
    assert check_strategies(padding_enum, transformers.tokenization_utils_base.TruncationStrategy.ONLY_SECOND,
                            5, 10**30) == ("longest", "only_second", 5)
    for bad in ("sideways", 1, 2.0):
        with pytest.raises(ValueError, match="padding"):
            check_strategies(bad, None, None, 10)
    with pytest.raises(ValueError, match="truncation"):
        check_strategies(True, "middle", None, 10)
    with pytest.raises(ValueError, match="max_length"):
        check_strategies(True, None, -1, 10)
    assert pad_target([3, 5], "longest", None, 4) == 8 and pad_target([3], "max_length", 6, None) == 6
    assert pad_target([3], None, 9, 4) is None
    fields = {"input_ids": [5, 6], "special_tokens_mask": [1, 0], "labels": [1]}
    values = {"input_ids": 2, "token_type_ids": 0, "special_tokens_mask": 1, "attention_mask": 0}
    assert pad_fields(fields, 4, "left", values, "input_ids", True) == (
        {"input_ids": [2, 2, 5, 6], "special_tokens_mask": [1, 1, 1, 0], "labels": [1], "attention_mask": [0, 0, 1, 1]},
        2)
    assert pad_fields({"input_ids": [1, 2, 3]}, 2, "right", values, "input_ids", False) == ({"input_ids": [1, 2, 3]}, 0)


def test_to_tensor_follows_transformers_conversion():
    ints, floats = to_tensor([[1, 2], [3, 4]], "pt", "a"), to_tensor([1.5, 2.0], "pt", "label")
    assert ints.dtype == torch.int64 and floats.dtype == torch.float32
    assert to_tensor([], "pt", "a").dtype == torch.int64 and to_tensor([], "np", "a").dtype == np.int64
    assert to_tensor([np.array([1, 2]), np.array([3, 4])], "pt", "a").tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="'labels'"):
        to_tensor([[1, 2], [3]], "pt", "labels")
    ragged = to_tensor([[1, 2], [3]], "np", "labels")
    assert ragged.dtype == object and [row.tolist() for row in ragged] == [[1, 2], [3]]


def test_batch_encoding_maps_from_layouts():
    # row 0: <pad> <s> A[1:4] </s> B[0:2] </s> ; row 1: A'[0:2] (no special tokens)
    words = {0: [0, 0, 1, 2, 2], 1: [0, 1], 2: [5, 5, 6]}
    layouts = [(1, 1, Span(0, 0, 1, 4), 1, Span(1, 1, 0, 2), 1), (Span(2, 0, 0, 2),)]
    calls = []

    def word_ids_of(source):
        calls.append(source)
        return words[source]

    maps = EncodingMaps(layouts, word_ids_of, lambda ids: [f"t{i}" for i in ids], None)
    encoding = BatchEncoding({"input_ids": [[2, 0, 11, 12, 13, 1, 14, 15, 1], [16, 17]]}, maps, n_sequences=2)
    assert encoding.word_ids(0) == [None, None, 0, 1, 2, None, 0, 1, None]
    assert encoding.sequence_ids(0) == [None, None, 0, 0, 0, None, 1, 1, None]
    assert encoding.word_ids(-1) == [5, 5] and encoding.tokens(1) == ["t16", "t17"]
    assert encoding.token_to_word(0, 4) == 2 and encoding.token_to_word(0, 1) is None
    assert encoding.token_to_sequence(0, 6) == 1 and encoding.token_to_word(1) is None  # row 0, token 1
    assert encoding.word_to_tokens(0, 1, sequence_index=1) == TokenSpan(7, 8)
    assert encoding.word_to_tokens(0, 0) == TokenSpan(2, 3) and encoding.word_to_tokens(0, 9) is None
    assert encoding.word_to_tokens(1, 5) == TokenSpan(0, 2)
    encoding.word_ids(0)
    assert sorted(calls) == [0, 1, 2]  # each sequence's word ids computed once, on demand
    clone = pickle.loads(pickle.dumps(encoding))
    assert clone.word_ids(0) == encoding.word_ids(0) and clone.tokens(1) == ["t16", "t17"]
    assert clone.n_sequences == 2 and not clone.is_fast and clone["input_ids"] == encoding["input_ids"]
    with pytest.raises(ValueError, match="sequence_index"):
        encoding.word_to_tokens(0, 0, sequence_index=2)
    with pytest.raises(TypeError, match="batch_index"):
        encoding.word_ids("0")
    with pytest.raises(ValueError, match="word_ids"):
        BatchEncoding({"input_ids": [1]}).word_ids()
    with pytest.raises(AttributeError, match="nope"):
        _ = encoding.nope
    with pytest.raises(ValueError, match="no character offsets"):
        encoding.token_to_chars(0, 2)
