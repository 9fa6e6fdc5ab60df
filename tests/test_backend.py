"""XLMModel on the fused Triton path (XLM_FAST_BACKEND=triton) against the PyTorch path.

Without CUDA the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, set
by conftest.py); with CUDA the models run on the GPU.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton path cannot be tested")
import xlm_fast  # noqa: E402
from xlm_fast import backend, fused_encoder  # noqa: E402

from conftest import DEVICE  # noqa: E402

# head_dim 80 (emb_dim 160, 2 heads) as in the 1280-dim checkpoints; head_dim 64 for the others
CONFIGS = {
    "multilingual_hd80": dict(vocab_size=97, emb_dim=160, n_layers=2, n_heads=2, n_langs=3,
                              max_position_embeddings=64, layer_norm_eps=1e-12),
    "causal": dict(vocab_size=97, emb_dim=128, n_layers=2, n_heads=2, causal=True, max_position_embeddings=64),
    "relu_sinusoidal": dict(vocab_size=97, emb_dim=128, n_layers=2, n_heads=2, gelu_activation=False,
                            sinusoidal_embeddings=True, max_position_embeddings=64),
}
PAD_ID = 2  # XLMConfig's default pad_index


def make_model(config_name, dtype=torch.float32):
    torch.manual_seed(0)
    model = xlm_fast.XLMModel(xlm_fast.XLMConfig(**CONFIGS[config_name])).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters and biases
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.to(device=DEVICE, dtype=dtype)


def padded_batch(batch=3, seq=13, seed=1):
    """Token ids avoiding the pad id; row 1 right-padded by 4, row 2 fully padded."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 97, (batch, seq), generator=generator)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    if batch > 1:
        ids[1, seq - 4:] = PAD_ID
        attention_mask[1, seq - 4:] = 0
    if batch > 2:
        ids[2] = PAD_ID
        attention_mask[2] = 0
    return ids.to(DEVICE), attention_mask.to(DEVICE)


def run(model, backend_name, monkeypatch, **kwargs):
    monkeypatch.setenv("XLM_FAST_BACKEND", backend_name)
    with torch.no_grad():
        return model(output_hidden_states=True, **kwargs)


def relative_error(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def assert_paths_agree(model, monkeypatch, tolerance=1e-5, **kwargs):
    expected = run(model, "torch", monkeypatch, **kwargs)
    actual = run(model, "triton", monkeypatch, **kwargs)
    assert len(actual.hidden_states) == len(expected.hidden_states) == model.n_layers + 1
    for ours, reference in zip(actual.hidden_states + (actual.last_hidden_state,),
                               expected.hidden_states + (expected.last_hidden_state,)):
        assert ours.shape == reference.shape and ours.dtype == reference.dtype
        assert relative_error(ours, reference) < tolerance
    return actual


def test_triton_path_is_taken(monkeypatch):
    model = make_model("causal")
    ids, _ = padded_batch()
    calls = []
    original = fused_encoder.triton_encoder_forward
    monkeypatch.setattr(fused_encoder, "triton_encoder_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    run(model, "triton", monkeypatch, input_ids=ids)
    assert calls == [1]


@pytest.mark.parametrize("mask_form", ["attention_mask", "lengths", "pad_ids"])
def test_padding_langs_token_types(mask_form, monkeypatch):
    """Key padding as a general mask, as lengths, and derived from pad ids; a fully
    padded row; langs and token_type_ids; head_dim 80."""
    model = make_model("multilingual_hd80")
    ids, attention_mask = padded_batch()
    generator = torch.Generator().manual_seed(2)
    kwargs = dict(input_ids=ids,
                  langs=torch.randint(0, 3, ids.shape, generator=generator).to(DEVICE),
                  token_type_ids=torch.randint(0, 2, ids.shape, generator=generator).to(DEVICE))
    if mask_form == "attention_mask":
        attention_mask[0, 3] = 0  # a hole: not a prefix mask
        kwargs["attention_mask"] = attention_mask
    elif mask_form == "lengths":
        kwargs["lengths"] = attention_mask.sum(1)
    out = assert_paths_agree(model, monkeypatch, **kwargs)
    assert (out.last_hidden_state[1, -4:] == 0).all()


def test_skipped_padding_query_tiles_change_no_output(monkeypatch):
    """With lengths, query tiles of padding only are not computed (zeros): every
    hidden state still equals the PyTorch path's, whose padding rows are zeroed."""
    model = make_model("multilingual_hd80")
    ids = torch.randint(4, 97, (3, 64), generator=torch.Generator().manual_seed(5)).to(DEVICE)
    lengths = torch.tensor([64, 9, 33], device=DEVICE)
    out = assert_paths_agree(model, monkeypatch, input_ids=ids, lengths=lengths)
    assert (out.last_hidden_state[1, 9:] == 0).all() and out.last_hidden_state[1, :9].abs().sum() > 0
    # the same as an attention_mask (prefix rows skip tiles too), plus a row with a hole
    attention_mask = (torch.arange(64, device=DEVICE)[None, :] < lengths[:, None]).long()
    attention_mask[0, 40] = 0
    assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask)


@pytest.mark.parametrize("config_name", ["multilingual_hd80", "causal"])
def test_fractional_attention_mask_scales_rows(config_name, monkeypatch):
    """XLM multiplies every layer's rows by attention_mask's values and attends to keys
    whose value is nonzero: fractions must reach the row multiply, not be rounded to 0/1."""
    model = make_model(config_name)
    ids, attention_mask = padded_batch()
    fractional = attention_mask.float()
    fractional[0, :5] = torch.tensor([0.25, 1.0, 0.5, 2.0, 0.75])
    fractional[1, 2] = 0.0  # a hole
    out = assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=fractional)
    as_bool = run(model, "triton", monkeypatch, input_ids=ids, attention_mask=fractional != 0)
    assert relative_error(out.last_hidden_state[0], as_bool.last_hidden_state[0]) > 1e-2


@pytest.mark.parametrize("gemm", ["library", "triton"])
@pytest.mark.parametrize("config_name", ["multilingual_hd80", "relu_sinusoidal"])
def test_either_lin1_gemm_as_the_default(config_name, gemm, monkeypatch):
    """The whole model agrees with the PyTorch path whichever GEMM lin1 uses by default."""
    import xlm_fast.triton_kernels.ffn as ffn

    monkeypatch.setattr(ffn, "DEFAULT_GEMM", gemm)
    model = make_model(config_name)
    ids, attention_mask = padded_batch(seq=40)
    assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask)


@pytest.mark.parametrize("config_name", ["causal", "multilingual_hd80", "relu_sinusoidal"])
def test_head_mask_zeros_and_fractions(config_name, monkeypatch):
    model = make_model(config_name)
    ids, attention_mask = padded_batch(batch=2, seq=9)
    head_mask = torch.tensor([[1.0, 0.0], [0.3, 0.75]], device=DEVICE)
    assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask, head_mask=head_mask)


def test_causal_with_padding_and_positions(monkeypatch):
    model = make_model("causal")
    ids, attention_mask = padded_batch(seq=40)
    position_ids = torch.randint(0, 64, ids.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask, position_ids=position_ids)


def test_inputs_embeds_and_single_token(monkeypatch):
    model = make_model("relu_sinusoidal")
    embeds = torch.randn(2, 6, 128, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    assert_paths_agree(model, monkeypatch, inputs_embeds=embeds)
    ids, _ = padded_batch(batch=1, seq=1)
    assert_paths_agree(model, monkeypatch, input_ids=ids)


def test_fused_qkv_follows_weight_updates(monkeypatch):
    """The fused QKV buffers stay outside the state dict and follow in-place updates,
    new Parameters and dtype changes."""
    model = make_model("multilingual_hd80")
    ids, attention_mask = padded_batch(batch=2)
    before = assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask)
    assert not any("qkv" in name for name in model.state_dict())
    with torch.no_grad():
        model.attentions[1].k_lin.weight.mul_(1.5)  # in place, as load_state_dict and optimizers do
    model.attentions[0].v_lin.bias = torch.nn.Parameter(torch.randn_like(model.attentions[0].v_lin.bias))
    after = assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask)
    assert relative_error(after.last_hidden_state, before.last_hidden_state) > 1e-3
    model.to(torch.float16)  # new storage for every parameter: the buffers are rebuilt
    assert_paths_agree(model, monkeypatch, tolerance=1e-2, input_ids=ids, attention_mask=attention_mask)


def test_model_trains_after_a_first_triton_forward_in_inference_mode(monkeypatch):
    """The fused QKV buffers become the parameters' storage: built inside
    torch.inference_mode() they would be inference tensors, and backward would fail."""
    model = make_model("multilingual_hd80")
    ids, attention_mask = padded_batch(batch=2)
    monkeypatch.setenv("XLM_FAST_BACKEND", "triton")
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=attention_mask)
    assert not any(parameter.is_inference() for parameter in model.parameters())
    model.train()
    model(input_ids=ids, attention_mask=attention_mask).last_hidden_state.square().sum().backward()
    assert model.attentions[0].q_lin.weight.grad is not None


def test_fused_qkv_shares_the_parameters_memory(monkeypatch, tmp_path):
    """No weight is held twice: q_lin, k_lin, v_lin become slices of one buffer, keeping
    their Parameter objects (optimizers), names and values; checkpoints still round-trip."""
    model = make_model("multilingual_hd80")
    attention = model.attentions[0]
    linears = (attention.q_lin, attention.k_lin, attention.v_lin)
    parameters = [p for linear in linears for p in (linear.weight, linear.bias)]
    values = [p.detach().clone() for p in parameters]
    state_names = list(model.state_dict())
    ids, attention_mask = padded_batch(batch=2)
    run(model, "triton", monkeypatch, input_ids=ids, attention_mask=attention_mask)

    assert [p for linear in linears for p in (linear.weight, linear.bias)] == parameters  # same objects
    assert all(torch.equal(p, value) for p, value in zip(parameters, values))
    weight_bytes = attention.q_lin.weight.numel() * attention.q_lin.weight.element_size()
    assert attention.k_lin.weight.data_ptr() == attention.q_lin.weight.data_ptr() + weight_bytes
    assert attention.v_lin.weight.data_ptr() == attention.k_lin.weight.data_ptr() + weight_bytes
    assert list(model.state_dict()) == state_names

    # a training step (PyTorch path) updates the slices in place; the fused path sees it
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(input_ids=ids, attention_mask=attention_mask).last_hidden_state.square().sum().backward()
    optimizer.step()
    assert not torch.equal(attention.k_lin.weight, values[2])
    assert attention.k_lin.weight.data_ptr() == attention.q_lin.weight.data_ptr() + weight_bytes
    assert_paths_agree(model.eval(), monkeypatch, input_ids=ids, attention_mask=attention_mask)

    model.save_pretrained(tmp_path)
    reloaded = xlm_fast.XLMModel.from_pretrained(tmp_path).to(DEVICE).eval()
    for name, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_no_less_accurate_than_torch_path(dtype, monkeypatch):
    """DESIGN.md: against fp64, the Triton path's relative L2 error is at most 1.5x the
    PyTorch (HF eager) path's error in the same dtype. No fully padded row: in fp64 the
    PyTorch path's float32 softmax turns float64's min into -inf and that row into NaN."""
    reference_model = make_model("multilingual_hd80", torch.float64)
    model = make_model("multilingual_hd80", dtype)
    ids, attention_mask = padded_batch(batch=2, seq=40)
    kwargs = dict(input_ids=ids, attention_mask=attention_mask)
    exact = run(reference_model, "torch", monkeypatch, **kwargs).last_hidden_state
    eager_error = relative_error(run(model, "torch", monkeypatch, **kwargs).last_hidden_state, exact)
    triton_error = relative_error(run(model, "triton", monkeypatch, **kwargs).last_hidden_state, exact)
    assert triton_error <= 1.5 * eager_error, (triton_error, eager_error)


SELECT_DEFAULTS = dict(dtype=torch.float32, output_attentions=False, uses_cache=False, dropout=0.0)


@pytest.mark.parametrize("uncovered", [dict(output_attentions=True), dict(uses_cache=True), dict(dropout=1.0),
                                       dict(dtype=torch.float64), dict(dtype=None)])
def test_uncovered_calls_take_the_torch_path_even_when_triton_is_forced(uncovered, monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "triton")
    kwargs = dict(SELECT_DEFAULTS, **uncovered)
    assert backend.select_backend(torch.device("cuda"), **kwargs) == "torch"


def test_training_calls_take_the_triton_path(monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "triton")
    assert backend.select_backend(torch.device("cpu"), **dict(SELECT_DEFAULTS, dropout=0.5)) == "triton"


def test_autocast_regions_compute_in_the_autocast_dtype(monkeypatch):
    device = torch.device("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert backend.compute_dtype(device, torch.float32) == torch.bfloat16
    assert backend.compute_dtype(device, torch.float32) == torch.float32
    monkeypatch.setenv(backend.BACKEND_ENV, "triton")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert backend.select_backend(device, **SELECT_DEFAULTS) == "triton"
        assert backend.select_backend(device, **dict(SELECT_DEFAULTS, dtype=torch.float64)) == "torch"


def test_inputs_embeds_that_require_grad_get_their_gradient(monkeypatch):
    """Frozen weights, trainable inputs (prompt tuning, attributions): the gradient
    reaches inputs_embeds on the fused path as on the PyTorch one."""
    model = make_model("causal").requires_grad_(False)
    embeds = torch.randn(2, 5, model.dim, device=DEVICE, requires_grad=True)
    grads = []
    for name in ("torch", "triton"):
        monkeypatch.setenv("XLM_FAST_BACKEND", name)
        embeds.grad = None
        model(inputs_embeds=embeds).last_hidden_state.square().sum().backward()
        grads.append(embeds.grad)
    assert grads[0].abs().sum() > 0
    assert relative_error(grads[1], grads[0]) < 1e-5


def test_backend_choice_by_environment(monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "torch")
    assert backend.select_backend(torch.device("cuda"), **SELECT_DEFAULTS) == "torch"
    monkeypatch.setenv(backend.BACKEND_ENV, "auto")
    assert backend.select_backend(torch.device("cpu"), **SELECT_DEFAULTS) == "torch"
    assert backend.select_backend(torch.device("cuda"), **SELECT_DEFAULTS) == "triton"
    monkeypatch.setenv(backend.BACKEND_ENV, "fastest")
    with pytest.raises(ValueError, match=backend.BACKEND_ENV):
        backend.select_backend(torch.device("cpu"), **SELECT_DEFAULTS)


def test_forced_triton_without_the_interpreter_on_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        backend.select_backend(torch.device("cpu"), **SELECT_DEFAULTS)


def test_float64_model_takes_the_torch_path(monkeypatch):
    model = make_model("causal").double()
    ids, mask = padded_batch()
    monkeypatch.setenv(backend.BACKEND_ENV, "triton")
    assert model(ids, attention_mask=mask).last_hidden_state.dtype == torch.float64


def test_layers_pruned_to_different_head_counts_take_the_triton_path(monkeypatch):
    """Each layer's fused QKV and attention take that layer's heads; head_mask indexes the
    original heads."""
    model = make_model("multilingual_hd80")
    model.prune_heads({0: [1]})  # layer 0: one head, layer 1: two
    ids, attention_mask = padded_batch()
    calls = []
    original = fused_encoder.triton_encoder_forward
    monkeypatch.setattr(fused_encoder, "triton_encoder_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask)
    head_mask = torch.tensor([[0.5, 9.0], [0.25, 1.0]], device=DEVICE)  # 9.0: the pruned head's, unused
    assert_paths_agree(model, monkeypatch, input_ids=ids, attention_mask=attention_mask, head_mask=head_mask)
    assert calls == [1, 1]


def test_a_layer_with_no_head_left_takes_the_torch_path(monkeypatch):
    model = make_model("causal")
    model.prune_heads({1: [0, 1]})
    ids, _ = padded_batch()
    monkeypatch.setattr(fused_encoder, "triton_encoder_forward", lambda *a, **k: pytest.fail("took the Triton path"))
    forced = run(model, "triton", monkeypatch, input_ids=ids)
    assert torch.equal(forced.last_hidden_state, run(model, "torch", monkeypatch, input_ids=ids).last_hidden_state)
    monkeypatch.setenv(backend.BACKEND_ENV, "triton")
    assert backend.select_backend(torch.device("cuda"), **SELECT_DEFAULTS, headless_layers=True) == "torch"
