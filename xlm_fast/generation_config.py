"""Generation parameters: xlm_fast's GenerationConfig (used when transformers is not
installed; with transformers, models carry transformers' own GenerationConfig so that
pipelines and `save_pretrained` see the class they expect), the model's default config,
generation_config.json, and the resolution of one generate() call's parameters
(config, then keyword overrides) with their checks."""

import copy
import json
import math
import os

GENERATION_CONFIG_NAME = "generation_config.json"

# The parameters generate() implements, with transformers' defaults.
DEFAULTS = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": None,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict_in_generate": False,
    "use_cache": True,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
}
# Keys of a saved config that carry no generation behaviour.
METADATA_KEYS = {"transformers_version", "_from_model_config"}


class GenerationConfig:
    """The generation parameters with transformers' names and defaults; unknown keys are
    kept as attributes (as transformers does) and refused by generate() only if used."""

    def __init__(self, **kwargs):
        for name, value in DEFAULTS.items():
            setattr(self, name, copy.deepcopy(value))
        for name, value in kwargs.items():
            setattr(self, name, value)

    def __repr__(self):
        return f"{type(self).__name__} {json.dumps(self.to_diff_dict(), indent=2, sort_keys=True)}"

    def __eq__(self, other):
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def to_dict(self):
        return copy.deepcopy(dict(vars(self)))

    def to_diff_dict(self):
        """The parameters that differ from the defaults (what generation_config.json holds)."""
        return {name: value for name, value in self.to_dict().items()
                if name not in DEFAULTS or DEFAULTS[name] != value}

    def update(self, **kwargs):
        """Sets the known parameters among kwargs; returns the others, as transformers does."""
        unused = {}
        for name, value in kwargs.items():
            if hasattr(self, name):
                setattr(self, name, value)
            else:
                unused[name] = value
        return unused

    @classmethod
    def from_model_config(cls, model_config):
        return cls(**model_token_ids(model_config))

    def save_pretrained(self, save_directory):
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, GENERATION_CONFIG_NAME), "w", encoding="utf-8") as handle:
            json.dump(self.to_diff_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")

    @classmethod
    def from_pretrained(cls, directory):
        path = os.path.join(directory, GENERATION_CONFIG_NAME) if os.path.isdir(directory) else directory
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except (OSError, ValueError) as error:
            raise OSError(f"cannot read generation config {path}: {error}") from error
        if not isinstance(values, dict):
            raise OSError(f"generation config {path} must hold a JSON object, got {type(values).__name__}")
        return cls(**values)


def model_token_ids(model_config):
    return {name: getattr(model_config, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}


def config_class():
    """transformers' GenerationConfig when transformers imports, else xlm_fast's."""
    try:
        from transformers import GenerationConfig as TransformersGenerationConfig
    except ImportError:
        return GenerationConfig
    return TransformersGenerationConfig


def default_generation_config(model_config):
    """The config a model gets without generation_config.json: the model's token ids."""
    cls = config_class()
    if cls is GenerationConfig:
        return cls.from_model_config(model_config)
    # transformers' from_model_config wants its own config class; the token ids are what it takes from XLM's
    config = cls(**model_token_ids(model_config))
    config._from_model_config = True
    return config


def load_generation_config(model_dir, model_config):
    """The config of a checkpoint directory: its generation_config.json if present, else
    the default built from the model config."""
    if os.path.isfile(os.path.join(model_dir, GENERATION_CONFIG_NAME)):
        return config_class().from_pretrained(model_dir)
    return default_generation_config(model_config)


# ---- one generate() call's parameters --------------------------------------------------
def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def config_parameters(generation_config):
    """The supported parameters of a config object (xlm_fast's or transformers'); refuses
    parameters it sets that generate() does not implement."""
    if not hasattr(generation_config, "to_diff_dict"):
        raise TypeError("generation_config must be a GenerationConfig (xlm_fast's or transformers'), got "
                        f"{type(generation_config).__name__}")
    diff = generation_config.to_diff_dict()
    unsupported = sorted(name for name in diff if name not in DEFAULTS and name not in METADATA_KEYS
                         and not name.startswith("_"))
    if unsupported:
        raise ValueError(f"generation_config sets parameters that xlm_fast's generate() does not support: "
                         f"{unsupported}")
    return {name: copy.deepcopy(getattr(generation_config, name, None)) for name in DEFAULTS}


def resolve_parameters(generation_config, overrides, vocab_size):
    """dict of every DEFAULTS key for one call: the config's values, then `overrides`
    (generate()'s keyword arguments, which must all be parameter names). Checked."""
    params = config_parameters(generation_config)
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"generate() got arguments that are neither XLMWithLMHeadModel inputs nor generation "
                         f"parameters xlm_fast supports: {unknown}")
    params.update(overrides)
    # None means unset (transformers 5 leaves most config fields None until generate() fills them in).
    params = {name: DEFAULTS[name] if value is None else value for name, value in params.items()}
    check_parameters(params, vocab_size)
    return params


def _check(condition, name, expected, value):
    if not condition:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_parameters(params, vocab_size):
    """ValueError/TypeError naming the first bad parameter."""
    for name in ("do_sample", "use_cache", "output_scores", "return_dict_in_generate"):
        if not isinstance(params[name], bool):
            raise TypeError(f"{name} must be True or False, got {params[name]!r}")
    if params["output_logits"] is not None and not isinstance(params["output_logits"], bool):
        raise TypeError(f"output_logits must be True, False or None, got {params['output_logits']!r}")
    for name in ("output_attentions", "output_hidden_states"):
        if params[name] not in (False, None):
            raise ValueError(f"{name}=True is not supported by xlm_fast's generate() (only scores and logits are "
                             "returned)")
    for name in ("max_new_tokens", "min_new_tokens"):
        value = params[name]
        _check(value is None or (_is_int(value) and value >= (1 if name == "max_new_tokens" else 0)), name,
               "a positive integer or None" if name == "max_new_tokens" else "a non-negative integer or None", value)
    _check(_is_int(params["max_length"]) and params["max_length"] >= 1, "max_length", "a positive integer",
           params["max_length"])
    _check(_is_int(params["min_length"]) and params["min_length"] >= 0, "min_length", "a non-negative integer",
           params["min_length"])
    if params["max_new_tokens"] is not None and params["min_new_tokens"] is not None:
        _check(params["min_new_tokens"] <= params["max_new_tokens"], "min_new_tokens",
               f"at most max_new_tokens ({params['max_new_tokens']})", params["min_new_tokens"])
    _check(_is_int(params["num_beams"]) and params["num_beams"] >= 1, "num_beams", "a positive integer",
           params["num_beams"])
    _check(_is_int(params["num_return_sequences"]) and params["num_return_sequences"] >= 1, "num_return_sequences",
           "a positive integer", params["num_return_sequences"])
    if not params["do_sample"]:
        if params["num_beams"] == 1:
            _check(params["num_return_sequences"] == 1, "num_return_sequences",
                   "1 for greedy decoding (use num_beams > 1 or do_sample=True)", params["num_return_sequences"])
        else:
            _check(params["num_return_sequences"] <= params["num_beams"], "num_return_sequences",
                   f"at most num_beams ({params['num_beams']}) without sampling", params["num_return_sequences"])
    _check(_is_number(params["repetition_penalty"]) and params["repetition_penalty"] > 0, "repetition_penalty",
           "a finite number > 0", params["repetition_penalty"])
    _check(_is_number(params["length_penalty"]), "length_penalty", "a finite number", params["length_penalty"])
    _check(params["early_stopping"] in (True, False, "never") and not _is_int(params["early_stopping"]),
           "early_stopping", "True, False or 'never'", params["early_stopping"])
    _check(_is_int(params["no_repeat_ngram_size"]) and params["no_repeat_ngram_size"] >= 0, "no_repeat_ngram_size",
           "a non-negative integer", params["no_repeat_ngram_size"])
    bad = params["bad_words_ids"]
    _check(bad is None or (isinstance(bad, (list, tuple)) and all(
        isinstance(words, (list, tuple)) and words and all(_is_int(t) and 0 <= t < vocab_size for t in words)
        for words in bad)), "bad_words_ids", f"a list of non-empty lists of token ids in [0, {vocab_size})", bad)
    if params["do_sample"]:
        _check(_is_number(params["temperature"]) and params["temperature"] > 0, "temperature",
               "a finite number > 0", params["temperature"])
        _check(_is_int(params["top_k"]) and params["top_k"] >= 0, "top_k",
               "a non-negative integer", params["top_k"])
        _check(_is_number(params["top_p"]) and 0 < params["top_p"] <= 1, "top_p",
               "a number in (0, 1]", params["top_p"])
    eos = params["eos_token_id"]
    # Any int: an id outside the vocabulary (e.g. -1) is never produced, so never stops.
    _check(eos is None or _is_int(eos) or (isinstance(eos, (list, tuple)) and all(map(_is_int, eos))),
           "eos_token_id", "an int, a list of ints or None", eos)
    pad = params["pad_token_id"]
    _check(pad is None or (_is_int(pad) and 0 <= pad < vocab_size), "pad_token_id",
           f"an int in [0, {vocab_size}) or None", pad)
