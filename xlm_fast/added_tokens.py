"""Added tokens: strings that the tokenizer never splits (special tokens, and tokens added
with add_tokens / add_special_tokens), their ids, and the split of text around them.

Semantics of transformers' slow tokenizers: text is cut at every added token first (the
leftmost match, the longest one at that position), the pieces between go through the
pre-tokenizer and BPE, each added token becomes its own id. Only tokens without
lstrip/rstrip/single_word behaviour are supported (transformers' default for added tokens).
"""

import re
from typing import NamedTuple


class AddedToken(NamedTuple):
    """An added token (transformers' AddedToken with lstrip, rstrip and single_word off).
    `normalized` is only recorded (transformers writes it); `special` marks tokens added as special."""

    content: str
    special: bool = False
    normalized: bool = True

    def __str__(self):
        return self.content

    def to_json(self):
        """The record transformers writes in tokenizer_config.json's added_tokens_decoder."""
        return {"content": self.content, "lstrip": False, "normalized": self.normalized, "rstrip": False,
                "single_word": False, "special": self.special}


def as_added_token(token, name):
    """A str, or an AddedToken (ours, transformers' or tokenizers'), as (content, special or None,
    normalized or None); None means "not given" (a plain str). ValueError for an empty token or
    lstrip/rstrip/single_word behaviour, which is not supported; TypeError for anything else."""
    if isinstance(token, str):
        content, special, normalized = token, None, None
    elif isinstance(getattr(token, "content", None), str):
        for flag in ("lstrip", "rstrip", "single_word"):
            if getattr(token, flag, False):
                raise ValueError(f"{name}: AddedToken {token.content!r} has {flag}=True, which xlm_fast does not "
                                 "support (tokens are matched exactly, without stripping spaces)")
        content, special, normalized = token.content, bool(token.special), bool(getattr(token, "normalized", True))
    else:
        raise TypeError(f"{name} must hold str or AddedToken tokens, got {type(token).__name__}")
    return content, special, normalized


def parse_added_tokens_decoder(records):
    """tokenizer_config.json's added_tokens_decoder ({id: record}; ids may be decimal strings,
    records dicts with "content"/"special"/"normalized", str, or AddedToken) -> {int: AddedToken}."""
    if not isinstance(records, dict):
        raise TypeError(f"added_tokens_decoder must be a dict {{id: token}}, got {type(records).__name__}")
    parsed = {}
    for index, record in records.items():
        if isinstance(index, str) and index.isdecimal():
            index = int(index)
        if type(index) is not int or index < 0:
            raise TypeError(f"added_tokens_decoder: ids must be non-negative ints, got {index!r}")
        if isinstance(record, dict):
            if not isinstance(record.get("content"), str) or not record["content"]:
                raise TypeError(f"added_tokens_decoder[{index}] must have a non-empty str 'content', got {record!r}")
            record = AddedToken(record["content"], bool(record.get("special", False)),
                                bool(record.get("normalized", not record.get("special", False))))
        content, special, normalized = as_added_token(record, f"added_tokens_decoder[{index}]")
        if not content:
            raise ValueError(f"added_tokens_decoder[{index}] is an empty token")
        parsed[index] = AddedToken(content, bool(special), normalized if normalized is not None else not special)
    return parsed


class AddedVocabulary:
    """{content: id} and {id: AddedToken} of the added tokens, and the regex that cuts text
    around them (rebuilt on every addition: additions are rare, splits are per call)."""

    def __init__(self):
        self.encoder, self.decoder = {}, {}
        self._pattern = None
        self.version = 0  # bumped on every addition (the tokenizer rebuilds its C++ copy then)

    def add(self, index, token):
        self.encoder[token.content] = index
        self.decoder[index] = token
        self.version += 1
        # Longest first, so that at one position the longest token wins (transformers' trie).
        alternatives = sorted(self.encoder, key=len, reverse=True)
        self._pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")

    def split(self, text):
        """Yields (added token, None) for each added token in `text`, (None, text) for the text between."""
        if self._pattern is None:
            yield None, text
            return
        for position, piece in enumerate(self._pattern.split(text)):
            if piece:
                yield (piece, None) if position % 2 else (None, piece)
