"""xlm_fast's GenerationConfig (the one models carry when transformers is missing) and the
resolution of one generate() call's parameters: config, then keyword overrides, checked."""

import json

import pytest

from xlm_fast import XLMConfig
from xlm_fast import generation_config as gc


def test_defaults_are_transformers_defaults():
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GenerationConfig()
    for name, value in gc.DEFAULTS.items():
        if getattr(theirs, name) is not None:
            assert getattr(theirs, name) == value, name


def test_save_and_load_round_trip(tmp_path):
    config = gc.GenerationConfig(num_beams=4, eos_token_id=[1, 5], custom_key="kept")
    config.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / gc.GENERATION_CONFIG_NAME).read_text())
    assert saved == {"num_beams": 4, "eos_token_id": [1, 5], "custom_key": "kept"}
    assert gc.GenerationConfig.from_pretrained(str(tmp_path)) == config
    (tmp_path / gc.GENERATION_CONFIG_NAME).write_text("[1]")
    with pytest.raises(OSError, match="generation_config.json"):
        gc.GenerationConfig.from_pretrained(str(tmp_path))


def test_update_returns_the_unknown_keys():
    config = gc.GenerationConfig()
    assert config.update(num_beams=2, nonsense=1) == {"nonsense": 1}
    assert config.num_beams == 2


def test_model_default_and_checkpoint_file(tmp_path, monkeypatch):
    model_config = XLMConfig(vocab_size=50, emb_dim=16, n_layers=1, n_heads=2)
    monkeypatch.setattr(gc, "config_class", lambda: gc.GenerationConfig)  # as without transformers
    default = gc.load_generation_config(str(tmp_path), model_config)
    assert (default.bos_token_id, default.eos_token_id, default.pad_token_id) == (0, 1, 2)
    gc.GenerationConfig(max_new_tokens=3).save_pretrained(str(tmp_path))
    assert gc.load_generation_config(str(tmp_path), model_config).max_new_tokens == 3


def test_keyword_overrides_win_and_none_means_unset():
    params = gc.resolve_parameters(gc.GenerationConfig(num_beams=3, top_k=None), {"num_beams": 2}, 100)
    assert params["num_beams"] == 2 and params["top_k"] == 50


@pytest.mark.parametrize("overrides,error,name", [
    (dict(num_beams=0), ValueError, "num_beams"),
    (dict(max_length=0), ValueError, "max_length"),
    (dict(min_length=-1), ValueError, "min_length"),
    (dict(do_sample=1), TypeError, "do_sample"),
    (dict(do_sample=True, top_k=-1), ValueError, "top_k"),
    (dict(early_stopping=1), ValueError, "early_stopping"),
    (dict(pad_token_id=100), ValueError, "pad_token_id"),
    (dict(output_logits="yes"), TypeError, "output_logits"),
    (dict(unknown_option=3), ValueError, "unknown_option"),
])
def test_bad_parameters_are_named(overrides, error, name):
    with pytest.raises(error, match=name):
        gc.resolve_parameters(gc.GenerationConfig(), overrides, 100)


def test_config_setting_an_unsupported_parameter_is_refused():
    with pytest.raises(ValueError, match="penalty_alpha"):
        gc.resolve_parameters(gc.GenerationConfig(penalty_alpha=0.6), {}, 100)
    with pytest.raises(TypeError, match="generation_config"):
        gc.resolve_parameters({"num_beams": 2}, {}, 100)
