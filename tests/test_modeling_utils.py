"""Checkpoints: transformers' format both ways, safetensors and pytorch_model.bin,
sharded or not, the local Hugging Face cache, dtype, and loading reports."""

import json
import logging
import os

import pytest
import torch
import transformers
from safetensors.torch import save_file

import xlm_fast

from conftest import make_twins, random_batch, relative_error


def hidden(model, ids, mask):
    return model(ids, attention_mask=mask).logits if hasattr(model, "pred_layer") else model(
        ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("config_name", ["base", "multilingual", "sinusoidal"])
def test_round_trip_xlm_fast_transformers_xlm_fast(tmp_path, config_name):
    _, ours = make_twins("XLMWithLMHeadModel", config_name)
    ids, mask = random_batch(config_name)
    expected = hidden(ours, ids, mask)
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "ours").eval()
    assert relative_error(hidden(theirs, ids, mask), expected) < 1e-6
    theirs.save_pretrained(tmp_path / "theirs")
    back, info = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path / "theirs", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert torch.equal(hidden(back, ids, mask), expected)
    assert back.pred_layer.proj.weight is back.transformer.embeddings.weight
    assert not back.training


def test_adaptive_softmax_checkpoint_saved_by_transformers_loads(tmp_path):
    hf_model, _ = make_twins("XLMWithLMHeadModel", asm=True, asm_cutoffs=[20, 60], asm_div_value=2.0)
    hf_model.save_pretrained(tmp_path)
    ours, info = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    for name, value in hf_model.state_dict().items():
        if name != "pred_layer.proj.weight":  # transformers' tied copy of the embeddings
            assert torch.equal(ours.state_dict()[name], value), name
    ours.save_pretrained(tmp_path / "again")
    again = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path / "again")
    ids, mask = random_batch()
    assert torch.equal(again(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits)


def write_sharded(state_dict, directory, bin_format):
    """Two shards plus transformers' index file."""
    keys = sorted(state_dict)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    suffix = "bin" if bin_format else "safetensors"
    base = "pytorch_model" if bin_format else "model"
    weight_map = {}
    for number, part in enumerate(halves, start=1):
        name = f"{base}-{number:05d}-of-00002.{suffix}"
        shard = {key: state_dict[key].contiguous() for key in part}
        torch.save(shard, directory / name) if bin_format else save_file(shard, directory / name)
        weight_map.update({key: name for key in part})
    (directory / f"{base}.{suffix}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("layout", ["bin", "sharded_safetensors", "sharded_bin"])
def test_checkpoint_layouts_load(tmp_path, layout):
    hf_model, ours = make_twins("XLMForSequenceClassification", num_labels=3)
    hf_model.config.save_pretrained(tmp_path)
    state_dict = hf_model.state_dict()
    if layout == "bin":
        torch.save(state_dict, tmp_path / "pytorch_model.bin")
    else:
        write_sharded(state_dict, tmp_path, bin_format=layout == "sharded_bin")
    loaded = xlm_fast.XLMForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = random_batch()
    assert torch.equal(loaded(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits)


def test_save_without_safetensors_writes_pytorch_bin(tmp_path):
    _, ours = make_twins("XLMModel")
    ours.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    assert torch.equal(xlm_fast.XLMModel.from_pretrained(tmp_path).embeddings.weight, ours.embeddings.weight)


def test_hub_id_in_the_local_cache_loads_and_a_missing_one_is_a_clear_error(tmp_path, monkeypatch):
    _, ours = make_twins("XLMModel")
    snapshot = tmp_path / "hub" / "models--someone--tiny-xlm" / "snapshots" / "abc123"
    ours.save_pretrained(snapshot)
    (tmp_path / "hub" / "models--someone--tiny-xlm" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-xlm" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = xlm_fast.XLMModel.from_pretrained("someone/tiny-xlm")
    assert torch.equal(loaded.embeddings.weight, ours.embeddings.weight)
    with pytest.raises(OSError, match="never downloads"):
        xlm_fast.XLMModel.from_pretrained("someone/not-there")


@pytest.mark.parametrize("dtype", [torch.float16, "bfloat16", "auto"])
def test_dtype_argument(tmp_path, dtype):
    _, ours = make_twins("XLMModel")
    ours.to(torch.bfloat16).save_pretrained(tmp_path)
    loaded = xlm_fast.XLMModel.from_pretrained(tmp_path, dtype=dtype)
    expected = {"auto": torch.bfloat16, "bfloat16": torch.bfloat16}.get(dtype, dtype)
    assert loaded.dtype == expected
    assert xlm_fast.XLMModel.from_pretrained(tmp_path).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        xlm_fast.XLMModel.from_pretrained(tmp_path, dtype="int8")


def test_base_checkpoint_into_a_head_and_back_reports_keys_like_transformers(tmp_path, caplog):
    _, base = make_twins("XLMModel")
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level(logging.WARNING, logger="xlm_fast"):
        head, info = xlm_fast.XLMForTokenClassification.from_pretrained(
            tmp_path / "base", num_labels=4, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert "newly initialized" in caplog.text and "classifier.weight" in caplog.text
    assert torch.equal(head.transformer.embeddings.weight, base.embeddings.weight)
    head.save_pretrained(tmp_path / "head")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xlm_fast"):
        _, info = xlm_fast.XLMModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert sorted(info["unexpected_keys"]) == ["classifier.bias", "classifier.weight"]
    assert "were not used" in caplog.text


def test_shape_mismatch_is_an_error_unless_ignored(tmp_path):
    _, ours = make_twins("XLMForSequenceClassification", num_labels=3)
    ours.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"sequence_summary\.summary\.(weight|bias)"):
        xlm_fast.XLMForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    model, info = xlm_fast.XLMForSequenceClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True)
    assert {key for key, _, _ in info["mismatched_keys"]} == {"sequence_summary.summary.weight",
                                                              "sequence_summary.summary.bias"}


def test_unreadable_weights_are_a_clear_error(tmp_path):
    _, ours = make_twins("XLMModel")
    ours.config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="holds no"):
        xlm_fast.XLMModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(OSError, match="model.safetensors"):
        xlm_fast.XLMModel.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="config"):
        xlm_fast.XLMModel({"emb_dim": 8})


def test_unknown_keyword_arguments_are_rejected(tmp_path):
    _, ours = make_twins("XLMModel")
    ours.save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="low_cpu_mem_usage"):
        xlm_fast.XLMModel.from_pretrained(tmp_path, low_cpu_mem_usage=True)
    assert xlm_fast.XLMModel.from_pretrained(tmp_path, output_hidden_states=True).config.output_hidden_states


@pytest.mark.parametrize("content", [b"garbage", "list"])
def test_unreadable_pytorch_model_bin_names_the_file(tmp_path, content):
    model = xlm_fast.XLMModel(xlm_fast.XLMConfig(vocab_size=50, emb_dim=16, n_layers=1, n_heads=2))
    model.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    if content == "list":
        torch.save([torch.zeros(2)], tmp_path / "pytorch_model.bin")
    else:
        (tmp_path / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(OSError, match="pytorch_model.bin"):
        xlm_fast.XLMModel.from_pretrained(tmp_path)


def tiny_checkpoint(directory):
    model = xlm_fast.XLMModel(xlm_fast.XLMConfig(vocab_size=50, emb_dim=16, n_layers=1, n_heads=2))
    model.save_pretrained(directory)
    return model


@pytest.mark.parametrize("index,named", [
    ("[1]", "model.safetensors.index.json"),
    ('{"weight_map": ["model-1.safetensors"]}', "model.safetensors.index.json"),
    ('{"weight_map": {"embeddings.weight": 5}}', "model.safetensors.index.json"),
    ('{"weight_map": {"embeddings.weight": "model-00001-of-00002.safetensors"}}', "model-00001-of-00002.safetensors"),
])
def test_malformed_shard_index_names_the_file(tmp_path, index, named):
    tiny_checkpoint(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(OSError, match=named.replace(".", r"\.")):
        xlm_fast.XLMModel.from_pretrained(tmp_path)


def test_pytorch_model_bin_with_non_string_keys_names_the_file(tmp_path):
    tiny_checkpoint(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    torch.save({0: torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match=r"pytorch_model\.bin"):
        xlm_fast.XLMModel.from_pretrained(tmp_path)


def test_bad_config_json_of_a_checkpoint_names_the_file(tmp_path):
    tiny_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, causal="false")))
    with pytest.raises(ValueError, match=r"config\.json.*causal"):
        xlm_fast.XLMModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("kwargs,error,named", [
    (dict(dtype=5), ValueError, "dtype"),
    (dict(dtype="long"), ValueError, "dtype"),  # a torch dtype, not a floating-point one
    (dict(dtype=torch.float16, torch_dtype=torch.bfloat16), ValueError, "torch_dtype"),
    (dict(causal="yes"), ValueError, "causal"),
])
def test_bad_loading_arguments_are_named(tmp_path, kwargs, error, named):
    tiny_checkpoint(tmp_path)
    with pytest.raises(error, match=named):
        xlm_fast.XLMModel.from_pretrained(tmp_path, **kwargs)


def test_dtype_and_torch_dtype_that_agree_are_accepted(tmp_path):
    tiny_checkpoint(tmp_path)
    loaded = xlm_fast.XLMModel.from_pretrained(tmp_path, dtype="float16", torch_dtype=torch.float16)
    assert loaded.dtype == torch.float16
    assert xlm_fast.XLMModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("path", [None, 7])
def test_a_path_of_the_wrong_type_is_named(path):
    with pytest.raises(TypeError, match="pretrained_model_name_or_path"):
        xlm_fast.XLMModel.from_pretrained(path)


@pytest.mark.parametrize("state_dict", [[torch.zeros(2)], {"embeddings.weight": 1}, {3: torch.zeros(2)}])
def test_a_state_dict_that_is_not_names_to_tensors_is_named(tmp_path, state_dict):
    model = tiny_checkpoint(tmp_path)
    with pytest.raises(TypeError, match="state_dict"):
        model.load_checkpoint(state_dict)
    with pytest.raises(TypeError, match="state_dict"):
        model.save_pretrained(tmp_path / "again", state_dict=state_dict)
    assert not (tmp_path / "again").exists()  # refused before anything is written
