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
    config = XLMConfig(n_langs=2, lang2id={"en": 0, "fr": 1})
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
    ("embed_init_std", None), ("summary_activation", "foo"), ("asm_cutoffs", []),
    ("dtype", "int8"), ("torch_dtype", 3), ("num_labels", -1), ("num_labels", "3"), ("num_labels", True),
    ("id2label", {"a": "x"}), ("id2label", ["x"]), ("label2id", {"x": "a"}), ("lang2id", {"en": -1}),
    ("id2lang", {"x": "en"}), ("id2lang", {0: 1}), ("architectures", "XLMModel"),
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


@pytest.mark.parametrize("name,value", [("causal", 1), ("gelu_activation", 0), ("use_lang_emb", 1)])
def test_int_flags_are_refused_as_transformers_refuses_them(name, value):
    # 0/1 would be unambiguous, but transformers 5 (a strict dataclass) refuses them too,
    # so no config.json that it reads or writes carries them.
    with pytest.raises(ValueError, match=name):
        XLMConfig(**{name: value})
    with pytest.raises(Exception, match=f"{name}' expected bool"):  # StrictDataclassFieldValidationError
        transformers.XLMConfig(**{name: value})


def test_a_checked_parameter_outside_the_defaults_is_checked_too():
    with pytest.raises(ValueError, match="summary_last_dropout"):
        XLMConfig(summary_last_dropout=2.0)  # XLMSequenceSummary reads it when present
    config = XLMConfig(summary_last_dropout=0.2)
    with pytest.raises(ValueError, match="summary_last_dropout"):
        config.summary_last_dropout = "0.3"


def test_alias_and_canonical_name_with_different_values_are_refused():
    with pytest.raises(ValueError, match="hidden_size.*emb_dim"):
        XLMConfig(hidden_size=64, emb_dim=128)
    assert XLMConfig(pad_index=3, pad_token_id=3).pad_token_id == 3  # our config.json writes both


@pytest.mark.parametrize("kwargs,name", [
    (dict(vocab_size=10, pad_token_id=10), "pad_token_id"),
    (dict(n_langs=2, lang2id={"en": 0, "fr": 2}), "lang2id"),
    (dict(n_langs=2, lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "de"}), "id2lang"),
    (dict(problem_type="single_label_classification", num_labels=1), "problem_type"),
    (dict(num_labels=3, id2label={0: "a", 1: "b"}), "num_labels"),
])
def test_inconsistent_parameters_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=name):
        XLMConfig(**kwargs)


def test_single_label_with_one_label_is_refused_as_in_transformers():
    with pytest.raises(ValueError, match="problem_type"):
        transformers.XLMConfig(problem_type="single_label_classification", num_labels=1)


def test_checks_across_parameters_see_assignments_and_in_place_changes_at_model_build():
    config = XLMConfig(vocab_size=50, emb_dim=16, n_heads=2, n_layers=1)
    config.vocab_size = 2  # leaves pad_token_id=2 outside the vocabulary...
    with pytest.raises(ValueError, match="pad_token_id"):
        XLMModel(config)  # ...which the model's embedding would assert on without naming it
    config.vocab_size = 50
    config.asm_cutoffs.append(10)  # no longer increasing: changed in place, past __setattr__
    with pytest.raises(ValueError, match="asm_cutoffs"):
        XLMModel(config)


def test_label_and_language_maps_take_json_keys_and_stay_consistent():
    config = XLMConfig(id2label={"0": "neg", "1": "pos"}, id2lang={"0": "en", "1": "fr"}, n_langs=2)
    assert config.id2label == {0: "neg", 1: "pos"} and config.lang2id == {"en": 0, "fr": 1}
    config.id2label = {"0": "a", "1": "b", "2": "c"}
    assert config.num_labels == 3 and config.label2id == {"a": 0, "b": 1, "c": 2}


def test_a_bad_value_in_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xlm", "dropout": 1.5}))
    with pytest.raises(ValueError, match=r"config\.json.*dropout"):
        XLMConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"config\.json"):
        XLMConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("path", [None, 3])
def test_a_path_of_the_wrong_type_is_named(path):
    with pytest.raises(TypeError, match="pretrained_model_name_or_path"):
        XLMConfig.from_pretrained(path)


def test_attributes_that_transformers_reads_from_any_config_exist_and_are_not_saved(tmp_path):
    # transformers 4.4x pipelines read _commit_hash and task_specific_params; generation
    # and 5.x pipelines call get_text_config(); Trainer reads name_or_path.
    config = XLMConfig(vocab_size=50, emb_dim=16, n_heads=2, n_layers=1)
    assert config._commit_hash is None and config.task_specific_params is None and config.prefix is None
    assert config.is_encoder_decoder is False and config.get_text_config() is config
    config.save_pretrained(tmp_path)
    loaded = XLMConfig.from_pretrained(tmp_path)
    assert loaded.name_or_path == str(tmp_path)
    loaded._attn_implementation = "sdpa"  # from_pretrained(attn_implementation="sdpa") sets it
    loaded.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not {"_commit_hash", "_name_or_path", "name_or_path", "task_specific_params",
                "_attn_implementation"} & saved.keys()
    # what transformers 4.x wrote into config.json is read, not kept as unknown keys
    saved.update(_name_or_path="org/name", _commit_hash="abc")
    restored = XLMConfig.from_dict(saved)
    assert restored.name_or_path == "org/name" and "_commit_hash" not in restored.to_dict()
    assert restored == loaded and restored._attn_implementation is None


def test_transformers_4_config_dict_with_unset_token_ids_beside_the_indices():
    # transformers 4.x's XLMConfig.to_dict() holds eos_index=1 and eos_token_id=None
    config = XLMConfig(eos_index=1, eos_token_id=None, pad_index=2, pad_token_id=None, bos_token_id=0)
    assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (1, 2, 0)
    with pytest.raises(ValueError, match="eos_index"):
        XLMConfig(eos_index=1, eos_token_id=3)
