"""XLMConfig: documented defaults, aliases, labels, languages, and config.json both ways
with transformers."""

import json

import pytest
import transformers

from xlm_fast import XLMConfig, XLMModel
from xlm_fast.configuration_xlm import ATTRIBUTE_MAP

DOCUMENTED = [
    "vocab_size", "emb_dim", "n_layers", "n_heads", "dropout", "attention_dropout", "gelu_activation",
    "sinusoidal_embeddings", "causal", "asm", "n_langs", "use_lang_emb", "max_position_embeddings",
    "embed_init_std", "layer_norm_eps", "init_std", "bos_index", "eos_index", "pad_index", "unk_index",
    "mask_index", "is_encoder", "summary_type", "summary_use_proj", "summary_activation",
    "summary_proj_to_labels", "summary_first_dropout", "start_n_top", "end_n_top", "mask_token_id", "lang_id",
    "pad_token_id", "bos_token_id", "eos_token_id", "num_labels", "hidden_size", "num_attention_heads",
    "num_hidden_layers", "n_words", "output_attentions", "output_hidden_states", "return_dict",
]


def test_defaults_equal_transformers():
    ours, theirs = XLMConfig(), transformers.XLMConfig()
    for name in DOCUMENTED:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.vocab_size == 30145 and ours.emb_dim == 2048 and ours.mask_token_id == 0 and ours.lang_id == 0
    assert ours.asm_cutoffs == [8000, 20000] and ours.asm_div_value == 4.0


def test_aliases_read_and_write_the_canonical_attribute():
    config = XLMConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=3, n_words=77, pad_index=5)
    assert (config.emb_dim, config.n_heads, config.n_layers, config.vocab_size, config.pad_token_id) == (
        64, 4, 3, 77, 5)
    config.hidden_size = 128
    assert config.emb_dim == 128


def test_labels_and_problem_type():
    config = XLMConfig(num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and config.label2id["LABEL_2"] == 2
    config.num_labels = 5
    assert len(config.id2label) == 5
    named = XLMConfig(id2label={"0": "neg", "1": "pos"}, problem_type="single_label_classification")
    assert named.id2label == {0: "neg", 1: "pos"} and named.label2id == {"neg": 0, "pos": 1} and named.num_labels == 2
    with pytest.raises(ValueError, match="problem_type"):
        XLMConfig(problem_type="ranking")


def test_languages_are_completed_both_ways():
    config = XLMConfig(lang2id={"en": 0, "fr": 1})
    assert config.id2lang == {0: "en", 1: "fr"}
    assert XLMConfig(id2lang={"0": "de"}).lang2id == {"de": 0}


@pytest.mark.parametrize("kwargs,name", [
    (dict(emb_dim=30, n_heads=4), "n_heads"), (dict(n_layers=0), "n_layers"), (dict(vocab_size="9"), "vocab_size"),
    (dict(summary_type="pool"), "summary_type"),
])
def test_bad_values_are_rejected(kwargs, name):
    with pytest.raises(ValueError, match=name):
        XLMConfig(**kwargs)


def test_round_trip_with_transformers_keeps_every_value_and_unknown_keys(tmp_path):
    ours = XLMConfig(vocab_size=99, emb_dim=48, n_heads=6, n_langs=2, lang2id={"en": 0, "ro": 1}, num_labels=4,
                     causal=True, asm_cutoffs=[10, 50], my_custom_key={"a": 1})
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.XLMConfig.from_pretrained(tmp_path / "ours")
    for name in DOCUMENTED + ["lang2id", "id2label", "asm_cutoffs"]:
        assert getattr(theirs, name) == getattr(ours, name), name
    # transformers keeps JSON's string keys for id2lang; xlm_fast turns them back into ints.
    assert {int(key): value for key, value in theirs.id2lang.items()} == ours.id2lang
    assert theirs.my_custom_key == {"a": 1}
    theirs.save_pretrained(tmp_path / "theirs")
    back = XLMConfig.from_pretrained(tmp_path / "theirs")
    for name in DOCUMENTED + ["lang2id", "id2lang", "id2label", "asm_cutoffs", "my_custom_key"]:
        assert getattr(back, name) == getattr(ours, name), name
    assert XLMConfig.from_pretrained(tmp_path / "theirs" / "config.json").n_langs == 2


def test_to_dict_and_json_string():
    config = XLMConfig(emb_dim=64, n_heads=8)
    data = json.loads(config.to_json_string())
    assert data == config.to_dict()
    assert data["model_type"] == "xlm" and data["emb_dim"] == 64 and data["pad_index"] == data["pad_token_id"] == 2
    assert XLMConfig.from_dict(data) == config


def test_from_pretrained_overrides_and_errors(tmp_path):
    XLMConfig(emb_dim=64, n_heads=8).save_pretrained(tmp_path)
    assert XLMConfig.from_pretrained(tmp_path, num_labels=7).num_labels == 7
    with pytest.raises(OSError, match="never downloads"):
        XLMConfig.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        XLMConfig.from_pretrained(tmp_path / "bad")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="model_type"):
        XLMConfig.from_pretrained(tmp_path / "bert")


BAD_PARAMETERS = [
    ("causal", "false"), ("gelu_activation", "false"), ("asm", 1), ("sinusoidal_embeddings", None),
    ("dropout", 1.5), ("attention_dropout", -0.1), ("summary_first_dropout", "0.1"),
    ("layer_norm_eps", "1e-12"), ("layer_norm_eps", 0), ("init_std", -1.0), ("asm_div_value", True),
    ("vocab_size", 0), ("emb_dim", 32.0), ("n_layers", True), ("n_heads", "4"), ("max_position_embeddings", -2),
    ("start_n_top", 0), ("pad_token_id", -1), ("mask_token_id", 1.5), ("eos_token_id", [1, -2]),
    ("problem_type", "foo"), ("summary_type", "middle"), ("asm_cutoffs", [20, 10]), ("lang2id", ["en"]),
    ("chunk_size_feed_forward", -1), ("hidden_size", "64"), ("num_attention_heads", 0),
]


@pytest.mark.parametrize("name,bad", BAD_PARAMETERS)
def test_bad_parameter_is_refused_at_construction_assignment_and_override(tmp_path, name, bad):
    with pytest.raises(ValueError, match=ATTRIBUTE_MAP.get(name, name)):
        XLMConfig(**{name: bad})
    config = XLMConfig()
    before = getattr(config, name)
    with pytest.raises(ValueError, match=ATTRIBUTE_MAP.get(name, name)):
        setattr(config, name, bad)
    assert getattr(config, name) == before
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=ATTRIBUTE_MAP.get(name, name)):
        XLMConfig.from_pretrained(tmp_path, **{name: bad})


def test_checks_across_parameters_run_at_construction_override_and_model_build(tmp_path):
    with pytest.raises(ValueError, match="n_heads"):
        XLMConfig(emb_dim=32, n_heads=5)
    XLMConfig(emb_dim=32, n_heads=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="n_heads"):
        XLMConfig.from_pretrained(tmp_path, n_heads=5)  # an override that does not divide emb_dim
    config = XLMConfig(emb_dim=32, n_heads=4, vocab_size=50, n_layers=1)
    config.n_heads = 5  # assignments one after the other stay possible...
    with pytest.raises(ValueError, match="n_heads"):
        XLMModel(config)  # ...and the model refuses what they leave
    config.emb_dim = 30
    assert XLMModel(config).config.n_heads == 5
    with pytest.raises(ValueError, match="asm_cutoffs"):
        XLMConfig(asm=True, vocab_size=100, asm_cutoffs=[50, 100])


def test_problem_type_set_after_construction_is_checked():
    config = XLMConfig()
    with pytest.raises(ValueError, match="problem_type"):
        config.problem_type = "foo"  # used to pass and compute a BCE loss later
    config.problem_type = "regression"
    assert config.problem_type == "regression"


def test_transformers_config_with_every_default_loads(tmp_path):
    transformers.XLMConfig().save_pretrained(tmp_path)
    assert XLMConfig.from_pretrained(tmp_path).to_dict()["emb_dim"] == 2048
