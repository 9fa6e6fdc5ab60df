"""XLM's pre-tokenization on the C++ pipeline (csrc/moses.h), with source offsets.

`CppPreTokenizer` gives the same words as `pre_tokenizer.XLMPreTokenizer` and, through
`words_and_spans`, the (start, end) span of the caller's text (str indices) behind every
character of every word. The C++ objects take their data from where the reference takes it:
character classes, non-breaking prefixes and normaliser rules from the installed sacremoses,
XLM's own tables from pre_tokenizer.py, Unicode properties from unicodedata / str methods
(built once per process, ~0.2 s). zh/th/ja keep their Python segmenters between the C++
normalisation and the C++ lowercasing, as the reference does.
"""

import functools
import re
import unicodedata

import numpy as np
import sacremoses

from xlm_fast import pre_tokenizer

try:
    from xlm_fast._C import MosesPipeline, MosesUnicodeTables
except ImportError:  # no compiled extension, or one without the Moses pipeline
    MosesPipeline = MosesUnicodeTables = None

# Property bits of csrc/moses.h's UnicodeTables::Property.
_C, _MN, _SPACE, _DECIMAL, _CASED, _CASE_IGNORABLE = 1, 2, 4, 8, 16, 32
_SIGMA, _FINAL_SIGMA = 0x3A3, 0x3C2


def available():
    return MosesPipeline is not None


def _all_chars():
    """Every code point but the surrogates, as uint32 codes and as one str."""
    codes = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype("<u4")
    return codes, codes.tobytes().decode("utf-32-le")


def _utf32(text):
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _bisect(chars, whole_ok):
    """Indices i of `chars` where whole_ok(chars[i]) is False, found by bisection over
    whole_ok on slices (true of a slice only if true of each of its characters)."""
    bad, pending = [], [(0, len(chars))]
    while pending:
        first, last = pending.pop()
        if whole_ok(chars[first:last]):
            continue
        if last - first == 1:
            bad.append(first)
        else:
            middle = (first + last) // 2
            pending += [(first, middle), (middle, last)]
    return sorted(bad)


def _context_properties(codes):
    """Cased / case-ignorable bits as str.lower's Final_Sigma test sees them: "AcΣ " lowers Σ
    to ς iff c is case-ignorable or cased, "AΣc " iff c is case-ignorable or not cased."""

    def final_sigma_at(pattern, position):
        rows = np.empty((len(codes), 4), dtype="<u4")
        for column, value in enumerate(pattern):
            rows[:, column] = codes if value is None else value
        lowered = _utf32(rows.tobytes().decode("utf-32-le").lower())
        return lowered.reshape(-1, 4)[:, position] == _FINAL_SIGMA

    ignorable_or_cased = final_sigma_at((ord("A"), None, _SIGMA, ord(" ")), 2)
    ignorable_or_uncased = final_sigma_at((ord("A"), _SIGMA, None, ord(" ")), 1)
    ignorable = ignorable_or_cased & ignorable_or_uncased
    return ignorable, ignorable_or_cased & ~ignorable


@functools.lru_cache(maxsize=None)
def unicode_tables():
    """The process-wide MosesUnicodeTables (csrc/moses.h's UnicodeData) from unicodedata."""
    codes, chars = _all_chars()
    properties = np.zeros(0x110000, dtype=np.uint8)
    categories = np.frombuffer("".join(map(unicodedata.category, chars)).encode("ascii"), np.uint8).reshape(-1, 2)
    properties[codes[categories[:, 0] == ord("C")]] |= _C
    properties[0xD800:0xE000] |= _C  # category Cs
    marks = categories[:, 0] == ord("M")
    properties[codes[marks & (categories[:, 1] == ord("n"))]] |= _MN
    for pattern, bit in ((r"\s", _SPACE), (r"\d", _DECIMAL)):  # as re (and str.isspace/isdecimal) see them
        properties[codes[[match.start() for match in re.finditer(pattern, chars)]]] |= bit

    # str.lower: one character each except a few (U+0130), found by bisection.
    multiple = _bisect(chars, lambda part: len(part.lower()) == len(part))
    single = np.ones(len(codes), dtype=bool)
    single[multiple] = False
    single_codes = codes[single]
    lowered = _utf32(single_codes.tobytes().decode("utf-32-le").lower())
    changed = np.nonzero(lowered != single_codes)[0]
    lowercase = {chr(single_codes[i]): chr(lowered[i]) for i in changed}
    lowercase.update({chars[i]: chars[i].lower() for i in multiple})
    # Unassigned and private-use characters are neither cased nor case-ignorable.
    assigned = single & ~((categories[:, 0] == ord("C")) & np.isin(categories[:, 1], (ord("n"), ord("o"))))
    ignorable, cased = _context_properties(codes[assigned])
    properties[codes[assigned][ignorable]] |= _CASE_IGNORABLE
    properties[codes[assigned][cased]] |= _CASED
    for i in multiple:  # their lowercase has several characters: test them one by one
        before, after = ("A" + chars[i] + "Σ ").lower(), ("AΣ" + chars[i] + " ").lower()
        is_ignorable = before[-2] == "ς" and after[1] == "ς"
        properties[codes[i]] |= _CASE_IGNORABLE if is_ignorable else (_CASED if before[-2] == "ς" else 0)

    nfd = {chars[i]: unicodedata.normalize("NFD", chars[i])
           for i in _bisect(chars, lambda part: unicodedata.is_normalized("NFD", part))}
    nfd = {c: parts for c, parts in nfd.items() if parts != c}
    # Canonical combining classes are non-zero only for marks (checked by the tests).
    combining = {c: unicodedata.combining(c) for c in map(chr, codes[marks]) if unicodedata.combining(c)}
    return MosesUnicodeTables(properties.tobytes(), lowercase, nfd, combining)


# MosesPunctNormalizer's regex rules that csrc/moses.cpp implements as passes (NormalizerRule::Kind),
# keyed by (pattern, replacement); other rules must be plain text on both sides.
_LITERAL, _LETTER_QUOTE_LETTER, _DIGIT_NBSP_DIGIT = 0, 4, 7
_REGEX_RULES = {
    (r" +", r" "): 1,
    (r"\) ([.!:?;,])", r")\g<1>"): 2,
    (r"(\d) %", r"\g<1>%"): 3,
    (r'"([,.]+)', r'\g<1>"'): 5,
    (r'(\.+)"(\s*[^<])', r'"\g<1>\g<2>'): 6,
}
_LETTER_PATTERN = re.compile(r"\(\[a-zA-Z\]\)(.)\(\[a-zA-Z\]\)", re.S)
_DIGIT_PATTERN = "(\\d)\u00a0(\\d)"
_ONE_BETWEEN_GROUPS = re.compile(r"\\g<1>(.)\\g<2>", re.S)
_ESCAPES = {"r": "\r", "n": "\n", "t": "\t"}
_METACHARACTERS = set(".^$*+?{}[]|()")


def _literal(pattern):
    """The text a regex without metacharacters matches, or None."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped.isalnum() and escaped not in _ESCAPES:
                return None
            out.append(_ESCAPES.get(escaped, escaped))
            i += 2
            continue
        if c in _METACHARACTERS or c == "\\":
            return None
        out.append(c)
        i += 1
    return "".join(out)


def normalizer_rules(lang):
    """MosesPunctNormalizer(lang).substitutions (XLM's options: the defaults) as (kind, from, to)."""
    rules = []
    for pattern, replacement in sacremoses.MosesPunctNormalizer(lang=lang).substitutions:
        kind = _REGEX_RULES.get((pattern, replacement))
        letter, between = _LETTER_PATTERN.fullmatch(pattern), _ONE_BETWEEN_GROUPS.fullmatch(replacement)
        literal = _literal(pattern)
        if kind is not None:
            rules.append((kind, "", ""))
        elif letter and between:
            rules.append((_LETTER_QUOTE_LETTER, letter.group(1), between.group(1)))
        elif pattern == _DIGIT_PATTERN and between:
            rules.append((_DIGIT_NBSP_DIGIT, "\u00a0", between.group(1)))
        elif literal and "\\" not in replacement:
            rules.append((_LITERAL, literal, replacement))
        else:
            raise ValueError(f"sacremoses {sacremoses.__version__}: normalizer rule {pattern!r} -> {replacement!r} "
                             "has no C++ pass")
    return rules


_CLASS_NAMES = ("IsAlnum", "IsAlpha", "IsLower", "IsN", "IsSc", "IsSo")


def _character_class(tokenizer, name):
    # Used both inside "[...]" regex classes and as sets: the same only without these.
    chars = getattr(tokenizer, name)
    if any(c in chars for c in "[]\\^-"):
        raise ValueError(f"sacremoses {name} holds a regex metacharacter; the C++ classes would differ")
    return chars


def _full_stops():
    stops = re.fullmatch(r"\[([^\]\\]+)\]\\s\*", pre_tokenizer._FULL_STOPS.pattern)
    if stops is None:
        raise ValueError(f"unexpected replace_unicode_punct pattern {pre_tokenizer._FULL_STOPS.pattern!r}")
    return stops.group(1)


@functools.lru_cache(maxsize=None)
def pipeline(lang, do_lowercase_and_remove_accent=True):
    """The C++ MosesPipeline of one language and lowercase setting (built once, cached)."""
    if MosesPipeline is None:
        raise RuntimeError("xlm_fast._C has no MosesPipeline (extension not built)")
    tokenizer = sacremoses.MosesTokenizer(lang=lang)
    return MosesPipeline(
        unicode_tables(),
        lang,
        bool(do_lowercase_and_remove_accent),
        {chr(c): to for c, to in pre_tokenizer._UNICODE_PUNCT.items()},
        _full_stops(),
        {chr(c): to for c, to in pre_tokenizer._ROMANIAN.items()},
        normalizer_rules(lang),
        *(_character_class(tokenizer, name) for name in _CLASS_NAMES),
        list(tokenizer.NONBREAKING_PREFIXES),
        list(tokenizer.NUMERIC_ONLY_PREFIXES),
    )


def _locate(pieces, text, spans):
    """(pieces, spans of each): pieces found one after the other in `text` (a segmenter's
    output); a piece not found there gets empty spans at the current place."""
    out, at = [], 0
    for piece in pieces:
        found = text.find(piece, at)
        if found < 0:
            place = spans[at - 1][1] if 0 < at <= len(spans) else (spans[0][0] if spans else 0)
            out.append([(place, place)] * len(piece))
            continue
        out.append(spans[found:found + len(piece)])
        at = found + len(piece)
    return out


class CppPreTokenizer:
    """Drop-in for pre_tokenizer.XLMPreTokenizer on the C++ pipeline, plus words_and_spans."""

    CUSTOM_LANGUAGES = pre_tokenizer.XLMPreTokenizer.CUSTOM_LANGUAGES

    def __init__(self, do_lowercase_and_remove_accent=True):
        self.do_lowercase_and_remove_accent = do_lowercase_and_remove_accent
        self._segmenters = pre_tokenizer.XLMPreTokenizer(do_lowercase_and_remove_accent)  # KyTea cache

    def __getstate__(self):
        return {"do_lowercase_and_remove_accent": self.do_lowercase_and_remove_accent}

    def __setstate__(self, state):
        self.__init__(state["do_lowercase_and_remove_accent"])

    def __call__(self, text, lang="en", bypass_tokenizer=False):
        return self.words_and_spans(text, lang, bypass_tokenizer)[0]

    def words_and_spans(self, text, lang="en", bypass_tokenizer=False):
        """(words, spans): spans[w][k] is the (start, end) of `text` behind character k of word w."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not isinstance(lang, str):
            raise TypeError(f"lang must be a str language code, got {type(lang).__name__}")
        if bypass_tokenizer:
            matches = list(re.finditer(r"\S+", text))
            return [m.group() for m in matches], [[(i, i + 1) for i in range(*m.span())] for m in matches]
        moses = pipeline(lang, self.do_lowercase_and_remove_accent)
        if lang not in self.CUSTOM_LANGUAGES:
            return moses(text)
        if lang == "zh":
            import rjieba

            segments = rjieba.cut(text)
            joined = " ".join(segments)
            joined_spans, at = [], 0
            for number, segment in enumerate(segments):
                if number:
                    joined_spans.append((at, at))
                found = text.find(segment, at)
                if found < 0:
                    joined_spans += [(at, at)] * len(segment)
                else:
                    joined_spans += [(i, i + 1) for i in range(found, found + len(segment))]
                    at = found + len(segment)
            normalized, spans = moses.normalize(joined, joined_spans)
            words = normalized.split()
        else:
            normalized, spans = moses.normalize(text)
            if lang == "th":
                from pythainlp.tokenize import word_tokenize

                words = word_tokenize(normalized)
            else:  # ja
                words = list(self._segmenters._kytea_tokenizer().getWS(normalized))
        return moses.finish(words, _locate(words, normalized, spans))
