"""The encoder's output (BatchEncoding) and the rules that shape it: padding, truncation,
overflow windows and tensor conversion, with transformers' semantics.

A row of a BatchEncoding is one model input (a text, a pair, or one overflow window of
them). Each row keeps its *layout*: a tuple of segments, each an int n (n positions that
belong to no input sequence: special tokens or padding) or a Span (tokens [start, stop) of
encoded sequence `source`, which is sequence `sequence_id` (0 or 1) of the row). Word ids,
sequence ids and the token <-> word maps are derived from the layout on demand, so the
default call pays nothing for them.
"""

from collections.abc import Mapping
from typing import NamedTuple

PADDINGS = {True: "longest", False: None, None: None, "longest": "longest", "max_length": "max_length",
            "do_not_pad": None}
TRUNCATIONS = {True: "longest_first", False: None, None: None, "longest_first": "longest_first",
               "only_first": "only_first", "only_second": "only_second", "do_not_truncate": None}
# transformers' "no limit" threshold for model_max_length.
LARGE_INTEGER = int(1e20)


class TokenSpan(NamedTuple):
    """Tokens [start, end) of a row (transformers' TokenSpan)."""

    start: int
    end: int


class CharSpan(NamedTuple):
    """Characters [start, end) of the original string (transformers' CharSpan)."""

    start: int
    end: int


class Span(NamedTuple):
    """Tokens [start, stop) of encoded sequence number `source`, placed as sequence `sequence_id` of a row."""

    source: int
    sequence_id: int
    start: int
    stop: int


# ----------------------------------------------------------------------------- strategies


def check_strategies(padding, truncation, max_length, model_max_length):
    """transformers' rules -> (padding in {None, "longest", "max_length"}, truncation in {None,
    "longest_first", "only_first", "only_second"}, max_length). An enum (PaddingStrategy,
    TruncationStrategy) is read by its value."""
    padding, truncation = getattr(padding, "value", padding), getattr(truncation, "value", truncation)
    if max_length is not None and (type(max_length) is not int or max_length < 0):
        raise ValueError(f"max_length must be a non-negative int or None, got {max_length!r}")
    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"
    if not isinstance(padding, (bool, str, type(None))) or padding not in PADDINGS:
        raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    if not isinstance(truncation, (bool, str, type(None))) or truncation not in TRUNCATIONS:
        raise ValueError(
            "truncation must be True, False, 'longest_first', 'only_first', 'only_second' or "
            f"'do_not_truncate', got {truncation!r}"
        )
    padding, truncation = PADDINGS[padding], TRUNCATIONS[truncation]
    if max_length is None:
        limit = None if model_max_length > LARGE_INTEGER else model_max_length
        if padding == "max_length":
            padding, max_length = (None, None) if limit is None else (padding, limit)
        if truncation is not None:
            truncation, max_length = (None, None) if limit is None else (truncation, limit)
    return padding, truncation, max_length


def check_side(name, value):
    if value not in ("right", "left"):
        raise ValueError(f"{name} must be 'right' or 'left', got {value!r}")
    return value


def check_count(name, value, most=None):
    """A positive int, at most `most` (not a bool, nor a float that int() would truncate)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (most is not None and value > most):
        bound = "" if most is None else f" <= {most}"
        raise ValueError(f"{name} must be a positive int{bound}, got {value!r}")
    return value


def check_return_tensors(return_tensors):
    return_tensors = getattr(return_tensors, "value", return_tensors)  # TensorType
    if return_tensors is not None and return_tensors not in ("pt", "np"):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    return return_tensors


# ----------------------------------------------------------------------------- truncation


def _cut(length, remove, side):
    """[start, stop) left of `length` tokens after removing `remove` on `side` (all of them at most)."""
    remove = min(remove, length)
    return (0, length - remove) if side == "right" else (remove, length)


def truncation_bounds(first, second, remove, strategy, side):
    """transformers' slow truncate_sequences as bounds: ((start, stop) of the first sequence,
    (start, stop) of the second or None) after removing `remove` tokens; `first`/`second`
    are lengths (second None for one sequence)."""
    whole_first, whole_second = (0, first), None if second is None else (0, second)
    if strategy == "only_first" or (strategy == "longest_first" and second is None):
        return _cut(first, remove, side), whole_second
    if strategy == "longest_first":
        first_remove = min(abs(second - first), remove)
        half = (remove - first_remove) // 2
        if first > second:
            ids_remove, pair_remove = first_remove + half, remove - first_remove - half
        else:
            ids_remove, pair_remove = half, remove - half
        return _cut(first, ids_remove, side), _cut(second, pair_remove, side) if second else whole_second
    if strategy == "only_second" and second:
        return whole_first, _cut(second, remove, side)
    return whole_first, whole_second


def overflow_windows(length, room, stride, side):
    """Windows [start, stop) of at most `room` tokens covering `length` tokens, each overlapping
    the next by `stride` (transformers' fast tokenizers, i.e. tokenizers' Encoding.truncate):
    from the start when `side` is "right" (the first window keeps the head), from the end when
    "left"."""
    if length <= room:
        return [(0, length)]
    step = room - stride
    if side == "right":
        windows = []
        for start in range(0, length, step):
            windows.append((start, min(start + room, length)))
            if start + room >= length:
                return windows
    windows = []
    for stop in range(length, 0, -step):
        windows.append((max(stop - room, 0), stop))
        if stop <= room:
            return windows
    return windows


# ----------------------------------------------------------------------------- padding


def pad_target(lengths, padding, max_length, pad_to_multiple_of):
    """Length to pad every row to (None: no padding)."""
    target = max(lengths, default=0) if padding == "longest" else max_length if padding == "max_length" else None
    if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
        target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
    return target


def pad_fields(fields, length, side, pad_values, main_input, return_attention_mask):
    """transformers' _pad on one row of lists (in place; returns it and the number of positions
    added): `main_input` gets pad_values[main_input], token_type_ids / special_tokens_mask /
    attention_mask their pad values; an attention_mask is added when return_attention_mask and
    there is none; other keys are left as they are."""
    size = len(fields[main_input])
    if return_attention_mask and "attention_mask" not in fields:
        fields["attention_mask"] = [1] * size
    missing = length - size if length is not None else 0
    if missing <= 0:
        return fields, 0
    for key, value in pad_values.items():
        if key in fields and (key != "attention_mask" or return_attention_mask):
            pad = [value] * missing
            fields[key] = fields[key] + pad if side == "right" else pad + fields[key]
    return fields, missing


# ----------------------------------------------------------------------------- tensors


def to_python(value):
    """Tensors and arrays (and lists of them) -> nested lists of Python numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_python(item) for item in value]
    return value


def to_tensor(value, return_tensors, key):
    """`value` as a torch tensor ("pt") or numpy array ("np"), dtype inferred as transformers
    does (int64 for empty input). Rows of different lengths: ValueError naming `key` for "pt",
    an object array of rows for "np" (what transformers gives)."""
    import numpy as np

    if return_tensors == "pt":
        import torch

        if torch.is_tensor(value):
            return value
        try:
            if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                return torch.from_numpy(np.array(value))
            return torch.tensor(value, dtype=torch.int64 if _is_empty(value) else None)
        except (ValueError, TypeError) as error:
            raise ValueError(f"cannot make a tensor of '{key}': rows differ in length or nesting; use "
                             f"padding=True (and truncation=True) to get rows of one length ({error})") from error
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple, np.ndarray)) and len(
            {len(row) for row in value}) > 1:
        ragged = np.empty(len(value), dtype=object)
        ragged[:] = [np.asarray(row) for row in value]
        return ragged
    return np.asarray(value, dtype=np.int64 if _is_empty(value) else None)


def _is_empty(value):
    if isinstance(value, (list, tuple)):
        return all(_is_empty(item) for item in value)
    return False


# ----------------------------------------------------------------------------- encoding


class EncodingMaps:
    """What a BatchEncoding's token / word / character maps are read from, given the encoding's
    `rows` handle (whatever the maker keeps per call: the C++ path's maps are one object per call
    plan and its rows the call's EncodedRows, so an encoding adds no object of its own for the
    GC). This base class holds one call's maps itself and ignores `rows`: layouts, one per row
    (see `Span`), or a callable that builds that list on first use; word_ids_of(source): the
    word ids of that encoded sequence, in full; id_to_token(ids): tokens; offsets:
    offsets(row) -> the (start, end) of every token of a row, or a str saying why there are
    none (or None)."""

    __slots__ = ("_layouts", "_word_ids_of", "_id_to_token", "_offsets")

    def __init__(self, layouts, word_ids_of, id_to_token, offsets):
        self._layouts, self._word_ids_of, self._id_to_token, self._offsets = layouts, word_ids_of, id_to_token, offsets

    def layouts(self, rows):
        return self._layouts() if callable(self._layouts) else self._layouts

    def word_ids_of(self, rows, source):
        return self._word_ids_of(source)

    def id_to_token(self, ids):
        return self._id_to_token(ids)

    def offsets_reason(self, rows):
        """None when there are offsets, else why not."""
        return None if callable(self._offsets) else self._offsets or "this encoding has no character offsets"

    def offsets_of(self, rows, row):
        return self._offsets(row)


class BatchEncoding(dict):
    """The encoder's output: a dict (input_ids, attention_mask, ...) with attribute access, and
    the word/sequence maps of transformers' fast encodings (word_ids, sequence_ids, tokens,
    token_to_word, token_to_sequence, word_to_tokens) for every row.

    `is_fast` is False, as for transformers' slow (Python) tokenizers: there are no
    `tokenizers.Encoding` objects. Where the tokenizer computed character offsets (the C++ path:
    on every call for the Moses languages and bypass_tokenizer=True, with
    return_offsets_mapping=True for zh / th / ja), token_to_chars, char_to_token, word_to_chars
    and char_to_word work from them as in transformers' fast encodings; elsewhere they raise. Unlike transformers' slow
    tokenizers, which raise for word_ids() and the like, these maps are given anyway: a word
    is a word of the input when is_split_into_words=True, and otherwise a word of the
    pre-tokenizer's output (Moses / jieba / ... before BPE); an added or special token written
    in the text is a word of its own; special tokens added around the sequences and padding
    map to None. The output of pad() has no such maps (its rows come from elsewhere)."""

    # No instance __dict__: an encoding is then as few objects for the cyclic GC as transformers' (with
    # torch loaded, collections are a good part of a fast tokenizer call's cost).
    __slots__ = ("_maps", "_rows", "_n_sequences", "_layouts", "_word_id_cache", "_saved_tokens")

    def __init__(self, data=None, maps=None, n_sequences=None, rows=None):
        super().__init__(data or {})
        # maps: the EncodingMaps that the token/word/character maps are read from (on first use),
        # given `rows`; None when the encoding holds no maps (pad()).
        self._maps, self._rows, self._n_sequences = maps, rows, n_sequences
        self._layouts, self._word_id_cache, self._saved_tokens = None, {}, None

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}") from None

    def __getstate__(self):  # the maps are materialised: they point into the tokenizer
        layouts = self._resolved_layouts()
        word_ids = tokens = None
        offsets = None if self._maps is None else self._maps.offsets_reason(self._rows)
        if layouts is not None:
            word_ids = [self.word_ids(row) for row in range(len(layouts))]
            tokens = [self.tokens(row) for row in range(len(layouts))]
            if offsets is None:
                offsets = [self._maps.offsets_of(self._rows, row) for row in range(len(layouts))]
        return {"data": dict(self), "layouts": layouts, "word_ids": word_ids, "tokens": tokens,
                "n_sequences": self._n_sequences, "offsets": offsets}

    def __setstate__(self, state):
        self.update(state["data"])
        self._n_sequences, self._saved_tokens = state["n_sequences"], state["tokens"]
        offsets = state.get("offsets")
        self._layouts = state["layouts"]
        self._rows = None
        self._maps = None if self._layouts is None else EncodingMaps(
            self._layouts, None, None, offsets.__getitem__ if isinstance(offsets, list) else offsets)
        self._word_id_cache = {("row", row): ids for row, ids in enumerate(state["word_ids"] or [])}

    def to(self, device):
        """Moves every torch tensor to `device` (in place); returns self."""
        for key, value in self.items():
            if hasattr(value, "to") and hasattr(value, "device"):
                self[key] = value.to(device)
        return self

    @property
    def is_fast(self):
        return False

    @property
    def encodings(self):
        """transformers' list of tokenizers.Encoding: None here (see the class docstring)."""
        return None

    @property
    def n_sequences(self):
        """1 for single sequences, 2 for pairs, None when unknown (pad())."""
        return self._n_sequences

    # ------------------------------------------------------------------ maps

    def _resolved_layouts(self):
        if self._layouts is None and self._maps is not None:
            self._layouts = self._maps.layouts(self._rows)
        return self._layouts

    def _layout(self, batch_index, method):
        if self._resolved_layouts() is None:
            raise ValueError(f"{method}() needs an encoding made by the tokenizer's __call__; this one (from pad() "
                             "or built by hand) has no token/word maps")
        if isinstance(batch_index, bool) or not isinstance(batch_index, int):
            raise TypeError(f"batch_index must be an int, got {type(batch_index).__name__}")
        if not -len(self._layouts) <= batch_index < len(self._layouts):
            raise IndexError(f"batch_index {batch_index} is out of range for {len(self._layouts)} rows")
        return batch_index % len(self._layouts), self._layouts[batch_index]

    def word_ids(self, batch_index=0):
        """Word index of every token of row `batch_index` (None for added special tokens and padding)."""
        row, layout = self._layout(batch_index, "word_ids")
        cached = self._word_id_cache.get(("row", row))
        if cached is None:
            cached = []
            for segment in layout:
                if isinstance(segment, int):
                    cached.extend([None] * segment)
                else:
                    cached.extend(self._source_word_ids(segment.source)[segment.start : segment.stop])
            self._word_id_cache["row", row] = cached
        return list(cached)

    def _source_word_ids(self, source):
        ids = self._word_id_cache.get(source)
        if ids is None:
            ids = self._word_id_cache[source] = self._maps.word_ids_of(self._rows, source)
        return ids

    def sequence_ids(self, batch_index=0):
        """0 / 1 for the tokens of the first / second sequence of row `batch_index`, None for the rest."""
        _, layout = self._layout(batch_index, "sequence_ids")
        ids = []
        for segment in layout:
            if isinstance(segment, int):
                ids.extend([None] * segment)
            else:
                ids.extend([segment.sequence_id] * (segment.stop - segment.start))
        return ids

    def tokens(self, batch_index=0):
        """Tokens (strings) of row `batch_index`, special tokens and padding included."""
        row, _ = self._layout(batch_index, "tokens")
        if self._saved_tokens is not None:  # unpickled
            return list(self._saved_tokens[row])
        ids = self["input_ids"]
        ids = ids[row] if self._is_batched(ids) else ids
        return self._maps.id_to_token(to_python(ids))

    def _is_batched(self, ids):
        if hasattr(ids, "ndim"):  # a tensor or array; rows of several lengths: a 1-D object array of rows
            return ids.ndim == 2 or str(getattr(ids, "dtype", "")) == "object"
        return bool(ids) and isinstance(ids[0], list)

    def _token_arguments(self, batch_or_index, index, method):
        if index is None:
            batch_or_index, index = 0, batch_or_index
        row, _ = self._layout(batch_or_index, method)
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"{method}: the index must be an int, got {type(index).__name__}")
        return row, index

    def token_to_word(self, batch_or_token_index, token_index=None):
        """Word of a token (`token_to_word(token)` for row 0, or `token_to_word(row, token)`); None for
        special tokens and padding."""
        row, index = self._token_arguments(batch_or_token_index, token_index, "token_to_word")
        return self.word_ids(row)[index]

    def token_to_sequence(self, batch_or_token_index, token_index=None):
        """Sequence (0 or 1) of a token, None for special tokens and padding."""
        row, index = self._token_arguments(batch_or_token_index, token_index, "token_to_sequence")
        return self.sequence_ids(row)[index]

    def word_to_tokens(self, batch_or_word_index, word_index=None, sequence_index=0):
        """TokenSpan(start, end) of the tokens of a word of sequence `sequence_index` (0 or 1), or None
        when the word has no token in that row (e.g. it was truncated away)."""
        row, word = self._token_arguments(batch_or_word_index, word_index, "word_to_tokens")
        self._check_sequence_index(sequence_index)
        if word < 0:
            raise ValueError(f"word_index must be non-negative, got {word}")
        positions = [position for position, (word_id, sequence_id) in
                     enumerate(zip(self.word_ids(row), self.sequence_ids(row)))
                     if word_id == word and sequence_id == sequence_index]
        return TokenSpan(positions[0], positions[-1] + 1) if positions else None

    # ------------------------------------------------------------------ character offsets

    def _offsets(self, row, method):
        reason = "this encoding has no character offsets" if self._maps is None else \
            self._maps.offsets_reason(self._rows)
        if reason is not None:
            raise ValueError(f"{method}() needs character offsets: {reason}")
        return self._maps.offsets_of(self._rows, row)

    def _non_negative(self, index, name):
        if index < 0:
            raise ValueError(f"{name} must be non-negative, got {index}")
        return index

    def token_to_chars(self, batch_or_token_index, token_index=None):
        """CharSpan(start, end) of a token in its original string (`token_to_chars(token)` for row 0,
        or `token_to_chars(row, token)`); None for special tokens and padding."""
        row, index = self._token_arguments(batch_or_token_index, token_index, "token_to_chars")
        offsets = self._offsets(row, "token_to_chars")
        sequence_ids = self.sequence_ids(row)
        if self._non_negative(index, "token_index") >= len(sequence_ids) or sequence_ids[index] is None:
            return None
        return CharSpan(*offsets[index])

    def char_to_token(self, batch_or_char_index, char_index=None, sequence_index=0):
        """Index of the token of sequence `sequence_index` that covers character `char_index` of
        that sequence's string; None when no token does (a space, or a truncated part)."""
        row, char = self._token_arguments(batch_or_char_index, char_index, "char_to_token")
        self._check_sequence_index(sequence_index)
        self._non_negative(char, "char_index")
        offsets = self._offsets(row, "char_to_token")
        for position, (sequence_id, (start, end)) in enumerate(zip(self.sequence_ids(row), offsets)):
            if sequence_id == sequence_index and start <= char < end:
                return position
        return None

    def word_to_chars(self, batch_or_word_index, word_index=None, sequence_index=0):
        """CharSpan(start, end) of a word of sequence `sequence_index`: from its first token's start
        to its last token's end; None when the word has no token in that row."""
        row, word = self._token_arguments(batch_or_word_index, word_index, "word_to_chars")
        offsets = self._offsets(row, "word_to_chars")
        tokens = self.word_to_tokens(row, word, sequence_index)
        return None if tokens is None else CharSpan(offsets[tokens.start][0], offsets[tokens.end - 1][1])

    def char_to_word(self, batch_or_char_index, char_index=None, sequence_index=0):
        """Word of sequence `sequence_index` that covers character `char_index`; None where none does."""
        row, char = self._token_arguments(batch_or_char_index, char_index, "char_to_word")
        token = self.char_to_token(row, char, sequence_index)
        return None if token is None else self.word_ids(row)[token]

    @staticmethod
    def _check_sequence_index(sequence_index):
        if sequence_index not in (0, 1) or isinstance(sequence_index, bool):
            raise ValueError(f"sequence_index must be 0 or 1, got {sequence_index!r}")


def batch_from_features(encoded_inputs):
    """pad()'s input as a dict of columns: a list of dicts (features, as data collators pass
    them) becomes {key: [value of each feature]} over the first feature's keys."""
    if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], Mapping):
        keys = list(encoded_inputs[0].keys())
        for position, feature in enumerate(encoded_inputs):
            if not isinstance(feature, Mapping):
                raise TypeError(f"encoded_inputs[{position}] must be a dict like encoded_inputs[0], "
                                f"got {type(feature).__name__}")
            missing = [key for key in keys if key not in feature]
            if missing:
                raise ValueError(f"encoded_inputs[{position}] lacks {missing} that encoded_inputs[0] has")
        return {key: [feature[key] for feature in encoded_inputs] for key in keys}
    if not isinstance(encoded_inputs, Mapping):
        raise TypeError("encoded_inputs must be a BatchEncoding/dict of lists or a list of dicts, "
                        f"got {type(encoded_inputs).__name__}")
    return dict(encoded_inputs)


def tensor_type_of(values):
    """"pt" / "np" when the first element of the first non-empty row is a tensor / array (what
    pad() then returns), None for Python ints or lists."""
    first = values[0]
    if isinstance(first, (list, tuple)):
        first = next((row[0] for row in values if len(row)), first)
    if isinstance(first, (int, list, tuple)):
        return None
    import numpy as np

    if isinstance(first, (np.ndarray, np.generic)):
        return "np"
    if type(first).__module__.startswith("torch"):
        return "pt"
    raise ValueError(f"encoded_inputs holds values of type {type(first).__name__}: expected Python ints or lists, "
                     "numpy arrays or torch tensors")
