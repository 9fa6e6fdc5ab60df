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
  6. transformers' pipelines with xlm_fast's own model and tokenizer classes
  7. Trainer, data collators, accelerate and DDP with xlm_fast's own classes; Trainer
     with a patched transformers model (route 1)
"""

import copy
import inspect
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
import xlm_fast  # noqa: E402
from xlm_fast import backend, fused_encoder  # noqa: E402
from xlm_fast.integrations import apply_to_transformers, from_transformers, to_transformers  # noqa: E402
from xlm_fast.integrations.transformers import CLASS_NAMES, revert  # noqa: E402

from conftest import CONFIGS, DEVICE, make_twins, random_batch, relative_error  # noqa: E402

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
    """Records every fused_encoder.triton_encoder_forward call (running it)."""
    calls = []
    original = fused_encoder.triton_encoder_forward
    monkeypatch.setattr(fused_encoder, "triton_encoder_forward",
                        lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs))
    return calls


HEAD_MASK_IS_PARAMETER = "head_mask" in inspect.signature(transformers.XLMModel.forward).parameters


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
    # output_attentions, and transformers 4.x's head_mask parameter, return before the
    # backend is asked
    if variant != "attentions" and not (variant == "head_mask" and HEAD_MASK_IS_PARAMETER):
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
    # transformers 4.x honours its head_mask parameter: that call keeps its own forward
    assert len(fused_calls) == (0 if variant == "head_mask" and HEAD_MASK_IS_PARAMETER else 1)
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
    "dropout_of_one": (lambda model: setattr(model, "dropout", 1.0) or model.train(), {}, torch.no_grad),
    "float64": (lambda model: model.double(), {}, torch.no_grad),
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
        if extra == "cache":  # a cache object where transformers' XLM takes one, else the dict
            if hasattr(transformers.models.xlm.modeling_xlm, "EncoderDecoderCache"):  # 4.5x on
                from transformers.cache_utils import DynamicCache, EncoderDecoderCache

                kwargs["cache"] = EncoderDecoderCache(DynamicCache(), DynamicCache())
            else:
                kwargs["cache"] = {"slen": 0}
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


@needs_triton
def test_training_step_on_the_fused_path_equals_the_unpatched_model(backend_env, fused_calls):
    """Without dropout a training step of the patched model (fused path, forced) gives
    transformers' loss, gradients and updated weights."""
    model, patched = patched_pair("XLMWithLMHeadModel", dropout=0.0, attention_dropout=0.0)
    ids, mask = random_batch(batch=BATCH, seq=SEQ)
    expected = _training_step(model, ids, mask)
    backend_env("triton")
    loss, gradients, parameters = _training_step(patched, ids, mask)
    assert len(fused_calls) == 1
    assert torch.allclose(loss, expected[0], rtol=1e-5) and gradients.keys() == expected[1].keys()
    everything = torch.cat([g.flatten() for g in expected[1].values()]).norm()
    for name, gradient in gradients.items():  # k_lin.bias's true gradient is 0: rounding noise only
        assert (gradient - expected[1][name]).norm() <= 1e-5 * (expected[1][name].norm() + 1e-3 * everything), name
    assert all(torch.allclose(parameters[name], expected[2][name], rtol=1e-5, atol=1e-6) for name in parameters)


@needs_triton
def test_dropout_in_training_and_autocast_take_the_fused_path(backend_env, fused_calls):
    model, patched = patched_pair("XLMWithLMHeadModel", device=DEVICE)
    ids, mask = (tensor.to(DEVICE) for tensor in random_batch(batch=BATCH, seq=SEQ))
    backend_env("triton")
    patched.train()
    losses = []
    for _ in range(2):
        torch.manual_seed(7)  # the same dropout masks
        losses.append(patched(input_ids=ids, attention_mask=mask, labels=ids).loss)
    assert torch.equal(losses[0], losses[1])
    patched.eval()
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        hidden = patched.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.dtype == torch.float32  # as transformers gives it under autocast
    assert len(fused_calls) == 3
    with torch.no_grad():
        expected = model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    assert relative_error(hidden.detach(), expected) < 2e-2


@pytest.mark.parametrize("choice", ["auto", pytest.param("triton", marks=needs_triton)])
def test_peft_lora_on_a_patched_model_equals_lora_on_transformers(choice, backend_env, fused_calls):
    """LoRA layers are not plain Linears: the patched encoder runs transformers' forward
    with them, so outputs and gradients equal LoRA on the unpatched model."""
    peft = pytest.importorskip("peft")
    model, patched = patched_pair("XLMForSequenceClassification", device=DEVICE)
    lora = dict(task_type="SEQ_CLS", r=4, target_modules=["q_lin", "v_lin"], init_lora_weights=False)
    torch.manual_seed(1)
    model = peft.get_peft_model(model, peft.LoraConfig(**lora))
    torch.manual_seed(1)
    patched = peft.get_peft_model(patched, peft.LoraConfig(**lora))
    ids, mask = (tensor.to(DEVICE) for tensor in random_batch())
    backend_env(choice)
    with torch.no_grad():
        assert torch.equal(patched(input_ids=ids, attention_mask=mask).logits,
                           model(input_ids=ids, attention_mask=mask).logits)
    assert not fused_calls
    labels = torch.tensor([0, 1, 0], device=DEVICE)
    for each in (model, patched):
        each.train()
        torch.manual_seed(2)  # the same dropout masks
        each(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    trainable = [(name, p) for name, p in patched.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in name or "classifier" in name or "summary" in name for name, _ in trainable)
    for (name, ours), theirs in zip(trainable, (p for _, p in model.named_parameters() if p.requires_grad)):
        assert torch.equal(ours.grad, theirs.grad), name


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


# ---- 6. pipelines with xlm_fast's own model and tokenizer classes -------------------------
@pytest.fixture(scope="module")
def demo_tokenizers():
    data = os.path.join(os.path.dirname(xlm_fast.__file__), "data")
    files = os.path.join(data, "demo_vocab.json"), os.path.join(data, "demo_merges.txt")
    return transformers.XLMTokenizer(*files), xlm_fast.XLMTokenizer(*files)


def pipeline_twins(vocab_size):
    return make_twins("XLMWithLMHeadModel", "causal", vocab_size=vocab_size, init_std=0.3, embed_init_std=0.5,
                      max_position_embeddings=64)


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beams"])
def test_text_generation_pipeline_matches_transformers(demo_tokenizers, kwargs):
    hf_tokenizer, _ = demo_tokenizers
    hf_model, ours = pipeline_twins(len(hf_tokenizer))
    texts = ["the cat sat on the mat", "hello world"]
    call = dict(max_new_tokens=6, do_sample=False, **kwargs)
    expected = transformers.pipeline("text-generation", model=hf_model, tokenizer=hf_tokenizer)(
        texts, use_cache=False, **call)
    actual = transformers.pipeline("text-generation", model=ours, tokenizer=hf_tokenizer)(texts, **call)
    assert actual == expected
    assert len(actual[0]) == kwargs.get("num_return_sequences", 1)
    assert actual[0][0]["generated_text"].startswith("the cat sat on the mat")


def test_text_generation_pipeline_with_xlm_fast_tokenizer(demo_tokenizers):
    hf_tokenizer, our_tokenizer = demo_tokenizers
    hf_model, ours = pipeline_twins(len(hf_tokenizer))
    generator = transformers.pipeline("text-generation", model=ours, tokenizer=our_tokenizer)
    expected = transformers.pipeline("text-generation", model=hf_model, tokenizer=hf_tokenizer)(
        "the cat sat", max_new_tokens=5, do_sample=False, use_cache=False)
    assert generator("the cat sat", max_new_tokens=5, do_sample=False) == expected


@pytest.mark.parametrize("task,class_name,text", [
    ("fill-mask", "XLMWithLMHeadModel", "the cat sat on the <special1>"),
    ("text-classification", "XLMForSequenceClassification", "the cat sat on the mat"),
    ("token-classification", "XLMForTokenClassification", "the cat sat on the mat"),
])
def test_pipelines_with_xlm_fast_model_and_tokenizer_match_transformers(demo_tokenizers, task, class_name, text):
    hf_tokenizer, our_tokenizer = demo_tokenizers
    hf_model, ours = make_twins(class_name, vocab_size=len(hf_tokenizer), max_position_embeddings=64,
                                init_std=0.3)
    if "token_type_ids" in hf_tokenizer.model_input_names:  # transformers 4.x also returns zeros, which XLM
        hf_tokenizer = copy.deepcopy(hf_tokenizer)  # adds through its word embeddings; 5.x and xlm_fast do not
        hf_tokenizer.model_input_names = our_tokenizer.model_input_names
    expected = transformers.pipeline(task, model=hf_model, tokenizer=hf_tokenizer)(text)
    actual = transformers.pipeline(task, model=ours, tokenizer=our_tokenizer)(text)
    assert len(actual) == len(expected) > 0
    for ours_item, theirs in zip(actual, expected):  # one dict per candidate, label or token
        assert ours_item.keys() == theirs.keys()
        torch.testing.assert_close(ours_item.pop("score"), theirs.pop("score"), rtol=1e-5, atol=1e-7)
        assert ours_item == theirs


# ---- 7. Trainer, data collators, accelerate and DDP ----------------------------------------
SAMPLE = os.path.join(os.path.dirname(__file__), "data", "sample.tsv")


def sample_texts(count, lang="en"):
    texts = []
    with open(SAMPLE, encoding="utf-8") as handle:
        for line in handle:
            text_lang, text = line.rstrip("\n").split("\t", 1)
            if text_lang == lang:
                texts.append(text)
    return texts[:count]


@pytest.fixture(scope="module")
def tokenizer():
    return xlm_fast.XLMTokenizer.from_demo()


def tiny_config(tokenizer, **overrides):
    kwargs = dict(vocab_size=len(tokenizer), emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=64,
                  dropout=0.0, attention_dropout=0.0, summary_first_dropout=0.0)
    kwargs.update(overrides)
    return xlm_fast.XLMConfig(**kwargs)


def training_arguments(output_dir, **overrides):
    if "eval_strategy" in overrides and not hasattr(transformers.TrainingArguments, "eval_strategy"):
        overrides["evaluation_strategy"] = overrides.pop("eval_strategy")  # its name before transformers 4.41
    kwargs = dict(output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                  report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                  seed=0)
    kwargs.update(overrides)
    return transformers.TrainingArguments(**kwargs)


def trainer_tokenizer(tokenizer):
    """The Trainer keyword for the tokenizer: processing_class from transformers 4.46 on."""
    import inspect

    takes_processing_class = "processing_class" in inspect.signature(transformers.Trainer).parameters
    return {"processing_class" if takes_processing_class else "tokenizer": tokenizer}


def parameters_changed(before, model):
    return any(not torch.equal(before[name], value) for name, value in model.state_dict().items())


def assert_same_weights(model, reloaded):
    expected, actual = model.state_dict(), reloaded.state_dict()
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.equal(value, actual[name]), name


def classification_features(tokenizer, count=12):
    texts = sample_texts(count)
    return [dict(tokenizer(text, truncation=True, max_length=24), labels=index % 2) for index, text in enumerate(texts)]


# ---- Trainer with DataCollatorWithPadding: train, evaluate, predict, save, reload ------
def test_trainer_sequence_classification_with_padding_collator(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = xlm_fast.XLMForSequenceClassification(tiny_config(tokenizer, num_labels=2))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    features = classification_features(tokenizer)
    trainer = transformers.Trainer(
        model=model, args=training_arguments(tmp_path / "run"), train_dataset=features, eval_dataset=features[:6],
        data_collator=transformers.DataCollatorWithPadding(tokenizer), **trainer_tokenizer(tokenizer),
    )
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert parameters_changed(before, model)
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))
    prediction = trainer.predict(features[:6])
    assert prediction.predictions.shape == (6, 2)
    assert prediction.label_ids.tolist() == [0, 1, 0, 1, 0, 1]

    # Trainer writes only the weights of a model that is not a transformers PreTrainedModel
    # (and the tokenizer); the config is one more line (README: Using xlm_fast with transformers).
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    model.config.save_pretrained(str(out))
    reloaded = xlm_fast.XLMForSequenceClassification.from_pretrained(str(out))
    assert_same_weights(model, reloaded)
    reloaded_tokenizer = xlm_fast.XLMTokenizer.from_pretrained(str(out))
    assert reloaded_tokenizer("Rem magni illo modi.").input_ids == tokenizer("Rem magni illo modi.").input_ids


# ---- the token-classification recipe: words, word_ids label alignment, its collator ----
def align_labels(encoding, word_labels):
    """transformers' recipe: the first sub-token of a word carries its label, the rest and
    the special tokens -100."""
    labels, previous = [], None
    for word_id in encoding.word_ids():
        labels.append(-100 if word_id is None or word_id == previous else word_labels[word_id])
        previous = word_id
    return labels


def test_trainer_token_classification_recipe(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = xlm_fast.XLMForTokenClassification(tiny_config(tokenizer, num_labels=2))
    features = []
    for text in sample_texts(12):
        words = text.split()
        word_labels = [int(word[:1].isupper()) for word in words]
        encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=24)
        features.append(dict(encoding, labels=align_labels(encoding, word_labels)))
    assert any(-100 in feature["labels"][1:-1] for feature in features)  # some words were split
    collator = transformers.DataCollatorForTokenClassification(tokenizer)
    batch = collator(features[:4])
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    trainer = transformers.Trainer(model=model, args=training_arguments(tmp_path), train_dataset=features,
                                   data_collator=collator)
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))


# ---- masked language modelling with DataCollatorForLanguageModeling -------------------
def test_trainer_masked_language_modelling(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = xlm_fast.XLMWithLMHeadModel(tiny_config(tokenizer))
    features = [tokenizer(text, truncation=True, max_length=24) for text in sample_texts(12)]
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    batch = collator(features[:4])
    masked = batch["labels"] != -100
    assert masked.any()
    assert (batch["input_ids"][masked] == tokenizer.mask_token_id).any()
    trainer = transformers.Trainer(model=model, args=training_arguments(tmp_path / "run"), train_dataset=features,
                                   data_collator=collator)
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    out = tmp_path / "saved"
    trainer.save_model(str(out))  # tied LM projection: saved once, as transformers saves it
    model.config.save_pretrained(str(out))
    reloaded = xlm_fast.XLMWithLMHeadModel.from_pretrained(str(out))
    assert_same_weights(model, reloaded)
    assert reloaded.pred_layer.proj.weight is reloaded.transformer.embeddings.weight


# ---- accelerate: prepare() and a training loop equal the plain loop ---------------------
def train_steps(model, batches, prepare=None):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    backward = torch.Tensor.backward
    if prepare is not None:
        model, optimizer, batches, backward = prepare(model, optimizer, batches)
    model.train()
    for batch in batches:
        loss = model(**batch).loss
        backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_accelerate_prepare_training_loop(tokenizer):
    accelerate = pytest.importorskip("accelerate")
    features = classification_features(tokenizer, count=8)
    collator = transformers.DataCollatorWithPadding(tokenizer)
    batches = [collator(features[i:i + 4]) for i in range(0, 8, 4)]

    def prepare(model, optimizer, batches):
        accelerator = accelerate.Accelerator(cpu=True)
        loader = torch.utils.data.DataLoader(features, batch_size=4, collate_fn=collator)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        return model, optimizer, loader, accelerator.backward

    torch.manual_seed(0)
    plain = train_steps(xlm_fast.XLMForSequenceClassification(tiny_config(tokenizer, num_labels=2)), batches)
    torch.manual_seed(0)
    prepared = train_steps(xlm_fast.XLMForSequenceClassification(tiny_config(tokenizer, num_labels=2)), batches,
                           prepare)
    for (name, expected), actual in zip(plain.state_dict().items(), prepared.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)


# ---- DDP over gloo, two processes: one step equals the single-process step --------------
def ddp_worker(rank, world_size, init_file, config_dict, batch, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = xlm_fast.XLMForSequenceClassification(xlm_fast.XLMConfig(**config_dict))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        share = {key: value.chunk(world_size)[rank] for key, value in batch.items()}
        ddp.train()
        ddp(**share).loss.backward()
        optimizer.step()
        torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_step_equals_single_process(tokenizer, tmp_path):
    import torch.multiprocessing as mp

    config = tiny_config(tokenizer, num_labels=2)
    features = classification_features(tokenizer, count=4)
    # equal lengths in each half, so that the mean of the two halves' losses is the batch's
    batch = dict(transformers.DataCollatorWithPadding(tokenizer, padding="max_length", max_length=24)(features))
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), config.to_dict(), batch, str(tmp_path)), nprocs=2)

    torch.manual_seed(0)
    model = xlm_fast.XLMForSequenceClassification(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    states = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for name, expected in model.state_dict().items():
        assert torch.equal(states[0][name], states[1][name]), name
        torch.testing.assert_close(states[0][name], expected, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("class_name", ["XLMForSequenceClassification", "XLMWithLMHeadModel"])
def test_trainer_save_model_of_a_patched_transformers_model_reloads_in_both_libraries(tokenizer, tmp_path,
                                                                                     class_name):
    """Route 1: a transformers model routed through xlm_fast is a PreTrainedModel, so
    Trainer.save_model() writes the config too and the directory reloads as it is."""
    torch.manual_seed(0)
    config = tiny_config(tokenizer, num_labels=2).to_dict()
    model = apply_to_transformers(getattr(transformers, class_name)(transformers.XLMConfig(**config)))
    if class_name == "XLMWithLMHeadModel":
        features = [tokenizer(text, truncation=True, max_length=24) for text in sample_texts(12)]
        collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    else:
        features = classification_features(tokenizer)
        collator = transformers.DataCollatorWithPadding(tokenizer)
    trainer = transformers.Trainer(model=model, args=training_arguments(tmp_path / "run"), train_dataset=features,
                                   data_collator=collator, **trainer_tokenizer(tokenizer))
    assert trainer.train().global_step == 3
    out = str(tmp_path / "saved")
    trainer.save_model(out)
    assert os.path.isfile(os.path.join(out, "config.json"))
    reloaded = getattr(transformers, class_name).from_pretrained(out)
    assert_same_weights(model, reloaded)
    ours = getattr(xlm_fast, class_name).from_pretrained(out)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name


def checkpointed_lm_training(tokenizer, output_dir, max_steps, resume_from_checkpoint=None, **options):
    torch.manual_seed(0)
    model = xlm_fast.XLMWithLMHeadModel(tiny_config(tokenizer))
    features = [tokenizer(text, truncation=True, max_length=24) for text in sample_texts(16)]
    trainer = transformers.Trainer(
        model=model, train_dataset=features, eval_dataset=features[:4],
        data_collator=transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3),
        args=training_arguments(output_dir, max_steps=max_steps, save_strategy="steps", save_steps=2,
                                gradient_checkpointing=True, **options),
    )
    return model, trainer.train(resume_from_checkpoint=resume_from_checkpoint)


def test_trainer_checkpoints_of_a_tied_lm_head_and_gradient_checkpointing(tokenizer, tmp_path):
    """save_steps checkpoints of a tied LM head (safetensors), the best one loaded at the
    end; gradient checkpointing on throughout."""
    model, result = checkpointed_lm_training(tokenizer, tmp_path, 4, eval_strategy="steps", eval_steps=2,
                                             load_best_model_at_end=True)
    assert result.global_step == 4 and model.is_gradient_checkpointing
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    saved = load_file(str(tmp_path / "checkpoint-4" / "model.safetensors"))
    assert "pred_layer.proj.weight" not in saved  # the tied projection saved once


@pytest.mark.skipif(not hasattr(transformers.trainer, "safe_globals"),
                    reason="this transformers reads its own rng_state.pth with torch.load's default "
                           "weights_only=True, which torch >= 2.6 refuses (a transformers issue)")
def test_trainer_resumes_from_a_checkpoint(tokenizer, tmp_path):
    checkpointed_lm_training(tokenizer, tmp_path, 4)
    _, resumed = checkpointed_lm_training(tokenizer, tmp_path, 6, resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert resumed.global_step == 6
    assert (tmp_path / "checkpoint-6" / "model.safetensors").is_file()
