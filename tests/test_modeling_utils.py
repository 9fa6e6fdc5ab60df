"""Checkpoints: transformers' format both ways, safetensors and pytorch_model.bin,
sharded or not, the local Hugging Face cache, dtype, and loading reports."""

import json
import logging
import os
import weakref

import pytest
import torch
import transformers
from safetensors.torch import load_file as load_safetensors
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
    with pytest.raises(TypeError, match="offload_folder"):
        xlm_fast.XLMModel.from_pretrained(tmp_path, offload_folder="/tmp/offload")
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


# ---- num_parameters -------------------------------------------------------------------
@pytest.mark.parametrize("class_name", ["XLMModel", "XLMWithLMHeadModel", "XLMForSequenceClassification",
                                        "XLMForQuestionAnswering", "XLMForMultipleChoice"])
@pytest.mark.parametrize("config_name", ["base", "multilingual"])
def test_num_parameters_matches_transformers(class_name, config_name):
    hf_model, ours = make_twins(class_name, config_name)
    for model in (hf_model, ours):  # some frozen parameters, the same in both
        model.base_model.layer_norm_emb.weight.requires_grad_(False)
        model.base_model.attentions[0].q_lin.requires_grad_(False)
    for only_trainable in (False, True):
        for exclude_embeddings in (False, True):
            kwargs = dict(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
            assert ours.num_parameters(**kwargs) == hf_model.num_parameters(**kwargs), kwargs
    # the tied LM projection is counted once; the embeddings are words, positions, languages
    embeddings = sum(module.weight.numel() for module in ours.modules() if isinstance(module, torch.nn.Embedding))
    assert ours.num_parameters() - ours.num_parameters(exclude_embeddings=True) == embeddings


# ---- resize_token_embeddings ----------------------------------------------------------
def lm_logits(model, ids):
    return model(ids).logits


@pytest.mark.parametrize("new_size", [130, 64])
def test_resize_token_embeddings_matches_transformers_without_mean_resizing(new_size):
    hf_model, ours = make_twins("XLMWithLMHeadModel")
    old = ours.transformer.embeddings.weight.detach().clone()
    module = ours.get_input_embeddings()
    returned = ours.resize_token_embeddings(new_size, mean_resizing=False)
    hf_model.resize_token_embeddings(new_size, mean_resizing=False)
    assert returned is module  # the same module, with a resized weight, as in transformers
    kept = min(new_size, old.size(0))
    weight, hf_weight = ours.transformer.embeddings.weight, hf_model.transformer.embeddings.weight
    assert weight.shape == hf_weight.shape == (new_size, 32)
    assert torch.equal(weight[:kept], hf_weight[:kept]) and torch.equal(weight[:kept], old[:kept])
    assert torch.equal(ours.pred_layer.proj.bias, hf_model.pred_layer.proj.bias)  # added biases are 0 in both
    assert ours.pred_layer.proj.weight is weight  # still tied
    assert ours.config.vocab_size == ours.config.n_words == new_size == hf_model.config.vocab_size
    assert ours.pred_layer.proj.out_features == new_size and module.num_embeddings == new_size
    ids, _ = random_batch(seq=6)
    ids = ids % new_size
    # the kept tokens' logits (added rows are random, drawn differently in each library)
    assert relative_error(lm_logits(ours, ids)[..., :kept], lm_logits(hf_model, ids)[..., :kept]) < 1e-6
    # the loss sees the new vocabulary (transformers' XLMPredLayer keeps the old n_words)
    labels = torch.full_like(ids, new_size - 1)
    assert torch.isfinite(ours(ids, labels=labels).loss)
    with pytest.raises(ValueError, match="input_ids"):
        ours(torch.full_like(ids, new_size))


def test_resize_token_embeddings_with_mean_resizing_starts_new_rows_at_the_mean():
    hf_model, ours = make_twins("XLMWithLMHeadModel")
    old_weight = ours.transformer.embeddings.weight.detach().clone()
    old_bias = ours.pred_layer.proj.bias.detach().clone()
    torch.manual_seed(3)
    ours.resize_token_embeddings(111)  # mean_resizing=True is the default, as in transformers
    torch.manual_seed(3)
    hf_model.resize_token_embeddings(111)
    for model in (ours, hf_model):
        weight, bias = model.transformer.embeddings.weight.detach(), model.pred_layer.proj.bias.detach()
        assert torch.equal(weight[:101], old_weight) and torch.equal(bias[:101], old_bias)
        # a normal with 1e-9 times the rows' covariance: the mean up to ~1e-5
        assert torch.allclose(weight[101:], old_weight.mean(0).expand(10, -1), atol=1e-4)
        assert torch.allclose(bias[101:], old_bias.mean().expand(10), atol=1e-6)
    assert torch.allclose(ours.transformer.embeddings.weight, hf_model.transformer.embeddings.weight, atol=2e-4)


def test_resize_with_pad_to_multiple_of_and_without_arguments():
    hf_model, ours = make_twins("XLMWithLMHeadModel")
    assert ours.resize_token_embeddings() is ours.get_input_embeddings()
    assert ours.config.vocab_size == 101  # nothing changed
    assert ours.resize_token_embeddings(None, pad_to_multiple_of=8).num_embeddings == 104
    assert hf_model.resize_token_embeddings(None, pad_to_multiple_of=8).num_embeddings == 104
    assert ours.resize_token_embeddings(105, pad_to_multiple_of=16).num_embeddings == 112
    assert ours.pred_layer.proj.bias.shape == (112,)


def test_resize_untied_lm_head_matches_transformers():
    hf_model, ours = make_twins("XLMWithLMHeadModel", tie_word_embeddings=False)
    assert ours.pred_layer.proj.weight is not ours.transformer.embeddings.weight
    hf_model.resize_token_embeddings(120, mean_resizing=False)
    ours.resize_token_embeddings(120, mean_resizing=False)
    assert ours.pred_layer.proj.weight is not ours.transformer.embeddings.weight
    for name in ("pred_layer.proj.weight", "transformer.embeddings.weight"):
        assert torch.equal(ours.get_parameter(name)[:101], hf_model.get_parameter(name)[:101]), name
        assert ours.get_parameter(name).shape == hf_model.get_parameter(name).shape == (120, 32)
    assert torch.equal(ours.pred_layer.proj.bias, hf_model.pred_layer.proj.bias)


@pytest.mark.parametrize("class_name", ["XLMModel", "XLMForSequenceClassification"])
def test_resize_models_without_lm_head(class_name):
    hf_model, ours = make_twins(class_name)
    hf_model.resize_token_embeddings(90, mean_resizing=False)
    ours.resize_token_embeddings(90, mean_resizing=False)
    assert ours.get_output_embeddings() is None
    ids, mask = random_batch(seq=6)
    ids = ids % 90
    ours_out, hf_out = ours(ids, attention_mask=mask)[0], hf_model(ids, attention_mask=mask)[0]
    assert relative_error(ours_out, hf_out) < 1e-6
    assert ours.base_model.n_words == 90


def test_resized_model_saves_and_reloads_in_both_libraries(tmp_path):
    _, ours = make_twins("XLMWithLMHeadModel")
    ours.resize_token_embeddings(120, mean_resizing=False)
    ours.save_pretrained(tmp_path)
    ids, _ = random_batch(seq=6)
    back = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path)
    theirs = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path).eval()
    assert back.config.vocab_size == 120 and torch.equal(lm_logits(back, ids), lm_logits(ours, ids))
    assert relative_error(lm_logits(theirs, ids), lm_logits(ours, ids)) < 1e-6


@pytest.mark.parametrize("kwargs,error,named", [
    (dict(new_num_tokens=0), ValueError, "new_num_tokens"),
    (dict(new_num_tokens="120"), TypeError, "new_num_tokens"),
    (dict(new_num_tokens=120, pad_to_multiple_of=2.5), TypeError, "pad_to_multiple_of"),
    (dict(new_num_tokens=120, mean_resizing="yes"), TypeError, "mean_resizing"),
    (dict(new_num_tokens=2), ValueError, "pad_token_id"),  # the padding row (id 2) would go
])
def test_bad_resize_arguments_are_named(kwargs, error, named):
    _, ours = make_twins("XLMWithLMHeadModel")
    with pytest.raises(error, match=named):
        ours.resize_token_embeddings(**kwargs)
    assert ours.transformer.embeddings.weight.shape == (101, 32) and ours.config.vocab_size == 101


def test_adaptive_softmax_head_is_not_resized_as_in_transformers():
    hf_model, ours = make_twins("XLMWithLMHeadModel", asm=True, asm_cutoffs=[20, 60], asm_div_value=2.0)
    hf_model.resize_token_embeddings(120)  # transformers resizes the embeddings only: the head keeps 101 classes
    assert hf_model.pred_layer.proj.n_classes == 101 and hf_model.config.vocab_size == 120
    with pytest.raises(ValueError, match="adaptive-softmax"):
        ours.resize_token_embeddings(120)
    assert ours.transformer.embeddings.weight.shape == (101, 32) and ours.config.vocab_size == 101


# ---- the tied weight in state_dict ----------------------------------------------------
def test_state_dict_holds_the_tied_weight_once_and_loads_either_way(tmp_path):
    hf_model, ours = make_twins("XLMWithLMHeadModel")
    state = ours.state_dict()
    assert "pred_layer.proj.weight" not in state and "transformer.embeddings.weight" in state
    assert set(state) | {"pred_layer.proj.weight"} == set(hf_model.state_dict())
    save_file(state, tmp_path / "plain.safetensors")  # what Trainer does: no shared tensors
    fresh = xlm_fast.XLMWithLMHeadModel(ours.config).eval()
    assert fresh.load_state_dict(state, strict=True).missing_keys == []
    assert fresh.pred_layer.proj.weight is fresh.transformer.embeddings.weight
    ids, _ = random_batch()
    assert torch.equal(lm_logits(fresh, ids), lm_logits(ours, ids))
    # transformers' state dict, which holds the copy, loads strictly too
    fresh = xlm_fast.XLMWithLMHeadModel(ours.config).eval()
    result = fresh.load_state_dict(hf_model.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(lm_logits(fresh, ids), lm_logits(ours, ids))
    # nested in a wrapper (DDP, accelerate), the prefixed copy is left out as well
    wrapper = torch.nn.ModuleDict({"module": ours})
    assert "module.pred_layer.proj.weight" not in wrapper.state_dict()
    assert wrapper.load_state_dict(wrapper.state_dict(), strict=True).missing_keys == []


def test_untied_and_adaptive_softmax_heads_keep_their_weights_in_state_dict():
    _, untied = make_twins("XLMWithLMHeadModel", tie_word_embeddings=False)
    assert "pred_layer.proj.weight" in untied.state_dict()
    _, asm = make_twins("XLMWithLMHeadModel", asm=True, asm_cutoffs=[20, 60], asm_div_value=2.0)
    assert "pred_layer.proj.head.weight" in asm.state_dict()


# ---- from_pretrained options ----------------------------------------------------------
def test_low_cpu_mem_usage_gives_the_same_model(tmp_path):
    _, ours = make_twins("XLMWithLMHeadModel")
    ours.save_pretrained(tmp_path)
    ids, _ = random_batch()
    for flag in (True, False, None):
        loaded = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path, low_cpu_mem_usage=flag)
        assert torch.equal(lm_logits(loaded, ids), lm_logits(ours, ids))


@pytest.mark.parametrize("bin_format", [False, True])
def test_loading_reads_one_tensor_at_a_time(tmp_path, bin_format):
    """No second copy of the weights: each tensor read from the checkpoint is released
    before the next one is read."""
    _, ours = make_twins("XLMModel")
    ours.save_pretrained(tmp_path, safe_serialization=not bin_format)
    tensors = xlm_fast.modeling_utils.load_checkpoint_state_dict(str(tmp_path))
    read = tensors.__getitem__
    alive = []

    class Counting(type(tensors)):
        def __getitem__(self, name):
            if not bin_format:  # .bin tensors are memory-mapped views of the file, kept by the mapping
                assert all(ref() is None for ref in alive), "an earlier tensor is still held"
            tensor = read(name)
            alive.append(weakref.ref(tensor))
            return tensor

    tensors.__class__ = Counting
    model = xlm_fast.XLMModel(ours.config)
    info = model.load_checkpoint(tensors)
    assert info["missing_keys"] == [] and len(alive) == len(tensors)
    assert torch.equal(model.embeddings.weight, ours.embeddings.weight)


def test_use_safetensors_chooses_the_format_as_transformers_does(tmp_path):
    _, ours = make_twins("XLMModel")
    ours.save_pretrained(tmp_path)  # model.safetensors
    bin_weights = {key: value + 1 for key, value in ours.state_dict().items()}
    torch.save(bin_weights, tmp_path / "pytorch_model.bin")
    for flag in (None, True):
        loaded = xlm_fast.XLMModel.from_pretrained(tmp_path, use_safetensors=flag)
        assert torch.equal(loaded.embeddings.weight, ours.embeddings.weight)
        hf_loaded = transformers.XLMModel.from_pretrained(tmp_path, use_safetensors=flag)
        assert torch.equal(hf_loaded.embeddings.weight, ours.embeddings.weight)
    loaded = xlm_fast.XLMModel.from_pretrained(tmp_path, use_safetensors=False)
    assert torch.equal(loaded.embeddings.weight, bin_weights["embeddings.weight"])
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(OSError, match="use_safetensors=False"):
        xlm_fast.XLMModel.from_pretrained(tmp_path, use_safetensors=True)
    assert torch.equal(xlm_fast.XLMModel.from_pretrained(tmp_path).embeddings.weight, bin_weights["embeddings.weight"])
    with pytest.raises(TypeError, match="use_safetensors"):
        xlm_fast.XLMModel.from_pretrained(tmp_path, use_safetensors="yes")


def test_use_safetensors_false_needs_a_pytorch_bin(tmp_path):
    tiny_checkpoint(tmp_path)
    with pytest.raises(OSError, match="pytorch_model.bin"):
        xlm_fast.XLMModel.from_pretrained(tmp_path, use_safetensors=False)


@pytest.mark.parametrize("device_map", ["cpu", torch.device("cpu"), "auto", {"": "cpu"},
                                        {"transformer": "cpu", "pred_layer": torch.device("cpu")}])
def test_device_map_on_one_device(tmp_path, device_map):
    _, ours = make_twins("XLMWithLMHeadModel")
    ours.save_pretrained(tmp_path)
    loaded = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path, device_map=device_map)
    expected = torch.device("cuda", 0) if device_map == "auto" and torch.cuda.is_available() else torch.device("cpu")
    assert {p.device for p in loaded.parameters()} == {expected}
    assert loaded.hf_device_map == {"": 0 if expected.type == "cuda" else "cpu"}


@pytest.mark.parametrize("device_map,named", [
    ({"transformer": "cpu", "pred_layer": "cuda:0"}, "several devices"),
    ({"transformer": 0, "pred_layer": 1}, "device"),
    ("disk", "device_map"),
    ("meta", "real device"),
    ({}, "empty"),
    ("balanced", "device_map"),
    (3.5, "device_map"),
    ("cuda:7", "CUDA device"),
])
def test_device_maps_over_several_devices_or_bad_ones_are_refused(tmp_path, device_map, named):
    tiny_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=named):
        xlm_fast.XLMModel.from_pretrained(tmp_path, device_map=device_map)


def test_attn_implementation_is_recorded_and_checked(tmp_path):
    _, ours = make_twins("XLMModel")
    ours.save_pretrained(tmp_path)
    ids, mask = random_batch()
    for name in ("eager", "sdpa", "flash_attention_2"):
        loaded = xlm_fast.XLMModel.from_pretrained(tmp_path, attn_implementation=name)
        assert loaded.config._attn_implementation == name
        assert torch.equal(loaded(ids, attention_mask=mask)[0], ours(ids, attention_mask=mask)[0])
    with pytest.raises(ValueError, match="attn_implementation"):
        xlm_fast.XLMModel.from_pretrained(tmp_path, attn_implementation="flex")


def test_hub_and_trust_options_are_accepted_and_nothing_is_downloaded(tmp_path, monkeypatch):
    _, ours = make_twins("XLMModel")
    ours.save_pretrained(tmp_path / "local")
    loaded = xlm_fast.XLMModel.from_pretrained(tmp_path / "local", trust_remote_code=True, proxies={"https": "x"},
                                               token="hf_x", local_files_only=False, force_download=True)
    assert torch.equal(loaded.embeddings.weight, ours.embeddings.weight)  # a local directory is read as it is
    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / "main"
    ours.save_pretrained(snapshot)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert torch.equal(xlm_fast.XLMModel.from_pretrained("someone/tiny").embeddings.weight, ours.embeddings.weight)
    with pytest.raises(ValueError, match="force_download"):
        xlm_fast.XLMModel.from_pretrained("someone/tiny", force_download=True)
    for kwargs, named in ((dict(trust_remote_code="yes"), "trust_remote_code"), (dict(proxies="x"), "proxies"),
                          (dict(token=3), "token"), (dict(force_download=None), "force_download"),
                          (dict(subfolder=None), "subfolder"), (dict(variant=1), "variant")):
        with pytest.raises(TypeError, match=named):
            xlm_fast.XLMModel.from_pretrained("someone/tiny", **kwargs)


def test_subfolder_and_variant_as_transformers_writes_them(tmp_path):
    hf_model, ours = make_twins("XLMWithLMHeadModel")
    hf_model.save_pretrained(tmp_path / "sub", variant="v2", max_shard_size="50KB")
    assert (tmp_path / "sub" / "model.safetensors.index.v2.json").exists()
    loaded = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path, subfolder="sub", variant="v2")
    ids, _ = random_batch()
    assert torch.equal(lm_logits(loaded, ids), lm_logits(ours, ids))
    with pytest.raises(OSError, match="model.safetensors"):  # no unvariant weights there
        xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path, subfolder="sub")
    with pytest.raises(OSError, match="subfolder"):
        xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path, subfolder="missing")
    ours.save_pretrained(tmp_path / "ours", variant="v2")
    assert (tmp_path / "ours" / "model.v2.safetensors").exists()
    theirs = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "ours", variant="v2").eval()
    assert relative_error(lm_logits(theirs, ids), lm_logits(ours, ids)) < 1e-6


# ---- save_pretrained: shards, stale files, options ------------------------------------
@pytest.mark.parametrize("text,expected", [("5GB", 5 * 10**9), ("10MB", 10**7), ("500KB", 500_000),
                                           (" 1.5 gb", 1_500_000_000), ("2TB", 2 * 10**12), (1234, 1234)])
def test_max_shard_size_parses_like_huggingface_hub(text, expected):
    from huggingface_hub.serialization._base import parse_size_to_int

    assert xlm_fast.modeling_utils.parse_shard_size(text) == expected
    if isinstance(text, str):
        assert parse_size_to_int(text) == expected


@pytest.mark.parametrize("size,error", [("5GiB", ValueError), ("lots", ValueError), (0, ValueError),
                                        (-5, ValueError), (True, TypeError), (5.0, TypeError), ("GB", ValueError)])
def test_bad_max_shard_size_is_named(tmp_path, size, error):
    _, ours = make_twins("XLMModel")
    with pytest.raises(error, match="max_shard_size"):
        ours.save_pretrained(tmp_path / "out", max_shard_size=size)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("safe", [True, False])
def test_sharded_saves_are_laid_out_as_transformers_writes_them(tmp_path, safe):
    hf_model, ours = make_twins("XLMWithLMHeadModel")
    ours.save_pretrained(tmp_path / "ours", max_shard_size="20KB", safe_serialization=safe)
    base = "model" if safe else "pytorch_model"
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    extension = "safetensors" if safe else "bin"
    files = sorted(os.listdir(tmp_path / "ours"))
    assert files == sorted(["config.json", "generation_config.json", index]
                           + [f"{base}-{n:05d}-of-00007.{extension}" for n in range(1, 8)])
    if safe:  # transformers 5 writes safetensors only: the same file names and byte-identical index
        hf_model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
        assert (tmp_path / "ours" / index).read_text() == (tmp_path / "hf" / index).read_text()
        for name in files:
            assert (tmp_path / "hf" / name).exists(), name
    weight_map = json.loads((tmp_path / "ours" / index).read_text())["weight_map"]
    assert "pred_layer.proj.weight" not in weight_map  # the tied weight is saved once
    theirs = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "ours").eval()
    ids, _ = random_batch()
    assert relative_error(lm_logits(theirs, ids), lm_logits(ours, ids)) < 1e-6
    back = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path / "ours")
    assert torch.equal(lm_logits(back, ids), lm_logits(ours, ids))


def test_transformers_sharded_save_loads(tmp_path):
    hf_model, ours = make_twins("XLMForTokenClassification", num_labels=5)
    hf_model.save_pretrained(tmp_path, max_shard_size=15_000)
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".safetensors")]) > 2
    loaded, info = xlm_fast.XLMForTokenClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    ids, mask = random_batch()
    assert torch.equal(loaded(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits)


def test_an_earlier_save_leaves_no_stale_weights(tmp_path):
    _, ours = make_twins("XLMWithLMHeadModel")
    (tmp_path / "model-00009-of-00012.safetensors").write_bytes(b"stale")
    (tmp_path / "notes-00001-of-00002.txt").write_text("not weights")
    ours.save_pretrained(tmp_path, max_shard_size="20KB")
    assert not (tmp_path / "model-00009-of-00012.safetensors").exists()
    assert (tmp_path / "notes-00001-of-00002.txt").exists()
    ours.save_pretrained(tmp_path, max_shard_size="40KB")  # fewer shards: the old ones go
    shards = sorted(name for name in os.listdir(tmp_path) if name.startswith("model-"))
    assert shards and all(name.endswith(f"-of-{len(shards):05d}.safetensors") for name in shards)
    ours.save_pretrained(tmp_path)  # one file: shards and the index go, or loaders would read them
    assert sorted(name for name in os.listdir(tmp_path) if name.startswith("model")) == ["model.safetensors"]
    with torch.no_grad():
        ours.transformer.embeddings.weight.add_(1)
    ours.save_pretrained(tmp_path, max_shard_size="20KB")  # sharded again: model.safetensors would shadow it
    assert not (tmp_path / "model.safetensors").exists()
    ids, _ = random_batch()
    for loaded in (xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path),
                   transformers.XLMWithLMHeadModel.from_pretrained(tmp_path).eval()):
        assert relative_error(lm_logits(loaded, ids), lm_logits(ours, ids)) < 1e-6


def test_save_on_other_ranks_and_push_to_hub(tmp_path):
    _, ours = make_twins("XLMModel")
    ours.save_pretrained(tmp_path / "rank1", is_main_process=False)
    assert not (tmp_path / "rank1").exists()
    with pytest.raises(ValueError, match="push_to_hub"):
        ours.save_pretrained(tmp_path / "hub", push_to_hub=True, repo_id="me/model")
    assert not (tmp_path / "hub").exists()
    ours.save_pretrained(tmp_path / "ok", token="hf_x", commit_message="ignored without push_to_hub")
    assert (tmp_path / "ok" / "model.safetensors").exists()
    with pytest.raises(TypeError, match="max_shardsize"):
        ours.save_pretrained(tmp_path / "typo", max_shardsize="1MB")
    with pytest.raises(TypeError, match="is_main_process"):
        ours.save_pretrained(tmp_path / "typo", is_main_process="yes")


# ---- transformers' Trainer ------------------------------------------------------------
def tiny_tokenizer(directory):
    words = ["<s>", "</s>", "<pad>", "<unk>", "<special0>", "<special1>", "a</w>", "b</w>", "c</w>", "ab</w>",
             "hello</w>", "world</w>"]
    (directory / "vocab.json").write_text(json.dumps({word: index for index, word in enumerate(words)}))
    (directory / "merges.txt").write_text("#version: 0.2\na b</w>\n")
    return transformers.XLMTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt")), len(words)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_trains_and_saves_sequence_classification(tmp_path, checkpointing):
    tokenizer, vocab_size = tiny_tokenizer(tmp_path)
    features = [dict(tokenizer(text), labels=index % 2)
                for index, text in enumerate(["hello world", "a b c", "ab", "world hello a"])]
    config = xlm_fast.XLMConfig(vocab_size=vocab_size, emb_dim=16, n_layers=2, n_heads=2, num_labels=2,
                                max_position_embeddings=32)
    torch.manual_seed(0)
    model = xlm_fast.XLMForSequenceClassification(config)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                                          report_to=[], use_cpu=True, save_strategy="no",
                                          **{"activation_checkpointing" if hasattr(transformers.TrainingArguments,
                                                                                   "activation_checkpointing")
                                             else "gradient_checkpointing": checkpointing})
    trainer = transformers.Trainer(model=model, args=args, train_dataset=features,
                                   data_collator=transformers.DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    assert result.global_step == 2 and result.metrics["total_flos"] > 0  # num_parameters(exclude_embeddings=True)
    assert model.is_gradient_checkpointing == checkpointing
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())
    trainer.save_model(str(tmp_path / "saved"))
    weights = load_safetensors(tmp_path / "saved" / "model.safetensors")
    assert all(torch.equal(weights[key], value) for key, value in model.state_dict().items())


def test_trainer_saves_a_tied_lm_head(tmp_path):
    _, ours = make_twins("XLMWithLMHeadModel")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    trainer = transformers.Trainer(model=ours, args=args)
    trainer.save_model(str(tmp_path / "saved"))  # safetensors.torch.save_file(model.state_dict())
    ours.config.save_pretrained(tmp_path / "saved")  # Trainer writes no config.json for a non-PreTrainedModel
    back = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path / "saved")
    ids, _ = random_batch()
    assert torch.equal(lm_logits(back, ids), lm_logits(ours, ids))
    assert back.pred_layer.proj.weight is back.transformer.embeddings.weight


def test_generation_config_is_saved_and_reloaded_and_only_the_lm_head_generates(tmp_path):
    config = xlm_fast.XLMConfig(vocab_size=50, emb_dim=16, n_heads=2, n_layers=1, causal=True)
    assert not xlm_fast.XLMForSequenceClassification.can_generate() and not xlm_fast.XLMModel.can_generate()
    model = xlm_fast.XLMWithLMHeadModel(config)
    assert model.can_generate()
    model.generation_config.num_beams = 3
    model.generation_config.max_new_tokens = 7
    model.save_pretrained(tmp_path)
    assert (tmp_path / "generation_config.json").is_file()
    reloaded = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path)
    assert reloaded.generation_config.num_beams == 3 and reloaded.generation_config.max_new_tokens == 7
    hf_config = transformers.GenerationConfig.from_pretrained(tmp_path)  # transformers reads what we wrote
    assert hf_config.num_beams == 3 and hf_config.eos_token_id == config.eos_token_id
    xlm_fast.XLMForSequenceClassification(config).save_pretrained(tmp_path / "classifier")
    assert not (tmp_path / "classifier" / "generation_config.json").exists()
