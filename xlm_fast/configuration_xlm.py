"""XLMConfig: the hyper-parameters of an XLM model, read from and written to
transformers' `config.json` both ways (unknown keys are kept)."""

import copy
import json
import os

import torch

from .hub import checked_path, resolve_model_dir

# Documented parameters and their defaults (transformers' XLM documentation).
XLM_DEFAULTS = {
    "vocab_size": 30145,
    "emb_dim": 2048,
    "n_layers": 12,
    "n_heads": 16,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "gelu_activation": True,
    "sinusoidal_embeddings": False,
    "causal": False,
    "asm": False,
    "n_langs": 1,
    "use_lang_emb": True,
    "max_position_embeddings": 512,
    "embed_init_std": 2048**-0.5,
    "layer_norm_eps": 1e-12,
    "init_std": 0.02,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
    "unk_index": 3,
    "mask_index": 5,
    "is_encoder": True,
    "summary_type": "first",
    "summary_use_proj": True,
    "summary_activation": None,
    "summary_proj_to_labels": True,
    "summary_first_dropout": 0.1,
    "start_n_top": 5,
    "end_n_top": 5,
    "mask_token_id": 0,
    "lang_id": 0,
    # Adaptive softmax of the LM head (asm=True); the original XLM's defaults.
    "asm_cutoffs": [8000, 20000],
    "asm_div_value": 4.0,
    "lang2id": None,
    "id2lang": None,
    # Common to every transformers config.
    "problem_type": None,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict": True,
    "chunk_size_feed_forward": 0,
    "tie_word_embeddings": True,
    "architectures": None,
    "dtype": None,
}

# transformers' aliases: alias -> canonical attribute.
ATTRIBUTE_MAP = {
    "hidden_size": "emb_dim",
    "num_attention_heads": "n_heads",
    "num_hidden_layers": "n_layers",
    "n_words": "vocab_size",
    "bos_index": "bos_token_id",
    "eos_index": "eos_token_id",
    "pad_index": "pad_token_id",
    "torch_dtype": "dtype",
}

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
SUMMARY_TYPES = ("last", "first", "mean", "cls_index", "attn")
# transformers' activation names that XLMSequenceSummary implements (modeling_xlm maps them);
# None or "" is no activation.
SUMMARY_ACTIVATIONS = ("tanh", "relu", "gelu", "sigmoid", "silu", "swish", "linear")
CONFIG_NAME = "config.json"


def torch_dtype_from_name(value):
    """A floating-point torch.dtype from itself or its name ("bfloat16", "torch.float16");
    None when `value` names no such dtype."""
    if isinstance(value, str):
        value = getattr(torch, value.replace("torch.", ""), None)
    return value if isinstance(value, torch.dtype) and value.is_floating_point else None


# ---- one check per documented parameter, run at construction and on every assignment
def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value):
    return _is_int(value) and value >= 1


def _id_or_none(value):
    return value is None or (_is_int(value) and value >= 0)


def _ids_or_none(value):  # eos_token_id may list several ids (transformers' generation)
    return _id_or_none(value) or (isinstance(value, list) and all(_id_or_none(item) for item in value))


def _probability(value):
    return _is_number(value) and 0 <= value < 1


def _positive_number(value):
    return _is_number(value) and value > 0


def _bool(value):
    # "false" is truthy, so a str must not pass. 0/1 are refused as well: transformers 5
    # (a strict dataclass) refuses them, so no config.json it reads carries them.
    return isinstance(value, bool)


def _increasing_positive_ints(value):
    return (isinstance(value, (list, tuple)) and len(value) > 0 and all(_positive_int(item) for item in value)
            and all(a < b for a, b in zip(value, value[1:])))


CHECKS = {
    **dict.fromkeys(("vocab_size", "emb_dim", "n_layers", "n_heads", "n_langs", "max_position_embeddings",
                     "start_n_top", "end_n_top"), (_positive_int, "a positive int")),
    **dict.fromkeys(("dropout", "attention_dropout", "summary_first_dropout", "summary_last_dropout"),
                    (_probability, "a number in [0, 1)")),
    **dict.fromkeys(("layer_norm_eps", "init_std", "embed_init_std", "asm_div_value"),
                    (_positive_number, "a positive number")),
    **dict.fromkeys(("gelu_activation", "sinusoidal_embeddings", "causal", "asm", "use_lang_emb", "is_encoder",
                     "summary_use_proj", "summary_proj_to_labels", "output_attentions", "output_hidden_states",
                     "return_dict", "tie_word_embeddings"), (_bool, "a bool (True or False)")),
    **dict.fromkeys(("bos_token_id", "pad_token_id", "unk_index", "mask_index", "mask_token_id", "lang_id"),
                    (_id_or_none, "a non-negative int or None")),
    "eos_token_id": (_ids_or_none, "a non-negative int, a list of them, or None"),
    "chunk_size_feed_forward": (lambda value: _is_int(value) and value >= 0, "a non-negative int"),
    "summary_type": (lambda value: value in SUMMARY_TYPES, f"one of {SUMMARY_TYPES}"),
    "summary_activation": (lambda value: value in (None, "") or value in SUMMARY_ACTIVATIONS,
                           f"None or one of {SUMMARY_ACTIVATIONS}"),
    "problem_type": (lambda value: value is None or value in PROBLEM_TYPES, f"None or one of {PROBLEM_TYPES}"),
    "asm_cutoffs": (_increasing_positive_ints, "a non-empty list of increasing positive ints"),
    "architectures": (lambda value: value is None or (isinstance(value, list) and all(isinstance(item, str)
                                                                                      for item in value)),
                      "a list of class names or None"),
    "dtype": (lambda value: value is None or torch_dtype_from_name(value) is not None,
              "None or a floating-point torch dtype or its name (e.g. 'float32')"),
}


def check_parameter(name, value):
    """ValueError naming `name` when `value` is not what the parameter takes."""
    if name in CHECKS:
        accepts, expected = CHECKS[name]
        if not accepts(value):
            raise ValueError(f"XLMConfig: {name} must be {expected}, got {value!r}")


def _as_id(name, value):
    """A non-negative int from an int or, as JSON object keys are, its decimal string."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not _is_int(value) or value < 0:
        raise ValueError(f"XLMConfig: {name} must map with non-negative int ids, got {value!r}")
    return value


def _as_mapping(name, value, id_side):
    """Checks the dict parameters (id2label, label2id, id2lang, lang2id) and turns their
    ids into ints (JSON writes id2label's and id2lang's keys as strings). id_side is
    "keys" or "values"; the other side holds names (str)."""
    if not isinstance(value, dict):
        raise ValueError(f"XLMConfig: {name} must be a dict, got {value!r}")
    converted = {}
    for key, item in value.items():
        named = item if id_side == "keys" else key
        if not isinstance(named, str):
            raise ValueError(f"XLMConfig: {name} must map with str names, got {named!r}")
        if id_side == "keys":
            converted[_as_id(name, key)] = item
        else:
            converted[key] = _as_id(name, item)
    return converted


# Dict parameters, checked and converted on every assignment: which side holds the ids.
MAPPINGS = {"id2label": "keys", "label2id": "values", "id2lang": "keys", "lang2id": "values"}


def _check_num_labels(value):  # 0 is allowed, as in transformers (the summary then keeps emb_dim)
    if not _is_int(value) or value < 0:
        raise ValueError(f"XLMConfig: num_labels must be a non-negative int, got {value!r}")


class XLMConfig:
    """Configuration of an XLM model; every documented argument, alias and default.

    Unknown keyword arguments are stored as attributes and written back by `to_dict`,
    so a `config.json` survives a round trip through xlm_fast unchanged.
    """

    model_type = "xlm"
    attribute_map = ATTRIBUTE_MAP
    # What transformers' pipelines, Trainer and generation read from any config, across
    # 4.40-5.x (e.g. 4.x pipelines read _commit_hash and task_specific_params). Class
    # attributes, so none of them is written to config.json unless a user sets it.
    _commit_hash = None
    _name_or_path = ""
    is_encoder_decoder = False
    is_decoder = False
    add_cross_attention = False
    torchscript = False
    task_specific_params = None
    prefix = None
    finetuning_task = None
    tokenizer_class = None
    _attn_implementation = None  # what from_pretrained(attn_implementation=) asked for

    def __init__(self, **kwargs):
        for alias, name in ATTRIBUTE_MAP.items():
            if alias in kwargs:
                value = kwargs.pop(alias)
                # Our own config.json writes pad_index beside pad_token_id: equal values are fine.
                # transformers 4.x keeps both as separate fields, eos_token_id=None beside
                # eos_index=1: None is "not set" there, and the index is what its model reads.
                if kwargs.get(name) is None:
                    kwargs[name] = value
                elif value is not None and kwargs[name] != value:
                    raise ValueError(f"XLMConfig: {alias}={value!r} and {name}={kwargs[name]!r} name the same "
                                     "parameter with different values")
        num_labels = kwargs.pop("num_labels", None)
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        kwargs.pop("_commit_hash", None)
        name_or_path = kwargs.pop("name_or_path", kwargs.pop("_name_or_path", None))
        if name_or_path is not None:
            self.name_or_path = name_or_path
        for name, default in XLM_DEFAULTS.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        for name, value in kwargs.items():  # unknown keys are kept as they are
            setattr(self, name, value)
        self._set_labels(num_labels, id2label, label2id)
        self._set_languages()
        self.validate()

    def _set_labels(self, num_labels, id2label, label2id):
        if num_labels is not None:
            _check_num_labels(num_labels)
        if id2label is None:
            count = 2 if num_labels is None else num_labels
            id2label = {index: f"LABEL_{index}" for index in range(count)}
        self.id2label = id2label  # also derives label2id
        if num_labels is not None and num_labels != self.num_labels:
            raise ValueError(f"XLMConfig: num_labels={num_labels} disagrees with id2label, which has "
                             f"{self.num_labels} entries")
        if label2id is not None:
            self.label2id = label2id

    def _set_languages(self):
        if self.lang2id is not None and self.id2lang is None:
            self.id2lang = {value: key for key, value in self.lang2id.items()}
        if self.id2lang is not None and self.lang2id is None:
            self.lang2id = {value: key for key, value in self.id2lang.items()}

    def validate(self):
        """Checks that relate several parameters. Single parameters are checked when they
        are set; these run at construction, after from_pretrained's overrides and when a
        model is built, so that parameters can still be changed one after the other
        (emb_dim=30 then n_heads=5). Single parameters are checked again here, since lists
        and dicts can be changed in place."""
        for name in CHECKS.keys() & vars(self).keys():
            check_parameter(name, getattr(self, name))
        for name, id_side in MAPPINGS.items():
            if getattr(self, name) is not None:
                _as_mapping(name, getattr(self, name), id_side)
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"XLMConfig: emb_dim ({self.emb_dim}) must be a multiple of n_heads ({self.n_heads})"
            )
        if self.asm and self.asm_cutoffs[-1] >= self.vocab_size:
            raise ValueError(f"XLMConfig: asm_cutoffs {self.asm_cutoffs} must lie below vocab_size ({self.vocab_size})")
        # The word embedding's padding row: torch asserts without naming the parameter.
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ValueError(f"XLMConfig: pad_token_id ({self.pad_token_id}) must be below vocab_size "
                             f"({self.vocab_size})")
        if self.lang2id is not None:
            if any(lang_id >= self.n_langs for lang_id in self.lang2id.values()):
                raise ValueError(f"XLMConfig: lang2id {self.lang2id} holds ids outside [0, n_langs={self.n_langs})")
            if self.id2lang != {value: key for key, value in self.lang2id.items()}:
                raise ValueError(f"XLMConfig: id2lang {self.id2lang} and lang2id {self.lang2id} must be "
                                 "inverses of each other")
        if self.problem_type == "single_label_classification" and self.num_labels == 1:
            raise ValueError('XLMConfig: problem_type="single_label_classification" needs num_labels > 1 '
                             '(num_labels=1 is problem_type="regression"), as in transformers')

    # transformers' aliases read and write the canonical attribute.
    def __getattr__(self, name):
        if name in ATTRIBUTE_MAP:
            return getattr(self, ATTRIBUTE_MAP[name])
        raise AttributeError(f"'XLMConfig' object has no attribute {name!r}")

    def __setattr__(self, name, value):
        name = ATTRIBUTE_MAP.get(name, name)
        check_parameter(name, value)
        if name in MAPPINGS and not (value is None and name in ("id2lang", "lang2id")):  # only these may be None
            value = _as_mapping(name, value, MAPPINGS[name])
        object.__setattr__(self, name, value)
        if name == "id2label":  # label2id follows, as transformers' num_labels setter does
            object.__setattr__(self, "label2id", {label: index for index, label in value.items()})

    @property
    def num_labels(self):
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, count):
        _check_num_labels(count)
        if len(self.id2label) != count:
            self._set_labels(count, None, None)

    @property
    def use_return_dict(self):
        return self.return_dict

    @property
    def name_or_path(self):
        """What from_pretrained was given; not written to config.json (as in transformers)."""
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value):
        object.__setattr__(self, "_name_or_path", str(value))

    def get_text_config(self, decoder=None, encoder=None):
        """The config of the text part: the whole config for XLM (transformers' generation
        and pipelines ask every model for it)."""
        return self

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self):
        """All attributes as a JSON-ready dict, with transformers' key names.

        The `*_index` aliases are written beside the `*_token_id` names because
        transformers 4.x reads them as separate fields.
        """
        output = {"model_type": self.model_type}
        for name, value in vars(self).items():
            if name in ("id2label", "label2id", "_name_or_path", "_attn_implementation"):
                continue
            output[name] = copy.deepcopy(value)
        output["id2label"] = {str(key): value for key, value in self.id2label.items()}
        output["label2id"] = dict(self.label2id)
        if output.get("id2lang") is not None:
            output["id2lang"] = {str(key): value for key, value in output["id2lang"].items()}
        for alias in ("bos_index", "eos_index", "pad_index"):
            output[alias] = output[ATTRIBUTE_MAP[alias]]
        if output.get("dtype") is not None:
            output["dtype"] = str(output["dtype"]).replace("torch.", "")
        if self.architectures is None:
            output.pop("architectures")
        return dict(sorted(output.items()))

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string())

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict must be a dict, got {type(config_dict).__name__}")
        merged = dict(config_dict)
        merged.update(kwargs)
        return cls(**merged)

    @classmethod
    def from_json_file(cls, path):
        try:
            with open(path, encoding="utf-8") as handle:
                config_dict = json.load(handle)
        except OSError as error:
            raise OSError(f"cannot read config file {path}: {error}") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"config file {path} is not valid JSON: {error}") from error
        if not isinstance(config_dict, dict):
            raise ValueError(f"config file {path} must hold a JSON object")
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"config file {path} is for model_type {model_type!r}, not 'xlm'")
        try:
            return cls.from_dict(config_dict)
        except ValueError as error:  # a bad parameter: say which file holds it
            raise ValueError(f"config file {path}: {error}") from error

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, cache_dir=None, **kwargs):
        """Reads `config.json` from a local directory, a JSON file, or a hub id already in
        the local Hugging Face cache; keyword arguments override loaded values."""
        path = checked_path(pretrained_model_name_or_path)
        if os.path.isfile(path):
            config_file = path
        else:
            config_file = os.path.join(resolve_model_dir(path, cache_dir), CONFIG_NAME)
            if not os.path.isfile(config_file):
                raise OSError(f"{path} has no {CONFIG_NAME}")
        config = cls.from_json_file(config_file)
        config.name_or_path = path
        for name, value in kwargs.items():
            if name == "num_labels":
                config.num_labels = value
            else:
                setattr(config, name, value)
        config.validate()
        return config

    def save_pretrained(self, save_directory):
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory} is a file, expected a directory")
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, CONFIG_NAME))

    def __eq__(self, other):
        return isinstance(other, XLMConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"XLMConfig {self.to_json_string()}"
