"""XLMTokenizer: transformers' XLM tokenizer API and token ids, with a C++ BPE core.

Pipeline per text (same steps and order as transformers' slow XLMTokenizer):
  split out added tokens (special tokens and add_tokens'; never tokenized)
  -> front, in Python (xlm_fast.pre_tokenizer): unicode punctuation -> ASCII, Moses
     punctuation normalisation, drop non-printing characters, Romanian normalisation (ro),
     Moses tokenisation (sacremoses), or jieba (zh) / PyThaiNLP (th) / KyTea (ja) word
     segmentation; lowercase + strip accents (optional); shared across worker processes for
     large batches (xlm_fast.worker_pool)
  -> BPE over words with "</w>" end-of-word markers, in xlm_fast._C.BPEModel (C++, GIL
     released, threaded over a batch) or its pure-Python twin xlm_fast.bpe.BPEModel
  -> special tokens, truncation, overflow windows, padding, tensors
     (xlm_fast.tokenization_utils_base, whose BatchEncoding also maps tokens to words).

With the extension built, __call__ makes one C++ call per batch (xlm_fast._C.encode_texts,
csrc/batch_encoder.cpp): the added-token split, the pre-tokenizer (the whole Moses pipeline
of csrc/moses.h, or the whitespace split of bypass_tokenizer=True), BPE, ids, special tokens,
truncation, overflow windows and padding, with character offsets. zh / th / ja keep their
Python segmenters, whose words go to the same C++ call without offsets (encode_words); the output
stays in C++ buffers (xlm_fast._C.EncodedRows), of which only the fields asked for become
lists, or arrays and tensors without a copy. The options of a call are checked and resolved
once per set of arguments (a _CallPlan, reused while the tokenizer's state is unchanged), so
a single-text call costs little Python. is_split_into_words and the pure-Python BPE backend
take the Python path, which is the reference.

Unlike transformers 5.x, whose tokenize() drops `lang`/`bypass_tokenizer` before they
reach the language-specific code, `lang=` here selects the pipeline as documented.
"""

import bisect
import itertools
import json
import operator
import os
import threading

from . import moses
from .added_tokens import AddedToken, AddedVocabulary, as_added_token, parse_added_tokens_decoder
from .bpe import MAX_THREADS
from .bpe import BPEModel as PyBPEModel
from .hub import resolve_model_dir
from .pre_tokenizer import (  # noqa: F401 - re-exported: the tokenizer's public names stay importable here
    XLMPreTokenizer,
    lowercase_and_remove_accent,
    remove_non_printing_char,
    replace_unicode_punct,
)
from .tokenization_utils_base import (
    LARGE_INTEGER,  # noqa: F401 - re-exported
    BatchEncoding,
    EncodingMaps,
    Span,
    TokenSpan,  # noqa: F401 - re-exported
    batch_from_features,
    check_count,
    check_return_tensors,
    check_side,
    check_strategies,
    overflow_windows,
    pad_fields,
    pad_target,
    tensor_type_of,
    to_python,
    to_tensor,
    truncation_bounds,
)
from .worker_pool import _PreTokenizerPool

try:
    from ._C import AddedTokens as CppAddedTokens
    from ._C import BPEModel as CppBPEModel
    from ._C import EncodeOptions, WhitespaceSplit, encode_texts, encode_words
except ImportError:  # extension not built: the pure-Python twin gives the same ids
    CppBPEModel = None

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ADDED_TOKENS_FILE = "added_tokens.json"
DEFAULT_ADDITIONAL_SPECIAL_TOKENS = [f"<special{i}>" for i in range(10)]
SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# transformers' model_max_length when none is configured (LARGE_INTEGER is its "no limit" threshold).
VERY_LARGE_INTEGER = int(1e30)
# __call__ keeps the plans of this many option sets (all forgotten when full: a program uses a few).
MAX_CALL_PLANS = 64
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# Environment defaults: bpe_backend ("auto", "cpp", "python") and num_threads.
BACKEND_ENV, THREADS_ENV = "XLM_FAST_TOKENIZER_BACKEND", "XLM_FAST_NUM_THREADS"
OFFSETS_NEED_CPP = ("return_offsets_mapping=True and the character maps (char_to_token, token_to_chars, ...) need "
                    "the C++ tokenizer core (xlm_fast._C built, bpe_backend 'cpp' or 'auto')")
OFFSETS_NEED_MOSES = ("zh / th / ja are segmented in Python (jieba / PyThaiNLP / KyTea), whose words carry "
                      "character offsets only when the call passes return_offsets_mapping=True")
DEMO_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "it", "ja", "pl", "ro", "ru", "th", "tr", "uk", "vi",
                  "zh")


# ----------------------------------------------------------------------------- files


def _read_text(path, argument):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a path (str or os.PathLike), got {type(path).__name__}")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{argument}: file not found: {path}") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{argument}: {path} is not valid UTF-8 ({error})") from error
    except OSError as error:
        raise OSError(f"{argument}: cannot read {path} ({error})") from error


def load_vocab(path):
    """vocab.json -> {token: id}; ValueError naming the file when it is not such a JSON object."""
    try:
        vocab = json.loads(_read_text(path, "vocab_file"))
    except json.JSONDecodeError as error:
        raise ValueError(f"vocab_file: {path} is not valid JSON ({error})") from error
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"vocab_file: {path} must hold a non-empty JSON object {{token: id}}")
    for token, index in vocab.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2**31:
            raise ValueError(f"vocab_file: {path}: id of {token!r} must be an integer in [0, 2**31), got {index!r}")
    # A key may hold a lone surrogate (a JSON escape such as "\ud800"): kept, as transformers and
    # the BPE twins keep it; text with that surrogate then maps to its id.
    return vocab


def load_merges(path):
    """merges.txt -> [(left, right)] in rank order. Lines are "left right" or "left right count"
    (the original XLM files); blank lines and a subword-nmt "#version" header are skipped."""
    merges = []
    for number, line in enumerate(_read_text(path, "merges_file").split("\n"), start=1):
        parts = line.split()
        if not parts or (number == 1 and line.startswith("#version")):
            continue
        if len(parts) not in (2, 3):
            raise ValueError(f"merges_file: {path}: line {number} must be 'left right [count]', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


# ----------------------------------------------------------------------------- tokenizer


def _as_rows(out, key, rows, width):
    """Field `key` of an EncodedRows as rows: one 2-D (3-D for offsets) view when every row
    has `width` tokens, else a list of 1-D (2-D) arrays."""
    flat, pair = out.array(key), key == "offset_mapping"
    if width is not None:
        return flat.reshape((rows, width, 2) if pair else (rows, width))
    import numpy as np

    return np.split(flat.reshape(-1, 2) if pair else flat, out.array("row_starts")[1:-1])


class _FastMaps:
    """The maps of the C++ path (EncodingMaps' methods), one per call plan: an encoding's maps are
    read from its EncodedRows (`rows`) on first use."""

    __slots__ = ("plan", "tokenizer")

    def __init__(self, plan, tokenizer):
        self.plan, self.tokenizer = plan, tokenizer

    def layouts(self, rows):
        plan, built = self.plan, []
        pad_left = plan.padding_side == "left"
        for first, a0, a1, second, b0, b1, pad in rows.array("layouts").reshape(-1, 7).tolist():
            spans = [Span(first, 0, a0, a1)] + ([Span(second, 1, b0, b1)] if second >= 0 else [])
            layout = ((1, spans[0], 1) + ((spans[1], 1) if plan.has_pairs else ())) if plan.add_special_tokens \
                else tuple(spans)
            built.append(layout if not pad else (pad, *layout) if pad_left else (*layout, pad))
        return built

    def word_ids_of(self, rows, source):
        return rows.word_ids(source)

    def id_to_token(self, ids):
        return self.tokenizer.convert_ids_to_tokens(ids)

    def offsets_reason(self, rows):
        return None if self.plan.has_offsets else self.plan.offsets_reason

    def offsets_of(self, rows, row):
        return rows.offsets(row)


class _CallPlan:
    """What __call__ does for one set of options, worked out once (XLMTokenizer._call_plan): the
    checked and resolved options, and for the C++ path its EncodeOptions (None: the Python path
    runs), pre-tokenizer (None: words from the Python pre-tokenizer, with their spans when
    word_spans), added tokens and the fields it returns."""

    __slots__ = ("add_special_tokens", "padding", "truncation", "max_length", "stride", "is_split_into_words",
                 "pad_to_multiple_of", "padding_side", "return_tensors", "want", "want_mask", "overflow",
                 "return_offsets", "return_length", "lang", "bypass_tokenizer", "batched", "has_pairs",
                 "offsets_reason", "cpp_options", "pre_tokenizer", "added_tokens", "word_spans", "output_keys",
                 "has_offsets", "maps")

    def __init__(self, **options):
        self.cpp_options = self.pre_tokenizer = self.added_tokens = self.output_keys = self.maps = None
        self.word_spans = self.has_offsets = False
        for name, value in options.items():
            setattr(self, name, value)


class _CheckedOption:
    """An attribute whose every assignment goes through `check(name, value)`, which returns
    the value to store (in `_<name>`); `after_set(instance)` runs after each assignment."""

    def __init__(self, check, after_set=None):
        self.check, self.after_set = check, after_set

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, instance, owner=None):
        return self if instance is None else getattr(instance, self.slot)

    def __set__(self, instance, value):
        setattr(instance, self.slot, self.check(self.name, value))
        if self.after_set is not None:
            self.after_set(instance)


def _check_lang2id(lang2id):
    if lang2id is not None and not (
        isinstance(lang2id, dict)
        and all(isinstance(lang, str) and type(index) is int for lang, index in lang2id.items())
    ):
        raise TypeError(f"lang2id must be a dict {{str: int}} or None, got {lang2id!r}")
    return lang2id


def _id2lang_with_int_keys(id2lang):
    """id2lang with int keys (JSON stores them as strings, e.g. {"0": "en"})."""
    if id2lang is None:
        return None
    expected = f"id2lang must be a dict {{int: str}} or None, got {id2lang!r}"
    if not isinstance(id2lang, dict):
        raise TypeError(expected)
    converted = {}
    for index, lang in id2lang.items():
        if isinstance(index, str) and index.isdecimal():
            index = int(index)
        if type(index) is not int or not isinstance(lang, str):
            raise TypeError(expected)
        converted[index] = lang
    return converted


def _token_ids(ids, name):
    """`ids` as a list of Python ints (numpy / torch integer scalars accepted); TypeError for a
    float, bool or anything else (int() would truncate 2.7), ValueError for a negative id."""
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name} must be an int or a sequence of int, got {type(ids).__name__}")
    checked = []
    for index in ids:
        try:
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{name} must hold int ids, got {type(index).__name__}") from None
        if index < 0:
            raise ValueError(f"{name} must hold non-negative ids, got {index}")
        checked.append(index)
    return checked


_WHITESPACE_SPLIT = None


def _whitespace_split():
    """The C++ pre-tokenizer of bypass_tokenizer=True, built once per process from str.isspace()."""
    global _WHITESPACE_SPLIT
    if _WHITESPACE_SPLIT is None:
        _WHITESPACE_SPLIT = WhitespaceSplit([code for code in range(0x110000) if chr(code).isspace()])
    return _WHITESPACE_SPLIT


def _env_threads():
    value = os.environ.get(THREADS_ENV)
    if value is None:
        return min(os.cpu_count() or 1, MAX_THREADS)
    if not value.strip().isdecimal():
        raise ValueError(f"{THREADS_ENV} must be a positive int, got {value!r}")
    return int(value)


def _special_token(name, token, required=False):
    """A special token as its str (AddedToken -> content); None where allowed."""
    if token is None and not required:
        return None
    if not isinstance(token, str) and isinstance(getattr(token, "content", None), str):
        token = token.content
    if not isinstance(token, str) or not token:
        raise TypeError(f"{name} must be a non-empty str{'' if required else ' or None'}, got {token!r}")
    return token


class XLMTokenizer:
    """XLM tokenizer (Moses / jieba / PyThaiNLP / KyTea front + BPE) with transformers' API.

    Args match transformers.XLMTokenizer. Extra keyword arguments read here:
    `model_max_length`, `padding_side`, `truncation_side`, `eos_token`, `added_tokens_decoder`
    (as saved in tokenizer_config.json), `num_threads` (C++ threads for a batch; default
    $XLM_FAST_NUM_THREADS, else all cores), `num_workers` (processes sharing the Python front of
    a batch of at least MIN_TEXTS_PER_WORKER texts per process: the front holds the GIL, so only
    processes use more cores; default 1 = none), `bpe_backend` ("auto": C++ if built, "cpp",
    "python"; default $XLM_FAST_TOKENIZER_BACKEND, else "auto").

    Like transformers' slow tokenizers, `is_fast` is False. Character offsets
    (return_offsets_mapping=True, BatchEncoding.char_to_token and the like) come with the C++
    core and bypass_tokenizer=True; the encodings always give word_ids() and the other
    token/word maps (see BatchEncoding).
    """

    MIN_TEXTS_PER_WORKER = 8

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]  # transformers' XLMTokenizer's
    SPECIAL_TOKENS_ATTRIBUTES = list(SPECIAL_TOKENS_ATTRIBUTES)
    pad_token_type_id = 0
    is_fast = False
    chat_template = None
    split_special_tokens = False

    def __init__(
        self,
        vocab_file,
        merges_file,
        unk_token="<unk>",
        bos_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        cls_token="</s>",
        mask_token="<special1>",
        additional_special_tokens=DEFAULT_ADDITIONAL_SPECIAL_TOKENS,
        lang2id=None,
        id2lang=None,
        do_lowercase_and_remove_accent=True,
        **kwargs,
    ):
        self.encoder = load_vocab(vocab_file)
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.merges = load_merges(merges_file)

        self.unk_token = _special_token("unk_token", unk_token, required=True)
        self.eos_token = _special_token("eos_token", kwargs.pop("eos_token", None))
        for name, token in (("bos_token", bos_token), ("sep_token", sep_token), ("pad_token", pad_token),
                            ("cls_token", cls_token), ("mask_token", mask_token)):
            setattr(self, name, _special_token(name, token))
        if isinstance(additional_special_tokens, str) or not hasattr(additional_special_tokens or [], "__iter__"):
            raise TypeError(f"additional_special_tokens must be a list of str, got {additional_special_tokens!r}")
        self.additional_special_tokens = [_special_token("additional_special_tokens", token, required=True)
                                          for token in additional_special_tokens or []]

        self.lang2id, self.id2lang = lang2id, id2lang
        if lang2id is not None and id2lang is not None and len(lang2id) != len(id2lang):
            raise ValueError(f"lang2id ({len(lang2id)} languages) and id2lang ({len(id2lang)}) differ in size")

        self._pool = None
        self._pool_lock = threading.Lock()
        self.pre_tokenizer = XLMPreTokenizer(bool(do_lowercase_and_remove_accent))
        self.model_max_length = kwargs.pop("model_max_length", VERY_LARGE_INTEGER)
        self.padding_side = kwargs.pop("padding_side", "right")
        self.truncation_side = kwargs.pop("truncation_side", "right")
        self.clean_up_tokenization_spaces = bool(kwargs.pop("clean_up_tokenization_spaces", False))
        self.num_threads = kwargs.pop("num_threads") if "num_threads" in kwargs else _env_threads()
        self.num_workers = kwargs.pop("num_workers", 1)
        self._backend = kwargs.pop("bpe_backend", os.environ.get(BACKEND_ENV, "auto"))
        self._cpp_added = None  # (added-vocabulary version, its xlm_fast._C.AddedTokens)
        self._plans = {}  # __call__'s _CallPlans by arguments and state (_call_plan)
        self.name_or_path = kwargs.pop("name_or_path", "")
        added_tokens_decoder = parse_added_tokens_decoder(kwargs.pop("added_tokens_decoder", None) or {})
        self.init_kwargs = kwargs  # other transformers options, kept for save_pretrained
        self.deprecation_warnings = {}  # transformers' warn-once registry (its data collators toggle entries)

        # Added tokens: those of a saved tokenizer keep their ids; special tokens not yet among them
        # are added (an id after the vocabulary when they are not in it), as transformers does.
        self._added = AddedVocabulary()
        for index, token in sorted(added_tokens_decoder.items()):
            self._added.add(index, token)
        self._length = len(self.get_vocab())
        self._add_tokens([token for token in self.all_special_tokens if token not in self._added.encoder],
                         special_tokens=True)
        self.bpe_model = self._make_bpe_model(self._backend)

    def __getstate__(self):  # the C++ core, call plans, the process pool and its lock are rebuilt, not pickled
        state = dict(self.__dict__)
        state["bpe_model"] = state["_pool"] = state["_pool_lock"] = state["_cpp_added"] = None
        state["_plans"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()
        self.bpe_model = self._make_bpe_model(self._backend)

    # ------------------------------------------------------------------ validated options
    # Checked on every assignment, construction included, so a bad value set later is refused too.
    lang2id = _CheckedOption(lambda name, value: _check_lang2id(value))
    id2lang = _CheckedOption(lambda name, value: _id2lang_with_int_keys(value))
    padding_side = _CheckedOption(check_side)
    truncation_side = _CheckedOption(check_side)
    # None means no limit in transformers, which stores its very large sentinel instead.
    model_max_length = _CheckedOption(
        lambda name, value: VERY_LARGE_INTEGER if value is None else check_count(name, value))
    num_threads = _CheckedOption(lambda name, value: check_count(name, value, MAX_THREADS))
    # The pool's size is fixed when it starts.
    num_workers = _CheckedOption(check_count, after_set=lambda tokenizer: tokenizer._drop_pool())

    @property
    def do_lowercase_and_remove_accent(self):
        return self.pre_tokenizer.do_lowercase_and_remove_accent

    @do_lowercase_and_remove_accent.setter
    def do_lowercase_and_remove_accent(self, value):
        # read on every call, as in transformers; the workers hold the old value
        self.pre_tokenizer.do_lowercase_and_remove_accent = bool(value)
        self._drop_pool()

    def _drop_pool(self):
        """Forgets the worker pool (its processes stop once no call uses it); the next large
        batch starts one with the current options."""
        with self._pool_lock:
            self._pool = None

    def _make_bpe_model(self, backend):
        unk_id = self._token_to_id(self.unk_token)
        if backend == "auto":
            backend = "cpp" if CppBPEModel is not None else "python"
        if backend == "cpp":
            if CppBPEModel is None:
                raise ImportError("bpe_backend='cpp' but the extension xlm_fast._C is not built")
            return CppBPEModel(self.encoder, self.merges, unk_id)
        if backend == "python":
            return PyBPEModel(self.encoder, self.merges, unk_id)
        raise ValueError(f"bpe_backend must be 'auto', 'cpp' or 'python', got {backend!r}")

    # ------------------------------------------------------------------ special tokens

    @property
    def all_special_tokens(self):
        named = (getattr(self, name) for name in SPECIAL_TOKENS_ATTRIBUTES)
        return list(dict.fromkeys(token for token in itertools.chain(named, self.additional_special_tokens)
                                  if token is not None))

    @property
    def all_special_ids(self):
        return [self._token_to_id(token) for token in self.all_special_tokens]

    @property
    def special_tokens_map(self):
        return {name: getattr(self, name) for name in SPECIAL_TOKENS_ATTRIBUTES if getattr(self, name) is not None}

    unk_token_id = property(lambda self: self._token_to_id(self.unk_token))
    bos_token_id = property(lambda self: self._token_to_id(self.bos_token))
    eos_token_id = property(lambda self: self._token_to_id(self.eos_token))
    sep_token_id = property(lambda self: self._token_to_id(self.sep_token))
    pad_token_id = property(lambda self: self._token_to_id(self.pad_token))
    cls_token_id = property(lambda self: self._token_to_id(self.cls_token))
    mask_token_id = property(lambda self: self._token_to_id(self.mask_token))
    additional_special_tokens_ids = property(
        lambda self: [self._token_to_id(token) for token in self.additional_special_tokens]
    )

    @property
    def do_lower_case(self):
        return self.do_lowercase_and_remove_accent

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self):
        return len(self.encoder)

    def __len__(self):  # the number of distinct tokens, as in transformers (ids may have holes)
        return self._length

    def get_vocab(self):
        return dict(self.encoder, **self._added.encoder)

    def get_added_vocab(self):
        """{token: id} of the added tokens (the special tokens included, as in transformers)."""
        return dict(self._added.encoder)

    @property
    def added_tokens_encoder(self):
        return {self._added.decoder[index].content: index for index in sorted(self._added.decoder)}

    @property
    def added_tokens_decoder(self):
        """{id: AddedToken}, by id."""
        return dict(sorted(self._added.decoder.items()))

    def add_tokens(self, new_tokens, special_tokens=False):
        """Adds tokens that are never split (text is cut around them before the pre-tokenizer)
        with ids after the vocabulary; returns how many are new. As in transformers: a token
        already in the vocabulary keeps its id (and is not counted); with
        do_lowercase_and_remove_accent a non-special token is lowercased (the text is not, so
        it matches lowercase text only); special_tokens=True makes them special tokens
        (skipped by decode(skip_special_tokens=True))."""
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        return self._add_tokens(new_tokens, special_tokens=bool(special_tokens))

    def _add_tokens(self, new_tokens, special_tokens):
        vocab = self.get_vocab()
        checked = [as_added_token(token, "new_tokens") for token in new_tokens]
        added = 0
        for (content, special, normalized), token in zip(checked, new_tokens):
            if not content or (isinstance(token, str) and content in self._added.encoder):
                continue
            if special is None:  # a str: transformers' defaults
                special = special_tokens or content in self.all_special_tokens
                normalized = not special
            special = special or special_tokens
            if not special and normalized and self.do_lower_case:
                content = content.lower()
            index = vocab.get(content)
            if index is None:
                index = vocab[content] = len(vocab)
                added += 1
            if special and content not in self.all_special_tokens:
                self.additional_special_tokens.append(content)
            self._added.add(index, AddedToken(content, special, normalized))
        self._length = len(vocab)
        return added

    def add_special_tokens(self, special_tokens_dict, replace_extra_special_tokens=True):
        """Sets special tokens ({"pad_token": "<pad>", "additional_special_tokens": [...], ...})
        and adds those not in the vocabulary; returns how many are new. As in transformers 5,
        a list of additional (extra) special tokens replaces the current one unless
        replace_extra_special_tokens=False (the replaced tokens stay in the vocabulary, unsplit,
        but are no longer special)."""
        if not isinstance(special_tokens_dict, dict):
            raise TypeError(f"special_tokens_dict must be a dict, got {type(special_tokens_dict).__name__}")
        special_tokens_dict = dict(special_tokens_dict)
        if "additional_special_tokens" in special_tokens_dict and not special_tokens_dict.get("extra_special_tokens"):
            special_tokens_dict["extra_special_tokens"] = special_tokens_dict.pop("additional_special_tokens")
        to_add = []
        for key, value in special_tokens_dict.items():
            if key == "extra_special_tokens":
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"special_tokens_dict[{key!r}] must be a list of tokens, got {value!r}")
                contents = [as_added_token(token, f"special_tokens_dict[{key!r}]")[0] for token in value]
                new = [token for token in contents
                       if replace_extra_special_tokens or token not in self.additional_special_tokens]
                if replace_extra_special_tokens and new:
                    self.additional_special_tokens = list(new)
                else:
                    self.additional_special_tokens.extend(new)
                to_add.extend(AddedToken(token, special=True, normalized=False) for token in new)
            elif key in SPECIAL_TOKENS_ATTRIBUTES:
                token = as_added_token(value, f"special_tokens_dict[{key!r}]")[0]
                setattr(self, key, _special_token(key, token, required=True))
                to_add.append(AddedToken(token, special=True, normalized=False))
            else:
                raise ValueError(f"special_tokens_dict: {key!r} is no special-token key; expected one of "
                                 f"{', '.join(SPECIAL_TOKENS_ATTRIBUTES)}, additional_special_tokens, "
                                 "extra_special_tokens")
        return self.add_tokens(to_add, special_tokens=True)

    def _token_to_id(self, token):
        if token is None:
            return None
        index = self._added.encoder.get(token)
        if index is None:
            index = self.encoder.get(token)
        if index is None:
            index = self._added.encoder.get(self.unk_token, self.encoder.get(self.unk_token))
        return index

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        if not hasattr(tokens, "__iter__"):
            raise TypeError(f"tokens must be a str or a list of str, got {type(tokens).__name__}")
        ids = []
        for token in tokens:
            if not isinstance(token, str):
                raise TypeError(f"tokens must hold str tokens, got {type(token).__name__}")
            ids.append(self._token_to_id(token))
        return ids

    def _id_to_token(self, index):
        token = self._added.decoder.get(index)
        return token.content if token is not None else self.decoder.get(index, self.unk_token)

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """Id(s) -> token(s). An id past the vocabulary gives unk_token, as in transformers (a
        model's embedding matrix may be padded beyond the tokenizer's ids)."""
        if hasattr(ids, "tolist"):  # numpy array or tensor
            ids = ids.tolist()
        if isinstance(ids, int) and not isinstance(ids, bool):
            return self._id_to_token(_token_ids([ids], "ids")[0])
        return self._checked_ids_to_tokens(_token_ids(ids, "ids"), skip_special_tokens)

    def _checked_ids_to_tokens(self, ids, skip_special_tokens):
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._id_to_token(index) for index in ids if index not in special]

    # ------------------------------------------------------------------ tokenisation

    def _check_lang(self, lang):
        if not isinstance(lang, str):
            raise TypeError(f"lang must be a str language code, got {type(lang).__name__}")
        if self.lang2id and lang not in self.lang2id:
            languages = ", ".join(self.lang2id)
            raise ValueError(f"lang must be one of this tokenizer's languages ({languages}), got {lang!r}")

    def _pieces(self, text, name="text"):
        """Yields (added token, None) for each added token, (None, text) for the text between."""
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}")
        return self._added.split(text)

    def tokenize(self, text, lang="en", bypass_tokenizer=False):
        """Text -> BPE tokens ("</w>" ends a word); added and special tokens are kept whole."""
        self._check_lang(lang)
        tokens = []
        for added, piece in self._pieces(text):
            if added is not None:
                tokens.append(added)
                continue
            for word in self.pre_tokenizer(piece, lang, bypass_tokenizer):
                tokens.extend(self.bpe_model.bpe(word))
        return tokens

    def _encode_texts(self, sequences, lang, bypass_tokenizer, split_into_words=False):
        """Sequences (texts, or lists of words when split_into_words) -> (ids of each, without
        special tokens added; word_ids_of(k): the word id of every token of sequence k). All
        words of the batch go to the BPE core in one call (threaded, GIL released).

        Per sequence, a layout: one (input word index or None, added token id or None) per
        piece; a piece without an added token id is plain text, whose words come from the
        pre-tokenizer in order."""
        self._check_lang(lang)
        layouts, pieces = [], []
        for sequence in sequences:
            layout = []
            for word_index, text in enumerate(sequence) if split_into_words else ((None, sequence),):
                for added, piece in self._pieces(text, "text" if word_index is None else "words"):
                    layout.append((word_index, None if added is None else self._added.encoder[added]))
                    if added is None:
                        pieces.append(piece)
            layouts.append(layout)
        words = self._pre_tokenize(pieces, lang, bypass_tokenizer)
        encoded = iter(self.bpe_model.encode_batch(words, self.num_threads))
        results = []
        for layout in layouts:
            if len(layout) == 1 and layout[0][1] is None:
                results.append(next(encoded))
                continue
            ids = []
            for _, added in layout:
                if added is None:
                    ids.extend(next(encoded))
                else:
                    ids.append(added)
            results.append(ids)
        starts = list(itertools.accumulate((sum(added is None for _, added in layout) for layout in layouts),
                                           initial=0))
        return results, lambda source: self._word_ids(layouts[source], words[starts[source]:])

    def _word_ids(self, layout, words):
        """Word id of every token of one sequence: an input word's index (is_split_into_words),
        else one id per pre-tokenizer word and per added token, in order. Computed on demand
        from each word's BPE token count."""
        ids, next_word, plain = [], 0, iter(words)
        for word_index, added in layout:
            if added is not None:
                ids.append(next_word if word_index is None else word_index)
                next_word += 1
                continue
            for word in next(plain):
                count = len(self.bpe_model.bpe(word))
                ids.extend([next_word if word_index is None else word_index] * count)
                next_word += 1
        return ids

    def _pre_tokenize(self, pieces, lang, bypass_tokenizer):
        """Pieces -> word lists; split across `num_workers` processes for a large batch (this
        process takes the first share), in order."""
        workers = min(self.num_workers, len(pieces) // self.MIN_TEXTS_PER_WORKER)
        if workers <= 1:
            return [self.pre_tokenizer(piece, lang, bypass_tokenizer) for piece in pieces]
        pool = self._pool  # read once: an option set meanwhile may drop it
        if pool is None:
            with self._pool_lock:  # threads making their first call at once start one pool
                if self._pool is None:
                    self._pool = _PreTokenizerPool(self.num_workers - 1, self.do_lowercase_and_remove_accent)
                pool = self._pool
        workers = min(workers, pool.size + 1)  # a pool started for an older num_workers may be smaller
        # Shares of about equal characters (front time grows with length), in order.
        ends = list(itertools.accumulate(len(piece) + 1 for piece in pieces))
        bounds = [0] + [bisect.bisect_left(ends, ends[-1] * k / workers) for k in range(1, workers)] + [len(pieces)]
        shares = [[(piece, lang, bypass_tokenizer) for piece in pieces[a:b]] for a, b in zip(bounds, bounds[1:])]
        return pool.map(shares, lambda share: [self.pre_tokenizer(*item) for item in share])

    # ------------------------------------------------------------------ model inputs

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        """`<s> X </s>` or `<s> A </s> B </s>`."""
        if token_ids_1 is None:
            return [self.bos_token_id] + list(token_ids_0) + [self.sep_token_id]
        return [self.bos_token_id] + list(token_ids_0) + [self.sep_token_id] + list(token_ids_1) + [self.sep_token_id]

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if index in special else 0 for index in token_ids_0]
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
        """0 for `<s> A </s>`, 1 for `B </s>`."""
        first = [0] * (len(token_ids_0) + 2)
        return first if token_ids_1 is None else first + [1] * (len(token_ids_1) + 1)

    def num_special_tokens_to_add(self, pair=False):
        return 3 if pair else 2

    def _windows(self, first, second, remove, truncation, stride):
        """Overflow windows as bounds [((start, stop) of first, (start, stop) of second or None)],
        row per window as transformers' fast tokenizers give them: the truncated sequence
        (the first for only_first / a single sequence, the second for only_second) is cut into
        windows that overlap by `stride` tokens, the other is repeated whole in every row."""
        if truncation == "longest_first" and second is not None:
            raise ValueError("return_overflowing_tokens=True with a pair needs truncation='only_first' or "
                             "'only_second' (as in transformers), got truncation='longest_first'/True")
        if truncation == "only_second" and second is None:
            raise ValueError("truncation='only_second' with return_overflowing_tokens=True needs text_pair")
        target = second if truncation == "only_second" else first
        room = target - remove
        if room <= stride:
            raise ValueError(f"max_length leaves {max(room, 0)} tokens per window to the truncated sequence, which "
                             f"must be more than stride={stride}: raise max_length or lower stride")
        windows = overflow_windows(target, room, stride, self.truncation_side)
        if truncation == "only_second":
            return [((0, first), window) for window in windows]
        return [(window, None if second is None else (0, second)) for window in windows]

    def _rows(self, first, second, sources, add_special_tokens, truncation, max_length, stride, overflow, want):
        """One sequence (or pair) of ids -> [(fields, layout)]: one row, or one per overflow window."""
        specials = self.num_special_tokens_to_add(second is not None) if add_special_tokens else 0
        total = len(first) + len(second if second is not None else []) + specials
        bounds = [((0, len(first)), None if second is None else (0, len(second)))]
        if truncation is not None and max_length and total > max_length:
            second_length = None if second is None else len(second)
            if overflow:
                bounds = self._windows(len(first), second_length, total - max_length, truncation, stride)
            else:
                bounds = [truncation_bounds(len(first), second_length, total - max_length, truncation,
                                            self.truncation_side)]
        return [self._row(first, second, sources, a, b, add_special_tokens, want) for a, b in bounds]

    def _row(self, first, second, sources, first_bounds, second_bounds, add_special_tokens, want):
        ids = first[first_bounds[0] : first_bounds[1]]
        spans = [Span(sources[0], 0, *first_bounds)]
        pair_ids = None
        if second is not None:
            pair_ids = second[second_bounds[0] : second_bounds[1]]
            spans.append(Span(sources[1], 1, *second_bounds))
        if add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids, pair_ids)
            layout = (1, spans[0], 1) if pair_ids is None else (1, spans[0], 1, spans[1], 1)
        else:
            sequence = ids + (pair_ids or [])
            layout = tuple(spans)
        fields = {"input_ids": sequence}
        if want["token_type_ids"]:
            fields["token_type_ids"] = (
                self.create_token_type_ids_from_sequences(ids, pair_ids) if add_special_tokens else [0] * len(sequence)
            )
        if want["special_tokens_mask"]:
            fields["special_tokens_mask"] = (
                self.get_special_tokens_mask(ids, pair_ids) if add_special_tokens else [0] * len(sequence)
            )
        return fields, layout

    def _pad_values(self):
        return {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id, "special_tokens_mask": 1,
                "attention_mask": 0}

    @staticmethod
    def _inputs(text, text_pair, is_split_into_words):
        """(first sequences, second sequences or None, whether the input was one sequence).
        A sequence is a str, or a list of str words when is_split_into_words."""
        if type(text) is str and text_pair is None and not is_split_into_words:  # the common case, first
            return [text], None, True

        def is_sequence(value):
            if is_split_into_words:
                return isinstance(value, (list, tuple)) and all(isinstance(word, str) for word in value)
            return isinstance(value, str)

        expected = "a list of str words or a list of such lists" if is_split_into_words else \
            "a str or a list of str"

        def as_batch(value, name):
            if value is None:
                return None, False
            if is_sequence(value) and (not is_split_into_words or not value or isinstance(value[0], str)):
                return [value], True
            if isinstance(value, (list, tuple)):
                return list(value), False
            raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")

        texts, single = as_batch(text, "text")
        pairs, pair_single = as_batch(text_pair, "text_pair")
        if texts is None:
            raise TypeError(f"text must be {expected}, got None")
        # A batch of pairs as `text` alone: 2-tuples (is_split_into_words: tuples of two word lists).
        if pairs is None and not single and texts and all(
                isinstance(item, (tuple, list)) and len(item) == 2 and not is_sequence(item) for item in texts):
            if not is_split_into_words or all(isinstance(item, tuple) for item in texts):
                texts, pairs = [item[0] for item in texts], [item[1] for item in texts]
        if pairs is not None and (len(pairs) != len(texts) or pair_single != single):
            raise ValueError("text_pair must match text: one sequence for one sequence, a list of the same length "
                             "for a list")
        for name, values in (("text", texts), ("text_pair", pairs or [])):
            for position, value in enumerate(values):
                if not is_sequence(value):
                    label = name if single else f"{name}[{position}]"
                    raise TypeError(f"{label} must be {'a list of str words' if is_split_into_words else 'a str'}, "
                                    f"got {type(value).__name__}" + (
                                        "" if is_split_into_words or not isinstance(value, (list, tuple))
                                        else " (pass is_split_into_words=True for words given as lists)"))
        return texts, pairs, single

    def __call__(
        self,
        text,
        text_pair=None,
        add_special_tokens=True,
        padding=False,
        truncation=None,
        max_length=None,
        stride=0,
        is_split_into_words=False,
        pad_to_multiple_of=None,
        padding_side=None,
        return_tensors=None,
        return_token_type_ids=None,
        return_attention_mask=None,
        return_overflowing_tokens=False,
        return_special_tokens_mask=False,
        return_offsets_mapping=False,
        return_length=False,
        lang="en",
        bypass_tokenizer=False,
        verbose=True,
    ):
        """Encodes a text, a batch of texts, a pair (text, text_pair) or a batch of pairs
        (lists, or a list of 2-tuples as `text`); with is_split_into_words=True each text is a
        list of words, each pre-tokenized and BPE-encoded on its own (transformers' slow
        tokenizers do the same, so the ids equal theirs). Returns a BatchEncoding with
        input_ids, attention_mask and whatever else was asked for; lists of lists for a batch,
        tensors with a batch axis when return_tensors is "pt"/"np".

        return_overflowing_tokens=True follows transformers' fast tokenizers, not its slow
        ones: the result is always batched, with one row per window (windows of the truncated
        sequence overlapping by `stride` tokens, the other sequence of a pair whole in each)
        and `overflow_to_sample_mapping` giving each row's input index. transformers' slow
        XLMTokenizer instead returns one row per input with the cut-off ids in
        `overflowing_tokens` (and fails on a batch in which only some inputs overflow); the
        row-per-window layout is what the SQuAD sliding-window recipe and the pipelines use,
        and it pads and converts to tensors. As in both, a pair with truncation='longest_first'
        cannot return overflowing tokens."""
        texts, pairs, single = self._inputs(text, text_pair, bool(is_split_into_words))
        self._check_lang(lang)
        arguments = (add_special_tokens, padding, truncation, max_length, stride, is_split_into_words,
                     pad_to_multiple_of, padding_side, return_tensors, return_token_type_ids, return_attention_mask,
                     return_overflowing_tokens, return_special_tokens_mask, return_offsets_mapping, return_length,
                     lang, bypass_tokenizer)
        plan = self._call_plan(arguments, single, pairs is not None)
        if plan.cpp_options is None or not texts:
            return self._python_call(texts, pairs, single, plan)
        if plan.pre_tokenizer is not None:
            out = encode_texts(self.bpe_model, plan.added_tokens, plan.pre_tokenizer, texts, pairs, plan.cpp_options)
        elif plan.word_spans:
            sequences, spans = self._spanned_word_sequences(texts + (pairs or []), lang)
            out = encode_words(self.bpe_model, sequences, pairs is not None, plan.cpp_options, spans)
        else:
            out = encode_words(self.bpe_model, self._word_sequences(texts + (pairs or []), lang), pairs is not None,
                               plan.cpp_options)
        return self._fast_encoding(out, plan)

    # ------------------------------------------------------------------ call plans

    def _call_plan(self, arguments, single, has_pairs):
        """The _CallPlan of __call__'s `arguments` (all but the texts) with this tokenizer's
        current state, made and checked once, then reused for the same values of the same types
        (True and 1 are equal but are not the same argument) and the same state."""
        state = (self.bos_token, self.sep_token, self.pad_token, self._added.version, self._padding_side,
                 self._truncation_side, self._model_max_length, self._num_threads,
                 self.pre_tokenizer.do_lowercase_and_remove_accent)
        try:
            key = (arguments, tuple(map(type, arguments)), single, has_pairs, state)
            plan = self._plans.get(key)
        except TypeError:  # an unhashable argument: checked (and refused or read) on the way below
            key = plan = None
        if plan is None:
            plan = self._make_call_plan(*arguments, single=single, has_pairs=has_pairs)
            if key is not None:
                if len(self._plans) >= MAX_CALL_PLANS:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    def _make_call_plan(self, add_special_tokens, padding, truncation, max_length, stride, is_split_into_words,
                        pad_to_multiple_of, padding_side, return_tensors, return_token_type_ids,
                        return_attention_mask, return_overflowing_tokens, return_special_tokens_mask,
                        return_offsets_mapping, return_length, lang, bypass_tokenizer, *, single, has_pairs):
        """__call__'s options checked and resolved (strategies, defaults, the path that runs)."""
        if padding_side is not None:
            check_side("padding_side", padding_side)
        if pad_to_multiple_of is not None:
            check_count("pad_to_multiple_of", pad_to_multiple_of)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
            raise ValueError(f"stride must be a non-negative int, got {stride!r}")
        return_tensors = check_return_tensors(return_tensors)
        padding, truncation, max_length = check_strategies(padding, truncation, max_length, self.model_max_length)
        plan = _CallPlan(
            add_special_tokens=bool(add_special_tokens), padding=padding, truncation=truncation,
            max_length=max_length, stride=stride, is_split_into_words=bool(is_split_into_words),
            pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side or self.padding_side,
            return_tensors=return_tensors, want={"token_type_ids": bool(return_token_type_ids),
                                                 "special_tokens_mask": bool(return_special_tokens_mask)},
            want_mask=True if return_attention_mask is None else bool(return_attention_mask),
            overflow=bool(return_overflowing_tokens), return_offsets=bool(return_offsets_mapping),
            return_length=bool(return_length), lang=lang, bypass_tokenizer=bypass_tokenizer,
            batched=not single or bool(return_overflowing_tokens), has_pairs=has_pairs)
        special_ids = self.bos_token_id, self.sep_token_id, self.pad_token_id
        covered = self._fast_path_covers(plan.is_split_into_words, plan.add_special_tokens, padding, special_ids)
        # (without is_split_into_words, `covered` is what the offsets depend on)
        plan.offsets_reason = ("is_split_into_words=True has no character offsets" if is_split_into_words else
                               OFFSETS_NEED_MOSES if covered else OFFSETS_NEED_CPP)
        if covered:
            plan.pre_tokenizer = self._cpp_pre_tokenizer(lang, bypass_tokenizer)
            if plan.pre_tokenizer is not None:
                plan.added_tokens = self._cpp_added_tokens()
            # zh / th / ja: words from Python; their spans too when offsets are asked for (they cost
            # a Python tuple per character, so only then)
            plan.word_spans = plan.pre_tokenizer is None and plan.return_offsets and moses.available()
        if return_offsets_mapping and plan.pre_tokenizer is None and not plan.word_spans:
            raise NotImplementedError(f"return_offsets_mapping=True: {plan.offsets_reason}")
        if covered:
            bos_id, sep_id, pad_id = special_ids
            plan.cpp_options = EncodeOptions({
                "add_special_tokens": plan.add_special_tokens, "bos_id": bos_id or 0, "sep_id": sep_id or 0,
                "pad_id": pad_id or 0, "truncation": truncation, "max_length": max_length, "stride": stride,
                "truncation_side": self.truncation_side, "overflow": plan.overflow, "padding": padding,
                "pad_to_multiple_of": pad_to_multiple_of, "padding_side": plan.padding_side,
                "token_type_ids": plan.want["token_type_ids"],
                "special_tokens_mask": plan.want["special_tokens_mask"], "attention_mask": plan.want_mask,
                "offsets": plan.pre_tokenizer is not None or plan.word_spans, "num_threads": self.num_threads})
            plan.output_keys = ["input_ids"] + [key for key in ("token_type_ids", "special_tokens_mask")
                                                if plan.want[key]]
            plan.output_keys += (["attention_mask"] if plan.want_mask else []) + (
                ["offset_mapping"] if plan.return_offsets else [])
            plan.has_offsets = plan.pre_tokenizer is not None or plan.word_spans
            plan.maps = _FastMaps(plan, self)
        return plan

    # ------------------------------------------------------------------ Python path (the reference)

    def _python_call(self, texts, pairs, single, plan):
        encoded, word_ids_of = self._encode_texts(texts + (pairs or []), plan.lang, plan.bypass_tokenizer,
                                                  plan.is_split_into_words)
        rows, samples = [], []
        for index, first in enumerate(encoded[: len(texts)]):
            second = None if pairs is None else encoded[len(texts) + index]
            sources = (index, None if pairs is None else len(texts) + index)
            sample_rows = self._rows(first, second, sources, plan.add_special_tokens, plan.truncation,
                                     plan.max_length, plan.stride, plan.overflow, plan.want)
            rows.extend(sample_rows)
            samples.extend([index] * len(sample_rows))

        lengths = [len(fields["input_ids"]) for fields, _ in rows]
        target = pad_target(lengths, plan.padding, plan.max_length, plan.pad_to_multiple_of)
        side = plan.padding_side
        layouts = []
        for fields, layout in rows:
            _, added = pad_fields(fields, target, side, self._pad_values(), "input_ids", plan.want_mask)
            layouts.append(layout if not added else (added, *layout) if side == "left" else (*layout, added))
        if plan.return_length:  # transformers: padded length for one text, unpadded in a batch
            for (fields, _), length in zip(rows, lengths):
                fields["length"] = length if plan.batched else len(fields["input_ids"])

        keys = rows[0][0].keys() if rows else ["input_ids"] + (["attention_mask"] if plan.want_mask else [])
        if plan.batched:
            output = {key: [fields[key] for fields, _ in rows] for key in keys}
            if plan.return_offsets:  # no rows (an empty batch): offsets need no pre-tokenizer
                output["offset_mapping"] = []
            if plan.overflow:
                output["overflow_to_sample_mapping"] = samples
        else:
            output = dict(rows[0][0])
        if plan.return_tensors is not None:
            output = {key: to_tensor([value] if not plan.batched and key != "length" else value,
                                     plan.return_tensors, key)
                      for key, value in output.items()}
        maps = EncodingMaps(layouts, word_ids_of, self.convert_ids_to_tokens, plan.offsets_reason)
        return BatchEncoding(output, maps, n_sequences=2 if plan.has_pairs else 1)

    # ------------------------------------------------------------------ C++ batch path

    def _fast_path_covers(self, is_split_into_words, add_special_tokens, padding, special_ids):
        """Whether one C++ call (csrc/batch_encoder.cpp) encodes a call with these options; the
        Python path is the reference and takes the rest: the pure-Python backend,
        is_split_into_words, an empty batch (decided per call), and special or padding tokens
        that the tokenizer lacks (special_ids: the bos, sep and pad ids)."""
        bos_id, sep_id, pad_id = special_ids
        return (CppBPEModel is not None and isinstance(self.bpe_model, CppBPEModel) and not is_split_into_words
                and (not add_special_tokens or None not in (bos_id, sep_id))
                and (padding is None or pad_id is not None))

    def _cpp_pre_tokenizer(self, lang, bypass_tokenizer):
        """The C++ pre-tokenizer of this call, or None where the words come from Python: the
        whitespace split for bypass_tokenizer=True, else the Moses pipeline of `lang`
        (csrc/moses.cpp); zh / th / ja keep their Python segmenters."""
        if bypass_tokenizer:
            return _whitespace_split()
        if lang in XLMPreTokenizer.CUSTOM_LANGUAGES or not moses.available():
            return None
        return moses.pipeline(lang, self.do_lowercase_and_remove_accent)

    def _cpp_added_tokens(self):
        """The C++ copy of the added tokens, rebuilt after an addition."""
        if self._cpp_added is None or self._cpp_added[0] != self._added.version:
            self._cpp_added = (self._added.version, CppAddedTokens(dict(self._added.encoder)))
        return self._cpp_added[1]

    def _word_sequences(self, sequences, lang):
        """Texts -> [added token id | words of the text between] per text (Python pre-tokenizer)."""
        layouts, pieces = [], []
        for sequence in sequences:
            layout = []
            for added, piece in self._pieces(sequence):
                if added is None:
                    layout.append(len(pieces))
                    pieces.append(piece)
                else:
                    layout.append(-1 - self._added.encoder[added])
            layouts.append(layout)
        words = self._pre_tokenize(pieces, lang, False)
        return [[words[item] if item >= 0 else -1 - item for item in layout] for layout in layouts]

    def _spanned_word_sequences(self, sequences, lang):
        """(sequences, spans) of encode_words with offsets: _word_sequences' layout, the words
        from moses.CppPreTokenizer (the reference's words, with the span of each character), and
        per text one int64 array of the [start, end) of each added token and each character of
        each word, in order."""
        import numpy as np

        pre_tokenizer = moses.CppPreTokenizer(self.do_lowercase_and_remove_accent)
        layouts, all_spans = [], []
        for sequence in sequences:
            layout, spans, at = [], [], 0
            for added, piece in self._pieces(sequence):
                if added is not None:
                    layout.append(self._added.encoder[added])
                    spans.append((at, at + len(added)))
                    at += len(added)
                    continue
                words, word_spans = pre_tokenizer.words_and_spans(piece, lang)
                layout.append(words)
                spans.extend((start + at, end + at) for char_spans in word_spans for start, end in char_spans)
                at += len(piece)
            layouts.append(layout)
            all_spans.append(np.array(spans, dtype=np.int64).reshape(-1))
        return layouts, all_spans

    def _fast_encoding(self, out, plan):
        """encode_texts / encode_words' EncodedRows -> the BatchEncoding of the Python path."""
        rows, width, batched, return_tensors = out.rows, out.width, plan.batched, plan.return_tensors
        output = {}
        for key in plan.output_keys:
            if return_tensors is None and key != "offset_mapping":
                value = out.row_lists(key)
                output[key] = value if batched else value[0]
                continue
            value = _as_rows(out, key, rows, width)
            if return_tensors is None or width is None:
                value = [row.tolist() for row in value] if width is None else value.tolist()
                if key == "offset_mapping":
                    value = [[tuple(pair) for pair in row] for row in value]
                if return_tensors is not None:  # rows of several lengths: what the Python path gives or raises
                    value = to_tensor(value, return_tensors, key)
                elif not batched:
                    value = value[0]
            elif return_tensors == "pt":
                import torch

                value = torch.from_numpy(value)
            output[key] = value
        if plan.return_length:  # transformers: padded length for one text, unpadded in a batch
            length = out.array("length").tolist() if batched else int(out.array("row_starts")[1])
            output["length"] = to_tensor(length, return_tensors, "length") if return_tensors else length
        if batched and plan.overflow:
            samples = out.array("overflow_to_sample_mapping").tolist()
            output["overflow_to_sample_mapping"] = to_tensor(samples, return_tensors, "x") if return_tensors else \
                samples
        return BatchEncoding(output, plan.maps, 2 if plan.has_pairs else 1, out)

    def encode(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None,
               max_length=None, stride=0, padding_side=None, return_tensors=None, lang="en", bypass_tokenizer=False):
        """Ids of one text (or pair)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding,
                    truncation=truncation, max_length=max_length, stride=stride, padding_side=padding_side,
                    return_tensors=return_tensors, return_attention_mask=False, lang=lang,
                    bypass_tokenizer=bypass_tokenizer)["input_ids"]

    # transformers 4.x's names, which its users' code still calls (transformers 5 removed them)
    def encode_plus(self, text, text_pair=None, **kwargs):
        """__call__ on one text (or pair)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs):
        """__call__ on a batch of texts, or of (text, text_pair) pairs (all of one kind)."""
        batch = batch_text_or_text_pairs
        if not isinstance(batch, (list, tuple)):
            raise TypeError(f"batch_text_or_text_pairs must be a list, got {type(batch).__name__}")
        is_pair = [isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(t, str) for t in item)
                   for item in batch]
        if batch and all(is_pair) and not kwargs.get("is_split_into_words"):
            return self([first for first, _ in batch], [second for _, second in batch], **kwargs)
        if any(is_pair) and not kwargs.get("is_split_into_words"):
            raise ValueError("batch_text_or_text_pairs mixes texts and (text, text_pair) pairs: pass one kind")
        return self(list(batch), **kwargs)

    @property
    def max_len_single_sentence(self):
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self):
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    # ------------------------------------------------------------------ padding

    def pad(self, encoded_inputs, padding=True, max_length=None, pad_to_multiple_of=None, padding_side=None,
            return_attention_mask=None, return_tensors=None, verbose=True):
        """Pads encoded inputs, as transformers' pad: one encoding (a dict of lists), a batch (a
        BatchEncoding/dict of lists of lists) or a list of dicts (features, as data collators
        pass them; values may be lists, tensors or numpy arrays). input_ids get pad_token_id,
        attention_mask 0 (created where missing unless return_attention_mask=False),
        token_type_ids pad_token_type_id, special_tokens_mask 1; other keys (labels, ...) are
        left as they are. Tensors/arrays in, the same kind out unless return_tensors says."""
        inputs = batch_from_features(encoded_inputs)
        main = self.model_input_names[0]
        if main not in inputs:
            raise ValueError(f"encoded_inputs must include {main!r}, got keys {list(inputs)}")
        required = inputs[main]
        if required is None or (hasattr(required, "__len__") and len(required) == 0):
            if return_attention_mask:
                inputs["attention_mask"] = []
            return BatchEncoding(inputs)
        if return_tensors is None:
            return_tensors = tensor_type_of(required)
        return_tensors = check_return_tensors(return_tensors)
        if padding_side is not None:
            check_side("padding_side", padding_side)
        if pad_to_multiple_of is not None:
            check_count("pad_to_multiple_of", pad_to_multiple_of)
        padding, _, max_length = check_strategies(padding, None, max_length, self.model_max_length)
        inputs = {key: to_python(value) for key, value in inputs.items()}
        required = inputs[main]

        if not isinstance(required[0], (list, tuple)):  # one encoding
            padded = self._pad(inputs, max_length, padding, pad_to_multiple_of, padding_side, return_attention_mask)
            return BatchEncoding({key: to_tensor(value, return_tensors, key) if return_tensors else value
                                  for key, value in padded.items()})
        for key, value in inputs.items():
            if not isinstance(value, list) or len(value) != len(required):
                raise ValueError(f"encoded_inputs[{key!r}] must have one entry per example ({len(required)}), got "
                                 f"{len(value) if isinstance(value, list) else type(value).__name__}")
        if padding == "longest":
            padding, max_length = "max_length", max(len(row) for row in required)
        columns = {}
        for index in range(len(required)):
            row = {key: value[index] for key, value in inputs.items()}
            for key, value in self._pad(row, max_length, padding, pad_to_multiple_of, padding_side,
                                        return_attention_mask).items():
                columns.setdefault(key, []).append(value)
        return BatchEncoding({key: to_tensor(value, return_tensors, key) if return_tensors else value
                              for key, value in columns.items()})

    def _pad(self, encoded_inputs, max_length=None, padding_strategy="do_not_pad", pad_to_multiple_of=None,
             padding_side=None, return_attention_mask=None):
        """transformers' _pad: one encoding (a dict of lists) padded to max_length ("max_length"),
        its own length rounded up to pad_to_multiple_of ("longest"), or not at all; returns it."""
        padding_strategy = getattr(padding_strategy, "value", padding_strategy)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        size = len(encoded_inputs[self.model_input_names[0]])
        target = None
        if padding_strategy in ("longest", "max_length"):
            target = size if padding_strategy == "longest" else max_length
            target = pad_target([target], "longest", None, pad_to_multiple_of)
        fields = dict(encoded_inputs)
        pad_fields(fields, target, padding_side or self.padding_side, self._pad_values(), self.model_input_names[0],
                   return_attention_mask)
        return fields

    # ------------------------------------------------------------------ decoding

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens).replace("</w>", " ").strip()

    @staticmethod
    def clean_up_tokenization(text):
        for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                              (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(before, after)
        return text

    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        """Ids (int, list, numpy array or tensor) -> text: tokens joined, "</w>" -> " ", stripped.
        clean_up_tokenization_spaces=None reads the attribute of that name (False for XLM)."""
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        token_ids = _token_ids([token_ids] if isinstance(token_ids, int) else token_ids, "token_ids")
        text = self.convert_tokens_to_string(self._checked_ids_to_tokens(token_ids, skip_special_tokens))
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in sequences]

    # ------------------------------------------------------------------ files

    def save_vocabulary(self, save_directory, filename_prefix=None):
        """Writes vocab.json and merges.txt in transformers' format; returns their paths."""
        prefix = filename_prefix + "-" if filename_prefix else ""
        vocab_path = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["vocab_file"])
        merges_path = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["merges_file"])
        # A lone surrogate in a key has no UTF-8 form; backslashreplace writes it as its JSON escape.
        with open(vocab_path, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        ranks = {pair: rank for rank, pair in enumerate(self.merges)}  # a repeated merge keeps its last rank
        with open(merges_path, "w", encoding="utf-8") as handle:
            handle.writelines(" ".join(pair) + "\n" for pair in sorted(ranks, key=ranks.get))
        return vocab_path, merges_path

    def save_pretrained(self, save_directory, filename_prefix=None):
        """Writes tokenizer_config.json (with added_tokens_decoder), vocab.json, merges.txt and,
        when tokens were added after the vocabulary, added_tokens.json: the files transformers
        writes, so that each reads the other's directory."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory must be a directory, {save_directory} is a file")
        os.makedirs(save_directory, exist_ok=True)
        config = dict(self.init_kwargs)
        config.update(
            tokenizer_class="XLMTokenizer",
            do_lowercase_and_remove_accent=self.do_lowercase_and_remove_accent,
            lang2id=self.lang2id,
            id2lang=self.id2lang,
            additional_special_tokens=self.additional_special_tokens,
            added_tokens_decoder={str(index): token.to_json() for index, token in self.added_tokens_decoder.items()},
            model_max_length=self.model_max_length,
            padding_side=self.padding_side,
            truncation_side=self.truncation_side,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
            **self.special_tokens_map,
        )
        prefix = filename_prefix + "-" if filename_prefix else ""
        paths = []
        added = {token: index for token, index in self._added.encoder.items() if index >= self.vocab_size}
        for name, content in ((TOKENIZER_CONFIG_FILE, config), (ADDED_TOKENS_FILE, added)):
            if content:
                paths.append(os.path.join(save_directory, prefix + name if name == ADDED_TOKENS_FILE else name))
                with open(paths[-1], "w", encoding="utf-8", errors="backslashreplace") as handle:
                    handle.write(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return tuple(paths) + self.save_vocabulary(save_directory, filename_prefix)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, cache_dir=None, revision="main", local_files_only=None,
                        **kwargs):
        """Loads a local directory, or a hub id already in the local Hugging Face cache
        (HF_HUB_CACHE / HF_HOME, or `cache_dir`; `revision` a branch, tag or commit), with
        vocab.json, merges.txt and (optionally) tokenizer_config.json and added_tokens.json;
        keyword arguments override the config. Never downloads (local_files_only is accepted
        for transformers' callers and changes nothing)."""
        directory = resolve_model_dir(pretrained_model_name_or_path, cache_dir=cache_dir, revision=revision)
        config = _read_json_object(os.path.join(directory, TOKENIZER_CONFIG_FILE), "tokenizer_config")
        arguments = {key: config[key] for key in (
            *SPECIAL_TOKENS_ATTRIBUTES, "lang2id", "id2lang", "do_lowercase_and_remove_accent", "model_max_length",
            "padding_side", "truncation_side", "clean_up_tokenization_spaces", "added_tokens_decoder",
        ) if key in config}
        extra = config.get("additional_special_tokens", config.get("extra_special_tokens"))
        if isinstance(extra, dict):  # transformers 4.x: named extra special tokens
            extra = list(extra.values())
        if extra is not None:
            arguments["additional_special_tokens"] = [t["content"] if isinstance(t, dict) else t for t in extra]
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            if isinstance(arguments.get(key), dict):  # AddedToken serialised by older transformers
                arguments[key] = arguments[key]["content"]
        # added_tokens.json (older transformers' only record of them): its tokens, unless the config has them.
        added = _read_json_object(os.path.join(directory, ADDED_TOKENS_FILE), "added_tokens_file")
        decoder = dict(arguments.get("added_tokens_decoder") or {})
        known = {record["content"] if isinstance(record, dict) else record for record in decoder.values()}
        for token, index in added.items():
            if token not in known:
                decoder[str(index)] = {"content": token, "special": token in arguments.get(
                    "additional_special_tokens", ()), "normalized": True}
        arguments["added_tokens_decoder"] = decoder
        arguments["name_or_path"] = os.fspath(pretrained_model_name_or_path)
        arguments.update(kwargs)
        files = {name: os.path.join(directory, filename) for name, filename in VOCAB_FILES_NAMES.items()}
        for name, path in files.items():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"from_pretrained: {directory} has no {os.path.basename(path)} ({name})")
        return cls(files["vocab_file"], files["merges_file"], **arguments)

    @classmethod
    def from_demo(cls, **kwargs):
        """A small tokenizer shipped with the package (xlm_fast/data/demo_vocab.json and
        demo_merges.txt, ~1500 merges learned from the sample corpus), with lang2id/id2lang
        for the corpus languages. For demos and tests, not for real checkpoints."""
        lang2id = {lang: index for index, lang in enumerate(DEMO_LANGUAGES)}
        kwargs.setdefault("lang2id", lang2id)
        kwargs.setdefault("id2lang", {index: lang for lang, index in lang2id.items()})
        return cls(os.path.join(DEMO_DIR, "demo_vocab.json"), os.path.join(DEMO_DIR, "demo_merges.txt"), **kwargs)

    def __repr__(self):
        backend = "cpp" if CppBPEModel is not None and isinstance(self.bpe_model, CppBPEModel) else "python"
        return (f"XLMTokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"do_lowercase_and_remove_accent={self.do_lowercase_and_remove_accent}, bpe_backend={backend!r})")


def _read_json_object(path, argument):
    """The JSON object in `path`, {} when there is no such file; ValueError naming it otherwise."""
    if not os.path.isfile(path):
        return {}
    try:
        content = json.loads(_read_text(path, argument))
    except json.JSONDecodeError as error:
        raise ValueError(f"{argument}: {path} is not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{argument}: {path} must hold a JSON object")
    return content
