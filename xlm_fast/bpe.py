"""Pure-Python twin of the C++ BPE core (csrc/tokenization_xlm.cpp, ``xlm_fast._C.BPEModel``).

Same constructor, methods and results; used when the extension is not built and as the
reference the C++ core is tested against. Semantics are those of transformers'
XLMTokenizer.bpe: the last character of a word carries ``</w>``; the lowest-ranked
adjacent pair is merged at every left-to-right occurrence until no ranked pair is left; a
merge listed twice keeps its last rank; the tokens are the symbols joined by " " and split
on " " (differs only for words that contain a space); unknown tokens map to ``unk_id``.
"""

from itertools import repeat
from sys import maxsize as _NO_RANK  # rank of a pair that is no merge

END_OF_WORD = "</w>"
# Bounds the C++ core checks its integers against (ids are int32 there); the same here.
MAX_ID = 2**31 - 1
MAX_THREADS = 4096
MAX_CACHE_CAPACITY = 2**63 - 1


def _checked_int(name, value, low, high):
    """`value` if it is an int in [low, high]; TypeError / ValueError naming `name` otherwise
    (a float or bool is refused, not converted: int(2.5) or True would be a guess)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return value


class BPEModel:
    """Byte-pair encoder over ``vocab`` (token -> id) and ``merges`` (pairs, rank = position).

    ``cache_capacity`` bounds the word cache (0 disables it); a full cache is emptied.
    """

    def __init__(self, vocab, merges, unk_id, cache_capacity=1 << 16):
        self.unk_id = _checked_int("unk_id", unk_id, 0, MAX_ID)
        self.cache_capacity = cache_capacity
        if not isinstance(vocab, dict):
            raise TypeError(f"vocab must be a dict {{str: int}}, got {type(vocab).__name__}")
        for token, index in vocab.items():
            if not isinstance(token, str):
                raise TypeError(f"vocab keys must be str, got {type(token).__name__}")
            if type(index) is not int or not 0 <= index <= MAX_ID:  # the usual case skips building a name
                _checked_int(f"vocab[{token!r}]", index, 0, MAX_ID)
        self._vocab = dict(vocab)
        if isinstance(merges, str) or not hasattr(merges, "__iter__"):
            raise TypeError(f"merges must be a list of (str, str) pairs, got {type(merges).__name__}")
        self._ranks = {}
        for rank, pair in enumerate(merges):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(s, str) for s in pair):
                raise TypeError(f"merges[{rank}] must be a pair of str, got {pair!r}")
            if not pair[0] or not pair[1]:
                raise ValueError(f"merges[{rank}] has an empty symbol")
            self._ranks[tuple(pair)] = rank  # a repeated merge keeps its last rank
        self.num_merges = len(self._ranks)

    @property
    def cache_capacity(self):
        return self._capacity

    @cache_capacity.setter
    def cache_capacity(self, capacity):
        self._capacity = _checked_int("cache_capacity", capacity, 0, MAX_CACHE_CAPACITY)
        self._cache = {}

    @property
    def cache_size(self):
        return len(self._cache)

    def clear_cache(self):
        self._cache.clear()

    def bpe(self, word):
        """Tokens of one word, ``</w>`` on the last one."""
        if not isinstance(word, str):
            raise TypeError(f"word must be a str, got {type(word).__name__}")
        if not word:
            return []
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        rank_of = self._ranks.get
        while len(symbols) > 1:
            # Rank of every adjacent pair; one rank names exactly one pair (a repeated merge
            # keeps only its last rank), so the positions holding the lowest rank are exactly
            # the occurrences of the pair to merge.
            pair_ranks = list(map(rank_of, zip(symbols, symbols[1:]), repeat(_NO_RANK)))
            best = min(pair_ranks)
            if best == _NO_RANK:
                break
            start = pair_ranks.index(best)
            if pair_ranks.count(best) == 1:  # the usual case: one occurrence
                symbols[start : start + 2] = [symbols[start] + symbols[start + 1]]
                continue
            merged = symbols[start] + symbols[start + 1]
            out = symbols[:start]
            i, last = start, len(pair_ranks)
            while i < len(symbols):
                if i < last and pair_ranks[i] == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            symbols = out
        if " " in word:
            return " ".join(symbols).split(" ")
        return symbols

    def _word_ids(self, word):
        ids = self._cache.get(word)
        if ids is None:
            vocab, unk = self._vocab, self.unk_id
            ids = [vocab.get(token, unk) for token in self.bpe(word)]
            if self._capacity > 0:
                if len(self._cache) >= self._capacity:
                    self._cache.clear()
                self._cache[word] = ids
        return ids

    def encode(self, words):
        """Ids of one sequence of words, concatenated."""
        return self._encode(words, "words")

    def encode_batch(self, batch, num_threads=1):
        """Ids of each word list in ``batch``; ``num_threads`` is checked for API parity only."""
        _checked_int("num_threads", num_threads, 1, MAX_THREADS)
        if isinstance(batch, str) or not hasattr(batch, "__iter__"):
            raise TypeError(f"batch must be a list of lists of str, got {type(batch).__name__}")
        # a tuple, as in the C++ core: reading one sequence (a generator) may change `batch`
        return [self._encode(words, "batch", index) for index, words in enumerate(tuple(batch))]

    def _encode(self, words, name, index=None):
        """encode(); errors name `words` as ``name`` or ``name[index]``, as the C++ core's do."""
        if isinstance(words, str) or not hasattr(words, "__iter__"):
            label = name if index is None else f"{name}[{index}]"
            raise TypeError(f"{label} must be a list of str, got {type(words).__name__}")
        ids = []
        try:
            for word in words:
                ids.extend(self._word_ids(word))
        except TypeError:  # a word that is no str (unhashable, or refused by bpe()): name it
            for position, word in enumerate(words):
                if not isinstance(word, str):
                    label = name if index is None else f"{name}[{index}]"
                    raise TypeError(f"{label}[{position}] must be a str, got {type(word).__name__}") from None
            raise
        return ids
