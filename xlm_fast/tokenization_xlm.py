"""XLMTokenizer: transformers' XLM tokenizer API and token ids, with a C++ BPE core.

Pipeline per text (same steps and order as transformers' slow XLMTokenizer):
  split out special tokens (never tokenized)
  -> front, in Python: unicode punctuation -> ASCII, Moses punctuation normalisation,
     drop non-printing characters, Romanian normalisation (ro), Moses tokenisation
     (sacremoses), or jieba (zh) / PyThaiNLP (th) / KyTea (ja) word segmentation
  -> lowercase + strip accents (optional)
  -> BPE over words with "</w>" end-of-word markers, in xlm_fast._C.BPEModel (C++, GIL
     released, threaded over a batch) or its pure-Python twin xlm_fast.bpe.BPEModel.

Unlike transformers 5.x, whose tokenize() drops `lang`/`bypass_tokenizer` before they
reach the language-specific code, `lang=` here selects the pipeline as documented.
"""

import bisect
import itertools
import json
import operator
import os
import re
import threading
import unicodedata

import sacremoses

from .bpe import MAX_THREADS
from .bpe import BPEModel as PyBPEModel

try:
    from ._C import BPEModel as CppBPEModel
except ImportError:  # extension not built: the pure-Python twin gives the same ids
    CppBPEModel = None

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
DEFAULT_ADDITIONAL_SPECIAL_TOKENS = [f"<special{i}>" for i in range(10)]
# transformers' model_max_length when none is configured, and its "no limit" threshold.
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
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


# ----------------------------------------------------------------------------- front


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


# ----------------------------------------------------------------------------- outputs


def _pre_tokenizer_worker(connection, do_lowercase_and_remove_accent):
    """Worker process loop: receives [(text, lang, bypass)], sends back ("ok", word lists) or
    ("error", exception); None stops it."""
    pre = XLMPreTokenizer(do_lowercase_and_remove_accent)
    while True:
        items = connection.recv()
        if items is None:
            return
        try:
            connection.send(("ok", [pre(text, lang, bypass) for text, lang, bypass in items]))
        except Exception as error:  # noqa: BLE001 - re-raised in the caller
            connection.send(("error", error))


class _PreTokenizerPool:
    """Forked processes that run the Python front on shares of a batch. Talks to each over its
    own pipe from the calling thread: a pool with feeder threads (concurrent.futures,
    multiprocessing.Pool) waits for the GIL that this thread holds while it runs its own share."""

    def __init__(self, size, do_lowercase_and_remove_accent):
        import multiprocessing
        import weakref

        context = multiprocessing.get_context("fork")
        self.size = size
        self._lock = threading.Lock()
        self._connections = []
        for _ in range(size):
            parent, child = context.Pipe()
            context.Process(target=_pre_tokenizer_worker, args=(child, do_lowercase_and_remove_accent),
                            daemon=True).start()
            child.close()
            self._connections.append(parent)
        weakref.finalize(self, _PreTokenizerPool._stop, self._connections)

    @staticmethod
    def _stop(connections):
        for connection in connections:
            try:
                connection.send(None)
                connection.close()
            except OSError:
                pass

    def map(self, shares, local):
        """Word lists of shares[0] (computed here by `local`) + shares[1:] (in the workers)."""
        with self._lock:
            for connection, share in zip(self._connections, shares[1:]):
                connection.send(share)
            words = local(shares[0])
            replies = [connection.recv() for connection in self._connections[: len(shares) - 1]]
        for status, payload in replies:
            if status == "error":
                raise payload
            words.extend(payload)
        return words


class BatchEncoding(dict):
    """The encoder's output: a dict (input_ids, attention_mask, ...) with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}") from None

    def __getstate__(self):
        return dict(self)

    def __setstate__(self, state):
        self.update(state)

    def to(self, device):
        """Moves every torch tensor to `device` (in place); returns self."""
        for key, value in self.items():
            if hasattr(value, "to") and hasattr(value, "device"):
                self[key] = value.to(device)
        return self


def _to_tensor(values, return_tensors, key):
    if values and isinstance(values[0], list) and len({len(row) for row in values}) > 1:
        raise ValueError(f"cannot make a tensor of '{key}': sequences differ in length; use padding=True")
    if return_tensors == "pt":
        import torch

        return torch.tensor(values, dtype=torch.long)
    import numpy as np

    return np.array(values, dtype=np.int64)


# ----------------------------------------------------------------------------- tokenizer


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


def _check_side(name, value):
    if value not in ("right", "left"):
        raise ValueError(f"{name} must be 'right' or 'left', got {value!r}")
    return value


def _check_count(name, value, most=None):
    """A positive int, at most `most` (not a bool, nor a float that int() would truncate)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (most is not None and value > most):
        bound = "" if most is None else f" <= {most}"
        raise ValueError(f"{name} must be a positive int{bound}, got {value!r}")
    return value


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


class XLMTokenizer:
    """XLM tokenizer (Moses / jieba / PyThaiNLP / KyTea front + BPE) with transformers' API.

    Args match transformers.XLMTokenizer. Extra keyword arguments read here:
    `model_max_length`, `padding_side`, `truncation_side`, `num_threads` (BPE threads for a
    batch; default all cores), `num_workers` (processes sharing the Python front of a batch of
    at least MIN_TEXTS_PER_WORKER texts per process: the front holds the GIL, so only processes
    use more cores; default 1 = none), `bpe_backend` ("auto": C++ if built, "cpp", "python").
    """

    MIN_TEXTS_PER_WORKER = 8

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

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

        self.unk_token, self.bos_token, self.sep_token = unk_token, bos_token, sep_token
        self.pad_token, self.cls_token, self.mask_token = pad_token, cls_token, mask_token
        self.additional_special_tokens = list(additional_special_tokens or [])
        for name, token in self._special_tokens_items():
            if not isinstance(token, str) or not token:
                raise TypeError(f"{name} must be a non-empty str, got {token!r}")

        self.lang2id, self.id2lang = lang2id, id2lang
        if lang2id is not None and id2lang is not None and len(lang2id) != len(id2lang):
            raise ValueError(f"lang2id ({len(lang2id)} languages) and id2lang ({len(id2lang)}) differ in size")

        self._pool = None
        self._pool_lock = threading.Lock()
        self.pre_tokenizer = XLMPreTokenizer(bool(do_lowercase_and_remove_accent))
        self.model_max_length = kwargs.pop("model_max_length", VERY_LARGE_INTEGER)
        self.padding_side = kwargs.pop("padding_side", "right")
        self.truncation_side = kwargs.pop("truncation_side", "right")
        self.num_threads = kwargs.pop("num_threads", min(os.cpu_count() or 1, MAX_THREADS))
        self.num_workers = kwargs.pop("num_workers", 1)
        self._backend = kwargs.pop("bpe_backend", "auto")
        self.init_kwargs = kwargs  # other transformers options, kept for save_pretrained

        # Special tokens missing from the vocabulary are appended after it (as transformers does).
        self.added_tokens_encoder = {}
        for token in self.all_special_tokens:
            if token not in self.encoder:
                self.added_tokens_encoder[token] = len(self.encoder) + len(self.added_tokens_encoder)
        self.added_tokens_decoder = {index: token for token, index in self.added_tokens_encoder.items()}
        self._special_ids = {token: self._token_to_id(token) for token in self.all_special_tokens}
        # Longest first, so that the leftmost, longest special token wins (transformers' trie).
        alternatives = sorted(self._special_ids, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self.bpe_model = self._make_bpe_model(self._backend)

    def __getstate__(self):  # the C++ core, the process pool and its lock are rebuilt, not pickled
        state = dict(self.__dict__)
        state["bpe_model"] = state["_pool"] = state["_pool_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()
        self.bpe_model = self._make_bpe_model(self._backend)

    # ------------------------------------------------------------------ validated options
    # Checked on every assignment, construction included, so a bad value set later is refused too.
    lang2id = _CheckedOption(lambda name, value: _check_lang2id(value))
    id2lang = _CheckedOption(lambda name, value: _id2lang_with_int_keys(value))
    padding_side = _CheckedOption(_check_side)
    truncation_side = _CheckedOption(_check_side)
    # None means no limit in transformers, which stores its very large sentinel instead.
    model_max_length = _CheckedOption(
        lambda name, value: VERY_LARGE_INTEGER if value is None else _check_count(name, value))
    num_threads = _CheckedOption(lambda name, value: _check_count(name, value, MAX_THREADS))
    # The pool's size is fixed when it starts.
    num_workers = _CheckedOption(_check_count, after_set=lambda tokenizer: tokenizer._drop_pool())

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
        unk_id = self.encoder.get(self.unk_token, self.added_tokens_encoder.get(self.unk_token))
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

    def _special_tokens_items(self):
        names = ("bos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
        items = [(name, getattr(self, name)) for name in names]
        return items + [("additional_special_tokens", token) for token in self.additional_special_tokens]

    @property
    def all_special_tokens(self):
        return list(dict.fromkeys(token for _, token in self._special_tokens_items()))

    @property
    def all_special_ids(self):
        return [self._token_to_id(token) for token in self.all_special_tokens]

    @property
    def special_tokens_map(self):
        names = ("bos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
        return {name: getattr(self, name) for name in names}

    unk_token_id = property(lambda self: self._token_to_id(self.unk_token))
    bos_token_id = property(lambda self: self._token_to_id(self.bos_token))
    sep_token_id = property(lambda self: self._token_to_id(self.sep_token))
    pad_token_id = property(lambda self: self._token_to_id(self.pad_token))
    cls_token_id = property(lambda self: self._token_to_id(self.cls_token))
    mask_token_id = property(lambda self: self._token_to_id(self.mask_token))
    additional_special_tokens_ids = property(
        lambda self: [self._token_to_id(token) for token in self.additional_special_tokens]
    )
    pad_token_type_id = 0

    @property
    def do_lower_case(self):
        return self.do_lowercase_and_remove_accent

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self):
        return len(self.encoder)

    def __len__(self):
        return len(self.encoder) + len(self.added_tokens_encoder)

    def get_vocab(self):
        return dict(self.encoder, **self.added_tokens_encoder)

    def _token_to_id(self, token):
        index = self.added_tokens_encoder.get(token)
        if index is None:
            index = self.encoder.get(token)
        if index is None:
            index = self.added_tokens_encoder.get(self.unk_token, self.encoder.get(self.unk_token))
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
        token = self.added_tokens_decoder.get(index)
        return token if token is not None else self.decoder.get(index, self.unk_token)

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

    def _pieces(self, text):
        """Yields (special token, None) for each special token, (None, text) for the text between."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        for position, piece in enumerate(self._special_split.split(text)):
            if piece:
                yield (piece, None) if position % 2 else (None, piece)

    def tokenize(self, text, lang="en", bypass_tokenizer=False):
        """Text -> BPE tokens ("</w>" ends a word); special tokens are kept whole."""
        self._check_lang(lang)
        tokens = []
        for special, piece in self._pieces(text):
            if special is not None:
                tokens.append(special)
                continue
            for word in self.pre_tokenizer(piece, lang, bypass_tokenizer):
                tokens.extend(self.bpe_model.bpe(word))
        return tokens

    def _encode_texts(self, texts, lang, bypass_tokenizer):
        """Texts -> ids without special tokens added. All words of the batch go to the BPE core
        in one call (threaded, GIL released)."""
        self._check_lang(lang)
        layouts, pieces = [], []  # per text: special ids and None for each piece of plain text
        for text in texts:
            layout = []
            for special, piece in self._pieces(text):
                layout.append(None if special is None else self._special_ids[special])
                if special is None:
                    pieces.append(piece)
            layouts.append(layout)
        words = self._pre_tokenize(pieces, lang, bypass_tokenizer)
        encoded = iter(self.bpe_model.encode_batch(words, self.num_threads))
        results = []
        for layout in layouts:
            if layout == [None]:
                results.append(next(encoded))
                continue
            ids = []
            for special in layout:
                if special is None:
                    ids.extend(next(encoded))
                else:
                    ids.append(special)
            results.append(ids)
        return results

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

    def _strategies(self, padding, truncation, max_length):
        """transformers' rules: (padding in {None, "longest", "max_length"}, truncation, max_length)."""
        if max_length is not None and (type(max_length) is not int or max_length < 0):
            raise ValueError(f"max_length must be a non-negative int or None, got {max_length!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"
        paddings = {True: "longest", False: None, None: None, "longest": "longest",
                    "max_length": "max_length", "do_not_pad": None}
        truncations = {True: "longest_first", False: None, None: None, "longest_first": "longest_first",
                       "only_first": "only_first", "only_second": "only_second", "do_not_truncate": None}
        if not isinstance(padding, (bool, str, type(None))) or padding not in paddings:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if not isinstance(truncation, (bool, str, type(None))) or truncation not in truncations:
            raise ValueError(
                "truncation must be True, False, 'longest_first', 'only_first', 'only_second' or "
                f"'do_not_truncate', got {truncation!r}"
            )
        padding, truncation = paddings[padding], truncations[truncation]
        if max_length is None:
            limit = None if self.model_max_length > LARGE_INTEGER else self.model_max_length
            if padding == "max_length":
                padding, max_length = (None, None) if limit is None else (padding, limit)
            if truncation is not None:
                truncation, max_length = (None, None) if limit is None else (truncation, limit)
        return padding, truncation, max_length

    def _truncate(self, ids, pair_ids, remove, strategy):
        right = self.truncation_side == "right"
        if strategy == "only_first" or (strategy == "longest_first" and pair_ids is None):
            ids = ids[:-remove] if right else ids[remove:]
        elif strategy == "longest_first":
            first_remove = min(abs(len(pair_ids) - len(ids)), remove)
            second_remove = remove - first_remove
            if len(ids) > len(pair_ids):
                ids_remove, pair_remove = first_remove + second_remove // 2, second_remove - second_remove // 2
            else:
                ids_remove, pair_remove = second_remove // 2, first_remove + second_remove - second_remove // 2
            if right:
                ids = ids[:-ids_remove] if ids_remove > 0 else ids
                pair_ids = pair_ids[:-pair_remove] if pair_ids and pair_remove > 0 else pair_ids
            else:
                ids, pair_ids = ids[ids_remove:], pair_ids[pair_remove:]
        elif strategy == "only_second" and pair_ids:
            pair_ids = pair_ids[:-remove] if right else pair_ids[remove:]
        return ids, pair_ids

    def _prepare(self, ids, pair_ids, add_special_tokens, truncation, max_length, want):
        """One sequence (or pair) of ids -> its unpadded fields (transformers' prepare_for_model)."""
        specials = self.num_special_tokens_to_add(pair_ids is not None) if add_special_tokens else 0
        total = len(ids) + len(pair_ids or []) + specials
        if truncation is not None and max_length and total > max_length:
            ids, pair_ids = self._truncate(ids, pair_ids, total - max_length, truncation)
        if add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids, pair_ids)
        else:
            sequence = ids + (pair_ids or [])
        fields = {"input_ids": sequence}
        if want["token_type_ids"]:
            fields["token_type_ids"] = (
                self.create_token_type_ids_from_sequences(ids, pair_ids) if add_special_tokens else [0] * len(sequence)
            )
        if want["special_tokens_mask"]:
            fields["special_tokens_mask"] = (
                self.get_special_tokens_mask(ids, pair_ids) if add_special_tokens else [0] * len(sequence)
            )
        return fields

    def _pad(self, fields, length, padding_side, want_mask):
        """Pads one sequence's fields to `length` on `padding_side`; adds attention_mask."""
        size = len(fields["input_ids"])
        if want_mask:
            fields["attention_mask"] = [1] * size
        missing = length - size if length is not None else 0
        if missing > 0:
            fill = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id,
                    "special_tokens_mask": 1, "attention_mask": 0}
            for key in list(fields):
                if key in fill:
                    pad = [fill[key]] * missing
                    fields[key] = fields[key] + pad if padding_side == "right" else pad + fields[key]
        return fields

    @staticmethod
    def _as_batch(text, name):
        """(batch of str or None, whether the input was one str)."""
        if text is None:
            return None, False
        if isinstance(text, str):
            return [text], True
        if isinstance(text, (list, tuple)):
            return list(text), False
        raise TypeError(f"{name} must be a str or a list of str, got {type(text).__name__}")

    def __call__(
        self,
        text,
        text_pair=None,
        add_special_tokens=True,
        padding=False,
        truncation=None,
        max_length=None,
        pad_to_multiple_of=None,
        padding_side=None,
        return_tensors=None,
        return_token_type_ids=None,
        return_attention_mask=None,
        return_special_tokens_mask=False,
        return_length=False,
        lang="en",
        bypass_tokenizer=False,
        verbose=True,
    ):
        """Encodes a text, a batch of texts, a pair (text, text_pair) or a batch of pairs
        (lists, or a list of 2-tuples as `text`). Returns a BatchEncoding with input_ids,
        attention_mask and whatever else was asked for; lists of lists for a batch, tensors
        with a batch axis when return_tensors is "pt"/"np"."""
        texts, single = self._as_batch(text, "text")
        pairs, pair_single = self._as_batch(text_pair, "text_pair")
        if texts is None:
            raise TypeError("text must be a str or a list of str, got None")
        if pairs is None and not single and texts and all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
            texts, pairs = [t[0] for t in texts], [t[1] for t in texts]
        if pairs is not None and (len(pairs) != len(texts) or pair_single != single):
            raise ValueError("text_pair must match text: a str for a str, a list of the same length for a list")
        if padding_side is not None:
            _check_side("padding_side", padding_side)
        if pad_to_multiple_of is not None:
            _check_count("pad_to_multiple_of", pad_to_multiple_of)
        if return_tensors is not None and return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        padding, truncation, max_length = self._strategies(padding, truncation, max_length)
        want = {
            "token_type_ids": bool(return_token_type_ids),
            "special_tokens_mask": bool(return_special_tokens_mask),
        }
        want_mask = True if return_attention_mask is None else bool(return_attention_mask)

        encoded = self._encode_texts(texts + (pairs or []), lang, bypass_tokenizer)
        firsts, seconds = encoded[: len(texts)], encoded[len(texts) :] or [None] * len(texts)
        rows = [self._prepare(a, b, add_special_tokens, truncation, max_length, want) for a, b in zip(firsts, seconds)]

        lengths = [len(row["input_ids"]) for row in rows]
        target = None
        if padding == "longest":
            target = max(lengths, default=0) if not single else lengths[0]
        elif padding == "max_length":
            target = max_length
        if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
            target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
        side = padding_side or self.padding_side
        rows = [self._pad(row, target, side, want_mask) for row in rows]
        if return_length:  # transformers: padded length for one text, unpadded in a batch
            for row, length in zip(rows, lengths):
                row["length"] = len(row["input_ids"]) if single else length

        keys = rows[0].keys() if rows else ["input_ids"] + (["attention_mask"] if want_mask else [])
        if single:
            output = {key: rows[0][key] for key in keys}
            if return_tensors is not None:
                output = {key: _to_tensor([value] if key != "length" else value, return_tensors, key)
                          for key, value in output.items()}
        else:
            output = {key: [row[key] for row in rows] for key in keys}
            if return_tensors is not None:
                output = {key: _to_tensor(value, return_tensors, key) for key, value in output.items()}
        return BatchEncoding(output)

    def encode(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None,
               max_length=None, return_tensors=None, lang="en", bypass_tokenizer=False):
        """Ids of one text (or pair)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding,
                    truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                    return_attention_mask=False, lang=lang, bypass_tokenizer=bypass_tokenizer)["input_ids"]

    # ------------------------------------------------------------------ decoding

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens).replace("</w>", " ").strip()

    @staticmethod
    def clean_up_tokenization(text):
        for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                              (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(before, after)
        return text

    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        """Ids (int, list, numpy array or tensor) -> text: tokens joined, "</w>" -> " ", stripped."""
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        token_ids = _token_ids([token_ids] if isinstance(token_ids, int) else token_ids, "token_ids")
        text = self.convert_tokens_to_string(self._checked_ids_to_tokens(token_ids, skip_special_tokens))
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=False):
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
        """Writes tokenizer_config.json, vocab.json, merges.txt (readable by transformers)."""
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
            model_max_length=self.model_max_length,
            padding_side=self.padding_side,
            truncation_side=self.truncation_side,
            **self.special_tokens_map,
        )
        config_path = os.path.join(save_directory, TOKENIZER_CONFIG_FILE)
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return (config_path,) + self.save_vocabulary(save_directory, filename_prefix)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads a local directory with vocab.json, merges.txt and (optionally)
        tokenizer_config.json; keyword arguments override the config. Never downloads."""
        directory = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(directory):
            raise OSError(f"from_pretrained: {directory} is not a local directory (nothing is downloaded)")
        config = {}
        config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
        if os.path.isfile(config_path):
            try:
                config = json.loads(_read_text(config_path, "tokenizer_config"))
            except json.JSONDecodeError as error:
                raise ValueError(f"tokenizer_config: {config_path} is not valid JSON ({error})") from error
            if not isinstance(config, dict):
                raise ValueError(f"tokenizer_config: {config_path} must hold a JSON object")
        arguments = {key: config[key] for key in (
            "unk_token", "bos_token", "sep_token", "pad_token", "cls_token", "mask_token", "lang2id", "id2lang",
            "do_lowercase_and_remove_accent", "model_max_length", "padding_side", "truncation_side",
        ) if key in config}
        extra = config.get("additional_special_tokens", config.get("extra_special_tokens"))
        if extra is not None:
            arguments["additional_special_tokens"] = [t["content"] if isinstance(t, dict) else t for t in extra]
        for key in ("unk_token", "bos_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            if isinstance(arguments.get(key), dict):  # AddedToken serialised by older transformers
                arguments[key] = arguments[key]["content"]
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
