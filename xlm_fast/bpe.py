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


class BPEModel:
    """Byte-pair encoder over ``vocab`` (token -> id) and ``merges`` (pairs, rank = position).

    ``cache_capacity`` bounds the word cache (0 disables it); a full cache is emptied.
    """

    def __init__(self, vocab, merges, unk_id, cache_capacity=1 << 16):
        self._vocab = dict(vocab)
        self._ranks = {}
        for rank, (left, right) in enumerate(merges):
            if not left or not right:
                raise ValueError(f"merge #{rank} has an empty symbol")
            self._ranks[(left, right)] = rank  # a repeated merge keeps its last rank
        self.unk_id = int(unk_id)
        self.num_merges = len(self._ranks)
        self._cache = {}
        self._capacity = int(cache_capacity)

    @property
    def cache_capacity(self):
        return self._capacity

    @cache_capacity.setter
    def cache_capacity(self, capacity):
        self._capacity = int(capacity)
        self._cache.clear()

    @property
    def cache_size(self):
        return len(self._cache)

    def clear_cache(self):
        self._cache.clear()

    def bpe(self, word):
        """Tokens of one word, ``</w>`` on the last one."""
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
        ids = []
        for word in words:
            ids.extend(self._word_ids(word))
        return ids

    def encode_batch(self, batch, num_threads=1):
        """Ids of each word list in ``batch``; ``num_threads`` is accepted for API parity only."""
        return [self.encode(words) for words in batch]
