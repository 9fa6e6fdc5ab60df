"""xlm_fast.pre_tokenizer against transformers' XLMTokenizer steps before BPE."""
import os
import pickle

import pytest

from xlm_fast.pre_tokenizer import XLMPreTokenizer, lowercase_and_remove_accent, replace_unicode_punct

transformers = pytest.importorskip("transformers")
DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xlm_fast", "data")
TEXTS = ["Hello, World! Don't stop.", "l'homme qu'il", "1,234.5 — «quotes» …", "Ştiinţă şi ţară", "a\x07b  c\u200b",
         "Ünïcödé ÀÉÎ", "中文，测试。", ""]


@pytest.fixture(scope="module")
def slow():
    return transformers.XLMTokenizer(os.path.join(DEMO, "demo_vocab.json"), os.path.join(DEMO, "demo_merges.txt"))


@pytest.mark.parametrize("lang", ["en", "fr", "ro", "de"])
@pytest.mark.parametrize("lowercase", [True, False])
def test_words_equal_transformers_moses_steps(slow, lang, lowercase):
    pre = XLMPreTokenizer(do_lowercase_and_remove_accent=lowercase)
    for text in TEXTS:
        expected = slow.moses_tokenize(slow.moses_pipeline(text, lang=lang), lang=lang)
        if lang == "ro":
            expected = slow.moses_tokenize(transformers.models.xlm.tokenization_xlm.romanian_preprocessing(
                slow.moses_pipeline(text, lang=lang)), lang=lang)
        if lowercase:
            expected = transformers.models.xlm.tokenization_xlm.lowercase_and_remove_accent(expected)
        assert pre(text, lang) == [word for word in expected if word], (lang, text)


def test_helpers_bypass_pickling_and_bad_input():
    assert replace_unicode_punct("a，b。 c") == "a,b. c" and lowercase_and_remove_accent(["ÀB", "é"]) == ["ab", "e"]
    pre = XLMPreTokenizer()
    assert pre("  pre tokenised  words ", bypass_tokenizer=True) == ["pre", "tokenised", "words"]
    pre("warm the cache", "en")
    clone = pickle.loads(pickle.dumps(pre))
    assert clone("Hello, World!") == pre("Hello, World!") == ["hello", ",", "world", "!"]
    with pytest.raises(TypeError, match="text"):
        pre(3)
    with pytest.raises(TypeError, match="lang"):
        pre("a", lang=None)
