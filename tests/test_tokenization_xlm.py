"""xlm_fast.XLMTokenizer vs transformers' XLMTokenizer, and the C++ BPE core vs its Python twin.

A BPE vocabulary is learned once per module (subword-nmt, 1500 merges) from the shipped
multilingual sample corpus, tokenised the XLM way. transformers 5.x drops `lang=` before
its language-specific code, so language-aware references call its `_tokenize(piece,
lang=...)` directly on the pieces between special tokens (its own trie split).

Run as a script to (re)write the demo vocabulary: python tests/test_tokenization_xlm.py
"""
import contextlib
import io
import itertools
import json
import os
import pickle
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from xlm_fast import tokenization_xlm
from xlm_fast.bpe import BPEModel as PyBPEModel
from xlm_fast.tokenization_xlm import BatchEncoding, TokenSpan, XLMPreTokenizer, XLMTokenizer

transformers = pytest.importorskip("transformers")

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "data", "sample.tsv")
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
NUM_MERGES = 1500
BACKENDS = ["cpp", "python"] if tokenization_xlm.CppBPEModel is not None else ["python"]
try:
    import Mykytea  # noqa: F401

    HAVE_KYTEA = True
except ImportError:
    HAVE_KYTEA = False


# ----------------------------------------------------------------------------- vocabulary


def read_corpus(path=CORPUS):
    with open(path, encoding="utf-8") as handle:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in handle if line.strip()]


def learn_vocab(corpus, num_merges=NUM_MERGES):
    """(vocab, merges) learned the XLM way: words from XLMPreTokenizer (lowercased, accents
    stripped), subword-nmt merges, vocab = special tokens at XLM's ids 0..13 then every BPE
    token of the corpus by decreasing count (ties by token). Languages whose segmenter is
    not installed (ja without KyTea) are left out."""
    from subword_nmt.learn_bpe import learn_bpe

    pre = XLMPreTokenizer(do_lowercase_and_remove_accent=True)
    sentences = []
    for lang, text in corpus:
        try:
            sentences.append(pre(text, lang))
        except ImportError:
            continue
    learned = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()):  # progress bar
        learn_bpe(io.StringIO("\n".join(" ".join(words) for words in sentences) + "\n"), learned, num_merges)
    merges = [tuple(line.split()) for line in learned.getvalue().splitlines() if not line.startswith("#version")]
    bpe = PyBPEModel({}, merges, unk_id=0)
    counts = {}
    for words in sentences:
        for word in words:
            for token in bpe.bpe(word):
                counts[token] = counts.get(token, 0) + 1
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for token in sorted(counts, key=lambda token: (-counts[token], token)):
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_vocab_files(vocab, merges, vocab_path, merges_path):
    with open(vocab_path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n")
    with open(merges_path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{left} {right}\n" for left, right in merges)


@pytest.fixture(scope="module")
def corpus():
    return read_corpus()


@pytest.fixture(scope="module")
def learned(corpus):
    return learn_vocab(corpus)


@pytest.fixture(scope="module")
def files(learned, tmp_path_factory):
    directory = tmp_path_factory.mktemp("xlm_vocab")
    paths = str(directory / "vocab.json"), str(directory / "merges.txt")
    write_vocab_files(*learned, *paths)
    return paths


@pytest.fixture(scope="module", params=[True, False], ids=["lower", "cased"])
def lowercase(request):
    return request.param


@pytest.fixture(scope="module")
def hf(files, lowercase):
    return transformers.XLMTokenizer(*files, do_lowercase_and_remove_accent=lowercase)


@pytest.fixture(scope="module", params=BACKENDS)
def ours(files, lowercase, request):
    return XLMTokenizer(*files, do_lowercase_and_remove_accent=lowercase, bpe_backend=request.param)


@pytest.fixture(scope="module")
def ours_en(files):
    return XLMTokenizer(*files)


@pytest.fixture(scope="module")
def hf_en(files):
    return transformers.XLMTokenizer(*files)


def hf_tokens(hf, text, lang):
    """transformers' tokens with `lang` honoured: its trie split, then _tokenize per piece."""
    special = set(hf.all_special_tokens)
    tokens = []
    for piece in hf.tokens_trie.split(text):
        if piece in special:
            tokens.append(piece)
        elif piece:
            tokens.extend(hf._tokenize(piece, lang=lang))
    return tokens


def as_lists(encoding):
    return {key: value.tolist() if hasattr(value, "tolist") else value for key, value in encoding.items()}


# ----------------------------------------------------------------------------- ids vs transformers

EDGE_CASES = [
    "",
    "   ",
    "\t\n \r\n",
    "a\x00b\x07c\x1bd",
    "zero\u200bwidth\u200djoiner\ufeff and\u2060word",
    "e\u0301 n\u0303 a\u0308 combining \u0301alone",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "x" * 300,
    "antidisestablishmentarianism" * 8,
    "hello <s> world </s> <special3><pad>x<unk>y <special1>",
    "<s><s></s>",
    "1,234,567.89 and 3.14 12:30 1'000 1.000.000 -5",
    "https://example.com/path/to?q=1&b=2#frag user@example.com",
    "don't can't I'm we'll O'Neil rock'n'roll",
    "l'homme qu'il aujourd'hui c'est",
    "dell'arte un'altra l'anno",
    "Ştiinţă şi ţară ȘȚșț Ă â î Î Â",
    "中文，测试。你好！（括号）：“引号”",
    "ภาษาไทยง่ายนิดเดียว ครับ",
    "Ünïcödé ÀÉÎÕÜ ß ﬁ œ Æ İstanbul",
    "«quotes» „German“ ‘single’ \"double\"",
    "a...b ... c . . . d…",
    "—dash– -- - a-b",
    "\u00a0nbsp\u2009thin\u3000ideographic",
    "ﾊﾝｶｸ full-width ＡＢＣ１２３．５％",
    "Dr. Smith met Mr. Jones at 5 p.m. in the U.S.A.",
    "tab\tseparated\tvalues",
]
EDGE_LANGS = ["en", "fr", "it", "de", "ro", "zh", "th", "ru", "el"]


def test_corpus_ids_match_transformers(ours, hf, corpus):
    for lang, text in corpus:
        if lang == "ja":
            continue
        expected = hf_tokens(hf, text, lang)
        assert ours.tokenize(text, lang=lang) == expected, (lang, text)
        expected_ids = hf.build_inputs_with_special_tokens(hf.convert_tokens_to_ids(expected))
        assert ours.encode(text, lang=lang) == expected_ids, (lang, text)


def test_batch_of_corpus_matches_one_by_one(ours, corpus):
    texts = [text for lang, text in corpus if lang in ("en", "de", "ru")]
    batch = ours(texts, lang="en")["input_ids"]
    assert batch == [ours.encode(text, lang="en") for text in texts]


@pytest.mark.parametrize("lang", EDGE_LANGS)
def test_edge_cases_match_transformers(ours, hf, lang):
    for text in EDGE_CASES:
        expected = hf_tokens(hf, text, lang)
        assert ours.tokenize(text, lang=lang) == expected, (lang, text)
        assert ours.encode(text, lang=lang) == hf.build_inputs_with_special_tokens(hf.convert_tokens_to_ids(expected))


def test_bypass_tokenizer_matches_transformers(ours, hf):
    for text in EDGE_CASES:
        if "<" not in text:  # hf._tokenize does not split special tokens out
            assert ours.tokenize(text, bypass_tokenizer=True) == hf._tokenize(text, bypass_tokenizer=True), text


def test_default_call_equals_transformers_call(ours, hf, corpus):
    """transformers' own __call__ (lang is English whatever is passed) on every language."""
    texts = [text for _, text in corpus[::7]] + EDGE_CASES
    assert as_lists(ours(texts)) == as_lists(hf(texts))
    for text in texts[:40]:
        assert ours.encode(text) == hf.encode(text)
        assert ours.tokenize(text) == hf.tokenize(text)


def test_japanese_without_kytea_raises_like_transformers(ours, hf):
    if HAVE_KYTEA:
        assert ours.tokenize("日本語のテキスト", lang="ja") == hf_tokens(hf, "日本語のテキスト", "ja")
        return
    with pytest.raises(ImportError) as theirs:
        hf._tokenize("日本語のテキスト", lang="ja")
    with pytest.raises(ImportError, match="KyTea") as mine:
        ours.tokenize("日本語のテキスト", lang="ja")
    assert type(mine.value) is type(theirs.value)


def test_romanian_normalisation_only_for_ro(files):
    cased = XLMTokenizer(*files, do_lowercase_and_remove_accent=False)
    assert "ş" in "".join(cased.tokenize("şi ţară", lang="en"))
    assert "".join(cased.tokenize("şi ţară", lang="ro")).replace("</w>", " ").split() == ["si", "tara"]


# ----------------------------------------------------------------------------- call options vs transformers

PAIR_TEXTS = (
    ["Hello world, this is a fairly long first sentence.", "Short.", "", "Bonjour <special2> le monde"],
    ["A second segment", "and another considerably longer second segment for truncation", "x", ""],
)


def _call_both(ours, hf, *args, **kwargs):
    try:
        expected = hf(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - compare the error type
        with pytest.raises(type(error)):
            ours(*args, **kwargs)
        return
    assert as_lists(ours(*args, **kwargs)) == as_lists(expected), kwargs


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_padding_truncation_match_transformers(ours_en, hf_en, pair):
    texts, seconds = PAIR_TEXTS
    options = itertools.product(
        [False, True, "longest", "max_length"],
        [None, False, True, "longest_first", "only_first", "only_second"],
        [None, 4, 9, 30],
    )
    for padding, truncation, max_length in options:
        kwargs = dict(padding=padding, truncation=truncation, max_length=max_length)
        args = (texts, seconds) if pair else (texts,)
        _call_both(ours_en, hf_en, *args, **kwargs)
        _call_both(ours_en, hf_en, *(a[0] for a in args), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(return_token_type_ids=True, return_special_tokens_mask=True, return_length=True),
        dict(return_token_type_ids=True, return_special_tokens_mask=True, add_special_tokens=False),
        dict(return_attention_mask=False, return_length=True, padding=True),
        dict(padding="max_length", max_length=16, return_length=True, return_special_tokens_mask=True),
        dict(padding=True, pad_to_multiple_of=8, return_token_type_ids=True),
        dict(padding=True, padding_side="left", return_special_tokens_mask=True),
        dict(padding=True, return_tensors="pt", return_token_type_ids=True),
        dict(padding=True, return_tensors="np"),
        dict(return_tensors="pt"),
    ],
)
def test_return_options_match_transformers(ours_en, hf_en, kwargs):
    texts, seconds = PAIR_TEXTS
    single_ok = kwargs.get("return_tensors") is None or kwargs.get("padding")
    _call_both(ours_en, hf_en, texts[0], **kwargs)
    _call_both(ours_en, hf_en, texts[0], seconds[0], **kwargs)
    if single_ok:
        _call_both(ours_en, hf_en, texts, seconds, **kwargs)
        _call_both(ours_en, hf_en, texts, **kwargs)
    _call_both(ours_en, hf_en, list(zip(texts, seconds)), padding=True)


def test_tensor_types_and_batch_encoding(ours_en):
    encoded = ours_en(["one two", "three"], padding=True, return_tensors="pt")
    assert isinstance(encoded, BatchEncoding) and encoded.input_ids.dtype == torch.long
    assert encoded.to("cpu") is encoded and encoded.attention_mask.shape == encoded["input_ids"].shape
    assert ours_en("one", return_tensors="np")["input_ids"].shape == (1, 3)
    assert isinstance(ours_en("one", return_tensors="np")["input_ids"], np.ndarray)
    assert pickle.loads(pickle.dumps(encoded)).keys() == encoded.keys()
    with pytest.raises(AttributeError):
        _ = encoded.not_a_field
    with pytest.raises(ValueError, match="padding"):
        ours_en(["one two", "three"], return_tensors="pt")


def test_special_token_api_matches_transformers(ours_en, hf_en):
    for name in ("vocab_size", "unk_token_id", "bos_token_id", "sep_token_id", "pad_token_id", "cls_token_id",
                 "mask_token_id", "all_special_ids", "all_special_tokens", "special_tokens_map", "do_lower_case"):
        assert getattr(ours_en, name) == getattr(hf_en, name), name
    assert len(ours_en) == len(hf_en) and ours_en.get_vocab() == hf_en.get_vocab()
    ids = [5, 9, 0, 1]
    assert ours_en.build_inputs_with_special_tokens(ids) == hf_en.build_inputs_with_special_tokens(ids)
    assert ours_en.build_inputs_with_special_tokens(ids, [7]) == hf_en.build_inputs_with_special_tokens(ids, [7])
    assert ours_en.get_special_tokens_mask(ids, [7]) == hf_en.get_special_tokens_mask(ids, [7])
    assert ours_en.get_special_tokens_mask(ids, already_has_special_tokens=True) == hf_en.get_special_tokens_mask(
        ids, already_has_special_tokens=True)
    assert (ours_en.create_token_type_ids_from_sequences(ids, [7])
            == hf_en.create_token_type_ids_from_sequences(ids, [7]))
    tokens = ["hel", "lo</w>", "<s>", "never-seen", "<special4>"]
    assert ours_en.convert_tokens_to_ids(tokens) == hf_en.convert_tokens_to_ids(tokens)
    assert ours_en.convert_tokens_to_ids("<pad>") == hf_en.convert_tokens_to_ids("<pad>")
    assert ours_en.convert_ids_to_tokens([0, 20, 10**6]) == hf_en.convert_ids_to_tokens([0, 20, 10**6])
    assert ours_en.convert_ids_to_tokens(20) == hf_en.convert_ids_to_tokens(20)


def test_decode_matches_transformers(ours_en, hf_en, corpus):
    sequences = [ours_en.encode(text) for _, text in corpus[::30]] + [[0, 15, 1, 2, 5, 10**6], [], [7]]
    for ids in sequences:
        for skip in (False, True):
            assert ours_en.decode(ids, skip_special_tokens=skip) == hf_en.decode(ids, skip_special_tokens=skip)
    assert ours_en.decode(17) == hf_en.decode(17)
    assert ours_en.decode(torch.tensor(sequences[0])) == hf_en.decode(sequences[0])
    assert ours_en.batch_decode(sequences, skip_special_tokens=True) == hf_en.batch_decode(
        sequences, skip_special_tokens=True)


def test_missing_special_tokens_are_appended_like_transformers(learned, tmp_path):
    vocab, merges = learned
    reduced = {token: index for token, index in vocab.items() if token not in ("<pad>", "<special7>")}
    reduced = {token: index for index, token in enumerate(reduced)}
    paths = str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")
    write_vocab_files(reduced, merges, *paths)
    mine, theirs = XLMTokenizer(*paths), transformers.XLMTokenizer(*paths)
    assert len(mine) == len(theirs) and mine.get_vocab() == theirs.get_vocab()
    text = "a <pad> b <special7> c"
    assert mine.encode(text, padding="max_length", max_length=12) == theirs.encode(
        text, padding="max_length", max_length=12)


# ----------------------------------------------------------------------------- files

def test_save_load_round_trips_with_transformers(files, tmp_path, corpus):
    lang2id = {"en": 0, "fr": 1, "ro": 2}
    id2lang = {0: "en", 1: "fr", 2: "ro"}
    mine = XLMTokenizer(*files, lang2id=lang2id, id2lang=id2lang, do_lowercase_and_remove_accent=False)
    texts = [text for _, text in corpus[::25]] + EDGE_CASES
    saved = mine.save_pretrained(str(tmp_path / "ours"))
    assert all(os.path.isfile(path) for path in saved)
    theirs = transformers.XLMTokenizer.from_pretrained(str(tmp_path / "ours"))
    assert theirs.lang2id == lang2id and not theirs.do_lowercase_and_remove_accent
    assert theirs.all_special_tokens == mine.all_special_tokens
    assert as_lists(theirs(texts)) == as_lists(mine(texts))

    theirs.save_pretrained(str(tmp_path / "theirs"))
    again = XLMTokenizer.from_pretrained(str(tmp_path / "theirs"))
    assert again.lang2id == lang2id and again.id2lang == id2lang and not again.do_lowercase_and_remove_accent
    assert again(texts) == mine(texts) and again.get_vocab() == mine.get_vocab()

    mine.save_pretrained(str(tmp_path / "ours2"))
    for name in ("vocab.json", "merges.txt"):
        with open(tmp_path / "ours2" / name, encoding="utf-8") as a, \
                open(tmp_path / "theirs" / name, encoding="utf-8") as b:
            assert a.read() == b.read(), name
    assert XLMTokenizer.from_pretrained(str(tmp_path / "ours2"), do_lowercase_and_remove_accent=True)(texts) == \
        XLMTokenizer(*files)(texts)


def test_bad_files_raise_clear_errors(files, tmp_path):
    vocab, merges = files
    with pytest.raises(FileNotFoundError, match="vocab_file"):
        XLMTokenizer(str(tmp_path / "nope.json"), merges)
    with pytest.raises(FileNotFoundError, match="merges_file"):
        XLMTokenizer(vocab, str(tmp_path / "nope.txt"))
    with pytest.raises(TypeError, match="vocab_file"):
        XLMTokenizer(None, merges)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        XLMTokenizer(str(bad_json), merges)
    bad_json.write_text('["a", "b"]', encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object"):
        XLMTokenizer(str(bad_json), merges)
    bad_json.write_text('{"a": "zero"}', encoding="utf-8")
    with pytest.raises(ValueError, match="'a'"):
        XLMTokenizer(str(bad_json), merges)
    bad_merges = tmp_path / "bad.txt"
    bad_merges.write_text("a b\nlonely\nc d\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        XLMTokenizer(vocab, str(bad_merges))
    bad_merges.write_bytes(b"a b\n\xff\xfe c\n")
    with pytest.raises(ValueError, match="UTF-8"):
        XLMTokenizer(vocab, str(bad_merges))
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()
    with pytest.raises(OSError, match="vocab_file"):
        XLMTokenizer(str(unreadable), merges)
    with pytest.raises(OSError, match="pretrained_model_name_or_path=.*neither a local directory"):
        XLMTokenizer.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="has no vocab.json"):
        XLMTokenizer.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="bpe_backend"):
        XLMTokenizer(vocab, merges, bpe_backend="gpu")


def test_worker_processes_and_pickling_keep_ids(files, corpus, ours_en):
    texts = [text for _, text in corpus[::11]] + EDGE_CASES
    expected = ours_en(texts, padding=True)
    parallel = XLMTokenizer(*files, num_workers=2)
    assert parallel(texts, padding=True) == expected
    assert parallel(texts[:3]) == ours_en(texts[:3])  # small batch: no workers
    clone = pickle.loads(pickle.dumps(parallel))
    assert clone(texts, padding=True) == expected


def test_bad_arguments_raise_clear_errors(ours_en):
    for bad in (None, 3, b"bytes", {"a": 1}):
        with pytest.raises(TypeError, match="text"):
            ours_en(bad)
    with pytest.raises(TypeError, match="text"):
        ours_en(["fine", 5])
    with pytest.raises(TypeError, match="text"):
        ours_en.tokenize(4.5)
    with pytest.raises(TypeError, match="lang"):
        ours_en("text", lang=3)
    with pytest.raises(ValueError, match="text_pair"):
        ours_en(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="padding"):
        ours_en("a", padding="sideways")
    with pytest.raises(ValueError, match="truncation"):
        ours_en("a", truncation="middle")
    with pytest.raises(ValueError, match="max_length"):
        ours_en("a", max_length=-1)
    with pytest.raises(ValueError, match="return_tensors"):
        ours_en("a", return_tensors="tf")
    with pytest.raises(TypeError, match="token_ids"):
        ours_en.decode("abc")



@pytest.mark.parametrize(
    "option,bad",
    [("padding_side", "up"), ("padding_side", None), ("truncation_side", "middle"), ("model_max_length", 0),
     ("model_max_length", 2.5), ("model_max_length", -5), ("num_workers", 0), ("num_workers", "2"),
     ("num_threads", -1), ("num_threads", True), ("num_threads", 4097)],
)
def test_bad_options_are_refused_at_construction_and_assignment(files, option, bad):
    with pytest.raises(ValueError, match=option):
        XLMTokenizer(*files, **{option: bad})
    tokenizer = XLMTokenizer(*files)
    before = getattr(tokenizer, option)
    with pytest.raises(ValueError, match=option):
        setattr(tokenizer, option, bad)
    assert getattr(tokenizer, option) == before


def test_model_max_length_none_means_no_limit_as_in_transformers(files):
    ours, theirs = XLMTokenizer(*files, model_max_length=None), transformers.XLMTokenizer(*files, model_max_length=None)
    assert ours.model_max_length == theirs.model_max_length == tokenization_xlm.VERY_LARGE_INTEGER
    ours.model_max_length = 7
    ours.model_max_length = None
    assert ours.model_max_length == tokenization_xlm.VERY_LARGE_INTEGER
    assert len(ours("a " * 50, truncation=True)["input_ids"]) == 52  # no limit to truncate to


def test_bad_call_options_are_refused(ours_en):
    with pytest.raises(ValueError, match="padding_side"):
        ours_en(["a", "a b"], padding=True, padding_side="up")  # "up" used to pad on the left
    for bad in (0, -8, 2.0):
        with pytest.raises(ValueError, match="pad_to_multiple_of"):
            ours_en(["a", "a b"], padding=True, pad_to_multiple_of=bad)
    for bad in (True, 2.5, "8"):
        with pytest.raises(ValueError, match="max_length"):
            ours_en("a b", truncation=True, max_length=bad)
    for bad in ("tf", "jax", "torch"):
        with pytest.raises(ValueError, match="return_tensors"):
            ours_en.encode("a b", return_tensors=bad)
    for bad in (1, "yes"):
        with pytest.raises(ValueError, match="padding"):
            ours_en(["a"], padding=bad)
        with pytest.raises(ValueError, match="truncation"):
            ours_en(["a"], truncation=bad)


def test_lang_outside_lang2id_is_refused(files):
    tokenizer = XLMTokenizer(*files, lang2id={"en": 0, "fr": 1}, id2lang={"0": "en", "1": "fr"})
    assert tokenizer.id2lang == {0: "en", 1: "fr"}  # JSON's string keys read as ints
    assert tokenizer.tokenize("le chat", lang="fr") == XLMTokenizer(*files).tokenize("le chat", lang="fr")
    for call in (lambda: tokenizer.tokenize("x", lang="de"), lambda: tokenizer("x", lang="de"),
                 lambda: tokenizer.encode("x", lang="", bypass_tokenizer=True), lambda: tokenizer(["x"], lang="EN")):
        with pytest.raises(ValueError, match=r"lang .*\(en, fr\)"):
            call()
    assert XLMTokenizer(*files).tokenize("x", lang="de") == ["x</w>"]  # without lang2id every code is taken


@pytest.mark.parametrize(
    "kwargs,name",
    [(dict(lang2id=["en"]), "lang2id"), (dict(lang2id={"en": "0"}), "lang2id"), (dict(lang2id={0: 0}), "lang2id"),
     (dict(id2lang={"zero": "en"}), "id2lang"), (dict(id2lang={1.5: "en"}), "id2lang"),
     (dict(id2lang={0: 1}), "id2lang"), (dict(id2lang="en"), "id2lang")],
)
def test_bad_language_maps_are_refused_at_construction_and_assignment(files, kwargs, name):
    with pytest.raises(TypeError, match=name):
        XLMTokenizer(*files, **kwargs)
    tokenizer = XLMTokenizer(*files, lang2id={"en": 0}, id2lang={0: "en"})
    with pytest.raises(TypeError, match=name):
        setattr(tokenizer, name, kwargs[name])
    assert tokenizer.lang2id == {"en": 0} and tokenizer.id2lang == {0: "en"}


def test_bad_ids_and_tokens_are_refused_and_unknown_ids_decode_like_transformers(ours_en, hf_en):
    for convert in (ours_en.decode, ours_en.convert_ids_to_tokens):
        for bad in ([5, -1], -3):
            with pytest.raises(ValueError, match="ids"):
                convert(bad)
        for bad in ([5, 2.7], [True], [None], None, 2.0, "5"):  # transformers would truncate 2.7 to 2
            with pytest.raises(TypeError, match="ids"):
                convert(bad)
    ids = [0, 17, 10**6, 2**70]  # past the vocabulary: unk_token, as transformers gives
    assert ours_en.convert_ids_to_tokens(ids) == hf_en.convert_ids_to_tokens(ids)
    assert ours_en.decode(ids) == hf_en.decode(ids)
    assert ours_en.decode(np.array(ids[:3])) == ours_en.decode([np.int64(i) for i in ids[:3]]) == hf_en.decode(ids[:3])
    assert ours_en.convert_ids_to_tokens(np.int64(17)) == hf_en.convert_ids_to_tokens(17)
    for bad in ([5], ["a", None], 5):
        with pytest.raises(TypeError, match="tokens"):
            ours_en.convert_tokens_to_ids(bad)


def test_first_calls_from_many_threads_start_one_worker_pool(files, corpus, monkeypatch):
    started = []
    real_pool = tokenization_xlm._PreTokenizerPool

    class CountingPool(real_pool):
        def __init__(self, *args):
            started.append(args)
            time.sleep(0.2)  # widen the window in which other threads find no pool yet
            super().__init__(*args)

    monkeypatch.setattr(tokenization_xlm, "_PreTokenizerPool", CountingPool)
    # the pool serves the Python pre-tokenizer (the C++ Moses pipeline threads by itself)
    tokenizer = XLMTokenizer(*files, num_workers=2, bpe_backend="python")
    texts = [text for _, text in corpus[:40]]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def first_call(index):
        barrier.wait()
        results[index] = tokenizer(texts)["input_ids"]

    threads = [threading.Thread(target=first_call, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(started) == 1
    assert all(result == results[0] for result in results)


SURROGATE_TEXTS = ("\ud800", "ab\udfff cd", "\udc80\ud83d x\ud800y", "é\udfff\ud800 \ud83d\ude00")


@pytest.mark.parametrize("backend", BACKENDS)
def test_lone_surrogate_with_bypass_tokenizer_gives_the_python_twins_and_transformers_ids(files, hf_en, backend):
    tokenizer = XLMTokenizer(*files, bpe_backend=backend)
    reference = XLMTokenizer(*files, bpe_backend="python")
    for text in SURROGATE_TEXTS:
        tokens = tokenizer.tokenize(text, bypass_tokenizer=True)
        assert tokens == reference.tokenize(text, bypass_tokenizer=True) == hf_en._tokenize(text, bypass_tokenizer=True)
        expected = reference(text, bypass_tokenizer=True)["input_ids"]
        assert expected == hf_en.build_inputs_with_special_tokens(hf_en.convert_tokens_to_ids(tokens))
        assert tokenizer(text, bypass_tokenizer=True)["input_ids"] == expected
        assert tokenizer([text, text], bypass_tokenizer=True)["input_ids"] == [expected, expected]
        assert reference.unk_token_id in expected


def test_vocab_key_with_a_surrogate_loads_like_transformers_in_both_backends(files, tmp_path):
    # transformers and the pure-Python twin keep such a key; text holding the surrogate maps to it
    vocab = json.load(open(files[0], encoding="utf-8"))
    extra = {"\ud800</w>": len(vocab), "\udfff": len(vocab) + 1}
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(dict(vocab, **extra)), encoding="utf-8")  # JSON escapes: the file is valid UTF-8
    theirs = transformers.XLMTokenizer(str(path), files[1])
    text = "a\ud800 \udfffb \ud800"
    expected = theirs.build_inputs_with_special_tokens(
        theirs.convert_tokens_to_ids(theirs._tokenize(text, bypass_tokenizer=True)))
    assert set(extra.values()) <= set(expected)
    for backend in BACKENDS:
        ours = XLMTokenizer(str(path), files[1], bpe_backend=backend)
        assert ours.get_vocab() == theirs.get_vocab()
        assert ours(text, bypass_tokenizer=True)["input_ids"] == expected
        assert ours.decode(expected, skip_special_tokens=True) == theirs.decode(expected, skip_special_tokens=True)
        ours.save_pretrained(str(tmp_path / backend))
        again = XLMTokenizer.from_pretrained(str(tmp_path / backend), bpe_backend=backend)
        assert again.get_vocab() == ours.get_vocab() and again(text, bypass_tokenizer=True)["input_ids"] == expected
        assert transformers.XLMTokenizer.from_pretrained(str(tmp_path / backend)).get_vocab() == theirs.get_vocab()


def test_vocab_id_past_int32_is_refused_naming_file_and_key(files, tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"<unk>": 0, "a": 2**33 + 5}), encoding="utf-8")  # never truncated to 5
    with pytest.raises(ValueError, match=r"vocab\.json.*'a'"):
        XLMTokenizer(str(path), files[1])
    with pytest.raises(OSError, match="merges_file"):
        XLMTokenizer(files[0], str(tmp_path))  # a directory


def test_options_set_after_the_worker_pool_started_apply(files, corpus):
    texts = [text for _, text in corpus[:64]]
    tokenizer = XLMTokenizer(*files, num_workers=2)
    assert tokenizer(texts) == XLMTokenizer(*files)(texts)  # starts a pool of one worker process
    tokenizer.num_workers = 4  # more shares than that pool has workers: none may be lost
    assert tokenizer(texts) == XLMTokenizer(*files)(texts)
    tokenizer.do_lowercase_and_remove_accent = False  # read on every call, as in transformers
    theirs = transformers.XLMTokenizer(*files)
    theirs.do_lowercase_and_remove_accent = False
    assert tokenizer(texts)["input_ids"] == theirs(texts)["input_ids"]
    assert tokenizer(texts) == XLMTokenizer(*files, do_lowercase_and_remove_accent=False)(texts)


# ----------------------------------------------------------------------------- C++ core vs Python twin

def _random_words(count, seed=0):
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzéèàçşţ中文ไทย😀 \u0301"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(count)]


@pytest.mark.skipif(tokenization_xlm.CppBPEModel is None, reason="extension xlm_fast._C not built")
def test_cpp_core_equals_python_twin(learned, corpus):
    vocab, merges = learned
    merges = merges + merges[:50]  # repeated merges keep their last rank in both
    cpp = tokenization_xlm.CppBPEModel(vocab, merges, 3)
    python = PyBPEModel(vocab, merges, 3)
    pre = XLMPreTokenizer(do_lowercase_and_remove_accent=False)
    words = sorted({word for lang, text in corpus if lang != "ja" for word in pre(text, lang)})
    words += _random_words(2000) + ["a" * 5000, " ", "a b", "", "</w>"]
    for word in words:
        assert cpp.bpe(word) == python.bpe(word), word
    batch = [words[i : i + 17] for i in range(0, len(words), 17)]
    expected = python.encode_batch(batch)
    assert cpp.encode_batch(batch, 1) == expected
    assert cpp.encode_batch(batch, 2) == expected
    assert cpp.encode_batch(batch, 8) == expected
    assert [cpp.encode(words) for words in batch] == expected
    assert cpp.num_merges == python.num_merges


@pytest.mark.skipif(tokenization_xlm.CppBPEModel is None, reason="extension xlm_fast._C not built")
def test_cpp_core_errors_and_cache(learned):
    vocab, merges = learned
    cpp = tokenization_xlm.CppBPEModel(vocab, merges, 3, cache_capacity=64)
    words = _random_words(500, seed=1)
    first = cpp.encode_batch([words], 2)
    assert 0 < cpp.cache_size <= 64
    assert cpp.encode_batch([words], 2) == first  # served partly from the cache
    cpp.cache_capacity = 0
    assert cpp.cache_size == 0 and cpp.encode(words) == first[0] and cpp.cache_size == 0
    cpp.cache_capacity = 1 << 16
    cpp.clear_cache()
    assert cpp.cache_size == 0
    with pytest.raises(TypeError):
        cpp.encode_batch([["ok", 5]])
    with pytest.raises(TypeError):
        cpp.encode_batch("not a batch of lists")
    with pytest.raises(TypeError):
        tokenization_xlm.CppBPEModel(vocab, [("a", "b", "c")], 3)
    with pytest.raises(ValueError, match="empty"):
        tokenization_xlm.CppBPEModel(vocab, [("a", "")], 3)
    with pytest.raises(ValueError, match=r"vocab\['a'\]"):
        tokenization_xlm.CppBPEModel({"a": -1}, [], 3)
    for unk_id in (2**33 + 5, -1, 2**31):  # never truncated to 32 bits (2**33 + 5 used to become 5)
        with pytest.raises(ValueError, match="unk_id"):
            tokenization_xlm.CppBPEModel(vocab, merges, unk_id)
    for threads in (0, -3, 10**6):
        with pytest.raises(ValueError, match="num_threads"):
            cpp.encode_batch([words], threads)
    with pytest.raises(TypeError, match=r"batch\[1\]\[0\]"):
        cpp.encode_batch([["ok"], [None]])
    with pytest.raises(TypeError, match="word"):
        cpp.bpe(3)


# Calls that each core must refuse with the same error type and message; f(core class, vocab,
# merges, a model).
BAD_CORE_CALLS = [
    lambda core, vocab, merges, model: core(vocab, merges, 2**33 + 5),  # never truncated (used to become 5)
    lambda core, vocab, merges, model: core(vocab, merges, -1),
    lambda core, vocab, merges, model: core(vocab, merges, True),
    lambda core, vocab, merges, model: core(vocab, merges, 3.0),
    lambda core, vocab, merges, model: core(vocab, merges, 3, -1),
    lambda core, vocab, merges, model: core(vocab, merges, 3, 2**64),
    lambda core, vocab, merges, model: core(vocab, merges, 3, 1.5),
    lambda core, vocab, merges, model: core(list(vocab.items()), merges, 3),
    lambda core, vocab, merges, model: core({"a": 2**31}, merges, 3),
    lambda core, vocab, merges, model: core({"a": -1}, merges, 3),
    lambda core, vocab, merges, model: core({"a": 1.0}, merges, 3),
    lambda core, vocab, merges, model: core({"a": False}, merges, 3),
    lambda core, vocab, merges, model: core({5: 1}, merges, 3),
    lambda core, vocab, merges, model: core(vocab, "ab", 3),
    lambda core, vocab, merges, model: core(vocab, 7, 3),
    lambda core, vocab, merges, model: core(vocab, [("a", "b"), ("a",)], 3),
    lambda core, vocab, merges, model: core(vocab, [("a", "b", "c")], 3),
    lambda core, vocab, merges, model: core(vocab, [("a", 1)], 3),
    lambda core, vocab, merges, model: core(vocab, ["ab"], 3),
    lambda core, vocab, merges, model: core(vocab, [("a", "")], 3),
    lambda core, vocab, merges, model: model.encode_batch([["a"]], 0),
    lambda core, vocab, merges, model: model.encode_batch([["a"]], 4097),
    lambda core, vocab, merges, model: model.encode_batch([["a"]], 2**64),
    lambda core, vocab, merges, model: model.encode_batch([["a"]], 2.0),
    lambda core, vocab, merges, model: model.encode_batch("ab"),
    lambda core, vocab, merges, model: model.encode_batch(None),
    lambda core, vocab, merges, model: model.encode_batch([["a"], "ab"]),
    lambda core, vocab, merges, model: model.encode_batch([["a"], 5]),
    lambda core, vocab, merges, model: model.encode_batch([["a"], ["b", None]]),
    lambda core, vocab, merges, model: model.encode_batch([["a"], ["b", ["c"]]]),
    lambda core, vocab, merges, model: model.encode(["a", b"b"]),
    lambda core, vocab, merges, model: model.encode("ab"),
    lambda core, vocab, merges, model: model.bpe(None),
    lambda core, vocab, merges, model: model.bpe(["a"]),
    lambda core, vocab, merges, model: setattr(model, "cache_capacity", -1),
    lambda core, vocab, merges, model: setattr(model, "cache_capacity", "8"),
]
CORES = [PyBPEModel] + ([tokenization_xlm.CppBPEModel] if tokenization_xlm.CppBPEModel is not None else [])


def _outcome(call):
    try:
        call()
    except (TypeError, ValueError) as error:
        return type(error).__name__, str(error)
    return "accepted", ""


@pytest.mark.skipif(tokenization_xlm.CppBPEModel is None, reason="extension xlm_fast._C not built")
def test_cores_refuse_bad_arguments_alike(learned):
    vocab, merges = learned
    models = {core: core(vocab, merges, 3) for core in CORES}
    for number, call in enumerate(BAD_CORE_CALLS):
        outcomes = [_outcome(lambda: call(core, vocab, merges, models[core])) for core in CORES]
        assert outcomes[0][0] != "accepted" and outcomes[0] == outcomes[1], (number, outcomes)
    for core, model in models.items():  # the bounds themselves are accepted
        assert model.encode_batch([["ab"]], 4096) == model.encode_batch([["ab"]], 1)
        model.cache_capacity = 2**63 - 1
        assert model.cache_capacity == 2**63 - 1 and core({"a": 2**31 - 1}, [], 2**31 - 1).encode(["a"]) == [2**31 - 1]


@pytest.mark.parametrize("core", CORES, ids=lambda core: core.__module__)
def test_encode_batch_reads_the_batch_as_it_was_when_called(learned, core):
    # Reading a sequence may run Python code (here a generator) that empties the batch list,
    # freeing the other sequences: the core reads a snapshot (it used to read freed memory).
    vocab, merges = learned
    model = core(vocab, merges, 3)
    words = _random_words(90, seed=5)
    sequences = [words[:30], words[30:60], words[60:]]
    expected = [model.encode(sequence) for sequence in sequences]

    def second_sequence():
        batch.clear()
        garbage = [[f"{index:#>30}"] * 30 for index in range(200)]  # noqa: F841 - reuses the freed memory
        yield from sequences[1]

    batch = [list(sequences[0]), second_sequence(), list(sequences[2])]
    assert model.encode_batch(batch, 2) == expected and batch == []


@pytest.mark.skipif(tokenization_xlm.CppBPEModel is None, reason="extension xlm_fast._C not built")
def test_encode_batch_survives_another_thread_changing_its_lists(learned):
    # The words are copied into C++ memory before the GIL is released; another thread then
    # empties or refills the lists while the BPE runs, freeing the strings (whose memory new
    # strings reuse). Views into those strings crashed here (heap-use-after-free, 5 of 5 runs).
    vocab, merges = learned
    cpp = tokenization_xlm.CppBPEModel(vocab, merges, 3, cache_capacity=0)
    words = _random_words(400, seed=4)
    template = [words[i % 50 : i % 50 + 300] for i in range(400)]
    expected = cpp.encode_batch(template, 2)
    interval = sys.getswitchinterval()
    # No forced GIL hand-over: the other thread can run only once encode_batch releases the
    # GIL, i.e. after copying and while the BPE runs, so the result must equal a clean run.
    sys.setswitchinterval(60)
    try:
        for _ in range(5):
            # fresh str objects, owned by these lists alone: changing a list frees them
            batch = [[(word + "\0")[:-1] for word in sequence] for sequence in template]
            go = threading.Event()

            def change_lists(batch=batch, go=go):
                go.wait()
                for index, sequence in enumerate(batch):
                    if index % 2:
                        sequence.clear()
                    else:
                        sequence[:] = [f"{position:#>40}" for position in range(len(sequence))]

            mutator = threading.Thread(target=change_lists)
            mutator.start()
            go.set()
            got = cpp.encode_batch(batch, 2)
            mutator.join()
            assert got == expected
            assert all(sequence == [] or sequence[0].startswith("#") for sequence in batch)  # they did change
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.skipif(tokenization_xlm.CppBPEModel is None, reason="extension xlm_fast._C not built")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="ASan needs more address space")
def test_encode_batch_finishes_when_the_os_refuses_threads():
    # Address space for a few thread stacks only: std::thread throws for the next one, which
    # used to end the process in std::terminate (abort) while the started threads ran.
    script = """
import random, resource, sys
from xlm_fast._C import BPEModel
rng = random.Random(0)
words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 9))) for _ in range(4096 * 16)]
batch = [words[i::4096] for i in range(4096)]
model = BPEModel({"a": 4, "b": 5, "ab": 6}, [("a", "b")], 3, cache_capacity=0)
expected = model.encode_batch(batch, 1)
size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20),) * 2)  # room for ~30 of the 256 threads
sys.exit(0 if model.encode_batch(batch, 4096) == expected else 3)
"""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(tokenization_xlm.__file__)))
    result = subprocess.run([sys.executable, "-c", script], cwd=package_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(tokenization_xlm.CppBPEModel is None, reason="extension xlm_fast._C not built")
@pytest.mark.parametrize("capacity", [1, 37, 5000])
def test_cpp_cache_under_threads_and_eviction_keeps_ids(learned, capacity):
    vocab, merges = learned
    cpp = tokenization_xlm.CppBPEModel(vocab, merges, 3, cache_capacity=capacity)
    python = PyBPEModel(vocab, merges, 3, cache_capacity=0)
    words = _random_words(600, seed=3)
    # repeats across sequences make threads hit, miss and evict the same entries
    batch = [words[i % 7 :: 7] + words[: 40] for i in range(64)]
    expected = python.encode_batch(batch)
    for threads in (1, 4, 8):
        assert cpp.encode_batch(batch, threads) == expected
        assert cpp.cache_size <= max(capacity, 0)


def test_python_twin_cache_is_bounded(learned):
    vocab, merges = learned
    python = PyBPEModel(vocab, merges, 3, cache_capacity=10)
    words = _random_words(100, seed=2)
    assert python.encode(words) == PyBPEModel(vocab, merges, 3, cache_capacity=0).encode(words)
    assert python.cache_size <= 10


# ----------------------------------------------------------------------------- demo vocabulary

def test_demo_vocabulary_is_reproducible(learned, tmp_path):
    paths = str(tmp_path / "demo_vocab.json"), str(tmp_path / "demo_merges.txt")
    write_vocab_files(*learned, *paths)
    for path in paths:
        shipped = os.path.join(tokenization_xlm.DEMO_DIR, os.path.basename(path))
        with open(path, encoding="utf-8") as fresh, open(shipped, encoding="utf-8") as kept:
            assert fresh.read() == kept.read(), f"{shipped} is stale: run python tests/test_tokenization_xlm.py"


def test_demo_tokenizer(corpus):
    demo = XLMTokenizer.from_demo()
    assert demo.lang2id == {lang: index for index, lang in enumerate(tokenization_xlm.DEMO_LANGUAGES)}
    assert set(demo.lang2id) == {lang for lang, _ in corpus}
    assert demo.id2lang == {index: lang for lang, index in demo.lang2id.items()}
    ids = demo.encode("Hello world!")
    assert ids[0] == 0 and ids[-1] == 1 and demo.unk_token_id not in ids[1:-1]


if __name__ == "__main__":
    vocab, merges = learn_vocab(read_corpus())
    os.makedirs(tokenization_xlm.DEMO_DIR, exist_ok=True)
    write_vocab_files(vocab, merges, os.path.join(tokenization_xlm.DEMO_DIR, "demo_vocab.json"),
                      os.path.join(tokenization_xlm.DEMO_DIR, "demo_merges.txt"))
    print(f"wrote {len(vocab)} tokens, {len(merges)} merges to {tokenization_xlm.DEMO_DIR}", file=sys.stderr)


# ----------------------------------------------------------------------------- transformers workflows (issue 10)

WORKFLOW_TEXTS = ["Hello world, how are you?", "short", "a somewhat longer sentence, here for the padding", "x y"]


def _same_batch(a, b):
    """Equal keys, and equal values whatever their container (lists, tensors, arrays), dtype kind included."""
    assert a.keys() == b.keys()
    for key in a:
        assert type(a[key]) is type(b[key]), key
        if isinstance(a[key], list):
            assert a[key] == b[key], key
            continue
        if a[key].dtype == object:  # numpy's rows of unequal length
            assert b[key].dtype == object and [r.tolist() for r in a[key]] == [r.tolist() for r in b[key]], key
            continue
        left, right = np.asarray(a[key]), np.asarray(b[key])
        assert left.dtype == right.dtype and np.array_equal(left, right), key


def _features(tokenizer, **kwargs):
    return [dict(tokenizer(text, **kwargs)) for text in WORKFLOW_TEXTS]


def _pad_both(ours, theirs, *args, **kwargs):
    """ours.pad == theirs.pad, or both raise (ours a ValueError)."""
    try:
        expected = theirs.pad(*args, **kwargs)
    except ValueError:
        with pytest.raises(ValueError):
            ours.pad(*args, **kwargs)
        return False
    _same_batch(ours.pad(*args, **kwargs), expected)
    return True


@pytest.mark.parametrize("return_tensors", [None, "pt", "np"])
@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(padding="longest", pad_to_multiple_of=8), dict(padding="max_length", max_length=20),
     dict(padding=False), dict(padding="do_not_pad"), dict(padding=True, padding_side="left"),
     dict(return_attention_mask=False), dict(padding="max_length", max_length=3)],
)
def test_pad_matches_transformers(ours_en, hf_en, kwargs, return_tensors):
    feats = _features(ours_en, return_special_tokens_mask=True, return_token_type_ids=True)
    assert feats == _features(hf_en, return_special_tokens_mask=True, return_token_type_ids=True)
    padded = _pad_both(ours_en, hf_en, feats, return_tensors=return_tensors, **kwargs)
    assert padded or return_tensors == "pt"  # only torch refuses rows of unequal length
    columns = {key: [feature[key] for feature in feats] for key in feats[0]}  # a dict of lists
    assert _pad_both(ours_en, hf_en, BatchEncoding(columns), return_tensors=return_tensors, **kwargs) == padded
    single = {key: list(value) for key, value in feats[0].items()}  # one encoding, no batch axis
    assert _pad_both(ours_en, hf_en, single, return_tensors=return_tensors, **kwargs)


@pytest.mark.parametrize("kind", ["pt", "np"])
def test_pad_of_tensors_and_unequal_labels_matches_transformers(ours_en, hf_en, kind):
    make = torch.tensor if kind == "pt" else np.array
    feats = [{"input_ids": make(f["input_ids"]), "labels": make(f["input_ids"]), "label": 1.5}
             for f in _features(ours_en)]
    # tensors in -> tensors of that kind out; unequal labels are left alone (as transformers does):
    # a torch tensor cannot hold them, a numpy object array can
    if kind == "pt":
        with pytest.raises(ValueError):
            hf_en.pad(feats)
        with pytest.raises(ValueError, match="labels"):
            ours_en.pad(feats)
    else:
        ours, theirs = ours_en.pad(feats), hf_en.pad(feats)
        assert ours["labels"].dtype == theirs["labels"].dtype == object
        assert [row.tolist() for row in ours["labels"]] == [row.tolist() for row in theirs["labels"]]
    without = [{k: v for k, v in f.items() if k != "labels"} for f in feats]
    _same_batch(ours_en.pad(without), hf_en.pad(without))
    lists = [{k: v.tolist() if hasattr(v, "tolist") else v for k, v in f.items()} for f in feats]
    assert ours_en.pad(lists, return_tensors=None) == dict(hf_en.pad(lists))  # labels stay ragged lists


def test_pad_refuses_bad_arguments(ours_en):
    feats = _features(ours_en)
    with pytest.raises(ValueError, match="padding_side"):
        ours_en.pad(feats, padding_side="middle")
    with pytest.raises(ValueError, match="max_length"):
        ours_en.pad(feats, padding="max_length", max_length=-2)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        ours_en.pad(feats, pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="padding"):
        ours_en.pad(feats, padding="sideways")
    with pytest.raises(ValueError, match="return_tensors"):
        ours_en.pad(feats, return_tensors="tf")
    with pytest.raises(ValueError, match="input_ids"):
        ours_en.pad([{"labels": [1]}])
    with pytest.raises(TypeError, match="encoded_inputs"):
        ours_en.pad("text")
    with pytest.raises(ValueError, match=r"encoded_inputs\[1\]"):
        ours_en.pad([{"input_ids": [1], "labels": [1]}, {"input_ids": [2]}])


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_data_collators_give_transformers_batches(ours_en, hf_en, return_tensors):
    feats = _features(ours_en, return_special_tokens_mask=True)
    collator = transformers.DataCollatorWithPadding
    with_labels = [dict(f, label=i) for i, f in enumerate(feats)]
    _same_batch(collator(ours_en, return_tensors=return_tensors, pad_to_multiple_of=8)(with_labels),
                collator(hf_en, return_tensors=return_tensors, pad_to_multiple_of=8)(with_labels))
    collator = transformers.DataCollatorForTokenClassification
    tagged = [dict(f, labels=list(range(len(f["input_ids"])))) for f in feats]
    for side in ("right", "left"):
        ours_en.padding_side = hf_en.padding_side = side
        try:
            _same_batch(collator(ours_en, return_tensors=return_tensors)(tagged),
                        collator(hf_en, return_tensors=return_tensors)(tagged))
        finally:
            ours_en.padding_side = hf_en.padding_side = "right"
    collator = transformers.DataCollatorForLanguageModeling
    for mlm in (True, False):
        for examples in (feats, [f["input_ids"] for f in feats]):  # dicts, and bare id lists
            ours = collator(ours_en, mlm=mlm, return_tensors=return_tensors, seed=3)(examples)
            theirs = collator(hf_en, mlm=mlm, return_tensors=return_tensors, seed=3)(examples)
            _same_batch(ours, theirs)
            assert (np.asarray(ours["labels"]) == -100).any()


def test_split_into_words_matches_transformers_and_maps_words(ours_en, hf_en):
    words = ["Hello", "world,", "don't", "", "New-York", "x"]
    for kwargs in (dict(), dict(add_special_tokens=False), dict(truncation=True, max_length=7)):
        assert ours_en(words, is_split_into_words=True, **kwargs) == dict(hf_en(words, is_split_into_words=True,
                                                                                **kwargs))
    encoding = ours_en(words, is_split_into_words=True)
    word_ids = encoding.word_ids()
    assert word_ids[0] is None and word_ids[-1] is None and 3 not in word_ids  # "" has no token
    assert sorted(set(word_ids[1:-1])) == [0, 1, 2, 4, 5] and word_ids[1:-1] == sorted(word_ids[1:-1])
    for index, word in enumerate(words):  # each word's tokens are what that word alone gives
        span = encoding.word_to_tokens(index)
        alone = ours_en.tokenize(word)
        assert (span is None) == (not alone)
        if span is not None:
            assert encoding.tokens()[span.start : span.end] == ours_en.convert_ids_to_tokens(
                ours_en.convert_tokens_to_ids(alone))
            assert {encoding.token_to_word(position) for position in range(*span)} == {index}
    assert encoding.tokens() == ours_en.convert_ids_to_tokens(encoding["input_ids"])
    assert encoding.sequence_ids() == [None] + [0] * (len(word_ids) - 2) + [None]
    assert encoding.n_sequences == 1 and not encoding.is_fast and encoding.encodings is None
    with pytest.raises(ValueError, match="Python based"):
        hf_en(words, is_split_into_words=True).word_ids()  # transformers' slow tokenizer gives no word ids

    batch, pairs = [["a", "b"], ["c", "Hello", "world"]], [["d"], ["e", "f"]]
    kwargs = dict(is_split_into_words=True, padding=True, return_token_type_ids=True)
    assert ours_en(batch, pairs, **kwargs) == dict(hf_en(batch, pairs, **kwargs))
    as_tuples = [tuple(pair) for pair in zip(batch, pairs)]
    assert ours_en(as_tuples, **kwargs) == dict(hf_en(as_tuples, **kwargs))
    encoding = ours_en(batch, pairs, **kwargs)
    assert encoding.n_sequences == 2 and encoding.sequence_ids(1).count(1) == len(ours_en.tokenize("e f"))
    assert encoding.word_to_tokens(1, 1, sequence_index=1) == TokenSpan(*_span(encoding.sequence_ids(1), 1, -1))
    assert encoding.word_ids(0)[-1] is None  # padding
    with pytest.raises(TypeError, match="is_split_into_words"):
        ours_en([["a", "b", "c"]])  # (a list of two would be a pair, as in transformers)
    with pytest.raises(TypeError, match="words"):
        ours_en([["a", 3]], is_split_into_words=True)
    with pytest.raises(TypeError, match="text"):
        ours_en("a b", is_split_into_words=True)


def _span(sequence_ids, sequence, which):
    """(start, end) of the last (which=-1) token of `sequence`."""
    positions = [i for i, s in enumerate(sequence_ids) if s == sequence]
    return positions[which], positions[which] + 1


def test_word_ids_of_plain_text_follow_the_pre_tokenizer(ours_en):
    text = "Hello world, don't <special3> go"
    encoding = ours_en([text, "x"], ["first part", "second part"], padding=True)
    words = ours_en.pre_tokenizer("Hello world, don't ") + ["<special3>"] + ours_en.pre_tokenizer(" go")
    first = [w for w, s in zip(encoding.word_ids(0), encoding.sequence_ids(0)) if s == 0]
    assert max(first) == len(words) - 1 and first == sorted(first)
    for index, word in enumerate(words):
        span = encoding.word_to_tokens(0, index)
        expected = ours_en.tokenize(word) if word != "<special3>" else [word]
        assert encoding.tokens(0)[span.start : span.end] == ours_en.convert_ids_to_tokens(
            ours_en.convert_tokens_to_ids(expected))
    second = [w for w, s in zip(encoding.word_ids(1), encoding.sequence_ids(1)) if s == 1]
    assert second[0] == 0 and second[-1] == 1  # words of the second sequence count from 0
    assert encoding.word_ids(1)[-1] is None and encoding.token_to_sequence(1, 0) is None
    # the maps survive tensors and pickling
    tensors = ours_en([text, "x"], padding=True, return_tensors="pt")
    assert tensors.word_ids(0) == ours_en([text, "x"], padding=True).word_ids(0)
    clone = pickle.loads(pickle.dumps(tensors))
    assert clone.word_ids(1) == tensors.word_ids(1) and clone.tokens(0) == tensors.tokens(0)
    with pytest.raises(IndexError, match="batch_index"):
        tensors.word_ids(2)
    with pytest.raises(ValueError, match="word_ids"):
        ours_en.pad(_features(ours_en)).word_ids()


def test_token_classification_recipe_runs_end_to_end(files):
    """Align word labels to tokens (-100 for special tokens and later sub-tokens), collate, run
    transformers' XLMForTokenClassification on the batch; the labels line up with word_ids."""
    tokenizer = XLMTokenizer(*files)
    sentences = [(["Hello", "world", "Berlin"], [0, 0, 1]), (["antidisestablishmentarianism", "x"], [2, 0])]
    features = []
    for words, tags in sentences:
        encoding = tokenizer(words, is_split_into_words=True, truncation=True)
        labels, previous = [], None
        for word in encoding.word_ids():
            labels.append(-100 if word is None or word == previous else tags[word])
            previous = word
        features.append(dict(encoding, labels=labels))
    batch = transformers.DataCollatorForTokenClassification(tokenizer)(features)
    assert batch["labels"].shape == batch["input_ids"].shape
    for row, (_, tags) in enumerate(sentences):
        kept = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert kept == tags  # one label per word, at its first token
    torch.manual_seed(0)
    model = transformers.XLMForTokenClassification(transformers.XLMConfig(
        vocab_size=len(tokenizer), emb_dim=16, n_layers=1, n_heads=2, num_labels=3)).eval()
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_added_tokens_match_transformers_and_round_trip(files, tmp_path):
    ours, theirs = XLMTokenizer(*files), transformers.XLMTokenizer(*files)
    in_vocabulary = ours.convert_ids_to_tokens(100)
    for tokenizer in (ours, theirs):
        counts = (tokenizer.add_tokens(["newtok", "Hello", "<x>", "newtok"]), tokenizer.add_tokens("<y>", True),
                  tokenizer.add_special_tokens({"additional_special_tokens": ["<ent>"], "pad_token": "<newpad>"}),
                  tokenizer.add_tokens([in_vocabulary]))  # already in the vocabulary: not counted
        tokenizer.counts = counts
    assert ours.counts == theirs.counts == (3, 1, 2, 0)
    assert len(ours) == len(theirs) == ours.vocab_size + 6 and ours.get_vocab() == theirs.get_vocab()
    assert ours.all_special_tokens == theirs.all_special_tokens and ours.pad_token_id == theirs.pad_token_id
    text = "Hello newtok world<ent>x newtokabc <x><y> <newpad> hello <special3>"
    assert ours.tokenize(text) == theirs.tokenize(text)
    ids = ours(text)["input_ids"]
    assert ids == theirs(text)["input_ids"] and ours.convert_tokens_to_ids("newtok") in ids
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.tokenize("a" + in_vocabulary + "b")[1] == in_vocabulary  # now never split
    # "<y>" was special until add_special_tokens replaced the additional special tokens (transformers 5)
    assert "<ent>" not in ours.decode(ids, skip_special_tokens=True) and "<y>" in ours.decode(ids, True)

    ours.save_pretrained(str(tmp_path / "ours"))
    theirs.save_pretrained(str(tmp_path / "theirs"))
    for name in ("added_tokens.json", "vocab.json", "merges.txt"):
        assert (tmp_path / "ours" / name).read_text() == (tmp_path / "theirs" / name).read_text(), name
    saved = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    expected = json.loads((tmp_path / "theirs" / "tokenizer_config.json").read_text())
    assert saved["added_tokens_decoder"] == expected["added_tokens_decoder"]
    for reloaded in (transformers.XLMTokenizer.from_pretrained(str(tmp_path / "ours")),
                     XLMTokenizer.from_pretrained(str(tmp_path / "theirs")),
                     XLMTokenizer.from_pretrained(str(tmp_path / "ours"))):
        assert len(reloaded) == len(ours) and reloaded.get_vocab() == ours.get_vocab()
        assert reloaded(text)["input_ids"] == ids and reloaded.all_special_tokens == ours.all_special_tokens
        assert reloaded.decode(ids, skip_special_tokens=True) == ours.decode(ids, skip_special_tokens=True)


def test_added_tokens_from_an_older_added_tokens_json_and_bad_ones(files, tmp_path):
    XLMTokenizer(*files).save_pretrained(str(tmp_path))
    size = len(XLMTokenizer(*files))
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<a1>": size, "<a2>": size + 1}))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = XLMTokenizer.from_pretrained(str(tmp_path)), transformers.XLMTokenizer.from_pretrained(str(tmp_path))
    assert ours.get_vocab() == theirs.get_vocab() and ours("x<a2>y")["input_ids"] == theirs("x<a2>y")["input_ids"]
    tokenizer = XLMTokenizer(*files)
    for bad, error in ((3, TypeError), ([None], TypeError)):
        with pytest.raises(error, match="new_tokens"):
            tokenizer.add_tokens(bad)
    assert tokenizer.add_tokens([]) == 0 and tokenizer.add_tokens([""]) == 0
    with pytest.raises(ValueError, match="special_tokens_dict"):
        tokenizer.add_special_tokens({"not_a_token": "<z>"})
    with pytest.raises(TypeError, match="special_tokens_dict"):
        tokenizer.add_special_tokens(["<z>"])
    with pytest.raises(ValueError, match="lstrip"):
        tokenizer.add_tokens([transformers.AddedToken("<z>", lstrip=True)])
    assert tokenizer.add_tokens([transformers.AddedToken("<z>", special=True)]) == 1
    assert "<z>" in tokenizer.all_special_tokens
    with pytest.raises(TypeError, match="added_tokens_decoder"):
        XLMTokenizer(*files, added_tokens_decoder={"x": "<q>"})


def test_model_inputs_names_max_length_and_sides_match_transformers(files, tmp_path, ours_en, hf_en):
    assert ours_en.model_input_names == hf_en.model_input_names
    for name in ("padding_side", "truncation_side", "model_max_length", "is_fast", "clean_up_tokenization_spaces",
                 "chat_template", "eos_token", "eos_token_id", "pad_token_type_id"):
        assert getattr(ours_en, name) == getattr(hf_en, name), name
    theirs = transformers.XLMTokenizer(*files, model_max_length=12, truncation_side="left", padding_side="left")
    theirs.save_pretrained(str(tmp_path))
    ours = XLMTokenizer.from_pretrained(str(tmp_path))
    assert (ours.model_max_length, ours.truncation_side, ours.padding_side) == (12, "left", "left")
    long_text = " ".join(WORKFLOW_TEXTS * 3)
    for kwargs in (dict(truncation=True), dict(truncation=True, padding="max_length"),
                   dict(truncation="only_second"), dict(truncation="only_first")):
        assert ours(long_text, **kwargs) == dict(theirs(long_text, **kwargs))
        assert ours(WORKFLOW_TEXTS, WORKFLOW_TEXTS[::-1], **kwargs) == dict(
            theirs(WORKFLOW_TEXTS, WORKFLOW_TEXTS[::-1], **kwargs))
        for side in ("left", "right"):  # attribute set later, and per-call padding_side
            ours.truncation_side = theirs.truncation_side = side
            assert ours(WORKFLOW_TEXTS, truncation=True, padding=True, padding_side=side) == dict(
                theirs(WORKFLOW_TEXTS, truncation=True, padding=True, padding_side=side))
    assert len(ours(long_text, truncation=True)["input_ids"]) == 12


def test_overflowing_tokens_follow_transformers_fast_tokenizers(ours_en, files):
    """Row per window as transformers' fast tokenizers give it, checked against a fast tokenizer
    over the same vocabulary (WordLevel on the BPE tokens, XLM's special-token template)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    with open(files[0], encoding="utf-8") as handle:
        core = Tokenizer(models.WordLevel(json.load(handle), unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=[("<s>", 0), ("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", sep_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>",
                                                model_input_names=["input_ids", "attention_mask"])
    tokenizer = XLMTokenizer(*files)

    def spaced(texts):
        return [" ".join(tokenizer.tokenize(text)) for text in texts]

    questions = ["what is it?", "who?"]
    contexts = ["Hello world, how are you doing today my friend, the weather is nice", "short one two three four"]
    cases = 0
    for side, truncation, max_length, stride, pair in itertools.product(
            ["right", "left"], [True, "only_first", "only_second"], [12, 20, 60], [0, 1, 3], [False, True]):
        if (truncation == "only_second") != pair and not (truncation == "only_first" and pair):
            continue
        tokenizer.truncation_side = fast.truncation_side = side
        kwargs = dict(truncation=truncation, max_length=max_length, stride=stride, return_overflowing_tokens=True,
                      padding="max_length", return_token_type_ids=True, return_special_tokens_mask=True)
        ours_args = (questions, contexts) if truncation == "only_second" else (contexts, questions) if pair \
            else (contexts,)
        try:
            expected = fast(*map(spaced, ours_args), **kwargs)
        except BaseException:  # noqa: B036 - tokenizers panics (a BaseException) on a stride too large
            with pytest.raises(ValueError, match="stride"):
                tokenizer(*ours_args, **kwargs)
            continue
        assert tokenizer(*ours_args, **kwargs) == dict(expected), kwargs
        cases += 1
    assert cases >= 40
    tokenizer.truncation_side = fast.truncation_side = "right"
    single = tokenizer(contexts[0], truncation=True, max_length=9, stride=2, return_overflowing_tokens=True,
                       return_tensors="pt", padding=True)
    expected = fast(spaced(contexts[:1])[0], truncation=True, max_length=9, stride=2, return_overflowing_tokens=True,
                    return_tensors="pt", padding=True)
    assert {k: v.tolist() for k, v in single.items()} == {k: v.tolist() for k, v in expected.items()}


@pytest.mark.parametrize("side", ["right", "left"])
def test_squad_sliding_window_overlaps_by_stride_and_covers_the_context(files, side):
    tokenizer = XLMTokenizer(*files, truncation_side=side)
    question = "Where does the friend live?"
    context = " ".join(["my friend lives in a small town near the sea, and the weather there is nice"] * 3)
    stride, max_length = 4, 24
    encoding = tokenizer([question, "why?"], [context, "short"], truncation="only_second", max_length=max_length,
                         stride=stride, return_overflowing_tokens=True, padding="max_length")
    mapping = encoding["overflow_to_sample_mapping"]
    assert mapping[-1] == 1 and mapping.count(1) == 1 and set(mapping[:-1]) == {0} and len(mapping) > 2
    assert all(len(row) == max_length for row in encoding["input_ids"])
    windows = []
    for row in range(len(mapping) - 1):
        ids, sequence_ids = encoding["input_ids"][row], encoding.sequence_ids(row)
        windows.append([i for i, s in zip(ids, sequence_ids) if s == 1])
        assert [i for i, s in zip(ids, sequence_ids) if s == 0] == tokenizer.encode(question, add_special_tokens=False)
        word_ids = [w for w, s in zip(encoding.word_ids(row), sequence_ids) if s == 1]
        assert word_ids == sorted(word_ids)  # context words, in order, in every window
    if side == "left":
        windows = windows[::-1]
    for previous, current in zip(windows, windows[1:]):
        assert previous[-stride:] == current[:stride]
    whole = windows[0] + [i for window in windows[1:] for i in window[stride:]]
    assert whole == tokenizer.encode(context, add_special_tokens=False)


def test_new_call_arguments_are_validated(ours_en):
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="stride"):
            ours_en("a b c", stride=bad)
    with pytest.raises(ValueError, match="stride"):
        ours_en("a b c d e f g h", truncation=True, max_length=5, stride=3, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="longest_first"):
        ours_en("a b c d", "e f g h", truncation=True, max_length=5, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="text_pair"):
        ours_en("a b c d", truncation="only_second", max_length=3, return_overflowing_tokens=True)
    assert ours_en("a b", return_offsets_mapping=False) == ours_en("a b")  # what pipelines pass
    with pytest.raises(ValueError, match="padding_side"):
        ours_en("a b", padding_side="top")
    with pytest.raises(ValueError, match="max_length"):
        ours_en("a b", max_length=-3, truncation=True, return_overflowing_tokens=True)


def _fake_hub_cache(root, files, repo="org/tiny-xlm", commit="0123abcd"):
    snapshot = root / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    XLMTokenizer(*files, model_max_length=33).save_pretrained(str(snapshot))
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text(commit + "\n")
    return snapshot


def test_from_pretrained_reads_a_hub_id_from_the_local_cache(files, tmp_path, monkeypatch):
    _fake_hub_cache(tmp_path / "hub", files)
    expected = XLMTokenizer(*files)(WORKFLOW_TEXTS)
    loaded = XLMTokenizer.from_pretrained("org/tiny-xlm", cache_dir=str(tmp_path / "hub"))
    assert loaded(WORKFLOW_TEXTS) == expected and loaded.model_max_length == 33
    assert loaded.name_or_path == "org/tiny-xlm"
    assert XLMTokenizer.from_pretrained("org/tiny-xlm", cache_dir=str(tmp_path / "hub"),
                                        revision="0123abcd").model_max_length == 33
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert XLMTokenizer.from_pretrained("org/tiny-xlm")(WORKFLOW_TEXTS) == expected
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert XLMTokenizer.from_pretrained("org/tiny-xlm", local_files_only=True)(WORKFLOW_TEXTS) == expected
    with pytest.raises(OSError, match="pretrained_model_name_or_path='org/missing'"):
        XLMTokenizer.from_pretrained("org/missing")
    with pytest.raises(OSError, match="pretrained_model_name_or_path"):
        XLMTokenizer.from_pretrained("org/tiny-xlm", revision="no-such-branch")
    with pytest.raises(TypeError, match="pretrained_model_name_or_path"):
        XLMTokenizer.from_pretrained(3)


@pytest.mark.parametrize(
    "task,model_class,config,inputs,kwargs",
    [
        ("fill-mask", "XLMWithLMHeadModel", {}, "hello <special1> world", {}),
        ("text-classification", "XLMForSequenceClassification", {"num_labels": 2}, ["hello world", "bye"], {}),
        ("token-classification", "XLMForTokenClassification", {"num_labels": 3}, "hello world, how are you", {}),
        ("text-generation", "XLMWithLMHeadModel", {"causal": True}, "hello world",
         {"max_new_tokens": 3, "do_sample": False}),
    ],
)
def test_pipelines_accept_the_tokenizer(ours_en, hf_en, task, model_class, config, inputs, kwargs):
    """transformers' own XLM model in a pipeline, with xlm_fast's tokenizer or transformers': same outputs."""
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(transformers.XLMConfig(
        vocab_size=len(ours_en), emb_dim=16, n_layers=1, n_heads=2, max_position_embeddings=64, **config)).eval()
    results = [transformers.pipeline(task, model=model, tokenizer=tokenizer, device="cpu")(inputs, **kwargs)
               for tokenizer in (ours_en, hf_en)]
    assert results[0] == results[1] and results[0]


# ----------------------------------------------------------------------------- C++ batch path

needs_cpp = pytest.mark.skipif(tokenization_xlm.CppBPEModel is None, reason="extension not built")
FAST_TEXTS = ["Hello world, this is a test.", "", "  \t ", "Bonjour <special1> le monde !", "über straße\u2003ok",
              "a" * 40, "<s>x</s>y <pad>", "les enfants jouent dans le jardin pendant que"]
FAST_PAIRS = ["la question ?", "x", "", "what is it <special3>", "d\u00e9j\u00e0 vu", "b c d e f g h", "   ", "z"]


@pytest.fixture(scope="module")
def fast_and_reference(files):
    """(C++ batch path, Python path with the same C++ BPE): the Python path is the reference."""
    fast = XLMTokenizer(*files, bpe_backend="cpp", num_threads=2)
    reference = XLMTokenizer(*files, bpe_backend="cpp")
    reference._fast_path_covers = lambda *args: False
    return fast, reference


def _same_value(a, b, key):
    assert type(a) is type(b), key
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), key
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, key
        if a.dtype == object:
            assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b)), key
        else:
            assert np.array_equal(a, b), key
    else:
        assert a == b, key


def _call_outcome(tokenizer, *args, **kwargs):
    try:
        return tokenizer(*args, **kwargs)
    except (ValueError, TypeError, NotImplementedError) as error:
        return error


def _assert_same_encoding(fast, reference):
    if isinstance(reference, Exception):
        assert type(fast) is type(reference) and str(fast) == str(reference)
        return
    assert not isinstance(fast, Exception), fast
    assert list(fast.keys()) == list(reference.keys())
    for key in reference:
        _same_value(fast[key], reference[key], key)
    for row in range(len(reference._resolved_layouts())):
        assert fast.word_ids(row) == reference.word_ids(row)
        assert fast.sequence_ids(row) == reference.sequence_ids(row)
        assert fast.tokens(row) == reference.tokens(row)
        for word in range(3):
            assert fast.word_to_tokens(row, word) == reference.word_to_tokens(row, word)


def _grid(seed, count):
    rng = random.Random(seed)
    axes = {
        "add_special_tokens": [True, False], "padding": [False, True, "max_length", "longest"],
        "truncation": [None, True, "only_first", "only_second", "longest_first", False],
        "max_length": [None, 0, 3, 5, 9, 16], "stride": [0, 1, 2], "return_overflowing_tokens": [False, True],
        "pad_to_multiple_of": [None, 4], "padding_side": [None, "left", "right"], "return_tensors": [None, "np", "pt"],
        "return_token_type_ids": [None, True], "return_special_tokens_mask": [False, True],
        "return_attention_mask": [None, False], "return_length": [False, True], "bypass_tokenizer": [True, False],
    }
    for _ in range(count):
        yield {name: rng.choice(values) for name, values in axes.items()}


@needs_cpp
@pytest.mark.parametrize("shape", ["single", "batch", "pair", "pairs", "tuples"])
def test_fast_path_equals_python_path_over_option_grid(fast_and_reference, shape):
    fast, reference = fast_and_reference
    inputs = {"single": (FAST_TEXTS[0],), "batch": (FAST_TEXTS,), "pair": (FAST_TEXTS[3], FAST_PAIRS[3]),
              "pairs": (FAST_TEXTS, FAST_PAIRS), "tuples": (list(zip(FAST_TEXTS, FAST_PAIRS)),)}[shape]
    for side in ("right", "left"):
        fast.truncation_side = reference.truncation_side = side
        for options in _grid(hash(shape) % 1000 + len(side), 150):
            _assert_same_encoding(_call_outcome(fast, *inputs, **options), _call_outcome(reference, *inputs, **options))
    fast.truncation_side = reference.truncation_side = "right"


@needs_cpp
def test_fast_path_corpus_and_added_tokens(fast_and_reference, corpus):
    fast, reference = fast_and_reference
    texts = [text for lang, text in corpus[::7] if lang != "ja"]
    for bypass in (False, True):
        _assert_same_encoding(fast(texts, padding=True, bypass_tokenizer=bypass),
                              reference(texts, padding=True, bypass_tokenizer=bypass))
    fast.add_tokens(["jardin", "<new tok>"])
    reference.add_tokens(["jardin", "<new tok>"])
    text = "le jardin<new tok>jardins <new tok>"
    for bypass in (False, True):
        _assert_same_encoding(fast([text, text * 3], bypass_tokenizer=bypass, return_special_tokens_mask=True),
                              reference([text, text * 3], bypass_tokenizer=bypass, return_special_tokens_mask=True))


@needs_cpp
def test_fast_path_tensors_share_the_buffer(fast_and_reference):
    fast, _ = fast_and_reference
    encoding = fast(FAST_TEXTS, padding=True, return_tensors="pt")
    assert encoding["input_ids"].dtype == torch.int64 and encoding["input_ids"].is_contiguous()
    array = encoding["input_ids"].numpy()
    assert array.base is not None  # a view of the C++ buffer, not a copy made from lists


@needs_cpp
def test_offsets_bypass_tokenizer(fast_and_reference):
    fast, _ = fast_and_reference
    texts = FAST_TEXTS + ["  deux   espaces\u00a0et\u3000fin  ", "x\ud800y z"]
    encoding = fast(texts, bypass_tokenizer=True, return_offsets_mapping=True, padding=True)
    for row, text in enumerate(texts):
        offsets = encoding["offset_mapping"][row]
        sequence_ids = encoding.sequence_ids(row)
        tokens = [token for piece in fast.tokenize(text, bypass_tokenizer=True) for token in [piece]]
        spans = [span for span, sequence in zip(offsets, sequence_ids) if sequence is not None]
        assert [span for span, sequence in zip(offsets, sequence_ids) if sequence is None] == \
            [(0, 0)] * (len(offsets) - len(spans))
        assert len(spans) == len(tokens)
        for (start, end), token in zip(spans, tokens):
            assert 0 <= start <= end <= len(text)
            assert text[start:end] == token.replace("</w>", "")
        assert [start for start, _ in spans] == sorted(start for start, _ in spans)
        for index, ((start, end), sequence) in enumerate(zip(offsets, sequence_ids)):
            if sequence is None:
                assert encoding.token_to_chars(row, index) is None
                continue
            assert tuple(encoding.token_to_chars(row, index)) == (start, end)
            assert encoding.char_to_token(row, start) == index
            word = encoding.word_ids(row)[index]
            assert encoding.char_to_word(row, start) == word
            first, last = encoding.word_to_tokens(row, word)
            assert encoding.word_to_chars(row, word) == (offsets[first][0], offsets[last - 1][1])
        for char, character in enumerate(text):
            if character.isspace():
                assert encoding.char_to_token(row, char) is None
    single = fast("hello  world", bypass_tokenizer=True, return_offsets_mapping=True, return_tensors="pt")
    assert single["offset_mapping"].shape == (1, single["input_ids"].shape[1], 2)
    assert single.char_to_token(7) == single.char_to_token(0, 7) and single.token_to_chars(0) is None


@needs_cpp
@pytest.mark.parametrize("bypass_tokenizer", [True, False], ids=["whitespace", "moses"])
def test_offsets_squad_recipe(fast_and_reference, bypass_tokenizer):
    """The SQuAD preprocessing step: question + context, only_second, stride, overflow windows,
    then the context tokens' offsets locate the answer (Moses: in the text as written)."""
    fast, _ = fast_and_reference
    if bypass_tokenizer:
        question, context = "where is the cat ?", "the dog sleeps . the cat plays in the garden near the house ."
    else:
        question, context = "Where is the cat?", "The dog sleeps. The cat plays in the garden, near the house."
    answer_start = context.index("garden")
    encoding = fast([question], [context], truncation="only_second", max_length=22, stride=2,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
                    bypass_tokenizer=bypass_tokenizer)
    assert len(encoding["input_ids"]) > 1 and encoding["overflow_to_sample_mapping"] == [0] * len(
        encoding["input_ids"])
    found = 0
    for row, offsets in enumerate(encoding["offset_mapping"]):
        sequence_ids = encoding.sequence_ids(row)
        context_spans = [span for span, sequence in zip(offsets, sequence_ids) if sequence == 1]
        assert all(0 <= start <= end <= len(context) for start, end in context_spans)
        token = encoding.char_to_token(row, answer_start, sequence_index=1)
        if token is not None:
            found += 1
            start, end = offsets[token]
            assert context[start:end] == "garden"[: end - start] and start == answer_start
    assert found >= 1


@needs_cpp
def test_offsets_unavailable_paths_say_why(fast_and_reference, files):
    fast, _ = fast_and_reference
    pytest.importorskip("rjieba")
    with pytest.raises(ValueError, match="return_offsets_mapping=True"):  # segmented in Python: offsets on demand
        fast("a b", lang="zh").char_to_token(0)
    assert fast("a b", lang="zh", return_offsets_mapping=True).char_to_token(2) == 2
    python = XLMTokenizer(*files, bpe_backend="python")
    with pytest.raises(NotImplementedError, match="C\\+\\+"):
        python("a b", return_offsets_mapping=True, bypass_tokenizer=True)
    encoding = fast("a b", bypass_tokenizer=True)
    assert pickle.loads(pickle.dumps(encoding)).token_to_chars(1) == encoding.token_to_chars(1)


@needs_cpp
def test_fast_path_bad_input_raises(fast_and_reference):
    from xlm_fast._C import EncodeOptions, pre_tokenize_count

    fast, _ = fast_and_reference
    with pytest.raises(TypeError, match=r"text\[1\]"):
        fast(["ok", 3], bypass_tokenizer=True)
    options = dict(add_special_tokens=True, bos_id=0, sep_id=1, pad_id=2, truncation=None, max_length=None, stride=0,
                   truncation_side="right", overflow=False, padding=None, pad_to_multiple_of=None,
                   padding_side="right", token_type_ids=False, special_tokens_mask=False, attention_mask=True,
                   offsets=False, num_threads=1)
    with pytest.raises(TypeError, match=r"text\[1\]"):
        tokenization_xlm.encode_texts(fast.bpe_model, fast._cpp_added_tokens(), tokenization_xlm._whitespace_split(),
                                      ["a", b"b"], None, EncodeOptions(options))
    with pytest.raises(KeyError):
        EncodeOptions({})
    for bad in ([[3.5]], [[[1]]], [["a"]], 5, [[-1]]):
        with pytest.raises((TypeError, ValueError)):
            tokenization_xlm.encode_words(fast.bpe_model, bad, False, EncodeOptions(options))
    with pytest.raises(ValueError, match="num_threads"):
        EncodeOptions(dict(options, num_threads=0))
    with pytest.raises(TypeError, match="stride"):
        EncodeOptions(dict(options, stride=1.0))
    with pytest.raises(TypeError):  # a dict is no EncodeOptions
        tokenization_xlm.encode_words(fast.bpe_model, [[["a"]]], False, options)
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        pre_tokenize_count(tokenization_xlm._whitespace_split(), [3])
    with pytest.raises(TypeError, match="pre_tokenizer"):
        pre_tokenize_count(fast.bpe_model, ["a"])


@needs_cpp
def test_encoded_rows_and_pre_tokenize_count(fast_and_reference):
    """The EncodedRows of one C++ call: arrays, row lists and maps agree."""
    from xlm_fast._C import EncodeOptions, pre_tokenize_count

    fast, _ = fast_and_reference
    options = EncodeOptions(dict(add_special_tokens=True, bos_id=0, sep_id=1, pad_id=2, truncation=None,
                                 max_length=None, stride=0, truncation_side="right", overflow=False,
                                 padding="longest", pad_to_multiple_of=None, padding_side="left", token_type_ids=True,
                                 special_tokens_mask=False, attention_mask=True, offsets=True, num_threads=1))
    texts = ["a b c", "d"]
    split = tokenization_xlm._whitespace_split()
    out = tokenization_xlm.encode_texts(fast.bpe_model, fast._cpp_added_tokens(), split, texts, None, options)
    assert out.rows == 2 and out.width is not None
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert out.row_lists(key) == out.array(key).reshape(2, out.width).tolist()
    offsets = out.array("offset_mapping").reshape(2, out.width, 2).tolist()
    assert [out.offsets(row) for row in range(2)] == [[tuple(pair) for pair in row] for row in offsets]
    assert out.word_ids(1) == [0]  # "d": one word of one token
    with pytest.raises(KeyError):
        out.array("no such field")
    with pytest.raises(ValueError, match="per-token"):
        out.row_lists("length")
    with pytest.raises(IndexError):
        out.offsets(2)
    with pytest.raises(IndexError):
        out.word_ids(-1)
    array, ids = out.array("input_ids"), out.row_lists("input_ids")
    del out
    assert array.reshape(2, -1).tolist() == ids  # the view keeps its buffer alive
    assert pre_tokenize_count(split, texts + [" \t "]) == 4
    moses_pipeline = fast._cpp_pre_tokenizer("en", False)
    assert pre_tokenize_count(moses_pipeline, ["Hello, world!"]) == len(fast.pre_tokenizer("Hello, world!", "en"))


@needs_cpp
@pytest.mark.parametrize("bypass_tokenizer", [False, True])
def test_fast_path_two_threads_same_output(files, corpus, fast_and_reference, bypass_tokenizer):
    """A batch large enough for two threads (csrc/batch_encoder.cpp: a minimum of code points per
    thread) gives what one thread and the Python path give, offsets included."""
    fast, reference = fast_and_reference
    one = XLMTokenizer(*files, bpe_backend="cpp", num_threads=1)
    texts = [text for _, text in corpus][:128]
    assert sum(map(len, texts)) > 2 * 3072  # over both pre-tokenizers' per-thread minimum
    kwargs = dict(padding=True, return_special_tokens_mask=True, bypass_tokenizer=bypass_tokenizer)
    threaded = fast(texts, return_offsets_mapping=True, **kwargs)
    assert threaded == one(texts, return_offsets_mapping=True, **kwargs)
    assert [threaded.word_ids(row) for row in range(len(texts))] == [
        reference(texts, **kwargs).word_ids(row) for row in range(len(texts))]
    _assert_same_encoding(fast(texts, **kwargs), reference(texts, **kwargs))


@needs_cpp
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_worker_threads_after_fork_and_from_two_threads(files, corpus):
    """The batch encoder keeps its worker threads between calls (csrc/parallel_for.h): a forked
    child (a DataLoader worker) gets threads of its own, and two Python threads encoding at once
    (one of them then starts threads of its own) get what one thread gives."""
    tokenizer = XLMTokenizer(*files, bpe_backend="cpp", num_threads=2)
    texts = [text for _, text in corpus][:128]
    expected = XLMTokenizer(*files, bpe_backend="cpp", num_threads=1)(texts)["input_ids"]
    assert tokenizer(texts)["input_ids"] == expected  # the parent's pool is started
    script = f"""
import os, sys, json
sys.path[:0] = {sys.path!r}
from xlm_fast.tokenization_xlm import XLMTokenizer
tokenizer = XLMTokenizer(*{list(files)!r}, bpe_backend="cpp", num_threads=2)
texts = json.loads(sys.stdin.read())
tokenizer(texts)
pid = os.fork()
if pid == 0:
    os._exit(0 if tokenizer(texts)["input_ids"] == tokenizer(texts)["input_ids"] else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    child = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), text=True, timeout=120)
    assert child.returncode == 0
    results = [None, None]

    def encode(slot):
        results[slot] = [tokenizer(texts)["input_ids"] for _ in range(20)]

    workers = [threading.Thread(target=encode, args=(slot,)) for slot in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert results[0] == results[1] == [expected] * 20


def test_environment_defaults(files, monkeypatch):
    monkeypatch.setenv("XLM_FAST_TOKENIZER_BACKEND", "python")
    monkeypatch.setenv("XLM_FAST_NUM_THREADS", "3")
    tokenizer = XLMTokenizer(*files)
    assert isinstance(tokenizer.bpe_model, PyBPEModel) and tokenizer.num_threads == 3
    assert tokenizer("a b", bypass_tokenizer=True)["input_ids"] == XLMTokenizer(*files, bpe_backend="python")(
        "a b", bypass_tokenizer=True)["input_ids"]


@needs_cpp
def test_offsets_of_the_moses_path_on_the_corpus(corpus, files):
    """Every corpus line of a Moses language: each token's span lies in the text, starts never
    decrease, special tokens are (0, 0); where the text is plain ASCII words, each span
    holds its token as written (lowercased)."""
    tokenizer = XLMTokenizer(*files, bpe_backend="cpp")
    lines = [(lang, text) for lang, text in corpus if lang not in XLMPreTokenizer.CUSTOM_LANGUAGES]
    for lang, text in lines:
        encoding = tokenizer(text, lang=lang, return_offsets_mapping=True)
        spans, special = encoding["offset_mapping"], tokenizer.get_special_tokens_mask(
            encoding["input_ids"], already_has_special_tokens=True)
        starts = [start for (start, end), is_special in zip(spans, special) if not is_special]
        assert starts == sorted(starts), (lang, text)
        for (start, end), is_special, token in zip(spans, special, encoding.tokens()):
            assert (start, end) == (0, 0) if is_special else 0 <= start < end <= len(text), (lang, text, token)
    plain = "Rem magni illo modi and 42 more words"
    encoding = tokenizer(plain, return_offsets_mapping=True)
    for (start, end), token in zip(encoding["offset_mapping"][1:-1], encoding.tokens()[1:-1]):
        assert plain[start:end].lower() == token.replace("</w>", "")


@needs_cpp
@pytest.mark.parametrize("lang", ["zh", "th"])
def test_offsets_of_the_segmented_languages(corpus, files, lang):
    """zh / th (segmented in Python): with return_offsets_mapping=True the same ids as without,
    and spans that lie in the text, in order; a batch with an added token and a pair too."""
    pytest.importorskip({"zh": "rjieba", "th": "pythainlp"}[lang])
    tokenizer = XLMTokenizer(*files, bpe_backend="cpp")
    lines = [text for line_lang, text in corpus if line_lang == lang]
    assert lines
    for text in lines:
        encoding = tokenizer(text, lang=lang, return_offsets_mapping=True)
        assert encoding["input_ids"] == tokenizer(text, lang=lang)["input_ids"]
        spans = encoding["offset_mapping"]
        assert spans[0] == spans[-1] == (0, 0)
        starts = [start for start, _ in spans[1:-1]]
        assert starts == sorted(starts), text
        assert all(0 <= start <= end <= len(text) for start, end in spans), text
        for token in range(1, len(spans) - 1):  # the characters of a token map back to it
            start, end = spans[token]
            if end > start:
                assert encoding.char_to_token(start) == token
    texts = [lines[0] + "<special1>" + lines[1], lines[2]]
    batch = tokenizer(texts, [lines[3], "x"], lang=lang, return_offsets_mapping=True, padding=True)
    assert batch["input_ids"] == tokenizer(texts, [lines[3], "x"], lang=lang, padding=True)["input_ids"]
    special = batch["input_ids"][0].index(tokenizer.convert_tokens_to_ids("<special1>"))
    assert batch["offset_mapping"][0][special] == (len(lines[0]), len(lines[0]) + len("<special1>"))


def test_transformers_4_encode_plus_names(files, corpus):
    """encode_plus / batch_encode_plus / max_len_*: transformers 4.x's names, still in its
    users' code; the same outputs as __call__ (and as transformers 4.x gives)."""
    ours = XLMTokenizer(*files)
    texts = [text for lang, text in corpus[:6] if lang not in XLMPreTokenizer.CUSTOM_LANGUAGES]
    assert ours.encode_plus(texts[0], texts[1], truncation=True, max_length=12) == ours(
        texts[0], texts[1], truncation=True, max_length=12)
    assert ours.batch_encode_plus(texts, padding=True) == ours(texts, padding=True)
    pairs = list(zip(texts[:3], texts[3:6]))
    assert ours.batch_encode_plus(pairs, padding=True, return_tensors="np")["input_ids"].tolist() == ours(
        [a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="np")["input_ids"].tolist()
    words = [text.split() for text in texts]
    assert ours.batch_encode_plus(words, is_split_into_words=True) == ours(words, is_split_into_words=True)
    with pytest.raises(ValueError, match="batch_text_or_text_pairs"):
        ours.batch_encode_plus([texts[0], (texts[1], texts[2])])
    with pytest.raises(TypeError, match="batch_text_or_text_pairs"):
        ours.batch_encode_plus(texts[0])
    with pytest.raises(TypeError, match="text"):
        ours.encode_plus(texts)
    ours.model_max_length = 64
    assert (ours.max_len_single_sentence, ours.max_len_sentences_pair) == (62, 61)


# ----------------------------------------------------------------------------- call plans


@pytest.mark.parametrize("backend", ["cpp", "python"])
def test_call_plan_follows_state_changes(files, backend):
    """__call__ reuses the checked options of an earlier call with the same arguments
    (XLMTokenizer._call_plan); every change of the tokenizer's state that they depend on is seen."""
    if backend == "cpp" and tokenization_xlm.CppBPEModel is None:
        pytest.skip("extension not built")
    tokenizer = XLMTokenizer(*files, bpe_backend=backend)
    texts = ["Hello world, this is a test.", "x"]

    def fresh():  # the same state, no plans yet
        other = pickle.loads(pickle.dumps(tokenizer))
        assert not other._plans
        return other

    def check(**kwargs):
        assert tokenizer(texts, **kwargs) == fresh()(texts, **kwargs)

    before = tokenizer(texts, padding=True, truncation=True)
    tokenizer.padding_side = "left"
    check(padding=True, truncation=True)
    assert tokenizer(texts, padding=True)["input_ids"] != before["input_ids"]
    tokenizer.model_max_length = 4
    check(padding=True, truncation=True)
    assert len(tokenizer(texts, truncation=True)["input_ids"][0]) == 4
    tokenizer.truncation_side = "left"
    check(truncation=True)
    tokenizer.pad_token = "<special4>"
    check(padding=True)
    assert tokenizer(texts, padding=True)["input_ids"][1][0] == tokenizer.convert_tokens_to_ids("<special4>")
    tokenizer.bos_token = "<special5>"
    check()
    tokenizer.add_tokens(["world,"])
    check()
    tokenizer.do_lowercase_and_remove_accent = False
    check()
    assert tokenizer("Hello")["input_ids"] != XLMTokenizer(*files, bpe_backend=backend)("Hello")["input_ids"]


def test_call_plan_keeps_argument_checks(files):
    """A plan is reused only for arguments of the same types: an equal value of another type
    is checked again (and refused where the first call's type is the only one accepted)."""
    tokenizer = XLMTokenizer(*files)
    tokenizer("a b", padding=True, max_length=5, stride=0, truncation="only_first")
    with pytest.raises(ValueError, match="padding"):
        tokenizer("a b", padding=1, max_length=5, stride=0, truncation="only_first")
    with pytest.raises(ValueError, match="max_length"):
        tokenizer("a b", padding=True, max_length=5.0, stride=0, truncation="only_first")
    with pytest.raises(ValueError, match="stride"):
        tokenizer("a b", padding=True, max_length=5, stride=False, truncation="only_first")
    with pytest.raises(ValueError, match="padding"):  # unhashable: checked on every call
        tokenizer("a b", padding=["longest"])
    with pytest.raises(ValueError, match="lang"):  # languages are checked on every call
        XLMTokenizer(*files, lang2id={"en": 0})("a b", lang="fr")
    for _ in range(tokenization_xlm.MAX_CALL_PLANS + 3):  # the plans stay bounded
        tokenizer("a", max_length=len(tokenizer._plans) + 5, truncation=True)
    assert len(tokenizer._plans) <= tokenization_xlm.MAX_CALL_PLANS
