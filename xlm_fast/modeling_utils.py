"""XLMPreTrainedModel: weight initialisation and tying, and checkpoints in transformers'
format (from_pretrained / save_pretrained), with no download at run time."""

import json
import logging
import os
import pickle

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from .configuration_xlm import XLMConfig, torch_dtype_from_name
from .hub import resolve_model_dir

logger = logging.getLogger("xlm_fast")

SAFE_WEIGHTS_NAME = "model.safetensors"
WEIGHTS_NAME = "pytorch_model.bin"
# Buffers that older checkpoints saved and that are rebuilt at construction.
IGNORED_CHECKPOINT_SUFFIXES = ("position_ids",)


def is_state_dict(value):
    """Whether `value` maps parameter names to tensors."""
    return isinstance(value, dict) and all(isinstance(key, str) and torch.is_tensor(item)
                                           for key, item in value.items())


def check_state_dict_argument(state_dict):
    if not is_state_dict(state_dict):
        raise TypeError(f"state_dict must map parameter names to tensors, got {type(state_dict).__name__}")


def _load_weights_file(path):
    try:
        if path.endswith(".safetensors"):
            state_dict = load_safetensors(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise OSError(f"cannot read weights file {path}: {error}") from error
    if not is_state_dict(state_dict):
        raise OSError(f"weights file {path} must hold a state dict (parameter names to tensors), got "
                      f"{type(state_dict).__name__}")
    return state_dict


def _read_shard_index(index_file):
    """The shard file names that transformers' *.index.json lists in its weight_map."""
    try:
        with open(index_file, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OSError(f"cannot read shard index {index_file}: {error}") from error
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise OSError(f"shard index {index_file}: weight_map must map parameter names to shard file names")
    return sorted(set(weight_map.values()))


def load_checkpoint_state_dict(model_dir):
    """The state dict of a checkpoint directory: safetensors before pytorch_model.bin,
    sharded (*.index.json) or not."""
    for weights_name in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME):
        single = os.path.join(model_dir, weights_name)
        if os.path.isfile(single):
            return _load_weights_file(single)
        index_file = single + ".index.json"
        if os.path.isfile(index_file):
            state_dict = {}
            for shard in _read_shard_index(index_file):
                state_dict.update(_load_weights_file(os.path.join(model_dir, shard)))
            return state_dict
    raise OSError(f"{model_dir} holds no {SAFE_WEIGHTS_NAME} or {WEIGHTS_NAME} (sharded or not)")


def resolve_dtype(dtype, config, state_dict):
    """None -> float32; "auto" -> the config's or the checkpoint's dtype; str or torch.dtype."""
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        if config.dtype is not None:
            dtype = config.dtype
        else:
            floats = [t.dtype for t in state_dict.values() if t.is_floating_point()]
            return floats[0] if floats else torch.float32
    resolved = torch_dtype_from_name(dtype)
    if resolved is None:
        raise ValueError(f"dtype must be a floating-point torch.dtype (or its name), 'auto' or None, got {dtype!r}")
    return resolved


class XLMPreTrainedModel(nn.Module):
    config_class = XLMConfig
    base_model_prefix = "transformer"
    # target parameter name -> source parameter name it shares storage with
    _tied_weights_keys = {}

    def __init__(self, config, *inputs, **kwargs):
        super().__init__()
        if not isinstance(config, XLMConfig):
            raise TypeError(f"config must be an XLMConfig, got {type(config).__name__}")
        config.validate()  # the checks across parameters, which assignments leave out
        self.config = config

    # ---- initialisation ---------------------------------------------------------------
    def post_init(self):
        self.init_weights()
        self.tie_weights()

    def init_weights(self):
        """transformers' XLM scheme; modules initialised by an inner post_init are kept."""
        # Children first, so that a parent's own step (sinusoidal positions) comes last.
        for module in reversed(list(self.modules())):
            if not getattr(module, "_xlm_fast_initialized", False):
                self._init_weights(module)
                module._xlm_fast_initialized = True

    @torch.no_grad()
    def _init_weights(self, module):
        config = self.config
        if isinstance(module, nn.Embedding):
            if config.embed_init_std is not None:
                nn.init.normal_(module.weight, mean=0, std=config.embed_init_std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            if config.init_std is not None:
                nn.init.normal_(module.weight, mean=0, std=config.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if getattr(module, "position_embeddings", None) is not None and config.sinusoidal_embeddings:
            from .modeling_xlm import sinusoidal_position_table

            weight = module.position_embeddings.weight
            weight.copy_(sinusoidal_position_table(*weight.shape))
            weight.requires_grad_(False)

    def tie_weights(self):
        """The LM projection shares the input embeddings (when not an adaptive softmax)."""
        if not self.config.tie_word_embeddings:
            return
        for target, source in self._tied_weights_keys.items():
            owner_name, _, attribute = target.rpartition(".")
            owner = self.get_submodule(owner_name)
            if isinstance(getattr(owner, attribute, None), nn.Parameter):
                setattr(owner, attribute, self.get_parameter(source))

    def _tied_target_names(self):
        """Parameter names that are tied copies and so are not saved nor required."""
        names = set()
        for target, source in self._tied_weights_keys.items():
            try:
                if self.get_parameter(target) is self.get_parameter(source):
                    names.add(target)
            except AttributeError:
                continue
        return names

    # ---- conveniences of transformers' PreTrainedModel --------------------------------
    @property
    def base_model(self):
        return getattr(self, self.base_model_prefix, self)

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def get_input_embeddings(self):
        return self.base_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.base_model.set_input_embeddings(value)

    def num_parameters(self, only_trainable=False):
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    # ---- checkpoints -------------------------------------------------------------------
    def save_pretrained(self, save_directory, safe_serialization=True, state_dict=None):
        """Writes config.json and model.safetensors (pytorch_model.bin when
        safe_serialization=False) with transformers' parameter names."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory} is a file, expected a directory")
        if state_dict is not None:
            check_state_dict_argument(state_dict)
        os.makedirs(save_directory, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        self.config.dtype = str(self.dtype).replace("torch.", "")
        self.config.save_pretrained(save_directory)
        if state_dict is None:
            state_dict = self.state_dict()
        tied = self._tied_target_names()
        state_dict = {key: value.contiguous() for key, value in state_dict.items() if key not in tied}
        if safe_serialization:
            save_safetensors(state_dict, os.path.join(save_directory, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
        else:
            torch.save(state_dict, os.path.join(save_directory, WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, cache_dir=None,
                        dtype=None, torch_dtype=None, revision="main", output_loading_info=False,
                        ignore_mismatched_sizes=False, local_files_only=True, **kwargs):
        """Loads a checkpoint from a local directory or the local Hugging Face cache.

        Keyword arguments that are not loading options update the config (as in
        transformers, e.g. num_labels=3). The model is returned in eval mode.
        """
        if dtype is None:
            dtype = torch_dtype
        elif torch_dtype is not None and torch_dtype_from_name(torch_dtype) != torch_dtype_from_name(dtype):
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree (torch_dtype is the old name "
                             "of dtype: pass one)")
        model_dir = resolve_model_dir(pretrained_model_name_or_path, cache_dir, revision)
        if config is None:
            config = XLMConfig.from_pretrained(model_dir)
            unknown = sorted(key for key in kwargs if not hasattr(config, key))
            if unknown:
                raise TypeError(f"from_pretrained got keyword arguments that are neither loading options "
                                f"nor XLMConfig attributes: {unknown}")
            for key, value in kwargs.items():
                setattr(config, key, value)
        elif not isinstance(config, XLMConfig):
            raise TypeError(f"config must be an XLMConfig, got {type(config).__name__}")
        elif kwargs:
            raise TypeError(f"from_pretrained got unexpected keyword arguments {sorted(kwargs)}")
        state_dict = load_checkpoint_state_dict(model_dir)
        model = cls(config, *model_args)
        info = model.load_checkpoint(state_dict, ignore_mismatched_sizes=ignore_mismatched_sizes)
        _report_loading(info, type(model).__name__, pretrained_model_name_or_path)
        model.to(resolve_dtype(dtype, config, state_dict))
        model.eval()
        return (model, info) if output_loading_info else model

    def load_checkpoint(self, state_dict, ignore_mismatched_sizes=False):
        """Loads a transformers-format state dict, adding or stripping the base-model
        prefix as needed. Returns transformers' loading-info dict."""
        check_state_dict_argument(state_dict)
        prefix = self.base_model_prefix + "."
        expected = self.state_dict()
        tied = self._tied_target_names()
        has_prefix = any(key.startswith(prefix) for key in state_dict)
        expects_prefix = any(key.startswith(prefix) for key in expected)
        if expects_prefix and not has_prefix:
            state_dict = {prefix + key: value for key, value in state_dict.items()}
        elif has_prefix and not expects_prefix:
            state_dict = {key[len(prefix):] if key.startswith(prefix) else key: value
                          for key, value in state_dict.items()}
        unexpected, mismatched, usable = [], [], {}
        for key, value in state_dict.items():
            if key not in expected:
                # A tie target the model lacks (the adaptive softmax has no single
                # weight) holds a copy of the embeddings: nothing is lost.
                if not key.endswith(IGNORED_CHECKPOINT_SUFFIXES) and key not in self._tied_weights_keys:
                    unexpected.append(key)
            elif value.shape != expected[key].shape:
                if not ignore_mismatched_sizes:
                    raise ValueError(
                        f"checkpoint parameter {key} has shape {tuple(value.shape)}, the model expects "
                        f"{tuple(expected[key].shape)} (pass ignore_mismatched_sizes=True to re-initialise it)"
                    )
                mismatched.append((key, tuple(value.shape), tuple(expected[key].shape)))
            else:
                usable[key] = value
        missing = [key for key in expected if key not in usable and key not in tied
                   and not any(key == m[0] for m in mismatched)]
        with torch.no_grad():
            for key, value in usable.items():
                target = expected[key]
                target.copy_(value.to(target.dtype))
        self.tie_weights()
        return {"missing_keys": missing, "unexpected_keys": unexpected,
                "mismatched_keys": mismatched, "error_msgs": []}


def _report_loading(info, class_name, source):
    if info["unexpected_keys"]:
        logger.warning(
            "Some weights of the model checkpoint at %s were not used when initializing %s: %s",
            source, class_name, info["unexpected_keys"],
        )
    if info["missing_keys"]:
        logger.warning(
            "Some weights of %s were not initialized from the model checkpoint at %s and are newly "
            "initialized: %s\nYou should probably TRAIN this model on a down-stream task.",
            class_name, source, info["missing_keys"],
        )
    if info["mismatched_keys"]:
        logger.warning(
            "Some weights of %s were not initialized from the model checkpoint at %s because the shapes "
            "did not match and are newly initialized: %s", class_name, source, info["mismatched_keys"],
        )
