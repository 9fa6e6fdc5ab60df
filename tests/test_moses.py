"""The C++ pre-tokenizer (csrc/moses.cpp, xlm_fast/moses.py) against the Python reference
(xlm_fast/pre_tokenizer.py, sacremoses): rule by rule, end to end on the corpus, a seeded
differential fuzz, the offsets, and malformed input."""

import os
import random
import unicodedata

import pytest
import sacremoses

from xlm_fast import moses, pre_tokenizer
from xlm_fast.pre_tokenizer import XLMPreTokenizer

pytestmark = pytest.mark.skipif(not moses.available(), reason="xlm_fast._C has no MosesPipeline")

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "sample.tsv")
MOSES_LANGS = ["en", "fr", "it", "de", "es", "cs", "ro", "ru", "el", "pt", "fi", "xx"]

# Pieces of the random strings: every rule's trigger, in many scripts.
PIECES = [
    "abc", "Abc", "ABC", "Éte", "straße", "中文", "ไทย", "русский", "ελληνικά", "ΑΣ", "ΌΣΟΣ", "Σ", "ς", "İ", "ǅ",
    "Ⅻ", "한국어", "日本", "हिन्दी", "😀", "123", "5,300", "4,5", "3.14", "1\u00a0000", "٣", "http://a.b/c?d=1&e=2",
    "www.x.com/a_b", "x@y.org", "<", ">", "&", "&amp;", "|", "[", "]", "{", "}", "(", ")", "( ", " )", ") .", "'", "''",
    '"', "``", "`", "´", "«", "»", "\u00a0«\u00a0", "\u00a0»", "„", "“", "”", "‘", "’", "‚", "a‘b", "a’b", "-", "--",
    "–", "—", "━", "...", "..", ".", "....", "…", "。", "．", "，", "、", "：", "？", "！", "（", "）",
    "「", "」", "０", "９",
    "％", "【", "】", "〈", "n't", "N'T", "'s", "'S", "'ll", "'re", "'ve", "'m", "'d", "l'", "d'", "qu'", "1's", "x'",
    "'x", "cannot", "gonna", "Dr.", "Mr.", "No.", "Nr.", "Art.", "pp.", "etc.", "e.g.", "U.S.", "A.", "DOTMULTI",
    "DOTDOTMULTI", "\u00a0%", "nº\u00a0", "\u00a0:", "\u00a0ºC", "\u00a0cm", "\u00a0?", "\u00a0!", "\u00a0;", ",\u00a0",
    "5 %", ".'", '."', '.".', ',"', '"!', "@", "#", "$", "€", "©", "%", ";", ":", "?", "!", ",", "/", "\\", "+", "=",
    "\t", "\n", "\r", " ", "  ", "\u2028", "\u3000", "\u200b", "\u200d", "\u00ad", "\u0301", "\u0327", "\u0345",
    "e\u0301", "a\u0323\u0308", "\u0f71\u0f72", "\x00", "\x07", "\x1c", "\x7f", "\ufeff", "\ue000", "\U000e0001",
    "ş", "ț", "Ă", "î", "Ș",
]


def random_text(rng):
    return "".join(rng.choice(PIECES) + rng.choice(["", " ", "", "\u00a0"]) for _ in range(rng.randint(0, 14)))


def read_corpus():
    with open(SAMPLE, encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t", 1) for line in handle]


def check_spans(text, spans):
    """Inside the text, starts and ends non-decreasing over the whole output."""
    flat = [span for word in spans for span in word]
    for start, end in flat:
        assert 0 <= start <= end <= len(text)
    for (start, end), (next_start, next_end) in zip(flat, flat[1:]):
        assert start <= next_start and end <= next_end


@pytest.fixture(scope="module")
def references():
    return {True: XLMPreTokenizer(True), False: XLMPreTokenizer(False)}


@pytest.fixture(scope="module")
def cpps():
    return {True: moses.CppPreTokenizer(True), False: moses.CppPreTokenizer(False)}


# ---- tables


def test_unicode_tables_assumptions():
    # moses.unicode_tables reads combining classes of marks only.
    assert all(unicodedata.category(chr(c)).startswith("M")
               for c in range(0x110000) if unicodedata.combining(chr(c)))
    tokenizer = sacremoses.MosesTokenizer(lang="en")
    assert set(tokenizer.IsAlnum) >= set(tokenizer.IsAlpha)


def test_every_normalizer_rule_has_a_pass():
    for lang in MOSES_LANGS:
        assert len(moses.normalizer_rules(lang)) == len(sacremoses.MosesPunctNormalizer(lang=lang).substitutions)


# ---- rule by rule

NORMALIZER_CASES = [
    "a\rb", "f(x)", "(a) .", "a ) , b", "( a )", "5 %", "a :b", "a ;b", "`a`", "''a''", "„a“ ”b", "a–b", "a—b",
    "a    b", "´a", "a‘b a’b ‘c’ ‚d", "x''y", "´´", "wait…", "\u00a0«\u00a0oui\u00a0»\u00a0", "«a\u00a0» «b»",
    "5\u00a0%", "nº\u00a01", "a\u00a0: b", "3\u00a0ºC", "3\u00a0cm", "a\u00a0?", "a\u00a0!", "a\u00a0;", "a,\u00a0b",
    '"a",', '"hi,." there', 'a,"b"', 'end..."  x', 'end." <b>', 'end."', 'x."  ', '."<', '. " y', "1\u00a0000\u00a0000",
    "  padded  ", "\u3000x\u2028", "(\u00a0)",
]


@pytest.mark.parametrize("lang", ["en", "fr", "de", "cs", "it", "ru"])
def test_normalize_punct(lang):
    pipeline = moses.pipeline(lang, False)
    reference = sacremoses.MosesPunctNormalizer(lang=lang)
    for text in NORMALIZER_CASES:
        got, spans = pipeline.step("normalize_punct", text)
        assert got == reference.normalize(text), text
        check_spans(text, [spans])


def test_replace_unicode_punct_remove_non_printing_romanian():
    pipeline = moses.pipeline("ro", False)
    for text in ["a。 b．c", "，、“”∶：？《》）！（；」「～’…━〈〉【】％０９", "plain", "x\x00y\u200bz\ufeff\ue000\x7f",
                 "ŞşŢţȘșȚțĂăÂâÎî"]:
        assert pipeline.step("replace_unicode_punct", text)[0] == pre_tokenizer.replace_unicode_punct(text)
        assert pipeline.step("remove_non_printing_char", text)[0] == pre_tokenizer.remove_non_printing_char(text)
        assert pipeline.step("romanian", text)[0] == text.translate(pre_tokenizer._ROMANIAN)


TOKENIZER_CASES = [
    "wait... what..", "a.. b....c .", "x DOTMULTI y DOTDOTMULTI.", "DODOTMULTI", "5,300 and 5, 3 ,x a,b, 3,", "1,",
    "don't it's I'm we'll they're I've can't WON'T 1990's 'tis ' x", "l'homme qu'il d'accord aujourd'hui' 'x",
    "rock 'n' roll", "Dr. Smith", "Mr. and No. 5 No. x No.", "etc. the end.", "U.S.A. is", "pp. 12 Art. 3",
    "end.'", "He said 'hi.'", "a.b.", "x. y", "A. B. C.", "£5 @home #tag $3 %x &y *z", "a/b c\\d", "[x] {y} <z>",
    "tab\tnew\nline\x1c\x00", "ευχαριστώ. Ευχαριστώ.", "Σ. σ.", "5.", "..", ".", "", "   ", "-- a-b", "`quote`",
]


@pytest.mark.parametrize("lang", ["en", "fr", "it", "de", "pt", "ru", "xx"])
def test_tokenize(lang):
    pipeline = moses.pipeline(lang, False)
    reference = sacremoses.MosesTokenizer(lang=lang)
    for text in TOKENIZER_CASES:
        words, spans = pipeline.step("tokenize", text)
        assert words == reference.tokenize(text, return_str=False, escape=False), text
        check_spans(text, spans)


def test_lowercase_and_remove_accent():
    pipeline = moses.pipeline("en", True)
    for text in ["ÉCOLE Straße", "ΌΣΟΣ ΑΣ. Σ ΑΣ\u00ad", "İstanbul", "ǅemal Ⅻ", "a\u0323\u0308 e\u0301", "한국어",
                 "ﬁ ŉ ẞ", "x  y", "\u0f71\u0f72\u0f74 \u1d165\u1d16d", "Å Ω K"]:
        got, spans = pipeline.step("lowercase_and_remove_accent", text)
        assert got == pre_tokenizer.lowercase_and_remove_accent(text.split(" ")), text
        check_spans(text, spans)


# ---- end to end


def test_sample_corpus_every_language(references, cpps):
    for lang, text in read_corpus():
        langs = [lang] if lang in ("ja",) else [lang, "de", "fr", "ro", "it", "en"]
        for other in langs:
            if other == "ja":
                continue  # KyTea is not installed here
            for lowercase in (True, False):
                words, spans = cpps[lowercase].words_and_spans(text, other)
                assert words == references[lowercase](text, other), (other, text)
                assert [len(word) for word in words] == [len(span) for span in spans]
                check_spans(text, spans)


def test_differential_fuzz(references, cpps):
    rng = random.Random(1234)
    for _ in range(3000):
        text = random_text(rng)
        lang = rng.choice(MOSES_LANGS + ["zh", "th"])
        lowercase = rng.random() < 0.5
        if lang in ("zh", "th") and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            continue
        words, spans = cpps[lowercase].words_and_spans(text, lang)
        assert words == references[lowercase](text, lang), (lang, lowercase, text)
        check_spans(text, spans)


def test_long_texts_and_buffer_reuse(references, cpps):
    # Texts past the per-thread spare buffer's bound (csrc/moses.cpp kMaxSpare, 65536) and
    # short ones after them, so that passes write into buffers of earlier, longer texts.
    rng = random.Random(99)
    long_text = " ".join(random_text(rng) for _ in range(4000))
    assert len(long_text) > 70000
    for text in [long_text, "Short (text).", long_text[:5000], "ΌΣΟΣ Dr. Smith's…", ""]:
        for lowercase in (True, False):
            words, spans = cpps[lowercase].words_and_spans(text, "en")
            assert words == references[lowercase](text, "en")
            check_spans(text, spans)


def test_time_passes_runs_the_pipeline():
    pipeline = moses.pipeline("en", True)
    texts = ["Hello, world!", "", "Dr. Smith's cat."]
    seconds, words = pipeline.time_passes(texts, 3)
    assert len(seconds) == 3 and all(s >= 0 for s in seconds)
    assert words == sum(len(pipeline(text)[0]) for text in texts)
    with pytest.raises(ValueError, match="passes"):
        pipeline.time_passes(texts, 0)
    with pytest.raises(TypeError, match="texts"):
        pipeline.time_passes([1], 1)


def test_bypass_tokenizer(references, cpps):
    text = " a\u00a0b\tc\ud800 "
    assert cpps[True](text, "en", bypass_tokenizer=True) == references[True](text, "en", bypass_tokenizer=True)


# ---- offsets


def test_offsets_point_back_into_unchanged_text():
    rng = random.Random(7)
    ascii_pieces = [p for p in PIECES if p.isascii() and p.isprintable() and "DOT" not in p and "`" not in p
                    and "''" not in p and '"' not in p]
    pipeline = moses.pipeline("en", False)
    lowercased = moses.pipeline("en", True)
    for _ in range(500):
        text = " ".join(rng.choice(ascii_pieces) for _ in range(rng.randint(1, 10)))
        if pipeline.normalize(text)[0] != text.strip():
            continue
        for words, spans, fold in ((*pipeline(text), str), (*lowercased(text), str.lower)):
            for word, span in zip(words, spans):
                assert fold(text[span[0][0]:span[-1][1]]) == word
                assert all(fold(text[start:end]) == char for char, (start, end) in zip(word, span))


def test_offsets_of_replaced_runs():
    words, spans = moses.pipeline("en", True)("«Wait…» it’s “ΌΣΟΣ” 。")
    assert words == ['"', "wait", "...", '"', "it", "'s", '"', "οσος", '"', "."]
    assert spans[2] == [(5, 6)] * 3  # "…" -> "..."
    assert spans[7] == [(14, 15), (15, 16), (16, 17), (17, 18)]
    words, spans = moses.pipeline("en", False)("a... b")
    assert spans[1] == [(1, 2), (2, 3), (3, 4)]


def test_segmented_languages_offsets(cpps):
    for text, lang in [("我爱北京天安门", "zh"), ("สวัสดีครับ ผมชื่อ", "th")]:
        words, spans = cpps[True].words_and_spans(text, lang)
        assert words == XLMPreTokenizer(True)(text, lang)
        check_spans(text, spans)
        assert "".join(text[s:e] for span in spans for s, e in span) == "".join(words)


# ---- batch and malformed input


def test_batch_equals_single_calls():
    pipeline = moses.pipeline("fr", True)
    texts = [text for _, text in read_corpus()[:200]] + ["", "\ud800", "x" * 5000]
    single = [pipeline(text) for text in texts]
    assert pipeline.batch(texts, num_threads=2) == single
    assert pipeline.batch(texts) == single
    assert pipeline.batch([], num_threads=3) == []


def test_malformed_input():
    pipeline = moses.pipeline("en", True)
    cpp = moses.CppPreTokenizer()
    for bad in (None, b"bytes", 3, ["a"]):
        with pytest.raises(TypeError, match="text"):
            pipeline(bad)
        with pytest.raises(TypeError, match="text"):
            cpp(bad)
    with pytest.raises(TypeError, match="lang"):
        cpp("a", lang=None)
    with pytest.raises(TypeError, match="texts"):
        pipeline.batch("abc")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        pipeline.batch(["a", 1])
    with pytest.raises(ValueError, match="num_threads"):
        pipeline.batch(["a"], num_threads=0)
    with pytest.raises(TypeError, match="num_threads"):
        pipeline.batch(["a"], num_threads="2")
    with pytest.raises(ValueError, match="spans"):
        pipeline.normalize("abc", [(0, 1)])
    with pytest.raises(ValueError, match="name"):
        pipeline.step("nope", "a")
    reference = XLMPreTokenizer(True)
    for text in ["\ud800", "a\udfffb \ud83d\ude00", "\x00", "a\x00b\x00", "\x00" * 1000]:
        assert cpp(text) == reference(text), repr(text)
    huge = ("Dr. Smith's e-mail… «x» " * 20000) + "\ud800" + "." * 100000
    words, spans = pipeline(huge)
    assert words == reference(huge)
    check_spans(huge, spans)
