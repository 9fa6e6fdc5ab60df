"""xlm_fast with Hugging Face transformers: xlm_fast.integrations.transformers and the
transformers workflows that xlm_fast takes part in. Tiny random models built here,
nothing downloaded; the Triton path runs in Triton's CPU interpreter without CUDA
(TRITON_INTERPRET=1, set by conftest.py).

Sections (add a workflow's tests to the section it belongs to, or a new one):
  1. apply_to_transformers on the PyTorch path: bit-identical to the unpatched model
  2. apply_to_transformers on the fused path: taken when covered, close to transformers
  3. patching: per instance, per class, idempotent, revert, errors
  4. workflows of a patched model: generate, save_pretrained/from_pretrained, a training step
  5. from_transformers / to_transformers
"""

import copy
import inspect
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
import xlm_fast  # noqa: E402
from xlm_fast import backend  # noqa: E402
from xlm_fast.integrations import apply_to_transformers, from_transformers, to_transformers  # noqa: E402
from xlm_fast.integrations.transformers import CLASS_NAMES, revert  # noqa: E402

from conftest import CONFIGS, DEVICE, random_batch, relative_error  # noqa: E402

needs_triton = pytest.mark.skipif(not backend.triton_importable(),
                                  reason="triton is not installed: the fused path cannot be tested")
BATCH, SEQ = 4, 9  # XLMForMultipleChoice sees a batch as (batch / 2, 2 choices, seq)
FUSED_BATCH, FUSED_SEQ = 2, 8  # the interpreter's time grows with batch * seq


# ---- shared helpers ---------------------------------------------------------------------
def hf_model(class_name, config_name="base", device="cpu", **overrides):
    """A random transformers model in eval mode, with non-trivial biases and LayerNorms."""
    torch.manual_seed(0)
    config = transformers.XLMConfig(**dict(CONFIGS[config_name], **overrides))
    model = getattr(transformers, class_name)(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.to(device)


def patched_pair(class_name, config_name="base", device="cpu", **overrides):
    """(unpatched, patched) transformers models with the same weights."""
    model = hf_model(class_name, config_name, device, **overrides)
    patched = apply_to_transformers(copy.deepcopy(model))
    return model, patched


def labels_for(class_name, input_ids):
    generator = torch.Generator().manual_seed(3)
    pick = lambda high, shape: torch.randint(0, high, shape, generator=generator).to(input_ids.device)  # noqa: E731
    batch, seq = input_ids.shape
    return {
        "XLMModel": {},
        "XLMWithLMHeadModel": dict(labels=input_ids),
        "XLMForSequenceClassification": dict(labels=pick(2, (batch,))),
        "XLMForQuestionAnsweringSimple": dict(start_positions=pick(seq, (batch,)), end_positions=pick(seq, (batch,))),
        "XLMForQuestionAnswering": dict(start_positions=pick(seq, (batch,)), end_positions=pick(seq, (batch,))),
        "XLMForTokenClassification": dict(labels=pick(2, input_ids.shape)),
        "XLMForMultipleChoice": dict(labels=pick(2, (batch // 2,))),
    }[class_name]


# variant -> (config name, what the call passes beside input_ids)
VARIANTS = {
    "attention_mask": ("base", ("attention_mask",)),
    "labels": ("base", ("attention_mask", "labels")),
    "lengths": ("base", ("lengths",)),
    "pad_ids": ("sinusoidal", ()),
    "langs_positions_token_types": ("multilingual", ("attention_mask", "langs", "position_ids", "token_type_ids")),
    "head_mask": ("base", ("attention_mask", "head_mask")),
    "causal_hidden_states_tuple": ("causal", ("attention_mask", "output_hidden_states", "return_dict")),
    "inputs_embeds": ("relu", ("attention_mask", "inputs_embeds")),
    "attentions": ("base", ("attention_mask", "output_attentions")),
    "langs_labels": ("multilingual", ("attention_mask", "langs", "token_type_ids", "labels")),
}


def variant_inputs(class_name, variant, model, batch=BATCH, seq=SEQ):
    """Keyword arguments of one call: a batch whose row 0 has a hole in its
    attention_mask and row 1 is right-padded, reshaped to (batch / 2, 2, seq) for
    multiple choice."""
    config_name, parts = VARIANTS[variant]
    cfg = CONFIGS[config_name]
    ids, mask = random_batch(config_name, batch=batch, seq=seq)
    mask[0, 2] = 0
    generator = torch.Generator().manual_seed(2)
    kwargs = dict(input_ids=ids)
    if "attention_mask" in parts:
        kwargs["attention_mask"] = mask
    if "lengths" in parts:
        kwargs["lengths"] = mask.sum(dim=1)
    if "langs" in parts:
        kwargs["langs"] = torch.randint(0, cfg["n_langs"], ids.shape, generator=generator)
    if "position_ids" in parts:
        kwargs["position_ids"] = torch.randint(0, cfg["max_position_embeddings"], ids.shape, generator=generator)
    if "token_type_ids" in parts:
        kwargs["token_type_ids"] = torch.randint(0, 2, ids.shape, generator=generator)
    if "inputs_embeds" in parts:
        kwargs["inputs_embeds"] = torch.randn(batch, seq, cfg["emb_dim"], generator=generator)
        del kwargs["input_ids"]
    if class_name == "XLMForMultipleChoice":
        kwargs = {key: value.view(batch // 2, 2, *value.shape[1:]) if key != "lengths" else value
                  for key, value in kwargs.items()}
    if "labels" in parts:
        kwargs.update(labels_for(class_name, ids))
    if "head_mask" in parts:
        head_mask = torch.ones(cfg["n_layers"], cfg["n_heads"])
        head_mask[0, 1] = 0.0
        kwargs["head_mask"] = head_mask
    kwargs = {key: value.to(model.device) for key, value in kwargs.items()}
    for flag in ("output_hidden_states", "output_attentions"):
        if flag in parts:
            kwargs[flag] = True
    if "return_dict" in parts:
        kwargs["return_dict"] = False
    return kwargs


def call(model, kwargs):
    """The model's outputs, or the type of the exception it raised."""
    try:
        with torch.no_grad():
            return model(**kwargs)
    except Exception as error:  # noqa: BLE001 (compared with the other model's)
        return type(error)


def flatten(outputs):
    """Output fields as (name, value) pairs, tuples of tensors unpacked."""
    items = outputs.items() if isinstance(outputs, dict) else enumerate(outputs)
    pairs = []
    for key, value in items:
        if isinstance(value, tuple):
            pairs += [(f"{key}.{index}", part) for index, part in enumerate(value)]
        else:
            pairs.append((str(key), value))
    return pairs


def assert_same_outputs(actual, expected, tolerance=0.0):
    """Same type and fields; floating tensors bit-identical (tolerance 0) or within
    `tolerance` relative L2 error; integer tensors identical."""
    if isinstance(expected, type):
        assert actual is expected, (actual, expected)
        return
    assert type(actual) is type(expected)
    actual, expected = flatten(actual), flatten(expected)
    assert [name for name, _ in actual] == [name for name, _ in expected]
    for (name, ours), (_, reference) in zip(actual, expected):
        assert ours.shape == reference.shape and ours.dtype == reference.dtype, name
        if tolerance and reference.is_floating_point():
            assert relative_error(ours, reference) < tolerance, name
        else:
            assert torch.equal(ours, reference), name


@pytest.fixture
def backend_env(monkeypatch):
    """Sets XLM_FAST_BACKEND for the test (auto unless changed)."""
    monkeypatch.setenv(backend.BACKEND_ENV, "auto")
    return lambda choice: monkeypatch.setenv(backend.BACKEND_ENV, choice)


@pytest.fixture
def fused_calls(monkeypatch):
    """Records every backend.triton_encoder_forward call (running it)."""
    calls = []
    original = backend.triton_encoder_forward
    monkeypatch.setattr(backend, "triton_encoder_forward",
                        lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs))
    return calls


@pytest.fixture
def routed_calls(monkeypatch):
    """Records every backend.select_backend call: only the routed forward makes one."""
    calls = []
    original = backend.select_backend
    monkeypatch.setattr(backend, "select_backend", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    return calls


# ---- 1. apply_to_transformers on the PyTorch path ------------------------------------------
@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"langs_labels"}))
@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_patched_equals_unpatched_on_cpu(class_name, variant, backend_env, routed_calls):
    """On CPU tensors the route ends in transformers' own forward: every output field is
    bit-identical (transformers 5.x ignores head_mask; both models do)."""
    model, patched = patched_pair(class_name, VARIANTS[variant][0])
    kwargs = variant_inputs(class_name, variant, model)
    expected = call(model, kwargs)
    assert not routed_calls
    assert_same_outputs(call(patched, kwargs), expected)
    if variant != "attentions":  # output_attentions returns before the backend is asked
        assert routed_calls


# ---- 2. apply_to_transformers on the fused path -------------------------------------------
@needs_triton
@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_every_head_takes_the_fused_path(class_name, backend_env, fused_calls):
    model, patched = patched_pair(class_name, device=DEVICE)
    kwargs = variant_inputs(class_name, "labels", model, FUSED_BATCH, FUSED_SEQ)
    expected = call(model, kwargs)
    backend_env("triton")
    actual = call(patched, kwargs)
    assert len(fused_calls) == 1
    assert_same_outputs(actual, expected, tolerance=1e-5)
    if class_name == "XLMForQuestionAnswering":  # and the beam-search outputs, given no labels
        beam = variant_inputs(class_name, "attention_mask", model, FUSED_BATCH, FUSED_SEQ)
        assert_same_outputs(call(patched, beam), call(model, beam), tolerance=1e-5)


@needs_triton
@pytest.mark.parametrize("variant", ["lengths", "pad_ids", "langs_positions_token_types", "head_mask",
                                     "causal_hidden_states_tuple", "inputs_embeds"])
def test_fused_path_inputs(variant, backend_env, fused_calls):
    model, patched = patched_pair("XLMModel", VARIANTS[variant][0], device=DEVICE)
    kwargs = variant_inputs("XLMModel", variant, model, FUSED_BATCH, FUSED_SEQ)
    expected = call(model, kwargs)
    backend_env("triton")
    actual = call(patched, kwargs)
    assert len(fused_calls) == 1
    assert_same_outputs(actual, expected, tolerance=1e-5)
    if variant == "lengths":
        assert torch.equal(fused_calls[0]["lengths"], kwargs["lengths"])
    if variant == "causal_hidden_states_tuple":
        assert len(actual[1]) == model.n_layers + 1


def _lora_like(model):  # a q_lin replaced by a subclass of nn.Linear, as LoRA and quantisation do
    class Adapted(torch.nn.Linear):
        def forward(self, input):
            return super().forward(input) * 1.5

    old = model.attentions[0].q_lin
    new = Adapted(old.in_features, old.out_features).to(old.weight.device)
    new.load_state_dict(old.state_dict())
    model.attentions[0].q_lin = new


# uncovered call -> (prepare both models, extra call arguments, context of the calls)
UNCOVERED = {
    "output_attentions": (None, dict(output_attentions=True), torch.no_grad),
    "gradients": (None, {}, torch.enable_grad),
    "dropout_in_training": (lambda model: model.train(), {}, torch.no_grad),
    "float64": (lambda model: model.double(), {}, torch.no_grad),
    "autocast": (None, {}, lambda: torch.autocast(DEVICE, dtype=torch.bfloat16)),
    "cache": (None, "cache", torch.no_grad),
    "adapted_layer": (_lora_like, {}, torch.no_grad),
    "forward_hook": (lambda model: model.layer_norm2[1].register_forward_hook(lambda m, i, o: o * 2), {},
                     torch.no_grad),
    "lengths_too_long": (None, "lengths", torch.no_grad),
    "token_out_of_range": (None, "bad_ids", torch.no_grad),
}


@needs_triton
@pytest.mark.parametrize("case", sorted(UNCOVERED))
def test_uncovered_calls_run_transformers_forward(case, backend_env, fused_calls):
    """With the fused path forced, what the kernels do not cover (or what transformers
    refuses) still runs transformers' forward: the same outputs, or the same error."""
    if case == "token_out_of_range" and DEVICE != "cpu":
        pytest.skip("an out-of-range id is a device-side assert on CUDA")
    prepare, extra, context = UNCOVERED[case]
    model, patched = patched_pair("XLMModel", device=DEVICE)
    for each in (model, patched):
        if prepare is not None:
            prepare(each)
    ids, mask = (tensor.to(DEVICE) for tensor in random_batch(batch=BATCH, seq=SEQ))
    kwargs = dict(input_ids=ids, attention_mask=mask)
    backend_env("triton")
    results = []
    for each in (model, patched):
        if extra == "cache":
            from transformers.cache_utils import DynamicCache, EncoderDecoderCache

            kwargs["cache"] = EncoderDecoderCache(DynamicCache(), DynamicCache())
        elif extra == "lengths":
            kwargs["lengths"] = torch.full((BATCH,), SEQ + 1, device=DEVICE)
        elif extra == "bad_ids":
            kwargs["input_ids"] = ids.clone().index_fill_(1, torch.tensor([0], device=DEVICE), 10_000)
        else:
            kwargs.update(extra)
        torch.manual_seed(0)  # the same dropout masks
        with context():
            try:
                results.append(each(**kwargs))
            except Exception as error:  # noqa: BLE001
                results.append(type(error))
    assert not fused_calls
    assert_same_outputs(results[1], results[0])
    if case in ("lengths_too_long", "token_out_of_range"):
        assert isinstance(results[0], type) and issubclass(results[0], (AssertionError, IndexError))
    else:
        assert not isinstance(results[0], type), results[0]


# ---- 3. patching ---------------------------------------------------------------------------
def test_instance_patch_routes_that_model_only(backend_env, routed_calls):
    model, patched = patched_pair("XLMForSequenceClassification")
    ids, mask = random_batch()
    call(model, dict(input_ids=ids, attention_mask=mask))
    assert not routed_calls
    call(patched, dict(input_ids=ids, attention_mask=mask))
    assert routed_calls == [1]
    assert isinstance(patched, transformers.PreTrainedModel) and type(patched) is type(model)


def test_apply_returns_the_model_and_is_idempotent():
    model = hf_model("XLMWithLMHeadModel")
    assert apply_to_transformers(model) is model
    routed = vars(model.transformer)["forward"]
    assert apply_to_transformers(model) is model
    assert vars(model.transformer)["forward"] == routed
    assert "forward" not in vars(model)  # the head keeps its own forward
    # the signature that transformers, PEFT and Trainer inspect stays transformers'
    assert inspect.signature(model.transformer.forward) == inspect.signature(hf_model("XLMModel").forward)
    copied = copy.deepcopy(model)
    assert vars(copied.transformer)["forward"].__self__ is copied.transformer


def test_base_model_is_patched_itself(routed_calls, backend_env):
    model = apply_to_transformers(hf_model("XLMModel"))
    assert "forward" in vars(model)
    call(model, dict(input_ids=random_batch()[0]))
    assert routed_calls == [1]


def test_revert_restores_transformers_forward(routed_calls, backend_env):
    model = apply_to_transformers(hf_model("XLMForTokenClassification"))
    assert revert(model) is model
    assert "forward" not in vars(model.transformer)
    call(model, dict(input_ids=random_batch()[0]))
    assert not routed_calls
    revert(model)  # harmless when not patched


@pytest.fixture
def class_patch():
    """apply_to_transformers() for one test, reverted afterwards whatever happens."""
    yield apply_to_transformers
    revert()


def test_class_patch_routes_models_created_afterwards(class_patch, routed_calls, backend_env):
    assert class_patch() is None
    assert class_patch() is None  # idempotent
    model = hf_model("XLMForQuestionAnsweringSimple")
    assert "forward" not in vars(model.transformer)  # the class routes it
    call(model, dict(input_ids=random_batch()[0]))
    assert routed_calls == [1]
    revert()
    call(hf_model("XLMForQuestionAnsweringSimple"), dict(input_ids=random_batch()[0]))
    assert routed_calls == [1]


@pytest.mark.parametrize("bad", [torch.nn.Linear(2, 2), "XLMModel", None])
def test_not_a_transformers_xlm_model_is_a_type_error(bad):
    bad = xlm_fast.XLMModel(xlm_fast.XLMConfig(**CONFIGS["base"])) if bad is None else bad
    with pytest.raises(TypeError, match="model must be a transformers XLM model"):
        apply_to_transformers(bad)
    with pytest.raises(TypeError, match="model must be a transformers XLM model"):
        from_transformers(bad)
    with pytest.raises(TypeError, match="model must be an xlm_fast XLM model"):
        to_transformers(hf_model("XLMModel") if isinstance(bad, xlm_fast.XLMModel) else bad)


def test_encoder_that_overrides_forward_is_refused():
    class Custom(transformers.XLMModel):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    with pytest.raises(TypeError, match="model: Custom overrides"):
        apply_to_transformers(Custom(transformers.XLMConfig(**CONFIGS["base"])))


def test_missing_transformers_is_an_import_error_naming_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        apply_to_transformers()


def test_importing_xlm_fast_does_not_import_transformers():
    code = ("import sys, xlm_fast, xlm_fast.integrations; xlm_fast.apply_to_transformers; "
            "assert 'transformers' not in sys.modules, 'transformers imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- 4. workflows of a patched model -------------------------------------------------------
@pytest.mark.parametrize("choice", ["auto", pytest.param("triton", marks=needs_triton)])
def test_generate_gives_the_same_tokens(choice, backend_env, fused_calls):
    model, patched = patched_pair("XLMWithLMHeadModel", "causal", device=DEVICE)
    prompt = random_batch("causal", batch=2, seq=4, padded=False)[0].to(DEVICE)
    expected = model.generate(prompt, max_new_tokens=3, do_sample=False)
    backend_env(choice)
    assert torch.equal(patched.generate(prompt, max_new_tokens=3, do_sample=False), expected)
    assert len(fused_calls) == (3 if choice == "triton" else 0)


def test_save_pretrained_round_trips_without_a_trace_of_the_patch(tmp_path, backend_env):
    model, patched = patched_pair("XLMWithLMHeadModel")
    ids, mask = random_batch(batch=FUSED_BATCH, seq=FUSED_SEQ)
    if backend.triton_importable():  # q/k/v then share one buffer (the fused QKV weight)
        backend_env("triton")
        call(patched, dict(input_ids=ids, attention_mask=mask))
        backend_env("auto")
    patched.save_pretrained(tmp_path / "patched")
    model.save_pretrained(tmp_path / "plain")
    for name in ("config.json", "generation_config.json"):
        assert (tmp_path / "patched" / name).read_text() == (tmp_path / "plain" / name).read_text()
    saved, plain = (load_file(tmp_path / name / "model.safetensors") for name in ("patched", "plain"))
    assert saved.keys() == plain.keys() and all(torch.equal(saved[key], plain[key]) for key in plain)
    reloaded = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "patched").eval()
    assert "forward" not in vars(reloaded.transformer)
    assert reloaded.pred_layer.proj.weight is reloaded.transformer.embeddings.weight
    assert_same_outputs(call(reloaded, dict(input_ids=ids, attention_mask=mask)),
                        call(model, dict(input_ids=ids, attention_mask=mask)))


def _training_step(model, ids, mask):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(7)  # the same dropout masks in both models
    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return loss.detach(), gradients, {name: p.detach().clone() for name, p in model.named_parameters()}


def test_training_step_equals_the_unpatched_model(backend_env, fused_calls):
    """Gradients take transformers' forward even with the fused path forced."""
    model, patched = patched_pair("XLMWithLMHeadModel")
    ids, mask = random_batch(batch=BATCH, seq=SEQ)
    expected = _training_step(model, ids, mask)
    backend_env("triton")
    loss, gradients, parameters = _training_step(patched, ids, mask)
    assert not fused_calls
    assert torch.equal(loss, expected[0]) and gradients.keys() == expected[1].keys()
    assert all(torch.equal(gradients[name], expected[1][name]) for name in gradients)
    assert all(torch.equal(parameters[name], expected[2][name]) for name in parameters)


# ---- 5. from_transformers / to_transformers ------------------------------------------------
@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_conversion_round_trip(class_name, backend_env):
    model = hf_model(class_name, "multilingual")
    kwargs = variant_inputs(class_name, "langs_labels", model)
    ours = from_transformers(model)
    assert type(ours) is getattr(xlm_fast, class_name) and not ours.training
    assert ours.config.n_langs == 3 and ours.config.lang2id == model.config.lang2id
    assert_same_outputs(call(ours, kwargs).to_tuple(), call(model, kwargs).to_tuple(), tolerance=1e-5)
    back = to_transformers(ours)
    assert type(back) is type(model) and not back.training
    assert_same_outputs(call(back, kwargs), call(model, kwargs))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_conversion_keeps_dtype_device_and_training_mode(dtype):
    model = hf_model("XLMWithLMHeadModel", device=DEVICE).to(dtype).train()
    ours = from_transformers(model)
    assert (ours.dtype, ours.device.type, ours.training) == (dtype, torch.device(DEVICE).type, True)
    assert ours.pred_layer.proj.weight is ours.transformer.embeddings.weight  # still tied
    back = to_transformers(ours)
    assert (back.dtype, back.device.type, back.training) == (dtype, torch.device(DEVICE).type, True)
    state, original = back.state_dict(), model.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[key], original[key]) for key in original)


def test_weights_that_do_not_fit_the_config_are_a_value_error():
    ours = from_transformers(hf_model("XLMModel"))
    ours.config.n_layers = 1  # the model still holds two layers
    with pytest.raises(ValueError, match="model: its weights do not fit"):
        to_transformers(ours)
