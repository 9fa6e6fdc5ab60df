"""XLM's pre-tokenization in Python: text -> the words that go into BPE.

The reference pipeline (transformers' XLMTokenizer._tokenize before BPE, XLM's tools/ scripts):
unicode punctuation -> ASCII, Moses punctuation normalisation, drop non-printing characters,
Romanian normalisation (ro), Moses tokenisation (sacremoses), or jieba (zh) / PyThaiNLP (th) /
KyTea (ja) word segmentation; then lowercase + strip accents (optional). Special and added
tokens are split out by the tokenizer before text reaches this module.
"""

import os
import re
import unicodedata

import sacremoses


class _CategoryFilter(dict):
    """str.translate table deleting the characters whose Unicode category starts with one of
    `prefixes` (per Python's unicodedata, as transformers does); filled lazily per character."""

    def __init__(self, *prefixes):
        super().__init__()
        self._prefixes = prefixes

    def __missing__(self, code_point):
        keep = not unicodedata.category(chr(code_point)).startswith(self._prefixes)
        self[code_point] = code_point if keep else None
        return self[code_point]


_DROP_CONTROL = _CategoryFilter("C")  # remove-non-printing-char.perl
_DROP_NONSPACING_MARKS = _CategoryFilter("Mn")  # accents after NFD

# replace-unicode-punctuation.perl: one-character replacements, then "。"/"．" + spaces -> ". ".
_UNICODE_PUNCT = str.maketrans(
    {
        "，": ",", "、": ",", "”": '"', "“": '"', "∶": ":", "：": ":", "？": "?", "《": '"', "》": '"',
        "）": ")", "！": "!", "（": "(", "；": ";", "」": '"', "「": '"', "～": "~", "’": "'",
        "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%",
        **{chr(0xFF10 + digit): str(digit) for digit in range(10)},
    }
)
_FULL_STOPS = re.compile(r"[。．]\s*")

# normalise-romanian.py (cedilla -> comma) then remove-diacritics.py.
_ROMANIAN = str.maketrans(
    {"Ş": "S", "ş": "s", "Ţ": "T", "ţ": "t", "Ș": "S", "ș": "s", "Ț": "T", "ț": "t",
     "Ă": "A", "ă": "a", "Â": "A", "â": "a", "Î": "I", "î": "i"}
)


def replace_unicode_punct(text):
    if text.isascii():
        return text
    return _FULL_STOPS.sub(". ", text).translate(_UNICODE_PUNCT)


def remove_non_printing_char(text):
    # isprintable() is False for every category-C character, so True means nothing to drop.
    return text if text.isprintable() else text.translate(_DROP_CONTROL)


def lowercase_and_remove_accent(words):
    """XLM's lowercase_and_remove_accent.py on a word list (words may contain spaces, e.g.
    PyThaiNLP's; joining then splitting on " " keeps transformers' exact output)."""
    text = " ".join(words).lower()
    if not text.isascii():
        text = unicodedata.normalize("NFD", text).translate(_DROP_NONSPACING_MARKS).lower()
    return text.split(" ")


def _expander(template):
    return lambda match: match.expand(template)


class _MosesPunctNormalizer(sacremoses.MosesPunctNormalizer):
    """sacremoses' normalizer with its substitution table compiled once: the stock normalize()
    passes ~45 pattern strings to re.sub per call, and the regex-cache lookups cost ~40% of
    it; a replacement with group references becomes Match.expand, called only on a match
    (re.sub parses such a template on every call). Same table, same order, same results (the
    pre/post options stay off, as in XLM)."""

    def __init__(self, lang):
        super().__init__(lang=lang)
        self.substitutions = [
            (re.compile(pattern), replacement if "\\" not in replacement else _expander(replacement))
            for pattern, replacement in self.substitutions
        ]

    def normalize(self, text):
        for pattern, replacement in self.substitutions:
            text = pattern.sub(replacement, text)
        return text.strip()


class _MosesTokenizer(sacremoses.MosesTokenizer):
    """sacremoses' tokenizer with its character-class tests on sets built once: the stock
    islower/isanyalpha build a set of ~2,000 characters on every call (about half of
    tokenize()'s time). Same results."""

    def __init__(self, lang):
        super().__init__(lang=lang)
        self._lower_chars = frozenset(self.IsLower)
        self._alpha_chars = frozenset(self.IsAlpha)

    def islower(self, text):
        return self._lower_chars.issuperset(text)

    def isanyalpha(self, text):
        return not self._alpha_chars.isdisjoint(text)


class XLMPreTokenizer:
    """Text -> the words that go into BPE (everything before BPE; no special-token handling).

    Moses objects are built once per language and cached."""

    CUSTOM_LANGUAGES = ("zh", "th", "ja")

    def __init__(self, do_lowercase_and_remove_accent=True):
        self.do_lowercase_and_remove_accent = do_lowercase_and_remove_accent
        self._normalizers = {}
        self._tokenizers = {}
        self._kytea = None

    def __getstate__(self):  # the per-language caches are rebuilt on demand
        return {"do_lowercase_and_remove_accent": self.do_lowercase_and_remove_accent}

    def __setstate__(self, state):
        self.__init__(state["do_lowercase_and_remove_accent"])

    def moses_pipeline(self, text, lang):
        normalizer = self._normalizers.get(lang)
        if normalizer is None:
            normalizer = self._normalizers[lang] = _MosesPunctNormalizer(lang)
        return remove_non_printing_char(normalizer.normalize(replace_unicode_punct(text)))

    def moses_tokenize(self, text, lang):
        tokenizer = self._tokenizers.get(lang)
        if tokenizer is None:
            tokenizer = self._tokenizers[lang] = _MosesTokenizer(lang)
        return tokenizer.tokenize(text, return_str=False, escape=False)

    def _kytea_tokenizer(self):
        if self._kytea is None:
            try:
                import Mykytea
            except ImportError as error:  # same type as transformers' (ModuleNotFoundError), clearer text
                raise type(error)(
                    "lang='ja' needs KyTea (https://github.com/neubig/kytea) and its Python wrapper Mykytea "
                    "(pip install kytea) with a model at ~/local/share/kytea/model.bin",
                    name=error.name,
                ) from error
            self._kytea = Mykytea.Mykytea(f"-model {os.path.expanduser('~')}/local/share/kytea/model.bin")
        return self._kytea

    def __call__(self, text, lang="en", bypass_tokenizer=False):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not isinstance(lang, str):
            raise TypeError(f"lang must be a str language code, got {type(lang).__name__}")
        if bypass_tokenizer:  # pre-tokenised by the caller: BPE only
            return [word for word in text.split() if word]
        if lang not in self.CUSTOM_LANGUAGES:
            text = self.moses_pipeline(text, lang)
            if lang == "ro":
                text = text.translate(_ROMANIAN)
            words = self.moses_tokenize(text, lang)
        elif lang == "zh":
            import rjieba

            words = self.moses_pipeline(" ".join(rjieba.cut(text)), lang).split()
        elif lang == "th":
            from pythainlp.tokenize import word_tokenize

            words = word_tokenize(self.moses_pipeline(text, lang))
        else:  # ja
            words = list(self._kytea_tokenizer().getWS(self.moses_pipeline(text, lang)))
        if self.do_lowercase_and_remove_accent:
            words = lowercase_and_remove_accent(words)
        return [word for word in words if word]
